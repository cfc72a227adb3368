//! [`MongoCore`]: the [`Core`] implementation on a MongoDB database.

use std::collections::HashMap;
use std::fmt;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cachier_core::{
    Capabilities, Claim, ClaimToken, Core, Entry, Error, ErrorKind, FuncId, Key, Namespace, Result,
    Timestamp,
};
use mongodb::bson::{Binary, Bson, DateTime, Document, doc, spec::BinarySubtype};
use mongodb::error::{ErrorKind as DriverErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, Database, IndexModel};
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use crate::BACKEND;
use crate::config::Config;

/// The largest BSON document MongoDB stores, in bytes.
pub const MAX_DOCUMENT_BYTES: u64 = 16 * 1024 * 1024;

/// The largest value this backend stores, in bytes: the document limit minus 1 KiB kept for the
/// other fields of the document (`_id`, `func`, `key`, `stored_at`, the claim fields and the
/// BSON framing, which together stay below 800 bytes for the longest function id).
pub const MAX_VALUE_BYTES: u64 = MAX_DOCUMENT_BYTES - 1024;

/// The name of the unique index on `(func, key)`.
const INDEX_NAME: &str = "func_key";

/// The name of the TTL index on `expire_at`: the server removes a document once its
/// `expire_at` date has passed.
const TTL_INDEX_NAME: &str = "expire_at";

/// How often a write that lost a race for a cold key's insert is tried again.
const MAX_ATTEMPTS: usize = 4;

/// The error code of a duplicate-key write (and its legacy form).
const DUPLICATE_KEY_CODES: [i32; 2] = [11000, 11001];

/// Server codes that mean "not now": the server is shutting down, recovering or not primary
/// (91, 189, 10107, 11600, 11602, 13435, 13436, 10058), cannot reach another member (6
/// HostUnreachable, 7 HostNotFound, 89 NetworkTimeout, 9001 SocketException), or ran out of
/// time (50 MaxTimeMSExpired, 262 ExceededTimeLimit).
const UNAVAILABLE_CODES: [i32; 14] = [
    91, 189, 10107, 11600, 11602, 13435, 13436, 10058, 6, 7, 89, 9001, 50, 262,
];

/// Field names of a cache document (see the crate docs for the layout).
mod field {
    pub const ID: &str = "_id";
    pub const FUNC: &str = "func";
    pub const KEY: &str = "key";
    pub const VALUE: &str = "value";
    pub const STORED_AT: &str = "stored_at";
    pub const CLAIM_UNTIL: &str = "claim_until";
    pub const CLAIM_TOKEN: &str = "claim_token";
    pub const EXPIRE_AT: &str = "expire_at";
}

/// A [`Core`] that keeps entries in a MongoDB database: one collection per namespace, one
/// document per key. See the [crate docs](crate) for the layout.
///
/// ```no_run
/// use cachier_mongo::{Config, MongoCore};
///
/// # async fn example() -> cachier_core::Result<()> {
/// let core = MongoCore::connect(Config::from_url("mongodb://127.0.0.1:27017/app")?).await?;
/// core.ping().await?;
/// # Ok(())
/// # }
/// ```
pub struct MongoCore {
    config: Config,
    client: Client,
    database: Database,
    /// Per collection, whether this process has created (or found) its unique index: one cell
    /// per collection, so callers arriving together create the index once and wait for it.
    /// Forgotten when the collection is dropped or the server becomes unreachable (it may come
    /// back empty).
    indexed: Mutex<HashMap<String, Arc<OnceCell<()>>>>,
}

impl fmt::Debug for MongoCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoCore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MongoCore {
    /// Creates the backend from `config`.
    ///
    /// Does not contact the server (an application must start while its cache is down); the
    /// first operation does. Use [`MongoCore::ping`] to check the server at start-up. Fails with
    /// [`ErrorKind::Config`] on an invalid database name or collection prefix, or a connection
    /// string that cannot be resolved.
    pub async fn connect(config: Config) -> Result<Self> {
        config.validate()?;
        let client = config.client().await?;
        let database = client.database(config.database_name());
        debug!(?config, "MongoDB backend configured");
        Ok(MongoCore {
            config,
            client,
            database,
            indexed: Mutex::new(HashMap::new()),
        })
    }

