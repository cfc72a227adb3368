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
