//! The streamer survives a killed replication connection without losing or repeating a change, and
//! can start from a saved file/position or GTID position.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ghost::engine::conn::ConnectionConfig;
use ghost::engine::position::BinlogPosition;
use ghost::engine::schema::TableSchema;
use ghost::engine::streamer::{BinlogStreamer, StartPosition, StreamItem, StreamerConfig};
use mysql_async::Value;
use mysql_async::prelude::Queryable;

const SMALL_TRANSACTIONS: i64 = 12;
const ROWS_PER_TRANSACTION: i64 = 5;
/// One transaction larger than loopback socket buffers (up to 32 MiB here), so a kill inside it
/// really cuts it and the streamer must replay it from its start.
const BIG_ROWS: i64 = 16;
const BIG_ROW_BYTES: usize = 4 * 1024 * 1024;
const AUTOCOMMIT_ROWS: i64 = 20;
const TOTAL_ROWS: i64 = SMALL_TRANSACTIONS * ROWS_PER_TRANSACTION + BIG_ROWS + AUTOCOMMIT_ROWS;
/// Rows before the big transaction.
const BEFORE_BIG: i64 = 6 * ROWS_PER_TRANSACTION;

/// What a consumer saw: row ids in order, and the commit positions.
#[derive(Default)]
struct Seen {
    ids: Vec<i64>,
    commits: Vec<BinlogPosition>,
}

fn id_of(values: &[Value]) -> i64 {
    match &values[0] {
        Value::Int(i) => *i,
        Value::UInt(u) => *u as i64,
        other => panic!("unexpected id value {other:?}"),
    }
}

/// Writes the workload: transactions of several single-row INSERTs (one rows event each), one
/// big transaction in the middle, then autocommitted inserts; an unfollowed table gets writes too.
async fn write_workload(admin: ConnectionConfig) {
    let mut conn = admin.connect().await.expect("writer");
    let mut id = 0;
    for t in 0..SMALL_TRANSACTIONS {
        if id == BEFORE_BIG {
            let mut sql = String::from("START TRANSACTION;");
            for _ in 0..BIG_ROWS {
                id += 1;
                sql.push_str(&format!(
                    "INSERT INTO followed VALUES ({id}, REPEAT('x', {BIG_ROW_BYTES}));"
                ));
            }
            sql.push_str("COMMIT;");
            conn.query_drop(sql).await.expect("big transaction");
        }
        let mut sql = String::from("START TRANSACTION;");
        for _ in 0..ROWS_PER_TRANSACTION {
            id += 1;
            sql.push_str(&format!("INSERT INTO followed VALUES ({id}, 'trx {t}');"));
        }
        sql.push_str(&format!("INSERT INTO noise VALUES ({t}); COMMIT;"));
        conn.query_drop(sql).await.expect("transaction");
    }
    // Paced, so that a consumer reading concurrently gets these live, not from a socket buffer.
    for _ in 0..AUTOCOMMIT_ROWS {
        id += 1;
        conn.query_drop(format!("INSERT INTO followed VALUES ({id}, 'auto')"))
            .await
            .expect("autocommit insert");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn setup(prefix: &str) -> (common::TestSchema, Arc<TableSchema>) {
    let schema = common::TestSchema::create(prefix).await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query_drop(
        "CREATE TABLE followed (id INT PRIMARY KEY, note MEDIUMTEXT); CREATE TABLE noise (n INT PRIMARY KEY)",
    )
    .await
    .expect("tables");
    let mut engine = schema.conn_config().connect().await.expect("engine conn");
    let table = Arc::new(
        TableSchema::load(&mut engine, &schema.name, "followed")
            .await
            .expect("schema"),
    );
    (schema, table)
}

/// Reads until `want` rows arrived (and the commit after the last), calling `on_row` after each.
async fn consume<F>(streamer: &mut BinlogStreamer, want: usize, mut on_row: F) -> Seen
where
    F: AsyncFnMut(&mut BinlogStreamer, &Seen),
{
    let mut seen = Seen::default();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), streamer.next())
            .await
            .expect("stream stalled")
            .expect("stream item");
        match item {
            StreamItem::Row(change) => {
                assert_eq!(
                    change.table.name, "followed",
                    "unfollowed table leaked through"
                );
                seen.ids
                    .push(id_of(change.after.as_ref().expect("insert image")));
                on_row(streamer, &seen).await;
            }
            StreamItem::Commit(position) => {
                seen.commits.push(position);
                if seen.ids.len() >= want {
                    return seen;
                }
            }
            _ => {}
        }
    }
}

