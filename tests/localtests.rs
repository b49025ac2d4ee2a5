//! gh-ost's integration corpus (`../shared/ghost-localtests`, see its README) run against
//! `ghost migrate`, following gh-ost's `localtests/test.sh`.
//!
//! A `harness = false` test target: `cargo test --test localtests`. It needs the local MariaDB
//! topology (`bash e2e/mariadb/topology.sh start`). Every case migrates `test.gh_ost_test` on the
//! replica with `--test-on-replica`, which stops replication at the cut-over and rolls the swap
//! back, so the original and the ghost table can be compared on the replica afterwards.
//!
//! All SQL goes through the `mariadb` command-line client, as in gh-ost's harness: `create.sql`
//! files use `delimiter ;;` and `CREATE EVENT`, and the data comparison is of `mariadb -ss`
//! output, byte for byte.
//!
//! Environment:
//! `GHOST_LOCALTESTS_DIR` (the corpus; default `../shared/ghost-localtests` from the crate),
//! `GHOST_LOCALTESTS_FILTER` (a regex on case names; the first positional argument works too),
//! `GHOST_LOCALTESTS_TIMEOUT` (seconds of engine time per case, default 120),
//! `GHOST_LOCALTESTS_EXTRA_FLAGS` (flags added to every case's command line, e.g.
//! `--copy-threads=4`; a case's own flags still win),
//! `GHOST_CACHE_DIR` (logs go to `$GHOST_CACHE_DIR/localtests-logs`, default `~/.cache/ghost`),
//! and the topology's `GHOST_TEST_*` variables (`eval "$(bash e2e/mariadb/topology.sh env)"`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use regex::{Regex, RegexBuilder};

/// `GHOST_TEST_BIN` when set (CI: the release build), else the binary cargo built for the tests.
fn ghost_bin() -> String {
    std::env::var("GHOST_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ghost").to_string())
}
const DATABASE: &str = "test";
const DEFAULT_TABLE: &str = "gh_ost_test";
/// The table `sysbench prepare` creates; the `sysbench` case migrates it instead.
const SYSBENCH_TABLE: &str = "sbtest1";
/// gh-ost's harness: throttled until `_ghc` is this many seconds old, so events pile up.
const THROTTLE_SECONDS: u32 = 2;
const DEFAULT_TIMEOUT_SECS: u64 = 120;
/// Any single `mariadb` client call; longer than every server-side wait we ask for.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
const REPLICATION_START_TIMEOUT: Duration = Duration::from_secs(15);
const CATCH_UP_TIMEOUT_SECS: u32 = 30;
/// Special cases: how long to wait for the row copy, and for the first checkpoint.
const ROW_COPY_TIMEOUT: Duration = Duration::from_secs(30);
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(60);
/// gh-ost's panic-on-warnings scripts give the engine this long to apply the injected events.
const INJECT_SETTLE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(500);
const TAIL_LINES: usize = 40;
const MAX_DIFF_ROWS: usize = 10;
const MAX_LINE_CHARS: usize = 300;

/// gh-ost's panic-on-warnings-batch-middle/test.sh, run on the primary once the rows are copied:
/// one transaction whose first INSERT IGNORE hits the primary key (no row event), whose second
/// duplicates an email under the new unique index, and whose third is harmless.
const BATCH_MIDDLE_DML: &str = "BEGIN; \
    INSERT IGNORE INTO gh_ost_test (id, email) VALUES (1, 'duplicate_pk@example.com'); \
    INSERT IGNORE INTO gh_ost_test (email) VALUES ('alice@example.com'); \
    INSERT IGNORE INTO gh_ost_test (email) VALUES ('new@example.com'); \
    COMMIT;";

/// gh-ost's panic-on-warnings-update-pk-with-duplicate-on-new-unique-index/test.sh: an UPDATE
/// that changes the primary key (applied as DELETE + INSERT) and duplicates a new unique value.
const UPDATE_PK_DML: &str =
    "UPDATE gh_ost_test SET id = 200, email = 'alice@example.com' WHERE id = 2";

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("localtests: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the selected cases; `Ok(false)` when any failed.
fn run() -> Result<bool, String> {
    let settings = Settings::from_env()?;
    fs::create_dir_all(&settings.logs).map_err(|e| format!("{}: {e}", settings.logs.display()))?;
    let cases = list_cases(&settings.corpus, settings.filter.as_ref())?;
    println!(
        "localtests: {} case(s) from {}; logs in {}",
        cases.len(),
        settings.corpus.display(),
        settings.logs.display()
    );
    let tmp = make_tmp_dir()?;
    let tally = Ctx::connect(&settings, tmp.clone()).map(|ctx| {
        // The corpus's fixtures fill rows with MD5(rand()), and MySQL 9.6 moved MD5() out of
        // its core (ghost never uses it). A stand-in in `test` makes the same kind of random
        // text; it goes afterwards, so the other suites keep seeing a stock server.
        let lent = lend_md5(&ctx.primary);
        let tally = run_all(&ctx, &cases);
        if lent {
            let _ = ctx.primary.query("DROP FUNCTION IF EXISTS test.md5");
        }
        tally
    });
    let _ = fs::remove_dir_all(tmp);
    let tally = tally?;
    println!(
        "{} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    Ok(tally.failed == 0)
}

/// Creates `test.md5()` (32 hex characters of SHA-256) when the server has no `MD5()`; true if
/// it did. Unqualified, `md5(...)` then resolves to it in the fixtures' database.
fn lend_md5(primary: &Db) -> bool {
    if primary.query("SELECT MD5('a')").is_ok() {
        return false;
    }
    match primary.query(
        "CREATE FUNCTION IF NOT EXISTS test.md5(s LONGTEXT) RETURNS CHAR(32) DETERMINISTIC NO SQL \
         RETURN LEFT(SHA2(s, 256), 32)",
    ) {
        Ok(_) => {
            eprintln!(
                "localtests: this server has no MD5(): test.md5() stands in for the fixtures"
            );
            true
        }
        Err(e) => {
            eprintln!("localtests: this server has no MD5(), and no stand-in could be made: {e}");
            false
        }
    }
}

fn run_all(ctx: &Ctx, cases: &[(String, PathBuf)]) -> Tally {
    let mut tally = Tally::default();
    for (index, (name, dir)) in cases.iter().enumerate() {
        let report = run_case(ctx, name, dir);
        report.print();
        tally.count(&report.outcome);
        if let Some(reason) = &report.abort {
            // The next cases would start from a broken topology; stop here.
            println!(
                "abort: {reason}; {} case(s) not run",
                cases.len() - index - 1
            );
            break;
        }
    }
    tally
}

// ---------------------------------------------------------------------------------------------
// Settings and shared context

/// What the environment selects.
struct Settings {
    corpus: PathBuf,
    filter: Option<Regex>,
    logs: PathBuf,
    timeout: Duration,
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let corpus = std::env::var_os("GHOST_LOCALTESTS_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/ghost-localtests")
            });
        let corpus = fs::canonicalize(&corpus).unwrap_or(corpus);
        // `cargo test --test localtests NAME` passes NAME as the first argument.
        let filter = std::env::var("GHOST_LOCALTESTS_FILTER")
            .ok()
            .filter(|f| !f.is_empty())
            .or_else(|| std::env::args().skip(1).find(|a| !a.starts_with('-')))
            .map(|f| Regex::new(&f).map_err(|e| format!("case filter {f:?}: {e}")))
            .transpose()?;
        let cache = std::env::var_os("GHOST_CACHE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
                home.join(".cache/ghost")
            });
        let timeout = match std::env::var("GHOST_LOCALTESTS_TIMEOUT") {
            Ok(v) if !v.is_empty() => v.parse::<u64>().map_err(|_| {
                format!("GHOST_LOCALTESTS_TIMEOUT={v:?} is not a number of seconds")
            })?,
            _ => DEFAULT_TIMEOUT_SECS,
        };
        Ok(Self {
            corpus,
            filter,
            logs: cache.join("localtests-logs"),
            // At most a day, so that deadlines cannot overflow.
            timeout: Duration::from_secs(timeout.min(86_400)),
        })
    }
}

