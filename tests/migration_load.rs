//! Migrations under write load on the real primary: the ghost table equals the original row by row
//! once the backlog is applied, and a client inserting through the cut-over loses no write.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ghost::engine::config::{MigrationConfig, Topology};
use ghost::engine::controls::Controls;
use ghost::engine::dialect::ServerInfo;
use ghost::engine::migration::{Migration, Outcome};
use ghost::engine::progress::{Phase, Progress};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use tokio::sync::watch;

fn config(schema: &str, alter: &str) -> MigrationConfig {
    let mut cfg = MigrationConfig::new(common::primary(), schema, "t", alter);
    cfg.execute = true;
    cfg.allow_on_master = true;
    cfg.topology = Topology::Normal;
    cfg.replica_server_id = common::unique_server_id();
    cfg.default_retries = 5;
    cfg
}

async fn create_table(conn: &mut Conn, rows: u32) {
    conn.query_drop(
        "CREATE TABLE t (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, a INT NOT NULL, b VARCHAR(64) CHARACTER SET latin1, \
         c DATETIME(6), d DECIMAL(20,4), UNIQUE KEY uk_a (a)) ENGINE=InnoDB",
    )
    .await
    .expect("create t");
    conn.query_drop(format!(
        "INSERT INTO t (id, a, b, c, d) SELECT seq, seq * 10, CONCAT('row ', seq, ' é'), \
         NOW(6) - INTERVAL seq SECOND, seq / 7 FROM {seq}",
        seq = common::dialect::numbers(u64::from(rows))
    ))
    .await
    .expect("seed rows");
}

/// Mixed DML at a steady rate until `stop`: inserts, updates (also of the key), deletes.
async fn mixed_writer(schema: common::TestSchemaRef, stop: Arc<AtomicBool>) -> u64 {
    let mut conn = schema.admin_config().connect().await.expect("writer");
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let sql = match n % 5 {
            0 => format!(
                "INSERT INTO t (a, b, c, d) VALUES ({}, 'new {n} ü', NOW(6), {n}.5)",
                1_000_000 + n
            ),
            1 => format!(
                "UPDATE t SET b = CONCAT(b, '+'), d = d + 1 WHERE id = {}",
                1 + n % 3000
            ),
            2 => format!("DELETE FROM t WHERE id = {}", 5 + (n * 7) % 3000),
            // Moves a row's primary key (delete + insert on the ghost table).
            3 => format!(
                "UPDATE t SET id = id + 100000 WHERE id = {} AND id < 100000",
                10 + (n * 13) % 3000
            ),
            _ => format!("UPDATE t SET a = a + 1 WHERE id = {}", 3 + (n * 11) % 3000),
        };
        // A statement may legitimately hit nothing or a duplicate; the point is the load.
        let _ = conn.query_drop(sql).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    n
}

/// A migration with its cut-over postponed, and the mixed writer, both running.
struct UnderLoad {
    controls_tx: watch::Sender<Controls>,
    progress_rx: watch::Receiver<Progress>,
    stop: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<u64>,
    migration: tokio::task::JoinHandle<ghost::engine::error::Result<Outcome>>,
}

fn postponed_under_load(
    schema: &common::TestSchema,
    cfg: MigrationConfig,
    chunk_size: u64,
) -> UnderLoad {
    postponed_under_load_with(
        schema,
        cfg,
        Controls {
            chunk_size,
            postpone_cut_over: true,
            ..Controls::default()
        },
    )
}

fn postponed_under_load_with(
    schema: &common::TestSchema,
    cfg: MigrationConfig,
    controls: Controls,
) -> UnderLoad {
    let (controls_tx, controls_rx) = watch::channel(controls);
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(mixed_writer(schema.reference(), stop.clone()));
    let migration = tokio::spawn(Migration::new(cfg, controls_rx, progress_tx).run());
    UnderLoad {
        controls_tx,
        progress_rx,
        stop,
        writer,
        migration,
    }
}

