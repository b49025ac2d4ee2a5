//! The reconciler against a mocked API server (tower-test): the exact requests of the main flows,
//! in order, and nothing more. These check request shapes, not API server semantics (those are
//! for the real control plane tests).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::{Method, Request, Response, header};
use futures_util::future::BoxFuture;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::{Context, EngineDefaults, FINALIZER, Metrics, TableCleaner, build_job, reconcile};
use crate::api::{SchemaMigration, SchemaMigrationStatus};
use crate::engine::conn::ConnectionConfig;

type ApiHandle = Handle<Request<Body>, Response<Body>>;
type Respond = Box<dyn FnOnce(&Value) -> Value + Send>;

const MIGRATIONS: &str = "/apis/ghost.dev/v1alpha1/namespaces/shop/schemamigrations";
const JOB: &str = "/apis/batch/v1/namespaces/shop/jobs/ghost-add-age";
const JOBS: &str = "/apis/batch/v1/namespaces/shop/jobs";
const SECRET: &str = "/api/v1/namespaces/shop/secrets/shop-db";
const PODS: &str = "/api/v1/namespaces/shop/pods";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";
const APPLY: &str = "application/apply-patch+yaml";
const JSON_PATCH: &str = "application/json-patch+json";

/// One expected request and the answer to it.
struct Step {
    method: Method,
    path: String,
    query: Vec<&'static str>,
    content_type: Option<&'static str>,
    status: u16,
    /// Checks the request body (JSON, or null when empty) and returns the response body.
    respond: Respond,
}

fn expect(
    method: Method,
    path: &str,
    status: u16,
    respond: impl FnOnce(&Value) -> Value + Send + 'static,
) -> Step {
    Step {
        method,
        path: path.to_string(),
        query: Vec::new(),
        content_type: None,
        status,
        respond: Box::new(respond),
    }
}

impl Step {
    fn query(mut self, part: &'static str) -> Self {
        self.query.push(part);
        self
    }

    fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = Some(content_type);
        self
    }
}

/// Answers `steps` in order, then fails on any further request.
fn serve(mut handle: ApiHandle, steps: Vec<Step>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for (i, step) in steps.into_iter().enumerate() {
            let Some((request, send)) = handle.next_request().await else {
                panic!(
                    "step {i}: expected {} {}; no request came",
                    step.method, step.path
                );
            };
            let what = format!("step {i}: {} {}", request.method(), request.uri());
            assert_eq!(request.method(), &step.method, "{what}");
            // A trailing `*`: any path with that prefix (names the client generates).
            match step.path.strip_suffix('*') {
                Some(prefix) => assert!(request.uri().path().starts_with(prefix), "{what}"),
                None => assert_eq!(request.uri().path(), step.path, "{what}"),
            }
            let query = request.uri().query().unwrap_or_default().to_string();
            for part in &step.query {
                assert!(query.contains(part), "{what}: the query lacks {part}");
            }
            if let Some(expected) = step.content_type {
                let actual = request
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                assert_eq!(actual, expected, "{what}");
            }
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .expect("request body");
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("a JSON body")
            };
            let reply = (step.respond)(&body);
            let response = Response::builder()
                .status(step.status)
                .body(Body::from(serde_json::to_vec(&reply).expect("reply")))
                .expect("response");
            send.send_response(response);
        }
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await
        {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    })
}

/// One cleanup request: host, port, user, password, database, table.
type CleanupCall = (String, u16, String, String, String, String);

/// Records what it was asked to drop.
#[derive(Default)]
struct FakeCleaner {
    calls: Mutex<Vec<CleanupCall>>,
}

impl FakeCleaner {
    fn calls(&self) -> Vec<CleanupCall> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl TableCleaner for FakeCleaner {
    fn drop_tables(
        &self,
        conn: ConnectionConfig,
        database: String,
        table: String,
    ) -> BoxFuture<'static, Result<Vec<String>, String>> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((
                conn.host.clone(),
                conn.port,
                conn.user.clone(),
                conn.password.expose().to_string(),
                database,
                table,
            ));
        Box::pin(async {
            Ok::<_, String>(vec!["_users_gho".to_string(), "_users_ghc".to_string()])
        })
    }
}

