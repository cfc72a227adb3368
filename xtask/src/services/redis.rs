//! Redis: the probe (`PING`), a throwaway `redis-server`, and the test keys left behind.
//!
//! The backend (`crates/backend-redis/src/layout.rs`) stores an entry under the hash-tagged key
//! `{namespace:func:hash}` and its claim under `{namespace:func:hash}:claim`, so a test
//! namespace shows up as keys beginning with `{t_`. They are found with `SCAN ... MATCH`
//! over RESP, spoken directly on a TCP socket; keys without the brace are recognised too.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;

use super::{Launch, ServiceUrl, connect, is_test_namespace, missing, spawn};
use crate::process;

/// The URL of a Redis server on 127.0.0.1 at `port`.
pub fn local_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// Sends `PING` and expects `+PONG`.
pub fn probe(addr: SocketAddr) -> Result<(), String> {
    let mut conn = Connection::open(addr)?;
    match conn.call(&["PING"])? {
        Reply::Status(s) if s == "PONG" => Ok(()),
        other => Err(format!("{addr} answered PING with {other:?}")),
    }
}

/// Starts `redis-server` on `port`, keeping nothing on disk.
pub fn launch(port: u16, dir: &Path) -> Result<Launch, String> {
    let binary = process::which("redis-server", &[])
        .ok_or_else(|| missing("redis-server", "apt-get install -y redis-server"))?;
    let log = dir.join("redis.log");
    let mut command = Command::new(binary);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir);
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

/// The distinct test namespaces among the keys of the server at `url`.
pub fn test_namespaces(url: &str) -> Result<Vec<String>, String> {
    let parsed = ServiceUrl::parse(url, 6379)?;
    let mut conn = Connection::open(parsed.socket_addr()?)?;
    if let Some(password) = &parsed.password {
        let user = parsed.user.clone().unwrap_or_else(|| "default".to_owned());
        expect_ok(conn.call(&["AUTH", &user, password])?, "AUTH")?;
    }
    if !parsed.path.is_empty() {
        expect_ok(conn.call(&["SELECT", &parsed.path])?, "SELECT")?;
    }
    let mut namespaces = std::collections::BTreeSet::new();
    let mut cursor = "0".to_owned();
    loop {
        let reply = conn.call(&["SCAN", &cursor, "MATCH", "*t_*", "COUNT", "1000"])?;
        let Reply::Array(mut parts) = reply else {
            return Err(format!("unexpected SCAN reply {reply:?}"));
        };
        let (Some(Reply::Array(keys)), Some(Reply::Bulk(Some(next)))) = (parts.pop(), parts.pop())
        else {
            return Err("unexpected SCAN reply shape".to_owned());
        };
        for key in keys {
            if let Reply::Bulk(Some(key)) = key
                && let Some(namespace) = namespace_of_key(&key)
            {
                namespaces.insert(namespace.to_owned());
            }
        }
        cursor = next;
        if cursor == "0" {
            return Ok(namespaces.into_iter().collect());
        }
    }
}

/// Unlinks every key of the given test namespaces.
pub fn remove_namespaces(url: &str, names: &[String]) -> Result<(), String> {
    let (mut conn, doomed) = keys_of_namespaces(url, names)?;
    for batch in doomed.chunks(500) {
        let mut args = vec!["UNLINK"];
        args.extend(batch.iter().map(String::as_str));
        if let Reply::Error(e) = conn.call(&args)? {
            return Err(format!("redis refused UNLINK: {e}"));
        }
    }
    Ok(())
}

/// Unlinks every key of the given test namespaces one key per command: on a Redis Cluster
/// node, where keys of different slots cannot share a command.
pub fn remove_namespaces_key_by_key(url: &str, names: &[String]) -> Result<(), String> {
    let (mut conn, doomed) = keys_of_namespaces(url, names)?;
    for key in &doomed {
        if let Reply::Error(e) = conn.call(&["UNLINK", key])? {
            return Err(format!("redis refused UNLINK: {e}"));
        }
    }
    Ok(())
}

/// A connection to the server at `url` and the keys on it of the given test namespaces.
fn keys_of_namespaces(url: &str, names: &[String]) -> Result<(Connection, Vec<String>), String> {
    let parsed = ServiceUrl::parse(url, 6379)?;
    let mut conn = Connection::open(parsed.socket_addr()?)?;
    if let Some(password) = &parsed.password {
        let user = parsed.user.clone().unwrap_or_else(|| "default".to_owned());
        expect_ok(conn.call(&["AUTH", &user, password])?, "AUTH")?;
    }
    if !parsed.path.is_empty() {
        expect_ok(conn.call(&["SELECT", &parsed.path])?, "SELECT")?;
    }
    let mut doomed = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let reply = conn.call(&["SCAN", &cursor, "MATCH", "*t_*", "COUNT", "1000"])?;
        let Reply::Array(mut parts) = reply else {
            return Err(format!("unexpected SCAN reply {reply:?}"));
        };
        let (Some(Reply::Array(keys)), Some(Reply::Bulk(Some(next)))) = (parts.pop(), parts.pop())
        else {
            return Err("unexpected SCAN reply shape".to_owned());
        };
        for key in keys {
            if let Reply::Bulk(Some(key)) = key
                && namespace_of_key(&key).is_some_and(|ns| names.iter().any(|n| n == ns))
            {
                doomed.push(key);
            }
        }
        cursor = next;
        if cursor == "0" {
            return Ok((conn, doomed));
        }
    }
}

