//! Arguments to keys through the front end: equal arguments share one entry.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::SeqCst;

use super::counter;
use crate::conformance::{Harness, Outcome, func_id};

/// Equal `HashMap` and `HashSet` arguments, built in different orders and capacities, are one
/// entry: the second call is a hit.
pub async fn equal_hash_collections_share_an_entry(h: &Harness) -> Outcome {
    let s = h.scope().await;
    let f = s.cache().function(func_id("f"));
    let runs = counter();
    for n in [1usize, 7, 40] {
        let mut forward = HashMap::new();
        let mut backward = HashMap::with_capacity(512);
        for i in 0..n {
            forward.insert(format!("k{i}"), i as u64);
        }
        for i in (0..n).rev() {
            backward.insert(format!("k{i}"), i as u64);
        }
        let set_a: HashSet<u64> = (0..n as u64).collect();
        let set_b: HashSet<u64> = (0..n as u64).rev().collect();
        for (map, set) in [(&forward, &set_a), (&backward, &set_b)] {
            let r = runs.clone();
            let total: u64 = f
                .call(&(map, set), move || async move {
                    r.fetch_add(1, SeqCst);
                    (0..n as u64).sum::<u64>() * 2
                })
                .await
                .expect("call");
            assert_eq!(total, (0..n as u64).sum::<u64>() * 2);
        }
    }
    assert_eq!(
        runs.load(SeqCst),
        3,
        "equal maps and sets were cached as different arguments"
    );
    Outcome::Passed
}
