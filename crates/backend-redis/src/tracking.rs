//! Change reports for near caches ([`Core::watch`](cachier_core::Core::watch)): Redis
//! client-side caching in broadcasting mode.
//!
//! One dedicated RESP3 connection per [`RedisCore`](crate::RedisCore), opened by a background
//! task once a watcher is registered and shared by every watcher of the core. A watcher
//! dropped before the task sees it (a front end that asked, then built no near cache) opens
//! nothing, and the connection is closed at the next heartbeat once every watcher is gone. It turns tracking on with
//! `CLIENT TRACKING on BCAST PREFIX {<namespace>:` for every watched namespace, so the server
//! pushes the name of every key of those namespaces that anyone changes (a write, `DEL`,
//! `UNLINK`, an expiry, an eviction) as an `invalidate` message, and a null `invalidate` on
//! `FLUSHDB` / `FLUSHALL`. Nothing is added to the write path: the server does the work.
//! A namespace watched later is added to the same connection with one more `CLIENT TRACKING on
//! BCAST PREFIX` (the prefixes of a connection accumulate; those of two namespaces never
//! overlap, see [`layout::namespace_prefix`]).
//!
//! Pushes arrive in the `redis` crate's push callback, on the task that reads the connection,
//! in the order the server sent them, and are reported there at once: an entry name as
//! [`Change::Entry`], a claim name not at all (claims are not values), any other name under
//! the prefix as [`Change::Namespace`], a flush as [`Change::Namespace`] to every namespace.
//!
//! Liveness. A watcher is live from the [`Change::Resumed`] the task reports once tracking of
//! its namespace is on, until a [`Change::Lost`]. `Lost` goes to every watcher the moment the
//! connection is known to be gone: the `redis` crate reports a closed or failed connection (a
//! server restart, `CLIENT KILL`, a reset) in the same callback, and a heartbeat `PING` every
//! [`HEARTBEAT`] that gets no answer within the response timeout (a hung server, a silent
//! network partition) ends the connection too. The task then reconnects with a backoff (50 ms
//! doubling to 2 s), turns tracking on for every namespace in one command, and reports
//! `Resumed`. Each connection has a generation: a late report from a connection already given
//! up never touches the state of the next one.
//!
//! Every report is made while holding the table of watchers, so reports reach a watcher one at
//! a time and in order (a `Lost` is never overtaken by the `Resumed` after it). Registration
//! does not take that lock: [`Tracking::watch`] only queues the watcher for the task, so a
//! watcher may register while holding a lock of its own that its `changed` also takes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use cachier_core::{Change, FuncId, Key, Namespace, Watcher};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};

use crate::layout::{self, Name};
use crate::wakeup::Timeouts;

/// How often the tracking connection is checked with a `PING` while no push arrives.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// First pause before reconnecting; doubles up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(50);
/// Longest pause between two connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A request to the background task.
enum Command {
    /// Report the changes of this namespace to this watcher.
    Watch(Namespace, Weak<dyn Watcher>),
}

/// One registered watcher.
struct Slot {
    watcher: Weak<dyn Watcher>,
    /// Whether it was told `Resumed` since its registration or its last `Lost`.
    live: bool,
}

/// The watchers of one namespace.
struct Watchers {
    namespace: Namespace,
    slots: Vec<Slot>,
    /// The generation of the connection that tracks this namespace's prefix, if any.
    tracked_on: Option<u64>,
}

/// The table of watchers and the state of the connection.
#[derive(Default)]
struct State {
    namespaces: HashMap<String, Watchers>,
    /// The generation of the newest connection.
    generation: u64,
    /// Whether the newest connection is still believed to work.
    up: bool,
}

impl State {
    /// Whether any registered watcher is still alive.
    fn has_watchers(&self) -> bool {
        self.namespaces
            .values()
            .any(|w| w.slots.iter().any(|slot| slot.watcher.strong_count() > 0))
    }

    /// Reports `change` to every watcher of `namespace` (forgetting dropped ones).
    fn report(&mut self, namespace: &str, change: Change<'_>) {
        if let Some(watchers) = self.namespaces.get_mut(namespace) {
            watchers.slots.retain(|slot| match slot.watcher.upgrade() {
                Some(watcher) => {
                    watcher.changed(change);
                    true
                }
                None => false,
            });
        }
    }