struct Harness {
    ctx: Arc<Context>,
    handle: ApiHandle,
    cleaner: Arc<FakeCleaner>,
    // Keeps the cache alive and lets tests put other migrations in it.
    _writer: Writer<SchemaMigration>,
}

fn defaults() -> EngineDefaults {
    EngineDefaults {
        image: "ghost:test".to_string(),
        service_account: "ghost-engine".to_string(),
        policy: Default::default(),
        start_timeout: std::time::Duration::from_secs(300),
    }
}

fn harness(others: Vec<SchemaMigration>) -> Harness {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (store, mut writer) = reflector::store::<SchemaMigration>();
    for other in others {
        writer.apply_watcher_event(&watcher::Event::Apply(other));
    }
    let cleaner = Arc::new(FakeCleaner::default());
    let ctx = Arc::new(Context::new(
        client,
        "ghost-operator-test",
        store,
        Arc::new(Metrics::new()),
        defaults(),
        1,
        cleaner.clone(),
    ));
    Harness {
        ctx,
        handle,
        cleaner,
        _writer: writer,
    }
}

/// Runs one reconcile of `smig` against `steps`.
async fn run(
    h: Harness,
    smig: SchemaMigration,
    steps: Vec<Step>,
) -> (Result<Action, super::Error>, Arc<FakeCleaner>) {
    let Harness {
        ctx,
        handle,
        cleaner,
        _writer,
    } = h;
    let server = serve(handle, steps);
    let result = tokio::time::timeout(Duration::from_secs(5), reconcile(Arc::new(smig), ctx))
        .await
        .expect("reconcile finished");
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the scenario finished")
        .expect("the scenario passed");
    (result, cleaner)
}

fn migration() -> SchemaMigration {
    serde_json::from_value(json!({
        "apiVersion": "ghost.dev/v1alpha1",
        "kind": "SchemaMigration",
        "metadata": {
            "name": "add-age",
            "namespace": "shop",
            "uid": "uid-add-age",
            "generation": 1,
            "resourceVersion": "100",
            "creationTimestamp": "2026-01-02T03:04:05Z"
        },
        "spec": {
            "connection": {
                "host": "mariadb-0.mariadb",
                "database": "shop",
                "credentialsSecretRef": {"name": "shop-db"}
            },
            "table": "users",
            "alter": "ADD COLUMN age INT NOT NULL DEFAULT 0"
        }
    }))
    .expect("fixture")
}

fn finalized() -> SchemaMigration {
    let mut smig = migration();
    smig.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    smig
}

fn status(value: Value) -> SchemaMigrationStatus {
    serde_json::from_value(value).expect("status fixture")
}

fn running() -> SchemaMigration {
    let mut smig = finalized();
    smig.status = Some(status(json!({
        "observedGeneration": 1,
        "phase": "Copying",
        "job": "ghost-add-age",
        "startTime": "2026-01-02T03:05:00Z",
        "progress": {"phase": "Copying", "rowsCopied": 1234}
    })));
    smig
}

fn deleting(mut smig: SchemaMigration) -> SchemaMigration {
    smig.metadata.deletion_timestamp = smig.metadata.creation_timestamp.clone();
    smig
}

fn to_json(smig: &SchemaMigration) -> Value {
    serde_json::to_value(smig).expect("serializable")
}

/// The resource as the API server returns it after a status apply.
fn with_status(smig: &SchemaMigration, body: &Value) -> Value {
    let mut value = to_json(smig);
    value["status"] = body["status"].clone();
    value
}

fn not_found(what: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": format!("{what} not found"),
        "reason": "NotFound",
        "code": 404
    })
}

