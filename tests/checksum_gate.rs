//! The checksum gate through the real binary: the ghost table is damaged from outside right
//! after the row copy (by a `gh-ost-on-row-copy-complete` hook running the `mariadb` client), and
//! the gate must find it, copy the damaged chunks again, and cut over to a table equal to the
//! original. Without the gate the damage reaches the swapped table, which shows the test can
//! fail; damage that comes back on every copy fails the migration and leaves the original as it
//! was.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mysql_async::prelude::Queryable;

const ROWS: u32 = 5_000;

/// id → v, the rows the table must hold after the migration.
type Rows = Vec<(u32, String)>;

async fn seeded_schema(prefix: &str) -> (common::TestSchema, Rows) {
    let schema = common::TestSchema::create(prefix).await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query_drop(format!(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(32) CHARACTER SET latin1, \
         n INT NULL, m BIGINT NOT NULL DEFAULT 0, at DATETIME(3) NOT NULL DEFAULT '2026-01-01'); \
         INSERT INTO t SELECT seq, CONCAT('v', seq), IF(seq % 7 = 0, NULL, seq), seq * 3, \
         '2026-01-01 00:00:00.000' + INTERVAL seq SECOND FROM {seq}",
        seq = common::dialect::numbers(u64::from(ROWS))
    ))
    .await
    .expect("seed");
    let rows = read_rows(&mut conn).await;
    let _ = conn.disconnect().await;
    (schema, rows)
}

async fn read_rows(conn: &mut mysql_async::Conn) -> Rows {
    conn.query("SELECT id, v FROM t ORDER BY id")
        .await
        .expect("read rows")
}

/// The table holds `before` again, with its NULLs.
async fn rows_and_nulls_are_back(schema: &common::TestSchema, before: &Rows) {
    let mut conn = schema.admin_config().connect().await.expect("admin");
    assert_eq!(
        &read_rows(&mut conn).await,
        before,
        "rows after the migration"
    );
    let nulls: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM t WHERE n IS NULL")
        .await
        .expect("count NULLs");
    assert_eq!(
        nulls,
        Some(u64::from(ROWS / 7)),
        "NULLs after the migration"
    );
    let _ = conn.disconnect().await;
}

/// A hooks directory whose row-copy-complete hook runs `$DAMAGE_SQL` against the migrated
/// schema.
fn damaging_hook(dir: &Path) -> PathBuf {
    let hooks = dir.join("hooks");
    std::fs::create_dir_all(&hooks).expect("hooks dir");
    let admin = common::primary_admin();
    let path = hooks.join("gh-ost-on-row-copy-complete-damage");
    let mut f = std::fs::File::create(&path).expect("hook");
    writeln!(
        f,
        "#!/bin/sh\nMYSQL_PWD=\"$DAMAGE_PASSWORD\" exec mariadb --protocol=tcp -h '{}' -P {} -u '{}' \"$GH_OST_DATABASE_NAME\" -e \"$DAMAGE_SQL\"",
        admin.host, admin.port, admin.user
    )
    .expect("write hook");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    hooks
}

/// `ghost migrate` to the end; returns the exit code and the output.
fn migrate(schema: &str, dir: &Path, damage_sql: &str, extra: &[&str]) -> (i32, String) {
    let hooks = damaging_hook(dir);
    let mut args = vec!["migrate".to_string()];
    args.extend(common::migrate_args(
        schema,
        "t",
        // v changes character set: compared as characters, not bytes.
        "ADD COLUMN w INT NOT NULL DEFAULT 1, MODIFY v VARCHAR(32) CHARACTER SET utf8mb4",
    ));
    args.extend([
        "--chunk-size=500".to_string(),
        format!("--hooks-path={}", hooks.display()),
        "--verbose".into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = Command::new(common::ghost_bin())
        .args(&args)
        .env("DAMAGE_SQL", damage_sql)
        // Hooks never see the database password ghost was given (MYSQL_PWD, GHOST_PASSWORD):
        // the test's own admin password reaches the hook under a name of its own.
        .env("DAMAGE_PASSWORD", common::primary_admin().password.expose())
        .output()
        .expect("run ghost migrate");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ghost-ck-{name}-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A changed value, a missing row, an extra row beyond the key range and a NULL made a value.
const DAMAGE: &str = "UPDATE _t_gho SET v = 'damaged' WHERE id = 7; \
                      DELETE FROM _t_gho WHERE id = 2500; \
                      INSERT INTO _t_gho (id, v, n) VALUES (999999, 'extra', 1); \
                      UPDATE _t_gho SET n = 0 WHERE id = 14";

/// Never-NULL numbers and times are compared without an ISNULL flag (the checksum's cheaper
/// form): a changed value there is found all the same.
#[tokio::test]
async fn damage_to_never_null_numbers_and_times_is_found() {
    let (schema, _) = seeded_schema("ck_plain").await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    let before: Vec<(u32, i64, String)> = conn
        .query("SELECT id, m, CAST(`at` AS CHAR) FROM t ORDER BY id")
        .await
        .expect("read");
    let dir = scratch("plain");
    let damage = "UPDATE _t_gho SET m = m + 1 WHERE id = 21; \
                  UPDATE _t_gho SET `at` = `at` + INTERVAL 1000 MICROSECOND WHERE id = 2222";
    let (code, log) = migrate(&schema.name, &dir, damage, &[]);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("chunks differ; copying them again"), "{log}");
    let after: Vec<(u32, i64, String)> = conn
        .query("SELECT id, m, CAST(`at` AS CHAR) FROM t ORDER BY id")
        .await
        .expect("read");
    assert_eq!(after, before, "rows after the migration");
    let _ = conn.disconnect().await;
}

#[tokio::test]
async fn damaged_chunks_are_found_and_copied_again() {
    let (schema, before) = seeded_schema("ck_fix").await;
    let dir = scratch("fix");
    let (code, log) = migrate(&schema.name, &dir, DAMAGE, &[]);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("chunks differ; copying them again"), "{log}");
    assert!(log.contains("checksum: both tables match"), "{log}");
    for line in log.lines().filter(|l| l.contains("checksum")) {
        eprintln!("{line}");
    }
    // The gate compares in chunks far larger than the copy's; one that differs is compared again
    // in the copy's chunks, so only those holding damage are copied again: the chunk with ids 7
    // and 14, the one that lost 2500, and the open last one with the extra row.
    let rows_pattern = regex::Regex::new(r"rows=(\d+)").expect("regex");
    let recopied: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("checksum: chunk copied again"))
        .filter_map(|l| rows_pattern.captures(l)?.get(1)?.as_str().parse().ok())
        .collect();
    assert_eq!(
        recopied.len(),
        3,
        "chunks copied again: {recopied:?}\n{log}"
    );
    assert!(
        recopied.iter().all(|&rows| rows <= 500),
        "a chunk copied again is larger than --chunk-size: {recopied:?}"
    );

    rows_and_nulls_are_back(&schema, &before).await;
}

