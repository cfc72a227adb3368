//! The one error type of the project.
//!
//! Every failure is an [`Error`] whose [`ErrorKind`] says what went wrong and whose context says
//! what was being done (the operation), where (the backend) and on what (the key). Whether a
//! failure is worth retrying is data ([`Error::is_retryable`]), not a separate type.

use std::fmt;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend could not be reached or did not answer (connection refused, timeout, server
    /// restarting). Usually temporary.
    Unavailable,
    /// Stored bytes are not a valid entry: torn, truncated, foreign or tampered with.
    Corrupt,
    /// A value is larger than the backend or a setting allows.
    TooLarge,
    /// A configuration value is wrong: a malformed URL, an invalid table name, a missing directory.
    Config,
    /// An identifier or argument given by the caller is invalid (a namespace with a `/`, ...).
    InvalidInput,
    /// Encoding or decoding a user value failed.
    Codec,
    /// The backend refused the operation (permissions, read-only file system, ...).
    PermissionDenied,
    /// The operation is not supported by this backend.
    Unsupported,
    /// Anything else the backend reported.
    Backend,
}

impl ErrorKind {
    /// A short lowercase name, as used in log fields and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::TooLarge => "too large",
            ErrorKind::Config => "configuration",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Codec => "codec",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Backend => "backend",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a backend, the codec or the front end.
///
/// ```
/// use cachier_core::{Error, ErrorKind};
/// let err = Error::new(ErrorKind::Unavailable, "connection refused")
///     .with_operation("get")
///     .with_backend("redis")
///     .with_key("app/my::f/00ff");
/// assert!(err.is_retryable());
/// assert_eq!(
///     err.to_string(),
///     "unavailable: connection refused (operation: get, backend: redis, key: app/my::f/00ff)"
/// );
/// ```
pub struct Error {
    kind: ErrorKind,
    message: String,
    operation: Option<&'static str>,
    backend: Option<&'static str>,
    key: Option<String>,
    retryable: bool,
    source: Option<Source>,
}

/// Short for `std::result::Result<T, cachier_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a human-readable message. `Unavailable` errors are retryable by
    /// default; use [`Error::set_retryable`] to say otherwise.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            operation: None,
            backend: None,
            key: None,
            retryable: kind == ErrorKind::Unavailable,
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Names the operation that failed (`get`, `claim`, `clear`, ...).
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.operation = Some(operation);
        self
    }

    /// Names the backend that failed (`redis`, `file`, ...).
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Names the key (or function, or namespace) the operation was on.
    pub fn with_key(mut self, key: impl fmt::Display) -> Self {
        self.key = Some(key.to_string());
        self
    }

    /// Says whether trying the same operation again may succeed.
    pub fn set_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The message, without context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The operation that failed, if recorded.
    pub fn operation(&self) -> Option<&'static str> {
        self.operation
    }

    /// The backend that failed, if recorded.
    pub fn backend(&self) -> Option<&'static str> {
        self.backend
    }

    /// The key the operation was on, if recorded.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Shorthand for an [`ErrorKind::InvalidInput`] error.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for an [`ErrorKind::Config`] error.
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// Shorthand for an [`ErrorKind::Corrupt`] error.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }

    /// Shorthand for an [`ErrorKind::Unavailable`] error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unavailable, message)
    }

    /// Shorthand for an [`ErrorKind::TooLarge`] error.
    pub fn too_large(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::TooLarge, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        let mut parts = Vec::new();
        if let Some(op) = self.operation {
            parts.push(format!("operation: {op}"));
        }
        if let Some(backend) = self.backend {
            parts.push(format!("backend: {backend}"));
        }
        if let Some(key) = &self.key {
            parts.push(format!("key: {key}"));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("operation", &self.operation)
            .field("backend", &self.backend)
            .field("key", &self.key)
            .field("retryable", &self.retryable)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}