fn secret() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "shop-db", "namespace": "shop", "labels": {"ghost.dev/credentials": "true"}},
        // ghost / s3cret
        "data": {"username": "Z2hvc3Q=", "password": "czNjcmV0"}
    })
}

fn job(smig: &SchemaMigration, conditions: Value, being_deleted: bool) -> Value {
    let mut value =
        serde_json::to_value(build_job(smig, &defaults()).expect("job")).expect("serializable");
    value["status"] = json!({ "conditions": conditions });
    if being_deleted {
        value["metadata"]["deletionTimestamp"] = json!("2026-01-02T04:00:00Z");
    }
    value
}

fn event(reason: &'static str, type_: &'static str) -> Step {
    expect(Method::POST, EVENTS, 201, move |body| {
        assert_eq!(body["reason"], reason, "{body}");
        assert_eq!(body["type"], type_, "{body}");
        assert_eq!(body["regarding"]["kind"], "SchemaMigration");
        assert_eq!(body["regarding"]["name"], "add-age");
        assert_eq!(body["reportingController"], "ghost-operator");
        body.clone()
    })
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

/// The finalizer comes with the Job, not before: a migration that never starts (queued,
/// blocked) carries none, so deleting it costs the API server what it costs without an
/// operator; one that starts has it before its Job exists.
#[tokio::test]
async fn a_new_migration_gets_the_finalizer_just_before_its_job() {
    let smig = migration();
    let answer = {
        let mut value = to_json(&smig);
        value["metadata"]["finalizers"] = json!([FINALIZER]);
        value
    };
    let status_answer = smig.clone();
    let steps = vec![
        expect(Method::GET, JOB, 404, |_| {
            not_found("jobs.batch \"ghost-add-age\"")
        }),
        expect(Method::GET, SECRET, 200, |_| secret()),
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age"),
            200,
            move |body| {
                assert_eq!(
                    body,
                    &json!([
                        {"op": "test", "path": "/metadata/finalizers", "value": null},
                        {"op": "add", "path": "/metadata/finalizers", "value": ["ghost.dev/cleanup"]}
                    ])
                );
                answer
            },
        )
        .content_type(JSON_PATCH),
        expect(Method::POST, JOBS, 201, |body| body.clone()).query("fieldManager=ghost-operator"),
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age/status"),
            200,
            move |body| with_status(&status_answer, body),
        )
        .query("fieldManager=ghost-operator")
        .query("force=true")
        .content_type(APPLY),
        event("JobCreated", "Normal"),
        event("Pending", "Normal"),
    ];
    let (result, _) = run(harness(vec![]), smig, steps).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(15))
    );
}

/// A migration deleted before it started has no finalizer: the operator makes no call.
#[tokio::test]
async fn deleting_a_migration_that_never_started_makes_no_call() {
    let mut smig = deleting(migration());
    smig.status = Some(status(json!({"phase": "Queued"})));
    let (result, cleaner) = run(harness(vec![]), smig, vec![]).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    assert!(cleaner.calls().is_empty());
}

