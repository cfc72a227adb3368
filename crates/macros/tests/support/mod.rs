//! Caches for the attribute's tests: one per test module, on the backend its path names.
//!
//! A module under `...::memory::...` gets a memory backend of its own, one under `...::file::...`
//! a file backend in a fresh directory `cachier-file-XXXXXX` under `CARGO_TARGET_TMPDIR`. Each
//! test module holds one test, which takes a [`Cleanup`] first: the directory is removed when
//! the test ends, also when it fails, so the tests run side by side and leave nothing behind.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cachier_core::{Cachier, Core};
use cachier_file::{Config, FileCore};
use cachier_memory::MemoryCore;

struct Opened {
    cache: &'static Cachier,
    dir: Option<PathBuf>,
}

static OPENED: Mutex<Option<HashMap<String, Opened>>> = Mutex::new(None);

/// The cache of the test module `module` (pass `module_path!()`).
pub fn cache(module: &str) -> &'static Cachier {
    open(module, false)
}

/// Like [`cache`], with `strict` on: backend errors and rejected results reach the caller.
pub fn strict_cache(module: &str) -> &'static Cachier {
    open(module, true)
}

fn open(module: &str, strict: bool) -> &'static Cachier {
    let name = format!("{module}{}", if strict { "#strict" } else { "" });
    let mut opened = OPENED.lock().unwrap_or_else(PoisonError::into_inner);
    let opened = opened.get_or_insert_with(HashMap::new);
    if let Some(existing) = opened.get(&name) {
        return existing.cache;
    }
    let (core, dir): (Arc<dyn Core>, Option<PathBuf>) = if module.contains("::memory::") {
        (Arc::new(MemoryCore::new()), None)
    } else if module.contains("::file::") {
        let dir = tempfile::Builder::new()
            .prefix("cachier-file-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("a temp dir under CARGO_TARGET_TMPDIR")
            .keep();
        let core = FileCore::open(Config::new(dir.join("store"))).expect("open the file store");
        (Arc::new(core), Some(dir))
    } else {
        panic!("{module}: a test module lives under `memory` or `file`");
    };
    let cache: &'static Cachier = Box::leak(Box::new(
        Cachier::builder(core)
            .namespace("macros-tests")
            .expect("a valid namespace")
            .strict(strict)
            .build(),
    ));
    opened.insert(name, Opened { cache, dir });
    cache
}

/// Removes the stores of one test module when dropped.
pub struct Cleanup(pub &'static str);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut opened = OPENED.lock().unwrap_or_else(PoisonError::into_inner);
        for suffix in ["", "#strict"] {
            let name = format!("{}{suffix}", self.0);
            if let Some(Opened { dir: Some(dir), .. }) =
                opened.as_mut().and_then(|o| o.get_mut(&name))
            {
                let _ = std::fs::remove_dir_all(&*dir);
            }
        }
    }
}

/// Waits until `done` holds, for at most `limit`.
pub async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}
