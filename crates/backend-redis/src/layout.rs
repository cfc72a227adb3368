//! Where things live in Redis: key names, `SCAN MATCH` patterns, the entry framing and the claim
//! value. Pure functions, so the layout is tested without a server. The crate docs describe the
//! layout for users; this module is its single implementation.

use std::io::Write;

use cachier_core::{ArgHash, FuncId, Key, Namespace, Timestamp};
use redis::{RedisWrite, ToRedisArgs};

/// The first byte of every stored entry: the version of the entry framing.
pub(crate) const FRAMING_VERSION: u8 = 1;
/// Framing version byte + `stored_at` as a big-endian `u64` of milliseconds.
pub(crate) const HEADER_LEN: usize = 9;
/// The suffix that turns an entry key into its claim key.
pub(crate) const CLAIM_SUFFIX: &str = ":claim";
/// The suffix that turns an entry key into its wake-up channel.
pub(crate) const WAKE_SUFFIX: &str = ":wake";
/// Length of an [`ArgHash`] in hex.
const HASH_HEX_LEN: usize = 64;

/// Escapes a function id for use inside a key: `%`, `:`, `{` and `}` become `%25`, `%3A`,
/// `%7B` and `%7D`. Without `:` the key splits into its parts unambiguously; without braces the
/// hash tag (the whole `{...}`) cannot end early.
pub(crate) fn escape_func(func: &FuncId) -> String {
    let mut out = String::with_capacity(func.as_str().len());
    write_escaped_func(func.as_str(), |part| out.push_str(part));
    out
}

/// Hands `id` escaped as [`escape_func`] does to `put`, in parts: plain runs whole, then each
/// escape.
fn write_escaped_func(id: &str, mut put: impl FnMut(&str)) {
    let mut rest = id;
    while let Some(at) = rest.find(['%', ':', '{', '}']) {
        put(&rest[..at]);
        put(escape_of(rest.as_bytes()[at]));
        rest = &rest[at + 1..];
    }
    put(rest);
}

/// The escape of one of the four escaped characters.
fn escape_of(c: u8) -> &'static str {
    match c {
        b'%' => "%25",
        b':' => "%3A",
        b'{' => "%7B",
        _ => "%7D",
    }
}

/// Reverses [`escape_func`]; `None` for text [`escape_func`] never writes (a raw `:`, `{`, `}`,
/// a `%` not starting one of the four escapes).
fn unescape_func(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find(['%', ':', '{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (c, len) = if tail.starts_with("%25") {
            ('%', 3)
        } else if tail.starts_with("%3A") {
            (':', 3)
        } else if tail.starts_with("%7B") {
            ('{', 3)
        } else if tail.starts_with("%7D") {
            ('}', 3)
        } else {
            return None;
        };
        out.push(c);
        rest = &tail[len..];
    }
    out.push_str(rest);
    Some(out)
}

/// Escapes text for a `SCAN MATCH` pattern so that it matches only itself: each of the glob
/// metacharacters `* ? [ ] \` gets a backslash.
pub(crate) fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The key holding the value of `key`: `{<namespace>:<escaped func>:<hash hex>}`. The braces make
/// the whole name the Redis Cluster hash tag, which the claim key and wake-up channel share.
pub(crate) fn entry_key(key: &Key) -> String {
    let mut out = String::with_capacity(
        key.namespace.as_str().len()
            + key.func.as_str().len()
            + HASH_HEX_LEN
            + 3
            + CLAIM_SUFFIX.len(),
    );
    write_entry_key(key, |part| out.push_str(part));
    out
}

/// The entry key of a key as a command argument, written straight into the command: the hit's
/// `GET` makes no `String` of its own.
pub(crate) struct EntryKey<'a>(pub &'a Key);

