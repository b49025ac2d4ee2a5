//! Webhook signing keys, read from Secrets in the resource's namespace through the API. Values
//! go straight into `Secret` (redacted in Debug output) and are never logged; errors name the
//! Secret and key, never the value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::Client;
use kube::api::Api;

use super::config::{ConfigError, SecretValues, webhook_secret_refs};
use crate::api::types::SchemaMigrationSpec;
use crate::engine::conn::Secret;

/// Reads every key the webhooks of `spec` are signed with.
pub async fn read_webhook_secrets(
    client: Client,
    namespace: &str,
    spec: &SchemaMigrationSpec,
) -> Result<SecretValues, ConfigError> {
    let refs = webhook_secret_refs(spec);
    let mut values = SecretValues::new();
    if refs.is_empty() {
        return Ok(values);
    }
    let api: Api<KubeSecret> = Api::namespaced(client, namespace);
    let mut objects: BTreeMap<String, Option<KubeSecret>> = BTreeMap::new();
    for r in refs {
        if !objects.contains_key(&r.name) {
            let object = api.get_opt(&r.name).await.map_err(|e| {
                ConfigError::WebhookSecret(format!("cannot read Secret {:?}: {e}", r.name))
            })?;
            objects.insert(r.name.clone(), object);
        }
        let object = objects
            .get(&r.name)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                ConfigError::WebhookSecret(format!(
                    "Secret {:?} not found in namespace {namespace:?}",
                    r.name
                ))
            })?;
        let value = secret_value(object, &r.key).map_err(|problem| {
            ConfigError::WebhookSecret(format!("Secret {:?}: {problem}", r.name))
        })?;
        values.insert((r.name.clone(), r.key.clone()), value);
    }
    Ok(values)
}

/// One key of a Secret object, as text.
pub fn secret_value(object: &KubeSecret, key: &str) -> Result<Secret, String> {
    let bytes = object
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|b| b.0.clone())
        // stringData is write-only on the server, but an object built by hand may carry it.
        .or_else(|| {
            object
                .string_data
                .as_ref()
                .and_then(|data| data.get(key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| format!("has no key {key:?}"))?;
    String::from_utf8(bytes)
        .map(Secret::new)
        .map_err(|_| format!("key {key:?} is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn reads_data_and_string_data() {
        let object = KubeSecret {
            data: Some(BTreeMap::from([(
                "a".to_string(),
                ByteString(b"k3y".to_vec()),
            )])),
            string_data: Some(BTreeMap::from([("b".to_string(), "other".to_string())])),
            ..KubeSecret::default()
        };
        assert_eq!(secret_value(&object, "a").unwrap().expose(), "k3y");
        assert_eq!(secret_value(&object, "b").unwrap().expose(), "other");
        assert!(secret_value(&object, "c").unwrap_err().contains("\"c\""));

        let binary = KubeSecret {
            data: Some(BTreeMap::from([(
                "a".to_string(),
                ByteString(vec![0xff, 0xfe]),
            )])),
            ..KubeSecret::default()
        };
        let err = secret_value(&binary, "a").unwrap_err();
        assert!(err.contains("UTF-8"), "{err}");
    }
}
