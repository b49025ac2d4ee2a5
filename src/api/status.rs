//! The controller's share of `.status`, as a pure function of what it observes: the engine's
//! report (`.status.progress`, written by the engine pod), the Job's state, the generation and
//! the clock. No I/O, so every transition is a plain unit test.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::controls::InvalidControl;
use super::types::{ControlSource, MigrationPhase, ProgressStatus, SchemaMigrationStatus};

pub const READY: &str = "Ready";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";
pub const THROTTLED: &str = "Throttled";
pub const CUT_OVER_POSTPONED: &str = "CutOverPostponed";
pub const QUEUED: &str = "Queued";
pub const CONTROLS_VALID: &str = "ControlsValid";

const POSTPONED_MESSAGE: &str = "rows copied; cut-over postponed: annotate \
                                 ghost/postpone-cut-over=false (it wins over the spec) or set \
                                 spec.cutOver.postpone to false";

/// The API server caps condition messages at 32768 bytes; Job and engine messages can be long.
const MAX_MESSAGE_BYTES: usize = 4096;

/// What the controller knows of the engine Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Not created yet (or already garbage-collected after the migration finished).
    NotCreated,
    /// Held back by the controller: another migration of the same table, or the per-host cap.
    /// `reason` is for humans.
    Queued { reason: String },
    /// Created and not finished: the pod may be starting, running or being retried.
    Running,
    /// The engine exited 0.
    Succeeded,
    /// The Job gave up (backoff limit, deadline); `message` is the Job's failure condition.
    Failed { message: String },
}

/// Everything `compute_status` looks at.
#[derive(Clone, Copy, Debug)]
pub struct StatusInput<'a> {
    /// `metadata.generation` of the resource.
    pub generation: Option<i64>,
    /// The status as last read (its phase, times and conditions carry over).
    pub previous: Option<&'a SchemaMigrationStatus>,
    /// `.status.progress` as the engine last wrote it.
    pub progress: Option<&'a ProgressStatus>,
    pub job: &'a JobState,
    /// The engine Job's name, once the controller has created it.
    pub job_name: Option<&'a str>,
    /// `spec.execute`: false makes a successful run a rehearsal.
    pub execute: bool,
    /// From `effective_controls`.
    pub controls: &'a [ControlSource],
    pub invalid_controls: &'a [InvalidControl],
    pub now: &'a Time,
}

/// The controller-owned status fields. `progress` is always `None`: the engine owns it, and the
/// controller's server-side apply must not claim it.
pub fn compute_status(input: &StatusInput<'_>) -> SchemaMigrationStatus {
    let previous = input.previous;
    let (phase, message) = decide_phase(input);
    let message = truncate(&message);

    let start_time = previous.and_then(|s| s.start_time.clone()).or_else(|| {
        matches!(
            input.job,
            JobState::Running | JobState::Succeeded | JobState::Failed { .. }
        )
        .then(|| input.now.clone())
    });
    let completion_time = phase.is_terminal().then(|| {
        previous
            .and_then(|s| s.completion_time.clone())
            .unwrap_or_else(|| input.now.clone())
    });

    let desired = desired_conditions(input, phase, &message);
    let old = previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let conditions = desired
        .into_iter()
        .map(|d| merge_condition(old, d, input.generation, input.now))
        .collect();

    SchemaMigrationStatus {
        observed_generation: input.generation,
        phase: Some(phase),
        message: Some(message),
        conditions,
        job: input
            .job_name
            .map(str::to_string)
            .or_else(|| previous.and_then(|s| s.job.clone())),
        start_time,
        completion_time,
        progress: None,
        effective_controls: input.controls.to_vec(),
    }
}

