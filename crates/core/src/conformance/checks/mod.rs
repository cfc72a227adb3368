//! The checks. Each takes a [`Harness`](super::Harness), works in its own
//! [`Scope`](super::Scope) and panics on the first broken expectation.
//!
//! They are grouped by theme, one file each: the storage contract spoken to the
//! [`Core`](crate::Core) directly (`storage`, `claims`, `removal`, `isolation`, `waiting`), the
//! call algorithm through the [`Cachier`](crate::Cachier) front end (`calls`, `coherence`, `near`,
//! `bad_data`, `concurrency`, and the front-end half of `waiting`), and the checks that start other OS
//! processes. Every check is re-exported here, so the suite names each
//! as `checks::NAME`.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::codec::{self, DefaultCodec};
use crate::{Claim, ClaimToken};

mod arguments;
mod bad_data;
mod calls;
mod capabilities;
mod claims;
mod coherence;
mod concurrency;
mod freshness;
mod isolation;
mod near;
mod outage;
mod removal;
mod storage;
mod waiting;

pub use super::process::{cross_process_dead_holder, cross_process_single_flight};
pub use arguments::*;
pub use bad_data::*;
pub use calls::*;
pub use capabilities::*;
pub use claims::*;
pub use coherence::*;
pub use concurrency::*;
pub use freshness::*;
pub use isolation::*;
pub use near::*;
pub use outage::*;
pub use removal::*;
pub use storage::*;
pub use waiting::*;

const LEASE: Duration = Duration::from_secs(10);

fn sealed<T: Serialize + ?Sized>(value: &T) -> Bytes {
    Bytes::from(codec::seal::<DefaultCodec, T>(value).expect("test values serialize"))
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

fn acquired(claim: Claim) -> ClaimToken {
    match claim {
        Claim::Acquired(token) => token,
        Claim::Held { until } => {
            panic!("expected to acquire the claim, it is held until {until:?}")
        }
    }
}

fn is_held(claim: &Claim) -> bool {
    matches!(claim, Claim::Held { .. })
}

/// Polls `probe` every 20 ms until it is true or `limit` passes; returns whether it became true.
async fn eventually<F, Fut>(limit: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if probe().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    /// Every file of this folder, with its source.
    const FILES: &[(&str, &str)] = &[
        ("mod.rs", include_str!("mod.rs")),
        ("arguments.rs", include_str!("arguments.rs")),
        ("bad_data.rs", include_str!("bad_data.rs")),
        ("calls.rs", include_str!("calls.rs")),
        ("capabilities.rs", include_str!("capabilities.rs")),
        ("claims.rs", include_str!("claims.rs")),
        ("coherence.rs", include_str!("coherence.rs")),
        ("concurrency.rs", include_str!("concurrency.rs")),
        ("freshness.rs", include_str!("freshness.rs")),
        ("isolation.rs", include_str!("isolation.rs")),
        ("near.rs", include_str!("near.rs")),
        ("outage.rs", include_str!("outage.rs")),
        ("removal.rs", include_str!("removal.rs")),
        ("storage.rs", include_str!("storage.rs")),
        ("waiting.rs", include_str!("waiting.rs")),
        ("../process.rs", include_str!("../process.rs")),
    ];

    #[test]
    fn check_list_is_complete() {
        // Every `pub async fn` in these files is listed in `__conformance_checks!`, so no check
        // is written and then forgotten.
        let listed = include_str!("../mod.rs");
        let mut count = 0;
        for (file, source) in FILES {
            for line in source.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ") {
                    let name = rest.split('(').next().expect("name");
                    assert!(
                        listed.contains(&format!("            {name},")),
                        "{name} (in {file}) is not in the suite"
                    );
                    count += 1;
                }
            }
        }
        assert!(count >= 60, "only {count} checks found");
    }

    #[test]
    fn every_file_is_scanned() {
        // A new theme file must join `FILES` above, or its checks escape the test before.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/conformance/checks");
        for entry in std::fs::read_dir(dir).expect("the checks folder is readable") {
            let name = entry.expect("a folder entry").file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".rs") {
                assert!(
                    FILES.iter().any(|(file, _)| *file == name),
                    "checks/{name} is not in FILES of check_list_is_complete"
                );
            }
        }
    }
}
