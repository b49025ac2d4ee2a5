//! `ghost operator`: run the Kubernetes controller.
//!
//! ```text
//! ghost operator [--metrics-addr 127.0.0.1:8080] [--namespace NS] [--engine-image IMAGE]
//!                [--allowed-engine-images LIST] [--allowed-engine-service-accounts LIST]
//!                [--allow-engine-placement] [--max-per-host N] [--leader-elect]
//!                [--lease-namespace NS]
//! ```
//!
//! Exit codes: 0 after SIGTERM/SIGINT, 1 when the operator cannot go on (no API server, CRD not
//! installed, lost its lease), 2 for a wrong command line.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

use crate::operator::{self, EngineDefaults, OperatorConfig, job::DEFAULT_SERVICE_ACCOUNT};

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// The image of this very build, for engine pods when neither the spec nor the flag names one.
const DEFAULT_ENGINE_IMAGE: &str = concat!("ghost:", env!("CARGO_PKG_VERSION"));

/// Where a pod finds its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Run the Kubernetes controller for SchemaMigrations.
#[derive(Parser, Debug, PartialEq, Eq)]
#[command(name = "ghost operator", version)]
struct OperatorArgs {
    /// Address of /metrics, /healthz and /readyz (0.0.0.0:8080 to let probes and Prometheus in).
    #[arg(long, env = "GHOST_METRICS_ADDR", default_value = "127.0.0.1:8080")]
    metrics_addr: SocketAddr,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "GHOST_WATCH_NAMESPACE")]
    namespace: Option<String>,

    /// Engine image for migrations whose spec.engine.image is empty.
    #[arg(long, env = "GHOST_ENGINE_IMAGE", default_value = DEFAULT_ENGINE_IMAGE)]
    engine_image: String,

    /// Service account of engine pods whose spec.engine.serviceAccountName is empty.
    #[arg(long, env = "GHOST_ENGINE_SERVICE_ACCOUNT", default_value = DEFAULT_SERVICE_ACCOUNT)]
    engine_service_account: String,

    /// Images a spec.engine.image may name besides --engine-image (comma-separated; a trailing
    /// `*` allows a prefix, e.g. registry.example.com/ghost:*).
    #[arg(long, value_delimiter = ',', env = "GHOST_ALLOWED_ENGINE_IMAGES")]
    allowed_engine_images: Vec<String>,

    /// ServiceAccounts a spec.engine.serviceAccountName may name besides
    /// --engine-service-account (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        env = "GHOST_ALLOWED_ENGINE_SERVICE_ACCOUNTS"
    )]
    allowed_engine_service_accounts: Vec<String>,

    /// Let specs place engine pods (spec.engine.nodeSelector, tolerations).
    #[arg(long)]
    allow_engine_placement: bool,

    /// Seconds an engine Job may take to start (its pod running and reporting) before the
    /// migration fails and frees its host slot: a missing ServiceAccount, an image that cannot
    /// be pulled, a pod nobody schedules.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    engine_start_timeout: u64,

    /// Migrations running at once against one database server (host:port).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    max_per_host: u32,

    /// Run the controller only while holding a Lease, so several replicas can run.
    #[arg(long)]
    leader_elect: bool,

    /// Namespace of the Lease (default: $POD_NAMESPACE, --namespace, the pod's own namespace,
    /// then "default").
    #[arg(long)]
    lease_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(long, default_value = "ghost-operator")]
    lease_name: String,

    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

