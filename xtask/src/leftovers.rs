//! The leftover check: no test namespace may survive a run.
//!
//! Every test works in its own namespace `t_{pid}_{test}_{random}` and removes it when it ends,
//! also when it fails. After the matrix, xtask looks for test namespaces in every service the
//! run used (Redis keys, SQL databases/schemas/tables/`namespace` values, MongoDB databases and
//! collections), in the file backend's test directories and in the SQL suite's SQLite files,
//! and sorts what it finds:
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

/// The places on the local disk where tests keep data.
#[derive(Debug, Clone)]
pub struct LocalPlaces {
    /// `CACHIER_TEST_FILE_DIR`: namespace directories `t_...` of a file-backend suite.
    pub file_dir: PathBuf,
    /// cargo's `CARGO_TARGET_TMPDIR` (`target/tmp`): the file backend's conformance store
    /// `cachier-file-conformance/` (namespace directories `t_...`), its per-test directories
    /// `cachier-file-XXXXXX`, and the SQL suite's SQLite databases in `cachier-sql-tests/`.
    pub tmp_dir: PathBuf,
}

impl LocalPlaces {
    /// The places of this workspace.
    pub fn of_workspace() -> LocalPlaces {
        LocalPlaces {
            file_dir: file_test_dir(),
            tmp_dir: workspace::target_dir().join("tmp"),
        }
    }
}

/// The test namespaces present at one moment, by place (`redis`, `file`, ...).
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    found: BTreeSet<(String, String)>,
    errors: Vec<String>,
    /// The places that could not be read.
    unread: BTreeSet<String>,
}

impl Snapshot {
    /// Looks in every service and every local place.
    pub fn take(services: &[&Service], local: &LocalPlaces) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for service in services {
            snapshot.add(
                service.kind.name(),
                service.kind.test_namespaces(&service.url),
            );
        }
        snapshot.add("file", dir_entries(&local.file_dir, is_test_namespace));
        let conformance_dir = local.tmp_dir.join("cachier-file-conformance");
        snapshot.add("file", dir_entries(&conformance_dir, is_test_namespace));
        snapshot.add(
            "file tmp dir",
            dir_entries(&local.tmp_dir, is_file_test_temp_dir),
        );
        let sqlite_dir = local.tmp_dir.join("cachier-sql-tests");
        let databases = dir_entries(&sqlite_dir, |name| name.ends_with(".db"));
        for database in databases.unwrap_or_default() {
            snapshot.add("sqlite", sqlite_namespaces(&sqlite_dir.join(database)));
        }
        snapshot
    }

    fn add(&mut self, place: &str, names: Result<Vec<String>, String>) {
        match names {
            Ok(names) => self
                .found
                .extend(names.into_iter().map(|n| (place.to_owned(), n))),
            Err(e) => {
                self.errors.push(format!("{place}: {e}"));
                self.unread.insert(place.to_owned());
            }
        }
    }
}

/// Removes test namespaces (`(place, namespace)` as a [`Report`] lists them) from the services
/// and the local places: the clean-up of a run whose tests were interrupted before they could
/// clean up themselves. Returns what could not be removed.
pub fn remove(
    items: &[(String, String)],
    services: &[&Service],
    local: &LocalPlaces,
) -> Vec<String> {
    let mut errors = Vec::new();
    for service in services {
        let names: Vec<String> = items
            .iter()
            .filter(|(place, _)| place == service.kind.name())
            .map(|(_, name)| name.clone())
            .collect();
        if let Err(e) = service.kind.remove_namespaces(&service.url, &names) {
            errors.push(format!("{}: {e}", service.kind.name()));
        }
    }
    let conformance_dir = local.tmp_dir.join("cachier-file-conformance");
    let sqlite_dir = local.tmp_dir.join("cachier-sql-tests");
    let mut sqlite_names = Vec::new();
    for (place, name) in items {
        if name.contains('/') || name.contains("..") {
            continue;
        }
        let dirs = match place.as_str() {
            "file" => vec![local.file_dir.join(name), conformance_dir.join(name)],
            "file tmp dir" => vec![local.tmp_dir.join(name)],
            "sqlite" => {
                sqlite_names.push(name.clone());
                continue;
            }
            _ => continue,
        };
        for dir in dirs {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    errors.push(format!("{}: {e}", dir.display()));
                }
                _ => {}
            }
        }
    }
    sqlite_names.retain(|n| crate::services::is_plain_name(n));
    if !sqlite_names.is_empty() {
        let list = sqlite_names
            .iter()
            .map(|n| format!("''{n}''"))
            .collect::<Vec<_>>()
            .join(", ");
        let statements = format!(
            r#"SELECT 'DELETE FROM "' || replace(m.name, '"', '""') || '" WHERE namespace IN ({list});'
                 FROM sqlite_master m, pragma_table_info(m.name) p
                 WHERE m.type = 'table' AND p.name = 'namespace';"#
        );
        let databases = dir_entries(&sqlite_dir, |name| name.ends_with(".db"));
        for database in databases.unwrap_or_default() {
            let database = sqlite_dir.join(database);
            let removed = sqlite(&database, &statements).and_then(|deletes| {
                deletes
                    .iter()
                    .try_for_each(|delete| sqlite(&database, delete).map(drop))
            });
            if let Err(e) = removed {
                errors.push(format!("sqlite: {e}"));
            }
        }
    }
    errors
}

