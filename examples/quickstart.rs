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

use std::sync::Arc;
use std::time::{Duration, Instant};

use cachier_core::{Cachier, Core, func_id};
use cachier_file::{Config, FileCore};

/// The expensive function: a second of "work", then a sum of squares.
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
    let core: Arc<dyn Core> = Arc::new(FileCore::open(config)?);
    let cache = Cachier::builder(core)
        .namespace("quickstart")?
        .stale_after(Duration::from_secs(24 * 3600))
        .build();
    let sum = cache.function(func_id!("slow_sum_of_squares"));

    if std::env::args().any(|a| a == "--clear") {
        println!("cleared {} cached value(s)", sum.clear().await?);
        return Ok(());
    }

    let n = 1000u64;
    for round in 1..=2 {
        let hits_before = sum.stats().hits;
        let started = Instant::now();
        let value = sum.call(&n, move || slow_sum_of_squares(n)).await?;
        let took = started.elapsed();
        let how = if sum.stats().hits > hits_before {
            "hit: served from the cache"
        } else {
            "miss: computed and stored"
        };
        println!("call {round}: sum of squares 1..={n} = {value} in {took:>10.2?} ({how})");
    }
    println!("run it again: the first call is now a hit too, read from disk by a new process");
    Ok(())
}
