//! # cachier-core
//!
//! Persistent, stale-aware memoization of function results, with at most one computation in
//! flight per key across threads, processes and machines. This crate holds everything but the
//! storage: backends live in sibling crates (`cachier-memory`, `cachier-file`, `cachier-sql`,
//! `cachier-redis`, `cachier-mongo`) and implement one trait, [`Core`].
//!
//! ## The pieces
//!
//! - [`Core`] — the backend contract: `get`, `set`, an atomic, expiring [`claim`](Core::claim)
//!   (a lease, renewed while computing), `renew`, `release`, `wait`, `remove`, `clear`,
//!   `clear_claims`, `delete_stale`, `clear_namespace`, and [`Capabilities`]. A backend stores
//!   opaque bytes and never sees user types.
//! - [`Key`] — [`Namespace`] + [`FuncId`] + [`ArgHash`], in a documented, versioned format
//!   (see the [`key`](crate::Key) docs and [`KEY_FORMAT_VERSION`]).
//! - [`codec`] — the [`Codec`] seam (bincode 2 behind it) and the checksummed envelope every
//!   stored value travels in. A value that does not decode is a miss, never a panic.
//! - [`Cachier`] and [`Function`] — the front end: settings ([`Settings`]), per-call options
//!   ([`CallOptions`]), `call`, `call_blocking`, `try_call`, `precache`, `remove`, `clear`,
//!   `clear_claims`, [`Stats`].
//! - `conformance` (feature `conformance`) — the checks every backend passes, and the
//!   `conformance_suite!` macro that turns them into tests.
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cachier_core::{Cachier, Core, func_id};
//!
//! async fn price(cache: &Cachier, sku: String) -> cachier_core::Result<u64> {
//!     let f = cache.function(func_id!("price"));
//!     f.call(&sku, {
//!         let sku = sku.clone();
//!         move || async move { expensive_lookup(&sku).await }
//!     })
//!     .await
//! }
//! # async fn expensive_lookup(_: &str) -> u64 { 42 }
//! ```
//!
//! ## Failure policy
//!
//! Nothing the cache does takes the caller's result away: without [`Settings::strict`], a
//! backend error is logged with `tracing` and the function is computed anyway; corrupt or
//! foreign stored bytes are misses; results over [`Settings::entry_size_limit`] are returned but
//! not stored; a compute function that fails or panics releases its claim.

mod blocking;
mod canonical;
pub mod codec;
mod contract;
mod error;
mod front;
mod health;
mod key;
mod none;
mod plain;
mod settings;
mod stats;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use async_trait::async_trait;
pub use blocking::block_on;
pub use bytes::Bytes;
pub use codec::{Bincode, Codec, DefaultCodec};
pub use contract::{
    Capabilities, Claim, ClaimToken, Core, Entry, Timestamp, WAIT_POLL_MAX, WAIT_POLL_START,
};
pub use error::{Error, ErrorKind, Result};
pub use front::{Cachier, CachierBuilder, Function};
pub use health::{LOG_INTERVAL, ProbeBackoff};
pub use key::{
    ArgHash, FuncId, KEY_FORMAT_VERSION, Key, MAX_FUNC_ID_LEN, MAX_NAMESPACE_LEN, Namespace,
};
pub use settings::{CallOptions, Settings, caching_enabled, set_caching_enabled};
pub use stats::Stats;
