//! `cargo xtask`: the project's test matrix, its services and its CI entry point.
//!
//! Contributors run one backend's suite against a real server with `cargo xtask test redis`
//! (or `memory`, `file`, `sql`, `sql:postgres`, `mongo`, `all`, ...); CI runs `cargo xtask ci`.
//! The pieces, in the order a run uses them:
//!
//! - [`cli`]: the command line (hand-parsed; the xtask has no dependencies);
//! - [`targets`]: which package, features, tests and services each target means;
//! - [`services`]: finding or starting Redis, PostgreSQL, MariaDB, the MongoDB wire server and the S3 server,
//!   and speaking just enough of each protocol to probe it and to find test data in it;
//! - [`runner`]: running a target's tests with cargo-nextest (or `cargo test`) and reading the
//!   counts back;
//! - [`leftovers`]: checking that no test namespace survived the run;
//! - [`plugin`]: building the plugin libraries the `plugin` target's tests load;
//! - [`matrix`]: `cargo xtask test`, tying these together and printing the table;
//! - [`ci`]: `cargo xtask ci`;
//! - [`bench`](mod@bench): `cargo xtask bench`, which runs the `cachier-bench` package in release mode.

mod bench;
mod ci;
mod cli;
mod interrupt;
mod leftovers;
mod matrix;
mod plugin;
mod process;
mod runner;
mod services;
mod targets;
mod workspace;

use std::process::ExitCode;

use cli::Command;
use services::{Policy, ServiceKind};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("cargo xtask: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    // An interrupted run still removes its test namespaces and stops its servers.
    interrupt::install();
    let outcome = match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            Ok(true)
        }
        Command::Test(args) => matrix::test(&args),
        Command::Ci(args) => ci::ci(&args),
        Command::Services { kinds, keep } => show_services(&kinds, keep),
        Command::Bench(args) => bench::bench(&args),
        Command::SetupMongo => services::mongo::setup().map(|server| {
            println!("nx-27017 is installed: {}", server.display());
            true
        }),
        Command::SetupS3 => services::s3::setup().map(|server| {
            println!("the S3 server (moto) is installed: {}", server.display());
            true
        }),
    };
    if let Some(signal) = interrupt::received() {
        eprintln!("cargo xtask: interrupted by signal {signal}");
        return ExitCode::from(interrupt::exit_code(signal));
    }
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cargo xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask services`: finds (or starts) each service and prints its URL; throwaway servers
/// are stopped again unless `keep`.
fn show_services(kinds: &[ServiceKind], keep: bool) -> Result<bool, String> {
    let mut ok = true;
    let mut found = Vec::new();
    for &kind in kinds {
        match services::resolve(kind, Policy { may_start: true }) {
            Ok(service) => {
                println!("{}", service.describe());
                found.push(service);
            }
            Err(e) => {
                println!("{kind:<8} unavailable: {e}");
                ok = false;
            }
        }
    }
    matrix::finish_services(found, keep);
    Ok(ok)
}
