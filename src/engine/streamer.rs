//! The binary log streamer: one replication connection, typed row changes out.
//!
//! What it adds on top of mysql_async's `BinlogStream` (reference/mysql-binlog-rust.md §4):
//! MariaDB's capability 4 and its GTID events (162/163) decoded here; the fake Rotate's CRC bytes
//! stripped from the file name; CRC32 verified; compressed events and old temporal formats refused;
//! heartbeats to detect a dead connection; values normalised with the table schema
//! ([`super::values`]); and reconnection that resumes from the last transaction boundary while
//! skipping the changes already handed out, so no change is lost or repeated.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::binlog::BinlogChecksumAlg;
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Value};
use tracing::{debug, info, warn};

use super::conn::ConnectionConfig;
use super::dialect::{Flavor, ServerInfo};
use super::error::{EngineError, Result, SqlContext};
use super::position::{BinlogCoordinates, BinlogPosition, MariaGtid, MariaGtidState, MysqlGtidSet};
use super::schema::{ColumnKind, TableSchema};
use super::values::to_param;
use super::wording;
use crate::sql::quote_literal;

mod watched;
pub use watched::WatchedTable;

/// MySQL's TRANSACTION_PAYLOAD_EVENT: a transaction compressed with zstd.
const TRANSACTION_PAYLOAD_EVENT: u8 = 40;

/// MariaDB event type codes that mysql_common does not know.
mod maria_event {
    pub const ANNOTATE_ROWS: u8 = 160;
    pub const BINLOG_CHECKPOINT: u8 = 161;
    pub const GTID: u8 = 162;
    pub const GTID_LIST: u8 = 163;
    pub const START_ENCRYPTION: u8 = 164;
    pub const FIRST_COMPRESSED: u8 = 165;
    pub const LAST_COMPRESSED: u8 = 171;
}

/// Where a stream starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// The server's current end of the binary log.
    Current,
    Coordinates(BinlogCoordinates),
    /// MariaDB: a `gtid_binlog_pos`-style state (`0-1-42,...`); MySQL: a GTID set.
    Gtid(String),
}

#[derive(Clone, Debug)]
pub struct StreamerConfig {
    pub connection: ConnectionConfig,
    /// Must be unique among the server's replicas (a duplicate kills the older stream).
    pub server_id: u32,
    pub start: StartPosition,
    /// The tables to follow; changes to any other table are dropped.
    pub tables: Vec<Arc<TableSchema>>,
    pub heartbeat: Duration,
    /// Failed reconnects in a row before the streamer gives up.
    pub max_reconnect_attempts: u32,
    pub verify_checksums: bool,
    /// Set once the ghost table exists, when the checksum runs during the copy.
    pub watched: Arc<OnceLock<WatchedTable>>,
}

