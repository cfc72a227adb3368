//! Prometheus metrics of a cached function, served on a local port.
//!
//! ```text
//! cargo run --example prometheus                 # serves http://127.0.0.1:9898/metrics
//! cargo run --example prometheus -- --port 9100 --rounds 50
//! curl -s http://127.0.0.1:9898/metrics | grep cachier_
//! ```
//!
//! A function cached in memory is called in a loop, twice a second, over ten arguments: the
//! first round misses, later ones hit, and since values go stale after five seconds and
//! `next_time` is on, some calls are stale hits refreshed in the background. Each round also
//! asks the backend for the namespace's size ([`Cachier::usage`]), which sets the
//! `cachier_entries` and `cachier_stored_bytes` gauges. Every metric is labelled by `function`,
//! `namespace` and `backend`; `cachier_call_duration_seconds` is a histogram by `outcome`, with
//! cachier's [`CALL_DURATION_BUCKETS`]. Without `--rounds` it runs until interrupted.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cachier_core::telemetry::{CALL_DURATION, CALL_DURATION_BUCKETS};
use cachier_core::{Cachier, FuncId, Function};
use cachier_memory::MemoryCore;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// The port served when `--port` is not given.
pub const DEFAULT_PORT: u16 = 9898;

/// Installs the Prometheus recorder process-wide and serves its text format on
/// `127.0.0.1:port` (any path), from a task of the current Tokio runtime. Install it before
/// building caches, so their metrics get their descriptions (`# HELP` lines).
pub fn install_exporter(port: u16) -> Result<SocketAddr, BuildError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full(CALL_DURATION.to_owned()),
            CALL_DURATION_BUCKETS,
        )?
        .install()?;
    Ok(addr)
}

/// The cache of the example: in memory, namespace `prometheus-example`, values stale after
/// five seconds and refreshed in the background.
pub fn cache() -> Cachier {
    Cachier::builder(Arc::new(MemoryCore::new()))
        .namespace("prometheus-example")
        .expect("a valid namespace")
        .stale_after(Duration::from_secs(5))
        .next_time(true)
        .build()
}

/// The handle of the cached function, `prometheus::square` (its `function` label).
pub fn square_function(cache: &Cachier) -> Function {
    cache.function(FuncId::new("prometheus::square").expect("a valid function id"))
}

/// The cached function: a slow square.
pub async fn square(f: &Function, n: u64) -> cachier_core::Result<u64> {
    f.call(&n, move || async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        n * n
    })
    .await
}

/// One round: the ten arguments once each, then the usage gauges.
pub async fn round(cache: &Cachier, f: &Function) -> cachier_core::Result<()> {
    for n in 0..10 {
        square(f, n).await?;
    }
    cache.usage().await?;
    Ok(())
}

#[allow(dead_code)] // the scrape test includes this file for the functions above
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = DEFAULT_PORT;
    let mut rounds: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value.as_deref().map(str::parse::<u64>)) {
            ("--port", Some(Ok(p))) => port = u16::try_from(p)?,
            ("--rounds", Some(Ok(r))) => rounds = Some(r),
            _ => {
                return Err(
                    format!("usage: prometheus [--port PORT] [--rounds N] (got {arg:?})").into(),
                );
            }
        }
    }
    let addr = install_exporter(port)?;
    println!("serving metrics on http://{addr}/metrics");
    let cache = cache();
    let f = square_function(&cache);
    let mut done = 0u64;
    while rounds.is_none_or(|r| done < r) {
        round(&cache, &f).await?;
        done += 1;
        let s = f.stats();
        println!(
            "round {done}: {} hits, {} misses, {} stale hits",
            s.hits, s.misses, s.stale_hits
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
