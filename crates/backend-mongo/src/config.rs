//! [`Config`]: where the MongoDB backend connects and how it names its collections.

use std::fmt;
use std::time::Duration;

use cachier_core::{Error, Namespace, Result};
use mongodb::Client;
use mongodb::options::ConnectionString;

/// The database used when neither the URL path nor [`Config::database`] names one.
pub const DEFAULT_DATABASE: &str = "cachier";
/// The prefix put before every collection name unless [`Config::collection_prefix`] says otherwise.
pub const DEFAULT_COLLECTION_PREFIX: &str = "cachier_";
/// How long a call waits for a reachable server before failing, by default: what a call costs
/// while the server is down (refused or unreachable).
///
/// The driver's own default is 30 seconds; a cache that blocks its caller that long during an
/// outage does more harm than good, so this backend fails after one second and lets the front
/// end compute the value instead.
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long opening one connection may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one request of `get`, `set`, `claim`, `renew`, `release` or `remove` may take, by
/// default: what a call costs while the server accepts requests but does not answer (a backend
/// operation makes one request, or two or three for `claim`, `release` and `remove`).
///
/// A value near the 16 MiB document limit travels well within it on a local network; raise it
/// for slow links or slow servers.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one request of `clear`, `clear_claims`, `delete_stale` or `clear_namespace` may
/// take, by default: long enough to delete millions of documents.
pub const DEFAULT_MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest database name MongoDB accepts, in bytes.
const MAX_DATABASE_LEN: usize = 63;
/// The longest collection prefix this backend accepts, in bytes.
const MAX_PREFIX_LEN: usize = 64;

/// How the backend reaches the server: a connection string it parses, or a client the
/// application already built.
#[derive(Clone)]
enum Source {
    Url(Box<ConnectionString>),
    Client(Client),
}

/// Settings of a [`MongoCore`](crate::MongoCore).
///
/// Built from a `mongodb://` (or `mongodb+srv://`) URL or from an existing [`Client`], then
/// adjusted with the builder methods:
///
/// ```
/// use std::time::Duration;
/// use cachier_mongo::Config;
///
/// let config = Config::from_url("mongodb://127.0.0.1:27017/app_cache")?
///     .collection_prefix("memo_")
///     .server_selection_timeout(Duration::from_millis(500));
/// assert_eq!(config.database_name(), "app_cache");
/// # Ok::<(), cachier_core::Error>(())
/// ```
///
/// The server selection and connect timeouts apply to clients the backend builds from a URL;
/// an existing client keeps its own. The operation and maintenance timeouts are enforced by
/// the backend itself, whatever the client. Each timeout is, in this order: the one set here,
/// the URL's (`serverSelectionTimeoutMS`, `connectTimeoutMS`, and `socketTimeoutMS` for the
/// operation timeout, which the driver itself does not implement), or the default.
///
/// ```
/// use std::time::Duration;
/// use cachier_mongo::Config;
///
/// let config = Config::from_url("mongodb://db.internal/app?socketTimeoutMS=2500")?;
/// assert_eq!(config.operation_time_limit(), Duration::from_millis(2500));
/// assert_eq!(config.server_selection_time_limit(), Duration::from_secs(1));
/// # Ok::<(), cachier_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Config {
    source: Source,
    database: Option<String>,
    collection_prefix: String,
    server_selection_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    operation_timeout: Option<Duration>,
    maintenance_timeout: Duration,
}

impl Config {
    /// Settings for the server at `url`, a MongoDB connection string.
    ///
    /// The database is the URL's path (`mongodb://host/db`) if it has one, else
    /// [`DEFAULT_DATABASE`]. Fails with [`ErrorKind::Config`](cachier_core::ErrorKind::Config)
    /// on a malformed URL or a scheme other than `mongodb://` and `mongodb+srv://`.
    pub fn from_url(url: impl AsRef<str>) -> Result<Self> {
        let url = url.as_ref();
        let parsed = ConnectionString::parse(url).map_err(|e| {
            Error::config(format!(
                "invalid MongoDB URL {:?}: expected mongodb://host[:port][/database][?options]",
                redact(url)
            ))
            .with_source(e)
            .with_backend(crate::BACKEND)
        })?;
        Ok(Config::with_source(Source::Url(Box::new(parsed))))
    }

