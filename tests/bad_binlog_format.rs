//! `binlog_format=STATEMENT` is refused before anything is created, or switched with
//! `--switch-to-rbr`. In its own test binary: it changes global settings of the replica, which
//! nothing else may see at the same time; the tests take turns.

mod common;

use std::process::Command;

use mysql_async::prelude::Queryable;

#[tokio::test]
async fn statement_binlog_format_is_refused() {
    let _turn = REPLICA_SETTINGS.lock().await;
    let replica_admin = ghost::engine::conn::ConnectionConfig {
        host: common::replica().host,
        port: common::replica().port,
        ..common::primary_admin()
    };
    let mut replica = replica_admin.connect().await.expect("replica admin");
    replica
        .query_drop("SET GLOBAL binlog_format = 'STATEMENT'")
        .await
        .expect("set STATEMENT");
    let r = common::replica();
    let out = Command::new(common::ghost_bin())
        .args([
            "migrate",
            &format!("--host={}", r.host),
            &format!("--port={}", r.port),
            &format!("--user={}", r.user),
            &format!("--password={}", r.password.expose()),
            "--database=mysql",
            "--table=user",
            "--alter=ADD COLUMN c INT",
            "--test-on-replica",
        ])
        .output()
        .expect("run ghost");
    replica
        .query_drop("SET GLOBAL binlog_format = 'ROW'")
        .await
        .expect("restore ROW");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("existing binlog_format is STATEMENT. Am not switching it to ROW unless you specify --switch-to-rbr"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SET GLOBAL binlog_format='ROW'"),
        "{stderr}"
    );
}

static REPLICA_SETTINGS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn switch_to_rbr_sets_row_format_and_migrates() {
    let _turn = REPLICA_SETTINGS.lock().await;
    let schema = common::TestSchema::create("rbr").await;
    let mut primary = schema.admin_config().connect().await.expect("primary");
    primary
        .query_drop(
            "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 1), (2, 2)",
        )
        .await
        .expect("table");
    let replica_admin = ghost::engine::conn::ConnectionConfig {
        host: common::replica().host,
        port: common::replica().port,
        ..common::primary_admin()
    };
    let mut replica = replica_admin.connect().await.expect("replica admin");
    // Wait until the table has replicated.
    let server = common::dialect::server(&mut replica).await;
    let state = common::dialect::gtid_state(&mut primary, &server).await;
    assert!(
        common::dialect::wait_for_gtids(&mut replica, &server, &state, 30).await,
        "the replica did not catch up"
    );
    replica
        .query_drop("SET GLOBAL binlog_format = 'STATEMENT'")
        .await
        .expect("set STATEMENT");
    let r = common::replica();
    let out = Command::new(common::ghost_bin())
        .args([
            "migrate",
            &format!("--host={}", r.host),
            &format!("--port={}", r.port),
            &format!("--user={}", r.user),
            &format!("--password={}", r.password.expose()),
            &format!("--database={}", schema.name),
            "--table=t",
            "--alter=ADD COLUMN w INT",
            "--test-on-replica",
            "--switch-to-rbr",
            &format!("--replica-server-id={}", common::unique_server_id()),
            "--execute",
        ])
        .output()
        .expect("run ghost");
    let format: Option<String> = replica
        .query_first("SELECT @@global.binlog_format")
        .await
        .expect("format");
    // --test-on-replica leaves replication stopped; restore the topology either way.
    replica
        .query_drop(format!(
            "SET GLOBAL binlog_format = 'ROW'; {1}; \
             SET SESSION sql_log_bin = 0; DROP TABLE IF EXISTS `{0}`.`_t_gho`, `{0}`.`_t_del`",
            schema.name,
            common::dialect::start_replication(&server)
        ))
        .await
        .expect("restore the replica");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        format.as_deref(),
        Some("ROW"),
        "--switch-to-rbr switched the format"
    );
}
