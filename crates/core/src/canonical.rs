//! Equal arguments, equal bytes: the order-insensitive view of hash collections that the key
//! hasher serializes.
//!
//! serde writes a `HashMap` or `HashSet` in iteration order, and two equal hash collections
//! iterate in different orders (each has its own random seed, capacity and insertion history).
//! [`Canonical`] wraps the arguments so that every hash collection, at any depth, is written with
//! its entries (or elements) sorted by their own encoded bytes. Everything else — ordered maps
//! such as `BTreeMap`, sequences, structs — is passed through untouched, so the bytes (and keys)
//! of arguments without hash collections are exactly those of the plain encoding.
//!
//! serde gives a serializer no flag for "unordered": a `HashSet` and a `Vec` both arrive through
//! `collect_seq`, a `HashMap` and a `BTreeMap` both through `collect_map`. What differs is the
//! iterator's type, so a collection counts as unordered when the last path segment of that type's
//! name (references stripped, generic parameters ignored) ends in `HashMap` or `HashSet`: the
//! standard library's, `hashbrown`'s, and aliases of them such as `FxHashMap`. The key snapshot
//! tests pin the result, so a toolchain that named these types differently would fail them.
//!
//! A sorted entry is re-emitted as a tuple of its bytes, which the key codec (bincode, fixed-width
//! integers) writes with no length prefix: the output is the plain encoding with the entries in
//! sorted order.

use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, SerializeTuple, Serializer};

/// Serializes `T` with every hash collection's entries in sorted order.
pub(crate) struct Canonical<'a, T: ?Sized>(pub &'a T);

impl<T: Serialize + ?Sized> Serialize for Canonical<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Wrap(serializer))
    }
}

/// Whether the collection behind iterator type `I` has no order of its own.
fn is_unordered<I>() -> bool {
    let name = std::any::type_name::<I>().trim_start_matches('&');
    let outer = name.split('<').next().unwrap_or(name);
    let last = outer.rsplit("::").next().unwrap_or(outer);
    last.ends_with("HashMap") || last.ends_with("HashSet")
}

/// The length serde itself announces for a collection: the size hint, when it is exact.
fn exact_len<I: Iterator>(iter: &I) -> Option<usize> {
    match iter.size_hint() {
        (low, Some(high)) if low == high => Some(low),
        _ => None,
    }
}

/// One element, or one map entry, encoded on its own.
fn encode_alone<T: Serialize, E: ser::Error>(value: &T) -> Result<Vec<u8>, E> {
    bincode::serde::encode_to_vec(value, crate::key::key_config()).map_err(E::custom)
}

/// Bytes already encoded, written as they are.
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for byte in self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

/// A serializer that passes everything to `S`, wrapping nested values in [`Canonical`].
struct Wrap<S>(S);

macro_rules! forward_plain {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method(self, v: $ty) -> Result<Self::Ok, Self::Error> {
                self.0.$method(v)
            }
        )*
    };
}

