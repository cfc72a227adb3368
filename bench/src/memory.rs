//! The memory target: `cachier_memory::MemoryCore` through the front end, against a `HashMap`
//! get + decode with the same codec, a `moka` sync cache hit and a `cached` store hit of the same
//! value. The `cached` store is used the way its memoization macros use it: an `UnboundCache`
//! behind a mutex, the value cloned out on a hit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cached::Cached;
use cachier_core::codec::{self, DEFAULT_DECODE_LIMIT};
use cachier_core::{Bytes, Cachier, Core, Key, Timestamp};
use cachier_memory::MemoryCore;

use crate::compare;
use crate::report::Report;
use crate::suite::{
    BenchResult, Context, Ctx, HIT_SIZES, Payload, SCALE_PROBES, THROUGHPUT_TASKS, add_throughput,
    check_hits_only, func, probes, stampede, store_and_check, value_of,
};
use crate::throughput;

const TARGET: &str = "memory";

fn cache_over(core: Arc<MemoryCore>, ctx: &Ctx) -> BenchResult<Cachier> {
    Ok(Cachier::builder(core)
        .namespace(format!("bench-{}", ctx.run_id))
        .ctx("namespace")?
        .strict(true)
        .build())
}

fn moka_with(entries: impl Iterator<Item = (u64, Vec<u8>)>) -> moka::sync::Cache<u64, Vec<u8>> {
    let cache = moka::sync::Cache::new(u64::MAX);
    for (k, v) in entries {
        cache.insert(k, v);
    }
    cache
}

/// Runs every memory measurement.
pub async fn run(ctx: &Ctx, report: &mut Report) -> BenchResult<bool> {
    let plan = ctx.plan;

    // Hits of 100 B, 64 KiB and 8 MiB, as Vec<u8> and as String.
    for (size, label) in HIT_SIZES {
        hit_case::<Vec<u8>>(ctx, size, label, report).await?;
    }
    for (size, label) in HIT_SIZES {
        hit_case::<String>(ctx, size, label, report).await?;
    }

    // Miss + store of 100 B: a new key every call.
    {
        let cache = cache_over(Arc::new(MemoryCore::new()), ctx)?;
        let f = cache.function(func("miss_store"));
        let value = value_of(100);
        let moka = moka::sync::Cache::<u64, Vec<u8>>::new(u64::MAX);
        let mut map: HashMap<u64, Vec<u8>> = HashMap::new();
        let (mut n, mut m, mut h) = (0u64, 0u64, 0u64);
        let series = compare!(plan, {
            "cachier call (miss, compute, store)" => {
                n += 1;
                let v = value.clone();
                f.call(&n, move || async move { v }).await
            },
            "moka insert" => { m += 1; moka.insert(m, value.clone()) },
            "HashMap insert of codec::seal" => {
                h += 1;
                map.insert(h, codec::seal_value(&value).unwrap_or_default())
            },
        });
        let stats = f.stats();
        if stats.computations != n || stats.backend_errors != 0 {
            return Err(format!(
                "memory miss+store: {n} calls but {} computations, {} backend errors",
                stats.computations, stats.backend_errors
            ));
        }
        report.add_comparison(
            TARGET,
            "miss + store 100 B",
            &series,
            &[],
            "compute returns a clone of a ready value",
        );
    }

    // 64 callers on a cold key.
    let stampede_ok = {
        let cache = cache_over(Arc::new(MemoryCore::new()), ctx)?;
        stampede(TARGET, &cache, if ctx.quick { 3 } else { 10 }, report).await?
    };

    // Hit throughput with 1, 8 and 64 tasks.
    {
        let cache = cache_over(Arc::new(MemoryCore::new()), ctx)?;
        let f = cache.function(func("throughput"));
        let value = value_of(100);
        store_and_check(&f, 0, &value).await?;
        let moka = moka_with(std::iter::once((0u64, value.clone())));
        for tasks in THROUGHPUT_TASKS {
            let before = f.stats();
            let (mut ours, mut raw) = (Vec::new(), Vec::new());
            for _ in 0..plan.throughput_rounds {
                ours.push(throughput!(tasks, plan.throughput_time, f, |f| f
                    .call(&0u64, || async { Vec::<u8>::new() })
                    .await));
                raw.push(throughput!(tasks, plan.throughput_time, moka, |m| m.get(&0u64)));
            }
            check_hits_only("memory throughput", &before, &f.stats())?;
            add_throughput(report, TARGET, tasks, &ours, &[("moka get", raw)]);
        }
    }

    // Hit cost with many entries stored.
    for n in ctx.scale_counts(true) {
        let core = Arc::new(MemoryCore::new());
        let cache = cache_over(core.clone(), ctx)?;
        let f = cache.function(func("scale"));
        let value = value_of(100);
        let sealed = codec::seal_value(&value).ctx("seal")?;
        let now = Timestamp::now();
        let mut map: HashMap<u64, Vec<u8>> = HashMap::with_capacity(n);
        for i in 0..n as u64 {
            let key: Key = f.key(&i).ctx("key")?;
            core.set(&key, Bytes::from(sealed.clone()), now)
                .await
                .ctx("populate")?;
            map.insert(i, sealed.clone());
        }
        let moka = moka_with((0..n as u64).map(|i| (i, value.clone())));
        moka.run_pending_tasks();
        let probe = probes(n, SCALE_PROBES);
        let (mut a, mut b, mut c) = (0usize, 0usize, 0usize);
        let before = f.stats();
        let series = compare!(plan, {
            "cachier call" => {
                a = (a + 1) % probe.len();
                f.call(&probe[a], || async { Vec::<u8>::new() }).await
            },
            "HashMap get + codec::open_value" => {
                b = (b + 1) % probe.len();
                codec::open_value::<Vec<u8>>(bytes::Bytes::copy_from_slice(&map[&probe[b]]), DEFAULT_DECODE_LIMIT)
            },
            "moka get" => { c = (c + 1) % probe.len(); moka.get(&probe[c]) },
        });
        check_hits_only("memory scale", &before, &f.stats())?;
        report.add_comparison(
            TARGET,
            &format!("hit 100 B, {} entries", count_label(n)),
            &series,
            &[(2, 1.5)],
            &format!("lookups cycle over {} random stored keys", probe.len()),
        );
    }
    Ok(stampede_ok)
}

