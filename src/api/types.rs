//! The `SchemaMigration` resource (`ghost.dev/v1alpha1`): spec, status and the CRD attributes
//! (short name, printer columns, CEL rules). DESIGN.md §3 is the prose version of this file.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::config;
use crate::engine::progress::{Phase, Progress};

/// Desired state of one online schema change: which table to alter, how, and the knobs that
/// steer the copy, the throttling and the cut-over while it runs.
// kube's repeated `printcolumn(...)` entries are distinct columns, not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ghost.dev",
    version = "v1alpha1",
    kind = "SchemaMigration",
    namespaced,
    status = "SchemaMigrationStatus",
    shortname = "smig",
    category = "ghost",
    derive = "PartialEq",
    doc = "An online, triggerless schema change of one MySQL/MariaDB table, run by ghost the way \
           gh-ost does: copy rows into a ghost table, apply the binary log, swap the tables.",
    printcolumn(name = "Table", type_ = "string", json_path = ".spec.table"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Progress",
        type_ = "number",
        json_path = ".status.progress.percent",
        description = "Percent of the estimated rows copied"
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.progress.replicaLagMillis",
        description = "Replication lag in milliseconds (largest of the inspected and control replicas)"
    ),
    printcolumn(
        name = "ETA",
        type_ = "integer",
        json_path = ".status.progress.etaSeconds",
        description = "Estimated seconds until the row copy completes"
    ),
    printcolumn(
        name = "Throttled",
        type_ = "boolean",
        json_path = ".status.progress.throttle.active",
        priority = "1"
    ),
    printcolumn(
        name = "Heartbeat",
        type_ = "integer",
        json_path = ".status.progress.heartbeatLagMillis",
        description = "Age in milliseconds of the last heartbeat read back from the binary log",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(r"has(self.revert) || self.alter.matches('\\S')")
        .message("alter must not be empty"),
    validation = Rule::new(r"!has(self.revert) || !self.alter.matches('\\S')")
        .message("revert and alter exclude each other: leave alter empty, a revert has no ALTER of its own"),
    validation = Rule::new("has(self.revert) == has(oldSelf.revert)")
        .message("revert is immutable: create a new SchemaMigration for another change")
)]
pub struct SchemaMigrationSpec {
    /// The server and database holding the table. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "connection is immutable: create a new SchemaMigration for another change"
    ))]
    pub connection: ConnectionSpec,

    /// The table to alter, without the database name. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("table is immutable: create a new SchemaMigration for another change"))]
    #[schemars(length(min = 1, max = 64))]
    pub table: String,

    /// The ALTER TABLE body, without `ALTER TABLE <table>`, e.g. `ADD COLUMN age INT NOT NULL
    /// DEFAULT 0`. Renaming the table is refused: ghost swaps tables itself. Empty only with
    /// `revert`. Immutable.
    #[serde(default)]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("alter is immutable: create a new SchemaMigration for another change"),
        validation = Rule::new(r"!self.matches('(?i)\\brename\\s+(to|as)\\b')")
            .message("alter must not rename the table (RENAME TO/AS): ghost swaps tables itself")
    )]
    #[schemars(length(max = 65536))]
    pub alter: String,

    /// Undo an earlier migration of this table instead of altering it (gh-ost's --revert): the
    /// old table it kept is brought up to date from its cut-over checkpoint and swapped back in;
    /// the table it replaces is kept as `_<table>_rev_del`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("revert is immutable: create a new SchemaMigration for another change"))]
    pub revert: Option<RevertSpec>,

    /// false: validate and rehearse (create and alter the ghost table, then drop it), never copy
    /// or cut over; the same as gh-ost without --execute. Immutable.
    #[serde(default = "default_true")]
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "execute is immutable: create a new SchemaMigration to run the change for real"
    ))]
    pub execute: bool,

    /// Row copy settings. Mutable: changes apply to the running migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopySpec>,

    /// When to pause copying and applying. Mutable: changes apply to the running migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleSpec>,

    /// How and when to swap the tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_over: Option<CutOverSpec>,

    /// Checks before the cut-over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,

    /// Notifications at points of the migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksSpec>,

    /// The engine's pod: image, resources, scheduling, retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSpec>,
}

