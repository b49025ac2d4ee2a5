//! One reconcile of one SchemaMigration.
//!
//! Level-based and idempotent: every run looks at the resource, its Job and the other
//! migrations, and converges. The steps:
//!
//! 1. the finalizer: added just before the Job is created, so a deletion of a migration that
//!    started always gets its cleanup, and one that never started (queued, blocked) is deleted
//!    by the API server alone, as without an operator (`finalizer.rs`);
//! 2. the Job: read it; if there is none, ask the queue whether this migration may start, check
//!    the Secret, then create it (`job.rs`, `queue.rs`);
//! 3. the status: one pure function (`api::compute_status`) of the engine's progress and the Job's
//!    state, written with server-side apply under `ghost-operator` only when it changed, and never
//!    the `progress` field (the engine owns it);
//! 4. Events for what changed (phase, Job created, blockers, controls).
//!
//! A finished migration (Succeeded, Failed, Cancelled) never gets another Job: its Job is not even
//! looked at again, and the status function keeps its outcome.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, warn};

pub use super::context::{Context, PlannedEvent};
use super::engine_secrets;
use super::finalizer::{self, FINALIZER};
use super::job::{self, JobError};
use super::next_step::with_next_step;
use super::policy;
use super::queue::{self, Decision, Entry, Slot};
use super::start_check;
use crate::api::controls::InvalidControl;
use crate::api::status::{CONTROLS_VALID, READY, SUCCEEDED};
use crate::api::types::ValueSource;
use crate::api::{
    JobState, MigrationPhase, ProgressStatus, SchemaMigration, SchemaMigrationStatus, StatusInput,
    compute_status, effective_controls,
};

/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "ghost-operator";
/// The `reportingController` of its Events.
pub const REPORTER: &str = "ghost-operator";

/// How long a new Job's pod gets to start before the operator looks for a reason it does not.
const START_GRACE: Duration = Duration::from_secs(5);
/// Poll cadence while the engine runs; Job changes and the engine's status writes trigger a
/// reconcile anyway, this is the safety net.
const REQUEUE_RUNNING: Duration = Duration::from_secs(15);
/// Waiting for a human to release the cut-over: nothing changes on its own.
const REQUEUE_POSTPONED: Duration = Duration::from_secs(60);
/// Queued: a migration's end or deletion wakes the queue (`queue_moves`); this is the safety
/// net, and a queued reconcile reads only the cache.
const REQUEUE_QUEUED: Duration = Duration::from_secs(60);
/// No engine starts until deletions of SchemaMigrations have stopped for this long: a
/// `kubectl delete --all` must not start the migrations it is about to delete.
pub const DELETION_SETTLE: Duration = Duration::from_secs(5);
/// Blocked on the user (Secret missing): Secrets are not watched.
const REQUEUE_BLOCKED: Duration = Duration::from_secs(30);
const REQUEUE_ERROR: Duration = Duration::from_secs(30);
const REQUEUE_CLEANUP_WAIT: Duration = Duration::from_secs(5);

/// The apiserver caps an Event's note at 1 kB.
pub(crate) const MAX_NOTE_BYTES: usize = 1000;

const PANIC_BEFORE_START: &str =
    "ghost/panic=true was set before the engine started; no Job was created";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the resource has no {0}")]
    MissingField(&'static str),
    #[error(transparent)]
    Job(#[from] JobError),
    /// Not a failure: the deletion waits for the engine pod to stop.
    #[error("cleanup waits: {0}")]
    CleanupPending(String),
    #[error("cleanup failed: {0}")]
    Cleanup(String),
}

impl Error {
    /// The `error` label of the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::MissingField(_) => "invalid_object",
            Error::Job(_) => "job",
            Error::CleanupPending(_) => "cleanup_pending",
            Error::Cleanup(_) => "cleanup",
        }
    }

    /// The resource (or the finalizer's patch target) was deleted meanwhile: nothing failed.
    pub fn is_gone(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.is_not_found())
    }

    /// What the deletion is waiting for, when that is all this error says.
    pub fn cleanup_pending(&self) -> Option<&str> {
        match self {
            Error::CleanupPending(what) => Some(what.as_str()),
            _ => None,
        }
    }
}

