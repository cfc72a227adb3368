//! Per-function metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::error::ErrorKind;
use crate::telemetry::{Event, FunctionMetrics, Outcome};

/// Counters of one cached function, as returned by [`Function::stats`](crate::Function::stats).
///
/// The same events are counted, at the same places, through the `metrics` facade (see
/// [`telemetry`](crate::telemetry)): this snapshot needs no recorder, the metrics need no code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls answered from the cache with a fresh value (including values another caller
    /// computed while this one waited).
    pub hits: u64,
    /// Calls that found no usable value (absent, stale, corrupt or `None` without `allow_none`).
    pub misses: u64,
    /// Calls answered with a stale value under `next_time`.
    pub stale_hits: u64,
    /// Times the function was run, in the foreground or as a background refresh.
    pub computations: u64,
    /// Calls that waited for another caller's computation.
    pub waits: u64,
    /// Waits that ran out (`wait_for_calc_timeout`) and computed on their own.
    pub wait_timeouts: u64,
    /// Results not stored because their encoded size exceeded `entry_size_limit` or the
    /// backend's limit.
    pub size_limit_rejections: u64,
    /// Stored values that did not decode and were treated as misses.
    pub corrupt_entries: u64,
    /// Backend errors (logged; returned only with `strict`).
    pub backend_errors: u64,
    /// Calls that bypassed the cache (caching off, or `skip_cache`).
    pub bypassed: u64,
    /// Calls finished, and their total and largest latency. A hit answered by the near cache
    /// (well under a microsecond) is timed one in 16 per thread; the others count the latest
    /// time measured for one.
    pub calls: u64,
    /// Sum of call latencies.
    pub total_latency: Duration,
    /// The slowest call.
    pub max_latency: Duration,
}

impl Stats {
    /// The mean latency of a call, or zero before the first call.
    pub fn mean_latency(&self) -> Duration {
        if self.calls == 0 {
            Duration::ZERO
        } else {
            self.total_latency / self.calls as u32
        }
    }
}

/// The counters of one function of one cache, shared by its handles. Each event is counted
/// here and, through [`FunctionMetrics`], in the `metrics` recorder at the same time.
pub(crate) struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale_hits: AtomicU64,
    pub computations: AtomicU64,
    pub waits: AtomicU64,
    pub wait_timeouts: AtomicU64,
    pub size_limit_rejections: AtomicU64,
    pub corrupt_entries: AtomicU64,
    pub backend_errors: AtomicU64,
    pub bypassed: AtomicU64,
    pub calls: AtomicU64,
    pub total_latency_us: AtomicU64,
    pub max_latency_us: AtomicU64,
    /// When the last background cleanup started, in ms since the epoch.
    pub last_cleanup_ms: AtomicU64,
    /// The latest time measured for a near-cache hit, in nanoseconds (see `Function::near_hit`).
    near_hit_ns: AtomicU64,
    metrics: FunctionMetrics,
}

impl Counters {
    pub fn new(metrics: FunctionMetrics) -> Self {
        let zero = || AtomicU64::new(0);
        Counters {
            hits: zero(),
            misses: zero(),
            stale_hits: zero(),
            computations: zero(),
            waits: zero(),
            wait_timeouts: zero(),
            size_limit_rejections: zero(),
            corrupt_entries: zero(),
            backend_errors: zero(),
            bypassed: zero(),
            calls: zero(),
            total_latency_us: zero(),
            max_latency_us: zero(),
            last_cleanup_ms: zero(),
            near_hit_ns: zero(),
            metrics,
        }
    }

    /// Counts one event in its [`Stats`] field and its metric.
    #[inline]
    pub fn count(&self, event: Event) {
        let counter = match event {
            Event::Hit => &self.hits,
            Event::Miss => &self.misses,
            Event::StaleHit => &self.stale_hits,
            Event::Computation => &self.computations,
            Event::Wait => &self.waits,
            Event::WaitTimeout => &self.wait_timeouts,
            Event::SizeLimitRejection => &self.size_limit_rejections,
            Event::CorruptEntry => &self.corrupt_entries,
            Event::Bypassed => &self.bypassed,
        };
        counter.fetch_add(1, Relaxed);
        self.metrics.count(event);
    }

    /// Counts one backend error, by kind and operation in the metric.
    pub fn backend_error(&self, kind: ErrorKind, operation: &'static str) {
        self.backend_errors.fetch_add(1, Relaxed);
        self.metrics.backend_error(kind, operation);
    }

    /// Counts one finished call, its latency and its outcome.
    #[inline]
    pub fn record_latency(&self, d: Duration, outcome: Outcome) {
        let us = d.as_micros() as u64;
        self.calls.fetch_add(1, Relaxed);
        // A near-cache hit takes well under a microsecond: skip the writes that change nothing
        // (each is a locked instruction on a line every caller of the function shares).
        if us > 0 {
            self.total_latency_us.fetch_add(us, Relaxed);
            if us > self.max_latency_us.load(Relaxed) {
                self.max_latency_us.fetch_max(us, Relaxed);
            }
        }
        self.metrics.duration(outcome, d.as_secs_f64());
    }

    /// Remembers the time a timed near-cache hit took.
    #[inline]
    pub fn near_hit_took(&self, d: Duration) {
        self.near_hit_ns
            .store(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The latest time measured for a near-cache hit.
    #[inline]
    pub fn near_hit_time(&self) -> Duration {
        Duration::from_nanos(self.near_hit_ns.load(Relaxed))
    }

    pub fn snapshot(&self) -> Stats {
        Stats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            stale_hits: self.stale_hits.load(Relaxed),
            computations: self.computations.load(Relaxed),
            waits: self.waits.load(Relaxed),
            wait_timeouts: self.wait_timeouts.load(Relaxed),
            size_limit_rejections: self.size_limit_rejections.load(Relaxed),
            corrupt_entries: self.corrupt_entries.load(Relaxed),
            backend_errors: self.backend_errors.load(Relaxed),
            bypassed: self.bypassed.load(Relaxed),
            calls: self.calls.load(Relaxed),
            total_latency: Duration::from_micros(self.total_latency_us.load(Relaxed)),
            max_latency: Duration::from_micros(self.max_latency_us.load(Relaxed)),
        }
    }
}
