//! Names and bytes on disk: safe directory names for namespaces and functions, which file in a
//! function directory is what, and the entry and claim record formats (see the crate docs).

use std::cell::RefCell;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cachier_core::{ClaimToken, FuncId, Key, Namespace, Timestamp};

/// The first bytes of every entry file.
pub(crate) const ENTRY_MAGIC: [u8; 8] = *b"CCHRFENT";
/// The first bytes of every claim file.
pub(crate) const CLAIM_MAGIC: [u8; 8] = *b"CCHRFCLM";
/// The version of the entry and claim file formats written by this build.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// The length of an entry file's header.
pub(crate) const ENTRY_HEADER_LEN: usize = 32;
/// The length of a claim record without its token.
const CLAIM_HEADER_LEN: usize = 24;
/// The longest claim file this build reads.
pub(crate) const CLAIM_MAX_LEN: u64 = (CLAIM_HEADER_LEN + u8::MAX as usize) as u64;

/// How many readable characters of an id a directory name keeps.
const READABLE_PREFIX_LEN: usize = 40;
/// The suffix of claim file names.
const CLAIM_SUFFIX: &str = ".claim";
/// The suffix of temp file names (which also start with a dot).
const TEMP_SUFFIX: &str = ".tmp";
/// The length of an argument hash in hex.
const HASH_HEX_LEN: usize = 64;
/// The length of a shard directory's name: the first hex digits of the argument hashes in it.
/// Two digits make 256 shards, so a function of 1e6 entries keeps about 4,000 in a directory.
const SHARD_HEX_LEN: usize = 2;

/// Makes a namespace or function id into a directory name that is safe on every file system:
/// a readable prefix (ASCII letters, digits, `_` and `-`; every other character becomes `_`; at
/// most 40 characters), a `-`, and 16 hex digits of the BLAKE3 hash of the exact id. The hash
/// keeps ids apart that the prefix merges (`foo*` and `foo?`), that differ only in case (on
/// case-insensitive file systems) or beyond the prefix; the name never contains a path separator
/// or a dot, so it is never `.`, `..`, hidden, or a path.
pub(crate) fn safe_name(id: &str) -> String {
    let mut name: String = id
        .chars()
        .take(READABLE_PREFIX_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachier-file-name-v1\0");
    hasher.update(id.as_bytes());
    name.push('-');
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in &hasher.finalize().as_bytes()[..8] {
        name.push(HEX[usize::from(b >> 4)] as char);
        name.push(HEX[usize::from(b & 15)] as char);
    }
    name
}

/// The directory of one namespace.
pub(crate) fn namespace_dir(root: &Path, namespace: &Namespace) -> PathBuf {
    root.join(safe_name(namespace.as_str()))
}

/// The directory of one function in one namespace.
pub(crate) fn func_dir(root: &Path, namespace: &Namespace, func: &FuncId) -> PathBuf {
    namespace_dir(root, namespace).join(safe_name(func.as_str()))
}

/// The entry file of one key: `{function dir}/{hh}/{hash}` (what [`KeyPaths::new`] names
/// `entry`, without the other paths: the hit path needs nothing else). The function
/// directory's name costs two BLAKE3 hashes, so each thread keeps the last one it made.
pub(crate) fn entry_path(root: &Path, key: &Key) -> PathBuf {
    thread_local! {
        static LAST_FUNC_DIR: RefCell<Option<(PathBuf, Namespace, FuncId, PathBuf)>> =
            const { RefCell::new(None) };
    }
    let stem = key.hash.to_hex();
    let at = |dir: &Path| {
        let mut path =
            PathBuf::with_capacity(dir.as_os_str().len() + SHARD_HEX_LEN + stem.len() + 2);
        path.push(dir);
        path.push(&stem[..SHARD_HEX_LEN]);
        path.push(&stem);
        path
    };
    LAST_FUNC_DIR.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return at(&func_dir(root, &key.namespace, &key.func));
        };
        match &*last {
            Some((r, ns, func, dir)) if r == root && *ns == key.namespace && *func == key.func => {
                at(dir)
            }
            _ => {
                let dir = func_dir(root, &key.namespace, &key.func);
                let path = at(&dir);
                *last = Some((
                    root.to_path_buf(),
                    key.namespace.clone(),
                    key.func.clone(),
                    dir,
                ));
                path
            }
        }
    })
}

