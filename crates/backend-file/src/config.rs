//! Settings of the file backend: where the store lives, how hard a store tries to survive a
//! crash of the machine, and how often a waiter looks for another process's result.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use cachier_core::{Error, Result};

/// The environment variable that overrides the default directory.
pub const DIR_ENV: &str = "CACHIER_DIR";

/// The default longest pause between two looks at a claimed key in [`Core::wait`].
///
/// [`Core::wait`]: cachier_core::Core::wait
pub const DEFAULT_POLL_MAX: Duration = Duration::from_millis(50);

/// The default size up to which an entry file is read on the calling task (see
/// [`Config::with_inline_read_max`]).
pub const DEFAULT_INLINE_READ_MAX: u64 = 256 * 1024;

/// How hard a store tries to survive a crash of the machine (not of the process: a killed process
/// never leaves a torn entry, whatever this says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Write a temp file and rename it over the entry, without flushing to disk (the default).
    ///
    /// A process killed at any point leaves either the old entry or the new one. After a power
    /// loss or kernel crash, entries stored in the last seconds may be missing, empty or
    /// truncated; such files are detected by their header and read as misses. For a cache, whose
    /// contents can always be recomputed, this is the right trade.
    #[default]
    Rename,
    /// Also `fsync` the file before the rename and its directory after it, so a stored entry
    /// survives a power loss. Costs two disk flushes per `set` (measured on ext4 on a virtual
    /// disk: 0.94 ms per 100-byte `set` against 0.35 ms without; expect several milliseconds on
    /// rotating or network disks).
    Fsync,
}

impl Durability {
    fn parse(text: &str) -> Result<Self> {
        match text {
            "rename" => Ok(Durability::Rename),
            "fsync" => Ok(Durability::Fsync),
            other => Err(Error::config(format!(
                "unknown durability {other:?}: use \"rename\" (the default) or \"fsync\""
            ))),
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Rename => "rename",
            Durability::Fsync => "fsync",
        })
    }
}

/// Where and how a [`FileCore`](crate::FileCore) stores its entries.
///
/// ```
/// use cachier_file::{Config, Durability};
///
/// let config: Config = "file:///var/cache/my-app?durability=fsync".parse().unwrap();
/// assert_eq!(config.dir(), std::path::Path::new("/var/cache/my-app"));
/// assert_eq!(config.durability(), Durability::Fsync);
///
/// let config = Config::new("/tmp/my-cache").with_durability(Durability::Rename);
/// assert_eq!(config.dir(), std::path::Path::new("/tmp/my-cache"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    dir: PathBuf,
    durability: Durability,
    poll_max: Duration,
    inline_read_max: u64,
}

impl Config {
    /// A store in `dir` (created on open if missing), with the default settings.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Config {
            dir: dir.into(),
            durability: Durability::default(),
            poll_max: DEFAULT_POLL_MAX,
            inline_read_max: DEFAULT_INLINE_READ_MAX,
        }
    }

    /// A store in the default directory: `$CACHIER_DIR` if set, else `$XDG_CACHE_HOME/cachier`,
    /// else `~/.cache/cachier` (`%LOCALAPPDATA%\cachier` on Windows).
    pub fn from_env() -> Result<Self> {
        default_dir(|name| std::env::var_os(name)).map(Config::new)
    }

    /// Parses a `file://` URL or a plain path.
    ///
    /// The URL form is `file://[localhost]/absolute/path[?options]`, with `%XX` escapes allowed
    /// in the path and the options `durability=rename|fsync`, `poll_max_ms=N` and
    /// `inline_read_max=BYTES`, joined by `&`. A plain path takes no options.
    pub fn parse(text: &str) -> Result<Self> {
        let Some(rest) = text.strip_prefix("file://") else {
            if text.is_empty() {
                return Err(Error::config(
                    "the file backend needs a directory, got \"\"",
                ));
            }
            if text.contains("://") {
                return Err(Error::config(format!(
                    "{text:?} is not a file:// URL or a path"
                )));
            }
            return Ok(Config::new(text));
        };
        let (location, query) = match rest.split_once('?') {
            Some((location, query)) => (location, Some(query)),
            None => (rest, None),
        };
        if location.contains('#') {
            return Err(Error::config(format!(
                "a file:// URL for the cache may not have a fragment: {text:?}"
            )));
        }
        let path = match location.find('/') {
            Some(0) => location,
            Some(i) if &location[..i] == "localhost" => &location[i..],
            _ => {
                return Err(Error::config(format!(
                    "{text:?} names a remote host or no path; use file:///absolute/path"
                )));
            }
        };
        let mut config = Config::new(percent_decode(path)?);
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "durability" => config.durability = Durability::parse(value)?,
                "poll_max_ms" => {
                    let ms: u64 = value.parse().map_err(|_| {
                        Error::config(format!("poll_max_ms must be a number, got {value:?}"))
                    })?;
                    config.poll_max = Duration::from_millis(ms.max(1));
                }
                "inline_read_max" => {
                    config.inline_read_max = value.parse().map_err(|_| {
                        Error::config(format!(
                            "inline_read_max must be a number of bytes, got {value:?}"
                        ))
                    })?;
                }
                other => {
                    return Err(Error::config(format!(
                        "unknown file backend option {other:?} \
                         (known: durability, poll_max_ms, inline_read_max)"
                    )));
                }
            }
        }
        Ok(config)
    }

    /// Sets the [`Durability`].
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the longest pause between two looks at a claimed key while waiting for another
    /// process's result (default [`DEFAULT_POLL_MAX`]). Waiters in the same process are woken
    /// at once; this bounds how late a waiter in another process notices.
    pub fn with_poll_max(mut self, poll_max: Duration) -> Self {
        self.poll_max = poll_max.max(Duration::from_millis(1));
        self
    }

    /// Sets the size up to which `get` reads an entry file on the calling task instead of on
    /// tokio's blocking pool (default [`DEFAULT_INLINE_READ_MAX`], 256 KiB; `0` sends every
    /// read, and the `open` before it, to the pool). The size is the file's: the value plus a
    /// 32-byte header.
    ///
    /// Handing a call to the blocking pool costs tens of microseconds, several times the cost
    /// of opening and reading a file of up to a few hundred kilobytes from the page cache
    /// (about 9 µs for 64 KiB), so such hits are faster inline; a larger file is opened on the
    /// task and read on the pool. On a network file system, where an `open` may stall, set
    /// `0`.
    pub fn with_inline_read_max(mut self, bytes: u64) -> Self {
        self.inline_read_max = bytes;
        self
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The [`Durability`] of stores.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The longest pause between two looks at a claimed key while waiting.
    pub fn poll_max(&self) -> Duration {
        self.poll_max
    }

    /// The size up to which `get` reads an entry file on the calling task.
    pub fn inline_read_max(&self) -> u64 {
        self.inline_read_max
    }
}

