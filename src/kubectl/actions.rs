//! The commands that change something: the `ghost/*` annotations (the controls table of
//! DESIGN.md), `abort`'s confirmation, and `revert`.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use kube::ResourceExt;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use super::view::{RESOURCE, phase_of};
use super::{Format, PluginError, Target, print_migration};
use crate::api::controls::{PANIC, POSTPONE_CUT_OVER, THROTTLE};
use crate::api::types::RevertSpec;
use crate::api::{MigrationPhase, SchemaMigration, SchemaMigrationSpec};

/// kubectl's field manager for `kubectl annotate` is "kubectl-annotate"; ours says who did it.
const FIELD_MANAGER: &str = "kubectl-ghost";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Throttle,
    Unthrottle,
    Postpone,
    CutOver,
    Abort,
}

impl Action {
    /// The annotation and the value that asks for it (an annotation wins over the spec).
    pub fn annotation(self) -> (&'static str, &'static str) {
        match self {
            Action::Throttle => (THROTTLE, "true"),
            Action::Unthrottle => (THROTTLE, "false"),
            Action::Postpone => (POSTPONE_CUT_OVER, "true"),
            Action::CutOver => (POSTPONE_CUT_OVER, "false"),
            Action::Abort => (PANIC, "true"),
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Throttle => "throttle",
            Action::Unthrottle => "unthrottle",
            Action::Postpone => "postpone",
            Action::CutOver => "cut over",
            Action::Abort => "abort",
        }
    }

    /// What happens next, for the person who asked.
    fn effect(self) -> &'static str {
        match self {
            Action::Throttle => "row copy and binlog apply pause within a second",
            Action::Unthrottle => {
                "the engine resumes unless lag, load or a throttle query still hold it"
            }
            Action::Postpone => "the cut-over waits once rows are copied",
            Action::CutOver => "the engine cuts over now, or as soon as rows are copied",
            Action::Abort => {
                "the engine stops and drops its ghost table; the original table stays as it is"
            }
        }
    }
}

/// Refuses actions on a migration that has ended: an annotation there changes nothing.
fn check_running(smig: &SchemaMigration, action: Action) -> Result<(), PluginError> {
    let phase = phase_of(smig);
    if phase.is_terminal() {
        return Err(PluginError::Refused(format!(
            "cannot {} {}: it has already ended ({}); see `kubectl ghost status {} -n {}`",
            action.verb(),
            smig.name_any(),
            phase.as_str(),
            smig.name_any(),
            smig.namespace().unwrap_or_default(),
        )));
    }
    Ok(())
}

pub async fn annotate(
    target: &Target,
    name: &str,
    action: Action,
) -> Result<ExitCode, PluginError> {
    let smig = target.migration(name).await?;
    check_running(&smig, action)?;
    set_annotation(target, name, action).await
}

async fn set_annotation(
    target: &Target,
    name: &str,
    action: Action,
) -> Result<ExitCode, PluginError> {
    let (key, value) = action.annotation();
    let patch = json!({"metadata": {"annotations": {key: value}}});
    target
        .migrations()
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| PluginError::api(format!("cannot annotate {name} {key}={value}"), e))?;
    println!(
        "{RESOURCE}/{name} annotated {key}={value}: {}. Follow it with `kubectl ghost status {name} -n {}`",
        action.effect(),
        target.namespace
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn abort(target: &Target, name: &str, yes: bool) -> Result<ExitCode, PluginError> {
    let smig = target.migration(name).await?;
    check_running(&smig, Action::Abort)?;
    if !yes {
        let question = format!(
            "Abort {}/{name}, the migration of {}.{}? Its ghost table is dropped and the copy is lost. [y/N] ",
            target.namespace, smig.spec.connection.database, smig.spec.table
        );
        if !confirmed(&question)? {
            eprintln!("Not aborted.");
            return Ok(ExitCode::from(super::EXIT_FAILURE));
        }
    }
    set_annotation(target, name, Action::Abort).await
}

/// Asks on stderr and reads the answer from stdin (a terminal, or a pipe for scripts that
/// answer `y`); no answer at all is a refusal that names --yes.
fn confirmed(question: &str) -> Result<bool, PluginError> {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| PluginError::Refused(format!("cannot read the answer: {e}")))?;
    if read == 0 {
        eprintln!();
        return Err(PluginError::Refused(
            "abort needs a confirmation and got no answer: answer y, or pass --yes".into(),
        ));
    }
    Ok(is_yes(&answer))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}

