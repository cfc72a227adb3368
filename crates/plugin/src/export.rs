//! The export side: the C functions [`export_core!`](crate::export_core!) puts in a plugin's
//! table, over any [`Core`].
//!
//! A plugin author writes a constructor and one macro call; everything here is what the macro
//! expands to, so it lives in this crate once instead of in every plugin. The functions are
//! plain `extern "C"` functions: linked into the plugin's `cdylib`, they run in the plugin's
//! copy of this crate, with the plugin's copy of tokio and the plugin's runtime.
//!
//! Every function wraps its whole body in `catch_unwind`: a panic becomes a
//! [`STATUS_ERROR`] with a `Backend` error saying where the plugin panicked, never an unwind
//! into the host (which would abort it).

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use cachier_core::{
    ArgHash, Claim, ClaimToken, Core, Entry, Error, ErrorKind, FuncId, Key, Namespace, Result,
    Timestamp,
};
use tokio::runtime::{Builder, Runtime};

use crate::abi::{
    self, CachierBuf, CachierCapabilities, CachierClaim, CachierEntry, CachierError, CachierKey,
    CachierSlice, Handle, PluginDeclaration, PluginTable, STATUS_ERROR, STATUS_OK,
    STATUS_WOULD_BLOCK,
};

/// Worker threads of the plugin's runtime. The C functions drive their futures on the calling
/// (host) thread; the workers run what those futures spawn, timers and IO.
const WORKER_THREADS: usize = 2;

/// After this many `try_get_value` calls in a row that would have blocked, the store's reads
/// are taken to block, and only every [`TRY_AGAIN_EVERY`]th call tries again.
const BLOCKING_STREAK: u32 = 8;
/// See [`BLOCKING_STREAK`].
const TRY_AGAIN_EVERY: u32 = 64;

/// The plugin's runtime: one multi-threaded tokio runtime per library, started by the first
/// `open` and kept for the life of the process.
fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .thread_name("cachier-plugin")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                format!("the plugin cannot start its tokio runtime: {e}"),
            )
        })
}

/// Runs `future` to completion on the calling thread, within the plugin's runtime.
fn block_on<F: Future>(future: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(future))
}

/// What a handle points to: one open store.
struct Exported {
    core: Arc<dyn Core>,
    /// `try_get_value` calls in a row that would have blocked.
    blocking_streak: AtomicU32,
    /// `try_get_value` calls while the streak is long.
    skipped: AtomicU32,
}

impl Exported {
    /// Whether `try_get_value` should poll the store at all (see [`BLOCKING_STREAK`]).
    fn should_try(&self) -> bool {
        self.blocking_streak.load(Ordering::Relaxed) < BLOCKING_STREAK
            || self
                .skipped
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(TRY_AGAIN_EVERY)
    }

    fn tried(&self, answered: bool) {
        if answered {
            if self.blocking_streak.load(Ordering::Relaxed) != 0 {
                self.blocking_streak.store(0, Ordering::Relaxed);
            }
        } else {
            let _ = self
                .blocking_streak
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_add(1))
                });
        }
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Runs `body`, turning an error or a panic into [`STATUS_ERROR`] and a filled-in `err`.
fn guard(
    operation: &'static str,
    err: *mut CachierError,
    body: impl FnOnce() -> Result<i32>,
) -> i32 {
    let error = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(status)) => return status,
        Ok(Err(error)) => error,
        Err(payload) => {
            let text = panic_message(payload.as_ref());
            // Dropping a payload can itself panic; it must not unwind into the host either.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            Error::new(
                ErrorKind::Backend,
                format!("the plugin panicked in {operation}: {text}"),
            )
        }
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if !err.is_null() {
            // SAFETY: the host passes a writable `CachierError` for the call.
            unsafe { err.write(c_error(&error)) };
        }
    }));
    STATUS_ERROR
}

/// An error as the ABI carries it: kind, retryability and a message with the backend's name
/// and the error's sources (the host adds the operation and key itself).
fn c_error(error: &Error) -> CachierError {
    let mut text = match error.backend() {
        Some(backend) => format!("{backend}: {}", error.message()),
        None => error.message().to_owned(),
    };
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    CachierError {
        kind: abi::kind_code(error.kind()),
        retryable: u8::from(error.is_retryable()),
        reserved: [0; 3],
        message: c_buf(Bytes::from(text)),
    }
}

