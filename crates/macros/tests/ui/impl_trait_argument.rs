#![allow(dead_code)]

use std::sync::LazyLock;

use cachier_core::{Cachier, cachier};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| unreachable!("never called"));

#[cachier(cache = CACHE)]
async fn rate(currency: impl AsRef<str>) -> f64 {
    currency.as_ref().len() as f64
}

fn main() {}
