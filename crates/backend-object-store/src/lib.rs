//! Object-store backend for cachier: memoized results kept as objects in an S3 bucket (or any
//! S3-compatible server), a local directory, memory, or any store of the [`object_store`]
//! crate, with at most one computation in flight per key for every process that reaches the
//! same bucket.
//!
//! [`ObjectStoreCore`] implements [`cachier_core::Core`]. [`Config`] says where the objects
//! live: a URL (`s3://bucket/prefix?endpoint=...&region=...`, `file:///dir`, `memory://`) or a
//! store the application built ([`Config::from_store`], e.g. Google Cloud Storage or Azure with
//! `object_store`'s own `gcp` or `azure` features), plus deliberately chosen timeouts and
//! retries (see [Timeouts and outages](#timeouts-and-outages)).
//!
//! ```no_run
//! use std::sync::Arc;
//! use cachier_core::Core;
//! use cachier_object_store::{Config, ObjectStoreCore};
//!
//! # fn example() -> cachier_core::Result<()> {
//! // Credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ... as usual.
//! let config = Config::from_url("s3://my-bucket/cachier?region=eu-west-1")?;
//! let core: Arc<dyn Core> = Arc::new(ObjectStoreCore::open(config)?);
//! # Ok(()) }
//! ```
//!
//! # Object layout, version 1
//!
//! For a [`Key`](cachier_core::Key) with namespace `ns`, function id `func` and argument hash
//! `hash` (64 lowercase hex digits), under the configured `prefix`:
//!
//! | what | object name | content |
//! |---|---|---|
//! | entry | `{prefix}/{ns}/{func}/{hash}` | `CHOS`, byte `1` (framing version), `stored_at` as a big-endian `u64` of UTC milliseconds, then the value bytes exactly as given |
//! | claim | `{prefix}/{ns}/{func}/{hash}.claim` | text `cachier-claim/1 <expiry ms> <token>`; a released claim is `cachier-claim/1 0 -` |
//!
//! `func` is one path segment, escaped by `object_store`'s path rules: `/`, `%`, `\`, control
//! characters and the characters S3 and GCS advise against are written `%XX`, and a name of
//! exactly `.` or `..` is escaped too, so every function id has a directory of its own. An
//! escaped id longer than 200 bytes (file systems allow 255 a name, S3 1024 a key) is cut to its
//! first 100 bytes or so, followed by `#` (escaped `%23`) and 32 hex digits of the BLAKE3 hash
//! of the whole id.
//! Namespaces are restricted by `cachier-core` to `[A-Za-z0-9_.-]`.
//!
//! - **A hit is one GET** of the entry object ([`Core::get_value`](cachier_core::Core::get_value)):
//!   `stored_at` travels in the object's first 13 bytes, so no second request (HEAD, metadata)
//!   is needed. [`Core::get`](cachier_core::Core::get), which must also report a live claim,
//!   GETs the entry and the claim object at the same time.
//! - **Claims** are conditional writes. A new claim is `PutMode::Create`
//!   (`If-None-Match: *`): of any number of callers racing on a key without a claim object,
//!   exactly one creates it. An expired or released claim is taken over with `PutMode::Update`
//!   on the ETag just read (`If-Match`), so two callers taking over the same dead claim cannot
//!   both win. `renew` and `release` are one PUT with `If-Match` on the ETag the core's own
//!   last write of the claim returned (a core remembers the claims it holds): if the object
//!   still has that ETag it holds what this holder wrote. When it does not (taken over after
//!   the lease ran out, or the core does not remember it), they read the claim, compare the
//!   token and write with `If-Match` on what they read. A delete cannot be conditional, so
//!   `release` marks the claim released instead of deleting it. A claim request retried after
//!   its first attempt landed finds its own token and counts as acquired.
//! - **`set`** writes the entry (one `PUT`, replacing any value; a stale value stays readable
//!   until then) and deletes the claim object, ending any claim as the contract says.
//! - **`wait`** polls `get` with backoff (5 ms doubling to 200 ms): object stores have no change
//!   notification to wake a waiter.
//! - **`clear`, `clear_claims`, `delete_stale`, `clear_namespace`** list by prefix, which
//!   `object_store` matches a whole path segment at a time (the prefix ends in `/`), so `foo`
//!   never touches `foo_bar`; objects are deleted in batches (S3 `DeleteObjects`, 1000 per
//!   request). Per-function operations touch only names this crate writes (a hash, or a hash
//!   and `.claim`); `clear_namespace` removes everything under the namespace. `delete_stale`
//!   reads the 13-byte header of each entry (a ranged GET, 16 in flight) to learn its
//!   `stored_at`; the object's own modification time is the server's clock, not the caller's.
//!   `clear_claims` reads each claim to count the live ones it ends.
//! - Values are opaque: this crate never decodes them. An object this crate did not write (a
//!   foreign program's object under the same name, a truncated one) reads as no value, so the
//!   front end computes and overwrites it; a foreign claim object counts as an expired claim.
//!
//! # Stores and what they guarantee
//!
//! | URL | store | claims | shared by processes | persistent |
//! |---|---|---|---|---|
//! | `s3://` | S3 or an S3-compatible server with `If-None-Match`/`If-Match` on `PutObject` | atomic | yes | yes |
//! | `memory://NAME` | `InMemory`, one per name and process | atomic | no | no |
//! | `file:///DIR` | `LocalFileSystem` | new claims atomic, takeover weaker (below) | yes (one machine) | yes |
//!
//! [`Capabilities::max_value_bytes`](cachier_core::Capabilities) is S3's single-`PUT` limit
//! (5 GiB) less the 13-byte header for `s3://`; larger values fail with
//! [`ErrorKind::TooLarge`](cachier_core::ErrorKind::TooLarge) before anything is sent.
//!
//! ## Stores without conditional updates
//!
//! `object_store`'s local file system supports `PutMode::Create` but not `PutMode::Update`.
//! There, a new claim is still atomic, but taking over an expired claim deletes it and then
//! creates a new one, and `renew` and `release` read, compare the token, then overwrite or
//! delete. Two callers that take over the same dead claim at the same instant may therefore
//! both compute (one value wins; nothing wrong is served). [`ObjectStoreCore::has_conditional_update`]
//! says which kind a core is; the backend's tests skip the takeover race on such stores and
//! say so. For a local directory, the `cachier-file` backend has atomic takeover.
//!
//! # Errors
//!
//! Every error names the operation, the backend (`object-store`) and the key (or function, or
//! namespace). A connection that fails or is refused, a timeout, or a 5xx answer is
//! [`ErrorKind::Unavailable`](cachier_core::ErrorKind::Unavailable) and retryable (the front
//! end takes it for an outage); refused credentials are
//! [`ErrorKind::PermissionDenied`](cachier_core::ErrorKind::PermissionDenied); a bad URL is
//! [`ErrorKind::Config`](cachier_core::ErrorKind::Config). A bucket that does not exist reads as
//! empty and fails writes.
//!
//! # Timeouts and outages
//!
//! `object_store` retries by default up to ten times within three minutes: far too long for a
//! cache, whose callers would rather compute. This crate sets, for the stores it builds:
//!
//! | setting | bounds | default | set with |
//! |---|---|---|---|
//! | connect timeout | opening a connection (TCP, TLS) | 1 s | [`Config::with_connect_timeout`], URL `?connect_timeout_ms=` |
//! | request timeout | one whole request, body included | 5 s | [`Config::with_request_timeout`], URL `?request_timeout_ms=` |
//! | retries | extra attempts of a failed request, after 50 ms, within 1 s of the first | 1 | [`Config::with_retries`], URL `?retries=` |
//!
//! What a call costs while the endpoint is in trouble, by default: **down** (connection
//! refused) — two refused attempts 50 ms apart, about 50–60 ms on a local network (54 ms
//! measured for the slowest operation against a closed port, 58 ms against a stopped
//! `moto_server`);
//! **host unreachable** — the connect timeout, about 1 s (a retry would start after the
//! one-second retry window); **hung** (accepts, never answers) — the request timeout, 5 s (a
//! read is retried once if its first attempt timed out within the one-second window, so with a
//! request timeout under a second a hung server costs up to twice the timeout: 300 ms gave
//! 660 ms in `tests/backend.rs`).
//! The front end takes the first such failure for an outage and skips the backend until a
//! probe finds it answering again; the same core works again by itself once the endpoint
//! answers (connections are pooled by `reqwest` and reopened as needed).
//!
//! # TLS
//!
//! `reqwest` is built with rustls and no bundled crypto provider; opening an `s3://` store
//! installs rustls' `ring` provider as the process default unless one was installed before.
//! (`ring` is already part of the other backends' build; `object_store`'s `aws` feature would
//! add the `aws-lc-rs` C build instead.)

mod config;
mod core;
mod error;
mod layout;

pub use crate::config::Config;
pub use crate::core::ObjectStoreCore;

/// The backend's name in errors and logs.
pub(crate) const BACKEND: &str = "object-store";
