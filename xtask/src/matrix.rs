//! `cargo xtask test`: the test matrix.
//!
//! 1. Expand the requested targets ([`crate::targets`]); those whose crate does not exist are
//!    rows "not built yet" (an error only when named explicitly).
//! 2. Resolve the services the remaining targets need ([`crate::services`]) and pass their URLs
//!    to the tests in the `CACHIER_TEST_*_URL` variables; a target whose service cannot be had
//!    is a failed row.
//! 3. Build every target's tests once, with one package selection and feature set.
//! 4. Run each target ([`crate::runner`]); with `--timings`, run it again one test at a time.
//! 5. Check that no test namespace was left behind ([`crate::leftovers`]).
//! 6. Stop throwaway servers (unless `--keep`) and print the table.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cli::TestArgs;
use crate::interrupt;
use crate::leftovers::{self, LocalPlaces, Report, Snapshot};
use crate::process::secs;
use crate::runner::{self, Counts, Engine, RunOptions, Selection};
use crate::services::{self, Policy, Service, ServiceKind};
use crate::targets::{self, Target};

/// How one row of the matrix ended.
#[derive(Debug, Clone)]
pub enum Status {
    /// The tests ran; failed if any test failed or none ran.
    Ran(Counts),
    /// The crate does not exist; a failure only if the target was named explicitly.
    NotBuilt { required: bool },
    /// It could not run, for the reason given.
    Broken(String),
    /// Not run, because an earlier row failed under `--fail-fast`.
    NotRun,
    /// A step that is not a test suite (fmt, clippy, the leftover check) succeeded.
    Done,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub status: Status,
    pub wall: Option<Duration>,
    /// With `--timings`: the same tests run one at a time.
    pub serial_wall: Option<Duration>,
}

impl Row {
    fn new(name: &str, status: Status) -> Row {
        Row {
            name: name.to_owned(),
            status,
            wall: None,
            serial_wall: None,
        }
    }

    /// A row for a step that is not a test suite (fmt, clippy): passed or failed with a reason.
    pub fn step(name: &str, outcome: Result<(), String>, wall: Duration) -> Row {
        let status = match outcome {
            Ok(()) => Status::Done,
            Err(e) => Status::Broken(e),
        };
        Row {
            wall: Some(wall),
            ..Row::new(name, status)
        }
    }

    /// Whether this row makes the run fail.
    pub fn failed(&self) -> bool {
        match &self.status {
            Status::Ran(c) => c.failed > 0 || c.passed + c.skipped == 0,
            Status::NotBuilt { required } => *required,
            Status::Broken(_) => true,
            Status::NotRun => true,
            Status::Done => false,
        }
    }
}

/// Everything a matrix run produced, for `ci` to extend and print.
pub struct Outcome {
    pub rows: Vec<Row>,
    pub leftovers: Option<Report>,
    /// Throwaway servers still up (stopped when dropped, or kept).
    pub services: Vec<Service>,
    /// When all targets ran at once: how long that took, and one test at a time (`--timings`).
    pub totals: Option<(Duration, Option<Duration>)>,
}

/// `cargo xtask test`: runs the matrix and prints the table; returns whether everything passed.
pub fn test(args: &TestArgs) -> Result<bool, String> {
    let names = if args.targets.is_empty() {
        vec!["all".to_owned()]
    } else {
        args.targets.clone()
    };
    let whole_workspace = names.iter().any(|n| n == "all");
    let engine = Engine::detect();
    if args.list {
        return list(engine, &names, &args.run, whole_workspace);
    }
    let outcome = run(engine, &names, args, whole_workspace)?;
    let leftovers_clean = outcome.leftovers.as_ref().is_none_or(Report::clean);
    if !leftovers_clean {
        println!("leftovers: reported above; `cargo xtask ci` fails on them");
    }
    finish_services(outcome.services, args.keep);
    print_table(&outcome.rows, args.timings, outcome.totals);
    Ok(!outcome.rows.iter().any(Row::failed))
}

fn list(
    engine: Engine,
    names: &[String],
    options: &RunOptions,
    whole_workspace: bool,
) -> Result<bool, String> {
    let selected = targets::select(names)?;
    let existing: Vec<Target> = selected
        .iter()
        .map(|s| s.target)
        .filter(Target::exists)
        .collect();
    let selection = Selection::for_targets(&existing, whole_workspace);
    let mut ok = true;
    for s in &selected {
        if !s.target.exists() {
            println!("{}: not built yet (no {})", s.target.name, s.target.dir);
            ok &= !s.explicit;
            continue;
        }
        println!("== {}", s.target.name);
        if let Err(e) = runner::list(engine, &selection, &s.target, options) {
            println!("{e}");
            ok = false;
        }
    }
    Ok(ok)
}