/// Which kept old table to swap back in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevertSpec {
    /// The old table the migration kept, e.g. `_users_20261122064721_del` (its name is in the
    /// migration's engine log and Events, or `SHOW TABLES LIKE '\_users\_%\_del'`).
    #[schemars(length(min = 1, max = 64))]
    pub old_table: String,
}

fn default_true() -> bool {
    true
}

/// Where the table lives and how to log in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// The primary: the server whose table is changed (hostname or IP).
    #[schemars(length(min = 1, max = 255))]
    pub host: String,

    /// The primary's port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The database (schema) holding the table.
    #[schemars(length(min = 1, max = 64))]
    pub database: String,

    /// The Secret with the MySQL user and password, in the resource's namespace. They reach the
    /// engine as environment variables, never as arguments.
    pub credentials_secret_ref: CredentialsSecretRef,

    /// TLS to the servers. Absent: no TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// A replica to inspect and to read the binary log from, as `host` or `host:port`
    /// (gh-ost's --host). Absent: the primary itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub inspect_host: Option<String>,

    /// Replicas, as `host:port`, whose lag throttles the migration (gh-ost's
    /// --throttle-control-replicas).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(
            length(min = 1, max = 255),
            regex(pattern = r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]/\s]+):[0-9]{1,5}$")
        )
    )]
    pub control_replicas: Vec<String>,
}

fn default_port() -> i32 {
    3306
}

/// A Secret holding the MySQL credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the user name.
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1, max = 253))]
    pub username_key: String,
    /// The key holding the password.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
}

/// One key of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// TLS settings for every connection the engine opens.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'disabled' || !has(self.caSecretRef)")
    .message("tls.caSecretRef is set but tls.mode is disabled"))]
#[x_kube(validation = Rule::new("self.mode != 'disabled' || !has(self.clientCertSecretRef)")
    .message("tls.clientCertSecretRef is set but tls.mode is disabled"))]
pub struct TlsSpec {
    /// disabled, required (encrypt, trust any certificate), verify-ca (the certificate chains to
    /// the CA, any host name) or verify-identity (verify-ca and the host name matches; the
    /// default). Every connection of the engine, the binlog stream's included, uses it.
    #[serde(default)]
    pub mode: TlsMode,
    /// The CA bundle (PEM) to verify the servers with, e.g. the RDS CA bundle. Absent: the
    /// built-in roots (Mozilla's). Mounted read-only into the engine pod, never in its env.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A client certificate for servers that require one (`REQUIRE X509`): a Secret of type
    /// kubernetes.io/tls (keys tls.crt and tls.key). Mounted read-only into the engine pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretRef>,
}

/// A whole Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

// Variants carry no doc comments on purpose: schemars would render documented variants as a
// `oneOf`, and the CRD should show a plain string enum.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disabled,
    Required,
    VerifyCa,
    // A tls block is written to get security: the strictest mode is the default.
    #[default]
    VerifyIdentity,
}

