//! Redis Cluster helpers for the cluster test binaries: the shared test cluster's URL, an admin
//! connection that routes by key, namespace scans over every primary, and private throwaway
//! clusters for fault tests (each node a `redis-server` on free ports, stopped when dropped).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cachier_core::Core;
use cachier_core::conformance::Outage;
use cachier_redis::{Config, RedisCore};

/// The variable naming the shared test cluster (set by `cargo xtask test redis:cluster`).
pub const CLUSTER_URL_VAR: &str = "CACHIER_TEST_REDIS_CLUSTER_URL";

/// The shared test cluster: `CACHIER_TEST_REDIS_CLUSTER_URL`, which `cargo xtask test
/// redis:cluster` sets to a throwaway cluster of its own.
pub fn cluster_url() -> String {
    std::env::var(CLUSTER_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{CLUSTER_URL_VAR} is not set: run `cargo xtask test redis:cluster`, which starts a \
             throwaway cluster, or point it at one (redis+cluster://host:port,host:port)"
        )
    })
}

/// Whether `url` names a cluster.
pub fn is_cluster_url(url: &str) -> bool {
    url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://")
}

/// `host:port` of each node in a `redis+cluster://` URL.
pub fn seeds(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['/', '?']).next().unwrap_or_default();
    let hosts = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    hosts.split(',').map(str::to_owned).collect()
}

/// A synchronous cluster connection (routes each command by its key).
pub fn admin_cluster(url: &str) -> redis::cluster::ClusterConnection {
    let nodes: Vec<String> = seeds(url)
        .into_iter()
        .map(|s| format!("redis://{s}"))
        .collect();
    redis::cluster::ClusterClient::builder(nodes)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(5))
        .retries(10)
        .min_retry_wait(20)
        .max_retry_wait(500)
        .build()
        .and_then(|c| c.get_connection())
        .expect("admin connection to the test Redis Cluster")
}

/// A plain connection to one node.
pub fn node_connection(address: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://{address}"))?
        .get_connection_with_timeout(Duration::from_secs(2))
}

/// The serving primaries of the cluster behind `url`, as `host:port` (from `CLUSTER NODES`
/// of the first seed that answers).
pub fn primaries(url: &str) -> Vec<String> {
    for seed in seeds(url) {
        let Ok(mut conn) = node_connection(&seed) else {
            continue;
        };
        let Ok(nodes) = redis::cmd("CLUSTER")
            .arg("NODES")
            .query::<String>(&mut conn)
        else {
            continue;
        };
        return nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                let serving = flags.split(',').any(|f| f == "master")
                    && !flags.split(',').any(|f| f == "fail")
                    && fields.len() > 8;
                serving.then(|| fields[1].split(['@', ',']).next().map(str::to_owned))?
            })
            .collect();
    }
    Vec::new()
}

