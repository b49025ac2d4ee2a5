//! Where the engine pod finds the Secrets the operator mounts into it (read-only volumes the
//! kubelet fills): one definition for the Job the operator builds and the engine that reads
//! the files. The engine's ServiceAccount reads no Secret through the API.

use super::types::{SchemaMigrationSpec, SecretKeyRef};

/// TLS material of `spec.connection.tls`.
pub mod tls_files {
    /// The CA bundle (`spec.connection.tls.caSecretRef`).
    pub const CA: &str = "/var/run/ghost/tls/ca/ca.pem";
    pub const CA_DIR: &str = "/var/run/ghost/tls/ca";
    /// The client certificate and key (`spec.connection.tls.clientCertSecretRef`).
    pub const CLIENT_CERT: &str = "/var/run/ghost/tls/client/tls.crt";
    pub const CLIENT_KEY: &str = "/var/run/ghost/tls/client/tls.key";
    pub const CLIENT_DIR: &str = "/var/run/ghost/tls/client";
}

/// Webhook signing keys (`spec.hooks.webhooks[].secretRef`): each Secret is a directory under
/// this one, each key a file in it. Secret names (DNS subdomains) and keys (`[-._a-zA-Z0-9]+`,
/// never `.` or `..`) are valid path segments as the API server accepts them.
pub const WEBHOOK_KEYS_DIR: &str = "/var/run/ghost/webhook-keys";

/// The directory of one webhook key Secret under `root` (`WEBHOOK_KEYS_DIR` in a pod).
pub fn webhook_secret_dir(root: &str, secret: &str) -> String {
    format!("{root}/{secret}")
}

/// The Secrets the webhooks of `spec` are signed with, each with its keys, in spec order and
/// without duplicates: one volume per Secret.
pub fn webhook_key_secrets(spec: &SchemaMigrationSpec) -> Vec<(&str, Vec<&str>)> {
    let mut secrets: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in webhook_key_refs(spec) {
        match secrets.iter_mut().find(|(name, _)| *name == r.name) {
            Some((_, keys)) => {
                if !keys.contains(&r.key.as_str()) {
                    keys.push(&r.key);
                }
            }
            None => secrets.push((&r.name, vec![&r.key])),
        }
    }
    secrets
}

/// Every webhook's `secretRef`, deduplicated.
pub fn webhook_key_refs(spec: &SchemaMigrationSpec) -> Vec<&SecretKeyRef> {
    let mut refs: Vec<&SecretKeyRef> = Vec::new();
    let wanted = spec
        .hooks
        .iter()
        .flat_map(|h| &h.webhooks)
        .filter_map(|w| w.secret_ref.as_ref());
    for r in wanted {
        if !refs.contains(&r) {
            refs.push(r);
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SchemaMigration;

    #[test]
    fn one_entry_per_secret_with_its_keys() {
        let smig: SchemaMigration = serde_yaml::from_str(
            r#"
apiVersion: ghost.dev/v1alpha1
kind: SchemaMigration
metadata: {name: m, namespace: ns}
spec:
  connection:
    host: db
    database: shop
    credentialsSecretRef: {name: shop-db}
  table: orders
  alter: ADD COLUMN note TEXT
  hooks:
    webhooks:
      - {url: "https://a.example/h", secretRef: {name: hook-keys, key: a}}
      - {url: "https://b.example/h", secretRef: {name: other, key: k}}
      - {url: "https://c.example/h", secretRef: {name: hook-keys, key: b}}
      - {url: "https://d.example/h", secretRef: {name: hook-keys, key: a}}
      - {url: "https://e.example/h"}
"#,
        )
        .expect("a SchemaMigration");
        assert_eq!(
            webhook_key_secrets(&smig.spec),
            vec![("hook-keys", vec!["a", "b"]), ("other", vec!["k"])]
        );
        assert_eq!(webhook_key_refs(&smig.spec).len(), 3);
        assert_eq!(
            webhook_secret_dir(WEBHOOK_KEYS_DIR, "hook-keys"),
            "/var/run/ghost/webhook-keys/hook-keys"
        );
    }
}
