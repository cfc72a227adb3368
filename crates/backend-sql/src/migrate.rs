//! The embedded schema migrations, one set per dialect.
//!
//! The SQL lives in `migrations/{sqlite,postgres,mysql}/NNNN_name/{up,down}.sql` and is compiled
//! into the crate. Since the table name is configurable, the files name it `__TABLE__` and a
//! small [`MigrationSource`] substitutes the validated name; diesel_migrations'
//! [`MigrationHarness`] then runs what is pending and records each migration in
//! `__diesel_schema_migrations` under the version `{table}/NNNN`, so several tables in one
//! database migrate independently.
//!
//! Several processes may start at once: the harness runs under a lock that spans processes
//! (`pg_advisory_lock` on PostgreSQL, `GET_LOCK` on MySQL, an immediate transaction on SQLite),
//! and the DDL itself is `CREATE TABLE IF NOT EXISTS`.

use std::fmt;

use diesel::backend::Backend;
use diesel::connection::BoxableConnection;
use diesel::migration::{
    Migration, MigrationMetadata, MigrationName, MigrationSource, MigrationVersion,
};

/// One migration file pair, with `__TABLE__` still in it.
struct Template {
    number: &'static str,
    up: &'static str,
    down: &'static str,
}

macro_rules! templates {
    ($dialect:literal: $($number:literal => $dir:literal),* $(,)?) => {
        &[$(Template {
            number: $number,
            up: include_str!(concat!("../migrations/", $dialect, "/", $dir, "/up.sql")),
            down: include_str!(concat!("../migrations/", $dialect, "/", $dir, "/down.sql")),
        }),*]
    };
}

#[cfg(feature = "sqlite")]
const SQLITE: &[Template] = templates!("sqlite": "0001" => "0001_create_entries");
#[cfg(feature = "postgres")]
const POSTGRES: &[Template] = templates!("postgres": "0001" => "0001_create_entries");
#[cfg(feature = "mysql")]
const MYSQL: &[Template] = templates!("mysql": "0001" => "0001_create_entries");

/// The migrations of one dialect for one table.
pub(crate) struct Migrations {
    table: String,
    templates: &'static [Template],
}

impl Migrations {
    #[cfg(feature = "sqlite")]
    pub(crate) fn sqlite(table: &str) -> Self {
        Migrations {
            table: table.to_owned(),
            templates: SQLITE,
        }
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(table: &str) -> Self {
        Migrations {
            table: table.to_owned(),
            templates: POSTGRES,
        }
    }

    #[cfg(feature = "mysql")]
    pub(crate) fn mysql(table: &str) -> Self {
        Migrations {
            table: table.to_owned(),
            templates: MYSQL,
        }
    }
}

impl<DB: Backend> MigrationSource<DB> for Migrations {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<DB>>>> {
        Ok(self
            .templates
            .iter()
            .map(|t| {
                Box::new(TableMigration {
                    name: Name(format!("{}/{}", self.table, t.number)),
                    up: t.up.replace("__TABLE__", &self.table),
                    down: t.down.replace("__TABLE__", &self.table),
                }) as Box<dyn Migration<DB>>
            })
            .collect())
    }
}

/// The name and version of one migration: `{table}/NNNN`.
struct Name(String);

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl MigrationName for Name {
    fn version(&self) -> MigrationVersion<'_> {
        MigrationVersion::from(self.0.as_str())
    }
}

struct TableMigration {
    name: Name,
    up: String,
    down: String,
}

struct InTransaction;

impl MigrationMetadata for InTransaction {}

impl<DB: Backend> Migration<DB> for TableMigration {
    fn run(&self, conn: &mut dyn BoxableConnection<DB>) -> diesel::migration::Result<()> {
        conn.batch_execute(&self.up)?;
        Ok(())
    }

    fn revert(&self, conn: &mut dyn BoxableConnection<DB>) -> diesel::migration::Result<()> {
        conn.batch_execute(&self.down)?;
        Ok(())
    }

    fn metadata(&self) -> &dyn MigrationMetadata {
        &InTransaction
    }

    fn name(&self) -> &dyn MigrationName {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_the_table_only_through_the_placeholder() {
        let mut all: Vec<&Template> = Vec::new();
        #[cfg(feature = "sqlite")]
        all.extend(SQLITE);
        #[cfg(feature = "postgres")]
        all.extend(POSTGRES);
        #[cfg(feature = "mysql")]
        all.extend(MYSQL);
        assert!(!all.is_empty());
        for t in all {
            assert!(t.up.contains("__TABLE__"), "{} up", t.number);
            assert!(t.down.contains("__TABLE__"), "{} down", t.number);
            assert!(
                !t.up.contains("cachier_entries"),
                "{} hard-codes a table",
                t.number
            );
        }
    }
}
