//! Connections: an r2d2 pool per core, without a test query per checkout, that fails fast while
//! the server is down and recovers by itself when it is back.
//!
//! - **Checkout.** An idle pooled connection is taken at once. When the pool holds no
//!   connection at all (the server was down, and r2d2 is reconnecting in the background with
//!   its own backoff), the operation opens a connection of its own instead of waiting for the
//!   pool: against a server that is down this fails within a round trip (a refused connection)
//!   or the connect timeout, and against one that is back it succeeds at once. Otherwise the
//!   operation waits for a busy connection to come back: a pool whose connections are all in
//!   use is a queue, not an outage (64 callers on 8 connections must not fail, nor open the
//!   front end's circuit), so the wait goes on, up to [`QUEUE_LIMIT`], for as long as the pool
//!   still holds connections; once it holds none, it fails after the connect timeout.
//! - **Dead connections.** An operation that fails because its connection is gone marks it
//!   broken (r2d2 drops it and opens another) and is tried once more on a connection that
//!   answers a ping; after a restart every idle connection is dead, and each one found is
//!   dropped on the way.
//! - r2d2's own connection errors (every background attempt while the server is down) are
//!   logged at `debug` level; the front end reports the outage itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use diesel::r2d2::{self, ManageConnection, R2D2Connection};
use diesel::result::QueryResult;

#[cfg(feature = "mysql")]
use diesel::MysqlConnection;
#[cfg(feature = "postgres")]
use diesel::PgConnection;
#[cfg(feature = "sqlite")]
use diesel::SqliteConnection;

use crate::config::Config;
use crate::core::{Ops, Statements};
use crate::error::{DbError, is_connection_error};

/// The pool of one core, for its dialect.
pub(crate) enum Pool {
    #[cfg(feature = "sqlite")]
    Sqlite(ConnPool<SqliteConnection>),
    #[cfg(feature = "postgres")]
    Postgres(ConnPool<PgConnection>),
    #[cfg(feature = "mysql")]
    Mysql(ConnPool<MysqlConnection>),
}

/// The longest an operation waits in the queue for one of the pool's busy connections.
pub(crate) const QUEUE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Pool {
    /// Whether the pool holds connections (all of them may be in use): waiting for one is then
    /// queueing behind other operations, not a sign that the server is gone.
    pub(crate) fn holds_connections(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => pool.pool.state().connections > 0,
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => pool.pool.state().connections > 0,
            #[cfg(feature = "mysql")]
            Pool::Mysql(pool) => pool.pool.state().connections > 0,
        }
    }

    /// Runs `work` on a connection (see the module docs); `connected` is called once the first
    /// connection is in hand.
    pub(crate) fn with_conn<T>(
        &self,
        sql: &Statements,
        work: &dyn Fn(&mut dyn Ops, &Statements) -> QueryResult<T>,
        connected: &mut dyn FnMut(),
    ) -> Result<T, DbError> {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => pool.attempt(sql, work, connected),
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => pool.attempt(sql, work, connected),
            #[cfg(feature = "mysql")]
            Pool::Mysql(pool) => pool.attempt(sql, work, connected),
        }
    }
}

/// A connection and whether it failed at the connection level.
pub(crate) struct Tracked<C> {
    pub(crate) conn: C,
    broken: bool,
}

/// What runs on every new connection: SQLite pragmas, the session's statement timeout.
type Setup<C> = dyn Fn(&mut C) -> QueryResult<()> + Send + Sync;

/// diesel's connection manager plus a setup step per new connection and the `broken` mark.
pub(crate) struct Manager<C: R2D2Connection + 'static> {
    url: Arc<str>,
    inner: r2d2::ConnectionManager<C>,
    setup: Arc<Setup<C>>,
}

impl<C: R2D2Connection + 'static> Clone for Manager<C> {
    fn clone(&self) -> Self {
        Manager {
            url: Arc::clone(&self.url),
            inner: r2d2::ConnectionManager::new(&*self.url),
            setup: Arc::clone(&self.setup),
        }
    }
}

impl<C: R2D2Connection + 'static> Manager<C> {
    pub(crate) fn new(
        url: &str,
        setup: impl Fn(&mut C) -> QueryResult<()> + Send + Sync + 'static,
    ) -> Self {
        Manager {
            url: url.into(),
            inner: r2d2::ConnectionManager::new(url),
            setup: Arc::new(setup),
        }
    }
}

impl<C: R2D2Connection + Send + 'static> ManageConnection for Manager<C> {
    type Connection = Tracked<C>;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<Tracked<C>, r2d2::Error> {
        let mut conn = self.inner.connect()?;
        (self.setup)(&mut conn).map_err(r2d2::Error::QueryError)?;
        Ok(Tracked {
            conn,
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut Tracked<C>) -> Result<(), r2d2::Error> {
        self.inner.is_valid(&mut conn.conn)
    }

    fn has_broken(&self, conn: &mut Tracked<C>) -> bool {
        conn.broken || self.inner.has_broken(&mut conn.conn)
    }
}

/// Logs r2d2's connection errors (one per background attempt while the server is down) at
/// `debug` level instead of through the `log` crate at `error` level.
#[derive(Debug)]
struct DebugLog;

impl r2d2::HandleError<r2d2::Error> for DebugLog {
    fn handle_error(&self, error: r2d2::Error) {
        tracing::debug!(%error, "cachier-sql: opening a pooled connection failed");
    }
}

/// The r2d2 pool of one connection type, and the manager that opens connections of our own
/// when the pool has none.
pub(crate) struct ConnPool<C: R2D2Connection + 'static> {
    pool: r2d2::Pool<Manager<C>>,
    /// `None` for a `sqlite::memory:` database, whose one connection is the database.
    direct: Option<Manager<C>>,
    /// Connections of our own open right now; at most the pool's size.
    direct_open: AtomicU32,
}

