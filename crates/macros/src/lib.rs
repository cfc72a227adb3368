//! # cachier-macros
//!
//! The `#[cachier]` attribute: caching a function is one line,
//! `#[cachier(cache = CACHE, stale_after = "1h")]`. Applications do not depend on this crate:
//! `cachier-core` re-exports the attribute as `cachier_core::cachier` (feature `macros`, on by
//! default). Everything it does — what it writes, the key, the function id, every argument with
//! an example, methods, generics, the compile errors — is documented on the attribute itself,
//! [`macro@cachier`], so that `cachier_core::cachier` shows the same page.
//!
//! The crate reads top-down:
//!
//! - `args`: the attribute's arguments, parsed and checked (unknown names, duplicates, values);
//! - `human`: durations (`"90s"`, `"1h30m"`) and sizes (`"10MB"`, `"512KiB"`) at compile time;
//! - `function`: what the function is (receiver, arguments, return type, generics) and the
//!   misuse it refuses;
//! - `body_hash`: the `hash_body` hash of the function's tokens;
//! - `expand`: the code written — the function, its companion, the compute step.
//!
//! The generated code calls `cachier_core::__private` (not a public API): the key is made from
//! the borrowed arguments first, then the body runs as a compute step that may borrow what the
//! call borrows (arguments by reference, `&self`), so nothing is copied on a hit; `next_time`
//! alone needs copies, made on a miss or a refresh.
//!
//! Tests: `tests/attribute.rs` (every argument on the memory and file backends),
//! `tests/func_id.rs` (the ids, pinned with insta), `tests/compile_fail.rs` (trybuild, the
//! messages pinned in `tests/ui/`).

mod args;
mod body_hash;
mod expand;
mod function;
mod human;

use proc_macro::TokenStream;

