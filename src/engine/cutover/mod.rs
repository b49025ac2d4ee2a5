//! The cut-over statements. Two atomic algorithms, chosen by the server (`engine::dialect`):
//!
//! - **Locked rename** (MySQL 8.0.13+, where RENAME TABLE may run under LOCK TABLES): one session
//!   locks the original and the ghost table, the last changes are applied through that session,
//!   and it renames both while holding the lock. Whenever that session dies, either nothing was
//!   renamed (writes go on in the original and a resumed run applies them) or the swap is done.
//! - **Gated rename** (MariaDB, older MySQL; gh-ost's algorithm with the sentry moved): session A
//!   locks the original and a gate table that sorts after it; session B issues
//!   `RENAME TABLE t TO _t_del, _t_gho TO t, <gate source> TO <gate>`, which queues on the original
//!   (its first lock A holds) and fails while the gate exists. Once B is seen queued, A drops the
//!   gate and unlocks; B, queued before any waiting write and preferred over them, swaps first.
//!   If A dies before dropping the gate, the RENAME fails; after, the RENAME goes first. Either
//!   way no write lands in the old table after the last applied change.
//!
//! gh-ost's own sentry is the old table's name, which sorts before the original for most names,
//! so its RENAME is not yet queued on the original when the sentry goes: a write could slip into
//! the old table in that window (gh-ost PR #1536), and if A died there, it would be lost.

pub mod order;

use std::time::{Duration, Instant};

use mysql_async::{Conn, prelude::Queryable};

use super::dialect::{QueueCheck, ServerInfo};
use super::error::{EngineError, Result, SqlContext};
use super::inspector;
use crate::sql::{qualified, quote_literal};
pub use order::GateNames;

/// The comment of the sentry older versions created under the old table's name.
pub const SENTRY_COMMENT: &str = "ghost-cut-over-sentry";
/// The comment of the gate tables, so only ours are ever dropped.
pub const GATE_COMMENT: &str = "ghost-cut-over-gate";

#[derive(Clone, Debug)]
pub struct CutOverTables {
    pub schema: String,
    pub original: String,
    pub ghost: String,
    pub old: String,
    pub engine: String,
    /// The gated rename's tables (None for the locked rename and two-step).
    pub gates: Option<GateNames>,
}

impl CutOverTables {
    fn original(&self) -> String {
        qualified(&self.schema, &self.original)
    }
    fn ghost(&self) -> String {
        qualified(&self.schema, &self.ghost)
    }
    fn old(&self) -> String {
        qualified(&self.schema, &self.old)
    }

    fn gates(&self) -> Result<&GateNames> {
        self.gates.as_ref().ok_or_else(|| {
            EngineError::CutOver("the gated rename needs its gate tables' names".into())
        })
    }

    /// `RENAME TABLE t TO _t_del, _t_gho TO t`
    pub fn swap_sql(&self) -> String {
        format!(
            "RENAME TABLE {} TO {}, {} TO {}",
            self.original(),
            self.old(),
            self.ghost(),
            self.original()
        )
    }

    /// The gated swap: fails while the gate exists.
    pub fn gated_swap_sql(&self) -> Result<String> {
        let gates = self.gates()?;
        Ok(format!(
            "{}, {} TO {}",
            self.swap_sql(),
            qualified(&self.schema, &gates.source),
            qualified(&self.schema, &gates.sentry)
        ))
    }

    /// Creates both gate tables, replacing gates left by an earlier attempt but never another
    /// table.
    pub async fn create_gates(&self, conn: &mut Conn) -> Result<()> {
        let gates = self.gates()?.clone();
        for name in [&gates.sentry, &gates.source] {
            drop_own_table(conn, &self.schema, name, GATE_COMMENT).await?;
            let engine = if crate::sql::is_bare_word(&self.engine) {
                self.engine.as_str()
            } else {
                "InnoDB"
            };
            conn.query_drop(format!(
                "CREATE TABLE {} (id INT AUTO_INCREMENT PRIMARY KEY) ENGINE={engine} COMMENT={}",
                qualified(&self.schema, name),
                quote_literal(GATE_COMMENT)
            ))
            .await
            .sql_context(|| format!("creating the cut-over gate table {name}"))?;
        }
        Ok(())
    }

    /// Drops the gate tables (whatever is left of them), only when they are ours.
    pub async fn drop_gates(&self, conn: &mut Conn) -> Result<()> {
        let Some(gates) = self.gates.clone() else {
            return Ok(());
        };
        for name in [&gates.sentry, &gates.source] {
            drop_own_table(conn, &self.schema, name, GATE_COMMENT).await?;
        }
        Ok(())
    }

