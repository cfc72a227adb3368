//! Capabilities: what a backend declares about itself is checked where it can be, and said to
//! be taken on trust where it cannot.
//!
//! Each check prints one line per claim, on standard output and standard error:
//! `conformance: VERIFIED <check>: ...` for what it proved, `conformance: ASSUMED <check>: ...`
//! for what it had to take on trust, `conformance: NOT CLAIMED <check>: ...` for a capability the
//! backend does not declare.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{LEASE, acquired};
use crate::conformance::process::{key_in, set_in_another_process};
use crate::conformance::{Harness, Outcome};
use crate::{ErrorKind, Timestamp};

/// The largest value [`max_value_bytes_is_exact`] stores to prove a declared limit: a limit
/// above it is proved only from its refusing side.
const ROUND_TRIP_CEILING: u64 = 64 << 20;

/// Prints one line saying what a check verified or assumed about a capability.
fn note(h: &Harness, kind: &str, text: &str) {
    let line = format!("conformance: {kind} {}: {text}", h.test_name());
    println!("{line}");
    eprintln!("{line}");
}

/// A declared `max_value_bytes` is exact: a value of exactly the limit round-trips (for limits
/// up to 64 MiB) and one byte more fails with `TooLarge`, storing nothing.
pub async fn max_value_bytes_is_exact(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let Some(limit) = s.core.capabilities().max_value_bytes else {
        note(
            h,
            "ASSUMED",
            "max_value_bytes = None: values beyond the 8 MiB of large_value_8_mib are taken on \
             trust",
        );
        return Outcome::Passed;
    };
    let size = limit
        .checked_add(1)
        .and_then(|over| usize::try_from(over).ok())
        .expect("max_value_bytes + 1 fits in this machine's address space");
    let over = s.key("f", &"over");
    h.step(format!(
        "setting a value of max_value_bytes + 1 = {} bytes",
        limit + 1
    ));
    // Zeroed memory from the allocator costs nothing until it is read.
    let err = s
        .core
        .set(&over, Bytes::from(vec![0u8; size]), Timestamp::now())
        .await
        .expect_err("a value one byte over max_value_bytes was stored");
    assert_eq!(
        err.kind(),
        ErrorKind::TooLarge,
        "a value of max_value_bytes + 1 bytes: {err}"
    );
    assert_eq!(s.core.get(&over).await.expect("get"), None);
    note(
        h,
        "VERIFIED",
        &format!(
            "a value of max_value_bytes + 1 = {} bytes is TooLarge",
            limit + 1
        ),
    );
    if limit > ROUND_TRIP_CEILING {
        note(
            h,
            "ASSUMED",
            &format!(
                "a value of max_value_bytes = {limit} bytes round-trips (above the suite's \
                 {ROUND_TRIP_CEILING}-byte ceiling for one value)"
            ),
        );
        return Outcome::Passed;
    }
    let at = s.key("f", &"at");
    let value: Vec<u8> = (0..size - 1).map(|i| (i * 7 % 253) as u8).collect();
    h.step(format!(
        "round-tripping a value of max_value_bytes = {limit} bytes"
    ));
    s.core
        .set(&at, Bytes::from(value.clone()), Timestamp::now())
        .await
        .expect("a value of exactly max_value_bytes is stored");
    let got = s
        .core
        .get(&at)
        .await
        .expect("get")
        .and_then(|e| e.value)
        .expect("the value of max_value_bytes bytes reads back");
    assert!(
        got == value,
        "the value of max_value_bytes bytes changed in the round trip"
    );
    note(
        h,
        "VERIFIED",
        &format!("a value of max_value_bytes = {limit} bytes round-trips"),
    );
    Outcome::Passed
}

