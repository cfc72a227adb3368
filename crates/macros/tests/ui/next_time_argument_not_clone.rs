#![allow(dead_code)]

use std::sync::LazyLock;

use cachier_core::{Cachier, cachier};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| unreachable!("never called"));

#[derive(serde::Serialize)]
struct Query {
    text: String,
}

#[cachier(cache = CACHE, next_time)]
async fn search(query: Query) -> usize {
    query.text.len()
}

fn main() {}
