//! S3: the probe (`ListBuckets` over HTTP), a throwaway moto server with one bucket per run,
//! and the test namespaces left in it.
//!
//! No cloud is reachable here, so the S3 server is moto's, an S3-compatible server from PyPI
//! (`moto`, pinned) that honours `If-None-Match` and `If-Match` on `PutObject`, which the
//! backend's claims rely on, run by a small script of ours (`s3_server.py`, installed as
//! `cachier-s3-server`) that serves one request at a time: moto's own threaded server is not
//! atomic per request. It is looked for in `CACHIER_MOTO_BIN`, then in the virtual environment
//! `target/xtask/s3-venv`, which [`setup`] (`cargo xtask setup-s3`) creates — automatically when
//! a server is needed and none is installed. The tests' URL is `s3://BUCKET?endpoint=http://127.0.0.1:PORT&region=us-east-1`;
//! xtask creates a bucket of its own for each run on a throwaway server and everything goes
//! with the server when it stops. `CACHIER_TEST_S3_URL` names another store instead (its bucket
//! must exist; its credentials come from the standard `AWS_*` variables).
//!
//! The backend (`crates/backend-object-store`) keeps a namespace under `{prefix}/{namespace}/`;
//! the tests use no prefix, so test namespaces are the bucket's top-level "directories"
//! `t_...`, found with an unsigned `ListObjectsV2` (moto checks no signatures) and a `/` delimiter (moto takes unsigned
//! requests; a real S3 bucket refuses them, and its leftovers are reported as unreadable).

use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Launch, connect, is_test_namespace, missing, spawn};
use crate::{process, workspace};

/// The pinned packages of the S3 server: moto's S3 backend and the web framework its server
/// application runs on (not `moto[server]`, which brings every AWS service: 315 MB against
/// 138 MB, 35 s against 18 s to install here).
pub const PACKAGES: [&str; 3] = ["moto[s3]==5.2.1", "flask==3.1.3", "flask-cors==6.0.5"];

/// The server script [`setup`] puts into the virtual environment: moto's application behind one
/// lock, so that each request is atomic as on real S3 (see the script).
const SERVER_SCRIPT: &str = include_str!("s3_server.py");

/// The name of the server script in the virtual environment's `bin`.
const SERVER_NAME: &str = "cachier-s3-server";

/// The environment variable naming the S3 server program, for tests that start their own.
pub const BIN_VAR: &str = "CACHIER_MOTO_BIN";

/// The URL of a bucket for this run on an S3 server on 127.0.0.1 at `port`.
pub fn local_url(port: u16) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "s3://cachier-test-{}-{nanos:x}?endpoint=http://127.0.0.1:{port}&region=us-east-1",
        std::process::id()
    )
}

/// The parts of a test URL: the bucket and the endpoint's address.
pub fn parse(url: &str) -> Result<(String, SocketAddr), String> {
    let bad = |why: &str| format!("cannot use S3 URL {url:?}: {why}");
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("it does not start with s3://"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let bucket = path.split('/').next().unwrap_or_default();
    if bucket.is_empty() {
        return Err(bad("no bucket"));
    }
    let endpoint = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("endpoint="))
        .ok_or_else(|| bad("no endpoint=http://HOST:PORT (xtask checks only local servers)"))?;
    let endpoint = endpoint.replace("%3A", ":").replace("%2F", "/");
    let hostport = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| bad("the endpoint is not http://HOST:PORT"))?
        .trim_end_matches('/');
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve {hostport}: {e}")))?
        .next()
        .ok_or_else(|| bad("the endpoint resolves to nothing"))?;
    Ok((bucket.to_owned(), addr))
}

/// A placeholder `Authorization` header: moto checks no signatures, but refuses some requests
/// (deletes) that carry none.
const UNSIGNED: &str = "AWS4-HMAC-SHA256 Credential=cachier-test/20200101/us-east-1/s3/aws4_request, \
                        SignedHeaders=host, Signature=0";

/// One unsigned HTTP/1.1 request without a body; returns the status and the body.
fn request(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = connect(addr)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {UNSIGNED}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("S3 request to {addr}: {e}"))?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .map_err(|e| format!("S3 reply from {addr}: {e}"))?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{addr} did not answer HTTP"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The payload of a chunked HTTP body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// Sends `ListBuckets` and expects an S3 answer.
pub fn probe(addr: SocketAddr) -> Result<(), String> {
    let (status, body) = request(addr, "GET", "/")?;
    if status == 200 && body.contains("ListAllMyBucketsResult") {
        Ok(())
    } else {
        Err(format!("{addr} is not an S3 server (status {status})"))
    }
}

/// Creates the bucket of the test URL `url` (on a throwaway server).
pub fn create_bucket(url: &str) -> Result<(), String> {
    let (bucket, addr) = parse(url)?;
    let (status, body) = request(addr, "PUT", &format!("/{bucket}"))?;
    if status == 200 {
        Ok(())
    } else {
        Err(format!("creating bucket {bucket}: status {status}: {body}"))
    }
}

/// The S3 server tests starting private servers of their own must use: the installed one,
/// else the one [`setup`] installs. The matrix hands it to them in `CACHIER_MOTO_BIN`.
pub fn server_binary() -> Result<PathBuf, String> {
    match installed_server() {
        Some(server) => Ok(server),
        None => setup(),
    }
}

fn installed_server() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os(BIN_VAR).filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    Some(venv().join("bin").join(SERVER_NAME)).filter(|server| server.exists())
}

/// The virtual environment `setup` creates.
pub fn venv() -> PathBuf {
    workspace::xtask_dir().join("s3-venv")
}

