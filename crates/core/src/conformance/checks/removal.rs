//! Removal: `remove`, `clear`, `clear_claims`, `delete_stale` and `clear_namespace` remove
//! exactly what they name.

use std::time::Duration;

use bytes::Bytes;

use super::{LEASE, acquired, is_held};
use crate::Timestamp;
use crate::conformance::{Harness, Outcome, func_id};

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
