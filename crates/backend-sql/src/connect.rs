//! Opening a core, per dialect: the settings every connection gets (SQLite's pragmas, the
//! server's statement timeout), the migrations, the value limit and the pool.
//!
//! On PostgreSQL and MySQL/MariaDB the first thing done is opening one connection of our own:
//! a server that is down fails it within a round trip (refused) or the connect timeout, with
//! the client library's own message, instead of after the pool's whole wait. That connection
//! runs the migrations (under a lock that spans processes, and the maintenance timeout) and
//! reads what the rest needs, then the pool is built.

#[cfg(any(feature = "postgres", feature = "mysql"))]
use std::time::Duration;

use diesel::connection::SimpleConnection;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use diesel::r2d2::ManageConnection;
#[cfg(feature = "mysql")]
use diesel::sql_types::{Nullable, Text};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use diesel::{RunQueryDsl, sql_query};
use diesel_migrations::MigrationHarness;

#[cfg(feature = "mysql")]
use diesel::MysqlConnection;
#[cfg(feature = "postgres")]
use diesel::PgConnection;
#[cfg(feature = "sqlite")]
use diesel::SqliteConnection;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use diesel::sql_types::BigInt;

use crate::config::{Config, Target};
#[cfg(feature = "mysql")]
use crate::core::MYSQL_PACKET_OVERHEAD;
#[cfg(feature = "postgres")]
use crate::core::POSTGRES_MAX_VALUE_BYTES;
#[cfg(feature = "sqlite")]
use crate::core::SQLITE_MAX_VALUE_BYTES;
use crate::error::DbError;
use crate::migrate::Migrations;
use crate::pool::{ConnPool, Manager, Pool};

#[cfg(feature = "mysql")]
const MYSQL_LONGBLOB_MAX: u64 = u32::MAX as u64;

/// What opening a core produced.
pub(crate) struct Opened {
    pub(crate) pool: Pool,
    /// The largest value the database takes.
    pub(crate) server_limit: u64,
    /// How a maintenance operation lifts the statement timeout to the maintenance timeout.
    pub(crate) maintenance: MaintenanceSession,
}

/// Statements run on a connection before and after a maintenance operation (`clear`,
/// `clear_claims`, `delete_stale`, `clear_namespace`), which may touch many rows: the first
/// sets the session's statement timeout to the maintenance timeout, the second sets it back.
#[derive(Debug, Clone, Default)]
pub(crate) struct MaintenanceSession {
    pub(crate) begin: Option<String>,
    pub(crate) end: Option<String>,
}

/// Opens the pool of `config`'s database, creating or migrating the table.
pub(crate) fn open(config: &Config) -> Result<Opened, DbError> {
    match &config.target {
        #[cfg(feature = "sqlite")]
        Target::SqliteFile(_) | Target::SqliteMemory => Ok(Opened {
            pool: Pool::Sqlite(open_sqlite(config)?),
            server_limit: SQLITE_MAX_VALUE_BYTES,
            maintenance: MaintenanceSession::default(),
        }),
        #[cfg(feature = "postgres")]
        Target::Postgres(url) => open_postgres(url, config),
        #[cfg(feature = "mysql")]
        Target::Mysql(url) => open_mysql(url, config),
        #[allow(unreachable_patterns)]
        _ => Err(DbError::Migration(
            format!(
                "cachier-sql was built without the `{}` feature",
                config.dialect()
            )
            .into(),
        )),
    }
}

#[cfg(feature = "sqlite")]
fn open_sqlite(config: &Config) -> Result<ConnPool<SqliteConnection>, DbError> {
    let url = match &config.target {
        Target::SqliteFile(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(DbError::Directory)?;
            }
            path.to_string_lossy().into_owned()
        }
        _ => ":memory:".to_owned(),
    };
    let busy_ms = config.busy_timeout.as_millis();
    let memory = config.is_memory();
    let manager = Manager::new(&url, move |conn: &mut SqliteConnection| {
        // The busy timeout comes first so that switching to WAL waits for other processes.
        conn.batch_execute(&format!("PRAGMA busy_timeout = {busy_ms};"))?;
        if !memory {
            conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
        }
        Ok(())
    });
    let pool = ConnPool::build(manager, config)?;
    let mut conn = pool.get()?;
    let table = config.table.clone();
    conn.conn
        .immediate_transaction(|c| {
            c.run_pending_migrations(Migrations::sqlite(&table))
                .map(|applied| applied.len())
        })
        .map(|applied| tracing::debug!(applied, table = %config.table, "sqlite migrations"))
        .map_err(DbError::Migration)?;
    drop(conn);
    Ok(pool)
}

