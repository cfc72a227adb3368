//! The conformance suite: the behaviour every [`Core`] must show, as plain async checks.
//!
//! Every backend crate (and any third-party backend) proves itself with one macro call in an
//! integration test, e.g. `tests/conformance.rs`:
//!
//! ```ignore
//! use std::sync::Arc;
//! use cachier_core::Core;
//!
//! async fn make_core() -> Arc<dyn Core> {
//!     Arc::new(my_backend::MyCore::connect(&std::env::var("MY_URL").unwrap()).await.unwrap())
//! }
//!
//! cachier_core::conformance_suite!(make_core);
//! ```
//!
//! The macro expands into a module `cachier_conformance` with one `#[test]` per check in
//! [`checks`], each running on its own multi-threaded tokio runtime, plus the ignored
//! `child_process` entry that the cross-process checks start as separate OS processes (it is run
//! by the suite itself, never on its own).
//!
//! ## Isolation
//!
//! Each check works in its own [`Scope`]: a fresh core from the factory and a [`Namespace`]
//! unique per process and test, `t_{pid}_{test}_{random}`. When the scope is dropped — also when
//! the check fails — it calls [`Core::clear_namespace`], so nothing is left behind and the whole
//! suite runs in parallel, in threads or in processes.
//!
//! ## Capabilities and skips
//!
//! Checks that a backend cannot honour are skipped according to its [`Capabilities`](crate::Capabilities) (for
//! example the cross-process checks on an in-process backend). A skipped check passes and prints
//! `conformance: SKIPPED <check>: <reason>` on standard output and standard error.
//!
//! Capabilities are checked where they can be: `cross_process` (another process's value is seen
//! exactly when it is declared), `persistent` (a value outlives the process that wrote it),
//! `max_value_bytes` (exact at the limit) and `native_wakeup` (a prompt wake-up). Those checks
//! print `conformance: VERIFIED <check>: ...` for what they proved and
//! `conformance: ASSUMED <check>: ...` for what they take on trust.
//!
//! ## Time limits
//!
//! Every check ends: it runs within a time limit well above its normal run (one minute, more
//! for the checks that start processes or move large values; see [`time_limit`]). A check a
//! broken backend keeps from ending — a claim that never expires, a claim refused whenever a
//! value exists — fails at its limit with its name and its last [`Harness::step`], e.g.
//! `conformance: dead_holder_lease_expires did not end within its time limit of 60 s; its last
//! step: calling f on a key whose holder never renews: waiting for its 800 ms lease to end`.
//!
//! ## Requirements on the factory
//!
//! `make_core` is called once per check (and once in every child process), so it must reach the
//! same store each time it is called: read URLs from the environment, use a fixed directory.
//!
//! ## Outages
//!
//! A backend that talks to a server also proves that an outage costs its callers nothing: give
//! the macro a second factory that starts a private server of the check's own and returns an
//! [`Outage`] (a core connected to it, and the means to stop and start it again):
//!
//! ```ignore
//! cachier_core::conformance_suite!(make_core, outage = make_outage);
//! ```
//!
//! The outage checks stop that private server mid-run — never the shared one other checks use —
//! and are skipped, with the reason, for a backend given no outage factory (an in-process or
//! embedded store has no server to lose).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Cachier, CachierBuilder, Core, FuncId, Key, Namespace};

pub mod checks;
mod limits;
mod process;

pub use limits::{DEFAULT_TIME_LIMIT, time_limit};
pub use process::child_main;

/// What the factory given to [`conformance_suite!`](crate::conformance_suite!) returns.
pub type CoreFuture = Pin<Box<dyn Future<Output = Arc<dyn Core>> + Send>>;

/// What the outage factory given to [`conformance_suite!`](crate::conformance_suite!) returns.
pub type OutageFuture = Pin<Box<dyn Future<Output = Box<dyn Outage>> + Send>>;

