//! Running one target's tests with cargo-nextest (each test its own process) or, when nextest
//! is not installed, `cargo test`; and reading the counts back from their output.
//!
//! All targets of one invocation are built with the same package selection and features
//! ([`Selection`]), so the heavy crates compile once, and each target then runs only its own
//! tests (a nextest filterset). Counts come from nextest's `Summary` line (or libtest's
//! `test result:` lines); conformance checks that a backend skipped (they pass and print
//! `conformance: SKIPPED <check>: <reason>`) are moved from "passed" to "skipped".
//!
//! Flaky tests: a test whose name ends in `_flaky` is retried `--retries N` times; no other
//! test is ever retried. This is set in a nextest tool configuration the xtask writes to
//! `target/xtask/nextest.toml` (profile `xtask`; a repository `.config/nextest.toml` still
//! takes precedence where it says otherwise).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::targets::Target;
use crate::workspace;

/// The marker the conformance suite prints for a check it skipped.
const SKIP_MARKER: &str = "conformance: SKIPPED ";

/// The name suffix that marks a test as flaky (the only tests `--retries` applies to).
pub const FLAKY_SUFFIX: &str = "_flaky";

/// Which test runner is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Nextest,
    CargoTest,
}

impl Engine {
    /// cargo-nextest when `cargo nextest` answers, else `cargo test`. Setting
    /// `CACHIER_XTASK_RUNNER=cargo-test` chooses `cargo test` even when nextest is installed.
    pub fn detect() -> Engine {
        if std::env::var("CACHIER_XTASK_RUNNER").is_ok_and(|r| r == "cargo-test") {
            return Engine::CargoTest;
        }
        let nextest = workspace::cargo()
            .args(["nextest", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if nextest.is_ok_and(|s| s.success()) {
            Engine::Nextest
        } else {
            Engine::CargoTest
        }
    }
}

/// The packages and features every cargo call of one invocation uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// `--workspace --all-features`: what `all` and `ci` build.
    Workspace,
    /// `-p` for each package, `--features package/feature` for their features.
    Packages {
        packages: Vec<&'static str>,
        features: Vec<String>,
    },
}

impl Selection {
    /// The selection that builds every one of `targets` with the features all of them need.
    pub fn for_targets(targets: &[Target], whole_workspace: bool) -> Selection {
        if whole_workspace {
            return Selection::Workspace;
        }
        let mut packages = Vec::new();
        let mut features = Vec::new();
        for target in targets {
            if !packages.contains(&target.package) {
                packages.push(target.package);
            }
            for feature in target.features {
                let qualified = format!("{}/{feature}", target.package);
                if !features.contains(&qualified) {
                    features.push(qualified);
                }
            }
        }
        Selection::Packages { packages, features }
    }

    /// The cargo arguments.
    pub fn args(&self) -> Vec<String> {
        match self {
            Selection::Workspace => vec!["--workspace".into(), "--all-features".into()],
            Selection::Packages { packages, features } => {
                let mut args = Vec::new();
                for package in packages {
                    args.extend(["-p".to_owned(), (*package).to_owned()]);
                }
                if !features.is_empty() {
                    args.extend(["--features".to_owned(), features.join(",")]);
                }
                args
            }
        }
    }
}

/// How tests are run (from the command line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Tests run at once (`-j N`); `None` is the runner's default (one per core).
    pub jobs: Option<usize>,
    /// Only tests whose name contains this.
    pub filter: Option<String>,
    /// Retries for tests marked flaky.
    pub retries: u32,
    /// Stop at the first failure.
    pub fail_fast: bool,
}

/// What one run of a target's tests gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Tests that passed only on a retry.
    pub flaky: usize,
    /// `check: reason` of each skipped conformance check.
    pub skip_reasons: Vec<String>,
    /// How long the tests took by the runner's own clock, when it says.
    pub elapsed: Option<Duration>,
    /// The tests' own durations added up (from a JUnit report): a target's time when its tests
    /// run one at a time among others'.
    pub busy: Duration,
}

/// The result of running one target.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The counts, or why there are none (it did not build, the runner crashed, ...).
    pub counts: Result<Counts, String>,
    pub wall: Duration,
}

