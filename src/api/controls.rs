//! Spec fields and annotations → the engine's `Controls` (DESIGN.md §3, "Controls").
//!
//! Precedence per control: annotation (when present and valid) > spec field > engine default.
//! The spec is what GitOps declares; annotations are the operator's hand at 3 a.m. An invalid
//! annotation is reported and not applied, so a typo never changes a running migration.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::engine::controls::{Controls, parse_load_thresholds};

use super::types::{ControlSource, SchemaMigrationSpec, ValueSource};

/// Every annotation of ghost's starts with this.
pub const ANNOTATION_PREFIX: &str = "ghost/";
pub const THROTTLE: &str = "ghost/throttle";
pub const POSTPONE_CUT_OVER: &str = "ghost/postpone-cut-over";
pub const PANIC: &str = "ghost/panic";
pub const CHUNK_SIZE: &str = "ghost/chunk-size";
pub const DML_BATCH_SIZE: &str = "ghost/dml-batch-size";
pub const NICE_RATIO: &str = "ghost/nice-ratio";
pub const MAX_LAG_MILLIS: &str = "ghost/max-lag-millis";
pub const MAX_LOAD: &str = "ghost/max-load";
pub const CRITICAL_LOAD: &str = "ghost/critical-load";

/// The control annotations; any other `ghost/` key is reported as unknown (a likely typo).
pub const CONTROL_ANNOTATIONS: &[&str] = &[
    THROTTLE,
    POSTPONE_CUT_OVER,
    PANIC,
    CHUNK_SIZE,
    DML_BATCH_SIZE,
    NICE_RATIO,
    MAX_LAG_MILLIS,
    MAX_LOAD,
    CRITICAL_LOAD,
];

pub const CHUNK_SIZE_RANGE: (u64, u64) = (10, 100_000);
pub const DML_BATCH_SIZE_RANGE: (u64, u64) = (1, 1000);
pub const NICE_RATIO_RANGE: (f64, f64) = (0.0, 100.0);
pub const MIN_MAX_LAG_MILLIS: u64 = 100;

/// An annotation whose value was refused; the spec or default value stays in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidControl {
    pub annotation: String,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for InvalidControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} ignored: {}",
            self.annotation, self.value, self.reason
        )
    }
}

