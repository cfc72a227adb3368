//! Where the tests find the plugin libraries and the file store.
//!
//! `cargo xtask test plugin` builds the libraries (`cachier-plugin-file`, the example, and
//! `cachier-plugin-fixtures`) in one `cargo build` before the tests and names their directory in
//! `CACHIER_TEST_PLUGIN_DIR`. Without it, the tests look in the target directory's `debug/`,
//! where `cargo build -p cachier-plugin-file -p cachier-plugin-fixtures` puts them; a library
//! that is in neither place fails the test with that command, never passes it silently.

#![allow(dead_code)] // each test binary uses part of this module

use std::path::PathBuf;

/// The variable xtask names the libraries' directory in.
pub const PLUGIN_DIR_ENV: &str = "CACHIER_TEST_PLUGIN_DIR";

/// The directory the libraries are in.
pub fn library_dir() -> PathBuf {
    match std::env::var_os(PLUGIN_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        // CARGO_TARGET_TMPDIR is `{target}/tmp`; `cargo build` puts libraries in `{target}/debug`.
        _ => PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .map(|target| target.join("debug"))
            .unwrap_or_default(),
    }
}

/// The path of the library built from the crate whose library is named `name`; panics with
/// the command that builds it when it is missing.
pub fn library(name: &str) -> PathBuf {
    let file = format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let path = library_dir().join(file);
    assert!(
        path.is_file(),
        "the plugin library {} is missing: run `cargo xtask test plugin`, or build it with \
         `cargo build -p cachier-plugin-file -p cachier-plugin-fixtures` before `cargo test -p \
         cachier-plugin` (or set {PLUGIN_DIR_ENV} to the directory that holds it)",
        path.display()
    );
    path
}

/// The example plugin: the file backend as a library (`examples/plugin-file`).
pub fn example_plugin() -> PathBuf {
    library("cachier_plugin_file")
}

/// The library of failing plugins (`crates/plugin/fixtures`).
pub fn fixtures() -> PathBuf {
    library("cachier_plugin_fixtures")
}

/// The file store the plugin tests share (each test in a namespace of its own): the file
/// backend's test directory xtask names in `CACHIER_TEST_FILE_DIR`, else the file backend's
/// own conformance store. xtask's leftover check looks in both.
pub fn store_dir() -> PathBuf {
    match std::env::var_os("CACHIER_TEST_FILE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(concat!(
            env!("CARGO_TARGET_TMPDIR"),
            "/cachier-file-conformance"
        )),
    }
}
