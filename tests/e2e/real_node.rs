//! The harness of the journeys on real pods: the control plane with a real node
//! (`e2e/k8s/node.sh`: containerd, kubelet, kube-proxy, kube-scheduler, pods on their own bridge),
//! the image built from the Dockerfile (`e2e/k8s/image.sh`), and the operator installed as users
//! install it, with `helm install` of `charts/ghost`. Nothing runs as a local process in place
//! of a pod.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Cluster, NAMESPACE, Output, REPO, delete_labelled, elapsed, run};

pub const RELEASE: &str = "ghost";
/// The chart's operator Deployment for release `ghost`.
pub const OPERATOR_DEPLOYMENT: &str = "ghost-operator";

/// The cluster with its node, and how pods reach the test databases.
#[derive(Clone, Debug)]
pub struct RealNode {
    pub cluster: Cluster,
    /// The pods' bridge address: the apiserver and the database relays listen there.
    pub bridge_ip: String,
    pub image: String,
    pub helm: PathBuf,
}

pub static NODE_SLOT: tokio::sync::Mutex<Option<RealNode>> = tokio::sync::Mutex::const_new(None);

pub async fn node_sh(args: &[&str]) -> Output {
    let script = Path::new(REPO).join("e2e/k8s/node.sh");
    let script = script.display().to_string();
    let mut full = vec![script.as_str()];
    full.extend_from_slice(args);
    run(Path::new("bash"), &full, None, &[]).await
}

/// Starts (or finds) the node and `helm install`s the chart once per test binary.
pub async fn node(slot: &mut Option<RealNode>) -> RealNode {
    if let Some(node) = slot.as_ref() {
        return node.clone();
    }
    let t0 = Instant::now();
    // A new run of the journeys: a new summary.
    let _ = std::fs::remove_file(crate::harness::summary_path());
    let start = node_sh(&["start"]).await;
    assert!(
        start.ok,
        "e2e/k8s/node.sh start failed (build the image first: e2e/k8s/image.sh build):\n{}\n{}",
        start.stdout, start.stderr
    );
    let env = node_sh(&["env"]).await;
    assert!(env.ok, "e2e/k8s/node.sh env failed: {}", env.stderr);
    let (cluster, vars) = Cluster::from_env("node.sh", &env.stdout);
    let var = |name: &str| {
        vars.get(name)
            .cloned()
            .unwrap_or_else(|| panic!("node.sh env did not print {name}:\n{}", env.stdout))
    };
    eprintln!(
        "journeys: node Ready in {} ({})",
        elapsed(t0),
        cluster.server
    );

    let helm_build = run(
        Path::new("bash"),
        &[&format!("{REPO}/e2e/helm/build.sh")],
        None,
        &[],
    )
    .await;
    assert!(
        helm_build.ok,
        "e2e/helm/build.sh failed: {}",
        helm_build.stderr
    );
    let helm = PathBuf::from(helm_build.stdout.lines().last().unwrap_or_default().trim());
    let node = RealNode {
        cluster,
        bridge_ip: var("GHOST_NODE_BRIDGE_IP"),
        image: var("GHOST_NODE_IMAGE"),
        helm,
    };
    crate::fixture::set_pods_reach_databases_at(&node.bridge_ip);
    node.install().await;
    *slot = Some(node.clone());
    node
}

impl RealNode {
    pub async fn helm(&self, args: &[&str]) -> Output {
        let kubeconfig = self.cluster.kubeconfig.display().to_string();
        let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("real-pods-helm");
        let home = home.display().to_string();
        run(
            &self.helm,
            args,
            None,
            &[
                ("KUBECONFIG", kubeconfig.as_str()),
                ("HELM_CACHE_HOME", home.as_str()),
                ("HELM_CONFIG_HOME", home.as_str()),
                ("HELM_DATA_HOME", home.as_str()),
            ],
        )
        .await
    }

    /// The image's repository and tag, as `--set` values.
    fn image_values(&self) -> (String, String) {
        let (repository, tag) = self
            .image
            .rsplit_once(':')
            .unwrap_or((self.image.as_str(), "latest"));
        (
            format!("image.repository={repository}"),
            format!("image.tag={tag}"),
        )
    }

