//! The conformance suite catches wrong backends, and never hangs on one.
//!
//! Each test wraps the memory backend in a variant with one deliberate bug, as a backend author
//! could write it, runs the check that pins the behaviour, and expects that check to fail with
//! a message naming what is wrong. A bug that would keep a check from ending (a claim that
//! never expires, a claim refused whenever a value exists) must fail it by its time limit,
//! kept short here so that this file runs in seconds.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cachier_core::conformance::{self, CoreFuture, Harness, Outcome, checks};
use cachier_core::{
    Bytes, Capabilities, Claim, ClaimToken, Core, Entry, Error, FuncId, Key, Namespace, Result,
    Timestamp, async_trait,
};
use cachier_memory::MemoryCore;

/// One bug per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bug {
    /// `Held { until }` reports an hour from now.
    HeldUntilAnHour,
    /// `Held { until }` reports the refused caller's own lease.
    HeldUntilCallersLease,
    /// `renew` counts the new lease from the old expiry.
    RenewPilesLeases,
    /// `get_value` reads nothing while a claim is live.
    GetValueHidesClaimed,
    /// `get_value` serves an in-process copy that only `remove` and `set` replace.
    NearCacheOutlivesBulkRemoval,
    /// `clear` counts claims without values as removed values.
    ClearCountsClaims,
    /// `clear_namespace(N)` removes every namespace whose name starts with `N`.
    PrefixClearNamespace,
    /// `delete_stale(T)` also removes values stored at `T`.
    DeleteStaleInclusive,
    /// `delete_stale` rounds its cut-off up to a whole second.
    DeleteStaleWholeSeconds,
    /// `claim_until` is rounded up to a whole second.
    ClaimUntilInSeconds,
    /// Every key of a function is stored in one place: the argument hash is ignored.
    OneSlotPerFunction,
    /// Declares `max_value_bytes` of 1 KiB but stores larger values.
    MaxValueBytesUnchecked,
    /// Declares `max_value_bytes` of 1 KiB and refuses a value of exactly 1 KiB.
    MaxValueBytesOffByOne,
    /// Declares `persistent` while every core has a store of its own.
    PersistentFalsely,
    /// Shares values between processes (through files) yet declares `cross_process = false`.
    SharedButNotDeclared,
    /// Declares `cross_process` for an in-process store.
    CrossProcessFalsely,
    /// Declares `native_wakeup` but `wait` looks again only every 5 s.
    SlowWakeup,
    /// Ignores the lease: every claim lasts an hour.
    ClaimNeverExpires,
    /// Refuses a claim whenever the key holds a value.
    ClaimRefusedWithValue,
}

/// The memory backend with one bug.
struct Broken {
    inner: MemoryCore,
    bug: Bug,
    /// The keys and namespaces seen, for the bugs that act on more than they should.
    seen: Mutex<HashSet<Key>>,
    /// The in-process copies of [`Bug::NearCacheOutlivesBulkRemoval`].
    near: Mutex<HashMap<Key, Entry>>,
}

impl Broken {
    fn new(bug: Bug) -> Self {
        Broken {
            inner: MemoryCore::new(),
            bug,
            seen: Mutex::default(),
            near: Mutex::default(),
        }
    }

    /// The key the backend really uses: [`Bug::OneSlotPerFunction`] drops the argument hash.
    fn slot(&self, key: &Key) -> Key {
        self.seen.lock().expect("seen").insert(key.clone());
        if self.bug == Bug::OneSlotPerFunction {
            Key::for_args(&key.namespace, &key.func, &()).expect("key")
        } else {
            key.clone()
        }
    }

    /// Where [`Bug::SharedButNotDeclared`] keeps a value for other processes.
    fn shared_file(key: &Key) -> PathBuf {
        let func: String = key
            .func
            .as_str()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        shared_dir(&key.namespace).join(format!("{func}-{}", key.hash))
    }
}

fn shared_dir(namespace: &Namespace) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("broken-cores-shared")
        .join(namespace.as_str())
}

