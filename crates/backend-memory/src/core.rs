//! The [`Core`] impl: values in a bounded `moka` cache, claims and waiters in a map of their own.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use cachier_core::{
    Bytes, Capabilities, Change, Claim, ClaimToken, Core, Entry, FuncId, Key, Namespace, Result,
    Timestamp, Usage, Watcher, Watching, async_trait,
};
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use tokio::sync::Notify;

use crate::config::Config;
use cachier_core::SeededFold;

/// An in-process [`Core`]. Cheap to share behind an `Arc`; every clone of the `Arc` sees the
/// same entries. See the [crate docs](crate) for the layout and the bound.
pub struct MemoryCore {
    values: Values,
    claims: RwLock<Claims>,
    counters: Arc<Counters>,
    watchers: Arc<Watchers>,
    config: Config,
}

type Values = moka::sync::Cache<Key, Stored, SeededFold>;

/// One stored value.
#[derive(Clone)]
struct Stored {
    value: Bytes,
    stored_at: Timestamp,
}

/// The live (and recently ended) claims, with the waiters of each key.
struct Claims {
    map: HashMap<Key, Lease, SeededFold>,
    /// Past this many slots, the next `claim` first drops the slots whose lease ran out
    /// unreleased (a holder that vanished without `release`), so they cannot pile up.
    sweep_at: usize,
}

const SWEEP_FLOOR: usize = 1024;

#[derive(Default)]
struct Lease {
    claim: Option<(ClaimToken, Timestamp)>,
    waiters: Option<Arc<Notify>>,
}

impl Lease {
    fn live_until(&self, now: Timestamp) -> Option<Timestamp> {
        self.claim
            .as_ref()
            .map(|(_, until)| *until)
            .filter(|until| *until > now)
    }

    /// Wakes everyone waiting on this key.
    fn wake(&self) {
        if let Some(waiters) = &self.waiters {
            waiters.notify_waiters();
        }
    }
}

/// The watchers of the store (see [`Core::watch`]), each with the namespace it watches. Every
/// change is reported after it is made and before the operation that made it returns.
#[derive(Default)]
struct Watchers {
    list: RwLock<Vec<(Namespace, Weak<dyn Watcher>)>>,
    /// Whether any watcher was ever added: a store nobody watches skips the lock.
    any: AtomicBool,
}

impl Watchers {
    fn add(&self, namespace: &Namespace, watcher: Weak<dyn Watcher>) {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        // Watchers of caches dropped since go now.
        list.retain(|(_, w)| w.strong_count() > 0);
        list.push((namespace.clone(), watcher));
        self.any.store(true, std::sync::atomic::Ordering::Release);
    }

    fn report(&self, namespace: &Namespace, change: Change<'_>) {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        for (watched, watcher) in list.iter() {
            if watched == namespace
                && let Some(watcher) = watcher.upgrade()
            {
                watcher.changed(change);
            }
        }
    }
}

#[derive(Default)]
struct Counters {
    evictions: AtomicU64,
    expirations: AtomicU64,
}

/// What the store has done since it was made, as returned by [`MemoryCore::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Values removed to keep the store within its bound (including new values the eviction
    /// policy declined to admit over ones used more often).
    pub evictions: u64,
    /// Values removed because they were stale or expired ([`Core::delete_stale`], which the
    /// front end calls under `cleanup_stale` or `expire_after`).
    pub expirations: u64,
    /// The values stored now, as the eviction policy counts them (exact once its pending work
    /// is done; [`MemoryCore::len`] does it).
    pub entries: u64,
    /// The weight of the stored values as the bound counts it: bytes with key and overhead
    /// under a byte bound, values under a bound by count alone.
    pub weighted_size: u64,
}

impl Default for MemoryCore {
    fn default() -> Self {
        MemoryCore::with_config(Config::default())
    }
}

impl MemoryCore {
    /// An empty store with the default bound ([`DEFAULT_MAX_BYTES`](crate::DEFAULT_MAX_BYTES)).
    pub fn new() -> Self {
        MemoryCore::default()
    }

    /// An empty store bounded as `config` says.
    pub fn with_config(config: Config) -> Self {
        let counters = Arc::new(Counters::default());
        let watchers = Arc::new(Watchers::default());
        let mut builder = moka::sync::Cache::builder();
        if let Some((capacity, weigh)) = config.capacity() {
            builder = builder
                .max_capacity(capacity)
                .weigher(move |key: &Key, stored: &Stored| {
                    let key_bytes = key.namespace.as_str().len() + key.func.as_str().len() + 64;
                    weigh.weight((stored.value.len() + key_bytes) as u64)
                });
        }
        let seen = counters.clone();
        let values = builder
            .eviction_listener(move |_key, _value, cause| {
                // Not reported to watchers: an evicted value did not change, so a near copy of
                // it is still the value (the front end's near cache is bounded on its own).
                // Reporting it would drop the copies of a hot set whose reads the near cache
                // answers, which the eviction policy then never sees, and evict it again and
                // again (tests/bounded.rs).
                if cause == RemovalCause::Size {
                    seen.evictions.fetch_add(1, Relaxed);
                }
            })
            .build_with_hasher(SeededFold::default());
        MemoryCore {
            values,
            claims: RwLock::new(Claims {
                map: HashMap::default(),
                sweep_at: SWEEP_FLOOR,
            }),
            counters,
            watchers,
            config,
        }
    }

