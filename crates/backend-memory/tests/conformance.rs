//! The whole conformance suite against the memory backend (cross-process checks are skipped by
//! capability: separate processes never share an in-process store).

use std::sync::{Arc, OnceLock};

use cachier_core::Core;
use cachier_memory::MemoryCore;

/// Every call reaches the same store, as the suite requires; tests stay apart by namespace.
async fn make_core() -> Arc<dyn Core> {
    static CORE: OnceLock<Arc<MemoryCore>> = OnceLock::new();
    CORE.get_or_init(|| Arc::new(MemoryCore::new())).clone()
}

cachier_core::conformance_suite!(make_core);