    /// Reports `change` to every watcher of every namespace.
    fn report_all(&mut self, change: Change<'_>) {
        for watchers in self.namespaces.values_mut() {
            watchers.slots.retain(|slot| match slot.watcher.upgrade() {
                Some(watcher) => {
                    watcher.changed(change);
                    true
                }
                None => false,
            });
        }
    }

    /// The connection of `generation` is gone: `Lost` to every live watcher, once.
    fn lose(&mut self, generation: u64) {
        if generation != self.generation || !self.up {
            return;
        }
        self.up = false;
        for watchers in self.namespaces.values_mut() {
            watchers.tracked_on = None;
            watchers
                .slots
                .retain_mut(|slot| match slot.watcher.upgrade() {
                    Some(watcher) => {
                        if slot.live {
                            slot.live = false;
                            watcher.changed(Change::Lost);
                        }
                        true
                    }
                    None => false,
                });
        }
    }

    /// Tracking of `namespace` is on for the connection of `generation`: `Resumed` to each
    /// of its watchers not live yet. Returns `false` if that connection was lost meanwhile.
    fn resume(&mut self, generation: u64, namespace: &str) -> bool {
        if generation != self.generation || !self.up {
            return false;
        }
        if let Some(watchers) = self.namespaces.get_mut(namespace) {
            watchers.tracked_on = Some(generation);
            watchers
                .slots
                .retain_mut(|slot| match slot.watcher.upgrade() {
                    Some(watcher) => {
                        if !slot.live {
                            slot.live = true;
                            watcher.changed(Change::Resumed);
                        }
                        true
                    }
                    None => false,
                });
        }
        true
    }

    /// An `invalidate` push: `keys` (`None`: the database was flushed).
    fn invalidate(&mut self, keys: Option<&[Value]>) {
        let Some(keys) = keys else {
            self.report_all(Change::Namespace);
            return;
        };
        for name in keys {
            let Value::BulkString(name) = name else {
                // Not a name: anything may have changed.
                self.report_all(Change::Namespace);
                continue;
            };
            match layout::parse_name(name) {
                Name::Entry(key) => self.report(key.namespace.as_str(), Change::Entry(&key)),
                Name::Claim => {}
                Name::Foreign(namespace) => self.report(namespace, Change::Namespace),
                Name::Unknown => self.report_all(Change::Namespace),
            }
        }
    }
}

/// State shared by the core, the background task and the push callbacks.
struct Shared {
    state: Mutex<State>,
    /// Whether any watcher was ever registered: the write path skips the lock otherwise.
    watched: AtomicBool,
    /// Wakes the task when a connection is found gone by the push callback.
    lost: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every change of the table is completed before a watcher is called; a watcher that
        // panicked leaves it consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A push from the connection of `generation` (called on the `redis` crate's task).
    fn on_push(&self, generation: u64, push: PushInfo) {
        match push.kind {
            PushKind::Invalidate => {
                let keys = match push.data.first() {
                    Some(Value::Array(keys)) => Some(keys.as_slice()),
                    Some(Value::Nil) | None => None,
                    Some(other) => Some(std::slice::from_ref(other)),
                };
                self.state().invalidate(keys);
            }
            PushKind::Disconnection => {
                self.state().lose(generation);
                self.lost.notify_one();
            }
            _ => {}
        }
    }
}

/// The change reports of one core.
pub(crate) struct Tracking {
    /// A RESP3 client for the same server, or `None` where tracking is not done (a cluster).
    client: Option<redis::Client>,
    timeouts: Timeouts,
    /// The runtime the core was made on: the task runs there when `watch` is called outside
    /// any runtime.
    runtime: Option<tokio::runtime::Handle>,
    shared: Arc<Shared>,
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
}

impl Tracking {
    /// Tracking on the server `client` reaches.
    pub(crate) fn new(client: &redis::Client, timeouts: Timeouts) -> redis::RedisResult<Self> {
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        Ok(Self::with_client(Some(client), timeouts))
    }

    /// No tracking: `watch` answers [`Watching::No`](cachier_core::Watching::No).
    #[cfg(feature = "cluster")]
    pub(crate) fn none(timeouts: Timeouts) -> Self {
        Self::with_client(None, timeouts)
    }

