//! The HTTP front end: a small JSON API over the same command functions as the socket, plus
//! `/metrics` and `/healthz`.
//!
//! - `GET  /api/status`: identity, progress and the effective controls, as JSON.
//! - `POST /api/throttle`, `/api/no-throttle`, `/api/unpostpone`, `/api/panic`: the commands;
//!   `?table=<name>` names the table (required for unpostpone/panic with
//!   `--force-named-cut-over` / `--force-named-panic`).
//! - `GET  /api/controls`, `PUT /api/controls`: read or change any subset of the controls.
//! - `GET  /metrics`, `GET /healthz`.
//!
//! Answers to actions are `{"ok": bool, "message": "..."}`; refusals use 4xx codes.
//!
//! - `GET  /` and `/api/events`: the live page and its server-sent events (`page`).
//!
//! Access ([`HttpAccess`]): with a token, every endpoint but `/healthz` and the page itself wants
//! `Authorization: Bearer <token>` (compared in constant time); `ghost migrate` requires one for
//! any address that is not loopback. `throttleQuery` (SQL run on the primary with ghost's
//! grants) cannot be set over HTTP unless allowed. A browser's request from another site (its
//! `Origin` names another host than `Host`) is refused, so a page elsewhere cannot steer a
//! migration through a browser that has this one open.

use std::io;
use std::net::SocketAddr;

use axum::body::Bytes;
use std::sync::Arc;

use axum::extract::{FromRef, Query, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::info;

use super::commands::{self, CommandError, Setting};
use super::{ControlPlane, metrics, page};
use crate::engine::controls::Controls;
use crate::engine::progress::{Phase, Progress, ThrottleState};

/// JSON field of `PUT /api/controls` → interactive setting name.
pub const CONTROL_FIELDS: [(&str, &str); 9] = [
    ("chunkSize", "chunk-size"),
    ("dmlBatchSize", "dml-batch-size"),
    ("maxLagMillis", "max-lag-millis"),
    ("niceRatio", "nice-ratio"),
    ("maxLoad", "max-load"),
    ("criticalLoad", "critical-load"),
    ("throttleQuery", "throttle-query"),
    ("throttleHttp", "throttle-http"),
    ("throttleControlReplicas", "throttle-control-replicas"),
];

/// The JSON field for an interactive setting name (`chunk-size` → `chunkSize`).
pub fn json_field(setting: &str) -> Option<&'static str> {
    CONTROL_FIELDS
        .iter()
        .find(|(_, name)| *name == setting)
        .map(|(field, _)| *field)
}

fn setting_name(field: &str) -> Option<&'static str> {
    CONTROL_FIELDS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, name)| *name)
}

/// `GET /api/status`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub database: String,
    pub table: String,
    pub elapsed_seconds: u64,
    /// gh-ost's one-line status, as `sup` prints it.
    pub status_line: String,
    pub progress: ProgressView,
    pub controls: ControlsView,
}

/// Progress in the same camelCase shape as a SchemaMigration's `.status.progress`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressView {
    pub phase: Phase,
    pub percent: f64,
    pub rows_copied: u64,
    pub rows_estimate: u64,
    pub rows_per_second: f64,
    pub eta_seconds: Option<u64>,
    pub events_applied: u64,
    pub backlog: u64,
    pub heartbeat_lag_millis: Option<u64>,
    pub replica_lag_millis: Option<u64>,
    pub throttle: ThrottleState,
    pub cut_over: CutOverView,
    pub applied_position: Option<String>,
    /// TLS version and cipher of the engine's sessions; null in clear text.
    pub tls: Option<String>,
    pub message: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CutOverView {
    pub attempts: u32,
    pub lock_millis: Option<u64>,
}

impl From<&Progress> for ProgressView {
    fn from(p: &Progress) -> Self {
        Self {
            phase: p.phase,
            percent: p.percent(),
            rows_copied: p.rows_copied,
            rows_estimate: p.rows_estimate,
            rows_per_second: p.rows_per_second,
            eta_seconds: p.eta_seconds,
            events_applied: p.events_applied,
            backlog: p.backlog,
            heartbeat_lag_millis: p.heartbeat_lag_millis,
            replica_lag_millis: p.replica_lag_millis,
            throttle: p.throttle.clone(),
            cut_over: CutOverView {
                attempts: p.cut_over_attempts,
                lock_millis: p.cut_over_lock_millis,
            },
            applied_position: p.applied_position.as_ref().map(ToString::to_string),
            tls: p.tls.clone(),
            message: p.message.clone(),
        }
    }
}

