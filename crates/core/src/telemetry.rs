//! Observability: metrics through the [`metrics`](https://docs.rs/metrics) facade and one
//! `tracing` span per call.
//!
//! ## Metrics (feature `metrics`, on by default)
//!
//! cachier-core links only the facade: nothing is exported until the application installs a
//! recorder (`metrics-exporter-prometheus`, `metrics-util`'s debugging recorder, ...). With no
//! recorder installed a metric costs about a thread-local read and an atomic load; the label set
//! of a function is built once, when its [`Function`](crate::Function) handle is first made.
//! Each count is registered with the recorder current at that moment (a lookup in the
//! recorder's registry, not a handle kept from earlier), so a recorder installed after the
//! caches were built, or one installed for a thread only, sees every count. With
//! `metrics-exporter-prometheus` that lookup makes a 100 B memory hit about 1.7 times as long
//! (`cargo xtask bench memory`, the row "metrics recorder").
//!
//! Every counter is counted at the very place the matching [`Stats`](crate::Stats) field is, so
//! the two never disagree:
//!
//! | metric | type | [`Stats`](crate::Stats) field |
//! |---|---|---|
//! | `cachier_cache_hits_total` | counter | `hits` |
//! | `cachier_cache_misses_total` | counter | `misses` |
//! | `cachier_stale_hits_total` | counter | `stale_hits` |
//! | `cachier_recalculations_total` | counter | `computations` |
//! | `cachier_waits_total` | counter | `waits` |
//! | `cachier_wait_timeouts_total` | counter | `wait_timeouts` |
//! | `cachier_size_limit_rejections_total` | counter | `size_limit_rejections` |
//! | `cachier_corrupt_entries_total` | counter | `corrupt_entries` |
//! | `cachier_bypassed_total` | counter | `bypassed` |
//! | `cachier_backend_errors_total{kind, operation}` | counter | `backend_errors` (summed) |
//! | `cachier_call_duration_seconds{outcome}` | histogram | `calls`, `total_latency` |
//!
//! Every one carries the labels `function` (the [`FuncId`](crate::FuncId)), `namespace` and
//! `backend` ([`Core::name`](crate::Core::name)). `kind` is the [`ErrorKind`] in snake case
//! (`unavailable`, `too_large`, ...), `operation` the backend operation that failed (`get`,
//! `set`, `claim`, `wait`). `outcome` is the one of the call's span (below).
//!
//! Two gauges per cache, labelled `namespace` and `backend` only, are set when the application
//! asks [`Cachier::usage`](crate::Cachier::usage): `cachier_entries` (values stored in the
//! namespace) and `cachier_stored_bytes` (their encoded bytes), for backends that can tell
//! cheaply (see [`Core::usage`](crate::Core::usage)).
//!
//! A hit answered by the near cache (see
//! [`CachierBuilder::near_cache`](crate::CachierBuilder::near_cache)) takes well under a
//! microsecond, of which two clock reads would be a quarter: one such hit in 16 per thread is
//! timed, and the others record the latest time measured for a near hit of the same function
//! (every hit is still counted and recorded once).
//!
//! A Prometheus exporter renders the histogram as a summary unless it is given buckets: pass
//! [`CALL_DURATION_BUCKETS`] (see `examples/prometheus.rs`).
//!
//! ## Tracing
//!
//! Each call runs in a `DEBUG` span named `cachier.call` with the fields `function`, `namespace`,
//! `backend` and `outcome`, recorded when the call ends: `hit` (a fresh stored value), `stale`
//! (a stale value served under `next_time`), `waited` (the value another caller computed while
//! this one waited), `miss` (computed by this call), `bypassed` (the cache skipped: caching off,
//! `skip_cache`, arguments that do not hash, or the backend unavailable) or `error` (a backend
//! error during the call, whether it was logged and the function computed anyway or, with
//! `strict`, returned). With no subscriber listening at `DEBUG` the span is never built. A
//! backend error is also an event (`WARN`, or `DEBUG` with `strict`, where the caller gets it)
//! with the fields `backend`, `operation`, `kind`, `key` and `error`.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::ErrorKind;

