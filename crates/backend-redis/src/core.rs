//! [`RedisCore`]: the [`Core`] implementation on Redis.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cachier_core::{
    Capabilities, Claim, ClaimToken, Core, Entry, Error, ErrorKind, FuncId, Key, Namespace, Result,
    Timestamp,
};
use redis::{RedisError, Script, ServerErrorKind};
use tracing::warn;

use crate::config::Config;
use crate::connection::Connection;
use crate::layout;
use crate::wakeup::{Timeouts, Wakeups};

const BACKEND: &str = "redis";

/// The largest value this backend stores: Redis' 512 MiB string limit minus the 9-byte
/// entry header (framing version and `stored_at`).
pub const MAX_VALUE_BYTES: u64 = 512 * 1024 * 1024 - layout::HEADER_LEN as u64;

/// First pause of a waiter that cannot rely on pub/sub (no subscription yet or connection
/// lost); doubles up to [`POLL_MAX`].
const POLL_START: Duration = Duration::from_millis(5);
/// Longest pause of a waiter that cannot rely on pub/sub.
const POLL_MAX: Duration = Duration::from_millis(200);
/// How many failed reads in a row a waiter tolerates after its first successful one.
const WAIT_READ_RETRIES: u32 = 3;
/// Slack after a claim's expiry before a waiter re-reads, so the key is gone when it looks.
const EXPIRY_SLACK: Duration = Duration::from_millis(2);

/// Takes the claim: `SET NX PX`, or reports the remaining lease of the live claim.
/// Returns `{1, 0}` when acquired, `{0, pttl}` when held (`pttl` is -1 for a key without expiry).
const CLAIM_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
";

/// Extends the claim if its value ends with `:<token>`. Returns 1 if renewed.
const RENEW_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local sep = string.find(v, ':', 1, true)
if not sep or string.sub(v, sep + 1) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Deletes the claim if its value ends with `:<token>` and announces it on the wake-up
/// channel. Returns 1 if released.
const RELEASE_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local sep = string.find(v, ':', 1, true)
if not sep or string.sub(v, sep + 1) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], 'release')
return 1
";

/// Deletes an entry whose framing says it was stored before ARGV[1] (milliseconds). Reads
/// only the 9 header bytes, never the value. Returns 1 if deleted. Entries in another framing
/// (or of another type) are left alone.
const DELETE_STALE_SCRIPT: &str = r"
local head = redis.pcall('GETRANGE', KEYS[1], 0, 8)
if type(head) ~= 'string' or string.len(head) ~= 9 or string.byte(head, 1) ~= 1 then
  return 0
end
local t = 0
for i = 2, 9 do t = t * 256 + string.byte(head, i) end
if t < tonumber(ARGV[1]) then
  redis.call('UNLINK', KEYS[1])
  return 1
end
return 0
";

/// A [`Core`] that stores entries in Redis. See the [crate docs](crate) for the layout.
///
/// Cheap to share as `Arc<dyn Core>`; all calls go through one multiplexed connection that
/// reconnects by itself, plus one pub/sub connection opened by the first [`Core::wait`].
pub struct RedisCore {
    connection: Connection,
    config: Config,
    wakeups: Wakeups,
    claim_script: Script,
    renew_script: Script,
    release_script: Script,
}

