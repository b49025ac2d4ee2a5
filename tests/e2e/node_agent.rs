//! A minimal kubelet for the loopback control plane of `e2e/k8s/cluster.sh`.
//!
//! That cluster has a kube-apiserver and a kube-controller-manager but no scheduler and no
//! kubelet, so the Pods of the engine Jobs stay `Pending`. This agent plays both parts for the
//! pods the tests care about, and nothing more:
//!
//! - it registers a Node (Ready, heartbeat every 10 s through the status subresource, plus the
//!   node Lease in `kube-node-lease`), so the node lifecycle controller leaves it alone;
//! - it binds unscheduled pods that match its label selector (default: the engine Jobs' pods,
//!   `app.kubernetes.io/name=ghost,app.kubernetes.io/component=engine`) and whose
//!   `spec.schedulerName` is the default scheduler, through the `pods/binding` subresource;
//! - for a pod bound to its node it resolves the container's environment (plain values,
//!   `secretKeyRef`, `configMapKeyRef`, `fieldRef`), requests a token of the pod's
//!   ServiceAccount (TokenRequest API, bound to the pod, default audience), writes a kubeconfig
//!   with that token and points `KUBECONFIG` at it. The process therefore talks to the API server
//!   with the pod's ServiceAccount and nothing else: the RBAC of the engine is exercised, not
//!   assumed. `command[0]` is mapped to a local program (`"ghost"` → the test's
//!   `CARGO_BIN_EXE_ghost`); the image is ignored;
//! - it reports the pod's status like a kubelet: `Running` with a running container status,
//!   then `Succeeded`/`Failed` with the exit code;
//! - when a pod is deleted it stops the process (SIGTERM, SIGKILL after the grace period, capped)
//!   and removes the pod with grace period 0, which is the kubelet's part of a graceful deletion.
//!
//! Secret volumes are written where they are mounted (the engine's TLS files).
//!
//! What it does not do: init containers, more than one container, `envFrom`, `$(VAR)`
//! expansion in arguments, other volumes (the process sees the host filesystem; `HOME` and
//! `TMPDIR` point into a per-pod directory), probes, restarts (`restartPolicy` is treated as `Never`,
//! which is what the engine Job uses), token refresh (tokens live for an hour, far longer than a
//! journey).
//!
//! Use from a test binary with `#[path = "e2e/node_agent.rs"] mod node_agent;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Container, Node, ObjectReference, Pod, Secret, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// The API server of `e2e/k8s/cluster.sh` (`GHOST_K8S_SERVER` overrides it).
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:26443";
/// The engine Jobs' pods (`operator::job::JOB_SELECTOR`).
pub const ENGINE_SELECTOR: &str = "app.kubernetes.io/name=ghost,app.kubernetes.io/component=engine";
/// The address the agent reports for its node and pods.
pub const NODE_IP: &str = "127.0.0.1";

const DEFAULT_SCHEDULER: &str = "default-scheduler";
/// Published into every namespace by the controller-manager's root-ca-cert-publisher.
const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
const NODE_LEASE_SECONDS: i32 = 40;
const FIELD_MANAGER: &str = "ghost-node-agent";
/// A pod whose Secret or ConfigMap is missing is retried this often, this many times
/// (the kubelet's CreateContainerConfigError), then failed.
const PREPARE_RETRY: Duration = Duration::from_secs(2);
const PREPARE_ATTEMPTS: u32 = 60;
/// What a pod without `terminationGracePeriodSeconds` gets (the API default).
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Exit codes reported for processes that never ran, as a shell would.
const EXIT_CANNOT_RUN: i32 = 127;
const EXIT_CONFIG_ERROR: i32 = 126;

macro_rules! note {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        eprintln!("node-agent: {line}");
        tracing::info!(target: "node_agent", "{line}");
    }};
}

/// Settings of the agent beyond its client, node name and program map.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The API server URL written into pods' kubeconfigs.
    pub server: String,
    /// The cluster CA (PEM) for pods' kubeconfigs. `None`: read `kube-root-ca.crt` from the pod's
    /// namespace, as a pod would.
    pub ca_pem: Option<String>,
    /// Per-pod directories (kubeconfig, CA, log, HOME, TMPDIR) go under this one.
    pub work_dir: PathBuf,
    /// Which pods the agent binds and runs.
    pub label_selector: String,
    pub heartbeat_interval: Duration,
    /// The longest a process gets between SIGTERM and SIGKILL, whatever the pod asks for.
    pub max_grace: Duration,
    /// Lifetime of the ServiceAccount tokens (the API server's minimum is 600).
    pub token_expiration_seconds: i64,
    /// Variables of the test process passed on to pod processes (everything else is cleared).
    pub inherited_env: Vec<String>,
}

