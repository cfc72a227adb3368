//! The front end: [`Cachier`] and the per-function handle [`Function`].
//!
//! One call follows DESIGN section 5:
//!
//! 1. Caching off or `skip_cache` → compute, return. The backend unavailable (a connection-level
//!    failure it has not recovered from, see [`crate::ProbeBackoff`]) → compute without it (or,
//!    with `strict`, return the error), at once.
//! 2. `get`. A fresh value (`now - stored_at` below every limit, and `allow_none` or not
//!    `None`) → return it.
//! 3. A stale value (but younger than the call's `max_age`) and `next_time` → claim; if acquired,
//!    refresh in a background task; return the stale value either way.
//! 4. Otherwise claim. Acquired → compute (renewing the lease meanwhile), `set` unless too large,
//!    release on every path (error, panic, cancellation), return.
//! 5. Held by someone else → `wait` for their value, up to `wait_for_calc_timeout`; a fresh value
//!    → return it; the claim gone without a value (the holder failed, or its lease expired) →
//!    claim again; the timeout → compute on our own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::codec::{self, DefaultCodec};
use crate::contract::{
    Change, Claim, ClaimToken, Core, Entry, Timestamp, Usage, Watcher, Watching,
};
use crate::error::{Error, Result};
use crate::health::{Health, ProbeBackoff};
use crate::key::{self, ArgHash, FuncId, Key, Namespace};
use crate::near::{self, Near, NearCache, NearKey, Ticket, Wanted};
use crate::none::is_none;
use crate::settings::{CallOptions, Settings, caching_enabled};
use crate::stats::{Counters, Stats};
use crate::telemetry::{self, CallOutcome, Event, FunctionMetrics, Outcome};

pub(crate) mod attribute;

/// A cache: a backend ([`Core`]), a [`Namespace`] and default [`Settings`].
///
/// Cheap to clone; clones share the backend, the settings, the on/off switch and the metrics.
///
/// ```
/// # use std::sync::Arc;
/// # use cachier_core::{Cachier, Core, func_id};
/// # async fn demo(core: Arc<dyn Core>) -> cachier_core::Result<()> {
/// let cache = Cachier::builder(core)
///     .namespace("my-app")?
///     .stale_after(std::time::Duration::from_secs(3600))
///     .build();
/// let square = cache.function(func_id!("square"));
/// let x = 12u64;
/// let y: u64 = square.call(&x, move || async move { x * x }).await?;
/// assert_eq!(y, 144);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cachier {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<dyn Core>,
    namespace: Namespace,
    settings: Settings,
    enabled: std::sync::atomic::AtomicBool,
    functions: Mutex<HashMap<FuncId, Arc<Counters>>>,
    health: Arc<Health>,
    /// Decoded values kept in process (see [`CachierBuilder::near_cache`]), and how the
    /// backend keeps them true.
    near: Option<(Arc<Near>, Watching)>,
}

/// Builds a [`Cachier`]; see [`Settings`] for what each setting means and its default.
pub struct CachierBuilder {
    core: Arc<dyn Core>,
    namespace: Namespace,
    settings: Settings,
    probe_backoff: ProbeBackoff,
    /// `None`: the default, a near cache only where the backend reports changes synchronously.
    near_cache: Option<NearCache>,
}

impl CachierBuilder {
    /// The namespace everything of this cache is stored under (default `cachier`).
    pub fn namespace(mut self, namespace: impl AsRef<str>) -> Result<Self> {
        self.namespace = Namespace::new(namespace)?;
        Ok(self)
    }

    /// Like [`CachierBuilder::namespace`], with an already validated namespace.
    pub fn with_namespace(mut self, namespace: Namespace) -> Self {
        self.namespace = namespace;
        self
    }

    /// Replaces all settings at once.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// See [`Settings::stale_after`].
    pub fn stale_after(mut self, d: Duration) -> Self {
        self.settings.stale_after = Some(d);
        self
    }

    /// See [`Settings::next_time`].
    pub fn next_time(mut self, yes: bool) -> Self {
        self.settings.next_time = yes;
        self
    }

    /// See [`Settings::wait_for_calc_timeout`].
    pub fn wait_for_calc_timeout(mut self, d: Duration) -> Self {
        self.settings.wait_for_calc_timeout = Some(d);
        self
    }

    /// See [`Settings::lease`].
    pub fn lease(mut self, d: Duration) -> Self {
        self.settings.lease = d;
        self
    }

    /// See [`Settings::allow_none`].
    pub fn allow_none(mut self, yes: bool) -> Self {
        self.settings.allow_none = yes;
        self
    }

    /// See [`Settings::entry_size_limit`].
    pub fn entry_size_limit(mut self, bytes: usize) -> Self {
        self.settings.entry_size_limit = Some(bytes);
        self
    }

    /// See [`Settings::cleanup_stale`] and [`Settings::cleanup_interval`].
    pub fn cleanup_stale(mut self, yes: bool, interval: Duration) -> Self {
        self.settings.cleanup_stale = yes;
        self.settings.cleanup_interval = interval;
        self
    }

    /// See [`Settings::expire_after`].
    pub fn expire_after(mut self, d: Duration) -> Self {
        self.settings.expire_after = Some(d);
        self
    }

    /// See [`Settings::strict`].
    pub fn strict(mut self, yes: bool) -> Self {
        self.settings.strict = yes;
        self
    }

    /// See [`Settings::decode_limit`].
    pub fn decode_limit(mut self, bytes: usize) -> Self {
        self.settings.decode_limit = bytes;
        self
    }

    /// How often an unavailable backend is probed again (see [`ProbeBackoff`]; default 100 ms,
    /// doubling up to 2 s). While it is unavailable, calls compute without it at no extra cost.
    pub fn probe_backoff(mut self, backoff: ProbeBackoff) -> Self {
        self.probe_backoff = backoff;
        self
    }