impl RedisCore {
    /// Connects and checks the server answers (`PING`). Fails with
    /// [`ErrorKind::Unavailable`] if it does not.
    pub async fn connect(config: Config) -> Result<Self> {
        let core = Self::connect_lazy(config)?;
        let mut connection = core.connection.clone();
        let _: () = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error("connect", e).with_key(core.config_address()))?;
        Ok(core)
    }

    /// Connects to the URL (see [`Config::from_url`]) with default settings.
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::connect(Config::from_url(url)?).await
    }

    /// Creates the core without touching the network: the connection opens on the first call,
    /// so a server that is down now fails calls, not construction. Must be called within a
    /// Tokio runtime (the connection's driver task is spawned on it).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn connect_lazy(config: Config) -> Result<Self> {
        let connection = Connection::lazy(&config).map_err(|e| redis_error("connect", e))?;
        let wakeups = Wakeups::new(
            config.client().clone(),
            Timeouts {
                connect: config.connect_timeout(),
                response: config.response_timeout(),
            },
        );
        Ok(RedisCore {
            connection,
            config,
            wakeups,
            claim_script: Script::new(CLAIM_SCRIPT),
            renew_script: Script::new(RENEW_SCRIPT),
            release_script: Script::new(RELEASE_SCRIPT),
        })
    }

    /// The settings this core was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn config_address(&self) -> String {
        self.config
            .client()
            .get_connection_info()
            .addr()
            .to_string()
    }

    fn connection(&self) -> Connection {
        self.connection.clone()
    }

    /// Walks `SCAN MATCH pattern` and hands every batch of keys to `each`, which returns how
    /// many it counted. Keys `SCAN` reports twice are handled twice; `each` must count by what
    /// the server says it removed, so a duplicate counts zero.
    async fn scan_batches<F, Fut>(
        &self,
        pattern: &str,
        operation: &'static str,
        mut each: F,
    ) -> Result<u64>
    where
        F: FnMut(Vec<Vec<u8>>) -> Fut,
        Fut: std::future::Future<Output = Result<u64>>,
    {
        let mut connection = self.connection();
        let mut cursor: u64 = 0;
        let mut total = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(self.config.scan_count())
                .query_async(&mut connection)
                .await
                .map_err(|e| redis_error(operation, e))?;
            if !keys.is_empty() {
                total += each(keys).await?;
            }
            if next == 0 {
                return Ok(total);
            }
            cursor = next;
        }
    }

    /// Unlinks claim keys and announces each on its wake-up channel, in one round trip.
    /// Returns how many claims existed.
    async fn unlink_claims(&self, claims: &[Vec<u8>], operation: &'static str) -> Result<u64> {
        if claims.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("UNLINK").arg(claims);
        for claim in claims {
            if let Some(channel) = layout::wake_channel_of_claim(claim) {
                pipe.cmd("PUBLISH").arg(channel).arg("clear").ignore();
            }
        }
        let (removed,): (u64,) = pipe
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error(operation, e))?;
        Ok(removed)
    }

    /// Unlinks entry keys; returns how many existed.
    async fn unlink(&self, keys: &[Vec<u8>], operation: &'static str) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        redis::cmd("UNLINK")
            .arg(keys)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error(operation, e))
    }

    /// Removes values and claims among `keys`; returns how many values existed.
    async fn unlink_mixed(&self, keys: Vec<Vec<u8>>, operation: &'static str) -> Result<u64> {
        let (claims, entries): (Vec<_>, Vec<_>) =
            keys.into_iter().partition(|k| layout::is_claim_key(k));
        self.unlink_claims(&claims, operation).await?;
        self.unlink(&entries, operation).await
    }

    /// `set`, with a `PX` expiry on the entry when `expire_after` is given (at least 1 ms: Redis
    /// refuses `PX 0`). The claim key keeps its own lease; the entry's expiry is independent
    /// of it.
    async fn store(
        &self,
        key: &Key,
        value: Bytes,
        stored_at: Timestamp,
        expire_after: Option<Duration>,
    ) -> Result<()> {
        if value.len() as u64 > MAX_VALUE_BYTES {
            return Err(Error::too_large(format!(
                "a value of {} bytes exceeds Redis' limit of {MAX_VALUE_BYTES} bytes",
                value.len()
            ))
            .with_operation("set")
            .with_backend(BACKEND)
            .with_key(key));
        }
        let packed = layout::pack_entry(&value, stored_at);
        let (entry_key, claim_key) = layout::entry_and_claim_keys(key);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("SET").arg(entry_key).arg(packed);
        if let Some(expire) = expire_after {
            // Capped far below the point where Redis refuses an expiry as out of range.
            pipe.arg("PX").arg(lease_millis(expire).min(1 << 52));
        }
        let _: () = pipe
            .ignore()
            .cmd("DEL")
            .arg(claim_key)
            .ignore()
            .cmd("PUBLISH")
            .arg(layout::wake_channel(key))
            .arg("set")
            .ignore()
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error("set", e).with_key(key))?;
        Ok(())
    }
}