impl AgentOptions {
    /// Defaults, with `GHOST_K8S_SERVER` and `GHOST_K8S_CA` (see `cluster.sh env`) when set.
    pub fn from_env(node_name: &str) -> Self {
        let server = std::env::var("GHOST_K8S_SERVER")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let ca_pem = std::env::var("GHOST_K8S_CA")
            .ok()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .filter(|pem| pem.contains("BEGIN CERTIFICATE"));
        let work_dir = std::env::temp_dir().join(format!(
            "ghost-node-agent-{node_name}-{}-{}",
            std::process::id(),
            unix_millis()
        ));
        Self {
            server,
            ca_pem,
            work_dir,
            label_selector: ENGINE_SELECTOR.to_string(),
            heartbeat_interval: Duration::from_secs(10),
            max_grace: Duration::from_secs(10),
            token_expiration_seconds: 3600,
            inherited_env: [
                "PATH",
                "RUST_LOG",
                "RUST_BACKTRACE",
                "LLVM_PROFILE_FILE",
                "TZ",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

/// One process the agent started, for the tests' assertions.
#[derive(Clone, Debug)]
pub struct PodRun {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub pid: u32,
    pub log: PathBuf,
    /// `None` while it runs; 128 + signal when a signal ended it.
    pub exit_code: Option<i32>,
}

/// The running agent. Call [`NodeAgent::stop`]; dropping it only kills its processes.
pub struct NodeAgent {
    shared: Arc<Shared>,
    watch_task: Option<JoinHandle<()>>,
    heartbeat_task: Option<JoinHandle<()>>,
}

struct Shared {
    client: Client,
    node_name: String,
    programs: HashMap<String, PathBuf>,
    options: AgentOptions,
    /// When the Node became Ready (its condition's lastTransitionTime).
    ready_since: String,
    /// Pods this agent has taken on, by uid (kept until the agent stops, so a finished pod is
    /// never started twice).
    pods: tokio::sync::Mutex<HashMap<String, PodEntry>>,
    /// Live processes by pod uid; a plain mutex so `Drop` can read it.
    pids: std::sync::Mutex<HashMap<String, u32>>,
    runs: std::sync::Mutex<Vec<PodRun>>,
}

struct PodEntry {
    namespace: String,
    name: String,
    stop: watch::Sender<Option<StopRequest>>,
    task: Option<JoinHandle<()>>,
}

#[derive(Clone, Copy, Debug)]
struct StopRequest {
    /// Between SIGTERM and SIGKILL.
    grace: Duration,
    /// The pod is being deleted: remove it (grace period 0) once the process is gone.
    delete_pod: bool,
}

/// Why a pod's process cannot start (yet).
enum PrepareError {
    /// Something may appear later (a Secret, the root CA ConfigMap, the API server): retry.
    Retry(String),
    /// It will never work as written.
    Fatal(String),
}

struct Prepared {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// Identity of one pod's container, for status reports.
#[derive(Clone)]
struct PodRef {
    namespace: String,
    name: String,
    uid: String,
    container: String,
    image: String,
    dir: PathBuf,
    log: PathBuf,
}

impl NodeAgent {
    /// Registers `node_name` and starts binding and running the engine pods.
    /// `program_map` maps a container's `command[0]` to a local program.
    pub async fn start(
        client: Client,
        node_name: &str,
        program_map: Vec<(String, PathBuf)>,
    ) -> Result<NodeAgent> {
        Self::start_with(
            client,
            node_name,
            program_map,
            AgentOptions::from_env(node_name),
        )
        .await
    }

    pub async fn start_with(
        client: Client,
        node_name: &str,
        program_map: Vec<(String, PathBuf)>,
        options: AgentOptions,
    ) -> Result<NodeAgent> {
        std::fs::create_dir_all(&options.work_dir)
            .map_err(|e| format!("cannot create {}: {e}", options.work_dir.display()))?;
        let shared = Arc::new(Shared {
            client,
            node_name: node_name.to_string(),
            programs: program_map.into_iter().collect(),
            options,
            ready_since: rfc3339_now(),
            pods: tokio::sync::Mutex::new(HashMap::new()),
            pids: std::sync::Mutex::new(HashMap::new()),
            runs: std::sync::Mutex::new(Vec::new()),
        });
        shared.register_node().await?;
        let heartbeat_task = tokio::spawn(shared.clone().heartbeat_loop());
        let watch_task = tokio::spawn(shared.clone().watch_loop());
        note!(
            "node {} is Ready; running pods matching {:?} (work dir {})",
            shared.node_name,
            shared.options.label_selector,
            shared.options.work_dir.display()
        );
        Ok(NodeAgent {
            shared,
            watch_task: Some(watch_task),
            heartbeat_task: Some(heartbeat_task),
        })
    }

    pub fn node_name(&self) -> &str {
        &self.shared.node_name
    }

    pub fn work_dir(&self) -> &Path {
        &self.shared.options.work_dir
    }

    /// Every process started so far, in start order.
    pub fn runs(&self) -> Vec<PodRun> {
        lock_std(&self.shared.runs).clone()
    }

    /// The log files of every process started so far.
    pub fn log_files(&self) -> Vec<PathBuf> {
        self.runs().into_iter().map(|r| r.log).collect()
    }

    /// Stops every process (SIGTERM, SIGKILL after the grace period), the watch and the
    /// heartbeat, and deletes the Node. The pods it ran stay as they are (the pod GC of the
    /// controller-manager removes pods of a deleted node); the work dir (logs) stays.
    pub async fn stop(mut self) {
        if let Some(task) = self.watch_task.take() {
            task.abort();
        }
        let grace = self.shared.options.max_grace;
        let request = StopRequest {
            grace,
            delete_pod: false,
        };
        let tasks: Vec<(String, JoinHandle<()>)> = {
            let mut pods = self.shared.pods.lock().await;
            pods.iter_mut()
                .filter_map(|(uid, entry)| {
                    request_stop(entry, request);
                    entry.task.take().map(|task| (uid.clone(), task))
                })
                .collect()
        };
        for (uid, mut task) in tasks {
            if tokio::time::timeout(grace + Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                let pid = lock_std(&self.shared.pids).get(&uid).copied();
                if let Some(pid) = pid {
                    note!("pod {uid}: process {pid} did not stop, SIGKILL");
                    signal(pid, "KILL").await;
                }
                task.abort();
            }
        }
        // Anything left (a runner that was aborted between spawn and wait).
        let left: Vec<u32> = lock_std(&self.shared.pids)
            .drain()
            .map(|(_, pid)| pid)
            .collect();
        for pid in left {
            signal(pid, "KILL").await;
        }
        if let Some(task) = self.heartbeat_task.take() {
            task.abort();
        }
        let nodes: Api<Node> = Api::all(self.shared.client.clone());
        match nodes
            .delete(&self.shared.node_name, &DeleteParams::default())
            .await
        {
            Ok(_) => note!("node {} deleted", self.shared.node_name),
            Err(e) if is_not_found(&e) => {}
            Err(e) => note!("cannot delete node {}: {e}", self.shared.node_name),
        }
        let leases: Api<Lease> = Api::namespaced(self.shared.client.clone(), NODE_LEASE_NAMESPACE);
        let _ = leases
            .delete(&self.shared.node_name, &DeleteParams::default())
            .await;
    }
}

impl Drop for NodeAgent {
    /// Best effort when `stop` was not called (a panicking test): kill the processes so none
    /// outlives the test binary, and stop the tasks. The Node stays; the next `start` takes it
    /// over.
    fn drop(&mut self) {
        if let Some(task) = self.watch_task.take() {
            task.abort();
        }
        if let Some(task) = self.heartbeat_task.take() {
            task.abort();
        }
        let left: Vec<u32> = lock_std(&self.shared.pids)
            .drain()
            .map(|(_, pid)| pid)
            .collect();
        for pid in left {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Ok(mut pods) = self.shared.pods.try_lock() {
            for entry in pods.values_mut() {
                if let Some(task) = entry.task.take() {
                    task.abort();
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------ node

impl Shared {
    async fn register_node(&self) -> Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(self.node_name.clone()),
                labels: Some(BTreeMap::from([
                    ("kubernetes.io/hostname".to_string(), self.node_name.clone()),
                    ("kubernetes.io/os".to_string(), "linux".to_string()),
                    ("kubernetes.io/arch".to_string(), go_arch().to_string()),
                    ("ghost.dev/node-agent".to_string(), "true".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => note!("node {} registered", self.node_name),
            Err(e) if is_conflict(&e) => {
                note!("node {} exists already; taking it over", self.node_name)
            }
            Err(e) => return Err(format!("cannot register node {}: {e}", self.node_name).into()),
        }
        self.heartbeat()
            .await
            .map_err(|e| format!("cannot report node {} Ready: {e}", self.node_name))?;
        Ok(())
    }

    fn node_status(&self) -> Value {
        let now = rfc3339_now();
        let condition = |type_: &str, status: &str, reason: &str, message: &str| {
            json!({
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self.ready_since,
            })
        };
        let resources =
            json!({"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"});
        json!({
            "status": {
                "conditions": [
                    condition("Ready", "True", "KubeletReady", "ghost e2e node agent is posting ready status"),
                    condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
                    condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                    condition("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
                ],
                "addresses": [
                    {"type": "InternalIP", "address": NODE_IP},
                    {"type": "Hostname", "address": self.node_name},
                ],
                "capacity": resources,
                "allocatable": resources,
                "nodeInfo": {
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                    "kernelVersion": "",
                    "osImage": "ghost e2e node agent",
                    "containerRuntimeVersion": "ghost-node-agent://0",
                    "kubeletVersion": "v1.34.10",
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": go_arch(),
                },
            }
        })
    }

    /// One heartbeat: the Node's conditions, then the node Lease (best effort).
    async fn heartbeat(&self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .patch_status(
                &self.node_name,
                &PatchParams::default(),
                &Patch::Strategic(self.node_status()),
            )
            .await?;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node_name, "namespace": NODE_LEASE_NAMESPACE},
            "spec": {
                "holderIdentity": self.node_name,
                "leaseDurationSeconds": NODE_LEASE_SECONDS,
                "renewTime": micro_now(),
            }
        });
        if let Err(e) = leases
            .patch(
                &self.node_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
        {
            tracing::debug!("node lease {}: {e}", self.node_name);
        }
        Ok(())
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.options.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; register_node just reported
        loop {
            tick.tick().await;
            match self.heartbeat().await {
                Ok(()) => {}
                Err(e) => {
                    let gone = e.downcast_ref::<kube::Error>().is_some_and(is_not_found);
                    if gone {
                        note!("node {} disappeared; registering it again", self.node_name);
                        if let Err(e) = self.register_node().await {
                            note!("{e}");
                        }
                    } else {
                        note!("heartbeat of node {} failed: {e}", self.node_name);
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------ pods

impl Shared {
    async fn watch_loop(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().labels(&self.options.label_selector);
        let mut events = watcher(api, config).default_backoff().boxed();
        // The uids listed since the last (re)list, to notice deletions missed while the watch
        // was down.
        let mut listed: Option<HashSet<String>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(pod)) => {
                    if let (Some(seen), Some(uid)) = (listed.as_mut(), pod.metadata.uid.as_ref()) {
                        seen.insert(uid.clone());
                    }
                    self.on_pod(pod).await;
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(seen) = listed.take() {
                        self.forget_missing(&seen).await;
                    }
                }
                Ok(watcher::Event::Apply(pod)) => self.on_pod(pod).await,
                Ok(watcher::Event::Delete(pod)) => {
                    if let Some(uid) = pod.metadata.uid.as_deref() {
                        self.on_pod_gone(uid, grace_of(&pod, self.options.max_grace))
                            .await;
                    }
                }
                Err(e) => note!("pod watch: {e} (retrying)"),
            }
        }
        note!("pod watch ended");
    }

    async fn on_pod(self: &Arc<Self>, pod: Pod) {
        let (Some(uid), Some(namespace)) =
            (pod.metadata.uid.clone(), pod.metadata.namespace.clone())
        else {
            return;
        };
        let name = pod.name_any();
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let bound_to: Option<String> = spec.node_name.clone().filter(|n| !n.is_empty());
        let default_scheduler =
            spec.scheduler_name.as_deref().unwrap_or(DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER;
        let gated = spec
            .scheduling_gates
            .as_ref()
            .is_some_and(|g| !g.is_empty());
        match bound_to.as_deref() {
            None => {
                if !deleting && default_scheduler && !gated {
                    self.bind(&namespace, &name, &uid).await;
                }
            }
            Some(node) if node == self.node_name => {
                if deleting {
                    self.on_pod_deleting(&pod, &namespace, &name, &uid).await;
                } else {
                    self.ensure_started(pod, namespace, name, uid).await;
                }
            }
            Some(_) => {}
        }
    }

    async fn bind(&self, namespace: &str, name: &str, uid: &str) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                // The API server checks it: a pod recreated under the same name is not bound by
                // a stale event.
                uid: Some(uid.to_string()),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Node".to_string()),
                name: Some(self.node_name.clone()),
                ..ObjectReference::default()
            },
        };
        match api
            .create_subresource::<Binding, Value>("binding", name, &PostParams::default(), &binding)
            .await
        {
            Ok(_) => note!("bound pod {namespace}/{name} to node {}", self.node_name),
            // Already bound (the watch shows the old state), or gone meanwhile.
            Err(e) if is_conflict(&e) || is_not_found(&e) => {
                tracing::debug!("binding {namespace}/{name}: {e}");
            }
            Err(e) => note!("cannot bind pod {namespace}/{name}: {e}"),
        }
    }

    async fn ensure_started(
        self: &Arc<Self>,
        pod: Pod,
        namespace: String,
        name: String,
        uid: String,
    ) {
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
            return;
        }
        let mut pods = self.pods.lock().await;
        if pods.contains_key(&uid) {
            return;
        }
        let (stop, stop_rx) = watch::channel(None);
        if phase.as_deref() == Some("Running") {
            // Started by an earlier agent on a node of the same name: that process is gone.
            pods.insert(
                uid.clone(),
                PodEntry {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    stop,
                    task: None,
                },
            );
            drop(pods);
            note!("pod {namespace}/{name} was Running under an earlier agent: marking it Failed");
            let container = first_container_name(&pod);
            let status = json!({
                "phase": "Failed",
                "reason": "NodeAgentRestarted",
                "message": "the node agent that ran this pod is gone",
                "containerStatuses": [{
                    "name": container,
                    "image": "",
                    "imageID": "",
                    "ready": false,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": rfc3339_now()}},
                }],
            });
            self.patch_pod_status(&namespace, &name, status).await;
            return;
        }
        let task = tokio::spawn(self.clone().run_pod(pod, stop_rx));
        pods.insert(
            uid,
            PodEntry {
                namespace,
                name,
                stop,
                task: Some(task),
            },
        );
    }

    /// `deletionTimestamp` is set: stop the process, then remove the pod (the runner does both),
    /// or remove it at once when nothing runs.
    async fn on_pod_deleting(&self, pod: &Pod, namespace: &str, name: &str, uid: &str) {
        let grace = grace_of(pod, self.options.max_grace);
        // Its process already exited: the runner may be past its last look at stop requests.
        let exited = lock_std(&self.runs)
            .iter()
            .any(|r| r.uid == uid && r.exit_code.is_some());
        let mut pods = self.pods.lock().await;
        if let Some(entry) = pods.get_mut(uid) {
            if !exited && entry.task.as_ref().is_some_and(|t| !t.is_finished()) {
                if request_stop(
                    entry,
                    StopRequest {
                        grace,
                        delete_pod: true,
                    },
                ) {
                    note!(
                        "pod {namespace}/{name} is being deleted: stopping its process (grace {grace:?})"
                    );
                }
                return;
            }
        }
        drop(pods);
        self.force_delete(namespace, name, uid).await;
    }

    /// The pod is gone from the API: stop its process if one still runs.
    async fn on_pod_gone(&self, uid: &str, grace: Duration) {
        let mut pods = self.pods.lock().await;
        if let Some(entry) = pods.get_mut(uid) {
            if entry.task.as_ref().is_some_and(|t| !t.is_finished())
                && request_stop(
                    entry,
                    StopRequest {
                        grace,
                        delete_pod: false,
                    },
                )
            {
                note!(
                    "pod {}/{} was deleted: stopping its process (grace {grace:?})",
                    entry.namespace,
                    entry.name
                );
            }
        }
    }

    async fn forget_missing(&self, seen: &HashSet<String>) {
        let missing: Vec<String> = {
            let pods = self.pods.lock().await;
            pods.keys()
                .filter(|uid| !seen.contains(*uid))
                .cloned()
                .collect()
        };
        for uid in missing {
            self.on_pod_gone(&uid, self.options.max_grace).await;
        }
    }

    /// The kubelet's last step of a graceful deletion.
    async fn force_delete(&self, namespace: &str, name: &str, uid: &str) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => note!("pod {namespace}/{name} removed"),
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => note!("cannot remove pod {namespace}/{name}: {e}"),
        }
    }

    async fn patch_pod_status(&self, namespace: &str, name: &str, status: Value) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = json!({ "status": status });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                tracing::debug!("status of {namespace}/{name}: the pod is gone")
            }
            Err(e) => note!("cannot update the status of pod {namespace}/{name}: {e}"),
        }
    }
}

// ------------------------------------------------------------------------------------ runner

impl Shared {
    /// Runs one pod from preparation to its final status.
    async fn run_pod(self: Arc<Self>, pod: Pod, mut stop_rx: watch::Receiver<Option<StopRequest>>) {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .cloned();
        let short_uid: String = uid.chars().take(8).collect();
        let dir = self
            .options
            .work_dir
            .join(format!("{namespace}_{name}_{short_uid}"));
        let container_name = container
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_else(|| "main".to_string());
        let me = PodRef {
            log: dir.join(format!("{container_name}.log")),
            namespace,
            name,
            uid,
            container: container_name,
            image: container
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default(),
            dir,
        };

        // Prepare: environment, token, kubeconfig. Missing inputs are retried, like the
        // kubelet's CreateContainerConfigError.
        let prepared = {
            let mut attempts = 0u32;
            let mut last_reported: Option<String> = None;
            loop {
                // Copied out first: the watch's read guard must not live across an await.
                let requested = *stop_rx.borrow();
                if let Some(request) = requested {
                    self.end_unstarted(&me, request).await;
                    return;
                }
                let result = match container.as_ref() {
                    Some(c) => self.prepare(&pod, c, &me).await,
                    None => Err(PrepareError::Fatal("the pod has no container".to_string())),
                };
                match result {
                    Ok(prepared) => break prepared,
                    Err(PrepareError::Fatal(message)) => {
                        note!("pod {}/{} cannot run: {message}", me.namespace, me.name);
                        self.report_unstarted(
                            &me,
                            EXIT_CANNOT_RUN,
                            "CreateContainerError",
                            &message,
                        )
                        .await;
                        return;
                    }
                    Err(PrepareError::Retry(message)) => {
                        attempts += 1;
                        if attempts >= PREPARE_ATTEMPTS {
                            note!("pod {}/{}: giving up: {message}", me.namespace, me.name);
                            self.report_unstarted(
                                &me,
                                EXIT_CONFIG_ERROR,
                                "CreateContainerConfigError",
                                &message,
                            )
                            .await;
                            return;
                        }
                        if last_reported.as_deref() != Some(message.as_str()) {
                            note!("pod {}/{} waits: {message}", me.namespace, me.name);
                            self.report_waiting(&me, "CreateContainerConfigError", &message)
                                .await;
                            last_reported = Some(message);
                        }
                        let sender_gone = tokio::select! {
                            _ = tokio::time::sleep(PREPARE_RETRY) => false,
                            changed = stop_rx.changed() => changed.is_err(),
                        };
                        if sender_gone {
                            self.end_unstarted(
                                &me,
                                StopRequest {
                                    grace: Duration::ZERO,
                                    delete_pod: false,
                                },
                            )
                            .await;
                            return;
                        }
                    }
                }
            }
        };

        // Spawn.
        let mut child = match self.spawn(&me, &prepared) {
            Ok(child) => child,
            Err(message) => {
                note!("pod {}/{} cannot start: {message}", me.namespace, me.name);
                self.report_unstarted(&me, EXIT_CANNOT_RUN, "StartError", &message)
                    .await;
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        let started_at = rfc3339_now();
        lock_std(&self.pids).insert(me.uid.clone(), pid);
        lock_std(&self.runs).push(PodRun {
            namespace: me.namespace.clone(),
            name: me.name.clone(),
            uid: me.uid.clone(),
            pid,
            log: me.log.clone(),
            exit_code: None,
        });
        note!(
            "pod {}/{}: started {} (pid {pid}, log {})",
            me.namespace,
            me.name,
            prepared.program.display(),
            me.log.display()
        );
        self.report_running(&me, pid, &started_at).await;

        // Wait for the exit or a stop request. This task alone reaps the child, so the pid
        // cannot be recycled while it signals it.
        let mut stop_request: Option<StopRequest> = *stop_rx.borrow();
        let status = loop {
            if let Some(request) = stop_request {
                break terminate(&mut child, pid, request.grace).await;
            }
            let woke = tokio::select! {
                status = child.wait() => Ok(status),
                changed = stop_rx.changed() => Err(changed.is_err()),
            };
            match woke {
                Ok(status) => break status,
                Err(sender_gone) => {
                    stop_request = if sender_gone {
                        Some(StopRequest {
                            grace: Duration::ZERO,
                            delete_pod: false,
                        })
                    } else {
                        *stop_rx.borrow()
                    };
                }
            }
        };
        lock_std(&self.pids).remove(&me.uid);
        let code = exit_code(&status);
        if let Some(run) = lock_std(&self.runs)
            .iter_mut()
            .rev()
            .find(|r| r.uid == me.uid)
        {
            run.exit_code = Some(code);
        }
        note!(
            "pod {}/{}: pid {pid} exited with {code}",
            me.namespace,
            me.name
        );
        self.report_terminated(&me, pid, code, &started_at).await;
        // A deletion may have arrived after the exit (while reporting it): it still needs the
        // kubelet's last step, or the pod and its Job stay Terminating.
        let stop_request = stop_request.or(*stop_rx.borrow());
        if stop_request.is_some_and(|r| r.delete_pod) {
            self.force_delete(&me.namespace, &me.name, &me.uid).await;
        }
    }

    async fn prepare(
        &self,
        pod: &Pod,
        container: &Container,
        me: &PodRef,
    ) -> Result<Prepared, PrepareError> {
        if pod
            .spec
            .as_ref()
            .is_some_and(|s| s.init_containers.as_ref().is_some_and(|c| !c.is_empty()))
        {
            return Err(PrepareError::Fatal(
                "init containers are not supported by the node agent".into(),
            ));
        }
        if pod.spec.as_ref().is_some_and(|s| s.containers.len() > 1) {
            note!(
                "pod {}/{} has {} containers; only {:?} runs",
                me.namespace,
                me.name,
                pod.spec.as_ref().map_or(0, |s| s.containers.len()),
                me.container
            );
        }
        let command = container.command.clone().unwrap_or_default();
        let Some(first) = command.first() else {
            return Err(PrepareError::Fatal(
                "the container has no command, and the node agent does not know image entrypoints"
                    .into(),
            ));
        };
        let program = self.program_for(first).ok_or_else(|| {
            PrepareError::Fatal(format!("no local program is mapped for command {first:?}"))
        })?;
        let mut args: Vec<String> = command[1..].to_vec();
        args.extend(container.args.clone().unwrap_or_default());

        let container_env = self.resolve_env(pod, container, &me.namespace).await?;
        self.write_secret_volumes(pod, container, &me.namespace)
            .await?;

        std::fs::create_dir_all(me.dir.join("tmp"))
            .map_err(|e| PrepareError::Fatal(format!("cannot create {}: {e}", me.dir.display())))?;

        let mut env: Vec<(String, String)> = self
            .options
            .inherited_env
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
            .collect();
        let (api_host, api_port) = host_and_port(&self.options.server);
        env.extend([
            ("HOSTNAME".to_string(), me.name.clone()),
            ("HOME".to_string(), me.dir.display().to_string()),
            (
                "TMPDIR".to_string(),
                me.dir.join("tmp").display().to_string(),
            ),
            ("KUBERNETES_SERVICE_HOST".to_string(), api_host),
            ("KUBERNETES_SERVICE_PORT".to_string(), api_port),
        ]);
        env.extend(container_env);

        let automount = pod
            .spec
            .as_ref()
            .and_then(|s| s.automount_service_account_token)
            .unwrap_or(true);
        if automount {
            let service_account = pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".to_string());
            let ca = self
                .cluster_ca(&me.namespace)
                .await
                .map_err(PrepareError::Retry)?;
            let token = service_account_token(
                &self.client,
                &me.namespace,
                &service_account,
                Some(pod),
                self.options.token_expiration_seconds,
            )
            .await
            .map_err(|e| {
                PrepareError::Retry(format!(
                    "no token for service account {}/{service_account}: {e}",
                    me.namespace
                ))
            })?;
            let user = format!("system:serviceaccount:{}:{service_account}", me.namespace);
            let kubeconfig = write_kubeconfig(
                &me.dir,
                &self.options.server,
                &ca,
                &token,
                &me.namespace,
                &user,
            )
            .map_err(|e| PrepareError::Fatal(e.to_string()))?;
            // Last, so that the pod's own env cannot point it elsewhere.
            env.retain(|(k, _)| k != "KUBECONFIG");
            env.push(("KUBECONFIG".to_string(), kubeconfig.display().to_string()));
        } else {
            // No credentials at all, like a pod without the token volume; and no host
            // kubeconfig either (HOME is the pod's dir).
            env.retain(|(k, _)| k != "KUBECONFIG");
            env.push((
                "KUBECONFIG".to_string(),
                me.dir.join("no-kubeconfig").display().to_string(),
            ));
        }
        Ok(Prepared { program, args, env })
    }

    fn program_for(&self, command: &str) -> Option<PathBuf> {
        if let Some(path) = self.programs.get(command) {
            return Some(path.clone());
        }
        let base = Path::new(command).file_name()?.to_str()?;
        self.programs.get(base).cloned()
    }

    /// Secret volumes, as a kubelet mounts them: each item written under its mount path (the
    /// process sees the host's filesystem, so the files go where the pod expects them; one pod
    /// at a time uses a given path in the journeys). Read-only to the owner and group.
    async fn write_secret_volumes(
        &self,
        pod: &Pod,
        container: &Container,
        namespace: &str,
    ) -> Result<(), PrepareError> {
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for mount in container.volume_mounts.iter().flatten() {
            let Some(secret) = volumes
                .iter()
                .find(|v| v.name == mount.name)
                .and_then(|v| v.secret.clone())
            else {
                continue;
            };
            let name = secret.secret_name.clone().unwrap_or_default();
            let dir = std::path::Path::new(&mount.mount_path);
            std::fs::create_dir_all(dir).map_err(|e| {
                PrepareError::Fatal(format!("cannot create {}: {e}", dir.display()))
            })?;
            for item in secret.items.iter().flatten() {
                let Some(value) = self.secret_value(namespace, &name, &item.key).await? else {
                    return Err(PrepareError::Retry(format!(
                        "volume {}: secret {namespace}/{name} or its key {:?} is missing",
                        mount.name, item.key
                    )));
                };
                let path = dir.join(&item.path);
                std::fs::write(&path, value).map_err(|e| {
                    PrepareError::Fatal(format!("cannot write {}: {e}", path.display()))
                })?;
                use std::os::unix::fs::PermissionsExt;
                let mode = secret.default_mode.unwrap_or(0o644) as u32;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
            }
        }
        Ok(())
    }

    async fn resolve_env(
        &self,
        pod: &Pod,
        container: &Container,
        namespace: &str,
    ) -> Result<Vec<(String, String)>, PrepareError> {
        if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
            note!(
                "pod {namespace}/{}: envFrom is not supported and is ignored",
                pod.name_any()
            );
        }
        let mut out = Vec::new();
        for var in container.env.iter().flatten() {
            if let Some(value) = &var.value {
                out.push((var.name.clone(), value.clone()));
                continue;
            }
            let Some(source) = &var.value_from else {
                out.push((var.name.clone(), String::new()));
                continue;
            };
            if let Some(selector) = &source.secret_key_ref {
                let optional = selector.optional.unwrap_or(false);
                match self
                    .secret_value(namespace, &selector.name, &selector.key)
                    .await?
                {
                    Some(value) => out.push((var.name.clone(), value)),
                    None if optional => {}
                    None => {
                        return Err(PrepareError::Retry(format!(
                            "{}: secret {namespace}/{} or its key {:?} is missing",
                            var.name, selector.name, selector.key
                        )));
                    }
                }
            } else if let Some(selector) = &source.config_map_key_ref {
                let optional = selector.optional.unwrap_or(false);
                match self
                    .config_map_value(namespace, &selector.name, &selector.key)
                    .await?
                {
                    Some(value) => out.push((var.name.clone(), value)),
                    None if optional => {}
                    None => {
                        return Err(PrepareError::Retry(format!(
                            "{}: configmap {namespace}/{} or its key {:?} is missing",
                            var.name, selector.name, selector.key
                        )));
                    }
                }
            } else if let Some(selector) = &source.field_ref {
                match field_value(pod, &selector.field_path) {
                    Some(value) => out.push((var.name.clone(), value)),
                    None => {
                        return Err(PrepareError::Fatal(format!(
                            "{}: fieldPath {:?} is not supported",
                            var.name, selector.field_path
                        )));
                    }
                }
            } else {
                note!(
                    "pod {namespace}/{}: {} uses an unsupported valueFrom; it is left unset",
                    pod.name_any(),
                    var.name
                );
            }
        }
        Ok(out)
    }

    async fn secret_value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<String>, PrepareError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = api.get_opt(name).await.map_err(|e| {
            PrepareError::Retry(format!("cannot read secret {namespace}/{name}: {e}"))
        })?;
        let Some(bytes) = secret.and_then(|s| s.data).and_then(|mut d| d.remove(key)) else {
            return Ok(None);
        };
        String::from_utf8(bytes.0).map(Some).map_err(|_| {
            PrepareError::Fatal(format!(
                "secret {namespace}/{name} key {key:?} is not UTF-8"
            ))
        })
    }

    async fn config_map_value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<String>, PrepareError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let map = api.get_opt(name).await.map_err(|e| {
            PrepareError::Retry(format!("cannot read configmap {namespace}/{name}: {e}"))
        })?;
        let Some(map) = map else {
            return Ok(None);
        };
        if let Some(value) = map.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(Some(value.clone()));
        }
        match map.binary_data.and_then(|mut d| d.remove(key)) {
            Some(bytes) => String::from_utf8(bytes.0).map(Some).map_err(|_| {
                PrepareError::Fatal(format!(
                    "configmap {namespace}/{name} key {key:?} is not UTF-8"
                ))
            }),
            None => Ok(None),
        }
    }

    /// The CA a pod would trust: the configured one, or `kube-root-ca.crt` of its namespace.
    async fn cluster_ca(&self, namespace: &str) -> Result<String, String> {
        if let Some(pem) = &self.options.ca_pem {
            return Ok(pem.clone());
        }
        cluster_ca(&self.client, namespace).await
    }

    fn spawn(&self, me: &PodRef, prepared: &Prepared) -> Result<tokio::process::Child, String> {
        std::fs::create_dir_all(&me.dir)
            .map_err(|e| format!("cannot create {}: {e}", me.dir.display()))?;
        let stdout = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&me.log)
            .map_err(|e| format!("cannot open {}: {e}", me.log.display()))?;
        let stderr = stdout
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", me.log.display()))?;
        let mut command = tokio::process::Command::new(&prepared.program);
        command
            .args(&prepared.args)
            .env_clear()
            .envs(prepared.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&me.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            // If the runner task is aborted, the process dies with it.
            .kill_on_drop(true);
        command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", prepared.program.display()))
    }

    // --------------------------------------------------------------- status reports

    async fn report_waiting(&self, me: &PodRef, reason: &str, message: &str) {
        let status = json!({
            "phase": "Pending",
            "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}],
            "conditions": [
                pod_condition("PodScheduled", "True", None),
                pod_condition("Initialized", "True", None),
                pod_condition("ContainersReady", "False", Some("ContainersNotReady")),
                pod_condition("Ready", "False", Some("ContainersNotReady")),
            ],
            "containerStatuses": [{
                "name": me.container,
                "image": me.image,
                "imageID": "",
                "ready": false,
                "started": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}},
            }],
        });
        self.patch_pod_status(&me.namespace, &me.name, status).await;
    }

    async fn report_running(&self, me: &PodRef, pid: u32, started_at: &str) {
        let status = json!({
            "phase": "Running",
            "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}],
            "startTime": started_at,
            "conditions": [
                pod_condition("PodScheduled", "True", None),
                pod_condition("Initialized", "True", None),
                pod_condition("ContainersReady", "True", None),
                pod_condition("Ready", "True", None),
            ],
            "containerStatuses": [{
                "name": me.container,
                "image": me.image,
                "imageID": "",
                "containerID": container_id(pid),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": started_at}},
            }],
        });
        self.patch_pod_status(&me.namespace, &me.name, status).await;
    }

    async fn report_terminated(&self, me: &PodRef, pid: u32, code: i32, started_at: &str) {
        let (phase, reason) = if code == 0 {
            ("Succeeded", "Completed")
        } else {
            ("Failed", "Error")
        };
        let status = json!({
            "phase": phase,
            "conditions": [
                pod_condition("ContainersReady", "False", Some("PodCompleted")),
                pod_condition("Ready", "False", Some("PodCompleted")),
            ],
            "containerStatuses": [{
                "name": me.container,
                "image": me.image,
                "imageID": "",
                "containerID": container_id(pid),
                "ready": false,
                "started": false,
                "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "startedAt": started_at,
                    "finishedAt": rfc3339_now(),
                    "containerID": container_id(pid),
                }},
            }],
        });
        self.patch_pod_status(&me.namespace, &me.name, status).await;
    }

    /// The process never ran: the pod fails with `code` (as a kubelet with restartPolicy Never
    /// would after giving up).
    async fn report_unstarted(&self, me: &PodRef, code: i32, reason: &str, message: &str) {
        let status = json!({
            "phase": "Failed",
            "message": message,
            "conditions": [
                pod_condition("ContainersReady", "False", Some("PodFailed")),
                pod_condition("Ready", "False", Some("PodFailed")),
            ],
            "containerStatuses": [{
                "name": me.container,
                "image": me.image,
                "imageID": "",
                "ready": false,
                "started": false,
                "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "message": message,
                    "finishedAt": rfc3339_now(),
                }},
            }],
        });
        self.patch_pod_status(&me.namespace, &me.name, status).await;
    }

    /// Stopped before the process started.
    async fn end_unstarted(&self, me: &PodRef, request: StopRequest) {
        if request.delete_pod {
            self.force_delete(&me.namespace, &me.name, &me.uid).await;
        } else {
            self.report_unstarted(
                me,
                137,
                "Killed",
                "stopped by the node agent before it started",
            )
            .await;
        }
    }
}

