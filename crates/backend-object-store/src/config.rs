//! Where the objects live: a URL (`s3://`, `file://`, `memory://`) or a store the application
//! built itself, a key prefix, and the timeouts and retries used on the way.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cachier_core::{Error, Result};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::BACKEND;

/// Settings of an [`ObjectStoreCore`](crate::ObjectStoreCore).
///
/// Built from a URL ([`Config::from_url`]) or from a store the application already has
/// ([`Config::from_store`]), then tuned with the `with_*` methods. Timeouts and retries are set
/// on purpose (see [Timeouts and outages](crate#timeouts-and-outages)): an endpoint that refuses
/// or does not answer costs a call about a second, not the minutes of `object_store`'s own
/// defaults (ten retries within three minutes).
///
/// ```
/// use std::time::Duration;
/// use cachier_object_store::Config;
///
/// let config = Config::from_url(
///     "s3://my-bucket/caches/app?endpoint=http://127.0.0.1:9000&region=eu-west-1",
/// )?
/// .with_request_timeout(Duration::from_secs(10));
/// assert_eq!(config.prefix(), "caches/app");
/// assert_eq!(config.request_timeout(), Duration::from_secs(10));
///
/// assert!(Config::from_url("memory://").is_ok());
/// assert!(Config::from_url("ftp://host/dir").is_err());
/// # Ok::<(), cachier_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) location: Location,
    pub(crate) prefix: Vec<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    retries: usize,
    credentials: Option<(String, String)>,
}