#[tokio::test]
async fn finalized_resource_gets_its_job_then_status() {
    let smig = finalized();
    let answer = smig.clone();
    let steps = vec![
        expect(Method::GET, JOB, 404, |_| {
            not_found("jobs.batch \"ghost-add-age\"")
        }),
        expect(Method::GET, SECRET, 200, |_| secret()),
        expect(Method::POST, JOBS, 201, |body| {
            assert_eq!(body["metadata"]["name"], "ghost-add-age");
            let owner = &body["metadata"]["ownerReferences"][0];
            assert_eq!(owner["kind"], "SchemaMigration");
            assert_eq!(owner["uid"], "uid-add-age");
            assert_eq!(owner["controller"], true);
            assert_eq!(body["metadata"]["labels"]["ghost.dev/migration"], "add-age");
            let pod = &body["spec"]["template"]["spec"];
            assert_eq!(pod["restartPolicy"], "Never");
            let container = &pod["containers"][0];
            assert_eq!(
                container["command"],
                json!([
                    "ghost",
                    "engine",
                    "--namespace",
                    "shop",
                    "--name",
                    "add-age"
                ])
            );
            assert_eq!(container["env"][0]["name"], "GHOST_DB_USER");
            assert_eq!(
                container["env"][0]["valueFrom"]["secretKeyRef"],
                json!({"name": "shop-db", "key": "username", "optional": false})
            );
            assert_eq!(container["env"][1]["name"], "GHOST_DB_PASSWORD");
            let text = body.to_string();
            assert!(!text.contains("s3cret") && !text.contains("czNjcmV0"));
            assert_eq!(container["securityContext"]["runAsNonRoot"], true);
            assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
            body.clone()
        })
        .query("fieldManager=ghost-operator"),
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age/status"),
            200,
            move |body| {
                assert_eq!(body["apiVersion"], "ghost.dev/v1alpha1");
                assert_eq!(body["kind"], "SchemaMigration");
                let status = &body["status"];
                assert_eq!(status["phase"], "Pending");
                assert_eq!(status["job"], "ghost-add-age");
                assert_eq!(status["observedGeneration"], 1);
                assert!(status.get("progress").is_none(), "the engine owns progress");
                assert!(status.get("startTime").is_some());
                assert_eq!(condition(status, "Ready")["status"], "False");
                assert_eq!(condition(status, "Succeeded")["status"], "Unknown");
                with_status(&answer, body)
            },
        )
        .query("fieldManager=ghost-operator")
        .query("force=true")
        .content_type(APPLY),
        event("JobCreated", "Normal"),
        event("Pending", "Normal"),
    ];
    let (result, cleaner) = run(harness(vec![]), smig, steps).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(15))
    );
    assert!(cleaner.calls().is_empty());
}

#[tokio::test]
async fn a_missing_secret_means_no_job_and_a_clear_message() {
    let smig = finalized();
    let answer = smig.clone();
    let steps = vec![
        expect(Method::GET, JOB, 404, |_| {
            not_found("jobs.batch \"ghost-add-age\"")
        }),
        expect(Method::GET, SECRET, 404, |_| {
            not_found("secrets \"shop-db\"")
        }),
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age/status"),
            200,
            move |body| {
                let status = &body["status"];
                assert_eq!(status["phase"], "Pending");
                let message = status["message"].as_str().unwrap_or_default();
                assert!(
                    message.starts_with(
                        "Secret shop-db not found in namespace shop: create it with keys \
                         username/password"
                    ),
                    "{message}"
                );
                assert_eq!(condition(status, "Ready")["reason"], "SecretNotFound");
                assert!(status.get("job").is_none());
                with_status(&answer, body)
            },
        )
        .content_type(APPLY),
        event("SecretNotFound", "Warning"),
        event("Pending", "Normal"),
    ];
    let (result, _) = run(harness(vec![]), smig, steps).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(30))
    );
}

#[tokio::test]
async fn a_busy_table_queues_without_a_job() {
    let mut other = running();
    other.metadata.name = Some("add-email".to_string());
    other.metadata.uid = Some("uid-add-email".to_string());
    let smig = finalized();
    let answer = smig.clone();
    // No GET of its Job: a queued migration is decided from the cache.
    let steps = vec![
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age/status"),
            200,
            move |body| {
                let status = &body["status"];
                assert_eq!(status["phase"], "Queued");
                let queued = condition(status, "Queued");
                assert_eq!(queued["status"], "True");
                assert!(
                    queued["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("is changed by one SchemaMigration at a time"),
                    "{queued}"
                );
                with_status(&answer, body)
            },
        ),
        event("Queued", "Normal"),
    ];
    let (result, _) = run(harness(vec![other]), smig, steps).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(60))
    );
}

