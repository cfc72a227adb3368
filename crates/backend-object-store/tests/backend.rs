//! Behaviour of this backend beyond the shared suite: foreign and corrupt objects, races on
//! claims (cold keys and expired claims), release after a takeover, what a dead or hung endpoint
//! costs, and that nothing is left in the bucket.
//!
//! Each test works in a namespace of its own (`t_{pid}_{test}_{random}`), removed when its
//! scope is dropped, also when the test fails.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cachier_core::conformance::{Scope, func_id, unique_namespace};
use cachier_core::{Claim, ClaimToken, Core, ErrorKind, Key, Timestamp};
use cachier_object_store::{Config, ObjectStoreCore};
use futures_util::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

fn scope(core: &Arc<ObjectStoreCore>, test: &str) -> Scope {
    Scope {
        core: core.clone(),
        namespace: unique_namespace(test),
    }
}

async fn put_raw(store: &Arc<dyn ObjectStore>, path: &object_store::path::Path, bytes: &[u8]) {
    store
        .put(path, PutPayload::from(Bytes::copy_from_slice(bytes)))
        .await
        .expect("a raw put");
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_and_corrupt_objects_are_misses_and_overwritten() {
    let core = Arc::new(common::s3_core());
    let s = scope(&core, "foreign_objects");
    let store = core.store().clone();
    for (i, bytes) in [
        &b"hello from another program"[..],
        b"",
        b"CHOS",
        b"CHOS\x02\0\0\0\0\0\0\0\0value",
    ]
    .into_iter()
    .enumerate()
    {
        let key = s.key("f", &i);
        put_raw(&store, &core.value_path(&key), bytes).await;
        assert_eq!(
            s.core.get(&key).await.expect("get"),
            None,
            "{bytes:?} read as a value"
        );
        assert_eq!(s.core.get_value(&key).await.expect("get_value"), None);
        // The front end computes and overwrites it.
        let f = s.cache().function(func_id("f"));
        let runs = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let runs = runs.clone();
            let value = f
                .call(&i, move || async move {
                    runs.fetch_add(1, SeqCst);
                    format!("computed {i}")
                })
                .await
                .expect("call");
            assert_eq!(value, format!("computed {i}"));
        }
        assert_eq!(runs.load(SeqCst), 1, "the overwritten entry was not served");
    }

    // A foreign claim object counts as an expired claim: it is taken over.
    let key = s.key("g", &0u8);
    put_raw(&store, &core.claim_path(&key), b"not a claim").await;
    assert_eq!(s.core.get(&key).await.expect("get"), None);
    assert!(matches!(
        s.core
            .claim(&key, Duration::from_secs(10))
            .await
            .expect("claim"),
        Claim::Acquired(_)
    ));
}

/// Runs `n` claims on `key` at once, each from a core of its own; returns how many acquired.
async fn racing_claims(cores: &[Arc<ObjectStoreCore>], key: &Key, lease: Duration) -> usize {
    let barrier = Arc::new(tokio::sync::Barrier::new(cores.len()));
    let tasks: Vec<_> = cores
        .iter()
        .map(|core| {
            let (core, key, barrier) = (core.clone(), key.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                core.claim(&key, lease).await
            })
        })
        .collect();
    let mut acquired = 0;
    for task in tasks {
        if let Claim::Acquired(_) = task.await.expect("task").expect("claim") {
            acquired += 1;
        }
    }
    acquired
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_claims_on_a_cold_key_leave_one_winner() {
    let cores: Vec<_> = (0..16).map(|_| Arc::new(common::s3_core())).collect();
    let s = scope(&cores[0], "sixteen_claims");
    for round in 0..5u8 {
        let key = s.key("f", &round);
        let acquired = racing_claims(&cores, &key, Duration::from_secs(30)).await;
        assert_eq!(
            acquired, 1,
            "round {round}: {acquired} of 16 claims acquired"
        );
    }
}

