//! `RedisCore::watch`: every change to a value of a watched namespace, by any connection or
//! process, is reported; claims are not; a flush is a `Namespace`; a lost connection is `Lost`
//! until tracking is back (`Resumed`). Tests that flush, restart, kill or freeze a server use a
//! private throwaway `redis-server`; the others use the shared test server with namespaces of
//! their own.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cachier_core::{Bytes, Claim, Core, Key, Namespace, Timestamp, Watching};
use cachier_redis::{Config, RedisCore};
use common::recorder::{Recorder, Report};
use common::{NamespaceGuard, PrivateServer, admin, core_at, func_id, redis_url, unique_namespace};

/// Generous bounds: reports normally arrive within a millisecond, but the whole test matrix
/// shares two cores.
const SOON: Duration = Duration::from_secs(10);

fn value() -> Bytes {
    Bytes::from_static(b"value")
}

fn key_in(namespace: &Namespace, func: &str, arg: u64) -> Key {
    Key::for_args(namespace, &func_id(func), &arg).expect("a u64 hashes")
}

/// A core on `url` and a live recorder of `namespace` on it.
async fn watching(url: &str, namespace: &Namespace) -> (Arc<RedisCore>, Arc<Recorder>) {
    let core = core_at(url).await;
    let recorder = Recorder::new();
    assert_eq!(
        core.watch(namespace, recorder.weak()),
        Watching::Asynchronous
    );
    recorder.wait_live(SOON).await;
    (core, recorder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_another_connection_are_reported_and_claims_are_not() {
    let ns = NamespaceGuard::new(&redis_url(), "watch_other");
    let (_core, recorder) = watching(&redis_url(), &ns.namespace).await;
    assert_eq!(
        recorder.reports(),
        [Report::Resumed],
        "Resumed exactly once"
    );
    let writer = core_at(&redis_url()).await;
    let key = ns.key("m::f", 1);

    // Claims come and go without a report.
    let Claim::Acquired(token) = writer.claim(&key, Duration::from_secs(30)).await.unwrap() else {
        panic!("a cold key's claim is acquired");
    };
    writer
        .renew(&key, &token, Duration::from_secs(30))
        .await
        .unwrap();
    writer.release(&key, &token).await.unwrap();
    let Claim::Acquired(_) = writer.claim(&key, Duration::from_secs(30)).await.unwrap() else {
        panic!("a released key's claim is acquired");
    };
    writer.clear_claims(&ns.namespace, &key.func).await.unwrap();

    // `set` (which also ends a claim), a replacement, `remove`: one report each.
    writer.set(&key, value(), Timestamp::now()).await.unwrap();
    recorder.wait_for(&Report::Entry(key.clone()), SOON).await;
    assert_eq!(
        recorder.reports(),
        [Report::Resumed, Report::Entry(key.clone())],
        "claims are not changes of values"
    );
    recorder.clear();
    writer.set(&key, value(), Timestamp::now()).await.unwrap();
    recorder.wait_for(&Report::Entry(key.clone()), SOON).await;
    recorder.clear();
    assert!(writer.remove(&key).await.unwrap());
    recorder.wait_for(&Report::Entry(key.clone()), SOON).await;

    // A removal of nothing changes nothing; an expiry does.
    recorder.clear();
    assert!(!writer.remove(&key).await.unwrap());
    writer
        .set_expiring(&key, value(), Timestamp::now(), Duration::from_millis(50))
        .await
        .unwrap();
    recorder.wait_for(&Report::Entry(key.clone()), SOON).await;
    assert_eq!(
        recorder.reports().len(),
        1,
        "the removal of nothing is no change"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A read removes an expired key at once (the server's expiry cycle may come later).
    assert_eq!(writer.get(&key).await.unwrap(), None);
    recorder
        .wait_until("the expiry", SOON, |r| {
            r.iter()
                .filter(|r| **r == Report::Entry(key.clone()))
                .count()
                == 2
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_through_the_watched_core_are_reported_before_it_returns() {
    let ns = NamespaceGuard::new(&redis_url(), "watch_local");
    let (core, recorder) = watching(&redis_url(), &ns.namespace).await;
    let key = ns.key("f", 1);
    let f = func_id("f");

    recorder.clear();
    core.set(&key, value(), Timestamp::now()).await.unwrap();
    assert!(recorder.reports().contains(&Report::Entry(key.clone())));
    recorder.clear();
    core.remove(&key).await.unwrap();
    assert!(recorder.reports().contains(&Report::Entry(key.clone())));
    recorder.clear();
    core.clear(&ns.namespace, &f).await.unwrap();
    assert!(recorder.reports().contains(&Report::Function(f.clone())));
    recorder.clear();
    core.delete_stale(&ns.namespace, &f, Timestamp::now())
        .await
        .unwrap();
    assert!(recorder.reports().contains(&Report::Function(f.clone())));
    recorder.clear();
    core.clear_namespace(&ns.namespace).await.unwrap();
    assert!(recorder.reports().contains(&Report::Namespace));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_reports_every_value_it_removes_and_nothing_else() {
    let ns = NamespaceGuard::new(&redis_url(), "watch_clear");
    let (_core, recorder) = watching(&redis_url(), &ns.namespace).await;
    let writer = core_at(&redis_url()).await;
    let foo: Vec<Key> = (0..3).map(|i| ns.key("foo", i)).collect();
    let foo_bar = ns.key("foo_bar", 0);
    for key in foo.iter().chain([&foo_bar]) {
        writer.set(key, value(), Timestamp::now()).await.unwrap();
    }
    recorder
        .wait_for(&Report::Entry(foo_bar.clone()), SOON)
        .await;
    recorder.clear();

    assert_eq!(
        writer.clear(&ns.namespace, &func_id("foo")).await.unwrap(),
        3
    );
    recorder
        .wait_until("an Entry per cleared value", SOON, |r| {
            foo.iter().all(|k| r.contains(&Report::Entry(k.clone())))
        })
        .await;
    // `foo_bar` stays: a later change of it is the first report about it.
    writer
        .set(&foo_bar, Bytes::from_static(b"v2"), Timestamp::now())
        .await
        .unwrap();
    let reports = recorder
        .wait_for(&Report::Entry(foo_bar.clone()), SOON)
        .await;
    assert_eq!(reports.len(), 4, "{reports:?}");

    // `delete_stale` reports what it deleted.
    recorder.clear();
    for key in &foo {
        writer.set(key, value(), Timestamp(1_000)).await.unwrap();
    }
    writer
        .delete_stale(&ns.namespace, &func_id("foo"), Timestamp(2_000))
        .await
        .unwrap();
    recorder
        .wait_until("a store and a deletion per value", SOON, |r| {
            foo.iter()
                .all(|k| r.iter().filter(|r| **r == Report::Entry(k.clone())).count() == 2)
        })
        .await;

    // `clear_namespace` from another core: every value, one report each.
    recorder.clear();
    writer.clear_namespace(&ns.namespace).await.unwrap();
    recorder
        .wait_for(&Report::Entry(foo_bar.clone()), SOON)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_watcher_hears_only_its_own_namespace() {
    let a = NamespaceGuard::new(&redis_url(), "watch_ns_a");
    let b = NamespaceGuard::new(&redis_url(), "watch_ns_b");
    let (core, in_a) = watching(&redis_url(), &a.namespace).await;
    // A second namespace on the same core, added to the running connection.
    let in_b = Recorder::new();
    assert_eq!(
        core.watch(&b.namespace, in_b.weak()),
        Watching::Asynchronous
    );
    in_b.wait_live(SOON).await;
    // A second watcher of the first namespace: live at once, the first not disturbed.
    let in_a2 = Recorder::new();
    core.watch(&a.namespace, in_a2.weak());
    in_a2.wait_live(SOON).await;
    assert_eq!(in_a.reports(), [Report::Resumed]);

    let writer = core_at(&redis_url()).await;
    let (ka, kb) = (a.key("f", 1), b.key("f", 1));
    writer.set(&kb, value(), Timestamp::now()).await.unwrap();
    writer.set(&ka, value(), Timestamp::now()).await.unwrap();
    in_a.wait_for(&Report::Entry(ka.clone()), SOON).await;
    in_a2.wait_for(&Report::Entry(ka.clone()), SOON).await;
    in_b.wait_for(&Report::Entry(kb.clone()), SOON).await;
    assert!(!in_a.reports().contains(&Report::Entry(kb.clone())));
    assert!(!in_b.reports().contains(&Report::Entry(ka.clone())));

    // A dropped watcher is forgotten; the others go on.
    drop(in_a2);
    writer.remove(&ka).await.unwrap();
    in_a.wait_until("the removal", SOON, |r| {
        r.iter()
            .filter(|r| **r == Report::Entry(ka.clone()))
            .count()
            == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_this_crate_did_not_write_is_a_change_of_the_namespace() {
    let ns = NamespaceGuard::new(&redis_url(), "watch_foreign");
    let (_core, recorder) = watching(&redis_url(), &ns.namespace).await;
    let mut admin = admin(&redis_url());
    let name = format!("{{{}:not an entry}}", ns.namespace);
    let _: () = redis::cmd("SET")
        .arg(&name)
        .arg("x")
        .query(&mut admin)
        .unwrap();
    recorder.wait_for(&Report::Namespace, SOON).await;
    let _: () = redis::cmd("DEL").arg(&name).query(&mut admin).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_is_a_change_of_every_watched_namespace() {
    let server = PrivateServer::start();
    let (a, b) = (unique_namespace("flush_a"), unique_namespace("flush_b"));
    let (core, in_a) = watching(&server.url(), &a).await;
    let in_b = Recorder::new();
    core.watch(&b, in_b.weak());
    in_b.wait_live(SOON).await;
    core.set(&key_in(&a, "f", 1), value(), Timestamp::now())
        .await
        .unwrap();
    for command in ["FLUSHDB", "FLUSHALL"] {
        in_a.clear();
        in_b.clear();
        let _: () = redis::cmd(command)
            .query(&mut admin(&server.url()))
            .unwrap();
        in_a.wait_for(&Report::Namespace, SOON).await;
        in_b.wait_for(&Report::Namespace, SOON).await;
    }
    assert!(in_a.is_live() && in_b.is_live());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_lost_then_resumed_and_reports_again() {
    let mut server = PrivateServer::start();
    let ns = unique_namespace("restart");
    let (_core, recorder) = watching(&server.url(), &ns).await;
    // Writes go through a core of their own: the watched core's reports of its own writes
    // would hide whether the server's pushes work.
    let writer = RedisCore::connect(Config::from_url(&server.url()).unwrap())
        .await
        .unwrap();
    let key = key_in(&ns, "f", 1);

    server.restart();
    let reports = recorder
        .wait_until("Lost, then Resumed", SOON, |r| {
            r.ends_with(&[Report::Lost, Report::Resumed])
        })
        .await;
    assert_eq!(
        reports,
        [Report::Resumed, Report::Lost, Report::Resumed],
        "one Lost per loss, Resumed only after it"
    );
    recorder.clear();
    let mut stored = false;
    let deadline = Instant::now() + SOON;
    while !stored {
        // The writer's first call may still see its dropped connection.
        stored = writer.set(&key, value(), Timestamp::now()).await.is_ok();
        assert!(Instant::now() < deadline, "the writer never reconnected");
    }
    recorder.wait_for(&Report::Entry(key.clone()), SOON).await;

    // While the server is down, the watcher stays lost; it resumes when the server is back.
    recorder.clear();
    server.stop();
    recorder.wait_for(&Report::Lost, SOON).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recorder.reports(), [Report::Lost], "nothing while down");
    server.restart();
    recorder.wait_for(&Report::Resumed, SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tracking_connection_is_lost_then_resumed() {
    let server = PrivateServer::start();
    let ns = unique_namespace("client_kill");
    let (_core, recorder) = watching(&server.url(), &ns).await;
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut admin(&server.url()))
        .unwrap();
    assert!(killed >= 1);
    recorder
        .wait_until("Lost, then Resumed", SOON, |r| {
            r.ends_with(&[Report::Lost, Report::Resumed])
        })
        .await;
    let writer = core_at(&server.url()).await;
    let key = key_in(&ns, "f", 1);
    writer.set(&key, value(), Timestamp::now()).await.unwrap();
    recorder.wait_for(&Report::Entry(key), SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_lost_within_the_heartbeat_and_the_response_timeout() {
    let server = PrivateServer::start();
    let ns = unique_namespace("frozen");
    let core = Arc::new(
        RedisCore::connect(Config::from_url(&server.url()).unwrap())
            .await
            .unwrap(),
    );
    let recorder = Recorder::new();
    core.watch(&ns, recorder.weak());
    recorder.wait_live(SOON).await;
    server.signal("STOP");
    let frozen = Instant::now();
    let outcome = tokio::time::timeout(SOON, recorder.wait_for(&Report::Lost, SOON)).await;
    server.signal("CONT");
    outcome.expect("Lost while frozen");
    let took = frozen.elapsed();
    // Heartbeat 1 s + response timeout 1 s, with room for a loaded machine.
    assert!(took < Duration::from_secs(5), "Lost after {took:?}");
    recorder
        .wait_until("Resumed after the thaw", SOON, |r| {
            r.ends_with(&[Report::Lost, Report::Resumed])
        })
        .await;
    assert!(recorder.is_live());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_before_the_server_is_up_resumes_once_it_is() {
    let mut server = PrivateServer::start();
    let ns = unique_namespace("late_server");
    let core = Arc::new(RedisCore::connect_lazy(Config::from_url(&server.url()).unwrap()).unwrap());
    server.stop();
    let recorder = Recorder::new();
    assert_eq!(core.watch(&ns, recorder.weak()), Watching::Asynchronous);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(recorder.reports().is_empty(), "not live while down");
    server.restart();
    recorder.wait_live(SOON).await;
    assert_eq!(recorder.reports(), [Report::Resumed]);
}

/// How many RESP3 connections (the tracking connection is the only one) the server has.
fn resp3_clients(server: &PrivateServer) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut admin(&server.url()))
        .unwrap();
    list.lines().filter(|l| l.contains(" resp=3")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tracking_connection_without_a_live_watcher() {
    let server = PrivateServer::start();
    let ns = unique_namespace("no_watcher");
    let core: Arc<RedisCore> = core_at(&server.url()).await;
    // A front end without a near cache asks, then drops its watcher at once.
    let cache = cachier_core::Cachier::builder(core.clone())
        .with_namespace(ns.clone())
        .build();
    assert_eq!(cache.near_cache_coherence(), None);
    let dropped = Recorder::new();
    core.watch(&ns, dropped.weak());
    drop(dropped);
    // A watcher that the task saw alive may have opened the connection; it closes at the next
    // heartbeat (1 s) once no watcher is left.
    resp3_clients_become(&server, 0).await;

    let recorder = Recorder::new();
    core.watch(&ns, recorder.weak());
    recorder.wait_live(SOON).await;
    assert_eq!(resp3_clients(&server), 1);
    // One connection per core, whatever the number of watchers and namespaces.
    let other = Recorder::new();
    core.watch(&unique_namespace("no_watcher_2"), other.weak());
    other.wait_live(SOON).await;
    assert_eq!(resp3_clients(&server), 1);
    // Gone with the last watcher; back with the next one.
    drop((recorder, other));
    resp3_clients_become(&server, 0).await;
    let again = Recorder::new();
    core.watch(&ns, again.weak());
    again.wait_live(SOON).await;
    assert_eq!(resp3_clients(&server), 1);
}

async fn resp3_clients_become(server: &PrivateServer, expected: usize) {
    let deadline = Instant::now() + SOON;
    while resp3_clients(server) != expected {
        assert!(
            Instant::now() < deadline,
            "{} tracking connections, not {expected}",
            resp3_clients(server)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Cross-process: writes in a child process, reports here, and the delay between them.

const CHILD_NAMESPACE: &str = "CACHIER_REDIS_TEST_WATCH_NAMESPACE";
const CHILD_WRITES: &str = "CACHIER_REDIS_TEST_WATCH_WRITES";

fn micros_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64
}

#[test]
#[ignore = "child side of writes_in_another_process_are_reported; started by that test"]
fn child_writes() {
    let (Ok(namespace), Ok(writes)) = (std::env::var(CHILD_NAMESPACE), std::env::var(CHILD_WRITES))
    else {
        return;
    };
    let writes: u64 = writes.parse().expect("a count from the parent");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let namespace = Namespace::new(namespace).expect("namespace from the parent");
        let core = core_at(&redis_url()).await;
        let mut lines = Vec::new();
        for i in 0..writes {
            let key = key_in(&namespace, "xproc", i);
            let before = micros_since_epoch(SystemTime::now());
            core.set(&key, value(), Timestamp::now()).await.unwrap();
            let after = micros_since_epoch(SystemTime::now());
            lines.push(format!("write {i} {before} {after}"));
            // Apart, so that each write is its own push.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        core.remove(&key_in(&namespace, "xproc", 0)).await.unwrap();
        core.clear(&namespace, &func_id("xproc")).await.unwrap();
        for line in lines {
            println!("{line}");
        }
        println!("child done");
    });
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_another_process_are_reported_and_the_delay_is_measured() {
    const WRITES: u64 = 300;
    let ns = NamespaceGuard::new(&redis_url(), "watch_xproc");
    let (_core, recorder) = watching(&redis_url(), &ns.namespace).await;
    let keys: HashMap<Key, u64> = (0..WRITES)
        .map(|i| (key_in(&ns.namespace, "xproc", i), i))
        .collect();

    let child = Command::new(std::env::current_exe().unwrap())
        .args(["child_writes", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_NAMESPACE, ns.namespace.as_str())
        .env(CHILD_WRITES, WRITES.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test binary starts itself");
    let output = tokio::task::spawn_blocking(move || {
        let mut child = child;
        let stdout = child.stdout.take().expect("piped stdout");
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect();
        let status = child.wait();
        (lines, status)
    });
    let (lines, status) = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("the child finishes")
        .unwrap();
    assert!(
        lines.iter().any(|l| l.contains("child done")),
        "the child failed: {status:?}\n{}",
        lines.join("\n")
    );
    let mut written: HashMap<u64, (i64, i64)> = HashMap::new();
    for line in &lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let ["write", i, before, after] = fields[..] {
            written.insert(
                i.parse().unwrap(),
                (before.parse().unwrap(), after.parse().unwrap()),
            );
        }
    }
    assert_eq!(written.len() as u64, WRITES);

    // Every write reported (the store; then the removal and the clear, a second report each).
    recorder
        .wait_until("every write, removal and clear", SOON, |r| {
            let mut seen: HashMap<&Key, usize> = HashMap::new();
            for report in r {
                if let Report::Entry(k) = report {
                    *seen.entry(k).or_default() += 1;
                }
            }
            keys.keys().all(|k| seen.get(k).copied().unwrap_or(0) >= 2)
        })
        .await;
    let mut from_start = Vec::new();
    let mut from_return = Vec::new();
    let mut first_report: HashMap<u64, i64> = HashMap::new();
    for arrival in recorder.arrivals() {
        if let Report::Entry(k) = &arrival.report
            && let Some(i) = keys.get(k)
        {
            first_report
                .entry(*i)
                .or_insert(micros_since_epoch(arrival.wall));
        }
    }
    for (i, (before, after)) in &written {
        let reported = first_report[i];
        from_start.push(reported - before);
        from_return.push(reported - after);
    }
    from_start.sort_unstable();
    from_return.sort_unstable();
    assert!(
        from_start[0] >= 0,
        "a report before its write began: {} µs",
        from_start[0]
    );
    println!(
        "report delay over {WRITES} writes in another process, from the start of the writer's \
         set: median {} µs, p99 {} µs, max {} µs; from its return: median {} µs, p99 {} µs",
        percentile(&from_start, 0.5),
        percentile(&from_start, 0.99),
        from_start[from_start.len() - 1],
        percentile(&from_return, 0.5),
        percentile(&from_return, 0.99),
    );
    assert!(recorder.is_live());
}
