//! The engine Job of one SchemaMigration, built from the resource alone (no I/O), and the reading
//! of a Job's state back into the status function's `JobState`.
//!
//! One Job per resource, with a deterministic name so a repeated reconcile finds the Job it
//! created instead of starting a second engine. The pod runs `ghost engine --namespace N --name X`;
//! the engine reads everything else from the resource itself. Credentials reach it as environment
//! variables from the Secret (`secretKeyRef`), never as arguments.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::api::engine_files::{
    WEBHOOK_KEYS_DIR, tls_files, webhook_key_secrets, webhook_secret_dir,
};
use crate::api::types::{SchemaMigrationSpec, TlsMode, TlsSpec};
use crate::api::{JobState, SchemaMigration};

/// Job names start with this.
pub const JOB_PREFIX: &str = "ghost-";
/// The engine pod's service account when the spec names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "ghost-engine";
/// The distroless "nonroot" user: the image needs no root, so the pod never gets it.
pub const ENGINE_UID: i64 = 65532;
pub const CONTAINER_NAME: &str = "engine";
pub const ENV_DB_USER: &str = "GHOST_DB_USER";
pub const ENV_DB_PASSWORD: &str = "GHOST_DB_PASSWORD";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MIGRATION: &str = "ghost.dev/migration";
/// What the controller's Job watch filters on, so it does not cache every Job in the cluster.
pub const JOB_SELECTOR: &str = "app.kubernetes.io/name=ghost,app.kubernetes.io/component=engine";

/// Label values and the Job name (which the Job controller copies into a pod label) are limited
/// to 63 characters.
const MAX_LABEL: usize = 63;
const HASH_CHARS: usize = 8;

/// What the operator supplies when the spec leaves it open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineDefaults {
    /// `--engine-image`.
    pub image: String,
    pub service_account: String,
    /// What a spec may ask for besides these defaults.
    pub policy: super::policy::EnginePolicy,
    /// A Job whose engine has not started (reported no progress) within this fails.
    pub start_timeout: std::time::Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("the SchemaMigration has no namespace")]
    NoNamespace,
    #[error("the SchemaMigration has no name or uid yet, so the Job cannot point back to it")]
    NoOwnerReference,
}

/// `ghost-<name>`, or, when that is too long or `name` has dots, a cut name with a hash of the
/// full name so that two long names sharing a prefix still get different Jobs.
pub fn job_name(migration: &str) -> String {
    let plain = format!("{JOB_PREFIX}{migration}");
    if plain.len() <= MAX_LABEL && !migration.contains('.') {
        return plain;
    }
    let room = MAX_LABEL - JOB_PREFIX.len() - 1 - HASH_CHARS;
    let cut = stem(&migration.replace('.', "-"), room);
    format!("{JOB_PREFIX}{cut}-{}", short_hash(migration))
}

/// The `ghost.dev/migration` label value: the name itself when it fits, else cut plus a hash.
pub fn migration_label(migration: &str) -> String {
    if migration.len() <= MAX_LABEL {
        return migration.to_string();
    }
    let cut = stem(migration, MAX_LABEL - 1 - HASH_CHARS);
    format!("{cut}-{}", short_hash(migration))
}

/// The label selector of one migration's Job and pods.
pub fn migration_selector(migration: &str) -> String {
    format!("{LABEL_MIGRATION}={}", migration_label(migration))
}

/// The labels of the Job and its pods.
pub fn labels(migration: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), "ghost".to_string()),
        (LABEL_COMPONENT.to_string(), "engine".to_string()),
        (LABEL_MIGRATION.to_string(), migration_label(migration)),
    ])
}

/// The first `room` characters, ending on a letter or digit (names and label values must).
fn stem(name: &str, room: usize) -> String {
    let mut stem: String = name.chars().take(room).collect();
    while stem.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        stem.pop();
    }
    stem
}

fn short_hash(name: &str) -> String {
    let mut text = hex::encode(Sha256::digest(name.as_bytes()));
    text.truncate(HASH_CHARS);
    text
}

