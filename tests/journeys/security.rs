//! Journeys of least privilege: TLS from Secrets, engines that write only their own status
//! and read no Secret, specs that cannot escalate.

use super::*;

/// A migration on the topology's TLS-only server (`require_secure_transport=ON`), as a user
/// whose account requires a client certificate (`REQUIRE X509`): the CA and the client
/// certificate come from Secrets the operator mounts into the engine pod. The server refuses
/// clear text, so finishing proves every engine connection used TLS.
pub async fn tls(cluster: &Cluster, stack: &Stack) {
    use common::model::{self, Writers};
    use ghost::engine::conn::ConnectionConfig;
    use ghost::engine::tls::{Pem, TlsConfig, TlsVerify};
    let journey = "tls_with_ca_and_client_certificate_from_secrets";
    let address = std::env::var("GHOST_TEST_TLS").unwrap_or_else(|_| "127.0.0.1:23308".into());
    let (host, port) = address
        .rsplit_once(':')
        .expect("GHOST_TEST_TLS is host:port");
    let port: u16 = port.parse().expect("port");
    // The engine pod dials the node's relay on its bridge, an address the server's certificate
    // names too, so verify-identity holds there as it does here on loopback.
    let pod_host = stack.node.bridge_ip.as_str();
    let dir = std::path::PathBuf::from(std::env::var("GHOST_TEST_TLS_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ghost/tls",
            std::env::var("HOME").unwrap_or_default()
        )
    }));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("certificate file");
    let admin = {
        let a = common::primary_admin();
        ConnectionConfig::new(host, port, a.user, a.password).with_tls(Some(TlsConfig {
            ca: Some(Pem::File(dir.join("ca.pem"))),
            client: None,
            verify: TlsVerify::Identity,
        }))
    };
    let database = format!("ghost_t_k8stls_{:08x}", rand::random::<u32>());
    let mut root = admin.connect().await.expect("admin over TLS");
    root.query_drop(format!("CREATE DATABASE `{database}`"))
        .await
        .expect("schema");
    let db = admin.clone().with_database(&database);
    let mut conn = db.connect().await.expect("admin in schema");
    let record = model::create_table(&mut conn, 3_000).await;
    let writers = Writers::start(db.clone(), record, 2, 3_000, Duration::from_millis(5));

    let name = format!("tls-{:08x}", rand::random::<u32>());
    let yaml = |s: &str| serde_json::to_string(s).expect("json");
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-db, namespace: {NAMESPACE}, labels: {{\"{label}\": \"true\", \"ghost.dev/credentials\": \"true\"}}}}\n\
         type: Opaque\nstringData: {{username: ghost_x509, password: ghost-x509-pass}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-ca, namespace: {NAMESPACE}, labels: {{\"{label}\": \"true\"}}}}\n\
         type: Opaque\nstringData: {{ca.pem: {ca}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-client, namespace: {NAMESPACE}, labels: {{\"{label}\": \"true\", \"ghost.dev/credentials\": \"true\"}}}}\n\
         type: kubernetes.io/tls\nstringData: {{tls.crt: {crt}, tls.key: {key}}}\n---\n\
         apiVersion: ghost.dev/v1alpha1\nkind: SchemaMigration\nmetadata: {{name: {name}, namespace: {NAMESPACE}, labels: {{\"{label}\": \"true\"}}}}\n\
         spec:\n  connection:\n    host: {host}\n    port: {port}\n    database: {database}\n    \
         credentialsSecretRef: {{name: {name}-db}}\n    tls:\n      mode: verify-identity\n      \
         caSecretRef: {{name: {name}-ca, key: ca.pem}}\n      clientCertSecretRef: {{name: {name}-client}}\n  \
         table: t\n  alter: \"ADD COLUMN note VARCHAR(8) NULL\"\n  copy: {{chunkSize: 200}}\n",
        label = harness::E2E_LABEL,
        ca = yaml(&read("ca.pem")),
        crt = yaml(&read("client-cert.pem")),
        key = yaml(&read("client-key.pem")),
        host = yaml(pod_host),
        database = yaml(&database),
    );
    let started = Instant::now();
    let applied = cluster
        .kubectl(&["apply", "-f", "-"], Some(manifest.as_str()))
        .await;
    say(
        journey,
        format!("kubectl apply: {}", applied.trim().replace('\n', "; ")),
    );
    let (smig, took) = stack
        .wait_smig(&name, "Succeeded", PHASE_TIMEOUT, |smig| {
            smig["status"]["phase"] == "Succeeded" || smig["status"]["phase"] == "Failed"
        })
        .await;
    assert_eq!(
        smig["status"]["phase"], "Succeeded",
        "the TLS migration failed: {:#}",
        smig["status"]
    );
    // The pod's volumes and env: TLS material only as read-only files.
    let job = cluster
        .kubectl_in(&["-n", NAMESPACE, "get", "jobs", "-o", "json"], None)
        .await;
    assert!(
        !job.stdout.contains("BEGIN PRIVATE KEY") && !job.stdout.contains("BEGIN CERTIFICATE"),
        "certificate material in the Job spec"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (record, counts) = writers.stop().await;
    let (rows, problems) = model::mismatches(&mut conn, "t", &record).await;
    assert!(problems.is_empty(), "{problems:?}");
    let columns: Vec<String> = conn
        .exec("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 't'", (&database,))
        .await
        .expect("columns");
    assert!(columns.iter().any(|c| c == "note"), "{columns:?}");
    say(
        journey,
        format!(
            "verify-identity with a CA and a client certificate from Secrets: Succeeded {:.1}s after apply \
             ({took:?} watched); {rows} rows equal after {} acknowledged writes",
            started.elapsed().as_secs_f64(),
            counts.acknowledged
        ),
    );
    let _ = cluster
        .kubectl_in(
            &["-n", NAMESPACE, "delete", "smig", &name, "--wait=true"],
            None,
        )
        .await;
    let _ = root
        .query_drop(format!("DROP DATABASE IF EXISTS `{database}`"))
        .await;
}

/// A client with a token of the engine's ServiceAccount, bound to `pod` (as the kubelet
/// projects it) or to nothing.
async fn engine_client(
    cluster: &Cluster,
    stack: &Stack,
    pod: Option<&k8s_openapi::api::core::v1::Pod>,
    name: &str,
) -> kube::Client {
    let token = harness::service_account_token(&stack.admin, NAMESPACE, "ghost-engine", pod, 600)
        .await
        .expect("a ghost-engine token");
    let path = harness::write_kubeconfig(
        &stack.dir.join(name),
        &cluster.server,
        &cluster.ca_pem,
        &token,
        NAMESPACE,
        "ghost-engine",
    )
    .expect("kubeconfig");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("engine kubeconfig");
    kube::Client::try_from(config).expect("engine client")
}

/// Issue #13's attack: with the engine's ServiceAccount, `progress.phase: Succeeded` written onto
/// another migration. The admission policy refuses it (and a token bound to no pod writes
/// nothing), the engine's own pod may write its own status, and the other migration is not
/// reported Succeeded.
pub async fn own_status(cluster: &Cluster, stack: &Stack) {
    use ghost::api::SchemaMigration;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, Patch, PatchParams};
    const J: &str = "own-status";
    let table_a = Table::create("k8s_own_a", 500).await;
    let table_b = Table::create("k8s_own_b", 500).await;
    let postponed = "  cutOver:\n    postpone: true\n";
    // own-a's webhook is signed with a key the kubelet mounts: the engine reads no Secret.
    // On the bridge, where the engine pod can reach it.
    let receiver =
        common::webhook_receiver::Server::start_on(&stack.node.bridge_ip, 0, false).await;
    const HOOK_KEY: &str = "k3y-from-a-mounted-secret";
    let hook_secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: own-hook-keys, namespace: {NAMESPACE}, \
         labels: {{\"{}\": \"true\", \"ghost.dev/credentials\": \"true\"}}}}\ntype: Opaque\n\
         stringData: {{signing: {HOOK_KEY}}}\n",
        harness::E2E_LABEL
    );
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&hook_secret))
        .await;
    let webhook = format!(
        "  hooks:\n    webhooks:\n      - url: {:?}\n        events: [success]\n        \
         secretRef: {{name: own-hook-keys, key: signing}}\n",
        receiver.url("/hook")
    );
    let a = Manifest::new("own-a", table_a.database(), "ADD COLUMN note VARCHAR(20)")
        .with_spec(postponed)
        .with_spec(&webhook);
    let b = Manifest::new("own-b", table_b.database(), "ADD COLUMN note VARCHAR(20)")
        .with_spec(postponed);
    apply(cluster, &a).await;
    stack.wait_phase(&a.name, "Postponed", PHASE_TIMEOUT).await;
    // One migration per host at a time here: b waits for a.
    apply(cluster, &b).await;
    stack.wait_phase(&b.name, "Queued", PHASE_TIMEOUT).await;
    // The engine reports before the kubelet has told the API server its pod runs.
    let pods: Api<Pod> = Api::namespaced(stack.admin.clone(), NAMESPACE);
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let pod = loop {
        let running = pods
            .list(&ListParams::default().labels(&format!("ghost.dev/migration={}", a.name)))
            .await
            .expect("pods")
            .items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        if let Some(pod) = running {
            break pod;
        }
        assert!(Instant::now() < deadline, "no running engine pod of own-a");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let as_pod_of_a = engine_client(cluster, stack, Some(&pod), "bound").await;
    let unbound = engine_client(cluster, stack, None, "unbound").await;

    // The engine's ServiceAccount reads no Secret, not even the ones its own pod mounts.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(as_pod_of_a.clone(), NAMESPACE);
    for name in [a.secret.as_str(), "own-hook-keys"] {
        match secrets.get(name).await {
            Err(kube::Error::Api(status)) if status.is_forbidden() => {
                say(
                    J,
                    format!("own-a's engine pod reads Secret {name}: refused (403)"),
                );
            }
            // Never print the Secret itself.
            Ok(_) => panic!("own-a's engine pod reads Secret {name}: allowed"),
            Err(e) => panic!("own-a's engine pod reads Secret {name}: {e}"),
        }
    }

    let forged =
        serde_json::json!({"status": {"progress": {"phase": "Succeeded", "message": "forged"}}});
    let refused = |result: Result<SchemaMigration, kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) => {
            assert!(
                status.message.contains("its own SchemaMigration"),
                "{what}: refused for another reason: {status:?}"
            );
            say(
                J,
                format!("{what}: refused ({}): {}", status.code, status.message),
            );
        }
        Ok(_) => panic!("{what}: the write was accepted"),
        Err(e) => panic!("{what}: {e}"),
    };
    let api_a: Api<SchemaMigration> = Api::namespaced(as_pod_of_a.clone(), NAMESPACE);
    refused(
        api_a
            .patch_status(&b.name, &PatchParams::default(), &Patch::Merge(&forged))
            .await,
        "own-a's engine pod writes own-b's status",
    );
    let api_unbound: Api<SchemaMigration> = Api::namespaced(unbound, NAMESPACE);
    refused(
        api_unbound
            .patch_status(&a.name, &PatchParams::default(), &Patch::Merge(&forged))
            .await,
        "a token bound to no pod writes own-a's status",
    );
    // Its own status it may write (a harmless field; the engine rewrites it).
    let own = serde_json::json!({"status": {"progress": {"message": "written by own-a's pod"}}});
    api_a
        .patch_status(&a.name, &PatchParams::default(), &Patch::Merge(&own))
        .await
        .expect("own-a's pod writes own-a's status");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let smig_b = stack.smig(&b.name).await.expect("own-b");
    assert_eq!(
        smig_b["status"]["phase"], "Queued",
        "{:#}",
        smig_b["status"]
    );

    for m in [&a, &b] {
        cluster
            .annotate(&m.name, &["ghost/postpone-cut-over=false"])
            .await;
    }
    for m in [&a, &b] {
        stack.wait_phase(&m.name, "Succeeded", PHASE_TIMEOUT).await;
    }
    let requests = receiver.requests();
    let success = requests
        .iter()
        .find(|r| r.headers.get("x-ghost-event").map(String::as_str) == Some("success"))
        .unwrap_or_else(|| panic!("own-a's success webhook never arrived: {requests:?}"));
    assert_eq!(
        success.headers.get("x-ghost-signature"),
        Some(&common::webhook_receiver::signature(
            HOOK_KEY.as_bytes(),
            &success.body
        )),
        "signed with the key from the mounted Secret"
    );
    say(
        J,
        "own-a's success webhook arrived, signed with the key of its mounted Secret",
    );
    cluster
        .kubectl(
            &["-n", NAMESPACE, "delete", "secret", "own-hook-keys"],
            None,
        )
        .await;
}

