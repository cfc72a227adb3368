//! The bound holds: a stream of distinct results cannot grow the store past its budget, a hot
//! set stays cached through it, and a bound by count keeps its count.
//!
//! The memory figures are the process's resident set (VmRSS in `/proc/self/status`), so this
//! file holds one test per concern and each runs in a process of its own under nextest; under
//! plain `cargo test` they share a process, which only makes the figures larger, and the RSS
//! test compares against its own starting point.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cachier_core::{Bytes, Cachier, Claim, Core, Key, Namespace, Timestamp, func_id};
use cachier_memory::{Config, ENTRY_OVERHEAD_BYTES, MemoryCore};

const MIB: u64 = 1 << 20;

/// The resident set of this process in bytes, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// 1e6 distinct 1 KiB results through the front end under a 64 MiB bound, each followed by a
/// call on a hot set of 1e3 keys: the resident set grows by at most the bound plus a quarter of
/// it plus 8 MiB, and at least 95 % of the hot calls are hits.
///
/// A debug build (the normal `cargo test`, `cargo xtask test`) runs the same stream at a tenth
/// of the size — 1e5 results under an 8 MiB bound, still twelve times what the store may keep
/// — so that it takes seconds; `cargo test --release -p cachier-memory --test bounded` runs the
/// full 1e6 under 64 MiB.
///
/// The overhead allowed above the bound: the eviction policy's fixed structures (its frequency
/// sketch, sized for the entries the bound holds, and its queues), the claims map's table, the
/// runtime, and the allocator holding freed 1 KiB blocks in its arenas and thread caches before
/// it reuses them. The values themselves, with key and per-entry bookkeeping, are inside the
/// bound: each is weighed as its bytes plus its key plus `ENTRY_OVERHEAD_BYTES`.
#[tokio::test(flavor = "current_thread")]
async fn a_stream_of_distinct_results_stays_within_the_byte_bound() {
    const FULL: bool = !cfg!(debug_assertions);
    const BOUND: u64 = if FULL { 64 * MIB } else { 8 * MIB };
    const ALLOWED_OVER: u64 = BOUND / 4 + 8 * MIB;
    const DISTINCT: u64 = if FULL { 1_000_000 } else { 100_000 };
    const HOT: u64 = 1_000;

    let core = Arc::new(MemoryCore::with_config(
        Config::default().max_bytes(Some(BOUND)),
    ));
    let cache = Cachier::new(core.clone());
    let cold = cache.function(func_id!("bounded_cold"));
    let hot = cache.function(func_id!("bounded_hot"));
    let payload = Arc::new(vec![7u8; 1024]);

    let start_rss = resident_bytes().expect("VmRSS in /proc/self/status");
    let mut peak_rss = start_rss;
    let started = Instant::now();
    for i in 0..DISTINCT {
        let p = payload.clone();
        let value = cold
            .call(&i, move || async move { p.as_ref().clone() })
            .await
            .expect("cold call");
        assert_eq!(value.len(), 1024);
        let h = i % HOT;
        let value = hot
            .call(&h, move || async move { vec![h as u8; 1024] })
            .await
            .expect("hot call");
        assert_eq!(value[0], h as u8);
        // Let the runtime drop what the calls spawned (each computation's lease renewer,
        // aborted when it ends): a loop that never yields keeps them all queued.
        tokio::task::yield_now().await;
        if i % (DISTINCT / 50) == 0 {
            peak_rss = peak_rss.max(resident_bytes().unwrap_or(0));
        }
    }
    core.run_pending_tasks();
    peak_rss = peak_rss.max(resident_bytes().unwrap_or(0));
    let elapsed = started.elapsed();

    let hot_stats = hot.stats();
    let hot_rate = hot_stats.hits as f64 / (hot_stats.hits + hot_stats.misses) as f64;
    let store = core.stats();
    let grown = peak_rss.saturating_sub(start_rss);
    println!(
        "bounded: {DISTINCT} x 1 KiB in {elapsed:.1?}; RSS {} MiB at start, peak {} MiB \
         (grew {:.1} MiB; bound {} MiB + {} MiB allowed); store {} values, weight {:.1} MiB, \
         {} evictions; hot hit rate {:.2} % ({} hits, {} misses)",
        start_rss / MIB,
        peak_rss / MIB,
        grown as f64 / MIB as f64,
        BOUND / MIB,
        ALLOWED_OVER / MIB,
        store.entries,
        store.weighted_size as f64 / MIB as f64,
        store.evictions,
        hot_rate * 100.0,
        hot_stats.hits,
        hot_stats.misses,
    );

    assert!(
        store.weighted_size <= BOUND,
        "the store weighs {} bytes, over its bound of {BOUND}",
        store.weighted_size
    );
    let per_entry = 1024 + ENTRY_OVERHEAD_BYTES;
    assert!(
        store.entries <= BOUND / per_entry + 1,
        "{} values kept under a bound that fits {}",
        store.entries,
        BOUND / per_entry
    );
    assert!(
        store.evictions >= DISTINCT + HOT - store.entries,
        "every value not kept was counted as evicted"
    );
    assert!(
        grown <= BOUND + ALLOWED_OVER,
        "resident set grew by {:.1} MiB, over the bound of {} MiB plus {} MiB",
        grown as f64 / MIB as f64,
        BOUND / MIB,
        ALLOWED_OVER / MIB
    );
    assert!(
        hot_rate >= 0.95,
        "hot set hit rate {:.2} % is under 95 %",
        hot_rate * 100.0
    );
}