#[tokio::test]
async fn a_failed_job_fails_the_migration_and_it_stays_failed() {
    let mut smig = running();
    if let Some(status) = smig.status.as_mut() {
        status.progress = Some(
            serde_json::from_value(json!({
                "phase": "Failed",
                "message": "table shop.users has no PRIMARY nor UNIQUE key"
            }))
            .expect("progress"),
        );
    }
    let answer = smig.clone();
    let written = Arc::new(Mutex::new(Value::Null));
    let keep = written.clone();
    let failed_job = job(
        &smig,
        json!([{
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"
        }]),
        false,
    );
    let steps = vec![
        expect(Method::GET, JOB, 200, move |_| failed_job),
        // Why the pods failed: the engine exited 1 on its own, so the Job's reason stands.
        expect(Method::GET, PODS, 200, |_| {
            pod_list(json!({"exitCode": 1, "reason": "Error"}))
        }),
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age/status"),
            200,
            move |body| {
                let status = &body["status"];
                assert_eq!(status["phase"], "Failed");
                assert_eq!(
                    status["message"],
                    "table shop.users has no PRIMARY nor UNIQUE key (BackoffLimitExceeded: Job \
                     has reached the specified backoff limit). Next: `kubectl ghost logs add-age \
                     -n shop` shows why; fix the cause and apply the manifest again under a new \
                     name (a finished SchemaMigration never runs again)"
                );
                assert_eq!(condition(status, "Failed")["status"], "True");
                assert_eq!(condition(status, "Succeeded")["status"], "False");
                assert!(status.get("completionTime").is_some());
                assert_eq!(status["startTime"], "2026-01-02T03:05:00Z");
                assert!(status.get("progress").is_none());
                *keep.lock().unwrap_or_else(PoisonError::into_inner) = status.clone();
                with_status(&answer, body)
            },
        )
        .content_type(APPLY),
        event("Failed", "Warning"),
    ];
    let (result, _) = run(harness(vec![]), smig.clone(), steps).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());

    // Re-applying the same manifest, or any later reconcile: no Job is looked for or created,
    // the status is already right, nothing is written.
    let mut after = smig;
    let mut new_status = status(
        written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    );
    new_status.progress = after.status.as_ref().and_then(|s| s.progress.clone());
    after.status = Some(new_status);
    let (result, _) = run(harness(vec![]), after, vec![]).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
}

/// The engine's pods, one of them terminated as `terminated` says.
fn pod_list(terminated: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "metadata": {"name": "ghost-add-age-x1", "creationTimestamp": "2026-01-02T03:05:00Z"},
        "spec": {"containers": [{"name": "engine", "resources": {"limits": {"memory": "8Mi"}}}]},
        "status": {"phase": "Failed", "containerStatuses": [{
            "name": "engine", "image": "ghost", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": terminated}
        }]}
    }]})
}

#[tokio::test]
async fn a_job_failed_by_the_oom_killer_says_so() {
    let smig = running();
    let failed_job = job(
        &smig,
        json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]),
        false,
    );
    let answer = smig.clone();
    let steps = vec![
        expect(Method::GET, JOB, 200, move |_| failed_job),
        expect(Method::GET, PODS, 200, |_| {
            pod_list(json!({"exitCode": 137, "reason": "OOMKilled"}))
        }),
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age/status"),
            200,
            move |body| {
                let message = body["status"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains(
                        "the engine pod ghost-add-age-x1 was OOMKilled at its memory limit of \
                         8Mi (exit code 137): raise spec.engine.resources.limits.memory"
                    ),
                    "{message}"
                );
                with_status(&answer, body)
            },
        )
        .content_type(APPLY),
        event("Failed", "Warning"),
    ];
    let (result, _) = run(harness(vec![]), smig, steps).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
}

