//! The servers the backend suites run against: Redis, a Redis Cluster, PostgreSQL,
//! MariaDB/MySQL, a MongoDB wire-protocol server and an S3-compatible server.
//!
//! [`resolve`] finds one server per [`ServiceKind`], in this order:
//!
//! 1. the URL in the service's environment variable (`CACHIER_TEST_REDIS_URL`, ...), which must
//!    answer;
//! 2. a server answering on the service's standard local port (`127.0.0.1:6379`, `:5432`,
//!    `:3306`, `:27017`; S3 has no standard local port and skips this step), recognised by a
//!    real protocol exchange, not only an open port;
//! 3. a throwaway server started from the installed binaries on a free port in a temporary
//!    directory. It is stopped, and its directory removed, when the [`Service`] is dropped,
//!    unless it is kept ([`Service::keep`]). A throwaway S3 server gets a bucket for the run.
//!
//! A Redis Cluster has no standard port: it comes from `CACHIER_TEST_REDIS_CLUSTER_URL` or is
//! a throwaway cluster of six nodes (see [`redis_cluster`]).
//!
//! Each service module (`redis`, `redis_cluster`, `postgres`, `mysql`, `mongo`, `s3`) has the same four parts: the
//! standard URL, a protocol probe, how to start a throwaway server, and a listing of the test
//! namespaces it holds (for the leftover check, see `crate::leftovers`).

pub mod bson;
pub mod mongo;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod redis_cluster;
pub mod s3;
mod url;

pub use url::ServiceUrl;

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process;

/// How long a probe waits to connect and for each answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One kind of server a backend suite needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceKind {
    Redis,
    RedisCluster,
    Postgres,
    Mysql,
    Mongo,
    S3,
}

impl ServiceKind {
    /// Every service, in the order they are started and reported.
    pub const ALL: [ServiceKind; 6] = [
        Self::Redis,
        Self::RedisCluster,
        Self::Postgres,
        Self::Mysql,
        Self::Mongo,
        Self::S3,
    ];

    /// The service's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::RedisCluster => "redis-cluster",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Mongo => "mongo",
            Self::S3 => "s3",
        }
    }

    /// The environment variable that names the server's URL, read by xtask and by the tests.
    pub fn env_var(self) -> &'static str {
        match self {
            Self::Redis => "CACHIER_TEST_REDIS_URL",
            Self::RedisCluster => "CACHIER_TEST_REDIS_CLUSTER_URL",
            Self::Postgres => "CACHIER_TEST_POSTGRES_URL",
            Self::Mysql => "CACHIER_TEST_MYSQL_URL",
            Self::Mongo => "CACHIER_TEST_MONGO_URL",
            Self::S3 => "CACHIER_TEST_S3_URL",
        }
    }

    /// The port the service listens on by convention (a Redis Cluster has none: it is never
    /// looked for on a standard port, and its URLs always name their ports).
    pub fn standard_port(self) -> u16 {
        match self {
            Self::Redis | Self::RedisCluster => 6379,
            Self::Postgres => 5432,
            Self::Mysql => 3306,
            Self::Mongo => 27017,
            // moto_server's default; never probed (see `resolve`).
            Self::S3 => 5000,
        }
    }

    /// The URL of a server on 127.0.0.1 at `port`, with the project's default account.
    pub fn local_url(self, port: u16) -> String {
        match self {
            Self::Redis => redis::local_url(port),
            Self::RedisCluster => format!("redis+cluster://127.0.0.1:{port}"),
            Self::Postgres => postgres::local_url(port),
            Self::Mysql => mysql::local_url(port),
            Self::Mongo => mongo::local_url(port),
            Self::S3 => s3::local_url(port),
        }
    }

    /// Checks that a server of this kind answers at `addr` with its own protocol.
    pub fn probe(self, addr: SocketAddr) -> Result<(), String> {
        match self {
            Self::Redis => redis::probe(addr),
            Self::RedisCluster => redis_cluster::probe(addr),
            Self::Postgres => postgres::probe(addr),
            Self::Mysql => mysql::probe(addr),
            Self::Mongo => mongo::probe(addr),
            Self::S3 => s3::probe(addr),
        }
    }

    /// The test namespaces (`t_...`) the server at `url` holds.
    pub fn test_namespaces(self, url: &str) -> Result<Vec<String>, String> {
        match self {
            Self::Redis => redis::test_namespaces(url),
            Self::RedisCluster => redis_cluster::test_namespaces(url),
            Self::Postgres => postgres::test_namespaces(url),
            Self::Mysql => mysql::test_namespaces(url),
            Self::Mongo => mongo::test_namespaces(url),
            Self::S3 => s3::test_namespaces(url),
        }
    }

    /// Removes the given test namespaces (everything stored under them) from the server at
    /// `url`; for a run that was interrupted before its tests could clean up.
    pub fn remove_namespaces(self, url: &str, names: &[String]) -> Result<(), String> {
        let names: Vec<String> = names
            .iter()
            .filter(|n| is_test_namespace(n) && is_plain_name(n))
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        match self {
            Self::Redis => redis::remove_namespaces(url, &names),
            Self::RedisCluster => redis_cluster::remove_namespaces(url, &names),
            Self::Postgres => postgres::remove_namespaces(url, &names),
            Self::Mysql => mysql::remove_namespaces(url, &names),
            Self::Mongo => mongo::remove_namespaces(url, &names),
            Self::S3 => s3::remove_namespaces(url, &names),
        }
    }

    /// Starts a server on `port`, in a process group of its own (see [`spawn`]).
    fn launch(self, port: u16) -> Result<Launch, String> {
        let dir = process::temp_dir(self.name())?;
        let launched = match self {
            Self::Redis => redis::launch(port, &dir),
            // Six nodes on ports of their own.
            Self::RedisCluster => redis_cluster::launch(&dir),
            Self::Postgres => postgres::launch(port, &dir),
            Self::Mysql => mysql::launch(port, &dir),
            Self::Mongo => mongo::launch(port, &dir),
            Self::S3 => s3::launch(port, &dir),
        };
        if launched.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        launched
    }

    /// The address a service URL points at (for S3, its `endpoint=`).
    pub fn address(self, url: &str) -> Result<SocketAddr, String> {
        match self {
            Self::S3 => s3::parse(url).map(|(_, addr)| addr),
            _ => ServiceUrl::parse(url, self.standard_port())?.socket_addr(),
        }
    }

    /// How long a throwaway server may take to answer after it was started.
    fn startup_limit(self) -> Duration {
        match self {
            Self::Redis => Duration::from_secs(15),
            _ => Duration::from_secs(60),
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Opens a TCP connection with the probe timeouts set.
pub fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|e| format!("cannot set timeouts on {addr}: {e}"))?;
    Ok(stream)
}