impl StreamerConfig {
    pub fn new(
        connection: ConnectionConfig,
        server_id: u32,
        tables: Vec<Arc<TableSchema>>,
    ) -> Self {
        Self {
            connection,
            server_id,
            start: StartPosition::Current,
            tables,
            heartbeat: Duration::from_secs(1),
            max_reconnect_attempts: 10,
            verify_checksums: true,
            watched: Arc::new(OnceLock::new()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

/// One changed row, with its images already converted to exact SQL parameters in column order.
#[derive(Clone, Debug)]
pub struct RowChange {
    pub table: Arc<TableSchema>,
    pub kind: ChangeKind,
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
    /// End of the rows event that carried this change.
    pub event_end: BinlogCoordinates,
    /// GTID of the transaction, when the server logs one.
    pub gtid: Option<String>,
    /// Server timestamp of the event (seconds since the epoch).
    pub timestamp: u32,
}

#[derive(Clone, Debug)]
pub enum StreamItem {
    Row(RowChange),
    /// A transaction ended. `position` is where the next one starts: a safe place to resume.
    Commit(BinlogPosition),
    /// The server is alive and has nothing new; `position` is its current end of log.
    Heartbeat(BinlogCoordinates),
    /// A statement logged as text (DDL) in one of the followed schemas.
    Statement {
        schema: String,
        query: String,
        position: BinlogCoordinates,
    },
    /// The key of a row written to the watched table ([`WatchedTable`]); None when it could not
    /// be read.
    WatchedKey(Option<i128>),
}

pub struct BinlogStreamer {
    cfg: StreamerConfig,
    server: ServerInfo,
    tables: HashMap<(String, String), Arc<TableSchema>>,
    stream: Option<BinlogStream>,
    connection_id: Option<u32>,
    /// The binlog file being read.
    file: String,
    /// The last transaction boundary: where a reconnect restarts.
    resume: BinlogPosition,
    /// End of the last event whose items were handed out; replays up to here are skipped.
    /// Events of the transaction in flight whose items were handed out. A reconnect replays the
    /// transaction from its start, and this many of its events are skipped: counted, not
    /// matched by position, since MariaDB 11.4+ logs events inside a transaction with
    /// end_log_pos 0 (binlog_legacy_event_pos=OFF).
    delivered_in_trx: u64,
    /// Replayed events still to skip after a reconnect.
    skip_in_trx: u64,
    maria_gtids: MariaGtidState,
    mysql_gtids: Option<MysqlGtidSet>,
    trx_gtid: Option<String>,
    in_trx: bool,
    /// The transaction in flight is one of the copy's ([`WatchedTable::marks_copy`]).
    copy_statement: bool,
    seen_format_description: bool,
    checked_table_ids: HashSet<u64>,
    pending: VecDeque<StreamItem>,
    reconnects: u64,
    replayed_events_skipped: u64,
    failures_in_a_row: u32,
}

impl BinlogStreamer {
    /// Checks the server's binlog settings, resolves the start position and opens the stream.
    pub async fn start(cfg: StreamerConfig) -> Result<Self> {
        let mut conn = cfg.connection.connect().await?;
        let server = ServerInfo::detect(&mut conn).await?;
        preflight(&mut conn, &server, &cfg.connection.endpoint()).await?;

        // MySQL: the executed set, grown by every transaction; unknown when starting from bare
        // coordinates (MySQL cannot say what was executed at a past position).
        let mut mysql_gtids: Option<MysqlGtidSet> = None;
        let (coordinates, maria_gtids, start_gtid) = match &cfg.start {
            StartPosition::Current => {
                let (c, mysql_set) = server.binlog_status(&mut conn).await?;
                let g = maria_gtid_at(&mut conn, &server, &c).await?;
                if let Some(set) = mysql_set {
                    mysql_gtids = Some(MysqlGtidSet::parse(&set)?);
                }
                (c, g, None)
            }
            StartPosition::Coordinates(c) => {
                let g = maria_gtid_at(&mut conn, &server, c).await?;
                (c.clone(), g, None)
            }
            StartPosition::Gtid(gtid) => {
                let state = if server.is_mariadb() {
                    MariaGtidState::parse(gtid)?
                } else {
                    mysql_gtids = Some(MysqlGtidSet::parse(gtid)?);
                    MariaGtidState::default()
                };
                // The file is learnt from the server's first (fake) Rotate.
                (BinlogCoordinates::new("", 4), state, Some(gtid.clone()))
            }
        };
        drop(conn);

        let tables = cfg
            .tables
            .iter()
            .map(|t| (table_key(&server, &t.schema, &t.name), t.clone()))
            .collect();
        let resume = BinlogPosition {
            coordinates: coordinates.clone(),
            gtid: gtid_label(&server, &maria_gtids, mysql_gtids.as_ref()),
        };
        let mut streamer = Self {
            cfg,
            server,
            tables,
            stream: None,
            connection_id: None,
            file: coordinates.file.clone(),
            resume,
            delivered_in_trx: 0,
            skip_in_trx: 0,
            maria_gtids,
            mysql_gtids,
            trx_gtid: None,
            in_trx: false,
            copy_statement: false,
            seen_format_description: false,
            checked_table_ids: HashSet::new(),
            pending: VecDeque::new(),
            reconnects: 0,
            replayed_events_skipped: 0,
            failures_in_a_row: 0,
        };
        streamer.open(start_gtid.as_deref()).await?;
        info!(position = %streamer.resume, server_id = streamer.cfg.server_id, "binlog stream started");
        Ok(streamer)
    }

    /// The next item, reconnecting transparently when the connection drops.
    pub async fn next(&mut self) -> Result<StreamItem> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(item);
            }
            let idle_limit = self.cfg.heartbeat * 3 + Duration::from_secs(2);
            let Some(stream) = self.stream.as_mut() else {
                self.reconnect("no open stream".into()).await?;
                continue;
            };
            match tokio::time::timeout(idle_limit, stream.next()).await {
                Err(_) => {
                    self.reconnect(format!("no event or heartbeat for {idle_limit:?}"))
                        .await?
                }
                Ok(None) => {
                    self.reconnect("the server closed the stream".into())
                        .await?
                }
                Ok(Some(Err(e))) => {
                    if let Some(reason) = fatal_stream_error(&e) {
                        return Err(EngineError::Stream(format!(
                            "{reason} (at {}): {e}",
                            self.resume
                        )));
                    }
                    self.reconnect(e.to_string()).await?
                }
                Ok(Some(Ok(event))) => self.handle_event(event)?,
            }
        }
    }

    /// The last transaction boundary seen: persist this to resume later.
    pub fn resume_position(&self) -> &BinlogPosition {
        &self.resume
    }

    /// Server-side id of the replication connection (what `SHOW PROCESSLIST` lists).
    pub fn connection_id(&self) -> Option<u32> {
        self.connection_id
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Events received again after a reconnect and dropped because their changes were already
    /// handed out.
    pub fn replayed_events_skipped(&self) -> u64 {
        self.replayed_events_skipped
    }

    pub fn server(&self) -> &ServerInfo {
        &self.server
    }

    pub async fn close(mut self) {
        if let Some(stream) = self.stream.take() {
            if let Err(e) = stream.close().await {
                debug!(error = %e, "closing binlog stream");
            }
        }
    }

    async fn open(&mut self, gtid: Option<&str>) -> Result<()> {
        let mut conn = self.cfg.connection.connect().await?;
        let heartbeat_ns = self.cfg.heartbeat.as_nanos().max(1_000_000);
        if self.server.is_mariadb() {
            // Capability 4: GTID events arrive as themselves instead of rewritten BEGIN queries.
            conn.query_drop("SET @mariadb_slave_capability=4")
                .await
                .sql_context(|| "setting @mariadb_slave_capability".into())?;
        }
        conn.query_drop(format!("SET @master_heartbeat_period={heartbeat_ns}"))
            .await
            .sql_context(|| "setting @master_heartbeat_period".into())?;
        let connection_id = conn.id();
        let server_id = self.cfg.server_id;
        let file = self.resume.coordinates.file.clone();
        let request = match (gtid, self.server.flavor) {
            (Some(state), Flavor::MariaDb) => {
                conn.query_drop(format!("SET @slave_connect_state={}", quote_literal(state)))
                    .await
                    .sql_context(|| "setting @slave_connect_state".into())?;
                BinlogStreamRequest::new(server_id)
            }
            (Some(set), Flavor::MySql) => {
                let sids = parse_mysql_gtid_set(set)?;
                BinlogStreamRequest::new(server_id)
                    .with_gtid()
                    .with_gtid_set(sids)
            }
            (None, _) => BinlogStreamRequest::new(server_id)
                .with_filename(file.as_bytes())
                .with_pos(self.resume.coordinates.pos),
        };
        let stream = conn
            .get_binlog_stream(request)
            .await
            .sql_context(|| format!("starting the binlog dump at {}", self.resume))?;
        self.stream = Some(stream);
        self.connection_id = Some(connection_id);
        self.file = file;
        self.seen_format_description = false;
        self.checked_table_ids.clear();
        // Whatever the transaction in flight was, it is replayed from its start: skip the events
        // of it already handed out.
        self.in_trx = false;
        self.skip_in_trx = self.delivered_in_trx;
        self.delivered_in_trx = 0;
        self.trx_gtid = None;
        Ok(())
    }

    async fn reconnect(&mut self, cause: String) -> Result<()> {
        if let Some(stream) = self.stream.take() {
            // The connection is broken or stalled; closing may fail and that is fine.
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.close()).await;
        }
        loop {
            self.failures_in_a_row += 1;
            if self.failures_in_a_row > self.cfg.max_reconnect_attempts {
                return Err(EngineError::StreamGaveUp {
                    position: self.resume.to_string(),
                    attempts: self.cfg.max_reconnect_attempts,
                    last_error: cause,
                });
            }
            let backoff = Duration::from_millis(100 * (1 << self.failures_in_a_row.min(6)));
            warn!(cause = %cause, resume = %self.resume, attempt = self.failures_in_a_row, "binlog stream lost; reconnecting");
            tokio::time::sleep(backoff).await;
            // Resume by coordinates: they are exact, and a transaction never spans files.
            match self.open(None).await {
                Ok(()) => {
                    self.reconnects += 1;
                    return Ok(());
                }
                Err(e) => {
                    warn!(error = %e, "reconnect failed");
                }
            }
        }
    }

    fn handle_event(&mut self, event: Event) -> Result<()> {
        let header = event.header();
        let log_pos = header.log_pos() as u64;
        let raw_type = header.event_type_raw();
        if log_pos != 0 {
            self.failures_in_a_row = 0;
        }
        // Before the checksum: a compressed transaction is refused for what it is.
        if raw_type == TRANSACTION_PAYLOAD_EVENT {
            return Err(EngineError::ServerConfig(format!(
                "a compressed transaction (binlog_transaction_compression=ON in some session) at {}:{log_pos}: \
                 its rows cannot be read; SET GLOBAL binlog_transaction_compression=OFF and make sure no \
                 session turns it on, then run again",
                self.file
            )));
        }
        if self.cfg.verify_checksums {
            verify_checksum(&event, &self.file, log_pos)?;
        }
        if (160..=171).contains(&raw_type) {
            return self.handle_maria_event(&event, raw_type, log_pos);
        }
        let data = event.read_data().map_err(|e| {
            EngineError::Stream(format!(
                "cannot parse event type {raw_type} ending at {}:{log_pos}: {e}",
                self.file
            ))
        })?;
        let Some(data) = data else {
            debug!(raw_type, "skipping an event type the library does not know");
            return Ok(());
        };
        match data {
            EventData::FormatDescriptionEvent(_) => self.seen_format_description = true,
            EventData::RotateEvent(rotate) => {
                let fake = log_pos == 0;
                let mut name = rotate.name_raw().to_vec();
                if fake && !self.seen_format_description {
                    strip_fake_rotate_crc(&event, &mut name);
                }
                let name = String::from_utf8_lossy(&name).into_owned();
                debug!(file = %name, pos = rotate.position(), fake, "rotate");
                self.checked_table_ids.clear();
                if name != self.file {
                    self.file = name;
                    // A real rotate, or the first rotate of a GTID start, is a transaction boundary.
                    if !self.in_trx && (!fake || self.resume.coordinates.file.is_empty()) {
                        self.resume.coordinates =
                            BinlogCoordinates::new(&self.file, rotate.position());
                    }
                }
            }
            EventData::QueryEvent(query) => {
                let sql = query.query();
                let trimmed = sql.trim();
                if trimmed.eq_ignore_ascii_case("BEGIN") {
                    self.in_trx = true;
                } else if trimmed.eq_ignore_ascii_case("COMMIT") {
                    self.commit(log_pos);
                } else {
                    let schema = query.schema().into_owned();
                    let (folded, _) = table_key(&self.server, &schema, "");
                    let followed = self.tables.keys().any(|(s, _)| *s == folded);
                    if followed && !self.already_delivered() {
                        self.pending.push_back(StreamItem::Statement {
                            schema,
                            query: sql.into_owned(),
                            position: BinlogCoordinates::new(&self.file, log_pos),
                        });
                    }
                    if !self.in_trx {
                        self.commit(log_pos);
                    }
                }
            }
            EventData::XidEvent(_) => self.commit(log_pos),
            EventData::GtidEvent(gtid) => {
                let source = format_uuid(&gtid.sid());
                if let Some(set) = self.mysql_gtids.as_mut() {
                    set.add(&source, gtid.gno());
                }
                self.trx_gtid = Some(format!("{source}:{}", gtid.gno()));
                self.copy_statement = false;
            }
            EventData::HeartbeatEvent => {
                if log_pos != 0 {
                    self.pending
                        .push_back(StreamItem::Heartbeat(BinlogCoordinates::new(
                            &self.file, log_pos,
                        )));
                }
            }
            EventData::RowsEvent(rows) => {
                self.handle_rows(&rows, log_pos, header.timestamp())?;
            }
            EventData::TableMapEvent(_) => {}
            other => debug!(event = ?std::mem::discriminant(&other), "ignored event"),
        }
        Ok(())
    }

    fn handle_maria_event(&mut self, event: &Event, raw_type: u8, log_pos: u64) -> Result<()> {
        match raw_type {
            maria_event::GTID => {
                let data = event.data();
                if data.len() < 13 {
                    return Err(EngineError::Stream(format!(
                        "truncated MariaDB GTID event at {}:{log_pos}",
                        self.file
                    )));
                }
                let seq = u64::from_le_bytes(data[0..8].try_into().unwrap_or([0; 8]));
                let domain = u32::from_le_bytes(data[8..12].try_into().unwrap_or([0; 4]));
                let flags2 = data[12];
                let gtid = MariaGtid {
                    domain,
                    server: event.header().server_id(),
                    seq,
                };
                self.maria_gtids.advance(gtid);
                self.trx_gtid = Some(gtid.to_string());
                self.copy_statement = false;
                // FL_STANDALONE: a DDL with no BEGIN/XID around it.
                self.in_trx = flags2 & 1 == 0;
            }
            maria_event::GTID_LIST
            | maria_event::BINLOG_CHECKPOINT
            | maria_event::ANNOTATE_ROWS
            | maria_event::START_ENCRYPTION => {}
            maria_event::FIRST_COMPRESSED..=maria_event::LAST_COMPRESSED => {
                return Err(EngineError::ServerConfig(format!(
                    "compressed binlog event (type {raw_type}) at {}:{log_pos}: its rows cannot be read; \
                     set log_bin_compress=OFF on the server",
                    self.file
                )));
            }
            _ => debug!(raw_type, "ignored MariaDB event"),
        }
        Ok(())
    }

    fn handle_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        log_pos: u64,
        timestamp: u32,
    ) -> Result<()> {
        let table_id = rows.table_id();
        let Some(tme) = self
            .stream
            .as_ref()
            .and_then(|s| s.get_tme(table_id))
            .cloned()
        else {
            return Err(EngineError::Stream(format!(
                "rows event for unknown table id {table_id} at {}:{log_pos} (the stream did not start at a transaction boundary)",
                self.file
            )));
        };
        let key = table_key(&self.server, &tme.database_name(), &tme.table_name());
        let Some(table) = self.tables.get(&key).cloned() else {
            // Not counted among the delivered events: a replay after a reconnect reports the
            // keys again, which only marks the same chunks again.
            if let Some(watched) = self.cfg.watched.get() {
                if !self.copy_statement
                    && table_key(&self.server, &watched.schema.schema, &watched.schema.name) == key
                {
                    self.pending.extend(watched.keys(rows, &tme));
                }
            }
            return Ok(());
        };
        if self.already_delivered() {
            return Ok(());
        }
        if self.checked_table_ids.insert(table_id) {
            check_table_map(&table, &tme)?;
        }
        let event_end = BinlogCoordinates::new(&self.file, log_pos);
        let marker_table = self
            .cfg
            .watched
            .get()
            .filter(|w| table_key(&self.server, &w.marker_table.0, &w.marker_table.1) == key);
        for row in rows.rows(&tme) {
            let (before, after) = row.map_err(|e| {
                EngineError::Stream(format!(
                    "cannot decode a row of {} at {event_end}: {e}",
                    table.qualified_name()
                ))
            })?;
            let before = before.map(|r| convert_image(&table, r)).transpose()?;
            let after = after.map(|r| convert_image(&table, r)).transpose()?;
            if marker_table.is_some_and(|w| w.marks_copy(after.as_deref())) {
                self.copy_statement = true;
            }
            let kind = match (&before, &after) {
                (None, Some(_)) => ChangeKind::Insert,
                (Some(_), Some(_)) => ChangeKind::Update,
                (Some(_), None) => ChangeKind::Delete,
                (None, None) => continue,
            };
            self.pending.push_back(StreamItem::Row(RowChange {
                table: table.clone(),
                kind,
                before,
                after,
                event_end: event_end.clone(),
                gtid: self.trx_gtid.clone(),
                timestamp,
            }));
        }
        Ok(())
    }

