//! The command a person runs next, for every Warning the operator publishes and every message
//! that stops a migration: a Warning that only says what went wrong leaves the reader to find
//! the way out. Pure, so the table below is tested whole.

use kube::ResourceExt;

use super::job::migration_selector;
use super::reconcile::truncate;

use crate::api::SchemaMigration;
use crate::engine::names::TableNames;
use crate::sql::quote_ident;

/// The reasons of the Warning Events the operator publishes besides a blocked start's
/// (`queue::BLOCKED_REASONS`); a test holds the code to these two lists.
pub const EVENT_WARNINGS: &[&str] = &[
    "Failed",
    "Cancelled",
    "EngineNotStarting",
    "InvalidAnnotation",
    "CleanupSkipped",
    "CleanupAbandoned",
    "CleanupFailed",
];

/// What to run after a Warning of `reason` about `smig`.
pub fn next_command(reason: &str, smig: &SchemaMigration) -> Option<String> {
    let name = smig.name_any();
    let namespace = smig.namespace().unwrap_or_default();
    let at = format!("{name} -n {namespace}");
    let secret = &smig.spec.connection.credentials_secret_ref;
    Some(match reason {
        "Failed" => format!(
            "`kubectl ghost logs {at}` shows why; fix the cause and apply the manifest again \
             under a new name (a finished SchemaMigration never runs again)"
        ),
        "Cancelled" => format!(
            "`kubectl ghost status {at}`; to run it again, apply the manifest under a new name"
        ),
        "EngineNotStarting" => format!(
            "`kubectl -n {namespace} describe pods -l {}`",
            migration_selector(&name)
        ),
        "InvalidAnnotation" => format!(
            "`kubectl -n {namespace} annotate smig {name} --overwrite KEY=VALUE` with a valid \
             value, or `kubectl -n {namespace} annotate smig {name} KEY-` to remove it"
        ),
        "CleanupSkipped" | "CleanupAbandoned" => format!(
            "run `{}` on {}:{} when no migration of the table runs",
            drop_statement(smig),
            smig.spec.connection.host,
            smig.spec.connection.port
        ),
        "CleanupFailed" => format!(
            "`kubectl -n {namespace} annotate smig {name} {}=true` to stop retrying and drop the \
             tables by hand",
            super::finalizer::SKIP_CLEANUP
        ),
        "SecretNotFound" => format!(
            "`kubectl -n {namespace} create secret generic {} --from-literal={}=... \
             --from-literal={}=...`",
            secret.name, secret.username_key, secret.password_key
        ),
        "SecretKeyMissing" => format!(
            "`kubectl -n {namespace} edit secret {}` to add the key, or `kubectl -n {namespace} \
             edit smig {name}` to name the keys it has",
            secret.name
        ),
        "SecretNotOptedIn" => format!(
            "`kubectl -n {namespace} label secret {} {}=true`",
            secret.name,
            super::policy::CREDENTIALS_LABEL
        ),
        "EngineNotAllowed" => format!(
            "`kubectl -n {namespace} edit smig {name}` to change spec.engine, or allow it in \
             the operator's Helm values"
        ),
        "JobNameTaken" => format!(
            "`kubectl -n {namespace} get job {} -o yaml` to see whose it is; delete it if it is \
             stale",
            super::job::job_name(&name)
        ),
        "NamespaceNotEnabled" => format!(
            "`helm upgrade RELEASE CHART --reuse-values --set-json \
             'engine.namespaces=[\"{namespace}\"]'` (with the namespaces already enabled)"
        ),
        _ => return None,
    })
}

/// `DROP TABLE IF EXISTS` of every table ghost may have left for this migration.
fn drop_statement(smig: &SchemaMigration) -> String {
    let names = TableNames::new(&smig.spec.table, None, None);
    let database = quote_ident(&smig.spec.connection.database);
    let tables: Vec<String> = [&names.ghost, &names.changelog, &names.checkpoint]
        .iter()
        .map(|t| format!("{database}.{}", quote_ident(t)))
        .collect();
    format!("DROP TABLE IF EXISTS {}", tables.join(", "))
}

