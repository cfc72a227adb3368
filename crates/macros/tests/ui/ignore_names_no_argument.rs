#![allow(dead_code)]

use std::sync::LazyLock;

use cachier_core::{Cachier, cachier};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| unreachable!("never called"));

#[cachier(cache = CACHE, ignore(verbose))]
async fn rate(currency: &str, verbos: bool) -> f64 {
    let _ = verbos;
    currency.len() as f64
}

fn main() {}