/// Hands `bytes` to the host: the buffer points into them and owns them until `free_buf`.
fn c_buf(bytes: Bytes) -> CachierBuf {
    if bytes.is_empty() {
        return CachierBuf::EMPTY;
    }
    let (ptr, len) = (bytes.as_ptr(), bytes.len());
    CachierBuf {
        ptr,
        len,
        owner: Box::into_raw(Box::new(bytes)).cast(),
    }
}

fn c_entry(entry: Option<Entry>) -> CachierEntry {
    let Some(entry) = entry else {
        return CachierEntry::EMPTY;
    };
    CachierEntry {
        found: 1,
        has_value: u8::from(entry.value.is_some()),
        has_claim: u8::from(entry.claim_until.is_some()),
        reserved: [0; 5],
        stored_at_ms: entry.stored_at.as_millis(),
        claim_until_ms: entry.claim_until.map_or(0, Timestamp::as_millis),
        value: entry.value.map_or(CachierBuf::EMPTY, c_buf),
    }
}

/// The store behind a handle.
///
/// # Safety
///
/// `handle` must be null or come from this library's `open` and not be closed yet.
unsafe fn exported<'a>(handle: Handle) -> Result<&'a Exported> {
    if handle.is_null() {
        return Err(Error::invalid_input("the host passed a null handle"));
    }
    // SAFETY: the caller's promise.
    Ok(unsafe { &*handle.cast::<Exported>() })
}

/// An out-parameter.
///
/// # Safety
///
/// `ptr` must be null or valid for writes during the call.
unsafe fn out<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T> {
    if ptr.is_null() {
        return Err(Error::invalid_input(format!(
            "the host passed a null pointer for {what}"
        )));
    }
    // SAFETY: the caller's promise.
    Ok(unsafe { &mut *ptr })
}

/// UTF-8 text the host lends.
///
/// # Safety
///
/// `slice` must be empty or point to `len` readable bytes for the call.
unsafe fn text<'a>(slice: CachierSlice, what: &str) -> Result<&'a str> {
    // SAFETY: the caller's promise.
    let bytes = unsafe { slice.as_bytes() }
        .ok_or_else(|| Error::invalid_input(format!("the host passed {what} at a null pointer")))?;
    std::str::from_utf8(bytes)
        .map_err(|_| Error::invalid_input(format!("the host passed {what} that is not UTF-8")))
}

/// A key the host lends.
///
/// # Safety
///
/// `key` must be null or point to a valid `CachierKey` whose slices are valid for the call.
unsafe fn key(key: *const CachierKey) -> Result<Key> {
    if key.is_null() {
        return Err(Error::invalid_input("the host passed a null key"));
    }
    // SAFETY: the caller's promise.
    let key = unsafe { &*key };
    // SAFETY: as above.
    let (namespace, func) = unsafe {
        (
            text(key.namespace, "a namespace")?,
            text(key.func, "a function id")?,
        )
    };
    Ok(Key::new(
        Namespace::new(namespace)?,
        FuncId::new(func)?,
        ArgHash::from_bytes(key.hash),
    ))
}

fn duration(nanos: u64) -> Duration {
    Duration::from_nanos(nanos)
}

/// A future borrowed from a core, as `async_trait` methods return them.
type CoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The body of `get`, `get_value` and `wait`.
///
/// # Safety
///
/// As for every function of the table: a live handle, a valid key, writable out-parameters.
unsafe fn read(
    operation: &'static str,
    handle: Handle,
    c_key: *const CachierKey,
    entry: *mut CachierEntry,
    err: *mut CachierError,
    call: impl for<'a> FnOnce(&'a dyn Core, &'a Key) -> CoreFuture<'a, Option<Entry>>,
) -> i32 {
    guard(operation, err, || {
        // SAFETY: the caller's promise.
        let (this, key, entry) =
            unsafe { (exported(handle)?, key(c_key)?, out(entry, "the entry")?) };
        let found = block_on(call(this.core.as_ref(), &key))??;
        *entry = c_entry(found);
        Ok(STATUS_OK)
    })
}

