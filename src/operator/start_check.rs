//! An engine Job whose pod cannot start: no ServiceAccount (the Job controller cannot create the
//! pod), an image that cannot be pulled, a pod nobody can schedule. The reason is in the Job's
//! Events or the pod's status, where a user of `kubectl get smig` does not look; this module
//! finds it for the status, and the reconciler fails the migration when the engine has not
//! started within the start timeout, so that its host slot is freed.

use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::job;

/// Container states that mean the engine will not start by itself.
const WAITING_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
];

/// Why the engine's pod does not start, from its pods and the Job's Events; None when nothing
/// says so (yet).
pub fn start_problem(pods: &[Pod], job_events: &[CoreEvent]) -> Option<String> {
    for pod in pods {
        let status = pod.status.as_ref();
        let waiting = status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
            .find(|w| {
                w.reason
                    .as_deref()
                    .is_some_and(|r| WAITING_REASONS.contains(&r))
            });
        if let Some(w) = waiting {
            return Some(format!(
                "pod {}: {}: {}",
                pod.name_any(),
                w.reason.as_deref().unwrap_or_default(),
                w.message.as_deref().unwrap_or("no message")
            ));
        }
        if let Some(killed) = kill_reason(std::slice::from_ref(pod)) {
            return Some(killed);
        }
        let unschedulable = status
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False");
        if let Some(c) = unschedulable {
            return Some(format!(
                "pod {} cannot be scheduled: {}",
                pod.name_any(),
                c.message.as_deref().unwrap_or("no message")
            ));
        }
    }
    if pods.is_empty() {
        // The newest FailedCreate: the Job controller's reason for not making the pod.
        return job_events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
            .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
            .map(|e| {
                format!(
                    "the Job cannot create its pod: {}",
                    e.message.as_deref().unwrap_or("no message")
                )
            });
    }
    None
}

/// Why an engine pod was killed from outside, newest pod first: the kernel's OOM killer at the
/// container's memory limit, or another signal (exit code 128 + N). The engine reports its own
/// errors in `.status`; a killed engine cannot, so this is the only place that says why.
pub fn kill_reason(pods: &[Pod]) -> Option<String> {
    let mut newest_first: Vec<&Pod> = pods.iter().collect();
    newest_first.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.clone()));
    newest_first.into_iter().find_map(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_deref()?;
        statuses.iter().find_map(|c| {
            let terminated = c
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .or_else(|| c.last_state.as_ref()?.terminated.as_ref())?;
            if terminated.reason.as_deref() == Some("OOMKilled") {
                let limit = memory_limit(pod, &c.name)
                    .map_or_else(String::new, |l| format!(" at its memory limit of {l}"));
                return Some(format!(
                    "the engine pod {} was OOMKilled{limit} (exit code {}): raise \
                     spec.engine.resources.limits.memory",
                    pod.name_any(),
                    terminated.exit_code
                ));
            }
            (terminated.exit_code > 128).then(|| {
                format!(
                    "the engine pod {} was killed by signal {} (exit code {})",
                    pod.name_any(),
                    terminated.exit_code - 128,
                    terminated.exit_code
                )
            })
        })
    })
}

fn memory_limit(pod: &Pod, container: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let c = spec.containers.iter().find(|c| c.name == container)?;
    let limit = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
    Some(limit.0.clone())
}

/// The pods of `migration`'s Job.
async fn pods_of(
    client: &Client,
    namespace: &str,
    migration: &str,
) -> Result<Vec<Pod>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(pods
        .list(&ListParams::default().labels(&job::migration_selector(migration)))
        .await?
        .items)
}

/// Why the engine of `migration` was killed, if it was (see [`kill_reason`]).
pub async fn diagnose_kill(
    client: &Client,
    namespace: &str,
    migration: &str,
) -> Result<Option<String>, kube::Error> {
    Ok(kill_reason(&pods_of(client, namespace, migration).await?))
}