#[tokio::test]
async fn deletion_stops_the_engine_drops_the_tables_and_removes_the_finalizer() {
    let smig = deleting(running());
    let live_job = job(&smig, json!([]), false);
    let stopping_job = job(&smig, json!([]), true);
    let answer = {
        let mut value = to_json(&smig);
        value["metadata"]["finalizers"] = json!([]);
        value
    };
    let steps = vec![
        expect(Method::GET, JOB, 200, move |_| live_job),
        expect(Method::DELETE, JOB, 200, move |body| {
            assert_eq!(body["propagationPolicy"], "Foreground", "{body}");
            stopping_job
        }),
        event("Cancelling", "Normal"),
        expect(Method::GET, PODS, 200, |_| {
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []})
        })
        .query("labelSelector=ghost.dev%2Fmigration%3Dadd-age"),
        expect(Method::GET, SECRET, 200, |_| secret()),
        event("CleanedUp", "Normal"),
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age"),
            200,
            move |body| {
                assert_eq!(
                    body,
                    &json!([
                        {"op": "test", "path": "/metadata/finalizers/0", "value": "ghost.dev/cleanup"},
                        {"op": "remove", "path": "/metadata/finalizers/0"}
                    ])
                );
                answer
            },
        )
        .content_type(JSON_PATCH),
    ];
    let (result, cleaner) = run(harness(vec![]), smig, steps).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    assert_eq!(
        cleaner.calls(),
        [(
            "mariadb-0.mariadb".to_string(),
            3306_u16,
            "ghost".to_string(),
            "s3cret".to_string(),
            "shop".to_string(),
            "users".to_string()
        )]
    );
}

#[tokio::test]
async fn deletion_waits_for_the_engine_pod() {
    let smig = deleting(running());
    let stopping_job = job(&smig, json!([]), true);
    let steps = vec![
        // Already being deleted: not deleted again.
        expect(Method::GET, JOB, 200, move |_| stopping_job),
        expect(Method::GET, PODS, 200, |_| {
            json!({
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {},
                "items": [{
                    "metadata": {"name": "ghost-add-age-x7k2p", "namespace": "shop"},
                    "status": {"phase": "Running"}
                }]
            })
        }),
    ];
    let (result, cleaner) = run(harness(vec![]), smig, steps).await;
    let error = result.expect_err("the finalizer stays");
    assert!(
        error
            .cleanup_pending()
            .is_some_and(|what| what.contains("ghost-add-age-x7k2p")),
        "{error}"
    );
    assert!(cleaner.calls().is_empty(), "no drop under a live engine");
}

#[tokio::test]
async fn deleting_a_queued_migration_touches_no_tables() {
    let mut smig = deleting(finalized());
    smig.status = Some(status(json!({"phase": "Queued"})));
    let answer = to_json(&smig);
    // No pod list: without a Job and a start there is no engine pod (a mass delete of a long
    // queue costs one read per migration, not two).
    let steps = vec![
        expect(Method::GET, JOB, 404, |_| {
            not_found("jobs.batch \"ghost-add-age\"")
        }),
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age"),
            200,
            move |_| answer,
        )
        .content_type(JSON_PATCH),
    ];
    let (result, cleaner) = run(harness(vec![]), smig, steps).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    assert!(cleaner.calls().is_empty());
}

/// `kubectl delete smig --all` with a queue: a migration that could start does not while
/// deletions are coming in; it asks again once they have settled.
#[tokio::test]
async fn no_engine_starts_while_migrations_are_being_deleted() {
    let smig = finalized();
    let answer = smig.clone();
    let h = harness(vec![]);
    h.ctx.note_deletion();
    let steps = vec![
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age/status"),
            200,
            move |body| {
                assert_eq!(body["status"]["phase"], "Queued");
                with_status(&answer, body)
            },
        ),
        event("Queued", "Normal"),
    ];
    let (result, _) = run(h, smig, steps).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(super::reconcile::DELETION_SETTLE)
    );
}

