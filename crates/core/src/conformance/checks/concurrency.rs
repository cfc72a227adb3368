//! Many callers at once: one claim wins, one computation serves them all.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use super::{LEASE, counter};
use crate::Claim;
use crate::conformance::{Harness, Outcome, func_id};

/// Of 32 callers racing for one cold key on four core instances, exactly one wins.
pub async fn concurrent_claims_one_winner(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let key = s.key("f", &1u8);
    let cores = if s.core.capabilities().cross_process {
        vec![
            s.core.clone(),
            h.core().await,
            h.core().await,
            h.core().await,
        ]
    } else {
        vec![s.core.clone()]
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (core, key, barrier) = (cores[i % cores.len()].clone(), key.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            core.claim(&key, LEASE).await.expect("claim")
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if matches!(task.await.expect("task"), Claim::Acquired(_)) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one racing claim must win");
    Outcome::Passed
}

async fn one_computation(h: &Harness, funcs: Vec<crate::Function>, callers: usize) {
    h.step(format!(
        "waiting for {callers} callers on one cold key to get its one computation's value"
    ));
    let runs = counter();
    let barrier = Arc::new(tokio::sync::Barrier::new(callers));
    let mut tasks = Vec::new();
    for i in 0..callers {
        let (f, r, b) = (
            funcs[i % funcs.len()].clone(),
            runs.clone(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            f.call(&"cold", move || async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                r.fetch_add(1, SeqCst) as u64 + 1000
            })
            .await
            .expect("call")
        }));
    }
    for task in tasks {
        assert_eq!(
            task.await.expect("task"),
            1000,
            "a caller got another result"
        );
    }
    assert_eq!(
        runs.load(SeqCst),
        1,
        "{callers} callers on a cold key computed more than once"
    );
}

/// 64 concurrent callers on one cold key: one computation, 64 equal results.
pub async fn many_tasks_one_computation(h: &Harness) -> Outcome {
    let s = h.scope().await;
    one_computation(h, vec![s.cache().function(func_id("f"))], 64).await;
    Outcome::Passed
}

/// Callers on four separate core instances (separate connections) still compute once.
pub async fn many_cores_one_computation(h: &Harness) -> Outcome {
    let s = h.scope().await;
    if !s.core.capabilities().cross_process {
        return Outcome::Skipped(
            "separate instances of an in-process backend do not share entries",
        );
    }
    let mut funcs = vec![s.cache().function(func_id("f"))];
    for _ in 0..3 {
        let cache = crate::Cachier::builder(h.core().await)
            .with_namespace(s.namespace.clone())
            .build();
        funcs.push(cache.function(func_id("f")));
    }
    one_computation(h, funcs, 32).await;
    Outcome::Passed
}
