//! Shared by the integration tests: where the MariaDB topology is, and a throwaway schema per test.
#![allow(dead_code)]

pub mod browser;
pub mod dialect;
pub mod fault;
pub mod model;
pub mod proxy;
pub mod webhook_receiver;

use ghost::engine::conn::{ConnectionConfig, Secret};
use mysql_async::prelude::Queryable;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn endpoint(var: &str, default: &str) -> (String, u16) {
    let value = env_or(var, default);
    let (host, port) = value
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{var}={value:?} must be host:port"));
    let port = port
        .parse()
        .unwrap_or_else(|_| panic!("{var}={value:?}: port is not a number"));
    (host.to_string(), port)
}

/// The engine's user on the primary (`GHOST_TEST_PRIMARY`, `GHOST_TEST_USER`, `GHOST_TEST_PASSWORD`).
pub fn primary() -> ConnectionConfig {
    let (host, port) = endpoint("GHOST_TEST_PRIMARY", "127.0.0.1:23306");
    ConnectionConfig::new(
        host,
        port,
        env_or("GHOST_TEST_USER", "ghost"),
        Secret::new(env_or("GHOST_TEST_PASSWORD", "ghost-pass")),
    )
}

/// The engine's user on the replica.
pub fn replica() -> ConnectionConfig {
    let (host, port) = endpoint("GHOST_TEST_REPLICA", "127.0.0.1:23307");
    ConnectionConfig {
        host,
        port,
        ..primary()
    }
}

/// An all-privileges user on the primary, for test setup only.
pub fn primary_admin() -> ConnectionConfig {
    ConnectionConfig {
        user: env_or("GHOST_TEST_ADMIN_USER", "ghost_admin"),
        password: Secret::new(env_or("GHOST_TEST_ADMIN_PASSWORD", "ghost-admin-pass")),
        ..primary()
    }
}

/// The `ghost` binary the tests run: `GHOST_TEST_BIN` when set (CI points it at the release
/// build, which runs the suites faster), else the one cargo built for this test.
pub fn ghost_bin() -> String {
    std::env::var("GHOST_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ghost").to_string())
}

/// The all-privileges test user on `server` (primary or replica).
pub fn admin_of(server: &ConnectionConfig) -> ConnectionConfig {
    ConnectionConfig {
        user: env_or("GHOST_TEST_ADMIN_USER", "ghost_admin"),
        password: Secret::new(env_or("GHOST_TEST_ADMIN_PASSWORD", "ghost-admin-pass")),
        ..server.clone()
    }
}

/// `ghost migrate` flags for `schema`.`table` on the primary as the engine's user, executing
/// (without the `migrate` subcommand itself).
pub fn migrate_args(schema: &str, table: &str, alter: &str) -> Vec<String> {
    let p = primary();
    vec![
        format!("--host={}", p.host),
        format!("--port={}", p.port),
        format!("--user={}", p.user),
        format!("--password={}", p.password.expose()),
        format!("--database={schema}"),
        format!("--table={table}"),
        format!("--alter={alter}"),
        "--allow-on-master".into(),
        format!("--replica-server-id={}", unique_server_id()),
        "--execute".into(),
    ]
}

/// The tables of `schema`, sorted by name (byte order).
pub async fn table_names(conn: &mut mysql_async::Conn, schema: &str) -> Vec<String> {
    let mut tables: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            (schema,),
        )
        .await
        .expect("list tables");
    tables.sort();
    tables
}

/// A replication server id no other test stream uses.
pub fn unique_server_id() -> u32 {
    rand::random_range(100_000..2_000_000_000)
}

/// A schema created for one test and dropped when the value goes out of scope.
pub struct TestSchema {
    pub name: String,
}

impl TestSchema {
    pub async fn create(prefix: &str) -> Self {
        let name = format!("ghost_t_{prefix}_{:08x}", rand::random::<u32>());
        let mut conn = primary_admin()
            .connect()
            .await
            .expect("the MariaDB primary must be running: bash e2e/mariadb/topology.sh start");
        conn.query_drop(format!("CREATE DATABASE `{name}`"))
            .await
            .expect("create test schema");
        Self { name }
    }

    pub fn conn_config(&self) -> ConnectionConfig {
        primary().with_database(&self.name)
    }

    pub fn admin_config(&self) -> ConnectionConfig {
        primary_admin().with_database(&self.name)
    }

    /// A handle for tasks that must not own (and so drop) the schema.
    pub fn reference(&self) -> TestSchemaRef {
        TestSchemaRef {
            name: self.name.clone(),
        }
    }
}

#[derive(Clone)]
pub struct TestSchemaRef {
    pub name: String,
}

impl TestSchemaRef {
    pub fn admin_config(&self) -> ConnectionConfig {
        primary_admin().with_database(&self.name)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a private one on a plain thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for cleanup");
            rt.block_on(async move {
                if let Ok(mut conn) = primary_admin().connect().await {
                    let _ = conn
                        .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                        .await;
                    let _ = conn.disconnect().await;
                }
            });
        })
        .join();
    }
}
