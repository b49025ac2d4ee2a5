//! The throttler against the real primary/replica topology: each throttle source turns the verdict
//! on and, once the condition is gone, off again; sources that cannot be measured throttle.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ghost::engine::changelog::Changelog;
use ghost::engine::conn::ConnectionConfig;
use ghost::engine::controls::Controls;
use ghost::engine::throttle::{ThrottleSettings, ThrottleVerdict, spawn_throttler};
use mysql_async::prelude::Queryable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const CHANGELOG: &str = "_t_ghc";

fn settings(schema: Option<&str>) -> ThrottleSettings {
    let applier = match schema {
        Some(schema) => common::primary().with_database(schema),
        None => common::primary(),
    };
    let mut settings = ThrottleSettings::new(
        applier,
        common::replica(),
        schema.unwrap_or("test"),
        CHANGELOG,
    );
    settings.lag_interval = Duration::from_millis(100);
    settings.http_interval = Duration::from_millis(100);
    settings.http_timeout = Duration::from_millis(500);
    settings
}

/// Waits until the verdict satisfies `pred`; on timeout returns the last verdict as the error.
async fn wait_for(
    rx: &mut watch::Receiver<ThrottleVerdict>,
    within: Duration,
    pred: impl Fn(&ThrottleVerdict) -> bool,
) -> Result<ThrottleVerdict, ThrottleVerdict> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let current = rx.borrow_and_update().clone();
        if pred(&current) {
            return Ok(current);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            // Timed out or the throttler is gone: one last look happened above.
            Ok(Err(_)) | Err(_) => {
                let last = rx.borrow().clone();
                return if pred(&last) { Ok(last) } else { Err(last) };
            }
        }
    }
}

async fn expect(
    rx: &mut watch::Receiver<ThrottleVerdict>,
    what: &str,
    pred: impl Fn(&ThrottleVerdict) -> bool,
) -> ThrottleVerdict {
    wait_for(rx, Duration::from_secs(5), pred)
        .await
        .unwrap_or_else(|last| panic!("expected {what} within 5s; last verdict: {last:?}"))
}

fn clear(v: &ThrottleVerdict) -> bool {
    !v.throttled
}

fn throttled_by(prefix: &'static str) -> impl Fn(&ThrottleVerdict) -> bool {
    move |v| v.throttled && v.reason.starts_with(prefix)
}