impl<S: Serializer> Serializer for Wrap<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Wrap<S::SerializeSeq>;
    type SerializeTuple = Wrap<S::SerializeTuple>;
    type SerializeTupleStruct = Wrap<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Wrap<S::SerializeTupleVariant>;
    type SerializeMap = Wrap<S::SerializeMap>;
    type SerializeStruct = Wrap<S::SerializeStruct>;
    type SerializeStructVariant = Wrap<S::SerializeStructVariant>;

    forward_plain!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Canonical(value))
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Canonical(value))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Canonical(value))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Wrap)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Wrap)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Wrap)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Wrap)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Wrap)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Wrap)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Wrap)
    }

    fn collect_seq<I>(self, iter: I) -> Result<S::Ok, S::Error>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        if !is_unordered::<I>() {
            let iter = iter.into_iter();
            let mut seq = self.serialize_seq(exact_len(&iter))?;
            for item in iter {
                seq.serialize_element(&item)?;
            }
            return seq.end();
        }
        let mut elements = iter
            .into_iter()
            .map(|item| encode_alone::<_, S::Error>(&Canonical(&item)))
            .collect::<Result<Vec<_>, _>>()?;
        elements.sort_unstable();
        let mut seq = self.0.serialize_seq(Some(elements.len()))?;
        for element in &elements {
            seq.serialize_element(&Raw(element))?;
        }
        seq.end()
    }

    fn collect_map<K, V, I>(self, iter: I) -> Result<S::Ok, S::Error>
    where
        K: Serialize,
        V: Serialize,
        I: IntoIterator<Item = (K, V)>,
    {
        if !is_unordered::<I>() {
            let iter = iter.into_iter();
            let mut map = self.serialize_map(exact_len(&iter))?;
            for (k, v) in iter {
                map.serialize_entry(&k, &v)?;
            }
            return map.end();
        }
        let mut entries = iter
            .into_iter()
            .map(|(k, v)| encode_alone::<_, S::Error>(&(Canonical(&k), Canonical(&v))))
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort_unstable();
        let mut map = self.0.serialize_map(Some(entries.len()))?;
        for entry in &entries {
            // The entry's key and value are both in its bytes; the unit value adds nothing.
            map.serialize_key(&Raw(entry))?;
            map.serialize_value(&())?;
        }
        map.end()
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_compound {
    ($trait:ident, $element:ident) => {
        impl<S: ser::$trait> ser::$trait for Wrap<S> {
            type Ok = S::Ok;
            type Error = S::Error;
            fn $element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
                self.0.$element(&Canonical(value))
            }
            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    };
    ($trait:ident, $field:ident, named) => {
        impl<S: ser::$trait> ser::$trait for Wrap<S> {
            type Ok = S::Ok;
            type Error = S::Error;
            fn $field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), S::Error> {
                self.0.$field(key, &Canonical(value))
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
                self.0.skip_field(key)
            }
            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    };
}

forward_compound!(SerializeSeq, serialize_element);
forward_compound!(SerializeTuple, serialize_element);
forward_compound!(SerializeTupleStruct, serialize_field);
forward_compound!(SerializeTupleVariant, serialize_field);
forward_compound!(SerializeStruct, serialize_field, named);
forward_compound!(SerializeStructVariant, serialize_field, named);

impl<S: SerializeMap> SerializeMap for Wrap<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), S::Error> {
        self.0.serialize_key(&Canonical(key))
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        self.0.serialize_value(&Canonical(value))
    }

    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), S::Error> {
        self.0.serialize_entry(&Canonical(key), &Canonical(value))
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};

    use super::*;

    fn plain<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, crate::key::key_config()).unwrap()
    }

    fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
        plain(&Canonical(value))
    }

    #[test]
    fn unordered_types_are_recognised_by_name() {
        assert!(is_unordered::<&HashMap<String, u32>>());
        assert!(is_unordered::<&HashSet<u8>>());
        assert!(!is_unordered::<&BTreeMap<String, HashMap<u8, u8>>>());
        assert!(!is_unordered::<&Vec<HashSet<u8>>>());
    }

    #[test]
    fn ordered_values_encode_as_plain() {
        let map: BTreeMap<String, Vec<u64>> =
            [("b".into(), vec![1]), ("aa".into(), vec![2, 3])].into();
        let value = (map, Some("x"), vec![1u16, 2], ((), 'é', -5i128));
        assert_eq!(canonical(&value), plain(&value));
    }

    #[test]
    fn hash_collections_encode_sorted_at_any_depth() {
        let sorted: BTreeMap<u32, u32> = (0..50).map(|i| (i * 7919 % 1000, i)).collect();
        let mut entries: Vec<(Vec<u8>, (u32, u32))> = sorted
            .iter()
            .map(|(k, v)| (plain(&(k, v)), (*k, *v)))
            .collect();
        entries.sort();
        let mut expected = plain(&(entries.len() as u64));
        for (bytes, _) in &entries {
            expected.extend_from_slice(bytes);
        }
        let hashed: HashMap<u32, u32> = sorted.clone().into_iter().collect();
        assert_eq!(canonical(&hashed), expected);
        // Nested in a tuple and a vector, with a set beside it.
        let set_a: HashSet<String> = (0..30).map(|i| i.to_string()).collect();
        let set_b: HashSet<String> = (0..30).rev().map(|i| i.to_string()).collect();
        let a = (vec![hashed.clone()], set_a);
        let b = (
            vec![sorted.into_iter().rev().collect::<HashMap<_, _>>()],
            set_b,
        );
        assert_eq!(canonical(&a), canonical(&b));
    }
}
