//! The command line of `ghost migrate`: gh-ost's flags, parsed the way Go's `flag` package parses
//! them, then checked and clamped the way gh-ost's `main` does (inventory §1.0 and §2).
//!
//! Syntax: `-name`, `--name`, `--name=value`, and `--name value` for flags that take a value.
//! Booleans are `--name` or `--name=true|false|1|0` (any form Go's `strconv.ParseBool` accepts).
//! A later occurrence overrides an earlier one; `--statsd-tags` and `--webhook` accumulate.
//! `--` ends the flags, and since gh-ost takes no positional arguments, anything after it is an
//! error.

use std::fmt::Write as _;
use std::time::Duration;

use thiserror::Error;

use crate::engine::conn::Secret;
use crate::engine::wording;

/// Environment variable that supplies the password when `--password` is not given.
pub const PASSWORD_ENV: &str = "GHOST_PASSWORD";

const DEFAULT_CHUNK_SIZE: i64 = 1000;
/// gh-ost's is 10. Batches here end at source transactions and are coalesced, so their cost is
/// mostly the commit: 1000 held 15,000 row events/s on the benchmark where 10 held 12,000.
const DEFAULT_DML_BATCH_SIZE: i64 = 1000;
const DEFAULT_RETRIES: i64 = 60;
const DEFAULT_EXPONENTIAL_BACKOFF_MAX_INTERVAL: i64 = 64;
const DEFAULT_MAX_LAG_MILLIS: i64 = 1500;
const DEFAULT_HEARTBEAT_INTERVAL_MILLIS: i64 = 100;
const DEFAULT_CUT_OVER_LOCK_TIMEOUT_SECONDS: i64 = 3;
/// gh-ost's default is 300 s; a killed run then redoes up to five minutes. ghost's is 10 s.
const DEFAULT_CHECKPOINT_SECONDS: i64 = 10;

/// What a flag's value looks like. It decides whether `--name value` consumes the next argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    Bool,
    String,
    Int,
    Uint,
    Float,
    /// A Go duration such as `10s` or `1m30s`; a bare integer counts as seconds.
    Duration,
    /// A string that may be given several times; each occurrence appends.
    List,
}

impl FlagKind {
    fn placeholder(self) -> &'static str {
        match self {
            FlagKind::Bool => "",
            FlagKind::String => " string",
            FlagKind::Int => " int",
            FlagKind::Uint => " uint",
            FlagKind::Float => " float",
            FlagKind::Duration => " duration",
            FlagKind::List => " string (repeatable)",
        }
    }
}

/// One entry of the flag table.
#[derive(Clone, Copy, Debug)]
pub struct FlagDef {
    pub name: &'static str,
    pub kind: FlagKind,
    /// The default, written as it would be typed on the command line.
    pub default: &'static str,
    pub help: &'static str,
    /// True for ghost's own flags, which gh-ost does not have.
    pub ghost_only: bool,
}

const BOOL: FlagKind = FlagKind::Bool;
const STR: FlagKind = FlagKind::String;
const INT: FlagKind = FlagKind::Int;
const UINT: FlagKind = FlagKind::Uint;
const FLOAT: FlagKind = FlagKind::Float;
const DUR: FlagKind = FlagKind::Duration;
const LIST: FlagKind = FlagKind::List;

const fn gh(
    name: &'static str,
    kind: FlagKind,
    default: &'static str,
    help: &'static str,
) -> FlagDef {
    FlagDef {
        name,
        kind,
        default,
        help,
        ghost_only: false,
    }
}

const fn ghost(
    name: &'static str,
    kind: FlagKind,
    default: &'static str,
    help: &'static str,
) -> FlagDef {
    FlagDef {
        name,
        kind,
        default,
        help,
        ghost_only: true,
    }
}

