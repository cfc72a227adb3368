#![allow(dead_code)]

use std::sync::LazyLock;

use cachier_core::{Cachier, cachier};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| unreachable!("never called"));

#[cachier(cache = CACHE)]
fn total(values: &mut Vec<u64>) -> u64 {
    values.sort();
    values.iter().sum()
}

fn main() {}
