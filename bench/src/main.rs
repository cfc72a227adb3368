//! # cachier-bench
//!
//! Measures what caching through cachier costs, side by side with the raw operation of the same
//! client in the same process and run: a hit, a miss + store, large values, a cold key under 64
//! concurrent callers, hit throughput under concurrency, and hit cost as the store grows.
//!
//! ```text
//! cargo run --release -p cachier-bench -- [memory] [file] [redis] [redis:cluster] [s3] [plugin] [--quick]
//! ```
//!
//! (`cargo xtask bench [target...] [--quick]` runs exactly this, after building the example
//! plugin the plugin target loads, and starting a throwaway Redis Cluster for redis:cluster
//! and an S3 server for s3.) With no target, all six run. The table goes to the
//! terminal; `target/bench/results.json`, `results.csv` and
//! `results.md` (the README table) get the same rows. The Redis target uses
//! `CACHIER_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), writes under a namespace of its
//! own and deletes everything it wrote; the redis:cluster target uses
//! `CACHIER_TEST_REDIS_CLUSTER_URL` (a `redis+cluster://` URL) and the s3 target
//! `CACHIER_TEST_S3_URL` the same way.
//!
//! The harness lives in [`harness`]: calibrated batches, variants interleaved round by round,
//! medians with 10th/90th percentiles, and ratios taken from paired rounds. See
//! `bench/README-section.md` for why it is not criterion or divan.

mod file;
mod file_load;
mod harness;
mod memory;
mod plugin;
mod profile;
mod redis;
mod redis_cluster;
mod report;
mod s3;
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::harness::Plan;
use crate::report::Report;
use crate::suite::Ctx;

const TARGETS: [&str; 6] = ["memory", "file", "redis", "redis:cluster", "s3", "plugin"];

fn usage() -> String {
    format!(
        "usage: cachier-bench [{}]... [--quick]\n\n\
         Runs the named targets (all when none is named) and writes target/bench/results.json.\n\
         --quick  fewer rounds and smaller stores (scale up to 1e5 entries), under 3 minutes\n\
         --profile-hit SECS  only loop hits for SECS seconds (run under perf), on the first\n         \x20                   target named (memory, file or redis; memory when none is)\n         --size BYTES        with --profile-hit: the stored value's length (default 100)\n         --tasks N           with --profile-hit: concurrent calling tasks (default 1)",
        TARGETS.join("] [")
    )
}

fn main() -> ExitCode {
    if let Some(dir) = std::env::var_os(file_load::CHILD_DIR) {
        return caller_process(PathBuf::from(dir));
    }
    let mut quick = false;
    let mut profile_secs: Option<u64> = None;
    let (mut profile_size, mut profile_tasks) = (100usize, 1usize);
    let mut targets: Vec<&'static str> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--profile-hit" | "--size" | "--tasks" => {
                let Some(n) = args.next().and_then(|s| s.parse::<u64>().ok()) else {
                    eprintln!("cachier-bench: {arg} takes a number\n{}", usage());
                    return ExitCode::from(2);
                };
                match arg.as_str() {
                    "--profile-hit" => profile_secs = Some(n),
                    "--size" => profile_size = n as usize,
                    _ => profile_tasks = n as usize,
                }
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            name => match TARGETS.iter().find(|t| **t == name) {
                Some(t) if !targets.contains(t) => targets.push(t),
                Some(_) => {}
                None => {
                    eprintln!(
                        "cachier-bench: unknown target or option {name:?}\n{}",
                        usage()
                    );
                    return ExitCode::from(2);
                }
            },
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }

    let ctx = Ctx {
        quick,
        plan: if quick { Plan::quick() } else { Plan::full() },
        run_id: run_id(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cachier-bench: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    if let Some(secs) = profile_secs {
        let profile = profile::Profile {
            secs,
            size: profile_size,
            tasks: profile_tasks,
        };
        let target = targets.first().copied().unwrap_or("memory");
        return match runtime.block_on(profile::run(target, &profile, &ctx.run_id)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cachier-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let load_before = load_average();
    let started = Instant::now();
    let mut report = Report::default();
    let mut all_ok = true;
    eprintln!(
        "cachier-bench: {} run of {} (load average {load_before})",
        if quick { "quick" } else { "full" },
        targets.join(", ")
    );
    for target in &targets {
        let t0 = Instant::now();
        eprintln!("cachier-bench: {target} ...");
        let outcome = runtime.block_on(async {
            match *target {
                "memory" => memory::run(&ctx, &mut report).await,
                "file" => file::run(&ctx, &mut report).await,
                "redis" => redis::run(&ctx, &mut report).await,
                "s3" => s3::run(&ctx, &mut report).await,
                "redis:cluster" => redis_cluster::run(&ctx, &mut report).await,
                "plugin" => plugin::run(&ctx, &mut report).await,
                other => Err(format!("no such target {other}")),
            }
        });
        match outcome {
            Ok(true) => {}
            Ok(false) => {
                all_ok = false;
                eprintln!("cachier-bench: {target}: a correctness check FAILED (see the table)");
            }
            Err(why) => {
                all_ok = false;
                eprintln!("cachier-bench: {target} could not run: {why}");
                report.skipped.push((target.to_string(), why));
            }
        }
        eprintln!(
            "cachier-bench: {target} done in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    let elapsed = started.elapsed();
    let load_after = load_average();

    let machine = machine(quick, &load_before, &load_after, elapsed.as_secs_f64());
    println!();
    for (k, v) in &machine {
        println!("{k}: {v}");
    }
    println!();
    print!("{}", report.table());
    println!(
        "\nratio = cost of the row named under 'ratio of' divided by the cost of this row: \
         above 1, cachier costs more than this raw operation.\n\
         Every figure is the median of {} interleaved rounds (p10 .. p90 shown).{}",
        ctx.plan.rounds,
        if quick {
            " --quick: fewer rounds, stores of at most 1e5 entries (1e4 for file and redis)."
        } else {
            ""
        }
    );
    let dir = output_dir();
    match report.write(&dir, &machine) {
        Ok(paths) => {
            for p in paths {
                println!("wrote {}", p.display());
            }
        }
        Err(e) => {
            eprintln!(
                "cachier-bench: cannot write results to {}: {e}",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A caller process of the file target's load measurement (see [`file_load`]).
fn caller_process(dir: PathBuf) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))
        .and_then(|runtime| runtime.block_on(file_load::caller(dir)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cachier-bench: a load caller failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `target/bench` of the workspace (or of `CARGO_TARGET_DIR`).
fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("bench")
}

/// A tag unique to this run: process id and a few random-enough bits of the clock.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{:06x}", std::process::id(), nanos & 0xff_ffff)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// What the numbers were measured on.
fn machine(quick: bool, before: &str, after: &str, secs: f64) -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.1} GiB", kb as f64 / (1u64 << 20) as f64))
        .unwrap_or_else(|| "unknown".into());
    vec![
        ("date (UTC)".into(), utc_now()),
        ("cpu".into(), cpu),
        ("cores".into(), cores),
        ("memory".into(), memory),
        ("os".into(), format!("{} {kernel}", std::env::consts::OS)),
        ("mode".into(), if quick { "quick" } else { "full" }.into()),
        ("load average before (1/5/15 min)".into(), before.into()),
        ("load average after".into(), after.into()),
        ("duration".into(), format!("{secs:.1} s")),
    ]
}

/// The current UTC time as `YYYY-MM-DD HH:MM`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}