/// A hit of a `size`-byte value of type `T`, against the same value in a `HashMap` (decoded
/// with the same codec), a `moka` cache and a `cached` store.
async fn hit_case<T: Payload>(
    ctx: &Ctx,
    size: usize,
    label: &str,
    report: &mut Report,
) -> BenchResult<()> {
    let core = Arc::new(MemoryCore::new());
    let cache = cache_over(core, ctx)?;
    let f = cache.function(func(&format!("hit_{size}")));
    let value = T::make(size);
    store_and_check(&f, 0, &value).await?;
    let sealed = codec::seal_value(&value).ctx("seal")?;
    let map: HashMap<u64, Vec<u8>> = HashMap::from([(0u64, sealed)]);
    let moka = moka::sync::Cache::new(u64::MAX);
    moka.insert(0u64, value.clone());
    let cached = Mutex::new(cached::UnboundCache::<u64, T>::new());
    cached
        .lock()
        .map_err(|_| "poisoned")?
        .cache_set(0, value.clone());
    let before = f.stats();
    let series = compare!(ctx.plan, {
        "cachier call" => f.call(&0u64, || async { T::default() }).await,
        "HashMap get + codec::open_value" =>
            codec::open_value::<T>(bytes::Bytes::copy_from_slice(&map[&0u64]), DEFAULT_DECODE_LIMIT),
        "moka get" => moka.get(&0u64),
        "cached get" => cached.lock().ok().and_then(|mut c| c.cache_get(&0u64).cloned()),
    });
    check_hits_only(&format!("memory hit {label}"), &before, &f.stats())?;
    report.add_comparison(
        TARGET,
        &format!("hit {label} {}", T::NAME),
        &series,
        &[(2, 1.5)],
        "key: a u64 argument",
    );
    if size == 100 && T::NAME == "Vec<u8>" {
        breakdown(ctx, &cache, &f, &map, report).await?;
        with_recorder(ctx, &f, report).await?;
    }
    Ok(())
}

