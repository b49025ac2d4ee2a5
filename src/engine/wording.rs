//! gh-ost's own texts for the refusals ghost shares with it (reference/gh-ost-messages.md, with
//! where gh-ost raises each). Scripts and dashboards match these texts, so ghost's message for
//! the same condition contains gh-ost's, filled in the way gh-ost fills it, and then says how to
//! fix it. Every refusal that gh-ost also makes takes its text from here.

/// `logic/inspect.go:111`
pub const NO_UNIQUE_KEY: &str = "no PRIMARY nor UNIQUE key found in table! Bailing out";
/// `logic/inspect.go:172`
pub const NO_SHARED_KEY: &str = "no shared unique key can be found after ALTER! Bailing out";
/// `logic/migrator.go:27`
pub const RENAMES_TABLE: &str = "alter statement seems to RENAME the table. This is not supported, and you should run your RENAME outside gh-ost";
/// `logic/migrator.go:28`
pub const RUN_ON_MASTER: &str = "it seems like this migration attempt to run directly on master. Preferably it would be executed on a replica (this reduces load from the master). To proceed please provide --allow-on-master";
/// `logic/migrator.go:1227`
pub const NOT_A_REPLICA: &str = "instructed to --test-on-replica or --migrate-on-replica, but the server we connect to doesn't seem to be a replica";
/// `cmd/gh-ost/main.go:234`
pub const ALTER_REQUIRED: &str = "--alter must be provided and statement must not be empty";
/// `cmd/gh-ost/main.go:266`
pub const DATABASE_REQUIRED: &str = "--database must be provided and database name must not be empty, or --alter must specify database name";
/// `cmd/gh-ost/main.go:278`
pub const TABLE_REQUIRED: &str =
    "--table must be provided and table name must not be empty, or --alter must specify table name";
/// `cmd/gh-ost/main.go:296`
pub const SKIP_REPLICA_STOP_REQUIRES: &str =
    "--test-on-replica-skip-replica-stop requires --test-on-replica to be enabled";
/// `cmd/gh-ost/main.go:331`
pub const TRIGGER_SUFFIX_CHARACTERS: &str =
    "--trigger-suffix must contain only alpha numeric characters and underscore (0-9,a-z,A-Z,_)";
/// `cmd/gh-ost/main.go:338`
pub const CHECKPOINT_SECONDS: &str = "--checkpoint-seconds should be >=10";
/// `cmd/gh-ost/main.go:322`
pub const TRIGGER_SUFFIX_WITH_INCLUDE: &str =
    "--trigger-suffix must be used with --include-triggers";
/// `cmd/gh-ost/main.go:325`
pub const TRIGGER_SUFFIX_WITHOUT_INCLUDE: &str =
    "--trigger-suffix cannot be be used without --include-triggers";
/// `cmd/gh-ost/main.go:241`
pub const REVERT_WITH_RESUME: &str = "--revert cannot be used with --resume";
/// `cmd/gh-ost/main.go:244`
pub const REVERT_NEEDS_OLD_TABLE: &str = "--revert must be called with --old-table";

/// `logic/inspect.go:179`
pub fn nullable_key(key: &str) -> String {
    format!(
        "chosen key ({key}) has nullable columns. Bailing out. To force this operation to continue, supply \
         --allow-nullable-unique-key flag. Only do so if you are certain there are no actual NULL values in \
         this key. As long as there aren't, migration should be fine. NULL values in columns of this key will \
         corrupt migration's data"
    )
}

/// `logic/inspect.go:214`
pub fn datetime_to_timestamp_key(column: &str, key: &str) -> String {
    format!(
        "no support at this time for converting a column from DATETIME to TIMESTAMP that is also part of the \
         chosen unique key. Column: {column}, key: {key}"
    )
}

/// `logic/inspect.go:287`
pub fn insufficient_privileges(database: &str) -> String {
    format!(
        "user has insufficient privileges for migration. Needed: SUPER|REPLICATION CLIENT, REPLICATION SLAVE and ALL on {database}.*"
    )
}

/// `logic/inspect.go:364`
pub fn binlog_format_not_row(format: &str) -> String {
    format!(
        "existing binlog_format is {format}. Am not switching it to ROW unless you specify --switch-to-rbr"
    )
}

/// `logic/inspect.go:395`
pub fn no_binary_logs(host: &str) -> String {
    format!("{host} must have binary logs enabled")
}

/// `logic/inspect.go:421`
pub fn row_image_not_full(host: &str, image: &str) -> String {
    format!(
        "{host} has '{image}' binlog_row_image, and only 'FULL' is supported. This operation cannot proceed. \
         You may `set global binlog_row_image='full'` and try again"
    )
}

/// `logic/inspect.go:470`
pub fn log_slave_updates_on_replica(host: &str) -> String {
    format!("{host} must have log_slave_updates enabled for testing/migrating on replica")
}

/// `logic/inspect.go:491`
pub fn is_a_view(database: &str, table: &str) -> String {
    format!("{database}.{table} is a VIEW, not a real table. Bailing out")
}

