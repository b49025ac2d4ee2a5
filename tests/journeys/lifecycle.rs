//! Journeys of a migration's life: apply, run with a writer, delete, re-apply, revert.

use super::*;

/// `kubectl apply` → Job → engine pod → the column is added while a writer keeps changing the
/// table → `kubectl wait --for=condition=Succeeded` → rows equal, status filled, Events listed.
pub async fn basic(cluster: &Cluster, stack: &Stack) {
    const J: &str = "basic";
    let mut table = Table::create("k8s_basic", 20_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let manifest = Manifest::new(J, table.database(), "ADD COLUMN age INT NOT NULL DEFAULT 0")
        .with_spec("  copy:\n    threads: 4\n    chunkSize: 500\n    targetChunkTimeMillis: 0\n");

    let applied = Instant::now();
    apply(cluster, &manifest).await;
    kubectl_wait_succeeded(cluster, stack, &manifest).await;
    say(
        J,
        format!(
            "{} Succeeded {} after kubectl apply",
            manifest.name,
            elapsed(applied)
        ),
    );
    let writes = writer.stop().await;

    assert!(
        table.columns().await.iter().any(|c| c == "age"),
        "no column age"
    );
    assert_rows_equal(J, &mut table, &writes).await;
    assert_no_artefacts_but_kept(J, &mut table).await;

    // The status: phase, progress 100 %, rows, lag, lock time, times.
    let smig = stack.smig(&manifest.name).await.expect("the smig exists");
    let status = &smig["status"];
    assert_eq!(status["phase"], "Succeeded", "status: {status:#}");
    let progress = &status["progress"];
    assert_eq!(progress["percent"].as_f64(), Some(100.0), "{progress:#}");
    let rows = progress_i64(&smig, "rowsCopied");
    // The writer deletes rows the copy has not reached yet (and inserts ones it then copies):
    // the count moves a little either way; the rows themselves were checked above.
    assert!(rows > 19_000, "rowsCopied {rows}: {progress:#}");
    assert!(
        progress["heartbeatLagMillis"].as_i64().is_some(),
        "no lag: {progress:#}"
    );
    let lock_millis = progress["cutOver"]["lockMillis"].as_i64();
    assert!(
        lock_millis.is_some_and(|ms| ms >= 0),
        "no lock time: {progress:#}"
    );
    // The checksum gate ran and matched at once; the copy used 500-row chunks.
    assert_eq!(progress["checksum"]["passes"], 1, "{progress:#}");
    assert_eq!(progress["checksum"]["chunksCopiedAgain"], 0, "{progress:#}");
    assert_eq!(progress["chunkSize"], 500, "{progress:#}");
    for field in ["startTime", "completionTime", "job"] {
        assert!(status[field].is_string(), "no {field}: {status:#}");
    }
    assert_eq!(
        status["observedGeneration"], smig["metadata"]["generation"],
        "{status:#}"
    );
    let job = job_of(&smig);
    say(
        J,
        format!(
            "rowsCopied {rows}, lag {} ms, cut-over lock {} ms, job {job}",
            progress["heartbeatLagMillis"],
            lock_millis.unwrap_or(-1)
        ),
    );

    // The engine ran as one pod of that Job, and exited 0.
    let runs = stack.runs_of(&job).await;
    assert_eq!(runs.len(), 1, "pods of {job}: {runs:?}");
    assert_eq!(runs[0].exit_code, Some(0), "{runs:?}");
    let pods = stack.node.pods_of(&job).await;
    assert_real_engine_pod(&pods[0]);
    say(
        J,
        format!(
            "engine pod {}: started {} after its creation, exit 0",
            runs[0].name,
            pod_start_latency(&pods[0]).map_or_else(|| "?".to_string(), fmt)
        ),
    );
    // The engine spoke to the API server in-cluster, with its ServiceAccount's token.
    let log = stack.log_of(&runs[0].name).await;
    assert!(
        log.contains("migration starting"),
        "the engine pod's log (kubectl logs) does not show the migration:\n{log}"
    );

    // `kubectl get smig` shows the printer columns.
    let listed = cluster
        .kubectl(
            &["-n", NAMESPACE, "get", "smig", manifest.name.as_str()],
            None,
        )
        .await;
    assert!(
        listed.contains("Succeeded") && listed.contains(TABLE),
        "kubectl get smig:\n{listed}"
    );
    say(J, format!("kubectl get smig:\n{}", listed.trim_end()));

    // Events: the Job's creation and the phase changes, ending with Succeeded. Events are
    // published after the status, so give them a moment.
    let deadline = Instant::now() + Duration::from_secs(15);
    let reasons = loop {
        let reasons = cluster.event_reasons(&manifest.name).await;
        let complete =
            reasons.iter().any(|r| r == "JobCreated") && reasons.iter().any(|r| r == "Succeeded");
        if complete || Instant::now() >= deadline {
            break reasons;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    say(J, format!("events {reasons:?}"));
    for wanted in ["JobCreated", "Copying", "CuttingOver", "Succeeded"] {
        assert!(
            reasons.iter().any(|r| r == wanted),
            "no {wanted} event: {reasons:?}"
        );
    }
}

/// After success only the old table (kept for a manual rollback, under gh-ost's timestamped
/// name so the table's next migration is free) and the checkpoint table may stay; no ghost or
/// changelog table.
async fn assert_no_artefacts_but_kept(journey: &str, table: &mut Table) {
    let tables = table.tables().await;
    let kept_old = |t: &str| {
        t.strip_prefix(&format!("_{TABLE}_"))
            .and_then(|rest| rest.strip_suffix("_del"))
            .is_some_and(|ts| ts.len() == 14 && ts.bytes().all(|b| b.is_ascii_digit()))
    };
    let unexpected: Vec<&String> = tables
        .iter()
        .filter(|t| t.as_str() != TABLE && !t.ends_with("_ghk") && !kept_old(t))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{journey}: tables left behind: {tables:?}"
    );
    say(journey, format!("tables after success: {tables:?}"));
}

/// `kubectl delete smig` mid-copy → the finalizer stops the engine, drops the ghost tables and
/// lets the resource go; the Job and its pod are gone, the original is untouched.
pub async fn delete_running(cluster: &Cluster, stack: &Stack) {
    const J: &str = "delete";
    let (mut table, before, manifest, job) = copying_mid_way(cluster, stack, J).await;
    let ghost_tables = table.tables().await;
    assert!(
        ghost_tables.len() > 1,
        "no ghost tables while copying: {ghost_tables:?}"
    );

    let t0 = Instant::now();
    cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "delete",
                manifest.target().as_str(),
                "--wait=true",
                "--timeout=60s",
            ],
            None,
        )
        .await;
    say(
        J,
        format!(
            "kubectl delete --wait returned in {} (tables were {ghost_tables:?})",
            elapsed(t0)
        ),
    );
    assert!(stack.smig(&manifest.name).await.is_none(), "still there");
    // The Job was deleted in the foreground; the garbage collector removes it once its pod is.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = cluster
            .kubectl_in(&["-n", NAMESPACE, "get", "job", job.as_str()], None)
            .await;
        if !found.ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Job {job} is still there after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say(
        J,
        format!("Job {job} gone {} after the delete began", elapsed(t0)),
    );
    let runs = stack.runs_of(&job).await;
    assert!(
        runs.iter().all(|r| r.exit_code.is_some()),
        "an engine still runs: {runs:?}"
    );
    let pods = cluster.names("pods", &format!("job-name={job}")).await;
    assert!(pods.is_empty(), "pods left: {pods:?}");
    assert_untouched(J, &mut table, &before).await;
    say(
        J,
        "resource, Job, pod and ghost tables gone; original unchanged",
    );
}