#[async_trait]
impl Core for Broken {
    fn name(&self) -> &'static str {
        "broken-memory"
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.inner.capabilities();
        match self.bug {
            Bug::MaxValueBytesUnchecked | Bug::MaxValueBytesOffByOne => {
                capabilities.max_value_bytes = Some(1024);
            }
            Bug::PersistentFalsely => capabilities.persistent = true,
            Bug::CrossProcessFalsely => capabilities.cross_process = true,
            Bug::SlowWakeup => capabilities.native_wakeup = true,
            _ => {}
        }
        capabilities
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        let mut entry = self.inner.get(&self.slot(key)).await?;
        if self.bug == Bug::ClaimUntilInSeconds
            && let Some(e) = &mut entry
        {
            e.claim_until = e.claim_until.map(|t| Timestamp(t.0.div_ceil(1000) * 1000));
        }
        if self.bug == Bug::SharedButNotDeclared
            && entry.is_none()
            && let Ok(bytes) = std::fs::read(Broken::shared_file(key))
        {
            entry = Some(Entry {
                value: Some(Bytes::from(bytes)),
                stored_at: Timestamp::now(),
                claim_until: None,
            });
        }
        Ok(entry)
    }

    async fn get_value(&self, key: &Key) -> Result<Option<Entry>> {
        match self.bug {
            Bug::GetValueHidesClaimed => {
                let entry = self.get(key).await?;
                Ok(entry.filter(|e| !e.is_claimed()))
            }
            Bug::NearCacheOutlivesBulkRemoval => {
                if let Some(entry) = self.near.lock().expect("near").get(key) {
                    return Ok(Some(entry.clone()));
                }
                let entry = self.get(key).await?;
                if let Some(e) = entry.as_ref().filter(|e| e.value.is_some()) {
                    self.near
                        .lock()
                        .expect("near")
                        .insert(key.clone(), e.clone());
                }
                Ok(entry)
            }
            _ => self.get(key).await,
        }
    }

    async fn set(&self, key: &Key, value: Bytes, stored_at: Timestamp) -> Result<()> {
        let len = value.len() as u64;
        match self.bug {
            Bug::MaxValueBytesOffByOne if len >= 1024 => {
                return Err(Error::too_large("over 1 KiB"));
            }
            Bug::NearCacheOutlivesBulkRemoval => {
                self.near.lock().expect("near").remove(key);
            }
            Bug::SharedButNotDeclared => {
                let path = Broken::shared_file(key);
                std::fs::create_dir_all(path.parent().expect("a parent")).expect("shared dir");
                std::fs::write(path, &value).expect("shared file");
            }
            _ => {}
        }
        self.inner.set(&self.slot(key), value, stored_at).await
    }

    async fn claim(&self, key: &Key, lease: Duration) -> Result<Claim> {
        let slot = self.slot(key);
        let lease = match self.bug {
            Bug::ClaimNeverExpires => Duration::from_secs(3600),
            _ => lease,
        };
        if self.bug == Bug::ClaimRefusedWithValue
            && self
                .inner
                .get(&slot)
                .await?
                .is_some_and(|e| e.value.is_some())
        {
            // Like a round trip to a server, a point where the caller can be cancelled.
            tokio::task::yield_now().await;
            return Ok(Claim::Held {
                until: Timestamp::now(),
            });
        }
        Ok(match self.inner.claim(&slot, lease).await? {
            Claim::Held { until } => Claim::Held {
                until: match self.bug {
                    Bug::HeldUntilAnHour => Timestamp::now().add(Duration::from_secs(3600)),
                    Bug::HeldUntilCallersLease => Timestamp::now().add(lease),
                    _ => until,
                },
            },
            acquired => acquired,
        })
    }

    async fn renew(&self, key: &Key, token: &ClaimToken, lease: Duration) -> Result<bool> {
        let slot = self.slot(key);
        let lease = match self.bug {
            Bug::RenewPilesLeases => {
                let left = self
                    .inner
                    .get(&slot)
                    .await?
                    .and_then(|e| e.claim_until)
                    .map_or(Duration::ZERO, Timestamp::remaining);
                left + lease
            }
            Bug::ClaimNeverExpires => Duration::from_secs(3600),
            _ => lease,
        };
        self.inner.renew(&slot, token, lease).await
    }

    async fn release(&self, key: &Key, token: &ClaimToken) -> Result<()> {
        self.inner.release(&self.slot(key), token).await
    }

    async fn wait(&self, key: &Key, timeout: Duration) -> Result<Option<Entry>> {
        if self.bug != Bug::SlowWakeup {
            return self.inner.wait(&self.slot(key), timeout).await;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let entry = self.get(key).await?;
            let now = tokio::time::Instant::now();
            if !entry.as_ref().is_some_and(Entry::is_claimed) || now >= deadline {
                return Ok(entry);
            }
            tokio::time::sleep(Duration::from_secs(5).min(deadline - now)).await;
        }
    }

    async fn remove(&self, key: &Key) -> Result<bool> {
        self.near.lock().expect("near").remove(key);
        self.inner.remove(&self.slot(key)).await
    }

    async fn clear(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let mut removed = 0;
        if self.bug == Bug::ClearCountsClaims {
            let keys: Vec<Key> = self.seen.lock().expect("seen").iter().cloned().collect();
            for key in keys {
                if &key.namespace == namespace
                    && &key.func == func
                    && self.inner.get(&key).await?.is_some()
                {
                    removed += 1;
                }
            }
        }
        let cleared = self.inner.clear(namespace, func).await?;
        Ok(if self.bug == Bug::ClearCountsClaims {
            removed
        } else {
            cleared
        })
    }

    async fn clear_claims(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        self.inner.clear_claims(namespace, func).await
    }

    async fn delete_stale(
        &self,
        namespace: &Namespace,
        func: &FuncId,
        stored_before: Timestamp,
    ) -> Result<u64> {
        let cut = match self.bug {
            Bug::DeleteStaleInclusive => stored_before.add(Duration::from_millis(1)),
            Bug::DeleteStaleWholeSeconds => Timestamp(stored_before.0.div_ceil(1000) * 1000),
            _ => stored_before,
        };
        self.inner.delete_stale(namespace, func, cut).await
    }

    async fn clear_namespace(&self, namespace: &Namespace) -> Result<u64> {
        // Values a child process shared through files go with the namespace, whatever the bug.
        let _ = std::fs::remove_dir_all(shared_dir(namespace));
        if self.bug != Bug::PrefixClearNamespace {
            return self.inner.clear_namespace(namespace).await;
        }
        let namespaces: HashSet<Namespace> = self
            .seen
            .lock()
            .expect("seen")
            .iter()
            .filter(|k| k.namespace.as_str().starts_with(namespace.as_str()))
            .map(|k| k.namespace.clone())
            .collect();
        let mut removed = self.inner.clear_namespace(namespace).await?;
        for other in namespaces.iter().filter(|n| *n != namespace) {
            removed += self.inner.clear_namespace(other).await?;
        }
        Ok(removed)
    }
}