fn key(i: u64) -> Key {
    let ns = Namespace::new("bounded").expect("namespace");
    Key::for_args(&ns, &func_id!("bounded_core"), &i).expect("key")
}

async fn store(core: &MemoryCore, keys: std::ops::Range<u64>, bytes: usize) {
    for i in keys {
        core.set(&key(i), Bytes::from(vec![1u8; bytes]), Timestamp::now())
            .await
            .expect("set");
    }
}

/// Under a bound by count, the store keeps at most that many values and counts the rest as
/// evicted.
#[tokio::test]
async fn a_bound_by_count_keeps_its_count() {
    let core = MemoryCore::with_config(Config::unbounded().max_entries(Some(100)));
    store(&core, 0..1_000, 10).await;
    assert!(
        core.len() <= 100,
        "{} values kept under a bound of 100",
        core.len()
    );
    let stats = core.stats();
    assert_eq!(stats.evictions, 1_000 - core.len() as u64);
}

/// With both bounds, whichever is reached first holds: small values meet the count, large
/// values the bytes.
#[tokio::test]
async fn with_both_bounds_the_nearer_one_holds() {
    let config = Config::default()
        .max_bytes(Some(256 * 1024))
        .max_entries(Some(50));
    let small = config.build();
    store(&small, 0..1_000, 10).await;
    assert!(
        small.len() <= 50,
        "{} small values kept under a count of 50",
        small.len()
    );

    let large = config.build();
    store(&large, 0..1_000, 16 * 1024).await;
    assert!(
        large.len() <= 256 / 16,
        "{} values of 16 KiB kept under 256 KiB",
        large.len()
    );
    assert!(large.stats().weighted_size <= 256 * 1024);
}

/// A value just stored reads back at once while the store is within its bound, and an
/// unbounded store never evicts.
#[tokio::test]
async fn a_value_just_stored_reads_back() {
    let core = MemoryCore::with_config(Config::unbounded());
    for i in 0..5_000 {
        store(&core, i..i + 1, 100).await;
        let entry = core.get(&key(i)).await.expect("get").expect("stored");
        assert_eq!(entry.value.as_deref(), Some(&[1u8; 100][..]));
    }
    assert_eq!(core.len(), 5_000);
    assert_eq!(core.stats().evictions, 0);
}

/// A live claim is outside the bound: a flood of values that evicts everything else leaves it
/// held, so a second caller still sees `Held`, and the holder's `set` still wakes its waiters.
#[tokio::test]
async fn a_live_claim_is_never_evicted() {
    let core = Arc::new(MemoryCore::with_config(
        Config::unbounded().max_entries(Some(10)),
    ));
    let claimed = key(u64::MAX);
    let Claim::Acquired(token) = core
        .claim(&claimed, Duration::from_secs(30))
        .await
        .expect("claim")
    else {
        panic!("a cold key was not claimed");
    };
    let waiter = {
        let core = core.clone();
        let claimed = claimed.clone();
        tokio::spawn(async move { core.wait(&claimed, Duration::from_secs(20)).await })
    };
    store(&core, 0..2_000, 100).await;
    core.run_pending_tasks();
    assert!(core.stats().evictions >= 1_990);
    assert!(
        matches!(
            core.claim(&claimed, Duration::from_secs(30)).await,
            Ok(Claim::Held { .. })
        ),
        "the claim did not survive the flood"
    );
    assert!(
        core.renew(&claimed, &token, Duration::from_secs(30))
            .await
            .expect("renew")
    );
    core.set(&claimed, Bytes::from_static(b"done"), Timestamp::now())
        .await
        .expect("set");
    let seen = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter was woken")
        .expect("join")
        .expect("wait")
        .expect("an entry");
    assert_eq!(seen.value.as_deref(), Some(&b"done"[..]));
    assert_eq!(seen.claim_until, None);
}

