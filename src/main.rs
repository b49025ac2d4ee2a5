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
    /// Print the SchemaMigration CustomResourceDefinition as YAML.
    Crd,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
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
        Command::Crd => {
            print!("{}", ghost::api::crd_yaml());
            ExitCode::SUCCESS
        }
    }
}
