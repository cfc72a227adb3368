//! MongoDB: the probe (`hello` over OP_MSG), a throwaway `nx-27017` wire server, and the test
//! collections left behind.
//!
//! No real `mongod` can be installed here, so a throwaway server is `nx-27017`, a MongoDB
//! wire-protocol server from PyPI backed by SQLite. It is looked for in `CACHIER_NX27017_BIN`,
//! then as `nx-27017` on `PATH`, then in the virtual environment `target/xtask/nx-venv`, which
//! [`setup`] (`cargo xtask setup-mongo`) creates — automatically when a server is needed and
//! none is installed.
//!
//! The backend (`crates/backend-mongo/src/config.rs`) keeps one collection per namespace, named
//! by its collection prefix (default `cachier_`) and the namespace with `_`, `.` and `-` escaped
//! as `__`, `_d` and `_h`: namespace `t_1_a` lives in `cachier_t__1__a`. Leftovers are such
//! collections (and databases or collections named `t_...` outright), found with
//! `listDatabases` and `listCollections` in every database.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::bson::{Document, Value};
use super::{Launch, ServiceUrl, connect, is_test_namespace, missing, spawn};
use crate::{process, workspace};

/// The pinned packages of the wire server.
pub const PACKAGES: [&str; 2] = ["nx-27017==0.8.1", "neosqlite==1.17.2"];

/// The URL of a MongoDB server on 127.0.0.1 at `port`.
pub fn local_url(port: u16) -> String {
    format!("mongodb://127.0.0.1:{port}")
}

/// Sends `hello` (then the legacy `isMaster`) and expects `ok: 1`.
pub fn probe(addr: SocketAddr) -> Result<(), String> {
    let mut stream = connect(addr)?;
    let mut last = String::new();
    for command in ["hello", "isMaster"] {
        let request = Document::default()
            .with(command, Value::Int32(1))
            .with("$db", Value::String("admin".into()));
        match run_command(&mut stream, &request) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(format!("{addr} is not a MongoDB server: {last}"))
}

/// Runs one command and returns its reply when the reply says `ok: 1`.
fn run_command(stream: &mut TcpStream, command: &Document) -> Result<Document, String> {
    const OP_MSG: i32 = 2013;
    let body = command.encode();
    let len = i32::try_from(16 + 4 + 1 + body.len()).map_err(|_| "command too large")?;
    let mut message = Vec::with_capacity(body.len() + 21);
    for field in [len, 1, 0, OP_MSG] {
        message.extend_from_slice(&field.to_le_bytes());
    }
    message.extend_from_slice(&0_u32.to_le_bytes()); // flag bits
    message.push(0); // section kind 0: the body document
    message.extend_from_slice(&body);
    stream
        .write_all(&message)
        .map_err(|e| format!("mongo write: {e}"))?;

    let mut header = [0; 16];
    stream
        .read_exact(&mut header)
        .map_err(|e| format!("mongo read: {e}"))?;
    let word = |i: usize| i32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let (len, op) = (word(0), word(12));
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (21..=48 << 20).contains(l));
    let len = len.ok_or("not a MongoDB reply (bad message length)")?;
    if op != OP_MSG {
        return Err(format!("not an OP_MSG reply (opcode {op})"));
    }
    let mut rest = vec![0; len - 16];
    stream
        .read_exact(&mut rest)
        .map_err(|e| format!("mongo read: {e}"))?;
    if rest[4] != 0 {
        return Err("OP_MSG reply without a body section".to_owned());
    }
    let (reply, _) = Document::decode(&rest[5..])?;
    match reply.get("ok").and_then(Value::as_f64) {
        Some(1.0) => Ok(reply),
        _ => Err(format!("command failed: {:?}", reply.get("errmsg"))),
    }
}

/// The `nx-27017` that tests starting private servers of their own must use: the installed one,
/// else the one [`setup`] installs. The matrix hands it to them in `CACHIER_NX27017_BIN`.
pub fn server_binary() -> Result<PathBuf, String> {
    match installed_server() {
        Some(server) => Ok(server),
        None => setup(),
    }
}

/// The `nx-27017` to run, if one is installed.
fn installed_server() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("CACHIER_NX27017_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    process::which("nx-27017", &[venv().join("bin")])
}

/// The virtual environment `setup` creates.
pub fn venv() -> PathBuf {
    workspace::xtask_dir().join("nx-venv")
}

/// Creates the virtual environment with the pinned wire server (unless it is already there)
/// and returns the server's path.
pub fn setup() -> Result<PathBuf, String> {
    let venv = venv();
    let server = venv.join("bin").join("nx-27017");
    if server.exists() {
        return Ok(server);
    }
    let manual = format!(
        "python3 -m venv {0} && {0}/bin/pip install '{1}' '{2}'",
        venv.display(),
        PACKAGES[0],
        PACKAGES[1]
    );
    let python = process::which("python3", &[])
        .ok_or_else(|| missing("python3", "apt-get install -y python3 python3-venv"))?;
    eprintln!("xtask: installing the MongoDB wire server: {manual}");
    let created = Command::new(python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status();
    if !created.is_ok_and(|s| s.success()) {
        let _ = std::fs::remove_dir_all(&venv);
        return Err(format!(
            "cannot create a Python virtual environment (apt-get install -y python3-venv), \
             or run by hand: {manual}"
        ));
    }
    let installed = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(PACKAGES)
        .stdin(Stdio::null())
        .status();
    if !installed.is_ok_and(|s| s.success()) || !server.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        return Err(format!("installing nx-27017 failed; run by hand: {manual}"));
    }
    Ok(server)
}

