//! Tier-5 journeys (DESIGN.md §4): the operator against a real kube-apiserver and
//! kube-controller-manager on loopback (`e2e/k8s/cluster.sh`), engine pods run by the test's node
//! agent (`tests/e2e/node_agent.rs`), tables on the local MariaDB topology
//! (`e2e/mariadb/topology.sh`).
//!
//! Nothing runs with more rights than in a real cluster: the operator is `ghost operator` as a
//! child process with a kubeconfig holding a token of the `ghost-operator` ServiceAccount, and
//! every engine pod gets a token of its pod's ServiceAccount (`ghost-engine`). A missing RBAC
//! verb in `config/rbac` fails a journey.
//!
//! Setup shared by the journeys, behind one tokio Mutex (journeys run one at a time: they share
//! the node name, the operator's namespace and the database server):
//! - once per test binary: `cluster.sh start` (idempotent; builds the binaries when not cached)
//!   and `cluster.sh env`, then the namespace, the CRD and the RBAC of `config/default`. The
//!   Deployment of `config/manager` is left out on purpose: the operator runs here as a child
//!   process, and a Deployment would leave a second, Pending operator pod behind;
//! - per journey: the operator child process and the node agent. A `#[tokio::test]` runtime ends
//!   with its test, and the agent's tasks with it, so they cannot be shared between journeys.
//!
//! Journeys to come, in this order (each its own #[tokio::test], same harness):
//! - throttle: `ghost/throttle=true` annotation → condition Throttled, Event ControlsChanged,
//!   copying stops (rowsCopied stays), removing it resumes and the migration succeeds;
//! - postpone: `spec.cutOver.postpone: true` → phase Postponed with the copy at 100 %, then
//!   setting it to false (or the annotation) cuts over;
//! - panic: `ghost/panic` annotation → engine exits 3, phase Cancelled, ghost tables dropped;
//! - invalid spec: CEL rejections at `kubectl apply` (immutable fields, bad alter), and a
//!   missing Secret key → Event SecretKeyMissing, no Job;
//! - delete running: `kubectl delete smig` mid-copy → the finalizer waits for the pod, the
//!   node agent SIGTERMs the engine, ghost tables dropped, the resource gone;
//! - two on one table: the second waits (Queued) until the first is done (max-per-host 1);
//! - pod deleted mid-copy: the Job makes a new pod, which resumes from the checkpoint;
//! - re-apply: applying the same finished resource again does not start a second engine.

mod common;

#[path = "e2e/node_agent.rs"]
mod node_agent;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use mysql_async::prelude::Queryable;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use node_agent::{AgentOptions, NodeAgent};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const GHOST: &str = env!("CARGO_BIN_EXE_ghost");
/// The operator's namespace; the engine ServiceAccount and its RoleBinding are there too, so the
/// journeys' migrations live in it.
const NAMESPACE: &str = "ghost-system";
const OPERATOR_SERVICE_ACCOUNT: &str = "ghost-operator";
const NODE: &str = "ghost-e2e-node";
/// Marks everything a journey creates, for the cleanup.
const E2E_LABEL: &str = "ghost.dev/e2e";
const WAIT_SUCCEEDED: &str = "120s";

/// What `cluster.sh env` reports, plus whether config/ is applied.
#[allow(dead_code)]
#[derive(Clone, Debug)]
struct Cluster {
    kubeconfig: PathBuf,
    bin_dir: PathBuf,
    run_dir: PathBuf,
    server: String,
    ca_pem: String,
    installed: bool,
}

static CLUSTER: tokio::sync::Mutex<Option<Cluster>> = tokio::sync::Mutex::const_new(None);

fn elapsed(since: Instant) -> String {
    format!("{:.1}s", since.elapsed().as_secs_f64())
}