/// The TLS Secrets of `spec.connection.tls`, as read-only volumes mounted where the engine
/// reads them (`api::engine_files::tls_files`): files, never env or args. The kubelet reads the
/// Secrets, so the engine's ServiceAccount needs no access to them.
fn tls_secret_volumes(tls: Option<&TlsSpec>) -> (Vec<Volume>, Vec<VolumeMount>) {
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    let Some(tls) = tls.filter(|t| t.mode != TlsMode::Disabled) else {
        return (volumes, mounts);
    };
    let mut add = |name: &str, secret: &str, items: Vec<(String, &str)>, dir: &str| {
        volumes.push(Volume {
            name: name.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_string()),
                items: Some(
                    items
                        .into_iter()
                        .map(|(key, path)| KeyToPath {
                            key,
                            path: path.to_string(),
                            mode: None,
                        })
                        .collect(),
                ),
                // Read-only for the owner and the pod's fsGroup, the engine's group.
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: name.to_string(),
            mount_path: dir.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    };
    if let Some(ca) = &tls.ca_secret_ref {
        add(
            "tls-ca",
            &ca.name,
            vec![(ca.key.clone(), "ca.pem")],
            tls_files::CA_DIR,
        );
    }
    if let Some(client) = &tls.client_cert_secret_ref {
        add(
            "tls-client",
            &client.name,
            vec![
                ("tls.crt".to_string(), "tls.crt"),
                ("tls.key".to_string(), "tls.key"),
            ],
            tls_files::CLIENT_DIR,
        );
    }
    (volumes, mounts)
}

/// The webhook signing-key Secrets (`spec.hooks.webhooks[].secretRef`), one read-only volume
/// each with only the keys the webhooks name, where the engine reads them
/// (`api::engine_files::WEBHOOK_KEYS_DIR`).
fn webhook_key_volumes(spec: &SchemaMigrationSpec) -> (Vec<Volume>, Vec<VolumeMount>) {
    webhook_key_secrets(spec)
        .into_iter()
        .enumerate()
        .map(|(i, (secret, keys))| {
            // Secret names may be longer than a volume name may be: number them.
            let name = format!("webhook-keys-{i}");
            let volume = Volume {
                name: name.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.to_string()),
                    items: Some(
                        keys.into_iter()
                            .map(|key| KeyToPath {
                                key: key.to_string(),
                                path: key.to_string(),
                                mode: None,
                            })
                            .collect(),
                    ),
                    default_mode: Some(0o440),
                    optional: Some(false),
                }),
                ..Volume::default()
            };
            let mount = VolumeMount {
                name,
                mount_path: webhook_secret_dir(WEBHOOK_KEYS_DIR, secret),
                read_only: Some(true),
                ..VolumeMount::default()
            };
            (volume, mount)
        })
        .unzip()
}