/// Builds the test binaries of `selection` without running them; returns how long it took.
pub fn build(engine: Engine, selection: &Selection) -> Result<Duration, String> {
    let started = Instant::now();
    let mut command = workspace::cargo();
    match engine {
        Engine::Nextest => command
            .args(["nextest", "run", "--no-run"])
            .args(selection.args()),
        Engine::CargoTest => command.args(["test", "--no-run"]).args(selection.args()),
    };
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(started.elapsed())
    } else {
        Err(format!("building the tests failed ({status})"))
    }
}

/// Prints the tests of `target` without running them.
pub fn list(
    engine: Engine,
    selection: &Selection,
    target: &Target,
    options: &RunOptions,
) -> Result<(), String> {
    let mut command = workspace::cargo();
    match engine {
        Engine::Nextest => {
            command
                .args(["nextest", "list"])
                .args(selection.args())
                .args(["-E", &filterset(target, options)]);
        }
        Engine::CargoTest => {
            command
                .args(["test", "-p", target.package])
                .args(selection_features(selection, target))
                .args(target.cargo_test_args);
            command.arg("--").args(name_filter(options)).arg("--list");
        }
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("listing the {} tests failed", target.name))
    }
}

/// Runs the tests of `target` with `jobs` at once and reads the counts.
pub fn run(
    engine: Engine,
    selection: &Selection,
    target: &Target,
    options: &RunOptions,
    envs: &[(String, String)],
) -> RunResult {
    let started = Instant::now();
    let counts = match engine {
        Engine::Nextest => run_nextest(selection, target, options, envs),
        Engine::CargoTest => run_cargo_test(selection, target, options, envs),
    };
    // nextest reports the time its tests took, without cargo's start-up and freshness checks;
    // prefer it.
    let reported = counts.as_ref().ok().and_then(|c| c.elapsed);
    RunResult {
        wall: reported.unwrap_or_else(|| started.elapsed()),
        counts,
    }
}

/// Runs the tests of every one of `targets` at the same time — with nextest, one run whose
/// filterset is the union of theirs, so the whole matrix lasts as long as its slowest tests,
/// not the sum of its targets — and reads each target's counts and wall time (from the start
/// of the run to the end of its last test) back from the run's JUnit report. Without nextest,
/// the targets run one after another. Returns the results in the order of `targets` and the
/// time the whole run took.
pub fn run_together(
    engine: Engine,
    selection: &Selection,
    targets: &[Target],
    options: &RunOptions,
    envs: &[(String, String)],
) -> (Vec<RunResult>, Duration) {
    let started = Instant::now();
    if engine == Engine::CargoTest || targets.len() < 2 {
        let results: Vec<RunResult> = targets
            .iter()
            .map(|target| run(engine, selection, target, options, envs))
            .collect();
        return (results, started.elapsed());
    }
    let union = targets
        .iter()
        .map(|t| format!("({})", t.filterset()))
        .collect::<Vec<_>>()
        .join(" | ");
    let filter = match &options.filter {
        Some(name) => format!("({union}) & test(~{name})"),
        None => union,
    };
    let outcome = run_nextest_filtered(selection, &filter, options, envs).and_then(|output| {
        let junit = std::fs::read_to_string(junit_path())
            .map_err(|e| format!("cannot read the JUnit report: {e}"))?;
        Ok((output, junit))
    });
    let elapsed = started.elapsed();
    let (summary, junit) = match outcome {
        Ok(pair) => pair,
        Err(e) => {
            let results = targets
                .iter()
                .map(|_| RunResult {
                    counts: Err(e.clone()),
                    wall: elapsed,
                })
                .collect();
            return (results, elapsed);
        }
    };
    let report = Junit::parse(&junit);
    let results = targets
        .iter()
        .map(|target| {
            let counts = report.counts_of(|binary| target.owns_binary(binary));
            RunResult {
                wall: counts.elapsed.unwrap_or_default(),
                counts: Ok(counts),
            }
        })
        .collect();
    (results, summary.elapsed.unwrap_or(elapsed))
}

/// Where the `xtask` profile writes its JUnit report: nextest's store, `target/nextest` under
/// the workspace root whatever the cargo target directory is.
fn junit_path() -> std::path::PathBuf {
    workspace::root()
        .join("target")
        .join("nextest")
        .join("xtask")
        .join("junit.xml")
}

