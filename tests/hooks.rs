//! Hooks and webhooks without a database: shell scripts in a temporary hooks directory, and a
//! tiny HTTP server on 127.0.0.1 that records what it receives.

#![cfg(unix)]

#[path = "common/webhook_receiver.rs"]
mod webhook_receiver;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ghost::engine::conn::Secret;
use ghost::engine::hooks::{
    self, HookError, HookPoint, Hooks, HooksConfig, MigrationInfo, WebhookTarget,
};
use ghost::engine::progress::{Phase, Progress};
use tokio::sync::watch;
use webhook_receiver::{Server, signature};

const TOKEN: &str = "tok-123";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("ghost-hooks-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(path.join("hooks")).expect("create hooks dir");
        fs::create_dir_all(path.join("out")).expect("create out dir");
        TempDir(path)
    }
    fn hooks(&self) -> PathBuf {
        self.0.join("hooks")
    }
    fn out(&self, name: &str) -> PathBuf {
        self.0.join("out").join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write_script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
}

fn info() -> MigrationInfo {
    MigrationInfo {
        database: "shop".into(),
        table: "orders".into(),
        ghost_table: "_orders_gho".into(),
        old_table: "_orders_del".into(),
        alter: "ADD COLUMN note TEXT".into(),
        inspected_host: "replica1".into(),
        executing_host: "runner".into(),
        migrated_host: "primary1".into(),
        dry_run: false,
        revert: false,
    }
}

fn config(hooks_path: Option<&Path>) -> HooksConfig {
    HooksConfig {
        hooks_path: hooks_path.map(Path::to_path_buf),
        hint: "ticket-42".into(),
        hint_owner: "dba-team".into(),
        hint_token: Secret::new(TOKEN),
        ..HooksConfig::default()
    }
}

fn copying() -> Progress {
    Progress {
        phase: Phase::Copying,
        rows_copied: 25,
        rows_estimate: 100,
        eta_seconds: Some(42),
        replica_lag_millis: Some(1500),
        heartbeat_lag_millis: Some(250),
        ..Progress::default()
    }
}

fn read_env(path: &Path) -> HashMap<String, String> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Asserts `GH_OST_<name>` and its `GHOST_<name>` twin.
fn assert_var(env: &HashMap<String, String>, name: &str, expected: &str) {
    for key in [format!("GH_OST_{name}"), format!("GHOST_{name}")] {
        assert_eq!(env.get(&key).map(String::as_str), Some(expected), "{key}");
    }
}

fn assert_go_float(env: &HashMap<String, String>, name: &str) -> f64 {
    let value = &env[&format!("GH_OST_{name}")];
    assert_eq!(
        value.split_once('.').map(|(_, frac)| frac.len()),
        Some(6),
        "{name}={value} should look like Go's %f"
    );
    assert_eq!(env.get(&format!("GHOST_{name}")), Some(value));
    value.parse().expect("a float")
}