// ------------------------------------------------------------------------------------ helpers

/// A ServiceAccount token from the TokenRequest API (default audience), bound to `bound_pod`
/// when given, so that deleting the pod revokes it, as with a kubelet-mounted token.
pub async fn service_account_token(
    client: &Client,
    namespace: &str,
    service_account: &str,
    bound_pod: Option<&Pod>,
    expiration_seconds: i64,
) -> Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: bound_pod.map(|pod| BoundObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Pod".to_string()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        status: None,
    };
    let response = api
        .create_token_request(service_account, &PostParams::default(), &request)
        .await?;
    response
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "the TokenRequest returned no token".into())
}

/// The cluster CA from the `kube-root-ca.crt` ConfigMap of `namespace`.
pub async fn cluster_ca(client: &Client, namespace: &str) -> Result<String, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = api
        .get_opt(ROOT_CA_CONFIGMAP)
        .await
        .map_err(|e| format!("cannot read configmap {namespace}/{ROOT_CA_CONFIGMAP}: {e}"))?;
    map.and_then(|m| m.data)
        .and_then(|mut d| d.remove("ca.crt"))
        .filter(|pem| pem.contains("BEGIN CERTIFICATE"))
        .ok_or_else(|| format!("configmap {namespace}/{ROOT_CA_CONFIGMAP} has no ca.crt yet"))
}

