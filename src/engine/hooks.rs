//! gh-ost compatible hooks (executables in `--hooks-path`, run with `GH_OST_*` variables) plus
//! signed JSON webhooks.
//!
//! Hooks run synchronously, in file-name order, and the first failure stops the rest, as in
//! gh-ost. Unlike gh-ost, a hook is killed when it runs longer than `hook_timeout` (default five
//! minutes): a hung hook must not hold a migration forever. Webhooks are delivered in spawned
//! tasks, so they never delay or fail the migration.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::conn::Secret;
use super::error::EngineError;
use super::progress::{self, Phase, Progress};

/// gh-ost has no limit; a hook that hangs would hang the migration, so we kill it after this.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// gh-ost's `--hooks-status-interval` default.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_WEBHOOK_RETRIES: u32 = 3;

/// Bytes of each output stream kept in memory; the rest is read and discarded.
const OUTPUT_CAPTURE_LIMIT: usize = 64 * 1024;
/// Bytes of each output stream written to the log.
const OUTPUT_LOG_LIMIT: usize = 4 * 1024;
/// Bytes of output quoted in a `HookError`.
const OUTPUT_ERROR_LIMIT: usize = 1024;
/// After the hook exits, how long a process it left behind may keep its output pipe open.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Deliveries still running beyond this count are dropped: a dead endpoint must not pile up tasks.
const MAX_PENDING_DELIVERIES: usize = 256;
const FIRST_WEBHOOK_BACKOFF: Duration = Duration::from_millis(200);
const MAX_WEBHOOK_BACKOFF: Duration = Duration::from_secs(30);
/// "Text file busy": exec raced with another thread that briefly held the file open for writing.
const ETXTBSY: i32 = 26;

/// Environment variables that carry a database password into this process (`ghost migrate`'s
/// `GHOST_PASSWORD`, the engine pod's `GHOST_DB_PASSWORD`, the MySQL client's `MYSQL_PWD`).
/// Hooks run without them.
pub const SECRET_ENV: [&str; 3] = ["GHOST_PASSWORD", "GHOST_DB_PASSWORD", "MYSQL_PWD"];

/// The points in a migration where hooks fire, named as gh-ost names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookPoint {
    Startup,
    Validated,
    RowCountComplete,
    BeforeRowCopy,
    RowCopyComplete,
    BeginPostponed,
    BeforeCutOver,
    InteractiveCommand,
    Success,
    Failure,
    Status,
    StopReplication,
    StartReplication,
    BatchCopyRetry,
}

impl HookPoint {
    pub const ALL: [HookPoint; 14] = [
        HookPoint::Startup,
        HookPoint::Validated,
        HookPoint::RowCountComplete,
        HookPoint::BeforeRowCopy,
        HookPoint::RowCopyComplete,
        HookPoint::BeginPostponed,
        HookPoint::BeforeCutOver,
        HookPoint::InteractiveCommand,
        HookPoint::Success,
        HookPoint::Failure,
        HookPoint::Status,
        HookPoint::StopReplication,
        HookPoint::StartReplication,
        HookPoint::BatchCopyRetry,
    ];