/// The body of the calls that answer a number (`clear`, `clear_claims`, `delete_stale`,
/// `clear_namespace`).
///
/// # Safety
///
/// As for every function of the table.
unsafe fn count(
    operation: &'static str,
    handle: Handle,
    namespace: CachierSlice,
    func: Option<CachierSlice>,
    count: *mut u64,
    err: *mut CachierError,
    call: impl for<'a> FnOnce(&'a dyn Core, &'a Namespace, Option<&'a FuncId>) -> CoreFuture<'a, u64>,
) -> i32 {
    guard(operation, err, || {
        // SAFETY: the caller's promise.
        let (this, count) = unsafe { (exported(handle)?, out(count, "the count")?) };
        // SAFETY: as above.
        let namespace = Namespace::new(unsafe { text(namespace, "a namespace")? })?;
        let func = match func {
            // SAFETY: as above.
            Some(func) => Some(FuncId::new(unsafe { text(func, "a function id")? })?),
            None => None,
        };
        *count = block_on(call(this.core.as_ref(), &namespace, func.as_ref()))??;
        Ok(STATUS_OK)
    })
}

/// The function id of a per-function call, which always has one.
fn function(func: Option<&FuncId>) -> Result<&FuncId> {
    func.ok_or_else(|| Error::invalid_input("no function id"))
}

/// `open`, for [`export_core!`](crate::export_core!): runs `make` with the configuration text
/// on the plugin's runtime and hands the core to the host as a handle.
///
/// # Safety
///
/// `config` must be valid for the call; `handle` and `err` writable (the ABI's `open`).
#[doc(hidden)]
pub unsafe fn open<F, Fut, C>(
    config: CachierSlice,
    handle: *mut Handle,
    err: *mut CachierError,
    make: F,
) -> i32
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<C>>,
    C: Core,
{
    guard("open", err, || {
        // SAFETY: the caller's promise.
        let (config, handle) = unsafe {
            (
                text(config, "the configuration")?,
                out(handle, "the handle")?,
            )
        };
        let core = block_on(make(config.to_owned()))??;
        let exported = Box::new(Exported {
            core: Arc::new(core),
            blocking_streak: AtomicU32::new(0),
            skipped: AtomicU32::new(0),
        });
        *handle = Box::into_raw(exported).cast();
        Ok(STATUS_OK)
    })
}

unsafe extern "C" fn close(handle: Handle) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if handle.is_null() {
            return;
        }
        // SAFETY: the host closes each handle from `open` once, after its last call.
        let exported = unsafe { Box::from_raw(handle.cast::<Exported>()) };
        // The core may need the runtime to drop (connection tasks, timers).
        match runtime() {
            Ok(runtime) => {
                let _entered = runtime.enter();
                drop(exported);
            }
            Err(_) => drop(exported),
        }
    }));
}

unsafe extern "C" fn capabilities(
    handle: Handle,
    caps: *mut CachierCapabilities,
    err: *mut CachierError,
) -> i32 {
    guard("capabilities", err, || {
        // SAFETY: the ABI's promise for every call.
        let (this, caps) = unsafe { (exported(handle)?, out(caps, "the capabilities")?) };
        let c = this.core.capabilities();
        *caps = CachierCapabilities {
            cross_process: u8::from(c.cross_process),
            native_wakeup: u8::from(c.native_wakeup),
            persistent: u8::from(c.persistent),
            has_max_value_bytes: u8::from(c.max_value_bytes.is_some()),
            reserved: [0; 4],
            max_value_bytes: c.max_value_bytes.unwrap_or(0),
        };
        Ok(STATUS_OK)
    })
}

unsafe extern "C" fn get(
    handle: Handle,
    key: *const CachierKey,
    entry: *mut CachierEntry,
    err: *mut CachierError,
) -> i32 {
    // SAFETY: the ABI's promise for every call.
    unsafe { read("get", handle, key, entry, err, |core, key| core.get(key)) }
}

