//! [`PluginCore`]: the [`Core`] implementation over a plugin library.
//!
//! Each `Core` method borrows its arguments to one C call, copies whatever the plugin returned
//! into Rust values, and gives the plugin's buffers back through its `free_buf` before
//! returning. The calls block, so they run on tokio's blocking pool; only the hit path's
//! `try_get_value`, which must never block, is called on the async worker itself.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cachier_core::{
    Capabilities, Claim, ClaimToken, Core, Entry, Error, ErrorKind, FuncId, Key, Namespace, Result,
    Timestamp,
};

use crate::abi::{
    self, CachierBuf, CachierCapabilities, CachierClaim, CachierEntry, CachierError, CachierKey,
    CachierSlice, STATUS_ERROR, STATUS_OK, STATUS_WOULD_BLOCK,
};
use crate::config::{Config, MAX_TEXT_BYTES};
use crate::library::{self, Table};

/// A cache store provided by a plugin library, used like any other backend.
///
/// Loading checks the library before anything in it runs (see the crate docs), then opens one
/// store with the plugin's `open`. Clones share the store; it is closed when the last clone
/// (and the last call still running) is gone. The library itself stays loaded.
///
/// ```no_run
/// use std::sync::Arc;
/// use cachier_core::{Cachier, Core};
/// use cachier_plugin::PluginCore;
///
/// # fn main() -> cachier_core::Result<()> {
/// let core: Arc<dyn Core> = Arc::new(PluginCore::load(
///     "target/debug/libcachier_plugin_file.so",
///     "/var/cache/my-app",
/// )?);
/// let cache = Cachier::builder(core).namespace("my-app")?.build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PluginCore {
    shared: Arc<Shared>,
}

/// One open store: the plugin's handle and what the host knows about it.
struct Shared {
    library: PathBuf,
    name: &'static str,
    version: String,
    abi_minor: u32,
    table: Table,
    handle: abi::Handle,
    capabilities: Capabilities,
    /// The longest value copied out of the plugin.
    max_value_bytes: u64,
}

// SAFETY: the ABI requires every function of a plugin to be callable from any thread at once
// with the same handle; the host keeps no other state behind the pointer.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the handle came from this table's `open` and is closed exactly once, after
        // every call that used it has returned (each call holds an `Arc<Shared>`).
        unsafe { (self.table.close)(self.handle) };
    }
}

impl PluginCore {
    /// Loads the plugin exported under [`abi::SYMBOL`] by the library at `library` and opens a
    /// store with `config` (the plugin's own configuration text).
    ///
    /// Blocks while the plugin opens its store; from async code, call it on the blocking pool
    /// if the plugin connects to a server.
    pub fn load(library: impl AsRef<Path>, config: &str) -> Result<Self> {
        PluginCore::open(Config::new(library.as_ref(), config))
    }

    /// Like [`PluginCore::load`], with the declaration looked up under `symbol`: for a library
    /// that exports several plugins.
    pub fn load_symbol(library: impl AsRef<Path>, symbol: &str, config: &str) -> Result<Self> {
        PluginCore::open(Config::new(library.as_ref(), config).with_symbol(symbol))
    }

    /// Loads and opens the plugin `config` describes.
    ///
    /// Before calling anything in the library it checks that the file exists and is a library,
    /// that the symbol exists, that the declaration's magic matches, that its major ABI version
    /// is this crate's and that its function table is large enough. Each failure is an
    /// [`ErrorKind::Config`] error naming the library and the reason. An error of the plugin's
    /// `open` is returned with the kind the plugin gave it.
    pub fn open(config: Config) -> Result<Self> {
        let path = config.library();
        let checked = library::load(path, config.symbol())?;
        let name = intern(&checked.name);
        let table = checked.table;
        let mut handle: abi::Handle = std::ptr::null_mut();
        let mut err = CachierError::EMPTY;
        // SAFETY: the table passed the declaration checks; the configuration text is borrowed
        // for the call only.
        let status = unsafe {
            (table.open)(
                CachierSlice::from_str(config.open_text()),
                &mut handle,
                &mut err,
            )
        };
        let calls = Calls { table, name };
        let message = calls.returned(err.message);
        calls.status("open", &path.display(), status, &err, &message)?;
        let mut shared = Shared {
            library: path.to_path_buf(),
            name,
            version: checked.version,
            abi_minor: checked.abi_minor,
            table,
            handle,
            capabilities: Capabilities::default(),
            max_value_bytes: config.max_value_bytes(),
        };
        // From here on, dropping `shared` closes the store.
        shared.capabilities = shared.read_capabilities()?;
        if let Some(limit) = shared.capabilities.max_value_bytes {
            shared.max_value_bytes = shared.max_value_bytes.min(limit);
        }
        tracing::debug!(
            library = %path.display(),
            plugin = name,
            version = %shared.version,
            abi_minor = shared.abi_minor,
            "opened a plugin store"
        );
        Ok(PluginCore {
            shared: Arc::new(shared),
        })
    }