/// Writes `<dir>/ca.crt` and `<dir>/kubeconfig` (mode 0600) for a bearer token, and returns
/// the kubeconfig's path.
pub fn write_kubeconfig(
    dir: &Path,
    server: &str,
    ca_pem: &str,
    token: &str,
    namespace: &str,
    user: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca_path = dir.join("ca.crt");
    write_private(&ca_path, ca_pem.as_bytes())?;
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "ghost-e2e",
            "cluster": {"server": server, "certificate-authority": ca_path.display().to_string()},
        }],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{
            "name": "ghost-e2e",
            "context": {"cluster": "ghost-e2e", "user": user, "namespace": namespace},
        }],
        "current-context": "ghost-e2e",
    });
    let text = serde_yaml::to_string(&doc).map_err(|e| format!("kubeconfig: {e}"))?;
    let path = dir.join("kubeconfig");
    write_private(&path, text.as_bytes())?;
    Ok(path)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// Sends `SIG<sig>` to `pid` with kill(1).
pub async fn signal(pid: u32, sig: &str) -> bool {
    if pid == 0 {
        return false;
    }
    tokio::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// SIGTERM, then SIGKILL after `grace`; returns the exit status.
async fn terminate(
    child: &mut tokio::process::Child,
    pid: u32,
    grace: Duration,
) -> std::io::Result<ExitStatus> {
    if !signal(pid, "TERM").await {
        let _ = child.start_kill();
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            note!("pid {pid} still runs after {grace:?}: SIGKILL");
            if !signal(pid, "KILL").await {
                let _ = child.start_kill();
            }
            child.wait().await
        }
    }
}