/// Runs the matrix over `names` (see the module docs) and returns its rows, the leftover
/// report and the services, still running.
pub fn run(
    engine: Engine,
    names: &[String],
    args: &TestArgs,
    whole_workspace: bool,
) -> Result<Outcome, String> {
    let selected = targets::select(names)?;
    if engine == Engine::CargoTest {
        println!(
            "xtask: cargo-nextest is not installed; running `cargo test` instead (cargo install cargo-nextest)"
        );
    }
    let mut rows: BTreeMap<usize, Row> = BTreeMap::new();
    let mut runnable: Vec<(usize, Target)> = Vec::new();
    for (i, s) in selected.iter().enumerate() {
        if s.target.exists() {
            runnable.push((i, s.target));
        } else {
            rows.insert(
                i,
                Row::new(
                    s.target.name,
                    Status::NotBuilt {
                        required: s.explicit,
                    },
                ),
            );
        }
    }

    let (services, unavailable) = resolve_services(&runnable);
    let mut envs: Vec<(String, String)> = services
        .iter()
        .map(|s| (s.kind.env_var().to_owned(), s.url.clone()))
        .collect();
    let local = LocalPlaces::of_workspace();
    envs.push((
        "CACHIER_TEST_FILE_DIR".to_owned(),
        local.file_dir.display().to_string(),
    ));
    // Fault tests start private MongoDB wire servers of their own: they must find the one xtask
    // installed, whichever server the shared URL points at.
    if runnable
        .iter()
        .any(|(_, t)| t.services.contains(&ServiceKind::Mongo))
    {
        match services::mongo::server_binary() {
            Ok(bin) => envs.push(("CACHIER_NX27017_BIN".to_owned(), bin.display().to_string())),
            Err(e) => println!("== nx-27017 for the mongo fault tests: {e}"),
        }
    }
    // The same for the S3 outage tests and their private S3 servers.
    if runnable
        .iter()
        .any(|(_, t)| t.services.contains(&ServiceKind::S3))
    {
        match services::s3::server_binary() {
            Ok(bin) => envs.push((services::s3::BIN_VAR.to_owned(), bin.display().to_string())),
            Err(e) => println!("== the S3 server for the s3 fault tests: {e}"),
        }
    }
    runnable.retain(|(i, target)| {
        let missing: Vec<String> = target
            .services
            .iter()
            .filter_map(|k| unavailable.get(k).map(|e| format!("no {k} server: {e}")))
            .collect();
        if missing.is_empty() {
            return true;
        }
        rows.insert(
            *i,
            Row::new(target.name, Status::Broken(missing.join("; "))),
        );
        false
    });
    // The plugin tests load libraries only `cargo build` makes ([`crate::plugin`]).
    if let Some(at) = runnable.iter().position(|(_, t)| t.name == "plugin") {
        match crate::plugin::build_test_libraries() {
            Ok((env, took)) => {
                println!("== plugin libraries built in {}", secs(took));
                envs.push(env);
            }
            Err(e) => {
                let (i, target) = runnable.remove(at);
                rows.insert(i, Row::new(target.name, Status::Broken(e)));
            }
        }
    }

    let service_refs: Vec<&Service> = services.iter().collect();
    let before = Snapshot::take(&service_refs, &local);

    let targets: Vec<Target> = runnable.iter().map(|(_, t)| *t).collect();
    let mut selection = Selection::for_targets(&targets, whole_workspace);
    let mut per_target_builds = false;
    if !targets.is_empty() {
        println!(
            "== building the tests: cargo {}",
            selection.args().join(" ")
        );
        match runner::build(engine, &selection) {
            Ok(took) => println!("== built in {}", secs(took)),
            Err(e) => {
                println!("== {e}; building and running each target on its own instead");
                per_target_builds = true;
            }
        }
    }

    let mut totals = None;
    if per_target_builds || engine == Engine::CargoTest {
        run_one_by_one(
            engine,
            &mut selection,
            per_target_builds,
            runnable,
            args,
            &envs,
            &mut rows,
        );
    } else if !runnable.is_empty() {
        totals = Some(run_all_at_once(
            engine, &selection, runnable, args, &envs, &mut rows,
        ));
    }

    let after = match interrupt::received() {
        Some(_) => leftovers::settle(&before, &service_refs, &local, Duration::from_secs(10)),
        None => Snapshot::take(&service_refs, &local),
    };
    let mut report = Report::compare(&before, &after);
    if let Some(signal) = interrupt::received() {
        // The tests were cut short and could not clean up after themselves: do it for them.
        println!(
            "xtask: interrupted (signal {signal}); removing the {} test namespace(s) this run left",
            report.new.len()
        );
        let errors = leftovers::remove(&report.new, &service_refs, &local);
        for error in &errors {
            println!("xtask: could not remove {error}");
        }
        report = Report::compare(&before, &Snapshot::take(&service_refs, &local));
    }
    report.print();
    Ok(Outcome {
        rows: rows.into_values().collect(),
        leftovers: Some(report),
        services,
        totals,
    })
}