unsafe extern "C" fn get_value(
    handle: Handle,
    key: *const CachierKey,
    entry: *mut CachierEntry,
    err: *mut CachierError,
) -> i32 {
    // SAFETY: the ABI's promise for every call.
    unsafe {
        read("get_value", handle, key, entry, err, |core, key| {
            core.get_value(key)
        })
    }
}

/// Polls `get_value` once, on the calling thread, with a waker that does nothing: a store that
/// answers without waiting (a local file read, an in-memory map) answers here; one that would
/// wait is dropped (a read has no effects to undo) and the host calls `get_value` instead.
unsafe extern "C" fn try_get_value(
    handle: Handle,
    c_key: *const CachierKey,
    entry: *mut CachierEntry,
    err: *mut CachierError,
) -> i32 {
    guard("get_value", err, || {
        // SAFETY: the ABI's promise for every call.
        let (this, key, entry) =
            unsafe { (exported(handle)?, key(c_key)?, out(entry, "the entry")?) };
        if !this.should_try() {
            return Ok(STATUS_WOULD_BLOCK);
        }
        let _entered = runtime()?.enter();
        let mut read = this.core.get_value(&key);
        match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(found) => {
                this.tried(true);
                *entry = c_entry(found?);
                Ok(STATUS_OK)
            }
            Poll::Pending => {
                this.tried(false);
                Ok(STATUS_WOULD_BLOCK)
            }
        }
    })
}

unsafe extern "C" fn set(
    handle: Handle,
    c_key: *const CachierKey,
    value: CachierSlice,
    stored_at_ms: u64,
    err: *mut CachierError,
) -> i32 {
    guard("set", err, || {
        // SAFETY: the ABI's promise for every call.
        let (this, key, value) = unsafe {
            (
                exported(handle)?,
                key(c_key)?,
                value.as_bytes().ok_or_else(|| {
                    Error::invalid_input("the host passed a value at a null pointer")
                })?,
            )
        };
        let value = Bytes::copy_from_slice(value);
        block_on(this.core.set(&key, value, Timestamp(stored_at_ms)))??;
        Ok(STATUS_OK)
    })
}

unsafe extern "C" fn claim(
    handle: Handle,
    c_key: *const CachierKey,
    lease_ns: u64,
    claim: *mut CachierClaim,
    err: *mut CachierError,
) -> i32 {
    guard("claim", err, || {
        // SAFETY: the ABI's promise for every call.
        let (this, key, claim) =
            unsafe { (exported(handle)?, key(c_key)?, out(claim, "the claim")?) };
        *claim = match block_on(this.core.claim(&key, duration(lease_ns)))?? {
            Claim::Acquired(token) => CachierClaim {
                acquired: 1,
                token: c_buf(Bytes::from(token.as_str().to_owned())),
                ..CachierClaim::EMPTY
            },
            Claim::Held { until } => CachierClaim {
                held_until_ms: until.as_millis(),
                ..CachierClaim::EMPTY
            },
        };
        Ok(STATUS_OK)
    })
}

unsafe extern "C" fn renew(
    handle: Handle,
    c_key: *const CachierKey,
    token: CachierSlice,
    lease_ns: u64,
    renewed: *mut u8,
    err: *mut CachierError,
) -> i32 {
    guard("renew", err, || {
        // SAFETY: the ABI's promise for every call.
        let (this, key, token, renewed) = unsafe {
            (
                exported(handle)?,
                key(c_key)?,
                ClaimToken::from_string(text(token, "a claim token")?),
                out(renewed, "the answer")?,
            )
        };
        *renewed = u8::from(block_on(this.core.renew(
            &key,
            &token,
            duration(lease_ns),
        ))??);
        Ok(STATUS_OK)
    })
}

unsafe extern "C" fn release(
    handle: Handle,
    c_key: *const CachierKey,
    token: CachierSlice,
    err: *mut CachierError,
) -> i32 {
    guard("release", err, || {
        // SAFETY: the ABI's promise for every call.
        let (this, key, token) = unsafe {
            (
                exported(handle)?,
                key(c_key)?,
                ClaimToken::from_string(text(token, "a claim token")?),
            )
        };
        block_on(this.core.release(&key, &token))??;
        Ok(STATUS_OK)
    })
}

