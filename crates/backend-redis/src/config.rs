//! How to reach Redis: a URL or an existing client, and the timeouts used on the way.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use cachier_core::{Error, Result};

/// The URL used when none is given: a Redis server on the local machine.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Settings of a [`RedisCore`](crate::RedisCore).
///
/// Built from a URL ([`Config::from_url`]) or from a `redis::Client` the application already has
/// ([`Config::from_client`]), then tuned with the `with_*` methods. Every timeout is set on
/// purpose: the `redis` crate's own defaults (1 s to connect, 500 ms per response) make loaded
/// machines fail at random, and no timeout at all would let a hung server hang the caller.
///
/// ```
/// use std::time::Duration;
/// use cachier_redis::Config;
///
/// let config = Config::from_url("redis://:secret@cache.internal:6380/2")?
///     .with_response_timeout(Duration::from_secs(2));
/// assert_eq!(config.response_timeout(), Duration::from_secs(2));
/// assert!(Config::from_url("http://cache.internal").is_err());
/// # Ok::<(), cachier_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Config {
    client: redis::Client,
    connect_timeout: Duration,
    response_timeout: Duration,
    reconnect_attempts: usize,
    scan_count: usize,
    wait_poll_interval: Duration,
}

impl Config {
    /// Default time allowed to open a connection (TCP, TLS, `AUTH`, `SELECT`).
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default time allowed for one reply. Generous enough for values of many megabytes on a
    /// loaded machine, short enough that a hung server fails the call instead of hanging it.
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default number of extra connection attempts after a connection is lost, before a call
    /// fails (the next call starts over). Small, so a server that is down fails calls quickly.
    pub const DEFAULT_RECONNECT_ATTEMPTS: usize = 2;
    /// Default `COUNT` hint for `SCAN`.
    pub const DEFAULT_SCAN_COUNT: usize = 1000;
    /// Default longest pause of [`Core::wait`](cachier_core::Core::wait) between two reads
    /// while pub/sub wake-ups work (a safety net; wake-ups normally come first).
    pub const DEFAULT_WAIT_POLL_INTERVAL: Duration = Duration::from_secs(1);

    /// Parses a `redis://`, `rediss://` (TLS, rustls with the system's root certificates),
    /// `redis+unix://` or `unix://` URL: `redis://[user][:password@]host[:port][/db]`.
    ///
    /// The URL is never echoed in errors, since it may hold a password.
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some("redis" | "rediss" | "redis+unix" | "unix") => {}
            _ => {
                return Err(Error::config(
                    "a Redis URL starts with redis://, rediss://, redis+unix:// or unix://",
                )
                .with_backend("redis"));
            }
        }
        let client = redis::Client::open(url).map_err(|e| {
            // The redis crate's message names the problem without repeating the URL.
            Error::config(format!("invalid Redis URL: {e}")).with_backend("redis")
        })?;
        Ok(Self::from_client(client))
    }

    /// The URL in `CACHIER_REDIS_URL`, else [`DEFAULT_URL`].
    pub fn from_env() -> Result<Self> {
        match std::env::var("CACHIER_REDIS_URL") {
            Ok(url) => Self::from_url(&url),
            Err(_) => Self::from_url(DEFAULT_URL),
        }
    }

    /// Uses a client the application already configured (TLS certificates, credentials, ...).
    pub fn from_client(client: redis::Client) -> Self {
        if matches!(
            client.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { .. }
        ) {
            install_tls_provider();
        }
        Config {
            client,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            response_timeout: Self::DEFAULT_RESPONSE_TIMEOUT,
            reconnect_attempts: Self::DEFAULT_RECONNECT_ATTEMPTS,
            scan_count: Self::DEFAULT_SCAN_COUNT,
            wait_poll_interval: Self::DEFAULT_WAIT_POLL_INTERVAL,
        }
    }

    /// Sets the time allowed to open one connection.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the time allowed for one reply.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets how many times a lost connection is re-opened (with a short exponential backoff)
    /// before the call waiting on it fails.
    pub fn with_reconnect_attempts(mut self, attempts: usize) -> Self {
        self.reconnect_attempts = attempts;
        self
    }

    /// Sets the `COUNT` hint of the `SCAN`s behind `clear`, `clear_claims`, `delete_stale` and
    /// `clear_namespace` (at least 1).
    pub fn with_scan_count(mut self, count: usize) -> Self {
        self.scan_count = count.max(1);
        self
    }

    /// Sets the longest pause between two reads of a waiter while pub/sub wake-ups work.
    pub fn with_wait_poll_interval(mut self, interval: Duration) -> Self {
        self.wait_poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The client connections are opened from.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The time allowed to open one connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The time allowed for one reply.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// How many times a lost connection is re-opened before a call fails.
    pub fn reconnect_attempts(&self) -> usize {
        self.reconnect_attempts
    }

    /// The `COUNT` hint of `SCAN`.
    pub fn scan_count(&self) -> usize {
        self.scan_count
    }

    /// The longest pause between two reads of a waiter while pub/sub wake-ups work.
    pub fn wait_poll_interval(&self) -> Duration {
        self.wait_poll_interval
    }
}

impl FromStr for Config {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        Config::from_url(url)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.client.get_connection_info();
        // The address and database only: never the credentials.
        f.debug_struct("Config")
            .field("addr", &info.addr().to_string())
            .field("db", &info.redis_settings().db())
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect_attempts", &self.reconnect_attempts)
            .field("scan_count", &self.scan_count)
            .field("wait_poll_interval", &self.wait_poll_interval)
            .finish()
    }
}

/// rustls needs a process-wide crypto provider when more than one could be compiled in (other
/// crates of an application may enable another). Installs `ring` unless one is installed.
fn install_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another installer is fine: any provider will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let config = Config::from_url("redis://user:pw@example.invalid:6390/3").unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("example.invalid:6390"), "{debug}");
        assert!(!debug.contains("pw"), "{debug}");
        assert_eq!(
            config.client().get_connection_info().redis_settings().db(),
            3
        );
        assert!(Config::from_url("rediss://example.invalid:6390").is_ok());
        for bad in [
            "",
            "example.invalid:6379",
            "http://x",
            "redis://x/notanumber",
        ] {
            let err = Config::from_url(bad).unwrap_err();
            assert_eq!(err.kind(), cachier_core::ErrorKind::Config, "{bad:?}");
        }
        let err = Config::from_url("redis://:hunter2@x/notanumber").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