/// Every flag `ghost migrate` accepts: gh-ost's 108, then ghost's own.
#[rustfmt::skip]
pub static FLAGS: &[FlagDef] = &[
    // Connection
    gh("host", STR, "127.0.0.1", "MySQL host to inspect; preferably a replica, not the master"),
    gh("port", INT, "3306", "MySQL port of --host"),
    gh("user", STR, "", "MySQL user"),
    gh("password", STR, "", "MySQL password (see also --ask-pass, --conf and GHOST_PASSWORD)"),
    gh("ask-pass", BOOL, "false", "prompt for the MySQL password on stdin"),
    gh("conf", STR, "", "ini file with [client] user and password; ${ENV} values are expanded"),
    gh("master-user", STR, "", "MySQL user on the master, if different; requires --assume-master-host"),
    gh("master-password", STR, "", "MySQL password on the master, if different; requires --assume-master-host"),
    gh("mysql-timeout", FLOAT, "0", "seconds to connect, and each session's net_read_timeout/net_write_timeout; 0 keeps the defaults"),
    gh("charset", STR, "utf8mb4,utf8,latin1", "connection charsets to try in order; ghost's sessions use utf8mb4, so the list must start with it"),
    gh("ssl", BOOL, "false", "connect with TLS (every connection), verified against the built-in roots (Mozilla's) and the host name"),
    gh("ssl-ca", STR, "", "PEM CA certificate that replaces the system pool; requires --ssl"),
    gh("ssl-cert", STR, "", "PEM client certificate; requires --ssl"),
    gh("ssl-key", STR, "", "PEM client key; requires --ssl"),
    gh("ssl-allow-insecure", BOOL, "false", "skip verifying the server certificate and host name; requires --ssl"),
    gh("skip-port-validation", BOOL, "false", "do not compare @@port with the port connected to"),
    gh("storage-engine", STR, "innodb", "table storage engine; rocksdb (experimental) uses READ-COMMITTED"),
    // Topology, replica and master
    gh("assume-master-host", STR, "", "the master as host[:port]; skips master detection"),
    gh("allow-on-master", BOOL, "false", "allow running directly on the master"),
    gh("allow-master-master", BOOL, "false", "accept an active-passive master-master setup"),
    gh("tungsten", BOOL, "false", "the topology uses Tungsten replication (likely with --assume-master-host)"),
    gh("test-on-replica", BOOL, "false", "migrate on the replica, swap and swap back, leave replication stopped"),
    gh("test-on-replica-skip-replica-stop", BOOL, "false", "with --test-on-replica, do not stop replication (a hook must)"),
    gh("migrate-on-replica", BOOL, "false", "run the whole migration, cut-over included, on the replica only"),
    gh("switch-to-rbr", BOOL, "false", "switch the replica's binlog_format to ROW if needed; never switched back"),
    gh("assume-rbr", BOOL, "false", "binlog_format is known to be ROW: skip the replication restart (no SUPER needed)"),
    gh("replica-server-id", UINT, "99999", "server_id of the binlog client; unique per concurrent migration"),
    gh("binlogsyncer-max-reconnect-attempts", INT, "0", "binlog reconnect attempts before giving up; 0 is unlimited"),
    gh("gtid", BOOL, "false", "position the binlog stream by GTID"),
    // Migration
    gh("database", STR, "", "database of the table; optional if --alter names it"),
    gh("table", STR, "", "table to migrate; optional if --alter names it"),
    gh("alter", STR, "", "ALTER options, or a full ALTER TABLE [db.]tbl ... statement"),
    gh("execute", BOOL, "false", "really migrate; without it the run is a noop"),
    gh("exact-rowcount", BOOL, "false", "count rows with SELECT COUNT(*) for an accurate progress estimate"),
    gh("concurrent-rowcount", BOOL, "true", "with --exact-rowcount, count while the row copy runs"),
    gh("chunk-size", INT, "1000", "rows per row-copy chunk (10..100000)"),
    gh("dml-batch-size", INT, "1000", "binlog events applied per transaction while changes wait (1..1000; gh-ost's default is 10)"),
    gh("default-retries", INT, "60", "retries of each operation before giving up"),
    gh("exponential-backoff-max-interval", INT, "64", "longest exponential backoff wait in seconds (at least 2)"),
    gh("panic-on-warnings", BOOL, "false", "fail on SQL warnings that signal data loss during copy or apply"),
    gh("allow-nullable-unique-key", BOOL, "false", "allow a migration key with nullable columns (NULLs corrupt data)"),
    gh("approve-renamed-columns", BOOL, "false", "approve the column renames detected in --alter"),
    gh("skip-renamed-columns", BOOL, "false", "treat detected renames as drop and add; their data is not copied"),
    gh("discard-foreign-keys", BOOL, "false", "migrate a table with foreign keys and create none on the new table"),
    gh("skip-foreign-key-checks", BOOL, "false", "skip the foreign key lookup; only when there are none"),
    gh("skip-strict-mode", BOOL, "false", "do not add STRICT_ALL_TABLES to the sql_mode"),
    gh("allow-zero-in-date", BOOL, "false", "remove NO_ZERO_IN_DATE and NO_ZERO_DATE from the session sql_mode"),
    gh("ok-to-drop-table", BOOL, "false", "drop the old table at the end"),
    gh("initially-drop-old-table", BOOL, "false", "drop a leftover old table at start instead of failing"),
    gh("initially-drop-ghost-table", BOOL, "false", "drop a leftover ghost table at start instead of failing"),
    gh("timestamp-old-table", BOOL, "false", "put a timestamp in the old table's name"),
    gh("force-table-names", STR, "", "base name for the _gho, _ghc, _ghk and _del tables"),
    gh("include-triggers", BOOL, "false", "recreate the table's triggers on the new table; requires --trigger-suffix"),
    gh("trigger-suffix", STR, "", "suffix of recreated trigger names ([0-9A-Za-z_]+); requires --include-triggers"),
    gh("remove-trigger-suffix-if-exists", BOOL, "false", "strip the suffix from trigger names already ending with it"),
    gh("replication-lag-query", STR, "", "deprecated and ignored"),
    // Throttling
    gh("max-lag-millis", INT, "1500", "replication lag that throttles, in milliseconds (at least 100)"),
    gh("throttle-control-replicas", STR, "", "comma-separated host[:port] replicas whose lag is checked"),
    gh("throttle-query", STR, "", "query run every second on the migrated server; a result > 0 throttles"),
    gh("throttle-http", STR, "", "URL checked with HEAD; any status but 200 throttles"),
    gh("throttle-http-interval-millis", INT, "100", "period of the HTTP throttle check"),
    gh("throttle-http-timeout-millis", INT, "1000", "timeout of the HTTP throttle check"),
    gh("ignore-http-errors", BOOL, "false", "do not throttle on HTTP connection errors"),
    gh("heartbeat-interval-millis", INT, "100", "heartbeat period in milliseconds (100..1000)"),
    gh("throttle-flag-file", STR, "", "throttle while this file exists"),
    gh("throttle-additional-flag-file", STR, "/tmp/gh-ost.throttle", "a second throttle flag file, shared by migrations"),
    gh("max-load", STR, "", "Status_var=N,...: throttle while a global status reaches N"),
    gh("critical-load", STR, "", "Status_var=N,...: abort when a global status reaches N"),
    gh("critical-load-interval-millis", INT, "0", "if non-zero, re-check critical-load after this delay before aborting"),
    gh("critical-load-hibernate-seconds", INT, "0", "if non-zero, hibernate this long on critical-load instead of aborting"),
    gh("nice-ratio", FLOAT, "0", "after each chunk, sleep this multiple of its copy time (0..100)"),
    // Cut-over
    gh("cut-over", STR, "atomic", "cut-over algorithm: atomic (alias default) or two-step"),
    gh("cut-over-lock-timeout-seconds", INT, "3", "longest table lock the cut-over holds, in seconds (1..10)"),
    gh("cut-over-exponential-backoff", BOOL, "false", "wait exponentially longer between failed cut-over attempts"),
    gh("postpone-cut-over-flag-file", STR, "", "postpone the cut-over while this file exists"),
    gh("force-named-cut-over", BOOL, "false", "the cut-over command must name the table"),
    gh("force-named-panic", BOOL, "false", "the panic command must name the table"),
    gh("panic-flag-file", STR, "", "abort at once, without cleanup, when this file appears"),
    gh("allow-setup-metadata-lock-instruments", BOOL, "false", "allow enabling the metadata-lock instrument in performance_schema"),
    gh("skip-metadata-lock-check", BOOL, "false", "skip the metadata-lock check before the cut-over"),
    gh("analyze-ghost-table-before-cutover", BOOL, "false", "ANALYZE the ghost table before the cut-over"),
    gh("attempt-instant-ddl", BOOL, "false", "try ALGORITHM=INSTANT on the table first"),
    // Hooks
    gh("hooks-path", STR, "", "directory of hook executables; empty disables hooks"),
    gh("hooks-hint", STR, "", "message passed to hooks as GH_OST_HOOKS_HINT"),
    gh("hooks-hint-owner", STR, "", "owner passed to hooks as GH_OST_HOOKS_HINT_OWNER"),
    gh("hooks-hint-token", STR, "", "token passed to hooks as GH_OST_HOOKS_HINT_TOKEN"),
    gh("hooks-status-interval", INT, "60", "seconds between on-status hook calls"),
    // Interactive server
    gh("serve-socket-file", STR, "", "unix socket for interactive commands; default /tmp/gh-ost.<db>.<table>.sock"),
    gh("serve-tcp-port", INT, "0", "TCP port for interactive commands; 0 disables"),
    gh("initially-drop-socket-file", BOOL, "false", "remove an existing socket file at start"),
    // Checkpoint, resume, revert
    gh("checkpoint", BOOL, "false", "write checkpoints to _<table>_ghk so that --resume can continue"),
    gh("checkpoint-seconds", INT, "10", "seconds between checkpoints (at least 10; gh-ost's default is 300)"),
    gh("resume", BOOL, "false", "resume from the last checkpoint"),
    gh("revert", BOOL, "false", "revert a completed migration; requires --old-table"),
    gh("old-table", STR, "", "old table (_<table>_del) to revert from"),
    // Cloud
    gh("aliyun-rds", BOOL, "false", "running on Aliyun RDS"),
    gh("gcp", BOOL, "false", "running on 1st-generation Google Cloud SQL"),
    gh("azure", BOOL, "false", "running on Azure Database for MySQL"),
    // Metrics
    gh("statsd-addr", STR, "", "StatsD host:port or unix socket; empty disables StatsD"),
    gh("statsd-tags", LIST, "", "global StatsD tag as key:value; repeatable"),
    gh("runtime-metrics-interval", DUR, "10s", "period of the runtime gauges; 0 disables them"),
    // Logging and meta
    gh("quiet", BOOL, "false", "log errors only; overrides --verbose and --debug"),
    gh("verbose", BOOL, "false", "log at info level"),
    gh("debug", BOOL, "false", "log at debug level"),
    gh("stack", BOOL, "false", "add stack traces to logged errors"),
    gh("help", BOOL, "false", "print this usage and exit"),
    gh("version", BOOL, "false", "print the version and exit"),
    gh("check-flag", BOOL, "false", "exit 0 if every other given flag exists (valued flags need dummy values)"),
    // ghost extensions
    ghost("log-format", STR, "text", "log format: text or json"),
    ghost("status-interval", INT, "0", "seconds between status lines; 0 keeps gh-ost's schedule"),
    ghost("http-addr", STR, "", "listen address of the HTTP API (loopback unless --http-token-file is given); empty disables it"),
    ghost("http-token-file", STR, "", "file with the token HTTP clients must send as Authorization: Bearer; required for a non-loopback --http-addr"),
    ghost("http-allow-sql", BOOL, "false", "let PUT /api/controls set throttleQuery, which runs SQL on the primary with ghost's grants"),
    ghost("webhook", LIST, "", "URL notified of migration events; repeatable"),
    ghost("webhook-secret", STR, "", "secret that signs webhook payloads"),
    ghost("checksum", BOOL, "true", "compare both tables chunk by chunk before the cut-over; chunks that differ are copied again"),
    ghost("checksum-during-copy", BOOL, "true", "with --checksum: compare the chunks copied so far at brief consistent points during the copy, so the gate before the cut-over compares only what changed since (single integer key, one copier)"),
    ghost("copy-without-locks", BOOL, "false", "the row copy reads the original as a consistent read (READ COMMITTED) instead of under shared row locks; deletes that race it are applied again (one copier, a single integer key, every new unique key enforced by the original)"),
    ghost("defer-secondary-indexes", BOOL, "true", "copy into the ghost table without its plain secondary indexes and build them online after the row copy"),
    ghost("skip-uncopied-changes", BOOL, "false", "leave binlog changes to rows the copy has not reached yet to the copy (single integer key, one copier; experimental)"),
    ghost("coalesce-changes", BOOL, "true", "write each batch of binlog changes as each row's last image, in multi-row statements (when every new unique key is enforced by the original)"),
    ghost("copy-threads", UINT, "1", "chunks copied at once, each on its own connection (1 to 64)"),
    ghost("apply-threads", UINT, "1", "sessions that apply each batch of binlog changes at once, split by key (1 to 64; where changes are coalesced and the key's columns are integer, decimal, temporal or VARBINARY)"),
    ghost("target-chunk-time-millis", UINT, "250", "resize chunks so each copy takes about this long, starting from --chunk-size; 0 keeps the size fixed (gh-ost's behaviour)"),
];

/// Everything the command line says, after defaults, `--conf`, validation and clamping.
///
/// Field names are the flag names in snake_case. Secrets are `Secret`, so `Debug` never shows them.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrateFlags {
    // Connection
    pub host: String,
    pub port: u16,
    /// After `--conf`: the command line wins, then `[client] user`.
    pub user: String,
    /// After `--conf`: `--password`, else `$GHOST_PASSWORD`, else `[client] password`.
    /// `--ask-pass` is left to the caller, and should override all of them.
    pub password: Secret,
    pub ask_pass: bool,
    pub conf: String,
    pub master_user: String,
    pub master_password: Secret,
    /// Seconds; 0 means the driver default.
    pub mysql_timeout: f64,
    pub charset: String,
    pub ssl: bool,
    pub ssl_ca: String,
    pub ssl_cert: String,
    pub ssl_key: String,
    pub ssl_allow_insecure: bool,
    pub skip_port_validation: bool,
    pub storage_engine: String,
    // Topology, replica and master
    pub assume_master_host: String,
    pub allow_on_master: bool,
    pub allow_master_master: bool,
    pub tungsten: bool,
    pub test_on_replica: bool,
    pub test_on_replica_skip_replica_stop: bool,
    pub migrate_on_replica: bool,
    pub switch_to_rbr: bool,
    pub assume_rbr: bool,
    pub replica_server_id: u32,
    pub binlogsyncer_max_reconnect_attempts: i64,
    pub gtid: bool,
    // Migration
    pub database: String,
    pub table: String,
    pub alter: String,
    pub execute: bool,
    pub exact_rowcount: bool,
    pub concurrent_rowcount: bool,
    pub chunk_size: i64,
    pub dml_batch_size: i64,
    pub default_retries: i64,
    pub exponential_backoff_max_interval: i64,
    pub panic_on_warnings: bool,
    pub allow_nullable_unique_key: bool,
    pub approve_renamed_columns: bool,
    pub skip_renamed_columns: bool,
    pub discard_foreign_keys: bool,
    pub skip_foreign_key_checks: bool,
    pub skip_strict_mode: bool,
    pub allow_zero_in_date: bool,
    pub ok_to_drop_table: bool,
    pub initially_drop_old_table: bool,
    pub initially_drop_ghost_table: bool,
    pub timestamp_old_table: bool,
    pub force_table_names: String,
    pub include_triggers: bool,
    pub trigger_suffix: String,
    pub remove_trigger_suffix_if_exists: bool,
    pub replication_lag_query: String,
    // Throttling
    pub max_lag_millis: i64,
    pub throttle_control_replicas: String,
    pub throttle_query: String,
    pub throttle_http: String,
    pub throttle_http_interval_millis: i64,
    pub throttle_http_timeout_millis: i64,
    pub ignore_http_errors: bool,
    pub heartbeat_interval_millis: i64,
    pub throttle_flag_file: String,
    pub throttle_additional_flag_file: String,
    pub max_load: String,
    pub critical_load: String,
    pub critical_load_interval_millis: i64,
    pub critical_load_hibernate_seconds: i64,
    pub nice_ratio: f64,
    // Cut-over
    /// Normalized: `"atomic"` (also for `default` and the empty string) or `"two-step"`.
    pub cut_over: String,
    pub cut_over_lock_timeout_seconds: i64,
    pub cut_over_exponential_backoff: bool,
    pub postpone_cut_over_flag_file: String,
    pub force_named_cut_over: bool,
    pub force_named_panic: bool,
    pub panic_flag_file: String,
    pub allow_setup_metadata_lock_instruments: bool,
    pub skip_metadata_lock_check: bool,
    pub analyze_ghost_table_before_cutover: bool,
    pub attempt_instant_ddl: bool,
    // Hooks
    pub hooks_path: String,
    pub hooks_hint: String,
    pub hooks_hint_owner: String,
    pub hooks_hint_token: Secret,
    pub hooks_status_interval: i64,
    // Interactive server
    /// Empty means the caller derives `/tmp/gh-ost.<db>.<table>.sock`.
    pub serve_socket_file: String,
    pub serve_tcp_port: u16,
    pub initially_drop_socket_file: bool,
    // Checkpoint, resume, revert
    pub checkpoint: bool,
    pub checkpoint_seconds: i64,
    pub resume: bool,
    pub revert: bool,
    pub old_table: String,
    // Cloud
    pub aliyun_rds: bool,
    pub gcp: bool,
    pub azure: bool,
    // Metrics
    pub statsd_addr: String,
    pub statsd_tags: Vec<String>,
    pub runtime_metrics_interval: Duration,
    // Logging and meta
    pub quiet: bool,
    pub verbose: bool,
    pub debug: bool,
    pub stack: bool,
    pub help: bool,
    pub version: bool,
    pub check_flag: bool,
    // ghost extensions
    /// `"text"` or `"json"`.
    pub log_format: String,
    /// Seconds between status lines; 0 keeps gh-ost's schedule.
    pub status_interval: i64,
    pub http_addr: String,
    pub http_token_file: String,
    pub http_allow_sql: bool,
    pub webhook: Vec<String>,
    pub webhook_secret: Secret,
    pub checksum: bool,
    pub defer_secondary_indexes: bool,
    pub skip_uncopied_changes: bool,
    pub checksum_during_copy: bool,
    pub copy_without_locks: bool,
    pub coalesce_changes: bool,
    pub target_chunk_time_millis: u32,
    pub copy_threads: u32,
    pub apply_threads: u32,
    /// Values gh-ost would silently adjust or ignore; the caller should log them.
    pub warnings: Vec<String>,
}

