//! Journeys of the platform around a migration: the node drained under it, the engine killed at
//! its memory limit, the release upgraded under it and uninstalled.

use super::*;

/// A memory limit the engine cannot live in (`spec.engine.resources`): while it copies, a
/// transaction writes four 8 MiB values, whose binlog events the engine must read whole, past
/// its 8 MiB limit; the kernel kills it, and the status says so, with what to change.
pub async fn oom_killed(cluster: &Cluster, stack: &Stack) {
    const J: &str = "oom";
    let mut table = Table::create("k8s_real_oom", 20_000).await;
    table
        .conn
        .query_drop(format!(
            "ALTER TABLE `{TABLE}` ADD COLUMN big LONGTEXT NULL"
        ))
        .await
        .expect("add a LONGTEXT column");
    let manifest = Manifest::new(J, table.database(), "ADD COLUMN gone INT").slow().with_spec(
        "  engine:\n    backoffLimit: 0\n    resources:\n      limits:\n        memory: 8Mi\n      \
         requests:\n        memory: 8Mi\n",
    );
    let t0 = Instant::now();
    apply(cluster, &manifest).await;
    wait_copying(stack, &manifest.name).await;
    table
        .conn
        .query_drop(format!(
            "UPDATE `{TABLE}` SET big = REPEAT('x', 8 * 1024 * 1024) WHERE id <= 4"
        ))
        .await
        .expect("write four 8 MiB values");
    let (smig, took) = stack
        .wait_smig(&manifest.name, "Failed", PHASE_TIMEOUT, |s| {
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
pub async fn drain(cluster: &Cluster, stack: &Stack) {
    const J: &str = "drain";
    let mut table = Table::create("k8s_real_drain", 30_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let manifest = Manifest::new(J, table.database(), "ADD COLUMN d INT").slow();
    apply(cluster, &manifest).await;
    let (smig, _) = wait_checkpointed(stack, &manifest.name).await;
    let job = job_of(&smig);
    let first = stack.node.pods_of(&job).await[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let t0 = Instant::now();
    let drained = cluster
        .kubectl_in(
            &[
                "drain",
                harness::NODE,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=120s",
            ],
            None,
        )
        .await;
    let uncordon = cluster.kubectl_in(&["uncordon", harness::NODE], None).await;
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
    let next = next_running_pod(stack, &job, &first).await;
    say(
        J,
        format!("drain → the Job's next pod {next} runs in {}", elapsed(t0)),
    );
    speed_up(cluster, &manifest.name).await;
    kubectl_wait_succeeded(cluster, stack, &manifest).await;
    let writes = writer.stop().await;
    assert_rows_equal(J, &mut table, &writes).await;
    assert_resumed(stack, &next).await;
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
pub async fn helm_upgrade(cluster: &Cluster, stack: &Stack) {
    const J: &str = "helm-upgrade";
    let mut table = Table::create("k8s_real_upgrade", 20_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let manifest = Manifest::new(J, table.database(), "ADD COLUMN u INT").slow();
    apply(cluster, &manifest).await;
    let (copying, _) = wait_copying(stack, &manifest.name).await;
    let job = job_of(&copying);
    let engine_pod = stack.node.pods_of(&job).await[0]["metadata"]["name"].clone();
    let t0 = Instant::now();
    // A changed value rolls the operator's pod; `Stack::stop` installs the usual values again.
    stack.set_values(&["logLevel=ghost=debug"]).await;
    say(
        J,
        format!("helm upgrade → new operator available in {}", elapsed(t0)),
    );
    let progressed_from = progress_i64(
        &stack.smig(&manifest.name).await.unwrap_or_default(),
        "rowsCopied",
    );
    speed_up(cluster, &manifest.name).await;
    kubectl_wait_succeeded(cluster, stack, &manifest).await;
    let pods = stack.node.pods_of(&job).await;
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
}

/// `helm uninstall`: the operator, its RBAC and the engine ServiceAccount go; the CRD and the
/// SchemaMigrations stay (Helm never deletes a chart's CRDs), so a later `helm install` takes
/// them up again.
pub async fn helm_uninstall(cluster: &Cluster, stack: &Stack) {
    const J: &str = "helm-uninstall";
    let table = Table::create("k8s_real_uninstall", 1_000).await;
    let manifest = Manifest::new(J, table.database(), "ADD COLUMN x INT");
    apply(cluster, &manifest).await;
    kubectl_wait_succeeded(cluster, stack, &manifest).await;

    let t0 = Instant::now();
    let removed = stack
        .node
        .helm(&[
            "uninstall",
            crate::real_node::RELEASE,
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
        !cluster
            .kubectl_in(&["-n", NAMESPACE, "get", kind, name], None)
            .await
            .ok
    };
    assert!(
        gone("deployment", crate::real_node::OPERATOR_DEPLOYMENT).await,
        "the operator is left"
    );
    assert!(
        gone("serviceaccount", "ghost-engine").await,
        "the engine ServiceAccount is left"
    );
    let crd = cluster
        .kubectl_in(&["get", "crd", "schemamigrations.ghost.dev"], None)
        .await;
    assert!(crd.ok, "the CRD went with the release: {}", crd.stderr);
    assert_eq!(
        stack.smig(&manifest.name).await.unwrap_or_default()["status"]["phase"],
        "Succeeded"
    );
    say(
        J,
        "left: the CRD and the SchemaMigration (Succeeded); gone: operator, RBAC, engine ServiceAccount",
    );

    let t1 = Instant::now();
    stack.node.install().await;
    // The new operator takes the migration up where it was (finished: nothing to do), and a
    // delete then completes through its finalizer.
    let target = manifest.target();
    cluster
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