/// `logic/inspect.go:501`
pub fn cannot_find_table(database: &str, table: &str) -> String {
    format!("cannot find table {database}.{table}!")
}

/// `logic/inspect.go:547`
pub fn parent_side_foreign_keys(count: u64, database: &str, table: &str) -> String {
    format!(
        "found {count} parent-side foreign keys on {database}.{table}. Parent-side foreign keys are not supported. Bailing out"
    )
}

/// `logic/inspect.go:554`
pub fn child_side_foreign_keys(count: u64, database: &str, table: &str) -> String {
    format!(
        "found {count} child-side foreign keys on {database}.{table}. Child-side foreign keys are not supported. Bailing out"
    )
}

/// `logic/inspect.go:596`
pub fn triggers_found(database: &str, table: &str) -> String {
    format!(
        "found triggers on {database}.{table}. Tables with triggers are supported only when using \"include-triggers\" flag. Bailing out"
    )
}

/// `logic/inspect.go:624`
pub fn ghost_triggers_exist(names: &str) -> String {
    format!(
        "found gh-ost triggers ({names}). Please use a different suffix or drop them. Bailing out"
    )
}

/// `logic/inspect.go:641`
pub fn ghost_triggers_too_long(names: &str, max: usize) -> String {
    format!("gh-ost triggers ({names}) length > {max} characters. Bailing out")
}

/// `logic/migrator.go:398`
pub fn renames_columns(renames: &str) -> String {
    format!(
        "gh-ost believes the ALTER statement renames columns, as follows: {renames}; as precaution, you are asked \
         to confirm gh-ost is correct, and provide with `--approve-renamed-columns`, and we're all happy. Or you can \
         skip renamed columns via `--skip-renamed-columns`, in which case column data may be lost"
    )
}

/// `logic/applier.go:416` and `:428`: `flag` is the one that drops it.
pub fn table_exists(table: &str, flag: &str) -> String {
    format!(
        "table {table} already exists. Panicking. Use {flag} to force dropping it, though I really prefer that \
         you drop it or rename it away"
    )
}

/// `logic/applier.go:212`
pub fn migration_lock_held(database: &str, table: &str, lock: &str) -> String {
    format!(
        "another gh-ost process is already migrating `{database}`.`{table}`: migration lock {lock} is held"
    )
}

/// `logic/throttler.go:397`, from the throttler's breach (`Threads_running=55 >= 50`).
pub fn critical_load_met(breach: &str) -> String {
    format!("critical-load met: {}", breach.replacen(" >= ", ", >=", 1))
}

/// `cmd/gh-ost/main.go:283..292`
pub fn mutually_exclusive(a: &str, b: &str) -> String {
    format!("--{a} and --{b} are mutually exclusive")
}

/// `cmd/gh-ost/main.go:301..316` (`--master-user requires --assume-master-host`, `--ssl-ca
/// requires --ssl`, ...).
pub fn requires(flag: &str, needed: &str) -> String {
    format!("--{flag} requires --{needed}")
}

/// `cmd/gh-ost/main.go:350`
pub fn unknown_cut_over(value: &str) -> String {
    format!("Unknown cut-over: {value}")
}

