//! Dynamic backends for cachier: a stable C ABI, the host that loads a backend from a shared
//! library at run time ([`PluginCore`]), and the macro that turns any [`Core`] into such a
//! library ([`export_core!`]).
//!
//! Rust trait objects have no stable layout across compilers or compiler versions, so a
//! `Box<dyn Core>` cannot cross a library boundary. A plugin therefore speaks C: one exported
//! symbol returns a declaration (who the plugin is, which ABI version it speaks) and a table of
//! `extern "C"` functions, one per [`Core`] method. The host checks the declaration before it
//! calls anything, then wraps the table in [`PluginCore`], which implements [`Core`] like any
//! backend crate. [`Core::usage`] (the namespace gauges) is not in ABI 1.0: a plugin's usage
//! reads as unknown, the trait's default.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cachier_core::{Cachier, Core, func_id};
//! use cachier_plugin::PluginCore;
//!
//! # async fn demo() -> cachier_core::Result<()> {
//! // The library's path and the plugin's own configuration text (here a directory).
//! let core: Arc<dyn Core> =
//!     Arc::new(PluginCore::load("plugins/libcachier_plugin_file.so", "cache-dir")?);
//! let cache = Cachier::builder(core).namespace("app")?.build();
//! let answer: u64 = cache.function(func_id!("answer")).call(&(), || async { 42 }).await?;
//! # Ok(()) }
//! ```
//!
//! A plugin written in Rust is a `cdylib` crate with one macro call (the example
//! `examples/plugin-file` wraps the file backend this way; `docs/writing-a-backend.md` is the
//! guide for backend authors):
//!
//! ```ignore
//! fn open(config: &str) -> cachier_core::Result<cachier_file::FileCore> {
//!     cachier_file::FileCore::open(cachier_file::Config::parse(config)?)
//! }
//! cachier_plugin::export_core!(open);
//! ```
//!
//! # The ABI, version 1.0
//!
//! Everything below is in [`abi`], with the exact Rust definitions. All integers are native
//! endian, all structs have C layout (natural alignment, no packing); the offsets are those of
//! 64-bit targets and are pinned by a test. Text is UTF-8 without a terminating NUL, passed as
//! pointer and length. Flags are bytes: 0 is false, anything else true. Times are UTC
//! milliseconds since the Unix epoch ([`Timestamp`](cachier_core::Timestamp)); durations are
//! nanoseconds.
//!
//! ## The symbol and the declaration
//!
//! The library exports `const PluginDeclaration *cachier_plugin_v1(void)` ([`abi::SYMBOL`]),
//! which returns a pointer to static data:
//!
//! | offset | field | type | meaning |
//! |---|---|---|---|
//! | 0 | `magic` | `u8[8]` | `CCHRPLUG` ([`abi::MAGIC`]) |
//! | 8 | `abi_major` | `u32` | 1 ([`abi::ABI_MAJOR`]) |
//! | 12 | `abi_minor` | `u32` | 0 ([`abi::ABI_MINOR`]) |
//! | 16 | `declaration_size` | `u32` | the size of this struct as the plugin knows it (64) |
//! | 20 | `table_size` | `u32` | the size of the table as the plugin knows it (136) |
//! | 24 | `name` | `CachierSlice` | the plugin's name |
//! | 40 | `version` | `CachierSlice` | the plugin's own version |
//! | 56 | `table` | `const PluginTable *` | the function table |
//!
//! The first 16 bytes keep their place in every version, so a host can always read the magic
//! and the version before anything else. Before its first call into the plugin,
//! [`PluginCore::open`] checks, in this order, and refuses with an
//! [`ErrorKind::Config`](cachier_core::ErrorKind::Config) error naming the library and the
//! reason: the file exists and is a loadable library; the symbol exists; the pointer is not
//! null; the magic matches; the major version is 1; the declaration and the table are at least
//! as large as version 1.0's; every required function is present.
//!
//! ## The function table
//!
//! Every function takes the handle `open` returned (`void *`), returns an `i32` status and
//! writes its results to out-parameters: [`abi::STATUS_OK`] (0) with the results filled in, or
//! [`abi::STATUS_ERROR`] (1) with the last parameter, a `CachierError`, filled in instead.
//!
//! | offset | function | parameters after the handle | `Core` method |
//! |---|---|---|---|
//! | 0 | `open` | (no handle) `CachierSlice config, void **handle, CachierError *err` | the constructor |
//! | 8 | `close` | — (returns nothing) | drop |
//! | 16 | `capabilities` | `CachierCapabilities *out, err` | `capabilities` |
//! | 24 | `get` | `const CachierKey *key, CachierEntry *out, err` | `get` |
//! | 32 | `get_value` | `key, CachierEntry *out, err` | `get_value` |
//! | 40 | `set` | `key, CachierSlice value, u64 stored_at_ms, err` | `set` |
//! | 48 | `claim` | `key, u64 lease_ns, CachierClaim *out, err` | `claim` |
//! | 56 | `renew` | `key, CachierSlice token, u64 lease_ns, u8 *renewed, err` | `renew` |
//! | 64 | `release` | `key, CachierSlice token, err` | `release` |
//! | 72 | `wait` | `key, u64 timeout_ns, CachierEntry *out, err` | `wait` |
//! | 80 | `remove` | `key, u8 *removed, err` | `remove` |
//! | 88 | `clear` | `CachierSlice namespace, CachierSlice func, u64 *count, err` | `clear` |
//! | 96 | `clear_claims` | `namespace, func, u64 *count, err` | `clear_claims` |
//! | 104 | `delete_stale` | `namespace, func, u64 stored_before_ms, u64 *count, err` | `delete_stale` |
//! | 112 | `clear_namespace` | `namespace, u64 *count, err` | `clear_namespace` |
//! | 120 | `free_buf` | (no handle) `CachierBuf buf` (returns nothing) | — |
//! | 128 | `try_get_value` | as `get_value`; may be NULL | `get_value` without blocking |
//!
//! The structs, all in [`abi`]:
//!
//! | struct | fields (offset) | size |
//! |---|---|---|
//! | `CachierSlice` (lent) | `const u8 *ptr` (0), `usize len` (8) | 16 |
//! | `CachierBuf` (returned) | `const u8 *ptr` (0), `usize len` (8), `void *owner` (16) | 24 |
//! | `CachierKey` | `CachierSlice namespace` (0), `CachierSlice func` (16), `u8 hash[32]` (32) | 64 |
//! | `CachierEntry` | `u8 found` (0), `u8 has_value` (1), `u8 has_claim` (2), 5 reserved, `u64 stored_at_ms` (8), `u64 claim_until_ms` (16), `CachierBuf value` (24) | 48 |
//! | `CachierClaim` | `u8 acquired` (0), 7 reserved, `u64 held_until_ms` (8), `CachierBuf token` (16) | 40 |
//! | `CachierCapabilities` | `u8 cross_process` (0), `u8 native_wakeup` (1), `u8 persistent` (2), `u8 has_max_value_bytes` (3), 4 reserved, `u64 max_value_bytes` (8) | 16 |
//! | `CachierError` | `u32 kind` (0), `u8 retryable` (4), 3 reserved, `CachierBuf message` (8) | 32 |
//!
//! Keys cross as their three parts in the documented key format
//! ([`Key`](cachier_core::Key)): the namespace and the function id as text, the argument hash
//! as its 32 raw bytes. An entry with `found = 0` is "no entry" (`None`); `has_value = 0` with
//! `found = 1` is a key with only a live claim. Errors cross as an
//! [`ErrorKind`](cachier_core::ErrorKind) code (`KIND_UNAVAILABLE` = 1, `CORRUPT` = 2,
//! `TOO_LARGE` = 3, `CONFIG` = 4, `INVALID_INPUT` = 5, `CODEC` = 6, `PERMISSION_DENIED` = 7,
//! `UNSUPPORTED` = 8, `BACKEND` = 9), the retryable flag and a message; the host adds the
//! operation, the plugin's name and the key. An unknown kind code is read as `Backend`, an
//! unknown status as a `Corrupt` error.
//!
//! ## Ownership
//!
//! - What the host passes (`CachierSlice`s, the key, the out-parameters) is **borrowed for the
//!   call**: the plugin copies what it keeps. The host zeroes every out-parameter before a call.
//! - The handle belongs to the plugin. `open` writes it only when it returns `STATUS_OK`; the
//!   host calls `close` exactly once for each, after the last call that uses it has returned,
//!   and never uses it again.
//! - What the plugin returns (`CachierBuf`s: values, claim tokens, error messages) is **owned
//!   by the plugin**. The host copies the bytes and gives every buffer whose `ptr` or `owner`
//!   is not null back, exactly once, through the plugin's own `free_buf`, never through its own
//!   allocator (two libraries may not even share an allocator). `owner` is the plugin's
//!   bookkeeping; the host never reads it. [`export_core!`] hands out values without copying
//!   them: the buffer points into the value's `Bytes` and `owner` keeps them alive.
//! - The host never trusts a length: a value longer than the plugin's declared
//!   `max_value_bytes` (or [`Config::with_max_value_bytes`], 1 GiB by default), a token or
//!   message longer than 64 KiB, or a non-empty buffer at a null pointer is refused with an
//!   error before a byte is read, so a broken plugin costs an error (a miss for the front end),
//!   never an allocation of the claimed size.
//!
//! ## Threading
//!
//! Every function except `try_get_value` is **blocking and thread-safe**: the host calls them
//! from any thread, many at once, with the same handle. [`PluginCore`] runs them on tokio's
//! blocking pool (`spawn_blocking`), so a slow store never stalls the application's async
//! workers; `wait` in particular blocks for up to its timeout.
//!
//! `try_get_value` is the one exception, for the hit path: it must **never block**. It answers
//! like `get_value` if it can do so at once, else returns [`abi::STATUS_WOULD_BLOCK`] (2)
//! having done nothing, and the host calls `get_value` on the blocking pool. The host calls it
//! on its async worker, saving the hop to the blocking pool (tens of microseconds, more than a
//! local file read). A plugin without such a fast path leaves it NULL.
//!
//! The export side runs the wrapped async [`Core`] on a runtime of its own: one
//! multi-threaded tokio runtime per library (two workers), created by the first `open` and
//! kept until the process exits. Each C function drives its future to completion on the
//! calling thread (`Runtime::block_on`); the workers run what it spawns, its timers and its IO.
//! `try_get_value` polls `Core::get_value` once on the calling thread and drops it if it is not
//! ready (a read has nothing to undo); after 8 such reads in a row it tries only every 64th
//! call, so a store whose reads always wait does not pay for the attempt. The plugin's copy of
//! tokio (and of `tracing`, whose events go nowhere unless the plugin installs a subscriber) is
//! its own: the host's runtime and the plugin's never see each other.
//!
//! Every function the macro generates wraps its body in `catch_unwind`: a panic in the plugin
//! is an error of that call (`Backend`, "the plugin panicked in get: ..."), never an unwind
//! into the host, which would abort it. The plugin must be built with `panic = "unwind"` (the
//! default).
//!
//! ## Versioning
//!
//! The symbol carries the major version (`cachier_plugin_v1`), and so does the declaration.
//! A **major** version changes the layout and is refused by hosts of another major. A
//! **minor** version only appends: fields at the end of the declaration, functions at the end
//! of the table; `declaration_size` and `table_size` tell the host how much the plugin has.
//! A host of minor N loads a plugin of any minor whose table is at least version 1.0's, and
//! treats functions beyond the plugin's `table_size` as absent; a plugin of a newer minor loads
//! in an older host, which simply does not call what it does not know.
//!
//! ## Libraries are never unloaded
//!
//! A library is opened once per path and stays loaded until the process exits, even after its
//! last [`PluginCore`] is dropped (`close` is called; `dlclose` is not). Unloading a Rust
//! library is not safe: its thread-local destructors, its runtime's worker threads and any
//! thread it started may still run code from it, and `dlclose` under them crashes the process
//! later, far from the cause. A process that needs a new version of a plugin restarts.
//!
//! ## Writing a plugin in C
//!
//! Declare the structs above field by field (or generate a header from [`abi`]), fill a static
//! `PluginTable` and a static `PluginDeclaration`, and export the symbol:
//!
//! ```c
//! static const PluginTable TABLE = { my_open, my_close, my_capabilities, my_get, my_get_value,
//!     my_set, my_claim, my_renew, my_release, my_wait, my_remove, my_clear, my_clear_claims,
//!     my_delete_stale, my_clear_namespace, my_free_buf, NULL /* try_get_value */ };
//! static const PluginDeclaration DECLARATION = { {'C','C','H','R','P','L','U','G'}, 1, 0,
//!     sizeof(PluginDeclaration), sizeof(PluginTable), {"my-store", 8}, {"0.1.0", 5}, &TABLE };
//! const PluginDeclaration *cachier_plugin_v1(void) { return &DECLARATION; }
//! ```
//!
//! The contract of each function is that of the [`Core`] method it stands for (atomic claims,
//! leases that expire, `clear` acting on exactly one function); prove it by loading the library
//! with [`PluginCore::load`] in a test and running `cachier_core::conformance_suite!` over it,
//! as this crate's own `tests/conformance.rs` does for the example plugin.
//!
//! # Crate layout
//!
//! - [`abi`]: the types and constants of the ABI;
//! - [`Config`] (`config.rs`): what to load and the limits the host enforces;
//! - [`PluginCore`] (`core.rs`): the host, the `Core` over a loaded table;
//! - `library.rs`: loading a library and checking its declaration;
//! - [`export`] and [`export_core!`]: the export side.

pub mod abi;
mod config;
mod core;
pub mod export;
mod library;

pub use crate::config::{Config, DEFAULT_MAX_VALUE_BYTES, MAX_TEXT_BYTES};
pub use crate::core::PluginCore;
pub use cachier_core::Core;
