//! The test targets: what `cargo xtask test <target>` means, crate by crate.
//!
//! A [`Target`] names a package, the features its suite needs, an optional nextest filterset
//! that narrows the package's tests, and the services it talks to. The SQL dialects share the
//! crate `cachier-sql`, whose tests come in one pair of test binaries per dialect
//! (`tests/{dialect}.rs` and `tests/conformance_{dialect}.rs`); `sql:X` runs the binaries whose
//! name contains `X`, and `sql:sqlite` also runs the crate's own unit tests, which need no server. A target whose crate directory does not exist yet is reported as "not built yet",
//! never as passed.
//!
//! `redis` and `redis:cluster` share the crate `cachier-redis` the same way: the test binaries
//! whose name contains `cluster` (built with its feature `cluster`) run against a Redis Cluster
//! and belong to `redis:cluster`; the others, and the unit tests, to `redis`.

use crate::services::ServiceKind;
use crate::workspace;

/// One row of the test matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The name on the command line and in the table.
    pub name: &'static str,
    /// The cargo package.
    pub package: &'static str,
    /// The crate directory, relative to the workspace root.
    pub dir: &'static str,
    /// Features of `package` the suite needs (`--features package/feature`).
    pub features: &'static [&'static str],
    /// Narrows the package's tests (nextest filterset syntax), for targets that share a crate.
    pub filter: Option<&'static str>,
    /// The same narrowing for `cargo test` (its target-selection arguments), when nextest is
    /// not installed.
    pub cargo_test_args: &'static [&'static str],
    /// Servers the suite needs, resolved before it runs and passed by URL.
    pub services: &'static [ServiceKind],
}

impl Target {
    /// Whether the crate exists in the workspace.
    pub fn exists(&self) -> bool {
        workspace::root().join(self.dir).join("Cargo.toml").exists()
    }

    /// Whether the tests of the nextest binary `binary_id` (`package` for a library's unit
    /// tests, `package::name` for an integration test, `package::bin/name` for a binary's) belong
    /// to this target: the same selection as [`Target::filterset`], for reading reports.
    pub fn owns_binary(&self, binary_id: &str) -> bool {
        let (package, name) = binary_id.split_once("::").unwrap_or((binary_id, ""));
        if package != self.package {
            return false;
        }
        let Some(filter) = self.filter else {
            return true;
        };
        let contains = |part: &str| {
            part.strip_prefix("binary(~")
                .and_then(|rest| rest.strip_suffix(')'))
                .is_some_and(|needle| name.contains(needle))
        };
        filter.split(" | ").any(|part| match part.trim() {
            "kind(lib)" => name.is_empty(),
            other => match other.strip_prefix("not ") {
                Some(negated) => !contains(negated),
                None => contains(other),
            },
        })
    }

    /// The nextest filterset selecting exactly this target's tests.
    pub fn filterset(&self) -> String {
        match self.filter {
            Some(filter) => format!("package(={}) & ({filter})", self.package),
            None => format!("package(={})", self.package),
        }
    }
}

use ServiceKind::{Mongo, Mysql, Postgres, Redis, RedisCluster, S3};