/// Why a migration that may start cannot: a cause of its own that the user must fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    /// One of `queue::BLOCKED_REASONS`: the Ready condition's reason.
    pub reason: &'static str,
    pub message: String,
}

/// The Job side of one reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observation {
    job: JobState,
    job_name: Option<String>,
    blocker: Option<Blocker>,
    /// This reconcile created the Job.
    created: bool,
    /// `ghost/panic=true` before any Job existed: the migration ends here, Cancelled.
    cancelled_before_start: bool,
    /// Held back only because SchemaMigrations are being deleted (`DELETION_SETTLE`).
    settling: bool,
    /// Why the engine's pod does not start (`start_check`).
    start_problem: Option<String>,
    /// The Job's engine has not reported yet: look again soon.
    starting: bool,
}

impl Observation {
    fn with(job: JobState, job_name: Option<String>) -> Self {
        Self {
            job,
            job_name,
            blocker: None,
            created: false,
            cancelled_before_start: false,
            settling: false,
            start_problem: None,
            starting: false,
        }
    }

    fn blocked(blocker: Blocker) -> Self {
        Self {
            blocker: Some(blocker),
            ..Self::with(JobState::NotCreated, None)
        }
    }
}

/// The controller's reconcile function.
pub async fn reconcile(smig: Arc<SchemaMigration>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started();
    let namespace = smig
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    // `migration`, not `name`: a JSON log already has the span's own `name` ("reconcile").
    let span =
        tracing::info_span!("reconcile", namespace = %namespace, migration = %smig.name_any());
    let api: Api<SchemaMigration> = Api::namespaced(ctx.client.clone(), &namespace);
    if smig.metadata.deletion_timestamp.is_some() {
        ctx.note_deletion();
    }
    let succeeded = smig.status.as_ref().and_then(|s| s.phase) == Some(MigrationPhase::Succeeded);
    if succeeded {
        // Nothing of it is left to clean up (the engine dropped its tables): the finalizer
        // goes, so deleting it later, also after the operator is uninstalled, never hangs.
        return finish_succeeded(&smig, &ctx, &api).instrument(span).await;
    }
    async move {
        if smig.metadata.deletion_timestamp.is_none() {
            return apply(&smig, &ctx).await;
        }
        if !finalizer::has_finalizer(&smig) {
            // It never got as far as a Job (the finalizer comes first): nothing to clean up,
            // and the API server has deleted it already, as without an operator.
            finalizer::forget(&smig, &ctx);
            return Ok(Action::await_change());
        }
        let action = finalizer::cleanup(&smig, &ctx).await?;
        finalizer::remove_finalizer(&api, &smig).await?;
        Ok(action)
    }
    .instrument(span)
    .await
}

