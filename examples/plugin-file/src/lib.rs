//! An example cachier plugin, written the way a third party would write one: the file backend
//! (`cachier-file`) as a dynamic library that any application loads at run time with
//! `cachier_plugin::PluginCore`, without being compiled against `cachier-file`.
//!
//! It uses only public API: a constructor from the configuration text to a `Core`, and one
//! `export_core!` call, which generates the exported symbol `cachier_plugin_v1`, the
//! declaration and the whole C function table. Build it with
//!
//! ```text
//! cargo build -p cachier-plugin-file          # target/debug/libcachier_plugin_file.so
//! cargo build -p cachier-plugin-file --release
//! ```
//!
//! and load it from an application:
//!
//! ```text
//! let core = cachier_plugin::PluginCore::load(
//!     "target/release/libcachier_plugin_file.so",
//!     "file:///var/cache/my-app?durability=fsync",
//! )?;
//! ```
//!
//! The configuration text is anything `cachier_file::Config::parse` accepts: a directory, or a
//! `file://` URL with options. `cargo xtask test plugin` builds this library and runs the whole
//! conformance suite, cross-process checks included, through the loader.

use cachier_file::{Config, FileCore};

/// Opens the file store the configuration text names.
fn open(config: &str) -> cachier_core::Result<FileCore> {
    FileCore::open(Config::parse(config)?)
}

cachier_plugin::export_core!(open);