/// A Succeeded migration keeps no finalizer: deleting it needs no operator (uninstall).
#[tokio::test]
async fn a_succeeded_migration_lets_go_of_its_finalizer() {
    let mut smig = finalized();
    smig.status = Some(status(json!({
        "phase": "Succeeded",
        "message": "migration complete",
        "observedGeneration": 1,
        "job": "ghost-add-age",
    })));
    let answer = smig.clone();
    let status_answer = smig.clone();
    let steps = vec![
        // Its conditions filled in; its Job is not looked at.
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age/status"),
            200,
            move |body| {
                assert_eq!(body["status"]["phase"], "Succeeded");
                with_status(&status_answer, body)
            },
        ),
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age"),
            200,
            move |body| {
                assert_eq!(body["metadata"]["finalizers"], json!([]));
                assert_eq!(body["metadata"]["resourceVersion"], "100");
                serde_json::to_value(&answer).expect("answer")
            },
        )
        .content_type("application/merge-patch+json"),
    ];
    let (result, _) = run(harness(vec![]), smig, steps).await;
    result.expect("reconciled");
}

/// A repeated reason with a new note is a new Event (kube's series would keep the first
/// note: "ControlsChanged (x3): throttle=false" while throttle was true); the same note again
/// counts up the series.
#[tokio::test]
async fn a_changed_note_is_a_new_event() {
    use super::reconcile::PlannedEvent;
    let h = harness(vec![]);
    let smig = finalized();
    let note = |n: &'static str| {
        expect(Method::POST, EVENTS, 201, move |body| {
            assert_eq!(body["note"], n, "{body}");
            let mut created = body.clone();
            created["metadata"]["name"] = json!(format!("add-age.{n}"));
            created
        })
    };
    let steps = vec![
        note("throttle=true"),
        note("throttle=false"),
        expect(Method::PATCH, &format!("{EVENTS}/add-age.*"), 200, |body| {
            assert_eq!(body["series"]["count"], 2, "{body}");
            body.clone()
        }),
    ];
    let server = serve(h.handle, steps);
    for text in ["throttle=true", "throttle=false", "throttle=false"] {
        h.ctx
            .publish(
                &smig,
                PlannedEvent::normal("ControlsChanged", "UpdateControls", text),
            )
            .await;
    }
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the scenario finished")
        .expect("the scenario passed");
}

/// A Job whose pod cannot be made (its ServiceAccount is missing) and whose engine never
/// reported: past the start timeout the Job is deleted and the migration fails with the reason,
/// freeing its host slot.
#[tokio::test]
async fn an_engine_that_never_starts_fails_the_migration_after_the_timeout() {
    let mut smig = finalized();
    smig.status = Some(status(json!({
        "observedGeneration": 1,
        "phase": "Pending",
        "job": "ghost-add-age",
    })));
    let mut stuck = job(&smig, json!([]), false);
    stuck["metadata"]["creationTimestamp"] = json!("2026-01-02T03:05:00Z");
    let answer = smig.clone();
    let steps = vec![
        expect(Method::GET, JOB, 200, move |_| stuck),
        expect(Method::GET, PODS, 200, |_| {
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []})
        })
        .query("labelSelector"),
        expect(Method::GET, "/api/v1/namespaces/shop/events", 200, |_| {
            json!({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": [{
                "metadata": {"name": "ghost-add-age.1"},
                "involvedObject": {"kind": "Job", "name": "ghost-add-age"},
                "reason": "FailedCreate",
                "message": "Error creating: pods \"ghost-add-age-\" is forbidden: error looking up service account shop/ghost-engine: serviceaccount \"ghost-engine\" not found"
            }]})
        })
        .query("fieldSelector"),
        expect(Method::DELETE, JOB, 200, |_| json!({"kind": "Status", "status": "Success"})),
        expect(
            Method::PATCH,
            &format!("{MIGRATIONS}/add-age/status"),
            200,
            move |body| {
                let status = &body["status"];
                assert_eq!(status["phase"], "Failed", "{status}");
                let message = status["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains("did not start within 300s")
                        && message.contains("serviceaccount \"ghost-engine\" not found"),
                    "{message}"
                );
                with_status(&answer, body)
            },
        ),
        event("Failed", "Warning"),
    ];
    let (result, _) = run(harness(vec![]), smig, steps).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
}
