//! Namespaces, function ids and keys: what a core stores entries under.
//!
//! # Key format, version 1
//!
//! A [`Key`] has three parts:
//!
//! 1. a [`Namespace`]: 1 to 64 characters from `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
//!    It separates applications, environments and tests sharing one store. Default: `cachier`.
//! 2. a [`FuncId`]: the stable name of the cached function, by default its full path
//!    (`module_path!()` + `::` + name) with an optional `@version` suffix so a change of code can
//!    invalidate old entries. 1 to 256 bytes of UTF-8 with no control characters. Backends
//!    escape it for their storage (file names, `SCAN MATCH` patterns); it is never interpreted.
//! 3. an [`ArgHash`]: the arguments, as one serde value (a tuple for several arguments),
//!    serialized with bincode 2 in a fixed configuration (little-endian, fixed-width integers,
//!    no limit) after the 16-byte domain tag `cachier-key-v1\0\0`, hashed with BLAKE3 and written
//!    as 64 lowercase hex digits. Equal arguments give equal keys: the entries of every hash
//!    collection (`HashMap`, `HashSet`, at any depth) are written sorted by their own encoded
//!    bytes, not in iteration order, so two equal maps hash alike. Ordered collections
//!    (`BTreeMap`, `Vec`, ...) are written as they iterate, unchanged.
//!
//! The canonical text form ([`Key::canonical`]) is `1\x1f{namespace}\x1f{func}\x1f{hash}`: the
//! format version, then the parts, separated by the ASCII unit separator, which no part may
//! contain. [`Key`]'s `Display` is the human form `{namespace}/{func}/{hash}`.
//!
//! Any change to the bytes above is a change of [`KEY_FORMAT_VERSION`]; the snapshot tests in
//! `crates/core/tests/key_format.rs` pin the keys of a fixed set of inputs.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::canonical::Canonical;
use crate::error::{Error, Result};

/// The version of the key format described in this module.
pub const KEY_FORMAT_VERSION: u32 = 1;

const KEY_DOMAIN_TAG: &[u8; 16] = b"cachier-key-v1\0\0";
const SEPARATOR: char = '\x1f';

/// The longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// The longest function id, in bytes.
pub const MAX_FUNC_ID_LEN: usize = 256;

/// A prefix that separates everything one application (or environment, or test) stores.
///
/// ```
/// use cachier_core::Namespace;
/// assert!(Namespace::new("my-app.prod").is_ok());
/// assert!(Namespace::new("../etc").is_err());
/// assert_eq!(Namespace::default().as_str(), "cachier");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Arc<str>);

impl Namespace {
    /// Validates and wraps a namespace.
    pub fn new(name: impl AsRef<str>) -> Result<Self> {
        let name = name.as_ref();
        let valid_chars = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if name.is_empty()
            || name.len() > MAX_NAMESPACE_LEN
            || !valid_chars
            || name.starts_with(['.', '-'])
        {
            return Err(Error::invalid_input(format!(
                "invalid namespace {name:?}: use 1 to {MAX_NAMESPACE_LEN} characters from \
                 [A-Za-z0-9_.-], not starting with '.' or '-'"
            )));
        }
        Ok(Namespace(name.into()))
    }

    /// The namespace as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace("cachier".into())
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Namespace({:?})", &*self.0)
    }
}

/// The stable name of a cached function.
///
/// ```
/// use cachier_core::FuncId;
/// let id = FuncId::new("billing::invoice_total").unwrap().with_version("2").unwrap();
/// assert_eq!(id.as_str(), "billing::invoice_total@2");
/// // The usual way: the full path of a function in this module.
/// let here = cachier_core::func_id!("slow_square");
/// assert!(here.as_str().ends_with("::slow_square"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuncId(Arc<str>);

impl FuncId {
    /// Validates and wraps a function id.
    pub fn new(id: impl AsRef<str>) -> Result<Self> {
        let id = id.as_ref();
        if id.is_empty() || id.len() > MAX_FUNC_ID_LEN || id.chars().any(char::is_control) {
            return Err(Error::invalid_input(format!(
                "invalid function id {id:?}: use 1 to {MAX_FUNC_ID_LEN} bytes of text without \
                 control characters"
            )));
        }
        Ok(FuncId(id.into()))
    }

    /// Appends `@version`, so entries computed by older code are not served.
    pub fn with_version(&self, version: impl fmt::Display) -> Result<Self> {
        FuncId::new(format!("{}@{}", self.0, version))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FuncId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FuncId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FuncId({:?})", &*self.0)
    }
}

/// Builds a [`FuncId`] from the calling module's path and a function name:
/// `func_id!("f")` is `FuncId` `"{module_path!()}::f"`.
#[macro_export]
macro_rules! func_id {
    ($name:expr) => {
        $crate::FuncId::new(::std::concat!(::std::module_path!(), "::", $name))
            .expect("a module path and a literal name make a valid function id")
    };
}

/// The BLAKE3 hash of a function's arguments (see the module docs for the exact bytes hashed).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArgHash([u8; 32]);

impl ArgHash {
    /// Hashes serializable arguments. Use a tuple for several arguments.
    pub fn of<A: Serialize + ?Sized>(args: &A) -> Result<Self> {
        let mut hasher = blake3::Hasher::new();
        hasher.update(KEY_DOMAIN_TAG);
        let mut writer = HashWriter(&mut hasher);
        bincode::serde::encode_into_writer(Canonical(args), &mut writer, key_config()).map_err(
            |e| {
                Error::new(
                    crate::ErrorKind::Codec,
                    "the arguments could not be serialized",
                )
                .with_source(e)
                .with_operation("hash arguments")
            },
        )?;
        Ok(ArgHash(*hasher.finalize().as_bytes()))
    }

