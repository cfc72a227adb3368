//! Bad stored bytes: whatever the backend returns that does not decode is a miss, recomputed
//! and overwritten.

use bytes::Bytes;

use super::sealed;
use crate::Timestamp;
use crate::codec::{self, Bincode, Codec, DefaultCodec};
use crate::conformance::{Harness, Outcome, func_id};

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
