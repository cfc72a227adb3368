//! The calls behind the `#[cachier]` attribute (`cachier_core::__private`, not a stable API).
//!
//! A function under the attribute keeps the signature its author wrote, so its body may borrow:
//! arguments taken by reference, `&self`. [`Function::call`] wants a `'static` compute step,
//! because a `next_time` refresh runs it after the call has returned; the generated code would
//! have to copy every argument on every call, hits included, and `&self` would need `Clone`.
//! These calls take the key already made (from the borrowed arguments, or from `key = ...`) and
//! a compute step that may borrow:
//!
//! - [`call`] and [`call_blocking`]: the compute step borrows and runs only inside the call.
//!   There is no background refresh, so a stale value is recomputed in the call; the attribute
//!   sets `next_time` off for these functions.
//! - [`call_detached`] and [`call_blocking_detached`] (the attribute's `next_time`): the compute
//!   step borrows too, but what it makes (a future, or a closure) is `'static`: it owns copies of
//!   the arguments, taken only on a miss or a refresh, never on a hit.
//!
//! All four return the compute step's own `Result` inside the cache's, like `try_call` without
//! asking `E: From<Error>`: the generated code converts a cache error where it can, and makes
//! the function fail-open where it cannot.

use std::future::Future;
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::{Handle, RuntimeFlavor};

use super::{Computed, Function, Refresh};
use crate::error::Result;
use crate::key::Key;
use crate::settings::CallOptions;
use crate::telemetry::Event;

/// An `async fn` under the attribute: `compute` may borrow from the caller.
pub async fn call<T, E, F, Fut>(
    f: &Function,
    key: Result<Key>,
    compute: F,
) -> Result<Computed<T, E>>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Computed<T, E>>,
{
    f.run_keyed(
        CallOptions::default(),
        key,
        None,
        Instant::now(),
        compute,
        None,
    )
    .await
}

/// An `async fn` under the attribute with `next_time`: `compute` may borrow, the future it
/// makes may not, so it can refresh a stale value in the background.
pub async fn call_detached<T, E, F, Fut>(
    f: &Function,
    key: Result<Key>,
    compute: F,
) -> Result<Computed<T, E>>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: Send + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Computed<T, E>> + Send + 'static,
{
    let refresh: Refresh<F> = refresh_detached::<T, E, F, Fut>;
    f.run_keyed(
        CallOptions::default(),
        key,
        None,
        Instant::now(),
        compute,
        Some(refresh),
    )
    .await
}

/// Makes the `'static` future now, while the caller's borrows are alive, and refreshes with it.
fn refresh_detached<T, E, F, Fut>(f: &Function, key: Key, compute: F)
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: Send + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Computed<T, E>> + Send + 'static,
{
    let future = compute();
    f.refresh_in_background(key, move || future);
}

/// A plain `fn` under the attribute, with [`Function::call_blocking`]'s rules for runtimes.
pub fn call_blocking<T, E, F>(f: &Function, key: Result<Key>, compute: F) -> Result<Computed<T, E>>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: FnOnce() -> Computed<T, E>,
{
    let Some(blocking) = Blocking::here(f) else {
        return Ok(compute());
    };
    blocking.run(call(f, key, move || async move { compute() }))
}

/// A plain `fn` under the attribute with `next_time`: `compute` makes the `'static` closure
/// that computes.
pub fn call_blocking_detached<T, E, F, G>(
    f: &Function,
    key: Result<Key>,
    compute: F,
) -> Result<Computed<T, E>>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: Send + 'static,
    F: FnOnce() -> G,
    G: FnOnce() -> Computed<T, E> + Send + 'static,
{
    let Some(blocking) = Blocking::here(f) else {
        return Ok(compute()());
    };
    let compute = move || {
        let run = compute();
        async move { run() }
    };
    blocking.run(call_detached(f, key, compute))
}

/// Where a synchronous call blocks (see [`Function::call_blocking`]).
enum Blocking {
    /// Outside any runtime: the crate's own.
    Own,
    /// Inside a multi-threaded tokio runtime: `block_in_place` on it.
    Tokio(Handle),
}

impl Blocking {
    /// `None` inside a current-thread runtime: blocking would stall the runtime that may drive
    /// the backend, so the call bypasses the cache (logged, counted as `bypassed`).
    fn here(f: &Function) -> Option<Blocking> {
        match Handle::try_current() {
            Err(_) => Some(Blocking::Own),
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                Some(Blocking::Tokio(handle))
            }
            Ok(_) => {
                tracing::warn!(
                    func = %f.id,
                    "a cached plain fn called inside a current-thread tokio runtime bypasses \
                     the cache; make it an async fn there"
                );
                f.counters.count(Event::Bypassed);
                None
            }
        }
    }

    fn run<Fut: Future>(self, future: Fut) -> Fut::Output {
        match self {
            Blocking::Own => crate::blocking::block_on(future),
            Blocking::Tokio(handle) => tokio::task::block_in_place(|| handle.block_on(future)),
        }
    }
}
