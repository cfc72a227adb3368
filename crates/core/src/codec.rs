//! How user values become stored bytes: the [`Codec`] seam and the envelope around its output.
//!
//! # Envelope, version 2
//!
//! Every stored value is `payload ++ trailer`, with a 16-byte trailer:
//!
//! | bytes of the trailer | field |
//! |---|---|
//! | 0..4 | payload length, `u32` little-endian |
//! | 4..8 | CRC-32 (IEEE) of the payload, little-endian |
//! | 8 | codec id: [`Codec::ID`] (`1` = bincode 2, standard config, little-endian, fixed-width ints), or [`RAW_ID`] (`2`: the payload is the value's own bytes, for `Vec<u8>`, `String` and `bytes::Bytes`) |
//! | 9..11 | reserved, zero |
//! | 11 | envelope version (`2`) |
//! | 12..16 | magic `b"CCHR"` |
//!
//! The payload comes first so that a byte buffer or string read from a backend into a buffer
//! of its own becomes the caller's value in that buffer, without a copy.
//!
//! Version 1 put the same fields first (magic, version `1`, codec id, two reserved bytes,
//! length, CRC-32, then the payload); it is still read, so values stored by earlier builds stay
//! hits. Builds that read only version 1 take version 2 values for corrupt entries: misses,
//! recomputed and overwritten, so processes of both kinds sharing a store during an upgrade
//! compute more often but never serve a wrong value.
//!
//! [`unwrap`] checks every field before the codec sees a byte, and the codec refuses length
//! prefixes whose total claim exceeds the decode limit, so hostile bytes cost at most the limit
//! and never an allocation of the length they claim. A value that fails any check is a miss for
//! the front end (logged, recomputed, overwritten), never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};

/// The envelope's magic number.
pub const MAGIC: [u8; 4] = *b"CCHR";
/// The envelope format version written by this build.
pub const ENVELOPE_VERSION: u8 = 2;
/// The length of the envelope's trailer (version 2) or header (version 1).
pub const HEADER_LEN: usize = 16;
/// The codec id of a payload that is the value's own bytes (byte buffers and strings).
pub const RAW_ID: u8 = 2;
/// The default decode limit: no value may claim more than this many bytes while decoding.
pub const DEFAULT_DECODE_LIMIT: usize = 1 << 30;

/// A serialization format for user values. The project ships [`Bincode`]; the seam exists so the
/// format can change (with a new [`Codec::ID`]) without touching the front end or any backend.
pub trait Codec: Send + Sync + 'static {
    /// The id written into the envelope. Ids are never reused for another format.
    const ID: u8;
    /// Serializes a value.
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>>;
    /// Deserializes a value, refusing inputs that claim more than `limit` bytes of memory.
    fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T>;
}

/// bincode 2 (serde), standard configuration, little-endian, fixed-width integers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

/// The codec the front end uses.
pub type DefaultCodec = Bincode;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

/// Decodes with a limit known at compile time; [`Bincode::decode`] picks the smallest power of
/// two at or above the requested limit, from 64 KiB up to 16 GiB.
fn decode_limited<T: DeserializeOwned, const N: usize>(bytes: &[u8]) -> Result<T> {
    let config = bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<N>();
    let (value, used) = bincode::serde::decode_from_slice(bytes, config).map_err(|e| {
        Error::new(ErrorKind::Codec, "the stored value does not decode").with_source(e)
    })?;
    if used != bytes.len() {
        return Err(Error::new(
            ErrorKind::Codec,
            format!("the stored value has {} trailing bytes", bytes.len() - used),
        ));
    }
    Ok(value)
}

macro_rules! dispatch_limit {
    ($bytes:expr, $limit:expr, $($shift:literal)*) => {{
        let limit = $limit;
        $( if limit <= (1usize << $shift) { return decode_limited::<T, { 1usize << $shift }>($bytes); } )*
        decode_limited::<T, { 1usize << 34 }>($bytes)
    }};
}

impl Codec for Bincode {
    const ID: u8 = 1;

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
        bincode::serde::encode_to_vec(value, bincode_config()).map_err(|e| {
            Error::new(ErrorKind::Codec, "the value could not be serialized").with_source(e)
        })
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T> {
        dispatch_limit!(bytes, limit, 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33)
    }
}

