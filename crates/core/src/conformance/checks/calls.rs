//! The call algorithm through the [`Cachier`](crate::Cachier) front end on this backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use super::{counter, eventually};
use crate::conformance::{Harness, Outcome, func_id};
use crate::{CallOptions, ErrorKind, Timestamp};

/// The first call computes, the second is a hit.
pub async fn call_miss_then_hit(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    for _ in 0..2 {
        let r = runs.clone();
        let v: String = f
            .call(&(3u32, "x"), move || async move {
                r.fetch_add(1, SeqCst);
                "three".to_string()
            })
            .await
            .expect("call");
        assert_eq!(v, "three");
    }
    assert_eq!(runs.load(SeqCst), 1);
    let stats = f.stats();
    assert_eq!((stats.misses, stats.hits, stats.computations), (1, 1, 1));
    Outcome::Passed
}

/// Different arguments are different entries.
pub async fn call_distinct_args_distinct_entries(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    for round in 0..2 {
        for x in [1u64, 2, 3] {
            let r = runs.clone();
            let v: u64 = f
                .call(&x, move || async move {
                    r.fetch_add(1, SeqCst);
                    x * 10
                })
                .await
                .expect("call");
            assert_eq!(v, x * 10, "round {round}");
        }
    }
    assert_eq!(runs.load(SeqCst), 3);
    Outcome::Passed
}

/// A value older than `stale_after` is recomputed.
pub async fn stale_after_recomputes(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .stale_after(Duration::from_secs(2))
        .build()
        .function(func_id("f"));
    let runs = counter();
    let call = |runs: Arc<AtomicUsize>| {
        let f = f.clone();
        async move {
            f.call(
                &1u8,
                move || async move { runs.fetch_add(1, SeqCst) as u64 },
            )
            .await
            .expect("call")
        }
    };
    assert_eq!(call(runs.clone()).await, 0);
    assert_eq!(call(runs.clone()).await, 0, "fresh value not served");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    h.step("calling f on a key holding a stale value (it claims and recomputes)");
    assert_eq!(call(runs.clone()).await, 1, "stale value served");
    assert_eq!(runs.load(SeqCst), 2);
    Outcome::Passed
}

/// `max_age` per call tightens freshness for that call only.
pub async fn max_age_per_call(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    let r = runs.clone();
    let _: u64 = f
        .call(&1u8, move || async move { r.fetch_add(1, SeqCst) as u64 })
        .await
        .expect("call");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = runs.clone();
    let loose: u64 = f
        .call_with(
            CallOptions::default().max_age(Duration::from_secs(60)),
            &1u8,
            move || async move { r.fetch_add(1, SeqCst) as u64 },
        )
        .await
        .expect("call");
    assert_eq!(loose, 0);
    let r = runs.clone();
    let tight: u64 = f
        .call_with(
            CallOptions::default().max_age(Duration::from_millis(100)),
            &1u8,
            move || async move { r.fetch_add(1, SeqCst) as u64 },
        )
        .await
        .expect("call");
    assert_eq!(tight, 1, "a value older than max_age was served");
    Outcome::Passed
}

