//! Plain values at memory-copy speed: byte buffers, strings and vectors of numbers.
//!
//! serde hands a `Vec<u8>` (or a `Vec<f64>`) to the codec one element at a time, which costs a
//! few nanoseconds a byte both ways: a 64 KiB buffer took longer to decode than to read from
//! disk. These types are encoded and decoded here directly, in bulk:
//!
//! - Byte buffers and strings (`Vec<u8>`, `String`, `bytes::Bytes`) are stored as their own
//!   bytes under the raw codec ([`RAW_ID`](crate::codec::RAW_ID)): the envelope's payload is the
//!   value, first in the stored bytes, so a buffer read from the backend becomes the caller's
//!   `Vec<u8>` or `String` without a copy when nothing else holds it. Values that version 1
//!   envelopes or `precache` wrote through the codec (a `u64` length, then the bytes) still read.
//! - Vectors of numbers are written exactly as the [`Bincode`](crate::Bincode) codec writes
//!   them (a little-endian `u64` count, then the elements in little-endian order), so values
//!   written either way read either way (the tests below pin that for every type).
//!
//! The types are recognised by their [`TypeId`](std::any::TypeId), so only the value's own type
//! counts: a struct holding a `Vec<u8>` goes through serde as before (`serde_bytes` helps there).

use std::any::Any;

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};

/// Appends the value's own bytes to `out` if its type is a byte buffer or a string (`Vec<u8>`,
/// `String`, `bytes::Bytes`), and says whether it did: the payload of the raw codec
/// ([`RAW_ID`](crate::codec::RAW_ID)), which needs no length prefix (the envelope has the length).
pub(crate) fn encode_raw_into<T: Any>(value: &T, out: &mut Vec<u8>) -> bool {
    let value = value as &dyn Any;
    let bytes: &[u8] = if let Some(bytes) = value.downcast_ref::<Vec<u8>>() {
        bytes
    } else if let Some(text) = value.downcast_ref::<String>() {
        text.as_bytes()
    } else if let Some(bytes) = value.downcast_ref::<Bytes>() {
        bytes
    } else {
        return false;
    };
    // Room for the envelope's trailer too: sealing then appends it without growing the buffer.
    out.reserve_exact(bytes.len() + crate::codec::HEADER_LEN);
    out.extend_from_slice(bytes);
    true
}

/// The raw codec's `payload` as a value of type `T`, without a copy where `payload` is the only
/// handle on a buffer (a `Vec<u8>` or `String` then takes the buffer over); an error if `T` is
/// not a byte buffer or string, or a `String` is not UTF-8.
pub(crate) fn decode_raw<T: Any>(payload: Bytes, limit: usize) -> Result<T> {
    if payload.len() > limit {
        return Err(codec_error(format!(
            "the stored value holds {} bytes, over the decode limit of {limit} bytes",
            payload.len()
        )));
    }
    let mut slot: Option<T> = None;
    let out = &mut slot as &mut dyn Any;
    if let Some(slot) = out.downcast_mut::<Option<Vec<u8>>>() {
        *slot = Some(Vec::from(payload));
    } else if let Some(slot) = out.downcast_mut::<Option<String>>() {
        let text = String::from_utf8(Vec::from(payload))
            .map_err(|e| codec_error("the stored string is not UTF-8").with_source(e))?;
        *slot = Some(text);
    } else if let Some(slot) = out.downcast_mut::<Option<Bytes>>() {
        *slot = Some(payload);
    } else {
        return Err(codec_error(format!(
            "the stored value is raw bytes, which do not decode as a {}",
            std::any::type_name::<T>()
        )));
    }
    Ok(slot.expect("the slot was filled"))
}

/// Appends the payload of `value` to `out` if its type is a vector of numbers, and says whether
/// it did: a `u64` count, then the elements, little-endian, as the codec writes them.
pub(crate) fn encode_into<T: Any>(value: &T, out: &mut Vec<u8>) -> bool {
    let value = value as &dyn Any;
    macro_rules! numbers {
        ($($ty:ty),*) => {$(
            if let Some(items) = value.downcast_ref::<Vec<$ty>>() {
                out.reserve_exact(8 + items.len() * size_of::<$ty>() + crate::codec::HEADER_LEN);
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    out.extend_from_slice(&item.to_le_bytes());
                }
                return true;
            }
        )*};
    }
    numbers!(i8, u16, i16, u32, i32, u64, i64, f32, f64);
    false
}