/// Runs nextest over `filter`; returns the counts of its closing summary.
fn run_nextest_filtered(
    selection: &Selection,
    filter: &str,
    options: &RunOptions,
    envs: &[(String, String)],
) -> Result<Counts, String> {
    let config = write_tool_config(options.retries)?;
    let _ = std::fs::remove_file(junit_path());
    let mut command = workspace::cargo();
    command
        .args(["nextest", "run", "--profile", "xtask", "--no-tests", "warn"])
        .arg("--tool-config-file")
        .arg(format!("xtask:{}", config.display()))
        .args(selection.args())
        .args(["-E", filter])
        .arg(if options.fail_fast {
            "--fail-fast"
        } else {
            "--no-fail-fast"
        })
        .args(["-j", &options.jobs.unwrap_or_else(default_jobs).to_string()]);
    command.envs(envs.iter().map(|(k, v)| (k, v)));
    let (_, output) = run_teed(&mut command)?;
    parse_nextest_summary(&output).ok_or_else(|| {
        "nextest printed no summary (the tests did not build or the run was cut short)".to_owned()
    })
}

/// Tests run at once by default: most tests wait on servers, timers and child processes rather
/// than on the processor, so several per core ([`TESTS_PER_CORE`]).
pub fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    cores * TESTS_PER_CORE
}

/// How many tests run at once per core by default (measured: see the README).
pub const TESTS_PER_CORE: usize = 8;

/// The test cases of a nextest JUnit report.
#[derive(Debug, Default)]
struct Junit {
    cases: Vec<JunitCase>,
}

#[derive(Debug)]
struct JunitCase {
    /// The nextest binary id (`package` or `package::name`).
    binary: String,
    failed: bool,
    flaky: bool,
    /// `check: reason` when a conformance check was skipped.
    skipped: Option<String>,
    /// Seconds from the start of the run to the end of this test.
    end: Option<f64>,
    /// How long the test took, in seconds.
    took: f64,
}

impl Junit {
    fn parse(xml: &str) -> Junit {
        let start = xml
            .split_once("<testsuites ")
            .and_then(|(_, rest)| attribute(rest, "timestamp"))
            .and_then(iso_seconds);
        let cases = xml
            .split("<testcase ")
            .skip(1)
            .map(|case| {
                let body = case.split("</testcase>").next().unwrap_or(case);
                let tag = body.split('>').next().unwrap_or_default();
                let took = attribute(tag, "time")
                    .and_then(|t| t.parse::<f64>().ok())
                    .unwrap_or(0.0);
                let end = match (attribute(tag, "timestamp").and_then(iso_seconds), start) {
                    (Some(at), Some(start)) => Some(at + took - start),
                    _ => None,
                };
                let out = body.split("<system-out>").nth(1).unwrap_or_default();
                JunitCase {
                    binary: attribute(tag, "classname").unwrap_or_default().to_owned(),
                    failed: body.contains("<failure") || body.contains("<error"),
                    flaky: body.contains("<flakyFailure") || body.contains("<flakyError"),
                    skipped: out.split_once(SKIP_MARKER).map(|(_, reason)| {
                        reason.lines().next().unwrap_or_default().trim().to_owned()
                    }),
                    end,
                    took,
                }
            })
            .collect();
        Junit { cases }
    }

    /// The counts of the cases whose binary `owns` accepts.
    fn counts_of(&self, owns: impl Fn(&str) -> bool) -> Counts {
        let mut counts = Counts::default();
        let mut last_end = None::<f64>;
        for case in self.cases.iter().filter(|c| owns(&c.binary)) {
            if case.failed {
                counts.failed += 1;
            } else if let Some(reason) = &case.skipped {
                counts.skipped += 1;
                counts.skip_reasons.push(reason.clone());
            } else {
                counts.passed += 1;
            }
            counts.flaky += usize::from(case.flaky && !case.failed);
            counts.busy += Duration::from_secs_f64(case.took.max(0.0));
            if let Some(end) = case.end {
                last_end = Some(last_end.map_or(end, |l| l.max(end)));
            }
        }
        counts.elapsed = last_end.map(|s| Duration::from_millis((s.max(0.0) * 1e3).round() as u64));
        counts
    }
}

/// The value of `name="..."` in an XML start tag's text.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let rest = &tag[start..];
    Some(&rest[..rest.find('"')?])
}

