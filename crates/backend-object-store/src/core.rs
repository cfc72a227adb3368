//! The [`Core`] implementation: entries and claims as objects, claims by conditional put.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cachier_core::{
    Capabilities, Claim, ClaimToken, Core, Entry, Error, FuncId, Key, Namespace, Result, Timestamp,
};
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};

use crate::BACKEND;
use crate::config::Config;
use crate::error::{ObjectError, map_error};
use crate::layout::{self, HEADER_LEN, Layout, Listed};

/// How often `claim`, `renew` and `release` start over when the claim object changed under
/// them. Each round means another caller's write landed, so this is reached only under a storm
/// of writers on one key.
const MAX_ROUNDS: usize = 16;

/// How many header reads `delete_stale` keeps in flight.
const STALE_READS_IN_FLIGHT: usize = 16;

/// A [`Core`] on an object store: S3 (or an S3-compatible server), a local directory, memory,
/// or any [`ObjectStore`] given to [`Config::from_store`].
///
/// ```no_run
/// use std::sync::Arc;
/// use cachier_core::{Cachier, Core};
/// use cachier_object_store::{Config, ObjectStoreCore};
///
/// # fn example() -> cachier_core::Result<()> {
/// let config = Config::from_url("s3://my-bucket/cachier?region=eu-west-1")?;
/// let core: Arc<dyn Core> = Arc::new(ObjectStoreCore::open(config)?);
/// let cache = Cachier::builder(core).build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ObjectStoreCore {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    conditional_update: bool,
    capabilities: Capabilities,
    /// The claims this core holds, by claim path: what it last wrote and the version the store
    /// gave it, so `renew` and `release` need one conditional PUT and no read.
    held: Arc<Mutex<HashMap<Path, Held>>>,
}

/// A claim this core wrote: its token, its expiry and the object's version after the write.
#[derive(Clone)]
struct Held {
    token: ClaimToken,
    until: Timestamp,
    version: UpdateVersion,
}

impl std::fmt::Debug for ObjectStoreCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreCore")
            .field("store", &self.store.to_string())
            .field("layout", &self.layout)
            .field("conditional_update", &self.conditional_update)
            .finish()
    }
}

/// A claim object as read: its parsed content (`None` for foreign bytes) and its version.
struct ClaimObject {
    claim: Option<(Timestamp, ClaimToken)>,
    version: UpdateVersion,
}

impl ClaimObject {
    fn live_until(&self) -> Option<Timestamp> {
        self.claim
            .as_ref()
            .map(|(until, _)| *until)
            .filter(|until| *until > Timestamp::now())
    }

    fn held_by(&self, token: &ClaimToken) -> bool {
        self.claim.as_ref().is_some_and(|(_, t)| t == token)
    }
}

impl ObjectStoreCore {
    /// Opens the store `config` names. No request is made: a bucket that does not exist or an
    /// endpoint that is down shows up on the first operation (as a miss or as
    /// [`ErrorKind::Unavailable`](cachier_core::ErrorKind::Unavailable)).
    pub fn open(config: Config) -> Result<Self> {
        let opened = config.open()?;
        Ok(ObjectStoreCore {
            store: opened.store,
            layout: Layout::new(&config.prefix),
            conditional_update: opened.conditional_update,
            held: Arc::default(),
            capabilities: Capabilities {
                cross_process: opened.cross_process,
                native_wakeup: false,
                persistent: opened.persistent,
                max_value_bytes: opened.max_value_bytes,
            },
        })
    }

    /// Whether taking over an expired claim, `renew` and `release` are conditional writes
    /// (`PutMode::Update` on the claim's ETag). `false` for the local file system: see
    /// [Stores without conditional updates](crate#stores-without-conditional-updates).
    pub fn has_conditional_update(&self) -> bool {
        self.conditional_update
    }

    /// The store underneath, for tools and tests that inspect the objects.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The path of the entry object of `key`.
    pub fn value_path(&self, key: &Key) -> Path {
        self.layout.value(key)
    }

    /// The path of the claim object of `key`.
    pub fn claim_path(&self, key: &Key) -> Path {
        self.layout.claim(key)
    }

    /// The directory holding everything of `namespace`.
    pub fn namespace_path(&self, namespace: &Namespace) -> Path {
        self.layout.namespace_dir(namespace)
    }