impl Default for MigrateFlags {
    /// gh-ost's defaults. `FLAGS` repeats them for `usage()`; a test keeps the two in step.
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_string(),
            port: 3306,
            user: String::new(),
            password: Secret::default(),
            ask_pass: false,
            conf: String::new(),
            master_user: String::new(),
            master_password: Secret::default(),
            mysql_timeout: 0.0,
            charset: "utf8mb4,utf8,latin1".to_string(),
            ssl: false,
            ssl_ca: String::new(),
            ssl_cert: String::new(),
            ssl_key: String::new(),
            ssl_allow_insecure: false,
            skip_port_validation: false,
            storage_engine: "innodb".to_string(),
            assume_master_host: String::new(),
            allow_on_master: false,
            allow_master_master: false,
            tungsten: false,
            test_on_replica: false,
            test_on_replica_skip_replica_stop: false,
            migrate_on_replica: false,
            switch_to_rbr: false,
            assume_rbr: false,
            replica_server_id: 99999,
            binlogsyncer_max_reconnect_attempts: 0,
            gtid: false,
            database: String::new(),
            table: String::new(),
            alter: String::new(),
            execute: false,
            exact_rowcount: false,
            concurrent_rowcount: true,
            chunk_size: DEFAULT_CHUNK_SIZE,
            dml_batch_size: DEFAULT_DML_BATCH_SIZE,
            default_retries: DEFAULT_RETRIES,
            exponential_backoff_max_interval: DEFAULT_EXPONENTIAL_BACKOFF_MAX_INTERVAL,
            panic_on_warnings: false,
            allow_nullable_unique_key: false,
            approve_renamed_columns: false,
            skip_renamed_columns: false,
            discard_foreign_keys: false,
            skip_foreign_key_checks: false,
            skip_strict_mode: false,
            allow_zero_in_date: false,
            ok_to_drop_table: false,
            initially_drop_old_table: false,
            initially_drop_ghost_table: false,
            timestamp_old_table: false,
            force_table_names: String::new(),
            include_triggers: false,
            trigger_suffix: String::new(),
            remove_trigger_suffix_if_exists: false,
            replication_lag_query: String::new(),
            max_lag_millis: DEFAULT_MAX_LAG_MILLIS,
            throttle_control_replicas: String::new(),
            throttle_query: String::new(),
            throttle_http: String::new(),
            throttle_http_interval_millis: 100,
            throttle_http_timeout_millis: 1000,
            ignore_http_errors: false,
            heartbeat_interval_millis: DEFAULT_HEARTBEAT_INTERVAL_MILLIS,
            throttle_flag_file: String::new(),
            throttle_additional_flag_file: "/tmp/gh-ost.throttle".to_string(),
            max_load: String::new(),
            critical_load: String::new(),
            critical_load_interval_millis: 0,
            critical_load_hibernate_seconds: 0,
            nice_ratio: 0.0,
            cut_over: "atomic".to_string(),
            cut_over_lock_timeout_seconds: DEFAULT_CUT_OVER_LOCK_TIMEOUT_SECONDS,
            cut_over_exponential_backoff: false,
            postpone_cut_over_flag_file: String::new(),
            force_named_cut_over: false,
            force_named_panic: false,
            panic_flag_file: String::new(),
            allow_setup_metadata_lock_instruments: false,
            skip_metadata_lock_check: false,
            analyze_ghost_table_before_cutover: false,
            attempt_instant_ddl: false,
            hooks_path: String::new(),
            hooks_hint: String::new(),
            hooks_hint_owner: String::new(),
            hooks_hint_token: Secret::default(),
            hooks_status_interval: 60,
            serve_socket_file: String::new(),
            serve_tcp_port: 0,
            initially_drop_socket_file: false,
            checkpoint: false,
            checkpoint_seconds: DEFAULT_CHECKPOINT_SECONDS,
            resume: false,
            revert: false,
            old_table: String::new(),
            aliyun_rds: false,
            gcp: false,
            azure: false,
            statsd_addr: String::new(),
            statsd_tags: Vec::new(),
            runtime_metrics_interval: Duration::from_secs(10),
            quiet: false,
            verbose: false,
            debug: false,
            stack: false,
            help: false,
            version: false,
            check_flag: false,
            log_format: "text".to_string(),
            status_interval: 0,
            http_addr: String::new(),
            http_token_file: String::new(),
            http_allow_sql: false,
            webhook: Vec::new(),
            webhook_secret: Secret::default(),
            checksum: true,
            defer_secondary_indexes: true,
            skip_uncopied_changes: false,
            checksum_during_copy: true,
            copy_without_locks: false,
            coalesce_changes: true,
            target_chunk_time_millis: 250,
            copy_threads: 1,
            apply_threads: 1,
            warnings: Vec::new(),
        }
    }
}

/// Why the command line was refused. Each message is one line and names the flag.
#[derive(Debug, Error)]
pub enum FlagError {
    #[error("unknown flag --{name}{}", did_you_mean(.suggestion))]
    UnknownFlag {
        name: String,
        suggestion: Option<String>,
    },
    #[error("flag --{name} needs a value")]
    MissingValue { name: String },
    #[error("invalid value {value:?} for --{name}: expected {expected}")]
    InvalidValue {
        name: String,
        value: String,
        expected: &'static str,
    },
    #[error("bad flag syntax: {arg}")]
    BadSyntax { arg: String },
    #[error(
        "unexpected argument {arg:?}: ghost migrate takes no positional arguments{}",
        bool_hint(.after_bool_flag, .arg)
    )]
    UnexpectedArgument {
        arg: String,
        /// Set when the argument looks like the value of the boolean flag just before it.
        after_bool_flag: Option<String>,
    },
    #[error("cannot read --conf file {path}: {source}")]
    ConfRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--conf file {path}, line {line}: {reason}")]
    ConfSyntax {
        path: String,
        line: usize,
        reason: String,
    },
    /// A conflict or out-of-range value; the message names the flags and the fix.
    #[error("{0}")]
    Invalid(String),
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(name) => format!("; did you mean --{name}?"),
        None => String::new(),
    }
}

fn bool_hint(after_bool_flag: &Option<String>, arg: &str) -> String {
    match after_bool_flag {
        Some(flag) => format!("; boolean flags take their value after '=', as in --{flag}={arg}"),
        None => String::new(),
    }
}

/// Parses `ghost migrate`'s arguments (without the program and subcommand names).
///
/// `env` looks up environment variables: `GHOST_PASSWORD` and the `${NAME}` values of `--conf`.
/// With `--help`, `--version` or `--check-flag`, only the syntax is checked, as in gh-ost, which
/// exits before validating anything else.
pub fn parse_migrate_flags(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<MigrateFlags, FlagError> {
    let mut flags = MigrateFlags::default();
    let mut rest = args.iter();
    // The boolean flag given just before, without '=': `--execute false` is a common slip.
    let mut bare_bool: Option<&'static str> = None;
    while let Some(arg) = rest.next() {
        if arg == "--" {
            if let Some(stray) = rest.next() {
                return Err(FlagError::UnexpectedArgument {
                    arg: stray.clone(),
                    after_bool_flag: None,
                });
            }
            break;
        }
        // Go treats "-" and anything not starting with '-' as the first positional argument.
        let Some(body) = arg.strip_prefix('-').filter(|body| !body.is_empty()) else {
            let after_bool_flag = bare_bool
                .filter(|_| parse_go_bool(arg).is_some())
                .map(str::to_string);
            return Err(FlagError::UnexpectedArgument {
                arg: arg.clone(),
                after_bool_flag,
            });
        };
        let body = body.strip_prefix('-').unwrap_or(body);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(FlagError::BadSyntax { arg: arg.clone() });
        }
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        // Go's flag package answers -h with usage even though no flag "h" is defined.
        let name = if name == "h" { "help" } else { name };
        let Some(def) = lookup(name) else {
            return Err(unknown_flag(name));
        };
        bare_bool = None;
        let value: &str = match (def.kind, inline) {
            (_, Some(value)) => value,
            (FlagKind::Bool, None) => {
                bare_bool = Some(def.name);
                "true"
            }
            // Like Go, the next argument is the value even if it starts with '-'.
            (_, None) => match rest.next() {
                Some(value) => value.as_str(),
                None => {
                    return Err(FlagError::MissingValue {
                        name: def.name.to_string(),
                    });
                }
            },
        };
        flags.apply(def.name, value)?;
    }

    if flags.help || flags.version || flags.check_flag {
        return Ok(flags);
    }
    flags.validate()?;
    flags.resolve_credentials(env)?;
    flags.adjust();
    Ok(flags)
}

