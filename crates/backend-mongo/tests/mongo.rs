//! Behaviour of the MongoDB backend against a real MongoDB wire server (see `common` for how the
//! server is found). Each test works in its own namespace, dropped afterwards.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cachier_core::{ArgHash, Claim, ClaimToken, Core, ErrorKind, FuncId, Key, Timestamp};
use cachier_mongo::mongodb::bson::{
    Binary, Bson, Document, doc, oid::ObjectId, spec::BinarySubtype,
};
use cachier_mongo::{MAX_VALUE_BYTES, MongoCore};
use common::TestNamespace;

fn func(name: &str) -> FuncId {
    FuncId::new(format!("cachier_mongo::tests::{name}")).unwrap()
}

fn key(ns: &TestNamespace, func: &FuncId, arg: u64) -> Key {
    Key::new(
        ns.namespace.clone(),
        func.clone(),
        ArgHash::of(&arg).unwrap(),
    )
}

fn binary(bytes: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    })
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis() as i64
}

async fn documents(core: &MongoCore, ns: &TestNamespace, filter: Document) -> u64 {
    core.collection(&ns.namespace)
        .count_documents(filter)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn values_round_trip_with_every_byte_and_their_time() {
    let core = common::connect().await;
    let ns = TestNamespace::new("round_trip");
    let f = func("round_trip");
    let k = key(&ns, &f, 1);

    assert_eq!(core.get(&k).await.unwrap(), None);
    let value: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    core.set(&k, Bytes::from(value.clone()), Timestamp(1_700_000_000_123))
        .await
        .unwrap();
    let entry = core.get(&k).await.unwrap().expect("a stored value");
    assert_eq!(entry.value.as_deref(), Some(&value[..]));
    assert_eq!(entry.stored_at, Timestamp(1_700_000_000_123));
    assert_eq!(entry.claim_until, None);

    core.set(&k, Bytes::from_static(b""), Timestamp(5))
        .await
        .unwrap();
    let entry = core
        .get(&k)
        .await
        .unwrap()
        .expect("an empty value is a value");
    assert_eq!(entry.value.as_deref(), Some(&b""[..]));
    assert_eq!(
        documents(&core, &ns, doc! {}).await,
        1,
        "set overwrites in place"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_concurrent_claims_leave_one_winner_and_one_document() {
    let ns = TestNamespace::new("claim_race");
    let f = func("claim_race");
    let k = key(&ns, &f, 16);
    // Separate clients, so the claims travel over separate connections and truly race.
    let mut cores = Vec::new();
    for _ in 0..16 {
        cores.push(Arc::new(common::connect().await));
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(cores.len()));
    let mut tasks = Vec::new();
    for core in &cores {
        let (core, barrier, k) = (core.clone(), barrier.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            core.claim(&k, Duration::from_secs(30)).await
        }));
    }
    let mut tokens = Vec::new();
    let mut held_until = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Claim::Acquired(token) => tokens.push(token),
            Claim::Held { until } => held_until.push(until),
        }
    }
    assert_eq!(tokens.len(), 1, "exactly one winner, got {tokens:?}");
    assert_eq!(held_until.len(), 15);
    let entry = cores[0]
        .get(&k)
        .await
        .unwrap()
        .expect("the claim is visible");
    let until = entry.claim_until.expect("a live claim");
    assert!(
        held_until.iter().all(|t| *t == until),
        "losers see the winner's expiry"
    );
    assert_eq!(documents(&cores[0], &ns, doc! {}).await, 1);
    assert_eq!(
        documents(&cores[0], &ns, doc! { "claim_token": tokens[0].as_str() }).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_renew_release_and_end_with_a_value() {
    let core = common::connect().await;
    let ns = TestNamespace::new("claim_cycle");
    let f = func("claim_cycle");
    let k = key(&ns, &f, 2);
    let lease = Duration::from_secs(30);

    let Claim::Acquired(token) = core.claim(&k, lease).await.unwrap() else {
        panic!("a cold key is claimable");
    };
    let Claim::Held { until } = core.claim(&k, lease).await.unwrap() else {
        panic!("a claimed key is held");
    };
    let entry = core.get(&k).await.unwrap().expect("a claim-only entry");
    assert_eq!(entry.value, None);
    assert_eq!(entry.claim_until, Some(until));

    let stranger = ClaimToken::generate();
    assert!(!core.renew(&k, &stranger, lease).await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        core.renew(&k, &token, Duration::from_secs(60))
            .await
            .unwrap()
    );
    let renewed = core.get(&k).await.unwrap().unwrap().claim_until.unwrap();
    assert!(renewed > until, "{renewed:?} extends {until:?}");

    core.release(&k, &stranger).await.unwrap();
    assert!(
        core.get(&k).await.unwrap().unwrap().is_claimed(),
        "a stranger cannot release"
    );
    core.release(&k, &token).await.unwrap();
    assert_eq!(core.get(&k).await.unwrap(), None);
    assert_eq!(
        documents(&core, &ns, doc! {}).await,
        0,
        "a released claim leaves nothing"
    );

    // A value stays readable under a claim, and storing a value ends the claim.
    core.set(&k, Bytes::from_static(b"old"), Timestamp::now())
        .await
        .unwrap();
    let Claim::Acquired(token) = core.claim(&k, lease).await.unwrap() else {
        panic!("a key with a value and no claim is claimable");
    };
    let entry = core.get(&k).await.unwrap().unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"old"[..]));
    assert!(entry.is_claimed());
    core.set(&k, Bytes::from_static(b"new"), Timestamp::now())
        .await
        .unwrap();
    let entry = core.get(&k).await.unwrap().unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"new"[..]));
    assert_eq!(entry.claim_until, None);
    assert!(
        !core.renew(&k, &token, lease).await.unwrap(),
        "set ended the claim"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_frees_the_key() {
    let core = common::connect().await;
    let ns = TestNamespace::new("lease_expiry");
    let k = key(&ns, &func("lease_expiry"), 3);

    let Claim::Acquired(dead) = core.claim(&k, Duration::from_millis(1500)).await.unwrap() else {
        panic!("a cold key is claimable");
    };
    assert!(matches!(
        core.claim(&k, Duration::from_secs(5)).await.unwrap(),
        Claim::Held { .. }
    ));
    // A lease long enough that the claim right after it is still refused on a loaded machine.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        core.get(&k).await.unwrap(),
        None,
        "an expired claim is no claim"
    );
    assert!(!core.renew(&k, &dead, Duration::from_secs(5)).await.unwrap());
    assert!(matches!(
        core.claim(&k, Duration::from_secs(5)).await.unwrap(),
        Claim::Acquired(_)
    ));
    assert_eq!(documents(&core, &ns, doc! {}).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn values_at_the_size_limit_are_stored_and_beyond_it_refused() {
    let core = common::connect().await;
    let ns = TestNamespace::new("size_limit");
    let k = key(&ns, &func("size_limit"), 4);
    assert_eq!(core.capabilities().max_value_bytes, Some(MAX_VALUE_BYTES));

    let limit = MAX_VALUE_BYTES as usize;
    let mut largest = vec![0xA5u8; limit];
    largest[0] = 0;
    largest[limit - 1] = 0xFF;
    let largest = Bytes::from(largest);
    core.set(&k, largest.clone(), Timestamp::now())
        .await
        .unwrap();
    let stored = core.get(&k).await.unwrap().unwrap().value.unwrap();
    assert_eq!(stored.len(), limit);
    assert!(stored == largest, "the largest value round-trips unchanged");

    let other = key(&ns, &func("size_limit"), 5);
    let err = core
        .set(&other, Bytes::from(vec![1u8; limit + 1]), Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert_eq!(err.operation(), Some("set"));
    assert_eq!(err.backend(), Some("mongo"));
    assert!(
        err.to_string().contains(&MAX_VALUE_BYTES.to_string()),
        "{err}"
    );
    assert_eq!(core.get(&other).await.unwrap(), None, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_or_malformed_documents_are_misses_and_get_overwritten() {
    let core = common::connect().await;
    let ns = TestNamespace::new("foreign_docs");
    let f = func("foreign_docs");
    let collection = core.collection(&ns.namespace);
    let future = now_ms() + 60_000;
    let cases: Vec<(u64, Document)> = vec![
        (10, doc! { "value": "not binary", "stored_at": now_ms() }),
        (11, doc! { "value": binary(b"no time") }),
        (
            12,
            doc! { "value": binary(b"bad time"), "stored_at": "yesterday" },
        ),
        (
            13,
            doc! { "value": binary(b"negative"), "stored_at": -1i64 },
        ),
        (14, doc! { "value": [1, 2, 3], "stored_at": 1.5 }),
        (15, doc! { "claim_until": "tomorrow", "claim_token": 7 }),
        (16, doc! { "claim_until": future as f64 }),
        (17, doc! {}),
    ];
    for (arg, fields) in &cases {
        // Written by someone else: no deterministic `_id`, odd types.
        let mut doc = doc! {
            "_id": ObjectId::new(),
            "func": f.as_str(),
            "key": ArgHash::of(arg).unwrap().to_hex(),
        };
        doc.extend(fields.clone());
        collection.insert_one(doc).await.unwrap();
    }
    for (arg, fields) in &cases {
        let k = key(&ns, &f, *arg);
        assert_eq!(core.get(&k).await.unwrap(), None, "{fields} is a miss");
        let claim = core.claim(&k, Duration::from_secs(30)).await.unwrap();
        assert!(
            matches!(claim, Claim::Acquired(_)),
            "{fields} cannot block a claim"
        );
        core.set(&k, Bytes::from(arg.to_le_bytes().to_vec()), Timestamp(9))
            .await
            .unwrap();
        let entry = core
            .get(&k)
            .await
            .unwrap()
            .expect("the value replaced the foreign one");
        assert_eq!(entry.value.as_deref(), Some(&arg.to_le_bytes()[..]));
        assert_eq!(entry.stored_at, Timestamp(9));
    }
    assert_eq!(
        documents(&core, &ns, doc! {}).await,
        cases.len() as u64,
        "updated in place"
    );

    // A valid value under a malformed claim is still a hit.
    let k = key(&ns, &f, 20);
    core.set(&k, Bytes::from_static(b"ok"), Timestamp(3))
        .await
        .unwrap();
    collection
        .update_one(
            doc! { "key": k.hash.to_hex() },
            doc! { "$set": { "claim_until": [future] } },
        )
        .await
        .unwrap();
    let entry = core.get(&k).await.unwrap().unwrap();
    assert_eq!(entry.value.as_deref(), Some(&b"ok"[..]));
    assert_eq!(entry.claim_until, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn clearing_acts_on_exactly_one_function() {
    let core = common::connect().await;
    let ns = TestNamespace::new("clear_one");
    let foo = func("foo");
    let foo_bar = func("foo_bar");
    let lease = Duration::from_secs(30);
    for arg in 0..3 {
        core.set(
            &key(&ns, &foo, arg),
            Bytes::from_static(b"f"),
            Timestamp(100),
        )
        .await
        .unwrap();
        core.set(
            &key(&ns, &foo_bar, arg),
            Bytes::from_static(b"b"),
            Timestamp(100),
        )
        .await
        .unwrap();
    }
    assert!(matches!(
        core.claim(&key(&ns, &foo, 0), lease).await.unwrap(),
        Claim::Acquired(_)
    ));
    assert!(matches!(
        core.claim(&key(&ns, &foo, 9), lease).await.unwrap(),
        Claim::Acquired(_)
    ));
    assert!(matches!(
        core.claim(&key(&ns, &foo_bar, 0), lease).await.unwrap(),
        Claim::Acquired(_)
    ));

    assert_eq!(core.clear_claims(&ns.namespace, &foo).await.unwrap(), 2);
    assert!(
        !core
            .get(&key(&ns, &foo, 0))
            .await
            .unwrap()
            .unwrap()
            .is_claimed()
    );
    assert_eq!(core.get(&key(&ns, &foo, 9)).await.unwrap(), None);
    assert!(
        core.get(&key(&ns, &foo_bar, 0))
            .await
            .unwrap()
            .unwrap()
            .is_claimed()
    );

    assert_eq!(core.clear(&ns.namespace, &foo).await.unwrap(), 3);
    for arg in 0..3 {
        assert_eq!(core.get(&key(&ns, &foo, arg)).await.unwrap(), None);
        assert!(
            core.get(&key(&ns, &foo_bar, arg)).await.unwrap().is_some(),
            "sibling kept"
        );
    }
    assert!(core.remove(&key(&ns, &foo_bar, 1)).await.unwrap());
    assert!(!core.remove(&key(&ns, &foo_bar, 1)).await.unwrap());
    assert_eq!(
        documents(&core, &ns, doc! { "func": foo.as_str() }).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_stale_keeps_fresh_values_and_live_claims() {
    let core = common::connect().await;
    let ns = TestNamespace::new("delete_stale");
    let f = func("stale");
    let sibling = func("stale_other");
    core.set(
        &key(&ns, &f, 1),
        Bytes::from_static(b"old"),
        Timestamp(1_000),
    )
    .await
    .unwrap();
    core.set(
        &key(&ns, &f, 2),
        Bytes::from_static(b"old"),
        Timestamp(1_000),
    )
    .await
    .unwrap();
    core.set(
        &key(&ns, &f, 3),
        Bytes::from_static(b"new"),
        Timestamp(5_000),
    )
    .await
    .unwrap();
    core.set(
        &key(&ns, &sibling, 1),
        Bytes::from_static(b"old"),
        Timestamp(1_000),
    )
    .await
    .unwrap();
    let Claim::Acquired(_) = core
        .claim(&key(&ns, &f, 2), Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("claimable");
    };

    assert_eq!(
        core.delete_stale(&ns.namespace, &f, Timestamp(2_000))
            .await
            .unwrap(),
        2
    );
    assert_eq!(core.get(&key(&ns, &f, 1)).await.unwrap(), None);
    let claimed = core
        .get(&key(&ns, &f, 2))
        .await
        .unwrap()
        .expect("the claim stays");
    assert_eq!(claimed.value, None);
    assert!(claimed.is_claimed());
    assert!(core.get(&key(&ns, &f, 3)).await.unwrap().is_some());
    assert!(core.get(&key(&ns, &sibling, 1)).await.unwrap().is_some());
    // The largest cut-off does not overflow (cachier's OverflowError with its default).
    assert_eq!(
        core.delete_stale(&ns.namespace, &f, Timestamp(u64::MAX))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_is_one_collection_with_a_unique_index() {
    let core = common::connect().await;
    let ns = TestNamespace::new("layout");
    let other = TestNamespace::new("layout_other");
    let f = func("layout");
    let k = key(&ns, &f, 1);
    let k_other = key(&other, &f, 1);
    core.set(&k, Bytes::from_static(b"here"), Timestamp(1))
        .await
        .unwrap();
    core.set(&k_other, Bytes::from_static(b"there"), Timestamp(2))
        .await
        .unwrap();
    assert_eq!(
        core.get(&k).await.unwrap().unwrap().value.as_deref(),
        Some(&b"here"[..])
    );

    let name = core.config().collection_name(&ns.namespace);
    let names = core.database().list_collection_names().await.unwrap();
    assert!(names.contains(&name), "{name} in {names:?}");
    let mut indexes = core.collection(&ns.namespace).list_indexes().await.unwrap();
    let mut unique_func_key = false;
    while indexes.advance().await.unwrap() {
        let index = indexes.deserialize_current().unwrap();
        let keys: Vec<&str> = index.keys.keys().map(String::as_str).collect();
        if keys == ["func", "key"] && index.options.and_then(|o| o.unique) == Some(true) {
            unique_func_key = true;
        }
    }
    assert!(unique_func_key, "a unique (func, key) index exists");

    let doc = core
        .collection(&ns.namespace)
        .find_one(doc! {})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.get_str("func").unwrap(), f.as_str());
    assert_eq!(doc.get_str("key").unwrap(), k.hash.to_hex());
    // MongoDB keeps the 64-bit integer; nx-27017 hands small integers back as 32-bit ones.
    assert!(
        matches!(doc.get("stored_at"), Some(Bson::Int64(1) | Bson::Int32(1))),
        "{doc}"
    );
    assert!(doc.get_binary_generic("value").is_ok());

    assert_eq!(core.clear_namespace(&ns.namespace).await.unwrap(), 1);
    let names = core.database().list_collection_names().await.unwrap();
    assert!(
        !names.contains(&name),
        "the collection was dropped: {names:?}"
    );
    assert!(
        core.get(&k_other).await.unwrap().is_some(),
        "other namespaces are untouched"
    );
    // The collection comes back, indexed again, on the next write.
    core.set(&k, Bytes::from_static(b"again"), Timestamp(3))
        .await
        .unwrap();
    let Claim::Held { .. } = ({
        core.claim(&k, Duration::from_secs(30)).await.unwrap();
        core.claim(&k, Duration::from_secs(30)).await.unwrap()
    }) else {
        panic!("the unique index makes a second claim fail");
    };
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absent_server_fails_fast_as_unavailable() {
    // Port 9 (discard) has no MongoDB server on any machine this runs on.
    let config = common::config_for("mongodb://127.0.0.1:9")
        .server_selection_timeout(Duration::from_millis(300));
    let core = MongoCore::connect(config)
        .await
        .expect("connecting is lazy");
    // Nothing is written, so no namespace needs cleaning up.
    let namespace = cachier_core::Namespace::new("absent").unwrap();
    let k = Key::new(namespace, func("absent"), ArgHash::of(&1u8).unwrap());
    let started = std::time::Instant::now();
    let err = core.get(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert_eq!(err.operation(), Some("get"));
    assert_eq!(err.key(), Some(k.to_string().as_str()));
    let err = core.claim(&k, Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// An entry stored with an expiry carries an `expire_at` date under a TTL index, and the server
/// removes its document by itself (seen in the collection, not through the core); a plain `set`
/// removes the date again. Real MongoDB's TTL monitor runs once a minute, so this waits up to
/// two; nx-27017 purges on its next operation.
#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_entry_disappears_from_the_store() {
    let core = common::connect().await;
    let ns = TestNamespace::new("expiring");
    let f = func("expiring");
    let (brief, kept) = (key(&ns, &f, 1), key(&ns, &f, 2));
    core.set_expiring(
        &kept,
        Bytes::from_static(b"kept"),
        Timestamp::now(),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    core.set(&kept, Bytes::from_static(b"kept"), Timestamp::now())
        .await
        .unwrap();
    let Claim::Acquired(_) = core.claim(&brief, Duration::from_secs(30)).await.unwrap() else {
        panic!("claim on a fresh key");
    };
    core.set_expiring(
        &brief,
        Bytes::from_static(b"brief"),
        Timestamp::now(),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    let entry = core
        .get(&brief)
        .await
        .unwrap()
        .expect("readable before it expires");
    assert_eq!(entry.value.as_deref(), Some(&b"brief"[..]));
    assert_eq!(
        entry.claim_until, None,
        "set_expiring ends the claim like set"
    );

    let collection = core.collection(&ns.namespace);
    let doc = collection
        .find_one(doc! { "key": brief.hash.to_hex() })
        .await
        .unwrap()
        .expect("the document");
    // MongoDB keeps the BSON date; nx-27017 stores dates as ISO text (and purges by it).
    assert!(
        matches!(
            doc.get("expire_at"),
            Some(Bson::DateTime(_) | Bson::String(_))
        ),
        "an expire_at date: {doc}"
    );
    let kept_doc = collection
        .find_one(doc! { "key": kept.hash.to_hex() })
        .await
        .unwrap()
        .expect("the document");
    assert!(
        kept_doc.get("expire_at").is_none(),
        "a plain set removes the date: {kept_doc}"
    );
    let mut ttl_index = false;
    let mut indexes = collection.list_indexes().await.unwrap();
    while indexes.advance().await.unwrap() {
        let index = indexes.deserialize_current().unwrap();
        let keys: Vec<&str> = index.keys.keys().map(String::as_str).collect();
        if keys == ["expire_at"]
            && index.options.and_then(|o| o.expire_after) == Some(Duration::ZERO)
        {
            ttl_index = true;
        }
    }
    assert!(ttl_index, "a TTL index on expire_at exists");

    let started = std::time::Instant::now();
    loop {
        let left = documents(&core, &ns, doc! { "key": brief.hash.to_hex() }).await;
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(130),
            "the document is still stored 130 s after a 500 ms expiry"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        documents(&core, &ns, doc! { "key": kept.hash.to_hex() }).await,
        1,
        "the value stored without expiry stays"
    );
}