/// A private server of one check's own, which the check stops and starts again.
///
/// Dropping it stops the server for good and removes whatever it kept on disk.
#[crate::async_trait]
pub trait Outage: Send + Sync + 'static {
    /// A new core connected to the private server, opened while the server runs.
    async fn core(&self) -> Arc<dyn Core>;

    /// Stops the server: from now on its address refuses connections (or, for a server that
    /// cannot be stopped that way, does not answer).
    async fn stop(&self);

    /// Starts the server again on the same address; returns once it answers.
    async fn start(&self);
}

/// The result of one check. A failure is a panic (a failed assertion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every assertion held.
    Passed,
    /// The check does not apply to this backend, for the reason given.
    Skipped(&'static str),
}

/// What a check needs: how to make a core, and where the suite lives in the test binary.
#[derive(Clone)]
pub struct Harness {
    factory: fn() -> CoreFuture,
    outage: Option<fn() -> OutageFuture>,
    module: &'static str,
    test: &'static str,
    step: Arc<Mutex<String>>,
    time_limit: Option<Duration>,
}

impl Harness {
    /// A harness over `factory`; `module` is the `module_path!()` of the module the suite was
    /// expanded in, `test` the check's name.
    pub fn new(factory: fn() -> CoreFuture, module: &'static str, test: &'static str) -> Self {
        Harness {
            factory,
            outage: None,
            module,
            test,
            step: Arc::new(Mutex::new(String::new())),
            time_limit: None,
        }
    }

    /// The same harness with `limit` as the check's time limit instead of [`time_limit`]'s
    /// (the suite's own tests of broken backends use short ones).
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// Records what the check does now, e.g. `"waiting for the dead holder's lease to end"`:
    /// a check that overruns its time limit fails with its last step.
    pub fn step(&self, what: impl Into<String>) {
        *self.step.lock().unwrap_or_else(|p| p.into_inner()) = what.into();
    }

    /// The same harness with a factory of private servers for the outage checks.
    pub fn with_outage(mut self, outage: fn() -> OutageFuture) -> Self {
        self.outage = Some(outage);
        self
    }

    /// A private server to stop and start, if the backend has an outage factory.
    pub async fn outage(&self) -> Option<Box<dyn Outage>> {
        match self.outage {
            Some(make) => Some(make().await),
            None => None,
        }
    }

    /// A fresh core from the factory.
    pub async fn core(&self) -> Arc<dyn Core> {
        (self.factory)().await
    }

    /// A fresh core and a namespace of its own, cleaned up when dropped.
    pub async fn scope(&self) -> Scope {
        Scope {
            core: self.core().await,
            namespace: unique_namespace(self.test),
        }
    }

    /// The check's name.
    pub fn test_name(&self) -> &'static str {
        self.test
    }

    /// The libtest name of the child-process entry (`module::path::child_process`, without the
    /// crate name).
    pub(crate) fn child_test_name(&self) -> String {
        let path = self
            .module
            .split_once("::")
            .map(|(_, rest)| rest)
            .unwrap_or("");
        if path.is_empty() {
            "child_process".to_string()
        } else {
            format!("{path}::child_process")
        }
    }
}

/// A namespace unique per process and test: `t_{pid}_{test}_{random}`.
pub fn unique_namespace(test: &str) -> Namespace {
    let short: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(36)
        .collect();
    let random = crate::ClaimToken::generate();
    Namespace::new(format!(
        "t_{}_{}_{}",
        std::process::id(),
        short,
        &random.as_str()[..8]
    ))
    .expect("pid, alphanumeric name and hex make a valid namespace")
}

/// One check's core and namespace. Dropping it removes everything stored in the namespace.
pub struct Scope {
    /// The backend under test.
    pub core: Arc<dyn Core>,
    /// This check's own namespace.
    pub namespace: Namespace,
}

impl Scope {
    /// A cache builder over this scope's core and namespace.
    pub fn builder(&self) -> CachierBuilder {
        Cachier::builder(self.core.clone()).with_namespace(self.namespace.clone())
    }

    /// A cache with default settings over this scope.
    pub fn cache(&self) -> Cachier {
        self.builder().build()
    }