/// Every target, in the order `all` runs and the table lists them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "core",
        package: "cachier-core",
        dir: "crates/core",
        features: &["conformance"],
        filter: None,
        cargo_test_args: &[],
        services: &[],
    },
    Target {
        name: "macros",
        package: "cachier-macros",
        dir: "crates/macros",
        features: &[],
        filter: None,
        cargo_test_args: &[],
        services: &[],
    },
    Target {
        name: "memory",
        package: "cachier-memory",
        dir: "crates/backend-memory",
        features: &[],
        filter: None,
        cargo_test_args: &[],
        services: &[],
    },
    Target {
        name: "file",
        package: "cachier-file",
        dir: "crates/backend-file",
        features: &[],
        filter: None,
        cargo_test_args: &[],
        services: &[],
    },
    Target {
        name: "sql:sqlite",
        package: "cachier-sql",
        dir: "crates/backend-sql",
        features: &["sqlite"],
        filter: Some("binary(~sqlite) | kind(lib)"),
        cargo_test_args: &["--lib", "--test", "sqlite", "--test", "conformance_sqlite"],
        services: &[],
    },
    Target {
        name: "sql:postgres",
        package: "cachier-sql",
        dir: "crates/backend-sql",
        features: &["postgres"],
        filter: Some("binary(~postgres)"),
        cargo_test_args: &["--test", "postgres", "--test", "conformance_postgres"],
        services: &[Postgres],
    },
    Target {
        name: "sql:mysql",
        package: "cachier-sql",
        dir: "crates/backend-sql",
        features: &["mysql"],
        filter: Some("binary(~mysql)"),
        cargo_test_args: &["--test", "mysql", "--test", "conformance_mysql"],
        services: &[Mysql],
    },
    Target {
        name: "redis",
        package: "cachier-redis",
        dir: "crates/backend-redis",
        features: &[],
        filter: Some("not binary(~cluster)"),
        cargo_test_args: &[
            "--lib",
            "--test",
            "backend",
            "--test",
            "conformance",
            "--test",
            "cross_process",
            "--test",
            "private_server",
        ],
        services: &[Redis],
    },
    Target {
        name: "redis:cluster",
        package: "cachier-redis",
        dir: "crates/backend-redis",
        features: &["cluster"],
        filter: Some("binary(~cluster)"),
        cargo_test_args: &[
            "--test",
            "cluster_conformance",
            "--test",
            "cluster_backend",
            "--test",
            "cluster_faults",
        ],
        services: &[RedisCluster],
    },
    Target {
        name: "mongo",
        package: "cachier-mongo",
        dir: "crates/backend-mongo",
        features: &[],
        filter: None,
        cargo_test_args: &[],
        services: &[Mongo],
    },
    Target {
        name: "s3",
        package: "cachier-object-store",
        dir: "crates/backend-object-store",
        features: &[],
        filter: None,
        cargo_test_args: &[],
        services: &[S3],
    },
    Target {
        name: "plugin",
        package: "cachier-plugin",
        dir: "crates/plugin",
        features: &[],
        filter: None,
        cargo_test_args: &[],
        services: &[],
    },
    Target {
        name: "examples",
        package: "cachier-examples",
        dir: "examples",
        features: &[],
        filter: None,
        cargo_test_args: &[],
        services: &[],
    },
    Target {
        name: "xtask",
        package: "xtask",
        dir: "xtask",
        features: &[],
        filter: None,
        cargo_test_args: &[],
        services: &[],
    },
];

/// The names accepted on the command line besides the targets themselves.
const GROUPS: &[(&str, &[&str])] = &[
    ("sql", &["sql:sqlite", "sql:postgres", "sql:mysql"]),
    (
        "all",
        &[
            "core",
            "macros",
            "memory",
            "file",
            "sql:sqlite",
            "sql:postgres",
            "sql:mysql",
            "redis",
            "redis:cluster",
            "mongo",
            "s3",
            "plugin",
            "examples",
            "xtask",
        ],
    ),
];

/// A target chosen on the command line, and whether it was named explicitly (a missing crate
/// is an error only then; `all` reports it and goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    pub target: Target,
    pub explicit: bool,
}

