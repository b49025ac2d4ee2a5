//! Faults around the engine while it runs, with writers keeping an exact record: its sessions
//! killed on the primary and the replica, the network stalled and reset (through a proxy), the
//! primary and the replica restarted mid-copy, mid-apply and mid-checksum, and the replica's
//! SQL thread stopped. Every run must finish by itself (no resume), with the table exactly as
//! the writers were told.
//!
//! These tests restart shared servers: they take a lock of their own, so they run one at a time.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fault::{Running, Tally, Trial, ghost, tail};
use mysql_async::prelude::Queryable;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn server_name() -> String {
    std::env::var("GHOST_TEST_SERVER").unwrap_or_else(|_| "mariadb-10.11".into())
}

fn replica_flags() -> Vec<String> {
    let replica = common::replica();
    let primary = common::primary();
    vec![
        format!("--host={}", replica.host),
        format!("--port={}", replica.port),
        format!("--assume-master-host={}:{}", primary.host, primary.port),
    ]
}

/// Waits until the replica has applied everything the primary has: a trial that reads from it
/// must find its schema there (the suite before this one may leave the replica minutes behind).
async fn replica_caught_up() {
    let mut primary = common::admin_of(&common::primary())
        .connect()
        .await
        .expect("primary admin");
    let server = common::dialect::server(&mut primary).await;
    let state = common::dialect::gtid_state(&mut primary, &server).await;
    let _ = primary.disconnect().await;
    let mut replica = common::admin_of(&common::replica())
        .connect()
        .await
        .expect("replica admin");
    assert!(
        common::dialect::wait_for_gtids(&mut replica, &server, &state, 600).await,
        "the replica did not catch up with the primary within 600 s"
    );
    let _ = replica.disconnect().await;
}

/// `e2e/db/topology.sh <server> restart <role> <seconds>`, in the background.
fn restart(role: &str, seconds: u32) -> std::thread::JoinHandle<String> {
    let (server, role) = (server_name(), role.to_string());
    std::thread::spawn(move || {
        let out = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/db/topology.sh"))
            .args([server.as_str(), "restart", &role, &seconds.to_string()])
            .output()
            .expect("run the topology script");
        assert!(
            out.status.success(),
            "restart {role} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

/// The ids of ghost's own sessions on `server` (its user; the writers use the admin user).
async fn ghost_sessions(server: &ghost::engine::conn::ConnectionConfig) -> Vec<u64> {
    let Ok(mut conn) = common::admin_of(server).connect().await else {
        return Vec::new();
    };
    let ids: Vec<u64> = conn
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()",
            (&server.user,),
        )
        .await
        .unwrap_or_default();
    let _ = conn.disconnect().await;
    ids
}

async fn kill_session(server: &ghost::engine::conn::ConnectionConfig, id: u64) -> bool {
    let Ok(mut conn) = common::admin_of(server).connect().await else {
        return false;
    };
    let killed = conn.query_drop(format!("KILL {id}")).await.is_ok();
    let _ = conn.disconnect().await;
    killed
}

/// ghost's sessions are killed one at a time, every 300 ms, on the primary and (when it reads
/// from it) the replica, until the migration ends by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_killed_on_primary_and_replica() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tally = Tally::default();
    for via_replica in [false, true] {
        let t = Trial::start_with("connkill", 20_000).await;
        replica_caught_up().await;
        let mut extra = vec!["--chunk-size=100".to_string()];
        if via_replica {
            extra.extend(replica_flags());
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut run = Running::spawn(ghost(&t.schema.name, &extra));
        let servers = if via_replica {
            vec![common::primary(), common::replica()]
        } else {
            vec![common::primary()]
        };
        // From the copy on: the sessions of validation are retried as a whole (validation
        // creates nothing), the ones after it one by one.
        assert!(
            run.wait_for("row copy starting", Duration::from_secs(60)),
            "{}",
            tail(&run.text(), 30)
        );
        let started = Instant::now();
        let mut n = 0usize;
        // 15 s of kills, then the run finishes undisturbed.
        while run.child.try_wait().expect("wait").is_none()
            && started.elapsed() < Duration::from_secs(15)
        {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let server = &servers[n % servers.len()];
            let sessions = ghost_sessions(server).await;
            if let Some(&id) = sessions.get(n % sessions.len().max(1)) {
                if kill_session(server, id).await {
                    tally.faults.fetch_add(1, Ordering::Relaxed);
                }
            }
            n += 1;
        }
        let (status, log) = run.finish(Duration::from_secs(120));
        assert!(
            status.success(),
            "the migration did not survive its sessions being killed (via replica: {via_replica}):\n{}",
            tail(&log, 40)
        );
        t.finish(
            &tally,
            &format!("sessions killed (via replica: {via_replica})"),
        )
        .await;
    }
    tally.report("sessions killed on primary and replica");
}

/// Every connection goes through a proxy that stalls (1.5 s, and once 7 s: longer than the
/// stream's idle limit) and resets all connections, alternately.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_stalls_and_resets() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tally = Tally::default();
    let primary = common::primary();
    let target = format!("{}:{}", primary.host, primary.port)
        .parse()
        .expect("primary address");
    let proxy = common::proxy::Proxy::start(target).await;
    let t = Trial::start_with("netfault", 20_000).await;
    replica_caught_up().await;
    let port = format!("--port={}", proxy.addr.port());
    let mut run = Running::spawn(ghost(&t.schema.name, &["--chunk-size=100", &port]));
    let mut round = 0u32;
    let started = Instant::now();
    // 20 s of faults, then the run finishes undisturbed.
    while run.child.try_wait().expect("wait").is_none()
        && started.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(700)).await;
        round += 1;
        match round % 3 {
            0 => proxy.reset(),
            1 => {
                proxy.stall();
                let stall = if round == 4 { 7_000 } else { 1_500 };
                tokio::time::sleep(Duration::from_millis(stall)).await;
                proxy.resume();
            }
            _ => continue,
        }
        tally.faults.fetch_add(1, Ordering::Relaxed);
    }
    let (status, log) = run.finish(Duration::from_secs(120));
    assert!(
        status.success(),
        "the migration did not survive stalls and resets:\n{}",
        tail(&log, 40)
    );
    println!(
        "proxy: {} connections opened through it",
        proxy.connections_accepted()
    );
    t.finish(&tally, "network stalls and resets").await;
    tally.report("network stalls and resets");
}