    /// The plugin's name, from its declaration (also [`Core::name`]).
    pub fn plugin_name(&self) -> &'static str {
        self.shared.name
    }

    /// The plugin's own version, from its declaration.
    pub fn plugin_version(&self) -> &str {
        &self.shared.version
    }

    /// The ABI minor version the plugin was built with (its major is always
    /// [`abi::ABI_MAJOR`]).
    pub fn abi_minor(&self) -> u32 {
        self.shared.abi_minor
    }

    /// The library the plugin was loaded from, as given.
    pub fn library(&self) -> &Path {
        &self.shared.library
    }

    /// Runs `call` on tokio's blocking pool (or right here, outside any runtime).
    async fn blocking<T, F>(&self, operation: &'static str, call: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return call(&shared);
        };
        match runtime.spawn_blocking(move || call(&shared)).await {
            Ok(result) => result,
            Err(join) => Err(Error::new(
                ErrorKind::Backend,
                format!("the call to the plugin did not finish: {join}"),
            )
            .with_operation(operation)
            .with_backend(self.shared.name)),
        }
    }
}

impl fmt::Debug for PluginCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginCore")
            .field("library", &self.shared.library)
            .field("plugin", &self.shared.name)
            .field("version", &self.shared.version)
            .field("abi", &(abi::ABI_MAJOR, self.shared.abi_minor))
            .finish()
    }
}

/// A `'static` copy of a plugin name (the names of `Core` and `Error` are `&'static str`);
/// each distinct name is kept once.
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// A key lent to the plugin for one call.
fn c_key(key: &Key) -> CachierKey {
    CachierKey {
        namespace: CachierSlice::from_str(key.namespace.as_str()),
        func: CachierSlice::from_str(key.func.as_str()),
        hash: *key.hash.as_bytes(),
    }
}

/// A duration in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What interpreting a call's answer needs: the table (for `free_buf`) and the name for errors.
#[derive(Clone, Copy)]
struct Calls {
    table: Table,
    name: &'static str,
}

/// A buffer the plugin returned, given back to it (once) when dropped.
struct Returned {
    buf: CachierBuf,
    free: abi::FreeBufFn,
}

impl Drop for Returned {
    fn drop(&mut self) {
        if self.buf.needs_free() {
            // SAFETY: the plugin returned this buffer in the call that just ended; it is given
            // back exactly once and not read afterwards.
            unsafe { (self.free)(self.buf) };
        }
    }
}

impl Returned {
    /// The buffer's bytes, if its length is within `limit` and its pointer is usable.
    fn bytes(&self, limit: u64, what: &str) -> std::result::Result<&[u8], String> {
        let len = self.buf.len;
        if len as u64 > limit {
            return Err(format!(
                "the plugin returned {what} of {len} bytes, more than the limit of {limit} bytes"
            ));
        }
        if len == 0 {
            return Ok(&[]);
        }
        if self.buf.ptr.is_null() {
            return Err(format!(
                "the plugin returned {what} of {len} bytes at a null pointer"
            ));
        }
        // SAFETY: the plugin owns `len` readable bytes at `ptr` until the buffer is given back,
        // which happens only when `self` is dropped; the length is bounded above.
        Ok(unsafe { std::slice::from_raw_parts(self.buf.ptr, len) })
    }
}

impl Calls {
    fn returned(&self, buf: CachierBuf) -> Returned {
        Returned {
            buf,
            free: self.table.free_buf,
        }
    }

