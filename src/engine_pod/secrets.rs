//! Webhook signing keys, read from the files the kubelet writes from the Secrets the operator
//! mounts (`api::engine_files`); the engine's ServiceAccount reads no Secret through the API.
//! Values go straight into `Secret` (redacted in Debug output) and are never logged; errors
//! name the Secret and key, never the value.

use std::path::Path;

use super::config::{ConfigError, SecretValues};
use crate::api::engine_files::{webhook_key_refs, webhook_secret_dir};
use crate::api::types::SchemaMigrationSpec;
use crate::engine::conn::Secret;

/// Reads every key the webhooks of `spec` are signed with, from `root` (`WEBHOOK_KEYS_DIR` in a
/// pod).
pub fn read_webhook_keys(
    root: &str,
    spec: &SchemaMigrationSpec,
) -> Result<SecretValues, ConfigError> {
    let mut values = SecretValues::new();
    for r in webhook_key_refs(spec) {
        let path = Path::new(&webhook_secret_dir(root, &r.name)).join(&r.key);
        let bytes = std::fs::read(&path).map_err(|e| {
            ConfigError::WebhookSecret(format!(
                "cannot read key {:?} of Secret {:?} at {} ({e}): the engine Job mounts it; was \
                 the Job built by this version of the operator?",
                r.key,
                r.name,
                path.display()
            ))
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            ConfigError::WebhookSecret(format!(
                "key {:?} of Secret {:?} is not UTF-8 text",
                r.key, r.name
            ))
        })?;
        values.insert((r.name.clone(), r.key.clone()), Secret::new(text));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SchemaMigration;

    fn spec() -> SchemaMigrationSpec {
        let smig: SchemaMigration = serde_yaml::from_str(
            r#"
apiVersion: ghost.dev/v1alpha1
kind: SchemaMigration
metadata: {name: m, namespace: ns}
spec:
  connection: {host: db, database: shop, credentialsSecretRef: {name: shop-db}}
  table: orders
  alter: ADD COLUMN note TEXT
  hooks:
    webhooks:
      - {url: "https://a.example/h", secretRef: {name: hook-keys, key: a}}
      - {url: "https://b.example/h"}
"#,
        )
        .expect("a SchemaMigration");
        smig.spec
    }

    #[test]
    fn reads_mounted_keys_and_names_what_is_missing_or_not_text() {
        let root = std::env::temp_dir().join(format!("ghost-webhook-keys-{}", std::process::id()));
        let root_text = root.to_string_lossy().to_string();
        let dir = root.join("hook-keys");
        std::fs::create_dir_all(&dir).expect("mkdir");

        let err = read_webhook_keys(&root_text, &spec())
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"a\"") && err.contains("hook-keys"), "{err}");

        std::fs::write(dir.join("a"), b"k3y").expect("write key");
        let values = read_webhook_keys(&root_text, &spec()).expect("keys");
        assert_eq!(values.len(), 1);
        assert_eq!(values[&("hook-keys".into(), "a".into())].expose(), "k3y");

        std::fs::write(dir.join("a"), [0xff, 0xfe]).expect("write key");
        let err = read_webhook_keys(&root_text, &spec())
            .unwrap_err()
            .to_string();
        assert!(err.contains("UTF-8"), "{err}");
        assert!(!err.contains('\u{fffd}'), "{err}");
        std::fs::remove_dir_all(&root).expect("clean up");
    }
}
