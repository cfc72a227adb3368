//! The front end's near cache on Redis, end to end, with two processes: this test (process A,
//! with the near cache on) and a child process B (this binary again, started with the ignored
//! `child_writer` test) that changes, removes and clears values on A's server when A asks.
//! Once A has heard of B's change, A's next call never returns the old value; a restarted
//! server empties A's near cache. Each test runs its own throwaway `redis-server`, so it can
//! count the commands A sends and restart the server.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cachier_core::{Cachier, Core, Function, NearCache, Watching};
use cachier_redis::{Config, RedisCore};
use common::recorder::{Recorder, Report};
use common::{PrivateServer, admin, func_id, unique_namespace};

const SOON: Duration = Duration::from_secs(10);
const CHILD_URL: &str = "CACHIER_REDIS_TEST_NEAR_URL";
const CHILD_NAMESPACE: &str = "CACHIER_REDIS_TEST_NEAR_NAMESPACE";

fn micros_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64
}

/// Process B: reads commands from stdin, one a line (`set ARG VALUE`, `remove ARG`, `clear`,
/// `quit`), runs each through its own `Cachier` (no near cache) and answers
/// `ok <start µs> <end µs>`.
#[test]
#[ignore = "child side of the tests in this file; started by them"]
fn child_writer() {
    let (Ok(url), Ok(namespace)) = (std::env::var(CHILD_URL), std::env::var(CHILD_NAMESPACE))
    else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let core = Arc::new(
            RedisCore::connect(Config::from_url(&url).unwrap())
                .await
                .unwrap(),
        );
        let cache = Cachier::builder(core)
            .namespace(namespace)
            .unwrap()
            .strict(true)
            .build();
        let f = cache.function(func_id("near"));
        let stdin = std::io::stdin();
        let mut out = std::io::stdout();
        println!("ready");
        for line in stdin.lock().lines() {
            let line = line.unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            let start = micros_since_epoch(SystemTime::now());
            match words[..] {
                ["set", arg, value] => {
                    f.precache(&arg.parse::<u64>().unwrap(), &value.to_owned())
                        .await
                        .unwrap();
                }
                ["remove", arg] => {
                    f.remove(&arg.parse::<u64>().unwrap()).await.unwrap();
                }
                ["clear"] => {
                    f.clear().await.unwrap();
                }
                ["quit"] => return,
                _ => panic!("unknown command {line:?}"),
            }
            let end = micros_since_epoch(SystemTime::now());
            writeln!(out, "ok {start} {end}").unwrap();
            out.flush().unwrap();
        }
    });
}

