//! The whole conformance suite against the S3 store named by `CACHIER_TEST_S3_URL`
//! (`cargo xtask test s3` starts a moto_server and creates a bucket for the run). Cross-process
//! checks start child processes of this binary, which reach the same bucket through the same
//! variable; the outage checks stop and start a private moto_server of their own.

mod common;

use std::sync::Arc;

use cachier_core::Core;

/// A new core per check; every core reaches the same bucket, checks stay apart by namespace.
async fn make_core() -> Arc<dyn Core> {
    Arc::new(common::s3_core())
}

/// A private moto_server of the calling check's own, for the outage checks.
async fn make_outage() -> common::MotoOutage {
    let server = tokio::task::spawn_blocking(common::MotoServer::start)
        .await
        .expect("starting the private moto_server");
    common::MotoOutage(Arc::new(server))
}

cachier_core::conformance_suite!(make_core, outage = make_outage);
