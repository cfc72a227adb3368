//! Settings of the SQL backend, parsed from a URL.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use cachier_core::{Error, Result};

/// The table every entry is stored in unless [`Config::table`] says otherwise.
pub const DEFAULT_TABLE: &str = "cachier_entries";

/// The longest table name accepted, in bytes.
///
/// Migrations are recorded in diesel's `__diesel_schema_migrations` table under a version that
/// contains the table name, and that column holds 50 characters on MySQL.
pub const MAX_TABLE_NAME_LEN: usize = 40;

/// The database family a [`Config`] points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// SQLite, embedded (a file, or memory).
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

impl Dialect {
    /// The short name used in logs and errors (`sqlite`, `postgres`, `mysql`).
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
        }
    }

    /// The cargo feature that compiles this dialect in.
    fn feature(self) -> &'static str {
        self.as_str()
    }

    fn compiled_in(self) -> bool {
        match self {
            Dialect::Sqlite => cfg!(feature = "sqlite"),
            Dialect::Postgres => cfg!(feature = "postgres"),
            Dialect::Mysql => cfg!(feature = "mysql"),
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the database is.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A SQLite database file.
    SqliteFile(PathBuf),
    /// A private in-memory SQLite database, alive as long as the [`SqlCore`](crate::SqlCore).
    SqliteMemory,
    /// A PostgreSQL connection URL, handed to libpq as it is.
    Postgres(String),
    /// A MySQL connection URL, handed to the client library as it is.
    Mysql(String),
}

/// The settings of a [`SqlCore`](crate::SqlCore): where the database is, which table to use, and
/// how to pool connections.
///
/// ```
/// use std::time::Duration;
/// use cachier_sql::{Config, Dialect};
///
/// let config = Config::from_url("sqlite:///var/cache/app/cachier.db")?
///     .table("app_cache")?
///     .pool_size(4)
///     .connect_timeout(Duration::from_secs(5));
/// assert_eq!(config.dialect(), Dialect::Sqlite);
/// assert_eq!(config.table_name(), "app_cache");
///
/// assert!(Config::from_url("sqlite::memory:")?.table("entries; DROP TABLE x").is_err());
/// # Ok::<(), cachier_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) target: Target,
    pub(crate) table: String,
    pub(crate) pool_size: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) statement_timeout: Duration,
    pub(crate) maintenance_timeout: Duration,
    pub(crate) busy_timeout: Duration,
    pub(crate) max_value_bytes: Option<u64>,
}

impl Config {
    /// Default of [`Config::connect_timeout`]: what a call costs at most, for a connection,
    /// while the server's host does not answer at all.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default of [`Config::statement_timeout`]: what a call costs at most, for its
    /// statements, while the server accepts them but does not answer.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default of [`Config::maintenance_timeout`]: long enough to clear a function of millions
    /// of rows.
    pub const DEFAULT_MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default of [`Config::busy_timeout`] (SQLite).
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

