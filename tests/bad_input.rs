//! Refusals: each bad input fails with one line naming the cause and the fix, a non-zero exit,
//! and nothing left behind in the database.

mod common;

use std::process::Command;

use mysql_async::prelude::Queryable;

struct Run {
    code: i32,
    stderr: String,
}

fn ghost_migrate(args: &[String]) -> Run {
    let out = Command::new(common::ghost_bin())
        .arg("migrate")
        .args(args)
        .output()
        .expect("run ghost");
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn base_args(schema: &str, table: &str, alter: &str) -> Vec<String> {
    common::migrate_args(schema, table, alter)
}

/// The run failed with exactly one line that contains every `expected` fragment, and left no
/// ghost-owned table in the schema.
async fn assert_refused(
    schema: &common::TestSchema,
    run: &Run,
    expected: &[&str],
    allowed_tables: &[&str],
) {
    assert_ne!(run.code, 0, "must fail: {}", run.stderr);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line of error, got: {:?}", run.stderr);
    let line = lines[0];
    assert!(line.starts_with("ghost migrate: "), "{line}");
    for fragment in expected {
        assert!(line.contains(fragment), "expected {fragment:?} in: {line}");
    }
    assert!(!line.contains("ghost-pass"), "the password leaked: {line}");
    let mut conn = schema.admin_config().connect().await.expect("admin");
    let tables: Vec<String> = conn
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE '\\_%'")
        .await
        .expect("tables");
    let leftovers: Vec<&String> = tables
        .iter()
        .filter(|t| !allowed_tables.contains(&t.as_str()))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

async fn setup(prefix: &str, ddl: &str) -> common::TestSchema {
    let schema = common::TestSchema::create(prefix).await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query_drop(ddl).await.expect("setup ddl");
    schema
}

#[tokio::test]
async fn no_unique_key() {
    let s = setup(
        "nokey",
        "CREATE TABLE t (a INT, b INT); INSERT INTO t VALUES (1, 2)",
    )
    .await;
    let run = ghost_migrate(&base_args(&s.name, "t", "ADD COLUMN c INT"));
    assert_refused(
        &s,
        &run,
        &[
            "no PRIMARY nor UNIQUE key found in table! Bailing out",
            "add one",
        ],
        &[],
    )
    .await;
}

#[tokio::test]
async fn only_a_nullable_unique_key() {
    let s = setup(
        "nullkey",
        "CREATE TABLE t (a INT NULL, b INT, UNIQUE KEY (a))",
    )
    .await;
    let run = ghost_migrate(&base_args(&s.name, "t", "ADD COLUMN c INT"));
    assert_refused(&s, &run, &["nullable", "--allow-nullable-unique-key"], &[]).await;
}

#[tokio::test]
async fn only_a_float_unique_key() {
    let s = setup(
        "floatkey",
        "CREATE TABLE t (f FLOAT NOT NULL, b INT, UNIQUE KEY (f))",
    )
    .await;
    let run = ghost_migrate(&base_args(&s.name, "t", "ADD COLUMN c INT"));
    assert_refused(&s, &run, &["no shared unique key", "FLOAT"], &[]).await;
}

#[tokio::test]
async fn referenced_by_a_foreign_key() {
    let s = setup(
        "fkparent",
        "CREATE TABLE t (id INT PRIMARY KEY); CREATE TABLE child (id INT PRIMARY KEY, t_id INT, FOREIGN KEY (t_id) REFERENCES t (id))",
    )
    .await;
    let run = ghost_migrate(&base_args(&s.name, "t", "ADD COLUMN c INT"));
    assert_refused(
        &s,
        &run,
        &[
            "found 1 parent-side foreign keys on",
            "Parent-side foreign keys are not supported. Bailing out",
            "drop those foreign keys first",
        ],
        &[],
    )
    .await;
}

#[tokio::test]
async fn unknown_table() {
    let s = setup("notable", "CREATE TABLE other (id INT PRIMARY KEY)").await;
    let run = ghost_migrate(&base_args(&s.name, "nope", "ADD COLUMN c INT"));
    assert_refused(
        &s,
        &run,
        &["cannot find table", "`nope` does not exist"],
        &[],
    )
    .await;
}

#[tokio::test]
async fn unknown_column() {
    let s = setup("nocolumn", "CREATE TABLE t (id INT PRIMARY KEY, a INT)").await;
    let run = ghost_migrate(&base_args(&s.name, "t", "DROP COLUMN nope"));
    assert_refused(
        &s,
        &run,
        &["the ALTER fails on the ghost table", "nope"],
        &[],
    )
    .await;
}

#[tokio::test]
async fn invalid_alter() {
    let s = setup("badalter", "CREATE TABLE t (id INT PRIMARY KEY, a INT)").await;
    let run = ghost_migrate(&base_args(&s.name, "t", "ADD COLUMN"));
    assert_refused(
        &s,
        &run,
        &["the ALTER fails on the ghost table", "syntax"],
        &[],
    )
    .await;
    let run = ghost_migrate(&base_args(&s.name, "t", "RENAME TO t2"));
    assert_refused(&s, &run, &["RENAME"], &[]).await;
    let run = ghost_migrate(&base_args(&s.name, "t", "CHANGE a b INT"));
    assert_refused(&s, &run, &["--approve-renamed-columns"], &[]).await;
}

#[tokio::test]
async fn wrong_password() {
    let s = setup("password", "CREATE TABLE t (id INT PRIMARY KEY)").await;
    let mut args = base_args(&s.name, "t", "ADD COLUMN c INT");
    args[3] = "--password=not-the-password".into();
    let run = ghost_migrate(&args);
    assert_refused(&s, &run, &["cannot connect to", "Access denied"], &[]).await;
    assert!(!run.stderr.contains("not-the-password"), "{}", run.stderr);
}

#[tokio::test]
async fn missing_grants() {
    let s = setup("grants", "CREATE TABLE t (id INT PRIMARY KEY)").await;
    let user = format!("weak_{}", &s.name[s.name.len() - 8..]);
    let mut admin = common::primary_admin().connect().await.expect("admin");
    admin
        .query_drop(format!(
            "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'weak-pass'; GRANT SELECT ON `{}`.* TO '{user}'@'127.0.0.1'",
            s.name
        ))
        .await
        .expect("create weak user");
    let mut args = base_args(&s.name, "t", "ADD COLUMN c INT");
    args[2] = format!("--user={user}");
    args[3] = "--password=weak-pass".into();
    let run = ghost_migrate(&args);
    admin
        .query_drop(format!("DROP USER '{user}'@'127.0.0.1'"))
        .await
        .expect("drop weak user");
    assert_refused(
        &s,
        &run,
        &["lacks", "REPLICATION SLAVE", "ALTER", "GRANT"],
        &[],
    )
    .await;
}

#[tokio::test]
async fn leftover_ghost_table() {
    let s = setup(
        "leftover",
        "CREATE TABLE t (id INT PRIMARY KEY); CREATE TABLE _t_gho (id INT PRIMARY KEY)",
    )
    .await;
    let run = ghost_migrate(&base_args(&s.name, "t", "ADD COLUMN c INT"));
    // The user's leftover stays; nothing else is created.
    assert_refused(
        &s,
        &run,
        &["_t_gho", "exists", "--initially-drop-ghost-table"],
        &["_t_gho"],
    )
    .await;
    let mut args = base_args(&s.name, "t", "ADD COLUMN c INT");
    args.push("--initially-drop-ghost-table".into());
    let ok = ghost_migrate(&args);
    assert_eq!(ok.code, 0, "with the flag it runs: {}", ok.stderr);
}

#[tokio::test]
async fn unknown_flag_suggests_the_right_one() {
    let out = Command::new(common::ghost_bin())
        .args(["migrate", "--chunck-size=100"])
        .output()
        .expect("run ghost");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("unknown flag --chunck-size; did you mean --chunk-size?"),
        "{stderr}"
    );
}

#[tokio::test]
async fn alter_that_names_another_table() {
    let s = setup(
        "othertbl",
        "CREATE TABLE t (id INT PRIMARY KEY); CREATE TABLE other (id INT PRIMARY KEY)",
    )
    .await;
    let run = ghost_migrate(&base_args(
        &s.name,
        "t",
        "ALTER TABLE other ADD COLUMN c INT",
    ));
    assert_refused(
        &s,
        &run,
        &["--alter names table `other`", "--table is `t`"],
        &[],
    )
    .await;
}

#[tokio::test]
async fn port_zero() {
    let s = setup("port0", "CREATE TABLE t (id INT PRIMARY KEY)").await;
    let mut args = base_args(&s.name, "t", "ADD COLUMN c INT");
    args.push("--port=0".into());
    let run = ghost_migrate(&args);
    assert_refused(&s, &run, &["--port=0 is not a port"], &[]).await;
}

#[tokio::test]
async fn unknown_database() {
    let s = setup("nodb", "CREATE TABLE t (id INT PRIMARY KEY)").await;
    let mut args = base_args(&s.name, "t", "ADD COLUMN c INT");
    args.push("--database=no_such_database_here".into());
    let run = ghost_migrate(&args);
    assert_refused(
        &s,
        &run,
        &[
            "database `no_such_database_here` does not exist",
            "--database",
        ],
        &[],
    )
    .await;
}

#[tokio::test]
async fn http_api_on_a_public_address_without_a_token() {
    let s = setup("httpopen", "CREATE TABLE t (id INT PRIMARY KEY)").await;
    let mut args = base_args(&s.name, "t", "ADD COLUMN c INT");
    args.push("--http-addr=0.0.0.0:0".into());
    let run = ghost_migrate(&args);
    assert_refused(
        &s,
        &run,
        &["--http-addr=0.0.0.0:0", "--http-token-file"],
        &[],
    )
    .await;
}

#[tokio::test]
async fn resume_with_another_alter() {
    let s = setup(
        "resumediff",
        "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 1), (2, 2), (3, 3)",
    )
    .await;
    // A run that leaves a checkpoint: postponed, then killed.
    let flag = std::env::temp_dir().join(format!("ghost-postpone-{}", s.name));
    std::fs::write(&flag, b"").expect("flag");
    let mut first = base_args(&s.name, "t", "ADD COLUMN a INT");
    first.extend([
        "--checkpoint".to_string(),
        format!("--postpone-cut-over-flag-file={}", flag.display()),
    ]);
    let mut child = Command::new(common::ghost_bin())
        .arg("migrate")
        .args(&first)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ghost");
    let mut conn = s.admin_config().connect().await.expect("admin");
    // Wait for the first checkpoint, then kill -9.
    for _ in 0..200 {
        let n: Option<u64> = conn
            .query_first("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '_t_ghk'")
            .await
            .expect("look");
        if n == Some(1) {
            let rows: Option<u64> = conn
                .query_first("SELECT COUNT(*) FROM _t_ghk")
                .await
                .unwrap_or(None);
            if rows.unwrap_or(0) > 0 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().expect("kill");
    let _ = child.wait();
    let _ = std::fs::remove_file(&flag);
    let mut resume = base_args(&s.name, "t", "ADD COLUMN b INT");
    resume.extend(["--checkpoint".to_string(), "--resume".to_string()]);
    let run = ghost_migrate(&resume);
    assert_refused(
        &s,
        &run,
        &[
            "--resume",
            "belongs to a run that did something else",
            "--alter was",
        ],
        &["_t_gho", "_t_ghc", "_t_ghk"],
    )
    .await;
    // The first run's own command resumes it.
    let mut same = base_args(&s.name, "t", "ADD COLUMN a INT");
    same.extend([
        "--checkpoint".to_string(),
        "--resume".to_string(),
        "--ok-to-drop-table".to_string(),
    ]);
    let ok = ghost_migrate(&same);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let cols: Vec<String> = conn
        .query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't' ORDER BY ORDINAL_POSITION")
        .await
        .expect("columns");
    assert_eq!(cols, ["id", "v", "a"]);
}

/// A server that accepts the TCP connection and then says nothing (a black-holed proxy): with
/// `--mysql-timeout` the run gives up and names the timeout, instead of waiting forever.
#[tokio::test]
async fn a_silent_server_is_given_up_after_mysql_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    // Accept and hold every connection without a byte of handshake.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let mut args = base_args("ghost_t_silent", "t", "ADD COLUMN c INT");
    args[1] = format!("--port={port}");
    args.extend([
        "--mysql-timeout=1".to_string(),
        "--default-retries=2".to_string(),
    ]);
    let mut child = Command::new(common::ghost_bin())
        .arg("migrate")
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ghost");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ghost still waits on a silent server after 60 s with --mysql-timeout=1");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("--mysql-timeout=1"), "{stderr}");
}

/// gh-ost users ask `--help` and get gh-ost's flags (clap's own help listed none of them).
#[test]
fn help_lists_the_gh_ost_flags() {
    for flag in ["--help", "-help"] {
        let out = Command::new(common::ghost_bin())
            .args(["migrate", flag])
            .output()
            .expect("run ghost");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{flag}: {out:?}");
        for listed in ["--alter", "--chunk-size", "--skip-uncopied-changes"] {
            assert!(
                text.contains(listed),
                "{flag}: {listed} missing from {text}"
            );
        }
    }
}
