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
/// purpose (see [Timeouts and outages](crate#timeouts-and-outages)): short enough that a call to
/// a server that is down or hung fails within about a second, so the front end computes
/// instead; long enough for a loaded machine on a local network.
///
/// ```
/// use std::time::Duration;
/// use cachier_redis::Config;
///
/// let config = Config::from_url("redis://:secret@cache.internal:6380/2")?
///     .with_response_timeout(Duration::from_secs(2));
/// assert_eq!(config.response_timeout(), Duration::from_secs(2));
///
/// // The same from the URL, e.g. in `CACHIER_REDIS_URL`:
/// let config = Config::from_url("redis://cache.internal/2?response_timeout_ms=2000")?;
/// assert_eq!(config.response_timeout(), Duration::from_secs(2));
/// assert!(Config::from_url("http://cache.internal").is_err());
/// # Ok::<(), cachier_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Config {
    deployment: Deployment,
    connect_timeout: Duration,
    response_timeout: Duration,
    reconnect_attempts: usize,
    scan_count: usize,
    wait_poll_interval: Duration,
}

/// What a core talks to: one server, or the nodes of a Redis Cluster.
#[derive(Clone)]
// Made once per config and never moved on a hot path: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Deployment {
    /// One server (a standalone primary, or whatever a proxy or the URL points at).
    Single(redis::Client),
    /// A Redis Cluster, reached through these seed nodes.
    #[cfg(feature = "cluster")]
    Cluster(Vec<redis::ConnectionInfo>),
}

impl Config {
    /// Default time allowed to open a connection (TCP, TLS, `AUTH`, `SELECT`): what a call
    /// costs at most when the server's host does not answer at all.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default time allowed for one reply: what a call costs at most when the server accepts
    /// the command but does not answer (hung, or frozen). A value of many megabytes travels
    /// well within it on a local network; raise it for larger values or slow links.
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default number of extra connection attempts (with a short backoff) a call makes before it
    /// fails. None: the next call tries again, and a call whose connection attempt was refused
    /// tries once more at once, so a server that is back is used at once while one that is down
    /// costs its callers about a millisecond.
    pub const DEFAULT_RECONNECT_ATTEMPTS: usize = 0;
    /// Default `COUNT` hint for `SCAN`.
    pub const DEFAULT_SCAN_COUNT: usize = 1000;
    /// Default longest pause of [`Core::wait`](cachier_core::Core::wait) between two reads
    /// while pub/sub wake-ups work (a safety net; wake-ups normally come first).
    pub const DEFAULT_WAIT_POLL_INTERVAL: Duration = Duration::from_secs(1);