/// The controls in force for `spec` and the resource's `annotations`, each control's value and
/// source (for `.status.effectiveControls`), and the annotations that were refused.
pub fn effective_controls(
    spec: &SchemaMigrationSpec,
    annotations: &BTreeMap<String, String>,
) -> (Controls, Vec<ControlSource>, Vec<InvalidControl>) {
    let defaults = Controls::default();
    let copy = spec.copy.as_ref();
    let throttle = spec.throttle.as_ref();
    let cut_over = spec.cut_over.as_ref();
    let mut r = Resolver {
        annotations,
        sources: Vec::new(),
        invalid: Vec::new(),
    };

    // Spec values are clamped as well as range-checked by the CRD: an object admitted under an
    // older CRD, or built in code, must still give the engine values inside its invariants.
    let throttle_on = r.resolve(
        "throttle",
        THROTTLE,
        throttle.and_then(|t| t.paused),
        defaults.throttle,
        parse_bool,
        bool::to_string,
    );
    let postpone = r.resolve(
        "postponeCutOver",
        POSTPONE_CUT_OVER,
        cut_over.and_then(|c| c.postpone),
        defaults.postpone_cut_over,
        parse_bool,
        bool::to_string,
    );
    // No spec field: aborting is an imperative act, not declared state.
    let panic = r.resolve(
        "panic",
        PANIC,
        None,
        defaults.panic,
        parse_bool,
        bool::to_string,
    );
    let chunk_size = r.resolve(
        "chunkSize",
        CHUNK_SIZE,
        copy.and_then(|c| c.chunk_size)
            .map(|v| clamp_u64(v, CHUNK_SIZE_RANGE)),
        defaults.chunk_size,
        |s| parse_ranged(s, CHUNK_SIZE_RANGE),
        u64::to_string,
    );
    let dml_batch_size = r.resolve(
        "dmlBatchSize",
        DML_BATCH_SIZE,
        copy.and_then(|c| c.dml_batch_size)
            .map(|v| clamp_u64(v, DML_BATCH_SIZE_RANGE)),
        defaults.dml_batch_size as u64,
        |s| parse_ranged(s, DML_BATCH_SIZE_RANGE),
        u64::to_string,
    );
    let nice_ratio = r.resolve(
        "niceRatio",
        NICE_RATIO,
        copy.and_then(|c| c.nice_ratio)
            .filter(|v| v.is_finite())
            .map(|v| v.clamp(NICE_RATIO_RANGE.0, NICE_RATIO_RANGE.1)),
        defaults.nice_ratio,
        parse_nice_ratio,
        f64::to_string,
    );
    let max_lag_millis = r.resolve(
        "maxLagMillis",
        MAX_LAG_MILLIS,
        throttle
            .and_then(|t| t.max_lag_millis)
            .map(|v| clamp_u64(v, (MIN_MAX_LAG_MILLIS, u64::MAX))),
        duration_millis(defaults.max_lag),
        |s| parse_ranged(s, (MIN_MAX_LAG_MILLIS, u64::MAX)),
        u64::to_string,
    );
    // An empty spec map means "no thresholds", the same as the default, so it counts as unset.
    let max_load = r.resolve(
        "maxLoad",
        MAX_LOAD,
        throttle
            .map(|t| load_from_map(&t.max_load))
            .filter(|v| !v.is_empty()),
        defaults.max_load,
        parse_load_thresholds,
        |v| format_load(v),
    );
    let critical_load = r.resolve(
        "criticalLoad",
        CRITICAL_LOAD,
        throttle
            .map(|t| load_from_map(&t.critical_load))
            .filter(|v| !v.is_empty()),
        defaults.critical_load,
        parse_load_thresholds,
        |v| format_load(v),
    );

    for (key, value) in annotations {
        if key.starts_with(ANNOTATION_PREFIX) && !CONTROL_ANNOTATIONS.contains(&key.as_str()) {
            r.invalid.push(InvalidControl {
                annotation: key.clone(),
                value: value.clone(),
                reason: format!(
                    "unknown ghost annotation; known ones are {}",
                    CONTROL_ANNOTATIONS.join(", ")
                ),
            });
        }
    }

    let controls = Controls {
        throttle: throttle_on,
        postpone_cut_over: postpone,
        // gh-ost's "cut over now" overrides a postpone flag file; here the postpone control
        // itself is the switch, so nothing needs overriding.
        cut_over_requested: false,
        panic,
        chunk_size,
        dml_batch_size: usize::try_from(dml_batch_size).unwrap_or(usize::MAX),
        nice_ratio,
        max_lag: Duration::from_millis(max_lag_millis),
        max_load,
        critical_load,
        throttle_query: throttle
            .and_then(|t| t.query.clone())
            .filter(|q| !q.trim().is_empty()),
        throttle_http: throttle
            .and_then(|t| t.http_url.clone())
            .filter(|u| !u.trim().is_empty()),
        throttle_control_replicas: spec.connection.control_replicas.clone(),
    };
    (controls, r.sources, r.invalid)
}

struct Resolver<'a> {
    annotations: &'a BTreeMap<String, String>,
    sources: Vec<ControlSource>,
    invalid: Vec<InvalidControl>,
}

impl Resolver<'_> {
    /// One control: the valid annotation, else the spec value, else the default; records the
    /// value and source, or the refused annotation.
    fn resolve<T>(
        &mut self,
        name: &str,
        annotation: &str,
        spec: Option<T>,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
        show: impl Fn(&T) -> String,
    ) -> T {
        let from_annotation =
            self.annotations
                .get(annotation)
                .and_then(|raw| match parse(raw.trim()) {
                    Ok(value) => Some(value),
                    Err(reason) => {
                        self.invalid.push(InvalidControl {
                            annotation: annotation.to_string(),
                            value: raw.clone(),
                            reason,
                        });
                        None
                    }
                });
        let (value, source) = match (from_annotation, spec) {
            (Some(value), _) => (value, ValueSource::Annotation),
            (None, Some(value)) => (value, ValueSource::Spec),
            (None, None) => (default, ValueSource::Default),
        };
        self.sources.push(ControlSource {
            name: name.to_string(),
            value: show(&value),
            source,
        });
        value
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    if s.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if s.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err("must be \"true\" or \"false\"".into())
    }
}