pub fn run(args: &[String]) -> ExitCode {
    let argv = std::iter::once("ghost operator".to_string()).chain(args.iter().cloned());
    let parsed = match OperatorArgs::try_parse_from(argv) {
        Ok(parsed) => parsed,
        Err(e) => {
            // --help and --version end up here too, on stdout and with success.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(&parsed.log_format);
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let config = build_config(parsed, &env, || {
        std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok()
    });

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ghost operator: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(operator::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Through the log, so a JSON log stays JSON.
            tracing::error!("ghost operator: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The settings from the flags and the pod's environment (`POD_NAME`, `POD_NAMESPACE` from the
/// downward API; `HOSTNAME`, which Kubernetes sets to the pod name).
fn build_config(
    args: OperatorArgs,
    env: &dyn Fn(&str) -> Option<String>,
    own_namespace: impl FnOnce() -> Option<String>,
) -> OperatorConfig {
    let identity = env("POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_else(|| format!("ghost-operator-{}", std::process::id()));
    let namespace = args.namespace.filter(|ns| !ns.trim().is_empty());
    let lease_namespace = args
        .lease_namespace
        .filter(|ns| !ns.trim().is_empty())
        .or_else(|| env("POD_NAMESPACE"))
        .or_else(|| namespace.clone())
        .or_else(|| {
            own_namespace()
                .map(|ns| ns.trim().to_string())
                .filter(|ns| !ns.is_empty())
        })
        .unwrap_or_else(|| "default".to_string());
    OperatorConfig {
        metrics_addr: args.metrics_addr,
        namespace,
        engine: EngineDefaults {
            image: args.engine_image,
            service_account: args.engine_service_account,
            policy: crate::operator::policy::EnginePolicy {
                images: non_empty(args.allowed_engine_images),
                service_accounts: non_empty(args.allowed_engine_service_accounts),
                placement: args.allow_engine_placement,
            },
            start_timeout: std::time::Duration::from_secs(args.engine_start_timeout),
        },
        max_per_host: usize::try_from(args.max_per_host).unwrap_or(usize::MAX),
        leader_elect: args.leader_elect,
        lease_namespace,
        lease_name: args.lease_name,
        identity,
    }
}

/// A list flag's entries, trimmed, without empty ones (`--x=` or a trailing comma).
fn non_empty(list: Vec<String>) -> Vec<String> {
    list.into_iter()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn init_logging(format: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("ghost=info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless; ignore it.
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(args: &[&str]) -> Result<OperatorArgs, clap::Error> {
        OperatorArgs::try_parse_from(std::iter::once("ghost operator").chain(args.iter().copied()))
    }

    fn config(args: &[&str], vars: &[(&str, &str)], own: Option<&str>) -> OperatorConfig {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |name: &str| vars.get(name).cloned();
        build_config(parse(args).unwrap(), &env, || own.map(str::to_string))
    }

    #[test]
    fn defaults() {
        let c = config(&[], &[("POD_NAME", "ghost-operator-7d9f")], None);
        assert_eq!(c.metrics_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.namespace, None);
        assert_eq!(c.max_per_host, 1);
        assert!(!c.leader_elect);
        assert_eq!(c.engine.service_account, "ghost-engine");
        assert!(c.engine.image.starts_with("ghost:"));
        assert_eq!(c.identity, "ghost-operator-7d9f");
        assert_eq!(c.lease_namespace, "default");
        assert_eq!(c.lease_name, "ghost-operator");
    }

    #[test]
    fn flags() {
        let c = config(
            &[
                "--metrics-addr",
                "0.0.0.0:9090",
                "--namespace",
                "shop",
                "--engine-image",
                "registry/ghost:1.0",
                "--max-per-host",
                "3",
                "--leader-elect",
                "--lease-namespace",
                "ghost-system",
            ],
            &[("HOSTNAME", "pod-x")],
            None,
        );
        assert_eq!(c.metrics_addr.port(), 9090);
        assert_eq!(c.namespace.as_deref(), Some("shop"));
        assert_eq!(c.engine.image, "registry/ghost:1.0");
        assert_eq!(c.max_per_host, 3);
        assert!(c.leader_elect);
        assert_eq!(c.lease_namespace, "ghost-system");
        assert_eq!(c.identity, "pod-x");
    }

    #[test]
    fn lease_namespace_fallbacks() {
        let c = config(&[], &[("POD_NAMESPACE", "ghost-system")], Some("other"));
        assert_eq!(c.lease_namespace, "ghost-system");
        let c = config(&["--namespace", "shop"], &[], Some("other"));
        assert_eq!(c.lease_namespace, "shop");
        let c = config(&[], &[], Some("ghost-system\n"));
        assert_eq!(c.lease_namespace, "ghost-system");
    }

    #[test]
    fn bad_command_lines() {
        assert!(parse(&["--max-per-host", "0"]).is_err());
        assert!(parse(&["--metrics-addr", "nowhere"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
    }
}
