//! The database side of a deployment: migrations, backups, restores.
//!
//! The entry points are the functions of this module; the `migrate` phase,
//! `rollback --database` and the `db` subcommands call them. Each opens its
//! own connection from [`MigrateSettings::database_url`], and every one that
//! changes the database takes a verified backup first.

pub mod backup;
pub mod connection;
pub mod daily_backup;
pub mod error;
pub mod fingerprint;
pub mod migrations;
pub mod migrator;
pub mod restore;
pub mod store;
pub mod timeouts;

mod api;

pub use api::{
    DownOutcome, MigrateAction, MigrateOutcome, MigrateSettings, OnBackup, RestoreOutcome, backup,
    check_down_to, find_backup, list_backups, migrate, migrate_down_to, restore, same_database,
    status,
};
pub use backup::{BackupReason, BackupRecord};
pub use error::{ConnectFailure, DbError};
pub use migrations::{MigrationInfo, MigrationSource, MigrationStatus};
pub use migrator::StepReport;
pub use store::{DailyDump, Listing};
