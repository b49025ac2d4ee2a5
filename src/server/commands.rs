//! gh-ost's interactive commands (go/logic/server.go) over the [`ControlPlane`].
//!
//! One line in, one reply out: `cmd` or `cmd=arg`, the argument trimmed and Go-unquoted when it
//! is a valid Go string literal, `cmd=?` reading a value instead of setting it. Setters reply
//! like gh-ost: an optional note, then the status hint and the status line. Every front end
//! (socket, TCP, HTTP) goes through the functions here, so they behave identically.
//!
//! Differences from gh-ost, on purpose:
//! - `unpostpone` also works before the postponement starts (it pre-approves the cut-over) and
//!   removes `--postpone-cut-over-flag-file`, so a restarted engine does not postpone again.
//! - `panic` aborts with cleanup: the engine drops the ghost and changelog tables.
//! - `cpu-profile`, `applier` and `inspector` are not implemented (Go- and topology-specific).

use std::fmt::Write as _;
use std::time::Duration;

use tracing::{info, warn};

use super::{ControlPlane, MigrationIdentity};
use crate::engine::controls::{Controls, parse_load_thresholds};
use crate::engine::progress::{Phase, Progress, go_duration};
use crate::sql::qualified;

/// The reply to `help`.
pub const HELP: &str = "\
available commands:
status                               # Print a detailed status message
sup                                  # Print a short status message
coordinates                          # Print the last binlog position whose changes are applied
chunk-size=<newsize>                 # Set a new chunk-size (10..100000)
dml-batch-size=<newsize>             # Set a new dml-batch-size (1..1000)
nice-ratio=<ratio>                   # Set a new nice-ratio, immediate sleep after each row-copy operation, float (examples: 0 is aggressive, 0.7 adds 70% runtime, 1.0 doubles runtime, 2.0 triples runtime, ...)
critical-load=<load>                 # Set a new set of critical-load thresholds
max-lag-millis=<max-lag>             # Set a new replication lag threshold (at least 100)
max-load=<load>                      # Set a new set of max-load thresholds
throttle-query=<query>               # Set a new throttle-query (empty disables)
throttle-http=<URL>                  # Set a new throttle URL (empty disables)
throttle-control-replicas=<replicas> # Set a new comma delimited list of throttle control replicas
throttle                             # Force throttling (aliases: pause, suspend)
no-throttle                          # End forced throttling; other throttling may still apply (aliases: unthrottle, resume, continue)
postpone-cut-over-flag-file=<path>   # Postpone the cut-over phase, writing a cut-over flag file to the given path
unpostpone                           # Bail out a cut-over postpone; proceed to cut-over (aliases: no-postpone, cut-over)
panic                                # Abort the migration now; the ghost and changelog tables are dropped
help                                 # This message
- use '?' (question mark) as argument to get info rather than set. e.g. \"max-load=?\" will just print out current max-load.";

/// Printed before the status by the commands that can hold the migration back.
pub const THROTTLE_HINT: &str =
    "# Note: you may only throttle for as long as your binary logs are not purged";

/// The run-time settings, in `help` order.
pub const SETTING_NAMES: [&str; 9] = [
    "chunk-size",
    "dml-batch-size",
    "max-lag-millis",
    "nice-ratio",
    "max-load",
    "critical-load",
    "throttle-query",
    "throttle-http",
    "throttle-control-replicas",
];

/// Why a command was not carried out. The `Display` text is the whole (one-line) reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command: {0}")]
    Unknown(String),
    /// The value does not parse; nothing changed.
    #[error("invalid {command}: {message}")]
    InvalidArgument { command: String, message: String },
    /// The command is understood but refused (wrong table name, read-only, deprecated).
    #[error("{0}")]
    Refused(String),
    /// Carrying it out failed (a flag file could not be written or removed).
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    fn invalid(command: &str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            command: command.to_string(),
            message: message.into(),
        }
    }
}

/// Beginnings of every error reply. The line protocol has no status code, so `ghost ctl` tells
/// errors from answers by these; a test keeps them in step with [`CommandError`].
const ERROR_PREFIXES: [&str; 6] = [
    "unknown command: ",
    "invalid ",
    "user commanded '",
    "coordinates are read-only",
    "replication-lag-query is deprecated",
    "cannot ",
];

/// Whether a reply read from the socket is an error (one line starting like a [`CommandError`]).
pub fn is_error_reply(reply: &str) -> bool {
    let reply = reply.trim_end();
    !reply.contains('\n') && ERROR_PREFIXES.iter().any(|p| reply.starts_with(p))
}

/// Runs one command line and returns the reply (no trailing newline).
pub fn handle(plane: &ControlPlane, line: &str) -> Result<String, CommandError> {
    let (command, arg) = split_command(line);
    let read = arg == "?";
    let result = run(plane, command, &arg, read);
    match &result {
        Ok(_) if is_mutation(command, read) => info!(command, arg = %arg, "interactive command"),
        Ok(_) => {}
        Err(e) => warn!(command, arg = %arg, error = %e, "interactive command refused"),
    }
    result
}

fn is_mutation(command: &str, read: bool) -> bool {
    !read && !matches!(command, "help" | "sup" | "status" | "info" | "coordinates")
}

