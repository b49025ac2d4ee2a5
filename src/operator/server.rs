//! The operator's admin port: `/metrics` (OpenMetrics text), `/healthz` (liveness), `/readyz`
//! (readiness), and the read-only page of every migration (`/`, `page`).
//!
//! Liveness fails once the controller has stopped for good (lost its lease, its watch ended), so
//! the kubelet restarts the pod. Readiness turns true once this replica has taken its role: the
//! leader when its cache is filled, a standby replica as soon as it waits for the lease; it is
//! false again while the controller's watches fail (`watch_health`).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::runtime::reflector::Store;
use tokio::net::TcpListener;
use tracing::info;

use super::metrics::{CONTENT_TYPE, Metrics};
use super::page;
use super::watch_health::WatchHealth;
use crate::api::SchemaMigration;

/// What the admin endpoints report.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub watches: WatchHealth,
    ready: AtomicBool,
    healthy: AtomicBool,
    /// The controller's cache, once this replica leads.
    migrations: OnceLock<Store<SchemaMigration>>,
}

impl AdminState {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            watches: WatchHealth::default(),
            ready: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            migrations: OnceLock::new(),
        }
    }

    pub fn set_migrations(&self, store: Store<SchemaMigration>) {
        let _ = self.migrations.set(store);
    }

    pub fn migrations(&self) -> Option<&Store<SchemaMigration>> {
        self.migrations.get()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/", get(page::page))
        .route("/api/migrations", get(page::migrations))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Binds first, so a taken port fails the start instead of a background task.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!(address = %addr, "serving /metrics, /healthz, /readyz and the page at /");
    Ok(listener)
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>) -> io::Result<()> {
    axum::serve(listener, router(state)).await
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz(State(state): State<Arc<AdminState>>) -> (StatusCode, &'static str) {
    if state.is_healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller has stopped\n",
        )
    }
}

async fn readyz(State(state): State<Arc<AdminState>>) -> (StatusCode, &'static str) {
    if !state.watches.is_healthy() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: watching the API server fails\n",
        )
    } else if state.is_ready() && state.is_healthy() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_and_readiness() {
        let state = Arc::new(AdminState::new(Arc::new(Metrics::new())));
        assert_eq!(healthz(State(state.clone())).await.0, StatusCode::OK);
        assert_eq!(
            readyz(State(state.clone())).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.set_ready(true);
        assert_eq!(readyz(State(state.clone())).await.0, StatusCode::OK);
        state.set_healthy(false);
        assert_eq!(
            healthz(State(state.clone())).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            readyz(State(state.clone())).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let state = Arc::new(AdminState::new(Arc::new(Metrics::new())));
        state.metrics.set_leader(true);
        let response = metrics(State(state)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }

    #[tokio::test]
    async fn serves_on_a_port() {
        let state = Arc::new(AdminState::new(Arc::new(Metrics::new())));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, state));
        let body = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok\n");
        server.abort();
    }
}