    /// gh-ost's file-name prefix: every executable in the hooks path starting with it runs.
    pub fn prefix(self) -> &'static str {
        match self {
            HookPoint::Startup => "gh-ost-on-startup",
            HookPoint::Validated => "gh-ost-on-validated",
            HookPoint::RowCountComplete => "gh-ost-on-rowcount-complete",
            HookPoint::BeforeRowCopy => "gh-ost-on-before-row-copy",
            HookPoint::RowCopyComplete => "gh-ost-on-row-copy-complete",
            HookPoint::BeginPostponed => "gh-ost-on-begin-postponed",
            HookPoint::BeforeCutOver => "gh-ost-on-before-cut-over",
            HookPoint::InteractiveCommand => "gh-ost-on-interactive-command",
            HookPoint::Success => "gh-ost-on-success",
            HookPoint::Failure => "gh-ost-on-failure",
            HookPoint::Status => "gh-ost-on-status",
            HookPoint::StopReplication => "gh-ost-on-stop-replication",
            HookPoint::StartReplication => "gh-ost-on-start-replication",
            HookPoint::BatchCopyRetry => "gh-ost-on-batch-copy-retry",
        }
    }

    /// The webhook event name: the prefix without `gh-ost-on-` (`startup`, `before-cut-over`, ...).
    pub fn event_name(self) -> &'static str {
        match self {
            HookPoint::Startup => "startup",
            HookPoint::Validated => "validated",
            HookPoint::RowCountComplete => "rowcount-complete",
            HookPoint::BeforeRowCopy => "before-row-copy",
            HookPoint::RowCopyComplete => "row-copy-complete",
            HookPoint::BeginPostponed => "begin-postponed",
            HookPoint::BeforeCutOver => "before-cut-over",
            HookPoint::InteractiveCommand => "interactive-command",
            HookPoint::Success => "success",
            HookPoint::Failure => "failure",
            HookPoint::Status => "status",
            HookPoint::StopReplication => "stop-replication",
            HookPoint::StartReplication => "start-replication",
            HookPoint::BatchCopyRetry => "batch-copy-retry",
        }
    }

    /// Accepts an event name or a gh-ost prefix, case-insensitively (for validating configs).
    pub fn from_event_name(name: &str) -> Option<HookPoint> {
        HookPoint::ALL.into_iter().find(|p| {
            name.eq_ignore_ascii_case(p.event_name()) || name.eq_ignore_ascii_case(p.prefix())
        })
    }

    /// Whether `fire` reports a failing hook to the caller, as gh-ost does. What the caller then
    /// does depends on the point: fail the migration (startup, validated, rowcount-complete when
    /// synchronous, before-row-copy, row-copy-complete, before-cut-over, success), fail the
    /// cut-over attempt (begin-postponed, stop-replication; start-replication: also skip
    /// restarting replication) or reject the command (interactive-command). Failures of status,
    /// batch-copy-retry and failure hooks are only logged.
    pub fn aborts_on_failure(self) -> bool {
        !matches!(
            self,
            HookPoint::Status | HookPoint::BatchCopyRetry | HookPoint::Failure
        )
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

/// What the hooks are told about the migration. Hosts are host names without port, as gh-ost's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationInfo {
    pub database: String,
    pub table: String,
    pub ghost_table: String,
    pub old_table: String,
    /// The `--alter` text as given.
    pub alter: String,
    pub inspected_host: String,
    /// The host this process runs on.
    pub executing_host: String,
    /// The applier (the master, or the replica with `--migrate-on-replica`).
    pub migrated_host: String,
    /// gh-ost's noop (no `--execute`).
    pub dry_run: bool,
    pub revert: bool,
}

#[derive(Clone)]
pub struct WebhookTarget {
    pub url: String,
    /// Signs the body: `X-Ghost-Signature: sha256=<hex HMAC-SHA256>`.
    pub secret: Option<Secret>,
    /// Event names (`HookPoint::event_name`) to deliver; empty or `*` means all.
    pub events: Vec<String>,
}

// Hand-written so a URL with credentials or a token in its query never reaches a log.
impl fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &redact_url(&self.url))
            .field("secret", &self.secret)
            .field("events", &self.events)
            .finish()
    }
}

impl WebhookTarget {
    fn wants(&self, point: HookPoint) -> bool {
        self.events.is_empty()
            || self.events.iter().any(|e| {
                e == "*"
                    || e.eq_ignore_ascii_case(point.event_name())
                    || e.eq_ignore_ascii_case(point.prefix())
            })
    }
}

#[derive(Clone, Debug)]
pub struct HooksConfig {
    /// Directory of hook executables; `None` (or an empty path) disables executable hooks.
    pub hooks_path: Option<PathBuf>,
    pub hint: String,
    pub hint_owner: String,
    /// Passed to hooks as `GH_OST_HOOKS_HINT_TOKEN` and nowhere else.
    pub hint_token: Secret,
    /// Period of the status hook; zero disables it.
    pub status_interval: Duration,
    /// A hook running longer is killed (with everything it started) and counts as failed.
    pub hook_timeout: Duration,
    pub webhooks: Vec<WebhookTarget>,
    /// Per delivery attempt.
    pub webhook_timeout: Duration,
    /// Attempts after the first one, with exponential backoff from 200 ms.
    pub webhook_retries: u32,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            hooks_path: None,
            hint: String::new(),
            hint_owner: String::new(),
            hint_token: Secret::default(),
            status_interval: DEFAULT_STATUS_INTERVAL,
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            webhooks: Vec::new(),
            webhook_timeout: DEFAULT_WEBHOOK_TIMEOUT,
            webhook_retries: DEFAULT_WEBHOOK_RETRIES,
        }
    }
}

#[derive(Debug, Error)]
pub enum HookError {
    #[error("{point} hooks: cannot list {}: {source}", .path.display())]
    List {
        point: HookPoint,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{point} hook {} could not be started: {source}", .hook.display())]
    Spawn {
        point: HookPoint,
        hook: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{point} hook {} failed ({status}){}", .hook.display(), output_suffix(.output))]
    Failed {
        point: HookPoint,
        hook: PathBuf,
        status: String,
        /// The tail of its output (stderr, or stdout when stderr is empty), secrets redacted.
        output: String,
    },
    #[error(
        "{point} hook {} did not finish within {:?} and was killed{}",
        .hook.display(),
        .timeout,
        output_suffix(.output)
    )]
    TimedOut {
        point: HookPoint,
        hook: PathBuf,
        timeout: Duration,
        output: String,
    },
}

