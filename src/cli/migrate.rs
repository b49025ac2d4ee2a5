//! `ghost migrate`: gh-ost's command line in front of the engine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::flags::{MigrateFlags, parse_migrate_flags, usage};
use crate::engine::alter::{AlterStatement, parse_alter};
use crate::engine::config::{CutOverMode, MigrationConfig, ThrottleOptions, Topology};
use crate::engine::conn::ConnectionConfig;
use crate::engine::controls::{Controls, parse_load_thresholds};
use crate::engine::hooks::{HooksConfig, WebhookTarget};
use crate::engine::migration::{Migration, Outcome};
use crate::engine::progress::Progress;
use crate::engine::tls::{Pem, TlsConfig, TlsVerify};
use crate::server::{self, ControlPlane, MigrationIdentity};

/// Exit code for a refused command line (gh-ost exits non-zero; 2 is the usage convention).
const USAGE_ERROR: u8 = 2;
/// How long an ended migration waits for open live pages to receive its final state.
const PAGE_GRACE: Duration = Duration::from_secs(2);

pub fn run(args: &[String]) -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    let mut flags = match parse_migrate_flags(args, &env) {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("ghost migrate: {e}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    if flags.help {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    if flags.version {
        println!("ghost {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if flags.check_flag {
        return ExitCode::SUCCESS;
    }
    init_logging(&flags);
    for warning in &flags.warnings {
        warn!("{warning}");
    }
    if flags.ask_pass {
        match ask_password() {
            Ok(password) => flags.password = password,
            Err(e) => {
                eprintln!("ghost migrate: --ask-pass: cannot read the password: {e}");
                return ExitCode::from(USAGE_ERROR);
            }
        }
    }
    let http = match http_settings(&flags) {
        Ok(http) => http,
        Err(message) => {
            eprintln!("ghost migrate: {message}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let (cfg, controls) = match build(&flags) {
        Ok(built) => built,
        Err(message) => {
            eprintln!("ghost migrate: {message}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ghost migrate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(migrate(cfg, controls, &flags, http))
}

/// gh-ost's `--ssl*` flags: `--ssl` verifies the certificate and the host name against the
/// built-in roots (or `--ssl-ca`); `--ssl-allow-insecure` encrypts without verifying. Every
/// connection, to every server, then uses TLS.
fn tls_from_flags(flags: &MigrateFlags) -> Result<Option<TlsConfig>, String> {
    if !flags.ssl {
        return Ok(None);
    }
    let path = |value: &str| (!value.is_empty()).then(|| Pem::File(PathBuf::from(value)));
    let client = match (path(&flags.ssl_cert), path(&flags.ssl_key)) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err("--ssl-cert needs --ssl-key: give the client certificate's key too".into());
        }
        (None, Some(_)) => {
            return Err("--ssl-key needs --ssl-cert: give the client certificate too".into());
        }
    };
    Ok(Some(TlsConfig {
        ca: path(&flags.ssl_ca),
        client,
        verify: if flags.ssl_allow_insecure {
            TlsVerify::None
        } else {
            TlsVerify::Identity
        },
    }))
}

/// `--ask-pass`: from the terminal without echo, or the first line of stdin when it is not a
/// terminal (a pipe or a file).
fn ask_password() -> std::io::Result<crate::engine::conn::Secret> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ")?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    Ok(crate::engine::conn::Secret::new(password))
}

/// Where the HTTP API listens and who may use it. A non-loopback address needs a token.
fn http_settings(
    flags: &MigrateFlags,
) -> Result<Option<(std::net::SocketAddr, server::http::HttpAccess)>, String> {
    if flags.http_addr.is_empty() {
        if !flags.http_token_file.is_empty() || flags.http_allow_sql {
            return Err("--http-token-file and --http-allow-sql need --http-addr".into());
        }
        return Ok(None);
    }
    let addr: std::net::SocketAddr = flags.http_addr.parse().map_err(|_| {
        format!(
            "--http-addr {:?} is not ip:port (e.g. 127.0.0.1:8080)",
            flags.http_addr
        )
    })?;
    let token = if flags.http_token_file.is_empty() {
        None
    } else {
        let text = std::fs::read_to_string(&flags.http_token_file)
            .map_err(|e| format!("--http-token-file {}: {e}", flags.http_token_file))?;
        let token = text.trim().to_string();
        if token.len() < 16 {
            return Err(format!(
                "--http-token-file {}: the token must have at least 16 characters",
                flags.http_token_file
            ));
        }
        Some(std::sync::Arc::<str>::from(token))
    };
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "--http-addr={addr} is reachable from other hosts, and the API can throttle, abort and reconfigure the migration: \
             pass --http-token-file=FILE (clients then send Authorization: Bearer <token>), or listen on 127.0.0.1"
        ));
    }
    Ok(Some((
        addr,
        server::http::HttpAccess {
            token,
            allow_sql: flags.http_allow_sql,
        },
    )))
}