/// Case folders in alphabetical order, keeping those the filter matches.
fn list_cases(corpus: &Path, filter: Option<&Regex>) -> Result<Vec<(String, PathBuf)>, String> {
    let entries = fs::read_dir(corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let mut cases = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("{}: {e}", corpus.display()))?
            .path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if !path.is_dir() || name.starts_with('.') {
            continue;
        }
        if filter.is_some_and(|re| !re.is_match(&name)) {
            continue;
        }
        cases.push((name, path));
    }
    cases.sort();
    Ok(cases)
}

/// A private directory for the flag and socket files of this run.
fn make_tmp_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "ghost-localtests-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// Facts about the primary that cases are matched against.
struct ServerInfo {
    version: String,
    version_comment: String,
    gtid_mode: String,
    /// The engine's dialect: the runner's statements that differ between servers come from it.
    dialect: ghost::engine::dialect::ServerInfo,
}

/// Everything a case needs: the servers, the engine's credentials, where files go.
struct Ctx {
    primary: Db,
    replica: Db,
    engine_user: String,
    engine_password: String,
    server: ServerInfo,
    logs: PathBuf,
    tmp: PathBuf,
    timeout: Duration,
}

impl Ctx {
    /// Checks the topology as gh-ost's harness does and cleans up after any earlier run.
    fn connect(settings: &Settings, tmp: PathBuf) -> Result<Self, String> {
        let admin_user = env_or("GHOST_TEST_ADMIN_USER", "ghost_admin");
        let admin_password = env_or("GHOST_TEST_ADMIN_PASSWORD", "ghost-admin-pass");
        let primary = Db {
            role: "primary",
            endpoint: Endpoint::from_env("GHOST_TEST_PRIMARY", "127.0.0.1:23306")?,
            user: admin_user.clone(),
            password: admin_password.clone(),
        };
        let replica = Db {
            role: "replica",
            endpoint: Endpoint::from_env("GHOST_TEST_REPLICA", "127.0.0.1:23307")?,
            user: admin_user,
            password: admin_password,
        };
        let server = preflight(&primary, &replica)?;
        let ctx = Self {
            primary,
            replica,
            engine_user: env_or("GHOST_TEST_USER", "ghost"),
            engine_password: env_or("GHOST_TEST_PASSWORD", "ghost-pass"),
            server,
            logs: settings.logs.clone(),
            tmp,
            timeout: settings.timeout,
        };
        cleanup(&ctx, &[DEFAULT_TABLE, SYSBENCH_TABLE], None)
            .map_err(|e| format!("initial cleanup: {e}"))?;
        Ok(ctx)
    }
}

/// What gh-ost's harness verifies before the first test.
fn preflight(primary: &Db, replica: &Db) -> Result<ServerInfo, String> {
    let hint = "is the topology up? bash e2e/mariadb/topology.sh start";
    primary
        .query("select 1")
        .map_err(|e| format!("{e} ({hint})"))?;
    replica
        .query("select 1")
        .map_err(|e| format!("{e} ({hint})"))?;
    let format = replica.query("select @@global.binlog_format")?;
    if format != "ROW" {
        return Err(format!(
            "the replica has binlog_format={format}, expected ROW"
        ));
    }
    // The cases' write load is an EVENT; gh-ost's harness switches the scheduler on as well.
    if primary.query("select @@global.event_scheduler")? != "ON" {
        primary.query("set global event_scheduler = 1")?;
    }
    primary.query("create database if not exists test")?;
    let version = primary.query("select @@version")?;
    let version_comment = primary.query("select @@version_comment")?;
    // MariaDB always logs GTIDs; MySQL has gtid_mode.
    let gtid_mode = if version.to_ascii_lowercase().contains("mariadb") {
        "ON".to_string()
    } else {
        primary
            .query("select @@global.gtid_mode")
            .unwrap_or_else(|_| "unsupported".to_string())
    };
    let dialect = ghost::engine::dialect::ServerInfo::from_strings(&version, &version_comment);
    Ok(ServerInfo {
        version,
        version_comment,
        gtid_mode,
        dialect,
    })
}

// ---------------------------------------------------------------------------------------------
// Cases

/// How a case drives the engine.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One run, then the checks.
    Plain,
    /// `gtid-resume`: killed after its first checkpoint, then run again with `--resume`.
    Resume,
    /// panic-on-warnings cases with a custom script in gh-ost: this DML goes to the primary
    /// after the row copy, while the cut-over is postponed; the engine must fail applying it.
    InjectAfterCopy(&'static str),
    /// `sysbench`: a sysbench write load on `sbtest1` during the migration.
    Sysbench,
}

/// One test folder.
struct Case {
    name: String,
    kind: Kind,
    /// The migrated table: `gh_ost_test`, or `sbtest1` for sysbench.
    table: &'static str,
    files: CaseFiles,
}

impl Case {
    fn load(name: &str, dir: &Path) -> Result<Self, String> {
        let kind = match name {
            "gtid-resume" => Kind::Resume,
            "panic-on-warnings-batch-middle" => Kind::InjectAfterCopy(BATCH_MIDDLE_DML),
            "panic-on-warnings-update-pk-with-duplicate-on-new-unique-index" => {
                Kind::InjectAfterCopy(UPDATE_PK_DML)
            }
            "sysbench" => Kind::Sysbench,
            _ => Kind::Plain,
        };
        let table = if kind == Kind::Sysbench {
            SYSBENCH_TABLE
        } else {
            DEFAULT_TABLE
        };
        Ok(Self {
            name: name.to_string(),
            kind,
            table,
            files: CaseFiles::load(dir)?,
        })
    }

    /// One of the engine's tables for this case: `_<table>_<suffix>`.
    fn engine_table(&self, suffix: &str) -> String {
        format!("_{}_{suffix}", self.table)
    }
}

