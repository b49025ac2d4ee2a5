//! `list` and `status`: what a person reads, built from the objects alone.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::{Format, PluginError, Target, print_as, print_migration};
use crate::api::{MigrationPhase, SchemaMigration};
use crate::engine::progress::go_duration;

/// The resource as kubectl names it.
pub const RESOURCE: &str = "schemamigration.ghost.dev";
const EVENTS_SHOWN: usize = 10;

pub async fn list(
    target: &Target,
    all_namespaces: bool,
    output: Option<Format>,
) -> Result<ExitCode, PluginError> {
    let api: Api<SchemaMigration> = if all_namespaces {
        Api::all(target.client.clone())
    } else {
        target.migrations()
    };
    let mut list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| PluginError::api("cannot list schemamigrations", e))?;
    list.items
        .sort_by_key(|s| (s.namespace().unwrap_or_default(), s.name_any()));
    match output {
        Some(Format::Name) => list
            .items
            .iter()
            .for_each(|s| println!("{RESOURCE}/{}", s.name_any())),
        Some(format) => print_as(&list, format)?,
        None if list.items.is_empty() => {
            let scope = if all_namespaces {
                "any namespace".to_string()
            } else {
                format!("namespace {}", target.namespace)
            };
            eprintln!("No SchemaMigrations in {scope}.");
        }
        None => print!(
            "{}",
            list_table(&list.items, all_namespaces, Timestamp::now())
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(
    target: &Target,
    name: &str,
    output: Option<Format>,
) -> Result<ExitCode, PluginError> {
    let smig = target.migration(name).await?;
    match output {
        Some(format) => print_migration(&smig, format)?,
        None => {
            // Like kubectl describe: a page without Events beats no page (a role may not list them).
            let events = events_of(target, name).await.unwrap_or_else(|e| {
                eprintln!("warning: {e}");
                Vec::new()
            });
            print!("{}", status_page(&smig, &events, Timestamp::now()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn events_of(target: &Target, name: &str) -> Result<Vec<Event>, PluginError> {
    let api: Api<Event> = Api::namespaced(target.client.clone(), &target.namespace);
    let fields = format!("involvedObject.kind=SchemaMigration,involvedObject.name={name}");
    let mut events = api
        .list(&ListParams::default().fields(&fields))
        .await
        .map_err(|e| PluginError::api(format!("cannot list the Events of {name}"), e))?
        .items;
    events.sort_by_key(event_time);
    let skip = events.len().saturating_sub(EVENTS_SHOWN);
    Ok(events.split_off(skip))
}

fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// kubectl's column layout: left-aligned, three spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn list_table(items: &[SchemaMigration], all_namespaces: bool, now: Timestamp) -> String {
    let mut headers = vec![
        "NAME",
        "TABLE",
        "PHASE",
        "PROGRESS",
        "ROWS/S",
        "LAG",
        "ETA",
        "THROTTLED",
        "AGE",
    ];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|smig| {
            let mut row = list_row(smig, now);
            if all_namespaces {
                row.insert(0, smig.namespace().unwrap_or_default());
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

fn list_row(smig: &SchemaMigration, now: Timestamp) -> Vec<String> {
    let status = smig.status.as_ref();
    let progress = status.and_then(|s| s.progress.as_ref());
    let dash = || "-".to_string();
    vec![
        smig.name_any(),
        format!("{}.{}", smig.spec.connection.database, smig.spec.table),
        phase_of(smig).as_str().to_string(),
        progress
            .and_then(|p| p.percent)
            .map_or_else(dash, |p| format!("{p:.1}%")),
        progress
            .and_then(|p| p.rows_per_second)
            .map_or_else(dash, |r| format!("{r:.0}")),
        progress
            .and_then(|p| p.heartbeat_lag_millis)
            .map_or_else(dash, millis),
        progress
            .and_then(|p| p.eta_seconds)
            .filter(|_| !phase_of(smig).is_terminal())
            .map_or_else(dash, |s| go_duration(s.max(0).unsigned_abs())),
        throttle_reason(smig).unwrap_or_else(dash),
        smig.metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(dash, |t| age(t, now)),
    ]
}

pub fn phase_of(smig: &SchemaMigration) -> MigrationPhase {
    smig.status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(MigrationPhase::Pending)
}

/// Why the engine is throttled now, or None.
pub fn throttle_reason(smig: &SchemaMigration) -> Option<String> {
    let throttle = smig
        .status
        .as_ref()?
        .progress
        .as_ref()?
        .throttle
        .as_ref()
        .filter(|t| t.active)?;
    Some(
        throttle
            .reason
            .clone()
            .unwrap_or_else(|| "throttled".to_string()),
    )
}

fn millis(ms: i64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

/// kubectl's AGE: the two largest units.
pub fn age(since: &Time, now: Timestamp) -> String {
    let secs = (now.as_second() - since.0.as_second())
        .max(0)
        .unsigned_abs();
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, s / 60 % 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// gh-ost's status line (`Copy: …; Backlog: …; Time: …; Lag: …, State: …; ETA: …`) from what
/// the engine last reported to `.status.progress`.
pub fn status_line(smig: &SchemaMigration, now: Timestamp) -> String {
    let status = smig.status.as_ref();
    let Some(progress) = status.and_then(|s| s.progress.as_ref()) else {
        return "no progress reported yet".to_string();
    };
    let phase = phase_of(smig);
    let copied = progress.rows_copied.unwrap_or(0);
    let estimate = progress.rows_estimate.unwrap_or(0);
    let percent = progress.percent.unwrap_or(0.0);
    let end = status
        .and_then(|s| s.completion_time.as_ref())
        .map_or(now, |t| t.0);
    let total = status.and_then(|s| s.start_time.as_ref()).map_or(0, |t| {
        (end.as_second() - t.0.as_second()).max(0).unsigned_abs()
    });
    let lag = |ms: Option<i64>| ms.map_or_else(|| "N/A".to_string(), millis);
    let state = match (throttle_reason(smig), phase) {
        (Some(reason), _) => format!("throttled, {reason}"),
        (None, MigrationPhase::Postponed) => "postponing cut-over".to_string(),
        (None, MigrationPhase::CuttingOver) => "cutting over".to_string(),
        (None, p) if p.is_terminal() => p.as_str().to_lowercase(),
        (None, _) => "migrating".to_string(),
    };
    let eta = match progress.eta_seconds {
        _ if phase.is_terminal() => "N/A".to_string(),
        Some(0) => "due".to_string(),
        Some(s) => go_duration(s.max(0).unsigned_abs()),
        None => "N/A".to_string(),
    };
    format!(
        "Copy: {copied}/{estimate} {percent:.1}%; Backlog: {}; Time: {}(total); Lag: {}, \
         HeartbeatLag: {}, State: {state}; ETA: {eta}",
        progress.backlog.unwrap_or(0),
        go_duration(total),
        lag(progress.replica_lag_millis),
        lag(progress.heartbeat_lag_millis),
    )
}

/// `kubectl ghost status NAME`.
pub fn status_page(smig: &SchemaMigration, events: &[Event], now: Timestamp) -> String {
    let name = smig.name_any();
    let namespace = smig.namespace().unwrap_or_default();
    let status = smig.status.as_ref();
    let phase = phase_of(smig);
    let mut out = String::new();
    let mut field = |key: &str, value: &str| out.push_str(&format!("{key:<13}{value}\n"));
    field("Name:", &name);
    field("Namespace:", &namespace);
    field(
        "Table:",
        &format!("{}.{}", smig.spec.connection.database, smig.spec.table),
    );
    match &smig.spec.revert {
        Some(revert) => field("Revert:", &format!("swap {} back in", revert.old_table)),
        None => field("Alter:", &smig.spec.alter),
    }
    field("Phase:", phase.as_str());
    if let Some(message) = status.and_then(|s| s.message.as_deref()) {
        field("Message:", message);
    }
    field("Status:", &status_line(smig, now));
    if let Some(progress) = status.and_then(|s| s.progress.as_ref()) {
        if let Some(cut_over) = &progress.cut_over
            && cut_over.attempts > 0
        {
            let lock = cut_over
                .lock_millis
                .map_or_else(String::new, |ms| format!(", writes blocked {ms} ms"));
            field(
                "Cut-over:",
                &format!("{} attempt(s){lock}", cut_over.attempts),
            );
        }
        if let Some(checksum) = &progress.checksum {
            field(
                "Checksum:",
                &format!(
                    "{} pass(es), {} chunk(s) copied again",
                    checksum.passes, checksum.chunks_copied_again
                ),
            );
        }
        if let Some(old) = &progress.kept_old_table {
            field(
                "Old table:",
                &format!("{old} (kubectl ghost revert {name} swaps it back in)"),
            );
        }
    }
    if let Some(job) = status.and_then(|s| s.job.as_deref()) {
        field("Job:", job);
    }
    let controls: Vec<String> = status
        .map(|s| s.effective_controls.as_slice())
        .unwrap_or(&[])
        .iter()
        .map(|c| {
            let source = serde_json::to_value(c.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!("{}={} ({source})", c.name, c.value)
        })
        .collect();
    if !controls.is_empty() {
        field("Controls:", &controls.join(", "));
    }

    let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    if !conditions.is_empty() {
        out.push_str("Conditions:\n");
        let rows: Vec<Vec<String>> = conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["TYPE", "STATUS", "REASON", "MESSAGE"],
            &rows,
        )));
    }
    out.push_str("Events:");
    if events.is_empty() {
        out.push_str("      <none>\n");
    } else {
        out.push('\n');
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    event_time(e).map_or_else(|| "-".to_string(), |t| age(&Time(t), now)),
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["AGE", "TYPE", "REASON", "MESSAGE"],
            &rows,
        )));
    }
    out.push_str(&format!("Next:        {}\n", next_step(smig, phase)));
    out
}

/// The command a person most likely wants next.
fn next_step(smig: &SchemaMigration, phase: MigrationPhase) -> String {
    let at = format!(
        "{} -n {}",
        smig.name_any(),
        smig.namespace().unwrap_or_default()
    );
    let kept = smig
        .status
        .as_ref()
        .and_then(|s| s.progress.as_ref())
        .and_then(|p| p.kept_old_table.as_ref());
    match phase {
        // Throttling holds the binlog apply too, postponed or not.
        p if !p.is_terminal() && throttle_reason(smig).is_some() => {
            format!("kubectl ghost unthrottle {at}")
        }
        MigrationPhase::Postponed => format!("kubectl ghost cut-over {at}   (when you are ready)"),
        MigrationPhase::Succeeded if kept.is_some() => {
            format!("kubectl ghost revert {at}   (to undo it)")
        }
        MigrationPhase::Succeeded | MigrationPhase::Cancelled => {
            "nothing: it has ended".to_string()
        }
        MigrationPhase::Failed => format!("kubectl ghost logs {at}   (why it failed)"),
        _ => format!("kubectl ghost watch {at}"),
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{ProgressStatus, SchemaMigrationStatus, ThrottleStatus};

    fn smig(phase: MigrationPhase, progress: ProgressStatus) -> SchemaMigration {
        let mut smig: SchemaMigration = serde_json::from_value(serde_json::json!({
            "apiVersion": "ghost.dev/v1alpha1",
            "kind": "SchemaMigration",
            "metadata": {"name": "add-age", "namespace": "shop",
                         "creationTimestamp": "2026-12-06T10:00:00Z"},
            "spec": {"connection": {"host": "db", "database": "shop",
                                    "credentialsSecretRef": {"name": "db"}},
                     "table": "users", "alter": "ADD COLUMN age INT"}
        }))
        .unwrap();
        smig.status = Some(SchemaMigrationStatus {
            phase: Some(phase),
            start_time: Some(Time("2026-12-06T10:00:00Z".parse().unwrap())),
            progress: Some(progress),
            ..Default::default()
        });
        smig
    }

    fn now() -> Timestamp {
        "2026-12-06T10:02:05Z".parse().unwrap()
    }

    #[test]
    fn status_line_reads_like_gh_ost() {
        let progress = ProgressStatus {
            percent: Some(20.0),
            rows_copied: Some(1000),
            rows_estimate: Some(5000),
            eta_seconds: Some(160),
            backlog: Some(3),
            heartbeat_lag_millis: Some(50),
            throttle: Some(ThrottleStatus {
                active: true,
                reason: Some("commanded by user".into()),
            }),
            ..Default::default()
        };
        let smig = smig(MigrationPhase::Copying, progress);
        assert_eq!(
            status_line(&smig, now()),
            "Copy: 1000/5000 20.0%; Backlog: 3; Time: 2m5s(total); Lag: N/A, HeartbeatLag: \
             0.05s, State: throttled, commanded by user; ETA: 2m40s"
        );
        let page = status_page(&smig, &[], now());
        assert!(
            page.contains("Next:        kubectl ghost unthrottle add-age -n shop"),
            "{page}"
        );
        assert!(page.contains("Events:      <none>"), "{page}");
    }

    #[test]
    fn list_has_kubectl_columns_and_dashes_for_the_unknown() {
        let copying = smig(
            MigrationPhase::Copying,
            ProgressStatus {
                percent: Some(42.04),
                rows_per_second: Some(812.5),
                heartbeat_lag_millis: Some(1250),
                eta_seconds: Some(75),
                ..Default::default()
            },
        );
        let text = list_table(&[copying], true, now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAMESPACE   NAME      TABLE        PHASE     PROGRESS   ROWS/S   LAG     ETA     \
             THROTTLED   AGE"
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "shop",
                "add-age",
                "shop.users",
                "Copying",
                "42.0%",
                "812",
                "1.25s",
                "1m15s",
                "-",
                "2m5s"
            ]
        );
    }

    #[test]
    fn ages_like_kubectl() {
        let at = |s: &str| Time(s.parse().unwrap());
        let now: Timestamp = "2026-12-06T12:00:00Z".parse().unwrap();
        assert_eq!(age(&at("2026-12-06T11:59:15Z"), now), "45s");
        assert_eq!(age(&at("2026-12-06T11:55:30Z"), now), "4m30s");
        assert_eq!(age(&at("2026-12-06T10:30:00Z"), now), "90m");
        assert_eq!(age(&at("2026-12-06T07:00:00Z"), now), "5h0m");
        assert_eq!(age(&at("2026-12-03T12:00:00Z"), now), "3d");
    }
}