#[tokio::test]
async fn hooks_get_the_gh_ost_environment() {
    let dir = TempDir::new("env");
    let hooks_dir = dir.hooks();
    for (prefix, tag) in [
        ("gh-ost-on-startup", "startup"),
        ("gh-ost-on-interactive-command", "command"),
        ("gh-ost-on-success", "success"),
        ("gh-ost-on-batch-copy-retry", "retry"),
    ] {
        let out = dir.out(&format!("{tag}.env"));
        write_script(
            &hooks_dir,
            &format!("{prefix}-dump"),
            &format!("env > '{}'", out.display()),
        );
    }
    let order = dir.out("order");
    write_script(
        &hooks_dir,
        "gh-ost-on-validated-b",
        &format!("echo b >> '{}'", order.display()),
    );
    write_script(
        &hooks_dir,
        "gh-ost-on-validated-a",
        &format!("echo a >> '{}'", order.display()),
    );
    // Skipped: not executable (running it would fail the startup point), and a directory.
    fs::write(
        hooks_dir.join("gh-ost-on-startup-disabled"),
        "#!/bin/sh\nexit 1\n",
    )
    .expect("write file");
    fs::create_dir(hooks_dir.join("gh-ost-on-startup.d")).expect("create dir");

    let hooks = Hooks::new(config(Some(&hooks_dir)), info());
    let progress = copying();

    hooks
        .fire(HookPoint::Startup, &progress, &[])
        .await
        .expect("startup hooks succeed");
    let env = read_env(&dir.out("startup.env"));
    for (name, value) in [
        ("DATABASE_NAME", "shop"),
        ("TABLE_NAME", "orders"),
        ("GHOST_TABLE_NAME", "_orders_gho"),
        ("OLD_TABLE_NAME", "_orders_del"),
        ("DDL", "ADD COLUMN note TEXT"),
        ("ESTIMATED_ROWS", "100"),
        ("COPIED_ROWS", "25"),
        ("MIGRATED_HOST", "primary1"),
        ("INSPECTED_HOST", "replica1"),
        ("EXECUTING_HOST", "runner"),
        ("INSPECTED_LAG", "1.500000"),
        ("HEARTBEAT_LAG", "0.250000"),
        ("PROGRESS", "25.000000"),
        ("ETA_SECONDS", "42"),
        ("HOOKS_HINT", "ticket-42"),
        ("HOOKS_HINT_OWNER", "dba-team"),
        ("HOOKS_HINT_TOKEN", TOKEN),
        ("DRY_RUN", "false"),
        ("REVERT", "false"),
        ("ELAPSED_COPY_SECONDS", "0.000000"),
    ] {
        assert_var(&env, name, value);
    }
    assert!(assert_go_float(&env, "ELAPSED_SECONDS") >= 0.0);
    assert!(
        env.contains_key("PATH"),
        "the parent environment is inherited"
    );
    assert!(!env.contains_key("GH_OST_COMMAND"));

    hooks.mark_copy_started();
    tokio::time::sleep(Duration::from_millis(20)).await;
    hooks
        .fire(
            HookPoint::InteractiveCommand,
            &progress,
            &[hooks::env_command("throttle")],
        )
        .await
        .expect("command hook succeeds");
    let env = read_env(&dir.out("command.env"));
    assert_var(&env, "COMMAND", "'throttle'");
    assert!(assert_go_float(&env, "ELAPSED_COPY_SECONDS") > 0.0);

    hooks
        .fire(
            HookPoint::Success,
            &progress,
            &[hooks::env_instant_ddl(false)],
        )
        .await
        .expect("success hook succeeds");
    assert_var(&read_env(&dir.out("success.env")), "INSTANT_DDL", "false");

    hooks
        .fire(
            HookPoint::BatchCopyRetry,
            &progress,
            &[hooks::env_last_batch_copy_error(
                "Error 1205: Lock wait timeout exceeded",
            )],
        )
        .await
        .expect("retry hook succeeds");
    assert_var(
        &read_env(&dir.out("retry.env")),
        "LAST_BATCH_COPY_ERROR",
        "Error 1205: Lock wait timeout exceeded",
    );

    hooks
        .fire(HookPoint::Validated, &progress, &[])
        .await
        .expect("validated hooks succeed");
    assert_eq!(
        fs::read_to_string(&order).expect("order file"),
        "a\nb\n",
        "hooks run in name order"
    );

    // A point without hooks is a no-op.
    hooks
        .fire(HookPoint::BeforeCutOver, &progress, &[])
        .await
        .expect("no hooks, no failure");
}