/// Callers taking over one expired claim at once: exactly one wins, round after round.
async fn takeover_race(core: Arc<ObjectStoreCore>, cores: Vec<Arc<ObjectStoreCore>>, test: &str) {
    if !core.has_conditional_update() {
        let line = format!(
            "SKIPPED {test}: this store has no conditional update (PutMode::Update), so two \
             callers taking over one expired claim may both win (see the crate docs)"
        );
        println!("{line}");
        eprintln!("{line}");
        return;
    }
    let s = scope(&core, test);
    for round in 0..10u8 {
        let key = s.key("f", &round);
        let first = s
            .core
            .claim(&key, Duration::from_millis(30))
            .await
            .expect("claim");
        assert!(matches!(first, Claim::Acquired(_)));
        tokio::time::sleep(Duration::from_millis(60)).await;
        let acquired = racing_claims(&cores, &key, Duration::from_secs(30)).await;
        assert_eq!(
            acquired,
            1,
            "round {round}: {acquired} of {} callers took over one expired claim",
            cores.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_callers_taking_over_one_expired_claim_leave_one_winner_s3() {
    let cores: Vec<_> = (0..2).map(|_| Arc::new(common::s3_core())).collect();
    takeover_race(cores[0].clone(), cores.clone(), "takeover_s3").await;
    let many: Vec<_> = (0..8).map(|_| Arc::new(common::s3_core())).collect();
    takeover_race(many[0].clone(), many, "takeover_s3_eight").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_taking_over_one_expired_claim_leave_one_winner_memory() {
    let cores: Vec<_> = (0..8)
        .map(|_| Arc::new(common::memory_core("backend-takeover")))
        .collect();
    takeover_race(cores[0].clone(), cores, "takeover_memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn takeover_race_is_skipped_on_the_local_file_system() {
    let core = Arc::new(common::file_core());
    assert!(!core.has_conditional_update());
    takeover_race(core.clone(), vec![core], "takeover_file").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_former_holder_neither_renews_nor_releases_a_claim_taken_over() {
    let core = Arc::new(common::s3_core());
    let s = scope(&core, "former_holder");
    let key = s.key("f", &0u8);
    let Claim::Acquired(old) = s
        .core
        .claim(&key, Duration::from_millis(30))
        .await
        .expect("claim")
    else {
        panic!("a cold key was held");
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    let Claim::Acquired(new) = s
        .core
        .claim(&key, Duration::from_secs(30))
        .await
        .expect("claim")
    else {
        panic!("an expired claim was not taken over");
    };
    assert!(
        !s.core
            .renew(&key, &old, Duration::from_secs(30))
            .await
            .expect("renew")
    );
    s.core.release(&key, &old).await.expect("release");
    let entry = s.core.get(&key).await.expect("get").expect("the new claim");
    assert!(entry.is_claimed(), "the former holder ended the new claim");
    s.core.release(&key, &new).await.expect("release");
    assert_eq!(s.core.get(&key).await.expect("get"), None);
    // A released claim is taken at once.
    assert!(matches!(
        s.core
            .claim(&key, Duration::from_secs(30))
            .await
            .expect("claim"),
        Claim::Acquired(_)
    ));
}

/// Every operation of `core`, each bounded by `limit`: all must fail with `Unavailable`.
async fn every_operation_is_unavailable(core: &ObjectStoreCore, limit: Duration) -> Duration {
    let namespace = unique_namespace("unavailable");
    let key = Key::for_args(&namespace, &func_id("f"), &0u8).expect("key");
    let token = ClaimToken::generate();
    let lease = Duration::from_secs(10);
    let func = func_id("f");
    let mut slowest = Duration::ZERO;
    macro_rules! check {
        ($name:literal, $op:expr) => {{
            let started = Instant::now();
            let outcome = tokio::time::timeout(limit, $op)
                .await
                .unwrap_or_else(|_| panic!("{} took longer than {limit:?}", $name));
            let took = started.elapsed();
            slowest = slowest.max(took);
            let err = outcome
                .err()
                .unwrap_or_else(|| panic!("{} succeeded", $name));
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{}: {err}", $name);
            assert!(err.is_retryable(), "{}: {err}", $name);
            assert_eq!(err.operation(), Some($name), "{err}");
        }};
    }
    check!("get", core.get(&key));
    check!("get_value", core.get_value(&key));
    check!(
        "set",
        core.set(&key, Bytes::from_static(b"x"), Timestamp::now())
    );
    check!("claim", core.claim(&key, lease));
    check!("renew", core.renew(&key, &token, lease));
    check!("release", core.release(&key, &token));
    check!("remove", core.remove(&key));
    check!("clear", core.clear(&namespace, &func));
    check!("clear_claims", core.clear_claims(&namespace, &func));
    check!(
        "delete_stale",
        core.delete_stale(&namespace, &func, Timestamp::now())
    );
    check!("clear_namespace", core.clear_namespace(&namespace));
    slowest
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_endpoint_is_unavailable_within_a_second_by_default() {
    // Nobody listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("s3://nobody?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let core = ObjectStoreCore::open(
        Config::from_url(&url)
            .expect("url")
            .with_credentials("k", "s"),
    )
    .expect("open");
    let slowest = every_operation_is_unavailable(&core, Duration::from_secs(2)).await;
    println!("dead endpoint: slowest operation failed after {slowest:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_endpoint_costs_the_request_timeout() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let url = format!("s3://hung?endpoint=http://{addr}&region=us-east-1");
    let config = Config::from_url(&url)
        .expect("url")
        .with_credentials("k", "s")
        .with_request_timeout(Duration::from_millis(300));
    let core = ObjectStoreCore::open(config).expect("open");
    let slowest = every_operation_is_unavailable(&core, Duration::from_secs(3)).await;
    println!("hung endpoint, 300 ms request timeout: slowest operation failed after {slowest:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_server_is_unavailable_quickly_and_calls_still_return_values() {
    let server = tokio::task::spawn_blocking(common::MotoServer::start)
        .await
        .expect("moto_server");
    let core = Arc::new(server.core());
    let s = scope(&core, "stopped_server");
    let f = s.cache().function(func_id("f"));
    let runs = Arc::new(AtomicUsize::new(0));
    let call = |f: cachier_core::Function, runs: Arc<AtomicUsize>| async move {
        f.call(&1u8, move || async move { runs.fetch_add(1, SeqCst) })
            .await
            .expect("a fail-open call returns a value")
    };
    assert_eq!(call(f.clone(), runs.clone()).await, 0);
    assert_eq!(call(f.clone(), runs.clone()).await, 0);
    let server = Arc::new(server);
    let stopper = server.clone();
    tokio::task::spawn_blocking(move || stopper.stop())
        .await
        .expect("stopping moto_server");
    let started = Instant::now();
    assert_eq!(call(f.clone(), runs.clone()).await, 1);
    let first = started.elapsed();
    assert!(
        first < Duration::from_secs(2),
        "the first call took {first:?}"
    );
    let slowest = every_operation_is_unavailable(&core, Duration::from_secs(2)).await;
    println!("stopped moto_server: first fail-open call {first:?}, slowest operation {slowest:?}");
    // The scope's cleanup would fail against the stopped server, whose objects die with it.
    std::mem::forget(s);
}

#[tokio::test(flavor = "multi_thread")]
async fn clear_namespace_leaves_nothing_in_the_bucket() {
    let core = Arc::new(common::s3_core());
    let s = scope(&core, "nothing_left");
    let store = core.store().clone();
    for i in 0..30u32 {
        let key = s.key(&format!("f{}", i % 3), &i);
        s.core
            .set(&key, Bytes::from(vec![1; 100]), Timestamp::now())
            .await
            .expect("set");
        if i % 2 == 0 {
            s.core
                .claim(&s.key("g", &i), Duration::from_secs(30))
                .await
                .expect("claim");
        }
    }
    let foreign = core
        .namespace_path(&s.namespace)
        .join("f0")
        .join("notes.txt");
    put_raw(&store, &foreign, b"left by someone else").await;
    let removed = s
        .core
        .clear_namespace(&s.namespace)
        .await
        .expect("clear_namespace");
    assert_eq!(removed, 30, "values removed");
    let left: Vec<_> = store
        .list(Some(&core.namespace_path(&s.namespace)))
        .try_collect()
        .await
        .expect("list");
    assert!(left.is_empty(), "left in the bucket: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prefixes_keep_two_caches_apart_in_one_bucket() {
    let url = common::s3_url();
    let a = Arc::new(
        ObjectStoreCore::open(
            common::s3_config(&url)
                .with_prefix("app-a")
                .expect("prefix"),
        )
        .expect("open"),
    );
    let b = Arc::new(
        ObjectStoreCore::open(
            common::s3_config(&url)
                .with_prefix("app-b")
                .expect("prefix"),
        )
        .expect("open"),
    );
    let sa = scope(&a, "prefix_a");
    let sb = Scope {
        core: b.clone(),
        namespace: sa.namespace.clone(),
    };
    let key = sa.key("f", &0u8);
    sa.core
        .set(&key, Bytes::from_static(b"a"), Timestamp::now())
        .await
        .expect("set");
    assert!(a.value_path(&key).as_ref().starts_with("app-a/"));
    assert_eq!(sb.core.get(&key).await.expect("get"), None);
    assert_eq!(
        sb.core.clear_namespace(&sb.namespace).await.expect("clear"),
        0
    );
    assert!(sa.core.get(&key).await.expect("get").is_some());
}
