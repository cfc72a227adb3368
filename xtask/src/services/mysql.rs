//! MariaDB/MySQL: the probe (the server's greeting), a throwaway `mariadbd`, and the test
//! namespaces left behind.
//!
//! A throwaway server gets a fresh data directory from `mariadb-install-db` (root with an empty
//! password over TCP) and a `test` database. Leftovers are looked for with the `mariadb` (or
//! `mysql`) client: databases and tables named `t_...`, and `t_...` values in any column called
//! `namespace`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{Launch, ServiceUrl, connect, is_test_namespace, missing, spawn};
use crate::process;

const INSTALL: &str = "apt-get install -y mariadb-server";

/// The URL of a MariaDB server on 127.0.0.1 at `port` (root, empty password, database `test`).
pub fn local_url(port: u16) -> String {
    format!("mysql://root@127.0.0.1:{port}/test")
}

/// Reads the greeting a MySQL-protocol server sends on connect: protocol version 10.
pub fn probe(addr: SocketAddr) -> Result<(), String> {
    let mut stream = connect(addr)?;
    let mut header = [0; 4];
    stream
        .read_exact(&mut header)
        .map_err(|e| format!("mysql {addr}: {e}"))?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if header[3] != 0 || !(5..=1024).contains(&len) {
        return Err(format!("{addr} does not speak the MySQL protocol"));
    }
    let mut payload = vec![0; len];
    stream
        .read_exact(&mut payload)
        .map_err(|e| format!("mysql {addr}: {e}"))?;
    match payload[0] {
        10 => Ok(()),
        0xff => Err(format!(
            "the MySQL server at {addr} refuses connections: {}",
            String::from_utf8_lossy(&payload[3..])
        )),
        _ => Err(format!("{addr} does not speak the MySQL protocol")),
    }
}

/// Creates a data directory in `dir` and starts `mariadbd` on `port`.
pub fn launch(port: u16, dir: &Path) -> Result<Launch, String> {
    let sbin = [std::path::PathBuf::from("/usr/sbin")];
    let install_db = process::which("mariadb-install-db", &[])
        .or_else(|| process::which("mysql_install_db", &[]))
        .ok_or_else(|| missing("mariadb-install-db", INSTALL))?;
    let server = process::which("mariadbd", &sbin)
        .or_else(|| process::which("mysqld", &sbin))
        .ok_or_else(|| missing("mariadbd", INSTALL))?;
    let data = dir.join("data");
    // mariadbd refuses to run as root unless told to.
    let user = process::running_as_root().then_some("--user=root");
    // A private temporary directory: bootstraps running side by side in the shared /tmp were
    // seen to trip over each other's temporary tables.
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let tmpdir = format!("--tmpdir={}", tmp.display());
    let install_log = dir.join("install.log");
    let output = Command::new(install_db)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg(&tmpdir)
        .args(user)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run mariadb-install-db: {e}"))?;
    let _ = std::fs::write(&install_log, [output.stdout, output.stderr].concat());
    if !output.status.success() {
        let why = process::tail(&install_log, 15);
        return Err(format!(
            "mariadb-install-db failed ({}):\n{why}",
            output.status
        ));
    }
    let init = dir.join("init.sql");
    std::fs::write(&init, "CREATE DATABASE IF NOT EXISTS test;\n")
        .map_err(|e| format!("cannot write {}: {e}", init.display()))?;
    let log = dir.join("mariadb.log");
    let mut command = Command::new(server);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
        .arg(format!("--init-file={}", init.display()))
        .arg(&tmpdir)
        .args([
            "--innodb-buffer-pool-size=64M",
            "--max-connections=300",
            "--skip-log-bin",
        ])
        .args(user);
    let child = spawn(&mut command, &log)?;
    Ok(Launch {
        child,
        url: local_url(port),
        dir: dir.to_owned(),
        log,
        pid_file: None,
        stop_signal: "TERM",
        others: Vec::new(),
    })
}

