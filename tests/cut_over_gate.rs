//! The gated rename's hand-over (MariaDB, MySQL before 8.0.13): session A holds the original
//! and the gate; the RENAME must be seen queued on the original before A lets go, so that it is
//! granted before every write waiting there. A write granted first would land in the table the
//! RENAME then moves away, after the last change was applied: a lost write.
//!
//! Servers whose cut-over is the locked rename (`engine::dialect`) have no hand-over; the tests
//! say so and pass.

mod common;

use std::time::Duration;

use ghost::engine::conn::ConnectionConfig;
use ghost::engine::cutover::{CutOverTables, order};
use ghost::engine::dialect::{CutOverAlgorithm, ServerInfo};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

const ROUNDS: usize = 20;

/// `t` and its ghost table `_t_gho` in a fresh schema, with the gates; None when this server
/// does not use the gated rename.
async fn gated_tables(schema: &common::TestSchema) -> Option<(CutOverTables, ServerInfo)> {
    let server = gated_server(schema).await?;
    let mut admin = schema.admin_config().connect().await.expect("admin");
    let tables = CutOverTables {
        schema: schema.name.clone(),
        original: "t".into(),
        ghost: "_t_gho".into(),
        old: "_t_del".into(),
        engine: "InnoDB".into(),
        gates: order::gate_names("t"),
    };
    reset(&mut admin, &tables).await;
    let _ = admin.disconnect().await;
    Some((tables, server))
}

/// The server, when its cut-over is the gated rename.
async fn gated_server(schema: &common::TestSchema) -> Option<ServerInfo> {
    let mut admin = schema.admin_config().connect().await.expect("admin");
    let server = ServerInfo::detect(&mut admin).await.expect("server info");
    let _ = admin.disconnect().await;
    if server.cut_over_algorithm() != CutOverAlgorithm::GatedRename {
        println!("this server cuts over with the locked rename: no hand-over to test");
        return None;
    }
    Some(server)
}

/// Fresh `t` (one row) and `_t_gho` (empty), no old table, new gates.
async fn reset(admin: &mut Conn, tables: &CutOverTables) {
    for name in ["t", "_t_gho", "_t_del"] {
        admin
            .query_drop(format!("DROP TABLE IF EXISTS `{name}`"))
            .await
            .expect("drop");
    }
    for name in ["t", "_t_gho"] {
        admin
            .query_drop(format!(
                "CREATE TABLE `{name}` (id INT PRIMARY KEY, v INT) ENGINE=InnoDB"
            ))
            .await
            .expect("create");
    }
    admin
        .query_drop("INSERT INTO t VALUES (0, 0)")
        .await
        .expect("seed");
    tables.create_gates(admin).await.expect("gates");
}

async fn session(config: &ConnectionConfig) -> Conn {
    config.connect().await.expect("session")
}

/// Waits until session `id` waits for a table's metadata lock (PROCESSLIST).
async fn until_waiting(probe: &mut Conn, id: u32) {
    for _ in 0..5_000 {
        let state: Option<Option<String>> = probe
            .exec_first(
                "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?",
                (id,),
            )
            .await
            .expect("processlist");
        if state.flatten().as_deref() == Some("Waiting for table metadata lock") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("session {id} never waited for a table lock");
}

/// A session that holds the lock the RENAME takes right before the original's, and waits for
/// nothing, is not a RENAME queued on the original: the check must keep waiting (and time out).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_holding_the_lock_before_the_original_is_not_taken_for_a_queued_rename() {
    let schema = common::TestSchema::create("gate_hold").await;
    let Some((tables, server)) = gated_tables(&schema).await else {
        return;
    };
    let engine = schema.conn_config();
    let mut lock_a = session(&engine).await;
    tables
        .lock_for_gate(&mut lock_a, Duration::from_secs(10))
        .await
        .expect("A locks the original and the gate");
    // Holds the ghost table, the RENAME's lock right before the original's, and is idle.
    let mut holder = session(&schema.admin_config()).await;
    holder
        .query_drop("LOCK TABLES `_t_gho` WRITE")
        .await
        .expect("hold the ghost table");
    let mut probe = session(&engine).await;
    let verdict = tables
        .wait_rename_queued(&mut probe, holder.id(), &server, Duration::from_millis(500))
        .await;
    assert!(
        verdict.is_err(),
        "an idle session holding `_t_gho` was taken for the RENAME queued on `t`"
    );
    for conn in [&mut holder, &mut lock_a] {
        conn.query_drop("UNLOCK TABLES").await.expect("unlock");
    }
    for conn in [holder, lock_a, probe] {
        let _ = conn.disconnect().await;
    }
}

