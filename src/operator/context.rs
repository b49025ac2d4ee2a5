//! The controller's shared state (`Context`): the client, the cache, the Event recorders, what
//! this process started, the queue's wake-ups and the deletion debounce; and the Events a
//! reconcile publishes (`PlannedEvent`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use super::finalizer::TableCleaner;
use super::job::EngineDefaults;
use super::metrics::Metrics;
use super::next_step::with_next_step_within;
use super::queue::Entry;
use super::reconcile::{DELETION_SETTLE, MAX_NOTE_BYTES, REPORTER, truncate};
use crate::api::SchemaMigration;

/// A migration's uid and an Event reason.
type EventKey = (String, &'static str);

/// Everything a reconcile needs besides the resource.
pub struct Context {
    pub client: Client,
    reporter: Reporter,
    /// One Recorder per (migration, reason, note): kube's Recorder merges repeats of a reason
    /// into a series that keeps the first note, so a changed note gets a new Event instead.
    recorders: Mutex<std::collections::HashMap<EventKey, (String, Recorder)>>,
    /// The controller's cache of every SchemaMigration it watches, for the queue.
    pub store: Store<SchemaMigration>,
    pub metrics: Arc<Metrics>,
    pub engine: EngineDefaults,
    pub max_per_host: usize,
    /// Drops ghost's tables when a resource is deleted (the engine's code; a fake in tests).
    pub cleaner: Arc<dyn TableCleaner>,
    /// uids of the migrations whose Job this process created: the cache may not show their
    /// new status yet, and the queue must count them as started.
    started: Mutex<HashSet<String>>,
    /// Told when a migration is seen finished, so queued ones look again at once instead of at
    /// their next requeue (`queue_moves`).
    queue_moved: Mutex<Option<tokio::sync::mpsc::UnboundedSender<()>>>,
    /// uids already announced on `queue_moved` (once per process each).
    announced: Mutex<HashSet<String>>,
    /// When a SchemaMigration being deleted was last seen.
    last_deletion: Mutex<Option<std::time::Instant>>,
}

impl Context {
    pub fn new(
        client: Client,
        identity: &str,
        store: Store<SchemaMigration>,
        metrics: Arc<Metrics>,
        engine: EngineDefaults,
        max_per_host: usize,
        cleaner: Arc<dyn TableCleaner>,
    ) -> Self {
        let reporter = Reporter {
            controller: REPORTER.to_string(),
            instance: Some(identity.to_string()),
        };
        Self {
            client,
            reporter,
            recorders: Mutex::new(std::collections::HashMap::new()),
            store,
            metrics,
            engine,
            max_per_host: max_per_host.max(1),
            cleaner,
            started: Mutex::new(HashSet::new()),
            queue_moved: Mutex::new(None),
            announced: Mutex::new(HashSet::new()),
            last_deletion: Mutex::new(None),
        }
    }

    /// A SchemaMigration with a deletionTimestamp was reconciled.
    pub(crate) fn note_deletion(&self) {
        *self
            .last_deletion
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(std::time::Instant::now());
    }

    /// How much longer new engines wait for deletions to stop; None when none was seen lately.
    pub(crate) fn deletions_settling(&self) -> Option<Duration> {
        let last = (*self
            .last_deletion
            .lock()
            .unwrap_or_else(PoisonError::into_inner))?;
        DELETION_SETTLE
            .checked_sub(last.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// Wakes the queued migrations (a slot was freed, or deletions are over).
    pub(crate) fn wake_queue(&self) {
        if let Some(tx) = self
            .queue_moved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let _ = tx.send(());
        }
    }

    /// A stream that yields whenever a migration is first seen finished by this process: feed
    /// it to `Controller::reconcile_all_on` so the migrations queued behind it start without
    /// waiting for their requeue.
    pub fn queue_moves(&self) -> impl futures_util::Stream<Item = ()> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self
            .queue_moved
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(tx);
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|()| ((), rx)) },
        )
    }

    /// Called from the reconcile of a finished migration, i.e. once the controller's cache holds
    /// its final status: the queue's next decisions see its slot free.
    pub(crate) fn announce_finished(&self, uid: &str) {
        let first = self
            .announced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uid.to_string());
        if first {
            self.wake_queue();
        }
    }

    pub(crate) fn mark_started(&self, uid: &str) {
        // A poisoned set is still a valid set: a panic elsewhere does not corrupt a HashSet.
        self.started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uid.to_string());
    }

    pub(crate) fn started_here(&self, uid: &str) -> bool {
        self.started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(uid)
    }

    pub(crate) fn forget(&self, uid: &str) {
        self.started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uid);
        self.recorders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(u, _), _| u != uid);
    }

    /// Forgets every migration whose uid is not in `present`: what deleted migrations left in
    /// the controller's memory (their deletion is only a watch event when they never started).
    pub(crate) fn forget_absent(&self, present: &HashSet<String>) {
        self.started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|uid| present.contains(uid));
        self.announced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|uid| present.contains(uid));
        self.recorders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(uid, _), _| present.contains(uid));
    }

    /// Every known migration as the queue sees it, with `fresh` (the object being reconciled)
    /// in place of its possibly older cached copy.
    pub(crate) fn queue_entries(&self, fresh: &SchemaMigration) -> Vec<Entry> {
        let fresh_uid = fresh.uid();
        let mut entries: Vec<Entry> = self
            .store
            .state()
            .iter()
            .filter(|s| s.uid() != fresh_uid)
            .map(|s| {
                let here = s.uid().is_some_and(|uid| self.started_here(&uid));
                Entry::from_migration(s, here)
            })
            .collect();
        let here = fresh_uid.is_some_and(|uid| self.started_here(&uid));
        entries.push(Entry::from_migration(fresh, here));
        entries
    }

    /// Publishes an Event about `smig`. Events are best effort: a failure is logged, never
    /// fails the reconcile.
    pub(crate) async fn publish(&self, smig: &SchemaMigration, planned: PlannedEvent) {
        let note = match planned.type_ {
            EventType::Warning => {
                with_next_step_within(&planned.note, planned.reason, smig, MAX_NOTE_BYTES)
            }
            EventType::Normal => truncate(&planned.note, MAX_NOTE_BYTES),
        };
        let recorder = {
            let mut recorders = self
                .recorders
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let key = (smig.uid().unwrap_or_default(), planned.reason);
            match recorders.get(&key) {
                Some((last, recorder)) if *last == note => recorder.clone(),
                _ => {
                    let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
                    recorders.insert(key, (note.clone(), recorder.clone()));
                    recorder
                }
            }
        };
        let event = Event {
            type_: planned.type_,
            reason: planned.reason.to_string(),
            note: Some(note),
            action: planned.action.to_string(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &smig.object_ref(&())).await {
            warn!(reason = %event.reason, "cannot publish an Event: {e}");
        }
    }
}

/// An Event to publish, decided by pure code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    pub type_: EventType,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

impl PlannedEvent {
    pub fn normal(reason: &'static str, action: &'static str, note: impl Into<String>) -> Self {
        Self {
            type_: EventType::Normal,
            reason,
            action,
            note: note.into(),
        }
    }

    pub fn warning(reason: &'static str, action: &'static str, note: impl Into<String>) -> Self {
        Self {
            type_: EventType::Warning,
            reason,
            action,
            note: note.into(),
        }
    }
}