/// A 20,000-row table migrated (`ADD COLUMN e`, `tweak`ed) under the mixed writer, in 50-row
/// chunks, until the copy is done and the cut-over postponed.
async fn postponed_after_copy_under_load(
    label: &str,
    tweak: impl FnOnce(&mut MigrationConfig),
) -> (common::TestSchema, Conn, UnderLoad) {
    let schema = common::TestSchema::create(label).await;
    let mut admin = schema.admin_config().connect().await.expect("admin");
    create_table(&mut admin, 20_000).await;
    let mut cfg = config(&schema.name, "ADD COLUMN e INT NOT NULL DEFAULT 7");
    tweak(&mut cfg);
    let mut under_load = postponed_under_load(&schema, cfg, 50);
    wait_phase(
        &mut under_load.progress_rx,
        Phase::Postponed,
        Duration::from_secs(120),
    )
    .await;
    (schema, admin, under_load)
}

/// Stops the writer, lets the postponed migration cut over, and returns its last progress and
/// the writes made.
async fn stop_writer_and_cut_over(under_load: UnderLoad) -> (Progress, u64) {
    let (progress, writes, _) = stop_writer_compare_and_cut_over(under_load, None).await;
    (progress, writes)
}

/// As `stop_writer_and_cut_over`; with `admin`, first checks that both tables hold the same
/// rows once the backlog is applied, and returns them too.
async fn stop_writer_compare_and_cut_over(
    under_load: UnderLoad,
    admin: Option<&mut Conn>,
) -> (Progress, u64, Vec<Row>) {
    let UnderLoad {
        controls_tx,
        progress_rx,
        stop,
        writer,
        migration,
    } = under_load;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    let original = match admin {
        Some(admin) => backlog_applied_and_tables_equal(admin, &progress_rx).await,
        None => Vec::new(),
    };
    controls_tx.send_modify(|c| c.postpone_cut_over = false);
    let outcome = migration.await.expect("task").expect("migration");
    assert!(matches!(outcome, Outcome::Migrated { .. }), "{outcome:?}");
    let progress = progress_rx.borrow().clone();
    (progress, writes, original)
}

async fn rows(conn: &mut Conn, table: &str, columns: &str) -> Vec<Row> {
    conn.query(format!("SELECT {columns} FROM `{table}` ORDER BY id"))
        .await
        .expect("select")
}