// ------------------------------------------------------------------------------ commands

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn run(program: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(REPO)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("stdin of {}: {e}", program.display()));
        drop(pipe);
    }
    let out = child
        .wait_with_output()
        .await
        .unwrap_or_else(|e| panic!("wait for {}: {e}", program.display()));
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn cluster_sh(command: &str) -> Output {
    let script = Path::new(REPO).join("e2e/k8s/cluster.sh");
    let script = script.display().to_string();
    run(Path::new("bash"), &[script.as_str(), command], None, &[]).await
}

impl Cluster {
    fn kubectl_path(&self) -> PathBuf {
        self.bin_dir.join("kubectl")
    }

    /// kubectl as the admin.
    async fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let kubeconfig = self.kubeconfig.display().to_string();
        let mut full = vec!["--kubeconfig", kubeconfig.as_str()];
        full.extend_from_slice(args);
        run(&self.kubectl_path(), &full, stdin, &[]).await
    }

    /// kubectl that must succeed; returns stdout.
    async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_in(args, stdin).await;
        assert!(
            out.ok,
            "kubectl {} failed:\n{}\n{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    async fn admin_client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.kubeconfig.display()));
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("admin kubeconfig");
        Client::try_from(config).expect("admin client")
    }
}

/// `export NAME=value` lines (values quoted by bash's printf %q) → map.
fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|rest| rest.split_once('='))
        .map(|(name, value)| (name.to_string(), unquote(value)))
        .collect()
}

fn unquote(value: &str) -> String {
    if let Some(inner) = value.strip_prefix("$'").and_then(|v| v.strip_suffix('\'')) {
        return inner.to_string();
    }
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.to_string();
    }
    // Backslash escapes of %q.
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts (or finds) the cluster and installs config/ once; later calls reuse it.
async fn cluster(slot: &mut Option<Cluster>) -> Cluster {
    if let Some(cluster) = slot.as_ref() {
        return cluster.clone();
    }
    let t0 = Instant::now();
    let start = cluster_sh("start").await;
    assert!(
        start.ok,
        "e2e/k8s/cluster.sh start failed (build the binaries with e2e/k8s/build.sh):\n{}\n{}",
        start.stdout, start.stderr
    );
    let env = cluster_sh("env").await;
    assert!(env.ok, "e2e/k8s/cluster.sh env failed: {}", env.stderr);
    let vars = parse_env(&env.stdout);
    let var = |name: &str| {
        vars.get(name)
            .cloned()
            .unwrap_or_else(|| panic!("cluster.sh env did not print {name}:\n{}", env.stdout))
    };
    let ca_path = var("GHOST_K8S_CA");
    let mut cluster = Cluster {
        kubeconfig: PathBuf::from(var("KUBECONFIG")),
        bin_dir: PathBuf::from(var("GHOST_K8S_BIN_DIR")),
        run_dir: PathBuf::from(var("GHOST_K8S_RUN_DIR")),
        server: var("GHOST_K8S_SERVER"),
        ca_pem: std::fs::read_to_string(&ca_path).unwrap_or_else(|e| panic!("read {ca_path}: {e}")),
        installed: false,
    };
    eprintln!(
        "journeys: cluster up in {} ({})",
        elapsed(t0),
        cluster.server
    );

    // The namespace, the CRD and the RBAC of config/default, without config/manager.
    let t1 = Instant::now();
    cluster
        .kubectl(
            &[
                "apply",
                "--server-side",
                "-f",
                "config/default/namespace.yaml",
            ],
            None,
        )
        .await;
    cluster
        .kubectl(&["apply", "--server-side", "-k", "config/crd"], None)
        .await;
    cluster
        .kubectl(&["apply", "--server-side", "-k", "config/rbac"], None)
        .await;
    cluster
        .kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd/schemamigrations.ghost.dev",
                "--timeout=60s",
            ],
            None,
        )
        .await;
    cluster.installed = true;
    eprintln!("journeys: CRD and RBAC installed in {}", elapsed(t1));
    *slot = Some(cluster.clone());
    cluster
}

