//! Prometheus metrics of one migration, built from a `Progress` snapshot at scrape time (so there
//! is no second copy of the state to keep in step). Every series carries `database` and `table`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::MigrationIdentity;
use crate::engine::progress::{Phase, Progress};

/// What `/metrics` answers with (prometheus-client writes OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const PHASES: [Phase; 9] = [
    Phase::Pending,
    Phase::Validating,
    Phase::Copying,
    Phase::Verifying,
    Phase::Postponed,
    Phase::CuttingOver,
    Phase::Succeeded,
    Phase::Failed,
    Phase::Cancelled,
];

type Labels = Vec<(String, String)>;
type FloatGauge = Family<Labels, Gauge<f64, AtomicU64>>;
type IntCounter = Family<Labels, Counter<u64>>;

/// The exposition text for one scrape.
pub fn render(progress: &Progress, identity: &MigrationIdentity) -> String {
    let base: Labels = vec![
        ("database".to_string(), escape_label(&identity.database)),
        ("table".to_string(), escape_label(&identity.table)),
    ];
    let with = |key: &str, value: &str| {
        let mut labels = base.clone();
        labels.push((key.to_string(), escape_label(value)));
        labels
    };
    let one = |value: f64| vec![(base.clone(), value)];
    let optional = |value: Option<f64>| value.map(one).unwrap_or_default();
    let millis = |ms: Option<u64>| optional(ms.map(|ms| ms as f64 / 1000.0));

    let mut registry = Registry::default();
    // Counters get `_total` appended by the encoder.
    counter(
        &mut registry,
        "ghost_rows_copied",
        "Rows copied into the ghost table",
        &base,
        progress.rows_copied,
    );
    gauge(
        &mut registry,
        "ghost_rows_estimate",
        "Estimated rows to copy",
        &one(progress.rows_estimate as f64),
    );
    gauge(
        &mut registry,
        "ghost_rows_per_second",
        "Recent row copy rate",
        &one(progress.rows_per_second),
    );
    counter(
        &mut registry,
        "ghost_events_applied",
        "Row changes applied from the binary log",
        &base,
        progress.events_applied,
    );
    gauge(
        &mut registry,
        "ghost_backlog",
        "Row changes read from the binary log and not yet applied",
        &one(progress.backlog as f64),
    );
    gauge(
        &mut registry,
        "ghost_heartbeat_lag_seconds",
        "Age of the last heartbeat seen in the binary log",
        &millis(progress.heartbeat_lag_millis),
    );
    gauge(
        &mut registry,
        "ghost_replica_lag_seconds",
        "Largest lag among the inspected and throttle-control replicas",
        &millis(progress.replica_lag_millis),
    );
    let throttled = if progress.throttle.active { 1.0 } else { 0.0 };
    let reason = if progress.throttle.active {
        progress.throttle.reason.as_str()
    } else {
        ""
    };
    gauge(
        &mut registry,
        "ghost_throttled",
        "1 while the migration is throttled; the reason is a label",
        &[(with("reason", reason), throttled)],
    );
    let phases: Vec<(Labels, f64)> = PHASES
        .iter()
        .map(|phase| {
            let current = if *phase == progress.phase { 1.0 } else { 0.0 };
            (with("phase", &format!("{phase:?}")), current)
        })
        .collect();
    gauge(
        &mut registry,
        "ghost_phase",
        "1 for the migration's current phase, 0 for the others",
        &phases,
    );
    gauge(
        &mut registry,
        "ghost_cut_over_attempts",
        "Cut-over attempts so far",
        &one(f64::from(progress.cut_over_attempts)),
    );
    gauge(
        &mut registry,
        "ghost_cut_over_lock_seconds",
        "How long writes to the table were blocked by the successful cut-over",
        &millis(progress.cut_over_lock_millis),
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

fn gauge(registry: &mut Registry, name: &str, help: &str, samples: &[(Labels, f64)]) {
    let family = FloatGauge::default();
    for (labels, value) in samples {
        family.get_or_create(labels).set(*value);
    }
    registry.register(name, help, family);
}

fn counter(registry: &mut Registry, name: &str, help: &str, labels: &Labels, value: u64) {
    let family = IntCounter::default();
    family.get_or_create(labels).inc_by(value);
    registry.register(name, help, family);
}

/// The encoder writes label values verbatim; a throttle reason may hold quotes or newlines.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            ch => escaped.push(ch),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::engine::progress::ThrottleState;

    /// `name{labels} value` lines, keyed by name plus labels.
    fn samples(text: &str) -> HashMap<String, f64> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("sample line");
                (series.to_string(), value.parse::<f64>().expect("value"))
            })
            .collect()
    }

    fn value(samples: &HashMap<String, f64>, name: &str, extra: &str) -> f64 {
        let key = format!("{name}{{database=\"shop\",table=\"users\"{extra}}}");
        *samples
            .get(&key)
            .unwrap_or_else(|| panic!("missing {key} in {samples:?}"))
    }

    #[test]
    fn renders_every_metric() {
        let progress = Progress {
            phase: Phase::Copying,
            rows_copied: 250,
            rows_estimate: 1000,
            rows_per_second: 12.5,
            events_applied: 40,
            backlog: 3,
            heartbeat_lag_millis: Some(250),
            replica_lag_millis: Some(1500),
            throttle: ThrottleState {
                active: true,
                reason: "max-lag \"1.5s\"".into(),
            },
            cut_over_attempts: 2,
            cut_over_lock_millis: Some(120),
            ..Progress::default()
        };
        let text = render(&progress, &MigrationIdentity::new("shop", "users"));
        assert!(text.ends_with("# EOF\n"), "{text}");
        let s = samples(&text);
        assert_eq!(value(&s, "ghost_rows_copied_total", ""), 250.0);
        assert_eq!(value(&s, "ghost_rows_estimate", ""), 1000.0);
        assert_eq!(value(&s, "ghost_rows_per_second", ""), 12.5);
        assert_eq!(value(&s, "ghost_events_applied_total", ""), 40.0);
        assert_eq!(value(&s, "ghost_backlog", ""), 3.0);
        assert_eq!(value(&s, "ghost_heartbeat_lag_seconds", ""), 0.25);
        assert_eq!(value(&s, "ghost_replica_lag_seconds", ""), 1.5);
        assert_eq!(
            value(&s, "ghost_throttled", ",reason=\"max-lag \\\"1.5s\\\"\""),
            1.0
        );
        assert_eq!(value(&s, "ghost_phase", ",phase=\"Copying\""), 1.0);
        assert_eq!(value(&s, "ghost_phase", ",phase=\"Succeeded\""), 0.0);
        assert_eq!(value(&s, "ghost_cut_over_attempts", ""), 2.0);
        assert_eq!(value(&s, "ghost_cut_over_lock_seconds", ""), 0.12);
        for name in [
            "ghost_rows_copied",
            "ghost_rows_estimate",
            "ghost_rows_per_second",
            "ghost_events_applied",
            "ghost_backlog",
            "ghost_heartbeat_lag_seconds",
            "ghost_replica_lag_seconds",
            "ghost_throttled",
            "ghost_phase",
            "ghost_cut_over_attempts",
            "ghost_cut_over_lock_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {name}"
            );
        }
    }

    #[test]
    fn unknown_lags_have_no_sample_and_idle_throttle_has_no_reason() {
        let text = render(
            &Progress::default(),
            &MigrationIdentity::new("shop", "users"),
        );
        let s = samples(&text);
        assert!(
            !s.keys()
                .any(|k| k.starts_with("ghost_heartbeat_lag_seconds"))
        );
        assert!(
            !s.keys()
                .any(|k| k.starts_with("ghost_cut_over_lock_seconds"))
        );
        assert_eq!(value(&s, "ghost_throttled", ",reason=\"\""), 0.0);
        assert_eq!(value(&s, "ghost_phase", ",phase=\"Pending\""), 1.0);
        assert_eq!(
            s.keys().filter(|k| k.starts_with("ghost_phase{")).count(),
            PHASES.len()
        );
    }
}
