//! Front ends that let people steer a running migration, all over the same [`ControlPlane`]:
//!
//! - `commands`: gh-ost's interactive command set (`status`, `throttle`, `chunk-size=500`, ...),
//!   as pure-ish functions of the control plane.
//! - `socket`: gh-ost's line protocol on a unix socket and on TCP (`echo status | nc ...`).
//! - `http`: a JSON API plus `/metrics` and `/healthz`.
//! - `page`: the live page at `/` of the same server, and its server-sent events.
//! - `metrics`: Prometheus text built from a `Progress` snapshot at scrape time.
//!
//! None of these talks to the engine directly: they write `Controls` and read `Progress`, the
//! engine's two ports (DESIGN §1), so every front end behaves the same.

pub mod commands;
pub mod http;
pub mod metrics;
pub mod page;
pub mod socket;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use tokio::sync::watch;

use crate::engine::controls::Controls;
use crate::engine::hooks::Hooks;
use crate::engine::progress::Progress;

/// What every front end needs: the controls to write, the progress to read, and which
/// migration this is.
#[derive(Clone)]
pub struct ControlPlane {
    pub controls: watch::Sender<Controls>,
    pub progress: watch::Receiver<Progress>,
    pub identity: MigrationIdentity,
    /// gh-ost's `gh-ost-on-interactive-command` hooks run before every socket/TCP command; a
    /// failing hook rejects the command.
    pub hooks: Option<Hooks>,
    /// Live pages with an open event stream (`page`), so an exit can wait for them.
    pub page_streams: Arc<AtomicUsize>,
}

impl ControlPlane {
    pub fn with_hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = Some(hooks);
        self
    }

    pub fn new(
        controls: watch::Sender<Controls>,
        progress: watch::Receiver<Progress>,
        identity: MigrationIdentity,
    ) -> Self {
        Self {
            controls,
            progress,
            identity,
            hooks: None,
            page_streams: Arc::default(),
        }
    }

    /// The controls as the engine will see them next.
    pub fn controls_snapshot(&self) -> Controls {
        self.controls.borrow().clone()
    }

    /// The engine's latest published progress.
    pub fn progress_snapshot(&self) -> Progress {
        self.progress.borrow().clone()
    }
}

/// The fixed facts about the migration behind a control plane.
#[derive(Clone, Debug)]
pub struct MigrationIdentity {
    pub database: String,
    pub table: String,
    /// gh-ost's `--force-named-cut-over`: `unpostpone` must name the table.
    pub force_named_cut_over: bool,
    /// gh-ost's `--force-named-panic`: `panic` must name the table.
    pub force_named_panic: bool,
    /// `--postpone-cut-over-flag-file`: `unpostpone` removes it.
    pub postpone_flag_file: Option<PathBuf>,
    pub started: Instant,
}

impl MigrationIdentity {
    /// An identity with gh-ost's defaults (no named commands, no flag file), started now.
    pub fn new(database: impl Into<String>, table: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            table: table.into(),
            force_named_cut_over: false,
            force_named_panic: false,
            postpone_flag_file: None,
            started: Instant::now(),
        }
    }
}

/// gh-ost's default `--serve-socket-file`: `/tmp/gh-ost.<db>.<table>.sock`.
pub fn default_socket_path(database: &str, table: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/gh-ost.{database}.{table}.sock"))
}