impl ToRedisArgs for EntryKey<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        // The parts go in one by one: room for all of them first, so the command's buffer
        // grows once.
        let key = self.0;
        let mut len = key.namespace.as_str().len() + HASH_HEX_LEN + 4;
        write_escaped_func(key.func.as_str(), |part| len += part.len());
        out.reserve_space_for_args([len]);
        let mut arg = out.writer_for_next_arg();
        // Writing into the command's own buffer cannot fail.
        write_entry_key(self.0, |part| {
            let _ = arg.write_all(part.as_bytes());
        });
    }
}

/// Hands the parts of `key`'s entry key to `put`, in order. Built by hand rather than with
/// `format!`: this runs on every hit, and the formatting machinery (with the hash's own hex
/// `String`) cost more than the rest of the key handling.
fn write_entry_key(key: &Key, mut put: impl FnMut(&str)) {
    put("{");
    put(key.namespace.as_str());
    put(":");
    write_escaped_func(key.func.as_str(), &mut put);
    put(":");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; HASH_HEX_LEN];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(key.hash.as_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    put(std::str::from_utf8(&hex).expect("hex digits are ASCII"));
    put("}");
}

/// The entry key and the claim key of `key`, built together (the read path needs both).
pub(crate) fn entry_and_claim_keys(key: &Key) -> (String, String) {
    let entry = entry_key(key);
    let mut claim = String::with_capacity(entry.len() + CLAIM_SUFFIX.len());
    claim.push_str(&entry);
    claim.push_str(CLAIM_SUFFIX);
    (entry, claim)
}

/// The key holding the claim on `key`: the entry key followed by `:claim`.
pub(crate) fn claim_key(key: &Key) -> String {
    let mut k = entry_key(key);
    k.push_str(CLAIM_SUFFIX);
    k
}

/// The pub/sub channel announcing that the claim on `key` ended: the entry key + `:wake`.
pub(crate) fn wake_channel(key: &Key) -> String {
    let mut k = entry_key(key);
    k.push_str(WAKE_SUFFIX);
    k
}

/// The wake-up channel of a claim key found by `SCAN`.
pub(crate) fn wake_channel_of_claim(claim_key: &[u8]) -> Option<Vec<u8>> {
    let entry = claim_key.strip_suffix(CLAIM_SUFFIX.as_bytes())?;
    let mut channel = entry.to_vec();
    channel.extend_from_slice(WAKE_SUFFIX.as_bytes());
    Some(channel)
}

/// The glob prefix matching the entry keys of exactly one function: the escaped namespace and
/// function id, then exactly 64 single-character wildcards for the hash and the closing brace.
/// A function `f` never matches `f:g` (its keys have more characters before the brace) nor `f*`
/// (the `*` is escaped).
fn func_entry_glob(namespace: &Namespace, func: &FuncId) -> String {
    format!(
        "{{{}:{}:{}}}",
        escape_glob(namespace.as_str()),
        escape_glob(&escape_func(func)),
        "?".repeat(HASH_HEX_LEN)
    )
}

/// `SCAN MATCH` pattern for the values of one function.
pub(crate) fn func_entries_pattern(namespace: &Namespace, func: &FuncId) -> String {
    func_entry_glob(namespace, func)
}

/// `SCAN MATCH` pattern for the claims of one function.
pub(crate) fn func_claims_pattern(namespace: &Namespace, func: &FuncId) -> String {
    let mut p = func_entry_glob(namespace, func);
    p.push_str(CLAIM_SUFFIX);
    p
}

/// `SCAN MATCH` pattern for everything (values and claims) of one function.
pub(crate) fn func_all_pattern(namespace: &Namespace, func: &FuncId) -> String {
    let mut p = func_entry_glob(namespace, func);
    p.push('*');
    p
}

/// `SCAN MATCH` pattern for everything in one namespace. Namespaces cannot contain `:`, so
/// `app` never matches `app2`.
pub(crate) fn namespace_pattern(namespace: &Namespace) -> String {
    format!("{{{}:*", escape_glob(namespace.as_str()))
}

