//! The whole conformance suite against a Redis Cluster: the shared test cluster in
//! `CACHIER_TEST_REDIS_CLUSTER_URL` (set by `cargo xtask test redis:cluster`). Cross-process
//! checks start child processes of this binary, which reach the same cluster through the same
//! variable; outage checks stop and start a private cluster of their own.

mod common;

use std::sync::Arc;

use cachier_core::Core;
use cachier_redis::RedisCore;

/// A new core per call (each check runs on its own runtime), on the shared test cluster.
async fn make_core() -> Arc<dyn Core> {
    let config = common::cluster::shared_cluster_config(&common::cluster::cluster_url());
    let core = RedisCore::connect(config)
        .await
        .unwrap_or_else(|e| panic!("the Redis Cluster for the conformance suite answers: {e}"));
    Arc::new(core)
}

/// A private cluster of the calling check's own, for the outage checks.
async fn make_outage() -> common::cluster::OutageCluster {
    common::blocking(common::cluster::OutageCluster::start)
}

cachier_core::conformance_suite!(make_core, outage = make_outage);
