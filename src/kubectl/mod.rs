//! `kubectl ghost`: the kubectl plugin. The same binary answers as `kubectl-ghost` (copied or
//! linked under that name, kubectl finds it on PATH), as `kubectl_complete-ghost` (kubectl's
//! completion hook for plugins) and as `ghost kubectl …`.
//!
//! - `target`: the kubeconfig, context and namespace, as kubectl picks them.
//! - `view`: tables and the status page, pure functions of the objects.
//! - `actions`: the annotation commands, `abort`'s confirmation and `revert`.
//! - `follow`: `watch` and `logs`.
//! - `complete`: kubectl's completion protocol for plugins (`kubectl_complete-ghost`, kubectl
//!   1.26 and later), so `kubectl ghost <TAB>` completes commands, flags and names.
//!
//! It speaks to the API server only; SQL stays with the engine.

mod actions;
mod complete;
mod follow;
mod target;
mod view;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use target::Target;

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// What the binary answers to when invoked under these file names.
pub const PLUGIN_NAME: &str = "kubectl-ghost";
pub const COMPLETION_NAME: &str = "kubectl_complete-ghost";

/// Watch and steer ghost's SchemaMigrations.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl ghost",
    version,
    after_help = "Examples:\n  kubectl ghost list -A\n  kubectl ghost status add-age -n shop\n  \
                  kubectl ghost throttle add-age -n shop\n  kubectl ghost watch add-age -n shop"
)]
pub struct PluginArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// kubectl's own flags, with kubectl's meaning.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// The namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Every SchemaMigration: phase, progress, lag, ETA and why it is throttled.
    #[command(visible_alias = "ls", visible_alias = "get")]
    List {
        /// In every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short = 'o', long, value_enum)]
        output: Option<Format>,
    },
    /// gh-ost's status line, the controls in force, conditions and recent Events.
    #[command(visible_alias = "describe")]
    Status {
        name: String,
        #[arg(short = 'o', long, value_enum)]
        output: Option<Format>,
    },
    /// A live progress bar until the migration ends (exit 0 when it succeeds).
    Watch { name: String },
    /// Pause row copy and binlog apply (annotates ghost/throttle=true).
    Throttle { name: String },
    /// Resume after `throttle` (annotates ghost/throttle=false, which wins over the spec).
    #[command(visible_alias = "resume")]
    Unthrottle { name: String },
    /// Hold the cut-over once rows are copied (annotates ghost/postpone-cut-over=true).
    Postpone { name: String },
    /// Cut over now, or as soon as rows are copied (annotates ghost/postpone-cut-over=false).
    CutOver { name: String },
    /// Stop the migration and drop its ghost table; the original table stays as it is
    /// (annotates ghost/panic=true).
    Abort {
        name: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// The engine pod's logs.
    Logs {
        name: String,
        /// Keep streaming.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<i64>,
        /// The previous run of the container (after a restart).
        #[arg(short = 'p', long)]
        previous: bool,
    },
    /// Create the SchemaMigration that swaps a finished migration's kept old table back in.
    Revert {
        name: String,
        /// The new SchemaMigration's name (default: NAME-revert).
        #[arg(long = "as")]
        new_name: Option<String>,
        /// Print the manifest instead of creating it (for Git).
        #[arg(long)]
        dry_run: bool,
        #[arg(short = 'o', long, value_enum)]
        output: Option<Format>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Yaml,
    Name,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Kubeconfig(String),
    #[error(
        "schemamigration \"{name}\" not found in namespace \"{namespace}\": see `kubectl ghost list -n {namespace}` (or -A for every namespace)"
    )]
    NotFound { namespace: String, name: String },
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("cannot write the output: {0}")]
    Output(String),
}

impl PluginError {
    pub fn api(action: impl Into<String>, source: kube::Error) -> Self {
        PluginError::Api {
            action: action.into(),
            source,
        }
    }
}

/// `ghost kubectl ARGS` and `kubectl-ghost ARGS`; `program` is the name to show in usage.
pub fn run(program: &str, args: &[String]) -> ExitCode {
    if args.first().map(String::as_str) == Some(complete::COMMAND) {
        return complete::run(&args[1..]);
    }
    let argv = std::iter::once(program.to_string()).chain(args.iter().cloned());
    let parsed = match PluginArgs::try_parse_from(argv) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(dispatch(parsed)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `kubectl_complete-ghost ARGS`: kubectl passes the words after `ghost`.
pub fn run_completion(args: &[String]) -> ExitCode {
    complete::run(args)
}

async fn dispatch(parsed: PluginArgs) -> Result<ExitCode, PluginError> {
    use PluginCommand as C;
    let target = Target::connect(&parsed.global).await?;
    match parsed.command {
        C::List {
            all_namespaces,
            output,
        } => view::list(&target, all_namespaces, output).await,
        C::Status { name, output } => view::status(&target, &name, output).await,
        C::Watch { name } => follow::watch(&target, &name).await,
        C::Throttle { name } => actions::annotate(&target, &name, actions::Action::Throttle).await,
        C::Unthrottle { name } => {
            actions::annotate(&target, &name, actions::Action::Unthrottle).await
        }
        C::Postpone { name } => actions::annotate(&target, &name, actions::Action::Postpone).await,
        C::CutOver { name } => actions::annotate(&target, &name, actions::Action::CutOver).await,
        C::Abort { name, yes } => actions::abort(&target, &name, yes).await,
        C::Logs {
            name,
            follow,
            tail,
            previous,
        } => follow::logs(&target, &name, follow, tail, previous).await,
        C::Revert {
            name,
            new_name,
            dry_run,
            output,
        } => actions::revert(&target, &name, new_name, dry_run, output).await,
    }
}

/// Prints one SchemaMigration as JSON, YAML or `schemamigration.ghost.dev/NAME`.
fn print_migration(smig: &crate::api::SchemaMigration, format: Format) -> Result<(), PluginError> {
    match format {
        Format::Name => {
            println!("{}/{}", view::RESOURCE, kube::ResourceExt::name_any(smig));
            Ok(())
        }
        format => print_as(smig, format),
    }
}

/// Prints `value` as JSON or YAML.
fn print_as<T: serde::Serialize>(value: &T, format: Format) -> Result<(), PluginError> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| PluginError::Output(e.to_string()))?,
        Format::Yaml => {
            serde_yaml::to_string(value).map_err(|e| PluginError::Output(e.to_string()))?
        }
        Format::Name => return Err(PluginError::Output("-o name prints names only".into())),
    };
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_flags_go_before_or_after_the_command() {
        let args = PluginArgs::try_parse_from([
            "kubectl-ghost",
            "-n",
            "shop",
            "throttle",
            "add-age",
            "--context",
            "prod",
        ])
        .unwrap();
        assert_eq!(args.global.namespace.as_deref(), Some("shop"));
        assert_eq!(args.global.context.as_deref(), Some("prod"));
        assert!(matches!(args.command, PluginCommand::Throttle { name } if name == "add-age"));
        let args =
            PluginArgs::try_parse_from(["kubectl-ghost", "list", "-A", "-o", "json"]).unwrap();
        assert!(matches!(
            args.command,
            PluginCommand::List {
                all_namespaces: true,
                output: Some(Format::Json)
            }
        ));
        assert!(PluginArgs::try_parse_from(["kubectl-ghost", "list", "-o", "xml"]).is_err());
        assert!(PluginArgs::try_parse_from(["kubectl-ghost", "throttle"]).is_err());
    }
}