unsafe extern "C" fn wait(
    handle: Handle,
    key: *const CachierKey,
    timeout_ns: u64,
    entry: *mut CachierEntry,
    err: *mut CachierError,
) -> i32 {
    let timeout = duration(timeout_ns);
    // SAFETY: the ABI's promise for every call.
    unsafe {
        read("wait", handle, key, entry, err, |core, key| {
            core.wait(key, timeout)
        })
    }
}

unsafe extern "C" fn remove(
    handle: Handle,
    c_key: *const CachierKey,
    removed: *mut u8,
    err: *mut CachierError,
) -> i32 {
    guard("remove", err, || {
        // SAFETY: the ABI's promise for every call.
        let (this, key, removed) =
            unsafe { (exported(handle)?, key(c_key)?, out(removed, "the answer")?) };
        *removed = u8::from(block_on(this.core.remove(&key))??);
        Ok(STATUS_OK)
    })
}

unsafe extern "C" fn clear(
    handle: Handle,
    namespace: CachierSlice,
    func: CachierSlice,
    n: *mut u64,
    err: *mut CachierError,
) -> i32 {
    // SAFETY: the ABI's promise for every call.
    unsafe {
        count(
            "clear",
            handle,
            namespace,
            Some(func),
            n,
            err,
            |core, ns, func| Box::pin(async move { core.clear(ns, function(func)?).await }),
        )
    }
}

unsafe extern "C" fn clear_claims(
    handle: Handle,
    namespace: CachierSlice,
    func: CachierSlice,
    n: *mut u64,
    err: *mut CachierError,
) -> i32 {
    // SAFETY: the ABI's promise for every call.
    unsafe {
        count(
            "clear_claims",
            handle,
            namespace,
            Some(func),
            n,
            err,
            |core, ns, func| Box::pin(async move { core.clear_claims(ns, function(func)?).await }),
        )
    }
}

unsafe extern "C" fn delete_stale(
    handle: Handle,
    namespace: CachierSlice,
    func: CachierSlice,
    stored_before_ms: u64,
    n: *mut u64,
    err: *mut CachierError,
) -> i32 {
    let before = Timestamp(stored_before_ms);
    // SAFETY: the ABI's promise for every call.
    unsafe {
        count(
            "delete_stale",
            handle,
            namespace,
            Some(func),
            n,
            err,
            |core, ns, func| {
                Box::pin(async move { core.delete_stale(ns, function(func)?, before).await })
            },
        )
    }
}

unsafe extern "C" fn clear_namespace(
    handle: Handle,
    namespace: CachierSlice,
    n: *mut u64,
    err: *mut CachierError,
) -> i32 {
    // SAFETY: the ABI's promise for every call.
    unsafe {
        count(
            "clear_namespace",
            handle,
            namespace,
            None,
            n,
            err,
            |core, ns, _| core.clear_namespace(ns),
        )
    }
}

unsafe extern "C" fn free_buf(buf: CachierBuf) {
    if buf.owner.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: every buffer with an owner came from `c_buf`, and the host gives each back
        // once.
        drop(unsafe { Box::from_raw(buf.owner.cast::<Bytes>()) });
    });
}

/// The function table of a plugin whose `open` is `open` and whose every other function is
/// this module's: what [`export_core!`](crate::export_core!) puts in the declaration.
pub const fn table(open: abi::OpenFn) -> PluginTable {
    PluginTable {
        open: Some(open),
        close: Some(close as abi::CloseFn),
        capabilities: Some(capabilities as abi::CapabilitiesFn),
        get: Some(get as abi::ReadFn),
        get_value: Some(get_value as abi::ReadFn),
        set: Some(set as abi::SetFn),
        claim: Some(claim as abi::ClaimFn),
        renew: Some(renew as abi::RenewFn),
        release: Some(release as abi::ReleaseFn),
        wait: Some(wait as abi::WaitFn),
        remove: Some(remove as abi::RemoveFn),
        clear: Some(clear as abi::ClearFn),
        clear_claims: Some(clear_claims as abi::ClearFn),
        delete_stale: Some(delete_stale as abi::DeleteStaleFn),
        clear_namespace: Some(clear_namespace as abi::ClearNamespaceFn),
        free_buf: Some(free_buf as abi::FreeBufFn),
        try_get_value: Some(try_get_value as abi::ReadFn),
    }
}