    fn commit(&mut self, log_pos: u64) {
        self.in_trx = false;
        self.copy_statement = false;
        if log_pos == 0 {
            return;
        }
        self.resume = BinlogPosition {
            coordinates: BinlogCoordinates::new(&self.file, log_pos),
            gtid: gtid_label(&self.server, &self.maria_gtids, self.mysql_gtids.as_ref()),
        };
        self.trx_gtid = None;
        self.delivered_in_trx = 0;
        self.skip_in_trx = 0;
        self.pending
            .push_back(StreamItem::Commit(self.resume.clone()));
    }

    /// Counts an event of a followed table; true when a reconnect replayed it and its items
    /// were already handed out (skip it).
    fn already_delivered(&mut self) -> bool {
        self.delivered_in_trx += 1;
        if self.skip_in_trx > 0 {
            self.skip_in_trx -= 1;
            self.replayed_events_skipped += 1;
            return true;
        }
        false
    }
}

/// How the followed tables are looked up: as the server compares names (folded to lower case
/// under `lower_case_table_names` 1 and 2).
fn table_key(server: &ServerInfo, schema: &str, table: &str) -> (String, String) {
    if server.folds_table_names() {
        (schema.to_lowercase(), table.to_lowercase())
    } else {
        (schema.to_string(), table.to_string())
    }
}

