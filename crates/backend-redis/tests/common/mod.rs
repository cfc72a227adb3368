//! Helpers shared by this crate's integration tests: the shared test server's URL, unique
//! namespaces cleaned up by a drop guard, and private throwaway servers for fault tests (also
//! the conformance suite's outage checks).

#![allow(dead_code)] // Each test binary uses a different subset.

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod recorder;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cachier_core::conformance::Outage;
use cachier_core::{ClaimToken, Core, FuncId, Key, Namespace};
use cachier_redis::{Config, RedisCore};

/// The shared test server: `CACHIER_TEST_REDIS_URL`, else the local default.
pub fn redis_url() -> String {
    std::env::var("CACHIER_TEST_REDIS_URL").unwrap_or_else(|_| cachier_redis::DEFAULT_URL.into())
}

/// A namespace no other test (in this or another process) uses: `t_{pid}_{test}_{random}`.
pub fn unique_namespace(test: &str) -> Namespace {
    let token = ClaimToken::generate();
    let random = &token.as_str()[..8];
    let mut name = format!("t_{}_{}", std::process::id(), test);
    name.truncate(64 - 9);
    Namespace::new(format!("{name}_{random}")).expect("test names are valid namespace text")
}

/// Removes everything under a namespace when dropped, also when the test panicked. Uses a
/// synchronous connection of its own, so it works during unwinding and outside any runtime.
pub struct NamespaceGuard {
    url: String,
    pub namespace: Namespace,
}

impl NamespaceGuard {
    pub fn new(url: &str, test: &str) -> Self {
        NamespaceGuard {
            url: url.to_string(),
            namespace: unique_namespace(test),
        }
    }

    /// The key of `func` called with `arg` in this namespace.
    pub fn key(&self, func: &str, arg: u64) -> Key {
        Key::for_args(&self.namespace, &func_id(func), &arg).expect("a u64 hashes")
    }

    /// How many Redis keys exist under the namespace (values and claims).
    pub fn count_keys(&self) -> usize {
        scan_namespace(&self.url, &self.namespace).len()
    }
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        #[cfg(feature = "cluster")]
        if cluster::is_cluster_url(&self.url) {
            let pattern = format!("{{{}:*", self.namespace.as_str());
            let keys = cluster::scan_cluster(&self.url, &pattern);
            if let Err(e) = cluster::unlink_on_nodes(&keys) {
                eprintln!("cleanup of namespace {} failed: {e}", self.namespace);
            }
            return;
        }
        let keys = scan_namespace(&self.url, &self.namespace);
        if keys.is_empty() {
            return;
        }
        let result = redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .and_then(|mut c| redis::cmd("UNLINK").arg(&keys).query::<u64>(&mut c));
        if let Err(e) = result {
            eprintln!("cleanup of namespace {} failed: {e}", self.namespace);
        }
    }
}

