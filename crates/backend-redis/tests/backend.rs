//! Redis-specific behaviour of `RedisCore` against the shared test server
//! (`CACHIER_TEST_REDIS_URL`, else `redis://127.0.0.1:6379`). The tests live in
//! `suites/backend.rs`; `cluster_backend.rs` runs the same tests against a Redis Cluster.

mod common;

/// The shared test server.
fn redis_url() -> String {
    common::redis_url()
}

#[path = "suites/backend.rs"]
mod suite;
