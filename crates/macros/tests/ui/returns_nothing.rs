#![allow(dead_code)]

use std::sync::LazyLock;

use cachier_core::{Cachier, cachier};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| unreachable!("never called"));

#[cachier(cache = CACHE)]
fn log(line: &str) {
    let _ = line;
}

fn main() {}