    /// The key of `func` called with `args` in this scope.
    pub fn key<A: serde::Serialize + ?Sized>(&self, func: &str, args: &A) -> Key {
        Key::for_args(&self.namespace, &func_id(func), args).expect("test arguments serialize")
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let (core, namespace) = (self.core.clone(), self.namespace.clone());
        let clean = async move {
            if let Err(err) = core.clear_namespace(&namespace).await {
                eprintln!("conformance: cleaning namespace {namespace} failed: {err}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(clean));
            }
            Ok(_) => {
                // A current-thread runtime cannot block; clean up on a thread of its own.
                let joined = std::thread::spawn(move || crate::block_on(clean)).join();
                if joined.is_err() {
                    eprintln!("conformance: namespace cleanup panicked");
                }
            }
            Err(_) => crate::block_on(clean),
        }
    }
}

/// A function id for tests.
pub fn func_id(name: &str) -> FuncId {
    FuncId::new(name).expect("test function ids are valid")
}

/// Runs one check on a fresh multi-threaded runtime; used by [`conformance_suite!`](crate::conformance_suite!).
///
/// The check must end within its time limit ([`time_limit`], or the harness's own): one that
/// overruns it fails with its name, the limit and its last [`Harness::step`].
pub fn run<F>(harness: Harness, check: F)
where
    F: FnOnce(Harness) -> Pin<Box<dyn Future<Output = Outcome> + Send>>,
{
    let name = harness.test_name();
    let limit = harness.time_limit.unwrap_or_else(|| time_limit(name));
    let step = harness.step.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a test can start a runtime");
    // On a task of its own, so that the limit fires even while the check blocks a thread.
    let mut task = runtime.spawn(check(harness));
    let ended = runtime.block_on(async { tokio::time::timeout(limit, &mut task).await });
    let outcome = match ended {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => panic!("conformance: {name} was cancelled: {err}"),
        },
        Err(_) => {
            let message = limits::overrun(name, limit, &step);
            task.abort();
            // Dropping the check cleans up its namespace; give that a moment, no more.
            let grace = limits::CLEANUP_GRACE.min(limit);
            let _ = runtime.block_on(async { tokio::time::timeout(grace, task).await });
            runtime.shutdown_background();
            panic!("{message}");
        }
    };
    match outcome {
        Outcome::Passed => {}
        Outcome::Skipped(reason) => {
            println!("conformance: SKIPPED {name}: {reason}");
            eprintln!("conformance: SKIPPED {name}: {reason}");
        }
    }
}

/// Expands into one test per conformance check for the backend made by `$factory`, an
/// `async fn() -> Arc<dyn Core>`; with `outage = $outage`, an `async fn() -> impl Outage` that
/// starts a private server, the outage checks run too. See the [module docs](crate::conformance).
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::__conformance_module!($factory, |h| h);
    };
    ($factory:path, outage = $outage:path $(,)?) => {
        $crate::__conformance_module!($factory, |h| {
            fn outage() -> $crate::conformance::OutageFuture {
                ::std::boxed::Box::pin(async {
                    let outage: ::std::boxed::Box<dyn $crate::conformance::Outage> =
                        ::std::boxed::Box::new($outage().await);
                    outage
                })
            }
            h.with_outage(outage)
        });
    };
}

/// The module [`conformance_suite!`](crate::conformance_suite!) expands into; `$extend` adds the
/// optional factories to each check's harness.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_module {
    ($factory:path, |$h:ident| $extend:expr) => {
        #[allow(missing_docs)]
        mod cachier_conformance {
            #[allow(unused_imports)]
            use super::*;

            fn factory() -> $crate::conformance::CoreFuture {
                ::std::boxed::Box::pin(async { $factory().await })
            }

            fn harness(test: &'static str) -> $crate::conformance::Harness {
                let $h = $crate::conformance::Harness::new(factory, ::std::module_path!(), test);
                $extend
            }

            #[test]
            #[ignore = "entry point of the cross-process checks' child processes; the suite starts it"]
            fn child_process() {
                $crate::conformance::child_main(harness("child_process"));
            }

            $crate::__conformance_checks!(harness);
        }
    };
}

