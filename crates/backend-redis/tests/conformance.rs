//! The whole conformance suite against real Redis: `CACHIER_TEST_REDIS_URL`, else
//! `redis://127.0.0.1:6379`. Cross-process checks start child processes of this binary, which
//! reach the same server through the same variable.

use std::sync::Arc;

use cachier_core::Core;
use cachier_redis::{Config, DEFAULT_URL, RedisCore};

/// A new core per call: each check runs on its own runtime, and a core belongs to the runtime
/// it was created on. Every core reaches the same server; checks stay apart by namespace.
async fn make_core() -> Arc<dyn Core> {
    let url = std::env::var("CACHIER_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let config = Config::from_url(&url).expect("CACHIER_TEST_REDIS_URL is a Redis URL");
    let core = RedisCore::connect(config)
        .await
        .unwrap_or_else(|e| panic!("the Redis server for the conformance suite answers: {e}"));
    Arc::new(core)
}

cachier_core::conformance_suite!(make_core);