/// After an interruption: waits (up to `limit`) until every process that made a namespace new
/// since `before` has exited — a test's own child processes may outlive it briefly — and
/// returns the snapshot then.
pub fn settle(
    before: &Snapshot,
    services: &[&Service],
    local: &LocalPlaces,
    limit: std::time::Duration,
) -> Snapshot {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let now = Snapshot::take(services, local);
        let running = now
            .found
            .iter()
            .filter(|item| !before.found.contains(*item))
            .filter_map(|(_, name)| test_namespace_pid(name))
            .any(process::pid_alive);
        if !running || std::time::Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Whether `name` is one of the file backend tests' own temporary directories:
/// `cachier-file-` and the six random characters `tempfile` adds.
fn is_file_test_temp_dir(name: &str) -> bool {
    name.strip_prefix("cachier-file-")
        .is_some_and(|rest| rest.len() == 6 && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The names of the entries directly under `dir` that `keep` accepts (none if `dir` does not
/// exist).
fn dir_entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    Ok(entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| keep(name))
        .collect())
}

/// The test namespaces in the `namespace` columns of a SQLite database (with the `sqlite3`
/// command-line shell).
fn sqlite_namespaces(database: &Path) -> Result<Vec<String>, String> {
    let listing = r#"SELECT 'SELECT DISTINCT namespace FROM "' || replace(m.name, '"', '""')
                            || '" WHERE namespace LIKE ''t\_%'' ESCAPE ''\'';'
                     FROM sqlite_master m, pragma_table_info(m.name) p
                     WHERE m.type = 'table' AND p.name = 'namespace';"#;
    let mut names = Vec::new();
    for query in sqlite(database, listing)? {
        names.extend(sqlite(database, &query)?);
    }
    names.retain(|n| is_test_namespace(n));
    names.sort();
    names.dedup();
    Ok(names)
}

fn sqlite(database: &Path, sql: &str) -> Result<Vec<String>, String> {
    let shell = process::which("sqlite3", &[])
        .ok_or_else(|| crate::services::missing("sqlite3", "apt-get install -y sqlite3"))?;
    let output = std::process::Command::new(shell)
        .args(["-batch", "-noheader", "-cmd", ".timeout 5000"])
        .arg(database)
        .arg(sql)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run sqlite3: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "sqlite3 on {} failed: {}",
            database.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
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
            // What a place held before the run is unknown when it could not be read then.
            if before.found.contains(item) || before.unread.contains(&item.0) {
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
            ..Snapshot::default()
        };
        let after = Snapshot {
            found: [
                ("redis".to_owned(), dead.to_owned()),
                ("redis".to_owned(), alive),
                ("redis".to_owned(), old.to_owned()),
            ]
            .into(),
            ..Snapshot::default()
        };
        let report = Report::compare(&before, &after);
        assert_eq!(report.new, vec![("redis".to_owned(), dead.to_owned())]);
        assert_eq!(report.earlier, vec![("redis".to_owned(), old.to_owned())]);
        assert!(!report.clean());
    }

    #[test]
    fn local_places_are_searched() {
        let root = process::temp_dir("leftover-files").unwrap();
        let local = LocalPlaces {
            file_dir: root.join("files"),
            tmp_dir: root.join("tmp"),
        };
        std::fs::create_dir_all(local.file_dir.join("t_999999999_left_ab")).unwrap();
        std::fs::create_dir_all(local.file_dir.join("cachier")).unwrap();
        std::fs::create_dir_all(local.tmp_dir.join("cachier-file-x1Y2z3")).unwrap();
        let conformance = local.tmp_dir.join("cachier-file-conformance");
        std::fs::create_dir_all(conformance.join("t_999999996_conf_cd")).unwrap();
        std::fs::create_dir_all(local.tmp_dir.join("cachier-sql-tests")).unwrap();
        let db = local.tmp_dir.join("cachier-sql-tests").join("shared.db");
        sqlite(
            &db,
            "CREATE TABLE \"cache entries\" (namespace TEXT, v INT);
             INSERT INTO \"cache entries\" VALUES ('t_round_trip_999999997_0_ab', 1), ('tX', 2);
             CREATE TABLE other (v INT);",
        )
        .unwrap();
        let snapshot = Snapshot::take(&[], &local);
        assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
        let found: Vec<_> = snapshot.found.into_iter().collect();
        let expected = [
            ("file", "t_999999996_conf_cd"),
            ("file", "t_999999999_left_ab"),
            ("file tmp dir", "cachier-file-x1Y2z3"),
            ("sqlite", "t_round_trip_999999997_0_ab"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(p, n)| (p.to_string(), n.to_string()))
            .collect();
        assert_eq!(found, expected);
        std::fs::remove_dir_all(&root).unwrap();
        assert!(Snapshot::take(&[], &local).found.is_empty());
    }

    #[test]
    fn an_unreadable_place_is_not_clean() {
        let after = Snapshot {
            errors: vec!["redis: refused".into()],
            ..Snapshot::default()
        };
        assert!(!Report::compare(&Snapshot::default(), &after).clean());
    }
}
