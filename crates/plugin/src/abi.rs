//! The C ABI, version 1.0: every type and constant a plugin library and its host exchange.
//!
//! The rules (who owns what, which thread calls what, how versions evolve) are in the
//! [crate docs](crate); this module is the exact layout. Every struct is `#[repr(C)]`, so a
//! plugin written in C declares the same structs field by field (the crate docs give a header).
//! Flags are `u8` (0 is false, anything else true) rather than `bool`, so that a stray byte from
//! a plugin is never undefined behaviour in the host.

use std::ffi::c_void;

use cachier_core::ErrorKind;

/// The name of the symbol a plugin library exports: a function returning its
/// [`PluginDeclaration`].
pub const SYMBOL: &str = "cachier_plugin_v1";

/// The first eight bytes of every [`PluginDeclaration`].
pub const MAGIC: [u8; 8] = *b"CCHRPLUG";

/// The ABI major version this crate speaks. A host loads only plugins of the same major.
pub const ABI_MAJOR: u32 = 1;

/// The ABI minor version this crate speaks. Minor versions only append: fields at the end of
/// the declaration, functions at the end of the table.
pub const ABI_MINOR: u32 = 0;

/// A call succeeded; its out-parameters are filled in.
pub const STATUS_OK: i32 = 0;
/// A call failed; its [`CachierError`] is filled in.
pub const STATUS_ERROR: i32 = 1;
/// Only from [`PluginTable::try_get_value`]: the answer is not available without blocking; the
/// host calls [`PluginTable::get_value`] on a thread that may block instead. Nothing is filled
/// in.
pub const STATUS_WOULD_BLOCK: i32 = 2;

/// Bytes (or UTF-8 text) the caller lends for the duration of one call.
///
/// `ptr` may be null only when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CachierSlice {
    /// The first byte.
    pub ptr: *const u8,
    /// The number of bytes.
    pub len: usize,
}

impl CachierSlice {
    /// Nothing: a null pointer and no bytes.
    pub const EMPTY: CachierSlice = CachierSlice {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Lends `bytes`.
    pub const fn new(bytes: &[u8]) -> Self {
        CachierSlice {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// Lends the UTF-8 bytes of `text`.
    pub const fn from_str(text: &str) -> Self {
        CachierSlice::new(text.as_bytes())
    }

    /// The bytes, or `None` when `ptr` is null although `len` is not 0.
    ///
    /// # Safety
    ///
    /// `ptr` must point to `len` readable bytes that stay valid and unchanged for `'a`.
    pub unsafe fn as_bytes<'a>(self) -> Option<&'a [u8]> {
        if self.len == 0 {
            Some(&[])
        } else if self.ptr.is_null() {
            None
        } else {
            // SAFETY: the caller promises `len` readable bytes at a non-null `ptr`.
            Some(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
        }
    }
}

/// Bytes the plugin returns: owned by the plugin until the host gives them back through
/// [`PluginTable::free_buf`].
///
/// `owner` is the plugin's own bookkeeping (the allocation to free); the host never looks at
/// it. A buffer whose `ptr` and `owner` are both null is empty and is not given back.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CachierBuf {
    /// The first byte; null only when `len` is 0.
    pub ptr: *const u8,
    /// The number of bytes.
    pub len: usize,
    /// What the plugin needs to free the buffer (for example the allocation itself).
    pub owner: *mut c_void,
}

impl CachierBuf {
    /// No buffer: nothing to read, nothing to free.
    pub const EMPTY: CachierBuf = CachierBuf {
        ptr: std::ptr::null(),
        len: 0,
        owner: std::ptr::null_mut(),
    };

    /// Whether the plugin filled this buffer in, so that the host must give it back.
    pub fn needs_free(&self) -> bool {
        !self.ptr.is_null() || !self.owner.is_null()
    }
}

/// A [`Key`](cachier_core::Key) as its three parts, lent for one call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CachierKey {
    /// The namespace, UTF-8 (see the key format in `cachier_core::Key`).
    pub namespace: CachierSlice,
    /// The function id, UTF-8.
    pub func: CachierSlice,
    /// The BLAKE3 hash of the arguments, raw (its lowercase hex is the usual text form).
    pub hash: [u8; 32],
}

/// What `get`, `get_value`, `try_get_value` and `wait` fill in: an
/// [`Entry`](cachier_core::Entry), or nothing.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CachierEntry {
    /// Non-zero when there is an entry (a value, a live claim, or both); when 0 the rest is
    /// ignored.
    pub found: u8,
    /// Non-zero when `value` holds the stored value (which may be empty).
    pub has_value: u8,
    /// Non-zero when a live claim exists and `claim_until_ms` is its expiry.
    pub has_claim: u8,
    /// Zero.
    pub reserved: [u8; 5],
    /// When the value was stored: UTC milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
    /// When the live claim expires: UTC milliseconds since the Unix epoch.
    pub claim_until_ms: u64,
    /// The stored value (owned by the plugin).
    pub value: CachierBuf,
}

impl CachierEntry {
    /// No entry.
    pub const EMPTY: CachierEntry = CachierEntry {
        found: 0,
        has_value: 0,
        has_claim: 0,
        reserved: [0; 5],
        stored_at_ms: 0,
        claim_until_ms: 0,
        value: CachierBuf::EMPTY,
    };
}

/// What `claim` fills in: a [`Claim`](cachier_core::Claim).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CachierClaim {
    /// Non-zero when the caller now holds the claim and `token` is its token.
    pub acquired: u8,
    /// Zero.
    pub reserved: [u8; 7],
    /// When not acquired: when the other holder's lease runs out (UTC milliseconds).
    pub held_until_ms: u64,
    /// When acquired: the claim token, UTF-8 (owned by the plugin).
    pub token: CachierBuf,
}

