//! Quickstart: cache a deliberately slow function on disk with the file backend.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! The first call computes (about a second); the second is served from the cache. Run it again:
//! the value now comes from disk, written by the previous process. Entries live under
//! `$CACHIER_DIR` (default: `$XDG_CACHE_HOME/cachier` or `~/.cache/cachier`), namespace
//! `quickstart`; `cargo run --example quickstart -- --clear` forgets them.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cachier_core::{Cachier, cachier};
use cachier_file::{Config, FileCore};

/// The cache, opened by `main` (so a cache directory that cannot be made is an error message).
static CACHE: OnceLock<Cachier> = OnceLock::new();

fn cache() -> &'static Cachier {
    CACHE
        .get()
        .expect("main opens the cache before the first call")
}

/// The expensive function: a second of "work", then a sum of squares. One line caches it.
#[cachier(cache = cache(), stale_after = "24h")]
async fn slow_sum_of_squares(n: u64) -> u64 {
    tokio::time::sleep(Duration::from_secs(1)).await;
    (1..=n).map(|i| i * i).sum()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Backend problems are logged, never fatal: set RUST_LOG=debug to watch.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let config = Config::from_env()?;
    println!("cache directory: {}", config.dir().display());
    let core = Arc::new(FileCore::open(config)?);
    let _ = CACHE.set(Cachier::builder(core).namespace("quickstart")?.build());

    // The companion `slow_sum_of_squares_cache()` is the function's handle: stats, clear, ...
    let handle = slow_sum_of_squares_cache();
    if std::env::args().any(|a| a == "--clear") {
        println!("cleared {} cached value(s)", handle.clear().await?);
        return Ok(());
    }

    let n = 1000u64;
    for round in 1..=2 {
        let hits_before = handle.stats().hits;
        let started = Instant::now();
        let value = slow_sum_of_squares(n).await;
        let took = started.elapsed();
        let how = if handle.stats().hits > hits_before {
            "hit: served from the cache"
        } else {
            "miss: computed and stored"
        };
        println!("call {round}: sum of squares 1..={n} = {value} in {took:>10.2?} ({how})");
    }
    println!("run it again: the first call is now a hit too, read from disk by a new process");
    Ok(())
}