fn exit_code(status: &std::io::Result<ExitStatus>) -> i32 {
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 255,
    }
}

/// Records a stop request unless one is there already; true when recorded.
fn request_stop(entry: &mut PodEntry, request: StopRequest) -> bool {
    entry.stop.send_if_modified(|current| {
        if current.is_none() {
            *current = Some(request);
            true
        } else {
            false
        }
    })
}

/// The pod's grace period (deletion's, else the spec's), capped.
fn grace_of(pod: &Pod, max: Duration) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(max)
}

/// The downward API fields a process can ask for.
fn field_value(pod: &Pod, path: &str) -> Option<String> {
    let spec = pod.spec.as_ref();
    match path {
        "metadata.name" => pod.metadata.name.clone(),
        "metadata.namespace" => pod.metadata.namespace.clone(),
        "metadata.uid" => pod.metadata.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" | "status.podIP" => Some(NODE_IP.to_string()),
        _ => {
            let (map, key) = if let Some(rest) = path.strip_prefix("metadata.labels[") {
                (pod.metadata.labels.as_ref(), rest)
            } else if let Some(rest) = path.strip_prefix("metadata.annotations[") {
                (pod.metadata.annotations.as_ref(), rest)
            } else {
                return None;
            };
            let key = key
                .strip_suffix(']')?
                .trim_matches(|c: char| c == '\'' || c == '"');
            Some(map.and_then(|m| m.get(key).cloned()).unwrap_or_default())
        }
    }
}