impl HookError {
    pub fn point(&self) -> HookPoint {
        match self {
            HookError::List { point, .. }
            | HookError::Spawn { point, .. }
            | HookError::Failed { point, .. }
            | HookError::TimedOut { point, .. } => *point,
        }
    }
}

fn output_suffix(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

impl From<HookError> for EngineError {
    fn from(error: HookError) -> Self {
        EngineError::Refused(error.to_string())
    }
}

/// `GH_OST_COMMAND` for `InteractiveCommand`, with gh-ost's literal single quotes.
pub fn env_command(command: &str) -> (&'static str, String) {
    ("GH_OST_COMMAND", format!("'{command}'"))
}

/// `GH_OST_STATUS` for `Status`, with gh-ost's literal single quotes.
pub fn env_status(status_line: &str) -> (&'static str, String) {
    ("GH_OST_STATUS", format!("'{status_line}'"))
}

/// `GH_OST_INSTANT_DDL` for `Success`.
pub fn env_instant_ddl(instant: bool) -> (&'static str, String) {
    ("GH_OST_INSTANT_DDL", instant.to_string())
}

/// `GH_OST_LAST_BATCH_COPY_ERROR` for `BatchCopyRetry`.
pub fn env_last_batch_copy_error(error: &str) -> (&'static str, String) {
    ("GH_OST_LAST_BATCH_COPY_ERROR", error.to_string())
}

struct Inner {
    config: HooksConfig,
    info: MigrationInfo,
    started: Instant,
    copy_started: OnceLock<Instant>,
    copy_ended: OnceLock<Instant>,
    /// Built only when webhooks are configured.
    client: Option<reqwest::Client>,
    deliveries: Mutex<Vec<JoinHandle<()>>>,
}

/// Runs hooks and webhooks. Cheap to clone: the engine and the interactive server share one.
#[derive(Clone)]
pub struct Hooks {
    inner: Arc<Inner>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("config", &self.inner.config)
            .field("info", &self.inner.info)
            .finish_non_exhaustive()
    }
}

