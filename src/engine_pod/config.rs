//! A `SchemaMigration` → the engine's `MigrationConfig`. Pure: the credentials, the replica
//! server id and the webhook secrets are read by the caller and passed in, so every mapping is a
//! plain unit test.
//!
//! Defaults follow `ghost migrate` (gh-ost's), with four deliberate differences for a pod that
//! Kubernetes may kill and restart at any time:
//! - checkpoints are always on (every 10 s), so a restarted engine resumes;
//! - a leftover ghost table is dropped at start (a pod killed before its first checkpoint leaves
//!   one behind; the migration lock, taken first, makes sure no other run owns it);
//! - without `inspectHost` the primary itself is inspected (`allow_on_master`);
//! - the replica server id comes from the resource's UID, so two engines never share one.

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

use crate::api::engine_files::tls_files;
use crate::api::types::{
    CopySpec, HookEvent, OldTable, SchemaMigration, SchemaMigrationSpec, TlsMode, TlsSpec,
};
use crate::engine::alter::{AlterStatement, parse_alter};
use crate::engine::config::{DEFAULT_TARGET_CHUNK_TIME_MILLIS, MigrationConfig};
use crate::engine::conn::{ConnectionConfig, Secret};
use crate::engine::hooks::{HookPoint, HooksConfig, WebhookTarget};
use crate::engine::tls::{Pem, TlsConfig, TlsVerify};

/// The database user, set on the engine container from the credentials Secret.
pub const USER_ENV: &str = "GHOST_DB_USER";
/// The database password, set on the engine container from the credentials Secret.
pub const PASSWORD_ENV: &str = "GHOST_DB_PASSWORD";
/// How often the engine saves a resumable checkpoint.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
/// Replica server ids are drawn from `[start, end)`: above the small ids people give real
/// servers, and below 2^32.
pub const SERVER_ID_RANGE: (u32, u32) = (100_000, 4_000_000_000);

/// Why a resource cannot be turned into an engine configuration. Messages are one line, name the
/// field to fix, and never contain a secret value.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "{0} is not set: the engine Job passes the database credentials from the Secret named in \
         spec.connection.credentialsSecretRef"
    )]
    MissingCredentials(&'static str),
    #[error("spec.connection.port {0} is not a TCP port (1-65535)")]
    Port(i32),
    #[error("spec.connection.inspectHost {0:?} is not host, host:port or [ipv6]:port")]
    InspectHost(String),
    #[error("spec.alter: {0}")]
    Alter(String),
    #[error(
        "spec.alter starts with ALTER TABLE {named}, but this migration is of {expected} \
         (spec.connection.database, spec.table): give only the changes"
    )]
    AlterTarget { named: String, expected: String },
    #[error("spec.hooks.webhooks: {0}")]
    WebhookSecret(String),
}

/// Webhook signing keys read from Secrets, by (Secret name, key).
pub type SecretValues = BTreeMap<(String, String), Secret>;

/// The database credentials from the environment (`GHOST_DB_USER`, `GHOST_DB_PASSWORD`).
/// `lookup` is `std::env::var(..).ok()` in the pod. An empty password is allowed (MySQL allows
/// one); an unset one is not, since it means the Job was built without the Secret.
pub fn credentials_from_env(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, Secret), ConfigError> {
    let user = lookup(USER_ENV)
        .filter(|u| !u.trim().is_empty())
        .ok_or(ConfigError::MissingCredentials(USER_ENV))?;
    let password = lookup(PASSWORD_ENV).ok_or(ConfigError::MissingCredentials(PASSWORD_ENV))?;
    Ok((user, Secret::new(password)))
}

/// A replica server id for the binlog connection, stable for one resource (a restarted pod
/// takes over its predecessor's id, and the server drops the dead connection) and spread over
/// `SERVER_ID_RANGE` so that concurrent engines do not collide.
pub fn replica_server_id(uid: &str) -> u32 {
    // FNV-1a, 64 bits: stable across builds and Rust versions, unlike std's hashers.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in uid.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let (start, end) = SERVER_ID_RANGE;
    let offset = hash % u64::from(end - start);
    start + u32::try_from(offset).unwrap_or(0)
}