impl CachierClaim {
    /// Nothing filled in.
    pub const EMPTY: CachierClaim = CachierClaim {
        acquired: 0,
        reserved: [0; 7],
        held_until_ms: 0,
        token: CachierBuf::EMPTY,
    };
}

/// What `capabilities` fills in: the backend's [`Capabilities`](cachier_core::Capabilities).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CachierCapabilities {
    /// Entries and claims are shared by every process that opens the same store.
    pub cross_process: u8,
    /// `wait` is woken by the store instead of polling.
    pub native_wakeup: u8,
    /// Entries survive a restart.
    pub persistent: u8,
    /// Non-zero when `max_value_bytes` is a limit.
    pub has_max_value_bytes: u8,
    /// Zero.
    pub reserved: [u8; 4],
    /// The largest value the store takes, in bytes.
    pub max_value_bytes: u64,
}

impl CachierCapabilities {
    /// Nothing filled in.
    pub const EMPTY: CachierCapabilities = CachierCapabilities {
        cross_process: 0,
        native_wakeup: 0,
        persistent: 0,
        has_max_value_bytes: 0,
        reserved: [0; 4],
        max_value_bytes: 0,
    };
}

/// What a failed call fills in: an [`Error`](cachier_core::Error) as kind, retryability and
/// message.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CachierError {
    /// The [`ErrorKind`], as one of the `KIND_*` codes.
    pub kind: u32,
    /// Non-zero when trying again may succeed.
    pub retryable: u8,
    /// Zero.
    pub reserved: [u8; 3],
    /// A human-readable message, UTF-8 (owned by the plugin; may be empty).
    pub message: CachierBuf,
}

impl CachierError {
    /// Nothing filled in.
    pub const EMPTY: CachierError = CachierError {
        kind: 0,
        retryable: 0,
        reserved: [0; 3],
        message: CachierBuf::EMPTY,
    };
}

/// [`ErrorKind::Unavailable`].
pub const KIND_UNAVAILABLE: u32 = 1;
/// [`ErrorKind::Corrupt`].
pub const KIND_CORRUPT: u32 = 2;
/// [`ErrorKind::TooLarge`].
pub const KIND_TOO_LARGE: u32 = 3;
/// [`ErrorKind::Config`].
pub const KIND_CONFIG: u32 = 4;
/// [`ErrorKind::InvalidInput`].
pub const KIND_INVALID_INPUT: u32 = 5;
/// [`ErrorKind::Codec`].
pub const KIND_CODEC: u32 = 6;
/// [`ErrorKind::PermissionDenied`].
pub const KIND_PERMISSION_DENIED: u32 = 7;
/// [`ErrorKind::Unsupported`].
pub const KIND_UNSUPPORTED: u32 = 8;
/// [`ErrorKind::Backend`], and any kind this ABI version has no code for.
pub const KIND_BACKEND: u32 = 9;

