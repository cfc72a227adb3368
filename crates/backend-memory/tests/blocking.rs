//! `call_blocking` from plain synchronous code, and what it does inside tokio runtimes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cachier_core::{Cachier, func_id};
use cachier_memory::MemoryCore;

fn cache() -> Cachier {
    Cachier::new(Arc::new(MemoryCore::new()))
}

/// A plain `fn main`-style caller with no runtime of its own: the first call computes, the
/// second is a hit, and 8 threads on one cold key compute once.
#[test]
fn sync_code_without_a_runtime() {
    let f = cache().function(func_id!("slow_square"));
    let runs = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (f, runs) = (f.clone(), runs.clone());
            std::thread::spawn(move || {
                f.call_blocking(&12u64, move || {
                    std::thread::sleep(Duration::from_millis(200));
                    runs.fetch_add(1, SeqCst);
                    144u64
                })
                .expect("call_blocking")
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("thread"), 144);
    }
    assert_eq!(runs.load(SeqCst), 1);
    let again = f.call_blocking(&12u64, || 0u64).expect("call_blocking");
    assert_eq!(again, 144);
    assert_eq!(f.stats().hits, 8);
}

/// Inside a multi-threaded runtime, `call_blocking` blocks only its own worker
/// (`block_in_place`) and uses the cache.
#[test]
fn inside_a_multi_thread_runtime_it_uses_the_cache() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let f = cache().function(func_id!("f"));
    runtime.block_on(async {
        let first: u32 = f.call_blocking(&1u8, || 5).expect("call_blocking");
        let second: u32 = f.call_blocking(&1u8, || 6).expect("call_blocking");
        assert_eq!((first, second), (5, 5));
    });
}

/// Inside a current-thread runtime, blocking would stall the runtime itself, so
/// `call_blocking` computes without the cache (documented) instead of deadlocking or panicking.
#[test]
fn inside_a_current_thread_runtime_it_bypasses_the_cache() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let f = cache().function(func_id!("f"));
    runtime.block_on(async {
        let first: u32 = f.call_blocking(&1u8, || 5).expect("call_blocking");
        let second: u32 = f.call_blocking(&1u8, || 6).expect("call_blocking");
        assert_eq!((first, second), (5, 6));
        assert_eq!(f.stats().bypassed, 2);
        // The async path works as usual on the same runtime.
        let third: u32 = f.call(&1u8, || async { 7 }).await.expect("call");
        let fourth: u32 = f.call(&1u8, || async { 8 }).await.expect("call");
        assert_eq!((third, fourth), (7, 7));
    });
}
