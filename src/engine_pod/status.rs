//! The engine's progress → `.status.progress`, by server-side apply under field manager
//! `ghost-engine`. The apply object holds `status.progress` only, so the engine owns exactly
//! that field and the controller (`ghost-operator`) every other one.
//!
//! Writes: at once on every phase change, otherwise at most every 3 s, and never when nothing
//! visible changed (`ProgressStatus` rounds its numbers so that repeats compare equal).

use std::time::{Duration, Instant};

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

use crate::api::types::{ProgressStatus, SchemaMigration};
use crate::engine::progress::{Phase, Progress};

/// The engine pod's server-side apply field manager.
pub const FIELD_MANAGER: &str = "ghost-engine";
/// The shortest time between two writes of the same phase.
pub const MIN_WRITE_INTERVAL: Duration = Duration::from_secs(3);
/// After a failed write, wait this long before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Engine messages can quote server errors at length; the status stays small.
const MAX_MESSAGE_BYTES: usize = 4096;

/// The server-side apply object that sets `.status.progress` from an engine snapshot.
pub fn progress_patch(name: &str, namespace: &str, progress: &Progress) -> Value {
    progress_status_patch(name, namespace, &ProgressStatus::from_engine(progress))
}

/// The server-side apply object that sets `.status.progress` to `progress`.
pub fn progress_status_patch(name: &str, namespace: &str, progress: &ProgressStatus) -> Value {
    let mut progress = progress.clone();
    if let Some(message) = progress.message.as_mut() {
        truncate(message, MAX_MESSAGE_BYTES);
    }
    json!({
        "apiVersion": SchemaMigration::api_version(&()),
        "kind": SchemaMigration::kind(&()),
        "metadata": {"name": name, "namespace": namespace},
        "status": {"progress": progress},
    })
}

fn truncate(message: &mut String, max: usize) {
    if message.len() <= max {
        return;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
}

/// Applies `patch` (from `progress_status_patch`) to the status subresource, forcing: the
/// engine is the only writer of `.status.progress`.
pub async fn apply_progress(
    api: &Api<SchemaMigration>,
    name: &str,
    patch: &Value,
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(patch))
        .await
        .map(|_| ())
}

/// Writes `.status.progress` of one resource, skipping writes that would change nothing.
pub struct ProgressWriter {
    api: Api<SchemaMigration>,
    name: String,
    namespace: String,
    last: Option<Value>,
}

impl ProgressWriter {
    pub fn new(api: Api<SchemaMigration>, name: &str, namespace: &str) -> Self {
        Self {
            api,
            name: name.to_string(),
            namespace: namespace.to_string(),
            last: None,
        }
    }

    /// Applies `progress` unless it is what was applied last. True when a request was sent.
    pub async fn write(&mut self, progress: &ProgressStatus) -> Result<bool, kube::Error> {
        let patch = progress_status_patch(&self.name, &self.namespace, progress);
        if self.last.as_ref() == Some(&patch) {
            return Ok(false);
        }
        apply_progress(&self.api, &self.name, &patch).await?;
        debug!(phase = ?progress.phase, "status.progress written");
        self.last = Some(patch);
        Ok(true)
    }

    /// `write`, tried up to `attempts` times a second apart: the last report of a pod must not
    /// be lost to one failed request. True when it was written (or already was).
    pub async fn write_with_retries(&mut self, progress: &ProgressStatus, attempts: u32) -> bool {
        for attempt in 1..=attempts.max(1) {
            match self.write(progress).await {
                Ok(_) => return true,
                Err(e) => {
                    warn!(error = %e, attempt, "writing .status.progress failed");
                    if attempt < attempts {
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                }
            }
        }
        false
    }
}

/// What makes a write urgent when it changes: the phase, and whether the engine is throttled (a
/// user who annotates `ghost/throttle=true` expects to see it in `.status` within a second or
/// two, not after the next interval).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stage {
    phase: Phase,
    throttled: bool,
}

