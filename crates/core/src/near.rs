//! The near cache: decoded values kept in process, so a hit on a backend that hands out its
//! stored bytes (the memory backend) is a lookup and a clone instead of a check and a decode.
//!
//! A near copy is keyed by the entry's [`Key`] and remembers the very [`Bytes`] it was decoded
//! from. It is served only when the backend's read returns the same allocation (same address
//! and length) again. The near copy holds a reference to those bytes, so the allocation cannot
//! be freed and reused while it is kept: equal address and length mean equal content, and the
//! decoded value is the one the stored bytes would decode to. Coherence therefore needs nothing
//! from the backend: a `set`, `remove` or `clear` from anywhere gives the next read other bytes
//! (or none), and the near copy is simply not used. Freshness is judged on the `stored_at` the
//! backend returned with the bytes, exactly as without the near cache.
//!
//! Bounded by entries and by bytes (the stored bytes' length stands for the decoded value's
//! size); when full, the oldest copies that were not used since they were last passed over are
//! evicted first (the CLOCK approximation of least-recently-used), per shard.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::key::Key;

/// Shards of the near cache: independent locks, so concurrent hits rarely wait for each other.
const SHARDS: usize = 4;

/// The bounds of a near cache (see [`CachierBuilder::near_cache`](crate::CachierBuilder::near_cache)).
///
/// ```
/// use cachier_core::NearCache;
/// let near = NearCache::new().max_entries(50_000).max_bytes(128 << 20);
/// assert_eq!(near.entries_bound(), 50_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearCache {
    max_entries: usize,
    max_bytes: usize,
}

impl NearCache {
    /// The default bounds: 10,000 decoded values and 64 MiB of stored bytes.
    pub const fn new() -> Self {
        NearCache {
            max_entries: 10_000,
            max_bytes: 64 << 20,
        }
    }

    /// No near cache: every hit decodes the stored bytes.
    pub const fn disabled() -> Self {
        NearCache {
            max_entries: 0,
            max_bytes: 0,
        }
    }

    /// At most `n` decoded values are kept (0 turns the near cache off).
    pub const fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// At most `bytes` of stored values are kept decoded (0 turns the near cache off). The
    /// bound is split evenly between 4 independently locked shards; a value larger than one
    /// shard's part (a quarter of the bound: 16 MiB by default) is never kept.
    pub const fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// The bound on entries.
    pub const fn entries_bound(&self) -> usize {
        self.max_entries
    }

    /// The bound on bytes.
    pub const fn bytes_bound(&self) -> usize {
        self.max_bytes
    }

    /// Whether values are kept at all.
    pub const fn is_enabled(&self) -> bool {
        self.max_entries > 0 && self.max_bytes > 0
    }
}

impl Default for NearCache {
    fn default() -> Self {
        NearCache::new()
    }
}

/// A key of the near map: the entry's key, hashed by the first bytes of its argument hash
/// (already uniformly distributed), compared in full.
#[derive(PartialEq, Eq, Clone)]
struct NearKey(Key);

