//! Bad stored bytes: whatever the backend returns that does not decode is a miss, recomputed
//! and overwritten.

use bytes::Bytes;

use super::sealed;
use crate::codec::{self, Bincode, Codec, DefaultCodec};
use crate::conformance::{Harness, Outcome, func_id};
use crate::{NearCache, Timestamp};

async fn corrupt_is_miss(h: &Harness, bad: Bytes) {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let key = s.key("f", &1u8);
    s.core.set(&key, bad, Timestamp::now()).await.expect("set");
    h.step("calling f on a key holding bytes that do not decode (it claims, computes, overwrites)");
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

/// Byte buffers and strings of any content and length read back exactly (stored as their own
/// bytes, then the envelope's trailer), and values an earlier build stored (envelope version 1)
/// are hits.
pub async fn byte_values_and_earlier_envelopes_read_back(h: &Harness) -> Outcome {
    let s = h.scope().await;
    // Without a near cache every call reads the backend.
    let cache = s.builder().near_cache(NearCache::disabled()).build();
    let bytes = cache.function(func_id("bytes"));
    let text = cache.function(func_id("text"));
    h.step(
        "storing byte buffers and strings of 0, 1, 255 and 65,539 bytes, then reading them back",
    );
    for len in [0usize, 1, 255, 65_539] {
        let value: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        let v = value.clone();
        let first: Vec<u8> = bytes
            .call(&len, move || async move { v })
            .await
            .expect("call");
        assert_eq!(first, value);
        let again: Vec<u8> = bytes
            .call(&len, || async {
                panic!("a stored byte buffer was recomputed")
            })
            .await
            .expect("call");
        assert!(
            again == value,
            "the byte buffer of {len} bytes read back differently"
        );
        let value: String = "é€🚀a".chars().cycle().take(len).collect();
        let v = value.clone();
        let first: String = text
            .call(&len, move || async move { v })
            .await
            .expect("call");
        assert_eq!(first, value);
        let again: String = text
            .call(&len, || async { panic!("a stored string was recomputed") })
            .await
            .expect("call");
        assert!(
            again == value,
            "the string of {len} characters read back differently"
        );
    }
    h.step("serving values stored in a version 1 envelope");
    let old_bytes = vec![0u8, 255, 1, 2];
    let old_pair = (7u32, "déjà".to_string());
    for (func, payload) in [
        ("bytes", Bincode::encode(&old_bytes).expect("encode")),
        ("text", Bincode::encode(&old_pair).expect("encode")),
    ] {
        let v1 = Bytes::from(codec::wrap_v1(Bincode::ID, &payload));
        s.core
            .set(&s.key(func, "old"), v1, Timestamp::now())
            .await
            .expect("set");
    }
    let served: Vec<u8> = bytes
        .call("old", || async {
            panic!("a version 1 value was recomputed")
        })
        .await
        .expect("call");
    assert_eq!(served, old_bytes);
    let pairs = cache.function(func_id("text"));
    let served: (u32, String) = pairs
        .call("old", || async {
            panic!("a version 1 value was recomputed")
        })
        .await
        .expect("call");
    assert_eq!(served, old_pair);
    assert_eq!(
        bytes.stats().corrupt_entries + text.stats().corrupt_entries,
        0
    );
    Outcome::Passed
}
