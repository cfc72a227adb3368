//! Shared helpers of the object-store backend's tests: the stores to use (the S3 server named by
//! `CACHIER_TEST_S3_URL`, a fixed local directory, a named in-memory store), and private
//! `moto_server`s to stop and start for the outage tests.

#![allow(dead_code)] // Each test file uses its own subset.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachier_core::conformance::Outage;
use cachier_core::{Core, async_trait};
use cachier_object_store::{Config, ObjectStoreCore};

/// The variable naming the S3 store the tests use: `s3://BUCKET?endpoint=...&region=...`.
pub const URL_VAR: &str = "CACHIER_TEST_S3_URL";
/// The variable naming the `moto_server` program for private servers.
pub const MOTO_VAR: &str = "CACHIER_MOTO_BIN";

/// The URL of the shared S3 test store; panics with instructions when it is not set.
pub fn s3_url() -> String {
    std::env::var(URL_VAR)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{URL_VAR} is not set. Run the suite with `cargo xtask test s3` (it starts a \
                 moto_server and creates a bucket), or point {URL_VAR} at a bucket: \
                 s3://BUCKET?endpoint=http://HOST:PORT&region=us-east-1"
            )
        })
}

/// Settings for the S3 store at `url`. A local test server takes any key; a real one gets the
/// standard environment variables.
pub fn s3_config(url: &str) -> Config {
    let config = Config::from_url(url)
        .unwrap_or_else(|e| panic!("{URL_VAR}={url:?} is not a usable S3 URL: {e}"))
        // A Python server serving one request at a time, values of 8 MiB, and the whole matrix
        // on two cores: under that load a connection can wait seconds to be accepted, and a
        // failed claim or renewal would make the front end compute twice. Tests of the default
        // timeouts use `MotoServer::core` or a dead endpoint.
        .with_connect_timeout(Duration::from_secs(10))
        .with_request_timeout(Duration::from_secs(30))
        .with_retries(3);
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        config
    } else {
        config.with_credentials("cachier-test", "cachier-test")
    }
}

/// A core on the shared S3 test store.
pub fn s3_core() -> ObjectStoreCore {
    ObjectStoreCore::open(s3_config(&s3_url()))
        .unwrap_or_else(|e| panic!("cannot open the S3 test store: {e}"))
}

/// The directory of the `file://` tests: the file suites' directory when xtask names one
/// (`CACHIER_TEST_FILE_DIR`, checked for leftovers), else one under cargo's target directory.
pub fn file_dir() -> PathBuf {
    std::env::var_os("CACHIER_TEST_FILE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cachier-object-store-conformance")
        })
}

/// A core on the local test directory, through `object_store`'s `LocalFileSystem`.
pub fn file_core() -> ObjectStoreCore {
    let url = format!("file://{}", file_dir().display());
    ObjectStoreCore::open(Config::from_url(&url).expect("a file:// URL"))
        .unwrap_or_else(|e| panic!("cannot open {url}: {e}"))
}

/// A core on this process's in-memory store `name`.
pub fn memory_core(name: &str) -> ObjectStoreCore {
    ObjectStoreCore::open(Config::from_url(&format!("memory://{name}")).expect("a memory URL"))
        .expect("an in-memory store opens")
}

/// One HTTP/1.1 request without a body (path-style S3 on a local test server, unsigned: moto
/// takes it); returns the status and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A private `moto_server` of one test's own, with one bucket, to stop and start again.
pub struct MotoServer {
    addr: SocketAddr,
    bucket: String,
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

impl MotoServer {
    /// Starts a server on a free port and creates the bucket.
    pub fn start() -> MotoServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log =
            std::env::temp_dir().join(format!("cachier-moto-{}-{port}.log", std::process::id()));
        let server = MotoServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            bucket: "cachier-outage".to_owned(),
            child: Mutex::new(None),
            log,
        };
        server.launch();
        server
    }

    /// The program xtask installed, named by `CACHIER_MOTO_BIN`.
    fn binary() -> PathBuf {
        std::env::var_os(MOTO_VAR)
            .filter(|b| !b.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!(
                    "{MOTO_VAR} is not set: run the suite with `cargo xtask test s3`, which \
                     installs moto (`cargo xtask setup-s3`) and names its S3 server"
                )
            })
    }

    fn launch(&self) {
        let log = std::fs::File::create(&self.log).expect("a log file for moto_server");
        let child = Command::new(Self::binary())
            .args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server: {e}"));
        *self.child.lock().expect("lock") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http(self.addr, "GET", "/") {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!(
                    "moto_server on {} did not answer within 60 s:\n{log}",
                    self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (status, body) =
            http(self.addr, "PUT", &format!("/{}", self.bucket)).expect("creating the bucket");
        assert_eq!(status, 200, "creating bucket {}: {body}", self.bucket);
    }

    /// Stops the server (it keeps nothing: its objects are gone).
    pub fn stop(&self) {
        self.kill();
    }

    fn kill(&self) {
        if let Some(mut child) = self.child.lock().expect("lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The URL of the server's bucket.
    pub fn url(&self) -> String {
        format!(
            "s3://{}?endpoint=http://{}&region=us-east-1",
            self.bucket, self.addr
        )
    }

    /// A core on this server with the crate's default timeouts and retries.
    pub fn core(&self) -> ObjectStoreCore {
        let config = Config::from_url(&self.url())
            .expect("a private server's URL")
            .with_credentials("cachier-test", "cachier-test");
        ObjectStoreCore::open(config).expect("a core on the private server")
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// [`MotoServer`] as the conformance suite's [`Outage`].
pub struct MotoOutage(pub Arc<MotoServer>);

#[async_trait]
impl Outage for MotoOutage {
    async fn core(&self) -> Arc<dyn Core> {
        Arc::new(self.0.core())
    }

    async fn stop(&self) {
        let server = self.0.clone();
        tokio::task::spawn_blocking(move || server.kill())
            .await
            .expect("stopping moto_server");
    }

    async fn start(&self) {
        let server = self.0.clone();
        tokio::task::spawn_blocking(move || server.launch())
            .await
            .expect("starting moto_server");
    }
}
