#![allow(dead_code)]

use std::sync::LazyLock;

use cachier_core::{Cachier, cachier};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| unreachable!("never called"));

struct Rates;

impl Rates {
    #[cachier(cache = CACHE)]
    async fn rate(&self, currency: &str) -> f64 {
        currency.len() as f64
    }
}

fn main() {}
