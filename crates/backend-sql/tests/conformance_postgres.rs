//! The conformance suite on postgres: the PostgreSQL server named by CACHIER_TEST_POSTGRES_URL.

#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;

use cachier_core::Core;
use cachier_sql::SqlCore;
use tokio::sync::OnceCell;

/// One pool per process, shared by every check (each runs on its own runtime; the pool does not
/// depend on one), with the shared servers' settings (see `support::shared_config`).
async fn make_core() -> Arc<dyn Core> {
    static CORE: OnceCell<SqlCore> = OnceCell::const_new();
    let core = CORE
        .get_or_init(|| async {
            let url = std::env::var("CACHIER_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            SqlCore::connect(support::shared_config(&url))
                .await
                .unwrap_or_else(|e| panic!("cannot open the postgres test database: {e}"))
        })
        .await;
    Arc::new(core.clone())
}

/// A private PostgreSQL server of the calling check's own, for the outage checks (see
/// `support::servers`).
async fn make_outage() -> support::servers::PrivateServer {
    tokio::task::spawn_blocking(support::servers::PrivateServer::postgres)
        .await
        .expect("starting the private PostgreSQL server")
}

cachier_core::conformance_suite!(make_core, outage = make_outage);