/// The payload of `value`, if its type is one of the plain types; `None` otherwise.
#[cfg(test)]
fn encode<T: Any>(value: &T) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(value, &mut out).then_some(out)
}

/// The value of type `T` in `payload`, if `T` is one of the plain types; `None` otherwise.
/// Refuses a length prefix that claims more than `limit` bytes before allocating anything.
pub(crate) fn decode<T: Any>(payload: &[u8], limit: usize) -> Option<Result<T>> {
    let mut slot: Option<T> = None;
    let out = &mut slot as &mut dyn Any;
    let done = if let Some(slot) = out.downcast_mut::<Option<Vec<u8>>>() {
        elements(payload, 1, limit).map(|bytes| *slot = Some(bytes.to_vec()))
    } else if let Some(slot) = out.downcast_mut::<Option<String>>() {
        elements(payload, 1, limit).and_then(|bytes| {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| codec_error("the stored string is not UTF-8").with_source(e))?;
            *slot = Some(text.to_owned());
            Ok(())
        })
    } else {
        macro_rules! numbers {
            ($($ty:ty),*) => {
                'found: {
                    $(
                        if let Some(slot) = out.downcast_mut::<Option<Vec<$ty>>>() {
                            const WIDTH: usize = size_of::<$ty>();
                            break 'found elements(payload, WIDTH, limit).map(|raw| {
                                *slot = Some(
                                    raw.chunks_exact(WIDTH)
                                        .map(|c| <$ty>::from_le_bytes(c.try_into().expect("WIDTH bytes")))
                                        .collect(),
                                );
                            });
                        }
                    )*
                    return None;
                }
            };
        }
        numbers!(i8, u16, i16, u32, i32, u64, i64, f32, f64)
    };
    Some(done.map(|()| slot.expect("the slot was filled")))
}

/// The element bytes of a length-prefixed sequence of `width`-byte elements, checked against
/// the payload's size and the decode limit.
fn elements(payload: &[u8], width: usize, limit: usize) -> Result<&[u8]> {
    let Some((prefix, rest)) = payload.split_first_chunk::<8>() else {
        return Err(codec_error(
            "the stored value is shorter than its length prefix",
        ));
    };
    let count = u64::from_le_bytes(*prefix);
    let bytes = usize::try_from(count)
        .ok()
        .and_then(|n| n.checked_mul(width))
        .filter(|&n| n <= limit)
        .ok_or_else(|| {
            codec_error(format!(
                "the stored value claims {count} elements, over the decode limit of {limit} bytes"
            ))
        })?;
    if bytes != rest.len() {
        return Err(codec_error(format!(
            "the stored value claims {bytes} bytes of elements and holds {}",
            rest.len()
        )));
    }
    Ok(rest)
}

