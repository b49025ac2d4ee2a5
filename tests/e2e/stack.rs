//! One journey's view of the real node: the SchemaMigrations it watches, the pods of its Jobs,
//! the operator the chart installed (its metrics from its pod's address on the bridge, its
//! memory and CPU from its container's process), and what a journey may change for a while
//! (the operator scaled to zero, chart values, the API server down) and `stop` puts back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ghost::api::SchemaMigration;
use kube::{Api, Client};
use serde_json::Value;

use crate::harness::{Cluster, NAMESPACE, append_summary, delete_labelled, elapsed};
use crate::real_node::{OPERATOR_DEPLOYMENT, RealNode};

/// The chart's operator pods.
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/component=operator";
/// The chart's default `metrics.port`.
const OPERATOR_METRICS_PORT: u16 = 8080;

/// A pod of a Job, as the journeys look at it.
#[derive(Clone, Debug)]
pub struct PodRun {
    pub name: String,
    /// The container's exit code once it terminated.
    pub exit_code: Option<i32>,
    pub running: bool,
}

pub struct Stack {
    pub admin: Client,
    pub node: RealNode,
    /// The journey's files (kubeconfigs of its own tokens, the operator's log).
    pub dir: PathBuf,
    started: chrono::DateTime<chrono::Utc>,
    /// Set while the operator is scaled to zero; `stop` scales it back.
    operator_paused: AtomicBool,
    /// Set once the journey changed the release's values; `stop` installs the defaults again.
    values_changed: AtomicBool,
    /// The operator pod's name and its container's host pid, found once per pod.
    operator_process: Mutex<Option<(String, u32)>>,
}

impl Stack {
    pub async fn start(node: &RealNode, journey: &str) -> Stack {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("k8s-journeys")
            .join(format!(
                "{journey}-{}-{}",
                std::process::id(),
                chrono::Utc::now().format("%H%M%S%3f")
            ));
        std::fs::create_dir_all(&dir).expect("journey dir");
        let stack = Stack {
            admin: node.cluster.admin_client().await,
            node: node.clone(),
            dir,
            started: chrono::Utc::now(),
            operator_paused: AtomicBool::new(false),
            values_changed: AtomicBool::new(false),
            operator_process: Mutex::new(None),
        };
        // A journey before may have replaced the operator's pod: start with one that is ready.
        stack.wait_operator_available().await;
        stack
    }

    pub fn cluster(&self) -> &Cluster {
        &self.node.cluster
    }

    // -------------------------------------------------------------------------- migrations

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

    // -------------------------------------------------------------------------- engine pods

