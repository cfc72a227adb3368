//! The server stopping mid-run: calls compute and log while it is gone, and the cache works again
//! once it is back. Runs against a private nx-27017 started by the test on a free port, never
//! the shared server.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cachier_core::{Cachier, Claim, Core, ErrorKind, FuncId, Key, Timestamp};
use cachier_mongo::MongoCore;
use common::TestNamespace;

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
struct PrivateServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateServer {
    fn start_on_free_port() -> Self {
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

    fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
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

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Collects log lines, so the test can check that outages are logged.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// A current-thread runtime keeps every task on this thread, where the log capture is installed.
#[tokio::test]
async fn calls_compute_and_log_while_the_server_is_down_then_recover() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let mut server = PrivateServer::start_on_free_port();
    let config = common::config_for(&server.url())
        .server_selection_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500));
    let mongo = Arc::new(MongoCore::connect(config.clone()).await.unwrap());
    mongo.ping().await.expect("the private server answers");
    let ns = TestNamespace::on("outage", config);
    let core: Arc<dyn Core> = mongo.clone();
    let cache = Cachier::builder(core.clone())
        .with_namespace(ns.namespace.clone())
        .build();
    let f = cache.function(FuncId::new("cachier_mongo::tests::outage").unwrap());
    let computations = Arc::new(AtomicU32::new(0));
    let compute = |result: u64| {
        let computations = computations.clone();
        move || async move {
            computations.fetch_add(1, Ordering::SeqCst);
            result
        }
    };

    assert_eq!(f.call(&7u64, compute(49)).await.unwrap(), 49);
    assert_eq!(f.call(&7u64, compute(0)).await.unwrap(), 49, "a hit");
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    assert_eq!(f.stats().backend_errors, 0);

    server.stop();
    let started = Instant::now();
    assert_eq!(
        f.call(&7u64, compute(49)).await.unwrap(),
        49,
        "computed without the cache"
    );
    assert_eq!(f.call(&8u64, compute(64)).await.unwrap(), 64);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "calls during the outage took {:?}",
        started.elapsed()
    );
    assert_eq!(computations.load(Ordering::SeqCst), 3);
    // The first call met the error; the second skipped the backend, known to be unavailable.
    let stats = f.stats();
    assert_eq!((stats.backend_errors, stats.bypassed), (1, 1), "{stats:?}");
    assert!(cache.is_backend_unavailable());
    let key = f.key(&7u64).unwrap();
    let err = core.get(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    let logged = logs.text();
    assert!(
        logged.contains("backend=\"mongo\"") || logged.contains("backend=mongo"),
        "the outage is logged with the backend's name:\n{logged}"
    );

    // Back, on the same port and empty (an in-memory server): the cache works again.
    server.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while mongo.ping().await.is_err() || cache.is_backend_unavailable() {
        assert!(Instant::now() < deadline, "no recovery within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let errors_before = f.stats().backend_errors;
    assert_eq!(f.call(&7u64, compute(49)).await.unwrap(), 49);
    assert_eq!(
        f.call(&7u64, compute(0)).await.unwrap(),
        49,
        "a hit after recovery"
    );
    assert_eq!(computations.load(Ordering::SeqCst), 4);
    assert_eq!(
        f.stats().backend_errors,
        errors_before,
        "no errors after recovery"
    );

    // The restarted server lost the unique index; the backend created it again.
    let cold = Key::new(
        ns.namespace.clone(),
        key.func.clone(),
        cachier_core::ArgHash::of(&9u8).unwrap(),
    );
    assert!(matches!(
        core.claim(&cold, Duration::from_secs(30)).await.unwrap(),
        Claim::Acquired(_)
    ));
    assert!(matches!(
        core.claim(&cold, Duration::from_secs(30)).await.unwrap(),
        Claim::Held { .. }
    ));
    core.set(&cold, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .unwrap();
    let mut indexes = mongo
        .collection(&ns.namespace)
        .list_index_names()
        .await
        .unwrap();
    indexes.retain(|name| name != "_id_");
    assert_eq!(
        indexes.len(),
        1,
        "the (func, key) index is back: {indexes:?}"
    );
}

/// Sends `signal` (`STOP`, `CONT`) to the private server's process.
fn signal(server: &PrivateServer, signal: &str) {
    let pid = server.child.as_ref().expect("the server runs").id();
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_answering_times_out_as_unavailable() {
    let server = PrivateServer::start_on_free_port();
    let config = common::config_for(&server.url())
        .operation_timeout(Duration::from_millis(800))
        .server_selection_timeout(Duration::from_millis(500));
    let core = MongoCore::connect(config.clone()).await.unwrap();
    let ns = TestNamespace::on("stalled", config);
    let key = Key::new(
        ns.namespace.clone(),
        FuncId::new("cachier_mongo::tests::stalled").unwrap(),
        cachier_core::ArgHash::of(&1u8).unwrap(),
    );
    core.set(&key, Bytes::from_static(b"v"), Timestamp::now())
        .await
        .unwrap();

    // Frozen, the server keeps its connections open but answers nothing.
    signal(&server, "STOP");
    let started = Instant::now();
    let outcome = core.get(&key).await;
    let took = started.elapsed();
    signal(&server, "CONT");
    let err = outcome.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(took < Duration::from_secs(5), "a stalled get took {took:?}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match core.get(&key).await {
            Ok(entry) => {
                assert_eq!(entry.unwrap().value.as_deref(), Some(&b"v"[..]));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no recovery within 30 s: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