impl FromStr for Config {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Config::parse(text)
    }
}

/// The default directory, reading the environment through `var` (a seam for tests).
pub(crate) fn default_dir(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(DIR_ENV) {
        return Ok(dir);
    }
    // The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    if let Some(cache) = set("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return Ok(cache.join("cachier"));
    }
    if cfg!(windows)
        && let Some(local) = set("LOCALAPPDATA")
    {
        return Ok(local.join("cachier"));
    }
    if let Some(home) = set("HOME") {
        return Ok(home.join(".cache").join("cachier"));
    }
    Err(Error::config(format!(
        "no cache directory: set {DIR_ENV}, XDG_CACHE_HOME or HOME, or give a directory"
    )))
}

fn percent_decode(text: &str) -> Result<PathBuf> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::config(format!("bad %-escape in file:// URL path {text:?}"))
                })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    bytes_to_path(out, text)
}

#[cfg(unix)]
fn bytes_to_path(bytes: Vec<u8>, _text: &str) -> Result<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

#[cfg(not(unix))]
fn bytes_to_path(bytes: Vec<u8>, text: &str) -> Result<PathBuf> {
    String::from_utf8(bytes)
        .map(PathBuf::from)
        .map_err(|_| Error::config(format!("file:// URL path {text:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_paths() {
        let c = Config::parse("file:///tmp/a%20b?durability=fsync&poll_max_ms=7&inline_read_max=0")
            .unwrap();
        assert_eq!(c.inline_read_max(), 0);
        assert_eq!(c.dir(), Path::new("/tmp/a b"));
        assert_eq!(c.durability(), Durability::Fsync);
        assert_eq!(c.poll_max(), Duration::from_millis(7));

        let c = Config::parse("file://localhost/var/cache/x").unwrap();
        assert_eq!(c.dir(), Path::new("/var/cache/x"));
        assert_eq!(c.durability(), Durability::Rename);
        assert_eq!(c.poll_max(), DEFAULT_POLL_MAX);
        assert_eq!(c.inline_read_max(), DEFAULT_INLINE_READ_MAX);

        let c: Config = "relative/dir".parse().unwrap();
        assert_eq!(c.dir(), Path::new("relative/dir"));
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            "",
            "file://",
            "file://otherhost/x",
            "file:///x?durability=sometimes",
            "file:///x?poll_max_ms=soon",
            "file:///x?inline_read_max=-1",
            "file:///x?colour=blue",
            "file:///x%zz",
            "file:///x#frag",
            "redis://localhost",
        ] {
            let err = Config::parse(bad).expect_err(bad);
            assert_eq!(err.kind(), cachier_core::ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn default_dir_follows_the_environment() {
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
            move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        }
        let all = [
            ("CACHIER_DIR", "/explicit"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(default_dir(env(&all)).unwrap(), Path::new("/explicit"));
        let no_override = [
            ("CACHIER_DIR", ""),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            default_dir(env(&no_override)).unwrap(),
            Path::new("/xdg/cachier")
        );
        let relative_xdg = [("XDG_CACHE_HOME", "rel"), ("HOME", "/home/u")];
        assert_eq!(
            default_dir(env(&relative_xdg)).unwrap(),
            Path::new("/home/u/.cache/cachier")
        );
        assert!(default_dir(env(&[])).is_err());
    }
}