/// `delete_stale` counts what it removes as expirations.
#[tokio::test]
async fn stale_values_removed_count_as_expirations() {
    let core = MemoryCore::new();
    store(&core, 0..10, 10).await;
    let removed = core
        .delete_stale(
            &Namespace::new("bounded").expect("namespace"),
            &func_id!("bounded_core"),
            Timestamp::now().add(Duration::from_secs(1)),
        )
        .await
        .expect("delete_stale");
    assert_eq!(removed, 10);
    assert_eq!(core.stats().expirations, 10);
    assert_eq!(core.stats().evictions, 0);
    assert!(core.is_empty());
}

/// On a backend without expiry of its own, `expire_after` removes expired values through
/// `delete_stale` in the background, once per `cleanup_interval`, counted as expirations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_after_removes_expired_values_in_the_background() {
    let core = Arc::new(MemoryCore::new());
    let cache = Cachier::builder(core.clone())
        .expire_after(Duration::from_millis(50))
        .cleanup_stale(false, Duration::from_millis(10))
        .build();
    let f = cache.function(func_id!("expiring"));
    for i in 0..10u64 {
        f.call(&i, move || async move { i }).await.expect("call");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // This call starts the cleanup; the ten older values are past their expiry.
    f.call(&100u64, || async { 100u64 }).await.expect("call");
    let started = Instant::now();
    while core.stats().expirations < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "expired values not removed: {:?}",
            core.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(core.len(), 1, "only the value stored last stays");
}

/// Reads count for the policy whether they come through `get_value` (the front end's hit) or
/// `get` (its read under `next_time`): a hot set read only one way survives a stream of
/// values ten times the bound, each missed twice before it is stored (which alone would win
/// over values never read: the policy admits a new value over one seen less often).
#[tokio::test]
async fn a_hot_set_survives_a_stream_whichever_read_it_takes() {
    for through_get in [false, true] {
        let core = MemoryCore::with_config(Config::unbounded().max_entries(Some(100)));
        let read = async |core: &MemoryCore, i: u64| {
            if through_get {
                core.get(&key(i)).await.expect("get")
            } else {
                core.get_value(&key(i)).await.expect("get_value")
            }
        };
        store(&core, 0..10, 10).await;
        for i in 1_000..2_000 {
            for _ in 0..2 {
                assert!(read(&core, i).await.is_none());
            }
            store(&core, i..i + 1, 10).await;
            for h in 0..10 {
                read(&core, h).await;
            }
        }
        core.run_pending_tasks();
        let mut kept = 0;
        for h in 0..10 {
            kept += u32::from(core.get(&key(h)).await.expect("get").is_some());
        }
        assert!(
            kept >= 9,
            "{kept} of 10 hot values kept (read through {})",
            if through_get { "get" } else { "get_value" }
        );
    }
}

/// When the keys in use change, the new ones get in: a full store of values nobody reads any
/// more admits new values that are asked for again (a miss, then a second miss).
#[tokio::test]
async fn a_new_working_set_replaces_an_unused_one() {
    let core = MemoryCore::with_config(Config::unbounded().max_entries(Some(100)));
    store(&core, 0..100, 10).await;
    core.run_pending_tasks();
    // The admission policy weighs how often each key was asked for, so the new set takes over
    // within a few rounds of use (how many depends on the policy's sampled counts).
    let mut present = 0;
    for _ in 0..12 {
        for i in 1_000..1_100 {
            if core.get_value(&key(i)).await.expect("get_value").is_none() {
                store(&core, i..i + 1, 10).await;
            }
        }
        core.run_pending_tasks();
        present = 0;
        for i in 1_000..1_100 {
            present += u32::from(core.get(&key(i)).await.expect("get").is_some());
        }
        if present >= 90 {
            break;
        }
    }
    assert!(
        present >= 90,
        "{present} of 100 new values admitted after 12 rounds of use"
    );
}
