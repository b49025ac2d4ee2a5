//! The fault suite: migrations under writers that keep an exact record of every acknowledged
//! write, while the engine is killed (SIGKILL) at every step of the cut-over and at random
//! moments, its connections are killed, the network stalls and resets, and the servers restart.
//! After each fault the migration is resumed (`--resume`) to the end, and the table must hold
//! exactly what the writers were told they wrote.
//!
//! Knobs: `GHOST_FAULT_TRIALS` (trials per cut-over step, default 20), `GHOST_FAULT_RANDOM_KILLS`
//! (random-moment kills, default 20). Each test prints `kills survived, faults injected, rows
//! compared, mismatches`; the summary also goes to `$CARGO_TARGET_DIR/tmp/faults/summary.txt`.

mod common;

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use std::sync::atomic::Ordering;
use std::time::Instant;

use common::fault::{Tally, Trial, describe, env_count, ghost};

/// The steps a cut-over passes, per server algorithm (engine::cutover).
fn cut_over_steps(server: &ghost::engine::dialect::ServerInfo) -> Vec<&'static str> {
    use ghost::engine::dialect::CutOverAlgorithm;
    match server.cut_over_algorithm() {
        CutOverAlgorithm::GatedRename => vec![
            "cut-over:gate-created",
            "cut-over:locked",
            "cut-over:marker-applied",
            "cut-over:rename-queued",
            "cut-over:sentry-dropped",
            "cut-over:unlocked",
            "cut-over:swapped",
        ],
        CutOverAlgorithm::LockedRename => vec![
            "cut-over:locked",
            "cut-over:marker-applied",
            "cut-over:swapped",
            "cut-over:unlocked",
        ],
    }
}

async fn server_info() -> ghost::engine::dialect::ServerInfo {
    let mut conn = common::primary().connect().await.expect("primary");
    let info = ghost::engine::dialect::ServerInfo::detect(&mut conn)
        .await
        .expect("server info");
    let _ = conn.disconnect().await;
    info
}

/// SIGKILL at every step of the cut-over, `GHOST_FAULT_TRIALS` times each, with writers
/// running: the resumed run finishes, and no acknowledged write is missing or changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_at_every_cut_over_step() {
    let trials = env_count("GHOST_FAULT_TRIALS", 20);
    let server = server_info().await;
    let tally = Arc::new(Tally::default());
    for step in cut_over_steps(&server) {
        let started = Instant::now();
        // A few trials at once: each has its own schema, table and writers.
        let mut pending = Vec::new();
        for trial in 0..trials {
            let tally = tally.clone();
            pending.push(tokio::spawn(async move {
                let t = Trial::start("cutkill").await;
                t.die_at(step, &[], &tally);
                let resumed = t.resume();
                assert!(
                    resumed.status.success(),
                    "{step} trial {trial}: the resumed run failed: {}",
                    describe(&resumed)
                );
                t.finish(&tally, &format!("{step} trial {trial}")).await;
            }));
            if pending.len() == 3 {
                for p in pending.drain(..) {
                    p.await.expect("trial");
                }
            }
        }
        for p in pending {
            p.await.expect("trial");
        }
        println!(
            "{step}: {trials} kills, every resumed run finished with the writers' record ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
    }
    tally.report("kill at every cut-over step");
}

