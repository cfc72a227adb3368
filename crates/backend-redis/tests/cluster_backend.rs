//! The tests of `backend.rs` (in `suites/backend.rs`) against the shared test cluster
//! (`CACHIER_TEST_REDIS_CLUSTER_URL`, set by `cargo xtask test redis:cluster`): every
//! single-server behaviour holds on a Redis Cluster too.

mod common;

/// The shared test cluster.
fn redis_url() -> String {
    common::cluster::cluster_url()
}

#[path = "suites/backend.rs"]
mod suite;
