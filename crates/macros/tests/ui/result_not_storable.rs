#![allow(dead_code)]

use std::sync::LazyLock;

use cachier_core::{Cachier, cachier};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| unreachable!("never called"));

#[derive(Clone)]
struct Rate(f64);

#[cachier(cache = CACHE)]
async fn rate(currency: &str) -> Rate {
    Rate(currency.len() as f64)
}

fn main() {}
