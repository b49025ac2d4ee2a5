//! The operator's read-only page on its admin port: `/` (one HTML file built into the binary)
//! and `/api/migrations`, every SchemaMigration in the controller's cache with its progress.
//! Changes go through `kubectl ghost` or annotations, never through this port. The port is the
//! one Prometheus scrapes, reachable without Kubernetes RBAC, so the page shows what the metrics
//! already show (names, phases, figures) and not the messages: a failure's message may quote
//! row data (a duplicate key's value). `kubectl ghost status` shows them, under RBAC.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube::ResourceExt;
use serde::Serialize;
use serde_json::json;

use super::server::AdminState;
use crate::api::{MigrationPhase, SchemaMigration};

const PAGE: &str = include_str!("page/index.html");

pub async fn page() -> Response {
    crate::server::page::html(PAGE)
}

/// One row of the page.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRow {
    pub namespace: String,
    pub name: String,
    pub database: String,
    pub table: String,
    pub phase: Option<MigrationPhase>,
    pub percent: Option<f64>,
    pub rows_copied: Option<i64>,
    pub rows_estimate: Option<i64>,
    pub rows_per_second: Option<f64>,
    pub eta_seconds: Option<i64>,
    pub backlog: Option<i64>,
    pub heartbeat_lag_millis: Option<i64>,
    pub replica_lag_millis: Option<i64>,
    pub throttled: bool,
    pub throttle_reason: Option<String>,
    pub start_time: Option<String>,
    pub completion_time: Option<String>,
}

impl MigrationRow {
    pub fn of(smig: &SchemaMigration) -> Self {
        let status = smig.status.as_ref();
        let progress = status.and_then(|s| s.progress.as_ref());
        let throttle = progress.and_then(|p| p.throttle.as_ref());
        let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.map(|t| t.0.to_string())
        };
        Self {
            namespace: smig.namespace().unwrap_or_default(),
            name: smig.name_any(),
            database: smig.spec.connection.database.clone(),
            table: smig.spec.table.clone(),
            phase: status.and_then(|s| s.phase),
            percent: progress.and_then(|p| p.percent),
            rows_copied: progress.and_then(|p| p.rows_copied),
            rows_estimate: progress.and_then(|p| p.rows_estimate),
            rows_per_second: progress.and_then(|p| p.rows_per_second),
            eta_seconds: progress.and_then(|p| p.eta_seconds),
            backlog: progress.and_then(|p| p.backlog),
            heartbeat_lag_millis: progress.and_then(|p| p.heartbeat_lag_millis),
            replica_lag_millis: progress.and_then(|p| p.replica_lag_millis),
            throttled: throttle.is_some_and(|t| t.active),
            throttle_reason: throttle.filter(|t| t.active).and_then(|t| t.reason.clone()),
            start_time: time(status.and_then(|s| s.start_time.as_ref())),
            completion_time: time(status.and_then(|s| s.completion_time.as_ref())),
        }
    }
}

/// `GET /api/migrations`; a standby replica (no controller, so no cache) says where to look.
pub async fn migrations(State(state): State<Arc<AdminState>>) -> Response {
    let Some(store) = state.migrations() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"message": "this replica is a standby: the leader's page lists the migrations (kubectl ghost list -A)"})),
        )
            .into_response();
    };
    let mut rows: Vec<MigrationRow> = store.state().iter().map(|s| MigrationRow::of(s)).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Json(json!({ "migrations": rows })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_has_the_page_fields_in_camel_case() {
        let smig: SchemaMigration = serde_json::from_value(json!({
            "apiVersion": "ghost.dev/v1alpha1",
            "kind": "SchemaMigration",
            "metadata": {"name": "add-age", "namespace": "shop"},
            "spec": {"connection": {"host": "db", "database": "shop",
                                    "credentialsSecretRef": {"name": "db"}},
                     "table": "users", "alter": "ADD COLUMN age INT"},
            "status": {"phase": "Copying", "startTime": "2026-12-06T10:00:00Z",
                       "message": "Duplicate entry 'alice@example.com' for key 'email'",
                       "progress": {"percent": 20.0, "rowsPerSecond": 812.5,
                                    "throttle": {"active": true, "reason": "commanded by user"}}}
        }))
        .unwrap();
        let row = serde_json::to_value(MigrationRow::of(&smig)).unwrap();
        assert_eq!(row["namespace"], "shop");
        assert_eq!(row["phase"], "Copying");
        assert_eq!(row["percent"], 20.0);
        assert_eq!(row["rowsPerSecond"], 812.5);
        assert_eq!(row["throttled"], true);
        assert_eq!(row["throttleReason"], "commanded by user");
        assert_eq!(row["startTime"], "2026-12-06T10:00:00Z");
        assert!(row["etaSeconds"].is_null());
        assert!(row.get("message").is_none(), "messages may quote row data");
    }
}