/// The broken core of `bug`, one store per bug for the whole test binary (like the memory
/// backend's own suite), except for [`Bug::PersistentFalsely`], whose every core is new.
fn broken(bug: Bug) -> CoreFuture {
    static CORES: OnceLock<Mutex<HashMap<Bug, Arc<Broken>>>> = OnceLock::new();
    let core: Arc<dyn Core> = if bug == Bug::PersistentFalsely {
        Arc::new(Broken::new(bug))
    } else {
        CORES
            .get_or_init(Mutex::default)
            .lock()
            .expect("cores")
            .entry(bug)
            .or_insert_with(|| Arc::new(Broken::new(bug)))
            .clone()
    };
    Box::pin(async move { core })
}

/// Runs the check `$check` on the core of `$bug` within `$limit`, expects it to fail, and
/// checks that its failure message contains each `$expected`; returns the message.
macro_rules! caught {
    ($bug:expr, $check:ident, $limit:expr, $($expected:expr),+ $(,)?) => {{
        let harness = Harness::new(|| broken($bug), module_path!(), stringify!($check))
            .with_time_limit($limit);
        let failed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            conformance::run(harness, |h| {
                Box::pin(async move { checks::$check(&h).await })
            })
        }))
        .expect_err(concat!(stringify!($check), " passed a broken backend"));
        let message = failed
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| failed.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        for expected in [$($expected),+] {
            assert!(
                message.contains(expected),
                "{} failed, but not for {expected:?}: {message}",
                stringify!($check)
            );
        }
        message
    }};
}

/// Longer than any check below takes to fail when it fails by an assertion.
const LIMIT: Duration = Duration::from_secs(30);

/// The entry point of the child processes of the capability checks: they write through the
/// backend that shares values between processes.
#[test]
#[ignore = "entry point of the capability checks' child processes; they start it"]
fn child_process() {
    conformance::child_main(Harness::new(
        || broken(Bug::SharedButNotDeclared),
        module_path!(),
        "child_process",
    ));
}

#[test]
fn held_until_an_hour_out_is_caught() {
    caught!(
        Bug::HeldUntilAnHour,
        claim_held_until_is_holders_expiry,
        LIMIT,
        "Held { until } for a caller asking for",
        "but the holder's claim ends at"
    );
}

#[test]
fn held_until_of_the_callers_own_lease_is_caught() {
    caught!(
        Bug::HeldUntilCallersLease,
        claim_held_until_is_holders_expiry,
        LIMIT,
        "Held { until } for a caller asking for 3s"
    );
}

#[test]
fn renew_piling_leases_is_caught() {
    caught!(
        Bug::RenewPilesLeases,
        renew_sets_expiry_to_now_plus_lease,
        LIMIT,
        "after renew(20s), get's claim_until"
    );
}

#[test]
fn get_value_hiding_a_claimed_value_is_caught() {
    caught!(
        Bug::GetValueHidesClaimed,
        get_value_reads_value_while_claimed,
        LIMIT,
        "get_value hides a value while the key is claimed"
    );
}