impl Stage {
    fn of(progress: &Progress) -> Self {
        Self {
            phase: progress.phase,
            throttled: progress.throttle.active,
        }
    }
}

/// When the next write is due: at once for a new stage, otherwise `interval` after the last
/// write, and never sooner than `retry` after a failure.
#[derive(Debug)]
struct WriteSchedule {
    interval: Duration,
    retry: Duration,
    last_stage: Option<Stage>,
    last_write: Option<Instant>,
    retry_at: Option<Instant>,
}

impl WriteSchedule {
    fn new(interval: Duration, retry: Duration) -> Self {
        Self {
            interval,
            retry,
            last_stage: None,
            last_write: None,
            retry_at: None,
        }
    }

    fn due(&self, stage: Stage, now: Instant) -> Instant {
        let wanted = match (self.last_stage, self.last_write) {
            (Some(last), Some(at)) if last == stage => at + self.interval,
            _ => now,
        };
        match self.retry_at {
            Some(retry_at) => wanted.max(retry_at),
            None => wanted,
        }
    }

    fn written(&mut self, stage: Stage, at: Instant) {
        self.last_stage = Some(stage);
        self.last_write = Some(at);
        self.retry_at = None;
    }

    fn failed(&mut self, at: Instant) {
        self.retry_at = Some(at + self.retry);
    }
}

