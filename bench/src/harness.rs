//! The measuring harness: calibrated batches, interleaved rounds, medians and spread.
//!
//! Every comparison measures its variants (the cachier call and its baselines) in *rounds*: in
//! each round every variant runs one timed batch, one after the other. A batch is as many
//! operations as fit in the plan's sample time (found by a calibration run, which also warms
//! caches, connections and allocators up). The per-operation time of a batch is one sample.
//!
//! Because the variants alternate round by round, a burst of load from another process hits
//! all of them alike, and the ratio of two variants *within one round* is a paired sample that
//! such noise mostly cancels out of. Ratios are reported as the median of these paired ratios,
//! with their 10th and 90th percentiles.
//!
//! The timed code is expanded in place by the [`compare!`](crate::compare) macro (an `async`
//! expression is awaited inside the loop), so the harness adds one `Instant::now()` per batch
//! and nothing per operation: no boxed futures, no closures to call through.

use std::time::Duration;

/// How long and how often to measure.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Rounds whose samples are kept.
    pub rounds: usize,
    /// Rounds run first and thrown away.
    pub warmup_rounds: usize,
    /// Target duration of one batch.
    pub sample_time: Duration,
    /// Longest calibration (warm-up) run per variant.
    pub calibration_time: Duration,
    /// Duration of one throughput run.
    pub throughput_time: Duration,
    /// Throughput runs per variant (alternating between variants).
    pub throughput_rounds: usize,
}

impl Plan {
    /// The plan of `--quick`: enough rounds for a stable median, a fraction of the time.
    pub fn quick() -> Self {
        Plan {
            rounds: 15,
            warmup_rounds: 2,
            sample_time: Duration::from_millis(4),
            calibration_time: Duration::from_millis(30),
            throughput_time: Duration::from_millis(300),
            throughput_rounds: 3,
        }
    }

    /// The full plan.
    pub fn full() -> Self {
        Plan {
            rounds: 41,
            warmup_rounds: 3,
            sample_time: Duration::from_millis(15),
            calibration_time: Duration::from_millis(150),
            throughput_time: Duration::from_millis(1000),
            throughput_rounds: 5,
        }
    }

    /// The batch size for an operation whose mean cost the calibration found to be `per_op`.
    pub fn batch_for(&self, per_op: Duration) -> u64 {
        let per_op = per_op.as_nanos().max(1);
        (self.sample_time.as_nanos() / per_op).clamp(1, 10_000_000) as u64
    }
}

/// Median and spread of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median.
    pub median: f64,
    /// The 10th percentile.
    pub p10: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// How many samples.
    pub n: usize,
}

impl Summary {
    /// Summarizes samples (at least one).
    pub fn of(samples: &[f64]) -> Summary {
        assert!(!samples.is_empty(), "a summary needs at least one sample");
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Summary {
            median: percentile(&sorted, 0.5),
            p10: percentile(&sorted, 0.1),
            p90: percentile(&sorted, 0.9),
            n: sorted.len(),
        }
    }

    /// The summary of a single value (a measurement made once, such as a wall time).
    pub fn single(value: f64) -> Summary {
        Summary::of(&[value])
    }
}

/// Linear interpolation between the closest ranks of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// The samples of one variant of a comparison, in nanoseconds per operation, round by round.
#[derive(Debug, Clone)]
pub struct Series {
    /// The variant's name.
    pub name: &'static str,
    /// One sample per kept round.
    pub samples: Vec<f64>,
}

impl Series {
    /// The median and spread of this variant.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.samples)
    }

    /// The paired ratios `self / baseline`, round by round.
    pub fn ratio_to(&self, baseline: &Series) -> Summary {
        let ratios: Vec<f64> = self
            .samples
            .iter()
            .zip(&baseline.samples)
            .map(|(a, b)| a / b)
            .collect();
        Summary::of(&ratios)
    }
}

/// Measures variants side by side, interleaved round by round; evaluates to `Vec<Series>` in
/// the order given. Usable in async code: a variant's expression may `.await`.
///
/// ```ignore
/// let series = compare!(plan, {
///     "cachier" => f.call(&1u64, || async { v() }).await?,
///     "moka" => moka.get(&1u64),
/// });
/// ```
#[macro_export]
macro_rules! compare {
    ($plan:expr, { $( $name:literal => $body:expr ),+ $(,)? }) => {{
        let plan: $crate::harness::Plan = $plan;
        let mut batches: Vec<u64> = Vec::new();
        // Calibration, which is also the warm-up: run each variant for up to the calibration
        // time (at least 3 times) and size its batches from the mean cost seen.
        $(
            {
                let started = std::time::Instant::now();
                let mut count: u32 = 0;
                while count < 3 || started.elapsed() < plan.calibration_time {
                    let _ = std::hint::black_box($body);
                    count += 1;
                    if count >= 1_000_000 {
                        break;
                    }
                }
                batches.push(plan.batch_for(started.elapsed() / count));
            }
        )+
        let mut series: Vec<$crate::harness::Series> = vec![
            $( $crate::harness::Series { name: $name, samples: Vec::new() } ),+
        ];
        for round in 0..plan.warmup_rounds + plan.rounds {
            let mut variant = 0usize;
            $(
                {
                    let batch = batches[variant];
                    let started = std::time::Instant::now();
                    for _ in 0..batch {
                        let _ = std::hint::black_box($body);
                    }
                    let per_op = started.elapsed().as_nanos() as f64 / batch as f64;
                    if round >= plan.warmup_rounds {
                        series[variant].samples.push(per_op);
                    }
                    variant += 1;
                }
            )+
            let _ = variant;
        }
        series
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(s.median, 3.0);
        assert!((s.p10 - 1.4).abs() < 1e-9);
        assert!((s.p90 - 4.6).abs() < 1e-9);
        assert_eq!(s.n, 5);
    }

    #[test]
    fn paired_ratios() {
        let a = Series {
            name: "a",
            samples: vec![2.0, 4.0, 6.0],
        };
        let b = Series {
            name: "b",
            samples: vec![1.0, 2.0, 3.0],
        };
        assert_eq!(a.ratio_to(&b).median, 2.0);
    }

    #[test]
    fn compare_runs_every_variant() {
        let plan = Plan {
            rounds: 3,
            warmup_rounds: 1,
            sample_time: Duration::from_micros(50),
            calibration_time: Duration::from_micros(50),
            throughput_time: Duration::from_millis(1),
            throughput_rounds: 1,
        };
        let mut x = 0u64;
        let series = crate::compare!(plan, {
            "add" => { x = x.wrapping_add(1); x },
            "mul" => { x = x.wrapping_mul(3); x },
        });
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].name, "add");
        assert!(series.iter().all(|s| s.samples.len() == 3));
    }
}