/// Which store a [`Config`] opens.
#[derive(Clone)]
pub(crate) enum Location {
    /// An S3 bucket (or an S3-compatible server).
    S3 {
        bucket: String,
        endpoint: Option<String>,
        region: Option<String>,
    },
    /// A directory of the local file system.
    File(std::path::PathBuf),
    /// A process-wide in-memory store of this name.
    Memory(String),
    /// A store the application built, and whether it supports `PutMode::Update`.
    Custom {
        store: Arc<dyn ObjectStore>,
        conditional_update: bool,
        cross_process: bool,
    },
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let location = match &self.location {
            Location::S3 {
                bucket, endpoint, ..
            } => format!("s3://{bucket} (endpoint {endpoint:?})"),
            Location::File(dir) => format!("file://{}", dir.display()),
            Location::Memory(name) => format!("memory://{name}"),
            Location::Custom { store, .. } => format!("custom {store}"),
        };
        f.debug_struct("Config")
            .field("location", &location)
            .field("prefix", &self.prefix())
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .field("credentials", &self.credentials.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl Config {
    /// Default time allowed to open a connection (TCP and TLS): what a call costs at most when
    /// the endpoint's host does not answer at all.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default time allowed for one whole request, body included: what a call costs at most
    /// when the server accepts it but does not answer. Values of many megabytes travel well
    /// within it on a local network; raise it for larger values or slow links.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default number of retries of a request that failed on the way (connection refused or
    /// reset, a 5xx answer): one, after 50 ms, and only within one second of the first attempt.
    pub const DEFAULT_RETRIES: usize = 1;

    /// Parses a store URL:
    ///
    /// - `s3://BUCKET[/PREFIX]?endpoint=URL&region=REGION`: an S3 bucket, or a bucket of an
    ///   S3-compatible server at `endpoint` (path-style requests; `http://` endpoints are
    ///   allowed). Credentials come from the standard environment variables
    ///   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, ...).
    /// - `file:///DIR`: a directory of the local file system (created if missing).
    /// - `memory://[NAME]`: an in-memory store shared by every core of this process that names
    ///   it (default name `default`); for tests and single-process use.
    ///
    /// Query parameters (every scheme): `prefix` (added to the S3 path prefix),
    /// `connect_timeout_ms`, `request_timeout_ms` and `retries`.
    pub fn from_url(url: &str) -> Result<Self> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            config_error("an object-store URL starts with s3://, file:// or memory://")
        })?;
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, query),
            None => (rest, ""),
        };
        let mut params = HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(name.to_owned(), percent_decode(value)?);
        }
        let mut prefix = Vec::new();
        let location = match scheme {
            "s3" | "s3a" => {
                let (bucket, key_prefix) = path.split_once('/').unwrap_or((path, ""));
                if bucket.is_empty() {
                    return Err(config_error(
                        "an s3:// URL names a bucket: s3://BUCKET/PREFIX",
                    ));
                }
                prefix.extend(split_prefix(key_prefix)?);
                Location::S3 {
                    bucket: bucket.to_owned(),
                    endpoint: params.remove("endpoint"),
                    region: params.remove("region"),
                }
            }
            "file" => {
                let dir = percent_decode(path)?;
                if !dir.starts_with('/') {
                    return Err(config_error(
                        "a file:// URL names an absolute directory: file:///DIR",
                    ));
                }
                Location::File(dir.into())
            }
            "memory" => {
                let name = if path.is_empty() { "default" } else { path };
                Location::Memory(name.to_owned())
            }
            "gs" | "az" | "abfs" | "azure" => {
                return Err(config_error(format!(
                    "{scheme}:// stores are not built into cachier-object-store; build the \
                     store with object_store (features gcp or azure) and use Config::from_store"
                )));
            }
            other => {
                return Err(config_error(format!(
                    "unknown object-store scheme {other:?}: use s3://, file:// or memory://"
                )));
            }
        };
        let mut config = Config::new(location);
        config.prefix = prefix;
        if let Some(extra) = params.remove("prefix") {
            config.prefix.extend(split_prefix(&extra)?);
        }
        if let Some(ms) = params.remove("connect_timeout_ms") {
            config.connect_timeout =
                Duration::from_millis(parse_number(&ms, "connect_timeout_ms")?);
        }
        if let Some(ms) = params.remove("request_timeout_ms") {
            config.request_timeout =
                Duration::from_millis(parse_number(&ms, "request_timeout_ms")?);
        }
        if let Some(n) = params.remove("retries") {
            config.retries = parse_number(&n, "retries")? as usize;
        }
        if let Some(unknown) = params.keys().next() {
            return Err(config_error(format!(
                "unknown object-store URL parameter {unknown:?} (known: endpoint, region, \
                 prefix, connect_timeout_ms, request_timeout_ms, retries)"
            )));
        }
        Ok(config)
    }

    /// Settings over a store the application built itself (Google Cloud Storage or Azure with
    /// `object_store`'s `gcp` or `azure` features, a wrapped store, ...).
    ///
    /// `conditional_update` says whether the store honours `PutMode::Update` (S3, GCS, Azure
    /// and `InMemory` do; `LocalFileSystem` does not), `cross_process` whether other processes
    /// reach the same objects. Timeouts and retries are the store's own: the `with_*` timeout
    /// methods apply only to stores this crate builds from a URL.
    pub fn from_store(
        store: Arc<dyn ObjectStore>,
        conditional_update: bool,
        cross_process: bool,
    ) -> Self {
        Config::new(Location::Custom {
            store,
            conditional_update,
            cross_process,
        })
    }

    fn new(location: Location) -> Self {
        Config {
            location,
            prefix: Vec::new(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            retries: Self::DEFAULT_RETRIES,
            credentials: None,
        }
    }

    /// Uses this access key for `s3://` stores instead of the standard environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`). Without either, `object_store` asks the
    /// instance metadata service, which costs a connect timeout where there is none.
    pub fn with_credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.credentials = Some((access_key_id.to_owned(), secret_access_key.to_owned()));
        self
    }

    /// The same settings with every object under `prefix` (`/`-separated; empty parts are
    /// ignored), after any prefix the URL gave.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        self.prefix.extend(split_prefix(prefix)?);
        Ok(self)
    }

    /// Sets the time allowed to open a connection ([`Config::DEFAULT_CONNECT_TIMEOUT`]).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the time allowed for one whole request ([`Config::DEFAULT_REQUEST_TIMEOUT`]).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how often a failed request is retried ([`Config::DEFAULT_RETRIES`]).
    pub fn with_retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// The key prefix, `/`-separated (empty for none).
    pub fn prefix(&self) -> String {
        self.prefix.join("/")
    }

    /// The time allowed to open a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The time allowed for one whole request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// How often a failed request is retried.
    pub fn retries(&self) -> usize {
        self.retries
    }

    /// Opens the store: what it is, whether it has conditional updates, whether other processes
    /// share it, and its name for messages.
    pub(crate) fn open(&self) -> Result<Opened> {
        match &self.location {
            Location::S3 {
                bucket,
                endpoint,
                region,
            } => {
                // reqwest is built without a bundled TLS provider; use ring (already built for
                // the other backends) unless the application installed one.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_client_options(self.client_options())
                    .with_retry(self.retry_config());
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(region) = region {
                    builder = builder.with_region(region);
                }
                if let Some((key_id, secret)) = &self.credentials {
                    builder = builder
                        .with_access_key_id(key_id)
                        .with_secret_access_key(secret);
                }
                let store = builder.build().map_err(|e| {
                    config_error(format!("cannot configure the S3 store for bucket {bucket}"))
                        .with_source(e)
                })?;
                Ok(Opened {
                    store: Arc::new(store),
                    conditional_update: true,
                    cross_process: true,
                    persistent: true,
                    max_value_bytes: Some(S3_MAX_PUT_BYTES),
                })
            }
            Location::File(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    config_error(format!("cannot create the directory {}", dir.display()))
                        .with_source(e)
                })?;
                let store = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| {
                        config_error(format!("cannot open the directory {}", dir.display()))
                            .with_source(e)
                    })?
                    .with_automatic_cleanup(true);
                Ok(Opened {
                    store: Arc::new(store),
                    conditional_update: false,
                    cross_process: true,
                    persistent: true,
                    max_value_bytes: None,
                })
            }
            Location::Memory(name) => {
                static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
                let mut stores = STORES
                    .get_or_init(Default::default)
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let store = stores
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(InMemory::new()))
                    .clone();
                Ok(Opened {
                    store,
                    conditional_update: true,
                    cross_process: false,
                    persistent: false,
                    max_value_bytes: None,
                })
            }
            Location::Custom {
                store,
                conditional_update,
                cross_process,
            } => Ok(Opened {
                store: store.clone(),
                conditional_update: *conditional_update,
                cross_process: *cross_process,
                persistent: *cross_process,
                max_value_bytes: None,
            }),
        }
    }

    fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                base: 2.0,
            },
            max_retries: self.retries,
            retry_timeout: Duration::from_secs(1),
        }
    }
}

