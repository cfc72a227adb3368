//! Isolation: namespaces, function ids and test scopes never see each other's entries.

use bytes::Bytes;

use super::{LEASE, acquired};
use crate::conformance::{Harness, Outcome, func_id};
use crate::{Entry, Timestamp};

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
