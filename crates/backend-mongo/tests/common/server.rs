//! Private nx-27017 servers for the tests that stop, freeze or restart a server: each on a free
//! port with an in-memory store and a temporary directory for its log, killed when dropped.
//! [`OutageServer`] is the conformance suite's [`Outage`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cachier_core::Core;
use cachier_core::conformance::Outage;
use cachier_mongo::{Config, MongoCore};

/// Where the server binary may be named explicitly.
const BIN_VAR: &str = "CACHIER_NX27017_BIN";
const INSTALL_HINT: &str = "cargo xtask setup-mongo (or: python3 -m venv DIR && DIR/bin/pip install \
                            'nx-27017==0.8.1' 'neosqlite==1.17.2', then set CACHIER_NX27017_BIN=DIR/bin/nx-27017)";

/// The nx-27017 binary: `$CACHIER_NX27017_BIN` (set by `cargo xtask test`), else `nx-27017` on
/// `PATH`, else the one `cargo xtask setup-mongo` installs under the target directory.
fn server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os(BIN_VAR).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "{BIN_VAR}={} is not a file", bin.display());
        return bin;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nx-27017"))
            .find(|candidate| candidate.is_file())
    });
    if let Some(bin) = on_path {
        return bin;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let xtask_installed = target.join("xtask/nx-venv/bin/nx-27017");
    assert!(
        xtask_installed.is_file(),
        "this test starts its own MongoDB wire server and found no nx-27017 \
         ({BIN_VAR} unset, none on PATH, none at {}). Install it: {INSTALL_HINT}",
        xtask_installed.display()
    );
    xtask_installed
}

/// A private nx-27017 process, killed when dropped.
pub struct PrivateServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateServer {
    pub fn start_on_free_port() -> Self {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free local port");
            listener.local_addr().expect("a bound address").port()
        };
        let mut server = PrivateServer {
            child: None,
            port,
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        server.start();
        server
    }

    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// Starts the server (it must be stopped); returns once it listens.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let dir = self.dir.path().to_owned();
        let child = Command::new(server_binary())
            .args(["--host", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--data-dir", "memory"])
            .arg("--log-file")
            .arg(dir.join("server.log"))
            .arg("--pid-file")
            .arg(dir.join("server.pid"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nx-27017 ({e}); install it: {INSTALL_HINT}"));
        self.child = Some(child);
        self.wait_until_listening(&dir);
    }

    fn wait_until_listening(&mut self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                panic!("nx-27017 exited with {status} before listening:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nx-27017 did not listen on port {} within 20 s", self.port);
    }

    /// Kills the server; its port then refuses connections.
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
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private server the conformance suite's outage checks stop and start ([`Outage`]): the
/// same address throughout, empty after each start (the store is in memory), killed when
/// dropped.
pub struct OutageServer {
    server: Mutex<PrivateServer>,
    url: String,
}

impl OutageServer {
    /// Starts a private nx-27017 on a free port.
    pub fn start() -> Self {
        let server = PrivateServer::start_on_free_port();
        OutageServer {
            url: server.url(),
            server: Mutex::new(server),
        }
    }

    /// The server's URL, whether it runs or not.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Settings for a core on this server: the crate's defaults, in the test database.
    pub fn config(&self) -> Config {
        Config::from_url(&self.url)
            .expect("the private server's URL parses")
            .database(super::TEST_DATABASE)
    }

    fn server(&self) -> MutexGuard<'_, PrivateServer> {
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cachier_core::async_trait]
impl Outage for OutageServer {
    /// A core with the crate's default settings, checked with a ping.
    async fn core(&self) -> Arc<dyn Core> {
        let core = MongoCore::connect(self.config())
            .await
            .unwrap_or_else(|e| panic!("cannot configure a core on the private server: {e}"));
        core.ping()
            .await
            .unwrap_or_else(|e| panic!("the private nx-27017 answers: {e}"));
        Arc::new(core)
    }

    async fn stop(&self) {
        blocking(|| self.server().stop());
    }

    async fn start(&self) {
        blocking(|| self.server().start());
    }
}

/// Runs blocking work from async code without stalling the runtime's other tasks where the
/// runtime allows it (a multi-threaded one).
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
