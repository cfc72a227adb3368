//! Near copies stay true: with a near cache on, a call never returns a value the backend's own
//! value would not be, past the moment the near cache may know of the change.
//!
//! Each check builds its front end with a near cache the way users turn it on for this
//! backend: `NearCache::new()` where the backend reports changes ([`Core::watch`]), and
//! `NearCache::new().ttl(NEAR_TTL)` where it does not. When a change made elsewhere (another
//! front end, or the `Core` itself) must be seen depends on that:
//!
//! - reported synchronously (memory): by the first call after the change returned;
//! - reported asynchronously (Redis): within [`REPORT_DEADLINE`], polling; until then only the
//!   old value, and never the old value again once the new one was seen;
//! - not reported (a `ttl`): by the first call begun [`NEAR_TTL`] after the change returned.
//!
//! Changes made through the front end itself are seen at once whatever the backend.
//!
//! [`Core::watch`]: crate::Core::watch

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use super::{counter, sealed};
use crate::conformance::{Harness, Outcome, Scope, func_id};
use crate::{Cachier, CallOptions, NearCache, Timestamp, Watching};

/// The time to live of the near cache on a backend that does not report changes.
pub const NEAR_TTL: Duration = Duration::from_millis(400);

/// The longest an asynchronously reporting backend may take to report a change.
pub const REPORT_DEADLINE: Duration = Duration::from_secs(5);

/// When a near cache learns of a change made elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Learns {
    /// Before the change returns.
    AtOnce,
    /// Within this long after it returned.
    Within(Duration),
    /// Its copies live this long at most.
    ByTtl(Duration),
}

/// A front end over the scope with a near cache of `bounds`, as users turn it on for this
/// backend, and when it learns of changes made elsewhere.
fn near_front(s: &Scope, bounds: NearCache) -> (Cachier, Learns) {
    let cache = s.builder().near_cache(bounds).build();
    match cache.near_cache_coherence() {
        Some(Watching::Synchronous) => (cache, Learns::AtOnce),
        Some(Watching::Asynchronous) => (cache, Learns::Within(REPORT_DEADLINE)),
        other => {
            assert_eq!(
                other, None,
                "a near cache without a ttl on a backend that does not report changes"
            );
            let cache = s.builder().near_cache(bounds.ttl(NEAR_TTL)).build();
            assert_eq!(
                cache.near_cache_coherence(),
                Some(Watching::No),
                "a near cache with a ttl is built whatever the backend"
            );
            (cache, Learns::ByTtl(NEAR_TTL))
        }
    }
}