    /// Checks that the server answers, within the configured timeouts.
    pub async fn ping(&self) -> Result<()> {
        let target = self.database.name().to_owned();
        self.run(
            "ping",
            &target,
            self.database.run_command(doc! { "ping": 1 }),
        )
        .await
        .map(drop)
    }

    /// The settings this backend was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The driver client (shared with the application when built with
    /// [`Config::from_client`]).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The database that holds the collections.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The collection that holds `namespace` (named by [`Config::collection_name`]).
    pub fn collection(&self, namespace: &Namespace) -> Collection<Document> {
        self.database
            .collection(&self.config.collection_name(namespace))
    }

    /// Runs one driver call under the operation timeout, keeping the driver's error for the
    /// caller to inspect. A timeout becomes an [`ErrorKind::Unavailable`] error.
    async fn timed<T>(
        &self,
        operation: &'static str,
        target: &(dyn fmt::Display + Sync),
        call: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<mongodb::error::Result<T>> {
        self.timed_within(self.config.operation_time_limit(), operation, target, call)
            .await
    }

    /// Runs one driver call under `limit`, keeping the driver's error for the caller to
    /// inspect. A timeout becomes an [`ErrorKind::Unavailable`] error.
    async fn timed_within<T>(
        &self,
        limit: Duration,
        operation: &'static str,
        target: &(dyn fmt::Display + Sync),
        call: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<mongodb::error::Result<T>> {
        match tokio::time::timeout(limit, call).await {
            Ok(result) => Ok(result),
            Err(_) => {
                self.forget_indexes();
                Err(Error::unavailable(format!(
                    "the MongoDB server did not answer within {limit:?}"
                ))
                .with_operation(operation)
                .with_backend(BACKEND)
                .with_key(target))
            }
        }
    }

    /// Runs one driver call under the operation timeout and converts its error.
    async fn run<T>(
        &self,
        operation: &'static str,
        target: &(dyn fmt::Display + Sync),
        call: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T> {
        self.timed(operation, target, call)
            .await?
            .map_err(|e| self.convert(operation, target, e))
    }

    /// Runs one driver call of a maintenance operation (which may touch many documents) under
    /// the maintenance timeout and converts its error.
    async fn run_maintenance<T>(
        &self,
        operation: &'static str,
        target: &(dyn fmt::Display + Sync),
        call: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T> {
        let limit = self.config.maintenance_time_limit();
        self.timed_within(limit, operation, target, call)
            .await?
            .map_err(|e| self.convert(operation, target, e))
    }

    /// Converts a driver error into the project's error, with context.
    fn convert(
        &self,
        operation: &'static str,
        target: &(dyn fmt::Display + Sync),
        error: mongodb::error::Error,
    ) -> Error {
        let kind = classify(&error);
        if kind == ErrorKind::Unavailable {
            // The server may come back empty (a restart of an in-memory server, a failover to a
            // fresh node): make sure the unique index is created again.
            self.forget_indexes();
        }
        let message = match kind {
            ErrorKind::Unavailable => "the MongoDB server is unreachable",
            ErrorKind::PermissionDenied => "the MongoDB server refused the operation",
            ErrorKind::TooLarge => "the document exceeds the MongoDB size limit",
            ErrorKind::Corrupt => "the MongoDB server returned an unreadable document",
            ErrorKind::Config => "the MongoDB client is misconfigured",
            _ => "the MongoDB operation failed",
        };
        Error::new(kind, message)
            .with_source(error)
            .with_operation(operation)
            .with_backend(BACKEND)
            .with_key(target)
    }

    fn indexed(&self) -> MutexGuard<'_, HashMap<String, Arc<OnceCell<()>>>> {
        // The map is only a cache: a panic elsewhere while holding the lock cannot leave it in a
        // state worse than "index once more".
        self.indexed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget_indexes(&self) {
        self.indexed().clear();
    }

    /// The collection of `key`'s namespace, with its unique `(func, key)` index created on first use
    /// by this process.
    ///
    /// `set` and `claim` go through here. Callers arriving together share one index round trip
    /// (one cell per collection) instead of queueing one each between their read and their
    /// claim, which would widen the window in which a late claimer computes a value again.
    async fn indexed_collection(
        &self,
        operation: &'static str,
        key: &Key,
    ) -> Result<Collection<Document>> {
        let name = self.config.collection_name(&key.namespace);
        let collection = self.database.collection::<Document>(&name);
        let cell = self.indexed().entry(name).or_default().clone();
        cell.get_or_try_init(|| async {
            let index = IndexModel::builder()
                .keys(doc! { field::FUNC: 1, field::KEY: 1 })
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name(INDEX_NAME.to_owned())
                        .build(),
                )
                .build();
            let ttl = IndexModel::builder()
                .keys(doc! { field::EXPIRE_AT: 1 })
                .options(
                    IndexOptions::builder()
                        .expire_after(Duration::ZERO)
                        .name(TTL_INDEX_NAME.to_owned())
                        .build(),
                )
                .build();
            self.run(operation, key, collection.create_indexes([index, ttl]))
                .await?;
            debug!(collection = %collection.name(), "unique (func, key) and TTL indexes in place");
            Ok::<(), Error>(())
        })
        .await?;
        Ok(collection)
    }

    /// `set`, with an `expire_at` date for the TTL index when `expire_after` is given; without
    /// it, any earlier `expire_at` is removed, so the value stays.
    async fn store(
        &self,
        key: &Key,
        value: Bytes,
        stored_at: Timestamp,
        expire_after: Option<Duration>,
    ) -> Result<()> {
        if value.len() as u64 > MAX_VALUE_BYTES {
            return Err(Error::too_large(format!(
                "a value of {} bytes exceeds the MongoDB backend's limit of {MAX_VALUE_BYTES} bytes \
                 (a document holds at most 16 MiB)",
                value.len()
            ))
            .with_operation("set")
            .with_backend(BACKEND)
            .with_key(key));
        }
        let collection = self.indexed_collection("set", key).await?;
        let stored_at = millis(stored_at);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut set = doc! {
                field::VALUE: Binary { subtype: BinarySubtype::Generic, bytes: value.to_vec() },
                field::STORED_AT: stored_at,
            };
            let mut unset = doc! { field::CLAIM_UNTIL: "", field::CLAIM_TOKEN: "" };
            match expire_after {
                Some(expire) => {
                    let at = Timestamp::now().add(expire).as_millis();
                    let at = DateTime::from_millis(i64::try_from(at).unwrap_or(i64::MAX));
                    set.insert(field::EXPIRE_AT, at);
                }
                None => {
                    unset.insert(field::EXPIRE_AT, "");
                }
            }
            let update = doc! {
                "$set": set,
                "$unset": unset,
                "$setOnInsert": { field::ID: document_id(key) },
            };
            let call = collection.update_one(key_filter(key), update).upsert(true);
            match self.timed("set", key, call).await? {
                Ok(_) => return Ok(()),
                // Another writer inserted the document first: it exists now, so the next
                // attempt updates it.
                Err(e) if is_duplicate_key(&e) && attempt < MAX_ATTEMPTS => {
                    debug!(%key, attempt, "set lost an insert race, trying again");
                }
                Err(e) => return Err(self.convert("set", key, e)),
            }
        }
    }

    /// Takes the claim of a document read after a refused claim whose `claim_until` is no live
    /// claim: missing or null (the claim ended between the update and the read) or of a foreign
    /// type the claim filter cannot compare. One compare-and-set on the document's `_id` and the
    /// exact `claim_until` value read, so of several callers doing this at once one wins.
    async fn take_over_claim(
        &self,
        collection: &Collection<Document>,
        key: &Key,
        doc: &Document,
        lease: Duration,
    ) -> Result<Option<ClaimToken>> {
        let Some(id) = doc.get(field::ID) else {
            return Ok(None);
        };
        let observed = doc.get(field::CLAIM_UNTIL).cloned().unwrap_or(Bson::Null);
        let token = ClaimToken::generate();
        let until = millis(Timestamp::now().add(lease));
        let result = self
            .run(
                "claim",
                key,
                collection.update_one(
                    doc! { field::ID: id.clone(), field::CLAIM_UNTIL: observed },
                    doc! { "$set": { field::CLAIM_UNTIL: until, field::CLAIM_TOKEN: token.as_str() } },
                ),
            )
            .await?;
        Ok((result.matched_count == 1).then_some(token))
    }
}

#[async_trait]
impl Core for MongoCore {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cross_process: true,
            native_wakeup: false,
            persistent: true,
            max_value_bytes: Some(MAX_VALUE_BYTES),
        }
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        // A read creates nothing: no index, no collection (a read after `clear_namespace` must
        // not bring the collection back).
        let collection = self.collection(&key.namespace);
        let found = self
            .run("get", key, collection.find_one(key_filter(key)))
            .await?;
        Ok(found.and_then(|doc| parse_entry(&doc, key)))
    }

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
        let collection = self.indexed_collection("claim", key).await?;
        for attempt in 1..=MAX_ATTEMPTS {
            let now = millis(Timestamp::now());
            let token = ClaimToken::generate();
            let until = millis(Timestamp::now().add(lease));
            let mut filter = key_filter(key);
            filter.insert(
                "$or",
                vec![
                    Bson::Document(doc! { field::CLAIM_UNTIL: Bson::Null }),
                    Bson::Document(doc! { field::CLAIM_UNTIL: { "$lte": now } }),
                ],
            );
            let update = doc! {
                "$set": { field::CLAIM_UNTIL: until, field::CLAIM_TOKEN: token.as_str() },
                "$setOnInsert": { field::ID: document_id(key) },
            };
            let call = collection.update_one(filter, update).upsert(true);
            match self.timed("claim", key, call).await? {
                // Either an unclaimed (or expired) document was updated or a new one inserted.
                Ok(_) => return Ok(Claim::Acquired(token)),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(self.convert("claim", key, e)),
            }
            // The document exists and the filter did not match it: someone holds a live claim,
            // or the claim field is in a form the filter cannot compare. Read which.
            let holder = self
                .run(
                    "claim",
                    key,
                    collection
                        .find_one(key_filter(key))
                        .projection(doc! { field::CLAIM_UNTIL: 1 }),
                )
                .await?;
            let Some(holder) = holder else {
                debug!(%key, attempt, "claimed document vanished, trying again");
                continue;
            };
            let observed = holder.get(field::CLAIM_UNTIL);
            match observed.map(as_millis) {
                Some(Some(until)) if until > Timestamp::now() => {
                    return Ok(Claim::Held { until });
                }
                // The holder's lease ran out since the update: the next attempt takes it.
                Some(Some(_)) => continue,
                // No claim any more (a `set` or `release` landed between the update and the
                // read), or one of a foreign type: take it with a compare-and-set.
                _ => {
                    if observed.is_some_and(|v| *v != Bson::Null) {
                        warn!(
                            %key,
                            claim_until = ?observed,
                            "MongoDB document has a malformed claim; taking the claim over"
                        );
                    }
                    if let Some(token) = self
                        .take_over_claim(&collection, key, &holder, lease)
                        .await?
                    {
                        return Ok(Claim::Acquired(token));
                    }
                }
            }
        }
        Err(Error::new(
            ErrorKind::Backend,
            format!(
                "the claim could not be settled after {MAX_ATTEMPTS} attempts: another document \
                 conflicts with this key's document id"
            ),
        )
        .with_operation("claim")
        .with_backend(BACKEND)
        .with_key(key))
    }

    async fn renew(&self, key: &Key, token: &ClaimToken, lease: Duration) -> Result<bool> {
        let collection = self.collection(&key.namespace);
        let now = Timestamp::now();
        let mut filter = key_filter(key);
        filter.insert(field::CLAIM_TOKEN, token.as_str());
        filter.insert(field::CLAIM_UNTIL, doc! { "$gt": millis(now) });
        let update = doc! { "$set": { field::CLAIM_UNTIL: millis(now.add(lease)) } };
        let result = self
            .run("renew", key, collection.update_one(filter, update))
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn release(&self, key: &Key, token: &ClaimToken) -> Result<()> {
        let collection = self.collection(&key.namespace);
        let mut holder = key_filter(key);
        holder.insert(field::CLAIM_TOKEN, token.as_str());
        let update = doc! { "$unset": { field::CLAIM_UNTIL: "", field::CLAIM_TOKEN: "" } };
        // After a `set` the token no longer matches: one round trip does nothing.
        let released = self
            .run("release", key, collection.update_one(holder, update))
            .await?;
        if released.matched_count == 1 {
            // A document that only carried the claim goes away with it, unless someone has
            // claimed the key again in between.
            let mut empty = key_filter(key);
            empty.insert(field::VALUE, doc! { "$exists": false });
            empty.insert(field::CLAIM_UNTIL, doc! { "$exists": false });
            self.run("release", key, collection.delete_one(empty))
                .await?;
        }
        Ok(())
    }

    async fn remove(&self, key: &Key) -> Result<bool> {
        let collection = self.collection(&key.namespace);
        let mut with_value = key_filter(key);
        with_value.insert(field::VALUE, doc! { "$exists": true });
        let removed = self
            .run("remove", key, collection.delete_one(with_value))
            .await?;
        if removed.deleted_count == 0 {
            // No value, but maybe a claim-only document.
            self.run("remove", key, collection.delete_one(key_filter(key)))
                .await?;
        }
        Ok(removed.deleted_count > 0)
    }

    async fn clear(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let collection = self.collection(namespace);
        let target = FuncTarget(namespace, func);
        let values = self
            .run_maintenance(
                "clear",
                &target,
                collection.delete_many(doc! {
                    field::FUNC: func.as_str(),
                    field::VALUE: { "$exists": true },
                }),
            )
            .await?;
        self.run_maintenance(
            "clear",
            &target,
            collection.delete_many(doc! { field::FUNC: func.as_str() }),
        )
        .await?;
        Ok(values.deleted_count)
    }

    async fn clear_claims(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let collection = self.collection(namespace);
        let target = FuncTarget(namespace, func);
        let now = millis(Timestamp::now());
        let live_claim_only = self
            .run_maintenance(
                "clear claims",
                &target,
                collection.delete_many(doc! {
                    field::FUNC: func.as_str(),
                    field::VALUE: { "$exists": false },
                    field::CLAIM_UNTIL: { "$gt": now },
                }),
            )
            .await?;
        // Documents left behind by expired claims carry nothing: remove them too.
        self.run_maintenance(
            "clear claims",
            &target,
            collection.delete_many(doc! {
                field::FUNC: func.as_str(),
                field::VALUE: { "$exists": false },
            }),
        )
        .await?;
        let live_with_value = self
            .run_maintenance(
                "clear claims",
                &target,
                collection.update_many(
                    doc! { field::FUNC: func.as_str(), field::CLAIM_UNTIL: { "$gt": now } },
                    doc! { "$unset": { field::CLAIM_UNTIL: "", field::CLAIM_TOKEN: "" } },
                ),
            )
            .await?;
        Ok(live_claim_only.deleted_count + live_with_value.modified_count)
    }

    async fn delete_stale(
        &self,
        namespace: &Namespace,
        func: &FuncId,
        stored_before: Timestamp,
    ) -> Result<u64> {
        let collection = self.collection(namespace);
        let target = FuncTarget(namespace, func);
        let now = millis(Timestamp::now());
        let stale = doc! {
            field::FUNC: func.as_str(),
            field::VALUE: { "$exists": true },
            field::STORED_AT: { "$lt": millis(stored_before) },
        };
        let mut unclaimed = stale.clone();
        unclaimed.insert(
            "$or",
            vec![
                Bson::Document(doc! { field::CLAIM_UNTIL: Bson::Null }),
                Bson::Document(doc! { field::CLAIM_UNTIL: { "$lte": now } }),
            ],
        );
        let deleted = self
            .run_maintenance("delete stale", &target, collection.delete_many(unclaimed))
            .await?;
        // Stale values under a live claim: drop the value, keep the claim.
        let emptied = self
            .run_maintenance(
                "delete stale",
                &target,
                collection.update_many(
                    stale,
                    doc! { "$unset": { field::VALUE: "", field::STORED_AT: "" } },
                ),
            )
            .await?;
        Ok(deleted.deleted_count + emptied.modified_count)
    }

    async fn clear_namespace(&self, namespace: &Namespace) -> Result<u64> {
        let collection = self.collection(namespace);
        let values = self
            .run_maintenance(
                "clear namespace",
                namespace,
                collection.count_documents(doc! { field::VALUE: { "$exists": true } }),
            )
            .await?;
        self.run_maintenance("clear namespace", namespace, collection.drop())
            .await?;
        self.indexed().remove(collection.name());
        Ok(values)
    }
}

