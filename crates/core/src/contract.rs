//! The [`Core`] trait: what every storage backend implements.

use std::fmt;
use std::sync::Weak;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::key::{FuncId, Key, Namespace};

/// A point in time: UTC milliseconds since the Unix epoch (never local time).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `d`, saturating.
    #[allow(clippy::should_implement_trait)] // saturating, unlike `Add`
    pub fn add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis() as u64))
    }

    /// This time minus `d`, saturating at the epoch.
    #[allow(clippy::should_implement_trait)] // saturating, unlike `Sub`
    pub fn sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(d.as_millis() as u64))
    }

    /// How long ago this was, or zero if it is in the future.
    pub fn elapsed(self) -> Duration {
        Duration::from_millis(Timestamp::now().0.saturating_sub(self.0))
    }

    /// How long until this time, or zero if it has passed.
    pub fn remaining(self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(Timestamp::now().0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.0)
    }
}

/// The proof of holding a claim. Only this token renews or releases it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClaimToken(String);

impl ClaimToken {
    /// A fresh random token: 32 lowercase hex digits from the operating system's random source.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: fall back to a unique-enough mix of time, process and address.
            let seed = format!("{:?}{}{:p}", SystemTime::now(), std::process::id(), &bytes);
            bytes.copy_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..16]);
        }
        let mut s = String::with_capacity(32);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        ClaimToken(s)
    }

    /// Wraps a token read back from storage.
    pub fn from_string(token: impl Into<String>) -> Self {
        ClaimToken(token.into())
    }

    /// The token as text (ASCII, at most 64 bytes for tokens this crate generates).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClaimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClaimToken({})", self.0)
    }
}

/// The result of [`Core::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller now holds the claim and must compute, then `set` (or `release`).
    Acquired(ClaimToken),
    /// Someone else holds a live claim until the given time (unless they renew it).
    Held {
        /// When the other holder's lease runs out.
        until: Timestamp,
    },
}

/// What a backend stores under one key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// The encoded value, absent while only a claim exists.
    pub value: Option<Bytes>,
    /// When the value was stored (meaningful only with a value).
    pub stored_at: Timestamp,
    /// The expiry of a live claim on this key, if one exists.
    pub claim_until: Option<Timestamp>,
}

impl Entry {
    /// Whether a claim on this entry is live now.
    pub fn is_claimed(&self) -> bool {
        self.claim_until.is_some_and(|t| t > Timestamp::now())
    }
}

/// What a backend can do, read by the front end and the conformance suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Claims and entries are shared by every process that opens the same store (file, SQL,
    /// Redis, MongoDB), so the cross-process conformance checks apply.
    pub cross_process: bool,
    /// `wait` is woken by the backend when a claim ends instead of polling.
    pub native_wakeup: bool,
    /// Entries survive a restart of the process.
    pub persistent: bool,
    /// The largest value, in bytes, the backend stores; `None` for no limit of its own.
    pub max_value_bytes: Option<u64>,
}

/// What a backend stores in one namespace, as far as it can tell cheaply: the answer of
/// [`Core::usage`]. `None` is "unknown" (the backend cannot tell without a costly scan, or does
/// not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// The values stored in the namespace (claims without a value not counted).
    pub entries: Option<u64>,
    /// The bytes of those values as the front end stored them (encoded, envelope included; keys
    /// and the backend's own overhead not counted).
    pub bytes: Option<u64>,
}