/// Row copy settings (gh-ost's --chunk-size, --dml-batch-size, --nice-ratio).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CopySpec {
    /// Rows per copy chunk. Default 1000. Annotation ghost/chunk-size overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 100000))]
    pub chunk_size: Option<i64>,

    /// The engine resizes chunks so each takes about this long; chunkSize is the starting size.
    /// Default 250; 0 keeps chunkSize fixed (gh-ost's behaviour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 60000))]
    pub target_chunk_time_millis: Option<i64>,

    /// Chunks copied at once, each on its own connection, over disjoint key ranges. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub threads: Option<i32>,

    /// Copy into the new table without its plain secondary indexes and build them online after
    /// the row copy (ghost's --defer-secondary-indexes). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defer_secondary_indexes: Option<bool>,

    /// Read the original without row locks during the copy (ghost's --copy-without-locks; one
    /// copier, a single integer key). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_locks: Option<bool>,

    /// Leave binary log changes to rows the copy has not reached yet to the copy (a single
    /// integer key only; ghost's --skip-uncopied-changes). Default false: experimental.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_uncopied_changes: Option<bool>,

    /// Write each batch of binary log changes as each row's last image, in multi-row statements
    /// (ghost's --coalesce-changes). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_changes: Option<bool>,

    /// Sessions that apply each batch of binary log changes at once, split by key (ghost's
    /// --apply-threads). Used where changes are coalesced and the shared key's columns are
    /// integer, decimal, temporal or VARBINARY; otherwise one session applies. Read when the
    /// engine starts. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub apply_threads: Option<i32>,

    /// Binary log events applied per transaction while changes wait. Default 1000 (gh-ost: 10).
    /// Annotation ghost/dml-batch-size overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub dml_batch_size: Option<i64>,

    /// After each chunk, sleep this multiple of the chunk's copy time (0.5: copy at most two
    /// thirds of the time). Default 0. Annotation ghost/nice-ratio overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub nice_ratio: Option<f64>,
}

/// Throttling: while throttled, the engine neither copies rows nor applies events.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.maxLoad) || !has(self.criticalLoad) || self.criticalLoad.all(k, !(k in self.maxLoad) || self.criticalLoad[k] > self.maxLoad[k])"
).message("each criticalLoad threshold must be above the maxLoad threshold of the same variable"))]
pub struct ThrottleSpec {
    /// Pause the migration until set back to false. Annotation ghost/throttle overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,

    /// Throttle while replication lag exceeds this many milliseconds. Default 1500. Annotation
    /// ghost/max-lag-millis overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100))]
    pub max_lag_millis: Option<i64>,

    /// Throttle while a global status variable reaches its threshold, e.g.
    /// `{Threads_running: 25}`. Annotation ghost/max-load (`Threads_running=25,...`) overrides it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub max_load: BTreeMap<String, u64>,

    /// Abort the migration when a global status variable reaches its threshold. Annotation
    /// ghost/critical-load overrides it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub critical_load: BTreeMap<String, u64>,

    /// A query run on the primary; a result above 0 throttles (gh-ost's --throttle-query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub query: Option<String>,

    /// An HTTP URL checked periodically; a status other than 200 throttles (gh-ost's
    /// --throttle-http).
    #[serde(default, rename = "httpURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub http_url: Option<String>,
}

/// How and when to swap the tables.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CutOverSpec {
    /// Finish the row copy, keep applying changes, and wait with the swap until set back to
    /// false. Annotation ghost/postpone-cut-over overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postpone: Option<bool>,

    /// atomic (gh-ost's default: writes block briefly, the table never disappears) or two-step
    /// (two renames; the table is missing for a moment).
    #[serde(default)]
    pub mode: CutOverMode,

    /// How long one cut-over attempt may hold its locks.
    #[serde(default = "default_lock_timeout_seconds")]
    #[schemars(range(min = 1, max = 10))]
    pub lock_timeout_seconds: i32,

    /// Cut-over attempts before the migration fails.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 1, max = 1000))]
    pub retries: i32,

    /// What to do with the original table after the swap: keep it for a manual rollback, as
    /// `_<table>_<YYYYMMDDhhmmss>_del` (gh-ost's --timestamp-old-table, so the table's next
    /// migration is not blocked by it), or drop it.
    #[serde(default)]
    pub old_table: OldTable,
}

impl Default for CutOverSpec {
    fn default() -> Self {
        Self {
            postpone: None,
            mode: CutOverMode::default(),
            lock_timeout_seconds: default_lock_timeout_seconds(),
            retries: default_retries(),
            old_table: OldTable::default(),
        }
    }
}

fn default_lock_timeout_seconds() -> i32 {
    3
}