/// Names a function of a namespace in error messages.
struct FuncTarget<'a>(&'a Namespace, &'a FuncId);

impl fmt::Display for FuncTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

/// The filter that finds the document of `key` within its namespace's collection.
fn key_filter(key: &Key) -> Document {
    doc! { field::FUNC: key.func.as_str(), field::KEY: key.hash.to_hex() }
}

/// The `_id` of a document this backend inserts: `{func}\x1f{hash}`.
///
/// Deterministic, so two processes inserting the same key at once collide on the always-present
/// `_id` index even if the `(func, key)` index has been dropped meanwhile. Function ids never
/// contain control characters, so the separator is unambiguous.
fn document_id(key: &Key) -> String {
    format!("{}\x1f{}", key.func, key.hash)
}

/// Milliseconds since the epoch as BSON's signed 64-bit integer, saturating.
fn millis(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

/// Reads a millisecond timestamp written by this backend (a non-negative 32- or 64-bit integer).
fn as_millis(value: &Bson) -> Option<Timestamp> {
    let ms = match value {
        Bson::Int64(ms) => *ms,
        Bson::Int32(ms) => i64::from(*ms),
        _ => return None,
    };
    u64::try_from(ms).ok().map(Timestamp)
}

/// Turns a stored document into an entry; anything malformed is logged and read as absent.
fn parse_entry(doc: &Document, key: &Key) -> Option<Entry> {
    let mut value = match doc.get(field::VALUE) {
        None | Some(Bson::Null) => None,
        Some(Bson::Binary(binary)) => Some(Bytes::from(binary.bytes.clone())),
        Some(other) => {
            warn!(%key, found = ?other.element_type(), "MongoDB document has a value that is not binary; reading it as a miss");
            None
        }
    };
    let stored_at = match doc.get(field::STORED_AT).map(as_millis) {
        Some(Some(t)) => t,
        found => {
            if value.is_some() {
                warn!(%key, stored_at = ?found.and(doc.get(field::STORED_AT)), "MongoDB document has a value without a valid stored_at; reading it as a miss");
                value = None;
            }
            Timestamp::default()
        }
    };
    let claim_until = match doc.get(field::CLAIM_UNTIL) {
        None | Some(Bson::Null) => None,
        Some(raw) => match as_millis(raw) {
            Some(t) => Some(t),
            None => {
                warn!(%key, claim_until = ?raw, "MongoDB document has a malformed claim; ignoring it");
                None
            }
        },
    }
    .filter(|until| *until > Timestamp::now());
    if value.is_none() && claim_until.is_none() {
        return None;
    }
    Some(Entry {
        value,
        stored_at,
        claim_until,
    })
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    server_code(error).is_some_and(|code| DUPLICATE_KEY_CODES.contains(&code))
}

fn server_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        DriverErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        DriverErrorKind::Write(WriteFailure::WriteConcernError(e)) => Some(e.code),
        DriverErrorKind::Command(e) => Some(e.code),
        _ => None,
    }
}