/// `cachier_cache_hits_total`: calls answered with a fresh stored value.
pub const CACHE_HITS: &str = "cachier_cache_hits_total";
/// `cachier_cache_misses_total`: calls that found no usable value.
pub const CACHE_MISSES: &str = "cachier_cache_misses_total";
/// `cachier_stale_hits_total`: calls answered with a stale value under `next_time`.
pub const STALE_HITS: &str = "cachier_stale_hits_total";
/// `cachier_recalculations_total`: times the function was run.
pub const RECALCULATIONS: &str = "cachier_recalculations_total";
/// `cachier_waits_total`: calls that waited for another caller's computation.
pub const WAITS: &str = "cachier_waits_total";
/// `cachier_wait_timeouts_total`: waits that ran out and computed on their own.
pub const WAIT_TIMEOUTS: &str = "cachier_wait_timeouts_total";
/// `cachier_size_limit_rejections_total`: results not stored because they were too large.
pub const SIZE_LIMIT_REJECTIONS: &str = "cachier_size_limit_rejections_total";
/// `cachier_corrupt_entries_total`: stored values that did not decode (treated as misses).
pub const CORRUPT_ENTRIES: &str = "cachier_corrupt_entries_total";
/// `cachier_bypassed_total`: calls that skipped the cache.
pub const BYPASSED: &str = "cachier_bypassed_total";
/// `cachier_backend_errors_total{kind, operation}`: backend errors met by calls.
pub const BACKEND_ERRORS: &str = "cachier_backend_errors_total";
/// `cachier_call_duration_seconds{outcome}`: the latency of calls, by outcome.
pub const CALL_DURATION: &str = "cachier_call_duration_seconds";
/// `cachier_entries{namespace, backend}`: values stored in a namespace (set by
/// [`Cachier::usage`](crate::Cachier::usage)).
pub const ENTRIES: &str = "cachier_entries";
/// `cachier_stored_bytes{namespace, backend}`: encoded bytes of the values stored in a
/// namespace (set by [`Cachier::usage`](crate::Cachier::usage)).
pub const STORED_BYTES: &str = "cachier_stored_bytes";

/// Histogram buckets, in seconds, suited to [`CALL_DURATION`]: from a microsecond (a memory
/// hit) to ten seconds (a slow computation).
pub const CALL_DURATION_BUCKETS: &[f64] = &[
    0.000_001, 0.000_005, 0.000_025, 0.000_1, 0.000_5, 0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// How a call ended, as the `outcome` of its span and its [`CALL_DURATION`] sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Outcome {
    /// A fresh stored value.
    Hit = 0,
    /// Computed by this call.
    Miss = 1,
    /// A stale value, served under `next_time`.
    Stale = 2,
    /// The value another caller computed while this one waited.
    Waited = 3,
    /// The cache was skipped.
    Bypassed = 4,
    /// A backend error happened during the call.
    Error = 5,
}

impl Outcome {
    /// Every outcome, in the order of their discriminants.
    pub const ALL: [Outcome; 6] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Stale,
        Outcome::Waited,
        Outcome::Bypassed,
        Outcome::Error,
    ];

    /// The label value: `hit`, `miss`, `stale`, `waited`, `bypassed` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Waited => "waited",
            Outcome::Bypassed => "bypassed",
            Outcome::Error => "error",
        }
    }
}

/// The `kind` label of [`BACKEND_ERRORS`]: the [`ErrorKind`] in snake case.
pub fn error_kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Corrupt => "corrupt",
        ErrorKind::TooLarge => "too_large",
        ErrorKind::Config => "config",
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::Codec => "codec",
        ErrorKind::PermissionDenied => "permission_denied",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Backend => "backend",
    }
}

/// Gives every cachier metric its unit and help text in the current recorder. Called by
/// [`CachierBuilder::build`](crate::CachierBuilder::build); call it again after installing a
/// recorder if caches were built before (the metrics are recorded either way, only their
/// descriptions would be missing). Does nothing without the `metrics` feature.
pub fn describe_metrics() {
    #[cfg(feature = "metrics")]
    {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(
            CACHE_HITS,
            Unit::Count,
            "Calls answered with a fresh stored value"
        );
        describe_counter!(
            CACHE_MISSES,
            Unit::Count,
            "Calls that found no usable value"
        );
        describe_counter!(
            STALE_HITS,
            Unit::Count,
            "Calls answered with a stale value under next_time"
        );
        describe_counter!(
            RECALCULATIONS,
            Unit::Count,
            "Times the cached function was run"
        );
        describe_counter!(
            WAITS,
            Unit::Count,
            "Calls that waited for another caller's computation"
        );
        describe_counter!(
            WAIT_TIMEOUTS,
            Unit::Count,
            "Waits that ran out and computed on their own"
        );
        describe_counter!(
            SIZE_LIMIT_REJECTIONS,
            Unit::Count,
            "Results not stored because they exceeded the size limit"
        );
        describe_counter!(
            CORRUPT_ENTRIES,
            Unit::Count,
            "Stored values that did not decode and were treated as misses"
        );
        describe_counter!(BYPASSED, Unit::Count, "Calls that skipped the cache");
        describe_counter!(
            BACKEND_ERRORS,
            Unit::Count,
            "Backend errors met by calls, by error kind and operation"
        );
        describe_histogram!(
            CALL_DURATION,
            Unit::Seconds,
            "Latency of cached calls, by outcome"
        );
        describe_gauge!(ENTRIES, Unit::Count, "Values stored in the namespace");
        describe_gauge!(
            STORED_BYTES,
            Unit::Bytes,
            "Encoded bytes of the values stored in the namespace"
        );
    }
}

/// The outcome of one call as it goes: set where the counters are counted. An error sticks.
pub(crate) struct CallOutcome(AtomicU8);

