//! What every target measures the same way: values, the cold-key stampede, hit throughput
//! under concurrency, and the checks that keep a measurement honest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cachier_core::{Cachier, FuncId, Function, Stats};

use crate::harness::{Plan, Summary};
use crate::report::{Report, Row, Unit};

/// Errors of the benchmark: what failed, in words.
pub type BenchResult<T> = Result<T, String>;

/// Adds what was being done to an error.
pub trait Context<T> {
    /// Turns the error into text prefixed with `what`.
    fn ctx(self, what: &str) -> BenchResult<T>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> BenchResult<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Value sizes of the hit measurements.
pub const HIT_SIZES: [(usize, &str); 3] =
    [(100, "100 B"), (64 << 10, "64 KiB"), (8 << 20, "8 MiB")];

/// Concurrent callers on one cold key.
pub const STAMPEDE_CALLERS: usize = 64;
/// How long the function of the cold-key measurement runs.
pub const STAMPEDE_COMPUTE: Duration = Duration::from_millis(50);

/// Concurrency levels of the hit-throughput measurement.
pub const THROUGHPUT_TASKS: [usize; 3] = [1, 8, 64];

/// How many distinct keys a scale measurement cycles through (drawn at random from the stored
/// entries), so that lookups are spread over the store without precomputing a path per entry.
pub const SCALE_PROBES: usize = 1024;

/// Everything a target needs to know about the run.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// `--quick`.
    pub quick: bool,
    /// How long and how often to measure.
    pub plan: Plan,
    /// A unique tag of this run, used in namespaces, directories and Redis key names.
    pub run_id: String,
}

impl Ctx {
    /// The entry counts of the scale measurement for a target (`large`: memory and file, which
    /// go up to 1e6 in a full run).
    pub fn scale_counts(&self, large: bool) -> Vec<usize> {
        match (self.quick, large) {
            (true, true) => vec![1_000, 10_000, 100_000],
            (true, false) => vec![1_000, 10_000],
            (false, true) => vec![1_000, 100_000, 1_000_000],
            (false, false) => vec![1_000, 100_000],
        }
    }
}

/// A deterministic, incompressible value of `len` bytes (xorshift), the same in every run.
pub fn value_of(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// A value type the hit measurements store: the same length in bytes, two ways of encoding it.
/// `Vec<u8>` goes through serde as a sequence (bincode decodes it element by element);
/// `String` as one length-prefixed byte string (decoded as one slice plus UTF-8 validation).
pub trait Payload:
    serde::Serialize + serde::de::DeserializeOwned + Clone + Default + PartialEq + Send + Sync + 'static
{
    /// How the table names this type.
    const NAME: &'static str;
    /// A deterministic value of `len` bytes.
    fn make(len: usize) -> Self;
}

impl Payload for Vec<u8> {
    const NAME: &'static str = "Vec<u8>";
    fn make(len: usize) -> Self {
        value_of(len)
    }
}

impl Payload for String {
    const NAME: &'static str = "String";
    fn make(len: usize) -> Self {
        value_of(len)
            .into_iter()
            .map(|b| char::from(b'a' + b % 26))
            .collect()
    }
}

/// `count` distinct indices below `n`, in a fixed pseudo-random order.
pub fn probes(n: usize, count: usize) -> Vec<u64> {
    let count = count.min(n);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut seen = std::collections::HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let i = state % n as u64;
        if seen.insert(i) {
            out.push(i);
        }
    }
    out
}

/// A function id for a benchmark case.
pub fn func(name: &str) -> FuncId {
    FuncId::new(format!("cachier_bench::{name}")).expect("benchmark function ids are valid")
}

/// Fails unless a hit measurement really measured hits: no computation, no backend error.
pub fn check_hits_only(case: &str, before: &Stats, after: &Stats) -> Result<(), String> {
    if after.computations != before.computations || after.backend_errors != before.backend_errors {
        return Err(format!(
            "{case}: expected only hits, but {} computations and {} backend errors happened",
            after.computations - before.computations,
            after.backend_errors - before.backend_errors
        ));
    }
    Ok(())
}

/// 64 callers at once on one cold key whose function takes 50 ms: how many computations (must
/// be 1) and how long until every caller has the value. One new key per round.
pub async fn stampede(
    target: &'static str,
    cache: &Cachier,
    rounds: usize,
    report: &mut Report,
) -> Result<bool, String> {
    let f = cache.function(func("stampede"));
    let mut walls = Vec::new();
    let mut worst = 0u64;
    let mut callers_ok = true;
    for round in 0..rounds {
        let computations = Arc::new(AtomicU64::new(0));
        let barrier = Arc::new(tokio::sync::Barrier::new(STAMPEDE_CALLERS));
        let mut tasks = Vec::new();
        for _ in 0..STAMPEDE_CALLERS {
            let (f, computations, barrier) = (f.clone(), computations.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let value = f
                    .call(&(round as u64), move || async move {
                        computations.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(STAMPEDE_COMPUTE).await;
                        value_of(100)
                    })
                    .await;
                (started, Instant::now(), value)
            }));
        }
        let mut first_start: Option<Instant> = None;
        let mut last_end: Option<Instant> = None;
        for task in tasks {
            let (started, ended, value) = task.await.map_err(|e| e.to_string())?;
            let value = value.map_err(|e| format!("{target} stampede: {e}"))?;
            callers_ok &= value == value_of(100);
            first_start = Some(first_start.map_or(started, |s| s.min(started)));
            last_end = Some(last_end.map_or(ended, |e| e.max(ended)));
        }
        if let (Some(s), Some(e)) = (first_start, last_end) {
            walls.push(e.duration_since(s).as_secs_f64() * 1e3);
        }
        worst = worst.max(computations.load(Ordering::SeqCst));
    }
    let ok = worst == 1 && callers_ok;
    let case = format!("{STAMPEDE_CALLERS} callers, cold key, 50 ms fn");
    report.push(Row {
        target,
        case: case.clone(),
        variant: "computations (worst round)".into(),
        unit: Unit::Count,
        value: Summary::single(worst as f64),
        baseline: None,
        ratio: None,
        goal: None,
        note: format!(
            "{rounds} rounds; must be 1: {}",
            if ok { "OK" } else { "FAILED" }
        ),
    });
    report.push(Row {
        target,
        case,
        variant: "wall time, first call to last return".into(),
        unit: Unit::Millis,
        value: Summary::of(&walls),
        baseline: None,
        ratio: None,
        goal: None,
        note: "the function alone takes 50 ms".into(),
    });
    Ok(ok)
}

