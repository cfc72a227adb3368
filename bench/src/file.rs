//! The file target: `cachier_file::FileCore` through the front end, against `std::fs::read` of
//! the very entry file the backend wrote, in a temporary directory under `target/bench`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cachier_core::codec::{self, DEFAULT_DECODE_LIMIT};
use cachier_core::{Cachier, Core, Function, Key};
use cachier_file::{Config, FileCore};

use crate::compare;
use crate::memory::count_label;
use crate::report::{Report, Row, Unit};
use crate::suite::after_header;
use crate::suite::{
    BenchResult, Context, Ctx, HIT_SIZES, Payload, SCALE_PROBES, THROUGHPUT_TASKS, add_throughput,
    check_hits_only, func, populate, probes, stampede, store_and_check, value_of,
};
use crate::throughput;

const TARGET: &str = "file";

/// The entry file header of the file backend's layout (see the `cachier-file` crate docs).
const ENTRY_HEADER_LEN: usize = 32;

fn cache_over(core: Arc<FileCore>, ctx: &Ctx) -> BenchResult<Cachier> {
    Ok(Cachier::builder(core)
        .namespace(format!("bench-{}", ctx.run_id))
        .ctx("namespace")?
        .strict(true)
        .build())
}

/// Collects the files named `name` under `dir` (entry files are named by the argument hash,
/// which is the same for the same arguments of different functions).
fn find_files(dir: &Path, name: &str, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            find_files(&path, name, found);
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
}

/// The entry file of `args` for `f`: the file named by the key's hash that holds the stored
/// value after the backend's header.
fn entry_path(core: &FileCore, f: &Function, args: u64, sealed: &[u8]) -> BenchResult<PathBuf> {
    let key = f.key(&args).ctx("key")?;
    let mut candidates = Vec::new();
    find_files(core.root(), &key.hash.to_hex(), &mut candidates);
    candidates
        .into_iter()
        .find(|path| {
            std::fs::read(path).is_ok_and(|bytes| {
                bytes.len() == ENTRY_HEADER_LEN + sealed.len()
                    && bytes[ENTRY_HEADER_LEN..] == *sealed
            })
        })
        .ok_or_else(|| {
            format!(
                "no entry file named {} holds the stored value after a {ENTRY_HEADER_LEN}-byte                  header (layout changed?)",
                key.hash.to_hex()
            )
        })
}

/// Runs every file measurement in a fresh directory, and removes it afterwards.
pub async fn run(ctx: &Ctx, report: &mut Report) -> BenchResult<bool> {
    let dir = crate::output_dir().join(format!("file-{}", ctx.run_id));
    let outcome = measure(ctx, &dir, report).await;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("cachier-bench: could not remove {}: {e}", dir.display());
    }
    outcome
}

