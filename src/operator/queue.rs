//! Which migrations may start: one at a time per (host, database, table), and at most
//! `--max-per-host` at a time per database server. Pure, so every decision is a unit test.
//!
//! The decision is a function of the whole set of resources, ordered by creation time (then
//! namespace and name). Concurrent reconciles of two resources that see the same set therefore
//! agree on which one goes first, and a cache that lags a little cannot start both: the later
//! one waits for the earlier one until that one has visibly started or finished.
//!
//! Order per table is first come, first served even when the first is stuck (for example on a
//! missing Secret): the order of changes to one table is the order they were submitted. A stuck
//! migration does not hold a host slot, though, so other tables on the host go ahead.

use std::cmp::Ordering;

use kube::ResourceExt;

use crate::api::SchemaMigration;
use crate::api::status::READY;

/// Ready-condition reasons of a migration that cannot start for a cause of its own (set by the
/// reconciler); such a migration keeps its place per table but takes no host slot.
pub const BLOCKED_REASONS: &[&str] = &[
    "SecretNotFound",
    "SecretKeyMissing",
    "SecretNotOptedIn",
    "EngineNotAllowed",
    "JobNameTaken",
    "NamespaceNotEnabled",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Started (its engine Job exists or existed) and not finished: holds its table and a host
    /// slot, also while it is being deleted, until the cleanup is done.
    Active,
    /// Not started yet. `blocked`: held back by a cause of its own.
    Waiting { blocked: bool },
    /// Finished, or deleted before it started: holds nothing.
    Inactive,
}

/// One SchemaMigration as the queue sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub namespace: String,
    pub name: String,
    /// Creation time in seconds since the epoch; unknown sorts last.
    pub created: i64,
    /// `host:port` of the primary, lower case.
    pub host: String,
    /// Lower case: whether names are case sensitive depends on the server's
    /// lower_case_table_names, and serializing too much is harmless.
    pub database: String,
    pub table: String,
    pub slot: Slot,
}

impl Entry {
    /// `started_here`: this process created the migration's Job, which its cached copy may not
    /// show yet.
    pub fn from_migration(smig: &SchemaMigration, started_here: bool) -> Self {
        let status = smig.status.as_ref();
        let terminal = status
            .and_then(|s| s.phase)
            .is_some_and(|phase| phase.is_terminal());
        let started = started_here
            || status
                .is_some_and(|s| s.job.is_some() || s.start_time.is_some() || s.progress.is_some());
        let slot = if terminal {
            Slot::Inactive
        } else if started {
            Slot::Active
        } else if smig.metadata.deletion_timestamp.is_some() {
            Slot::Inactive
        } else {
            let blocked = status
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
                .is_some_and(|c| BLOCKED_REASONS.contains(&c.reason.as_str()));
            Slot::Waiting { blocked }
        };
        let connection = &smig.spec.connection;
        Self {
            namespace: smig.namespace().unwrap_or_default(),
            name: smig.name_any(),
            created: smig
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(i64::MAX, |t| t.0.as_second()),
            host: format!(
                "{}:{}",
                connection.host.trim().to_ascii_lowercase(),
                connection.port
            ),
            database: connection.database.to_ascii_lowercase(),
            table: smig.spec.table.to_ascii_lowercase(),
            slot,
        }
    }

    fn same_resource(&self, other: &Entry) -> bool {
        self.namespace == other.namespace && self.name == other.name
    }

    fn same_table(&self, other: &Entry) -> bool {
        self.host == other.host && self.database == other.database && self.table == other.table
    }

    fn order(&self, other: &Entry) -> Ordering {
        (self.created, &self.namespace, &self.name).cmp(&(
            other.created,
            &other.namespace,
            &other.name,
        ))
    }

    fn before(&self, other: &Entry) -> bool {
        self.order(other) == Ordering::Less
    }

    fn is_waiting(&self) -> bool {
        matches!(self.slot, Slot::Waiting { .. })
    }