/// `--skip-uncopied-changes` across a kill mid-copy: the resumed run's ghost table already holds
/// rows past its checkpoint's key (copied after the checkpoint), which the copy's `INSERT IGNORE`
/// would keep as they are, so their changes must still be applied. The copy is slowed down (tiny
/// chunks, a nice ratio) so a checkpoint is written mid-copy (every 10 s at the least), and the
/// checksum is off so that nothing but the apply path keeps the rows right.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_mid_copy_and_resume_leaving_uncopied_changes_to_the_copy() {
    let trials = (env_count("GHOST_FAULT_TRIALS", 20) / 10).max(1);
    let tally = Tally::default();
    let flags = [
        "--skip-uncopied-changes=true",
        "--checksum=false",
        "--chunk-size=10",
        "--target-chunk-time-millis=0",
        "--nice-ratio=8",
    ];
    for trial in 0..trials {
        // Twice the rows of the random kills: the slowed copy must outlast the first checkpoint.
        let t = Trial::start_with("windowkill", 2 * RANDOM_ROWS).await;
        let mut run = common::fault::Running::spawn(ghost(&t.schema.name, &flags));
        for line in ["row copy starting", "checkpoint success"] {
            assert!(
                run.wait_for(line, std::time::Duration::from_secs(120)),
                "trial {trial}: never saw {line:?}:\n{}",
                common::fault::tail(&run.text(), 30)
            );
        }
        // The copy goes on past the checkpoint's key, with the writers behind and ahead of it.
        let delay = std::time::Duration::from_millis(rand::random_range(1000..=2500));
        tokio::time::sleep(delay).await;
        let _ = run.child.kill();
        let (_, output) = run.finish(std::time::Duration::from_secs(10));
        assert!(
            !output.contains("Row copy complete"),
            "trial {trial}: the copy ended before the kill; slow it down"
        );
        tally.kills.fetch_add(1, Ordering::Relaxed);
        // Slowed as well: a fast copy would pass the replayed changes' keys before they are
        // applied, and apply them as behind it.
        let resumed = t.resume_with(&flags);
        assert!(
            resumed.status.success(),
            "trial {trial}: the resumed run failed: {}",
            describe(&resumed)
        );
        t.finish(&tally, &format!("window trial {trial}")).await;
    }
    tally.report("kill mid-copy and resume, changes ahead of the copy left to it");
}

/// SIGKILL while a finished cut-over cleans up (the old table kept, or dropped with
/// `--ok-to-drop-table`): the resumed run finishes the clean-up, or recognises the finished run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_while_cleaning_up() {
    let trials = (env_count("GHOST_FAULT_TRIALS", 20) / 10).max(2);
    let tally = Tally::default();
    for (step, keep_old) in [
        ("finish:old-table-dropped", false),
        ("finish:changelog-left", false),
        ("finish:changelog-left", true),
    ] {
        for trial in 0..trials {
            let t = Trial::start("cleankill").await;
            let keep: &[&str] = if keep_old {
                &["--ok-to-drop-table=false"]
            } else {
                &[]
            };
            t.die_at(step, keep, &tally);
            let resumed = ghost(&t.schema.name, &[keep, &["--resume"]].concat())
                .output()
                .expect("resume");
            let what = format!("{step} (old table kept: {keep_old}) trial {trial}");
            assert!(
                resumed.status.success(),
                "{what}: the resumed run failed: {}",
                describe(&resumed)
            );
            let out = String::from_utf8_lossy(&resumed.stdout);
            assert!(
                out.contains("already migrated"),
                "{what}: the resumed run should say the migration was done: {out}"
            );
            if keep_old {
                // The kept old table (and the revert's checkpoint) are the user's to drop; the
                // check below wants only `t`.
                let mut conn = t.schema.admin_config().connect().await.expect("admin");
                conn.query_drop(format!(
                    "DROP TABLE `{0}`.`_t_del`, `{0}`.`_t_ghk`",
                    t.schema.name
                ))
                .await
                .expect("drop the kept old table");
                let _ = conn.disconnect().await;
            }
            t.finish(&tally, &what).await;
        }
    }
    tally.report("kill while cleaning up");
}

