//! Loading a library and checking its declaration before anything in it is called.
//!
//! Every failure here is a `Config` error that names the library and the reason. Libraries are
//! loaded once per path and never unloaded (see the crate docs for why).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cachier_core::{Error, Result};
use libloading::Library;

use crate::abi::{self, DeclarationFn, PluginDeclaration, PluginTable};
use crate::config::MAX_TEXT_BYTES;

/// The backend name in errors about loading.
pub(crate) const BACKEND: &str = "plugin";

/// A checked declaration: every required function is present.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub table: Table,
    pub name: String,
    pub version: String,
    pub abi_minor: u32,
}

/// The plugin's functions, the required ones no longer optional.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table {
    pub open: abi::OpenFn,
    pub close: abi::CloseFn,
    pub capabilities: abi::CapabilitiesFn,
    pub get: abi::ReadFn,
    pub get_value: abi::ReadFn,
    pub set: abi::SetFn,
    pub claim: abi::ClaimFn,
    pub renew: abi::RenewFn,
    pub release: abi::ReleaseFn,
    pub wait: abi::WaitFn,
    pub remove: abi::RemoveFn,
    pub clear: abi::ClearFn,
    pub clear_claims: abi::ClearFn,
    pub delete_stale: abi::DeleteStaleFn,
    pub clear_namespace: abi::ClearNamespaceFn,
    pub free_buf: abi::FreeBufFn,
    pub try_get_value: Option<abi::ReadFn>,
}

/// A `Config` error about the library at `path`.
pub(crate) fn load_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::config(format!(
        "cannot load the cachier plugin {}: {reason}",
        path.display()
    ))
    .with_operation("load")
    .with_backend(BACKEND)
    .with_key(path.display())
}

/// Loads the library at `path` (once per canonical path) and checks the declaration its
/// `symbol` returns.
pub(crate) fn load(path: &Path, symbol: &str) -> Result<Checked> {
    let library = open_library(path)?;
    // SAFETY: the symbol is declared by the ABI as `extern "C" fn() -> *const
    // PluginDeclaration`; a library that exports something else under this name breaks the
    // ABI's first rule, which no check can detect.
    let declare: DeclarationFn = match unsafe { library.get::<DeclarationFn>(symbol) } {
        Ok(found) => *found,
        Err(e) => {
            return Err(load_error(
                path,
                format!(
                    "it has no symbol `{symbol}`, so it is not a cachier plugin (plugins export \
                     it with cachier_plugin::export_core!): {}",
                    chain(&e)
                ),
            ));
        }
    };
    // SAFETY: as above; the function takes nothing and returns a pointer to static data.
    let declaration = unsafe { declare() };
    // SAFETY: `check` reads the declaration only after testing the pointer for null and
    // alignment, and reads the table only after the magic, the version and the sizes passed.
    unsafe { check(path, symbol, declaration) }
}

/// Opens `path` with the platform's loader, or finds it already open.
fn open_library(path: &Path) -> Result<&'static Library> {
    static LIBRARIES: OnceLock<Mutex<HashMap<PathBuf, &'static Library>>> = OnceLock::new();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(load_error(path, "it is a directory, not a library"));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(load_error(path, "no such file").with_source(e));
        }
        Err(e) => {
            return Err(load_error(path, format!("cannot read it: {e}")).with_source(e));
        }
    }
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| load_error(path, format!("cannot resolve its path: {e}")))?;
    let mut libraries = LIBRARIES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(library) = libraries.get(&canonical) {
        return Ok(library);
    }
    // SAFETY: loading a library runs its initialisers. A cachier plugin's are those of a Rust
    // cdylib (or a C library) and must not have effects beyond the library; that is part of
    // the plugin contract, which no check can enforce before the library is loaded.
    let library = unsafe { Library::new(canonical.as_path()) }
        .map_err(|e| load_error(path, format!("it is not a loadable library: {}", chain(&e))))?;
    // Never unloaded: see the crate docs ("Libraries are never unloaded").
    let library: &'static Library = Box::leak(Box::new(library));
    libraries.insert(canonical, library);
    Ok(library)
}

