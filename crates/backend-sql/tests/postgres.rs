//! The SQL backend on PostgreSQL: the shared backend checks, migrations raced by several
//! processes, and a private server restarted under a live pool.

#![cfg(feature = "postgres")]

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cachier_core::{Bytes, Core, ErrorKind, Timestamp};
use cachier_sql::{Config, POSTGRES_MAX_VALUE_BYTES, SqlCore};
use diesel::{PgConnection, RunQueryDsl, sql_query};
use support::{TestNamespace, unique_table};
use tokio::sync::OnceCell;

async fn shared_core() -> SqlCore {
    static CORE: OnceCell<SqlCore> = OnceCell::const_new();
    CORE.get_or_init(|| async {
        SqlCore::from_url(&support::postgres_url())
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
    let config = Config::from_url(&support::postgres_url())
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
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_race_across_processes() {
    if support::child_migrates().await {
        return;
    }
    let url = support::postgres_url();
    let table = unique_table("race");
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

/// A PostgreSQL server of this test's own, in a temporary directory, on a free port.
struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    as_postgres_user: bool,
}

impl PrivatePostgres {
    fn start() -> Result<Self, String> {
        let root = tempfile::Builder::new()
            .prefix("cachier-sql-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("no temporary directory: {e}"))?
            .keep();
        // PostgreSQL refuses to run as root: run it as the `postgres` user then.
        let as_postgres_user = running_as_root();
        if as_postgres_user {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&root)
                .status()
                .map_err(|e| format!("chown failed to start: {e}"))?;
            if !status.success() {
                return Err("could not hand the data directory to the postgres user".into());
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let server = PrivatePostgres {
            dir: root,
            port,
            as_postgres_user,
        };
        server.run(&[
            "initdb",
            "-D",
            &server.data(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ])?;
        server.start_again()?;
        Ok(server)
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, args: &[&str]) -> Result<(), String> {
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).args(args);
            c
        } else {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        };
        let out = command.current_dir(&self.dir).output().map_err(|e| {
            format!(
                "{} could not start ({e}); is PostgreSQL installed?",
                args[0]
            )
        })?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    fn start_again(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").to_string_lossy().into_owned();
        self.run(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-l",
            &log,
            "-o",
            &options,
            "-w",
            "start",
        ])
    }

    fn stop(&self) -> Result<(), String> {
        self.run(&["pg_ctl", "-D", &self.data(), "-m", "fast", "-w", "stop"])
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    // `id -u` avoids an unsafe libc call for one number.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn data_dir_exists(dir: &Path) -> bool {
    dir.join("data").join("PG_VERSION").exists()
}

/// The pool recovers when the server restarts under it: the first operation after the restart
/// succeeds (its dead connection is dropped and it is retried on a live one), while the server
/// is down operations fail as `Unavailable`.
#[tokio::test(flavor = "multi_thread")]
async fn the_pool_recovers_when_the_server_restarts() {
    let server = match tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .unwrap()
    {
        Ok(server) => server,
        Err(why) => panic!(
            "this test needs a private PostgreSQL server (initdb, pg_ctl; as the `postgres` \
             user when run as root) and could not start one: {why}"
        ),
    };
    assert!(data_dir_exists(&server.dir));
    let config = Config::from_url(&server.url())
        .unwrap()
        .pool_size(4)
        .connect_timeout(Duration::from_secs(2));
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

    let server = tokio::task::spawn_blocking(move || server.stop().map(|()| server))
        .await
        .unwrap()
        .unwrap();
    let err = t.core.get(&t.key("restart::f", 0)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());

    let server = tokio::task::spawn_blocking(move || server.start_again().map(|()| server))
        .await
        .unwrap()
        .unwrap();
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
