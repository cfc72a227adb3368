//! Object names and object contents: where an entry and its claim live, and the bytes they hold.

use bytes::Bytes;
use cachier_core::{ClaimToken, FuncId, Key, Namespace, Timestamp};
use object_store::path::{Path, PathPart};

/// The first bytes of every entry object this crate writes.
pub(crate) const MAGIC: &[u8; 4] = b"CHOS";
/// The version of the entry framing.
pub(crate) const FRAMING_VERSION: u8 = 1;
/// Magic, version and `stored_at`.
pub(crate) const HEADER_LEN: usize = 4 + 1 + 8;
/// The suffix of a claim object's name.
pub(crate) const CLAIM_SUFFIX: &str = ".claim";
/// The first word of a claim object.
const CLAIM_TAG: &str = "cachier-claim/1";

/// Builds object paths under a fixed prefix.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    prefix: Vec<PathPart<'static>>,
}

impl Layout {
    pub fn new(prefix: &[String]) -> Self {
        Layout {
            prefix: prefix.iter().map(|p| PathPart::from(p.clone())).collect(),
        }
    }

    /// `{prefix}/{namespace}`: everything of one namespace.
    pub fn namespace_dir(&self, namespace: &Namespace) -> Path {
        self.path([PathPart::from(namespace.as_str().to_owned())])
    }

    /// `{prefix}/{namespace}/{func}`: everything of one function.
    pub fn func_dir(&self, namespace: &Namespace, func: &FuncId) -> Path {
        self.path([
            PathPart::from(namespace.as_str().to_owned()),
            func_segment(func),
        ])
    }

    /// `{prefix}/{namespace}/{func}/{hash}`: the entry.
    pub fn value(&self, key: &Key) -> Path {
        self.func_dir(&key.namespace, &key.func)
            .join(key.hash.to_hex())
    }

    /// `{prefix}/{namespace}/{func}/{hash}.claim`: the claim.
    pub fn claim(&self, key: &Key) -> Path {
        self.func_dir(&key.namespace, &key.func)
            .join(format!("{}{CLAIM_SUFFIX}", key.hash.to_hex()))
    }

    fn path<const N: usize>(&self, parts: [PathPart<'static>; N]) -> Path {
        self.prefix.iter().cloned().chain(parts).collect()
    }
}

/// What a listed object under a function's directory is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Listed {
    Value,
    Claim,
    /// Not a name this crate writes (a foreign object): left alone by per-function operations.
    Other,
}

/// Classifies the object at `path` directly inside `dir`.
pub(crate) fn classify(dir: &Path, path: &Path) -> Listed {
    let Some(mut rest) = path.prefix_match(dir) else {
        return Listed::Other;
    };
    let (Some(name), None) = (rest.next(), rest.next()) else {
        return Listed::Other;
    };
    let name = name.as_ref();
    let is_hash =
        |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if is_hash(name) {
        Listed::Value
    } else if name.strip_suffix(CLAIM_SUFFIX).is_some_and(is_hash) {
        Listed::Claim
    } else {
        Listed::Other
    }
}

/// The longest function segment written as it is: file systems allow 255 bytes a name.
pub(crate) const MAX_FUNC_SEGMENT: usize = 200;

/// A function id as one path segment, escaped by `object_store`'s [`PathPart`] rules: `/`,
/// `%`, `\\`, control characters and the characters S3 and GCS advise against are written `%XX`,
/// and a name of exactly `.` or `..` is escaped too. The escaping is reversible, so two function
/// ids never share a directory.
///
/// An escaped id longer than [`MAX_FUNC_SEGMENT`] bytes keeps its first 100 characters or so,
/// then `#` (escaped `%23`) and 32 hex digits of the BLAKE3 hash of the whole id.
pub(crate) fn func_segment(func: &FuncId) -> PathPart<'static> {
    let id = func.as_str();
    let whole = PathPart::from(id.to_owned());
    if whole.as_ref().len() <= MAX_FUNC_SEGMENT {
        return whole;
    }
    let mut head = String::new();
    for c in id.chars() {
        let mut next = head.clone();
        next.push(c);
        if PathPart::from(next.as_str()).as_ref().len() > 100 {
            break;
        }
        head = next;
    }
    let hash = blake3::hash(id.as_bytes()).to_hex();
    PathPart::from(format!("{head}#{}", &hash.as_str()[..32]))
}

/// The header of an entry object holding a value stored at `stored_at`.
pub(crate) fn entry_header(stored_at: Timestamp) -> Bytes {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.push(FRAMING_VERSION);
    header.extend_from_slice(&stored_at.as_millis().to_be_bytes());
    Bytes::from(header)
}

