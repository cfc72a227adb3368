//! Redis-specific behaviour of `RedisCore`, run by `backend.rs` against the shared test server
//! and by `cluster_backend.rs` against the shared test cluster (`super::redis_url()` says
//! which). Every test works in its own namespace, removed by a guard even when the test fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cachier_core::{Bytes, Cachier, Claim, ClaimToken, Core, Namespace, Timestamp, Watching};
use cachier_redis::{Config, RedisCore};

use super::redis_url;
use crate::common::{Admin, NamespaceGuard, admin, core_at, func_id};

/// A config for the test server with the crate's defaults.
fn default_config() -> Config {
    Config::from_url(&redis_url()).unwrap()
}

fn guard(test: &str) -> NamespaceGuard {
    NamespaceGuard::new(&redis_url(), test)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_claims_and_remove() {
    let ns = guard("round_trip");
    let core = core_at(&redis_url()).await;
    let key = ns.key("m::f", 1);

    assert_eq!(core.get(&key).await.unwrap(), None);

    let Claim::Acquired(token) = core.claim(&key, Duration::from_secs(30)).await.unwrap() else {
        panic!("a cold key's claim is acquired");
    };
    let Claim::Held { until } = core.claim(&key, Duration::from_secs(30)).await.unwrap() else {
        panic!("a claimed key's claim is held");
    };
    assert!(
        until > Timestamp::now().add(Duration::from_secs(25)),
        "{until:?}"
    );
    let entry = core
        .get(&key)
        .await
        .unwrap()
        .expect("a claim alone is reported");
    assert_eq!(entry.value, None);
    assert!(entry.is_claimed());

    let stranger = ClaimToken::generate();
    assert!(
        !core
            .renew(&key, &stranger, Duration::from_secs(60))
            .await
            .unwrap()
    );
    core.release(&key, &stranger).await.unwrap();
    assert!(
        core.get(&key).await.unwrap().unwrap().is_claimed(),
        "a stranger released it"
    );
    assert!(
        core.renew(&key, &token, Duration::from_secs(60))
            .await
            .unwrap()
    );
    let renewed = core.get(&key).await.unwrap().unwrap().claim_until.unwrap();
    assert!(
        renewed > Timestamp::now().add(Duration::from_secs(55)),
        "{renewed:?}"
    );

    let stored_at = Timestamp(1_700_000_000_000);
    core.set(&key, Bytes::from_static(b"v1"), stored_at)
        .await
        .unwrap();
    let entry = core.get(&key).await.unwrap().unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"v1"[..]));
    assert_eq!(entry.stored_at, stored_at);
    assert_eq!(entry.claim_until, None, "set ends the claim");
    assert!(
        !core
            .renew(&key, &token, Duration::from_secs(60))
            .await
            .unwrap()
    );

    // A value stays readable while a new claim exists, and release keeps it.
    let Claim::Acquired(token) = core.claim(&key, Duration::from_secs(30)).await.unwrap() else {
        panic!("set ended the old claim");
    };
    let entry = core.get(&key).await.unwrap().unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"v1"[..]));
    assert!(entry.is_claimed());
    core.release(&key, &token).await.unwrap();
    let entry = core.get(&key).await.unwrap().unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"v1"[..]));
    assert_eq!(entry.claim_until, None);

    assert!(core.remove(&key).await.unwrap());
    assert!(!core.remove(&key).await.unwrap());
    assert_eq!(core.get(&key).await.unwrap(), None);
    assert_eq!(ns.count_keys(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_is_as_documented() {
    let ns = guard("layout");
    let core = core_at(&redis_url()).await;
    let key = ns.key("a:b{c}%d", 7);
    core.set(
        &key,
        Bytes::from_static(b"xyz"),
        Timestamp(0x0102_0304_0506),
    )
    .await
    .unwrap();
    let Claim::Acquired(token) = core.claim(&key, Duration::from_secs(30)).await.unwrap() else {
        panic!("claim on a fresh key");
    };
    let entry_name = format!(
        "{{{}:a%3Ab%7Bc%7D%25d:{}}}",
        ns.namespace,
        key.hash.to_hex()
    );
    let mut admin = admin(&redis_url());
    let raw: Vec<u8> = redis::cmd("GET")
        .arg(&entry_name)
        .query(&mut admin)
        .unwrap();
    assert_eq!(raw, b"\x01\x00\x00\x01\x02\x03\x04\x05\x06xyz");
    let claim: String = redis::cmd("GET")
        .arg(format!("{entry_name}:claim"))
        .query(&mut admin)
        .unwrap();
    assert!(claim.ends_with(&format!(":{}", token.as_str())), "{claim}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{entry_name}:claim"))
        .query(&mut admin)
        .unwrap();
    assert!((25_000..=30_000).contains(&pttl), "{pttl}");
    // Entry and claim share one cluster slot.
    let mut slot = |name: String| -> i64 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(name)
            .query(&mut admin)
            .unwrap_or(-1)
    };
    if slot(entry_name.clone()) >= 0 {
        assert_eq!(
            slot(entry_name.clone()),
            slot(format!("{entry_name}:claim"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_of_many_racing_claimers_acquires() {
    let ns = guard("claim_race");
    let cores = [core_at(&redis_url()).await, core_at(&redis_url()).await];
    let key = ns.key("race", 1);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let core = cores[i % 2].clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            core.claim(&key, Duration::from_secs(30)).await.unwrap()
        }));
    }
    let mut acquired = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Claim::Acquired(_)) {
            acquired += 1;
        }
    }
    assert_eq!(acquired, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_frees_the_key() {
    let ns = guard("lease_expiry");
    let core = core_at(&redis_url()).await;
    let key = ns.key("f", 1);
    let Claim::Acquired(token) = core.claim(&key, Duration::from_millis(150)).await.unwrap() else {
        panic!("cold key");
    };
    assert!(matches!(
        core.claim(&key, Duration::from_secs(5)).await.unwrap(),
        Claim::Held { .. }
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(core.get(&key).await.unwrap(), None);
    assert!(
        !core
            .renew(&key, &token, Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(matches!(
        core.claim(&key, Duration::from_secs(5)).await.unwrap(),
        Claim::Acquired(_)
    ));
}

/// The wake-up comes from pub/sub: the lease is long and the safety poll is longer than the
/// test, so only the published message can end the wait this early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_is_woken_by_set_from_another_connection() {
    let ns = guard("wait_set");
    let config = Config::from_url(&redis_url())
        .unwrap()
        .with_wait_poll_interval(Duration::from_secs(60));
    let waiter = Arc::new(RedisCore::connect(config).await.unwrap());
    let writer = core_at(&redis_url()).await;
    let key = ns.key("slow", 1);
    let Claim::Acquired(_token) = writer.claim(&key, Duration::from_secs(60)).await.unwrap() else {
        panic!("cold key");
    };
    let started = Instant::now();
    let wait = tokio::spawn({
        let (waiter, key) = (waiter.clone(), key.clone());
        async move { waiter.wait(&key, Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer
        .set(&key, Bytes::from_static(b"done"), Timestamp::now())
        .await
        .unwrap();
    let entry = wait.await.unwrap().unwrap().expect("the value");
    let waited = started.elapsed();
    assert_eq!(entry.value.as_deref(), Some(&b"done"[..]));
    assert!(!entry.is_claimed());
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "woken late: {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_is_woken_by_release_and_by_clear_claims() {
    let ns = guard("wait_release");
    let config = Config::from_url(&redis_url())
        .unwrap()
        .with_wait_poll_interval(Duration::from_secs(60));
    let waiter = Arc::new(RedisCore::connect(config).await.unwrap());
    let holder = core_at(&redis_url()).await;
    for how in ["release", "clear_claims"] {
        let key = ns.key(how, 1);
        let Claim::Acquired(token) = holder.claim(&key, Duration::from_secs(60)).await.unwrap()
        else {
            panic!("cold key");
        };
        let started = Instant::now();
        let wait = tokio::spawn({
            let (waiter, key) = (waiter.clone(), key.clone());
            async move { waiter.wait(&key, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        if how == "release" {
            holder.release(&key, &token).await.unwrap();
        } else {
            assert_eq!(
                holder
                    .clear_claims(&ns.namespace, &func_id(how))
                    .await
                    .unwrap(),
                1
            );
        }
        assert_eq!(wait.await.unwrap().unwrap(), None, "{how}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{how}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ends_at_lease_expiry_or_timeout() {
    let ns = guard("wait_expiry");
    let core = core_at(&redis_url()).await;

    // A lease that runs out publishes nothing; the waiter wakes at the expiry it read.
    let key = ns.key("expiring", 1);
    core.claim(&key, Duration::from_millis(400)).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        core.wait(&key, Duration::from_secs(20)).await.unwrap(),
        None
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    // A timeout returns the entry with its live claim.
    let key = ns.key("held", 1);
    core.set(&key, Bytes::from_static(b"old"), Timestamp::now())
        .await
        .unwrap();
    core.claim(&key, Duration::from_secs(30)).await.unwrap();
    let started = Instant::now();
    let entry = core
        .wait(&key, Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    assert!(entry.is_claimed());
    assert_eq!(entry.value.as_deref(), Some(&b"old"[..]));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    // No claim: returns at once.
    let started = Instant::now();
    let entry = core
        .wait(&ns.key("free", 1), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(entry, None);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiters_share_one_subscription_and_all_wake() {
    let ns = guard("many_waiters");
    let config = Config::from_url(&redis_url())
        .unwrap()
        .with_wait_poll_interval(Duration::from_secs(60));
    let waiter = Arc::new(RedisCore::connect(config).await.unwrap());
    let writer = core_at(&redis_url()).await;
    let keys: Vec<_> = (0..4).map(|i| ns.key("fanout", i)).collect();
    for key in &keys {
        writer.claim(key, Duration::from_secs(60)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (waiter, key) = (waiter.clone(), keys[i % keys.len()].clone());
        tasks.push(tokio::spawn(async move {
            waiter.wait(&key, Duration::from_secs(30)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    for key in &keys {
        writer
            .set(key, Bytes::from_static(b"v"), Timestamp::now())
            .await
            .unwrap();
    }
    for task in tasks {
        let entry = task.await.unwrap().unwrap().unwrap();
        assert_eq!(entry.value.as_deref(), Some(&b"v"[..]));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_touches_exactly_one_function() {
    let ns = guard("clear_exact");
    let core = core_at(&redis_url()).await;
    let funcs = [
        "foo", "foo_bar", "foo*", "fo?", "f[o]o", "foo:bar", "foo\\", "foo%3A", "fo", "{foo}",
    ];
    for func in funcs {
        for arg in 0..3 {
            core.set(
                &ns.key(func, arg),
                Bytes::from(func.as_bytes().to_vec()),
                Timestamp::now(),
            )
            .await
            .unwrap();
        }
        core.claim(&ns.key(func, 99), Duration::from_secs(60))
            .await
            .unwrap();
    }
    for (i, func) in funcs.iter().enumerate() {
        assert_eq!(
            core.clear_claims(&ns.namespace, &func_id(func))
                .await
                .unwrap(),
            1,
            "{func}"
        );
        assert_eq!(core.get(&ns.key(func, 99)).await.unwrap(), None);
        assert_eq!(
            core.clear(&ns.namespace, &func_id(func)).await.unwrap(),
            3,
            "{func}"
        );
        for (j, other) in funcs.iter().enumerate() {
            let present = core.get(&ns.key(other, 0)).await.unwrap().is_some();
            assert_eq!(
                present,
                j > i,
                "clearing {func:?} and {other:?} is present: {present}"
            );
            if j > i {
                assert!(
                    core.get(&ns.key(other, 99))
                        .await
                        .unwrap()
                        .unwrap()
                        .is_claimed()
                );
            }
        }
        // Claims go too with `clear`.
        core.claim(&ns.key(func, 98), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(core.clear(&ns.namespace, &func_id(func)).await.unwrap(), 0);
        assert_eq!(core.get(&ns.key(func, 98)).await.unwrap(), None);
    }
    assert_eq!(ns.count_keys(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_a_namespace_spares_its_neighbours() {
    let ns = guard("clear_ns");
    let neighbour = guard("clear_ns");
    let core = core_at(&redis_url()).await;
    for (guard, n) in [(&ns, 5u64), (&neighbour, 2)] {
        for arg in 0..n {
            core.set(
                &guard.key("f", arg),
                Bytes::from_static(b"v"),
                Timestamp::now(),
            )
            .await
            .unwrap();
        }
        core.claim(&guard.key("g", 0), Duration::from_secs(60))
            .await
            .unwrap();
    }
    assert_eq!(core.clear_namespace(&ns.namespace).await.unwrap(), 5);
    assert_eq!(ns.count_keys(), 0);
    assert_eq!(neighbour.count_keys(), 3);
    // Many keys: more than one SCAN batch.
    let config = default_config().with_scan_count(10);
    let small_batches = RedisCore::connect(config).await.unwrap();
    for arg in 0..250 {
        core.set(
            &ns.key("bulk", arg),
            Bytes::from_static(b"v"),
            Timestamp::now(),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        small_batches.clear_namespace(&ns.namespace).await.unwrap(),
        250
    );
    assert_eq!(ns.count_keys(), 0);
    let empty = Namespace::new(format!("{}_none", ns.namespace)).unwrap();
    assert_eq!(core.clear_namespace(&empty).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_stale_reads_stored_at_and_spares_the_rest() {
    let ns = guard("delete_stale");
    let core = core_at(&redis_url()).await;
    let cutoff = Timestamp(1_700_000_000_000);
    for arg in 0..30u64 {
        let stored_at = if arg % 3 == 0 {
            Timestamp(cutoff.0 - 1 - arg)
        } else {
            Timestamp(cutoff.0 + arg)
        };
        core.set(&ns.key("f", arg), Bytes::from(vec![7u8; 100]), stored_at)
            .await
            .unwrap();
    }
    core.set(
        &ns.key("f_sibling", 0),
        Bytes::from_static(b"old"),
        Timestamp(1),
    )
    .await
    .unwrap();
    // A foreign string and a hash under entry names of `f`: not ours to judge, left alone.
    let mut admin = admin(&redis_url());
    let foreign = format!("{{{}:f:{}}}", ns.namespace, ns.key("f", 100).hash.to_hex());
    let _: () = redis::cmd("SET")
        .arg(&foreign)
        .arg("x")
        .query(&mut admin)
        .unwrap();
    let hash = format!("{{{}:f:{}}}", ns.namespace, ns.key("f", 101).hash.to_hex());
    let _: () = redis::cmd("HSET")
        .arg(&hash)
        .arg("a")
        .arg("b")
        .query(&mut admin)
        .unwrap();

    let config = default_config().with_scan_count(7);
    let small_batches = RedisCore::connect(config).await.unwrap();
    assert_eq!(
        small_batches
            .delete_stale(&ns.namespace, &func_id("f"), cutoff)
            .await
            .unwrap(),
        10
    );
    for arg in 0..30u64 {
        assert_eq!(
            core.get(&ns.key("f", arg)).await.unwrap().is_some(),
            arg % 3 != 0,
            "{arg}"
        );
    }
    assert!(core.get(&ns.key("f_sibling", 0)).await.unwrap().is_some());
    for name in [&foreign, &hash] {
        let exists: u64 = redis::cmd("EXISTS").arg(name).query(&mut admin).unwrap();
        assert_eq!(exists, 1, "{name}");
    }
    assert_eq!(
        core.delete_stale(&ns.namespace, &func_id("f"), cutoff)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_under_a_key_is_a_miss_and_is_overwritten() {
    let ns = guard("foreign");
    let core = core_at(&redis_url()).await;
    let mut admin = admin(&redis_url());
    let key = ns.key("f", 1);
    let name = format!("{{{}:f:{}}}", ns.namespace, key.hash.to_hex());

    for foreign in [
        &b"hello"[..],
        b"",
        b"\x02\x00\x00\x00\x00\x00\x00\x00\x01abc",
    ] {
        let _: () = redis::cmd("SET")
            .arg(&name)
            .arg(foreign)
            .query(&mut admin)
            .unwrap();
        assert_eq!(core.get(&key).await.unwrap(), None, "{foreign:?}");
    }
    let _: () = redis::cmd("DEL").arg(&name).query(&mut admin).unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(&name)
        .arg("x")
        .query(&mut admin)
        .unwrap();
    assert_eq!(
        core.get(&key).await.unwrap(),
        None,
        "a list under the entry name"
    );
    assert_eq!(
        core.get_value(&key).await.unwrap(),
        None,
        "a list under the entry name, on the hit path"
    );

    // Through the front end: a miss, computed, stored over the foreign data.
    let cache = Cachier::builder(core.clone())
        .with_namespace(ns.namespace.clone())
        .build();
    let f = cache.function(func_id("f"));
    let computed = f.call(&1u64, || async { 41u64 + 1 }).await.unwrap();
    assert_eq!(computed, 42);
    let again = f
        .call(&1u64, || async { unreachable_compute("must be a hit now") })
        .await
        .unwrap();
    assert_eq!(again, 42u64);

    // Bytes in our framing but not a valid envelope: the front end treats them as a miss.
    core.set(&key, Bytes::from_static(b"garbage"), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(f.call(&1u64, || async { 7u64 }).await.unwrap(), 7);
    assert_eq!(
        f.call(&1u64, || async { unreachable_compute("must be a hit") })
            .await
            .unwrap(),
        7u64
    );

    // A claim value this crate did not write still counts as a live claim.
    let claim = format!("{name}:claim");
    let _: () = redis::cmd("SET")
        .arg(&claim)
        .arg("junk")
        .arg("PX")
        .arg(5000)
        .query(&mut admin)
        .unwrap();
    assert!(core.get(&key).await.unwrap().unwrap().is_claimed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_large_values_round_trip() {
    let ns = guard("values");
    let core = core_at(&redis_url()).await;
    let every_byte: Vec<u8> = (0..=255u8).cycle().take(256 * 4).collect();
    let large: Vec<u8> = (0..8 * 1024 * 1024 + 3)
        .map(|i: usize| (i * 31 % 251) as u8)
        .collect();
    for (arg, value) in [Vec::new(), every_byte, large].into_iter().enumerate() {
        let key = ns.key("bytes", arg as u64);
        core.set(&key, Bytes::from(value.clone()), Timestamp(arg as u64))
            .await
            .unwrap();
        let entry = core.get(&key).await.unwrap().unwrap();
        assert_eq!(entry.value.as_deref(), Some(&value[..]));
        assert_eq!(entry.stored_at, Timestamp(arg as u64));
    }
    assert_eq!(
        core.capabilities().max_value_bytes,
        Some(cachier_redis::MAX_VALUE_BYTES)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_callers_compute_once() {
    let ns = guard("single_flight");
    let cores = [core_at(&redis_url()).await, core_at(&redis_url()).await];
    let computations = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let cache = Cachier::builder(cores[i % 2].clone())
            .with_namespace(ns.namespace.clone())
            .wait_for_calc_timeout(Duration::from_secs(20))
            .build();
        let computations = computations.clone();
        tasks.push(tokio::spawn(async move {
            let f = cache.function(func_id("expensive"));
            f.call(&5u64, move || async move {
                computations.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                25u64
            })
            .await
            .unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 25);
    }
    assert_eq!(computations.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A compute function that must not run (the call has to be a hit).
fn unreachable_compute(why: &str) -> u64 {
    panic!("{why}")
}

/// The `PTTL` of a key in milliseconds (-2: no such key, -1: no expiry).
fn pttl_of(admin: &mut Admin, name: &str) -> i64 {
    redis::cmd("PTTL").arg(name).query(admin).unwrap()
}

/// The Redis name of an entry, as `layout_is_as_documented` pins it.
fn entry_name(ns: &NamespaceGuard, func: &str, arg: u64) -> String {
    let key = ns.key(func, arg);
    format!("{{{}:{func}:{}}}", ns.namespace, key.hash.to_hex())
}

/// An entry stored with an expiry carries it as a `PX` on the entry key and disappears from the
/// server by itself, seen in the store (not through the front end); a plain `set` has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_entry_disappears_from_the_store() {
    let ns = guard("expiring");
    let core = core_at(&redis_url()).await;
    let mut admin = admin(&redis_url());
    core.set(
        &ns.key("f", 1),
        Bytes::from_static(b"kept"),
        Timestamp::now(),
    )
    .await
    .unwrap();
    assert_eq!(pttl_of(&mut admin, &entry_name(&ns, "f", 1)), -1);

    let key = ns.key("f", 2);
    let Claim::Acquired(_) = core.claim(&key, Duration::from_secs(30)).await.unwrap() else {
        panic!("claim on a fresh key");
    };
    core.set_expiring(
        &key,
        Bytes::from_static(b"brief"),
        Timestamp::now(),
        Duration::from_millis(400),
    )
    .await
    .unwrap();
    let name = entry_name(&ns, "f", 2);
    let pttl = pttl_of(&mut admin, &name);
    assert!(
        (1..=400).contains(&pttl),
        "PTTL {pttl} after a 400 ms expiry"
    );
    let entry = core
        .get(&key)
        .await
        .unwrap()
        .expect("readable before it expires");
    assert_eq!(entry.value.as_deref(), Some(&b"brief"[..]));
    assert_eq!(
        entry.claim_until, None,
        "set_expiring ends the claim like set"
    );

    let started = Instant::now();
    while pttl_of(&mut admin, &name) != -2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the entry is still stored 10 s after a 400 ms expiry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    let exists: i64 = redis::cmd("EXISTS").arg(&name).query(&mut admin).unwrap();
    assert_eq!(exists, 0);
    assert_eq!(pttl_of(&mut admin, &entry_name(&ns, "f", 1)), -1);
}

/// The front end's `expire_after` reaches the store, raised to `stale_after` when shorter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_after_sets_the_entry_expiry_no_shorter_than_stale_after() {
    let ns = guard("expire_after");
    let core = core_at(&redis_url()).await;
    let mut admin = admin(&redis_url());
    let cache = Cachier::builder(core.clone())
        .with_namespace(ns.namespace.clone())
        .expire_after(Duration::from_secs(60))
        .build();
    let f = cache.function(func_id("g"));
    assert_eq!(f.call(&1u64, || async { 1u64 }).await.unwrap(), 1);
    f.precache(&2u64, &2u64).await.unwrap();
    for arg in [1, 2] {
        let pttl = pttl_of(&mut admin, &entry_name(&ns, "g", arg));
        assert!(
            (50_000..=60_000).contains(&pttl),
            "PTTL {pttl} for a 60 s expiry"
        );
    }

    let raised = Cachier::builder(core)
        .with_namespace(ns.namespace.clone())
        .stale_after(Duration::from_secs(120))
        .expire_after(Duration::from_secs(1))
        .build();
    let f = raised.function(func_id("h"));
    assert_eq!(f.call(&1u64, || async { 1u64 }).await.unwrap(), 1);
    let pttl = pttl_of(&mut admin, &entry_name(&ns, "h", 1));
    assert!(
        (110_000..=120_000).contains(&pttl),
        "PTTL {pttl}: expire_after 1 s is raised to stale_after 120 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_on_one_server_and_not_on_a_cluster() {
    let ns = guard("watch_kind");
    let core = core_at(&redis_url()).await;
    let recorder = crate::common::recorder::Recorder::new();
    if core.config().is_cluster() {
        // Client-side tracking is per node: not done on a cluster (see the crate docs).
        assert_eq!(core.watch(&ns.namespace, recorder.weak()), Watching::No);
        let key = ns.key("f", 1);
        core.set(&key, Bytes::from_static(b"v"), Timestamp::now())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(recorder.reports().is_empty(), "{:?}", recorder.reports());
    } else {
        assert_eq!(
            core.watch(&ns.namespace, recorder.weak()),
            Watching::Asynchronous
        );
        recorder.wait_live(Duration::from_secs(10)).await;
    }
}
