//! `ghost engine`: the engine inside a Job's pod, for one SchemaMigration (DESIGN.md §3,
//! "Who runs what").
//!
//! 1. Read the resource; map its spec to a `MigrationConfig` (`config`), with the database
//!    credentials from the environment and webhook keys from the mounted Secret files (`secrets`).
//! 2. Resume when the previous pod left a checkpoint (`resume`).
//! 3. Watch the resource: spec and annotations → the engine's controls (`controls`).
//! 4. Mirror the engine's progress into `.status.progress` (`status`).
//! 5. Exit 0 on success (a dry run and an instant ALTER included), 1 on failure, 2 on a
//!    configuration the engine cannot run, 3 when cancelled, 143 when the pod is stopped
//!    (SIGTERM), at once: the Job's next pod resumes.
//!
//! The engine itself never sees a Kubernetes type: this module is the only bridge.

pub mod config;
pub mod controls;
pub mod resume;
pub mod secrets;
pub mod status;

use std::process::ExitCode;
use std::time::Duration;

use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::api::engine_files::WEBHOOK_KEYS_DIR;
use crate::api::types::{MigrationPhase, ProgressStatus, SchemaMigration};
use crate::engine::EngineError;
use crate::engine::config::MigrationConfig;
use crate::engine::conn::Secret;
use crate::engine::migration::{Migration, Outcome};
use crate::engine::progress::{Phase, Progress};

pub use config::{ConfigError, credentials_from_env, migration_config, replica_server_id};
pub use controls::controls_for;
pub use resume::has_resumable_checkpoint;
pub use status::{FIELD_MANAGER, progress_patch};

/// Attempts at the last report (and at a refusal's) before the pod exits without it.
const FINAL_REPORT_ATTEMPTS: u32 = 5;
/// The most time the last report may take, all attempts included.
const FINAL_REPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most time a stopped pod spends saying so before it exits.
const STOP_REPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts at reading the resource at start, for a briefly unreachable API server.
const LOAD_ATTEMPTS: u32 = 4;

/// The resource this pod runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
}

/// How the pod ends, and its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineExit {
    /// Migrated, altered in place, or rehearsed (`execute: false`): 0.
    Succeeded,
    /// The migration failed; the Job may retry, and a retry resumes: 1.
    Failed,
    /// The resource cannot be run as written (credentials, TLS, ALTER, webhook keys): 2.
    Config,
    /// Cancelled by `ghost/panic` or by deleting the resource: 3, so the Job shows it.
    Cancelled,
    /// Stopped by SIGTERM (pod deleted, node drained): 143, as a process killed by it; the
    /// Job's next pod resumes.
    Stopped,
}

impl EngineExit {
    pub fn code(self) -> u8 {
        match self {
            EngineExit::Succeeded => 0,
            EngineExit::Failed => 1,
            EngineExit::Config => 2,
            EngineExit::Cancelled => 3,
            EngineExit::Stopped => 143,
        }
    }
}