#[tokio::test]
async fn failing_hooks_abort_only_where_gh_ost_aborts() {
    let dir = TempDir::new("fail");
    let hooks_dir = dir.hooks();
    let marker = dir.out("second-ran");
    write_script(
        &hooks_dir,
        "gh-ost-on-startup-1",
        "echo 'maintenance window closed' >&2\nexit 3",
    );
    write_script(
        &hooks_dir,
        "gh-ost-on-startup-2",
        &format!("touch '{}'", marker.display()),
    );
    write_script(&hooks_dir, "gh-ost-on-status", "exit 1");
    write_script(&hooks_dir, "gh-ost-on-failure", "exit 1");
    write_script(
        &hooks_dir,
        "gh-ost-on-interactive-command",
        r#"[ "$GH_OST_COMMAND" = "'panic'" ] && exit 1
exit 0"#,
    );
    write_script(
        &hooks_dir,
        "gh-ost-on-before-cut-over",
        r#"echo "the token is $GH_OST_HOOKS_HINT_TOKEN" >&2
exit 1"#,
    );
    let hooks = Hooks::new(config(Some(&hooks_dir)), info());
    let progress = copying();

    let err = hooks
        .fire(HookPoint::Startup, &progress, &[])
        .await
        .expect_err("a failing startup hook aborts");
    assert!(
        matches!(
            &err,
            HookError::Failed {
                point: HookPoint::Startup,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("gh-ost-on-startup-1"), "{message}");
    assert!(message.contains("maintenance window closed"), "{message}");
    assert!(
        !marker.exists(),
        "the first failure stops the remaining hooks"
    );

    hooks
        .fire(
            HookPoint::Status,
            &progress,
            &[hooks::env_status("Copy: 25/100")],
        )
        .await
        .expect("status hook failures are only logged");
    hooks
        .fire(HookPoint::Failure, &progress, &[])
        .await
        .expect("failure hook failures are only logged");

    hooks
        .fire(
            HookPoint::InteractiveCommand,
            &progress,
            &[hooks::env_command("status")],
        )
        .await
        .expect("the hook accepts this command");
    assert!(
        hooks
            .fire(
                HookPoint::InteractiveCommand,
                &progress,
                &[hooks::env_command("panic")],
            )
            .await
            .is_err(),
        "the hook rejects this command"
    );

    let err = hooks
        .fire(HookPoint::BeforeCutOver, &progress, &[])
        .await
        .expect_err("a failing before-cut-over hook aborts");
    let message = err.to_string();
    assert!(!message.contains(TOKEN), "{message}");
    assert!(message.contains("<redacted>"), "{message}");
}

/// Alive and not a zombie (a zombie only waits for init to reap it).
#[cfg(target_os = "linux")]
fn process_alive(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_hook_past_its_time_limit_is_killed() {
    let dir = TempDir::new("timeout");
    let hooks_dir = dir.hooks();
    let sh_pid = dir.out("sh.pid");
    let sleep_pid = dir.out("sleep.pid");
    write_script(
        &hooks_dir,
        "gh-ost-on-before-row-copy",
        &format!(
            "echo $$ > '{}'\nsleep 30 &\necho $! > '{}'\nwait",
            sh_pid.display(),
            sleep_pid.display()
        ),
    );
    write_script(&hooks_dir, "gh-ost-on-status", "sleep 30");
    let hooks = Hooks::new(
        HooksConfig {
            hook_timeout: Duration::from_millis(500),
            ..config(Some(&hooks_dir))
        },
        info(),
    );
    let progress = copying();

    let started = Instant::now();
    let err = hooks
        .fire(HookPoint::BeforeRowCopy, &progress, &[])
        .await
        .expect_err("a hook past its limit fails");
    assert!(matches!(&err, HookError::TimedOut { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    #[cfg(target_os = "linux")]
    {
        let sh = fs::read_to_string(&sh_pid).expect("the hook wrote its pid");
        let sleep = fs::read_to_string(&sleep_pid).expect("the hook wrote its child's pid");
        assert!(!process_alive(sh.trim()), "the hook was killed");
        assert!(
            !process_alive(sleep.trim()),
            "what the hook started was killed"
        );
    }

    let started = Instant::now();
    hooks
        .fire(HookPoint::Status, &progress, &[])
        .await
        .expect("a status hook past its limit is only logged");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn status_hooks_fire_periodically_until_the_migration_ends() {
    let dir = TempDir::new("status");
    let hooks_dir = dir.hooks();
    let lines = dir.out("status.lines");
    write_script(
        &hooks_dir,
        "gh-ost-on-status",
        &format!("printf '%s\\n' \"$GH_OST_STATUS\" >> '{}'", lines.display()),
    );
    let hooks = Hooks::new(
        HooksConfig {
            status_interval: Duration::from_millis(100),
            ..config(Some(&hooks_dir))
        },
        info(),
    );
    let (tx, rx) = watch::channel(copying());
    let handle = hooks.spawn_status_hooks(rx);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count = fs::read_to_string(&lines)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if count >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "status hooks did not fire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send_replace(Progress {
        phase: Phase::Succeeded,
        ..copying()
    });
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("the loop stops at a terminal phase")
        .expect("the loop does not panic");

    for line in fs::read_to_string(&lines).expect("status lines").lines() {
        assert!(line.starts_with("'Copy: 25/100 25.0%; "), "{line}");
        assert!(line.ends_with('\''), "{line}");
    }
}

fn target(url: String, secret: Option<&str>, events: &[&str]) -> WebhookTarget {
    WebhookTarget {
        url,
        secret: secret.map(Secret::new),
        events: events.iter().map(|e| e.to_string()).collect(),
    }
}

fn webhook_config(targets: Vec<WebhookTarget>, retries: u32) -> HooksConfig {
    HooksConfig {
        webhooks: targets,
        webhook_timeout: Duration::from_secs(5),
        webhook_retries: retries,
        ..config(None)
    }
}

#[tokio::test]
async fn webhook_body_headers_and_signature() {
    let server = Server::start(0, false).await;
    let hooks = Hooks::new(
        webhook_config(vec![target(server.url("/hook"), Some("s3cret"), &[])], 3),
        info(),
    );
    hooks
        .fire(HookPoint::Startup, &copying(), &[])
        .await
        .expect("webhooks never fail fire()");
    hooks.flush_webhooks(Duration::from_secs(10)).await;

    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.headers["x-ghost-event"], "startup");
    assert!(r.headers["content-type"].starts_with("application/json"));

    let expected = signature(b"s3cret", &r.body);
    assert_eq!(r.headers["x-ghost-signature"], expected);

    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON body");
    assert_eq!(body["event"], "startup");
    let m = &body["migration"];
    assert_eq!(m["database"], "shop");
    assert_eq!(m["table"], "orders");
    assert_eq!(m["ghostTable"], "_orders_gho");
    assert_eq!(m["oldTable"], "_orders_del");
    assert_eq!(m["alter"], "ADD COLUMN note TEXT");
    assert_eq!(m["inspectedHost"], "replica1");
    assert_eq!(m["executingHost"], "runner");
    assert_eq!(m["migratedHost"], "primary1");
    assert_eq!(m["dryRun"], false);
    assert_eq!(body["progress"]["rows_copied"], 25);
    assert_eq!(body["progress"]["rows_estimate"], 100);
    assert_eq!(body["progress"]["phase"], "Copying");
    let time = body["time"].as_str().expect("a time string");
    chrono::DateTime::parse_from_rfc3339(time).expect("an RFC 3339 time");
    assert!(
        !String::from_utf8_lossy(&r.body).contains(TOKEN),
        "the hint token stays out of webhooks"
    );
}

#[tokio::test]
async fn webhooks_respect_the_event_filter() {
    let server = Server::start(0, false).await;
    let hooks = Hooks::new(
        webhook_config(
            vec![
                target(server.url("/success-only"), None, &["success"]),
                target(server.url("/all"), None, &[]),
            ],
            3,
        ),
        info(),
    );
    let progress = copying();
    hooks
        .fire(HookPoint::Startup, &progress, &[])
        .await
        .expect("startup");
    hooks
        .fire(
            HookPoint::Success,
            &progress,
            &[hooks::env_instant_ddl(false)],
        )
        .await
        .expect("success");
    hooks.flush_webhooks(Duration::from_secs(10)).await;

    let requests = server.requests();
    let events_for = |path: &str| {
        let mut events: Vec<String> = requests
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.headers["x-ghost-event"].clone())
            .collect();
        events.sort();
        events
    };
    assert_eq!(events_for("/success-only"), ["success"]);
    assert_eq!(events_for("/all"), ["startup", "success"]);
    assert!(
        requests
            .iter()
            .all(|r| !r.headers.contains_key("x-ghost-signature")),
        "no secret, no signature"
    );
    let success = requests
        .iter()
        .find(|r| r.headers["x-ghost-event"] == "success")
        .expect("a success delivery");
    let body: serde_json::Value = serde_json::from_slice(&success.body).expect("JSON");
    assert_eq!(body["extra"]["GH_OST_INSTANT_DDL"], "false");
}

#[tokio::test]
async fn webhooks_retry_after_server_errors() {
    let server = Server::start(2, false).await;
    let hooks = Hooks::new(
        webhook_config(vec![target(server.url("/hook"), None, &[])], 3),
        info(),
    );
    hooks
        .fire(HookPoint::Success, &copying(), &[])
        .await
        .expect("success");
    hooks.flush_webhooks(Duration::from_secs(10)).await;
    assert_eq!(
        server.requests().len(),
        3,
        "two 500s, then delivered on the third attempt"
    );
}

#[tokio::test]
async fn webhooks_give_up_after_the_configured_retries() {
    let server = Server::start(usize::MAX, false).await;
    let hooks = Hooks::new(
        webhook_config(vec![target(server.url("/hook"), None, &[])], 2),
        info(),
    );
    hooks
        .fire(HookPoint::Failure, &copying(), &[])
        .await
        .expect("a failing webhook never fails fire()");
    hooks.flush_webhooks(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.requests().len(), 3, "one attempt plus two retries");
}

#[tokio::test]
async fn a_hanging_webhook_never_delays_the_migration() {
    let server = Server::start(0, true).await;
    let hooks = Hooks::new(
        webhook_config(vec![target(server.url("/hook"), Some("s3cret"), &[])], 3),
        info(),
    );
    let started = Instant::now();
    hooks
        .fire(
            HookPoint::Success,
            &copying(),
            &[hooks::env_instant_ddl(false)],
        )
        .await
        .expect("success");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(200), "fire() took {took:?}");

    let deadline = Instant::now() + Duration::from_secs(5);
    while server.connections.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the webhook never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    hooks.flush_webhooks(Duration::from_millis(100)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "flush took {took:?}");
}

#[tokio::test]
async fn every_hook_point_runs_its_executables_and_aborts_where_gh_ost_does() {
    for point in HookPoint::ALL {
        let dir = TempDir::new("every");
        let hooks_dir = dir.hooks();
        let ran = dir.out("ran");
        write_script(
            &hooks_dir,
            &format!("{}-probe", point.prefix()),
            &format!(
                "echo \"$GH_OST_TABLE_NAME $GHOST_DATABASE_NAME\" > '{}'\nexit 1",
                ran.display()
            ),
        );
        let hooks = Hooks::new(config(Some(&hooks_dir)), info());
        let result = hooks.fire(point, &copying(), &[]).await;
        let env = std::fs::read_to_string(&ran)
            .unwrap_or_else(|_| panic!("{point} did not run its executable"));
        assert!(
            !env.trim().is_empty(),
            "{point}: the environment reached the hook"
        );
        assert_eq!(
            result.is_err(),
            point.aborts_on_failure(),
            "{point}: a failing hook aborts only where gh-ost's does"
        );
    }
}