/// The files of a test folder (README, "Files in a test folder").
struct CaseFiles {
    extra_args: Vec<String>,
    expect_failure: Option<String>,
    ignore_versions: Option<String>,
    orig_columns: String,
    ghost_columns: String,
    order_by: Option<String>,
    sql_mode: Option<String>,
    gtid_mode: Option<String>,
    expect_table_structure: Option<String>,
    create_sql: PathBuf,
    before_sql: Option<PathBuf>,
    after_sql: Option<PathBuf>,
    destroy_sql: Option<PathBuf>,
}

impl CaseFiles {
    fn load(dir: &Path) -> Result<Self, String> {
        let text = |name: &str| read_text(&dir.join(name));
        let sql_file = |name: &str| {
            let path = dir.join(name);
            path.is_file().then_some(path)
        };
        let extra_args = match text("extra_args")? {
            Some(args) => shell_words(&args).map_err(|e| format!("extra_args: {e}"))?,
            None => Vec::new(),
        };
        let columns = |name: &str| -> Result<String, String> {
            Ok(text(name)?
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| "*".to_string()))
        };
        Ok(Self {
            extra_args,
            expect_failure: text("expect_failure")?,
            ignore_versions: text("ignore_versions")?.filter(|p| !p.is_empty()),
            orig_columns: columns("orig_columns")?,
            ghost_columns: columns("ghost_columns")?,
            order_by: text("order_by")?.filter(|o| !o.trim().is_empty()),
            sql_mode: text("sql_mode")?,
            gtid_mode: text("gtid_mode")?.map(|m| m.trim().to_string()),
            expect_table_structure: text("expect_table_structure")?,
            create_sql: sql_file("create.sql").ok_or("the case has no create.sql")?,
            before_sql: sql_file("before.sql"),
            after_sql: sql_file("after.sql"),
            destroy_sql: sql_file("destroy.sql"),
        })
    }
}

