//! Redis Cluster: a throwaway cluster of 3 primaries and 3 replicas on loopback, its probe, and
//! the test keys left on it.
//!
//! There is no standard port for a cluster: `CACHIER_TEST_REDIS_CLUSTER_URL`
//! (`redis+cluster://host:port,host:port`) names one, else xtask starts its own. Each node is a
//! `redis-server --cluster-enabled yes` on a free port with its cluster bus on another free port
//! (`--cluster-port`, so the bus never needs `port + 10000` to be free), persistence off,
//! `cluster-require-full-coverage no`; `redis-cli --cluster create ... --cluster-replicas 1`
//! assigns the slots and the replicas. The cluster is ready when every node says
//! `cluster_state:ok`, knows all six nodes, and every replica's link to its primary is up.
//! Every node runs in a process group of its own (like the other throwaway servers) and all of
//! them are stopped, and their directory removed, with the [`Service`](super::Service).
//!
//! Test keys are found by `SCAN` on every primary (`SCAN` walks one node) and removed one key
//! per `UNLINK` (keys of different slots cannot share a command).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::redis::{self as single, Connection, Reply};
use super::{Launch, ServiceUrl, missing, spawn};
use crate::process;

/// Primaries of the throwaway cluster.
pub const PRIMARIES: usize = 3;
/// Replicas per primary.
pub const REPLICAS: usize = 1;
/// `cluster-node-timeout` of the throwaway cluster, in milliseconds.
const NODE_TIMEOUT_MS: u64 = 5000;
/// How long `redis-cli --cluster create` may take.
const CREATE_LIMIT: Duration = Duration::from_secs(60);

/// `host:port` of each node in a `redis+cluster://` URL, and the credentials (`user:pass`) if
/// any.
pub fn seeds(url: &str) -> Result<(Vec<String>, Option<String>), String> {
    let bad = |why: &str| format!("cannot use Redis Cluster URL {url:?}: {why}");
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme://"))?;
    if scheme != "redis+cluster" {
        return Err(bad("xtask reaches clusters by redis+cluster:// only"));
    }
    let rest = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c.to_owned()), h),
        None => (None, rest),
    };
    let hosts: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    if hosts.is_empty() {
        return Err(bad("no host:port"));
    }
    Ok((hosts, credentials))
}

/// The `redis://` URL of one node, with the cluster URL's credentials.
fn node_url(host_port: &str, credentials: Option<&str>) -> String {
    match credentials {
        Some(c) => format!("redis://{c}@{host_port}"),
        None => format!("redis://{host_port}"),
    }
}

/// Opens a connection to a node and authenticates as the URL says.
fn open(url: &str) -> Result<Connection, String> {
    let parsed = ServiceUrl::parse(url, 6379)?;
    let mut conn = Connection::open(parsed.socket_addr()?)?;
    if let Some(password) = &parsed.password {
        let user = parsed.user.clone().unwrap_or_else(|| "default".to_owned());
        match conn.call(&["AUTH", &user, password])? {
            Reply::Status(s) if s == "OK" => {}
            other => return Err(format!("redis refused AUTH: {other:?}")),
        }
    }
    Ok(conn)
}

/// The text of a bulk-string reply to `args`.
fn text(conn: &mut Connection, args: &[&str]) -> Result<String, String> {
    match conn.call(args)? {
        Reply::Bulk(Some(text)) => Ok(text),
        other => Err(format!("redis answered {} with {other:?}", args.join(" "))),
    }
}

/// A node at `addr` answers `PING` and says `cluster_state:ok`.
pub fn probe(addr: SocketAddr) -> Result<(), String> {
    single::probe(addr)?;
    let mut conn = Connection::open(addr)?;
    let info = text(&mut conn, &["CLUSTER", "INFO"])?;
    if info.contains("cluster_state:ok") {
        Ok(())
    } else {
        Err(format!(
            "the Redis Cluster node at {addr} is not ok: {}",
            first_line(&info)
        ))
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The cluster behind `url` answers: its first reachable seed says `cluster_state:ok`.
pub fn probe_url(url: &str) -> Result<(), String> {
    let (hosts, credentials) = seeds(url)?;
    let mut last = String::new();
    for host in &hosts {
        let outcome = open(&node_url(host, credentials.as_deref())).and_then(|mut conn| {
            let info = text(&mut conn, &["CLUSTER", "INFO"])?;
            if info.contains("cluster_state:ok") {
                Ok(())
            } else {
                Err(format!("{host} is not ok: {}", first_line(&info)))
            }
        });
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(format!("no node of the Redis Cluster answers: {last}"))
}

/// The serving primaries (`host:port`) in a `CLUSTER NODES` reply.
pub fn parse_primaries(nodes: &str) -> Vec<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let serving = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f == "fail" || f == "noaddr")
                && fields.len() > 8;
            serving.then(|| fields[1].split(['@', ',']).next().map(str::to_owned))?
        })
        .collect()
}

