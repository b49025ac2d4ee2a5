//! Throttling, after gh-ost's throttler.go. Collector tasks measure replica lag, server load, the
//! throttle query and the throttle HTTP endpoint, each on its own cadence; a decision loop combines
//! their latest readings with the user's controls every 100 ms and publishes a verdict on a watch
//! channel. A source that cannot be measured throttles: the migration never races ahead on missing
//! data.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mysql_async::{Conn, Row, Value, prelude::Queryable};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use tracing::{debug, error, info, warn};

use super::conn::ConnectionConfig;
use super::controls::Controls;
use super::error::server_error_text;
use crate::sql::{is_bare_word, qualified, quote_literal};

/// How often the verdict is recomputed from the latest readings.
const DECIDE_EVERY: Duration = Duration::from_millis(100);
/// gh-ost's general metrics cadence: load and the throttle query.
const LOAD_EVERY: Duration = Duration::from_secs(1);
const QUERY_EVERY: Duration = Duration::from_secs(1);
/// Bounds every connect + query, so a hung server shows up as an error, not as an old reading.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Floor for configured intervals, so a zero never becomes a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
const DEFAULT_PORT: u16 = 3306;

/// The reason published while hibernating after critical-load (heartbeats should pause too).
pub const HIBERNATION_REASON: &str = "critical-load hibernation";
/// The verdict before the first evaluation: nothing is known yet, so nothing may run.
pub const STARTING_REASON: &str = "throttler starting";

#[derive(Clone, Debug)]
pub struct ThrottleSettings {
    /// SHOW GLOBAL STATUS for max/critical load, and the throttle query, run here.
    pub applier: ConnectionConfig,
    /// User, password and database for control replicas; host and port are replaced per replica.
    pub replica_credentials: ConnectionConfig,
    /// The inspected server when it is a replica: its lag counts too.
    pub inspected_replica: Option<ConnectionConfig>,
    /// Where the heartbeat row lives.
    pub changelog_schema: String,
    pub changelog_table: String,
    pub flag_file: Option<PathBuf>,
    pub additional_flag_file: Option<PathBuf>,
    pub http_interval: Duration,
    pub http_timeout: Duration,
    pub ignore_http_errors: bool,
    pub critical_load_interval: Duration,
    pub critical_load_hibernate: Duration,
    /// How often replica lag is read (gh-ost: the heartbeat interval).
    pub lag_interval: Duration,
}