/// Starts `nx-27017` on `port` with in-memory databases.
pub fn launch(port: u16, dir: &Path) -> Result<Launch, String> {
    let server = server_binary()?;
    let log = dir.join("nx-27017.log");
    let mut command = Command::new(server);
    command
        .args([
            "--host",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--data-dir",
            "memory",
        ])
        .arg("--log-file")
        .arg(dir.join("server.log"))
        .arg("--pid-file")
        .arg(dir.join("nx-27017.pid"))
        .current_dir(dir);
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

/// The test databases and collections on the server at `url`.
pub fn test_namespaces(url: &str) -> Result<Vec<String>, String> {
    let mut stream = connect(ServiceUrl::parse(url, 27017)?.socket_addr()?)?;
    let command = |name: &str, db: &str| {
        Document::default()
            .with(name, Value::Int32(1))
            .with("nameOnly", Value::Bool(true))
            .with("$db", Value::String(db.to_owned()))
    };
    let databases = run_command(&mut stream, &command("listDatabases", "admin"))?;
    let mut names = Vec::new();
    for database in names_in(databases.get("databases")) {
        if ["admin", "local", "config"].contains(&database.as_str()) {
            continue;
        }
        let cursor = Document::default().with("batchSize", Value::Int32(100_000));
        let listing = command("listCollections", &database).with("cursor", Value::Document(cursor));
        let reply = run_command(&mut stream, &listing)?;
        let batch = reply.document("cursor").and_then(|c| c.get("firstBatch"));
        names.extend(names_in(batch).iter().map(|c| namespace_of_collection(c)));
        names.push(database);
    }
    names.retain(|n| is_test_namespace(n));
    names.sort();
    names.dedup();
    Ok(names)
}

/// Drops the databases named after the given test namespaces and the collections holding them.
pub fn remove_namespaces(url: &str, names: &[String]) -> Result<(), String> {
    let mut stream = connect(ServiceUrl::parse(url, 27017)?.socket_addr()?)?;
    let listing = |name: &str, db: &str| {
        Document::default()
            .with(name, Value::Int32(1))
            .with("nameOnly", Value::Bool(true))
            .with("$db", Value::String(db.to_owned()))
    };
    let databases = run_command(&mut stream, &listing("listDatabases", "admin"))?;
    for database in names_in(databases.get("databases")) {
        if ["admin", "local", "config"].contains(&database.as_str()) {
            continue;
        }
        if names.contains(&database) {
            let drop = Document::default()
                .with("dropDatabase", Value::Int32(1))
                .with("$db", Value::String(database.clone()));
            run_command(&mut stream, &drop)?;
            continue;
        }
        let cursor = Document::default().with("batchSize", Value::Int32(100_000));
        let request = listing("listCollections", &database).with("cursor", Value::Document(cursor));
        let reply = run_command(&mut stream, &request)?;
        let batch = reply.document("cursor").and_then(|c| c.get("firstBatch"));
        for collection in names_in(batch) {
            if names.contains(&namespace_of_collection(&collection)) {
                let drop = Document::default()
                    .with("drop", Value::String(collection))
                    .with("$db", Value::String(database.clone()));
                run_command(&mut stream, &drop)?;
            }
        }
    }
    Ok(())
}

/// The namespace a collection holds: the backend's default prefix removed and its escapes
/// undone; other names are returned as they are.
fn namespace_of_collection(collection: &str) -> String {
    let Some(escaped) = collection.strip_prefix("cachier_") else {
        return collection.to_owned();
    };
    let mut namespace = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('_', Some(next @ ('_' | 'd' | 'h'))) => {
                chars.next();
                namespace.push(match next {
                    '_' => '_',
                    'd' => '.',
                    _ => '-',
                });
            }
            (c, _) => namespace.push(c),
        }
    }
    namespace
}

/// The `name` fields of an array of documents.
fn names_in(array: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = array else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item {
            Value::Document(d) => match d.get("name") {
                Some(Value::String(name)) => Some(name.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{Origin, Service, ServiceKind, testing, wait_until_answering};
    use super::*;

    #[test]
    fn a_throwaway_wire_server_starts_answers_lists_and_stops() {
        testing::start_probe_stop(ServiceKind::Mongo);
    }

    #[test]
    fn test_collections_are_found() {
        let port = process::free_port().unwrap();
        let dir = process::temp_dir("mongo-leftover-test").unwrap();
        let launch = launch(port, &dir).unwrap();
        let service = Service {
            kind: ServiceKind::Mongo,
            url: launch.url.clone(),
            origin: Origin::Throwaway(launch),
            kept: false,
        };
        let service = wait_until_answering(service).unwrap();
        let mut stream = connect(([127, 0, 0, 1], port).into()).unwrap();
        for collection in [
            "cachier_t__21__a_dx_hy",
            "t_22_plain",
            "cachier_app",
            "other",
        ] {
            let doc = Document::default().with("func", Value::String("f".into()));
            let insert = Document::default()
                .with("insert", Value::String(collection.into()))
                .with("documents", Value::Array(vec![Value::Document(doc)]))
                .with("$db", Value::String("cachier_test".into()));
            run_command(&mut stream, &insert).unwrap();
        }
        assert_eq!(
            test_namespaces(&service.url).unwrap(),
            vec!["t_21_a.x-y", "t_22_plain"]
        );
        service.stop().unwrap();
    }
}
