//! Journeys on real pods (DESIGN.md §4, tier 5): the operator installed with `helm install` of
//! `charts/ghost` runs as its Deployment's pod, every engine is a real pod of its Job, started by
//! a kubelet through containerd from the image built from the Dockerfile, with the securityContext
//! `job.rs` writes, its ServiceAccount token and in-cluster config. The harness is
//! `tests/e2e/real_node.rs` (the node: `e2e/k8s/node.sh`; the image: `e2e/k8s/image.sh`); the
//! table, the writer and the manifests are `tests/e2e/fixture.rs`.
//!
//! Each journey prints `real-pods: <name>: ...` lines with what it measured; they also go to
//! `$CARGO_TARGET_TMPDIR/k8s-journeys/summary.txt`, which CI prints.

mod common;

#[path = "e2e/fixture.rs"]
mod fixture;
#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/node_agent.rs"]
mod node_agent;
#[path = "e2e/real_node.rs"]
mod real_node;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use mysql_async::prelude::Queryable;
use serde_json::Value;

use fixture::{Manifest, Rows, TABLE, Table, Writer, Writes};
use harness::{NAMESPACE, elapsed};
use real_node::{NODE, RealNode, pod_start_latency};

const PHASE_TIMEOUT: Duration = Duration::from_secs(180);
const WRITE_PAUSE: Duration = Duration::from_millis(3);

macro_rules! journey {
    ($test:ident, $body:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let mut slot = NODE.lock().await;
            let t0 = Instant::now();
            let node = real_node::node(&mut slot).await;
            let result = AssertUnwindSafe($body(&node)).catch_unwind().await;
            if result.is_err() {
                node.dump().await;
            }
            node.clean_up().await;
            let line = format!(
                "real-pods: {}: {} in {}",
                stringify!($test),
                if result.is_ok() { "passed" } else { "FAILED" },
                elapsed(t0)
            );
            eprintln!("{line}");
            harness::append_summary(&line);
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        }
    };
}

journey!(helm_installed_operator_migrates_on_real_pods, basic);
journey!(throttle_annotation_on_a_real_pod, throttle);
journey!(real_engine_pod_deleted_mid_copy, pod_deleted);
journey!(postpone_then_cut_over_on_a_real_pod, postpone);
journey!(two_migrations_of_one_table_on_real_pods, two_on_one_table);
journey!(panic_annotation_on_a_real_pod, panic);
journey!(delete_a_migration_whose_pod_runs, delete_running);
journey!(an_engine_killed_at_its_memory_limit, oom_killed);
journey!(drain_the_node_mid_copy, drain);
journey!(helm_upgrade_of_the_operator_mid_migration, helm_upgrade);
journey!(
    helm_uninstall_leaves_the_crd_and_the_migrations,
    helm_uninstall
);

fn say(journey: &str, text: impl AsRef<str>) {
    let line = format!("real-pods: {journey}: {}", text.as_ref());
    eprintln!("{line}");
    harness::append_summary(&line);
}

