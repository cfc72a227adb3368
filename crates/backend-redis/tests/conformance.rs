//! The whole conformance suite against real Redis: `CACHIER_TEST_REDIS_URL`, else
//! `redis://127.0.0.1:6379`. Cross-process checks start child processes of this binary, which
//! reach the same server through the same variable; outage checks stop and start a private
//! `redis-server` of their own.

mod common;

use std::sync::Arc;

use cachier_core::Core;
use cachier_redis::RedisCore;

/// A new core per call: each check runs on its own runtime, and a core belongs to the runtime
/// it was created on. Every core reaches the same server (with `common::shared_config`);
/// checks stay apart by namespace.
async fn make_core() -> Arc<dyn Core> {
    let config = common::shared_config(&common::redis_url());
    let core = RedisCore::connect(config)
        .await
        .unwrap_or_else(|e| panic!("the Redis server for the conformance suite answers: {e}"));
    Arc::new(core)
}

/// A private `redis-server` of the calling check's own, for the outage checks.
async fn make_outage() -> common::OutageServer {
    common::OutageServer::start()
}

cachier_core::conformance_suite!(make_core, outage = make_outage);
