//! The near cache: decoded values kept in process, so a hit is a lookup and a clone, without
//! the backend, the key hash or a decode.
//!
//! ## What a copy is, and when it is served
//!
//! A copy is the value decoded from what the backend returned for one key, with the entry's
//! `stored_at` and the moment it was read. It is served only where the backend's own value
//! would be: fresh under `stale_after` and the call's `max_age`, never with `overwrite_cache`,
//! `skip_cache` or caching switched off (the front end does not look then), and never a `None`
//! to a handle without `allow_none`. A copy that is not fresh is not served: the call takes the
//! normal path (and `next_time` refreshes as usual).
//!
//! ## Coherence
//!
//! The front end registers its near cache with the backend ([`Core::watch`](crate::Core::watch)),
//! and the backend reports every change to a value of the namespace ([`Change`]). How the
//! near cache stays true depends on the answer:
//!
//! - [`Watching::Synchronous`] (the memory backend): every change is reported before the
//!   operation that made it returns, so a copy is never served once the change is done. Live at
//!   once; on by default.
//! - [`Watching::Asynchronous`] (Redis, with client-side invalidation): changes are reported
//!   shortly after they happen. The near cache serves nothing until the backend reports
//!   [`Change::Resumed`]; a [`Change::Lost`] empties it and stops serving until the next
//!   `Resumed`, which empties it again. Opt-in.
//! - [`Watching::No`] (file, SQL, MongoDB, S3, plugins): only with a [`NearCache::ttl`], the
//!   user's explicit choice of bounded staleness: a copy is never served longer than `ttl`
//!   after it was read from the backend. Without a `ttl` such a backend gets no near cache.
//!
//! Whatever the backend, the front end's own `set`, `precache`, `remove`, `clear` and
//! `delete_stale` drop the copies they touch when they return.
//!
//! A copy is read from the backend before it is kept, and a change may be reported in between
//! (the copy then holds the old value). So every report bumps a sequence number, the front end
//! reads it before the backend read (a [`Ticket`]), and a copy is kept only if no report came
//! since: a copy read before a report is never kept after it.
//!
//! ## Keys
//!
//! A hit must not pay for the key's BLAKE3 hash, so copies are found by the canonical encoding
//! of the arguments themselves (the very bytes the key hash is taken of), prefixed by a small
//! number for the function, hashed with a seeded multiply-and-rotate fold. Calls that come with
//! a key already made (the `#[cachier]` attribute's) find copies by the key's hash instead. An
//! index by argument hash finds the copy a backend's report names; each entry has at most one
//! copy.
//!
//! ## Memory
//!
//! Bounded by entries and by bytes, counted as the length of the stored (encoded) value, which
//! for byte buffers, strings and sequences of numbers is the decoded value's size within a few
//! bytes. The bounds are split evenly between 4 independently locked shards (a value larger
//! than one shard's part, a quarter of the byte bound, is never kept). When a shard is full,
//! the oldest copies not used since they were last passed over go first (CLOCK, an
//! approximation of least recently used). Peak memory: the byte bound plus, per copy, the
//! argument encoding twice (map and index; for a `u64` argument 13 bytes) and about 200 bytes of
//! bookkeeping: with the default bounds (10,000 copies, 64 MiB) at most about 66 MiB.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::contract::{Change, Timestamp, Watcher, Watching};
use crate::fold::SeededFold;
use crate::key::{ArgHash, FuncId};

/// Shards of the near cache: independent locks, so concurrent hits rarely wait for each other.
const SHARDS: usize = 4;

/// The settings of a near cache (see [`CachierBuilder::near_cache`](crate::CachierBuilder::near_cache)).
///
/// ```
/// use std::time::Duration;
/// use cachier_core::NearCache;
/// let near = NearCache::new().max_entries(50_000).max_bytes(128 << 20);
/// assert_eq!(near.entries_bound(), 50_000);
/// // For a backend that does not report changes (file, SQL, ...): copies live at most 2 s.
/// let bounded_staleness = NearCache::new().ttl(Duration::from_secs(2));
/// assert_eq!(bounded_staleness.time_to_live(), Some(Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearCache {
    max_entries: usize,
    max_bytes: usize,
    ttl: Option<Duration>,
}

