//! The SQL backend on PostgreSQL: the shared backend checks, migrations raced by several
//! processes, and a private server stopped and restarted under a live pool.

#![cfg(feature = "postgres")]

mod support;

use cachier_core::conformance::Outage;
use cachier_core::{Bytes, Core, ErrorKind, Timestamp};
use cachier_sql::{Config, POSTGRES_MAX_VALUE_BYTES, SqlCore};
use diesel::{PgConnection, RunQueryDsl, sql_query};
use support::servers::PrivateServer;
use support::{TestNamespace, unique_table};
use tokio::sync::OnceCell;

async fn shared_core() -> SqlCore {
    static CORE: OnceCell<SqlCore> = OnceCell::const_new();
    CORE.get_or_init(|| async {
        SqlCore::connect(support::shared_config(&support::postgres_url()))
            .await
            .expect("connecting to the test PostgreSQL (CACHIER_TEST_POSTGRES_URL)")
    })
    .await
    .clone()
}

backend_checks!(crate::shared_core);

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_name_the_bytea_limit() {
    let caps = shared_core().await.capabilities();
    assert!(caps.cross_process && caps.persistent);
    assert_eq!(caps.max_value_bytes, Some(POSTGRES_MAX_VALUE_BYTES));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_limit_is_exact() {
    let config = support::shared_config(&support::postgres_url()).max_value_bytes(1 << 20);
    let t = TestNamespace::new(SqlCore::connect(config).await.unwrap(), "cfg_limit");
    let key = t.key("limit::f", 1);
    t.core
        .set(&key, Bytes::from(vec![7u8; 1 << 20]), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        t.core
            .get(&key)
            .await
            .unwrap()
            .unwrap()
            .value
            .unwrap()
            .len(),
        1 << 20
    );
    let err = t
        .core
        .set(
            &key,
            Bytes::from(vec![7u8; (1 << 20) + 1]),
            Timestamp::now(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_race_across_processes() {
    if support::child_migrates().await {
        return;
    }
    let url = support::postgres_url();
    let table = unique_table("t_race");
    let _drop = DropTable {
        url: url.clone(),
        table: table.clone(),
    };
    support::run_children("migrations_race_across_processes", &url, &table, 4);
    let (recorded, rows) = tokio::task::spawn_blocking(move || {
        use diesel::Connection as _;
        let mut conn = PgConnection::establish(&url).unwrap();
        let recorded: Vec<support::Count> =
            sql_query("SELECT COUNT(*) AS n FROM __diesel_schema_migrations WHERE version = $1")
                .bind::<diesel::sql_types::Text, _>(format!("{table}/0001"))
                .load(&mut conn)
                .unwrap();
        let rows: Vec<support::Count> = sql_query(format!("SELECT COUNT(*) AS n FROM \"{table}\""))
            .load(&mut conn)
            .unwrap();
        (recorded[0].n, rows[0].n)
    })
    .await
    .unwrap();
    assert_eq!((recorded, rows), (1, 0));
}

/// Drops a test table and its migration record, also when the test failed.
struct DropTable {
    url: String,
    table: String,
}

impl Drop for DropTable {
    fn drop(&mut self) {
        let sql = format!(
            "DROP TABLE IF EXISTS \"{t}\"; \
             DELETE FROM __diesel_schema_migrations WHERE version = '{t}/0001';",
            t = self.table
        );
        if let Err(e) = raw_sql!(PgConnection, &self.url, &sql) {
            eprintln!("dropping test table {} failed: {e}", self.table);
        }
    }
}

/// The pool recovers when the server restarts under it: the first operation after the restart
/// succeeds (its dead connection is dropped and it is retried on a live one), while the server
/// is down operations fail as `Unavailable`.
#[tokio::test(flavor = "multi_thread")]
async fn the_pool_recovers_when_the_server_restarts() {
    let server = tokio::task::spawn_blocking(PrivateServer::postgres)
        .await
        .unwrap();
    assert!(server.dir().join("data").join("PG_VERSION").exists());
    let config = Config::from_url(&server.url()).unwrap().pool_size(4);
    let core = SqlCore::connect(config).await.unwrap();
    let t = TestNamespace::new(core, "restart");
    // Fill the pool with several connections.
    let writes: Vec<_> = (0..8u64)
        .map(|i| {
            let core = t.core.clone();
            let key = t.key("restart::f", i);
            tokio::spawn(async move {
                core.set(&key, Bytes::from_static(b"v"), Timestamp::now())
                    .await
            })
        })
        .collect();
    for w in writes {
        w.await.unwrap().unwrap();
    }

    server.stop().await;
    let err = t.core.get(&t.key("restart::f", 0)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());

    server.start().await;
    // Every idle connection in the pool is dead now; each operation still succeeds.
    for i in 0..8u64 {
        let entry = t.core.get(&t.key("restart::f", i)).await.unwrap();
        assert_eq!(entry.unwrap().value.as_deref(), Some(&b"v"[..]));
    }
    let reads: Vec<_> = (0..8u64)
        .map(|i| {
            let core = t.core.clone();
            let key = t.key("restart::f", i);
            tokio::spawn(async move { core.get(&key).await })
        })
        .collect();
    for r in reads {
        assert!(r.await.unwrap().unwrap().is_some());
    }
    drop(t);
    drop(server);
}

/// A private server stopped under a live core: calls fail fast as `Unavailable`, opening a core
/// on the closed port fails fast, and the core works again by itself once the server is back.
/// Prints what the failing calls cost.
#[tokio::test(flavor = "multi_thread")]
async fn an_outage_fails_fast_then_the_core_recovers() {
    let server = tokio::task::spawn_blocking(PrivateServer::postgres)
        .await
        .unwrap();
    support::outage::fails_fast_then_recovers(server).await;
}

/// A frozen server (every process stopped, its connections open) fails a call after the
/// caller's deadline, and the core works again once the server runs again.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_server_fails_calls_within_the_deadline() {
    let server = tokio::task::spawn_blocking(PrivateServer::postgres)
        .await
        .unwrap();
    support::outage::frozen_server_fails_within_the_deadline(server).await;
}

/// The pooled connections carry the statement timeout: a statement blocked by another
/// session's row lock is cancelled after it, as `Unavailable`.
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_blocked_by_a_row_lock_is_cancelled_by_the_statement_timeout() {
    support::outage::a_locked_row_is_cancelled_by_the_statement_timeout(
        SqlCore::from_url(&support::postgres_url()).await.unwrap(),
        |select, locked| {
            use diesel::Connection as _;
            use diesel::connection::SimpleConnection as _;
            let mut conn = PgConnection::establish(&support::postgres_url()).unwrap();
            conn.batch_execute(&format!("BEGIN; {select};")).unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(3));
            conn.batch_execute("ROLLBACK").unwrap();
        },
    )
    .await;
}
