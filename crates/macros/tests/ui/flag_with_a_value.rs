#![allow(dead_code)]

use std::sync::LazyLock;

use cachier_core::{Cachier, cachier};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| unreachable!("never called"));

#[cachier(cache = CACHE, allow_none = "yes")]
async fn find(currency: &str) -> Option<f64> {
    Some(currency.len() as f64)
}

fn main() {}