/// A server process a service module started, before it is known to answer.
pub struct Launch {
    /// The process xtask spawned (the server itself, or a wrapper such as `runuser`).
    pub child: Child,
    /// The URL the server will answer at.
    pub url: String,
    /// The temporary directory holding its data and log; removed when it stops.
    pub dir: PathBuf,
    /// The server's log, shown when it fails to start.
    pub log: PathBuf,
    /// A file whose first line is the server's own pid when `child` is only a wrapper.
    pub pid_file: Option<PathBuf>,
    /// The signal that asks the server to shut down cleanly.
    pub stop_signal: &'static str,
    /// More processes of the same service (the other nodes of a cluster), stopped with it.
    pub others: Vec<Child>,
}

/// Where a resolved service came from.
pub enum Origin {
    /// The URL came from the service's environment variable.
    Environment,
    /// A server was already answering on the standard local port.
    StandardPort,
    /// xtask started it.
    Throwaway(Launch),
}

/// A server that answers, ready for the tests.
pub struct Service {
    pub kind: ServiceKind,
    pub url: String,
    pub origin: Origin,
    kept: bool,
}

impl Service {
    /// A one-line description: the URL and where it came from.
    pub fn describe(&self) -> String {
        let from = match &self.origin {
            Origin::Environment => format!("from {}", self.kind.env_var()),
            Origin::StandardPort => "already running on the standard port".to_owned(),
            Origin::Throwaway(l) => format!("throwaway server, data in {}", l.dir.display()),
        };
        format!("{:<8} {}  ({from})", self.kind.name(), self.url)
    }

    /// Leaves a throwaway server running after xtask exits and returns how to stop it.
    pub fn keep(mut self) -> Option<String> {
        self.kept = true;
        match &self.origin {
            Origin::Throwaway(launch) => {
                let pids: Vec<String> = std::iter::once(server_pid(launch))
                    .chain(launch.others.iter().map(Child::id))
                    .map(|pid| pid.to_string())
                    .collect();
                Some(format!(
                    "kill -{} {} && rm -rf {}",
                    launch.stop_signal,
                    pids.join(" "),
                    launch.dir.display()
                ))
            }
            _ => None,
        }
    }

    /// Stops a throwaway server (waits for it) and removes its directory; other origins are
    /// left alone.
    pub fn stop(mut self) -> Result<(), String> {
        self.stop_in_place()
    }