pub async fn revert(
    target: &Target,
    name: &str,
    new_name: Option<String>,
    dry_run: bool,
    output: Option<Format>,
) -> Result<ExitCode, PluginError> {
    let smig = target.migration(name).await?;
    let revert = revert_of(&smig, new_name)?;
    if dry_run {
        print_migration(&revert, output.unwrap_or(Format::Yaml))?;
        return Ok(ExitCode::SUCCESS);
    }
    let created = target
        .migrations()
        .create(&PostParams::default(), &revert)
        .await
        .map_err(|e| {
            PluginError::api(format!("cannot create the revert {}", revert.name_any()), e)
        })?;
    match output {
        Some(format) => print_migration(&created, format)?,
        None => {
            println!(
                "{RESOURCE}/{} created: it swaps {} back in as {}.{}. Follow it with `kubectl ghost watch {} -n {}`",
                created.name_any(),
                created
                    .spec
                    .revert
                    .as_ref()
                    .map_or("", |r| r.old_table.as_str()),
                created.spec.connection.database,
                created.spec.table,
                created.name_any(),
                target.namespace
            );
            for hold in inherited_holds(&created) {
                println!("{hold}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What the revert inherits from the original's spec that holds it back, each with the command
/// that releases it (the original's annotations, which may have released it, are not copied).
pub fn inherited_holds(revert: &SchemaMigration) -> Vec<String> {
    let at = format!(
        "{} -n {}",
        revert.name_any(),
        revert.namespace().unwrap_or_default()
    );
    let spec = &revert.spec;
    let mut holds = Vec::new();
    if spec
        .cut_over
        .as_ref()
        .is_some_and(|c| c.postpone == Some(true))
    {
        holds.push(format!(
            "Its cut-over is postponed, as the original's spec says: run `kubectl ghost cut-over \
             {at}` when it is Postponed"
        ));
    }
    if spec
        .throttle
        .as_ref()
        .is_some_and(|t| t.paused == Some(true))
    {
        holds.push(format!(
            "It starts throttled, as the original's spec says (spec.throttle.paused): run \
             `kubectl ghost unthrottle {at}`"
        ));
    }
    holds
}

/// The revert of a finished migration: its connection and settings, `revert.oldTable` from
/// `.status.progress.keptOldTable`, and no ALTER.
pub fn revert_of(
    smig: &SchemaMigration,
    new_name: Option<String>,
) -> Result<SchemaMigration, PluginError> {
    let name = smig.name_any();
    let phase = phase_of(smig);
    if phase != MigrationPhase::Succeeded {
        return Err(PluginError::Refused(format!(
            "cannot revert {name}: it is {}, and only a Succeeded migration has an old table to swap back",
            phase.as_str()
        )));
    }
    let old_table = smig
        .status
        .as_ref()
        .and_then(|s| s.progress.as_ref())
        .and_then(|p| p.kept_old_table.clone())
        .ok_or_else(|| {
            PluginError::Refused(format!(
                "cannot revert {name}: it kept no old table (spec.cutOver.oldTable: drop, or a rehearsal with execute: false)"
            ))
        })?;
    let spec = SchemaMigrationSpec {
        alter: String::new(),
        revert: Some(RevertSpec { old_table }),
        ..smig.spec.clone()
    };
    let mut revert =
        SchemaMigration::new(&new_name.unwrap_or_else(|| format!("{name}-revert")), spec);
    revert.metadata = ObjectMeta {
        namespace: smig.namespace(),
        ..revert.metadata
    };
    Ok(revert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{ProgressStatus, SchemaMigrationStatus};

    fn finished(kept: Option<&str>) -> SchemaMigration {
        let mut smig: SchemaMigration = serde_json::from_value(json!({
            "apiVersion": "ghost.dev/v1alpha1",
            "kind": "SchemaMigration",
            "metadata": {"name": "add-age", "namespace": "shop", "uid": "u1",
                         "resourceVersion": "7", "annotations": {"ghost/throttle": "true"}},
            "spec": {"connection": {"host": "db", "database": "shop",
                                    "credentialsSecretRef": {"name": "db"}},
                     "table": "users", "alter": "ADD COLUMN age INT",
                     "copy": {"chunkSize": 500}}
        }))
        .unwrap();
        smig.status = Some(SchemaMigrationStatus {
            phase: Some(MigrationPhase::Succeeded),
            progress: Some(ProgressStatus {
                kept_old_table: kept.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        });
        smig
    }

    #[test]
    fn revert_swaps_the_kept_table_back_with_the_same_settings() {
        let revert = revert_of(&finished(Some("_users_del")), None).unwrap();
        assert_eq!(revert.name_any(), "add-age-revert");
        assert_eq!(revert.namespace().as_deref(), Some("shop"));
        assert_eq!(revert.spec.alter, "");
        assert_eq!(revert.spec.revert.as_ref().unwrap().old_table, "_users_del");
        assert_eq!(revert.spec.copy.as_ref().unwrap().chunk_size, Some(500));
        // Nothing of the original's identity or controls is carried over.
        assert!(revert.metadata.uid.is_none() && revert.metadata.resource_version.is_none());
        assert!(revert.metadata.annotations.is_none());
        assert!(revert.status.is_none());
    }

    #[test]
    fn revert_needs_a_kept_table_of_a_succeeded_migration() {
        let err = revert_of(&finished(None), None).unwrap_err().to_string();
        assert!(err.contains("kept no old table"), "{err}");
        let mut running = finished(Some("_users_del"));
        running.status.as_mut().unwrap().phase = Some(MigrationPhase::Copying);
        let err = revert_of(&running, None).unwrap_err().to_string();
        assert!(err.contains("it is Copying"), "{err}");
    }

    #[test]
    fn the_revert_says_what_holds_it_back() {
        let mut smig = finished(Some("_users_del"));
        assert!(inherited_holds(&smig).is_empty());
        smig.spec = serde_json::from_value(json!({
            "connection": {"host": "db", "database": "shop", "credentialsSecretRef": {"name": "db"}},
            "table": "users", "alter": "ADD COLUMN age INT",
            "cutOver": {"postpone": true}, "throttle": {"paused": true}
        }))
        .unwrap();
        let holds = inherited_holds(&revert_of(&smig, None).unwrap());
        assert_eq!(holds.len(), 2, "{holds:?}");
        assert!(
            holds[0].contains("`kubectl ghost cut-over add-age-revert -n shop`"),
            "{holds:?}"
        );
        assert!(
            holds[1].contains("`kubectl ghost unthrottle add-age-revert -n shop`"),
            "{holds:?}"
        );
    }

    #[test]
    fn each_action_sets_its_annotation() {
        assert_eq!(Action::Throttle.annotation(), ("ghost/throttle", "true"));
        assert_eq!(Action::Unthrottle.annotation(), ("ghost/throttle", "false"));
        assert_eq!(
            Action::Postpone.annotation(),
            ("ghost/postpone-cut-over", "true")
        );
        assert_eq!(
            Action::CutOver.annotation(),
            ("ghost/postpone-cut-over", "false")
        );
        assert_eq!(Action::Abort.annotation(), ("ghost/panic", "true"));
        assert!(is_yes(" Y\n") && is_yes("yes") && !is_yes("") && !is_yes("no"));
    }
}