/// Lists every check once; [`conformance_suite!`](crate::conformance_suite!) turns each into a test.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_checks {
    ($harness:ident) => {
        $crate::__conformance_tests!($harness;
            get_missing_is_none,
            set_get_round_trip,
            get_value_matches_get,
            usage_counts_one_namespace,
            set_overwrites,
            binary_values_every_byte,
            empty_value_round_trips,
            large_value_8_mib,
            claim_cold_key_acquires,
            claim_held_key_is_held,
            concurrent_claims_one_winner,
            release_lets_next_claim_in,
            release_with_wrong_token_is_ignored,
            release_keeps_value,
            renew_extends_holder_lease,
            renew_with_wrong_token_fails,
            renew_after_expiry_fails,
            claim_expires_with_lease,
            set_ends_claim,
            value_readable_while_claimed,
            remove_removes_one_key,
            remove_ends_claim,
            clear_one_function_only,
            clear_removes_claims,
            clear_claims_keeps_values,
            delete_stale_by_stored_at,
            namespaces_are_isolated,
            clear_namespace_removes_everything,
            wait_returns_when_value_set,
            wait_returns_when_released,
            wait_returns_when_lease_expires,
            wait_times_out_while_held,
            wait_on_free_key_returns_at_once,
            special_function_ids,
            call_miss_then_hit,
            call_distinct_args_distinct_entries,
            hits_follow_changes_from_elsewhere,
            hits_after_an_overwrite_serve_the_new_value,
            concurrent_hits_never_go_back_in_time,
            near_copies_follow_changes_from_elsewhere,
            near_copies_follow_own_changes,
            near_copies_are_served_only_while_fresh,
            near_copies_never_go_back_in_time,
            near_copies_live_at_most_their_ttl,
            many_keys_through_a_tiny_near_cache,
            equal_hash_collections_share_an_entry,
            stale_after_recomputes,
            max_age_per_call,
            next_time_serves_stale_then_refreshes,
            zero_stale_after_never_serves,
            zero_max_age_never_serves,
            freshness_limit_is_exclusive,
            next_time_respects_call_max_age,
            skip_cache_bypasses,
            overwrite_cache_recomputes_and_stores,
            precache_is_served,
            remove_args_forgets_one,
            clear_function_spares_sibling,
            none_not_cached_by_default,
            none_cached_with_allow_none,
            entry_size_limit_returns_but_does_not_store,
            strict_entry_size_limit_errors,
            corrupt_entry_is_a_miss_and_overwritten,
            truncated_entry_is_a_miss,
            foreign_codec_is_a_miss,
            hostile_length_prefix_is_a_miss,
            wrong_type_is_a_miss,
            byte_values_and_earlier_envelopes_read_back,
            many_tasks_one_computation,
            many_cores_one_computation,
            panic_releases_claim,
            error_releases_claim_and_is_not_cached,
            try_call_caches_ok,
            waiters_receive_holders_value,
            dead_holder_lease_expires,
            wait_for_calc_timeout_computes,
            lease_renewed_while_computing,
            caching_switch_off,
            cleanup_stale_deletes_in_background,
            stats_are_counted,
            outage_skips_an_unavailable_backend,
            outage_private_server_stopped_mid_run,
            outage_storage_fails_fast_and_recovers,
            call_blocking_works_in_and_out_of_runtime,
            scopes_are_unique_and_cleaned,
            cross_process_single_flight,
            cross_process_dead_holder,
            claim_held_until_is_holders_expiry,
            renew_sets_expiry_to_now_plus_lease,
            claim_until_has_millisecond_precision,
            get_value_reads_value_while_claimed,
            keys_of_one_function_hold_their_own_values,
            removed_values_are_not_served,
            removal_counts_values_not_claims,
            clear_namespace_spares_extended_names,
            delete_stale_cut_off_is_exclusive,
            call_after_removal_recomputes,
            max_value_bytes_is_exact,
            persistent_values_outlive_their_writer,
            cross_process_declared_when_shared,
            native_wakeup_wakes_promptly,
        );
    };
}

/// Turns a list of check names into tests.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($harness:ident; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::conformance::run($harness(::std::stringify!($check)), |h| {
                    ::std::boxed::Box::pin(async move {
                        $crate::conformance::checks::$check(&h).await
                    })
                });
            }
        )*
    };
}
