//! [`RedisCore`]: the [`Core`] implementation on Redis.

use std::fmt;
use std::sync::Weak;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cachier_core::{
    Capabilities, Change, Claim, ClaimToken, Core, Entry, Error, ErrorKind, FuncId, Key, Namespace,
    Result, Timestamp, Watcher, Watching,
};
use redis::{RedisError, Script, ServerErrorKind};
use tracing::warn;

use crate::config::{Config, Deployment};
use crate::connection::Connection;
use crate::layout;
use crate::tracking::Tracking;
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
/// channel ARGV[2] with the command ARGV[3] (`PUBLISH`, on a cluster `SPUBLISH`, or nothing
/// when empty). Returns 1 if released.
const RELEASE_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local sep = string.find(v, ':', 1, true)
if not sep or string.sub(v, sep + 1) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[3] ~= '' then redis.call(ARGV[3], ARGV[2], 'release') end
return 1
";

/// On a cluster, `set` as one script instead of `MULTI`/`EXEC` (the cluster client follows
/// `MOVED`/`ASK` for a script, not for a transaction): stores the entry KEYS[1] (with a `PX`
/// of ARGV[2] milliseconds unless empty), deletes the claim KEYS[2], announces it on ARGV[3]
/// with the command ARGV[4] unless empty.
const STORE_SCRIPT: &str = r"
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('DEL', KEYS[2])
if ARGV[4] ~= '' then redis.call(ARGV[4], ARGV[3], 'set') end
return 1
";

/// On a cluster, `remove` as one script (see [`STORE_SCRIPT`]): unlinks the entry KEYS[1] and
/// the claim KEYS[2], announces it on ARGV[1] with ARGV[2] unless empty. Returns how many
/// entries existed.
const REMOVE_SCRIPT: &str = r"
local n = redis.call('UNLINK', KEYS[1])
redis.call('DEL', KEYS[2])
if ARGV[2] ~= '' then redis.call(ARGV[2], ARGV[1], 'remove') end
return n
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

/// A Lua script of one key, run with `EVALSHA`, or with `EVAL` (which also caches it on that
/// server) when the server does not know it (`NOSCRIPT`: after a restart, a failover, or on a
/// cluster node that never ran it). Unlike `redis::Script` it never sends `SCRIPT LOAD`, which
/// a cluster connection sends to every node, a failed one included (and then times out).
struct LuaScript {
    source: &'static str,
    hash: String,
}

impl LuaScript {
    fn new(source: &'static str) -> Self {
        LuaScript {
            source,
            hash: Script::new(source).get_hash().to_owned(),
        }
    }

    /// Runs the script; `key_and_args` adds the one key and the arguments.
    async fn run<T: redis::FromRedisValue>(
        &self,
        connection: &mut Connection,
        key_and_args: impl Fn(&mut redis::Cmd),
    ) -> redis::RedisResult<T> {
        self.run_keys(connection, 1, key_and_args).await
    }

    /// Runs the script; `keys_and_args` adds `keys` keys and then the arguments.
    async fn run_keys<T: redis::FromRedisValue>(
        &self,
        connection: &mut Connection,
        keys: usize,
        keys_and_args: impl Fn(&mut redis::Cmd),
    ) -> redis::RedisResult<T> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.hash).arg(keys);
        keys_and_args(&mut cmd);
        match cmd.query_async(connection).await {
            Err(e)
                if matches!(
                    e.kind(),
                    redis::ErrorKind::Server(ServerErrorKind::NoScript)
                ) =>
            {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(self.source).arg(keys);
                keys_and_args(&mut cmd);
                cmd.query_async(connection).await
            }
            outcome => outcome,
        }
    }
}

/// A [`Core`] that stores entries in Redis. See the [crate docs](crate) for the layout.
///
/// Cheap to share as `Arc<dyn Core>`; all calls go through one multiplexed connection that
/// reconnects by itself, plus one pub/sub connection opened by the first [`Core::wait`].
pub struct RedisCore {
    connection: Connection,
    config: Config,
    wakeups: Wakeups,
    /// Change reports for near caches ([`Core::watch`]).
    tracking: Tracking,
    /// How a wake-up is announced: `PUBLISH` on one server, `SPUBLISH` (sharded pub/sub) on a
    /// cluster, nothing on a cluster without sharded pub/sub (waiters poll there).
    publish: &'static str,
    claim_script: LuaScript,
    renew_script: LuaScript,
    release_script: LuaScript,
    store_script: LuaScript,
    remove_script: LuaScript,
}