/// Expands target names (and the groups `sql`, `all`) into targets, in table order, without
/// repeats.
pub fn select(names: &[String]) -> Result<Vec<Selected>, String> {
    let mut chosen: Vec<Selected> = Vec::new();
    for name in names {
        let (members, explicit): (Vec<&str>, bool) =
            match GROUPS.iter().find(|(group, _)| group == name) {
                Some((group, members)) => (members.to_vec(), *group != "all"),
                None => (vec![name.as_str()], true),
            };
        for member in members {
            let target = find(member).ok_or_else(|| {
                let known: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                format!(
                    "unknown target {member:?}; known: {}, sql, all",
                    known.join(", ")
                )
            })?;
            match chosen.iter_mut().find(|s| s.target.name == target.name) {
                Some(existing) => existing.explicit |= explicit,
                None => chosen.push(Selected { target, explicit }),
            }
        }
    }
    chosen.sort_by_key(|s| TARGETS.iter().position(|t| t.name == s.target.name));
    Ok(chosen)
}

fn find(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(selection: &[Selected]) -> Vec<(&str, bool)> {
        selection
            .iter()
            .map(|s| (s.target.name, s.explicit))
            .collect()
    }

    #[test]
    fn every_binary_belongs_to_exactly_the_targets_its_filterset_selects() {
        let owners = |binary: &str| -> Vec<&str> {
            TARGETS
                .iter()
                .filter(|t| t.owns_binary(binary))
                .map(|t| t.name)
                .collect()
        };
        assert_eq!(owners("cachier-sql"), ["sql:sqlite"]);
        assert_eq!(
            owners("cachier-sql::conformance_postgres"),
            ["sql:postgres"]
        );
        assert_eq!(owners("cachier-sql::mysql"), ["sql:mysql"]);
        assert_eq!(owners("cachier-sql::sqlite"), ["sql:sqlite"]);
        assert_eq!(owners("cachier-redis::conformance"), ["redis"]);
        assert_eq!(owners("cachier-redis"), ["redis"]);
        assert_eq!(
            owners("cachier-redis::cluster_conformance"),
            ["redis:cluster"]
        );
        assert_eq!(owners("cachier-redis::cluster_faults"), ["redis:cluster"]);
        assert_eq!(owners("xtask::bin/xtask"), ["xtask"]);
        assert!(owners("cachier-unknown").is_empty());
        // Every filter is made only of the parts `owns_binary` reads.
        for target in TARGETS {
            for part in target.filter.into_iter().flat_map(|f| f.split(" | ")) {
                let part = part.strip_prefix("not ").unwrap_or(part);
                assert!(
                    part == "kind(lib)" || (part.starts_with("binary(~") && part.ends_with(')')),
                    "{}: owns_binary cannot read {part:?}",
                    target.name
                );
            }
        }
    }

    #[test]
    fn groups_expand_in_table_order_without_repeats() {
        let chosen = select(&["redis".into(), "sql".into(), "sql:mysql".into()]).unwrap();
        assert_eq!(
            names(&chosen),
            [
                ("sql:sqlite", true),
                ("sql:postgres", true),
                ("sql:mysql", true),
                ("redis", true)
            ]
        );
    }

    #[test]
    fn all_is_not_explicit_but_a_named_target_stays_explicit() {
        let chosen = select(&["all".into(), "plugin".into()]).unwrap();
        assert_eq!(chosen.len(), TARGETS.len());
        let plugin = chosen.iter().find(|s| s.target.name == "plugin").unwrap();
        assert!(plugin.explicit);
        assert!(
            chosen
                .iter()
                .filter(|s| s.target.name != "plugin")
                .all(|s| !s.explicit)
        );
    }

    #[test]
    fn unknown_targets_are_refused_with_the_list() {
        let err = select(&["cassandra".into()]).unwrap_err();
        assert!(err.contains("cassandra") && err.contains("memory"), "{err}");
    }

    #[test]
    fn every_target_is_in_all_and_the_filtersets_name_their_package() {
        let all = select(&["all".into()]).unwrap();
        assert_eq!(all.iter().map(|s| s.target).collect::<Vec<_>>(), TARGETS);
        assert_eq!(
            find("sql:mysql").unwrap().filterset(),
            "package(=cachier-sql) & (binary(~mysql))"
        );
        assert!(find("xtask").unwrap().exists());
    }
}
