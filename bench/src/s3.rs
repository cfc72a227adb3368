//! The s3 target: `cachier_object_store::ObjectStoreCore` on an S3 server through the front end,
//! against a raw `object_store` GET of the very object the backend wrote, through the same
//! store (the same HTTP client, connection pool, timeouts and signing).
//!
//! The server is the one `CACHIER_TEST_S3_URL` names (`cargo xtask bench s3` starts a
//! `moto_server` with a bucket, like the tests). Everything lives under a namespace unique to the
//! run; raw writes go to `bench-raw-{run}/`. Both are deleted at the end, also when a
//! measurement fails.

use std::sync::Arc;

use cachier_core::codec::{self, DEFAULT_DECODE_LIMIT};
use cachier_core::{Cachier, Function};
use cachier_object_store::{Config, ObjectStoreCore};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::compare;
use crate::report::Report;
use crate::suite::after_header;
use crate::suite::{
    BenchResult, Context, Ctx, Payload, check_hits_only, func, store_and_check, value_of,
};

const TARGET: &str = "s3";

/// The entry header of the object-store layout: magic, version and `stored_at`.
const ENTRY_HEADER_LEN: usize = 13;

/// Runs every s3 measurement, then deletes what it wrote.
pub async fn run(ctx: &Ctx, report: &mut Report) -> BenchResult<bool> {
    let url = std::env::var("CACHIER_TEST_S3_URL")
        .map_err(|_| "CACHIER_TEST_S3_URL is not set (cargo xtask bench s3 sets it)".to_owned())?;
    let mut config = Config::from_url(&url).ctx("S3 URL")?;
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        config = config.with_credentials("cachier-bench", "cachier-bench");
    }
    let core = Arc::new(ObjectStoreCore::open(config).ctx("opening the S3 store")?);
    let cache = Cachier::builder(core.clone())
        .namespace(format!("bench-{}", ctx.run_id))
        .ctx("namespace")?
        .strict(true)
        .build();
    let raw_dir = Path::from(format!("bench-raw-{}", ctx.run_id));
    let outcome = measure(ctx, &core, &cache, &raw_dir, report).await;
    let removed = cachier_core::Core::clear_namespace(&*core, cache.namespace()).await;
    let raw_removed = delete_under(core.store(), &raw_dir).await;
    match (removed, raw_removed) {
        (Ok(a), Ok(b)) => eprintln!("cachier-bench: s3: removed {a} entries and {b} raw objects"),
        (a, b) => eprintln!("cachier-bench: s3: cleanup incomplete: {a:?} {b:?}"),
    }
    outcome.map(|()| true)
}

async fn delete_under(store: &Arc<dyn ObjectStore>, dir: &Path) -> BenchResult<u64> {
    use futures_util::TryStreamExt;
    let listed: Vec<_> = store.list(Some(dir)).try_collect().await.ctx("list")?;
    for meta in &listed {
        store.delete(&meta.location).await.ctx("delete")?;
    }
    Ok(listed.len() as u64)
}

async fn raw_get(store: &Arc<dyn ObjectStore>, path: &Path) -> object_store::Result<bytes::Bytes> {
    store.get(path).await?.bytes().await
}

/// The object of `args` for `f`, checked to hold the stored value.
async fn checked_object(
    core: &ObjectStoreCore,
    f: &Function,
    args: u64,
    sealed: &[u8],
) -> BenchResult<Path> {
    let path = core.value_path(&f.key(&args).ctx("key")?);
    let stored = raw_get(core.store(), &path).await.ctx("raw GET")?;
    if stored.len() == ENTRY_HEADER_LEN + sealed.len() && stored[ENTRY_HEADER_LEN..] == *sealed {
        Ok(path)
    } else {
        Err(format!(
            "{path} does not hold the stored value (layout changed?)"
        ))
    }
}

async fn measure(
    ctx: &Ctx,
    core: &Arc<ObjectStoreCore>,
    cache: &Cachier,
    raw_dir: &Path,
    report: &mut Report,
) -> BenchResult<()> {
    for (size, label) in [(100, "100 B"), (64 << 10, "64 KiB")] {
        hit_case::<Vec<u8>>(ctx, core, cache, size, label, report).await?;
    }

    // Miss + store of 100 B.
    let f = cache.function(func("miss_store"));
    let value = value_of(100);
    let sealed = bytes::Bytes::from(codec::seal_value(&value).ctx("seal")?);
    let store = core.store().clone();
    let (mut n, mut m) = (0u64, 0u64);
    let series = compare!(ctx.plan, {
        "cachier call (miss, compute, store)" => {
            n += 1;
            let v = value.clone();
            f.call(&n, move || async move { v }).await
        },
        "raw PUT" => {
            m += 1;
            store
                .put(&raw_dir.clone().join(m.to_string()), PutPayload::from(sealed.clone()))
                .await
        },
    });
    let stats = f.stats();
    if stats.computations != n || stats.backend_errors != 0 {
        return Err(format!(
            "s3 miss+store: {n} calls but {} computations, {} backend errors",
            stats.computations, stats.backend_errors
        ));
    }
    report.add_comparison(
        TARGET,
        "miss + store 100 B",
        &series,
        &[],
        "cachier: GET value, PUT claim (If-None-Match), PUT value, DELETE claim",
    );
    Ok(())
}

/// A hit of a `size`-byte value of type `T`, against a raw GET of the same object.
async fn hit_case<T: Payload>(
    ctx: &Ctx,
    core: &Arc<ObjectStoreCore>,
    cache: &Cachier,
    size: usize,
    label: &str,
    report: &mut Report,
) -> BenchResult<()> {
    let f = cache.function(func(&format!("hit_{size}_{}", T::NAME)));
    let value = T::make(size);
    store_and_check(&f, 0, &value).await?;
    let sealed = codec::seal_value(&value).ctx("seal")?;
    let path = checked_object(core, &f, 0, &sealed).await?;
    let store = core.store().clone();
    let before = f.stats();
    let series = compare!(ctx.plan, {
        "cachier call" => f.call(&0u64, || async { T::default() }).await,
        "raw object_store GET" => raw_get(&store, &path).await,
        "raw GET + codec::open_value" => raw_get(&store, &path).await.map(|b| {
            codec::open_value::<T>(after_header(b, ENTRY_HEADER_LEN), DEFAULT_DECODE_LIMIT)
        }),
    });
    check_hits_only(&format!("s3 hit {label}"), &before, &f.stats())?;
    report.add_comparison(
        TARGET,
        &format!("hit {label} {}", T::NAME),
        &series,
        &[(1, 1.2)],
        "the same stored object, the same object_store client",
    );
    Ok(())
}