/// A small text file of a case without its trailing newlines, as the shell's `$(cat f)` reads
/// it; `None` when absent.
fn read_text(path: &Path) -> Result<Option<String>, String> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(|t| Some(t.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|_| format!("{} is not UTF-8", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Why a case is skipped on this server, if it is.
fn skip_reason(ctx: &Ctx, case: &Case) -> Result<Option<String>, String> {
    if let Some(pattern) = &case.files.ignore_versions {
        if version_ignored(pattern, &ctx.server)? {
            return Ok(Some(format!(
                "ignore_versions {pattern:?} matches {} ({})",
                ctx.server.version, ctx.server.version_comment
            )));
        }
    }
    if let Some(wanted) = &case.files.gtid_mode {
        if !wanted.eq_ignore_ascii_case(&ctx.server.gtid_mode) {
            return Ok(Some(format!(
                "needs gtid_mode={wanted}, the server has {}",
                ctx.server.gtid_mode
            )));
        }
    }
    if case.kind == Kind::Sysbench && !on_path("sysbench") {
        return Ok(Some(
            "the sysbench tool is not installed (Debian package sysbench)".to_string(),
        ));
    }
    Ok(None)
}

/// gh-ost: `egrep "^<pattern>"` on `@@version`, case-insensitively on `@@version_comment`.
/// `@@version` is matched case-insensitively too: Debian's MariaDB says `Debian 12` in its
/// version comment, not `mariadb.org binary distribution`, so a pattern such as
/// `Percona|mariadb` could only recognise MariaDB in `10.11.x-MariaDB`.
fn version_ignored(pattern: &str, server: &ServerInfo) -> Result<bool, String> {
    let re = RegexBuilder::new(&format!("^{pattern}"))
        .case_insensitive(true)
        .build()
        .map_err(|e| format!("ignore_versions {pattern:?}: {e}"))?;
    Ok(re.is_match(&server.version) || re.is_match(&server.version_comment))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

// ---------------------------------------------------------------------------------------------
// One case, start to end

enum Outcome {
    Pass,
    Fail(Failure),
    Skip(String),
}

impl Outcome {
    /// Adds a problem found after the run: a pass becomes a failure, a failure lists it too.
    fn and_fail(self, problem: String) -> Self {
        match self {
            Outcome::Fail(mut failure) => {
                failure.details.insert(0, format!("also: {problem}"));
                Outcome::Fail(failure)
            }
            Outcome::Pass | Outcome::Skip(_) => Outcome::Fail(problem.into()),
        }
    }

    fn summary(&self) -> String {
        match self {
            Outcome::Pass => "== ok".to_string(),
            Outcome::Fail(f) => format!("== FAIL: {}\n{}", f.reason, f.details.join("\n")),
            Outcome::Skip(reason) => format!("== skip: {reason}"),
        }
    }
}

/// Why a case failed: a one-line reason and lines to show under it.
struct Failure {
    reason: String,
    details: Vec<String>,
}

impl Failure {
    fn with_output(reason: impl Into<String>, output: &str) -> Self {
        Self {
            reason: reason.into(),
            details: tail(output, TAIL_LINES),
        }
    }
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self {
            reason,
            details: Vec::new(),
        }
    }
}

struct Report {
    name: String,
    elapsed: Duration,
    outcome: Outcome,
    /// Set when the topology could not be made clean again; no further case can run.
    abort: Option<String>,
}

impl Report {
    fn print(&self) {
        let secs = self.elapsed.as_secs_f64();
        match &self.outcome {
            Outcome::Pass => println!("ok      {} ({secs:.1}s)", self.name),
            Outcome::Fail(f) => {
                println!(
                    "FAIL    {} ({secs:.1}s): {}",
                    self.name,
                    one_line(&f.reason, 500)
                );
                for line in &f.details {
                    println!("        {line}");
                }
            }
            Outcome::Skip(reason) => println!("skip    {}: {reason}", self.name),
        }
    }
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Tally {
    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Pass => self.passed += 1,
            Outcome::Fail(_) => self.failed += 1,
            Outcome::Skip(_) => self.skipped += 1,
        }
    }
}

fn run_case(ctx: &Ctx, name: &str, dir: &Path) -> Report {
    let started = Instant::now();
    let (outcome, abort) = match Case::load(name, dir) {
        Err(reason) => (Outcome::Fail(reason.into()), None),
        Ok(case) => match skip_reason(ctx, &case) {
            Err(reason) => (Outcome::Fail(reason.into()), None),
            Ok(Some(reason)) => (Outcome::Skip(reason), None),
            Ok(None) => run_selected(ctx, &case),
        },
    };
    Report {
        name: name.to_string(),
        elapsed: started.elapsed(),
        outcome,
        abort,
    }
}

/// Runs a case that is not skipped, and always restores the servers after it.
fn run_selected(ctx: &Ctx, case: &Case) -> (Outcome, Option<String>) {
    let mut log = match CaseLog::create(ctx.logs.join(format!("{}.log", case.name))) {
        Ok(log) => log,
        Err(e) => return (Outcome::Fail(e.into()), None),
    };
    let before = match TableSnapshot::take(ctx) {
        Ok(snapshot) => snapshot,
        Err(e) => return (Outcome::Fail(e.into()), None),
    };
    let saved_modes = match case
        .files
        .sql_mode
        .as_ref()
        .map(|_| SavedSqlModes::read(ctx))
    {
        None => None,
        Some(Ok(saved)) => Some(saved),
        Some(Err(e)) => return (Outcome::Fail(e.into()), None),
    };

    let run = execute(ctx, case, &mut log);
    let problems = teardown(ctx, case, saved_modes.as_ref());
    let mut outcome = match run {
        Ok(run) => verify(ctx, case, &run),
        Err(failure) => Outcome::Fail(failure),
    };
    for problem in problems {
        outcome = outcome.and_fail(problem);
    }
    let abort = cleanup(ctx, &[case.table], Some(&before)).err();
    if let Some(reason) = &abort {
        outcome = outcome.and_fail(format!("cleanup: {reason}"));
    }
    log.note(&outcome.summary());
    (outcome, abort)
}

/// gh-ost's steps 2 to 9: fresh replication, sql_mode, the case's schema and data, the engine.
fn execute(ctx: &Ctx, case: &Case, log: &mut CaseLog) -> Result<GhostRun, Failure> {
    restart_replication(ctx)?;
    if let Some(mode) = &case.files.sql_mode {
        let set = format!("set @@global.sql_mode = {}", sql_string(mode));
        ctx.primary.query(&set)?;
        ctx.replica.query(&set)?;
    }
    ctx.primary
        .source(&case.files.create_sql)
        .map_err(|e| format!("create.sql: {e}"))?;
    if let Some(before) = &case.files.before_sql {
        // The replica first applies the case's data: a before.sql setting (a tiny
        // max_binlog_cache_size, say) must not break replication of it.
        wait_caught_up(ctx)?;
        for db in [&ctx.primary, &ctx.replica] {
            db.source(before).map_err(|e| format!("before.sql: {e}"))?;
        }
    }
    if case.kind == Kind::Sysbench {
        sysbench_prepare(ctx)?;
    }
    wait_caught_up(ctx)?;
    match case.kind {
        Kind::Plain => run_plain(ctx, case, log),
        Kind::Sysbench => {
            let load = start_sysbench_load(ctx, case)?;
            let run = run_plain(ctx, case, log);
            // Killed (by pid) when the migration is over, as gh-ost's harness does.
            drop(load);
            run
        }
        Kind::Resume => run_resume(ctx, case, log),
        Kind::InjectAfterCopy(dml) => run_inject_after_copy(ctx, case, log, dml),
    }
}

/// gh-ost's step 10: restore sql_mode, after.sql on both servers, destroy.sql on the primary.
/// Runs whatever happened before; returns what went wrong.
fn teardown(ctx: &Ctx, case: &Case, saved: Option<&SavedSqlModes>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(saved) = saved {
        for (db, mode) in [
            (&ctx.primary, &saved.primary),
            (&ctx.replica, &saved.replica),
        ] {
            let restore = format!("set @@global.sql_mode = {}", sql_string(mode));
            if let Err(e) = db.query(&restore) {
                problems.push(format!("restoring sql_mode: {e}"));
            }
        }
    }
    if let Some(after) = &case.files.after_sql {
        for db in [&ctx.primary, &ctx.replica] {
            if let Err(e) = db.source(after) {
                problems.push(format!("after.sql: {e}"));
            }
        }
    }
    if let Some(destroy) = &case.files.destroy_sql {
        if let Err(e) = ctx.primary.source(destroy) {
            problems.push(format!("destroy.sql: {e}"));
        }
    }
    problems
}

/// gh-ost's steps 11 to 13: the expected failure, the ghost table's structure, the data.
fn verify(ctx: &Ctx, case: &Case, run: &GhostRun) -> Outcome {
    let status = match run.end {
        RunEnd::TimedOut => {
            let reason = format!(
                "timed out after {}s; ghost was killed",
                ctx.timeout.as_secs()
            );
            return Outcome::Fail(Failure::with_output(reason, &run.output));
        }
        RunEnd::Exited(status) => status,
    };
    if let Some(expected) = &case.files.expect_failure {
        if status.success() {
            let reason = "expected a failure, but ghost exited 0";
            return Outcome::Fail(Failure::with_output(reason, &run.output));
        }
        if !expected.trim().is_empty() && !grep(expected, &run.output) {
            let reason = format!(
                "ghost failed ({}) but its output lacks {:?}",
                describe(status),
                one_line(expected, 200)
            );
            return Outcome::Fail(Failure::with_output(reason, &run.output));
        }
        return Outcome::Pass;
    }
    if !status.success() {
        let reason = format!("ghost failed ({})", describe(status));
        return Outcome::Fail(Failure::with_output(reason, &run.output));
    }
    match check_tables(ctx, case) {
        Ok(()) => Outcome::Pass,
        Err(mut failure) => {
            failure.details.push("ghost output:".to_string());
            failure.details.extend(tail(&run.output, TAIL_LINES));
            Outcome::Fail(failure)
        }
    }
}

/// The ghost table's structure and the checksum, on the replica where both tables remain.
fn check_tables(ctx: &Ctx, case: &Case) -> Result<(), Failure> {
    let ghost_table = case.engine_table("gho");
    if let Some(expected) = &case.files.expect_table_structure {
        let structure = ctx
            .replica
            .select_test(&format!("show create table {}\\G", ident(&ghost_table)))?;
        let structure = String::from_utf8_lossy(&structure);
        if !grep(expected, &structure) {
            return Err(Failure {
                reason: format!("{ghost_table} lacks {:?}", one_line(expected, 200)),
                details: structure.lines().map(|l| clip(l, MAX_LINE_CHARS)).collect(),
            });
        }
    }
    let order_by = case
        .files
        .order_by
        .as_ref()
        .map(|o| format!(" order by {o}"))
        .unwrap_or_default();
    let orig = ctx.replica.select_test(&format!(
        "select {} from {}{order_by}",
        case.files.orig_columns,
        ident(case.table)
    ))?;
    let ghost = ctx.replica.select_test(&format!(
        "select {} from {}{order_by}",
        case.files.ghost_columns,
        ident(&ghost_table)
    ))?;
    if orig == ghost {
        Ok(())
    } else {
        Err(first_differences(&orig, &ghost))
    }
}

/// A checksum mismatch, with the first rows that differ.
fn first_differences(orig: &[u8], ghost: &[u8]) -> Failure {
    let orig = String::from_utf8_lossy(orig);
    let ghost = String::from_utf8_lossy(ghost);
    let a: Vec<&str> = orig.lines().collect();
    let b: Vec<&str> = ghost.lines().collect();
    let first = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let mut details = Vec::new();
    let mut shown = 0;
    for row in first..a.len().max(b.len()) {
        if shown == MAX_DIFF_ROWS {
            details.push("...".to_string());
            break;
        }
        let (x, y) = (a.get(row), b.get(row));
        if x == y {
            continue;
        }
        shown += 1;
        let (x, y) = (
            x.copied().unwrap_or("(none)"),
            y.copied().unwrap_or("(none)"),
        );
        details.push(format!("row {}: orig  {x}", row + 1));
        details.push(format!("row {}: ghost {y}", row + 1));
    }
    let details = details.iter().map(|l| clip(l, MAX_LINE_CHARS)).collect();
    Failure {
        reason: format!(
            "checksum mismatch: orig {} rows, ghost {} rows, first difference at row {}",
            a.len(),
            b.len(),
            first + 1
        ),
        details,
    }
}

// ---------------------------------------------------------------------------------------------
// Driving the engine

/// gh-ost's default command line for its harness, then the case's own flags (a later flag
/// overrides an earlier one).
fn ghost_args(ctx: &Ctx, case: &Case, throttle_seconds: u32, extra: &[String]) -> Vec<String> {
    let table = case.table;
    let mut args: Vec<String> = vec![
        format!("--user={}", ctx.engine_user),
        format!("--password={}", ctx.engine_password),
        format!("--host={}", ctx.replica.endpoint.host),
        format!("--port={}", ctx.replica.endpoint.port),
        format!("--assume-master-host={}", ctx.primary.endpoint),
        format!("--database={DATABASE}"),
        format!("--table={table}"),
        "--alter=engine=innodb".to_string(),
        "--exact-rowcount".to_string(),
        "--assume-rbr".to_string(),
        "--skip-metadata-lock-check".to_string(),
        "--initially-drop-old-table".to_string(),
        "--initially-drop-ghost-table".to_string(),
        format!(
            "--throttle-query=select timestampdiff(second, min(last_update), now()) \
             < {throttle_seconds} from _{table}_ghc"
        ),
        format!(
            "--throttle-flag-file={}",
            ctx.tmp.join("throttle.flag").display()
        ),
        format!(
            "--serve-socket-file={}",
            ctx.tmp.join("ghost.sock").display()
        ),
        "--initially-drop-socket-file".to_string(),
        "--test-on-replica".to_string(),
        "--default-retries=3".to_string(),
        "--chunk-size=10".to_string(),
        "--verbose".to_string(),
        "--debug".to_string(),
        "--stack".to_string(),
        "--checkpoint".to_string(),
        "--execute".to_string(),
        // gh-ost's default 99999 would clash with any other binlog client of the replica.
        format!(
            "--replica-server-id={}",
            rand::random_range(100_000..2_000_000_000u32)
        ),
    ];
    // Whole-corpus variants (e.g. `--copy-threads=4`); the case's own flags come after and win.
    if let Ok(flags) = std::env::var("GHOST_LOCALTESTS_EXTRA_FLAGS") {
        args.extend(flags.split_whitespace().map(str::to_string));
    }
    args.extend_from_slice(extra);
    args
}

enum RunEnd {
    Exited(ExitStatus),
    TimedOut,
}

/// How the engine ended, and everything it printed (all runs of the case).
struct GhostRun {
    end: RunEnd,
    output: String,
}

/// Starts `ghost migrate` with its stdout and stderr appended to the case log; returns the
/// child and the log offset where its output starts.
fn spawn_ghost(log: &mut CaseLog, args: &[String]) -> Result<(ChildGuard, u64), String> {
    log.note(&format!("$ ghost migrate {}", display_args(args)));
    let offset = log.size();
    let (stdout, stderr) = log.stdio()?;
    let mut cmd = Command::new(ghost_bin());
    cmd.arg("migrate")
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        cmd.env("RUST_BACKTRACE", "1");
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", ghost_bin()))?;
    Ok((ChildGuard(child), offset))
}

/// Waits for the engine until `deadline`, killing it then.
fn finish(mut child: ChildGuard, deadline: Instant) -> Result<RunEnd, String> {
    Ok(match wait_until(&mut child.0, deadline)? {
        Some(status) => RunEnd::Exited(status),
        None => RunEnd::TimedOut,
    })
}

fn run_plain(ctx: &Ctx, case: &Case, log: &mut CaseLog) -> Result<GhostRun, Failure> {
    let deadline = Instant::now() + ctx.timeout;
    let args = ghost_args(ctx, case, THROTTLE_SECONDS, &case.files.extra_args);
    let (child, offset) = spawn_ghost(log, &args)?;
    let end = finish(child, deadline)?;
    Ok(GhostRun {
        end,
        output: log.read_from(offset),
    })
}

/// gtid-resume: the first run (unthrottled, slowed by the case's --nice-ratio) is killed with
/// SIGKILL once it has written a checkpoint; a second run with --resume must finish the job.
fn run_resume(ctx: &Ctx, case: &Case, log: &mut CaseLog) -> Result<GhostRun, Failure> {
    let deadline = Instant::now() + ctx.timeout;
    // Unthrottled, as gh-ost's script (THROTTLE_SECONDS=0): a throttle pauses the binlog apply,
    // and a checkpoint times out waiting for the apply to catch up.
    // The case's --nice-ratio stretches gh-ost's fixed 1,000-row chunks past the first
    // checkpoint; adaptive chunks (ghost's default) would copy its rows in a few large chunks
    // before that.
    let mut first_extra = case.files.extra_args.clone();
    first_extra.push("--target-chunk-time-millis=0".to_string());
    let first = ghost_args(ctx, case, 0, &first_extra);
    let (mut child, offset) = spawn_ghost(log, &first)?;
    let limit = CHECKPOINT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
    let waited = poll_while_running(&mut child, limit, "a checkpoint was written", || {
        checkpoint_written(ctx, case, &log.read_from(offset))
    });
    // SIGKILL: no cleanup, so the ghost, changelog and checkpoint tables stay for the resume.
    drop(child);
    let first_output = log.read_from(offset);
    if let Err(reason) = waited {
        return Err(Failure::with_output(reason, &first_output));
    }
    if row_copy_done(ctx, case, &first_output) {
        let reason = "the row copy was complete before the first checkpoint, so the resume \
                      would copy nothing; raise --nice-ratio (extra_args) or the seed rows";
        return Err(Failure::with_output(reason, &first_output));
    }
    log.note("== killed (SIGKILL) after its first checkpoint; resuming");
    // --nice-ratio only had to stretch the first run past its first checkpoint.
    let mut extra = without_flag(&case.files.extra_args, "nice-ratio");
    extra.push("--resume".to_string());
    let second = ghost_args(ctx, case, 0, &extra);
    let (child, offset) = spawn_ghost(log, &second)?;
    let end = finish(child, deadline)?;
    Ok(GhostRun {
        end,
        output: format!("{first_output}{}", log.read_from(offset)),
    })
}

/// The panic-on-warnings scripts: the cut-over is postponed by a flag file; once the rows are
/// copied, `dml` runs on the primary, so the engine meets it in the binlog; after gh-ost's 10 s
/// (or as soon as the engine exits) the flag goes and the run must end in the expected failure.
fn run_inject_after_copy(
    ctx: &Ctx,
    case: &Case,
    log: &mut CaseLog,
    dml: &str,
) -> Result<GhostRun, Failure> {
    let deadline = Instant::now() + ctx.timeout;
    let flag = FlagFile::create(ctx.tmp.join("postpone-cut-over.flag"))?;
    // Our own flag file replaces the case's fixed /tmp path.
    let mut extra = without_flag(&case.files.extra_args, "postpone-cut-over-flag-file");
    extra.push(format!(
        "--postpone-cut-over-flag-file={}",
        flag.0.display()
    ));
    let args = ghost_args(ctx, case, THROTTLE_SECONDS, &extra);
    let (mut child, offset) = spawn_ghost(log, &args)?;

    let limit = ROW_COPY_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
    let copied = poll_while_running(&mut child, limit, "the row copy was complete", || {
        row_copy_done(ctx, case, &log.read_from(offset))
    });
    if let Err(reason) = copied {
        drop(child);
        return Err(Failure::with_output(reason, &log.read_from(offset)));
    }
    // gh-ost's script polls the log once a second; leave the engine that moment too.
    thread::sleep(Duration::from_secs(1));
    if let Err(e) = ctx.primary.query_test(dml) {
        drop(child);
        let reason = format!("injecting the case's DML: {e}");
        return Err(Failure::with_output(reason, &log.read_from(offset)));
    }
    let settle = Instant::now() + INJECT_SETTLE;
    while Instant::now() < settle && child.running() {
        thread::sleep(POLL);
    }
    flag.remove();
    let end = finish(child, deadline)?;
    Ok(GhostRun {
        end,
        output: log.read_from(offset),
    })
}

/// Polls `done` until it holds; fails when the engine exits first or `limit` passes.
fn poll_while_running(
    child: &mut ChildGuard,
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            return Err(format!("ghost exited ({}) before {what}", describe(status)));
        }
        if Instant::now() >= deadline {
            return Err(format!("waited {}s, but not {what}", limit.as_secs()));
        }
        thread::sleep(POLL);
    }
}

