//! What differs between the servers, for the tests: the engine's own `engine::dialect` answers
//! what it can (replication statements, lock order); this adds what only the tests need.
#![allow(dead_code)]

use ghost::engine::dialect::ServerInfo;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

/// The server behind `conn`.
pub async fn server(conn: &mut Conn) -> ServerInfo {
    ServerInfo::detect(conn).await.expect("server info")
}

/// A derived table `seq_table(seq)` of 1..=n: MariaDB's sequence engine has `seq_1_to_<n>`,
/// MySQL has nothing like it, so digits are crossed (works on both).
pub fn numbers(n: u64) -> String {
    let digits = n.max(1).to_string().len();
    let digit = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL \
                 SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL \
                 SELECT 8 UNION ALL SELECT 9)";
    let sum: Vec<String> = (0..digits)
        .map(|i| format!("d{i}.d * {}", 10u64.pow(i as u32)))
        .collect();
    let from: Vec<String> = (0..digits).map(|i| format!("{digit} d{i}")).collect();
    format!(
        "(SELECT seq FROM (SELECT {} + 1 AS seq FROM {}) all_seq WHERE seq <= {n}) seq_table",
        sum.join(" + "),
        from.join(" CROSS JOIN ")
    )
}

/// The replica's SQL thread only (the I/O thread keeps fetching).
pub fn stop_sql_thread(server: &ServerInfo) -> &'static str {
    server.stop_replication_sql()[1]
}

pub fn start_replication(server: &ServerInfo) -> &'static str {
    server.start_replication_sql()
}

/// The primary's executed GTID state, for [`wait_for_gtids`].
pub async fn gtid_state(conn: &mut Conn, server: &ServerInfo) -> String {
    let state: Option<Option<String>> = conn
        .query_first(server.gtid_state_sql())
        .await
        .expect("gtid state");
    state.flatten().unwrap_or_default()
}

/// Waits (up to `seconds`) until the replica behind `conn` has applied `state`; true if it has.
pub async fn wait_for_gtids(
    conn: &mut Conn,
    server: &ServerInfo,
    state: &str,
    seconds: u32,
) -> bool {
    let result: Option<Option<i64>> = conn
        .exec_first(server.wait_for_gtid_sql(), (state, seconds))
        .await
        .expect("wait for gtids");
    result.flatten() == Some(0)
}

/// Transactions waiting for a row or table lock on a table of `schema`. Read from the lock
/// tables, not `INNODB_TRX`: MySQL fails a whole `INNODB_TRX` read (error 3854) while any
/// session's statement holds bytes it cannot convert to utf8mb3, such as another test's binary
/// literal.
pub async fn transactions_waiting_in(
    conn: &mut Conn,
    server: &ServerInfo,
    schema: &str,
) -> Vec<u64> {
    let ids: Vec<String> = if server.is_mariadb() {
        conn.exec(
            "SELECT DISTINCT CAST(w.requesting_trx_id AS CHAR) \
             FROM information_schema.INNODB_LOCK_WAITS w \
             JOIN information_schema.INNODB_LOCKS l ON l.lock_id = w.requested_lock_id \
             WHERE l.lock_table LIKE CONCAT('`', ?, '`.%')",
            (schema,),
        )
        .await
    } else {
        conn.exec(
            "SELECT DISTINCT CAST(ENGINE_TRANSACTION_ID AS CHAR) \
             FROM performance_schema.data_locks \
             WHERE LOCK_STATUS = 'WAITING' AND OBJECT_SCHEMA = ?",
            (schema,),
        )
        .await
    }
    .expect("waiting transactions");
    ids.iter().filter_map(|id| id.parse().ok()).collect()
}

/// Sessions (other than `conn`'s) whose default database is `schema`. MySQL reads them from
/// `performance_schema`: its `information_schema.PROCESSLIST` fails whole (error 3854) while a
/// statement holds bytes it cannot convert to utf8mb3, as `INNODB_TRX` does.
pub async fn sessions_in(conn: &mut Conn, server: &ServerInfo, schema: &str) -> i64 {
    let sql = if server.is_mariadb() {
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
         WHERE DB = ? AND ID <> CONNECTION_ID()"
    } else {
        "SELECT COUNT(*) FROM performance_schema.threads \
         WHERE PROCESSLIST_DB = ? AND PROCESSLIST_ID <> CONNECTION_ID()"
    };
    let count: Option<i64> = conn.exec_first(sql, (schema,)).await.expect("sessions");
    count.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_cover_the_range() {
        assert!(super::numbers(50).contains("WHERE seq <= 50"));
        assert_eq!(super::numbers(1000).matches("CROSS JOIN").count(), 3);
    }
}