#[test]
fn a_copy_served_after_bulk_removal_is_caught() {
    caught!(
        Bug::NearCacheOutlivesBulkRemoval,
        removed_values_are_not_served,
        LIMIT,
        "get_value still serves a value after clear"
    );
    caught!(
        Bug::NearCacheOutlivesBulkRemoval,
        call_after_removal_recomputes,
        LIMIT,
        "a value removed by Function::clear was served"
    );
}

#[test]
fn clear_counting_claims_is_caught() {
    caught!(
        Bug::ClearCountsClaims,
        removal_counts_values_not_claims,
        LIMIT,
        "clear of two values (one claimed) and a claim without a value"
    );
}

#[test]
fn clear_namespace_by_prefix_is_caught() {
    caught!(
        Bug::PrefixClearNamespace,
        clear_namespace_spares_extended_names,
        LIMIT,
        "clear_namespace in t_"
    );
}

#[test]
fn delete_stale_at_the_cut_off_is_caught() {
    caught!(
        Bug::DeleteStaleInclusive,
        delete_stale_cut_off_is_exclusive,
        LIMIT,
        "delete_stale(Timestamp(1700000000123ms))"
    );
    caught!(
        Bug::DeleteStaleWholeSeconds,
        delete_stale_cut_off_is_exclusive,
        LIMIT,
        "delete_stale(Timestamp(1700000000122ms))"
    );
}

#[test]
fn claim_until_in_whole_seconds_is_caught() {
    caught!(
        Bug::ClaimUntilInSeconds,
        claim_until_has_millisecond_precision,
        LIMIT,
        "every claim_until is a multiple of 10 ms"
    );
}

#[test]
fn one_slot_per_function_is_caught() {
    caught!(
        Bug::OneSlotPerFunction,
        keys_of_one_function_hold_their_own_values,
        LIMIT,
        "get of key 0 of one function"
    );
}

#[test]
fn a_wrong_max_value_bytes_is_caught() {
    caught!(
        Bug::MaxValueBytesUnchecked,
        max_value_bytes_is_exact,
        LIMIT,
        "a value one byte over max_value_bytes was stored"
    );
    caught!(
        Bug::MaxValueBytesOffByOne,
        max_value_bytes_is_exact,
        LIMIT,
        "a value of exactly max_value_bytes is stored"
    );
}

#[test]
fn false_capabilities_are_caught() {
    caught!(
        Bug::PersistentFalsely,
        persistent_values_outlive_their_writer,
        LIMIT,
        "a persistent backend lost a value when its writer went away"
    );
    caught!(
        Bug::SharedButNotDeclared,
        cross_process_declared_when_shared,
        LIMIT,
        "must declare cross_process = true"
    );
    caught!(
        Bug::CrossProcessFalsely,
        cross_process_declared_when_shared,
        LIMIT,
        "declares cross_process, but a value another process set is not seen here"
    );
    caught!(
        Bug::SlowWakeup,
        native_wakeup_wakes_promptly,
        LIMIT,
        "after the claim ended by release (bound 2s)"
    );
}

#[test]
fn a_claim_that_never_expires_fails_by_the_time_limit() {
    // The assertion that pins it.
    caught!(
        Bug::ClaimNeverExpires,
        claim_expires_with_lease,
        LIMIT,
        "assertion failed"
    );
    // The check that would wait for the dead holder for ever.
    let message = caught!(
        Bug::ClaimNeverExpires,
        dead_holder_lease_expires,
        Duration::from_secs(4),
        "conformance: dead_holder_lease_expires did not end within its time limit of 4 s",
        "its last step: calling f on a key whose holder never renews"
    );
    println!("{message}");
}

#[test]
fn a_claim_refused_beside_a_value_fails_by_the_time_limit() {
    for message in [
        caught!(
            Bug::ClaimRefusedWithValue,
            corrupt_entry_is_a_miss_and_overwritten,
            Duration::from_secs(3),
            "did not end within its time limit of 3 s",
            "its last step: calling f on a key holding bytes that do not decode"
        ),
        caught!(
            Bug::ClaimRefusedWithValue,
            overwrite_cache_recomputes_and_stores,
            Duration::from_secs(3),
            "did not end within its time limit of 3 s",
            "its last step: call 1 of f"
        ),
    ] {
        println!("{message}");
    }
}

/// The broken variants are broken only where they say: the correct parts pass.
#[test]
fn a_variant_passes_the_checks_its_bug_does_not_touch() {
    let harness = Harness::new(
        || broken(Bug::HeldUntilAnHour),
        module_path!(),
        "set_get_round_trip",
    );
    conformance::run(harness, |h| {
        Box::pin(async move {
            assert_eq!(checks::set_get_round_trip(&h).await, Outcome::Passed);
            Outcome::Passed
        })
    });
}