/// The engine Job for `smig`.
pub fn build_job(smig: &SchemaMigration, defaults: &EngineDefaults) -> Result<Job, JobError> {
    let namespace = smig.namespace().ok_or(JobError::NoNamespace)?;
    let name = smig.name_any();
    let owner = smig
        .controller_owner_ref(&())
        .ok_or(JobError::NoOwnerReference)?;
    let engine = smig.spec.engine.clone().unwrap_or_default();
    let credentials = &smig.spec.connection.credentials_secret_ref;

    let env = vec![
        secret_env(ENV_DB_USER, &credentials.name, &credentials.username_key),
        secret_env(
            ENV_DB_PASSWORD,
            &credentials.name,
            &credentials.password_key,
        ),
    ];
    let (mut secret_volumes, mut secret_mounts) =
        tls_secret_volumes(smig.spec.connection.tls.as_ref());
    let (webhook_volumes, webhook_mounts) = webhook_key_volumes(&smig.spec);
    secret_volumes.extend(webhook_volumes);
    secret_mounts.extend(webhook_mounts);

    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(
            engine
                .image
                .clone()
                .filter(|i| !i.trim().is_empty())
                .unwrap_or_else(|| defaults.image.clone()),
        ),
        command: Some(vec![
            "ghost".to_string(),
            "engine".to_string(),
            "--namespace".to_string(),
            namespace.clone(),
            "--name".to_string(),
            name.clone(),
        ]),
        env: Some(env),
        resources: engine.resources.clone(),
        security_context: Some(container_security_context()),
        // The root filesystem is read-only; anything the engine writes goes to /tmp.
        volume_mounts: Some(
            std::iter::once(VolumeMount {
                name: "tmp".to_string(),
                mount_path: "/tmp".to_string(),
                ..VolumeMount::default()
            })
            .chain(secret_mounts)
            .collect(),
        ),
        ..Container::default()
    };

    let labels = labels(&name);
    let pod = PodSpec {
        containers: vec![container],
        // A failed pod is replaced by the Job (up to backoffLimit), and the new engine resumes
        // from its checkpoint; restarting in place would hide the failure from the Job.
        restart_policy: Some("Never".to_string()),
        service_account_name: Some(
            engine
                .service_account_name
                .clone()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| defaults.service_account.clone()),
        ),
        // The engine needs no Service environment variables; they only add noise.
        enable_service_links: Some(false),
        security_context: Some(pod_security_context()),
        node_selector: (!engine.node_selector.is_empty()).then(|| engine.node_selector.clone()),
        tolerations: (!engine.tolerations.is_empty()).then(|| engine.tolerations.clone()),
        volumes: Some(
            std::iter::once(Volume {
                name: "tmp".to_string(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            })
            .chain(secret_volumes)
            .collect(),
        ),
        ..PodSpec::default()
    };

    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name)),
            namespace: Some(namespace),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(engine.backoff_limit.max(0)),
            pod_failure_policy: Some(no_retry_for_final_exits()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

/// The engine's exit codes that another pod cannot change: 2 (the resource cannot run as
/// written: credentials, TLS, the ALTER) and 3 (cancelled). They fail the Job at once instead
/// of using up the backoff limit on retries that fail the same way.
pub const FINAL_EXIT_CODES: [i32; 2] = [2, 3];

/// Final exits fail the Job at once; a pod evicted (`kubectl drain`, preemption, a node's taint)
/// is not the engine's failure and does not use up the backoff limit: the next pod resumes.
fn no_retry_for_final_exits() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "FailJob".to_string(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(CONTAINER_NAME.to_string()),
                    operator: "In".to_string(),
                    values: FINAL_EXIT_CODES.to_vec(),
                }),
                on_pod_conditions: None,
            },
            PodFailurePolicyRule {
                action: "Ignore".to_string(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".to_string(),
                    status: "True".to_string(),
                }]),
            },
        ],
    }
}

fn secret_env(var: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: var.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        ..SeccompProfile::default()
    }
}

/// Pod Security Standards "restricted", at pod level. The fsGroup makes the kubelet give the
/// mounted Secrets' files (mode 0440) to the engine's group: without it they are root's, and the
/// engine cannot read its TLS material or webhook keys.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(ENGINE_UID),
        run_as_group: Some(ENGINE_UID),
        fs_group: Some(ENGINE_UID),
        seccomp_profile: Some(runtime_default()),
        ..PodSecurityContext::default()
    }
}

