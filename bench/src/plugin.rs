//! The plugin target: the example plugin (`examples/plugin-file`, the file backend built as a
//! `cdylib`) loaded with `cachier_plugin::PluginCore`, against the same backend linked
//! statically (`cachier_file::FileCore`), in the same run, over the same directory and entries.
//!
//! `cargo xtask bench plugin` builds the library in release mode and names its directory in
//! `CACHIER_BENCH_PLUGIN_DIR`; by hand: `cargo build --release -p cachier-plugin-file`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cachier_core::{Cachier, Core, Function};
use cachier_file::{Config, FileCore};
use cachier_plugin::PluginCore;

use crate::compare;
use crate::report::Report;
use crate::suite::{
    BenchResult, Context, Ctx, Payload, check_hits_only, func, stampede, store_and_check, value_of,
};

const TARGET: &str = "plugin";

/// Where xtask says the release build of the example plugin is.
const DIR_ENV: &str = "CACHIER_BENCH_PLUGIN_DIR";

/// The example plugin's library in release mode.
fn library() -> BenchResult<PathBuf> {
    let dir = match std::env::var_os(DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => crate::output_dir()
            .parent()
            .map(|target| target.join("release"))
            .ok_or("no target directory")?,
    };
    let file = format!(
        "{}cachier_plugin_file{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let path = dir.join(file);
    if !path.is_file() {
        return Err(format!(
            "the example plugin {} is missing: run `cargo xtask bench plugin`, or build it with \
             `cargo build --release -p cachier-plugin-file`",
            path.display()
        ));
    }
    Ok(path)
}

fn cache_over(core: Arc<dyn Core>, ctx: &Ctx) -> BenchResult<Cachier> {
    Ok(Cachier::builder(core)
        .namespace(format!("bench-{}", ctx.run_id))
        .ctx("namespace")?
        .strict(true)
        .build())
}

/// Runs every plugin measurement in a fresh directory, and removes it afterwards.
pub async fn run(ctx: &Ctx, report: &mut Report) -> BenchResult<bool> {
    let library = library()?;
    let dir = crate::output_dir().join(format!("plugin-{}", ctx.run_id));
    let outcome = measure(ctx, &library, &dir, report).await;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("cachier-bench: could not remove {}: {e}", dir.display());
    }
    outcome
}

async fn measure(ctx: &Ctx, library: &Path, dir: &Path, report: &mut Report) -> BenchResult<bool> {
    let store = dir.join("store");
    let linked: Arc<FileCore> = Arc::new(FileCore::open(Config::new(&store)).ctx("open")?);
    let plugin: Arc<PluginCore> =
        Arc::new(PluginCore::load(library, &store.to_string_lossy()).ctx("load the plugin")?);
    let linked_cache = cache_over(linked.clone(), ctx)?;
    let plugin_cache = cache_over(plugin.clone(), ctx)?;

    for (size, label) in [(100, "100 B"), (64 << 10, "64 KiB")] {
        let name = format!("hit_{size}");
        let (through, direct) = (
            plugin_cache.function(func(&name)),
            linked_cache.function(func(&name)),
        );
        let value = <Vec<u8> as Payload>::make(size);
        store_and_check(&direct, 0, &value).await?;
        let before = (through.stats(), direct.stats());
        let series = compare!(ctx.plan, {
            "cachier call through the plugin" =>
                through.call(&0u64, || async { Vec::<u8>::new() }).await,
            "cachier call, FileCore linked in" =>
                direct.call(&0u64, || async { Vec::<u8>::new() }).await,
        });
        check_hits_only(&format!("plugin hit {label}"), &before.0, &through.stats())?;
        check_hits_only(&format!("linked hit {label}"), &before.1, &direct.stats())?;
        report.add_comparison(
            TARGET,
            &format!("hit {label} Vec<u8>"),
            &series,
            &[(1, 1.5)],
            "the same entry file, read through the C ABI or directly",
        );
        if size == 100 {
            breakdown(ctx, &plugin, &linked, &through, report).await?;
        }
    }

    // Miss + store of 100 B: get, claim, set and release each cross the ABI.
    {
        let (through, direct) = (
            plugin_cache.function(func("miss_store")),
            linked_cache.function(func("miss_store")),
        );
        let value = value_of(100);
        let (mut n, mut m) = (0u64, 1u64 << 40);
        let series = compare!(ctx.plan, {
            "cachier call through the plugin (miss, compute, store)" => {
                n += 1;
                let v = value.clone();
                through.call(&n, move || async move { v }).await
            },
            "cachier call, FileCore linked in" => {
                m += 1;
                let v = value.clone();
                direct.call(&m, move || async move { v }).await
            },
        });
        report.add_comparison(
            TARGET,
            "miss + store 100 B",
            &series,
            &[],
            "each of get, claim, set and release is a trip to the blocking pool",
        );
    }

    stampede(
        TARGET,
        &plugin_cache,
        if ctx.quick { 3 } else { 10 },
        report,
    )
    .await
}

/// Where the time of a 100 B plugin hit goes.
async fn breakdown(
    ctx: &Ctx,
    plugin: &Arc<PluginCore>,
    linked: &Arc<FileCore>,
    f: &Function,
    report: &mut Report,
) -> BenchResult<()> {
    let key = f.key(&0u64).ctx("key")?;
    let (plugin, linked): (Arc<dyn Core>, Arc<dyn Core>) = (plugin.clone(), linked.clone());
    let series = compare!(ctx.plan, {
        "cachier call through the plugin" => f.call(&0u64, || async { Vec::<u8>::new() }).await,
        "PluginCore::get_value (try_get_value, on the task)" => plugin.get_value(&key).await,
        "PluginCore::get (blocking pool, block_on in the plugin)" => plugin.get(&key).await,
        "FileCore::get_value, linked in" => linked.get_value(&key).await,
        "spawn_blocking round trip (empty)" => tokio::task::spawn_blocking(|| 0u8).await,
    });
    report.add_comparison(
        TARGET,
        "hit 100 B: where the time goes",
        &series,
        &[],
        "each part timed alone; ratio = call / part",
    );
    Ok(())
}
