//! The whole conformance suite against the file backend, including the cross-process checks:
//! every process (this test binary and the children the suite starts) opens the same directory
//! under `CARGO_TARGET_TMPDIR`; tests stay apart by namespace, each its own sub-directory.

use std::sync::Arc;

use cachier_core::Core;
use cachier_file::{Config, FileCore};

async fn make_core() -> Arc<dyn Core> {
    let dir = concat!(env!("CARGO_TARGET_TMPDIR"), "/cachier-file-conformance");
    Arc::new(FileCore::open(Config::new(dir)).expect("open the conformance store"))
}

cachier_core::conformance_suite!(make_core);