/// Mirrors `progress` into `.status.progress` until `finish` fires (or its sender is dropped)
/// and hands the writer back for the final report, which the caller writes once the engine has
/// settled its outcome.
pub async fn follow_progress(
    mut writer: ProgressWriter,
    mut progress: watch::Receiver<Progress>,
    mut finish: oneshot::Receiver<()>,
) -> ProgressWriter {
    let mut schedule = WriteSchedule::new(MIN_WRITE_INTERVAL, RETRY_AFTER);
    // The first snapshot is written at once: it replaces a previous pod's last report.
    let mut pending = true;
    loop {
        let stage = Stage::of(&progress.borrow());
        let due = pending.then(|| schedule.due(stage, Instant::now()));
        let wake = tokio::time::Instant::from_std(due.unwrap_or_else(Instant::now));
        tokio::select! {
            // Biased, with the timer before the channel: a busy engine updates its progress
            // many times a second and must not starve the writes.
            biased;
            _ = &mut finish => break,
            _ = tokio::time::sleep_until(wake), if due.is_some() => {
                let snapshot = progress.borrow_and_update().clone();
                match writer.write(&ProgressStatus::from_engine(&snapshot)).await {
                    Ok(_) => {
                        schedule.written(Stage::of(&snapshot), Instant::now());
                        pending = false;
                    }
                    Err(e) => {
                        warn!(error = %e, "writing .status.progress failed; retrying");
                        schedule.failed(Instant::now());
                    }
                }
            }
            changed = progress.changed() => {
                if changed.is_err() {
                    break;
                }
                pending = true;
            }
        }
    }
    writer
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::api::types::MigrationPhase;
    use crate::engine::progress::ThrottleState;

    fn copying() -> Progress {
        Progress {
            phase: Phase::Copying,
            rows_copied: 1234,
            rows_estimate: 5000,
            rows_per_second: 812.345,
            eta_seconds: Some(4),
            backlog: 7,
            heartbeat_lag_millis: Some(120),
            replica_lag_millis: Some(250),
            throttle: ThrottleState {
                active: true,
                reason: "commanded by user".into(),
            },
            ..Progress::default()
        }
    }

    #[test]
    fn patch_holds_only_the_progress_field() {
        let patch = progress_patch("add-age", "shop", &copying());
        let top: Vec<&str> = patch
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(top, vec!["apiVersion", "kind", "metadata", "status"]);
        assert_eq!(patch["apiVersion"], "ghost.dev/v1alpha1");
        assert_eq!(patch["kind"], "SchemaMigration");
        assert_eq!(
            patch["metadata"],
            json!({"name": "add-age", "namespace": "shop"})
        );
        let status = patch["status"].as_object().expect("status");
        assert_eq!(
            status.keys().collect::<Vec<_>>(),
            vec!["progress"],
            "the controller owns every other status field"
        );
        let progress = &patch["status"]["progress"];
        assert_eq!(progress["phase"], "Copying");
        assert_eq!(progress["percent"], 24.7);
        assert_eq!(progress["rowsCopied"], 1234);
        assert_eq!(progress["rowsEstimate"], 5000);
        assert_eq!(progress["rowsPerSecond"], 812.3);
        assert_eq!(progress["etaSeconds"], 4);
        assert_eq!(progress["backlog"], 7);
        assert_eq!(progress["heartbeatLagMillis"], 120);
        assert_eq!(progress["replicaLagMillis"], 250);
        assert_eq!(
            progress["throttle"],
            json!({"active": true, "reason": "commanded by user"})
        );
        assert_eq!(progress["cutOver"], json!({"attempts": 0}));
        assert!(progress.get("message").is_none());
        assert!(progress.get("checkpointTime").is_none());
        // The patch is the status type's own serialization, so the CRD schema accepts it.
        let back: ProgressStatus = serde_json::from_value(progress.clone()).expect("round trip");
        assert_eq!(back, ProgressStatus::from_engine(&copying()));
    }

    #[test]
    fn failure_message_is_kept_and_bounded() {
        let failed = Progress {
            phase: Phase::Failed,
            message: "cannot connect to db:3306".into(),
            ..Progress::default()
        };
        let patch = progress_patch("x", "ns", &failed);
        assert_eq!(patch["status"]["progress"]["phase"], "Failed");
        assert_eq!(
            patch["status"]["progress"]["message"],
            "cannot connect to db:3306"
        );

        let long = Progress {
            phase: Phase::Failed,
            message: "é".repeat(5000),
            ..Progress::default()
        };
        let patch = progress_patch("x", "ns", &long);
        let message = patch["status"]["progress"]["message"]
            .as_str()
            .expect("message");
        assert!(message.len() <= MAX_MESSAGE_BYTES);
        assert!(message.len() > MAX_MESSAGE_BYTES - 2);
    }

    fn stage(phase: Phase) -> Stage {
        Stage {
            phase,
            throttled: false,
        }
    }

    #[test]
    fn phase_changes_are_written_at_once_the_rest_every_interval() {
        let t0 = Instant::now();
        let mut s = WriteSchedule::new(Duration::from_secs(3), Duration::from_secs(1));
        assert_eq!(s.due(stage(Phase::Pending), t0), t0, "first write at once");
        s.written(stage(Phase::Copying), t0);
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(
            s.due(stage(Phase::Copying), t1),
            t0 + Duration::from_secs(3)
        );
        assert_eq!(
            s.due(stage(Phase::Postponed), t1),
            t1,
            "a new phase is written at once"
        );
        let throttled = Stage {
            phase: Phase::Copying,
            throttled: true,
        };
        assert_eq!(s.due(throttled, t1), t1, "throttling is written at once");
        let t4 = t0 + Duration::from_secs(4);
        assert_eq!(
            s.due(stage(Phase::Copying), t4),
            t0 + Duration::from_secs(3),
            "overdue: now"
        );

        // A failed write holds every write back briefly, phase changes included.
        s.failed(t4);
        assert_eq!(s.due(stage(Phase::Failed), t4), t4 + Duration::from_secs(1));
        assert_eq!(
            s.due(stage(Phase::Copying), t4),
            t4 + Duration::from_secs(1)
        );
        s.written(stage(Phase::Failed), t4 + Duration::from_secs(1));
        assert_eq!(
            s.due(stage(Phase::Succeeded), t4 + Duration::from_secs(1)),
            t4 + Duration::from_secs(1)
        );
    }

    /// One recorded request: method, URI, content type, body.
    type Seen = Arc<Mutex<Vec<(String, String, String, Value)>>>;

    /// A kube client whose every request is recorded and answered with `reply`.
    fn mock_client(seen: Seen, reply: Value) -> kube::Client {
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let seen = seen.clone();
            let reply = reply.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.expect("request body");
                let content_type = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                seen.lock().expect("lock").push((
                    parts.method.to_string(),
                    parts.uri.to_string(),
                    content_type,
                    body,
                ));
                let response = http::Response::builder()
                    .status(200)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&reply).expect("reply"),
                    ))
                    .expect("response");
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        kube::Client::new(service, "shop")
    }

    fn stored_object() -> Value {
        json!({
            "apiVersion": "ghost.dev/v1alpha1",
            "kind": "SchemaMigration",
            "metadata": {"name": "add-age", "namespace": "shop"},
            "spec": {
                "connection": {
                    "host": "db",
                    "database": "shop",
                    "credentialsSecretRef": {"name": "shop-db"}
                },
                "table": "users",
                "alter": "ADD COLUMN age INT"
            }
        })
    }

    #[tokio::test]
    async fn progress_is_written_by_server_side_apply_on_the_status_subresource() {
        let seen: Seen = Arc::default();
        let client = mock_client(seen.clone(), stored_object());
        let api: Api<SchemaMigration> = Api::namespaced(client, "shop");
        let mut writer = ProgressWriter::new(api, "add-age", "shop");

        let status = ProgressStatus::from_engine(&copying());
        assert!(writer.write(&status).await.expect("write"));
        // Nothing changed: no second request.
        assert!(!writer.write(&status).await.expect("write"));

        let requests = seen.lock().expect("lock").clone();
        assert_eq!(requests.len(), 1, "{requests:?}");
        let (method, uri, content_type, body) = &requests[0];
        assert_eq!(method, "PATCH");
        let (path, query) = uri.split_once('?').expect("query string");
        assert_eq!(
            path,
            "/apis/ghost.dev/v1alpha1/namespaces/shop/schemamigrations/add-age/status"
        );
        let params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
        assert!(params.contains(&"fieldManager=ghost-engine"), "{query}");
        assert!(params.contains(&"force=true"), "{query}");
        assert_eq!(content_type, "application/apply-patch+yaml");
        assert_eq!(*body, progress_patch("add-age", "shop", &copying()));

        // A new phase is a new body.
        let done = Progress {
            phase: Phase::Succeeded,
            ..copying()
        };
        assert!(
            writer
                .write(&ProgressStatus::from_engine(&done))
                .await
                .expect("write")
        );
        let requests = seen.lock().expect("lock").clone();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[1].3["status"]["progress"]["phase"],
            json!(MigrationPhase::Succeeded)
        );
    }

    #[tokio::test]
    async fn follow_progress_writes_the_first_snapshot_and_stops_on_finish() {
        let seen: Seen = Arc::default();
        let client = mock_client(seen.clone(), stored_object());
        let api: Api<SchemaMigration> = Api::namespaced(client, "shop");
        let writer = ProgressWriter::new(api, "add-age", "shop");
        let (tx, rx) = watch::channel(Progress::default());
        let (finish_tx, finish_rx) = oneshot::channel();
        let task = tokio::spawn(follow_progress(writer, rx, finish_rx));

        // A phase change is written at once, well inside the 3 s interval.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send_modify(|p| p.phase = Phase::Validating);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = finish_tx.send(());
        let _writer = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops on finish")
            .expect("no panic");

        let phases: Vec<Value> = seen
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.3["status"]["progress"]["phase"].clone())
            .collect();
        assert_eq!(phases, vec![json!("Pending"), json!("Validating")]);
    }
}