    /// The pods of `job` that still exist, oldest first.
    pub async fn runs_of(&self, job: &str) -> Vec<PodRun> {
        self.node
            .pods_of(job)
            .await
            .iter()
            .map(|pod| {
                let state = &pod["status"]["containerStatuses"][0]["state"];
                PodRun {
                    name: pod["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    exit_code: state["terminated"]["exitCode"]
                        .as_i64()
                        .and_then(|c| i32::try_from(c).ok()),
                    running: state["running"].is_object(),
                }
            })
            .collect()
    }

    /// The pod's log (`kubectl logs`, through the kubelet).
    pub async fn log_of(&self, pod: &str) -> String {
        self.node.logs(pod).await
    }

    // -------------------------------------------------------------------------- the operator

    /// The ready operator pod (Running, Ready, not being deleted).
    async fn operator_pod(&self) -> Value {
        let ready = |pod: &&Value| {
            pod["metadata"]["deletionTimestamp"].is_null()
                && pod["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        };
        let pods = self.node.pods(OPERATOR_SELECTOR).await;
        pods.iter()
            .find(ready)
            .cloned()
            .unwrap_or_else(|| panic!("no ready operator pod: {pods:#?}"))
    }

    /// `http://<operator pod IP>:8080`: /metrics, /healthz and /readyz, reached over the bridge.
    pub async fn operator_url(&self) -> String {
        let pod = self.operator_pod().await;
        let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
        assert!(!ip.is_empty(), "the operator pod has no IP: {pod:#}");
        format!("http://{ip}:{OPERATOR_METRICS_PORT}")
    }

    /// A metric of the operator's /metrics, summed over its label sets (0 when absent).
    pub async fn operator_metric(&self, name: &str) -> f64 {
        let url = format!("{}/metrics", self.operator_url().await);
        let text = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .expect("the /metrics body");
        metric_sum(&text, name)
    }

    /// The host pid of the operator container's process.
    pub async fn operator_pid(&self) -> u32 {
        let pod = self.operator_pod().await;
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some((known, pid)) = self.operator_process.lock().expect("lock").clone() {
            if known == name {
                return pid;
            }
        }
        let container = pod["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .and_then(|id| id.rsplit_once("://").map(|(_, id)| id.to_string()))
            .unwrap_or_else(|| panic!("operator pod {name} has no container id"));
        let pid = process_of_container(&container, "ghost")
            .unwrap_or_else(|| panic!("no process named ghost in container {container}"));
        *self.operator_process.lock().expect("lock") = Some((name, pid));
        pid
    }

    /// The operator process's resident memory (VmRSS), in MiB.
    pub async fn operator_rss_mib(&self) -> f64 {
        let pid = self.operator_pid().await;
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        rss_mib(&status).unwrap_or_else(|| panic!("no VmRSS in {path}"))
    }

    /// CPU seconds the operator process has used (user + system).
    pub async fn operator_cpu_seconds(&self) -> f64 {
        let pid = self.operator_pid().await;
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        cpu_seconds(&stat)
    }

    /// Takes the operator away (its Deployment scaled to zero, the pod gone) or brings it back
    /// (one replica, ready): the API server then works as if no operator were installed. A
    /// stopped or paused container would fail its liveness probe and be restarted mid-way.
    pub async fn pause_operator(&self, paused: bool) {
        let deployment = format!("deployment/{OPERATOR_DEPLOYMENT}");
        let replicas = if paused {
            "--replicas=0"
        } else {
            "--replicas=1"
        };
        self.operator_paused.store(paused, Ordering::SeqCst);
        self.cluster()
            .kubectl(
                &["-n", NAMESPACE, "scale", deployment.as_str(), replicas],
                None,
            )
            .await;
        if paused {
            self.cluster()
                .kubectl(
                    &[
                        "-n",
                        NAMESPACE,
                        "wait",
                        "--for=delete",
                        "pod",
                        "-l",
                        OPERATOR_SELECTOR,
                        "--timeout=60s",
                    ],
                    None,
                )
                .await;
        } else {
            self.wait_operator_available().await;
        }
    }

    async fn wait_operator_available(&self) {
        let deployment = format!("deployment/{OPERATOR_DEPLOYMENT}");
        self.cluster()
            .kubectl(
                &[
                    "-n",
                    NAMESPACE,
                    "rollout",
                    "status",
                    deployment.as_str(),
                    "--timeout=120s",
                ],
                None,
            )
            .await;
    }

    /// `helm upgrade --reuse-values --set …` of the release, until the operator is available
    /// again; `stop` puts the harness's values back.
    pub async fn set_values(&self, values: &[&str]) {
        self.values_changed.store(true, Ordering::SeqCst);
        let mut args = vec![
            "upgrade",
            crate::real_node::RELEASE,
            "charts/ghost",
            "--namespace",
            NAMESPACE,
            "--reuse-values",
        ];
        for value in values {
            args.extend_from_slice(&["--set", value]);
        }
        args.extend_from_slice(&["--wait", "--timeout", "180s"]);
        let out = self.node.helm(&args).await;
        assert!(
            out.ok,
            "helm upgrade --set {values:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
    }

    /// The node's kube-apiserver down for `seconds`, then up and ready again.
    pub async fn restart_apiserver(&self, seconds: u32) -> crate::harness::Output {
        crate::real_node::node_sh(&["restart-apiserver", &seconds.to_string()]).await
    }

    /// Waits until the `kubernetes` Service's address takes connections from this host, which
    /// kube-proxy routes as it routes the pods' (its rules are on the node's OUTPUT path too);
    /// returns how long that took.
    pub async fn wait_apiserver_service_routable(&self) -> Duration {
        let t0 = Instant::now();
        let ip = self
            .cluster()
            .kubectl(
                &[
                    "-n",
                    "default",
                    "get",
                    "service",
                    "kubernetes",
                    "-o",
                    "jsonpath={.spec.clusterIP}",
                ],
                None,
            )
            .await;
        let address = format!("{}:443", ip.trim());
        loop {
            let connect = tokio::net::TcpStream::connect(address.as_str());
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), connect).await {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "the kubernetes Service ({address}) takes no connection 120 s after the restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // -------------------------------------------------------------------------- the end

    /// The operator's log since the journey began (`kubectl logs` of its Deployment).
    async fn operator_log(&self) -> String {
        let since = format!("--since-time={}", self.started.to_rfc3339());
        let deployment = format!("deployment/{OPERATOR_DEPLOYMENT}");
        let out = self
            .cluster()
            .kubectl_in(
                &["-n", NAMESPACE, "logs", deployment.as_str(), since.as_str()],
                None,
            )
            .await;
        format!("{}{}", out.stdout, out.stderr)
    }

    /// The operator's log since the journey began, and the last lines of every engine pod.
    pub async fn dump_logs(&self) {
        eprintln!("----- operator log -----\n{}", self.operator_log().await);
        let engines = self
            .cluster()
            .kubectl_in(
                &[
                    "-n",
                    NAMESPACE,
                    "logs",
                    "-l",
                    "app.kubernetes.io/component=engine",
                    "--prefix",
                    "--tail=200",
                    "--max-log-requests=20",
                ],
                None,
            )
            .await;
        eprintln!(
            "----- engine pods' logs -----\n{}{}",
            engines.stdout, engines.stderr
        );
    }

    /// Deletes what the journey labelled (while the operator runs, so its finalizers complete),
    /// then puts back what the journey changed: the operator's replica, the release's values.
    pub async fn stop(self) {
        let t0 = Instant::now();
        if self.operator_paused.load(Ordering::SeqCst) {
            self.pause_operator(false).await;
        }
        delete_labelled(self.cluster()).await;
        if self.values_changed.load(Ordering::SeqCst) {
            self.node.install().await;
        }
        let _ = std::fs::write(self.dir.join("operator.log"), self.operator_log().await);
        eprintln!(
            "journeys: cleaned up in {} (files kept in {})",
            elapsed(t0),
            self.dir.display()
        );
    }
}

/// Ends a journey: prints the logs and the cluster state when it failed, always cleans up,
/// then re-raises the journey's panic.
pub async fn finish(name: &str, t0: Instant, stack: Stack, result: std::thread::Result<()>) {
    if result.is_err() {
        stack.dump_logs().await;
        stack.node.dump().await;
    }
    stack.stop().await;
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

/// `name`'s samples in a Prometheus text exposition, summed over their label sets.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let metric = key.split('{').next()?;
            (metric == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// VmRSS of a `/proc/PID/status`, in MiB.
pub fn rss_mib(status: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
}

/// User plus system CPU seconds of a `/proc/PID/stat`.
pub fn cpu_seconds(stat: &str) -> f64 {
    // Fields after the command (which may hold spaces): state is field 3; utime and stime are
    // fields 14 and 15, in clock ticks (100 per second on Linux).
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

/// The host pid of the process named `comm` whose cgroup is the container's: with the
/// cgroupfs driver the container id is the last part of its cgroup path (v1 and v2 alike).
fn process_of_container(container_id: &str, comm: &str) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            in_container(&cgroup, container_id)
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == comm)
        })
}

/// Whether a `/proc/PID/cgroup` puts the process in the container's cgroup.
pub fn in_container(cgroup: &str, container_id: &str) -> bool {
    !container_id.is_empty()
        && cgroup
            .lines()
            .filter_map(|line| line.rsplit_once(':').map(|(_, path)| path))
            .any(|path| path.rsplit('/').next() == Some(container_id))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn metric_sum_adds_label_sets_and_skips_comments_and_prefixes() {
        let text = "# HELP m x\n# TYPE m counter\nm{a=\"1\"} 2\nm{a=\"2\"} 3.5\nm_total 9\nm 1\n";
        assert_eq!(metric_sum(text, "m"), 6.5);
        assert_eq!(metric_sum(text, "absent"), 0.0);
    }

    #[test]
    fn rss_and_cpu_of_proc_files() {
        assert_eq!(rss_mib("Name:\tghost\nVmRSS:\t   20480 kB\n"), Some(20.0));
        let stat = "42 (gh ost) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(cpu_seconds(stat), 3.0);
    }

    #[test]
    fn a_process_is_in_the_container_whose_id_ends_its_cgroup() {
        let id = "0123abcd";
        let v1 = "12:memory:/kubepods/burstable/pod1/0123abcd\n11:cpu:/kubepods/burstable/pod1/0123abcd\n";
        assert!(in_container(v1, id));
        assert!(in_container("0::/kubepods/pod1/0123abcd\n", id));
        assert!(!in_container("0::/kubepods/pod1/0123abcdef\n", id));
        assert!(!in_container("12:memory:/kubepods/burstable/pod1\n", id));
        assert!(!in_container(v1, ""));
    }
}
