//! How big the store may grow: a bound by bytes, by entries, or both.

use crate::MemoryCore;

/// The default bound by bytes: 256 MiB of values and their bookkeeping.
///
/// Large enough that a cache of ordinary results rarely evicts anything it would serve again,
/// small enough that a service caching a function of ever new arguments cannot grow without end.
/// Set [`Config::max_bytes`] to what the process can spare, or [`Config::unbounded`] for the old
/// behaviour (nothing is ever evicted).
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// What each stored value counts on top of its own bytes, key included: a measured estimate of
/// what the store spends per entry (the key and its namespace and function id handles, the map
/// slot, the eviction policy's nodes and frequency sketch, the allocator's rounding). With it,
/// a byte bound holds for what the process really spends, not only for the values: 1e6 inserts
/// of 1 KiB values under a 64 MiB bound stay within the bound plus a few MiB of fixed cost
/// (see the crate's `tests/bounded.rs`).
pub const ENTRY_OVERHEAD_BYTES: u64 = 256;

/// The settings of a [`MemoryCore`].
///
/// ```
/// use cachier_memory::{Config, MemoryCore};
///
/// // 64 MiB, and at most 10 000 values, whichever is reached first.
/// let core = MemoryCore::with_config(Config::default().max_bytes(Some(64 << 20)).max_entries(Some(10_000)));
/// # drop(core);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The most bytes the stored values may take, each counted as its encoded length plus its
    /// key and [`ENTRY_OVERHEAD_BYTES`]. `None`: no bound by bytes. Default
    /// [`DEFAULT_MAX_BYTES`].
    pub max_bytes: Option<u64>,
    /// The most values the store keeps. `None`: no bound by count. Default `None`.
    pub max_entries: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_bytes: Some(DEFAULT_MAX_BYTES),
            max_entries: None,
        }
    }
}

impl Config {
    /// No bound at all: values leave the store only when they are removed, cleared, deleted as
    /// stale, or replaced.
    pub fn unbounded() -> Self {
        Config {
            max_bytes: None,
            max_entries: None,
        }
    }

    /// Sets the bound by bytes (`None`: none).
    pub fn max_bytes(mut self, bytes: Option<u64>) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Sets the bound by number of values (`None`: none).
    pub fn max_entries(mut self, entries: Option<u64>) -> Self {
        self.max_entries = entries;
        self
    }

    /// The store these settings describe.
    pub fn build(self) -> MemoryCore {
        MemoryCore::with_config(self)
    }

    /// The eviction policy's capacity and the weight of one value of `bytes` bytes (key and
    /// overhead included), or `None` for no bound.
    ///
    /// Both bounds at once are kept by one weight: capacity `max_bytes`, and every value weighs
    /// at least `max_bytes / max_entries`. The sum of the weights is at least the sum of the
    /// bytes and at least `max_entries` times the least weight, so holding it under the capacity
    /// holds both bounds.
    pub(crate) fn capacity(&self) -> Option<(u64, Weigh)> {
        match (self.max_bytes, self.max_entries) {
            (None, None) => None,
            (None, Some(entries)) => Some((entries, Weigh::Count)),
            (Some(bytes), None) => Some((bytes, Weigh::Bytes { least: 0 })),
            (Some(bytes), Some(entries)) => {
                let least = if entries == 0 {
                    u64::MAX
                } else {
                    bytes.div_ceil(entries)
                };
                Some((bytes, Weigh::Bytes { least }))
            }
        }
    }
}

/// How one value is weighed against the capacity.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Weigh {
    /// Every value weighs one.
    Count,
    /// A value weighs its bytes (key and overhead included), at least `least`.
    Bytes { least: u64 },
}

impl Weigh {
    pub(crate) fn weight(self, bytes: u64) -> u32 {
        match self {
            Weigh::Count => 1,
            Weigh::Bytes { least } => {
                u32::try_from(bytes.saturating_add(ENTRY_OVERHEAD_BYTES).max(least))
                    .unwrap_or(u32::MAX)
            }
        }
    }
}
