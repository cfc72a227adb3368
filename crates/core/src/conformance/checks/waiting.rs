//! Waiting for a holder: `Core::wait`, and callers of the front end waiting for a value, a
//! release or a dead holder's lease.

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{LEASE, acquired, counter, eventually};
use crate::Timestamp;
use crate::conformance::{Harness, Outcome, func_id};

/// `wait` returns soon after the holder stores its value.
pub async fn wait_returns_when_value_set(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    let (core, k) = (h.core().await, key.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        core.set(&k, Bytes::from_static(b"done"), Timestamp::now())
            .await
            .expect("set");
    });
    let started = Instant::now();
    let entry = s
        .core
        .wait(&key, Duration::from_secs(8))
        .await
        .expect("wait")
        .expect("entry");
    assert_eq!(entry.value.as_deref(), Some(&b"done"[..]));
    assert!(!entry.is_claimed());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "wait took {:?}",
        started.elapsed()
    );
    Outcome::Passed
}

/// `wait` returns soon after the holder releases without a value.
pub async fn wait_returns_when_released(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let token = acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    let (core, k) = (h.core().await, key.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        core.release(&k, &token).await.expect("release");
    });
    let started = Instant::now();
    let entry = s
        .core
        .wait(&key, Duration::from_secs(8))
        .await
        .expect("wait");
    assert!(!entry.is_some_and(|e| e.is_claimed()));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "wait took {:?}",
        started.elapsed()
    );
    Outcome::Passed
}

/// `wait` returns once an abandoned claim's lease runs out.
pub async fn wait_returns_when_lease_expires(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    acquired(
        s.core
            .claim(&key, Duration::from_millis(400))
            .await
            .expect("claim"),
    );
    let started = Instant::now();
    let entry = s
        .core
        .wait(&key, Duration::from_secs(8))
        .await
        .expect("wait");
    assert!(!entry.is_some_and(|e| e.is_claimed()));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "wait returned while claimed ({took:?})"
    );
    assert!(took < Duration::from_secs(5), "wait took {took:?}");
    Outcome::Passed
}

/// `wait` gives up at its timeout and reports the claim as still live.
pub async fn wait_times_out_while_held(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    let started = Instant::now();
    let entry = s
        .core
        .wait(&key, Duration::from_millis(300))
        .await
        .expect("wait");
    let took = started.elapsed();
    assert!(entry.expect("claim visible").is_claimed());
    assert!(
        took >= Duration::from_millis(250),
        "returned after {took:?}"
    );
    assert!(took < Duration::from_secs(4), "returned after {took:?}");
    Outcome::Passed
}

/// `wait` on a key without a claim returns at once.
pub async fn wait_on_free_key_returns_at_once(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    s.core
        .set(&key, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .expect("set");
    let started = Instant::now();
    let entry = s
        .core
        .wait(&key, Duration::from_secs(10))
        .await
        .expect("wait");
    assert!(entry.is_some_and(|e| e.value.is_some()));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        s.core
            .wait(&s.key("f", &2u8), Duration::from_secs(10))
            .await
            .expect("wait"),
        None
    );
    Outcome::Passed
}