    /// Parses a database URL:
    ///
    /// - `sqlite://PATH` (`sqlite:///abs/path.db`, `sqlite://relative.db`) or `sqlite:PATH`: a
    ///   SQLite file, created if missing;
    /// - `sqlite::memory:`: a private in-memory SQLite database (one connection, one process);
    /// - `postgres://...` or `postgresql://...`: PostgreSQL, as libpq understands the URL (its
    ///   `connect_timeout` parameter, in seconds, also sets [`Config::connect_timeout`]);
    /// - `mysql://...`: MySQL or MariaDB (connect by `127.0.0.1`, not `localhost`, unless the
    ///   client's socket path matches the server's).
    ///
    /// A dialect whose cargo feature is not enabled is a [`Config`](cachier_core::ErrorKind::Config)
    /// error.
    pub fn from_url(url: &str) -> Result<Self> {
        let url = url.trim();
        let target = if url == "sqlite::memory:" || url == "sqlite://:memory:" {
            Target::SqliteMemory
        } else if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))
        {
            if rest.is_empty() {
                return Err(Error::config("a sqlite URL needs a path: sqlite://PATH"));
            }
            Target::SqliteFile(PathBuf::from(rest))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Target::Postgres(url.to_owned())
        } else if url.starts_with("mysql://") {
            Target::Mysql(url.to_owned())
        } else {
            return Err(Error::config(format!(
                "unsupported database URL {:?}: use sqlite://PATH, sqlite::memory:, \
                 postgres://... or mysql://...",
                redact(url)
            )));
        };
        let connect_timeout = match &target {
            Target::Postgres(url) => libpq_connect_timeout(url)?,
            _ => None,
        };
        let config = Config {
            target,
            table: DEFAULT_TABLE.to_owned(),
            pool_size: 8,
            connect_timeout: connect_timeout.unwrap_or(Self::DEFAULT_CONNECT_TIMEOUT),
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            maintenance_timeout: Self::DEFAULT_MAINTENANCE_TIMEOUT,
            busy_timeout: Self::DEFAULT_BUSY_TIMEOUT,
            max_value_bytes: None,
        };
        let dialect = config.dialect();
        if !dialect.compiled_in() {
            return Err(Error::config(format!(
                "cachier-sql was built without the `{}` feature needed for {:?}",
                dialect.feature(),
                redact(url)
            )));
        }
        Ok(config)
    }

    /// A SQLite database file at `path` (created if missing).
    pub fn sqlite_file(path: impl Into<PathBuf>) -> Result<Self> {
        let mut config = Config::from_url("sqlite::memory:")?;
        config.target = Target::SqliteFile(path.into());
        Ok(config)
    }

    /// Uses the table `name` instead of [`DEFAULT_TABLE`]. Names are 1 to
    /// [`MAX_TABLE_NAME_LEN`] characters from `[a-z0-9_]`, starting with a letter or `_`, and not
    /// starting with `sqlite_` or `__diesel`; anything else is refused, so a name from a
    /// configuration file can never inject SQL.
    pub fn table(mut self, name: &str) -> Result<Self> {
        validate_table_name(name)?;
        self.table = name.to_owned();
        Ok(self)
    }

    /// The most connections the pool opens (default 8). A `sqlite::memory:` database always
    /// uses one connection, since each connection would otherwise see its own empty database.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long an operation waits for a connection: from the pool when all of its
    /// connections are busy, or from the server when a new one is opened (default
    /// [`Config::DEFAULT_CONNECT_TIMEOUT`], at least 1 ms). On PostgreSQL it is also libpq's
    /// `connect_timeout`, which counts in whole seconds and at least 2; the MySQL client library
    /// takes no connect timeout from diesel, but no caller waits longer than this for it.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// PostgreSQL and MySQL/MariaDB: how long one statement of `get`, `set`, `claim`, `renew`,
    /// `release` and `remove` may run (default [`Config::DEFAULT_STATEMENT_TIMEOUT`]). The
    /// server cancels a statement that takes longer (`statement_timeout` on PostgreSQL,
    /// `max_statement_time` on MariaDB; MySQL's `max_execution_time` only limits reads), and
    /// no caller waits longer than the connect timeout plus this for a whole operation, even on
    /// a frozen server. [`Duration::ZERO`] turns both limits off.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// PostgreSQL and MySQL/MariaDB: [`Config::statement_timeout`] for the operations that
    /// may touch many rows (`clear`, `clear_claims`, `delete_stale`, `clear_namespace`) and
    /// for the migrations run when connecting (default
    /// [`Config::DEFAULT_MAINTENANCE_TIMEOUT`]). [`Duration::ZERO`] turns the limits off.
    pub fn maintenance_timeout(mut self, timeout: Duration) -> Self {
        self.maintenance_timeout = timeout;
        self
    }

    /// SQLite only: how long a statement waits for another connection's write lock before it
    /// fails (default [`Config::DEFAULT_BUSY_TIMEOUT`]). Writers across processes take turns on
    /// one SQLite file.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Lowers the largest value stored below the dialect's own limit (see the crate docs).
    /// Larger values are refused with [`TooLarge`](cachier_core::ErrorKind::TooLarge).
    pub fn max_value_bytes(mut self, limit: u64) -> Self {
        self.max_value_bytes = Some(limit);
        self
    }

    /// The database family.
    pub fn dialect(&self) -> Dialect {
        match self.target {
            Target::SqliteFile(_) | Target::SqliteMemory => Dialect::Sqlite,
            Target::Postgres(_) => Dialect::Postgres,
            Target::Mysql(_) => Dialect::Mysql,
        }
    }

    /// The table entries are stored in.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Whether this is a `sqlite::memory:` database, private to one process.
    pub fn is_memory(&self) -> bool {
        self.target == Target::SqliteMemory
    }

    /// The time an operation waits for a connection.
    pub fn connect_time_limit(&self) -> Duration {
        self.connect_timeout
    }

    /// The time one statement of a per-key operation may run (zero: no limit).
    pub fn statement_time_limit(&self) -> Duration {
        self.statement_timeout
    }

    /// The time one statement of a maintenance operation may run (zero: no limit).
    pub fn maintenance_time_limit(&self) -> Duration {
        self.maintenance_timeout
    }
}