fn parse_ranged(s: &str, (min, max): (u64, u64)) -> Result<u64, String> {
    let range = if max == u64::MAX {
        format!("at least {min}")
    } else {
        format!("between {min} and {max}")
    };
    let value = s
        .parse::<u64>()
        .map_err(|_| format!("must be a whole number {range}"))?;
    if value < min || value > max {
        return Err(format!("{value} is out of range: must be {range}"));
    }
    Ok(value)
}

fn parse_nice_ratio(s: &str) -> Result<f64, String> {
    let (min, max) = NICE_RATIO_RANGE;
    let value = s
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("must be a number between {min} and {max}"))?;
    if !(min..=max).contains(&value) {
        return Err(format!(
            "{value} is out of range: must be between {min} and {max}"
        ));
    }
    Ok(value)
}

fn clamp_u64(v: i64, (min, max): (u64, u64)) -> u64 {
    u64::try_from(v).unwrap_or(0).clamp(min, max)
}

fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn load_from_map(map: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    map.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

/// gh-ost's `Threads_running=25,Threads_connected=500` form, as the annotations take it.
fn format_load(load: &[(String, u64)]) -> String {
    load.iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{
        ConnectionSpec, CopySpec, CredentialsSecretRef, CutOverSpec, ThrottleSpec,
    };

    fn spec() -> SchemaMigrationSpec {
        SchemaMigrationSpec {
            connection: ConnectionSpec {
                host: "db".into(),
                port: 3306,
                database: "shop".into(),
                credentials_secret_ref: CredentialsSecretRef {
                    name: "creds".into(),
                    username_key: "username".into(),
                    password_key: "password".into(),
                },
                tls: None,
                inspect_host: None,
                control_replicas: vec!["replica-1:3306".into()],
            },
            table: "users".into(),
            alter: "ADD COLUMN age INT".into(),
            revert: None,
            execute: true,
            copy: None,
            throttle: None,
            cut_over: None,
            verify: None,
            hooks: None,
            engine: None,
        }
    }

    fn spec_with_everything() -> SchemaMigrationSpec {
        SchemaMigrationSpec {
            copy: Some(CopySpec {
                chunk_size: Some(500),
                dml_batch_size: Some(50),
                nice_ratio: Some(0.5),
                ..CopySpec::default()
            }),
            throttle: Some(ThrottleSpec {
                paused: Some(true),
                max_lag_millis: Some(3000),
                max_load: BTreeMap::from([("Threads_running".into(), 25)]),
                critical_load: BTreeMap::from([("Threads_running".into(), 200)]),
                query: Some("SELECT 0".into()),
                http_url: Some("http://gate".into()),
            }),
            cut_over: Some(CutOverSpec {
                postpone: Some(true),
                ..CutOverSpec::default()
            }),
            ..spec()
        }
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn source_of(sources: &[ControlSource], name: &str) -> (String, ValueSource) {
        let s = sources
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no source for {name}"));
        (s.value.clone(), s.source)
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let (controls, sources, invalid) = effective_controls(&spec(), &BTreeMap::new());
        let expected = Controls {
            throttle_control_replicas: vec!["replica-1:3306".into()],
            ..Controls::default()
        };
        assert_eq!(controls, expected);
        assert!(invalid.is_empty());
        assert_eq!(sources.len(), CONTROL_ANNOTATIONS.len());
        assert!(sources.iter().all(|s| s.source == ValueSource::Default));
        assert_eq!(
            source_of(&sources, "chunkSize"),
            ("1000".into(), ValueSource::Default)
        );
        assert_eq!(
            source_of(&sources, "maxLagMillis"),
            ("1500".into(), ValueSource::Default)
        );
        assert_eq!(
            source_of(&sources, "niceRatio"),
            ("0".into(), ValueSource::Default)
        );
        assert_eq!(
            source_of(&sources, "maxLoad"),
            (String::new(), ValueSource::Default)
        );
    }

    #[test]
    fn spec_wins_over_defaults() {
        let (controls, sources, invalid) =
            effective_controls(&spec_with_everything(), &BTreeMap::new());
        assert!(invalid.is_empty());
        assert!(controls.throttle);
        assert!(controls.postpone_cut_over);
        assert!(!controls.panic);
        assert_eq!(controls.chunk_size, 500);
        assert_eq!(controls.dml_batch_size, 50);
        assert_eq!(controls.nice_ratio, 0.5);
        assert_eq!(controls.max_lag, Duration::from_millis(3000));
        assert_eq!(controls.max_load, vec![("Threads_running".into(), 25)]);
        assert_eq!(
            controls.critical_load,
            vec![("Threads_running".into(), 200)]
        );
        assert_eq!(controls.throttle_query.as_deref(), Some("SELECT 0"));
        assert_eq!(controls.throttle_http.as_deref(), Some("http://gate"));
        for name in [
            "throttle",
            "postponeCutOver",
            "chunkSize",
            "dmlBatchSize",
            "niceRatio",
            "maxLagMillis",
            "maxLoad",
            "criticalLoad",
        ] {
            assert_eq!(source_of(&sources, name).1, ValueSource::Spec, "{name}");
        }
        assert_eq!(source_of(&sources, "panic").1, ValueSource::Default);
        assert_eq!(
            source_of(&sources, "maxLoad").0,
            "Threads_running=25".to_string()
        );
    }

    #[test]
    fn annotations_win_over_spec() {
        let ann = annotations(&[
            (THROTTLE, "false"),
            (POSTPONE_CUT_OVER, "FALSE"),
            (PANIC, "true"),
            (CHUNK_SIZE, " 2000 "),
            (DML_BATCH_SIZE, "100"),
            (NICE_RATIO, "1.5"),
            (MAX_LAG_MILLIS, "500"),
            (MAX_LOAD, "Threads_running=50,Threads_connected=900"),
            (CRITICAL_LOAD, "Threads_running=400"),
        ]);
        let (controls, sources, invalid) = effective_controls(&spec_with_everything(), &ann);
        assert!(invalid.is_empty(), "{invalid:?}");
        assert!(!controls.throttle);
        assert!(!controls.postpone_cut_over);
        assert!(controls.panic);
        assert_eq!(controls.chunk_size, 2000);
        assert_eq!(controls.dml_batch_size, 100);
        assert_eq!(controls.nice_ratio, 1.5);
        assert_eq!(controls.max_lag, Duration::from_millis(500));
        assert_eq!(
            controls.max_load,
            vec![
                ("Threads_running".into(), 50),
                ("Threads_connected".into(), 900)
            ]
        );
        assert_eq!(
            controls.critical_load,
            vec![("Threads_running".into(), 400)]
        );
        assert!(sources.iter().all(|s| s.source == ValueSource::Annotation));
        assert_eq!(
            source_of(&sources, "chunkSize"),
            ("2000".into(), ValueSource::Annotation)
        );
        assert_eq!(
            source_of(&sources, "maxLoad").0,
            "Threads_running=50,Threads_connected=900".to_string()
        );
    }

    #[test]
    fn annotation_wins_over_default_too() {
        let ann = annotations(&[(THROTTLE, "true")]);
        let (controls, sources, _) = effective_controls(&spec(), &ann);
        assert!(controls.throttle);
        assert_eq!(
            source_of(&sources, "throttle"),
            ("true".into(), ValueSource::Annotation)
        );
    }

    #[test]
    fn empty_max_load_annotation_clears_spec_thresholds() {
        // gh-ost's interactive `max-load=` clears the thresholds; the annotation does the same.
        let ann = annotations(&[(MAX_LOAD, "")]);
        let (controls, sources, invalid) = effective_controls(&spec_with_everything(), &ann);
        assert!(invalid.is_empty());
        assert!(controls.max_load.is_empty());
        assert_eq!(
            source_of(&sources, "maxLoad"),
            (String::new(), ValueSource::Annotation)
        );
    }

    /// Each refused value keeps the spec's value (spec_with_everything) and is reported once.
    #[test]
    fn invalid_annotations_are_reported_and_not_applied() {
        let cases: &[(&str, &str, &str)] = &[
            (THROTTLE, "yes", "\"true\" or \"false\""),
            (THROTTLE, "", "\"true\" or \"false\""),
            (POSTPONE_CUT_OVER, "1", "\"true\" or \"false\""),
            (PANIC, "now", "\"true\" or \"false\""),
            (CHUNK_SIZE, "abc", "whole number between 10 and 100000"),
            (CHUNK_SIZE, "", "whole number"),
            (CHUNK_SIZE, "-5", "whole number"),
            (CHUNK_SIZE, "1.5", "whole number"),
            (CHUNK_SIZE, "5", "out of range"),
            (CHUNK_SIZE, "100001", "out of range"),
            (DML_BATCH_SIZE, "0", "between 1 and 1000"),
            (DML_BATCH_SIZE, "1001", "out of range"),
            (DML_BATCH_SIZE, "ten", "whole number"),
            (NICE_RATIO, "-0.1", "out of range"),
            (NICE_RATIO, "101", "out of range"),
            (NICE_RATIO, "NaN", "must be a number"),
            (NICE_RATIO, "inf", "must be a number"),
            (NICE_RATIO, "half", "must be a number"),
            (MAX_LAG_MILLIS, "99", "at least 100"),
            (MAX_LAG_MILLIS, "1s", "whole number"),
            (MAX_LOAD, "Threads_running", "Status_variable=number"),
            (MAX_LOAD, "Threads_running=-1", "whole number"),
            (CRITICAL_LOAD, "bad name=5", "status variable name"),
        ];
        let (reference, _, _) = effective_controls(&spec_with_everything(), &BTreeMap::new());
        for &(annotation, value, reason) in cases {
            let ann = annotations(&[(annotation, value)]);
            let (controls, sources, invalid) = effective_controls(&spec_with_everything(), &ann);
            assert_eq!(controls, reference, "{annotation}={value:?} was applied");
            assert_eq!(invalid.len(), 1, "{annotation}={value:?}: {invalid:?}");
            assert_eq!(invalid[0].annotation, annotation);
            assert_eq!(invalid[0].value, value);
            assert!(
                invalid[0].reason.contains(reason),
                "{annotation}={value:?}: {:?} lacks {reason:?}",
                invalid[0].reason
            );
            assert!(
                sources.iter().all(|s| s.source != ValueSource::Annotation),
                "{annotation}={value:?}"
            );
        }
    }

    #[test]
    fn invalid_annotation_falls_back_to_default_without_spec() {
        let ann = annotations(&[(CHUNK_SIZE, "huge")]);
        let (controls, sources, invalid) = effective_controls(&spec(), &ann);
        assert_eq!(controls.chunk_size, 1000);
        assert_eq!(
            source_of(&sources, "chunkSize"),
            ("1000".into(), ValueSource::Default)
        );
        assert_eq!(
            invalid[0].to_string(),
            "ghost/chunk-size=\"huge\" ignored: must be a whole number between 10 and 100000"
        );
    }

    #[test]
    fn unknown_ghost_annotations_are_reported_others_ignored() {
        let ann = annotations(&[
            ("ghost/throtle", "true"),
            ("argocd.argoproj.io/sync-wave", "-1"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ]);
        let (controls, _, invalid) = effective_controls(&spec(), &ann);
        assert!(!controls.throttle);
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0].annotation, "ghost/throtle");
        assert!(invalid[0].reason.contains("ghost/throttle"));
    }

    #[test]
    fn out_of_range_spec_values_are_clamped() {
        let mut s = spec();
        s.copy = Some(CopySpec {
            chunk_size: Some(1),
            dml_batch_size: Some(5000),
            nice_ratio: Some(-3.0),
            ..CopySpec::default()
        });
        s.throttle = Some(ThrottleSpec {
            max_lag_millis: Some(-1),
            ..ThrottleSpec::default()
        });
        let (controls, _, _) = effective_controls(&s, &BTreeMap::new());
        assert_eq!(controls.chunk_size, 10);
        assert_eq!(controls.dml_batch_size, 1000);
        assert_eq!(controls.nice_ratio, 0.0);
        assert_eq!(controls.max_lag, Duration::from_millis(100));
    }

    #[test]
    fn blank_throttle_query_and_url_are_unset() {
        let mut s = spec();
        s.throttle = Some(ThrottleSpec {
            query: Some("  ".into()),
            http_url: Some(String::new()),
            ..ThrottleSpec::default()
        });
        let (controls, _, _) = effective_controls(&s, &BTreeMap::new());
        assert_eq!(controls.throttle_query, None);
        assert_eq!(controls.throttle_http, None);
    }
}
