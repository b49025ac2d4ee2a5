//! The journeys' harness: the cluster of `e2e/k8s/cluster.sh` with config/'s CRD and RBAC, and
//! per journey a "stack": the node agent plus `ghost operator` as a child process holding a token
//! of the operator's ServiceAccount (so RBAC is proven, not assumed).
//!
//! Journeys run one at a time behind [`CLUSTER`]: they share the node name, the operator's
//! namespace and the database server. The cluster is started and config/ applied once per test
//! binary; the stack per journey, because a `#[tokio::test]` runtime ends with its test and the
//! agent's tasks with it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ghost::api::SchemaMigration;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::node_agent::{self, AgentOptions, NodeAgent, PodRun};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The operator's namespace; the engine ServiceAccount and its RoleBinding are there too, so the
/// journeys' migrations live in it.
pub const NAMESPACE: &str = "ghost-system";
pub const OPERATOR_SERVICE_ACCOUNT: &str = "ghost-operator";
pub const NODE: &str = "ghost-e2e-node";
/// Marks everything a journey creates, for the cleanup.
pub const E2E_LABEL: &str = "ghost.dev/e2e";
pub const WAIT_SUCCEEDED: &str = "120s";

/// What `cluster.sh env` reports, plus whether config/ is applied.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
    pub run_dir: PathBuf,
    pub server: String,
    pub ca_pem: String,
    pub installed: bool,
}

pub static CLUSTER: tokio::sync::Mutex<Option<Cluster>> = tokio::sync::Mutex::const_new(None);

/// The journeys' measured figures of the last run, one line each (`.ci/run` prints it).
pub fn summary_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("k8s-journeys")
        .join("summary.txt")
}

pub fn append_summary(line: &str) {
    use std::io::Write;
    let path = summary_path();
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
        })
        .and_then(|mut file| writeln!(file, "{line}"));
    if let Err(e) = written {
        eprintln!("journeys: cannot append to {}: {e}", path.display());
    }
}

pub fn elapsed(since: Instant) -> String {
    format!("{:.1}s", since.elapsed().as_secs_f64())
}

// ------------------------------------------------------------------------------ commands

pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub async fn run(
    program: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Output {
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

pub async fn cluster_sh(command: &str) -> Output {
    cluster_sh_args(&[command]).await
}

pub async fn cluster_sh_args(args: &[&str]) -> Output {
    let script = Path::new(REPO).join("e2e/k8s/cluster.sh");
    let script = script.display().to_string();
    let mut full = vec![script.as_str()];
    full.extend_from_slice(args);
    run(Path::new("bash"), &full, None, &[]).await
}

impl Cluster {
    /// The cluster `script env` printed (`export` lines), not yet set up, and every variable.
    pub fn from_env(script: &str, text: &str) -> (Cluster, HashMap<String, String>) {
        let vars = parse_env(text);
        let var = |name: &str| {
            vars.get(name)
                .cloned()
                .unwrap_or_else(|| panic!("{script} env did not print {name}:\n{text}"))
        };
        let ca_path = var("GHOST_K8S_CA");
        let cluster = Cluster {
            kubeconfig: PathBuf::from(var("KUBECONFIG")),
            bin_dir: PathBuf::from(var("GHOST_K8S_BIN_DIR")),
            run_dir: PathBuf::from(var("GHOST_K8S_RUN_DIR")),
            server: var("GHOST_K8S_SERVER"),
            ca_pem: std::fs::read_to_string(&ca_path)
                .unwrap_or_else(|e| panic!("read {ca_path}: {e}")),
            installed: false,
        };
        (cluster, vars)
    }

    pub fn kubectl_path(&self) -> PathBuf {
        self.bin_dir.join("kubectl")
    }

    /// kubectl as the admin.
    pub async fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let kubeconfig = self.kubeconfig.display().to_string();
        let mut full = vec!["--kubeconfig", kubeconfig.as_str()];
        full.extend_from_slice(args);
        run(&self.kubectl_path(), &full, stdin, &[]).await
    }

    /// The test namespace's migrations, Jobs, pods and Events, for a failed journey.
    pub async fn state(&self) -> String {
        let out = self
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
        format!("{}{}", out.stdout, out.stderr)
    }

    /// kubectl that must succeed; returns stdout.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
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

    pub async fn admin_client(&self) -> Client {
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
pub fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|rest| rest.split_once('='))
        .map(|(name, value)| (name.to_string(), unquote(value)))
        .collect()
}

pub fn unquote(value: &str) -> String {
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
pub async fn cluster(slot: &mut Option<Cluster>) -> Cluster {
    if let Some(cluster) = slot.as_ref() {
        return cluster.clone();
    }
    let t0 = Instant::now();
    // A new run of the journeys: a new summary.
    let _ = std::fs::remove_file(summary_path());
    let start = cluster_sh("start").await;
    assert!(
        start.ok,
        "e2e/k8s/cluster.sh start failed (build the binaries with e2e/k8s/build.sh):\n{}\n{}",
        start.stdout, start.stderr
    );
    let env = cluster_sh("env").await;
    assert!(env.ok, "e2e/k8s/cluster.sh env failed: {}", env.stderr);
    let (mut cluster, _) = Cluster::from_env("cluster.sh", &env.stdout);
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
pub struct Stack {
    pub admin: Client,
    pub operator: tokio::process::Child,
    pub operator_pid: u32,
    pub operator_log: PathBuf,
    /// `http://127.0.0.1:PORT`: the operator's /metrics, /healthz and /readyz.
    pub operator_url: String,
    pub agent: Option<NodeAgent>,
    pub dir: PathBuf,
}

impl Stack {
    pub async fn start(cluster: &Cluster, journey: &str) -> Stack {
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
            vec![(
                "ghost".to_string(),
                PathBuf::from(crate::common::ghost_bin()),
            )],
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
        // The binary CI ships (GHOST_TEST_BIN, the release build) when set: what is measured here
        // is what users run.
        let mut command = tokio::process::Command::new(crate::common::ghost_bin());
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
                // The stuck-pod journey waits this long for the operator to give up.
                "--engine-start-timeout",
                "30",
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
            operator_url: format!("http://127.0.0.1:{metrics}"),
            agent: Some(agent),
            dir,
        }
    }

    /// A metric of the operator's /metrics, summed over its label sets (0 when absent).
    pub async fn operator_metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.operator_url))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the /metrics body");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                let metric = key.split('{').next()?;
                (metric == name).then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }

    /// The operator process's resident memory (VmRSS), in MiB.
    pub fn operator_rss_mib(&self) -> f64 {
        let path = format!("/proc/{}/status", self.operator_pid);
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or_else(|| panic!("no VmRSS in {path}"))
    }

    /// CPU seconds the operator process has used (user + system).
    pub fn operator_cpu_seconds(&self) -> f64 {
        let path = format!("/proc/{}/stat", self.operator_pid);
        let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // Fields after the command (which may hold spaces): state is field 3; utime and
        // stime are fields 14 and 15, in clock ticks (100 per second on Linux).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the operator process, which this harness started:
    /// the API server then works as if no operator were installed.
    pub async fn pause_operator(&self, paused: bool) {
        let sig = if paused { "STOP" } else { "CONT" };
        assert!(
            node_agent::signal(self.operator_pid, sig).await,
            "kill -{sig} {}",
            self.operator_pid
        );
    }

    pub fn agent(&self) -> &NodeAgent {
        self.agent.as_ref().expect("the agent runs until stop")
    }

    /// Prints the operator's and the pods' logs (on failure).
    pub fn dump_logs(&self) {
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
    pub async fn stop(mut self, cluster: &Cluster) {
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

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("local addr").port()
}

/// Ends a journey: prints the logs and the cluster state when it failed, always cleans up,
/// then re-raises the journey's panic.
pub async fn finish(
    name: &str,
    t0: Instant,
    cluster: &Cluster,
    stack: Stack,
    result: std::thread::Result<()>,
) {
    if result.is_err() {
        stack.dump_logs();
        eprintln!("----- cluster state -----\n{}", cluster.state().await);
    }
    stack.stop(cluster).await;
    let line = format!(
        "journeys: {name}: {} in {} in all",
        if result.is_ok() { "passed" } else { "FAILED" },
        elapsed(t0)
    );
    eprintln!("{line}");
    append_summary(&line);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

// ------------------------------------------------------------------------------ observing

impl Stack {
    /// The SchemaMigration as JSON, read by the admin (None once it is gone).
    pub async fn smig(&self, name: &str) -> Option<Value> {
        let api: Api<SchemaMigration> = Api::namespaced(self.admin.clone(), NAMESPACE);
        let found = api
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("get smig {name}: {e}"));
        found.map(|smig| serde_json::to_value(smig).expect("smig as json"))
    }

    /// Polls the SchemaMigration every 50 ms until `done` holds; returns it and how long it took.
    /// Fails the journey with the last state after `timeout`.
    pub async fn wait_smig(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let t0 = Instant::now();
        loop {
            let smig = self.smig(name).await.unwrap_or(Value::Null);
            if done(&smig) {
                return (smig, t0.elapsed());
            }
            assert!(
                t0.elapsed() < timeout,
                "{name}: not {what} after {timeout:?}; last state:\n{:#}",
                smig["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `.status.phase` is `phase`.
    pub async fn wait_phase(
        &self,
        name: &str,
        phase: &str,
        timeout: Duration,
    ) -> (Value, Duration) {
        let what = format!("phase {phase}");
        self.wait_smig(name, &what, timeout, |smig| {
            smig["status"]["phase"] == phase
        })
        .await
    }

    /// The pods the node agent ran for `job`, in start order.
    pub fn runs_of(&self, job: &str) -> Vec<PodRun> {
        let prefix = format!("{job}-");
        self.agent()
            .runs()
            .into_iter()
            .filter(|run| run.name.starts_with(&prefix))
            .collect()
    }
}

impl Cluster {
    /// The reasons of the Events about `name`, oldest first.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        let field = format!("involvedObject.name={name}");
        let text = self
            .kubectl(
                &[
                    "-n",
                    NAMESPACE,
                    "get",
                    "events",
                    "--field-selector",
                    field.as_str(),
                    "--sort-by=.lastTimestamp",
                    "-o",
                    "json",
                ],
                None,
            )
            .await;
        let list: Value = serde_json::from_str(&text).expect("events json");
        list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|e| e["reason"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `kubectl -n NAMESPACE annotate smig NAME key=value --overwrite`.
    pub async fn annotate(&self, name: &str, pairs: &[&str]) {
        let target = format!("schemamigrations.ghost.dev/{name}");
        let mut args = vec!["-n", NAMESPACE, "annotate", target.as_str()];
        args.extend_from_slice(pairs);
        args.push("--overwrite");
        self.kubectl(&args, None).await;
    }

    /// Names of the objects of `kind` in NAMESPACE matching `selector`.
    pub async fn names(&self, kind: &str, selector: &str) -> Vec<String> {
        let text = self
            .kubectl(
                &["-n", NAMESPACE, "get", kind, "-l", selector, "-o", "name"],
                None,
            )
            .await;
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod unit {
    use super::*;

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
}
