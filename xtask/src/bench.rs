//! `cargo xtask bench [TARGET...] [--quick]`: runs the benchmark package (`bench/`) in release
//! mode. When the Redis target is selected, Redis is found or started like for the tests and its
//! URL handed over in `CACHIER_TEST_REDIS_URL`, and likewise S3 (a `moto_server` with a bucket)
//! in `CACHIER_TEST_S3_URL`; a throwaway server is stopped afterwards. When
//! the redis:cluster target is selected (or none is), a Redis Cluster is found or started the
//! same way (`CACHIER_TEST_REDIS_CLUSTER_URL`, else a throwaway one) and stopped afterwards. When
//! the plugin target is selected, the example plugin is built in release mode first and its
//! directory handed over in `CACHIER_BENCH_PLUGIN_DIR`.

use crate::services::{self, Policy, ServiceKind};
use crate::workspace;

/// Runs the benchmarks; `Ok(true)` when they ran and passed their own checks.
pub fn bench(args: &[String]) -> Result<bool, String> {
    let targets: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let wants_plugin = targets.is_empty() || targets.iter().any(|t| t.as_str() == "plugin");
    let plugin = if wants_plugin {
        Some(crate::plugin::build_bench_library()?)
    } else {
        None
    };
    let wants_redis = targets.is_empty() || targets.iter().any(|t| t.as_str() == "redis");
    let redis = if wants_redis {
        let policy = Policy { may_start: true };
        Some(services::resolve(ServiceKind::Redis, policy)?)
    } else {
        None
    };
    let wants_s3 = targets.is_empty() || targets.iter().any(|t| t.as_str() == "s3");
    let s3 = if wants_s3 {
        let policy = Policy { may_start: true };
        Some(services::resolve(ServiceKind::S3, policy)?)
    } else {
        None
    };
    let wants_cluster = targets.is_empty() || targets.iter().any(|t| t.as_str() == "redis:cluster");
    let cluster = if wants_cluster {
        let policy = Policy { may_start: true };
        Some(services::resolve(ServiceKind::RedisCluster, policy)?)
    } else {
        None
    };
    let mut cargo = workspace::cargo();
    cargo.args(["run", "--release", "--package", "cachier-bench", "--"]);
    cargo.args(args);
    if let Some((name, dir)) = &plugin {
        cargo.env(name, dir);
    }
    if let Some(redis) = &redis {
        println!("{}", redis.describe());
        cargo.env(ServiceKind::Redis.env_var(), &redis.url);
    }
    if let Some(s3) = &s3 {
        println!("{}", s3.describe());
        cargo.env(ServiceKind::S3.env_var(), &s3.url);
    }
    if let Some(cluster) = &cluster {
        println!("{}", cluster.describe());
        cargo.env(ServiceKind::RedisCluster.env_var(), &cluster.url);
    }
    let status = cargo
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if let Some(redis) = redis {
        redis.stop()?;
    }
    if let Some(s3) = s3 {
        s3.stop()?;
    }
    if let Some(cluster) = cluster {
        cluster.stop()?;
    }
    Ok(status.success())
}
