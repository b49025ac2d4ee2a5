//! The controller's Prometheus metrics: reconcile counts, failures and durations, whether this
//! replica leads, and per migration its phase, progress, replica lag and throttle state (labelled
//! by namespace and name only: migrations are few).

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{MigrationPhase, ProgressStatus, SchemaMigrationStatus};

/// What `/metrics` answers with (prometheus-client writes OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub const PHASES: [MigrationPhase; 10] = [
    MigrationPhase::Queued,
    MigrationPhase::Pending,
    MigrationPhase::Validating,
    MigrationPhase::Copying,
    MigrationPhase::Verifying,
    MigrationPhase::Postponed,
    MigrationPhase::CuttingOver,
    MigrationPhase::Succeeded,
    MigrationPhase::Failed,
    MigrationPhase::Cancelled,
];

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    status_writes: Counter,
    jobs_created: Counter,
    failures: Family<Labels, Counter>,
    duration: Histogram,
    leader: Gauge,
    phase: Family<Labels, Gauge>,
    progress: Family<Labels, FloatGauge>,
    replica_lag: Family<Labels, FloatGauge>,
    throttled: Family<Labels, Gauge>,
    /// (namespace, name) of every migration with series, so deleted ones can be dropped.
    known: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ghost_operator");
        let reconciles = Counter::default();
        let status_writes = Counter::default();
        let jobs_created = Counter::default();
        let failures = Family::<Labels, Counter>::default();
        // 1 ms .. ~16 s: a reconcile is a few API calls, a cleanup may wait on the database.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let leader = Gauge::default();
        let phase = Family::<Labels, Gauge>::default();
        let progress = Family::<Labels, FloatGauge>::default();
        let replica_lag = Family::<Labels, FloatGauge>::default();
        let throttled = Family::<Labels, Gauge>::default();

        // Counters get `_total` appended by the encoder.
        registry.register(
            "reconcile_runs",
            "Reconciles of SchemaMigrations",
            reconciles.clone(),
        );
        registry.register(
            "status_writes",
            "Writes of a SchemaMigration's status (only when the controller's part changed)",
            status_writes.clone(),
        );
        registry.register(
            "engine_jobs_created",
            "Engine Jobs created",
            jobs_created.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that returned an error, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long one reconcile took",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controller (it holds the lease or runs without one)",
            leader.clone(),
        );
        registry.register(
            "migration_phase",
            "1 for the phase each SchemaMigration is in",
            phase.clone(),
        );
        registry.register(
            "migration_progress_percent",
            "Percent of the estimated rows copied",
            progress.clone(),
        );
        registry.register(
            "migration_replica_lag_seconds",
            "Replication lag the engine last reported",
            replica_lag.clone(),
        );
        registry.register(
            "migration_throttled",
            "1 while the engine is throttled",
            throttled.clone(),
        );
        Self {
            registry,
            reconciles,
            status_writes,
            jobs_created,
            failures,
            duration,
            leader,
            phase,
            progress,
            replica_lag,
            throttled,
            known: std::sync::Mutex::default(),
        }
    }

    /// Counts a reconcile; the guard records its duration when dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            histogram: self.duration.clone(),
            start: Instant::now(),
        }
    }

    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    pub fn job_created(&self) {
        self.jobs_created.inc();
    }

    pub fn reconcile_failed(&self, kind: &str) {
        self.failures
            .get_or_create(&vec![("error".to_string(), kind.to_string())])
            .inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records a migration's status as the controller just computed it (its `progress` is the
    /// engine's last report).
    pub fn observe(
        &self,
        namespace: &str,
        name: &str,
        status: &SchemaMigrationStatus,
        progress: Option<&ProgressStatus>,
    ) {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((namespace.to_string(), name.to_string()));
        let base = labels(namespace, name);
        for phase in PHASES {
            let with_phase = phase_labels(namespace, name, phase);
            if status.phase == Some(phase) {
                self.phase.get_or_create(&with_phase).set(1);
            } else {
                self.phase.remove(&with_phase);
            }
        }
        match progress.and_then(|p| p.percent) {
            Some(percent) => {
                self.progress.get_or_create(&base).set(percent);
            }
            None => {
                self.progress.remove(&base);
            }
        }
        match progress.and_then(|p| p.replica_lag_millis) {
            Some(ms) => {
                self.replica_lag
                    .get_or_create(&base)
                    .set(ms as f64 / 1000.0);
            }
            None => {
                self.replica_lag.remove(&base);
            }
        }
        let throttled = progress
            .and_then(|p| p.throttle.as_ref())
            .is_some_and(|t| t.active);
        self.throttled
            .get_or_create(&base)
            .set(i64::from(throttled));
    }

    /// Drops a deleted migration's series.
    /// Drops the series of every migration not in `present` (deleted without a reconcile: a
    /// migration that never started has no finalizer, so its deletion is only a watch event).
    pub fn forget_absent(&self, present: &std::collections::HashSet<(String, String)>) {
        let absent: Vec<(String, String)> = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|key| !present.contains(*key))
            .cloned()
            .collect();
        for (namespace, name) in absent {
            self.forget(&namespace, &name);
        }
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(namespace.to_string(), name.to_string()));
        let base = labels(namespace, name);
        for phase in PHASES {
            self.phase.remove(&phase_labels(namespace, name, phase));
        }
        self.progress.remove(&base);
        self.replica_lag.remove(&base);
        self.throttled.remove(&base);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a metric.
        if let Err(e) = encode(&mut text, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        text
    }
}