/// The code of `kind`.
pub fn kind_code(kind: ErrorKind) -> u32 {
    match kind {
        ErrorKind::Unavailable => KIND_UNAVAILABLE,
        ErrorKind::Corrupt => KIND_CORRUPT,
        ErrorKind::TooLarge => KIND_TOO_LARGE,
        ErrorKind::Config => KIND_CONFIG,
        ErrorKind::InvalidInput => KIND_INVALID_INPUT,
        ErrorKind::Codec => KIND_CODEC,
        ErrorKind::PermissionDenied => KIND_PERMISSION_DENIED,
        ErrorKind::Unsupported => KIND_UNSUPPORTED,
        _ => KIND_BACKEND,
    }
}

/// The kind of `code`, or `None` for a code this ABI version does not define.
pub fn kind_from_code(code: u32) -> Option<ErrorKind> {
    Some(match code {
        KIND_UNAVAILABLE => ErrorKind::Unavailable,
        KIND_CORRUPT => ErrorKind::Corrupt,
        KIND_TOO_LARGE => ErrorKind::TooLarge,
        KIND_CONFIG => ErrorKind::Config,
        KIND_INVALID_INPUT => ErrorKind::InvalidInput,
        KIND_CODEC => ErrorKind::Codec,
        KIND_PERMISSION_DENIED => ErrorKind::PermissionDenied,
        KIND_UNSUPPORTED => ErrorKind::Unsupported,
        KIND_BACKEND => ErrorKind::Backend,
        _ => return None,
    })
}

/// The plugin's opaque state for one open store.
pub type Handle = *mut c_void;

/// `open(config, &handle, &err)`: opens a store described by the configuration text.
pub type OpenFn =
    unsafe extern "C" fn(config: CachierSlice, handle: *mut Handle, err: *mut CachierError) -> i32;
/// `close(handle)`: closes a store; the handle is not used again.
pub type CloseFn = unsafe extern "C" fn(handle: Handle);
/// `capabilities(handle, &out, &err)`.
pub type CapabilitiesFn = unsafe extern "C" fn(
    handle: Handle,
    out: *mut CachierCapabilities,
    err: *mut CachierError,
) -> i32;
/// `get`, `get_value` and `try_get_value`: `(handle, key, &out, &err)`.
pub type ReadFn = unsafe extern "C" fn(
    handle: Handle,
    key: *const CachierKey,
    out: *mut CachierEntry,
    err: *mut CachierError,
) -> i32;
/// `set(handle, key, value, stored_at_ms, &err)`.
pub type SetFn = unsafe extern "C" fn(
    handle: Handle,
    key: *const CachierKey,
    value: CachierSlice,
    stored_at_ms: u64,
    err: *mut CachierError,
) -> i32;
/// `claim(handle, key, lease_ns, &out, &err)`.
pub type ClaimFn = unsafe extern "C" fn(
    handle: Handle,
    key: *const CachierKey,
    lease_ns: u64,
    out: *mut CachierClaim,
    err: *mut CachierError,
) -> i32;
/// `renew(handle, key, token, lease_ns, &renewed, &err)`.
pub type RenewFn = unsafe extern "C" fn(
    handle: Handle,
    key: *const CachierKey,
    token: CachierSlice,
    lease_ns: u64,
    renewed: *mut u8,
    err: *mut CachierError,
) -> i32;
/// `release(handle, key, token, &err)`.
pub type ReleaseFn = unsafe extern "C" fn(
    handle: Handle,
    key: *const CachierKey,
    token: CachierSlice,
    err: *mut CachierError,
) -> i32;
/// `wait(handle, key, timeout_ns, &out, &err)`.
pub type WaitFn = unsafe extern "C" fn(
    handle: Handle,
    key: *const CachierKey,
    timeout_ns: u64,
    out: *mut CachierEntry,
    err: *mut CachierError,
) -> i32;
/// `remove(handle, key, &removed, &err)`.
pub type RemoveFn = unsafe extern "C" fn(
    handle: Handle,
    key: *const CachierKey,
    removed: *mut u8,
    err: *mut CachierError,
) -> i32;
/// `clear` and `clear_claims`: `(handle, namespace, func, &count, &err)`.
pub type ClearFn = unsafe extern "C" fn(
    handle: Handle,
    namespace: CachierSlice,
    func: CachierSlice,
    count: *mut u64,
    err: *mut CachierError,
) -> i32;
/// `delete_stale(handle, namespace, func, stored_before_ms, &count, &err)`.
pub type DeleteStaleFn = unsafe extern "C" fn(
    handle: Handle,
    namespace: CachierSlice,
    func: CachierSlice,
    stored_before_ms: u64,
    count: *mut u64,
    err: *mut CachierError,
) -> i32;
/// `clear_namespace(handle, namespace, &count, &err)`.
pub type ClearNamespaceFn = unsafe extern "C" fn(
    handle: Handle,
    namespace: CachierSlice,
    count: *mut u64,
    err: *mut CachierError,
) -> i32;
/// `free_buf(buf)`: takes back a buffer the plugin returned.
pub type FreeBufFn = unsafe extern "C" fn(buf: CachierBuf);
/// The exported symbol: returns the plugin's declaration (a pointer to static data).
pub type DeclarationFn = unsafe extern "C" fn() -> *const PluginDeclaration;

