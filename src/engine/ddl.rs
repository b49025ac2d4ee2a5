//! The one DDL statement several components share.

use mysql_async::{Conn, prelude::Queryable};

use super::error::{Result, SqlContext};
use crate::sql::qualified;

/// `DROP TABLE IF EXISTS `schema`.`table``, with the table named in the error.
pub async fn drop_table_if_exists(conn: &mut Conn, schema: &str, table: &str) -> Result<()> {
    let name = qualified(schema, table);
    conn.query_drop(format!("DROP TABLE IF EXISTS {name}"))
        .await
        .sql_context(|| format!("dropping {name}"))
}