    /// Turns a call's status (and error) into `Ok(())` or the error it reports.
    fn status(
        &self,
        operation: &'static str,
        target: &dyn fmt::Display,
        status: i32,
        err: &CachierError,
        message: &Returned,
    ) -> Result<()> {
        match status {
            STATUS_OK => Ok(()),
            STATUS_ERROR => {
                let mut text = match message.bytes(MAX_TEXT_BYTES as u64, "an error message") {
                    Ok([]) => "the plugin reported an error without a message".to_owned(),
                    Ok(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                    Err(why) => format!("the plugin reported an error ({why})"),
                };
                let kind = abi::kind_from_code(err.kind).unwrap_or_else(|| {
                    text.push_str(&format!(" (unknown error kind code {})", err.kind));
                    ErrorKind::Backend
                });
                Err(Error::new(kind, text)
                    .set_retryable(err.retryable != 0)
                    .with_operation(operation)
                    .with_backend(self.name)
                    .with_key(target))
            }
            other => Err(self.broken(
                operation,
                target,
                format!("the plugin returned the unknown status {other}"),
            )),
        }
    }

    /// A `Corrupt` error: the plugin broke the ABI in its answer.
    fn broken(&self, operation: &'static str, target: &dyn fmt::Display, why: String) -> Error {
        Error::corrupt(why)
            .with_operation(operation)
            .with_backend(self.name)
            .with_key(target)
    }
}

impl Shared {
    fn calls(&self) -> Calls {
        Calls {
            table: self.table,
            name: self.name,
        }
    }

    fn read_capabilities(&self) -> Result<Capabilities> {
        let calls = self.calls();
        let mut out = CachierCapabilities::EMPTY;
        let mut err = CachierError::EMPTY;
        // SAFETY: a handle from `open`; out-parameters live for the call.
        let status = unsafe { (self.table.capabilities)(self.handle, &mut out, &mut err) };
        let message = calls.returned(err.message);
        calls.status(
            "capabilities",
            &self.library.display(),
            status,
            &err,
            &message,
        )?;
        Ok(Capabilities {
            cross_process: out.cross_process != 0,
            native_wakeup: out.native_wakeup != 0,
            persistent: out.persistent != 0,
            max_value_bytes: (out.has_max_value_bytes != 0).then_some(out.max_value_bytes),
        })
    }

    /// One read (`get`, `get_value`, `try_get_value`, `wait` through `call`). `None` when the
    /// plugin said it would block (allowed only when `may_block_status`).
    fn read(
        &self,
        operation: &'static str,
        key: &Key,
        may_block_status: bool,
        call: impl FnOnce(abi::Handle, *const CachierKey, *mut CachierEntry, *mut CachierError) -> i32,
    ) -> Option<Result<Option<Entry>>> {
        let calls = self.calls();
        let c_key = c_key(key);
        let mut out = CachierEntry::EMPTY;
        let mut err = CachierError::EMPTY;
        let status = call(self.handle, &c_key, &mut out, &mut err);
        let value = calls.returned(out.value);
        let message = calls.returned(err.message);
        if may_block_status && status == STATUS_WOULD_BLOCK {
            return None;
        }
        Some(
            calls
                .status(operation, key, status, &err, &message)
                .and_then(|()| self.entry(operation, key, &out, &value)),
        )
    }

    fn entry(
        &self,
        operation: &'static str,
        key: &Key,
        out: &CachierEntry,
        value: &Returned,
    ) -> Result<Option<Entry>> {
        if out.found == 0 {
            return Ok(None);
        }
        let value = if out.has_value != 0 {
            let bytes = value
                .bytes(self.max_value_bytes, "a value")
                .map_err(|why| self.calls().broken(operation, key, why))?;
            Some(Bytes::copy_from_slice(bytes))
        } else {
            None
        };
        Ok(Some(Entry {
            value,
            stored_at: Timestamp(out.stored_at_ms),
            claim_until: (out.has_claim != 0).then_some(Timestamp(out.claim_until_ms)),
        }))
    }

    fn get(&self, operation: &'static str, f: abi::ReadFn, key: &Key) -> Result<Option<Entry>> {
        self.read(operation, key, false, |handle, key, out, err| {
            // SAFETY: a handle from `open`; the key and out-parameters live for the call.
            unsafe { f(handle, key, out, err) }
        })
        .unwrap_or_else(|| unreachable!("a blocking read never answers WOULD_BLOCK"))
    }

    fn set(&self, key: &Key, value: &[u8], stored_at: Timestamp) -> Result<()> {
        let calls = self.calls();
        let c_key = c_key(key);
        let mut err = CachierError::EMPTY;
        // SAFETY: a handle from `open`; the key and the value are borrowed for the call.
        let status = unsafe {
            (self.table.set)(
                self.handle,
                &c_key,
                CachierSlice::new(value),
                stored_at.as_millis(),
                &mut err,
            )
        };
        let message = calls.returned(err.message);
        calls.status("set", key, status, &err, &message)
    }