impl ThrottleSettings {
    /// gh-ost's defaults for everything but the endpoints and the changelog table.
    pub fn new(
        applier: ConnectionConfig,
        replica_credentials: ConnectionConfig,
        changelog_schema: impl Into<String>,
        changelog_table: impl Into<String>,
    ) -> Self {
        Self {
            applier,
            replica_credentials,
            inspected_replica: None,
            changelog_schema: changelog_schema.into(),
            changelog_table: changelog_table.into(),
            flag_file: None,
            additional_flag_file: None,
            http_interval: Duration::from_millis(100),
            http_timeout: Duration::from_millis(1000),
            ignore_http_errors: false,
            critical_load_interval: Duration::ZERO,
            critical_load_hibernate: Duration::ZERO,
            lag_interval: Duration::from_millis(100),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThrottleVerdict {
    pub throttled: bool,
    /// The first reason that applies, gh-ost-like ("commanded by user", "lag=2.345s on h:p", ...).
    pub reason: String,
    /// The highest lag measured over the inspected replica and the control replicas.
    pub replica_lag: Option<Duration>,
    /// Set (for good) once critical-load is reached and no hibernation is configured: abort.
    pub critical: Option<String>,
}

impl ThrottleVerdict {
    /// gh-ost writes no heartbeat while hibernating.
    pub fn hibernating(&self) -> bool {
        self.throttled && self.reason == HIBERNATION_REASON
    }
}

/// Starts the throttler. The verdict starts throttled ("throttler starting") and is recomputed at
/// least every 100 ms; it is published only when it changes. The task stops when every verdict
/// receiver is dropped, or when the handle is aborted (which also stops its collectors).
pub fn spawn_throttler(
    settings: ThrottleSettings,
    controls: watch::Receiver<Controls>,
) -> (watch::Receiver<ThrottleVerdict>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(ThrottleVerdict {
        throttled: true,
        reason: STARTING_REASON.to_string(),
        ..ThrottleVerdict::default()
    });
    let ctx = Arc::new(Ctx {
        settings,
        shared: Mutex::new(Shared::default()),
        wake: Notify::new(),
    });
    let handle = tokio::spawn(run(ctx, controls, tx));
    (rx, handle)
}

// ---------------------------------------------------------------------------------------------
// Shared state between collectors and the decision loop.

/// One reading, with when it was taken and what it was taken for (endpoint, query, URL, variable
/// names): a reading taken for other settings than the current ones counts as missing.
struct Measured<T> {
    at: Instant,
    key: String,
    value: Result<T, String>,
}

impl<T> Measured<T> {
    fn now(key: impl Into<String>, value: Result<T, String>) -> Self {
        Self {
            at: Instant::now(),
            key: key.into(),
            value,
        }
    }
}

#[derive(Default)]
struct Shared {
    hibernate_until: Option<Instant>,
    critical: Option<String>,
    lag: HashMap<String, Measured<Duration>>,
    load: Option<Measured<Vec<(String, u64)>>>,
    query: Option<Measured<f64>>,
    http: Option<Measured<u16>>,
}

struct Ctx {
    settings: ThrottleSettings,
    shared: Mutex<Shared>,
    /// Collectors ring this after storing a reading, so the verdict follows at once.
    wake: Notify,
}

impl Ctx {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        // The state is plain data; a panicked writer leaves nothing half-valid behind.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, update: impl FnOnce(&mut Shared)) {
        update(&mut self.shared());
        self.wake.notify_one();
    }

    /// gh-ost touches no server while hibernating.
    async fn wait_out_hibernation(&self) {
        loop {
            let until = self.shared().hibernate_until;
            match until {
                Some(until) if until > Instant::now() => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await
                }
                _ => return,
            }
        }
    }

    /// Snapshot of everything the decision needs, for the current controls.
    fn readings(&self, controls: &Controls) -> Readings {
        let settings = &self.settings;
        // File checks happen before taking the lock: they are syscalls.
        let flag_file = [&settings.flag_file, &settings.additional_flag_file]
            .into_iter()
            .flatten()
            .find(|path| path.exists())
            .cloned();
        let now = Instant::now();
        let shared = self.shared();

        let lag_stale = stale_after(settings.lag_interval, PROBE_TIMEOUT);
        let lags = lag_sources(settings, controls)
            .into_iter()
            .map(|source| {
                let reading = reading_of(shared.lag.get(&source.key), &source.key, now, lag_stale);
                (source.key, reading)
            })
            .collect();

        let names = status_names(&controls.max_load, &controls.critical_load);
        let load = (!names.is_empty()).then(|| {
            reading_of(
                shared.load.as_ref(),
                &names.join(","),
                now,
                // A critical-load re-check may stretch one cycle up to LOAD_EVERY more.
                stale_after(LOAD_EVERY * 2, PROBE_TIMEOUT),
            )
        });
        let query = active_text(&controls.throttle_query).map(|query| {
            reading_of(
                shared.query.as_ref(),
                query,
                now,
                stale_after(QUERY_EVERY, PROBE_TIMEOUT),
            )
        });
        let http = active_text(&controls.throttle_http).map(|url| {
            reading_of(
                shared.http.as_ref(),
                url,
                now,
                stale_after(settings.http_interval, http_timeout(settings)),
            )
        });

        Readings {
            user: controls.throttle,
            flag_file,
            hibernating: shared.hibernate_until.is_some_and(|until| until > now),
            critical: shared.critical.clone(),
            lags,
            max_lag: controls.max_lag,
            load,
            max_load: controls.max_load.clone(),
            query,
            http,
            ignore_http_errors: settings.ignore_http_errors,
        }
    }
}

fn stale_after(interval: Duration, timeout: Duration) -> Duration {
    interval.max(MIN_INTERVAL) + timeout + Duration::from_secs(1)
}

fn http_timeout(settings: &ThrottleSettings) -> Duration {
    if settings.http_timeout.is_zero() {
        PROBE_TIMEOUT
    } else {
        settings.http_timeout
    }
}

/// A configured query or URL; blank counts as not configured.
fn active_text(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Tasks.

async fn run(
    ctx: Arc<Ctx>,
    mut controls: watch::Receiver<Controls>,
    tx: watch::Sender<ThrottleVerdict>,
) {
    // Dropping the set (when this task ends or is aborted) aborts every collector.
    let mut collectors = JoinSet::new();
    collectors.spawn(collect_lag(ctx.clone(), controls.clone()));
    collectors.spawn(collect_load(ctx.clone(), controls.clone()));
    collectors.spawn(collect_query(ctx.clone(), controls.clone()));
    collectors.spawn(collect_http(ctx.clone(), controls.clone()));

    let mut tick = tokio::time::interval(DECIDE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut controls_open = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.wake.notified() => {}
            changed = controls.changed(), if controls_open => {
                // Without a sender the last controls are final; keep deciding on them.
                controls_open = changed.is_ok();
            }
        }
        if tx.is_closed() {
            debug!("nobody reads throttle verdicts any more; throttler stops");
            return;
        }
        let current = controls.borrow_and_update().clone();
        let verdict = decide(&ctx.readings(&current));
        tx.send_if_modified(|old| {
            if *old == verdict {
                return false;
            }
            log_change(old, &verdict);
            *old = verdict;
            true
        });
    }
}

fn log_change(old: &ThrottleVerdict, new: &ThrottleVerdict) {
    if new.critical.is_some() && old.critical != new.critical {
        error!(
            reason = new.critical.as_deref().unwrap_or_default(),
            "critical load reached"
        );
    }
    // A measured value in the reason (lag=5.3s, Threads_running=31) changes at every check: log
    // when the reason itself changes, not each new figure.
    let kind = |reason: &str| -> String {
        reason
            .chars()
            .filter(|c| !c.is_ascii_digit() && *c != '.')
            .collect()
    };
    if new.throttled && (!old.throttled || kind(&old.reason) != kind(&new.reason)) {
        info!(reason = %new.reason, "throttled");
    } else if !new.throttled && old.throttled {
        info!(previous = %old.reason, "throttle lifted");
    }
}

/// Sleeps `interval`, or less when the controls change, so new settings are measured at once.
async fn pause(interval: Duration, controls: &mut watch::Receiver<Controls>) {
    tokio::select! {
        _ = tokio::time::sleep(interval) => {}
        changed = controls.changed() => {
            if changed.is_err() {
                // The sender is gone: the controls will not change again, keep the cadence.
                tokio::time::sleep(interval).await;
            }
        }
    }
}

async fn collect_lag(ctx: Arc<Ctx>, mut controls: watch::Receiver<Controls>) {
    let sql: Arc<str> = format!(
        "SELECT value FROM {} WHERE hint = 'heartbeat' AND id <= 255",
        qualified(
            &ctx.settings.changelog_schema,
            &ctx.settings.changelog_table
        )
    )
    .into();
    let every = ctx.settings.lag_interval.max(MIN_INTERVAL);
    // One connection per replica, kept across probes.
    let mut conns: HashMap<String, Conn> = HashMap::new();
    loop {
        ctx.wait_out_hibernation().await;
        let current = controls.borrow_and_update().clone();
        let sources = lag_sources(&ctx.settings, &current);
        conns.retain(|key, _| sources.iter().any(|s| &s.key == key));
        // Replicas are probed in parallel so one slow server does not age the others' readings.
        let probes: Vec<_> = sources
            .into_iter()
            .map(|source| {
                let mut conn = conns.remove(&source.key);
                let sql = sql.clone();
                async move {
                    let result = match &source.config {
                        Ok(cfg) => probe_heartbeat(cfg, &mut conn, &sql).await,
                        Err(e) => Err(e.clone()),
                    };
                    (source.key, conn, result)
                }
            })
            .collect();
        let mut readings = HashMap::new();
        for (key, conn, result) in futures_util::future::join_all(probes).await {
            if let Err(e) = &result {
                debug!(replica = %key, error = %e, "replica lag probe failed");
            }
            if let Some(conn) = conn {
                conns.insert(key.clone(), conn);
            }
            readings.insert(key.clone(), Measured::now(key, result));
        }
        ctx.publish(|s| s.lag = readings);
        pause(every, &mut controls).await;
    }
}

async fn collect_load(ctx: Arc<Ctx>, mut controls: watch::Receiver<Controls>) {
    let settings = &ctx.settings;
    let mut conn: Option<Conn> = None;
    let mut recheck_at: Option<Instant> = None;
    loop {
        ctx.wait_out_hibernation().await;
        let current = controls.borrow_and_update().clone();
        let names = status_names(&current.max_load, &current.critical_load);
        if names.is_empty() {
            conn = None;
            recheck_at = None;
            ctx.publish(|s| s.load = None);
            pause(LOAD_EVERY, &mut controls).await;
            continue;
        }
        let result = probe_status(&settings.applier, &mut conn, &names).await;
        let now = Instant::now();
        match &result {
            Err(e) => debug!(error = %e, "load probe failed"),
            Ok(status) => {
                let declared = ctx.shared().critical.is_some();
                if !declared {
                    let breach = load_breach(status, &current.critical_load);
                    match critical_step(
                        breach,
                        recheck_at,
                        now,
                        settings.critical_load_interval,
                        settings.critical_load_hibernate,
                    ) {
                        CriticalStep::Wait(at) => recheck_at = at,
                        CriticalStep::Hibernate(breach) => {
                            recheck_at = None;
                            let hibernate = settings.critical_load_hibernate;
                            warn!(%breach, ?hibernate, "critical-load reached; hibernating");
                            ctx.publish(|s| s.hibernate_until = Some(now + hibernate));
                        }
                        CriticalStep::Abort(breach) => {
                            recheck_at = None;
                            ctx.publish(|s| s.critical = Some(format!("critical-load {breach}")));
                        }
                    }
                }
            }
        }
        ctx.publish(|s| s.load = Some(Measured::now(names.join(","), result)));
        let wait = recheck_at
            .map_or(LOAD_EVERY, |at| {
                at.saturating_duration_since(now).min(LOAD_EVERY)
            })
            .max(MIN_INTERVAL);
        pause(wait, &mut controls).await;
    }
}

async fn collect_query(ctx: Arc<Ctx>, mut controls: watch::Receiver<Controls>) {
    let mut conn: Option<Conn> = None;
    loop {
        ctx.wait_out_hibernation().await;
        let query = active_text(&controls.borrow_and_update().throttle_query).map(str::to_string);
        let reading = match query {
            None => {
                conn = None;
                None
            }
            Some(query) => {
                let result = probe_query(&ctx.settings.applier, &mut conn, &query).await;
                if let Err(e) = &result {
                    debug!(error = %e, "throttle query failed");
                }
                Some(Measured::now(query, result))
            }
        };
        ctx.publish(|s| s.query = reading);
        pause(QUERY_EVERY, &mut controls).await;
    }
}

async fn collect_http(ctx: Arc<Ctx>, mut controls: watch::Receiver<Controls>) {
    let client = reqwest::Client::builder()
        .timeout(http_timeout(&ctx.settings))
        .user_agent(concat!("ghost/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {}", error_chain(&e)));
    let every = ctx.settings.http_interval.max(MIN_INTERVAL);
    loop {
        ctx.wait_out_hibernation().await;
        let url = active_text(&controls.borrow_and_update().throttle_http).map(str::to_string);
        let Some(url) = url else {
            ctx.publish(|s| s.http = None);
            pause(every, &mut controls).await;
            continue;
        };
        let result = match &client {
            Ok(client) => client
                .head(url.as_str())
                .send()
                .await
                .map(|response| response.status().as_u16())
                .map_err(|e| error_chain(&e)),
            Err(e) => Err(e.clone()),
        };
        if let Err(e) = &result {
            debug!(%url, error = %e, "throttle HTTP check failed");
        }
        ctx.publish(|s| s.http = Some(Measured::now(url, result)));
        pause(every, &mut controls).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Probes. Each keeps its connection in `conn`, opens one when there is none, and drops it after
// anything but a plain SQL error, so the next probe reconnects.

async fn ensure_conn<'c>(
    cfg: &ConnectionConfig,
    conn: &'c mut Option<Conn>,
) -> Result<&'c mut Conn, String> {
    if conn.is_none() {
        *conn = Some(cfg.connect().await.map_err(|e| e.to_string())?);
    }
    conn.as_mut().ok_or_else(|| "no connection".to_string())
}

fn query_failed(error: mysql_async::Error, conn: &mut Option<Conn>) -> String {
    // A server error (bad SQL, missing table) leaves the session usable; anything else may not.
    if !matches!(error, mysql_async::Error::Server(_)) {
        *conn = None;
    }
    server_error_text(&error)
}

fn timed_out(conn: &mut Option<Conn>) -> String {
    // The session is mid-statement; it cannot be reused.
    *conn = None;
    format!("no answer within {}s", PROBE_TIMEOUT.as_secs())
}

async fn probe_heartbeat(
    cfg: &ConnectionConfig,
    conn: &mut Option<Conn>,
    sql: &str,
) -> Result<Duration, String> {
    let attempt = tokio::time::timeout(PROBE_TIMEOUT, async {
        let c = ensure_conn(cfg, conn).await?;
        match c.query_first::<String, _>(sql).await {
            Ok(value) => Ok::<_, String>(value),
            Err(e) => Err(query_failed(e, conn)),
        }
    })
    .await;
    match attempt {
        Err(_) => Err(timed_out(conn)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(None)) => Err("no heartbeat row in the changelog table yet".to_string()),
        Ok(Ok(Some(value))) => heartbeat_lag(&value, chrono::Utc::now()),
    }
}

async fn probe_status(
    cfg: &ConnectionConfig,
    conn: &mut Option<Conn>,
    names: &[String],
) -> Result<Vec<(String, u64)>, String> {
    let sql = status_query(names)?;
    let attempt = tokio::time::timeout(PROBE_TIMEOUT, async {
        let c = ensure_conn(cfg, conn).await?;
        match c.query::<(String, String), _>(sql.as_str()).await {
            Ok(rows) => Ok::<_, String>(rows),
            Err(e) => Err(query_failed(e, conn)),
        }
    })
    .await;
    match attempt {
        Err(_) => Err(timed_out(conn)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(rows)) => parse_status(&rows, names),
    }
}

async fn probe_query(
    cfg: &ConnectionConfig,
    conn: &mut Option<Conn>,
    query: &str,
) -> Result<f64, String> {
    let attempt = tokio::time::timeout(PROBE_TIMEOUT, async {
        let c = ensure_conn(cfg, conn).await?;
        match c.query_first::<Row, _>(query).await {
            Ok(row) => Ok::<_, String>(row),
            Err(e) => Err(query_failed(e, conn)),
        }
    })
    .await;
    match attempt {
        Err(_) => Err(timed_out(conn)),
        Ok(Err(e)) => Err(e),
        // No row is the usual "SELECT 1 FROM ... WHERE <busy>" answer for "not busy".
        Ok(Ok(None)) => Ok(0.0),
        Ok(Ok(Some(row))) => query_number(row.as_ref(0)),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Pure decision logic.

#[derive(Clone, Debug, PartialEq)]
enum Reading<T> {
    /// Configured but not measured yet for the current settings.
    Pending,
    Failed(String),
    Value(T),
}

fn reading_of<T: Clone>(
    measured: Option<&Measured<T>>,
    key: &str,
    now: Instant,
    stale: Duration,
) -> Reading<T> {
    let Some(measured) = measured.filter(|m| m.key == key) else {
        return Reading::Pending;
    };
    let age = now.saturating_duration_since(measured.at);
    if age > stale {
        return Reading::Failed(format!("no measurement for {:.1}s", age.as_secs_f64()));
    }
    match &measured.value {
        Ok(value) => Reading::Value(value.clone()),
        Err(e) => Reading::Failed(e.clone()),
    }
}

#[derive(Clone, Debug, Default)]
struct Readings {
    user: bool,
    /// The first throttle flag file that exists.
    flag_file: Option<PathBuf>,
    hibernating: bool,
    critical: Option<String>,
    /// Per replica (`host:port`), in probe order: inspected replica first.
    lags: Vec<(String, Reading<Duration>)>,
    max_lag: Duration,
    /// None when neither max-load nor critical-load is configured.
    load: Option<Reading<Vec<(String, u64)>>>,
    max_load: Vec<(String, u64)>,
    /// None when no throttle query is configured.
    query: Option<Reading<f64>>,
    /// None when no throttle URL is configured.
    http: Option<Reading<u16>>,
    ignore_http_errors: bool,
}

fn decide(r: &Readings) -> ThrottleVerdict {
    let replica_lag = r
        .lags
        .iter()
        .filter_map(|(_, reading)| match reading {
            // Millisecond precision: finer changes are noise and would republish the verdict.
            Reading::Value(lag) => Some(Duration::from_millis(lag.as_millis() as u64)),
            _ => None,
        })
        .max();
    let reason = first_reason(r);
    ThrottleVerdict {
        throttled: reason.is_some(),
        reason: reason.unwrap_or_default(),
        replica_lag,
        critical: r.critical.clone(),
    }
}

/// gh-ost's order: user, flag files, hibernation (and critical load), lag, max-load, throttle
/// query, throttle HTTP.
fn first_reason(r: &Readings) -> Option<String> {
    if r.user {
        return Some("commanded by user".to_string());
    }
    if let Some(path) = &r.flag_file {
        return Some(format!("flag-file {}", path.display()));
    }
    if r.hibernating {
        return Some(HIBERNATION_REASON.to_string());
    }
    if let Some(critical) = &r.critical {
        return Some(critical.clone());
    }
    if let Some(reason) = lag_reason(&r.lags, r.max_lag) {
        return Some(reason);
    }
    if let Some(load) = &r.load {
        let label = if r.max_load.is_empty() {
            "critical-load"
        } else {
            "max-load"
        };
        match load {
            Reading::Pending => return Some(format!("{label} not measured yet")),
            Reading::Failed(e) => return Some(format!("{label} check failed: {e}")),
            Reading::Value(status) => {
                if let Some(breach) = load_breach(status, &r.max_load) {
                    return Some(format!("max-load {breach}"));
                }
            }
        }
    }
    match &r.query {
        Some(Reading::Pending) => return Some("throttle-query not evaluated yet".to_string()),
        Some(Reading::Failed(e)) => return Some(format!("throttle-query failed: {e}")),
        Some(Reading::Value(v)) if *v > 0.0 => {
            return Some(format!("throttle-query returned {v}"));
        }
        _ => {}
    }
    match &r.http {
        Some(Reading::Pending) => Some("throttle-http not checked yet".to_string()),
        Some(Reading::Failed(e)) if !r.ignore_http_errors => Some(format!("http error: {e}")),
        Some(Reading::Value(status)) if *status != 200 => Some(format!("http status {status}")),
        _ => None,
    }
}

/// Any replica without a reading throttles first; otherwise the worst lag above `max_lag`.
fn lag_reason(lags: &[(String, Reading<Duration>)], max_lag: Duration) -> Option<String> {
    for (source, reading) in lags {
        match reading {
            Reading::Pending => return Some(format!("lag unknown on {source}: not measured yet")),
            Reading::Failed(e) => return Some(format!("lag unknown on {source}: {e}")),
            Reading::Value(_) => {}
        }
    }
    lags.iter()
        .filter_map(|(source, reading)| match reading {
            Reading::Value(lag) if *lag > max_lag => Some((source, *lag)),
            _ => None,
        })
        .max_by_key(|(_, lag)| *lag)
        .map(|(source, lag)| format!("lag={} on {source}", seconds(lag)))
}

fn seconds(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// The first threshold reached, as `Var=value >= threshold`. Names compare case-insensitively,
/// as the server's do; a variable absent from `status` is not judged here.
fn load_breach(status: &[(String, u64)], thresholds: &[(String, u64)]) -> Option<String> {
    thresholds.iter().find_map(|(name, limit)| {
        let (_, value) = status
            .iter()
            .find(|(var, _)| var.eq_ignore_ascii_case(name))?;
        (*value >= *limit).then(|| format!("{name}={value} >= {limit}"))
    })
}

/// The variables to read: max-load's then critical-load's, each once.
fn status_names(max_load: &[(String, u64)], critical_load: &[(String, u64)]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (name, _) in max_load.iter().chain(critical_load) {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.clone());
        }
    }
    names
}

fn status_query(names: &[String]) -> Result<String, String> {
    if let Some(bad) = names.iter().find(|n| !is_bare_word(n)) {
        return Err(format!("{bad:?} is not a status variable name"));
    }
    let list: Vec<String> = names.iter().map(|n| quote_literal(n)).collect();
    Ok(format!(
        "SHOW GLOBAL STATUS WHERE Variable_name IN ({})",
        list.join(", ")
    ))
}

/// Every requested variable must be present and numeric: a typo must not silently disable a limit.
fn parse_status(rows: &[(String, String)], names: &[String]) -> Result<Vec<(String, u64)>, String> {
    let mut status = Vec::with_capacity(names.len());
    for name in names {
        let (_, raw) = rows
            .iter()
            .find(|(var, _)| var.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("status variable {name} not found"))?;
        let raw = raw.trim();
        let value = raw
            .parse::<u64>()
            .ok()
            .or_else(|| {
                raw.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(|v| v as u64)
            })
            .ok_or_else(|| format!("status variable {name} = {raw:?} is not a number"))?;
        status.push((name.clone(), value));
    }
    Ok(status)
}

/// The throttle query's first column: NULL and no column count as 0.
fn query_number(value: Option<&Value>) -> Result<f64, String> {
    match value {
        None | Some(Value::NULL) => Ok(0.0),
        Some(Value::Int(v)) => Ok(*v as f64),
        Some(Value::UInt(v)) => Ok(*v as f64),
        Some(Value::Float(v)) => Ok(f64::from(*v)),
        Some(Value::Double(v)) => Ok(*v),
        Some(Value::Bytes(bytes)) => {
            let text = String::from_utf8_lossy(bytes);
            text.trim()
                .parse::<f64>()
                .map_err(|_| format!("returned {text:?}, not a number"))
        }
        Some(other) => Err(format!("returned {other:?}, not a number")),
    }
}

/// now − heartbeat; a heartbeat from the future (clock skew) counts as no lag.
fn heartbeat_lag(value: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Duration, String> {
    let at = chrono::DateTime::parse_from_rfc3339(value.trim())
        .map_err(|e| format!("heartbeat value {value:?} is not a timestamp: {e}"))?;
    Ok((now - at.with_timezone(&chrono::Utc))
        .to_std()
        .unwrap_or_default())
}

struct LagSource {
    /// `host:port`, as the reason shows it.
    key: String,
    config: Result<ConnectionConfig, String>,
}

/// The inspected replica, then each control replica, each endpoint once.
fn lag_sources(settings: &ThrottleSettings, controls: &Controls) -> Vec<LagSource> {
    let mut sources: Vec<LagSource> = Vec::new();
    if let Some(cfg) = &settings.inspected_replica {
        sources.push(LagSource {
            key: cfg.endpoint(),
            config: Ok(cfg.clone()),
        });
    }
    for entry in controls
        .throttle_control_replicas
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
    {
        let source = match parse_host_port(entry) {
            Ok((host, port)) => {
                let cfg = ConnectionConfig {
                    host,
                    port,
                    ..settings.replica_credentials.clone()
                };
                LagSource {
                    key: cfg.endpoint(),
                    config: Ok(cfg),
                }
            }
            Err(e) => LagSource {
                key: entry.to_string(),
                config: Err(e),
            },
        };
        if !sources.iter().any(|s| s.key == source.key) {
            sources.push(source);
        }
    }
    sources
}

/// `host:port`, `host` (port 3306), `[v6]:port`, `[v6]`, or a bare IPv6 address (port 3306).
fn parse_host_port(entry: &str) -> Result<(String, u16), String> {
    let entry = entry.trim();
    let bad = || format!("{entry:?} is not host:port");
    let parse_port = |port: &str| match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(bad()),
    };
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        let port = match after {
            "" => DEFAULT_PORT,
            after => parse_port(after.strip_prefix(':').ok_or_else(bad)?)?,
        };
        return Ok((host.to_string(), port));
    }
    match entry.matches(':').count() {
        0 if !entry.is_empty() => Ok((entry.to_string(), DEFAULT_PORT)),
        1 => {
            let (host, port) = entry.split_once(':').ok_or_else(bad)?;
            if host.is_empty() {
                return Err(bad());
            }
            Ok((host.to_string(), parse_port(port)?))
        }
        n if n > 1 => Ok((entry.to_string(), DEFAULT_PORT)),
        _ => Err(bad()),
    }
}

#[derive(Debug, PartialEq)]
enum CriticalStep {
    /// Nothing to do; re-check at this instant if set.
    Wait(Option<Instant>),
    Hibernate(String),
    Abort(String),
}

/// gh-ost's critical-load handling: hibernate at once if configured; otherwise abort at once, or,
/// with an interval, only if the load is still critical when re-checked after it.
fn critical_step(
    breach: Option<String>,
    recheck_at: Option<Instant>,
    now: Instant,
    interval: Duration,
    hibernate: Duration,
) -> CriticalStep {
    match (breach, recheck_at) {
        // gh-ost re-checks once, at the end of the interval: readings in between do not count.
        (None, Some(at)) if now < at => CriticalStep::Wait(Some(at)),
        (None, _) => CriticalStep::Wait(None),
        (Some(breach), _) if !hibernate.is_zero() => CriticalStep::Hibernate(breach),
        (Some(_), None) if !interval.is_zero() => CriticalStep::Wait(Some(now + interval)),
        (Some(_), Some(at)) if now < at => CriticalStep::Wait(Some(at)),
        (Some(breach), _) => CriticalStep::Abort(breach),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn load_breach_reports_the_first_reached_threshold() {
        let status = vars(&[("Threads_running", 30), ("Threads_connected", 100)]);
        assert_eq!(
            load_breach(&status, &vars(&[("Threads_running", 25)])).as_deref(),
            Some("Threads_running=30 >= 25")
        );
        assert_eq!(
            load_breach(&status, &vars(&[("threads_running", 30)])).as_deref(),
            Some("threads_running=30 >= 30"),
            "equal to the threshold counts, names compare case-insensitively"
        );
        assert_eq!(
            load_breach(&status, &vars(&[("Threads_running", 31)])),
            None
        );
        assert_eq!(
            load_breach(
                &status,
                &vars(&[("Threads_running", 50), ("Threads_connected", 100)])
            )
            .as_deref(),
            Some("Threads_connected=100 >= 100")
        );
        assert_eq!(load_breach(&status, &[]), None);
        assert_eq!(load_breach(&status, &vars(&[("Absent", 0)])), None);
    }

    #[test]
    fn status_names_query_and_parsing() {
        let names = status_names(
            &vars(&[("Threads_running", 1), ("Threads_connected", 2)]),
            &vars(&[("threads_running", 3), ("Questions", 4)]),
        );
        assert_eq!(names, ["Threads_running", "Threads_connected", "Questions"]);
        assert_eq!(
            status_query(&names[..2]).unwrap(),
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('Threads_running', 'Threads_connected')"
        );
        assert!(status_query(&["x'y".to_string()]).is_err());

        let rows = vec![
            ("THREADS_RUNNING".to_string(), "7".to_string()),
            ("Threads_connected".to_string(), "12.0".to_string()),
            ("Questions".to_string(), "ON".to_string()),
        ];
        assert_eq!(
            parse_status(&rows, &names[..2]).unwrap(),
            vars(&[("Threads_running", 7), ("Threads_connected", 12)])
        );
        assert!(
            parse_status(&rows, &names)
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            parse_status(&rows, &["Nope".to_string()])
                .unwrap_err()
                .contains("not found")
        );
    }

    #[test]
    fn parses_host_port() {
        let ok = |s: &str| parse_host_port(s).unwrap();
        assert_eq!(ok("127.0.0.1:23307"), ("127.0.0.1".into(), 23307));
        assert_eq!(ok(" replica-1 "), ("replica-1".into(), 3306));
        assert_eq!(ok("[::1]:3307"), ("::1".into(), 3307));
        assert_eq!(ok("[::1]"), ("::1".into(), 3306));
        assert_eq!(ok("fe80::1"), ("fe80::1".into(), 3306));
        for bad in [
            "", ":3306", "h:", "h:x", "h:0", "h:70000", "[::1", "[]:1", "[::1]x",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lag_sources_dedupe_and_use_replica_credentials() {
        let creds =
            ConnectionConfig::new("ignored", 1, "reader", Default::default()).with_database("d");
        let mut settings = ThrottleSettings::new(creds.clone(), creds, "d", "_t_ghc");
        settings.inspected_replica = Some(ConnectionConfig::new(
            "127.0.0.1",
            23307,
            "inspector",
            Default::default(),
        ));
        let controls = Controls {
            throttle_control_replicas: vec![
                "127.0.0.1:23307".into(),
                "r2".into(),
                " ".into(),
                "bad:port".into(),
            ],
            ..Controls::default()
        };
        let sources = lag_sources(&settings, &controls);
        let keys: Vec<&str> = sources.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["127.0.0.1:23307", "r2:3306", "bad:port"]);
        assert_eq!(sources[0].config.as_ref().unwrap().user, "inspector");
        let r2 = sources[1].config.as_ref().unwrap();
        assert_eq!(
            (r2.user.as_str(), r2.database.as_deref()),
            ("reader", Some("d"))
        );
        assert!(sources[2].config.is_err());
    }

    #[test]
    fn heartbeat_lag_is_now_minus_value() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-05-01T10:00:02.5Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            heartbeat_lag("2024-05-01T10:00:00.000000000Z", now).unwrap(),
            ms(2500)
        );
        assert_eq!(
            heartbeat_lag("2024-05-01T10:00:03Z", now).unwrap(),
            Duration::ZERO
        );
        assert!(heartbeat_lag("yesterday", now).is_err());
    }

    #[test]
    fn query_numbers() {
        assert_eq!(query_number(None), Ok(0.0));
        assert_eq!(query_number(Some(&Value::NULL)), Ok(0.0));
        assert_eq!(query_number(Some(&Value::Int(3))), Ok(3.0));
        assert_eq!(query_number(Some(&Value::Bytes(b"0.5".to_vec()))), Ok(0.5));
        assert!(query_number(Some(&Value::Bytes(b"busy".to_vec()))).is_err());
    }

    #[test]
    fn lag_reasons() {
        let lags = vec![
            ("a:1".to_string(), Reading::Value(ms(500))),
            ("b:2".to_string(), Reading::Value(ms(2345))),
            ("c:3".to_string(), Reading::Value(ms(1800))),
        ];
        assert_eq!(
            lag_reason(&lags, ms(1500)).as_deref(),
            Some("lag=2.345s on b:2")
        );
        assert_eq!(lag_reason(&lags, ms(2345)), None, "only above max-lag");
        let mut failing = lags.clone();
        failing.push(("127.0.0.1:1".into(), Reading::Failed("refused".into())));
        assert_eq!(
            lag_reason(&failing, ms(1500)).as_deref(),
            Some("lag unknown on 127.0.0.1:1: refused")
        );
        let pending = vec![("a:1".to_string(), Reading::Pending)];
        assert_eq!(
            lag_reason(&pending, ms(1500)).as_deref(),
            Some("lag unknown on a:1: not measured yet")
        );
        assert_eq!(lag_reason(&[], ms(1500)), None);
    }

    /// Everything configured and breached: each reason shows only once all before it are gone.
    #[test]
    fn first_reason_follows_gh_ost_order() {
        let mut r = Readings {
            user: true,
            flag_file: Some(PathBuf::from("/tmp/ghost.throttle")),
            hibernating: true,
            critical: Some("critical-load Threads_running=90 >= 80".into()),
            lags: vec![("r:3306".into(), Reading::Value(ms(5000)))],
            max_lag: ms(1500),
            load: Some(Reading::Value(vars(&[("Threads_running", 90)]))),
            max_load: vars(&[("Threads_running", 25)]),
            query: Some(Reading::Value(1.0)),
            http: Some(Reading::Value(503)),
            ignore_http_errors: false,
        };
        let mut seen = Vec::new();
        loop {
            let verdict = decide(&r);
            if !verdict.throttled {
                break;
            }
            seen.push(verdict.reason.clone());
            match seen.len() {
                1 => r.user = false,
                2 => r.flag_file = None,
                3 => r.hibernating = false,
                4 => r.critical = None,
                5 => r.lags = vec![("r:3306".into(), Reading::Value(ms(100)))],
                6 => r.max_load = vars(&[("Threads_running", 100)]),
                7 => r.query = Some(Reading::Value(0.0)),
                8 => r.http = Some(Reading::Value(200)),
                _ => panic!("never cleared: {seen:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                "commanded by user",
                "flag-file /tmp/ghost.throttle",
                "critical-load hibernation",
                "critical-load Threads_running=90 >= 80",
                "lag=5.000s on r:3306",
                "max-load Threads_running=90 >= 25",
                "throttle-query returned 1",
                "http status 503",
            ]
        );
        let clear = decide(&r);
        assert_eq!(clear.replica_lag, Some(ms(100)));
        assert_eq!(clear.critical, None);
        assert!(clear.reason.is_empty());
    }

    #[test]
    fn missing_data_throttles() {
        let base = Readings {
            max_lag: ms(1500),
            ..Readings::default()
        };
        assert!(
            !decide(&base).throttled,
            "nothing configured, nothing throttles"
        );

        let load = Readings {
            load: Some(Reading::Failed("Error 1045".into())),
            ..base.clone()
        };
        assert_eq!(
            decide(&load).reason,
            "critical-load check failed: Error 1045"
        );
        let load = Readings {
            load: Some(Reading::Pending),
            max_load: vars(&[("Threads_running", 1)]),
            ..base.clone()
        };
        assert_eq!(decide(&load).reason, "max-load not measured yet");

        let query = Readings {
            query: Some(Reading::Failed("Error 1064 (42000): syntax".into())),
            ..base.clone()
        };
        assert_eq!(
            decide(&query).reason,
            "throttle-query failed: Error 1064 (42000): syntax"
        );

        let mut http = Readings {
            http: Some(Reading::Failed("connection refused".into())),
            ..base.clone()
        };
        assert_eq!(decide(&http).reason, "http error: connection refused");
        http.ignore_http_errors = true;
        assert!(!decide(&http).throttled);
        http.http = Some(Reading::Pending);
        assert!(
            decide(&http).throttled,
            "ignoring errors is not ignoring the check"
        );
    }

    #[test]
    fn readings_for_other_settings_or_too_old_do_not_count() {
        let now = Instant::now();
        let fresh = Measured {
            at: now,
            key: "SELECT 1".to_string(),
            value: Ok(1.0),
        };
        assert_eq!(
            reading_of(Some(&fresh), "SELECT 1", now, ms(100)),
            Reading::Value(1.0)
        );
        assert_eq!(
            reading_of(Some(&fresh), "SELECT 0", now, ms(100)),
            Reading::Pending
        );
        assert_eq!(
            reading_of::<f64>(None, "SELECT 1", now, ms(100)),
            Reading::Pending
        );
        let later = now + ms(2000);
        assert!(matches!(
            reading_of(Some(&fresh), "SELECT 1", later, ms(100)),
            Reading::Failed(e) if e.starts_with("no measurement for 2.0s")
        ));
    }

    #[test]
    fn critical_steps() {
        let now = Instant::now();
        let hit = || Some("Threads_running=90 >= 80".to_string());
        let zero = Duration::ZERO;
        assert_eq!(
            critical_step(None, None, now, zero, zero),
            CriticalStep::Wait(None)
        );
        assert_eq!(
            critical_step(hit(), None, now, zero, zero),
            CriticalStep::Abort("Threads_running=90 >= 80".into())
        );
        assert_eq!(
            critical_step(hit(), None, now, ms(500), ms(1000)),
            CriticalStep::Hibernate("Threads_running=90 >= 80".into()),
            "hibernation wins over the re-check"
        );
        let at = now + ms(500);
        assert_eq!(
            critical_step(hit(), None, now, ms(500), zero),
            CriticalStep::Wait(Some(at))
        );
        assert_eq!(
            critical_step(None, Some(at), now + ms(100), ms(500), zero),
            CriticalStep::Wait(Some(at)),
            "only the re-check at the end of the interval decides"
        );
        assert_eq!(
            critical_step(None, Some(at), at, ms(500), zero),
            CriticalStep::Wait(None)
        );
        assert_eq!(
            critical_step(hit(), Some(at), at, ms(500), zero),
            CriticalStep::Abort("Threads_running=90 >= 80".into())
        );
    }

    #[test]
    fn hibernating_verdict() {
        let v = ThrottleVerdict {
            throttled: true,
            reason: HIBERNATION_REASON.into(),
            ..ThrottleVerdict::default()
        };
        assert!(v.hibernating());
        assert!(!ThrottleVerdict::default().hibernating());
    }
}