impl RedisCore {
    /// Connects and checks the server answers (`PING`). Fails with
    /// [`ErrorKind::Unavailable`] if it does not.
    ///
    /// On a Redis Cluster, `PING` goes to every primary, and the core asks whether the
    /// servers have sharded pub/sub (`SPUBLISH`, Redis 7): if not, waiters poll and
    /// [`Capabilities::native_wakeup`](cachier_core::Capabilities) is `false`.
    pub async fn connect(config: Config) -> Result<Self> {
        #[allow(unused_mut)] // Changed only on a cluster.
        let mut core = Self::connect_lazy(config)?;
        let mut connection = core.connection.clone();
        let _: () = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error("connect", e).with_key(core.config_address()))?;
        #[cfg(feature = "cluster")]
        if let Deployment::Cluster(seeds) = core.config.deployment() {
            let info: redis::Value = redis::cmd("COMMAND")
                .arg("INFO")
                .arg("SPUBLISH")
                .query_async(&mut connection)
                .await
                .map_err(|e| redis_error("connect", e).with_key(core.config_address()))?;
            let sharded = matches!(&info, redis::Value::Array(items)
                if items.first().is_some_and(|item| !matches!(item, redis::Value::Nil)));
            if !sharded {
                warn!(
                    "this Redis Cluster has no sharded pub/sub (SPUBLISH, Redis 7): \
                     waiters poll instead of being woken"
                );
                core.publish = "";
                core.wakeups = Wakeups::cluster(
                    crate::connection::cluster_builder(seeds, &core.config),
                    false,
                    core.timeouts(),
                )
                .map_err(|e| redis_error("connect", e))?;
            }
        }
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
    ///
    /// A cluster core made this way assumes sharded pub/sub (Redis 7) for its wake-ups;
    /// [`RedisCore::connect`] checks.
    pub fn connect_lazy(config: Config) -> Result<Self> {
        let connection = Connection::lazy(&config).map_err(|e| redis_error("connect", e))?;
        let timeouts = Timeouts {
            connect: config.connect_timeout(),
            response: config.response_timeout(),
        };
        let (wakeups, tracking, publish) = match config.deployment() {
            Deployment::Single(client) => (
                Wakeups::new(client.clone(), timeouts),
                Tracking::new(client, timeouts).map_err(|e| redis_error("connect", e))?,
                "PUBLISH",
            ),
            #[cfg(feature = "cluster")]
            Deployment::Cluster(seeds) => (
                Wakeups::cluster(
                    crate::connection::cluster_builder(seeds, &config),
                    true,
                    timeouts,
                )
                .map_err(|e| redis_error("connect", e))?,
                // Client-side tracking is per node; see the crate docs (Redis Cluster).
                Tracking::none(timeouts),
                "SPUBLISH",
            ),
        };
        Ok(RedisCore {
            connection,
            config,
            wakeups,
            tracking,
            publish,
            claim_script: LuaScript::new(CLAIM_SCRIPT),
            renew_script: LuaScript::new(RENEW_SCRIPT),
            release_script: LuaScript::new(RELEASE_SCRIPT),
            store_script: LuaScript::new(STORE_SCRIPT),
            remove_script: LuaScript::new(REMOVE_SCRIPT),
        })
    }