impl NearCache {
    /// The default bounds: 10,000 decoded values and 64 MiB of stored bytes, no `ttl`.
    pub const fn new() -> Self {
        NearCache {
            max_entries: 10_000,
            max_bytes: 64 << 20,
            ttl: None,
        }
    }

    /// No near cache: every hit asks the backend.
    pub const fn disabled() -> Self {
        NearCache {
            max_entries: 0,
            max_bytes: 0,
            ttl: None,
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

    /// A copy is served at most `ttl` after it was read from the backend: bounded staleness,
    /// for backends that do not report changes (file, SQL, MongoDB, S3, plugins), where a
    /// change made by another process (or directly in the store) is seen only once the copy
    /// has lived its `ttl`. Such backends get a near cache only with a `ttl`. On a backend that
    /// reports changes (memory, Redis) the `ttl` bounds copies as well.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
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

    /// The time to live of a copy, if one was set.
    pub const fn time_to_live(&self) -> Option<Duration> {
        self.ttl
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

/// How a call finds its copy: a tag, the function's number, then the canonical encoding of the
/// arguments (tag [`BY_ARGS`]) or the key's argument hash (tag [`BY_HASH`]); with the hash of
/// those bytes, taken once and used both to pick the shard and inside the shard's map.
#[derive(Clone)]
pub(crate) struct NearKey {
    hash: u64,
    bytes: Arc<[u8]>,
}

/// Tags of a [`NearKey`].
pub(crate) const BY_ARGS: u8 = 0;
pub(crate) const BY_HASH: u8 = 1;

/// A near key as the maps compare it: owned ([`NearKey`]) or borrowed for a lookup
/// ([`Probe`]), so a lookup allocates nothing and hashes once.
trait Lookup {
    fn hash(&self) -> u64;
    fn bytes(&self) -> &[u8];
}

impl Lookup for NearKey {
    fn hash(&self) -> u64 {
        self.hash
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A near key borrowed for one lookup.
pub(crate) struct Probe<'a> {
    hash: u64,
    bytes: &'a [u8],
}

impl Lookup for Probe<'_> {
    fn hash(&self) -> u64 {
        self.hash
    }

    fn bytes(&self) -> &[u8] {
        self.bytes
    }
}

impl PartialEq for dyn Lookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.hash() == other.hash() && self.bytes() == other.bytes()
    }
}

impl Eq for dyn Lookup + '_ {}

impl Hash for dyn Lookup + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(Lookup::hash(self));
    }
}

impl PartialEq for NearKey {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn Lookup) == (other as &dyn Lookup)
    }
}

impl Eq for NearKey {}

impl Hash for NearKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Hash::hash(self as &dyn Lookup, state);
    }
}

impl<'a> std::borrow::Borrow<dyn Lookup + 'a> for NearKey {
    fn borrow(&self) -> &(dyn Lookup + 'a) {
        self
    }
}

impl Probe<'_> {
    /// An owned copy of this key.
    pub(crate) fn to_key(&self) -> NearKey {
        NearKey {
            hash: self.hash,
            bytes: self.bytes.into(),
        }
    }
}

/// The near key of a call that comes with its key made: tag, function number, argument hash.
pub(crate) fn key_bytes(func: u32, hash: &ArgHash) -> [u8; 37] {
    let mut out = [0u8; 37];
    out[0] = BY_HASH;
    out[1..5].copy_from_slice(&func.to_le_bytes());
    out[5..].copy_from_slice(hash.as_bytes());
    out
}

/// The maps' hasher: near keys carry their hash already.
#[derive(Clone, Copy, Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by near keys; anything else is folded in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type Pass = std::hash::BuildHasherDefault<PassThrough>;

/// The entry a copy belongs to: function number and argument hash.
type EntryId = (u32, ArgHash);

