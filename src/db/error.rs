//! The kinds of database failure a caller must tell apart.
//!
//! Every public function of [`crate::db`] returns `anyhow::Result`, with
//! context saying what it was doing; where the *kind* of failure decides what
//! the caller does next (which exit code, whether to offer a restore), a
//! [`DbError`] sits in the error chain. Find it with [`DbError::find`].
//!
//! Messages never contain the password of `DATABASE_URL`: they are built from
//! the host, port, user and database only, and any text that comes from
//! PostgreSQL or its tools is passed through the URL's redaction first.

use thiserror::Error;

/// Why a connection to PostgreSQL could not be made. Separate from the
/// message so the CLI can map each to an exit code and a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The server rejected the password (SQLSTATE 28P01).
    WrongPassword,
    /// The server refused the login for another reason: no `pg_hba.conf`
    /// entry, unknown role, TLS required (SQLSTATE 28000).
    Rejected,
    /// The database named in the URL does not exist (SQLSTATE 3D000).
    UnknownDatabase,
    /// The host name did not resolve.
    UnknownHost,
    /// Nothing listens at the host and port.
    Refused,
    /// The TLS handshake failed.
    Tls,
    /// No answer within the connect timeout.
    Timeout,
    /// `DATABASE_URL` is not a valid PostgreSQL URL.
    InvalidUrl,
    /// Anything else.
    Other,
}

/// A database failure whose kind matters to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DbError {
    /// PostgreSQL could not be reached or refused the login.
    #[error("could not connect to PostgreSQL at {target}: {detail}; {hint}")]
    Connect {
        failure: ConnectFailure,
        /// `host:port/database as user`, never the password.
        target: String,
        detail: String,
        hint: String,
    },

    /// An applied migration's file changed since it was applied.
    #[error(
        "migration {version} ({name}) was changed after it was applied: its checksum no longer \
         matches the one recorded in _sqlx_migrations; restore the file as it was released and \
         put the change in a new migration"
    )]
    ChecksumDrift { version: i64, name: String },

    /// The database has a migration this release does not know.
    #[error(
        "the database has migration {version} applied but this release has no file for it; \
         deploy a release that contains it, or roll the database back to a version this release knows"
    )]
    UnknownAppliedMigration { version: i64 },

    /// A previous run left a migration marked as failed.
    #[error(
        "migration {version} is marked as failed in _sqlx_migrations by an earlier run; \
         inspect the database, fix or restore it, then delete that row"
    )]
    Dirty { version: i64 },

    /// Migrations are pending but no backup location is configured.
    #[error(
        "{what} needs a backup first but DATABASE_BACKUP_URL is not set; \
         set it to file:///path/ or s3://bucket/prefix/"
    )]
    NoBackupLocation { what: String },

    /// `DATABASE_BACKUP_URL` names no place backups can be kept.
    #[error(
        "DATABASE_BACKUP_URL {location} cannot hold backups: {reason}; \
         point it at a directory (file:///path/) or a bucket (s3://bucket/prefix/)"
    )]
    BadBackupLocation { location: String, reason: String },

    /// `MIGRATIONS_DIR` holds more, or larger files, than a release's
    /// migrations are; nothing was read into memory or applied.
    #[error("MIGRATIONS_DIR {dir} cannot be read as a release's migrations: {reason}")]
    BadMigrations { dir: String, reason: String },

    /// The backup could not be taken, stored or verified; nothing was changed.
    #[error("backup failed, the database was not changed: {reason}")]
    BackupFailed { reason: String },

    /// A stored backup does not match its recorded checksum or cannot be read.
    #[error("backup {location} cannot be used: {reason}")]
    BackupCorrupt { location: String, reason: String },

    /// No backup matches what the caller asked for.
    #[error(
        "no backup named or taken by {wanted:?} in {store}; list them with `maily-deploy db backups`"
    )]
    BackupNotFound { wanted: String, store: String },

    /// A restore was asked of a daily CronJob dump without a record.
    #[error(
        "{name} is a dump of the daily backup CronJob with no record beside it (no checksum, \
         schema list or schema version: the job wrote none before it wrote records), so it \
         cannot be checked or restored the way `db restore` restores; restore it by hand \
         with pg_restore as docs/db.md shows, or pick a recorded backup from \
         `maily-deploy db backups` ({location})"
    )]
    DailyDumpNotRestorable { name: String, location: String },

    /// A migration failed. `restored` tells whether the database is as it was
    /// before the run: either nothing had committed (the failing
    /// transaction was rolled back) or the backup was restored and verified.
    #[error("{}", migration_failed_message(*.version, .name, .cause, *.restored, .recovery))]
    MigrationFailed {
        version: i64,
        name: String,
        cause: String,
        restored: bool,
        /// What was done about it, in words, for the report.
        recovery: String,
        /// The backup taken before the run, for the snapshot.
        backup_location: String,
    },

    /// A down migration was asked for but cannot be run.
    #[error("cannot migrate down to version {target}: {reason}")]
    CannotMigrateDown { target: i64, reason: String },

    /// Restoring a backup failed.
    #[error("restore of {location} failed: {reason}")]
    RestoreFailed { location: String, reason: String },

    /// A restore would take objects outside what it puts back with it.
    #[error(
        "restoring {location} replaces schema {schemas} whole, which would take these with it: {}; \
         move extensions to a schema of their own (ALTER EXTENSION <name> SET SCHEMA extensions) \
         and the objects elsewhere off it, or restore by hand with pg_restore; nothing was changed",
        objects.join(", ")
    )]
    RestoreBlocked {
        location: String,
        schemas: String,
        objects: Vec<String>,
    },

    /// Another migrate run held the migration lock for too long.
    #[error(
        "another migrate run has held the migration lock on this database for more than {waited_secs}s; \
         wait for it to finish or find the session holding the advisory lock in pg_locks"
    )]
    LockWaitTimeout { waited_secs: u64 },
}

fn migration_failed_message(
    version: i64,
    name: &str,
    cause: &str,
    restored: bool,
    recovery: &str,
) -> String {
    let state = if restored {
        "the database is as it was before the run"
    } else {
        "the database may be partly migrated; restore the backup with `maily-deploy db restore`"
    };
    format!("migration {version} ({name}) failed: {cause}; {recovery}; {state}")
}

impl DbError {
    /// The first `DbError` in an error's chain, if any: the CLI maps it to
    /// an exit code.
    pub fn find(err: &anyhow::Error) -> Option<&DbError> {
        err.chain().find_map(|e| e.downcast_ref::<DbError>())
    }
}