/// Encodes `value` with codec `C` and wraps it in an envelope.
pub fn seal<C: Codec, T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    close(C::ID, C::encode(value)?)
}

/// Wraps already-encoded payload bytes in an envelope with codec id `codec`.
pub fn wrap(codec: u8, payload: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len() + HEADER_LEN);
    out.extend_from_slice(payload);
    close(codec, out)
}

/// Appends the trailer to `out`, which holds the payload.
fn close(codec: u8, mut out: Vec<u8>) -> Result<Vec<u8>> {
    let len = u32::try_from(out.len())
        .map_err(|_| Error::too_large("values above 4 GiB cannot be stored"))?;
    let crc = crc32fast::hash(&out);
    out.reserve_exact(HEADER_LEN);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&[codec, 0, 0, ENVELOPE_VERSION]);
    out.extend_from_slice(&MAGIC);
    Ok(out)
}

/// Where an envelope's payload is, and which codec wrote it.
struct Located {
    codec: u8,
    payload: std::ops::Range<usize>,
}

/// Checks an envelope of either version.
fn locate(bytes: &[u8]) -> Result<Located> {
    match locate_v2(bytes) {
        Ok(found) => Ok(found),
        Err(err) if bytes.len() >= HEADER_LEN && bytes[0..4] == MAGIC && bytes[4] == 1 => {
            locate_v1(bytes).map_err(|v1| if bytes.ends_with(&MAGIC) { err } else { v1 })
        }
        Err(err) => Err(err),
    }
}

fn locate_v2(bytes: &[u8]) -> Result<Located> {
    let Some(end) = bytes.len().checked_sub(HEADER_LEN) else {
        return Err(Error::corrupt(format!(
            "{} bytes is shorter than the envelope",
            bytes.len()
        )));
    };
    let (payload, trailer) = bytes.split_at(end);
    if trailer[12..16] != MAGIC {
        return Err(Error::corrupt("not a cachier value (bad magic number)"));
    }
    if trailer[11] != ENVELOPE_VERSION {
        return Err(Error::corrupt(format!(
            "envelope version {} is not supported (this build reads 1 and {ENVELOPE_VERSION})",
            trailer[11]
        )));
    }
    let field = |at: usize| {
        u32::from_le_bytes([
            trailer[at],
            trailer[at + 1],
            trailer[at + 2],
            trailer[at + 3],
        ])
    };
    check_payload(payload, field(0) as usize, field(4))?;
    Ok(Located {
        codec: trailer[8],
        payload: 0..end,
    })
}

fn locate_v1(bytes: &[u8]) -> Result<Located> {
    let (header, payload) = bytes.split_at(HEADER_LEN);
    let field = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    check_payload(payload, field(8) as usize, field(12))?;
    Ok(Located {
        codec: header[5],
        payload: HEADER_LEN..bytes.len(),
    })
}

fn check_payload(payload: &[u8], len: usize, crc: u32) -> Result<()> {
    if len != payload.len() {
        return Err(Error::corrupt(format!(
            "envelope says {len} payload bytes, found {}",
            payload.len()
        )));
    }
    if crc != crc32fast::hash(payload) {
        return Err(Error::corrupt("checksum mismatch"));
    }
    Ok(())
}

/// Checks an envelope (either version) and returns its codec id and payload.
pub fn unwrap(bytes: &[u8]) -> Result<(u8, &[u8])> {
    let found = locate(bytes)?;
    Ok((found.codec, &bytes[found.payload]))
}

/// Seals `value` as the front end stores it: byte buffers and strings as their own bytes
/// under [`RAW_ID`], vectors of numbers in bulk (byte for byte as the codec would write them,
/// see the `plain` module), everything else through the default codec.
pub fn seal_value<T: std::any::Any + Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if crate::plain::encode_raw_into(value, &mut out) {
        return close(RAW_ID, out);
    }
    if crate::plain::encode_into(value, &mut out) {
        return close(DefaultCodec::ID, out);
    }
    seal::<DefaultCodec, T>(value)
}