fn decide_phase(input: &StatusInput<'_>) -> (MigrationPhase, String) {
    let previous_phase = input.previous.and_then(|s| s.phase);
    // A finished migration never re-runs, and its outcome never changes: a later Job deletion
    // or a spec edit must not turn Succeeded into Pending.
    if let Some(phase) = previous_phase.filter(|p| p.is_terminal()) {
        let message = input
            .previous
            .and_then(|s| s.message.clone())
            .unwrap_or_else(|| phase.to_string());
        return (phase, message);
    }

    let progress = input.progress;
    let engine_phase = progress.and_then(|p| p.phase);
    let engine_message = progress
        .and_then(|p| p.message.as_deref())
        .filter(|m| !m.trim().is_empty());

    match input.job {
        JobState::Queued { reason } => (MigrationPhase::Queued, format!("queued: {reason}")),
        JobState::NotCreated => (
            MigrationPhase::Pending,
            "creating the engine Job".to_string(),
        ),
        JobState::Running => match engine_phase {
            // Queued is the controller's phase; an engine never reports it.
            None | Some(MigrationPhase::Queued) => (
                MigrationPhase::Pending,
                "waiting for the engine to start".to_string(),
            ),
            // The Job may start another pod, which resumes from the checkpoint, so this is not
            // final yet: keep the last active phase and say what happened.
            Some(MigrationPhase::Failed) => (
                previous_phase
                    .filter(|p| *p != MigrationPhase::Queued)
                    .unwrap_or(MigrationPhase::Pending),
                format!(
                    "the engine failed and the Job may retry: {}",
                    engine_message.unwrap_or("no message")
                ),
            ),
            // Success is the Job's to confirm: `.status.progress` is written by a pod, and
            // a report alone never makes a migration Succeeded.
            Some(MigrationPhase::Succeeded) => (
                previous_phase
                    .filter(|p| !matches!(p, MigrationPhase::Queued | MigrationPhase::Pending))
                    .unwrap_or(MigrationPhase::CuttingOver),
                "the engine reports the migration complete; waiting for its Job to succeed"
                    .to_string(),
            ),
            Some(MigrationPhase::Cancelled) => {
                (MigrationPhase::Cancelled, cancelled_message(engine_message))
            }
            Some(phase) => (phase, active_message(phase, progress)),
        },
        JobState::Succeeded => match engine_phase {
            Some(MigrationPhase::Cancelled) => {
                (MigrationPhase::Cancelled, cancelled_message(engine_message))
            }
            _ => (MigrationPhase::Succeeded, success_message(input, progress)),
        },
        JobState::Failed { message } => match engine_phase {
            // Never Succeeded without the Job's success; say what is known.
            Some(MigrationPhase::Succeeded) => (
                MigrationPhase::Failed,
                format!(
                    "the engine reported the migration complete, but its Job failed ({message}): \
                     look at the table; the swap may have happened"
                ),
            ),
            Some(MigrationPhase::Cancelled) => {
                (MigrationPhase::Cancelled, cancelled_message(engine_message))
            }
            _ => (
                MigrationPhase::Failed,
                match engine_message {
                    Some(engine) if !message.is_empty() => format!("{engine} ({message})"),
                    Some(engine) => engine.to_string(),
                    None if !message.is_empty() => message.clone(),
                    None => "the engine Job failed".to_string(),
                },
            ),
        },
    }
}

fn success_message(input: &StatusInput<'_>, progress: Option<&ProgressStatus>) -> String {
    if !input.execute {
        return "rehearsal complete (execute: false): nothing was changed".to_string();
    }
    let lock = progress
        .and_then(|p| p.cut_over.as_ref())
        .and_then(|c| c.lock_millis);
    match lock {
        Some(ms) => format!("migration complete; writes were blocked for {ms} ms"),
        None => "migration complete".to_string(),
    }
}

fn cancelled_message(engine_message: Option<&str>) -> String {
    match engine_message {
        Some(m) => format!("cancelled: {m}"),
        None => "cancelled".to_string(),
    }
}