    /// The near cache: decoded values kept in process, so a hit is a lookup and a clone, with
    /// no call to the backend, no key hash and no decode. A copy keeps its value's `stored_at`
    /// and is served only where the backend's value would be: fresh under `stale_after` and
    /// the call's `max_age`, never with `overwrite_cache`, `skip_cache` or caching switched
    /// off. Bounded by entries and bytes (see [`NearCache`] for peak memory).
    ///
    /// How it stays true depends on what the backend reports ([`Core::watch`]):
    ///
    /// | backend | reports changes | near cache |
    /// |---|---|---|
    /// | memory | before each change returns ([`Watching::Synchronous`]) | on by default; a change made through any handle of the store is never missed |
    /// | Redis | shortly after, from any process ([`Watching::Asynchronous`]) | opt-in: `near_cache(NearCache::new())`; serves only while invalidation is connected, emptied when it is lost |
    /// | file, SQL, MongoDB, S3, plugins | no ([`Watching::No`]) | opt-in with a time to live only: `near_cache(NearCache::new().ttl(d))`, bounded staleness: a change made elsewhere is seen at most `d` later |
    ///
    /// This front end's own `precache`, `remove`, `clear`, `delete_stale` and stored results
    /// drop the copies they touch on every backend. Without this call the default applies: a
    /// near cache of [`NearCache::new`]'s bounds where the backend reports changes
    /// synchronously (memory), none elsewhere. [`NearCache::disabled`] turns it off; a
    /// `NearCache` without a `ttl` on a backend that does not report changes is ignored (with
    /// a warning). [`Cachier::near_cache_coherence`] tells what was built.
    pub fn near_cache(mut self, near: NearCache) -> Self {
        self.near_cache = Some(near);
        self
    }

    /// Finishes the cache (and describes cachier's metrics to the `metrics` recorder installed
    /// now, if any: see [`telemetry::describe_metrics`]).
    pub fn build(self) -> Cachier {
        telemetry::describe_metrics();
        let near = self.build_near();
        Cachier {
            inner: Arc::new(Inner {
                namespace: self.namespace,
                settings: self.settings,
                enabled: std::sync::atomic::AtomicBool::new(true),
                functions: Mutex::new(HashMap::new()),
                health: Arc::new(Health::new(self.probe_backoff)),
                near,
                core: self.core,
            }),
        }
    }

    /// The near cache, registered with the backend, if the settings and the backend call for
    /// one (see [`CachierBuilder::near_cache`]).
    fn build_near(&self) -> Option<(Arc<Near>, Watching)> {
        let explicit = self.near_cache.is_some();
        let bounds = self.near_cache.unwrap_or_default();
        let near = Arc::new(Near::new(bounds)?);
        let watcher: Arc<dyn Watcher> = near.clone();
        // The backend holds it weakly: it forgets it once this cache is dropped.
        let watching = self.core.watch(&self.namespace, Arc::downgrade(&watcher));
        drop(watcher);
        let keep = match watching {
            Watching::Synchronous => true,
            Watching::Asynchronous => explicit,
            Watching::No => explicit && bounds.time_to_live().is_some(),
        };
        if !keep {
            if explicit && watching == Watching::No {
                tracing::warn!(
                    backend = self.core.name(),
                    "near cache not used: this backend does not report changes, so a near \
                     cache needs a time to live (NearCache::ttl)"
                );
            }
            return None;
        }
        near.started(watching);
        Some((near, watching))
    }
}

impl Cachier {
    /// Starts building a cache over `core`.
    pub fn builder(core: Arc<dyn Core>) -> CachierBuilder {
        CachierBuilder {
            core,
            namespace: Namespace::default(),
            settings: Settings::default(),
            probe_backoff: ProbeBackoff::default(),
            near_cache: None,
        }
    }

    /// A cache over `core` with the default namespace and settings.
    pub fn new(core: Arc<dyn Core>) -> Cachier {
        Cachier::builder(core).build()
    }

    /// The handle of one cached function. Handles of the same id share metrics.
    pub fn function(&self, id: FuncId) -> Function {
        let counters = {
            let mut map = self
                .inner
                .functions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let inner = &self.inner;
            map.entry(id.clone())
                .or_insert_with(|| {
                    let metrics = FunctionMetrics::new(
                        id.as_str(),
                        inner.namespace.as_str(),
                        inner.core.name(),
                    );
                    Arc::new(Counters::new(metrics))
                })
                .clone()
        };
        let near_number = self
            .inner
            .near
            .as_ref()
            .map_or(0, |(near, _)| near.func_number(&id));
        Function {
            cache: self.clone(),
            settings: Arc::new(self.inner.settings.clone()),
            id,
            counters,
            near_number,
        }
    }

    /// Whether this cache has a near cache, and how it stays true: `None` for none,
    /// `Some(Watching::Synchronous)` or `Some(Watching::Asynchronous)` when the backend reports
    /// changes, `Some(Watching::No)` for copies bounded by their time to live only. See
    /// [`CachierBuilder::near_cache`].
    pub fn near_cache_coherence(&self) -> Option<Watching> {
        self.inner.near.as_ref().map(|(_, watching)| *watching)
    }

    /// The backend.
    pub fn core(&self) -> &Arc<dyn Core> {
        &self.inner.core
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.inner.namespace
    }

    /// The default settings of this cache's functions.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Turns caching on or off for this cache (and its clones) at run time. See also the
    /// process-wide [`set_caching_enabled`](crate::set_caching_enabled).
    pub fn set_enabled(&self, enabled: bool) {
        self.inner.enabled.store(enabled, Ordering::SeqCst);
    }

    /// Whether this cache is on, and caching is on process-wide.
    pub fn is_enabled(&self) -> bool {
        caching_enabled() && self.inner.enabled.load(Ordering::Relaxed)
    }

