//! Results: rows, the terminal table, and the machine-readable files under `target/bench/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::harness::{Series, Summary};

/// What a row's numbers measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Nanoseconds per operation (lower is better).
    NsPerOp,
    /// Operations per second (higher is better).
    OpsPerSec,
    /// Milliseconds of wall time.
    Millis,
    /// A count (computations of a cold key).
    Count,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::NsPerOp => "ns/op",
            Unit::OpsPerSec => "ops/s",
            Unit::Millis => "ms",
            Unit::Count => "count",
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Row {
    /// `memory`, `file` or `redis`.
    pub target: &'static str,
    /// What was measured, e.g. `hit 100 B`.
    pub case: String,
    /// Who was measured, e.g. `cachier` or `moka get`.
    pub variant: String,
    /// The unit of `value`.
    pub unit: Unit,
    /// Median and spread.
    pub value: Summary,
    /// The variant this row's ratio is taken against, if any (usually the cachier call, on
    /// the row of a baseline).
    pub baseline: Option<String>,
    /// The cost of `baseline` divided by the cost of this row's variant (for throughput: this
    /// row's operations per second divided by `baseline`'s): above 1 means cachier costs more
    /// than this raw operation. Paired round by round; median and spread of the pairs.
    pub ratio: Option<Summary>,
    /// The ratio the project aims for on this row, if any.
    pub goal: Option<f64>,
    /// Anything a reader needs to interpret the row.
    pub note: String,
}

/// Everything a run produced.
#[derive(Default)]
pub struct Report {
    /// The rows, in measuring order.
    pub rows: Vec<Row>,
    /// Targets that could not run, with the reason.
    pub skipped: Vec<(String, String)>,
}

impl Report {
    /// Adds the rows of a latency comparison whose first series is the subject (the cachier
    /// call): every other series gets the paired ratio subject / itself, and the goal given for
    /// its index, if any.
    pub fn add_comparison(
        &mut self,
        target: &'static str,
        case: &str,
        series: &[Series],
        goals: &[(usize, f64)],
        note: &str,
    ) {
        let subject = &series[0];
        for (i, s) in series.iter().enumerate() {
            let compared = i > 0;
            self.rows.push(Row {
                target,
                case: case.to_string(),
                variant: s.name.to_string(),
                unit: Unit::NsPerOp,
                value: s.summary(),
                baseline: compared.then(|| subject.name.to_string()),
                ratio: compared.then(|| subject.ratio_to(s)),
                goal: goals.iter().find(|(g, _)| *g == i).map(|(_, g)| *g),
                note: note.to_string(),
            });
        }
    }

