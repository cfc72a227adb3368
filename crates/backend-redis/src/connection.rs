//! The one multiplexed connection every command of a [`RedisCore`](crate::RedisCore) goes
//! through: the `redis` crate's connection manager with this crate's timeouts, plus one
//! immediate retry of a command whose connection attempt was refused; or, for a Redis Cluster
//! (feature `cluster`), the `redis` crate's cluster connection, which keeps one multiplexed
//! connection per node, routes each command to the node that owns its keys' slot, follows
//! `MOVED`/`ASK` and refreshes its slot map when the cluster changes.
//!
//! The manager keeps the outcome of its last connection attempt and hands it to the next
//! command; a failed attempt fails that command and starts a new attempt in the background. So
//! after the server comes back, the first command would still see the refusal recorded while it
//! was down. A refused attempt sent nothing, so the command is sent once more at once: it then
//! waits for the new attempt, which reaches a server that is back, and is refused within a
//! round trip by one that is still down.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::{Config, Deployment};

/// The shared connection of one core. Cloning is cheap: clones share the connection.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

/// Retries of a cluster command (after `MOVED`, `TRYAGAIN`, `CLUSTERDOWN`, a lost node
/// connection), each after a random wait between [`CLUSTER_MIN_RETRY_WAIT_MS`] and the
/// doubling `10 ms × 2^retry` capped at [`CLUSTER_MAX_RETRY_WAIT_MS`]. The `redis` crate's
/// defaults (16 retries, at least 1.28 s each) would hold a call for many seconds during a
/// failover; the whole call stays bounded by the response timeout anyway.
#[cfg(feature = "cluster")]
pub(crate) const CLUSTER_RETRIES: u32 = 5;
/// Shortest wait before a cluster retry, in milliseconds.
#[cfg(feature = "cluster")]
pub(crate) const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 10;
/// Longest wait before a cluster retry, in milliseconds.
#[cfg(feature = "cluster")]
pub(crate) const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 200;

impl Connection {
    /// A connection opened on first use, with `config`'s timeouts. Must be called within a
    /// Tokio runtime (the connection's driver task is spawned on it).
    pub(crate) fn lazy(config: &Config) -> RedisResult<Self> {
        match config.deployment() {
            Deployment::Single(client) => {
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout()))
                    .set_response_timeout(Some(config.response_timeout()))
                    .set_number_of_retries(config.reconnect_attempts())
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
                    .map(Self::Single)
            }
            #[cfg(feature = "cluster")]
            Deployment::Cluster(seeds) => {
                let client = cluster_builder(seeds, config).build()?;
                Ok(Self::Cluster(
                    client.get_pending_async_connection_with_config(
                        redis::cluster::ClusterConfig::new(),
                    ),
                ))
            }
        }
    }

    /// Sends one command and converts its reply, as `Cmd::query_async` does, without boxing
    /// the request a second time on a single server (the hit's `GET`).
    pub(crate) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        let reply = match self {
            Self::Single(manager) => send(manager, cmd).await?,
            #[cfg(feature = "cluster")]
            Self::Cluster(cluster) => cluster.req_packed_command(cmd).await?,
        };
        Ok(redis::from_redis_value(reply.extract_error()?)?)
    }

    /// The cluster connection, if this is one.
    #[cfg(feature = "cluster")]
    pub(crate) fn as_cluster(&mut self) -> Option<&mut redis::cluster_async::ClusterConnection> {
        match self {
            Self::Cluster(cluster) => Some(cluster),
            Self::Single(_) => None,
        }
    }
}

/// Sends one command on a single server's connection, once more at once if the connection
/// attempt it met was refused (see the module docs).
async fn send(manager: &mut ConnectionManager, cmd: &Cmd) -> RedisResult<Value> {
    match manager.req_packed_command(cmd).await {
        Err(e) if e.is_connection_refusal() => manager.req_packed_command(cmd).await,
        outcome => outcome,
    }
}

/// A cluster client builder for `seeds` with `config`'s timeouts and deliberate retry waits.
#[cfg(feature = "cluster")]
pub(crate) fn cluster_builder(
    seeds: &[redis::ConnectionInfo],
    config: &Config,
) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(config.connect_timeout())
        .response_timeout(config.response_timeout())
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
        .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS)
        .retry_wait_formula(10, 2)
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(manager) => Box::pin(send(manager, cmd)),
            #[cfg(feature = "cluster")]
            Self::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(manager) => Box::pin(async move {
                match manager.req_packed_commands(pipeline, offset, count).await {
                    Err(e) if e.is_connection_refusal() => {
                        manager.req_packed_commands(pipeline, offset, count).await
                    }
                    outcome => outcome,
                }
            }),
            #[cfg(feature = "cluster")]
            Self::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(manager) => manager.get_db(),
            #[cfg(feature = "cluster")]
            Self::Cluster(_) => 0,
        }
    }
}
