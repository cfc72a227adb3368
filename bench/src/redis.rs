//! The redis target: `cachier_redis::RedisCore` through the front end, against a raw `GET` of
//! the very entry the backend wrote, with the same `redis` crate and connection type (a
//! multiplexed `ConnectionManager` with the same timeouts).
//!
//! Everything lives under a namespace unique to the run (`bench-{pid}-{random}`); raw writes go
//! to `bench-raw-{run}:*`. Both are deleted at the end, also when a measurement fails.

use std::sync::Arc;
use std::time::Duration;

use cachier_core::codec::{self, DEFAULT_DECODE_LIMIT};
use cachier_core::{Cachier, Core, Function, Key, NearCache};
use cachier_redis::{Config, RedisCore};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::compare;
use crate::memory::count_label;
use crate::report::Report;
use crate::suite::after_header;
use crate::suite::{
    BenchResult, Context, Ctx, HIT_SIZES, Payload, SCALE_PROBES, THROUGHPUT_TASKS, add_throughput,
    check_hits_only, func, populate, probes, stampede, store_and_check, value_of,
};
use crate::throughput;

const TARGET: &str = "redis";

/// The entry framing of the redis backend's layout: a version byte and `stored_at`.
pub(crate) const ENTRY_HEADER_LEN: usize = 9;

/// The URL of the server to measure against.
fn url() -> String {
    std::env::var("CACHIER_TEST_REDIS_URL").unwrap_or_else(|_| cachier_redis::DEFAULT_URL.into())
}

/// The name of the entry of `key`, as the `cachier-redis` docs lay it out:
/// `{namespace:escaped func:hash}`.
pub(crate) fn entry_name(key: &Key) -> String {
    let mut func = String::new();
    for c in key.func.as_str().chars() {
        match c {
            '%' => func.push_str("%25"),
            ':' => func.push_str("%3A"),
            '{' => func.push_str("%7B"),
            '}' => func.push_str("%7D"),
            c => func.push(c),
        }
    }
    format!("{{{}:{}:{}}}", key.namespace, func, key.hash.to_hex())
}

/// Runs every redis measurement, then deletes what it wrote.
pub async fn run(ctx: &Ctx, report: &mut Report) -> BenchResult<bool> {
    let config = Config::from_url(&url()).ctx("redis URL")?;
    let core = Arc::new(
        RedisCore::connect(config.clone())
            .await
            .ctx("connecting to Redis (set CACHIER_TEST_REDIS_URL)")?,
    );
    // The raw client: the same crate, connection type and timeouts as the backend.
    let raw = ConnectionManager::new_with_config(
        config
            .client()
            .ok_or("the redis target needs a single-server URL")?
            .clone(),
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout()))
            .set_response_timeout(Some(config.response_timeout())),
    )
    .await
    .ctx("raw connection")?;
    let cache = Cachier::builder(core.clone())
        .namespace(format!("bench-{}", ctx.run_id))
        .ctx("namespace")?
        .strict(true)
        .build();
    let raw_prefix = format!("bench-raw-{}", ctx.run_id);
    let outcome = measure(ctx, &core, &cache, raw.clone(), &raw_prefix, report).await;
    // Clean up whatever happened.
    let removed = core.clear_namespace(cache.namespace()).await;
    let raw_removed = unlink_matching(raw, &format!("{raw_prefix}:*")).await;
    match (removed, raw_removed) {
        (Ok(a), Ok(b)) => eprintln!("cachier-bench: redis: removed {a} entries and {b} raw keys"),
        (a, b) => eprintln!("cachier-bench: redis: cleanup incomplete: {a:?} {b:?}"),
    }
    outcome
}

async fn unlink_matching(mut con: ConnectionManager, pattern: &str) -> BenchResult<u64> {
    let mut cursor = 0u64;
    let mut removed = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .ctx("SCAN")?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut con)
                .await
                .ctx("UNLINK")?;
            removed += n;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

async fn get(con: &mut ConnectionManager, name: &str) -> redis::RedisResult<Option<Vec<u8>>> {
    redis::cmd("GET").arg(name).query_async(con).await
}

/// The entry name of `args` for `f`, checked to hold the stored value.
async fn checked_entry_name(
    con: &mut ConnectionManager,
    f: &Function,
    args: u64,
    sealed: &[u8],
) -> BenchResult<String> {
    let name = entry_name(&f.key(&args).ctx("key")?);
    let stored = get(con, &name).await.ctx("raw GET")?;
    match stored {
        Some(b)
            if b.len() == ENTRY_HEADER_LEN + sealed.len() && b[ENTRY_HEADER_LEN..] == *sealed =>
        {
            Ok(name)
        }
        _ => Err(format!(
            "{name} does not hold the stored value (layout changed?)"
        )),
    }
}