/// The serving primaries of the cluster behind `url`, as `redis://` URLs with its credentials.
fn primary_urls(url: &str) -> Result<Vec<String>, String> {
    let (hosts, credentials) = seeds(url)?;
    let mut last = String::new();
    for host in &hosts {
        match open(&node_url(host, credentials.as_deref()))
            .and_then(|mut conn| text(&mut conn, &["CLUSTER", "NODES"]))
        {
            Ok(nodes) => {
                return Ok(parse_primaries(&nodes)
                    .iter()
                    .map(|p| node_url(p, credentials.as_deref()))
                    .collect());
            }
            Err(e) => last = e,
        }
    }
    Err(format!("no node of the Redis Cluster answers: {last}"))
}

/// The distinct test namespaces among the keys of every primary.
pub fn test_namespaces(url: &str) -> Result<Vec<String>, String> {
    let mut all = std::collections::BTreeSet::new();
    for primary in primary_urls(url)? {
        all.extend(single::test_namespaces(&primary)?);
    }
    Ok(all.into_iter().collect())
}

/// Unlinks every key of the given test namespaces on every primary, one key per command.
pub fn remove_namespaces(url: &str, names: &[String]) -> Result<(), String> {
    for primary in primary_urls(url)? {
        single::remove_namespaces_key_by_key(&primary, names)?;
    }
    Ok(())
}

/// `count` distinct ports nothing listens on right now (all bound at once, then released).
fn distinct_free_ports(count: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find free ports: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot find free ports: {e}"))
}

/// Starts the six nodes in `dir` and creates the cluster; the [`Launch`] holds every node.
/// On failure every node started is killed.
pub fn launch(dir: &Path) -> Result<Launch, String> {
    let server = process::which("redis-server", &[])
        .ok_or_else(|| missing("redis-server", "apt-get install -y redis-server"))?;
    let cli = process::which("redis-cli", &[])
        .ok_or_else(|| missing("redis-cli", "apt-get install -y redis-tools"))?;
    let count = PRIMARIES * (1 + REPLICAS);
    let ports = distinct_free_ports(count * 2)?;
    let mut children: Vec<Child> = Vec::new();
    let kill_all = |children: &mut Vec<Child>| {
        for child in children.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    };
    let mut addresses = Vec::new();
    for i in 0..count {
        let (port, bus) = (ports[2 * i], ports[2 * i + 1]);
        let log = dir.join(format!("node-{port}.log"));
        let mut command = Command::new(&server);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir);
        match spawn(&mut command, &log) {
            Ok(child) => children.push(child),
            Err(e) => {
                kill_all(&mut children);
                return Err(e);
            }
        }
        addresses.push(format!("127.0.0.1:{port}"));
    }
    let listening = addresses.iter().all(|address| {
        let addr: SocketAddr = address.parse().expect("a loopback address");
        let deadline = Instant::now() + Duration::from_secs(15);
        while single::probe(addr).is_err() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    });
    if !listening {
        kill_all(&mut children);
        return Err(format!(
            "the Redis Cluster nodes did not start; first node's log:\n{}",
            process::tail(&dir.join(format!("node-{}.log", ports[0])), 15)
        ));
    }
    let created = create(&cli, &addresses, dir);
    if let Err(e) = created {
        kill_all(&mut children);
        return Err(e);
    }
    let mut children = children.into_iter();
    let first = children.next().expect("six nodes");
    Ok(Launch {
        child: first,
        others: children.collect(),
        url: format!("redis+cluster://{}", addresses.join(",")),
        dir: dir.to_owned(),
        log: dir.join(format!("node-{}.log", ports[0])),
        pid_file: None,
        stop_signal: "TERM",
    })
}