/// The row copy is over when the engine says so, or when the ghost table on the replica holds
/// as many rows as the original (the special cases have no write load of their own).
fn row_copy_done(ctx: &Ctx, case: &Case, output: &str) -> bool {
    if output.to_ascii_lowercase().contains("row copy complete") {
        return true;
    }
    let sql = format!(
        "select (select count(*) from {}) >= (select count(*) from {})",
        ident(&case.engine_table("gho")),
        ident(case.table)
    );
    ctx.replica.query_test(&sql).is_ok_and(|v| v == "1")
}

/// A checkpoint exists when the engine says so, or when `_<table>_ghk` has a row.
fn checkpoint_written(ctx: &Ctx, case: &Case, output: &str) -> bool {
    if output.to_ascii_lowercase().contains("checkpoint success") {
        return true;
    }
    let sql = format!(
        "select count(*) > 0 from {}",
        ident(&case.engine_table("ghk"))
    );
    ctx.replica.query_test(&sql).is_ok_and(|v| v == "1")
}

/// `args` without any form of the flag `name` (`--name=v`, `-name=v`, `--name v`).
fn without_flag(args: &[String], name: &str) -> Vec<String> {
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let bare = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .unwrap_or("");
        if bare == name {
            skip_value = true;
            continue;
        }
        if bare
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('='))
        {
            continue;
        }
        kept.push(arg.clone());
    }
    kept
}

