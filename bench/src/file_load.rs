//! The file target's bulk operations under load: several processes call two cached functions
//! of one namespace while this process clears one of them.
//!
//! The callers are this benchmark binary started again with [`CHILD_DIR`] set: each runs
//! [`TASKS`] tasks calling the functions on skewed arguments (even tasks the cleared function,
//! odd tasks its sibling), counting calls in [`BUCKET_MS`] buckets of wall-clock time, and
//! prints the buckets when the parent creates the `stop` file. The parent clears [`ENTRIES`]
//! entries, unloaded (best of three) and under load (3 times, 7 in a full run, after a quiet second each
//! so that the second before is the throughput the clear is compared with).
//!
//! Two goals (issue "file backend under load"): a clear under load takes at most 10x its
//! unloaded time, and the sibling function's callers keep at least half their throughput while
//! it runs (their slowdown, calls/s before over calls/s during, at most 2x). Every value a
//! caller gets is checked; a wrong one fails the run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cachier_core::{Cachier, Core, Function};
use cachier_file::{Config, FileCore};

use crate::harness::Summary;
use crate::report::{Report, Row, Unit};
use crate::suite::{BenchResult, Context, Ctx, func};

/// Set in a caller process: the directory shared with the parent.
pub const CHILD_DIR: &str = "CACHIER_BENCH_FILE_LOAD_DIR";
/// Argument sets of the cleared function, all stored before each clear.
const ENTRIES: u64 = 2000;
/// Caller processes.
const PROCESSES: usize = 3;
/// Tasks per caller process.
const TASKS: usize = 16;
/// The width of a throughput bucket, in milliseconds.
const BUCKET_MS: u64 = 10;

const TARGET: &str = "file";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The value of argument `i`: 100 bytes that say which argument they belong to.
fn value_for(i: u64) -> Vec<u8> {
    let mut v = i.to_le_bytes().repeat(13);
    v.truncate(100);
    v
}

/// The cleared function and its sibling, over the store in `root`.
fn functions(root: &Path) -> BenchResult<(Function, Function)> {
    let core = Arc::new(FileCore::open(Config::new(root)).ctx("open the store")?);
    let cache = Cachier::builder(core as Arc<dyn Core>)
        .namespace("load")
        .ctx("namespace")?
        .strict(true)
        .build();
    Ok((
        cache.function(func("cleared")),
        cache.function(func("sibling")),
    ))
}

/// Stores every argument's value, as a burst of misses would.
async fn fill(f: &Function) -> BenchResult<()> {
    for i in 0..ENTRIES {
        f.precache(&i, &value_for(i)).await.ctx("precache")?;
    }
    Ok(())
}

/// A caller process: runs until the parent creates `stop`, then prints its calls per bucket
/// (`C {bucket} {calls}` for the cleared function, `S ...` for the sibling) and `DONE`.
pub async fn caller(dir: PathBuf) -> BenchResult<()> {
    let (cleared, sibling) = functions(&dir.join("store"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let f = if t % 2 == 0 { &cleared } else { &sibling }.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut state = u64::from(std::process::id()) << 16 | t as u64 | 1;
            let mut buckets: BTreeMap<u64, u64> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                // xorshift; the square of a uniform draw favours small arguments.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                let i = ((u * u) * ENTRIES as f64) as u64;
                let got: Vec<u8> = f
                    .call(&i, move || async move { value_for(i) })
                    .await
                    .map_err(|e| format!("a call failed: {e}"))?;
                if got != value_for(i) {
                    return Err(format!("argument {i} returned another argument's value"));
                }
                *buckets.entry(unix_ms() / BUCKET_MS).or_default() += 1;
            }
            Ok((t % 2, buckets))
        }));
    }
    println!("READY");
    while !dir.join("stop").exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut all: [BTreeMap<u64, u64>; 2] = [BTreeMap::new(), BTreeMap::new()];
    for task in tasks {
        let (which, buckets) = task.await.ctx("a caller task")??;
        for (bucket, n) in buckets {
            *all[which].entry(bucket).or_default() += n;
        }
    }
    for (tag, buckets) in ["C", "S"].iter().zip(&all) {
        for (bucket, n) in buckets {
            println!("{tag} {bucket} {n}");
        }
    }
    println!("DONE");
    Ok(())
}

/// Caller processes, killed when dropped (also when the measurement fails).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Calls per second over the buckets `[from, to)` (milliseconds since the epoch).
fn rate(buckets: &BTreeMap<u64, u64>, from: u64, to: u64) -> f64 {
    let (first, last) = (from / BUCKET_MS, to.div_ceil(BUCKET_MS));
    let calls: u64 = buckets.range(first..last).map(|(_, n)| n).sum();
    calls as f64 * 1000.0 / ((last - first) * BUCKET_MS) as f64
}

/// Starts the callers and waits until each says `READY`; their output lines arrive on the
/// returned channel.
fn start_callers(
    shared: &Path,
) -> BenchResult<(Children, std::sync::mpsc::Receiver<(usize, String)>)> {
    let exe = std::env::current_exe().ctx("the benchmark's own path")?;
    let mut children = Children(Vec::new());
    for _ in 0..PROCESSES {
        let child = Command::new(&exe)
            .env(CHILD_DIR, shared)
            .stdout(Stdio::piped())
            .spawn()
            .ctx("start a caller process")?;
        children.0.push(child);
    }
    let (tx, rx) = std::sync::mpsc::channel::<(usize, String)>();
    for (n, child) in children.0.iter_mut().enumerate() {
        let stdout = child.stdout.take().ok_or("a caller without piped stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((n, line)).is_err() {
                    break;
                }
            }
        });
    }
    let mut ready = 0;
    while ready < PROCESSES {
        let (_, line) = rx
            .recv_timeout(Duration::from_secs(120))
            .ctx("every caller starts within two minutes")?;
        if line.trim_end() == "READY" {
            ready += 1;
        }
    }
    Ok((children, rx))
}