    /// `helm upgrade --install` of charts/ghost with the locally built image; waits until the
    /// operator's Deployment is available (its readiness probe passes).
    pub async fn install(&self) {
        let t0 = Instant::now();
        // As README's upgrade says: Helm installs `crds/` once and never updates them, and the
        // node's etcd outlives a run, so a CRD changed since would otherwise stay old.
        let crds = self
            .cluster
            .kubectl_in(
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "-f",
                    &format!("{REPO}/charts/ghost/crds/"),
                ],
                None,
            )
            .await;
        assert!(
            crds.ok,
            "kubectl apply of the chart's CRD failed: {}",
            crds.stderr
        );
        let (repository, tag) = self.image_values();
        let out = self
            .helm(&[
                "upgrade",
                "--install",
                RELEASE,
                "charts/ghost",
                "--namespace",
                NAMESPACE,
                "--create-namespace",
                "--set",
                repository.as_str(),
                "--set",
                tag.as_str(),
                // Only the imported image exists: a pull would fail.
                "--set",
                "image.pullPolicy=Never",
                "--set",
                "engine.startTimeoutSeconds=120",
                "--wait",
                "--timeout",
                "180s",
            ])
            .await;
        assert!(
            out.ok,
            "helm upgrade --install failed:\n{}\n{}\n{}",
            out.stdout,
            out.stderr,
            self.describe_operator().await
        );
        eprintln!(
            "journeys: helm install: operator available in {}",
            elapsed(t0)
        );
    }

    pub async fn describe_operator(&self) -> String {
        let out = self
            .cluster
            .kubectl_in(
                &[
                    "-n",
                    NAMESPACE,
                    "describe",
                    "deployment,pods",
                    "-l",
                    "app.kubernetes.io/component=operator",
                ],
                None,
            )
            .await;
        let logs = self
            .cluster
            .kubectl_in(
                &[
                    "-n",
                    NAMESPACE,
                    "logs",
                    &format!("deployment/{OPERATOR_DEPLOYMENT}"),
                    "--tail=60",
                ],
                None,
            )
            .await;
        format!(
            "{}{}\n----- operator log -----\n{}{}",
            out.stdout, out.stderr, logs.stdout, logs.stderr
        )
    }

    /// The pods of `job` (label `job-name`), oldest first.
    pub async fn pods_of(&self, job: &str) -> Vec<Value> {
        self.pods(&format!("job-name={job}")).await
    }

    /// The pods matching `selector` in the journeys' namespace, oldest first.
    pub async fn pods(&self, selector: &str) -> Vec<Value> {
        let text = self
            .cluster
            .kubectl(
                &[
                    "-n",
                    NAMESPACE,
                    "get",
                    "pods",
                    "-l",
                    selector,
                    "--sort-by=.metadata.creationTimestamp",
                    "-o",
                    "json",
                ],
                None,
            )
            .await;
        let list: Value = serde_json::from_str(&text).expect("pods json");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// `kubectl logs POD` (through the kubelet).
    pub async fn logs(&self, pod: &str) -> String {
        let out = self
            .cluster
            .kubectl_in(&["-n", NAMESPACE, "logs", pod], None)
            .await;
        assert!(out.ok, "kubectl logs {pod} failed: {}", out.stderr);
        out.stdout
    }

    /// Deletes what the journey labelled, waiting for the operator's finalizers.
    pub async fn clean_up(&self) {
        delete_labelled(&self.cluster).await;
    }

    /// Cluster state for a failed journey.
    pub async fn dump(&self) {
        eprintln!(
            "----- cluster state -----\n{}\n{}",
            self.cluster.state().await,
            self.describe_operator().await
        );
    }
}

/// The RFC 3339 time at `pointer` in `value`.
pub fn time_at(value: &Value, pointer: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    value
        .pointer(pointer)?
        .as_str()?
        .parse::<chrono::DateTime<chrono::Utc>>()
        .ok()
}

/// From a pod's creation to its first container's start.
pub fn pod_start_latency(pod: &Value) -> Option<Duration> {
    let created = time_at(pod, "/metadata/creationTimestamp")?;
    let status = pod.pointer("/status/containerStatuses/0")?;
    let started = time_at(status, "/state/running/startedAt")
        .or_else(|| time_at(status, "/state/terminated/startedAt"))?;
    (started - created).to_std().ok()
}
