use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Online, triggerless schema migrations for MySQL and MariaDB.
#[derive(Parser)]
#[command(name = "ghost", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one migration from the command line, with gh-ost's flags.
    // `--help` lists gh-ost's flags (the flag parser's own help), as gh-ost users expect.
    #[command(disable_help_flag = true)]
    Migrate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Run the engine for one SchemaMigration resource (inside the Job's pod).
    Engine {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Run the Kubernetes controller.
    Operator {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Talk to a running migration (status, throttle, unpostpone, panic, ...).
    Ctl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// The kubectl plugin (`kubectl ghost …` when this binary is on PATH as kubectl-ghost).
    // `--help` is the plugin's own.
    #[command(disable_help_flag = true)]
    Kubectl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Print the SchemaMigration CustomResourceDefinition as YAML.
    Crd,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    // Copied or linked as kubectl-ghost, this binary is the kubectl plugin itself.
    let mut argv = std::env::args();
    let invoked_as = argv.next().unwrap_or_default();
    let file_name = std::path::Path::new(&invoked_as)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if file_name == ghost::kubectl::PLUGIN_NAME {
        return ghost::kubectl::run("kubectl ghost", &argv.collect::<Vec<_>>());
    }
    if file_name == ghost::kubectl::COMPLETION_NAME {
        return ghost::kubectl::run_completion(&argv.collect::<Vec<_>>());
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("ghost {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Migrate { args } => ghost::cli::migrate::run(&args),
        Command::Engine { args } => ghost::cli::engine::run(&args),
        Command::Operator { args } => ghost::cli::operator::run(&args),
        Command::Ctl { args } => ghost::cli::ctl::run(&args),
        Command::Kubectl { args } => ghost::kubectl::run("ghost kubectl", &args),
        Command::Crd => {
            print!("{}", ghost::api::crd_yaml());
            ExitCode::SUCCESS
        }
    }
}