fn labels(namespace: &str, name: &str) -> Labels {
    vec![
        ("namespace".to_string(), namespace.to_string()),
        ("name".to_string(), name.to_string()),
    ]
}

fn phase_labels(namespace: &str, name: &str, phase: MigrationPhase) -> Labels {
    let mut l = labels(namespace, name);
    l.push(("phase".to_string(), phase.as_str().to_string()));
    l
}

/// Records a reconcile's duration when dropped, however the reconcile ended.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::ThrottleStatus;

    #[test]
    fn renders_reconciles_and_migrations() {
        let m = Metrics::new();
        drop(m.reconcile_started());
        m.reconcile_failed("kube");
        m.status_written();
        m.status_written();
        m.job_created();
        m.set_leader(true);
        let status = SchemaMigrationStatus {
            phase: Some(MigrationPhase::Copying),
            ..SchemaMigrationStatus::default()
        };
        let progress = ProgressStatus {
            percent: Some(42.5),
            replica_lag_millis: Some(1500),
            throttle: Some(ThrottleStatus {
                active: true,
                reason: None,
            }),
            ..ProgressStatus::default()
        };
        m.observe("shop", "add-age", &status, Some(&progress));
        m.observe("shop", "gone", &status, Some(&progress));
        m.forget_absent(&std::collections::HashSet::from([(
            "shop".to_string(),
            "add-age".to_string(),
        )]));
        let text = m.render();
        assert!(!text.contains("name=\"gone\""), "{text}");
        for line in [
            "ghost_operator_reconcile_runs_total 1",
            "ghost_operator_status_writes_total 2",
            "ghost_operator_engine_jobs_created_total 1",
            "ghost_operator_reconcile_failures_total{error=\"kube\"} 1",
            "ghost_operator_reconcile_duration_seconds_count 1",
            "ghost_operator_leader 1",
            "ghost_operator_migration_phase{namespace=\"shop\",name=\"add-age\",phase=\"Copying\"} 1",
            "ghost_operator_migration_progress_percent{namespace=\"shop\",name=\"add-age\"} 42.5",
            "ghost_operator_migration_replica_lag_seconds{namespace=\"shop\",name=\"add-age\"} 1.5",
            "ghost_operator_migration_throttled{namespace=\"shop\",name=\"add-age\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }

        // A phase change replaces the series; deletion removes them all.
        let done = SchemaMigrationStatus {
            phase: Some(MigrationPhase::Succeeded),
            ..SchemaMigrationStatus::default()
        };
        m.observe("shop", "add-age", &done, None);
        let text = m.render();
        assert!(text.contains("phase=\"Succeeded\"} 1"));
        assert!(!text.contains("phase=\"Copying\""));
        assert!(!text.contains("migration_progress_percent{"));
        m.forget("shop", "add-age");
        assert!(!m.render().contains("name=\"add-age\""));
    }
}
