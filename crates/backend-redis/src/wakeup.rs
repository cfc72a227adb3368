//! Pub/sub wake-ups for [`Core::wait`](cachier_core::Core::wait).
//!
//! One dedicated pub/sub connection per [`RedisCore`](crate::RedisCore), opened on the first
//! wait and kept by a background task. A waiter registers the wake-up channel of its key; the
//! task `SUBSCRIBE`s to it (once, however many local waiters share it) and bumps a counter for
//! every message on it. The waiter re-reads the entry after each bump. `UNSUBSCRIBE` follows
//! when the last local waiter of a channel leaves.
//!
//! When the connection drops, the task re-opens it with a backoff, subscribes to every channel
//! with a waiter again, and bumps all counters so that no wake-up sent in between is lost: the
//! waiters re-read. While no connection exists, waiters poll (see
//! [`Subscription::is_live`]).
//!
//! Subscribe and unsubscribe commands are queued under the lock of the channel table, so the
//! server sees them in the order the table changed: a channel left and re-entered ends up
//! subscribed.
//!
//! On a Redis Cluster (feature `cluster`) the channels are sharded (`SSUBSCRIBE`, Redis 7):
//! a channel lives on the node that owns its slot, which is the slot of the key it announces
//! (the hash tag is shared). The background task keeps one cluster connection in RESP3 whose
//! pushes arrive in a callback that bumps the counters; the `redis` crate routes each
//! `SSUBSCRIBE` to the slot's owner and subscribes again after a reconnection. When a slot
//! moves, the server ends its subscriptions with `SUNSUBSCRIBE`; the task subscribes again
//! (now at the new owner) for every channel that still has waiters, and bumps them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

/// A request to the background task.
enum Command {
    /// Subscribe to a channel; the answer says whether the server confirmed it.
    Subscribe(String, oneshot::Sender<bool>),
    /// Unsubscribe from a channel that no local waiter needs any more.
    Unsubscribe(String),
}

struct ChannelState {
    waiters: usize,
    bumps: watch::Sender<u64>,
}

/// State shared by the handles and the background task.
struct Shared {
    channels: Mutex<HashMap<String, ChannelState>>,
    connected: AtomicBool,
}

