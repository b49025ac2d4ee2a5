//! `ghost ctl`: talk to a running migration.
//!
//! ```text
//! ghost ctl --socket /tmp/gh-ost.shop.users.sock status
//! ghost ctl --tcp 127.0.0.1:9001 chunk-size=500
//! ghost ctl --http http://127.0.0.1:8080 throttle
//! ```
//!
//! `--socket` and `--tcp` speak gh-ost's line protocol (the reply is printed as is); `--http`
//! maps the same commands onto the JSON API. Exit codes: 0 done, 1 the command failed or was
//! refused (or the migration could not be reached), 2 the command line is wrong.

use std::error::Error as StdError;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Number, Value, json};

use crate::server::commands;
use crate::server::http::json_field;

const USAGE: &str = "\
usage: ghost ctl (--socket PATH | --tcp HOST:PORT | --http URL) <command>

Sends one interactive command to a running migration and prints the reply.

targets (exactly one):
  --socket PATH     the migration's unix socket (--serve-socket-file;
                    default /tmp/gh-ost.<db>.<table>.sock)
  --tcp HOST:PORT   the migration's TCP command port (--serve-tcp-port)
  --http URL        the migration's HTTP API, e.g. http://127.0.0.1:8080

commands: status, sup, coordinates, throttle, no-throttle, unpostpone[=<table>],
  panic[=<table>], chunk-size=<n>, dml-batch-size=<n>, max-lag-millis=<n>,
  nice-ratio=<f>, max-load=<var=n,...>, critical-load=<var=n,...>,
  throttle-query=<query>, throttle-http=<url>, throttle-control-replicas=<h:p,...>,
  metrics (--http only), help. Use <name>=? to read a setting.
  Words after the target are joined with spaces: throttle-query=select 1
";

const EXIT_COMMAND_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the migration listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Socket(PathBuf),
    Tcp(String),
    /// Base URL without a trailing slash.
    Http(String),
}

impl Target {
    /// Suggests the flag that enables this front end, for "cannot reach" errors.
    fn hint(&self) -> &'static str {
        match self {
            Target::Socket(_) => "is the migration running with --serve-socket-file?",
            Target::Tcp(_) => "is the migration running with --serve-tcp-port?",
            Target::Http(_) => "is the migration running with its HTTP API on that address?",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Socket(path) => write!(f, "{}", path.display()),
            Target::Tcp(addr) => f.write_str(addr),
            Target::Http(url) => f.write_str(url),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub target: Target,
    /// The command line to send, e.g. `chunk-size=500`.
    pub command: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Help,
    Run(Invocation),
}

pub fn run(args: &[String]) -> ExitCode {
    let invocation = match parse_args(args) {
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(invocation)) => invocation,
        Err(message) => {
            eprintln!("ghost ctl: {message}");
            eprintln!("usage: ghost ctl (--socket PATH | --tcp HOST:PORT | --http URL) <command>");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match &invocation.target {
        Target::Http(base) => run_http(&invocation.target, base, &invocation.command),
        target => run_line(target, &invocation.command),
    };
    match result {
        Ok(output) => {
            print_out(&output);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{}", message.trim_end());
            ExitCode::from(EXIT_COMMAND_ERROR)
        }
    }
}

fn print_out(text: &str) {
    if text.ends_with('\n') {
        print!("{text}");
    } else {
        println!("{text}");
    }
}

/// Parses `[--socket PATH | --tcp HOST:PORT | --http URL] <command words...>`; options may
/// come in any order before `--`.
pub fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut target: Option<Target> = None;
    let mut words: Vec<&str> = Vec::new();
    let mut options_done = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if options_done || !arg.starts_with('-') || arg == "-" {
            words.push(arg);
            continue;
        }
        if arg == "--" {
            options_done = true;
            continue;
        }
        if arg == "-h" || arg == "--help" || arg == "-help" {
            return Ok(Parsed::Help);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        let name = name.trim_start_matches('-');
        if !matches!(name, "socket" | "tcp" | "http") {
            return Err(format!("unknown option {arg}"));
        }
        let value = match inline {
            Some(value) => value,
            None => iter
                .next()
                .cloned()
                .ok_or_else(|| format!("--{name} needs a value"))?,
        };
        if value.is_empty() {
            return Err(format!("--{name} needs a value"));
        }
        if target.is_some() {
            return Err("give exactly one of --socket, --tcp and --http".into());
        }
        target = Some(match name {
            "socket" => Target::Socket(PathBuf::from(value)),
            "tcp" => {
                if !value.contains(':') {
                    return Err(format!("--tcp {value}: expected HOST:PORT"));
                }
                Target::Tcp(value)
            }
            _ => {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(format!(
                        "--http {value}: expected a URL such as http://127.0.0.1:8080"
                    ));
                }
                Target::Http(value.trim_end_matches('/').to_string())
            }
        });
    }
    let target = target.ok_or_else(|| {
        "no target: give one of --socket PATH, --tcp HOST:PORT or --http URL".to_string()
    })?;
    if words.is_empty() {
        return Err("no command given (try: status, or help)".into());
    }
    Ok(Parsed::Run(Invocation {
        target,
        command: words.join(" "),
    }))
}