    fn with_client(client: Option<redis::Client>, timeouts: Timeouts) -> Self {
        Tracking {
            client,
            timeouts,
            runtime: tokio::runtime::Handle::try_current().ok(),
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                watched: AtomicBool::new(false),
                lost: Notify::new(),
            }),
            commands: Mutex::new(None),
        }
    }

    /// Registers `watcher` for `namespace`; `false` if this core does not track changes. The
    /// watcher hears `Resumed` once tracking of the namespace is on.
    pub(crate) fn watch(&self, namespace: &Namespace, watcher: Weak<dyn Watcher>) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        let mut slot = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        let sender = match slot.as_ref().filter(|s| !s.is_closed()) {
            Some(sender) => sender.clone(),
            None => {
                // First use, or the runtime that ran the task has shut down.
                let runtime = match tokio::runtime::Handle::try_current() {
                    Ok(current) => current,
                    Err(_) => match &self.runtime {
                        Some(runtime) => runtime.clone(),
                        None => {
                            warn!("redis change tracking needs a Tokio runtime; not watching");
                            return false;
                        }
                    },
                };
                let (sender, receiver) = mpsc::unbounded_channel();
                runtime.spawn(run(
                    client.clone(),
                    self.timeouts,
                    self.shared.clone(),
                    receiver,
                ));
                *slot = Some(sender.clone());
                sender
            }
        };
        self.shared.watched.store(true, Ordering::Release);
        sender
            .send(Command::Watch(namespace.clone(), watcher))
            .is_ok()
    }

    /// Reports a change made through this core, before the operation returns: the server's
    /// push follows shortly, but a caller of this process must not see the old value even for
    /// that long.
    pub(crate) fn changed_here(&self, namespace: &Namespace, change: Change<'_>) {
        if self.shared.watched.load(Ordering::Acquire) {
            self.shared.state().report(namespace.as_str(), change);
        }
    }

    /// [`Tracking::changed_here`] for one key.
    pub(crate) fn entry_changed_here(&self, key: &Key) {
        self.changed_here(&key.namespace, Change::Entry(key));
    }

    /// [`Tracking::changed_here`] for the values of one function.
    pub(crate) fn function_changed_here(&self, namespace: &Namespace, func: &FuncId) {
        self.changed_here(namespace, Change::Function(func));
    }
}

/// What [`register`] did.
#[derive(PartialEq, Eq)]
enum Registered {
    /// The watcher was dropped before the task saw it: nothing to do (a front end that asked
    /// whether the core reports changes, then decided against a near cache).
    Gone,
    /// The first watcher of its namespace.
    NewNamespace,
    /// Another watcher of a namespace already watched.
    Added,
}

/// Adds the watcher to the table.
fn register(shared: &Shared, namespace: &Namespace, watcher: Weak<dyn Watcher>) -> Registered {
    if watcher.strong_count() == 0 {
        return Registered::Gone;
    }
    let mut state = shared.state();
    let new = !state.namespaces.contains_key(namespace.as_str());
    let watchers = state
        .namespaces
        .entry(namespace.as_str().to_owned())
        .or_insert_with(|| Watchers {
            namespace: namespace.clone(),
            slots: Vec::new(),
            tracked_on: None,
        });
    watchers
        .slots
        .retain(|slot| slot.watcher.strong_count() > 0);
    watchers.slots.push(Slot {
        watcher,
        live: false,
    });
    if new {
        Registered::NewNamespace
    } else {
        Registered::Added
    }
}

/// The background task: keeps the tracking connection until the core is dropped.
async fn run(
    client: redis::Client,
    timeouts: Timeouts,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = Duration::ZERO;
    let mut warned = false;
    loop {
        // No connection: register watchers until it is time to try, and while nobody watches
        // (every watcher dropped, or none registered yet), do not connect at all.
        let retry_at = tokio::time::Instant::now() + backoff;
        loop {
            let wanted = shared.state().has_watchers();
            tokio::select! {
                () = tokio::time::sleep_until(retry_at), if wanted => break,
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Watch(namespace, watcher)) => {
                        register(&shared, &namespace, watcher);
                    }
                },
            }
        }
        let generation = {
            let mut state = shared.state();
            state.generation += 1;
            state.up = true;
            state.generation
        };
        match connect(&client, timeouts, &shared, generation).await {
            Ok(connection) => {
                if warned {
                    warn!("redis change tracking is back; near caches are live again");
                }
                warned = false;
                backoff = BACKOFF_START;
                match serve(connection, timeouts, &shared, generation, &mut commands).await {
                    Served::Gone => {}
                    Served::CoreDropped => {
                        shared.state().lose(generation);
                        return;
                    }
                    Served::Idle => backoff = Duration::ZERO,
                }
            }
            Err(e) => {
                if !warned {
                    warn!(error = %e, "redis change tracking connection failed; near caches \
                        are not used until it is back");
                    warned = true;
                } else {
                    debug!(error = %e, "redis change tracking connection failed again");
                }
                backoff = (backoff * 2).clamp(BACKOFF_START, BACKOFF_MAX);
            }
        }
        shared.state().lose(generation);
    }
}

