//! The `plugin` target's libraries: the example plugin (`examples/plugin-file`) and the test
//! fixtures (`crates/plugin/fixtures`), both `cdylib`s that the tests of `cachier-plugin` load
//! at run time.
//!
//! Cargo builds a `cdylib` only with `cargo build`, never as a dependency of a test, so xtask
//! builds them once, in one `cargo build`, before the tests are built, and names the directory
//! that holds them in `CACHIER_TEST_PLUGIN_DIR`. No test runs cargo itself. The build enables
//! `cachier-core/conformance`, as the tests' build does, so both builds share every compiled
//! dependency instead of compiling `cachier-core` and the crates above it twice.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::workspace;

/// The variable the plugin tests read the libraries' directory from.
pub const PLUGIN_DIR_ENV: &str = "CACHIER_TEST_PLUGIN_DIR";

/// The variable the benchmark reads the release build's directory from.
pub const BENCH_PLUGIN_DIR_ENV: &str = "CACHIER_BENCH_PLUGIN_DIR";

/// The `cdylib` packages the plugin tests load.
pub const TEST_LIBRARIES: &[&str] = &["cachier-plugin-file", "cachier-plugin-fixtures"];

/// The example plugin, the one the benchmark loads.
pub const EXAMPLE: &str = "cachier-plugin-file";

/// Builds the test libraries (debug); returns the variable to hand to the tests and how long
/// the build took.
pub fn build_test_libraries() -> Result<((String, String), Duration), String> {
    let started = Instant::now();
    let mut args = vec!["build".to_owned()];
    for package in TEST_LIBRARIES {
        args.extend(["-p".to_owned(), (*package).to_owned()]);
    }
    args.extend([
        "--features".to_owned(),
        "cachier-core/conformance".to_owned(),
    ]);
    let dir = build(&args, "debug")?;
    Ok(((PLUGIN_DIR_ENV.to_owned(), dir), started.elapsed()))
}

/// Builds the example plugin in release mode for the benchmark; returns the variable to hand
/// to it.
pub fn build_bench_library() -> Result<(String, String), String> {
    let args = ["build", "--release", "-p", EXAMPLE].map(str::to_owned);
    Ok((BENCH_PLUGIN_DIR_ENV.to_owned(), build(&args, "release")?))
}

/// Runs `cargo {args}` and returns the profile directory the libraries land in.
fn build(args: &[String], profile_dir: &str) -> Result<String, String> {
    println!("== building the plugin libraries: cargo {}", args.join(" "));
    let status = workspace::cargo()
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the plugin libraries failed ({status}): cargo {}",
            args.join(" ")
        ));
    }
    let dir: PathBuf = workspace::target_dir().join(profile_dir);
    Ok(dir.display().to_string())
}
