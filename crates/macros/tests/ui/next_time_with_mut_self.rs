#![allow(dead_code)]

use std::sync::LazyLock;

use cachier_core::{Cachier, cachier};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| unreachable!("never called"));

struct Rates {
    lookups: u64,
}

impl Rates {
    #[cachier(cache = CACHE, next_time, ignore(self))]
    fn rate(&mut self, currency: &str) -> f64 {
        self.lookups += 1;
        currency.len() as f64
    }
}

fn main() {}
