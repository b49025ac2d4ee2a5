//! Runtime control through the real binary, as a user drives it: throttle sources holding the
//! copy (and releasing it), `ghost ctl` commands on the socket, panic, hooks at every point and
//! webhooks.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

const ROWS: u32 = 20_000;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ghost-rt-{name}-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

async fn seeded_schema(prefix: &str) -> common::TestSchema {
    let schema = common::TestSchema::create(prefix).await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query_drop(format!(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(32)); \
         INSERT INTO t SELECT seq, CONCAT('v', seq) FROM {seq}",
        seq = common::dialect::numbers(u64::from(ROWS))
    ))
    .await
    .expect("seed");
    schema
}

/// `ghost migrate` on the primary with a socket, plus `extra` flags; output goes to a log file.
fn start_migration(schema: &str, dir: &Path, extra: &[String]) -> (Child, PathBuf) {
    let socket = dir.join("ghost.sock");
    let log = std::fs::File::create(dir.join("ghost.log")).expect("log file");
    let mut args = vec!["migrate".to_string()];
    args.extend(common::migrate_args(
        schema,
        "t",
        "ADD COLUMN w INT NOT NULL DEFAULT 1",
    ));
    args.extend([
        "--chunk-size=200".to_string(),
        format!("--serve-socket-file={}", socket.display()),
        "--verbose".into(),
    ]);
    args.extend(extra.iter().cloned());
    let child = Command::new(common::ghost_bin())
        .args(&args)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start ghost migrate");
    (child, socket)
}