/// The command line for the log, shell-quoted, without the password.
fn display_args(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.starts_with("--password=") {
                "--password=***".to_string()
            } else {
                shell_quote(a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_=./:,@+%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

// ---------------------------------------------------------------------------------------------
// sysbench (gh-ost's harness: oltp_write_only, 20k rows, 2 threads at 200 rps for 30 s)

fn sysbench(ctx: &Ctx) -> Command {
    let db = &ctx.primary;
    let mut cmd = Command::new("sysbench");
    cmd.arg("oltp_write_only")
        .arg(format!("--mysql-host={}", db.endpoint.host))
        .arg(format!("--mysql-port={}", db.endpoint.port))
        .arg(format!("--mysql-user={}", db.user))
        .arg(format!("--mysql-password={}", db.password))
        .arg(format!("--mysql-db={DATABASE}"))
        .args(["--tables=1", "--table-size=20000"]);
    cmd
}

fn sysbench_prepare(ctx: &Ctx) -> Result<(), String> {
    let mut cmd = sysbench(ctx);
    cmd.arg("prepare");
    let out = run_with_timeout(cmd, Stdio::null(), Duration::from_secs(120))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "sysbench prepare failed ({}): {}",
        describe(out.status),
        one_line(&stderr, 300)
    ))
}

/// Starts the write load; its output goes to `<case>.load.log` beside the case log.
fn start_sysbench_load(ctx: &Ctx, case: &Case) -> Result<ChildGuard, String> {
    let path = ctx.logs.join(format!("{}.load.log", case.name));
    let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let stderr = file
        .try_clone()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut cmd = sysbench(ctx);
    cmd.args([
        "--rand-seed=163",
        "--threads=2",
        "--time=30",
        "--report-interval=10",
        "--rate=200",
        "run",
    ])
    .stdin(Stdio::null())
    .stdout(file)
    .stderr(stderr);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run sysbench: {e}"))?;
    Ok(ChildGuard(child))
}

// ---------------------------------------------------------------------------------------------
// Replication and cleanup

fn restart_replication(ctx: &Ctx) -> Result<(), String> {
    let dialect = &ctx.server.dialect;
    let [stop_io, stop_sql] = dialect.stop_replication_sql();
    ctx.replica.query(&format!(
        "{stop_io}; {stop_sql}; {}",
        dialect.start_replication_sql()
    ))?;
    wait_replication_running(ctx)
}

/// gh-ost's harness waits until Seconds_Behind_Master is not NULL; both threads must run too.
fn wait_replication_running(ctx: &Ctx) -> Result<(), String> {
    let deadline = Instant::now() + REPLICATION_START_TIMEOUT;
    loop {
        let dialect = &ctx.server.dialect;
        let columns = dialect.replica_status_columns();
        let status = ctx.replica.vertical(dialect.replica_status_sql())?;
        let field = |name: &str| status.get(name).map_or("", String::as_str);
        let lag = field(columns.seconds_behind);
        if field(columns.io_running) == "Yes"
            && field(columns.sql_running) == "Yes"
            && !lag.is_empty()
            && lag != "NULL"
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "replication is not running on the replica after {}s: IO running={:?} \
                 SQL running={:?} Last_IO_Error={:?} Last_SQL_Error={:?}",
                REPLICATION_START_TIMEOUT.as_secs(),
                field(columns.io_running),
                field(columns.sql_running),
                field("Last_IO_Error"),
                field("Last_SQL_Error")
            ));
        }
        thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until the replica has applied everything the primary has logged so far.
fn wait_caught_up(ctx: &Ctx) -> Result<(), String> {
    let dialect = &ctx.server.dialect;
    let pos = ctx
        .primary
        .query(dialect.gtid_state_sql())?
        .replace('\n', "");
    let sql = dialect
        .wait_for_gtid_sql()
        .replacen('?', &sql_string(&pos), 1)
        .replacen('?', &CATCH_UP_TIMEOUT_SECS.to_string(), 1);
    if ctx.replica.query(&sql)? == "0" {
        Ok(())
    } else {
        Err(format!(
            "the replica did not reach the primary's GTID position {pos} within \
             {CATCH_UP_TIMEOUT_SECS}s"
        ))
    }
}

/// Base tables in `test` on each server before a case, to find the extra tables it creates
/// (e.g. a foreign key's parent table).
struct TableSnapshot {
    primary: BTreeSet<String>,
    replica: BTreeSet<String>,
}

