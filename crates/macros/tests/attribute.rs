//! `#[cachier]` on the memory and file backends: every argument, `async fn` and plain `fn`, free
//! functions and methods, `Result` and `Option` returns, arguments taken by reference.
//!
//! `suite!` holds the tests once; `mod memory` and `mod file` expand it, and each test module's
//! cache comes from `support`, which picks the backend from the module's path. A test module
//! holds one test, which removes its store when it ends.

mod support;

macro_rules! suite {
    () => {
        /// `cache`: the first call computes and stores, the second is a hit.
        mod cache {
            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[cachier(cache = support::cache(module_path!()))]
            async fn square(x: u64) -> u64 {
                x * x
            }

            #[tokio::test]
            async fn the_second_call_is_a_hit() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(square(12).await, 144);
                assert_eq!(square(12).await, 144);
                let stats = square_cache().stats();
                assert_eq!((stats.computations, stats.hits), (1, 1));
                assert_eq!(
                    square_cache().id().as_str(),
                    concat!(module_path!(), "::square")
                );
            }
        }

        /// A plain `fn` follows `call_blocking`: its own runtime outside any, `block_in_place`
        /// inside a multi-threaded one.
        mod blocking {
            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[cachier(cache = support::cache(module_path!()))]
            fn cube(x: u64) -> u64 {
                x * x * x
            }

            #[test]
            fn a_plain_fn_is_cached_with_and_without_a_runtime() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(cube(3), 27);
                assert_eq!(cube(3), 27);
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime.block_on(async {
                    assert_eq!(cube(3), 27);
                    assert_eq!(cube(4), 64);
                });
                let stats = cube_cache().stats();
                assert_eq!((stats.computations, stats.hits), (2, 2));
            }
        }

        /// `name`: the function id, shared by every function that gives the same one.
        mod name {
            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[cachier(cache = support::cache(module_path!()), name = "shared::square")]
            async fn square(x: u64) -> u64 {
                x * x
            }

            #[cachier(cache = support::cache(module_path!()), name = "shared::square")]
            async fn square_elsewhere(_x: u64) -> u64 {
                0
            }

            #[tokio::test]
            async fn the_name_is_the_id() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(square_cache().id().as_str(), "shared::square");
                assert_eq!(square(3).await, 9);
                assert_eq!(
                    square_elsewhere(3).await,
                    9,
                    "the same id reads the same entry"
                );
            }
        }

        /// `version`: appended to the id, so another version misses the entries.
        mod version {
            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[cachier(cache = support::cache(module_path!()), name = "price", version = 1)]
            async fn price_v1(_item: u64) -> u64 {
                100
            }

            #[cachier(cache = support::cache(module_path!()), name = "price", version = "2")]
            async fn price_v2(_item: u64) -> u64 {
                200
            }

            #[cachier(cache = support::cache(module_path!()), name = "price", version = 1)]
            async fn price_v1_again(_item: u64) -> u64 {
                0
            }

            #[tokio::test]
            async fn another_version_misses() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(price_v1_cache().id().as_str(), "price@1");
                assert_eq!(price_v2_cache().id().as_str(), "price@2");
                assert_eq!(price_v1(7).await, 100);
                assert_eq!(price_v2(7).await, 200);
                assert_eq!(price_v1_again(7).await, 100);
            }
        }

        /// `hash_body`: a changed body misses, a reformatted one (comments, whitespace) hits.
        mod hash_body {
            use crate::support::Cleanup;

            const MODULE: &str = module_path!();

            mod original {
                use crate::support;
                use cachier_core::cachier;

                #[cachier(cache = support::cache(super::MODULE), name = "price", hash_body)]
                pub async fn price(item: u64) -> u64 {
                    item * 2
                }
            }

            mod reformatted {
                use crate::support;
                use cachier_core::cachier;

                #[cachier(cache = support::cache(super::MODULE), name = "price", hash_body)]
                /// The price, doubled (a doc comment does not count either).
                pub async fn price(item: u64) -> u64 {
                    // The same code, spaced and commented differently.
                    item * 2 /* still doubled */
                }
            }

            mod changed {
                use crate::support;
                use cachier_core::cachier;

                #[cachier(cache = support::cache(super::MODULE), name = "price", hash_body)]
                pub async fn price(item: u64) -> u64 {
                    item * 3
                }
            }

            #[tokio::test]
            async fn a_changed_body_misses_and_a_reformatted_one_hits() {
                let _cleanup = Cleanup(MODULE);
                let id = original::price_cache().id().as_str().to_string();
                assert!(
                    id.starts_with("price#") && id.len() == "price#".len() + 16,
                    "{id}"
                );
                assert_eq!(original::price(5).await, 10);
                assert_eq!(reformatted::price_cache().id().as_str(), id);
                assert_eq!(reformatted::price(5).await, 10);
                assert_eq!(reformatted::price_cache().stats().hits, 1);
                assert_ne!(changed::price_cache().id().as_str(), id);
                assert_eq!(
                    changed::price(5).await,
                    15,
                    "the new body misses the old entry"
                );
            }
        }

        /// `stale_after`: an older value is recomputed.
        mod stale_after {
            use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
            use std::time::Duration;

            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            static RUNS: AtomicU64 = AtomicU64::new(0);
            const A_DAY: Duration = Duration::from_secs(24 * 3600);

            #[cachier(cache = support::cache(module_path!()), stale_after = "1s")]
            async fn run_number(_x: u64) -> u64 {
                RUNS.fetch_add(1, SeqCst) + 1
            }

            #[cachier(cache = support::cache(module_path!()), stale_after = A_DAY)]
            async fn daily(x: u64) -> u64 {
                x
            }

            #[tokio::test]
            async fn a_value_older_than_stale_after_is_recomputed() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(
                    run_number_cache().settings().stale_after,
                    Some(Duration::from_secs(1))
                );
                assert_eq!(daily_cache().settings().stale_after, Some(A_DAY));
                assert_eq!(daily(5).await, 5);
                assert_eq!(run_number(1).await, 1);
                assert_eq!(run_number(1).await, 1);
                tokio::time::sleep(Duration::from_millis(1100)).await;
                assert_eq!(run_number(1).await, 2);
            }
        }

        /// `next_time` on an `async fn` with an argument taken by reference: the stale value
        /// is served at once and refreshed in the background.
        mod next_time {
            use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
            use std::time::Duration;

            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            static RUNS: AtomicU64 = AtomicU64::new(0);

            #[cachier(cache = support::cache(module_path!()), stale_after = "1s", next_time)]
            async fn run_number(_name: &str) -> u64 {
                RUNS.fetch_add(1, SeqCst) + 1
            }

            #[cachier(cache = support::cache(module_path!()))]
            async fn without(x: u64) -> u64 {
                x
            }

            #[tokio::test]
            async fn the_stale_value_is_served_and_refreshed_in_the_background() {
                let _cleanup = Cleanup(module_path!());
                assert!(run_number_cache().settings().next_time);
                assert!(!without_cache().settings().next_time);
                assert_eq!(without(5).await, 5);
                assert_eq!(run_number("a").await, 1);
                tokio::time::sleep(Duration::from_millis(1100)).await;
                assert_eq!(run_number("a").await, 1, "stale, served at once");
                assert_eq!(run_number_cache().stats().stale_hits, 1);
                assert!(
                    support::eventually(Duration::from_secs(10), || {
                        run_number_cache().stats().computations == 2
                    })
                    .await
                );
                assert!(
                    support::eventually(Duration::from_secs(10), || {
                        run_number_cache().stats().calls == 2 && RUNS.load(SeqCst) == 2
                    })
                    .await
                );
                // The refresh is stored right after it ran; give the store a moment.
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert_eq!(run_number("a").await, 2, "the refreshed value");
            }
        }

        /// `next_time` on a method taking `&self` (copied for the refresh) and a plain `fn`.
        mod next_time_method {
            use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
            use std::time::Duration;

            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[derive(Clone)]
            struct Counter {
                step: u64,
            }

            static RUNS: AtomicU64 = AtomicU64::new(0);
            static PLAIN_RUNS: AtomicU64 = AtomicU64::new(0);

            fn cache() -> &'static cachier_core::Cachier {
                support::cache(module_path!())
            }

            impl Counter {
                #[cachier(cache = cache(), stale_after = "1s", next_time, ignore(self))]
                async fn next(&self, values: &[u64]) -> u64 {
                    RUNS.fetch_add(self.step, SeqCst) + values.len() as u64
                }
            }

            #[cachier(cache = support::cache(module_path!()), stale_after = "1s", next_time)]
            fn plain(_x: u64) -> u64 {
                PLAIN_RUNS.fetch_add(1, SeqCst) + 1
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn methods_and_plain_fns_refresh_in_the_background() {
                let _cleanup = Cleanup(module_path!());
                let counter = Counter { step: 10 };
                assert_eq!(counter.next(&[1, 2]).await, 2);
                assert_eq!(plain(1), 1);
                tokio::time::sleep(Duration::from_millis(1100)).await;
                assert_eq!(counter.next(&[1, 2]).await, 2, "stale");
                assert_eq!(plain(1), 1, "stale");
                assert!(
                    support::eventually(Duration::from_secs(10), || {
                        RUNS.load(SeqCst) == 20 && PLAIN_RUNS.load(SeqCst) == 2
                    })
                    .await
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert_eq!(counter.next(&[1, 2]).await, 12, "refreshed");
                assert_eq!(plain(1), 2, "refreshed");
            }
        }

        /// `wait_for_calc_timeout`: a caller waits that long for another's computation.
        mod wait_for_calc_timeout {
            use std::time::Duration;

            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[cachier(cache = support::cache(module_path!()), wait_for_calc_timeout = "100ms")]
            async fn impatient(x: u64) -> u64 {
                tokio::time::sleep(Duration::from_millis(800)).await;
                x
            }

            #[cachier(cache = support::cache(module_path!()))]
            async fn patient(x: u64) -> u64 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                x
            }

            #[tokio::test]
            async fn a_caller_computes_on_its_own_after_the_timeout() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(
                    impatient_cache().settings().wait_for_calc_timeout,
                    Some(Duration::from_millis(100))
                );
                assert_eq!(tokio::join!(impatient(1), impatient(1)), (1, 1));
                let stats = impatient_cache().stats();
                assert_eq!((stats.computations, stats.wait_timeouts), (2, 1));
                assert_eq!(tokio::join!(patient(1), patient(1)), (1, 1));
                let stats = patient_cache().stats();
                assert_eq!((stats.computations, stats.waits), (1, 1));
            }
        }

        /// `lease`: the claim's length, renewed while the function runs, so a computation
        /// longer than the lease still keeps others waiting.
        mod lease {
            use std::time::Duration;

            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[cachier(cache = support::cache(module_path!()), lease = "1s")]
            async fn long(x: u64) -> u64 {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                x
            }

            #[tokio::test]
            async fn a_renewed_lease_outlasts_its_length() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(long_cache().settings().lease, Duration::from_secs(1));
                assert_eq!(tokio::join!(long(1), long(1)), (1, 1));
                let stats = long_cache().stats();
                assert_eq!((stats.computations, stats.hits), (1, 1));
            }
        }

        /// `allow_none`: `None` is stored only when it is on; `Some` always.
        mod allow_none {
            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[cachier(cache = support::cache(module_path!()))]
            async fn find(x: u64) -> Option<u64> {
                (x > 0).then_some(x)
            }

            #[cachier(cache = support::cache(module_path!()), allow_none)]
            async fn find_remembering_none(x: u64) -> Option<u64> {
                (x > 0).then_some(x)
            }

            #[cachier(cache = support::cache(module_path!()), allow_none = false)]
            fn find_blocking(x: u64) -> Option<u64> {
                (x > 0).then_some(x)
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn none_is_cached_only_with_allow_none() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!((find(0).await, find(0).await), (None, None));
                assert_eq!(find_cache().stats().computations, 2);
                assert_eq!((find(3).await, find(3).await), (Some(3), Some(3)));
                assert_eq!(find_cache().stats().computations, 3);
                assert_eq!(
                    (
                        find_remembering_none(0).await,
                        find_remembering_none(0).await
                    ),
                    (None, None)
                );
                assert_eq!(find_remembering_none_cache().stats().computations, 1);
                assert_eq!((find_blocking(0), find_blocking(0)), (None, None));
                assert_eq!((find_blocking(2), find_blocking(2)), (Some(2), Some(2)));
                assert_eq!(find_blocking_cache().stats().computations, 3);
            }
        }

        /// `entry_size_limit`: a bigger result is returned but not stored.
        mod entry_size_limit {
            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[cachier(cache = support::cache(module_path!()), entry_size_limit = "1KB")]
            async fn blob(len: usize) -> Vec<u8> {
                vec![7; len]
            }

            #[cachier(cache = support::cache(module_path!()), entry_size_limit = 4096)]
            async fn bytes(len: usize) -> Vec<u8> {
                vec![7; len]
            }

            #[tokio::test]
            async fn a_result_over_the_limit_is_not_stored() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(blob_cache().settings().entry_size_limit, Some(1000));
                assert_eq!(bytes_cache().settings().entry_size_limit, Some(4096));
                assert_eq!(bytes(4000).await.len(), 4000);
                assert_eq!(blob(100).await.len(), 100);
                assert_eq!(blob(100).await.len(), 100);
                assert_eq!(blob(5000).await.len(), 5000);
                assert_eq!(blob(5000).await.len(), 5000);
                let stats = blob_cache().stats();
                assert_eq!((stats.computations, stats.size_limit_rejections), (3, 2));
            }
        }

        /// `ignore(...)`: the arguments left out of the key do not tell calls apart.
        mod ignore {
            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[cachier(cache = support::cache(module_path!()), ignore(trace, verbose))]
            async fn total(values: &[u64], trace: bool, verbose: u8) -> u64 {
                let _ = (trace, verbose);
                values.iter().sum()
            }

            #[tokio::test]
            async fn ignored_arguments_share_the_entry() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(total(&[1, 2], false, 0).await, 3);
                assert_eq!(total(&[1, 2], true, 9).await, 3);
                assert_eq!(total(&[1, 3], true, 9).await, 4);
                let stats = total_cache().stats();
                assert_eq!((stats.computations, stats.hits), (2, 1));
            }
        }

        /// `key = ...`: the key is what the expression says.
        mod key {
            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            struct User {
                id: u64,
                name: String,
            }

            #[cachier(cache = support::cache(module_path!()), key = user.id)]
            async fn greeting(user: &User) -> String {
                format!("hello {}", user.name)
            }

            #[tokio::test]
            async fn the_key_expression_decides() {
                let _cleanup = Cleanup(module_path!());
                let ada = User {
                    id: 1,
                    name: "Ada".into(),
                };
                let renamed = User {
                    id: 1,
                    name: "Ada L.".into(),
                };
                let bob = User {
                    id: 2,
                    name: "Bob".into(),
                };
                assert_eq!(greeting(&ada).await, "hello Ada");
                assert_eq!(greeting(&renamed).await, "hello Ada", "same id, same entry");
                assert_eq!(greeting(&bob).await, "hello Bob");
                assert_eq!(greeting_cache().remove(&1u64).await.ok(), Some(true));
            }
        }

        /// Methods: `ignore(self)` shares results between instances, `key = (self...)` does
        /// not; `&mut self`, plain and async; an associated function naming `Self`.
        mod methods {
            use serde::{Deserialize, Serialize};

            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            struct Rates {
                markup: u64,
                lookups: u64,
            }

            impl Rates {
                #[cachier(cache = support::cache(module_path!()), ignore(self))]
                async fn rate(&self, currency: &str) -> u64 {
                    currency.len() as u64 + self.markup
                }

                #[cachier(cache = support::cache(module_path!()), key = (self.markup, currency))]
                fn counted_rate(&mut self, currency: &str) -> u64 {
                    self.lookups += 1;
                    currency.len() as u64 * self.markup
                }
            }

            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            struct Point {
                x: i64,
            }

            impl Point {
                #[cachier(cache = support::cache(module_path!()))]
                fn at(x: i64) -> Self {
                    Self { x }
                }
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn methods_are_cached_by_their_choice_of_key() {
                let _cleanup = Cleanup(module_path!());
                let cheap = Rates {
                    markup: 1,
                    lookups: 0,
                };
                let dear = Rates {
                    markup: 100,
                    lookups: 0,
                };
                assert_eq!(cheap.rate("EUR").await, 4);
                assert_eq!(dear.rate("EUR").await, 4, "ignore(self): instances share");

                let mut cheap = cheap;
                let mut dear = dear;
                assert_eq!(cheap.counted_rate("EUR"), 3);
                assert_eq!(dear.counted_rate("EUR"), 300, "keyed by self.markup");
                assert_eq!(cheap.counted_rate("EUR"), 3);
                assert_eq!((cheap.lookups, dear.lookups), (1, 1));

                assert_eq!(Point::at(4), Point { x: 4 });
                assert_eq!(Point::at(4), Point { x: 4 });
                assert_eq!(Point::at_cache().stats().hits, 1);

                let rates = std::any::type_name::<Rates>();
                assert_eq!(Rates::rate_cache().id().as_str(), format!("{rates}::rate"));
                let point = std::any::type_name::<Point>();
                assert_eq!(Point::at_cache().id().as_str(), format!("{point}::at"));
            }
        }

        /// Generic functions and methods of generic types: one id per instantiation.
        mod generics {
            use std::marker::PhantomData;

            use serde::Serialize;
            use serde::de::DeserializeOwned;

            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[cachier(cache = support::cache(module_path!()))]
            async fn twice<T>(x: T) -> Vec<T>
            where
                T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
            {
                vec![x.clone(), x]
            }

            struct Store<T>(PhantomData<T>);

            impl<T> Store<T> {
                #[cachier(cache = support::cache(module_path!()), ignore(self))]
                fn kind(&self, _x: u8) -> String {
                    std::any::type_name::<T>().to_string()
                }
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn instantiations_do_not_share_entries() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(twice(1u32).await, vec![1, 1]);
                assert_eq!(twice(1u64).await, vec![1, 1]);
                assert_eq!(twice(1u64).await, vec![1, 1]);
                assert_eq!(twice_cache::<u32>().stats().computations, 1);
                assert_eq!(twice_cache::<u64>().stats().hits, 1);
                assert!(twice_cache::<u32>().id().as_str().ends_with("::twice<u32>"));

                assert_eq!(Store::<u8>(PhantomData).kind(1), "u8");
                assert_eq!(Store::<u16>(PhantomData).kind(1), "u16");
                assert_eq!(Store::<u16>(PhantomData).kind(1), "u16");
                assert_ne!(
                    Store::<u8>::kind_cache().id(),
                    Store::<u16>::kind_cache().id()
                );
            }
        }

        /// `Result` returns: errors are returned, not cached. A strict cache's own errors come
        /// back as `E` where `E: From<cachier_core::Error>`; otherwise the function is
        /// fail-open.
        mod results {
            use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

            use crate::support::{self, Cleanup};
            use cachier_core::{ErrorKind, cachier};

            #[derive(Debug, PartialEq)]
            enum FetchError {
                NotFound,
                Cache(ErrorKind),
            }

            impl From<cachier_core::Error> for FetchError {
                fn from(err: cachier_core::Error) -> Self {
                    FetchError::Cache(err.kind())
                }
            }

            static RUNS: AtomicU64 = AtomicU64::new(0);

            #[cachier(cache = support::cache(module_path!()))]
            async fn fetch(x: u64) -> Result<u64, FetchError> {
                RUNS.fetch_add(1, SeqCst);
                if x == 0 {
                    return Err(FetchError::NotFound);
                }
                Ok(x)
            }

            #[cachier(cache = support::cache(module_path!()))]
            fn read_number(text: &str) -> std::io::Result<u64> {
                let bad = |_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not a number");
                let number: u64 = text.parse().map_err(bad)?; // `?` and `return` leave the body
                if number == 0 {
                    return Ok(0);
                }
                Ok(number)
            }

            #[cachier(cache = support::cache(module_path!()))]
            fn parse_boxed(text: &str) -> Result<u64, Box<dyn std::error::Error>> {
                Ok(text.parse()?)
            }

            #[cachier(cache = support::strict_cache(module_path!()), entry_size_limit = 64)]
            async fn strict_blob(len: usize) -> Result<Vec<u8>, FetchError> {
                Ok(vec![1; len])
            }

            #[cachier(cache = support::strict_cache(module_path!()), entry_size_limit = 64)]
            async fn fail_open_blob(len: usize) -> Result<Vec<u8>, String> {
                Ok(vec![1; len])
            }

            #[cachier(cache = support::strict_cache(module_path!()), entry_size_limit = 64)]
            fn plain_blob(len: usize) -> Vec<u8> {
                vec![1; len]
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn errors_are_not_cached_and_cache_errors_become_e() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(fetch(0).await, Err(FetchError::NotFound));
                assert_eq!(fetch(0).await, Err(FetchError::NotFound));
                assert_eq!(RUNS.load(SeqCst), 2, "an error is not cached");
                assert_eq!(fetch(1).await, Ok(1));
                assert_eq!(fetch(1).await, Ok(1));
                assert_eq!(RUNS.load(SeqCst), 3, "a value is");

                assert!(read_number("x").is_err());
                assert!(read_number("x").is_err());
                assert_eq!(read_number("12").ok(), Some(12));
                assert_eq!(read_number("12").ok(), Some(12));
                assert_eq!(read_number_cache().stats().computations, 3);

                assert!(parse_boxed("x").is_err());
                assert_eq!(parse_boxed("7").ok(), Some(7));
                assert_eq!(parse_boxed("7").ok(), Some(7));
                assert_eq!(parse_boxed_cache().stats().computations, 2);

                assert!(strict_blob_cache().settings().strict);
                assert_eq!(strict_blob(2).await, Ok(vec![1, 1]));
                assert_eq!(
                    strict_blob(100).await,
                    Err(FetchError::Cache(ErrorKind::TooLarge)),
                    "a strict cache's error comes back as E"
                );
                assert!(!fail_open_blob_cache().settings().strict);
                assert_eq!(fail_open_blob(100).await.map(|v| v.len()), Ok(100));
                assert!(!plain_blob_cache().settings().strict);
                assert_eq!(plain_blob(100).len(), 100);
            }
        }

        /// Arguments taken by reference: `&str`, `&[T]`, `&Struct`; the key is the same as
        /// for the owned value.
        mod references {
            use serde::Serialize;

            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[derive(Serialize)]
            struct Query {
                text: String,
                limit: usize,
            }

            #[cachier(cache = support::cache(module_path!()))]
            async fn count_words(text: &str) -> usize {
                text.split_whitespace().count()
            }

            #[cachier(cache = support::cache(module_path!()))]
            fn sum(values: &[u64]) -> u64 {
                values.iter().sum()
            }

            #[cachier(cache = support::cache(module_path!()))]
            async fn search<'q>(query: &'q Query, page: &u32) -> Vec<String> {
                let words = query.text.split(' ').map(str::to_string);
                words.skip(*page as usize).take(query.limit).collect()
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn arguments_by_reference_are_keyed_by_value() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(count_words("a b c").await, 3);
                assert_eq!(count_words(&String::from("a b c")).await, 3);
                assert_eq!(count_words_cache().stats().hits, 1);
                assert_eq!(count_words_cache().remove(&"a b c").await.ok(), Some(true));

                let values = vec![1, 2, 3];
                assert_eq!(sum(&values), 6);
                assert_eq!(sum(&[1, 2, 3]), 6);
                assert_eq!(sum_cache().stats().hits, 1);

                let query = Query {
                    text: "a b c d".into(),
                    limit: 2,
                };
                assert_eq!(search(&query, &1).await, ["b", "c"]);
                assert_eq!(search(&query, &1).await, ["b", "c"]);
                assert_eq!(search_cache().stats().hits, 1);
            }
        }

        /// The companion: `precache`, `remove`, `clear`, `stats`.
        mod companion {
            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[cachier(cache = support::cache(module_path!()))]
            async fn rate(currency: &str) -> f64 {
                currency.len() as f64
            }

            #[cachier(cache = support::cache(module_path!()))]
            async fn pair(a: u8, b: u8) -> u16 {
                u16::from(a) * u16::from(b)
            }

            #[tokio::test]
            async fn the_companion_manages_the_entries() {
                let _cleanup = Cleanup(module_path!());
                let handle = rate_cache();
                handle.precache(&"EUR", &1.25).await.expect("precache");
                assert_eq!(rate("EUR").await, 1.25);
                assert_eq!(handle.stats().computations, 0);
                assert_eq!(handle.remove(&"EUR").await.ok(), Some(true));
                assert_eq!(rate("EUR").await, 3.0);
                assert_eq!(rate("USD").await, 3.0);
                assert_eq!(handle.clear().await.ok(), Some(2));
                assert_eq!(handle.stats().computations, 2);

                assert_eq!(pair(3, 4).await, 12);
                assert_eq!(pair_cache().remove(&(3u8, 4u8)).await.ok(), Some(true));
            }
        }

        /// What the generated function keeps of the signature: patterns, `mut`, lifetimes,
        /// `where` clauses, attributes.
        mod signatures {
            use crate::support::{self, Cleanup};
            use cachier_core::cachier;

            #[cachier(cache = support::cache(module_path!()))]
            #[must_use]
            #[inline]
            pub(crate) fn spread((low, high): (u64, u64), mut step: u64, _: bool) -> u64 {
                #![allow(clippy::manual_div_ceil)]
                step = step.max(1);
                (high - low + step - 1) / step
            }

            #[cachier(cache = support::cache(module_path!()))]
            async fn longest<'a, S>(first: &'a S, second: &'a S) -> usize
            where
                S: AsRef<str> + serde::Serialize + Sync + ?Sized,
            {
                first.as_ref().len().max(second.as_ref().len())
            }

            #[test]
            fn patterns_lifetimes_and_attributes_are_kept() {
                let _cleanup = Cleanup(module_path!());
                assert_eq!(spread((0, 10), 0, true), 10);
                assert_eq!(spread((0, 10), 3, true), 4);
                assert_eq!(spread((0, 10), 3, false), 4);
                assert_eq!(spread_cache().stats().hits, 0);
                assert_eq!(spread((0, 10), 3, false), 4);
                assert_eq!(spread_cache().stats().hits, 1);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime.block_on(async {
                    assert_eq!(longest("ab", "abc").await, 3);
                    assert_eq!(longest("ab", "abc").await, 3);
                });
                assert_eq!(longest_cache::<str>().stats().hits, 1);
            }
        }
    };
}

mod memory {
    suite!();
}

mod file {
    suite!();
}