// ------------------------------------------------------------------------------ per journey

/// The operator child process and the node agent of one journey.
#[allow(dead_code)]
struct Stack {
    admin: Client,
    operator: tokio::process::Child,
    operator_pid: u32,
    operator_log: PathBuf,
    agent: Option<NodeAgent>,
    dir: PathBuf,
}

impl Stack {
    async fn start(cluster: &Cluster, journey: &str) -> Stack {
        let stamp = Instant::now();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("k8s-journeys")
            .join(format!(
                "{journey}-{}-{}",
                std::process::id(),
                chrono::Utc::now().format("%H%M%S%3f")
            ));
        std::fs::create_dir_all(&dir).expect("journey dir");
        let admin = cluster.admin_client().await;

        // The node agent first, so the first engine pod is bound at once.
        let t0 = Instant::now();
        let options = AgentOptions {
            server: cluster.server.clone(),
            ca_pem: Some(cluster.ca_pem.clone()),
            work_dir: dir.join("node"),
            ..AgentOptions::from_env(NODE)
        };
        let agent = NodeAgent::start_with(
            admin.clone(),
            NODE,
            vec![("ghost".to_string(), PathBuf::from(GHOST))],
            options,
        )
        .await
        .expect("start the node agent");
        eprintln!("journeys: node agent up in {}", elapsed(t0));

        // The operator with its own ServiceAccount's token.
        let t1 = Instant::now();
        let token = node_agent::service_account_token(
            &admin,
            NAMESPACE,
            OPERATOR_SERVICE_ACCOUNT,
            None,
            3600,
        )
        .await
        .expect("token of the operator's ServiceAccount");
        let kubeconfig = node_agent::write_kubeconfig(
            &dir.join("operator"),
            &cluster.server,
            &cluster.ca_pem,
            &token,
            NAMESPACE,
            &format!("system:serviceaccount:{NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"),
        )
        .expect("operator kubeconfig");
        let metrics = free_port();
        let operator_log = dir.join("operator.log");
        let log = std::fs::File::create(&operator_log).expect("operator log");
        let log_err = log.try_clone().expect("operator log");
        let metrics_addr = format!("127.0.0.1:{metrics}");
        let mut command = tokio::process::Command::new(GHOST);
        command
            .args([
                "operator",
                "--metrics-addr",
                metrics_addr.as_str(),
                "--engine-image",
                "ghost:e2e",
                "--engine-service-account",
                "ghost-engine",
                "--max-per-host",
                "1",
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.display().to_string())
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", "ghost-operator-e2e")
            .env("POD_NAMESPACE", NAMESPACE)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        let mut operator = command.spawn().expect("spawn ghost operator");
        let operator_pid = operator.id().unwrap_or(0);

        // Ready when /readyz answers 200.
        let url = format!("http://127.0.0.1:{metrics}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = operator.try_wait() {
                panic!(
                    "ghost operator exited with {status} before it was ready:\n{}",
                    std::fs::read_to_string(&operator_log).unwrap_or_default()
                );
            }
            if let Ok(response) = reqwest::get(&url).await {
                if response.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "ghost operator not ready after 60 s:\n{}",
                std::fs::read_to_string(&operator_log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!(
            "journeys: operator (pid {operator_pid}, ServiceAccount {NAMESPACE}/{OPERATOR_SERVICE_ACCOUNT}) ready in {}; stack up in {}",
            elapsed(t1),
            elapsed(stamp)
        );
        Stack {
            admin,
            operator,
            operator_pid,
            operator_log,
            agent: Some(agent),
            dir,
        }
    }

    fn agent(&self) -> &NodeAgent {
        self.agent.as_ref().expect("the agent runs until stop")
    }

    /// Prints the operator's and the pods' logs (on failure).
    fn dump_logs(&self) {
        eprintln!(
            "----- operator log ({}) -----\n{}",
            self.operator_log.display(),
            std::fs::read_to_string(&self.operator_log).unwrap_or_default()
        );
        for log in self.agent().log_files() {
            eprintln!(
                "----- pod log ({}) -----\n{}",
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    /// Deletes what the journeys labelled (while the operator still runs, so its finalizer
    /// completes), then stops the operator by pid and the agent.
    async fn stop(mut self, cluster: &Cluster) {
        let t0 = Instant::now();
        let selector = format!("{E2E_LABEL}=true");
        let deleted = cluster
            .kubectl_in(
                &[
                    "-n",
                    NAMESPACE,
                    "delete",
                    "schemamigrations.ghost.dev",
                    "-l",
                    selector.as_str(),
                    "--wait=true",
                    "--timeout=60s",
                ],
                None,
            )
            .await;
        if !deleted.ok {
            eprintln!(
                "journeys: deleting the SchemaMigrations failed ({}); removing their finalizers",
                deleted.stderr.trim()
            );
            let names = cluster
                .kubectl_in(
                    &[
                        "-n",
                        NAMESPACE,
                        "get",
                        "schemamigrations.ghost.dev",
                        "-l",
                        selector.as_str(),
                        "-o",
                        "name",
                    ],
                    None,
                )
                .await;
            for name in names.stdout.lines().filter(|l| !l.trim().is_empty()) {
                let _ = cluster
                    .kubectl_in(
                        &[
                            "-n",
                            NAMESPACE,
                            "patch",
                            name.trim(),
                            "--type=merge",
                            "-p",
                            r#"{"metadata":{"finalizers":null}}"#,
                        ],
                        None,
                    )
                    .await;
            }
        }
        let _ = cluster
            .kubectl_in(
                &[
                    "-n",
                    NAMESPACE,
                    "delete",
                    "secret",
                    "-l",
                    selector.as_str(),
                    "--wait=false",
                ],
                None,
            )
            .await;

        // The operator: SIGTERM by pid, SIGKILL after 20 s.
        if self.operator_pid != 0 {
            let pid = self.operator_pid.to_string();
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", pid.as_str()])
                .status()
                .await;
            match tokio::time::timeout(Duration::from_secs(20), self.operator.wait()).await {
                Ok(status) => eprintln!("journeys: operator exited: {status:?}"),
                Err(_) => {
                    eprintln!("journeys: operator still runs after 20 s: SIGKILL");
                    let _ = tokio::process::Command::new("kill")
                        .args(["-KILL", pid.as_str()])
                        .status()
                        .await;
                    let _ = self.operator.wait().await;
                }
            }
        }
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
        eprintln!(
            "journeys: cleaned up in {} (logs kept in {})",
            elapsed(t0),
            self.dir.display()
        );
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("local addr").port()
}

/// Ends a journey: prints the logs and the cluster state when it failed, always cleans up,
/// then re-raises the journey's panic.
async fn finish(
    name: &str,
    t0: Instant,
    cluster: &Cluster,
    stack: Stack,
    result: std::thread::Result<()>,
) {
    if result.is_err() {
        stack.dump_logs();
        let diagnostics = cluster
            .kubectl_in(
                &[
                    "-n",
                    NAMESPACE,
                    "get",
                    "schemamigrations.ghost.dev,jobs,pods,events",
                    "-o",
                    "wide",
                ],
                None,
            )
            .await;
        eprintln!(
            "----- cluster state -----\n{}{}",
            diagnostics.stdout, diagnostics.stderr
        );
    }
    stack.stop(cluster).await;
    eprintln!("journeys: {name} took {} in all", elapsed(t0));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

// ------------------------------------------------------------------------------ journeys

const ROWS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_add_column() {
    // One journey at a time; the guard is held to the end.
    let mut slot = CLUSTER.lock().await;
    let t0 = Instant::now();
    let cluster = cluster(&mut slot).await;
    let stack = Stack::start(&cluster, "basic").await;
    let result = std::panic::AssertUnwindSafe(basic(&cluster, &stack))
        .catch_unwind()
        .await;
    finish("basic", t0, &cluster, stack, result).await;
}

/// Add a column to a 3000-row table: Succeeded, the column is there, the status reports 100 %,
/// the rows and the cut-over's lock time, and the Events tell the phases.
async fn basic(cluster: &Cluster, stack: &Stack) {
    let suffix = format!("{:08x}", rand::random::<u32>());
    let smig = format!("basic-{suffix}");
    let secret = format!("basic-{suffix}-db");

    // A table on the primary.
    let schema = common::TestSchema::create("k8s_basic").await;
    let mut conn = schema
        .admin_config()
        .connect()
        .await
        .expect("connect as admin");
    conn.query_drop(
        "CREATE TABLE users (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         name VARCHAR(64) NOT NULL, created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )
    .await
    .expect("create table");
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk.iter().map(|i| format!("('user-{i}')")).collect();
        conn.query_drop(format!(
            "INSERT INTO users (name) VALUES {}",
            values.join(",")
        ))
        .await
        .expect("insert rows");
    }

    // The engine's credentials, and the migration.
    let db = common::primary();
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: {secret}
  namespace: {NAMESPACE}
  labels: {{"{E2E_LABEL}": "true"}}
type: Opaque
stringData:
  username: {user}
  password: {password}
---
apiVersion: ghost.dev/v1alpha1
kind: SchemaMigration
metadata:
  name: {smig}
  namespace: {NAMESPACE}
  labels: {{"{E2E_LABEL}": "true"}}
spec:
  connection:
    host: "{host}"
    port: {port}
    database: {database}
    credentialsSecretRef:
      name: {secret}
      usernameKey: username
      passwordKey: password
  table: users
  alter: "ADD COLUMN age INT NOT NULL DEFAULT 0"
"#,
        user = serde_json::to_string(&db.user).expect("json string"),
        password = serde_json::to_string(db.password.expose()).expect("json string"),
        host = db.host,
        port = db.port,
        database = schema.name,
    );
    let target = format!("schemamigrations.ghost.dev/{smig}");
    let timeout = format!("--timeout={WAIT_SUCCEEDED}");
    let applied = Instant::now();
    cluster
        .kubectl(&["apply", "-f", "-"], Some(manifest.as_str()))
        .await;
    let waited = cluster
        .kubectl_in(
            &[
                "-n",
                NAMESPACE,
                "wait",
                "--for=condition=Succeeded",
                target.as_str(),
                timeout.as_str(),
            ],
            None,
        )
        .await;
    let migrate_time = applied.elapsed();
    assert!(
        waited.ok,
        "{smig} did not succeed within {WAIT_SUCCEEDED}:\n{}{}\n{}",
        waited.stdout,
        waited.stderr,
        cluster
            .kubectl_in(
                &["-n", NAMESPACE, "get", "smig", smig.as_str(), "-o", "yaml"],
                None
            )
            .await
            .stdout
    );
    eprintln!(
        "journeys: basic: {smig} Succeeded {:.1}s after kubectl apply",
        migrate_time.as_secs_f64()
    );

    // The table has the column.
    let columns: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'users' ORDER BY ORDINAL_POSITION",
            (schema.name.as_str(),),
        )
        .await
        .expect("read columns");
    assert!(
        columns.iter().any(|c| c == "age"),
        "no column age in {columns:?}"
    );
    let count: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM users")
        .await
        .expect("count rows");
    assert_eq!(count, Some(ROWS as u64), "rows after the migration");

    // The status: phase, progress 100 %, rows, lock time.
    let text = cluster
        .kubectl(
            &["-n", NAMESPACE, "get", "smig", smig.as_str(), "-o", "json"],
            None,
        )
        .await;
    let smig_json: Value = serde_json::from_str(&text).expect("smig json");
    let status = &smig_json["status"];
    assert_eq!(status["phase"], "Succeeded", "status: {status:#}");
    let progress = &status["progress"];
    assert_eq!(
        progress["percent"].as_f64(),
        Some(100.0),
        "progress: {progress:#}"
    );
    let rows = progress["rowsCopied"].as_i64().unwrap_or(-1);
    assert!(
        rows >= ROWS as i64,
        "rowsCopied {rows} < {ROWS}: {progress:#}"
    );
    let lock_millis = progress["cutOver"]["lockMillis"].as_i64();
    assert!(
        lock_millis.is_some_and(|ms| ms >= 0),
        "no cut-over lock time: {progress:#}"
    );
    let job = status["job"].as_str().unwrap_or_default().to_string();
    assert!(!job.is_empty(), "status.job is empty: {status:#}");
    eprintln!(
        "journeys: basic: rowsCopied {rows}, cut-over lock {} ms, job {job}",
        lock_millis.unwrap_or(-1)
    );

    // The engine ran as a pod of that Job, on the agent's node, and exited 0.
    let runs = stack.agent().runs();
    let run = runs
        .iter()
        .find(|r| r.name.starts_with(&format!("{job}-")))
        .unwrap_or_else(|| panic!("the node agent ran no pod of Job {job}: {runs:?}"));
    assert_eq!(run.exit_code, Some(0), "engine pod {}: {run:?}", run.name);

    // Events: the Job's creation and the phase changes, ending with Succeeded. Events are
    // published after the status, so give them a moment.
    let field = format!("involvedObject.name={smig}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let reasons = loop {
        let text = cluster
            .kubectl(
                &[
                    "-n",
                    NAMESPACE,
                    "get",
                    "events",
                    "--field-selector",
                    field.as_str(),
                    "-o",
                    "json",
                ],
                None,
            )
            .await;
        let list: Value = serde_json::from_str(&text).expect("events json");
        let reasons: Vec<String> = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|e| e["reason"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let complete =
            reasons.iter().any(|r| r == "JobCreated") && reasons.iter().any(|r| r == "Succeeded");
        if complete || Instant::now() >= deadline {
            break reasons;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "journeys: basic: events {reasons:?}\n{}",
        cluster
            .kubectl(
                &[
                    "-n",
                    NAMESPACE,
                    "get",
                    "events",
                    "--field-selector",
                    field.as_str()
                ],
                None
            )
            .await
    );
    assert!(
        reasons.iter().any(|r| r == "JobCreated"),
        "no JobCreated event: {reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r == "Succeeded"),
        "no Succeeded event: {reasons:?}"
    );
    let phases = reasons
        .iter()
        .filter(|r| !matches!(r.as_str(), "JobCreated" | "ControlsChanged"))
        .count();
    assert!(
        phases >= 2,
        "expected several phase changes, got {reasons:?}"
    );

    // Delete it while the operator runs (its finalizer), and measure it.
    let t_delete = Instant::now();
    cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "delete",
                "smig",
                smig.as_str(),
                "--wait=true",
                "--timeout=60s",
            ],
            None,
        )
        .await;
    eprintln!("journeys: basic: {smig} deleted in {}", elapsed(t_delete));
    let _ = conn.disconnect().await;
    drop(schema);
}

#[test]
fn parse_cluster_env() {
    let vars = parse_env(
        "export KUBECONFIG=/root/.cache/ghost/k8s/run/admin.kubeconfig\n\
         export PATH=/x/bin:\"$PATH\"\n\
         export GHOST_K8S_SERVER=https://127.0.0.1:26443\n\
         export GHOST_K8S_CA=/a\\ b/ca.crt\n",
    );
    assert_eq!(
        vars["KUBECONFIG"],
        "/root/.cache/ghost/k8s/run/admin.kubeconfig"
    );
    assert_eq!(vars["GHOST_K8S_SERVER"], "https://127.0.0.1:26443");
    assert_eq!(vars["GHOST_K8S_CA"], "/a b/ca.crt");
}