fn active_message(phase: MigrationPhase, progress: Option<&ProgressStatus>) -> String {
    let mut message = match phase {
        MigrationPhase::Validating => "validating the server, the table and the ALTER".to_string(),
        MigrationPhase::Copying => copy_message(progress),
        MigrationPhase::Verifying => "verifying checksums of both tables".to_string(),
        MigrationPhase::Postponed => POSTPONED_MESSAGE.to_string(),
        MigrationPhase::CuttingOver => {
            let attempts = progress
                .and_then(|p| p.cut_over.as_ref())
                .map_or(0, |c| c.attempts);
            format!("cutting over (attempt {})", attempts.max(1))
        }
        other => other.to_string(),
    };
    match active_throttle(progress) {
        Some("") => message.push_str("; throttled"),
        Some(reason) => {
            message.push_str("; throttled: ");
            message.push_str(reason);
        }
        None => {}
    }
    message
}

fn copy_message(progress: Option<&ProgressStatus>) -> String {
    let Some(p) = progress else {
        return "copying rows".to_string();
    };
    let mut message = format!("copying rows: {}", p.rows_copied.unwrap_or(0));
    if let Some(estimate) = p.rows_estimate.filter(|e| *e > 0) {
        message.push_str(&format!(" of ~{estimate}"));
    }
    if let Some(percent) = p.percent {
        message.push_str(&format!(" ({percent:.1}%)"));
    }
    if let Some(eta) = p.eta_seconds {
        message.push_str(&format!(", ETA {}", human_seconds(eta)));
    }
    message
}

fn human_seconds(total: i64) -> String {
    let total = total.max(0);
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// The engine's throttle reason when it is throttled ("" when it gave none).
fn active_throttle(progress: Option<&ProgressStatus>) -> Option<&str> {
    progress
        .and_then(|p| p.throttle.as_ref())
        .filter(|t| t.active)
        .map(|t| t.reason.as_deref().unwrap_or(""))
}

/// A one-word reason for the Throttled condition from the engine's reason text. The throttler
/// starts each reason with its source ("lag=…", "max-load …", "throttle-query failed: …"); only
/// prefixes are matched, so an error text or a URL inside a reason cannot change the category.
fn throttle_reason(text: &str) -> &'static str {
    const PREFIXES: &[(&str, &str)] = &[
        ("commanded by user", "UserRequested"),
        ("flag-file", "FlagFile"),
        ("critical-load", "CriticalLoad"),
        ("lag", "ReplicationLag"),
        ("max-load", "MaxLoad"),
        ("throttle-query", "ThrottleQuery"),
        ("throttle-http", "ThrottleHTTP"),
        ("http ", "ThrottleHTTP"),
        ("throttler starting", "Starting"),
    ];
    let text = text.trim_start().to_ascii_lowercase();
    PREFIXES
        .iter()
        .find(|(prefix, _)| text.starts_with(*prefix))
        .map_or("Throttled", |(_, reason)| *reason)
}

struct Desired {
    type_: &'static str,
    status: &'static str,
    reason: String,
    message: String,
}

fn desired(type_: &'static str, status: &'static str, reason: &str, message: &str) -> Desired {
    Desired {
        type_,
        status,
        reason: reason.to_string(),
        message: truncate(message),
    }
}

fn desired_conditions(
    input: &StatusInput<'_>,
    phase: MigrationPhase,
    message: &str,
) -> Vec<Desired> {
    let phase_reason = phase.as_str();
    let mut out = Vec::with_capacity(7);

    out.push(if phase == MigrationPhase::Succeeded {
        desired(READY, "True", "Succeeded", message)
    } else {
        desired(READY, "False", phase_reason, message)
    });

    out.push(match phase {
        MigrationPhase::Succeeded if !input.execute => {
            desired(SUCCEEDED, "True", "RehearsalSucceeded", message)
        }
        MigrationPhase::Succeeded => desired(SUCCEEDED, "True", "Succeeded", message),
        MigrationPhase::Failed | MigrationPhase::Cancelled => {
            desired(SUCCEEDED, "False", phase_reason, message)
        }
        _ => desired(SUCCEEDED, "Unknown", phase_reason, message),
    });

    out.push(match phase {
        MigrationPhase::Failed | MigrationPhase::Cancelled => {
            desired(FAILED, "True", phase_reason, message)
        }
        _ => desired(FAILED, "False", phase_reason, ""),
    });

    let throttle = if phase.is_terminal() {
        None
    } else {
        active_throttle(input.progress)
    };
    out.push(match throttle {
        Some(text) => desired(THROTTLED, "True", throttle_reason(text), text),
        None => desired(THROTTLED, "False", "NotThrottled", ""),
    });

    // Argo CD's health check shows True as Suspended: a human must act.
    out.push(if phase == MigrationPhase::Postponed {
        desired(CUT_OVER_POSTPONED, "True", "Postponed", message)
    } else {
        desired(CUT_OVER_POSTPONED, "False", "NotPostponed", "")
    });

    out.push(match input.job {
        JobState::Queued { reason } if phase == MigrationPhase::Queued => {
            desired(QUEUED, "True", "WaitingForTurn", reason)
        }
        _ => desired(QUEUED, "False", "NotQueued", ""),
    });

    out.push(if input.invalid_controls.is_empty() {
        desired(CONTROLS_VALID, "True", "Valid", "")
    } else {
        let list = input
            .invalid_controls
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        desired(CONTROLS_VALID, "False", "InvalidAnnotation", &list)
    });

    out
}

