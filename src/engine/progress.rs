//! The engine's output port: a `Progress` snapshot on a watch channel. Every consumer (status
//! line, interactive `status`, HTTP API, metrics, Kubernetes status, hooks) reads from it.

use serde::Serialize;

use super::position::BinlogPosition;

/// Phases shared with `.status.phase` of a SchemaMigration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Phase {
    #[default]
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

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }
}

/// Whole seconds the way Go prints a `time.Duration` (gh-ost's `PrettifyDurationOutput`), as
/// its status line and hooks show them: `0s`, `45s`, `2m5s`, `1h0m0s`.
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ThrottleState {
    pub active: bool,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Progress {
    pub phase: Phase,
    pub rows_copied: u64,
    pub rows_estimate: u64,
    /// Row changes applied from the binary log.
    pub events_applied: u64,
    /// Row changes read from the binary log and not yet applied.
    pub backlog: u64,
    pub rows_per_second: f64,
    pub eta_seconds: Option<u64>,
    /// Now minus the last heartbeat seen in the binary log.
    pub heartbeat_lag_millis: Option<u64>,
    /// The largest lag among the inspected replica and the throttle-control replicas.
    pub replica_lag_millis: Option<u64>,
    pub throttle: ThrottleState,
    pub cut_over_attempts: u32,
    /// How long writes to the table were blocked by the successful cut-over.
    pub cut_over_lock_millis: Option<u64>,
    /// The last binlog position whose changes are all applied.
    pub applied_position: Option<BinlogPosition>,
    /// When the last resumable checkpoint was written (seconds since the epoch).
    pub last_checkpoint_unix: Option<i64>,
    /// The size of the last chunk copied (it follows the target chunk time when one is set).
    pub chunk_size: u64,
    /// Comparisons the checksum gate made (0: it did not run).
    pub checksum_passes: u32,
    /// Chunks the checksum gate found different and copied again.
    pub chunks_recopied: u64,
    /// Copied chunks the checksum found equal during the copy and nothing changed since: the
    /// gate does not compare them again.
    pub chunks_verified_during_copy: u64,
    /// The TLS version and cipher of the engine's sessions (`TLSv1.3 TLS_AES_256_GCM_SHA384`);
    /// None in clear text.
    pub tls: Option<String>,
    /// The old table, kept after the swap (not `--ok-to-drop-table`): what a revert names.
    pub kept_old_table: Option<String>,
    pub message: String,
}

impl Progress {
    pub fn percent(&self) -> f64 {
        // Past the copy, the estimate (which counts rows inserted meanwhile) no longer matters.
        if matches!(
            self.phase,
            Phase::Verifying | Phase::Postponed | Phase::CuttingOver | Phase::Succeeded
        ) {
            return 100.0;
        }
        if self.rows_estimate == 0 {
            // Before the copy the estimate is not known yet: nothing is done.
            return if matches!(
                self.phase,
                Phase::Pending | Phase::Validating | Phase::Copying
            ) {
                0.0
            } else {
                100.0
            };
        }
        (self.rows_copied as f64 * 100.0 / self.rows_estimate as f64).min(100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_done_before_the_estimate_is_known() {
        for phase in [Phase::Pending, Phase::Validating, Phase::Copying] {
            let p = Progress {
                phase,
                ..Progress::default()
            };
            assert_eq!(p.percent(), 0.0, "{phase:?}");
        }
        let done = Progress {
            phase: Phase::Postponed,
            ..Progress::default()
        };
        assert_eq!(done.percent(), 100.0);
    }
}