    /// What the backend stores in this cache's namespace (every function), as far as it can tell
    /// cheaply ([`Core::usage`]; `None` fields are unknown). With the `metrics` feature, the
    /// known figures are also set as the gauges `cachier_entries` and `cachier_stored_bytes`
    /// (labels `namespace`, `backend`): call it from a timer, or before a scrape, to export them.
    /// Fails at once while the backend is unavailable.
    pub async fn usage(&self) -> Result<Usage> {
        let inner = &self.inner;
        if inner.health.is_open() {
            return Err(inner.health.open_error(inner.core.as_ref(), "usage"));
        }
        let usage = inner.core.usage(&inner.namespace).await;
        inner.health.observe(&inner.core, &inner.namespace, &usage);
        let usage = usage?;
        telemetry::usage_gauges(inner.namespace.as_str(), inner.core.name(), usage);
        Ok(usage)
    }

    /// Whether the backend is considered unavailable: after a connection-level failure, calls
    /// skip it (computing, counted as `bypassed`) until a background probe finds it answering.
    pub fn is_backend_unavailable(&self) -> bool {
        self.inner.health.is_open()
    }
}

/// One cached function: its id, its settings and its metrics.
#[derive(Clone)]
pub struct Function {
    cache: Cachier,
    settings: Arc<Settings>,
    id: FuncId,
    counters: Arc<Counters>,
    /// This function's number in near keys.
    near_number: u32,
}

/// What the compute step produced, for the shared call path.
type Computed<T, E> = std::result::Result<T, E>;

/// How `next_time` refreshes a stale value after the call has returned: given the key and the
/// compute step, start the refresh in the background. A call whose compute step borrows from
/// its caller has none; a stale value is then recomputed in the call (see `front/attribute.rs`).
type Refresh<F> = fn(&Function, Key, F);

impl Function {
    /// Overrides settings of this handle only (other handles of the same id keep theirs).
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use cachier_core::{Cachier, Core, func_id};
    /// # fn demo(cache: Cachier) {
    /// let f = cache.function(func_id!("rates")).configure(|s| {
    ///     s.stale_after = Some(Duration::from_secs(60));
    ///     s.next_time = true;
    /// });
    /// # let _ = f; }
    /// ```
    pub fn configure(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(Arc::make_mut(&mut self.settings));
        self
    }

    /// The function id.
    pub fn id(&self) -> &FuncId {
        &self.id
    }

    /// The settings in force for this handle.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The key under which the result for `args` is stored.
    pub fn key<A: Serialize + ?Sized>(&self, args: &A) -> Result<Key> {
        Key::for_args(&self.cache.inner.namespace, &self.id, args)
    }

    /// Returns the cached result for `args`, or runs `compute`, stores and returns its result.
    ///
    /// `args` identifies the call (use a tuple for several arguments); `compute` is run at most
    /// once, and only when no usable value is cached and no other caller — in this process or
    /// any other sharing the backend — is computing the same key. Without `strict`, this never
    /// fails because of the backend: errors are logged and the function is computed.
    ///
    /// The result type is `Clone`: with a near cache (on by default for the memory backend,
    /// see [`CachierBuilder::near_cache`]) a hit is served as a clone of the value decoded on
    /// an earlier hit, without asking the backend. Byte buffers, strings and sequences of
    /// numbers (`Vec<u8>`, `String`, `Vec<f64>`...) are stored as they are and decode at the
    /// speed of a copy.
    pub async fn call<A, T, F, Fut>(&self, args: &A, compute: F) -> Result<T>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.call_with(CallOptions::default(), args, compute).await
    }

    /// [`Function::call`] with per-call options.
    pub async fn call_with<A, T, F, Fut>(
        &self,
        opts: CallOptions,
        args: &A,
        compute: F,
    ) -> Result<T>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let compute = move || {
            let fut = compute();
            async move { Ok::<T, std::convert::Infallible>(fut.await) }
        };
        match self.run(opts, args, compute).await? {
            Ok(value) => Ok(value),
            Err(never) => match never {},
        }
    }

    /// Like [`Function::call`] for functions that can fail: an `Err` is returned to the caller
    /// and not cached (and the claim is released, so another caller may try at once). Backend
    /// errors reach the caller only with `strict`, converted with `E: From<Error>`.
    pub async fn try_call<A, T, E, F, Fut>(&self, args: &A, compute: F) -> std::result::Result<T, E>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
    {
        self.try_call_with(CallOptions::default(), args, compute)
            .await
    }

    /// [`Function::try_call`] with per-call options.
    pub async fn try_call_with<A, T, E, F, Fut>(
        &self,
        opts: CallOptions,
        args: &A,
        compute: F,
    ) -> std::result::Result<T, E>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
    {
        self.run(opts, args, compute).await?
    }

    /// [`Function::call`] for synchronous code and synchronous functions.
    ///
    /// - Outside any async runtime (plain `fn main`, a thread pool): runs the call on a small
    ///   runtime owned by the crate ([`block_on`](crate::block_on)); `compute` runs on the
    ///   calling thread.
    /// - Inside a multi-threaded tokio runtime: uses `block_in_place`, so the runtime's other
    ///   tasks keep running while this thread blocks.
    /// - Inside a current-thread tokio runtime, blocking would stall the very runtime that may
    ///   drive the backend's connections, so the cache is bypassed: `compute` runs directly, a
    ///   warning is logged and the call counts as `bypassed`. Use [`Function::call`] there.
    pub fn call_blocking<A, T, F>(&self, args: &A, compute: F) -> Result<T>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.call_blocking_with(CallOptions::default(), args, compute)
    }

    /// [`Function::call_blocking`] with per-call options.
    pub fn call_blocking_with<A, T, F>(&self, opts: CallOptions, args: &A, compute: F) -> Result<T>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let handle = Handle::try_current().ok();
        if let Some(handle) = &handle
            && handle.runtime_flavor() != RuntimeFlavor::MultiThread
        {
            tracing::warn!(
                func = %self.id,
                "call_blocking inside a current-thread tokio runtime bypasses the cache; \
                 use `call` there"
            );
            self.counters.count(Event::Bypassed);
            return Ok(compute());
        }
        let call = self.call_with(opts, args, move || async move { compute() });
        match handle {
            None => crate::blocking::block_on(call),
            Some(handle) => tokio::task::block_in_place(|| handle.block_on(call)),
        }
    }

    /// Stores `value` as the result for `args`, as if it had been computed now.
    pub async fn precache<A, T>(&self, args: &A, value: &T) -> Result<()>
    where
        A: Serialize + ?Sized,
        T: Serialize + ?Sized,
    {
        let key = self.key(args)?;
        let bytes = codec::seal::<DefaultCodec, T>(value)?;
        let core = &self.cache.inner.core;
        self.maintenance("set", self.store_bytes(core, &key, Bytes::from(bytes)))
            .await
    }

    /// Removes the cached result for `args`; `true` if there was one.
    pub async fn remove<A: Serialize + ?Sized>(&self, args: &A) -> Result<bool> {
        let key = self.key(args)?;
        let removed = self
            .maintenance("remove", self.cache.inner.core.remove(&key))
            .await;
        self.changed(Change::Entry(&key));
        removed
    }

    /// Removes every cached result of this function (in this cache's namespace only).
    pub async fn clear(&self) -> Result<u64> {
        let inner = &self.cache.inner;
        let cleared = self
            .maintenance("clear", inner.core.clear(&inner.namespace, &self.id))
            .await;
        self.changed(Change::Function(&self.id));
        cleared
    }

    /// Drops the near copies a change made through this front end touched (the backend may
    /// report it too, or later, or not at all).
    fn changed(&self, change: Change<'_>) {
        if let Some((near, _)) = &self.cache.inner.near {
            near.changed(change);
        }
    }

    /// Ends every claim on this function's keys (for a claim known to be abandoned; leases end
    /// by themselves anyway).
    pub async fn clear_claims(&self) -> Result<u64> {
        let inner = &self.cache.inner;
        self.maintenance(
            "clear_claims",
            inner.core.clear_claims(&inner.namespace, &self.id),
        )
        .await
    }

    /// Removes values of this function older than `stale_after` (all values stored before now
    /// when `stale_after` is not set). Returns how many were removed.
    pub async fn delete_stale(&self) -> Result<u64> {
        let before = Timestamp::now().sub(self.settings.stale_after.unwrap_or(Duration::ZERO));
        let inner = &self.cache.inner;
        let deleted = self
            .maintenance(
                "delete_stale",
                inner.core.delete_stale(&inner.namespace, &self.id, before),
            )
            .await;
        self.changed(Change::Function(&self.id));
        let removed = deleted?;
        self.counters.count_n(Event::Expiration, removed);
        Ok(removed)
    }

    /// Runs a maintenance operation, or fails at once while the backend is unavailable.
    async fn maintenance<T>(
        &self,
        operation: &'static str,
        run: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let inner = &self.cache.inner;
        if inner.health.is_open() {
            return Err(inner.health.open_error(inner.core.as_ref(), operation));
        }
        self.seen(run.await)
    }

    /// Passes a backend result through, letting the cache's health see connection failures.
    fn seen<T>(&self, result: Result<T>) -> Result<T> {
        let inner = &self.cache.inner;
        inner.health.observe(&inner.core, &inner.namespace, &result);
        result
    }

    /// This function's metrics (shared by every handle of the same id in this cache).
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }
}