/// Which of the project's error kinds a driver error is.
fn classify(error: &mongodb::error::Error) -> ErrorKind {
    match error.kind.as_ref() {
        DriverErrorKind::ServerSelection { .. }
        | DriverErrorKind::Io(_)
        | DriverErrorKind::ConnectionPoolCleared { .. }
        | DriverErrorKind::DnsResolve { .. }
        | DriverErrorKind::Shutdown => ErrorKind::Unavailable,
        DriverErrorKind::Authentication { .. } => ErrorKind::PermissionDenied,
        DriverErrorKind::InvalidArgument { .. } | DriverErrorKind::InvalidTlsConfig { .. } => {
            ErrorKind::Config
        }
        DriverErrorKind::BsonDeserialization(_) => ErrorKind::Corrupt,
        _ => match server_code(error) {
            Some(13) => ErrorKind::PermissionDenied,
            Some(10334) => ErrorKind::TooLarge,
            Some(code) if UNAVAILABLE_CODES.contains(&code) => ErrorKind::Unavailable,
            _ => ErrorKind::Backend,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cachier_core::ArgHash;

    fn key() -> Key {
        Key::new(
            Namespace::new("unit").unwrap(),
            FuncId::new("m::f").unwrap(),
            ArgHash::of(&1u8).unwrap(),
        )
    }

    fn future() -> i64 {
        millis(Timestamp::now().add(Duration::from_secs(60)))
    }

    #[test]
    fn a_well_formed_document_is_an_entry() {
        let doc = doc! {
            field::VALUE: Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 255] },
            field::STORED_AT: 42i64,
            field::CLAIM_UNTIL: future(),
        };
        let entry = parse_entry(&doc, &key()).unwrap();
        assert_eq!(entry.value.as_deref(), Some(&[0u8, 255][..]));
        assert_eq!(entry.stored_at, Timestamp(42));
        assert!(entry.is_claimed());
    }

    #[test]
    fn malformed_fields_read_as_absent() {
        let binary = Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes: vec![1],
        });
        let cases = [
            doc! { field::VALUE: "text", field::STORED_AT: 1i64 },
            doc! { field::VALUE: binary.clone() },
            doc! { field::VALUE: binary.clone(), field::STORED_AT: "yesterday" },
            doc! { field::VALUE: binary.clone(), field::STORED_AT: -5i64 },
            doc! { field::CLAIM_UNTIL: "soon" },
            doc! { field::CLAIM_UNTIL: 1.5e15 },
            doc! { field::CLAIM_UNTIL: 1i64 },
            doc! {},
        ];
        for doc in cases {
            assert_eq!(parse_entry(&doc, &key()), None, "{doc}");
        }
    }

    #[test]
    fn a_malformed_claim_keeps_the_value() {
        let doc = doc! {
            field::VALUE: Binary { subtype: BinarySubtype::Generic, bytes: vec![7] },
            field::STORED_AT: 9i32,
            field::CLAIM_UNTIL: "soon",
        };
        let entry = parse_entry(&doc, &key()).unwrap();
        assert_eq!(entry.value.as_deref(), Some(&[7u8][..]));
        assert_eq!(entry.claim_until, None);
    }

    #[test]
    fn timestamps_saturate_instead_of_overflowing() {
        assert_eq!(millis(Timestamp(u64::MAX)), i64::MAX);
        assert_eq!(as_millis(&Bson::Int64(-1)), None);
        assert_eq!(as_millis(&Bson::Int32(5)), Some(Timestamp(5)));
    }

    #[test]
    fn document_ids_are_deterministic_and_distinct() {
        let a = key();
        let mut b = key();
        b.func = FuncId::new("m::f_bar").unwrap();
        assert_eq!(document_id(&a), document_id(&a.clone()));
        assert_ne!(document_id(&a), document_id(&b));
    }
}