/// The engine configuration for `smig`. `resume` is left false: the caller sets it after asking
/// the database whether a checkpoint exists. Webhook secrets are attached afterwards with
/// `attach_webhook_secrets`.
pub fn migration_config(
    smig: &SchemaMigration,
    credentials: (String, Secret),
    server_id: u32,
) -> Result<MigrationConfig, ConfigError> {
    let spec = &smig.spec;
    let connection = &spec.connection;
    let (user, password) = credentials;
    if user.trim().is_empty() {
        return Err(ConfigError::MissingCredentials(USER_ENV));
    }
    let port = u16::try_from(connection.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(ConfigError::Port(connection.port))?;

    // A revert has no ALTER of its own (the CRD refuses one).
    let alter = if spec.revert.is_some() {
        AlterStatement::default()
    } else {
        parse_alter(&spec.alter)
            .map_err(|e| ConfigError::Alter(e.to_string().replace("--alter", "spec.alter")))?
    };
    let explicit_table = alter.explicit_table.as_deref();
    let explicit_schema = alter.explicit_schema.as_deref();
    if explicit_table.is_some_and(|t| t != spec.table)
        || explicit_schema.is_some_and(|s| s != connection.database)
    {
        let named = match explicit_schema {
            Some(schema) => format!("{schema}.{}", explicit_table.unwrap_or_default()),
            None => explicit_table.unwrap_or_default().to_string(),
        };
        return Err(ConfigError::AlterTarget {
            named,
            expected: format!("{}.{}", connection.database, spec.table),
        });
    }

    let primary = ConnectionConfig::new(connection.host.clone(), port, user, password)
        .with_tls(tls_config(connection.tls.as_ref()));
    let inspected = connection
        .inspect_host
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| parse_host_port(h, port))
        .transpose()?
        // Naming the primary itself is the same as naming nothing.
        .filter(|(host, p)| !(host.eq_ignore_ascii_case(&primary.host) && *p == port));
    let (inspector, assumed_primary, allow_on_master) = match inspected {
        // A replica is inspected and streamed from; writes go to the primary we were given,
        // not to whatever the replica reports as its source.
        Some((host, port)) => (
            ConnectionConfig {
                host,
                port,
                ..primary.clone()
            },
            Some(primary),
            false,
        ),
        // In Kubernetes the usual target is the primary's Service: inspect and stream from it.
        None => (primary, None, true),
    };

    let mut cfg =
        MigrationConfig::new(inspector, &connection.database, &spec.table, &alter.options);
    cfg.primary = assumed_primary;
    cfg.allow_on_master = allow_on_master;
    cfg.execute = spec.execute;
    cfg.replica_server_id = server_id;

    let cut_over = spec.cut_over.clone().unwrap_or_default();
    cfg.cut_over = cut_over.mode.into();
    cfg.cut_over_lock_timeout =
        Duration::from_secs(u64::try_from(cut_over.lock_timeout_seconds.clamp(1, 10)).unwrap_or(3));
    cfg.default_retries = u32::try_from(cut_over.retries).unwrap_or(1).max(1);
    cfg.ok_to_drop_table = cut_over.old_table == OldTable::Drop;
    // A kept old table gets gh-ost's timestamped name, so it does not block the table's next
    // migration (which would otherwise find `_<table>_del` taken).
    cfg.timestamp_old_table = cut_over.old_table == OldTable::Keep;
    cfg.checksum = spec.verify.as_ref().is_none_or(|v| v.checksum);
    cfg.checksum_during_copy = spec
        .verify
        .as_ref()
        .and_then(|v| v.during_copy)
        .unwrap_or(true);
    cfg.revert_from = spec.revert.as_ref().map(|r| r.old_table.clone());
    let threads = |pick: fn(&CopySpec) -> Option<i32>| {
        spec.copy
            .as_ref()
            .and_then(pick)
            .and_then(|t| usize::try_from(t).ok())
            .unwrap_or(1)
            .clamp(1, 64)
    };
    cfg.copy_threads = threads(|c| c.threads);
    cfg.apply_threads = threads(|c| c.apply_threads);
    let copy_option = |pick: fn(&CopySpec) -> Option<bool>, default: bool| {
        spec.copy.as_ref().and_then(pick).unwrap_or(default)
    };
    cfg.defer_secondary_indexes = copy_option(|c| c.defer_secondary_indexes, true);
    cfg.skip_uncopied_changes = copy_option(|c| c.skip_uncopied_changes, false);
    cfg.copy_without_locks = copy_option(|c| c.without_locks, false);
    cfg.coalesce_changes = copy_option(|c| c.coalesce_changes, true);
    cfg.target_chunk_time = spec
        .copy
        .as_ref()
        .and_then(|c| c.target_chunk_time_millis)
        .map_or(Some(DEFAULT_TARGET_CHUNK_TIME_MILLIS), |ms| {
            u64::try_from(ms).ok()
        })
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);

    cfg.checkpoint_interval = Some(CHECKPOINT_INTERVAL);
    cfg.initially_drop_ghost_table = true;

    cfg.hooks = HooksConfig {
        webhooks: webhooks(spec),
        ..HooksConfig::default()
    };
    Ok(cfg)
}

