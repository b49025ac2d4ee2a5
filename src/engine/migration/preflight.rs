//! Checks and settings before anything is created: which server applies the changes, row-based
//! binary logging, and the names and privileges triggers would need (`--remove-ghost-triggers`).

use mysql_async::{Conn, prelude::Queryable};

use tracing::info;

use super::ghost_trigger_name;
use crate::engine::config::{MigrationConfig, Topology};
use crate::engine::conn::ConnectionConfig;
use crate::engine::dialect::ServerInfo;
use crate::engine::error::{EngineError, Result, SqlContext};
use crate::engine::inspector::Trigger;
use crate::engine::{inspector, wording};

/// The applier: the replica itself for test/migrate-on-replica, else the primary (given, or read
/// from the replica's replication status), else the inspected server when it is the primary and
/// running there is allowed.
pub(super) async fn resolve_applier(
    cfg: &MigrationConfig,
    server: &ServerInfo,
    conn: &mut Conn,
) -> Result<ConnectionConfig> {
    let status: Option<mysql_async::Row> = conn
        .query_first(server.replica_status_sql())
        .await
        .sql_context(|| {
            format!(
                "{} (needs REPLICA MONITOR / REPLICATION CLIENT)",
                server.replica_status_sql()
            )
        })?;
    let is_replica = status.is_some();
    match cfg.topology {
        Topology::TestOnReplica | Topology::MigrateOnReplica => {
            if !is_replica {
                return Err(EngineError::Refused(format!(
                    "{}: {} is not one; point --host at a replica",
                    wording::NOT_A_REPLICA,
                    cfg.inspector.endpoint()
                )));
            }
            let log_slave_updates: Option<Option<String>> = conn
                .query_first(server.log_replica_updates_sql())
                .await
                .sql_context(|| "reading log_slave_updates".into())?;
            let on = log_slave_updates.flatten().unwrap_or_default();
            if !(on == "1" || on.eq_ignore_ascii_case("ON")) {
                return Err(EngineError::ServerConfig(format!(
                    "{}: the migration cannot follow its writes otherwise; set it ON",
                    wording::log_slave_updates_on_replica(&cfg.inspector.endpoint())
                )));
            }
            Ok(cfg.inspector.clone())
        }
        Topology::Normal => {
            if let Some(primary) = &cfg.primary {
                return Ok(primary.clone());
            }
            if let Some(row) = status {
                let columns = server.replica_status_columns();
                let host: Option<String> = row.get(columns.source_host);
                let port: Option<u16> = row.get(columns.source_port);
                if let (Some(host), Some(port)) = (host, port) {
                    return Ok(ConnectionConfig {
                        host,
                        port,
                        ..cfg.inspector.clone()
                    });
                }
            }
            if !cfg.allow_on_master {
                return Err(EngineError::Refused(format!(
                    "{} ({} is a primary, not a replica), or point --host at a replica",
                    wording::RUN_ON_MASTER,
                    cfg.inspector.endpoint()
                )));
            }
            Ok(cfg.inspector.clone())
        }
    }
}

/// gh-ost's `--switch-to-rbr`: ROW format on the inspected server, then a replication restart so
/// its SQL thread logs in ROW too. Refused when replicas read from it: they would start
/// receiving ROW events unannounced.
pub(super) async fn switch_to_rbr(conn: &mut Conn, server: &ServerInfo) -> Result<()> {
    let format: Option<String> = conn
        .query_first("SELECT @@global.binlog_format")
        .await
        .sql_context(|| "reading binlog_format".into())?;
    if format.is_some_and(|f| f.eq_ignore_ascii_case("ROW")) {
        return Ok(());
    }
    let replicas: Vec<mysql_async::Row> = conn
        .query(if server.is_mariadb() {
            "SHOW SLAVE HOSTS"
        } else {
            "SHOW REPLICAS"
        })
        .await
        .sql_context(|| "listing replicas (--switch-to-rbr)".into())?;
    if !replicas.is_empty() {
        return Err(EngineError::Refused(format!(
            "--switch-to-rbr: {} replica(s) read from this server; switch binlog_format to ROW yourself along the chain",
            replicas.len()
        )));
    }
    conn.query_drop("SET GLOBAL binlog_format = 'ROW'")
        .await
        .sql_context(|| "SET GLOBAL binlog_format = 'ROW' (--switch-to-rbr)".into())?;
    let status: Option<mysql_async::Row> = conn
        .query_first(server.replica_status_sql())
        .await
        .sql_context(|| "reading replication status".into())?;
    if status.is_some() {
        conn.query_drop("STOP SLAVE; START SLAVE")
            .await
            .sql_context(|| "restarting replication after --switch-to-rbr".into())?;
    }
    info!("binlog_format switched to ROW (--switch-to-rbr)");
    Ok(())
}

pub(super) async fn check_ghost_trigger_names(
    conn: &mut Conn,
    cfg: &MigrationConfig,
    triggers: &[Trigger],
) -> Result<()> {
    let existing = inspector::trigger_names_in_schema(conn, &cfg.database).await?;
    for trigger in triggers {
        let name = ghost_trigger_name(
            &trigger.name,
            &cfg.trigger_suffix,
            cfg.remove_trigger_suffix_if_exists,
        );
        if name.chars().count() > 64 {
            return Err(EngineError::Refused(format!(
                "{}: use a shorter --trigger-suffix",
                wording::ghost_triggers_too_long(&name, 64)
            )));
        }
        if existing.contains(&name) {
            return Err(EngineError::Refused(format!(
                "{}: trigger {name} already exists in `{}`; drop it or choose another --trigger-suffix",
                wording::ghost_triggers_exist(&name),
                cfg.database
            )));
        }
    }
    Ok(())
}

/// With binary logging on, CREATE TRIGGER needs SUPER or log_bin_trust_function_creators: find out
/// before copying, not at cut-over.
pub(super) async fn check_can_create_triggers(conn: &mut Conn) -> Result<()> {
    let trusted: Option<Option<String>> = conn
        .query_first("SELECT @@global.log_bin_trust_function_creators")
        .await
        .sql_context(|| "reading log_bin_trust_function_creators".into())?;
    let trusted = trusted.flatten().unwrap_or_default();
    if trusted == "1" || trusted.eq_ignore_ascii_case("ON") {
        return Ok(());
    }
    let grants: Vec<String> = conn
        .query("SHOW GRANTS FOR CURRENT_USER()")
        .await
        .sql_context(|| "reading grants".into())?;
    let upper: Vec<String> = grants.iter().map(|g| g.to_ascii_uppercase()).collect();
    if upper
        .iter()
        .any(|g| g.contains(" ON *.*") && (g.contains("SUPER") || g.contains("ALL PRIVILEGES")))
    {
        return Ok(());
    }
    Err(EngineError::Refused(
        "--include-triggers: creating triggers with binary logging on needs SUPER, or \
         SET GLOBAL log_bin_trust_function_creators=ON on the server"
            .into(),
    ))
}