    fn stop_in_place(&mut self) -> Result<(), String> {
        let Origin::Throwaway(launch) = &mut self.origin else {
            return Ok(());
        };
        if self.kept {
            return Ok(());
        }
        let pid = server_pid(launch);
        process::signal(pid, launch.stop_signal);
        // The other processes (cluster nodes) are asked at the same time and waited for.
        for other in &launch.others {
            process::signal(other.id(), launch.stop_signal);
        }
        let mut others_stopped = true;
        for other in &mut launch.others {
            if !process::wait_exit(other, Duration::from_secs(20)) {
                let _ = other.kill();
                let _ = other.wait();
                others_stopped = false;
            }
        }
        let stopped = others_stopped
            && if pid == launch.child.id() {
                process::wait_exit(&mut launch.child, Duration::from_secs(20))
            } else {
                process::wait_pid_gone(pid, Duration::from_secs(20))
                    && process::wait_exit(&mut launch.child, Duration::from_secs(5))
            };
        if !stopped {
            process::signal(pid, "KILL");
            let _ = launch.child.kill();
            let _ = launch.child.wait();
        }
        let _ = std::fs::remove_dir_all(&launch.dir);
        self.origin = Origin::StandardPort;
        if stopped {
            Ok(())
        } else {
            Err(format!(
                "the throwaway {} server did not stop in time: killed it",
                self.kind
            ))
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Err(e) = self.stop_in_place() {
            eprintln!("xtask: {e}");
        }
    }
}

fn server_pid(launch: &Launch) -> u32 {
    launch
        .pid_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        .unwrap_or_else(|| launch.child.id())
}

/// How [`resolve`] may obtain a server.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Start a throwaway server when none answers.
    pub may_start: bool,
}

/// Finds a server of `kind` (see the module docs).
pub fn resolve(kind: ServiceKind, policy: Policy) -> Result<Service, String> {
    if kind == ServiceKind::RedisCluster {
        return resolve_cluster(policy);
    }
    let ready = |url: String, origin| Service {
        kind,
        url,
        origin,
        kept: false,
    };
    if let Some(url) = std::env::var(kind.env_var())
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        if kind == ServiceKind::S3 && !url.contains("endpoint=") {
            // A cloud bucket: the tests reach it with the standard credentials; xtask cannot
            // probe it without signing requests.
            return Ok(ready(url, Origin::Environment));
        }
        let addr = kind.address(&url)?;
        kind.probe(addr).map_err(|e| {
            format!(
                "{} is set to {url}, but no {kind} server answers there: {e}",
                kind.env_var()
            )
        })?;
        return Ok(ready(url, Origin::Environment));
    }
    let port = kind.standard_port();
    // Any HTTP server may listen on moto's default port: S3 never uses a server it did not start.
    if kind != ServiceKind::S3 && kind.probe(SocketAddr::from(([127, 0, 0, 1], port))).is_ok() {
        return Ok(ready(kind.local_url(port), Origin::StandardPort));
    }
    if !policy.may_start {
        return Err(format!(
            "no {kind} server: set {} or start one on 127.0.0.1:{port}",
            kind.env_var()
        ));
    }
    let port = process::free_port()?;
    let launch = kind.launch(port)?;
    let service = ready(launch.url.clone(), Origin::Throwaway(launch));
    let service = wait_until_answering(service)?;
    if kind == ServiceKind::S3 {
        s3::create_bucket(&service.url)?;
    }
    Ok(service)
}

/// A Redis Cluster: the one in `CACHIER_TEST_REDIS_CLUSTER_URL` (which must answer), else a
/// throwaway one (there is no standard port to look at).
fn resolve_cluster(policy: Policy) -> Result<Service, String> {
    let kind = ServiceKind::RedisCluster;
    if let Some(url) = std::env::var(kind.env_var())
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        redis_cluster::probe_url(&url).map_err(|e| {
            format!(
                "{} is set to {url}, but no Redis Cluster answers there: {e}",
                kind.env_var()
            )
        })?;
        return Ok(Service {
            kind,
            url,
            origin: Origin::Environment,
            kept: false,
        });
    }
    if !policy.may_start {
        return Err(format!(
            "no Redis Cluster: set {} (redis+cluster://host:port,host:port)",
            kind.env_var()
        ));
    }
    resolve_cluster_throwaway()
}

/// Starts a throwaway Redis Cluster and waits until it is ready; stops it again on failure.
pub(crate) fn resolve_cluster_throwaway() -> Result<Service, String> {
    let kind = ServiceKind::RedisCluster;
    let launch = kind.launch(0)?;
    let service = Service {
        kind,
        url: launch.url.clone(),
        origin: Origin::Throwaway(launch),
        kept: false,
    };
    // On failure the service is dropped here, which stops every node.
    redis_cluster::wait_ready(&service.url, kind.startup_limit())?;
    Ok(service)
}

