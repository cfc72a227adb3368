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
