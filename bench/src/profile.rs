//! `--profile-hit SECS`: hits in a loop, for a sampling profiler, with nothing else running.
//!
//! `perf record -g -- cachier-bench --profile-hit 10 file --size 65536` loops hits of a 64 KiB
//! `Vec<u8>` on the file backend for ten seconds and prints the hits per second; `--tasks 64`
//! spreads them over 64 tasks (the throughput rows' shape). Targets: memory (the default, hits
//! served by the near cache), file (a store under `target/bench`), redis
//! (`CACHIER_TEST_REDIS_URL`, a namespace of its own, cleared afterwards).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cachier_core::{Cachier, Core};
use cachier_file::FileCore;
use cachier_memory::MemoryCore;
use cachier_redis::RedisCore;

use crate::suite::{BenchResult, Context, check_hits_only, func, store_and_check, value_of};

/// What to profile.
pub struct Profile {
    pub secs: u64,
    /// The stored value's length in bytes.
    pub size: usize,
    /// Concurrent tasks calling.
    pub tasks: usize,
}

/// Loops hits on `target` (memory, file or redis) as `profile` says.
pub async fn run(target: &str, profile: &Profile, run_id: &str) -> BenchResult<()> {
    let namespace = format!("bench-profile-{run_id}");
    match target {
        "memory" => hits(Arc::new(MemoryCore::new()), &namespace, profile).await,
        "file" => {
            let dir = crate::output_dir().join(format!("profile-{run_id}"));
            let outcome = match FileCore::open(cachier_file::Config::new(&dir)) {
                Ok(core) => hits(Arc::new(core), &namespace, profile).await,
                Err(e) => Err(format!("open the file store: {e}")),
            };
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("cachier-bench: could not remove {}: {e}", dir.display());
            }
            outcome
        }
        "redis" => {
            let url = std::env::var("CACHIER_TEST_REDIS_URL")
                .unwrap_or_else(|_| cachier_redis::DEFAULT_URL.into());
            let config = cachier_redis::Config::from_url(&url).ctx("redis URL")?;
            let core: Arc<dyn Core> = Arc::new(
                RedisCore::connect(config)
                    .await
                    .ctx("connecting to Redis (set CACHIER_TEST_REDIS_URL)")?,
            );
            let outcome = hits(core.clone(), &namespace, profile).await;
            let ns = cachier_core::Namespace::new(&namespace).ctx("namespace")?;
            core.clear_namespace(&ns).await.ctx("clear the namespace")?;
            outcome
        }
        other => Err(format!(
            "--profile-hit runs on memory, file or redis, not {other}"
        )),
    }
}

async fn hits(core: Arc<dyn Core>, namespace: &str, profile: &Profile) -> BenchResult<()> {
    let cache = Cachier::builder(core)
        .namespace(namespace)
        .ctx("namespace")?
        .strict(true)
        .build();
    let f = cache.function(func("profile_hit"));
    store_and_check(&f, 0, &value_of(profile.size)).await?;
    let before = f.stats();
    let until = Instant::now() + Duration::from_secs(profile.secs);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(profile.tasks);
    for _ in 0..profile.tasks.max(1) {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                for _ in 0..100 {
                    let _ =
                        std::hint::black_box(f.call(&0u64, || async { Vec::<u8>::new() }).await);
                }
                n += 100;
            }
            n
        }));
    }
    let mut n = 0u64;
    for task in tasks {
        n += task.await.ctx("a calling task")?;
    }
    check_hits_only("profile", &before, &f.stats())?;
    let took = started.elapsed();
    println!(
        "{n} hits of {} B from {} task(s) in {:.1} s: {:.0} hits/s, {:.0} ns per hit",
        profile.size,
        profile.tasks.max(1),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        took.as_nanos() as f64 / n as f64
    );
    Ok(())
}
