//! Journeys of what goes wrong around a migration: the API server restarts, an engine that
//! cannot start, namespaces not enabled.

use super::*;

/// Issue #13: the API server restarts mid-copy (down 3 s). Once pods reach it again (through the
/// `kubernetes` Service), an annotation reaches the engine and the operator's condition within
/// 5 s, and a new SchemaMigration is seen (its status written) within 5 s.
pub async fn api_server_restart(cluster: &Cluster, stack: &Stack) {
    const J: &str = "api-server-restart";
    const CATCH_UP: Duration = Duration::from_secs(5);
    let mut table = Table::create("k8s_apirestart", 20_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    // Postponed, so that it is still running whatever the restart takes.
    let manifest = Manifest::new(J, table.database(), "ADD COLUMN score INT")
        .slow()
        .with_spec("  cutOver:\n    postpone: true\n");
    apply(cluster, &manifest).await;
    wait_copying(stack, &manifest.name).await;

    let stopping = Instant::now();
    let restarted = stack.restart_apiserver(3).await;
    assert!(
        restarted.ok,
        "restart failed:\n{}{}",
        restarted.stdout, restarted.stderr
    );
    let ready = Instant::now();
    // Pods reach the API server through the `kubernetes` Service: its endpoint went with the
    // server's shutdown, and kube-proxy routes to it again only once its own watch has caught
    // up. That is the cluster's part of the outage; the engine's and the operator's start here.
    let routable_after = stack.wait_apiserver_service_routable().await;
    let answering = Instant::now();
    say(
        J,
        format!(
            "kube-apiserver stopped, down 3 s, ready again ({} in all); its Service routes to it \
             {} later",
            fmt(ready - stopping),
            fmt(routable_after)
        ),
    );

    cluster
        .annotate(&manifest.name, &["ghost/throttle=true"])
        .await;
    wait_throttled(stack, &manifest.name).await;
    let caught_up = answering.elapsed();
    say(
        J,
        format!(
            "API server reachable → annotation applied by the engine and shown by the operator in {}",
            fmt(caught_up)
        ),
    );
    assert!(
        caught_up <= CATCH_UP,
        "the operator caught up only after {caught_up:?}"
    );

    let later = Manifest::new("api-later", table.database(), "ADD COLUMN other INT")
        .with_spec("  execute: false\n");
    let created = Instant::now();
    apply(cluster, &later).await;
    let (_, _) = stack
        .wait_smig(&later.name, "finalizer", PHASE_TIMEOUT, |smig| {
            smig["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|v| v == "ghost.dev/cleanup"))
                || smig["status"]["phase"].is_string()
        })
        .await;
    let seen = created.elapsed();
    say(
        J,
        format!(
            "a new SchemaMigration seen by the operator in {}",
            fmt(seen)
        ),
    );
    assert!(
        seen <= CATCH_UP,
        "a new SchemaMigration was seen only after {seen:?}"
    );

    cluster
        .annotate(
            &manifest.name,
            &["ghost/throttle=false", "ghost/postpone-cut-over=false"],
        )
        .await;
    speed_up(cluster, &manifest.name).await;
    stack
        .wait_phase(&manifest.name, "Succeeded", PHASE_TIMEOUT)
        .await;
    let writes = writer.stop().await;
    assert_rows_equal(J, &mut table, &writes).await;
}

/// Issue #13: a migration in a namespace the installation did not enable waits with the reason
/// NamespaceNotEnabled (the operator may not read Secrets there) and no Job. Once enabled, its
/// engine pod cannot start (the namespace has no `ghost-engine` ServiceAccount): that is
/// explained in the status within seconds, and after the operator's start timeout (30 s in the
/// journeys) the migration fails, its Job is deleted, and the next migration on the host starts.
pub async fn cannot_start(cluster: &Cluster, stack: &Stack) {
    const J: &str = "cannot-start";
    const ELSEWHERE: &str = "ghost-e2e-no-sa";
    // The release's start timeout is 120 s (a first image unpack on a loaded machine); this
    // journey waits for it to pass. `Stack::stop` installs the release's values again.
    stack.set_values(&["engine.startTimeoutSeconds=30"]).await;
    let table = Table::create("k8s_nosa", 10).await;
    let manifest = Manifest::new("nosa", table.database(), "ADD COLUMN x INT");
    let rendered = manifest.render().replace(
        &format!("namespace: {NAMESPACE}"),
        &format!("namespace: {ELSEWHERE}"),
    );
    let namespace = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ELSEWHERE}}}\n");
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&namespace))
        .await;
    let applied = Instant::now();
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&rendered))
        .await;
    let api: kube::Api<ghost::api::SchemaMigration> =
        kube::Api::namespaced(stack.admin.clone(), ELSEWHERE);

    // Not a namespace the installation enabled: the operator may not read its Secrets.
    let mut not_enabled = None;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while Instant::now() < deadline && not_enabled.is_none() {
        if let Some(smig) = api.get_opt(&manifest.name).await.expect("get smig") {
            let status = smig.status.unwrap_or_default();
            if status
                .conditions
                .iter()
                .any(|c| c.reason == "NamespaceNotEnabled")
            {
                not_enabled = Some(status.message.unwrap_or_default());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let message = not_enabled.expect("never held back with NamespaceNotEnabled");
    assert!(message.contains("engine.namespaces"), "{message}");
    say(
        J,
        format!(
            "a namespace not enabled: NamespaceNotEnabled after {}: {message}",
            fmt(applied.elapsed())
        ),
    );
    let jobs = cluster
        .kubectl(&["-n", ELSEWHERE, "get", "jobs", "-o", "name"], None)
        .await;
    assert!(jobs.trim().is_empty(), "a Job was made: {jobs}");
    // Enabled as engine.namespaces would (without the engine's ServiceAccount), and nudged.
    let binding = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: \
         ghost-operator-engines, namespace: {ELSEWHERE}}}\nroleRef: {{apiGroup: \
         rbac.authorization.k8s.io, kind: ClusterRole, name: ghost-operator-engines}}\n\
         subjects: [{{kind: ServiceAccount, name: ghost-operator, namespace: {NAMESPACE}}}]\n"
    );
    cluster.kubectl(&["apply", "-f", "-"], Some(&binding)).await;
    let applied = Instant::now();
    cluster
        .kubectl(
            &[
                "-n",
                ELSEWHERE,
                "annotate",
                manifest.target().as_str(),
                "ghost.dev/e2e-nudge=1",
            ],
            None,
        )
        .await;

    let mut explained = None;
    let mut failed = None;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while Instant::now() < deadline && failed.is_none() {
        if let Some(smig) = api.get_opt(&manifest.name).await.expect("get smig") {
            let status = smig.status.unwrap_or_default();
            let message = status.message.unwrap_or_default();
            if explained.is_none() && message.contains("cannot start") {
                explained = Some((applied.elapsed(), message.clone()));
            }
            if status.phase == Some(ghost::api::MigrationPhase::Failed) {
                failed = Some((applied.elapsed(), message));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (took, message) = failed.expect("the migration never failed");
    if let Some((shown, why)) = &explained {
        say(
            J,
            format!("the reason in .status.message after {}: {why}", fmt(*shown)),
        );
    }
    say(J, format!("Failed after {}: {message}", fmt(took)));
    assert!(message.contains("did not start within 30s"), "{message}");
    let jobs = cluster
        .kubectl(&["-n", ELSEWHERE, "get", "jobs", "-o", "name"], None)
        .await;
    assert!(jobs.trim().is_empty(), "the Job is still there: {jobs}");
    // The migration first, while the operator runs its finalizer; then the namespace.
    let target = manifest.target();
    cluster
        .kubectl(
            &["-n", ELSEWHERE, "delete", target.as_str(), "--timeout=60s"],
            None,
        )
        .await;
    cluster
        .kubectl(&["delete", "namespace", ELSEWHERE, "--timeout=120s"], None)
        .await;
    drop(table);
}