/// Process B, driven from here.
struct Writer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Writer {
    fn start(url: &str, namespace: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_writer", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_URL, url)
            .env(CHILD_NAMESPACE, namespace)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the test binary starts itself");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut writer = Writer {
            child,
            stdin,
            stdout,
        };
        writer.expect_line("ready");
        writer
    }

    fn expect_line(&mut self, prefix: &str) -> String {
        loop {
            let mut line = String::new();
            let read = self
                .stdout
                .read_line(&mut line)
                .expect("the child's output");
            assert!(read > 0, "the child ended before {prefix:?}");
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Runs one command in B; returns when it is done, with B's start and end times (µs).
    fn run(&mut self, command: &str) -> (i64, i64) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let line = self.expect_line("ok ");
        let fields: Vec<i64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap())
            .collect();
        (fields[0], fields[1])
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Process A: a cache with the near cache on, and a recorder on the same core that says when
/// reports have arrived (the near cache registered first, so it hears each one first).
struct Reader {
    core: Arc<RedisCore>,
    f: Function,
    recorder: Arc<Recorder>,
    _cache: Cachier,
}

impl Reader {
    async fn start(url: &str, namespace: &cachier_core::Namespace) -> Self {
        let core = Arc::new(
            RedisCore::connect(Config::from_url(url).unwrap())
                .await
                .unwrap(),
        );
        let cache = Cachier::builder(core.clone())
            .with_namespace(namespace.clone())
            .near_cache(NearCache::new())
            .build();
        assert_eq!(cache.near_cache_coherence(), Some(Watching::Asynchronous));
        let recorder = Recorder::new();
        core.watch(namespace, recorder.weak());
        recorder.wait_live(SOON).await;
        Reader {
            core,
            f: cache.function(func_id("near")),
            recorder,
            _cache: cache,
        }
    }

    async fn call(&self, arg: u64, computed: &str) -> String {
        let computed = computed.to_owned();
        self.f
            .call(&arg, move || async move { computed })
            .await
            .unwrap()
    }

    /// How many `Entry` reports of `f(arg)` have arrived.
    fn reports_of(&self, arg: u64) -> usize {
        let key = self.f.key(&arg).unwrap();
        self.recorder
            .reports()
            .iter()
            .filter(|r| **r == Report::Entry(key.clone()))
            .count()
    }

    /// Waits until more than `seen` reports of `f(arg)` have arrived; returns when the first
    /// new one did (wall clock, µs).
    async fn wait_report(&self, arg: u64, seen: usize) -> i64 {
        let key = self.f.key(&arg).unwrap();
        let deadline = Instant::now() + SOON;
        loop {
            let arrivals: Vec<_> = self
                .recorder
                .arrivals()
                .into_iter()
                .filter(|a| a.report == Report::Entry(key.clone()))
                .collect();
            if arrivals.len() > seen {
                return micros_since_epoch(arrivals[seen].wall);
            }
            assert!(Instant::now() < deadline, "no report of f({arg})");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

/// Calls `f(arg)` until a call is served near (no command reaches the server), expecting
/// `value` throughout. A value A stored itself is read back once first: the server's report of
/// A's own write drops the copy made from it.
async fn settle_near(a: &Reader, server: &PrivateServer, arg: u64, value: &str) {
    for _ in 0..20 {
        take_commands(server);
        assert_eq!(a.call(arg, "computed").await, value);
        if take_commands(server).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("f({arg}) is never served from the near cache");
}

/// Data commands the server ran since the last call, by name.
fn take_commands(server: &PrivateServer) -> HashMap<String, u64> {
    let mut admin = admin(&server.url());
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin)
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .filter(|(name, _)| name != "info" && !name.starts_with("config") && name != "ping")
        .collect()
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_changes_removes_and_clears_and_the_next_call_sees_it() {
    let server = PrivateServer::start();
    let ns = unique_namespace("near_xproc");
    let a = Reader::start(&server.url(), &ns).await;
    let mut b = Writer::start(&server.url(), ns.as_str());

    // A computes and keeps a near copy; its hits then cost Redis nothing.
    assert_eq!(a.call(1, "v0").await, "v0");
    settle_near(&a, &server, 1, "v0").await;
    for _ in 0..50 {
        assert_eq!(a.call(1, "computed").await, "v0");
    }
    assert_eq!(
        take_commands(&server),
        HashMap::new(),
        "near hits send no command"
    );

    // B changes the value, again and again: once A heard of it, A's next call has it.
    let mut from_start = Vec::new();
    let mut from_end = Vec::new();
    for i in 1..=200u64 {
        let seen = a.reports_of(1);
        let (start, end) = b.run(&format!("set 1 v{i}"));
        let reported = a.wait_report(1, seen).await;
        assert_eq!(a.call(1, "computed").await, format!("v{i}"), "round {i}");
        // ... and keeps it near: the next calls need no round trip.
        assert_eq!(a.call(1, "computed").await, format!("v{i}"));
        from_start.push(reported - start);
        from_end.push(reported - end);
    }
    from_start.sort_unstable();
    from_end.sort_unstable();
    println!(
        "near cache invalidation, 200 changes in process B: report in A after B's precache \
         began: median {} µs, p99 {} µs; after it returned: median {} µs, p99 {} µs",
        percentile(&from_start, 0.5),
        percentile(&from_start, 0.99),
        percentile(&from_end, 0.5),
        percentile(&from_end, 0.99),
    );

    // B removes it: A computes again.
    let seen = a.reports_of(1);
    b.run("remove 1");
    a.wait_report(1, seen).await;
    assert_eq!(a.call(1, "after remove").await, "after remove");

    // B clears the function: every value of it, near in A, is gone.
    for arg in 2..5u64 {
        assert_eq!(a.call(arg, &format!("a{arg}")).await, format!("a{arg}"));
        assert_eq!(a.call(arg, "computed").await, format!("a{arg}"));
    }
    let seen: Vec<usize> = (1..5u64).map(|arg| a.reports_of(arg)).collect();
    b.run("clear");
    for (arg, seen) in (1..5u64).zip(seen) {
        a.wait_report(arg, seen).await;
        assert_eq!(
            a.call(arg, "after clear").await,
            "after clear",
            "f({arg}) after B's clear"
        );
    }
    drop(b);
    let _ = a.core.clear_namespace(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_empties_the_near_cache() {
    let mut server = PrivateServer::start();
    let ns = unique_namespace("near_restart");
    let a = Reader::start(&server.url(), &ns).await;
    assert_eq!(a.call(1, "before").await, "before");
    settle_near(&a, &server, 1, "before").await;

    // The restarted server is empty (no persistence): the old value exists nowhere but in A's
    // near cache, which the lost tracking connection empties.
    server.restart();
    a.recorder
        .wait_until("Lost, then Resumed", SOON, |r| {
            r.ends_with(&[Report::Lost, Report::Resumed])
        })
        .await;
    assert_eq!(a.call(1, "after restart").await, "after restart");

    // While the server is down, nothing stale is served either.
    a.recorder.clear();
    server.stop();
    a.recorder.wait_for(&Report::Lost, SOON).await;
    assert_eq!(a.call(1, "while down").await, "while down");
    server.restart();
    a.recorder.wait_for(&Report::Resumed, SOON).await;
}
