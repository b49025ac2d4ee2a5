//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go does it, so two
//! operator replicas can run and only one reconciles.
//!
//! The holder renews the Lease every `retry_period`. A candidate takes it over when it is free
//! (no holder: released) or when its record has not changed for `lease_duration` as measured on
//! the candidate's own clock (the renew time written by another node is never compared with
//! ours, so clock skew does not matter). Every write is a replace with the resourceVersion just
//! read: of two candidates only one wins, the other gets a conflict and stays a candidate.
//!
//! A leader that cannot renew within `renew_deadline` stops leading: the operator then stops its
//! controller and exits, and the pod restarts as a candidate. That is shorter than
//! `lease_duration`, so the old leader has stopped before anyone else may take over.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica: its pod name.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// There is none: create it, held by us.
    Create,
    /// Ours: renew it.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds it.
    Wait { holder: String },
}

/// Pure: the action for `lease` as seen by `identity`, whose record has not changed for
/// `unchanged_for` on our clock.
pub fn decide(
    lease: Option<&Lease>,
    identity: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> LeaseAction {
    let Some(lease) = lease else {
        return LeaseAction::Create;
    };
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or("");
    if holder == identity {
        return LeaseAction::Renew;
    }
    if holder.is_empty() {
        return LeaseAction::TakeOver;
    }
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(default_duration, Duration::from_secs);
    if unchanged_for >= duration {
        LeaseAction::TakeOver
    } else {
        LeaseAction::Wait {
            holder: holder.to_string(),
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The resourceVersion last seen and when it was first seen, on our clock.
    observed: Mutex<Option<(String, Instant)>>,
}

impl LeaderElector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// One attempt: true when we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.settings.name).await?;
        let unchanged_for = self.unchanged_for(current.as_ref());
        let action = decide(
            current.as_ref(),
            &self.settings.identity,
            unchanged_for,
            self.settings.lease_duration,
        );
        let written = match (action, current) {
            (LeaseAction::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.record(LeaseSpec::default(), true)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (LeaseAction::Renew, Some(mut lease)) => {
                lease.spec = Some(self.record(lease.spec.take().unwrap_or_default(), false));
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
            }
            (LeaseAction::TakeOver, Some(mut lease)) => {
                lease.spec = Some(self.record(lease.spec.take().unwrap_or_default(), true));
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
            }
            (LeaseAction::Wait { holder }, _) => {
                debug!(%holder, "the lease is held by another replica");
                return Ok(false);
            }
            // Renew or take over without a Lease cannot come out of `decide`.
            (_, None) => return Ok(false),
        };
        match written {
            Ok(lease) => {
                self.unchanged_for(Some(&lease));
                Ok(true)
            }
            // Another replica wrote first: it won this round.
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Returns once we lead. Errors (API unreachable) are logged and retried.
    pub async fn acquire(&self) {
        info!(
            lease = %self.settings.name,
            namespace = %self.settings.namespace,
            identity = %self.settings.identity,
            "waiting to lead"
        );
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.settings.identity, "leading");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!("leader election: {e}"),
            }
            tokio::time::sleep(self.settings.retry_period).await;
        }
    }

    /// Renews while we lead; returns when leadership is lost (another replica holds the Lease,
    /// or no renewal succeeded within `renew_deadline`).
    pub async fn hold(&self) {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.settings.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => {
                    warn!("the lease was taken by another replica");
                    return;
                }
                Err(e) => warn!("renewing the lease: {e}"),
            }
            if last_renewal.elapsed() >= self.settings.renew_deadline {
                warn!(
                    "could not renew the lease for {}s",
                    self.settings.renew_deadline.as_secs()
                );
                return;
            }
        }
    }

    /// Gives the Lease up, so another replica takes over at once instead of after
    /// `lease_duration`. Only when we hold it.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.settings.identity.as_str());
        if !ours {
            return Ok(());
        }
        let now = MicroTime(Timestamp::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now);
        self.api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await?;
        info!("released the lease");
        Ok(())
    }

    /// Our record for the Lease: renewed now, and when `acquire`, newly held by us.
    fn record(&self, mut spec: LeaseSpec, acquire: bool) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        if acquire {
            let had_holder = spec
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty());
            spec.lease_transitions =
                Some(spec.lease_transitions.unwrap_or(0) + i32::from(had_holder));
            spec.holder_identity = Some(self.settings.identity.clone());
            spec.acquire_time = Some(now.clone());
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds =
            Some(i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX));
        spec
    }

    /// How long the Lease's record has stayed as it is now, on our clock.
    fn unchanged_for(&self, lease: Option<&Lease>) -> Duration {
        let version = lease.and_then(|l| l.resource_version()).unwrap_or_default();
        let mut observed = self.observed.lock().unwrap_or_else(PoisonError::into_inner);
        match observed.as_ref() {
            Some((seen, since)) if *seen == version => since.elapsed(),
            _ => {
                *observed = Some((version, Instant::now()));
                Duration::ZERO
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn lease(holder: Option<&str>, duration: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("ghost-operator".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: duration,
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", Duration::ZERO, D), LeaseAction::Create);
        let held_by_a = lease(Some("a"), Some(15));
        assert_eq!(
            decide(Some(&held_by_a), "a", Duration::ZERO, D),
            LeaseAction::Renew
        );
        assert_eq!(
            decide(Some(&held_by_a), "b", Duration::from_secs(3), D),
            LeaseAction::Wait { holder: "a".into() }
        );
        assert_eq!(
            decide(Some(&held_by_a), "b", Duration::from_secs(15), D),
            LeaseAction::TakeOver
        );
        // Released: free at once.
        assert_eq!(
            decide(Some(&lease(None, Some(1))), "b", Duration::ZERO, D),
            LeaseAction::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some(""), None)), "b", Duration::ZERO, D),
            LeaseAction::TakeOver
        );
        // The Lease's own duration wins over ours.
        let short = lease(Some("a"), Some(5));
        assert_eq!(
            decide(Some(&short), "b", Duration::from_secs(6), D),
            LeaseAction::TakeOver
        );
        let no_duration = lease(Some("a"), None);
        assert_eq!(
            decide(Some(&no_duration), "b", Duration::from_secs(6), D),
            LeaseAction::Wait { holder: "a".into() }
        );
    }

    fn elector() -> LeaderElector {
        // The client is never called by the functions under test; a mock service that is
        // never answered is enough to build one.
        let (service, _handle) = tower_test::mock::pair::<
            axum::http::Request<kube::client::Body>,
            axum::http::Response<kube::client::Body>,
        >();
        LeaderElector::new(
            Client::new(service, "default"),
            LeaseSettings::new("ghost-system", "ghost-operator", "pod-a"),
        )
    }

    #[tokio::test]
    async fn records() {
        let e = elector();
        let taken = e.record(
            LeaseSpec {
                holder_identity: Some("pod-b".into()),
                lease_transitions: Some(2),
                ..LeaseSpec::default()
            },
            true,
        );
        assert_eq!(taken.holder_identity.as_deref(), Some("pod-a"));
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.lease_duration_seconds, Some(15));
        assert!(taken.acquire_time.is_some() && taken.renew_time.is_some());

        let first = e.record(LeaseSpec::default(), true);
        assert_eq!(first.lease_transitions, Some(0));

        let renewed = e.record(taken.clone(), false);
        assert_eq!(renewed.acquire_time, taken.acquire_time);
        assert_eq!(renewed.lease_transitions, Some(3));
    }

    #[tokio::test]
    async fn the_record_age_is_measured_on_our_clock() {
        let e = elector();
        let l = lease(Some("pod-b"), Some(15));
        assert_eq!(e.unchanged_for(Some(&l)), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(e.unchanged_for(Some(&l)) >= Duration::from_millis(20));
        let mut renewed = l.clone();
        renewed.metadata.resource_version = Some("8".into());
        assert_eq!(e.unchanged_for(Some(&renewed)), Duration::ZERO);
    }
}