    fn claim(&self, key: &Key, lease: Duration) -> Result<Claim> {
        let calls = self.calls();
        let c_key = c_key(key);
        let mut out = CachierClaim::EMPTY;
        let mut err = CachierError::EMPTY;
        // SAFETY: a handle from `open`; the key and out-parameters live for the call.
        let status =
            unsafe { (self.table.claim)(self.handle, &c_key, nanos(lease), &mut out, &mut err) };
        let token = calls.returned(out.token);
        let message = calls.returned(err.message);
        calls.status("claim", key, status, &err, &message)?;
        if out.acquired == 0 {
            return Ok(Claim::Held {
                until: Timestamp(out.held_until_ms),
            });
        }
        let text = token
            .bytes(MAX_TEXT_BYTES as u64, "a claim token")
            .and_then(|bytes| match std::str::from_utf8(bytes) {
                Ok("") => Err("the plugin returned an empty claim token".to_owned()),
                Ok(text) => Ok(text.to_owned()),
                Err(_) => Err("the plugin returned a claim token that is not UTF-8".to_owned()),
            })
            .map_err(|why| calls.broken("claim", key, why))?;
        Ok(Claim::Acquired(ClaimToken::from_string(text)))
    }

    fn renew(&self, key: &Key, token: &ClaimToken, lease: Duration) -> Result<bool> {
        let calls = self.calls();
        let c_key = c_key(key);
        let mut renewed = 0u8;
        let mut err = CachierError::EMPTY;
        // SAFETY: a handle from `open`; the key, the token and out-parameters live for the call.
        let status = unsafe {
            (self.table.renew)(
                self.handle,
                &c_key,
                CachierSlice::from_str(token.as_str()),
                nanos(lease),
                &mut renewed,
                &mut err,
            )
        };
        let message = calls.returned(err.message);
        calls.status("renew", key, status, &err, &message)?;
        Ok(renewed != 0)
    }

    fn release(&self, key: &Key, token: &ClaimToken) -> Result<()> {
        let calls = self.calls();
        let c_key = c_key(key);
        let mut err = CachierError::EMPTY;
        // SAFETY: a handle from `open`; the key and the token are borrowed for the call.
        let status = unsafe {
            (self.table.release)(
                self.handle,
                &c_key,
                CachierSlice::from_str(token.as_str()),
                &mut err,
            )
        };
        let message = calls.returned(err.message);
        calls.status("release", key, status, &err, &message)
    }

    fn remove(&self, key: &Key) -> Result<bool> {
        let calls = self.calls();
        let c_key = c_key(key);
        let mut removed = 0u8;
        let mut err = CachierError::EMPTY;
        // SAFETY: a handle from `open`; the key and out-parameters live for the call.
        let status = unsafe { (self.table.remove)(self.handle, &c_key, &mut removed, &mut err) };
        let message = calls.returned(err.message);
        calls.status("remove", key, status, &err, &message)?;
        Ok(removed != 0)
    }

    /// One of the counting calls (`clear`, `clear_claims`, `delete_stale`, `clear_namespace`).
    fn count(
        &self,
        operation: &'static str,
        target: &dyn fmt::Display,
        call: impl FnOnce(abi::Handle, *mut u64, *mut CachierError) -> i32,
    ) -> Result<u64> {
        let calls = self.calls();
        let mut count = 0u64;
        let mut err = CachierError::EMPTY;
        let status = call(self.handle, &mut count, &mut err);
        let message = calls.returned(err.message);
        calls.status(operation, target, status, &err, &message)?;
        Ok(count)
    }
}

/// The target of a per-function call in errors: `namespace/function`.
fn func_target(namespace: &Namespace, func: &FuncId) -> String {
    format!("{namespace}/{func}")
}

#[async_trait]
impl Core for PluginCore {
    /// The plugin's declared name.
    fn name(&self) -> &'static str {
        self.shared.name
    }

    /// The plugin's capabilities, read once when the store was opened.
    fn capabilities(&self) -> Capabilities {
        self.shared.capabilities
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        let key = key.clone();
        self.blocking("get", move |s| s.get("get", s.table.get, &key))
            .await
    }