/// A killed run's migration lock outlives it until the server notices its connection is gone
/// (at once for an idle session, only when its statement ends for a busy one): a `--resume` run
/// waits for it, while a run that is not resuming refuses at once, as beside a live migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_run_waits_for_the_lock_of_the_run_it_follows() {
    let tally = Tally::default();
    let t = Trial::start("lockwait").await;
    let lock = ghost::engine::migration::migration_lock_name(&t.schema.name, "t");
    let mut holder = t.schema.admin_config().connect().await.expect("admin");
    let held: Option<i64> = holder
        .exec_first("SELECT GET_LOCK(?, 0)", (&lock,))
        .await
        .expect("GET_LOCK");
    assert_eq!(held, Some(1), "the test could not take {lock}");

    let refused = ghost(&t.schema.name, &[]).output().expect("run ghost");
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("is already migrating"),
        "a run beside a held migration lock must refuse: {}",
        describe(&refused)
    );

    let name = t.schema.name.clone();
    let resumed = tokio::task::spawn_blocking(move || {
        ghost(&name, &["--resume"])
            .output()
            .expect("run ghost --resume")
    });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let _: Option<i64> = holder
        .exec_first("SELECT RELEASE_LOCK(?)", (&lock,))
        .await
        .expect("RELEASE_LOCK");
    let resumed = resumed.await.expect("the resumed run");
    assert!(
        resumed.status.success(),
        "the resumed run did not wait for the lock: {}",
        describe(&resumed)
    );
    let _ = holder.disconnect().await;
    t.finish(&tally, "resumed after the lock was freed").await;
    tally.report("a resumed run waits for the migration lock");
}

/// Two-step cut-over: SIGKILL while locked, once the marker is applied, and between the two
/// renames (the table is briefly absent there): the resumed run completes the swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_at_every_two_step_cut_over_step() {
    let trials = (env_count("GHOST_FAULT_TRIALS", 20) / 4).max(3);
    let tally = Tally::default();
    for step in [
        "cut-over:locked",
        "cut-over:marker-applied",
        "two-step:original-renamed",
    ] {
        for trial in 0..trials {
            let t = Trial::start("twostep").await;
            t.die_at(step, &["--cut-over=two-step"], &tally);
            let resumed = ghost(&t.schema.name, &["--cut-over=two-step", "--resume"])
                .output()
                .expect("resume");
            assert!(
                resumed.status.success(),
                "{step} trial {trial}: the resumed run failed: {}",
                describe(&resumed)
            );
            if step == "two-step:original-renamed" {
                let out = String::from_utf8_lossy(&resumed.stdout);
                assert!(
                    out.contains("already migrated") && out.contains("swap is now complete"),
                    "the resumed run should say it completed the half-done swap: {out}"
                );
            }
            t.finish(&tally, &format!("two-step {step} trial {trial}"))
                .await;
        }
    }
    tally.report("kill at every two-step cut-over step");
}

/// The window the gated rename closes, opened by hand: the engine dies with the tables locked
/// after the marker, the writers keep writing to the original, and then the tables are swapped
/// without it (as gh-ost's RENAME could). The resumed run must find every one of those writes in
/// the binlog, apply them to the live table, and say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_that_reached_the_old_table_are_found_and_applied() {
    let tally = Tally::default();
    let t = Trial::start("leak").await;
    let first = ghost(&t.schema.name, &[])
        .env(ghost::engine::crash_point::ENV, "cut-over:marker-applied")
        .output()
        .expect("run ghost");
    assert!(!first.status.success(), "{}", describe(&first));
    tally.kills.fetch_add(1, Ordering::Relaxed);
    // The writers go on writing to the original, after everything the engine applied.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let Trial { schema, writers } = t;
    let (record, counts) = writers.stop().await;
    let mut admin = schema.admin_config().connect().await.expect("admin");

    admin
        .query_drop("RENAME TABLE t TO _t_del, _t_gho TO t")
        .await
        .expect("the swap by hand");
    tally.faults.fetch_add(1, Ordering::Relaxed);
    let resumed = ghost(&schema.name, &["--resume"]).output().expect("resume");
    assert!(resumed.status.success(), "{}", describe(&resumed));
    let out = String::from_utf8_lossy(&resumed.stdout).into_owned();
    println!("{out}");
    let leaked = out
        .split(" write(s) reached the old table")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        leaked > 0
            && out.contains(&format!(
                "({leaked} applied now, 0 already present, 0 conflicting)"
            )),
        "every write after the marker must be found and applied: {out}"
    );
    let (rows, problems) = common::model::mismatches(&mut admin, "t", &record).await;
    tally.record(rows, counts.acknowledged, problems.len());
    assert!(problems.is_empty(), "{problems:?}");
    let _ = admin.disconnect().await;
    tally.report("writes that reached the old table");
}