/// Where the time of a 100 B hit goes. A hit is served by the near cache of decoded values:
/// it encodes the arguments, looks them up and clones the value, and does none of the parts
/// below, which are what a near miss that hits the store pays (key hash, store read, decode),
/// timed alone in the same rounds as the whole call.
async fn breakdown(
    ctx: &Ctx,
    cache: &Cachier,
    f: &cachier_core::Function,
    map: &HashMap<u64, Vec<u8>>,
    report: &mut Report,
) -> BenchResult<()> {
    let core = cache.core().clone();
    let ns = cache.namespace().clone();
    let id = f.id().clone();
    let key = f.key(&0u64).ctx("key")?;
    let sealed = map[&0u64].clone();
    let entry = core.get(&key).await.ctx("get")?;
    let before = f.stats();
    let series = compare!(ctx.plan, {
        "cachier call" => f.call(&0u64, || async { Vec::<u8>::new() }).await,
        "Key::for_args (bincode + blake3)" => Key::for_args(&ns, &id, &0u64),
        "core.get (dyn Core, async)" => core.get(&key).await,
        "codec::open_value (crc32 + copy)" =>
            codec::open_value::<Vec<u8>>(bytes::Bytes::copy_from_slice(&sealed), DEFAULT_DECODE_LIMIT),
        "drop of Key + Entry" => { drop(std::hint::black_box(key.clone())); drop(std::hint::black_box(entry.clone())) },
        "Instant::now + elapsed" => std::time::Instant::now().elapsed(),
    });
    check_hits_only("memory breakdown", &before, &f.stats())?;
    report.add_comparison(
        TARGET,
        "hit 100 B: where the time goes",
        &series,
        &[],
        "a hit is a near-cache lookup; the other rows are what a near miss adds (key hash, store read, decode), each timed alone; ratio = call / part",
    );
    Ok(())
}

/// A 100 B hit with a `metrics` recorder installed (Prometheus', with cachier's duration
/// buckets, as `examples/prometheus.rs` installs it), against the same hit with none and a
/// `moka` hit. The recorder is installed for this thread only, and only inside its variant, so
/// every other row runs with no recorder, as main's did.
async fn with_recorder(
    ctx: &Ctx,
    f: &cachier_core::Function,
    report: &mut Report,
) -> BenchResult<()> {
    let moka = moka_with(std::iter::once((0u64, value_of(100))));
    use cachier_core::telemetry::{CALL_DURATION, CALL_DURATION_BUCKETS};
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(CALL_DURATION.to_owned()),
            CALL_DURATION_BUCKETS,
        )
        .map_err(|e| format!("buckets: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    let before = f.stats();
    let series = compare!(ctx.plan, {
        "cachier call, Prometheus recorder" => {
            let _recorder = metrics::set_default_local_recorder(&recorder);
            f.call(&0u64, || async { Vec::<u8>::new() }).await
        },
        "cachier call, no recorder" => f.call(&0u64, || async { Vec::<u8>::new() }).await,
        "moka get" => moka.get(&0u64),
    });
    let hits = f.stats().hits - before.hits;
    check_hits_only("memory hit with a recorder", &before, &f.stats())?;
    // The recorder saw the hits of its own variant: some, and fewer than all.
    let scraped = handle.render();
    let counted = scraped
        .lines()
        .find(|l| l.starts_with("cachier_cache_hits_total{"))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .ok_or("the recorder counted no hit")?;
    if counted == 0 || counted >= hits {
        return Err(format!(
            "the recorder counted {counted} of {hits} hits; expected those of its variant"
        ));
    }
    report.add_comparison(
        TARGET,
        "hit 100 B Vec<u8>: metrics recorder",
        &series,
        &[],
        "ratio to 'no recorder' = the recorder's cost; installed for its variant only",
    );
    Ok(())
}

/// `1e3`, `1e5`, ... for round counts, the number otherwise.
pub fn count_label(n: usize) -> String {
    let exp = (n as f64).log10();
    if exp.fract() == 0.0 {
        format!("1e{}", exp as u32)
    } else {
        n.to_string()
    }
}