async fn migrate(
    cfg: MigrationConfig,
    controls: Controls,
    flags: &MigrateFlags,
    http: Option<(std::net::SocketAddr, server::http::HttpAccess)>,
) -> ExitCode {
    if let Some(file) = &cfg.postpone_cut_over_flag_file {
        // gh-ost creates the flag file at start: the user removes it to let cut-over happen.
        if let Err(e) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            eprintln!(
                "ghost migrate: {} ({})",
                crate::engine::wording::postpone_flag_file(&e.to_string()),
                file.display()
            );
            return ExitCode::from(USAGE_ERROR);
        }
    }
    let table = format!("`{}`.`{}`", cfg.database, cfg.table);
    let (controls_tx, controls_rx) = watch::channel(controls);
    let (progress_tx, progress_rx) = watch::channel(Progress::default());

    // The interactive servers: gh-ost's unix socket (always), TCP and HTTP when asked for.
    let plane = ControlPlane::new(
        controls_tx.clone(),
        progress_rx.clone(),
        MigrationIdentity {
            database: cfg.database.clone(),
            table: cfg.table.clone(),
            force_named_cut_over: flags.force_named_cut_over,
            force_named_panic: flags.force_named_panic,
            postpone_flag_file: cfg.postpone_cut_over_flag_file.clone(),
            started: std::time::Instant::now(),
        },
    )
    .with_hooks(crate::engine::migration::hooks_for(&cfg));
    let socket_path = if flags.serve_socket_file.is_empty() {
        server::default_socket_path(&cfg.database, &cfg.table)
    } else {
        PathBuf::from(&flags.serve_socket_file)
    };
    if flags.initially_drop_socket_file {
        let _ = std::fs::remove_file(&socket_path);
    }
    let (listener, guard) = match server::socket::bind_unix(&socket_path) {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!(
                "ghost migrate: cannot serve {}: {e}; pass --initially-drop-socket-file if it is stale",
                socket_path.display()
            );
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let mut servers = vec![tokio::spawn(server::socket::serve_unix_listener(
        listener,
        guard,
        plane.clone(),
    ))];
    if flags.serve_tcp_port > 0 {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], flags.serve_tcp_port));
        servers.push(tokio::spawn(server::socket::serve_tcp(addr, plane.clone())));
    }
    if let Some((addr, access)) = http {
        servers.push(tokio::spawn(server::http::serve_http(
            addr,
            plane.clone(),
            access,
        )));
    }

    // Ctrl-C / SIGTERM abort like gh-ost's panic: the engine drops its tables and exits.
    tokio::spawn(async move {
        wait_for_termination().await;
        warn!("termination signal received; aborting the migration");
        controls_tx.send_modify(|c| c.panic = true);
    });
    let interval = if flags.status_interval > 0 {
        Duration::from_secs(flags.status_interval as u64)
    } else {
        Duration::from_secs(10)
    };
    let status = tokio::spawn(status_lines(progress_rx, interval));

    info!(table = %table, execute = cfg.execute, "migration starting");
    let result = Migration::new(cfg, controls_rx, progress_tx).run().await;
    server::page::let_pages_see_the_end(&plane, PAGE_GRACE).await;
    status.abort();
    for server in &servers {
        server.abort();
    }
    for server in servers {
        // Dropping the unix server's task removes its socket file.
        let _ = server.await;
    }
    match result {
        Ok(Outcome::Migrated { cut_over_lock }) => {
            println!(
                "# Done: {table} migrated; writes were blocked {} ms at cut-over",
                cut_over_lock.as_millis()
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::Instant) => {
            println!("# Done: {table} altered in place with ALGORITHM=INSTANT");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Recovered(report)) => {
            println!("# Done: {table} already migrated: {}", report.summary());
            ExitCode::SUCCESS
        }
        Ok(Outcome::DryRun { ghost_create_table }) => {
            println!("# Dry run (no --execute): the migration is valid; nothing was changed.");
            println!("# The new table would be:\n{ghost_create_table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line, and only one: the cause and the fix.
            eprintln!("ghost migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Progress for people: a live bar when stdout is a terminal, otherwise gh-ost's status line
/// every interval (and at every phase change to Postponed).
async fn status_lines(mut progress: watch::Receiver<Progress>, interval: Duration) {
    use std::io::IsTerminal;
    let started = std::time::Instant::now();
    if std::io::stdout().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows ({percent}%) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        loop {
            let p = progress.borrow().clone();
            bar.set_length(p.rows_estimate.max(p.rows_copied));
            bar.set_position(p.rows_copied);
            bar.set_message(bar_message(&p));
            if p.phase.is_terminal() {
                bar.finish();
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), progress.changed()).await;
        }
    }
    // A line every `interval`, and one at once when the phase changes; never more.
    let mut last_phase = progress.borrow().phase;
    let mut sender_gone = false;
    loop {
        if !sender_gone {
            let _ = tokio::time::timeout(interval, async {
                loop {
                    if progress.changed().await.is_err() {
                        sender_gone = true;
                        return;
                    }
                    if progress.borrow().phase != last_phase {
                        return;
                    }
                }
            })
            .await;
        }
        let p = progress.borrow().clone();
        last_phase = p.phase;
        println!(
            "{}",
            crate::server::commands::status_line(&p, started.elapsed())
        );
        if p.phase.is_terminal() || sender_gone {
            return;
        }
    }
}

/// The bar's trailing text: phase, throttle reason, lag, ETA.
fn bar_message(p: &Progress) -> String {
    let mut parts = vec![format!("{:?}", p.phase)];
    if p.throttle.active {
        parts.push(format!("throttled: {}", p.throttle.reason));
    }
    if let Some(lag) = p.heartbeat_lag_millis {
        parts.push(format!("lag {:.1}s", lag as f64 / 1000.0));
    }
    if let Some(eta) = p.eta_seconds {
        parts.push(format!("ETA {eta}s"));
    }
    parts.join(", ")
}

fn init_logging(flags: &MigrateFlags) {
    let level = if flags.quiet {
        "error"
    } else if flags.debug {
        "debug"
    } else if flags.verbose {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("ghost={level}")));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling run twice) is harmless; ignore it.
    let _ = if flags.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn path(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| PathBuf::from(value))
}

/// Maps gh-ost's flags onto the engine's configuration and initial controls.
fn build(flags: &MigrateFlags) -> Result<(MigrationConfig, Controls), String> {
    // gh-ost ignores --alter when reverting.
    let alter = if flags.revert {
        AlterStatement::default()
    } else {
        parse_alter(&flags.alter).map_err(|e| e.to_string())?
    };
    let database = if flags.database.is_empty() {
        alter.explicit_schema.clone().unwrap_or_default()
    } else {
        flags.database.clone()
    };
    let table = if flags.table.is_empty() {
        alter.explicit_table.clone().unwrap_or_default()
    } else {
        flags.table.clone()
    };
    // `--table=t --alter="ALTER TABLE other ..."` is ambiguous: refuse rather than guess.
    if let Some(named) = alter.explicit_table.as_deref() {
        if !flags.table.is_empty() && named != flags.table {
            return Err(format!(
                "--alter names table `{named}` but --table is `{}`: give the same table in both, or only the changes in --alter",
                flags.table
            ));
        }
    }
    if let Some(named) = alter.explicit_schema.as_deref() {
        if !flags.database.is_empty() && named != flags.database {
            return Err(format!(
                "--alter names database `{named}` but --database is `{}`: give the same database in both, or only the changes in --alter",
                flags.database
            ));
        }
    }
    if database.is_empty() {
        return Err(format!(
            "{}: give --database, or a full `ALTER TABLE db.table ...` in --alter",
            crate::engine::wording::DATABASE_REQUIRED
        ));
    }
    if table.is_empty() {
        return Err(format!(
            "{}: give --table, or a full `ALTER TABLE db.table ...` in --alter",
            crate::engine::wording::TABLE_REQUIRED
        ));
    }
    let inspector = ConnectionConfig::new(
        flags.host.clone(),
        flags.port,
        flags.user.clone(),
        flags.password.clone(),
    )
    .with_tls(tls_from_flags(flags)?)
    .with_timeout(Some(
        Duration::try_from_secs_f64(flags.mysql_timeout)
            .map_err(|_| format!("--mysql-timeout={} is out of range", flags.mysql_timeout))?,
    ));
    let mut cfg = MigrationConfig::new(inspector.clone(), &database, &table, &alter.options);
    if !flags.assume_master_host.is_empty() {
        let (host, port) = split_host_port(&flags.assume_master_host)?;
        let mut primary = ConnectionConfig {
            host,
            port,
            ..inspector
        };
        if !flags.master_user.is_empty() {
            primary.user = flags.master_user.clone();
        }
        if !flags.master_password.expose().is_empty() {
            primary.password = flags.master_password.clone();
        }
        cfg.primary = Some(primary);
    }
    cfg.execute = flags.execute;
    cfg.topology = if flags.test_on_replica {
        Topology::TestOnReplica
    } else if flags.migrate_on_replica {
        Topology::MigrateOnReplica
    } else {
        Topology::Normal
    };
    cfg.test_on_replica_skip_replica_stop = flags.test_on_replica_skip_replica_stop;
    cfg.allow_on_master = flags.allow_on_master;
    cfg.assume_rbr = flags.assume_rbr;
    cfg.switch_to_rbr = flags.switch_to_rbr;
    cfg.replica_server_id = flags.replica_server_id;
    cfg.exact_rowcount = flags.exact_rowcount;
    cfg.default_retries = flags.default_retries.clamp(1, i64::from(u32::MAX)) as u32;
    cfg.cut_over = match flags.cut_over.as_str() {
        "two-step" => CutOverMode::TwoStep,
        _ => CutOverMode::Atomic,
    };
    cfg.cut_over_lock_timeout =
        Duration::from_secs(flags.cut_over_lock_timeout_seconds.clamp(1, 10) as u64);
    cfg.cut_over_exponential_backoff = flags.cut_over_exponential_backoff;
    cfg.exponential_backoff_max_interval =
        Duration::from_secs(flags.exponential_backoff_max_interval.max(2) as u64);
    cfg.initially_drop_ghost_table = flags.initially_drop_ghost_table;
    cfg.initially_drop_old_table = flags.initially_drop_old_table;
    cfg.ok_to_drop_table = flags.ok_to_drop_table;
    cfg.timestamp_old_table = flags.timestamp_old_table;
    cfg.checksum = flags.checksum;
    cfg.defer_secondary_indexes = flags.defer_secondary_indexes;
    cfg.skip_uncopied_changes = flags.skip_uncopied_changes;
    cfg.checksum_during_copy = flags.checksum_during_copy;
    cfg.copy_without_locks = flags.copy_without_locks;
    cfg.coalesce_changes = flags.coalesce_changes;
    cfg.revert_from = flags.revert.then(|| flags.old_table.clone());
    cfg.copy_threads = flags.copy_threads as usize;
    cfg.apply_threads = flags.apply_threads as usize;
    cfg.target_chunk_time = (flags.target_chunk_time_millis > 0)
        .then(|| Duration::from_millis(u64::from(flags.target_chunk_time_millis)));
    cfg.force_table_names =
        (!flags.force_table_names.is_empty()).then(|| flags.force_table_names.clone());
    cfg.allow_nullable_unique_key = flags.allow_nullable_unique_key;
    cfg.allow_zero_in_date = flags.allow_zero_in_date;
    cfg.approve_renamed_columns = flags.approve_renamed_columns;
    cfg.skip_renamed_columns = flags.skip_renamed_columns;
    cfg.discard_foreign_keys = flags.discard_foreign_keys;
    cfg.skip_foreign_key_checks = flags.skip_foreign_key_checks;
    cfg.attempt_instant_ddl = flags.attempt_instant_ddl;
    cfg.panic_on_warnings = flags.panic_on_warnings;
    cfg.skip_strict_mode = flags.skip_strict_mode;
    cfg.heartbeat_interval =
        Duration::from_millis(flags.heartbeat_interval_millis.clamp(100, 1000) as u64);
    cfg.include_triggers = flags.include_triggers;
    cfg.trigger_suffix = flags.trigger_suffix.clone();
    cfg.remove_trigger_suffix_if_exists = flags.remove_trigger_suffix_if_exists;
    cfg.analyze_ghost_table_before_cutover = flags.analyze_ghost_table_before_cutover;
    cfg.throttle_flag_file = path(&flags.throttle_flag_file);
    cfg.throttle_additional_flag_file = path(&flags.throttle_additional_flag_file);
    cfg.postpone_cut_over_flag_file = path(&flags.postpone_cut_over_flag_file);
    cfg.panic_flag_file = path(&flags.panic_flag_file);
    cfg.checkpoint_interval = flags
        .checkpoint
        .then(|| Duration::from_secs(flags.checkpoint_seconds.max(10) as u64));
    cfg.resume = flags.resume;
    cfg.use_gtid = flags.gtid;
    cfg.throttle = ThrottleOptions {
        http_interval: Duration::from_millis(flags.throttle_http_interval_millis.max(10) as u64),
        http_timeout: Duration::from_millis(flags.throttle_http_timeout_millis.max(10) as u64),
        ignore_http_errors: flags.ignore_http_errors,
        critical_load_interval: Duration::from_millis(
            flags.critical_load_interval_millis.max(0) as u64
        ),
        critical_load_hibernate: Duration::from_secs(
            flags.critical_load_hibernate_seconds.max(0) as u64
        ),
    };
    let webhook_secret =
        (!flags.webhook_secret.expose().is_empty()).then(|| flags.webhook_secret.clone());
    cfg.hooks = HooksConfig {
        hooks_path: path(&flags.hooks_path),
        hint: flags.hooks_hint.clone(),
        hint_owner: flags.hooks_hint_owner.clone(),
        hint_token: flags.hooks_hint_token.clone(),
        status_interval: Duration::from_secs(flags.hooks_status_interval.max(0) as u64),
        webhooks: flags
            .webhook
            .iter()
            .map(|url| WebhookTarget {
                url: url.clone(),
                secret: webhook_secret.clone(),
                events: Vec::new(),
            })
            .collect(),
        ..HooksConfig::default()
    };

    let controls = Controls {
        chunk_size: flags.chunk_size.clamp(10, 100_000) as u64,
        dml_batch_size: flags.dml_batch_size.clamp(1, 1000) as usize,
        nice_ratio: flags.nice_ratio.clamp(0.0, 100.0),
        max_lag: Duration::from_millis(flags.max_lag_millis.max(100) as u64),
        max_load: parse_load_thresholds(&flags.max_load).map_err(|e| format!("--max-load: {e}"))?,
        critical_load: parse_load_thresholds(&flags.critical_load)
            .map_err(|e| format!("--critical-load: {e}"))?,
        throttle_query: (!flags.throttle_query.is_empty()).then(|| flags.throttle_query.clone()),
        throttle_http: (!flags.throttle_http.is_empty()).then(|| flags.throttle_http.clone()),
        throttle_control_replicas: server::commands::parse_replica_list(
            &flags.throttle_control_replicas,
        )
        .map_err(|e| format!("--throttle-control-replicas: {e}"))?,
        ..Controls::default()
    };
    Ok((cfg, controls))
}

/// `host[:port]`, `[v6]:port`; the port defaults to 3306.
fn split_host_port(value: &str) -> Result<(String, u16), String> {
    let bad = || format!("--assume-master-host {value:?} is not host[:port]");
    if let Some(rest) = value.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => 3306,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match value.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Ok((host.to_string(), port.parse().map_err(|_| bad())?))
        }
        _ if !value.is_empty() => Ok((value.to_string(), 3306)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Vec<String> {
        line.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_master_host() {
        assert_eq!(split_host_port("db1:3307").unwrap(), ("db1".into(), 3307));
        assert_eq!(split_host_port("db1").unwrap(), ("db1".into(), 3306));
        assert_eq!(split_host_port("[::1]:3307").unwrap(), ("::1".into(), 3307));
        assert!(split_host_port("db1:x").is_err());
    }

    #[test]
    fn builds_config_from_gh_ost_flags() {
        let flags = parse_migrate_flags(
            &args(&[
                "--host=127.0.0.1",
                "--port=23307",
                "--user=u",
                "--password=p",
                "--assume-master-host=127.0.0.1:23306",
                "--alter=ALTER TABLE test.t ADD COLUMN x INT",
                "--test-on-replica",
                "--chunk-size=5",
                "--max-load=Threads_running=30",
                "--cut-over=two-step",
                "--execute",
            ]),
            &|_| None,
        )
        .unwrap();
        let (cfg, controls) = build(&flags).unwrap();
        assert_eq!(cfg.database, "test");
        assert_eq!(cfg.table, "t");
        assert_eq!(cfg.alter, "ADD COLUMN x INT");
        assert_eq!(cfg.topology, Topology::TestOnReplica);
        assert_eq!(cfg.cut_over, CutOverMode::TwoStep);
        assert_eq!(cfg.primary.as_ref().map(|p| p.port), Some(23306));
        assert_eq!(
            cfg.primary
                .as_ref()
                .map(|p| p.password.expose().to_string()),
            Some("p".into())
        );
        assert_eq!(controls.chunk_size, 10, "clamped like gh-ost");
        assert_eq!(controls.max_load, vec![("Threads_running".to_string(), 30)]);
        assert!(cfg.execute);
    }

    #[test]
    fn refuses_missing_table() {
        let flags = parse_migrate_flags(
            &args(&["--database=test", "--alter=ADD COLUMN x INT"]),
            &|_| None,
        )
        .unwrap();
        let err = build(&flags).unwrap_err();
        assert!(err.contains("--table must be provided"), "{err}");
    }
}