/// Polls a freshly started server until its probe succeeds, its process dies, or time runs out.
fn wait_until_answering(mut service: Service) -> Result<Service, String> {
    let kind = service.kind;
    let addr = kind.address(&service.url)?;
    let deadline = Instant::now() + kind.startup_limit();
    loop {
        let last = match kind.probe(addr) {
            Ok(()) => return Ok(service),
            Err(e) => e,
        };
        let Origin::Throwaway(launch) = &mut service.origin else {
            unreachable!("only throwaway servers are waited for");
        };
        let exited = matches!(launch.child.try_wait(), Ok(Some(_)));
        if exited || Instant::now() > deadline {
            let log = process::tail(&launch.log, 15);
            let why = if exited {
                "exited"
            } else {
                "did not answer in time"
            };
            return Err(format!(
                "the throwaway {kind} server started on {} {why} (last probe: {last}); its log:\n{log}",
                service.url
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The error for a missing server binary: what to install.
pub fn missing(program: &str, install: &str) -> String {
    format!("`{program}` is not installed; install it with: {install}")
}

/// Spawns a server with no input and its output in `log`, in a process group of its own: a
/// Ctrl-C at the terminal reaches the whole foreground group, and the server must outlive the
/// tests so that xtask can clean up and then stop it (or leave it running with `--keep`).
pub fn spawn(command: &mut Command, log: &Path) -> Result<Child, String> {
    use std::os::unix::process::CommandExt;
    let file =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let copy = file
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    command.stdin(Stdio::null()).stdout(file).stderr(copy);
    command.process_group(0);
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))
}

/// Whether `name` is made only of the characters a namespace may hold (`[A-Za-z0-9_.-]`), so it
/// can be written into a query literally.
pub fn is_plain_name(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `'a', 'b'`: plain names as a list of SQL string literals.
fn sql_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `name` is a test namespace: it starts with `t_` (the conformance suite's convention
/// is `t_{pid}_{test name}_{random}`).
pub fn is_test_namespace(name: &str) -> bool {
    name.len() > 2 && name.starts_with("t_")
}

/// The pid of the process that made a test namespace: the first part of the name, between
/// underscores, that is a number (`t_{pid}_...`; some suites put the test name first,
/// `t_{test}_{pid}_...`). `None` when the name holds no number.
pub fn test_namespace_pid(name: &str) -> Option<u32> {
    if !is_test_namespace(name) {
        return None;
    }
    name[2..]
        .split('_')
        .find_map(|part| part.parse().ok().filter(|&pid| pid > 1))
}

/// Runs a database's command-line client and returns the non-empty lines it printed, or its
/// error output when it fails.
fn client_lines(
    command: &mut Command,
    client: &str,
    url: &ServiceUrl,
) -> Result<Vec<String>, String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {client}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{client} on {}:{} failed: {}",
            url.host,
            url.port,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared body of each service module's start-probe-stop test.

    use super::*;

    /// Starts a throwaway server of `kind` (never an existing one), probes it, lists its test
    /// namespaces, stops it and checks that the port is closed and the directory gone.
    pub fn start_probe_stop(kind: ServiceKind) {
        let port = process::free_port().unwrap();
        let launch = kind.launch(port).unwrap_or_else(|e| panic!("{e}"));
        let dir = launch.dir.clone();
        let service = Service {
            kind,
            url: launch.url.clone(),
            origin: Origin::Throwaway(launch),
            kept: false,
        };
        let service = wait_until_answering(service).unwrap_or_else(|e| panic!("{e}"));
        let addr = kind.address(&service.url).unwrap();
        assert_eq!(addr.port(), port);
        kind.probe(addr).unwrap();
        assert_eq!(
            kind.test_namespaces(&service.url).unwrap(),
            Vec::<String>::new()
        );
        service.stop().unwrap();
        assert!(kind.probe(addr).is_err(), "{kind} still answers after stop");
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_namespaces_are_recognised_with_their_pid() {
        assert_eq!(test_namespace_pid("t_4242_round_trip_9f3a"), Some(4242));
        assert_eq!(test_namespace_pid("t_round_trip_4242_0_9f3a"), Some(4242));
        assert_eq!(test_namespace_pid("t_round_trip"), None);
        assert!(is_test_namespace("t_round_trip"));
        assert!(!is_test_namespace("cachier") && !is_test_namespace("t_"));
    }

    #[test]
    fn probes_refuse_a_port_nobody_listens_on() {
        let port = process::free_port().unwrap();
        for kind in ServiceKind::ALL {
            assert!(
                kind.probe(SocketAddr::from(([127, 0, 0, 1], port)))
                    .is_err()
            );
        }
    }

    #[test]
    fn each_probe_refuses_another_protocol() {
        // A listener that answers every connection with an HTTP error.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for mut stream in listener.incoming().flatten() {
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                let mut sink = [0; 256];
                let _ = stream.read(&mut sink);
            }
        });
        for kind in ServiceKind::ALL {
            assert!(
                kind.probe(addr).is_err(),
                "{kind} took an HTTP server for its own"
            );
        }
    }
}