impl CallOutcome {
    #[inline]
    pub fn new() -> Self {
        CallOutcome(AtomicU8::new(Outcome::Miss as u8))
    }

    #[inline]
    pub fn set(&self, outcome: Outcome) {
        if self.0.load(Ordering::Relaxed) != Outcome::Error as u8 {
            self.0.store(outcome as u8, Ordering::Relaxed);
        }
    }

    #[inline]
    pub fn get(&self) -> Outcome {
        Outcome::ALL[usize::from(self.0.load(Ordering::Relaxed)).min(Outcome::ALL.len() - 1)]
    }
}

/// The events of a call that a [`Stats`](crate::Stats) field counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Event {
    Hit = 0,
    Miss,
    StaleHit,
    Computation,
    Wait,
    WaitTimeout,
    SizeLimitRejection,
    CorruptEntry,
    Bypassed,
}

#[cfg(feature = "metrics")]
impl Event {
    pub const COUNT: usize = 9;

    const NAMES: [&'static str; Event::COUNT] = [
        CACHE_HITS,
        CACHE_MISSES,
        STALE_HITS,
        RECALCULATIONS,
        WAITS,
        WAIT_TIMEOUTS,
        SIZE_LIMIT_REJECTIONS,
        CORRUPT_ENTRIES,
        BYPASSED,
    ];
}

/// The metric keys of one function of one cache, labels included, made once.
pub(crate) struct FunctionMetrics {
    #[cfg(feature = "metrics")]
    inner: keys::Keys,
}

impl FunctionMetrics {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn new(function: &str, namespace: &str, backend: &'static str) -> Self {
        FunctionMetrics {
            #[cfg(feature = "metrics")]
            inner: keys::Keys::new(function, namespace, backend),
        }
    }

    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn count(&self, event: Event) {
        #[cfg(feature = "metrics")]
        self.inner.count(event);
    }

    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn duration(&self, outcome: Outcome, seconds: f64) {
        #[cfg(feature = "metrics")]
        self.inner.duration(outcome, seconds);
    }

    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn backend_error(&self, kind: ErrorKind, operation: &'static str) {
        #[cfg(feature = "metrics")]
        self.inner.backend_error(kind, operation);
    }
}

/// Sets the usage gauges of a namespace.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn usage_gauges(namespace: &str, backend: &'static str, usage: crate::Usage) {
    #[cfg(feature = "metrics")]
    {
        let labels = [
            ("namespace", namespace.to_owned()),
            ("backend", backend.to_owned()),
        ];
        if let Some(entries) = usage.entries {
            metrics::gauge!(ENTRIES, &labels).set(entries as f64);
        }
        if let Some(bytes) = usage.bytes {
            metrics::gauge!(STORED_BYTES, &labels).set(bytes as f64);
        }
    }
}

#[cfg(feature = "metrics")]
mod keys {
    use metrics::{Key, Label, Level, Metadata};

    use super::{BACKEND_ERRORS, CALL_DURATION, Event, Outcome, error_kind_label};
    use crate::error::ErrorKind;

    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    pub(super) struct Keys {
        labels: Vec<Label>,
        counters: [Key; Event::COUNT],
        durations: [Key; Outcome::ALL.len()],
    }

    impl Keys {
        pub fn new(function: &str, namespace: &str, backend: &'static str) -> Self {
            let labels = vec![
                Label::new("function", function.to_owned()),
                Label::new("namespace", namespace.to_owned()),
                Label::new("backend", backend),
            ];
            let counters = Event::NAMES.map(|name| Key::from_parts(name, labels.clone()));
            let durations = Outcome::ALL.map(|outcome| {
                let mut labels = labels.clone();
                labels.push(Label::new("outcome", outcome.as_str()));
                Key::from_parts(CALL_DURATION, labels)
            });
            Keys {
                labels,
                counters,
                durations,
            }
        }

        /// Registers the counter with the current recorder (a no-op one when none is
        /// installed) and counts one. Registering on every count, rather than keeping the
        /// handle, keeps a recorder installed after the handle was made (or a thread-local one)
        /// seeing every count; the key (labels and hash) was made once, in `new`.
        #[inline]
        pub fn count(&self, event: Event) {
            let key = &self.counters[event as usize];
            metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA))
                .increment(1);
        }

        #[inline]
        pub fn duration(&self, outcome: Outcome, seconds: f64) {
            let key = &self.durations[outcome as usize];
            metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA))
                .record(seconds);
        }

        pub fn backend_error(&self, kind: ErrorKind, operation: &'static str) {
            let mut labels = self.labels.clone();
            labels.push(Label::new("kind", error_kind_label(kind)));
            labels.push(Label::new("operation", operation));
            let key = Key::from_parts(BACKEND_ERRORS, labels);
            metrics::with_recorder(|recorder| recorder.register_counter(&key, &METADATA))
                .increment(1);
        }
    }
}
