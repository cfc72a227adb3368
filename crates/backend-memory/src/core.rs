//! The [`Core`] impl: values in a map of their own, read exactly and fast; a bounded `moka`
//! cache of tickets (key, weight) as the eviction policy; claims and waiters in a third map.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use cachier_core::{
    Bytes, Capabilities, Claim, ClaimToken, Core, Entry, FuncId, Key, Namespace, Result, Timestamp,
    async_trait,
};
use moka::notification::RemovalCause;
use tokio::sync::Notify;

use crate::config::{Config, Weigh};
use crate::hasher::SeededFold;

/// An in-process [`Core`]. Cheap to share behind an `Arc`; every clone of the `Arc` sees the
/// same entries. See the [crate docs](crate) for the layout and the bound.
pub struct MemoryCore {
    values: RwLock<Values>,
    /// The eviction policy, `None` without a bound.
    policy: Option<Policy>,
    /// How the policy weighs a value.
    weigh: Weigh,
    /// Tickets the policy evicted, whose values are still to be dropped.
    evicted: Arc<Evicted>,
    /// Tells the versions of one key apart, so an eviction drops only the value it was for.
    stamps: AtomicU64,
    claims: RwLock<Claims>,
    counters: Arc<Counters>,
    config: Config,
}

type Values = HashMap<Key, Stored, SeededFold>;
type Policy = moka::sync::Cache<Key, Ticket, SeededFold>;

/// One stored value.
struct Stored {
    value: Bytes,
    stored_at: Timestamp,
    stamp: u64,
}

/// What the policy holds for a stored value: its version and its weight.
#[derive(Clone, Copy)]
struct Ticket {
    stamp: u64,
    weight: u32,
}

/// The policy's evictions, handed from its listener (which may run inside any policy call) to
/// the next operation that may take the values' lock.
#[derive(Default)]
struct Evicted {
    any: AtomicBool,
    tickets: Mutex<Vec<(Arc<Key>, u64)>>,
}

/// One read in this many tells the policy about the key (chosen at random per thread, so no
/// pattern of keys goes unseen): enough for its frequency sketch and recency order to keep a
/// hot set, at an eighth of the cost of telling it every time.
const READ_SAMPLE: u32 = 8;

thread_local! {
    static SAMPLER: Cell<u32> = Cell::new({
        let mut seed = [0u8; 4];
        let _ = getrandom::fill(&mut seed);
        u32::from_le_bytes(seed) | 1
    });
}

