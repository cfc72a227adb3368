//! cachier's metrics, seen by a recorder: `metrics-util`'s debugging recorder, installed for
//! the test's thread (each test has its own, on a current-thread runtime, so the tests run in
//! parallel). Each counter is checked with its labels and its exact value, and against the
//! function's own `stats()`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cachier_core::{Cachier, CallOptions, FuncId, Function, Stats};
use cachier_memory::MemoryCore;
use cachier_redis::{Config, RedisCore};
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A metric's name and its labels, sorted.
type Series = (String, Vec<(String, String)>);

/// Counters and histogram samples by name and sorted labels.
#[derive(Debug, Default)]
struct Seen {
    counters: BTreeMap<Series, u64>,
    samples: BTreeMap<Series, Vec<f64>>,
}

impl Seen {
    fn take(snapshotter: &Snapshotter) -> Seen {
        let mut seen = Seen::default();
        for (key, _unit, _help, value) in snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let id = (key.name().to_owned(), labels);
            match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(n)) => {
                    seen.counters.insert(id, n);
                }
                (MetricKind::Histogram, DebugValue::Histogram(values)) => {
                    seen.samples
                        .insert(id, values.into_iter().map(|v| v.into_inner()).collect());
                }
                _ => {}
            }
        }
        seen
    }

    /// The counter `name` with exactly the labels of `f` plus `extra`; 0 if never counted.
    fn counter(&self, name: &str, f: &Labels, extra: &[(&str, &str)]) -> u64 {
        self.counters
            .get(&(name.to_owned(), f.with(extra)))
            .copied()
            .unwrap_or(0)
    }

    fn durations(&self, f: &Labels, outcome: &str) -> &[f64] {
        self.samples
            .get(&(
                "cachier_call_duration_seconds".to_owned(),
                f.with(&[("outcome", outcome)]),
            ))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Every counter of `f`'s labels (whatever else they carry) by name, summed.
    fn names_of(&self, f: &Labels) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((name, labels), n) in &self.counters {
            if f.0.iter().all(|l| labels.contains(l)) {
                *out.entry(name.clone()).or_default() += n;
            }
        }
        out
    }
}

/// The labels of one function: function, namespace, backend.
struct Labels(Vec<(String, String)>);

impl Labels {
    fn of(f: &Function, cache: &Cachier) -> Labels {
        Labels(vec![
            ("function".into(), f.id().as_str().into()),
            ("namespace".into(), cache.namespace().as_str().into()),
            ("backend".into(), cache.core().name().into()),
        ])
    }

    fn with(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut labels = self.0.clone();
        labels.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        labels.sort();
        labels
    }
}

/// A namespace of this test run alone.
fn namespace(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "metrics-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn func(name: &str) -> FuncId {
    FuncId::new(format!("metrics_recorder::{name}")).expect("a valid id")
}

fn memory_cache(test: &str) -> Cachier {
    Cachier::builder(Arc::new(MemoryCore::new()))
        .namespace(namespace(test))
        .expect("namespace")
        .build()
}

/// Every counter of the function equals its `Stats` field (the two are counted together).
fn assert_matches_stats(seen: &Seen, f: &Labels, stats: &Stats) {
    let c = |name| seen.counter(name, f, &[]);
    assert_eq!(c("cachier_cache_hits_total"), stats.hits, "hits");
    assert_eq!(c("cachier_cache_misses_total"), stats.misses, "misses");
    assert_eq!(
        c("cachier_stale_hits_total"),
        stats.stale_hits,
        "stale hits"
    );
    assert_eq!(
        c("cachier_recalculations_total"),
        stats.computations,
        "computations"
    );
    assert_eq!(c("cachier_waits_total"), stats.waits, "waits");
    assert_eq!(
        c("cachier_wait_timeouts_total"),
        stats.wait_timeouts,
        "wait timeouts"
    );
    assert_eq!(
        c("cachier_size_limit_rejections_total"),
        stats.size_limit_rejections,
        "size limit rejections"
    );
    assert_eq!(c("cachier_bypassed_total"), stats.bypassed, "bypassed");
    assert_eq!(
        c("cachier_expirations_total"),
        stats.expirations,
        "expirations"
    );
    let errors: u64 = seen
        .counters
        .iter()
        .filter(|((name, labels), _)| {
            name == "cachier_backend_errors_total" && f.0.iter().all(|l| labels.contains(l))
        })
        .map(|(_, n)| n)
        .sum();
    assert_eq!(errors, stats.backend_errors, "backend errors");
    let samples: usize = ["hit", "miss", "stale", "waited", "bypassed", "error"]
        .iter()
        .map(|o| seen.durations(f, o).len())
        .sum();
    assert_eq!(samples as u64, stats.calls, "one duration sample per call");
}

async fn square(f: &Function, n: u64) -> u64 {
    f.call(&n, move || async move { n * n })
        .await
        .expect("call")
}