impl fmt::Debug for RedisCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Milliseconds of a lease, at least 1 (Redis refuses `PX 0`).
fn lease_millis(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Turns a claim's remaining time (`PTTL`) into an expiry on this machine's clock.
fn expiry_from_pttl(pttl: i64, lease: Duration) -> Timestamp {
    match u64::try_from(pttl) {
        Ok(ms) => Timestamp::now().add(Duration::from_millis(ms)),
        // -1: a claim key without expiry, which this crate never writes. Report a lease's
        // worth so callers wait instead of spinning; `clear_claims` removes it.
        Err(_) => Timestamp::now().add(lease),
    }
}

/// Whether a `redis` error is a refused TLS handshake (an untrusted or mismatched server
/// certificate, a protocol mismatch): a configuration problem that retrying does not fix.
fn is_tls_rejection(e: &RedisError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let Some(source) = std::error::Error::source(e) else {
        return false;
    };
    let Some(shared) = source.downcast_ref::<Shared>() else {
        return false;
    };
    let inner: &(dyn std::error::Error + Send + Sync + 'static) = &**shared;
    if inner.is::<rustls::Error>() {
        return true;
    }
    inner
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        .is_some_and(|e| e.is::<rustls::Error>())
}

/// Maps a `redis` error to the project's error, with the operation and the backend.
fn redis_error(operation: &'static str, e: RedisError) -> Error {
    if is_tls_rejection(&e) {
        return Error::config(format!(
            "Redis {operation} failed: the TLS handshake was refused"
        ))
        .with_operation(operation)
        .with_backend(BACKEND)
        .with_source(e);
    }
    let kind = match e.kind() {
        redis::ErrorKind::Io => ErrorKind::Unavailable,
        redis::ErrorKind::AuthenticationFailed
        | redis::ErrorKind::Server(ServerErrorKind::NoPerm) => ErrorKind::PermissionDenied,
        redis::ErrorKind::InvalidClientConfig => ErrorKind::Config,
        redis::ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        ) => ErrorKind::Unavailable,
        _ if e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() => {
            ErrorKind::Unavailable
        }
        _ => ErrorKind::Backend,
    };
    // A full server (`maxmemory` with `noeviction`) may accept writes again later.
    let retryable = kind == ErrorKind::Unavailable || e.code() == Some("OOM");
    Error::new(kind, format!("Redis {operation} failed"))
        .with_operation(operation)
        .with_backend(BACKEND)
        .set_retryable(retryable)
        .with_source(e)
}

#[async_trait]
impl Core for RedisCore {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cross_process: true,
            native_wakeup: true,
            persistent: true,
            max_value_bytes: Some(MAX_VALUE_BYTES),
        }
    }

    /// One `MGET` of the entry key and the claim key: one round trip, one command.
    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        let (entry_key, claim_key) = layout::entry_and_claim_keys(key);
        let (stored, claim): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("MGET")
            .arg(entry_key)
            .arg(claim_key)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error("get", e).with_key(key))?;
        let (value, stored_at) = match stored {
            None => (None, Timestamp::default()),
            Some(stored) => match layout::unpack_header(&stored) {
                Some(stored_at) => {
                    let value = Bytes::from(stored).slice(layout::HEADER_LEN..);
                    (Some(value), stored_at)
                }
                None => {
                    warn!(%key, len = stored.len(), "redis entry has a foreign framing; treated as a miss");
                    (None, Timestamp::default())
                }
            },
        };
        // The claim key exists, so the claim is live whatever its recorded expiry says (the
        // holder's clock may run behind this one): never report it as already expired.
        let claim_until = claim.map(|claim| {
            let recorded = layout::claim_value_until(&claim).unwrap_or_default();
            recorded.max(Timestamp::now().add(Duration::from_millis(1)))
        });
        if value.is_none() && claim_until.is_none() {
            return Ok(None);
        }
        Ok(Some(Entry {
            value,
            stored_at,
            claim_until,
        }))
    }

    /// `MULTI`: `SET` the framed value, `DEL` the claim, `PUBLISH` a wake-up; one round trip.
    async fn set(&self, key: &Key, value: Bytes, stored_at: Timestamp) -> Result<()> {
        self.store(key, value, stored_at, None).await
    }

    async fn set_expiring(
        &self,
        key: &Key,
        value: Bytes,
        stored_at: Timestamp,
        expire_after: Duration,
    ) -> Result<()> {
        self.store(key, value, stored_at, Some(expire_after)).await
    }

    async fn claim(&self, key: &Key, lease: Duration) -> Result<Claim> {
        let token = ClaimToken::generate();
        let until = Timestamp::now().add(lease);
        let (acquired, pttl): (i64, i64) = self
            .claim_script
            .key(layout::claim_key(key))
            .arg(layout::claim_value(until, token.as_str()))
            .arg(lease_millis(lease))
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| redis_error("claim", e).with_key(key))?;
        if acquired == 1 {
            Ok(Claim::Acquired(token))
        } else {
            Ok(Claim::Held {
                until: expiry_from_pttl(pttl, lease),
            })
        }
    }

    async fn renew(&self, key: &Key, token: &ClaimToken, lease: Duration) -> Result<bool> {
        let until = Timestamp::now().add(lease);
        let renewed: i64 = self
            .renew_script
            .key(layout::claim_key(key))
            .arg(token.as_str())
            .arg(layout::claim_value(until, token.as_str()))
            .arg(lease_millis(lease))
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| redis_error("renew", e).with_key(key))?;
        Ok(renewed == 1)
    }

    async fn release(&self, key: &Key, token: &ClaimToken) -> Result<()> {
        let _released: i64 = self
            .release_script
            .key(layout::claim_key(key))
            .arg(token.as_str())
            .arg(layout::wake_channel(key))
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| redis_error("release", e).with_key(key))?;
        Ok(())
    }

    /// Subscribes to the key's wake-up channel, then reads; re-reads on every wake-up, at the
    /// claim's expiry, and on a slow safety poll. Polls with backoff while pub/sub is down.
    async fn wait(&self, key: &Key, timeout: Duration) -> Result<Option<Entry>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut subscription = self
            .wakeups
            .subscribe(
                layout::wake_channel(key),
                timeout.min(self.config.response_timeout()),
            )
            .await;
        let mut poll = POLL_START;
        let mut failures = 0;
        let mut first_read = true;
        loop {
            let entry = match self.get(key).await {
                Ok(entry) => entry,
                // A server that cannot be read at the start fails the wait at once. One that
                // fails mid-wait (a restart, a dropped connection) gets a few more reads.
                Err(e) if !first_read && failures < WAIT_READ_RETRIES => {
                    failures += 1;
                    warn!(%key, error = %e, "redis read failed while waiting; retrying");
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(POLL_MAX.min(deadline - now)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            first_read = false;
            failures = 0;
            let Some(claim_until) = entry.as_ref().and_then(|e| e.claim_until) else {
                return Ok(entry);
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(entry);
            }
            let pause = if subscription.is_live() {
                self.config.wait_poll_interval()
            } else {
                let pause = poll;
                poll = (poll * 2).min(POLL_MAX);
                pause
            };
            let pause = pause
                .min(claim_until.remaining() + EXPIRY_SLACK)
                .min(deadline - now);
            subscription.changed_within(pause).await;
        }
    }

    async fn remove(&self, key: &Key) -> Result<bool> {
        let (removed,): (u64,) = redis::pipe()
            .atomic()
            .cmd("UNLINK")
            .arg(layout::entry_key(key))
            .cmd("DEL")
            .arg(layout::claim_key(key))
            .ignore()
            .cmd("PUBLISH")
            .arg(layout::wake_channel(key))
            .arg("remove")
            .ignore()
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error("remove", e).with_key(key))?;
        Ok(removed > 0)
    }

    async fn clear(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let pattern = layout::func_all_pattern(namespace, func);
        self.scan_batches(&pattern, "clear", |keys| self.unlink_mixed(keys, "clear"))
            .await
            .map_err(|e| e.with_key(format!("{namespace}/{func}")))
    }

    async fn clear_claims(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let pattern = layout::func_claims_pattern(namespace, func);
        self.scan_batches(&pattern, "clear_claims", |keys| async move {
            self.unlink_claims(&keys, "clear_claims").await
        })
        .await
        .map_err(|e| e.with_key(format!("{namespace}/{func}")))
    }

    /// `SCAN`s the function's entry keys and, per key, runs a small script that reads the
    /// 9-byte header and unlinks the entry if it is older than `stored_before`; one pipelined
    /// round trip per `SCAN` batch. The check and the unlink are atomic per key, so a value
    /// stored meanwhile is never removed.
    async fn delete_stale(
        &self,
        namespace: &Namespace,
        func: &FuncId,
        stored_before: Timestamp,
    ) -> Result<u64> {
        let pattern = layout::func_entries_pattern(namespace, func);
        let script = Script::new(DELETE_STALE_SCRIPT);
        self.scan_batches(&pattern, "delete_stale", |keys| {
            let script = &script;
            async move {
                // Make sure the script is cached before `EVALSHA`s go out in a pipeline.
                script
                    .load_async(&mut self.connection())
                    .await
                    .map_err(|e| redis_error("delete_stale", e))?;
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("EVALSHA")
                        .arg(script.get_hash())
                        .arg(1)
                        .arg(key)
                        .arg(stored_before.as_millis());
                }
                let deleted: Vec<u64> = pipe
                    .query_async(&mut self.connection())
                    .await
                    .map_err(|e| redis_error("delete_stale", e))?;
                Ok(deleted.iter().sum())
            }
        })
        .await
        .map_err(|e| e.with_key(format!("{namespace}/{func}")))
    }

    async fn clear_namespace(&self, namespace: &Namespace) -> Result<u64> {
        let pattern = layout::namespace_pattern(namespace);
        self.scan_batches(&pattern, "clear_namespace", |keys| {
            self.unlink_mixed(keys, "clear_namespace")
        })
        .await
        .map_err(|e| e.with_key(namespace))
    }
}
