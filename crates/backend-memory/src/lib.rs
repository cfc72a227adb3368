//! # cachier-memory
//!
//! The in-process backend of cachier for Rust: entries live in a map inside the process, claims
//! are per-key leases in the same map, and callers waiting for another caller's computation are
//! woken the moment it stores or releases (a per-key `tokio::sync::Notify`), or when its lease
//! runs out — never by polling.
//!
//! Use it for caching within one process, and as the reference implementation of the
//! [`Core`] contract: it passes the whole conformance suite except the cross-process checks,
//! which its [`Capabilities`] rule out.
//!
//! ## Layout
//!
//! One `HashMap<Key, Slot>` behind a read-write lock, where [`Key`] is namespace, function id
//! and argument hash, and a slot holds the value with its `stored_at`, the claim (token and expiry)
//! if any, and the notifier of its waiters. A slot with neither value nor claim is removed.
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//! use cachier_core::{Cachier, func_id};
//! use cachier_memory::MemoryCore;
//!
//! # #[tokio::main] async fn main() -> cachier_core::Result<()> {
//! let cache = Cachier::new(Arc::new(MemoryCore::new()));
//! let double = cache.function(func_id!("double"));
//! assert_eq!(double.call(&21u32, || async { 42u32 }).await?, 42);
//! assert_eq!(double.call(&21u32, || async { 0u32 }).await?, 42); // served from the cache
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use cachier_core::{
    Bytes, Capabilities, Claim, ClaimToken, Core, Entry, FuncId, Key, Namespace, Result, Timestamp,
    async_trait,
};
use tokio::sync::Notify;

/// An in-process [`Core`]. Cheap to share behind an `Arc`; every clone of the `Arc` sees the
/// same entries.
#[derive(Default)]
pub struct MemoryCore {
    slots: RwLock<Map>,
}

type Map = HashMap<Key, Slot, SeededFold>;

/// The map's hasher: a multiply-and-rotate fold seeded per map from the operating system's
/// random source. A hit hashes the namespace, the function id and 32 bytes of BLAKE3 output;
/// SipHash (the std default) spent about a tenth of a hit on that. The random seed keeps
/// bucket collisions from being precomputed by whoever chooses the arguments.
#[derive(Clone)]
struct SeededFold(u64);

impl Default for SeededFold {
    fn default() -> Self {
        let mut seed = [0u8; 8];
        // Without OS randomness the fold still works; only the seed is predictable.
        let _ = getrandom::fill(&mut seed);
        SeededFold(u64::from_le_bytes(seed) | 1)
    }
}

impl BuildHasher for SeededFold {
    type Hasher = Fold;

    fn build_hasher(&self) -> Fold {
        Fold(self.0)
    }
}

struct Fold(u64);

impl Fold {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for Fold {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // One more round so the last word's bits reach the low bits the table indexes by.
        (self.0 ^ (self.0 >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (self.0 >> 32)
    }
}

#[derive(Default)]
struct Slot {
    value: Option<(Bytes, Timestamp)>,
    claim: Option<(ClaimToken, Timestamp)>,
    waiters: Option<Arc<Notify>>,
}

impl Slot {
    fn live_claim(&self, now: Timestamp) -> Option<&(ClaimToken, Timestamp)> {
        self.claim.as_ref().filter(|(_, until)| *until > now)
    }

    fn entry(&self, now: Timestamp) -> Option<Entry> {
        self.entry_with(|| now)
    }

    /// Like [`Slot::entry`], reading the clock only if there is a claim to judge.
    fn entry_with(&self, now: impl FnOnce() -> Timestamp) -> Option<Entry> {
        let claim_until = match &self.claim {
            Some((_, until)) if *until > now() => Some(*until),
            _ => None,
        };
        if self.value.is_none() && claim_until.is_none() {
            return None;
        }
        let (value, stored_at) = match &self.value {
            Some((bytes, at)) => (Some(bytes.clone()), *at),
            None => (None, Timestamp::default()),
        };
        Some(Entry {
            value,
            stored_at,
            claim_until,
        })
    }

    /// Wakes everyone waiting on this key.
    fn wake(&self) {
        if let Some(waiters) = &self.waiters {
            waiters.notify_waiters();
        }
    }
}

impl MemoryCore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryCore::default()
    }

    /// The number of stored values (all namespaces).
    pub fn len(&self) -> usize {
        self.read().values().filter(|s| s.value.is_some()).count()
    }