/// Hits and misses, a bypass, an oversized result, each with the function's labels; nothing
/// counted under another function's labels.
#[tokio::test(flavor = "current_thread")]
async fn hits_misses_bypass_and_oversized_values() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let cache = memory_cache("basic");
    let f = cache.function(func("square"));
    let other = cache.function(func("other"));
    for n in [1, 1, 2, 2, 2] {
        assert_eq!(square(&f, n).await, n * n);
    }
    square(&other, 7).await;
    let skipped = f
        .call_with(CallOptions::default().skip_cache(true), &1u64, || async {
            1u64
        })
        .await
        .expect("a bypassed call");
    assert_eq!(skipped, 1);
    let big = f.clone().configure(|s| s.entry_size_limit = Some(64));
    let value = big
        .call(&99u64, || async { vec![7u8; 1000] })
        .await
        .expect("an oversized result is returned");
    assert_eq!(value.len(), 1000);

    let seen = Seen::take(&snapshotter);
    let labels = Labels::of(&f, &cache);
    assert_eq!(seen.counter("cachier_cache_hits_total", &labels, &[]), 3);
    // 1, 2 and the oversized one (never stored).
    assert_eq!(seen.counter("cachier_cache_misses_total", &labels, &[]), 3);
    // The three misses and the bypassed call.
    assert_eq!(
        seen.counter("cachier_recalculations_total", &labels, &[]),
        4
    );
    assert_eq!(seen.counter("cachier_bypassed_total", &labels, &[]), 1);
    assert_eq!(
        seen.counter("cachier_size_limit_rejections_total", &labels, &[]),
        1
    );
    assert_eq!(seen.counter("cachier_stale_hits_total", &labels, &[]), 0);
    assert_eq!(seen.durations(&labels, "hit").len(), 3);
    assert_eq!(seen.durations(&labels, "miss").len(), 3);
    assert_eq!(seen.durations(&labels, "bypassed").len(), 1);
    assert!(
        seen.durations(&labels, "hit")
            .iter()
            .all(|s| (0.0..1.0).contains(s))
    );
    assert_matches_stats(&seen, &labels, &f.stats());

    let other_labels = Labels::of(&other, &cache);
    assert_eq!(
        seen.counter("cachier_cache_misses_total", &other_labels, &[]),
        1
    );
    assert_eq!(
        seen.names_of(&other_labels),
        BTreeMap::from([
            ("cachier_cache_misses_total".to_owned(), 1),
            ("cachier_recalculations_total".to_owned(), 1),
        ]),
        "the other function counted only its own miss"
    );
}

/// A stale value served under `next_time` (and its background refresh), and a wait that runs
/// out while another caller computes.
#[tokio::test(flavor = "current_thread")]
async fn stale_hit_and_wait_timeout() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let cache = memory_cache("stale");
    let stale = cache.function(func("stale")).configure(|s| {
        s.stale_after = Some(Duration::from_millis(50));
        s.next_time = true;
    });
    assert_eq!(square(&stale, 3).await, 9);
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        square(&stale, 3).await,
        9,
        "the stale value, served at once"
    );
    // The refresh runs in the background: wait for it to store.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stale.stats().computations < 2 {
        assert!(Instant::now() < deadline, "the refresh never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let slow = cache
        .function(func("slow"))
        .configure(|s| s.wait_for_calc_timeout = Some(Duration::from_millis(50)));
    let holder = {
        let slow = slow.clone();
        tokio::spawn(async move {
            slow.call(&1u64, || async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                1u64
            })
            .await
        })
    };
    // Let the holder claim the key, then call: wait 50 ms, give up, compute.
    while slow.stats().computations == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let own = slow
        .call(&1u64, || async { 2u64 })
        .await
        .expect("the waiter");
    assert_eq!(own, 2, "the waiter computed on its own");
    assert_eq!(holder.await.expect("join").expect("holder"), 1);

    let seen = Seen::take(&snapshotter);
    let stale_labels = Labels::of(&stale, &cache);
    assert_eq!(
        seen.counter("cachier_stale_hits_total", &stale_labels, &[]),
        1
    );
    assert_eq!(
        seen.counter("cachier_cache_misses_total", &stale_labels, &[]),
        1
    );
    assert_eq!(
        seen.counter("cachier_recalculations_total", &stale_labels, &[]),
        2
    );
    assert_eq!(seen.durations(&stale_labels, "stale").len(), 1);
    assert_matches_stats(&seen, &stale_labels, &stale.stats());

    let slow_labels = Labels::of(&slow, &cache);
    assert_eq!(seen.counter("cachier_waits_total", &slow_labels, &[]), 1);
    assert_eq!(
        seen.counter("cachier_wait_timeouts_total", &slow_labels, &[]),
        1
    );
    assert_eq!(
        seen.counter("cachier_cache_misses_total", &slow_labels, &[]),
        2
    );
    assert_eq!(
        seen.counter("cachier_recalculations_total", &slow_labels, &[]),
        2
    );
    assert_eq!(seen.durations(&slow_labels, "miss").len(), 2);
    assert_matches_stats(&seen, &slow_labels, &slow.stats());
}

