//! The watches after an API server restart. kube-runtime's default backoff is one exponential
//! series (0.8 s up to 30 s, reset only after 120 s without an error) shared by every watch the
//! controller runs, so the first errors of a restarting API server (forbidden while RBAC warms
//! up, "too old resource version", connection refused) left the operator blind for minutes. Here
//! the series is short (100 ms doubling to a 1 s cap) and starts over at the first event after
//! an error; the watcher itself relists on "too old". `WatchHealth` tells `/readyz` whether the
//! watches are broken now.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::utils::Backoff;

const FIRST: Duration = Duration::from_millis(100);
const CAP: Duration = Duration::from_secs(1);

/// The controller's watch backoff.
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(CAP);
        Some(now)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

/// A watch error this recent makes the operator not ready: the backoff retries at least every
/// `CAP`, so a broken watch reports again well within it.
const BROKEN_FOR: Duration = Duration::from_secs(3);

/// When a watch last failed.
#[derive(Debug, Default)]
pub struct WatchHealth {
    last_error: Mutex<Option<Instant>>,
}

impl WatchHealth {
    pub fn failed(&self) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// No watch error within `BROKEN_FOR`.
    pub fn is_healthy(&self) -> bool {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none_or(|at| at.elapsed() >= BROKEN_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_series_with_a_low_cap_that_starts_over() {
        let mut backoff = WatchBackoff::default();
        let series: Vec<u128> = backoff.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(series, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(FIRST));
    }

    #[test]
    fn a_recent_error_is_unhealthy() {
        let health = WatchHealth::default();
        assert!(health.is_healthy());
        health.failed();
        assert!(!health.is_healthy());
        *health.last_error.lock().unwrap() = Some(Instant::now() - BROKEN_FOR);
        assert!(health.is_healthy());
    }
}