    /// Reads a whole object; `None` when it does not exist.
    async fn read(&self, path: &Path) -> Result<Option<(Bytes, UpdateVersion)>, ObjectError> {
        let result = match self.store.get(path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let version = UpdateVersion {
            e_tag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        };
        match result.bytes().await {
            Ok(bytes) => Ok(Some((bytes, version))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_value(&self, key: &Key) -> Result<Option<(Timestamp, Bytes)>, ObjectError> {
        Ok(self
            .read(&self.layout.value(key))
            .await?
            .and_then(|(bytes, _)| layout::parse_entry(&bytes)))
    }

    async fn read_claim(&self, key: &Key) -> Result<Option<ClaimObject>, ObjectError> {
        Ok(self
            .read(&self.layout.claim(key))
            .await?
            .map(|(bytes, version)| ClaimObject {
                claim: layout::parse_claim(&bytes),
                version,
            }))
    }

    /// Writes the claim object of `key` with `mode`; the new version, or `None` when the
    /// condition failed (the object exists for `Create`, changed or vanished for `Update`).
    async fn put_claim(
        &self,
        key: &Key,
        body: Bytes,
        mode: PutMode,
    ) -> Result<Option<UpdateVersion>, ObjectError> {
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.layout.claim(key), PutPayload::from(body), options)
            .await
        {
            Ok(result) => Ok(Some(UpdateVersion::from(result))),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, path: &Path) -> Result<(), ObjectError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the claim object read as `current` with `body`: conditionally where the store
    /// can, else by overwriting (see the crate docs on stores without conditional updates).
    async fn replace_claim(
        &self,
        key: &Key,
        current: &ClaimObject,
        body: Bytes,
    ) -> Result<Option<UpdateVersion>, ObjectError> {
        if self.conditional_update {
            self.put_claim(key, body, PutMode::Update(current.version.clone()))
                .await
        } else {
            self.put_claim(key, body, PutMode::Overwrite).await
        }
    }

    /// Records a claim this core now holds (stores with conditional updates only).
    fn remember(&self, key: &Key, token: &ClaimToken, until: Timestamp, version: UpdateVersion) {
        if !self.conditional_update {
            return;
        }
        let held = Held {
            token: token.clone(),
            until,
            version,
        };
        self.held_claims().insert(self.layout.claim(key), held);
    }

    /// The claim this core holds on `key` with `token`, if it remembers one.
    fn remembered(&self, key: &Key, token: &ClaimToken) -> Option<Held> {
        self.held_claims()
            .get(&self.layout.claim(key))
            .filter(|held| held.token == *token)
            .cloned()
    }

    /// Forgets the claims under `path` (a claim path, or a directory).
    fn forget(&self, path: &Path) {
        self.held_claims()
            .retain(|claim, _| claim != path && !claim.prefix_matches(path));
    }

    fn held_claims(&self) -> std::sync::MutexGuard<'_, HashMap<Path, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists the objects under `dir` and deletes those `select` picks, in batches; returns how
    /// many of the deleted objects were values.
    async fn delete_listed(
        &self,
        dir: &Path,
        select: impl Fn(&Path) -> Option<Listed>,
    ) -> Result<u64, ObjectError> {
        let listed: Vec<(Path, Listed)> = self
            .store
            .list(Some(dir))
            .map_err(ObjectError::from)
            .try_filter_map(|meta| {
                let picked = select(&meta.location).map(|kind| (meta.location, kind));
                async move { Ok(picked) }
            })
            .try_collect()
            .await?;
        let values = listed.iter().filter(|(_, k)| *k == Listed::Value).count() as u64;
        self.delete_all(listed.into_iter().map(|(path, _)| path).collect())
            .await?;
        Ok(values)
    }

    /// Deletes `paths` through the store's batch delete (S3 `DeleteObjects`, 1000 a request).
    async fn delete_all(&self, paths: Vec<Path>) -> Result<(), ObjectError> {
        if paths.is_empty() {
            return Ok(());
        }
        let locations = futures_util::stream::iter(paths.into_iter().map(Ok)).boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(outcome) = deleted.next().await {
            match outcome {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn claim_inner(&self, key: &Key, lease: Duration) -> Result<Claim, ObjectError> {
        let token = ClaimToken::generate();
        for _ in 0..MAX_ROUNDS {
            let until = Timestamp::now().add(lease);
            let body = layout::claim_body(until, &token);
            // A new claim: If-None-Match: *.
            if let Some(version) = self.put_claim(key, body, PutMode::Create).await? {
                self.remember(key, &token, until, version);
                return Ok(Claim::Acquired(token));
            }
            let Some(current) = self.read_claim(key).await? else {
                continue; // Ended (set, release on a plain store, remove) since: try again.
            };
            if let Some((until, _)) = current.claim.as_ref().filter(|_| current.held_by(&token)) {
                // A retried request whose first attempt had landed.
                self.remember(key, &token, *until, current.version.clone());
                return Ok(Claim::Acquired(token));
            }
            if let Some(until) = current.live_until() {
                return Ok(Claim::Held { until });
            }
            // Expired, released or foreign: take it over.
            let until = Timestamp::now().add(lease);
            let body = layout::claim_body(until, &token);
            if self.conditional_update {
                // If-Match on the ETag read: of all callers taking over this dead claim, one wins.
                if let Some(version) = self
                    .put_claim(key, body, PutMode::Update(current.version))
                    .await?
                {
                    self.remember(key, &token, until, version);
                    return Ok(Claim::Acquired(token));
                }
            } else {
                // No conditional update: remove the dead claim, then create as above.
                self.delete(&self.layout.claim(key)).await?;
            }
        }
        Err(ObjectError::Contention)
    }

    async fn renew_inner(
        &self,
        key: &Key,
        token: &ClaimToken,
        lease: Duration,
    ) -> Result<bool, ObjectError> {
        // The claim as this core last wrote it: if the store still has that version, it holds
        // what we wrote, so one conditional PUT renews it without reading it first.
        if let Some(held) = self.remembered(key, token) {
            if held.until <= Timestamp::now() {
                self.forget(&self.layout.claim(key));
                return Ok(false);
            }
            let until = Timestamp::now().add(lease);
            let body = layout::claim_body(until, token);
            match self
                .put_claim(key, body, PutMode::Update(held.version))
                .await?
            {
                Some(version) => {
                    self.remember(key, token, until, version);
                    return Ok(true);
                }
                None => self.forget(&self.layout.claim(key)),
            }
        }
        for _ in 0..MAX_ROUNDS {
            let Some(current) = self.read_claim(key).await? else {
                return Ok(false);
            };
            if !current.held_by(token) || current.live_until().is_none() {
                return Ok(false);
            }
            let until = Timestamp::now().add(lease);
            let body = layout::claim_body(until, token);
            if let Some(version) = self.replace_claim(key, &current, body).await? {
                self.remember(key, token, until, version);
                return Ok(true);
            }
        }
        Err(ObjectError::Contention)
    }

    async fn release_inner(&self, key: &Key, token: &ClaimToken) -> Result<(), ObjectError> {
        if let Some(held) = self.remembered(key, token) {
            self.forget(&self.layout.claim(key));
            let released = layout::released_claim_body();
            if self
                .put_claim(key, released, PutMode::Update(held.version))
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        for _ in 0..MAX_ROUNDS {
            let Some(current) = self.read_claim(key).await? else {
                return Ok(());
            };
            if !current.held_by(token) {
                return Ok(());
            }
            if !self.conditional_update {
                return self.delete(&self.layout.claim(key)).await;
            }
            // Deletes cannot be conditional: mark the claim released instead, on its ETag, so a
            // claim taken over meanwhile is never ended by its former holder.
            if self
                .replace_claim(key, &current, layout::released_claim_body())
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(ObjectError::Contention)
    }

    async fn delete_stale_inner(
        &self,
        namespace: &Namespace,
        func: &FuncId,
        stored_before: Timestamp,
    ) -> Result<u64, ObjectError> {
        let dir = self.layout.func_dir(namespace, func);
        let values: Vec<Path> = self
            .store
            .list(Some(&dir))
            .map_err(ObjectError::from)
            .try_filter_map(|meta| {
                let value = (layout::classify(&dir, &meta.location) == Listed::Value)
                    .then_some(meta.location);
                async move { Ok(value) }
            })
            .try_collect()
            .await?;
        // Only the header says when a value was stored: read its first bytes.
        let stale: Vec<Path> = futures_util::stream::iter(values)
            .map(|path| async move {
                let options = GetOptions {
                    range: Some(GetRange::Bounded(0..HEADER_LEN as u64)),
                    ..GetOptions::default()
                };
                let header = match self.store.get_opts(&path, options).await {
                    Ok(result) => result.bytes().await,
                    Err(e) => Err(e),
                };
                match header {
                    Ok(bytes) => Ok(layout::parse_header(&bytes)
                        .filter(|stored_at| *stored_at < stored_before)
                        .map(|_| path)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(ObjectError::from(e)),
                }
            })
            .buffer_unordered(STALE_READS_IN_FLIGHT)
            .try_filter_map(|picked| async move { Ok(picked) })
            .try_collect()
            .await?;
        let removed = stale.len() as u64;
        self.delete_all(stale).await?;
        Ok(removed)
    }
}

#[async_trait]
impl Core for ObjectStoreCore {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        let (value, claim) = tokio::try_join!(self.read_value(key), self.read_claim(key))
            .map_err(|e| map_error(e, "get", key))?;
        let claim_until = claim.as_ref().and_then(ClaimObject::live_until);
        Ok(match (value, claim_until) {
            (None, None) => None,
            (value, claim_until) => Some(Entry {
                stored_at: value.as_ref().map_or(Timestamp(0), |(t, _)| *t),
                value: value.map(|(_, v)| v),
                claim_until,
            }),
        })
    }

    async fn get_value(&self, key: &Key) -> Result<Option<Entry>> {
        let value = self
            .read_value(key)
            .await
            .map_err(|e| map_error(e, "get_value", key))?;
        Ok(value.map(|(stored_at, value)| Entry {
            value: Some(value),
            stored_at,
            claim_until: None,
        }))
    }

    async fn set(&self, key: &Key, value: Bytes, stored_at: Timestamp) -> Result<()> {
        if let Some(limit) = self.capabilities.max_value_bytes
            && value.len() as u64 > limit
        {
            return Err(Error::too_large(format!(
                "a value of {} bytes is over this store's limit of {limit} bytes",
                value.len()
            ))
            .with_operation("set")
            .with_backend(BACKEND)
            .with_key(key));
        }
        // The header and the value go out as two chunks of one payload: no copy of the value.
        let payload = PutPayload::from_iter([layout::entry_header(stored_at), value]);
        self.forget(&self.layout.claim(key));
        let write = async {
            self.store.put(&self.layout.value(key), payload).await?;
            self.delete(&self.layout.claim(key)).await
        };
        write.await.map_err(|e| map_error(e, "set", key))
    }

    async fn claim(&self, key: &Key, lease: Duration) -> Result<Claim> {
        self.claim_inner(key, lease)
            .await
            .map_err(|e| map_error(e, "claim", key))
    }

    async fn renew(&self, key: &Key, token: &ClaimToken, lease: Duration) -> Result<bool> {
        self.renew_inner(key, token, lease)
            .await
            .map_err(|e| map_error(e, "renew", key))
    }

    async fn release(&self, key: &Key, token: &ClaimToken) -> Result<()> {
        self.release_inner(key, token)
            .await
            .map_err(|e| map_error(e, "release", key))
    }

    async fn remove(&self, key: &Key) -> Result<bool> {
        self.forget(&self.layout.claim(key));
        let remove = async {
            let existed = match self.store.head(&self.layout.value(key)).await {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => return Err(ObjectError::from(e)),
            };
            self.delete_all(vec![self.layout.value(key), self.layout.claim(key)])
                .await?;
            Ok(existed)
        };
        remove.await.map_err(|e| map_error(e, "remove", key))
    }

    async fn clear(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let dir = self.layout.func_dir(namespace, func);
        self.forget(&dir);
        self.delete_listed(&dir, |path| match layout::classify(&dir, path) {
            Listed::Other => None,
            kind => Some(kind),
        })
        .await
        .map_err(|e| map_error(e, "clear", format!("{namespace}/{func}")))
    }

    async fn clear_claims(&self, namespace: &Namespace, func: &FuncId) -> Result<u64> {
        let dir = self.layout.func_dir(namespace, func);
        self.forget(&dir);
        let clear = async {
            let claims: Vec<Path> = self
                .store
                .list(Some(&dir))
                .map_err(ObjectError::from)
                .try_filter_map(|meta| {
                    let claim = (layout::classify(&dir, &meta.location) == Listed::Claim)
                        .then_some(meta.location);
                    async move { Ok(claim) }
                })
                .try_collect()
                .await?;
            // Count the claims that were live: released and expired ones ended before.
            let mut live = 0;
            for path in &claims {
                if let Some((bytes, _)) = self.read(path).await?
                    && layout::parse_claim(&bytes)
                        .is_some_and(|(until, _)| until > Timestamp::now())
                {
                    live += 1;
                }
            }
            self.delete_all(claims).await?;
            Ok(live)
        };
        clear
            .await
            .map_err(|e| map_error(e, "clear_claims", format!("{namespace}/{func}")))
    }

    async fn delete_stale(
        &self,
        namespace: &Namespace,
        func: &FuncId,
        stored_before: Timestamp,
    ) -> Result<u64> {
        self.delete_stale_inner(namespace, func, stored_before)
            .await
            .map_err(|e| map_error(e, "delete_stale", format!("{namespace}/{func}")))
    }

    async fn clear_namespace(&self, namespace: &Namespace) -> Result<u64> {
        let dir = self.layout.namespace_dir(namespace);
        self.forget(&dir);
        // Everything under the namespace goes, foreign objects included; values are the
        // objects directly inside a function's directory named by a hash.
        self.delete_listed(&dir, |path| {
            let mut parts = path.prefix_match(&dir)?;
            let (Some(_func), Some(_name), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Some(Listed::Other);
            };
            let func_dir: Path = path.parts().take(path.parts().count() - 1).collect();
            Some(layout::classify(&func_dir, path))
        })
        .await
        .map_err(|e| map_error(e, "clear_namespace", namespace))
    }
}
