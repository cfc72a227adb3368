//! [`SeededFold`]: the hasher of the in-process maps keyed by cache keys (the near cache, the
//! memory backend's store).

use std::hash::{BuildHasher, Hasher};

/// A multiply-and-rotate fold over 8-byte words, seeded per map from the operating system's
/// random source. Keys of in-process caches are namespaces, function ids and 32 bytes of
/// BLAKE3 output (or argument encodings); SipHash, the std default, spent about a tenth of a
/// memory hit on them. The random seed keeps bucket collisions from being precomputed by
/// whoever chooses the arguments. Not a cryptographic hash.
///
/// ```
/// use std::collections::HashMap;
/// use cachier_core::SeededFold;
/// let mut map: HashMap<&str, u32, SeededFold> = HashMap::with_hasher(SeededFold::default());
/// map.insert("key", 1);
/// assert_eq!(map["key"], 1);
/// ```
#[derive(Clone, Copy)]
pub struct SeededFold(u64);

impl Default for SeededFold {
    fn default() -> Self {
        let mut seed = [0u8; 8];
        // Without OS randomness the fold still works; only the seed is predictable.
        let _ = getrandom::fill(&mut seed);
        SeededFold(u64::from_le_bytes(seed) | 1)
    }
}

impl std::fmt::Debug for SeededFold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed stays private.
        f.write_str("SeededFold")
    }
}

impl BuildHasher for SeededFold {
    type Hasher = Fold;

    fn build_hasher(&self) -> Fold {
        Fold(self.0)
    }
}

/// The [`Hasher`] of a [`SeededFold`].
pub struct Fold(u64);

impl Fold {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for Fold {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // One more round so the last word's bits reach the low bits a table indexes by.
        (self.0 ^ (self.0 >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (self.0 >> 32)
    }
}
