//! Ctrl-C and SIGTERM: an interrupted run still cleans up after itself.
//!
//! [`install`] replaces the default action of SIGINT and SIGTERM (ending the process at once)
//! with a handler that only records the signal. The runner then passes it on to the test runner
//! it started ([`forward_while`]), the tests end, and the matrix removes the test namespaces the
//! run created and stops its throwaway servers before exiting with `128 + signal`. A second
//! signal is recorded the same way; the clean-up is bounded in time, so it cannot hang.
//!
//! Throwaway servers run in process groups of their own, so a Ctrl-C at the terminal (sent to
//! the whole foreground group) does not stop them under the tests' feet; xtask stops them.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The signal received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

unsafe extern "C" {
    /// `signal(2)` of the C library the standard library already links.
    fn signal(signum: i32, handler: usize) -> usize;
    /// `kill(2)`.
    fn kill(pid: i32, sig: i32) -> i32;
}

extern "C" fn record(signum: i32) {
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(signum, Ordering::SeqCst);
}

/// Records SIGINT and SIGTERM instead of dying of them.
pub fn install() {
    let handler = record as extern "C" fn(i32) as usize;
    // SAFETY: `record` is an `extern "C" fn(i32)` that only stores to an atomic, which is what
    // `signal` expects of a handler; replacing the handler of these two signals affects only
    // this process.
    unsafe {
        signal(SIGINT, handler);
        signal(SIGTERM, handler);
    }
}

/// The signal that interrupted the run, if one did.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signum => Some(signum),
    }
}

/// The exit code of a run ended by `signum`, as a shell reports it.
pub fn exit_code(signum: i32) -> u8 {
    u8::try_from(128 + signum).unwrap_or(130)
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: `kill` with a positive pid and a valid signal number has no memory effects.
        unsafe {
            kill(pid, SIGTERM);
        }
    }
}

/// Passes an interruption on to the child `pid` (SIGTERM, once) for as long as `running`
/// says it runs. Returns when it is no longer running.
pub fn forward_while(pid: u32, running: impl Fn() -> bool) {
    let mut sent = false;
    while running() {
        if !sent && received().is_some() {
            terminate(pid);
            sent = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
