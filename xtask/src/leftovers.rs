//! The leftover check: no test namespace may survive a run.
//!
//! Every test works in its own namespace `t_{pid}_{test}_{random}` and removes it when it ends,
//! also when it fails. After the matrix, xtask looks for test namespaces in every service the
//! run used (Redis keys, SQL databases/schemas/tables/`namespace` values, MongoDB databases and
//! collections) and in the file backend's test directory, and sorts what it finds:
//!
//! - made by a process that is still alive: another run in progress on a shared server, not
//!   ours — ignored;
//! - already there before the run: left by an earlier run — a warning;
//! - new: left by this run — a failure in `cargo xtask ci` (a warning in `cargo xtask test`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::process;
use crate::services::{Service, is_test_namespace, test_namespace_pid};
use crate::workspace;

/// The directory the file backend's tests keep their namespaces in (`CACHIER_TEST_FILE_DIR`).
pub fn file_test_dir() -> PathBuf {
    workspace::xtask_dir().join("file-cache")
}

/// The test namespaces present at one moment, by place (`redis`, `file`, ...).
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    found: BTreeSet<(String, String)>,
    errors: Vec<String>,
}

impl Snapshot {
    /// Looks in every service and the file test directory.
    pub fn take(services: &[&Service], file_dir: &Path) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for service in services {
            match service.kind.test_namespaces(&service.url) {
                Ok(names) => {
                    let place = service.kind.name().to_owned();
                    snapshot
                        .found
                        .extend(names.into_iter().map(|n| (place.clone(), n)));
                }
                Err(e) => snapshot.errors.push(format!("{}: {e}", service.kind)),
            }
        }
        match file_namespaces(file_dir) {
            Ok(names) => snapshot
                .found
                .extend(names.into_iter().map(|n| ("file".to_owned(), n))),
            Err(e) => snapshot.errors.push(format!("file: {e}")),
        }
        snapshot
    }
}

/// Test namespace directories directly under `dir` (none if it does not exist).
fn file_namespaces(dir: &Path) -> Result<Vec<String>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    Ok(entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| is_test_namespace(name))
        .collect())
}

/// What the check after a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Left behind by this run: `(place, namespace)`.
    pub new: Vec<(String, String)>,
    /// Left behind by an earlier run.
    pub earlier: Vec<(String, String)>,
    /// Places that could not be checked.
    pub errors: Vec<String>,
}

impl Report {
    /// Compares the namespaces after a run with those before it.
    pub fn compare(before: &Snapshot, after: &Snapshot) -> Report {
        let mut report = Report {
            errors: after.errors.clone(),
            ..Report::default()
        };
        for item in &after.found {
            if test_namespace_pid(&item.1).is_some_and(process::pid_alive) {
                continue;
            }
            if before.found.contains(item) {
                report.earlier.push(item.clone());
            } else {
                report.new.push(item.clone());
            }
        }
        report
    }

    /// Whether the run left nothing behind and every place could be checked.
    pub fn clean(&self) -> bool {
        self.new.is_empty() && self.errors.is_empty()
    }

    /// Prints the findings.
    pub fn print(&self) {
        let list = |items: &[(String, String)]| {
            items
                .iter()
                .map(|(place, name)| format!("  {place}: {name}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        if !self.new.is_empty() {
            println!(
                "leftovers: {} test namespace(s) left behind by this run:\n{}",
                self.new.len(),
                list(&self.new)
            );
        }
        if !self.earlier.is_empty() {
            println!(
                "leftovers: {} test namespace(s) from an earlier run (not this one's):\n{}",
                self.earlier.len(),
                list(&self.earlier)
            );
        }
        for error in &self.errors {
            println!("leftovers: could not check {error}");
        }
        if self.new.is_empty() && self.errors.is_empty() {
            println!("leftovers: none — every test namespace of this run was removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_sorted_by_owner_and_age() {
        let dead = "t_999999999_gone_ab";
        let alive = format!("t_{}_running_cd", std::process::id());
        let old = "t_999999998_old_ef";
        let before = Snapshot {
            found: [("redis".into(), old.into())].into(),
            errors: vec![],
        };
        let after = Snapshot {
            found: [
                ("redis".to_owned(), dead.to_owned()),
                ("redis".to_owned(), alive),
                ("redis".to_owned(), old.to_owned()),
            ]
            .into(),
            errors: vec![],
        };
        let report = Report::compare(&before, &after);
        assert_eq!(report.new, vec![("redis".to_owned(), dead.to_owned())]);
        assert_eq!(report.earlier, vec![("redis".to_owned(), old.to_owned())]);
        assert!(!report.clean());
    }

    #[test]
    fn the_file_check_finds_namespace_directories_only() {
        let dir = process::temp_dir("leftover-files").unwrap();
        std::fs::create_dir(dir.join("t_999999999_left_ab")).unwrap();
        std::fs::create_dir(dir.join("cachier")).unwrap();
        let snapshot = Snapshot::take(&[], &dir);
        assert_eq!(
            snapshot.found.into_iter().collect::<Vec<_>>(),
            vec![("file".to_owned(), "t_999999999_left_ab".to_owned())]
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(file_namespaces(&dir).unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_place_is_not_clean() {
        let after = Snapshot {
            found: BTreeSet::new(),
            errors: vec!["redis: refused".into()],
        };
        assert!(!Report::compare(&Snapshot::default(), &after).clean());
    }
}