/// Opens what [`seal_value`] (or [`seal`] with the default codec, or an earlier build) stored.
/// A byte buffer or string is taken over without a copy when `bytes` is the only handle on its
/// buffer and the envelope's payload starts it (version 2 envelopes read into a buffer of their
/// own); otherwise it is copied once.
pub fn open_value<T: std::any::Any + DeserializeOwned>(
    mut bytes: bytes::Bytes,
    decode_limit: usize,
) -> Result<T> {
    let found = locate(&bytes)?;
    match found.codec {
        RAW_ID => {
            bytes.truncate(found.payload.end);
            bytes::Buf::advance(&mut bytes, found.payload.start);
            crate::plain::decode_raw::<T>(bytes, decode_limit)
        }
        DefaultCodec::ID => {
            let payload = &bytes[found.payload];
            match crate::plain::decode::<T>(payload, decode_limit) {
                Some(decoded) => decoded,
                None => DefaultCodec::decode(payload, decode_limit),
            }
        }
        codec => Err(Error::corrupt(format!(
            "written by codec {codec}, this reader uses codecs {} and {RAW_ID}",
            DefaultCodec::ID
        ))),
    }
}

/// Checks an envelope written by codec `C` and decodes its payload.
pub fn open<C: Codec, T: DeserializeOwned>(bytes: &[u8], decode_limit: usize) -> Result<T> {
    let (codec, payload) = unwrap(bytes)?;
    if codec != C::ID {
        return Err(Error::corrupt(format!(
            "written by codec {codec}, this reader uses codec {}",
            C::ID
        )));
    }
    C::decode(payload, decode_limit)
}