fn run(plane: &ControlPlane, command: &str, arg: &str, read: bool) -> Result<String, CommandError> {
    match command {
        "help" => Ok(HELP.to_string()),
        "sup" => Ok(status_line(
            &plane.progress.borrow(),
            plane.identity.started.elapsed(),
        )),
        "status" | "info" => Ok(full_status(plane)),
        "coordinates" => {
            if read || arg.is_empty() {
                Ok(coordinates(plane))
            } else {
                Err(CommandError::Refused("coordinates are read-only".into()))
            }
        }
        "replication-lag-query" => Err(CommandError::Refused(
            "replication-lag-query is deprecated. ghost uses an internal, subsecond resolution heartbeat"
                .into(),
        )),
        "throttle" | "pause" | "suspend" => {
            set_throttle(plane, arg, true)?;
            Ok(format!("{THROTTLE_HINT}\n{}", full_status(plane)))
        }
        "no-throttle" | "unthrottle" | "resume" | "continue" => {
            set_throttle(plane, arg, false)?;
            Ok(full_status(plane))
        }
        "postpone-cut-over-flag-file" => {
            if read {
                return Ok(plane
                    .identity
                    .postpone_flag_file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default());
            }
            let message = postpone(plane, arg)?;
            Ok(format!("{message}\n{}", full_status(plane)))
        }
        "unpostpone" | "no-postpone" | "cut-over" => {
            let message = unpostpone(plane, arg)?;
            Ok(format!("{message}\n{}", full_status(plane)))
        }
        "panic" => panic(plane, arg),
        name if SETTING_NAMES.contains(&name) => {
            if read {
                return Ok(read_setting(name, &plane.controls.borrow()));
            }
            let setting = Setting::parse(name, arg)?;
            let note = match &setting {
                Setting::ThrottleQuery(_) | Setting::ThrottleHttp(_) => {
                    Some(THROTTLE_HINT.to_string())
                }
                Setting::ThrottleControlReplicas(replicas) => Some(replicas.join(",")),
                _ => None,
            };
            apply_settings(plane, vec![setting]);
            Ok(match note {
                Some(note) => format!("{note}\n{}", full_status(plane)),
                None => full_status(plane),
            })
        }
        other => Err(CommandError::Unknown(other.to_string())),
    }
}

/// Splits `cmd=arg` like gh-ost: both sides trimmed, the argument Go-unquoted when it is a
/// valid Go string literal (otherwise kept verbatim).
pub fn split_command(line: &str) -> (&str, String) {
    let line = line.trim_end_matches(['\r', '\n']);
    match line.split_once('=') {
        Some((command, arg)) => {
            let arg = arg.trim();
            (
                command.trim(),
                go_unquote(arg).unwrap_or_else(|| arg.to_string()),
            )
        }
        None => (line.trim(), String::new()),
    }
}

/// Go's `strconv.Unquote`: `"..."` with escapes, `` `...` `` raw, `'c'` one character.
/// `None` when `s` is not a valid literal.
pub fn go_unquote(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    if bytes.len() < 2 || bytes[0] != bytes[bytes.len() - 1] {
        return None;
    }
    // The quotes are ASCII, so these byte offsets are character boundaries.
    let inner = &s[1..s.len() - 1];
    match bytes[0] {
        b'`' => (!inner.contains('`')).then(|| inner.replace('\r', "")),
        b'"' => unescape(inner, '"'),
        b'\'' => unescape(inner, '\'').filter(|c| c.chars().count() == 1),
        _ => None,
    }
}

