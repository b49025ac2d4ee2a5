//! What happens when a SchemaMigration is deleted, before the finalizer `ghost.dev/cleanup` lets
//! it go: stop the engine (delete its Job), wait until its pod has stopped (or the engine already
//! reported a final phase), then drop ghost's tables on the server (the engine's
//! `drop_migration_tables`; the operator speaks no SQL) and let the resource go.
//!
//! The tables are dropped only when this migration ran, and no other started migration of the
//! same table is running: those tables would be the other migration's. When the database cannot
//! be reached, the deletion waits and retries; the annotation `ghost.dev/skip-cleanup: "true"`
//! gives up on the tables (a Warning Event names them). A missing Secret skips the drop with a
//! Warning as well: `kubectl delete -f dir/` often deletes the Secret first, and a deletion that
//! can never finish helps nobody.

use std::time::Duration;

use futures_util::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use tracing::info;

use super::job;
use super::queue::{self, Entry};
use super::reconcile::{Context, Error, PlannedEvent};
use crate::api::types::{CredentialsSecretRef, TlsMode, TlsSpec};
use crate::api::{MigrationPhase, SchemaMigration};
use crate::engine::cleanup::drop_migration_tables;
use crate::engine::conn::{ConnectionConfig, Secret as Password};
use crate::engine::names::TableNames;
use crate::engine::tls::{Pem, TlsConfig, TlsVerify};

pub const FINALIZER: &str = "ghost.dev/cleanup";
/// `"true"`: let the resource go without dropping ghost's tables.
pub const SKIP_CLEANUP: &str = "ghost.dev/skip-cleanup";

/// How long a deletion keeps retrying a database that does not answer.
const CLEANUP_GIVE_UP: Duration = Duration::from_secs(600);

/// Whether the migration carries ghost's finalizer (it got as far as its Job).
pub fn has_finalizer(smig: &SchemaMigration) -> bool {
    smig.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds the finalizer, right before the migration's Job is created: a queued or blocked
/// migration has nothing to clean up, so it carries none and a mass delete of a long queue
/// costs the API server what it costs without an operator. The JSON patch tests the list it
/// read, so a finalizer someone else added meanwhile is not lost (the patch fails; the next
/// reconcile tries again).
pub async fn add_finalizer(
    api: &Api<SchemaMigration>,
    smig: &SchemaMigration,
) -> Result<(), Error> {
    let current = smig.finalizers();
    let operations = if current.is_empty() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ])
    };
    json_patch_of(api, smig, operations).await
}

/// Removes the finalizer once the cleanup is done; the test makes sure the index still holds
/// ours.
pub async fn remove_finalizer(
    api: &Api<SchemaMigration>,
    smig: &SchemaMigration,
) -> Result<(), Error> {
    let Some(index) = smig.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let operations = json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]);
    match json_patch_of(api, smig, operations).await {
        Err(Error::Kube(kube::Error::Api(s))) if s.is_not_found() => Ok(()),
        other => other,
    }
}

async fn json_patch_of(
    api: &Api<SchemaMigration>,
    smig: &SchemaMigration,
    operations: serde_json::Value,
) -> Result<(), Error> {
    let patch: json_patch::Patch = serde_json::from_value(operations)
        .map_err(|e| Error::Cleanup(format!("building the finalizer patch: {e}")))?;
    api.patch(
        &smig.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await?;
    Ok(())
}

/// Lets the controller's per-migration state go (a deleted migration).
pub fn forget(smig: &SchemaMigration, ctx: &Context) {
    if let Some(uid) = smig.uid() {
        ctx.forget(&uid);
    }
    ctx.metrics
        .forget(&smig.namespace().unwrap_or_default(), &smig.name_any());
}

/// How long ago the resource was deleted (zero when it is not being deleted).
fn deleting_for(smig: &SchemaMigration) -> Duration {
    smig.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| {
            let seconds = k8s_openapi::jiff::Timestamp::now().as_second() - t.0.as_second();
            Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
        })
        .unwrap_or_default()
}

/// Connecting and dropping three small tables takes well under this.
const DROP_TIMEOUT: Duration = Duration::from_secs(60);

/// Drops ghost's tables of one table. The engine's function in production, a fake in tests.
pub trait TableCleaner: Send + Sync {
    fn drop_tables(
        &self,
        conn: ConnectionConfig,
        database: String,
        table: String,
    ) -> BoxFuture<'static, Result<Vec<String>, String>>;
}

/// `engine::cleanup::drop_migration_tables`.
pub struct EngineTableCleaner;