    /// Settings that reuse an existing client (its pool, credentials and timeouts).
    ///
    /// The database is [`DEFAULT_DATABASE`] unless [`Config::database`] says otherwise.
    pub fn from_client(client: Client) -> Self {
        Config::with_source(Source::Client(client))
    }

    fn with_source(source: Source) -> Self {
        Config {
            source,
            database: None,
            collection_prefix: DEFAULT_COLLECTION_PREFIX.to_owned(),
            server_selection_timeout: None,
            connect_timeout: None,
            operation_timeout: None,
            maintenance_timeout: DEFAULT_MAINTENANCE_TIMEOUT,
        }
    }

    /// The parsed URL, if the client is built from one.
    fn url(&self) -> Option<&ConnectionString> {
        match &self.source {
            Source::Url(url) => Some(url),
            Source::Client(_) => None,
        }
    }

    /// Uses database `name` (overriding the URL's path).
    pub fn database(mut self, name: impl Into<String>) -> Self {
        self.database = Some(name.into());
        self
    }

    /// Puts `prefix` before every collection name: namespace `app` lives in collection
    /// `{prefix}app`. Letters, digits and `_`, not starting with a digit; default
    /// [`DEFAULT_COLLECTION_PREFIX`].
    pub fn collection_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.collection_prefix = prefix.into();
        self
    }

    /// How long a call waits for a reachable server before failing with
    /// [`ErrorKind::Unavailable`](cachier_core::ErrorKind::Unavailable). Applies to clients built
    /// from a URL. Default: the URL's `serverSelectionTimeoutMS`, else
    /// [`DEFAULT_SERVER_SELECTION_TIMEOUT`].
    pub fn server_selection_timeout(mut self, timeout: Duration) -> Self {
        self.server_selection_timeout = Some(timeout);
        self
    }

    /// How long opening one connection may take. Applies to clients built from a URL.
    /// Default: the URL's `connectTimeoutMS`, else [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long one request of a per-key operation may take before it fails with
    /// [`ErrorKind::Unavailable`](cachier_core::ErrorKind::Unavailable), so a server that accepts
    /// connections but stops answering cannot hang the caller. Default: the URL's
    /// `socketTimeoutMS`, else [`DEFAULT_OPERATION_TIMEOUT`].
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = Some(timeout);
        self
    }

    /// [`Config::operation_timeout`] for the requests of `clear`, `clear_claims`,
    /// `delete_stale` and `clear_namespace`, which may touch many documents. Default:
    /// [`DEFAULT_MAINTENANCE_TIMEOUT`].
    pub fn maintenance_timeout(mut self, timeout: Duration) -> Self {
        self.maintenance_timeout = timeout;
        self
    }

    /// The database the backend will use.
    pub fn database_name(&self) -> &str {
        if let Some(name) = &self.database {
            return name;
        }
        match &self.source {
            Source::Url(url) => url.default_database.as_deref().unwrap_or(DEFAULT_DATABASE),
            Source::Client(_) => DEFAULT_DATABASE,
        }
    }

    /// The prefix of every collection name.
    pub fn prefix(&self) -> &str {
        &self.collection_prefix
    }

    /// The time one request of a per-key operation may take.
    #[allow(deprecated)] // `socket_timeout`: read as this backend's operation timeout.
    pub fn operation_time_limit(&self) -> Duration {
        self.operation_timeout
            .or_else(|| self.url().and_then(|url| url.socket_timeout))
            .unwrap_or(DEFAULT_OPERATION_TIMEOUT)
    }

    /// The time one request of a maintenance operation may take.
    pub fn maintenance_time_limit(&self) -> Duration {
        self.maintenance_timeout
    }

    /// The time a call waits for a reachable server (clients built from a URL).
    pub fn server_selection_time_limit(&self) -> Duration {
        self.server_selection_timeout
            .or_else(|| self.url().and_then(|url| url.server_selection_timeout))
            .unwrap_or(DEFAULT_SERVER_SELECTION_TIMEOUT)
    }

    /// The time opening one connection may take (clients built from a URL).
    pub fn connect_time_limit(&self) -> Duration {
        self.connect_timeout
            .or_else(|| self.url().and_then(|url| url.connect_timeout))
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    /// The name of the collection that holds `namespace`: the prefix, then the namespace with
    /// `_` written as `__`, `.` as `_d` and `-` as `_h`.
    ///
    /// The escaping keeps names distinct (`a.b`, `a-b` and `a_b` map to three collections) and
    /// within letters, digits and `_`, which every MongoDB-compatible server accepts.
    ///
    /// ```
    /// use cachier_core::Namespace;
    /// use cachier_mongo::Config;
    ///
    /// let config = Config::from_url("mongodb://localhost")?;
    /// let name = config.collection_name(&Namespace::new("my-app.v2")?);
    /// assert_eq!(name, "cachier_my_happ_dv2");
    /// # Ok::<(), cachier_core::Error>(())
    /// ```
    pub fn collection_name(&self, namespace: &Namespace) -> String {
        let mut name = String::with_capacity(self.collection_prefix.len() + 2 * MAX_PREFIX_LEN);
        name.push_str(&self.collection_prefix);
        for c in namespace.as_str().chars() {
            match c {
                '_' => name.push_str("__"),
                '.' => name.push_str("_d"),
                '-' => name.push_str("_h"),
                c => name.push(c),
            }
        }
        name
    }

    /// Checks the database name and the collection prefix.
    pub(crate) fn validate(&self) -> Result<()> {
        let database = self.database_name();
        let forbidden = |c: char| "/\\. \"$*<>:|?".contains(c) || c.is_control();
        if database.is_empty() || database.len() > MAX_DATABASE_LEN || database.contains(forbidden)
        {
            return Err(Error::config(format!(
                "invalid MongoDB database name {database:?}: use 1 to {MAX_DATABASE_LEN} bytes \
                 without spaces, control characters or any of / \\ . \" $ * < > : | ?"
            ))
            .with_backend(crate::BACKEND));
        }
        let prefix = &self.collection_prefix;
        let valid_chars = prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let starts_well = prefix
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        if !valid_chars
            || !starts_well
            || prefix.len() > MAX_PREFIX_LEN
            || prefix.starts_with("system")
        {
            return Err(Error::config(format!(
                "invalid MongoDB collection prefix {prefix:?}: use 1 to {MAX_PREFIX_LEN} letters, \
                 digits or '_', starting with a letter or '_' and not with \"system\""
            ))
            .with_backend(crate::BACKEND));
        }
        Ok(())
    }

    /// Builds the client: the given one, or a new one from the URL with this config's timeouts.
    pub(crate) async fn client(&self) -> Result<Client> {
        match &self.source {
            Source::Client(client) => Ok(client.clone()),
            Source::Url(url) => {
                let mut options = mongodb::options::ClientOptions::parse(url.as_ref().clone())
                    .await
                    .map_err(|e| {
                        Error::config("the MongoDB connection string could not be resolved")
                            .with_source(e)
                            .with_backend(crate::BACKEND)
                            .with_operation("connect")
                    })?;
                options.server_selection_timeout = Some(self.server_selection_time_limit());
                options.connect_timeout = Some(self.connect_time_limit());
                if options.app_name.is_none() {
                    options.app_name = Some("cachier".to_owned());
                }
                Client::with_options(options).map_err(|e| {
                    Error::config("the MongoDB client could not be created")
                        .with_source(e)
                        .with_backend(crate::BACKEND)
                        .with_operation("connect")
                })
            }
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Url(url) => format!(
                "url with hosts {:?}",
                url.host_info // Host names only: credentials never reach a log.
            ),
            Source::Client(_) => "existing client".to_owned(),
        };
        f.debug_struct("Config")
            .field("source", &source)
            .field("database", &self.database_name())
            .field("collection_prefix", &self.collection_prefix)
            .field(
                "server_selection_timeout",
                &self.server_selection_time_limit(),
            )
            .field("connect_timeout", &self.connect_time_limit())
            .field("operation_timeout", &self.operation_time_limit())
            .field("maintenance_timeout", &self.maintenance_timeout)
            .finish()
    }
}

