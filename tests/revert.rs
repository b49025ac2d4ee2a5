//! `--revert`, through the binary as a gh-ost user runs it: a migration with `--checkpoint` keeps
//! its old table and writes a cut-over checkpoint; the table keeps changing under its new
//! definition; `ghost migrate --revert --old-table=_t_del` brings the old table up to date from
//! the binlog and swaps it back, so the table has its old definition and every row's current
//! values, also after another migration's cleanup ran on the table. Without a cut-over
//! checkpoint, the revert is refused in one line.

mod common;

use std::process::Command;

use mysql_async::prelude::Queryable;

const ROWS: u32 = 3_000;

/// (id, v, n): the columns both definitions share.
type Rows = Vec<(u32, String, Option<i64>)>;

async fn read_rows(conn: &mut mysql_async::Conn, table: &str) -> Rows {
    conn.query(format!("SELECT id, v, n FROM `{table}` ORDER BY id"))
        .await
        .expect("read rows")
}

async fn columns(conn: &mut mysql_async::Conn, schema: &str, table: &str) -> Vec<String> {
    conn.exec(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
         AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (schema, table),
    )
    .await
    .expect("columns")
}

fn ghost(args: &[String]) -> (i32, String) {
    let out = Command::new(common::ghost_bin())
        .args(args)
        .output()
        .expect("run ghost migrate");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn migrate_args(schema: &str, alter: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["migrate".to_string()];
    args.extend(common::migrate_args(schema, "t", alter));
    args.push("--verbose".to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[tokio::test]
async fn revert_swaps_the_old_table_back_with_every_later_change() {
    let schema = common::TestSchema::create("revert").await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query_drop(format!(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(32) NOT NULL, n BIGINT NULL); \
         INSERT INTO t SELECT seq, CONCAT('v', seq), IF(seq % 9 = 0, NULL, seq) \
         FROM {seq}",
        seq = common::dialect::numbers(u64::from(ROWS))
    ))
    .await
    .expect("seed");

    // The migration, keeping its old table and writing checkpoints.
    let (code, log) = ghost(&migrate_args(
        &schema.name,
        "ADD COLUMN w INT NOT NULL DEFAULT 5",
        &["--checkpoint"],
    ));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("cut-over checkpoint written"), "{log}");
    assert!(
        columns(&mut conn, &schema.name, "t")
            .await
            .contains(&"w".to_string())
    );

    // Life goes on under the new definition.
    conn.query_drop(
        "INSERT INTO t (id, v, n, w) VALUES (5001, 'after', 1, 9), (5002, 'after', NULL, 9); \
         UPDATE t SET v = 'changed', n = n + 1000 WHERE id % 100 = 0; \
         UPDATE t SET n = NULL WHERE id = 7; \
         DELETE FROM t WHERE id BETWEEN 200 AND 210; \
         UPDATE t SET id = 6000 WHERE id = 11",
    )
    .await
    .expect("writes after the cut-over");
    let expected = read_rows(&mut conn, "t").await;

    // A later migration of the table that failed and was deleted: its cleanup (the operator's
    // finalizer) must leave the finished migration's cut-over checkpoint to the revert.
    let dropped = ghost::engine::cleanup::drop_migration_tables(
        &common::primary().with_database(&schema.name),
        &schema.name,
        "t",
    )
    .await
    .expect("cleanup");
    assert!(
        !dropped.iter().any(|t| t == "_t_ghk"),
        "the cleanup dropped the revert's checkpoint: {dropped:?}"
    );

    // The revert: no --alter, the old table named.
    let (code, log) = ghost(&migrate_args(
        &schema.name,
        "",
        &["--revert", "--old-table=_t_del"],
    ));
    assert_eq!(code, 0, "{log}");
    for line in log
        .lines()
        .filter(|l| l.contains("checksum") || l.contains("resum"))
    {
        eprintln!("{line}");
    }
    assert_eq!(
        columns(&mut conn, &schema.name, "t").await,
        ["id", "v", "n"],
        "the old definition is back"
    );
    assert_eq!(
        read_rows(&mut conn, "t").await,
        expected,
        "rows after the revert"
    );
    // The reverted-from table is kept as gh-ost names it, with the new definition.
    assert!(
        columns(&mut conn, &schema.name, "_t_rev_del")
            .await
            .contains(&"w".to_string())
    );
    let _ = conn.disconnect().await;
}

#[tokio::test]
async fn revert_without_a_cut_over_checkpoint_is_refused() {
    let schema = common::TestSchema::create("revert_refused").await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query_drop(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(32)); \
         CREATE TABLE _t_del (id INT PRIMARY KEY, v VARCHAR(32)); \
         INSERT INTO t VALUES (1, 'a')",
    )
    .await
    .expect("seed");
    let (code, log) = ghost(&migrate_args(
        &schema.name,
        "",
        &["--revert", "--old-table=_t_del"],
    ));
    assert_ne!(code, 0, "{log}");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.contains("has no cut-over checkpoint") && last.contains("--checkpoint"),
        "{log}"
    );
    let (code, log) = ghost(&migrate_args(
        &schema.name,
        "",
        &["--revert", "--old-table=_t_nope"],
    ));
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("does not exist"), "{log}");
    // Nothing was touched.
    let rows: Vec<(u32, String)> = conn.query("SELECT id, v FROM t").await.expect("rows");
    assert_eq!(rows, [(1, "a".to_string())]);
    let tables = common::table_names(&mut conn, &schema.name).await;
    assert_eq!(tables, ["_t_del", "t"]);
    let _ = conn.disconnect().await;
}
