//! Pins the key format (version 1): the argument hashes of a fixed set of inputs and the text
//! forms of one key. A change here is a change of format: bump `KEY_FORMAT_VERSION`, review the
//! new snapshot (`cargo insta review`), and say so in the changelog — never by accident.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write;

use cachier_core::{ArgHash, FuncId, KEY_FORMAT_VERSION, Key, Namespace};
use serde::Serialize;

#[derive(Serialize)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Serialize)]
struct Query {
    name: String,
    origin: Point,
    tags: Vec<String>,
    limit: Option<u16>,
}

#[derive(Serialize)]
enum Shape {
    Circle { r: f64 },
    Empty,
}

fn line<A: Serialize + ?Sized>(out: &mut String, label: &str, args: &A) {
    let hash = ArgHash::of(args).expect("serializable");
    writeln!(out, "{label:<24} {hash}").expect("write to string");
}

#[test]
fn argument_hashes_are_stable() {
    let mut out = String::new();
    line(&mut out, "u8 1", &1u8);
    line(&mut out, "u16 1", &1u16);
    line(&mut out, "u32 1", &1u32);
    line(&mut out, "u64 1", &1u64);
    line(&mut out, "i8 -1", &-1i8);
    line(&mut out, "i64 min", &i64::MIN);
    line(&mut out, "u128 max", &u128::MAX);
    line(&mut out, "f64 1.5", &1.5f64);
    line(&mut out, "bool true", &true);
    line(&mut out, "char é", &'é');
    line(&mut out, "str empty", "");
    line(&mut out, "str ascii", "hello");
    line(&mut out, "str non-ascii", "naïve 函数 🚀");
    line(&mut out, "String non-ascii", &String::from("naïve 函数 🚀"));
    line(&mut out, "tuple (u8,&str,bool)", &(1u8, "a", true));
    line(&mut out, "tuple (i32,)", &(7i32,));
    line(&mut out, "empty tuple", &());
    line(&mut out, "Option Some(5u32)", &Some(5u32));
    line(&mut out, "Option None::<u32>", &None::<u32>);
    line(&mut out, "Vec<u16> [1,2,3]", &vec![1u16, 2, 3]);
    line(&mut out, "Vec<u16> empty", &Vec::<u16>::new());
    line(&mut out, "struct Point", &Point { x: 1, y: -2 });
    line(
        &mut out,
        "nested struct Query",
        &Query {
            name: "café".into(),
            origin: Point { x: 0, y: 0 },
            tags: vec!["a".into(), "β".into()],
            limit: Some(10),
        },
    );
    line(&mut out, "enum struct variant", &Shape::Circle { r: 2.0 });
    line(&mut out, "enum unit variant", &Shape::Empty);
    let pairs = [("b", 2u32), ("aa", 1), ("c", 3)];
    line(
        &mut out,
        "BTreeMap<&str,u32>",
        &pairs.iter().copied().collect::<BTreeMap<_, _>>(),
    );
    line(
        &mut out,
        "HashMap<&str,u32>",
        &pairs.iter().copied().collect::<HashMap<_, _>>(),
    );
    line(
        &mut out,
        "HashSet<u32>",
        &[300u32, 1, 70000].into_iter().collect::<HashSet<_>>(),
    );
    line(
        &mut out,
        "(Vec<HashMap>, u8)",
        &(vec![pairs.iter().copied().collect::<HashMap<_, _>>()], 9u8),
    );
    insta::assert_snapshot!("argument_hashes_v1", out);
}

#[test]
fn key_text_forms_are_stable() {
    assert_eq!(KEY_FORMAT_VERSION, 1);
    let key = Key::for_args(
        &Namespace::new("my-app").expect("namespace"),
        &FuncId::new("billing::invoice_total@2").expect("func id"),
        &(42u64, "EUR"),
    )
    .expect("key");
    let out = format!(
        "display:   {key}\ncanonical: {}\n",
        key.canonical().escape_debug()
    );
    insta::assert_snapshot!("key_text_forms_v1", out);
}

#[test]
fn same_value_different_type_is_a_different_key() {
    // Fixed-width integers: 1u8 and 1u64 hash differently, and so do "a" and ('a',).
    assert_ne!(
        ArgHash::of(&1u8).expect("hash"),
        ArgHash::of(&1u64).expect("hash")
    );
    assert_ne!(
        ArgHash::of("a").expect("hash"),
        ArgHash::of(&('a',)).expect("hash")
    );
    // A &str and a String of the same text are the same argument.
    assert_eq!(
        ArgHash::of("x").expect("hash"),
        ArgHash::of(&String::from("x")).expect("hash")
    );
}

/// The key of `args` as format 1 was first written: the domain tag, then the plain bincode bytes.
fn plain_hash<A: Serialize + ?Sized>(args: &A) -> ArgHash {
    let config = bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachier-key-v1\0\0");
    hasher.update(&bincode::serde::encode_to_vec(args, config).expect("serializable"));
    ArgHash::from_bytes(*hasher.finalize().as_bytes())
}

#[test]
fn equal_hash_collections_hash_alike() {
    for n in 1..=20u32 {
        // The same entries, inserted in opposite orders into maps of different capacities.
        let mut a = HashMap::new();
        let mut b = HashMap::with_capacity(1024);
        for i in 0..n * 3 {
            a.insert(format!("k{i}"), i);
        }
        for i in (0..n * 3).rev() {
            b.insert(format!("k{i}"), i);
        }
        assert_eq!(a, b);
        let (ka, kb) = (
            ArgHash::of(&a).expect("hash"),
            ArgHash::of(&b).expect("hash"),
        );
        assert_eq!(ka, kb, "equal maps of {} entries hash differently", a.len());
        let set_a: HashSet<u64> = (0..u64::from(n) * 5).collect();
        let set_b: HashSet<u64> = (0..u64::from(n) * 5).rev().collect();
        assert_eq!(
            ArgHash::of(&(&set_a, n)).expect("hash"),
            ArgHash::of(&(&set_b, n)).expect("hash")
        );
        // Different maps still differ.
        b.insert("extra".into(), 0);
        assert_ne!(ka, ArgHash::of(&b).expect("hash"));
    }
}

#[test]
fn ordered_arguments_keep_their_keys() {
    // Sorting applies to hash collections only: ordered maps, sets and sequences hash exactly as
    // they did before it (their order is their own).
    let map: BTreeMap<String, Vec<u32>> = (0..40).map(|i| (format!("{i}"), vec![i; 3])).collect();
    assert_eq!(ArgHash::of(&map).expect("hash"), plain_hash(&map));
    let set: BTreeSet<i64> = (-20..20).collect();
    assert_eq!(
        ArgHash::of(&(&set, "x")).expect("hash"),
        plain_hash(&(&set, "x"))
    );
    let seq = vec![3u8, 1, 2];
    assert_eq!(ArgHash::of(&seq).expect("hash"), plain_hash(&seq));
    assert_ne!(
        ArgHash::of(&seq).expect("hash"),
        ArgHash::of(&vec![1u8, 2, 3]).expect("hash")
    );
}
