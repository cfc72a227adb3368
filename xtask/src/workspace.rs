//! Where things are: the workspace root, the target directory, the cargo to call.

use std::path::PathBuf;
use std::process::Command;

/// The workspace root (the parent of the `xtask` package).
pub fn root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// The cargo target directory (`CARGO_TARGET_DIR` or `target/` in the workspace).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

/// The xtask's own scratch directory under the target directory.
pub fn xtask_dir() -> PathBuf {
    target_dir().join("xtask")
}

/// A `cargo` command (the one that runs xtask) started in the workspace root.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(root());
    command
}
