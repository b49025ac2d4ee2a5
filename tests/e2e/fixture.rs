//! What a journey migrates: a `users` table in its own schema on the primary, a writer that keeps
//! changing it while the migration runs (and remembers what every acknowledged write left), and
//! the Secret + SchemaMigration manifest a user would `kubectl apply`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ghost::engine::conn::ConnectionConfig;
use mysql_async::prelude::Queryable;
use tokio::task::JoinHandle;

use crate::common::{self, TestSchema};
use crate::harness::{E2E_LABEL, NAMESPACE};

pub const TABLE: &str = "users";

/// id → (name, n): the table's rows, without the columns migrations add.
pub type Rows = BTreeMap<u64, (String, i64)>;

/// The journey's schema and an admin session in it; the schema is dropped with the value.
pub struct Table {
    pub schema: TestSchema,
    pub conn: mysql_async::Conn,
}

impl Table {
    /// `users` with `rows` rows: id 1..=rows, name `user-<id>`, n 0.
    pub async fn create(prefix: &str, rows: usize) -> Table {
        let schema = TestSchema::create(prefix).await;
        let mut conn = schema
            .admin_config()
            .connect()
            .await
            .expect("connect as admin");
        conn.query_drop(format!(
            "CREATE TABLE `{TABLE}` (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
             name VARCHAR(64) NOT NULL, n INT NOT NULL DEFAULT 0, \
             created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        ))
        .await
        .expect("create table");
        for start in (1..=rows).step_by(1000) {
            let end = (start + 999).min(rows);
            let values: Vec<String> = (start..=end).map(|i| format!("('user-{i}')")).collect();
            conn.query_drop(format!(
                "INSERT INTO `{TABLE}` (name) VALUES {}",
                values.join(",")
            ))
            .await
            .expect("insert rows");
        }
        Table { schema, conn }
    }

    pub fn database(&self) -> &str {
        &self.schema.name
    }

    pub async fn count(&mut self, table: &str) -> u64 {
        let count: Option<u64> = self
            .conn
            .query_first(format!(
                "SELECT COUNT(*) FROM `{}`",
                table.replace('`', "``")
            ))
            .await
            .unwrap_or_else(|e| panic!("count {table}: {e}"));
        count.unwrap_or(0)
    }

    /// Every table in the schema, sorted.
    pub async fn tables(&mut self) -> Vec<String> {
        common::table_names(&mut self.conn, &self.schema.name).await
    }

    /// The columns of `users`, in order.
    pub async fn columns(&mut self) -> Vec<String> {
        let database = self.schema.name.clone();
        self.conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (database, TABLE),
            )
            .await
            .expect("list columns")
    }

    pub async fn rows(&mut self) -> Rows {
        read_rows(&mut self.conn).await
    }
}

async fn read_rows(conn: &mut mysql_async::Conn) -> Rows {
    let rows: Vec<(u64, String, i64)> = conn
        .query(format!("SELECT id, name, n FROM `{TABLE}` ORDER BY id"))
        .await
        .expect("read rows");
    rows.into_iter()
        .map(|(id, name, n)| (id, (name, n)))
        .collect()
}

/// What the writer did.
#[derive(Debug, Default)]
pub struct Writes {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    /// The table as the acknowledged writes left it.
    pub expected: Rows,
}

impl Writes {
    pub fn total(&self) -> u64 {
        self.inserts + self.updates + self.deletes
    }
}

/// Inserts, updates and deletes on `users` from its own session, one every `pause`, until
/// stopped. Only the writer changes the table, so its model of the rows is exact.
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<Writes, String>>,
}

impl Writer {
    pub async fn start(config: ConnectionConfig, pause: Duration) -> Writer {
        let mut conn = config.connect().await.expect("writer session");
        let rows = read_rows(&mut conn).await;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut writes = Writes {
                expected: rows,
                ..Writes::default()
            };
            let mut serial = 0u64;
            while !flag.load(Ordering::Relaxed) {
                serial += 1;
                write_once(&mut conn, &mut writes, serial)
                    .await
                    .map_err(|e| format!("write {serial}: {e}"))?;
                tokio::time::sleep(pause).await;
            }
            let _ = conn.disconnect().await;
            Ok(writes)
        });
        Writer { stop, task }
    }

    /// Stops after the write in flight; fails the journey when a write failed.
    pub async fn stop(self) -> Writes {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.await {
            Ok(Ok(writes)) => writes,
            Ok(Err(e)) => panic!("the writer failed: {e}"),
            Err(e) => panic!("the writer task: {e}"),
        }
    }
}