fn first_container_name(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_else(|| "main".to_string())
}

fn pod_condition(type_: &str, status: &str, reason: Option<&str>) -> Value {
    let mut condition = json!({
        "type": type_,
        "status": status,
        "lastTransitionTime": rfc3339_now(),
    });
    if let (Some(reason), Some(map)) = (reason, condition.as_object_mut()) {
        map.insert("reason".to_string(), Value::String(reason.to_string()));
    }
    condition
}

fn container_id(pid: u32) -> String {
    format!("ghost-node-agent://{pid}")
}

/// `https://host:port/...` → (host, port); 443 when no port is given.
fn host_and_port(server: &str) -> (String, String) {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => (
            host.trim_matches(|c: char| c == '[' || c == ']')
                .to_string(),
            port.to_string(),
        ),
        _ => (authority.to_string(), "443".to_string()),
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn rfc3339_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A MicroTime (the Lease's renewTime).
fn micro_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn lock_std<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

pub fn is_not_found(error: &kube::Error) -> bool {
    api_code(error) == Some(404)
}

pub fn is_conflict(error: &kube::Error) -> bool {
    api_code(error) == Some(409)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn host_and_port_of_servers() {
        assert_eq!(
            host_and_port("https://127.0.0.1:26443"),
            ("127.0.0.1".to_string(), "26443".to_string())
        );
        assert_eq!(
            host_and_port("https://example.test/"),
            ("example.test".to_string(), "443".to_string())
        );
        assert_eq!(
            host_and_port("https://[::1]:6443/x"),
            ("::1".to_string(), "6443".to_string())
        );
    }

    #[test]
    fn grace_is_capped() {
        let mut pod = Pod::default();
        assert_eq!(
            grace_of(&pod, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        pod.metadata.deletion_grace_period_seconds = Some(2);
        assert_eq!(
            grace_of(&pod, Duration::from_secs(10)),
            Duration::from_secs(2)
        );
        pod.metadata.deletion_grace_period_seconds = Some(-1);
        assert_eq!(grace_of(&pod, Duration::from_secs(10)), Duration::ZERO);
    }

    #[test]
    fn downward_api_fields() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".to_string());
        pod.metadata.labels = Some(BTreeMap::from([("a".to_string(), "b".to_string())]));
        assert_eq!(field_value(&pod, "metadata.name").as_deref(), Some("p"));
        assert_eq!(
            field_value(&pod, "metadata.labels['a']").as_deref(),
            Some("b")
        );
        assert_eq!(
            field_value(&pod, "metadata.labels['z']").as_deref(),
            Some("")
        );
        assert_eq!(field_value(&pod, "spec.unknown"), None);
    }
}