/// Builds the condition, keeping `lastTransitionTime` from the previous condition of the same
/// type when its status did not change (API conventions: the time of the last flip).
fn merge_condition(
    old: &[Condition],
    new: Desired,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == new.type_ && c.status == new.status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: new.type_.to_string(),
        status: new.status.to_string(),
        reason: new.reason,
        message: new.message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn truncate(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::api::types::{CutOverStatus, ThrottleStatus, ValueSource};

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + second).unwrap())
    }

    fn progress(phase: MigrationPhase) -> ProgressStatus {
        ProgressStatus {
            phase: Some(phase),
            percent: Some(24.7),
            rows_copied: Some(1234),
            rows_estimate: Some(5000),
            eta_seconds: Some(100),
            throttle: Some(ThrottleStatus::default()),
            ..ProgressStatus::default()
        }
    }

    struct Run {
        status: Option<SchemaMigrationStatus>,
        generation: i64,
        execute: bool,
        invalid: Vec<InvalidControl>,
    }

    impl Run {
        fn new() -> Self {
            Self {
                status: None,
                generation: 1,
                execute: true,
                invalid: Vec::new(),
            }
        }

        /// One reconcile at `second`; the result becomes the previous status of the next one.
        fn step(
            &mut self,
            job: JobState,
            progress: Option<ProgressStatus>,
            second: i64,
        ) -> SchemaMigrationStatus {
            let now = at(second);
            let controls = [ControlSource {
                name: "throttle".into(),
                value: "false".into(),
                source: ValueSource::Default,
            }];
            let status = compute_status(&StatusInput {
                generation: Some(self.generation),
                previous: self.status.as_ref(),
                progress: progress.as_ref(),
                job: &job,
                job_name: Some("add-age-1a2b3c"),
                execute: self.execute,
                controls: &controls,
                invalid_controls: &self.invalid,
                now: &now,
            });
            self.status = Some(status.clone());
            status
        }
    }

    fn condition<'a>(status: &'a SchemaMigrationStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {:?}", status.conditions))
    }

    fn is(status: &SchemaMigrationStatus, type_: &str, value: &str) -> bool {
        condition(status, type_).status == value
    }

    #[test]
    fn queued_then_pending_then_running() {
        let mut run = Run::new();
        let s = run.step(
            JobState::Queued {
                reason: "another migration of shop.users is running".into(),
            },
            None,
            0,
        );
        assert_eq!(s.phase, Some(MigrationPhase::Queued));
        assert!(s.message.as_deref().unwrap().contains("shop.users"));
        assert!(is(&s, QUEUED, "True"));
        assert_eq!(condition(&s, QUEUED).reason, "WaitingForTurn");
        assert!(is(&s, SUCCEEDED, "Unknown"));
        assert!(is(&s, READY, "False"));
        assert_eq!(s.start_time, None);

        let s = run.step(JobState::NotCreated, None, 5);
        assert_eq!(s.phase, Some(MigrationPhase::Pending));
        assert!(is(&s, QUEUED, "False"));

        let s = run.step(JobState::Running, None, 10);
        assert_eq!(s.phase, Some(MigrationPhase::Pending));
        assert_eq!(s.start_time, Some(at(10)));
        assert_eq!(s.job.as_deref(), Some("add-age-1a2b3c"));

        let s = run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Copying)),
            20,
        );
        assert_eq!(s.phase, Some(MigrationPhase::Copying));
        assert_eq!(
            s.message.as_deref(),
            Some("copying rows: 1234 of ~5000 (24.7%), ETA 1m40s")
        );
        assert_eq!(s.start_time, Some(at(10)), "start time is kept");
        assert_eq!(condition(&s, SUCCEEDED).reason, "Copying");
        assert_eq!(s.completion_time, None);
        assert!(s.progress.is_none(), "the engine owns progress");
        assert_eq!(s.effective_controls.len(), 1);
    }

    #[test]
    fn all_condition_types_are_present_with_generation() {
        let mut run = Run::new();
        run.generation = 7;
        let s = run.step(JobState::NotCreated, None, 0);
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                READY,
                SUCCEEDED,
                FAILED,
                THROTTLED,
                CUT_OVER_POSTPONED,
                QUEUED,
                CONTROLS_VALID
            ]
        );
        assert_eq!(s.observed_generation, Some(7));
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(7) && !c.reason.is_empty())
        );
    }

    #[test]
    fn last_transition_time_changes_only_on_flips() {
        let mut run = Run::new();
        run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Copying)),
            0,
        );
        let s = run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Copying)),
            30,
        );
        assert_eq!(condition(&s, THROTTLED).last_transition_time, at(0));
        assert_eq!(condition(&s, READY).last_transition_time, at(0));

        let mut throttled = progress(MigrationPhase::Copying);
        throttled.throttle = Some(ThrottleStatus {
            active: true,
            reason: Some("lag=2.5s".into()),
        });
        let s = run.step(JobState::Running, Some(throttled.clone()), 60);
        let c = condition(&s, THROTTLED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "ReplicationLag")
        );
        assert_eq!(c.message, "lag=2.5s");
        assert_eq!(c.last_transition_time, at(60));
        assert!(
            s.message
                .as_deref()
                .unwrap()
                .ends_with("; throttled: lag=2.5s")
        );
        // Ready stayed False through the phase's message change: its time is kept.
        assert_eq!(condition(&s, READY).last_transition_time, at(0));

        let s = run.step(JobState::Running, Some(throttled), 90);
        assert_eq!(condition(&s, THROTTLED).last_transition_time, at(60));

        let s = run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Copying)),
            120,
        );
        let c = condition(&s, THROTTLED);
        assert_eq!(c.status, "False");
        assert_eq!(c.last_transition_time, at(120));
    }

    #[test]
    fn throttle_reasons_are_one_word() {
        let cases = [
            ("commanded by user", "UserRequested"),
            ("flag-file /tmp/x", "FlagFile"),
            ("critical-load hibernation", "CriticalLoad"),
            ("lag=3.2s on replica-1:3306", "ReplicationLag"),
            ("lag unknown on replica-1:3306: timeout", "ReplicationLag"),
            ("max-load Threads_running=30 >= 25", "MaxLoad"),
            ("max-load not measured yet", "MaxLoad"),
            ("throttle-query returned 1", "ThrottleQuery"),
            (
                "throttle-query failed: Access denied for user 'ghost'",
                "ThrottleQuery",
            ),
            ("throttle-http not checked yet", "ThrottleHTTP"),
            ("http status 503", "ThrottleHTTP"),
            ("http error: connection refused", "ThrottleHTTP"),
            ("throttler starting", "Starting"),
            ("", "Throttled"),
            ("something new", "Throttled"),
        ];
        for (text, reason) in cases {
            assert_eq!(throttle_reason(text), reason, "{text:?}");
        }
    }

    #[test]
    fn postponed_sets_cut_over_postponed() {
        let mut run = Run::new();
        let s = run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Postponed)),
            0,
        );
        assert_eq!(s.phase, Some(MigrationPhase::Postponed));
        assert!(is(&s, CUT_OVER_POSTPONED, "True"));
        assert!(
            s.message
                .as_deref()
                .unwrap()
                .contains("ghost/postpone-cut-over")
        );

        let mut cutting = progress(MigrationPhase::CuttingOver);
        cutting.cut_over = Some(CutOverStatus {
            attempts: 2,
            lock_millis: None,
        });
        let s = run.step(JobState::Running, Some(cutting), 10);
        assert_eq!(s.message.as_deref(), Some("cutting over (attempt 2)"));
        assert!(is(&s, CUT_OVER_POSTPONED, "False"));
        assert_eq!(
            condition(&s, CUT_OVER_POSTPONED).last_transition_time,
            at(10)
        );
    }

    #[test]
    fn job_success_is_final() {
        let mut run = Run::new();
        run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Copying)),
            0,
        );
        let mut done = progress(MigrationPhase::Succeeded);
        done.cut_over = Some(CutOverStatus {
            attempts: 1,
            lock_millis: Some(42),
        });
        let s = run.step(JobState::Succeeded, Some(done), 100);
        assert_eq!(s.phase, Some(MigrationPhase::Succeeded));
        assert_eq!(
            s.message.as_deref(),
            Some("migration complete; writes were blocked for 42 ms")
        );
        assert_eq!(s.completion_time, Some(at(100)));
        assert!(is(&s, READY, "True"));
        assert!(is(&s, SUCCEEDED, "True"));
        assert!(is(&s, FAILED, "False"));
        assert!(is(&s, THROTTLED, "False"));

        // The Job is garbage-collected and the spec edited: still Succeeded, same times.
        run.generation = 2;
        let s = run.step(JobState::NotCreated, None, 500);
        assert_eq!(s.phase, Some(MigrationPhase::Succeeded));
        assert_eq!(s.completion_time, Some(at(100)));
        assert_eq!(condition(&s, SUCCEEDED).last_transition_time, at(100));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(condition(&s, SUCCEEDED).observed_generation, Some(2));
    }

    #[test]
    fn engine_success_waits_for_the_job() {
        let mut run = Run::new();
        run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Copying)),
            0,
        );
        let s = run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Succeeded)),
            10,
        );
        assert_eq!(s.phase, Some(MigrationPhase::Copying));
        assert!(
            s.message
                .as_deref()
                .unwrap()
                .contains("waiting for its Job")
        );
        assert_eq!(s.completion_time, None);
        let s = run.step(
            JobState::Succeeded,
            Some(progress(MigrationPhase::Succeeded)),
            20,
        );
        assert_eq!(s.phase, Some(MigrationPhase::Succeeded));
        assert_eq!(s.completion_time, Some(at(20)));
    }

    /// The attack of issue #13: `progress.phase: Succeeded` written onto a migration whose
    /// engine never ran is not success.
    #[test]
    fn a_success_report_alone_is_not_success() {
        let mut run = Run::new();
        let s = run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Succeeded)),
            0,
        );
        assert_ne!(s.phase, Some(MigrationPhase::Succeeded));
        assert!(
            is(&s, SUCCEEDED, "False")
                || !s
                    .conditions
                    .iter()
                    .any(|c| c.type_ == SUCCEEDED && c.status == "True")
        );
    }

    #[test]
    fn rehearsal_success() {
        let mut run = Run::new();
        run.execute = false;
        let s = run.step(JobState::Succeeded, None, 0);
        assert_eq!(s.phase, Some(MigrationPhase::Succeeded));
        assert_eq!(condition(&s, SUCCEEDED).reason, "RehearsalSucceeded");
        assert!(
            s.message
                .as_deref()
                .unwrap()
                .contains("nothing was changed")
        );
    }

    #[test]
    fn job_failure_is_final_with_both_messages() {
        let mut run = Run::new();
        run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Validating)),
            0,
        );
        let mut failed = progress(MigrationPhase::Failed);
        failed.message = Some("table shop.users has no PRIMARY nor UNIQUE key".into());
        let s = run.step(
            JobState::Failed {
                message: "BackoffLimitExceeded".into(),
            },
            Some(failed),
            50,
        );
        assert_eq!(s.phase, Some(MigrationPhase::Failed));
        assert_eq!(
            s.message.as_deref(),
            Some("table shop.users has no PRIMARY nor UNIQUE key (BackoffLimitExceeded)")
        );
        assert_eq!(s.completion_time, Some(at(50)));
        assert!(is(&s, FAILED, "True"));
        assert!(is(&s, SUCCEEDED, "False"));
        assert_eq!(condition(&s, SUCCEEDED).reason, "Failed");
        assert!(is(&s, READY, "False"));

        let s = run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Copying)),
            60,
        );
        assert_eq!(s.phase, Some(MigrationPhase::Failed), "never re-runs");
    }

    #[test]
    fn job_failure_without_engine_report() {
        let mut run = Run::new();
        let s = run.step(
            JobState::Failed {
                message: String::new(),
            },
            None,
            0,
        );
        assert_eq!(s.phase, Some(MigrationPhase::Failed));
        assert_eq!(s.message.as_deref(), Some("the engine Job failed"));
    }

    #[test]
    fn a_failed_job_is_failure_whatever_the_engine_reported() {
        let mut run = Run::new();
        let s = run.step(
            JobState::Failed {
                message: "pod OOMKilled".into(),
            },
            Some(progress(MigrationPhase::Succeeded)),
            0,
        );
        assert_eq!(s.phase, Some(MigrationPhase::Failed));
        let message = s.message.as_deref().unwrap();
        assert!(
            message.contains("pod OOMKilled") && message.contains("reported"),
            "{message}"
        );
    }

    #[test]
    fn engine_failure_while_the_job_retries_is_not_final() {
        let mut run = Run::new();
        run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Copying)),
            0,
        );
        let mut failed = progress(MigrationPhase::Failed);
        failed.message = Some("lost connection".into());
        let s = run.step(JobState::Running, Some(failed), 10);
        assert_eq!(s.phase, Some(MigrationPhase::Copying));
        assert!(s.message.as_deref().unwrap().contains("lost connection"));
        assert_eq!(s.completion_time, None);
        assert!(is(&s, FAILED, "False"));

        let s = run.step(
            JobState::Running,
            Some(progress(MigrationPhase::Copying)),
            20,
        );
        assert_eq!(s.phase, Some(MigrationPhase::Copying));
    }

    #[test]
    fn cancelled_by_panic() {
        let mut run = Run::new();
        let mut cancelled = progress(MigrationPhase::Cancelled);
        cancelled.message = Some("panic requested".into());
        let s = run.step(
            JobState::Failed {
                message: "BackoffLimitExceeded".into(),
            },
            Some(cancelled),
            0,
        );
        assert_eq!(s.phase, Some(MigrationPhase::Cancelled));
        assert_eq!(s.message.as_deref(), Some("cancelled: panic requested"));
        assert!(is(&s, FAILED, "True"));
        assert_eq!(condition(&s, FAILED).reason, "Cancelled");
        assert!(is(&s, SUCCEEDED, "False"));
    }

    #[test]
    fn invalid_controls_condition() {
        let mut run = Run::new();
        let s = run.step(JobState::Running, None, 0);
        assert!(is(&s, CONTROLS_VALID, "True"));

        run.invalid = vec![InvalidControl {
            annotation: "ghost/chunk-size".into(),
            value: "huge".into(),
            reason: "must be a whole number between 10 and 100000".into(),
        }];
        let s = run.step(JobState::Running, None, 10);
        let c = condition(&s, CONTROLS_VALID);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InvalidAnnotation")
        );
        assert!(c.message.contains("ghost/chunk-size=\"huge\""));
        assert_eq!(c.last_transition_time, at(10));
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn human_eta() {
        assert_eq!(human_seconds(5), "5s");
        assert_eq!(human_seconds(100), "1m40s");
        assert_eq!(human_seconds(7260), "2h01m");
        assert_eq!(human_seconds(-3), "0s");
    }
}
