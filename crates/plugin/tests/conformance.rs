//! The whole conformance suite through the loader: the example plugin (the file backend built
//! as a `cdylib`, `examples/plugin-file`) loaded with `PluginCore::load`, every call crossing
//! the C ABI. Every process — this test binary and the children of the cross-process checks —
//! loads the library and opens the same directory; checks stay apart by namespace.
//!
//! The outage checks need a store to stop and start: the fixture plugin
//! `cachier_fixture_switchable` (the file backend behind a switch file) in a private directory
//! of the check's own, so they too run through the ABI — an `Unavailable` error must cross it
//! with its kind and retryability for the front end to skip the store.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use cachier_core::conformance::{Outage, unique_namespace};
use cachier_core::{Core, async_trait};
use cachier_plugin::PluginCore;

async fn make_core() -> Arc<dyn Core> {
    let store = support::store_dir();
    let core = PluginCore::load(support::example_plugin(), &store.to_string_lossy())
        .expect("the example plugin loads and opens the conformance store");
    Arc::new(core)
}

/// The file whose presence switches the fixture store off (`SWITCH_FILE` of the fixtures).
const SWITCH_FILE: &str = "switched-off";

/// A private fixture store: a directory of its own, removed when dropped.
struct PluginOutage {
    dir: PathBuf,
}

async fn make_outage() -> PluginOutage {
    // Named like a test namespace, so that xtask's leftover check finds it if it survives.
    let name = unique_namespace("plugin_outage");
    let dir = support::store_dir().join(name.as_str());
    std::fs::create_dir_all(&dir).expect("create the private store");
    PluginOutage { dir }
}

#[async_trait]
impl Outage for PluginOutage {
    async fn core(&self) -> Arc<dyn Core> {
        let core = PluginCore::load_symbol(
            support::fixtures(),
            "cachier_fixture_switchable",
            &self.dir.to_string_lossy(),
        )
        .expect("the switchable fixture loads");
        Arc::new(core)
    }

    async fn stop(&self) {
        std::fs::write(self.dir.join(SWITCH_FILE), b"").expect("switch the store off");
    }

    async fn start(&self) {
        std::fs::remove_file(self.dir.join(SWITCH_FILE)).expect("switch the store on");
    }
}

impl Drop for PluginOutage {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {e}", self.dir.display());
        }
    }
}

cachier_core::conformance_suite!(make_core, outage = make_outage);