    /// The bound this store was made with.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The number of stored values (all namespaces), after the eviction policy's pending work.
    pub fn len(&self) -> usize {
        self.values.run_pending_tasks();
        self.values.iter().count()
    }

    /// Whether no value is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evictions, expirations and size of the store.
    pub fn stats(&self) -> MemoryStats {
        MemoryStats {
            evictions: self.counters.evictions.load(Relaxed),
            expirations: self.counters.expirations.load(Relaxed),
            entries: self.values.entry_count(),
            weighted_size: self.values.weighted_size(),
        }
    }

    /// Does the eviction policy's pending work now (it otherwise runs in small batches during
    /// reads and writes): afterwards the store is within its bound and [`MemoryStats`] is exact.
    pub fn run_pending_tasks(&self) {
        self.values.run_pending_tasks();
    }

    fn read(&self) -> RwLockReadGuard<'_, Claims> {
        // A panic while holding the lock cannot leave a lease half-written (every update is a
        // single assignment), so a poisoned lock is still consistent.
        self.claims.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Claims> {
        self.claims.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of `key` with the claim expiry given (already judged live).
    fn entry(&self, key: &Key, claim_until: Option<Timestamp>) -> Option<Entry> {
        let stored = self.values.get(key);
        if stored.is_none() && claim_until.is_none() {
            return None;
        }
        let (value, stored_at) = match stored {
            Some(s) => (Some(s.value), s.stored_at),
            None => (None, Timestamp::default()),
        };
        Some(Entry {
            value,
            stored_at,
            claim_until,
        })
    }

    /// Removes the values whose key matches `doomed`; returns how many there were.
    fn remove_values_where(&self, doomed: impl Fn(&Key) -> bool) -> u64 {
        let keys: Vec<Arc<Key>> = self
            .values
            .iter()
            .filter_map(|(key, _)| doomed(&key).then_some(key))
            .collect();
        keys.iter()
            .map(|key| u64::from(self.values.remove(key.as_ref()).is_some()))
            .sum()
    }

    /// Ends the claims (and wakes the waiters) of the keys matching `doomed`; returns how many
    /// of them were live.
    fn end_claims_where(&self, doomed: impl Fn(&Key) -> bool) -> u64 {
        let now = Timestamp::now();
        let mut ended = 0;
        self.write().map.retain(|key, lease| {
            if !doomed(key) {
                return true;
            }
            ended += u64::from(lease.live_until(now).is_some());
            lease.wake();
            false
        });
        ended
    }
}

#[async_trait]
impl Core for MemoryCore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cross_process: false,
            native_wakeup: true,
            persistent: false,
            max_value_bytes: None,
        }
    }

    fn watch(&self, namespace: &Namespace, watcher: Weak<dyn Watcher>) -> Watching {
        self.watchers.add(namespace, watcher);
        Watching::Synchronous
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        // The claim is read first and its lock held while the value is read: a `set` stores
        // its value before it ends the claim, so no read sees neither.
        let claims = self.read();
        let claim_until = claims
            .map
            .get(key)
            .and_then(|lease| lease.claim.as_ref())
            .map(|(_, until)| *until)
            .filter(|until| *until > Timestamp::now());
        let entry = self.entry(key, claim_until);
        drop(claims);
        Ok(entry)
    }

    async fn get_value(&self, key: &Key) -> Result<Option<Entry>> {
        Ok(self.values.get(key).map(|s| Entry {
            value: Some(s.value),
            stored_at: s.stored_at,
            claim_until: None,
        }))
    }

    async fn set(&self, key: &Key, value: Bytes, stored_at: Timestamp) -> Result<()> {
        self.values.insert(key.clone(), Stored { value, stored_at });
        self.watchers.report(&key.namespace, Change::Entry(key));
        let ends_claim = self.read().map.contains_key(key);
        if ends_claim && let Some(lease) = self.write().map.remove(key) {
            lease.wake();
        }
        Ok(())
    }

    async fn claim(&self, key: &Key, lease: Duration) -> Result<Claim> {
        let now = Timestamp::now();
        let mut claims = self.write();
        if claims.map.len() >= claims.sweep_at {
            // A waiter on a dropped slot is already awake: it sleeps at most until the lease end.
            claims.map.retain(|_, l| l.live_until(now).is_some());
            claims.sweep_at = (claims.map.len() * 2).max(SWEEP_FLOOR);
        }
        let slot = claims.map.entry(key.clone()).or_default();
        if let Some(until) = slot.live_until(now) {
            return Ok(Claim::Held { until });
        }
        let token = ClaimToken::generate();
        slot.claim = Some((token.clone(), now.add(lease)));
        Ok(Claim::Acquired(token))
    }

    async fn renew(&self, key: &Key, token: &ClaimToken, lease: Duration) -> Result<bool> {
        let now = Timestamp::now();
        let mut claims = self.write();
        let Some(slot) = claims.map.get_mut(key) else {
            return Ok(false);
        };
        match &mut slot.claim {
            Some((held, until)) if held == token && *until > now => {
                *until = now.add(lease);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, key: &Key, token: &ClaimToken) -> Result<()> {
        let mut claims = self.write();
        if claims
            .map
            .get(key)
            .and_then(|lease| lease.claim.as_ref())
            .is_some_and(|(held, _)| held == token)
            && let Some(lease) = claims.map.remove(key)
        {
            lease.wake();
        }
        Ok(())
    }

    async fn wait(&self, key: &Key, timeout: Duration) -> Result<Option<Entry>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (notify, until) = {
                let mut claims = self.write();
                let now = Timestamp::now();
                let Some(slot) = claims.map.get_mut(key) else {
                    return Ok(self.entry(key, None));
                };
                let Some(until) = slot.live_until(now) else {
                    return Ok(self.entry(key, None));
                };
                if tokio::time::Instant::now() >= deadline {
                    return Ok(self.entry(key, Some(until)));
                }
                let waiters = slot.waiters.get_or_insert_with(Default::default).clone();
                (waiters, until)
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            // Register before the lock is gone for good: a wake-up between here and the await
            // is kept by the enabled future.
            notified.as_mut().enable();
            let lease_end = tokio::time::Instant::now() + until.remaining();
            // The key may have changed between dropping the lock and enabling the future;
            // re-check once cheaply before sleeping.
            let changed = self
                .read()
                .map
                .get(key)
                .is_none_or(|lease| lease.live_until(Timestamp::now()).is_none());
            if !changed {
                let wake_at = deadline.min(lease_end + Duration::from_millis(1));
                let _ = tokio::time::timeout_at(wake_at, notified).await;
            }
        }
    }

    async fn remove(&self, key: &Key) -> Result<bool> {
        if let Some(lease) = self.write().map.remove(key) {
            lease.wake();
        }
        let removed = self.values.remove(key).is_some();
        self.watchers.report(&key.namespace, Change::Entry(key));
        Ok(removed)
    }

    async fn clear(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let matches = |k: &Key| &k.namespace == namespace && &k.func == func;
        self.end_claims_where(matches);
        let removed = self.remove_values_where(matches);
        self.watchers.report(namespace, Change::Function(func));
        Ok(removed)
    }

    async fn clear_claims(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        Ok(self.end_claims_where(|k| &k.namespace == namespace && &k.func == func))
    }

    async fn delete_stale(
        &self,
        namespace: &Namespace,
        func: &FuncId,
        stored_before: Timestamp,
    ) -> Result<u64> {
        let stale: Vec<Arc<Key>> = self
            .values
            .iter()
            .filter(|(k, s)| {
                &k.namespace == namespace && &k.func == func && s.stored_at < stored_before
            })
            .map(|(k, _)| k)
            .collect();
        let mut removed = 0;
        for key in stale {
            // Judged again under the key's own lock: a value stored since the scan stays.
            let outcome = self
                .values
                .entry(Key::clone(&key))
                .and_compute_with(|current| match current {
                    Some(e) if e.value().stored_at < stored_before => Op::Remove,
                    _ => Op::Nop,
                });
            if matches!(outcome, CompResult::Removed(_)) {
                removed += 1;
                self.watchers.report(namespace, Change::Entry(&key));
            }
        }
        self.counters.expirations.fetch_add(removed, Relaxed);
        Ok(removed)
    }

    async fn clear_namespace(&self, namespace: &Namespace) -> Result<u64> {
        let matches = |k: &Key| &k.namespace == namespace;
        self.end_claims_where(matches);
        let removed = self.remove_values_where(matches);
        self.watchers.report(namespace, Change::Namespace);
        Ok(removed)
    }

    /// Counts the namespace's values and their bytes in one pass over the store (no copy of a
    /// value; a store of a million values takes some tens of milliseconds).
    async fn usage(&self, namespace: &Namespace) -> Result<Usage> {
        let (mut entries, mut bytes) = (0u64, 0u64);
        for (key, stored) in self.values.iter() {
            if &key.namespace == namespace {
                entries += 1;
                bytes += stored.value.len() as u64;
            }
        }
        Ok(Usage {
            entries: Some(entries),
            bytes: Some(bytes),
        })
    }
}