/// Runs `$tasks` tasks doing `$body` (with `$s` a per-task clone of `$state`) for `$dur`;
/// evaluates to operations per second. Every task yields to the runtime every 32 operations,
/// so operations that complete without ever waiting still share the workers among all tasks
/// (the same for cachier and its baseline).
#[macro_export]
macro_rules! throughput {
    ($tasks:expr, $dur:expr, $state:expr, |$s:ident| $body:expr) => {{
        let tasks: usize = $tasks;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(tasks + 1));
        let mut handles = Vec::with_capacity(tasks);
        for _ in 0..tasks {
            let $s = $state.clone();
            let (stop, barrier) = (stop.clone(), barrier.clone());
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut done = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::hint::black_box($body);
                    done += 1;
                    if done % 32 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                done
            }));
        }
        barrier.wait().await;
        let started = std::time::Instant::now();
        tokio::time::sleep($dur).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = 0u64;
        for handle in handles {
            total += handle.await.unwrap_or(0);
        }
        total as f64 / started.elapsed().as_secs_f64()
    }};
}

/// Adds the rows of one throughput level: cachier's operations per second and each
/// baseline's, with the paired cost ratio (baseline ops/s ÷ cachier ops/s, round by round).
pub fn add_throughput(
    report: &mut Report,
    target: &'static str,
    tasks: usize,
    cachier: &[f64],
    baselines: &[(&str, Vec<f64>)],
) {
    let case = format!(
        "hit 100 B throughput, {tasks} task{}",
        if tasks == 1 { "" } else { "s" }
    );
    report.push(Row {
        target,
        case: case.clone(),
        variant: "cachier call".into(),
        unit: Unit::OpsPerSec,
        value: Summary::of(cachier),
        baseline: None,
        ratio: None,
        goal: None,
        note: String::new(),
    });
    for (name, raw) in baselines {
        let ratios: Vec<f64> = cachier.iter().zip(raw).map(|(c, r)| r / c).collect();
        report.push(Row {
            target,
            case: case.clone(),
            variant: name.to_string(),
            unit: Unit::OpsPerSec,
            value: Summary::of(raw),
            baseline: Some("cachier call".into()),
            ratio: Some(Summary::of(&ratios)),
            goal: None,
            note: "ratio = this ops/s / cachier ops/s".into(),
        });
    }
}

/// Stores the same encoded value under `keys` through `core.set`, from `workers` tasks at once.
pub async fn populate(
    core: std::sync::Arc<dyn cachier_core::Core>,
    keys: Vec<cachier_core::Key>,
    sealed: &[u8],
    workers: usize,
) -> BenchResult<()> {
    let now = cachier_core::Timestamp::now();
    let chunk = keys.len().div_ceil(workers.max(1)).max(1);
    let mut tasks = Vec::new();
    let mut keys = keys;
    while !keys.is_empty() {
        let rest = keys.split_off(chunk.min(keys.len()));
        let mine = std::mem::replace(&mut keys, rest);
        let core = core.clone();
        let sealed = sealed.to_vec();
        tasks.push(tokio::spawn(async move {
            for key in mine {
                core.set(&key, cachier_core::Bytes::from(sealed.clone()), now)
                    .await
                    .ctx("populate")?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.ctx("populate task")??;
    }
    Ok(())
}

/// Stores `value` for `args` through the front end and checks it reads back as a hit.
pub async fn store_and_check<T: Payload>(f: &Function, args: u64, value: &T) -> Result<(), String> {
    let v = value.clone();
    let stored: T = f
        .call(&args, move || async move { v })
        .await
        .map_err(|e| e.to_string())?;
    let before = f.stats();
    let again: T = f
        .call(&args, || async { T::default() })
        .await
        .map_err(|e| e.to_string())?;
    check_hits_only("store", &before, &f.stats())?;
    if stored != *value || again != *value {
        return Err("the stored value did not read back".into());
    }
    Ok(())
}

/// The stored envelope in a raw read of an entry that starts with a `header_len`-byte header of
/// the backend's, in the read's own buffer (as the backend hands it to the front end).
pub fn after_header(read: impl Into<bytes::Bytes>, header_len: usize) -> bytes::Bytes {
    let mut bytes = read.into();
    bytes::Buf::advance(&mut bytes, header_len);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_distinct_and_in_range() {
        let p = probes(1000, 100);
        assert_eq!(p.len(), 100);
        assert!(p.iter().all(|&i| i < 1000));
        let set: std::collections::HashSet<_> = p.iter().collect();
        assert_eq!(set.len(), 100);
        assert_eq!(probes(10, 100).len(), 10);
    }

    #[test]
    fn values_are_deterministic() {
        assert_eq!(value_of(100), value_of(100));
        assert_eq!(value_of(100).len(), 100);
    }
}