/// A version 1 envelope, as earlier builds wrote it (for the checks that they still read).
#[cfg(any(test, feature = "conformance"))]
pub(crate) fn wrap_v1(codec: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, codec, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn round_trip() {
        let v = (1u32, String::from("hé"), vec![Some(2i64), None]);
        let sealed = seal::<Bincode, _>(&v).unwrap();
        let back: (u32, String, Vec<Option<i64>>) =
            open::<Bincode, _>(&sealed, DEFAULT_DECODE_LIMIT).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn the_format_is_pinned() {
        let sealed = seal_value(&String::from("ab")).unwrap();
        let crc = crc32fast::hash(b"ab").to_le_bytes();
        let mut expected = b"ab".to_vec();
        expected.extend_from_slice(&[2, 0, 0, 0]);
        expected.extend_from_slice(&crc);
        expected.extend_from_slice(&[RAW_ID, 0, 0, 2]);
        expected.extend_from_slice(b"CCHR");
        assert_eq!(sealed, expected);
        let sealed = seal_value(&(7u16, 1u8)).unwrap();
        assert_eq!(&sealed[..3], &[7, 0, 1]);
        assert_eq!(&sealed[3..7], &3u32.to_le_bytes());
        assert_eq!(
            &sealed[11..],
            &[Bincode::ID, 0, 0, 2, b'C', b'C', b'H', b'R']
        );
    }

    #[test]
    fn every_corruption_is_an_error() {
        for sealed in [
            seal::<Bincode, _>(&String::from("value")).unwrap(),
            seal_value(&String::from("value")).unwrap(),
            wrap_v1(Bincode::ID, &Bincode::encode("value").unwrap()),
        ] {
            let v1 = sealed.starts_with(&MAGIC);
            for cut in 0..sealed.len() {
                assert!(
                    open_value::<String>(
                        Bytes::copy_from_slice(&sealed[..cut]),
                        DEFAULT_DECODE_LIMIT
                    )
                    .is_err()
                );
            }
            for i in 0..sealed.len() {
                let reserved = if v1 {
                    [6, 7]
                } else {
                    [sealed.len() - 7, sealed.len() - 6]
                };
                if reserved.contains(&i) {
                    continue; // reserved bytes are not checked
                }
                let mut bad = sealed.clone();
                bad[i] ^= 0x40;
                assert!(
                    open_value::<String>(Bytes::from(bad), DEFAULT_DECODE_LIMIT).is_err(),
                    "flip at {i} of {sealed:?}"
                );
            }
        }
    }

    #[test]
    fn version_1_envelopes_still_read() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let old = wrap_v1(Bincode::ID, &Bincode::encode(&bytes).unwrap());
        assert_eq!(
            open_value::<Vec<u8>>(Bytes::from(old.clone()), 1 << 20).unwrap(),
            bytes
        );
        assert_eq!(open::<Bincode, Vec<u8>>(&old, 1 << 20).unwrap(), bytes);
        let pair = (1u8, String::from("déjà vu"));
        let old = wrap_v1(Bincode::ID, &Bincode::encode(&pair).unwrap());
        assert_eq!(
            open_value::<(u8, String)>(Bytes::from(old), 1 << 20).unwrap(),
            pair
        );
        let raw = wrap_v1(RAW_ID, b"abc");
        assert_eq!(
            open_value::<String>(Bytes::from(raw), 1 << 20).unwrap(),
            "abc"
        );
    }

    #[test]
    fn plain_values_round_trip_and_read_what_the_codec_wrote() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let text = String::from("déjà vu");
        let pair = (1u8, text.clone());
        let numbers = vec![1.5f64, -2.0];
        assert_eq!(
            seal_value(&pair).unwrap(),
            seal::<Bincode, _>(&pair).unwrap()
        );
        assert_eq!(
            seal_value(&numbers).unwrap(),
            seal::<Bincode, _>(&numbers).unwrap()
        );
        let open = |sealed: Vec<u8>| Bytes::from(sealed);
        assert_eq!(
            open_value::<Vec<u8>>(open(seal_value(&bytes).unwrap()), 1 << 20).unwrap(),
            bytes
        );
        assert_eq!(
            open_value::<Vec<u8>>(open(seal::<Bincode, _>(&bytes).unwrap()), 1 << 20).unwrap(),
            bytes
        );
        assert_eq!(
            open_value::<String>(open(seal_value(&text).unwrap()), 1 << 20).unwrap(),
            text
        );
        assert_eq!(
            open_value::<String>(open(seal::<Bincode, _>(&text).unwrap()), 1 << 20).unwrap(),
            text
        );
        let as_bytes = Bytes::from(bytes.clone());
        assert_eq!(
            open_value::<Bytes>(open(seal_value(&as_bytes).unwrap()), 1 << 20).unwrap(),
            as_bytes
        );
        assert_eq!(
            open_value::<(u8, String)>(open(seal_value(&pair).unwrap()), 1 << 20).unwrap(),
            pair
        );
        assert_eq!(
            open_value::<Vec<f64>>(open(seal_value(&numbers).unwrap()), 1 << 20).unwrap(),
            numbers
        );
        // A string stored raw reads as bytes, as through the codec; raw bytes are no tuple.
        assert_eq!(
            open_value::<Vec<u8>>(open(seal_value(&text).unwrap()), 1 << 20).unwrap(),
            text.as_bytes()
        );
        let err =
            open_value::<(u8, u8)>(open(seal_value(&vec![1u8, 2]).unwrap()), 1 << 20).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        let foreign = wrap(9, &[0; 8]).unwrap();
        assert_eq!(
            open_value::<Vec<u8>>(open(foreign), 1 << 20)
                .unwrap_err()
                .kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn a_buffer_read_on_its_own_becomes_the_value() {
        let value: Vec<u8> = (0..=255u8).cycle().take(1 << 16).collect();
        let stored = Bytes::from(seal_value(&value).unwrap());
        let at = stored.as_ptr();
        let back: Vec<u8> = open_value(stored, DEFAULT_DECODE_LIMIT).unwrap();
        assert_eq!(back, value);
        assert_eq!(back.as_ptr(), at, "no copy");
    }

    #[test]
    fn hostile_length_prefix_is_refused_without_allocating() {
        // A valid envelope around a payload that claims a 2^60-byte string.
        let payload = (1u64 << 60).to_le_bytes();
        let sealed = wrap(Bincode::ID, &payload).unwrap();
        let err = open::<Bincode, String>(&sealed, 1 << 20).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        // Also within the limit: 1 MiB claimed, 8 bytes present.
        let sealed = wrap(Bincode::ID, &(1u64 << 20).to_le_bytes()).unwrap();
        assert!(open::<Bincode, Vec<u8>>(&sealed, DEFAULT_DECODE_LIMIT).is_err());
    }
}