async fn wait_phase(progress: &mut watch::Receiver<Progress>, phase: Phase, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if progress.borrow().phase == phase {
            return;
        }
        let p = progress.borrow().clone();
        assert!(!p.phase.is_terminal(), "migration ended early: {p:?}");
        assert!(
            Instant::now() < deadline,
            "phase {phase:?} not reached: {p:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), progress.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghost_table_equals_original_under_mixed_load() {
    let schema = common::TestSchema::create("load").await;
    let mut admin = schema.admin_config().connect().await.expect("admin");
    create_table(&mut admin, 3000).await;

    let mut cfg = config(
        &schema.name,
        "ADD COLUMN e INT NOT NULL DEFAULT 7, MODIFY b VARCHAR(80) CHARACTER SET utf8mb4",
    );
    cfg.exact_rowcount = true;
    let UnderLoad {
        controls_tx,
        mut progress_rx,
        stop,
        writer,
        migration,
    } = postponed_under_load(&schema, cfg, 200);

    wait_phase(&mut progress_rx, Phase::Postponed, Duration::from_secs(60)).await;
    // Keep writing a while after the copy, so the applier has work while postponed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("writer");

    let original = backlog_applied_and_tables_equal(&mut admin, &progress_rx).await;
    assert!(
        original.len() > 2900,
        "the table kept its rows: {}",
        original.len()
    );

    controls_tx.send_modify(|c| c.postpone_cut_over = false);
    let outcome = migration.await.expect("task").expect("migration");
    assert!(matches!(outcome, Outcome::Migrated { .. }), "{outcome:?}");
    let after = rows(&mut admin, "t", "id, a, b, c, d, e").await;
    assert_eq!(after.len(), original.len());
    let p = progress_rx.borrow().clone();
    eprintln!(
        "mixed load: {writes} writes, {} rows copied, {} events applied, cut-over lock {:?} ms",
        p.rows_copied, p.events_applied, p.cut_over_lock_millis
    );
    assert_eq!(p.phase, Phase::Succeeded);
    assert!(p.events_applied > 0, "binlog events were applied");
    // The checksum gate ran while the writer was still writing, and found nothing to fix: its
    // consistent point holds under load.
    assert_eq!(p.checksum_passes, 1, "the checksum gate ran once");
    assert_eq!(p.chunks_recopied, 0, "the checksum found false differences");
}

/// Waits until the engine applied past the primary's current binlog position (every change up to
/// here reached the ghost table), then asserts both tables hold the same rows; returns them.
async fn backlog_applied_and_tables_equal(
    admin: &mut Conn,
    progress_rx: &watch::Receiver<Progress>,
) -> Vec<Row> {
    let server = ServerInfo::detect(admin).await.expect("server");
    let end = server.binlog_coordinates(admin).await.expect("position");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let applied = progress_rx.borrow().applied_position.clone();
        if applied.as_ref().is_some_and(|p| p.coordinates >= end) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backlog not applied: {applied:?} < {end}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let original = rows(admin, "t", "id, a, b, c, d").await;
    let ghost = rows(admin, "_t_gho", "id, a, b, c, d").await;
    assert_eq!(original.len(), ghost.len(), "row counts differ");
    for (o, g) in original.iter().zip(ghost.iter()) {
        assert_eq!(o.clone().unwrap(), g.clone().unwrap(), "rows differ");
    }
    original
}

/// Changes right at the copy's frontier, where the applier decides between writing a change and
/// leaving it to the copy (`--skip-uncopied-changes`): with the checksum off nothing repairs a
/// wrong decision, so the tables must be equal by the apply path alone. The copy is slowed down
/// (small chunks, nice ratio) so the writer can keep up with its frontier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_at_the_copy_frontier_are_kept() {
    let schema = common::TestSchema::create("frontier").await;
    let mut admin = schema.admin_config().connect().await.expect("admin");
    create_table(&mut admin, 3000).await;
    // The primary key alone: with another unique key the copy may skip rows, and then every
    // change is applied.
    admin
        .query_drop("ALTER TABLE t DROP INDEX uk_a")
        .await
        .expect("drop uk_a");

    let mut cfg = config(&schema.name, "ADD COLUMN e INT NOT NULL DEFAULT 7");
    cfg.checksum = false;
    cfg.skip_uncopied_changes = true;
    let (controls_tx, controls_rx) = watch::channel(Controls {
        chunk_size: 40,
        nice_ratio: 2.0,
        postpone_cut_over: true,
        ..Controls::default()
    });
    let (progress_tx, mut progress_rx) = watch::channel(Progress::default());
    let migration = tokio::spawn(Migration::new(cfg, controls_rx, progress_tx).run());

    // The seeded ids are 1..=3000 with no gaps, so the rows copied so far are the copy's frontier.
    let mut writer = schema.admin_config().connect().await.expect("writer");
    let mut writes = 0u64;
    let mut frontiers_seen = std::collections::BTreeSet::new();
    loop {
        let p = progress_rx.borrow().clone();
        if p.phase != Phase::Copying && p.phase != Phase::Pending && p.phase != Phase::Validating {
            break;
        }
        let frontier = p.rows_copied;
        if !(10..2990).contains(&frontier) {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        frontiers_seen.insert(frontier);
        writes += 1;
        let near = |d: u64| frontier + d % 9 - 4; // frontier-4 ..= frontier+4
        let sql = match writes % 6 {
            0 | 1 => format!(
                "UPDATE t SET b = CONCAT(b, '+'), d = d + 1 WHERE id = {}",
                near(writes)
            ),
            2 => format!("DELETE FROM t WHERE id = {}", near(writes / 3)),
            // A deleted id written again, with other values.
            3 => format!(
                "INSERT IGNORE INTO t (id, a, b) VALUES ({id}, {a}, 'again {writes}')",
                id = near(writes / 2),
                a = 5_000_000 + writes
            ),
            // Key moves from the frontier to past the copy's end, and back into a gap near it.
            4 => format!(
                "UPDATE t SET id = id + 100000 WHERE id = {}",
                near(writes / 5)
            ),
            _ => format!(
                "UPDATE IGNORE t SET id = {} WHERE id = {}",
                near(writes / 7),
                100_000 + near(writes / 11)
            ),
        };
        let _ = writer.query_drop(sql).await;
    }
    wait_phase(&mut progress_rx, Phase::Postponed, Duration::from_secs(120)).await;
    let original = backlog_applied_and_tables_equal(&mut admin, &progress_rx).await;
    eprintln!(
        "frontier: {writes} writes at {} frontiers, {} rows",
        frontiers_seen.len(),
        original.len()
    );
    assert!(frontiers_seen.len() > 20, "the writer followed the copy");
    controls_tx.send_modify(|c| c.postpone_cut_over = false);
    let outcome = migration.await.expect("task").expect("migration");
    assert!(matches!(outcome, Outcome::Migrated { .. }), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_through_the_cut_over_are_not_lost() {
    let schema = common::TestSchema::create("cutover").await;
    let mut admin = schema.admin_config().connect().await.expect("admin");
    create_table(&mut admin, 2000).await;

    let cfg = config(&schema.name, "ADD COLUMN e INT NOT NULL DEFAULT 7");
    let (_controls_tx, controls_rx) = watch::channel(Controls {
        chunk_size: 500,
        ..Controls::default()
    });
    let (progress_tx, progress_rx) = watch::channel(Progress::default());

    // Four clients insert continuously and log what the server acknowledged, and how long each
    // insert took: several INSERTs are queued on the table when the cut-over releases it.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client_no in 0..4u64 {
        let client_schema = schema.reference();
        let client_stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut conn = client_schema
                .admin_config()
                .connect()
                .await
                .expect("client");
            let mut acked = Vec::new();
            let mut slowest = Duration::ZERO;
            let mut n = 0u64;
            while !client_stop.load(Ordering::Relaxed) {
                n += 1;
                let a = 5_000_000 + client_no * 1_000_000 + n;
                let started = Instant::now();
                if conn
                    .query_drop(format!("INSERT INTO t (a, b) VALUES ({a}, 'client')"))
                    .await
                    .is_ok()
                {
                    acked.push(a);
                }
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (acked, slowest, n)
        }));
    }

    let outcome = Migration::new(cfg, controls_rx, progress_tx)
        .run()
        .await
        .expect("migration");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut slowest, mut attempted) = (Vec::new(), Duration::ZERO, 0);
    for client in clients {
        let (a, s, n) = client.await.expect("client");
        acked.extend(a);
        slowest = slowest.max(s);
        attempted += n;
    }
    acked.sort_unstable();

    let Outcome::Migrated { cut_over_lock } = outcome else {
        panic!("unexpected outcome {outcome:?}");
    };
    let present: Vec<u64> = admin
        .query("SELECT a FROM t WHERE a >= 5000000 ORDER BY a")
        .await
        .expect("read back");
    let missing: Vec<&u64> = acked
        .iter()
        .filter(|a| present.binary_search(a).is_err())
        .collect();
    let columns: Vec<String> = admin
        .query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't'")
        .await
        .expect("columns");
    assert!(
        columns.contains(&"e".to_string()),
        "the table was swapped: {columns:?}"
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged inserts lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        acked.len() as u64,
        attempted,
        "every insert was acknowledged"
    );
    eprintln!(
        "cut-over: {} client inserts acknowledged, none lost; writes blocked {} ms (engine), slowest client insert {} ms; progress {:?}",
        acked.len(),
        cut_over_lock.as_millis(),
        slowest.as_millis(),
        progress_rx.borrow().cut_over_lock_millis
    );
}

