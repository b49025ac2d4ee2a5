//! The Kubernetes controller, `ghost operator` (DESIGN.md §3): a kube-runtime Controller over
//! SchemaMigrations that owns one engine Job per resource.
//!
//! - `reconcile`: one reconcile (finalizer, Job, status, Events).
//! - `context`: the controller's shared state (`Context`) and the Events it publishes.
//! - `job`: the engine Job built from the resource (pure), and the Job's state read back.
//! - `queue`: which migrations may start: one per table, a cap per host (pure).
//! - `policy`: the images, ServiceAccounts, placement and Secrets a spec may use (pure).
//! - `engine_secrets`: the Secrets an engine is given exist, have their keys, are opted in.
//! - `finalizer`: deletion: stop the engine, then drop ghost's tables (through the engine).
//! - `metrics`, `server`: `/metrics`, `/healthz`, `/readyz`.
//! - `leader`: Lease-based leader election; only the leader runs the Controller.
//! - `memory`: what deleted migrations leave behind, let go (state, metric series, pages).
//! - `start_check`: why an engine Job's pod does not start.
//! - `watch_health`: a short watch backoff, and whether the watches work (for `/readyz`).
//!
//! The controller speaks no SQL and never writes `.status.progress` (the engine pod's field).

pub mod context;
pub mod engine_secrets;
pub mod finalizer;
pub mod job;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod next_step;
pub mod page;
pub mod policy;
pub mod queue;
pub mod reconcile;
pub mod server;
pub mod start_check;
pub mod watch_health;

#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{self, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

pub use finalizer::{EngineTableCleaner, FINALIZER, SKIP_CLEANUP, TableCleaner};
pub use job::{EngineDefaults, build_job, job_name};
pub use leader::{LeaderElector, LeaseSettings};
pub use metrics::Metrics;
pub use reconcile::{Context, Error, FIELD_MANAGER, error_policy, reconcile};
pub use server::AdminState;

use crate::api::SchemaMigration;

/// Reconciles at once. Unbounded, a thousand migrations created or deleted together meant a
/// thousand requests in flight, each with its buffers: the operator's memory grew to several
/// times its idle size. A reconcile is a few API calls, so this many keep up with bulk changes.
const MAX_CONCURRENT_RECONCILES: u16 = 32;

/// In-flight reconciles get this long to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// `ghost operator`'s settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// Watch one namespace; `None`: all of them.
    pub namespace: Option<String>,
    /// Image and service account of engine pods whose spec names none.
    pub engine: EngineDefaults,
    /// Migrations running at once per database server.
    pub max_per_host: usize,
    /// Run the controller only while holding the Lease.
    pub leader_elect: bool,
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica (its pod name): the Lease holder and the Events' reporting instance.
    pub identity: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot set up the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error(
        "cannot list SchemaMigrations: {0}. Is the CRD installed? \
         ghost crd | kubectl apply --server-side -f -"
    )]
    CrdMissing(#[source] kube::Error),
    #[error("cannot serve on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("lost the leader lease; exiting so that this pod restarts as a candidate")]
    LostLease,
    #[error("the controller stopped unexpectedly")]
    ControllerEnded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Signal,
    LostLease,
    ControllerEnded,
}

