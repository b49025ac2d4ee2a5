//! `watch` (a progress bar until the migration ends) and `logs` (the engine pod's output).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use futures_util::{AsyncBufReadExt, StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, LogParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::view::{phase_of, status_line};
use super::{EXIT_FAILURE, PluginError, Target};
use crate::api::{MigrationPhase, SchemaMigration};
use crate::operator::job::{CONTAINER_NAME, migration_selector};

/// Percent with one decimal, as a bar position.
const BAR_LENGTH: u64 = 1000;

pub async fn watch(target: &Target, name: &str) -> Result<ExitCode, PluginError> {
    let first = target.migration(name).await?;
    let mut view = WatchView::new(name);
    view.show(&first);
    if phase_of(&first).is_terminal() {
        return Ok(view.finish(&first));
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(target.migrations(), config)
        .default_backoff()
        .boxed();
    let mut warned = false;
    // A relist after an outage says nothing of an object deleted meanwhile: seen in none of it.
    let mut seen_since_init = true;
    loop {
        match events.next().await {
            Some(Ok(watcher::Event::Apply(smig) | watcher::Event::InitApply(smig))) => {
                warned = false;
                seen_since_init = true;
                view.show(&smig);
                if phase_of(&smig).is_terminal() {
                    return Ok(view.finish(&smig));
                }
            }
            Some(Ok(watcher::Event::Delete(_))) => {
                view.abandon();
                return Err(PluginError::Refused(format!(
                    "{name} was deleted while watching it"
                )));
            }
            Some(Ok(watcher::Event::Init)) => seen_since_init = false,
            Some(Ok(watcher::Event::InitDone)) if !seen_since_init => {
                view.abandon();
                return Err(PluginError::Refused(format!(
                    "{name} was deleted while watching it"
                )));
            }
            Some(Ok(watcher::Event::InitDone)) => {}
            // The watcher retries with backoff; say so once per outage.
            Some(Err(e)) => {
                if !warned {
                    view.note(&format!("watch interrupted ({e}); retrying"));
                    warned = true;
                }
            }
            None => {
                view.abandon();
                return Err(PluginError::Refused(format!(
                    "the watch of {name} ended before the migration did"
                )));
            }
        }
    }
}

/// A bar on a terminal; a line per change otherwise (logs, CI, pipes).
struct WatchView {
    bar: Option<ProgressBar>,
    last_line: String,
}

impl WatchView {
    fn new(name: &str) -> WatchView {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(BAR_LENGTH);
            let style = ProgressStyle::with_template("{prefix} {wide_bar} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        WatchView {
            bar,
            last_line: String::new(),
        }
    }

    fn show(&mut self, smig: &SchemaMigration) {
        let line = format!(
            "{:<11} {}",
            phase_of(smig).as_str(),
            status_line(smig, Timestamp::now())
        );
        let percent = smig
            .status
            .as_ref()
            .and_then(|s| s.progress.as_ref())
            .and_then(|p| p.percent)
            .unwrap_or(0.0);
        match &self.bar {
            Some(bar) => {
                bar.set_position((percent * 10.0).clamp(0.0, BAR_LENGTH as f64) as u64);
                bar.set_message(line.clone());
            }
            // Time moves in the line every second; print only when something else changed.
            None if strip_time(&line) != strip_time(&self.last_line) => {
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
            None => {}
        }
        self.last_line = line;
    }

    fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }

    fn finish(&self, smig: &SchemaMigration) -> ExitCode {
        self.abandon();
        let phase = phase_of(smig);
        let message = smig
            .status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default();
        println!("{} {}: {message}", smig.name_any(), phase.as_str());
        if phase == MigrationPhase::Succeeded {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn strip_time(line: &str) -> String {
    line.split("; ")
        .filter(|part| !part.starts_with("Time: "))
        .collect::<Vec<_>>()
        .join("; ")
}

pub async fn logs(
    target: &Target,
    name: &str,
    follow: bool,
    tail: Option<i64>,
    previous: bool,
) -> Result<ExitCode, PluginError> {
    let smig = target.migration(name).await?;
    let pods: Api<Pod> = Api::namespaced(target.client.clone(), &target.namespace);
    let list = pods
        .list(&ListParams::default().labels(&migration_selector(name)))
        .await
        .map_err(|e| PluginError::api(format!("cannot list the engine pods of {name}"), e))?;
    let Some(pod) = list
        .items
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
    else {
        return Err(PluginError::Refused(no_pod_reason(&smig)));
    };
    let params = LogParams {
        container: Some(CONTAINER_NAME.to_string()),
        follow,
        tail_lines: tail,
        previous,
        ..LogParams::default()
    };
    let pod_name = pod.name_any();
    let action = || format!("cannot read the logs of pod {pod_name}");
    if follow {
        let mut lines = pods
            .log_stream(&pod_name, &params)
            .await
            .map_err(|e| PluginError::api(action(), e))?
            .lines();
        let mut stdout = std::io::stdout();
        while let Some(line) = lines
            .try_next()
            .await
            .map_err(|e| PluginError::Output(format!("{}: {e}", action())))?
        {
            writeln!(stdout, "{line}").map_err(|e| PluginError::Output(e.to_string()))?;
        }
    } else {
        let text = pods
            .logs(&pod_name, &params)
            .await
            .map_err(|e| PluginError::api(action(), e))?;
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

fn no_pod_reason(smig: &SchemaMigration) -> String {
    let name = smig.name_any();
    let namespace = smig.namespace().unwrap_or_default();
    let phase = phase_of(smig);
    let why = match phase {
        MigrationPhase::Queued | MigrationPhase::Pending => {
            "it has not started, and its engine pod is made when it does".to_string()
        }
        p if p.is_terminal() => format!(
            "it is {}, and its Job and pod have been removed; its last message is in `kubectl ghost status {name} -n {namespace}`",
            p.as_str()
        ),
        p => format!(
            "it is {} but has no pod now (being rescheduled?); see `kubectl ghost status {name} -n {namespace}`",
            p.as_str()
        ),
    };
    format!("no engine pod of {name} to read: {why}")
}
