//! Claims: atomic, expiring leases that only their holder renews or releases.

use std::time::Duration;

use bytes::Bytes;

use super::{LEASE, acquired, is_held};
use crate::conformance::{Harness, Outcome};
use crate::{Claim, ClaimToken, Timestamp};

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
    // The lease is long enough to outlive a slow server's round trips; a stranger's renewal
    // would push the expiry a minute out, far past it.
    let lease = Duration::from_secs(5);
    acquired(s.core.claim(&key, lease).await.expect("claim"));
    assert!(
        !s.core
            .renew(&key, &ClaimToken::generate(), Duration::from_secs(60))
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
        until <= Timestamp::now().add(lease),
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

/// How far a reported claim expiry may be from the one the suite expects: the clocks of the
/// suite, the backend and its server, and the time a call takes.
const CLOCK_TOLERANCE: Duration = Duration::from_secs(1);

/// Panics unless `until` lies within [`CLOCK_TOLERANCE`] of `[before + lease, after + lease]`.
fn assert_expiry(
    until: Timestamp,
    before: Timestamp,
    after: Timestamp,
    lease: Duration,
    what: &str,
) {
    let (low, high) = (before.add(lease), after.add(lease));
    assert!(
        until >= low.sub(CLOCK_TOLERANCE) && until <= high.add(CLOCK_TOLERANCE),
        "{what} is {until:?}, expected {low:?}..={high:?} (now + {lease:?}, within {CLOCK_TOLERANCE:?})"
    );
}

/// Panics unless two reports of one claim's expiry agree within [`CLOCK_TOLERANCE`].
fn assert_same_expiry(reported: Timestamp, expiry: Timestamp, what: &str) {
    let gap = reported.as_millis().abs_diff(expiry.as_millis());
    assert!(
        Duration::from_millis(gap) <= CLOCK_TOLERANCE,
        "{what} is {reported:?}, but the holder's claim ends at {expiry:?} (get's claim_until)"
    );
}

/// The claim's expiry as `get` reports it.
async fn claim_until(core: &dyn crate::Core, key: &crate::Key) -> Timestamp {
    core.get(key)
        .await
        .expect("get")
        .and_then(|e| e.claim_until)
        .expect("get shows the live claim")
}

/// `Held { until }` is the holder's expiry — not the caller's own lease, not a guess — and agrees
/// with `get`'s `claim_until`, whatever lease the refused caller asked for.
pub async fn claim_held_until_is_holders_expiry(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let holder_lease = Duration::from_secs(30);
    let before = Timestamp::now();
    acquired(s.core.claim(&key, holder_lease).await.expect("claim"));
    let after = Timestamp::now();
    let expiry = claim_until(&*s.core, &key).await;
    assert_expiry(expiry, before, after, holder_lease, "get's claim_until");
    let other = h.core().await;
    for lease in [
        Duration::from_secs(3),
        holder_lease,
        Duration::from_secs(300),
    ] {
        match other.claim(&key, lease).await.expect("claim") {
            Claim::Held { until } => assert_same_expiry(
                until,
                expiry,
                &format!("Held {{ until }} for a caller asking for {lease:?}"),
            ),
            Claim::Acquired(_) => panic!("a held claim was acquired twice"),
        }
    }
    Outcome::Passed
}

/// `renew(lease)` sets the expiry to now + lease, counted from the renewal, not from the old
/// expiry: longer and shorter than what was left, and a claim renewed briefly ends then.
pub async fn renew_sets_expiry_to_now_plus_lease(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let other = h.core().await;
    let token = acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    for lease in [Duration::from_secs(20), Duration::from_secs(3)] {
        let before = Timestamp::now();
        assert!(s.core.renew(&key, &token, lease).await.expect("renew"));
        let after = Timestamp::now();
        let expiry = claim_until(&*s.core, &key).await;
        assert_expiry(
            expiry,
            before,
            after,
            lease,
            &format!("after renew({lease:?}), get's claim_until"),
        );
        match other.claim(&key, LEASE).await.expect("claim") {
            Claim::Held { until } => assert_same_expiry(
                until,
                expiry,
                &format!("after renew({lease:?}), Held {{ until }}"),
            ),
            Claim::Acquired(_) => panic!("a renewed claim was acquired by another caller"),
        }
    }
    assert!(
        s.core
            .renew(&key, &token, Duration::from_millis(400))
            .await
            .expect("renew")
    );
    h.step("waiting for a claim renewed for 400 ms to end");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    acquired(
        other
            .claim(&key, LEASE)
            .await
            .expect("claim after the renewed lease"),
    );
    Outcome::Passed
}

/// Claim expiries are kept to the millisecond: neither `get`'s `claim_until` nor
/// `Held { until }` is rounded (to seconds, tenths or hundredths).
pub async fn claim_until_has_millisecond_precision(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let other = h.core().await;
    let mut reported = Vec::new();
    for i in 0..8u16 {
        let key = s.key("f", &i);
        // Leases of odd milliseconds, claimed at different moments.
        let lease = Duration::from_millis(20_000 + 137 * u64::from(i));
        let before = Timestamp::now();
        acquired(s.core.claim(&key, lease).await.expect("claim"));
        let after = Timestamp::now();
        let expiry = claim_until(&*s.core, &key).await;
        assert_expiry(expiry, before, after, lease, "get's claim_until");
        let Claim::Held { until } = other.claim(&key, lease).await.expect("claim") else {
            panic!("a held claim was acquired twice");
        };
        reported.push((expiry, until));
        tokio::time::sleep(Duration::from_millis(3 + u64::from(i))).await;
    }
    // A backend keeping milliseconds reports a multiple of 10 ms one time in ten: eight of them
    // in a row happen by chance once in 10^8 runs.
    assert!(
        reported
            .iter()
            .any(|(expiry, _)| expiry.as_millis() % 10 != 0),
        "every claim_until is a multiple of 10 ms ({reported:?}): the backend rounds claim expiries"
    );
    assert!(
        reported
            .iter()
            .any(|(_, until)| until.as_millis() % 10 != 0),
        "every Held {{ until }} is a multiple of 10 ms ({reported:?}): the backend rounds it"
    );
    Outcome::Passed
}