/// The `--help` text: every flag, sorted, with its default and help.
pub fn usage() -> String {
    let mut defs: Vec<&FlagDef> = FLAGS.iter().collect();
    defs.sort_by_key(|def| def.name);
    let mut out = String::from(
        "Usage: ghost migrate [flags]\n\n\
         Flags use gh-ost's syntax: -name, --name, --name=value, or --name value.\n\n",
    );
    for def in defs {
        let _ = writeln!(out, "  --{}{}", def.name, def.kind.placeholder());
        let _ = write!(out, "        {}", def.help);
        if !matches!(def.default, "" | "0" | "false") {
            if def.kind == FlagKind::String {
                let _ = write!(out, " (default {:?})", def.default);
            } else {
                let _ = write!(out, " (default {})", def.default);
            }
        }
        if def.ghost_only {
            out.push_str(" [ghost extension]");
        }
        out.push('\n');
    }
    out
}

fn lookup(name: &str) -> Option<&'static FlagDef> {
    FLAGS.iter().find(|def| def.name == name)
}

fn unknown_flag(name: &str) -> FlagError {
    FlagError::UnknownFlag {
        name: name.to_string(),
        suggestion: suggest(name).map(str::to_string),
    }
}

/// The closest flag name: within edit distance 3 (and shorter than the typed name, so `--x`
/// does not suggest `--ssl`), or a prefix either way (`--chunk` → `--chunk-size`).
fn suggest(name: &str) -> Option<&'static str> {
    let typed_len = name.chars().count();
    FLAGS
        .iter()
        .map(|def| (levenshtein(name, def.name), def.name))
        .filter(|&(distance, candidate)| {
            (distance <= 3 && distance < typed_len)
                || candidate.starts_with(name)
                || name.starts_with(candidate)
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// One raw value on its way into a typed field; knows how to word its own error.
struct Value<'a> {
    name: &'a str,
    raw: &'a str,
}

impl Value<'_> {
    fn invalid(&self, expected: &'static str) -> FlagError {
        FlagError::InvalidValue {
            name: self.name.to_string(),
            value: self.raw.to_string(),
            expected,
        }
    }

    fn string(&self) -> String {
        self.raw.to_string()
    }

    fn secret(&self) -> Secret {
        Secret::new(self.raw)
    }

    fn boolean(&self) -> Result<bool, FlagError> {
        parse_go_bool(self.raw).ok_or_else(|| self.invalid("a boolean (true, false, 1 or 0)"))
    }

    fn int(&self) -> Result<i64, FlagError> {
        parse_go_int(self.raw).ok_or_else(|| self.invalid("an integer"))
    }

    fn port(&self) -> Result<u16, FlagError> {
        parse_go_int(self.raw)
            .and_then(|value| u16::try_from(value).ok())
            .ok_or_else(|| self.invalid("a port number (0..65535)"))
    }

    fn uint32(&self) -> Result<u32, FlagError> {
        parse_go_int(self.raw)
            .and_then(|value| u32::try_from(value).ok())
            .ok_or_else(|| self.invalid("an unsigned 32-bit integer"))
    }

    fn float(&self) -> Result<f64, FlagError> {
        // Infinity and NaN parse, but no flag can use them.
        self.raw
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
            .ok_or_else(|| self.invalid("a number"))
    }

    fn duration(&self) -> Result<Duration, FlagError> {
        parse_go_duration(self.raw)
            .ok_or_else(|| self.invalid("a duration such as 10s, 500ms or 1m30s"))
    }
}

impl MigrateFlags {
    /// Stores one flag's value. Every name in `FLAGS` has an arm; a test checks it.
    fn apply(&mut self, name: &str, raw: &str) -> Result<(), FlagError> {
        let v = Value { name, raw };
        match name {
            "host" => self.host = v.string(),
            "port" => self.port = v.port()?,
            "user" => self.user = v.string(),
            "password" => self.password = v.secret(),
            "ask-pass" => self.ask_pass = v.boolean()?,
            "conf" => self.conf = v.string(),
            "master-user" => self.master_user = v.string(),
            "master-password" => self.master_password = v.secret(),
            "mysql-timeout" => self.mysql_timeout = v.float()?,
            "charset" => self.charset = v.string(),
            "ssl" => self.ssl = v.boolean()?,
            "ssl-ca" => self.ssl_ca = v.string(),
            "ssl-cert" => self.ssl_cert = v.string(),
            "ssl-key" => self.ssl_key = v.string(),
            "ssl-allow-insecure" => self.ssl_allow_insecure = v.boolean()?,
            "skip-port-validation" => self.skip_port_validation = v.boolean()?,
            "storage-engine" => self.storage_engine = v.string(),
            "assume-master-host" => self.assume_master_host = v.string(),
            "allow-on-master" => self.allow_on_master = v.boolean()?,
            "allow-master-master" => self.allow_master_master = v.boolean()?,
            "tungsten" => self.tungsten = v.boolean()?,
            "test-on-replica" => self.test_on_replica = v.boolean()?,
            "test-on-replica-skip-replica-stop" => {
                self.test_on_replica_skip_replica_stop = v.boolean()?
            }
            "migrate-on-replica" => self.migrate_on_replica = v.boolean()?,
            "switch-to-rbr" => self.switch_to_rbr = v.boolean()?,
            "assume-rbr" => self.assume_rbr = v.boolean()?,
            "replica-server-id" => self.replica_server_id = v.uint32()?,
            "binlogsyncer-max-reconnect-attempts" => {
                self.binlogsyncer_max_reconnect_attempts = v.int()?
            }
            "gtid" => self.gtid = v.boolean()?,
            "database" => self.database = v.string(),
            "table" => self.table = v.string(),
            "alter" => self.alter = v.string(),
            "execute" => self.execute = v.boolean()?,
            "exact-rowcount" => self.exact_rowcount = v.boolean()?,
            "concurrent-rowcount" => self.concurrent_rowcount = v.boolean()?,
            "chunk-size" => self.chunk_size = v.int()?,
            "dml-batch-size" => self.dml_batch_size = v.int()?,
            "default-retries" => self.default_retries = v.int()?,
            "exponential-backoff-max-interval" => {
                self.exponential_backoff_max_interval = v.int()?
            }
            "panic-on-warnings" => self.panic_on_warnings = v.boolean()?,
            "allow-nullable-unique-key" => self.allow_nullable_unique_key = v.boolean()?,
            "approve-renamed-columns" => self.approve_renamed_columns = v.boolean()?,
            "skip-renamed-columns" => self.skip_renamed_columns = v.boolean()?,
            "discard-foreign-keys" => self.discard_foreign_keys = v.boolean()?,
            "skip-foreign-key-checks" => self.skip_foreign_key_checks = v.boolean()?,
            "skip-strict-mode" => self.skip_strict_mode = v.boolean()?,
            "allow-zero-in-date" => self.allow_zero_in_date = v.boolean()?,
            "ok-to-drop-table" => self.ok_to_drop_table = v.boolean()?,
            "initially-drop-old-table" => self.initially_drop_old_table = v.boolean()?,
            "initially-drop-ghost-table" => self.initially_drop_ghost_table = v.boolean()?,
            "timestamp-old-table" => self.timestamp_old_table = v.boolean()?,
            "force-table-names" => self.force_table_names = v.string(),
            "include-triggers" => self.include_triggers = v.boolean()?,
            "trigger-suffix" => self.trigger_suffix = v.string(),
            "remove-trigger-suffix-if-exists" => {
                self.remove_trigger_suffix_if_exists = v.boolean()?
            }
            "replication-lag-query" => self.replication_lag_query = v.string(),
            "max-lag-millis" => self.max_lag_millis = v.int()?,
            "throttle-control-replicas" => self.throttle_control_replicas = v.string(),
            "throttle-query" => self.throttle_query = v.string(),
            "throttle-http" => self.throttle_http = v.string(),
            "throttle-http-interval-millis" => self.throttle_http_interval_millis = v.int()?,
            "throttle-http-timeout-millis" => self.throttle_http_timeout_millis = v.int()?,
            "ignore-http-errors" => self.ignore_http_errors = v.boolean()?,
            "heartbeat-interval-millis" => self.heartbeat_interval_millis = v.int()?,
            "throttle-flag-file" => self.throttle_flag_file = v.string(),
            "throttle-additional-flag-file" => self.throttle_additional_flag_file = v.string(),
            "max-load" => self.max_load = v.string(),
            "critical-load" => self.critical_load = v.string(),
            "critical-load-interval-millis" => self.critical_load_interval_millis = v.int()?,
            "critical-load-hibernate-seconds" => self.critical_load_hibernate_seconds = v.int()?,
            "nice-ratio" => self.nice_ratio = v.float()?,
            "cut-over" => self.cut_over = v.string(),
            "cut-over-lock-timeout-seconds" => self.cut_over_lock_timeout_seconds = v.int()?,
            "cut-over-exponential-backoff" => self.cut_over_exponential_backoff = v.boolean()?,
            "postpone-cut-over-flag-file" => self.postpone_cut_over_flag_file = v.string(),
            "force-named-cut-over" => self.force_named_cut_over = v.boolean()?,
            "force-named-panic" => self.force_named_panic = v.boolean()?,
            "panic-flag-file" => self.panic_flag_file = v.string(),
            "allow-setup-metadata-lock-instruments" => {
                self.allow_setup_metadata_lock_instruments = v.boolean()?
            }
            "skip-metadata-lock-check" => self.skip_metadata_lock_check = v.boolean()?,
            "analyze-ghost-table-before-cutover" => {
                self.analyze_ghost_table_before_cutover = v.boolean()?
            }
            "attempt-instant-ddl" => self.attempt_instant_ddl = v.boolean()?,
            "hooks-path" => self.hooks_path = v.string(),
            "hooks-hint" => self.hooks_hint = v.string(),
            "hooks-hint-owner" => self.hooks_hint_owner = v.string(),
            "hooks-hint-token" => self.hooks_hint_token = v.secret(),
            "hooks-status-interval" => self.hooks_status_interval = v.int()?,
            "serve-socket-file" => self.serve_socket_file = v.string(),
            "serve-tcp-port" => self.serve_tcp_port = v.port()?,
            "initially-drop-socket-file" => self.initially_drop_socket_file = v.boolean()?,
            "checkpoint" => self.checkpoint = v.boolean()?,
            "checkpoint-seconds" => self.checkpoint_seconds = v.int()?,
            "resume" => self.resume = v.boolean()?,
            "revert" => self.revert = v.boolean()?,
            "old-table" => self.old_table = v.string(),
            "aliyun-rds" => self.aliyun_rds = v.boolean()?,
            "gcp" => self.gcp = v.boolean()?,
            "azure" => self.azure = v.boolean()?,
            "statsd-addr" => self.statsd_addr = v.string(),
            "statsd-tags" => self.statsd_tags.push(v.string()),
            "runtime-metrics-interval" => self.runtime_metrics_interval = v.duration()?,
            "quiet" => self.quiet = v.boolean()?,
            "verbose" => self.verbose = v.boolean()?,
            "debug" => self.debug = v.boolean()?,
            "stack" => self.stack = v.boolean()?,
            "help" => self.help = v.boolean()?,
            "version" => self.version = v.boolean()?,
            "check-flag" => self.check_flag = v.boolean()?,
            "log-format" => self.log_format = v.string(),
            "status-interval" => self.status_interval = v.int()?,
            "http-addr" => self.http_addr = v.string(),
            "http-token-file" => self.http_token_file = v.string(),
            "http-allow-sql" => self.http_allow_sql = v.boolean()?,
            "webhook" => self.webhook.push(v.string()),
            "webhook-secret" => self.webhook_secret = v.secret(),
            "checksum" => self.checksum = v.boolean()?,
            "defer-secondary-indexes" => self.defer_secondary_indexes = v.boolean()?,
            "skip-uncopied-changes" => self.skip_uncopied_changes = v.boolean()?,
            "checksum-during-copy" => self.checksum_during_copy = v.boolean()?,
            "copy-without-locks" => self.copy_without_locks = v.boolean()?,
            "coalesce-changes" => self.coalesce_changes = v.boolean()?,
            "target-chunk-time-millis" => self.target_chunk_time_millis = v.uint32()?,
            "copy-threads" => self.copy_threads = v.uint32()?,
            "apply-threads" => self.apply_threads = v.uint32()?,
            _ => return Err(unknown_flag(name)),
        }
        Ok(())
    }

