//! Everything one migration needs to know, independent of where it came from (gh-ost flags or a
//! SchemaMigration resource).

use std::path::PathBuf;
use std::time::Duration;

use super::conn::ConnectionConfig;
use super::hooks::HooksConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutOverMode {
    Atomic,
    TwoStep,
}

/// Where the migration writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Inspect a replica (or the primary with `allow_on_master`), write on the primary.
    Normal,
    /// Migrate on the replica, swap, swap back, leave replication stopped (gh-ost `--test-on-replica`).
    TestOnReplica,
    /// Migrate and cut over on the replica only.
    MigrateOnReplica,
}

/// The chunk time adaptive chunks aim for unless told otherwise (`--target-chunk-time-millis`,
/// `spec.copy.targetChunkTimeMillis`): measured by `bench/run`, chunks of about this long copied
/// a million rows a quarter faster than fixed 1,000-row chunks, while each holds its shared
/// locks briefly (Spirit aims for 500 ms).
pub const DEFAULT_TARGET_CHUNK_TIME_MILLIS: u64 = 250;

#[derive(Clone, Debug)]
pub struct MigrationConfig {
    /// The server to inspect and to read the binary log from (gh-ost `--host`).
    pub inspector: ConnectionConfig,
    /// The primary, when known (`--assume-master-host`); otherwise found from replication status.
    pub primary: Option<ConnectionConfig>,
    pub database: String,
    pub table: String,
    pub alter: String,
    /// False: validate and rehearse (create, alter and drop the ghost table), change nothing.
    pub execute: bool,
    pub topology: Topology,
    /// `--test-on-replica-skip-replica-stop`: replication is stopped by a hook, not by ghost.
    pub test_on_replica_skip_replica_stop: bool,
    pub allow_on_master: bool,
    pub assume_rbr: bool,
    /// Set `binlog_format=ROW` on the inspected server when it is not (gh-ost `--switch-to-rbr`).
    pub switch_to_rbr: bool,
    pub replica_server_id: u32,
    pub exact_rowcount: bool,
    pub default_retries: u32,
    pub cut_over: CutOverMode,
    pub cut_over_lock_timeout: Duration,
    pub cut_over_exponential_backoff: bool,
    pub exponential_backoff_max_interval: Duration,
    pub initially_drop_ghost_table: bool,
    pub initially_drop_old_table: bool,
    pub ok_to_drop_table: bool,
    pub timestamp_old_table: bool,
    /// Compare both tables before the cut-over (`checksum.rs`); on by default.
    pub checksum: bool,
    /// Compare copied chunks at consistent points during the copy, so the gate compares only
    /// what changed since (`early_checksum.rs`); on by default.
    pub checksum_during_copy: bool,
    /// The row copy reads the original without row locks (`gone_keys.rs`); off by default.
    pub copy_without_locks: bool,
    /// Resize chunks toward this copy time (`chunk_size.rs`); None: the fixed chunk-size.
    pub target_chunk_time: Option<Duration>,
    /// Chunks copied at once, each on its own session (`migration/parallel_copy.rs`); 1: serial.
    pub copy_threads: usize,
    /// Sessions that apply each binlog batch at once, split by key (`migration/apply.rs`); 1:
    /// one session. Used only where batches are coalesced (each key's last state).
    pub apply_threads: usize,
    /// Copy without the ghost table's plain secondary indexes and build them after the row copy
    /// (`migration/deferred_indexes.rs`).
    pub defer_secondary_indexes: bool,
    /// While one copier runs, changes to integer keys it has not reached are left to it
    /// (`applier::KeyWindow`).
    pub skip_uncopied_changes: bool,
    /// In REPLACE mode, each apply batch is written as each key's last state in multi-row
    /// statements (`applier/batch.rs`).
    pub coalesce_changes: bool,
    /// `--revert --old-table=NAME`: bring the old table a migration kept up to date from its
    /// cut-over checkpoint, and swap it back in. The ALTER is ignored.
    pub revert_from: Option<String>,
    pub force_table_names: Option<String>,
    pub allow_nullable_unique_key: bool,
    pub allow_zero_in_date: bool,
    pub approve_renamed_columns: bool,
    pub skip_renamed_columns: bool,
    pub discard_foreign_keys: bool,
    pub skip_foreign_key_checks: bool,
    pub attempt_instant_ddl: bool,
    pub panic_on_warnings: bool,
    pub skip_strict_mode: bool,
    pub heartbeat_interval: Duration,
    pub include_triggers: bool,
    pub trigger_suffix: String,
    pub remove_trigger_suffix_if_exists: bool,
    pub analyze_ghost_table_before_cutover: bool,
    pub throttle_flag_file: Option<PathBuf>,
    pub throttle_additional_flag_file: Option<PathBuf>,
    pub postpone_cut_over_flag_file: Option<PathBuf>,
    pub panic_flag_file: Option<PathBuf>,
    /// Write a checkpoint this often (gh-ost `--checkpoint --checkpoint-seconds`).
    pub checkpoint_interval: Option<Duration>,
    /// Continue from the last checkpoint instead of starting over.
    pub resume: bool,
    /// Resume the stream by GTID instead of file/position (any replica can serve it).
    pub use_gtid: bool,
    pub throttle: ThrottleOptions,
    pub hooks: HooksConfig,
}