/// The test namespace a key belongs to: the part before the first `:`, without the hash-tag
/// brace.
fn namespace_of_key(key: &str) -> Option<&str> {
    let unbraced = key.strip_prefix('{').unwrap_or(key);
    let namespace = unbraced.split(':').next().unwrap_or_default();
    is_test_namespace(namespace).then_some(namespace)
}

fn expect_ok(reply: Reply, what: &str) -> Result<(), String> {
    match reply {
        Reply::Status(s) if s == "OK" => Ok(()),
        other => Err(format!("redis refused {what}: {other:?}")),
    }
}

/// A RESP2 reply.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

/// One blocking RESP connection.
pub(super) struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub(super) fn open(addr: SocketAddr) -> Result<Connection, String> {
        let stream = connect(addr)?;
        let reader = stream
            .try_clone()
            .map_err(|e| format!("redis {addr}: {e}"))?;
        Ok(Connection {
            writer: stream,
            reader: BufReader::new(reader),
        })
    }

    pub(super) fn call(&mut self, args: &[&str]) -> Result<Reply, String> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        self.writer
            .write_all(&request)
            .map_err(|e| format!("redis write: {e}"))?;
        read_reply(&mut self.reader)
    }
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    let read = reader
        .read_line(&mut line)
        .map_err(|e| format!("redis read: {e}"))?;
    if read == 0 || !line.ends_with("\r\n") {
        return Err(format!("not a RESP reply: {line:?}"));
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1.min(line.len()));
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| format!("not a RESP reply: {line:?}"))
    };
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(number()?),
        "$" => match usize::try_from(number()?) {
            Err(_) => Reply::Bulk(None),
            Ok(len) => {
                let mut body = vec![0; len + 2];
                reader
                    .read_exact(&mut body)
                    .map_err(|e| format!("redis read: {e}"))?;
                body.truncate(len);
                Reply::Bulk(Some(String::from_utf8_lossy(&body).into_owned()))
            }
        },
        "*" => {
            let count = usize::try_from(number()?).unwrap_or(0);
            let items = (0..count)
                .map(|_| read_reply(reader))
                .collect::<Result<_, _>>()?;
            Reply::Array(items)
        }
        _ => return Err(format!("not a RESP reply: {line:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_replies_parse() {
        let mut input: &[u8] =
            b"*2\r\n$1\r\n0\r\n*2\r\n$6\r\nt_1_ab\r\n$-1\r\n+OK\r\n:-3\r\n-ERR x\r\n";
        let array = read_reply(&mut input).unwrap();
        let expected = Reply::Array(vec![
            Reply::Bulk(Some("0".into())),
            Reply::Array(vec![Reply::Bulk(Some("t_1_ab".into())), Reply::Bulk(None)]),
        ]);
        assert_eq!(array, expected);
        assert_eq!(read_reply(&mut input).unwrap(), Reply::Status("OK".into()));
        assert_eq!(read_reply(&mut input).unwrap(), Reply::Integer(-3));
        assert_eq!(
            read_reply(&mut input).unwrap(),
            Reply::Error("ERR x".into())
        );
        assert!(read_reply(&mut input).is_err());
    }

    #[test]
    fn a_throwaway_redis_starts_answers_lists_and_stops() {
        super::super::testing::start_probe_stop(super::super::ServiceKind::Redis);
    }

    #[test]
    fn test_keys_are_found_by_namespace() {
        let port = process::free_port().unwrap();
        let dir = process::temp_dir("redis-leftover-test").unwrap();
        let launch = launch(port, &dir).unwrap();
        let service = super::super::Service {
            kind: super::super::ServiceKind::Redis,
            url: launch.url.clone(),
            origin: super::super::Origin::Throwaway(launch),
            kept: false,
        };
        let service = super::super::wait_until_answering(service).unwrap();
        let mut conn = Connection::open(([127, 0, 0, 1], port).into()).unwrap();
        let keys = [
            "{t_77_round_trip_ab12:f:h1}",
            "{t_77_round_trip_ab12:f:h1}:claim",
            "t_78_plain_cd34:f:h2",
            "{cachier:t_f:h}",
            "{cachier:f:h}",
        ];
        for key in keys {
            assert_eq!(
                conn.call(&["SET", key, "v"]).unwrap(),
                Reply::Status("OK".into())
            );
        }
        assert_eq!(
            test_namespaces(&service.url).unwrap(),
            vec!["t_77_round_trip_ab12", "t_78_plain_cd34"]
        );
        service.stop().unwrap();
    }
}
