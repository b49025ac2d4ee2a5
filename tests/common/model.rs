//! Writers that keep an exact record of every write the server acknowledged, and the check of a
//! table against that record. Each writer owns the ids `id % writers == index`, so its own order
//! is the order of every write to its rows. A statement that fails with the connection lost may
//! or may not have committed: the row may then be in either state.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ghost::engine::conn::ConnectionConfig;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};

/// One row's payload: `v` and `s` (text with multi-byte and 4-byte characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub v: i64,
    pub s: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Row(Payload),
    Gone,
    /// The write's outcome is unknown (the connection broke): either state is right.
    Either(Option<Payload>, Option<Payload>),
}

#[derive(Default)]
pub struct Model {
    rows: BTreeMap<i64, Expect>,
}

/// Counts of what the writers did.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteCounts {
    pub acknowledged: u64,
    pub failed: u64,
    pub ambiguous: u64,
}

/// The table every fault test migrates: `t (id, w, v, s)`, seeded with `rows` rows.
pub async fn create_table(conn: &mut Conn, rows: i64) -> Model {
    conn.query_drop(
        "CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY, w INT NOT NULL, v BIGINT NOT NULL, \
         s VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL, KEY k_v (v)) ENGINE=InnoDB",
    )
    .await
    .expect("create t");
    let mut model = Model::default();
    let mut id = 1;
    while id <= rows {
        let end = (id + 999).min(rows);
        let values: Vec<String> = (id..=end)
            .map(|i| format!("({i}, 0, {i}, 'seed {i} é')"))
            .collect();
        conn.query_drop(format!(
            "INSERT INTO t (id, w, v, s) VALUES {}",
            values.join(", ")
        ))
        .await
        .expect("seed t");
        for i in id..=end {
            model.rows.insert(
                i,
                Expect::Row(Payload {
                    v: i,
                    s: format!("seed {i} é"),
                }),
            );
        }
        id = end + 1;
    }
    model
}

/// Writers running against `t` until stopped.
pub struct Writers {
    stop: Arc<AtomicBool>,
    model: Arc<Mutex<Model>>,
    counts: Arc<Mutex<WriteCounts>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    pub acknowledged: Arc<AtomicU64>,
}