/// The plugin's functions. `None` is a null function pointer; only `try_get_value` may be null
/// in ABI 1.0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PluginTable {
    /// Opens a store.
    pub open: Option<OpenFn>,
    /// Closes a store.
    pub close: Option<CloseFn>,
    /// [`Core::capabilities`](cachier_core::Core::capabilities).
    pub capabilities: Option<CapabilitiesFn>,
    /// [`Core::get`](cachier_core::Core::get).
    pub get: Option<ReadFn>,
    /// [`Core::get_value`](cachier_core::Core::get_value).
    pub get_value: Option<ReadFn>,
    /// [`Core::set`](cachier_core::Core::set).
    pub set: Option<SetFn>,
    /// [`Core::claim`](cachier_core::Core::claim).
    pub claim: Option<ClaimFn>,
    /// [`Core::renew`](cachier_core::Core::renew).
    pub renew: Option<RenewFn>,
    /// [`Core::release`](cachier_core::Core::release).
    pub release: Option<ReleaseFn>,
    /// [`Core::wait`](cachier_core::Core::wait).
    pub wait: Option<WaitFn>,
    /// [`Core::remove`](cachier_core::Core::remove).
    pub remove: Option<RemoveFn>,
    /// [`Core::clear`](cachier_core::Core::clear).
    pub clear: Option<ClearFn>,
    /// [`Core::clear_claims`](cachier_core::Core::clear_claims).
    pub clear_claims: Option<ClearFn>,
    /// [`Core::delete_stale`](cachier_core::Core::delete_stale).
    pub delete_stale: Option<DeleteStaleFn>,
    /// [`Core::clear_namespace`](cachier_core::Core::clear_namespace).
    pub clear_namespace: Option<ClearNamespaceFn>,
    /// Takes back a buffer the plugin returned.
    pub free_buf: Option<FreeBufFn>,
    /// `get_value` if it can answer without blocking, else [`STATUS_WOULD_BLOCK`]; may be
    /// null. Called on the host's async worker threads: it must never wait.
    pub try_get_value: Option<ReadFn>,
}

