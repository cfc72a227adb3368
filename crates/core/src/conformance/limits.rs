//! Time limits: every check ends, passing or failing.
//!
//! A broken backend can keep a check from ending — a claim that never expires keeps a caller
//! waiting for its holder, a claim refused whenever a value exists sends the front end round its
//! claim-and-wait loop for ever. [`run`](super::run) therefore gives each check a time limit
//! well above its normal run; a check that overruns it fails with its name, the limit and the
//! last step it recorded with [`Harness::step`](super::Harness::step).

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The time limit of a check without one of its own in [`time_limit`]: the slowest of these
/// checks took 7.3 s (PostgreSQL, the whole matrix at once on two cores), most well under 1 s.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(60);

/// How long an overrun check may take to clean up its namespace after it has been stopped (at
/// most its time limit). A check that never yields cannot be stopped; it is left running.
pub(super) const CLEANUP_GRACE: Duration = Duration::from_secs(10);

/// The checks with a time limit above [`DEFAULT_TIME_LIMIT`]: those that start OS processes,
/// move large values or restart a server. Each limit is well above the check's normal run,
/// measured with the whole matrix running at once on two cores.
const LONGER_LIMITS: &[(&str, Duration)] = &[
    // Four child processes of 8 callers each, or a child killed mid-claim: at most 3.8 s.
    ("cross_process_single_flight", Duration::from_secs(180)),
    ("cross_process_dead_holder", Duration::from_secs(180)),
    // One child process that writes a value and exits: at most 3.8 s.
    (
        "persistent_values_outlive_their_writer",
        Duration::from_secs(120),
    ),
    (
        "cross_process_declared_when_shared",
        Duration::from_secs(120),
    ),
    // 8 MiB, or a value at a limit of up to 64 MiB, there and back: at most 4.5 s.
    ("large_value_8_mib", Duration::from_secs(120)),
    ("max_value_bytes_is_exact", Duration::from_secs(120)),
    // Stops and starts a private server, then waits up to 20 s for calls to reach it again.
    (
        "outage_private_server_stopped_mid_run",
        Duration::from_secs(180),
    ),
    // Ten operations of up to 5 s each against a stopped server, then up to 20 s for it to
    // answer again.
    (
        "outage_storage_fails_fast_and_recovers",
        Duration::from_secs(180),
    ),
];

/// The time limit of the check named `check`: its own in `LONGER_LIMITS`, else
/// [`DEFAULT_TIME_LIMIT`].
pub fn time_limit(check: &str) -> Duration {
    LONGER_LIMITS
        .iter()
        .find(|(name, _)| *name == check)
        .map_or(DEFAULT_TIME_LIMIT, |(_, limit)| *limit)
}

/// The failure message of a check that overran its time limit.
pub(super) fn overrun(check: &str, limit: Duration, step: &Arc<Mutex<String>>) -> String {
    let step = step.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let step = if step.is_empty() {
        "it recorded no step".to_string()
    } else {
        format!("its last step: {step}")
    };
    format!(
        "conformance: {check} did not end within its time limit of {} s; {step}",
        limit.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn longer_limits_name_listed_checks() {
        let listed = include_str!("mod.rs");
        for (name, limit) in super::LONGER_LIMITS {
            assert!(
                listed.contains(&format!("            {name},")),
                "{name} has a time limit but is not in the suite"
            );
            assert!(*limit > super::DEFAULT_TIME_LIMIT, "{name}");
        }
    }
}
