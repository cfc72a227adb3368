//! The shared conformance suite, run against the MongoDB wire server named by
//! `CACHIER_TEST_MONGO_URL` (default `mongodb://127.0.0.1:27017`). `cargo xtask test mongo`
//! starts a server and sets the variable. The outage checks stop and start a private nx-27017
//! of their own.

mod common;

use std::sync::Arc;

use cachier_core::Core;

/// A core on the shared test server; every process (the cross-process checks start children)
/// reaches the same server through the inherited environment.
async fn make_core() -> Arc<dyn Core> {
    Arc::new(common::connect().await)
}

/// A private nx-27017 of the calling check's own, for the outage checks.
async fn make_outage() -> common::server::OutageServer {
    tokio::task::spawn_blocking(common::server::OutageServer::start)
        .await
        .expect("starting the private nx-27017")
}

cachier_core::conformance_suite!(make_core, outage = make_outage);
