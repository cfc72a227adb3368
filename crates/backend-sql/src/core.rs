//! The [`Core`] implementation: pooled diesel connections driven from `spawn_blocking`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cachier_core::{
    Capabilities, Claim, ClaimToken, Core, Entry, Error, ErrorKind, FuncId, Key, Namespace, Result,
    Timestamp, Usage,
};
use diesel::result::{Error as DieselError, QueryResult};
use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use diesel::{QueryableByName, RunQueryDsl, sql_query};

#[cfg(feature = "mysql")]
use diesel::MysqlConnection;
#[cfg(feature = "postgres")]
use diesel::PgConnection;
#[cfg(feature = "sqlite")]
use diesel::SqliteConnection;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use diesel::connection::Connection as _;
use diesel::r2d2::R2D2Connection;

use crate::config::{Config, Dialect};
use crate::connect::{self, MaintenanceSession};
use crate::pool::{Pool, QUEUE_LIMIT};

/// The largest value stored in SQLite: its default `SQLITE_MAX_LENGTH` (10^9 bytes per string,
/// BLOB and row) less room for the rest of the row.
pub const SQLITE_MAX_VALUE_BYTES: u64 = 1_000_000_000 - 64 * 1024;
/// The largest value stored in PostgreSQL: a `BYTEA` field holds at most 1 GiB; this keeps a
/// margin below it for the protocol and the rest of the row.
pub const POSTGRES_MAX_VALUE_BYTES: u64 = 1_000_000_000;
/// What a MySQL/MariaDB statement needs besides the value itself; the value limit there is the
/// server's `max_allowed_packet` less this (a `LONGBLOB` alone would hold 4 GiB).
pub const MYSQL_PACKET_OVERHEAD: u64 = 64 * 1024;

/// How often `claim` re-reads when it lost the race but then finds no live claim (the holder
/// released in between).
const CLAIM_ATTEMPTS: usize = 8;

/// A cachier [`Core`] on a SQL database: SQLite (embedded), PostgreSQL or MySQL/MariaDB.
///
/// Cloning is cheap; clones share the connection pool.
#[derive(Clone)]
pub struct SqlCore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    sql: Statements,
    dialect: Dialect,
    table: String,
    max_value_bytes: u64,
    memory: bool,
    /// How long a caller waits for a connection, then for the statements of a per-key and of a
    /// maintenance operation (`None`: no limit). SQLite is bounded by its busy timeout instead.
    connect_limit: Option<Duration>,
    request_limit: Option<Duration>,
    maintenance_limit: Option<Duration>,
}

/// Added to each of the caller's limits, so that the pool's or the server's own timeout error,
/// which says more, arrives first when they are on time.
const LIMIT_MARGIN: Duration = Duration::from_millis(50);

/// Which time limit an operation runs under.
#[derive(Clone, Copy)]
enum Budget {
    /// `get`, `set`, `claim`, `renew`, `release`, `remove`: the statement timeout.
    Request,
    /// `clear`, `clear_claims`, `delete_stale`, `clear_namespace`: the maintenance timeout.
    Maintenance,
}

impl std::fmt::Debug for SqlCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlCore")
            .field("dialect", &self.inner.dialect)
            .field("table", &self.inner.table)
            .field("max_value_bytes", &self.inner.max_value_bytes)
            .finish_non_exhaustive()
    }
}

