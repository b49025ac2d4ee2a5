//! The live page of `ghost migrate --http-addr`, in a real headless Chromium: progress that
//! moves, and its buttons steering the running migration (throttle, resume, abort's
//! confirmation, postpone, cut over now). Screenshots are kept (see `common::browser`).

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::browser::Browser;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};

const ROWS: u64 = 200_000;
const WAIT: Duration = Duration::from_secs(60);

struct Migration {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Migration {
    async fn status(&self) -> Value {
        reqwest::get(format!("{}/api/status", self.url))
            .await
            .expect("GET /api/status")
            .json()
            .await
            .expect("status json")
    }

    async fn wait_status(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            // The server may not listen yet.
            let status = match reqwest::get(format!("{}/api/status", self.url)).await {
                Ok(response) => response.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            if done(&status) {
                return status;
            }
            assert!(
                t0.elapsed() < WAIT,
                "not {what}: {status:#}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Migration {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn digits(text: &str) -> u64 {
    let first = text.split('/').next().unwrap_or_default();
    first
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_progress_and_its_buttons_steer_the_migration() {
    let schema = common::TestSchema::create("livepage").await;
    let mut conn = schema.admin_config().connect().await.expect("admin");
    conn.query_drop(format!(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(32)); \
         INSERT INTO t SELECT seq, CONCAT('v', seq) FROM {}",
        common::dialect::numbers(ROWS)
    ))
    .await
    .expect("seed");

    let port = common::browser::free_port();
    let log = std::env::temp_dir().join(format!("ghost-livepage-{port}.log"));
    let mut args = vec!["migrate".to_string()];
    args.extend(common::migrate_args(
        &schema.name,
        "t",
        "ADD COLUMN w INT NOT NULL DEFAULT 1",
    ));
    // Slow enough to click through: small chunks and a nap after each.
    args.extend([
        "--chunk-size=20".to_string(),
        "--nice-ratio=20".into(),
        format!("--http-addr=127.0.0.1:{port}"),
    ]);
    let file = std::fs::File::create(&log).expect("log");
    let child = Command::new(common::ghost_bin())
        .args(&args)
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("start ghost migrate");
    let migration = Migration {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    migration
        .wait_status("copying", |s| {
            s["progress"]["phase"] == "Copying" && s["progress"]["rowsCopied"].as_u64() > Some(0)
        })
        .await;

    let browser = Browser::start().await;
    browser.goto(&format!("{}/", migration.url)).await;
    browser
        .wait_text("#phase", "Copying", WAIT, |t| t == "Copying")
        .await;
    browser
        .wait_text("#connection", "live", WAIT, |t| t == "live")
        .await;
    let title = browser.text("#title").await;
    assert_eq!(title, format!("{}.t", schema.name));

    // Progress moves without a reload.
    let first = digits(&browser.text("#rows-copied").await);
    let moved = browser
        .wait_text("#rows-copied", "moving", WAIT, |t| digits(t) > first)
        .await;
    let bar = browser
        .attribute("#progress-bar", "aria-valuenow")
        .await
        .unwrap_or_default();
    assert!(bar.parse::<f64>().is_ok_and(|p| p > 0.0), "{bar:?}");
    eprintln!("page: rows {first} → {moved}, bar at {bar}%");

    // Postpone the cut-over from the page.
    browser.click("#postpone").await;
    migration
        .wait_status("postponed", |s| s["controls"]["postponeCutOver"] == true)
        .await;

    // Throttle from the page: the engine throttles, the copy stops, the page says why.
    browser.click("#throttle").await;
    let status = migration
        .wait_status("throttled", |s| s["progress"]["throttle"]["active"] == true)
        .await;
    assert_eq!(status["controls"]["throttle"], true, "{status:#}");
    let reason = browser
        .wait_text("#throttle-reason", "throttled", WAIT, |t| {
            !t.is_empty() && t != "not throttled"
        })
        .await;
    let held = migration.status().await["progress"]["rowsCopied"].clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        migration.status().await["progress"]["rowsCopied"],
        held,
        "throttled, yet the copy went on"
    );
    assert!(browser.is_displayed("#resume").await);
    browser.screenshot("live-page-throttled.png").await;
    eprintln!("page: throttle → {reason:?}");

    browser.click("#resume").await;
    migration
        .wait_status("resumed", |s| s["progress"]["throttle"]["active"] == false)
        .await;
    browser
        .wait_text("#throttle-reason", "not throttled", WAIT, |t| {
            t == "not throttled"
        })
        .await;

    // Abort asks first; "no" leaves the migration running.
    browser.click("#abort").await;
    assert!(browser.is_displayed("#confirm-dialog").await);
    assert!(
        browser.text("#confirm-text").await.contains(&schema.name),
        "the confirmation names the table"
    );
    browser.click("#confirm-no").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = migration.status().await;
    assert_eq!(status["controls"]["panic"], false, "{status:#}");
    assert!(
        ["Copying", "Postponed"].contains(&status["progress"]["phase"].as_str().unwrap_or("")),
        "{status:#}"
    );

    // Finish the copy quickly, then cut over from the page.
    let sped = reqwest::Client::new()
        .put(format!("{}/api/controls", migration.url))
        .json(&json!({"chunkSize": 5000, "niceRatio": 0}))
        .send()
        .await
        .expect("PUT /api/controls");
    assert!(sped.status().is_success());
    browser
        .wait_text("#phase", "Postponed", WAIT, |t| t == "Postponed")
        .await;
    let shot = browser.screenshot("live-page.png").await;
    browser.click("#cut-over").await;
    let reply = browser
        .wait_text("#reply", "answered", WAIT, |t| t.contains("npostpone"))
        .await;
    eprintln!("page: cut over now → {reply:?}");
    browser
        .wait_text("#phase", "Succeeded", WAIT, |t| t == "Succeeded")
        .await;
    browser
        .wait_text("#connection", "ended", WAIT, |t| t == "ended")
        .await;
    browser.screenshot("live-page-succeeded.png").await;

    let mut migration = migration;
    let t0 = Instant::now();
    let code = loop {
        if let Some(status) = migration.child.try_wait().expect("wait") {
            break status.code();
        }
        assert!(
            t0.elapsed() < WAIT,
            "ghost migrate did not exit: {}",
            migration.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, Some(0), "{}", migration.log());
    let columns: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND \
             TABLE_NAME = 't'",
            (&schema.name,),
        )
        .await
        .expect("columns");
    assert!(columns.iter().any(|c| c == "w"), "{columns:?}");
    eprintln!(
        "page: cut over from the page; screenshot {}",
        shot.display()
    );
}