/// One decoded value.
struct Kept {
    value: Box<dyn Any + Send + Sync>,
    entry: EntryId,
    stored_at: Timestamp,
    read_at: Instant,
    /// The read it came from: its number, and the number of reads begun when it had returned
    /// (or later), which tells whether another read began after it returned.
    read: u64,
    read_done: u64,
    /// Whether the value serializes as `None` (served only to handles with `allow_none`).
    is_none: bool,
    /// The stored value's length, what the byte bound counts.
    weight: usize,
    used: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<NearKey, Kept, Pass>,
    /// Keys in the order they were kept; a key may appear again after it was replaced (its
    /// older places are skipped when they come up).
    order: VecDeque<NearKey>,
    bytes: usize,
}

/// What only changes and insertions touch, under one lock: the index of copies by entry and
/// the numbers of the functions.
#[derive(Default)]
struct Index {
    copies: HashMap<EntryId, (NearKey, usize)>,
    funcs: HashMap<FuncId, u32>,
    /// Per entry whose copy went without a newer one taking its place (evicted, or dropped
    /// with an overlapping read): the number of reads begun when that copy's read returned. A
    /// read numbered below it began before a value some caller was served, so its copy is
    /// never kept (it could be older).
    floors: HashMap<EntryId, u64>,
    /// The floor of every entry whose own floor was forgotten to keep `floors` bounded.
    floor_all: u64,
}

impl Index {
    /// No copy of `entry` from a read numbered below `done` may be kept from now on.
    fn raise_floor(&mut self, entry: EntryId, done: u64, bound: usize) {
        let floor = self.floors.entry(entry).or_insert(0);
        *floor = (*floor).max(done);
        if self.floors.len() > bound {
            // Forget the entries, keep their highest floor for all: safe, only stricter.
            let highest = self.floors.values().copied().max().unwrap_or(0);
            self.floor_all = self.floor_all.max(highest);
            self.floors.clear();
        }
    }

    /// The lowest read number whose copy of `entry` may still be kept.
    fn floor(&self, entry: &EntryId) -> u64 {
        self.floors
            .get(entry)
            .copied()
            .unwrap_or(0)
            .max(self.floor_all)
    }
}

/// The sequence number read before a backend read: the copy it gives is kept only if no change
/// was reported since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// The change sequence number.
    seq: u64,
    /// The number of this read among the reads of this near cache.
    read: u64,
}

/// What a call asks of a copy.
pub(crate) struct Wanted {
    pub allow_none: bool,
    /// The oldest a served value may be (min of `stale_after` and the call's `max_age`).
    pub fresh_for: Option<Duration>,
    /// When the call began: for the `ttl`, so always given when there is one.
    pub now: Option<Instant>,
}

/// The near cache of one [`Cachier`](crate::Cachier): its [`Watcher`].
pub(crate) struct Near {
    shards: Box<[Mutex<Shard>]>,
    index: Mutex<Index>,
    hasher: SeededFold,
    /// Bumped by every change reported (under the index lock).
    seq: AtomicU64,
    /// Counts the backend reads whose value may be kept (see [`Near::put`]).
    reads: AtomicU64,
    /// Whether copies may be kept and served (an asynchronous watcher before `Resumed`, or
    /// after `Lost`, is not live).
    live: AtomicBool,
    ttl: Option<Duration>,
    /// Bounds per shard.
    max_entries: usize,
    max_bytes: usize,
    /// The largest value kept: one shard's byte bound.
    max_value: usize,
}

impl Near {
    /// A near cache with these bounds; `None` when they turn it off. Live at once when
    /// `watching` is synchronous or absent (a `ttl` cache), not before `Resumed` when it is
    /// asynchronous.
    pub(crate) fn new(bounds: NearCache) -> Option<Near> {
        if !bounds.is_enabled() {
            return None;
        }
        let hasher = SeededFold::default();
        Some(Near {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            index: Mutex::default(),
            hasher,
            seq: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            live: AtomicBool::new(false),
            ttl: bounds.ttl,
            max_entries: bounds.max_entries.div_ceil(SHARDS),
            max_bytes: bounds.max_bytes.div_ceil(SHARDS),
            max_value: bounds.max_bytes / SHARDS,
        })
    }