/// The test namespaces on the server at `url` (see the module docs for where they are sought).
pub fn test_namespaces(url: &str) -> Result<Vec<String>, String> {
    let listing = r"
        SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 't\_%'
        UNION SELECT table_name FROM information_schema.tables WHERE table_name LIKE 't\_%'
        UNION SELECT CONCAT('SELECT DISTINCT `namespace` FROM `', REPLACE(table_schema, '`', '``'),
                            '`.`', REPLACE(table_name, '`', '``'),
                            '` WHERE `namespace` LIKE ''t\\_%''')
              FROM information_schema.columns
              WHERE column_name = 'namespace'
                AND table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')";
    let mut names = Vec::new();
    for line in client(url, listing)? {
        if line.starts_with("SELECT ") {
            names.extend(client(url, &line)?);
        } else {
            names.push(line);
        }
    }
    names.retain(|n| is_test_namespace(n));
    names.sort();
    names.dedup();
    Ok(names)
}

/// Drops the databases and tables named after the given test namespaces and deletes their rows
/// from every table with a `namespace` column.
pub fn remove_namespaces(url: &str, names: &[String]) -> Result<(), String> {
    let list = super::sql_list(names);
    let quoted = list.replace('\'', "''");
    let statements = format!(
        r"SELECT CONCAT('DROP DATABASE IF EXISTS `', REPLACE(schema_name, '`', '``'), '`')
              FROM information_schema.schemata WHERE schema_name IN ({list})
          UNION ALL SELECT CONCAT('DROP TABLE IF EXISTS `', REPLACE(table_schema, '`', '``'),
                                  '`.`', REPLACE(table_name, '`', '``'), '`')
              FROM information_schema.tables WHERE table_name IN ({list})
          UNION ALL SELECT CONCAT('DELETE FROM `', REPLACE(table_schema, '`', '``'), '`.`',
                                  REPLACE(table_name, '`', '``'),
                                  '` WHERE `namespace` IN ({quoted})')
              FROM information_schema.columns
              WHERE column_name = 'namespace'
                AND table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')"
    );
    for statement in client(url, &statements)? {
        client(url, &statement)?;
    }
    Ok(())
}

/// Runs SQL with the `mariadb` (or `mysql`) client and returns its rows.
fn client(url: &str, sql: &str) -> Result<Vec<String>, String> {
    let program = process::which("mariadb", &[])
        .or_else(|| process::which("mysql", &[]))
        .ok_or_else(|| missing("mariadb", "apt-get install -y mariadb-client"))?;
    let parsed = ServiceUrl::parse(url, 3306)?;
    let mut command = Command::new(program);
    command
        .args(["--protocol=TCP", "-N", "-B", "--connect-timeout=5"])
        .args(["-h", &parsed.host, "-P", &parsed.port.to_string()])
        .args(["-u", parsed.user.as_deref().unwrap_or("root")])
        .env("MYSQL_PWD", parsed.password.as_deref().unwrap_or(""))
        .stdin(Stdio::null());
    if !parsed.path.is_empty() {
        command.args(["-D", &parsed.path]);
    }
    command.args(["-e", sql]);
    super::client_lines(&mut command, "the mariadb client", &parsed)
}

#[cfg(test)]
mod tests {
    use super::super::{Origin, Service, ServiceKind, testing, wait_until_answering};
    use super::*;

    #[test]
    fn a_throwaway_mariadb_starts_answers_lists_and_stops() {
        testing::start_probe_stop(ServiceKind::Mysql);
    }

    #[test]
    fn test_namespaces_are_found_in_tables_columns_and_databases() {
        let port = process::free_port().unwrap();
        let dir = process::temp_dir("mysql-leftover-test").unwrap();
        let launch = launch(port, &dir).unwrap();
        let service = Service {
            kind: ServiceKind::Mysql,
            url: launch.url.clone(),
            origin: Origin::Throwaway(launch),
            kept: false,
        };
        let service = wait_until_answering(service).unwrap();
        client(
            &service.url,
            "CREATE TABLE entries (namespace VARCHAR(64), v INT);
             INSERT INTO entries VALUES ('t_12_a_ff', 1), ('t_12_a_ff', 2), ('cachier', 3);
             CREATE DATABASE t_13_b_00; CREATE TABLE t_14_c_01 (v INT);",
        )
        .unwrap();
        let found = test_namespaces(&service.url).unwrap();
        assert_eq!(found, vec!["t_12_a_ff", "t_13_b_00", "t_14_c_01"]);
        service.stop().unwrap();
    }
}
