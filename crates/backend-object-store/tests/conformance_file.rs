//! The whole conformance suite on a local directory through `object_store`'s `LocalFileSystem`
//! (`file://`). Cross-process checks start child processes of this binary, which open the same
//! directory. This store has no conditional update: see the crate docs for the weaker takeover
//! guarantee; `tests/claims.rs` skips its takeover race here and says so.

mod common;

use std::sync::Arc;

use cachier_core::Core;

async fn make_core() -> Arc<dyn Core> {
    Arc::new(common::file_core())
}

cachier_core::conformance_suite!(make_core);
