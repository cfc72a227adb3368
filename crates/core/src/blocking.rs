//! A small runtime for synchronous callers.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

/// Runs a future to completion from synchronous code, on a runtime owned by this crate (one
/// worker thread, created on first use, kept for the life of the process).
///
/// Synchronous programs use it to build async backends (whose connection tasks then live on
/// this runtime) and it is what [`Function::call_blocking`](crate::Function::call_blocking)
/// runs on outside any runtime. Do not call it from inside an async runtime; it panics there,
/// as tokio does for every nested `block_on`.
///
/// ```
/// let answer = cachier_core::block_on(async { 6 * 7 });
/// assert_eq!(answer, 42);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cachier-blocking")
            .enable_all()
            .build()
            .expect("the operating system lets a process start one more thread")
    })
}