/// Refuses server settings under which row changes would be missing or unreadable (also the
/// migration's validation of the inspected server).
pub async fn preflight(
    conn: &mut mysql_async::Conn,
    server: &ServerInfo,
    endpoint: &str,
) -> Result<()> {
    let row: Option<(Option<String>, Option<String>, Option<String>)> = conn
        .query_first("SELECT @@global.log_bin, @@global.binlog_format, @@global.binlog_row_image")
        .await
        .sql_context(|| "reading binlog settings".into())?;
    let (log_bin, format, image) = row.unwrap_or_default();
    let log_bin = log_bin.unwrap_or_default();
    if !(log_bin == "1" || log_bin.eq_ignore_ascii_case("ON")) {
        return Err(EngineError::ServerConfig(format!(
            "{}: start the server with --log-bin",
            wording::no_binary_logs(endpoint)
        )));
    }
    let format = format.unwrap_or_default();
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(EngineError::ServerConfig(format!(
            "{}: run SET GLOBAL binlog_format='ROW' (and restart replication), or pass --switch-to-rbr",
            wording::binlog_format_not_row(&format)
        )));
    }
    let image = image.unwrap_or_default();
    if !image.eq_ignore_ascii_case("FULL") {
        return Err(EngineError::ServerConfig(wording::row_image_not_full(
            endpoint, &image,
        )));
    }
    if !server.is_mariadb() {
        // MySQL 8.0.20 and 8.0.3 added them; an older server has neither.
        let read = async |conn: &mut mysql_async::Conn, sql: &str| -> Result<String> {
            let value: Option<Option<String>> = conn
                .query_first(sql)
                .await
                .sql_context(|| sql.to_string())?;
            Ok(value.flatten().unwrap_or_default())
        };
        let compression = if server.version >= (8, 0, 20) {
            read(conn, "SELECT @@global.binlog_transaction_compression").await?
        } else {
            String::new()
        };
        let value_options = if server.version >= (8, 0, 3) {
            read(conn, "SELECT @@global.binlog_row_value_options").await?
        } else {
            String::new()
        };
        if compression == "1" || compression.eq_ignore_ascii_case("ON") {
            return Err(EngineError::ServerConfig(
                "binlog_transaction_compression is ON: compressed transactions cannot be read; \
                 SET GLOBAL binlog_transaction_compression=OFF (and make sure no session turns it on)"
                    .into(),
            ));
        }
        if value_options.to_ascii_uppercase().contains("PARTIAL_JSON") {
            return Err(EngineError::ServerConfig(
                "binlog_row_value_options is PARTIAL_JSON: JSON updates are logged as diffs, which \
                 cannot be replayed; SET GLOBAL binlog_row_value_options=''"
                    .into(),
            ));
        }
    }
    if server.is_mariadb() {
        let compress: Option<Option<String>> = conn
            .query_first("SELECT @@global.log_bin_compress")
            .await
            .sql_context(|| "reading log_bin_compress".into())?;
        let compress = compress.flatten().unwrap_or_default();
        if compress == "1" || compress.eq_ignore_ascii_case("ON") {
            return Err(EngineError::ServerConfig(
                "log_bin_compress is ON: compressed row events cannot be read; SET GLOBAL log_bin_compress=OFF"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// MariaDB: the GTID state at a binlog position (`BINLOG_GTID_POS`), so positions carry both forms.
async fn maria_gtid_at(
    conn: &mut mysql_async::Conn,
    server: &ServerInfo,
    at: &BinlogCoordinates,
) -> Result<MariaGtidState> {
    if !server.is_mariadb() {
        return Ok(MariaGtidState::default());
    }
    let pos: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&at.file, at.pos))
        .await
        .sql_context(|| format!("BINLOG_GTID_POS at {at}"))?;
    MariaGtidState::parse(&pos.flatten().unwrap_or_default())
}

/// The GTID state at a transaction boundary, to resume from: MariaDB's per-domain state, or
/// MySQL's whole executed set (None when it is not known).
fn gtid_label(
    server: &ServerInfo,
    maria: &MariaGtidState,
    mysql: Option<&MysqlGtidSet>,
) -> Option<String> {
    if server.is_mariadb() {
        Some(maria.to_string())
    } else {
        mysql.map(ToString::to_string)
    }
}

/// Server errors that no reconnect can fix.
fn fatal_stream_error(e: &mysql_async::Error) -> Option<&'static str> {
    match e {
        mysql_async::Error::Server(s) => match s.code {
            1236 => Some("the binlog position is not on the server (purged or never existed)"),
            1045 | 1227 => Some("the user lacks REPLICATION SLAVE / BINLOG MONITOR"),
            1047 => Some("the server does not support this dump command"),
            _ => None,
        },
        _ => None,
    }
}

fn check_table_map(table: &TableSchema, tme: &TableMapEvent<'_>) -> Result<()> {
    let logged = tme.columns_count() as usize;
    if logged != table.columns.len() {
        return Err(EngineError::SchemaChanged {
            table: table.qualified_name(),
            reason: format!(
                "the binlog has {logged} columns, the schema read at start has {}",
                table.columns.len()
            ),
        });
    }
    for (i, column) in table.columns.iter().enumerate() {
        let fsp = match column.kind {
            ColumnKind::DateTime { fsp }
            | ColumnKind::Timestamp { fsp }
            | ColumnKind::Time { fsp } => fsp,
            _ => continue,
        };
        let raw = tme.get_raw_column_type(i).ok().flatten();
        let legacy = matches!(
            raw,
            Some(ColumnType::MYSQL_TYPE_DATETIME)
                | Some(ColumnType::MYSQL_TYPE_TIMESTAMP)
                | Some(ColumnType::MYSQL_TYPE_TIME)
        );
        if legacy && (fsp > 0 || matches!(column.kind, ColumnKind::Time { .. })) {
            return Err(EngineError::UnsupportedTable {
                table: table.qualified_name(),
                reason: format!(
                    "column `{}` is logged in the pre-10.0 temporal format, which cannot be decoded exactly; \
                     rebuild it with `SET SESSION mysql56_temporal_format=ON; ALTER TABLE ... FORCE`",
                    column.name
                ),
            });
        }
    }
    Ok(())
}

fn convert_image(table: &TableSchema, mut row: BinlogRow) -> Result<Vec<Value>> {
    let mut values = Vec::with_capacity(table.columns.len());
    for (i, column) in table.columns.iter().enumerate() {
        let Some(value) = row.take(i) else {
            // MariaDB 11.x leaves virtual columns out of a FULL image; ghost never writes a
            // generated column, so its value is not needed.
            if column.generated {
                values.push(Value::NULL);
                continue;
            }
            return Err(EngineError::Decode {
                table: table.qualified_name(),
                column: column.name.clone(),
                reason: "missing from the row image: set binlog_row_image=FULL".into(),
            });
        };
        let param = to_param(column, value).map_err(|e| EngineError::Decode {
            table: table.qualified_name(),
            column: column.name.clone(),
            reason: e.0,
        })?;
        values.push(param);
    }
    Ok(values)
}

fn verify_checksum(event: &Event, file: &str, log_pos: u64) -> Result<()> {
    let Some(expected) = event.checksum() else {
        return Ok(());
    };
    let Ok(Some(alg)) = event.footer().get_checksum_alg() else {
        return Ok(());
    };
    if alg != BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32 {
        return Ok(());
    }
    if event.calc_checksum(alg).to_le_bytes() != expected {
        return Err(EngineError::Stream(format!(
            "CRC32 mismatch on event type {} ending at {file}:{log_pos}: the stream is corrupt",
            event.header().event_type_raw()
        )));
    }
    Ok(())
}

/// The server's first Rotate arrives before any format description, so the reader leaves its
/// 4 CRC bytes inside the file name. Strip them when they are the CRC of the event.
fn strip_fake_rotate_crc(event: &Event, name: &mut Vec<u8>) {
    if name.len() < 4 {
        return;
    }
    let h = event.header();
    let body = event.data();
    let mut header = Vec::with_capacity(19);
    header.extend_from_slice(&h.timestamp().to_le_bytes());
    header.push(h.event_type_raw());
    header.extend_from_slice(&h.server_id().to_le_bytes());
    header.extend_from_slice(&h.event_size().to_le_bytes());
    header.extend_from_slice(&h.log_pos().to_le_bytes());
    header.extend_from_slice(&h.flags_raw().to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    hasher.update(&body[..body.len().saturating_sub(4)]);
    let tail = &name[name.len() - 4..];
    if hasher.finalize().to_le_bytes() == tail {
        name.truncate(name.len() - 4);
    }
}

fn format_uuid(sid: &[u8; 16]) -> String {
    let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn parse_mysql_gtid_set(set: &str) -> Result<Vec<mysql_async::Sid<'static>>> {
    set.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<mysql_async::Sid<'static>>()
                .map_err(|e| EngineError::InvalidPosition {
                    input: s.to_string(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_mysql_server_uuids() {
        let sid = [
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ];
        assert_eq!(format_uuid(&sid), "3e11fa47-71ca-11e1-9e33-c80aa9429562");
    }

    #[test]
    fn parses_mysql_gtid_sets() {
        let sids = parse_mysql_gtid_set(
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5, 4e11fa47-71ca-11e1-9e33-c80aa9429562:7",
        )
        .unwrap();
        assert_eq!(sids.len(), 2);
        assert!(parse_mysql_gtid_set("not-a-gtid").is_err());
    }
}