/// `message`, followed by the next command unless it already names one.
pub fn with_next_step(message: &str, reason: &str, smig: &SchemaMigration) -> String {
    with_next_step_within(message, reason, smig, usize::MAX)
}

/// `with_next_step` within `max` bytes: the message is cut, never the command after it.
pub fn with_next_step_within(
    message: &str,
    reason: &str,
    smig: &SchemaMigration,
    max: usize,
) -> String {
    match next_command(reason, smig).filter(|_| !names_a_command(message)) {
        Some(command) => {
            let suffix = format!(". Next: {command}");
            let room = max.saturating_sub(suffix.len());
            let base = truncate(message.trim_end_matches('.'), room);
            truncate(&format!("{base}{suffix}"), max)
        }
        None => truncate(message, max),
    }
}

fn names_a_command(message: &str) -> bool {
    message.contains("kubectl ") || message.contains("DROP TABLE") || message.contains("helm ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::queue::BLOCKED_REASONS;

    fn is_warning_reason(reason: &str) -> bool {
        EVENT_WARNINGS.contains(&reason) || BLOCKED_REASONS.contains(&reason)
    }

    fn smig() -> SchemaMigration {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ghost.dev/v1alpha1",
            "kind": "SchemaMigration",
            "metadata": {"name": "add-age", "namespace": "shop"},
            "spec": {"connection": {"host": "db", "port": 3306, "database": "shop",
                                    "credentialsSecretRef": {"name": "shop-db"}},
                     "table": "users", "alter": "ADD COLUMN age INT"}
        }))
        .unwrap()
    }

    #[test]
    fn every_warning_reason_has_a_command() {
        for reason in EVENT_WARNINGS.iter().chain(BLOCKED_REASONS) {
            let message = with_next_step("something went wrong", reason, &smig());
            assert!(names_a_command(&message), "{reason}: {message}");
        }
        assert_eq!(next_command("Copying", &smig()), None);
    }

    #[test]
    fn a_long_message_is_cut_before_its_command() {
        let long = "x".repeat(5000);
        let note = with_next_step_within(&long, "Failed", &smig(), 1000);
        assert!(note.len() <= 1000, "{}", note.len());
        assert!(
            note.ends_with("(a finished SchemaMigration never runs again)"),
            "{note}"
        );
        assert!(
            note.contains("…. Next: `kubectl ghost logs add-age -n shop`"),
            "{note}"
        );
    }

    #[test]
    fn a_message_with_a_command_is_left_alone() {
        let message = "Secret x not found: kubectl -n shop create secret generic x";
        assert_eq!(with_next_step(message, "SecretNotFound", &smig()), message);
        assert_eq!(
            with_next_step("row copy failed: lost connection.", "Failed", &smig()),
            "row copy failed: lost connection. Next: `kubectl ghost logs add-age -n shop` \
             shows why; fix the cause and apply the manifest again under a new name (a \
             finished SchemaMigration never runs again)"
        );
        let cleanup = with_next_step("gave up", "CleanupAbandoned", &smig());
        assert!(
            cleanup.contains(
                "DROP TABLE IF EXISTS `shop`.`_users_gho`, `shop`.`_users_ghc`, `shop`.`_users_ghk`"
            ),
            "{cleanup}"
        );
    }

    /// Each Warning the code can publish, and each reason a start can be blocked with, is in
    /// one of the lists (and so gets a command).
    #[test]
    fn the_code_uses_no_other_warning_reason() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/operator");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for marker in ["PlannedEvent::warning(\"", "reason: \""] {
                for piece in text.split(marker).skip(1) {
                    let reason = piece.split('"').next().unwrap_or_default();
                    // Reasons are CamelCase words; other `reason:` fields are sentences.
                    if reason.contains(' ') {
                        continue;
                    }
                    found.push((path.display().to_string(), reason.to_string()));
                }
            }
        }
        assert!(
            found.iter().any(|(_, r)| r == "SecretNotFound"),
            "{found:?}"
        );
        for (file, reason) in &found {
            assert!(
                is_warning_reason(reason),
                "{file}: Warning reason {reason} is in neither EVENT_WARNINGS nor BLOCKED_REASONS"
            );
        }
    }
}
