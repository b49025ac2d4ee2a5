//! What deleted migrations leave behind, let go. A migration that never started has no
//! finalizer, so its deletion reaches the operator as a watch event only, not a reconcile: when
//! the cache has shrunk, the controller's per-migration state (Event recorders, metric series)
//! of migrations no longer in it is dropped, and glibc's `malloc_trim` returns the freed pages
//! (glibc keeps them in its arenas otherwise: after a thousand migrations were deleted the
//! operator stayed at its peak).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;

use super::reconcile::Context;

/// How often the cache's size is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(5);

/// Runs until the task is dropped.
pub async fn let_go_of_deleted(ctx: Arc<Context>) {
    let mut last = ctx.store.state().len();
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let cached = ctx.store.state();
        if cached.len() < last {
            let uids: HashSet<String> = cached.iter().filter_map(|s| s.uid()).collect();
            let names: HashSet<(String, String)> = cached
                .iter()
                .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
                .collect();
            ctx.forget_absent(&uids);
            ctx.metrics.forget_absent(&names);
            drop(cached);
            trim();
        }
        last = ctx.store.state().len();
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heaps; it takes no pointer and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
