//! Tier-5 journeys (DESIGN.md §4): what a user does with `kubectl`, against a real control plane
//! with a real node (`e2e/k8s/node.sh`: kubelet, containerd, kube-proxy, kube-scheduler), the
//! operator installed with `helm install` of `charts/ghost` and running as its Deployment's pod,
//! every engine a real pod of its Job from the image built from the Dockerfile
//! (`e2e/k8s/image.sh`), tables on the local MariaDB topology (`e2e/mariadb/topology.sh`), which
//! pods reach through the node's relays on their bridge.
//!
//! Nothing runs with more rights than in a real cluster: the operator and the engines use the
//! chart's ServiceAccounts and RBAC; a missing verb fails a journey. The harness is
//! `tests/e2e/harness.rs`, `real_node.rs` (the node and the release) and `stack.rs` (one
//! journey's view); the table, the writer and the manifests are `tests/e2e/fixture.rs`. The
//! journeys themselves are in `tests/journeys/` by subject: `lifecycle`, `controls`, `plugin`
//! (`kubectl ghost`), `security`, `resilience`, `scale`, and `platform` (the node drained, an
//! engine at its memory limit, the release upgraded and uninstalled).
//!
//! Every journey prints `journeys: <name>: ...` lines with what it measured (latencies from the
//! user's command to what `.status` shows); CI keeps them in its log.

mod common;

#[path = "e2e/fixture.rs"]
mod fixture;
#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/real_node.rs"]
mod real_node;
#[path = "e2e/stack.rs"]
mod stack;

#[path = "journeys/controls.rs"]
mod controls;
#[path = "journeys/lifecycle.rs"]
mod lifecycle;
#[path = "journeys/platform.rs"]
mod platform;
#[path = "journeys/plugin.rs"]
mod plugin;
#[path = "journeys/resilience.rs"]
mod resilience;
#[path = "journeys/scale.rs"]
mod scale;
#[path = "journeys/security.rs"]
mod security;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use mysql_async::prelude::Queryable;
use serde_json::Value;

use fixture::{Manifest, TABLE, Table, Writer, Writes};
use harness::{Cluster, NAMESPACE, WAIT_SUCCEEDED, elapsed};
use real_node::pod_start_latency;
use stack::{Stack, finish};

/// Long enough for any phase on a loaded 2-core machine; the measured times are far lower.
const PHASE_TIMEOUT: Duration = Duration::from_secs(180);
/// The user's expectation for annotate → `.status` (the "within 2 s"), with room for a
/// shared CI machine; the measured figure is printed.
const CONTROL_LATENCY_LIMIT: Duration = Duration::from_secs(5);
/// Between the writer's statements.
const WRITE_PAUSE: Duration = Duration::from_millis(3);

/// One `#[tokio::test]` per journey, one journey at a time, always cleaned up.
macro_rules! journey {
    ($test:ident, $body:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let mut slot = real_node::NODE_SLOT.lock().await;
            let t0 = Instant::now();
            let node = real_node::node(&mut slot).await;
            let stack = Stack::start(&node, stringify!($test)).await;
            let result = AssertUnwindSafe($body(&node.cluster, &stack))
                .catch_unwind()
                .await;
            finish(stringify!($test), t0, stack, result).await;
        }
    };
}

journey!(basic_add_column, lifecycle::basic);
journey!(throttle_annotation, controls::throttle);
journey!(postponed_cut_over, controls::postpone);
journey!(panic_annotation, controls::panic);
journey!(invalid_specs_and_missing_secret, controls::invalid);
journey!(delete_running_migration, lifecycle::delete_running);
journey!(two_migrations_on_one_table, lifecycle::two_on_one_table);
journey!(engine_pod_deleted_mid_copy, lifecycle::pod_deleted);
journey!(reapply_finished_manifest, lifecycle::reapply);
journey!(revert_a_finished_migration, lifecycle::revert);
journey!(
    tls_with_ca_and_client_certificate_from_secrets,
    security::tls
);
journey!(an_engine_writes_only_its_own_status, security::own_status);
journey!(
    api_server_restart_mid_migration,
    resilience::api_server_restart
);
journey!(spec_cannot_escalate_privileges, security::escalation);
journey!(
    an_engine_that_cannot_start_fails_and_frees_its_slot,
    resilience::cannot_start
);
journey!(a_thousand_queued_then_deleted_at_once, scale::queue_of_many);
journey!(an_engine_killed_at_its_memory_limit, platform::oom_killed);
journey!(drain_the_node_mid_copy, platform::drain);
journey!(
    helm_upgrade_of_the_operator_mid_migration,
    platform::helm_upgrade
);
journey!(kubectl_ghost_plugin, plugin::plugin);
journey!(
    helm_uninstall_leaves_the_crd_and_the_migrations,
    platform::helm_uninstall
);

// ------------------------------------------------------------------------------ helpers

/// Prints a measured figure, and appends it to `harness::SUMMARY` (CI prints that file, since
/// cargo test captures the output of passing tests).
fn say(journey: &str, text: impl AsRef<str>) {
    let line = format!("journeys: {journey}: {}", text.as_ref());
    eprintln!("{line}");
    harness::append_summary(&line);
}

async fn apply(cluster: &Cluster, manifest: &Manifest) -> String {
    cluster
        .kubectl(&["apply", "-f", "-"], Some(manifest.render().as_str()))
        .await
}

fn progress_i64(smig: &Value, field: &str) -> i64 {
    smig["status"]["progress"][field].as_i64().unwrap_or(-1)
}

