//! Removal: `remove`, `clear`, `clear_claims`, `delete_stale` and `clear_namespace` remove
//! exactly what they name.

use std::time::Duration;

use bytes::Bytes;

use super::{LEASE, acquired, is_held};
use crate::conformance::{Harness, Outcome, Scope, func_id};
use crate::{Key, Namespace, Timestamp};

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

/// After `remove`, `clear`, `delete_stale` or `clear_namespace`, neither `get_value` nor `get`
/// serves the removed value, also on a core that read it just before (no copy kept in the
/// process) and, for a shared store, when another core removed it.
pub async fn removed_values_are_not_served(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let other = if s.core.capabilities().cross_process {
        h.core().await
    } else {
        s.core.clone()
    };
    let f = func_id("f");
    for (i, removal) in ["remove", "clear", "delete_stale", "clear_namespace"]
        .into_iter()
        .enumerate()
    {
        let key = s.key("f", &i);
        s.core
            .set(&key, Bytes::from_static(b"v"), Timestamp(1_000))
            .await
            .expect("set");
        for _ in 0..2 {
            let read = s.core.get_value(&key).await.expect("get_value");
            assert!(
                read.is_some_and(|e| e.value.is_some()),
                "the value was not stored"
            );
        }
        assert!(s.core.get(&key).await.expect("get").is_some());
        let removed = match removal {
            "remove" => u64::from(other.remove(&key).await.expect("remove")),
            "clear" => other.clear(&s.namespace, &f).await.expect("clear"),
            "delete_stale" => other
                .delete_stale(&s.namespace, &f, Timestamp(2_000))
                .await
                .expect("delete_stale"),
            _ => other
                .clear_namespace(&s.namespace)
                .await
                .expect("clear_namespace"),
        };
        assert_eq!(removed, 1, "{removal} removed {removed} values");
        let value = s.core.get_value(&key).await.expect("get_value");
        assert!(
            value.is_none_or(|e| e.value.is_none()),
            "get_value still serves a value after {removal}"
        );
        assert_eq!(
            s.core.get(&key).await.expect("get"),
            None,
            "get still serves an entry after {removal}"
        );
    }
    Outcome::Passed
}

/// `clear`, `delete_stale` and `clear_namespace` count the values they remove: a claimed value
/// counts once, a claim without a value not at all.
pub async fn removal_counts_values_not_claims(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = func_id("f");
    let keys = two_values_one_claimed_and_a_claim(&s).await;
    let removed = s.core.clear(&s.namespace, &f).await.expect("clear");
    assert_eq!(
        removed, 2,
        "clear of two values (one claimed) and a claim without a value"
    );
    for key in &keys {
        assert_eq!(
            s.core.get(key).await.expect("get"),
            None,
            "clear left {key}"
        );
    }
    let keys = two_values_one_claimed_and_a_claim(&s).await;
    let removed = s
        .core
        .delete_stale(&s.namespace, &f, Timestamp(2_000))
        .await
        .expect("delete_stale");
    assert_eq!(
        removed, 2,
        "delete_stale of two stale values (one claimed) and a claim without a value"
    );
    for key in &keys[..2] {
        let left = s.core.get(key).await.expect("get");
        assert!(
            left.is_none_or(|e| e.value.is_none()),
            "delete_stale left {key}'s value"
        );
    }
    s.core.clear(&s.namespace, &f).await.expect("clear");
    two_values_one_claimed_and_a_claim(&s).await;
    let removed = s
        .core
        .clear_namespace(&s.namespace)
        .await
        .expect("clear_namespace");
    assert_eq!(
        removed, 2,
        "clear_namespace of two values (one claimed) and a claim without a value"
    );
    Outcome::Passed
}

/// Stores two values of `f` at 1 s after the epoch, claims one of them and a third key without
/// a value; returns the three keys.
async fn two_values_one_claimed_and_a_claim(s: &Scope) -> [Key; 3] {
    let (plain, claimed, claim_only) = (s.key("f", &1u8), s.key("f", &2u8), s.key("f", &3u8));
    for key in [&plain, &claimed] {
        s.core
            .set(key, Bytes::from_static(b"v"), Timestamp(1_000))
            .await
            .expect("set");
    }
    for key in [&claimed, &claim_only] {
        acquired(s.core.claim(key, LEASE).await.expect("claim"));
    }
    [plain, claimed, claim_only]
}