/// The paths of one key.
#[derive(Debug, Clone)]
pub(crate) struct KeyPaths {
    /// The shard directory the files live in: `{function dir}/{first two hex digits}`.
    pub dir: PathBuf,
    /// The entry file: `{hash}`.
    pub entry: PathBuf,
    /// The claim file: `{hash}.claim`.
    pub claim: PathBuf,
    /// The argument hash in hex, the stem of temp file names.
    pub stem: String,
}

impl KeyPaths {
    pub(crate) fn new(root: &Path, key: &Key) -> Self {
        let stem = key.hash.to_hex();
        let dir = func_dir(root, &key.namespace, &key.func).join(&stem[..SHARD_HEX_LEN]);
        KeyPaths {
            entry: dir.join(&stem),
            claim: dir.join(format!("{stem}{CLAIM_SUFFIX}")),
            dir,
            stem,
        }
    }
}

/// A unique temp file name in a function directory: `.{stem}.{pid}-{counter}-{random}.tmp`.
pub(crate) fn temp_name(stem: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = ClaimToken::generate();
    let random = random.as_str().get(..8).unwrap_or("0");
    format!(".{stem}.{}-{n}-{random}{TEMP_SUFFIX}", std::process::id())
}

/// The prefix of a directory being cleared: a function directory (in its namespace directory)
/// or a namespace directory (in the root), renamed aside by `clear` / `clear_namespace`.
const CLEARING_PREFIX: &str = ".clearing.";

/// A unique name for a directory named `name` while it is being cleared:
/// `.clearing.{name}.{pid}-{counter}-{random}`. Safe names never contain a dot, so this never
/// collides with a namespace or function directory.
pub(crate) fn clearing_name(name: &str) -> String {
    let unique = temp_name("x");
    let unique = unique
        .strip_prefix(".x.")
        .and_then(|u| u.strip_suffix(TEMP_SUFFIX))
        .unwrap_or(&unique);
    format!("{CLEARING_PREFIX}{name}.{unique}")
}

/// Whether `name` is a directory being cleared (or left behind by a process killed while
/// clearing it) that was once the directory named `of`.
pub(crate) fn is_clearing_of(name: &OsStr, of: &str) -> bool {
    name.to_str().is_some_and(|n| {
        n.strip_prefix(CLEARING_PREFIX)
            .and_then(|rest| rest.strip_prefix(of))
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// What a file in a function directory is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// `{hash}`: a stored value.
    Entry,
    /// `{hash}.claim`: a claim.
    Claim,
    /// `.{...}.tmp`: a file being written (or left behind by a killed process).
    Temp,
    /// `{two hex digits}`: a shard directory of a function directory, holding the files of
    /// the hashes that start with its name.
    Shard,
    /// Anything else: not ours, left alone.
    Foreign,
}

pub(crate) fn classify(name: &OsStr) -> FileKind {
    let Some(name) = name.to_str() else {
        return FileKind::Foreign;
    };
    let is_hash = |s: &str| {
        s.len() == HASH_HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if is_hash(name) {
        FileKind::Entry
    } else if name.len() == SHARD_HEX_LEN
        && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        FileKind::Shard
    } else if name.strip_suffix(CLAIM_SUFFIX).is_some_and(is_hash) {
        FileKind::Claim
    } else if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) && name.len() > 5 {
        FileKind::Temp
    } else {
        FileKind::Foreign
    }
}

/// The header of an entry file: magic, version, 7 reserved zero bytes, `stored_at` (u64 LE
/// milliseconds), value length (u64 LE).
pub(crate) fn encode_entry_header(stored_at: Timestamp, value_len: u64) -> [u8; ENTRY_HEADER_LEN] {
    let mut header = [0u8; ENTRY_HEADER_LEN];
    header[..8].copy_from_slice(&ENTRY_MAGIC);
    header[8] = FORMAT_VERSION;
    header[16..24].copy_from_slice(&stored_at.as_millis().to_le_bytes());
    header[24..32].copy_from_slice(&value_len.to_le_bytes());
    header
}

/// A decoded entry header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryHeader {
    pub stored_at: Timestamp,
    pub value_len: u64,
}