/// The effective controls; field names match `PUT /api/controls`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlsView {
    pub throttle: bool,
    pub postpone_cut_over: bool,
    pub cut_over_requested: bool,
    pub panic: bool,
    pub chunk_size: u64,
    pub dml_batch_size: usize,
    pub max_lag_millis: u64,
    pub nice_ratio: f64,
    pub max_load: String,
    pub critical_load: String,
    pub throttle_query: Option<String>,
    pub throttle_http: Option<String>,
    pub throttle_control_replicas: Vec<String>,
}

impl From<&Controls> for ControlsView {
    fn from(c: &Controls) -> Self {
        Self {
            throttle: c.throttle,
            postpone_cut_over: c.postpone_cut_over,
            cut_over_requested: c.cut_over_requested,
            panic: c.panic,
            chunk_size: c.chunk_size,
            dml_batch_size: c.dml_batch_size,
            max_lag_millis: u64::try_from(c.max_lag.as_millis()).unwrap_or(u64::MAX),
            nice_ratio: c.nice_ratio,
            max_load: commands::format_loads(&c.max_load),
            critical_load: commands::format_loads(&c.critical_load),
            throttle_query: c.throttle_query.clone(),
            throttle_http: c.throttle_http.clone(),
            throttle_control_replicas: c.throttle_control_replicas.clone(),
        }
    }
}

pub fn status_view(plane: &ControlPlane) -> StatusView {
    let progress = plane.progress_snapshot();
    let elapsed = plane.identity.started.elapsed();
    StatusView {
        database: plane.identity.database.clone(),
        table: plane.identity.table.clone(),
        elapsed_seconds: elapsed.as_secs(),
        status_line: commands::status_line(&progress, elapsed),
        progress: ProgressView::from(&progress),
        controls: ControlsView::from(&plane.controls_snapshot()),
    }
}

/// Who may use the HTTP API, and what over it.
#[derive(Clone, Debug, Default)]
pub struct HttpAccess {
    /// When set, clients must send `Authorization: Bearer <token>`.
    pub token: Option<Arc<str>>,
    /// `PUT /api/controls` may set `throttleQuery`, which runs SQL on the primary.
    pub allow_sql: bool,
}

/// The router's state: the migration's controls and the access rules.
#[derive(Clone)]
struct ApiState {
    plane: ControlPlane,
    access: HttpAccess,
}

impl FromRef<ApiState> for ControlPlane {
    fn from_ref(state: &ApiState) -> Self {
        state.plane.clone()
    }
}

/// Equal in time that does not depend on where the values differ: both sides are hashed first,
/// so the comparison always covers 32 bytes.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Browsers send `Origin` with every cross-site POST, PUT and fetch; curl and `ghost ctl` send
/// none. A request whose origin is not this server's own is refused.
async fn same_origin_only(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = origin
        && !same_origin(origin, host)
    {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"ok": false, "message": format!("a request from {origin} (another site) is refused: use this server's own page, ghost ctl or curl")})),
        )
            .into_response();
    }
    next.run(request).await
}

/// `Origin: http://HOST[:PORT]` names the server the request went to.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(token) = state.access.token.as_deref() else {
        return next.run(request).await;
    };
    // The health check, and the page itself (it holds no data and asks for the token).
    if matches!(request.uri().path(), "/healthz" | "/") {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same_secret(given.as_bytes(), token.as_bytes()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"ok": false, "message": "send the token of --http-token-file as Authorization: Bearer <token>"})),
    )
        .into_response()
}

pub fn router(plane: ControlPlane) -> Router {
    router_with(plane, HttpAccess::default())
}

pub fn router_with(plane: ControlPlane, access: HttpAccess) -> Router {
    let state = ApiState { plane, access };
    Router::new()
        .route("/", get(page::page))
        .route("/api/events", get(page::events))
        .route("/api/status", get(get_status))
        .route("/api/throttle", post(post_throttle))
        .route("/api/no-throttle", post(post_no_throttle))
        .route("/api/unpostpone", post(post_unpostpone))
        .route("/api/panic", post(post_panic))
        .route("/api/controls", get(get_controls).put(put_controls))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn(same_origin_only))
        .with_state(state)
}