/// A write waiting on the original before the RENAME is issued: once the RENAME is seen queued,
/// A drops the gate and unlocks, and the write must land in the new table, every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_waiting_before_the_rename_lands_in_the_new_table() {
    let schema = common::TestSchema::create("gate_order").await;
    let Some((tables, server)) = gated_tables(&schema).await else {
        return;
    };
    let engine = schema.conn_config();
    let admin_config = schema.admin_config();
    let mut admin = session(&admin_config).await;
    for round in 0..ROUNDS {
        if round > 0 {
            reset(&mut admin, &tables).await;
        }
        let mut lock_a = session(&engine).await;
        tables
            .lock_for_gate(&mut lock_a, Duration::from_secs(10))
            .await
            .expect("A locks the original and the gate");
        let mut probe = session(&engine).await;

        let mut writer = session(&admin_config).await;
        let writer_id = writer.id();
        let write = tokio::spawn(async move {
            let result = writer
                .query_drop(format!("INSERT INTO t VALUES ({}, 1)", round + 1))
                .await;
            let _ = writer.disconnect().await;
            result
        });
        until_waiting(&mut probe, writer_id).await;

        let mut rename_b = session(&engine).await;
        rename_b
            .query_drop("SET SESSION lock_wait_timeout = 10")
            .await
            .expect("timeout");
        let rename_id = rename_b.id();
        let swap = tables.gated_swap_sql().expect("gated swap");
        let rename = tokio::spawn(async move {
            let result = rename_b.query_drop(swap).await;
            let _ = rename_b.disconnect().await;
            result
        });
        tables
            .wait_rename_queued(&mut probe, rename_id, &server, Duration::from_secs(5))
            .await
            .expect("the RENAME is seen queued");
        tables.drop_gate(&mut lock_a).await.expect("drop the gate");
        tables.unlock(&mut lock_a).await.expect("unlock");
        rename.await.expect("task").expect("the RENAME swaps");
        write.await.expect("task").expect("the write lands");

        let in_new: Option<i64> = admin
            .exec_first("SELECT COUNT(*) FROM t WHERE id = ?", (round + 1,))
            .await
            .expect("count new");
        let in_old: Option<i64> = admin
            .exec_first("SELECT COUNT(*) FROM `_t_del` WHERE id = ?", (round + 1,))
            .await
            .expect("count old");
        assert_eq!(
            (in_new, in_old),
            (Some(1), Some(0)),
            "round {round}: the waiting write went into the old table, after the hand-over"
        );
        for conn in [lock_a, probe] {
            let _ = conn.disconnect().await;
        }
    }
    let _ = admin.disconnect().await;
}

/// The hand-over done wrong on purpose (`cut-over:hand-over-early`: A lets go 300 ms before the
/// RENAME is sent), under a writer: writes reach the old table after the lock. The swap's check
/// must find every one in the binary log and apply it to the new table, so that the table ends
/// exactly as the writer was told. Each write touches a row no other write touches, so none can
/// conflict with the new table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_that_reach_the_old_table_are_found_and_applied_after_the_swap() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    const SEED: i64 = 5_000;
    const ONCE: i64 = 2_400;
    let schema = common::TestSchema::create("gate_audit").await;
    if gated_server(&schema).await.is_none() {
        return;
    }
    let mut admin = session(&schema.admin_config()).await;
    for sql in [
        "CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB".to_string(),
        format!(
            "INSERT INTO t SELECT seq, 0 FROM {}",
            common::dialect::numbers(SEED as u64)
        ),
    ] {
        admin.query_drop(sql).await.expect("seed");
    }

    // The writer: per round an insert of a new row, and while seeded rows last, an update of one
    // and a delete of another, each row written once. The map is what it was told.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let config = schema.admin_config();
        tokio::spawn(async move {
            let mut expected: BTreeMap<i64, i64> = (1..=SEED).map(|id| (id, 0)).collect();
            let mut conn = config.connect().await.expect("writer");
            let mut k: i64 = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = 1_000_000 + k;
                conn.exec_drop("INSERT INTO t (id, v) VALUES (?, ?)", (id, k))
                    .await
                    .expect("insert");
                expected.insert(id, k);
                if k < ONCE {
                    conn.exec_drop("UPDATE t SET v = ? WHERE id = ?", (-k - 1, k + 1))
                        .await
                        .expect("update");
                    expected.insert(k + 1, -k - 1);
                    conn.exec_drop("DELETE FROM t WHERE id = ?", (SEED - k,))
                        .await
                        .expect("delete");
                    expected.remove(&(SEED - k));
                }
                k += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let _ = conn.disconnect().await;
            (expected, k)
        })
    };

    let name = schema.name.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::ghost_bin())
            .arg("migrate")
            .args(common::migrate_args(
                &name,
                "t",
                "ADD COLUMN note VARCHAR(16) NULL",
            ))
            .args([
                "--ok-to-drop-table",
                "--chunk-size=500",
                "--cut-over-lock-timeout-seconds=5",
            ])
            .env(ghost::engine::crash_point::ENV, "cut-over:hand-over-early")
            .output()
            .expect("run ghost")
    })
    .await
    .expect("ghost task");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let (expected, rounds) = writer.await.expect("writer task");
    let log = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "the migration failed: {}",
        common::fault::describe(&output)
    );

    let rows: Vec<(i64, i64)> = admin
        .query("SELECT id, v FROM t ORDER BY id")
        .await
        .expect("rows");
    let actual: BTreeMap<i64, i64> = rows.into_iter().collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|(id, v)| actual.get(id) != Some(v))
        .take(10)
        .collect();
    let extra: Vec<_> = actual
        .keys()
        .filter(|id| !expected.contains_key(id))
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the table differs from what the writer was told: expected but not found {missing:?}, found but deleted {extra:?}"
    );
    let found = |field: &str| -> Option<u64> {
        let line = log
            .lines()
            .find(|l| l.contains("writes reached the old table after the cut-over's lock"))?;
        let at = line.find(&format!("{field}="))? + field.len() + 1;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let (leaked, applied, conflicts) = (found("leaked"), found("applied"), found("conflicts"));
    println!(
        "writer rounds {rounds}; the swap's check: leaked {leaked:?}, applied {applied:?}, conflicts {conflicts:?}"
    );
    assert!(
        leaked.is_some_and(|n| n > 0),
        "no write was reported in the old table; the fault did not take:\n{}",
        common::fault::tail(&log, 30)
    );
    assert_eq!(conflicts, Some(0), "no write here can conflict");
    assert_eq!(applied, leaked, "every leaked write applied");

    let leftovers: Vec<String> = common::table_names(&mut admin, &schema.name)
        .await
        .into_iter()
        .filter(|t| t != "t")
        .collect();
    assert!(leftovers.is_empty(), "tables left behind: {leftovers:?}");
    let _ = admin.disconnect().await;
}