/// Decodes an entry header from the first bytes of a file; the error says why it is not one.
pub(crate) fn decode_entry_header(bytes: &[u8]) -> Result<EntryHeader, &'static str> {
    let header = bytes
        .get(..ENTRY_HEADER_LEN)
        .ok_or("shorter than an entry header")?;
    if header[..8] != ENTRY_MAGIC {
        return Err("not an entry file (wrong magic number)");
    }
    if header[8] != FORMAT_VERSION {
        return Err("entry format version not supported by this build");
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Ok(EntryHeader {
        stored_at: Timestamp(u64_at(16)),
        value_len: u64_at(24),
    })
}

/// A claim file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimRecord {
    /// When the lease runs out.
    pub until: Timestamp,
    /// The holder's token.
    pub token: ClaimToken,
}

impl ClaimRecord {
    /// Whether the lease is still running.
    pub(crate) fn is_live(&self) -> bool {
        self.until > Timestamp::now()
    }

    /// Magic, version, token length (u8), 6 reserved zero bytes, `until` (u64 LE
    /// milliseconds), then the token's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let token = self.token.as_str().as_bytes();
        let token = &token[..token.len().min(u8::MAX as usize)];
        let mut out = Vec::with_capacity(CLAIM_HEADER_LEN + token.len());
        out.extend_from_slice(&CLAIM_MAGIC);
        out.push(FORMAT_VERSION);
        out.push(token.len() as u8);
        out.extend_from_slice(&[0u8; 6]);
        out.extend_from_slice(&self.until.as_millis().to_le_bytes());
        out.extend_from_slice(token);
        out
    }

    /// Decodes a claim file; `None` for anything that is not exactly one claim record (such a
    /// file counts as no claim and is replaced by the next `claim`).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < CLAIM_HEADER_LEN || bytes[..8] != CLAIM_MAGIC || bytes[8] != FORMAT_VERSION
        {
            return None;
        }
        let token_len = bytes[9] as usize;
        let token = bytes.get(CLAIM_HEADER_LEN..)?;
        if token.len() != token_len {
            return None;
        }
        let mut until = [0u8; 8];
        until.copy_from_slice(&bytes[16..24]);
        Some(ClaimRecord {
            until: Timestamp(u64::from_le_bytes(until)),
            token: ClaimToken::from_string(std::str::from_utf8(token).ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names_are_distinct_and_harmless() {
        let ids = [
            "foo",
            "foo_bar",
            "foo*",
            "foo?",
            "Foo",
            "..",
            ".",
            "../../etc/passwd",
            "a/b\\c",
            "naïve::函数",
            &"x".repeat(256),
            &format!("{}y", "x".repeat(255)),
        ];
        let names: Vec<String> = ids.iter().map(|id| safe_name(id)).collect();
        for (i, name) in names.iter().enumerate() {
            assert!(name.len() <= READABLE_PREFIX_LEN + 17, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{name}"
            );
            for (j, other) in names.iter().enumerate() {
                if i != j {
                    assert_ne!(name.to_lowercase(), other.to_lowercase());
                }
            }
        }
        assert!(safe_name("billing::total").starts_with("billing__total-"));
        let digest = blake3::Hasher::new()
            .update(b"cachier-file-name-v1\0")
            .update(b"billing::total")
            .finalize();
        let hex: String = digest.as_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(safe_name("billing::total"), format!("billing__total-{hex}"));
        assert_eq!(safe_name("foo"), safe_name("foo"));
    }

    #[test]
    fn entry_path_is_the_entry_of_key_paths() {
        let key = Key::for_args(
            &Namespace::default(),
            &FuncId::new("app::f").unwrap(),
            &(1u32, "x"),
        )
        .unwrap();
        let root = Path::new("/cache");
        let paths = KeyPaths::new(root, &key);
        assert_eq!(entry_path(root, &key), paths.entry);
        assert_eq!(paths.entry.parent(), Some(paths.dir.as_path()));
        assert_eq!(paths.claim.parent(), Some(paths.dir.as_path()));
        // The directory a thread remembers is used only for the same root, namespace and
        // function, in any order of calls.
        let other_ns = Namespace::new("other").unwrap();
        let other_func = FuncId::new("app::g").unwrap();
        let keys = [
            key.clone(),
            Key::new(other_ns.clone(), key.func.clone(), key.hash),
            Key::new(key.namespace.clone(), other_func.clone(), key.hash),
            Key::new(other_ns, other_func, key.hash),
            key.clone(),
        ];
        for root in ["/cache", "/other", "/cache"] {
            for key in keys.iter().chain(keys.iter().rev()) {
                let root = Path::new(root);
                assert_eq!(entry_path(root, key), KeyPaths::new(root, key).entry);
            }
        }
    }

    #[test]
    fn file_kinds() {
        let hash = "0123456789abcdef".repeat(4);
        assert_eq!(classify(OsStr::new(&hash)), FileKind::Entry);
        assert_eq!(
            classify(OsStr::new(&format!("{hash}.claim"))),
            FileKind::Claim
        );
        assert_eq!(classify(OsStr::new(&temp_name(&hash))), FileKind::Temp);
        assert_eq!(classify(OsStr::new("0f")), FileKind::Shard);
        for foreign in [
            "README",
            "0F",
            "0",
            "0g",
            "012",
            "0123",
            ".tmp",
            &hash.to_uppercase(),
            &format!("{hash}.lock"),
        ] {
            assert_eq!(
                classify(OsStr::new(foreign)),
                FileKind::Foreign,
                "{foreign}"
            );
        }
        assert_ne!(temp_name(&hash), temp_name(&hash));
    }

    #[test]
    fn clearing_names_are_unique_and_never_safe_names() {
        let name = safe_name("app::f");
        let a = clearing_name(&name);
        assert_ne!(a, clearing_name(&name));
        assert!(a.starts_with(".clearing.app__f-"), "{a}");
        assert!(is_clearing_of(OsStr::new(&a), &name));
        assert!(!is_clearing_of(OsStr::new(&a), &safe_name("app::f2")));
        assert!(!is_clearing_of(OsStr::new(&name), &name));
        assert_eq!(classify(OsStr::new(&a)), FileKind::Foreign);
    }

    #[test]
    fn entry_header_round_trip_and_rejects() {
        let header = encode_entry_header(Timestamp(1234), 99);
        let decoded = decode_entry_header(&header).unwrap();
        assert_eq!(decoded.stored_at, Timestamp(1234));
        assert_eq!(decoded.value_len, 99);
        assert!(decode_entry_header(&header[..31]).is_err());
        let mut foreign = header;
        foreign[0] = b'X';
        assert!(decode_entry_header(&foreign).is_err());
        let mut future = header;
        future[8] = 2;
        assert!(decode_entry_header(&future).is_err());
    }

    #[test]
    fn claim_record_round_trip_and_rejects() {
        let record = ClaimRecord {
            until: Timestamp(777),
            token: ClaimToken::generate(),
        };
        let bytes = record.encode();
        assert_eq!(ClaimRecord::decode(&bytes), Some(record));
        assert_eq!(ClaimRecord::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(ClaimRecord::decode(b""), None);
        let mut longer = bytes.clone();
        longer.push(b'0');
        assert_eq!(ClaimRecord::decode(&longer), None);
    }
}