fn cannot_reach(target: &Target, error: &dyn StdError) -> String {
    format!(
        "cannot reach {target}: {}; {}",
        error_chain(error),
        target.hint()
    )
}

/// `error: cause: cause`, skipping causes already contained in the text before them.
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// gh-ost's line protocol over the unix socket or TCP.
fn run_line(target: &Target, command: &str) -> Result<String, String> {
    let reply = match target {
        Target::Socket(path) => {
            let mut stream = UnixStream::connect(path).map_err(|e| cannot_reach(target, &e))?;
            stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
                .map_err(|e| cannot_reach(target, &e))?;
            exchange(&mut stream, command)
        }
        Target::Tcp(addr) => {
            let mut stream = connect_tcp(addr).map_err(|e| cannot_reach(target, &e))?;
            stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
                .map_err(|e| cannot_reach(target, &e))?;
            exchange(&mut stream, command)
        }
        Target::Http(_) => unreachable!("HTTP targets go through run_http"),
    }
    .map_err(|e| format!("{target}: {e}"))?;
    if reply_is_error(command, &reply) {
        Err(reply)
    } else {
        Ok(reply)
    }
}

fn connect_tcp(addr: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing");
    for resolved in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&resolved, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn exchange<S: Read + Write>(stream: &mut S, command: &str) -> io::Result<String> {
    stream.write_all(command.as_bytes())?;
    stream.write_all(b"\n")?;
    stream.flush()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// The line protocol has no status: errors are told by their text. A `name=?` read prints a
/// user-set value (a throttle query could say anything), so only "unknown command" counts there.
pub fn reply_is_error(command: &str, reply: &str) -> bool {
    let (_, arg) = commands::split_command(command);
    if arg == "?" {
        return reply.starts_with("unknown command: ");
    }
    commands::is_error_reply(reply)
}

/// One `ghost ctl` command as an HTTP request.
#[derive(Clone, Debug, PartialEq)]
pub enum HttpCall {
    /// Print the local help.
    Help,
    /// GET and print the body (pretty-printed when JSON).
    Get(&'static str),
    /// GET `/api/status` and print the value at this JSON pointer.
    Read(String),
    /// POST to this path (with its query string).
    Post(String),
    /// PUT this body to `/api/controls`.
    Put(Value),
}

/// Maps a command line onto the HTTP API.
pub fn http_call(command: &str) -> Result<HttpCall, String> {
    let (name, arg) = commands::split_command(command);
    let read = arg == "?";
    match name {
        "help" => Ok(HttpCall::Help),
        "status" | "info" => Ok(HttpCall::Get("/api/status")),
        "sup" => Ok(HttpCall::Read("/statusLine".into())),
        "metrics" => Ok(HttpCall::Get("/metrics")),
        "coordinates" if read || arg.is_empty() => {
            Ok(HttpCall::Read("/progress/appliedPosition".into()))
        }
        "throttle" | "pause" | "suspend" => Ok(HttpCall::Post(with_table("/api/throttle", &arg))),
        "no-throttle" | "unthrottle" | "resume" | "continue" => {
            Ok(HttpCall::Post(with_table("/api/no-throttle", &arg)))
        }
        "unpostpone" | "no-postpone" | "cut-over" => {
            Ok(HttpCall::Post(with_table("/api/unpostpone", &arg)))
        }
        "panic" => Ok(HttpCall::Post(with_table("/api/panic", &arg))),
        "coordinates" | "postpone-cut-over-flag-file" | "replication-lag-query" => Err(format!(
            "{name}: not available over --http; use --socket or --tcp"
        )),
        _ => match json_field(name) {
            Some(field) if read => Ok(HttpCall::Read(format!("/controls/{field}"))),
            Some(field) => Ok(HttpCall::Put(json!({ field: json_value(name, &arg) }))),
            None => Err(format!("unknown command: {name}")),
        },
    }
}

/// Numbers travel as JSON numbers; anything else as a string, which the server validates (so
/// the error wording is the server's, the same as over the socket).
fn json_value(name: &str, arg: &str) -> Value {
    let number = match name {
        "chunk-size" | "dml-batch-size" | "max-lag-millis" => {
            arg.parse::<i64>().ok().map(Number::from)
        }
        "nice-ratio" => arg.parse::<f64>().ok().and_then(Number::from_f64),
        _ => None,
    };
    match number {
        Some(n) => Value::Number(n),
        None => Value::String(arg.to_string()),
    }
}

fn with_table(path: &str, table: &str) -> String {
    if table.is_empty() {
        path.to_string()
    } else {
        format!("{path}?table={}", percent_encode(table))
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn run_http(target: &Target, base: &str, command: &str) -> Result<String, String> {
    let call = http_call(command)?;
    if call == HttpCall::Help {
        return Ok(commands::HELP.to_string());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(http_exchange(target, base, call))
}

async fn http_exchange(target: &Target, base: &str, call: HttpCall) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(IO_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
    let request = match &call {
        HttpCall::Get(path) => client.get(format!("{base}{path}")),
        HttpCall::Read(_) => client.get(format!("{base}/api/status")),
        HttpCall::Post(path) => client.post(format!("{base}{path}")),
        HttpCall::Put(body) => client.put(format!("{base}/api/controls")).json(body),
        HttpCall::Help => return Ok(commands::HELP.to_string()),
    };
    let response = request.send().await.map_err(|e| cannot_reach(target, &e))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("{target}: reading the reply: {}", error_chain(&e)))?;
    let json = serde_json::from_str::<Value>(&text).ok();
    if !status.is_success() {
        let message = json
            .as_ref()
            .and_then(|v| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}: {}", text.trim()));
        return Err(message);
    }
    match call {
        HttpCall::Get(_) => Ok(match json {
            Some(value) => serde_json::to_string_pretty(&value).unwrap_or(text),
            None => text,
        }),
        HttpCall::Read(pointer) => {
            let value = json
                .as_ref()
                .and_then(|v| v.pointer(&pointer))
                .ok_or_else(|| format!("{target}: the status has no {pointer}"))?;
            Ok(match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
        }
        HttpCall::Post(_) | HttpCall::Put(_) => Ok(json
            .as_ref()
            .and_then(|v| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(text)),
        HttpCall::Help => Ok(commands::HELP.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn invocation(list: &[&str]) -> Invocation {
        match parse_args(&args(list)) {
            Ok(Parsed::Run(invocation)) => invocation,
            other => panic!("{list:?}: {other:?}"),
        }
    }

    #[test]
    fn parses_targets_and_joins_command_words() {
        assert_eq!(
            invocation(&["--socket", "/tmp/x.sock", "chunk-size=500"]),
            Invocation {
                target: Target::Socket("/tmp/x.sock".into()),
                command: "chunk-size=500".into()
            }
        );
        assert_eq!(
            invocation(&["--socket=/tmp/x.sock", "status"]).target,
            Target::Socket("/tmp/x.sock".into())
        );
        let inv = invocation(&["--tcp", "127.0.0.1:9001", "throttle-query=select", "1"]);
        assert_eq!(inv.target, Target::Tcp("127.0.0.1:9001".into()));
        assert_eq!(inv.command, "throttle-query=select 1");
        let inv = invocation(&["status", "--http", "http://127.0.0.1:8080/"]);
        assert_eq!(inv.target, Target::Http("http://127.0.0.1:8080".into()));
        let inv = invocation(&["-socket", "/s", "--", "throttle-query=select", "--x"]);
        assert_eq!(inv.command, "throttle-query=select --x");
        assert_eq!(parse_args(&args(&["--help"])), Ok(Parsed::Help));
        assert_eq!(
            parse_args(&args(&["--socket", "/s", "-h"])),
            Ok(Parsed::Help)
        );
    }

    #[test]
    fn refuses_bad_command_lines() {
        let err = |list: &[&str]| parse_args(&args(list)).unwrap_err();
        assert!(err(&["status"]).starts_with("no target"));
        assert!(err(&["--socket", "/s", "--tcp", "h:1", "status"]).contains("exactly one"));
        assert!(err(&["--socket", "/a", "--socket", "/b", "status"]).contains("exactly one"));
        assert!(err(&["--socket", "/s"]).starts_with("no command"));
        assert!(err(&["--socket"]).contains("needs a value"));
        assert!(err(&["--socket=", "status"]).contains("needs a value"));
        assert!(err(&["--verbose", "--socket", "/s", "status"]).starts_with("unknown option"));
        assert!(err(&["--tcp", "9001", "status"]).contains("HOST:PORT"));
        assert!(err(&["--http", "127.0.0.1:8080", "status"]).contains("URL"));
    }

    #[test]
    fn maps_commands_onto_http() {
        let put = |command: &str| match http_call(command) {
            Ok(HttpCall::Put(body)) => body,
            other => panic!("{command}: {other:?}"),
        };
        assert_eq!(put("chunk-size=500"), json!({"chunkSize": 500}));
        assert_eq!(put("dml-batch-size=20"), json!({"dmlBatchSize": 20}));
        assert_eq!(put("max-lag-millis=2000"), json!({"maxLagMillis": 2000}));
        assert_eq!(put("nice-ratio=0.5"), json!({"niceRatio": 0.5}));
        assert_eq!(
            put("max-load=Threads_running=25"),
            json!({"maxLoad": "Threads_running=25"})
        );
        assert_eq!(
            put("critical-load=Threads_running=99"),
            json!({"criticalLoad": "Threads_running=99"})
        );
        assert_eq!(
            put("throttle-query=\"select 1\""),
            json!({"throttleQuery": "select 1"})
        );
        assert_eq!(
            put("throttle-http=http://f/check"),
            json!({"throttleHttp": "http://f/check"})
        );
        assert_eq!(
            put("throttle-control-replicas=r1,r2:3307"),
            json!({"throttleControlReplicas": "r1,r2:3307"})
        );
        // Not a number: sent as text so the server explains the problem.
        assert_eq!(put("chunk-size=abc"), json!({"chunkSize": "abc"}));
        assert_eq!(put("throttle-query="), json!({"throttleQuery": ""}));

        assert_eq!(http_call("status"), Ok(HttpCall::Get("/api/status")));
        assert_eq!(http_call("metrics"), Ok(HttpCall::Get("/metrics")));
        assert_eq!(http_call("sup"), Ok(HttpCall::Read("/statusLine".into())));
        assert_eq!(
            http_call("chunk-size=?"),
            Ok(HttpCall::Read("/controls/chunkSize".into()))
        );
        assert_eq!(
            http_call("coordinates"),
            Ok(HttpCall::Read("/progress/appliedPosition".into()))
        );
        assert_eq!(
            http_call("pause"),
            Ok(HttpCall::Post("/api/throttle".into()))
        );
        assert_eq!(
            http_call("continue"),
            Ok(HttpCall::Post("/api/no-throttle".into()))
        );
        assert_eq!(
            http_call("unpostpone=my table"),
            Ok(HttpCall::Post("/api/unpostpone?table=my%20table".into()))
        );
        assert_eq!(
            http_call("panic=users"),
            Ok(HttpCall::Post("/api/panic?table=users".into()))
        );
        assert_eq!(http_call("help"), Ok(HttpCall::Help));
        assert_eq!(http_call("bogus"), Err("unknown command: bogus".into()));
        assert!(http_call("postpone-cut-over-flag-file=/tmp/x").is_err());
    }

    #[test]
    fn line_replies_are_classified() {
        assert!(reply_is_error("bogus", "unknown command: bogus\n"));
        assert!(reply_is_error(
            "chunk-size=x",
            "invalid chunk-size: \"x\" is not a whole number\n"
        ));
        assert!(!reply_is_error("sup", "Copy: 1/2 50.0%; ...\n"));
        assert!(!reply_is_error(
            "status",
            "# Migrating `a`.`b`\nCopy: ...\n"
        ));
        // A read prints whatever the user stored, even text that looks like an error.
        assert!(!reply_is_error("throttle-query=?", "invalid stuff\n"));
        assert!(reply_is_error("bogus=?", "unknown command: bogus\n"));
    }

    #[test]
    fn unreachable_errors_name_the_target_and_the_fix() {
        let target = Target::Socket("/nonexistent/ghost.sock".into());
        let err = run_line(&target, "status").unwrap_err();
        assert!(
            err.starts_with("cannot reach /nonexistent/ghost.sock: "),
            "{err}"
        );
        assert!(err.ends_with("is the migration running with --serve-socket-file?"));
        assert!(!err.contains('\n'));
    }
}