fn ctl(socket: &Path, command: &str) -> String {
    let out = Command::new(common::ghost_bin())
        .args(["ctl", "--socket", &socket.display().to_string(), command])
        .output()
        .expect("run ghost ctl");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Rows copied, from gh-ost's status line (`Copy: 1200/20000 ...`).
fn copied(status: &str) -> Option<u64> {
    let at = status.find("Copy: ")? + 6;
    status[at..].split('/').next()?.trim().parse().ok()
}

fn wait_for<F: FnMut() -> bool>(what: &str, limit: Duration, mut ok: F) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn finish(mut child: Child, dir: &Path, limit: Duration) -> (i32, String) {
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ghost migrate did not finish: {}", log_of(dir));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (code, log_of(dir))
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ghost.log")).unwrap_or_default()
}

async fn ghost_tables(schema: &common::TestSchema) -> Vec<String> {
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE '\\_%'")
        .await
        .expect("tables")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_file_and_throttle_command_hold_the_copy() {
    let schema = seeded_schema("rtthrottle").await;
    let dir = scratch_dir("throttle");
    let flag = dir.join("throttle.flag");
    std::fs::write(&flag, b"").expect("flag file");
    let (child, socket) = start_migration(
        &schema.name,
        &dir,
        &[format!("--throttle-flag-file={}", flag.display())],
    );

    wait_for("the socket", Duration::from_secs(20), || socket.exists());
    wait_for("the flag-file throttle", Duration::from_secs(20), || {
        ctl(&socket, "status").contains("flag-file")
    });
    std::thread::sleep(Duration::from_secs(1));
    let status = ctl(&socket, "status");
    assert_eq!(
        copied(&status),
        Some(0),
        "the flag file holds the copy: {status}"
    );

    // The user's throttle takes over when the flag file goes.
    assert!(!ctl(&socket, "throttle").contains("error"));
    std::fs::remove_file(&flag).expect("remove flag");
    std::thread::sleep(Duration::from_millis(1500));
    let status = ctl(&socket, "status");
    assert_eq!(
        copied(&status),
        Some(0),
        "the throttle command holds the copy: {status}"
    );
    assert!(status.contains("commanded by user"), "{status}");

    let released = Instant::now();
    ctl(&socket, "no-throttle");
    let (code, log) = finish(child, &dir, Duration::from_secs(60));
    assert_eq!(code, 0, "{log}");
    eprintln!("no-throttle to done: {} ms", released.elapsed().as_millis());
    assert!(ghost_tables(&schema).await.iter().all(|t| t == "_t_del"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_command_cancels_and_drops_the_migration_tables() {
    let schema = seeded_schema("rtpanic").await;
    let dir = scratch_dir("panic");
    let flag = dir.join("throttle.flag");
    std::fs::write(&flag, b"").expect("flag file");
    let (child, socket) = start_migration(
        &schema.name,
        &dir,
        &[format!("--throttle-flag-file={}", flag.display())],
    );
    wait_for("the flag-file throttle", Duration::from_secs(20), || {
        socket.exists() && ctl(&socket, "status").contains("flag-file")
    });
    let reply = ctl(&socket, "panic");
    assert!(reply.to_lowercase().contains("panic"), "{reply}");
    let (code, log) = finish(child, &dir, Duration::from_secs(30));
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("cancelled"), "{log}");
    assert!(
        ghost_tables(&schema).await.is_empty(),
        "nothing left behind"
    );
    assert!(!socket.exists(), "the socket file is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_lag_holds_the_copy_until_replication_resumes() {
    let schema = seeded_schema("rtlag").await;
    let dir = scratch_dir("lag");
    let flag = dir.join("throttle.flag");
    std::fs::write(&flag, b"").expect("flag file");
    let replica = common::replica();
    let replica_admin = ghost::engine::conn::ConnectionConfig {
        host: replica.host.clone(),
        port: replica.port,
        ..common::primary_admin()
    };
    // Inspect the replica, write on the primary: the replica's lag counts.
    let (child, socket) = start_migration(
        &schema.name,
        &dir,
        &[
            format!("--host={}", replica.host),
            format!("--port={}", replica.port),
            format!("--assume-master-host={}", common::primary().endpoint()),
            "--max-lag-millis=500".into(),
            format!("--throttle-flag-file={}", flag.display()),
        ],
    );
    wait_for("the flag-file throttle", Duration::from_secs(30), || {
        socket.exists() && ctl(&socket, "status").contains("flag-file")
    });
    let mut admin = replica_admin.connect().await.expect("replica admin");
    let server = common::dialect::server(&mut admin).await;
    admin
        .query_drop(common::dialect::stop_sql_thread(&server))
        .await
        .expect("stop SQL thread");
    std::fs::remove_file(&flag).expect("remove flag");
    let lagging = Instant::now();
    let mut saw_lag = String::new();
    while lagging.elapsed() < Duration::from_secs(10) {
        let status = ctl(&socket, "status");
        if status.contains("lag") && status.contains("throttled") || status.contains("lag=") {
            saw_lag = status;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let held = copied(&ctl(&socket, "status"));
    admin
        .query_drop(common::dialect::start_replication(&server))
        .await
        .expect("start SQL thread");
    assert!(
        !saw_lag.is_empty(),
        "lag was never the throttle reason: {}",
        log_of(&dir)
    );
    assert_eq!(held, Some(0), "lag holds the copy: {saw_lag}");
    let (code, log) = finish(child, &dir, Duration::from_secs(60));
    assert_eq!(code, 0, "{log}");
}

/// A hooks directory whose every hook appends its name (and one env var) to `fired`.
fn hooks_dir(dir: &Path, fail: Option<&str>) -> PathBuf {
    let hooks = dir.join("hooks");
    std::fs::create_dir_all(&hooks).expect("hooks dir");
    let fired = dir.join("fired");
    for point in [
        "gh-ost-on-startup",
        "gh-ost-on-validated",
        "gh-ost-on-rowcount-complete",
        "gh-ost-on-before-row-copy",
        "gh-ost-on-row-copy-complete",
        "gh-ost-on-begin-postponed",
        "gh-ost-on-before-cut-over",
        "gh-ost-on-interactive-command",
        "gh-ost-on-status",
        "gh-ost-on-success",
        "gh-ost-on-failure",
    ] {
        let path = hooks.join(format!("{point}-test"));
        let exit = if fail == Some(point) {
            "exit 1"
        } else {
            "exit 0"
        };
        let mut f = std::fs::File::create(&path).expect("hook");
        writeln!(
            f,
            "#!/bin/sh\necho \"{point} $GH_OST_TABLE_NAME $GHOST_GHOST_TABLE_NAME\" >> '{}'\n{exit}",
            fired.display()
        )
        .expect("write hook");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    hooks
}

/// A local HTTP server that records the `X-Ghost-Event` of every POST and answers 200.
fn webhook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            let mut event = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if let Some(v) = lower.strip_prefix("x-ghost-event:") {
                    event = v.trim().to_string();
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if let Ok(mut e) = seen.lock() {
                e.push(event);
            }
            let mut stream = reader.into_inner();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_fire_at_every_point_and_webhooks_follow() {
    let schema = seeded_schema("rthooks").await;
    let dir = scratch_dir("hooks");
    let hooks = hooks_dir(&dir, None);
    let postpone = dir.join("postpone.flag");
    let (url, events) = webhook_receiver();
    let (child, socket) = start_migration(
        &schema.name,
        &dir,
        &[
            format!("--hooks-path={}", hooks.display()),
            "--hooks-status-interval=1".into(),
            format!("--postpone-cut-over-flag-file={}", postpone.display()),
            format!("--webhook={url}"),
        ],
    );
    wait_for("the postponed phase", Duration::from_secs(60), || {
        socket.exists() && ctl(&socket, "status").contains("Postponed")
    });
    // An interactive command runs its hook first.
    ctl(&socket, "sup");
    std::thread::sleep(Duration::from_millis(1500));
    ctl(&socket, "unpostpone");
    let (code, log) = finish(child, &dir, Duration::from_secs(60));
    assert_eq!(code, 0, "{log}");
    let fired = std::fs::read_to_string(dir.join("fired")).expect("hooks ran");
    let order: Vec<&str> = fired.lines().filter_map(|l| l.split(' ').next()).collect();
    let position = |name: &str| {
        order
            .iter()
            .position(|p| *p == name)
            .unwrap_or_else(|| panic!("{name} did not fire: {order:?}"))
    };
    let sequence = [
        "gh-ost-on-startup",
        "gh-ost-on-validated",
        "gh-ost-on-rowcount-complete",
        "gh-ost-on-before-row-copy",
        "gh-ost-on-row-copy-complete",
        "gh-ost-on-before-cut-over",
        "gh-ost-on-begin-postponed",
        "gh-ost-on-success",
    ];
    for pair in sequence.windows(2) {
        assert!(
            position(pair[0]) < position(pair[1]),
            "{} before {}: {order:?}",
            pair[0],
            pair[1]
        );
    }
    position("gh-ost-on-interactive-command");
    position("gh-ost-on-status");
    assert!(!order.contains(&"gh-ost-on-failure"), "{order:?}");
    assert!(
        fired.contains("gh-ost-on-startup t _t_gho"),
        "GH_OST_*/GHOST_* env: {fired}"
    );
    let delivered = events.lock().map(|e| e.clone()).unwrap_or_default();
    for event in ["startup", "validated", "success"] {
        assert!(
            delivered.iter().any(|e| e == event),
            "webhook {event} missing: {delivered:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_aborts_and_leaves_nothing_behind() {
    let schema = seeded_schema("rthookfail").await;
    let dir = scratch_dir("hookfail");
    let hooks = hooks_dir(&dir, Some("gh-ost-on-before-cut-over"));
    let (child, _socket) = start_migration(
        &schema.name,
        &dir,
        &[format!("--hooks-path={}", hooks.display())],
    );
    let (code, log) = finish(child, &dir, Duration::from_secs(60));
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("gh-ost-on-before-cut-over"), "{log}");
    let fired = std::fs::read_to_string(dir.join("fired")).expect("hooks ran");
    assert!(fired.contains("gh-ost-on-failure"), "{fired}");
    assert!(
        ghost_tables(&schema).await.is_empty(),
        "nothing left behind"
    );
    let mut conn = schema.admin_config().connect().await.expect("admin");
    let columns: Vec<String> = conn
        .query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't'")
        .await
        .expect("columns");
    assert!(
        !columns.contains(&"w".to_string()),
        "the original is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_flag_file_cancels_and_drops_the_migration_tables() {
    let schema = seeded_schema("rtpanicfile").await;
    let dir = scratch_dir("panicfile");
    let flag = dir.join("throttle.flag");
    let panic_file = dir.join("panic.flag");
    std::fs::write(&flag, b"").expect("flag file");
    let (child, socket) = start_migration(
        &schema.name,
        &dir,
        &[
            format!("--throttle-flag-file={}", flag.display()),
            format!("--panic-flag-file={}", panic_file.display()),
        ],
    );
    wait_for("the flag-file throttle", Duration::from_secs(20), || {
        socket.exists() && ctl(&socket, "status").contains("flag-file")
    });
    std::fs::write(&panic_file, b"").expect("panic file");
    let (code, log) = finish(child, &dir, Duration::from_secs(30));
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("panic flag file"), "{log}");
    assert!(
        ghost_tables(&schema).await.is_empty(),
        "nothing left behind"
    );
}

/// `--ask-pass` reads the password from stdin when it is not a terminal; nothing else gives
/// one here, so the migration only connects if it was read.
#[tokio::test]
async fn ask_pass_reads_the_password_from_stdin() {
    use std::io::Write;
    let schema = common::TestSchema::create("askpass").await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .expect("create");
    let password = common::primary().password.expose().to_string();
    let args: Vec<String> = common::migrate_args(&schema.name, "t", "ADD COLUMN c INT")
        .into_iter()
        .filter(|a| !a.starts_with("--password="))
        .chain(["--ask-pass".to_string()])
        .collect();
    let mut child = std::process::Command::new(common::ghost_bin())
        .arg("migrate")
        .args(&args)
        .env_remove("GHOST_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ghost");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("write the password");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without it, the same command cannot log in.
    let out = std::process::Command::new(common::ghost_bin())
        .arg("migrate")
        .args(args.iter().filter(|a| *a != "--ask-pass"))
        .env_remove("GHOST_PASSWORD")
        .output()
        .expect("ghost");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Access denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hooks run without the password ghost was given through its environment.
#[tokio::test]
async fn hooks_never_see_the_password() {
    let schema = common::TestSchema::create("hookpw").await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .expect("create");
    let dir = std::env::temp_dir().join(format!("ghost-hookpw-{}", schema.name));
    std::fs::create_dir_all(dir.join("hooks")).expect("hooks dir");
    let dump = dir.join("env");
    let hook = dir.join("hooks/gh-ost-on-startup-dump");
    std::fs::write(&hook, format!("#!/bin/sh\nenv > '{}'\n", dump.display())).expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let password = common::primary().password.expose().to_string();
    let out = std::process::Command::new(common::ghost_bin())
        .arg("migrate")
        .args(
            common::migrate_args(&schema.name, "t", "ADD COLUMN c INT")
                .into_iter()
                .filter(|a| !a.starts_with("--password=")),
        )
        .arg(format!("--hooks-path={}", dir.join("hooks").display()))
        // Only what this test gives ghost (the test's own environment holds passwords too).
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GHOST_PASSWORD", &password)
        .env("MYSQL_PWD", &password)
        .env("GHOST_DB_PASSWORD", &password)
        .output()
        .expect("ghost");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = std::fs::read_to_string(&dump).expect("the hook ran");
    assert!(env.contains("GH_OST_TABLE_NAME=t"), "{env}");
    for name in ["GHOST_PASSWORD=", "MYSQL_PWD=", "GHOST_DB_PASSWORD="] {
        assert!(!env.contains(name), "the hook saw {name}");
    }
    assert!(!env.contains(&password), "the password reached the hook");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A socket file left by a killed run is replaced; one a live process serves is refused.
#[tokio::test]
async fn stale_socket_is_replaced_and_a_live_one_refused() {
    let schema = common::TestSchema::create("sock").await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .expect("create");
    let path = std::env::temp_dir().join(format!("ghost-sock-{}.sock", schema.name));
    let _ = std::fs::remove_file(&path);
    // A socket nobody accepts on: bound, then the listener dropped with its file left.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    let run = |extra: &str| {
        std::process::Command::new(common::ghost_bin())
            .arg("migrate")
            .args(common::migrate_args(&schema.name, "t", extra))
            .arg(format!("--serve-socket-file={}", path.display()))
            .output()
            .expect("ghost")
    };
    let out = run("ADD COLUMN c INT");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A live one: somebody accepts on it.
    let live = std::os::unix::net::UnixListener::bind(&path).expect("bind live");
    let out = run("ADD COLUMN d INT");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("another process serves it"), "{stderr}");
    drop(live);
    let _ = std::fs::remove_file(&path);
}

/// `--resume` with nothing to resume starts over after saying so, and a sentry an older
/// version left behind is cleared by itself.
#[tokio::test]
async fn resume_without_a_checkpoint_starts_over() {
    let schema = common::TestSchema::create("resume0").await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query_drop(
        "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2); \
         CREATE TABLE _t_gho (id INT PRIMARY KEY); \
         CREATE TABLE _t_del (id INT PRIMARY KEY) COMMENT='ghost-cut-over-sentry'",
    )
    .await
    .expect("setup");
    let out = std::process::Command::new(common::ghost_bin())
        .arg("migrate")
        .args(common::migrate_args(&schema.name, "t", "ADD COLUMN c INT"))
        .args([
            "--checkpoint",
            "--resume",
            "--ok-to-drop-table",
            "--verbose",
        ])
        .output()
        .expect("ghost");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("nothing to resume") || stderr.contains("starting over"),
        "{stderr}"
    );
    let tables = common::table_names(&mut conn, &schema.name).await;
    assert_eq!(tables, ["t"]);
    let rows: Vec<(i32, Option<i32>)> = conn
        .query("SELECT id, c FROM t ORDER BY id")
        .await
        .expect("rows");
    assert_eq!(rows, [(1, None), (2, None)]);
}

/// `--status-interval` holds while the cut-over is postponed: a line a second, not hundreds.
#[tokio::test]
async fn status_interval_is_honoured_while_postponed() {
    let schema = common::TestSchema::create("statusint").await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3)")
        .await
        .expect("create");
    let flag = std::env::temp_dir().join(format!("ghost-statusint-{}", schema.name));
    std::fs::write(&flag, b"").expect("flag");
    let child = std::process::Command::new(common::ghost_bin())
        .arg("migrate")
        .args(common::migrate_args(&schema.name, "t", "ADD COLUMN c INT"))
        .arg("--status-interval=1")
        .arg(format!("--postpone-cut-over-flag-file={}", flag.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ghost");
    tokio::time::sleep(Duration::from_secs(5)).await;
    std::fs::remove_file(&flag).expect("remove the flag");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout.lines().filter(|l| l.starts_with("Copy:")).count();
    let postponed = stdout
        .lines()
        .filter(|l| l.contains("postponing cut-over"))
        .count();
    assert!(postponed >= 2, "status lines while postponed: {stdout}");
    // About one a second over ~6 s, plus one per phase change.
    assert!(lines <= 15, "{lines} status lines in ~6 s:\n{stdout}");
}
