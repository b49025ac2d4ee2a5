//! Named points where the fault tests kill the engine with SIGKILL, exactly as `kill -9` or the
//! OOM killer would, to prove that no step leaves a write behind, or break a step the way a race
//! would (`fault`). A point fires only when `GHOST_TEST_CRASH_AT` names it; unset (always,
//! outside the tests) this does nothing.

use std::sync::OnceLock;

/// The environment variable that names the point to die at.
pub const ENV: &str = "GHOST_TEST_CRASH_AT";

fn armed() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    POINT
        .get_or_init(|| std::env::var(ENV).ok().filter(|p| !p.is_empty()))
        .as_deref()
}

/// Dies here, by SIGKILL, when this is the armed point.
pub fn reached(point: &str) {
    if armed() == Some(point) {
        tracing::warn!(point, "{ENV}: killing this process now");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// True when the tests ask for the fault named `point` (a step done wrong on purpose, to prove
/// that what follows it catches the damage).
pub fn fault(point: &str) -> bool {
    armed() == Some(point)
}
