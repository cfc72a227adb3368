#![allow(dead_code)]

use std::sync::LazyLock;

use cachier_core::{Cachier, cachier};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| unreachable!("never called"));

#[cachier(cache = CACHE)]
fn pad<const N: usize>(text: &str) -> String {
    format!("{text:>N$}")
}

fn main() {}
