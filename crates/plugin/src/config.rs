//! What to load: the library, the symbol in it, the text handed to the plugin's `open`, and
//! the limits the host holds the plugin to.

use std::path::{Path, PathBuf};

use crate::abi;

/// The largest buffer the host copies out of a plugin unless the plugin declares a smaller
/// `max_value_bytes` or [`Config::with_max_value_bytes`] sets another: 1 GiB.
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 1 << 30;

/// The longest error message, claim token or name the host reads from a plugin: 64 KiB.
/// Longer ones are refused (an error), never copied.
pub const MAX_TEXT_BYTES: usize = 64 << 10;

/// How to load and open one plugin store with [`PluginCore::open`](crate::PluginCore::open).
///
/// ```
/// use cachier_plugin::Config;
///
/// let config = Config::new("/usr/lib/cachier/libmy_backend.so", "file:///var/cache/my-app")
///     .with_max_value_bytes(64 << 20);
/// assert_eq!(config.symbol(), "cachier_plugin_v1");
/// assert_eq!(config.open_text(), "file:///var/cache/my-app");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    library: PathBuf,
    symbol: String,
    open: String,
    max_value_bytes: u64,
}

impl Config {
    /// The plugin in the library at `library`, opened with `open` (the plugin's own
    /// configuration text: a URL, a path, whatever the plugin documents).
    pub fn new(library: impl Into<PathBuf>, open: impl Into<String>) -> Self {
        Config {
            library: library.into(),
            symbol: abi::SYMBOL.to_owned(),
            open: open.into(),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }

    /// Looks the declaration up under `symbol` instead of [`abi::SYMBOL`]: for a library that
    /// exports several plugins (`export_core!(make, symbol = name)`).
    pub fn with_symbol(mut self, symbol: impl Into<String>) -> Self {
        self.symbol = symbol.into();
        self
    }

    /// The largest value, in bytes, the host copies out of the plugin (default
    /// [`DEFAULT_MAX_VALUE_BYTES`]; a smaller `max_value_bytes` the plugin declares wins). A
    /// longer buffer is refused with a `Corrupt` error before a byte of it is read.
    pub fn with_max_value_bytes(mut self, bytes: u64) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// The library's path.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The symbol the declaration is looked up under.
    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    /// The text handed to the plugin's `open`.
    pub fn open_text(&self) -> &str {
        &self.open
    }

    /// The largest value the host copies out of the plugin.
    pub fn max_value_bytes(&self) -> u64 {
        self.max_value_bytes
    }
}