fn fmt(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// The journey's manifest, with the primary reached on the pods' bridge.
fn manifest(node: &RealNode, journey: &str, table: &Table, alter: &str) -> Manifest {
    let port = common::primary().port;
    Manifest::new(journey, table.database(), alter).reached_at(&node.bridge_ip, port)
}

async fn apply(node: &RealNode, manifest: &Manifest) {
    node.cluster
        .kubectl(&["apply", "-f", "-"], Some(manifest.render().as_str()))
        .await;
}

async fn smig(node: &RealNode, name: &str) -> Value {
    let target = format!("schemamigrations.ghost.dev/{name}");
    let text = node
        .cluster
        .kubectl(
            &["-n", NAMESPACE, "get", target.as_str(), "-o", "json"],
            None,
        )
        .await;
    serde_json::from_str(&text).expect("smig json")
}

/// Polls the SchemaMigration until `done` holds; returns it and how long it took.
async fn wait_smig(
    node: &RealNode,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let t0 = Instant::now();
    loop {
        let smig = smig(node, name).await;
        if done(&smig) {
            return (smig, t0.elapsed());
        }
        assert!(
            t0.elapsed() < PHASE_TIMEOUT,
            "{name}: not {what} after {PHASE_TIMEOUT:?}; last status:\n{:#}",
            smig["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Copying, with at least one row copied.
async fn wait_copying(node: &RealNode, name: &str) -> (Value, Duration) {
    wait_smig(node, name, "copying", |s| {
        s["status"]["phase"] == "Copying" && rows_copied(s) > 0
    })
    .await
}

/// The annotations that make a `Manifest::slow` copy fast again.
async fn speed_up(node: &RealNode, name: &str) {
    node.cluster
        .annotate(name, &["ghost/chunk-size=2000", "ghost/nice-ratio=0"])
        .await;
}

/// The name of the Job's first running pod other than `gone`.
async fn next_running_pod(node: &RealNode, job: &str, gone: &str) -> String {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let pods = node.pods_of(job).await;
        if let Some(pod) = pods.iter().find(|p| {
            p["metadata"]["name"] != gone
                && p["status"]["containerStatuses"][0]["state"]["running"].is_object()
        }) {
            return pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no running pod of {job} after {gone}: {pods:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pod's log shows it resumed the copy after the checkpoint.
async fn assert_resumed(node: &RealNode, pod: &str) {
    let log = node.logs(pod).await;
    assert!(
        log.contains("resuming the row copy after the checkpoint"),
        "{pod} did not resume:\n{log}"
    );
}

fn condition_true(smig: &Value, type_: &str) -> bool {
    smig["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    })
}

fn rows_copied(smig: &Value) -> i64 {
    smig["status"]["progress"]["rowsCopied"]
        .as_i64()
        .unwrap_or(-1)
}

fn job_of(smig: &Value) -> String {
    let job = smig["status"]["job"].as_str().unwrap_or_default();
    assert!(!job.is_empty(), "status.job is empty: {:#}", smig["status"]);
    job.to_string()
}

async fn wait_succeeded(node: &RealNode, manifest: &Manifest) -> Duration {
    let t0 = Instant::now();
    let target = manifest.target();
    let waited = node
        .cluster
        .kubectl_in(
            &[
                "-n",
                NAMESPACE,
                "wait",
                "--for=condition=Succeeded",
                target.as_str(),
                "--timeout=180s",
            ],
            None,
        )
        .await;
    assert!(
        waited.ok,
        "{} did not succeed: {}{}\nstatus: {:#}",
        manifest.name,
        waited.stdout,
        waited.stderr,
        smig(node, &manifest.name).await["status"]
    );
    t0.elapsed()
}

async fn assert_rows_equal(journey: &str, table: &mut Table, writes: &Writes) {
    let actual = table.rows().await;
    assert!(
        actual == writes.expected,
        "{journey}: rows differ after the migration: {} expected, {} found",
        writes.expected.len(),
        actual.len()
    );
    say(
        journey,
        format!(
            "{} rows equal the writer's model after {} concurrent writes",
            actual.len(),
            writes.total()
        ),
    );
}

/// What a real engine pod must have been: on the node, with job.rs's securityContext, exited 0.
fn assert_real_engine_pod(pod: &Value) {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    assert_eq!(
        pod["spec"]["nodeName"], "ghost-e2e-node",
        "{name} was not bound to the node"
    );
    let container = &pod["spec"]["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(
        security["readOnlyRootFilesystem"], true,
        "{name}: {security:#}"
    );
    assert_eq!(
        security["allowPrivilegeEscalation"], false,
        "{name}: {security:#}"
    );
    let pod_security = &pod["spec"]["securityContext"];
    assert_eq!(
        pod_security["runAsNonRoot"], true,
        "{name}: {pod_security:#}"
    );
    assert!(
        pod["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.244.0.")),
        "{name} has no address on the pods' bridge: {:#}",
        pod["status"]
    );
}

// ------------------------------------------------------------------------------ journeys

/// `helm install` → `kubectl apply` → a real engine pod adds the column while a writer runs →
/// `kubectl wait --for=condition=Succeeded` → rows equal; the pod was real and exited 0.
async fn basic(node: &RealNode) {
    const J: &str = "basic";
    let mut table = Table::create("k8s_real_basic", 20_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let manifest = manifest(node, J, &table, "ADD COLUMN age INT NOT NULL DEFAULT 0")
        .with_spec("  copy:\n    chunkSize: 1000\n");
    let applied = Instant::now();
    apply(node, &manifest).await;
    let waited = wait_succeeded(node, &manifest).await;
    say(
        J,
        format!(
            "{} Succeeded {} after kubectl apply (wait {})",
            manifest.name,
            elapsed(applied),
            fmt(waited)
        ),
    );
    let writes = writer.stop().await;
    assert!(
        table.columns().await.iter().any(|c| c == "age"),
        "no column age"
    );
    assert_rows_equal(J, &mut table, &writes).await;

    let smig = smig(node, &manifest.name).await;
    let job = job_of(&smig);
    let pods = node.pods_of(&job).await;
    assert_eq!(pods.len(), 1, "pods of {job}: {pods:#?}");
    let pod = &pods[0];
    assert_real_engine_pod(pod);
    assert_eq!(pod["status"]["phase"], "Succeeded", "{:#}", pod["status"]);
    let exit = &pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"];
    assert_eq!(exit, 0, "{:#}", pod["status"]);
    let pod_name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    say(
        J,
        format!(
            "engine pod {pod_name}: started {} after its creation, exit 0",
            pod_start_latency(pod).map_or_else(|| "?".to_string(), fmt)
        ),
    );
    // The engine spoke to the apiserver in-cluster, with its ServiceAccount's token.
    let log = node.logs(&pod_name).await;
    assert!(
        log.contains("migration starting") || log.contains("\"migration starting\""),
        "the engine pod's log (kubectl logs) does not show the migration:\n{log}"
    );
}

/// `kubectl annotate smig … ghost/throttle=true` on a real engine pod: `.status` shows the
/// throttle, and `=false` lets it finish.
async fn throttle(node: &RealNode) {
    const J: &str = "throttle";
    let mut table = Table::create("k8s_real_throttle", 20_000).await;
    let before = table.rows().await;
    let manifest = manifest(node, J, &table, "ADD COLUMN t INT").slow();
    apply(node, &manifest).await;
    let (_, took) = wait_copying(node, &manifest.name).await;
    say(J, format!("copying {} after kubectl apply", fmt(took)));

    let t0 = Instant::now();
    node.cluster
        .annotate(&manifest.name, &["ghost/throttle=true"])
        .await;
    let (_, to_status) = wait_smig(node, &manifest.name, "throttled", |s| {
        condition_true(s, "Throttled")
    })
    .await;
    say(
        J,
        format!(
            "annotate throttle=true → status Throttled in {}",
            fmt(to_status)
        ),
    );
    // Throttled: the copy stands still.
    let held = rows_copied(&smig(node, &manifest.name).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = rows_copied(&smig(node, &manifest.name).await);
    assert_eq!(held, later, "rows were copied while throttled");

    node.cluster
        .annotate(
            &manifest.name,
            &[
                "ghost/throttle=false",
                "ghost/chunk-size=2000",
                "ghost/nice-ratio=0",
            ],
        )
        .await;
    let (_, released) = wait_smig(node, &manifest.name, "no longer throttled", |s| {
        !condition_true(s, "Throttled")
    })
    .await;
    say(
        J,
        format!("annotate throttle=false → released in {}", fmt(released)),
    );
    wait_succeeded(node, &manifest).await;
    assert_eq!(table.rows().await, before, "the rows changed");
    say(
        J,
        format!("Succeeded {} after the first annotate", elapsed(t0)),
    );
}

/// `kubectl delete pod` of the real engine pod after its first checkpoint: the Job's next pod
/// resumes after the checkpoint's key, and the writer's rows are all there.
async fn pod_deleted(node: &RealNode) {
    const J: &str = "pod-deleted";
    let mut table = Table::create("k8s_real_pod", 30_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let manifest = manifest(node, J, &table, "ADD COLUMN c INT").slow();
    apply(node, &manifest).await;
    let (smig, took) = wait_smig(node, &manifest.name, "checkpointed", |s| {
        s["status"]["phase"] == "Copying" && s["status"]["progress"]["checkpointTime"].is_string()
    })
    .await;
    let job = job_of(&smig);
    say(J, format!("checkpointed {} after apply", fmt(took)));
    let pods = node.pods_of(&job).await;
    assert_eq!(pods.len(), 1, "{pods:#?}");
    let first = pods[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_real_engine_pod(&pods[0]);

    let t0 = Instant::now();
    node.cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "delete",
                "pod",
                first.as_str(),
                "--wait=true",
            ],
            None,
        )
        .await;
    say(
        J,
        format!("kubectl delete pod {first} returned in {}", elapsed(t0)),
    );
    let second_name = next_running_pod(node, &job, &first).await;
    say(
        J,
        format!(
            "the Job's next pod {second_name} runs {} after the delete",
            elapsed(t0)
        ),
    );
    speed_up(node, &manifest.name).await;
    wait_succeeded(node, &manifest).await;
    let writes = writer.stop().await;
    assert_rows_equal(J, &mut table, &writes).await;
    assert_resumed(node, &second_name).await;
    say(J, "the next pod resumed after the checkpoint's key");
}

/// A 20,000-row table whose slow `ADD COLUMN gone INT` is copying on a real pod: the table, its
/// rows, the manifest and the Job.
async fn copying_mid_way(node: &RealNode, journey: &str) -> (Table, Rows, Manifest, String) {
    let mut table = Table::create(&format!("k8s_real_{journey}"), 20_000).await;
    let before = table.rows().await;
    let manifest = manifest(node, journey, &table, "ADD COLUMN gone INT").slow();
    apply(node, &manifest).await;
    let (smig, took) = wait_copying(node, &manifest.name).await;
    say(
        journey,
        format!("copying {} after kubectl apply", fmt(took)),
    );
    (table, before, manifest, job_of(&smig))
}

/// Only the original table is left, with its rows as they were.
async fn assert_untouched(journey: &str, table: &mut Table, before: &Rows) {
    assert_eq!(
        table.tables().await,
        vec![TABLE.to_string()],
        "{journey}: tables left"
    );
    assert!(
        table.columns().await.iter().all(|c| c != "gone"),
        "{journey}: altered"
    );
    assert_eq!(
        &table.rows().await,
        before,
        "{journey}: the original changed"
    );
}

/// The exit code of the pod's engine container once it terminated (None while it runs).
fn exit_code(pod: &Value) -> Option<i64> {
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"].as_i64()
}

/// `spec.cutOver.postpone: true` → Postponed at 100 % with writes still applied → annotate
/// `ghost/postpone-cut-over=false` → Succeeded.
async fn postpone(node: &RealNode) {
    const J: &str = "postpone";
    let mut table = Table::create("k8s_real_postpone", 5_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let manifest = manifest(node, J, &table, "ADD COLUMN note VARCHAR(20)")
        .with_spec("  cutOver:\n    postpone: true\n");
    apply(node, &manifest).await;
    let (smig, took) = wait_smig(node, &manifest.name, "Postponed", |s| {
        s["status"]["phase"] == "Postponed"
    })
    .await;
    say(J, format!("Postponed {} after kubectl apply", fmt(took)));
    assert_eq!(smig["status"]["progress"]["percent"].as_f64(), Some(100.0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smig_phase(node, &manifest.name).await, "Postponed");
    assert!(
        table.columns().await.iter().all(|c| c != "note"),
        "cut over while postponed"
    );
    node.cluster
        .annotate(&manifest.name, &["ghost/postpone-cut-over=false"])
        .await;
    let (_, latency) = wait_smig(node, &manifest.name, "Succeeded", |s| {
        s["status"]["phase"] == "Succeeded"
    })
    .await;
    say(
        J,
        format!(
            "annotate postpone-cut-over=false → Succeeded in {}",
            fmt(latency)
        ),
    );
    let writes = writer.stop().await;
    assert!(table.columns().await.iter().any(|c| c == "note"));
    assert_rows_equal(J, &mut table, &writes).await;
}

async fn smig_phase(node: &RealNode, name: &str) -> String {
    smig(node, name).await["status"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `ghost/panic=true` on a real pod: Cancelled, the engine container exits 3, the Job makes no
/// other pod, and only the original is left, unchanged.
async fn panic(node: &RealNode) {
    const J: &str = "panic";
    let (mut table, before, manifest, job) = copying_mid_way(node, J).await;
    node.cluster
        .annotate(&manifest.name, &["ghost/panic=true"])
        .await;
    let (_, latency) = wait_smig(node, &manifest.name, "Cancelled", |s| {
        s["status"]["phase"] == "Cancelled"
    })
    .await;
    say(
        J,
        format!("annotate ghost/panic=true → Cancelled in {}", fmt(latency)),
    );
    let t0 = Instant::now();
    let pods = loop {
        let pods = node.pods_of(&job).await;
        if pods.iter().all(|p| exit_code(p).is_some()) || t0.elapsed() > Duration::from_secs(60) {
            break pods;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(pods.len(), 1, "pods of {job}: {pods:#?}");
    assert_eq!(exit_code(&pods[0]), Some(3), "{:#}", pods[0]["status"]);
    assert_untouched(J, &mut table, &before).await;
    say(
        J,
        "the engine container exited 3; the original is as it was",
    );
}

/// `kubectl delete smig` while its real pod copies: the finalizer stops the engine, cleans up,
/// and the Job and its pod go.
async fn delete_running(node: &RealNode) {
    const J: &str = "delete";
    let (mut table, before, manifest, job) = copying_mid_way(node, J).await;
    let t0 = Instant::now();
    let target = manifest.target();
    node.cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "delete",
                target.as_str(),
                "--wait=true",
                "--timeout=120s",
            ],
            None,
        )
        .await;
    say(
        J,
        format!("kubectl delete --wait returned in {}", elapsed(t0)),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node.pods_of(&job).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the pods of {job} are still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say(
        J,
        format!(
            "Job {job}'s pod gone {} after the delete began",
            elapsed(t0)
        ),
    );
    assert_untouched(J, &mut table, &before).await;
}

/// A memory limit the engine cannot live in (`spec.engine.resources`): while it copies, a
/// transaction writes four 8 MiB values, whose binlog events the engine must read whole, past
/// its 8 MiB limit; the kernel kills it, and the status says so, with what to change.
async fn oom_killed(node: &RealNode) {
    const J: &str = "oom";
    let mut table = Table::create("k8s_real_oom", 20_000).await;
    table
        .conn
        .query_drop(format!(
            "ALTER TABLE `{TABLE}` ADD COLUMN big LONGTEXT NULL"
        ))
        .await
        .expect("add a LONGTEXT column");
    let manifest = manifest(node, J, &table, "ADD COLUMN gone INT").slow().with_spec(
        "  engine:\n    backoffLimit: 0\n    resources:\n      limits:\n        memory: 8Mi\n      \
         requests:\n        memory: 8Mi\n",
    );
    let t0 = Instant::now();
    apply(node, &manifest).await;
    wait_copying(node, &manifest.name).await;
    table
        .conn
        .query_drop(format!(
            "UPDATE `{TABLE}` SET big = REPEAT('x', 8 * 1024 * 1024) WHERE id <= 4"
        ))
        .await
        .expect("write four 8 MiB values");
    let (smig, took) = wait_smig(node, &manifest.name, "Failed", |s| {
        s["status"]["phase"] == "Failed"
    })
    .await;
    let message = smig["status"]["message"].as_str().unwrap_or_default();
    say(
        J,
        format!("Failed {} after the big write: {message}", fmt(took)),
    );
    assert!(
        message.contains("OOMKilled") && message.contains("spec.engine.resources.limits.memory"),
        "the status does not say the engine was OOM-killed: {:#}",
        smig["status"]
    );
    say(J, format!("{} in all", elapsed(t0)));
}

/// `kubectl drain` of the only node mid-copy: every pod is evicted (the operator's too); after
/// `kubectl uncordon` the Job's next pod resumes after the checkpoint and the migration ends with
/// the writer's rows.
async fn drain(node: &RealNode) {
    const J: &str = "drain";
    let mut table = Table::create("k8s_real_drain", 30_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let manifest = manifest(node, J, &table, "ADD COLUMN d INT").slow();
    apply(node, &manifest).await;
    let (smig, _) = wait_smig(node, &manifest.name, "checkpointed", |s| {
        s["status"]["phase"] == "Copying" && s["status"]["progress"]["checkpointTime"].is_string()
    })
    .await;
    let job = job_of(&smig);
    let first = node.pods_of(&job).await[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let t0 = Instant::now();
    let drained = node
        .cluster
        .kubectl_in(
            &[
                "drain",
                "ghost-e2e-node",
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=120s",
            ],
            None,
        )
        .await;
    let uncordon = node
        .cluster
        .kubectl_in(&["uncordon", "ghost-e2e-node"], None)
        .await;
    assert!(
        drained.ok,
        "kubectl drain failed: {}{}",
        drained.stdout, drained.stderr
    );
    assert!(uncordon.ok, "kubectl uncordon failed: {}", uncordon.stderr);
    say(
        J,
        format!(
            "kubectl drain evicted every pod in {}; uncordoned",
            elapsed(t0)
        ),
    );
    let next = next_running_pod(node, &job, &first).await;
    say(
        J,
        format!("drain → the Job's next pod {next} runs in {}", elapsed(t0)),
    );
    speed_up(node, &manifest.name).await;
    wait_succeeded(node, &manifest).await;
    let writes = writer.stop().await;
    assert_rows_equal(J, &mut table, &writes).await;
    assert_resumed(node, &next).await;
    say(
        J,
        format!(
            "resumed after the checkpoint; Succeeded {} after the drain",
            elapsed(t0)
        ),
    );
}

/// `helm upgrade` of the operator (a changed value rolls its pod) while a migration copies: the
/// engine pod goes on, the new operator takes over, and the migration ends well.
async fn helm_upgrade(node: &RealNode) {
    const J: &str = "helm-upgrade";
    let mut table = Table::create("k8s_real_upgrade", 20_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let manifest = manifest(node, J, &table, "ADD COLUMN u INT").slow();
    apply(node, &manifest).await;
    let (copying, _) = wait_copying(node, &manifest.name).await;
    let job = job_of(&copying);
    let engine_pod = node.pods_of(&job).await[0]["metadata"]["name"].clone();
    let t0 = Instant::now();
    let upgraded = node
        .helm(&[
            "upgrade",
            real_node::RELEASE,
            "charts/ghost",
            "--namespace",
            NAMESPACE,
            "--reuse-values",
            "--set",
            "logLevel=ghost=debug",
            "--wait",
            "--timeout",
            "180s",
        ])
        .await;
    assert!(
        upgraded.ok,
        "helm upgrade failed: {}{}",
        upgraded.stdout, upgraded.stderr
    );
    say(
        J,
        format!("helm upgrade → new operator available in {}", elapsed(t0)),
    );
    let progressed_from = rows_copied(&smig(node, &manifest.name).await);
    speed_up(node, &manifest.name).await;
    wait_succeeded(node, &manifest).await;
    let pods = node.pods_of(&job).await;
    assert_eq!(pods.len(), 1, "the engine pod was replaced: {pods:#?}");
    assert_eq!(
        pods[0]["metadata"]["name"], engine_pod,
        "another engine pod ran"
    );
    let writes = writer.stop().await;
    assert_rows_equal(J, &mut table, &writes).await;
    say(
        J,
        format!(
            "one engine pod throughout (rowsCopied {progressed_from} at the upgrade); Succeeded \
             {} after it",
            elapsed(t0)
        ),
    );
    // Back to the values the other journeys expect.
    node.install().await;
}

/// `helm uninstall`: the operator, its RBAC and the engine ServiceAccount go; the CRD and the
/// SchemaMigrations stay (Helm never deletes a chart's CRDs), so a later `helm install` takes
/// them up again.
async fn helm_uninstall(node: &RealNode) {
    const J: &str = "helm-uninstall";
    let table = Table::create("k8s_real_uninstall", 1_000).await;
    let manifest = manifest(node, J, &table, "ADD COLUMN x INT");
    apply(node, &manifest).await;
    wait_succeeded(node, &manifest).await;

    let t0 = Instant::now();
    let removed = node
        .helm(&[
            "uninstall",
            real_node::RELEASE,
            "--namespace",
            NAMESPACE,
            "--wait",
        ])
        .await;
    assert!(
        removed.ok,
        "helm uninstall failed: {}{}",
        removed.stdout, removed.stderr
    );
    say(J, format!("helm uninstall returned in {}", elapsed(t0)));
    let gone = |kind: &'static str, name: &'static str| async move {
        !node
            .cluster
            .kubectl_in(&["-n", NAMESPACE, "get", kind, name], None)
            .await
            .ok
    };
    assert!(
        gone("deployment", real_node::OPERATOR_DEPLOYMENT).await,
        "the operator is left"
    );
    assert!(
        gone("serviceaccount", "ghost-engine").await,
        "the engine ServiceAccount is left"
    );
    let crd = node
        .cluster
        .kubectl_in(&["get", "crd", "schemamigrations.ghost.dev"], None)
        .await;
    assert!(crd.ok, "the CRD went with the release: {}", crd.stderr);
    assert_eq!(smig_phase(node, &manifest.name).await, "Succeeded");
    say(
        J,
        "left: the CRD and the SchemaMigration (Succeeded); gone: operator, RBAC, engine ServiceAccount",
    );

    let t1 = Instant::now();
    node.install().await;
    // The new operator takes the migration up where it was (finished: nothing to do), and a
    // delete then completes through its finalizer.
    let target = manifest.target();
    node.cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "delete",
                target.as_str(),
                "--wait=true",
                "--timeout=60s",
            ],
            None,
        )
        .await;
    say(
        J,
        format!(
            "helm install again; the kept migration deleted through it in {}",
            elapsed(t1)
        ),
    );
}

/// Two migrations of one table: the second is Queued (no Job) until the first has ended on its
/// real pod, then runs on its own; both columns, and the writer's rows.
async fn two_on_one_table(node: &RealNode) {
    const J: &str = "two-on-one-table";
    let mut table = Table::create("k8s_real_two", 20_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let first = manifest(node, "first", &table, "ADD COLUMN a INT").slow();
    let second = manifest(node, "second", &table, "ADD COLUMN b INT");
    apply(node, &first).await;
    wait_copying(node, &first.name).await;
    apply(node, &second).await;
    let (_, took) = wait_smig(node, &second.name, "Queued", |s| {
        s["status"]["phase"] == "Queued"
    })
    .await;
    say(J, format!("second Queued {} after its apply", fmt(took)));
    let selector = format!("ghost.dev/migration={}", second.name);
    assert!(
        node.cluster.names("jobs", &selector).await.is_empty(),
        "the queued migration has a Job"
    );
    speed_up(node, &first.name).await;
    wait_succeeded(node, &first).await;
    let first_done = Instant::now();
    wait_succeeded(node, &second).await;
    say(
        J,
        format!("second Succeeded {} after the first", elapsed(first_done)),
    );
    let first_end = smig(node, &first.name).await["status"]["completionTime"].clone();
    let second_start = smig(node, &second.name).await["status"]["startTime"].clone();
    assert!(
        first_end
            .as_str()
            .is_some_and(|end| second_start.as_str().is_some_and(|start| start >= end)),
        "second started at {second_start}, before the first ended at {first_end}"
    );
    let writes = writer.stop().await;
    let columns = table.columns().await;
    assert!(
        columns.iter().any(|c| c == "a") && columns.iter().any(|c| c == "b"),
        "{columns:?}"
    );
    assert_rows_equal(J, &mut table, &writes).await;
}
