//! PostgreSQL: the probe (a startup message), a throwaway cluster, and the test namespaces left
//! behind.
//!
//! PostgreSQL refuses to run as root, so when xtask runs as root the throwaway cluster is
//! initialised and run as the `postgres` system user (through `runuser`). Leftovers are looked
//! for with `psql` at every level a backend might isolate tests at: databases, schemas and
//! tables named `t_...`, and `t_...` values in any column called `namespace`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Launch, ServiceUrl, connect, is_test_namespace, missing, spawn};
use crate::process;

const INSTALL: &str = "apt-get install -y postgresql";

/// The URL of a PostgreSQL server on 127.0.0.1 at `port` (trust authentication assumed).
pub fn local_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// Sends a startup message and expects an authentication request or an error from the server.
pub fn probe(addr: SocketAddr) -> Result<(), String> {
    let mut stream = connect(addr)?;
    let mut body = 196_608_i32.to_be_bytes().to_vec(); // protocol 3.0
    for field in ["user", "postgres", "database", "postgres", ""] {
        body.extend_from_slice(field.as_bytes());
        body.push(0);
    }
    let len = i32::try_from(body.len() + 4).expect("the startup message is small");
    let mut message = len.to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    stream
        .write_all(&message)
        .map_err(|e| format!("postgres {addr}: {e}"))?;
    let mut header = [0; 5];
    stream
        .read_exact(&mut header)
        .map_err(|e| format!("postgres {addr}: {e}"))?;
    let len = i32::from_be_bytes(header[1..].try_into().expect("4 bytes"));
    match (header[0], len) {
        // An authentication request (trust answers "ok" at once) or an error report, such as an
        // unknown role: both come only from a PostgreSQL server.
        (b'R' | b'E', 8..=8192) => Ok(()),
        _ => Err(format!("{addr} does not speak the PostgreSQL protocol")),
    }
}

/// The directories holding `initdb` and `postgres`: `PATH`, then Debian's versioned ones.
fn binary(name: &str) -> Result<PathBuf, String> {
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    versioned.sort_by_key(|p| {
        let version = p
            .parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str());
        std::cmp::Reverse(version.and_then(|v| v.parse::<u32>().ok()).unwrap_or(0))
    });
    process::which(name, &versioned).ok_or_else(|| missing(name, INSTALL))
}

/// A command that runs `program` as the `postgres` user when xtask is root.
fn as_server_user(program: &Path, dir: &Path) -> Result<Command, String> {
    if !process::running_as_root() {
        return Ok(Command::new(program));
    }
    let (uid, gid) = process::user_ids("postgres").ok_or(
        "PostgreSQL refuses to run as root and there is no `postgres` user to run it as: \
         create one (apt-get install -y postgresql does)",
    )?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| format!("cannot give {} to postgres: {e}", dir.display()))?;
    let runuser = process::which("runuser", &[])
        .ok_or_else(|| missing("runuser", "apt-get install -y util-linux"))?;
    let mut command = Command::new(runuser);
    command.args(["-u", "postgres", "--"]).arg(program);
    Ok(command)
}

/// Initialises a cluster in `dir` and starts it on `port`.
pub fn launch(port: u16, dir: &Path) -> Result<Launch, String> {
    let data = dir.join("data");
    let log = dir.join("postgres.log");
    let initdb_log = dir.join("initdb.log");
    let mut initdb = as_server_user(&binary("initdb")?, dir)?;
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        .stdin(Stdio::null());
    let init_output = std::fs::File::create(&initdb_log)
        .map_err(|e| format!("cannot create {}: {e}", initdb_log.display()))?;
    initdb
        .stdout(init_output.try_clone().map_err(|e| e.to_string())?)
        .stderr(init_output);
    let status = initdb
        .status()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !status.success() {
        return Err(format!(
            "initdb failed:\n{}",
            process::tail(&initdb_log, 15)
        ));
    }
    let mut server = as_server_user(&binary("postgres")?, dir)?;
    server
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=200",
        ])
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]);
    let child = spawn(&mut server, &log)?;
    Ok(Launch {
        child,
        url: local_url(port),
        dir: dir.to_owned(),
        log,
        pid_file: Some(data.join("postmaster.pid")),
        stop_signal: "INT",
        others: Vec::new(),
    })
}

