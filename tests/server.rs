//! The interactive front ends end to end, without a database: a control plane over watch
//! channels, the unix socket, TCP and HTTP servers on real sockets, and `ghost ctl` as a
//! process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ghost::engine::controls::Controls;
use ghost::engine::position::{BinlogCoordinates, BinlogPosition};
use ghost::engine::progress::{Phase, Progress, ThrottleState};
use ghost::server::{ControlPlane, MigrationIdentity, http, socket};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Harness {
    dir: PathBuf,
    socket: PathBuf,
    flag_file: PathBuf,
    tcp_port: u16,
    http_port: u16,
    plane: ControlPlane,
    _controls: watch::Receiver<Controls>,
    _progress: watch::Sender<Progress>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    async fn start() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ghost-server-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("ghost.sock");
        let flag_file = dir.join("postpone.flag");
        std::fs::write(&flag_file, b"").unwrap();

        let (controls_tx, controls_rx) = watch::channel(Controls {
            postpone_cut_over: true,
            ..Controls::default()
        });
        let (progress_tx, progress_rx) = watch::channel(Progress {
            phase: Phase::Copying,
            rows_copied: 250,
            rows_estimate: 1000,
            rows_per_second: 50.0,
            events_applied: 12,
            backlog: 2,
            eta_seconds: Some(15),
            heartbeat_lag_millis: Some(200),
            replica_lag_millis: Some(300),
            throttle: ThrottleState::default(),
            applied_position: Some(BinlogPosition {
                coordinates: BinlogCoordinates::new("mysql-bin.000002", 1234),
                gtid: None,
            }),
            ..Progress::default()
        });
        let identity = MigrationIdentity {
            postpone_flag_file: Some(flag_file.clone()),
            ..MigrationIdentity::new("shop", "users")
        };
        let plane = ControlPlane::new(controls_tx, progress_rx, identity);

        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_port = tcp.local_addr().unwrap().port();
        let web = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_port = web.local_addr().unwrap().port();
        let tasks = vec![
            tokio::spawn(socket::serve_unix(socket.clone(), plane.clone())),
            tokio::spawn(socket::serve_tcp_listener(tcp, plane.clone())),
            tokio::spawn(http::serve_http_listener(web, plane.clone())),
        ];
        wait_for(|| socket.exists()).await;
        Harness {
            dir,
            socket,
            flag_file,
            tcp_port,
            http_port,
            plane,
            _controls: controls_rx,
            _progress: progress_tx,
            tasks,
        }
    }

    fn controls(&self) -> Controls {
        self.plane.controls.borrow().clone()
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    async fn unix(&self, line: &str) -> String {
        let mut stream = UnixStream::connect(&self.socket).await.unwrap();
        stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }

    async fn tcp(&self, line: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.tcp_port))
            .await
            .unwrap();
        stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_for(mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ctl(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ghost"))
        .arg("ctl")
        .args(args)
        .output()
        .await
        .expect("run ghost ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_commands_change_controls_and_report_status() {
    let h = Harness::start().await;

    let status = h.unix("status").await;
    assert!(
        status.starts_with("# Migrating `shop`.`users`; phase: Copying\n"),
        "{status}"
    );
    assert!(
        status.contains("Copy: 250/1000 25.0%; Applied: 12; Backlog: 2; Time: "),
        "{status}"
    );
    assert!(status.contains("streamer: mysql-bin.000002:1234; Lag: 0.30s, HeartbeatLag: 0.20s, State: migrating; ETA: 15s"));
    assert!(status.ends_with('\n'));

    let reply = h.unix("chunk-size=500").await;
    assert!(reply.contains("# chunk-size: 500;"), "{reply}");
    assert_eq!(h.controls().chunk_size, 500);
    assert_eq!(h.unix("chunk-size=?").await, "500\n");

    let reply = h.unix("throttle").await;
    assert!(
        reply.starts_with("# Note: you may only throttle"),
        "{reply}"
    );
    assert!(h.controls().throttle);
    h.unix("no-throttle").await;
    assert!(!h.controls().throttle);

    assert!(h.flag_file.exists());
    let reply = h.unix("unpostpone").await;
    assert!(reply.starts_with("Unpostponed"), "{reply}");
    assert!(
        !h.flag_file.exists(),
        "unpostpone removes the postpone flag file"
    );
    let c = h.controls();
    assert!(c.cut_over_requested && !c.postpone_cut_over);

    assert_eq!(h.unix("coordinates").await, "mysql-bin.000002:1234\n");
    assert_eq!(h.unix("bogus").await, "unknown command: bogus\n");
    assert_eq!(
        h.unix("chunk-size=lots").await,
        "invalid chunk-size: \"lots\" is not a whole number\n"
    );
    assert_eq!(h.controls().chunk_size, 500);

    let reply = h.unix("throttle-query=\"select 1\"").await;
    assert!(reply.contains("# throttle-query: select 1"), "{reply}");
    assert_eq!(h.controls().throttle_query.as_deref(), Some("select 1"));

    let reply = h.unix("panic").await;
    assert!(reply.starts_with("Panic: aborting"), "{reply}");
    assert!(h.controls().panic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_speaks_the_same_protocol() {
    let h = Harness::start().await;
    let reply = h.tcp("sup").await;
    assert!(reply.starts_with("Copy: 250/1000"), "{reply}");
    assert_eq!(reply.lines().count(), 1);

    h.tcp("pause").await;
    assert!(h.controls().throttle);
    h.tcp("resume").await;
    assert!(!h.controls().throttle);
    h.tcp("max-lag-millis=20").await;
    assert_eq!(h.tcp("max-lag-millis=?").await, "100\n");

    // A client that sends the line without a newline and closes its side still gets a reply.
    let mut stream = TcpStream::connect(("127.0.0.1", h.tcp_port)).await.unwrap();
    stream.write_all(b"dml-batch-size=?").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "1000\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_status_actions_controls_and_metrics() {
    let h = Harness::start().await;
    let client = reqwest::Client::new();

    let status: Value = client
        .get(h.http_url("/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["database"], "shop");
    assert_eq!(status["table"], "users");
    assert_eq!(status["progress"]["phase"], "Copying");
    assert_eq!(status["progress"]["rowsCopied"], 250);
    assert_eq!(status["progress"]["rowsEstimate"], 1000);
    assert_eq!(status["progress"]["percent"], 25.0);
    assert_eq!(
        status["progress"]["appliedPosition"],
        "mysql-bin.000002:1234"
    );
    assert_eq!(status["controls"]["chunkSize"], 1000);
    assert_eq!(status["controls"]["postponeCutOver"], true);
    assert!(
        status["statusLine"]
            .as_str()
            .unwrap()
            .starts_with("Copy: 250/1000")
    );

    let response = client
        .post(h.http_url("/api/throttle"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ok"], true);
    assert!(body["message"].as_str().unwrap().starts_with("Throttled"));
    assert!(h.controls().throttle);

    let response = client
        .post(h.http_url("/api/no-throttle?table=orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert!(h.controls().throttle);

    let response = client
        .put(h.http_url("/api/controls"))
        .body(r#"{"chunkSize": 2000, "maxLoad": "nonsense"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ok"], false);
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("invalid max-load: "), "{message}");
    assert!(!message.contains('\n'));
    assert_eq!(h.controls().chunk_size, 1000, "a bad PUT changes nothing");

    let response = client
        .put(h.http_url("/api/controls"))
        .body(r#"{"chunkSize": 2000, "niceRatio": 0.25, "throttle": false}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["controls"]["chunkSize"], 2000);
    let c = h.controls();
    assert_eq!(
        (c.chunk_size, c.nice_ratio, c.throttle),
        (2000, 0.25, false)
    );

    let response = client
        .post(h.http_url("/api/unpostpone"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(!h.flag_file.exists());
    assert!(h.controls().cut_over_requested);

    let response = client.post(h.http_url("/api/panic")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(h.controls().panic);

    let response = client.get(h.http_url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let metrics = response.text().await.unwrap();
    for name in [
        "ghost_rows_copied_total{",
        "ghost_rows_estimate{",
        "ghost_rows_per_second{",
        "ghost_events_applied_total{",
        "ghost_backlog{",
        "ghost_heartbeat_lag_seconds{",
        "ghost_replica_lag_seconds{",
        "ghost_throttled{",
        "ghost_phase{",
        "ghost_cut_over_attempts{",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    assert!(metrics.contains("database=\"shop\",table=\"users\""));

    let health = client.get(h.http_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let missing = client.get(h.http_url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghost_ctl_talks_to_socket_tcp_and_http() {
    let h = Harness::start().await;
    let socket = path_str(&h.socket);

    let (code, stdout, stderr) = ctl(&["--socket", socket, "status"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Copy: 250/1000 25.0%"), "{stdout}");

    let (code, stdout, _) = ctl(&["--socket", socket, "chunk-size=500"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("# chunk-size: 500;"));
    assert_eq!(h.controls().chunk_size, 500);

    let (code, stdout, _) = ctl(&[
        "--tcp",
        &format!("127.0.0.1:{}", h.tcp_port),
        "chunk-size=?",
    ])
    .await;
    assert_eq!((code, stdout.as_str()), (0, "500\n"));

    let (code, _, stderr) = ctl(&["--socket", socket, "bogus"]).await;
    assert_eq!(code, 1);
    assert_eq!(stderr, "unknown command: bogus\n");

    let base = format!("http://127.0.0.1:{}", h.http_port);
    let (code, stdout, stderr) = ctl(&["--http", &base, "throttle"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("Throttled"), "{stdout}");
    assert!(h.controls().throttle);

    let (code, stdout, _) = ctl(&["--http", &base, "chunk-size=750"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("chunk-size"), "{stdout}");
    assert_eq!(h.controls().chunk_size, 750);

    let (code, stdout, _) = ctl(&["--http", &base, "chunk-size=?"]).await;
    assert_eq!((code, stdout.as_str()), (0, "750\n"));

    let (code, _, stderr) = ctl(&["--http", &base, "max-load=nonsense"]).await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("invalid max-load: "), "{stderr}");

    let (code, stdout, _) = ctl(&["--http", &base, "status"]).await;
    assert_eq!(code, 0);
    let status: Value = serde_json::from_str(&stdout).expect("pretty JSON");
    assert_eq!(status["progress"]["rowsCopied"], 250);

    let (code, _, stderr) = ctl(&["status"]).await;
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = ctl(&["--socket", socket, "--http", &base, "status"]).await;
    assert_eq!(code, 2, "{stderr}");

    let gone = h.dir.join("gone.sock");
    let (code, _, stderr) = ctl(&["--socket", path_str(&gone), "status"]).await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("cannot reach "), "{stderr}");
    assert!(stderr.contains("--serve-socket-file"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_file_is_removed_when_the_server_stops() {
    let h = Harness::start().await;
    assert!(h.socket.exists());
    h.tasks[0].abort();
    wait_for(|| !h.socket.exists()).await;

    // Binding over a live socket file is refused with a hint; the file is left alone.
    let path = h.dir.join("busy.sock");
    let server = tokio::spawn(socket::serve_unix(path.clone(), h.plane.clone()));
    wait_for(|| path.exists()).await;
    let err = socket::serve_unix(path.clone(), h.plane.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("--initially-drop-socket-file"),
        "{err}"
    );
    assert!(path.exists());
    server.abort();
    wait_for(|| !path.exists()).await;
}

/// With a token, every endpoint but /healthz wants it; throttleQuery is refused over HTTP
/// unless SQL controls are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_token_and_sql_controls() {
    use ghost::server::http::HttpAccess;
    let (controls_tx, _controls_rx) = watch::channel(Controls::default());
    let (_progress_tx, progress_rx) = watch::channel(Progress::default());
    let plane = ControlPlane::new(
        controls_tx,
        progress_rx,
        MigrationIdentity::new("shop", "users"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let token = "a-token-of-enough-length";
    let server = tokio::spawn(http::serve_http_listener_with(
        listener,
        plane.clone(),
        HttpAccess {
            token: Some(token.into()),
            allow_sql: false,
        },
    ));
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let mut ready = false;
    for _ in 0..50 {
        if client.get(url("/healthz")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready);
    assert_eq!(
        client.get(url("/healthz")).send().await.unwrap().status(),
        200
    );
    for (bearer, want) in [(None, 401), (Some("wrong"), 401), (Some(token), 200)] {
        let mut req = client.post(url("/api/throttle"));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        assert_eq!(
            req.send().await.unwrap().status(),
            want,
            "bearer {bearer:?}"
        );
    }
    assert!(
        plane.controls.borrow().throttle,
        "the authorised call throttled"
    );
    let denied = client
        .put(url("/api/controls"))
        .bearer_auth(token)
        .body(r#"{"throttleQuery": "DELETE FROM users"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert!(plane.controls.borrow().throttle_query.is_none());
    let allowed = client
        .put(url("/api/controls"))
        .bearer_auth(token)
        .body(r#"{"chunkSize": 777}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(plane.controls.borrow().chunk_size, 777);
    server.abort();
}

/// The live page's server side: `/` is the page (no other site may frame it), `/api/events`
/// pushes the status at once, and a browser request from another site is refused while the
/// page's own (same origin) and non-browser clients (no Origin) are served.
#[tokio::test]
async fn the_page_its_events_and_requests_from_other_sites() {
    let h = Harness::start().await;
    let client = reqwest::Client::new();

    let page = client.get(h.http_url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("api/events"));

    let mut events = client.get(h.http_url("/api/events")).send().await.unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(5), events.chunk())
        .await
        .expect("an event at once")
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.starts_with("event: status\ndata: {"), "{first}");
    assert!(first.contains("\"rowsCopied\":250"), "{first}");
    drop(events);

    let evil = client
        .post(h.http_url("/api/throttle"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    assert!(
        !h.controls().throttle,
        "another site throttled the migration"
    );

    let own_origin = format!("http://127.0.0.1:{}", h.http_port);
    let own = client
        .post(h.http_url("/api/throttle"))
        .header("Origin", own_origin.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert!(h.controls().throttle);
    let plain = client
        .post(h.http_url("/api/no-throttle"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    assert!(!h.controls().throttle);
}
