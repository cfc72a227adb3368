//! A holder in another OS process is killed with SIGKILL mid-computation: its lease runs out on
//! the server and a waiter here proceeds. The child is this test binary, started again with
//! the ignored `child_holds_a_claim` test as its filter.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachier_core::{Cachier, Claim, Core, Key, Namespace};
use common::{NamespaceGuard, core_at, func_id, redis_url};

const ROLE: &str = "CACHIER_REDIS_TEST_CHILD_NAMESPACE";
const LEASE: Duration = Duration::from_millis(1500);

fn key_in(namespace: &Namespace) -> Key {
    Key::for_args(namespace, &func_id("xproc"), &7u64).expect("a u64 hashes")
}

#[test]
#[ignore = "child side of dead_holder_in_another_process; started by that test"]
fn child_holds_a_claim() {
    let Ok(namespace) = std::env::var(ROLE) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let namespace = Namespace::new(namespace).expect("namespace from the parent");
        let core = core_at(&redis_url()).await;
        let Claim::Acquired(_) = core.claim(&key_in(&namespace), LEASE).await.unwrap() else {
            panic!("the parent's key was already claimed");
        };
        println!("\nchild claimed");
        // Hold the claim, never renewing or releasing, until the parent kills this process.
        tokio::time::sleep(Duration::from_secs(300)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_holder_in_another_process() {
    let ns = NamespaceGuard::new(&redis_url(), "dead_holder");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_holds_a_claim", "--exact", "--ignored", "--nocapture"])
        .env(ROLE, ns.namespace.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test binary starts itself");
    let stdout = child.stdout.take().expect("piped stdout");
    let claimed = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("child claimed"))
    });
    let claimed = tokio::time::timeout(Duration::from_secs(60), claimed).await;
    if !matches!(claimed, Ok(Ok(true))) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the child did not claim: {claimed:?}");
    }

    let core: Arc<dyn Core> = core_at(&redis_url()).await;
    let key = key_in(&ns.namespace);
    assert!(core.get(&key).await.unwrap().unwrap().is_claimed());
    // A waiter is already waiting when the holder dies.
    let waiter = tokio::spawn({
        let (core, key) = (core.clone(), key.clone());
        async move { core.wait(&key, Duration::from_secs(30)).await }
    });
    child.kill().expect("SIGKILL the holder");
    child.wait().expect("reap the holder");
    let killed_at = Instant::now();

    assert!(
        matches!(core.claim(&key, LEASE).await.unwrap(), Claim::Held { .. }),
        "the dead holder's claim vanished before its lease ended"
    );
    assert_eq!(waiter.await.unwrap().unwrap(), None, "the lease ended");
    let f = Cachier::builder(core.clone())
        .with_namespace(ns.namespace.clone())
        .build()
        .function(func_id("xproc"));
    assert_eq!(f.call(&7u64, || async { 49u64 }).await.unwrap(), 49);
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?} for a 1.5 s lease");
    assert_eq!(f.stats().computations, 1);
}
