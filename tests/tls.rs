//! TLS to the servers, against the topology's TLS-only server (`require_secure_transport=ON`):
//! every mode that should connect does, every check that should refuse does, a client
//! certificate the server requires works, and a migration under load ends with rows equal.
//! The server refuses clear text, and performance_schema says how each of ghost's connections,
//! the binlog stream's included, is carried while the migration runs.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::model::{self, Writers};
use ghost::engine::conn::{ConnectionConfig, Secret};
use ghost::engine::tls::{Pem, TlsConfig, TlsVerify};
use mysql_async::prelude::Queryable;

fn tls_server() -> (String, u16) {
    let address = std::env::var("GHOST_TEST_TLS").unwrap_or_else(|_| "127.0.0.1:23308".into());
    let (host, port) = address
        .rsplit_once(':')
        .expect("GHOST_TEST_TLS is host:port");
    (host.to_string(), port.parse().expect("port"))
}

fn cert(name: &str) -> PathBuf {
    let dir = std::env::var("GHOST_TEST_TLS_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ghost/tls",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    PathBuf::from(dir).join(name)
}

fn verified() -> TlsConfig {
    TlsConfig {
        ca: Some(Pem::File(cert("ca.pem"))),
        client: None,
        verify: TlsVerify::Identity,
    }
}

/// The admin user on the TLS server, over verified TLS.
fn admin() -> ConnectionConfig {
    let (host, port) = tls_server();
    let a = common::primary_admin();
    ConnectionConfig::new(host, port, a.user, a.password).with_tls(Some(verified()))
}

/// A fresh schema with `t` on the TLS server; dropped by the caller.
async fn schema(prefix: &str, rows: i64) -> (String, model::Model) {
    let name = format!("ghost_t_{prefix}_{:08x}", rand::random::<u32>());
    let mut conn = admin().connect().await.expect("admin over TLS");
    conn.query_drop(format!("CREATE DATABASE `{name}`"))
        .await
        .expect("schema");
    let mut conn = admin().with_database(&name).connect().await.expect("admin");
    let model = model::create_table(&mut conn, rows).await;
    (name, model)
}

async fn drop_schema(name: &str) {
    if let Ok(mut conn) = admin().connect().await {
        let _ = conn
            .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
            .await;
    }
}

/// `ghost migrate` of `schema`.t on the TLS server as `user`, with `extra` flags.
fn ghost(schema: &str, host: &str, user: (&str, &str), extra: &[String]) -> std::process::Output {
    let (_, port) = tls_server();
    Command::new(common::ghost_bin())
        .arg("migrate")
        .args([
            format!("--host={host}"),
            format!("--port={port}"),
            format!("--user={}", user.0),
            format!("--password={}", user.1),
            format!("--database={schema}"),
            "--table=t".to_string(),
            "--alter=ADD COLUMN note VARCHAR(8) NULL".to_string(),
            "--allow-on-master".to_string(),
            format!("--replica-server-id={}", common::unique_server_id()),
            "--ok-to-drop-table".to_string(),
            "--verbose".to_string(),
            "--execute".to_string(),
        ])
        .args(extra)
        .output()
        .expect("run ghost")
}

/// Samples, as the server reports them, the connections of one user: (id, command, transport).
struct ConnectionWatcher {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::collections::BTreeSet<(u64, String, String)>>,
}

impl ConnectionWatcher {
    fn start(user: &str) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let user = user.to_string();
        let task = tokio::spawn(async move {
            let mut conn = admin().connect().await.expect("admin");
            let mut seen = std::collections::BTreeSet::new();
            while !*stopped.borrow() {
                let rows: Vec<(u64, Option<String>, Option<String>)> = conn
                    .exec(
                        "SELECT PROCESSLIST_ID, PROCESSLIST_COMMAND, CONNECTION_TYPE \
                         FROM performance_schema.threads WHERE PROCESSLIST_USER = ?",
                        (&user,),
                    )
                    .await
                    .expect("performance_schema.threads");
                for (id, command, transport) in rows {
                    seen.insert((
                        id,
                        command.unwrap_or_default(),
                        transport.unwrap_or_default(),
                    ));
                }
                let _ = tokio::time::timeout(Duration::from_millis(20), stopped.changed()).await;
            }
            let _ = conn.disconnect().await;
            seen
        });
        Self { stop, task }
    }

    async fn stop(self) -> std::collections::BTreeSet<(u64, String, String)> {
        let _ = self.stop.send(true);
        self.task.await.expect("watcher")
    }
}