/// Every target in one run of the test runner: the matrix lasts as long as its slowest tests.
/// With `--timings`, all of them again one test at a time.
fn run_all_at_once(
    engine: Engine,
    selection: &Selection,
    runnable: Vec<(usize, Target)>,
    args: &TestArgs,
    envs: &[(String, String)],
    rows: &mut BTreeMap<usize, Row>,
) -> (Duration, Option<Duration>) {
    let targets: Vec<Target> = runnable.iter().map(|(_, t)| *t).collect();
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    let jobs = args.run.jobs.unwrap_or_else(runner::default_jobs);
    println!(
        "== {}: all at once, {jobs} tests at a time",
        names.join(" ")
    );
    let (results, total) = runner::run_together(engine, selection, &targets, &args.run, envs);
    let mut serial = None;
    let all_passed = results
        .iter()
        .all(|r| r.counts.as_ref().is_ok_and(|c| c.failed == 0));
    if args.timings && all_passed && interrupt::received().is_none() {
        println!("== again, one test at a time (--timings)");
        let one = RunOptions {
            jobs: Some(1),
            ..args.run.clone()
        };
        serial = Some(runner::run_together(
            engine, selection, &targets, &one, envs,
        ));
    }
    for (k, ((i, target), result)) in runnable.into_iter().zip(results).enumerate() {
        let mut row = Row::new(
            target.name,
            match result.counts {
                Ok(counts) => Status::Ran(counts),
                Err(e) => Status::Broken(e),
            },
        );
        row.wall = Some(result.wall);
        if let Some((again, _)) = &serial {
            let again = &again[k];
            // One test at a time, a target's time is that of its own tests.
            row.serial_wall = Some(again.counts.as_ref().map_or(again.wall, |c| c.busy));
            match &again.counts {
                Ok(c) if c.failed == 0 => {}
                Ok(c) => {
                    row.status = Status::Broken(format!(
                        "the serial run failed: {} failed serially",
                        c.failed
                    ))
                }
                Err(e) => row.status = Status::Broken(format!("the serial run failed: {e}")),
            }
        }
        rows.insert(i, row);
    }
    let line = match &serial {
        Some((_, serial_total)) => format!(
            "== all at once: {} (one at a time: {}, {:.2}x)",
            secs(total),
            secs(*serial_total),
            serial_total.as_secs_f64() / total.as_secs_f64().max(1e-9)
        ),
        None => format!("== all at once: {}", secs(total)),
    };
    println!("{line}");
    (total, serial.map(|(_, s)| s))
}

/// Each target in a run of its own, one after another (without nextest, or when the targets
/// could not be built together).
fn run_one_by_one(
    engine: Engine,
    selection: &mut Selection,
    per_target_builds: bool,
    runnable: Vec<(usize, Target)>,
    args: &TestArgs,
    envs: &[(String, String)],
    rows: &mut BTreeMap<usize, Row>,
) {
    let mut stop = false;
    for (i, target) in runnable {
        if stop || interrupt::received().is_some() {
            rows.insert(i, Row::new(target.name, Status::NotRun));
            continue;
        }
        if per_target_builds {
            *selection = Selection::for_targets(&[target], false);
        }
        println!("== {}: {}", target.name, target.filterset());
        let result = runner::run(engine, selection, &target, &args.run, envs);
        let mut row = Row::new(
            target.name,
            match result.counts {
                Ok(counts) => Status::Ran(counts),
                Err(e) => Status::Broken(e),
            },
        );
        row.wall = Some(result.wall);
        if args.timings && !row.failed() {
            println!("== {}: again, one test at a time (--timings)", target.name);
            let serial = RunOptions {
                jobs: Some(1),
                ..args.run.clone()
            };
            let again = runner::run(engine, selection, &target, &serial, envs);
            row.serial_wall = Some(again.wall);
            if let Err(e) = again.counts.and_then(|c| {
                if c.failed > 0 {
                    Err(format!("{} failed serially", c.failed))
                } else {
                    Ok(())
                }
            }) {
                row.status = Status::Broken(format!("the serial run failed: {e}"));
            }
        }
        stop = args.run.fail_fast && row.failed();
        rows.insert(i, row);
    }
}