/// Whether this read is one the policy hears of.
fn sampled() -> bool {
    SAMPLER.with(|state| {
        // xorshift32
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        state.set(x);
        x % READ_SAMPLE == 0
    })
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
    /// The values stored now.
    pub entries: u64,
    /// The weight of the stored values as the bound counts it: bytes with key and overhead
    /// under a byte bound, values under a bound by count alone, zero without a bound. The
    /// policy updates it in batches ([`MemoryCore::run_pending_tasks`] settles it).
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
        let evicted = Arc::new(Evicted::default());
        let bound = config.capacity();
        let weigh = bound.map_or(Weigh::Count, |(_, weigh)| weigh);
        let policy = bound.map(|(capacity, _)| {
            let evicted = evicted.clone();
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(|_key: &Key, ticket: &Ticket| ticket.weight)
                .eviction_listener(move |key, ticket: Ticket, cause| {
                    if cause == RemovalCause::Size {
                        evicted
                            .tickets
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((key, ticket.stamp));
                        evicted.any.store(true, Relaxed);
                    }
                })
                .build_with_hasher(SeededFold::default())
        });
        MemoryCore {
            values: RwLock::new(HashMap::default()),
            policy,
            weigh,
            evicted,
            stamps: AtomicU64::new(0),
            claims: RwLock::new(Claims {
                map: HashMap::default(),
                sweep_at: SWEEP_FLOOR,
            }),
            counters,
            config,
        }
    }

    /// The bound this store was made with.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The number of stored values (all namespaces), after the eviction policy's pending work.
    pub fn len(&self) -> usize {
        self.run_pending_tasks();
        self.values().len()
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
            entries: self.values().len() as u64,
            weighted_size: self.policy.as_ref().map_or(0, |p| p.weighted_size()),
        }
    }

    /// Does the eviction policy's pending work now (it otherwise runs in small batches during
    /// reads and writes): afterwards the store is within its bound and [`MemoryStats`] is exact.
    pub fn run_pending_tasks(&self) {
        if let Some(policy) = &self.policy {
            policy.run_pending_tasks();
        }
        self.drop_evicted();
    }

    fn values(&self) -> RwLockReadGuard<'_, Values> {
        // A panic while holding the lock cannot leave an entry half-written (every update is
        // a single assignment), so a poisoned lock is still consistent.
        self.values.read().unwrap_or_else(|p| p.into_inner())
    }

    fn values_mut(&self) -> RwLockWriteGuard<'_, Values> {
        self.values.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, Claims> {
        self.claims.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Claims> {
        self.claims.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the values whose tickets the policy evicted, unless a newer value replaced them.
    /// Called after policy calls, never with the values' lock held by the caller.
    fn drop_evicted(&self) {
        if !self.evicted.any.swap(false, Relaxed) {
            return;
        }
        let tickets = std::mem::take(
            &mut *self
                .evicted
                .tickets
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if tickets.is_empty() {
            return;
        }
        let mut values = self.values_mut();
        let mut dropped = 0;
        for (key, stamp) in tickets {
            if values.get(key.as_ref()).is_some_and(|s| s.stamp == stamp) {
                values.remove(key.as_ref());
                dropped += 1;
            }
        }
        drop(values);
        self.counters.evictions.fetch_add(dropped, Relaxed);
    }

    /// The entry of `key` with the claim expiry given (already judged live).
    fn entry(&self, key: &Key, claim_until: Option<Timestamp>) -> Option<Entry> {
        let values = self.values();
        let stored = values.get(key);
        if stored.is_none() && claim_until.is_none() {
            return None;
        }
        let (value, stored_at) = match stored {
            Some(s) => (Some(s.value.clone()), s.stored_at),
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
        let mut removed = 0;
        self.values_mut().retain(|key, _| {
            if !doomed(key) {
                return true;
            }
            if let Some(policy) = &self.policy {
                policy.invalidate(key);
            }
            removed += 1;
            false
        });
        self.drop_evicted();
        removed
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
        let entry = self.values().get(key).map(|s| Entry {
            value: Some(s.value.clone()),
            stored_at: s.stored_at,
            claim_until: None,
        });
        if entry.is_some()
            && let Some(policy) = &self.policy
            && sampled()
        {
            let _ = policy.get(key);
            self.drop_evicted();
        }
        Ok(entry)
    }

    async fn set(&self, key: &Key, value: Bytes, stored_at: Timestamp) -> Result<()> {
        let stamp = self.stamps.fetch_add(1, Relaxed);
        let bytes = value.len() + key.namespace.as_str().len() + key.func.as_str().len() + 64;
        let ticket = Ticket {
            stamp,
            weight: self.weigh.weight(bytes as u64),
        };
        {
            // Value and ticket change together under the values' lock, so the policy's ticket
            // of a key is always that of its stored value. The policy's listener takes only
            // the `evicted` list, never this lock.
            let mut values = self.values_mut();
            values.insert(
                key.clone(),
                Stored {
                    value,
                    stored_at,
                    stamp,
                },
            );
            if let Some(policy) = &self.policy {
                policy.insert(key.clone(), ticket);
            }
        }
        self.drop_evicted();
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
        let removed = {
            let mut values = self.values_mut();
            if let Some(policy) = &self.policy {
                policy.invalidate(key);
            }
            values.remove(key).is_some()
        };
        self.drop_evicted();
        Ok(removed)
    }

    async fn clear(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let matches = |k: &Key| &k.namespace == namespace && &k.func == func;
        self.end_claims_where(matches);
        Ok(self.remove_values_where(matches))
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
        let mut removed = 0;
        self.values_mut().retain(|key, stored| {
            if &key.namespace != namespace || &key.func != func || stored.stored_at >= stored_before
            {
                return true;
            }
            if let Some(policy) = &self.policy {
                policy.invalidate(key);
            }
            removed += 1;
            false
        });
        self.drop_evicted();
        self.counters.expirations.fetch_add(removed, Relaxed);
        Ok(removed)
    }

    async fn clear_namespace(&self, namespace: &Namespace) -> Result<u64> {
        let matches = |k: &Key| &k.namespace == namespace;
        self.end_claims_where(matches);
        Ok(self.remove_values_where(matches))
    }
}