async fn measure(ctx: &Ctx, dir: &Path, report: &mut Report) -> BenchResult<bool> {
    let plan = ctx.plan;
    let core = Arc::new(FileCore::open(Config::new(dir.join("store"))).ctx("open")?);
    let cache = cache_over(core.clone(), ctx)?;

    // Hits of 100 B, 64 KiB and 8 MiB, as Vec<u8> and as String.
    for (size, label) in HIT_SIZES {
        hit_case::<Vec<u8>>(ctx, &core, &cache, size, label, report).await?;
    }
    for (size, label) in HIT_SIZES {
        hit_case::<String>(ctx, &core, &cache, size, label, report).await?;
    }

    // Miss + store of 100 B.
    {
        let f = cache.function(func("miss_store"));
        let value = value_of(100);
        let sealed = codec::seal_value(&value).ctx("seal")?;
        let raw_dir = dir.join("raw");
        std::fs::create_dir_all(&raw_dir).ctx("raw dir")?;
        let (mut n, mut m, mut r) = (0u64, 0u64, 0u64);
        let series = compare!(plan, {
            "cachier call (miss, compute, store)" => {
                n += 1;
                let v = value.clone();
                f.call(&n, move || async move { v }).await
            },
            "std::fs::write (new file)" => {
                m += 1;
                std::fs::write(raw_dir.join(format!("w{m}")), &sealed)
            },
            "std::fs::write temp + rename" => {
                r += 1;
                let tmp = raw_dir.join(format!(".r{r}.tmp"));
                std::fs::write(&tmp, &sealed).and_then(|()| std::fs::rename(&tmp, raw_dir.join(format!("r{r}"))))
            },
        });
        let stats = f.stats();
        if stats.computations != n || stats.backend_errors != 0 {
            return Err(format!(
                "file miss+store: {n} calls but {} computations, {} backend errors",
                stats.computations, stats.backend_errors
            ));
        }
        report.add_comparison(
            TARGET,
            "miss + store 100 B",
            &series,
            &[],
            "durability: rename (no fsync), the backend's default",
        );
    }

    let stampede_ok = stampede(TARGET, &cache, if ctx.quick { 3 } else { 10 }, report).await?;

    // A clear while other processes call the same namespace.
    crate::file_load::measure(ctx, &dir.join("load"), report).await?;

    // Hit throughput.
    {
        let f = cache.function(func("throughput"));
        let value = value_of(100);
        store_and_check(&f, 0, &value).await?;
        let sealed = codec::seal_value(&value).ctx("seal")?;
        let path = Arc::new(entry_path(&core, &f, 0, &sealed)?);
        for tasks in THROUGHPUT_TASKS {
            let before = f.stats();
            let (mut ours, mut std_read, mut tokio_read) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..plan.throughput_rounds {
                ours.push(throughput!(tasks, plan.throughput_time, f, |f| f
                    .call(&0u64, || async { Vec::<u8>::new() })
                    .await));
                std_read.push(throughput!(tasks, plan.throughput_time, path, |p| {
                    std::fs::read(p.as_path())
                }));
                tokio_read.push(throughput!(tasks, plan.throughput_time, path, |p| {
                    tokio::fs::read(p.as_path()).await
                }));
            }
            check_hits_only("file throughput", &before, &f.stats())?;
            add_throughput(
                report,
                TARGET,
                tasks,
                &ours,
                &[
                    ("std::fs::read (blocks the worker)", std_read),
                    ("tokio::fs::read", tokio_read),
                ],
            );
        }
    }

    // Hit cost with many entries stored: one directory per count, removed after.
    for n in ctx.scale_counts(!ctx.quick) {
        let scale_dir = dir.join(format!("scale-{n}"));
        let core = Arc::new(FileCore::open(Config::new(&scale_dir)).ctx("open")?);
        let cache = cache_over(core.clone(), ctx)?;
        let f = cache.function(func("scale"));
        let value = value_of(100);
        let sealed = codec::seal_value(&value).ctx("seal")?;
        let keys: Vec<Key> = (0..n as u64)
            .map(|i| f.key(&i))
            .collect::<Result<_, _>>()
            .ctx("keys")?;
        let t0 = std::time::Instant::now();
        populate(core.clone(), keys, &sealed, 16).await?;
        let written = t0.elapsed();
        eprintln!(
            "cachier-bench: file: {n} entries stored in {:.1} s",
            written.as_secs_f64()
        );
        bulk_row(report, "write", n, written, "core.set from 16 tasks");
        let probe = probes(n, SCALE_PROBES);
        // Entry files are in shards named by the first two hex digits of their hash.
        let func_dir = entry_path(&core, &f, probe[0], &sealed)?
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .ok_or("entry file without a shard and function directory")?;
        let paths: Vec<PathBuf> = probe
            .iter()
            .map(|i| {
                f.key(i).map(|k| {
                    let hex = k.hash.to_hex();
                    func_dir.join(&hex[..2]).join(hex)
                })
            })
            .collect::<Result<_, _>>()
            .ctx("paths")?;
        let (mut a, mut b) = (0usize, 0usize);
        let before = f.stats();
        let series = compare!(plan, {
            "cachier call" => {
                a = (a + 1) % probe.len();
                f.call(&probe[a], || async { Vec::<u8>::new() }).await
            },
            "std::fs::read" => { b = (b + 1) % paths.len(); std::fs::read(&paths[b]) },
        });
        check_hits_only("file scale", &before, &f.stats())?;
        report.add_comparison(
            TARGET,
            &format!("hit 100 B, {} entries", count_label(n)),
            &series,
            &[(1, 1.5)],
            &format!(
                "one function directory (256 shards); lookups cycle over {} random stored keys",
                probe.len()
            ),
        );
        // Flush the store first, so every size clears entries in the same state: on disk.
        // Entries written seconds before the clear are still only in the page cache (no data
        // block allocated yet) and cost the file system far less to remove than entries
        // written back, which is where entries of a long-lived cache are; at 1e6 entries the
        // write alone outlasts the kernel's 30 s writeback delay, so without this the smaller
        // sizes would time the cheap case and the largest the other.
        let t0 = std::time::Instant::now();
        flush(&scale_dir)?;
        eprintln!(
            "cachier-bench: file: {n} entries flushed to disk in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let t0 = std::time::Instant::now();
        let cleared = f.clear().await.ctx("clear")?;
        let clear_time = t0.elapsed();
        if cleared != n as u64 {
            return Err(format!("file clear of {n} entries removed {cleared}"));
        }
        eprintln!(
            "cachier-bench: file: {n} entries cleared in {:.1} s",
            clear_time.as_secs_f64()
        );
        bulk_row(
            report,
            "clear",
            n,
            clear_time,
            "Function::clear, entries flushed to disk first",
        );
        drop(cache);
        std::fs::remove_dir_all(&scale_dir).ctx("remove scale dir")?;
    }
    Ok(stampede_ok)
}

/// Writes the file system holding `dir` back to disk (`sync -f`, the `syncfs` call).
fn flush(dir: &Path) -> BenchResult<()> {
    let status = std::process::Command::new("sync")
        .arg("-f")
        .arg(dir)
        .status()
        .ctx("run sync -f")?;
    if !status.success() {
        return Err(format!("sync -f {} failed: {status}", dir.display()));
    }
    Ok(())
}

/// One timing of a bulk operation on `n` entries of 100 B, with its cost per entry.
fn bulk_row(report: &mut Report, what: &str, n: usize, took: std::time::Duration, how: &str) {
    let ms = took.as_secs_f64() * 1e3;
    report.push(Row {
        target: TARGET,
        case: format!("{what} {} entries of 100 B", count_label(n)),
        variant: how.into(),
        unit: Unit::Millis,
        value: crate::harness::Summary::single(ms),
        baseline: None,
        ratio: None,
        goal: None,
        note: format!(
            "one run, one function directory; {:.1} us per entry",
            ms * 1e3 / n as f64
        ),
    });
}

/// A hit of a `size`-byte value of type `T`, against reads of the same entry file.
async fn hit_case<T: Payload>(
    ctx: &Ctx,
    core: &Arc<FileCore>,
    cache: &Cachier,
    size: usize,
    label: &str,
    report: &mut Report,
) -> BenchResult<()> {
    let f = cache.function(func(&format!("hit_{size}_{}", T::NAME)));
    let value = T::make(size);
    store_and_check(&f, 0, &value).await?;
    let sealed = codec::seal_value(&value).ctx("seal")?;
    let path = entry_path(core, &f, 0, &sealed)?;
    let before = f.stats();
    let series = compare!(ctx.plan, {
        "cachier call" => f.call(&0u64, || async { T::default() }).await,
        "std::fs::read" => std::fs::read(&path),
        "std::fs::read + codec::open_value" => std::fs::read(&path).map(|b| {
            codec::open_value::<T>(after_header(b, ENTRY_HEADER_LEN), DEFAULT_DECODE_LIMIT)
        }),
        "tokio::fs::read" => tokio::fs::read(&path).await,
    });
    check_hits_only(&format!("file hit {label}"), &before, &f.stats())?;
    report.add_comparison(
        TARGET,
        &format!("hit {label} {}", T::NAME),
        &series,
        &[(1, 1.5)],
        "the same entry file",
    );
    if size == 100 && T::NAME == "Vec<u8>" {
        breakdown(ctx, core, &f, &path, &sealed, report).await?;
    }
    Ok(())
}

/// Where the time of a 100 B file hit goes.
async fn breakdown(
    ctx: &Ctx,
    core: &Arc<FileCore>,
    f: &Function,
    path: &Path,
    sealed: &[u8],
    report: &mut Report,
) -> BenchResult<()> {
    let key = f.key(&0u64).ctx("key")?;
    let dyn_core: Arc<dyn Core> = core.clone();
    let claim_path = path.with_file_name(format!("{}.claim", key.hash.to_hex()));
    let before = f.stats();
    let series = compare!(ctx.plan, {
        "cachier call" => f.call(&0u64, || async { Vec::<u8>::new() }).await,
        "core.get_value (open, fstat, read of the entry, on the task)" =>
            dyn_core.get_value(&key).await,
        "core.get (the entry as above + open of the claim file)" => dyn_core.get(&key).await,
        "std::fs::read of the entry" => std::fs::read(path),
        "File::open of the absent claim file" => std::fs::File::open(&claim_path).is_ok(),
        "spawn_blocking round trip (empty)" => tokio::task::spawn_blocking(|| 0u8).await,
        "codec::open_value (crc32 + copy)" =>
            codec::open_value::<Vec<u8>>(bytes::Bytes::copy_from_slice(sealed), DEFAULT_DECODE_LIMIT),
    });
    check_hits_only("file breakdown", &before, &f.stats())?;
    let call = series[0].summary().median;
    let get = series[1].summary().median;
    report.add_comparison(
        TARGET,
        "hit 100 B: where the time goes",
        &series,
        &[],
        "each part timed alone; ratio = call / part",
    );
    report.push(Row {
        target: TARGET,
        case: "hit 100 B: where the time goes".into(),
        variant: "front end outside core.get_value (call - get_value)".into(),
        unit: Unit::NsPerOp,
        value: crate::harness::Summary::single(call - get),
        baseline: None,
        ratio: None,
        goal: None,
        note: "key hash, decode, counters".into(),
    });
    Ok(())
}