impl TableSnapshot {
    fn take(ctx: &Ctx) -> Result<Self, String> {
        Ok(Self {
            primary: tables_in_test(&ctx.primary)?,
            replica: tables_in_test(&ctx.replica)?,
        })
    }
}

fn tables_in_test(db: &Db) -> Result<BTreeSet<String>, String> {
    let names = db.query(
        "select table_name from information_schema.tables \
         where table_schema = 'test' and table_type = 'BASE TABLE'",
    )?;
    Ok(names
        .lines()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect())
}

/// Leaves the servers as the next case expects them: no event in `test`, none of the
/// engine's tables for `bases` nor any table created since `before`, replication running and
/// caught up.
fn cleanup(ctx: &Ctx, bases: &[&str], before: Option<&TableSnapshot>) -> Result<(), String> {
    // Events first, so that nothing writes to the tables being dropped.
    drop_events(ctx)?;
    let known: Vec<String> = bases.iter().copied().flat_map(engine_tables).collect();
    let on_primary = with_new_tables(known.clone(), &ctx.primary, before.map(|b| &b.primary))?;
    ctx.primary.query_test(&drop_tables_sql(&on_primary))?;
    // --test-on-replica stops replication at the cut-over; the replica then applies what the
    // primary did meanwhile, including the drops above.
    ctx.replica
        .query(ctx.server.dialect.start_replication_sql())?;
    wait_replication_running(ctx)?;
    wait_caught_up(ctx)?;
    // What is left exists only on the replica (the engine wrote it there). Not binlogged, so
    // the replica's binlog holds nothing more of it.
    let on_replica = with_new_tables(known, &ctx.replica, before.map(|b| &b.replica))?;
    ctx.replica.query_test(&format!(
        "set session sql_log_bin = 0; {}",
        drop_tables_sql(&on_replica)
    ))?;
    Ok(())
}

fn drop_events(ctx: &Ctx) -> Result<(), String> {
    let names = ctx
        .primary
        .query("select event_name from information_schema.events where event_schema = 'test'")?;
    for name in names.lines().filter(|n| !n.is_empty()) {
        ctx.primary
            .query(&format!("drop event if exists test.{}", ident(name)))?;
    }
    Ok(())
}

/// The table and the engine's tables for it.
fn engine_tables(base: &str) -> [String; 5] {
    [
        base.to_string(),
        format!("_{base}_gho"),
        format!("_{base}_ghc"),
        format!("_{base}_del"),
        format!("_{base}_ghk"),
    ]
}

/// `names` plus the tables that appeared in `test` on `db` since `before`.
fn with_new_tables(
    mut names: Vec<String>,
    db: &Db,
    before: Option<&BTreeSet<String>>,
) -> Result<Vec<String>, String> {
    if let Some(before) = before {
        for table in tables_in_test(db)? {
            if !before.contains(&table) && !names.contains(&table) {
                names.push(table);
            }
        }
    }
    Ok(names)
}

fn drop_tables_sql(names: &[String]) -> String {
    let list = names
        .iter()
        .map(String::as_str)
        .map(ident)
        .collect::<Vec<_>>()
        .join(", ");
    // Without the checks, a foreign key's parent and child go in any order.
    format!("set session foreign_key_checks = 0; drop table if exists {list}")
}

/// Global sql_mode of both servers before a case changes it.
struct SavedSqlModes {
    primary: String,
    replica: String,
}