/// Creates the virtual environment with the pinned S3 server and the server script (unless
/// they are already there) and returns the script's path.
pub fn setup() -> Result<PathBuf, String> {
    let venv = venv();
    let server = venv.join("bin").join(SERVER_NAME);
    if server.exists() {
        return Ok(server);
    }
    if venv.join("bin").join("moto_server").exists() {
        write_server_script(&venv)?;
        return Ok(server);
    }
    let manual = format!(
        "python3 -m venv {0} && {0}/bin/pip install '{1}' '{2}' '{3}' \
         (then run cargo xtask setup-s3 for the server script)",
        venv.display(),
        PACKAGES[0],
        PACKAGES[1],
        PACKAGES[2]
    );
    let python = process::which("python3", &[])
        .ok_or_else(|| missing("python3", "apt-get install -y python3 python3-venv"))?;
    eprintln!("xtask: installing the S3 server: {manual}");
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
    if !installed.is_ok_and(|s| s.success()) || !venv.join("bin").join("moto_server").exists() {
        let _ = std::fs::remove_dir_all(&venv);
        return Err(format!("installing moto failed; run by hand: {manual}"));
    }
    write_server_script(&venv)?;
    Ok(server)
}

/// Writes the server script into `venv/bin`, run by the environment's own Python.
fn write_server_script(venv: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let server = venv.join("bin").join(SERVER_NAME);
    let python = venv.join("bin").join("python3");
    let script = format!("#!{}\n{SERVER_SCRIPT}", python.display());
    std::fs::write(&server, script)
        .and_then(|()| std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("cannot write {}: {e}", server.display()))
}

/// Starts the S3 server on `port` (it keeps everything in memory).
pub fn launch(port: u16, dir: &Path) -> Result<Launch, String> {
    let server = server_binary()?;
    let log = dir.join("s3-server.log");
    let mut command = Command::new(server);
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
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

/// The test namespaces (top-level `t_...` prefixes) in the bucket of `url`.
pub fn test_namespaces(url: &str) -> Result<Vec<String>, String> {
    let (bucket, addr) = parse(url)?;
    let (status, body) = request(
        addr,
        "GET",
        &format!("/{bucket}?list-type=2&delimiter=%2F&max-keys=1000"),
    )?;
    if status == 404 {
        return Ok(Vec::new()); // No bucket, nothing left.
    }
    if status != 200 {
        return Err(format!("listing bucket {bucket}: status {status}"));
    }
    let mut names: Vec<String> = tag_values(&body, "Prefix")
        .into_iter()
        .map(|p| p.trim_end_matches('/').to_owned())
        .filter(|n| is_test_namespace(n))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Deletes every object under the given namespaces in the bucket of `url`.
pub fn remove_namespaces(url: &str, names: &[String]) -> Result<(), String> {
    let (bucket, addr) = parse(url)?;
    for name in names {
        loop {
            let (status, body) = request(
                addr,
                "GET",
                &format!("/{bucket}?list-type=2&prefix={name}%2F&max-keys=1000"),
            )?;
            if status != 200 {
                return Err(format!(
                    "listing {name} in bucket {bucket}: status {status}"
                ));
            }
            let keys = tag_values(&body, "Key");
            if keys.is_empty() {
                break;
            }
            for key in keys {
                let (status, _) = request(addr, "DELETE", &format!("/{bucket}/{}", escape(&key)))?;
                if status != 204 && status != 200 {
                    return Err(format!(
                        "deleting {key} in bucket {bucket}: status {status}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The texts of every `<tag>...</tag>` in an XML answer, with the five XML escapes undone.
fn tag_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut values = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        values.push(
            after[..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[end + close.len()..];
    }
    values
}

/// An object key as a request path: unreserved characters and `/` stay, the rest is `%XX`.
fn escape(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Origin, Service, ServiceKind, testing, wait_until_answering};
    use super::*;

    #[test]
    fn a_throwaway_s3_server_starts_answers_lists_and_stops() {
        testing::start_probe_stop(ServiceKind::S3);
    }

    #[test]
    fn urls_name_the_bucket_and_the_endpoint() {
        let (bucket, addr) =
            parse("s3://b1/p?endpoint=http://127.0.0.1:9000&region=us-east-1").unwrap();
        assert_eq!((bucket.as_str(), addr.port()), ("b1", 9000));
        assert!(parse("s3://b1?region=x").is_err());
        assert!(parse("redis://127.0.0.1").is_err());
    }

    #[test]
    fn test_namespaces_are_found_and_removed() {
        let port = process::free_port().unwrap();
        let dir = process::temp_dir("s3-leftover-test").unwrap();
        let launch = launch(port, &dir).unwrap();
        let service = Service {
            kind: ServiceKind::S3,
            url: launch.url.clone(),
            origin: Origin::Throwaway(launch),
            kept: false,
        };
        let service = wait_until_answering(service).unwrap();
        create_bucket(&service.url).unwrap();
        let (bucket, addr) = parse(&service.url).unwrap();
        for key in [
            "t_21_a/f/x",
            "t_21_a/g%3Ah/y.claim",
            "t_22_b/f/z",
            "app/f/x",
        ] {
            let (status, body) = request(addr, "PUT", &format!("/{bucket}/{key}")).unwrap();
            assert_eq!(status, 200, "{body}");
        }
        assert_eq!(
            test_namespaces(&service.url).unwrap(),
            vec!["t_21_a", "t_22_b"]
        );
        remove_namespaces(&service.url, &["t_21_a".to_owned()]).unwrap();
        assert_eq!(test_namespaces(&service.url).unwrap(), vec!["t_22_b"]);
        service.stop().unwrap();
    }
}
