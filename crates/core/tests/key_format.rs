//! Pins the key format (version 1): the argument hashes of a fixed set of inputs and the text
//! forms of one key. A change here is a change of format: bump `KEY_FORMAT_VERSION`, review the
//! new snapshot (`cargo insta review`), and say so in the changelog — never by accident.

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