impl SqlCore {
    /// Connects, creates the pool and runs the pending migrations (creating the table on first
    /// use). The blocking work runs on tokio's blocking pool.
    pub async fn connect(config: Config) -> Result<Self> {
        tokio::task::spawn_blocking(move || SqlCore::connect_blocking(config))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Backend, "the connecting task failed")
                    .with_source(e)
                    .with_operation("connect")
            })?
    }

    /// Shorthand for [`Config::from_url`] then [`SqlCore::connect`].
    pub async fn from_url(url: &str) -> Result<Self> {
        SqlCore::connect(Config::from_url(url)?).await
    }

    /// [`SqlCore::connect`] for callers outside an async runtime.
    pub fn connect_blocking(config: Config) -> Result<Self> {
        let dialect = config.dialect();
        let backend = dialect.as_str();
        let opened =
            connect::open(&config).map_err(|e| e.into_error("connect", backend, &config.table))?;
        let max_value_bytes = config
            .max_value_bytes
            .map_or(opened.server_limit, |own| own.min(opened.server_limit));
        tracing::info!(
            dialect = backend,
            table = %config.table,
            max_value_bytes,
            target = ?config,
            "cachier-sql connected"
        );
        // The server cancels a statement past its timeout; the caller also stops waiting then,
        // even if the server is too frozen to cancel anything.
        let server = dialect != Dialect::Sqlite;
        let limit =
            |timeout: Duration| (server && !timeout.is_zero()).then_some(timeout + LIMIT_MARGIN);
        Ok(SqlCore {
            inner: Arc::new(Inner {
                pool: opened.pool,
                sql: Statements::new(dialect, &config.table, opened.maintenance),
                dialect,
                table: config.table.clone(),
                max_value_bytes,
                memory: config.is_memory(),
                connect_limit: limit(config.connect_timeout),
                request_limit: limit(config.statement_timeout),
                maintenance_limit: limit(config.maintenance_timeout),
            }),
        })
    }

    /// The database family this core talks to.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// The table entries are stored in.
    pub fn table_name(&self) -> &str {
        &self.inner.table
    }

    /// The largest value [`Core::set`] accepts, in bytes (see the crate docs per dialect).
    pub fn max_value_bytes(&self) -> u64 {
        self.inner.max_value_bytes
    }

    /// Runs a per-key operation (see [`SqlCore::run_within`]).
    async fn run<T, F>(&self, operation: &'static str, on: String, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut dyn Ops, &Statements) -> QueryResult<T> + Send + 'static,
    {
        self.run_within(Budget::Request, operation, on, work).await
    }

    /// Runs `work` on a pooled connection on the blocking pool and turns failures into errors
    /// naming `operation` and `on` (a key, a function or a namespace).
    ///
    /// The caller waits at most the connect timeout for the connection, then the budget's
    /// statement timeout for the work: past either it fails as `Unavailable`, while the
    /// blocking task finishes (or is cancelled by the server) on its own.
    async fn run_within<T, F>(
        &self,
        budget: Budget,
        operation: &'static str,
        on: String,
        work: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut dyn Ops, &Statements) -> QueryResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let backend = self.inner.dialect.as_str();
        let (connected, has_connection) = tokio::sync::oneshot::channel::<()>();
        let mut connected = Some(connected);
        let mut task = tokio::task::spawn_blocking(move || {
            inner.pool.with_conn(&inner.sql, &work, &mut || {
                if let Some(connected) = connected.take() {
                    let _ = connected.send(());
                }
            })
        });
        let unavailable = |message: String| {
            Error::unavailable(message)
                .with_operation(operation)
                .with_backend(backend)
                .with_key(&on)
        };
        // The task drops the sender without sending when it fails before it has a connection;
        // its error is then waiting below. While the pool holds connections that are merely
        // all in use, the operation is queueing, not facing an outage: it waits on (see the
        // pool's docs).
        if let Some(limit) = self.inner.connect_limit {
            let queued = tokio::time::Instant::now();
            let mut has_connection = has_connection;
            while tokio::time::timeout(limit, &mut has_connection)
                .await
                .is_err()
            {
                if !self.inner.pool.holds_connections() || queued.elapsed() >= QUEUE_LIMIT {
                    return Err(unavailable(format!(
                        "no database connection within {:?}",
                        queued.elapsed()
                    )));
                }
            }
        }
        let limit = match budget {
            Budget::Request => self.inner.request_limit,
            Budget::Maintenance => self.inner.maintenance_limit,
        };
        let outcome = match limit {
            Some(limit) => match tokio::time::timeout(limit, &mut task).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return Err(unavailable(format!(
                        "the database did not answer within {limit:?}"
                    )));
                }
            },
            None => task.await,
        };
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.into_error(operation, backend, &on)),
            Err(join) => Err(Error::new(ErrorKind::Backend, "the database task failed")
                .with_source(join)
                .with_operation(operation)
                .with_backend(backend)
                .with_key(on)),
        }
    }
}

