//! Binary log positions: file/offset coordinates and GTID state, in forms that can be persisted
//! (checkpoints) and handed back to the streamer to resume.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::{EngineError, Result};

/// A place in the binary log: the offset of the *next* event to read in `file`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BinlogCoordinates {
    pub file: String,
    pub pos: u64,
}

impl BinlogCoordinates {
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        Self {
            file: file.into(),
            pos,
        }
    }

    /// Parses `file:pos`.
    pub fn parse(input: &str) -> Result<Self> {
        let (file, pos) = input
            .rsplit_once(':')
            .ok_or_else(|| EngineError::InvalidPosition {
                input: input.into(),
                reason: "expected <binlog-file>:<offset>".into(),
            })?;
        let pos = pos
            .parse::<u64>()
            .map_err(|_| EngineError::InvalidPosition {
                input: input.into(),
                reason: "the offset after ':' is not a number".into(),
            })?;
        if file.is_empty() {
            return Err(EngineError::InvalidPosition {
                input: input.into(),
                reason: "the binlog file name is empty".into(),
            });
        }
        Ok(Self::new(file, pos))
    }
}

impl fmt::Display for BinlogCoordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// One MariaDB GTID: `domain-server-sequence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MariaGtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl MariaGtid {
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: &str| EngineError::InvalidPosition {
            input: input.into(),
            reason: reason.into(),
        };
        let mut parts = input.trim().split('-');
        let (Some(d), Some(s), Some(n), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("a MariaDB GTID is domain-server-sequence, e.g. 0-1-42"));
        };
        Ok(Self {
            domain: d.parse().map_err(|_| bad("domain is not a number"))?,
            server: s.parse().map_err(|_| bad("server id is not a number"))?,
            seq: n.parse().map_err(|_| bad("sequence is not a number"))?,
        })
    }
}

impl fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// MariaDB GTID state: the last GTID seen per replication domain (what `gtid_binlog_pos` shows).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MariaGtidState {
    by_domain: BTreeMap<u32, MariaGtid>,
}

impl MariaGtidState {
    /// Parses `0-1-42,1-3-7` (the empty string is the empty state).
    pub fn parse(input: &str) -> Result<Self> {
        let mut state = Self::default();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            state.advance(MariaGtid::parse(part)?);
        }
        Ok(state)
    }

    pub fn advance(&mut self, gtid: MariaGtid) {
        self.by_domain.insert(gtid.domain, gtid);
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }
}

impl fmt::Display for MariaGtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for gtid in self.by_domain.values() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{gtid}")?;
        }
        Ok(())
    }
}

/// A MySQL GTID set (`3e11fa47-...:1-5:7,4e11fa47-...:1-3`): every transaction executed, per
/// source server. A stream resumes from it by asking for everything not in it, so it must be
/// the whole set, not the last GTID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MysqlGtidSet {
    /// Source UUID (lower case) → sorted, disjoint, non-adjacent inclusive intervals.
    by_source: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MysqlGtidSet {
    /// Parses `uuid:1-5:7,uuid2:3` (the empty string is the empty set; newlines are ignored).
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: &str| EngineError::InvalidPosition {
            input: input.into(),
            reason: reason.into(),
        };
        let mut set = Self::default();
        for part in input.split(',').map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let mut pieces = part.split(':');
            let source = pieces
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if source.len() != 36 {
                return Err(bad(
                    "a MySQL GTID set is uuid:interval[:interval],... (tagged GTIDs are not supported)",
                ));
            }
            for interval in pieces {
                let (start, end) = match interval.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (interval, interval),
                };
                let start: u64 = start
                    .trim()
                    .parse()
                    .map_err(|_| bad("an interval bound is not a number"))?;
                let end: u64 = end
                    .trim()
                    .parse()
                    .map_err(|_| bad("an interval bound is not a number"))?;
                insert_interval(&mut set, &source, start, end);
            }
        }
        Ok(set)
    }

    /// Adds one transaction.
    pub fn add(&mut self, source: &str, gno: u64) {
        insert_interval(self, &source.to_ascii_lowercase(), gno, gno);
    }
}

/// Inserts [start, end] into the source's intervals, merging overlapping and adjacent ones.
fn insert_interval(set: &mut MysqlGtidSet, source: &str, start: u64, end: u64) {
    let intervals = set.by_source.entry(source.to_string()).or_default();
    intervals.push((start.min(end), start.max(end)));
    intervals.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
    for &(a, b) in intervals.iter() {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    *intervals = merged;
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (source, intervals) in &self.by_source {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(source)?;
            for (a, b) in intervals {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}

/// A resumable position: coordinates plus, when known, the GTID state at that point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    pub coordinates: BinlogCoordinates,
    /// MariaDB `gtid_binlog_pos`-style state, or the MySQL GTID of the last transaction.
    pub gtid: Option<String>,
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.gtid {
            Some(gtid) if !gtid.is_empty() => write!(f, "{} (gtid {gtid})", self.coordinates),
            _ => write!(f, "{}", self.coordinates),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_gtid_sets_grow_and_merge() {
        let mut set = MysqlGtidSet::parse(
            "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7,\n4e11fa47-71ca-11e1-9e33-c80aa9429562:1-3",
        )
        .unwrap();
        set.add("3e11fa47-71ca-11e1-9e33-c80aa9429562", 6);
        set.add("5e11fa47-71ca-11e1-9e33-c80aa9429562", 1);
        assert_eq!(
            set.to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7,4e11fa47-71ca-11e1-9e33-c80aa9429562:1-3,\
             5e11fa47-71ca-11e1-9e33-c80aa9429562:1"
        );
        assert_eq!(MysqlGtidSet::parse("").unwrap().to_string(), "");
        assert!(MysqlGtidSet::parse("x:1").is_err());
    }

    #[test]
    fn coordinates_round_trip() {
        let c = BinlogCoordinates::parse("mariadb-bin.000012:4711").unwrap();
        assert_eq!(c, BinlogCoordinates::new("mariadb-bin.000012", 4711));
        assert_eq!(c.to_string(), "mariadb-bin.000012:4711");
        assert!(BinlogCoordinates::parse("nofile").is_err());
        assert!(BinlogCoordinates::parse("f:x").is_err());
        assert!(BinlogCoordinates::parse(":4").is_err());
    }

    #[test]
    fn coordinates_order_within_a_file_and_across_files() {
        let a = BinlogCoordinates::new("b.000001", 900);
        let b = BinlogCoordinates::new("b.000002", 4);
        assert!(a < b);
        assert!(BinlogCoordinates::new("b.000001", 4) < a);
    }

    #[test]
    fn maria_gtid_state_keeps_the_last_per_domain() {
        let mut s = MariaGtidState::parse("0-1-5, 2-9-1").unwrap();
        s.advance(MariaGtid::parse("0-1-6").unwrap());
        assert_eq!(s.to_string(), "0-1-6,2-9-1");
        assert!(MariaGtidState::parse("").unwrap().is_empty());
        assert!(MariaGtid::parse("0-1").is_err());
        assert!(MariaGtid::parse("a-1-2").is_err());
    }
}