/// S3's limit on one `PutObject` (5 GiB) less the entry header.
const S3_MAX_PUT_BYTES: u64 = (5 << 30) - crate::layout::HEADER_LEN as u64;

/// An opened store and what it can do.
pub(crate) struct Opened {
    pub store: Arc<dyn ObjectStore>,
    pub conditional_update: bool,
    pub cross_process: bool,
    pub persistent: bool,
    pub max_value_bytes: Option<u64>,
}

fn config_error(message: impl Into<String>) -> Error {
    Error::config(message).with_backend(BACKEND)
}

fn parse_number(text: &str, name: &str) -> Result<u64> {
    text.parse()
        .map_err(|_| config_error(format!("{name} must be a whole number, not {text:?}")))
}

/// Splits a `/`-separated prefix into parts, refusing `.` and `..` and control characters.
fn split_prefix(prefix: &str) -> Result<Vec<String>> {
    let mut parts = Vec::new();
    for part in prefix.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." || part.chars().any(char::is_control) {
            return Err(config_error(format!(
                "invalid prefix part {part:?}: no '.', '..' or control characters"
            )));
        }
        parts.push(part.to_owned());
    }
    Ok(parts)
}

/// Decodes `%XX` escapes of a URL part.
fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| config_error("a bad %-escape in the object-store URL"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| config_error("the object-store URL is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_url_parts() {
        let config = Config::from_url(
            "s3://bucket/a/b?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=r&prefix=c&retries=0",
        )
        .expect("valid");
        assert_eq!(config.prefix(), "a/b/c");
        assert_eq!(config.retries(), 0);
        match config.location {
            Location::S3 {
                bucket,
                endpoint,
                region,
            } => {
                assert_eq!(bucket, "bucket");
                assert_eq!(endpoint.as_deref(), Some("http://127.0.0.1:9000"));
                assert_eq!(region.as_deref(), Some("r"));
            }
            _ => panic!("not an S3 location"),
        }
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in [
            "s3:///prefix",
            "file://relative",
            "s3://b/../x",
            "s3://b?nope=1",
            "s3://b?retries=x",
            "gs://bucket",
            "bucket",
        ] {
            let err = Config::from_url(url).expect_err(url);
            assert_eq!(err.kind(), cachier_core::ErrorKind::Config, "{url}: {err}");
        }
    }
}