/// Sets each webhook's signing key from `values`. A webhook that asks to be signed is never
/// sent unsigned: a missing or empty key is an error.
pub fn attach_webhook_secrets(
    cfg: &mut MigrationConfig,
    spec: &SchemaMigrationSpec,
    values: &SecretValues,
) -> Result<(), ConfigError> {
    let specs = spec.hooks.iter().flat_map(|h| &h.webhooks);
    for (target, webhook) in cfg.hooks.webhooks.iter_mut().zip(specs) {
        let Some(r) = &webhook.secret_ref else {
            target.secret = None;
            continue;
        };
        let value = values
            .get(&(r.name.clone(), r.key.clone()))
            .filter(|v| !v.expose().is_empty())
            .ok_or_else(|| {
                ConfigError::WebhookSecret(format!(
                    "the signing key {:?} of Secret {:?} is missing or empty",
                    r.key, r.name
                ))
            })?;
        target.secret = Some(value.clone());
    }
    Ok(())
}

fn webhooks(spec: &SchemaMigrationSpec) -> Vec<WebhookTarget> {
    spec.hooks
        .iter()
        .flat_map(|h| &h.webhooks)
        .map(|w| WebhookTarget {
            url: w.url.clone(),
            secret: None,
            events: w
                .events
                .iter()
                .map(|e| hook_point(*e).event_name().to_string())
                .collect(),
        })
        .collect()
}

fn hook_point(event: HookEvent) -> HookPoint {
    match event {
        HookEvent::Startup => HookPoint::Startup,
        HookEvent::Validated => HookPoint::Validated,
        HookEvent::RowcountComplete => HookPoint::RowCountComplete,
        HookEvent::BeforeRowCopy => HookPoint::BeforeRowCopy,
        HookEvent::BatchCopyRetry => HookPoint::BatchCopyRetry,
        HookEvent::Status => HookPoint::Status,
        HookEvent::RowCopyComplete => HookPoint::RowCopyComplete,
        HookEvent::BeforeCutOver => HookPoint::BeforeCutOver,
        HookEvent::BeginPostponed => HookPoint::BeginPostponed,
        HookEvent::Success => HookPoint::Success,
        HookEvent::Failure => HookPoint::Failure,
    }
}

