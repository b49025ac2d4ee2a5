//! `ghost engine --namespace N --name X`: the command of the engine Job's pod (see
//! `crate::engine_pod`). The database credentials arrive as `GHOST_DB_USER` and
//! `GHOST_DB_PASSWORD`, never as arguments.
//!
//! Exit codes: 0 succeeded (a rehearsal or an instant ALTER included), 1 failed (the Job may
//! retry; a retry resumes), 2 the resource or the command line cannot be run as written,
//! 3 cancelled, 143 stopped by SIGTERM (the pod deleted or evicted; the next pod resumes).

use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use crate::engine_pod::{self, EngineExit, Target};

#[derive(Debug, Parser)]
#[command(
    name = "ghost engine",
    about = "Run the migration of one SchemaMigration resource (the engine Job's command)"
)]
struct EngineArgs {
    /// The SchemaMigration's namespace.
    #[arg(long)]
    namespace: String,
    /// The SchemaMigration's name.
    #[arg(long)]
    name: String,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub fn run(args: &[String]) -> ExitCode {
    let argv = std::iter::once("ghost engine".to_string()).chain(args.iter().cloned());
    let parsed = match EngineArgs::try_parse_from(argv) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return if e.use_stderr() {
                ExitCode::from(EngineExit::Config.code())
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(parsed.log_format);
    let target = Target {
        namespace: parsed.namespace,
        name: parsed.name,
    };
    let credentials = engine_pod::credentials_from_env(|name| std::env::var(name).ok());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ghost engine: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exit = runtime.block_on(async {
        let client = match kube::Client::try_default().await {
            Ok(client) => client,
            Err(e) => {
                // Without the API there is no status to report to: say it here, once.
                return match credentials {
                    Err(missing) => {
                        eprintln!("ghost engine: {missing}");
                        EngineExit::Config
                    }
                    Ok(_) => {
                        eprintln!("ghost engine: cannot reach the Kubernetes API: {e}");
                        EngineExit::Failed
                    }
                };
            }
        };
        engine_pod::run(client, &target, credentials).await
    });
    exit.into()
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("ghost=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // A pod's log is a file, not a terminal.
        .with_ansi(false)
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling run twice) is harmless; ignore it.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[&str]) -> Result<EngineArgs, clap::Error> {
        EngineArgs::try_parse_from(std::iter::once("ghost engine").chain(line.iter().copied()))
    }

    #[test]
    fn parses_namespace_and_name() {
        let args = parse(&["--namespace", "shop", "--name", "add-age"]).unwrap();
        assert_eq!(args.namespace, "shop");
        assert_eq!(args.name, "add-age");
        assert_eq!(args.log_format, LogFormat::Text);
        let args = parse(&["--name=x", "--namespace=y", "--log-format=json"]).unwrap();
        assert_eq!(args.log_format, LogFormat::Json);
    }

    #[test]
    fn refuses_missing_arguments_with_exit_2() {
        assert!(parse(&["--namespace", "shop"]).is_err());
        assert!(parse(&["--name", "x"]).is_err());
        // ExitCode has no PartialEq on every supported toolchain; its Debug form is exact.
        assert_eq!(
            format!("{:?}", run(&["--name".to_string(), "x".to_string()])),
            format!("{:?}", ExitCode::from(2))
        );
    }
}
