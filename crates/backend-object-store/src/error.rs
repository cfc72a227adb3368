//! From `object_store` errors to cachier's: which failures are an outage, which are not.

use std::fmt::Display;

use cachier_core::{Error, ErrorKind};
use object_store::client::{HttpError, HttpErrorKind};

use crate::BACKEND;

/// What an operation of this crate can fail with before it gets its context.
#[derive(Debug)]
pub(crate) enum ObjectError {
    /// The store said no.
    Store(object_store::Error),
    /// The claim object kept changing under a claim, renew or release.
    Contention,
}

impl From<object_store::Error> for ObjectError {
    fn from(e: object_store::Error) -> Self {
        ObjectError::Store(e)
    }
}

/// Gives `error` its kind and the operation, backend and key (or function, or namespace).
pub(crate) fn map_error(error: ObjectError, operation: &'static str, key: impl Display) -> Error {
    let error = match error {
        ObjectError::Contention => Error::new(
            ErrorKind::Backend,
            "the claim object kept changing under this operation; try again",
        )
        .set_retryable(true),
        ObjectError::Store(e) => {
            let kind = kind_of(&e);
            let message = match kind {
                ErrorKind::Unavailable => format!("the object store did not answer: {e}"),
                _ => e.to_string(),
            };
            Error::new(kind, message).with_source(e)
        }
    };
    error
        .with_operation(operation)
        .with_backend(BACKEND)
        .with_key(key)
}

/// The kind of an `object_store` error: connection failures, timeouts and 5xx answers are
/// [`ErrorKind::Unavailable`].
fn kind_of(error: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match error {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        E::NotSupported { .. } | E::NotImplemented { .. } => ErrorKind::Unsupported,
        E::InvalidPath { .. } => ErrorKind::InvalidInput,
        _ if is_outage(error) => ErrorKind::Unavailable,
        _ => ErrorKind::Backend,
    }
}

/// Whether the error's chain shows the request never got an answer (connect, send, timeout,
/// interruption, an I/O error) or the server answered 5xx (busy, restarting).
fn is_outage(error: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
        }
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            use std::io::ErrorKind as Io;
            matches!(
                io.kind(),
                Io::ConnectionRefused
                    | Io::ConnectionReset
                    | Io::ConnectionAborted
                    | Io::NotConnected
                    | Io::TimedOut
                    | Io::BrokenPipe
                    | Io::UnexpectedEof
            )
        }) {
            return true;
        }
        // The retry layer's error type is private; its message names the status.
        if e.to_string().contains("non-2xx status code: 5") {
            return true;
        }
        source = e.source();
    }
    false
}