impl Shared {
    fn channels(&self) -> MutexGuard<'_, HashMap<String, ChannelState>> {
        // A panic while holding this lock leaves the table consistent (every change is one
        // statement), so a poisoned lock is still usable.
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self, channel: &str) {
        if let Some(state) = self.channels().get(channel) {
            state.bumps.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn bump_all(&self) {
        for state in self.channels().values() {
            state.bumps.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

fn new_shared() -> Arc<Shared> {
    Arc::new(Shared {
        channels: Mutex::new(HashMap::new()),
        connected: AtomicBool::new(false),
    })
}

#[cfg(feature = "cluster")]
impl Shared {
    /// A push from the cluster connection (called on the `redis` crate's task).
    fn on_push(&self, push: redis::PushInfo, lost: &mpsc::UnboundedSender<String>) {
        let channel = || match push.data.first() {
            Some(redis::Value::BulkString(bytes)) => std::str::from_utf8(bytes).ok(),
            _ => None,
        };
        match push.kind {
            redis::PushKind::SMessage | redis::PushKind::SSubscribe => {
                if let Some(channel) = channel() {
                    self.bump(channel);
                }
            }
            redis::PushKind::SUnsubscribe => {
                // Our own unsubscribe (no waiter left), or the server's when the slot moved.
                if let Some(channel) = channel()
                    && self.channels().contains_key(channel)
                {
                    let _ = lost.send(channel.to_owned());
                    self.bump(channel);
                }
            }
            // A node connection dropped: wake-ups sent meanwhile may be lost; waiters re-read.
            redis::PushKind::Disconnection => self.bump_all(),
            _ => {}
        }
    }
}

/// Timeouts the background task uses.
#[derive(Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) response: Duration,
}

/// Where wake-ups come from.
// Made once per core and never moved on a hot path: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Source {
    /// Plain pub/sub on one server.
    Single(redis::Client),
    /// Sharded pub/sub on a cluster: a client whose pushes go to the shared table, and the
    /// channels whose subscription the server ended (a slot moved), to subscribe again.
    #[cfg(feature = "cluster")]
    Cluster {
        client: redis::cluster::ClusterClient,
        lost: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    },
    /// No wake-ups (a cluster without sharded pub/sub): waiters poll.
    #[cfg(feature = "cluster")]
    Polling,
}

/// The wake-up service of one core.
pub(crate) struct Wakeups {
    source: Source,
    timeouts: Timeouts,
    shared: Arc<Shared>,
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
}

impl Wakeups {
    pub(crate) fn new(client: redis::Client, timeouts: Timeouts) -> Self {
        Self::with_source(Source::Single(client), new_shared(), timeouts)
    }

    fn with_source(source: Source, shared: Arc<Shared>, timeouts: Timeouts) -> Self {
        Wakeups {
            source,
            timeouts,
            shared,
            commands: Mutex::new(None),
        }
    }

    /// Sharded wake-ups on the cluster `builder` reaches (its timeouts already set), or, when
    /// `sharded` is false, none: every waiter polls.
    #[cfg(feature = "cluster")]
    pub(crate) fn cluster(
        builder: redis::cluster::ClusterClientBuilder,
        sharded: bool,
        timeouts: Timeouts,
    ) -> redis::RedisResult<Self> {
        let shared = new_shared();
        if !sharded {
            return Ok(Self::with_source(Source::Polling, shared, timeouts));
        }
        let (lost_sender, lost) = mpsc::unbounded_channel();
        let pushes = shared.clone();
        let client = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(move |push: redis::PushInfo| {
                pushes.on_push(push, &lost_sender);
                Ok::<(), std::convert::Infallible>(())
            })
            .build()?;
        Ok(Self::with_source(
            Source::Cluster {
                client,
                lost: Mutex::new(Some(lost)),
            },
            shared,
            timeouts,
        ))
    }

    /// The command queue of the background task, starting the task on the current runtime if
    /// none runs (first use, or the runtime that ran it has shut down).
    fn commands(&self) -> mpsc::UnboundedSender<Command> {
        let mut slot = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        match &self.source {
            Source::Single(client) => {
                tokio::spawn(run(
                    client.clone(),
                    self.timeouts,
                    self.shared.clone(),
                    receiver,
                ));
            }
            #[cfg(feature = "cluster")]
            Source::Cluster { client, lost } => {
                let lost = lost.lock().unwrap_or_else(|e| e.into_inner()).take();
                tokio::spawn(run_cluster(
                    client.clone(),
                    self.timeouts,
                    self.shared.clone(),
                    receiver,
                    lost,
                ));
            }
            #[cfg(feature = "cluster")]
            Source::Polling => {
                // Nothing to connect to: every subscription stays unconfirmed.
                tokio::spawn(refuse_all(receiver));
            }
        }
        *slot = Some(sender.clone());
        sender
    }

    /// Registers interest in `channel` and waits up to `within` for the server to confirm the
    /// subscription. Messages published after a confirmed subscription bump the returned
    /// handle; an unconfirmed one still works once the task (re)connects.
    pub(crate) async fn subscribe(&self, channel: String, within: Duration) -> Subscription {
        let commands = self.commands();
        let (ack, acked) = oneshot::channel();
        let bumps = {
            let mut channels = self.shared.channels();
            let state = channels
                .entry(channel.clone())
                .or_insert_with(|| ChannelState {
                    waiters: 0,
                    bumps: watch::channel(0).0,
                });
            state.waiters += 1;
            // Queued under the lock: see the module docs.
            let _ = commands.send(Command::Subscribe(channel.clone(), ack));
            state.bumps.subscribe()
        };
        let confirmed = matches!(tokio::time::timeout(within, acked).await, Ok(Ok(true)));
        Subscription {
            channel,
            bumps,
            shared: self.shared.clone(),
            commands,
            confirmed,
        }
    }
}

/// One waiter's registration on a channel; leaving is dropping it.
pub(crate) struct Subscription {
    channel: String,
    bumps: watch::Receiver<u64>,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    confirmed: bool,
}

impl Subscription {
    /// Whether wake-ups can be relied on now: the subscription was confirmed and the
    /// connection is up. If not, the waiter polls.
    pub(crate) fn is_live(&self) -> bool {
        self.confirmed && self.shared.connected.load(Ordering::Acquire)
    }

    /// Waits for a message on the channel (or a reconnection) since the last call, or for
    /// `pause` to pass, whichever comes first.
    pub(crate) async fn changed_within(&mut self, pause: Duration) {
        // An error can only be a timeout: the sender lives in the channel table while this
        // subscription exists.
        if let Ok(Ok(())) = tokio::time::timeout(pause, self.bumps.changed()).await {
            self.bumps.borrow_and_update();
            // A bump after a reconnection means the subscription holds again.
            self.confirmed = true;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut channels = self.shared.channels();
        if let Some(state) = channels.get_mut(&self.channel) {
            state.waiters = state.waiters.saturating_sub(1);
            if state.waiters == 0 {
                channels.remove(&self.channel);
                let _ = self
                    .commands
                    .send(Command::Unsubscribe(std::mem::take(&mut self.channel)));
            }
        }
    }
}

/// The background task: keeps one pub/sub connection and serves the command queue until every
/// sender is gone (the core and all its subscriptions dropped).
async fn run(
    client: redis::Client,
    timeouts: Timeouts,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    const BACKOFF_START: Duration = Duration::from_millis(50);
    const BACKOFF_MAX: Duration = Duration::from_secs(2);
    let mut backoff = Duration::ZERO;
    loop {
        // Disconnected: answer subscribe requests with "not confirmed" until it is time to try.
        let retry_at = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(retry_at) => break,
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe(_, ack)) => { let _ = ack.send(false); }
                    Some(Command::Unsubscribe(_)) => {}
                },
            }
        }
        let pubsub = match tokio::time::timeout(timeouts.connect, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                warn!(error = %e, "redis wake-up connection failed; waiters poll meanwhile");
                backoff = (backoff * 2).clamp(BACKOFF_START, BACKOFF_MAX);
                continue;
            }
            Err(_) => {
                warn!("redis wake-up connection timed out; waiters poll meanwhile");
                backoff = (backoff * 2).clamp(BACKOFF_START, BACKOFF_MAX);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let wanted: Vec<String> = shared.channels().keys().cloned().collect();
        if !wanted.is_empty()
            && !confirmed(tokio::time::timeout(timeouts.response, sink.subscribe(&wanted)).await)
        {
            backoff = (backoff * 2).clamp(BACKOFF_START, BACKOFF_MAX);
            continue;
        }
        debug!(channels = wanted.len(), "redis wake-up connection open");
        shared.connected.store(true, Ordering::Release);
        // A wake-up may have been published while there was no connection.
        shared.bump_all();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe(channel, ack)) => {
                        let ok = confirmed(
                            tokio::time::timeout(timeouts.response, sink.subscribe(&channel)).await,
                        );
                        let _ = ack.send(ok);
                        if !ok {
                            break;
                        }
                    }
                    Some(Command::Unsubscribe(channel)) => {
                        let result =
                            tokio::time::timeout(timeouts.response, sink.unsubscribe(&channel))
                                .await;
                        if !confirmed(result) {
                            break;
                        }
                    }
                },
                message = stream.next() => match message {
                    Some(message) => shared.bump(message.get_channel_name()),
                    None => break,
                },
            }
        }
        shared.connected.store(false, Ordering::Release);
        warn!("redis wake-up connection lost; reconnecting, waiters poll meanwhile");
        shared.bump_all();
        backoff = BACKOFF_START;
    }
}