fn codec_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Codec, message)
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::*;
    use crate::codec::{Bincode, Codec, DEFAULT_DECODE_LIMIT};

    /// The fast path writes the codec's bytes, and each reads the other's.
    fn same_as_codec<T>(value: T)
    where
        T: Any + Serialize + DeserializeOwned + PartialEq + Debug,
    {
        let fast = encode(&value).expect("a plain type");
        let slow = Bincode::encode(&value).expect("encodes");
        assert_eq!(fast, slow, "{}", std::any::type_name::<T>());
        reads_the_codec(value);
    }

    /// The fast path reads what the codec writes.
    fn reads_the_codec<T>(value: T)
    where
        T: Any + Serialize + DeserializeOwned + PartialEq + Debug,
    {
        let slow = Bincode::encode(&value).expect("encodes");
        let back: T = decode(&slow, DEFAULT_DECODE_LIMIT)
            .expect("a plain type")
            .expect("decodes");
        assert_eq!(back, value);
    }

    #[test]
    fn plain_types_match_the_codec_byte_for_byte() {
        reads_the_codec((0..=255u8).collect::<Vec<u8>>());
        reads_the_codec(Vec::<u8>::new());
        reads_the_codec(String::from("naïve 函数 🚀"));
        reads_the_codec(String::new());
        same_as_codec(vec![-1i8, 0, 127, -128]);
        same_as_codec(vec![0u16, 1, 0xfffe]);
        same_as_codec(vec![i16::MIN, -1, i16::MAX]);
        same_as_codec(vec![0u32, 7, u32::MAX]);
        same_as_codec(vec![i32::MIN, 0, i32::MAX]);
        same_as_codec(vec![0u64, 1 << 40, u64::MAX]);
        same_as_codec(vec![i64::MIN, -5, i64::MAX]);
        same_as_codec(vec![0.5f32, -0.0, f32::MAX, f32::MIN_POSITIVE]);
        same_as_codec(vec![1.5f64, -2.25, f64::MAX, f64::EPSILON]);
    }

    #[test]
    fn byte_buffers_and_strings_are_raw_and_taken_over_without_a_copy() {
        let mut out = Vec::new();
        assert!(encode_raw_into(&String::from("déjà"), &mut out));
        assert!(encode_raw_into(&vec![1u8, 2], &mut out));
        assert!(encode_raw_into(&Bytes::from_static(b"xy"), &mut out));
        assert_eq!(
            out,
            "déjà"
                .bytes()
                .chain([1, 2])
                .chain(*b"xy")
                .collect::<Vec<u8>>()
        );
        assert!(!encode_raw_into(&vec![1u16], &mut out));

        // A buffer nothing else holds becomes the value in place.
        let buffer: Vec<u8> = (0..=255u8).cycle().take(1 << 16).collect();
        let back: Vec<u8> = decode_raw(Bytes::from(buffer.clone()), usize::MAX).expect("bytes");
        assert_eq!(back, buffer);
        let mut tail = Bytes::from(buffer.clone());
        tail.truncate(1000);
        let owned = Bytes::from(buffer);
        let shared = owned.clone();
        let kept: Vec<u8> = decode_raw(shared, usize::MAX).expect("bytes");
        assert_eq!(kept.len(), 1 << 16, "a shared buffer is copied");
        drop(owned);
        let unique = Bytes::from(kept);
        let unique_at = unique.as_ptr();
        let back: Vec<u8> = decode_raw(unique, usize::MAX).expect("bytes");
        assert_eq!(back.as_ptr(), unique_at, "a buffer held once is taken over");
        let back: Vec<u8> = decode_raw(tail, usize::MAX).expect("bytes");
        assert_eq!(back.len(), 1000);

        let text: String = decode_raw(Bytes::from("naïve".to_owned()), 100).expect("utf-8");
        assert_eq!(text, "naïve");
        let bad = decode_raw::<String>(Bytes::from_static(&[0xff, 0xfe]), 100);
        assert_eq!(bad.unwrap_err().kind(), ErrorKind::Codec);
        let over = decode_raw::<Vec<u8>>(Bytes::from_static(&[0; 10]), 9);
        assert_eq!(over.unwrap_err().kind(), ErrorKind::Codec);
        let not_bytes = decode_raw::<Vec<u16>>(Bytes::from_static(&[0; 4]), 100);
        assert_eq!(not_bytes.unwrap_err().kind(), ErrorKind::Codec);
    }

    #[test]
    fn other_types_are_left_to_serde() {
        assert!(encode(&(1u8, 2u8)).is_none());
        assert!(encode(&vec![String::new()]).is_none());
        assert!(decode::<Vec<bool>>(&[0; 8], DEFAULT_DECODE_LIMIT).is_none());
    }

    #[test]
    fn bad_payloads_are_errors_without_allocating_their_claim() {
        let claims_huge = (1u64 << 60).to_le_bytes();
        for result in [
            decode::<Vec<u8>>(&claims_huge, 1 << 20),
            decode::<Vec<u8>>(&claims_huge[..4], 1 << 20),
            decode::<Vec<u8>>(&[3, 0, 0, 0, 0, 0, 0, 0, 1, 2], 1 << 20),
        ] {
            assert_eq!(result.expect("plain").unwrap_err().kind(), ErrorKind::Codec);
        }
        let huge_f64s = decode::<Vec<f64>>(&(1u64 << 62).to_le_bytes(), usize::MAX);
        assert!(
            huge_f64s.expect("plain").is_err(),
            "count * width overflows"
        );
        let not_utf8 = [2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe];
        assert!(
            decode::<String>(&not_utf8, 1 << 20)
                .expect("plain")
                .is_err()
        );
    }
}
