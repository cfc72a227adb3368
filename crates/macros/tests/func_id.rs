//! The function ids the attribute gives, pinned: an id is where a function's entries live, so
//! a change of id (or of the `hash_body` hash) misses every stored entry and must be a reviewed
//! snapshot change (`cargo insta review`), never an accident.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use cachier_core::{Cachier, cachier};
use cachier_memory::MemoryCore;
use serde::{Deserialize, Serialize};

static CACHE: LazyLock<Cachier> = LazyLock::new(|| Cachier::new(Arc::new(MemoryCore::new())));

/// A cache whose own settings say `next_time` and `allow_none`.
static EAGER: LazyLock<Cachier> = LazyLock::new(|| {
    Cachier::builder(Arc::new(MemoryCore::new()))
        .next_time(true)
        .allow_none(true)
        .stale_after(Duration::from_secs(60))
        .build()
});

/// The fixed function whose `hash_body` id is pinned.
mod fixed {
    use super::*;

    #[cachier(cache = CACHE, hash_body)]
    pub async fn invoice_total(lines: &[(String, u64)], discount: u8) -> u64 {
        let gross: u64 = lines.iter().map(|(_, cents)| cents).sum();
        gross - gross * u64::from(discount) / 100
    }
}

/// The same function, with other comments, doc comments and whitespace.
mod reformatted {
    use super::*;

    /// Sums the lines and takes the discount off.
    #[cachier(cache = CACHE, hash_body)]
    pub async fn invoice_total(lines: &[(String, u64)], discount: u8) -> u64 {
        // Gross first.
        let gross: u64 = lines.iter().map(|(_, cents)| cents).sum();
        gross - gross * u64::from(discount) / 100 // then the discount
    }
}

#[cachier(cache = CACHE, name = "billing::invoice_total", version = 3)]
async fn named(x: u64) -> u64 {
    x
}

#[cachier(cache = CACHE)]
fn generic<T: Serialize + Sync>(x: &T) -> u8 {
    let _ = x;
    0
}

#[derive(Clone, Serialize, Deserialize)]
struct Account {
    id: u64,
}

impl Account {
    #[cachier(cache = CACHE, key = self.id)]
    fn balance(&self) -> i64 {
        0
    }

    #[cachier(cache = CACHE)]
    fn open(id: u64) -> Self {
        Self { id }
    }
}

#[cachier(cache = EAGER)]
async fn inherits(x: u64) -> u64 {
    x
}

#[test]
fn ids_are_pinned() {
    let ids = [
        fixed::invoice_total_cache().id().to_string(),
        named_cache().id().to_string(),
        generic_cache::<Vec<u8>>().id().to_string(),
        Account::balance_cache().id().to_string(),
        Account::open_cache().id().to_string(),
    ];
    insta::assert_snapshot!(ids.join("\n"));
}

#[test]
fn comments_and_whitespace_keep_the_body_hash() {
    let hash = |id: &str| id.rsplit_once('#').map(|(_, hash)| hash.to_string());
    let fixed = fixed::invoice_total_cache().id().to_string();
    let reformatted = reformatted::invoice_total_cache().id().to_string();
    assert!(
        fixed.starts_with("func_id::fixed::invoice_total#"),
        "{fixed}"
    );
    assert_eq!(hash(&fixed), hash(&reformatted));
}

/// The attribute alone decides `next_time` (it changes what the generated code needs); other
/// settings of the cache carry over unless an argument overrides them.
#[test]
fn the_cache_settings_carry_over_but_next_time() {
    let settings = inherits_cache().settings();
    assert!(!settings.next_time);
    assert!(settings.allow_none);
    assert_eq!(settings.stale_after, Some(Duration::from_secs(60)));
}

#[cachier(cache = CACHE, stale_after = "1m", next_time)]
async fn refreshed(name: &str) -> String {
    name.to_uppercase()
}

struct Client {
    base: String,
}

impl Client {
    #[cachier(cache = CACHE, ignore(self))]
    async fn get(&self, path: &str) -> Result<String, String> {
        Ok(format!("{}{path}", self.base))
    }
}

/// The generated futures are `Send` where the body's is, so they can be spawned.
#[test]
fn generated_futures_are_send() {
    fn spawnable<F: std::future::Future + Send>(_: F) {}
    let client = Client {
        base: "https://".into(),
    };
    spawnable(inherits(1));
    spawnable(refreshed("a"));
    spawnable(client.get("x"));
}

#[derive(Clone)]
struct Shared {
    prefix: String,
}

impl Shared {
    #[cachier(cache = CACHE, stale_after = "1m", next_time, ignore(self))]
    fn into_len(self, extra: &[u8]) -> usize {
        self.prefix.len() + extra.len()
    }

    #[cachier(cache = CACHE, stale_after = "1m", next_time, ignore(self))]
    async fn in_arc(self: Arc<Self>, word: String) -> String {
        format!("{}{word}", self.prefix)
    }

    #[cachier(cache = CACHE, stale_after = "1m", next_time, ignore(self))]
    async fn describe<T>(&self, value: T) -> String
    where
        T: Serialize + std::fmt::Debug + Clone + Send + Sync + 'static,
    {
        format!("{}{value:?}", self.prefix)
    }
}

/// Under `next_time` a method's body runs on a copy of `self`, whatever the receiver.
#[test]
fn next_time_takes_any_copyable_receiver() {
    let shared = Shared {
        prefix: "> ".into(),
    };
    assert_eq!(shared.clone().into_len(b"ab"), 4);
    cachier_core::block_on(async {
        assert_eq!(Arc::new(shared.clone()).in_arc("x".into()).await, "> x");
        assert_eq!(shared.describe(7u8).await, "> 7");
        assert_eq!(shared.describe(7u8).await, "> 7");
    });
    assert_eq!(Shared::describe_cache::<u8>().stats().hits, 1);
    assert!(
        Shared::describe_cache::<u8>()
            .id()
            .as_str()
            .ends_with("::describe<u8>")
    );
}
