//! The shared conformance suite, run against the MongoDB wire server named by
//! `CACHIER_TEST_MONGO_URL` (default `mongodb://127.0.0.1:27017`). `cargo xtask test mongo`
//! starts a server and sets the variable.

mod common;

use std::sync::Arc;

use cachier_core::Core;

/// A core on the shared test server; every process (the cross-process checks start children)
/// reaches the same server through the inherited environment.
async fn make_core() -> Arc<dyn Core> {
    Arc::new(common::connect().await)
}

cachier_core::conformance_suite!(make_core);