impl Hooks {
    pub fn new(mut config: HooksConfig, info: MigrationInfo) -> Self {
        if config
            .hooks_path
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            config.hooks_path = None;
        }
        if let Some(path) = &config.hooks_path {
            // gh-ost silently runs nothing for a missing directory; say so once, at least.
            match std::fs::metadata(path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    warn!(hooks_path = %path.display(), "hooks path is not a directory; no hooks will run")
                }
                Err(e) => {
                    warn!(hooks_path = %path.display(), error = %e, "hooks path is not readable; no hooks will run")
                }
            }
        }
        if config.webhook_timeout.is_zero() {
            config.webhook_timeout = DEFAULT_WEBHOOK_TIMEOUT;
        }
        if config.hook_timeout.is_zero() {
            config.hook_timeout = DEFAULT_HOOK_TIMEOUT;
        }
        for target in &config.webhooks {
            if reqwest::Url::parse(&target.url).is_err() {
                warn!(url = %redact_url(&target.url), "webhook URL is not valid; deliveries to it will fail");
            }
        }
        let client = if config.webhooks.is_empty() {
            None
        } else {
            match reqwest::Client::builder()
                // A redirect would resend the signed body somewhere nobody configured.
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(config.webhook_timeout)
                .user_agent(concat!("ghost/", env!("CARGO_PKG_VERSION")))
                .build()
            {
                Ok(client) => Some(client),
                Err(e) => {
                    warn!(error = %e.without_url(), "cannot build an HTTP client; webhooks are disabled");
                    None
                }
            }
        };
        Self {
            inner: Arc::new(Inner {
                config,
                info,
                started: Instant::now(),
                copy_started: OnceLock::new(),
                copy_ended: OnceLock::new(),
                client,
                deliveries: Mutex::new(Vec::new()),
            }),
        }
    }

    /// No hooks, no webhooks: `fire` always succeeds at once.
    pub fn disabled() -> Self {
        Self::new(HooksConfig::default(), MigrationInfo::default())
    }

    /// Starts the `GH_OST_ELAPSED_COPY_SECONDS` clock; later calls are ignored.
    pub fn mark_copy_started(&self) {
        let _ = self.inner.copy_started.set(Instant::now());
    }

    /// Stops the copy clock, as gh-ost does when the row copy completes.
    pub fn mark_copy_complete(&self) {
        let _ = self.inner.copy_ended.set(Instant::now());
    }

    /// Time since `new()`.
    pub fn elapsed(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// gh-ost's `ElapsedRowCopyTime`: zero before the copy starts, frozen once it completes.
    pub fn elapsed_copy(&self) -> Duration {
        match (self.inner.copy_started.get(), self.inner.copy_ended.get()) {
            (None, _) => Duration::ZERO,
            (Some(start), None) => start.elapsed(),
            (Some(start), Some(end)) => end.saturating_duration_since(*start),
        }
    }

    /// Runs every executable in the hooks path whose name starts with `point.prefix()`, in
    /// name order, stopping at the first failure; then queues the webhooks for this event.
    /// `extra` adds point-specific variables (see the `env_*` helpers); `GH_OST_*` names also
    /// get a `GHOST_*` twin. Returns the failure only when `point.aborts_on_failure()`.
    pub async fn fire(
        &self,
        point: HookPoint,
        progress: &Progress,
        extra: &[(&str, String)],
    ) -> Result<(), HookError> {
        let result = self.run_hooks(point, progress, extra).await;
        self.post_webhooks(point, progress, extra);
        match result {
            Ok(()) => Ok(()),
            Err(error) if point.aborts_on_failure() => {
                warn!(point = point.prefix(), %error, "hook failed");
                Err(error)
            }
            Err(error) => {
                warn!(point = point.prefix(), %error, "hook failed; ignored, as gh-ost does for this hook");
                Ok(())
            }
        }
    }

    /// Waits up to `max_wait` for queued webhook deliveries (call before exiting, after the
    /// success or failure event). Deliveries still running afterwards stay queued.
    pub async fn flush_webhooks(&self, max_wait: Duration) {
        let mut pending = std::mem::take(&mut *lock(&self.inner.deliveries));
        if pending.is_empty() {
            return;
        }
        let all_done = tokio::time::timeout(max_wait, async {
            for handle in pending.iter_mut() {
                let _ = handle.await;
            }
        })
        .await
        .is_ok();
        if !all_done {
            // Completed handles must not be awaited again; keep only the running ones.
            pending.retain(|h| !h.is_finished());
            warn!(
                deliveries = pending.len(),
                "webhook deliveries still running after {max_wait:?}; not waiting for them"
            );
            lock(&self.inner.deliveries).extend(pending);
        }
    }

    /// Fires `Status` every `status_interval` with the latest progress until the phase is
    /// terminal or the sender is gone. Each status hook finishes before the next tick counts.
    pub fn spawn_status_hooks(&self, mut progress: watch::Receiver<Progress>) -> JoinHandle<()> {
        let hooks = self.clone();
        let interval = self.inner.config.status_interval;
        tokio::spawn(async move {
            if interval.is_zero() {
                return;
            }
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if progress.has_changed().is_err() {
                    return;
                }
                let snapshot = progress.borrow_and_update().clone();
                if snapshot.phase.is_terminal() {
                    return;
                }
                let line = hooks.status_line(&snapshot);
                // Status failures are logged by fire() and never abort.
                let _ = hooks
                    .fire(HookPoint::Status, &snapshot, &[env_status(&line)])
                    .await;
            }
        })
    }

    /// A status line in gh-ost's shape, for `GH_OST_STATUS`.
    pub fn status_line(&self, p: &Progress) -> String {
        let state = if p.phase == Phase::Postponed {
            "postponing cut-over".to_string()
        } else if p.throttle.active {
            format!("throttled, {}", p.throttle.reason)
        } else {
            "migrating".to_string()
        };
        let eta = match (p.phase, hook_eta_seconds(p)) {
            (Phase::Postponed, _) | (_, 0) => "due".to_string(),
            (_, i64::MIN) => "N/A".to_string(),
            (_, secs) => go_duration(Duration::from_secs(secs.unsigned_abs())),
        };
        let streamer = p
            .applied_position
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        format!(
            "Copy: {}/{} {:.1}%; Applied: {}; Backlog: {}; Time: {}(total), {}(copy); streamer: {}; Lag: {:.2}s, HeartbeatLag: {:.2}s, State: {}; ETA: {}",
            p.rows_copied,
            p.rows_estimate,
            hook_progress_pct(p),
            p.events_applied,
            p.backlog,
            go_duration(self.elapsed()),
            go_duration(self.elapsed_copy()),
            streamer,
            millis_to_secs(p.replica_lag_millis),
            millis_to_secs(p.heartbeat_lag_millis),
            state,
            eta,
        )
    }

    /// gh-ost's variables with its value formats (Go `%f` floats, `%d` ints, `%t` bools),
    /// each also as `GHOST_*`, then `extra`.
    fn environment(&self, p: &Progress, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let info = &self.inner.info;
        let config = &self.inner.config;
        let base = [
            ("GH_OST_DATABASE_NAME", info.database.clone()),
            ("GH_OST_TABLE_NAME", info.table.clone()),
            ("GH_OST_GHOST_TABLE_NAME", info.ghost_table.clone()),
            ("GH_OST_OLD_TABLE_NAME", info.old_table.clone()),
            ("GH_OST_DDL", info.alter.clone()),
            (
                "GH_OST_ELAPSED_SECONDS",
                format!("{:.6}", self.elapsed().as_secs_f64()),
            ),
            (
                "GH_OST_ELAPSED_COPY_SECONDS",
                format!("{:.6}", self.elapsed_copy().as_secs_f64()),
            ),
            ("GH_OST_ESTIMATED_ROWS", p.rows_estimate.to_string()),
            ("GH_OST_COPIED_ROWS", p.rows_copied.to_string()),
            ("GH_OST_MIGRATED_HOST", info.migrated_host.clone()),
            ("GH_OST_INSPECTED_HOST", info.inspected_host.clone()),
            ("GH_OST_EXECUTING_HOST", info.executing_host.clone()),
            (
                "GH_OST_INSPECTED_LAG",
                format!("{:.6}", millis_to_secs(p.replica_lag_millis)),
            ),
            (
                "GH_OST_HEARTBEAT_LAG",
                format!("{:.6}", millis_to_secs(p.heartbeat_lag_millis)),
            ),
            ("GH_OST_PROGRESS", format!("{:.6}", hook_progress_pct(p))),
            ("GH_OST_ETA_SECONDS", hook_eta_seconds(p).to_string()),
            ("GH_OST_HOOKS_HINT", config.hint.clone()),
            ("GH_OST_HOOKS_HINT_OWNER", config.hint_owner.clone()),
            (
                "GH_OST_HOOKS_HINT_TOKEN",
                config.hint_token.expose().to_string(),
            ),
            ("GH_OST_DRY_RUN", info.dry_run.to_string()),
            ("GH_OST_REVERT", info.revert.to_string()),
        ];
        let mut env = Vec::with_capacity((base.len() + extra.len()) * 2);
        for (key, value) in base {
            push_env(&mut env, key, value);
        }
        // Extras come last so they win over a base variable of the same name.
        for (key, value) in extra {
            push_env(&mut env, key, value.clone());
        }
        env
    }

    async fn run_hooks(
        &self,
        point: HookPoint,
        progress: &Progress,
        extra: &[(&str, String)],
    ) -> Result<(), HookError> {
        let Some(dir) = self.inner.config.hooks_path.as_deref() else {
            return Ok(());
        };
        let hooks = discover(dir, point).await?;
        if hooks.is_empty() {
            return Ok(());
        }
        let env = self.environment(progress, extra);
        for hook in &hooks {
            self.run_one(point, hook, &env).await?;
        }
        Ok(())
    }

    async fn run_one(
        &self,
        point: HookPoint,
        hook: &Path,
        env: &[(String, String)],
    ) -> Result<(), HookError> {
        let limit = self.inner.config.hook_timeout;
        info!(point = point.prefix(), hook = %hook.display(), "executing hook");
        let started = Instant::now();
        let mut cmd = Command::new(hook);
        // A hook gets the migration's facts, never the database password this process was
        // given in its own environment.
        for secret in SECRET_ENV {
            cmd.env_remove(secret);
        }
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // If fire() is cancelled, the hook must not outlive it.
            .kill_on_drop(true);
        // Its own process group, so a timeout kills what the hook started too.
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = spawn_retrying(&mut cmd)
            .await
            .map_err(|source| HookError::Spawn {
                point,
                hook: hook.to_path_buf(),
                source,
            })?;
        let pid = child.id();
        let stdout = child.stdout.take().map(|s| tokio::spawn(read_capped(s)));
        let stderr = child.stderr.take().map(|s| tokio::spawn(read_capped(s)));

        let outcome = match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) => Outcome::Exited(status),
            Ok(Err(e)) => Outcome::WaitFailed(e),
            Err(_) => {
                kill_hook(pid, &mut child).await;
                Outcome::TimedOut
            }
        };
        let stdout = self.redact(&collect_output(stdout).await);
        let stderr = self.redact(&collect_output(stderr).await);
        let succeeded = matches!(&outcome, Outcome::Exited(s) if s.success());
        for (stream, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            let text = text.trim_end();
            if text.is_empty() {
                continue;
            }
            let shown = head(text, OUTPUT_LOG_LIMIT);
            if succeeded {
                info!(point = point.prefix(), hook = %hook.display(), stream, output = %shown, "hook output");
            } else {
                warn!(point = point.prefix(), hook = %hook.display(), stream, output = %shown, "hook output");
            }
        }
        let error_output = tail(
            if stderr.trim().is_empty() {
                stdout.trim()
            } else {
                stderr.trim()
            },
            OUTPUT_ERROR_LIMIT,
        );
        let hook = hook.to_path_buf();
        match outcome {
            Outcome::Exited(status) if status.success() => {
                debug!(point = point.prefix(), hook = %hook.display(), elapsed = ?started.elapsed(), "hook succeeded");
                Ok(())
            }
            Outcome::Exited(status) => Err(HookError::Failed {
                point,
                hook,
                status: status.to_string(),
                output: error_output,
            }),
            Outcome::WaitFailed(e) => Err(HookError::Failed {
                point,
                hook,
                status: format!("waiting for it failed: {e}"),
                output: error_output,
            }),
            Outcome::TimedOut => Err(HookError::TimedOut {
                point,
                hook,
                timeout: limit,
                output: error_output,
            }),
        }
    }

    /// Never lets the hint token reach a log or an error message, even if a hook prints it.
    fn redact(&self, text: &str) -> String {
        let token = self.inner.config.hint_token.expose();
        if token.is_empty() {
            text.to_string()
        } else {
            text.replace(token, "<redacted>")
        }
    }

    fn post_webhooks(&self, point: HookPoint, progress: &Progress, extra: &[(&str, String)]) {
        let inner = &self.inner;
        let Some(client) = inner.client.as_ref() else {
            return;
        };
        let targets: Vec<&WebhookTarget> = inner
            .config
            .webhooks
            .iter()
            .filter(|t| t.wants(point))
            .collect();
        if targets.is_empty() {
            return;
        }
        let payload = WebhookPayload {
            event: point.event_name(),
            migration: &inner.info,
            progress,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            extra: extra.iter().map(|(k, v)| (*k, v.as_str())).collect(),
        };
        let body = match serde_json::to_vec(&payload) {
            Ok(body) => body,
            Err(e) => {
                warn!(event = point.event_name(), error = %e, "cannot encode the webhook body; not sent");
                return;
            }
        };
        let mut deliveries = lock(&inner.deliveries);
        deliveries.retain(|h| !h.is_finished());
        for target in targets {
            if deliveries.len() >= MAX_PENDING_DELIVERIES {
                warn!(
                    event = point.event_name(),
                    url = %redact_url(&target.url),
                    "too many webhook deliveries in flight; dropping this one"
                );
                continue;
            }
            let delivery = Delivery {
                client: client.clone(),
                target: target.clone(),
                event: point.event_name(),
                body: body.clone(),
                timeout: inner.config.webhook_timeout,
                retries: inner.config.webhook_retries,
            };
            deliveries.push(tokio::spawn(delivery.run()));
        }
    }
}