/// Binds `addr` and serves until the task is aborted.
pub async fn serve_http(
    addr: SocketAddr,
    plane: ControlPlane,
    access: HttpAccess,
) -> io::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    serve_http_listener_with(listener, plane, access).await
}

/// Serves on an already bound listener, without a token and without SQL controls.
pub async fn serve_http_listener(listener: TcpListener, plane: ControlPlane) -> io::Result<()> {
    serve_http_listener_with(listener, plane, HttpAccess::default()).await
}

pub async fn serve_http_listener_with(
    listener: TcpListener,
    plane: ControlPlane,
    access: HttpAccess,
) -> io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(
            address = %addr,
            token = access.token.is_some(),
            sql_controls = access.allow_sql,
            "serving the HTTP API"
        );
    }
    axum::serve(listener, router_with(plane, access)).await
}

#[derive(Debug, Default, Deserialize)]
struct TableParam {
    #[serde(default)]
    table: String,
}

async fn get_status(State(plane): State<ControlPlane>) -> Json<StatusView> {
    Json(status_view(&plane))
}

async fn get_controls(State(plane): State<ControlPlane>) -> Json<ControlsView> {
    Json(ControlsView::from(&plane.controls_snapshot()))
}

async fn post_throttle(State(plane): State<ControlPlane>, Query(p): Query<TableParam>) -> Response {
    answer(commands::set_throttle(&plane, &p.table, true))
}

async fn post_no_throttle(
    State(plane): State<ControlPlane>,
    Query(p): Query<TableParam>,
) -> Response {
    answer(commands::set_throttle(&plane, &p.table, false))
}

async fn post_unpostpone(
    State(plane): State<ControlPlane>,
    Query(p): Query<TableParam>,
) -> Response {
    answer(commands::unpostpone(&plane, &p.table))
}

async fn post_panic(State(plane): State<ControlPlane>, Query(p): Query<TableParam>) -> Response {
    answer(commands::panic(&plane, &p.table))
}

async fn put_controls(State(state): State<ApiState>, body: Bytes) -> Response {
    let plane = state.plane;
    if !state.access.allow_sql && sets_sql_control(&body) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({
                "ok": false,
                "message": "throttleQuery runs SQL on the primary with ghost's grants: it cannot be set over HTTP unless ghost runs with --http-allow-sql (use the unix socket instead)"
            })),
        )
            .into_response();
    }
    match apply_patch(&plane, &body) {
        Ok(message) => Json(json!({
            "ok": true,
            "message": message,
            "controls": ControlsView::from(&plane.controls_snapshot()),
        }))
        .into_response(),
        Err(e) => error_response(&e),
    }
}

async fn get_metrics(State(plane): State<ControlPlane>) -> Response {
    let body = metrics::render(&plane.progress_snapshot(), &plane.identity);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found(method: Method, uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"ok": false, "message": format!("no such endpoint: {method} {uri}")})),
    )
        .into_response()
}

fn answer(result: Result<String, CommandError>) -> Response {
    match result {
        Ok(message) => Json(json!({"ok": true, "message": message})).into_response(),
        Err(e) => error_response(&e),
    }
}

fn error_response(error: &CommandError) -> Response {
    let status = match error {
        CommandError::Unknown(_) => StatusCode::NOT_FOUND,
        CommandError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
        CommandError::Refused(_) => StatusCode::CONFLICT,
        CommandError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (
        status,
        Json(json!({"ok": false, "message": error.to_string()})),
    )
        .into_response()
}

/// The body sets a control that runs SQL.
fn sets_sql_control(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.contains_key("throttleQuery")))
        .unwrap_or(false)
}