/// With `next_time`, a stale value is served at once and refreshed in the background.
pub async fn next_time_serves_stale_then_refreshes(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .stale_after(Duration::from_millis(300))
        .next_time(true)
        // A short lease: should a refresh's claim be lost to a slow backend (a request that
        // timed out on our side but took effect), the next stale hit refreshes soon after.
        .lease(Duration::from_secs(2))
        .build()
        .function(func_id("f"));
    let runs = counter();
    let call = || {
        let (f, runs) = (f.clone(), runs.clone());
        async move {
            f.call(&1u8, move || async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                runs.fetch_add(1, SeqCst) as u64
            })
            .await
            .expect("call")
        }
    };
    assert_eq!(call().await, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.step("calling f with next_time on a key holding a stale value");
    let started = Instant::now();
    assert_eq!(call().await, 0, "the stale value is served");
    assert!(started.elapsed() < Duration::from_millis(1000));
    let refreshed = eventually(Duration::from_secs(15), || async {
        let (f, runs) = (f.clone(), runs.clone());
        let v: u64 = f
            .call_with(
                CallOptions::default().max_age(Duration::from_secs(60)),
                &1u8,
                move || async move { runs.fetch_add(1, SeqCst) as u64 },
            )
            .await
            .expect("call");
        v == 1
    })
    .await;
    assert!(refreshed, "the background refresh never stored its value");
    assert_eq!(runs.load(SeqCst), 2);
    assert!(f.stats().stale_hits >= 1);
    // The refresh task releases its claim after storing: let that land before the scope's
    // namespace is removed, or a backend that writes on release leaves it behind.
    h.step("waiting for the background refresh to release its claim");
    let key = f.key(&1u8).expect("key");
    let released = eventually(Duration::from_secs(8), || async {
        let entry = s.core.get(&key).await.expect("get");
        !entry.as_ref().is_some_and(crate::Entry::is_claimed)
    })
    .await;
    assert!(released, "the background refresh never released its claim");
    tokio::time::sleep(Duration::from_millis(300)).await;
    Outcome::Passed
}

/// Calls `f` once per step with the step's options; each call returns how many computations ran
/// before it, and must return the step's expected value.
async fn call_steps(h: &Harness, f: &crate::Function, steps: &[(CallOptions, u64)]) {
    let runs = counter();
    for (i, &(opts, expected)) in steps.iter().enumerate() {
        h.step(format!("call {i} of f, with {opts:?}"));
        let r = runs.clone();
        let v: u64 = f
            .call_with(
                opts,
                &1u8,
                move || async move { r.fetch_add(1, SeqCst) as u64 },
            )
            .await
            .expect("call");
        assert_eq!(v, expected, "step {i}");
    }
}

/// `skip_cache` computes without reading or writing.
pub async fn skip_cache_bypasses(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let (plain, skip) = (
        CallOptions::default(),
        CallOptions::default().skip_cache(true),
    );
    call_steps(h, &f, &[(plain, 0), (skip, 1), (plain, 0)]).await;
    assert_eq!(f.stats().bypassed, 1);
    Outcome::Passed
}

/// `overwrite_cache` recomputes and stores the new value.
pub async fn overwrite_cache_recomputes_and_stores(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let (plain, over) = (
        CallOptions::default(),
        CallOptions::default().overwrite_cache(true),
    );
    call_steps(h, &f, &[(plain, 0), (over, 1), (plain, 1)]).await;
    Outcome::Passed
}

/// A precached value is served without computing.
pub async fn precache_is_served(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    f.precache(&(1u8, 2u8), &99u64).await.expect("precache");
    let v: u64 = f
        .call(&(1u8, 2u8), || async {
            panic!("computed although precached")
        })
        .await
        .expect("call");
    assert_eq!(v, 99);
    Outcome::Passed
}

/// `remove(args)` forgets one argument set only.
pub async fn remove_args_forgets_one(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    let call = |x: u8| {
        let (f, r) = (f.clone(), runs.clone());
        async move {
            f.call(&x, move || async move {
                r.fetch_add(1, SeqCst);
                x
            })
            .await
            .expect("call")
        }
    };
    call(1).await;
    call(2).await;
    assert!(f.remove(&1u8).await.expect("remove"));
    assert!(!f.remove(&1u8).await.expect("remove again"));
    call(1).await;
    call(2).await;
    assert_eq!(runs.load(SeqCst), 3);
    Outcome::Passed
}

