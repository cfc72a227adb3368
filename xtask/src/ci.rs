//! `cargo xtask ci`: everything CI checks, in one command (`.ci/run` calls it).
//!
//! 1. `cargo fmt --all --check`
//! 2. `cargo clippy --workspace --all-targets --all-features -- -D warnings`
//! 3. the whole matrix (`test all`): every existing target, every service required (a target
//!    whose server cannot be found or started fails)
//! 4. `cargo test --doc --workspace --all-features` (nextest does not run doc tests)
//! 5. `cargo doc --no-deps --workspace --all-features` with rustdoc warnings denied
//! 6. the leftover check: a test namespace left behind fails the run
//!
//! Every step runs even when an earlier one failed, so one run shows everything; the tests and
//! the doc tests use the same `--workspace --all-features` selection, so nothing heavy is
//! compiled twice.

use std::process::Stdio;
use std::time::Instant;

use crate::cli::TestArgs;
use crate::matrix::{self, Row, Status};
use crate::runner::{self, Engine};
use crate::workspace;

/// Runs CI; returns whether everything passed.
pub fn ci(args: &TestArgs) -> Result<bool, String> {
    let mut rows = vec![
        cargo_step("fmt", &["fmt", "--all", "--check"], &[]),
        cargo_step(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        ),
    ];

    let outcome = matrix::run(Engine::detect(), &["all".to_owned()], args, true)?;
    let outcome_totals = outcome.totals;
    rows.extend(outcome.rows);
    let envs: Vec<(String, String)> = outcome
        .services
        .iter()
        .map(|s| (s.kind.env_var().to_owned(), s.url.clone()))
        .collect();
    rows.push(doc_tests(&envs));
    rows.push(cargo_step(
        "docs",
        &["doc", "--no-deps", "--workspace", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    ));

    let leftovers_clean = outcome.leftovers.as_ref().is_some_and(|r| r.clean());
    let leftovers = if leftovers_clean {
        Ok(())
    } else {
        Err("test namespaces left behind or not checkable (listed above)".to_owned())
    };
    rows.push(Row::step("leftovers", leftovers, std::time::Duration::ZERO));

    matrix::finish_services(outcome.services, args.keep);
    matrix::print_table(&rows, false, outcome_totals);
    Ok(!rows.iter().any(Row::failed))
}

/// Runs a cargo command, with extra environment variables, as one row of the table.
fn cargo_step(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Row {
    println!("== {name}: cargo {}", args.join(" "));
    let started = Instant::now();
    let status = workspace::cargo()
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .status();
    let outcome = match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("cargo {} failed ({s})", args[0])),
        Err(e) => Err(format!("cannot run cargo: {e}")),
    };
    Row::step(name, outcome, started.elapsed())
}

/// Runs the doc tests of every crate.
fn doc_tests(envs: &[(String, String)]) -> Row {
    let args = ["test", "--doc", "--workspace", "--all-features"];
    println!("== doc tests: cargo {}", args.join(" "));
    let started = Instant::now();
    let mut command = workspace::cargo();
    command.args(args).envs(envs.iter().map(|(k, v)| (k, v)));
    let status = match runner::run_and_read_libtest(&mut command) {
        Ok(counts) => Status::Ran(counts.unwrap_or_default()),
        Err(e) => Status::Broken(e),
    };
    Row {
        status,
        ..Row::step("doc tests", Ok(()), started.elapsed())
    }
}
