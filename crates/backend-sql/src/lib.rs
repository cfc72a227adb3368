//! SQL backend for cachier: one [`Core`](cachier_core::Core) for SQLite, PostgreSQL and
//! MySQL/MariaDB, on diesel with r2d2 connection pooling.
//!
//! The dialect is chosen by the URL given to [`Config::from_url`]; each one is behind a cargo
//! feature:
//!
//! | URL | feature | notes |
//! |---|---|---|
//! | `sqlite://PATH`, `sqlite:PATH` | `sqlite` (default) | embedded, bundled SQLite, no server; shared by every process that opens the file |
//! | `sqlite::memory:` | `sqlite` | one private database per [`SqlCore`], single process, not persistent |
//! | `postgres://…`, `postgresql://…` | `postgres` | libpq |
//! | `mysql://…` | `mysql` | MySQL or MariaDB through libmysqlclient; connect by `127.0.0.1` |
//!
//! ```no_run
//! use std::sync::Arc;
//! use cachier_core::Core;
//! use cachier_sql::{Config, SqlCore};
//!
//! # async fn demo() -> cachier_core::Result<()> {
//! let core: Arc<dyn Core> = Arc::new(
//!     SqlCore::connect(Config::from_url("sqlite:///var/cache/app/cachier.db")?.pool_size(4)).await?,
//! );
//! # Ok(()) }
//! ```
//!
//! # Schema
//!
//! Everything lives in one table, `cachier_entries` unless [`Config::table`] names another
//! (validated: lowercase ASCII letters, digits and `_`; table names are never taken from
//! anywhere else, and every value is a bound parameter). One row per key:
//!
//! | column | SQLite | PostgreSQL | MySQL/MariaDB | meaning |
//! |---|---|---|---|---|
//! | `namespace` | `TEXT` | `VARCHAR(64) COLLATE "C"` | `VARCHAR(64)` ascii, binary collation | [`Namespace`](cachier_core::Namespace) |
//! | `function_id` | `TEXT` | `VARCHAR(256) COLLATE "C"` | `VARBINARY(256)` | [`FuncId`](cachier_core::FuncId), UTF-8, ≤ 256 bytes |
//! | `arg_hash` | `TEXT` | `VARCHAR(64) COLLATE "C"` | `VARCHAR(64)` ascii, binary collation | the argument hash, 64 hex digits |
//! | `value` | `BLOB` | `BYTEA` | `LONGBLOB` | the encoded value; `NULL` while only a claim exists |
//! | `stored_at` | `INTEGER` | `BIGINT` | `BIGINT` | when the value was stored, UTC ms since the epoch |
//! | `claim_until` | `INTEGER` | `BIGINT` | `BIGINT` | expiry of the claim (a lease), UTC ms, or `NULL` |
//! | `claim_token` | `TEXT` | `VARCHAR(64)` | `VARCHAR(64)` ascii | the holder's [`ClaimToken`](cachier_core::ClaimToken) |
//!
//! The primary key is `(namespace, function_id, arg_hash)`. Key columns compare byte for byte on
//! every dialect (no case folding, no trailing-space padding), so `foo` and `Foo`, or `foo` and
//! `foo_bar`, are different functions; on MariaDB the key is 384 bytes, far below InnoDB's
//! 3072-byte index limit.
//!
//! The table is created by embedded migrations (`migrations/{sqlite,postgres,mysql}/`, run with
//! diesel_migrations' harness and recorded in `__diesel_schema_migrations` as `{table}/NNNN`)
//! when a [`SqlCore`] connects. Several processes may connect at once: migrations run under a
//! lock that spans processes (`pg_advisory_lock`, `GET_LOCK`, or an immediate SQLite
//! transaction).
//!
//! # Statements
//!
//! - `set` is one upsert that stores the value and ends any claim.
//! - `claim` is one statement that takes the claim only when there is none or it has expired:
//!   `INSERT … ON CONFLICT … DO UPDATE … WHERE claim_until IS NULL OR claim_until <= now
//!   RETURNING …` on SQLite and PostgreSQL; on MySQL `INSERT … ON DUPLICATE KEY UPDATE` with
//!   `IF()` assignments, after which the stored token says who won. A lost race reads the
//!   holder's expiry and answers [`Claim::Held`](cachier_core::Claim::Held).
//! - `renew` and `release` are `UPDATE`/`DELETE` statements conditioned on the holder's token.
//! - `remove`, `clear`, `clear_claims`, `delete_stale` and `clear_namespace` run in one
//!   transaction each, scoped by `namespace = ? AND function_id = ?` (never `LIKE`).
//! - `wait` polls with backoff (the trait's default).
//!
//! Times come from the client (`Timestamp::now()`), not the database server, so the clocks of
//! the machines sharing a database must agree to within a small part of a lease.
//!
//! # Size limits
//!
//! [`SqlCore::max_value_bytes`] (also reported in
//! [`Capabilities::max_value_bytes`](cachier_core::Capabilities)) is the largest value `set`
//! accepts; a larger one is refused with [`ErrorKind::TooLarge`](cachier_core::ErrorKind)
//! before anything is sent, and the front end decides (per `strict`) whether that is an error.
//!
//! - SQLite: [`SQLITE_MAX_VALUE_BYTES`] (SQLite's default `SQLITE_MAX_LENGTH` of 10⁹ bytes less
//!   64 KiB for the rest of the row).
//! - PostgreSQL: [`POSTGRES_MAX_VALUE_BYTES`] (10⁹ bytes; a `BYTEA` field holds at most 1 GiB).
//! - MySQL/MariaDB: the server's `max_allowed_packet` less [`MYSQL_PACKET_OVERHEAD`], read when
//!   connecting (16 MiB − 64 KiB with MariaDB's default). Raise `max_allowed_packet` on the
//!   server for larger values.
//!
//! [`Config::max_value_bytes`] lowers the limit further.
//!
//! # Concurrency and failures
//!
//! diesel is synchronous, so every operation runs on tokio's blocking pool with a connection
//! from an r2d2 pool ([`Config::pool_size`]). Connections are not tested on checkout (that
//! would add a round trip to every hit); instead an operation that fails because its
//! connection is gone (a server restart, a cut network) drops that connection and is tried
//! once more on a connection that answers a ping. Failures are
//! [`ErrorKind::Unavailable`](cachier_core::ErrorKind) when trying again may help.
//!
//! SQLite runs in WAL mode with a busy timeout ([`Config::busy_timeout`]): readers never block,
//! and writers — threads or processes — take turns on the file, so heavy concurrent writing to
//! one SQLite file serializes.
//!
//! # Timeouts and outages
//!
//! PostgreSQL and MySQL/MariaDB:
//!
//! | timeout | bounds | default | set with |
//! |---|---|---|---|
//! | connect | waiting for a connection: from the pool when all are busy, or from the server (libpq's `connect_timeout`, whole seconds, at least 2) | 1 s | [`Config::connect_timeout`], a PostgreSQL URL's `connect_timeout` |
//! | statement | each statement of `get`, `set`, `claim`, `renew`, `release`, `remove`: cancelled by the server (`statement_timeout`, MariaDB's `max_statement_time`, MySQL's `max_execution_time` for reads) | 1 s | [`Config::statement_timeout`] |
//! | maintenance | the same for `clear`, `clear_claims`, `delete_stale`, `clear_namespace` and the migrations | 60 s | [`Config::maintenance_timeout`] |
//!
//! The caller also stops waiting on its own: at most the connect timeout for a connection,
//! then the statement (or maintenance) timeout for the work, even when the server is too
//! frozen to cancel anything; the blocking task then finishes in the background. What a call
//! costs while the server is in trouble, by default:
//!
//! - **down** (nothing listens, or the server is shutting down): the pooled connections fail
//!   at once and are dropped, then a new connection is refused; the call fails within a
//!   millisecond or two on a local network (measured on loopback: 0.1 to 2 ms). So does
//!   [`SqlCore::connect`], which opens one connection of its own before the pool.
//! - **host unreachable**: the connect timeout, 1 s.
//! - **hung** (connections open, nothing answers) or a statement stuck behind a lock: the
//!   statement timeout, 1 s.
//!
//! The front end takes the first such failure for an outage and skips the backend until a
//! probe finds it answering again. Nothing needs restarting when the server is back: while the
//! pool holds no connection, an operation opens one of its own (so the first call after the
//! server's return succeeds), and r2d2 refills the pool in the background (its attempts while
//! the server is down are logged at `debug` level).
//!
//! # Tests
//!
//! `cargo test -p cachier-sql --all-features` runs, for each dialect, the shared conformance
//! suite (`tests/conformance_*.rs`) and this crate's own checks (`tests/{sqlite,postgres,mysql}.rs`:
//! hostile function ids and table names, size limits, migrations raced by several processes,
//! statement timeouts, and private servers stopped, frozen and restarted under a live pool).
//! The servers come from `CACHIER_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and `CACHIER_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`); SQLite uses a file under the target's temporary
//! directory. Every test works in a namespace of its own and clears it afterwards. The tests
//! that stop a server, and the conformance suite's outage checks, start private PostgreSQL and
//! MariaDB servers of their own (`tests/support/servers.rs`: `initdb` + `postgres`, run as the
//! `postgres` user under root; `mariadb-install-db` + `mariadbd`), each on a free port in a
//! temporary directory removed afterwards.

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!("cachier-sql needs at least one of the features `sqlite`, `postgres`, `mysql`");

mod config;
mod connect;
mod core;
mod error;
mod migrate;
mod pool;

pub use crate::config::{Config, DEFAULT_TABLE, Dialect, MAX_TABLE_NAME_LEN};
pub use crate::core::{
    MYSQL_PACKET_OVERHEAD, POSTGRES_MAX_VALUE_BYTES, SQLITE_MAX_VALUE_BYTES, SqlCore,
};
