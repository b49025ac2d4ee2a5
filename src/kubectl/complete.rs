//! kubectl's completion protocol for plugins: kubectl runs `kubectl_complete-ghost WORDS…`
//! (the words after `ghost`, the last one being completed) and reads one candidate per line,
//! then `:DIRECTIVE` (Cobra's `__complete` format). `kubectl-ghost __complete WORDS…` answers the
//! same.

use std::process::ExitCode;

use kube::ResourceExt;
use kube::api::ListParams;
use kube::config::Kubeconfig;

use super::{GlobalArgs, Target};

pub const COMMAND: &str = "__complete";
/// How long a completion may wait for the API server.
const LOOKUP_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Cobra's ShellCompDirectiveNoFileComp: never fall back to file names.
const NO_FILES: u8 = 4;

const COMMANDS: &[&str] = &[
    "list",
    "status",
    "watch",
    "throttle",
    "unthrottle",
    "postpone",
    "cut-over",
    "abort",
    "logs",
    "revert",
];
const GLOBAL_FLAGS: &[&str] = &["--namespace", "--context", "--kubeconfig", "--help"];
const VALUE_FLAGS: &[&str] = &[
    "-n",
    "--namespace",
    "--context",
    "--kubeconfig",
    "-o",
    "--output",
    "--tail",
    "--as",
];

/// What the word being typed is.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    Command,
    Name,
    Namespace,
    Context,
    Output,
    Flag(&'static str),
    Nothing,
}

/// Where the last word falls, and the kubectl flags already given.
pub fn slot(words: &[String]) -> (Slot, GlobalArgs) {
    let (typed, before) = match words.split_last() {
        Some((last, rest)) => (last.as_str(), rest),
        None => ("", &[][..]),
    };
    let mut global = GlobalArgs::default();
    let mut positionals: Vec<&str> = Vec::new();
    let mut iter = before.iter().map(String::as_str).peekable();
    while let Some(word) = iter.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_string())),
            _ => (word, None),
        };
        if VALUE_FLAGS.contains(&flag) {
            let value = inline.or_else(|| iter.next().map(str::to_string));
            match flag {
                "-n" | "--namespace" => global.namespace = value,
                "--context" => global.context = value,
                "--kubeconfig" => global.kubeconfig = value.map(Into::into),
                _ => {}
            }
        } else if !word.starts_with('-') {
            positionals.push(word);
        }
    }
    let previous = before.last().map(String::as_str).unwrap_or("");
    let slot = match previous {
        "-n" | "--namespace" => Slot::Namespace,
        "--context" => Slot::Context,
        "-o" | "--output" => Slot::Output,
        "--kubeconfig" | "--tail" | "--as" => Slot::Nothing,
        _ if typed.starts_with('-') => {
            Slot::Flag(positionals.first().copied().map_or("", command_of))
        }
        _ => match positionals.as_slice() {
            [] => Slot::Command,
            [command] if *command != "list" && COMMANDS.contains(command) => Slot::Name,
            _ => Slot::Nothing,
        },
    };
    (slot, global)
}

fn command_of(word: &str) -> &'static str {
    COMMANDS.iter().find(|c| **c == word).copied().unwrap_or("")
}

fn flags_of(command: &str) -> Vec<&'static str> {
    let mut flags = GLOBAL_FLAGS.to_vec();
    flags.extend(match command {
        "list" => &["--all-namespaces", "--output"][..],
        "status" => &["--output"][..],
        "abort" => &["--yes"][..],
        "logs" => &["--follow", "--tail", "--previous"][..],
        "revert" => &["--as", "--dry-run", "--output"][..],
        _ => &[][..],
    });
    flags
}

pub fn run(words: &[String]) -> ExitCode {
    let typed = words.last().map(String::as_str).unwrap_or("");
    let (slot, global) = slot(words);
    let candidates: Vec<String> = match slot {
        Slot::Command => COMMANDS.iter().map(|c| c.to_string()).collect(),
        Slot::Flag(command) => flags_of(command).iter().map(|f| f.to_string()).collect(),
        Slot::Output => ["json", "yaml", "name"].map(String::from).to_vec(),
        Slot::Context => contexts(&global),
        Slot::Name | Slot::Namespace => names(slot == Slot::Namespace, &global),
        Slot::Nothing => Vec::new(),
    };
    for candidate in candidates.iter().filter(|c| c.starts_with(typed)) {
        println!("{candidate}");
    }
    println!(":{NO_FILES}");
    ExitCode::SUCCESS
}

fn contexts(global: &GlobalArgs) -> Vec<String> {
    let file = match &global.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    };
    file.map(|k| k.contexts.into_iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

/// Migration names in the namespace, or namespaces; nothing when the cluster cannot be reached
/// (completion must never print an error into the command line).
fn names(namespaces: bool, global: &GlobalArgs) -> Vec<String> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let lookup = async {
        let Ok(target) = Target::connect(global).await else {
            return Vec::new();
        };
        if namespaces {
            let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
                kube::Api::all(target.client.clone());
            return api
                .list(&ListParams::default())
                .await
                .map(|l| l.items.iter().map(ResourceExt::name_any).collect())
                .unwrap_or_default();
        }
        target
            .migrations()
            .list(&ListParams::default())
            .await
            .map(|l| l.items.iter().map(ResourceExt::name_any).collect())
            .unwrap_or_default()
    };
    // A TAB must not hang the shell on a cluster that does not answer.
    runtime
        .block_on(async { tokio::time::timeout(LOOKUP_LIMIT, lookup).await })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut words: Vec<String> = text.split_whitespace().map(String::from).collect();
        if text.ends_with(' ') {
            words.push(String::new());
        }
        words
    }

    #[test]
    fn the_slot_follows_the_words_before_it() {
        assert_eq!(slot(&words("")).0, Slot::Command);
        assert_eq!(slot(&words("thr")).0, Slot::Command);
        assert_eq!(slot(&words("-n shop ")).0, Slot::Command);
        let (s, global) = slot(&words("-n shop throttle "));
        assert_eq!(s, Slot::Name);
        assert_eq!(global.namespace.as_deref(), Some("shop"));
        let (s, global) = slot(&words("--context=prod status add"));
        assert_eq!(s, Slot::Name);
        assert_eq!(global.context.as_deref(), Some("prod"));
        assert_eq!(slot(&words("status add-age ")).0, Slot::Nothing);
        assert_eq!(slot(&words("list ")).0, Slot::Nothing);
        assert_eq!(slot(&words("throttle -n ")).0, Slot::Namespace);
        assert_eq!(slot(&words("list -o ")).0, Slot::Output);
        assert_eq!(slot(&words("logs --f")).0, Slot::Flag("logs"));
        assert!(flags_of("logs").contains(&"--follow"));
    }
}