/// Resolves every service the targets need, once each; returns those that answer and why the
/// others could not be had.
fn resolve_services(targets: &[(usize, Target)]) -> (Vec<Service>, BTreeMap<ServiceKind, String>) {
    let mut needed: Vec<ServiceKind> = targets
        .iter()
        .flat_map(|(_, t)| t.services.iter().copied())
        .collect();
    needed.sort();
    needed.dedup();
    let mut services = Vec::new();
    let mut unavailable = BTreeMap::new();
    for kind in needed {
        match services::resolve(kind, Policy { may_start: true }) {
            Ok(service) => {
                println!("== service {}", service.describe());
                services.push(service);
            }
            Err(e) => {
                println!("== service {kind}: {e}");
                unavailable.insert(kind, e);
            }
        }
    }
    (services, unavailable)
}

/// Stops throwaway servers, or with `keep` leaves them up and says how to reach and stop them.
pub fn finish_services(services: Vec<Service>, keep: bool) {
    for service in services {
        if keep {
            let url = service.url.clone();
            let env = service.kind.env_var();
            if let Some(stop) = service.keep() {
                // Quoted: an S3 URL holds `&`, which a shell would take for a background job.
                println!("kept: export {env}='{url}'   # stop with: {stop}");
            }
        } else if let Err(e) = service.stop() {
            println!("xtask: {e}");
        }
    }
}

/// Prints the matrix table and the closing totals line.
pub fn print_table(rows: &[Row], timings: bool, totals: Option<(Duration, Option<Duration>)>) {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    let mut header = format!(
        "{:<width$}  {:<14} {:>7} {:>7} {:>8} {:>9}",
        "target", "result", "passed", "failed", "skipped", "wall"
    );
    if timings {
        header.push_str(&format!(" {:>9} {:>9}", "serial", "speed-up"));
    }
    println!("\n{header}\n{}", "-".repeat(header.len()));
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut notes = Vec::new();
    for row in rows {
        let (result, counts) = match &row.status {
            Status::Ran(c) if row.failed() && c.failed == 0 => ("NO TESTS", Some(c)),
            Status::Ran(c) if c.failed > 0 => ("FAILED", Some(c)),
            Status::Ran(c) => ("ok", Some(c)),
            Status::NotBuilt { required: true } => ("NOT BUILT YET", None),
            Status::NotBuilt { required: false } => ("not built yet", None),
            Status::Broken(why) => {
                notes.push(format!("{}: {why}", row.name));
                ("FAILED", None)
            }
            Status::NotRun => ("not run", None),
            Status::Done => ("ok", None),
        };
        let cell = |n: Option<usize>| n.map_or("-".to_owned(), |n| n.to_string());
        let mut line = format!(
            "{:<width$}  {result:<14} {:>7} {:>7} {:>8} {:>9}",
            row.name,
            cell(counts.map(|c| c.passed)),
            cell(counts.map(|c| c.failed)),
            cell(counts.map(|c| c.skipped)),
            row.wall.map_or("-".to_owned(), secs),
        );
        if timings {
            let speedup = match (row.wall, row.serial_wall) {
                (Some(p), Some(s)) if p.as_secs_f64() > 0.0 => {
                    format!("{:.2}x", s.as_secs_f64() / p.as_secs_f64())
                }
                _ => "-".to_owned(),
            };
            line.push_str(&format!(
                " {:>9} {speedup:>9}",
                row.serial_wall.map_or("-".to_owned(), secs)
            ));
        }
        println!("{line}");
        if let Some(c) = counts {
            passed += c.passed;
            failed += c.failed;
            skipped += c.skipped;
            notes.extend(
                c.skip_reasons
                    .iter()
                    .map(|r| format!("{}: skipped {r}", row.name)),
            );
            if c.flaky > 0 {
                notes.push(format!(
                    "{}: {} flaky test(s) passed on a retry",
                    row.name, c.flaky
                ));
            }
        }
    }
    if let (Some((parallel, _)), false) = (totals, timings) {
        println!("all targets at once: {}", secs(parallel));
    }
    if timings {
        let total = |f: fn(&Row) -> Option<Duration>| rows.iter().filter_map(f).sum::<Duration>();
        // All at once, the whole run's time is not the sum of its rows.
        let (parallel, serial) = match totals {
            Some((parallel, Some(serial))) => (parallel, serial),
            _ => (total(|r| r.wall), total(|r| r.serial_wall)),
        };
        if serial > Duration::ZERO && parallel > Duration::ZERO {
            println!(
                "timings: parallel {} vs serial {}: {:.2}x faster in parallel",
                secs(parallel),
                secs(serial),
                serial.as_secs_f64() / parallel.as_secs_f64()
            );
        }
    }
    for note in notes {
        println!("  {note}");
    }
    let broken = rows
        .iter()
        .filter(|r| r.failed() && !matches!(r.status, Status::Ran(_)))
        .count();
    println!(
        "matrix: {passed} passed, {} failed, {skipped} skipped",
        failed + broken
    );
}
