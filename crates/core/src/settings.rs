//! Settings of the front end, per cache and per function, and options per call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::codec::DEFAULT_DECODE_LIMIT;

/// How a cached function behaves. Set on the [`CachierBuilder`](crate::CachierBuilder) for
/// every function of a cache, and overridable per function on [`Function`](crate::Function).
#[derive(Debug, Clone)]
pub struct Settings {
    /// After how long a stored value is stale (recomputed before it is returned, or served once
    /// more with `next_time`). A value is fresh while `now - stored_at < stale_after`, so zero
    /// never serves a stored value. `None`: values never go stale. Default `None`.
    pub stale_after: Option<Duration>,
    /// Serve a stale value at once and refresh it in the background. Default `false`.
    pub next_time: bool,
    /// How long a caller waits for another caller's computation of the same key before it
    /// computes on its own. `None`: as long as the other holds a live lease. Default `None`.
    pub wait_for_calc_timeout: Option<Duration>,
    /// The claim's lease: how long a computing caller holds the key without renewing. It is
    /// renewed every third of its length while the function runs, so a killed process blocks
    /// others for at most one lease. Default 30 s.
    pub lease: Duration,
    /// Cache results that are `None`. Default `false`: a `None` is returned but not stored.
    pub allow_none: bool,
    /// The largest encoded value, in bytes, that is stored; bigger results are returned but not
    /// stored. `None`: no limit of the front end's own. Default `None`.
    pub entry_size_limit: Option<usize>,
    /// Delete stale values of a function in the background, at most once per
    /// `cleanup_interval`. Needs `stale_after`. Default `false`.
    pub cleanup_stale: bool,
    /// The least time between two background cleanups of one function. Default 1 hour.
    pub cleanup_interval: Duration,
    /// Return backend errors to the caller instead of logging them and computing anyway.
    /// Default `false`: a cache outage never takes the caller's result away.
    pub strict: bool,
    /// The most memory a stored value may claim while it is decoded. Default 1 GiB.
    pub decode_limit: usize,
    /// Have the store itself remove a value this long after it was stored, so a stale entry
    /// does not stay stored forever on a shared backend: Redis sets a `PX` expiry on the entry,
    /// MongoDB a date for its TTL index (see [`Core::set_expiring`](crate::Core::set_expiring)).
    /// Never shorter than `stale_after` (a shorter one is raised to it), so no fresh value is
    /// removed. Backends without expiry of their own (memory, file, SQL, plugins) store the
    /// value as usual, and the front end removes expired values with `delete_stale` in the
    /// background at most once per `cleanup_interval` (on every backend: on Redis and MongoDB
    /// it finds what the store has not removed yet). `None`: values stay until removed.
    /// Default `None`.
    pub expire_after: Option<Duration>,
}

impl Settings {
    /// The expiry a stored value is given: `expire_after`, raised to `stale_after`.
    pub fn store_expiry(&self) -> Option<Duration> {
        self.expire_after
            .map(|e| self.stale_after.map_or(e, |s| e.max(s)))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stale_after: None,
            next_time: false,
            wait_for_calc_timeout: None,
            lease: Duration::from_secs(30),
            allow_none: false,
            entry_size_limit: None,
            cleanup_stale: false,
            cleanup_interval: Duration::from_secs(3600),
            strict: false,
            decode_limit: DEFAULT_DECODE_LIMIT,
            expire_after: None,
        }
    }
}

/// Options of one call.
///
/// ```
/// use std::time::Duration;
/// use cachier_core::CallOptions;
/// let fresh_enough = CallOptions::default().max_age(Duration::from_secs(60));
/// let bypass = CallOptions::default().skip_cache(true);
/// # let _ = (fresh_enough, bypass);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    pub(crate) skip_cache: bool,
    pub(crate) overwrite_cache: bool,
    pub(crate) max_age: Option<Duration>,
}

impl CallOptions {
    /// Compute without reading or writing the cache.
    pub fn skip_cache(mut self, yes: bool) -> Self {
        self.skip_cache = yes;
        self
    }

    /// Compute even if a fresh value is cached, and store the result.
    pub fn overwrite_cache(mut self, yes: bool) -> Self {
        self.overwrite_cache = yes;
        self
    }

    /// Accept a cached value only if it is younger than this (the freshness limit is the
    /// smaller of this and `stale_after`). It is a hard limit for this call: even with
    /// `next_time`, a value this old is not served stale; the call computes, or waits for the
    /// refresh already running. Zero never serves a stored value.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }
}

static GLOBALLY_ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns caching on or off for every [`Cachier`](crate::Cachier) in the process, at run time.
/// While off, every call computes and nothing is read or stored.
pub fn set_caching_enabled(enabled: bool) {
    GLOBALLY_ENABLED.store(enabled, Ordering::SeqCst);
}

/// Whether caching is on process-wide (see [`set_caching_enabled`]).
pub fn caching_enabled() -> bool {
    GLOBALLY_ENABLED.load(Ordering::Relaxed)
}