fn default_retries() -> i32 {
    60
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CutOverMode {
    #[default]
    Atomic,
    TwoStep,
}

impl From<CutOverMode> for config::CutOverMode {
    fn from(mode: CutOverMode) -> Self {
        match mode {
            CutOverMode::Atomic => config::CutOverMode::Atomic,
            CutOverMode::TwoStep => config::CutOverMode::TwoStep,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OldTable {
    // gh-ost keeps the old table by default; a rollback then costs one RENAME.
    #[default]
    Keep,
    Drop,
}

/// Checks before the cut-over.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifySpec {
    /// Compare chunked checksums of the shared columns of both tables before the swap;
    /// mismatched chunks are copied again.
    #[serde(default = "default_true")]
    pub checksum: bool,
    /// With the checksum on: compare the chunks copied so far at brief consistent points during
    /// the copy, so the check before the swap compares only what changed since (single integer
    /// key, one copier). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub during_copy: Option<bool>,
}

impl Default for VerifySpec {
    fn default() -> Self {
        Self {
            checksum: true,
            during_copy: None,
        }
    }
}

/// Notifications.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HooksSpec {
    /// HTTP endpoints that receive a JSON POST at the chosen events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub webhooks: Vec<WebhookSpec>,
}

/// One webhook.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The http:// or https:// URL to POST to.
    #[x_kube(validation = Rule::new("self.matches('^https?://')")
        .message("webhook url must start with http:// or https://"))]
    #[schemars(length(min = 8, max = 2048))]
    pub url: String,

    /// The events to send (gh-ost's hook names). Empty: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub events: Vec<HookEvent>,

    /// The key that signs each body (HMAC-SHA256, in the X-Ghost-Signature header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HookEvent {
    Startup,
    Validated,
    RowcountComplete,
    BeforeRowCopy,
    BatchCopyRetry,
    Status,
    RowCopyComplete,
    BeforeCutOver,
    BeginPostponed,
    Success,
    Failure,
}

/// The engine's pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngineSpec {
    /// The engine image. Absent: the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// CPU and memory for the engine container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The engine pod's service account; it needs get/watch on this SchemaMigration and patch
    /// on its status. Absent: the operator's configured engine account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Node labels the engine pod must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the engine pod tolerates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Engine pod restarts before the migration fails. A restarted engine resumes from its last
    /// checkpoint.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: i32,
}

impl Default for EngineSpec {
    fn default() -> Self {
        Self {
            image: None,
            resources: None,
            service_account_name: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            backoff_limit: default_backoff_limit(),
        }
    }
}

fn default_backoff_limit() -> i32 {
    3
}

/// Observed state. The engine writes `progress` (field manager ghost-engine); the controller
/// writes every other field (ghost-operator).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaMigrationStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Queued, Pending, Validating, Copying, Verifying, Postponed, CuttingOver, Succeeded,
    /// Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MigrationPhase>,

    /// What is happening, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Ready, Succeeded, Failed, Throttled, CutOverPostponed, Queued and ControlsValid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The engine Job's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,

    /// When the engine Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the migration reached Succeeded, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// The engine's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressStatus>,

    /// Each control's value in force and where it came from (spec, annotation or default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub effective_controls: Vec<ControlSource>,
}

// No variant docs: see TlsMode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum MigrationPhase {
    Queued,
    Pending,
    Validating,
    Copying,
    Verifying,
    Postponed,
    CuttingOver,
    Succeeded,
    Failed,
    Cancelled,
}

impl MigrationPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationPhase::Queued => "Queued",
            MigrationPhase::Pending => "Pending",
            MigrationPhase::Validating => "Validating",
            MigrationPhase::Copying => "Copying",
            MigrationPhase::Verifying => "Verifying",
            MigrationPhase::Postponed => "Postponed",
            MigrationPhase::CuttingOver => "CuttingOver",
            MigrationPhase::Succeeded => "Succeeded",
            MigrationPhase::Failed => "Failed",
            MigrationPhase::Cancelled => "Cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MigrationPhase::Succeeded | MigrationPhase::Failed | MigrationPhase::Cancelled
        )
    }
}