/// With a target chunk time, chunks grow from a tiny `chunk-size` toward the target while the
/// table is copied exactly (the mixed writer keeps running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_grow_toward_the_target_chunk_time() {
    let schema = common::TestSchema::create("adaptive").await;
    let mut admin = schema.admin_config().connect().await.expect("admin");
    create_table(&mut admin, 20_000).await;

    let mut cfg = config(&schema.name, "ADD COLUMN e INT NOT NULL DEFAULT 7");
    cfg.target_chunk_time = Some(Duration::from_millis(50));
    let UnderLoad {
        controls_tx,
        mut progress_rx,
        stop,
        writer,
        migration,
    } = postponed_under_load(&schema, cfg, 10);

    // The largest chunk seen while copying.
    let mut largest = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while progress_rx.borrow().phase != Phase::Postponed {
        let p = progress_rx.borrow().clone();
        assert!(!p.phase.is_terminal(), "migration ended early: {p:?}");
        assert!(Instant::now() < deadline, "copy not done: {p:?}");
        largest = largest.max(p.chunk_size);
        let _ = tokio::time::timeout(Duration::from_millis(200), progress_rx.changed()).await;
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    controls_tx.send_modify(|c| c.postpone_cut_over = false);
    let outcome = migration.await.expect("task").expect("migration");
    assert!(matches!(outcome, Outcome::Migrated { .. }), "{outcome:?}");
    let p = progress_rx.borrow().clone();
    eprintln!(
        "adaptive chunks: from 10 rows to {largest} (last {}), {writes} writes, checksum passes {}",
        p.chunk_size, p.checksum_passes
    );
    assert!(
        largest >= 160,
        "chunks did not grow from 10: largest {largest}"
    );
    assert_eq!(p.chunks_recopied, 0, "the checksum found differences");
}