/// `clear_namespace(N)`, and `clear` and `delete_stale` of a function in `N`, spare namespaces
/// whose names extend `N` (`N_b`, `N-b`, `N.b`, `Nb`, ...) or that `N` extends: namespaces are
/// matched whole, never by prefix.
pub async fn clear_namespace_spares_extended_names(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let name = s.namespace.as_str();
    let neighbours: Vec<Scope> = ["_b", "-b", ".b", "b", "_", "0", "."]
        .iter()
        .map(|suffix| format!("{name}{suffix}"))
        .chain([name[..name.len() - 1].to_string()])
        .map(|other| Scope {
            core: s.core.clone(),
            namespace: Namespace::new(&other).expect("a valid namespace"),
        })
        .collect();
    for scope in &neighbours {
        scope
            .core
            .set(
                &scope.key("f", &1u8),
                Bytes::from_static(b"v"),
                Timestamp(1_000),
            )
            .await
            .expect("set");
    }
    let (key, f) = (s.key("f", &1u8), func_id("f"));
    for removal in ["clear(f)", "delete_stale(f)", "clear_namespace"] {
        s.core
            .set(&key, Bytes::from_static(b"v"), Timestamp(1_000))
            .await
            .expect("set");
        let removed = match removal {
            "clear(f)" => s.core.clear(&s.namespace, &f).await.expect("clear"),
            "delete_stale(f)" => s
                .core
                .delete_stale(&s.namespace, &f, Timestamp(2_000))
                .await
                .expect("delete_stale"),
            _ => s
                .core
                .clear_namespace(&s.namespace)
                .await
                .expect("clear_namespace"),
        };
        assert_eq!(removed, 1, "{removal} in {name}");
        assert_eq!(
            s.core.get(&key).await.expect("get"),
            None,
            "{removal} in {name}"
        );
        assert_all_kept(&neighbours, removal, name).await;
    }
    Outcome::Passed
}

/// Panics unless each scope still holds its entry of `f(1)` after `removal` in namespace `name`.
async fn assert_all_kept(scopes: &[Scope], removal: &str, name: &str) {
    for other in scopes {
        assert!(
            other
                .core
                .get(&other.key("f", &1u8))
                .await
                .expect("get")
                .is_some(),
            "{removal} in {name} removed the entry of namespace {}",
            other.namespace
        );
    }
}

/// `delete_stale(T)` removes values stored before `T`, to the millisecond: a value stored at
/// `T` stays, and goes with `delete_stale(T + 1 ms)`.
pub async fn delete_stale_cut_off_is_exclusive(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = func_id("f");
    let t = Timestamp(1_700_000_000_123);
    let (at_t, after_t) = (s.key("f", &1u8), s.key("f", &2u8));
    s.core
        .set(&at_t, Bytes::from_static(b"t"), t)
        .await
        .expect("set");
    s.core
        .set(
            &after_t,
            Bytes::from_static(b"t+1"),
            t.add(Duration::from_millis(1)),
        )
        .await
        .expect("set");
    let mut present = Vec::new();
    for (cut, expected) in [
        (t.sub(Duration::from_millis(1)), 0),
        (t, 0),
        (t.add(Duration::from_millis(1)), 1),
        (t.add(Duration::from_millis(2)), 1),
    ] {
        let removed = s
            .core
            .delete_stale(&s.namespace, &f, cut)
            .await
            .expect("delete_stale");
        present.clear();
        for key in [&at_t, &after_t] {
            present.push(s.core.get(key).await.expect("get").is_some());
        }
        assert_eq!(
            removed, expected,
            "delete_stale({cut:?}) with values stored at {t:?} and 1 ms later (still present: {present:?})"
        );
    }
    assert_eq!(present, [false, false]);
    Outcome::Passed
}