impl Writers {
    /// `writers` tasks, each pausing `pause` between statements.
    pub fn start(
        db: ConnectionConfig,
        model: Model,
        writers: i64,
        seed_rows: i64,
        pause: Duration,
    ) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let model = Arc::new(Mutex::new(model));
        let counts: Arc<Mutex<WriteCounts>> = Arc::default();
        let acknowledged = Arc::new(AtomicU64::new(0));
        let handles = (0..writers)
            .map(|index| {
                let (db, stop, model, counts, acknowledged) = (
                    db.clone(),
                    stop.clone(),
                    model.clone(),
                    counts.clone(),
                    acknowledged.clone(),
                );
                tokio::spawn(async move {
                    write_loop(
                        db,
                        index,
                        writers,
                        seed_rows,
                        pause,
                        stop,
                        model,
                        counts,
                        acknowledged,
                    )
                    .await
                })
            })
            .collect();
        Writers {
            stop,
            model,
            counts,
            handles,
            acknowledged,
        }
    }

    /// Stops the writers and returns the record and the counts.
    pub async fn stop(self) -> (Arc<Mutex<Model>>, WriteCounts) {
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.handles {
            let _ = handle.await;
        }
        let counts = *self.counts.lock().expect("counts");
        (self.model, counts)
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_loop(
    db: ConnectionConfig,
    index: i64,
    writers: i64,
    seed_rows: i64,
    pause: Duration,
    stop: Arc<AtomicBool>,
    model: Arc<Mutex<Model>>,
    counts: Arc<Mutex<WriteCounts>>,
    acknowledged: Arc<AtomicU64>,
) {
    let mut conn: Option<Conn> = None;
    // This writer's rows: seeded ones of its residue class, then the ones it inserts.
    let mut live: Vec<i64> = (1..=seed_rows).filter(|i| i % writers == index).collect();
    let mut next_id = seed_rows + 1 + (writers - (seed_rows + 1) % writers + index) % writers;
    let mut n: i64 = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        if conn.is_none() {
            match db.connect().await {
                Ok(mut c) => {
                    let _ = c.query_drop("SET NAMES utf8mb4").await;
                    conn = Some(c);
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        // Insert, update, update, delete: the table grows slowly.
        let op = if live.is_empty() { 0 } else { n % 4 };
        let (sql, params, id, after): (&str, Params, i64, Option<Payload>) = match op {
            0 => {
                let id = next_id;
                next_id += writers;
                let p = Payload {
                    v: n,
                    s: format!("w{index} n{n} ü😀"),
                };
                (
                    "INSERT INTO t (id, w, v, s) VALUES (?, ?, ?, ?)",
                    Params::from((id, index, p.v, p.s.clone())),
                    id,
                    Some(p),
                )
            }
            3 => {
                let id = live.remove((n as usize * 7) % live.len());
                ("DELETE FROM t WHERE id = ?", Params::from((id,)), id, None)
            }
            _ => {
                let id = live[(n as usize * 13) % live.len()];
                let p = Payload {
                    v: n * 10 + index,
                    s: format!("upd w{index} n{n} ß"),
                };
                (
                    "UPDATE t SET v = ?, s = ? WHERE id = ?",
                    Params::from((p.v, p.s.clone(), id)),
                    id,
                    Some(p),
                )
            }
        };
        let result = c.exec_drop(sql, params).await;
        // Every UPDATE writes new values, so it changes one row if the row is there. None
        // changed: the row is not there (its INSERT was lost with a connection, uncommitted).
        let updated_nothing = result.is_ok() && op != 0 && op != 3 && c.affected_rows() == 0;
        let lost = {
            let mut m = model.lock().expect("model");
            let before = m.rows.get(&id).cloned();
            match result {
                Ok(()) => {
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                    counts.lock().expect("counts").acknowledged += 1;
                    m.rows.insert(
                        id,
                        match &after {
                            Some(_) if updated_nothing => Expect::Gone,
                            Some(p) => Expect::Row(p.clone()),
                            None => Expect::Gone,
                        },
                    );
                    if op == 0 {
                        live.push(id);
                    }
                    false
                }
                Err(mysql_async::Error::Server(_)) => {
                    // The server refused it: nothing changed.
                    counts.lock().expect("counts").failed += 1;
                    if op == 3 {
                        live.push(id);
                    }
                    false
                }
                Err(_) => {
                    // Connection lost mid-statement: committed or not, nobody knows.
                    counts.lock().expect("counts").ambiguous += 1;
                    let old = match before {
                        Some(Expect::Row(p)) => Some(p),
                        Some(Expect::Either(a, _)) => a,
                        _ => None,
                    };
                    m.rows.insert(id, Expect::Either(old, after.clone()));
                    if after.is_some() && !live.contains(&id) {
                        live.push(id);
                    }
                    true
                }
            }
        };
        if lost {
            conn = None;
        }
        tokio::time::sleep(pause).await;
    }
    if let Some(c) = conn {
        let _ = c.disconnect().await;
    }
}

/// The differences between `table` and the record: every row the record expects, with its
/// values; none it does not. Empty when they match.
pub async fn mismatches(
    conn: &mut Conn,
    table: &str,
    model: &Mutex<Model>,
) -> (usize, Vec<String>) {
    let rows: Vec<(i64, i64, Vec<u8>)> = conn
        .query(format!("SELECT id, v, s FROM `{table}` ORDER BY id"))
        .await
        .expect("read the table");
    let mut actual: BTreeMap<i64, Payload> = BTreeMap::new();
    for (id, v, s) in rows {
        actual.insert(
            id,
            Payload {
                v,
                s: String::from_utf8_lossy(&s).into_owned(),
            },
        );
    }
    let model = model.lock().expect("model");
    let mut problems = Vec::new();
    for (id, expect) in &model.rows {
        let got = actual.get(id);
        let ok = match expect {
            Expect::Row(p) => got == Some(p),
            Expect::Gone => got.is_none(),
            Expect::Either(a, b) => got == a.as_ref() || got == b.as_ref(),
        };
        if !ok {
            problems.push(format!("id {id}: expected {expect:?}, found {got:?}"));
        }
    }
    for id in actual.keys() {
        if !model.rows.contains_key(id) {
            problems.push(format!("id {id}: a row nobody wrote"));
        }
    }
    (actual.len(), problems)
}

/// Sets `value` as a parameter (for tests that need the raw value).
pub fn value_text(value: &Value) -> String {
    format!("{value:?}")
}