fn condition<'a>(smig: &'a Value, type_: &str) -> Option<&'a Value> {
    smig["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Copying with at least one chunk copied.
async fn wait_copying(stack: &Stack, name: &str) -> (Value, Duration) {
    stack
        .wait_smig(name, "copying", PHASE_TIMEOUT, |smig| {
            smig["status"]["phase"] == "Copying" && progress_i64(smig, "rowsCopied") > 0
        })
        .await
}

/// Copying with a checkpoint written (every 10 s): a pod stopped before it would start over
/// instead of resuming.
async fn wait_checkpointed(stack: &Stack, name: &str) -> (Value, Duration) {
    stack
        .wait_smig(name, "checkpointed", PHASE_TIMEOUT, |smig| {
            smig["status"]["phase"] == "Copying"
                && smig["status"]["progress"]["checkpointTime"].is_string()
        })
        .await
}

/// The operator's condition Throttled is True.
async fn wait_throttled(stack: &Stack, name: &str) -> Value {
    stack
        .wait_smig(name, "condition Throttled", PHASE_TIMEOUT, |smig| {
            condition(smig, "Throttled").is_some_and(|c| c["status"] == "True")
        })
        .await
        .0
}

/// The annotations that turn a `Manifest::slow` copy into a fast one.
async fn speed_up(cluster: &Cluster, name: &str) {
    cluster
        .annotate(name, &["ghost/chunk-size=2000", "ghost/nice-ratio=0"])
        .await;
}

/// `kubectl wait --for=condition=Succeeded`, as the README tells users.
async fn kubectl_wait_succeeded(cluster: &Cluster, stack: &Stack, manifest: &Manifest) {
    let target = manifest.target();
    let timeout = format!("--timeout={WAIT_SUCCEEDED}");
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
    assert!(
        waited.ok,
        "{} did not succeed within {WAIT_SUCCEEDED}:\n{}{}\nstatus: {:#}",
        manifest.name,
        waited.stdout,
        waited.stderr,
        stack.smig(&manifest.name).await.unwrap_or_default()["status"]
    );
}

/// The table after the migration holds exactly what the acknowledged writes left.
async fn assert_rows_equal(journey: &str, table: &mut Table, writes: &Writes) {
    let actual = table.rows().await;
    if actual != writes.expected {
        let missing: Vec<_> = writes
            .expected
            .keys()
            .filter(|id| !actual.contains_key(id))
            .take(10)
            .collect();
        let extra: Vec<_> = actual
            .keys()
            .filter(|id| !writes.expected.contains_key(id))
            .take(10)
            .collect();
        let changed: Vec<_> = actual
            .iter()
            .filter(|(id, row)| writes.expected.get(id).is_some_and(|want| want != *row))
            .take(10)
            .collect();
        panic!(
            "{journey}: rows differ after the migration: {} expected, {} found; missing ids \
             {missing:?}, unexpected ids {extra:?}, changed {changed:?}",
            writes.expected.len(),
            actual.len()
        );
    }
    say(
        journey,
        format!(
            "{} rows equal the writer's model after {} concurrent writes ({} inserts, {} updates, \
             {} deletes)",
            actual.len(),
            writes.total(),
            writes.inserts,
            writes.updates,
            writes.deletes
        ),
    );
}

/// Only `users` is left: no ghost, changelog or checkpoint table.
async fn assert_no_artefacts(journey: &str, table: &mut Table) {
    let tables = table.tables().await;
    assert_eq!(
        tables,
        vec![TABLE.to_string()],
        "{journey}: tables left behind"
    );
}

/// A 20 000-row table whose `ADD COLUMN gone INT` is copying slowly, one chunk in: the table,
/// its rows before, the manifest and the Job's name.
async fn copying_mid_way(
    cluster: &Cluster,
    stack: &Stack,
    journey: &str,
) -> (Table, fixture::Rows, Manifest, String) {
    let mut table = Table::create(&format!("k8s_{journey}"), 20_000).await;
    let before = table.rows().await;
    let manifest = Manifest::new(journey, table.database(), "ADD COLUMN gone INT").slow();
    apply(cluster, &manifest).await;
    let (smig, _) = wait_copying(stack, &manifest.name).await;
    let job = job_of(&smig);
    (table, before, manifest, job)
}

/// A stopped `copying_mid_way` migration left only the original, as it was.
async fn assert_untouched(journey: &str, table: &mut Table, before: &fixture::Rows) {
    assert_no_artefacts(journey, table).await;
    assert!(table.columns().await.iter().all(|c| c != "gone"));
    assert_eq!(
        &table.rows().await,
        before,
        "{journey}: the original changed"
    );
}

fn job_of(smig: &Value) -> String {
    let job = smig["status"]["job"].as_str().unwrap_or_default();
    assert!(!job.is_empty(), "status.job is empty: {:#}", smig["status"]);
    job.to_string()
}

fn fmt(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// The name of the Job's first running pod other than `gone`.
async fn next_running_pod(stack: &Stack, job: &str, gone: &str) -> String {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let runs = stack.runs_of(job).await;
        if let Some(run) = runs.iter().find(|r| r.name != gone && r.running) {
            return run.name.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no running pod of {job} after {gone}: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pod's log shows it resumed the copy after the checkpoint.
async fn assert_resumed(stack: &Stack, pod: &str) {
    let log = stack.log_of(pod).await;
    assert!(
        log.contains("resuming the row copy after the checkpoint"),
        "{pod} did not resume:\n{log}"
    );
}

/// What a real engine pod must have been: on the node, with job.rs's securityContext, with an
/// address on the pods' bridge.
fn assert_real_engine_pod(pod: &Value) {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    assert_eq!(
        pod["spec"]["nodeName"],
        harness::NODE,
        "{name} was not bound to the node"
    );
    let security = &pod["spec"]["containers"][0]["securityContext"];
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