async fn write_once(
    conn: &mut mysql_async::Conn,
    writes: &mut Writes,
    serial: u64,
) -> Result<(), mysql_async::Error> {
    let pick = |writes: &Writes| {
        let len = writes.expected.len();
        (len > 0)
            .then(|| rand::random_range(0..len))
            .and_then(|i| writes.expected.keys().nth(i).copied())
    };
    match rand::random_range(0..10u8) {
        0..=4 => {
            let name = format!("w-{serial}");
            conn.exec_drop(
                format!("INSERT INTO `{TABLE}` (name, n) VALUES (?, ?)"),
                (name.as_str(), serial),
            )
            .await?;
            let id = conn.last_insert_id().unwrap_or(0);
            writes.expected.insert(id, (name, serial as i64));
            writes.inserts += 1;
        }
        5..=8 => {
            if let Some(id) = pick(writes) {
                conn.exec_drop(
                    format!(
                        "UPDATE `{TABLE}` SET n = n + 1, name = CONCAT(name, '+') WHERE id = ?"
                    ),
                    (id,),
                )
                .await?;
                if let Some((name, n)) = writes.expected.get_mut(&id) {
                    name.push('+');
                    *n += 1;
                }
                writes.updates += 1;
            }
        }
        _ => {
            if let Some(id) = pick(writes) {
                conn.exec_drop(format!("DELETE FROM `{TABLE}` WHERE id = ?"), (id,))
                    .await?;
                writes.expected.remove(&id);
                writes.deletes += 1;
            }
        }
    }
    Ok(())
}

/// A Secret with the engine's credentials and a SchemaMigration of `users`, labelled for the
/// harness's cleanup.
pub struct Manifest {
    pub name: String,
    pub secret: String,
    pub database: String,
    pub alter: String,
    /// YAML appended under `spec:`, indented by two spaces (e.g. `  cutOver:\n    postpone: true`).
    pub spec_extra: String,
    pub annotations: Vec<(String, String)>,
    /// Leave the Secret out (the missing-Secret journey).
    pub without_secret: bool,
    /// Where the engine pod reaches the primary, when not the pods' way to the test's primary.
    pub endpoint: Option<(String, u16)>,
}

/// The address engine pods reach the test databases at (the node's bridge, where its relays
/// listen), once the node is up; the same ports as on loopback.
static PODS_REACH_DATABASES_AT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn set_pods_reach_databases_at(host: &str) {
    let _ = PODS_REACH_DATABASES_AT.set(host.to_string());
}

impl Manifest {
    pub fn new(prefix: &str, database: &str, alter: &str) -> Manifest {
        let name = format!("{prefix}-{:08x}", rand::random::<u32>());
        Manifest {
            secret: format!("{name}-db"),
            name,
            database: database.to_string(),
            alter: alter.to_string(),
            spec_extra: String::new(),
            annotations: Vec::new(),
            without_secret: false,
            endpoint: None,
        }
    }

    /// The engine reaches the primary at `host:port`.
    pub fn reached_at(mut self, host: &str, port: u16) -> Manifest {
        self.endpoint = Some((host.to_string(), port));
        self
    }

    /// A copy slow enough to act on mid-way: fixed 10-row chunks (no adaptive sizing) with a
    /// nice ratio of 5 (the `ghost/chunk-size` and `ghost/nice-ratio` annotations speed it up
    /// again).
    pub fn slow(mut self) -> Manifest {
        self.spec_extra.push_str(
            "  copy:\n    chunkSize: 10\n    targetChunkTimeMillis: 0\n    niceRatio: 5\n",
        );
        self
    }

    pub fn with_spec(mut self, yaml: &str) -> Manifest {
        self.spec_extra.push_str(yaml);
        self
    }

    pub fn target(&self) -> String {
        format!("schemamigrations.ghost.dev/{}", self.name)
    }

    pub fn render(&self) -> String {
        let db = common::primary();
        let json = |s: &str| serde_json::to_string(s).expect("json string");
        let mut out = String::new();
        if !self.without_secret {
            out.push_str(&format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {secret}\n  namespace: {NAMESPACE}\n  \
                 labels: {{\"{E2E_LABEL}\": \"true\", \"ghost.dev/credentials\": \"true\"}}\ntype: Opaque\nstringData:\n  \
                 username: {user}\n  password: {password}\n---\n",
                secret = self.secret,
                user = json(&db.user),
                password = json(db.password.expose()),
            ));
        }
        let annotations = if self.annotations.is_empty() {
            String::new()
        } else {
            let pairs: Vec<String> = self
                .annotations
                .iter()
                .map(|(k, v)| format!("{}: {}", json(k), json(v)))
                .collect();
            format!("  annotations: {{{}}}\n", pairs.join(", "))
        };
        out.push_str(&format!(
            "apiVersion: ghost.dev/v1alpha1\nkind: SchemaMigration\nmetadata:\n  name: {name}\n  \
             namespace: {NAMESPACE}\n  labels: {{\"{E2E_LABEL}\": \"true\"}}\n{annotations}spec:\n  \
             connection:\n    host: {host}\n    port: {port}\n    database: {database}\n    \
             credentialsSecretRef:\n      name: {secret}\n      usernameKey: username\n      \
             passwordKey: password\n  table: {TABLE}\n  alter: {alter}\n{extra}",
            name = self.name,
            host = json(self.endpoint.as_ref().map_or_else(
                || PODS_REACH_DATABASES_AT.get().unwrap_or(&db.host),
                |(h, _)| h
            )),
            port = self.endpoint.as_ref().map_or(db.port, |(_, p)| *p),
            database = json(&self.database),
            secret = self.secret,
            alter = json(&self.alter),
            extra = self.spec_extra,
        ));
        out
    }
}