/// Whole milliseconds of a timeout, as the servers' settings take them (0: no limit).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn millis(timeout: Duration) -> u128 {
    timeout.as_millis()
}

/// The session lock that serializes migrations across processes.
#[cfg(feature = "postgres")]
const POSTGRES_MIGRATION_LOCK: i64 = 0x6361_6368_6965_7201; // "cachier" + 1

/// The URL handed to libpq: `connect_timeout` (whole seconds, libpq's minimum being 2) is added
/// from the connect timeout unless the URL has its own.
#[cfg(feature = "postgres")]
pub(crate) fn libpq_url(url: &str, connect_timeout: Duration) -> String {
    if crate::config::url_parameter(url, "connect_timeout").is_some() {
        return url.to_owned();
    }
    let seconds = connect_timeout.as_secs() + u64::from(connect_timeout.subsec_nanos() > 0);
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}connect_timeout={}", seconds.max(2))
}

#[cfg(feature = "postgres")]
fn open_postgres(url: &str, config: &Config) -> Result<Opened, DbError> {
    let url = libpq_url(url, config.connect_timeout);
    let statement = format!(
        "SET statement_timeout = {}",
        millis(config.statement_timeout)
    );
    let maintenance = format!(
        "SET statement_timeout = {}",
        millis(config.maintenance_timeout)
    );

    let mut admin = Manager::<PgConnection>::new(&url, |_| Ok(()))
        .connect()
        .map_err(DbError::Connect)?;
    admin
        .conn
        .batch_execute(&maintenance)
        .map_err(DbError::Query)?;
    migrate_postgres(&mut admin.conn, &config.table)?;
    drop(admin);

    let setup = statement.clone();
    let manager = Manager::new(&url, move |conn: &mut PgConnection| {
        conn.batch_execute(&setup)
    });
    Ok(Opened {
        pool: Pool::Postgres(ConnPool::build(manager, config)?),
        server_limit: POSTGRES_MAX_VALUE_BYTES,
        maintenance: MaintenanceSession {
            begin: Some(maintenance),
            end: Some(statement),
        },
    })
}

#[cfg(feature = "postgres")]
fn migrate_postgres(c: &mut PgConnection, table: &str) -> Result<(), DbError> {
    sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(POSTGRES_MIGRATION_LOCK)
        .execute(c)
        .map_err(DbError::Query)?;
    let outcome = c
        .run_pending_migrations(Migrations::postgres(table))
        .map(|applied| applied.len());
    let unlock = sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(POSTGRES_MIGRATION_LOCK)
        .execute(c);
    let applied = outcome.map_err(DbError::Migration)?;
    unlock.map_err(DbError::Query)?;
    tracing::debug!(applied, table, "postgres migrations");
    Ok(())
}

#[cfg(feature = "mysql")]
#[derive(diesel::QueryableByName)]
struct Number {
    #[diesel(sql_type = Nullable<BigInt>)]
    n: Option<i64>,
}

#[cfg(feature = "mysql")]
#[derive(diesel::QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    v: String,
}

#[cfg(feature = "mysql")]
const MYSQL_MIGRATION_LOCK: &str = "cachier_sql_migrations";