    /// Whether no value is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> RwLockReadGuard<'_, Map> {
        // A panic while holding the lock cannot leave a slot half-written (every update is a
        // single assignment), so a poisoned lock is still consistent.
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Map> {
        self.slots.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes slots matching `doomed` (after waking their waiters) and counts their values.
    fn remove_where(&self, mut doomed: impl FnMut(&Key) -> bool) -> u64 {
        let mut removed = 0;
        self.write().retain(|key, slot| {
            if !doomed(key) {
                return true;
            }
            removed += u64::from(slot.value.is_some());
            slot.wake();
            false
        });
        removed
    }
}

/// Drops a slot that holds nothing any more.
fn prune(map: &mut Map, key: &Key, now: Timestamp) {
    if map
        .get(key)
        .is_some_and(|s| s.value.is_none() && s.live_claim(now).is_none())
    {
        map.remove(key);
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
        Ok(self
            .read()
            .get(key)
            .and_then(|slot| slot.entry_with(Timestamp::now)))
    }

    async fn set(&self, key: &Key, value: Bytes, stored_at: Timestamp) -> Result<()> {
        let mut map = self.write();
        let slot = map.entry(key.clone()).or_default();
        slot.value = Some((value, stored_at));
        slot.claim = None;
        slot.wake();
        Ok(())
    }

    async fn claim(&self, key: &Key, lease: Duration) -> Result<Claim> {
        let now = Timestamp::now();
        let mut map = self.write();
        let slot = map.entry(key.clone()).or_default();
        if let Some((_, until)) = slot.live_claim(now) {
            return Ok(Claim::Held { until: *until });
        }
        let token = ClaimToken::generate();
        slot.claim = Some((token.clone(), now.add(lease)));
        Ok(Claim::Acquired(token))
    }

    async fn renew(&self, key: &Key, token: &ClaimToken, lease: Duration) -> Result<bool> {
        let now = Timestamp::now();
        let mut map = self.write();
        let Some(slot) = map.get_mut(key) else {
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
        let now = Timestamp::now();
        let mut map = self.write();
        if let Some(slot) = map.get_mut(key)
            && slot.claim.as_ref().is_some_and(|(held, _)| held == token)
        {
            slot.claim = None;
            slot.wake();
            prune(&mut map, key, now);
        }
        Ok(())
    }

    async fn wait(&self, key: &Key, timeout: Duration) -> Result<Option<Entry>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let waiters = {
                let mut map = self.write();
                let now = Timestamp::now();
                let Some(slot) = map.get_mut(key) else {
                    return Ok(None);
                };
                let Some((_, until)) = slot.live_claim(now).cloned() else {
                    return Ok(slot.entry(now));
                };
                if tokio::time::Instant::now() >= deadline {
                    return Ok(slot.entry(now));
                }
                let waiters = slot.waiters.get_or_insert_with(Default::default).clone();
                (waiters, until)
            };
            let (notify, until) = waiters;
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
                .get(key)
                .is_none_or(|s| s.live_claim(Timestamp::now()).is_none());
            if !changed {
                let wake_at = deadline.min(lease_end + Duration::from_millis(1));
                let _ = tokio::time::timeout_at(wake_at, notified).await;
            }
        }
    }

    async fn remove(&self, key: &Key) -> Result<bool> {
        let mut map = self.write();
        Ok(match map.remove(key) {
            Some(slot) => {
                slot.wake();
                slot.value.is_some()
            }
            None => false,
        })
    }

    async fn clear(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        Ok(self.remove_where(|k| &k.namespace == namespace && &k.func == func))
    }

    async fn clear_claims(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let now = Timestamp::now();
        let mut ended = 0;
        let mut map = self.write();
        map.retain(|key, slot| {
            if &key.namespace != namespace || &key.func != func {
                return true;
            }
            if slot.claim.take().is_some_and(|(_, until)| until > now) {
                ended += 1;
                slot.wake();
            }
            slot.value.is_some()
        });
        Ok(ended)
    }

    async fn delete_stale(
        &self,
        namespace: &Namespace,
        func: &FuncId,
        stored_before: Timestamp,
    ) -> Result<u64> {
        let now = Timestamp::now();
        let mut removed = 0;
        let mut map = self.write();
        map.retain(|key, slot| {
            if &key.namespace != namespace || &key.func != func {
                return true;
            }
            if slot
                .value
                .as_ref()
                .is_some_and(|(_, at)| *at < stored_before)
            {
                slot.value = None;
                removed += 1;
            }
            slot.value.is_some() || slot.live_claim(now).is_some()
        });
        Ok(removed)
    }

    async fn clear_namespace(&self, namespace: &Namespace) -> Result<u64> {
        Ok(self.remove_where(|k| &k.namespace == namespace))
    }
}
