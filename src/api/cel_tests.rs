//! The CRD's CEL rules, evaluated client-side the way the API server evaluates them on create
//! (`validate_cel`) and on update (`validate_cel_update`, which also runs `oldSelf` rules).

use std::collections::BTreeMap;

use kube::core::cel::{validate_cel, validate_cel_update};

use super::types::{SchemaMigration, SecretKeyRef, TlsMode, TlsSpec, WebhookSpec};

fn sample() -> SchemaMigration {
    serde_yaml::from_str(
        r#"
apiVersion: ghost.dev/v1alpha1
kind: SchemaMigration
metadata: {name: add-age, namespace: shop}
spec:
  connection:
    host: mariadb-0.mariadb
    database: shop
    credentialsSecretRef: {name: shop-db}
    controlReplicas: ["mariadb-1.mariadb:3306"]
  table: users
  alter: ADD COLUMN age INT NOT NULL DEFAULT 0
  copy: {chunkSize: 1000}
  throttle: {maxLagMillis: 1500, maxLoad: {Threads_running: 25}, criticalLoad: {Threads_running: 100}}
  cutOver: {postpone: true}
"#,
    )
    .unwrap()
}

/// The create-time errors, as text ("" when valid).
fn create_errors(smig: &SchemaMigration) -> String {
    match validate_cel(smig) {
        Ok(()) => String::new(),
        Err(errors) => format!("{errors:?}"),
    }
}

/// The update-time errors, as text ("" when valid).
fn update_errors(new: &SchemaMigration, old: &SchemaMigration) -> String {
    match validate_cel_update(new, old) {
        Ok(()) => String::new(),
        Err(errors) => format!("{errors:?}"),
    }
}

#[test]
fn sample_is_valid_and_reapplying_it_is_a_no_op() {
    let smig = sample();
    assert_eq!(create_errors(&smig), "");
    assert_eq!(update_errors(&smig, &smig), "");
}

/// An expected error message and the edit that must cause it.
type Edit = (&'static str, fn(&mut SchemaMigration));

#[test]
fn the_change_itself_is_immutable() {
    let old = sample();
    let edits: [Edit; 5] = [
        ("connection is immutable", |s| {
            s.spec.connection.host = "other".into()
        }),
        ("connection is immutable", |s| s.spec.connection.port = 3307),
        ("table is immutable", |s| s.spec.table = "accounts".into()),
        ("alter is immutable", |s| {
            s.spec.alter = "ADD COLUMN b INT".into()
        }),
        ("execute is immutable", |s| s.spec.execute = false),
    ];
    for (message, edit) in edits {
        let mut new = old.clone();
        edit(&mut new);
        let errors = update_errors(&new, &old);
        assert!(errors.contains(message), "{message}: {errors}");
        if message.starts_with("connection") {
            assert!(errors.contains("create a new SchemaMigration"), "{errors}");
        }
    }
}

#[test]
fn controls_stay_mutable() {
    let old = sample();
    let mut new = old.clone();
    new.spec.copy.as_mut().unwrap().chunk_size = Some(5000);
    new.spec.throttle.as_mut().unwrap().paused = Some(true);
    new.spec.throttle.as_mut().unwrap().max_lag_millis = Some(500);
    new.spec.cut_over.as_mut().unwrap().postpone = Some(false);
    assert_eq!(update_errors(&new, &old), "");
}

#[test]
fn alter_must_not_be_blank() {
    let mut smig = sample();
    smig.spec.alter = "   ".into();
    assert!(create_errors(&smig).contains("alter must not be empty"));
}

#[test]
fn alter_must_not_rename_the_table() {
    for alter in [
        "RENAME TO users_v2",
        "rename as users_v2",
        "ADD COLUMN a INT,\n  RENAME\tTO users_v2",
    ] {
        let mut smig = sample();
        smig.spec.alter = alter.into();
        let errors = create_errors(&smig);
        assert!(
            errors.contains("must not rename the table"),
            "{alter}: {errors}"
        );
    }
    for alter in [
        "RENAME COLUMN a TO b",
        "RENAME INDEX i TO j",
        "ADD COLUMN renamed_to INT",
    ] {
        let mut smig = sample();
        smig.spec.alter = alter.into();
        assert_eq!(create_errors(&smig), "", "{alter}");
    }
}

#[test]
fn a_revert_has_no_alter_and_stays_a_revert() {
    use super::types::RevertSpec;
    let mut revert = sample();
    revert.spec.revert = Some(RevertSpec {
        old_table: "_users_20261122064721_del".into(),
    });
    assert!(create_errors(&revert).contains("revert and alter exclude each other"));
    revert.spec.alter = String::new();
    assert_eq!(create_errors(&revert), "");
    let mut plain = sample();
    plain.spec.alter = " ".into();
    assert!(create_errors(&plain).contains("alter must not be empty"));
    // Turning a migration into a revert, or back, is refused.
    let mut turned = revert.clone();
    turned.spec.revert = None;
    assert!(update_errors(&turned, &revert).contains("revert is immutable"));
}

#[test]
fn ca_bundle_needs_tls_enabled() {
    let mut smig = sample();
    smig.spec.connection.tls = Some(TlsSpec {
        mode: TlsMode::Disabled,
        ca_secret_ref: Some(SecretKeyRef {
            name: "db-ca".into(),
            key: "ca.crt".into(),
        }),
        client_cert_secret_ref: None,
    });
    assert!(create_errors(&smig).contains("caSecretRef is set but tls.mode is disabled"));
    smig.spec.connection.tls.as_mut().unwrap().mode = TlsMode::VerifyCa;
    assert_eq!(create_errors(&smig), "");
}

#[test]
fn client_certificate_needs_tls_enabled() {
    let mut smig = sample();
    smig.spec.connection.tls = Some(TlsSpec {
        mode: TlsMode::Disabled,
        ca_secret_ref: None,
        client_cert_secret_ref: Some(crate::api::types::SecretRef {
            name: "db-client".into(),
        }),
    });
    assert!(create_errors(&smig).contains("clientCertSecretRef is set but tls.mode is disabled"));
    smig.spec.connection.tls.as_mut().unwrap().mode = TlsMode::Required;
    assert_eq!(create_errors(&smig), "");
}

#[test]
fn critical_load_must_exceed_max_load() {
    let mut smig = sample();
    let throttle = smig.spec.throttle.as_mut().unwrap();
    throttle.critical_load = BTreeMap::from([("Threads_running".into(), 25)]);
    assert!(create_errors(&smig).contains("criticalLoad threshold must be above"));

    let throttle = smig.spec.throttle.as_mut().unwrap();
    throttle.critical_load = BTreeMap::from([("Threads_connected".into(), 10)]);
    assert_eq!(create_errors(&smig), "", "other variables are independent");
}

#[test]
fn webhook_urls_are_http() {
    let mut smig = sample();
    smig.spec.hooks = Some(super::types::HooksSpec {
        webhooks: vec![WebhookSpec {
            url: "ftp://hooks.example/x".into(),
            events: Vec::new(),
            secret_ref: None,
        }],
    });
    assert!(create_errors(&smig).contains("http:// or https://"));
    smig.spec.hooks.as_mut().unwrap().webhooks[0].url = "https://hooks.example/x".into();
    assert_eq!(create_errors(&smig), "");
}