/// Splits an entry object into `stored_at` and the value; `None` for bytes this crate did not
/// write (foreign, truncated, another framing version).
pub(crate) fn parse_entry(object: &Bytes) -> Option<(Timestamp, Bytes)> {
    let stored_at = parse_header(object)?;
    Some((stored_at, object.slice(HEADER_LEN..)))
}

/// `stored_at` from the first [`HEADER_LEN`] bytes of an entry object.
pub(crate) fn parse_header(bytes: &[u8]) -> Option<Timestamp> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC || bytes[4] != FRAMING_VERSION {
        return None;
    }
    let millis = u64::from_be_bytes(bytes[5..HEADER_LEN].try_into().expect("8 bytes"));
    Some(Timestamp(millis))
}

/// A claim object's content: `cachier-claim/1 <until ms> <token>`.
pub(crate) fn claim_body(until: Timestamp, token: &ClaimToken) -> Bytes {
    Bytes::from(format!(
        "{CLAIM_TAG} {} {}",
        until.as_millis(),
        token.as_str()
    ))
}

/// What a released claim object holds: expired, with no token.
pub(crate) fn released_claim_body() -> Bytes {
    Bytes::from(format!("{CLAIM_TAG} 0 -"))
}

/// A claim read back: its expiry and its token; `None` for bytes this crate did not write,
/// which count as an expired claim.
pub(crate) fn parse_claim(bytes: &[u8]) -> Option<(Timestamp, ClaimToken)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut words = text.split(' ');
    let (Some(CLAIM_TAG), Some(until), Some(token), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    Some((
        Timestamp(until.parse().ok()?),
        ClaimToken::from_string(token),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cachier_core::ArgHash;

    fn key(func: &str) -> Key {
        Key::new(
            Namespace::new("ns").expect("namespace"),
            FuncId::new(func).expect("func"),
            ArgHash::from_bytes([0xab; 32]),
        )
    }

    #[test]
    fn paths_follow_the_documented_layout() {
        let layout = Layout::new(&["caches".into(), "app".into()]);
        let k = key("my_mod::f/x y.v@2");
        let hash = "ab".repeat(32);
        assert_eq!(
            layout.value(&k).as_ref(),
            format!("caches/app/ns/my_mod::f%2Fx y.v@2/{hash}")
        );
        assert_eq!(
            layout.claim(&k).as_ref(),
            format!("caches/app/ns/my_mod::f%2Fx y.v@2/{hash}.claim")
        );
        let dir = layout.func_dir(&k.namespace, &k.func);
        assert_eq!(classify(&dir, &layout.value(&k)), Listed::Value);
        assert_eq!(classify(&dir, &layout.claim(&k)), Listed::Claim);
        assert_eq!(
            classify(&dir, &dir.clone().join("notes.txt")),
            Listed::Other
        );
    }

    #[test]
    fn long_function_ids_are_shortened_with_a_hash() {
        let long = format!("{}::f", "m".repeat(253));
        let longer = format!("{}::g", "m".repeat(253));
        let a = func_segment(&FuncId::new(&long).expect("func"));
        let b = func_segment(&FuncId::new(&longer).expect("func"));
        assert!(a.as_ref().len() <= MAX_FUNC_SEGMENT, "{}", a.as_ref());
        assert!(a.as_ref().contains("%23"), "{}", a.as_ref());
        assert_ne!(a, b);
        let wide = FuncId::new("函".repeat(85)).expect("func");
        assert!(func_segment(&wide).as_ref().len() <= MAX_FUNC_SEGMENT);
    }

    #[test]
    fn entries_and_claims_round_trip() {
        let header = entry_header(Timestamp(1234));
        let object = Bytes::from([&header[..], b"value"].concat());
        assert_eq!(
            parse_entry(&object),
            Some((Timestamp(1234), Bytes::from_static(b"value")))
        );
        assert_eq!(parse_entry(&Bytes::from_static(b"CHOS\x02xxxxxxxx")), None);
        assert_eq!(parse_entry(&Bytes::from_static(b"short")), None);
        let token = ClaimToken::generate();
        let (until, read) = parse_claim(&claim_body(Timestamp(99), &token)).expect("claim");
        assert_eq!((until, read), (Timestamp(99), token));
        assert_eq!(parse_claim(b"garbage"), None);
        assert_eq!(
            parse_claim(&released_claim_body()).map(|c| c.0),
            Some(Timestamp(0))
        );
    }
}