/// The first and the longest pause between two claims of a caller whose wait returned at once.
const SPIN_PAUSE_MIN: Duration = Duration::from_millis(2);
const SPIN_PAUSE_MAX: Duration = Duration::from_millis(100);

/// One near hit in this many (per thread) is timed; see [`Function::near_hit`].
pub(crate) const NEAR_HIT_TIMING: u32 = 16;

/// Whether this near hit is one of those timed.
#[inline]
fn time_this_near_hit() -> bool {
    thread_local! {
        static NEAR_HITS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    NEAR_HITS.with(|hits| {
        let n = hits.get().wrapping_add(1);
        hits.set(n);
        n % NEAR_HIT_TIMING == 1
    })
}

/// What a look in the near cache found.
enum NearProbe<T> {
    Hit(T),
    /// No copy: the near key, and the argument hash of the call's key.
    Miss(NearKey, ArgHash),
    /// The arguments do not encode (the normal path reports it).
    Unusable,
}

/// What a stored entry is worth to a call.
enum Usable<T> {
    Fresh(T),
    Stale(T),
    Missing,
}

/// Limits a call applies when judging a stored value. A value is fresh while
/// `now - stored_at < limit`: a limit of zero never serves a stored value.
#[derive(Clone, Copy)]
struct Freshness {
    /// The oldest a fresh value may be: min(stale_after, max_age).
    stale_after: Option<Duration>,
    /// The call's own `max_age`: a hard limit, past which a value is not served even stale
    /// (under `next_time`).
    max_age: Option<Duration>,
    /// With `overwrite_cache`: only values stored after the millisecond the call began count.
    stored_since: Option<Timestamp>,
}

impl Function {
    async fn run<A, T, E, F, Fut>(
        &self,
        opts: CallOptions,
        args: &A,
        compute: F,
    ) -> Result<Computed<T, E>>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Computed<T, E>> + Send + 'static,
    {
        let refresh: Refresh<F> = Function::refresh_in_background::<T, E, F, Fut>;
        let (key, near_key, started) = match self.near_for(&opts) {
            None => (self.key(args), None, Instant::now()),
            Some(near) => {
                // A copy's ttl needs the time; otherwise a near hit is timed one in
                // `NEAR_HIT_TIMING` (see `Function::near_hit`).
                let clock = (near.has_ttl() || time_this_near_hit()).then(Instant::now);
                match self.near_by_args::<A, T>(near, &opts, args, clock) {
                    NearProbe::Hit(value) => return Ok(Ok(value)),
                    NearProbe::Miss(near_key, hash) => (
                        Ok(Key::new(
                            self.cache.inner.namespace.clone(),
                            self.id.clone(),
                            hash,
                        )),
                        Some(near_key),
                        clock.unwrap_or_else(Instant::now),
                    ),
                    NearProbe::Unusable => {
                        (self.key(args), None, clock.unwrap_or_else(Instant::now))
                    }
                }
            }
        };
        self.run_keyed(opts, key, near_key, started, compute, Some(refresh))
            .await
    }

    /// The near cache, if this call may use it: caching on, neither `skip_cache` nor
    /// `overwrite_cache`, the backend not skipped as unavailable.
    #[inline]
    fn near_for(&self, opts: &CallOptions) -> Option<&Near> {
        let inner = &self.cache.inner;
        let (near, _) = inner.near.as_ref()?;
        if opts.skip_cache
            || opts.overwrite_cache
            || !self.cache.is_enabled()
            || inner.health.is_open()
        {
            return None;
        }
        Some(near)
    }

    /// What a call asks of a near copy.
    #[inline]
    fn wanted(&self, opts: &CallOptions, now: Option<Instant>) -> Wanted {
        Wanted {
            allow_none: self.settings.allow_none,
            fresh_for: match (self.settings.stale_after, opts.max_age) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            now,
        }
    }

    /// Looks for a near copy by the canonical encoding of `args`; on a hit the call is done
    /// (counted and timed).
    #[inline]
    fn near_by_args<A, T>(
        &self,
        near: &Near,
        opts: &CallOptions,
        args: &A,
        started: Option<Instant>,
    ) -> NearProbe<T>
    where
        A: Serialize + ?Sized,
        T: Clone + 'static,
    {
        thread_local! {
            static ENCODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let probe = |buf: &mut Vec<u8>| {
            buf.clear();
            buf.push(near::BY_ARGS);
            buf.extend_from_slice(&self.near_number.to_le_bytes());
            if key::encode_args(args, buf).is_err() {
                // The normal path reports it.
                return NearProbe::Unusable;
            }
            let probe = near.probe(buf);
            if let Some(value) = near.get::<T>(&probe, &self.wanted(opts, started)) {
                self.near_hit(started);
                return NearProbe::Hit(value);
            }
            NearProbe::Miss(probe.to_key(), ArgHash::of_encoded(&buf[5..]))
        };
        ENCODED.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                let probed = probe(&mut buf);
                if buf.capacity() > 64 << 10 {
                    *buf = Vec::new();
                }
                probed
            }
            // Arguments whose serialization makes a cached call themselves.
            Err(_) => probe(&mut Vec::new()),
        })
    }

    /// Counts and times a call answered by the near cache, in its span. Two reads of the clock
    /// would be a quarter of such a call, so only one in [`NEAR_HIT_TIMING`] (per thread) is
    /// timed (`started` is `Some`); the others are recorded with the latest time measured for a
    /// near hit of this function.
    #[inline]
    fn near_hit(&self, started: Option<Instant>) {
        let inner = &self.cache.inner;
        let span = tracing::debug_span!(
            "cachier.call",
            function = %self.id,
            namespace = %inner.namespace,
            backend = inner.core.name(),
            outcome = tracing::field::Empty,
        );
        span.record("outcome", Outcome::Hit.as_str());
        self.maybe_clean_up();
        self.counters.count(Event::Hit);
        let took = match started {
            Some(started) => {
                let took = started.elapsed();
                self.counters.near_hit_took(took);
                took
            }
            None => self.counters.near_hit_time(),
        };
        self.counters.record_latency(took, Outcome::Hit);
    }

    /// [`Function::run`] with the key already made, for compute steps that need not be
    /// `'static`; `refresh` is `None` for one that cannot outlive the call. `near_key`: the
    /// near cache was looked in under this key, and missed; `None`: not looked in yet.
    async fn run_keyed<T, E, F, Fut>(
        &self,
        opts: CallOptions,
        key: Result<Key>,
        near_key: Option<NearKey>,
        started: Instant,
        compute: F,
        refresh: Option<Refresh<F>>,
    ) -> Result<Computed<T, E>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Computed<T, E>>,
    {
        let near_key = match (near_key, &key, self.near_for(&opts)) {
            (Some(near_key), _, _) => Some(near_key),
            (None, Ok(key), Some(near)) => {
                let bytes = near::key_bytes(self.near_number, &key.hash);
                let probe = near.probe(&bytes);
                if let Some(value) = near.get::<T>(&probe, &self.wanted(&opts, Some(started))) {
                    self.near_hit(Some(started));
                    return Ok(Ok(value));
                }
                Some(probe.to_key())
            }
            (None, _, _) => None,
        };
        let outcome = CallOutcome::new();
        let inner = &self.cache.inner;
        let span = tracing::debug_span!(
            "cachier.call",
            function = %self.id,
            namespace = %inner.namespace,
            backend = inner.core.name(),
            outcome = tracing::field::Empty,
        );
        // With no subscriber listening the span is disabled: await the call as it is, since
        // wrapping its (large) future in `Instrumented` costs a copy of it on every call.
        let near = near_key.map(|key| (key, started));
        let out = if span.is_disabled() {
            self.run_uninstrumented(opts, key, near, compute, refresh, &outcome)
                .await
        } else {
            self.run_uninstrumented(opts, key, near, compute, refresh, &outcome)
                .instrument(span.clone())
                .await
        };
        if out.is_err() {
            outcome.set(Outcome::Error);
        }
        let outcome = outcome.get();
        span.record("outcome", outcome.as_str());
        self.counters.record_latency(started.elapsed(), outcome);
        out
    }

    async fn run_uninstrumented<T, E, F, Fut>(
        &self,
        opts: CallOptions,
        key: Result<Key>,
        near_key: Option<(NearKey, Instant)>,
        compute: F,
        refresh: Option<Refresh<F>>,
        out: &CallOutcome,
    ) -> Result<Computed<T, E>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Computed<T, E>>,
    {
        if opts.skip_cache || !self.cache.is_enabled() {
            self.bypass(out);
            return Ok(compute().await);
        }
        let key = match key {
            Ok(key) => key,
            Err(err) if self.settings.strict => return Err(err),
            Err(err) => {
                tracing::warn!(func = %self.id, error = %err, "arguments not hashable; computing without the cache");
                self.bypass(out);
                return Ok(compute().await);
            }
        };
        let inner = &self.cache.inner;
        if inner.health.is_open() {
            // The backend failed at the connection level and has not answered since: skip it.
            if self.settings.strict {
                return Err(inner.health.open_error(inner.core.as_ref(), "call"));
            }
            inner.health.skipped(&inner.core, &inner.namespace);
            self.bypass(out);
            return Ok(compute().await);
        }
        self.maybe_clean_up();
        let freshness = Freshness {
            stale_after: match (self.settings.stale_after, opts.max_age) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            max_age: opts.max_age,
            stored_since: opts.overwrite_cache.then(Timestamp::now),
        };
        let core = &inner.core;

        if !opts.overwrite_cache {
            // A copy read now may be kept only if no change is reported meanwhile.
            let ticket = self.near_ticket(near_key.is_some());
            // The claim matters on this first read only to `next_time` (no refresh while one
            // runs); otherwise the cheaper value-only read serves the hit.
            let read = self.seen(if self.settings.next_time {
                core.get(&key).await
            } else {
                core.get_value(&key).await
            });
            let stored_len = match &read {
                Ok(Some(Entry {
                    value: Some(bytes), ..
                })) => bytes.len(),
                _ => 0,
            };
            match read {
                Err(err) => {
                    self.backend_error("get", &key, err, out)?;
                    return self.compute_unclaimed(&key, compute, false, out).await;
                }
                Ok(mut entry) => match self.judge(&key, entry.as_mut(), freshness) {
                    Usable::Fresh(value) => {
                        if let (Some((near_key, read_at)), Some(ticket), Some(entry)) =
                            (&near_key, ticket, &entry)
                        {
                            self.keep_near(
                                near_key,
                                &key,
                                ticket,
                                *read_at,
                                (entry.stored_at, stored_len),
                                &value,
                            );
                        }
                        self.counters.count(Event::Hit);
                        out.set(Outcome::Hit);
                        return Ok(Ok(value));
                    }
                    Usable::Stale(value) if self.settings.next_time && refresh.is_some() => {
                        self.counters.count(Event::StaleHit);
                        out.set(Outcome::Stale);
                        if let Some(refresh) = refresh
                            && !entry.as_ref().is_some_and(Entry::is_claimed)
                        {
                            refresh(self, key, compute);
                        }
                        return Ok(Ok(value));
                    }
                    Usable::Stale(_) | Usable::Missing => {}
                },
            }
        }
        self.claim_and_compute(key, freshness, compute, out).await
    }

    /// Steps 4 and 5: claim the key and compute, or wait for whoever holds it.
    async fn claim_and_compute<T, E, F, Fut>(
        &self,
        key: Key,
        freshness: Freshness,
        compute: F,
        out: &CallOutcome,
    ) -> Result<Computed<T, E>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Computed<T, E>>,
    {
        let core = &self.cache.inner.core;
        let lease = self.settings.lease;
        let deadline = self
            .settings
            .wait_for_calc_timeout
            .map(|t| tokio::time::Instant::now() + t);
        let mut waited = false;
        let mut spin_pause = SPIN_PAUSE_MIN;
        loop {
            let until = match self.seen(core.claim(&key, lease).await) {
                Err(err) => {
                    self.backend_error("claim", &key, err, out)?;
                    return self.compute_unclaimed(&key, compute, false, out).await;
                }
                Ok(Claim::Acquired(token)) => {
                    // Between our read and this claim, another caller may have stored its
                    // value and ended its claim: look once more before computing again.
                    if let Ok(mut entry) = self.seen(core.get(&key).await)
                        && let Usable::Fresh(value) =
                            self.judge_reporting(&key, entry.as_mut(), freshness, false)
                    {
                        if let Err(err) = core.release(&key, &token).await {
                            tracing::warn!(key = %key, error = %err, "claim release failed; it ends with its lease");
                        }
                        self.counters.count(Event::Hit);
                        out.set(if waited {
                            Outcome::Waited
                        } else {
                            Outcome::Hit
                        });
                        return Ok(Ok(value));
                    }
                    self.counters.count(Event::Miss);
                    out.set(Outcome::Miss);
                    return self.compute_claimed(key, token, compute, out).await;
                }
                Ok(Claim::Held { until }) => until,
            };
            if !waited {
                waited = true;
                self.counters.count(Event::Wait);
            }
            // Wait until the holder's lease would end (a little past it, to let a renewal
            // land), then look again: a live holder keeps renewing, a dead one does not.
            let mut chunk =
                (until.remaining() + Duration::from_millis(50)).max(Duration::from_millis(10));
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    self.counters.count(Event::WaitTimeout);
                    tracing::debug!(key = %key, "waited wait_for_calc_timeout for another caller; computing");
                    return self.compute_unclaimed(&key, compute, true, out).await;
                }
                chunk = chunk.min(left);
            }
            let waited_from = tokio::time::Instant::now();
            match self.seen(core.wait(&key, chunk).await) {
                Err(err) => {
                    self.backend_error("wait", &key, err, out)?;
                    return self.compute_unclaimed(&key, compute, false, out).await;
                }
                Ok(mut entry) => {
                    if let Usable::Fresh(value) = self.judge(&key, entry.as_mut(), freshness) {
                        self.counters.count(Event::Hit);
                        out.set(Outcome::Waited);
                        return Ok(Ok(value));
                    }
                }
            }
            // A claim refused again and again with a wait that returns at once (a holder that
            // keeps failing, or a backend that misreports its claims) must not spin: pause,
            // longer each time, before claiming again.
            if waited_from.elapsed() < SPIN_PAUSE_MIN {
                tokio::time::sleep(spin_pause).await;
                spin_pause = (spin_pause * 2).min(SPIN_PAUSE_MAX);
            }
        }
    }

    /// Computes while holding the claim: renews the lease meanwhile, stores the result, and
    /// ends the claim on every path (the guard releases it on error, panic or cancellation).
    async fn compute_claimed<T, E, F, Fut>(
        &self,
        key: Key,
        token: ClaimToken,
        compute: F,
        out: &CallOutcome,
    ) -> Result<Computed<T, E>>
    where
        T: Serialize + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Computed<T, E>>,
    {
        let guard = ClaimGuard::new(
            self.cache.inner.core.clone(),
            key,
            token,
            self.settings.lease,
        );
        self.counters.count(Event::Computation);
        let result = compute().await;
        match result {
            Ok(value) => {
                let stored = self.store(&guard.key, &value, out).await;
                if matches!(stored, Ok(true)) {
                    guard.disarm();
                } else {
                    guard.release().await;
                }
                stored.map(|_| Ok(value))
            }
            Err(err) => {
                guard.release().await;
                Ok(Err(err))
            }
        }
    }

    /// Computes without a claim: the backend failed, or waiting for another caller timed out
    /// (then the result is stored too).
    async fn compute_unclaimed<T, E, F, Fut>(
        &self,
        key: &Key,
        compute: F,
        store: bool,
        out: &CallOutcome,
    ) -> Result<Computed<T, E>>
    where
        T: Serialize + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Computed<T, E>>,
    {
        self.counters.count(Event::Miss);
        self.counters.count(Event::Computation);
        out.set(Outcome::Miss);
        let result = compute().await;
        if store && let Ok(value) = &result {
            self.store(key, value, out).await?;
        }
        Ok(result)
    }

    /// Step 3's refresh: claim and recompute in a background task, unless someone else is.
    fn refresh_in_background<T, E, F, Fut>(&self, key: Key, compute: F)
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Computed<T, E>> + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move {
            // The refresh is no call of its own: its outcome goes nowhere.
            let out = CallOutcome::new();
            let claimed = this.cache.inner.core.claim(&key, this.settings.lease).await;
            match this.seen(claimed) {
                Ok(Claim::Acquired(token)) => {
                    if let Err(err) = this.compute_claimed(key, token, compute, &out).await {
                        tracing::warn!(func = %this.id, error = %err, "background refresh failed");
                    }
                }
                Ok(Claim::Held { .. }) => {}
                Err(err) => {
                    let _ = this.backend_error("claim", &key, err, &out);
                }
            }
        });
    }

    /// Stores encoded bytes as computed now, with the store-side expiry the settings ask for,
    /// and drops the near copy of the key.
    async fn store_bytes(&self, core: &Arc<dyn Core>, key: &Key, bytes: Bytes) -> Result<()> {
        let stored = match self.settings.store_expiry() {
            None => core.set(key, bytes, Timestamp::now()).await,
            Some(expire) => {
                core.set_expiring(key, bytes, Timestamp::now(), expire)
                    .await
            }
        };
        self.changed(Change::Entry(key));
        stored
    }

    /// The near cache's ticket, taken before a backend read whose value may be kept.
    fn near_ticket(&self, wanted: bool) -> Option<Ticket> {
        match &self.cache.inner.near {
            Some((near, _)) if wanted => Some(near.ticket()),
            _ => None,
        }
    }

    /// Keeps a fresh value read from the backend as a near copy.
    fn keep_near<T: Serialize + Clone + Send + Sync + 'static>(
        &self,
        near_key: &NearKey,
        key: &Key,
        ticket: Ticket,
        read_at: Instant,
        (stored_at, stored_len): (Timestamp, usize),
        value: &T,
    ) {
        let Some((near, _)) = &self.cache.inner.near else {
            return;
        };
        near.put(
            near_key,
            (self.near_number, key.hash),
            ticket,
            read_at,
            stored_at,
            stored_len,
            self.settings.allow_none && is_none(value),
            value.clone(),
        );
    }

    /// Encodes and stores a computed value. `Ok(true)` if it was stored (which also ended any
    /// claim), `Ok(false)` if it was deliberately not stored or the backend failed (logged).
    async fn store<T: Serialize + Sync + 'static>(
        &self,
        key: &Key,
        value: &T,
        out: &CallOutcome,
    ) -> Result<bool> {
        if !self.settings.allow_none && is_none(value) {
            return Ok(false);
        }
        let bytes = match codec::seal_value(value) {
            Ok(bytes) => bytes,
            Err(err) if self.settings.strict => return Err(err.with_key(key)),
            Err(err) => {
                tracing::warn!(key = %key, error = %err, "result not stored: it does not serialize");
                return Ok(false);
            }
        };
        let backend_limit = self.cache.inner.core.capabilities().max_value_bytes;
        let limit = match (self.settings.entry_size_limit, backend_limit) {
            (Some(a), Some(b)) => Some(a.min(usize::try_from(b).unwrap_or(usize::MAX))),
            (a, b) => a.or(b.map(|b| usize::try_from(b).unwrap_or(usize::MAX))),
        };
        if let Some(limit) = limit
            && bytes.len() > limit
        {
            self.counters.count(Event::SizeLimitRejection);
            let msg = format!(
                "result of {} bytes not stored: the limit is {limit} bytes",
                bytes.len()
            );
            if self.settings.strict {
                return Err(Error::too_large(msg).with_operation("set").with_key(key));
            }
            tracing::debug!(key = %key, "{msg}");
            return Ok(false);
        }
        let stored = self
            .store_bytes(&self.cache.inner.core, key, Bytes::from(bytes))
            .await;
        match self.seen(stored) {
            Ok(()) => Ok(true),
            Err(err) => self.backend_error("set", key, err, out).map(|()| false),
        }
    }

    /// Decodes an entry and judges it against the call's freshness limits.
    fn judge<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static>(
        &self,
        key: &Key,
        entry: Option<&mut Entry>,
        freshness: Freshness,
    ) -> Usable<T> {
        self.judge_reporting(key, entry, freshness, true)
    }

    /// [`Function::judge`]; `report_corrupt` false for a second look at an entry already
    /// reported.
    fn judge_reporting<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static>(
        &self,
        key: &Key,
        entry: Option<&mut Entry>,
        freshness: Freshness,
        report_corrupt: bool,
    ) -> Usable<T> {
        // The stored bytes are taken out of the entry: a byte buffer or string read into a
        // buffer of its own becomes the value without a copy.
        let Some((bytes, stored_at)) = entry.and_then(|e| e.value.take().map(|v| (v, e.stored_at)))
        else {
            return Usable::Missing;
        };
        let value: T = match codec::open_value::<T>(bytes, self.settings.decode_limit) {
            Ok(value) => value,
            Err(err) => {
                if report_corrupt {
                    self.counters.count(Event::CorruptEntry);
                    tracing::warn!(key = %key, error = %err, "stored value does not decode; treating it as a miss");
                }
                return Usable::Missing;
            }
        };
        if !self.settings.allow_none && is_none(&value) {
            return Usable::Missing;
        }
        let age = stored_at.elapsed();
        if freshness.max_age.is_some_and(|limit| age >= limit) {
            // Older than the call accepts at all: not even a stale value to serve.
            return Usable::Missing;
        }
        let too_old = freshness.stale_after.is_some_and(|limit| age >= limit);
        let too_early = freshness
            .stored_since
            .is_some_and(|since| stored_at <= since);
        if too_old || too_early {
            Usable::Stale(value)
        } else {
            Usable::Fresh(value)
        }
    }

    /// Counts a call that skips the cache and computes.
    fn bypass(&self, out: &CallOutcome) {
        self.counters.count(Event::Bypassed);
        self.counters.count(Event::Computation);
        out.set(Outcome::Bypassed);
    }

    /// Counts and logs a backend error; returns it with `strict`.
    fn backend_error(
        &self,
        operation: &'static str,
        key: &Key,
        err: Error,
        out: &CallOutcome,
    ) -> Result<()> {
        let kind = err.kind();
        self.counters.backend_error(kind, operation);
        out.set(Outcome::Error);
        let backend = self.cache.inner.core.name();
        let kind = telemetry::error_kind_label(kind);
        if self.settings.strict {
            // The caller gets the error (and logs it as it sees fit).
            tracing::debug!(backend, operation, kind, key = %key, error = %err, "cache backend failed");
            return Err(err);
        }
        tracing::warn!(
            backend,
            operation,
            kind,
            key = %key,
            error = %err,
            "cache backend failed; computing without it"
        );
        Ok(())
    }

    /// Starts a background `delete_stale` when the interval passed and `cleanup_stale` is on
    /// (values older than `stale_after` go) or `expire_after` is set (values older than their
    /// expiry go, for backends that do not expire them on their own).
    fn maybe_clean_up(&self) {
        let settings = &self.settings;
        let stale_after = match (settings.cleanup_stale, settings.stale_after) {
            (true, Some(stale_after)) => stale_after,
            _ => match settings.store_expiry() {
                Some(expire) => expire,
                None => return,
            },
        };
        if self.cache.inner.health.is_open() {
            return;
        }
        let now = Timestamp::now().as_millis();
        let last = self.counters.last_cleanup_ms.load(Ordering::Relaxed);
        let interval = self.settings.cleanup_interval.as_millis() as u64;
        if now.saturating_sub(last) < interval
            || self
                .counters
                .last_cleanup_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let core = self.cache.inner.core.clone();
        let namespace = self.cache.inner.namespace.clone();
        let func = self.id.clone();
        let counters = self.counters.clone();
        tokio::spawn(async move {
            let before = Timestamp(now).sub(stale_after);
            match core.delete_stale(&namespace, &func, before).await {
                Ok(n) => {
                    counters.count_n(Event::Expiration, n);
                    tracing::debug!(func = %func, removed = n, "stale values cleaned up");
                }
                Err(err) => tracing::warn!(func = %func, error = %err, "stale cleanup failed"),
            }
        });
    }
}

