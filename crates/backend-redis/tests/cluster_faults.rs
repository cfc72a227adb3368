//! Faults of a Redis Cluster, each on a private cluster of the test's own (never the shared
//! test cluster): a primary killed with SIGKILL while callers run, and a slot migrated while a
//! holder computes the key it claimed there.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cachier_core::{Cachier, Claim, Core, Key, Namespace};
use cachier_redis::{Config, RedisCore};
use common::cluster::PrivateCluster;
use common::{blocking, func_id, unique_namespace};

/// The Redis name of `key`'s entry (function ids here need no escaping).
fn entry_name(key: &Key) -> String {
    format!("{{{}:{}:{}}}", key.namespace, key.func, key.hash.to_hex())
}

fn key(ns: &Namespace, func: &str, arg: u64) -> Key {
    Key::for_args(ns, &func_id(func), &arg).expect("a u64 hashes")
}

/// The first `count` arguments of `func` whose entries live on the primary at `port` (or, with
/// `on_port` false, on any other primary).
fn args_on(
    cluster: &PrivateCluster,
    ns: &Namespace,
    func: &str,
    port: u16,
    on_port: bool,
    count: usize,
) -> Vec<u64> {
    (0u64..)
        .filter(|&arg| {
            (cluster.primary_port_of(&entry_name(&key(ns, func, arg))) == port) == on_port
        })
        .take(count)
        .collect()
}

/// The crate's defaults, with a response timeout for a loaded machine.
fn config_for(cluster: &PrivateCluster) -> Config {
    Config::from_url(&cluster.url())
        .unwrap()
        .with_response_timeout(Duration::from_secs(5))
}