/// Two migrations of one table: the second waits Queued (and gets no Job) until the first ends,
/// then runs; both changes land.
pub async fn two_on_one_table(cluster: &Cluster, stack: &Stack) {
    const J: &str = "two-on-one-table";
    let mut table = Table::create("k8s_two", 20_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let first = Manifest::new("first", table.database(), "ADD COLUMN a INT").slow();
    let second = Manifest::new("second", table.database(), "ADD COLUMN b INT");
    apply(cluster, &first).await;
    wait_copying(stack, &first.name).await;
    apply(cluster, &second).await;
    let (smig, took) = stack
        .wait_phase(&second.name, "Queued", PHASE_TIMEOUT)
        .await;
    let message = smig["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    say(J, format!("second Queued in {}: {message}", fmt(took)));
    // The message names the table, not the migration ahead: it stays the same while the queue
    // moves, so a move rewrites no waiting migration's status.
    assert!(
        message.contains(&format!("{}.users", table.database()))
            && message.contains("one SchemaMigration at a time"),
        "{message}"
    );
    let jobs = cluster
        .names("jobs", &format!("ghost.dev/migration={}", second.name))
        .await;
    assert!(jobs.is_empty(), "the queued one has a Job: {jobs:?}");

    speed_up(cluster, &first.name).await;
    let (_, first_took) = stack
        .wait_phase(&first.name, "Succeeded", PHASE_TIMEOUT)
        .await;
    let first_done = Instant::now();
    say(
        J,
        format!("first Succeeded {} after its speed-up", fmt(first_took)),
    );
    kubectl_wait_succeeded(cluster, stack, &second).await;
    // The second started only after the first had finished (the API's times are whole seconds).
    let first_status = stack.smig(&first.name).await.expect("first exists")["status"].clone();
    let second_status = stack.smig(&second.name).await.expect("second exists")["status"].clone();
    let ended = first_status["completionTime"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let started = second_status["startTime"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !ended.is_empty() && started >= ended,
        "second started at {started:?}, before the first ended at {ended:?}"
    );
    say(
        J,
        format!(
            "second Succeeded {} after the first ended",
            elapsed(first_done)
        ),
    );
    let writes = writer.stop().await;
    let columns = table.columns().await;
    assert!(
        columns.iter().any(|c| c == "a") && columns.iter().any(|c| c == "b"),
        "{columns:?}"
    );
    assert_rows_equal(J, &mut table, &writes).await;
}

/// `kubectl delete pod` of the engine mid-copy → the Job makes a new pod, which resumes from the
/// checkpoint; the migration ends with every row right.
pub async fn pod_deleted(cluster: &Cluster, stack: &Stack) {
    const J: &str = "pod-deleted";
    let mut table = Table::create("k8s_pod", 30_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let manifest = Manifest::new(J, table.database(), "ADD COLUMN c INT").slow();
    apply(cluster, &manifest).await;
    let (smig, took) = wait_checkpointed(stack, &manifest.name).await;
    let job = job_of(&smig);
    let copied = progress_i64(&smig, "rowsCopied");
    say(
        J,
        format!(
            "checkpointed {} after apply, rowsCopied {copied}",
            fmt(took)
        ),
    );
    let runs = stack.runs_of(&job).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let first_pod = runs[0].name.clone();

    let t0 = Instant::now();
    cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "delete",
                "pod",
                first_pod.as_str(),
                "--wait=true",
            ],
            None,
        )
        .await;
    say(
        J,
        format!("kubectl delete pod {first_pod} returned in {}", elapsed(t0)),
    );
    let second = next_running_pod(stack, &job, &first_pod).await;
    say(
        J,
        format!(
            "the Job's second pod {second} runs {} after the delete",
            elapsed(t0)
        ),
    );
    speed_up(cluster, &manifest.name).await;
    kubectl_wait_succeeded(cluster, stack, &manifest).await;
    let writes = writer.stop().await;
    assert_rows_equal(J, &mut table, &writes).await;
    assert_resumed(stack, &second).await;
    say(J, "the second pod resumed after the checkpoint's key");
}

/// Applying the same manifest again after success changes nothing: no second pod, same status.
pub async fn reapply(cluster: &Cluster, stack: &Stack) {
    const J: &str = "reapply";
    let mut table = Table::create("k8s_reapply", 1_000).await;
    let manifest = Manifest::new(J, table.database(), "ADD COLUMN r INT");
    apply(cluster, &manifest).await;
    kubectl_wait_succeeded(cluster, stack, &manifest).await;
    // The engine's final report lands just before it exits: wait for the exit, so the status
    // compared below is the settled one.
    let job = job_of(&stack.smig(&manifest.name).await.expect("exists"));
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while !stack
        .runs_of(&job)
        .await
        .iter()
        .all(|r| r.exit_code.is_some())
    {
        assert!(
            Instant::now() < deadline,
            "the engine of {job} did not exit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let done = stack.smig(&manifest.name).await.expect("exists");
    assert_eq!(stack.runs_of(&job).await.len(), 1);
    let events = cluster.event_reasons(&manifest.name).await.len();

    let out = apply(cluster, &manifest).await;
    say(
        J,
        format!("kubectl apply again: {}", out.trim().replace('\n', "; ")),
    );
    // kubectl reports a Secret written with stringData as "configured" on every apply (the
    // field is write-only); the migration itself must be untouched.
    assert!(
        out.lines()
            .any(|l| l.starts_with("schemamigration.ghost.dev/") && l.ends_with(" unchanged")),
        "re-apply changed the SchemaMigration: {out}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = stack.smig(&manifest.name).await.expect("exists");
    assert_eq!(after["status"], done["status"], "the status changed");
    assert_eq!(stack.runs_of(&job).await.len(), 1, "a second engine ran");
    assert_eq!(
        cluster.event_reasons(&manifest.name).await.len(),
        events,
        "new Events"
    );
    assert!(table.columns().await.iter().any(|c| c == "r"));
    say(
        J,
        "nothing ran again; status and Events unchanged after 3 s",
    );
}

/// A finished migration is undone by a second SchemaMigration naming the old table it kept
/// (`spec.revert.oldTable`): while a writer keeps changing the table, the old table is brought up
/// to date from the cut-over checkpoint and swapped back; the table has its old definition and
/// every row the writes left.
pub async fn revert(cluster: &Cluster, stack: &Stack) {
    const J: &str = "revert";
    let mut table = Table::create("k8s_revert", 5_000).await;
    let forward = Manifest::new(
        "forward",
        table.database(),
        "ADD COLUMN extra INT NOT NULL DEFAULT 3",
    );
    apply(cluster, &forward).await;
    kubectl_wait_succeeded(cluster, stack, &forward).await;
    let before = table.columns().await;
    assert!(before.iter().any(|c| c == "extra"), "{before:?}");
    // The kept old table's name is in the status, where a revert needs it.
    let forward_status = stack.smig(&forward.name).await.expect("exists");
    let old_table = forward_status["status"]["progress"]["keptOldTable"]
        .as_str()
        .unwrap_or_else(|| panic!("no keptOldTable: {:#}", forward_status["status"]))
        .to_string();
    let tables = table.tables().await;
    assert!(
        tables.contains(&old_table),
        "status says {old_table}, the database has {tables:?}"
    );

    // Writes under the new definition, before and during the revert.
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let back = Manifest::new("revert", table.database(), "")
        .with_spec(&format!("  revert:\n    oldTable: {old_table}\n"));
    let applied = Instant::now();
    apply(cluster, &back).await;
    kubectl_wait_succeeded(cluster, stack, &back).await;
    say(
        J,
        format!(
            "revert of {old_table} Succeeded {} after kubectl apply",
            elapsed(applied)
        ),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writes = writer.stop().await;

    let columns = table.columns().await;
    assert!(
        columns.iter().all(|c| c != "extra"),
        "the old definition is not back: {columns:?}"
    );
    assert_rows_equal(J, &mut table, &writes).await;
    let smig = stack.smig(&back.name).await.expect("exists");
    let progress = &smig["status"]["progress"];
    assert_eq!(progress["checksum"]["passes"], 1, "{progress:#}");
    assert_eq!(progress["checksum"]["chunksCopiedAgain"], 0, "{progress:#}");
    let tables = table.tables().await;
    assert!(
        tables.iter().any(|t| t == "_users_rev_del"),
        "the replaced table is not kept: {tables:?}"
    );
    assert_eq!(progress["keptOldTable"], "_users_rev_del", "{progress:#}");
    say(
        J,
        format!(
            "old definition back ({} columns), checksum matched, tables {tables:?}",
            columns.len()
        ),
    );
}