/// A real backend that cannot be reached (Redis on a port nothing listens on): the first call
/// counts a backend error by kind and operation and computes; the circuit is then open, so the
/// next call is bypassed.
/// Stale values removed by `delete_stale` are counted as expirations, per function.
#[tokio::test(flavor = "current_thread")]
async fn expirations_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let cache = memory_cache("expirations");
    let f = cache
        .function(func("expiring"))
        .configure(|s| s.stale_after = Some(Duration::from_millis(50)));
    let other = cache.function(func("other"));
    for n in [1, 2, 3] {
        square(&f, n).await;
    }
    square(&other, 1).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(f.delete_stale().await.expect("delete_stale"), 3);
    assert_eq!(f.delete_stale().await.expect("delete_stale"), 0);

    let seen = Seen::take(&snapshotter);
    let labels = Labels::of(&f, &cache);
    assert_eq!(seen.counter("cachier_expirations_total", &labels, &[]), 3);
    assert_eq!(f.stats().expirations, 3);
    assert_matches_stats(&seen, &labels, &f.stats());
    let other_labels = Labels::of(&other, &cache);
    assert_eq!(
        seen.counter("cachier_expirations_total", &other_labels, &[]),
        0
    );
}

#[tokio::test(flavor = "current_thread")]
async fn backend_error_then_bypass() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = Config::from_url(&format!("redis://127.0.0.1:{port}"))
        .expect("url")
        .with_connect_timeout(Duration::from_millis(500))
        .with_reconnect_attempts(0);
    let core = RedisCore::connect_lazy(config).expect("a lazy core");
    let cache = Cachier::builder(Arc::new(core))
        .namespace(namespace("down"))
        .expect("namespace")
        .build();
    let f = cache.function(func("down"));
    assert_eq!(square(&f, 4).await, 16, "the result, despite the backend");
    assert!(cache.is_backend_unavailable(), "the circuit opened");
    assert_eq!(square(&f, 4).await, 16);

    let seen = Seen::take(&snapshotter);
    let labels = Labels::of(&f, &cache);
    let get_unavailable = [("kind", "unavailable"), ("operation", "get")];
    assert_eq!(
        seen.counter("cachier_backend_errors_total", &labels, &get_unavailable),
        1,
        "{:?}",
        seen.counters
    );
    assert_eq!(seen.counter("cachier_cache_misses_total", &labels, &[]), 1);
    assert_eq!(seen.counter("cachier_bypassed_total", &labels, &[]), 1);
    assert_eq!(
        seen.counter("cachier_recalculations_total", &labels, &[]),
        2
    );
    assert_eq!(seen.durations(&labels, "error").len(), 1);
    assert_eq!(seen.durations(&labels, "bypassed").len(), 1);
    assert_eq!(labels.0[2].1, "redis");
    assert_matches_stats(&seen, &labels, &f.stats());
}

/// `Cachier::usage` sets the namespace's gauges from what the memory backend stores.
#[tokio::test(flavor = "current_thread")]
async fn usage_gauges() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let core = Arc::new(MemoryCore::new());
    let cache = Cachier::builder(core.clone())
        .namespace(namespace("usage"))
        .expect("namespace")
        .build();
    let elsewhere = Cachier::builder(core)
        .namespace(namespace("usage-other"))
        .expect("namespace")
        .build();
    let f = cache.function(func("sized"));
    for n in 0..5u64 {
        f.call(&n, move || async move { vec![n as u8; 100] })
            .await
            .expect("call");
    }
    elsewhere
        .function(func("sized"))
        .call(&0u64, || async { vec![0u8; 5000] })
        .await
        .expect("call");
    let usage = cache.usage().await.expect("usage");
    assert_eq!(usage.entries, Some(5));
    let bytes = usage.bytes.expect("the memory backend knows its bytes");
    assert!((5 * 100..5 * 200).contains(&bytes), "{bytes} bytes");

    let ns = cache.namespace().as_str().to_owned();
    let mut gauges = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        if let (MetricKind::Gauge, DebugValue::Gauge(v)) = (kind, value) {
            let labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            gauges.insert((key.name().to_owned(), labels), v.into_inner());
        }
    }
    let labels = vec![
        ("namespace".to_owned(), ns),
        ("backend".to_owned(), "memory".to_owned()),
    ];
    assert_eq!(
        gauges.get(&("cachier_entries".to_owned(), labels.clone())),
        Some(&5.0)
    );
    assert_eq!(
        gauges.get(&("cachier_stored_bytes".to_owned(), labels)),
        Some(&(bytes as f64))
    );
    assert_eq!(gauges.len(), 2, "{gauges:?}");
}
