//! The command line, parsed by hand (the xtask keeps its dependencies to none).

use crate::runner::RunOptions;
use crate::services::ServiceKind;

/// The usage text printed by `cargo xtask help` and on a command-line error.
pub const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [TARGET...]        run test suites against real services (default: all)
                          targets: core macros memory file sql sql:sqlite sql:postgres
                                   sql:mysql redis redis:cluster mongo s3 plugin xtask all
  ci                      fmt check, clippy -D warnings, the whole matrix, doc tests,
                          leftover check (what .ci/run runs)
  services [SERVICE...]   find or start services (redis redis-cluster postgres mysql mongo s3;
                          default all)
                          and print their URLs; with --keep they stay up
  setup-mongo             install the nx-27017 MongoDB wire server into target/xtask/nx-venv
  setup-s3                install the moto S3 server into target/xtask/s3-venv
  bench [TARGET...] [--quick]
                          benchmarks against the raw client operations (targets: memory file
                          redis redis:cluster s3 plugin; default all); tables in
                          target/bench/results.{json,csv,md}
  help                    this text

test options:
  -j, --jobs N            run N tests at once (default: one per core)
  --serial                one test at a time (same as -j 1)
  --filter NAME           only tests whose name contains NAME (also: -- NAME)
  --list                  list the selected tests, run nothing
  --retries N             retry tests marked flaky (name ending in _flaky) up to N times
  --fail-fast             stop at the first failure
  --keep                  leave throwaway servers running and print how to stop them
  --timings               run the selection in parallel, then serially, and print the speed-up

services: CACHIER_TEST_{REDIS,POSTGRES,MYSQL,MONGO,S3}_URL name your own servers; else a server
on the standard local port is used (not for S3); else a throwaway one is started (and stopped
afterwards; a throwaway S3 server gets a bucket for the run).
CACHIER_TEST_REDIS_CLUSTER_URL (redis+cluster://host:port,host:port) names a Redis Cluster;
else a throwaway one of 3 primaries and 3 replicas is started on loopback.
";

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Test(TestArgs),
    Ci(TestArgs),
    Services { kinds: Vec<ServiceKind>, keep: bool },
    SetupMongo,
    SetupS3,
    Bench(Vec<String>),
    Help,
}

/// Options of `test` (and the subset `ci` takes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestArgs {
    pub targets: Vec<String>,
    pub run: RunOptions,
    pub list: bool,
    pub keep: bool,
    pub timings: bool,
}

/// Parses the arguments after `cargo xtask`.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    match command.as_str() {
        "test" => parse_test(rest).map(Command::Test),
        "ci" => {
            let parsed = parse_test(rest)?;
            if !parsed.targets.is_empty() || parsed.list || parsed.timings {
                return Err(
                    "ci runs the whole matrix: it takes only -j, --serial, --retries, --keep"
                        .into(),
                );
            }
            Ok(Command::Ci(parsed))
        }
        "services" => {
            let mut kinds = Vec::new();
            let mut keep = false;
            for arg in rest {
                match arg.as_str() {
                    "--keep" => keep = true,
                    name => kinds.push(
                        ServiceKind::ALL
                            .into_iter()
                            .find(|k| k.name() == name)
                            .ok_or_else(|| {
                                format!(
                                    "unknown service {name:?}: redis, redis-cluster, postgres, mysql, mongo or s3"
                                )
                            })?,
                    ),
                }
            }
            if kinds.is_empty() {
                kinds = ServiceKind::ALL.to_vec();
            }
            Ok(Command::Services { kinds, keep })
        }
        "setup-mongo" if rest.is_empty() => Ok(Command::SetupMongo),
        "setup-s3" if rest.is_empty() => Ok(Command::SetupS3),
        // The benchmark binary checks its own arguments.
        "bench" => Ok(Command::Bench(rest.to_vec())),
        "help" | "--help" | "-h" => Ok(Command::Help),
        other => Err(format!("unknown command {other:?}")),
    }
}

fn parse_test(args: &[String]) -> Result<TestArgs, String> {
    let mut parsed = TestArgs::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "-j" | "--jobs" => parsed.run.jobs = Some(number(&value(arg)?, arg)?.max(1)),
            "--serial" => parsed.run.jobs = Some(1),
            "--filter" => parsed.run.filter = Some(value(arg)?),
            "--retries" => {
                parsed.run.retries = u32::try_from(number(&value(arg)?, arg)?)
                    .map_err(|_| "--retries is too large".to_owned())?;
            }
            "--fail-fast" => parsed.run.fail_fast = true,
            "--list" => parsed.list = true,
            "--keep" => parsed.keep = true,
            "--timings" => parsed.timings = true,
            "--" => {
                let name = args.next().ok_or("-- needs a test name filter after it")?;
                parsed.run.filter = Some(name.clone());
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag:?}")),
            target => parsed.targets.push(target.to_owned()),
        }
    }
    if let Some(filter) = &parsed.run.filter
        && (filter.is_empty() || filter.contains(['(', ')', '/', ',', ' ']))
    {
        return Err(format!(
            "the filter {filter:?} must be a plain piece of a test name"
        ));
    }
    Ok(parsed)
}

fn number(text: &str, option: &str) -> Result<usize, String> {
    text.parse()
        .map_err(|_| format!("{option} takes a number, not {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn test_options_parse() {
        let Command::Test(t) = parse(&args(
            "test memory redis -j 3 --retries 2 --keep --timings --filter round_trip",
        ))
        .unwrap() else {
            panic!("not a test command");
        };
        assert_eq!(t.targets, ["memory", "redis"]);
        assert_eq!(t.run.jobs, Some(3));
        assert_eq!(t.run.retries, 2);
        assert_eq!(t.run.filter.as_deref(), Some("round_trip"));
        assert!(t.keep && t.timings && !t.list && !t.run.fail_fast);

        let Command::Test(t) =
            parse(&args("test sql --serial --list --fail-fast -- claim")).unwrap()
        else {
            panic!("not a test command");
        };
        assert_eq!((t.run.jobs, t.list, t.run.fail_fast), (Some(1), true, true));
        assert_eq!(t.run.filter.as_deref(), Some("claim"));
    }

    #[test]
    fn bench_passes_its_arguments_on() {
        assert_eq!(
            parse(&args("bench memory --quick")).unwrap(),
            Command::Bench(vec!["memory".into(), "--quick".into()])
        );
    }

    #[test]
    fn mistakes_are_refused() {
        for bad in [
            "test -j",
            "test -j many",
            "test --frobnicate",
            "ci memory",
            "services mssql",
            "test --filter a(b)",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn services_default_to_all() {
        assert_eq!(
            parse(&args("services --keep")).unwrap(),
            Command::Services {
                kinds: ServiceKind::ALL.to_vec(),
                keep: true
            }
        );
        assert_eq!(parse(&[]).unwrap(), Command::Help);
    }
}