    /// Parses a `redis://`, `rediss://` (TLS, rustls with the system's root certificates),
    /// `redis+unix://` or `unix://` URL: `redis://[user][:password@]host[:port][/db]`.
    ///
    /// The query parameters `connect_timeout_ms` and `response_timeout_ms` (whole milliseconds)
    /// set [`Config::with_connect_timeout`] and [`Config::with_response_timeout`].
    ///
    /// The URL is never echoed in errors, since it may hold a password.
    ///
    /// With the feature `cluster`, `redis+cluster://` and `rediss+cluster://` (TLS) name a
    /// Redis Cluster by some of its nodes, separated by commas:
    /// `redis+cluster://[user][:password@]host1:port1,host2:port2[?...]` (see
    /// [`Config::cluster`]).
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        let mut config = match scheme {
            Some("redis" | "rediss" | "redis+unix" | "unix") => {
                let client = redis::Client::open(url).map_err(|e| {
                    // The redis crate's message names the problem without repeating the URL.
                    Error::config(format!("invalid Redis URL: {e}")).with_backend("redis")
                })?;
                Self::from_client(client)
            }
            Some("redis+cluster" | "rediss+cluster") => Self::from_cluster_url(url)?,
            _ => {
                return Err(Error::config(
                    "a Redis URL starts with redis://, rediss://, redis+unix://, unix:// \
                     or (Redis Cluster) redis+cluster://",
                )
                .with_backend("redis"));
            }
        };
        if let Some(timeout) = query_millis(url, "connect_timeout_ms")? {
            config.connect_timeout = timeout;
        }
        if let Some(timeout) = query_millis(url, "response_timeout_ms")? {
            config.response_timeout = timeout;
        }
        Ok(config)
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
        Self::with_deployment(Deployment::Single(client))
    }

    fn with_deployment(deployment: Deployment) -> Self {
        Config {
            deployment,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            response_timeout: Self::DEFAULT_RESPONSE_TIMEOUT,
            reconnect_attempts: Self::DEFAULT_RECONNECT_ATTEMPTS,
            scan_count: Self::DEFAULT_SCAN_COUNT,
            wait_poll_interval: Self::DEFAULT_WAIT_POLL_INTERVAL,
        }
    }

    /// A Redis Cluster, reached through some of its nodes (`redis://host:port` or
    /// `rediss://host:port` URLs, with the same credentials if any; one reachable node is
    /// enough, the others are found from it). Commands go to the node that owns each key's
    /// slot and follow `MOVED`/`ASK` redirections; see [Redis Cluster](crate#redis-cluster).
    ///
    /// ```
    /// use cachier_redis::Config;
    ///
    /// let config = Config::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])?;
    /// assert!(config.is_cluster());
    /// // The same as one URL, e.g. in `CACHIER_REDIS_URL`:
    /// let config = Config::from_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")?;
    /// assert!(config.is_cluster());
    /// # Ok::<(), cachier_core::Error>(())
    /// ```
    #[cfg(feature = "cluster")]
    pub fn cluster<I>(nodes: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        use redis::IntoConnectionInfo;
        let mut seeds = Vec::new();
        for node in nodes {
            let node = node.as_ref();
            let scheme = node.split_once("://").map(|(scheme, _)| scheme);
            if !matches!(scheme, Some("redis" | "rediss")) {
                return Err(
                    Error::config("a Redis Cluster node is a redis:// or rediss:// URL")
                        .with_backend("redis"),
                );
            }
            let info = node.into_connection_info().map_err(|e| {
                Error::config(format!("invalid Redis Cluster node URL: {e}")).with_backend("redis")
            })?;
            if info.redis_settings().db() != 0 {
                return Err(Error::config(
                    "Redis Cluster has only database 0: a cluster node URL names no database",
                )
                .with_backend("redis"));
            }
            if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
                install_tls_provider();
            }
            seeds.push(info);
        }
        if seeds.is_empty() {
            return Err(
                Error::config("a Redis Cluster needs at least one node").with_backend("redis")
            );
        }
        Ok(Self::with_deployment(Deployment::Cluster(seeds)))
    }

    /// `redis+cluster://[user][:password@]h1:p1,h2:p2[/0][?query]`: one seed URL per host.
    #[cfg(feature = "cluster")]
    fn from_cluster_url(url: &str) -> Result<Self> {
        let (scheme, rest) = url.split_once("://").unwrap_or_default();
        let node_scheme = scheme.strip_suffix("+cluster").unwrap_or("redis");
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !path.is_empty() && path != "0" {
            return Err(
                Error::config("invalid Redis Cluster URL: a cluster has only database 0")
                    .with_backend("redis"),
            );
        }
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (Some(credentials), hosts),
            None => (None, authority),
        };
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|host| !host.is_empty())
            .map(|host| match credentials {
                Some(credentials) => format!("{node_scheme}://{credentials}@{host}"),
                None => format!("{node_scheme}://{host}"),
            })
            .collect();
        if nodes.is_empty() {
            return Err(
                Error::config("invalid Redis Cluster URL: name at least one host:port")
                    .with_backend("redis"),
            );
        }
        Self::cluster(nodes)
    }

    /// Without the feature `cluster`: a clear error.
    #[cfg(not(feature = "cluster"))]
    fn from_cluster_url(_url: &str) -> Result<Self> {
        Err(
            Error::config("redis+cluster:// URLs need the feature `cluster` of cachier-redis")
                .with_backend("redis"),
        )
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

    /// The client connections are opened from; `None` for a Redis Cluster.
    pub fn client(&self) -> Option<&redis::Client> {
        match &self.deployment {
            Deployment::Single(client) => Some(client),
            #[cfg(feature = "cluster")]
            Deployment::Cluster(_) => None,
        }
    }

    /// Whether this configuration names a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !matches!(self.deployment, Deployment::Single(_))
    }

    pub(crate) fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// Where the core connects, for errors and `Debug`: `host:port`, or the seed nodes of a
    /// cluster separated by commas. Never credentials.
    pub(crate) fn address(&self) -> String {
        match &self.deployment {
            Deployment::Single(client) => client.get_connection_info().addr().to_string(),
            #[cfg(feature = "cluster")]
            Deployment::Cluster(seeds) => seeds
                .iter()
                .map(|seed| seed.addr().to_string())
                .collect::<Vec<_>>()
                .join(","),
        }
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
        // The address and database only: never the credentials.
        let db = match &self.deployment {
            Deployment::Single(client) => client.get_connection_info().redis_settings().db(),
            #[cfg(feature = "cluster")]
            Deployment::Cluster(_) => 0,
        };
        f.debug_struct("Config")
            .field("cluster", &self.is_cluster())
            .field("addr", &self.address())
            .field("db", &db)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect_attempts", &self.reconnect_attempts)
            .field("scan_count", &self.scan_count)
            .field("wait_poll_interval", &self.wait_poll_interval)
            .finish()
    }
}