/// Callers arriving while another computes wait for and receive its value.
pub async fn waiters_receive_holders_value(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    let (f1, r1, watched) = (f.clone(), runs.clone(), f.clone());
    let holder = tokio::spawn(async move {
        f1.call(&1u8, move || async move {
            // Compute until all 8 callers below are waiting (a slow server can take longer
            // than any fixed time to bring them there), but at least 700 ms.
            tokio::time::sleep(Duration::from_millis(700)).await;
            let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
            while watched.stats().waits < 8 && tokio::time::Instant::now() < give_up {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r1.fetch_add(1, SeqCst);
            77u64
        })
        .await
        .expect("call")
    });
    let key = s.key("f", &1u8);
    let claimed = eventually(Duration::from_secs(10), || async {
        s.core
            .get(&key)
            .await
            .expect("get")
            .is_some_and(|e| e.is_claimed())
    })
    .await;
    assert!(claimed, "the first caller never claimed the key");
    h.step("waiting for 8 callers to receive the value of the caller computing it");
    let mut waiters = Vec::new();
    for _ in 0..8 {
        let (f, r) = (f.clone(), runs.clone());
        waiters.push(tokio::spawn(async move {
            f.call(&1u8, move || async move {
                r.fetch_add(1, SeqCst);
                0u64
            })
            .await
            .expect("call")
        }));
    }
    assert_eq!(holder.await.expect("holder"), 77);
    for w in waiters {
        assert_eq!(w.await.expect("waiter"), 77);
    }
    assert_eq!(runs.load(SeqCst), 1);
    assert_eq!(f.stats().waits, 8);
    Outcome::Passed
}

/// A holder that never releases blocks others only until its lease ends.
pub async fn dead_holder_lease_expires(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    acquired(
        s.core
            .claim(&key, Duration::from_millis(800))
            .await
            .expect("claim"),
    );
    let f = s.cache().function(func_id("f"));
    h.step("calling f on a key whose holder never renews: waiting for its 800 ms lease to end");
    let started = Instant::now();
    let v: u64 = f.call(&1u8, || async { 9 }).await.expect("call");
    let took = started.elapsed();
    assert_eq!(v, 9);
    assert!(
        took >= Duration::from_millis(500),
        "computed while the claim was live ({took:?})"
    );
    assert!(
        took < Duration::from_secs(8),
        "waited {took:?} for an 800 ms lease"
    );
    Outcome::Passed
}

/// `wait_for_calc_timeout` bounds the wait for a live holder; then the caller computes.
pub async fn wait_for_calc_timeout_computes(h: &Harness) -> Outcome {
    let s = h.scope().await;
    acquired(
        s.core
            .claim(&s.key("f", &1u8), Duration::from_secs(60))
            .await
            .expect("claim"),
    );
    let f = s
        .builder()
        .wait_for_calc_timeout(Duration::from_millis(400))
        .build()
        .function(func_id("f"));
    h.step(
        "calling f while another holds a 60 s claim: waiting out wait_for_calc_timeout (400 ms)",
    );
    let started = Instant::now();
    let v: u64 = f.call(&1u8, || async { 4 }).await.expect("call");
    let took = started.elapsed();
    assert_eq!(v, 4);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert_eq!(f.stats().wait_timeouts, 1);
    Outcome::Passed
}

/// The lease is renewed while the function runs: a computation longer than its lease is not
/// duplicated by another caller.
pub async fn lease_renewed_while_computing(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .lease(Duration::from_millis(4000))
        .build()
        .function(func_id("f"));
    let runs = counter();
    let (f1, r1) = (f.clone(), runs.clone());
    let holder = tokio::spawn(async move {
        f1.call(&1u8, move || async move {
            tokio::time::sleep(Duration::from_millis(9000)).await;
            r1.fetch_add(1, SeqCst);
            1u64
        })
        .await
        .expect("call")
    });
    // Past the first lease: only renewals keep the claim now. (A 4 s lease leaves a renewal
    // well over a second to land on a slow server: 2 s was lost once on a loaded machine.)
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let other = crate::Cachier::builder(h.core().await)
        .with_namespace(s.namespace.clone())
        .lease(Duration::from_millis(4000))
        .build()
        .function(func_id("f"));
    let r2 = runs.clone();
    h.step("calling f on another core while a caller computes, renewing its 4 s lease");
    let v: u64 = other
        .call(&1u8, move || async move {
            r2.fetch_add(1, SeqCst);
            2
        })
        .await
        .expect("call");
    assert_eq!(
        v, 1,
        "a second caller computed while the first was renewing its lease"
    );
    assert_eq!(holder.await.expect("holder"), 1);
    assert_eq!(runs.load(SeqCst), 1);
    Outcome::Passed
}
