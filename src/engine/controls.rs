//! The engine's input port: one `Controls` value on a watch channel, read at each decision point.
//! Standalone it is fed by flags, flag files and interactive commands; in Kubernetes by the
//! resource's spec and annotations.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct Controls {
    /// The user asked to pause copy and apply.
    pub throttle: bool,
    /// Row copy may finish, but cut-over waits while this is set.
    pub postpone_cut_over: bool,
    /// The user said "cut over now" (gh-ost's `unpostpone`): overrides the postpone flag file.
    pub cut_over_requested: bool,
    /// Abort now and drop the ghost and changelog tables.
    pub panic: bool,
    pub chunk_size: u64,
    pub dml_batch_size: usize,
    /// Sleep this many times the chunk's copy time after each chunk.
    pub nice_ratio: f64,
    pub max_lag: Duration,
    /// `Status_var=N` thresholds: throttle when reached.
    pub max_load: Vec<(String, u64)>,
    /// `Status_var=N` thresholds: abort when reached.
    pub critical_load: Vec<(String, u64)>,
    /// A query on the applier whose value > 0 throttles.
    pub throttle_query: Option<String>,
    pub throttle_http: Option<String>,
    /// `host:port` of replicas whose lag (heartbeat age) throttles the migration.
    pub throttle_control_replicas: Vec<String>,
}

impl Default for Controls {
    fn default() -> Self {
        Self {
            throttle: false,
            postpone_cut_over: false,
            panic: false,
            chunk_size: 1000,
            // gh-ost's default is 10; see `cli::flags::DEFAULT_DML_BATCH_SIZE`.
            dml_batch_size: 1000,
            nice_ratio: 0.0,
            max_lag: Duration::from_millis(1500),
            max_load: Vec::new(),
            critical_load: Vec::new(),
            throttle_query: None,
            throttle_http: None,
            throttle_control_replicas: Vec::new(),
            cut_over_requested: false,
        }
    }
}

/// Parses gh-ost's `Threads_running=25,Threads_connected=500` load thresholds.
pub fn parse_load_thresholds(input: &str) -> Result<Vec<(String, u64)>, String> {
    input
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not Status_variable=number"))?;
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("{name:?} is not a status variable name"));
            }
            let value = value
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("threshold for {name} is not a whole number"))?;
            Ok((name.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_load_thresholds() {
        assert_eq!(
            parse_load_thresholds("Threads_running=25, Threads_connected=500").unwrap(),
            vec![
                ("Threads_running".into(), 25),
                ("Threads_connected".into(), 500)
            ]
        );
        assert!(parse_load_thresholds("").unwrap().is_empty());
        assert!(parse_load_thresholds("Threads_running").is_err());
        assert!(parse_load_thresholds("x;y=1").is_err());
        assert!(parse_load_thresholds("a=-1").is_err());
    }
}