/// Runs the operator until SIGTERM/SIGINT (Ok) or until it cannot go on (Err).
pub async fn run(config: OperatorConfig) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let metrics = Arc::new(Metrics::new());
    let admin = Arc::new(AdminState::new(metrics.clone()));
    let listener = server::bind(config.metrics_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.metrics_addr,
            source,
        })?;
    let server_task = {
        let admin = admin.clone();
        tokio::spawn(async move {
            if let Err(e) = server::serve(listener, admin).await {
                warn!("the admin server stopped: {e}");
            }
        })
    };

    let migrations: Api<SchemaMigration> = scoped(&client, config.namespace.as_deref());
    // Fail fast with a hint instead of a watch that retries forever.
    migrations
        .list(&ListParams::default().limit(1))
        .await
        .map_err(RunError::CrdMissing)?;
    info!(
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        max_per_host = config.max_per_host,
        engine_image = %config.engine.image,
        "ghost operator starting"
    );

    let mut shutdown = pin!(shutdown_signal());
    let elector = config.leader_elect.then(|| {
        LeaderElector::new(
            client.clone(),
            LeaseSettings::new(
                &config.lease_namespace,
                &config.lease_name,
                &config.identity,
            ),
        )
    });
    if let Some(elector) = &elector {
        // A standby replica is ready: it does what it should, waiting.
        admin.set_ready(true);
        tokio::select! {
            () = elector.acquire() => {}
            () = &mut shutdown => {
                server_task.abort();
                return Ok(());
            }
        }
        admin.set_ready(false);
    }
    metrics.set_leader(true);

    let jobs: Api<Job> = scoped(&client, config.namespace.as_deref());
    // No generation predicate: annotation changes (the controls) do not bump the generation.
    // The cache holds every SchemaMigration without its managedFields, which nothing here
    // reads: with a thousand queued migrations they were most of the operator's memory.
    let (store, writer) = reflector::store::<SchemaMigration>();
    let migration_events = watcher(migrations, watcher::Config::default().any_semantic())
        .modify(|smig| smig.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(migration_events, store.clone())
        .with_config(controller::Config::default().concurrency(MAX_CONCURRENT_RECONCILES))
        .owns(jobs, watcher::Config::default().labels(job::JOB_SELECTOR))
        .trigger_backoff(watch_health::WatchBackoff::default());
    let ctx = Arc::new(Context::new(
        client.clone(),
        &config.identity,
        store.clone(),
        metrics.clone(),
        config.engine.clone(),
        config.max_per_host,
        Arc::new(EngineTableCleaner),
    ));
    admin.set_migrations(store);
    let memory_task = tokio::spawn(memory::let_go_of_deleted(ctx.clone()));
    // Ready once the leader runs the controller: the API answered the list above, and the
    // controller itself holds reconciles until its cache is synced. (Waiting on a reader copy of
    // the store never completed against a real API server, so /readyz stayed 503.)
    admin.set_ready(true);

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let queue_moves = ctx.queue_moves();
    let watch_admin = admin.clone();
    let mut controller_run = pin!(
        controller
            .reconcile_all_on(queue_moves)
            .graceful_shutdown_on(async move {
                let _ = stop_rx.await;
            })
            .run(reconcile, error_policy, ctx)
            .for_each(|result| {
                if matches!(result, Err(controller::Error::QueueError(_))) {
                    watch_admin.watches.failed();
                }
                async move {
                    match result {
                        Ok((object, _)) => debug!(%object, "reconciled"),
                        // error_policy has logged it.
                        Err(controller::Error::ReconcilerFailed(..)) => {}
                        // A deleted object's queued reconcile: expected.
                        Err(controller::Error::ObjectNotFound(object)) => {
                            debug!(%object, "gone before its reconcile");
                        }
                        Err(e) => warn!("controller: {e}"),
                    }
                }
            })
    );
    let lease_lost = async {
        match &elector {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = &mut controller_run => Outcome::ControllerEnded,
        () = lease_lost => Outcome::LostLease,
        () = &mut shutdown => Outcome::Signal,
    };
    info!(?outcome, "stopping the controller");
    let _ = stop_tx.send(());
    if outcome != Outcome::ControllerEnded
        && tokio::time::timeout(SHUTDOWN_GRACE, controller_run)
            .await
            .is_err()
    {
        warn!(
            "reconciles still running after {}s; stopping anyway",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    metrics.set_leader(false);
    admin.set_ready(false);

    let result = match outcome {
        Outcome::Signal => Ok(()),
        Outcome::LostLease => {
            admin.set_healthy(false);
            Err(RunError::LostLease)
        }
        Outcome::ControllerEnded => {
            admin.set_healthy(false);
            Err(RunError::ControllerEnded)
        }
    };
    // Let the next leader start at once rather than after the lease expires.
    if let Some(elector) = elector.as_ref().filter(|_| outcome != Outcome::LostLease) {
        if let Err(e) = elector.release().await {
            warn!("releasing the lease: {e}");
        }
    }
    memory_task.abort();
    server_task.abort();
    result
}

/// An Api over one namespace, or over all of them.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// SIGTERM (the kubelet) or SIGINT (a terminal).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            warn!("cannot listen for SIGTERM ({e}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
