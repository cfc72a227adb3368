//! Exact freshness through the front end: a value is fresh while `now - stored_at < limit`, and a
//! call's `max_age` is a hard limit, also under `next_time`.
//!
//! These checks place values at chosen ages with [`Core::set`](crate::Core::set)'s `stored_at`
//! instead of sleeping, so the boundaries are exact and nothing depends on timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use super::{counter, sealed};
use crate::conformance::{Harness, Outcome, Scope, func_id};
use crate::{CallOptions, Function, Timestamp};

/// Calls `f` on argument 1 with `opts`; the function returns `"computed {n}"`, counting runs.
async fn call(f: &Function, opts: CallOptions, runs: &Arc<AtomicUsize>) -> String {
    let runs = runs.clone();
    f.call_with(opts, &1u8, move || async move {
        format!("computed {}", runs.fetch_add(1, SeqCst))
    })
    .await
    .expect("call")
}

/// Stores `"stored"` as the result for argument 1 of `f`, `age` ago.
async fn store_aged(s: &Scope, f: &Function, age: Duration) {
    let key = f.key(&1u8).expect("key");
    s.core
        .set(&key, sealed("stored"), Timestamp::now().sub(age))
        .await
        .expect("set");
}

/// `stale_after(0)` never serves a stored value, not even one stored in the same millisecond.
pub async fn zero_stale_after_never_serves(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .stale_after(Duration::ZERO)
        .build()
        .function(func_id("f"));
    let runs = counter();
    for i in 0..5 {
        let got = call(&f, CallOptions::default(), &runs).await;
        assert_eq!(
            got,
            format!("computed {i}"),
            "call {i} was served from the cache"
        );
    }
    let stats = f.stats();
    assert_eq!((stats.hits, stats.computations), (0, 5), "{stats:?}");
    Outcome::Passed
}

/// A call's `max_age(0)` never serves a stored value, with or without `next_time`.
pub async fn zero_max_age_never_serves(h: &Harness) -> Outcome {
    let s = h.scope().await;
    for next_time in [false, true] {
        let f = s
            .builder()
            .next_time(next_time)
            .build()
            .function(func_id(&format!("f_{next_time}")));
        let runs = counter();
        assert_eq!(call(&f, CallOptions::default(), &runs).await, "computed 0");
        for i in 1..4 {
            let got = call(&f, CallOptions::default().max_age(Duration::ZERO), &runs).await;
            assert_eq!(
                got,
                format!("computed {i}"),
                "max_age(0) served a stored value (next_time {next_time})"
            );
        }
        // The values computed meanwhile were stored: a call without max_age is a hit.
        assert_eq!(call(&f, CallOptions::default(), &runs).await, "computed 3");
    }
    Outcome::Passed
}

/// The limits are exclusive: a value exactly `stale_after` (or a call's `max_age`) old is not
/// fresh, one a minute younger is.
pub async fn freshness_limit_is_exclusive(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let hour = Duration::from_secs(3600);
    let f = s.builder().stale_after(hour).build().function(func_id("f"));
    let runs = counter();

    store_aged(&s, &f, hour - Duration::from_secs(60)).await;
    assert_eq!(call(&f, CallOptions::default(), &runs).await, "stored");
    store_aged(&s, &f, hour).await;
    assert_eq!(
        call(&f, CallOptions::default(), &runs).await,
        "computed 0",
        "a value exactly stale_after old was served"
    );

    let ten_minutes = Duration::from_secs(600);
    let by_call = CallOptions::default().max_age(ten_minutes);
    store_aged(&s, &f, ten_minutes - Duration::from_secs(60)).await;
    assert_eq!(call(&f, by_call, &runs).await, "stored");
    store_aged(&s, &f, ten_minutes).await;
    assert_eq!(
        call(&f, by_call, &runs).await,
        "computed 1",
        "a value exactly max_age old was served"
    );
    Outcome::Passed
}

/// Under `next_time`, a stale value is served only while it is younger than the call's
/// `max_age`; an older one is recomputed, or the call waits for the refresh already running.
pub async fn next_time_respects_call_max_age(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .stale_after(Duration::from_secs(10))
        .next_time(true)
        .build()
        .function(func_id("f"));
    let key = f.key(&1u8).expect("key");
    let runs = counter();
    let age = Duration::from_secs(20);

    // Stale but within the call's max_age: served stale (the refresh may run meanwhile).
    store_aged(&s, &f, age).await;
    let loose = CallOptions::default().max_age(Duration::from_secs(60));
    assert_eq!(call(&f, loose, &runs).await, "stored");
    let refreshed = super::eventually(Duration::from_secs(10), || async {
        s.core
            .get(&key)
            .await
            .expect("get")
            .is_some_and(|e| e.stored_at.elapsed() < age && !e.is_claimed())
    })
    .await;
    assert!(
        refreshed,
        "the stale value was not refreshed in the background"
    );

    // Older than the call's max_age: computed now, never served stale.
    store_aged(&s, &f, age).await;
    let tight = CallOptions::default().max_age(Duration::from_secs(15));
    let before = runs.load(SeqCst);
    let got = call(&f, tight, &runs).await;
    assert_eq!(
        got,
        format!("computed {before}"),
        "a value older than the call's max_age was served under next_time"
    );

    // Older than max_age while another caller refreshes it: wait for that value.
    store_aged(&s, &f, age).await;
    match s.core.claim(&key, Duration::from_secs(30)).await {
        Ok(crate::Claim::Acquired(_)) => {}
        other => panic!("could not take the claim: {other:?}"),
    }
    let refresher = {
        let core = s.core.clone();
        let key = key.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            core.set(&key, sealed("refreshed"), Timestamp::now())
                .await
                .expect("set");
        })
    };
    let runs_before = runs.load(SeqCst);
    assert_eq!(
        call(&f, tight, &runs).await,
        "refreshed",
        "a call with max_age did not wait for the running refresh"
    );
    assert_eq!(
        runs.load(SeqCst),
        runs_before,
        "computed beside the refresh"
    );
    refresher.await.expect("refresher");
    Outcome::Passed
}