    /// Adds one row.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let headers = [
            "target",
            "case",
            "variant",
            "median",
            "p10 .. p90",
            "unit",
            "ratio (p10 .. p90)",
            "ratio of",
            "goal",
        ];
        let cells: Vec<[String; 9]> = self
            .rows
            .iter()
            .map(|r| {
                let ratio = r.ratio.map_or(String::new(), |q| {
                    format!("{:.2}x ({:.2} .. {:.2})", q.median, q.p10, q.p90)
                });
                let goal = r.goal.map_or(String::new(), |g| {
                    let met = r.ratio.is_some_and(|q| q.median <= g);
                    format!("<= {g}x {}", if met { "met" } else { "MISSED" })
                });
                [
                    r.target.to_string(),
                    r.case.clone(),
                    r.variant.clone(),
                    fmt_num(r.value.median, r.unit),
                    if r.value.n > 1 {
                        format!(
                            "{} .. {}",
                            fmt_num(r.value.p10, r.unit),
                            fmt_num(r.value.p90, r.unit)
                        )
                    } else {
                        String::new()
                    },
                    r.unit.as_str().to_string(),
                    ratio,
                    r.baseline
                        .as_ref()
                        .map_or(String::new(), |b| format!("{b} / this")),
                    goal,
                ]
            })
            .collect();
        let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, row: &[String]| {
            for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
                let right = (3..=4).contains(&i);
                if right {
                    let _ = write!(out, "{c:>w$}  ");
                } else {
                    let _ = write!(out, "{c:<w$}  ");
                }
            }
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('\n');
        };
        line(
            &mut out,
            &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        );
        line(
            &mut out,
            &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
        );
        let mut last_case: Option<(&str, &str)> = None;
        for (row, r) in cells.iter().zip(&self.rows) {
            if last_case.is_some_and(|c| c != (r.target, r.case.as_str())) {
                out.push('\n');
            }
            last_case = Some((r.target, r.case.as_str()));
            line(&mut out, row);
        }
        for (target, why) in &self.skipped {
            let _ = writeln!(out, "\n{target}: skipped ({why})");
        }
        out
    }

    /// A Markdown table of the rows that have a ratio, for the README: the cachier figure,
    /// the baseline's, and cachier / baseline.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| target | case | cachier | baseline | baseline figure | cachier / baseline (p10..p90) | goal |\n|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let (Some(ratio), Some(subject)) = (r.ratio, &r.baseline) else {
                continue;
            };
            let subject_row = self.rows.iter().find(|s| {
                s.target == r.target
                    && s.case == r.case
                    && &s.variant == subject
                    && s.unit == r.unit
            });
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} {} | {:.2}x ({:.2}..{:.2}) | {} |",
                r.target,
                md_escape(&r.case),
                subject_row.map_or(String::new(), |s| format!(
                    "{} {}",
                    fmt_num(s.value.median, s.unit),
                    s.unit.as_str()
                )),
                md_escape(&r.variant),
                fmt_num(r.value.median, r.unit),
                r.unit.as_str(),
                ratio.median,
                ratio.p10,
                ratio.p90,
                r.goal.map_or(String::new(), |g| format!(
                    "<= {g}x {}",
                    if ratio.median <= g { "met" } else { "missed" }
                )),
            );
        }
        out
    }

    /// Writes `results.json`, `results.csv` and `results.md` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, machine: &[(String, String)]) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let json_path = dir.join("results.json");
        std::fs::write(&json_path, self.json(machine))?;
        let csv_path = dir.join("results.csv");
        std::fs::write(&csv_path, self.csv())?;
        let md_path = dir.join("results.md");
        std::fs::write(&md_path, self.markdown())?;
        Ok(vec![json_path, csv_path, md_path])
    }

    fn json(&self, machine: &[(String, String)]) -> String {
        let mut out = String::from("{\n  \"machine\": {");
        for (i, (k, v)) in machine.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(out, "{sep}\n    {}: {}", json_str(k), json_str(v));
        }
        out.push_str("\n  },\n  \"skipped\": [");
        for (i, (t, why)) in self.skipped.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(
                out,
                "{sep}\n    {{\"target\": {}, \"reason\": {}}}",
                json_str(t),
                json_str(why)
            );
        }
        out.push_str("\n  ],\n  \"results\": [");
        for (i, r) in self.rows.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(
                out,
                "{sep}\n    {{\"target\": {}, \"case\": {}, \"variant\": {}, \"unit\": {}, \
                 \"median\": {}, \"p10\": {}, \"p90\": {}, \"samples\": {}, \"baseline\": {}, \
                 \"ratio_median\": {}, \"ratio_p10\": {}, \"ratio_p90\": {}, \"goal\": {}, \
                 \"note\": {}}}",
                json_str(r.target),
                json_str(&r.case),
                json_str(&r.variant),
                json_str(r.unit.as_str()),
                json_num(r.value.median),
                json_num(r.value.p10),
                json_num(r.value.p90),
                r.value.n,
                r.baseline.as_deref().map_or("null".into(), json_str),
                r.ratio.map_or("null".into(), |q| json_num(q.median)),
                r.ratio.map_or("null".into(), |q| json_num(q.p10)),
                r.ratio.map_or("null".into(), |q| json_num(q.p90)),
                r.goal.map_or("null".into(), json_num),
                json_str(&r.note),
            );
        }
        out.push_str("\n  ]\n}\n");
        out
    }

    fn csv(&self) -> String {
        let mut out = String::from(
            "target,case,variant,unit,median,p10,p90,samples,baseline,ratio_median,ratio_p10,ratio_p90,goal,note\n",
        );
        for r in &self.rows {
            let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v}"));
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(r.target),
                csv_field(&r.case),
                csv_field(&r.variant),
                r.unit.as_str(),
                r.value.median,
                r.value.p10,
                r.value.p90,
                r.value.n,
                csv_field(r.baseline.as_deref().unwrap_or("")),
                opt(r.ratio.map(|q| q.median)),
                opt(r.ratio.map(|q| q.p10)),
                opt(r.ratio.map(|q| q.p90)),
                opt(r.goal),
                csv_field(&r.note),
            );
        }
        out
    }
}

/// A number with a precision that suits its size.
fn fmt_num(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Count => format!("{v:.0}"),
        _ if v >= 100.0 => format!("{v:.0}"),
        _ if v >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// Escapes what Markdown would read as HTML (`Vec<u8>`) or as a cell border.
fn md_escape(s: &str) -> String {
    s.replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(json_num(f64::NAN), "null");
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