impl From<EngineExit> for ExitCode {
    fn from(exit: EngineExit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// A failure before the engine started: the exit, and the message for `.status.progress`.
#[derive(Debug)]
struct Refusal {
    exit: EngineExit,
    message: String,
}

impl Refusal {
    fn config(e: ConfigError) -> Self {
        Self {
            exit: EngineExit::Config,
            message: e.to_string(),
        }
    }
}

/// Runs the migration of `target` to its end. `credentials` come from `credentials_from_env`;
/// when they are missing the failure is still reported in the resource's status.
pub async fn run(
    client: Client,
    target: &Target,
    credentials: Result<(String, Secret), ConfigError>,
) -> EngineExit {
    let api: Api<SchemaMigration> = Api::namespaced(client.clone(), &target.namespace);
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    tokio::spawn(stop_on_sigterm(
        api.clone(),
        target.clone(),
        progress_rx.clone(),
    ));
    let smig = match load(&api, &target.name).await {
        Ok(smig) => smig,
        Err(e) => {
            error!(error = %e, namespace = %target.namespace, name = %target.name,
                "cannot read the SchemaMigration");
            return EngineExit::Failed;
        }
    };
    let mut writer = status::ProgressWriter::new(api.clone(), &target.name, &target.namespace);

    // A finished migration never runs again, even if its Job starts another pod.
    if let Some(exit) = finished(&smig) {
        info!(?exit, "the migration has already finished; nothing to do");
        return exit;
    }

    let cfg = match prepare(target, &smig, credentials).await {
        Ok(cfg) => cfg,
        Err(refusal) => {
            error!("{}", refusal.message);
            let report = ProgressStatus {
                phase: Some(MigrationPhase::Failed),
                message: Some(refusal.message),
                ..ProgressStatus::default()
            };
            final_report(&mut writer, &report).await;
            return refusal.exit;
        }
    };

    let (initial, invalid) = controls::controls_for(&smig);
    for refused in &invalid {
        warn!(annotation = %refused.annotation, "{refused}");
    }
    let (controls_tx, controls_rx) = watch::channel(initial);
    let watcher = tokio::spawn(controls::follow_resource(
        api.clone(),
        target.name.clone(),
        controls_tx,
        invalid,
    ));
    let (finish_tx, finish_rx) = oneshot::channel();
    let reporter = tokio::spawn(status::follow_progress(
        writer,
        progress_rx.clone(),
        finish_rx,
    ));

    info!(
        database = %cfg.database,
        table = %cfg.table,
        execute = cfg.execute,
        resume = cfg.resume,
        server_id = cfg.replica_server_id,
        "migration starting"
    );
    let result = Migration::new(cfg, controls_rx, progress_tx.clone())
        .run()
        .await;
    watcher.abort();
    settle(&progress_tx, &result);

    // Stop the periodic writer, then write the final report ourselves, with retries.
    let _ = finish_tx.send(());
    let mut writer = match tokio::time::timeout(Duration::from_secs(5), reporter).await {
        Ok(Ok(writer)) => writer,
        _ => status::ProgressWriter::new(api, &target.name, &target.namespace),
    };
    let last = ProgressStatus::from_engine(&progress_rx.borrow());
    final_report(&mut writer, &last).await;

    match &result {
        Ok(outcome) => {
            info!(outcome = %describe(outcome), "migration finished");
            EngineExit::Succeeded
        }
        Err(EngineError::Cancelled(reason)) => {
            warn!(%reason, "migration cancelled");
            EngineExit::Cancelled
        }
        Err(e) => {
            error!(error = %e, "migration failed");
            EngineExit::Failed
        }
    }
}

/// The kubelet stops a pod with SIGTERM (the pod deleted, the node drained). As its container's
/// PID 1 the engine would not even notice (no default action for PID 1) and be killed after the
/// grace period; it stops at once instead, the way a kill stops it, which the checkpoint and the
/// resume are built for (the cut-over included). It says so in `.status` first, briefly.
async fn stop_on_sigterm(
    api: Api<SchemaMigration>,
    target: Target,
    progress: watch::Receiver<Progress>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!("cannot listen for SIGTERM ({e}): a stopped pod ends at its grace period");
            return;
        }
    };
    if term.recv().await.is_none() {
        return;
    }
    warn!(
        "SIGTERM: the pod is being stopped; exiting now, the Job's next pod resumes from the last checkpoint"
    );
    let mut last = ProgressStatus::from_engine(&progress.borrow());
    last.message = Some(
        "the engine pod was stopped (SIGTERM: deleted, evicted or drained); the Job's next pod \
         resumes from the last checkpoint"
            .to_string(),
    );
    let mut writer = status::ProgressWriter::new(api, &target.name, &target.namespace);
    let _ = tokio::time::timeout(STOP_REPORT_TIMEOUT, writer.write_with_retries(&last, 2)).await;
    std::process::exit(i32::from(EngineExit::Stopped.code()));
}