/// Measures clears with and without the callers, in `dir` (which the caller removes).
pub async fn measure(ctx: &Ctx, dir: &Path, report: &mut Report) -> BenchResult<()> {
    let clears = if ctx.quick { 3 } else { 7 };
    std::fs::create_dir_all(dir).ctx("load dir")?;
    let (f, sibling) = functions(&dir.join("store"))?;

    let mut unloaded = Vec::new();
    for _ in 0..3 {
        fill(&f).await?;
        let started = Instant::now();
        let removed = f.clear().await.ctx("clear")?;
        unloaded.push(started.elapsed());
        if removed != ENTRIES {
            return Err(format!("unloaded clear removed {removed} of {ENTRIES}"));
        }
    }
    let best = unloaded.iter().min().copied().unwrap_or_default();

    let (mut children, rx) = start_callers(dir)?;
    fill(&f).await?;
    fill(&sibling).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut loaded = Vec::new();
    let mut windows = Vec::new();
    for _ in 0..clears {
        fill(&f).await?;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let (from, started) = (unix_ms(), Instant::now());
        let removed = f.clear().await.ctx("clear under load")?;
        loaded.push(started.elapsed());
        let to = unix_ms().max(from + 1);
        if removed == 0 || removed > ENTRIES {
            return Err(format!("a clear under load removed {removed} of {ENTRIES}"));
        }
        // The throughput before: the second before the clear, minus its first 200 ms.
        windows.push((from - 800, from, from, to));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(dir.join("stop"), b"").ctx("create stop")?;

    let mut buckets: [BTreeMap<u64, u64>; 2] = [BTreeMap::new(), BTreeMap::new()];
    let mut done = 0;
    while done < PROCESSES {
        let (_, line) = rx
            .recv_timeout(Duration::from_secs(120))
            .ctx("every caller stops within two minutes")?;
        let mut words = line.split_whitespace();
        let (tag, b, n) = (words.next(), words.next(), words.next());
        let which = match tag {
            Some("DONE") => {
                done += 1;
                continue;
            }
            Some("C") => 0,
            Some("S") => 1,
            _ => continue,
        };
        if let (Some(Ok(b)), Some(Ok(n))) = (b.map(str::parse::<u64>), n.map(str::parse::<u64>)) {
            *buckets[which].entry(b).or_default() += n;
        }
    }
    for child in &mut children.0 {
        let status = child.wait().ctx("wait for a caller")?;
        if !status.success() {
            return Err(format!(
                "a caller process failed ({status}); see its output"
            ));
        }
    }

    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let case = format!("clear {ENTRIES} entries, {PROCESSES} processes x {TASKS} tasks calling");
    let unloaded_name = "Function::clear alone (best of 3)";
    report.push(Row {
        target: TARGET,
        case: case.clone(),
        variant: unloaded_name.into(),
        unit: Unit::Millis,
        value: Summary::single(ms(&best)),
        baseline: None,
        ratio: None,
        goal: None,
        note: format!(
            "all three: {:?} ms",
            unloaded.iter().map(|d| ms(d).round()).collect::<Vec<_>>()
        ),
    });
    let best_ms = ms(&best).max(1e-3);
    report.push(Row {
        target: TARGET,
        case: case.clone(),
        variant: "Function::clear under load".into(),
        unit: Unit::Millis,
        value: Summary::of(&loaded.iter().map(ms).collect::<Vec<_>>()),
        baseline: Some(unloaded_name.into()),
        // Here the ratio is this row's time over the unloaded time: the goal is at most 10x.
        ratio: Some(Summary::of(
            &loaded.iter().map(|d| ms(d) / best_ms).collect::<Vec<_>>(),
        )),
        goal: Some(10.0),
        note: format!("{clears} clears; ratio = this / unloaded"),
    });
    for (which, variant, goal) in [
        (1, "sibling function's calls during the clear", Some(2.0)),
        (0, "cleared function's calls during the clear", None),
    ] {
        let during: Vec<f64> = windows
            .iter()
            .map(|&(_, _, c0, c1)| rate(&buckets[which], c0, c1))
            .collect();
        let slowdown: Vec<f64> = windows
            .iter()
            .map(|&(b0, b1, c0, c1)| {
                rate(&buckets[which], b0, b1) / rate(&buckets[which], c0, c1).max(1.0)
            })
            .collect();
        let before: Vec<f64> = windows
            .iter()
            .map(|&(b0, b1, _, _)| rate(&buckets[which], b0, b1).round())
            .collect();
        report.push(Row {
            target: TARGET,
            case: case.clone(),
            variant: variant.into(),
            unit: Unit::OpsPerSec,
            value: Summary::of(&during),
            baseline: Some("the same calls in the second before".into()),
            ratio: Some(Summary::of(&slowdown)),
            goal,
            note: format!(
                "ratio = calls/s before / during (before: {before:?}){}",
                if which == 0 {
                    "; its calls miss after the clear"
                } else {
                    ""
                }
            ),
        });
    }
    Ok(())
}
