//! One outage of a private server, end to end: what calls cost while it is down, what opening a
//! core on its closed port costs, and that the pool recovers by itself once it is back.

use std::time::{Duration, Instant};

use cachier_core::conformance::Outage;
use cachier_core::{Bytes, Core, ErrorKind, Timestamp};
use cachier_sql::{Config, SqlCore};

use super::TestNamespace;
use super::servers::PrivateServer;

/// A generous bound on one failing call: the defaults aim at well under a second.
const FAILS_WITHIN: Duration = Duration::from_secs(3);
/// How long the core may take to work again once the server answers.
const RECOVERS_WITHIN: Duration = Duration::from_secs(10);

/// Stops `server` under a core holding a full pool, checks that calls fail fast as
/// `Unavailable` (and prints what they cost), starts it again and checks that the same core
/// works again, with the rows stored before the outage.
pub async fn fails_fast_then_recovers(server: PrivateServer) {
    let label = server.url();
    let t = TestNamespace::new(server.open_core().await, "outage");
    let key = t.key("outage::f", 1);
    t.core
        .set(&key, Bytes::from_static(b"before"), Timestamp::now())
        .await
        .unwrap();
    let entry = t.core.get(&key).await.unwrap().expect("stored");
    assert_eq!(entry.value.as_deref(), Some(&b"before"[..]));

    server.stop().await;

    let started = Instant::now();
    let first = t.core.get(&key).await;
    let first_get = started.elapsed();
    let started = Instant::now();
    let second = t.core.get(&key).await;
    let second_get = started.elapsed();
    let started = Instant::now();
    let func = t.func("outage::f");
    let maintenance = [
        t.core.remove(&key).await.map(drop),
        t.core.clear(&t.namespace, &func).await.map(drop),
        t.core.clear_claims(&t.namespace, &func).await.map(drop),
        t.core
            .delete_stale(&t.namespace, &func, Timestamp::now())
            .await
            .map(drop),
        t.core.clear_namespace(&t.namespace).await.map(drop),
    ];
    let five_maintenance = started.elapsed();
    let started = Instant::now();
    let opened = SqlCore::connect(Config::from_url(&label).unwrap()).await;
    let open = started.elapsed();
    println!(
        "outage costs ({label}): first get after stop {first_get:?}, next get {second_get:?}, \
         5 maintenance calls {five_maintenance:?}, opening a core on the closed port {open:?}"
    );

    for (what, outcome) in [
        ("first get", first.map(drop)),
        ("next get", second.map(drop)),
    ]
    .into_iter()
    .chain(maintenance.into_iter().map(|m| ("a maintenance call", m)))
    {
        let err = outcome.expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{what}: {err}");
        assert!(err.is_retryable(), "{what}: {err}");
    }
    let err = opened.expect_err("opening on a closed port");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(first_get < FAILS_WITHIN, "first get took {first_get:?}");
    assert!(second_get < FAILS_WITHIN, "next get took {second_get:?}");
    assert!(open < FAILS_WITHIN, "opening took {open:?}");

    server.start().await;
    let started = Instant::now();
    let entry = loop {
        match t.core.get(&key).await {
            Ok(entry) => break entry,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                assert!(
                    started.elapsed() < RECOVERS_WITHIN,
                    "the core still fails {:?} after the server came back: {e}",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    println!(
        "outage recovery ({label}): the first get succeeded {:?} after the server answered",
        started.elapsed()
    );
    assert_eq!(
        entry.and_then(|e| e.value).as_deref(),
        Some(&b"before"[..]),
        "the server kept its rows"
    );
    t.core
        .set(&key, Bytes::from_static(b"after"), Timestamp::now())
        .await
        .unwrap();
    let entry = t.core.get(&key).await.unwrap().expect("stored");
    assert_eq!(entry.value.as_deref(), Some(&b"after"[..]));
    drop(t);
    drop(server);
}

/// Freezes `server` (every process stopped, connections open) under a core: a call on a pooled
/// connection fails as `Unavailable` once the statement timeout has passed (the server cannot
/// cancel anything, the caller stops waiting), and the core works again once the server runs
/// again.
pub async fn frozen_server_fails_within_the_deadline(server: PrivateServer) {
    let label = server.url();
    let t = TestNamespace::new(server.open_core().await, "frozen");
    let key = t.key("frozen::f", 1);
    t.core
        .set(&key, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .unwrap();

    server.freeze();
    let started = Instant::now();
    let outcome = t.core.get(&key).await;
    let took = started.elapsed();
    server.thaw();
    println!("a get on a frozen server ({label}) failed after {took:?}");
    let err = outcome.expect_err("a get on a frozen server");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        took >= Config::DEFAULT_STATEMENT_TIMEOUT && took < FAILS_WITHIN,
        "a get on a frozen server took {took:?}"
    );

    let started = Instant::now();
    let entry = loop {
        match t.core.get(&key).await {
            Ok(entry) => break entry,
            Err(e) => assert!(
                started.elapsed() < RECOVERS_WITHIN,
                "still failing {:?} after the server resumed: {e}",
                started.elapsed()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry.and_then(|e| e.value).as_deref(), Some(&b"v"[..]));
    drop(t);
    drop(server);
}

/// A statement blocked by another session's row lock is cancelled by the server once the
/// statement timeout has passed, and reported as `Unavailable` with the server's reason: the
/// pooled connections carry the timeout. `lock` runs `SELECT ... FOR UPDATE` of the key's row
/// in a transaction on a connection of its own, says so, and holds the lock for three seconds.
pub async fn a_locked_row_is_cancelled_by_the_statement_timeout(
    core: SqlCore,
    lock: fn(&str, std::sync::mpsc::Sender<()>),
) {
    let t = TestNamespace::new(core, "locked");
    let key = t.key("locked::f", 1);
    t.core
        .set(&key, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .unwrap();
    let select = format!(
        "SELECT stored_at FROM cachier_entries WHERE namespace = '{}' AND function_id = '{}' \
         AND arg_hash = '{}' FOR UPDATE",
        key.namespace,
        key.func,
        key.hash.to_hex()
    );
    let (locked, is_locked) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || lock(&select, locked));
    is_locked
        .recv_timeout(Duration::from_secs(10))
        .expect("the other session took the row lock");

    let started = Instant::now();
    let outcome = t
        .core
        .set(&key, Bytes::from_static(b"w"), Timestamp::now())
        .await;
    let took = started.elapsed();
    let err = outcome.expect_err("a set blocked by a row lock");
    println!("a set blocked by a row lock failed after {took:?}: {err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        took >= Config::DEFAULT_STATEMENT_TIMEOUT && took < FAILS_WITHIN,
        "took {took:?}"
    );
    let reason = std::error::Error::source(&err).map(|s| s.to_string().to_lowercase());
    assert!(
        reason.as_deref().is_some_and(|r| {
            r.contains("statement timeout")
                || r.contains("max_statement_time")
                || r.contains("interrupted")
        }),
        "the server cancelled the statement: {err}"
    );
    holder.join().expect("the lock holder");
    let entry = t.core.get(&key).await.unwrap().expect("stored");
    assert_eq!(entry.value.as_deref(), Some(&b"v"[..]));
}
