//! The process-wide switch. In a test binary of its own: flipping it would disturb other tests
//! running in the same process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use cachier_core::{Cachier, caching_enabled, func_id, set_caching_enabled};
use cachier_memory::MemoryCore;

#[tokio::test]
async fn global_switch_turns_every_cache_off_and_on() {
    let core = Arc::new(MemoryCore::new());
    let f = Cachier::new(core.clone()).function(func_id!("f"));
    let runs = Arc::new(AtomicUsize::new(0));
    let call = || {
        let (f, runs) = (f.clone(), runs.clone());
        async move {
            f.call(&1u8, move || async move { runs.fetch_add(1, SeqCst) })
                .await
                .expect("call")
        }
    };
    assert!(caching_enabled());
    set_caching_enabled(false);
    assert_eq!(call().await, 0);
    assert_eq!(call().await, 1);
    assert!(core.is_empty(), "nothing is stored while caching is off");
    set_caching_enabled(true);
    assert_eq!(call().await, 2);
    assert_eq!(call().await, 2);
    assert_eq!(core.len(), 1);
}
