//! What a SchemaMigration may ask of the cluster. A user who may create SchemaMigrations but not
//! Pods or Jobs must not get, through the operator, a pod with another image, another
//! ServiceAccount or another node: `spec.engine.image` and `serviceAccountName` must be on the
//! operator's allow-lists (by default: its own engine image and ServiceAccount only), and node
//! placement (`nodeSelector`, `tolerations`) is refused unless `--allow-engine-placement`. The
//! credentials Secret must be opted in with the label `ghost.dev/credentials: "true"`, so that a
//! SchemaMigration cannot send an arbitrary Secret of its namespace to a host of its choosing.
//! Pure, so every rule is a unit test.

use super::job::EngineDefaults;
use super::reconcile::Blocker;
use crate::api::SchemaMigration;

/// The label that lets the operator hand a Secret to an engine.
pub const CREDENTIALS_LABEL: &str = "ghost.dev/credentials";

/// The operator's allow-lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnginePolicy {
    /// Images besides the default; an entry ending in `*` allows every image with that prefix
    /// (`registry.example.com/ghost:*`).
    pub images: Vec<String>,
    /// ServiceAccounts besides the default.
    pub service_accounts: Vec<String>,
    /// `spec.engine.nodeSelector` and `tolerations` allowed.
    pub placement: bool,
}

/// Refuses what the policy does not allow, naming the field and the operator's setting.
pub fn check_engine(
    smig: &SchemaMigration,
    defaults: &EngineDefaults,
    policy: &EnginePolicy,
) -> Result<(), Blocker> {
    let Some(engine) = smig.spec.engine.as_ref() else {
        return Ok(());
    };
    let refuse = |message: String| {
        Err(Blocker {
            reason: "EngineNotAllowed",
            message,
        })
    };
    if let Some(image) = engine.image.as_deref().filter(|i| !i.trim().is_empty()) {
        let allowed = image == defaults.image || policy.images.iter().any(|p| matches(p, image));
        if !allowed {
            return refuse(format!(
                "spec.engine.image {image:?} is not allowed: the operator runs {:?} and the \
                 images of its --allowed-engine-images (Helm: engine.allowedImages); remove the \
                 field or ask the operator's administrators to allow it",
                defaults.image
            ));
        }
    }
    if let Some(account) = engine
        .service_account_name
        .as_deref()
        .filter(|a| !a.trim().is_empty())
    {
        let allowed = account == defaults.service_account
            || policy.service_accounts.iter().any(|a| a == account);
        if !allowed {
            return refuse(format!(
                "spec.engine.serviceAccountName {account:?} is not allowed: engine pods run as \
                 {:?} or an account of --allowed-engine-service-accounts (Helm: \
                 engine.allowedServiceAccounts)",
                defaults.service_account
            ));
        }
    }
    if !policy.placement && (!engine.node_selector.is_empty() || !engine.tolerations.is_empty()) {
        return refuse(
            "spec.engine.nodeSelector and tolerations are not allowed: the operator places \
             engine pods itself unless started with --allow-engine-placement (Helm: \
             engine.allowPlacement=true)"
                .to_string(),
        );
    }
    Ok(())
}

fn matches(pattern: &str, image: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => image.starts_with(prefix),
        None => pattern == image,
    }
}

/// Whether `labels` opt a Secret in.
pub fn secret_opted_in(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(CREDENTIALS_LABEL))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> EngineDefaults {
        EngineDefaults {
            image: "ghcr.io/ghost/ghost:0.1.0".into(),
            service_account: "ghost-engine".into(),
            policy: Default::default(),
            start_timeout: std::time::Duration::from_secs(300),
        }
    }

    fn with_engine(engine: &str) -> SchemaMigration {
        serde_yaml::from_str(&format!(
            "apiVersion: ghost.dev/v1alpha1\nkind: SchemaMigration\n\
             metadata: {{name: m, namespace: shop}}\n\
             spec:\n  connection: {{host: db, database: shop, credentialsSecretRef: {{name: s}}}}\n  \
             table: users\n  alter: ADD COLUMN a INT\n  engine: {engine}\n"
        ))
        .expect("manifest")
    }

    fn reason(result: Result<(), Blocker>) -> Option<String> {
        result.err().map(|b| b.message)
    }

    #[test]
    fn the_defaults_pass_and_nothing_else() {
        let p = EnginePolicy::default();
        assert!(check_engine(&with_engine("{}"), &defaults(), &p).is_ok());
        assert!(
            check_engine(
                &with_engine(
                    "{image: ghcr.io/ghost/ghost:0.1.0, serviceAccountName: ghost-engine}"
                ),
                &defaults(),
                &p
            )
            .is_ok()
        );
        let image = reason(check_engine(
            &with_engine("{image: evil/miner:latest}"),
            &defaults(),
            &p,
        ));
        assert!(image.is_some_and(
            |m| m.contains("spec.engine.image") && m.contains("--allowed-engine-images")
        ));
        let account = reason(check_engine(
            &with_engine("{serviceAccountName: cluster-admin}"),
            &defaults(),
            &p,
        ));
        assert!(account.is_some_and(|m| m.contains("serviceAccountName")));
        let placed = reason(check_engine(
            &with_engine("{tolerations: [{operator: Exists}]}"),
            &defaults(),
            &p,
        ));
        assert!(placed.is_some_and(|m| m.contains("--allow-engine-placement")));
        let selected = check_engine(
            &with_engine("{nodeSelector: {node-role.kubernetes.io/control-plane: ''}}"),
            &defaults(),
            &p,
        );
        assert!(selected.is_err());
    }

    #[test]
    fn allow_lists_open_what_they_name() {
        let p = EnginePolicy {
            images: vec!["registry.example.com/ghost:*".into(), "ghost:pinned".into()],
            service_accounts: vec!["db-migrator".into()],
            placement: true,
        };
        for engine in [
            "{image: registry.example.com/ghost:1.2}",
            "{image: ghost:pinned}",
            "{serviceAccountName: db-migrator}",
            "{tolerations: [{key: dedicated, operator: Equal, value: db}]}",
        ] {
            assert!(
                check_engine(&with_engine(engine), &defaults(), &p).is_ok(),
                "{engine}"
            );
        }
        assert!(
            check_engine(
                &with_engine("{image: registry.example.com/other:1}"),
                &defaults(),
                &p
            )
            .is_err()
        );
        assert!(check_engine(&with_engine("{image: ghost:pinned2}"), &defaults(), &p).is_err());
    }

    #[test]
    fn secrets_opt_in_with_the_label() {
        let mut labels = std::collections::BTreeMap::new();
        assert!(!secret_opted_in(None));
        assert!(!secret_opted_in(Some(&labels)));
        labels.insert(CREDENTIALS_LABEL.to_string(), "false".to_string());
        assert!(!secret_opted_in(Some(&labels)));
        labels.insert(CREDENTIALS_LABEL.to_string(), "true".to_string());
        assert!(secret_opted_in(Some(&labels)));
    }
}