impl TableCleaner for EngineTableCleaner {
    fn drop_tables(
        &self,
        conn: ConnectionConfig,
        database: String,
        table: String,
    ) -> BoxFuture<'static, Result<Vec<String>, String>> {
        Box::pin(async move {
            drop_migration_tables(&conn, &database, &table)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// What to do about the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TablePlan {
    Drop,
    /// Leave them; the reason says why (for the log and, when it matters, an Event).
    Leave {
        reason: String,
        warn: bool,
    },
}

/// Pure: whether deleting this migration drops ghost's tables.
pub fn table_plan(
    started: bool,
    succeeded: bool,
    skip_annotation: bool,
    other_active: Option<&Entry>,
    table_text: &str,
) -> TablePlan {
    if !started {
        return TablePlan::Leave {
            reason: format!("the migration never started, so it created no tables on {table_text}"),
            warn: false,
        };
    }
    // The engine drops its own tables after a cut-over; deleting an old finished resource must
    // not need the database (it may be long gone).
    if succeeded {
        return TablePlan::Leave {
            reason: format!("the migration succeeded; the engine cleaned up {table_text}"),
            warn: false,
        };
    }
    if let Some(other) = other_active {
        return TablePlan::Leave {
            reason: format!(
                "{}/{} is migrating {table_text} now; its ghost tables are left alone",
                other.namespace, other.name
            ),
            warn: false,
        };
    }
    if skip_annotation {
        return TablePlan::Leave {
            reason: format!(
                "{SKIP_CLEANUP}=true: ghost's tables of {table_text} are not dropped; drop \
                 them by hand"
            ),
            warn: true,
        };
    }
    TablePlan::Drop
}

/// The finalizer's cleanup. `Err(Error::CleanupPending)` keeps the finalizer and looks again
/// soon; `Ok` lets kube's helper remove the finalizer.
pub async fn cleanup(smig: &SchemaMigration, ctx: &Context) -> Result<Action, Error> {
    let namespace = smig
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = smig.name_any();
    let uid = smig.uid().unwrap_or_default();
    let status = smig.status.as_ref();
    let engine_done = status
        .and_then(|s| s.phase)
        .is_some_and(MigrationPhase::is_terminal)
        || status
            .and_then(|s| s.progress.as_ref())
            .and_then(|p| p.phase)
            .is_some_and(MigrationPhase::is_terminal);
    let spec = &smig.spec;
    let table_text = format!(
        "{}.{} on {}:{}",
        spec.connection.database, spec.table, spec.connection.host, spec.connection.port
    );

    // 1. Stop the engine. Foreground: the Job stays until its pods are gone, so a look at the
    //    Job would also tell; the pods are checked directly below.
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let job_name = job::job_name(&name);
    let job = jobs
        .get_opt(&job_name)
        .await?
        .filter(|j| job::is_owned_by(j, &uid));
    let had_job = job.is_some();
    if job.is_some_and(|j| j.metadata.deletion_timestamp.is_none()) {
        match jobs.delete(&job_name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        if !engine_done {
            ctx.publish(
                smig,
                PlannedEvent::normal(
                    "Cancelling",
                    "StopEngine",
                    format!(
                        "deleting Job {job_name}: the engine stops, then ghost's tables of \
                         {table_text} are dropped"
                    ),
                ),
            )
            .await;
        }
    }

    // 2. Wait until no engine pod runs: dropping the tables under a live engine would fail
    //    its writes, and it could recreate them. Only the Job makes engine pods: with no Job
    //    and no sign of a start there is none to wait for (a mass delete of queued migrations
    //    then costs one read each, not two).
    let started = had_job
        || ctx.started_here(&uid)
        || status
            .is_some_and(|s| s.job.is_some() || s.start_time.is_some() || s.progress.is_some());
    if !engine_done && started {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let listed = pods
            .list(&ListParams::default().labels(&job::migration_selector(&name)))
            .await?;
        let running: Vec<String> = listed
            .items
            .iter()
            .filter(|p| !pod_stopped(p))
            .map(ResourceExt::name_any)
            .collect();
        if !running.is_empty() {
            return Err(Error::CleanupPending(format!(
                "engine pod(s) {} still running",
                running.join(", ")
            )));
        }
    }

    // 3. The tables.
    let skip = smig
        .annotations()
        .get(SKIP_CLEANUP)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let me = Entry::from_migration(smig, false);
    let entries = ctx.queue_entries(smig);
    let other = queue::active_on_same_table(&me, &entries);
    let succeeded = status.and_then(|s| s.phase) == Some(MigrationPhase::Succeeded);
    match table_plan(started, succeeded, skip, other, &table_text) {
        TablePlan::Leave { reason, warn } => {
            info!("deleted; {reason}");
            if warn {
                ctx.publish(
                    smig,
                    PlannedEvent::warning("CleanupSkipped", "DropTables", reason),
                )
                .await;
            }
        }
        TablePlan::Drop => drop_tables(smig, ctx, &namespace, &table_text).await?,
    }

    forget(smig, ctx);
    Ok(Action::await_change())
}

async fn drop_tables(
    smig: &SchemaMigration,
    ctx: &Context,
    namespace: &str,
    table_text: &str,
) -> Result<(), Error> {
    let spec = &smig.spec;
    let credentials = &spec.connection.credentials_secret_ref;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = secrets.get_opt(&credentials.name).await?;
    let tls = tls_from_secrets(&secrets, spec.connection.tls.as_ref()).await;
    let conn = match connection(
        secret.as_ref(),
        credentials,
        &spec.connection.host,
        spec.connection.port,
    )
    .and_then(|conn| Ok(conn.with_tls(tls?)))
    {
        Ok(conn) => conn,
        Err(why) => {
            let names = TableNames::new(&spec.table, None, None);
            ctx.publish(
                smig,
                PlannedEvent::warning(
                    "CleanupSkipped",
                    "DropTables",
                    format!(
                        "{why}: cannot log in to drop ghost's tables of {table_text}; drop \
                         {}, {}, {} (and {} if its comment is the cut-over sentry's) by hand",
                        names.ghost, names.changelog, names.checkpoint, names.old
                    ),
                ),
            )
            .await;
            return Ok(());
        }
    };

    let dropping =
        ctx.cleaner
            .drop_tables(conn, spec.connection.database.clone(), spec.table.clone());
    let outcome = match tokio::time::timeout(DROP_TIMEOUT, dropping).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {}s", DROP_TIMEOUT.as_secs())),
    };
    match outcome {
        Ok(dropped) => {
            let note = if dropped.is_empty() {
                format!("no ghost tables of {table_text} were left")
            } else {
                format!(
                    "dropped {} of {}",
                    dropped.join(", "),
                    spec.connection.database
                )
            };
            info!("{note}");
            ctx.publish(smig, PlannedEvent::normal("CleanedUp", "DropTables", note))
                .await;
            Ok(())
        }
        Err(e) if deleting_for(smig) >= CLEANUP_GIVE_UP => {
            // A server that has not answered for this long (or never existed): the deletion
            // must end some time; the tables, if any, are named for the user.
            let names = TableNames::new(&spec.table, None, None);
            let message = format!(
                "could not drop ghost's tables of {table_text} for {} minutes ({e}); giving up: \
                 drop {}, {} and {} by hand if they exist",
                CLEANUP_GIVE_UP.as_secs() / 60,
                names.ghost,
                names.changelog,
                names.checkpoint
            );
            ctx.publish(
                smig,
                PlannedEvent::warning("CleanupAbandoned", "DropTables", message.clone()),
            )
            .await;
            info!("{message}");
            Ok(())
        }
        Err(e) => {
            let message = format!(
                "dropping ghost's tables of {table_text} failed: {e}; retrying (for up to {} \
                 minutes after the deletion). To give up now, annotate {SKIP_CLEANUP}=true",
                CLEANUP_GIVE_UP.as_secs() / 60
            );
            ctx.publish(
                smig,
                PlannedEvent::warning("CleanupFailed", "DropTables", message.clone()),
            )
            .await;
            Err(Error::Cleanup(message))
        }
    }
}

/// The same TLS as the engine's (`spec.connection.tls`), from the Secrets' contents: the
/// operator connects from its own pod, where they are not mounted.
async fn tls_from_secrets(
    secrets: &Api<Secret>,
    tls: Option<&TlsSpec>,
) -> Result<Option<TlsConfig>, String> {
    let Some(tls) = tls else {
        return Ok(None);
    };
    let verify = match tls.mode {
        TlsMode::Disabled => return Ok(None),
        TlsMode::Required => TlsVerify::None,
        TlsMode::VerifyCa => TlsVerify::Ca,
        TlsMode::VerifyIdentity => TlsVerify::Identity,
    };
    let key_of = async |name: &str, key: &str| -> Result<Vec<u8>, String> {
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|e| format!("reading Secret {name}: {e}"))?
            .ok_or_else(|| format!("Secret {name} not found"))?;
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .ok_or_else(|| format!("Secret {name} has no key {key}"))
    };
    let ca = match &tls.ca_secret_ref {
        Some(r) => Some(Pem::Inline(key_of(&r.name, &r.key).await?)),
        None => None,
    };
    let client = match &tls.client_cert_secret_ref {
        Some(r) => Some((
            Pem::Inline(key_of(&r.name, "tls.crt").await?),
            Pem::Inline(key_of(&r.name, "tls.key").await?),
        )),
        None => None,
    };
    Ok(Some(TlsConfig { ca, client, verify }))
}

/// The login from the Secret. Errors say what is missing, never a value.
fn connection(
    secret: Option<&Secret>,
    credentials: &CredentialsSecretRef,
    host: &str,
    port: i32,
) -> Result<ConnectionConfig, String> {
    let secret = secret.ok_or_else(|| format!("Secret {} not found", credentials.name))?;
    let value = |key: &str| -> Result<String, String> {
        if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return String::from_utf8(bytes.0.clone())
                .map_err(|_| format!("key {key} of Secret {} is not UTF-8", credentials.name));
        }
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
            .ok_or_else(|| format!("Secret {} has no key {key}", credentials.name))
    };
    let user = value(&credentials.username_key)?;
    let password = value(&credentials.password_key)?;
    let port = u16::try_from(port).map_err(|_| format!("port {port} is out of range"))?;
    Ok(ConnectionConfig::new(
        host,
        port,
        user,
        Password::new(password),
    ))
}