/// Calls `call` until it returns `new`: at once, or, as `learns` allows after the change that
/// returned at `changed`, one of `old` until then. Then three more calls must return `new`.
async fn sees<V, F, Fut>(what: &str, learns: Learns, changed: Instant, old: &[V], new: V, call: F)
where
    V: PartialEq + Debug,
    F: Fn() -> Fut,
    Fut: Future<Output = V>,
{
    loop {
        let began = Instant::now();
        let got = call().await;
        if got == new {
            break;
        }
        assert!(
            old.contains(&got),
            "{what}: a call returned {got:?}; expected {new:?} (or, until the change is seen, \
             one of {old:?})"
        );
        let late = began.saturating_duration_since(changed);
        match learns {
            Learns::AtOnce => panic!(
                "{what}: a call begun after the change returned got the old value {got:?} \
                 (the backend reports changes synchronously)"
            ),
            Learns::Within(deadline) => assert!(
                late < deadline,
                "{what}: still {got:?} {late:?} after the change (reports are due within \
                 {deadline:?})"
            ),
            Learns::ByTtl(ttl) => assert!(
                late < ttl,
                "{what}: a near copy {got:?} served {late:?} after the change, past the near \
                 cache's ttl of {ttl:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..3 {
        let got = call().await;
        assert!(
            got == new,
            "{what}: {got:?} returned after {new:?} had been"
        );
    }
}

/// Changes from another front end and from the core itself — same-length values stored in the
/// same millisecond, a removal, a clear, a `delete_stale`, a `clear_namespace` — are seen by a
/// front end serving hits from its near cache, when its backend lets it know.
pub async fn near_copies_follow_changes_from_elsewhere(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let (cache, learns) = near_front(&s, NearCache::new());
    let ours = cache.function(func_id("f"));
    let theirs = s.cache().function(func_id("f"));
    let runs = counter();
    let call = |fallback: &'static str| {
        let (f, runs) = (ours.clone(), runs.clone());
        async move {
            f.call(&7u8, move || async move {
                runs.fetch_add(1, SeqCst);
                fallback.to_string()
            })
            .await
            .expect("call")
        }
    };
    assert_eq!(call("one").await, "one");
    for _ in 0..3 {
        assert_eq!(call("xxx").await, "one", "a hit");
    }

    h.step("another front end stores a value of the same length");
    theirs
        .precache(&7u8, &"two".to_string())
        .await
        .expect("precache");
    let changed = Instant::now();
    sees(
        "precache elsewhere",
        learns,
        changed,
        &["one".into()],
        "two".to_string(),
        || call("xxx"),
    )
    .await;

    h.step("the core stores values of the same length at the same millisecond");
    let key = ours.key(&7u8).expect("key");
    let at = Timestamp::now();
    let mut previous = "two".to_string();
    for value in ["333", "444"] {
        s.core
            .set(&key, sealed(&value.to_string()), at)
            .await
            .expect("set");
        let changed = Instant::now();
        sees(
            "set in the core",
            learns,
            changed,
            &[previous],
            value.to_string(),
            || call("xxx"),
        )
        .await;
        previous = value.to_string();
    }

    h.step("another front end removes it");
    assert!(theirs.remove(&7u8).await.expect("remove"));
    let changed = Instant::now();
    sees(
        "remove elsewhere",
        learns,
        changed,
        &["444".into()],
        "555".to_string(),
        || call("555"),
    )
    .await;

    h.step("another front end clears the function");
    assert_eq!(theirs.clear().await.expect("clear"), 1);
    let changed = Instant::now();
    sees(
        "clear elsewhere",
        learns,
        changed,
        &["555".into()],
        "666".to_string(),
        || call("666"),
    )
    .await;

    h.step("the core removes it");
    assert!(s.core.remove(&key).await.expect("remove"));
    let changed = Instant::now();
    sees(
        "remove in the core",
        learns,
        changed,
        &["666".into()],
        "777".to_string(),
        || call("777"),
    )
    .await;

    h.step("the core deletes it as stale");
    let cut = Timestamp::now().add(Duration::from_millis(2));
    tokio::time::sleep(Duration::from_millis(3)).await;
    let deleted = s
        .core
        .delete_stale(&s.namespace, &key.func, cut)
        .await
        .expect("delete_stale");
    assert_eq!(
        deleted, 1,
        "delete_stale of the one value stored before the cut"
    );
    let changed = Instant::now();
    sees(
        "delete_stale in the core",
        learns,
        changed,
        &["777".into()],
        "888".to_string(),
        || call("888"),
    )
    .await;

    h.step("the core clears the namespace");
    s.core
        .clear_namespace(&s.namespace)
        .await
        .expect("clear_namespace");
    let changed = Instant::now();
    sees(
        "clear_namespace in the core",
        learns,
        changed,
        &["888".into()],
        "999".to_string(),
        || call("999"),
    )
    .await;
    assert_eq!(
        runs.load(SeqCst),
        6,
        "one, 555, 666, 777, 888 and 999 were computed, each once"
    );
    Outcome::Passed
}

/// Changes made through the front end that keeps the near copies (through any handle of its
/// functions) are seen by its next call, whatever the backend.
pub async fn near_copies_follow_own_changes(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let (cache, _) = near_front(&s, NearCache::new());
    let reader = cache.function(func_id("f"));
    let writer = cache.function(func_id("f"));
    let call = |fallback: u32| {
        let f = reader.clone();
        async move {
            f.call(&1u8, move || async move { fallback })
                .await
                .expect("call")
        }
    };
    let warm = |expected: u32| {
        let call = &call;
        async move {
            for _ in 0..3 {
                assert_eq!(call(0).await, expected, "hits");
            }
        }
    };
    assert_eq!(call(1).await, 1);
    warm(1).await;

    h.step("precache");
    writer.precache(&1u8, &2u32).await.expect("precache");
    assert_eq!(
        call(0).await,
        2,
        "a precached value replaces the copy at once"
    );
    warm(2).await;

    h.step("overwrite_cache");
    let overwritten: u32 = writer
        .call_with(
            CallOptions::default().overwrite_cache(true),
            &1u8,
            || async { 3 },
        )
        .await
        .expect("overwrite");
    assert_eq!(overwritten, 3);
    assert_eq!(
        call(0).await,
        3,
        "an overwritten value replaces the copy at once"
    );
    warm(3).await;

    h.step("remove");
    assert!(writer.remove(&1u8).await.expect("remove"));
    assert_eq!(call(4).await, 4, "computed after the removal");
    warm(4).await;

    h.step("clear");
    assert_eq!(writer.clear().await.expect("clear"), 1);
    assert_eq!(call(5).await, 5, "computed after the clear");
    warm(5).await;

    h.step("delete_stale");
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert_eq!(writer.delete_stale().await.expect("delete_stale"), 1);
    assert_eq!(call(6).await, 6, "computed after delete_stale");
    warm(6).await;

    h.step("skip_cache and the cache's switch");
    let skipped: u32 = writer
        .call_with(CallOptions::default().skip_cache(true), &1u8, || async {
            7
        })
        .await
        .expect("skip_cache");
    assert_eq!(skipped, 7, "skip_cache computes");
    cache.set_enabled(false);
    assert_eq!(call(8).await, 8, "caching off computes");
    cache.set_enabled(true);
    assert_eq!(call(0).await, 6, "neither stored anything");
    Outcome::Passed
}

/// A near copy is served only while the stored value would be: fresh under `stale_after` and
/// the call's `max_age`, and a `None` only to handles that allow it.
pub async fn near_copies_are_served_only_while_fresh(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let (cache, _) = near_front(&s, NearCache::new());
    // Long enough that a slow server (the MongoDB wire server under the whole matrix) stores,
    // releases and reads back a value well within it.
    const STALE_AFTER: Duration = Duration::from_secs(2);
    let f = cache
        .function(func_id("f"))
        .configure(|settings| settings.stale_after = Some(STALE_AFTER));
    let next = Arc::new(AtomicU64::new(0));
    let call = |opts: CallOptions| {
        let (f, next) = (f.clone(), next.clone());
        async move {
            f.call_with(opts, &1u8, move || async move { next.fetch_add(1, SeqCst) })
                .await
                .expect("call")
        }
    };
    let plain = || call(CallOptions::default());

    // A call begun less than `stale_after` after the call that stored the value began must
    // serve it; later ones (a slow server) cannot be judged and only count as calls.
    let hits = |expected: u64, since: Instant, what: &'static str| async move {
        for _ in 0..3 {
            let began = Instant::now();
            let got = plain().await;
            if began.duration_since(since) < STALE_AFTER {
                assert_eq!(got, expected, "{what}");
            }
        }
    };

    h.step("a value, then hits");
    let storing = Instant::now();
    assert_eq!(plain().await, 0);
    let stored = Instant::now();
    hits(0, storing, "hits").await;

    h.step("max_age shorter than the value's age");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let aged = stored.elapsed();
    let storing = Instant::now();
    let got = call(CallOptions::default().max_age(Duration::from_millis(100))).await;
    assert_eq!(
        got, 1,
        "a value {aged:?} old served to a call with max_age 100ms"
    );
    let stored = Instant::now();
    hits(1, storing, "hits after the recomputation").await;

    h.step("the value goes stale");
    loop {
        let began = Instant::now();
        let got = plain().await;
        if got == 2 {
            break;
        }
        assert_eq!(
            got, 1,
            "a value that is neither the old nor the recomputed one"
        );
        // `stored` was taken after the value was stored: a call begun `stale_after` (plus the
        // millisecond stored_at is rounded to) later must not serve it.
        let age = began.saturating_duration_since(stored);
        assert!(
            age < STALE_AFTER + Duration::from_millis(2),
            "a value at least {age:?} old was served under stale_after {STALE_AFTER:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(plain().await, 2, "the recomputed value is served");

    h.step("None only with allow_none");
    let lenient = cache
        .function(func_id("g"))
        .configure(|settings| settings.allow_none = true);
    let strict = cache.function(func_id("g"));
    for _ in 0..3 {
        let got: Option<u8> = lenient
            .call(&1u8, || async { None })
            .await
            .expect("allow_none call");
        assert_eq!(got, None);
    }
    let got: Option<u8> = strict
        .call(&1u8, || async { Some(5) })
        .await
        .expect("call without allow_none");
    assert_eq!(
        got,
        Some(5),
        "a stored None served to a handle without allow_none"
    );
    Outcome::Passed
}

/// Callers hitting one key through a near cache while another front end, and the core itself,
/// store new values in turn: no caller ever gets a value older than one it got before, and
/// once the writes end every caller gets the last one, when the backend lets it know (with
/// synchronous reports: no call returns a value older than the newest whose store had
/// returned when the call began).
pub async fn near_copies_never_go_back_in_time(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let (cache, learns) = near_front(&s, NearCache::new());
    let ours = cache.function(func_id("f"));
    let theirs = s.cache().function(func_id("f"));
    let key = ours.key(&0u8).expect("key");
    const ROUNDS: u64 = 40;
    theirs.precache(&0u8, &0u64).await.expect("precache");
    let written = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (f, written) = (ours.clone(), written.clone());
        readers.push(tokio::spawn(async move {
            let mut last = 0u64;
            let mut done_at: Option<Instant> = None;
            loop {
                let began = Instant::now();
                let floor = written.load(SeqCst);
                let got: u64 = f.call(&0u8, || async { u64::MAX }).await.expect("call");
                assert!(got != u64::MAX, "a value is stored all along");
                assert!(got >= last, "returned {got} after {last}");
                if learns == Learns::AtOnce {
                    assert!(got >= floor, "returned {got} after {floor} was stored");
                }
                last = got;
                if got == ROUNDS {
                    return;
                }
                if floor == ROUNDS {
                    // The last store had returned when this call began.
                    let since = *done_at.get_or_insert(began);
                    let late = began.saturating_duration_since(since);
                    let bound = match learns {
                        Learns::AtOnce => Duration::ZERO,
                        Learns::Within(d) | Learns::ByTtl(d) => d,
                    };
                    assert!(
                        late <= bound,
                        "a call begun {late:?} after the last store was seen returned {got}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for i in 1..=ROUNDS {
        if i % 2 == 0 {
            theirs.precache(&0u8, &i).await.expect("precache");
        } else {
            s.core
                .set(&key, sealed(&i), Timestamp::now())
                .await
                .expect("set");
        }
        written.store(i, SeqCst);
        tokio::task::yield_now().await;
    }
    for reader in readers {
        reader.await.expect("a reader");
    }
    Outcome::Passed
}

/// A near cache with a time to live never serves a copy longer than that after it was read,
/// whether or not the backend reports changes: a value changed in the core is returned by the
/// first call begun a ttl after the change.
pub async fn near_copies_live_at_most_their_ttl(h: &Harness) -> Outcome {
    let s = h.scope().await;
    const TTL: Duration = Duration::from_millis(300);
    let cache = s.builder().near_cache(NearCache::new().ttl(TTL)).build();
    assert!(
        cache.near_cache_coherence().is_some(),
        "a near cache with a ttl is built on every backend"
    );
    let f = cache.function(func_id("f"));
    let key = f.key(&1u8).expect("key");
    let call = || {
        let f = f.clone();
        async move { f.call(&1u8, || async { 0u64 }).await.expect("call") }
    };
    for round in 1..=3u64 {
        h.step(format!("round {round}"));
        f.precache(&1u8, &(round * 10)).await.expect("precache");
        for _ in 0..3 {
            assert_eq!(call().await, round * 10, "hits");
        }
        s.core
            .set(&key, sealed(&(round * 10 + 1)), Timestamp::now())
            .await
            .expect("set");
        let changed = Instant::now();
        let learns = match cache.near_cache_coherence() {
            Some(Watching::Synchronous) => Learns::AtOnce,
            // A report may come sooner; the ttl bounds it all the same.
            _ => Learns::ByTtl(TTL),
        };
        sees(
            "set in the core",
            learns,
            changed,
            &[round * 10],
            round * 10 + 1,
            call,
        )
        .await;
    }
    Outcome::Passed
}

/// Far more keys than a tiny near cache holds, hit in turn: every call returns its own key's
/// value, and every call of the later rounds is a hit.
pub async fn many_keys_through_a_tiny_near_cache(h: &Harness) -> Outcome {
    let s = h.scope().await;
    // 80 keys through 8 places (2 per shard): enough to evict on every call, few enough for a
    // server that answers one request at a time under the whole matrix.
    let (cache, _) = near_front(&s, NearCache::new().max_entries(8).max_bytes(2048));
    let f = cache.function(func_id("f"));
    const KEYS: u64 = 80;
    for round in 0..3 {
        for i in 0..KEYS {
            let v: String = f
                .call(&i, move || async move { format!("value {i:05}") })
                .await
                .expect("call");
            assert_eq!(v, format!("value {i:05}"), "round {round}");
        }
        h.step(format!("round {round} done"));
    }
    let stats = f.stats();
    assert_eq!(
        (stats.computations, stats.hits),
        (KEYS, 2 * KEYS),
        "{stats:?}"
    );
    Outcome::Passed
}