/// `PUT /api/controls`: parses every field first and changes nothing unless all are valid.
/// Values go through the interactive commands' parsers, so clamping and refusals are identical.
pub fn apply_patch(plane: &ControlPlane, body: &[u8]) -> Result<String, CommandError> {
    let bad_body = |message: String| CommandError::InvalidArgument {
        command: "request body".into(),
        message,
    };
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad_body(format!("not JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(bad_body("expected a JSON object of controls".into()));
    };
    if fields.is_empty() {
        return Err(bad_body("no controls given".into()));
    }
    let mut settings = Vec::new();
    let mut throttle = None;
    let mut postpone = None;
    let mut table = String::new();
    for (field, value) in &fields {
        match field.as_str() {
            "throttle" => throttle = Some(as_bool(field, value)?),
            "postponeCutOver" => postpone = Some(as_bool(field, value)?),
            "table" => {
                table = value
                    .as_str()
                    .ok_or_else(|| bad_body("table must be a string".into()))?
                    .to_string();
            }
            _ => {
                let name = setting_name(field).ok_or_else(|| {
                    let known: Vec<&str> = CONTROL_FIELDS.iter().map(|(f, _)| *f).collect();
                    bad_body(format!(
                        "unknown control {field:?}; known: {}, throttle, postponeCutOver, table",
                        known.join(", ")
                    ))
                })?;
                settings.push(Setting::parse(name, &argument_text(name, value)?)?);
            }
        }
    }
    if !table.is_empty() && table != plane.identity.table {
        return Err(CommandError::Refused(format!(
            "user commanded a controls change on {table}, but migrated table is {}; ignoring request",
            plane.identity.table
        )));
    }
    let mut changed: Vec<String> = settings.iter().map(|s| s.name().to_string()).collect();
    // Unpostponing may fail (named cut-over, flag file): do it before anything else changes.
    if postpone == Some(false) {
        commands::unpostpone(plane, &table)?;
        changed.push("postpone-cut-over=false".into());
    }
    if let Some(on) = throttle {
        changed.push(format!("throttle={on}"));
    }
    if postpone == Some(true) {
        changed.push("postpone-cut-over=true".into());
    }
    plane.controls.send_modify(|c| {
        for setting in settings {
            setting.apply(c);
        }
        if let Some(on) = throttle {
            c.throttle = on;
        }
        if postpone == Some(true) {
            c.postpone_cut_over = true;
            c.cut_over_requested = false;
        }
    });
    info!(changed = ?changed, "controls changed over HTTP");
    Ok(format!("changed: {}", changed.join(", ")))
}

fn as_bool(field: &str, value: &Value) -> Result<bool, CommandError> {
    value
        .as_bool()
        .ok_or_else(|| CommandError::InvalidArgument {
            command: field.to_string(),
            message: format!("expected true or false, got {value}"),
        })
}

/// The text an interactive command would carry for this JSON value.
fn argument_text(name: &str, value: &Value) -> Result<String, CommandError> {
    match value {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        // null clears the text settings (and is refused by the numeric ones).
        Value::Null => Ok(String::new()),
        Value::Array(items) if name == "throttle-control-replicas" => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| CommandError::InvalidArgument {
                        command: name.to_string(),
                        message: format!("expected host:port strings, got {item}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|hosts| hosts.join(",")),
        other => Err(CommandError::InvalidArgument {
            command: name.to_string(),
            message: format!("expected a number or a string, got {other}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::watch;

    use super::*;
    use crate::server::MigrationIdentity;

    fn plane() -> (ControlPlane, watch::Sender<Progress>) {
        let (controls, _) = watch::channel(Controls::default());
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        (
            ControlPlane::new(
                controls,
                progress_rx,
                MigrationIdentity::new("shop", "users"),
            ),
            progress_tx,
        )
    }

    #[test]
    fn patch_applies_all_fields_or_nothing() {
        let (plane, _progress) = plane();
        let message = apply_patch(
            &plane,
            br#"{"chunkSize": 500, "niceRatio": 0.5, "maxLoad": "Threads_running=30",
                "throttleQuery": "select 1", "throttleControlReplicas": ["r1", "r2:3307"],
                "throttle": true}"#,
        )
        .unwrap();
        assert!(message.contains("chunk-size"), "{message}");
        let c = plane.controls_snapshot();
        assert_eq!(c.chunk_size, 500);
        assert_eq!(c.nice_ratio, 0.5);
        assert_eq!(c.max_load, vec![("Threads_running".to_string(), 30)]);
        assert_eq!(c.throttle_query.as_deref(), Some("select 1"));
        assert_eq!(c.throttle_control_replicas, vec!["r1:3306", "r2:3307"]);
        assert!(c.throttle);

        let before = plane.controls_snapshot();
        let bodies: [&[u8]; 8] = [
            br#"{"chunkSize": 100, "maxLoad": "nonsense"}"#,
            br#"{"chunkSize": "abc"}"#,
            br#"{"chunkSize": 1.5}"#,
            br#"{"throttle": "yes"}"#,
            br#"{"bogus": 1}"#,
            br#"{}"#,
            br#"[1]"#,
            b"not json",
        ];
        for body in bodies {
            let err = apply_patch(&plane, body).unwrap_err();
            assert!(
                matches!(err, CommandError::InvalidArgument { .. }),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
            assert!(!err.to_string().contains('\n'));
        }
        assert_eq!(plane.controls_snapshot(), before);
    }

    #[test]
    fn patch_clamps_like_the_commands_and_null_clears() {
        let (plane, _progress) = plane();
        apply_patch(
            &plane,
            br#"{"chunkSize": 5, "dmlBatchSize": 5000, "maxLagMillis": 1}"#,
        )
        .unwrap();
        let c = plane.controls_snapshot();
        assert_eq!((c.chunk_size, c.dml_batch_size), (10, 1000));
        assert_eq!(c.max_lag.as_millis(), 100);
        apply_patch(&plane, br#"{"throttleQuery": "select 1"}"#).unwrap();
        apply_patch(&plane, br#"{"throttleQuery": null}"#).unwrap();
        assert_eq!(plane.controls_snapshot().throttle_query, None);
    }

    #[test]
    fn patch_postpone_and_named_cut_over() {
        let (controls, _) = watch::channel(Controls::default());
        let (_progress_tx, progress_rx) = watch::channel(Progress::default());
        let plane = ControlPlane::new(
            controls,
            progress_rx,
            MigrationIdentity {
                force_named_cut_over: true,
                ..MigrationIdentity::new("shop", "users")
            },
        );
        apply_patch(&plane, br#"{"postponeCutOver": true}"#).unwrap();
        assert!(plane.controls_snapshot().postpone_cut_over);
        let err = apply_patch(&plane, br#"{"postponeCutOver": false}"#).unwrap_err();
        assert!(matches!(err, CommandError::Refused(_)), "{err}");
        assert!(plane.controls_snapshot().postpone_cut_over);
        assert!(apply_patch(&plane, br#"{"postponeCutOver": false, "table": "orders"}"#).is_err());
        apply_patch(&plane, br#"{"postponeCutOver": false, "table": "users"}"#).unwrap();
        let c = plane.controls_snapshot();
        assert!(!c.postpone_cut_over && c.cut_over_requested);
    }

    #[test]
    fn origins_of_other_sites_are_not_this_server() {
        assert!(same_origin("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(same_origin("http://LOCALHOST:8080", Some("localhost:8080")));
        assert!(!same_origin("http://evil.example", Some("127.0.0.1:8080")));
        assert!(!same_origin(
            "http://127.0.0.1:9999",
            Some("127.0.0.1:8080")
        ));
        assert!(!same_origin("null", Some("127.0.0.1:8080")));
        assert!(!same_origin("http://127.0.0.1:8080", None));
    }

    #[test]
    fn views_use_camel_case() {
        let (plane, progress) = plane();
        progress.send_modify(|p| {
            p.phase = Phase::Copying;
            p.rows_copied = 5;
            p.rows_estimate = 10;
        });
        let json = serde_json::to_value(status_view(&plane)).unwrap();
        assert_eq!(json["database"], "shop");
        assert_eq!(json["progress"]["phase"], "Copying");
        assert_eq!(json["progress"]["rowsCopied"], 5);
        assert_eq!(json["progress"]["percent"], 50.0);
        assert_eq!(json["controls"]["chunkSize"], 1000);
        assert_eq!(json["controls"]["maxLagMillis"], 1500);
        assert!(
            json["statusLine"]
                .as_str()
                .unwrap()
                .starts_with("Copy: 5/10")
        );
        for (field, name) in CONTROL_FIELDS {
            assert!(json["controls"].get(field).is_some(), "{field}");
            assert_eq!(json_field(name), Some(field));
        }
    }
}