async fn kill(connection_id: u32) {
    let mut admin = common::primary_admin().connect().await.expect("admin");
    admin
        .query_drop(format!("KILL CONNECTION {connection_id}"))
        .await
        .expect("kill the dump connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_the_connection_is_killed_without_loss_or_repeat() {
    let (schema, table) = setup("resume").await;
    let cfg = StreamerConfig::new(common::primary(), common::unique_server_id(), vec![table]);
    let mut streamer = BinlogStreamer::start(cfg).await.expect("start");
    let writer = tokio::spawn(write_workload(schema.admin_config()));

    // Kill inside a small transaction, inside the big one, and among autocommits. A kill waits
    // until the previous one was noticed (the stream has a new connection).
    let mut kill_at = vec![
        (3 * ROWS_PER_TRANSACTION + 3) as usize,
        (BEFORE_BIG + 3) as usize,
        (TOTAL_ROWS - 10) as usize,
    ];
    let mut last_killed = None;
    let seen = consume(
        &mut streamer,
        TOTAL_ROWS as usize,
        async |s: &mut BinlogStreamer, seen: &Seen| {
            let id = s.connection_id().expect("connection id");
            if kill_at.first().is_some_and(|&n| seen.ids.len() >= n) && last_killed != Some(id) {
                kill(id).await;
                last_killed = Some(id);
                kill_at.remove(0);
            }
        },
    )
    .await;
    assert!(
        kill_at.is_empty(),
        "not every kill happened: {kill_at:?} left"
    );
    writer.await.expect("writer task");

    let expected: Vec<i64> = (1..=TOTAL_ROWS).collect();
    assert_eq!(seen.ids, expected, "every row exactly once, in order");
    assert!(
        streamer.reconnects() >= 3,
        "each kill forced a reconnect (saw {})",
        streamer.reconnects()
    );
    assert!(
        streamer.replayed_events_skipped() > 0,
        "the kill inside the big transaction forced a replay of its delivered part"
    );
    let commits = seen.commits.len();
    assert!(
        commits > (SMALL_TRANSACTIONS + AUTOCOMMIT_ROWS) as usize,
        "a commit per transaction, got {commits}"
    );
    eprintln!(
        "reconnects: {}, replayed events skipped: {}",
        streamer.reconnects(),
        streamer.replayed_events_skipped()
    );
    streamer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_from_saved_coordinates_and_from_a_gtid_position() {
    let (schema, table) = setup("startpos").await;
    let cfg = StreamerConfig::new(
        common::primary(),
        common::unique_server_id(),
        vec![table.clone()],
    );
    let mut first = BinlogStreamer::start(cfg).await.expect("start");
    write_workload(schema.admin_config()).await;

    // Read past the big transaction and remember where the next one ended.
    let split_rows = (BEFORE_BIG + BIG_ROWS + ROWS_PER_TRANSACTION) as usize;
    let seen = consume(
        &mut first,
        split_rows,
        async |_: &mut BinlogStreamer, _: &Seen| {},
    )
    .await;
    first.close().await;
    let saved = seen.commits.last().expect("a commit").clone();
    let gtid = saved
        .gtid
        .clone()
        .expect("MariaDB positions carry a GTID state");
    assert!(!gtid.is_empty(), "GTID state at {saved}");
    let rest: Vec<i64> = (split_rows as i64 + 1..=TOTAL_ROWS).collect();

    for start in [
        StartPosition::Coordinates(saved.coordinates.clone()),
        StartPosition::Gtid(gtid),
    ] {
        let mut cfg = StreamerConfig::new(
            common::primary(),
            common::unique_server_id(),
            vec![table.clone()],
        );
        cfg.start = start.clone();
        let mut streamer = BinlogStreamer::start(cfg).await.expect("restart");
        let seen = consume(
            &mut streamer,
            rest.len(),
            async |_: &mut BinlogStreamer, _: &Seen| {},
        )
        .await;
        assert_eq!(seen.ids, rest, "resumed from {start:?}");
        streamer.close().await;
    }
}