/// Throttling settings that are not run-time controls (gh-ost flags of the same names).
#[derive(Clone, Debug, PartialEq)]
pub struct ThrottleOptions {
    pub http_interval: Duration,
    pub http_timeout: Duration,
    pub ignore_http_errors: bool,
    pub critical_load_interval: Duration,
    pub critical_load_hibernate: Duration,
}

impl Default for ThrottleOptions {
    fn default() -> Self {
        Self {
            http_interval: Duration::from_millis(100),
            http_timeout: Duration::from_millis(1000),
            ignore_http_errors: false,
            critical_load_interval: Duration::ZERO,
            critical_load_hibernate: Duration::ZERO,
        }
    }
}

impl MigrationConfig {
    /// Defaults as gh-ost's, for the given endpoint and change.
    pub fn new(inspector: ConnectionConfig, database: &str, table: &str, alter: &str) -> Self {
        Self {
            inspector,
            primary: None,
            database: database.to_string(),
            table: table.to_string(),
            alter: alter.to_string(),
            execute: false,
            topology: Topology::Normal,
            test_on_replica_skip_replica_stop: false,
            allow_on_master: false,
            assume_rbr: false,
            switch_to_rbr: false,
            replica_server_id: 99999,
            exact_rowcount: false,
            default_retries: 60,
            cut_over: CutOverMode::Atomic,
            cut_over_lock_timeout: Duration::from_secs(3),
            cut_over_exponential_backoff: false,
            exponential_backoff_max_interval: Duration::from_secs(64),
            initially_drop_ghost_table: false,
            initially_drop_old_table: false,
            ok_to_drop_table: false,
            timestamp_old_table: false,
            checksum: true,
            checksum_during_copy: true,
            copy_without_locks: false,
            target_chunk_time: None,
            revert_from: None,
            copy_threads: 1,
            apply_threads: 1,
            defer_secondary_indexes: true,
            skip_uncopied_changes: false,
            coalesce_changes: true,
            force_table_names: None,
            allow_nullable_unique_key: false,
            allow_zero_in_date: false,
            approve_renamed_columns: false,
            skip_renamed_columns: false,
            discard_foreign_keys: false,
            skip_foreign_key_checks: false,
            attempt_instant_ddl: false,
            panic_on_warnings: false,
            skip_strict_mode: false,
            heartbeat_interval: Duration::from_millis(100),
            include_triggers: false,
            trigger_suffix: String::new(),
            remove_trigger_suffix_if_exists: false,
            analyze_ghost_table_before_cutover: false,
            throttle_flag_file: None,
            throttle_additional_flag_file: None,
            postpone_cut_over_flag_file: None,
            panic_flag_file: None,
            checkpoint_interval: None,
            resume: false,
            use_gtid: false,
            throttle: ThrottleOptions::default(),
            hooks: HooksConfig::default(),
        }
    }
}