/// A change to stored values that a backend reports to a [`Watcher`] (see [`Core::watch`]).
/// Claims are not values: taking, renewing or releasing one is not a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// The value under this key was stored, replaced, removed, expired or evicted.
    Entry(&'a Key),
    /// Any value of this function of the watched namespace may have changed (`clear`,
    /// `delete_stale`).
    Function(&'a FuncId),
    /// Any value of the watched namespace may have changed (`clear_namespace`, a flush of the
    /// store).
    Namespace,
    /// Reports may have been missed (the notification channel was lost, the server restarted):
    /// anything may have changed, and no report can be relied on until [`Change::Resumed`].
    Lost,
    /// Reports are delivered again: after [`Change::Lost`], and once when watching starts on a
    /// backend that reports [`Watching::Asynchronous`]ly. Anything before may have changed.
    Resumed,
}

/// Receives a backend's reports of changes (see [`Core::watch`]). Called from the backend's own
/// tasks, or from inside the operation that made the change: it must return quickly and must
/// not call the backend.
pub trait Watcher: Send + Sync {
    /// One change (see [`Change`]).
    fn changed(&self, change: Change<'_>);
}

/// How a backend reports changes to a [`Watcher`]: the answer of [`Core::watch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watching {
    /// The backend does not report changes.
    No,
    /// Every change, made through any handle of this store in this process, is reported before
    /// the operation that made it returns (an in-process store). The watcher is live at once.
    Synchronous,
    /// Changes made by any process are reported shortly after they happen (Redis client-side
    /// invalidation). The watcher is not live until the backend reports [`Change::Resumed`], and
    /// after a [`Change::Lost`] not until the next `Resumed`.
    Asynchronous,
}

/// How long the default [`Core::wait`] sleeps at first between two reads.
pub const WAIT_POLL_START: Duration = Duration::from_millis(5);
/// The longest sleep of the default [`Core::wait`] between two reads.
pub const WAIT_POLL_MAX: Duration = Duration::from_millis(200);

/// A storage backend: stores opaque encoded values and atomic, expiring claims.
///
/// Implementations are used as `Arc<dyn Core>` by the [`Cachier`](crate::Cachier) front end.
/// The contract, checked by the conformance suite (feature `conformance`):
///
/// - `claim` is one atomic compare-and-set: of any number of callers racing on a key without a
///   live claim, exactly one gets [`Claim::Acquired`]. A claim is a lease: it ends by itself at
///   its expiry, when the holder `release`s it, or when anyone `set`s the key.
/// - `renew` and `release` act only when given the live claim's token.
/// - A value stays readable while a claim on the same key exists.
/// - `clear`, `clear_claims` and `delete_stale` act on exactly one function of one namespace:
///   `foo` never touches `foo_bar`.
/// - Bad stored bytes are returned as they are; decoding (and treating failures as misses) is
///   the front end's job. A backend returns `Corrupt` only for its own framing.
#[async_trait]
pub trait Core: Send + Sync + 'static {
    /// A short name for logs and errors (`memory`, `file`, `redis`, ...).
    fn name(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Reports every later change to the values of `namespace` (made by this process or any
    /// other that shares the store) to `watcher`, for as long as the watcher lives: the backend
    /// holds it weakly and forgets it once it is dropped. The front end's near cache uses this
    /// to drop decoded copies of values that changed (see
    /// [`CachierBuilder::near_cache`](crate::CachierBuilder::near_cache)); it calls `watch`
    /// once per cache it builds, also where it then keeps no near cache (the default on an
    /// [`Watching::Asynchronous`] backend), so registering should cost little until a report
    /// is due. Default: [`Watching::No`].
    ///
    /// A report must come after the change is visible: a read that starts after the watcher
    /// was told must see the new state. Several watchers may watch one namespace (one per
    /// cache built over the store); each gets every report.
    fn watch(&self, namespace: &Namespace, watcher: Weak<dyn Watcher>) -> Watching {
        let _ = (namespace, watcher);
        Watching::No
    }

    /// Reads the entry under `key`: value, `stored_at` and any live claim. `None` when there is
    /// neither a value nor a live claim.
    async fn get(&self, key: &Key) -> Result<Option<Entry>>;

    /// Reads the value and its `stored_at` under `key`, for the front end's hit path. Unlike
    /// [`Core::get`] it need not report a claim: `claim_until` may be `None` although a claim is
    /// live, and a key with only a claim may read as `None`. Backends for which the claim costs
    /// extra work on a read (another file, another lookup) override it; the default is `get`.
    async fn get_value(&self, key: &Key) -> Result<Option<Entry>> {
        self.get(key).await
    }

    /// Stores `value` under `key` (replacing any value) and ends any claim on the key.
    async fn set(&self, key: &Key, value: Bytes, stored_at: Timestamp) -> Result<()>;

    /// Stores like [`Core::set`], and asks the store to remove the value by itself once
    /// `expire_after` has passed (the front end's
    /// [`Settings::expire_after`](crate::Settings::expire_after)): Redis gives the entry a `PX`
    /// expiry, MongoDB a date its TTL index removes it after. Until then the value reads as
    /// usual; afterwards it is gone as if removed (a miss).
    ///
    /// The default stores without an expiry: backends that cannot expire entries on their own
    /// (memory, file, SQL, plugins) keep the value until `delete_stale` (the front end's
    /// `cleanup_stale`), a bound, or a `remove`/`clear` removes it.
    async fn set_expiring(
        &self,
        key: &Key,
        value: Bytes,
        stored_at: Timestamp,
        expire_after: Duration,
    ) -> Result<()> {
        let _ = expire_after;
        self.set(key, value, stored_at).await
    }

    /// Atomically takes the claim on `key` for `lease` if no live claim exists.
    async fn claim(&self, key: &Key, lease: Duration) -> Result<Claim>;

    /// Extends the claim to `now + lease` if `token` holds it; `false` if it does not.
    async fn renew(&self, key: &Key, token: &ClaimToken, lease: Duration) -> Result<bool>;

    /// Ends the claim if `token` holds it; does nothing otherwise. The value stays.
    async fn release(&self, key: &Key, token: &ClaimToken) -> Result<()>;

    /// Waits until `key` has no live claim (released, expired, or ended by a `set`) or until
    /// `timeout` passes, then returns the entry as [`Core::get`] would. After a timeout the
    /// returned entry still shows the live claim.
    ///
    /// The default polls `get` with exponential backoff from [`WAIT_POLL_START`] to
    /// [`WAIT_POLL_MAX`]; backends with change notification override it.
    async fn wait(&self, key: &Key, timeout: Duration) -> Result<Option<Entry>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = WAIT_POLL_START;
        loop {
            let entry = self.get(key).await?;
            let claimed = entry.as_ref().is_some_and(Entry::is_claimed);
            let now = tokio::time::Instant::now();
            if !claimed || now >= deadline {
                return Ok(entry);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(WAIT_POLL_MAX);
        }
    }

    /// Removes the value and any claim under `key`; `true` if there was a value.
    async fn remove(&self, key: &Key) -> Result<bool>;

    /// Removes every entry (values and claims) of `func` in `namespace`; returns how many values
    /// were removed.
    async fn clear(&self, namespace: &Namespace, func: &FuncId) -> Result<u64>;

    /// Ends every claim of `func` in `namespace`, keeping values; returns how many were ended.
    async fn clear_claims(&self, namespace: &Namespace, func: &FuncId) -> Result<u64>;

    /// Removes the values of `func` in `namespace` stored before `stored_before`; returns how
    /// many were removed.
    async fn delete_stale(
        &self,
        namespace: &Namespace,
        func: &FuncId,
        stored_before: Timestamp,
    ) -> Result<u64>;

    /// How many values `namespace` holds and their bytes, for the `cachier_entries` and
    /// `cachier_stored_bytes` gauges ([`Cachier::usage`](crate::Cachier::usage)). Backends
    /// answer what they can tell cheaply; the default is [`Usage::default`], "unknown".
    async fn usage(&self, namespace: &Namespace) -> Result<Usage> {
        let _ = namespace;
        Ok(Usage::default())
    }

    /// Removes everything stored in `namespace` (every function, values and claims), including
    /// any per-namespace structure (a directory, a collection). Returns how many values were
    /// removed.
    async fn clear_namespace(&self, namespace: &Namespace) -> Result<u64>;
}