/// The checksum during the copy, under the mixed writer (key moves and deletes included): chunks
/// found equal at its consistent points stay so only until a change reaches them, so the gate
/// finds nothing to copy again and both tables end equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_during_the_copy_under_mixed_load() {
    let schema = common::TestSchema::create("early").await;
    let mut admin = schema.admin_config().connect().await.expect("admin");
    create_table(&mut admin, 20_000).await;
    let cfg = config(&schema.name, "ADD COLUMN e INT NOT NULL DEFAULT 7");
    // Fixed chunks and a pause after each: the copy lasts several of the checksum's points.
    let controls = Controls {
        chunk_size: 200,
        postpone_cut_over: true,
        nice_ratio: 10.0,
        ..Controls::default()
    };
    let mut under_load = postponed_under_load_with(&schema, cfg, controls);
    wait_phase(
        &mut under_load.progress_rx,
        Phase::Postponed,
        Duration::from_secs(120),
    )
    .await;
    let verified = under_load.progress_rx.borrow().chunks_verified_during_copy;
    assert!(
        verified > 0,
        "no chunk was compared during the copy: the test shows nothing"
    );
    let (p, writes, original) =
        stop_writer_compare_and_cut_over(under_load, Some(&mut admin)).await;
    eprintln!(
        "checksum during the copy: {verified} chunks found equal during the copy, {writes} writes, \
         {} events applied, checksum passes {}, chunks copied again {}",
        p.events_applied, p.checksum_passes, p.chunks_recopied
    );
    assert_eq!(p.checksum_passes, 1);
    assert_eq!(p.chunks_recopied, 0, "the checksum found differences");
    let after = rows(&mut admin, "t", "id, a, b, c, d").await;
    assert_eq!(after.len(), original.len(), "rows after the cut-over");
}

/// The copy reads without row locks under the mixed writer (deletes and key moves included):
/// deletes that race a chunk are applied again after it, so both tables end equal and the
/// checksum finds nothing to copy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_without_locks_under_mixed_load() {
    let (_schema, mut admin, under_load) =
        postponed_after_copy_under_load("nolock", |cfg| cfg.copy_without_locks = true).await;
    let (p, writes, original) =
        stop_writer_compare_and_cut_over(under_load, Some(&mut admin)).await;
    eprintln!(
        "copy without locks: {} rows copied, {writes} writes, {} events applied, \
         chunks copied again {}",
        p.rows_copied, p.events_applied, p.chunks_recopied
    );
    assert!(original.len() > 19_000, "rows: {}", original.len());
    assert_eq!(p.checksum_passes, 1);
    assert_eq!(p.chunks_recopied, 0, "the checksum found differences");
}

