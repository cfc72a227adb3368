//! The file backend of cachier: a [`Core`](cachier_core::Core) over a directory, persistent
//! across restarts and shared safely by every process on the machine. No server, nothing to
//! install: the embedded default for persistence.
//!
//! Open a store with [`FileCore::open`] and a [`Config`] (a path, a `file://` URL, or
//! [`Config::from_env`]: `$CACHIER_DIR`, else `$XDG_CACHE_HOME/cachier`, else
//! `~/.cache/cachier`), then hand it to the front end as an `Arc<dyn Core>`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cachier_core::Core;
//! use cachier_file::{Config, Durability, FileCore};
//!
//! # fn main() -> cachier_core::Result<()> {
//! let core: Arc<dyn Core> = Arc::new(FileCore::open(
//!     Config::parse("file:///var/cache/my-app")?.with_durability(Durability::Rename),
//! )?);
//! # Ok(()) }
//! ```
//!
//! # Storage layout 2, file format version 1
//!
//! ```text
//! {dir}/
//!   {safe namespace}/                       one directory per Namespace
//!     {safe function id}/                   one directory per FuncId
//!       {hh}/                               shard: the keys whose hash starts with {hh}
//!         {hash}                            entry file: one cached value
//!         {hash}.claim                      claim file: a live (or expired) claim
//!         .{hash}.{pid}-{n}-{random}.tmp    a file being written (renamed or linked into place)
//!     .clearing.{safe function id}.{pid}-{n}-{random}/   a function directory being cleared
//!   .clearing.{safe namespace}.{pid}-{n}-{random}/       a namespace directory being cleared
//! ```
//!
//! - `{hash}` is the key's [`ArgHash`](cachier_core::ArgHash) as 64 lowercase hex digits;
//!   `{hh}` its first two. The 256 shards keep directories small (about 4,000 files each at
//!   1e6 entries of one function), so a `readdir`-based sweep and the file system's own
//!   directory index stay fast, and a sweep holds one shard's names in memory at a time.
//! - **Disk cost per entry** (ext4 with 4 KiB blocks and 256-byte inodes, the common default):
//!   one inode (256 bytes of the inode table), the file's data rounded up to whole blocks (a
//!   100-byte value is a 132-byte file and takes one 4 KiB block) and a 72-byte directory
//!   entry in its shard (8 bytes and the 64-character name), about 4.3 KiB in all for a small
//!   value. Measured: 200,000 entries of 100 B hold 29.8 MiB of data in 801.6 MiB of
//!   allocated blocks. The shards add one directory each (a 4 KiB block, growing by a block
//!   per ~50 names: about 80 MiB at 1e6 entries). Values of several kilobytes use the
//!   blocks better; a store of many tiny values is better kept in SQLite or Redis.
//! - Layout 1 (before shards) kept the files directly in the function directory. This build
//!   never reads them (they are misses, and the next `set` writes into the shard), but
//!   `clear`, `clear_namespace`, `delete_stale` and `clear_claims` still treat them as entries
//!   and claims, so they go with the next clear. Processes of both layouts must not share one
//!   directory at the same time: their claims on the same key would not see each other.
//! - A *safe* name is a readable prefix of the id (at most 40 characters; ASCII letters, digits,
//!   `_` and `-` kept, anything else turned into `_`), a `-`, and 16 hex digits of the BLAKE3
//!   hash of the exact id (domain tag `cachier-file-name-v1\0`). So `foo`, `foo_bar`, `foo*`
//!   and `Foo` live in different directories (also on case-insensitive file systems), a name is
//!   never longer than 57 bytes whatever the id's length, and no id reaches outside its
//!   directory (`../../etc` becomes `______etc-` and 16 hex digits). Example: `billing::total`
//!   becomes `billing__total-` and 16 hex digits.
//! - **Entry file**: a 32-byte header, then the value's bytes exactly as the front end gave
//!   them (the backend never decodes values):
//!
//!   | bytes | field |
//!   |---|---|
//!   | 0..8 | magic `CCHRFENT` |
//!   | 8 | format version (`1`) |
//!   | 9..16 | reserved, zero |
//!   | 16..24 | `stored_at`, u64 little-endian, UTC milliseconds since the Unix epoch |
//!   | 24..32 | value length, u64 little-endian |
//!
//!   A file that is shorter than its header says, longer, of another version, or not an entry
//!   at all (a foreign file under an entry's name) is a miss, logged with `tracing::warn!`;
//!   the next `set` overwrites it. Files whose names are not entry, claim or temp names are
//!   foreign and left alone.
//! - **Claim file**: magic `CCHRFCLM`, version (`1`), token length (u8), 6 reserved bytes, the
//!   lease expiry (u64 LE milliseconds), then the holder's token. An unreadable claim file
//!   counts as no claim.
//!
//! # Writes
//!
//! `set` writes a temp file in the shard directory and renames it over the entry file, so a
//! reader sees the old value or the new one, never a mix, and a miss never rewrites another
//! entry. A process killed mid-write leaves only a temp file, which readers ignore and `clear` /
//! `delete_stale` remove once it is an hour old. Directories are created on demand, so a store
//! whose directory is deleted while in use starts over empty.
//!
//! [`Durability`] decides whether a `set` is flushed to disk: [`Durability::Rename`] (the
//! default) does not flush and is safe against killed processes; after a power loss the newest
//! entries may be lost or truncated and then read as misses. [`Durability::Fsync`] flushes the
//! file and its directory, two disk flushes per `set` (measured on this project's ext4 test
//! machine: a 100-byte `set` takes 0.35 ms without and 0.94 ms with them).
//!
//! # Clearing
//!
//! `clear` first renames the function directory aside to `.clearing.{name}.{unique}` in the
//! same namespace directory: one `rename`, after which every process finds the function empty
//! and writes into a new directory. It then removes the old files from the renamed directory
//! (one `unlink` each; foreign files are put back), where no caller's `create`, `link`,
//! `rename` or `unlink` competes with them for the directory's lock and no newly written file
//! joins the walk. Claims in it end with it: their holders' `renew` reports the claim lost and
//! their `set` writes into the new directory. `clear_namespace` does the same with the
//! namespace directory, in the root. A directory renamed aside by a process killed while
//! clearing is removed by a later `clear` of the same function once it has been untouched for
//! an hour (or by `clear_namespace`). Where the rename is refused, the files are removed in
//! place. `clear_claims` and `delete_stale` keep most files, so they walk the directory in
//! place and lock only the claim files they change.
//!
//! The walk lists one shard directory at a time and removes its files in the order of their
//! inode numbers, on up to 8 threads (one shard each), so a clear holds a few shards' names in
//! memory (about 4,000 each at 1e6 entries) and each step costs the same at any size: its time
//! is linear in the number of entries. It costs one `unlink` per file plus one `readdir` and
//! one `rmdir` per shard, no lock and no flush; `clear_claims` and `delete_stale` add a lock
//! per claim file and a header read per entry.
//!
//! What an `unlink` costs is the file system's work, and depends on where the file is:
//!
//! - A file written in the last ~30 s (the kernel's writeback delay) may still be in the page
//!   cache only: ext4 has not allocated its block yet, and removing it is cheap (measured on
//!   this project's ext4 machine: about 15-25 µs an entry).
//! - A file written back to disk frees an inode and a data block. On a file system mounted
//!   with the `discard` option (as this project's test machine is), the `unlink` waits for one
//!   discard request to the device for that block: measured, 100,000 removed entries made
//!   100,000 discards of 0.1-2 ms each, depending on the disk's other traffic. The order of
//!   the removals does not change this (inode, modification time and physical block order
//!   measured alike); the threads do, by keeping several requests in flight: on a loaded
//!   machine, a clear of 1e5 entries on disk took 718 µs an entry with one thread and
//!   90-165 µs with 8; 1e6 entries 89-128 µs an entry. Without `discard` (with a periodic
//!   `fstrim` instead, the usual setup) that cost is not paid at clear time.
//!
//! Under load, a clear also waits for CPU and disk like any other process (`cargo xtask bench
//! file` measures a clear while other processes call: `bench/src/file_load.rs`).
//!
//! # Claims across processes
//!
//! A claim is the file `{hash}.claim`. Every claim file is written complete to a temp file
//! first and only then appears under its name, so a reader never sees a partial record.
//!
//! - *No claim file*: `claim` creates it with `link(temp, {hash}.claim)`, which fails if the
//!   name exists (the atomic create-if-absent of `O_EXCL`). Of any number of racing processes
//!   exactly one link succeeds.
//! - *A claim file exists*: every change to an existing claim file (taking over an expired
//!   claim, renewing, releasing, ending it in `set`, `remove` or `clear_claims`) happens while
//!   holding an exclusive OS lock (`flock`, via [`std::fs::File::lock`]) on that file, after
//!   checking that the locked file is still the one under the name (it may have been replaced
//!   or removed while waiting for the lock). Changes are a `rename` of a fresh temp file over
//!   the name or its removal, never an in-place write. So the record read under the lock stays
//!   current until the lock is dropped: "read, check expiry or token, replace" is one atomic
//!   step, and of any number of processes racing for an expired claim exactly one takes it
//!   over. The OS drops the lock when its holder dies, so a killed process blocks nobody; its
//!   claim itself ends when the lease runs out.
//!
//! The directory must support hard links and `flock` (every local Unix file system and NFS do).
//!
//! # Waiting
//!
//! [`Core::wait`](cachier_core::Core::wait) polls the key with exponential backoff from 2 ms up
//! to [`Config::with_poll_max`] (50 ms by default), never sleeping past the claim's expiry; a
//! poll is two `open` calls, so a waiter costs well under 0.1% of a core. Changes made through
//! the same process's `FileCore` wake its waiters at once. No file-change notification is used:
//! it would add a dependency, does not work over network file systems, and the polling above
//! already bounds the extra latency by `poll_max`.
//!
//! # Blocking IO
//!
//! A hit (`Core::get_value`, the front end's hit path) costs one `open`, one `fstat` and one
//! `read` of the entry file: the length seen at open is read in one call (entry files are
//! replaced, never changed in place), four system calls where `std::fs::read` makes five.
//! `Core::get` adds one (usually failing) `open` of the claim file. Entry files up to 256 KiB
//! ([`Config::with_inline_read_max`]) are read on the calling task: a 100-byte entry takes
//! about 5 µs and a 64 KiB one about 9 µs, while a trip through tokio's blocking pool adds
//! about 35 µs. Such a read never waits, so it counts against the task's tokio budget
//! ([`tokio::task::coop::consume_budget`]): a task that keeps hitting yields to the runtime
//! every 128 reads or so, and the other tasks and timers of its worker thread still run. A
//! larger entry file is opened on the task and handed, open, to the blocking pool for the
//! read; every write (`set`, `claim`, the sweeps) runs on the blocking pool
//! (`spawn_blocking`), so big values or a slow disk never stall the runtime's workers. On a
//! network file system, set `inline_read_max` to 0 (then the `open` is on the pool too).

mod config;
mod core;
mod layout;
mod store;

pub use crate::config::{Config, DEFAULT_INLINE_READ_MAX, DEFAULT_POLL_MAX, DIR_ENV, Durability};
pub use crate::core::FileCore;
