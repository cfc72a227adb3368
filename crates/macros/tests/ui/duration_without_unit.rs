#![allow(dead_code)]

use std::sync::LazyLock;

use cachier_core::{Cachier, cachier};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| unreachable!("never called"));

#[cachier(cache = CACHE, lease = 90)]
async fn rate(currency: &str) -> f64 {
    currency.len() as f64
}

fn main() {}