/// The value of the query parameter `name` of `url`, in whole milliseconds (the `redis` crate
/// ignores parameters it does not know). Refuses a value that is not a positive integer.
fn query_millis(url: &str, name: &str) -> Result<Option<Duration>> {
    let Some((_, query)) = url.split_once('?') else {
        return Ok(None);
    };
    let query = query.split('#').next().unwrap_or_default();
    let Some(value) = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
    else {
        return Ok(None);
    };
    match value.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
        _ => Err(Error::config(format!(
            "invalid Redis URL: {name} must be a positive number of milliseconds, not {value:?}"
        ))
        .with_backend("redis")),
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
            config
                .client()
                .unwrap()
                .get_connection_info()
                .redis_settings()
                .db(),
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

    #[test]
    fn timeouts_have_deliberate_defaults_and_come_from_the_url() {
        let config = Config::from_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!(config.connect_timeout(), Duration::from_secs(1));
        assert_eq!(config.response_timeout(), Duration::from_secs(1));
        assert_eq!(config.reconnect_attempts(), 0);

        let config = Config::from_url(
            "redis://:pw@127.0.0.1:6379/2?connect_timeout_ms=250&response_timeout_ms=3000",
        )
        .unwrap();
        assert_eq!(config.connect_timeout(), Duration::from_millis(250));
        assert_eq!(config.response_timeout(), Duration::from_secs(3));
        assert_eq!(
            config
                .client()
                .unwrap()
                .get_connection_info()
                .redis_settings()
                .db(),
            2
        );
        for bad in ["0", "-5", "1s", ""] {
            let url = format!("redis://:hunter2@x/0?response_timeout_ms={bad}");
            let err = Config::from_url(&url).unwrap_err();
            assert_eq!(err.kind(), cachier_core::ErrorKind::Config, "{bad:?}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn cluster_urls_name_their_nodes() {
        let config = Config::from_url(
            "redis+cluster://:hunter2@10.0.0.1:7000,10.0.0.2:7001?response_timeout_ms=2500",
        )
        .unwrap();
        assert!(config.is_cluster());
        assert!(config.client().is_none());
        assert_eq!(config.address(), "10.0.0.1:7000,10.0.0.2:7001");
        assert_eq!(config.response_timeout(), Duration::from_millis(2500));
        let Deployment::Cluster(seeds) = config.deployment() else {
            panic!("a cluster deployment");
        };
        assert_eq!(seeds.len(), 2);
        assert_eq!(seeds[1].redis_settings().password(), Some("hunter2"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(Config::from_url("rediss+cluster://10.0.0.1:7000").is_ok());
        for bad in [
            "redis+cluster://",
            "redis+cluster://10.0.0.1:7000/3",
            "redis+cluster://:hunter2@x:notaport",
        ] {
            let err = Config::from_url(bad).unwrap_err();
            assert_eq!(err.kind(), cachier_core::ErrorKind::Config, "{bad:?}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        assert!(Config::cluster(["http://10.0.0.1:7000"]).is_err());
        assert!(Config::cluster(Vec::<String>::new()).is_err());
    }
}