/// The test namespaces on the server at `url` (see the module docs for where they are sought).
pub fn test_namespaces(url: &str) -> Result<Vec<String>, String> {
    let listing = r"
        -- Cast to text: the catalogs' type `name` would cut the generated queries at 63 bytes.
        SELECT datname::text FROM pg_database WHERE datname LIKE 't\_%'
        UNION SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\_%'
        UNION SELECT tablename::text FROM pg_tables WHERE tablename LIKE 't\_%'
        UNION SELECT format('SELECT DISTINCT namespace::text FROM %I.%I WHERE namespace::text LIKE %L',
                            table_schema, table_name, 't\_%')
              FROM information_schema.columns
              WHERE column_name = 'namespace'
                AND table_schema NOT IN ('pg_catalog', 'information_schema')";
    let mut names = Vec::new();
    for line in psql(url, listing)? {
        if line.starts_with("SELECT ") {
            names.extend(psql(url, &line)?);
        } else {
            names.push(line);
        }
    }
    names.retain(|n| is_test_namespace(n));
    names.sort();
    names.dedup();
    Ok(names)
}

/// Drops the databases, schemas and tables named after the given test namespaces and deletes
/// their rows from every table with a `namespace` column.
pub fn remove_namespaces(url: &str, names: &[String]) -> Result<(), String> {
    let list = super::sql_list(names);
    let quoted = list.replace('\'', "''");
    let statements = format!(
        r"SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname)
              FROM pg_database WHERE datname IN ({list})
          UNION ALL SELECT format('DROP SCHEMA IF EXISTS %I CASCADE', nspname)
              FROM pg_namespace WHERE nspname IN ({list})
          UNION ALL SELECT format('DROP TABLE IF EXISTS %I.%I CASCADE', schemaname, tablename)
              FROM pg_tables WHERE tablename IN ({list})
          UNION ALL SELECT format('DELETE FROM %I.%I WHERE namespace::text IN ({quoted})',
                                  table_schema, table_name)
              FROM information_schema.columns
              WHERE column_name = 'namespace'
                AND table_schema NOT IN ('pg_catalog', 'information_schema')"
    );
    for statement in psql(url, &statements)? {
        psql(url, &statement)?;
    }
    Ok(())
}

/// Runs one query with `psql` and returns its rows (one column each).
fn psql(url: &str, query: &str) -> Result<Vec<String>, String> {
    let psql = process::which("psql", &[])
        .ok_or_else(|| missing("psql", "apt-get install -y postgresql-client"))?;
    // psql takes a libpq URL; make sure it is one even when given as postgresql://.
    let parsed = ServiceUrl::parse(url, 5432)?;
    let mut command = Command::new(psql);
    command
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            query,
        ])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null());
    super::client_lines(&mut command, "psql", &parsed)
}

#[cfg(test)]
mod tests {
    use super::super::{Origin, Service, ServiceKind, testing, wait_until_answering};
    use super::*;

    #[test]
    fn a_throwaway_postgres_starts_answers_lists_and_stops() {
        testing::start_probe_stop(ServiceKind::Postgres);
    }

    #[test]
    fn test_namespaces_are_found_in_tables_columns_and_schemas() {
        let port = process::free_port().unwrap();
        let dir = process::temp_dir("postgres-leftover-test").unwrap();
        let launch = launch(port, &dir).unwrap();
        let service = Service {
            kind: ServiceKind::Postgres,
            url: launch.url.clone(),
            origin: Origin::Throwaway(launch),
            kept: false,
        };
        let service = wait_until_answering(service).unwrap();
        psql(
            &service.url,
            "CREATE TABLE entries (namespace text, v int);
             INSERT INTO entries VALUES ('t_12_a_ff', 1), ('t_12_a_ff', 2), ('cachier', 3);
             CREATE SCHEMA t_13_b_00; CREATE TABLE t_14_c_01 (v int);",
        )
        .unwrap();
        let found = test_namespaces(&service.url).unwrap();
        assert_eq!(found, vec!["t_12_a_ff", "t_13_b_00", "t_14_c_01"]);
        service.stop().unwrap();
    }
}
