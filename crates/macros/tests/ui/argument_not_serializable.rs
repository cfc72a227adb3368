#![allow(dead_code)]

use std::sync::LazyLock;

use cachier_core::{Cachier, cachier};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| unreachable!("never called"));

struct Client;

#[cachier(cache = CACHE)]
async fn rate(client: &Client, currency: &str) -> f64 {
    let _ = client;
    currency.len() as f64
}

fn main() {}
