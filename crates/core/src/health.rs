//! The health of a cache's backend: a circuit breaker, so an outage costs callers nothing.
//!
//! Without it, every call during an outage would pay the backend's connect timeout again before
//! computing. With it:
//!
//! - **Closed** (the normal state): calls use the backend. The first connection-level failure
//!   ([`ErrorKind::Unavailable`]) of any operation opens the circuit.
//! - **Open**: calls skip the backend at once — they compute, count `bypassed` and, with
//!   `strict`, return an `Unavailable` error instead. A warning is logged when the circuit opens
//!   and then at most once per [`LOG_INTERVAL`], with the number of calls that skipped it.
//! - **Probing**: one background task at a time reads the backend again, first after the probe
//!   backoff's start and then at doubling intervals up to its maximum. The first answer that is
//!   not `Unavailable` (a value, a miss, even another kind of error: the server is reachable)
//!   closes the circuit, and calls use the cache again.
//!
//! No caller ever waits for a probe, so from the call after the first failure until the backend
//! answers again, a call costs the function itself plus an atomic load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::contract::Core;
use crate::error::{Error, ErrorKind, Result};
use crate::key::{ArgHash, FuncId, Key, Namespace};

/// The least time between two warnings about calls skipping an unavailable backend.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The first and the longest pause between two probes of an unavailable backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeBackoff {
    /// The pause before the first probe.
    pub first: Duration,
    /// The longest pause between two probes (the pause doubles up to it).
    pub max: Duration,
}

impl Default for ProbeBackoff {
    /// 100 ms, doubling up to 2 s: a backend that is back is used again within about 2 s.
    fn default() -> Self {
        ProbeBackoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }
}

/// The circuit of one cache (shared by its clones and functions).
pub(crate) struct Health {
    /// Whether the circuit is open: the one thing a call reads on its fast path.
    open: AtomicBool,
    /// Whether a probe task is running.
    probing: AtomicBool,
    /// Calls that skipped the backend since the last warning.
    skipped: AtomicU64,
    backoff: ProbeBackoff,
    state: Mutex<State>,
}

struct State {
    opened_at: Option<Instant>,
    last_warning: Option<Instant>,
    last_error: String,
}

impl Health {
    pub fn new(backoff: ProbeBackoff) -> Self {
        Health {
            open: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            skipped: AtomicU64::new(0),
            backoff,
            state: Mutex::new(State {
                opened_at: None,
                last_warning: None,
                last_error: String::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether calls skip the backend now.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Looks at the outcome of a backend operation: a connection-level failure opens the
    /// circuit and starts a probe.
    pub fn observe<T>(
        self: &Arc<Self>,
        core: &Arc<dyn Core>,
        namespace: &Namespace,
        result: &Result<T>,
    ) {
        if let Err(err) = result
            && err.kind() == ErrorKind::Unavailable
        {
            self.trip(core, namespace, err);
        }
    }

    fn trip(self: &Arc<Self>, core: &Arc<dyn Core>, namespace: &Namespace, err: &Error) {
        {
            let mut state = self.state();
            state.last_error = err.to_string();
            if !self.open.swap(true, Ordering::AcqRel) {
                state.opened_at = Some(Instant::now());
                state.last_warning = Some(Instant::now());
                tracing::warn!(
                    backend = core.name(),
                    error = %err,
                    "cache backend unavailable: calls compute without it until it answers again"
                );
            }
        }
        self.start_probe(core, namespace);
    }

    /// Counts one call that skipped the backend, and warns at most once per [`LOG_INTERVAL`].
    pub fn skipped(self: &Arc<Self>, core: &Arc<dyn Core>, namespace: &Namespace) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        // A probe that died with its runtime is started again by the next call.
        if !self.probing.load(Ordering::Acquire) {
            self.start_probe(core, namespace);
        }
        let mut state = self.state();
        let due = state
            .last_warning
            .is_none_or(|at| at.elapsed() >= LOG_INTERVAL);
        if due {
            state.last_warning = Some(Instant::now());
            let skipped = self.skipped.swap(0, Ordering::Relaxed);
            let down_for = state.opened_at.map(|at| at.elapsed()).unwrap_or_default();
            tracing::warn!(
                backend = core.name(),
                skipped,
                down_for_ms = down_for.as_millis() as u64,
                last_error = %state.last_error,
                "cache backend still unavailable; calls compute without it"
            );
        }
    }

    /// The error a `strict` call (or a maintenance call) gets while the circuit is open.
    pub fn open_error(&self, core: &dyn Core, operation: &'static str) -> Error {
        let state = self.state();
        let down_for = state.opened_at.map(|at| at.elapsed()).unwrap_or_default();
        Error::unavailable(format!(
            "the backend did not answer {} ms ago and has not answered since; it is probed in \
             the background (last error: {})",
            down_for.as_millis(),
            state.last_error
        ))
        .with_operation(operation)
        .with_backend(core.name())
    }

    fn start_probe(self: &Arc<Self>, core: &Arc<dyn Core>, namespace: &Namespace) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let probe = Probe {
            health: self.clone(),
        };
        let core = core.clone();
        let key = Key::new(
            namespace.clone(),
            FuncId::new("cachier::health-probe").expect("a valid function id"),
            ArgHash::from_bytes([0; 32]),
        );
        runtime.spawn(async move { probe.run(core, key).await });
    }

    fn close(&self, core: &dyn Core) {
        let _state = self.state();
        if self.open.swap(false, Ordering::AcqRel) {
            let skipped = self.skipped.swap(0, Ordering::Relaxed);
            tracing::info!(
                backend = core.name(),
                skipped,
                "cache backend answers again; calls use it"
            );
        }
    }
}

/// The one running probe. Dropping it (also when its runtime shuts down) lets the next call
/// start another.
struct Probe {
    health: Arc<Health>,
}

impl Probe {
    async fn run(self, core: Arc<dyn Core>, key: Key) {
        let mut pause = self.health.backoff.first;
        loop {
            tokio::time::sleep(pause).await;
            match core.get_value(&key).await {
                Err(err) if err.kind() == ErrorKind::Unavailable => {
                    self.health.state().last_error = err.to_string();
                    pause = (pause * 2).min(self.health.backoff.max);
                }
                _ => {
                    self.health.close(core.as_ref());
                    return;
                }
            }
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.health.probing.store(false, Ordering::Release);
    }
}