impl Hash for NearKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0.hash.as_bytes()[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes the one `u64` a [`NearKey`] writes through as its hash.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One decoded value and the stored bytes it came from.
struct Copy {
    source: Bytes,
    value: Arc<dyn Any + Send + Sync>,
    used: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<NearKey, Copy, BuildHasherDefault<PassThrough>>,
    /// Keys in the order they were kept; a key may appear again after it was replaced (its
    /// older places are skipped when they come up).
    order: VecDeque<NearKey>,
    bytes: usize,
}

/// The near cache of one [`Cachier`](crate::Cachier).
pub(crate) struct Near {
    shards: Box<[Mutex<Shard>]>,
    /// Bounds per shard.
    max_entries: usize,
    max_bytes: usize,
    /// The largest value kept: one shard's byte bound.
    max_value: usize,
}

impl Near {
    /// A near cache with these bounds; `None` when they turn it off.
    pub(crate) fn new(bounds: NearCache) -> Option<Near> {
        if !bounds.is_enabled() {
            return None;
        }
        Some(Near {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_entries: bounds.max_entries.div_ceil(SHARDS),
            max_bytes: bounds.max_bytes.div_ceil(SHARDS),
            max_value: bounds.max_bytes / SHARDS,
        })
    }

    fn shard(&self, key: &Key) -> MutexGuard<'_, Shard> {
        let i = usize::from(key.hash.as_bytes()[8]) % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value decoded from exactly `source`, if it is kept (and of type `T`).
    pub(crate) fn get<T: Clone + 'static>(&self, key: &Key, source: &Bytes) -> Option<T> {
        let mut shard = self.shard(key);
        let copy = shard.map.get_mut(&NearKey(key.clone()))?;
        if copy.source.as_ptr() != source.as_ptr() || copy.source.len() != source.len() {
            return None;
        }
        let value = copy.value.downcast_ref::<T>()?.clone();
        copy.used = true;
        Some(value)
    }

    /// Keeps `value`, decoded from `source`, for `key` (replacing what was kept for it), and
    /// evicts what no longer fits.
    pub(crate) fn put<T: Send + Sync + 'static>(&self, key: &Key, source: &Bytes, value: T) {
        let weight = source.len();
        if weight > self.max_value {
            return;
        }
        let key = NearKey(key.clone());
        let mut shard = self.shard(&key.0);
        let copy = Copy {
            source: source.clone(),
            value: Arc::new(value),
            used: false,
        };
        if let Some(old) = shard.map.insert(key.clone(), copy) {
            shard.bytes -= old.source.len();
        }
        shard.bytes += weight;
        shard.order.push_back(key);
        self.evict(&mut shard);
    }

    /// Evicts until the shard is within its bounds: the copy at the front of the order goes
    /// unless it was used since it was last there (then it moves to the back, unused).
    fn evict(&self, shard: &mut Shard) {
        // Each pass either evicts, drops a stale place or clears a `used` flag, so this ends.
        while shard.map.len() > self.max_entries || shard.bytes > self.max_bytes {
            let Some(key) = shard.order.pop_front() else {
                break;
            };
            let Some(copy) = shard.map.get_mut(&key) else {
                continue;
            };
            if copy.used {
                copy.used = false;
                shard.order.push_back(key);
                continue;
            }
            if let Some(gone) = shard.map.remove(&key) {
                shard.bytes -= gone.source.len();
            }
        }
        // Places of replaced or evicted keys: keep the order from growing without bound.
        if shard.order.len() > 2 * shard.map.len() + 64 {
            let map = &shard.map;
            let mut seen = std::collections::HashSet::with_capacity(map.len());
            shard
                .order
                .retain(|k| map.contains_key(k) && seen.insert(k.clone()));
        }
    }

    /// How many copies and stored bytes are kept.
    #[cfg(test)]
    pub(crate) fn size(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            (n + s.map.len(), b + s.bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{FuncId, Namespace};

    fn key(i: u64) -> Key {
        Key::for_args(
            &Namespace::new("near").unwrap(),
            &FuncId::new("f").unwrap(),
            &i,
        )
        .unwrap()
    }

    #[test]
    fn a_copy_is_served_only_for_the_bytes_it_came_from() {
        let near = Near::new(NearCache::new()).unwrap();
        let k = key(1);
        let stored = Bytes::from(vec![1u8, 2, 3]);
        near.put(&k, &stored, String::from("one"));
        assert_eq!(near.get::<String>(&k, &stored).as_deref(), Some("one"));
        assert_eq!(
            near.get::<String>(&k, &stored.clone()).as_deref(),
            Some("one")
        );
        // Equal content in another allocation, a slice of the same one, another type, another key.
        assert_eq!(near.get::<String>(&k, &Bytes::from(vec![1u8, 2, 3])), None);
        assert_eq!(near.get::<String>(&k, &stored.slice(..2)), None);
        assert_eq!(near.get::<Vec<u8>>(&k, &stored), None);
        assert_eq!(near.get::<String>(&key(2), &stored), None);
        // Replaced: the new bytes are served, the old ones no more.
        let newer = Bytes::from(vec![4u8]);
        near.put(&k, &newer, String::from("two"));
        assert_eq!(near.get::<String>(&k, &stored), None);
        assert_eq!(near.get::<String>(&k, &newer).as_deref(), Some("two"));
        assert_eq!(near.size(), (1, 1));
    }

    #[test]
    fn bounds_hold_and_used_copies_stay() {
        let near = Near::new(NearCache::new().max_entries(SHARDS * 4).max_bytes(1 << 20)).unwrap();
        let hot: Vec<(Key, Bytes)> = (0..8)
            .map(|i| (key(i), Bytes::from(vec![i as u8; 10])))
            .collect();
        for (k, b) in &hot {
            near.put(k, b, 0u64);
        }
        for i in 100..10_000u64 {
            for (k, b) in &hot {
                assert!(near.get::<u64>(k, b).is_some(), "hot copy lost at {i}");
            }
            near.put(&key(i), &Bytes::from(vec![0u8; 10]), i);
            let (n, bytes) = near.size();
            assert!(
                n <= SHARDS * 4 && bytes == n * 10,
                "{n} copies, {bytes} bytes"
            );
        }
        for (k, b) in &hot {
            assert_eq!(
                near.get::<u64>(k, b),
                Some(0),
                "a copy used every round stays"
            );
        }
    }

    #[test]
    fn the_byte_bound_holds_and_large_values_are_not_kept() {
        let near = Near::new(NearCache::new().max_bytes(SHARDS * 1000)).unwrap();
        let big = Bytes::from(vec![0u8; 1001]);
        near.put(&key(0), &big, ());
        assert_eq!(near.size(), (0, 0));
        for i in 0..10_000 {
            near.put(&key(i), &Bytes::from(vec![0u8; 100]), ());
            let (n, bytes) = near.size();
            assert!(bytes <= SHARDS * 1000, "{bytes} bytes in {n} copies");
        }
        assert!(Near::new(NearCache::disabled()).is_none());
        assert!(Near::new(NearCache::new().max_entries(0)).is_none());
    }
}