enum Outcome {
    Exited(ExitStatus),
    WaitFailed(io::Error),
    TimedOut,
}

#[derive(Serialize)]
struct WebhookPayload<'a> {
    event: &'a str,
    migration: &'a MigrationInfo,
    progress: &'a Progress,
    time: String,
    /// The point's extra variables (`GH_OST_COMMAND`, ...), when it has any.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extra: BTreeMap<&'a str, &'a str>,
}

struct Delivery {
    client: reqwest::Client,
    target: WebhookTarget,
    event: &'static str,
    body: Vec<u8>,
    timeout: Duration,
    retries: u32,
}

impl Delivery {
    async fn run(self) {
        let url = redact_url(&self.target.url);
        let signature = match &self.target.secret {
            Some(secret) => match sign(secret.expose().as_bytes(), &self.body) {
                Some(signature) => Some(signature),
                None => {
                    warn!(event = self.event, %url, "cannot sign the webhook body; not sent");
                    return;
                }
            },
            None => None,
        };
        let attempts = self.retries.saturating_add(1);
        let mut backoff = FIRST_WEBHOOK_BACKOFF;
        for attempt in 1..=attempts {
            let mut request = self
                .client
                .post(&self.target.url)
                .timeout(self.timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-Ghost-Event", self.event)
                .body(self.body.clone());
            if let Some(signature) = &signature {
                request = request.header("X-Ghost-Signature", signature.as_str());
            }
            let (retryable, problem) = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    debug!(event = self.event, %url, attempt, "webhook delivered");
                    return;
                }
                Ok(response) => {
                    let status = response.status();
                    // Other 4xx answers will not change on a retry.
                    let retryable = status.is_server_error()
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                    (retryable, format!("HTTP {status}"))
                }
                // The URL may carry credentials; reqwest's message would include it.
                Err(e) => (!e.is_builder(), e.without_url().to_string()),
            };
            if !retryable || attempt == attempts {
                warn!(event = self.event, %url, attempt, error = %problem, "webhook delivery failed; giving up");
                return;
            }
            debug!(event = self.event, %url, attempt, error = %problem, "webhook delivery failed; retrying in {backoff:?}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_WEBHOOK_BACKOFF);
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`.
fn sign(secret: &[u8], body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(body);
    Some(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// Scheme, host and path only: user info, query and fragment may hold credentials.
fn redact_url(raw: &str) -> String {
    match reqwest::Url::parse(raw) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

fn push_env(env: &mut Vec<(String, String)>, key: &str, value: String) {
    // A NUL byte would make the spawn fail; it cannot be meaningful in a variable anyway.
    let value = if value.contains('\0') {
        value.replace('\0', "")
    } else {
        value
    };
    if let Some(rest) = key.strip_prefix("GH_OST_") {
        env.push((format!("GHOST_{rest}"), value.clone()));
    }
    env.push((key.to_string(), value));
}

/// gh-ost's `GetProgressPct`: 0 until copying starts, 100 once the copy is complete.
fn hook_progress_pct(p: &Progress) -> f64 {
    match p.phase {
        Phase::Pending | Phase::Validating => 0.0,
        _ => p.percent(),
    }
}

/// gh-ost's `GetETASeconds`: 0 when due, `math.MinInt64` when unknown.
fn hook_eta_seconds(p: &Progress) -> i64 {
    match p.eta_seconds {
        Some(secs) => i64::try_from(secs).unwrap_or(i64::MAX),
        None if hook_progress_pct(p) >= 100.0 => 0,
        None => i64::MIN,
    }
}

/// Unknown lag reads as 0, as gh-ost's lag does before it is first measured.
fn millis_to_secs(millis: Option<u64>) -> f64 {
    millis.map_or(0.0, |ms| ms as f64 / 1000.0)
}

/// gh-ost's `PrettifyDurationOutput`: Go's duration format truncated to whole seconds.
fn go_duration(d: Duration) -> String {
    progress::go_duration(d.as_secs())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data is a plain list; a panic elsewhere cannot leave it inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every executable file in `dir` whose name starts with the point's prefix, in name order
/// (gh-ost's `filepath.Glob(<dir>/<prefix>*)`).
async fn discover(dir: &Path, point: HookPoint) -> Result<Vec<PathBuf>, HookError> {
    let list_error = |source| HookError::List {
        point,
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        // As gh-ost's glob: no directory, no hooks (new() has warned about it).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(list_error(e)),
    };
    let prefix = point.prefix().as_bytes();
    let mut found = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(list_error)? {
        let name = entry.file_name();
        if !name.as_encoded_bytes().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        // metadata() follows symlinks: a hook may link into a shared scripts directory.
        let meta = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta,
            Err(e) => {
                warn!(hook = %path.display(), error = %e, "skipping unreadable hook");
                continue;
            }
        };
        if !meta.is_file() {
            debug!(hook = %path.display(), "skipping hook entry that is not a file");
            continue;
        }
        if !is_executable(&meta) {
            warn!(hook = %path.display(), "skipping hook that is not executable (chmod +x to enable it)");
            continue;
        }
        found.push((name, path));
    }
    // Names are unique within a directory, so this orders by name alone.
    found.sort_unstable();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    true
}

async fn spawn_retrying(cmd: &mut Command) -> io::Result<Child> {
    let mut busy_retries = 0u32;
    loop {
        match cmd.spawn() {
            // Another thread forking while a hook file was being written leaves it "busy" for
            // a moment; this is transient.
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && busy_retries < 5 => {
                busy_retries += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(busy_retries))).await;
            }
            other => return other,
        }
    }
}

/// Kills the hook's process group, then the hook itself (which also reaps it).
async fn kill_hook(pid: Option<u32>, child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = pid {
        // No libc here: kill(1) signals the group. The hook is not reaped yet, so its pid (the
        // group id) cannot have been reused.
        let group = format!("-{pid}");
        let signalled = Command::new("kill")
            .args(["-s", "KILL", "--", group.as_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if !matches!(signalled, Ok(status) if status.success()) {
            debug!(
                pid,
                "could not signal the hook's process group; killing the hook alone"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = pid;
    if let Err(e) = child.kill().await {
        warn!(error = %e, "cannot kill a timed-out hook");
    }
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

/// Reads the stream to its end (so the hook never blocks on a full pipe), keeping the start.
async fn read_capped<R: AsyncRead + Unpin>(mut reader: R) -> Captured {
    let mut captured = Captured::default();
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return captured,
            Ok(n) => {
                let room = OUTPUT_CAPTURE_LIMIT.saturating_sub(captured.bytes.len());
                if n > room {
                    captured.truncated = true;
                }
                captured.bytes.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

async fn collect_output(task: Option<JoinHandle<Captured>>) -> String {
    let Some(mut task) = task else {
        return String::new();
    };
    match tokio::time::timeout(OUTPUT_DRAIN_LIMIT, &mut task).await {
        Ok(Ok(captured)) => {
            let mut text = String::from_utf8_lossy(&captured.bytes).into_owned();
            if captured.truncated {
                text.push_str("\n[output truncated]");
            }
            text
        }
        Ok(Err(_)) => String::new(),
        Err(_) => {
            task.abort();
            "[output not collected: a process started by the hook still holds it open]".to_string()
        }
    }
}

/// At most `max` bytes from the start, cut on a character boundary.
fn head(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// At most `max` bytes from the end (where a failing script says why), on a character boundary.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_map(env: &[(String, String)]) -> std::collections::HashMap<&str, &str> {
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn prefixes_and_event_names_round_trip() {
        for point in HookPoint::ALL {
            assert!(point.prefix().starts_with("gh-ost-on-"));
            assert_eq!(&point.prefix()["gh-ost-on-".len()..], point.event_name());
            assert_eq!(HookPoint::from_event_name(point.event_name()), Some(point));
            assert_eq!(HookPoint::from_event_name(point.prefix()), Some(point));
        }
        assert_eq!(HookPoint::from_event_name("nope"), None);
    }

    #[test]
    fn which_points_abort() {
        assert!(HookPoint::Startup.aborts_on_failure());
        assert!(HookPoint::InteractiveCommand.aborts_on_failure());
        assert!(!HookPoint::Status.aborts_on_failure());
        assert!(!HookPoint::BatchCopyRetry.aborts_on_failure());
        assert!(!HookPoint::Failure.aborts_on_failure());
    }

    #[test]
    fn environment_uses_gh_ost_formats() {
        let hooks = Hooks::new(
            HooksConfig {
                hint_token: Secret::new("tok"),
                ..HooksConfig::default()
            },
            MigrationInfo {
                database: "db".into(),
                dry_run: true,
                ..MigrationInfo::default()
            },
        );
        let progress = Progress {
            phase: Phase::Copying,
            rows_copied: 1,
            rows_estimate: 3,
            replica_lag_millis: Some(1500),
            ..Progress::default()
        };
        let env = hooks.environment(&progress, &[env_command("sup")]);
        let map = env_map(&env);
        assert_eq!(map["GH_OST_DATABASE_NAME"], "db");
        assert_eq!(map["GHOST_DATABASE_NAME"], "db");
        assert_eq!(map["GH_OST_PROGRESS"], "33.333333");
        assert_eq!(map["GH_OST_INSPECTED_LAG"], "1.500000");
        assert_eq!(map["GH_OST_HEARTBEAT_LAG"], "0.000000");
        assert_eq!(map["GH_OST_ETA_SECONDS"], "-9223372036854775808");
        assert_eq!(map["GH_OST_ELAPSED_COPY_SECONDS"], "0.000000");
        assert_eq!(map["GH_OST_DRY_RUN"], "true");
        assert_eq!(map["GH_OST_REVERT"], "false");
        assert_eq!(map["GH_OST_HOOKS_HINT_TOKEN"], "tok");
        assert_eq!(map["GH_OST_COMMAND"], "'sup'");
        assert_eq!(map["GHOST_COMMAND"], "'sup'");
    }

    #[test]
    fn eta_is_zero_once_copied() {
        let p = Progress {
            phase: Phase::CuttingOver,
            ..Progress::default()
        };
        assert_eq!(hook_eta_seconds(&p), 0);
        assert!((hook_progress_pct(&p) - 100.0).abs() < f64::EPSILON);
        let p = Progress {
            phase: Phase::Copying,
            eta_seconds: Some(42),
            ..Progress::default()
        };
        assert_eq!(hook_eta_seconds(&p), 42);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_millis(300)), "0s");
        assert_eq!(go_duration(Duration::from_secs(59)), "59s");
        assert_eq!(go_duration(Duration::from_secs(65)), "1m5s");
        assert_eq!(go_duration(Duration::from_secs(3605)), "1h0m5s");
    }

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(
            redact_url("https://user:pw@example.com/hook?token=x#f"),
            "https://example.com/hook"
        );
        assert_eq!(redact_url("not a url"), "<invalid url>");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let text = "ééééé";
        assert_eq!(head(text, 3), "é…");
        assert_eq!(tail(text, 3), "…é");
        assert_eq!(head("abc", 10), "abc");
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig.as_deref(),
            Some("sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn status_line_has_gh_ost_shape() {
        let hooks = Hooks::disabled();
        let line = hooks.status_line(&Progress {
            phase: Phase::Copying,
            rows_copied: 5,
            rows_estimate: 10,
            eta_seconds: Some(65),
            ..Progress::default()
        });
        assert!(
            line.starts_with("Copy: 5/10 50.0%; Applied: 0; Backlog: 0; Time: "),
            "{line}"
        );
        assert!(line.ends_with("State: migrating; ETA: 1m5s"), "{line}");
    }
}
