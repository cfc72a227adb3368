//! The one multiplexed connection every command of a [`RedisCore`](crate::RedisCore) goes
//! through: the `redis` crate's connection manager with this crate's timeouts, plus one
//! immediate retry of a command whose connection attempt was refused.
//!
//! The manager keeps the outcome of its last connection attempt and hands it to the next
//! command; a failed attempt fails that command and starts a new attempt in the background. So
//! after the server comes back, the first command would still see the refusal recorded while it
//! was down. A refused attempt sent nothing, so the command is sent once more at once: it then
//! waits for the new attempt, which reaches a server that is back, and is refused within a
//! round trip by one that is still down.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::Config;

/// The shared connection of one core. Cloning is cheap: clones share the connection.
#[derive(Clone)]
pub(crate) struct Connection(ConnectionManager);

impl Connection {
    /// A connection opened on first use, with `config`'s timeouts. Must be called within a
    /// Tokio runtime (the connection's driver task is spawned on it).
    pub(crate) fn lazy(config: &Config) -> RedisResult<Self> {
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout()))
            .set_response_timeout(Some(config.response_timeout()))
            .set_number_of_retries(config.reconnect_attempts())
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        ConnectionManager::new_lazy_with_config(config.client().clone(), manager_config).map(Self)
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.0.req_packed_command(cmd).await {
                Err(e) if e.is_connection_refusal() => self.0.req_packed_command(cmd).await,
                outcome => outcome,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.0.req_packed_commands(pipeline, offset, count).await {
                Err(e) if e.is_connection_refusal() => {
                    self.0.req_packed_commands(pipeline, offset, count).await
                }
                outcome => outcome,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}
