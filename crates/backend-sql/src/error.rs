//! Failures below the [`Core`](cachier_core::Core) methods, and how each becomes an
//! [`ErrorKind`].
//!
//! Anything that says the database cannot be reached or did not answer in time — a refused or
//! timed-out connection, a connection that died, a server shutting down or out of connection
//! slots, no pooled connection within the connect timeout, a statement cancelled by the
//! statement timeout — is [`ErrorKind::Unavailable`], which the front end treats as an outage.

use cachier_core::{Error, ErrorKind};
use diesel::r2d2::PoolError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// A failure below the [`Core`](cachier_core::Core) methods, before it is given its context.
pub(crate) enum DbError {
    /// No pooled connection within the connect timeout (r2d2 says why the last attempt failed).
    Pool(PoolError),
    /// Opening a connection of our own failed.
    Connect(diesel::r2d2::Error),
    /// A statement failed.
    Query(DieselError),
    Migration(Box<dyn std::error::Error + Send + Sync>),
    #[cfg(feature = "sqlite")]
    Directory(std::io::Error),
    NoLiveConnection,
}

impl DbError {
    pub(crate) fn into_error(
        self,
        operation: &'static str,
        backend: &'static str,
        on: &str,
    ) -> Error {
        let error = match self {
            DbError::Pool(e) => {
                let kind = connect_failure_kind(&e.to_string());
                Error::new(kind, "no database connection within the connect timeout").with_source(e)
            }
            DbError::Connect(e) => {
                let kind = match &e {
                    diesel::r2d2::Error::ConnectionError(
                        diesel::ConnectionError::InvalidConnectionUrl(_),
                    ) => ErrorKind::Config,
                    diesel::r2d2::Error::QueryError(q) => query_kind(q),
                    _ => connect_failure_kind(&e.to_string()),
                };
                Error::new(kind, "cannot connect to the database").with_source(e)
            }
            DbError::NoLiveConnection => {
                Error::unavailable("no live database connection after a connection was lost")
            }
            #[cfg(feature = "sqlite")]
            DbError::Directory(e) => {
                let kind = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    ErrorKind::PermissionDenied
                } else {
                    ErrorKind::Config
                };
                Error::new(kind, "the SQLite file's directory cannot be created").with_source(e)
            }
            DbError::Migration(e) => {
                Error::new(ErrorKind::Backend, "creating or migrating the table failed")
                    .with_source(e)
            }
            DbError::Query(e) => {
                let message = message(&e);
                let what = if is_connection_error(&e) {
                    "the database connection was lost"
                } else if is_timeout(&message) {
                    "the statement ran past its timeout"
                } else if is_busy(&message) {
                    "the database cannot take the statement now"
                } else {
                    "the database refused the statement"
                };
                Error::new(query_kind(&e), what).with_source(e)
            }
        };
        error
            .with_operation(operation)
            .with_backend(backend)
            .with_key(on)
    }
}

/// The message of a database error, lowercase (empty for other errors).
fn message(e: &DieselError) -> String {
    match e {
        DieselError::DatabaseError(_, info) => info.message().to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// Whether an error means the connection itself is gone (server restarted, network cut): the
/// connection is dropped, and the operation may be tried again on another one.
pub(crate) fn is_connection_error(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        DieselError::BrokenTransactionManager => true,
        DieselError::DatabaseError(..) => {
            let message = message(e);
            [
                "server closed the connection",
                "terminating connection",
                "no connection to the server",
                "connection to server",
                "could not receive data",
                "could not send data",
                "server has gone away",
                "lost connection",
                "can't connect",
                "broken pipe",
                "connection reset",
                "connection refused",
            ]
            .iter()
            .any(|pattern| message.contains(pattern))
        }
        _ => false,
    }
}

/// Whether a statement was cancelled for taking too long (the statement timeout, a lock wait):
/// the server answers, but not in time. Trying again on another connection would not help.
fn is_timeout(message: &str) -> bool {
    [
        // PostgreSQL: "canceling statement due to statement timeout" (or lock timeout).
        "statement timeout",
        "lock timeout",
        // MariaDB: "Query execution was interrupted (max_statement_time exceeded)".
        "max_statement_time",
        // MySQL: "Query execution was interrupted, maximum statement execution time exceeded".
        "maximum statement execution time",
        "lock wait timeout",
    ]
    .iter()
    .any(|pattern| message.contains(pattern))
}

/// Whether the server says it cannot take the statement now (shutting down, starting up,
/// recovering, out of connection slots, a transient conflict).
fn is_busy(message: &str) -> bool {
    [
        "the database system is",
        "server shutdown in progress",
        "too many clients",
        "too many connections",
        "database is locked",
        "database is busy",
        "deadlock",
    ]
    .iter()
    .any(|pattern| message.contains(pattern))
}

/// The kind of a failed statement.
fn query_kind(e: &DieselError) -> ErrorKind {
    let message = message(e);
    if is_connection_error(e)
        || matches!(
            e,
            DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _)
        )
        || is_timeout(&message)
        || is_busy(&message)
    {
        ErrorKind::Unavailable
    } else if message.contains("max_allowed_packet")
        || message.contains("string or blob too big")
        || message.contains("too big")
    {
        ErrorKind::TooLarge
    } else if message.contains("permission denied")
        || message.contains("readonly")
        || message.contains("read-only")
        || message.contains("access denied")
    {
        ErrorKind::PermissionDenied
    } else {
        ErrorKind::Backend
    }
}

/// The kind of a failed connection attempt, from the client library's message: refused
/// credentials and a database that does not exist are not outages; everything else (refused,
/// timed out, unreachable, shutting down) is.
fn connect_failure_kind(message: &str) -> ErrorKind {
    let message = message.to_ascii_lowercase();
    if message.contains("password authentication failed")
        || message.contains("access denied")
        || message.contains("no pg_hba.conf entry")
    {
        ErrorKind::PermissionDenied
    } else if message.contains("does not exist") || message.contains("unknown database") {
        ErrorKind::Config
    } else {
        ErrorKind::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_are_outages_unless_they_are_configuration() {
        for outage in [
            "connection to server at \"127.0.0.1\", port 1 failed: Connection refused",
            "timeout expired",
            "Can't connect to server on '127.0.0.1' (111)",
            "FATAL: the database system is shutting down",
            "timed out waiting for connection",
        ] {
            assert_eq!(
                connect_failure_kind(outage),
                ErrorKind::Unavailable,
                "{outage}"
            );
        }
        assert_eq!(
            connect_failure_kind("FATAL: password authentication failed for user \"x\""),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            connect_failure_kind("Access denied for user 'x'@'localhost'"),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            connect_failure_kind("FATAL: database \"nope\" does not exist"),
            ErrorKind::Config
        );
        assert_eq!(
            connect_failure_kind("Unknown database 'nope'"),
            ErrorKind::Config
        );
    }

    #[test]
    fn timeouts_and_busy_servers_are_outages() {
        for message in [
            "canceling statement due to statement timeout",
            "query execution was interrupted (max_statement_time exceeded)",
            "query execution was interrupted, maximum statement execution time exceeded",
            "sorry, too many clients already",
            "the database system is starting up",
        ] {
            assert!(
                is_timeout(message) || is_busy(message),
                "{message} is not an outage"
            );
        }
        assert!(!is_timeout("syntax error at or near \"x\""));
        assert!(!is_busy("syntax error at or near \"x\""));
    }
}