/// Converts a timestamp to the `BIGINT` columns, saturating (no date this side of the year
/// 292 million overflows).
fn millis(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp(u64::try_from(ms).unwrap_or(0))
}

/// The bound parameters naming one key.
pub(crate) struct KeyParts {
    namespace: String,
    func: String,
    hash: String,
}

impl KeyParts {
    fn of(key: &Key) -> Self {
        KeyParts {
            namespace: key.namespace.as_str().to_owned(),
            func: key.func.as_str().to_owned(),
            hash: key.hash.to_hex(),
        }
    }
}

#[async_trait]
impl Core for SqlCore {
    fn name(&self) -> &'static str {
        self.inner.dialect.as_str()
    }

    fn capabilities(&self) -> Capabilities {
        let shared = !self.inner.memory;
        Capabilities {
            cross_process: shared,
            native_wakeup: false,
            persistent: shared,
            max_value_bytes: Some(self.inner.max_value_bytes),
        }
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        let k = KeyParts::of(key);
        let row = self
            .run("get", key.to_string(), move |c, sql| c.get(sql, &k))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let now = millis(Timestamp::now());
        let claim_until = row.claim_until.filter(|&until| until > now).map(timestamp);
        if row.value.is_none() && claim_until.is_none() {
            return Ok(None);
        }
        Ok(Some(Entry {
            stored_at: if row.value.is_some() {
                timestamp(row.stored_at)
            } else {
                Timestamp::default()
            },
            value: row.value.map(Bytes::from),
            claim_until,
        }))
    }

    async fn set(&self, key: &Key, value: Bytes, stored_at: Timestamp) -> Result<()> {
        let limit = self.inner.max_value_bytes;
        if value.len() as u64 > limit {
            return Err(Error::too_large(format!(
                "a value of {} bytes exceeds this {} table's limit of {limit} bytes",
                value.len(),
                self.inner.dialect
            ))
            .with_operation("set")
            .with_backend(self.name())
            .with_key(key));
        }
        let k = KeyParts::of(key);
        let stored_at = millis(stored_at);
        self.run("set", key.to_string(), move |c, sql| {
            c.set(sql, &k, &value, stored_at)
        })
        .await
    }

    async fn claim(&self, key: &Key, lease: Duration) -> Result<Claim> {
        let k = KeyParts::of(key);
        let token = ClaimToken::generate();
        let mine = token.as_str().to_owned();
        let outcome = self
            .run("claim", key.to_string(), move |c, sql| {
                for _ in 0..CLAIM_ATTEMPTS {
                    let now = Timestamp::now();
                    let until = millis(now.add(lease));
                    if c.try_claim(sql, &k, until, &mine, millis(now))? {
                        return Ok(Some(None));
                    }
                    // Lost: read who holds it. The holder may have released (or a `set` ended
                    // the claim) in between; then try again.
                    let state = c.claim_state(sql, &k)?;
                    let now = millis(Timestamp::now());
                    match state {
                        Some(s) if s.claim_token.as_deref() == Some(mine.as_str()) => {
                            // Our own earlier attempt won before its reply was lost.
                            return Ok(Some(None));
                        }
                        Some(ClaimRow {
                            claim_until: Some(until),
                            ..
                        }) if until > now => return Ok(Some(Some(until))),
                        _ => continue,
                    }
                }
                Ok(None)
            })
            .await?;
        match outcome {
            Some(None) => Ok(Claim::Acquired(token)),
            Some(Some(until)) => Ok(Claim::Held {
                until: timestamp(until),
            }),
            None => Err(Error::unavailable(format!(
                "the claim changed hands {CLAIM_ATTEMPTS} times in a row; try again"
            ))
            .with_operation("claim")
            .with_backend(self.name())
            .with_key(key)),
        }
    }

    async fn renew(&self, key: &Key, token: &ClaimToken, lease: Duration) -> Result<bool> {
        let k = KeyParts::of(key);
        let token = token.as_str().to_owned();
        self.run("renew", key.to_string(), move |c, sql| {
            let now = Timestamp::now();
            c.renew(sql, &k, &token, millis(now.add(lease)), millis(now))
        })
        .await
    }

    async fn release(&self, key: &Key, token: &ClaimToken) -> Result<()> {
        let k = KeyParts::of(key);
        let token = token.as_str().to_owned();
        self.run("release", key.to_string(), move |c, sql| {
            c.release(sql, &k, &token)
        })
        .await
    }

    async fn remove(&self, key: &Key) -> Result<bool> {
        let k = KeyParts::of(key);
        self.run("remove", key.to_string(), move |c, sql| c.remove(sql, &k))
            .await
    }

    async fn clear(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let scope = Scope::function(namespace, func);
        self.run_within(
            Budget::Maintenance,
            "clear",
            scope.describe(),
            move |c, sql| c.clear(sql, &scope),
        )
        .await
    }

    async fn clear_claims(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let scope = Scope::function(namespace, func);
        self.run_within(
            Budget::Maintenance,
            "clear_claims",
            scope.describe(),
            move |c, sql| c.clear_claims(sql, &scope, millis(Timestamp::now())),
        )
        .await
    }

    async fn delete_stale(
        &self,
        namespace: &Namespace,
        func: &FuncId,
        stored_before: Timestamp,
    ) -> Result<u64> {
        let scope = Scope::function(namespace, func);
        let before = millis(stored_before);
        self.run_within(
            Budget::Maintenance,
            "delete_stale",
            scope.describe(),
            move |c, sql| c.delete_stale(sql, &scope, before, millis(Timestamp::now())),
        )
        .await
    }

    /// One `SELECT COUNT(*), SUM(LENGTH(value))` over the namespace's rows with a value (a
    /// range of the primary key), under the maintenance timeout.
    async fn usage(&self, namespace: &Namespace) -> Result<Usage> {
        let ns = namespace.as_str().to_owned();
        let row = self
            .run_within(
                Budget::Maintenance,
                "usage",
                format!("namespace {ns}"),
                move |c, sql| c.usage(sql, &ns),
            )
            .await?;
        Ok(Usage {
            entries: u64::try_from(row.entries).ok(),
            bytes: u64::try_from(row.bytes).ok(),
        })
    }

    async fn clear_namespace(&self, namespace: &Namespace) -> Result<u64> {
        let scope = Scope {
            namespace: namespace.as_str().to_owned(),
            func: None,
        };
        self.run_within(
            Budget::Maintenance,
            "clear_namespace",
            scope.describe(),
            move |c, sql| c.clear(sql, &scope),
        )
        .await
    }
}