/// A pod that has finished (or never will run again) no longer touches the tables.
fn pod_stopped(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::PodStatus;

    use super::*;

    fn credentials() -> CredentialsSecretRef {
        CredentialsSecretRef {
            name: "shop-db".into(),
            username_key: "user".into(),
            password_key: "pw".into(),
        }
    }

    #[test]
    fn a_deletion_knows_how_long_it_has_waited() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut smig: SchemaMigration = serde_yaml::from_str(
            "apiVersion: ghost.dev/v1alpha1\nkind: SchemaMigration\nmetadata: {name: m}\n\
             spec: {connection: {host: db, database: d, credentialsSecretRef: {name: s}}, table: t, alter: ADD COLUMN a INT}\n",
        )
        .expect("manifest");
        assert_eq!(deleting_for(&smig), Duration::ZERO);
        let eleven_minutes_ago = k8s_openapi::jiff::Timestamp::now().as_second() - 660;
        smig.metadata.deletion_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(eleven_minutes_ago).expect("time"),
        ));
        assert!(deleting_for(&smig) >= CLEANUP_GIVE_UP);
    }

    #[test]
    fn tables_are_dropped_only_by_the_migration_that_made_them() {
        assert_eq!(
            table_plan(true, false, false, None, "shop.users"),
            TablePlan::Drop
        );
        assert!(matches!(
            table_plan(false, false, false, None, "shop.users"),
            TablePlan::Leave { warn: false, .. }
        ));
        assert!(matches!(
            table_plan(true, true, false, None, "shop.users"),
            TablePlan::Leave { warn: false, .. }
        ));
        let other = Entry {
            namespace: "shop".into(),
            name: "add-email".into(),
            created: 0,
            host: "db:3306".into(),
            database: "shop".into(),
            table: "users".into(),
            slot: queue::Slot::Active,
        };
        match table_plan(true, false, false, Some(&other), "shop.users") {
            TablePlan::Leave { reason, warn } => {
                assert!(reason.contains("shop/add-email"), "{reason}");
                assert!(!warn);
            }
            TablePlan::Drop => panic!("another migration's tables were dropped"),
        }
        assert!(matches!(
            table_plan(true, false, true, None, "shop.users"),
            TablePlan::Leave { warn: true, .. }
        ));
    }

    #[test]
    fn login_from_the_secret() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("user".to_string(), ByteString(b"ghost".to_vec())),
                ("pw".to_string(), ByteString(b"s3cret".to_vec())),
            ])),
            ..Secret::default()
        };
        let conn = connection(Some(&secret), &credentials(), "db", 3307).unwrap();
        assert_eq!(conn.endpoint(), "db:3307");
        assert_eq!(conn.user, "ghost");
        assert_eq!(conn.password.expose(), "s3cret");

        let err = connection(None, &credentials(), "db", 3306).unwrap_err();
        assert_eq!(err, "Secret shop-db not found");
        let partial = Secret {
            data: Some(BTreeMap::from([(
                "user".to_string(),
                ByteString(b"ghost".to_vec()),
            )])),
            ..Secret::default()
        };
        let err = connection(Some(&partial), &credentials(), "db", 3306).unwrap_err();
        assert_eq!(err, "Secret shop-db has no key pw");
        assert!(!err.contains("ghost"), "no values in messages");
    }

    #[test]
    fn finished_pods_count_as_stopped() {
        let pod = |phase: Option<&str>| Pod {
            status: Some(PodStatus {
                phase: phase.map(str::to_string),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert!(pod_stopped(&pod(Some("Failed"))));
        assert!(pod_stopped(&pod(Some("Succeeded"))));
        assert!(!pod_stopped(&pod(Some("Running"))));
        assert!(!pod_stopped(&pod(None)));
    }
}
