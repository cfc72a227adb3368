//! Outages cost nothing: after a connection-level failure, calls skip the backend at once and
//! compute; a background probe finds it again, and calls use the cache again within seconds.
//!
//! `outage_skips_an_unavailable_backend` cuts the backend under test off inside the process (a
//! wrapper that fails every operation with `Unavailable` after a delay, like a connect timeout),
//! so it runs on every backend and counts exactly which operations still reach it.
//! `outage_storage_fails_fast_and_recovers` and `outage_private_server_stopped_mid_run` stop a
//! real private server of the check's own, given by the backend's
//! [`Outage`](crate::conformance::Outage) factory — the first speaks to the core, the second goes
//! through the front end; they are skipped for backends without one (in-process and embedded
//! stores have no server to lose).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{counter, eventually};
use crate::conformance::{Harness, Outcome, Scope, func_id, unique_namespace};
use crate::{
    Capabilities, Claim, ClaimToken, Core, Entry, Error, ErrorKind, FuncId, Function, Key,
    Namespace, ProbeBackoff, Result, Timestamp,
};

/// The function id the front end's health probe reads.
const PROBE_FUNC: &str = "cachier::health-probe";

/// The backend under test behind a switch: while `down`, every operation fails with
/// `Unavailable` after `delay`. Counts the operations that reach it, probes apart.
struct Switchable {
    inner: Arc<dyn Core>,
    down: AtomicBool,
    delay: Duration,
    /// Operations other than the health probe's, up or down.
    calls: AtomicUsize,
    /// Probes running now, and the most ever running at once.
    probes_now: AtomicUsize,
    probes_max: AtomicUsize,
}

impl Switchable {
    async fn gate(&self, key: Option<&Key>) -> Result<()> {
        let probe = key.is_some_and(|k| k.func.as_str() == PROBE_FUNC);
        if probe {
            let now = self.probes_now.fetch_add(1, SeqCst) + 1;
            self.probes_max.fetch_max(now, SeqCst);
        } else {
            self.calls.fetch_add(1, SeqCst);
        }
        let down = self.down.load(SeqCst);
        if down {
            tokio::time::sleep(self.delay).await;
        }
        if probe {
            self.probes_now.fetch_sub(1, SeqCst);
        }
        if down {
            return Err(
                Error::unavailable("connection refused (switched off by the check)")
                    .with_backend(self.inner.name()),
            );
        }
        Ok(())
    }
}

#[async_trait]
impl Core for Switchable {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        self.gate(Some(key)).await?;
        self.inner.get(key).await
    }
    async fn get_value(&self, key: &Key) -> Result<Option<Entry>> {
        self.gate(Some(key)).await?;
        self.inner.get_value(key).await
    }
    async fn set(&self, key: &Key, value: Bytes, stored_at: Timestamp) -> Result<()> {
        self.gate(Some(key)).await?;
        self.inner.set(key, value, stored_at).await
    }
    async fn claim(&self, key: &Key, lease: Duration) -> Result<Claim> {
        self.gate(Some(key)).await?;
        self.inner.claim(key, lease).await
    }
    async fn renew(&self, key: &Key, token: &ClaimToken, lease: Duration) -> Result<bool> {
        self.gate(Some(key)).await?;
        self.inner.renew(key, token, lease).await
    }
    async fn release(&self, key: &Key, token: &ClaimToken) -> Result<()> {
        self.gate(Some(key)).await?;
        self.inner.release(key, token).await
    }
    async fn wait(&self, key: &Key, timeout: Duration) -> Result<Option<Entry>> {
        self.gate(Some(key)).await?;
        self.inner.wait(key, timeout).await
    }
    async fn remove(&self, key: &Key) -> Result<bool> {
        self.gate(Some(key)).await?;
        self.inner.remove(key).await
    }
    async fn clear(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        self.gate(None).await?;
        self.inner.clear(namespace, func).await
    }
    async fn clear_claims(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        self.gate(None).await?;
        self.inner.clear_claims(namespace, func).await
    }
    async fn delete_stale(
        &self,
        namespace: &Namespace,
        func: &FuncId,
        stored_before: Timestamp,
    ) -> Result<u64> {
        self.gate(None).await?;
        self.inner
            .delete_stale(namespace, func, stored_before)
            .await
    }
    async fn clear_namespace(&self, namespace: &Namespace) -> Result<u64> {
        // Cleanup of the check's namespace: never switched off.
        self.inner.clear_namespace(namespace).await
    }
}

/// Calls `f` on argument 1; the function returns `"computed {n}"`, counting runs.
async fn call(f: &Function, runs: &Arc<AtomicUsize>) -> Result<String> {
    let runs = runs.clone();
    f.call(&1u8, move || async move {
        format!("computed {}", runs.fetch_add(1, SeqCst))
    })
    .await
}

