//! Tells whether a value serializes as `None` at the top level, for the `allow_none` setting.
//!
//! The front end caches any `T: Serialize`, so it cannot match on `Option`. Instead it runs the
//! value through [`NoneProbe`], a serializer that answers `true` only when the very first thing
//! the value asks for is `serialize_none`, and stops at anything else without walking the value.

use std::fmt;

use serde::Serialize;
use serde::ser::{self, Impossible};

/// Whether `value` is `None` (of any `Option<_>`) at the top level.
pub(crate) fn is_none<T: Serialize + ?Sized>(value: &T) -> bool {
    value.serialize(NoneProbe).unwrap_or(false)
}

struct NoneProbe;

/// Ends the probe early: the value is something other than `None`.
#[derive(Debug)]
struct NotNone;

impl fmt::Display for NotNone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not none")
    }
}

impl std::error::Error for NotNone {}

impl ser::Error for NotNone {
    fn custom<M: fmt::Display>(_: M) -> Self {
        NotNone
    }
}

macro_rules! not_none {
    ($($method:ident($($ty:ty),*);)*) => {
        $(fn $method(self, $(_: $ty),*) -> Result<bool, NotNone> { Ok(false) })*
    };
}

impl ser::Serializer for NoneProbe {
    type Ok = bool;
    type Error = NotNone;
    type SerializeSeq = Impossible<bool, NotNone>;
    type SerializeTuple = Impossible<bool, NotNone>;
    type SerializeTupleStruct = Impossible<bool, NotNone>;
    type SerializeTupleVariant = Impossible<bool, NotNone>;
    type SerializeMap = Impossible<bool, NotNone>;
    type SerializeStruct = Impossible<bool, NotNone>;
    type SerializeStructVariant = Impossible<bool, NotNone>;

    fn serialize_none(self) -> Result<bool, NotNone> {
        Ok(true)
    }

    not_none! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
        serialize_i64(i64); serialize_i128(i128); serialize_u8(u8); serialize_u16(u16);
        serialize_u32(u32); serialize_u64(u64); serialize_u128(u128); serialize_f32(f32);
        serialize_f64(f64); serialize_char(char); serialize_str(&str); serialize_bytes(&[u8]);
        serialize_unit(); serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<bool, NotNone> {
        Ok(false)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<bool, NotNone> {
        Ok(false)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<bool, NotNone> {
        Ok(false)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotNone> {
        Err(NotNone)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotNone> {
        Err(NotNone)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotNone> {
        Err(NotNone)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotNone> {
        Err(NotNone)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotNone> {
        Err(NotNone)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, NotNone> {
        Err(NotNone)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotNone> {
        Err(NotNone)
    }
}

#[cfg(test)]
mod tests {
    use super::is_none;

    #[test]
    fn only_top_level_none_is_none() {
        assert!(is_none(&None::<u32>));
        assert!(is_none(&None::<Vec<String>>));
        assert!(!is_none(&Some(0u8)));
        assert!(!is_none(&Some(None::<u8>)));
        assert!(!is_none(&0u8));
        assert!(!is_none(&false));
        assert!(!is_none(&()));
        assert!(!is_none(&vec![None::<u8>]));
        assert!(!is_none(&(None::<u8>,)));
        assert!(!is_none("text"));
    }
}
