//! Helpers shared by the dialect test files: one core per process and dialect, namespaces that
//! clean up after themselves, the backend checks every dialect runs (`backend_checks!`), and
//! private servers to stop and start (`servers`, `outage`).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use cachier_core::{ArgHash, Core, FuncId, Key, Namespace};
use cachier_sql::SqlCore;

pub mod outage;
pub mod servers;

/// The PostgreSQL server the tests use.
pub fn postgres_url() -> String {
    std::env::var("CACHIER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The MySQL/MariaDB server the tests use.
pub fn mysql_url() -> String {
    std::env::var("CACHIER_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// Settings for the shared test servers: the crate's defaults, except statement and connect
/// timeouts long enough for values near the 16 MiB limit, and for opening a pool's TLS
/// connections, while the whole test matrix loads the machine's two cores (a second is plenty
/// on an idle machine, not under that load). Tests of the default timeouts use private servers
/// or cores of their own.
pub fn shared_config(url: &str) -> cachier_sql::Config {
    cachier_sql::Config::from_url(url)
        .expect("the test URL parses")
        .statement_timeout(std::time::Duration::from_secs(10))
        .connect_timeout(std::time::Duration::from_secs(10))
}

/// The SQLite file every test process of this crate shares.
pub fn sqlite_url() -> String {
    format!(
        "sqlite://{}/cachier-sql-tests/shared.db",
        env!("CARGO_TARGET_TMPDIR")
    )
}

/// A name unique to this process and call: `{prefix}_{pid}_{counter}_{random}`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let token = cachier_core::ClaimToken::generate();
    let random = &token.as_str()[..8];
    format!("{prefix}_{}_{n}_{random}", std::process::id())
}

/// A namespace of its own for one test; dropping it clears the namespace, also when the test
/// panicked.
pub struct TestNamespace {
    pub core: SqlCore,
    pub namespace: Namespace,
}

impl TestNamespace {
    pub fn new(core: SqlCore, test: &str) -> Self {
        let namespace = Namespace::new(
            unique(&format!("t_{test}"))
                .chars()
                .take(64)
                .collect::<String>(),
        )
        .expect("test namespaces are valid");
        TestNamespace { core, namespace }
    }

    pub fn func(&self, name: &str) -> FuncId {
        FuncId::new(name).expect("test function ids are valid")
    }

    pub fn key(&self, func: &str, arg: u64) -> Key {
        Key::new(
            self.namespace.clone(),
            self.func(func),
            ArgHash::of(&arg).expect("u64 hashes"),
        )
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let core = self.core.clone();
        let namespace = self.namespace.clone();
        // Drop may run inside a runtime; clean up on a thread with a runtime of its own.
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(core.clear_namespace(&namespace))
                .map_err(|e| e.to_string())
        })
        .join();
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("cleaning up namespace {} failed: {e}", self.namespace),
            Err(_) => eprintln!("cleaning up namespace {} panicked", self.namespace),
        }
    }
}