#[tokio::test]
async fn without_the_gate_the_damage_is_cut_over() {
    let (schema, before) = seeded_schema("ck_off").await;
    let dir = scratch("off");
    let (code, log) = migrate(&schema.name, &dir, DAMAGE, &["--checksum=false"]);
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("checksum:"), "{log}");
    let mut conn = schema.admin_config().connect().await.expect("admin");
    let after = read_rows(&mut conn).await;
    assert_ne!(after, before, "the damage should have reached the table");
    assert!(after.iter().any(|(id, v)| *id == 7 && v == "damaged"));
    let _ = conn.disconnect().await;
}

#[tokio::test]
async fn damage_that_comes_back_fails_and_leaves_the_original() {
    let (schema, before) = seeded_schema("ck_fail").await;
    let dir = scratch("fail");
    // A trigger on the ghost table damages row 7 again on every copy.
    let sql = "UPDATE _t_gho SET v = 'damaged' WHERE id = 7; \
               CREATE TRIGGER damage BEFORE INSERT ON _t_gho FOR EACH ROW \
               SET NEW.v = IF(NEW.id = 7, 'damaged', NEW.v)";
    let (code, log) = migrate(&schema.name, &dir, sql, &[]);
    assert_ne!(code, 0, "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("checksum: the ghost table still differs"),
        "the last line should say why: {last}\n{log}"
    );
    let mut conn = schema.admin_config().connect().await.expect("admin");
    assert_eq!(read_rows(&mut conn).await, before, "the original changed");
    let tables = common::table_names(&mut conn, &schema.name).await;
    assert_eq!(tables, ["t"], "tables left behind");
    let _ = conn.disconnect().await;
}

/// The checksum runs during a slowed copy, so chunks are found equal before the copy ends; the
/// damage written right after the copy falls into those chunks. It is found all the same: the
/// stream reports writes to the ghost table, and the gate compares the chunks they reach.
#[tokio::test]
async fn damage_to_chunks_found_equal_during_the_copy_is_found() {
    let (schema, before) = seeded_schema("ck_early").await;
    let dir = scratch("early");
    let (code, log) = migrate(
        &schema.name,
        &dir,
        DAMAGE,
        &[
            "--chunk-size=100",
            "--target-chunk-time-millis=0",
            "--nice-ratio=30",
        ],
    );
    assert_eq!(code, 0, "{log}");
    for line in log.lines().filter(|l| l.contains("checksum")) {
        eprintln!("{line}");
    }
    let equal_pattern =
        regex::Regex::new(r"checksum during the copy: chunks compared.* equal=(\d+)")
            .expect("regex");
    let equal_during_copy: u64 = log
        .lines()
        .filter_map(|l| {
            equal_pattern
                .captures(l)?
                .get(1)?
                .as_str()
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        equal_during_copy >= 10,
        "few chunks were compared during the copy ({equal_during_copy}): the test would not show \
         that damage to them is found\n{log}"
    );
    assert!(log.contains("chunks differ; copying them again"), "{log}");
    assert!(log.contains("checksum: both tables match"), "{log}");
    rows_and_nulls_are_back(&schema, &before).await;
}