    /// Session A of the gated rename: the lock that holds writers and the RENAME back.
    pub async fn lock_for_gate(&self, conn: &mut Conn, lock_timeout: Duration) -> Result<()> {
        let gate = qualified(&self.schema, &self.gates()?.sentry);
        set_lock_timeouts(conn, lock_timeout).await?;
        conn.query_drop(format!(
            "LOCK TABLES {} WRITE, {gate} WRITE",
            self.original()
        ))
        .await
        .sql_context(|| format!("LOCK TABLES {}", self.original()))
    }

    /// The locked rename's session: both tables it renames, for writing.
    pub async fn lock_for_rename(&self, conn: &mut Conn, lock_timeout: Duration) -> Result<()> {
        set_lock_timeouts(conn, lock_timeout).await?;
        conn.query_drop(format!(
            "LOCK TABLES {} WRITE, {} WRITE",
            self.original(),
            self.ghost()
        ))
        .await
        .sql_context(|| format!("LOCK TABLES {}", self.original()))
    }

    /// Session A: drop the gate (A holds its write lock); the queued RENAME may then proceed
    /// once A lets go of the original.
    pub async fn drop_gate(&self, conn: &mut Conn) -> Result<()> {
        let gate = qualified(&self.schema, &self.gates()?.sentry);
        conn.query_drop(format!("DROP TABLE IF EXISTS {gate}"))
            .await
            .sql_context(|| "dropping the cut-over gate under lock".into())
    }

    /// Session A: release the tables.
    pub async fn unlock(&self, conn: &mut Conn) -> Result<()> {
        conn.query_drop("UNLOCK TABLES")
            .await
            .sql_context(|| "UNLOCK TABLES".into())
    }