    fn table_text(&self) -> String {
        format!("{}.{} on {}", self.database, self.table, self.host)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Start,
    /// Not yet; the reason is for humans (it becomes the Queued condition's message).
    Wait(String),
}

/// Whether `target` (not started yet) may start now, given every migration the controller knows
/// (`all` may or may not include `target` itself).
pub fn decide(target: &Entry, all: &[Entry], max_per_host: usize) -> Decision {
    let cap = max_per_host.max(1);
    let others: Vec<&Entry> = all.iter().filter(|e| !e.same_resource(target)).collect();

    // One table, one migration at a time, in submission order. The message names no other
    // migration: when the queue moves, no waiting migration's status changes but the mover's.
    let table_is_taken = others.iter().any(|e| {
        e.same_table(target) && (e.slot == Slot::Active || (e.is_waiting() && e.before(target)))
    });
    if table_is_taken {
        return Decision::Wait(format!(
            "{} is changed by one SchemaMigration at a time, in creation order: an earlier one \
             goes first",
            target.table_text()
        ));
    }

    // The host's cap: running ones, then earlier waiting ones that could take a slot now.
    let running: Vec<&Entry> = others
        .iter()
        .copied()
        .filter(|e| e.slot == Slot::Active && e.host == target.host)
        .collect();
    // One message for every position in the host's queue: a queue move rewrites no status but
    // the moving migration's.
    let waiting_for_slot = || {
        Decision::Wait(format!(
            "waiting for a free slot on {}: at most {cap} migration(s) run at once per host \
             (--max-per-host)",
            target.host
        ))
    };
    if running.len() >= cap {
        return waiting_for_slot();
    }
    let ahead: Vec<&Entry> = others
        .iter()
        .copied()
        .filter(|e| {
            e.host == target.host
                && e.slot == Slot::Waiting { blocked: false }
                && e.before(target)
                && could_start_on_its_table(e, all)
        })
        .collect();
    if running.len() + ahead.len() >= cap {
        return waiting_for_slot();
    }
    Decision::Start
}

/// Nothing else holds or precedes `entry` on its table.
fn could_start_on_its_table(entry: &Entry, all: &[Entry]) -> bool {
    !all.iter().any(|e| {
        !e.same_resource(entry)
            && e.same_table(entry)
            && (e.slot == Slot::Active || (e.is_waiting() && e.before(entry)))
    })
}

/// Another started, unfinished migration of the same table: deleting `target` must then leave
/// the ghost and changelog tables alone, since they are that one's.
pub fn active_on_same_table<'a>(target: &Entry, all: &'a [Entry]) -> Option<&'a Entry> {
    all.iter()
        .find(|e| !e.same_resource(target) && e.slot == Slot::Active && e.same_table(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, created: i64, host: &str, table: &str, slot: Slot) -> Entry {
        Entry {
            namespace: "shop".into(),
            name: name.into(),
            created,
            host: format!("{host}:3306"),
            database: "shop".into(),
            table: table.into(),
            slot,
        }
    }

    const WAITING: Slot = Slot::Waiting { blocked: false };
    const BLOCKED: Slot = Slot::Waiting { blocked: true };

    fn waits(d: &Decision, needle: &str) -> bool {
        matches!(d, Decision::Wait(reason) if reason.contains(needle))
    }

    #[test]
    fn alone_it_starts() {
        let a = entry("a", 1, "db1", "users", WAITING);
        assert_eq!(decide(&a, std::slice::from_ref(&a), 1), Decision::Start);
        assert_eq!(decide(&a, &[], 1), Decision::Start);
    }

    #[test]
    fn one_migration_per_table() {
        let running = entry("a", 5, "db1", "users", Slot::Active);
        let b = entry("b", 1, "db1", "users", WAITING);
        let d = decide(&b, &[running.clone(), b.clone()], 10);
        assert!(
            waits(
                &d,
                "shop.users on db1:3306 is changed by one SchemaMigration at a time"
            ),
            "{d:?}"
        );

        // Finished ones hold nothing.
        let done = entry("a", 5, "db1", "users", Slot::Inactive);
        assert_eq!(decide(&b, &[done, b.clone()], 10), Decision::Start);
    }

    #[test]
    fn first_come_first_served_per_table() {
        let a = entry("a", 1, "db1", "users", WAITING);
        let b = entry("b", 2, "db1", "users", WAITING);
        let all = [b.clone(), a.clone()];
        assert_eq!(decide(&a, &all, 10), Decision::Start);
        assert!(waits(&decide(&b, &all, 10), "an earlier one goes first"));

        // Same second: namespace, then name decide, the same way in every reconcile.
        let a2 = entry("a", 1, "db1", "users", WAITING);
        let b2 = entry("b", 1, "db1", "users", WAITING);
        let all = [a2.clone(), b2.clone()];
        assert_eq!(decide(&a2, &all, 10), Decision::Start);
        assert!(matches!(decide(&b2, &all, 10), Decision::Wait(_)));

        // A blocked earlier one still goes first on its table.
        let stuck = entry("a", 1, "db1", "users", BLOCKED);
        assert!(waits(
            &decide(&b, &[stuck, b.clone()], 10),
            "an earlier one"
        ));
    }

    #[test]
    fn a_queue_move_changes_no_waiting_message() {
        // a runs, b and c wait on its table; then a is gone and b runs: c's message is the same,
        // so the move writes no status of c's (issue #13: one write per queued migration and
        // move made 5,907 writes for one mass delete).
        let a = entry("a", 1, "db1", "users", Slot::Active);
        let b = entry("b", 2, "db1", "users", WAITING);
        let c = entry("c", 3, "db1", "users", WAITING);
        let before = decide(&c, &[a, b.clone(), c.clone()], 1);
        let b_runs = entry("b", 2, "db1", "users", Slot::Active);
        let after = decide(&c, &[b_runs, c.clone()], 1);
        assert!(matches!(before, Decision::Wait(_)), "{before:?}");
        assert_eq!(before, after);
        // Nor on the host's queue: x waits for a slot on db1 before and after.
        let x = entry("x", 4, "db1", "orders", WAITING);
        let before = decide(
            &x,
            &[entry("a", 1, "db1", "users", Slot::Active), x.clone()],
            1,
        );
        let after = decide(
            &x,
            &[entry("b", 2, "db1", "users", Slot::Active), x.clone()],
            1,
        );
        assert!(matches!(before, Decision::Wait(_)), "{before:?}");
        assert_eq!(before, after);
    }

    #[test]
    fn other_tables_and_hosts_are_independent() {
        let running = entry("a", 1, "db1", "users", Slot::Active);
        let orders = entry("b", 2, "db1", "orders", WAITING);
        let elsewhere = entry("c", 3, "db2", "users", WAITING);
        let all = [running, orders.clone(), elsewhere.clone()];
        assert_eq!(decide(&orders, &all, 2), Decision::Start);
        assert_eq!(decide(&elsewhere, &all, 1), Decision::Start);
    }

    #[test]
    fn per_host_cap() {
        let running = entry("a", 1, "db1", "users", Slot::Active);
        let b = entry("b", 2, "db1", "orders", WAITING);
        let c = entry("c", 3, "db1", "items", WAITING);
        let all = [running.clone(), b.clone(), c.clone()];

        let slot =
            "waiting for a free slot on db1:3306: at most 1 migration(s) run at once per host";
        let d = decide(&b, &all, 1);
        assert!(waits(&d, slot), "{d:?}");
        // The same words for c, further back: a queue move rewrites nobody else's status.
        assert_eq!(decide(&c, &all, 1), d);
        // Cap 2: b takes the free slot, c waits for b.
        assert_eq!(decide(&b, &all, 2), Decision::Start);
        let d = decide(&c, &all, 2);
        assert!(
            waits(&d, "waiting for a free slot on db1:3306: at most 2"),
            "{d:?}"
        );
        assert_eq!(decide(&c, &all, 3), Decision::Start);
    }

    #[test]
    fn stuck_or_queued_ones_take_no_host_slot() {
        // a cannot start (its Secret is missing): b goes ahead on another table.
        let a = entry("a", 1, "db1", "users", BLOCKED);
        let b = entry("b", 2, "db1", "orders", WAITING);
        assert_eq!(decide(&b, &[a, b.clone()], 1), Decision::Start);

        // x waits for its own table, so it does not hold y back either.
        let running = entry("r", 0, "db1", "users", Slot::Active);
        let x = entry("x", 1, "db1", "users", WAITING);
        let y = entry("y", 2, "db1", "orders", WAITING);
        assert_eq!(decide(&y, &[running, x, y.clone()], 2), Decision::Start);
    }

    #[test]
    fn zero_cap_means_one() {
        let a = entry("a", 1, "db1", "users", WAITING);
        assert_eq!(decide(&a, &[], 0), Decision::Start);
    }

    fn migration(yaml: &str) -> SchemaMigration {
        serde_yaml::from_str(yaml).expect("test manifest")
    }

    const MANIFEST: &str = "
apiVersion: ghost.dev/v1alpha1
kind: SchemaMigration
metadata: {name: add-age, namespace: shop, creationTimestamp: '2026-01-02T03:04:05Z'}
spec:
  connection: {host: MariaDB-0.db, database: Shop, credentialsSecretRef: {name: s}}
  table: Users
  alter: ADD COLUMN age INT
";

    #[test]
    fn entries_from_resources() {
        let e = Entry::from_migration(&migration(MANIFEST), false);
        assert_eq!(e.host, "mariadb-0.db:3306");
        assert_eq!((e.database.as_str(), e.table.as_str()), ("shop", "users"));
        assert_eq!(e.slot, WAITING);
        assert_eq!(e.created, 1_767_323_045);
        assert_eq!(
            Entry::from_migration(&migration(MANIFEST), true).slot,
            Slot::Active
        );

        let with_status = |status: &str| migration(&format!("{MANIFEST}status: {status}\n"));
        let e = Entry::from_migration(&with_status("{phase: Copying, job: ghost-add-age}"), false);
        assert_eq!(e.slot, Slot::Active);
        let e = Entry::from_migration(&with_status("{phase: Failed, job: ghost-add-age}"), false);
        assert_eq!(e.slot, Slot::Inactive);
        let e = Entry::from_migration(
            &with_status(
                "{phase: Pending, conditions: [{type: Ready, status: 'False', \
                 reason: SecretNotFound, message: x, lastTransitionTime: '2026-01-02T03:04:05Z'}]}",
            ),
            false,
        );
        assert_eq!(e.slot, BLOCKED);

        let mut deleted = migration(MANIFEST);
        deleted.metadata.deletion_timestamp = deleted.metadata.creation_timestamp.clone();
        assert_eq!(Entry::from_migration(&deleted, false).slot, Slot::Inactive);
    }

    #[test]
    fn active_neighbour() {
        let me = entry("a", 1, "db1", "users", Slot::Inactive);
        let other = entry("b", 2, "db1", "users", Slot::Active);
        let unrelated = entry("c", 2, "db1", "orders", Slot::Active);
        assert_eq!(
            active_on_same_table(&me, &[me.clone(), unrelated.clone()]),
            None
        );
        assert_eq!(
            active_on_same_table(&me, &[me.clone(), other.clone(), unrelated]),
            Some(&other)
        );
    }
}
