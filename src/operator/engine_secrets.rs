//! The Secrets an engine Job is given, checked before the Job exists: the credentials Secret
//! has both keys, and every Secret the operator hands over (credentials, TLS client certificate,
//! webhook signing keys) is opted in with `ghost.dev/credentials: "true"`. Only key names and
//! labels are looked at, never values. A namespace where the operator may not read Secrets (or
//! create Jobs) is one the installation did not enable: the blocker says how to enable it.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

use super::policy;
use super::reconcile::{Blocker, Error};
use crate::api::engine_files::webhook_key_secrets;
use crate::api::types::{CredentialsSecretRef, SchemaMigrationSpec};

/// The first reason the Secrets of `spec` keep its engine from starting, if any.
pub async fn check(
    client: &Client,
    namespace: &str,
    spec: &SchemaMigrationSpec,
) -> Result<Option<Blocker>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |name: String| {
        let secrets = secrets.clone();
        async move {
            match secrets.get_opt(&name).await {
                Ok(secret) => Ok(Ok(secret)),
                Err(kube::Error::Api(status)) if status.is_forbidden() => {
                    Ok(Err(namespace_not_enabled(namespace, "read Secrets")))
                }
                Err(e) => Err(Error::from(e)),
            }
        }
    };
    let credentials = &spec.connection.credentials_secret_ref;
    let secret = match read(credentials.name.clone()).await? {
        Ok(secret) => secret,
        Err(blocker) => return Ok(Some(blocker)),
    };
    if let Err(blocker) = check_credentials(secret.as_ref(), namespace, credentials) {
        return Ok(Some(blocker));
    }
    let client_cert = spec
        .connection
        .tls
        .as_ref()
        .and_then(|t| t.client_cert_secret_ref.as_ref())
        .map(|r| r.name.as_str());
    let webhook_keys = webhook_key_secrets(spec).into_iter().map(|(name, _)| name);
    for name in client_cert.into_iter().chain(webhook_keys) {
        if name == credentials.name {
            continue;
        }
        let secret = match read(name.to_string()).await? {
            Ok(secret) => secret,
            Err(blocker) => return Ok(Some(blocker)),
        };
        if !secret
            .as_ref()
            .is_some_and(|s| policy::secret_opted_in(s.metadata.labels.as_ref()))
        {
            return Ok(Some(not_opted_in(namespace, name)));
        }
    }
    Ok(None)
}

/// Whether the credentials Secret exists, has both keys and is opted in.
pub fn check_credentials(
    secret: Option<&Secret>,
    namespace: &str,
    credentials: &CredentialsSecretRef,
) -> Result<(), Blocker> {
    let user_key = &credentials.username_key;
    let password_key = &credentials.password_key;
    let Some(secret) = secret else {
        return Err(Blocker {
            reason: "SecretNotFound",
            message: format!(
                "Secret {} not found in namespace {namespace}: create it with keys \
                 {user_key}/{password_key} (the MySQL user and password), e.g. kubectl -n \
                 {namespace} create secret generic {} --from-literal={user_key}=... \
                 --from-literal={password_key}=...",
                credentials.name, credentials.name
            ),
        });
    };
    let has = |key: &str| {
        secret.data.as_ref().is_some_and(|d| d.contains_key(key))
            || secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(key))
    };
    let missing: Vec<&str> = [user_key.as_str(), password_key.as_str()]
        .into_iter()
        .filter(|&key| !has(key))
        .collect();
    if missing.is_empty() {
        if !policy::secret_opted_in(secret.metadata.labels.as_ref()) {
            return Err(not_opted_in(namespace, &credentials.name));
        }
        return Ok(());
    }
    Err(Blocker {
        reason: "SecretKeyMissing",
        message: format!(
            "Secret {} in namespace {namespace} has no key {}: add it, or set \
             spec.connection.credentialsSecretRef.usernameKey/passwordKey to the keys it has",
            credentials.name,
            missing.join(" nor ")
        ),
    })
}

/// A Secret the operator would hand to an engine without its owner's consent.
pub fn not_opted_in(namespace: &str, secret: &str) -> Blocker {
    Blocker {
        reason: "SecretNotOptedIn",
        message: format!(
            "Secret {secret} in namespace {namespace} is not labelled {label}=true: the operator \
             hands only opted-in Secrets to engines; label it with kubectl -n {namespace} label \
             secret {secret} {label}=true",
            label = policy::CREDENTIALS_LABEL
        ),
    }
}

/// The operator lacks a permission in `namespace`: the chart grants it only in
/// `engine.namespaces` (the release namespace by default).
pub fn namespace_not_enabled(namespace: &str, what: &str) -> Blocker {
    Blocker {
        reason: "NamespaceNotEnabled",
        message: format!(
            "the operator may not {what} in namespace {namespace}: migrations run only in the \
             namespaces the installation enables; add {namespace} to engine.namespaces in the \
             Helm values (or bind the ClusterRole ghost-operator-engines there with a \
             RoleBinding)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;
    use crate::operator::queue;

    fn credentials() -> CredentialsSecretRef {
        CredentialsSecretRef {
            name: "shop-db".into(),
            username_key: "username".into(),
            password_key: "password".into(),
        }
    }

    fn secret(keys: &[&str]) -> Secret {
        Secret {
            metadata: opted_in(),
            data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), ByteString(b"x".to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    fn opted_in() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            labels: Some(BTreeMap::from([(
                policy::CREDENTIALS_LABEL.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn secret_checks_say_what_to_do() {
        let missing = check_credentials(None, "shop", &credentials()).unwrap_err();
        assert_eq!(missing.reason, "SecretNotFound");
        assert!(
            missing.message.starts_with(
                "Secret shop-db not found in namespace shop: create it with keys username/password"
            ),
            "{}",
            missing.message
        );

        let no_password = check_credentials(Some(&secret(&["username"])), "shop", &credentials());
        let blocker = no_password.unwrap_err();
        assert_eq!(blocker.reason, "SecretKeyMissing");
        assert!(blocker.message.contains("has no key password"));

        let none = check_credentials(Some(&secret(&[])), "shop", &credentials()).unwrap_err();
        assert!(none.message.contains("has no key username nor password"));

        assert_eq!(
            check_credentials(
                Some(&secret(&["username", "password"])),
                "shop",
                &credentials()
            ),
            Ok(())
        );
        let mut not_labelled = secret(&["username", "password"]);
        not_labelled.metadata.labels = None;
        let blocker = check_credentials(Some(&not_labelled), "shop", &credentials()).unwrap_err();
        assert_eq!(blocker.reason, "SecretNotOptedIn");
        assert!(
            blocker
                .message
                .contains("kubectl -n shop label secret shop-db ghost.dev/credentials=true"),
            "{}",
            blocker.message
        );
        let string_data = Secret {
            metadata: opted_in(),
            string_data: Some(BTreeMap::from([
                ("username".to_string(), "u".to_string()),
                ("password".to_string(), "p".to_string()),
            ])),
            ..Secret::default()
        };
        assert_eq!(
            check_credentials(Some(&string_data), "shop", &credentials()),
            Ok(())
        );
        // Every blocker reason is one the queue knows.
        for reason in [
            missing.reason,
            blocker.reason,
            "JobNameTaken",
            namespace_not_enabled("shop", "read Secrets").reason,
        ] {
            assert!(queue::BLOCKED_REASONS.contains(&reason));
        }
    }
}
