//! The cut-over statements. The atomic algorithm (reference/gh-ost-inventory.md §1.5): session A
//! creates a sentry table named like the old table and locks both tables; session B issues the
//! swapping RENAME, which blocks; A drops the sentry and unlocks, and B's RENAME goes first. If A
//! dies, the sentry stays and the RENAME fails: the original table is never lost.

use std::time::{Duration, Instant};

use mysql_async::{Conn, prelude::Queryable};

use super::error::{EngineError, Result, SqlContext};
use crate::sql::{qualified, quote_literal};

pub const SENTRY_COMMENT: &str = "ghost-cut-over-sentry";

#[derive(Clone, Debug)]
pub struct CutOverTables {
    pub schema: String,
    pub original: String,
    pub ghost: String,
    pub old: String,
    pub engine: String,
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

    /// Creates the sentry, replacing a sentry left by an earlier attempt but never another table.
    pub async fn create_sentry(&self, conn: &mut Conn) -> Result<()> {
        let comment: Option<String> = conn
            .exec_first(
                "SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&self.schema, &self.old),
            )
            .await
            .sql_context(|| "looking for an old sentry table".into())?;
        match comment {
            Some(c) if c == SENTRY_COMMENT => {
                conn.query_drop(format!("DROP TABLE IF EXISTS {}", self.old()))
                    .await
                    .sql_context(|| "dropping an old sentry table".into())?;
            }
            Some(_) => {
                return Err(EngineError::Refused(format!(
                    "table {} exists and is not a ghost sentry: drop or rename it, or pass --initially-drop-old-table",
                    self.old()
                )));
            }
            None => {}
        }
        let engine = if crate::sql::is_bare_word(&self.engine) {
            self.engine.as_str()
        } else {
            "InnoDB"
        };
        conn.query_drop(format!(
            "CREATE TABLE {} (id INT AUTO_INCREMENT PRIMARY KEY) ENGINE={engine} COMMENT={}",
            self.old(),
            quote_literal(SENTRY_COMMENT)
        ))
        .await
        .sql_context(|| "creating the cut-over sentry table".into())
    }

    /// Session A: the lock that holds writers and the RENAME back. Returns when both tables are
    /// locked.
    pub async fn lock(&self, conn: &mut Conn, lock_timeout: Duration) -> Result<()> {
        let t = lock_timeout.as_secs().max(1);
        conn.query_drop(format!(
            "SET SESSION lock_wait_timeout = {}, wait_timeout = {}",
            2 * t,
            3 * t
        ))
        .await
        .sql_context(|| "setting lock timeouts".into())?;
        conn.query_drop(format!(
            "LOCK TABLES {} WRITE, {} WRITE",
            self.original(),
            self.old()
        ))
        .await
        .sql_context(|| format!("LOCK TABLES {}", self.original()))
    }

    /// Session A: drop the sentry (A holds its write lock); the RENAME may then proceed up to the
    /// original table, which A still holds.
    pub async fn drop_sentry(&self, conn: &mut Conn) -> Result<()> {
        conn.query_drop(format!("DROP TABLE IF EXISTS {}", self.old()))
            .await
            .sql_context(|| "dropping the sentry under lock".into())
    }

    /// Session A: release the tables.
    pub async fn unlock(&self, conn: &mut Conn) -> Result<()> {
        conn.query_drop("UNLOCK TABLES")
            .await
            .sql_context(|| "UNLOCK TABLES".into())
    }

    /// Session A's way out of a failed attempt: no sentry, no lock, the original in place.
    pub async fn drop_sentry_and_unlock(&self, conn: &mut Conn) -> Result<()> {
        self.drop_sentry(conn).await?;
        self.unlock(conn).await
    }

    /// Waits until session `rename_id` is blocked on the metadata lock with its RENAME.
    pub async fn wait_rename_blocked(
        &self,
        conn: &mut Conn,
        rename_id: u32,
        timeout: Duration,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            let found: Option<u64> = conn
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? \
                     AND STATE LIKE '%metadata lock%' AND INFO LIKE '%rename%'",
                    (rename_id,),
                )
                .await
                .sql_context(|| "checking the RENAME is waiting".into())?;
            if found.unwrap_or(0) > 0 {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(EngineError::CutOver(format!(
                    "the RENAME (connection {rename_id}) was not seen waiting on the table lock within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// True when the RENAME's first wait is on the original table itself. A RENAME takes its metadata
    /// locks one by one in name order; session A holds the original and the sentry. When the
    /// sentry sorts first, the RENAME waits on it, and after A drops it the RENAME still has to
    /// queue on the original: until it has, a waiting INSERT could be granted the original first
    /// and land in the old table (gh-ost PR #1536's data-loss window).
    pub fn rename_queues_on_original_first(&self) -> bool {
        let raw = self.original.as_bytes() < self.old.as_bytes();
        let folded = self.original.to_lowercase() < self.old.to_lowercase();
        raw && folded
    }

    /// After the sentry is dropped: waits until the RENAME (session `rename_id`) is queued on the
    /// original table, so UNLOCK TABLES hands the original to the RENAME before any waiting DML.
    /// MariaDB: the RENAME takes the ghost table's lock just before queuing on the original (name
    /// order), so a zero-wait probe of the ghost table that fails means the RENAME is there.
    /// MySQL: performance_schema shows the pending lock directly.
    pub async fn wait_rename_queued_on_original(
        &self,
        probe: &mut Conn,
        rename_id: u32,
        mariadb: bool,
        timeout: Duration,
    ) -> Result<()> {
        if self.rename_queues_on_original_first() {
            return Ok(());
        }
        let started = Instant::now();
        if mariadb {
            probe
                .query_drop("SET SESSION lock_wait_timeout = 0")
                .await
                .sql_context(|| "preparing the lock probe".into())?;
        }
        loop {
            let queued = if mariadb {
                match probe
                    .query_drop(format!("SELECT 1 FROM {} LIMIT 0", self.ghost()))
                    .await
                {
                    Ok(()) => false,
                    Err(mysql_async::Error::Server(e)) if e.code == 1205 => true,
                    Err(e) => {
                        return Err(EngineError::Sql {
                            context: "probing the ghost table's lock".into(),
                            source: e,
                        });
                    }
                }
            } else {
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
                pending.unwrap_or(0) > 0
            };
            if queued {
                if mariadb {
                    // The lock request on the original follows the ghost table's in the same loop
                    // of the server thread; give it a moment to be queued.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(EngineError::CutOver(format!(
                    "the RENAME (connection {rename_id}) did not queue on the original table within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
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

    /// Two-step cut-over, for servers where the atomic RENAME is not wanted: the table is briefly
    /// absent between the two renames.
    pub async fn two_step(&self, lock_conn: &mut Conn, other: &mut Conn) -> Result<()> {
        lock_conn
            .query_drop(format!(
                "ALTER TABLE {} RENAME {}",
                self.original(),
                self.old()
            ))
            .await
            .sql_context(|| "renaming the original table away".into())?;
        other
            .query_drop(format!(
                "ALTER TABLE {} RENAME {}",
                self.ghost(),
                self.original()
            ))
            .await
            .sql_context(|| "renaming the ghost table into place".into())?;
        lock_conn
            .query_drop("UNLOCK TABLES")
            .await
            .sql_context(|| "UNLOCK TABLES".into())
    }
}