/// Seconds since the Unix epoch of an RFC 3339 time such as `2026-12-01T12:47:59.375+00:00`.
fn iso_seconds(text: &str) -> Option<f64> {
    let (date, time) = text.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let zone_at = time.find(['+', '-', 'Z']).unwrap_or(time.len());
    let (clock, zone) = time.split_at(zone_at);
    let mut hms = clock.split(':');
    let hours: f64 = hms.next()?.parse().ok()?;
    let minutes: f64 = hms.next()?.parse().ok()?;
    let seconds: f64 = hms.next()?.parse().ok()?;
    let offset = match zone.chars().next() {
        Some(sign @ ('+' | '-')) => {
            let (h, m) = zone[1..].split_once(':')?;
            let minutes = h.parse::<f64>().ok()? * 60.0 + m.parse::<f64>().ok()?;
            if sign == '+' {
                minutes * 60.0
            } else {
                -minutes * 60.0
            }
        }
        _ => 0.0,
    };
    // Days since the epoch of the civil date (proleptic Gregorian calendar, 400-year eras).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hours * 3600.0 + minutes * 60.0 + seconds - offset)
}

fn filterset(target: &Target, options: &RunOptions) -> String {
    match &options.filter {
        Some(name) => format!("({}) & test(~{name})", target.filterset()),
        None => target.filterset(),
    }
}

fn run_nextest(
    selection: &Selection,
    target: &Target,
    options: &RunOptions,
    envs: &[(String, String)],
) -> Result<Counts, String> {
    let config = write_tool_config(options.retries)?;
    let mut command = workspace::cargo();
    command
        .args(["nextest", "run", "--profile", "xtask", "--no-tests", "warn"])
        .arg("--tool-config-file")
        .arg(format!("xtask:{}", config.display()))
        .args(selection.args())
        .args(["-E", &filterset(target, options)])
        .arg(if options.fail_fast {
            "--fail-fast"
        } else {
            "--no-fail-fast"
        });
    command.args(["-j", &options.jobs.unwrap_or_else(default_jobs).to_string()]);
    command.envs(envs.iter().map(|(k, v)| (k, v)));
    let (_, output) = run_teed(&mut command)?;
    let mut counts = parse_nextest_summary(&output).ok_or_else(|| {
        "nextest printed no summary (the tests did not build or the run was cut short)".to_owned()
    })?;
    let junit = junit_path();
    let reasons = std::fs::read_to_string(&junit)
        .map(|x| skip_reasons(&x))
        .unwrap_or_default();
    counts.move_skipped(reasons);
    Ok(counts)
}

fn run_cargo_test(
    selection: &Selection,
    target: &Target,
    options: &RunOptions,
    envs: &[(String, String)],
) -> Result<Counts, String> {
    if options.retries > 0 {
        eprintln!(
            "xtask: --retries needs cargo-nextest (cargo install cargo-nextest); not retrying"
        );
    }
    let mut command = workspace::cargo();
    command
        .args(["test", "-p", target.package])
        .args(selection_features(selection, target))
        .args(target.cargo_test_args);
    if !options.fail_fast {
        command.arg("--no-fail-fast");
    }
    command
        .arg("--")
        .args(name_filter(options))
        .arg("--nocapture");
    if let Some(jobs) = options.jobs {
        command.arg(format!("--test-threads={jobs}"));
    }
    command.envs(envs.iter().map(|(k, v)| (k, v)));
    let (_, output) = run_teed(&mut command)?;
    let mut counts = parse_libtest_results(&output)
        .ok_or_else(|| "cargo test printed no results (the tests did not build)".to_owned())?;
    let reasons = output
        .lines()
        .filter_map(|l| l.split_once(SKIP_MARKER).map(|(_, r)| r.trim().to_owned()))
        .collect::<std::collections::BTreeSet<_>>();
    counts.move_skipped(reasons.into_iter().collect());
    Ok(counts)
}

/// `--features` for `cargo test -p package`: the features the selection gives that package.
fn selection_features(selection: &Selection, target: &Target) -> Vec<String> {
    match selection {
        Selection::Workspace => vec!["--all-features".into()],
        Selection::Packages { features, .. } => {
            let prefix = format!("{}/", target.package);
            let own: Vec<&str> = features
                .iter()
                .filter_map(|f| f.strip_prefix(&prefix))
                .collect();
            if own.is_empty() {
                Vec::new()
            } else {
                vec!["--features".into(), own.join(",")]
            }
        }
    }
}

