//! Shared helpers of the MongoDB backend's tests: the server to use, a core connected to it, a
//! namespace per test that is dropped afterwards, also when the test fails, and private servers
//! to stop and start (`server`).

#![allow(dead_code)] // Each test file uses its own subset.

pub mod server;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cachier_core::{Core, Namespace};
use cachier_mongo::{Config, MongoCore};

/// The variable naming the server the tests use.
pub const URL_VAR: &str = "CACHIER_TEST_MONGO_URL";
/// The server used when the variable is not set.
pub const DEFAULT_URL: &str = "mongodb://127.0.0.1:27017";
/// The database the tests write to.
pub const TEST_DATABASE: &str = "cachier_test";

/// The URL of the shared test server.
pub fn url() -> String {
    std::env::var(URL_VAR)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// Settings for the shared test server (see [`config_for`]).
pub fn config() -> Config {
    config_for(&url())
}

/// Settings for the server at `url`, with timeouts long enough for nx-27017 (a Python server)
/// to answer a first connection, store values near the 16 MiB limit, or serve 64 concurrent
/// claims, while the whole test matrix (and possibly a build) loads the machine's two cores: a
/// 2 s server selection timed out there, and once an operation waited over 10 s for the server
/// (it answers one request at a time for every mongo test running). A missing server still
/// fails within 10 s. Tests of the default timeouts use [`server::OutageServer::config`].
pub fn config_for(url: &str) -> Config {
    Config::from_url(url)
        .unwrap_or_else(|e| panic!("{URL_VAR}={url:?} is not a usable MongoDB URL: {e}"))
        .database(TEST_DATABASE)
        .server_selection_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
}

/// Sends `tracing` output (warnings and up, or as `RUST_LOG` says) to the test's captured
/// output, so a failing test shows what the backend and the front end logged.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A core on the shared test server; panics with instructions when no server answers.
pub async fn connect() -> MongoCore {
    init_logging();
    let url = url();
    let core = MongoCore::connect(config())
        .await
        .unwrap_or_else(|e| panic!("cannot configure the MongoDB backend for {url}: {e}"));
    if let Err(e) = core.ping().await {
        panic!(
            "no MongoDB server answers at {url} ({e}). Run the suite with `cargo xtask test mongo` \
             (it starts an nx-27017 server), or start one and set {URL_VAR}=mongodb://HOST:PORT"
        );
    }
    core
}

/// A namespace unique to this test and process, cleared when dropped.
pub struct TestNamespace {
    pub namespace: Namespace,
    config: Config,
}

impl TestNamespace {
    /// A fresh namespace `t_{pid}_{name}_{counter}{random}` on the shared server.
    pub fn new(name: &str) -> Self {
        Self::on(name, config())
    }

    /// A fresh namespace on the server `config` points at.
    pub fn on(name: &str, config: Config) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let random = cachier_core::ClaimToken::generate();
        let short: String = name.chars().take(24).collect();
        let namespace = Namespace::new(format!(
            "t_{}_{short}_{n}{}",
            std::process::id(),
            &random.as_str()[..8]
        ))
        .expect("pid, test name and hex make a valid namespace");
        TestNamespace { namespace, config }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime (possibly while unwinding), where blocking on a
        // future is not allowed: clean up from a thread with its own runtime and client.
        let namespace = self.namespace.clone();
        let config = self.config.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            runtime.block_on(async {
                let core = MongoCore::connect(config).await?;
                core.clear_namespace(&namespace).await
            })
        });
        match cleanup.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("could not drop test namespace {}: {e}", self.namespace),
            Err(_) => eprintln!("cleanup of test namespace {} panicked", self.namespace),
        }
    }
}
