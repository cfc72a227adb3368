//! How user values become stored bytes: the [`Codec`] seam and the envelope around its output.
//!
//! # Envelope, version 1
//!
//! Every stored value is `header ++ payload`, with a 16-byte header:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"CCHR"` |
//! | 4 | envelope version (`1`) |
//! | 5 | codec id ([`Codec::ID`]; `1` = bincode 2, standard config, little-endian, fixed-width ints) |
//! | 6..8 | reserved, zero |
//! | 8..12 | payload length, `u32` little-endian |
//! | 12..16 | CRC-32 (IEEE) of the payload, little-endian |
//!
//! [`open`] checks every field before the codec sees a byte, and the codec refuses length
//! prefixes whose total claim exceeds the decode limit, so hostile bytes cost at most the limit
//! and never an allocation of the length they claim. A value that fails any check is a miss for
//! the front end (logged, recomputed, overwritten), never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};

/// The envelope's magic number.
pub const MAGIC: [u8; 4] = *b"CCHR";
/// The envelope format version written by this build.
pub const ENVELOPE_VERSION: u8 = 1;
/// The length of the envelope header.
pub const HEADER_LEN: usize = 16;
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
    let payload = C::encode(value)?;
    wrap(C::ID, &payload)
}

/// Wraps already-encoded payload bytes in an envelope with codec id `codec`.
pub fn wrap(codec: u8, payload: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .map_err(|_| Error::too_large("values above 4 GiB cannot be stored"))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(ENVELOPE_VERSION);
    out.push(codec);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Checks an envelope and returns its codec id and payload.
pub fn unwrap(bytes: &[u8]) -> Result<(u8, &[u8])> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::corrupt(format!(
            "{} bytes is shorter than the envelope header",
            bytes.len()
        )));
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    if header[0..4] != MAGIC {
        return Err(Error::corrupt("not a cachier value (bad magic number)"));
    }
    if header[4] != ENVELOPE_VERSION {
        return Err(Error::corrupt(format!(
            "envelope version {} is not supported (this build reads {ENVELOPE_VERSION})",
            header[4]
        )));
    }
    let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if len != payload.len() {
        return Err(Error::corrupt(format!(
            "envelope says {len} payload bytes, found {}",
            payload.len()
        )));
    }
    let crc = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if crc != crc32fast::hash(payload) {
        return Err(Error::corrupt("checksum mismatch"));
    }
    Ok((header[5], payload))
}

/// [`seal`] with the default codec for a value whose type is known: byte buffers, strings and
/// vectors of numbers are written in bulk, byte for byte as the codec would write them (see
/// the `plain` module), everything else through the codec.
pub(crate) fn seal_default<T: std::any::Any + Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![0; HEADER_LEN];
    if !crate::plain::encode_into(value, &mut out) {
        return seal::<DefaultCodec, T>(value);
    }
    let payload_len = u32::try_from(out.len() - HEADER_LEN)
        .map_err(|_| Error::too_large("values above 4 GiB cannot be stored"))?;
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    out[0..4].copy_from_slice(&MAGIC);
    out[4] = ENVELOPE_VERSION;
    out[5] = DefaultCodec::ID;
    out[8..12].copy_from_slice(&payload_len.to_le_bytes());
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// [`open`] with the default codec for a value whose type is known: plain types are read in
/// bulk (see [`seal_default`]).
pub(crate) fn open_default<T: std::any::Any + DeserializeOwned>(
    bytes: &[u8],
    decode_limit: usize,
) -> Result<T> {
    let (codec, payload) = unwrap(bytes)?;
    if codec != DefaultCodec::ID {
        return Err(Error::corrupt(format!(
            "written by codec {codec}, this reader uses codec {}",
            DefaultCodec::ID
        )));
    }
    match crate::plain::decode::<T>(payload, decode_limit) {
        Some(decoded) => decoded,
        None => DefaultCodec::decode(payload, decode_limit),
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

#[cfg(test)]
mod tests {
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
    fn every_corruption_is_an_error() {
        let sealed = seal::<Bincode, _>(&String::from("value")).unwrap();
        for cut in 0..sealed.len() {
            assert!(open::<Bincode, String>(&sealed[..cut], DEFAULT_DECODE_LIMIT).is_err());
        }
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            if i == 6 || i == 7 {
                continue; // reserved bytes are not checked
            }
            assert!(
                open::<Bincode, String>(&bad, DEFAULT_DECODE_LIMIT).is_err(),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn plain_values_seal_as_the_codec_does() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(
            seal_default(&bytes).unwrap(),
            seal::<Bincode, _>(&bytes).unwrap()
        );
        let text = String::from("déjà vu");
        assert_eq!(
            seal_default(&text).unwrap(),
            seal::<Bincode, _>(&text).unwrap()
        );
        let pair = (1u8, text.clone());
        assert_eq!(
            seal_default(&pair).unwrap(),
            seal::<Bincode, _>(&pair).unwrap()
        );
        let back: Vec<u8> = open_default(&seal::<Bincode, _>(&bytes).unwrap(), 1 << 20).unwrap();
        assert_eq!(back, bytes);
        let back: (u8, String) = open_default(&seal_default(&pair).unwrap(), 1 << 20).unwrap();
        assert_eq!(back, pair);
        let foreign = wrap(9, &[0; 8]).unwrap();
        assert_eq!(
            open_default::<Vec<u8>>(&foreign, 1 << 20)
                .unwrap_err()
                .kind(),
            ErrorKind::Corrupt
        );
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