/// libtest's name filter: the user's, if any.
fn name_filter(options: &RunOptions) -> Vec<String> {
    options.filter.iter().cloned().collect()
}

/// Tests of one SQL server that run at once (see [`write_tool_config`]).
const DATABASE_TESTS_AT_ONCE: usize = 6;
/// Tests of the MongoDB wire server that run at once (see [`write_tool_config`]).
const MONGO_TESTS_AT_ONCE: usize = 4;

/// Writes the nextest tool configuration: profile `xtask` with retries for flaky tests only,
/// a per-test time limit, a JUnit report that keeps the output of passing tests, and a cap on
/// the tests of one SQL server at once.
fn write_tool_config(retries: u32) -> Result<std::path::PathBuf, String> {
    let path = workspace::xtask_dir().join("nextest.toml");
    let text = format!(
        "# Written by cargo xtask on every run.\n\
         [profile.xtask]\n\
         retries = 0\n\
         slow-timeout = {{ period = \"60s\", terminate-after = 10 }}\n\
         [profile.xtask.junit]\n\
         path = \"junit.xml\"\n\
         store-success-output = true\n\
         [[profile.xtask.overrides]]\n\
         filter = 'test(/{FLAKY_SUFFIX}$/)'\n\
         retries = {retries}\n\
         # Tests of one database server share its connection limit (100 on a default\n\
         # PostgreSQL, 151 on MariaDB): each test process opens a pool of its own.\n\
         [test-groups]\n\
         '@tool:xtask:postgres' = {{ max-threads = {DATABASE_TESTS_AT_ONCE} }}\n\
         '@tool:xtask:mysql' = {{ max-threads = {DATABASE_TESTS_AT_ONCE} }}\n\
         # The MongoDB wire server answers one request at a time: more tests at once only\n\
         # lengthen its queue.\n\
         '@tool:xtask:mongo' = {{ max-threads = {MONGO_TESTS_AT_ONCE} }}\n\
         [[profile.xtask.overrides]]\n\
         filter = 'package(=cachier-sql) & binary(~postgres)'\n\
         test-group = '@tool:xtask:postgres'\n\
         [[profile.xtask.overrides]]\n\
         filter = 'package(=cachier-sql) & binary(~mysql)'\n\
         test-group = '@tool:xtask:mysql'\n\
         [[profile.xtask.overrides]]\n\
         filter = 'package(=cachier-mongo)'\n\
         test-group = '@tool:xtask:mongo'\n\
         # The longest tests start first, so the others run beside them instead of after.\n\
         [[profile.xtask.overrides]]\n\
         filter = 'test(=a_value_at_the_sqlite_limit_is_stored) | test(=misuse_is_a_compile_error_that_says_what_to_write) | test(=a_killed_primary_fails_over_and_callers_keep_their_results)'\n\
         priority = 100\n"
    );
    std::fs::create_dir_all(workspace::xtask_dir())
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

impl Counts {
    /// Moves skipped conformance checks from "passed" to "skipped".
    fn move_skipped(&mut self, reasons: Vec<String>) {
        let moved = reasons.len().min(self.passed);
        self.passed -= moved;
        self.skipped += moved;
        self.skip_reasons = reasons;
    }
}

/// Reads nextest's closing line, e.g.
/// `Summary [   0.457s] 3 tests run: 2 passed (1 flaky), 1 failed, 1 skipped`.
/// Everything that is neither passed nor skipped (failed, timed out, ...) counts as failed.
/// nextest's own "skipped" (tests outside the filterset) is not reported.
pub fn parse_nextest_summary(output: &str) -> Option<Counts> {
    let line = output
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("Summary ["))?;
    let (clock, rest) = line.split_once("] ")?;
    let seconds = clock.split_once('[')?.1.trim().strip_suffix('s')?;
    let mut counts = Counts {
        elapsed: seconds.parse().ok().map(Duration::from_secs_f64),
        ..Counts::default()
    };
    let Some((_, tallies)) = rest.split_once(": ") else {
        return rest.contains("0 tests run").then_some(counts);
    };
    for part in tallies.split(", ") {
        let (number, what) = part.trim().split_once(' ')?;
        let number: usize = number.parse().ok()?;
        if what.starts_with("passed") {
            counts.passed = number;
            if let Some(flaky) = what
                .strip_prefix("passed (")
                .and_then(|f| f.split(' ').next())
            {
                counts.flaky = flaky.parse().unwrap_or(0);
            }
        } else if what.starts_with("skipped") {
            continue;
        } else {
            counts.failed += number;
        }
    }
    Some(counts)
}