fn scan_namespace(url: &str, namespace: &Namespace) -> Vec<Vec<u8>> {
    #[cfg(feature = "cluster")]
    if cluster::is_cluster_url(url) {
        let pattern = format!("{{{}:*", namespace.as_str());
        return cluster::scan_cluster(url, &pattern)
            .into_iter()
            .map(|(_, key)| key)
            .collect();
    }
    let Ok(mut conn) = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
    else {
        return Vec::new();
    };
    let pattern = format!("{{{}:*", namespace.as_str());
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let Ok((next, batch)): redis::RedisResult<(u64, Vec<Vec<u8>>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
        else {
            return keys;
        };
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

pub fn func_id(name: &str) -> FuncId {
    FuncId::new(name).expect("test function ids are valid")
}

/// Settings for the shared test server: a response timeout long enough for values of many
/// megabytes while the whole test matrix loads the machine's two cores. Tests of the default
/// timeouts use private servers ([`OutageServer`], [`PrivateServer`]).
pub fn shared_config(url: &str) -> Config {
    Config::from_url(url)
        .expect("test URL parses")
        .with_connect_timeout(Duration::from_secs(2))
        .with_response_timeout(Duration::from_secs(10))
}

/// A core on `url` with the shared server's settings ([`shared_config`]).
pub async fn core_at(url: &str) -> Arc<RedisCore> {
    let config = shared_config(url);
    Arc::new(
        RedisCore::connect(config)
            .await
            .expect("the test Redis server answers"),
    )
}

/// A synchronous admin connection for checks behind the core's back: to the server, or (for
/// a `redis+cluster://` URL) to the cluster, routing each command by its key.
pub fn admin(url: &str) -> Admin {
    #[cfg(feature = "cluster")]
    if cluster::is_cluster_url(url) {
        return Admin::Cluster(cluster::admin_cluster(url));
    }
    Admin::Single(
        redis::Client::open(url)
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("admin connection to the test Redis server"),
    )
}

/// See [`admin`].
#[allow(clippy::large_enum_variant)] // One per test.
pub enum Admin {
    Single(redis::Connection),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster::ClusterConnection),
}

impl Admin {
    fn inner(&mut self) -> &mut dyn redis::ConnectionLike {
        match self {
            Admin::Single(c) => c,
            #[cfg(feature = "cluster")]
            Admin::Cluster(c) => c,
        }
    }

    fn inner_ref(&self) -> &dyn redis::ConnectionLike {
        match self {
            Admin::Single(c) => c,
            #[cfg(feature = "cluster")]
            Admin::Cluster(c) => c,
        }
    }
}

impl redis::ConnectionLike for Admin {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        self.inner().req_packed_command(cmd)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        self.inner().req_packed_commands(cmd, offset, count)
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        self.inner().req_command(cmd)
    }

    fn get_db(&self) -> i64 {
        self.inner_ref().get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.inner().check_connection()
    }

    fn is_open(&self) -> bool {
        self.inner_ref().is_open()
    }
}

/// A throwaway `redis-server` on a free port in a temporary directory, with persistence off,
/// stopped when dropped. Fault tests kill, stop and restart it; the shared server is never
/// touched.
pub struct PrivateServer {
    child: Option<Child>,
    port: u16,
    tls: bool,
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
}

impl PrivateServer {
    pub fn start() -> Self {
        Self::start_with(false, Vec::new())
    }

    /// A server that speaks only TLS, with the given certificate files (PEM).
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Self {
        let path = |p: &Path| p.display().to_string();
        Self::start_with(
            true,
            vec![
                "--tls-cert-file".into(),
                path(cert),
                "--tls-key-file".into(),
                path(key),
                "--tls-ca-cert-file".into(),
                path(ca),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
        )
    }

    fn start_with(tls: bool, extra_args: Vec<String>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = PrivateServer {
            child: None,
            port: free_port(),
            tls,
            extra_args,
            dir,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let ports = if self.tls {
            vec!["--port", "0", "--tls-port", &port]
        } else {
            vec!["--port", &port]
        };
        let child = Command::new("redis-server")
            .args(ports)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);
        // Listening means ready: Redis binds its port after start-up (nothing to load here).
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server's process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Starts the server again on the same port (empty, since persistence is off).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS hands out a free port")
}

/// A private server the conformance suite's outage checks stop and start ([`Outage`]): the
/// same address throughout, empty after each start (persistence is off), killed when dropped.
pub struct OutageServer {
    server: Mutex<PrivateServer>,
    url: String,
}

impl OutageServer {
    /// Starts a private `redis-server` on a free port.
    pub fn start() -> Self {
        let server = PrivateServer::start();
        OutageServer {
            url: server.url(),
            server: Mutex::new(server),
        }
    }

    /// The server's URL, whether it runs or not.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn server(&self) -> MutexGuard<'_, PrivateServer> {
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cachier_core::async_trait]
impl Outage for OutageServer {
    /// A core with the crate's default settings.
    async fn core(&self) -> Arc<dyn Core> {
        let config = Config::from_url(&self.url).expect("the private server's URL parses");
        let core = RedisCore::connect(config)
            .await
            .unwrap_or_else(|e| panic!("the private Redis server answers: {e}"));
        Arc::new(core)
    }

    async fn stop(&self) {
        blocking(|| self.server().stop());
    }

    async fn start(&self) {
        // Listening means ready (see `PrivateServer::spawn`).
        blocking(|| self.server().restart());
    }
}

/// Runs blocking work from async code without stalling the runtime's other tasks where the
/// runtime allows it (a multi-threaded one).
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
