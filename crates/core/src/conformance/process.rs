//! Checks that need several OS processes, and the child-process side of them.
//!
//! The parent re-runs the test binary itself with the libtest filter set to the suite's ignored
//! `child_process` test and an environment that names the role, the namespace and the shared
//! counter file. Every child builds its own core with the same factory, so the processes share
//! nothing but the backend (and the counter file the parent reads afterwards).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Harness, Outcome, func_id};
use crate::{Cachier, Claim, Key, Namespace, Timestamp};

const ROLE: &str = "CACHIER_CONFORMANCE_ROLE";
const NAMESPACE: &str = "CACHIER_CONFORMANCE_NAMESPACE";
const COUNTER: &str = "CACHIER_CONFORMANCE_COUNTER";
const START_AT: &str = "CACHIER_CONFORMANCE_START_AT_MS";
const TASKS: &str = "CACHIER_CONFORMANCE_TASKS";
const LEASE_MS: &str = "CACHIER_CONFORMANCE_LEASE_MS";
const VALUE: &str = "CACHIER_CONFORMANCE_VALUE";

const PROCESSES: usize = 4;
const TASKS_PER_PROCESS: usize = 8;
const RESULT: u64 = 424_242;

fn spawn_child(h: &Harness, role: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let mut cmd = Command::new(exe);
    cmd.args([
        h.child_test_name().as_str(),
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, role)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("the test binary can start itself")
}

/// A file in the system temp directory that the processes append one line to per computation.
struct CounterFile(PathBuf);

impl CounterFile {
    fn new(namespace: &Namespace) -> Self {
        let path = std::env::temp_dir().join(format!("cachier-conformance-{namespace}.count"));
        std::fs::write(&path, b"").expect("the temp directory is writable");
        CounterFile(path)
    }

    fn count(&self) -> usize {
        std::fs::read_to_string(&self.0)
            .expect("counter file readable")
            .lines()
            .count()
    }
}

impl Drop for CounterFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn append_line(path: &Path) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("counter file opens");
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .expect("counter file writable");
}

/// Several OS processes, several tasks each, race on one cold key: exactly one computation,
/// and every caller in every process gets its result.
pub async fn cross_process_single_flight(h: &Harness) -> Outcome {
    let s = h.scope().await;
    if !s.core.capabilities().cross_process {
        return Outcome::Skipped(
            "the backend is not shared between processes (cross_process = false)",
        );
    }
    let counter = CounterFile::new(&s.namespace);
    // Start together: process start-up and connecting take a while on a loaded machine.
    let start_at = Timestamp::now().add(Duration::from_millis(2500));
    let envs = [
        (NAMESPACE, s.namespace.to_string()),
        (COUNTER, counter.0.display().to_string()),
        (START_AT, start_at.as_millis().to_string()),
        (TASKS, TASKS_PER_PROCESS.to_string()),
    ];
    let children: Vec<Child> = (0..PROCESSES)
        .map(|_| spawn_child(h, "single_flight", &envs))
        .collect();
    h.step(format!(
        "waiting for {PROCESSES} child processes to call f on one cold key and exit"
    ));
    for child in children {
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("a child process finished within 2 minutes")
            .expect("child output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "a child process failed: {stdout}");
        assert!(
            stdout.contains(&format!("single_flight ok {TASKS_PER_PROCESS}")),
            "the child ran no calls (was the child_process test found?): {stdout}"
        );
    }
    assert_eq!(
        counter.count(),
        1,
        "{PROCESSES} processes x {TASKS_PER_PROCESS} tasks on one cold key computed more than once"
    );
    Outcome::Passed
}

/// A process holding a claim is killed with SIGKILL; another caller proceeds once the lease
/// expires.
pub async fn cross_process_dead_holder(h: &Harness) -> Outcome {
    let s = h.scope().await;
    if !s.core.capabilities().cross_process {
        return Outcome::Skipped(
            "the backend is not shared between processes (cross_process = false)",
        );
    }
    // Long enough that a slow server cannot let it run out before the check claims.
    let lease = Duration::from_secs(4);
    let envs = [
        (NAMESPACE, s.namespace.to_string()),
        (LEASE_MS, lease.as_millis().to_string()),
    ];
    let mut child = spawn_child(h, "dead_holder", &envs);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    h.step("waiting for the child process to claim the key");
    let claimed = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("child stdout") {
            if line.contains("dead_holder claimed") {
                return true;
            }
        }
        false
    })
    .await
    .expect("the child claimed within a minute");
    assert!(claimed, "the child exited without claiming");
    let killed_at = Instant::now();
    child.start_kill().expect("kill the holder");
    let _ = child.wait().await;

    let key = key_in(&s.namespace);
    assert!(
        matches!(
            s.core.claim(&key, lease).await.expect("claim"),
            Claim::Held { .. }
        ),
        "the dead holder's claim vanished before its lease ended"
    );
    let f = Cachier::builder(s.core.clone())
        .with_namespace(s.namespace.clone())
        .build()
        .function(func_id("xproc"));
    h.step("calling f on the key a killed process claimed: waiting for its 4 s lease to end");
    let v: u64 = f.call(&7u32, || async { RESULT }).await.expect("call");
    assert_eq!(v, RESULT);
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "waited {took:?} for a 4 s lease"
    );
    assert_eq!(f.stats().computations, 1);
    Outcome::Passed
}