    /// gh-ost's start-up checks (inventory §1.0), in gh-ost's order, plus ghost's own flags.
    fn validate(&mut self) -> Result<(), FlagError> {
        if self.port == 0 {
            return Err(FlagError::Invalid(
                "--port=0 is not a port: give the MySQL port of --host (default 3306)".to_string(),
            ));
        }
        if self.allow_on_master && self.test_on_replica {
            return Err(conflict("allow-on-master", "test-on-replica"));
        }
        if self.allow_on_master && self.migrate_on_replica {
            return Err(conflict("allow-on-master", "migrate-on-replica"));
        }
        if self.migrate_on_replica && self.test_on_replica {
            return Err(conflict("migrate-on-replica", "test-on-replica"));
        }
        if self.switch_to_rbr && self.assume_rbr {
            return Err(conflict("switch-to-rbr", "assume-rbr"));
        }
        if self.test_on_replica_skip_replica_stop && !self.test_on_replica {
            return Err(FlagError::Invalid(format!(
                "{}; add --test-on-replica or drop --test-on-replica-skip-replica-stop",
                wording::SKIP_REPLICA_STOP_REQUIRES
            )));
        }
        if !self.master_user.is_empty() && self.assume_master_host.is_empty() {
            return Err(requires("master-user", "assume-master-host=host[:port]"));
        }
        if !self.master_password.expose().is_empty() && self.assume_master_host.is_empty() {
            return Err(requires(
                "master-password",
                "assume-master-host=host[:port]",
            ));
        }
        let ssl_options = [
            ("ssl-ca", !self.ssl_ca.is_empty()),
            ("ssl-cert", !self.ssl_cert.is_empty()),
            ("ssl-key", !self.ssl_key.is_empty()),
            ("ssl-allow-insecure", self.ssl_allow_insecure),
        ];
        if let Some((name, _)) = ssl_options.iter().find(|(_, set)| *set && !self.ssl) {
            return Err(requires(name, "ssl"));
        }
        if self.include_triggers && self.trigger_suffix.is_empty() {
            return Err(FlagError::Invalid(format!(
                "{}: --include-triggers requires --trigger-suffix; add --trigger-suffix=<suffix>",
                wording::TRIGGER_SUFFIX_WITH_INCLUDE
            )));
        }
        if !self.include_triggers && !self.trigger_suffix.is_empty() {
            return Err(FlagError::Invalid(format!(
                "{}; add --include-triggers or drop --trigger-suffix",
                wording::TRIGGER_SUFFIX_WITHOUT_INCLUDE
            )));
        }
        if !self.trigger_suffix.is_empty()
            && !self
                .trigger_suffix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(FlagError::Invalid(format!(
                "{}; --trigger-suffix={:?} is not",
                wording::TRIGGER_SUFFIX_CHARACTERS,
                self.trigger_suffix
            )));
        }
        if self.checkpoint_seconds < 10 {
            return Err(FlagError::Invalid(format!(
                "{}; --checkpoint-seconds={} is too small",
                wording::CHECKPOINT_SECONDS,
                self.checkpoint_seconds
            )));
        }
        if !(1..=64).contains(&self.copy_threads) {
            return Err(FlagError::Invalid(format!(
                "--copy-threads={} is out of range; use 1 to 64",
                self.copy_threads
            )));
        }
        if !(1..=64).contains(&self.apply_threads) {
            return Err(FlagError::Invalid(format!(
                "--apply-threads={} is out of range; use 1 to 64",
                self.apply_threads
            )));
        }
        if self.revert && self.old_table.is_empty() {
            return Err(FlagError::Invalid(format!(
                "{}; add --old-table=_<table>_del",
                wording::REVERT_NEEDS_OLD_TABLE
            )));
        }
        if self.revert && self.resume {
            return Err(FlagError::Invalid(format!(
                "{}; drop one of them",
                wording::REVERT_WITH_RESUME
            )));
        }
        self.cut_over = match self.cut_over.as_str() {
            "atomic" | "default" | "" => "atomic".to_string(),
            "two-step" => "two-step".to_string(),
            _ => {
                return Err(FlagError::Invalid(format!(
                    "{}; use --cut-over=atomic, default or two-step",
                    wording::unknown_cut_over(&self.cut_over)
                )));
            }
        };
        charset_is_utf8mb4(&self.charset)?;
        if self.mysql_timeout < 0.0 {
            return Err(FlagError::Invalid(format!(
                "--mysql-timeout={} is negative; use 0 (driver default) or a number of seconds",
                self.mysql_timeout
            )));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(FlagError::InvalidValue {
                name: "log-format".to_string(),
                value: self.log_format.clone(),
                expected: "text or json",
            });
        }
        if self.status_interval < 0 {
            return Err(FlagError::Invalid(format!(
                "--status-interval={} is negative; use 0 (gh-ost's schedule) or a number of seconds",
                self.status_interval
            )));
        }
        Ok(())
    }

    /// Reads `--conf` and settles the user and password (see the field docs for precedence).
    fn resolve_credentials(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), FlagError> {
        let conf = if self.conf.is_empty() {
            ConfCredentials::default()
        } else {
            read_conf(&self.conf, env)?
        };
        if self.user.is_empty() {
            self.user = conf.user.unwrap_or_default();
        }
        if self.password.expose().is_empty() {
            let from_env = env(PASSWORD_ENV).filter(|password| !password.is_empty());
            self.password = Secret::new(from_env.or(conf.password).unwrap_or_default());
        }
        Ok(())
    }

    /// gh-ost's clamping and silently ignored values, made visible as warnings.
    fn adjust(&mut self) {
        let warnings = &mut self.warnings;
        clamp(warnings, "chunk-size", &mut self.chunk_size, 10, 100_000);
        clamp(
            warnings,
            "dml-batch-size",
            &mut self.dml_batch_size,
            1,
            1000,
        );
        clamp(
            warnings,
            "max-lag-millis",
            &mut self.max_lag_millis,
            100,
            i64::MAX,
        );
        clamp(
            warnings,
            "heartbeat-interval-millis",
            &mut self.heartbeat_interval_millis,
            100,
            1000,
        );
        if self.nice_ratio < 0.0 {
            warnings.push(format!(
                "--nice-ratio={} is below the minimum 0; using 0",
                self.nice_ratio
            ));
            self.nice_ratio = 0.0;
        } else if self.nice_ratio > 100.0 {
            warnings.push(format!(
                "--nice-ratio={} is above the maximum 100; using 100",
                self.nice_ratio
            ));
            self.nice_ratio = 100.0;
        }
        // gh-ost refuses these values and keeps its default rather than clamping.
        keep_default(
            warnings,
            "cut-over-lock-timeout-seconds",
            &mut self.cut_over_lock_timeout_seconds,
            (1, 10),
            DEFAULT_CUT_OVER_LOCK_TIMEOUT_SECONDS,
        );
        keep_default(
            warnings,
            "exponential-backoff-max-interval",
            &mut self.exponential_backoff_max_interval,
            (2, i64::MAX),
            DEFAULT_EXPONENTIAL_BACKOFF_MAX_INTERVAL,
        );
        keep_default(
            warnings,
            "default-retries",
            &mut self.default_retries,
            (1, i64::MAX),
            DEFAULT_RETRIES,
        );
        if self.test_on_replica_skip_replica_stop {
            warnings.push(
                "--test-on-replica-skip-replica-stop: replication will not be stopped before \
                 the cut-over; a hook must stop it"
                    .to_string(),
            );
        }
        if !self.replication_lag_query.is_empty() {
            warnings.push("--replication-lag-query is deprecated and ignored".to_string());
        }
        if self.storage_engine == "rocksdb" {
            warnings.push("--storage-engine=rocksdb is experimental".to_string());
        }
    }
}