/// The prefix of every name of `namespace`: `{<namespace>:`. Namespaces cannot contain `:`,
/// so the prefix of `app` is not a prefix of any name of `app2`, and the prefixes of two
/// namespaces never overlap (which Redis requires of the prefixes of one tracking client).
pub(crate) fn namespace_prefix(namespace: &Namespace) -> String {
    format!("{{{namespace}:")
}

/// What a Redis name reported by client-side tracking stands for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Name<'a> {
    /// The entry of this key.
    Entry(Key),
    /// The claim of an entry: not a value.
    Claim,
    /// A name under the prefix of this namespace that this crate did not write: anything in
    /// the namespace may have changed.
    Foreign(&'a str),
    /// Not a name of any namespace.
    Unknown,
}

/// Reads a name written by [`entry_key`] or [`claim_key`] back into its parts. Only the exact
/// text those functions write is an entry (the escapes, 64 lowercase hex digits), so a name
/// maps back to one key.
pub(crate) fn parse_name(name: &[u8]) -> Name<'_> {
    let Some(namespace) = namespace_of_name(name) else {
        return Name::Unknown;
    };
    let Ok(text) = std::str::from_utf8(name) else {
        return Name::Foreign(namespace);
    };
    if text.ends_with(CLAIM_SUFFIX)
        && parse_entry(&text[..text.len() - CLAIM_SUFFIX.len()]).is_some()
    {
        return Name::Claim;
    }
    match parse_entry(text) {
        Some(key) => Name::Entry(key),
        None => Name::Foreign(namespace),
    }
}

/// The namespace of a name `{<namespace>:...`, if it has that shape and a valid namespace.
pub(crate) fn namespace_of_name(name: &[u8]) -> Option<&str> {
    let rest = name.strip_prefix(b"{")?;
    let end = rest.iter().position(|&b| b == b':')?;
    let namespace = std::str::from_utf8(&rest[..end]).ok()?;
    Namespace::new(namespace).ok()?;
    Some(namespace)
}

/// The key of an entry name `{<namespace>:<escaped func>:<hash>}`, exactly as [`entry_key`]
/// writes it.
fn parse_entry(text: &str) -> Option<Key> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let (namespace, rest) = inner.split_once(':')?;
    let (func, hash) = rest.rsplit_once(':')?;
    if hash.len() != HASH_HEX_LEN {
        return None;
    }
    let namespace = Namespace::new(namespace).ok()?;
    let func = FuncId::new(unescape_func(func)?).ok()?;
    let hash = ArgHash::from_hex(hash).ok()?;
    let key = Key::new(namespace, func, hash);
    // Only the one spelling `entry_key` writes: any other is not this crate's name.
    (entry_key(&key) == text).then_some(key)
}

/// Whether a key found by `SCAN` is a claim key (the others are entry keys).
pub(crate) fn is_claim_key(key: &[u8]) -> bool {
    key.ends_with(CLAIM_SUFFIX.as_bytes())
}

/// Frames a value for storage: version byte, `stored_at` (big-endian milliseconds), the bytes.
pub(crate) fn pack_entry(value: &[u8], stored_at: Timestamp) -> Vec<u8> {
    let mut packed = Vec::with_capacity(HEADER_LEN + value.len());
    packed.push(FRAMING_VERSION);
    packed.extend_from_slice(&stored_at.as_millis().to_be_bytes());
    packed.extend_from_slice(value);
    packed
}

/// Reads the framing of a stored entry: `stored_at` and where the value starts. `None` for
/// bytes this crate did not write (too short, another framing version).
pub(crate) fn unpack_header(stored: &[u8]) -> Option<Timestamp> {
    if stored.len() < HEADER_LEN || stored[0] != FRAMING_VERSION {
        return None;
    }
    let mut millis = [0u8; 8];
    millis.copy_from_slice(&stored[1..HEADER_LEN]);
    Some(Timestamp(u64::from_be_bytes(millis)))
}

/// The value stored in a claim key: `<expiry ms>:<token>`.
pub(crate) fn claim_value(until: Timestamp, token: &str) -> String {
    format!("{}:{}", until.as_millis(), token)
}

