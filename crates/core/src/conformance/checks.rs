//! The checks. Each takes a [`Harness`], works in its own [`Scope`](super::Scope) and panics on
//! the first broken expectation.
//!
//! The first group speaks to the [`Core`](crate::Core) directly (the storage contract); the
//! second goes through the [`Cachier`](crate::Cachier) front end (the call algorithm on this
//! backend); the last group starts other OS processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::{Harness, Outcome, func_id};
use crate::codec::{self, Bincode, Codec, DefaultCodec};
use crate::{CallOptions, Claim, ClaimToken, Entry, ErrorKind, Timestamp};

pub use super::process::{cross_process_dead_holder, cross_process_single_flight};

const LEASE: Duration = Duration::from_secs(10);

fn sealed<T: Serialize + ?Sized>(value: &T) -> Bytes {
    Bytes::from(codec::seal::<DefaultCodec, T>(value).expect("test values serialize"))
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

fn acquired(claim: Claim) -> ClaimToken {
    match claim {
        Claim::Acquired(token) => token,
        Claim::Held { until } => {
            panic!("expected to acquire the claim, it is held until {until:?}")
        }
    }
}

fn is_held(claim: &Claim) -> bool {
    matches!(claim, Claim::Held { .. })
}

/// Polls `probe` every 20 ms until it is true or `limit` passes; returns whether it became true.
async fn eventually<F, Fut>(limit: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if probe().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The storage contract.
// ---------------------------------------------------------------------------------------------

/// A key never written reads as `None`, and so does its wait.
pub async fn get_missing_is_none(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    assert_eq!(s.core.get(&key).await.expect("get"), None);
    assert!(!s.core.remove(&key).await.expect("remove"));
    Outcome::Passed
}

/// A stored value comes back byte for byte, with its `stored_at` to the millisecond.
pub async fn set_get_round_trip(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let at = Timestamp(1_700_000_000_123);
    s.core
        .set(&key, Bytes::from_static(b"hello"), at)
        .await
        .expect("set");
    let entry = s.core.get(&key).await.expect("get").expect("entry present");
    assert_eq!(entry.value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(entry.stored_at, at);
    assert_eq!(entry.claim_until, None);
    Outcome::Passed
}

/// `get_value` (the hit path's read) returns the value and time `get` returns; for a key with
/// only a claim it returns no value.
pub async fn get_value_matches_get(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let (key, claimed, missing) = (s.key("f", &1u8), s.key("f", &2u8), s.key("f", &3u8));
    s.core
        .set(&key, Bytes::from_static(b"v"), Timestamp(1_700_000_000_456))
        .await
        .expect("set");
    let full = s.core.get(&key).await.expect("get").expect("entry");
    let value = s
        .core
        .get_value(&key)
        .await
        .expect("get_value")
        .expect("entry");
    assert_eq!(
        (&value.value, value.stored_at),
        (&full.value, full.stored_at)
    );
    acquired(s.core.claim(&claimed, LEASE).await.expect("claim"));
    let claim_only = s.core.get_value(&claimed).await.expect("get_value");
    assert!(claim_only.is_none_or(|e| e.value.is_none()));
    assert_eq!(s.core.get_value(&missing).await.expect("get_value"), None);
    Outcome::Passed
}

/// A second `set` replaces value and time.
pub async fn set_overwrites(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    s.core
        .set(&key, Bytes::from_static(b"one"), Timestamp(1000))
        .await
        .expect("set");
    s.core
        .set(&key, Bytes::from_static(b"two"), Timestamp(2000))
        .await
        .expect("set");
    let entry = s.core.get(&key).await.expect("get").expect("entry");
    assert_eq!(entry.value.as_deref(), Some(&b"two"[..]));
    assert_eq!(entry.stored_at, Timestamp(2000));
    Outcome::Passed
}

/// Every byte value survives, including NUL and bytes that are not UTF-8.
pub async fn binary_values_every_byte(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let value: Vec<u8> = (0..=255u8).cycle().take(4096).chain([0, 0, 0xff]).collect();
    s.core
        .set(&key, Bytes::from(value.clone()), Timestamp::now())
        .await
        .expect("set");
    let entry = s.core.get(&key).await.expect("get").expect("entry");
    assert_eq!(entry.value.as_deref(), Some(&value[..]));
    Outcome::Passed
}

/// An empty value is a value, not an absence.
pub async fn empty_value_round_trips(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    s.core
        .set(&key, Bytes::new(), Timestamp::now())
        .await
        .expect("set");
    let entry = s.core.get(&key).await.expect("get").expect("entry present");
    assert_eq!(entry.value.as_deref(), Some(&b""[..]));
    Outcome::Passed
}

/// An 8 MiB value round trips (where the backend allows values that large).
pub async fn large_value_8_mib(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let size = 8 << 20;
    if s.core
        .capabilities()
        .max_value_bytes
        .is_some_and(|max| max < size as u64)
    {
        return Outcome::Skipped("the backend's max_value_bytes is below 8 MiB");
    }
    let key = s.key("f", &1u8);
    let value: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    s.core
        .set(&key, Bytes::from(value.clone()), Timestamp::now())
        .await
        .expect("set");
    let entry = s.core.get(&key).await.expect("get").expect("entry");
    let got = entry.value.expect("value");
    assert_eq!(got.len(), value.len());
    assert!(got == value, "8 MiB value changed in the round trip");
    Outcome::Passed
}

/// A cold key is claimed, and `get` then shows the live claim without a value.
pub async fn claim_cold_key_acquires(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let before = Timestamp::now();
    acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    let entry = s.core.get(&key).await.expect("get").expect("claim visible");
    assert_eq!(entry.value, None);
    let until = entry.claim_until.expect("claim_until");
    assert!(
        until >= before.add(LEASE / 2),
        "claim ends too early: {until:?}"
    );
    assert!(
        until <= Timestamp::now().add(LEASE * 2),
        "claim ends too late"
    );
    Outcome::Passed
}

/// A claimed key is `Held` for everyone else, with the holder's expiry.
pub async fn claim_held_key_is_held(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    let other = h.core().await;
    match other.claim(&key, LEASE).await.expect("claim") {
        Claim::Held { until } => assert!(until > Timestamp::now().add(LEASE / 2)),
        Claim::Acquired(_) => panic!("a held claim was acquired twice"),
    }
    Outcome::Passed
}

/// Of 32 callers racing for one cold key on four core instances, exactly one wins.
pub async fn concurrent_claims_one_winner(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let cores = if s.core.capabilities().cross_process {
        vec![
            s.core.clone(),
            h.core().await,
            h.core().await,
            h.core().await,
        ]
    } else {
        vec![s.core.clone()]
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (core, key, barrier) = (cores[i % cores.len()].clone(), key.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            core.claim(&key, LEASE).await.expect("claim")
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if matches!(task.await.expect("task"), Claim::Acquired(_)) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one racing claim must win");
    Outcome::Passed
}

/// After the holder releases, the next claim is acquired.
pub async fn release_lets_next_claim_in(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let token = acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    s.core.release(&key, &token).await.expect("release");
    assert_eq!(
        s.core.get(&key).await.expect("get"),
        None,
        "a released claim-only key is gone"
    );
    acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    Outcome::Passed
}

/// A release with someone else's token does nothing.
pub async fn release_with_wrong_token_is_ignored(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    s.core
        .release(&key, &ClaimToken::generate())
        .await
        .expect("release");
    assert!(is_held(&s.core.claim(&key, LEASE).await.expect("claim")));
    Outcome::Passed
}

/// Releasing a claim keeps the value stored under the key.
pub async fn release_keeps_value(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    s.core
        .set(&key, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .expect("set");
    let token = acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    s.core.release(&key, &token).await.expect("release");
    let entry = s.core.get(&key).await.expect("get").expect("entry");
    assert_eq!(entry.value.as_deref(), Some(&b"v"[..]));
    assert_eq!(entry.claim_until, None);
    Outcome::Passed
}

/// `renew` by the holder moves the expiry out: the claim outlives its first lease.
pub async fn renew_extends_holder_lease(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let token = acquired(
        s.core
            .claim(&key, Duration::from_millis(800))
            .await
            .expect("claim"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        s.core
            .renew(&key, &token, Duration::from_secs(5))
            .await
            .expect("renew")
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        is_held(&s.core.claim(&key, LEASE).await.expect("claim")),
        "a renewed claim expired at its first lease"
    );
    Outcome::Passed
}

/// `renew` with a token that does not hold the claim fails and changes nothing.
pub async fn renew_with_wrong_token_fails(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    assert!(
        !s.core
            .renew(&key, &ClaimToken::generate(), LEASE)
            .await
            .expect("renew")
    );
    acquired(
        s.core
            .claim(&key, Duration::from_millis(600))
            .await
            .expect("claim"),
    );
    assert!(
        !s.core
            .renew(&key, &ClaimToken::generate(), LEASE * 10)
            .await
            .expect("renew")
    );
    let until = s
        .core
        .get(&key)
        .await
        .expect("get")
        .expect("entry")
        .claim_until
        .expect("claim");
    assert!(
        until <= Timestamp::now().add(Duration::from_secs(2)),
        "a stranger extended the claim"
    );
    Outcome::Passed
}

/// A lease that ran out cannot be renewed: the holder has lost it.
pub async fn renew_after_expiry_fails(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let token = acquired(
        s.core
            .claim(&key, Duration::from_millis(300))
            .await
            .expect("claim"),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!s.core.renew(&key, &token, LEASE).await.expect("renew"));
    Outcome::Passed
}

/// A claim nobody renews ends by itself; the key can be claimed again.
pub async fn claim_expires_with_lease(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let first = acquired(
        s.core
            .claim(&key, Duration::from_millis(300))
            .await
            .expect("claim"),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !s.core
            .get(&key)
            .await
            .expect("get")
            .is_some_and(|e| e.is_claimed())
    );
    let second = acquired(s.core.claim(&key, LEASE).await.expect("claim after expiry"));
    assert_ne!(first, second);
    // The first holder's late release must not end the second holder's claim.
    s.core.release(&key, &first).await.expect("release");
    assert!(is_held(&s.core.claim(&key, LEASE).await.expect("claim")));
    Outcome::Passed
}

/// `set` ends any claim on the key.
pub async fn set_ends_claim(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    s.core
        .set(&key, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .expect("set");
    let entry = s.core.get(&key).await.expect("get").expect("entry");
    assert_eq!(entry.claim_until, None);
    acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    Outcome::Passed
}

/// A (stale) value stays readable while someone holds the claim to recompute it.
pub async fn value_readable_while_claimed(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    s.core
        .set(&key, Bytes::from_static(b"old"), Timestamp(5))
        .await
        .expect("set");
    acquired(
        s.core
            .claim(&key, LEASE)
            .await
            .expect("a value does not block a claim"),
    );
    let entry = s.core.get(&key).await.expect("get").expect("entry");
    assert_eq!(entry.value.as_deref(), Some(&b"old"[..]));
    assert_eq!(entry.stored_at, Timestamp(5));
    assert!(entry.is_claimed());
    Outcome::Passed
}

/// `remove` removes exactly one key and says whether there was a value.
pub async fn remove_removes_one_key(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let (a, b) = (s.key("f", &1u8), s.key("f", &2u8));
    for key in [&a, &b] {
        s.core
            .set(key, Bytes::from_static(b"v"), Timestamp::now())
            .await
            .expect("set");
    }
    assert!(s.core.remove(&a).await.expect("remove"));
    assert_eq!(s.core.get(&a).await.expect("get"), None);
    assert!(s.core.get(&b).await.expect("get").is_some());
    assert!(!s.core.remove(&a).await.expect("remove twice"));
    Outcome::Passed
}

/// `remove` also ends a claim on the key.
pub async fn remove_ends_claim(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    s.core.remove(&key).await.expect("remove");
    acquired(s.core.claim(&key, LEASE).await.expect("claim after remove"));
    Outcome::Passed
}

const SIBLINGS: [&str; 6] = ["foo", "foo_bar", "foo*", "fo?", "foo:bar", "foo[x]"];

/// `clear` removes one function's entries and no other's, even ids that look like patterns.
pub async fn clear_one_function_only(h: &Harness) -> Outcome {
    let s = h.scope().await;
    for func in SIBLINGS {
        for arg in 0..2u8 {
            s.core
                .set(
                    &s.key(func, &arg),
                    Bytes::from_static(b"v"),
                    Timestamp::now(),
                )
                .await
                .expect("set");
        }
    }
    for (i, func) in SIBLINGS.iter().enumerate() {
        let removed = s
            .core
            .clear(&s.namespace, &func_id(func))
            .await
            .expect("clear");
        assert_eq!(removed, 2, "clear({func}) removed {removed} values");
        for later in &SIBLINGS[i + 1..] {
            assert!(
                s.core
                    .get(&s.key(later, &0u8))
                    .await
                    .expect("get")
                    .is_some(),
                "clear({func}) touched {later}"
            );
        }
        assert_eq!(s.core.get(&s.key(func, &1u8)).await.expect("get"), None);
    }
    Outcome::Passed
}

/// `clear` removes the function's claims too.
pub async fn clear_removes_claims(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    s.core
        .clear(&s.namespace, &func_id("f"))
        .await
        .expect("clear");
    acquired(s.core.claim(&key, LEASE).await.expect("claim after clear"));
    Outcome::Passed
}

/// `clear_claims` ends one function's claims, keeps values, and spares other functions.
pub async fn clear_claims_keeps_values(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let (with_value, claim_only) = (s.key("f", &1u8), s.key("f", &2u8));
    let sibling = s.key("f_2", &1u8);
    s.core
        .set(&with_value, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .expect("set");
    for key in [&with_value, &claim_only, &sibling] {
        acquired(s.core.claim(key, LEASE).await.expect("claim"));
    }
    let ended = s
        .core
        .clear_claims(&s.namespace, &func_id("f"))
        .await
        .expect("clear_claims");
    assert_eq!(ended, 2);
    let entry = s
        .core
        .get(&with_value)
        .await
        .expect("get")
        .expect("value kept");
    assert_eq!(entry.value.as_deref(), Some(&b"v"[..]));
    assert_eq!(entry.claim_until, None);
    acquired(s.core.claim(&claim_only, LEASE).await.expect("claim"));
    assert!(
        is_held(&s.core.claim(&sibling, LEASE).await.expect("claim")),
        "sibling's claim ended"
    );
    Outcome::Passed
}

/// `delete_stale` removes values stored before the cut-off, of one function only.
pub async fn delete_stale_by_stored_at(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let now = Timestamp::now();
    let old = now.sub(Duration::from_secs(60));
    let (f_old, f_new, g_old) = (s.key("f", &1u8), s.key("f", &2u8), s.key("f_x", &1u8));
    s.core
        .set(&f_old, Bytes::from_static(b"o"), old)
        .await
        .expect("set");
    s.core
        .set(&f_new, Bytes::from_static(b"n"), now)
        .await
        .expect("set");
    s.core
        .set(&g_old, Bytes::from_static(b"o"), old)
        .await
        .expect("set");
    let cut = now.sub(Duration::from_secs(30));
    let removed = s
        .core
        .delete_stale(&s.namespace, &func_id("f"), cut)
        .await
        .expect("delete_stale");
    assert_eq!(removed, 1);
    assert_eq!(s.core.get(&f_old).await.expect("get"), None);
    assert!(s.core.get(&f_new).await.expect("get").is_some());
    assert!(
        s.core.get(&g_old).await.expect("get").is_some(),
        "another function's value deleted"
    );
    Outcome::Passed
}

/// Two namespaces never see each other's entries or claims.
pub async fn namespaces_are_isolated(h: &Harness) -> Outcome {
    let a = h.scope().await;
    let b = h.scope().await;
    assert_ne!(a.namespace, b.namespace);
    let (ka, kb) = (a.key("f", &1u8), b.key("f", &1u8));
    a.core
        .set(&ka, Bytes::from_static(b"a"), Timestamp::now())
        .await
        .expect("set");
    assert_eq!(b.core.get(&kb).await.expect("get"), None);
    acquired(b.core.claim(&kb, LEASE).await.expect("claim in b"));
    acquired(a.core.claim(&ka, LEASE).await.expect("claim in a"));
    b.core
        .clear(&b.namespace, &func_id("f"))
        .await
        .expect("clear b");
    assert!(
        a.core
            .get(&ka)
            .await
            .expect("get")
            .is_some_and(|e| e.value.is_some())
    );
    Outcome::Passed
}

/// `clear_namespace` removes every function's values and claims, and nothing elsewhere.
pub async fn clear_namespace_removes_everything(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let other = h.scope().await;
    let keys = [s.key("f", &1u8), s.key("g", &1u8), s.key("h::i", &"x")];
    for key in &keys {
        s.core
            .set(key, Bytes::from_static(b"v"), Timestamp::now())
            .await
            .expect("set");
    }
    let claimed = s.key("j", &1u8);
    acquired(s.core.claim(&claimed, LEASE).await.expect("claim"));
    let kept = other.key("f", &1u8);
    other
        .core
        .set(&kept, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .expect("set");
    let removed = s
        .core
        .clear_namespace(&s.namespace)
        .await
        .expect("clear_namespace");
    assert_eq!(removed, 3);
    for key in keys.iter().chain([&claimed]) {
        assert_eq!(s.core.get(key).await.expect("get"), None, "{key} survived");
    }
    assert!(
        other.core.get(&kept).await.expect("get").is_some(),
        "another namespace was cleared"
    );
    Outcome::Passed
}

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

/// Function ids with pattern, path, quote and non-ASCII characters work and stay apart.
pub async fn special_function_ids(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let long = format!("{}::f", "m".repeat(crate::MAX_FUNC_ID_LEN - 3));
    let ids = [
        "a*",
        "a?",
        "a[b]",
        "a\\b",
        "a:b",
        "a/b",
        "../x",
        "a%b",
        "a_b",
        "a'b",
        "a\"b",
        "a b",
        "naïve::函数",
        "a{b}",
        "a.b",
        ".",
        "..",
        long.as_str(),
    ];
    for (i, id) in ids.iter().enumerate() {
        s.core
            .set(
                &s.key(id, &0u8),
                Bytes::from(vec![i as u8]),
                Timestamp::now(),
            )
            .await
            .expect(id);
    }
    for (i, id) in ids.iter().enumerate() {
        let entry = s.core.get(&s.key(id, &0u8)).await.expect(id).expect(id);
        assert_eq!(
            entry.value.as_deref(),
            Some(&[i as u8][..]),
            "{id} read another's value"
        );
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            s.core.clear(&s.namespace, &func_id(id)).await.expect(id),
            1,
            "clear({id})"
        );
        for later in &ids[i + 1..] {
            assert!(
                s.core
                    .get(&s.key(later, &0u8))
                    .await
                    .expect(later)
                    .is_some(),
                "clear({id}) removed {later}"
            );
        }
    }
    Outcome::Passed
}

// ---------------------------------------------------------------------------------------------
// The call algorithm through the front end.
// ---------------------------------------------------------------------------------------------

/// The first call computes, the second is a hit.
pub async fn call_miss_then_hit(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    for _ in 0..2 {
        let r = runs.clone();
        let v: String = f
            .call(&(3u32, "x"), move || async move {
                r.fetch_add(1, SeqCst);
                "three".to_string()
            })
            .await
            .expect("call");
        assert_eq!(v, "three");
    }
    assert_eq!(runs.load(SeqCst), 1);
    let stats = f.stats();
    assert_eq!((stats.misses, stats.hits, stats.computations), (1, 1, 1));
    Outcome::Passed
}

/// Different arguments are different entries.
pub async fn call_distinct_args_distinct_entries(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    for round in 0..2 {
        for x in [1u64, 2, 3] {
            let r = runs.clone();
            let v: u64 = f
                .call(&x, move || async move {
                    r.fetch_add(1, SeqCst);
                    x * 10
                })
                .await
                .expect("call");
            assert_eq!(v, x * 10, "round {round}");
        }
    }
    assert_eq!(runs.load(SeqCst), 3);
    Outcome::Passed
}

/// A value older than `stale_after` is recomputed.
pub async fn stale_after_recomputes(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .stale_after(Duration::from_millis(400))
        .build()
        .function(func_id("f"));
    let runs = counter();
    let call = |runs: Arc<AtomicUsize>| {
        let f = f.clone();
        async move {
            f.call(
                &1u8,
                move || async move { runs.fetch_add(1, SeqCst) as u64 },
            )
            .await
            .expect("call")
        }
    };
    assert_eq!(call(runs.clone()).await, 0);
    assert_eq!(call(runs.clone()).await, 0, "fresh value not served");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(call(runs.clone()).await, 1, "stale value served");
    assert_eq!(runs.load(SeqCst), 2);
    Outcome::Passed
}

/// `max_age` per call tightens freshness for that call only.
pub async fn max_age_per_call(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    let r = runs.clone();
    let _: u64 = f
        .call(&1u8, move || async move { r.fetch_add(1, SeqCst) as u64 })
        .await
        .expect("call");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = runs.clone();
    let loose: u64 = f
        .call_with(
            CallOptions::default().max_age(Duration::from_secs(60)),
            &1u8,
            move || async move { r.fetch_add(1, SeqCst) as u64 },
        )
        .await
        .expect("call");
    assert_eq!(loose, 0);
    let r = runs.clone();
    let tight: u64 = f
        .call_with(
            CallOptions::default().max_age(Duration::from_millis(100)),
            &1u8,
            move || async move { r.fetch_add(1, SeqCst) as u64 },
        )
        .await
        .expect("call");
    assert_eq!(tight, 1, "a value older than max_age was served");
    Outcome::Passed
}

/// With `next_time`, a stale value is served at once and refreshed in the background.
pub async fn next_time_serves_stale_then_refreshes(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .stale_after(Duration::from_millis(300))
        .next_time(true)
        .build()
        .function(func_id("f"));
    let runs = counter();
    let call = || {
        let (f, runs) = (f.clone(), runs.clone());
        async move {
            f.call(&1u8, move || async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                runs.fetch_add(1, SeqCst) as u64
            })
            .await
            .expect("call")
        }
    };
    assert_eq!(call().await, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    assert_eq!(call().await, 0, "the stale value is served");
    assert!(started.elapsed() < Duration::from_millis(1000));
    let refreshed = eventually(Duration::from_secs(8), || async {
        let (f, runs) = (f.clone(), runs.clone());
        let v: u64 = f
            .call_with(
                CallOptions::default().max_age(Duration::from_secs(60)),
                &1u8,
                move || async move { runs.fetch_add(1, SeqCst) as u64 },
            )
            .await
            .expect("call");
        v == 1
    })
    .await;
    assert!(refreshed, "the background refresh never stored its value");
    assert_eq!(runs.load(SeqCst), 2);
    assert!(f.stats().stale_hits >= 1);
    Outcome::Passed
}

/// Calls `f` once per step with the step's options; each call returns how many computations ran
/// before it, and must return the step's expected value.
async fn call_steps(f: &crate::Function, steps: &[(CallOptions, u64)]) {
    let runs = counter();
    for (i, &(opts, expected)) in steps.iter().enumerate() {
        let r = runs.clone();
        let v: u64 = f
            .call_with(
                opts,
                &1u8,
                move || async move { r.fetch_add(1, SeqCst) as u64 },
            )
            .await
            .expect("call");
        assert_eq!(v, expected, "step {i}");
    }
}

/// `skip_cache` computes without reading or writing.
pub async fn skip_cache_bypasses(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let (plain, skip) = (
        CallOptions::default(),
        CallOptions::default().skip_cache(true),
    );
    call_steps(&f, &[(plain, 0), (skip, 1), (plain, 0)]).await;
    assert_eq!(f.stats().bypassed, 1);
    Outcome::Passed
}

/// `overwrite_cache` recomputes and stores the new value.
pub async fn overwrite_cache_recomputes_and_stores(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let (plain, over) = (
        CallOptions::default(),
        CallOptions::default().overwrite_cache(true),
    );
    call_steps(&f, &[(plain, 0), (over, 1), (plain, 1)]).await;
    Outcome::Passed
}

/// A precached value is served without computing.
pub async fn precache_is_served(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    f.precache(&(1u8, 2u8), &99u64).await.expect("precache");
    let v: u64 = f
        .call(&(1u8, 2u8), || async {
            panic!("computed although precached")
        })
        .await
        .expect("call");
    assert_eq!(v, 99);
    Outcome::Passed
}

/// `remove(args)` forgets one argument set only.
pub async fn remove_args_forgets_one(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    let call = |x: u8| {
        let (f, r) = (f.clone(), runs.clone());
        async move {
            f.call(&x, move || async move {
                r.fetch_add(1, SeqCst);
                x
            })
            .await
            .expect("call")
        }
    };
    call(1).await;
    call(2).await;
    assert!(f.remove(&1u8).await.expect("remove"));
    assert!(!f.remove(&1u8).await.expect("remove again"));
    call(1).await;
    call(2).await;
    assert_eq!(runs.load(SeqCst), 3);
    Outcome::Passed
}

/// `Function::clear` clears that function and not one whose id extends it.
pub async fn clear_function_spares_sibling(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let cache = s.cache();
    let (f, sibling) = (
        cache.function(func_id("f")),
        cache.function(func_id("f_bar")),
    );
    let runs = counter();
    for _ in 0..2 {
        for func in [&f, &sibling] {
            let r = runs.clone();
            let _: u8 = func
                .call(&1u8, move || async move {
                    r.fetch_add(1, SeqCst);
                    1
                })
                .await
                .expect("call");
        }
        if runs.load(SeqCst) == 2 {
            assert_eq!(f.clear().await.expect("clear"), 1);
        }
    }
    assert_eq!(runs.load(SeqCst), 3, "clearing f must leave f_bar cached");
    Outcome::Passed
}

/// Calls `f` twice with a function returning `None`; returns how often it ran.
async fn runs_of_two_none_calls(f: &crate::Function) -> usize {
    let runs = counter();
    for _ in 0..2 {
        let r = runs.clone();
        let v: Option<u32> = f
            .call(&1u8, move || async move {
                r.fetch_add(1, SeqCst);
                None
            })
            .await
            .expect("call");
        assert_eq!(v, None);
    }
    runs.load(SeqCst)
}

/// A `None` result is returned but not cached by default.
pub async fn none_not_cached_by_default(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    assert_eq!(runs_of_two_none_calls(&f).await, 2);
    Outcome::Passed
}

/// With `allow_none`, a `None` result is cached like any other.
pub async fn none_cached_with_allow_none(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.builder().allow_none(true).build().function(func_id("f"));
    assert_eq!(runs_of_two_none_calls(&f).await, 1);
    Outcome::Passed
}

/// A result over `entry_size_limit` is returned but not stored; a small one is stored.
pub async fn entry_size_limit_returns_but_does_not_store(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .entry_size_limit(1024)
        .build()
        .function(func_id("f"));
    let runs = counter();
    for _ in 0..2 {
        let r = runs.clone();
        let v: Vec<u8> = f
            .call(&"big", move || async move {
                r.fetch_add(1, SeqCst);
                vec![7u8; 4096]
            })
            .await
            .expect("call");
        assert_eq!(v.len(), 4096);
    }
    assert_eq!(runs.load(SeqCst), 2, "an oversized result was stored");
    assert_eq!(f.stats().size_limit_rejections, 2);
    for _ in 0..2 {
        let r = runs.clone();
        let _: Vec<u8> = f
            .call(&"small", move || async move {
                r.fetch_add(1, SeqCst);
                vec![7u8; 16]
            })
            .await
            .expect("call");
    }
    assert_eq!(runs.load(SeqCst), 3, "a small result was not stored");
    assert_eq!(
        s.core.get(&s.key("f", &"big")).await.expect("get"),
        None,
        "claim left behind"
    );
    Outcome::Passed
}

/// With `strict`, an oversized result is a `TooLarge` error.
pub async fn strict_entry_size_limit_errors(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .entry_size_limit(64)
        .strict(true)
        .build()
        .function(func_id("f"));
    let err = f
        .call(&1u8, || async { vec![1u8; 1000] })
        .await
        .expect_err("strict refuses");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    let entry = s.core.get(&s.key("f", &1u8)).await.expect("get");
    assert!(!entry.is_some_and(|e| e.is_claimed()), "claim left behind");
    Outcome::Passed
}

async fn corrupt_is_miss(h: &Harness, bad: Bytes) {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let key = s.key("f", &1u8);
    s.core.set(&key, bad, Timestamp::now()).await.expect("set");
    let v: u64 = f
        .call(&1u8, || async { 5 })
        .await
        .expect("a corrupt entry is a miss");
    assert_eq!(v, 5);
    assert_eq!(f.stats().corrupt_entries, 1);
    let stored = s
        .core
        .get(&key)
        .await
        .expect("get")
        .expect("overwritten")
        .value
        .expect("value");
    let decoded: u64 = codec::open::<DefaultCodec, u64>(&stored, 1 << 20).expect("valid now");
    assert_eq!(decoded, 5);
    let again: u64 = f
        .call(&1u8, || async { panic!("recomputed after overwrite") })
        .await
        .expect("call");
    assert_eq!(again, 5);
}

/// Foreign bytes under a key are a miss, recomputed and overwritten.
pub async fn corrupt_entry_is_a_miss_and_overwritten(h: &Harness) -> Outcome {
    corrupt_is_miss(h, Bytes::from_static(b"\x80\x04\x95 not a cachier value")).await;
    Outcome::Passed
}

/// A truncated value is a miss.
pub async fn truncated_entry_is_a_miss(h: &Harness) -> Outcome {
    let whole = sealed(&123456789u64);
    corrupt_is_miss(h, whole.slice(..whole.len() - 3)).await;
    Outcome::Passed
}

/// A value written by an unknown codec is a miss.
pub async fn foreign_codec_is_a_miss(h: &Harness) -> Outcome {
    let payload = Bincode::encode(&5u64).expect("encode");
    corrupt_is_miss(h, Bytes::from(codec::wrap(99, &payload).expect("wrap"))).await;
    Outcome::Passed
}

/// A valid envelope around a length prefix of 2^40 is refused without allocating it.
pub async fn hostile_length_prefix_is_a_miss(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let hostile = codec::wrap(Bincode::ID, &(1u64 << 40).to_le_bytes()).expect("wrap");
    s.core
        .set(&s.key("f", &1u8), Bytes::from(hostile), Timestamp::now())
        .await
        .expect("set");
    let v: Vec<u8> = f
        .call(&1u8, || async { vec![1, 2, 3] })
        .await
        .expect("call");
    assert_eq!(v, vec![1, 2, 3]);
    assert_eq!(f.stats().corrupt_entries, 1);
    Outcome::Passed
}

/// A value of another type (same envelope) is a miss, not a wrong answer.
pub async fn wrong_type_is_a_miss(h: &Harness) -> Outcome {
    corrupt_is_miss(h, sealed(&"a string, not a number".to_string())).await;
    Outcome::Passed
}

async fn one_computation(funcs: Vec<crate::Function>, callers: usize) {
    let runs = counter();
    let barrier = Arc::new(tokio::sync::Barrier::new(callers));
    let mut tasks = Vec::new();
    for i in 0..callers {
        let (f, r, b) = (
            funcs[i % funcs.len()].clone(),
            runs.clone(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            f.call(&"cold", move || async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                r.fetch_add(1, SeqCst) as u64 + 1000
            })
            .await
            .expect("call")
        }));
    }
    for task in tasks {
        assert_eq!(
            task.await.expect("task"),
            1000,
            "a caller got another result"
        );
    }
    assert_eq!(
        runs.load(SeqCst),
        1,
        "{callers} callers on a cold key computed more than once"
    );
}

/// 64 concurrent callers on one cold key: one computation, 64 equal results.
pub async fn many_tasks_one_computation(h: &Harness) -> Outcome {
    let s = h.scope().await;
    one_computation(vec![s.cache().function(func_id("f"))], 64).await;
    Outcome::Passed
}

/// Callers on four separate core instances (separate connections) still compute once.
pub async fn many_cores_one_computation(h: &Harness) -> Outcome {
    let s = h.scope().await;
    if !s.core.capabilities().cross_process {
        return Outcome::Skipped(
            "separate instances of an in-process backend do not share entries",
        );
    }
    let mut funcs = vec![s.cache().function(func_id("f"))];
    for _ in 0..3 {
        let cache = crate::Cachier::builder(h.core().await)
            .with_namespace(s.namespace.clone())
            .build();
        funcs.push(cache.function(func_id("f")));
    }
    one_computation(funcs, 32).await;
    Outcome::Passed
}

/// A compute function that panics leaves no claim behind; the next caller computes at once.
pub async fn panic_releases_claim(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .lease(Duration::from_secs(60))
        .build()
        .function(func_id("f"));
    let f2 = f.clone();
    let joined = tokio::spawn(async move {
        f2.call(&1u8, || async {
            panic!("the user's function panicked") as u64
        })
        .await
    })
    .await;
    assert!(joined.expect_err("the panic reaches the caller").is_panic());
    let key = s.key("f", &1u8);
    let released = eventually(Duration::from_secs(5), || async {
        !s.core
            .get(&key)
            .await
            .expect("get")
            .is_some_and(|e| e.is_claimed())
    })
    .await;
    assert!(released, "the claim outlived the panic");
    let started = Instant::now();
    let v: u64 = f.call(&1u8, || async { 8 }).await.expect("call");
    assert_eq!(v, 8);
    assert!(started.elapsed() < Duration::from_secs(5));
    Outcome::Passed
}

#[derive(Debug, PartialEq)]
enum TestError {
    Failed,
    Cache(ErrorKind),
}

impl From<crate::Error> for TestError {
    fn from(err: crate::Error) -> Self {
        TestError::Cache(err.kind())
    }
}

/// An `Err` from `try_call` is not cached and releases the claim at once.
pub async fn error_releases_claim_and_is_not_cached(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .lease(Duration::from_secs(60))
        .build()
        .function(func_id("f"));
    let err = f
        .try_call(&1u8, || async { Err::<u64, _>(TestError::Failed) })
        .await;
    assert_eq!(err, Err(TestError::Failed));
    let entry = s.core.get(&s.key("f", &1u8)).await.expect("get");
    assert!(
        !entry.is_some_and(|e| e.is_claimed()),
        "claim left behind after an error"
    );
    let started = Instant::now();
    let ok = f.try_call(&1u8, || async { Ok::<u64, TestError>(3) }).await;
    assert_eq!(ok, Ok(3));
    assert!(started.elapsed() < Duration::from_secs(5));
    Outcome::Passed
}

/// An `Ok` from `try_call` is cached.
pub async fn try_call_caches_ok(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    assert_eq!(
        f.try_call(&1u8, || async { Ok::<u64, TestError>(3) }).await,
        Ok(3)
    );
    let again = f
        .try_call(&1u8, || async { Err::<u64, TestError>(TestError::Failed) })
        .await;
    assert_eq!(again, Ok(3), "the cached Ok was not served");
    Outcome::Passed
}

/// Callers arriving while another computes wait for and receive its value.
pub async fn waiters_receive_holders_value(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    let (f1, r1) = (f.clone(), runs.clone());
    let holder = tokio::spawn(async move {
        f1.call(&1u8, move || async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
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
        .lease(Duration::from_millis(1000))
        .build()
        .function(func_id("f"));
    let runs = counter();
    let (f1, r1) = (f.clone(), runs.clone());
    let holder = tokio::spawn(async move {
        f1.call(&1u8, move || async move {
            tokio::time::sleep(Duration::from_millis(3500)).await;
            r1.fetch_add(1, SeqCst);
            1u64
        })
        .await
        .expect("call")
    });
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let other = crate::Cachier::builder(h.core().await)
        .with_namespace(s.namespace.clone())
        .lease(Duration::from_millis(1000))
        .build()
        .function(func_id("f"));
    let r2 = runs.clone();
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

/// Caching can be switched off and on at run time.
pub async fn caching_switch_off(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let cache = s.cache();
    let f = cache.function(func_id("f"));
    let runs = counter();
    let call = || {
        let (f, r) = (f.clone(), runs.clone());
        async move {
            f.call(&1u8, move || async move { r.fetch_add(1, SeqCst) as u64 })
                .await
                .expect("call")
        }
    };
    cache.set_enabled(false);
    assert_eq!(call().await, 0);
    assert_eq!(call().await, 1);
    assert_eq!(
        s.core.get(&s.key("f", &1u8)).await.expect("get"),
        None,
        "stored while off"
    );
    cache.set_enabled(true);
    assert_eq!(call().await, 2);
    assert_eq!(call().await, 2);
    Outcome::Passed
}

/// `cleanup_stale` deletes stale values in the background.
pub async fn cleanup_stale_deletes_in_background(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s
        .builder()
        .stale_after(Duration::from_millis(200))
        .cleanup_stale(true, Duration::ZERO)
        .build()
        .function(func_id("f"));
    let _: u8 = f.call(&1u8, || async { 1 }).await.expect("call");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _: u8 = f.call(&2u8, || async { 2 }).await.expect("call");
    let old = s.key("f", &1u8);
    let gone = eventually(Duration::from_secs(5), || async {
        s.core.get(&old).await.expect("get").is_none()
    })
    .await;
    assert!(gone, "the stale value was not cleaned up");
    Outcome::Passed
}

/// Metrics count each kind of call.
pub async fn stats_are_counted(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let cache = s.cache();
    let f = cache.function(func_id("f"));
    for x in [1u8, 1, 1, 2] {
        let _: u8 = f.call(&x, move || async move { x }).await.expect("call");
    }
    let _: u8 = f
        .call_with(CallOptions::default().skip_cache(true), &1u8, || async {
            1
        })
        .await
        .expect("call");
    let stats = f.stats();
    assert_eq!(stats.hits, 2);
    assert_eq!(stats.misses, 2);
    assert_eq!(stats.bypassed, 1);
    assert_eq!(stats.computations, 3);
    assert_eq!(stats.calls, 5);
    assert!(stats.max_latency >= stats.mean_latency());
    assert_eq!(
        cache.function(func_id("f")).stats().hits,
        2,
        "handles share metrics"
    );
    Outcome::Passed
}

/// `call_blocking` works from a thread without a runtime and from inside this runtime.
pub async fn call_blocking_works_in_and_out_of_runtime(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    let (f1, r1) = (f.clone(), runs.clone());
    let from_thread = std::thread::spawn(move || {
        f1.call_blocking(&1u8, move || {
            std::thread::sleep(Duration::from_millis(50));
            r1.fetch_add(1, SeqCst);
            11u64
        })
        .expect("call_blocking")
    })
    .join()
    .expect("thread");
    assert_eq!(from_thread, 11);
    let r2 = runs.clone();
    let in_runtime = f
        .call_blocking(&1u8, move || {
            r2.fetch_add(1, SeqCst);
            0u64
        })
        .expect("call_blocking");
    assert_eq!(in_runtime, 11);
    assert_eq!(runs.load(SeqCst), 1);
    Outcome::Passed
}

/// Scopes of one test get distinct namespaces, and a dropped scope leaves nothing behind.
pub async fn scopes_are_unique_and_cleaned(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let ns = s.namespace.clone();
    assert!(
        ns.as_str()
            .starts_with(&format!("t_{}_", std::process::id()))
    );
    assert_ne!(ns, h.scope().await.namespace);
    let key = s.key("f", &1u8);
    s.core
        .set(&key, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .expect("set");
    acquired(s.core.claim(&s.key("g", &1u8), LEASE).await.expect("claim"));
    let core = s.core.clone();
    drop(s);
    assert_eq!(core.get(&key).await.expect("get"), None);
    let entry: Option<Entry> = core
        .get(&crate::Key::for_args(&ns, &func_id("g"), &1u8).expect("key"))
        .await
        .expect("get");
    assert_eq!(entry, None, "a claim survived the scope");
    Outcome::Passed
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_list_is_complete() {
        // Every `pub async fn` in this file is listed in `__conformance_checks!`, so no check is
        // written and then forgotten.
        let source = include_str!("checks.rs");
        let listed = include_str!("mod.rs");
        let mut count = 0;
        for line in source.lines() {
            if let Some(rest) = line.strip_prefix("pub async fn ") {
                let name = rest.split('(').next().expect("name");
                assert!(
                    listed.contains(&format!("            {name},")),
                    "{name} is not in the suite"
                );
                count += 1;
            }
        }
        assert!(count >= 60, "only {count} checks found");
    }
}