/// What the exported symbol returns: who the plugin is, which ABI it speaks, and its table.
///
/// The first 16 bytes (magic, major, minor) keep their place in every ABI version, so a host
/// can always tell which version it is looking at before it reads anything else.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PluginDeclaration {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`ABI_MAJOR`] of the `cachier-plugin` the plugin was built with.
    pub abi_major: u32,
    /// [`ABI_MINOR`] of the `cachier-plugin` the plugin was built with.
    pub abi_minor: u32,
    /// The size of this declaration in bytes, as the plugin knows it.
    pub declaration_size: u32,
    /// The size of the table `table` points to, in bytes, as the plugin knows it.
    pub table_size: u32,
    /// The plugin's name, UTF-8 (static data of the library).
    pub name: CachierSlice,
    /// The plugin's own version, UTF-8 (static data of the library).
    pub version: CachierSlice,
    /// The function table (static data of the library).
    pub table: *const PluginTable,
}

// SAFETY: a declaration is immutable and points only at immutable static data of the library
// (names and the table), which is never unloaded.
unsafe impl Sync for PluginDeclaration {}
// SAFETY: as above.
unsafe impl Send for PluginDeclaration {}

/// The size of a [`PluginDeclaration`] of this ABI version.
pub const DECLARATION_SIZE: u32 = std::mem::size_of::<PluginDeclaration>() as u32;
/// The size of a [`PluginTable`] of this ABI version.
pub const TABLE_SIZE: u32 = std::mem::size_of::<PluginTable>() as u32;

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of, size_of};

    use super::*;

    /// The layout the crate docs promise, on 64-bit targets. A change here is a change of the
    /// ABI: a new major version, or an append with a new minor.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn the_layout_is_the_documented_one() {
        assert_eq!(
            (size_of::<CachierSlice>(), align_of::<CachierSlice>()),
            (16, 8)
        );
        assert_eq!(size_of::<CachierBuf>(), 24);
        assert_eq!(size_of::<CachierKey>(), 64);
        assert_eq!(offset_of!(CachierKey, hash), 32);
        assert_eq!(size_of::<CachierEntry>(), 48);
        assert_eq!(offset_of!(CachierEntry, stored_at_ms), 8);
        assert_eq!(offset_of!(CachierEntry, claim_until_ms), 16);
        assert_eq!(offset_of!(CachierEntry, value), 24);
        assert_eq!(size_of::<CachierClaim>(), 40);
        assert_eq!(offset_of!(CachierClaim, held_until_ms), 8);
        assert_eq!(offset_of!(CachierClaim, token), 16);
        assert_eq!(size_of::<CachierCapabilities>(), 16);
        assert_eq!(offset_of!(CachierCapabilities, max_value_bytes), 8);
        assert_eq!(size_of::<CachierError>(), 32);
        assert_eq!(offset_of!(CachierError, message), 8);
        assert_eq!(size_of::<Option<OpenFn>>(), 8);
        assert_eq!(TABLE_SIZE, 17 * 8);
        assert_eq!(offset_of!(PluginTable, free_buf), 15 * 8);
        assert_eq!(offset_of!(PluginTable, try_get_value), 16 * 8);
        assert_eq!(DECLARATION_SIZE, 64);
        assert_eq!(offset_of!(PluginDeclaration, abi_major), 8);
        assert_eq!(offset_of!(PluginDeclaration, abi_minor), 12);
        assert_eq!(offset_of!(PluginDeclaration, declaration_size), 16);
        assert_eq!(offset_of!(PluginDeclaration, table_size), 20);
        assert_eq!(offset_of!(PluginDeclaration, name), 24);
        assert_eq!(offset_of!(PluginDeclaration, version), 40);
        assert_eq!(offset_of!(PluginDeclaration, table), 56);
    }

    #[test]
    fn every_error_kind_survives_the_trip() {
        for kind in [
            ErrorKind::Unavailable,
            ErrorKind::Corrupt,
            ErrorKind::TooLarge,
            ErrorKind::Config,
            ErrorKind::InvalidInput,
            ErrorKind::Codec,
            ErrorKind::PermissionDenied,
            ErrorKind::Unsupported,
            ErrorKind::Backend,
        ] {
            assert_eq!(kind_from_code(kind_code(kind)), Some(kind));
        }
        assert_eq!(kind_from_code(0), None);
        assert_eq!(kind_from_code(4242), None);
    }
}