/// Looks at the pods of `migration`'s Job and, when there are none, at the Job's Events.
pub async fn diagnose(
    client: &Client,
    namespace: &str,
    migration: &str,
    job_name: &str,
) -> Result<Option<String>, kube::Error> {
    let listed = pods_of(client, namespace, migration).await?;
    let events = if listed.is_empty() {
        let api: Api<CoreEvent> = Api::namespaced(client.clone(), namespace);
        api.list(&ListParams::default().fields(&format!(
            "involvedObject.kind=Job,involvedObject.name={job_name}"
        )))
        .await?
        .items
    } else {
        Vec::new()
    };
    Ok(start_problem(&listed, &events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ghost-m-abcde"},
            "status": status
        }))
        .expect("pod")
    }

    #[test]
    fn an_image_that_cannot_be_pulled() {
        let p = pod(serde_json::json!({"containerStatuses": [{
            "name": "engine", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}
        }]}));
        let problem = start_problem(&[p], &[]).expect("a problem");
        assert!(
            problem.contains("ImagePullBackOff") && problem.contains("ghost-m-abcde"),
            "{problem}"
        );
    }

    #[test]
    fn a_pod_nobody_can_schedule() {
        let p = pod(serde_json::json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available"
        }]}));
        assert!(
            start_problem(&[p], &[])
                .expect("problem")
                .contains("0/3 nodes")
        );
    }

    #[test]
    fn no_pod_because_the_service_account_is_missing() {
        let event: CoreEvent = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ghost-m.1"},
            "involvedObject": {"kind": "Job", "name": "ghost-m"},
            "reason": "FailedCreate",
            "message": "Error creating: pods \"ghost-m-\" is forbidden: error looking up service account shop/ghost-engine: serviceaccount \"ghost-engine\" not found"
        }))
        .expect("event");
        let problem = start_problem(&[], &[event]).expect("a problem");
        assert!(
            problem.contains("serviceaccount \"ghost-engine\" not found"),
            "{problem}"
        );
    }

    fn killed(name: &str, created: &str, terminated: serde_json::Value, limit: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"containers": [{"name": "engine", "resources": {"limits": {"memory": limit}}}]},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "engine", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": terminated}
            }]}
        }))
        .expect("pod")
    }

    #[test]
    fn an_engine_killed_at_its_memory_limit() {
        let first = killed(
            "ghost-m-aaaaa",
            "2026-01-01T00:00:00Z",
            serde_json::json!({"exitCode": 1, "reason": "Error"}),
            "16Mi",
        );
        let oom = killed(
            "ghost-m-bbbbb",
            "2026-01-01T00:01:00Z",
            serde_json::json!({"exitCode": 137, "reason": "OOMKilled"}),
            "16Mi",
        );
        let why = kill_reason(&[first.clone(), oom.clone()]).expect("a reason");
        assert_eq!(
            why,
            "the engine pod ghost-m-bbbbb was OOMKilled at its memory limit of 16Mi (exit code \
             137): raise spec.engine.resources.limits.memory"
        );
        // Before the engine's first report, the same reason is its start problem.
        assert_eq!(start_problem(&[oom], &[]), Some(why));
        // An engine that exited with its own error reports it itself.
        assert_eq!(kill_reason(&[first]), None);
        let terminated = killed(
            "ghost-m-ccccc",
            "2026-01-01T00:02:00Z",
            serde_json::json!({"exitCode": 143, "reason": "Error"}),
            "16Mi",
        );
        assert_eq!(
            kill_reason(&[terminated]).as_deref(),
            Some("the engine pod ghost-m-ccccc was killed by signal 15 (exit code 143)")
        );
    }

    #[test]
    fn a_pod_that_starts_is_no_problem() {
        let running = pod(
            serde_json::json!({"phase": "Running", "containerStatuses": [{
                "name": "engine", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"running": {}}
            }]}),
        );
        assert_eq!(start_problem(&[running], &[]), None);
        assert_eq!(start_problem(&[], &[]), None);
    }
}
