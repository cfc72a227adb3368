//! Hits follow the store: whatever a front end keeps in process to serve hits faster (the near
//! cache of decoded values, on by default where the backend reports changes synchronously), a
//! call never returns
//! a value the backend no longer holds once the change that replaced it has returned, whoever
//! made it. These checks change values through a second front end and through the `Core`
//! itself, with values of the same length and the same `stored_at`, so that no shortcut
//! (length, time, address of freed memory) can pass for the entry's identity.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use super::{counter, sealed};
use crate::conformance::{Harness, Outcome, func_id};
use crate::{CallOptions, Timestamp};

/// A value, a change from elsewhere, a removal and a clear: each is seen by the next call of a
/// front end that has been serving hits all along.
pub async fn hits_follow_changes_from_elsewhere(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let ours = s.cache().function(func_id("f"));
    let theirs = s.cache().function(func_id("f"));
    let runs = counter();
    let call = |fallback: &'static str| {
        let (f, runs) = (ours.clone(), runs.clone());
        async move {
            f.call(&7u8, move || async move {
                runs.fetch_add(1, SeqCst);
                fallback.to_string()
            })
            .await
            .expect("call")
        }
    };
    assert_eq!(call("one").await, "one");
    assert_eq!(call("xxx").await, "one", "a hit");
    assert_eq!(call("xxx").await, "one", "a second hit");

    h.step("another front end stores a value of the same length");
    theirs
        .precache(&7u8, &"two".to_string())
        .await
        .expect("precache");
    assert_eq!(call("xxx").await, "two");
    assert_eq!(call("xxx").await, "two");

    h.step("the core stores a value of the same length at the same millisecond, twice");
    let key = ours.key(&7u8).expect("key");
    let at = Timestamp::now();
    for value in ["333", "444"] {
        s.core
            .set(&key, sealed(&value.to_string()), at)
            .await
            .expect("set");
        assert_eq!(call("xxx").await, value);
        assert_eq!(call("xxx").await, value);
    }

    h.step("another front end removes it");
    assert!(theirs.remove(&7u8).await.expect("remove"));
    assert_eq!(call("555").await, "555", "computed after the removal");
    assert_eq!(call("xxx").await, "555");

    h.step("another front end clears the function");
    assert_eq!(theirs.clear().await.expect("clear"), 1);
    assert_eq!(call("666").await, "666", "computed after the clear");
    assert_eq!(call("xxx").await, "666");

    h.step("the namespace is cleared");
    s.core
        .clear_namespace(&s.namespace)
        .await
        .expect("clear_namespace");
    assert_eq!(call("777").await, "777", "computed after clear_namespace");
    assert_eq!(runs.load(SeqCst), 4, "one, 555, 666 and 777 were computed");
    Outcome::Passed
}

/// `overwrite_cache` replaces a value that was being served as a hit, and later hits serve the
/// new one; a value returned by a hit is the caller's own (changing it changes no later hit).
pub async fn hits_after_an_overwrite_serve_the_new_value(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let hit = || {
        let f = f.clone();
        async move { f.call(&1u8, || async { vec![0u8; 3] }).await.expect("call") }
    };
    f.precache(&1u8, &vec![1u8, 1, 1]).await.expect("precache");
    let mut first = hit().await;
    assert_eq!(first, [1, 1, 1]);
    first.push(9);
    first[0] = 9;
    assert_eq!(hit().await, [1, 1, 1], "a changed copy is not served");
    let overwritten: Vec<u8> = f
        .call_with(
            CallOptions {
                overwrite_cache: true,
                ..CallOptions::default()
            },
            &1u8,
            || async { vec![2u8, 2, 2] },
        )
        .await
        .expect("overwrite");
    assert_eq!(overwritten, [2, 2, 2]);
    assert_eq!(hit().await, [2, 2, 2]);
    assert_eq!(hit().await, [2, 2, 2]);
    Outcome::Passed
}

/// Callers hitting one key while another front end stores new values in turn: a call never
/// returns a value older than the newest one whose store had returned when the call began.
pub async fn concurrent_hits_never_go_back_in_time(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let ours = s.cache().function(func_id("f"));
    let theirs = s.cache().function(func_id("f"));
    const ROUNDS: u64 = 40;
    theirs.precache(&0u8, &0u64).await.expect("precache");
    let written = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (f, written) = (ours.clone(), written.clone());
        readers.push(tokio::spawn(async move {
            let mut calls = 0u64;
            loop {
                let floor = written.load(SeqCst);
                let got: u64 = f.call(&0u8, || async { u64::MAX }).await.expect("call");
                assert!(
                    got != u64::MAX && got >= floor,
                    "returned {got} after {floor} was stored"
                );
                calls += 1;
                if floor == ROUNDS {
                    return calls;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for i in 1..=ROUNDS {
        theirs.precache(&0u8, &i).await.expect("precache");
        written.store(i, SeqCst);
        tokio::task::yield_now().await;
    }
    for reader in readers {
        let calls = reader.await.expect("a reader");
        assert!(calls > 0);
    }
    Outcome::Passed
}