fn unescape(inner: &str, quote: char) -> Option<String> {
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    let mut buf = [0u8; 4];
    while let Some(c) = chars.next() {
        if c == quote || c == '\n' {
            return None;
        }
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let escape = chars.next()?;
        match escape {
            'a' => out.push(0x07),
            'b' => out.push(0x08),
            'f' => out.push(0x0c),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(0x0b),
            '\\' => out.push(b'\\'),
            '\'' | '"' if escape == quote => out.push(escape as u8),
            'x' => out.push(u8::try_from(hex_value(&mut chars, 2)?).ok()?),
            'u' | 'U' => {
                let digits = if escape == 'u' { 4 } else { 8 };
                let ch = char::from_u32(hex_value(&mut chars, digits)?)?;
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            '0'..='7' => {
                let mut value = escape.to_digit(8)?;
                for _ in 0..2 {
                    value = value * 8 + chars.next()?.to_digit(8)?;
                }
                out.push(u8::try_from(value).ok()?);
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(chars: &mut std::str::Chars<'_>, digits: usize) -> Option<u32> {
    let mut value = 0u32;
    for _ in 0..digits {
        value = value * 16 + chars.next()?.to_digit(16)?;
    }
    Some(value)
}

/// One run-time setting with a parsed, clamped value.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    ChunkSize(u64),
    DmlBatchSize(usize),
    MaxLagMillis(u64),
    NiceRatio(f64),
    MaxLoad(Vec<(String, u64)>),
    CriticalLoad(Vec<(String, u64)>),
    /// `None` disables it.
    ThrottleQuery(Option<String>),
    ThrottleHttp(Option<String>),
    ThrottleControlReplicas(Vec<String>),
}

impl Setting {
    /// Parses `name=arg` with gh-ost's clamping: out-of-range numbers are pulled into range,
    /// text that does not parse is refused and nothing changes.
    pub fn parse(name: &str, arg: &str) -> Result<Self, CommandError> {
        match name {
            "chunk-size" => Ok(Self::ChunkSize(
                parse_int(name, arg)?.clamp(10, 100_000) as u64
            )),
            "dml-batch-size" => Ok(Self::DmlBatchSize(
                parse_int(name, arg)?.clamp(1, 1000) as usize
            )),
            "max-lag-millis" => Ok(Self::MaxLagMillis(parse_int(name, arg)?.max(100) as u64)),
            "nice-ratio" => {
                let ratio = arg
                    .parse::<f64>()
                    .ok()
                    .filter(|r| !r.is_nan())
                    .ok_or_else(|| {
                        CommandError::invalid(name, format!("{arg:?} is not a number"))
                    })?;
                Ok(Self::NiceRatio(ratio.clamp(0.0, 100.0)))
            }
            "max-load" => parse_load_thresholds(arg)
                .map(Self::MaxLoad)
                .map_err(|e| CommandError::invalid(name, e)),
            "critical-load" => parse_load_thresholds(arg)
                .map(Self::CriticalLoad)
                .map_err(|e| CommandError::invalid(name, e)),
            "throttle-query" => Ok(Self::ThrottleQuery(non_empty(arg))),
            "throttle-http" => {
                // A URL the checker cannot even request would throttle forever.
                if !(arg.is_empty() || arg.starts_with("http://") || arg.starts_with("https://")) {
                    return Err(CommandError::invalid(
                        name,
                        format!("{arg:?} is not an http:// or https:// URL"),
                    ));
                }
                Ok(Self::ThrottleHttp(non_empty(arg)))
            }
            "throttle-control-replicas" => parse_replica_list(arg)
                .map(Self::ThrottleControlReplicas)
                .map_err(|e| CommandError::invalid(name, e)),
            other => Err(CommandError::Unknown(other.to_string())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::ChunkSize(_) => "chunk-size",
            Self::DmlBatchSize(_) => "dml-batch-size",
            Self::MaxLagMillis(_) => "max-lag-millis",
            Self::NiceRatio(_) => "nice-ratio",
            Self::MaxLoad(_) => "max-load",
            Self::CriticalLoad(_) => "critical-load",
            Self::ThrottleQuery(_) => "throttle-query",
            Self::ThrottleHttp(_) => "throttle-http",
            Self::ThrottleControlReplicas(_) => "throttle-control-replicas",
        }
    }

    pub fn apply(self, controls: &mut Controls) {
        match self {
            Self::ChunkSize(v) => controls.chunk_size = v,
            Self::DmlBatchSize(v) => controls.dml_batch_size = v,
            Self::MaxLagMillis(v) => controls.max_lag = Duration::from_millis(v),
            Self::NiceRatio(v) => controls.nice_ratio = v,
            Self::MaxLoad(v) => controls.max_load = v,
            Self::CriticalLoad(v) => controls.critical_load = v,
            Self::ThrottleQuery(v) => controls.throttle_query = v,
            Self::ThrottleHttp(v) => controls.throttle_http = v,
            Self::ThrottleControlReplicas(v) => controls.throttle_control_replicas = v,
        }
    }
}

fn parse_int(name: &str, arg: &str) -> Result<i64, CommandError> {
    if arg.is_empty() {
        return Err(CommandError::invalid(
            name,
            format!("a value is required ({name}=<n>, or {name}=? to read it)"),
        ));
    }
    arg.parse::<i64>()
        .map_err(|_| CommandError::invalid(name, format!("{arg:?} is not a whole number")))
}

fn non_empty(arg: &str) -> Option<String> {
    (!arg.is_empty()).then(|| arg.to_string())
}

/// Parses `host[:port],...` (IPv6 as `[addr]:port`); the port defaults to 3306.
pub fn parse_replica_list(input: &str) -> Result<Vec<String>, String> {
    input
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(normalize_host_port)
        .collect()
}

fn normalize_host_port(input: &str) -> Result<String, String> {
    let (host, port) = if let Some(rest) = input.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{input:?}: missing ']' after the IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(format!("{input:?} is not host[:port]")),
        };
        (format!("[{addr}]"), port)
    } else {
        match input.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(format!("{input:?}: write IPv6 addresses as [addr]:port"));
            }
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (input.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" || host.contains(char::is_whitespace) {
        return Err(format!("{input:?} is not host[:port]"));
    }
    let port = match port {
        None => 3306,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{input:?}: the port is not a number from 1 to 65535"))?,
    };
    Ok(format!("{host}:{port}"))
}

/// The current value of a setting, as `name=?` prints it.
pub fn read_setting(name: &str, controls: &Controls) -> String {
    match name {
        "chunk-size" => controls.chunk_size.to_string(),
        "dml-batch-size" => controls.dml_batch_size.to_string(),
        "max-lag-millis" => controls.max_lag.as_millis().to_string(),
        "nice-ratio" => controls.nice_ratio.to_string(),
        "max-load" => format_loads(&controls.max_load),
        "critical-load" => format_loads(&controls.critical_load),
        "throttle-query" => controls.throttle_query.clone().unwrap_or_default(),
        "throttle-http" => controls.throttle_http.clone().unwrap_or_default(),
        "throttle-control-replicas" => controls.throttle_control_replicas.join(","),
        _ => String::new(),
    }
}

/// `Threads_running=25,Threads_connected=500`
pub fn format_loads(loads: &[(String, u64)]) -> String {
    loads
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Applies parsed settings in one update, so the engine never sees half of them.
pub fn apply_settings(plane: &ControlPlane, settings: Vec<Setting>) {
    let names: Vec<&str> = settings.iter().map(Setting::name).collect();
    info!(settings = ?names, "settings changed");
    plane.controls.send_modify(|controls| {
        for setting in settings {
            setting.apply(controls);
        }
    });
}

/// gh-ost's courtesy check: a table name, when given, must be the migrated table; with
/// `required_by` (the flag that demands it) it must be given.
fn check_table_name(
    plane: &ControlPlane,
    command: &str,
    arg: &str,
    required_by: Option<&str>,
) -> Result<(), CommandError> {
    let table = &plane.identity.table;
    if arg.is_empty() {
        if let Some(flag) = required_by {
            return Err(CommandError::Refused(format!(
                "user commanded '{command}' without specifying table name, but {flag} is set"
            )));
        }
        return Ok(());
    }
    if arg != table {
        return Err(CommandError::Refused(format!(
            "user commanded '{command}' on {arg}, but migrated table is {table}; ignoring request"
        )));
    }
    Ok(())
}

/// `throttle` / `no-throttle`: the user's forced throttle. Returns a short confirmation.
pub fn set_throttle(
    plane: &ControlPlane,
    table_arg: &str,
    on: bool,
) -> Result<String, CommandError> {
    let command = if on { "throttle" } else { "no-throttle" };
    check_table_name(plane, command, table_arg, None)?;
    plane.controls.send_modify(|c| c.throttle = on);
    Ok(if on {
        "Throttled: row copy and binlog apply pause until no-throttle".to_string()
    } else {
        "Forced throttling ended; other throttling may still apply".to_string()
    })
}

/// `postpone-cut-over-flag-file=<path>`: creates the file, like gh-ost, and postpones the
/// cut-over until `unpostpone`.
pub fn postpone(plane: &ControlPlane, path: &str) -> Result<String, CommandError> {
    if path.is_empty() {
        return Err(CommandError::Refused(
            "user commanded 'postpone-cut-over-flag-file' without specifying file path".into(),
        ));
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            CommandError::Failed(format!(
                "cannot create postpone cut-over flag file {path}: {e}"
            ))
        })?;
    plane.controls.send_modify(|c| {
        c.postpone_cut_over = true;
        c.cut_over_requested = false;
    });
    Ok("Postponed".to_string())
}

/// `unpostpone`: let the cut-over happen. Removes the postpone flag file first, so a failure
/// there leaves everything unchanged.
pub fn unpostpone(plane: &ControlPlane, table_arg: &str) -> Result<String, CommandError> {
    let required = plane
        .identity
        .force_named_cut_over
        .then_some("--force-named-cut-over");
    check_table_name(plane, "unpostpone", table_arg, required)?;
    if let Some(file) = &plane.identity.postpone_flag_file {
        match std::fs::remove_file(file) {
            Ok(()) => info!(file = %file.display(), "removed the postpone cut-over flag file"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CommandError::Failed(format!(
                    "cannot remove postpone cut-over flag file {}: {e}",
                    file.display()
                )));
            }
        }
    }
    plane.controls.send_modify(|c| {
        c.postpone_cut_over = false;
        c.cut_over_requested = true;
    });
    Ok(if plane.progress.borrow().phase == Phase::Postponed {
        "Unpostponed".to_string()
    } else {
        "Unpostponed: the cut-over will not be postponed once row copy completes".to_string()
    })
}

/// `panic`: abort now.
pub fn panic(plane: &ControlPlane, table_arg: &str) -> Result<String, CommandError> {
    let required = plane
        .identity
        .force_named_panic
        .then_some("--force-named-panic");
    check_table_name(plane, "panic", table_arg, required)?;
    plane.controls.send_modify(|c| c.panic = true);
    warn!("panic commanded by user: aborting the migration");
    Ok(format!(
        "Panic: aborting the migration of {}; the ghost and changelog tables will be dropped",
        qualified(&plane.identity.database, &plane.identity.table)
    ))
}

fn coordinates(plane: &ControlPlane) -> String {
    match &plane.progress.borrow().applied_position {
        Some(position) => position.to_string(),
        None => "N/A".to_string(),
    }
}

/// The status hint followed by the status line (gh-ost's reply to `status`).
pub fn full_status(plane: &ControlPlane) -> String {
    let progress = plane.progress_snapshot();
    let controls = plane.controls_snapshot();
    let elapsed = plane.identity.started.elapsed();
    format!(
        "{}\n{}",
        status_hint(&plane.identity, &controls, &progress, elapsed),
        status_line(&progress, elapsed)
    )
}

/// gh-ost's configuration hint: what is migrated and with which settings.
pub fn status_hint(
    identity: &MigrationIdentity,
    controls: &Controls,
    progress: &Progress,
    elapsed: Duration,
) -> String {
    let mut out = String::new();
    let table = qualified(&identity.database, &identity.table);
    let _ = writeln!(out, "# Migrating {table}; phase: {:?}", progress.phase);
    let started = chrono::TimeDelta::from_std(elapsed)
        .ok()
        .and_then(|d| chrono::Local::now().checked_sub_signed(d));
    if let Some(started) = started {
        // Go's time.RubyDate, as gh-ost prints it.
        let _ = writeln!(
            out,
            "# Migration started at {}",
            started.format("%a %b %d %H:%M:%S %z %Y")
        );
    }
    let _ = writeln!(
        out,
        "# chunk-size: {}; max-lag-millis: {}ms; dml-batch-size: {}; max-load: {}; critical-load: {}; nice-ratio: {:.6}",
        controls.chunk_size,
        controls.max_lag.as_millis(),
        controls.dml_batch_size,
        format_loads(&controls.max_load),
        format_loads(&controls.critical_load),
        controls.nice_ratio,
    );
    let _ = writeln!(
        out,
        "# TLS: {}",
        progress.tls.as_deref().unwrap_or("none (clear text)")
    );
    if let Some(query) = &controls.throttle_query {
        let _ = writeln!(out, "# throttle-query: {query}");
    }
    if let Some(url) = &controls.throttle_http {
        let _ = writeln!(out, "# throttle-http: {url}");
    }
    if !controls.throttle_control_replicas.is_empty() {
        let _ = writeln!(
            out,
            "# throttle-control-replicas count: {}",
            controls.throttle_control_replicas.len()
        );
    }
    if controls.throttle {
        let _ = writeln!(out, "# throttle: commanded by user");
    }
    if let Some(file) = &identity.postpone_flag_file {
        let set = if file.exists() { " [set]" } else { "" };
        let _ = writeln!(
            out,
            "# postpone-cut-over-flag-file: {}{set}",
            file.display()
        );
    }
    if controls.postpone_cut_over {
        let _ = writeln!(out, "# cut-over: postponed until unpostpone");
    } else if controls.cut_over_requested {
        let _ = writeln!(out, "# cut-over: unpostponed by user");
    }
    if controls.panic {
        let _ = writeln!(out, "# panic: commanded by user; aborting");
    }
    if !progress.message.is_empty() {
        let _ = writeln!(out, "# message: {}", progress.message);
    }
    out.truncate(out.trim_end().len());
    out
}

/// gh-ost's one-line status:
/// `Copy: x/est pct%; Applied: n; Backlog: q; Time: t(total); streamer: file:pos; Lag: s,
/// HeartbeatLag: s, State: ...; ETA: ...`.
pub fn status_line(progress: &Progress, elapsed: Duration) -> String {
    let streamer = progress
        .applied_position
        .as_ref()
        .map(|p| p.coordinates.to_string())
        .unwrap_or_else(|| "N/A".to_string());
    format!(
        "Copy: {}/{} {:.1}%; Applied: {}; Backlog: {}; Time: {}(total); streamer: {streamer}; Lag: {}, HeartbeatLag: {}, State: {}; ETA: {}",
        progress.rows_copied,
        progress.rows_estimate,
        progress.percent(),
        progress.events_applied,
        progress.backlog,
        go_duration(elapsed.as_secs()),
        seconds(progress.replica_lag_millis),
        seconds(progress.heartbeat_lag_millis),
        state(progress),
        eta(progress),
    )
}

fn seconds(millis: Option<u64>) -> String {
    match millis {
        Some(ms) => format!("{:.2}s", ms as f64 / 1000.0),
        None => "N/A".to_string(),
    }
}

/// gh-ost's state word, extended with the phases gh-ost does not name.
fn state(progress: &Progress) -> String {
    match progress.phase {
        Phase::Postponed => "postponing cut-over".to_string(),
        phase if progress.throttle.active && !phase.is_terminal() => {
            format!("throttled, {}", progress.throttle.reason)
        }
        Phase::Pending | Phase::Validating => "validating".to_string(),
        Phase::Copying => "migrating".to_string(),
        Phase::Verifying => "verifying".to_string(),
        Phase::CuttingOver => "cutting over".to_string(),
        Phase::Succeeded => "done".to_string(),
        Phase::Failed => "failed".to_string(),
        Phase::Cancelled => "cancelled".to_string(),
    }
}

fn eta(progress: &Progress) -> String {
    match progress.phase {
        Phase::Pending | Phase::Validating => "N/A".to_string(),
        Phase::Copying => match progress.eta_seconds {
            Some(0) => "due".to_string(),
            Some(secs) => go_duration(secs),
            None if progress.percent() >= 100.0 => "due".to_string(),
            None => "N/A".to_string(),
        },
        _ => "due".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::watch;

    use super::*;
    use crate::engine::position::{BinlogCoordinates, BinlogPosition};
    use crate::engine::progress::ThrottleState;

    struct Fixture {
        plane: ControlPlane,
        progress: watch::Sender<Progress>,
        _controls: watch::Receiver<Controls>,
    }

    impl Fixture {
        fn controls(&self) -> Controls {
            self.plane.controls.borrow().clone()
        }
    }

    fn fixture_with(identity: MigrationIdentity) -> Fixture {
        let (controls_tx, controls_rx) = watch::channel(Controls::default());
        let (progress_tx, progress_rx) = watch::channel(Progress {
            phase: Phase::Copying,
            rows_copied: 10,
            rows_estimate: 100,
            events_applied: 7,
            backlog: 3,
            eta_seconds: Some(125),
            heartbeat_lag_millis: Some(120),
            replica_lag_millis: Some(1500),
            ..Progress::default()
        });
        Fixture {
            plane: ControlPlane::new(controls_tx, progress_rx, identity),
            progress: progress_tx,
            _controls: controls_rx,
        }
    }

    fn fixture() -> Fixture {
        fixture_with(MigrationIdentity::new("shop", "users"))
    }

    fn temp_file(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        std::env::temp_dir().join(format!(
            "ghost-commands-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    #[test]
    fn help_lists_every_command() {
        let f = fixture();
        let reply = handle(&f.plane, "help").unwrap();
        assert!(reply.starts_with("available commands:"));
        for name in SETTING_NAMES
            .iter()
            .chain(&["status", "sup", "coordinates", "throttle", "no-throttle"])
            .chain(&["unpostpone", "panic", "postpone-cut-over-flag-file"])
        {
            assert!(reply.contains(name), "help lacks {name}");
        }
    }

    #[test]
    fn sup_is_the_status_line_only() {
        let f = fixture();
        let reply = handle(&f.plane, "sup").unwrap();
        assert!(!reply.contains('\n'));
        assert!(
            reply.starts_with("Copy: 10/100 10.0%; Applied: 7; Backlog: 3; Time: "),
            "{reply}"
        );
        assert!(reply.contains("streamer: N/A; Lag: 1.50s, HeartbeatLag: 0.12s"));
        assert!(reply.ends_with("State: migrating; ETA: 2m5s"), "{reply}");
    }

    #[test]
    fn status_and_info_give_the_hint_and_the_line() {
        let f = fixture();
        for command in ["status", "info", " status \r\n"] {
            let reply = handle(&f.plane, command).unwrap();
            let lines: Vec<&str> = reply.lines().collect();
            assert_eq!(lines[0], "# Migrating `shop`.`users`; phase: Copying");
            assert!(reply.contains(
                "# chunk-size: 1000; max-lag-millis: 1500ms; dml-batch-size: 1000; max-load: ; critical-load: ; nice-ratio: 0.000000"
            ));
            assert!(lines.last().unwrap().starts_with("Copy: 10/100"));
        }
    }

    #[test]
    fn status_shows_throttle_postpone_and_phases() {
        let f = fixture();
        f.progress.send_modify(|p| {
            p.throttle = ThrottleState {
                active: true,
                reason: "lag=2.1s".into(),
            }
        });
        let reply = handle(&f.plane, "sup").unwrap();
        assert!(reply.contains("State: throttled, lag=2.1s;"), "{reply}");

        f.progress.send_modify(|p| p.phase = Phase::Postponed);
        let reply = handle(&f.plane, "sup").unwrap();
        assert!(
            reply.contains("State: postponing cut-over; ETA: due"),
            "{reply}"
        );

        f.progress.send_modify(|p| {
            p.phase = Phase::Succeeded;
            p.throttle = ThrottleState::default();
            p.message = "all good".into();
        });
        let reply = handle(&f.plane, "status").unwrap();
        assert!(reply.contains("State: done; ETA: due"), "{reply}");
        assert!(reply.contains("# message: all good"));

        handle(&f.plane, "throttle").unwrap();
        handle(&f.plane, "throttle-query=select 1").unwrap();
        let reply = handle(&f.plane, "status").unwrap();
        assert!(reply.contains("# throttle: commanded by user"));
        assert!(reply.contains("# throttle-query: select 1"));
    }

    #[test]
    fn coordinates_print_the_applied_position() {
        let f = fixture();
        assert_eq!(handle(&f.plane, "coordinates").unwrap(), "N/A");
        f.progress.send_modify(|p| {
            p.applied_position = Some(BinlogPosition {
                coordinates: BinlogCoordinates::new("mysql-bin.000003", 4567),
                gtid: None,
            })
        });
        assert_eq!(
            handle(&f.plane, "coordinates").unwrap(),
            "mysql-bin.000003:4567"
        );
        assert_eq!(
            handle(&f.plane, "coordinates=?").unwrap(),
            "mysql-bin.000003:4567"
        );
        assert!(
            handle(&f.plane, "sup")
                .unwrap()
                .contains("streamer: mysql-bin.000003:4567;")
        );
        assert_eq!(
            handle(&f.plane, "coordinates=x:1"),
            Err(CommandError::Refused("coordinates are read-only".into()))
        );
    }

    #[test]
    fn chunk_size_sets_clamps_and_reads() {
        let f = fixture();
        let reply = handle(&f.plane, "chunk-size=500").unwrap();
        assert!(reply.starts_with("# Migrating"));
        assert!(reply.contains("# chunk-size: 500;"));
        assert_eq!(f.controls().chunk_size, 500);
        assert_eq!(handle(&f.plane, "chunk-size=?").unwrap(), "500");
        handle(&f.plane, "chunk-size=5").unwrap();
        assert_eq!(f.controls().chunk_size, 10);
        handle(&f.plane, "chunk-size = 1000000").unwrap();
        assert_eq!(f.controls().chunk_size, 100_000);
        handle(&f.plane, "chunk-size=-3").unwrap();
        assert_eq!(f.controls().chunk_size, 10);
        let err = handle(&f.plane, "chunk-size=abc").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid chunk-size: \"abc\" is not a whole number"
        );
        assert!(handle(&f.plane, "chunk-size").is_err());
        assert_eq!(f.controls().chunk_size, 10);
    }

    #[test]
    fn dml_batch_size_and_max_lag_clamp() {
        let f = fixture();
        handle(&f.plane, "dml-batch-size=50").unwrap();
        assert_eq!(f.controls().dml_batch_size, 50);
        handle(&f.plane, "dml-batch-size=0").unwrap();
        assert_eq!(f.controls().dml_batch_size, 1);
        handle(&f.plane, "dml-batch-size=5000").unwrap();
        assert_eq!(f.controls().dml_batch_size, 1000);
        assert_eq!(handle(&f.plane, "dml-batch-size=?").unwrap(), "1000");

        handle(&f.plane, "max-lag-millis=2500").unwrap();
        assert_eq!(f.controls().max_lag, Duration::from_millis(2500));
        handle(&f.plane, "max-lag-millis=50").unwrap();
        assert_eq!(f.controls().max_lag, Duration::from_millis(100));
        assert_eq!(handle(&f.plane, "max-lag-millis=?").unwrap(), "100");
        assert!(handle(&f.plane, "max-lag-millis=1.5").is_err());
    }

    #[test]
    fn nice_ratio_is_a_clamped_float() {
        let f = fixture();
        handle(&f.plane, "nice-ratio=0.7").unwrap();
        assert_eq!(f.controls().nice_ratio, 0.7);
        assert_eq!(handle(&f.plane, "nice-ratio=?").unwrap(), "0.7");
        handle(&f.plane, "nice-ratio=500").unwrap();
        assert_eq!(f.controls().nice_ratio, 100.0);
        assert_eq!(handle(&f.plane, "nice-ratio=?").unwrap(), "100");
        handle(&f.plane, "nice-ratio=-1").unwrap();
        assert_eq!(f.controls().nice_ratio, 0.0);
        assert!(handle(&f.plane, "nice-ratio=NaN").is_err());
        assert!(handle(&f.plane, "nice-ratio=fast").is_err());
        assert_eq!(f.controls().nice_ratio, 0.0);
    }

    #[test]
    fn load_thresholds_replace_or_refuse() {
        let f = fixture();
        handle(
            &f.plane,
            "max-load=Threads_running=25,Threads_connected=500",
        )
        .unwrap();
        assert_eq!(
            f.controls().max_load,
            vec![
                ("Threads_running".to_string(), 25),
                ("Threads_connected".to_string(), 500)
            ]
        );
        assert_eq!(
            handle(&f.plane, "max-load=?").unwrap(),
            "Threads_running=25,Threads_connected=500"
        );
        let err = handle(&f.plane, "max-load=Threads_running").unwrap_err();
        assert!(err.to_string().starts_with("invalid max-load: "), "{err}");
        assert_eq!(f.controls().max_load.len(), 2);
        handle(&f.plane, "max-load=").unwrap();
        assert!(f.controls().max_load.is_empty());

        handle(&f.plane, "critical-load=\"Threads_running=1000\"").unwrap();
        assert_eq!(
            f.controls().critical_load,
            vec![("Threads_running".to_string(), 1000)]
        );
        assert_eq!(
            handle(&f.plane, "critical-load=?").unwrap(),
            "Threads_running=1000"
        );
        assert!(handle(&f.plane, "critical-load=x=y").is_err());
    }

    #[test]
    fn throttle_query_and_http_take_quoted_arguments() {
        let f = fixture();
        let reply = handle(&f.plane, "throttle-query=\"select 1 from dual\"").unwrap();
        assert!(reply.starts_with(THROTTLE_HINT));
        assert_eq!(
            f.controls().throttle_query.as_deref(),
            Some("select 1 from dual")
        );
        assert_eq!(
            handle(&f.plane, "throttle-query=?").unwrap(),
            "select 1 from dual"
        );
        // Unquoted, with '=' inside: only the first '=' splits.
        handle(
            &f.plane,
            "throttle-query=select count(*) > 0 from t where a=1",
        )
        .unwrap();
        assert_eq!(
            f.controls().throttle_query.as_deref(),
            Some("select count(*) > 0 from t where a=1")
        );
        handle(&f.plane, "throttle-query=").unwrap();
        assert_eq!(f.controls().throttle_query, None);
        assert_eq!(handle(&f.plane, "throttle-query=?").unwrap(), "");

        handle(&f.plane, "throttle-http=http://freno:9777/check/ghost").unwrap();
        assert_eq!(
            f.controls().throttle_http.as_deref(),
            Some("http://freno:9777/check/ghost")
        );
        assert_eq!(
            handle(&f.plane, "throttle-http=?").unwrap(),
            "http://freno:9777/check/ghost"
        );
        assert!(handle(&f.plane, "throttle-http=freno:9777").is_err());
        handle(&f.plane, "throttle-http=\"\"").unwrap();
        assert_eq!(f.controls().throttle_http, None);
    }

    #[test]
    fn throttle_control_replicas_are_normalized() {
        let f = fixture();
        let reply = handle(&f.plane, "throttle-control-replicas=r1, r2:3307,[::1]:3308").unwrap();
        assert_eq!(reply.lines().next(), Some("r1:3306,r2:3307,[::1]:3308"));
        assert_eq!(
            f.controls().throttle_control_replicas,
            vec!["r1:3306", "r2:3307", "[::1]:3308"]
        );
        assert_eq!(
            handle(&f.plane, "throttle-control-replicas=?").unwrap(),
            "r1:3306,r2:3307,[::1]:3308"
        );
        assert!(handle(&f.plane, "throttle-control-replicas=r1:x").is_err());
        assert!(handle(&f.plane, "throttle-control-replicas=::1").is_err());
        assert_eq!(f.controls().throttle_control_replicas.len(), 3);
        handle(&f.plane, "throttle-control-replicas=").unwrap();
        assert!(f.controls().throttle_control_replicas.is_empty());
    }

    #[test]
    fn throttle_and_its_aliases() {
        let f = fixture();
        for on in ["throttle", "pause", "suspend", "throttle=users"] {
            handle(&f.plane, "no-throttle").unwrap();
            let reply = handle(&f.plane, on).unwrap();
            assert!(reply.starts_with(THROTTLE_HINT), "{on}");
            assert!(f.controls().throttle, "{on}");
        }
        for off in [
            "no-throttle",
            "unthrottle",
            "resume",
            "continue",
            "resume=users",
        ] {
            handle(&f.plane, "throttle").unwrap();
            let reply = handle(&f.plane, off).unwrap();
            assert!(reply.starts_with("# Migrating"), "{off}");
            assert!(!f.controls().throttle, "{off}");
        }
        let err = handle(&f.plane, "throttle=orders").unwrap_err();
        assert_eq!(
            err.to_string(),
            "user commanded 'throttle' on orders, but migrated table is users; ignoring request"
        );
        assert!(!f.controls().throttle);
    }

    #[test]
    fn unpostpone_requests_cut_over_and_removes_the_flag_file() {
        let flag = temp_file("postpone");
        std::fs::write(&flag, b"").unwrap();
        let f = fixture_with(MigrationIdentity {
            postpone_flag_file: Some(flag.clone()),
            ..MigrationIdentity::new("shop", "users")
        });
        f.plane.controls.send_modify(|c| c.postpone_cut_over = true);
        f.progress.send_modify(|p| p.phase = Phase::Postponed);
        for command in ["unpostpone", "no-postpone", "cut-over"] {
            f.plane.controls.send_modify(|c| {
                c.postpone_cut_over = true;
                c.cut_over_requested = false;
            });
            let reply = handle(&f.plane, command).unwrap();
            assert!(reply.starts_with("Unpostponed\n# Migrating"), "{reply}");
            let c = f.controls();
            assert!(c.cut_over_requested && !c.postpone_cut_over, "{command}");
            assert!(!flag.exists());
        }
        f.progress.send_modify(|p| p.phase = Phase::Copying);
        let reply = handle(&f.plane, "unpostpone=users").unwrap();
        assert!(reply.starts_with("Unpostponed: the cut-over will not be postponed"));
        assert!(handle(&f.plane, "unpostpone=orders").is_err());
    }

    #[test]
    fn named_cut_over_and_panic() {
        let f = fixture_with(MigrationIdentity {
            force_named_cut_over: true,
            force_named_panic: true,
            ..MigrationIdentity::new("shop", "users")
        });
        assert_eq!(
            handle(&f.plane, "unpostpone").unwrap_err().to_string(),
            "user commanded 'unpostpone' without specifying table name, but --force-named-cut-over is set"
        );
        assert!(handle(&f.plane, "cut-over=orders").is_err());
        assert!(!f.controls().cut_over_requested);
        handle(&f.plane, "unpostpone=\"users\"").unwrap();
        assert!(f.controls().cut_over_requested);

        assert_eq!(
            handle(&f.plane, "panic").unwrap_err().to_string(),
            "user commanded 'panic' without specifying table name, but --force-named-panic is set"
        );
        assert!(handle(&f.plane, "panic=orders").is_err());
        assert!(!f.controls().panic);
        let reply = handle(&f.plane, "panic=users").unwrap();
        assert!(reply.starts_with("Panic: aborting the migration of `shop`.`users`"));
        assert!(f.controls().panic);
    }

    #[test]
    fn panic_without_the_named_flag() {
        let f = fixture();
        handle(&f.plane, "panic").unwrap();
        assert!(f.controls().panic);
    }

    #[test]
    fn postpone_flag_file_command_creates_the_file() {
        let flag = temp_file("postpone-cmd");
        let f = fixture();
        f.plane
            .controls
            .send_modify(|c| c.cut_over_requested = true);
        let reply = handle(
            &f.plane,
            &format!("postpone-cut-over-flag-file={}", flag.display()),
        )
        .unwrap();
        assert!(reply.starts_with("Postponed\n"));
        assert!(flag.exists());
        let c = f.controls();
        assert!(c.postpone_cut_over && !c.cut_over_requested);
        assert!(handle(&f.plane, "postpone-cut-over-flag-file").is_err());
        assert_eq!(
            handle(&f.plane, "postpone-cut-over-flag-file=?").unwrap(),
            ""
        );
        let _ = std::fs::remove_file(flag);
    }

    #[test]
    fn unknown_and_deprecated_commands() {
        let f = fixture();
        let err = handle(&f.plane, "bogus=1").unwrap_err();
        assert_eq!(err, CommandError::Unknown("bogus".into()));
        assert_eq!(err.to_string(), "unknown command: bogus");
        assert!(handle(&f.plane, "replication-lag-query=select 1").is_err());
        assert_eq!(f.controls(), Controls::default());
    }

    #[test]
    fn error_replies_are_recognized() {
        let f = fixture_with(MigrationIdentity {
            force_named_panic: true,
            postpone_flag_file: Some(PathBuf::from("/nonexistent-dir/ghost/flag")),
            ..MigrationIdentity::new("shop", "users")
        });
        for line in [
            "bogus",
            "chunk-size=x",
            "nice-ratio=x",
            "max-load=x",
            "throttle-http=x",
            "throttle-control-replicas=a:b",
            "throttle=orders",
            "no-throttle=orders",
            "unpostpone=orders",
            "panic",
            "panic=orders",
            "coordinates=1",
            "replication-lag-query=1",
            "postpone-cut-over-flag-file",
            "postpone-cut-over-flag-file=/nonexistent-dir/ghost/flag",
        ] {
            let err = handle(&f.plane, line).unwrap_err();
            assert!(is_error_reply(&err.to_string()), "{line}: {err}");
        }
        for line in [
            "help",
            "sup",
            "status",
            "chunk-size=?",
            "throttle",
            "coordinates",
        ] {
            let reply = handle(&f.plane, line).unwrap();
            assert!(!is_error_reply(&reply), "{line}: {reply}");
        }
        let reply = handle(&f.plane, "panic=users").unwrap();
        assert!(!is_error_reply(&reply));
    }

    #[test]
    fn go_unquote_follows_strconv() {
        assert_eq!(go_unquote("\"select 1\"").as_deref(), Some("select 1"));
        assert_eq!(
            go_unquote(r#""a\"b\\c\n\t""#).as_deref(),
            Some("a\"b\\c\n\t")
        );
        assert_eq!(go_unquote(r#""\x41\u00e9\101""#).as_deref(), Some("AéA"));
        assert_eq!(go_unquote("`raw \\n`").as_deref(), Some("raw \\n"));
        assert_eq!(go_unquote("'x'").as_deref(), Some("x"));
        assert_eq!(go_unquote("'xy'"), None);
        assert_eq!(go_unquote("\"open"), None);
        assert_eq!(go_unquote("\"a\"b\""), None);
        assert_eq!(go_unquote(r#""\q""#), None);
        assert_eq!(go_unquote(r#""it\'s""#), None);
        assert_eq!(go_unquote("plain"), None);
        assert_eq!(go_unquote("\""), None);
        // Not valid Go literals: kept verbatim by split_command.
        assert_eq!(split_command("throttle-query='a b'").1, "'a b'");
        assert_eq!(split_command("throttle-query=\"a b\"").1, "a b");
        assert_eq!(
            split_command("  chunk-size =  42 \n"),
            ("chunk-size", "42".to_string())
        );
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(45), "45s");
        assert_eq!(go_duration(125), "2m5s");
        assert_eq!(go_duration(3600), "1h0m0s");
        assert_eq!(go_duration(90061), "25h1m1s");
    }

    #[test]
    fn settings_apply_in_one_update() {
        let f = fixture();
        let mut rx = f.plane.controls.subscribe();
        rx.mark_unchanged();
        apply_settings(
            &f.plane,
            vec![
                Setting::parse("chunk-size", "200").unwrap(),
                Setting::parse("nice-ratio", "1.5").unwrap(),
            ],
        );
        assert!(rx.has_changed().unwrap());
        let c = rx.borrow_and_update().clone();
        assert_eq!((c.chunk_size, c.nice_ratio), (200, 1.5));
        assert_eq!(
            Setting::parse("bogus", "1"),
            Err(CommandError::Unknown("bogus".into()))
        );
    }
}
