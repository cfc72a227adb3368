//! The hasher of the store's maps (values and claims).

use std::hash::{BuildHasher, Hasher};

/// The maps' hasher: a multiply-and-rotate fold seeded per map from the operating system's
/// random source. A hit hashes the namespace, the function id and 32 bytes of BLAKE3 output;
/// SipHash (the std default) spent about a tenth of a hit on that. The random seed keeps
/// bucket collisions from being precomputed by whoever chooses the arguments.
#[derive(Clone)]
pub(crate) struct SeededFold(u64);

impl Default for SeededFold {
    fn default() -> Self {
        let mut seed = [0u8; 8];
        // Without OS randomness the fold still works; only the seed is predictable.
        let _ = getrandom::fill(&mut seed);
        SeededFold(u64::from_le_bytes(seed) | 1)
    }
}

impl BuildHasher for SeededFold {
    type Hasher = Fold;

    fn build_hasher(&self) -> Fold {
        Fold(self.0)
    }
}

pub(crate) struct Fold(u64);

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
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // One more round so the last word's bits reach the low bits the table indexes by.
        (self.0 ^ (self.0 >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (self.0 >> 32)
    }
}