/// The primary is down for 10 s mid-copy, mid-checksum and while the cut-over is postponed
/// (changes being applied); the replica is down for 10 s mid-copy while ghost reads from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restarts_mid_copy_checksum_and_apply() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tally = Tally::default();
    // (what, role, the log line that starts the fault, postpone the cut-over)
    let cases = [
        (
            "primary restart mid-copy",
            "primary",
            "shared unique key chosen",
            false,
        ),
        (
            "primary restart mid-checksum",
            "primary",
            "checksum: consistent point taken",
            false,
        ),
        (
            "primary restart mid-apply (postponed)",
            "primary",
            "cut-over postponed",
            true,
        ),
        (
            "replica restart mid-copy",
            "replica",
            "shared unique key chosen",
            false,
        ),
    ];
    for (what, role, trigger, postpone) in cases {
        let t = Trial::start_with("restart", 100_000).await;
        replica_caught_up().await;
        let flag = std::env::temp_dir().join(format!("ghost-postpone-{}", t.schema.name));
        // Chunks that rest as long as they take: the copy lasts well past the restart.
        let mut extra = vec!["--chunk-size=100".to_string(), "--nice-ratio=1".to_string()];
        if postpone {
            std::fs::write(&flag, b"").expect("flag");
            extra.push(format!("--postpone-cut-over-flag-file={}", flag.display()));
        }
        if role == "replica" {
            extra.extend(replica_flags());
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut run = Running::spawn(ghost(&t.schema.name, &extra));
        assert!(
            run.wait_for(trigger, Duration::from_secs(120)),
            "{what}: never saw {trigger:?}:\n{}",
            tail(&run.text(), 30)
        );
        let restarted = restart(role, 10);
        let restart_log = tokio::task::spawn_blocking(move || restarted.join())
            .await
            .expect("join")
            .expect("restart");
        assert!(
            run.child.try_wait().expect("wait").is_none(),
            "{what}: the migration ended before the server came back; the fault missed it:\n{}",
            tail(&run.text(), 20)
        );
        tally.faults.fetch_add(1, Ordering::Relaxed);
        println!("{what}: {}", restart_log.lines().last().unwrap_or_default());
        if postpone {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = std::fs::remove_file(&flag);
        }
        let (status, log) = run.finish(Duration::from_secs(240));
        assert!(
            status.success(),
            "{what}: the migration did not survive:\n{}",
            tail(&log, 40)
        );
        t.finish(&tally, what).await;
    }
    tally.report("server restarts");
}

/// The replica's SQL thread stops for 5 s mid-copy while ghost reads from it: its lag grows,
/// ghost throttles, and carries on once replication does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_sql_thread_stopped_and_started() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tally = Tally::default();
    let t = Trial::start_with("sqlstop", 20_000).await;
    replica_caught_up().await;
    let mut extra = vec!["--chunk-size=100".to_string()];
    extra.extend(replica_flags());
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut run = Running::spawn(ghost(&t.schema.name, &extra));
    assert!(
        run.wait_for("row copy starting", Duration::from_secs(60)),
        "never saw the copy start:\n{}",
        tail(&run.text(), 20)
    );
    let replica = common::admin_of(&common::replica());
    let mut conn = replica.connect().await.expect("replica admin");
    let server = ghost::engine::dialect::ServerInfo::detect(&mut conn)
        .await
        .expect("server");
    let [_, stop_sql] = server.stop_replication_sql();
    conn.query_drop(stop_sql)
        .await
        .expect("stop the SQL thread");
    tally.faults.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(5)).await;
    conn.query_drop(server.start_replication_sql())
        .await
        .expect("start replication");
    let _ = conn.disconnect().await;
    let (status, log) = run.finish(Duration::from_secs(180));
    assert!(status.success(), "{}", tail(&log, 40));
    assert!(
        log.contains("throttled"),
        "ghost should have throttled on the replica's lag:\n{}",
        tail(&log, 40)
    );
    t.finish(&tally, "replica SQL thread stopped").await;
    tally.report("replica SQL thread stopped and started");
}