/// The expiry written in a claim value, if it is one this crate wrote.
pub(crate) fn claim_value_until(value: &[u8]) -> Option<Timestamp> {
    let sep = value.iter().position(|&b| b == b':')?;
    let digits = std::str::from_utf8(&value[..sep]).ok()?;
    digits.parse().ok().map(Timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, func: &str) -> Key {
        Key::new(
            Namespace::new(ns).unwrap(),
            FuncId::new(func).unwrap(),
            ArgHash::from_bytes([0xab; 32]),
        )
    }

    #[test]
    fn the_entry_key_argument_is_the_entry_key() {
        for (ns, func) in [
            ("a", "f"),
            ("app", "x}{%y:z"),
            ("n", "naïve::函数"),
            ("ns", "%3A"),
        ] {
            let mut k = key(ns, func);
            k.hash = ArgHash::from_bytes(std::array::from_fn(|i| (i * 37) as u8));
            let cmd = redis::cmd("GET").arg(EntryKey(&k)).arg("next").clone();
            let args: Vec<Vec<u8>> = cmd
                .args_iter()
                .map(|arg| match arg {
                    redis::Arg::Simple(bytes) => bytes.to_vec(),
                    _ => panic!("only plain arguments"),
                })
                .collect();
            assert_eq!(
                args,
                [
                    b"GET".to_vec(),
                    entry_key(&k).into_bytes(),
                    b"next".to_vec()
                ]
            );
        }
    }

    /// Redis' glob matcher, reduced to what our patterns use: literal bytes, `\` escapes, `?`
    /// and `*`.
    fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|i| glob_match(rest, &text[i..])),
            Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
            Some((b'\\', rest)) => match (rest.split_first(), text.split_first()) {
                (Some((p, prest)), Some((t, trest))) => p == t && glob_match(prest, trest),
                _ => false,
            },
            Some((p, rest)) => text.first() == Some(p) && glob_match(rest, &text[1..]),
        }
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let k = key("app", "m::f");
        let entry = entry_key(&k);
        assert_eq!(entry, format!("{{app:m%3A%3Af:{}}}", "ab".repeat(32)));
        assert_eq!(claim_key(&k), format!("{entry}:claim"));
        assert_eq!(wake_channel(&k), format!("{entry}:wake"));
        assert_eq!(
            wake_channel_of_claim(claim_key(&k).as_bytes()).unwrap(),
            wake_channel(&k).into_bytes()
        );
    }

    #[test]
    fn entry_key_is_the_documented_spelling() {
        for func in ["m::f", "x}{%y", "plain", "", "%%::{{}}", "é:ü"] {
            let func = if func.is_empty() { "f" } else { func };
            let k = key("ns", func);
            let escaped: String = func
                .chars()
                .map(|c| match c {
                    '%' => "%25".to_owned(),
                    ':' => "%3A".to_owned(),
                    '{' => "%7B".to_owned(),
                    '}' => "%7D".to_owned(),
                    c => c.to_string(),
                })
                .collect();
            assert_eq!(
                entry_key(&k),
                format!("{{ns:{escaped}:{}}}", k.hash.to_hex())
            );
            assert_eq!(escape_func(&k.func), escaped);
        }
    }

    #[test]
    fn braces_and_percent_are_escaped() {
        let k = key("a", "x}{%y");
        assert!(entry_key(&k).starts_with("{a:x%7D%7B%25y:"));
        // One opening and one closing brace: the hash tag is the whole entry name.
        assert_eq!(entry_key(&k).matches('}').count(), 1);
    }

    #[test]
    fn patterns_match_only_their_own_function() {
        let funcs = [
            "foo", "foo_bar", "foo*", "fo?", "f[o]o", "foo:bar", "foo\\", "foo%3A",
        ];
        for pattern_func in funcs {
            for key_func in funcs {
                let k = key("ns", key_func);
                let pattern = func_all_pattern(&k.namespace, &fid(pattern_func));
                let expected = pattern_func == key_func;
                for stored in [entry_key(&k), claim_key(&k)] {
                    assert_eq!(
                        glob_match(pattern.as_bytes(), stored.as_bytes()),
                        expected,
                        "pattern of {pattern_func:?} against key of {key_func:?}: {pattern}"
                    );
                }
                let entries = func_entries_pattern(&k.namespace, &fid(pattern_func));
                assert_eq!(
                    glob_match(entries.as_bytes(), entry_key(&k).as_bytes()),
                    expected
                );
                assert!(!glob_match(entries.as_bytes(), claim_key(&k).as_bytes()));
                let claims = func_claims_pattern(&k.namespace, &fid(pattern_func));
                assert_eq!(
                    glob_match(claims.as_bytes(), claim_key(&k).as_bytes()),
                    expected
                );
                assert!(!glob_match(claims.as_bytes(), entry_key(&k).as_bytes()));
            }
        }
    }

    #[test]
    fn namespace_pattern_is_exact() {
        let pattern = namespace_pattern(&Namespace::new("app").unwrap());
        assert!(glob_match(
            pattern.as_bytes(),
            entry_key(&key("app", "f")).as_bytes()
        ));
        assert!(!glob_match(
            pattern.as_bytes(),
            entry_key(&key("app2", "f")).as_bytes()
        ));
        assert!(!glob_match(
            pattern.as_bytes(),
            entry_key(&key("ap", "f")).as_bytes()
        ));
    }

    #[test]
    fn framing_round_trip() {
        let packed = pack_entry(b"\x00\xffvalue", Timestamp(1_700_000_000_123));
        assert_eq!(unpack_header(&packed), Some(Timestamp(1_700_000_000_123)));
        assert_eq!(&packed[HEADER_LEN..], b"\x00\xffvalue");
        assert_eq!(unpack_header(b"hello world"), None);
        assert_eq!(unpack_header(&packed[..8]), None);
        assert_eq!(
            claim_value_until(claim_value(Timestamp(42), "t:k").as_bytes()),
            Some(Timestamp(42))
        );
        assert_eq!(claim_value_until(b"nonsense"), None);
    }

    #[test]
    fn names_map_back_to_their_keys() {
        for func in ["m::f", "x}{%y", "plain", "%3A", "a:b:c", "%", "é"] {
            let k = key("app.v-1_x", func);
            assert_eq!(parse_name(entry_key(&k).as_bytes()), Name::Entry(k.clone()));
            assert_eq!(parse_name(claim_key(&k).as_bytes()), Name::Claim);
            assert!(entry_key(&k).starts_with(&namespace_prefix(&k.namespace)));
            assert_eq!(
                namespace_of_name(wake_channel(&k).as_bytes()),
                Some("app.v-1_x")
            );
        }
        let hash = "ab".repeat(32);
        // Names under a namespace's prefix that `entry_key` would not write.
        for foreign in [
            format!("{{app:f:{}}}", "AB".repeat(32)),
            format!("{{app:f:{}}}", "ab".repeat(31)),
            format!("{{app:f%:{hash}}}"),
            format!("{{app:f%3a:{hash}}}"),
            format!("{{app:f{{:{hash}}}"),
            format!("{{app:f:{hash}"),
            format!("{{app:f:{hash}}}:other"),
            format!("{{app::{hash}}}"),
            "{app:".to_owned(),
            "{app:something else".to_owned(),
        ] {
            assert_eq!(
                parse_name(foreign.as_bytes()),
                Name::Foreign("app"),
                "{foreign}"
            );
        }
        assert_eq!(parse_name(b"{app:\xff\xfe}"), Name::Foreign("app"));
        for unknown in [&b"app:f"[..], b"{app", b"{a pp:f}", b"", b"{:x}"] {
            assert_eq!(parse_name(unknown), Name::Unknown);
        }
    }

    fn fid(s: &str) -> FuncId {
        FuncId::new(s).unwrap()
    }
}