/// Adds up libtest's `test result: ok. 2 passed; 1 failed; 1 ignored; ...` lines.
pub fn parse_libtest_results(output: &str) -> Option<Counts> {
    let mut counts = None::<Counts>;
    for line in output.lines().filter(|l| l.starts_with("test result: ")) {
        let total = counts.get_or_insert_with(Counts::default);
        for part in line.split(['.', ';']) {
            let mut words = part.split_whitespace();
            let (Some(number), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<usize>() else {
                continue;
            };
            match what {
                "passed" => total.passed += number,
                "failed" => total.failed += number,
                _ => {}
            }
        }
    }
    counts
}

/// The reasons of the conformance checks skipped, from nextest's JUnit report.
fn skip_reasons(junit: &str) -> Vec<String> {
    let mut reasons = Vec::new();
    for case in junit.split("<testcase ").skip(1) {
        let case = case.split("</testcase>").next().unwrap_or(case);
        let out = case.split("<system-out>").nth(1).unwrap_or_default();
        if let Some((_, reason)) = out.split_once(SKIP_MARKER) {
            reasons.push(reason.lines().next().unwrap_or_default().trim().to_owned());
        }
    }
    reasons
}

/// Runs a libtest command (such as `cargo test --doc`), copying its output, and adds up its
/// results; `None` when it ran no test binary.
pub fn run_and_read_libtest(command: &mut Command) -> Result<Option<Counts>, String> {
    let (status, output) = run_teed(command)?;
    match parse_libtest_results(&output) {
        Some(counts) => Ok(Some(counts)),
        None if status.success() => Ok(None),
        None => Err(format!(
            "cargo test failed without running tests ({status})"
        )),
    }
}

/// Runs `command`, copying its output to ours as it comes; returns its exit status and output.
fn run_teed(command: &mut Command) -> Result<(std::process::ExitStatus, String), String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forwarder = {
        let (pid, finished) = (child.id(), Arc::clone(&finished));
        std::thread::spawn(move || {
            crate::interrupt::forward_while(pid, || {
                !finished.load(std::sync::atomic::Ordering::SeqCst)
            })
        })
    };
    let collected = Arc::new(Mutex::new(String::new()));
    let pumps: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .enumerate()
    .map(|(i, stream)| {
        let collected = Arc::clone(&collected);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if i == 0 {
                    let _ = writeln!(std::io::stdout(), "{line}");
                } else {
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
                let mut all = collected.lock().expect("no pump panics");
                all.push_str(&line);
                all.push('\n');
            }
        })
    })
    .collect();
    for pump in pumps {
        let _ = pump.join();
    }
    let status = child.wait();
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = forwarder.join();
    let status = status.map_err(|e| format!("cargo did not finish: {e}"))?;
    let text = collected.lock().expect("no pump panics").clone();
    Ok((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nextest_summaries_are_read() {
        let out = "  FAIL x\n────────────\n     Summary [   0.457s] 3 tests run: 2 passed (1 flaky), 1 failed, 10 skipped\n   FLAKY 2/3\n";
        let counts = parse_nextest_summary(out).unwrap();
        assert_eq!(
            (counts.passed, counts.failed, counts.skipped, counts.flaky),
            (2, 1, 0, 1)
        );

        let out = "Summary [ 61.0s] 5 tests run: 3 passed, 1 failed, 1 timed out, 0 skipped";
        let counts = parse_nextest_summary(out).unwrap();
        assert_eq!((counts.passed, counts.failed), (3, 2));

        let counts = parse_nextest_summary("Summary [   0.000s] 0 tests run, 4 skipped").unwrap();
        assert_eq!((counts.passed, counts.failed), (0, 0));
        let counts = parse_nextest_summary("  Summary [  63.025s] 9 tests run: 9 passed").unwrap();
        assert_eq!(counts.elapsed, Some(Duration::from_millis(63_025)));

        assert_eq!(parse_nextest_summary("error: could not compile `x`"), None);
    }

    #[test]
    fn times_are_read_with_their_offset() {
        let utc = iso_seconds("2026-12-01T12:47:59.375+00:00").unwrap();
        assert_eq!(utc, 1_796_129_279.375);
        assert_eq!(iso_seconds("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(iso_seconds("2026-12-01T14:47:59.375+02:00"), Some(utc));
        assert_eq!(iso_seconds("yesterday"), None);
    }

    #[test]
    fn one_report_is_split_by_target() {
        let junit = r#"<testsuites name="nextest-run" timestamp="2026-12-01T12:00:00.000+00:00" time="9.0">
            <testsuite name="cachier-sql::conformance_sqlite">
              <testcase name="a" classname="cachier-sql::conformance_sqlite" timestamp="2026-12-01T12:00:01.000+00:00" time="2.500"><system-out>ok</system-out></testcase>
              <testcase name="b" classname="cachier-sql::conformance_sqlite" timestamp="2026-12-01T12:00:00.000+00:00" time="0.100"><failure message="x"/></testcase>
            </testsuite>
            <testsuite name="cachier-memory::conformance">
              <testcase name="c" classname="cachier-memory::conformance" timestamp="2026-12-01T12:00:00.000+00:00" time="0.200"><system-out>conformance: SKIPPED c: in-process
</system-out></testcase>
              <testcase name="d" classname="cachier-memory::conformance" timestamp="2026-12-01T12:00:00.500+00:00" time="0.100"><flakyFailure/><system-out>ok</system-out></testcase>
            </testsuite></testsuites>"#;
        let report = Junit::parse(junit);
        let sql = report.counts_of(|b| b.starts_with("cachier-sql"));
        assert_eq!((sql.passed, sql.failed, sql.skipped), (1, 1, 0));
        assert_eq!(sql.elapsed, Some(Duration::from_millis(3500)));
        let memory = report.counts_of(|b| b.starts_with("cachier-memory"));
        assert_eq!((memory.passed, memory.skipped, memory.flaky), (1, 1, 1));
        assert_eq!(memory.skip_reasons, ["c: in-process"]);
        assert_eq!(memory.elapsed, Some(Duration::from_millis(600)));
        assert_eq!(memory.busy, Duration::from_millis(300));
        assert_eq!(report.counts_of(|_| false), Counts::default());
    }

    #[test]
    fn libtest_results_are_added_up() {
        let out = "test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s\n\
                   test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.0s\n";
        let counts = parse_libtest_results(out).unwrap();
        assert_eq!((counts.passed, counts.failed), (5, 2));
        assert_eq!(parse_libtest_results("error[E0277]: nope"), None);
    }

    #[test]
    fn skipped_checks_are_found_in_the_junit_report_and_moved() {
        let junit = r#"<testsuites><testsuite name="cachier-memory::conformance">
            <testcase name="cachier_conformance::cross_process_single_flight" classname="x" time="0.01">
              <system-out>conformance: SKIPPED cross_process_single_flight: in-process backend
</system-out></testcase>
            <testcase name="cachier_conformance::round_trip" classname="x" time="0.01"><system-out>ok</system-out></testcase>
            </testsuite></testsuites>"#;
        let reasons = skip_reasons(junit);
        assert_eq!(
            reasons,
            vec!["cross_process_single_flight: in-process backend"]
        );
        let mut counts = Counts {
            passed: 2,
            ..Counts::default()
        };
        counts.move_skipped(reasons);
        assert_eq!((counts.passed, counts.skipped), (1, 1));
    }

    #[test]
    fn one_selection_builds_every_target_with_the_union_of_features() {
        let sql = |name| {
            *crate::targets::TARGETS
                .iter()
                .find(|t| t.name == name)
                .unwrap()
        };
        let selection =
            Selection::for_targets(&[sql("sql:sqlite"), sql("sql:mysql"), sql("redis")], false);
        assert_eq!(
            selection.args(),
            [
                "-p",
                "cachier-sql",
                "-p",
                "cachier-redis",
                "--features",
                "cachier-sql/sqlite,cachier-sql/mysql"
            ]
        );
        assert_eq!(
            Selection::for_targets(&[], true).args(),
            ["--workspace", "--all-features"]
        );
    }
}