fn engine_user() -> (String, String) {
    let p = common::primary();
    (p.user, p.password.expose().to_string())
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_text_is_refused_by_the_server_and_ghost_names_the_fix() {
    let (name, _) = schema("tlsclear", 10).await;
    let (user, password) = engine_user();
    let (host, _) = tls_server();
    let out = ghost(&name, &host, (&user, &password), &[]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("--ssl"),
        "the refusal should name --ssl: {all}"
    );
    drop_schema(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_connects_and_every_check_refuses_what_it_should() {
    let (host, port) = tls_server();
    let (user, password) = engine_user();
    let with = |host: &str, tls: TlsConfig| {
        ConnectionConfig::new(host, port, user.clone(), Secret::new(password.clone()))
            .with_tls(Some(tls))
    };
    let ca = Some(Pem::File(cert("ca.pem")));
    let other_ca = Some(Pem::File(cert("other-ca.pem")));
    // (what, host, tls, connects)
    let cases = [
        (
            "verify-identity",
            host.clone(),
            TlsConfig {
                ca: ca.clone(),
                client: None,
                verify: TlsVerify::Identity,
            },
            true,
        ),
        (
            "verify-ca",
            host.clone(),
            TlsConfig {
                ca: ca.clone(),
                client: None,
                verify: TlsVerify::Ca,
            },
            true,
        ),
        (
            "required (no verification)",
            host.clone(),
            TlsConfig {
                ca: None,
                client: None,
                verify: TlsVerify::None,
            },
            true,
        ),
        // The certificate is for 127.0.0.1 only: another name for the same server.
        (
            "verify-identity, name mismatch",
            "localhost".to_string(),
            TlsConfig {
                ca: ca.clone(),
                client: None,
                verify: TlsVerify::Identity,
            },
            false,
        ),
        (
            "verify-ca, name mismatch",
            "localhost".to_string(),
            TlsConfig {
                ca: ca.clone(),
                client: None,
                verify: TlsVerify::Ca,
            },
            true,
        ),
        (
            "verify-ca, another CA",
            host.clone(),
            TlsConfig {
                ca: other_ca.clone(),
                client: None,
                verify: TlsVerify::Ca,
            },
            false,
        ),
        (
            "verify-identity, another CA",
            host.clone(),
            TlsConfig {
                ca: other_ca,
                client: None,
                verify: TlsVerify::Identity,
            },
            false,
        ),
        (
            "verify-identity, the built-in roots",
            host.clone(),
            TlsConfig {
                ca: None,
                client: None,
                verify: TlsVerify::Identity,
            },
            false,
        ),
    ];
    for (what, host, tls, connects) in cases {
        let result = with(&host, tls).connect().await;
        match (result, connects) {
            (Ok(mut conn), true) => {
                let state = ghost::engine::tls::session_tls(&mut conn)
                    .await
                    .expect("tls status");
                assert!(
                    state.is_some_and(|s| s.starts_with("TLS")),
                    "{what}: not encrypted"
                );
            }
            (Err(e), false) => println!("{what}: refused as it should be: {e}"),
            (Ok(_), false) => panic!("{what}: connected, but should have been refused"),
            (Err(e), true) => panic!("{what}: refused: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_the_server_requires() {
    let (name, _) = schema("tlsx509", 200).await;
    let (host, _) = tls_server();
    let ca = format!("--ssl-ca={}", cert("ca.pem").display());
    let x509 = ("ghost_x509", "ghost-x509-pass");
    let without = ghost(&name, &host, x509, &["--ssl".into(), ca.clone()]);
    assert!(
        !without.status.success(),
        "a REQUIRE X509 user logged in without a certificate: {}",
        text(&without)
    );
    let with = ghost(
        &name,
        &host,
        x509,
        &[
            "--ssl".into(),
            ca,
            format!("--ssl-cert={}", cert("client-cert.pem").display()),
            format!("--ssl-key={}", cert("client-key.pem").display()),
        ],
    );
    assert!(with.status.success(), "{}", text(&with));
    drop_schema(&name).await;
}

/// A migration under writers over verified TLS, on a server that refuses clear text: it ends
/// with every acknowledged write in place, and ghost reports the TLS version it used.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_under_load_over_tls() {
    let (name, model) = schema("tlsload", 5_000).await;
    let writers = Writers::start(
        admin().with_database(&name),
        model,
        3,
        5_000,
        Duration::from_millis(4),
    );
    let (host, _) = tls_server();
    let (user, password) = engine_user();
    let watcher = ConnectionWatcher::start(&user);
    let out = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            ghost(
                &name,
                &host,
                (&user, &password),
                &[
                    "--ssl".into(),
                    format!("--ssl-ca={}", cert("ca.pem").display()),
                    "--chunk-size=200".into(),
                ],
            )
        }
    })
    .await
    .expect("join");
    let seen = watcher.stop().await;
    let (record, counts) = writers.stop().await;
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let clear: Vec<_> = seen.iter().filter(|c| c.2 != "SSL/TLS").collect();
    assert!(clear.is_empty(), "connections not over TLS: {clear:?}");
    assert!(
        seen.iter().any(|c| c.1.starts_with("Binlog Dump")),
        "the binlog connection was never seen: {seen:?}"
    );
    println!(
        "the server carried all {} of ghost's connections seen over TLS (the binlog dump's included)",
        seen.len()
    );
    assert!(
        all.contains("connections to the servers use TLS"),
        "ghost should report its TLS: {all}"
    );
    let mut conn = admin().with_database(&name).connect().await.expect("admin");
    let (rows, problems) = model::mismatches(&mut conn, "t", &record).await;
    assert!(problems.is_empty(), "{problems:?}");
    println!(
        "over TLS: {rows} rows equal after {} acknowledged writes",
        counts.acknowledged
    );
    assert!(counts.acknowledged > 0);
    drop_schema(&name).await;
}