/// Everything that can refuse the run before the engine starts, in the order a user would fix
/// it: credentials, the spec, the webhook keys, then the database (resume check).
async fn prepare(
    target: &Target,
    smig: &SchemaMigration,
    credentials: Result<(String, Secret), ConfigError>,
) -> Result<MigrationConfig, Refusal> {
    let credentials = credentials.map_err(Refusal::config)?;
    // The UID is always set on a stored object; the fallback only keeps ids apart if not.
    let uid = smig
        .uid()
        .unwrap_or_else(|| format!("{}/{}", target.namespace, target.name));
    let server_id = replica_server_id(&uid);
    let mut cfg = migration_config(smig, credentials, server_id).map_err(Refusal::config)?;
    let keys = secrets::read_webhook_keys(WEBHOOK_KEYS_DIR, &smig.spec).map_err(Refusal::config)?;
    config::attach_webhook_secrets(&mut cfg, &smig.spec, &keys).map_err(Refusal::config)?;

    // Resume state lives on the server the migration writes to.
    let applier = cfg.primary.clone().unwrap_or_else(|| cfg.inspector.clone());
    // The TLS files the Job mounts, before the first connection: one the engine cannot read is
    // named here, not reported as an I/O error of a connection.
    if let Some(tls) = &applier.tls {
        tls.check_files().map_err(|e| Refusal {
            exit: EngineExit::Config,
            message: format!("spec.connection.tls: {e}"),
        })?;
    }
    cfg.resume = has_resumable_checkpoint(&applier, &cfg.database, &cfg.table)
        .await
        .map_err(|e| Refusal {
            exit: EngineExit::Failed,
            message: format!("looking for a checkpoint to resume from: {e}"),
        })?;
    if cfg.resume {
        info!("a checkpoint of an earlier engine pod exists: resuming from it");
    }
    Ok(cfg)
}

/// Writes a pod's last report, with retries, but bounded: an unreachable API server must not
/// keep a finished pod alive.
async fn final_report(writer: &mut status::ProgressWriter, report: &ProgressStatus) {
    let written = tokio::time::timeout(
        FINAL_REPORT_TIMEOUT,
        writer.write_with_retries(report, FINAL_REPORT_ATTEMPTS),
    )
    .await;
    if !matches!(written, Ok(true)) {
        warn!("the final .status.progress could not be written");
    }
}

/// Reads the resource, retrying briefly on errors other than "not found".
async fn load(api: &Api<SchemaMigration>, name: &str) -> Result<SchemaMigration, kube::Error> {
    let mut attempt = 1;
    loop {
        match api.get(name).await {
            Ok(smig) => return Ok(smig),
            Err(e) if attempt >= LOAD_ATTEMPTS || is_not_found(&e) => return Err(e),
            Err(e) => {
                warn!(error = %e, attempt, "reading the SchemaMigration failed; retrying");
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                attempt += 1;
            }
        }
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.is_not_found())
}

/// The exit of a migration that already ended, judged from its status: the controller's phase
/// when final, or the engine's own Succeeded or Cancelled (final as soon as reported; a Failed
/// report is not, since a new pod resumes).
fn finished(smig: &SchemaMigration) -> Option<EngineExit> {
    let status = smig.status.as_ref()?;
    let engine_final = status
        .progress
        .as_ref()
        .and_then(|p| p.phase)
        .filter(|p| matches!(p, MigrationPhase::Succeeded | MigrationPhase::Cancelled));
    match status.phase.filter(|p| p.is_terminal()).or(engine_final)? {
        MigrationPhase::Succeeded => Some(EngineExit::Succeeded),
        MigrationPhase::Cancelled => Some(EngineExit::Cancelled),
        _ => Some(EngineExit::Failed),
    }
}

