//! `binlog_format=STATEMENT` is refused before anything is created. In its own test binary: it
//! changes a global setting of the replica, which nothing else may see at the same time.

mod common;

use std::process::Command;

use mysql_async::prelude::Queryable;

#[tokio::test]
async fn statement_binlog_format_is_refused() {
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
    let out = Command::new(env!("CARGO_BIN_EXE_ghost"))
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
        stderr.contains("binlog_format is STATEMENT, not ROW"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SET GLOBAL binlog_format='ROW'"),
        "{stderr}"
    );
}
