//! What every Kubernetes journey shares: kubectl and other commands, the cluster `node.sh env`
//! describes, the summary of measured figures, the cleanup of what a journey labelled, and
//! ServiceAccount tokens (for the journeys that act as an engine pod).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The operator's namespace; the engine ServiceAccount and its RoleBinding are there too, so the
/// journeys' migrations live in it.
pub const NAMESPACE: &str = "ghost-system";
pub const NODE: &str = "ghost-e2e-node";
/// Marks everything a journey creates, for the cleanup.
pub const E2E_LABEL: &str = "ghost.dev/e2e";
pub const WAIT_SUCCEEDED: &str = "180s";

/// What `node.sh env` (through `cluster.sh env`) reports.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
    pub run_dir: PathBuf,
    pub server: String,
    pub ca_pem: String,
}

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

impl Cluster {
    /// The cluster `script env` printed (`export` lines), and every variable.
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

/// Deletes what the journey labelled, waiting for the operator's finalizers; a migration whose
/// finalizer is not done in 60 s loses it, so the next journey starts clean.
pub async fn delete_labelled(cluster: &Cluster) {
    let selector = format!("{E2E_LABEL}=true");
    let delete = |kind: &'static str| {
        let selector = selector.clone();
        async move {
            let args = [
                "-n",
                NAMESPACE,
                "delete",
                kind,
                "-l",
                selector.as_str(),
                "--wait=true",
                "--timeout=60s",
            ];
            cluster.kubectl_in(&args, None).await
        }
    };
    let deleted = delete("schemamigrations.ghost.dev").await;
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
    let secrets = delete("secrets").await;
    if !secrets.ok {
        eprintln!(
            "journeys: deleting the Secrets failed: {}",
            secrets.stderr.trim()
        );
    }
}

// ------------------------------------------------------------------------------ tokens

/// A ServiceAccount token from the TokenRequest API (default audience), bound to `bound_pod`
/// when given, so that deleting the pod revokes it, as with a kubelet-mounted token.
pub async fn service_account_token(
    client: &Client,
    namespace: &str,
    service_account: &str,
    bound_pod: Option<&Pod>,
    expiration_seconds: i64,
) -> Result<String, String> {
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
        .await
        .map_err(|e| format!("TokenRequest for {namespace}/{service_account}: {e}"))?;
    response
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "the TokenRequest returned no token".to_string())
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
) -> Result<PathBuf, String> {
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

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
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