/// Every key matching `pattern` on every primary: `(node, key)`.
pub fn scan_cluster(url: &str, pattern: &str) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    for node in primaries(url) {
        let Ok(mut conn) = node_connection(&node) else {
            continue;
        };
        let mut cursor = 0u64;
        loop {
            let Ok((next, batch)): redis::RedisResult<(u64, Vec<Vec<u8>>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
            else {
                break;
            };
            found.extend(batch.into_iter().map(|k| (node.clone(), k)));
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    found
}

/// Unlinks keys found by [`scan_cluster`], each on its node (keys of many slots cannot share
/// one command). Returns the first error.
pub fn unlink_on_nodes(keys: &[(String, Vec<u8>)]) -> redis::RedisResult<()> {
    let mut by_node: std::collections::BTreeMap<&str, Vec<&[u8]>> = Default::default();
    for (node, key) in keys {
        by_node.entry(node).or_default().push(key);
    }
    for (node, keys) in by_node {
        let mut conn = node_connection(node)?;
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("UNLINK").arg(key).ignore();
        }
        pipe.query::<()>(&mut conn)?;
    }
    Ok(())
}

/// One node of a private cluster.
struct Node {
    port: u16,
    bus_port: u16,
    child: Option<Child>,
}

/// A throwaway Redis Cluster on loopback: `primaries` primaries with `replicas` replicas each,
/// on free ports (their cluster bus ports too), persistence off, `cluster-require-full-coverage
/// no` (slots of a failed primary do not stop the others), killed and removed when dropped.
pub struct PrivateCluster {
    nodes: Vec<Node>,
    node_timeout: Duration,
    dir: tempfile::TempDir,
}

impl PrivateCluster {
    /// Starts the nodes, creates the cluster with `redis-cli --cluster create`, and waits until
    /// every node reports `cluster_state:ok` and every replica is in sync.
    pub fn start(primaries: usize, replicas: usize, node_timeout: Duration) -> Self {
        let count = primaries * (1 + replicas);
        let ports = distinct_free_ports(count * 2);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let nodes = (0..count)
            .map(|i| Node {
                port: ports[2 * i],
                bus_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let mut cluster = PrivateCluster {
            nodes,
            node_timeout,
            dir,
        };
        for i in 0..count {
            cluster.spawn(i);
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is installed (apt-get install redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        cluster.wait_ready(Duration::from_secs(30));
        cluster
    }

    /// The cluster's URL (every node a seed).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The node timeout the cluster runs with.
    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let (port, bus_port) = (node.port, node.bus_port);
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-port", &bus_port.to_string()])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args([
                "--cluster-node-timeout",
                &self.node_timeout.as_millis().to_string(),
            ])
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.nodes[i].child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "cluster node did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every running node says `cluster_state:ok`, knows every node, and every
    /// replica's link to its primary is up.
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let total = self.nodes.len();
        loop {
            let ready = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                let Ok(mut conn) = node_connection(&format!("127.0.0.1:{}", n.port)) else {
                    return false;
                };
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut conn)
                    .unwrap_or_default();
                let replication: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut conn)
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{total}"))
                    && (!replication.contains("role:slave")
                        || replication.contains("master_link_status:up"))
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private cluster was not ready within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port of the primary that serves `key`'s slot now.
    pub fn primary_port_of(&self, key: &str) -> u16 {
        let mut conn = self.any_node();
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .expect("CLUSTER KEYSLOT");
        self.owner_of_slot(slot).0
    }

    /// `(port, node id)` of the primary serving `slot`, from `CLUSTER NODES`.
    pub fn owner_of_slot(&self, slot: u16) -> (u16, String) {
        let mut conn = self.any_node();
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut conn)
            .expect("CLUSTER NODES");
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let owns = fields[8..].iter().any(|range| {
                if range.starts_with('[') {
                    return false; // a slot being migrated or imported
                }
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) else {
                    return false;
                };
                (lo..=hi).contains(&slot)
            });
            if owns {
                let port = fields[1]
                    .split(['@', ','])
                    .next()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse().ok())
                    .expect("a node address");
                return (port, fields[0].to_owned());
            }
        }
        panic!("no primary serves slot {slot}");
    }

    /// Waits until every running node flags the node on `dead_port` as failed (`fail`, not
    /// only suspected) and sees none of its slots served by it.
    pub fn wait_failover_seen(&self, dead_port: u16, within: Duration) {
        let deadline = Instant::now() + within;
        let dead = format!("127.0.0.1:{dead_port}@");
        loop {
            let seen = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                let Ok(mut conn) = node_connection(&format!("127.0.0.1:{}", n.port)) else {
                    return false;
                };
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut conn)
                    .unwrap_or_default();
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut conn)
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
                    && nodes.lines().filter(|l| l.contains(&dead)).all(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        fields
                            .get(2)
                            .is_some_and(|flags| flags.split(',').any(|f| f == "fail"))
                            && fields.len() <= 8
                    })
            });
            if seen {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the nodes did not all see the failover of {dead_port} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The ports of the primaries, and of the other nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// A connection to some running node.
    pub fn any_node(&self) -> redis::Connection {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .find_map(|n| node_connection(&format!("127.0.0.1:{}", n.port)).ok())
            .expect("a running cluster node answers")
    }

    /// A connection to the node on `port`.
    pub fn node(&self, port: u16) -> redis::Connection {
        node_connection(&format!("127.0.0.1:{port}")).expect("the cluster node answers")
    }

    /// Kills the node on `port` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every node.
    pub fn stop_all(&mut self) {
        for port in self.ports() {
            self.kill(port);
        }
    }

    /// Starts every stopped node again on its ports with its cluster configuration (the data
    /// is gone: persistence is off) and waits until the cluster is ready.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.spawn(i);
            }
        }
        self.wait_ready(Duration::from_secs(30));
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `count` distinct ports nothing listens on right now (all bound at once, then released).
fn distinct_free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// Settings for the shared test cluster: as for the shared server, long response timeouts for
/// a loaded machine.
pub fn shared_cluster_config(url: &str) -> Config {
    Config::from_url(url)
        .expect("test cluster URL parses")
        .with_connect_timeout(Duration::from_secs(2))
        .with_response_timeout(Duration::from_secs(10))
}

/// A private cluster the conformance suite's outage checks stop and start: three primaries
/// without replicas (an outage stops them all), the same ports throughout.
pub struct OutageCluster {
    cluster: Mutex<PrivateCluster>,
    url: String,
}

impl OutageCluster {
    pub fn start() -> Self {
        let cluster = PrivateCluster::start(3, 0, Duration::from_secs(5));
        OutageCluster {
            url: cluster.url(),
            cluster: Mutex::new(cluster),
        }
    }

    fn cluster(&self) -> MutexGuard<'_, PrivateCluster> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cachier_core::async_trait]
impl Outage for OutageCluster {
    /// A core with the crate's default settings.
    async fn core(&self) -> Arc<dyn Core> {
        let config = Config::from_url(&self.url).expect("the private cluster's URL parses");
        let core = RedisCore::connect(config)
            .await
            .unwrap_or_else(|e| panic!("the private Redis Cluster answers: {e}"));
        Arc::new(core)
    }

    async fn stop(&self) {
        super::blocking(|| self.cluster().stop_all());
    }

    async fn start(&self) {
        super::blocking(|| self.cluster().start_all());
    }
}