/// A primary is killed while callers run: every call still returns its computed value
/// (fail-open), keys on the other primaries answer throughout, a replica takes over the dead
/// primary's slots, and afterwards 64 callers on a cold key in those slots compute once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_and_callers_keep_their_results() {
    let node_timeout = Duration::from_millis(1500);
    let mut cluster = blocking(|| PrivateCluster::start(3, 1, node_timeout));
    let ns = unique_namespace("kill_primary");
    let core = Arc::new(
        RedisCore::connect(config_for(&cluster))
            .await
            .expect("the private cluster answers"),
    );
    // The victim: the primary that serves the first key of `f`.
    let victim = cluster.primary_port_of(&entry_name(&key(&ns, "f", 0)));
    let victim_args = args_on(&cluster, &ns, "f", victim, true, 4);
    let other_args = args_on(&cluster, &ns, "f", victim, false, 8);
    let cold_arg = args_on(&cluster, &ns, "cold", victim, true, 1)[0];

    let cache = Cachier::builder(core.clone())
        .with_namespace(ns.clone())
        .build();
    let f = cache.function(func_id("f"));
    for &arg in victim_args.iter().chain(&other_args) {
        assert_eq!(
            f.call(&arg, move || async move { arg * 10 }).await.unwrap(),
            arg * 10
        );
    }

    // Callers through the front end on keys of every primary, and a reader of the other
    // primaries' keys straight through the core.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for i in 0..4 {
        let (f, stop, calls) = (f.clone(), stop.clone(), calls.clone());
        let args: Vec<u64> = victim_args.iter().chain(&other_args).copied().collect();
        callers.push(tokio::spawn(async move {
            let mut n = i;
            while !stop.load(Ordering::SeqCst) {
                let arg = args[n % args.len()];
                let got = f.call(&arg, move || async move { arg * 10 }).await.unwrap();
                assert_eq!(got, arg * 10, "a call lost its result");
                calls.fetch_add(1, Ordering::SeqCst);
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let reader = tokio::spawn({
        let (core, stop) = (core.clone(), stop.clone());
        let keys: Vec<Key> = other_args.iter().map(|&a| key(&ns, "f", a)).collect();
        async move {
            let (mut reads, mut failures) = (0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                for key in &keys {
                    match core.get(key).await {
                        Ok(Some(entry)) if entry.value.is_some() => reads += 1,
                        other => failures.push(format!("{other:?}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (reads, failures)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    blocking(|| cluster.kill(victim));
    let killed_at = Instant::now();
    // The dead primary's keys answer again once a replica has taken over (persistence is off,
    // but the replica had the data).
    let victim_key = key(&ns, "f", victim_args[0]);
    let takeover = loop {
        if let Ok(Some(entry)) = core.get(&victim_key).await {
            assert!(entry.value.is_some(), "the replica had the value");
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < node_timeout + Duration::from_secs(15),
            "no replica took over within {:?}",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for caller in callers {
        caller
            .await
            .expect("every call returned its computed value");
    }
    let (reads, failures) = reader.await.unwrap();
    println!(
        "primary {victim} killed: a replica served its keys {takeover:?} later (node timeout \
         {node_timeout:?}); {} front-end calls returned their values; {reads} reads of the other \
         primaries' keys, {} failed",
        calls.load(Ordering::SeqCst),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "keys on the other primaries were affected: {failures:?}"
    );
    assert!(reads > 0);

    // After the failover, once the nodes agree on it and the old core writes steadily again,
    // 64 callers on a cold key of the failed-over slots compute once. They use a new core: on
    // the old core's cluster connection a burst of 64 requests to the promoted primary right
    // after a failover sometimes all waited out the response timeout (about 1 run in 4 here;
    // those calls fail open, see the crate docs), which would make this a test of the redis
    // crate's recovery rather than of single flight.
    blocking(|| cluster.wait_failover_seen(victim, Duration::from_secs(20)));
    let seen = killed_at.elapsed();
    let probe = key(&ns, "cold", victim_args[0]);
    let mut calm_since = Instant::now();
    while calm_since.elapsed() < Duration::from_millis(1500) {
        let ok = match core.claim(&probe, Duration::from_secs(5)).await {
            Ok(Claim::Acquired(token)) => core.release(&probe, &token).await.is_ok(),
            _ => false,
        };
        if !ok {
            calm_since = Instant::now();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(25),
            "writes still fail now and then {:?} after the kill",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "every live node saw the failover {seen:?} after the kill; writes answered steadily \
         from {:?} after it",
        killed_at.elapsed() - Duration::from_millis(1500)
    );

    let fresh = Arc::new(
        RedisCore::connect(config_for(&cluster))
            .await
            .expect("the cluster answers after the failover"),
    );
    let cache = Cachier::builder(fresh)
        .with_namespace(ns.clone())
        .wait_for_calc_timeout(Duration::from_secs(20))
        .strict(true)
        .build();
    let cold = cache.function(func_id("cold"));
    let computations = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (cold, computations) = (cold.clone(), computations.clone());
        tasks.push(tokio::spawn(async move {
            cold.call(&cold_arg, move || async move {
                computations.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                cold_arg + 1
            })
            .await
            .unwrap()
        }));
    }
    let started = Instant::now();
    for task in tasks {
        assert_eq!(task.await.unwrap(), cold_arg + 1);
    }
    println!(
        "64 callers on a cold key after the failover: {:?}",
        started.elapsed()
    );
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    assert_ne!(
        cluster.primary_port_of(&entry_name(&key(&ns, "cold", cold_arg))),
        victim,
        "the cold key's slot is served by the promoted replica"
    );
}

/// Moves `slot` from the primary on `from` to the primary on `to` the way `redis-cli
/// --cluster reshard` does: `SETSLOT IMPORTING`/`MIGRATING`, `MIGRATE` of its keys, then
/// `SETSLOT NODE` on every primary.
fn migrate_slot(cluster: &PrivateCluster, slot: u16, from: (u16, &str), to: (u16, &str)) {
    let mut source = cluster.node(from.0);
    let mut target = cluster.node(to.0);
    let setslot = |conn: &mut redis::Connection, state: &str, id: &str| {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(state)
            .arg(id)
            .query(conn)
            .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {state}: {e}"));
    };
    setslot(&mut target, "IMPORTING", from.1);
    setslot(&mut source, "MIGRATING", to.1);
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query(&mut source)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to.0)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query(&mut source)
            .unwrap();
    }
    for port in cluster.ports() {
        let mut conn = cluster.node(port);
        setslot(&mut conn, "NODE", to.1);
    }
}

/// The slot holding a claimed key moves to another primary while its holder computes: the
/// waiter still gets the holder's value, and the function ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrates_while_its_holder_computes() {
    let cluster = blocking(|| PrivateCluster::start(3, 0, Duration::from_secs(5)));
    let ns = unique_namespace("migrate");
    let config = || Config::from_url(&cluster.url()).unwrap();
    let holder_core: Arc<dyn Core> = Arc::new(RedisCore::connect(config()).await.unwrap());
    let waiter_core: Arc<dyn Core> = Arc::new(RedisCore::connect(config()).await.unwrap());
    let k = key(&ns, "slow", 1);
    let name = entry_name(&k);
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&name)
        .query(&mut cluster.any_node())
        .unwrap();
    let (from_port, from_id) = cluster.owner_of_slot(slot);
    let (to_port, to_id) = cluster
        .ports()
        .into_iter()
        .filter(|&p| p != from_port)
        .map(|p| (p, slot_owner_id(&cluster, p)))
        .next()
        .unwrap();

    let computations = Arc::new(AtomicU64::new(0));
    let cache = |core: Arc<dyn Core>| {
        Cachier::builder(core)
            .with_namespace(ns.clone())
            .lease(Duration::from_secs(10))
            .wait_for_calc_timeout(Duration::from_secs(20))
            .build()
            .function(func_id("slow"))
    };
    let (holder, waiter) = (cache(holder_core.clone()), cache(waiter_core.clone()));
    let release = Arc::new(tokio::sync::Notify::new());
    let holding = tokio::spawn({
        let (computations, release) = (computations.clone(), release.clone());
        async move {
            holder
                .call(&1u64, move || async move {
                    computations.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    "from the holder".to_owned()
                })
                .await
                .unwrap()
        }
    });
    // The claim exists before the waiter comes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(waiter_core.get(&k).await, Ok(Some(e)) if e.is_claimed()) {
        assert!(Instant::now() < deadline, "the holder never claimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        waiter_core.claim(&k, Duration::from_secs(1)).await.unwrap(),
        Claim::Held { .. }
    ));
    let waiting = tokio::spawn({
        let computations = computations.clone();
        async move {
            waiter
                .call(&1u64, move || async move {
                    computations.fetch_add(1, Ordering::SeqCst);
                    "from the waiter".to_owned()
                })
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    blocking(|| migrate_slot(&cluster, slot, (from_port, &from_id), (to_port, &to_id)));
    assert_eq!(cluster.owner_of_slot(slot).0, to_port, "the slot moved");
    // The claim travelled with the slot.
    assert!(matches!(
        waiter_core.claim(&k, Duration::from_secs(1)).await.unwrap(),
        Claim::Held { .. }
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let finished = Instant::now();
    release.notify_one();
    assert_eq!(holding.await.unwrap(), "from the holder");
    let got = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the waiter returned")
        .unwrap();
    let woke = finished.elapsed();
    println!(
        "slot {slot} moved {from_port} -> {to_port}; the waiter had the value {woke:?} after the holder finished"
    );
    assert_eq!(got, "from the holder");
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    let mut target = cluster.node(to_port);
    let exists: u64 = redis::cmd("EXISTS").arg(&name).query(&mut target).unwrap();
    assert_eq!(exists, 1, "the value is stored on the slot's new owner");
}

/// The node id of the primary on `port`.
fn slot_owner_id(cluster: &PrivateCluster, port: u16) -> String {
    let id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut cluster.node(port))
        .unwrap();
    id
}