/// Rows of the random-moment trials.
const RANDOM_ROWS: i64 = 8_000;

/// Whether the migration's changelog table (`_t_ghc`) is still there.
async fn changelog_exists(schema: &common::TestSchema) -> bool {
    let mut admin = schema.admin_config().connect().await.expect("admin");
    let found: Option<String> = admin
        .exec_first(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = '_t_ghc'",
            (&schema.name,),
        )
        .await
        .expect("look for the changelog");
    let _ = admin.disconnect().await;
    found.is_some()
}

/// SIGKILL at random moments of each phase in turn (the copy, the checksum, a postponed
/// cut-over, the cut-over), then resume: the kill comes a random delay after the log line that
/// starts the phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_at_random_moments_and_resume() {
    let kills = env_count("GHOST_FAULT_RANDOM_KILLS", 20);
    let tally = Tally::default();
    // (phase, the log line that starts it, the largest delay after it in ms)
    let phases = [
        ("copy", "row copy starting", 400),
        ("checksum", "Row copy complete", 150),
        ("postponed", "cut-over postponed", 600),
        ("cut-over", "both tables match", 40),
    ];
    let mut by_phase: std::collections::BTreeMap<&str, u32> = Default::default();
    for trial in 0..kills {
        let (phase, line, max_delay) = phases[trial % phases.len()];
        let t = Trial::start_with("randkill", RANDOM_ROWS).await;
        let flag = std::env::temp_dir().join(format!("ghost-postpone-{}", t.schema.name));
        let mut extra = vec!["--chunk-size=100".to_string()];
        if phase == "postponed" {
            std::fs::write(&flag, b"").expect("flag file");
            extra.push(format!("--postpone-cut-over-flag-file={}", flag.display()));
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut run = common::fault::Running::spawn(ghost(&t.schema.name, &extra));
        assert!(
            run.wait_for(line, std::time::Duration::from_secs(120)),
            "trial {trial}: never saw {line:?}:\n{}",
            common::fault::tail(&run.text(), 30)
        );
        let delay = std::time::Duration::from_millis(rand::random_range(0..=max_delay));
        tokio::time::sleep(delay).await;
        let exited = run.child.try_wait().expect("wait").is_some();
        let _ = run.child.kill();
        let (_, output) = run.finish(std::time::Duration::from_secs(10));
        // Killed after its last drop: nothing is left to resume, as after an exit. The changelog
        // is what a run drops last, after the swap, so its absence after a kill in the cut-over
        // says the run got that far even when the kill came before its "clean-up complete" line.
        let finished = exited
            || output.contains("clean-up complete")
            || (phase == "cut-over" && !changelog_exists(&t.schema).await);
        let _ = std::fs::remove_file(&flag);
        if finished {
            // It ended before the kill: its result must be right all the same.
            t.finish(&tally, &format!("random trial {trial} (finished first)"))
                .await;
            continue;
        }
        *by_phase.entry(phase).or_default() += 1;
        tally.kills.fetch_add(1, Ordering::Relaxed);
        let resumed = t.resume();
        assert!(
            resumed.status.success(),
            "random trial {trial} killed during {phase} {delay:?} after {line:?}: the resumed run failed: {}",
            describe(&resumed)
        );
        t.finish(&tally, &format!("random trial {trial} ({phase})"))
            .await;
    }
    println!("kills by phase: {by_phase:?}");
    tally.report("kill at random moments");
}