/// What `clear` and friends act on: one function of a namespace, or a whole namespace.
pub(crate) struct Scope {
    namespace: String,
    func: Option<String>,
}

impl Scope {
    fn function(namespace: &Namespace, func: &FuncId) -> Self {
        Scope {
            namespace: namespace.as_str().to_owned(),
            func: Some(func.as_str().to_owned()),
        }
    }

    fn describe(&self) -> String {
        match &self.func {
            Some(func) => format!("{}/{}", self.namespace, func),
            None => self.namespace.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQL text, per dialect.
// ---------------------------------------------------------------------------------------------

/// Every statement the core runs, built once for one dialect and one (validated) table name.
/// Values are always bound parameters.
pub(crate) struct Statements {
    /// Run before and after a maintenance operation, outside its transaction (see
    /// [`MaintenanceSession`]).
    maintenance: MaintenanceSession,
    /// Whether `claim` reports a win with `RETURNING` (SQLite, PostgreSQL) or must read the
    /// token back (MySQL).
    claim_returns: bool,
    get: String,
    set: String,
    claim: String,
    claim_state: String,
    renew: String,
    release_row: String,
    release_claim: String,
    remove_value: String,
    remove_rest: String,
    /// Per scope (function, namespace): delete rows with a value, then the rest.
    clear_values: [String; 2],
    clear_rest: [String; 2],
    claims_delete_live: String,
    claims_delete_rest: String,
    claims_end_live: String,
    stale_keep_claim: String,
    stale_delete: String,
    stale_sweep: String,
    /// The namespace's values and their bytes (`Core::usage`).
    usage: String,
}

impl Statements {
    fn new(dialect: Dialect, table: &str, maintenance: MaintenanceSession) -> Self {
        let t = match dialect {
            Dialect::Mysql => format!("`{table}`"),
            Dialect::Sqlite | Dialect::Postgres => format!("\"{table}\""),
        };
        let key = "namespace = ? AND function_id = ? AND arg_hash = ?";
        let func = "namespace = ? AND function_id = ?";
        let ns = "namespace = ?";
        let columns =
            "(namespace, function_id, arg_hash, value, stored_at, claim_until, claim_token)";
        let (set, claim) = match dialect {
            Dialect::Mysql => (
                format!(
                    "INSERT INTO {t} {columns} VALUES (?, ?, ?, ?, ?, NULL, NULL) \
                     ON DUPLICATE KEY UPDATE value = VALUES(value), stored_at = VALUES(stored_at), \
                     claim_until = NULL, claim_token = NULL"
                ),
                // Assignments run left to right: the token is replaced only when the claim is
                // absent or expired, and the expiry follows the token.
                format!(
                    "INSERT INTO {t} {columns} VALUES (?, ?, ?, NULL, 0, ?, ?) \
                     ON DUPLICATE KEY UPDATE \
                     claim_token = IF(claim_until IS NULL OR claim_until <= ?, \
                                      VALUES(claim_token), claim_token), \
                     claim_until = IF(claim_token = VALUES(claim_token), \
                                      VALUES(claim_until), claim_until)"
                ),
            ),
            Dialect::Sqlite | Dialect::Postgres => (
                format!(
                    "INSERT INTO {t} {columns} VALUES (?, ?, ?, ?, ?, NULL, NULL) \
                     ON CONFLICT (namespace, function_id, arg_hash) DO UPDATE SET \
                     value = excluded.value, stored_at = excluded.stored_at, \
                     claim_until = NULL, claim_token = NULL"
                ),
                format!(
                    "INSERT INTO {t} {columns} VALUES (?, ?, ?, NULL, 0, ?, ?) \
                     ON CONFLICT (namespace, function_id, arg_hash) DO UPDATE SET \
                     claim_until = excluded.claim_until, claim_token = excluded.claim_token \
                     WHERE {t}.claim_until IS NULL OR {t}.claim_until <= ? \
                     RETURNING claim_until, claim_token"
                ),
            ),
        };
        // MySQL sums integers to DECIMAL; the other two keep BIGINT.
        let bigint = match dialect {
            Dialect::Mysql => "SIGNED",
            Dialect::Sqlite | Dialect::Postgres => "BIGINT",
        };
        let p = |sql: String| placeholders(dialect, &sql);
        Statements {
            maintenance,
            claim_returns: dialect != Dialect::Mysql,
            get: p(format!(
                "SELECT value, stored_at, claim_until FROM {t} WHERE {key}"
            )),
            set: p(set),
            claim: p(claim),
            claim_state: p(format!(
                "SELECT claim_until, claim_token FROM {t} WHERE {key}"
            )),
            renew: p(format!(
                "UPDATE {t} SET claim_until = ? WHERE {key} AND claim_token = ? AND claim_until > ?"
            )),
            release_row: p(format!(
                "DELETE FROM {t} WHERE {key} AND claim_token = ? AND value IS NULL"
            )),
            release_claim: p(format!(
                "UPDATE {t} SET claim_until = NULL, claim_token = NULL \
                 WHERE {key} AND claim_token = ?"
            )),
            remove_value: p(format!("DELETE FROM {t} WHERE {key} AND value IS NOT NULL")),
            remove_rest: p(format!("DELETE FROM {t} WHERE {key}")),
            clear_values: [
                p(format!(
                    "DELETE FROM {t} WHERE {func} AND value IS NOT NULL"
                )),
                p(format!("DELETE FROM {t} WHERE {ns} AND value IS NOT NULL")),
            ],
            clear_rest: [
                p(format!("DELETE FROM {t} WHERE {func}")),
                p(format!("DELETE FROM {t} WHERE {ns}")),
            ],
            claims_delete_live: p(format!(
                "DELETE FROM {t} WHERE {func} AND value IS NULL AND claim_until > ?"
            )),
            claims_delete_rest: p(format!("DELETE FROM {t} WHERE {func} AND value IS NULL")),
            claims_end_live: p(format!(
                "UPDATE {t} SET claim_until = NULL, claim_token = NULL \
                 WHERE {func} AND claim_until > ?"
            )),
            stale_keep_claim: p(format!(
                "UPDATE {t} SET value = NULL, stored_at = 0 \
                 WHERE {func} AND value IS NOT NULL AND stored_at < ? AND claim_until > ?"
            )),
            stale_delete: p(format!(
                "DELETE FROM {t} WHERE {func} AND value IS NOT NULL AND stored_at < ?"
            )),
            stale_sweep: p(format!(
                "DELETE FROM {t} WHERE {func} AND value IS NULL \
                 AND (claim_until IS NULL OR claim_until <= ?)"
            )),
            usage: p(format!(
                "SELECT CAST(COUNT(*) AS {bigint}) AS entries, \
                 CAST(COALESCE(SUM(LENGTH(value)), 0) AS {bigint}) AS bytes \
                 FROM {t} WHERE {ns} AND value IS NOT NULL"
            )),
        }
    }
}

/// PostgreSQL numbers its parameters (`$1`, `$2`, ...); SQLite and MySQL take `?`. The
/// statements above contain no `?` other than parameters (identifiers are validated).
fn placeholders(dialect: Dialect, sql: &str) -> String {
    if dialect != Dialect::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The operations, written once and compiled for each connection type.
// ---------------------------------------------------------------------------------------------

#[derive(QueryableByName)]
pub(crate) struct EntryRow {
    #[diesel(sql_type = Nullable<Binary>)]
    value: Option<Vec<u8>>,
    #[diesel(sql_type = BigInt)]
    stored_at: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    claim_until: Option<i64>,
}

#[derive(QueryableByName)]
pub(crate) struct UsageRow {
    #[diesel(sql_type = BigInt)]
    entries: i64,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

#[derive(QueryableByName)]
pub(crate) struct ClaimRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    claim_until: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    claim_token: Option<String>,
}

/// The statements of one operation each, on one connection. Implemented for every enabled
/// connection type by `impl_ops!`, so the code exists once.
pub(crate) trait Ops {
    fn get(&mut self, sql: &Statements, k: &KeyParts) -> QueryResult<Option<EntryRow>>;
    fn set(
        &mut self,
        sql: &Statements,
        k: &KeyParts,
        value: &[u8],
        stored_at: i64,
    ) -> QueryResult<()>;
    /// One atomic statement; `true` if `token` now holds the claim.
    fn try_claim(
        &mut self,
        sql: &Statements,
        k: &KeyParts,
        until: i64,
        token: &str,
        now: i64,
    ) -> QueryResult<bool>;
    fn claim_state(&mut self, sql: &Statements, k: &KeyParts) -> QueryResult<Option<ClaimRow>>;
    fn renew(
        &mut self,
        sql: &Statements,
        k: &KeyParts,
        token: &str,
        until: i64,
        now: i64,
    ) -> QueryResult<bool>;
    fn release(&mut self, sql: &Statements, k: &KeyParts, token: &str) -> QueryResult<()>;
    fn remove(&mut self, sql: &Statements, k: &KeyParts) -> QueryResult<bool>;
    fn clear(&mut self, sql: &Statements, scope: &Scope) -> QueryResult<u64>;
    fn clear_claims(&mut self, sql: &Statements, scope: &Scope, now: i64) -> QueryResult<u64>;
    fn delete_stale(
        &mut self,
        sql: &Statements,
        scope: &Scope,
        before: i64,
        now: i64,
    ) -> QueryResult<u64>;
    fn usage(&mut self, sql: &Statements, namespace: &str) -> QueryResult<UsageRow>;
    fn ping_server(&mut self) -> QueryResult<()>;
}

/// Runs a maintenance operation between the session statements that lift the statement timeout
/// to the maintenance timeout and set it back. A failure to set it back is reported (a
/// connection error there marks the connection broken) unless the operation failed first.
fn maintenance<C, T>(
    conn: &mut C,
    sql: &Statements,
    operation: impl FnOnce(&mut C) -> QueryResult<T>,
) -> QueryResult<T>
where
    C: diesel::connection::SimpleConnection,
{
    if let Some(begin) = &sql.maintenance.begin {
        conn.batch_execute(begin)?;
    }
    let outcome = operation(conn);
    if let Some(end) = &sql.maintenance.end {
        let reset = conn.batch_execute(end);
        if outcome.is_ok() {
            reset?;
        }
    }
    outcome
}

/// Binds the three key parts in order.
macro_rules! bind_key {
    ($query:expr, $k:expr) => {
        $query
            .bind::<Text, _>(&$k.namespace)
            .bind::<Text, _>(&$k.func)
            .bind::<Text, _>(&$k.hash)
    };
}

macro_rules! impl_ops {
    ($conn:ty, $transaction:ident) => {
        impl Ops for $conn {
            fn get(&mut self, sql: &Statements, k: &KeyParts) -> QueryResult<Option<EntryRow>> {
                let mut rows: Vec<EntryRow> = bind_key!(sql_query(&sql.get), k).load(self)?;
                Ok(rows.pop())
            }

            fn set(
                &mut self,
                sql: &Statements,
                k: &KeyParts,
                value: &[u8],
                stored_at: i64,
            ) -> QueryResult<()> {
                bind_key!(sql_query(&sql.set), k)
                    .bind::<Binary, _>(value)
                    .bind::<BigInt, _>(stored_at)
                    .execute(self)?;
                Ok(())
            }

            fn try_claim(
                &mut self,
                sql: &Statements,
                k: &KeyParts,
                until: i64,
                token: &str,
                now: i64,
            ) -> QueryResult<bool> {
                let query = bind_key!(sql_query(&sql.claim), k)
                    .bind::<BigInt, _>(until)
                    .bind::<Text, _>(token)
                    .bind::<BigInt, _>(now);
                if sql.claim_returns {
                    let rows: Vec<ClaimRow> = query.load(self)?;
                    Ok(rows.iter().any(|r| r.claim_token.as_deref() == Some(token)))
                } else {
                    query.execute(self)?;
                    let state = self.claim_state(sql, k)?;
                    Ok(state.is_some_and(|s| s.claim_token.as_deref() == Some(token)))
                }
            }

            fn claim_state(
                &mut self,
                sql: &Statements,
                k: &KeyParts,
            ) -> QueryResult<Option<ClaimRow>> {
                let mut rows: Vec<ClaimRow> =
                    bind_key!(sql_query(&sql.claim_state), k).load(self)?;
                Ok(rows.pop())
            }

            fn renew(
                &mut self,
                sql: &Statements,
                k: &KeyParts,
                token: &str,
                until: i64,
                now: i64,
            ) -> QueryResult<bool> {
                let query = sql_query(&sql.renew).bind::<BigInt, _>(until);
                let changed = bind_key!(query, k)
                    .bind::<Text, _>(token)
                    .bind::<BigInt, _>(now)
                    .execute(self)?;
                Ok(changed > 0)
            }

            fn release(&mut self, sql: &Statements, k: &KeyParts, token: &str) -> QueryResult<()> {
                // A row that holds only this claim goes; otherwise the claim is cleared and the
                // value stays.
                bind_key!(sql_query(&sql.release_row), k)
                    .bind::<Text, _>(token)
                    .execute(self)?;
                bind_key!(sql_query(&sql.release_claim), k)
                    .bind::<Text, _>(token)
                    .execute(self)?;
                Ok(())
            }

            fn remove(&mut self, sql: &Statements, k: &KeyParts) -> QueryResult<bool> {
                self.$transaction::<_, DieselError, _>(|c| {
                    let values = bind_key!(sql_query(&sql.remove_value), k).execute(c)?;
                    bind_key!(sql_query(&sql.remove_rest), k).execute(c)?;
                    Ok(values > 0)
                })
            }

            fn usage(&mut self, sql: &Statements, namespace: &str) -> QueryResult<UsageRow> {
                maintenance(self, sql, |conn| {
                    sql_query(&sql.usage)
                        .bind::<Text, _>(namespace)
                        .get_result(conn)
                })
            }

            fn clear(&mut self, sql: &Statements, scope: &Scope) -> QueryResult<u64> {
                maintenance(self, sql, |conn| {
                    conn.$transaction::<_, DieselError, _>(|c| {
                        let values = match &scope.func {
                            Some(func) => {
                                let n = sql_query(&sql.clear_values[0])
                                    .bind::<Text, _>(&scope.namespace)
                                    .bind::<Text, _>(func)
                                    .execute(c)?;
                                sql_query(&sql.clear_rest[0])
                                    .bind::<Text, _>(&scope.namespace)
                                    .bind::<Text, _>(func)
                                    .execute(c)?;
                                n
                            }
                            None => {
                                let n = sql_query(&sql.clear_values[1])
                                    .bind::<Text, _>(&scope.namespace)
                                    .execute(c)?;
                                sql_query(&sql.clear_rest[1])
                                    .bind::<Text, _>(&scope.namespace)
                                    .execute(c)?;
                                n
                            }
                        };
                        Ok(values as u64)
                    })
                })
            }

            fn clear_claims(
                &mut self,
                sql: &Statements,
                scope: &Scope,
                now: i64,
            ) -> QueryResult<u64> {
                let func = scope.func.as_deref().unwrap_or_default();
                maintenance(self, sql, |conn| {
                    conn.$transaction::<_, DieselError, _>(|c| {
                        let claim_only = sql_query(&sql.claims_delete_live)
                            .bind::<Text, _>(&scope.namespace)
                            .bind::<Text, _>(func)
                            .bind::<BigInt, _>(now)
                            .execute(c)?;
                        sql_query(&sql.claims_delete_rest)
                            .bind::<Text, _>(&scope.namespace)
                            .bind::<Text, _>(func)
                            .execute(c)?;
                        let with_value = sql_query(&sql.claims_end_live)
                            .bind::<Text, _>(&scope.namespace)
                            .bind::<Text, _>(func)
                            .bind::<BigInt, _>(now)
                            .execute(c)?;
                        Ok((claim_only + with_value) as u64)
                    })
                })
            }

            fn delete_stale(
                &mut self,
                sql: &Statements,
                scope: &Scope,
                before: i64,
                now: i64,
            ) -> QueryResult<u64> {
                let func = scope.func.as_deref().unwrap_or_default();
                maintenance(self, sql, |conn| {
                    conn.$transaction::<_, DieselError, _>(|c| {
                        // A stale value under a live claim goes, the claim stays.
                        let claimed = sql_query(&sql.stale_keep_claim)
                            .bind::<Text, _>(&scope.namespace)
                            .bind::<Text, _>(func)
                            .bind::<BigInt, _>(before)
                            .bind::<BigInt, _>(now)
                            .execute(c)?;
                        let unclaimed = sql_query(&sql.stale_delete)
                            .bind::<Text, _>(&scope.namespace)
                            .bind::<Text, _>(func)
                            .bind::<BigInt, _>(before)
                            .execute(c)?;
                        // Rows left holding only an expired claim are swept on the way.
                        sql_query(&sql.stale_sweep)
                            .bind::<Text, _>(&scope.namespace)
                            .bind::<Text, _>(func)
                            .bind::<BigInt, _>(now)
                            .execute(c)?;
                        Ok((claimed + unclaimed) as u64)
                    })
                })
            }

            fn ping_server(&mut self) -> QueryResult<()> {
                R2D2Connection::ping(self)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
impl_ops!(SqliteConnection, immediate_transaction);
#[cfg(feature = "postgres")]
impl_ops!(PgConnection, transaction);
#[cfg(feature = "mysql")]
impl_ops!(MysqlConnection, transaction);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_parameters_are_numbered() {
        assert_eq!(
            placeholders(Dialect::Postgres, "a = ? AND b = ? OR c = ?"),
            "a = $1 AND b = $2 OR c = $3"
        );
        assert_eq!(placeholders(Dialect::Mysql, "a = ?"), "a = ?");
    }

    #[test]
    fn statements_quote_the_table() {
        let pg = Statements::new(Dialect::Postgres, "t_x", MaintenanceSession::default());
        assert!(pg.get.contains("FROM \"t_x\" WHERE namespace = $1"));
        let my = Statements::new(Dialect::Mysql, "t_x", MaintenanceSession::default());
        assert!(my.claim.contains("INSERT INTO `t_x`"));
        assert!(!my.claim_returns);
    }
}
