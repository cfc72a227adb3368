//! The SQL backend on MySQL/MariaDB: the shared backend checks, the `max_allowed_packet`
//! limit, and migrations raced by several processes.

#![cfg(feature = "mysql")]

mod support;

use cachier_core::{Bytes, Core, ErrorKind, Timestamp};
use cachier_sql::{Config, MYSQL_PACKET_OVERHEAD, SqlCore};
use diesel::{MysqlConnection, RunQueryDsl, sql_query};
use support::{TestNamespace, unique_table};
use tokio::sync::OnceCell;

async fn shared_core() -> SqlCore {
    static CORE: OnceCell<SqlCore> = OnceCell::const_new();
    CORE.get_or_init(|| async {
        SqlCore::connect(support::shared_config(&support::mysql_url()))
            .await
            .expect("connecting to the test MySQL/MariaDB (CACHIER_TEST_MYSQL_URL)")
    })
    .await
    .clone()
}

backend_checks!(crate::shared_core);

fn max_allowed_packet() -> u64 {
    use diesel::Connection as _;
    let mut conn = MysqlConnection::establish(&support::mysql_url()).unwrap();
    let rows: Vec<support::Count> = sql_query("SELECT CAST(@@max_allowed_packet AS SIGNED) AS n")
        .load(&mut conn)
        .unwrap();
    u64::try_from(rows[0].n).unwrap()
}

/// The limit is the server's `max_allowed_packet` less the statement overhead; a value of
/// exactly that size is stored and read back, one byte more is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_value_at_the_packet_limit_is_stored_and_one_more_byte_is_refused() {
    let t = TestNamespace::new(shared_core().await, "packet_limit");
    let packet = tokio::task::spawn_blocking(max_allowed_packet)
        .await
        .unwrap();
    let limit = t.core.max_value_bytes();
    assert_eq!(limit, packet - MYSQL_PACKET_OVERHEAD);
    assert_eq!(t.core.capabilities().max_value_bytes, Some(limit));
    let key = t.key("limit::f", 1);
    let size = usize::try_from(limit).unwrap();
    let value: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    t.core
        .set(&key, Bytes::from(value.clone()), Timestamp::now())
        .await
        .unwrap();
    let got = t.core.get(&key).await.unwrap().unwrap().value.unwrap();
    assert!(got[..] == value[..]);
    let err = t
        .core
        .set(&key, Bytes::from(vec![1u8; size + 1]), Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(
        t.core
            .get(&key)
            .await
            .unwrap()
            .unwrap()
            .value
            .unwrap()
            .len(),
        size
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_race_across_processes() {
    if support::child_migrates().await {
        return;
    }
    let url = support::mysql_url();
    let table = unique_table("t_race");
    let _drop = DropTable {
        url: url.clone(),
        table: table.clone(),
    };
    support::run_children("migrations_race_across_processes", &url, &table, 4);
    let (recorded, rows) = tokio::task::spawn_blocking(move || {
        use diesel::Connection as _;
        let mut conn = MysqlConnection::establish(&url).unwrap();
        let recorded: Vec<support::Count> =
            sql_query("SELECT COUNT(*) AS n FROM __diesel_schema_migrations WHERE version = ?")
                .bind::<diesel::sql_types::Text, _>(format!("{table}/0001"))
                .load(&mut conn)
                .unwrap();
        let rows: Vec<support::Count> = sql_query(format!("SELECT COUNT(*) AS n FROM `{table}`"))
            .load(&mut conn)
            .unwrap();
        (recorded[0].n, rows[0].n)
    })
    .await
    .unwrap();
    assert_eq!((recorded, rows), (1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_table_name_is_refused() {
    let err = Config::from_url(&support::mysql_url())
        .unwrap()
        .table("entries` (x INT); DROP TABLE users; --")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

/// Drops a test table and its migration record, also when the test failed.
struct DropTable {
    url: String,
    table: String,
}

impl Drop for DropTable {
    fn drop(&mut self) {
        let sql = format!(
            "DROP TABLE IF EXISTS `{t}`; \
             DELETE FROM __diesel_schema_migrations WHERE version = '{t}/0001';",
            t = self.table
        );
        if let Err(e) = raw_sql!(MysqlConnection, &self.url, &sql) {
            eprintln!("dropping test table {} failed: {e}", self.table);
        }
    }
}

/// A private MariaDB killed under a live core: calls fail fast as `Unavailable`, opening a core
/// on the closed port fails fast, and the core works again by itself once the server is back.
/// Prints what the failing calls cost.
#[tokio::test(flavor = "multi_thread")]
async fn an_outage_fails_fast_then_the_core_recovers() {
    let server = tokio::task::spawn_blocking(support::servers::PrivateServer::mariadb)
        .await
        .unwrap();
    support::outage::fails_fast_then_recovers(server).await;
}

/// A frozen server (every process stopped, its connections open) fails a call after the
/// caller's deadline, and the core works again once the server runs again.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_server_fails_calls_within_the_deadline() {
    let server = tokio::task::spawn_blocking(support::servers::PrivateServer::mariadb)
        .await
        .unwrap();
    support::outage::frozen_server_fails_within_the_deadline(server).await;
}

/// The pooled connections carry the statement timeout: a statement blocked by another
/// session's row lock is cancelled after it, as `Unavailable`.
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_blocked_by_a_row_lock_is_cancelled_by_the_statement_timeout() {
    support::outage::a_locked_row_is_cancelled_by_the_statement_timeout(
        SqlCore::from_url(&support::mysql_url()).await.unwrap(),
        |select, locked| {
            use diesel::Connection as _;
            use diesel::connection::SimpleConnection as _;
            let mut conn = MysqlConnection::establish(&support::mysql_url()).unwrap();
            conn.batch_execute("BEGIN").unwrap();
            conn.batch_execute(select).unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(3));
            conn.batch_execute("ROLLBACK").unwrap();
        },
    )
    .await;
}