/// Sets `value` under the key [`key_in`] of `namespace` in another OS process, with a core of
/// that process's own, and returns once that process has exited.
pub(super) async fn set_in_another_process(h: &Harness, namespace: &Namespace, value: &str) {
    let envs = [
        (NAMESPACE, namespace.to_string()),
        (VALUE, value.to_string()),
    ];
    h.step("waiting for a child process to set a value and exit");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        spawn_child(h, "set_value", &envs).wait_with_output(),
    )
    .await
    .expect("the child process set its value and exited within a minute")
    .expect("child output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the child process failed: {stdout}");
    assert!(
        stdout.contains("set_value ok"),
        "the child set no value (was the child_process test found?): {stdout}"
    );
}

/// The key the cross-process checks use in `namespace`.
pub(super) fn key_in(namespace: &Namespace) -> Key {
    Key::for_args(namespace, &func_id("xproc"), &7u32).expect("key")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child process without {name}"))
}

/// The child side: run by the suite's ignored `child_process` test in a separate process.
pub fn child_main(h: Harness) {
    let Ok(role) = std::env::var(ROLE) else {
        println!("child_process: nothing to do (run by the cross-process conformance checks)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let namespace = Namespace::new(env(NAMESPACE)).expect("namespace");
        let core = h.core().await;
        match role.as_str() {
            "single_flight" => {
                let counter = PathBuf::from(env(COUNTER));
                let tasks: usize = env(TASKS).parse().expect("tasks");
                let start_at = Timestamp(env(START_AT).parse().expect("start time"));
                let f = Cachier::builder(core)
                    .with_namespace(namespace)
                    .build()
                    .function(func_id("xproc"));
                tokio::time::sleep(start_at.remaining()).await;
                let counter = Arc::new(counter);
                let mut handles = Vec::new();
                for _ in 0..tasks {
                    let (f, counter) = (f.clone(), counter.clone());
                    handles.push(tokio::spawn(async move {
                        f.call(&7u32, move || async move {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            append_line(&counter);
                            RESULT
                        })
                        .await
                        .expect("call")
                    }));
                }
                for handle in handles {
                    assert_eq!(handle.await.expect("task"), RESULT);
                }
                println!("single_flight ok {tasks}");
            }
            "dead_holder" => {
                let lease = Duration::from_millis(env(LEASE_MS).parse().expect("lease"));
                match core.claim(&key_in(&namespace), lease).await.expect("claim") {
                    Claim::Acquired(_) => {}
                    Claim::Held { .. } => panic!("the key was already claimed"),
                }
                // On a line of its own: libtest may have printed "test ... " before it.
                println!("\ndead_holder claimed");
                std::io::stdout().flush().expect("flush");
                // Hold the claim without renewing or releasing until the parent kills us.
                tokio::time::sleep(Duration::from_secs(300)).await;
            }
            "set_value" => {
                let value = Bytes::from(env(VALUE));
                core.set(&key_in(&namespace), value, Timestamp::now())
                    .await
                    .expect("set");
                println!("\nset_value ok");
            }
            other => panic!("unknown child role {other}"),
        }
    });
}