/// `Function::clear` clears that function and not one whose id extends it.
pub async fn clear_function_spares_sibling(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let cache = s.cache();
    let (f, sibling) = (
        cache.function(func_id("f")),
        cache.function(func_id("f_bar")),
    );
    let runs = counter();
    for _ in 0..2 {
        for func in [&f, &sibling] {
            let r = runs.clone();
            let _: u8 = func
                .call(&1u8, move || async move {
                    r.fetch_add(1, SeqCst);
                    1
                })
                .await
                .expect("call");
        }
        if runs.load(SeqCst) == 2 {
            assert_eq!(f.clear().await.expect("clear"), 1);
        }
    }
    assert_eq!(runs.load(SeqCst), 3, "clearing f must leave f_bar cached");
    Outcome::Passed
}

/// Calls `f` twice with a function returning `None`; returns how often it ran.
async fn runs_of_two_none_calls(f: &crate::Function) -> usize {
    let runs = counter();
    for _ in 0..2 {
        let r = runs.clone();
        let v: Option<u32> = f
            .call(&1u8, move || async move {
                r.fetch_add(1, SeqCst);
                None
            })
            .await
            .expect("call");
        assert_eq!(v, None);
    }
    runs.load(SeqCst)
}

/// A `None` result is returned but not cached by default.
pub async fn none_not_cached_by_default(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    assert_eq!(runs_of_two_none_calls(&f).await, 2);
    Outcome::Passed
}

/// With `allow_none`, a `None` result is cached like any other.
pub async fn none_cached_with_allow_none(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.builder().allow_none(true).build().function(func_id("f"));
    assert_eq!(runs_of_two_none_calls(&f).await, 1);
    Outcome::Passed
}

/// A result over `entry_size_limit` is returned but not stored; a small one is stored.
pub async fn entry_size_limit_returns_but_does_not_store(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .entry_size_limit(1024)
        .build()
        .function(func_id("f"));
    let runs = counter();
    for _ in 0..2 {
        let r = runs.clone();
        let v: Vec<u8> = f
            .call(&"big", move || async move {
                r.fetch_add(1, SeqCst);
                vec![7u8; 4096]
            })
            .await
            .expect("call");
        assert_eq!(v.len(), 4096);
    }
    assert_eq!(runs.load(SeqCst), 2, "an oversized result was stored");
    assert_eq!(f.stats().size_limit_rejections, 2);
    for _ in 0..2 {
        let r = runs.clone();
        let _: Vec<u8> = f
            .call(&"small", move || async move {
                r.fetch_add(1, SeqCst);
                vec![7u8; 16]
            })
            .await
            .expect("call");
    }
    assert_eq!(runs.load(SeqCst), 3, "a small result was not stored");
    assert_eq!(
        s.core.get(&s.key("f", &"big")).await.expect("get"),
        None,
        "claim left behind"
    );
    Outcome::Passed
}

/// With `strict`, an oversized result is a `TooLarge` error.
pub async fn strict_entry_size_limit_errors(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .entry_size_limit(64)
        .strict(true)
        .build()
        .function(func_id("f"));
    let err = f
        .call(&1u8, || async { vec![1u8; 1000] })
        .await
        .expect_err("strict refuses");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    let entry = s.core.get(&s.key("f", &1u8)).await.expect("get");
    assert!(!entry.is_some_and(|e| e.is_claimed()), "claim left behind");
    Outcome::Passed
}

/// A compute function that panics leaves no claim behind; the next caller computes at once.
pub async fn panic_releases_claim(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .lease(Duration::from_secs(60))
        .build()
        .function(func_id("f"));
    let f2 = f.clone();
    let joined = tokio::spawn(async move {
        f2.call(&1u8, || async {
            panic!("the user's function panicked") as u64
        })
        .await
    })
    .await;
    assert!(joined.expect_err("the panic reaches the caller").is_panic());
    let key = s.key("f", &1u8);
    let released = eventually(Duration::from_secs(5), || async {
        !s.core
            .get(&key)
            .await
            .expect("get")
            .is_some_and(|e| e.is_claimed())
    })
    .await;
    assert!(released, "the claim outlived the panic");
    let started = Instant::now();
    let v: u64 = f.call(&1u8, || async { 8 }).await.expect("call");
    assert_eq!(v, 8);
    assert!(started.elapsed() < Duration::from_secs(5));
    Outcome::Passed
}