/// The URL with any `user:password@` part replaced, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cachier_core::ErrorKind;

    #[test]
    fn database_comes_from_the_url_path_then_the_setting() {
        let config = Config::from_url("mongodb://127.0.0.1:27017").unwrap();
        assert_eq!(config.database_name(), DEFAULT_DATABASE);
        let config = Config::from_url("mongodb://127.0.0.1:27017/appdb?appName=x").unwrap();
        assert_eq!(config.database_name(), "appdb");
        assert_eq!(config.database("other").database_name(), "other");
    }

    #[test]
    fn malformed_urls_are_config_errors_without_credentials() {
        for url in [
            "http://localhost",
            "localhost:27017",
            "mongodb://u:secret@h:notaport",
        ] {
            let err = Config::from_url(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(!err.message().contains("secret"), "{err}");
        }
    }

    #[test]
    fn bad_database_names_and_prefixes_are_refused() {
        let base = Config::from_url("mongodb://localhost").unwrap();
        assert!(base.validate().is_ok());
        for db in ["", "a.b", "a b", "a/b", "a$", &"d".repeat(64)] {
            let err = base.clone().database(db).validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{db:?}");
        }
        for prefix in ["", "1abc", "a.b", "a-b", "system_", "ä", &"p".repeat(65)] {
            let err = base
                .clone()
                .collection_prefix(prefix)
                .validate()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{prefix:?}");
        }
        assert!(base.collection_prefix("_x9").validate().is_ok());
    }

    #[test]
    fn collection_names_are_escaped_without_collisions() {
        let config = Config::from_url("mongodb://localhost").unwrap();
        let names: Vec<String> = ["a_b", "a.b", "a-b", "a__b", "a_db", "ab", "9a"]
            .iter()
            .map(|ns| config.collection_name(&Namespace::new(ns).unwrap()))
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for name in &names {
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            assert!(name.starts_with(DEFAULT_COLLECTION_PREFIX));
        }
    }

    #[test]
    fn timeouts_come_from_the_setting_then_the_url_then_the_default() {
        let config = Config::from_url("mongodb://localhost").unwrap();
        assert_eq!(
            config.server_selection_time_limit(),
            DEFAULT_SERVER_SELECTION_TIMEOUT
        );
        assert_eq!(config.connect_time_limit(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.operation_time_limit(), DEFAULT_OPERATION_TIMEOUT);
        assert_eq!(config.maintenance_time_limit(), DEFAULT_MAINTENANCE_TIMEOUT);
        assert_eq!(DEFAULT_SERVER_SELECTION_TIMEOUT, Duration::from_secs(1));

        let url = "mongodb://localhost/?serverSelectionTimeoutMS=300&connectTimeoutMS=400\
                   &socketTimeoutMS=500";
        let config = Config::from_url(url).unwrap();
        assert_eq!(
            config.server_selection_time_limit(),
            Duration::from_millis(300)
        );
        assert_eq!(config.connect_time_limit(), Duration::from_millis(400));
        assert_eq!(config.operation_time_limit(), Duration::from_millis(500));

        let config = config
            .server_selection_timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(4))
            .operation_timeout(Duration::from_secs(5))
            .maintenance_timeout(Duration::from_secs(6));
        assert_eq!(config.server_selection_time_limit(), Duration::from_secs(3));
        assert_eq!(config.connect_time_limit(), Duration::from_secs(4));
        assert_eq!(config.operation_time_limit(), Duration::from_secs(5));
        assert_eq!(config.maintenance_time_limit(), Duration::from_secs(6));
    }

    #[test]
    fn debug_output_hides_credentials() {
        let config = Config::from_url("mongodb://user:hunter2@db.example:27017/x").unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db.example"), "{shown}");
    }
}
