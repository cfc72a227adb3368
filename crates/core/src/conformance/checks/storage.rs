//! Reads and writes: values come back as they were stored.

use bytes::Bytes;

use super::{LEASE, acquired};
use crate::Timestamp;
use crate::conformance::{Harness, Outcome};

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

/// `get_value` serves a value and its `stored_at` while a claim on the key is live (a refresh
/// in progress must not turn every hit into a wait).
pub async fn get_value_reads_value_while_claimed(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let at = Timestamp(1_700_000_000_789);
    s.core
        .set(&key, Bytes::from_static(b"old"), at)
        .await
        .expect("set");
    acquired(s.core.claim(&key, LEASE).await.expect("claim"));
    for core in [s.core.clone(), h.core().await] {
        let entry = core
            .get_value(&key)
            .await
            .expect("get_value")
            .expect("get_value hides a value while the key is claimed");
        assert_eq!(
            (entry.value.as_deref(), entry.stored_at),
            (Some(&b"old"[..]), at),
            "get_value while claimed"
        );
    }
    Outcome::Passed
}

/// Keys of one function hold their own values: each reads back its value and `stored_at`,
/// through `get` and `get_value`, never a neighbour's.
pub async fn keys_of_one_function_hold_their_own_values(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let keys: Vec<_> = (0..16u32).map(|arg| s.key("f", &arg)).collect();
    for (i, key) in keys.iter().enumerate() {
        s.core
            .set(
                key,
                Bytes::from(format!("value {i}")),
                Timestamp(1_700_000_000_000 + i as u64),
            )
            .await
            .expect("set");
    }
    for (i, key) in keys.iter().enumerate() {
        let expected = (
            Some(format!("value {i}").into_bytes()),
            Timestamp(1_700_000_000_000 + i as u64),
        );
        for (read, entry) in [
            ("get", s.core.get(key).await.expect("get")),
            ("get_value", s.core.get_value(key).await.expect("get_value")),
        ] {
            let entry = entry.unwrap_or_else(|| panic!("{read} of key {i} found nothing"));
            assert_eq!(
                (entry.value.map(|v| v.to_vec()), entry.stored_at),
                expected,
                "{read} of key {i} of one function"
            );
        }
    }
    Outcome::Passed
}

/// `usage` of a namespace, where a backend reports it, counts exactly that namespace's values
/// (every function, claims without a value left out) and their bytes; an overwrite counts once,
/// a removal no more. `None` (unknown, the default) passes.
pub async fn usage_counts_one_namespace(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let other = h.scope().await;
    let now = Timestamp::now();
    let empty = s
        .core
        .usage(&s.namespace)
        .await
        .expect("usage of an empty namespace");
    if empty == crate::Usage::default() {
        return Outcome::Passed;
    }
    assert!(
        empty.entries.is_none_or(|n| n == 0),
        "empty namespace: {empty:?}"
    );
    assert!(
        empty.bytes.is_none_or(|n| n == 0),
        "empty namespace: {empty:?}"
    );
    let values: [(&str, u8, &[u8]); 4] = [
        ("f", 1, b"one"),
        ("f", 2, b"second value"),
        ("g", 1, &[0u8; 1000]),
        ("g", 2, b"x"),
    ];
    for (func, arg, value) in values {
        let key = s.key(func, &arg);
        s.core
            .set(&key, Bytes::copy_from_slice(value), now)
            .await
            .expect("set");
    }
    // Overwritten (counted once, at its new size), removed, and claimed without a value.
    s.core
        .set(&s.key("f", &1u8), Bytes::from_static(b"1"), now)
        .await
        .expect("overwrite");
    s.core.remove(&s.key("g", &2u8)).await.expect("remove");
    acquired(s.core.claim(&s.key("f", &9u8), LEASE).await.expect("claim"));
    // Another namespace's values are not counted.
    other
        .core
        .set(&other.key("f", &1u8), Bytes::from(vec![7u8; 5000]), now)
        .await
        .expect("set in another namespace");
    let usage = s.core.usage(&s.namespace).await.expect("usage");
    let bytes = (1 + b"second value".len() + 1000) as u64;
    assert!(
        usage.entries.is_none_or(|n| n == 3),
        "entries: {usage:?}, expected 3 (claims without a value and other namespaces not counted)"
    );
    assert!(
        usage.bytes.is_none_or(|n| n == bytes),
        "bytes: {usage:?}, expected {bytes}"
    );
    Outcome::Passed
}