fn conflict(a: &str, b: &str) -> FlagError {
    FlagError::Invalid(format!(
        "{}; drop one of them",
        wording::mutually_exclusive(a, b)
    ))
}

/// `needed` may carry a value hint ("assume-master-host=host[:port]").
/// ghost's sessions always speak utf8mb4: row values travel as bytes, and another connection
/// charset would make the server convert (and could mangle) them. gh-ost's list is "try in
/// order", so any list that starts with utf8mb4 gets utf8mb4 there too.
fn charset_is_utf8mb4(list: &str) -> Result<(), FlagError> {
    let first = list.split(',').map(str::trim).next().unwrap_or_default();
    if list.trim().is_empty() || first.eq_ignore_ascii_case("utf8mb4") {
        return Ok(());
    }
    Err(FlagError::Invalid(format!(
        "--charset={list}: ghost's sessions always use utf8mb4 (values are copied as bytes, \
         whatever the tables' charsets); leave --charset out or start the list with utf8mb4"
    )))
}

fn requires(flag: &str, needed: &str) -> FlagError {
    let needed_name = needed.split_once('=').map_or(needed, |(name, _)| name);
    FlagError::Invalid(format!(
        "{}; add --{needed} or drop --{flag}",
        wording::requires(flag, needed_name)
    ))
}

fn clamp(warnings: &mut Vec<String>, name: &str, value: &mut i64, min: i64, max: i64) {
    if *value < min {
        warnings.push(format!(
            "--{name}={value} is below the minimum {min}; using {min}"
        ));
        *value = min;
    } else if *value > max {
        warnings.push(format!(
            "--{name}={value} is above the maximum {max}; using {max}"
        ));
        *value = max;
    }
}

/// Resets an out-of-range value to its default, as gh-ost's setters do for some flags.
fn keep_default(
    warnings: &mut Vec<String>,
    name: &str,
    value: &mut i64,
    (min, max): (i64, i64),
    default: i64,
) {
    if *value < min {
        warnings.push(format!(
            "--{name}={value} is below the minimum {min}; keeping the default {default}"
        ));
        *value = default;
    } else if *value > max {
        warnings.push(format!(
            "--{name}={value} is above the maximum {max}; keeping the default {default}"
        ));
        *value = default;
    }
}

/// The `[client]` credentials of a `--conf` file, before precedence is applied.
#[derive(Default)]
struct ConfCredentials {
    user: Option<String>,
    password: Option<String>,
}

fn read_conf(
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ConfCredentials, FlagError> {
    let text = std::fs::read_to_string(path).map_err(|source| FlagError::ConfRead {
        path: path.to_string(),
        source,
    })?;
    let mut creds = parse_conf(&text).map_err(|(line, reason)| FlagError::ConfSyntax {
        path: path.to_string(),
        line,
        reason,
    })?;
    creds.user = creds.user.map(|user| expand_env(&user, env));
    creds.password = creds.password.map(|password| expand_env(&password, env));
    Ok(creds)
}

/// Reads `[client] user` and `password`. Other sections, `[osc]` included, are accepted and
/// ignored: gh-ost parses `[osc]` but never uses it. Errors carry a 1-based line number.
fn parse_conf(text: &str) -> Result<ConfCredentials, (usize, String)> {
    let mut creds = ConfCredentials::default();
    let mut section = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let Some(end) = header.find(']') else {
                return Err((
                    index + 1,
                    "section header lacks its closing ']'".to_string(),
                ));
            };
            section = header[..end].trim().to_ascii_lowercase();
            continue;
        }
        // Lines without a delimiter are my.cnf switches such as `skip-ssl`; none concerns us.
        let Some(delimiter) = line.find(['=', ':']) else {
            continue;
        };
        if section != "client" {
            continue;
        }
        let key = line[..delimiter].trim();
        let value = conf_value(line[delimiter + 1..].trim());
        if key.eq_ignore_ascii_case("user") {
            creds.user = Some(value);
        } else if key.eq_ignore_ascii_case("password") {
            creds.password = Some(value);
        }
    }
    Ok(creds)
}

/// A quoted value is taken verbatim; an unquoted one ends at `#` or `;`, as in gh-ost's ini
/// readers, so a password holding those characters must be quoted.
fn conf_value(raw: &str) -> String {
    for quote in ['"', '\'', '`'] {
        let quoted = raw
            .strip_prefix(quote)
            .and_then(|inner| inner.rfind(quote).map(|end| &inner[..end]));
        if let Some(quoted) = quoted {
            return quoted.to_string();
        }
    }
    let end = raw.find(['#', ';']).unwrap_or(raw.len());
    raw[..end].trim_end().to_string()
}