/// A backend declaring `persistent` keeps what one core wrote for a core made later: for a
/// store shared between processes, a value written by another OS process, read after that
/// process has exited.
pub async fn persistent_values_outlive_their_writer(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let capabilities = s.core.capabilities();
    if !capabilities.persistent {
        note(h, "NOT CLAIMED", "persistent = false");
        return Outcome::Passed;
    }
    let key = key_in(&s.namespace);
    if capabilities.cross_process {
        set_in_another_process(h, &s.namespace, "written by an exited process").await;
    } else {
        let writer = h.core().await;
        writer
            .set(
                &key,
                Bytes::from_static(b"written by an exited process"),
                Timestamp::now(),
            )
            .await
            .expect("set");
        drop(writer);
    }
    let reader = h.core().await;
    let value = reader
        .get(&key)
        .await
        .expect("get")
        .and_then(|e| e.value)
        .expect("a persistent backend lost a value when its writer went away");
    assert_eq!(&value[..], b"written by an exited process");
    if capabilities.cross_process {
        note(
            h,
            "VERIFIED",
            "persistent: a value written by another process is read by a new core after that \
             process exited",
        );
    } else {
        note(
            h,
            "VERIFIED",
            "persistent: a value written through one core is read by a new core from the factory",
        );
        note(
            h,
            "ASSUMED",
            "persistent: values survive a restart of the process",
        );
    }
    note(
        h,
        "ASSUMED",
        "persistent: values survive a restart of the backend's server, if it has one",
    );
    Outcome::Passed
}

/// `cross_process` is declared exactly when processes share the store: a value another OS
/// process sets is seen here only if the backend declares `cross_process` (a shared store
/// declaring `false` would silently skip the cross-process checks).
pub async fn cross_process_declared_when_shared(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let declared = s.core.capabilities().cross_process;
    set_in_another_process(h, &s.namespace, "set by another process").await;
    let seen = s
        .core
        .get(&key_in(&s.namespace))
        .await
        .expect("get")
        .is_some_and(|e| e.value.as_deref() == Some(&b"set by another process"[..]));
    match (declared, seen) {
        (true, true) => note(
            h,
            "VERIFIED",
            "cross_process: a value set by another process is seen here",
        ),
        (false, false) => note(
            h,
            "VERIFIED",
            "cross_process = false: a value set by another process is not seen here",
        ),
        (true, false) => panic!(
            "the backend declares cross_process, but a value another process set is not seen here"
        ),
        (false, true) => panic!(
            "a value another process set is seen here: the store is shared between processes, so \
             the backend must declare cross_process = true (declaring false skips the \
             cross-process checks)"
        ),
    }
    Outcome::Passed
}

/// A backend declaring `native_wakeup` wakes a waiter promptly when the claim ends, by `release`
/// or by `set`. The bound is generous, so that a loaded machine does not fail it: that the
/// wake-up is pushed rather than polled is assumed, with the measured delays printed.
pub async fn native_wakeup_wakes_promptly(h: &Harness) -> Outcome {
    let s = h.scope().await;
    if !s.core.capabilities().native_wakeup {
        note(
            h,
            "NOT CLAIMED",
            "native_wakeup = false: wait polls (wait_returns_when_* bound it)",
        );
        return Outcome::Passed;
    }
    let bound = Duration::from_secs(2);
    let holder = h.core().await;
    let mut delays = Vec::new();
    for (i, end) in ["release", "set"].into_iter().enumerate() {
        let key = s.key("f", &i);
        let token = acquired(holder.claim(&key, LEASE).await.expect("claim"));
        let (core, k) = (s.core.clone(), key.clone());
        let waiter = tokio::spawn(async move {
            let entry = core.wait(&k, Duration::from_secs(30)).await.expect("wait");
            (Instant::now(), entry)
        });
        // Long enough for a poller to reach its longest pause.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let ended = Instant::now();
        match end {
            "release" => holder.release(&key, &token).await.expect("release"),
            _ => holder
                .set(&key, Bytes::from_static(b"v"), Timestamp::now())
                .await
                .expect("set"),
        }
        h.step(format!("waiting for wait to return after {end}"));
        let (returned, entry) = waiter.await.expect("waiter");
        assert!(
            !entry.is_some_and(|e| e.is_claimed()),
            "wait returned while the claim was live"
        );
        let delay = returned.saturating_duration_since(ended);
        assert!(
            delay < bound,
            "wait returned {delay:?} after the claim ended by {end} (bound {bound:?})"
        );
        delays.push(format!("{end}: {} ms", delay.as_millis()));
    }
    let delays = delays.join(", ");
    note(
        h,
        "VERIFIED",
        &format!("native_wakeup: wait returned within {bound:?} of the claim's end ({delays})"),
    );
    note(
        h,
        "ASSUMED",
        "native_wakeup: the waiter is woken rather than polling (not asserted: it would take \
         timing bounds that flake on a loaded machine)",
    );
    Outcome::Passed
}