fn confirmed(result: Result<redis::RedisResult<()>, tokio::time::error::Elapsed>) -> bool {
    matches!(result, Ok(Ok(())))
}

/// The background task on a cluster: opens the RESP3 cluster connection (retrying with a
/// backoff), then serves the command queue and subscribes again to the channels whose
/// subscription the server ended. Messages arrive through the push callback
/// ([`Shared::on_push`]); the `redis` crate reconnects and re-subscribes by itself.
#[cfg(feature = "cluster")]
async fn run_cluster(
    client: redis::cluster::ClusterClient,
    timeouts: Timeouts,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut lost: Option<mpsc::UnboundedReceiver<String>>,
) {
    const BACKOFF_START: Duration = Duration::from_millis(50);
    const BACKOFF_MAX: Duration = Duration::from_secs(2);
    let mut backoff = Duration::ZERO;
    let mut connection = loop {
        let retry_at = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(retry_at) => break,
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe(_, ack)) => { let _ = ack.send(false); }
                    Some(Command::Unsubscribe(_)) => {}
                },
            }
        }
        match tokio::time::timeout(timeouts.connect, client.get_async_connection()).await {
            Ok(Ok(connection)) => break connection,
            Ok(Err(e)) => {
                warn!(error = %e, "redis cluster wake-up connection failed; waiters poll meanwhile");
            }
            Err(_) => warn!("redis cluster wake-up connection timed out; waiters poll meanwhile"),
        }
        backoff = (backoff * 2).clamp(BACKOFF_START, BACKOFF_MAX);
    };
    let wanted: Vec<String> = shared.channels().keys().cloned().collect();
    for channel in &wanted {
        let _ = tokio::time::timeout(timeouts.response, connection.ssubscribe(channel)).await;
    }
    debug!(
        channels = wanted.len(),
        "redis cluster wake-up connection open"
    );
    shared.connected.store(true, Ordering::Release);
    shared.bump_all();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Subscribe(channel, ack)) => {
                    let ok = confirmed(
                        tokio::time::timeout(timeouts.response, connection.ssubscribe(&channel))
                            .await,
                    );
                    let _ = ack.send(ok);
                }
                Some(Command::Unsubscribe(channel)) => {
                    let _ = tokio::time::timeout(
                        timeouts.response,
                        connection.sunsubscribe(&channel),
                    )
                    .await;
                }
            },
            Some(channel) = next_lost(&mut lost) => {
                if shared.channels().contains_key(&channel) {
                    debug!(%channel, "sharded subscription ended by the server; subscribing again");
                    let _ = tokio::time::timeout(
                        timeouts.response,
                        connection.ssubscribe(&channel),
                    )
                    .await;
                    shared.bump(&channel);
                }
            }
        }
    }
}

/// The next channel to subscribe again, or never when there is no such queue.
#[cfg(feature = "cluster")]
async fn next_lost(lost: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match lost {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// The task of a core without wake-ups: every subscription is refused, so waiters poll.
#[cfg(feature = "cluster")]
async fn refuse_all(mut commands: mpsc::UnboundedReceiver<Command>) {
    while let Some(command) = commands.recv().await {
        if let Command::Subscribe(_, ack) = command {
            let _ = ack.send(false);
        }
    }
}
