//! The redis:cluster target: `cachier_redis::RedisCore` on a Redis Cluster through the front
//! end, against a raw `GET` of the very entry the backend wrote, with the same `redis` crate and
//! connection type (its async cluster connection with the same timeouts and retry waits).
//!
//! The cluster is `CACHIER_TEST_REDIS_CLUSTER_URL` (`cargo xtask bench` starts a throwaway one
//! when it is not set). Everything lives under a namespace unique to the run, removed at the
//! end (on every primary), also when a measurement fails.

use std::sync::Arc;

use cachier_core::codec::{self, DEFAULT_DECODE_LIMIT};
use cachier_core::{Cachier, Core};
use cachier_redis::{Config, RedisCore};
use redis::cluster_async::ClusterConnection;

use crate::compare;
use crate::redis::{ENTRY_HEADER_LEN, entry_name};
use crate::report::Report;
use crate::suite::after_header;
use crate::suite::{
    BenchResult, Context, Ctx, HIT_SIZES, check_hits_only, func, stampede, store_and_check,
    value_of,
};

const TARGET: &str = "redis:cluster";

/// The cluster to measure against.
fn url() -> BenchResult<String> {
    std::env::var("CACHIER_TEST_REDIS_CLUSTER_URL").map_err(|_| {
        "CACHIER_TEST_REDIS_CLUSTER_URL is not set (cargo xtask bench starts a cluster)".to_owned()
    })
}

/// The seed nodes of a `redis+cluster://host:port,host:port` URL, as `redis://` URLs.
fn seeds(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['/', '?']).next().unwrap_or_default();
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, rest),
    };
    hosts
        .split(',')
        .map(|host| match credentials {
            Some(c) => format!("redis://{c}@{host}"),
            None => format!("redis://{host}"),
        })
        .collect()
}

/// Runs the cluster measurements, then deletes what it wrote.
pub async fn run(ctx: &Ctx, report: &mut Report) -> BenchResult<bool> {
    let url = url()?;
    let config = Config::from_url(&url).ctx("redis cluster URL")?;
    let core = Arc::new(
        RedisCore::connect(config.clone())
            .await
            .ctx("connecting to the Redis Cluster")?,
    );
    // The raw client: the same crate and cluster connection, with the backend's timeouts.
    let raw = redis::cluster::ClusterClientBuilder::new(seeds(&url))
        .connection_timeout(config.connect_timeout())
        .response_timeout(config.response_timeout())
        .retries(5)
        .min_retry_wait(10)
        .max_retry_wait(200)
        .build()
        .ctx("raw cluster client")?
        .get_async_connection()
        .await
        .ctx("raw cluster connection")?;
    let cache = Cachier::builder(core.clone())
        .namespace(format!("bench-{}", ctx.run_id))
        .ctx("namespace")?
        .strict(true)
        .build();
    let outcome = measure(ctx, &cache, raw, report).await;
    match core.clear_namespace(cache.namespace()).await {
        Ok(n) => eprintln!("cachier-bench: redis:cluster: removed {n} entries"),
        Err(e) => eprintln!("cachier-bench: redis:cluster: cleanup incomplete: {e}"),
    }
    outcome
}

async fn get(con: &mut ClusterConnection, name: &str) -> redis::RedisResult<Option<Vec<u8>>> {
    redis::cmd("GET").arg(name).query_async(con).await
}

async fn measure(
    ctx: &Ctx,
    cache: &Cachier,
    mut con: ClusterConnection,
    report: &mut Report,
) -> BenchResult<bool> {
    // Hits of 100 B, 64 KiB and 8 MiB (`Vec<u8>`), against a raw cluster GET of the entry.
    for (size, label) in HIT_SIZES {
        let f = cache.function(func(&format!("hit_{size}")));
        let value = value_of(size);
        store_and_check(&f, 0, &value).await?;
        let sealed = codec::seal_value(&value).ctx("seal")?;
        let name = entry_name(&f.key(&0u64).ctx("key")?);
        match get(&mut con, &name).await.ctx("raw GET")? {
            Some(b) if b.len() == ENTRY_HEADER_LEN + sealed.len() => {}
            _ => {
                return Err(format!(
                    "{name} does not hold the stored value (layout changed?)"
                ));
            }
        }
        let before = f.stats();
        let series = compare!(ctx.plan, {
            "cachier call" => f.call(&0u64, || async { Vec::<u8>::new() }).await,
            "raw cluster GET" => get(&mut con, &name).await,
            "raw cluster GET + codec::open_value" => get(&mut con, &name).await.map(|b| {
                b.map(|b| {
                    codec::open_value::<Vec<u8>>(after_header(b, ENTRY_HEADER_LEN), DEFAULT_DECODE_LIMIT)
                })
            }),
        });
        check_hits_only(&format!("redis:cluster hit {label}"), &before, &f.stats())?;
        report.add_comparison(
            TARGET,
            &format!("hit {label} Vec<u8>"),
            &series,
            &[(1, 1.2)],
            "the same stored bytes; one GET of the entry each",
        );
    }
    stampede(TARGET, cache, if ctx.quick { 3 } else { 10 }, report).await
}
