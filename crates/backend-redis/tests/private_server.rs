//! Tests that kill, stop, restart or count the commands of a server: each runs against its own
//! throwaway `redis-server` (free port, temporary directory, no persistence), never the shared
//! one.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachier_core::conformance::Outage;
use cachier_core::{Bytes, Cachier, Claim, Core, ErrorKind, Namespace, Timestamp};
use cachier_redis::{Config, RedisCore};
use common::{OutageServer, PrivateServer, admin, free_port, func_id, unique_namespace};

fn key(ns: &Namespace, arg: u64) -> cachier_core::Key {
    cachier_core::Key::for_args(ns, &func_id("f"), &arg).expect("a u64 hashes")
}

/// Retries `get` until it succeeds or `within` passes; returns how long it took.
async fn get_succeeds_within(
    core: &RedisCore,
    key: &cachier_core::Key,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        match core.get(key).await {
            Ok(_) => return started.elapsed(),
            Err(e) => {
                assert!(
                    started.elapsed() < within,
                    "still failing after {within:?}: {e}"
                );
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How many clients are subscribed to `channel`, polled until it is `expected` or 5 s pass.
fn subscribers_become(server: &PrivateServer, channel: &str, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut admin = admin(&server.url());
        let (_, count): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut admin)
            .expect("PUBSUB NUMSUB");
        if count == expected || Instant::now() > deadline {
            return count;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wake_channel(key: &cachier_core::Key) -> String {
    format!("{{{}:f:{}}}:wake", key.namespace, key.hash.to_hex())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_of_every_connection_reconnects() {
    let server = PrivateServer::start();
    let ns = unique_namespace("client_kill");
    let config = Config::from_url(&server.url())
        .unwrap()
        .with_wait_poll_interval(Duration::from_secs(60));
    let core = Arc::new(RedisCore::connect(config).await.unwrap());
    let writer = RedisCore::connect(Config::from_url(&server.url()).unwrap())
        .await
        .unwrap();
    let value_key = key(&ns, 1);
    core.set(&value_key, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .unwrap();

    // A waiter holds the pub/sub connection open.
    let claimed = key(&ns, 2);
    let Claim::Acquired(_) = writer
        .claim(&claimed, Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("cold key");
    };
    let waiter = tokio::spawn({
        let (core, claimed) = (core.clone(), claimed.clone());
        async move { core.wait(&claimed, Duration::from_secs(30)).await }
    });
    assert_eq!(subscribers_become(&server, &wake_channel(&claimed), 1), 1);

    let mut admin = admin(&server.url());
    let killed_normal: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut admin)
        .unwrap();
    let killed_pubsub: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut admin)
        .unwrap();
    assert!(
        killed_normal >= 2,
        "the cores' command connections: {killed_normal}"
    );
    assert_eq!(killed_pubsub, 1);

    // Calls work again (the first may see the dropped connection).
    get_succeeds_within(&core, &value_key, Duration::from_secs(5)).await;
    let entry = core.get(&value_key).await.unwrap().unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"v"[..]));

    // The wake-up connection came back and subscribed again, and still wakes the waiter.
    assert_eq!(subscribers_become(&server, &wake_channel(&claimed), 1), 1);
    get_succeeds_within(&writer, &claimed, Duration::from_secs(5)).await;
    let started = Instant::now();
    writer
        .set(&claimed, Bytes::from_static(b"done"), Timestamp::now())
        .await
        .unwrap();
    let entry = waiter.await.unwrap().unwrap().unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"done"[..]));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_run_reconnects() {
    let mut server = PrivateServer::start();
    let ns = unique_namespace("restart");
    let core = Arc::new(
        RedisCore::connect(
            Config::from_url(&server.url())
                .unwrap()
                .with_connect_timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap(),
    );
    let k = key(&ns, 1);
    core.set(&k, Bytes::from_static(b"before"), Timestamp::now())
        .await
        .unwrap();
    let claimed = key(&ns, 2);
    core.claim(&claimed, Duration::from_secs(60)).await.unwrap();
    let waiter = tokio::spawn({
        let (core, claimed) = (core.clone(), claimed.clone());
        async move { core.wait(&claimed, Duration::from_secs(30)).await }
    });
    assert_eq!(subscribers_become(&server, &wake_channel(&claimed), 1), 1);

    server.stop();
    let started = Instant::now();
    let err = core.get(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert_eq!(err.backend(), Some("redis"));
    assert_eq!(err.operation(), Some("get"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    server.restart();
    get_succeeds_within(&core, &k, Duration::from_secs(10)).await;
    // Persistence is off: the restarted server is empty, and the core works on it.
    assert_eq!(core.get(&k).await.unwrap(), None);
    core.set(&k, Bytes::from_static(b"after"), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        core.get(&k).await.unwrap().unwrap().value.as_deref(),
        Some(&b"after"[..])
    );
    // The waiter does not hang: it either read through the restart (the claim died with the
    // old server) or gave up with a retryable error after a few failed reads.
    match waiter.await.unwrap() {
        Ok(entry) => assert_eq!(entry, None),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}"),
    }
    assert!(matches!(
        core.claim(&claimed, Duration::from_secs(5)).await.unwrap(),
        Claim::Acquired(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_fails_calls_fast_and_the_front_end_computes() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let config = Config::from_url(&url)
        .unwrap()
        .with_connect_timeout(Duration::from_millis(500));

    let err = RedisCore::connect(config.clone()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    let core = Arc::new(RedisCore::connect_lazy(config).unwrap());
    let ns = unique_namespace("down");
    let started = Instant::now();
    for err in [
        core.get(&key(&ns, 1)).await.unwrap_err(),
        core.set(&key(&ns, 1), Bytes::from_static(b"v"), Timestamp::now())
            .await
            .unwrap_err(),
        core.claim(&key(&ns, 1), Duration::from_secs(1))
            .await
            .unwrap_err(),
        core.wait(&key(&ns, 1), Duration::from_secs(30))
            .await
            .unwrap_err(),
        core.clear(&ns, &func_id("f")).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.is_retryable());
    }
    // Five calls, each failing within about a second.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Without `strict`: the function is computed, the error logged and counted.
    let cache = Cachier::builder(core.clone())
        .with_namespace(ns.clone())
        .build();
    let f = cache.function(func_id("f"));
    assert_eq!(f.call(&3u64, || async { 9u64 }).await.unwrap(), 9);
    assert!(f.stats().backend_errors > 0, "{:?}", f.stats());

    // With `strict`: the error is returned.
    let strict = Cachier::builder(core.clone())
        .with_namespace(ns)
        .strict(true)
        .build();
    let err = strict
        .function(func_id("f"))
        .call(&3u64, || async { 9u64 })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

/// The outage hooks of the conformance suite, end to end: a core on the private server fails
/// fast as `Unavailable` once it is stopped (so does connecting to the closed port), and works
/// again by itself once it is started. Prints what the failing calls cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_fast_then_the_core_recovers() {
    let server = OutageServer::start();
    let core = server.core().await;
    let ns = unique_namespace("outage");
    let k = key(&ns, 1);
    core.set(&k, Bytes::from_static(b"before"), Timestamp::now())
        .await
        .unwrap();
    assert!(core.get(&k).await.unwrap().is_some());

    server.stop().await;
    let started = Instant::now();
    let first = core.get(&k).await;
    let first_get = started.elapsed();
    let started = Instant::now();
    let second = core.get(&k).await;
    let second_get = started.elapsed();
    let started = Instant::now();
    let f = func_id("f");
    let maintenance = [
        core.remove(&k).await.map(drop),
        core.clear(&ns, &f).await.map(drop),
        core.clear_claims(&ns, &f).await.map(drop),
        core.delete_stale(&ns, &f, Timestamp::now()).await.map(drop),
        core.clear_namespace(&ns).await.map(drop),
    ];
    let five_maintenance = started.elapsed();
    let started = Instant::now();
    let opened = RedisCore::connect(Config::from_url(server.url()).unwrap()).await;
    let open = started.elapsed();
    println!(
        "outage costs ({}): first get after stop {first_get:?}, next get {second_get:?}, \
         5 maintenance calls {five_maintenance:?}, opening a core on the closed port {open:?}",
        server.url()
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
    let err = opened.expect_err("connecting to a closed port");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    for (what, took) in [
        ("first get", first_get),
        ("next get", second_get),
        ("open", open),
    ] {
        assert!(took < Duration::from_secs(3), "{what} took {took:?}");
    }

    server.start().await;
    let started = Instant::now();
    loop {
        match core.get(&k).await {
            // Persistence is off: the restarted server is empty.
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
    core.set(&k, Bytes::from_static(b"after"), Timestamp::now())
        .await
        .unwrap();
    let entry = core.get(&k).await.unwrap().unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"after"[..]));
}

/// A frozen server (SIGSTOP: connections stay open, nothing answers) fails a call within the
/// response timeout, as `Unavailable`, and the core works again once the server resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_fails_calls_within_the_response_timeout() {
    let server = PrivateServer::start();
    let core = RedisCore::connect(Config::from_url(&server.url()).unwrap())
        .await
        .unwrap();
    let ns = unique_namespace("frozen");
    let k = key(&ns, 1);
    core.set(&k, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .unwrap();

    server.signal("STOP");
    let started = Instant::now();
    let outcome = core.get(&k).await;
    let took = started.elapsed();
    server.signal("CONT");
    let err = outcome.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    println!("a get on a frozen server failed after {took:?}");
    assert!(
        took >= Config::DEFAULT_RESPONSE_TIMEOUT / 2 && took < Duration::from_secs(3),
        "a get on a frozen server took {took:?}"
    );
    let took = get_succeeds_within(&core, &k, Duration::from_secs(10)).await;
    println!("the get succeeded {took:?} after the server resumed");
    assert_eq!(
        core.get(&k).await.unwrap().unwrap().value.as_deref(),
        Some(&b"v"[..])
    );
}

/// Parses `INFO commandstats` into command name → calls.
fn command_calls(server: &PrivateServer) -> HashMap<String, u64> {
    let mut admin = admin(&server.url());
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut admin)
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

fn reset_stats(server: &PrivateServer) {
    let mut admin = admin(&server.url());
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin)
        .unwrap();
}

/// The data commands counted, leaving out the test's own `INFO` and `CONFIG RESETSTAT`.
fn data_commands(calls: HashMap<String, u64>) -> HashMap<String, u64> {
    calls
        .into_iter()
        .filter(|(name, _)| name != "info" && !name.starts_with("config"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_is_one_read_command() {
    let server = PrivateServer::start();
    let ns = unique_namespace("command_count");
    let core: Arc<dyn Core> = Arc::new(
        RedisCore::connect(Config::from_url(&server.url()).unwrap())
            .await
            .unwrap(),
    );
    let cache = Cachier::builder(core.clone())
        .with_namespace(ns.clone())
        .build();
    let f = cache.function(func_id("f"));
    assert_eq!(f.call(&1u64, || async { 11u64 }).await.unwrap(), 11);
    core.claim(&key(&ns, 2), Duration::from_secs(60))
        .await
        .unwrap();

    // Core level: a hit, and a read that also reports a live claim.
    reset_stats(&server);
    let k = f.key(&1u64).unwrap();
    for _ in 0..25 {
        assert!(core.get(&k).await.unwrap().unwrap().value.is_some());
        assert!(core.get(&key(&ns, 2)).await.unwrap().unwrap().is_claimed());
    }
    let calls = data_commands(command_calls(&server));
    assert_eq!(calls, HashMap::from([("mget".to_string(), 50)]));

    // Front-end level: a cached call reads only the value (`Core::get_value`): one `GET`.
    reset_stats(&server);
    for _ in 0..40 {
        let hit = f.call(&1u64, || async { panic_compute() }).await.unwrap();
        assert_eq!(hit, 11);
    }
    let calls = data_commands(command_calls(&server));
    assert_eq!(calls, HashMap::from([("get".to_string(), 40)]));
}

fn panic_compute() -> u64 {
    panic!("a hit must not compute")
}

/// Makes a throwaway certificate authority and a server certificate for 127.0.0.1 with the
/// `openssl` command-line tool. Returns (CA, server certificate, server key) paths.
fn make_certificates(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command-line tool is installed");
        assert!(status.success(), "openssl {args:?} failed");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=cachier test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.cnf",
        "-out",
        "server.crt",
    ]);
    ["ca.crt", "server.crt", "server.key"].map(|f| dir.join(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_carry_commands_and_wake_ups() {
    let certs = tempfile::tempdir().unwrap();
    let [ca, cert, key_file] = make_certificates(certs.path());
    let server = PrivateServer::start_tls(&cert, &key_file, &ca);
    let ns = unique_namespace("tls");

    // The system's roots do not trust the test CA: a clean error, not a hang.
    let untrusted = Config::from_url(&server.url())
        .unwrap()
        .with_connect_timeout(Duration::from_secs(2));
    let err = RedisCore::connect(untrusted).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_retryable());

    let client = redis::Client::build_with_tls(
        server.url(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&ca).unwrap()),
        },
    )
    .unwrap();
    let config = Config::from_client(client).with_wait_poll_interval(Duration::from_secs(60));
    let core = Arc::new(RedisCore::connect(config.clone()).await.unwrap());
    let writer = RedisCore::connect(config).await.unwrap();
    let k = key(&ns, 1);
    let Claim::Acquired(_) = writer.claim(&k, Duration::from_secs(60)).await.unwrap() else {
        panic!("cold key");
    };
    let waiter = tokio::spawn({
        let (core, k) = (core.clone(), k.clone());
        async move { core.wait(&k, Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    writer
        .set(&k, Bytes::from_static(b"over tls"), Timestamp::now())
        .await
        .unwrap();
    let entry = waiter.await.unwrap().unwrap().unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"over tls"[..]));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
