//! Loading: every bad library is a `Config` error that names the library and the reason, found
//! before anything in the library is called, and the host goes on working; good libraries of
//! this or a later minor ABI version load.

mod support;

use std::path::Path;
use std::sync::Arc;

use cachier_core::{Cachier, Core, Error, ErrorKind, Key, Namespace, Timestamp, func_id};
use cachier_plugin::{Config, PluginCore, abi};

/// Asserts that `result` is a `Config` error naming `path` and saying `reason`.
fn assert_refused(result: cachier_core::Result<PluginCore>, path: &Path, reason: &str) -> Error {
    let err = result.expect_err("the library was loaded");
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Config, "{text}");
    assert_eq!(err.operation(), Some("load"), "{text}");
    assert!(
        text.contains(&*path.to_string_lossy()),
        "the error does not name the library: {text}"
    );
    assert!(
        text.contains(reason),
        "the error does not say {reason:?}: {text}"
    );
    err
}

/// The fixture plugin exported as `symbol`.
fn fixture(symbol: &str) -> cachier_core::Result<PluginCore> {
    PluginCore::load_symbol(support::fixtures(), symbol, "")
}

/// A good plugin still loads and answers (the host lives on after a refused library).
async fn host_still_works() {
    let core = PluginCore::load_symbol(support::fixtures(), "cachier_fixture_memory", "")
        .expect("a good plugin loads after a bad one");
    let key = Key::for_args(&Namespace::default(), &func_id!("f"), &1u8).unwrap();
    core.set(&key, vec![7].into(), Timestamp::now())
        .await
        .unwrap();
    let entry = core.get(&key).await.unwrap().expect("stored");
    assert_eq!(entry.value.as_deref(), Some(&[7u8][..]));
}

#[tokio::test]
async fn a_path_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libnothing.so");
    assert_refused(PluginCore::load(&path, ""), &path, "no such file");
    host_still_works().await;
}

#[tokio::test]
async fn a_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert_refused(
        PluginCore::load(dir.path(), ""),
        dir.path(),
        "is a directory",
    );
    host_still_works().await;
}

#[tokio::test]
async fn a_file_that_is_not_a_library() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libfake.so");
    std::fs::write(&path, b"#!/bin/sh\necho this is not a library\n").unwrap();
    assert_refused(PluginCore::load(&path, ""), &path, "not a loadable library");
    host_still_works().await;
}

#[tokio::test]
async fn a_library_without_the_symbol() {
    // The fixtures export every plugin under a name of its own, none as `cachier_plugin_v1`.
    let path = support::fixtures();
    assert_refused(
        PluginCore::load(&path, ""),
        &path,
        "no symbol `cachier_plugin_v1`",
    );
    assert_refused(
        PluginCore::load_symbol(&path, "cachier_fixture_nonexistent", ""),
        &path,
        "no symbol `cachier_fixture_nonexistent`",
    );
    host_still_works().await;
}

#[tokio::test]
async fn a_wrong_magic() {
    let path = support::fixtures();
    assert_refused(
        fixture("cachier_fixture_wrong_magic"),
        &path,
        "wrong magic \"NOTCACHR\"",
    );
    host_still_works().await;
}

#[tokio::test]
async fn a_newer_major_version() {
    let path = support::fixtures();
    let err = assert_refused(
        fixture("cachier_fixture_newer_major"),
        &path,
        "plugin ABI 2.0",
    );
    assert!(err.to_string().contains("newer"), "{err}");
    host_still_works().await;
}

#[tokio::test]
async fn an_older_major_version() {
    let path = support::fixtures();
    let err = assert_refused(
        fixture("cachier_fixture_older_major"),
        &path,
        "plugin ABI 0.9",
    );
    assert!(err.to_string().contains("older"), "{err}");
    host_still_works().await;
}

#[tokio::test]
async fn a_table_shorter_than_the_host_needs() {
    let path = support::fixtures();
    let reason = format!(
        "function table is 72 bytes, shorter than the {} bytes",
        abi::TABLE_SIZE
    );
    assert_refused(fixture("cachier_fixture_short_table"), &path, &reason);
    host_still_works().await;
}

#[tokio::test]
async fn a_table_without_a_required_function() {
    let path = support::fixtures();
    assert_refused(
        fixture("cachier_fixture_missing_function"),
        &path,
        "lacks get",
    );
    host_still_works().await;
}

#[tokio::test]
async fn a_null_declaration() {
    let path = support::fixtures();
    assert_refused(
        fixture("cachier_fixture_null_declaration"),
        &path,
        "no declaration",
    );
    host_still_works().await;
}

#[tokio::test]
async fn a_newer_minor_version_loads_and_works() {
    let core = fixture("cachier_fixture_newer_minor").expect("ABI 1.7 loads in a 1.0 host");
    assert_eq!(core.abi_minor(), 7);
    let cache = Cachier::new(Arc::new(core));
    let f = cache.function(func_id!("newer"));
    assert_eq!(f.call(&1u8, || async { 10u32 }).await.unwrap(), 10);
    assert_eq!(f.call(&1u8, || async { 20u32 }).await.unwrap(), 10);
}

#[test]
fn the_example_plugin_declares_itself() {
    let store = tempfile::tempdir().unwrap();
    let core = PluginCore::load(support::example_plugin(), &store.path().to_string_lossy())
        .expect("the example plugin loads");
    assert_eq!(core.plugin_name(), "cachier-plugin-file");
    assert_eq!(core.name(), "cachier-plugin-file");
    assert_eq!(core.plugin_version(), env!("CARGO_PKG_VERSION"));
    assert_eq!(core.abi_minor(), abi::ABI_MINOR);
    let caps = core.capabilities();
    assert!(caps.cross_process && caps.persistent && !caps.native_wakeup);
    assert_eq!(caps.max_value_bytes, None);
    // Loading it again reuses the library and opens a second store.
    let other = tempfile::tempdir().unwrap();
    let url = format!("file://{}?durability=fsync", other.path().display());
    let again =
        PluginCore::open(Config::new(support::example_plugin(), url)).expect("a second store");
    assert_eq!(again.plugin_name(), core.plugin_name());
}

#[test]
fn an_error_of_the_plugins_open_keeps_its_kind() {
    // The file backend refuses a URL of another scheme as a configuration error.
    let err = PluginCore::load(support::example_plugin(), "redis://localhost")
        .expect_err("the file plugin opened a redis URL");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert_eq!(err.operation(), Some("open"), "{err}");
    assert_eq!(err.backend(), Some("cachier-plugin-file"), "{err}");
    assert!(err.to_string().contains("redis://localhost"), "{err}");
}