/// `spec.connection.tls` as the engine's TLS settings; the files are where the operator mounts
/// the Secrets (`api::engine_files::tls_files`).
fn tls_config(tls: Option<&TlsSpec>) -> Option<TlsConfig> {
    let tls = tls?;
    let verify = match tls.mode {
        TlsMode::Disabled => return None,
        TlsMode::Required => TlsVerify::None,
        TlsMode::VerifyCa => TlsVerify::Ca,
        TlsMode::VerifyIdentity => TlsVerify::Identity,
    };
    Some(TlsConfig {
        ca: tls
            .ca_secret_ref
            .as_ref()
            .map(|_| Pem::File(tls_files::CA.into())),
        client: tls.client_cert_secret_ref.as_ref().map(|_| {
            (
                Pem::File(tls_files::CLIENT_CERT.into()),
                Pem::File(tls_files::CLIENT_KEY.into()),
            )
        }),
        verify,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; the port defaults to the
/// primary's (replicas of one StatefulSet listen on the same port).
fn parse_host_port(value: &str, default_port: u16) -> Result<(String, u16), ConfigError> {
    let bad = || ConfigError::InspectHost(value.to_string());
    let port_of = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        let port = match tail {
            "" => default_port,
            _ => port_of(tail.strip_prefix(':').ok_or_else(bad)?)?,
        };
        (host, port)
    } else {
        match value.split_once(':') {
            None => (value, default_port),
            Some((host, port)) if !port.contains(':') => (host, port_of(port)?),
            // More than one colon and no brackets: a bare IPv6 address.
            Some(_) => (value, default_port),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::engine::config::{CutOverMode, ThrottleOptions, Topology};

    const MINIMAL: &str = r#"
apiVersion: ghost.dev/v1alpha1
kind: SchemaMigration
metadata: {name: add-age, namespace: shop, uid: 0b6f3c1e-8d1e-4c55-9a59-1f0a3c0e2d11}
spec:
  connection:
    host: mariadb-0.mariadb
    database: shop
    credentialsSecretRef: {name: shop-db}
  table: users
  alter: ADD COLUMN age INT NOT NULL DEFAULT 0
"#;

    const FULL: &str = r#"
apiVersion: ghost.dev/v1alpha1
kind: SchemaMigration
metadata: {name: add-age, namespace: shop}
spec:
  connection:
    host: primary.db
    port: 3307
    database: shop
    credentialsSecretRef: {name: s, usernameKey: u, passwordKey: p}
    tls: {mode: disabled}
    inspectHost: replica-1.db:3308
    controlReplicas: ["replica-2:3306"]
  table: users
  alter: ALTER TABLE shop.users ADD COLUMN age INT
  execute: false
  copy: {chunkSize: 500, targetChunkTimeMillis: 500, threads: 4, applyThreads: 3, deferSecondaryIndexes: false, skipUncopiedChanges: true, coalesceChanges: false, dmlBatchSize: 50, niceRatio: 0.5}
  throttle:
    paused: true
    maxLagMillis: 2000
    maxLoad: {Threads_running: 25}
    query: SELECT 0
    httpURL: http://gate/throttle
  cutOver: {postpone: true, mode: two-step, lockTimeoutSeconds: 5, retries: 10, oldTable: drop}
  verify: {checksum: false, duringCopy: false}
  hooks:
    webhooks:
      - {url: "https://hooks/a", events: [success, rowcount-complete, before-cut-over],
         secretRef: {name: hook-keys, key: a}}
      - {url: "https://hooks/b"}
"#;

    fn smig(yaml: &str) -> SchemaMigration {
        serde_yaml::from_str(yaml).expect("test manifest")
    }

    fn creds() -> (String, Secret) {
        ("ghost".to_string(), Secret::new("hunter2"))
    }

    fn config(yaml: &str) -> MigrationConfig {
        migration_config(&smig(yaml), creds(), 123_456).expect("config")
    }

    #[test]
    fn minimal_resource_gets_cli_defaults_plus_pod_settings() {
        let cfg = config(MINIMAL);
        let reference = MigrationConfig::new(
            ConnectionConfig::new("x", 3306, "u", Secret::default()),
            "shop",
            "users",
            "",
        );
        assert_eq!(cfg.inspector.host, "mariadb-0.mariadb");
        assert_eq!(cfg.inspector.port, 3306);
        assert_eq!(cfg.inspector.user, "ghost");
        assert_eq!(cfg.inspector.password.expose(), "hunter2");
        assert_eq!(cfg.primary, None);
        assert!(cfg.allow_on_master);
        assert_eq!(cfg.database, "shop");
        assert_eq!(cfg.table, "users");
        assert_eq!(cfg.alter, "ADD COLUMN age INT NOT NULL DEFAULT 0");
        assert!(cfg.execute, "spec.execute defaults to true");
        assert_eq!(cfg.topology, Topology::Normal);
        assert_eq!(cfg.replica_server_id, 123_456);
        assert_eq!(cfg.cut_over, CutOverMode::Atomic);
        assert_eq!(cfg.cut_over_lock_timeout, Duration::from_secs(3));
        assert_eq!(cfg.default_retries, 60);
        assert!(!cfg.ok_to_drop_table);
        assert!(
            cfg.timestamp_old_table,
            "a kept old table must not block the next migration"
        );
        assert!(cfg.checksum, "the checksum gate is on by default");
        assert!(
            cfg.checksum_during_copy,
            "and runs during the copy by default"
        );
        assert_eq!(
            cfg.target_chunk_time,
            Some(Duration::from_millis(250)),
            "adaptive chunks by default"
        );
        assert_eq!(cfg.copy_threads, 1, "a serial copy by default");
        assert_eq!(cfg.apply_threads, 1, "one apply session by default");
        assert_eq!(cfg.checkpoint_interval, Some(CHECKPOINT_INTERVAL));
        assert!(
            !cfg.resume,
            "the pod decides after looking for a checkpoint"
        );
        assert!(cfg.initially_drop_ghost_table);
        assert!(
            !cfg.initially_drop_old_table,
            "an old table is the user's rollback"
        );
        assert!(cfg.hooks.webhooks.is_empty());
        assert_eq!(cfg.hooks.hooks_path, None);
        assert_eq!(cfg.throttle, ThrottleOptions::default());
        // Everything the spec does not speak about stays at gh-ost's default.
        assert_eq!(cfg.heartbeat_interval, reference.heartbeat_interval);
        assert_eq!(cfg.assume_rbr, reference.assume_rbr);
        assert_eq!(cfg.attempt_instant_ddl, reference.attempt_instant_ddl);
        assert_eq!(
            cfg.approve_renamed_columns,
            reference.approve_renamed_columns
        );
        assert_eq!(cfg.use_gtid, reference.use_gtid);
        assert_eq!(cfg.throttle_flag_file, None);
        assert_eq!(cfg.throttle_additional_flag_file, None);
        assert_eq!(cfg.postpone_cut_over_flag_file, None);
        assert_eq!(cfg.panic_flag_file, None);
    }

    #[test]
    fn every_spec_field_is_mapped() {
        let cfg = config(FULL);
        // inspectHost names a replica: inspect it, write on the given primary.
        assert_eq!(cfg.inspector.host, "replica-1.db");
        assert_eq!(cfg.inspector.port, 3308);
        assert_eq!(cfg.inspector.user, "ghost");
        let primary = cfg.primary.as_ref().expect("primary");
        assert_eq!(primary.host, "primary.db");
        assert_eq!(primary.port, 3307);
        assert_eq!(primary.password.expose(), "hunter2");
        assert!(!cfg.allow_on_master);
        // A full ALTER TABLE naming this very table is accepted; only the changes are kept.
        assert_eq!(cfg.alter, "ADD COLUMN age INT");
        assert!(!cfg.execute);
        assert_eq!(cfg.cut_over, CutOverMode::TwoStep);
        assert_eq!(cfg.cut_over_lock_timeout, Duration::from_secs(5));
        assert_eq!(cfg.default_retries, 10);
        assert!(cfg.ok_to_drop_table);
        assert!(!cfg.timestamp_old_table);
        assert!(!cfg.checksum, "verify.checksum: false");
        assert!(!cfg.checksum_during_copy, "verify.duringCopy: false");
        assert_eq!(cfg.target_chunk_time, Some(Duration::from_millis(500)));
        assert_eq!(cfg.copy_threads, 4);
        assert_eq!(cfg.apply_threads, 3);
        assert!(
            !cfg.defer_secondary_indexes,
            "copy.deferSecondaryIndexes: false"
        );
        assert!(cfg.skip_uncopied_changes && !cfg.coalesce_changes);
        let hooks = &cfg.hooks.webhooks;
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks[0].url, "https://hooks/a");
        assert_eq!(
            hooks[0].events,
            vec!["success", "rowcount-complete", "before-cut-over"]
        );
        assert_eq!(hooks[0].secret, None, "attached separately");
        assert_eq!(hooks[1].url, "https://hooks/b");
        assert!(hooks[1].events.is_empty(), "empty: every event");
    }

    #[test]
    fn every_hook_event_maps_to_the_engine_name() {
        let all = [
            (HookEvent::Startup, "startup"),
            (HookEvent::Validated, "validated"),
            (HookEvent::RowcountComplete, "rowcount-complete"),
            (HookEvent::BeforeRowCopy, "before-row-copy"),
            (HookEvent::BatchCopyRetry, "batch-copy-retry"),
            (HookEvent::Status, "status"),
            (HookEvent::RowCopyComplete, "row-copy-complete"),
            (HookEvent::BeforeCutOver, "before-cut-over"),
            (HookEvent::BeginPostponed, "begin-postponed"),
            (HookEvent::Success, "success"),
            (HookEvent::Failure, "failure"),
        ];
        for (event, name) in all {
            assert_eq!(hook_point(event).event_name(), name);
            // The CRD's spelling is the engine's spelling.
            assert_eq!(serde_json::to_value(event).unwrap(), name);
        }
    }

    #[test]
    fn out_of_range_cut_over_values_are_clamped() {
        let mut s = smig(FULL);
        if let Some(c) = s.spec.cut_over.as_mut() {
            c.lock_timeout_seconds = 99;
            c.retries = -4;
        }
        let cfg = migration_config(&s, creds(), 1).unwrap();
        assert_eq!(cfg.cut_over_lock_timeout, Duration::from_secs(10));
        assert_eq!(cfg.default_retries, 1);
    }

    #[test]
    fn inspect_host_forms() {
        let with = |inspect: &str| {
            let mut s = smig(MINIMAL);
            s.spec.connection.port = 3307;
            s.spec.connection.inspect_host = Some(inspect.to_string());
            migration_config(&s, creds(), 1)
        };
        let replica = with("replica-1").unwrap();
        assert_eq!(
            (replica.inspector.host.as_str(), replica.inspector.port),
            ("replica-1", 3307),
            "the port defaults to the primary's"
        );
        assert_eq!(replica.primary.as_ref().map(|p| p.port), Some(3307));
        assert!(!replica.allow_on_master);

        let v6 = with("[fd00::2]:3310").unwrap();
        assert_eq!(
            (v6.inspector.host.as_str(), v6.inspector.port),
            ("fd00::2", 3310)
        );
        let bare = with("fd00::2").unwrap();
        assert_eq!(
            (bare.inspector.host.as_str(), bare.inspector.port),
            ("fd00::2", 3307)
        );
        let bracketed = with("[fd00::2]").unwrap();
        assert_eq!(bracketed.inspector.port, 3307);

        // The primary named as inspectHost, or a blank one, is no replica.
        for same in ["mariadb-0.mariadb", "MariaDB-0.mariadb:3307", "  "] {
            let cfg = with(same).unwrap();
            assert_eq!(cfg.inspector.host, "mariadb-0.mariadb", "{same:?}");
            assert_eq!(cfg.primary, None, "{same:?}");
            assert!(cfg.allow_on_master, "{same:?}");
        }
        // Another port on the same host is another server.
        let other_port = with("mariadb-0.mariadb:3308").unwrap();
        assert!(other_port.primary.is_some());

        for bad in [
            "replica:x",
            "replica:0",
            "replica:70000",
            ":3306",
            "[fd00::2",
            "[]:1",
            "a b",
        ] {
            let err = with(bad).unwrap_err();
            assert_eq!(err, ConfigError::InspectHost(bad.to_string()), "{bad:?}");
            assert!(err.to_string().contains("spec.connection.inspectHost"));
        }
    }

    #[test]
    fn missing_credentials_are_one_line_errors() {
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.to_string())
            }
        }
        let (user, password) =
            credentials_from_env(env(&[(USER_ENV, "ghost"), (PASSWORD_ENV, "hunter2")])).unwrap();
        assert_eq!(user, "ghost");
        assert_eq!(password.expose(), "hunter2");
        let (_, empty) = credentials_from_env(env(&[(USER_ENV, "ghost"), (PASSWORD_ENV, "")]))
            .expect("an empty password is allowed");
        assert_eq!(empty.expose(), "");

        let cases: [(&[(&str, &str)], &str); 4] = [
            (&[], USER_ENV),
            (&[(PASSWORD_ENV, "hunter2")], USER_ENV),
            (&[(USER_ENV, " "), (PASSWORD_ENV, "hunter2")], USER_ENV),
            (&[(USER_ENV, "ghost")], PASSWORD_ENV),
        ];
        for (pairs, missing) in cases {
            let err = credentials_from_env(env(pairs)).unwrap_err();
            assert_eq!(err, ConfigError::MissingCredentials(missing));
            let message = err.to_string();
            assert!(message.starts_with(missing), "{message}");
            assert!(!message.contains('\n'), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }

        let err = migration_config(&smig(MINIMAL), (String::new(), Secret::new("hunter2")), 1)
            .unwrap_err();
        assert_eq!(err, ConfigError::MissingCredentials(USER_ENV));
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let cfg = config(FULL);
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn tls_modes_become_the_engines_tls_settings() {
        for (mode, verify) in [
            (TlsMode::Required, Some(TlsVerify::None)),
            (TlsMode::VerifyCa, Some(TlsVerify::Ca)),
            (TlsMode::VerifyIdentity, Some(TlsVerify::Identity)),
            (TlsMode::Disabled, None),
        ] {
            let mut s = smig(FULL);
            if let Some(tls) = s.spec.connection.tls.as_mut() {
                tls.mode = mode;
                tls.ca_secret_ref =
                    (mode != TlsMode::Disabled).then(|| crate::api::types::SecretKeyRef {
                        name: "db-ca".into(),
                        key: "ca.crt".into(),
                    });
                tls.client_cert_secret_ref =
                    (mode != TlsMode::Disabled).then(|| crate::api::types::SecretRef {
                        name: "client".into(),
                    });
            }
            let cfg = migration_config(&s, creds(), 1).unwrap();
            let tls = cfg.inspector.tls.clone();
            assert_eq!(tls.as_ref().map(|t| t.verify), verify, "{mode:?}");
            if let Some(tls) = tls {
                assert_eq!(tls.ca, Some(Pem::File(tls_files::CA.into())));
                assert!(tls.client.is_some());
            }
        }
    }

    #[test]
    fn a_revert_names_the_old_table_and_has_no_alter() {
        let mut s = smig(MINIMAL);
        s.spec.alter = String::new();
        s.spec.revert = Some(crate::api::types::RevertSpec {
            old_table: "_users_20261122064721_del".into(),
        });
        let cfg = migration_config(&s, creds(), 1).unwrap();
        assert_eq!(
            cfg.revert_from.as_deref(),
            Some("_users_20261122064721_del")
        );
        assert_eq!(cfg.alter, "");
        let plain = migration_config(&smig(MINIMAL), creds(), 1).unwrap();
        assert_eq!(plain.revert_from, None);
    }

    #[test]
    fn bad_port_and_alter_are_refused() {
        let mut s = smig(MINIMAL);
        s.spec.connection.port = 0;
        assert_eq!(
            migration_config(&s, creds(), 1).unwrap_err(),
            ConfigError::Port(0)
        );
        s.spec.connection.port = 65_536;
        assert_eq!(
            migration_config(&s, creds(), 1).unwrap_err(),
            ConfigError::Port(65_536)
        );

        let mut s = smig(MINIMAL);
        s.spec.alter = "   ".into();
        let err = migration_config(&s, creds(), 1).unwrap_err().to_string();
        assert!(err.starts_with("spec.alter: "), "{err}");
        assert!(!err.contains("--alter"), "{err}");

        for other in [
            "ALTER TABLE orders ADD COLUMN x INT",
            "ALTER TABLE other.users ADD COLUMN x INT",
        ] {
            let mut s = smig(MINIMAL);
            s.spec.alter = other.into();
            let err = migration_config(&s, creds(), 1).unwrap_err();
            assert!(
                matches!(&err, ConfigError::AlterTarget { expected, .. } if expected == "shop.users"),
                "{other}: {err}"
            );
        }
        let mut s = smig(MINIMAL);
        s.spec.alter = "ALTER TABLE users DROP COLUMN legacy".into();
        assert_eq!(
            migration_config(&s, creds(), 1).unwrap().alter,
            "DROP COLUMN legacy"
        );
    }

    #[test]
    fn server_id_is_deterministic_and_in_range() {
        let uid = "0b6f3c1e-8d1e-4c55-9a59-1f0a3c0e2d11";
        // Pinned: the id must not change between builds, or an engine upgraded mid-migration
        // would stream under a new id while its predecessor's connection may linger.
        assert_eq!(replica_server_id(uid), 3_191_272_123);
        assert_eq!(replica_server_id(""), 57_956_037);
        let (start, end) = SERVER_ID_RANGE;
        let mut seen = BTreeSet::new();
        for i in 0..20_000u32 {
            let uid = format!(
                "{:08x}-8d1e-4c55-9a59-{:012x}",
                i.wrapping_mul(2_654_435_761),
                i
            );
            let id = replica_server_id(&uid);
            assert!((start..end).contains(&id), "{id}");
            seen.insert(id);
        }
        assert!(seen.len() >= 19_990, "{} distinct ids", seen.len());
        assert_ne!(replica_server_id("a"), replica_server_id("b"));
    }

    #[test]
    fn webhook_secrets_are_attached_by_reference() {
        let s = smig(FULL);
        let refs = crate::api::engine_files::webhook_key_refs(&s.spec);
        assert_eq!(refs.len(), 1);
        assert_eq!(
            (refs[0].name.as_str(), refs[0].key.as_str()),
            ("hook-keys", "a")
        );

        let mut cfg = config(FULL);
        let mut values = SecretValues::new();
        values.insert(("hook-keys".into(), "a".into()), Secret::new("k3y"));
        attach_webhook_secrets(&mut cfg, &s.spec, &values).unwrap();
        assert_eq!(
            cfg.hooks.webhooks[0].secret.as_ref().map(Secret::expose),
            Some("k3y")
        );
        assert_eq!(cfg.hooks.webhooks[1].secret, None);

        let mut cfg = config(FULL);
        let err = attach_webhook_secrets(&mut cfg, &s.spec, &SecretValues::new()).unwrap_err();
        assert!(err.to_string().contains("hook-keys"), "{err}");
        let mut empty = SecretValues::new();
        empty.insert(("hook-keys".into(), "a".into()), Secret::new(""));
        assert!(attach_webhook_secrets(&mut cfg, &s.spec, &empty).is_err());
    }
}