    /// The hash of arguments already encoded by [`encode_args`]: equal to [`ArgHash::of`] the
    /// same arguments.
    pub(crate) fn of_encoded(encoded: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(KEY_DOMAIN_TAG);
        hasher.update(encoded);
        ArgHash(*hasher.finalize().as_bytes())
    }

    /// Wraps raw hash bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ArgHash(bytes)
    }

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Result<Self> {
        let bad = || Error::invalid_input(format!("invalid argument hash {hex:?}"));
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let nib = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            out[i] = (nib(chunk[0]).ok_or_else(bad)? << 4) | nib(chunk[1]).ok_or_else(bad)?;
        }
        Ok(ArgHash(out))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for ArgHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ArgHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArgHash({})", self.to_hex())
    }
}

/// Appends the bytes [`ArgHash::of`] hashes (after its domain tag) for `args` to `out`: the
/// canonical encoding of the arguments, which the near cache finds its copies by.
pub(crate) fn encode_args<A: Serialize + ?Sized>(args: &A, out: &mut Vec<u8>) -> Result<()> {
    bincode::serde::encode_into_writer(Canonical(args), VecWriter(out), key_config()).map_err(|e| {
        Error::new(
            crate::ErrorKind::Codec,
            "the arguments could not be serialized",
        )
        .with_source(e)
        .with_operation("hash arguments")
    })
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for VecWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

pub(crate) fn key_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

struct HashWriter<'a>(&'a mut blake3::Hasher);

impl bincode::enc::write::Writer for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.update(bytes);
        Ok(())
    }
}

/// Where one cached result lives: namespace, function, argument hash.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The namespace the entry belongs to.
    pub namespace: Namespace,
    /// The function whose result it is.
    pub func: FuncId,
    /// The hash of the arguments.
    pub hash: ArgHash,
}

impl Key {
    /// Assembles a key from its parts.
    pub fn new(namespace: Namespace, func: FuncId, hash: ArgHash) -> Self {
        Key {
            namespace,
            func,
            hash,
        }
    }

    /// The key of `func` called with `args` in `namespace`.
    pub fn for_args<A: Serialize + ?Sized>(
        namespace: &Namespace,
        func: &FuncId,
        args: &A,
    ) -> Result<Self> {
        Ok(Key::new(
            namespace.clone(),
            func.clone(),
            ArgHash::of(args)?,
        ))
    }

    /// The canonical, versioned text form: `1\x1f{namespace}\x1f{func}\x1f{hash}`.
    pub fn canonical(&self) -> String {
        format!(
            "{KEY_FORMAT_VERSION}{SEPARATOR}{}{SEPARATOR}{}{SEPARATOR}{}",
            self.namespace, self.func, self.hash
        )
    }

    /// Parses [`Key::canonical`] output, refusing other format versions.
    pub fn parse_canonical(text: &str) -> Result<Self> {
        let mut parts = text.split(SEPARATOR);
        let (Some(version), Some(ns), Some(func), Some(hash), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Error::invalid_input(format!(
                "not a canonical key: {text:?}"
            )));
        };
        if version != KEY_FORMAT_VERSION.to_string() {
            return Err(Error::invalid_input(format!(
                "key format version {version:?} is not supported (this build reads {KEY_FORMAT_VERSION})"
            )));
        }
        Ok(Key::new(
            Namespace::new(ns)?,
            FuncId::new(func)?,
            ArgHash::from_hex(hash)?,
        ))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.func, self.hash)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_round_trip() {
        let key = Key::for_args(
            &Namespace::default(),
            &FuncId::new("a::b").unwrap(),
            &(1u8, "x"),
        )
        .unwrap();
        assert_eq!(Key::parse_canonical(&key.canonical()).unwrap(), key);
        assert!(Key::parse_canonical("2\x1fa\x1fb\x1f00").is_err());
    }

    #[test]
    fn identifiers_are_validated() {
        for bad in ["", ".hidden", "-x", "a/b", "a b", "ä", &"n".repeat(65)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(FuncId::new("").is_err());
        assert!(FuncId::new("a\nb").is_err());
        assert!(FuncId::new("a\x1fb").is_err());
        assert!(FuncId::new("f".repeat(257)).is_err());
        assert!(FuncId::new("naïve::函数 *?[]:%_'\"").is_ok());
    }

    #[test]
    fn encoded_arguments_hash_like_the_arguments() {
        use std::collections::HashMap;
        let map: HashMap<String, Vec<u32>> = (0..20)
            .map(|i| (format!("k{i}"), vec![i; i as usize]))
            .collect();
        let mut buf = Vec::new();
        encode_args(&(1u8, "x", &map), &mut buf).unwrap();
        assert_eq!(
            ArgHash::of_encoded(&buf),
            ArgHash::of(&(1u8, "x", &map)).unwrap()
        );
    }

    #[test]
    fn hex_round_trip() {
        let h = ArgHash::of(&42u64).unwrap();
        assert_eq!(ArgHash::from_hex(&h.to_hex()).unwrap(), h);
        assert!(ArgHash::from_hex("zz").is_err());
    }
}