#[derive(Debug, PartialEq)]
enum TestError {
    Failed,
    Cache(ErrorKind),
}

impl From<crate::Error> for TestError {
    fn from(err: crate::Error) -> Self {
        TestError::Cache(err.kind())
    }
}

/// An `Err` from `try_call` is not cached and releases the claim at once.
pub async fn error_releases_claim_and_is_not_cached(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .lease(Duration::from_secs(60))
        .build()
        .function(func_id("f"));
    let err = f
        .try_call(&1u8, || async { Err::<u64, _>(TestError::Failed) })
        .await;
    assert_eq!(err, Err(TestError::Failed));
    let entry = s.core.get(&s.key("f", &1u8)).await.expect("get");
    assert!(
        !entry.is_some_and(|e| e.is_claimed()),
        "claim left behind after an error"
    );
    let started = Instant::now();
    let ok = f.try_call(&1u8, || async { Ok::<u64, TestError>(3) }).await;
    assert_eq!(ok, Ok(3));
    assert!(started.elapsed() < Duration::from_secs(5));
    Outcome::Passed
}

/// An `Ok` from `try_call` is cached.
pub async fn try_call_caches_ok(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    assert_eq!(
        f.try_call(&1u8, || async { Ok::<u64, TestError>(3) }).await,
        Ok(3)
    );
    let again = f
        .try_call(&1u8, || async { Err::<u64, TestError>(TestError::Failed) })
        .await;
    assert_eq!(again, Ok(3), "the cached Ok was not served");
    Outcome::Passed
}

/// Caching can be switched off and on at run time.
pub async fn caching_switch_off(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let cache = s.cache();
    let f = cache.function(func_id("f"));
    let runs = counter();
    let call = || {
        let (f, r) = (f.clone(), runs.clone());
        async move {
            f.call(&1u8, move || async move { r.fetch_add(1, SeqCst) as u64 })
                .await
                .expect("call")
        }
    };
    cache.set_enabled(false);
    assert_eq!(call().await, 0);
    assert_eq!(call().await, 1);
    assert_eq!(
        s.core.get(&s.key("f", &1u8)).await.expect("get"),
        None,
        "stored while off"
    );
    cache.set_enabled(true);
    assert_eq!(call().await, 2);
    assert_eq!(call().await, 2);
    Outcome::Passed
}