/// Four copy workers under the mixed writer: the ghost table ends equal (the checksum gate finds
/// nothing to copy again) and the migration cuts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_copy_under_mixed_load() {
    let (_schema, _admin, under_load) =
        postponed_after_copy_under_load("parallel", |cfg| cfg.copy_threads = 4).await;
    let (p, writes) = stop_writer_and_cut_over(under_load).await;
    eprintln!(
        "parallel copy: {} rows copied by 4 workers, {writes} writes, {} events applied, \
         checksum passes {}, chunks copied again {}",
        p.rows_copied, p.events_applied, p.checksum_passes, p.chunks_recopied
    );
    assert!(p.rows_copied > 19_000, "rows copied: {}", p.rows_copied);
    assert_eq!(p.checksum_passes, 1);
    assert_eq!(p.chunks_recopied, 0, "the checksum found differences");
}

/// Binlog batches applied on four sessions at once, split by key, under the mixed writer (key
/// moves and deletes included): the ghost table ends equal, the checksum finds nothing to copy
/// again, and the lanes' sessions were really open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_apply_under_mixed_load() {
    let (schema, mut admin, under_load) =
        postponed_after_copy_under_load("lanes", |cfg| cfg.apply_threads = 4).await;
    // Every engine session works in the migrated schema: the apply session, the copy and DDL
    // sessions, and here four lanes.
    let server = common::dialect::server(&mut admin).await;
    let sessions = common::dialect::sessions_in(&mut admin, &server, &schema.name).await;
    // The writer goes on a while after the copy, so the lanes alone keep the tables equal.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (p, writes) = stop_writer_and_cut_over(under_load).await;
    eprintln!(
        "parallel apply: {sessions} engine sessions, {writes} writes, {} events applied, \
         checksum passes {}, chunks copied again {}",
        p.events_applied, p.checksum_passes, p.chunks_recopied
    );
    assert!(
        sessions >= 7,
        "the four apply lanes are not open: {sessions} sessions"
    );
    assert!(
        p.events_applied > 100,
        "events applied: {}",
        p.events_applied
    );
    assert_eq!(p.checksum_passes, 1);
    assert_eq!(p.chunks_recopied, 0, "the checksum found differences");
}