/// The declaration of a plugin named `name` at `version` with `table`, for this crate's ABI
/// version.
pub const fn declaration(
    name: &'static str,
    version: &'static str,
    table: &'static PluginTable,
) -> PluginDeclaration {
    PluginDeclaration {
        magic: abi::MAGIC,
        abi_major: abi::ABI_MAJOR,
        abi_minor: abi::ABI_MINOR,
        declaration_size: abi::DECLARATION_SIZE,
        table_size: abi::TABLE_SIZE,
        name: CachierSlice::from_str(name),
        version: CachierSlice::from_str(version),
        table,
    }
}

/// Exports a [`Core`] as a cachier plugin: the symbol, the declaration and the function table.
///
/// Give it the constructor: a function from the configuration text the host passes to
/// [`PluginCore::load`](crate::PluginCore::load) to `cachier_core::Result<C>` for any `C:
/// Core`. Write `async` before it for an `async fn`. By default the declaration is exported
/// under [`abi::SYMBOL`]; `symbol = name` exports it under another name (one library may
/// export several plugins).
///
/// ```ignore
/// // src/lib.rs of a crate with `crate-type = ["cdylib"]`
/// fn open(config: &str) -> cachier_core::Result<my_backend::MyCore> {
///     my_backend::MyCore::open(config)
/// }
/// cachier_plugin::export_core!(open);
///
/// async fn connect(url: &str) -> cachier_core::Result<my_backend::RemoteCore> {
///     my_backend::RemoteCore::connect(url).await
/// }
/// cachier_plugin::export_core!(async connect, symbol = cachier_plugin_remote);
/// ```
///
/// The constructor runs inside the plugin's own tokio runtime, so it may spawn tasks. The
/// declaration names the plugin after its package (`CARGO_PKG_NAME`, `CARGO_PKG_VERSION`).
#[macro_export]
macro_rules! export_core {
    (async $constructor:path $(, symbol = $symbol:ident)? $(,)?) => {
        $crate::__export_core!(@symbol [$($symbol)?] $constructor, .await);
    };
    ($constructor:path $(, symbol = $symbol:ident)? $(,)?) => {
        $crate::__export_core!(@symbol [$($symbol)?] $constructor,);
    };
}

/// The expansion of [`export_core!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __export_core {
    (@symbol [] $constructor:path, $($await:tt)*) => {
        $crate::__export_core!(@emit cachier_plugin_v1, $constructor, $($await)*);
    };
    (@symbol [$symbol:ident] $constructor:path, $($await:tt)*) => {
        $crate::__export_core!(@emit $symbol, $constructor, $($await)*);
    };
    (@emit $symbol:ident, $constructor:path, $($await:tt)*) => {
        /// The cachier plugin declaration (the plugin ABI's entry point), generated by
        /// `cachier_plugin::export_core!`.
        #[unsafe(no_mangle)]
        pub extern "C" fn $symbol() -> *const $crate::abi::PluginDeclaration {
            unsafe extern "C" fn __cachier_plugin_open(
                config: $crate::abi::CachierSlice,
                handle: *mut $crate::abi::Handle,
                err: *mut $crate::abi::CachierError,
            ) -> i32 {
                // SAFETY: the host calls `open` as the ABI says: valid configuration text,
                // writable out-parameters.
                unsafe {
                    $crate::export::open(
                        config,
                        handle,
                        err,
                        |config: ::std::string::String| async move {
                            $constructor(&config) $($await)*
                        },
                    )
                }
            }
            static __CACHIER_PLUGIN_TABLE: $crate::abi::PluginTable =
                $crate::export::table(__cachier_plugin_open);
            static __CACHIER_PLUGIN_DECLARATION: $crate::abi::PluginDeclaration =
                $crate::export::declaration(
                    ::std::env!("CARGO_PKG_NAME"),
                    ::std::env!("CARGO_PKG_VERSION"),
                    &__CACHIER_PLUGIN_TABLE,
                );
            &__CACHIER_PLUGIN_DECLARATION
        }
    };
}
