//! Journeys at scale: a thousand SchemaMigrations queued on one host, one queue move, and
//! `kubectl delete` of them all, measured against the same delete without an operator.

use ghost::api::SchemaMigration;
use kube::api::{Api, ListParams};

use super::*;

/// Migrations in the queue: `GHOST_JOURNEY_QUEUE`, default 1000 (issue #13's figure).
fn queue_size() -> usize {
    std::env::var("GHOST_JOURNEY_QUEUE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Status writes one queue move may cost, whatever the queue's length: the deleted migration's
/// last ones and the promoted migration's own phases (Pending, Validating, Copying, Postponed,
/// with their messages).
const WRITES_PER_MOVE_LIMIT: f64 = 20.0;

/// `count` SchemaMigrations of `holder`'s table, host and Secret, labelled `batch`, each with
/// its cut-over postponed (so a promoted one holds the host slot).
fn batch_yaml(holder: &Manifest, batch: &str, count: usize) -> String {
    let one = holder.render();
    // The holder's SchemaMigration document, without its Secret.
    let smig = one
        .split("---\n")
        .find(|doc| doc.contains("kind: SchemaMigration"))
        .expect("a SchemaMigration document");
    let labels = format!("  labels: {{\"{}\": \"true\"}}\n", harness::E2E_LABEL);
    assert!(smig.contains(&labels), "{smig}");
    (0..count)
        .map(|i| {
            smig.replacen(
                &format!("name: {}\n", holder.name),
                &format!("name: {batch}-{i:04}\n"),
                1,
            )
            .replacen(
                &labels,
                &format!(
                    "  labels: {{\"{}\": \"true\", \"ghost.dev/batch\": \"{batch}\"}}\n",
                    harness::E2E_LABEL
                ),
                1,
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// (listed, in `phase`) of the migrations of `batch`.
async fn count_phase(stack: &Stack, batch: &str, phase: &str) -> (usize, usize) {
    let api: Api<SchemaMigration> = Api::namespaced(stack.admin.clone(), NAMESPACE);
    let list = api
        .list(&ListParams::default().labels(&format!("ghost.dev/batch={batch}")))
        .await
        .expect("list the batch");
    let in_phase = list
        .items
        .iter()
        .filter(|m| {
            m.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| format!("{p:?}") == phase)
        })
        .count();
    (list.items.len(), in_phase)
}

/// Waits until the operator's status writes stop changing for `quiet`.
async fn writes_settled(stack: &Stack, quiet: Duration) -> f64 {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut last = stack
        .operator_metric("ghost_operator_status_writes_total")
        .await;
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        assert!(Instant::now() < deadline, "status writes never settled");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = stack
            .operator_metric("ghost_operator_status_writes_total")
            .await;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

/// `kubectl delete smig -l ghost.dev/batch=BATCH` (one DELETE per object, like `--all`), then
/// waits until every object is gone. Returns when all but `running` were gone (those have an
/// engine to stop and tables to drop) and when the last one was. kubectl's own `--wait` is left
/// out: it polls each object behind its client-side rate limit (5 per second), which would
/// dominate both sides.
async fn delete_batch(
    cluster: &Cluster,
    stack: &Stack,
    batch: &str,
    running: usize,
) -> (Duration, Duration) {
    let selector = format!("ghost.dev/batch={batch}");
    let api: Api<SchemaMigration> = Api::namespaced(stack.admin.clone(), NAMESPACE);
    let t0 = Instant::now();
    cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "delete",
                "schemamigrations.ghost.dev",
                "-l",
                selector.as_str(),
                "--wait=false",
            ],
            None,
        )
        .await;
    let listed = ListParams::default().labels(&selector);
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut queued_gone = None;
    loop {
        let left = api.list_metadata(&listed).await.expect("list").items.len();
        if left <= running && queued_gone.is_none() {
            queued_gone = Some(t0.elapsed());
        }
        if left == 0 {
            return (queued_gone.unwrap_or_default(), t0.elapsed());
        }
        assert!(Instant::now() < deadline, "{left} left after 900 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue #13's queue: N migrations queued behind one on the same host. One queue move costs a
/// bounded number of status writes (not one per queued migration); `kubectl delete smig --all`
/// creates no Job and takes about as long as without an operator; the operator's memory is
/// printed idle, at its peak and after the deletion.
pub async fn queue_of_many(cluster: &Cluster, stack: &Stack) {
    const J: &str = "queue";
    let n = queue_size();
    let table = Table::create("k8s_queue", 10).await;
    let holder = Manifest::new("hold", table.database(), "ADD COLUMN x INT")
        .with_spec("  cutOver:\n    postpone: true\n");

    // Without an operator (its Deployment scaled to zero): the API server alone creates and
    // deletes N migrations.
    stack.pause_operator(true).await;
    let created = Instant::now();
    cluster
        .kubectl(
            &["create", "-f", "-"],
            Some(&batch_yaml(&holder, "base", n)),
        )
        .await;
    let create_took = created.elapsed();
    let (without, _) = delete_batch(cluster, stack, "base", 0).await;
    // A new operator pod: its memory idle, its metrics from zero.
    stack.pause_operator(false).await;
    let idle_rss = stack.operator_rss_mib().await;
    say(
        J,
        format!(
            "without the operator: {n} created in {}, deleted in {}",
            fmt(create_took),
            fmt(without)
        ),
    );

    // One migration holds the host; N queue behind it.
    apply(cluster, &holder).await;
    stack
        .wait_phase(&holder.name, "Postponed", PHASE_TIMEOUT)
        .await;
    let created = Instant::now();
    cluster
        .kubectl(&["create", "-f", "-"], Some(&batch_yaml(&holder, "q", n)))
        .await;
    let mut peak_rss = stack.operator_rss_mib().await;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let (listed, queued) = count_phase(stack, "q", "Queued").await;
        peak_rss = peak_rss.max(stack.operator_rss_mib().await);
        if listed == n && queued == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{queued} of {n} queued after 900 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    say(
        J,
        format!(
            "{n} queued behind one (every status says Queued) {} after kubectl create",
            fmt(created.elapsed())
        ),
    );
    let writes_before = writes_settled(stack, Duration::from_secs(3)).await;
    let jobs_before = stack
        .operator_metric("ghost_operator_engine_jobs_created_total")
        .await;

    // One queue move: the holder goes, the first queued migration starts (and postpones).
    cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "delete",
                holder.target().as_str(),
                "--wait=true",
                "--timeout=120s",
            ],
            None,
        )
        .await;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let (_, postponed) = count_phase(stack, "q", "Postponed").await;
        if postponed == 1 {
            break;
        }
        assert!(postponed <= 1, "{postponed} started on a host of one slot");
        assert!(Instant::now() < deadline, "no queued migration started");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let writes_after = writes_settled(stack, Duration::from_secs(3)).await;
    let move_writes = writes_after - writes_before;
    let jobs_after = stack
        .operator_metric("ghost_operator_engine_jobs_created_total")
        .await;
    say(
        J,
        format!(
            "one queue move ({} still queued): {move_writes} status writes, {} Job created",
            n - 1,
            jobs_after - jobs_before
        ),
    );
    assert_eq!(jobs_after - jobs_before, 1.0, "one migration starts");
    assert!(
        move_writes <= WRITES_PER_MOVE_LIMIT,
        "{move_writes} status writes for one queue move of {n}"
    );

    // Everything at once.
    peak_rss = peak_rss.max(stack.operator_rss_mib().await);
    let cpu_before = stack.operator_cpu_seconds().await;
    let (with, all_gone) = delete_batch(cluster, stack, "q", 1).await;
    let cpu = stack.operator_cpu_seconds().await - cpu_before;
    let jobs_end = stack
        .operator_metric("ghost_operator_engine_jobs_created_total")
        .await;
    say(
        J,
        format!(
            "with the operator: the {} queued deleted in {} ({:.2}x the {} without it; the \
             operator used {cpu:.1} s of CPU); the running one's cleanup (stop its engine, drop \
             its tables) done at {}; {} Jobs created meanwhile",
            n - 1,
            fmt(with),
            with.as_secs_f64() / without.as_secs_f64().max(0.001),
            fmt(without),
            fmt(all_gone),
            jobs_end - jobs_after
        ),
    );
    assert_eq!(
        jobs_end, jobs_after,
        "a Job was created during the deletion"
    );
    // A migration that never started is deleted without a reconcile (it has no finalizer): its
    // metric series and the operator's state of it must go all the same.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let series = stack
            .operator_metric("ghost_operator_migration_phase")
            .await;
        if series == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{series} migrations still have a phase series 30 s after they were deleted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after_rss = stack.operator_rss_mib().await;
    say(
        J,
        format!(
            "operator RSS: idle {idle_rss:.1} MiB, peak {peak_rss:.1} MiB with {n} migrations, \
             {after_rss:.1} MiB 10 s after they were deleted"
        ),
    );
    drop(table);
}
