//! The resource → the engine's controls channel. The pod watches its own SchemaMigration and
//! recomputes the controls on every event: annotation changes do not bump
//! `metadata.generation`, so nothing is filtered on it. The engine is woken only when a value
//! it reads actually changed (status writes arrive here too, every few seconds).

use std::fmt::Write as _;

use futures_util::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::controls::{InvalidControl, effective_controls};
use crate::api::types::SchemaMigration;
use crate::engine::controls::Controls;

/// The controls in force for `smig`, and the annotations refused on the way.
///
/// A resource being deleted cancels the migration, as the panic annotation does: the engine then
/// drops its own tables instead of leaving them for the finalizer to find.
pub fn controls_for(smig: &SchemaMigration) -> (Controls, Vec<InvalidControl>) {
    let (mut controls, _sources, invalid) = effective_controls(&smig.spec, smig.annotations());
    if smig.metadata.deletion_timestamp.is_some() {
        controls.panic = true;
    }
    (controls, invalid)
}

/// Hands `next` to the engine if it differs from what the engine has; true when it did.
pub fn publish(tx: &watch::Sender<Controls>, next: Controls) -> bool {
    tx.send_if_modified(|current| {
        if *current == next {
            false
        } else {
            *current = next;
            true
        }
    })
}

/// Watches `name` and keeps `tx` up to date until the task is aborted. `reported` holds the
/// invalid annotations already logged, so each is logged once, not on every status write.
pub async fn follow_resource(
    api: Api<SchemaMigration>,
    name: String,
    tx: watch::Sender<Controls>,
    mut reported: Vec<InvalidControl>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    // The short backoff of the operator: after an API server restart the controls apply again
    // within about a second of the server answering.
    let mut events = std::pin::pin!(
        watcher(api, config).backoff(crate::operator::watch_health::WatchBackoff::default())
    );
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(smig) | Event::InitApply(smig)) => {
                let (next, invalid) = controls_for(&smig);
                if invalid != reported {
                    for refused in &invalid {
                        warn!(annotation = %refused.annotation, "{refused}");
                    }
                    reported = invalid;
                }
                let described = summary(&next);
                if publish(&tx, next) {
                    info!(controls = %described, "controls changed");
                }
            }
            Ok(Event::Delete(_)) => {
                let mut next = tx.borrow().clone();
                next.panic = true;
                if publish(&tx, next) {
                    warn!("the SchemaMigration was deleted: cancelling the migration");
                }
            }
            Ok(Event::Init | Event::InitDone) => {}
            // The backoff retries; the engine keeps the controls it has meanwhile.
            Err(e) => warn!(error = %e, "watching the SchemaMigration failed; retrying"),
        }
    }
}

/// The controls worth a log line. Throttle query and URL are left out: they may carry
/// credentials.
fn summary(c: &Controls) -> String {
    let mut s = format!(
        "throttle={} postpone-cut-over={} panic={} chunk-size={} dml-batch-size={} nice-ratio={} max-lag-millis={}",
        c.throttle,
        c.postpone_cut_over,
        c.panic,
        c.chunk_size,
        c.dml_batch_size,
        c.nice_ratio,
        c.max_lag.as_millis()
    );
    for (label, load) in [
        ("max-load", &c.max_load),
        ("critical-load", &c.critical_load),
    ] {
        if !load.is_empty() {
            let joined: Vec<String> = load.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(s, " {label}={}", joined.join(","));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    const SMIG: &str = r#"
apiVersion: ghost.dev/v1alpha1
kind: SchemaMigration
metadata: {name: add-age, namespace: shop, generation: 1}
spec:
  connection:
    host: db
    database: shop
    credentialsSecretRef: {name: shop-db}
    controlReplicas: ["replica-2:3306"]
  table: users
  alter: ADD COLUMN age INT
  copy: {chunkSize: 500}
"#;

    fn smig() -> SchemaMigration {
        serde_yaml::from_str(SMIG).expect("test manifest")
    }

    fn annotate(smig: &mut SchemaMigration, key: &str, value: &str) {
        smig.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_string(), value.to_string());
    }

    #[test]
    fn spec_values_reach_the_controls() {
        let (controls, invalid) = controls_for(&smig());
        assert!(invalid.is_empty());
        assert_eq!(controls.chunk_size, 500);
        assert!(!controls.throttle && !controls.panic);
        assert_eq!(controls.throttle_control_replicas, vec!["replica-2:3306"]);
    }

    #[test]
    fn annotation_changes_are_published_without_a_generation_bump() {
        let mut current = smig();
        let (initial, _) = controls_for(&current);
        let (tx, mut rx) = watch::channel(initial);
        rx.mark_unchanged();

        // The same object again (e.g. a status write): the engine is not woken.
        assert!(!publish(&tx, controls_for(&current).0));
        assert!(!rx.has_changed().unwrap());

        annotate(&mut current, "ghost/throttle", "true");
        annotate(&mut current, "ghost/chunk-size", "2000");
        assert_eq!(current.metadata.generation, Some(1));
        assert!(publish(&tx, controls_for(&current).0));
        assert!(rx.has_changed().unwrap());
        {
            let seen = rx.borrow_and_update();
            assert!(seen.throttle);
            assert_eq!(seen.chunk_size, 2000);
        }

        annotate(&mut current, "ghost/postpone-cut-over", "true");
        annotate(&mut current, "ghost/max-lag-millis", "3000");
        assert!(publish(&tx, controls_for(&current).0));
        {
            let seen = rx.borrow_and_update();
            assert!(seen.throttle && seen.postpone_cut_over);
            assert_eq!(seen.max_lag, Duration::from_millis(3000));
        }

        // Removing the override falls back to the spec.
        if let Some(annotations) = current.metadata.annotations.as_mut() {
            annotations.remove("ghost/chunk-size");
        }
        assert!(publish(&tx, controls_for(&current).0));
        assert_eq!(rx.borrow_and_update().chunk_size, 500);
    }

    #[test]
    fn spec_changes_are_published_too() {
        let mut current = smig();
        let (tx, rx) = watch::channel(controls_for(&current).0);
        current.spec.cut_over = Some(crate::api::types::CutOverSpec {
            postpone: Some(true),
            ..Default::default()
        });
        assert!(publish(&tx, controls_for(&current).0));
        assert!(rx.borrow().postpone_cut_over);
    }

    #[test]
    fn invalid_annotations_are_reported_not_applied() {
        let mut current = smig();
        let (before, _) = controls_for(&current);
        annotate(&mut current, "ghost/chunk-size", "lots");
        let (after, invalid) = controls_for(&current);
        assert_eq!(after, before);
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0].annotation, "ghost/chunk-size");
    }

    #[test]
    fn panic_annotation_and_deletion_cancel() {
        let mut current = smig();
        annotate(&mut current, "ghost/panic", "true");
        assert!(controls_for(&current).0.panic);

        let mut deleting = smig();
        deleting.metadata.deletion_timestamp = Some(Time(
            Timestamp::from_second(1_700_000_000).expect("timestamp"),
        ));
        assert!(controls_for(&deleting).0.panic);
    }

    #[test]
    fn summary_leaves_out_queries_and_urls() {
        let controls = Controls {
            throttle_query: Some("SELECT secret".into()),
            throttle_http: Some("http://user:pw@gate".into()),
            max_load: vec![("Threads_running".into(), 25)],
            ..Controls::default()
        };
        let s = summary(&controls);
        assert!(s.contains("max-load=Threads_running=25"), "{s}");
        assert!(!s.contains("secret") && !s.contains("pw"), "{s}");
    }
}