/// Caches a function's results in one line:
/// `#[cachier(cache = CACHE, stale_after = "1h", ...)]`.
///
/// Write `use cachier_core::cachier;`: `cachier-core` re-exports the attribute (its feature
/// `macros`, on by default), so there is no extra crate to add.
///
/// ```
/// use std::sync::{Arc, LazyLock};
/// use cachier_core::{Cachier, cachier};
/// use cachier_memory::MemoryCore;
///
/// static CACHE: LazyLock<Cachier> =
///     LazyLock::new(|| Cachier::new(Arc::new(MemoryCore::new())));
///
/// #[derive(Debug)]
/// struct FetchError(String);
///
/// impl From<cachier_core::Error> for FetchError {
///     fn from(err: cachier_core::Error) -> Self {
///         FetchError(err.to_string())
///     }
/// }
///
/// /// The rate of `currency` in euros (a slow web call, in real life).
/// #[cachier(cache = CACHE, stale_after = "1h")]
/// async fn exchange_rate(currency: &str) -> Result<f64, FetchError> {
///     match currency {
///         "EUR" => Ok(1.0),
///         "USD" => Ok(0.92),
///         other => Err(FetchError(format!("no rate for {other}"))),
///     }
/// }
///
/// # cachier_core::block_on(async {
/// assert_eq!(exchange_rate("USD").await.unwrap(), 0.92); // computed and stored
/// assert_eq!(exchange_rate("USD").await.unwrap(), 0.92); // from the cache
/// assert!(exchange_rate("XYZ").await.is_err());          // errors are not stored
/// assert_eq!(exchange_rate_cache().stats().hits, 1);     // the companion
/// # });
/// ```
///
/// ## What it writes
///
/// - **The function, with the signature you wrote**: name, visibility, doc comments and other
///   attributes, generics, lifetimes, `where` clause, `async` or not. Its body becomes the
///   compute step of a [`Function`] call: [`call`][call]'s algorithm for an
///   `async fn`, [`call_blocking`][call_blocking]'s rules for a plain `fn` (its own
///   small runtime outside any, `block_in_place` inside a multi-threaded tokio runtime, the
///   cache bypassed inside a current-thread one). Concurrent callers of one key compute once,
///   across threads and, with a shared backend, across processes.
/// - **The companion** `{name}_cache()` (an associated function `Self::{name}_cache()` for a
///   function in an `impl` block, with the same generic parameters as the function), which
///   returns the function's `&'static` [`Function`] handle: [`clear`][clear],
///   [`remove`][remove], [`precache`][precache],
///   [`stats`][stats], [`key`][key], [`id`][id],
///   [`settings`][settings].
///
/// The handle is made once, on the first call (or the companion's), from `cache` and the
/// arguments below; the cache's own [`Settings`] are the defaults, and each argument given
/// overrides one of them for this function.
///
/// ### The key
///
/// The arguments in declaration order, less those in `ignore(...)`, each borrowed: one argument
/// is the key itself, several make a tuple, none make `()`. `key = expr` replaces all that. So
/// `exchange_rate("USD")` is stored under the key of `"USD"`, and
/// `exchange_rate_cache().remove(&"USD")` removes it. An argument taken by reference is keyed
/// by its value: `&str` and `String` give the same key. Pass `remove` and `precache` the same
/// types as the function takes (`&(3u8, 4u8)`, not `&(3, 4)`, which are `i32`s).
///
/// ### The function id
///
/// `module_path!()::name` for a free function; `{Self type}::name` for a method or an associated
/// function that names `Self` (the type's path as [`std::any::type_name`] prints it, so two
/// types with a method of the same name never share entries); `name = "..."` replaces either.
/// Then, where they apply: `<T, U>` (the type arguments of a generic function, by
/// `type_name`, so each instantiation has entries of its own), `@version`, and `#` and 16 hex
/// digits with `hash_body`. Pin ids you depend on with `name`: `type_name`'s output is not
/// promised to stay the same across compiler releases (a change is a cache miss, never a wrong
/// value).
///
/// ### `Result`, `Option` and errors
///
/// - `Result<T, E>` (also through an alias such as `io::Result<T>`): an `Err` is returned to
///   the caller and not stored, and the claim is released so another caller may try at once.
///   Where `E: From<cachier_core::Error>`, a `strict` cache's own errors come back as `E`;
///   otherwise, and for any other return type, the function is fail-open: its handle has
///   `strict` off, so a backend outage costs a computation, never the result.
/// - `Option<T>`: `None` is returned but not stored, unless `allow_none`.
///
/// ## Arguments
///
/// | argument | value | overrides |
/// |---|---|---|
/// | `cache` | an expression for the [`Cachier`] (required) | — |
/// | `name` | a string: the function id | the default id |
/// | `version` | a string or a number, appended as `@version` | — |
/// | `hash_body` | flag: a hash of the function's tokens in the id | — |
/// | `stale_after` | a duration | [`Settings::stale_after`][s_stale_after] |
/// | `next_time` | flag: serve a stale value, refresh in the background | [`Settings::next_time`][s_next_time] |
/// | `wait_for_calc_timeout` | a duration | [`Settings::wait_for_calc_timeout`][s_wait_for_calc_timeout] |
/// | `lease` | a duration | [`Settings::lease`][s_lease] |
/// | `allow_none` | flag: store `None` too | [`Settings::allow_none`][s_allow_none] |
/// | `entry_size_limit` | a size | [`Settings::entry_size_limit`][s_entry_size_limit] |
/// | `ignore(a, b)` | arguments left out of the key (`self` too) | — |
/// | `key` | an expression: the key | the argument tuple |
///
/// Flags are written alone (`next_time`) or as `next_time = true` / `false`. **Durations** are
/// strings read at compile time — a whole number and a unit, `ms`, `s`, `m`, `h` or `d`, parts
/// adding up: `"500ms"`, `"90s"`, `"10m"`, `"1h30m"`, `"7d"` — or any expression of type
/// [`Duration`](std::time::Duration), such as a `const`. **Sizes** are a number of bytes
/// (`4096`), a string with a unit (`"10MB"`, `"512KiB"`; `KB`, `MB`, `GB`, `TB` are powers of
/// 1000, `KiB`, `MiB`, `GiB`, `TiB` of 1024, read without regard to case), or any `usize`
/// expression. A string that does not read is a compile error at the string.
///
/// In the examples below, `CACHE` is the static of the first example.
///
/// ### `cache`
///
/// The [`Cachier`] that keeps the results: a `static` (`LazyLock<Cachier>`), or any expression
/// that gives a `&Cachier` by reference or deref. It is evaluated once per function (per
/// instantiation), on first use, so it cannot use `self` or the arguments.
///
/// ```
/// # use std::sync::{Arc, LazyLock};
/// # use cachier_core::{Cachier, cachier};
/// # use cachier_memory::MemoryCore;
/// fn shared_cache() -> &'static Cachier {
///     static CACHE: LazyLock<Cachier> =
///         LazyLock::new(|| Cachier::new(Arc::new(MemoryCore::new())));
///     &CACHE
/// }
///
/// #[cachier(cache = shared_cache())]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// # assert_eq!(square(12), 144);
/// ```
///
/// ### `name` and `version`
///
/// `name` is the whole function id (a function moved to another module keeps its entries);
/// `version` is appended, so a new version misses the entries of the old.
///
/// ```
/// # use std::sync::{Arc, LazyLock};
/// # use cachier_core::{Cachier, cachier};
/// # static CACHE: LazyLock<Cachier> = LazyLock::new(|| Cachier::new(Arc::new(cachier_memory::MemoryCore::new())));
/// #[cachier(cache = CACHE, name = "billing::invoice_total", version = 2)]
/// fn invoice_total(cents: &[u64]) -> u64 {
///     cents.iter().sum()
/// }
/// assert_eq!(invoice_total_cache().id().as_str(), "billing::invoice_total@2");
/// ```
///
/// ### `hash_body`
///
/// A hash of the function's signature, body and key arguments (`ignore`, `key`) goes into the
/// id, so changed code misses the entries of the old code, with no `version` to remember. The
/// hash is of the tokens: whitespace, comments and doc comments do not count, and neither
/// does the spacing of punctuation. It does **not** cover the functions the body calls, nor
/// constants, types or dependencies it uses: a change there keeps the old entries (give a
/// `version` then).
///
/// ```
/// # use std::sync::{Arc, LazyLock};
/// # use cachier_core::{Cachier, cachier};
/// # static CACHE: LazyLock<Cachier> = LazyLock::new(|| Cachier::new(Arc::new(cachier_memory::MemoryCore::new())));
/// #[cachier(cache = CACHE, hash_body)]
/// fn tax(cents: u64) -> u64 {
///     cents * 21 / 100 // editing this comment keeps the entries; editing 21 does not
/// }
/// assert!(tax_cache().id().as_str().contains("::tax#"));
/// ```
///
/// ### `stale_after`
///
/// How long a stored value is fresh; an older one is recomputed (see `next_time`).
///
/// ```
/// # use std::sync::{Arc, LazyLock};
/// # use cachier_core::{Cachier, cachier};
/// # static CACHE: LazyLock<Cachier> = LazyLock::new(|| Cachier::new(Arc::new(cachier_memory::MemoryCore::new())));
/// use std::time::Duration;
/// const A_DAY: Duration = Duration::from_secs(24 * 3600);
///
/// #[cachier(cache = CACHE, stale_after = "15m")]
/// async fn weather(city: &str) -> String {
///     format!("sunny in {city}")
/// }
///
/// #[cachier(cache = CACHE, stale_after = A_DAY)]
/// async fn holidays(year: u16) -> Vec<String> {
///     vec![format!("{year}-01-01")]
/// }
/// # assert_eq!(weather_cache().settings().stale_after, Some(Duration::from_secs(900)));
/// ```
///
/// ### `next_time`
///
/// A stale value is returned at once and refreshed in the background. The refresh runs after
/// the call has returned, so it works on copies: arguments taken by reference are copied
/// with `ToOwned` (`&str` → `String`), others with `Clone`, and a method's `self` with `Clone`
/// (not `&mut self`) — only on a miss or a refresh, never on a hit. Without `next_time` the
/// body runs inside the call on what the call borrows, and nothing is copied. Only the
/// attribute turns `next_time` on: a cache-wide `next_time` does not reach attribute functions,
/// since it changes what they need.
///
/// ```
/// # use std::sync::{Arc, LazyLock};
/// # use cachier_core::{Cachier, cachier};
/// # static CACHE: LazyLock<Cachier> = LazyLock::new(|| Cachier::new(Arc::new(cachier_memory::MemoryCore::new())));
/// #[cachier(cache = CACHE, stale_after = "1m", next_time)]
/// async fn dashboard(team: &str) -> Vec<u64> {
///     vec![team.len() as u64]
/// }
/// ```
///
/// ### `wait_for_calc_timeout`
///
/// How long a caller waits for another caller's computation of the same key before it
/// computes on its own (default: as long as the other holds a live lease).
///
/// ```
/// # use std::sync::{Arc, LazyLock};
/// # use cachier_core::{Cachier, cachier};
/// # static CACHE: LazyLock<Cachier> = LazyLock::new(|| Cachier::new(Arc::new(cachier_memory::MemoryCore::new())));
/// #[cachier(cache = CACHE, wait_for_calc_timeout = "5s")]
/// async fn report(month: u8) -> String {
///     format!("report {month}")
/// }
/// ```
///
/// ### `lease`
///
/// The claim's length: a computing caller renews it every third of it, so a process killed
/// mid-computation blocks the others for at most one lease.
///
/// ```
/// # use std::sync::{Arc, LazyLock};
/// # use cachier_core::{Cachier, cachier};
/// # static CACHE: LazyLock<Cachier> = LazyLock::new(|| Cachier::new(Arc::new(cachier_memory::MemoryCore::new())));
/// #[cachier(cache = CACHE, lease = "10s")]
/// fn train(epochs: u32) -> Vec<f32> {
///     vec![0.5; epochs as usize]
/// }
/// ```
///
/// ### `allow_none`
///
/// Store `None` results too (by default a `None` is returned and computed again next time).
///
/// ```
/// # use std::sync::{Arc, LazyLock};
/// # use cachier_core::{Cachier, cachier};
/// # static CACHE: LazyLock<Cachier> = LazyLock::new(|| Cachier::new(Arc::new(cachier_memory::MemoryCore::new())));
/// #[cachier(cache = CACHE, allow_none)]
/// async fn user_email(id: u64) -> Option<String> {
///     (id == 1).then(|| "ada@example.com".to_string())
/// }
/// ```
///
/// ### `entry_size_limit`
///
/// The largest encoded result that is stored; a bigger one is returned but not stored.
///
/// ```
/// # use std::sync::{Arc, LazyLock};
/// # use cachier_core::{Cachier, cachier};
/// # static CACHE: LazyLock<Cachier> = LazyLock::new(|| Cachier::new(Arc::new(cachier_memory::MemoryCore::new())));
/// #[cachier(cache = CACHE, entry_size_limit = "10MB")]
/// fn thumbnail(path: &str) -> Vec<u8> {
///     path.as_bytes().to_vec()
/// }
/// # assert_eq!(thumbnail_cache().settings().entry_size_limit, Some(10_000_000));
/// ```
///
/// ### `ignore(a, b)`
///
/// Arguments that do not change the result (a logger, a flag for tracing, a client): left out
/// of the key, still passed to the body. Only plain `name: Type` arguments can be named;
/// `ignore(self)` is for methods (below).
///
/// ```
/// # use std::sync::{Arc, LazyLock};
/// # use cachier_core::{Cachier, cachier};
/// # static CACHE: LazyLock<Cachier> = LazyLock::new(|| Cachier::new(Arc::new(cachier_memory::MemoryCore::new())));
/// #[cachier(cache = CACHE, ignore(verbose))]
/// fn word_count(text: &str, verbose: bool) -> usize {
///     if verbose {
///         eprintln!("counting {} bytes", text.len());
///     }
///     text.split_whitespace().count()
/// }
/// # assert_eq!(word_count("a b", true), word_count("a b", false));
/// ```
///
/// ### `key = expr`
///
/// The key is the value of `expr` (anything `serde::Serialize`), written with the arguments
/// (and `self`) in scope; it replaces the argument tuple, so `ignore` does not go with it.
///
/// ```
/// # use std::sync::{Arc, LazyLock};
/// # use cachier_core::{Cachier, cachier};
/// # static CACHE: LazyLock<Cachier> = LazyLock::new(|| Cachier::new(Arc::new(cachier_memory::MemoryCore::new())));
/// struct User {
///     id: u64,
///     name: String,
/// }
///
/// #[cachier(cache = CACHE, key = user.id)]
/// async fn orders(user: &User) -> Vec<u64> {
///     vec![user.id * 100]
/// }
/// ```
///
/// ## Methods
///
/// A method with a receiver must say how `self` counts: `ignore(self)` shares the results
/// between all instances (a client, a service), `key = ...` builds the key from what matters
/// (`self.id`, `self.tenant`). Without either, it is a compile error (Python's cachier silently
/// shares). The companion is an associated function; methods must be in an inherent `impl`
/// block, since a trait `impl` takes no extra items (put the cached logic in an inherent method
/// and call it from the trait method).
///
/// ```
/// # use std::sync::{Arc, LazyLock};
/// # use cachier_core::{Cachier, cachier};
/// # static CACHE: LazyLock<Cachier> = LazyLock::new(|| Cachier::new(Arc::new(cachier_memory::MemoryCore::new())));
/// struct Rates {
///     tenant: u32,
/// }
///
/// impl Rates {
///     #[cachier(cache = CACHE, ignore(self))]
///     async fn rate(&self, currency: &str) -> f64 {
///         currency.len() as f64
///     }
///
///     #[cachier(cache = CACHE, key = (self.tenant, currency))]
///     fn tenant_rate(&mut self, currency: &str) -> f64 {
///         f64::from(self.tenant)
///     }
/// }
/// # let _ = Rates::rate_cache();
/// ```
///
/// An associated function without `self` that names `Self` (in its signature or body) is known
/// to be in an `impl` block and gets the `{Self type}::name` id; one that does not gets the
/// free function's id `module_path!()::name`, which two such functions of one name in one
/// module would share — give them a `name`.
///
/// ## Generic functions
///
/// Type parameters go into the id by name, so `f::<u32>` and `f::<u64>` never share entries;
/// their companion takes them too (`f_cache::<u32>()`). Arguments of a generic type must be
/// `Serialize` (say so in the bounds), results `Serialize + DeserializeOwned + Clone + Send +
/// Sync + 'static`. Refused, with a compile error that says what to write: `impl Trait` arguments
/// (their types have no name to put in the id) and const generic parameters.
///
/// ## Misuse is a compile error
///
/// An unknown argument (with the nearest known one), a duration or size that does not read,
/// `ignore` naming no argument, a receiver without `ignore(self)` or `key`, an argument that is
/// not `Serialize` (at the argument), a result that cannot be stored (at the return type),
/// `&mut` arguments in the key, `next_time` with `&mut self` or arguments that are not
/// `Clone`, `const fn`, `unsafe fn`, functions that return nothing: each is an error pointing at
/// the offending token, saying what to write instead. `tests/ui/` pins every message.
///
/// [`Function`]: ../cachier_core/struct.Function.html
/// [`Cachier`]: ../cachier_core/struct.Cachier.html
/// [`Settings`]: ../cachier_core/struct.Settings.html
/// [call]: ../cachier_core/struct.Function.html#method.call
/// [call_blocking]: ../cachier_core/struct.Function.html#method.call_blocking
/// [clear]: ../cachier_core/struct.Function.html#method.clear
/// [remove]: ../cachier_core/struct.Function.html#method.remove
/// [precache]: ../cachier_core/struct.Function.html#method.precache
/// [stats]: ../cachier_core/struct.Function.html#method.stats
/// [key]: ../cachier_core/struct.Function.html#method.key
/// [id]: ../cachier_core/struct.Function.html#method.id
/// [settings]: ../cachier_core/struct.Function.html#method.settings
/// [s_stale_after]: ../cachier_core/struct.Settings.html#structfield.stale_after
/// [s_next_time]: ../cachier_core/struct.Settings.html#structfield.next_time
/// [s_wait_for_calc_timeout]: ../cachier_core/struct.Settings.html#structfield.wait_for_calc_timeout
/// [s_lease]: ../cachier_core/struct.Settings.html#structfield.lease
/// [s_allow_none]: ../cachier_core/struct.Settings.html#structfield.allow_none
/// [s_entry_size_limit]: ../cachier_core/struct.Settings.html#structfield.entry_size_limit
#[proc_macro_attribute]
pub fn cachier(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr.into(), item.into()).into()
}
