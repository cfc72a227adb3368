//! The SQL backend on SQLite: the shared backend checks plus SQLite's own.

#![cfg(feature = "sqlite")]

mod support;

use std::time::Duration;

use cachier_core::{Bytes, Core, ErrorKind, Timestamp};
use cachier_sql::{Config, SQLITE_MAX_VALUE_BYTES, SqlCore};
use diesel::{RunQueryDsl, SqliteConnection, sql_query};
use support::{TestNamespace, unique_table};
use tokio::sync::OnceCell;

async fn shared_core() -> SqlCore {
    static CORE: OnceCell<SqlCore> = OnceCell::const_new();
    CORE.get_or_init(|| async {
        SqlCore::from_url(&support::sqlite_url())
            .await
            .expect("opening the shared test SQLite file")
    })
    .await
    .clone()
}

backend_checks!(crate::shared_core);

#[tokio::test(flavor = "multi_thread")]
async fn memory_database_is_single_process_and_keeps_its_data() {
    let core = SqlCore::from_url("sqlite::memory:").await.unwrap();
    let caps = core.capabilities();
    assert!(!caps.cross_process);
    assert!(!caps.persistent);
    let t = TestNamespace::new(core, "memory");
    let key = t.key("mem::f", 1);
    t.core
        .set(&key, Bytes::from_static(b"m"), Timestamp::now())
        .await
        .unwrap();
    // Many operations at once share the single connection and see the same database.
    let reads: Vec<_> = (0..8)
        .map(|_| {
            let core = t.core.clone();
            let key = key.clone();
            tokio::spawn(async move { core.get(&key).await })
        })
        .collect();
    for read in reads {
        assert!(read.await.unwrap().unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn file_database_is_cross_process() {
    let caps = shared_core().await.capabilities();
    assert!(caps.cross_process);
    assert!(caps.persistent);
    assert_eq!(caps.max_value_bytes, Some(SQLITE_MAX_VALUE_BYTES));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_limit_is_exact() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = Config::sqlite_file(dir.path().join("limit.db"))
        .unwrap()
        .max_value_bytes(1 << 20);
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
}

/// SQLite really stores a value of exactly [`SQLITE_MAX_VALUE_BYTES`] (about 1 GB).
#[tokio::test(flavor = "multi_thread")]
async fn a_value_at_the_sqlite_limit_is_stored() {
    // In memory: the point is SQLite's own limit, not the disk's speed at writing a gigabyte.
    let t = TestNamespace::new(SqlCore::from_url("sqlite::memory:").await.unwrap(), "huge");
    let key = t.key("huge::f", 1);
    let size = usize::try_from(SQLITE_MAX_VALUE_BYTES).unwrap();
    let mut value = vec![0u8; size];
    value[0] = 1;
    value[size - 1] = 2;
    t.core
        .set(&key, Bytes::from(value), Timestamp::now())
        .await
        .unwrap();
    let got = t.core.get(&key).await.unwrap().unwrap().value.unwrap();
    assert_eq!(got.len(), size);
    assert_eq!((got[0], got[size - 1]), (1, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_table_name_is_refused() {
    for name in [
        "x; DROP TABLE cachier_entries",
        "\"x\"",
        "X",
        "sqlite_master",
    ] {
        let err = Config::from_url("sqlite::memory:")
            .unwrap()
            .table(name)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{name:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_race_across_processes() {
    if support::child_migrates().await {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("race.db");
    let url = format!("sqlite://{}", path.display());
    let table = unique_table("t_race");
    support::run_children("migrations_race_across_processes", &url, &table, 4);
    let path_text = path.to_string_lossy().into_owned();
    let count = tokio::task::spawn_blocking(move || {
        use diesel::Connection as _;
        let mut conn = SqliteConnection::establish(&path_text).unwrap();
        let rows: Vec<support::Count> = sql_query(format!(
            "SELECT COUNT(*) AS n FROM __diesel_schema_migrations WHERE version = '{table}/0001'"
        ))
        .load(&mut conn)
        .unwrap();
        let values: Vec<support::Count> =
            sql_query(format!("SELECT COUNT(*) AS n FROM \"{table}\""))
                .load(&mut conn)
                .unwrap();
        (rows[0].n, values[0].n)
    })
    .await
    .unwrap();
    assert_eq!(
        count,
        (1, 0),
        "one recorded migration; the children cleaned up their rows"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_wait_for_each_other() {
    let t = TestNamespace::new(shared_core().await, "writers");
    let tasks: Vec<_> = (0..32u64)
        .map(|i| {
            let core = t.core.clone();
            let key = t.key("writers::f", i);
            tokio::spawn(async move {
                core.set(&key, Bytes::from(vec![i as u8; 1024]), Timestamp::now())
                    .await?;
                core.claim(&key, Duration::from_secs(5)).await
            })
        })
        .collect();
    for task in tasks {
        task.await
            .unwrap()
            .expect("writers take turns instead of failing with SQLITE_BUSY");
    }
    assert_eq!(
        t.core
            .clear(&t.namespace, &t.func("writers::f"))
            .await
            .unwrap(),
        32
    );
}
