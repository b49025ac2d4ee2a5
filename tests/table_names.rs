//! The cut-over for every legal table name, on this server and (when the topology runs it) on
//! the one started with `lower_case_table_names=1`: mixed and upper case, 64 characters,
//! non-ASCII, quotes and spaces. Each migration runs under writers that keep an exact record;
//! no cut-over attempt may hold the lock longer than `--cut-over-lock-timeout-seconds`.

mod common;

use std::time::Duration;

use common::model::{self, Writers};
use ghost::engine::conn::ConnectionConfig;
use mysql_async::prelude::Queryable;

fn names() -> Vec<String> {
    vec![
        "Users".into(),
        "ORDERS".into(),
        "Mixed_Case_T".into(),
        "x".repeat(64),
        "Z".repeat(64),
        "日本語のテーブル".into(),
        "Bücher".into(),
        "with space".into(),
        "quote`in".into(),
        "9starts_with_digit".into(),
    ]
}

/// Migrates `table` in a fresh schema on `server` (engine user) / `admin` (setup user) under
/// writers; returns the block time the engine reported.
async fn migrate_one(server: &ConnectionConfig, admin: &ConnectionConfig, table: &str) -> u64 {
    let schema_name = format!("ghost_t_names_{:08x}", rand::random::<u32>());
    let mut root = admin.connect().await.expect("admin");
    root.query_drop(format!("CREATE DATABASE `{schema_name}`"))
        .await
        .expect("schema");
    let db = admin.clone().with_database(&schema_name);
    let mut conn = db.connect().await.expect("admin in schema");
    // The shared record writer works on `t`; the table under test gets the same shape.
    let model = model::create_table(&mut conn, 500).await;
    let quoted = format!("`{}`", table.replace('`', "``"));
    conn.query_drop(format!("RENAME TABLE t TO {quoted}"))
        .await
        .expect("rename to the name under test");
    conn.query_drop(format!("CREATE VIEW t AS SELECT * FROM {quoted}"))
        .await
        .expect("a view for the writers");
    let writers = Writers::start(db.clone(), model, 2, 500, Duration::from_millis(5));
    let args = vec![
        format!("--host={}", server.host),
        format!("--port={}", server.port),
        format!("--user={}", server.user),
        format!("--password={}", server.password.expose()),
        format!("--database={schema_name}"),
        format!("--table={table}"),
        "--alter=ADD COLUMN note VARCHAR(8) NULL".to_string(),
        "--allow-on-master".to_string(),
        format!("--replica-server-id={}", common::unique_server_id()),
        "--cut-over-lock-timeout-seconds=2".to_string(),
        "--ok-to-drop-table".to_string(),
        "--verbose".to_string(),
        "--execute".to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::ghost_bin())
            .arg("migrate")
            .args(&args)
            .output()
            .expect("ghost")
    })
    .await
    .expect("join");
    let (record, counts) = writers.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{table:?} on {}: {}",
        server.endpoint(),
        &stderr[stderr.len().saturating_sub(3000)..]
    );
    assert!(
        !stderr.contains("cut-over attempt failed"),
        "{table:?}: an attempt failed: {stderr}"
    );
    // The view reads the swapped table by name.
    conn.query_drop("DROP VIEW t").await.expect("drop view");
    conn.query_drop(format!("CREATE VIEW t AS SELECT * FROM {quoted}"))
        .await
        .expect("view on the new table");
    let (rows, problems) = model::mismatches(&mut conn, "t", &record).await;
    assert!(problems.is_empty(), "{table:?}: {problems:?}");
    assert!(rows > 0 && counts.acknowledged > 0);
    let blocked = stdout
        .split("writes were blocked ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    assert!(
        blocked < 2_000,
        "{table:?}: blocked {blocked} ms, more than the 2 s timeout"
    );
    root.query_drop(format!("DROP DATABASE `{schema_name}`"))
        .await
        .expect("drop schema");
    blocked
}

async fn every_name_on(server: ConnectionConfig, label: &str) {
    let admin = common::admin_of(&server);
    for name in names() {
        let blocked = migrate_one(&server, &admin, &name).await;
        println!("{label}: {name:?} cut over, writes blocked {blocked} ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_legal_table_name_cuts_over() {
    every_name_on(common::primary(), "lower_case_table_names as started").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_legal_table_name_cuts_over_with_lower_case_table_names_1() {
    let Ok(address) = std::env::var("GHOST_TEST_LCTN1") else {
        panic!("GHOST_TEST_LCTN1 is not set: start the topology (e2e/db/topology.sh) first");
    };
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let server = ConnectionConfig {
        host: host.into(),
        port: port.parse().expect("port"),
        ..common::primary()
    };
    every_name_on(server, "lower_case_table_names=1").await;
}