impl SavedSqlModes {
    fn read(ctx: &Ctx) -> Result<Self, String> {
        Ok(Self {
            primary: ctx.primary.query("select @@global.sql_mode")?,
            replica: ctx.replica.query("select @@global.sql_mode")?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The mariadb client

/// `host:port` of a server.
#[derive(Clone)]
struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// Reads `host:port` from `var`, as tests/common does.
    fn from_env(var: &str, default: &str) -> Result<Self, String> {
        let value = env_or(var, default);
        let (host, port) = value
            .rsplit_once(':')
            .ok_or_else(|| format!("{var}={value:?} must be host:port"))?;
        let port = port
            .parse()
            .map_err(|_| format!("{var}={value:?}: the port is not a number"))?;
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// One server, reached with the `mariadb` client as the topology's admin user.
struct Db {
    role: &'static str,
    endpoint: Endpoint,
    user: String,
    password: String,
}

impl Db {
    fn client(&self, database: Option<&str>) -> Command {
        let mut cmd = Command::new("mariadb");
        cmd.arg("--no-defaults")
            .arg(format!("--host={}", self.endpoint.host))
            .arg(format!("--port={}", self.endpoint.port))
            .arg("--protocol=tcp")
            .arg(format!("--user={}", self.user))
            .arg("--default-character-set=utf8mb4")
            .arg("--connect-timeout=10")
            // In the environment rather than on the command line, where `ps` shows it.
            .env("MYSQL_PWD", &self.password);
        if let Some(database) = database {
            cmd.arg(format!("--database={database}"));
        }
        cmd
    }

    fn run(&self, database: Option<&str>, flags: &[&str], sql: &str) -> Result<Vec<u8>, String> {
        let mut cmd = self.client(database);
        cmd.args(flags).arg("-e").arg(sql);
        let out = run_with_timeout(cmd, Stdio::null(), CLIENT_TIMEOUT)?;
        self.check(&out, sql)?;
        Ok(out.stdout)
    }

    /// Statements without a default database; the `-ss` output without its last newline.
    fn query(&self, sql: &str) -> Result<String, String> {
        let raw = self.run(None, &["-ss"], sql)?;
        Ok(String::from_utf8_lossy(&raw)
            .trim_end_matches('\n')
            .to_string())
    }

    /// Statements in `test`; the `-ss` output without its last newline.
    fn query_test(&self, sql: &str) -> Result<String, String> {
        let raw = self.select_test(sql)?;
        Ok(String::from_utf8_lossy(&raw)
            .trim_end_matches('\n')
            .to_string())
    }

    /// A query in `test` with `mariadb -ss` (batch, silent), output untouched: gh-ost's
    /// checksum input.
    fn select_test(&self, sql: &str) -> Result<Vec<u8>, String> {
        self.run(Some(DATABASE), &["-ss"], sql)
    }

    /// A one-row `SHOW` in vertical format, as field name to value.
    fn vertical(&self, sql: &str) -> Result<HashMap<String, String>, String> {
        let raw = self.run(None, &["-E"], sql)?;
        Ok(String::from_utf8_lossy(&raw)
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
            .collect())
    }

    /// Feeds a file to the client in `test`, as `mariadb test < file.sql`.
    fn source(&self, file: &Path) -> Result<(), String> {
        let input = File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let out = run_with_timeout(self.client(Some(DATABASE)), input.into(), CLIENT_TIMEOUT)?;
        self.check(&out, &file.display().to_string())
    }

    fn check(&self, out: &Output, what: &str) -> Result<(), String> {
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = stderr
            .lines()
            .find(|l| l.starts_with("ERROR"))
            .or_else(|| stderr.lines().rfind(|l| !l.trim().is_empty()))
            .unwrap_or("no error message");
        Err(format!(
            "{} {}: {}: {message}",
            self.role,
            self.endpoint,
            one_line(what, 100)
        ))
    }
}

fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

// ---------------------------------------------------------------------------------------------
// Processes and files

/// A child process that is killed (SIGKILL, by its pid) when dropped, so no early return
/// leaves one running.
struct ChildGuard(Child);

impl ChildGuard {
    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Waits for `child` until `deadline`; kills it then. `None` means it was killed.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>, String> {
    let mut pause = Duration::from_millis(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for pid {}: {e}", child.id())),
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Runs a command to completion with captured output, killing it after `timeout`.
fn run_with_timeout(mut cmd: Command, stdin: Stdio, timeout: Duration) -> Result<Output, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut child = ChildGuard(child);
    // Both pipes are read while waiting, so a large output cannot block the child.
    let stdout = drain(child.0.stdout.take());
    let stderr = drain(child.0.stderr.take());
    let status = wait_until(&mut child.0, Instant::now() + timeout)?;
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!("{program} timed out after {}s", timeout.as_secs())),
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// A case's log: the engine's command lines and everything it printed.
struct CaseLog {
    path: PathBuf,
    file: File,
}

impl CaseLog {
    fn create(path: PathBuf) -> Result<Self, String> {
        File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Append mode: the engine's writes (through duplicated descriptors) and ours always
        // land at the end.
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { path, file })
    }

    fn note(&mut self, text: &str) {
        let _ = writeln!(self.file, "{text}");
    }

    fn size(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len())
    }

    fn read_from(&self, offset: u64) -> String {
        let bytes = fs::read(&self.path).unwrap_or_default();
        let start = usize::try_from(offset).map_or(bytes.len(), |o| o.min(bytes.len()));
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    fn stdio(&self) -> Result<(Stdio, Stdio), String> {
        let clone = || {
            self.file
                .try_clone()
                .map_err(|e| format!("{}: {e}", self.path.display()))
        };
        Ok((clone()?.into(), clone()?.into()))
    }
}

/// A flag file that exists until removed or dropped.
struct FlagFile(PathBuf);

impl FlagFile {
    fn create(path: PathBuf) -> Result<Self, String> {
        File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self(path))
    }

    fn remove(&self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl Drop for FlagFile {
    fn drop(&mut self) {
        self.remove();
    }
}

// ---------------------------------------------------------------------------------------------
// Text helpers

/// The last `n` lines of `text`, each clipped.
fn tail(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| clip(l, MAX_LINE_CHARS))
        .collect()
}

fn clip(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_string(),
    }
}

/// Whitespace runs (newlines included) collapsed to one space, then clipped.
fn one_line(text: &str, max: usize) -> String {
    clip(&text.split_whitespace().collect::<Vec<_>>().join(" "), max)
}

/// Splits `extra_args` into words as the shell in gh-ost's harness does: blanks and newlines
/// separate words; single quotes, double quotes and backslashes quote; `#` at the start of a
/// word comments out the rest of the line. No expansions.
fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => {
                let _ = chars.by_ref().find(|&c| c == '\n');
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        // Inside double quotes a backslash only quotes these.
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(c @ ('$' | '`' | '"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".to_string()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".to_string()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => {
                    in_word = true;
                    word.push('\\');
                }
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `grep -q "$pattern"` on `text`: the pattern is a POSIX basic regular expression, and each of
/// its lines is a pattern of its own; a match is any pattern matching any line.
fn grep(pattern: &str, text: &str) -> bool {
    pattern
        .split('\n')
        .any(|p| match Regex::new(&bre_to_regex(p)) {
            Ok(re) => text.lines().any(|line| re.is_match(line)),
            // A pattern this translation cannot express still matches as plain text.
            Err(_) => text.contains(p),
        })
}

/// Translates a POSIX basic regular expression (grep's default syntax, with GNU's `\(`, `\|`,
/// `\{`, `\+`, `\?`, `\<`, `\>`, `\b`, `\w`, `\s`) into `regex` syntax. In a BRE, `( ) { } | + ?`
/// are literal unless escaped.
fn bre_to_regex(bre: &str) -> String {
    let chars: Vec<char> = bre.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    // A `*` is literal where there is nothing before it to repeat, and so is a `^` that does
    // not start the pattern or a group.
    let mut at_start = true;
    while i < chars.len() {
        let c = chars[i];
        let was_start = std::mem::take(&mut at_start);
        i += 1;
        match c {
            '\\' if i < chars.len() => {
                let next = chars[i];
                i += 1;
                match next {
                    '(' | '|' => {
                        out.push(next);
                        at_start = true;
                    }
                    ')' | '{' | '}' | '+' | '?' => out.push(next),
                    '<' | '>' | 'b' => out.push_str(r"\b"),
                    'B' | 'w' | 'W' | 's' | 'S' => {
                        out.push('\\');
                        out.push(next);
                    }
                    _ => push_literal(&mut out, next),
                }
            }
            '^' if was_start => {
                out.push('^');
                at_start = true;
            }
            '$' if anchors_end(&chars[i..]) => out.push('$'),
            '*' if was_start => push_literal(&mut out, '*'),
            '.' | '*' => out.push(c),
            '[' => match bracket_expression(&chars[i..]) {
                Some((class, used)) => {
                    out.push_str(&class);
                    i += used;
                }
                None => push_literal(&mut out, '['),
            },
            _ => push_literal(&mut out, c),
        }
    }
    out
}

/// A `$` anchors at the end of the pattern, of a group or of an alternative.
fn anchors_end(rest: &[char]) -> bool {
    rest.is_empty() || rest.starts_with(&['\\', ')']) || rest.starts_with(&['\\', '|'])
}

fn push_literal(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
}

/// A bracket expression whose `[` came just before `rest`: the `regex` class and how many
/// chars of `rest` it used. `None` when it is not closed (the `[` is then literal).
fn bracket_expression(rest: &[char]) -> Option<(String, usize)> {
    let mut class = String::from("[");
    let mut i = 0;
    if rest.first() == Some(&'^') {
        class.push('^');
        i += 1;
    }
    // A `]` right after `[` or `[^` is a member, not the end.
    let first = i;
    while i < rest.len() {
        let c = rest[i];
        if c == ']' && i > first {
            class.push(']');
            return Some((class, i + 1));
        }
        if c == '[' && rest.get(i + 1) == Some(&':') {
            if let Some(len) = posix_class_len(&rest[i..]) {
                class.extend(&rest[i..i + len]);
                i += len;
                continue;
            }
        }
        // Literal in a POSIX bracket expression, special in a `regex` class.
        if matches!(c, '\\' | '[' | ']' | '&' | '~' | '^') {
            class.push('\\');
        }
        class.push(c);
        i += 1;
    }
    None
}

/// The length of a `[:name:]` at the start of `s`, if it is one.
fn posix_class_len(s: &[char]) -> Option<usize> {
    s.windows(2)
        .skip(2)
        .position(|w| w[0] == ':' && w[1] == ']')
        .map(|p| p + 4)
}