/// `logic/migrator.go:444`
pub fn postpone_flag_file(error: &str) -> String {
    format!(
        "--postpone-cut-over-flag-file indicated by gh-ost is unable to create said file: {error}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each message against gh-ost's own text as the reference lists it, with its verbs filled
    /// in, so a change here that drifts from gh-ost fails.
    #[test]
    fn every_shared_refusal_carries_gh_osts_text() {
        let table: Vec<(String, &str)> = vec![
            (
                NO_UNIQUE_KEY.into(),
                "no PRIMARY nor UNIQUE key found in table! Bailing out",
            ),
            (
                NO_SHARED_KEY.into(),
                "no shared unique key can be found after ALTER! Bailing out",
            ),
            (
                nullable_key("uk"),
                "chosen key (uk) has nullable columns. Bailing out. To force this operation to continue, supply --allow-nullable-unique-key flag. Only do so if you are certain there are no actual NULL values in this key. As long as there aren't, migration should be fine. NULL values in columns of this key will corrupt migration's data",
            ),
            (
                datetime_to_timestamp_key("c", "PRIMARY"),
                "no support at this time for converting a column from DATETIME to TIMESTAMP that is also part of the chosen unique key. Column: c, key: PRIMARY",
            ),
            (
                insufficient_privileges("shop"),
                "user has insufficient privileges for migration. Needed: SUPER|REPLICATION CLIENT, REPLICATION SLAVE and ALL on shop.*",
            ),
            (
                binlog_format_not_row("STATEMENT"),
                "existing binlog_format is STATEMENT. Am not switching it to ROW unless you specify --switch-to-rbr",
            ),
            (
                no_binary_logs("h:3306"),
                "h:3306 must have binary logs enabled",
            ),
            (
                row_image_not_full("h:3306", "MINIMAL"),
                "h:3306 has 'MINIMAL' binlog_row_image, and only 'FULL' is supported. This operation cannot proceed. You may `set global binlog_row_image='full'` and try again",
            ),
            (
                log_slave_updates_on_replica("h:3306"),
                "h:3306 must have log_slave_updates enabled for testing/migrating on replica",
            ),
            (
                is_a_view("d", "t"),
                "d.t is a VIEW, not a real table. Bailing out",
            ),
            (cannot_find_table("d", "t"), "cannot find table d.t!"),
            (
                parent_side_foreign_keys(2, "d", "t"),
                "found 2 parent-side foreign keys on d.t. Parent-side foreign keys are not supported. Bailing out",
            ),
            (
                child_side_foreign_keys(1, "d", "t"),
                "found 1 child-side foreign keys on d.t. Child-side foreign keys are not supported. Bailing out",
            ),
            (
                triggers_found("d", "t"),
                "found triggers on d.t. Tables with triggers are supported only when using ",
            ),
            (
                ghost_triggers_exist("t_bi_gho"),
                "found gh-ost triggers (t_bi_gho). Please use a different suffix or drop them. Bailing out",
            ),
            (
                ghost_triggers_too_long("x", 64),
                "gh-ost triggers (x) length > 64 characters. Bailing out",
            ),
            (
                RENAMES_TABLE.into(),
                "alter statement seems to RENAME the table. This is not supported, and you should run your RENAME outside gh-ost",
            ),
            (
                RUN_ON_MASTER.into(),
                "it seems like this migration attempt to run directly on master. Preferably it would be executed on a replica (this reduces load from the master). To proceed please provide --allow-on-master",
            ),
            (
                renames_columns("map[a:b]"),
                "gh-ost believes the ALTER statement renames columns, as follows: map[a:b]; as precaution, you are asked to confirm gh-ost is correct, and provide with `--approve-renamed-columns`, and we're all happy. Or you can skip renamed columns via `--skip-renamed-columns`, in which case column data may be lost",
            ),
            (
                NOT_A_REPLICA.into(),
                "instructed to --test-on-replica or --migrate-on-replica, but the server we connect to doesn't seem to be a replica",
            ),
            (
                table_exists("`d`.`_t_gho`", "--initially-drop-ghost-table"),
                "table `d`.`_t_gho` already exists. Panicking. Use --initially-drop-ghost-table to force dropping it, though I really prefer that you drop it or rename it away",
            ),
            (
                migration_lock_held("d", "t", "gh-ost.d.t"),
                "another gh-ost process is already migrating `d`.`t`: migration lock gh-ost.d.t is held",
            ),
            (
                critical_load_met("Threads_running=55 >= 50"),
                "critical-load met: Threads_running=55, >=50",
            ),
            (
                mutually_exclusive("allow-on-master", "test-on-replica"),
                "--allow-on-master and --test-on-replica are mutually exclusive",
            ),
            (requires("ssl-ca", "ssl"), "--ssl-ca requires --ssl"),
            (
                requires("master-user", "assume-master-host"),
                "--master-user requires --assume-master-host",
            ),
            (
                SKIP_REPLICA_STOP_REQUIRES.into(),
                "--test-on-replica-skip-replica-stop requires --test-on-replica to be enabled",
            ),
            (
                TRIGGER_SUFFIX_CHARACTERS.into(),
                "--trigger-suffix must contain only alpha numeric characters and underscore (0-9,a-z,A-Z,_)",
            ),
            (
                CHECKPOINT_SECONDS.into(),
                "--checkpoint-seconds should be >=10",
            ),
            (
                TRIGGER_SUFFIX_WITH_INCLUDE.into(),
                "--trigger-suffix must be used with --include-triggers",
            ),
            (
                TRIGGER_SUFFIX_WITHOUT_INCLUDE.into(),
                "--trigger-suffix cannot be be used without --include-triggers",
            ),
            (
                REVERT_WITH_RESUME.into(),
                "--revert cannot be used with --resume",
            ),
            (
                REVERT_NEEDS_OLD_TABLE.into(),
                "--revert must be called with --old-table",
            ),
            (unknown_cut_over("fast"), "Unknown cut-over: fast"),
            (
                ALTER_REQUIRED.into(),
                "--alter must be provided and statement must not be empty",
            ),
            (
                DATABASE_REQUIRED.into(),
                "--database must be provided and database name must not be empty, or --alter must specify database name",
            ),
            (
                TABLE_REQUIRED.into(),
                "--table must be provided and table name must not be empty, or --alter must specify table name",
            ),
            (
                postpone_flag_file("permission denied"),
                "--postpone-cut-over-flag-file indicated by gh-ost is unable to create said file: permission denied",
            ),
        ];
        for (ours, gh_ost) in table {
            assert!(
                ours.contains(gh_ost),
                "{ours:?}\ndoes not contain gh-ost's\n{gh_ost:?}"
            );
        }
    }
}