/// Writes a heartbeat every 100 ms on the primary, as the engine does.
fn spawn_heartbeat(config: ConnectionConfig, changelog: Changelog) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conn = None;
        loop {
            if conn.is_none() {
                conn = config.connect().await.ok();
            }
            if let Some(c) = conn.as_mut() {
                if changelog.write_heartbeat(c).await.is_err() {
                    conn = None;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn replica_admin() -> ConnectionConfig {
    let replica = common::replica();
    ConnectionConfig {
        host: replica.host,
        port: replica.port,
        ..common::primary_admin()
    }
}

/// Runs the replica's statement for `what` (in its dialect) on the replica.
async fn replica_sql(
    what: fn(&ghost::engine::dialect::ServerInfo) -> &'static str,
) -> Result<(), String> {
    let mut conn = replica_admin().connect().await.map_err(|e| e.to_string())?;
    let server = common::dialect::server(&mut conn).await;
    let result = conn
        .query_drop(what(&server))
        .await
        .map_err(|e| e.to_string());
    let _ = conn.disconnect().await;
    result
}

/// Stops the replica's SQL thread; restarts it explicitly or, if the test panics first, on drop.
struct StoppedSqlThread {
    restarted: bool,
}

impl StoppedSqlThread {
    async fn stop() -> Self {
        // The guard exists before STOP runs, so any failure after it still restarts the thread.
        let guard = Self { restarted: false };
        replica_sql(common::dialect::stop_sql_thread)
            .await
            .unwrap_or_else(|e| panic!("stopping the replica's SQL thread: {e}"));
        guard
    }

    async fn start(&mut self) -> Result<(), String> {
        let result = replica_sql(common::dialect::start_replication).await;
        self.restarted = result.is_ok();
        result
    }
}

impl Drop for StoppedSqlThread {
    fn drop(&mut self) {
        if self.restarted {
            return;
        }
        // Drop may run inside the test's runtime; use a private one on a plain thread.
        let _ = std::thread::spawn(|| {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(replica_sql(common::dialect::start_replication));
            }
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_lag_throttles_until_the_replica_catches_up() {
    let schema = common::TestSchema::create("thr_lag").await;
    let changelog = Changelog::new(&schema.name, CHANGELOG);
    let mut admin = schema.admin_config().connect().await.expect("connect");
    changelog
        .recreate(&mut admin)
        .await
        .expect("create changelog");
    let heartbeat = spawn_heartbeat(schema.admin_config(), changelog.clone());

    let (_controls, controls_rx) = watch::channel(Controls {
        max_lag: Duration::from_secs(1),
        throttle_control_replicas: vec![common::replica().endpoint()],
        ..Controls::default()
    });
    let (mut verdict, throttler) = spawn_throttler(settings(Some(&schema.name)), controls_rx);

    // The table and the first heartbeats must reach the replica first.
    let healthy = wait_for(&mut verdict, Duration::from_secs(15), clear)
        .await
        .unwrap_or_else(|last| panic!("replica never measured healthy; last verdict: {last:?}"));
    assert!(healthy.replica_lag.is_some(), "{healthy:?}");

    let mut stopped = StoppedSqlThread::stop().await;
    let lagging = wait_for(&mut verdict, Duration::from_secs(5), throttled_by("lag=")).await;
    // Restart before asserting anything: the replica is shared by every test.
    let restarted = stopped.start().await;
    let caught_up = wait_for(&mut verdict, Duration::from_secs(10), clear).await;
    throttler.abort();
    heartbeat.abort();
    let _ = admin.disconnect().await;

    restarted.expect("starting replication on the replica again");
    let lagging =
        lagging.unwrap_or_else(|last| panic!("no lag throttle within 5s; last verdict: {last:?}"));
    assert!(
        lagging.reason.contains(&common::replica().endpoint()),
        "{lagging:?}"
    );
    assert!(
        lagging
            .replica_lag
            .is_some_and(|lag| lag >= Duration::from_secs(1)),
        "{lagging:?}"
    );
    caught_up.unwrap_or_else(|last| panic!("throttle never cleared; last verdict: {last:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_load_throttles_until_the_threshold_is_raised() {
    let schema = common::TestSchema::create("thr_load").await;
    let (controls, controls_rx) = watch::channel(Controls {
        // This very throttler holds a connection, so the threshold is always reached.
        max_load: vec![("Threads_connected".into(), 1)],
        ..Controls::default()
    });
    let (mut verdict, throttler) = spawn_throttler(settings(Some(&schema.name)), controls_rx);

    let v = expect(
        &mut verdict,
        "a max-load throttle",
        throttled_by("max-load Threads_connected="),
    )
    .await;
    assert!(v.reason.ends_with(">= 1"), "{v:?}");
    assert_eq!(v.critical, None);

    controls.send_modify(|c| c.max_load = vec![("Threads_connected".into(), 1_000_000)]);
    expect(&mut verdict, "max-load to clear", clear).await;

    controls.send_modify(|c| c.max_load = vec![("No_such_status".into(), 1)]);
    expect(
        &mut verdict,
        "an unknown status variable to throttle",
        throttled_by("max-load check failed"),
    )
    .await;
    throttler.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_query_result_and_failure() {
    let schema = common::TestSchema::create("thr_query").await;
    let (controls, controls_rx) = watch::channel(Controls {
        throttle_query: Some("SELECT 1".into()),
        ..Controls::default()
    });
    let (mut verdict, throttler) = spawn_throttler(settings(Some(&schema.name)), controls_rx);

    expect(
        &mut verdict,
        "SELECT 1 to throttle",
        throttled_by("throttle-query returned 1"),
    )
    .await;

    controls.send_modify(|c| c.throttle_query = Some("SELECT 0".into()));
    expect(&mut verdict, "SELECT 0 to clear", clear).await;

    controls.send_modify(|c| c.throttle_query = Some("SELEC nonsense".into()));
    let v = expect(
        &mut verdict,
        "an invalid query to throttle",
        throttled_by("throttle-query failed"),
    )
    .await;
    assert!(v.reason.contains("1064"), "{v:?}");

    // No row means "not busy".
    controls.send_modify(|c| c.throttle_query = Some("SELECT 1 FROM DUAL WHERE 1 = 0".into()));
    expect(&mut verdict, "an empty result to clear", clear).await;
    throttler.abort();
}

/// Removes the flag file even when the test fails.
struct FlagFile(PathBuf);

impl Drop for FlagFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_file_throttles_while_it_exists() {
    let flag = FlagFile(std::env::temp_dir().join(format!(
        "ghost-throttle-test-{:08x}.flag",
        rand::random::<u32>()
    )));
    let mut settings = settings(None);
    settings.additional_flag_file = Some(flag.0.clone());
    let (_controls, controls_rx) = watch::channel(Controls::default());
    let (mut verdict, throttler) = spawn_throttler(settings, controls_rx);

    expect(&mut verdict, "no throttle without the file", clear).await;
    std::fs::write(&flag.0, b"").expect("create flag file");
    let v = expect(
        &mut verdict,
        "a flag-file throttle",
        throttled_by("flag-file "),
    )
    .await;
    assert_eq!(v.reason, format!("flag-file {}", flag.0.display()));
    std::fs::remove_file(&flag.0).expect("remove flag file");
    expect(&mut verdict, "the throttle to clear", clear).await;
    throttler.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_throttle_is_immediate() {
    let (controls, controls_rx) = watch::channel(Controls::default());
    let (mut verdict, throttler) = spawn_throttler(settings(None), controls_rx);

    expect(&mut verdict, "no throttle", clear).await;
    controls.send_modify(|c| c.throttle = true);
    let v = expect(&mut verdict, "a user throttle", |v| v.throttled).await;
    assert_eq!(v.reason, "commanded by user");
    controls.send_modify(|c| c.throttle = false);
    expect(&mut verdict, "the throttle to clear", clear).await;
    throttler.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_control_replica_throttles() {
    let (controls, controls_rx) = watch::channel(Controls {
        throttle_control_replicas: vec!["127.0.0.1:1".into()],
        ..Controls::default()
    });
    let (mut verdict, throttler) = spawn_throttler(settings(None), controls_rx);

    let v = expect(&mut verdict, "an unmeasurable replica to throttle", |v| {
        v.throttled
            && v.reason.starts_with("lag unknown on 127.0.0.1:1: ")
            && !v.reason.ends_with("not measured yet")
    })
    .await;
    assert_eq!(v.replica_lag, None, "{v:?}");

    controls.send_modify(|c| c.throttle_control_replicas.clear());
    expect(
        &mut verdict,
        "the throttle to clear without the replica",
        clear,
    )
    .await;
    throttler.abort();
}

/// A minimal HTTP server answering every request with 200 or 503.
async fn status_server(healthy: Arc<AtomicBool>) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let healthy = healthy.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let status = if healthy.load(Ordering::SeqCst) {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let response =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/throttle"), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_http_follows_the_status() {
    let healthy = Arc::new(AtomicBool::new(false));
    let (url, server) = status_server(healthy.clone()).await;
    let (controls, controls_rx) = watch::channel(Controls {
        throttle_http: Some(url),
        ..Controls::default()
    });
    let (mut verdict, throttler) = spawn_throttler(settings(None), controls_rx);

    let v = expect(&mut verdict, "503 to throttle", throttled_by("http status")).await;
    assert_eq!(v.reason, "http status 503");
    healthy.store(true, Ordering::SeqCst);
    expect(&mut verdict, "200 to clear", clear).await;

    controls.send_modify(|c| c.throttle_http = Some("http://127.0.0.1:1/".into()));
    expect(
        &mut verdict,
        "a refused connection to throttle",
        throttled_by("http error"),
    )
    .await;
    throttler.abort();

    let mut ignoring = settings(None);
    ignoring.ignore_http_errors = true;
    let (_controls, controls_rx) = watch::channel(Controls {
        throttle_http: Some("http://127.0.0.1:1/".into()),
        ..Controls::default()
    });
    let (mut verdict, throttler) = spawn_throttler(ignoring, controls_rx);
    expect(&mut verdict, "errors to be ignored", clear).await;
    throttler.abort();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_load_aborts_or_hibernates() {
    let schema = common::TestSchema::create("thr_crit").await;
    let critical = Controls {
        critical_load: vec![("Threads_connected".into(), 1)],
        ..Controls::default()
    };

    let (_controls, controls_rx) = watch::channel(critical.clone());
    let (mut verdict, throttler) = spawn_throttler(settings(Some(&schema.name)), controls_rx);
    let v = expect(&mut verdict, "critical load", |v| v.critical.is_some()).await;
    let reason = v.critical.clone().unwrap_or_default();
    assert!(
        reason.starts_with("critical-load Threads_connected=") && reason.ends_with(">= 1"),
        "{v:?}"
    );
    assert!(v.throttled, "{v:?}");
    throttler.abort();

    let mut hibernating = settings(Some(&schema.name));
    hibernating.critical_load_hibernate = Duration::from_secs(2);
    let (_controls, controls_rx) = watch::channel(critical);
    let (mut verdict, throttler) = spawn_throttler(hibernating, controls_rx);
    let v = expect(&mut verdict, "hibernation", |v| v.hibernating()).await;
    assert_eq!(v.reason, "critical-load hibernation");
    assert_eq!(v.critical, None, "hibernation replaces the abort");
    throttler.abort();
}
