//! # cachier-memory
//!
//! The in-process backend of cachier for Rust: values live in a bounded cache inside the
//! process, claims are per-key leases in a map of their own, and callers waiting for another
//! caller's computation are woken the moment it stores or releases (a per-key
//! `tokio::sync::Notify`), or when its lease runs out — never by polling.
//!
//! Use it for caching within one process, and as the reference implementation of the
//! [`Core`](cachier_core::Core) contract: it passes the whole conformance suite except the
//! cross-process checks, which its capabilities rule out.
//!
//! ## Layout
//!
//! | structure | holds | bounded |
//! |---|---|---|
//! | values: a `moka::sync::Cache<Key, (Bytes, stored_at)>` | every stored value | yes, by bytes and/or entries ([`Config`]) |
//! | claims: a `HashMap<Key, Lease>` behind a read-write lock | each live claim (token, expiry) and the notifier of its waiters | no: claims are few and leased |
//!
//! A [`Key`](cachier_core::Key) is namespace, function id and argument hash; both structures
//! hash it with a fold seeded per store from the operating system's random source.
//!
//! ## Changes are reported: the front end's near cache
//!
//! The store [watches](cachier_core::Core::watch) synchronously: every `set`, `remove`,
//! `clear`, `clear_namespace` and `delete_stale` tells each watcher of the namespace (one per
//! `Cachier` built over the store, held weakly) before it returns. So the front end keeps its
//! near cache of decoded values on by default over this store, and a hit is a lookup and a
//! clone in that near cache, without reaching the store at all; a change made through any
//! handle of the store is never missed. Values evicted for the bound are not reported: they
//! did not change, so a near copy of one is still the value (the near cache has its own bound),
//! and reporting them would drop the near copies of a hot set whose reads the eviction policy
//! then never sees, so it would evict the hot set again and again (`tests/bounded.rs` fell from
//! over 95 % hot hits to 89 %).
//!
//! A read that reaches the store is one `moka` read (in `cargo xtask bench memory`, `core.get` took 158 ns against
//! 73 ns for the unbounded map it replaced). Keeping values in a plain map and telling the
//! policy about only some reads was tried and dropped: the policy admits a new value only over
//! values it has seen read less often, so once full, a store whose policy missed the reads
//! admitted nothing new (`tests/bounded.rs`, `a_new_working_set_replaces_an_unused_one`).
//!
//! ## The bound
//!
//! A long-running service that caches a function of ever new arguments must not grow without
//! end, so the store is bounded: by default to [`DEFAULT_MAX_BYTES`] (256 MiB), each value
//! counted as its encoded bytes, its key and [`ENTRY_OVERHEAD_BYTES`] for the bookkeeping, so the
//! bound holds for what the process spends, not only for the values. [`Config::max_entries`]
//! bounds the count instead or as well; [`Config::unbounded`] turns the bound off.
//!
//! Eviction is [moka](https://docs.rs/moka)'s: a frequency sketch decides whether a new value
//! is worth more than the least recently used one (TinyLFU admission, LRU eviction), so a hot
//! set stays cached while a stream of one-off arguments passes through. Its bookkeeping runs
//! in small batches during reads and writes, so the store may stand above its bound by a batch
//! for a moment; [`MemoryCore::run_pending_tasks`] settles it at once.
//!
//! What the bound does to the contract:
//!
//! - **An evicted value is a miss**, as if it had never been stored; a value is never changed,
//!   only dropped whole. A value just stored reads back at once: eviction happens only when the
//!   store is over its bound. A single value bigger than the whole bound is dropped at the next
//!   batch.
//! - **Claims are never evicted.** They sit in their own map, outside the bound, so single flight
//!   holds whatever the values do: a claim ends only by its lease, `release`, a `set`, or a
//!   `remove`/`clear`. Claims are few (one per computation running) and leased; a claim whose
//!   holder vanished without releasing it is dropped once its lease is over (swept on a later
//!   `claim`).
//! - `set` stores the value before it ends the claim, and `get` reads the claim before the value,
//!   so no reader sees a key with neither while its value is being stored.
//!
//! [`MemoryCore::stats`] counts evictions (values dropped for the bound) and expirations
//! (values removed as stale by `delete_stale`, which the front end's `cleanup_stale` calls).
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//! use cachier_core::{Cachier, func_id};
//! use cachier_memory::{Config, MemoryCore};
//!
//! # #[tokio::main] async fn main() -> cachier_core::Result<()> {
//! let core = MemoryCore::with_config(Config::default().max_bytes(Some(64 << 20)));
//! let cache = Cachier::new(Arc::new(core));
//! let double = cache.function(func_id!("double"));
//! assert_eq!(double.call(&21u32, || async { 42u32 }).await?, 42);
//! assert_eq!(double.call(&21u32, || async { 0u32 }).await?, 42); // served from the cache
//! # Ok(()) }
//! ```

mod config;
mod core;

pub use crate::config::{Config, DEFAULT_MAX_BYTES, ENTRY_OVERHEAD_BYTES};
pub use crate::core::{MemoryCore, MemoryStats};