/// gh-ost replaces the whole value with `$NAME` when it contains `${NAME}` (its regex is
/// `[$][{](.*)[}]`, greedy); an unset variable gives the empty string.
fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let Some(start) = value.find("${") else {
        return value.to_string();
    };
    let inner = &value[start + 2..];
    match inner.rfind('}') {
        Some(end) => env(&inner[..end]).unwrap_or_default(),
        None => value.to_string(),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`, which `flag.Int64` uses: an optional sign, `0x`/`0o`/`0b`
/// prefixes, a bare leading `0` meaning octal, and `_` between digits.
fn parse_go_int(raw: &str) -> Option<i64> {
    let (negative, body) = match raw.as_bytes().first()? {
        b'-' => (true, &raw[1..]),
        b'+' => (false, &raw[1..]),
        _ => (false, raw),
    };
    let prefix = body.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits, prefixed) = match prefix.as_deref() {
        Some("0x") => (16, &body[2..], true),
        Some("0o") => (8, &body[2..], true),
        Some("0b") => (2, &body[2..], true),
        _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..], true),
        _ => (10, body, false),
    };
    let digits = strip_go_underscores(digits, prefixed)?;
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(&digits, radix).ok()?;
    if !negative {
        return i64::try_from(magnitude).ok();
    }
    if magnitude == i64::MIN.unsigned_abs() {
        return Some(i64::MIN);
    }
    i64::try_from(magnitude).ok().map(|value| -value)
}

/// Go allows `_` only between digits, a base prefix counting as a digit.
fn strip_go_underscores(digits: &str, prefixed: bool) -> Option<String> {
    let mut out = String::with_capacity(digits.len());
    let mut after_digit = prefixed;
    for c in digits.chars() {
        if c == '_' {
            if !after_digit {
                return None;
            }
            after_digit = false;
        } else {
            out.push(c);
            after_digit = true;
        }
    }
    // A trailing '_' leaves after_digit false; an empty string is caught by the caller.
    if !after_digit && !digits.is_empty() {
        return None;
    }
    Some(out)
}

/// Go's `time.ParseDuration` ("10s", "1m30s", "1.5h", "250ms"), without negative values. A bare
/// integer is taken as seconds, since gh-ost's docs describe `--runtime-metrics-interval` in
/// seconds.
fn parse_go_duration(raw: &str) -> Option<Duration> {
    if let Ok(seconds) = raw.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let mut rest = raw.strip_prefix('+').unwrap_or(raw);
    if rest.is_empty() {
        return None;
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(frac) => {
                let frac_len = frac
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(frac.len());
                frac.split_at(frac_len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        total_nanos = total_nanos.checked_add(whole.checked_mul(unit_nanos)?)?;
        // Digits past the 18th are below a nanosecond for every unit; dropping them keeps the
        // arithmetic within u128.
        let frac = &frac_part[..frac_part.len().min(18)];
        if !frac.is_empty() {
            let numerator: u128 = frac.parse().ok()?;
            let scale = 10u128.pow(u32::try_from(frac.len()).ok()?);
            total_nanos = total_nanos.checked_add(numerator * unit_nanos / scale)?;
        }
        rest = next;
    }
    u64::try_from(total_nanos).ok().map(Duration::from_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(list: &[&str]) -> Result<MigrateFlags, FlagError> {
        parse_migrate_flags(&strings(list), &no_env)
    }

    fn ok(list: &[&str]) -> MigrateFlags {
        match parse(list) {
            Ok(flags) => flags,
            Err(err) => panic!("{list:?} should parse: {err}"),
        }
    }

    fn err(list: &[&str]) -> String {
        match parse(list) {
            Ok(flags) => panic!("{list:?} should fail, got {flags:?}"),
            Err(err) => err.to_string(),
        }
    }

    fn temp_conf(tag: &str, contents: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("ghost-flags-{}-{tag}.cnf", std::process::id()));
        std::fs::write(&path, contents).expect("write temp conf");
        path
    }

    #[test]
    fn defaults_match_gh_ost() {
        let f = ok(&[]);
        assert_eq!(f.host, "127.0.0.1");
        assert_eq!(f.port, 3306);
        assert_eq!(f.chunk_size, 1000);
        // The documented exceptions: checkpoint-seconds and dml-batch-size (README).
        assert_eq!(f.dml_batch_size, 1000);
        assert_eq!(f.default_retries, 60);
        assert_eq!(f.max_lag_millis, 1500);
        assert_eq!(f.cut_over, "atomic");
        assert_eq!(f.cut_over_lock_timeout_seconds, 3);
        assert_eq!(f.heartbeat_interval_millis, 100);
        assert_eq!(f.replica_server_id, 99999);
        assert!(f.concurrent_rowcount);
        assert_eq!(f.throttle_additional_flag_file, "/tmp/gh-ost.throttle");
        assert_eq!(f.hooks_status_interval, 60);
        assert_eq!(f.exponential_backoff_max_interval, 64);
        assert_eq!(f.checkpoint_seconds, 10);
        assert_eq!(f.charset, "utf8mb4,utf8,latin1");
        assert_eq!(f.storage_engine, "innodb");
        assert_eq!(f.throttle_http_interval_millis, 100);
        assert_eq!(f.throttle_http_timeout_millis, 1000);
        assert_eq!(f.runtime_metrics_interval, Duration::from_secs(10));
        assert_eq!(f.log_format, "text");
        assert_eq!(f.status_interval, 0);
        assert!(f.checksum);
        assert_eq!(
            u64::from(f.target_chunk_time_millis),
            crate::engine::config::DEFAULT_TARGET_CHUNK_TIME_MILLIS
        );
        assert_eq!(f.copy_threads, 1);
        assert!(!f.execute);
        assert!(f.warnings.is_empty());
        assert_eq!(f, MigrateFlags::default());
    }

    #[test]
    fn table_defaults_match_struct_defaults() {
        let mut applied = MigrateFlags::default();
        for def in FLAGS.iter().filter(|def| def.kind != FlagKind::List) {
            if let Err(e) = applied.apply(def.name, def.default) {
                panic!("default of --{} does not parse: {e}", def.name);
            }
        }
        assert_eq!(applied, MigrateFlags::default());
    }

    #[test]
    fn table_has_every_gh_ost_flag_once() {
        assert_eq!(FLAGS.iter().filter(|def| !def.ghost_only).count(), 108);
        assert_eq!(FLAGS.iter().filter(|def| def.ghost_only).count(), 16);
        let mut names: Vec<&str> = FLAGS.iter().map(|def| def.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FLAGS.len(), "duplicate flag names");
    }

    #[test]
    fn every_flag_is_applied_with_its_kind() {
        for def in FLAGS {
            let good = match def.kind {
                FlagKind::Bool => "true",
                FlagKind::String | FlagKind::List => "some text",
                FlagKind::Int | FlagKind::Uint => "7",
                FlagKind::Float => "0.5",
                FlagKind::Duration => "5s",
            };
            let mut flags = MigrateFlags::default();
            if let Err(e) = flags.apply(def.name, good) {
                panic!("--{}={good} refused: {e}", def.name);
            }
            if !matches!(def.kind, FlagKind::String | FlagKind::List) {
                assert!(
                    flags.apply(def.name, "nonsense").is_err(),
                    "--{} accepted nonsense",
                    def.name
                );
            }
        }
    }

    #[test]
    fn dash_forms_are_equivalent() {
        let forms: [&[&str]; 4] = [
            &["-chunk-size=20"],
            &["--chunk-size=20"],
            &["-chunk-size", "20"],
            &["--chunk-size", "20"],
        ];
        for form in forms {
            assert_eq!(ok(form).chunk_size, 20, "{form:?}");
        }
        assert!(ok(&["-execute"]).execute);
        assert!(ok(&["--execute"]).execute);
    }

    #[test]
    fn value_may_contain_equals_and_start_with_dash() {
        let f = ok(&["--alter=engine=innodb", "--password", "-secret-"]);
        assert_eq!(f.alter, "engine=innodb");
        assert_eq!(f.password.expose(), "-secret-");
    }

    #[test]
    fn later_occurrence_overrides_earlier() {
        let f = ok(&[
            "--chunk-size=20",
            "--chunk-size",
            "30",
            "--host=a",
            "--host=b",
        ]);
        assert_eq!(f.chunk_size, 30);
        assert_eq!(f.host, "b");
        assert!(!ok(&["--execute", "--execute=false"]).execute);
    }

    #[test]
    fn boolean_values() {
        for (raw, expected) in [
            ("true", true),
            ("1", true),
            ("t", true),
            ("TRUE", true),
            ("false", false),
            ("0", false),
            ("F", false),
            ("False", false),
        ] {
            let arg = format!("--execute={raw}");
            assert_eq!(ok(&[arg.as_str()]).execute, expected, "{arg}");
        }
        assert!(!ok(&["--concurrent-rowcount=false"]).concurrent_rowcount);
        assert_eq!(
            err(&["--execute=yes"]),
            "invalid value \"yes\" for --execute: expected a boolean (true, false, 1 or 0)"
        );
    }

    #[test]
    fn go_integer_syntax() {
        assert_eq!(ok(&["--chunk-size=0x64"]).chunk_size, 100);
        assert_eq!(ok(&["--chunk-size=1_000"]).chunk_size, 1000);
        assert_eq!(ok(&["--chunk-size=+500"]).chunk_size, 500);
        // Go reads a leading 0 as octal.
        assert_eq!(ok(&["--chunk-size=0100"]).chunk_size, 64);
        assert_eq!(parse_go_int("010"), Some(8));
        assert_eq!(parse_go_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_go_int("9223372036854775808"), None);
        assert_eq!(parse_go_int("1__0"), None);
        assert_eq!(parse_go_int("_10"), None);
        assert_eq!(parse_go_int("10_"), None);
        assert_eq!(parse_go_int("0x"), None);
        assert_eq!(parse_go_int("08"), None);
        assert_eq!(parse_go_int(""), None);
    }

    #[test]
    fn durations() {
        let interval =
            |raw: &str| ok(&["--runtime-metrics-interval", raw]).runtime_metrics_interval;
        assert_eq!(interval("1m30s"), Duration::from_secs(90));
        assert_eq!(interval("500ms"), Duration::from_millis(500));
        assert_eq!(interval("1.5h"), Duration::from_secs(5400));
        assert_eq!(interval("0"), Duration::ZERO);
        assert_eq!(interval("15"), Duration::from_secs(15));
        assert_eq!(interval("2µs"), Duration::from_micros(2));
        assert!(err(&["--runtime-metrics-interval=abc"]).contains("expected a duration"));
        assert!(parse_go_duration("-5s").is_none());
        assert!(parse_go_duration("5").is_some());
        assert!(parse_go_duration("5x").is_none());
        assert!(parse_go_duration(".s").is_none());
    }

    #[test]
    fn repeatable_flags_accumulate() {
        let f = ok(&[
            "--statsd-tags=env:prod",
            "--statsd-tags",
            "service:gh-ost",
            "--webhook=https://a",
            "--webhook=https://b",
        ]);
        assert_eq!(f.statsd_tags, ["env:prod", "service:gh-ost"]);
        assert_eq!(f.webhook, ["https://a", "https://b"]);
    }

    #[test]
    fn unknown_flag_suggests_the_nearest() {
        assert_eq!(
            err(&["--chunck-size=5"]),
            "unknown flag --chunck-size; did you mean --chunk-size?"
        );
        assert_eq!(
            err(&["--chunk_size=5"]),
            "unknown flag --chunk_size; did you mean --chunk-size?"
        );
        assert_eq!(
            err(&["--hooks-hint-tok=x"]),
            "unknown flag --hooks-hint-tok; did you mean --hooks-hint-token?"
        );
        assert_eq!(err(&["--foo"]), "unknown flag --foo");
        assert_eq!(
            err(&["--completely-unrelated-thing"]),
            "unknown flag --completely-unrelated-thing"
        );
    }

    #[test]
    fn levenshtein_distance() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("chunck-size", "chunk-size"), 1);
    }

    #[test]
    fn missing_and_bad_values() {
        assert_eq!(err(&["--chunk-size"]), "flag --chunk-size needs a value");
        assert_eq!(
            err(&["--chunk-size=x"]),
            "invalid value \"x\" for --chunk-size: expected an integer"
        );
        assert!(err(&["--port=70000"]).contains("expected a port number"));
        assert!(err(&["--nice-ratio=nan"]).contains("expected a number"));
        assert!(err(&["--replica-server-id=-1"]).contains("unsigned 32-bit"));
    }

    #[test]
    fn bad_syntax_and_positional_arguments() {
        assert_eq!(err(&["---execute"]), "bad flag syntax: ---execute");
        assert_eq!(err(&["-=x"]), "bad flag syntax: -=x");
        assert!(err(&["extra"]).contains("\"extra\""));
        assert!(err(&["-"]).contains("\"-\""));
        assert!(err(&["--execute", "--", "stray"]).contains("\"stray\""));
        assert!(ok(&["--execute", "--"]).execute);
        let message = err(&["--execute", "false"]);
        assert!(message.contains("--execute=false"), "{message}");
    }

    #[test]
    fn help_version_and_check_flag_skip_validation() {
        assert!(ok(&["-h"]).help);
        assert!(ok(&["--help", "--revert"]).help);
        assert!(ok(&["-help"]).help);
        assert!(ok(&["--version"]).version);
        let f = ok(&[
            "--check-flag",
            "--cut-over-lock-timeout-seconds",
            "1",
            "--nice-ratio",
            "0",
        ]);
        assert!(f.check_flag);
        assert!(err(&["--check-flag", "--no-such-flag"]).starts_with("unknown flag"));
    }

    #[test]
    fn conflicts_are_refused() {
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["--allow-on-master", "--test-on-replica"],
                &["--allow-on-master", "--test-on-replica"],
            ),
            (
                &["--allow-on-master", "--migrate-on-replica"],
                &["--allow-on-master", "--migrate-on-replica"],
            ),
            (
                &["--test-on-replica", "--migrate-on-replica"],
                &["--migrate-on-replica", "--test-on-replica"],
            ),
            (
                &["--switch-to-rbr", "--assume-rbr"],
                &["--switch-to-rbr", "--assume-rbr"],
            ),
            (
                &["--test-on-replica-skip-replica-stop"],
                &["--test-on-replica-skip-replica-stop", "--test-on-replica"],
            ),
            (
                &["--master-user=u"],
                &["--master-user", "--assume-master-host"],
            ),
            (
                &["--master-password=p"],
                &["--master-password", "--assume-master-host"],
            ),
            (&["--ssl-ca=/ca.pem"], &["--ssl-ca", "--ssl"]),
            (&["--ssl-cert=/c.pem"], &["--ssl-cert", "--ssl"]),
            (&["--ssl-key=/k.pem"], &["--ssl-key", "--ssl"]),
            (&["--charset=latin1"], &["--charset=latin1", "utf8mb4"]),
            (
                &["--charset=utf8,utf8mb4"],
                &["--charset", "start the list"],
            ),
            (
                &["--ssl-allow-insecure"],
                &["--ssl-allow-insecure", "--ssl"],
            ),
            (
                &["--include-triggers"],
                &["--include-triggers", "--trigger-suffix"],
            ),
            (
                &["--trigger-suffix=_v2"],
                &["--trigger-suffix", "--include-triggers"],
            ),
            (
                &["--include-triggers", "--trigger-suffix=v-2"],
                &["--trigger-suffix"],
            ),
            (&["--checkpoint-seconds=5"], &["--checkpoint-seconds", "10"]),
            (&["--revert"], &["--revert", "--old-table"]),
            (
                &["--revert", "--old-table=_t_del", "--resume"],
                &["--revert", "--resume"],
            ),
            (&["--cut-over=three-step"], &["--cut-over", "two-step"]),
            (&["--copy-threads=0"], &["--copy-threads", "1 to 64"]),
            (&["--copy-threads=65"], &["--copy-threads", "1 to 64"]),
            (&["--apply-threads=0"], &["--apply-threads", "1 to 64"]),
            (&["--log-format=xml"], &["--log-format", "json"]),
            (&["--status-interval=-1"], &["--status-interval"]),
            (&["--mysql-timeout=-1"], &["--mysql-timeout"]),
        ];
        for (args, mentions) in cases {
            let message = err(args);
            assert!(!message.contains('\n'), "{message}");
            for mention in *mentions {
                assert!(
                    message.contains(mention),
                    "{args:?}: {message:?} lacks {mention}"
                );
            }
        }
    }

    #[test]
    fn valid_combinations_pass() {
        let f = ok(&[
            "--include-triggers",
            "--trigger-suffix=_v2",
            "--ssl",
            "--ssl-ca=/ca.pem",
        ]);
        assert_eq!(f.trigger_suffix, "_v2");
        let f = ok(&[
            "--master-user=u",
            "--master-password=p",
            "--assume-master-host=m:3306",
        ]);
        assert_eq!(f.master_password.expose(), "p");
        assert_eq!(ok(&["--cut-over=default"]).cut_over, "atomic");
        assert_eq!(ok(&["--cut-over=two-step"]).cut_over, "two-step");
        let f = ok(&["--revert", "--old-table=_t_del"]);
        assert!(f.revert);
        assert_eq!(ok(&["--log-format=json"]).log_format, "json");
    }

    #[test]
    fn values_are_clamped_with_warnings() {
        let f = ok(&[
            "--chunk-size=5",
            "--dml-batch-size=0",
            "--max-lag-millis=50",
            "--heartbeat-interval-millis=50",
            "--nice-ratio=-1",
        ]);
        assert_eq!(f.chunk_size, 10);
        assert_eq!(f.dml_batch_size, 1);
        assert_eq!(f.max_lag_millis, 100);
        assert_eq!(f.heartbeat_interval_millis, 100);
        assert_eq!(f.nice_ratio, 0.0);
        assert_eq!(f.warnings.len(), 5, "{:?}", f.warnings);
        assert!(f.warnings[0].contains("--chunk-size=5"));

        let f = ok(&[
            "--chunk-size=200000",
            "--dml-batch-size=5000",
            "--heartbeat-interval-millis=5000",
            "--nice-ratio=150",
        ]);
        assert_eq!(f.chunk_size, 100_000);
        assert_eq!(f.dml_batch_size, 1000);
        assert_eq!(f.heartbeat_interval_millis, 1000);
        assert_eq!(f.nice_ratio, 100.0);
        assert_eq!(f.warnings.len(), 4, "{:?}", f.warnings);

        let f = ok(&[
            "--chunk-size=500",
            "--nice-ratio=0.7",
            "--max-lag-millis=100",
        ]);
        assert_eq!(f.chunk_size, 500);
        assert_eq!(f.nice_ratio, 0.7);
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    }

    #[test]
    fn cut_over_lock_timeout_out_of_range_keeps_default() {
        for raw in ["0", "11", "20", "-1"] {
            let arg = format!("--cut-over-lock-timeout-seconds={raw}");
            let f = ok(&[arg.as_str()]);
            assert_eq!(f.cut_over_lock_timeout_seconds, 3, "{arg}");
            assert_eq!(f.warnings.len(), 1, "{arg}");
            assert!(f.warnings[0].contains("keeping the default 3"));
        }
        let f = ok(&["--cut-over-lock-timeout-seconds=10"]);
        assert_eq!(f.cut_over_lock_timeout_seconds, 10);
        assert!(f.warnings.is_empty());
    }

    #[test]
    fn ignored_values_warn() {
        let f = ok(&[
            "--exponential-backoff-max-interval=1",
            "--default-retries=0",
        ]);
        assert_eq!(f.exponential_backoff_max_interval, 64);
        assert_eq!(f.default_retries, 60);
        assert_eq!(f.warnings.len(), 2);
        let f = ok(&[
            "--replication-lag-query=select 1",
            "--storage-engine=rocksdb",
        ]);
        assert_eq!(f.warnings.len(), 2);
    }

    #[test]
    fn conf_file_with_env_expansion() {
        let path = temp_conf(
            "expand",
            "# credentials\n\
             [client]\n\
             user = ${GHOST_TEST_USER}\n\
             password = \"${GHOST_TEST_PW}\"\n\
             \n\
             [osc]\n\
             chunk_size = 500\n\
             max_load = Threads_running=30\n",
        );
        let conf = format!("--conf={}", path.display());
        let env = |name: &str| match name {
            "GHOST_TEST_USER" => Some("conf-user".to_string()),
            "GHOST_TEST_PW" => Some("conf-pw".to_string()),
            _ => None,
        };
        let result = parse_migrate_flags(&strings(&[conf.as_str()]), &env);
        let with_cli_user = parse_migrate_flags(&strings(&[conf.as_str(), "--user=cli"]), &env);
        let _ = std::fs::remove_file(&path);

        let f = result.expect("conf parses");
        assert_eq!(f.user, "conf-user");
        assert_eq!(f.password.expose(), "conf-pw");
        // [osc] is accepted but has no effect.
        assert_eq!(f.chunk_size, 1000);
        let f = with_cli_user.expect("conf parses");
        assert_eq!(f.user, "cli");
        assert_eq!(f.password.expose(), "conf-pw");
    }

    #[test]
    fn conf_values_and_comments() {
        let creds = match parse_conf(
            "[Client]\nuser=plain # note\npassword: `p#ss;word`\n[other]\nuser=nobody\nskip-ssl\n",
        ) {
            Ok(creds) => creds,
            Err((line, reason)) => panic!("line {line}: {reason}"),
        };
        assert_eq!(creds.user.as_deref(), Some("plain"));
        assert_eq!(creds.password.as_deref(), Some("p#ss;word"));
        assert!(parse_conf("[client\nuser=x\n").is_err());
        assert_eq!(expand_env("${A}", &|_: &str| None), "");
        assert_eq!(expand_env("plain", &|_: &str| None), "plain");
        assert_eq!(expand_env("x${A}y", &|_: &str| Some("v".to_string())), "v");
    }

    #[test]
    fn unreadable_conf_names_the_path() {
        let message = err(&["--conf=/nonexistent/ghost-flags-test.cnf"]);
        assert!(
            message.contains("/nonexistent/ghost-flags-test.cnf"),
            "{message}"
        );
    }

    #[test]
    fn password_precedence() {
        let path = temp_conf("precedence", "[client]\npassword=from-conf\n");
        let conf = format!("--conf={}", path.display());
        let with_env = |name: &str| (name == PASSWORD_ENV).then(|| "from-env".to_string());
        let conf_only = parse_migrate_flags(&strings(&[conf.as_str()]), &no_env);
        let env_and_conf = parse_migrate_flags(&strings(&[conf.as_str()]), &with_env);
        let all = parse_migrate_flags(
            &strings(&[conf.as_str(), "--password=from-flag"]),
            &with_env,
        );
        let _ = std::fs::remove_file(&path);

        assert_eq!(conf_only.expect("parses").password.expose(), "from-conf");
        assert_eq!(env_and_conf.expect("parses").password.expose(), "from-env");
        assert_eq!(all.expect("parses").password.expose(), "from-flag");
        let env_only = parse_migrate_flags(&[], &with_env).expect("parses");
        assert_eq!(env_only.password.expose(), "from-env");
    }

    #[test]
    fn debug_hides_secrets() {
        let f = ok(&[
            "--password=hunter2",
            "--master-password=master-pw",
            "--assume-master-host=m",
            "--hooks-hint-token=hook-token",
            "--webhook-secret=hook-secret",
        ]);
        let shown = format!("{f:?}");
        for secret in ["hunter2", "master-pw", "hook-token", "hook-secret"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn usage_lists_every_flag_sorted() {
        let text = usage();
        for def in FLAGS {
            assert!(
                text.contains(&format!("  --{}", def.name)),
                "--{} missing",
                def.name
            );
        }
        assert!(text.contains("(default 1000)"));
        assert!(text.contains("(default \"127.0.0.1\")"));
        assert!(text.contains("[ghost extension]"));
        let alter = text.find("  --alter").expect("alter listed");
        let verbose = text.find("  --verbose").expect("verbose listed");
        assert!(alter < verbose);
    }

    #[test]
    fn localtests_default_command_line_parses() {
        let f = ok(&[
            "--user=gh-ost",
            "--password=gh-ost",
            "--host=127.0.0.1",
            "--port=3307",
            "--assume-master-host=127.0.0.1:3306",
            "--database=test",
            "--table=gh_ost_test",
            "--storage-engine=innodb",
            "--alter=engine=innodb",
            "--exact-rowcount",
            "--assume-rbr",
            "--skip-metadata-lock-check",
            "--initially-drop-old-table",
            "--initially-drop-ghost-table",
            "--throttle-query=select timestampdiff(second, min(last_update), now()) < 2 from _gh_ost_test_ghc",
            "--throttle-flag-file=/tmp/x",
            "--serve-socket-file=/tmp/gh-ost.test.sock",
            "--initially-drop-socket-file",
            "--test-on-replica",
            "--default-retries=3",
            "--chunk-size=10",
            "--verbose",
            "--debug",
            "--stack",
            "--checkpoint",
            "--execute",
        ]);
        assert_eq!(f.user, "gh-ost");
        assert_eq!(f.password.expose(), "gh-ost");
        assert_eq!(f.port, 3307);
        assert_eq!(f.assume_master_host, "127.0.0.1:3306");
        assert_eq!(f.database, "test");
        assert_eq!(f.table, "gh_ost_test");
        assert_eq!(f.alter, "engine=innodb");
        assert!(f.exact_rowcount && f.assume_rbr && f.skip_metadata_lock_check);
        assert!(f.initially_drop_old_table && f.initially_drop_ghost_table);
        assert!(f.throttle_query.starts_with("select timestampdiff("));
        assert_eq!(f.throttle_flag_file, "/tmp/x");
        assert_eq!(f.serve_socket_file, "/tmp/gh-ost.test.sock");
        assert!(f.initially_drop_socket_file && f.test_on_replica);
        assert_eq!(f.default_retries, 3);
        assert_eq!(f.chunk_size, 10);
        assert!(f.verbose && f.debug && f.stack && f.checkpoint && f.execute);
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    }
}