    /// Waits until session `rename_id`'s RENAME is queued on the original table, so that A's
    /// UNLOCK hands the original to the RENAME before any waiting write. `timeout` bounds the
    /// wait (the tables are locked meanwhile).
    pub async fn wait_rename_queued(
        &self,
        probe: &mut Conn,
        rename_id: u32,
        server: &ServerInfo,
        timeout: Duration,
    ) -> Result<()> {
        let gates = self.gates()?;
        let names = [
            self.original.as_str(),
            self.old.as_str(),
            self.ghost.as_str(),
            gates.source.as_str(),
            gates.sentry.as_str(),
        ];
        let check = server.rename_queue_check(order::locked_just_before(
            &names,
            &self.original,
            server.folds_table_names(),
        ));
        if matches!(check, QueueCheck::LockProbe(_)) {
            probe
                .query_drop("SET SESSION lock_wait_timeout = 0")
                .await
                .sql_context(|| "preparing the lock probe".into())?;
        }
        let started = Instant::now();
        loop {
            if self.rename_is_queued(probe, rename_id, &check).await? {
                if check == QueueCheck::PerformanceSchema {
                    // performance_schema shows the request from its creation, a moment before
                    // it joins the lock's wait queue.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(EngineError::CutOver(format!(
                    "the RENAME (connection {rename_id}) was not seen queued on {} within {timeout:?}: \
                     another session may hold a lock on one of its tables",
                    self.original()
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn rename_is_queued(
        &self,
        probe: &mut Conn,
        rename_id: u32,
        check: &QueueCheck<'_>,
    ) -> Result<bool> {
        match check {
            // Waiting first, then the probe: a probe read before the RENAME waits could itself be
            // the lock the RENAME then waits for (on `name`, not on the original).
            QueueCheck::LockProbe(name) => Ok(waits_for_table_lock(probe, rename_id).await?
                && self.holds_table_lock(probe, name).await?),
            // The original is the RENAME's first table: waiting at all means waiting there.
            QueueCheck::Processlist => waits_for_table_lock(probe, rename_id).await,
            QueueCheck::PerformanceSchema => {
                let pending: Option<u64> = probe
                    .exec_first(
                        "SELECT COUNT(*) FROM performance_schema.metadata_locks m \
                         JOIN performance_schema.threads t ON m.OWNER_THREAD_ID = t.THREAD_ID \
                         WHERE m.OBJECT_TYPE = 'TABLE' AND m.OBJECT_SCHEMA = ? AND m.OBJECT_NAME = ? \
                         AND m.LOCK_TYPE = 'EXCLUSIVE' AND m.LOCK_STATUS = 'PENDING' AND t.PROCESSLIST_ID = ?",
                        (&self.schema, &self.original, rename_id),
                    )
                    .await
                    .sql_context(|| "reading performance_schema.metadata_locks".into())?;
                Ok(pending.unwrap_or(0) > 0)
            }
        }
    }

    /// Whether another session holds `name`'s lock: a read of it with `lock_wait_timeout = 0`
    /// times out.
    async fn holds_table_lock(&self, probe: &mut Conn, name: &str) -> Result<bool> {
        match probe
            .query_drop(format!(
                "SELECT 1 FROM {} LIMIT 0",
                qualified(&self.schema, name)
            ))
            .await
        {
            // 1205: lock wait timeout; anything else (no such table, granted): not held.
            Err(mysql_async::Error::Server(e)) if e.code == 1205 => Ok(true),
            Ok(()) | Err(mysql_async::Error::Server(_)) => Ok(false),
            Err(e) => Err(EngineError::Sql {
                context: "probing the RENAME's lock".into(),
                source: e,
            }),
        }
    }

    /// `--test-on-replica`: put the original back and the ghost table beside it, for comparison.
    pub async fn swap_back(&self, conn: &mut Conn) -> Result<()> {
        let atomic = format!(
            "RENAME TABLE {} TO {}, {} TO {}",
            self.original(),
            self.ghost(),
            self.old(),
            self.original()
        );
        if conn.query_drop(&atomic).await.is_ok() {
            return Ok(());
        }
        conn.query_drop(format!(
            "RENAME TABLE {} TO {}",
            self.original(),
            self.ghost()
        ))
        .await
        .sql_context(|| "renaming the migrated table back".into())?;
        conn.query_drop(format!(
            "RENAME TABLE {} TO {}",
            self.old(),
            self.original()
        ))
        .await
        .sql_context(|| "renaming the original table back".into())
    }

    /// Two-step cut-over (`lock_conn` holds the original locked): the table is briefly absent
    /// between the two renames, and writes in that moment fail instead of waiting.
    pub async fn two_step(&self, lock_conn: &mut Conn, other: &mut Conn) -> Result<()> {
        lock_conn
            .query_drop(format!(
                "ALTER TABLE {} RENAME {}",
                self.original(),
                self.old()
            ))
            .await
            .sql_context(|| "renaming the original table away".into())?;
        crate::engine::crash_point::reached("two-step:original-renamed");
        self.finish_two_step(other).await?;
        lock_conn
            .query_drop("UNLOCK TABLES")
            .await
            .sql_context(|| "UNLOCK TABLES".into())
    }

    /// The second step alone: the ghost table takes the original's name.
    pub async fn finish_two_step(&self, conn: &mut Conn) -> Result<()> {
        conn.query_drop(format!(
            "ALTER TABLE {} RENAME {}",
            self.ghost(),
            self.original()
        ))
        .await
        .sql_context(|| "renaming the ghost table into place".into())
    }
}

/// Whether session `id` waits for a table's metadata lock (MariaDB's PROCESSLIST). The state is
/// set once its request is in the lock's wait queue.
async fn waits_for_table_lock(probe: &mut Conn, id: u32) -> Result<bool> {
    let state: Option<Option<String>> = probe
        .exec_first(
            "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?",
            (id,),
        )
        .await
        .sql_context(|| "reading the RENAME's state".into())?;
    Ok(state.flatten().as_deref() == Some("Waiting for table metadata lock"))
}

async fn set_lock_timeouts(conn: &mut Conn, lock_timeout: Duration) -> Result<()> {
    let t = lock_timeout.as_secs().max(1);
    conn.query_drop(format!(
        "SET SESSION lock_wait_timeout = {t}, wait_timeout = {}",
        3 * t
    ))
    .await
    .sql_context(|| "setting lock timeouts".into())
}

/// Drops `schema.name` when it is a table ghost made (its comment is `comment`); refuses to touch
/// another table of that name.
pub async fn drop_own_table(
    conn: &mut Conn,
    schema: &str,
    name: &str,
    comment: &str,
) -> Result<()> {
    match inspector::table_comment(conn, schema, name).await? {
        Some(c) if c == comment => conn
            .query_drop(format!("DROP TABLE IF EXISTS {}", qualified(schema, name)))
            .await
            .sql_context(|| format!("dropping {name}")),
        Some(_) => Err(EngineError::Refused(format!(
            "table {} exists and is not ghost's: the cut-over needs that name; rename or drop it",
            qualified(schema, name)
        ))),
        None => Ok(()),
    }
}

/// Drops `schema`.`name` when its comment is `comment` (a table ghost made); leaves anything
/// else, and says nothing when there is no such table.
pub async fn drop_if_comment(
    conn: &mut Conn,
    schema: &str,
    name: &str,
    comment: &str,
) -> Result<()> {
    if inspector::table_comment(conn, schema, name)
        .await?
        .as_deref()
        == Some(comment)
    {
        tracing::info!(table = name, "dropping what an interrupted cut-over left");
        conn.query_drop(format!("DROP TABLE IF EXISTS {}", qualified(schema, name)))
            .await
            .sql_context(|| format!("dropping {name}"))?;
    }
    Ok(())
}