/// The message of `e` and of each of its sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Checks a declaration the way the crate docs promise: magic, major version, sizes, then the
/// table's required functions.
///
/// # Safety
///
/// `declaration` must be null or point to a declaration that stays valid for the life of the
/// process (static data of a library that is never unloaded).
pub(crate) unsafe fn check(
    path: &Path,
    symbol: &str,
    declaration: *const PluginDeclaration,
) -> Result<Checked> {
    if declaration.is_null() {
        return Err(load_error(
            path,
            format!("`{symbol}` returned no declaration (a null pointer)"),
        ));
    }
    if !declaration.is_aligned() {
        return Err(load_error(
            path,
            format!("`{symbol}` returned a misaligned declaration pointer"),
        ));
    }
    // The first 16 bytes (magic, major, minor) are the same in every ABI version.
    // SAFETY: non-null and aligned; the caller promises valid static data.
    let (magic, major, minor) = unsafe {
        (
            (*declaration).magic,
            (*declaration).abi_major,
            (*declaration).abi_minor,
        )
    };
    if magic != abi::MAGIC {
        return Err(load_error(
            path,
            format!(
                "the declaration `{symbol}` returned has the wrong magic {:?} (expected {:?}): \
                 it is not a cachier plugin declaration",
                String::from_utf8_lossy(&magic),
                String::from_utf8_lossy(&abi::MAGIC)
            ),
        ));
    }
    if major != abi::ABI_MAJOR {
        let advice = if major > abi::ABI_MAJOR {
            "a newer cachier-plugin than this application's; upgrade the application or rebuild \
             the plugin against cachier-plugin with ABI major 1"
        } else {
            "an older cachier-plugin; rebuild the plugin against cachier-plugin with ABI major 1"
        };
        return Err(load_error(
            path,
            format!(
                "it speaks plugin ABI {major}.{minor}, this host speaks {}.{} (only major {} \
                 loads): it was built with {advice}",
                abi::ABI_MAJOR,
                abi::ABI_MINOR,
                abi::ABI_MAJOR
            ),
        ));
    }
    // SAFETY: the major version matches, so the size field is where this version puts it.
    let declaration_size = unsafe { (*declaration).declaration_size };
    if declaration_size < abi::DECLARATION_SIZE {
        return Err(load_error(
            path,
            format!(
                "its declaration is {declaration_size} bytes, shorter than the {} bytes of ABI \
                 {}.0",
                abi::DECLARATION_SIZE,
                abi::ABI_MAJOR
            ),
        ));
    }
    // SAFETY: the plugin declares at least this version's declaration at this pointer.
    let declaration = unsafe { *declaration };
    if declaration.table_size < abi::TABLE_SIZE {
        return Err(load_error(
            path,
            format!(
                "its function table is {} bytes, shorter than the {} bytes this host needs \
                 (ABI {}.{})",
                declaration.table_size,
                abi::TABLE_SIZE,
                abi::ABI_MAJOR,
                abi::ABI_MINOR
            ),
        ));
    }
    let table = declaration.table;
    if table.is_null() || !table.is_aligned() {
        return Err(load_error(
            path,
            "its declaration has a null or misaligned function table",
        ));
    }
    // SAFETY: the plugin declares at least `TABLE_SIZE` bytes of table at this aligned,
    // non-null pointer; later minor versions only append after them.
    let table: PluginTable = unsafe { *table };
    let table = required(path, &table)?;
    // SAFETY: static data of the library, if the plugin keeps the ABI's promise.
    let name = unsafe { text(path, "name", declaration.name) }?;
    // SAFETY: as above.
    let version = unsafe { text(path, "version", declaration.version) }?;
    Ok(Checked {
        table,
        name: if name.is_empty() {
            "unnamed plugin".to_owned()
        } else {
            name
        },
        version,
        abi_minor: minor,
    })
}

/// The table with every function ABI 1.0 requires, or an error naming the missing ones.
fn required(path: &Path, t: &PluginTable) -> Result<Table> {
    macro_rules! take {
        ($($f:ident),* $(,)?) => {{
            let missing: Vec<&str> = [$((stringify!($f), t.$f.is_none())),*]
                .into_iter()
                .filter_map(|(name, absent)| absent.then_some(name))
                .collect();
            if !missing.is_empty() {
                return Err(load_error(
                    path,
                    format!(
                        "its function table lacks {} (null function pointers)",
                        missing.join(", ")
                    ),
                ));
            }
            Table {
                $($f: t.$f.expect("checked for null above"),)*
                try_get_value: t.try_get_value,
            }
        }};
    }
    Ok(take!(
        open,
        close,
        capabilities,
        get,
        get_value,
        set,
        claim,
        renew,
        release,
        wait,
        remove,
        clear,
        clear_claims,
        delete_stale,
        clear_namespace,
        free_buf,
    ))
}

/// Reads a name or version from the declaration.
///
/// # Safety
///
/// `slice` must be empty or point to `len` readable bytes.
unsafe fn text(path: &Path, what: &str, slice: abi::CachierSlice) -> Result<String> {
    if slice.len > MAX_TEXT_BYTES {
        return Err(load_error(
            path,
            format!("its declared {what} is {} bytes long", slice.len),
        ));
    }
    // SAFETY: the caller's promise; the length is bounded above.
    match unsafe { slice.as_bytes() } {
        Some(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        None => Err(load_error(
            path,
            format!("its declared {what} is a null pointer with a length"),
        )),
    }
}