#[cfg(feature = "mysql")]
fn open_mysql(url: &str, config: &Config) -> Result<Opened, DbError> {
    let mut admin = Manager::<MysqlConnection>::new(url, |_| Ok(()))
        .connect()
        .map_err(DbError::Connect)?;
    let versions: Vec<Version> = sql_query("SELECT VERSION() AS v")
        .load(&mut admin.conn)
        .map_err(DbError::Query)?;
    let mariadb = versions
        .first()
        .is_some_and(|r| r.v.to_ascii_lowercase().contains("mariadb"));
    // MariaDB limits every statement (`max_statement_time`, in seconds); MySQL only limits
    // `SELECT`s (`max_execution_time`, in milliseconds), so there the caller's deadline is
    // all that bounds a write to a stalled server.
    let session = |timeout: Duration| {
        if mariadb {
            format!(
                "SET SESSION max_statement_time = {:.3}",
                timeout.as_secs_f64()
            )
        } else {
            format!("SET SESSION max_execution_time = {}", millis(timeout))
        }
    };
    let statement = session(config.statement_timeout);
    let maintenance = session(config.maintenance_timeout);
    admin
        .conn
        .batch_execute(&maintenance)
        .map_err(DbError::Query)?;
    migrate_mysql(&mut admin.conn, &config.table, config.maintenance_timeout)?;
    let server_limit = mysql_value_limit(&mut admin.conn)?;
    drop(admin);

    let setup = statement.clone();
    let manager = Manager::new(url, move |conn: &mut MysqlConnection| {
        conn.batch_execute(&setup)
    });
    Ok(Opened {
        pool: Pool::Mysql(ConnPool::build(manager, config)?),
        server_limit,
        maintenance: if mariadb {
            MaintenanceSession {
                begin: Some(maintenance),
                end: Some(statement),
            }
        } else {
            MaintenanceSession::default()
        },
    })
}

#[cfg(feature = "mysql")]
fn migrate_mysql(c: &mut MysqlConnection, table: &str, limit: Duration) -> Result<(), DbError> {
    // Wait for another process's migrations up to the maintenance timeout (2 minutes without
    // one), so `GET_LOCK` answers before the statement timeout cancels it.
    let wait: i64 = if limit.is_zero() {
        120
    } else {
        limit.as_secs().clamp(1, 120) as i64
    };
    let locked: Vec<Number> = sql_query("SELECT CAST(GET_LOCK(?, ?) AS SIGNED) AS n")
        .bind::<Text, _>(MYSQL_MIGRATION_LOCK)
        .bind::<BigInt, _>(wait)
        .load(c)
        .map_err(DbError::Query)?;
    if locked.first().and_then(|r| r.n) != Some(1) {
        return Err(DbError::Migration(
            format!("another process held the migration lock for {wait} s").into(),
        ));
    }
    let outcome = c
        .run_pending_migrations(Migrations::mysql(table))
        .map(|applied| applied.len());
    let unlock: diesel::QueryResult<Vec<Number>> =
        sql_query("SELECT CAST(RELEASE_LOCK(?) AS SIGNED) AS n")
            .bind::<Text, _>(MYSQL_MIGRATION_LOCK)
            .load(c);
    let applied = outcome.map_err(DbError::Migration)?;
    unlock.map_err(DbError::Query)?;
    tracing::debug!(applied, table, "mysql migrations");
    Ok(())
}

/// The value limit of this MySQL server: `max_allowed_packet` less the statement's overhead.
#[cfg(feature = "mysql")]
fn mysql_value_limit(c: &mut MysqlConnection) -> Result<u64, DbError> {
    let rows: Vec<Number> = sql_query("SELECT CAST(@@max_allowed_packet AS SIGNED) AS n")
        .load(c)
        .map_err(DbError::Query)?;
    let packet = rows
        .first()
        .and_then(|r| r.n)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    Ok(packet
        .saturating_sub(MYSQL_PACKET_OVERHEAD)
        .min(MYSQL_LONGBLOB_MAX))
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    #[test]
    fn libpq_gets_the_connect_timeout_unless_the_url_has_one() {
        assert_eq!(
            libpq_url("postgres://u@h/db", Duration::from_secs(1)),
            "postgres://u@h/db?connect_timeout=2"
        );
        assert_eq!(
            libpq_url(
                "postgres://u@h/db?sslmode=require",
                Duration::from_millis(2500)
            ),
            "postgres://u@h/db?sslmode=require&connect_timeout=3"
        );
        assert_eq!(
            libpq_url(
                "postgres://u@h/db?connect_timeout=7",
                Duration::from_secs(1)
            ),
            "postgres://u@h/db?connect_timeout=7"
        );
    }
}