/// Makes the last snapshot agree with the result, whatever the engine managed to report.
fn settle(progress: &watch::Sender<Progress>, result: &Result<Outcome, EngineError>) {
    progress.send_modify(|p| match result {
        Ok(outcome) => {
            p.phase = Phase::Succeeded;
            p.message = describe(outcome);
        }
        Err(e) => {
            if !matches!(p.phase, Phase::Failed | Phase::Cancelled) {
                p.phase = if matches!(e, EngineError::Cancelled(_)) {
                    Phase::Cancelled
                } else {
                    Phase::Failed
                };
            }
            if p.message.is_empty() {
                p.message = e.to_string();
            }
        }
    });
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Migrated { cut_over_lock } => format!(
            "migrated; writes were blocked for {} ms at cut-over",
            cut_over_lock.as_millis()
        ),
        Outcome::Instant => "altered in place with ALGORITHM=INSTANT".to_string(),
        Outcome::Recovered(report) => format!("migrated: {}", report.summary()),
        Outcome::DryRun { .. } => {
            "rehearsal complete (execute: false): the migration is valid; nothing was changed"
                .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::SchemaMigrationStatus;

    fn with_status(status: Option<SchemaMigrationStatus>) -> SchemaMigration {
        let mut smig: SchemaMigration = serde_yaml::from_str(
            r#"
apiVersion: ghost.dev/v1alpha1
kind: SchemaMigration
metadata: {name: add-age, namespace: shop}
spec:
  connection: {host: db, database: shop, credentialsSecretRef: {name: shop-db}}
  table: users
  alter: ADD COLUMN age INT
"#,
        )
        .expect("test manifest");
        smig.status = status;
        smig
    }

    fn status(
        phase: Option<MigrationPhase>,
        engine: Option<MigrationPhase>,
    ) -> SchemaMigrationStatus {
        SchemaMigrationStatus {
            phase,
            progress: engine.map(|phase| ProgressStatus {
                phase: Some(phase),
                ..ProgressStatus::default()
            }),
            ..SchemaMigrationStatus::default()
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(EngineExit::Succeeded.code(), 0);
        assert_eq!(EngineExit::Failed.code(), 1);
        assert_eq!(EngineExit::Config.code(), 2);
        assert_eq!(EngineExit::Cancelled.code(), 3);
        // The Job fails at once on these (its podFailurePolicy), and only on these.
        let final_exits: Vec<i32> = [EngineExit::Config, EngineExit::Cancelled]
            .map(|e| i32::from(e.code()))
            .to_vec();
        assert_eq!(final_exits, crate::operator::job::FINAL_EXIT_CODES);
    }

    #[test]
    fn finished_migrations_do_not_run_again() {
        use MigrationPhase::*;
        assert_eq!(finished(&with_status(None)), None);
        let cases = [
            (None, None, None),
            (Some(Copying), Some(Copying), None),
            // A failed pod's report: the next pod resumes.
            (Some(Copying), Some(Failed), None),
            (Some(Succeeded), None, Some(EngineExit::Succeeded)),
            (Some(Failed), Some(Failed), Some(EngineExit::Failed)),
            (Some(Cancelled), None, Some(EngineExit::Cancelled)),
            (
                Some(CuttingOver),
                Some(Succeeded),
                Some(EngineExit::Succeeded),
            ),
            (Some(Copying), Some(Cancelled), Some(EngineExit::Cancelled)),
        ];
        for (phase, engine, expected) in cases {
            let smig = with_status(Some(status(phase, engine)));
            assert_eq!(finished(&smig), expected, "{phase:?} / {engine:?}");
        }
    }

    #[test]
    fn settle_reports_the_outcome() {
        let (tx, rx) = watch::channel(Progress {
            phase: Phase::CuttingOver,
            ..Progress::default()
        });
        settle(
            &tx,
            &Ok(Outcome::Migrated {
                cut_over_lock: Duration::from_millis(42),
            }),
        );
        assert_eq!(rx.borrow().phase, Phase::Succeeded);
        assert!(rx.borrow().message.contains("42 ms"));

        let (tx, rx) = watch::channel(Progress {
            phase: Phase::Copying,
            ..Progress::default()
        });
        settle(&tx, &Err(EngineError::Cancelled("panic requested".into())));
        assert_eq!(rx.borrow().phase, Phase::Cancelled);
        assert!(rx.borrow().message.contains("panic requested"));

        // The engine's own failure report is kept.
        let (tx, rx) = watch::channel(Progress {
            phase: Phase::Failed,
            message: "the engine's words".into(),
            ..Progress::default()
        });
        settle(&tx, &Err(EngineError::Refused("other".into())));
        assert_eq!(rx.borrow().phase, Phase::Failed);
        assert_eq!(rx.borrow().message, "the engine's words");
    }
}
