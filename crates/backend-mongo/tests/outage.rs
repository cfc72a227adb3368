//! The server stopping mid-run: calls fail fast and compute and log while it is gone, and the
//! cache works again once it is back. Runs against a private nx-27017 started by the test on a
//! free port (`common::server`), never the shared server.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cachier_core::conformance::Outage;
use cachier_core::{Cachier, Claim, Core, ErrorKind, FuncId, Key, Timestamp};
use cachier_mongo::MongoCore;
use common::TestNamespace;
use common::server::{OutageServer, PrivateServer};

/// Collects log lines, so the test can check that outages are logged.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// A current-thread runtime keeps every task on this thread, where the log capture is installed.
#[tokio::test]
async fn calls_compute_and_log_while_the_server_is_down_then_recover() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let mut server = PrivateServer::start_on_free_port();
    let config = common::config_for(&server.url())
        .server_selection_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500));
    let mongo = Arc::new(MongoCore::connect(config.clone()).await.unwrap());
    mongo.ping().await.expect("the private server answers");
    let ns = TestNamespace::on("outage", config);
    let core: Arc<dyn Core> = mongo.clone();
    let cache = Cachier::builder(core.clone())
        .with_namespace(ns.namespace.clone())
        .build();
    let f = cache.function(FuncId::new("cachier_mongo::tests::outage").unwrap());
    let computations = Arc::new(AtomicU32::new(0));
    let compute = |result: u64| {
        let computations = computations.clone();
        move || async move {
            computations.fetch_add(1, Ordering::SeqCst);
            result
        }
    };

    assert_eq!(f.call(&7u64, compute(49)).await.unwrap(), 49);
    assert_eq!(f.call(&7u64, compute(0)).await.unwrap(), 49, "a hit");
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    assert_eq!(f.stats().backend_errors, 0);

    server.stop();
    let started = Instant::now();
    assert_eq!(
        f.call(&7u64, compute(49)).await.unwrap(),
        49,
        "computed without the cache"
    );
    assert_eq!(f.call(&8u64, compute(64)).await.unwrap(), 64);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "calls during the outage took {:?}",
        started.elapsed()
    );
    assert_eq!(computations.load(Ordering::SeqCst), 3);
    // The first call met the error; the second skipped the backend, known to be unavailable.
    let stats = f.stats();
    assert_eq!((stats.backend_errors, stats.bypassed), (1, 1), "{stats:?}");
    assert!(cache.is_backend_unavailable());
    let key = f.key(&7u64).unwrap();
    let err = core.get(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    let logged = logs.text();
    assert!(
        logged.contains("backend=\"mongo\"") || logged.contains("backend=mongo"),
        "the outage is logged with the backend's name:\n{logged}"
    );

    // Back, on the same port and empty (an in-memory server): the cache works again.
    server.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while mongo.ping().await.is_err() || cache.is_backend_unavailable() {
        assert!(Instant::now() < deadline, "no recovery within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let errors_before = f.stats().backend_errors;
    assert_eq!(f.call(&7u64, compute(49)).await.unwrap(), 49);
    assert_eq!(
        f.call(&7u64, compute(0)).await.unwrap(),
        49,
        "a hit after recovery"
    );
    assert_eq!(computations.load(Ordering::SeqCst), 4);
    assert_eq!(
        f.stats().backend_errors,
        errors_before,
        "no errors after recovery"
    );

    // The restarted server lost the unique index; the backend created it again.
    let cold = Key::new(
        ns.namespace.clone(),
        key.func.clone(),
        cachier_core::ArgHash::of(&9u8).unwrap(),
    );
    assert!(matches!(
        core.claim(&cold, Duration::from_secs(30)).await.unwrap(),
        Claim::Acquired(_)
    ));
    assert!(matches!(
        core.claim(&cold, Duration::from_secs(30)).await.unwrap(),
        Claim::Held { .. }
    ));
    core.set(&cold, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .unwrap();
    let mut indexes = mongo
        .collection(&ns.namespace)
        .list_index_names()
        .await
        .unwrap();
    indexes.retain(|name| name != "_id_");
    assert_eq!(
        indexes.len(),
        2,
        "the (func, key) and TTL indexes are back: {indexes:?}"
    );
    assert!(
        indexes.iter().any(|name| name.ends_with("func_key")),
        "the (func, key) index is back: {indexes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_answering_times_out_as_unavailable() {
    let server = PrivateServer::start_on_free_port();
    let config = common::config_for(&server.url())
        .operation_timeout(Duration::from_millis(800))
        .server_selection_timeout(Duration::from_millis(500));
    let core = MongoCore::connect(config.clone()).await.unwrap();
    let ns = TestNamespace::on("stalled", config);
    let key = Key::new(
        ns.namespace.clone(),
        FuncId::new("cachier_mongo::tests::stalled").unwrap(),
        cachier_core::ArgHash::of(&1u8).unwrap(),
    );
    core.set(&key, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .unwrap();

    // Frozen, the server keeps its connections open but answers nothing.
    server.signal("STOP");
    let started = Instant::now();
    let outcome = core.get(&key).await;
    let took = started.elapsed();
    server.signal("CONT");
    let err = outcome.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(took < Duration::from_secs(5), "a stalled get took {took:?}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match core.get(&key).await {
            Ok(entry) => {
                assert_eq!(entry.unwrap().value.as_deref(), Some(&b"v"[..]));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no recovery within 30 s: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The outage hooks of the conformance suite, end to end: a core with the default settings on
/// the private server fails fast as `Unavailable` once it is stopped, and works again by itself
/// once it is started. Prints what the failing calls cost, and what opening a core on the
/// closed port costs (nothing: the backend connects lazily; its first call pays).
#[tokio::test(flavor = "multi_thread")]
async fn an_outage_fails_fast_then_the_core_recovers() {
    common::init_logging();
    let server = OutageServer::start();
    let core = server.core().await;
    let ns = TestNamespace::on("outage_hooks", server.config());
    let key = Key::new(
        ns.namespace.clone(),
        FuncId::new("cachier_mongo::tests::outage_hooks").unwrap(),
        cachier_core::ArgHash::of(&1u8).unwrap(),
    );
    core.set(&key, Bytes::from_static(b"before"), Timestamp::now())
        .await
        .unwrap();
    assert!(core.get(&key).await.unwrap().is_some());

    server.stop().await;
    let started = Instant::now();
    let first = core.get(&key).await;
    let first_get = started.elapsed();
    let started = Instant::now();
    let second = core.get(&key).await;
    let second_get = started.elapsed();
    let started = Instant::now();
    let maintenance = [
        core.remove(&key).await.map(drop),
        core.clear(&ns.namespace, &key.func).await.map(drop),
        core.clear_claims(&ns.namespace, &key.func).await.map(drop),
        core.delete_stale(&ns.namespace, &key.func, Timestamp::now())
            .await
            .map(drop),
        core.clear_namespace(&ns.namespace).await.map(drop),
    ];
    let five_maintenance = started.elapsed();
    let started = Instant::now();
    let opened = MongoCore::connect(server.config()).await.unwrap();
    let open = started.elapsed();
    let started = Instant::now();
    let fresh = opened.get(&key).await;
    let fresh_get = started.elapsed();
    println!(
        "outage costs ({}): first get after stop {first_get:?}, next get {second_get:?}, \
         5 maintenance calls {five_maintenance:?}, opening a core on the closed port {open:?} \
         (lazy), its first get {fresh_get:?}",
        server.url()
    );
    for (what, outcome) in [
        ("first get", first.map(drop)),
        ("next get", second.map(drop)),
        ("a fresh core's get", fresh.map(drop)),
    ]
    .into_iter()
    .chain(maintenance.into_iter().map(|m| ("a maintenance call", m)))
    {
        let err = outcome.expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{what}: {err}");
        assert!(err.is_retryable(), "{what}: {err}");
    }
    for (what, took) in [
        ("first get", first_get),
        ("next get", second_get),
        ("a fresh core's get", fresh_get),
    ] {
        assert!(took < Duration::from_secs(3), "{what} took {took:?}");
    }

    server.start().await;
    let started = Instant::now();
    loop {
        match core.get(&key).await {
            // The store is in memory: the restarted server is empty.
            Ok(entry) => break assert_eq!(entry, None),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "still failing {:?} after the server came back: {e}",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    println!(
        "outage recovery ({}): the first get succeeded {:?} after the server answered",
        server.url(),
        started.elapsed()
    );
    core.set(&key, Bytes::from_static(b"after"), Timestamp::now())
        .await
        .unwrap();
    let entry = core.get(&key).await.unwrap().unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"after"[..]));
}