/// `redis-cli --cluster create`, bounded in time.
fn create(cli: &Path, addresses: &[String], dir: &Path) -> Result<(), String> {
    let log = dir.join("create.log");
    let mut command = Command::new(cli);
    command.args(["--cluster", "create"]).args(addresses).args([
        "--cluster-replicas",
        &REPLICAS.to_string(),
        "--cluster-yes",
    ]);
    let mut child = spawn(&mut command, &log)?;
    if !process::wait_exit(&mut child, CREATE_LIMIT) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "redis-cli --cluster create did not finish in {CREATE_LIMIT:?}:\n{}",
            process::tail(&log, 15)
        ));
    }
    match child.wait() {
        Ok(status) if status.success() => Ok(()),
        _ => Err(format!(
            "redis-cli --cluster create failed:\n{}",
            process::tail(&log, 15)
        )),
    }
}

/// Waits until every node of the cluster at `url` says `cluster_state:ok`, knows all the
/// nodes, and (a replica) has its link to its primary up.
pub fn wait_ready(url: &str, limit: Duration) -> Result<(), String> {
    let (hosts, credentials) = seeds(url)?;
    let deadline = Instant::now() + limit;
    let total = hosts.len();
    loop {
        let mut last = String::new();
        let ready = hosts.iter().all(|host| {
            let check = open(&node_url(host, credentials.as_deref())).and_then(|mut conn| {
                let info = text(&mut conn, &["CLUSTER", "INFO"])?;
                let replication = text(&mut conn, &["INFO", "replication"])?;
                let ok = info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{total}"))
                    && (!replication.contains("role:slave")
                        || replication.contains("master_link_status:up"));
                if ok {
                    Ok(())
                } else {
                    Err(format!("{host}: {}", first_line(&info)))
                }
            });
            check.map_err(|e| last = e).is_ok()
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the throwaway Redis Cluster was not ready within {limit:?} ({last})"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_and_node_listings_are_read() {
        let (hosts, credentials) =
            seeds("redis+cluster://u:p@127.0.0.1:7000,127.0.0.1:7001/0").expect("a cluster URL");
        assert_eq!(hosts, ["127.0.0.1:7000", "127.0.0.1:7001"]);
        assert_eq!(credentials.as_deref(), Some("u:p"));
        assert!(seeds("redis://127.0.0.1:7000").is_err());
        assert!(seeds("redis+cluster://").is_err());
        let nodes = "\
a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7001@17001,host master - 0 0 2 connected 5461-16383
c 127.0.0.1:7002@17002 slave a 0 0 1 connected
d 127.0.0.1:7003@17003 master,fail - 0 0 3 disconnected
";
        assert_eq!(parse_primaries(nodes), ["127.0.0.1:7000", "127.0.0.1:7001"]);
    }

    #[test]
    fn a_throwaway_cluster_starts_answers_lists_and_stops() {
        let service = super::super::resolve_cluster_throwaway().unwrap_or_else(|e| panic!("{e}"));
        let (hosts, _) = seeds(&service.url).unwrap();
        assert_eq!(hosts.len(), PRIMARIES * (1 + REPLICAS));
        probe_url(&service.url).unwrap();
        assert_eq!(primary_urls(&service.url).unwrap().len(), PRIMARIES);
        // Keys of several slots under a test namespace are found and removed.
        let mut conn = open(&node_url(&hosts[0], None)).unwrap();
        let mut written = 0;
        for i in 0..30 {
            let key = format!("{{t_77_cluster_ab12:f:{i}}}");
            if matches!(conn.call(&["SET", &key, "v"]).unwrap(), Reply::Status(_)) {
                written += 1; // the others are MOVED: owned by another primary
            }
        }
        assert!(written > 0);
        assert_eq!(
            test_namespaces(&service.url).unwrap(),
            vec!["t_77_cluster_ab12"]
        );
        remove_namespaces(&service.url, &["t_77_cluster_ab12".to_owned()]).unwrap();
        assert!(test_namespaces(&service.url).unwrap().is_empty());
        let dir = match &service.origin {
            super::super::Origin::Throwaway(launch) => launch.dir.clone(),
            _ => unreachable!("a throwaway cluster"),
        };
        let addrs: Vec<SocketAddr> = hosts.iter().map(|h| h.parse().unwrap()).collect();
        service.stop().unwrap();
        for addr in addrs {
            assert!(single::probe(addr).is_err(), "{addr} still answers");
        }
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }
}
