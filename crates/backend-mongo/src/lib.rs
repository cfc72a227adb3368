//! MongoDB backend for cachier: cached results shared by every process that reaches the same
//! database, with claims that are atomic across processes and expire by themselves.
//!
//! [`MongoCore`] implements [`cachier_core::Core`] on the official asynchronous `mongodb`
//! driver. It is built from a [`Config`]: a `mongodb://` URL (or an existing
//! [`mongodb::Client`]), a database and a collection prefix, and short timeouts so that an
//! outage makes calls fail within a second instead of the driver's default 30 seconds (see
//! [Timeouts and outages](#timeouts-and-outages)).
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cachier_core::Core;
//! use cachier_mongo::{Config, MongoCore};
//!
//! # async fn example() -> cachier_core::Result<()> {
//! let config = Config::from_url("mongodb://127.0.0.1:27017/app_cache")?
//!     .server_selection_timeout(Duration::from_secs(1));
//! let core: Arc<dyn Core> = Arc::new(MongoCore::connect(config).await?);
//! # Ok(())
//! # }
//! ```
//!
//! # Storage layout
//!
//! - **One collection per namespace**, named by [`Config::collection_name`]: the collection
//!   prefix (default `cachier_`) followed by the namespace with `_` written as `__`, `.` as `_d`
//!   and `-` as `_h` (namespace `my-app` lives in `cachier_my_happ`). Clearing a namespace drops
//!   its collection.
//! - **One document per key**:
//!
//!   | field         | BSON type         | meaning                                              |
//!   |---------------|-------------------|------------------------------------------------------|
//!   | `_id`         | string            | `{func}\x1f{hash}`: deterministic, see below         |
//!   | `func`        | string            | the function id ([`cachier_core::FuncId`])           |
//!   | `key`         | string            | the argument hash, 64 lowercase hex digits           |
//!   | `value`       | binary (generic)  | the encoded value, opaque; absent while only claimed |
//!   | `stored_at`   | 64-bit integer    | when the value was stored, UTC ms since the epoch    |
//!   | `claim_until` | 64-bit integer    | when the claim's lease ends; absent without a claim  |
//!   | `claim_token` | string            | the holder's [`cachier_core::ClaimToken`]            |
//!   | `expire_at`   | date              | when the server removes the document (TTL index); only with `expire_after` |
//!
//! - **A unique index on `(func, key)`**, named `func_key`, created the first time this process
//!   writes to a collection, once however many callers arrive together (and again after the server was unreachable, since it may have come
//!   back empty). Documents are found by `(func, key)`; the deterministic `_id`, set only when a
//!   document is inserted, makes two concurrent inserts of the same key collide on the `_id`
//!   index even if the `(func, key)` index was dropped meanwhile, so a key never has two
//!   documents.
//!
//! - **A TTL index on `expire_at`** (`expireAfterSeconds: 0`), named `expire_at`, created with
//!   the unique index. Documents without `expire_at` are never touched by it.
//!
//! # Operations
//!
//! - `get` is one `find_one`. A document with a missing or mistyped field (a `value` that is not
//!   binary, a `stored_at` or `claim_until` that is not a non-negative integer) is read as a miss
//!   for that part and logged with `tracing`; it never causes an error or a panic, and the next
//!   `set` overwrites it.
//! - `set` is one `update_one` with upsert that writes `value` and `stored_at` and removes the
//!   claim fields, so storing a value ends any claim.
//! - `claim` is one `update_one` with upsert whose filter matches the key only when
//!   `claim_until` is missing, null or past. If another caller holds a live claim, the filter
//!   does not match, the upsert tries to insert a second document for the key and the unique
//!   index refuses it with a duplicate-key error (code 11000): the claim is held, and the
//!   holder's expiry is read back for [`cachier_core::Claim::Held`]. A claim field of a foreign
//!   type is taken over with one compare-and-set on its exact stored value. Claims are leases:
//!   a crashed holder blocks nobody past its expiry.
//! - `renew` and `release` act only on a document carrying the caller's token; releasing a
//!   claim that never got a value deletes its document.
//! - `clear`, `clear_claims` and `delete_stale` filter on the exact `func` string, so `foo`
//!   never touches `foo_bar`. `delete_stale` keeps a live claim and drops only the stale value.
//! - `wait` polls `get` with backoff (the [`cachier_core::Core`] default).
//!
//! # Store-side expiry
//!
//! With the front end's `expire_after` ([`Settings::expire_after`](cachier_core::Settings)),
//! [`Core::set_expiring`](cachier_core::Core::set_expiring) writes `expire_at` = now +
//! `expire_after` along with the value; a plain `set` removes it. The server's TTL monitor then
//! deletes the document by itself — on MongoDB it runs once a minute, so a document goes up to
//! about a minute after its date (and reads still return it until then; the front end judges
//! freshness by `stored_at` as always). MongoDB counts the deletions in `serverStatus`
//! (`metrics.ttl.deletedDocuments`).
//!
//! Value and claim share one document: a claim taken on a key whose stored value reaches its
//! `expire_at` while the claim's computation runs is deleted with the document, and another
//! caller may then claim and compute the same key. Since `expire_after` is never shorter than
//! `stale_after`, this needs a stale value recomputed just as it expires; it costs at most one
//! duplicate computation, never a wrong value. MongoDB has no memory-pressure eviction of
//! documents, so nothing else removes a claim early.
//!
//! Only operations that real MongoDB and MongoDB-compatible servers both implement are used:
//! no `$setOnInsert` with `find_one_and_update`, no transactions, no change streams.
//!
//! # Size limit
//!
//! A MongoDB document holds at most 16 MiB ([`MAX_DOCUMENT_BYTES`]). This backend stores values
//! of up to [`MAX_VALUE_BYTES`] (16 MiB minus 1 KiB for the other fields) and says so in
//! [`cachier_core::Capabilities::max_value_bytes`]. A larger value is refused before anything
//! is sent, with an [`ErrorKind::TooLarge`](cachier_core::ErrorKind::TooLarge) error; the front
//! end then returns the computed value without storing it (or the error, with `strict`).
//!
//! # Errors
//!
//! An unreachable server (no server selected within the timeout, a broken connection, an
//! operation over [`Config::operation_timeout`]) is
//! [`ErrorKind::Unavailable`](cachier_core::ErrorKind::Unavailable) and retryable; every error
//! names the operation, the backend (`mongo`) and the key or function.
//!
//! # Timeouts and outages
//!
//! | timeout | bounds | default | set with |
//! |---|---|---|---|
//! | server selection | waiting for a reachable server before each request | 1 s | [`Config::server_selection_timeout`], URL `serverSelectionTimeoutMS` |
//! | connect | opening one connection | 1 s | [`Config::connect_timeout`], URL `connectTimeoutMS` |
//! | operation | one request of `get`, `set`, `claim`, `renew`, `release`, `remove` (enforced by this backend: the driver has no socket timeout) | 1 s | [`Config::operation_timeout`], URL `socketTimeoutMS` |
//! | maintenance | one request of `clear`, `clear_claims`, `delete_stale`, `clear_namespace` | 60 s | [`Config::maintenance_timeout`] |
//!
//! [`MongoCore::connect`] does not contact the server (an application must start while its
//! cache is down): opening costs nothing, and the first call pays. What a call costs while the
//! server is in trouble, by default:
//!
//! - **down** or **unreachable**: the driver waits for its monitor to find a server until the
//!   server selection timeout, so a call fails after 1 s (measured on loopback: 1.0 s).
//! - **hung** (connections open, nothing answers): the operation timeout, 1 s.
//!
//! The front end takes the first such failure for an outage and skips the backend until a
//! probe finds it answering again. Nothing needs restarting when the server is back: the
//! driver's monitor finds it on the next request (a failed request asks for an immediate
//! check), and the unique index is created again in case the server came back empty.

mod config;
mod core;

pub use crate::config::{
    Config, DEFAULT_COLLECTION_PREFIX, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DATABASE,
    DEFAULT_MAINTENANCE_TIMEOUT, DEFAULT_OPERATION_TIMEOUT, DEFAULT_SERVER_SELECTION_TIMEOUT,
};
pub use crate::core::{MAX_DOCUMENT_BYTES, MAX_VALUE_BYTES, MongoCore};
pub use mongodb;

/// The backend's name in logs and errors.
pub(crate) const BACKEND: &str = "mongo";