/// A Succeeded migration: its status kept current, and the finalizer removed.
async fn finish_succeeded(
    smig: &SchemaMigration,
    ctx: &Context,
    api: &Api<SchemaMigration>,
) -> Result<Action, Error> {
    let action = if smig.metadata.deletion_timestamp.is_none() {
        apply(smig, ctx).await?
    } else {
        if let Some(uid) = smig.uid() {
            ctx.forget(&uid);
        }
        ctx.metrics
            .forget(&smig.namespace().unwrap_or_default(), &smig.name_any());
        Action::await_change()
    };
    let finalizers = smig.finalizers();
    if finalizers.iter().any(|f| f == FINALIZER) {
        let kept: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
        // The resourceVersion makes it conditional: a finalizer added meanwhile is not lost.
        let patch = json!({
            "metadata": {
                "finalizers": kept,
                "resourceVersion": smig.resource_version(),
            }
        });
        match api
            .patch(
                &smig.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => debug!("succeeded: removed the finalizer"),
            // Gone already, or changed meanwhile: the next reconcile looks again.
            Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(action)
}

fn not_starting(problem: &str, smig: &SchemaMigration) -> String {
    with_next_step(
        &format!("the engine cannot start: {problem}"),
        "EngineNotStarting",
        smig,
    )
}

/// The controller's error policy: retry soon; a deletion waiting for its pod is not a failure.
pub fn error_policy(smig: Arc<SchemaMigration>, error: &Error, ctx: Arc<Context>) -> Action {
    let namespace = smig.namespace().unwrap_or_default();
    let name = smig.name_any();
    if let Some(what) = error.cleanup_pending() {
        debug!(%namespace, migration = %name, "deletion waits: {what}");
        return Action::requeue(REQUEUE_CLEANUP_WAIT);
    }
    if error.is_gone() {
        debug!(%namespace, migration = %name, "gone during its reconcile: {error}");
        return Action::await_change();
    }
    ctx.metrics.reconcile_failed(error.metric_label());
    warn!(%namespace, migration = %name, "reconcile failed: {error}");
    Action::requeue(REQUEUE_ERROR)
}

/// The resource exists and carries the finalizer.
async fn apply(smig: &SchemaMigration, ctx: &Context) -> Result<Action, Error> {
    let namespace = smig
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = smig.name_any();
    let uid = smig.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let previous = smig.status.as_ref();
    let progress = previous.and_then(|s| s.progress.as_ref());
    let (controls, sources, invalid) = effective_controls(&smig.spec, smig.annotations());

    let finished = previous
        .and_then(|s| s.phase)
        .is_some_and(MigrationPhase::is_terminal);
    let mut observation = if finished {
        ctx.announce_finished(&uid);
        Observation::with(JobState::NotCreated, None)
    } else {
        observe_job(smig, ctx, &namespace, &name, &uid, controls.panic).await?
    };
    if let Some(blocker) = observation.blocker.as_mut() {
        blocker.message = with_next_step(&blocker.message, blocker.reason, smig);
    }

    let now = now();
    let synthetic;
    let (job_for_status, progress_for_status) = if observation.cancelled_before_start {
        // The status function's own rule: an engine that reports Cancelled is final.
        synthetic = ProgressStatus {
            phase: Some(MigrationPhase::Cancelled),
            message: Some(PANIC_BEFORE_START.to_string()),
            ..ProgressStatus::default()
        };
        (JobState::Running, Some(&synthetic))
    } else {
        (observation.job.clone(), progress)
    };
    let mut status = compute_status(&StatusInput {
        generation: smig.metadata.generation,
        previous,
        progress: progress_for_status,
        job: &job_for_status,
        job_name: observation.job_name.as_deref(),
        execute: smig.spec.execute,
        controls: &sources,
        invalid_controls: &invalid,
        now: &now,
    });
    if observation.cancelled_before_start {
        // It never started.
        status.start_time = previous.and_then(|s| s.start_time.clone());
    }
    if let Some(blocker) = &observation.blocker {
        apply_blocker(&mut status, blocker);
    }
    if let Some(problem) = &observation.start_problem {
        status.message = Some(not_starting(problem, smig));
    }
    // A migration that stopped says what to run next (kept as it is once it has a command).
    if let Some(phase) = status
        .phase
        .filter(|p| matches!(p, MigrationPhase::Failed | MigrationPhase::Cancelled))
        && let Some(message) = status.message.clone()
    {
        let with_step = with_next_step(&message, phase.as_str(), smig);
        // The Failed condition carries the same text; both must stay as written, or every
        // later reconcile would rewrite them.
        for condition in status
            .conditions
            .iter_mut()
            .filter(|c| c.message == message)
        {
            condition.message = with_step.clone();
        }
        status.message = Some(with_step);
    }

    if status_changed(previous, &status) {
        write_status(&ctx.client, &namespace, &name, &status).await?;
        ctx.metrics.status_written();
    }
    for event in planned_events(previous, &status, &observation, &invalid) {
        ctx.publish(smig, event).await;
    }
    if let Some(problem) = &observation.start_problem {
        if previous.and_then(|s| s.message.as_deref()) != status.message.as_deref() {
            let note = not_starting(problem, smig);
            ctx.publish(
                smig,
                PlannedEvent::warning("EngineNotStarting", "StartEngine", note),
            )
            .await;
        }
    }
    ctx.metrics.observe(&namespace, &name, &status, progress);
    Ok(next_action(&status, &observation))
}

/// Reads the Job, or decides whether to create it and does.
async fn observe_job(
    smig: &SchemaMigration,
    ctx: &Context,
    namespace: &str,
    name: &str,
    uid: &str,
    panic: bool,
) -> Result<Observation, Error> {
    let me = Entry::from_migration(smig, ctx.started_here(uid));
    // Not started: the queue decides from the cache alone, so a long queue costs the API
    // server nothing. A migration that started before and lost its Job (deleted by hand) gets
    // it back without queueing: it still holds its table, and the engine resumes.
    if me.slot != Slot::Active && !panic {
        let entries = ctx.queue_entries(smig);
        if let Decision::Wait(reason) = queue::decide(&me, &entries, ctx.max_per_host) {
            debug!(%reason, "queued");
            return Ok(Observation::with(JobState::Queued { reason }, None));
        }
        if let Some(left) = ctx.deletions_settling() {
            debug!(wait = ?left, "deletions in progress; not starting an engine yet");
            // The message it had, so that the wait writes nothing.
            let reason = smig
                .status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .and_then(|m| m.strip_prefix("queued: "))
                .map_or_else(
                    || {
                        "SchemaMigrations are being deleted; engines start once that is over"
                            .to_string()
                    },
                    str::to_string,
                );
            return Ok(Observation {
                settling: true,
                ..Observation::with(JobState::Queued { reason }, None)
            });
        }
    }

    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let job_name = job::job_name(name);
    if let Some(existing) = jobs.get_opt(&job_name).await? {
        if !job::is_owned_by(&existing, uid) {
            return Ok(Observation::blocked(Blocker {
                reason: "JobNameTaken",
                message: format!(
                    "Job {job_name} exists but belongs to something else (a Job of a deleted \
                     SchemaMigration of the same name still being removed?): waiting for it to go"
                ),
            }));
        }
        // Also after a restart of the operator: this Job counts as started from now on.
        ctx.mark_started(uid);
        let mut state = job::job_state(&existing);
        let engine_silent = smig.status.as_ref().is_none_or(|s| s.progress.is_none());
        if state == JobState::Running && engine_silent {
            return not_started(ctx, namespace, name, &jobs, &existing, job_name).await;
        }
        // "BackoffLimitExceeded" says that the pods failed, not why: a killed engine (OOM) could
        // not report it itself.
        if let JobState::Failed { message } = &mut state {
            if let Some(why) = start_check::diagnose_kill(&ctx.client, namespace, name).await? {
                *message = format!("{why} ({message})");
            }
        }
        return Ok(Observation::with(state, Some(job_name)));
    }

    // The Job this controller created is gone after the engine reported its outcome: that
    // outcome stands. A report on a migration that never had a Job is nobody's.
    let engine_phase = smig
        .status
        .as_ref()
        .filter(|s| s.job.is_some())
        .and_then(|s| s.progress.as_ref())
        .and_then(|p| p.phase)
        .filter(|p| p.is_terminal());
    if let Some(phase) = engine_phase {
        let state = if phase == MigrationPhase::Failed {
            JobState::Failed {
                message: "the engine Job was deleted".to_string(),
            }
        } else {
            JobState::Succeeded
        };
        return Ok(Observation::with(state, None));
    }

    if panic {
        return Ok(Observation {
            cancelled_before_start: true,
            ..Observation::with(JobState::NotCreated, None)
        });
    }

    if let Err(blocker) = policy::check_engine(smig, &ctx.engine, &ctx.engine.policy) {
        return Ok(Observation::blocked(blocker));
    }
    if let Some(blocker) = engine_secrets::check(&ctx.client, namespace, &smig.spec).await? {
        return Ok(Observation::blocked(blocker));
    }

    let job = job::build_job(smig, &ctx.engine)?;
    // The finalizer before the Job: whatever the Job does, a deletion cleans up after it.
    if !finalizer::has_finalizer(smig) {
        let api: Api<SchemaMigration> = Api::namespaced(ctx.client.clone(), namespace);
        finalizer::add_finalizer(&api, smig).await?;
    }
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    match jobs.create(&params, &job).await {
        Ok(_) => {
            ctx.metrics.job_created();
            info!(job = %job_name, "created the engine Job");
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Ok(Observation::blocked(engine_secrets::namespace_not_enabled(
                namespace,
                "create Jobs",
            )));
        }
        // A concurrent reconcile won the race; the Job is the same either way.
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            debug!(job = %job_name, "the engine Job exists already");
        }
        Err(e) => return Err(e.into()),
    }
    ctx.mark_started(uid);
    Ok(Observation {
        created: true,
        ..Observation::with(JobState::Running, Some(job_name))
    })
}

/// A Job whose engine has reported nothing yet: why its pod does not start, and past the start
/// timeout, the end of the migration (the Job deleted, so that no pod starts it later).
async fn not_started(
    ctx: &Context,
    namespace: &str,
    name: &str,
    jobs: &Api<Job>,
    existing: &Job,
    job_name: String,
) -> Result<Observation, Error> {
    let age = existing
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| Timestamp::now().as_second() - t.0.as_second())
        .and_then(|s| u64::try_from(s).ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    // A pod takes a few seconds to start: look only after that.
    if age < START_GRACE {
        return Ok(Observation {
            starting: true,
            ..Observation::with(JobState::Running, Some(job_name))
        });
    }
    let problem = start_check::diagnose(&ctx.client, namespace, name, &job_name).await?;
    if age >= ctx.engine.start_timeout {
        let why = problem.unwrap_or_else(|| "no engine pod has reported".to_string());
        let message = format!(
            "the engine did not start within {}s ({why}); its Job is deleted. Fix the cause and \
             apply the SchemaMigration again under a new name",
            ctx.engine.start_timeout.as_secs()
        );
        match jobs.delete(&job_name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        warn!(job = %job_name, "{message}");
        return Ok(Observation::with(
            JobState::Failed { message },
            Some(job_name),
        ));
    }
    Ok(Observation {
        start_problem: problem,
        starting: true,
        ..Observation::with(JobState::Running, Some(job_name))
    })
}

/// Puts a blocker's cause where humans and tools look: the message and the Ready and Succeeded
/// conditions (whose status the status function already set: False and Unknown).
fn apply_blocker(status: &mut SchemaMigrationStatus, blocker: &Blocker) {
    status.message = Some(blocker.message.clone());
    for c in &mut status.conditions {
        if c.type_ == READY || c.type_ == SUCCEEDED {
            c.reason = blocker.reason.to_string();
            c.message = blocker.message.clone();
        }
    }
}

/// Whether the controller's fields differ from what the resource shows (the engine's
/// `progress` is not the controller's to compare or write).
fn status_changed(
    previous: Option<&SchemaMigrationStatus>,
    status: &SchemaMigrationStatus,
) -> bool {
    match previous {
        None => true,
        Some(previous) => {
            let mut ours = previous.clone();
            ours.progress = None;
            ours != *status
        }
    }
}

/// Server-side apply of the controller's status fields. The body never has `progress`
/// (`compute_status` leaves it `None`), so the engine's field stays the engine's.
async fn write_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &SchemaMigrationStatus,
) -> Result<(), Error> {
    let api: Api<SchemaMigration> = Api::namespaced(client.clone(), namespace);
    let body = json!({
        "apiVersion": SchemaMigration::api_version(&()),
        "kind": SchemaMigration::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// The Events one reconcile publishes, in order.
fn planned_events(
    previous: Option<&SchemaMigrationStatus>,
    status: &SchemaMigrationStatus,
    observation: &Observation,
    invalid: &[InvalidControl],
) -> Vec<PlannedEvent> {
    let mut events = Vec::new();
    if let Some(job) = observation
        .job_name
        .as_ref()
        .filter(|_| observation.created)
    {
        events.push(PlannedEvent::normal(
            "JobCreated",
            "StartEngine",
            format!("created Job {job}: the engine starts"),
        ));
    }
    if let Some(blocker) = &observation.blocker {
        let already_said =
            previous.and_then(|s| s.message.as_deref()) == Some(blocker.message.as_str());
        if !already_said {
            events.push(PlannedEvent::warning(
                blocker.reason,
                "StartEngine",
                blocker.message.clone(),
            ));
        }
    }

    let old_phase = previous.and_then(|s| s.phase);
    if let Some(phase) = status.phase.filter(|p| Some(*p) != old_phase) {
        let note = status.message.clone().unwrap_or_else(|| phase.to_string());
        events.push(match phase {
            MigrationPhase::Failed | MigrationPhase::Cancelled => {
                PlannedEvent::warning(phase.as_str(), "Migrate", note)
            }
            _ => PlannedEvent::normal(phase.as_str(), "Migrate", note),
        });
    }

    if !invalid.is_empty() {
        let message_of = |s: &SchemaMigrationStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == CONTROLS_VALID)
                .map(|c| c.message.clone())
        };
        let now = message_of(status);
        if now != previous.and_then(message_of) {
            let list = invalid
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            events.push(PlannedEvent::warning(
                "InvalidAnnotation",
                "ApplyControls",
                list,
            ));
        }
    }

    // Control changes, once there is a previous value to compare with.
    if let Some(previous) = previous.filter(|p| !p.effective_controls.is_empty()) {
        let changed: Vec<String> = status
            .effective_controls
            .iter()
            .filter(|c| !previous.effective_controls.contains(c))
            .map(|c| {
                let source = match c.source {
                    ValueSource::Spec => "spec",
                    ValueSource::Annotation => "annotation",
                    ValueSource::Default => "default",
                };
                format!("{}={} (from {source})", c.name, c.value)
            })
            .collect();
        if !changed.is_empty() {
            events.push(PlannedEvent::normal(
                "ControlsChanged",
                "ApplyControls",
                changed.join(", "),
            ));
        }
    }
    events
}

fn next_action(status: &SchemaMigrationStatus, observation: &Observation) -> Action {
    match status.phase {
        Some(phase) if phase.is_terminal() => Action::await_change(),
        _ if observation.blocker.is_some() => Action::requeue(REQUEUE_BLOCKED),
        _ if observation.settling => Action::requeue(DELETION_SETTLE),
        _ if observation.starting => Action::requeue(START_GRACE),
        Some(MigrationPhase::Queued) => Action::requeue(REQUEUE_QUEUED),
        Some(MigrationPhase::Postponed) => Action::requeue(REQUEUE_POSTPONED),
        _ => Action::requeue(REQUEUE_RUNNING),
    }
}

/// Now, to the second: the API stores times to the second, and a status computed from the
/// stored one must compare equal to it.
fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use kube::runtime::events::EventType;

    use super::*;
    use crate::api::types::ControlSource;

    fn status_with(phase: MigrationPhase, message: &str) -> SchemaMigrationStatus {
        SchemaMigrationStatus {
            phase: Some(phase),
            message: Some(message.into()),
            ..SchemaMigrationStatus::default()
        }
    }

    fn observation() -> Observation {
        Observation::with(JobState::Running, Some("ghost-add-age".into()))
    }

    #[test]
    fn events_on_phase_changes_only() {
        let before = status_with(MigrationPhase::Pending, "waiting");
        let after = status_with(MigrationPhase::Copying, "copying rows");
        let events = planned_events(Some(&before), &after, &observation(), &[]);
        assert_eq!(
            events,
            [PlannedEvent::normal("Copying", "Migrate", "copying rows")]
        );
        assert!(planned_events(Some(&after), &after, &observation(), &[]).is_empty());

        let failed = status_with(MigrationPhase::Failed, "no unique key");
        let events = planned_events(Some(&after), &failed, &observation(), &[]);
        assert_eq!(events[0].type_, EventType::Warning);
        assert_eq!(events[0].reason, "Failed");
    }

    #[test]
    fn job_created_and_blocker_events() {
        let status = status_with(MigrationPhase::Pending, "waiting for the engine to start");
        let created = Observation {
            created: true,
            ..observation()
        };
        let events = planned_events(None, &status, &created, &[]);
        let reasons: Vec<&str> = events.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["JobCreated", "Pending"]);

        let blocker = Blocker {
            reason: "SecretNotFound",
            message: "Secret shop-db not found".into(),
        };
        let blocked = Observation::blocked(blocker.clone());
        let mut status = status_with(MigrationPhase::Pending, "");
        apply_blocker(&mut status, &blocker);
        let events = planned_events(None, &status, &blocked, &[]);
        assert_eq!(events[0].type_, EventType::Warning);
        assert_eq!(events[0].reason, "SecretNotFound");
        // Said once, not at every requeue.
        assert!(planned_events(Some(&status), &status, &blocked, &[]).is_empty());
    }

    #[test]
    fn invalid_annotations_and_control_changes() {
        let invalid = vec![InvalidControl {
            annotation: "ghost/chunk-size".into(),
            value: "huge".into(),
            reason: "must be a whole number".into(),
        }];
        let control = |value: &str, source| ControlSource {
            name: "throttle".into(),
            value: value.into(),
            source,
        };
        let mut before = status_with(MigrationPhase::Copying, "copying");
        before.effective_controls = vec![control("false", ValueSource::Default)];
        let mut after = before.clone();
        after.effective_controls = vec![control("true", ValueSource::Annotation)];
        after.conditions = vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: CONTROLS_VALID.into(),
            status: "False".into(),
            reason: "InvalidAnnotation".into(),
            message: "ghost/chunk-size=\"huge\" ignored".into(),
            observed_generation: None,
            last_transition_time: now(),
        }];
        let events = planned_events(Some(&before), &after, &observation(), &invalid);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].reason, "InvalidAnnotation");
        assert_eq!(events[0].type_, EventType::Warning);
        assert!(events[0].note.contains("ghost/chunk-size"));
        assert_eq!(events[1].reason, "ControlsChanged");
        assert_eq!(events[1].note, "throttle=true (from annotation)");

        // The same invalid annotation at the next reconcile: no repeat.
        assert!(planned_events(Some(&after), &after, &observation(), &invalid).is_empty());
    }

    #[test]
    fn blockers_show_in_message_and_conditions() {
        let mut status = compute_status(&StatusInput {
            generation: Some(1),
            previous: None,
            progress: None,
            job: &JobState::NotCreated,
            job_name: None,
            execute: true,
            controls: &[],
            invalid_controls: &[],
            now: &now(),
        });
        let blocker = Blocker {
            reason: "SecretNotFound",
            message: "Secret x not found in namespace y".into(),
        };
        apply_blocker(&mut status, &blocker);
        assert_eq!(status.phase, Some(MigrationPhase::Pending));
        assert_eq!(
            status.message.as_deref(),
            Some("Secret x not found in namespace y")
        );
        let ready = status.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SecretNotFound")
        );
        assert_eq!(
            next_action(&status, &Observation::blocked(blocker)),
            Action::requeue(REQUEUE_BLOCKED)
        );
    }

    #[test]
    fn status_comparison_ignores_the_engines_progress() {
        let ours = status_with(MigrationPhase::Copying, "copying");
        let mut seen = ours.clone();
        seen.progress = Some(ProgressStatus {
            percent: Some(50.0),
            ..ProgressStatus::default()
        });
        assert!(!status_changed(Some(&seen), &ours));
        assert!(status_changed(None, &ours));
        assert!(status_changed(
            Some(&seen),
            &status_with(MigrationPhase::Copying, "copying rows: 10")
        ));
    }

    #[test]
    fn requeue_cadence() {
        let o = observation();
        let at = |phase| next_action(&status_with(phase, ""), &o);
        assert_eq!(at(MigrationPhase::Succeeded), Action::await_change());
        assert_eq!(at(MigrationPhase::Queued), Action::requeue(REQUEUE_QUEUED));
        assert_eq!(
            at(MigrationPhase::Postponed),
            Action::requeue(REQUEUE_POSTPONED)
        );
        assert_eq!(
            at(MigrationPhase::Copying),
            Action::requeue(REQUEUE_RUNNING)
        );
    }

    #[test]
    fn notes_are_cut_on_a_char_boundary() {
        let long = "é".repeat(800);
        let cut = truncate(&long, MAX_NOTE_BYTES);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", MAX_NOTE_BYTES), "short");
    }

    #[test]
    fn error_kinds() {
        let pending = Error::CleanupPending("pod x".into());
        assert_eq!(pending.cleanup_pending(), Some("pod x"));
        assert_eq!(pending.metric_label(), "cleanup_pending");
        let failed = Error::Cleanup("db down".into());
        assert_eq!(failed.cleanup_pending(), None);
        assert_eq!(failed.metric_label(), "cleanup");
    }
}