/// `SHOW CREATE TABLE` of `table` with its name and AUTO_INCREMENT counter left out.
async fn definition(conn: &mut Conn, table: &str) -> String {
    let (_, create): (String, String) = conn
        .query_first(format!("SHOW CREATE TABLE `{table}`"))
        .await
        .expect("show create table")
        .expect("a definition");
    let body = create.split_once('(').map(|(_, b)| b).unwrap_or_default();
    body.split_whitespace()
        .filter(|word| !word.starts_with("AUTO_INCREMENT="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--defer-secondary-indexes` under mixed writes: the ghost table is copied without its plain
/// secondary indexes (the changelog records them), they are built while the binary log is
/// applied, and the migrated table has exactly the definition an offline ALTER gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_secondary_indexes_under_mixed_load() {
    let schema = common::TestSchema::create("deferidx").await;
    let mut admin = schema.admin_config().connect().await.expect("admin");
    create_table(&mut admin, 20_000).await;
    admin
        .query_drop("ALTER TABLE t ADD KEY ix_c (c), ADD KEY ix_bd (b(10), d) COMMENT 'prefix'")
        .await
        .expect("secondary indexes");
    let alter = "ADD COLUMN e INT NOT NULL DEFAULT 7, ADD KEY ix_e (e, a)";
    // What an offline ALTER makes of the same table.
    admin
        .query_drop(format!(
            "CREATE TABLE reference LIKE t; ALTER TABLE reference {alter}"
        ))
        .await
        .expect("reference table");
    let expected = definition(&mut admin, "reference").await;

    let mut cfg = config(&schema.name, alter);
    cfg.defer_secondary_indexes = true;
    let UnderLoad {
        controls_tx,
        mut progress_rx,
        stop,
        writer,
        migration,
    } = postponed_under_load(&schema, cfg, 50);
    wait_phase(&mut progress_rx, Phase::Postponed, Duration::from_secs(120)).await;
    let recorded: Option<String> = admin
        .query_first("SELECT value FROM _t_ghc WHERE hint = 'deferred-indexes'")
        .await
        .expect("read the changelog");
    let recorded = recorded.expect("the deferred indexes are recorded in the changelog");
    for name in ["ix_c", "ix_bd", "ix_e"] {
        assert!(recorded.contains(name), "{name} not deferred: {recorded}");
    }
    assert!(
        !recorded.contains("uk_a"),
        "a unique key was deferred: {recorded}"
    );
    assert_eq!(
        definition(&mut admin, "_t_gho").await,
        expected,
        "the ghost table before the cut-over"
    );
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    controls_tx.send_modify(|c| c.postpone_cut_over = false);
    let outcome = migration.await.expect("task").expect("migration");
    assert!(matches!(outcome, Outcome::Migrated { .. }), "{outcome:?}");
    assert_eq!(definition(&mut admin, "t").await, expected);
    let p = progress_rx.borrow().clone();
    eprintln!(
        "deferred indexes: {} rows copied, {writes} writes, {} events applied, checksum passes {}",
        p.rows_copied, p.events_applied, p.checksum_passes
    );
    assert_eq!(p.checksum_passes, 1);
    assert_eq!(p.chunks_recopied, 0, "the checksum found differences");
}

/// An application transaction holds a row lock the copy needs: the copy gives up each wait after
/// a few seconds (its session's `innodb_lock_wait_timeout`) and tries again with a smaller chunk,
/// instead of the server's 50 s. That is what breaks a deadlock InnoDB cannot see, such as a
/// replica whose ordered commits wait on the copy's shared locks. Seen here as several waiting
/// copy transactions, one after the other, while the lock is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_gives_up_a_row_lock_wait_and_tries_again() {
    let schema = common::TestSchema::create("lockwait").await;
    let mut admin = schema.admin_config().connect().await.expect("admin");
    create_table(&mut admin, 20_000).await;
    let server = common::dialect::server(&mut admin).await;
    let mut holder = schema.admin_config().connect().await.expect("holder");
    holder.query_drop("START TRANSACTION").await.expect("begin");
    holder
        .query_drop("SELECT id FROM t WHERE id = 15000 FOR UPDATE")
        .await
        .expect("lock a row");

    let mut cfg = config(&schema.name, "ADD COLUMN e INT NOT NULL DEFAULT 7");
    cfg.default_retries = 3;
    cfg.target_chunk_time = Some(Duration::from_millis(250));
    let (controls_tx, controls_rx) = watch::channel(Controls {
        chunk_size: 1000,
        postpone_cut_over: true,
        ..Controls::default()
    });
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let migration = tokio::spawn(Migration::new(cfg, controls_rx, progress_tx).run());

    // The copy's waiting transactions, from the first one seen until 11 s later.
    let mut waiting: Vec<u64> = Vec::new();
    let mut first_seen: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while first_seen.is_none_or(|t| t.elapsed() < Duration::from_secs(11)) {
        assert!(
            Instant::now() < deadline,
            "the copy never waited for the lock"
        );
        let p = progress_rx.borrow().clone();
        assert!(!p.phase.is_terminal(), "migration ended early: {p:?}");
        // This test's copy only: other tests run at the same time on the same server.
        let ids = common::dialect::transactions_waiting_in(&mut admin, &server, &schema.name).await;
        for id in ids {
            first_seen.get_or_insert_with(Instant::now);
            if !waiting.contains(&id) {
                waiting.push(id);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    holder.query_drop("ROLLBACK").await.expect("release");
    let _ = holder.disconnect().await;

    let mut progress_rx = progress_rx;
    wait_phase(&mut progress_rx, Phase::Postponed, Duration::from_secs(60)).await;
    backlog_applied_and_tables_equal(&mut admin, &progress_rx).await;
    controls_tx.send_modify(|c| c.postpone_cut_over = false);
    let outcome = migration.await.expect("task").expect("migration");
    assert!(matches!(outcome, Outcome::Migrated { .. }), "{outcome:?}");
    eprintln!(
        "row lock held 11 s: the copy waited in {} transactions",
        waiting.len()
    );
    assert!(
        waiting.len() >= 2,
        "one copy transaction waited the whole time (the server's lock wait timeout): {waiting:?}"
    );
}
