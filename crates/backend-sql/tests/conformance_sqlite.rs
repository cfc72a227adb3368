//! The conformance suite on sqlite: a SQLite file under the target's temporary directory, shared by every test process.

#![cfg(feature = "sqlite")]

use std::sync::Arc;

use cachier_core::Core;
use cachier_sql::SqlCore;
use tokio::sync::OnceCell;

/// One pool per process, shared by every check (each runs on its own runtime; the pool does not
/// depend on one).
async fn make_core() -> Arc<dyn Core> {
    static CORE: OnceCell<SqlCore> = OnceCell::const_new();
    let core = CORE
        .get_or_init(|| async {
            let url = format!(
                "sqlite://{}/cachier-sql-conformance/cachier.db",
                env!("CARGO_TARGET_TMPDIR")
            );
            SqlCore::from_url(&url)
                .await
                .unwrap_or_else(|e| panic!("cannot open the sqlite test database: {e}"))
        })
        .await;
    Arc::new(core.clone())
}

cachier_core::conformance_suite!(make_core);
