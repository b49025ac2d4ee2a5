//! The CustomResourceDefinition as YAML (`ghost crd`), and the test that keeps the committed copy
//! in `crds/` in step with the code.

use kube::CustomResourceExt;

use super::types::SchemaMigration;

/// Where the generated CRD is committed, relative to the repository root.
pub const CRD_PATH: &str = "crds/schemamigrations.ghost.dev.yaml";

/// The SchemaMigration CRD, as `kubectl apply` takes it.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&SchemaMigration::crd()).expect("the CRD serializes to YAML")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn crd_is_committed() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CRD_PATH);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        // Trailing whitespace is not drift: `print!` and `println!` may both have written it.
        assert!(
            committed.trim_end() == crd_yaml().trim_end(),
            "{} is missing or differs from the code: run `cargo run -- crd > {CRD_PATH}`",
            path.display()
        );
    }

    #[test]
    fn chart_and_kustomize_ship_the_same_crd() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for copy in [
            "charts/ghost/crds/schemamigrations.ghost.dev.yaml",
            "config/crd/schemamigrations.ghost.dev.yaml",
        ] {
            let shipped = std::fs::read_to_string(root.join(copy)).unwrap_or_default();
            assert!(
                shipped.trim_end() == crd_yaml().trim_end(),
                "{copy} is missing or differs from the code: run scripts/sync-chart-crd"
            );
        }
    }

    fn crd_json() -> Value {
        serde_json::to_value(SchemaMigration::crd()).unwrap()
    }

    fn schema() -> Value {
        crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    fn rules(schema: &Value) -> Vec<String> {
        schema["x-kubernetes-validations"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| r["rule"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn names_scope_and_subresources() {
        let crd = crd_json();
        assert_eq!(crd["metadata"]["name"], "schemamigrations.ghost.dev");
        let spec = &crd["spec"];
        assert_eq!(spec["group"], "ghost.dev");
        assert_eq!(spec["scope"], "Namespaced");
        assert_eq!(spec["names"]["kind"], "SchemaMigration");
        assert_eq!(spec["names"]["plural"], "schemamigrations");
        assert_eq!(spec["names"]["shortNames"], serde_json::json!(["smig"]));
        assert_eq!(spec["names"]["categories"], serde_json::json!(["ghost"]));
        let version = &spec["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(version["served"], true);
        assert_eq!(version["storage"], true);
        assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    }

    #[test]
    fn printer_columns() {
        let crd = crd_json();
        let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .clone();
        let names: Vec<&str> = columns
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Table",
                "Phase",
                "Progress",
                "Lag",
                "ETA",
                "Throttled",
                "Heartbeat",
                "Age"
            ]
        );
        let path = |name: &str| {
            columns.iter().find(|c| c["name"] == name).unwrap()["jsonPath"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(path("Table"), ".spec.table");
        assert_eq!(path("Progress"), ".status.progress.percent");
        assert_eq!(path("Lag"), ".status.progress.replicaLagMillis");
        assert_eq!(path("ETA"), ".status.progress.etaSeconds");
        assert_eq!(path("Age"), ".metadata.creationTimestamp");
    }

    #[test]
    fn spec_schema_defaults_ranges_and_rules() {
        let schema = schema();
        let spec = &schema["properties"]["spec"];
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for field in ["connection", "table"] {
            assert!(
                required.contains(&field),
                "{field} is required: {required:?}"
            );
        }
        // alter may be left out only with revert: a rule on spec says so.
        assert!(!required.contains(&"alter"), "{required:?}");
        let spec_rules = rules(spec);
        assert!(
            spec_rules.iter().any(|r| r.contains("has(self.revert)")),
            "{spec_rules:?}"
        );
        let props = &spec["properties"];
        for field in ["connection", "table", "alter", "execute", "revert"] {
            assert!(
                rules(&props[field]).contains(&"self == oldSelf".to_string()),
                "{field} is immutable"
            );
        }
        let alter_rules = rules(&props["alter"]);
        assert!(
            alter_rules.iter().any(|r| r.contains("rename")),
            "{alter_rules:?}"
        );
        assert!(rules(&props["copy"]).is_empty(), "controls stay mutable");
        assert_eq!(props["execute"]["default"], true);

        let connection = &props["connection"]["properties"];
        assert_eq!(connection["port"]["default"], 3306);
        assert_eq!(connection["port"]["minimum"].as_f64(), Some(1.0));
        assert_eq!(connection["port"]["maximum"].as_f64(), Some(65535.0));
        let secret = &connection["credentialsSecretRef"]["properties"];
        assert_eq!(secret["usernameKey"]["default"], "username");
        assert_eq!(secret["passwordKey"]["default"], "password");
        assert!(!rules(&connection["tls"]).is_empty());

        let copy = &props["copy"]["properties"];
        assert_eq!(copy["chunkSize"]["minimum"].as_f64(), Some(10.0));
        assert_eq!(copy["chunkSize"]["maximum"].as_f64(), Some(100000.0));
        assert_eq!(copy["dmlBatchSize"]["minimum"].as_f64(), Some(1.0));
        assert_eq!(copy["dmlBatchSize"]["maximum"].as_f64(), Some(1000.0));
        assert_eq!(copy["niceRatio"]["minimum"].as_f64(), Some(0.0));
        assert_eq!(copy["niceRatio"]["maximum"].as_f64(), Some(100.0));

        let throttle = &props["throttle"];
        assert_eq!(
            throttle["properties"]["maxLagMillis"]["minimum"].as_f64(),
            Some(100.0)
        );
        assert!(throttle["properties"]["httpURL"].is_object());
        assert!(!rules(throttle).is_empty());

        let cut_over = &props["cutOver"]["properties"];
        assert_eq!(cut_over["mode"]["default"], "atomic");
        assert_eq!(
            cut_over["mode"]["enum"],
            serde_json::json!(["atomic", "two-step"])
        );
        assert_eq!(
            cut_over["lockTimeoutSeconds"]["minimum"].as_f64(),
            Some(1.0)
        );
        assert_eq!(
            cut_over["lockTimeoutSeconds"]["maximum"].as_f64(),
            Some(10.0)
        );
        assert_eq!(props["verify"]["properties"]["checksum"]["default"], true);
    }

    #[test]
    fn status_schema_lists_are_maps() {
        let schema = schema();
        let status = &schema["properties"]["status"]["properties"];
        assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
        assert_eq!(
            status["conditions"]["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
        assert_eq!(status["effectiveControls"]["x-kubernetes-list-type"], "map");
        assert_eq!(
            status["effectiveControls"]["x-kubernetes-list-map-keys"],
            serde_json::json!(["name"])
        );
        let phases = status["phase"]["enum"].as_array().unwrap();
        assert!(phases.contains(&Value::from("Queued")));
        assert!(phases.contains(&Value::from("CuttingOver")));
        let progress = &status["progress"]["properties"];
        for field in [
            "percent",
            "rowsCopied",
            "rowsEstimate",
            "rowsPerSecond",
            "etaSeconds",
            "backlog",
            "heartbeatLagMillis",
            "replicaLagMillis",
            "throttle",
            "cutOver",
            "checkpointTime",
        ] {
            assert!(progress[field].is_object(), "status.progress.{field}");
        }
    }

    #[test]
    fn yaml_is_a_kubernetes_manifest() {
        let yaml = crd_yaml();
        assert!(
            yaml.starts_with("apiVersion: apiextensions.k8s.io/v1\n"),
            "{yaml}"
        );
        assert!(yaml.contains("kind: CustomResourceDefinition"));
    }
}