    /// Starts serving as the backend's answer to `watch` allows: at once unless asynchronous.
    pub(crate) fn started(&self, watching: Watching) {
        if watching != Watching::Asynchronous {
            self.live.store(true, Ordering::SeqCst);
        }
    }

    /// The near key of these bytes, for a lookup.
    #[inline]
    pub(crate) fn probe<'a>(&self, bytes: &'a [u8]) -> Probe<'a> {
        let mut fold = self.hasher.build_hasher();
        fold.write(bytes);
        Probe {
            hash: fold.finish(),
            bytes,
        }
    }

    /// The shard of a key: bits the maps use neither for buckets (the low ones) nor for their
    /// tags (the top seven).
    #[inline]
    fn shard_of(hash: u64) -> usize {
        (hash >> 40) as usize % SHARDS
    }

    fn lock_shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_index(&self) -> MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The number of a function in near keys (given out once per function id).
    pub(crate) fn func_number(&self, func: &FuncId) -> u32 {
        let mut index = self.lock_index();
        let next = index.funcs.len() as u32;
        *index.funcs.entry(func.clone()).or_insert(next)
    }

    /// The value kept under `key`, if it is of type `T` and the call may have it.
    #[inline]
    pub(crate) fn get<T: Clone + 'static>(&self, key: &Probe<'_>, wanted: &Wanted) -> Option<T> {
        let mut shard = self.lock_shard(Near::shard_of(key.hash));
        let copy = shard.map.get_mut(key as &dyn Lookup)?;
        if copy.is_none && !wanted.allow_none {
            return None;
        }
        if let Some(ttl) = self.ttl
            && wanted
                .now
                .is_none_or(|now| now.saturating_duration_since(copy.read_at) >= ttl)
        {
            return None;
        }
        if let Some(limit) = wanted.fresh_for
            && copy.stored_at.elapsed() >= limit
        {
            return None;
        }
        let value = copy.value.downcast_ref::<T>()?.clone();
        copy.used = true;
        Some(value)
    }

    /// How many per-entry floors are kept before they fold into one for all entries: four
    /// times the copies the near cache holds.
    fn floors_bound(&self) -> usize {
        self.max_entries * SHARDS * 4 + 64
    }

    /// Whether copies have a time to live (a hit then needs the time).
    #[inline]
    pub(crate) fn has_ttl(&self) -> bool {
        self.ttl.is_some()
    }

    /// Read before the backend read whose value may be kept.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket {
            seq: self.seq.load(Ordering::SeqCst),
            read: self.reads.fetch_add(1, Ordering::SeqCst),
        }
    }

    /// Keeps `value`, decoded from `weight` stored bytes stored at `stored_at`, for the entry
    /// `entry` under `key` — unless a change was reported since `ticket` was taken, or the
    /// near cache is not live. Evicts what no longer fits.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn put<T: Send + Sync + 'static>(
        &self,
        key: &NearKey,
        entry: EntryId,
        ticket: Ticket,
        read_at: Instant,
        stored_at: Timestamp,
        weight: usize,
        is_none: bool,
        value: T,
    ) {
        if weight > self.max_value {
            return;
        }
        // Read after the backend read returned: any read numbered from here on began later.
        let read_done = self.reads.load(Ordering::SeqCst);
        let mut index = self.lock_index();
        if !self.live.load(Ordering::SeqCst) {
            return;
        }
        let at = Near::shard_of(key.hash);
        let bound = self.floors_bound();
        // The caller of this read is served its value whether or not it is kept, so no copy
        // may be served afterwards that could be older: at most one copy per entry, and one
        // is kept only where it is known to be at least as new as every value served.
        //
        // - The kept copy stays only if its read began after this one returned (it is newer);
        //   this one is then not kept.
        // - This copy replaces the kept one if its read began after the kept one's returned.
        // - Otherwise the two reads overlapped and which value is newer is unknown: both go.
        // - A copy read before a reported change is not kept (the sequence number moved).
        // Whenever a served value is not kept, it leaves a floor: no read begun before it
        // returned is kept later (that read could be older, and no kept copy says otherwise).
        // A kept copy past its ttl goes whenever it is looked at here.
        let mut floor = read_done;
        if let Some((other, other_at)) = index.copies.get(&entry).cloned() {
            let mut shard = self.lock_shard(other_at);
            if let Some(kept) = shard.map.get(&other) {
                let expired = self.ttl.is_some_and(|ttl| kept.read_at.elapsed() >= ttl);
                let newer = ticket.read >= kept.read_done;
                let older = kept.read >= read_done;
                if older && !expired {
                    drop(shard);
                    index.raise_floor(entry, floor, bound);
                    return;
                }
                floor = floor.max(kept.read_done);
                if let Some(gone) = shard.map.remove(&other) {
                    shard.bytes -= gone.weight;
                }
                index.copies.remove(&entry);
                if older || !newer {
                    drop(shard);
                    index.raise_floor(entry, floor, bound);
                    return;
                }
            }
        }
        if self.seq.load(Ordering::SeqCst) != ticket.seq || ticket.read < index.floor(&entry) {
            index.raise_floor(entry, floor, bound);
            return;
        }
        let key = key.clone();
        let mut shard = self.lock_shard(at);
        let copy = Kept {
            value: Box::new(value),
            entry,
            stored_at,
            read_at,
            read: ticket.read,
            read_done,
            is_none,
            weight,
            used: false,
        };
        if let Some(old) = shard.map.insert(key.clone(), copy) {
            shard.bytes -= old.weight;
            if old.entry != entry {
                index.copies.remove(&old.entry);
            }
        }
        shard.bytes += weight;
        shard.order.push_back(key.clone());
        index.copies.insert(entry, (key, at));
        self.evict(&mut shard, &mut index);
    }

    /// Evicts until the shard is within its bounds: the copy at the front of the order goes
    /// unless it was used since it was last there (then it moves to the back, unused).
    fn evict(&self, shard: &mut Shard, index: &mut Index) {
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
                shard.bytes -= gone.weight;
                index.copies.remove(&gone.entry);
                index.raise_floor(gone.entry, gone.read_done, self.floors_bound());
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

    /// Drops every copy that `doomed` picks; bumps the sequence first.
    fn drop_where(&self, index: &mut Index, doomed: impl Fn(&Kept) -> bool) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        for i in 0..SHARDS {
            let mut shard = self.lock_shard(i);
            let shard = &mut *shard;
            let mut bytes = shard.bytes;
            shard.map.retain(|_, copy| {
                let gone = doomed(copy);
                if gone {
                    bytes -= copy.weight;
                    index.copies.remove(&copy.entry);
                }
                !gone
            });
            shard.bytes = bytes;
            if shard.map.is_empty() {
                shard.order.clear();
            }
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

impl Watcher for Near {
    fn changed(&self, change: Change<'_>) {
        let mut index = self.lock_index();
        match change {
            Change::Entry(key) => {
                self.seq.fetch_add(1, Ordering::SeqCst);
                let Some(&func) = index.funcs.get(&key.func) else {
                    return;
                };
                if let Some((near_key, at)) = index.copies.remove(&(func, key.hash)) {
                    let mut shard = self.lock_shard(at);
                    if let Some(gone) = shard.map.remove(&near_key) {
                        shard.bytes -= gone.weight;
                    }
                }
            }
            Change::Function(func) => match index.funcs.get(func).copied() {
                Some(func) => self.drop_where(&mut index, |copy| copy.entry.0 == func),
                None => {
                    self.seq.fetch_add(1, Ordering::SeqCst);
                }
            },
            Change::Namespace => self.drop_where(&mut index, |_| true),
            Change::Lost => {
                self.live.store(false, Ordering::SeqCst);
                self.drop_where(&mut index, |_| true);
            }
            Change::Resumed => {
                self.drop_where(&mut index, |_| true);
                self.live.store(true, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Key, Namespace};

    fn ns() -> Namespace {
        Namespace::new("near").unwrap()
    }

    fn key(func: &str, i: u64) -> Key {
        Key::for_args(&ns(), &FuncId::new(func).unwrap(), &i).unwrap()
    }

    fn live(bounds: NearCache) -> Near {
        let near = Near::new(bounds).unwrap();
        near.started(Watching::Synchronous);
        near
    }

    fn wanted() -> Wanted {
        Wanted {
            allow_none: false,
            fresh_for: None,
            now: Some(Instant::now()),
        }
    }

    /// Keeps `value` for key `i` of `func` with a fresh ticket.
    fn put<T: Send + Sync + 'static>(near: &Near, func: &str, i: u64, weight: usize, value: T) {
        let k = key(func, i);
        let f = near.func_number(&k.func);
        let ticket = near.ticket();
        near.put(
            &near.probe(&key_bytes(f, &k.hash)).to_key(),
            (f, k.hash),
            ticket,
            Instant::now(),
            Timestamp::now(),
            weight,
            false,
            value,
        );
    }

    fn get<T: Clone + 'static>(near: &Near, func: &str, i: u64) -> Option<T> {
        let k = key(func, i);
        let f = near.func_number(&k.func);
        near.get::<T>(&near.probe(&key_bytes(f, &k.hash)), &wanted())
    }

    #[test]
    fn copies_follow_reports() {
        let near = live(NearCache::new());
        put(&near, "f", 1, 3, String::from("one"));
        put(&near, "f", 2, 3, String::from("two"));
        put(&near, "g", 1, 3, String::from("g1"));
        assert_eq!(get::<String>(&near, "f", 1).as_deref(), Some("one"));
        assert_eq!(get::<Vec<u8>>(&near, "f", 1), None, "another type");
        near.changed(Change::Entry(&key("f", 1)));
        assert_eq!(get::<String>(&near, "f", 1), None);
        assert_eq!(get::<String>(&near, "f", 2).as_deref(), Some("two"));
        near.changed(Change::Function(&FuncId::new("f").unwrap()));
        assert_eq!(get::<String>(&near, "f", 2), None);
        assert_eq!(get::<String>(&near, "g", 1).as_deref(), Some("g1"));
        assert_eq!(near.size(), (1, 3));
        near.changed(Change::Namespace);
        assert_eq!(near.size(), (0, 0));
    }

    #[test]
    fn a_copy_read_before_a_report_is_not_kept() {
        let near = live(NearCache::new());
        let k = key("f", 1);
        let f = near.func_number(&k.func);
        let ticket = near.ticket();
        // A change to any value between the ticket and the insertion.
        near.changed(Change::Entry(&key("f", 9)));
        let bytes = near.probe(&key_bytes(f, &k.hash)).to_key();
        let now = Instant::now();
        near.put(
            &bytes,
            (f, k.hash),
            ticket,
            now,
            Timestamp::now(),
            1,
            false,
            1u8,
        );
        assert_eq!(near.size(), (0, 0));
        near.put(
            &bytes,
            (f, k.hash),
            near.ticket(),
            now,
            Timestamp::now(),
            1,
            false,
            1u8,
        );
        assert_eq!(near.size(), (1, 1));
    }

    #[test]
    fn an_asynchronous_watcher_serves_only_between_resumed_and_lost() {
        let near = Near::new(NearCache::new()).unwrap();
        near.started(Watching::Asynchronous);
        put(&near, "f", 1, 1, 1u8);
        assert_eq!(near.size(), (0, 0), "not live before Resumed");
        near.changed(Change::Resumed);
        put(&near, "f", 1, 1, 1u8);
        assert_eq!(get::<u8>(&near, "f", 1), Some(1));
        near.changed(Change::Lost);
        assert_eq!(near.size(), (0, 0), "Lost empties it");
        put(&near, "f", 1, 1, 1u8);
        assert_eq!(near.size(), (0, 0), "and nothing is kept until Resumed");
        near.changed(Change::Resumed);
        put(&near, "f", 1, 1, 1u8);
        assert_eq!(get::<u8>(&near, "f", 1), Some(1));
    }

    #[test]
    fn freshness_ttl_and_none_are_judged_on_every_hit() {
        let near = live(NearCache::new().ttl(Duration::from_millis(50)));
        let k = key("f", 1);
        let f = near.func_number(&k.func);
        let key_bytes = key_bytes(f, &k.hash);
        let probe = near.probe(&key_bytes);
        let bytes = probe.to_key();
        let read_at = Instant::now();
        let stored_at = Timestamp::now().sub(Duration::from_secs(10));
        near.put(
            &bytes,
            (f, k.hash),
            near.ticket(),
            read_at,
            stored_at,
            1,
            true,
            None::<u8>,
        );
        let mut w = wanted();
        assert_eq!(
            near.get::<Option<u8>>(&probe, &w),
            None,
            "None without allow_none"
        );
        w.allow_none = true;
        assert_eq!(near.get::<Option<u8>>(&probe, &w), Some(None));
        w.fresh_for = Some(Duration::from_secs(10));
        assert_eq!(near.get::<Option<u8>>(&probe, &w), None, "stale");
        w.fresh_for = Some(Duration::from_secs(11));
        assert_eq!(near.get::<Option<u8>>(&probe, &w), Some(None));
        w.now = Some(read_at + Duration::from_millis(50));
        assert_eq!(near.get::<Option<u8>>(&probe, &w), None, "past its ttl");
    }

    #[test]
    fn one_copy_per_entry_and_never_an_older_one() {
        let near = live(NearCache::new());
        let k = key("f", 1);
        let f = near.func_number(&k.func);
        let by_args = [BY_ARGS, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        let by_args = near.probe(&by_args);
        let now = Instant::now();
        let at = Timestamp::now();
        let entry = (f, k.hash);
        near.put(
            &by_args.to_key(),
            entry,
            near.ticket(),
            now,
            at,
            1,
            false,
            1u8,
        );
        // A read begun before the next one and kept after it.
        let late = near.ticket();
        // A read begun after the first copy was kept replaces it, under the key's near key.
        put(&near, "f", 1, 1, 2u8);
        assert_eq!(near.size(), (1, 1));
        assert_eq!(near.get::<u8>(&by_args, &wanted()), None);
        assert_eq!(get::<u8>(&near, "f", 1), Some(2));
        // The late read overlapped it: which is newer is unknown, so neither is kept.
        near.put(&by_args.to_key(), entry, late, now, at, 1, false, 3u8);
        assert_eq!(near.size(), (0, 0));
        assert_eq!(get::<u8>(&near, "f", 1), None);
        put(&near, "f", 1, 1, 4u8);
        assert_eq!(get::<u8>(&near, "f", 1), Some(4));
        // A copy read after the kept one returned is newer: it replaces it.
        put(&near, "f", 1, 1, 5u8);
        assert_eq!(get::<u8>(&near, "f", 1), Some(5));
        near.changed(Change::Entry(&k));
        assert_eq!(near.size(), (0, 0));
    }

    /// A read that began before a served copy's read returned is never kept once that copy is
    /// gone without a newer one in its place: dropped with an overlapping read, or evicted.
    #[test]
    fn no_older_copy_once_a_newer_one_went() {
        let near = live(NearCache::new());
        let k = key("f", 1);
        let f = near.func_number(&k.func);
        let probe = near.probe(&key_bytes(f, &k.hash)).to_key();
        let entry = (f, k.hash);
        let keep = |ticket, v: u8| {
            near.put(
                &probe,
                entry,
                ticket,
                Instant::now(),
                Timestamp::now(),
                1,
                false,
                v,
            )
        };
        // Overlap: `slow` began first and returns last; `a` and `b` overlap each other.
        let slow = near.ticket();
        let a = near.ticket();
        let b = near.ticket();
        keep(a, 2);
        assert_eq!(get::<u8>(&near, "f", 1), Some(2), "a caller is served 2");
        keep(b, 3);
        assert_eq!(near.size(), (0, 0), "overlapping reads: neither kept");
        keep(slow, 1);
        assert_eq!(get::<u8>(&near, "f", 1), None, "1 was read before 2 was");
        put(&near, "f", 1, 1, 4u8);
        assert_eq!(get::<u8>(&near, "f", 1), Some(4), "a later read is kept");
        // A read begun before the kept copy's read returns after it was kept, with a value
        // that may be newer (its caller is served it): the kept copy must go too.
        let early = near.ticket();
        put(&near, "f", 1, 1, 5u8);
        assert_eq!(get::<u8>(&near, "f", 1), Some(5));
        keep(early, 6);
        assert_eq!(
            get::<u8>(&near, "f", 1),
            None,
            "6 was served: 5 may be older"
        );

        // Eviction: a tiny near cache drops the copy; a read begun before it returned stays out.
        let tiny = live(NearCache::new().max_entries(SHARDS).max_bytes(1 << 20));
        let slow = tiny.ticket();
        put(&tiny, "f", 1, 1, 2u8);
        assert_eq!(get::<u8>(&tiny, "f", 1), Some(2));
        for i in 2..200 {
            put(&tiny, "f", i, 1, 0u8);
        }
        assert_eq!(get::<u8>(&tiny, "f", 1), None, "evicted");
        let k1 = key("f", 1);
        let f1 = tiny.func_number(&k1.func);
        tiny.put(
            &tiny.probe(&key_bytes(f1, &k1.hash)).to_key(),
            (f1, k1.hash),
            slow,
            Instant::now(),
            Timestamp::now(),
            1,
            false,
            1u8,
        );
        assert_eq!(get::<u8>(&tiny, "f", 1), None, "1 was read before 2 was");
        put(&tiny, "f", 1, 1, 5u8);
        assert_eq!(get::<u8>(&tiny, "f", 1), Some(5));
        assert!(
            tiny.lock_index().floors.len() <= SHARDS * SHARDS * 4 + 64,
            "floors stay bounded"
        );
    }

    #[test]
    fn bounds_hold_and_used_copies_stay() {
        let near = live(NearCache::new().max_entries(SHARDS * 16).max_bytes(1 << 20));
        for i in 0..8 {
            put(&near, "f", i, 10, i);
        }
        for i in 100..10_000u64 {
            for h in 0..8 {
                assert!(get::<u64>(&near, "f", h).is_some(), "hot copy lost at {i}");
            }
            put(&near, "f", i, 10, i);
            let (n, bytes) = near.size();
            assert!(
                n <= SHARDS * 16 && bytes == n * 10,
                "{n} copies, {bytes} bytes"
            );
            assert_eq!(
                near.lock_index().copies.len(),
                n,
                "the index follows the copies"
            );
        }
        for h in 0..8 {
            assert_eq!(
                get::<u64>(&near, "f", h),
                Some(h),
                "a copy used every round stays"
            );
        }
    }

    #[test]
    fn the_byte_bound_holds_and_large_values_are_not_kept() {
        let near = live(NearCache::new().max_bytes(SHARDS * 1000));
        put(&near, "f", 0, 1001, ());
        assert_eq!(near.size(), (0, 0));
        for i in 0..10_000 {
            put(&near, "f", i, 100, ());
            let (n, bytes) = near.size();
            assert!(bytes <= SHARDS * 1000, "{bytes} bytes in {n} copies");
        }
        assert!(
            near.size().0 >= SHARDS * 5,
            "the shards fill up to their bound"
        );
        assert!(Near::new(NearCache::disabled()).is_none());
        assert!(Near::new(NearCache::new().max_entries(0)).is_none());
    }
}