/// Opens the connection of `generation` and turns tracking on for every namespace in the
/// table; reports `Resumed` to their watchers.
async fn connect(
    client: &redis::Client,
    timeouts: Timeouts,
    shared: &Arc<Shared>,
    generation: u64,
) -> Result<MultiplexedConnection, String> {
    let pushes = shared.clone();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.response))
        .set_push_sender(move |push: PushInfo| {
            pushes.on_push(generation, push);
            Ok::<(), Infallible>(())
        });
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let namespaces: Vec<Namespace> = shared
        .state()
        .namespaces
        .values()
        .map(|w| w.namespace.clone())
        .collect();
    if !namespaces.is_empty() {
        track(&mut connection, &namespaces).await?;
    }
    let mut state = shared.state();
    for namespace in &namespaces {
        if !state.resume(generation, namespace.as_str()) {
            return Err("the connection closed while tracking was turned on".into());
        }
    }
    debug!(
        namespaces = namespaces.len(),
        "redis change tracking connection open"
    );
    Ok(connection)
}

/// `CLIENT TRACKING on BCAST PREFIX {<namespace>: ...` for `namespaces`.
async fn track(
    connection: &mut MultiplexedConnection,
    namespaces: &[Namespace],
) -> Result<(), String> {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("TRACKING").arg("on").arg("BCAST");
    for namespace in namespaces {
        cmd.arg("PREFIX").arg(layout::namespace_prefix(namespace));
    }
    cmd.query_async::<()>(connection)
        .await
        .map_err(|e| format!("CLIENT TRACKING failed: {e}"))
}

/// Serves watch requests and checks the connection until it is gone (or the core is dropped).
async fn serve(
    mut connection: MultiplexedConnection,
    timeouts: Timeouts,
    shared: &Shared,
    generation: u64,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Served {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return Served::CoreDropped,
                Some(Command::Watch(namespace, watcher)) => {
                    let registered = register(shared, &namespace, watcher);
                    if registered == Registered::Gone {
                        continue;
                    }
                    let new = registered == Registered::NewNamespace;
                    let tracked = {
                        let state = shared.state();
                        state.namespaces.get(namespace.as_str())
                            .is_some_and(|w| w.tracked_on == Some(generation))
                    };
                    if (new || !tracked)
                        && let Err(e) =
                            track(&mut connection, std::slice::from_ref(&namespace)).await
                    {
                        warn!(error = %e, "redis change tracking of a new namespace failed; \
                            reconnecting");
                        return Served::Gone;
                    }
                    if !shared.state().resume(generation, namespace.as_str()) {
                        return Served::Gone;
                    }
                }
            },
            () = shared.lost.notified() => {}
            _ = heartbeat.tick() => {
                if !shared.state().has_watchers() {
                    debug!("no redis change watcher left; closing the tracking connection");
                    return Served::Idle;
                }
                let ping = tokio::time::timeout(
                    timeouts.response,
                    redis::cmd("PING").query_async::<()>(&mut connection),
                ).await;
                if !matches!(ping, Ok(Ok(()))) {
                    warn!("redis change tracking connection does not answer; reconnecting");
                    return Served::Gone;
                }
            }
        }
        let state = shared.state();
        if !state.up || state.generation != generation {
            return Served::Gone;
        }
    }
}

/// Why [`serve`] returned.
enum Served {
    /// The connection is gone: connect again.
    Gone,
    /// The core was dropped: stop.
    CoreDropped,
    /// Every watcher was dropped: close the connection until one registers.
    Idle,
}