/// Expands into the backend checks, each a `#[tokio::test]` that gets its core from `$core`
/// (an async fn returning `SqlCore`).
#[macro_export]
macro_rules! backend_checks {
    ($core:path) => {
        mod checks {
            use std::sync::Arc;
            use std::time::Duration;

            use cachier_core::{Bytes, Claim, ClaimToken, Core, ErrorKind, Timestamp};

            use super::support::TestNamespace;

            async fn scope(test: &str) -> TestNamespace {
                TestNamespace::new($core().await, test)
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn miss_then_round_trip() {
                let t = scope("round_trip").await;
                let key = t.key("app::f", 1);
                assert_eq!(t.core.get(&key).await.unwrap(), None);
                let at = Timestamp::now();
                t.core
                    .set(&key, Bytes::from_static(b"v1"), at)
                    .await
                    .unwrap();
                let entry = t.core.get(&key).await.unwrap().expect("stored");
                assert_eq!(entry.value.as_deref(), Some(&b"v1"[..]));
                assert_eq!(entry.stored_at, at);
                assert_eq!(entry.claim_until, None);
                t.core
                    .set(
                        &key,
                        Bytes::from_static(b"v2"),
                        at.add(Duration::from_millis(5)),
                    )
                    .await
                    .unwrap();
                let entry = t.core.get(&key).await.unwrap().expect("stored");
                assert_eq!(entry.value.as_deref(), Some(&b"v2"[..]));
                assert_eq!(entry.stored_at, at.add(Duration::from_millis(5)));
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn binary_and_empty_values_survive() {
                let t = scope("binary").await;
                let every_byte: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
                let key = t.key("app::bytes", 1);
                t.core
                    .set(&key, Bytes::from(every_byte.clone()), Timestamp::now())
                    .await
                    .unwrap();
                let got = t
                    .core
                    .get(&key)
                    .await
                    .unwrap()
                    .and_then(|e| e.value)
                    .expect("value");
                assert_eq!(&got[..], &every_byte[..]);
                let empty = t.key("app::bytes", 2);
                t.core
                    .set(&empty, Bytes::new(), Timestamp::now())
                    .await
                    .unwrap();
                let got = t
                    .core
                    .get(&empty)
                    .await
                    .unwrap()
                    .expect("empty value is a value");
                assert_eq!(got.value.as_deref(), Some(&b""[..]));
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn eight_mib_value_round_trips() {
                let t = scope("large").await;
                let size = 8 * 1024 * 1024;
                assert!(t.core.max_value_bytes() >= size as u64);
                let value: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
                let key = t.key("app::large", 1);
                t.core
                    .set(&key, Bytes::from(value.clone()), Timestamp::now())
                    .await
                    .unwrap();
                let got = t
                    .core
                    .get(&key)
                    .await
                    .unwrap()
                    .and_then(|e| e.value)
                    .expect("value");
                assert_eq!(got.len(), size);
                assert!(got[..] == value[..]);
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn one_claim_wins_a_race_on_a_cold_key() {
                let t = scope("race").await;
                let key = t.key("app::race", 1);
                let core: Arc<dyn Core> = Arc::new(t.core.clone());
                let tasks: Vec<_> = (0..16)
                    .map(|_| {
                        let core = Arc::clone(&core);
                        let key = key.clone();
                        tokio::spawn(async move { core.claim(&key, Duration::from_secs(30)).await })
                    })
                    .collect();
                let mut acquired = 0;
                for task in tasks {
                    match task.await.unwrap().unwrap() {
                        Claim::Acquired(_) => acquired += 1,
                        Claim::Held { until } => {
                            assert!(until > Timestamp::now().add(Duration::from_secs(20)))
                        }
                    }
                }
                assert_eq!(acquired, 1);
                let entry = t.core.get(&key).await.unwrap().expect("claim-only entry");
                assert_eq!(entry.value, None);
                assert!(entry.is_claimed());
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn an_expired_claim_can_be_taken_and_the_old_token_is_powerless() {
                let t = scope("lease").await;
                let key = t.key("app::lease", 1);
                let Claim::Acquired(old) = t
                    .core
                    .claim(&key, Duration::from_millis(1500))
                    .await
                    .unwrap()
                else {
                    panic!("a cold key is claimable");
                };
                assert!(matches!(
                    t.core.claim(&key, Duration::from_secs(5)).await.unwrap(),
                    Claim::Held { .. }
                ));
                // Long enough that the claim right after it is still refused on a loaded machine.
                tokio::time::sleep(Duration::from_millis(1700)).await;
                assert_eq!(
                    t.core.get(&key).await.unwrap(),
                    None,
                    "an expired claim alone is no entry"
                );
                let Claim::Acquired(new) =
                    t.core.claim(&key, Duration::from_secs(5)).await.unwrap()
                else {
                    panic!("an expired claim is claimable");
                };
                assert!(
                    !t.core
                        .renew(&key, &old, Duration::from_secs(60))
                        .await
                        .unwrap()
                );
                t.core.release(&key, &old).await.unwrap();
                assert!(
                    t.core
                        .get(&key)
                        .await
                        .unwrap()
                        .expect("still claimed")
                        .is_claimed()
                );
                assert!(
                    t.core
                        .renew(&key, &new, Duration::from_secs(60))
                        .await
                        .unwrap()
                );
                t.core.release(&key, &new).await.unwrap();
                assert_eq!(t.core.get(&key).await.unwrap(), None);
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn only_the_holder_renews_and_releases() {
                let t = scope("holder").await;
                let key = t.key("app::holder", 1);
                t.core
                    .set(&key, Bytes::from_static(b"old"), Timestamp::now())
                    .await
                    .unwrap();
                let Claim::Acquired(token) =
                    t.core.claim(&key, Duration::from_secs(2)).await.unwrap()
                else {
                    panic!("claimable");
                };
                let stranger = ClaimToken::generate();
                assert!(
                    !t.core
                        .renew(&key, &stranger, Duration::from_secs(60))
                        .await
                        .unwrap()
                );
                t.core.release(&key, &stranger).await.unwrap();
                let entry = t.core.get(&key).await.unwrap().unwrap();
                assert_eq!(
                    entry.value.as_deref(),
                    Some(&b"old"[..]),
                    "the value stays readable"
                );
                let until = entry.claim_until.expect("claim still live");
                assert!(until <= Timestamp::now().add(Duration::from_secs(2)));
                // Renewing twice in the same millisecond must still say yes.
                assert!(
                    t.core
                        .renew(&key, &token, Duration::from_secs(60))
                        .await
                        .unwrap()
                );
                assert!(
                    t.core
                        .renew(&key, &token, Duration::from_secs(60))
                        .await
                        .unwrap()
                );
                let until = t
                    .core
                    .get(&key)
                    .await
                    .unwrap()
                    .unwrap()
                    .claim_until
                    .unwrap();
                assert!(until > Timestamp::now().add(Duration::from_secs(50)));
                t.core.release(&key, &token).await.unwrap();
                let entry = t.core.get(&key).await.unwrap().unwrap();
                assert_eq!(entry.claim_until, None);
                assert_eq!(entry.value.as_deref(), Some(&b"old"[..]));
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn set_ends_the_claim() {
                let t = scope("set_ends").await;
                let key = t.key("app::set_ends", 1);
                let Claim::Acquired(token) =
                    t.core.claim(&key, Duration::from_secs(60)).await.unwrap()
                else {
                    panic!("claimable");
                };
                t.core
                    .set(&key, Bytes::from_static(b"v"), Timestamp::now())
                    .await
                    .unwrap();
                let entry = t.core.get(&key).await.unwrap().unwrap();
                assert_eq!(entry.claim_until, None);
                assert!(
                    !t.core
                        .renew(&key, &token, Duration::from_secs(60))
                        .await
                        .unwrap()
                );
                assert!(matches!(
                    t.core.claim(&key, Duration::from_secs(60)).await.unwrap(),
                    Claim::Acquired(_)
                ));
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn remove_reports_whether_a_value_existed() {
                let t = scope("remove").await;
                let key = t.key("app::remove", 1);
                assert!(!t.core.remove(&key).await.unwrap());
                let Claim::Acquired(_) = t.core.claim(&key, Duration::from_secs(60)).await.unwrap()
                else {
                    panic!("claimable");
                };
                assert!(
                    !t.core.remove(&key).await.unwrap(),
                    "a claim alone is no value"
                );
                assert_eq!(
                    t.core.get(&key).await.unwrap(),
                    None,
                    "remove ends the claim too"
                );
                t.core
                    .set(&key, Bytes::from_static(b"v"), Timestamp::now())
                    .await
                    .unwrap();
                assert!(t.core.remove(&key).await.unwrap());
                assert_eq!(t.core.get(&key).await.unwrap(), None);
            }

            /// Function ids with SQL metacharacters, quotes and non-ASCII text are stored and
            /// scoped exactly: no `LIKE`, no case folding, no trailing-space padding.
            #[tokio::test(flavor = "multi_thread")]
            async fn clear_touches_exactly_one_function() {
                let t = scope("clear").await;
                let ids = [
                    "foo",
                    "foo_bar",
                    "Foo",
                    "foo ",
                    "fo_",
                    "fo%",
                    "it's \"quoted\"; DROP TABLE x; --",
                    "naïve::函数::😀",
                    "back\\slash",
                ];
                for (i, id) in ids.iter().enumerate() {
                    for arg in 0..2u64 {
                        let value = format!("{id}/{arg}");
                        t.core
                            .set(&t.key(id, arg), Bytes::from(value), Timestamp::now())
                            .await
                            .unwrap();
                    }
                    assert_eq!(
                        t.core
                            .get(&t.key(id, 0))
                            .await
                            .unwrap()
                            .unwrap()
                            .value
                            .as_deref(),
                        Some(format!("{id}/0").as_bytes()),
                        "function {i} {id:?}"
                    );
                }
                for (i, id) in ids.iter().enumerate() {
                    assert_eq!(
                        t.core.clear(&t.namespace, &t.func(id)).await.unwrap(),
                        2,
                        "clearing {id:?}"
                    );
                    for later in &ids[i + 1..] {
                        assert!(
                            t.core.get(&t.key(later, 1)).await.unwrap().is_some(),
                            "clearing {id:?} touched {later:?}"
                        );
                    }
                    assert_eq!(t.core.get(&t.key(id, 1)).await.unwrap(), None);
                }
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn namespaces_are_isolated() {
                let a = scope("iso_a").await;
                let b = scope("iso_b").await;
                a.core
                    .set(&a.key("f", 1), Bytes::from_static(b"a"), Timestamp::now())
                    .await
                    .unwrap();
                b.core
                    .set(&b.key("f", 1), Bytes::from_static(b"b"), Timestamp::now())
                    .await
                    .unwrap();
                assert_eq!(a.core.clear_namespace(&a.namespace).await.unwrap(), 1);
                assert_eq!(a.core.get(&a.key("f", 1)).await.unwrap(), None);
                let other = b.core.get(&b.key("f", 1)).await.unwrap().unwrap();
                assert_eq!(other.value.as_deref(), Some(&b"b"[..]));
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn clear_claims_keeps_values() {
                let t = scope("clear_claims").await;
                let with_value = t.key("app::cc", 1);
                let claim_only = t.key("app::cc", 2);
                let sibling = t.key("app::cc2", 1);
                t.core
                    .set(&with_value, Bytes::from_static(b"v"), Timestamp::now())
                    .await
                    .unwrap();
                for key in [&with_value, &claim_only, &sibling] {
                    assert!(matches!(
                        t.core.claim(key, Duration::from_secs(60)).await.unwrap(),
                        Claim::Acquired(_)
                    ));
                }
                assert_eq!(
                    t.core
                        .clear_claims(&t.namespace, &t.func("app::cc"))
                        .await
                        .unwrap(),
                    2
                );
                let entry = t.core.get(&with_value).await.unwrap().unwrap();
                assert_eq!(entry.value.as_deref(), Some(&b"v"[..]));
                assert_eq!(entry.claim_until, None);
                assert_eq!(t.core.get(&claim_only).await.unwrap(), None);
                assert!(t.core.get(&sibling).await.unwrap().unwrap().is_claimed());
                assert_eq!(
                    t.core
                        .clear_claims(&t.namespace, &t.func("app::cc"))
                        .await
                        .unwrap(),
                    0
                );
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn delete_stale_removes_old_values_only() {
                let t = scope("stale").await;
                let now = Timestamp::now();
                let old = t.key("app::st", 1);
                let old_claimed = t.key("app::st", 2);
                let fresh = t.key("app::st", 3);
                let sibling_old = t.key("app::st_other", 1);
                let hour = Duration::from_secs(3600);
                t.core
                    .set(&old, Bytes::from_static(b"o"), now.sub(hour))
                    .await
                    .unwrap();
                t.core
                    .set(&old_claimed, Bytes::from_static(b"o"), now.sub(hour))
                    .await
                    .unwrap();
                t.core
                    .set(&fresh, Bytes::from_static(b"f"), now)
                    .await
                    .unwrap();
                t.core
                    .set(&sibling_old, Bytes::from_static(b"o"), now.sub(hour))
                    .await
                    .unwrap();
                let Claim::Acquired(_) = t
                    .core
                    .claim(&old_claimed, Duration::from_secs(60))
                    .await
                    .unwrap()
                else {
                    panic!("claimable");
                };
                let cutoff = now.sub(Duration::from_secs(60));
                assert_eq!(
                    t.core
                        .delete_stale(&t.namespace, &t.func("app::st"), cutoff)
                        .await
                        .unwrap(),
                    2
                );
                assert_eq!(t.core.get(&old).await.unwrap(), None);
                let claimed = t
                    .core
                    .get(&old_claimed)
                    .await
                    .unwrap()
                    .expect("the claim stays");
                assert_eq!(claimed.value, None);
                assert!(claimed.is_claimed());
                assert!(t.core.get(&fresh).await.unwrap().is_some());
                assert!(t.core.get(&sibling_old).await.unwrap().is_some());
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn values_above_the_limit_are_refused() {
                let t = scope("limit").await;
                let limit = t.core.max_value_bytes();
                assert_eq!(t.core.capabilities().max_value_bytes, Some(limit));
                // The refusal happens before anything is sent, so an oversized buffer is cheap.
                let key = t.key("app::limit", 1);
                let over = Bytes::from(vec![0u8; usize::try_from(limit + 1).unwrap()]);
                let err = t.core.set(&key, over, Timestamp::now()).await.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::TooLarge);
                assert_eq!(err.operation(), Some("set"));
                assert_eq!(t.core.get(&key).await.unwrap(), None);
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn wait_returns_once_the_claim_ends() {
                let t = scope("wait").await;
                let key = t.key("app::wait", 1);
                let Claim::Acquired(_) = t.core.claim(&key, Duration::from_secs(60)).await.unwrap()
                else {
                    panic!("claimable");
                };
                let timed_out = t
                    .core
                    .wait(&key, Duration::from_millis(100))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(timed_out.is_claimed());
                let setter = t.core.clone();
                let set_key = key.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    setter
                        .set(&set_key, Bytes::from_static(b"done"), Timestamp::now())
                        .await
                        .unwrap();
                });
                let entry = t
                    .core
                    .wait(&key, Duration::from_secs(10))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(entry.value.as_deref(), Some(&b"done"[..]));
            }
        }
    };
}

/// Set in a child process started by [`run_children`]: the URL and table it must migrate.
pub const CHILD_URL: &str = "CACHIER_SQL_CHILD_URL";
/// See [`CHILD_URL`].
pub const CHILD_TABLE: &str = "CACHIER_SQL_CHILD_TABLE";

/// The child side of a cross-process test: connects to the given URL and table (running the
/// migrations) and stores and reads one value. Returns `false` in the parent.
pub async fn child_migrates() -> bool {
    let (Ok(url), Ok(table)) = (std::env::var(CHILD_URL), std::env::var(CHILD_TABLE)) else {
        return false;
    };
    let config = shared_config(&url)
        .table(&table)
        .expect("the parent passes a valid table");
    let core = SqlCore::connect(config)
        .await
        .expect("migrating in a child process");
    let t = TestNamespace::new(core, "child");
    let key = t.key("child::f", u64::from(std::process::id()));
    t.core
        .set(
            &key,
            cachier_core::Bytes::from_static(b"x"),
            cachier_core::Timestamp::now(),
        )
        .await
        .expect("set after migrating");
    assert!(t.core.get(&key).await.expect("get").is_some());
    true
}

/// Starts `n` copies of this test binary at once, each running only `test` with `url` and
/// `table` in its environment, and asserts that every one succeeded.
pub fn run_children(test: &str, url: &str, table: &str, n: usize) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let children: Vec<_> = (0..n)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([test, "--exact", "--test-threads=1", "--nocapture"])
                .env(CHILD_URL, url)
                .env(CHILD_TABLE, table)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("starting a child test process")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("waiting for a child");
        assert!(
            out.status.success(),
            "a child process failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "the child ran no test: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// A table name unique to this run (lowercase, within the length limit). Tests name their tables
/// `t_...` with their pid, like namespaces, so a table an interrupted run leaves behind is found
/// (and removed) by xtask's leftover check.
pub fn unique_table(prefix: &str) -> String {
    let name = unique(prefix).to_ascii_lowercase();
    name.chars().take(cachier_sql::MAX_TABLE_NAME_LEN).collect()
}

/// Runs SQL on a plain diesel connection, for setup and cleanup outside the core.
#[macro_export]
macro_rules! raw_sql {
    ($conn_ty:ty, $url:expr, $sql:expr) => {{
        use diesel::Connection as _;
        use diesel::connection::SimpleConnection as _;
        <$conn_ty>::establish($url)
            .map_err(|e| e.to_string())
            .and_then(|mut c| c.batch_execute($sql).map_err(|e| e.to_string()))
    }};
}

/// Counts rows with a plain diesel connection: `$sql` must select one BIGINT column named `n`.
#[derive(diesel::QueryableByName)]
pub struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub n: i64,
}