    /// The hit path: the plugin's non-blocking `try_get_value` on the calling task when it
    /// has one and it can answer at once, else `get_value` on the blocking pool.
    async fn get_value(&self, key: &Key) -> Result<Option<Entry>> {
        if let Some(try_get_value) = self.shared.table.try_get_value {
            let answer = self
                .shared
                .read("get_value", key, true, |handle, key, out, err| {
                    // SAFETY: a handle from `open`; the key and out-parameters live for the call.
                    unsafe { try_get_value(handle, key, out, err) }
                });
            if let Some(result) = answer {
                return result;
            }
        }
        let key = key.clone();
        self.blocking("get_value", move |s| {
            s.get("get_value", s.table.get_value, &key)
        })
        .await
    }

    async fn set(&self, key: &Key, value: Bytes, stored_at: Timestamp) -> Result<()> {
        let key = key.clone();
        self.blocking("set", move |s| s.set(&key, &value, stored_at))
            .await
    }

    async fn claim(&self, key: &Key, lease: Duration) -> Result<Claim> {
        let key = key.clone();
        self.blocking("claim", move |s| s.claim(&key, lease)).await
    }

    async fn renew(&self, key: &Key, token: &ClaimToken, lease: Duration) -> Result<bool> {
        let (key, token) = (key.clone(), token.clone());
        self.blocking("renew", move |s| s.renew(&key, &token, lease))
            .await
    }

    async fn release(&self, key: &Key, token: &ClaimToken) -> Result<()> {
        let (key, token) = (key.clone(), token.clone());
        self.blocking("release", move |s| s.release(&key, &token))
            .await
    }

    async fn wait(&self, key: &Key, timeout: Duration) -> Result<Option<Entry>> {
        let key = key.clone();
        self.blocking("wait", move |s| {
            let wait = s.table.wait;
            s.read("wait", &key, false, |handle, key, out, err| {
                // SAFETY: a handle from `open`; the key and out-parameters live for the call.
                unsafe { wait(handle, key, nanos(timeout), out, err) }
            })
            .unwrap_or_else(|| unreachable!("a blocking read never answers WOULD_BLOCK"))
        })
        .await
    }

    async fn remove(&self, key: &Key) -> Result<bool> {
        let key = key.clone();
        self.blocking("remove", move |s| s.remove(&key)).await
    }

    async fn clear(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let (namespace, func) = (namespace.clone(), func.clone());
        self.blocking("clear", move |s| {
            let clear = s.table.clear;
            s.count(
                "clear",
                &func_target(&namespace, &func),
                |handle, count, err| {
                    // SAFETY: a handle from `open`; the names and out-parameters live for the
                    // call.
                    unsafe {
                        clear(
                            handle,
                            CachierSlice::from_str(namespace.as_str()),
                            CachierSlice::from_str(func.as_str()),
                            count,
                            err,
                        )
                    }
                },
            )
        })
        .await
    }

    async fn clear_claims(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let (namespace, func) = (namespace.clone(), func.clone());
        self.blocking("clear_claims", move |s| {
            let clear_claims = s.table.clear_claims;
            s.count(
                "clear_claims",
                &func_target(&namespace, &func),
                |handle, count, err| {
                    // SAFETY: as in `clear`.
                    unsafe {
                        clear_claims(
                            handle,
                            CachierSlice::from_str(namespace.as_str()),
                            CachierSlice::from_str(func.as_str()),
                            count,
                            err,
                        )
                    }
                },
            )
        })
        .await
    }

    async fn delete_stale(
        &self,
        namespace: &Namespace,
        func: &FuncId,
        stored_before: Timestamp,
    ) -> Result<u64> {
        let (namespace, func) = (namespace.clone(), func.clone());
        self.blocking("delete_stale", move |s| {
            let delete_stale = s.table.delete_stale;
            s.count(
                "delete_stale",
                &func_target(&namespace, &func),
                |handle, count, err| {
                    // SAFETY: as in `clear`.
                    unsafe {
                        delete_stale(
                            handle,
                            CachierSlice::from_str(namespace.as_str()),
                            CachierSlice::from_str(func.as_str()),
                            stored_before.as_millis(),
                            count,
                            err,
                        )
                    }
                },
            )
        })
        .await
    }

    async fn clear_namespace(&self, namespace: &Namespace) -> Result<u64> {
        let namespace = namespace.clone();
        self.blocking("clear_namespace", move |s| {
            let clear_namespace = s.table.clear_namespace;
            s.count("clear_namespace", &namespace, |handle, count, err| {
                // SAFETY: a handle from `open`; the name and out-parameters live for the call.
                unsafe {
                    clear_namespace(
                        handle,
                        CachierSlice::from_str(namespace.as_str()),
                        count,
                        err,
                    )
                }
            })
        })
        .await
    }
}
