//! The whole conformance suite on `object_store`'s `InMemory` store (`memory://`), shared by
//! every core of the process that names it. It is not shared with other processes nor kept
//! after one: the suite skips the cross-process and persistence checks and says so.

mod common;

use std::sync::Arc;

use cachier_core::Core;

async fn make_core() -> Arc<dyn Core> {
    Arc::new(common::memory_core("conformance"))
}

cachier_core::conformance_suite!(make_core);