/// While the backend fails with `Unavailable`, only the first call pays for it: later calls
/// compute at once (counted `bypassed`), `strict` calls and maintenance get `Unavailable` at
/// once, nothing but one probe at a time reaches the backend, and once it answers the cached
/// value is served again.
pub async fn outage_skips_an_unavailable_backend(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let switch = Arc::new(Switchable {
        inner: s.core.clone(),
        down: AtomicBool::new(false),
        delay: Duration::from_millis(300),
        calls: AtomicUsize::new(0),
        probes_now: AtomicUsize::new(0),
        probes_max: AtomicUsize::new(0),
    });
    let cache = crate::Cachier::builder(switch.clone())
        .with_namespace(s.namespace.clone())
        .probe_backoff(ProbeBackoff {
            first: Duration::from_millis(50),
            max: Duration::from_millis(200),
        })
        .build();
    let f = cache.function(func_id("f"));
    let strict = f.clone().configure(|settings| settings.strict = true);
    let runs = counter();
    assert_eq!(call(&f, &runs).await.expect("call"), "computed 0");
    assert_eq!(call(&f, &runs).await.expect("call"), "computed 0");

    switch.down.store(true, SeqCst);
    assert_eq!(
        call(&f, &runs).await.expect("a call during an outage"),
        "computed 1",
        "the first call during the outage did not compute"
    );
    assert!(
        cache.is_backend_unavailable(),
        "an Unavailable error did not mark the backend unavailable"
    );
    let reached = switch.calls.load(SeqCst);
    let bypassed = f.stats().bypassed;
    for i in 2..22 {
        let got = call(&f, &runs).await.expect("a call during an outage");
        assert_eq!(got, format!("computed {i}"));
    }
    let err = call(&strict, &runs)
        .await
        .expect_err("a strict call during an outage succeeded");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = f
        .clear()
        .await
        .expect_err("clear during an outage succeeded");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(
        switch.calls.load(SeqCst) - reached,
        0,
        "calls during an open outage still reached the backend"
    );
    assert_eq!(
        f.stats().bypassed - bypassed,
        20,
        "skipped calls not counted"
    );

    // A few probes have run by now, never two at once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(cache.is_backend_unavailable(), "closed while still down");
    assert_eq!(switch.probes_max.load(SeqCst), 1, "probes ran concurrently");

    switch.down.store(false, SeqCst);
    let back = eventually(Duration::from_secs(10), || async {
        !cache.is_backend_unavailable()
    })
    .await;
    assert!(
        back,
        "the backend answers again but is still skipped after 10 s"
    );
    assert_eq!(
        call(&f, &runs).await.expect("call"),
        "computed 0",
        "the value cached before the outage is not served after it"
    );
    assert_eq!(f.clear().await.expect("clear after the outage"), 1);
    Outcome::Passed
}

/// A private server stopped mid-run: the first call pays the backend's timeout, every later call
/// costs about the function itself, `strict` calls fail at once with `Unavailable`, and within
/// seconds of the server's return the cache is used again. Prints the measured costs.
pub async fn outage_private_server_stopped_mid_run(h: &Harness) -> Outcome {
    let Some(outage) = h.outage().await else {
        return Outcome::Skipped(NO_OUTAGE_FACTORY);
    };
    let s = Scope {
        core: outage.core().await,
        namespace: unique_namespace(h.test_name()),
    };
    let cache = s.cache();
    let f = cache.function(func_id("f"));
    let strict = f.clone().configure(|settings| settings.strict = true);
    let runs = counter();
    assert_eq!(call(&f, &runs).await.expect("call"), "computed 0");
    assert_eq!(call(&f, &runs).await.expect("call"), "computed 0");

    outage.stop().await;
    let started = Instant::now();
    assert_eq!(
        call(&f, &runs)
            .await
            .expect("the first call during the outage"),
        "computed 1"
    );
    let first = started.elapsed();
    assert!(
        first < Duration::from_secs(10),
        "the first call to a stopped server took {first:?}: its timeouts are not set"
    );
    assert!(
        cache.is_backend_unavailable(),
        "a stopped server did not fail with Unavailable (see the log for the error it gave)"
    );
    let mut costs = Vec::new();
    for i in 2..52 {
        let started = Instant::now();
        assert_eq!(
            call(&f, &runs).await.expect("call"),
            format!("computed {i}")
        );
        costs.push(started.elapsed());
    }
    costs.sort();
    let total: Duration = costs.iter().sum();
    assert!(
        total < Duration::from_secs(2),
        "50 calls during the outage took {total:?}: they still wait for the backend"
    );
    let started = Instant::now();
    let err = call(&strict, &runs)
        .await
        .expect_err("a strict call during an outage succeeded");
    let strict_cost = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    outage.start().await;
    let started = Instant::now();
    let back = eventually(Duration::from_secs(20), || async {
        !cache.is_backend_unavailable()
    })
    .await;
    let recovery = started.elapsed();
    assert!(
        back,
        "the server is back but calls still skip it after 20 s"
    );
    // The cache works again: a value computed now is served by the next call (the private
    // server may have lost what it held before the outage).
    let n = runs.load(SeqCst);
    let stored = call(&f, &runs).await.expect("call after the outage");
    assert_eq!(call(&f, &runs).await.expect("call"), stored);
    assert!(
        runs.load(SeqCst) <= n + 1,
        "the cache is not used after the outage"
    );

    let line = format!(
        "conformance: outage on {}: first failing call {:.1} ms; then per call median {} µs, \
         max {} µs; strict error {} µs; cache used again {} ms after the server answered",
        s.core.name(),
        first.as_secs_f64() * 1e3,
        costs[costs.len() / 2].as_micros(),
        costs[costs.len() - 1].as_micros(),
        strict_cost.as_micros(),
        recovery.as_millis(),
    );
    println!("{line}");
    eprintln!("{line}");
    Outcome::Passed
}