/// Pod Security Standards "restricted", at container level (some admission checks look only here).
fn container_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(ENGINE_UID),
        run_as_group: Some(ENGINE_UID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

/// Whether `job` is controlled by the resource with `uid` (a Job of a deleted resource of the
/// same name may still be waiting for garbage collection).
pub fn is_owned_by(job: &Job, uid: &str) -> bool {
    job.owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// The Job's state as the status function sees it.
pub fn job_state(job: &Job) -> JobState {
    let status = job.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let holds = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    // Complete/Failed are final; SuccessCriteriaMet/FailureTarget (Kubernetes 1.31+) come first,
    // while the remaining pods terminate, and already decide the outcome.
    if holds("Complete")
        .or_else(|| holds("SuccessCriteriaMet"))
        .is_some()
    {
        return JobState::Succeeded;
    }
    if let Some(c) = holds("Failed").or_else(|| holds("FailureTarget")) {
        let message = match (c.reason.as_deref(), c.message.as_deref()) {
            (Some(r), Some(m)) if !m.is_empty() => format!("{r}: {m}"),
            (Some(r), _) => r.to_string(),
            (None, Some(m)) => m.to_string(),
            (None, None) => String::new(),
        };
        return JobState::Failed { message };
    }
    if status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        return JobState::Succeeded;
    }
    JobState::Running
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::Toleration;

    use super::*;

    fn migration(yaml_spec: &str) -> SchemaMigration {
        let mut smig: SchemaMigration = serde_yaml::from_str(&format!(
            "apiVersion: ghost.dev/v1alpha1\nkind: SchemaMigration\n\
             metadata: {{name: add-age, namespace: shop, uid: 0b5e-uid}}\n{yaml_spec}"
        ))
        .expect("test manifest");
        smig.metadata.generation = Some(1);
        smig
    }

    const SPEC: &str = "spec:
  connection:
    host: mariadb-0.mariadb
    database: shop
    credentialsSecretRef: {name: shop-db, passwordKey: pw}
  table: users
  alter: ADD COLUMN age INT NOT NULL DEFAULT 0
";

    fn defaults() -> EngineDefaults {
        EngineDefaults {
            image: "ghost:test".to_string(),
            service_account: DEFAULT_SERVICE_ACCOUNT.to_string(),
            policy: Default::default(),
            start_timeout: std::time::Duration::from_secs(300),
        }
    }

    fn pod_spec(job: &Job) -> &PodSpec {
        job.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    #[test]
    fn job_runs_the_engine_for_this_resource() {
        let job = build_job(&migration(SPEC), &defaults()).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("ghost-add-age"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("shop"));
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(3));
        let rules = &spec
            .pod_failure_policy
            .as_ref()
            .expect("podFailurePolicy")
            .rules;
        assert_eq!(rules[0].action, "FailJob");
        let codes = rules[0].on_exit_codes.as_ref().expect("onExitCodes");
        assert_eq!(
            (codes.operator.as_str(), codes.values.as_slice()),
            ("In", &[2, 3][..])
        );
        // An evicted pod (a drain) does not count as a failure.
        assert_eq!(rules[1].action, "Ignore");
        let conditions = rules[1]
            .on_pod_conditions
            .as_ref()
            .expect("onPodConditions");
        assert_eq!(
            (conditions[0].type_.as_str(), conditions[0].status.as_str()),
            ("DisruptionTarget", "True")
        );
        let pod = pod_spec(&job);
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.service_account_name.as_deref(), Some("ghost-engine"));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("ghost:test"));
        assert_eq!(
            c.command.as_deref().unwrap(),
            [
                "ghost",
                "engine",
                "--namespace",
                "shop",
                "--name",
                "add-age"
            ]
        );
        assert!(c.args.is_none());
    }

    #[test]
    fn credentials_come_from_the_secret_never_as_values() {
        let job = build_job(&migration(SPEC), &defaults()).unwrap();
        let env = pod_spec(&job).containers[0].env.clone().unwrap();
        let refs: Vec<(&str, &str, &str)> = env
            .iter()
            .map(|e| {
                assert!(e.value.is_none(), "{} has a literal value", e.name);
                let r = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                    .expect("secretKeyRef");
                (e.name.as_str(), r.name.as_str(), r.key.as_str())
            })
            .collect();
        assert_eq!(
            refs,
            [
                ("GHOST_DB_USER", "shop-db", "username"),
                ("GHOST_DB_PASSWORD", "shop-db", "pw"),
            ]
        );

        // TLS material is mounted read-only, never passed in env or args.
        let with_tls = SPEC.replace(
            "credentialsSecretRef: {name: shop-db, passwordKey: pw}",
            "credentialsSecretRef: {name: shop-db}\n    tls: {caSecretRef: {name: db-ca, key: ca.crt}, clientCertSecretRef: {name: db-client}}",
        );
        let job = build_job(&migration(&with_tls), &defaults()).unwrap();
        let pod = pod_spec(&job);
        let env = pod.containers[0].env.clone().unwrap();
        assert_eq!(env.len(), 2, "only the credentials are env: {env:?}");
        let volumes = pod.volumes.clone().unwrap();
        let secret = |name: &str| {
            volumes
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.secret.clone())
                .unwrap_or_else(|| panic!("volume {name}"))
        };
        let ca = secret("tls-ca");
        assert_eq!(ca.secret_name.as_deref(), Some("db-ca"));
        let items = ca.items.unwrap();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("ca.crt", "ca.pem")
        );
        assert_eq!(
            secret("tls-client").secret_name.as_deref(),
            Some("db-client")
        );
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        for (name, dir) in [
            ("tls-ca", tls_files::CA_DIR),
            ("tls-client", tls_files::CLIENT_DIR),
        ] {
            let mount = mounts.iter().find(|m| m.name == name).expect("mount");
            assert_eq!(mount.mount_path, dir);
            assert_eq!(mount.read_only, Some(true));
        }
        let command = pod.containers[0].command.clone().unwrap().join(" ");
        assert!(!command.contains("tls"), "{command}");
    }

    #[test]
    fn webhook_keys_are_mounted_not_read_through_the_api() {
        let with_hooks = format!(
            "{SPEC}  hooks:\n    webhooks:\n      - {{url: \"https://a.example/h\", secretRef: {{name: hook-keys, key: a}}}}\n      - {{url: \"https://b.example/h\", secretRef: {{name: hook-keys, key: b}}}}\n"
        );
        let job = build_job(&migration(&with_hooks), &defaults()).unwrap();
        let pod = pod_spec(&job);
        let volume = pod
            .volumes
            .clone()
            .unwrap()
            .into_iter()
            .find(|v| v.name == "webhook-keys-0")
            .and_then(|v| v.secret)
            .expect("a webhook key volume");
        assert_eq!(volume.secret_name.as_deref(), Some("hook-keys"));
        let items: Vec<(String, String)> = volume
            .items
            .unwrap()
            .into_iter()
            .map(|i| (i.key, i.path))
            .collect();
        assert_eq!(
            items,
            [("a".into(), "a".into()), ("b".into(), "b".into())],
            "only the keys the webhooks name"
        );
        let mount = pod.containers[0]
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "webhook-keys-0")
            .expect("its mount");
        assert_eq!(mount.mount_path, "/var/run/ghost/webhook-keys/hook-keys");
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(pod.containers[0].env.as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn restricted_security_context() {
        let job = build_job(&migration(SPEC), &defaults()).unwrap();
        let pod = pod_spec(&job);
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        // The mounted Secrets (0440) are readable by the engine only through its fsGroup.
        assert_eq!(psc.fs_group, Some(65532));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        let sc = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(65532));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        // A writable /tmp despite the read-only root.
        assert_eq!(
            pod.containers[0].volume_mounts.as_ref().unwrap()[0].mount_path,
            "/tmp"
        );
    }

    #[test]
    fn owner_reference_and_labels() {
        let job = build_job(&migration(SPEC), &defaults()).unwrap();
        let owners = job.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        let o = &owners[0];
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str(), o.name.as_str()),
            ("ghost.dev/v1alpha1", "SchemaMigration", "add-age")
        );
        assert_eq!(o.uid, "0b5e-uid");
        assert_eq!(o.controller, Some(true));
        assert!(is_owned_by(&job, "0b5e-uid"));
        assert!(!is_owned_by(&job, "another-uid"));

        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_NAME], "ghost");
        assert_eq!(labels[LABEL_COMPONENT], "engine");
        assert_eq!(labels[LABEL_MIGRATION], "add-age");
        let pod_labels = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap();
        assert_eq!(pod_labels.labels.as_ref(), Some(labels));
        assert_eq!(migration_selector("add-age"), "ghost.dev/migration=add-age");
    }

    #[test]
    fn engine_spec_overrides() {
        let spec = format!(
            "{SPEC}  engine:
    image: registry/ghost:1.2
    serviceAccountName: db-migrator
    backoffLimit: 0
    nodeSelector: {{pool: db}}
    tolerations: [{{key: dedicated, operator: Equal, value: db, effect: NoSchedule}}]
    resources: {{limits: {{memory: 256Mi}}}}
"
        );
        let job = build_job(&migration(&spec), &defaults()).unwrap();
        assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
        let pod = pod_spec(&job);
        assert_eq!(pod.service_account_name.as_deref(), Some("db-migrator"));
        assert_eq!(
            pod.node_selector
                .as_ref()
                .unwrap()
                .get("pool")
                .map(String::as_str),
            Some("db")
        );
        assert_eq!(
            pod.tolerations.as_deref().unwrap(),
            [Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("db".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }]
        );
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry/ghost:1.2"));
        assert!(c.resources.as_ref().unwrap().limits.is_some());
    }

    #[test]
    fn missing_uid_is_refused() {
        let mut smig = migration(SPEC);
        smig.metadata.uid = None;
        assert_eq!(
            build_job(&smig, &defaults()).unwrap_err(),
            JobError::NoOwnerReference
        );
    }

    fn valid_label(v: &str) -> bool {
        v.len() <= 63
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }

    #[test]
    fn long_names_are_cut_and_hashed() {
        assert_eq!(job_name("add-age"), "ghost-add-age");
        let fits = "x".repeat(57);
        assert_eq!(job_name(&fits), format!("ghost-{fits}"));

        let long_a = format!("{}-a", "m".repeat(80));
        let long_b = format!("{}-b", "m".repeat(80));
        let (a, b) = (job_name(&long_a), job_name(&long_b));
        assert_eq!(a.len(), 63);
        assert!(a.starts_with("ghost-mmm"));
        assert_ne!(a, b, "the hash keeps shared prefixes apart");
        assert_eq!(a, job_name(&long_a), "deterministic");
        assert!(valid_label(&a));

        // Dots are fine in resource names but not wanted in pod host names.
        let dotted = job_name("v1.2-add-age");
        assert!(dotted.starts_with("ghost-v1-2-add-age-"));
        assert_ne!(dotted, job_name("v1-2-add-age"));

        // A cut that would end on a dash ends on a letter instead.
        let dashy = format!("{}-{}", "a".repeat(47), "b".repeat(30));
        assert!(valid_label(&job_name(&dashy)), "{}", job_name(&dashy));

        let label = migration_label(&long_a);
        assert_eq!(label.len(), 63);
        assert!(valid_label(&label));
        assert_eq!(migration_label("add-age"), "add-age");
    }

    fn job_with(conditions: Vec<(&str, &str, Option<&str>, Option<&str>)>) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(
                    conditions
                        .into_iter()
                        .map(|(t, s, reason, message)| JobCondition {
                            type_: t.into(),
                            status: s.into(),
                            reason: reason.map(Into::into),
                            message: message.map(Into::into),
                            ..JobCondition::default()
                        })
                        .collect(),
                ),
                ..JobStatus::default()
            }),
            ..Job::default()
        }
    }

    #[test]
    fn job_states() {
        assert_eq!(job_state(&Job::default()), JobState::Running);
        assert_eq!(
            job_state(&job_with(vec![("Complete", "True", None, None)])),
            JobState::Succeeded
        );
        assert_eq!(
            job_state(&job_with(vec![("SuccessCriteriaMet", "True", None, None)])),
            JobState::Succeeded
        );
        assert_eq!(
            job_state(&job_with(vec![(
                "Failed",
                "True",
                Some("BackoffLimitExceeded"),
                Some("Job has reached the specified backoff limit")
            )])),
            JobState::Failed {
                message: "BackoffLimitExceeded: Job has reached the specified backoff limit".into()
            }
        );
        assert_eq!(
            job_state(&job_with(vec![(
                "FailureTarget",
                "True",
                Some("DeadlineExceeded"),
                None
            )])),
            JobState::Failed {
                message: "DeadlineExceeded".into()
            }
        );
        assert_eq!(
            job_state(&job_with(vec![("Suspended", "False", None, None)])),
            JobState::Running
        );
    }
}