impl fmt::Display for MigrationPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Phase> for MigrationPhase {
    fn from(phase: Phase) -> Self {
        match phase {
            Phase::Pending => MigrationPhase::Pending,
            Phase::Validating => MigrationPhase::Validating,
            Phase::Copying => MigrationPhase::Copying,
            Phase::Verifying => MigrationPhase::Verifying,
            Phase::Postponed => MigrationPhase::Postponed,
            Phase::CuttingOver => MigrationPhase::CuttingOver,
            Phase::Succeeded => MigrationPhase::Succeeded,
            Phase::Failed => MigrationPhase::Failed,
            Phase::Cancelled => MigrationPhase::Cancelled,
        }
    }
}

/// The engine's report, written by the engine pod only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressStatus {
    /// The engine's own phase; the controller derives status.phase from it and the Job's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MigrationPhase>,

    /// The engine's last message (the cause, when it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Percent of the estimated rows copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,

    /// Rows copied into the ghost table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_copied: Option<i64>,

    /// Estimated rows in the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_estimate: Option<i64>,

    /// Recent copy rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_second: Option<f64>,

    /// Estimated seconds until the row copy completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,

    /// Row changes read from the binary log and not yet applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<i64>,

    /// Age in milliseconds of the last heartbeat read back from the binary log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_lag_millis: Option<i64>,

    /// Replication lag in milliseconds: the largest among the inspected and control replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_lag_millis: Option<i64>,

    /// Whether the engine is throttled, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleStatus>,

    /// Cut-over attempts and how long writes were blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_over: Option<CutOverStatus>,

    /// When the engine last saved a resumable checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_time: Option<Time>,

    /// Rows in the last chunk copied (it follows copy.targetChunkTimeMillis when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<i64>,

    /// The checksum gate (spec.verify.checksum), once it has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<ChecksumStatus>,

    /// The original table, kept under this name after the swap (cutOver.oldTable: keep): name
    /// it in spec.revert.oldTable to revert, or drop it when no longer needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_old_table: Option<String>,
}