/// `cleanup_stale` deletes stale values in the background.
pub async fn cleanup_stale_deletes_in_background(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .stale_after(Duration::from_millis(200))
        .cleanup_stale(true, Duration::ZERO)
        .build()
        .function(func_id("f"));
    let _: u8 = f.call(&1u8, || async { 1 }).await.expect("call");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _: u8 = f.call(&2u8, || async { 2 }).await.expect("call");
    let old = s.key("f", &1u8);
    let gone = eventually(Duration::from_secs(5), || async {
        s.core.get(&old).await.expect("get").is_none()
    })
    .await;
    assert!(gone, "the stale value was not cleaned up");
    // The cleanup counts what it removed, exactly: the first call's value, not the second's.
    let counted = eventually(Duration::from_secs(5), || async {
        f.stats().expirations == 1
    })
    .await;
    assert!(
        counted,
        "the cleanup's removal was not counted once: {:?}",
        f.stats()
    );

    h.step("Function::delete_stale removes and counts the stale values of one function");
    let g = s
        .builder()
        .stale_after(Duration::from_millis(200))
        .build()
        .function(func_id("g"));
    for x in [1u8, 2] {
        let _: u8 = g.call(&x, move || async move { x }).await.expect("call");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let removed = g.delete_stale().await.expect("delete_stale");
    assert_eq!(removed, 2, "both of g's values were stale");
    assert_eq!(g.stats().expirations, 2);
    assert_eq!(f.stats().expirations, 1, "g's removals are g's");
    Outcome::Passed
}

/// Metrics count each kind of call.
pub async fn stats_are_counted(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let cache = s.cache();
    let f = cache.function(func_id("f"));
    for x in [1u8, 1, 1, 2] {
        let _: u8 = f.call(&x, move || async move { x }).await.expect("call");
    }
    let _: u8 = f
        .call_with(CallOptions::default().skip_cache(true), &1u8, || async {
            1
        })
        .await
        .expect("call");
    let stats = f.stats();
    assert_eq!(stats.hits, 2);
    assert_eq!(stats.misses, 2);
    assert_eq!(stats.bypassed, 1);
    assert_eq!(stats.computations, 3);
    assert_eq!(stats.calls, 5);
    assert!(stats.max_latency >= stats.mean_latency());
    assert_eq!(
        cache.function(func_id("f")).stats().hits,
        2,
        "handles share metrics"
    );
    Outcome::Passed
}

/// `call_blocking` works from a thread without a runtime and from inside this runtime.
pub async fn call_blocking_works_in_and_out_of_runtime(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    let (f1, r1) = (f.clone(), runs.clone());
    let from_thread = std::thread::spawn(move || {
        f1.call_blocking(&1u8, move || {
            std::thread::sleep(Duration::from_millis(50));
            r1.fetch_add(1, SeqCst);
            11u64
        })
        .expect("call_blocking")
    })
    .join()
    .expect("thread");
    assert_eq!(from_thread, 11);
    let r2 = runs.clone();
    let in_runtime = f
        .call_blocking(&1u8, move || {
            r2.fetch_add(1, SeqCst);
            0u64
        })
        .expect("call_blocking");
    assert_eq!(in_runtime, 11);
    assert_eq!(runs.load(SeqCst), 1);
    Outcome::Passed
}

/// A value served as a hit is not served again once removed: after `Function::clear`, and
/// after `clear`, `delete_stale`, `clear_namespace` or `remove` on the core (another core
/// instance for a shared store), the next call computes.
pub async fn call_after_removal_recomputes(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let other = if s.core.capabilities().cross_process {
        h.core().await
    } else {
        s.core.clone()
    };
    let (func, key) = (func_id("f"), s.key("f", &1u8));
    let runs = counter();
    let call = || {
        let (f, r) = (f.clone(), runs.clone());
        async move {
            f.call(&1u8, move || async move { r.fetch_add(1, SeqCst) as u64 })
                .await
                .expect("call")
        }
    };
    for (i, removal) in [
        "Function::clear",
        "clear",
        "delete_stale",
        "clear_namespace",
        "remove",
    ]
    .into_iter()
    .enumerate()
    {
        h.step(format!("calling f before {removal}"));
        assert_eq!(call().await, i as u64, "before {removal}");
        assert_eq!(call().await, i as u64, "the value was not served as a hit");
        match removal {
            "Function::clear" => {
                f.clear().await.expect("clear");
            }
            "clear" => {
                other.clear(&s.namespace, &func).await.expect("clear");
            }
            "delete_stale" => {
                let cut = Timestamp::now().add(Duration::from_secs(1));
                other
                    .delete_stale(&s.namespace, &func, cut)
                    .await
                    .expect("delete_stale");
            }
            "clear_namespace" => {
                other
                    .clear_namespace(&s.namespace)
                    .await
                    .expect("clear_namespace");
            }
            _ => {
                other.remove(&key).await.expect("remove");
            }
        }
        h.step(format!("calling f after {removal}"));
        assert_eq!(
            call().await,
            i as u64 + 1,
            "a value removed by {removal} was served"
        );
    }
    Outcome::Passed
}