async fn measure(
    ctx: &Ctx,
    core: &Arc<RedisCore>,
    cache: &Cachier,
    raw: ConnectionManager,
    raw_prefix: &str,
    report: &mut Report,
) -> BenchResult<bool> {
    let plan = ctx.plan;
    let mut con = raw.clone();

    // Hits of 100 B, 64 KiB and 8 MiB, as Vec<u8> and as String.
    for (size, label) in HIT_SIZES {
        hit_case::<Vec<u8>>(ctx, core, cache, &mut con, size, label, report).await?;
    }
    for (size, label) in HIT_SIZES {
        hit_case::<String>(ctx, core, cache, &mut con, size, label, report).await?;
    }

    // Miss + store of 100 B.
    {
        let f = cache.function(func("miss_store"));
        let value = value_of(100);
        let sealed = codec::seal_value(&value).ctx("seal")?;
        let (mut n, mut m) = (0u64, 0u64);
        let series = compare!(plan, {
            "cachier call (miss, compute, store)" => {
                n += 1;
                let v = value.clone();
                f.call(&n, move || async move { v }).await
            },
            "raw SET" => {
                m += 1;
                redis::cmd("SET")
                    .arg(format!("{raw_prefix}:{m}"))
                    .arg(&sealed)
                    .query_async::<()>(&mut con)
                    .await
            },
        });
        let stats = f.stats();
        if stats.computations != n || stats.backend_errors != 0 {
            return Err(format!(
                "redis miss+store: {n} calls but {} computations, {} backend errors",
                stats.computations, stats.backend_errors
            ));
        }
        report.add_comparison(
            TARGET,
            "miss + store 100 B",
            &series,
            &[],
            "cachier: MGET, claim script, MULTI(SET, DEL, PUBLISH)",
        );
    }

    let stampede_ok = stampede(TARGET, cache, if ctx.quick { 3 } else { 10 }, report).await?;

    // Hit throughput.
    {
        let f = cache.function(func("throughput"));
        let value = value_of(100);
        store_and_check(&f, 0, &value).await?;
        let sealed = codec::seal_value(&value).ctx("seal")?;
        let name = Arc::new(checked_entry_name(&mut con, &f, 0, &sealed).await?);
        let state = (raw.clone(), name);
        for tasks in THROUGHPUT_TASKS {
            let before = f.stats();
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..plan.throughput_rounds {
                ours.push(throughput!(tasks, plan.throughput_time, f, |f| f
                    .call(&0u64, || async { Vec::<u8>::new() })
                    .await));
                theirs.push(throughput!(tasks, plan.throughput_time, state, |s| {
                    let (mut con, name) = s.clone();
                    get(&mut con, &name).await
                }));
            }
            check_hits_only("redis throughput", &before, &f.stats())?;
            add_throughput(report, TARGET, tasks, &ours, &[("raw GET", theirs)]);
            if tasks > 1
                && let Some(row) = report.rows.last_mut()
            {
                // The hit-path goal: under concurrency, at most 1.2x slower than raw GET.
                row.goal = Some(1.2);
            }
        }
    }

    near_hit(ctx, core, cache, report).await?;

    // Hit cost with many entries stored.
    for n in ctx.scale_counts(false) {
        let f = cache.function(func(&format!("scale_{n}")));
        let value = value_of(100);
        let sealed = codec::seal_value(&value).ctx("seal")?;
        let keys: Vec<Key> = (0..n as u64)
            .map(|i| f.key(&i))
            .collect::<Result<_, _>>()
            .ctx("keys")?;
        let t0 = std::time::Instant::now();
        let dyn_core: Arc<dyn Core> = core.clone();
        populate(dyn_core, keys, &sealed, 32).await?;
        eprintln!(
            "cachier-bench: redis: {n} entries stored in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let probe = probes(n, SCALE_PROBES);
        checked_entry_name(&mut con, &f, probe[0], &sealed).await?;
        let names: Vec<String> = probe
            .iter()
            .map(|i| f.key(i).map(|k| entry_name(&k)))
            .collect::<Result<_, _>>()
            .ctx("names")?;
        let (mut a, mut b) = (0usize, 0usize);
        let before = f.stats();
        let series = compare!(plan, {
            "cachier call" => {
                a = (a + 1) % probe.len();
                f.call(&probe[a], || async { Vec::<u8>::new() }).await
            },
            "raw GET" => { b = (b + 1) % names.len(); get(&mut con, &names[b]).await },
        });
        check_hits_only("redis scale", &before, &f.stats())?;
        report.add_comparison(
            TARGET,
            &format!("hit 100 B, {} entries", count_label(n)),
            &series,
            &[(1, 1.2)],
            &format!("lookups cycle over {} random stored keys", probe.len()),
        );
        f.clear().await.ctx("clear")?;
    }
    // Leave the server time to publish nothing further before cleanup.
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(stampede_ok)
}

/// A 100 B hit with the near cache on (decoded values kept in process, kept coherent by
/// Redis client-side tracking), against a `moka` get of the same value and against the same
/// hit without the near cache.
async fn near_hit(
    ctx: &Ctx,
    core: &Arc<RedisCore>,
    cache: &Cachier,
    report: &mut Report,
) -> BenchResult<()> {
    let near_cache = Cachier::builder(core.clone())
        .with_namespace(cache.namespace().clone())
        .near_cache(NearCache::new())
        .strict(true)
        .build();
    let name = func("near_hit");
    let near = near_cache.function(name.clone());
    let far = cache.function(name);
    let value = value_of(100);
    store_and_check(&far, 0, &value).await?;
    // The near copy is kept once the tracking connection is up: call until a hit is served
    // without a round trip (or give up after 5 s; the row then shows what happened).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let started = std::time::Instant::now();
        near.call(&0u64, || async { Vec::<u8>::new() })
            .await
            .ctx("near hit")?;
        if started.elapsed() < Duration::from_micros(20) || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moka = moka::sync::Cache::<u64, Vec<u8>>::new(u64::MAX);
    moka.insert(0, value.clone());
    let (near_before, far_before) = (near.stats(), far.stats());
    let series = compare!(ctx.plan, {
        "cachier call, near cache" => near.call(&0u64, || async { Vec::<u8>::new() }).await,
        "moka get" => moka.get(&0u64),
        "cachier call, no near cache" => far.call(&0u64, || async { Vec::<u8>::new() }).await,
    });
    check_hits_only("redis near hit", &near_before, &near.stats())?;
    check_hits_only("redis far hit", &far_before, &far.stats())?;
    let (near_series, moka_series, far_series) =
        (series[0].clone(), series[1].clone(), series[2].clone());
    report.add_comparison(
        TARGET,
        "hit 100 B Vec<u8>, near cache",
        &[near_series.clone(), moka_series],
        &[(1, 2.0)],
        "near copies dropped on Redis invalidation pushes (CLIENT TRACKING BCAST)",
    );
    report.add_comparison(
        TARGET,
        "hit 100 B Vec<u8>: what the near cache saves",
        &[far_series, near_series],
        &[],
        "ratio = the Redis hit (one GET) / the near hit",
    );
    Ok(())
}

/// A hit of a `size`-byte value of type `T`, against a raw `GET` of the same entry.
async fn hit_case<T: Payload>(
    ctx: &Ctx,
    core: &Arc<RedisCore>,
    cache: &Cachier,
    con: &mut ConnectionManager,
    size: usize,
    label: &str,
    report: &mut Report,
) -> BenchResult<()> {
    let f = cache.function(func(&format!("hit_{size}_{}", T::NAME)));
    let value = T::make(size);
    store_and_check(&f, 0, &value).await?;
    let sealed = codec::seal_value(&value).ctx("seal")?;
    let name = checked_entry_name(con, &f, 0, &sealed).await?;
    let before = f.stats();
    let series = compare!(ctx.plan, {
        "cachier call" => f.call(&0u64, || async { T::default() }).await,
        "raw GET" => get(con, &name).await,
        "raw GET + codec::open_value" => get(con, &name).await.map(|b| {
            b.map(|b| codec::open_value::<T>(after_header(b, ENTRY_HEADER_LEN), DEFAULT_DECODE_LIMIT))
        }),
    });
    check_hits_only(&format!("redis hit {label}"), &before, &f.stats())?;
    report.add_comparison(
        TARGET,
        &format!("hit {label} {}", T::NAME),
        &series,
        &[(1, 1.2)],
        "the same stored bytes",
    );
    if size == 100 && T::NAME == "Vec<u8>" {
        breakdown(ctx, core, &f, con, &name, &sealed, report).await?;
    }
    Ok(())
}

/// Where the time of a 100 B Redis hit goes.
async fn breakdown(
    ctx: &Ctx,
    core: &Arc<RedisCore>,
    f: &Function,
    con: &mut ConnectionManager,
    name: &str,
    sealed: &[u8],
    report: &mut Report,
) -> BenchResult<()> {
    let key = f.key(&0u64).ctx("key")?;
    let dyn_core: Arc<dyn Core> = core.clone();
    let claim = format!("{name}:claim");
    let before = f.stats();
    let series = compare!(ctx.plan, {
        "cachier call" => f.call(&0u64, || async { Vec::<u8>::new() }).await,
        "core.get_value (GET entry)" => dyn_core.get_value(&key).await,
        "core.get (MGET entry claim)" => dyn_core.get(&key).await,
        "raw MGET entry claim" => redis::cmd("MGET")
            .arg(name)
            .arg(&claim)
            .query_async::<(Option<Vec<u8>>, Option<Vec<u8>>)>(&mut *con)
            .await,
        "raw GET" => get(con, name).await,
        "raw PING" => redis::cmd("PING").query_async::<String>(&mut *con).await,
        "codec::open_value (crc32 + copy)" =>
            codec::open_value::<Vec<u8>>(bytes::Bytes::copy_from_slice(sealed), DEFAULT_DECODE_LIMIT),
    });
    check_hits_only("redis breakdown", &before, &f.stats())?;
    report.add_comparison(
        TARGET,
        "hit 100 B: where the time goes",
        &series,
        &[],
        "each part timed alone; ratio = call / part",
    );
    Ok(())
}