impl ProgressStatus {
    /// The status form of an engine snapshot.
    pub fn from_engine(progress: &Progress) -> Self {
        Self {
            phase: Some(progress.phase.into()),
            message: non_empty(&progress.message),
            percent: round_tenth(progress.percent()),
            rows_copied: Some(saturating_i64(progress.rows_copied)),
            rows_estimate: Some(saturating_i64(progress.rows_estimate)),
            rows_per_second: round_tenth(progress.rows_per_second),
            // Only a copy has an ETA; once it is complete, nothing is left to wait for but the
            // cut-over.
            eta_seconds: match progress.phase {
                Phase::Copying => progress.eta_seconds.map(saturating_i64),
                Phase::Verifying | Phase::Postponed | Phase::CuttingOver | Phase::Succeeded => {
                    Some(0)
                }
                _ => None,
            },
            backlog: Some(saturating_i64(progress.backlog)),
            heartbeat_lag_millis: progress.heartbeat_lag_millis.map(saturating_i64),
            replica_lag_millis: progress.replica_lag_millis.map(saturating_i64),
            throttle: Some(ThrottleStatus {
                active: progress.throttle.active,
                reason: non_empty(&progress.throttle.reason),
            }),
            cut_over: Some(CutOverStatus {
                attempts: i32::try_from(progress.cut_over_attempts).unwrap_or(i32::MAX),
                lock_millis: progress.cut_over_lock_millis.map(saturating_i64),
            }),
            chunk_size: (progress.chunk_size > 0).then(|| saturating_i64(progress.chunk_size)),
            checksum: (progress.checksum_passes > 0).then(|| ChecksumStatus {
                passes: i32::try_from(progress.checksum_passes).unwrap_or(i32::MAX),
                chunks_copied_again: saturating_i64(progress.chunks_recopied),
            }),
            checkpoint_time: progress
                .last_checkpoint_unix
                .and_then(|secs| k8s_openapi::jiff::Timestamp::from_second(secs).ok())
                .map(Time),
            kept_old_table: progress.kept_old_table.clone(),
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// One decimal keeps the status stable between reports, so server-side apply writes (and watch
// events for every consumer) happen only when something visible changed.
fn round_tenth(v: f64) -> Option<f64> {
    v.is_finite().then(|| (v * 10.0).round() / 10.0)
}

/// Throttle state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleStatus {
    /// The engine is throttled now.
    pub active: bool,
    /// Why, e.g. `commanded by user` or a lag or load reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the checksum gate did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChecksumStatus {
    /// Comparisons of both tables at a consistent point (1 when they matched at once).
    pub passes: i32,
    /// Chunks that differed and were copied again.
    pub chunks_copied_again: i64,
}

/// Cut-over statistics.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CutOverStatus {
    /// Cut-over attempts so far.
    pub attempts: i32,
    /// How long writes to the table were blocked by the successful cut-over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_millis: Option<i64>,
}

/// The value of one control and where it came from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlSource {
    /// The control: throttle, postponeCutOver, panic, chunkSize, dmlBatchSize, niceRatio,
    /// maxLagMillis, maxLoad or criticalLoad.
    pub name: String,
    /// The value in force, as text.
    pub value: String,
    /// spec, annotation or default.
    pub source: ValueSource,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueSource {
    Spec,
    Annotation,
    Default,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::progress::ThrottleState;

    const MINIMAL: &str = r#"
apiVersion: ghost.dev/v1alpha1
kind: SchemaMigration
metadata: {name: add-age, namespace: shop}
spec:
  connection:
    host: mariadb-0.mariadb
    database: shop
    credentialsSecretRef: {name: shop-db}
  table: users
  alter: ADD COLUMN age INT NOT NULL DEFAULT 0
"#;

    #[test]
    fn minimal_manifest_gets_defaults() {
        let smig: SchemaMigration = serde_yaml::from_str(MINIMAL).unwrap();
        let spec = &smig.spec;
        assert_eq!(spec.connection.port, 3306);
        assert_eq!(
            spec.connection.credentials_secret_ref.username_key,
            "username"
        );
        assert_eq!(
            spec.connection.credentials_secret_ref.password_key,
            "password"
        );
        assert!(spec.execute);
        assert!(spec.copy.is_none() && spec.throttle.is_none() && spec.cut_over.is_none());
        assert!(smig.status.is_none());
    }

    #[test]
    fn full_manifest_round_trips_in_camel_case() {
        let yaml = r#"
apiVersion: ghost.dev/v1alpha1
kind: SchemaMigration
metadata: {name: add-age}
spec:
  connection:
    host: db
    port: 3307
    database: shop
    credentialsSecretRef: {name: s, usernameKey: u, passwordKey: p}
    tls: {mode: verify-ca, caSecretRef: {name: ca, key: ca.crt}}
    inspectHost: replica-1:3306
    controlReplicas: ["replica-2:3306"]
  table: users
  alter: ADD COLUMN age INT
  execute: false
  copy: {chunkSize: 500, targetChunkTimeMillis: 500, threads: 4, dmlBatchSize: 50, niceRatio: 0.5}
  throttle:
    paused: true
    maxLagMillis: 2000
    maxLoad: {Threads_running: 25}
    criticalLoad: {Threads_running: 200}
    query: SELECT 0
    httpURL: http://gate/throttle
  cutOver: {postpone: true, mode: two-step, lockTimeoutSeconds: 5, retries: 10, oldTable: drop}
  verify: {checksum: false}
  hooks:
    webhooks: [{url: "https://hooks/x", events: [success, failure, before-cut-over]}]
  engine: {image: ghost:dev, backoffLimit: 1, nodeSelector: {pool: db}}
"#;
        let smig: SchemaMigration = serde_yaml::from_str(yaml).unwrap();
        let spec = &smig.spec;
        assert_eq!(
            spec.connection.tls.as_ref().unwrap().mode,
            TlsMode::VerifyCa
        );
        assert_eq!(spec.copy.as_ref().unwrap().nice_ratio, Some(0.5));
        let throttle = spec.throttle.as_ref().unwrap();
        assert_eq!(throttle.http_url.as_deref(), Some("http://gate/throttle"));
        assert_eq!(throttle.max_load.get("Threads_running"), Some(&25));
        let cut_over = spec.cut_over.as_ref().unwrap();
        assert_eq!(cut_over.mode, CutOverMode::TwoStep);
        assert_eq!(cut_over.old_table, OldTable::Drop);
        assert_eq!(
            spec.hooks.as_ref().unwrap().webhooks[0].events,
            vec![
                HookEvent::Success,
                HookEvent::Failure,
                HookEvent::BeforeCutOver
            ]
        );

        let json = serde_json::to_value(&smig).unwrap();
        assert_eq!(json["spec"]["throttle"]["httpURL"], "http://gate/throttle");
        assert_eq!(json["spec"]["cutOver"]["mode"], "two-step");
        assert_eq!(
            json["spec"]["connection"]["credentialsSecretRef"]["usernameKey"],
            "u"
        );
        let back: SchemaMigration = serde_json::from_value(json).unwrap();
        assert_eq!(back, smig);
    }

    #[test]
    fn struct_defaults_match_serde_defaults() {
        let cut_over: CutOverSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(cut_over, CutOverSpec::default());
        let verify: VerifySpec = serde_json::from_str("{}").unwrap();
        assert_eq!(verify, VerifySpec::default());
        let engine: EngineSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(engine, EngineSpec::default());
        let tls: TlsSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(tls.mode, TlsMode::VerifyIdentity);
    }

    #[test]
    fn progress_from_engine() {
        let progress = Progress {
            phase: Phase::Copying,
            rows_copied: 1234,
            rows_estimate: 5000,
            rows_per_second: 812.345,
            eta_seconds: Some(4),
            replica_lag_millis: Some(250),
            throttle: ThrottleState {
                active: true,
                reason: "commanded by user".into(),
            },
            cut_over_attempts: 0,
            ..Progress::default()
        };
        let status = ProgressStatus::from_engine(&progress);
        assert_eq!(status.phase, Some(MigrationPhase::Copying));
        assert_eq!(status.percent, Some(24.7));
        assert_eq!(status.rows_per_second, Some(812.3));
        assert_eq!(status.eta_seconds, Some(4));
        assert_eq!(status.heartbeat_lag_millis, None);
        assert_eq!(status.message, None);
        let throttle = status.throttle.unwrap();
        assert!(throttle.active);
        assert_eq!(throttle.reason.as_deref(), Some("commanded by user"));
        let json = serde_json::to_value(ProgressStatus::from_engine(&progress)).unwrap();
        assert_eq!(json["rowsCopied"], 1234);
        assert_eq!(json["replicaLagMillis"], 250);
        assert!(json.get("checkpointTime").is_none());
        assert!(json.get("checksum").is_none(), "no checksum before it ran");
        assert!(json.get("chunkSize").is_none(), "no chunk copied yet");
    }

    #[test]
    fn checksum_and_chunk_size_reach_the_status() {
        let progress = Progress {
            phase: Phase::CuttingOver,
            chunk_size: 2500,
            checksum_passes: 2,
            chunks_recopied: 3,
            ..Progress::default()
        };
        let json = serde_json::to_value(ProgressStatus::from_engine(&progress)).unwrap();
        assert_eq!(json["chunkSize"], 2500);
        assert_eq!(json["checksum"]["passes"], 2);
        assert_eq!(json["checksum"]["chunksCopiedAgain"], 3);
        assert_eq!(json["percent"], 100.0);
        assert_eq!(json["etaSeconds"], 0);
    }

    #[test]
    fn phases_map_and_print() {
        assert_eq!(
            MigrationPhase::from(Phase::CuttingOver),
            MigrationPhase::CuttingOver
        );
        assert_eq!(
            serde_json::to_value(MigrationPhase::CuttingOver).unwrap(),
            "CuttingOver"
        );
        assert_eq!(MigrationPhase::Queued.to_string(), "Queued");
        assert!(MigrationPhase::Cancelled.is_terminal());
        assert!(!MigrationPhase::Postponed.is_terminal());
        assert_eq!(
            config::CutOverMode::from(CutOverMode::TwoStep),
            config::CutOverMode::TwoStep
        );
    }
}