/// A connection from the pool, or one of our own (dropped after one operation).
enum Checkout<'a, C: R2D2Connection + Send + 'static> {
    Pooled(r2d2::PooledConnection<Manager<C>>),
    Direct {
        conn: Tracked<C>,
        _permit: DirectPermit<'a>,
    },
}

/// Counts a connection of our own while it is open.
struct DirectPermit<'a>(&'a AtomicU32);

impl Drop for DirectPermit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<C: R2D2Connection + Send + 'static> Checkout<'_, C> {
    fn tracked(&mut self) -> &mut Tracked<C> {
        match self {
            Checkout::Pooled(conn) => conn,
            Checkout::Direct { conn, .. } => conn,
        }
    }
}

impl<C: R2D2Connection + Ops + Send + 'static> ConnPool<C> {
    /// Builds the pool and opens all its connections (see [`build_pool`]).
    pub(crate) fn build(manager: Manager<C>, config: &Config) -> Result<Self, DbError> {
        let direct = (!config.is_memory()).then(|| manager.clone());
        Ok(ConnPool {
            pool: build_pool(manager, config)?,
            direct,
            direct_open: AtomicU32::new(0),
        })
    }

    /// A pooled connection now, for setup work right after the pool was built.
    #[cfg(feature = "sqlite")]
    pub(crate) fn get(&self) -> Result<r2d2::PooledConnection<Manager<C>>, DbError> {
        self.pool.get().map_err(DbError::Pool)
    }

    /// A connection for one operation (see the module docs).
    fn checkout(&self) -> Result<Checkout<'_, C>, DbError> {
        if let Some(conn) = self.pool.try_get() {
            return Ok(Checkout::Pooled(conn));
        }
        if let Some(manager) = &self.direct
            && self.pool.state().connections == 0
            && let Some(permit) = self.direct_permit()
        {
            return manager
                .connect()
                .map(|conn| Checkout::Direct {
                    conn,
                    _permit: permit,
                })
                .map_err(DbError::Connect);
        }
        // Busy, not gone: queue for a connection while the pool still holds some.
        let queued = std::time::Instant::now();
        loop {
            match self.pool.get() {
                Ok(conn) => return Ok(Checkout::Pooled(conn)),
                Err(e) if self.pool.state().connections == 0 || queued.elapsed() >= QUEUE_LIMIT => {
                    return Err(DbError::Pool(e));
                }
                Err(_) => {}
            }
        }
    }

    fn direct_permit(&self) -> Option<DirectPermit<'_>> {
        let max = self.pool.max_size();
        self.direct_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| DirectPermit(&self.direct_open))
    }

    fn attempt<T>(
        &self,
        sql: &Statements,
        work: &dyn Fn(&mut dyn Ops, &Statements) -> QueryResult<T>,
        connected: &mut dyn FnMut(),
    ) -> Result<T, DbError> {
        let mut conn = self.checkout()?;
        connected();
        match work(&mut conn.tracked().conn, sql) {
            Ok(value) => Ok(value),
            Err(e) if is_connection_error(&e) => {
                conn.tracked().broken = true;
                drop(conn);
                tracing::debug!(error = %e, "cachier-sql: connection lost; retrying once on a live connection");
                let mut conn = self.live_connection()?;
                work(&mut conn.tracked().conn, sql).map_err(|e| {
                    conn.tracked().broken = is_connection_error(&e);
                    DbError::Query(e)
                })
            }
            Err(e) => Err(DbError::Query(e)),
        }
    }

    /// A connection that answers a ping (a new one of our own needs none). After a server
    /// restart every idle connection in the pool is dead; each one found is dropped, and r2d2
    /// opens new ones.
    fn live_connection(&self) -> Result<Checkout<'_, C>, DbError> {
        let mut last = None;
        for _ in 0..=self.pool.max_size() {
            let mut conn = self.checkout()?;
            if matches!(conn, Checkout::Direct { .. }) {
                return Ok(conn);
            }
            match conn.tracked().conn.ping_server() {
                Ok(()) => return Ok(conn),
                Err(e) => {
                    conn.tracked().broken = true;
                    last = Some(e);
                }
            }
        }
        Err(last.map_or(DbError::NoLiveConnection, DbError::Query))
    }
}

/// Builds an r2d2 pool with the connect timeout as its checkout timeout, no test query per
/// checkout, and every connection opened before it returns.
fn build_pool<C: R2D2Connection + Send + 'static>(
    manager: Manager<C>,
    config: &Config,
) -> Result<r2d2::Pool<Manager<C>>, DbError> {
    let memory = config.is_memory();
    let size = if memory { 1 } else { config.pool_size };
    // Every connection is opened while the pool is built (build waits for `min_idle`), never
    // later on r2d2's background threads: a process that exits while such a thread is in the
    // middle of a TLS handshake crashes in libpq/OpenSSL's exit-time cleanup.
    let builder = r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(size))
        .connection_timeout(config.connect_timeout)
        .test_on_check_out(false)
        .error_handler(Box::new(DebugLog));
    // The one connection of an in-memory database is the database: never let it go.
    let builder = if memory {
        builder.idle_timeout(None).max_lifetime(None)
    } else {
        builder
    };
    builder.build(manager).map_err(DbError::Pool)
}