/// The reason of the condition that blocks `name`, once one does.
async fn blocked_by(stack: &Stack, name: &str, reason: &str) -> String {
    let (smig, _) = stack
        .wait_smig(name, reason, PHASE_TIMEOUT, |smig| {
            smig["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["reason"] == reason))
        })
        .await;
    smig["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["reason"] == reason))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Issue #13's escalation through the spec, by a user who may create SchemaMigrations: another
/// image, a cluster-admin ServiceAccount, control-plane placement, and a Secret that was never
/// meant for ghost. Each is refused with a condition, and no Job is made.
pub async fn escalation(cluster: &Cluster, stack: &Stack) {
    const J: &str = "escalation";
    // A table each: a blocked migration keeps its place on its table.
    let mut tables = Vec::new();
    let cases = [
        (
            "image",
            "  engine:\n    image: evil.example.com/miner:latest\n",
            "EngineNotAllowed",
            "spec.engine.image",
        ),
        (
            "account",
            "  engine:\n    serviceAccountName: cluster-admin\n",
            "EngineNotAllowed",
            "serviceAccountName",
        ),
        (
            "placement",
            "  engine:\n    nodeSelector: {node-role.kubernetes.io/control-plane: \"\"}\n    tolerations: [{operator: Exists}]\n",
            "EngineNotAllowed",
            "--allow-engine-placement",
        ),
    ];
    let mut names = Vec::new();
    for (what, spec, reason, words) in cases {
        let table = Table::create(&format!("k8s_esc_{what}"), 10).await;
        let manifest = Manifest::new(&format!("esc-{what}"), table.database(), "ADD COLUMN x INT")
            .with_spec(spec);
        tables.push(table);
        apply(cluster, &manifest).await;
        let message = blocked_by(stack, &manifest.name, reason).await;
        assert!(message.contains(words), "{what}: {message}");
        say(J, format!("{what}: {reason}: {message}"));
        names.push(manifest.name.clone());
    }
    // A Secret of the namespace that is not opted in for ghost.
    let table = Table::create("k8s_esc_secret", 10).await;
    let mut without = Manifest::new("esc-secret", table.database(), "ADD COLUMN x INT");
    without.without_secret = true;
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {}, namespace: {NAMESPACE}, labels: {{\"{}\": \"true\"}}}}\n\
         type: Opaque\nstringData: {{username: someone, password: something}}\n",
        without.secret,
        harness::E2E_LABEL
    );
    cluster.kubectl(&["apply", "-f", "-"], Some(&secret)).await;
    apply(cluster, &without).await;
    let message = blocked_by(stack, &without.name, "SecretNotOptedIn").await;
    assert!(message.contains("ghost.dev/credentials=true"), "{message}");
    say(J, format!("unlabelled Secret: SecretNotOptedIn: {message}"));
    names.push(without.name.clone());
    // A webhook signed with a key from a Secret not meant for ghost: the key would be mounted
    // into the engine pod.
    let hook_table = Table::create("k8s_esc_hook", 10).await;
    let hooked =
        Manifest::new("esc-hook", hook_table.database(), "ADD COLUMN x INT").with_spec(&format!(
            "  hooks:\n    webhooks:\n      - url: https://hooks.example.com/x\n        \
             secretRef: {{name: {}, key: password}}\n",
            without.secret
        ));
    apply(cluster, &hooked).await;
    let message = blocked_by(stack, &hooked.name, "SecretNotOptedIn").await;
    assert!(message.contains(&without.secret), "{message}");
    say(
        J,
        format!("webhook key from an unlabelled Secret: SecretNotOptedIn: {message}"),
    );
    names.push(hooked.name.clone());
    for name in &names {
        let jobs = cluster
            .names("jobs", &format!("ghost.dev/migration={name}"))
            .await;
        assert!(jobs.is_empty(), "{name}: a Job was made: {jobs:?}");
    }
    drop(table);
    drop(hook_table);
    drop(tables);
}