/// What the checks of a backend without an outage factory are skipped for.
const NO_OUTAGE_FACTORY: &str = "no outage factory: the backend has no server of its own to stop \
                                 (in-process or embedded)";

/// The longest an operation on a stopped server may take to fail. The backends of this
/// project fail within about a second; this leaves room for a loaded machine.
const FAIL_WITHIN: Duration = Duration::from_secs(5);

/// Against a stopped server every operation of the core fails, soon, with a retryable
/// `Unavailable` error (the kind the front end skips a backend for); once the server is back the
/// same core works again by itself, without being opened anew.
pub async fn outage_storage_fails_fast_and_recovers(h: &Harness) -> Outcome {
    let Some(outage) = h.outage().await else {
        return Outcome::Skipped(NO_OUTAGE_FACTORY);
    };
    let s = Scope {
        core: outage.core().await,
        namespace: unique_namespace(h.test_name()),
    };
    let key = s.key("f", &1u8);
    let func = key.func.clone();
    s.core
        .set(&key, Bytes::from_static(b"before"), Timestamp::now())
        .await
        .expect("set before the outage");

    h.step("stopping the private server");
    outage.stop().await;
    let lease = Duration::from_secs(10);
    let token = ClaimToken::generate();
    let ns = &s.namespace;
    let operations: Vec<(&str, Result<()>)> = vec![
        ("get", timed(s.core.get(&key)).await),
        ("get_value", timed(s.core.get_value(&key)).await),
        (
            "set",
            timed(s.core.set(&key, Bytes::from_static(b"x"), Timestamp::now())).await,
        ),
        ("claim", timed(s.core.claim(&key, lease)).await),
        ("renew", timed(s.core.renew(&key, &token, lease)).await),
        ("release", timed(s.core.release(&key, &token)).await),
        ("remove", timed(s.core.remove(&key)).await),
        ("clear", timed(s.core.clear(ns, &func)).await),
        ("clear_claims", timed(s.core.clear_claims(ns, &func)).await),
        (
            "delete_stale",
            timed(s.core.delete_stale(ns, &func, Timestamp::now())).await,
        ),
    ];
    for (operation, outcome) in operations {
        let err = match outcome {
            Ok(()) => panic!("{operation} succeeded against a stopped server"),
            Err(err) => err,
        };
        assert_eq!(
            err.kind(),
            ErrorKind::Unavailable,
            "{operation} against a stopped server: {err}"
        );
        assert!(err.is_retryable(), "{operation}: {err} is not retryable");
    }

    h.step("starting the private server again and waiting for the core to reach it");
    outage.start().await;
    let back = eventually(Duration::from_secs(20), || async {
        s.core.get(&key).await.is_ok()
    })
    .await;
    assert!(back, "the core still fails 20 s after its server came back");
    s.core
        .set(&key, Bytes::from_static(b"after"), Timestamp::now())
        .await
        .expect("set after the outage");
    let entry = s
        .core
        .get(&key)
        .await
        .expect("get")
        .expect("the value just set");
    assert_eq!(entry.value.as_deref(), Some(&b"after"[..]));
    Outcome::Passed
}

/// Runs one operation against a stopped server: an error within [`FAIL_WITHIN`], or a panic
/// naming how long it took.
async fn timed<T>(operation: impl std::future::Future<Output = Result<T>>) -> Result<()> {
    let started = Instant::now();
    let outcome = tokio::time::timeout(FAIL_WITHIN, operation).await;
    match outcome {
        Ok(result) => result.map(drop),
        Err(_) => panic!(
            "an operation on a stopped server did not fail within {FAIL_WITHIN:?} (after {:?}): \
             set connect and request timeouts",
            started.elapsed()
        ),
    }
}