/// The value of the query parameter `name` of a URL, if it has one.
pub(crate) fn url_parameter<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// libpq's `connect_timeout` parameter of a PostgreSQL URL (whole seconds), if it has one.
fn libpq_connect_timeout(url: &str) -> Result<Option<Duration>> {
    let Some(value) = url_parameter(url, "connect_timeout") else {
        return Ok(None);
    };
    match value.parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Some(Duration::from_secs(seconds))),
        _ => Err(Error::config(format!(
            "invalid connect_timeout {value:?} in {:?}: use a positive number of seconds",
            redact(url)
        ))),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.target {
            Target::SqliteFile(path) => format!("sqlite://{}", path.display()),
            Target::SqliteMemory => "sqlite::memory:".to_owned(),
            Target::Postgres(url) | Target::Mysql(url) => redact(url),
        };
        f.debug_struct("Config")
            .field("target", &target)
            .field("table", &self.table)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("maintenance_timeout", &self.maintenance_timeout)
            .field("busy_timeout", &self.busy_timeout)
            .field("max_value_bytes", &self.max_value_bytes)
            .finish()
    }
}

/// Refuses any table name that is not a plain lowercase identifier.
pub(crate) fn validate_table_name(name: &str) -> Result<()> {
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !first_ok
        || !rest_ok
        || name.len() > MAX_TABLE_NAME_LEN
        || name.starts_with("sqlite_")
        || name.starts_with("__diesel")
    {
        return Err(Error::config(format!(
            "invalid table name {name:?}: use 1 to {MAX_TABLE_NAME_LEN} characters from [a-z0-9_], \
             starting with a letter or '_' (and not with 'sqlite_' or '__diesel')"
        )));
    }
    Ok(())
}

/// Hides the password of a URL for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cachier_core::ErrorKind;

    #[test]
    fn hostile_table_names_are_refused() {
        for bad in [
            "",
            "Entries",
            "1table",
            "entries; DROP TABLE users",
            "entries\"",
            "entries`",
            "a.b",
            "a b",
            "sqlite_master",
            "__diesel_schema_migrations",
            "ünïcode",
            &"t".repeat(MAX_TABLE_NAME_LEN + 1),
        ] {
            let err = validate_table_name(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
        }
        for good in [
            "cachier_entries",
            "_t",
            "t1",
            &"t".repeat(MAX_TABLE_NAME_LEN),
        ] {
            assert!(validate_table_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn urls_select_the_dialect() {
        #[cfg(feature = "sqlite")]
        {
            let c = Config::from_url("sqlite:///tmp/x.db").unwrap();
            assert_eq!(c.dialect(), Dialect::Sqlite);
            assert!(c.target == Target::SqliteFile(PathBuf::from("/tmp/x.db")));
            let c = Config::from_url("sqlite:rel.db").unwrap();
            assert!(c.target == Target::SqliteFile(PathBuf::from("rel.db")));
            assert!(Config::from_url("sqlite::memory:").unwrap().is_memory());
            assert!(Config::from_url("sqlite://").is_err());
        }
        #[cfg(feature = "postgres")]
        assert_eq!(
            Config::from_url("postgresql://u@h/db").unwrap().dialect(),
            Dialect::Postgres
        );
        #[cfg(feature = "mysql")]
        assert_eq!(
            Config::from_url("mysql://root@127.0.0.1/test")
                .unwrap()
                .dialect(),
            Dialect::Mysql
        );
        let err = Config::from_url("redis://localhost").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://user:secret@host:5432/db"),
            "postgres://user:***@host:5432/db"
        );
        assert_eq!(
            redact("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
        let config = Config {
            target: Target::Postgres("postgres://u:pw@h/db".into()),
            table: DEFAULT_TABLE.into(),
            pool_size: 1,
            connect_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(1),
            maintenance_timeout: Duration::from_secs(1),
            busy_timeout: Duration::from_secs(1),
            max_value_bytes: None,
        };
        assert!(!format!("{config:?}").contains("pw"));
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn timeouts_have_deliberate_defaults() {
        let c = Config::from_url("sqlite::memory:").unwrap();
        assert_eq!(c.connect_time_limit(), Duration::from_secs(1));
        assert_eq!(c.statement_time_limit(), Duration::from_secs(1));
        assert_eq!(c.maintenance_time_limit(), Duration::from_secs(60));
        let c = c
            .connect_timeout(Duration::ZERO)
            .statement_timeout(Duration::ZERO);
        assert_eq!(c.connect_time_limit(), Duration::from_millis(1));
        assert_eq!(c.statement_time_limit(), Duration::ZERO);
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn a_postgres_url_sets_the_connect_timeout() {
        let c = Config::from_url("postgres://u:pw@h/db?sslmode=disable&connect_timeout=5").unwrap();
        assert_eq!(c.connect_time_limit(), Duration::from_secs(5));
        let err = Config::from_url("postgres://u:pw@h/db?connect_timeout=soon").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
}
