//! Redis backend for cachier: memoized results shared by every process that reaches one Redis
//! server (or one Redis Cluster, with the feature `cluster`), with at most one computation in
//! flight per key across all of them.
//!
//! [`RedisCore`] implements [`cachier_core::Core`] on the [`redis`] crate (async, Tokio, a
//! connection manager that reconnects by itself). [`Config`] says how to reach the server: a
//! `redis://` / `rediss://` URL (credentials, database number, TLS through rustls) or an
//! existing `redis::Client`, plus deliberately chosen timeouts (see
//! [Timeouts and outages](#timeouts-and-outages)).
//!
//! ```no_run
//! use std::sync::Arc;
//! use cachier_core::Core;
//! use cachier_redis::{Config, RedisCore};
//!
//! # async fn example() -> cachier_core::Result<()> {
//! let config = Config::from_url("redis://127.0.0.1:6379/0")?;
//! let core: Arc<dyn Core> = Arc::new(RedisCore::connect(config).await?);
//! # Ok(()) }
//! ```
//!
//! # Storage layout, version 1
//!
//! For a [`Key`](cachier_core::Key) with namespace `ns`, function id `func` and argument hash
//! `hash` (64 lowercase hex digits):
//!
//! | what | Redis name | type, content |
//! |---|---|---|
//! | entry | `{ns:func:hash}` | string: byte `1` (framing version), `stored_at` as a big-endian `u64` of UTC milliseconds, then the value bytes exactly as given |
//! | claim | `{ns:func:hash}:claim` | string `<expiry ms>:<token>`, with a `PX` expiry of the lease |
//! | wake-up | `{ns:func:hash}:wake` | pub/sub channel (not a key): a message whenever a claim ends |
//!
//! In `func`, the characters `%`, `:`, `{` and `}` are written `%25`, `%3A`, `%7B` and `%7D`,
//! so a name splits into its parts unambiguously and the braces always enclose the whole
//! entry name. Namespaces are restricted by `cachier-core` to `[A-Za-z0-9_.-]`.
//!
//! - **A hit is one round trip and one command**: `GET entry`
//!   ([`Core::get_value`](cachier_core::Core::get_value), the front end's hit path): the value
//!   and its `stored_at` travel together. [`Core::get`](cachier_core::Core::get), which must
//!   also report a live claim, is one `MGET entry claim`. Both are plain reads, chosen over a
//!   Lua script: they work on replicas, need no script cache after a restart or failover, and
//!   show up as exactly one read command in `INFO commandstats`.
//! - **Claims** are one atomic `SET claim <expiry>:<token> NX PX <lease>` inside a small Lua
//!   script that, when the key is taken, returns its `PTTL` instead (so `Claim::Held` carries a
//!   server-measured expiry). `renew` and `release` are Lua compare-and-set on the token.
//!   Leases expire on the server, so a holder killed mid-computation blocks nobody for longer
//!   than its lease. The `<expiry>` recorded in the value is the holder's clock; `get` reports
//!   a claim whose key still exists as live even if that clock runs behind.
//! - **`set`** is one `MULTI`/`EXEC`: `SET` the entry (with `PX` under `expire_after`), `DEL`
//!   the claim, `PUBLISH` on the wake-up channel. A stale value stays readable while a new one is computed; only `set`
//!   replaces it.
//! - **`wait`** subscribes to the key's wake-up channel (one shared pub/sub connection per
//!   core), then reads, then re-reads on every message, at the claim's expiry (expiries publish
//!   nothing) and on a slow safety poll ([`Config::with_wait_poll_interval`]). While the pub/sub
//!   connection is down it polls with backoff (5 ms doubling to 200 ms). It never busy-loops.
//!   Pub/sub ignores the database number: cores on different databases of one server may wake
//!   each other's waiters needlessly, which costs one read, never a wrong answer.
//! - **`clear`, `clear_claims`, `delete_stale`, `clear_namespace`** walk `SCAN MATCH` (never
//!   `KEYS`) and remove with `UNLINK`. Patterns escape the glob characters `* ? [ ] \` and end
//!   in exactly 64 `?` for the hash, so `foo` never touches `foo_bar`, `foo:bar` or `foo*`.
//!   `delete_stale` reads only the 9-byte header of each entry (`GETRANGE`) in a Lua script
//!   that unlinks it atomically if it is old enough. Clearing claims publishes wake-ups.
//! - Values are opaque: this crate never decodes them. An entry in a framing this crate did not
//!   write (a foreign program's string under the same name) is reported as no value, so the
//!   front end computes and overwrites it; non-string keys read as absent.
//!
//! # Near caches
//!
//! With [`CachierBuilder::near_cache`](cachier_core::CachierBuilder::near_cache), the front end
//! keeps decoded values in process and serves a hit without any Redis round trip. It stays
//! coherent through [`Core::watch`](cachier_core::Core::watch), which this crate answers with
//! Redis client-side caching in broadcasting mode:
//!
//! - **One extra connection per core**, opened on the first `watch` and shared by all watchers
//!   (RESP3, so invalidations arrive as push messages on the same connection). It sends
//!   `CLIENT TRACKING on BCAST PREFIX {<namespace>:` for each watched namespace (the prefix
//!   covers exactly one namespace: namespaces cannot contain `:`); a namespace watched later is
//!   added with one more such command.
//! - **Nothing on the write path**: the server pushes the name of every key of a watched
//!   namespace that anyone changes, from any process or client: `SET`, `DEL`, `UNLINK`, an
//!   expiry (`expire_after`), an eviction under `maxmemory`. The name maps back to its
//!   [`Key`](cachier_core::Key) and is reported as
//!   [`Change::Entry`](cachier_core::Change::Entry); claim keys are not values and are
//!   ignored; a name under the prefix that this crate did not write is reported as a change of
//!   the whole namespace, and so is `FLUSHDB` / `FLUSHALL` (a null invalidation, reported to
//!   every watched namespace). Changes made through the watching core itself (`set`, `remove`,
//!   `clear`, `delete_stale`, `clear_namespace`) are also reported before the call returns, so
//!   the process that made a change never sees the old value again, even before the server's
//!   push arrives. Tracking ignores the database number: a change in another database of the
//!   same server under the same namespace is reported too (one needless miss, never a stale
//!   value).
//! - **Delay**: measured from the start of a `set` in another process to the report here, over
//!   300 writes on loopback (`tests/watch.rs`, debug build, load average 5-6 on 2 cores):
//!   median 0.4 ms, p99 2-4 ms; counted from the moment the writer's `set` returned, median
//!   about 0.03-0.08 ms, p99 0.2-3 ms. End to end through the front end (`tests/near_cache.rs`,
//!   200 `precache` calls in another process): median 0.37 ms after the writer began, p99
//!   0.8 ms, usually before the writer's own call returned; once reported, the next call
//!   returns the new value.
//! - **A lost connection is never silent**: the watchers hear
//!   [`Change::Lost`](cachier_core::Change::Lost) the moment the tracking connection closes or
//!   fails (a server restart, `CLIENT KILL`, a network error) and, since a hung server or a
//!   silent network partition closes nothing, when a heartbeat `PING` (every second) gets no
//!   answer within the response timeout: at most about 2 s by default. The near cache then
//!   drops its copies and reads from Redis. The core reconnects in the background (50 ms
//!   doubling to 2 s), turns tracking on again for every namespace, and reports
//!   [`Change::Resumed`](cachier_core::Change::Resumed); only then are near copies kept again.
//!   A watcher registered while the server is down is not live until it is back.
//! - **Redis Cluster**: not supported yet. Tracking in broadcasting mode is per node, so a
//!   cluster core would need a tracking connection per primary, re-established whenever slots
//!   move; until then `watch` answers [`Watching::No`](cachier_core::Watching::No) on a
//!   cluster, and a near cache there falls back to what the front end does without change
//!   reports (its bounded `ttl`, or none).
//! - Needs Redis 6 or later (RESP3 and `CLIENT TRACKING`); on an older server the tracking
//!   connection never comes up, so near caches are never live and every hit reads Redis.
//!
//! # Redis Cluster
//!
//! With the feature `cluster` (redis-rs `cluster-async`), the same [`RedisCore`] talks to a
//! Redis Cluster: name some of its nodes (one reachable node is enough; the rest are found
//! from it) and everything else stays the same.
//!
//! ```toml
//! cachier-redis = { version = "0.1", features = ["cluster"] }
//! ```
//!
//! ```no_run
//! # #[cfg(feature = "cluster")]
//! # async fn example() -> cachier_core::Result<()> {
//! use cachier_redis::{Config, RedisCore};
//!
//! // As a URL (e.g. in CACHIER_REDIS_URL): `rediss+cluster://` for TLS, credentials as usual.
//! let core = RedisCore::connect(Config::from_url(
//!     "redis+cluster://:secret@10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000",
//! )?)
//! .await?;
//! // Or from the nodes' URLs.
//! let config = Config::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])?;
//! # Ok(()) }
//! ```
//!
//! How each operation works on a cluster:
//!
//! - **Routing**: the whole entry name is the hash tag, so an entry, its claim and its wake-up
//!   channel share one slot. A hit is still one `GET` to the slot's primary; claims, renewals
//!   and releases are the same Lua scripts, routed by their key. `set` and `remove` are one
//!   script each instead of `MULTI`/`EXEC` (the cluster client follows `MOVED` and `ASK` for a
//!   single command but not for a transaction). Scripts are sent with `EVALSHA`, and with
//!   `EVAL` by a node that does not know them yet (a new primary after a failover, the target
//!   of a migration), never with `SCRIPT LOAD` to every node.
//! - **Redirections and retries**: the client follows `MOVED`/`ASK` and refreshes its slot
//!   map. A command is retried at most 5 times, after random waits of 10 ms up to
//!   `10 ms × 2^retry` capped at 200 ms (the `redis` crate's defaults are 16 retries of at
//!   least 1.28 s each); the whole call, retries included, stays within
//!   [`Config::with_response_timeout`].
//! - **Clearing** (`clear`, `clear_claims`, `delete_stale`, `clear_namespace`): `SCAN` walks
//!   one node, so the core lists the serving primaries (`CLUSTER NODES`) and scans each in
//!   turn; keys found are unlinked per slot. A slot that moves during a clear may be missed
//!   or counted twice; run it again.
//! - **Wake-ups** use sharded pub/sub: `SPUBLISH` where a claim ends, `SSUBSCRIBE` on one RESP3
//!   cluster connection per core, which the `redis` crate keeps subscribed across reconnections.
//!   When a slot moves, the server ends its subscriptions and the core subscribes again at the
//!   new owner. Sharded pub/sub needs Redis 7: on an older cluster [`RedisCore::connect`] sees
//!   that `SPUBLISH` is missing, waiters poll (5 ms doubling to 200 ms, and at the claim's
//!   expiry), and [`Capabilities::native_wakeup`](cachier_core::Capabilities) is `false`.
//!   [`RedisCore::connect_lazy`] cannot ask and assumes Redis 7.
//!
//! What happens when the cluster changes (measured on a private cluster of 3 primaries and 3
//! replicas on loopback, `cluster-node-timeout` 1.5 s, see `tests/cluster_faults.rs`):
//!
//! - **A primary dies**: calls for its slots fail as [`ErrorKind::Unavailable`] until a
//!   replica is promoted (about 3 s: the node timeout, then the election), and the front end
//!   computes meanwhile (fail-open; every caller got its value). Keys on the other primaries
//!   answered throughout. Set `cluster-require-full-coverage no` on the servers, or the whole
//!   cluster refuses commands while any slot is uncovered. In the first seconds after a
//!   failover, a burst of requests on an existing core has been seen to wait out the response
//!   timeout (the cluster client's recovery); those calls fail open too, and a new core had no
//!   such wait.
//! - **A slot migrates** (`redis-cli --cluster reshard`): a claim moves with its slot, a
//!   holder's `set` follows `MOVED`, and a waiter subscribed at the old owner is subscribed
//!   again at the new one: it got the holder's value about 2 ms after the holder finished, and
//!   the function ran once.
//!
//! Not supported on a cluster: database numbers other than 0 (a cluster has only database 0),
//! reading from replicas (every read goes to the slot's primary, so a hit never sees a stale
//! replica), custom TLS roots or client certificates ([`Config::from_client`] is for one server;
//! `rediss+cluster://` uses the system's roots), and `redis+unix://` nodes.
//!
//! # Durability and limits
//!
//! [`Capabilities::persistent`](cachier_core::Capabilities) is `true`: entries outlive the
//! processes that wrote them. Whether they outlive a restart of Redis itself depends on the
//! server's configuration (RDB snapshots or the append-only file); a server run with
//! `--save '' --appendonly no` keeps nothing across its own restart. A value may be at most
//! [`MAX_VALUE_BYTES`] (Redis' 512 MiB string limit minus the 9-byte header), less if the
//! server's `proto-max-bulk-len` is lower. Redis' `maxmemory` eviction may remove entries or
//! claims at any time; an evicted claim only lets a second computation start (see
//! [Store-side expiry and `maxmemory`](#store-side-expiry-and-maxmemory)).
//!
//! # Store-side expiry and `maxmemory`
//!
//! With the front end's `expire_after` ([`Settings::expire_after`](cachier_core::Settings)),
//! [`Core::set_expiring`](cachier_core::Core::set_expiring) writes the entry with
//! `SET entry ... PX <expire_after>` in the same `MULTI`/`EXEC` as always: Redis removes it by
//! itself (on access and in its active expiry cycle), so a stale entry does not stay stored
//! forever once nobody calls for it. Claim keys always carry their lease as `PX`. Redis counts
//! what it removed in `INFO stats` (`expired_keys`, `evicted_keys`).
//!
//! When the server reaches `maxmemory`, its policy decides what goes, and claims are keys too:
//!
//! | policy | what it may evict | effect on cachier |
//! |---|---|---|
//! | `noeviction` (Redis' default) | nothing: writes fail with `OOM` | claims are never lost; a full server fails `set` and `claim`, which the front end logs and survives by computing (no single flight while full) |
//! | `allkeys-lru`, `allkeys-lfu`, `allkeys-random` | any key, live claims included | a claim evicted mid-computation lets a second caller claim and compute the same key: a duplicate computation, never a wrong value (the first holder's renewal fails and is logged) |
//! | `volatile-lru`, `volatile-lfu`, `volatile-random` | keys with an expiry: every claim, and entries stored with `expire_after` | as above; entries without an expiry are never evicted, so without `expire_after` the claims go first |
//! | `volatile-ttl` | the keys closest to expiry first | the worst choice: leases are short, so live claims are evicted before anything else |
//!
//! What to set: give the cache its own Redis (or database budget), set `expire_after` so that
//! entries leave by themselves, and choose `allkeys-lfu` when the server may fill up (an
//! evicted claim costs at most one duplicate computation), or `noeviction` with enough
//! `maxmemory` when single flight must be strict. Avoid `volatile-ttl`.
//!
//! # Errors
//!
//! Every error names the operation, the backend (`redis`) and the key (or function, or
//! namespace). A server that cannot be reached, a timeout, a dropped connection, or a server
//! that is loading, read-only or in a cluster failover is [`ErrorKind::Unavailable`] and
//! retryable (the front end takes it for an outage); a refused TLS handshake or a bad URL is
//! [`ErrorKind::Config`]; refused credentials are [`ErrorKind::PermissionDenied`].
//!
//! [`ErrorKind::Unavailable`]: cachier_core::ErrorKind::Unavailable
//! [`ErrorKind::Config`]: cachier_core::ErrorKind::Config
//! [`ErrorKind::PermissionDenied`]: cachier_core::ErrorKind::PermissionDenied
//!
//! # Timeouts and outages
//!
//! | timeout | bounds | default | set with |
//! |---|---|---|---|
//! | connect | opening a connection: TCP, TLS, `AUTH`, `SELECT` | 1 s | [`Config::with_connect_timeout`], URL `?connect_timeout_ms=` |
//! | response | waiting for the reply to one command (a pipeline, a script) | 1 s | [`Config::with_response_timeout`], URL `?response_timeout_ms=` |
//!
//! A call makes one connection attempt when it has no connection ([`Config::with_reconnect_attempts`]
//! adds more, with a short backoff); a call whose attempt was refused makes one more at once,
//! since nothing was sent. What a call costs while the server is in trouble, by default:
//!
//! - **down** (nothing listens, or the process is gone): the connection is refused, and the
//!   call fails within a millisecond or two on a local network (measured on loopback: about
//!   0.2 ms); so does [`RedisCore::connect`].
//! - **host unreachable** (no answer at all): the connect timeout, 1 s.
//! - **hung** (connections open, nothing answers): the response timeout, 1 s.
//!
//! The front end takes the first such failure for an outage and skips the backend until a
//! probe finds it answering again. Nothing needs restarting when the server is back: the next
//! call opens a new connection (a lost connection is never reused), and the pub/sub connection
//! of [`Core::wait`](cachier_core::Core::wait) reconnects in the background and subscribes
//! again. A waiter whose reads start failing mid-wait retries a few times before it gives up.
//! Values of many megabytes travel well within the response timeout on a local network; raise
//! it for larger values or slower links.
//!
//! # Runtimes
//!
//! A core belongs to the Tokio runtime it was created on: the `redis` crate drives its
//! connections with tasks spawned there. Create it inside the runtime that will use it.

mod config;
mod connection;
mod core;
mod layout;
mod tracking;
mod wakeup;

pub use crate::config::{Config, DEFAULT_URL};
pub use crate::core::{MAX_VALUE_BYTES, RedisCore};
