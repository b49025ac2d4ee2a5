//! Journeys of the controls: throttle, postpone, panic annotations, and specs refused.

use super::*;

/// `kubectl annotate smig x ghost/throttle=true` → `.status` shows throttled with the reason and
/// the ghost table stops growing; `--overwrite ghost/throttle=false` → the copy resumes and the
/// migration ends correct.
pub async fn throttle(cluster: &Cluster, stack: &Stack) {
    const J: &str = "throttle";
    let mut table = Table::create("k8s_throttle", 20_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let manifest = Manifest::new(J, table.database(), "ADD COLUMN score INT").slow();
    apply(cluster, &manifest).await;
    let (_, took) = wait_copying(stack, &manifest.name).await;
    say(J, format!("copying {} after kubectl apply", fmt(took)));

    let annotated = Instant::now();
    cluster
        .annotate(&manifest.name, &["ghost/throttle=true"])
        .await;
    let (smig, latency) = stack
        .wait_smig(&manifest.name, "throttled", PHASE_TIMEOUT, |smig| {
            smig["status"]["progress"]["throttle"]["active"] == true
        })
        .await;
    let reason = smig["status"]["progress"]["throttle"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    say(
        J,
        format!(
            "annotate → .status.progress.throttle.active in {} (kubectl annotate itself {}), \
             reason {reason:?}",
            fmt(latency),
            fmt(annotated.elapsed() - latency)
        ),
    );
    assert!(
        latency <= CONTROL_LATENCY_LIMIT,
        "throttle took {latency:?} to show"
    );
    assert!(
        reason.contains("ghost/throttle") || reason.to_lowercase().contains("user"),
        "the reason does not name the annotation: {reason:?}"
    );
    let smig = wait_throttled(stack, &manifest.name).await;
    say(
        J,
        format!(
            "condition Throttled: {}",
            condition(&smig, "Throttled").cloned().unwrap_or_default()
        ),
    );

    // The copy (and the applier) stopped: the ghost table does not change for 2 s.
    let ghost_table = format!("_{TABLE}_gho");
    let before = table.count(&ghost_table).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = table.count(&ghost_table).await;
    assert_eq!(before, after, "the ghost table grew while throttled");
    assert_eq!(smig["status"]["phase"], "Copying", "{:#}", smig["status"]);
    let copied = progress_i64(&smig, "rowsCopied");
    say(
        J,
        format!("ghost table held at {before} rows for 2 s (rowsCopied {copied} of 20000)"),
    );

    // Released: the copy resumes, sped up so the journey ends soon.
    let released = Instant::now();
    cluster
        .annotate(
            &manifest.name,
            &[
                "ghost/throttle=false",
                "ghost/chunk-size=2000",
                "ghost/nice-ratio=0",
            ],
        )
        .await;
    let (_, latency) = stack
        .wait_smig(&manifest.name, "released", PHASE_TIMEOUT, |smig| {
            smig["status"]["progress"]["throttle"]["active"] == false
        })
        .await;
    say(
        J,
        format!("throttle=false → not throttled in {}", fmt(latency)),
    );
    assert!(
        latency <= CONTROL_LATENCY_LIMIT,
        "release took {latency:?} to show"
    );
    kubectl_wait_succeeded(cluster, stack, &manifest).await;
    say(
        J,
        format!("Succeeded {} after the release", elapsed(released)),
    );
    let writes = writer.stop().await;
    assert_rows_equal(J, &mut table, &writes).await;
    let reasons = cluster.event_reasons(&manifest.name).await;
    assert!(
        reasons.iter().any(|r| r == "ControlsChanged"),
        "no ControlsChanged event: {reasons:?}"
    );
}

/// `spec.cutOver.postpone: true` → Postponed with the copy complete while writes keep being
/// applied; `kubectl annotate ghost/postpone-cut-over=false` → cut-over → Succeeded.
pub async fn postpone(cluster: &Cluster, stack: &Stack) {
    const J: &str = "postpone";
    let mut table = Table::create("k8s_postpone", 5_000).await;
    let writer = Writer::start(table.schema.admin_config(), WRITE_PAUSE).await;
    let manifest = Manifest::new(J, table.database(), "ADD COLUMN note VARCHAR(20)")
        .with_spec("  cutOver:\n    postpone: true\n");
    let applied = Instant::now();
    apply(cluster, &manifest).await;
    let (smig, _) = stack
        .wait_phase(&manifest.name, "Postponed", PHASE_TIMEOUT)
        .await;
    say(
        J,
        format!("Postponed {} after kubectl apply", elapsed(applied)),
    );
    assert_eq!(
        smig["status"]["progress"]["percent"].as_f64(),
        Some(100.0),
        "{:#}",
        smig["status"]
    );
    let condition_text = condition(&smig, "CutOverPostponed")
        .or_else(|| condition(&smig, "Postponed"))
        .cloned()
        .unwrap_or_default();
    say(J, format!("postponed condition: {condition_text}"));

    // Writes keep reaching the ghost table: a marker row appears there, and its delete too.
    let ghost_table = format!("_{TABLE}_gho");
    let marker = "postpone-marker";
    marker_round_trip(&mut table.conn, marker, &ghost_table).await;

    // It stays postponed while nobody releases it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let smig = stack.smig(&manifest.name).await.expect("the smig exists");
    assert_eq!(smig["status"]["phase"], "Postponed", "{:#}", smig["status"]);
    assert!(
        table.columns().await.iter().all(|c| c != "note"),
        "cut over while postponed"
    );

    cluster
        .annotate(&manifest.name, &["ghost/postpone-cut-over=false"])
        .await;
    let (_, latency) = stack
        .wait_phase(&manifest.name, "Succeeded", PHASE_TIMEOUT)
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

/// Inserts a marker row into `users` through the admin session, waits until the engine has
/// applied it to the ghost table, then deletes it and waits for that too: the binlog is being
/// applied while the cut-over is postponed. The writer never sees the marker (it only touches
/// ids it made or read at start), so its model stays exact.
async fn marker_round_trip(conn: &mut mysql_async::Conn, marker: &str, ghost_table: &str) {
    let count_sql = format!(
        "SELECT COUNT(*) FROM `{}` WHERE name = ?",
        ghost_table.replace('`', "``")
    );
    conn.exec_drop(
        format!("INSERT INTO `{TABLE}` (name) VALUES (?)"),
        (marker,),
    )
    .await
    .expect("insert the marker");
    let inserted = wait_marker(conn, &count_sql, marker, 1).await;
    conn.exec_drop(format!("DELETE FROM `{TABLE}` WHERE name = ?"), (marker,))
        .await
        .expect("delete the marker");
    let deleted = wait_marker(conn, &count_sql, marker, 0).await;
    say(
        "postpone",
        format!(
            "while postponed, an insert reached the ghost table in {} and its delete in {}",
            fmt(inserted),
            fmt(deleted)
        ),
    );
}

/// Polls `count_sql` until it returns `want`; how long that took.
async fn wait_marker(
    conn: &mut mysql_async::Conn,
    count_sql: &str,
    marker: &str,
    want: u64,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let found: Option<u64> = conn
            .exec_first(count_sql, (marker,))
            .await
            .expect("count the marker");
        if found == Some(want) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the ghost table did not get to {want} marker rows in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `kubectl annotate smig x ghost/panic=true` mid-copy → Cancelled, the engine exits 3, the
/// ghost tables are gone and the original is untouched.
pub async fn panic(cluster: &Cluster, stack: &Stack) {
    const J: &str = "panic";
    let (mut table, before, manifest, job) = copying_mid_way(cluster, stack, J).await;

    cluster
        .annotate(&manifest.name, &["ghost/panic=true"])
        .await;
    let (smig, latency) = stack
        .wait_phase(&manifest.name, "Cancelled", PHASE_TIMEOUT)
        .await;
    say(
        J,
        format!("annotate ghost/panic=true → Cancelled in {}", fmt(latency)),
    );
    say(
        J,
        format!(
            "message: {}",
            smig["status"]["message"].as_str().unwrap_or_default()
        ),
    );

    // The engine exited 3 (cancelled), and the Job made no other pod.
    let t0 = Instant::now();
    let runs = loop {
        let runs = stack.runs_of(&job).await;
        if runs.iter().all(|r| r.exit_code.is_some()) || t0.elapsed() > Duration::from_secs(60) {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(runs.len(), 1, "pods of {job}: {runs:?}");
    assert_eq!(runs[0].exit_code, Some(3), "{runs:?}");
    assert_untouched(J, &mut table, &before).await;
    say(
        J,
        "engine exited 3; only the original table is left, unchanged",
    );
}

/// Bad specs are refused by the API server with the CRD's message and change nothing; a
/// missing Secret is a condition that says what to create, and no Job is made.
pub async fn invalid(cluster: &Cluster, stack: &Stack) {
    const J: &str = "invalid";
    let table = Table::create("k8s_invalid", 10).await;

    let refused = |manifest: Manifest, wanted: &'static str| async move {
        let out = cluster
            .kubectl_in(&["apply", "-f", "-"], Some(manifest.render().as_str()))
            .await;
        assert!(
            !out.ok,
            "kubectl apply accepted {}:\n{}",
            manifest.name, out.stdout
        );
        assert!(
            out.stderr.contains(wanted),
            "kubectl apply of {} failed without {wanted:?}:\n{}",
            manifest.name,
            out.stderr
        );
        let gone = cluster
            .kubectl_in(&["-n", NAMESPACE, "get", manifest.target().as_str()], None)
            .await;
        assert!(!gone.ok, "{} exists after the refusal", manifest.name);
        let error_line = out
            .stderr
            .lines()
            .find(|l| l.contains(wanted))
            .unwrap_or_default()
            .trim()
            .to_string();
        say(J, format!("refused: {error_line}"));
    };

    let empty = Manifest::new("empty-alter", table.database(), "  ");
    refused(empty, "alter must not be empty").await;
    let rename = Manifest::new("rename", table.database(), "RENAME TO people");
    refused(rename, "alter must not rename the table").await;
    let threads = Manifest::new("threads", table.database(), "ADD COLUMN x INT")
        .with_spec("  copy:\n    threads: 100\n");
    refused(threads, "should be less than or equal to 64").await;
    let mut bad_port = Manifest::new("bad-port", table.database(), "ADD COLUMN x INT");
    bad_port.spec_extra = String::new();
    let rendered_port = bad_port
        .render()
        .replace(&format!("port: {}", common::primary().port), "port: 70000");
    let out = cluster
        .kubectl_in(&["apply", "-f", "-"], Some(rendered_port.as_str()))
        .await;
    assert!(!out.ok, "a port of 70000 was accepted");
    assert!(
        out.stderr.contains("spec.connection.port") && out.stderr.contains("65535"),
        "{}",
        out.stderr
    );
    say(
        J,
        format!(
            "refused: {}",
            out.stderr
                .lines()
                .find(|l| l.contains("65535"))
                .unwrap_or_default()
                .trim()
        ),
    );

    // No Secret: the condition names it and how to fix it; no Job.
    let mut orphan = Manifest::new("no-secret", table.database(), "ADD COLUMN x INT");
    orphan.without_secret = true;
    let applied = Instant::now();
    apply(cluster, &orphan).await;
    let (smig, _) = stack
        .wait_smig(
            &orphan.name,
            "blocked on the Secret",
            PHASE_TIMEOUT,
            |smig| {
                smig["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "SecretNotFound"))
            },
        )
        .await;
    let blocked = smig["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["reason"] == "SecretNotFound"))
        .cloned()
        .unwrap_or_default();
    let message = blocked["message"].as_str().unwrap_or_default().to_string();
    say(
        J,
        format!(
            "missing Secret → condition {} {} in {}: {message}",
            blocked["type"],
            blocked["reason"],
            elapsed(applied)
        ),
    );
    assert!(
        message.contains(&orphan.secret) && message.contains("create it"),
        "{message}"
    );
    let jobs = cluster
        .names("jobs", &format!("ghost.dev/migration={}", orphan.name))
        .await;
    assert!(
        jobs.is_empty(),
        "a Job was made without its Secret: {jobs:?}"
    );
    assert!(
        smig["status"]["job"].is_null(),
        "status.job is set: {:#}",
        smig["status"]
    );

    // Changing alter after creation is refused, and the stored alter stays.
    let mut changed = Manifest::new("no-secret", table.database(), "ADD COLUMN y INT");
    changed.name = orphan.name.clone();
    changed.secret = orphan.secret.clone();
    changed.without_secret = true;
    let out = cluster
        .kubectl_in(&["apply", "-f", "-"], Some(changed.render().as_str()))
        .await;
    assert!(!out.ok, "changing alter was accepted");
    assert!(out.stderr.contains("alter is immutable"), "{}", out.stderr);
    let smig = stack.smig(&orphan.name).await.expect("the smig exists");
    assert_eq!(smig["spec"]["alter"], "ADD COLUMN x INT");
    say(
        J,
        format!(
            "refused: {}",
            out.stderr
                .lines()
                .find(|l| l.contains("immutable"))
                .unwrap_or_default()
                .trim()
        ),
    );
    drop(table);
}