/// Holds a claim while the user's function runs: renews the lease every third of its length,
/// and releases the claim when dropped without [`ClaimGuard::disarm`] — on an error, a panic
/// unwinding through the call, or the call's future being dropped.
struct ClaimGuard {
    core: Arc<dyn Core>,
    key: Key,
    token: Option<ClaimToken>,
    renewer: tokio::task::JoinHandle<()>,
}

impl ClaimGuard {
    fn new(core: Arc<dyn Core>, key: Key, token: ClaimToken, lease: Duration) -> Self {
        let renewer = {
            let (core, key, token) = (core.clone(), key.clone(), token.clone());
            let every = (lease / 3).max(Duration::from_millis(10));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match core.renew(&key, &token, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(key = %key, "claim lost while computing (lease expired?)");
                            return;
                        }
                        Err(err) => {
                            tracing::warn!(key = %key, error = %err, "claim renewal failed")
                        }
                    }
                }
            })
        };
        ClaimGuard {
            core,
            key,
            token: Some(token),
            renewer,
        }
    }

    /// The claim ended by other means (a `set`): stop renewing, release nothing.
    fn disarm(mut self) {
        self.token = None;
    }

    /// Stops renewing and releases the claim now.
    async fn release(mut self) {
        self.renewer.abort();
        if let Some(token) = self.token.take()
            && let Err(err) = self.core.release(&self.key, &token).await
        {
            tracing::warn!(key = %self.key, error = %err, "claim release failed; it ends with its lease");
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.renewer.abort();
        let Some(token) = self.token.take() else {
            return;
        };
        let (core, key) = (self.core.clone(), self.key.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(err) = core.release(&key, &token).await {
                        tracing::warn!(key = %key, error = %err, "claim release failed; it ends with its lease");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(key = %key, "no runtime to release the claim; it ends with its lease");
            }
        }
    }
}