    /// The settings this core was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn config_address(&self) -> String {
        self.config.address()
    }

    #[cfg(feature = "cluster")]
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.config.connect_timeout(),
            response: self.config.response_timeout(),
        }
    }

    /// Whether this core talks to a Redis Cluster.
    fn is_cluster(&self) -> bool {
        self.config.is_cluster()
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
        let mut total = 0u64;
        // `None`: the one server. On a cluster, every primary in turn (`SCAN` is per node).
        #[allow(unused_mut)]
        let mut nodes: Vec<Option<(String, u16)>> = vec![None];
        #[cfg(feature = "cluster")]
        if let Some(cluster) = connection.as_cluster() {
            nodes = cluster::primaries(cluster)
                .await
                .map_err(|e| redis_error(operation, e))?
                .into_iter()
                .map(Some)
                .collect();
        }
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(self.config.scan_count());
                let reply = match &node {
                    None => scan.query_async(&mut connection).await,
                    #[cfg(feature = "cluster")]
                    Some((host, port)) => {
                        cluster::query_node(&mut connection, scan, host, *port).await
                    }
                    #[cfg(not(feature = "cluster"))]
                    Some(_) => unreachable!("only a cluster has nodes to walk"),
                };
                let (next, keys): (u64, Vec<Vec<u8>>) =
                    reply.map_err(|e| redis_error(operation, e))?;
                if !keys.is_empty() {
                    total += each(keys).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(total)
    }

    /// Unlinks claim keys and announces each on its wake-up channel, in one round trip.
    /// Returns how many claims existed.
    async fn unlink_claims(&self, claims: &[Vec<u8>], operation: &'static str) -> Result<u64> {
        if claims.is_empty() {
            return Ok(0);
        }
        if self.is_cluster() {
            // The claims lie in many slots: `UNLINK` is split by slot (and the counts added)
            // by the cluster connection, and each wake-up goes to its own slot's node.
            let removed = self.unlink(claims, operation).await?;
            if !self.publish.is_empty() {
                let publishes = claims.iter().filter_map(|claim| {
                    let channel = layout::wake_channel_of_claim(claim)?;
                    let mut connection = self.connection();
                    Some(async move {
                        redis::cmd(self.publish)
                            .arg(channel)
                            .arg("clear")
                            .query_async::<()>(&mut connection)
                            .await
                    })
                });
                for published in futures_util::future::join_all(publishes).await {
                    published.map_err(|e| redis_error(operation, e))?;
                }
            }
            return Ok(removed);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("UNLINK").arg(claims);
        for claim in claims {
            if let Some(channel) = layout::wake_channel_of_claim(claim) {
                pipe.cmd(self.publish).arg(channel).arg("clear").ignore();
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
        let outcome = self.store_entry(key, value, stored_at, expire_after).await;
        // Also after a failure: the server may have stored the value before the reply was lost.
        self.tracking.entry_changed_here(key);
        outcome
    }

    /// The write of [`RedisCore::store`].
    async fn store_entry(
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
        // Capped far below the point where Redis refuses an expiry as out of range.
        let expire_millis = expire_after.map(|expire| lease_millis(expire).min(1 << 52));
        if self.is_cluster() {
            let expire = expire_millis.map(|ms| ms.to_string()).unwrap_or_default();
            let _: i64 = self
                .store_script
                .run_keys(&mut self.connection(), 2, |cmd| {
                    cmd.arg(&entry_key)
                        .arg(&claim_key)
                        .arg(&packed)
                        .arg(&expire)
                        .arg(layout::wake_channel(key))
                        .arg(self.publish);
                })
                .await
                .map_err(|e| redis_error("set", e).with_key(key))?;
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("SET").arg(entry_key).arg(packed);
        if let Some(expire) = expire_millis {
            pipe.arg("PX").arg(expire);
        }
        pipe.ignore().cmd("DEL").arg(claim_key).ignore();
        if !self.publish.is_empty() {
            pipe.cmd(self.publish)
                .arg(layout::wake_channel(key))
                .arg("set")
                .ignore();
        }
        let _: () = pipe
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error("set", e).with_key(key))?;
        Ok(())
    }

    /// The removal of [`Core::remove`].
    async fn remove_entry(&self, key: &Key) -> Result<bool> {
        if self.is_cluster() {
            let removed: u64 = self
                .remove_script
                .run_keys(&mut self.connection(), 2, |cmd| {
                    cmd.arg(layout::entry_key(key))
                        .arg(layout::claim_key(key))
                        .arg(layout::wake_channel(key))
                        .arg(self.publish);
                })
                .await
                .map_err(|e| redis_error("remove", e).with_key(key))?;
            return Ok(removed > 0);
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("UNLINK")
            .arg(layout::entry_key(key))
            .cmd("DEL")
            .arg(layout::claim_key(key))
            .ignore();
        if !self.publish.is_empty() {
            pipe.cmd(self.publish)
                .arg(layout::wake_channel(key))
                .arg("remove")
                .ignore();
        }
        let (removed,): (u64,) = pipe
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error("remove", e).with_key(key))?;
        Ok(removed > 0)
    }

    /// The removal of [`Core::clear`].
    async fn clear_function(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let pattern = layout::func_all_pattern(namespace, func);
        self.scan_batches(&pattern, "clear", |keys| self.unlink_mixed(keys, "clear"))
            .await
            .map_err(|e| e.with_key(format!("{namespace}/{func}")))
    }

    /// The removal of [`Core::delete_stale`].
    async fn delete_stale_entries(
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
                if self.is_cluster() {
                    // The keys lie in many slots: one script call per key (each routed to
                    // its slot's node, sent as `EVAL` where the node lacks it), all at once.
                    let lua = LuaScript::new(DELETE_STALE_SCRIPT);
                    let lua = &lua;
                    let calls = keys.iter().map(|key| {
                        let mut connection = self.connection();
                        async move {
                            lua.run::<u64>(&mut connection, |cmd| {
                                cmd.arg(key.as_slice()).arg(stored_before.as_millis());
                            })
                            .await
                        }
                    });
                    let mut deleted = 0;
                    for outcome in futures_util::future::join_all(calls).await {
                        deleted += outcome.map_err(|e| redis_error("delete_stale", e))?;
                    }
                    return Ok(deleted);
                }
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
}

impl fmt::Debug for RedisCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The value and `stored_at` of a stored entry (the value shares the read's buffer); `None`,
/// logged, for bytes in a framing this crate did not write.
fn unpack(key: &Key, stored: Vec<u8>) -> Option<(Bytes, Timestamp)> {
    match layout::unpack_header(&stored) {
        Some(stored_at) => {
            // The value stays in the reply's buffer (`advance`, unlike `slice`, shares nothing),
            // so the front end can take a byte buffer or string over in place.
            let mut value = Bytes::from(stored);
            bytes::Buf::advance(&mut value, layout::HEADER_LEN);
            Some((value, stored_at))
        }
        None => {
            warn!(%key, len = stored.len(), "redis entry has a foreign framing; treated as a miss");
            None
        }
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
        // A cluster node the slot map names has no connection (it is down or just replaced).
        redis::ErrorKind::ClusterConnectionNotFound => ErrorKind::Unavailable,
        // A redirection still failing after the client's retries: the topology is changing.
        redis::ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
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
            // A cluster without sharded pub/sub has no wake-ups: its waiters poll.
            native_wakeup: !self.publish.is_empty(),
            persistent: true,
            max_value_bytes: Some(MAX_VALUE_BYTES),
        }
    }

    /// Redis client-side caching in broadcasting mode on a connection of its own (see
    /// [Near caches](crate#near-caches)); [`Watching::No`] on a Redis Cluster.
    fn watch(&self, namespace: &Namespace, watcher: Weak<dyn Watcher>) -> Watching {
        if self.tracking.watch(namespace, watcher) {
            Watching::Asynchronous
        } else {
            Watching::No
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
        let (value, stored_at) = match stored.and_then(|stored| unpack(key, stored)) {
            Some((value, stored_at)) => (Some(value), stored_at),
            None => (None, Timestamp::default()),
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

    /// The hit path: one `GET` of the entry key. Half the work of [`Core::get`]'s `MGET` for
    /// the client (one name to build, one reply to parse) and for the server.
    async fn get_value(&self, key: &Key) -> Result<Option<Entry>> {
        let stored: Option<Vec<u8>> = match self
            .connection()
            .query(redis::cmd("GET").arg(layout::EntryKey(key)))
            .await
        {
            Ok(stored) => stored,
            // Not a string (a foreign program's list under the name): no value, as `MGET`
            // reads it; the front end computes and `SET` replaces it.
            Err(e) if e.code() == Some("WRONGTYPE") => {
                warn!(%key, "redis entry is not a string; treated as a miss");
                None
            }
            Err(e) => return Err(redis_error("get", e).with_key(key)),
        };
        Ok(stored
            .and_then(|stored| unpack(key, stored))
            .map(|(value, stored_at)| Entry {
                value: Some(value),
                stored_at,
                claim_until: None,
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
            .run(&mut self.connection(), |cmd| {
                cmd.arg(layout::claim_key(key))
                    .arg(layout::claim_value(until, token.as_str()))
                    .arg(lease_millis(lease));
            })
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
            .run(&mut self.connection(), |cmd| {
                cmd.arg(layout::claim_key(key))
                    .arg(token.as_str())
                    .arg(layout::claim_value(until, token.as_str()))
                    .arg(lease_millis(lease));
            })
            .await
            .map_err(|e| redis_error("renew", e).with_key(key))?;
        Ok(renewed == 1)
    }

    async fn release(&self, key: &Key, token: &ClaimToken) -> Result<()> {
        let _released: i64 = self
            .release_script
            .run(&mut self.connection(), |cmd| {
                cmd.arg(layout::claim_key(key))
                    .arg(token.as_str())
                    .arg(layout::wake_channel(key))
                    .arg(self.publish);
            })
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
        let outcome = self.remove_entry(key).await;
        self.tracking.entry_changed_here(key);
        outcome
    }

    async fn clear(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let outcome = self.clear_function(namespace, func).await;
        self.tracking.function_changed_here(namespace, func);
        outcome
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
        let outcome = self
            .delete_stale_entries(namespace, func, stored_before)
            .await;
        self.tracking.function_changed_here(namespace, func);
        outcome
    }

    async fn clear_namespace(&self, namespace: &Namespace) -> Result<u64> {
        let pattern = layout::namespace_pattern(namespace);
        let outcome = self
            .scan_batches(&pattern, "clear_namespace", |keys| {
                self.unlink_mixed(keys, "clear_namespace")
            })
            .await
            .map_err(|e| e.with_key(namespace));
        self.tracking.changed_here(namespace, Change::Namespace);
        outcome
    }
}

/// What only a cluster needs: its primaries, and commands sent to one node.
#[cfg(feature = "cluster")]
mod cluster {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    use redis::{Cmd, FromRedisValue, RedisResult};

    use crate::connection::Connection;

    /// The primaries that serve slots now, as `(host, port)`, from `CLUSTER NODES`: the
    /// nodes flagged `master`, not failed, with at least one slot.
    pub(super) async fn primaries(
        cluster: &mut redis::cluster_async::ClusterConnection,
    ) -> RedisResult<Vec<(String, u16)>> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("NODES");
        let reply = cluster
            .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
            .await?;
        let text: String = redis::from_redis_value(reply)?;
        Ok(parse_primaries(&text))
    }

    /// The serving primaries listed in a `CLUSTER NODES` reply.
    pub(super) fn parse_primaries(nodes: &str) -> Vec<(String, u16)> {
        let mut primaries: Vec<(String, u16)> = nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                let serving = flags.split(',').any(|f| f == "master")
                    && !flags.split(',').any(|f| f == "fail" || f == "noaddr")
                    && fields.len() > 8;
                if !serving {
                    return None;
                }
                // `ip:port@cport[,hostname]`
                let address = fields.get(1)?.split(['@', ',']).next()?;
                let (host, port) = address.rsplit_once(':')?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                (!host.is_empty()).then(|| Some((host.to_owned(), port.parse().ok()?)))?
            })
            .collect();
        primaries.sort();
        primaries.dedup();
        primaries
    }

    /// Sends `cmd` to the node at `host:port`.
    pub(super) async fn query_node<T: FromRedisValue>(
        connection: &mut Connection,
        cmd: Cmd,
        host: &str,
        port: u16,
    ) -> RedisResult<T> {
        let cluster = connection
            .as_cluster()
            .expect("only a cluster core walks nodes");
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        });
        let reply = cluster.route_command(cmd, routing).await?;
        Ok(redis::from_redis_value(reply)?)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn primaries_are_read_from_cluster_nodes() {
            let nodes = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002,host-b master - 0 1700000000000 2 connected 5461-10922
c3 127.0.0.1:30003@40003 master,fail - 0 0 3 disconnected 10923-16383
d4 127.0.0.1:30004@40004 slave a1 0 0 1 connected
e5 127.0.0.1:30005@40005 master - 0 0 5 connected
f6 [::1]:30006@40006 master - 0 0 6 connected 10923-16383
";
            assert_eq!(
                parse_primaries(nodes),
                [
                    ("127.0.0.1".to_owned(), 30001),
                    ("127.0.0.1".to_owned(), 30002),
                    ("::1".to_owned(), 30006),
                ]
            );
        }
    }
}
