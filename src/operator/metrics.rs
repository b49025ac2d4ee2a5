//! The controller's Prometheus metrics: reconcile counts, failures and durations, whether this
//! replica leads, and per migration its phase, progress, rows copied and their rate, heartbeat and
//! replica lag, binlog backlog, throttle state and cut-over lock time (labelled by namespace and
//! name only: migrations are few). The dashboard and alerts the chart ships
//! (`charts/ghost/files/`) use only these; a test below keeps it so.

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
    /// The engine's last report, one gauge per field, for dashboards and alerts.
    reported: ReportedGauges,
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
        let reported = ReportedGauges::register(&mut registry);

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
            reported,
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
        self.reported.observe(&base, progress);
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
        self.reported.forget(&base);
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

/// Gauges of the engine's last report: a series while the field is reported, none otherwise.
struct ReportedGauges {
    rows_copied: Family<Labels, FloatGauge>,
    rows_per_second: Family<Labels, FloatGauge>,
    heartbeat_lag: Family<Labels, FloatGauge>,
    backlog: Family<Labels, FloatGauge>,
    cut_over_lock: Family<Labels, FloatGauge>,
}

impl ReportedGauges {
    fn register(registry: &mut Registry) -> Self {
        let gauges = Self {
            rows_copied: Family::default(),
            rows_per_second: Family::default(),
            heartbeat_lag: Family::default(),
            backlog: Family::default(),
            cut_over_lock: Family::default(),
        };
        for (name, help, family) in [
            (
                "migration_rows_copied",
                "Rows copied into the ghost table",
                &gauges.rows_copied,
            ),
            (
                "migration_rows_per_second",
                "The engine's recent copy rate",
                &gauges.rows_per_second,
            ),
            (
                "migration_heartbeat_lag_seconds",
                "Age of the last heartbeat read back from the binary log (how far applying is behind)",
                &gauges.heartbeat_lag,
            ),
            (
                "migration_backlog",
                "Row changes read from the binary log and not yet applied",
                &gauges.backlog,
            ),
            (
                "migration_cut_over_lock_seconds",
                "How long the cut-over blocked writes to the table",
                &gauges.cut_over_lock,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        gauges
    }

    fn observe(&self, base: &Labels, progress: Option<&ProgressStatus>) {
        let millis = |v: Option<i64>| v.map(|ms| ms as f64 / 1000.0);
        let count = |v: Option<i64>| v.map(|n| n as f64);
        let values = [
            (
                &self.rows_copied,
                count(progress.and_then(|p| p.rows_copied)),
            ),
            (
                &self.rows_per_second,
                progress.and_then(|p| p.rows_per_second),
            ),
            (
                &self.heartbeat_lag,
                millis(progress.and_then(|p| p.heartbeat_lag_millis)),
            ),
            (&self.backlog, count(progress.and_then(|p| p.backlog))),
            (
                &self.cut_over_lock,
                millis(
                    progress
                        .and_then(|p| p.cut_over.as_ref())
                        .and_then(|c| c.lock_millis),
                ),
            ),
        ];
        for (family, value) in values {
            match value {
                Some(v) => {
                    family.get_or_create(base).set(v);
                }
                None => {
                    family.remove(base);
                }
            }
        }
    }

    fn forget(&self, base: &Labels) {
        for family in [
            &self.rows_copied,
            &self.rows_per_second,
            &self.heartbeat_lag,
            &self.backlog,
            &self.cut_over_lock,
        ] {
            family.remove(base);
        }
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
    use crate::api::types::{CutOverStatus, ThrottleStatus};

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

    /// A migration with every reported field set, as the engine reports one mid-way and after its
    /// cut-over.
    fn fully_reported() -> Metrics {
        let m = Metrics::new();
        drop(m.reconcile_started());
        m.reconcile_failed("kube");
        m.set_leader(true);
        let status = SchemaMigrationStatus {
            phase: Some(MigrationPhase::Copying),
            ..SchemaMigrationStatus::default()
        };
        let progress = ProgressStatus {
            percent: Some(42.5),
            rows_copied: Some(4250),
            rows_per_second: Some(1200.5),
            backlog: Some(17),
            heartbeat_lag_millis: Some(250),
            replica_lag_millis: Some(1500),
            throttle: Some(ThrottleStatus {
                active: false,
                reason: None,
            }),
            cut_over: Some(CutOverStatus {
                attempts: 1,
                lock_millis: Some(42),
            }),
            ..ProgressStatus::default()
        };
        m.observe("shop", "add-age", &status, Some(&progress));
        m
    }

    #[test]
    fn the_engine_report_is_a_gauge_per_field_while_reported() {
        let m = fully_reported();
        let text = m.render();
        for line in [
            "ghost_operator_migration_rows_copied{namespace=\"shop\",name=\"add-age\"} 4250",
            "ghost_operator_migration_rows_per_second{namespace=\"shop\",name=\"add-age\"} 1200.5",
            "ghost_operator_migration_backlog{namespace=\"shop\",name=\"add-age\"} 17",
            "ghost_operator_migration_heartbeat_lag_seconds{namespace=\"shop\",name=\"add-age\"} 0.25",
            "ghost_operator_migration_cut_over_lock_seconds{namespace=\"shop\",name=\"add-age\"} 0.042",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let status = SchemaMigrationStatus::default();
        m.observe("shop", "add-age", &status, Some(&ProgressStatus::default()));
        assert!(!m.render().contains("migration_rows_copied{"));
        m.observe(
            "shop",
            "add-age",
            &status,
            Some(&ProgressStatus {
                rows_copied: Some(1),
                ..ProgressStatus::default()
            }),
        );
        m.forget("shop", "add-age");
        assert!(!m.render().contains("migration_rows_copied{"));
    }

    /// Every metric the shipped dashboard and alerts query is one this operator serves: a name
    /// that is not would chart nothing and never alert, silently.
    #[test]
    fn the_shipped_dashboard_and_alerts_use_only_served_metrics() {
        let served = fully_reported().render();
        let is_served = |name: &str| {
            served.lines().filter(|l| !l.starts_with('#')).any(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
        };
        let name = regex::Regex::new(r"ghost_operator_[a-z_]+").expect("a valid pattern");
        for (file, text) in [
            (
                "charts/ghost/files/ghost-dashboard.json",
                include_str!("../../charts/ghost/files/ghost-dashboard.json"),
            ),
            (
                "charts/ghost/files/ghost-rules.yaml",
                include_str!("../../charts/ghost/files/ghost-rules.yaml"),
            ),
        ] {
            let used: std::collections::BTreeSet<&str> =
                name.find_iter(text).map(|m| m.as_str()).collect();
            assert!(used.len() >= 5, "{file}: only {used:?}");
            for metric in used {
                assert!(
                    is_served(metric),
                    "{file} uses {metric}, which /metrics does not serve:\n{served}"
                );
            }
        }
    }
}
