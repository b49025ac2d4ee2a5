//! What the fault suites share: a table with writers that keep an exact record, `ghost migrate`
//! runs that die and resume, and the tally every suite prints.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::model::{self, Writers};

pub const SEED_ROWS: i64 = 3_000;
pub const WRITERS: i64 = 3;
pub const ALTER: &str = "ADD COLUMN note VARCHAR(16) NULL";

pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a suite did, printed and appended to the summary file.
#[derive(Default)]
pub struct Tally {
    pub kills: AtomicU64,
    pub faults: AtomicU64,
    pub rows: AtomicU64,
    pub writes: AtomicU64,
    pub mismatches: AtomicU64,
}

impl Tally {
    /// One comparison: rows compared, writes acknowledged, rows that differed.
    pub fn record(&self, rows: usize, acknowledged: u64, mismatches: usize) {
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.writes.fetch_add(acknowledged, Ordering::Relaxed);
        self.mismatches
            .fetch_add(mismatches as u64, Ordering::Relaxed);
    }

    pub fn report(&self, name: &str) -> String {
        let server = std::env::var("GHOST_TEST_SERVER").unwrap_or_else(|_| "mariadb-10.11".into());
        let line = format!(
            "[{server}] {name}: kills survived {}, faults injected {}, rows compared {}, acknowledged writes {}, mismatches {}",
            self.kills.load(Ordering::Relaxed),
            self.faults.load(Ordering::Relaxed),
            self.rows.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
            self.mismatches.load(Ordering::Relaxed),
        );
        println!("{line}");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults");
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("summary.txt"))
        {
            use std::io::Write;
            let _ = writeln!(f, "{line}");
        }
        line
    }
}

/// `ghost migrate` on the primary for `schema`.t, checkpointing, with extra flags.
pub fn ghost(schema: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(super::ghost_bin());
    cmd.arg("migrate")
        .args(super::migrate_args(schema, "t", ALTER))
        .args([
            "--checkpoint",
            "--chunk-size=200",
            "--default-retries=60",
            "--cut-over-lock-timeout-seconds=3",
            "--ok-to-drop-table",
            "--verbose",
        ])
        .args(extra)
        .env_remove(ghost::engine::crash_point::ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// One trial: writers on a fresh table; a first run that dies (by `kill`); a resumed run that
/// must finish; then the table against the record.
pub struct Trial {
    pub schema: super::TestSchema,
    pub writers: Writers,
}

impl Trial {
    pub async fn start(prefix: &str) -> Trial {
        Self::start_with(prefix, SEED_ROWS).await
    }

    /// A trial on a table of `rows` seeded rows.
    pub async fn start_with(prefix: &str, rows: i64) -> Trial {
        let schema = super::TestSchema::create(prefix).await;
        let mut conn = schema.admin_config().connect().await.expect("admin");
        let model = model::create_table(&mut conn, rows).await;
        let _ = conn.disconnect().await;
        let writers = Writers::start(
            schema.admin_config(),
            model,
            WRITERS,
            rows,
            Duration::from_millis(4),
        );
        Trial { schema, writers }
    }

    /// Runs ghost with `extra` flags until it kills itself at crash point `step` (SIGKILL).
    pub fn die_at(&self, step: &str, extra: &[&str], tally: &Tally) {
        use std::os::unix::process::ExitStatusExt;
        let first = ghost(&self.schema.name, extra)
            .env(ghost::engine::crash_point::ENV, step)
            .output()
            .expect("run ghost");
        assert_eq!(
            first.status.signal(),
            Some(9),
            "{step}: the engine did not die at the step: {}",
            describe(&first)
        );
        tally.kills.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `--resume` to the end (a first success is fine too: some kills come after the end).
    pub fn resume(&self) -> std::process::Output {
        self.resume_with(&[])
    }

    /// `--resume` with `extra` flags.
    pub fn resume_with(&self, extra: &[&str]) -> std::process::Output {
        let mut flags = vec!["--resume"];
        flags.extend_from_slice(extra);
        ghost(&self.schema.name, &flags)
            .output()
            .expect("run ghost --resume")
    }

    /// Lets the writers go on briefly after the migration, stops them, and compares.
    pub async fn finish(self, tally: &Tally, what: &str) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (record, counts) = self.writers.stop().await;
        let mut conn = self.schema.admin_config().connect().await.expect("admin");
        let (rows, problems) = model::mismatches(&mut conn, "t", &record).await;
        let columns: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 't'",
                (&self.schema.name,),
            )
            .await
            .expect("columns");
        let leftovers: Vec<String> = super::table_names(&mut conn, &self.schema.name)
            .await
            .into_iter()
            .filter(|t| t != "t")
            .collect();
        let _ = conn.disconnect().await;
        tally.record(rows, counts.acknowledged, problems.len());
        assert!(
            problems.is_empty(),
            "{what}: {} row(s) differ from what the writers were told: {:?}",
            problems.len(),
            &problems[..problems.len().min(10)]
        );
        assert!(
            columns.iter().any(|c| c == "note"),
            "{what}: the table was not migrated (columns {columns:?})"
        );
        assert!(
            leftovers.is_empty(),
            "{what}: tables left behind: {leftovers:?}"
        );
        assert!(counts.acknowledged > 0, "{what}: no write landed");
    }
}

pub fn describe(output: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr (last 3000 bytes)\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        {
            let err = String::from_utf8_lossy(&output.stderr);
            err[err.len().saturating_sub(3000)..].to_string()
        }
    )
}

/// A `ghost migrate` run whose log lines the test can wait for.
pub struct Running {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.spawn().expect("spawn ghost");
        let (tx, lines) = std::sync::mpsc::channel();
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let stderr = child.stderr.take().expect("stderr");
        let stdout = child.stdout.take().expect("stdout");
        for stream in [
            Box::new(stderr) as Box<dyn std::io::Read + Send>,
            Box::new(stdout),
        ] {
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    log.lock().expect("log").push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        Running { child, lines, log }
    }

    /// Waits for a log line containing `needle`; false after `limit` or when ghost exits.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) if line.contains(needle) => return true,
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if left.is_zero() {
                        return false;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Waits for the end; the exit status and everything it printed.
    pub fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader threads finish once the pipes close.
        std::thread::sleep(Duration::from_millis(100));
        let text = self.log.lock().expect("log").join("\n");
        (status, text)
    }

    pub fn text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

/// The last lines of a log, for assertion messages.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
