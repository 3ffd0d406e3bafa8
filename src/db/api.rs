//! The operations the CLI calls: status, migrate, migrate down, list
//! backups, restore. Each is a short story over the modules that own the
//! nouns (migration set, migrator, backup, store, restore).

use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};

use super::backup::{self, BackupReason, BackupRecord, BackupRequest, PgTools};
use super::connection::DatabaseUrl;
use super::error::DbError;
use super::fingerprint::schema_fingerprint;
use super::migrations::{MigrationInfo, MigrationSet, MigrationSource, MigrationStatus, plan};
use super::migrator::{self, Direction, Limits, Recovery, StepReport, recovery_for};
use super::restore::{RestoreRequest, restore_file};
use super::store::{BackupStore, Listing};

/// Everything the database operations need, from the environment's
/// configuration. `Debug` never shows the password.
#[derive(Clone)]
pub struct MigrateSettings {
    /// `DATABASE_URL`; TLS as its `sslmode` asks.
    pub database_url: String,
    /// `MIGRATIONS_DIR`; `None` or a missing directory uses the migrations
    /// compiled into the binary.
    pub migrations_dir: Option<PathBuf>,
    /// `DATABASE_BACKUP_URL`: `file:///path/` or `s3://bucket/prefix/`.
    /// Required by every operation that changes the database.
    pub backup_url: Option<String>,
    /// Extra `object_store` S3 options (`aws_endpoint`, `aws_allow_http`,
    /// credentials) on top of the `AWS_*` environment variables.
    pub backup_store_options: Vec<(String, String)>,
    /// The run's deployment id; backups are named after it.
    pub deployment_id: String,
    /// Longest any one migration statement may run.
    pub statement_timeout: Duration,
    /// Longest a migration statement may wait for a table lock, so that it
    /// never queues production traffic behind it.
    pub lock_timeout: Duration,
    /// Longest to wait for another run holding the migration lock.
    pub migration_lock_wait: Duration,
    /// The schemas the migrations own: what backups dump and restores replace.
    pub schemas: Vec<String>,
    /// Where `pg_dump`/`pg_restore` are; `None` uses `PATH`.
    pub pg_bin_dir: Option<PathBuf>,
    /// Parallel workers for `pg_restore --jobs`.
    pub restore_jobs: usize,
    /// Cancelled when the run must stop (a signal, the deploy lock lost):
    /// a migration then stops at its next safe point ([`migrator::run_steps`])
    /// and says so in its outcome, rather than being cut mid-statement.
    pub stop: CancellationToken,
    /// Told of each backup once it is taken and verified, before the
    /// database changes; an error stops the operation there. A deploy
    /// writes it into the run's snapshot, so a run killed mid-migration
    /// still says which backup holds the database as it was.
    pub on_backup: Option<OnBackup>,
}

/// See [`MigrateSettings::on_backup`].
pub type OnBackup = std::sync::Arc<
    dyn Fn(BackupRecord) -> futures::future::BoxFuture<'static, anyhow::Result<()>> + Send + Sync,
>;

impl std::fmt::Debug for MigrateSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = DatabaseUrl::parse(&self.database_url)
            .map(|u| u.target())
            .unwrap_or_else(|_| "<invalid DATABASE_URL>".into());
        f.debug_struct("MigrateSettings")
            .field("database", &target)
            .field("migrations_dir", &self.migrations_dir)
            .field("backup_url", &self.backup_url)
            .field("deployment_id", &self.deployment_id)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("migration_lock_wait", &self.migration_lock_wait)
            .field("schemas", &self.schemas)
            .finish_non_exhaustive()
    }
}

impl MigrateSettings {
    /// Settings with the defaults: embedded migrations, no backup location,
    /// a 5 s lock timeout, a 10 min statement timeout, schema `public`.
    pub fn new(database_url: impl Into<String>, deployment_id: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            migrations_dir: None,
            backup_url: None,
            backup_store_options: Vec::new(),
            deployment_id: deployment_id.into(),
            statement_timeout: Duration::from_secs(600),
            lock_timeout: Duration::from_secs(5),
            migration_lock_wait: Duration::from_secs(600),
            schemas: vec!["public".into()],
            pg_bin_dir: None,
            restore_jobs: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(2),
            stop: CancellationToken::new(),
            on_backup: None,
        }
    }

    /// The database these settings reach, as backups record it
    /// (`host:port/database as user`), never with the password.
    pub fn target(&self) -> String {
        DatabaseUrl::parse(&self.database_url)
            .map(|u| u.target())
            .unwrap_or_else(|_| "<invalid DATABASE_URL>".into())
    }

    fn limits(&self) -> Limits {
        Limits {
            statement_timeout: self.statement_timeout,
            lock_timeout: self.lock_timeout,
        }
    }

    fn tools(&self) -> PgTools {
        PgTools {
            bin_dir: self.pg_bin_dir.clone(),
        }
    }

    fn store(&self, what: &str) -> Result<BackupStore> {
        BackupStore::open(self.backup_location(what)?, &self.backup_store_options)
    }

    /// The store, to read from only: a `file://` directory not there yet is
    /// an empty location, not created.
    fn store_to_read(&self, what: &str) -> Result<BackupStore> {
        BackupStore::open_to_read(self.backup_location(what)?, &self.backup_store_options)
    }

    /// `DATABASE_BACKUP_URL`, which `what` needs.
    fn backup_location(&self, what: &str) -> Result<&str, DbError> {
        self.backup_url
            .as_deref()
            .ok_or_else(|| DbError::NoBackupLocation {
                what: what.to_owned(),
            })
    }
}

/// Where the database stands: applied, pending, drift. Changes nothing.
pub async fn status(settings: &MigrateSettings) -> Result<MigrationStatus> {
    Ok(read_status(settings).await?.1)
}

/// The migrations and where the database stands against them, on a
/// session of its own.
async fn read_status(settings: &MigrateSettings) -> Result<(MigrationSet, MigrationStatus)> {
    let set = MigrationSet::load(settings.migrations_dir.as_deref()).await?;
    let db = DatabaseUrl::parse(&settings.database_url)?;
    let mut conn = db.connect().await?;
    let rows = migrator::applied_rows(&mut conn).await?;
    let _ = conn.close().await;
    let status = plan(&rows, &set);
    Ok((set, status))
}

/// What `migrate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrateAction {
    /// Nothing was pending; no backup was taken.
    NothingPending,
    /// The pending migrations were applied after a verified backup.
    Applied,
    /// Down migrations ran after a verified backup (`rollback --database
    /// down`); `applied` lists them, newest first.
    Reverted,
    /// A backup replaced the schemas (`db restore`, `rollback --database
    /// restore`); `backup` is the database as it was just before.
    Restored,
}

/// The record of a `migrate` run, for the deployment snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateOutcome {
    pub deployment_id: String,
    pub action: MigrateAction,
    pub version_before: Option<i64>,
    pub version_after: Option<i64>,
    pub applied: Vec<StepReport>,
    /// Taken before the change: the database as the one before left it,
    /// which `rollback --database restore` to that one restores.
    pub backup: Option<BackupRecord>,
    /// The migrations run; `None` for a restore, which runs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<MigrationSource>,
    pub duration_ms: u64,
    /// The run was stopped at a safe point: `applied` lists what was done
    /// before, the rest was not begun (or rolled back with its transaction).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
}

/// `work`, unless `stop` is cancelled first (`None`): for the waits before
/// a migration's first change (the migration lock, the backup).
async fn until_stopped<T>(
    stop: &CancellationToken,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        () = stop.cancelled() => None,
        r = work => Some(r),
    }
}

/// Applies the pending migrations: under the migration lock, after a
/// verified backup, each in a transaction, restoring the backup if a
/// failure left committed work behind.
///
/// A second run started meanwhile waits for the lock and then finds
/// nothing pending. Errors: [`DbError::Connect`], [`DbError::ChecksumDrift`]
/// and the other plan errors, [`DbError::NoBackupLocation`],
/// [`DbError::BackupFailed`], [`DbError::MigrationFailed`].
pub async fn migrate(settings: &MigrateSettings) -> Result<MigrateOutcome> {
    let started = Instant::now();
    let set = MigrationSet::load(settings.migrations_dir.as_deref()).await?;
    let db = DatabaseUrl::parse(&settings.database_url)?;
    let mut conn = db.connect().await?;
    tracing::debug!(elapsed = ?started.elapsed(), "connected");
    if !migrator::lock_unless_stopped(&mut conn, &db, settings.migration_lock_wait, &settings.stop)
        .await?
    {
        let version = current_version(&mut conn).await.ok().flatten();
        let _ = conn.close().await;
        return Ok(MigrateOutcome {
            deployment_id: settings.deployment_id.clone(),
            action: MigrateAction::NothingPending,
            version_before: version,
            version_after: version,
            applied: Vec::new(),
            backup: None,
            source: Some(set.source.clone()),
            duration_ms: started.elapsed().as_millis() as u64,
            stopped: true,
        });
    }
    tracing::debug!(elapsed = ?started.elapsed(), "migration lock taken");
    let result = migrate_locked(&mut conn, &db, &set, settings, started).await;
    migrator::unlock(&mut conn).await;
    let _ = conn.close().await;
    result
}

async fn migrate_locked(
    conn: &mut PgConnection,
    db: &DatabaseUrl,
    set: &MigrationSet,
    settings: &MigrateSettings,
    started: Instant,
) -> Result<MigrateOutcome> {
    let status = plan(&migrator::applied_rows(conn).await?, set);
    if let Some(err) = status.blocking_error() {
        return Err(err.into());
    }
    let mut outcome = MigrateOutcome {
        deployment_id: settings.deployment_id.clone(),
        action: MigrateAction::NothingPending,
        version_before: status.current_version,
        version_after: status.current_version,
        applied: Vec::new(),
        backup: None,
        source: Some(set.source.clone()),
        duration_ms: 0,
        stopped: false,
    };
    if status.pending.is_empty() {
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(outcome);
    }

    let store = settings.store("migrating")?;
    let fingerprint_before = schema_fingerprint(conn, &settings.schemas).await?;
    let backup = take_backup(
        db,
        &store,
        settings,
        BackupReason::PreMigrate,
        status.current_version,
    );
    let Some(record) = until_stopped(&settings.stop, backup).await.transpose()? else {
        outcome.stopped = true;
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(outcome);
    };

    let steps: Vec<_> = status
        .pending
        .iter()
        .filter_map(|m| set.up(m.version))
        .collect();
    let run = migrator::run_steps(
        conn,
        db,
        &steps,
        Direction::Up,
        settings.limits(),
        &settings.stop,
    );
    match run.await {
        Ok(steps) => {
            outcome.action = if steps.done.is_empty() {
                MigrateAction::NothingPending
            } else {
                MigrateAction::Applied
            };
            // Read back rather than taken from the last step: an older
            // migration applied out of order is not the newest version.
            outcome.version_after = current_version(conn).await?;
            outcome.applied = steps.done;
            outcome.stopped = steps.stopped;
            outcome.backup = Some(record);
            outcome.duration_ms = started.elapsed().as_millis() as u64;
            Ok(outcome)
        }
        Err(failure) => {
            let recovery = recovery_for(failure.done.len(), &failure.left);
            let expected = Expected {
                version: status.current_version,
                fingerprint: fingerprint_before,
            };
            let (restored, words) = recover(conn, db, settings, &record, recovery, &expected).await;
            Err(DbError::MigrationFailed {
                version: failure.failed.version,
                name: failure.failed.name,
                cause: db.redact(&failure.cause),
                restored,
                recovery: words,
                backup_location: record.location.clone(),
            }
            .into())
        }
    }
}

/// What the database looked like before a run, to verify a restore against.
struct Expected {
    version: Option<i64>,
    fingerprint: String,
}

/// Brings the database back after a failed run, as `recovery` says, and
/// tells whether it is now as it was, with the words for the report.
async fn recover(
    conn: &mut PgConnection,
    db: &DatabaseUrl,
    settings: &MigrateSettings,
    record: &BackupRecord,
    recovery: Recovery,
    expected: &Expected,
) -> (bool, String) {
    match recovery {
        Recovery::NothingCommitted => (
            true,
            "its transaction was rolled back and nothing else had committed; the backup was not needed".into(),
        ),
        Recovery::RestoreBackup => {
            tracing::warn!(location = %record.location, "a migration left committed work behind; restoring the backup");
            if let Err(e) = usable_session(conn, db, settings.migration_lock_wait).await {
                return (
                    false,
                    db.redact(&format!(
                        "restoring {} could not begin: {e:#}; restore it with `maily-deploy db restore`",
                        record.location
                    )),
                );
            }
            match restore_and_verify(conn, db, settings, record, expected).await {
                Ok(()) => (
                    true,
                    format!("committed work was undone by restoring {} and verifying the schema", record.location),
                ),
                Err(e) => (
                    false,
                    db.redact(&format!("restoring {} failed: {e:#}", record.location)),
                ),
            }
        }
        Recovery::Unknown(why) => (
            false,
            db.redact(&format!(
                "whether it committed could not be read back ({why}), so nothing was restored; \
                 `maily-deploy db status` shows what is applied"
            )),
        ),
    }
}

/// Makes `conn` a session that answers and holds the migration lock: the
/// one the run failed on, or a new one when the failure took that away
/// (and the lock with it), so a restore does not run beside another run.
async fn usable_session(conn: &mut PgConnection, db: &DatabaseUrl, wait: Duration) -> Result<()> {
    if conn.ping().await.is_ok() {
        return Ok(());
    }
    tracing::warn!("the migration's session was lost; opening a new one for the restore");
    let mut fresh = db.connect().await?;
    migrator::lock(&mut fresh, wait).await?;
    *conn = fresh;
    Ok(())
}

async fn restore_and_verify(
    conn: &mut PgConnection,
    db: &DatabaseUrl,
    settings: &MigrateSettings,
    record: &BackupRecord,
    expected: &Expected,
) -> Result<()> {
    let store = settings.store("restoring")?;
    let dump = store.fetch(record).await?;
    backup::check_against_record(dump.path(), record).await?;
    restore_file(
        conn,
        RestoreRequest {
            db,
            tools: &settings.tools(),
            record,
            dump: dump.path(),
            jobs: settings.restore_jobs,
        },
    )
    .await?;
    let version = current_version(conn).await?;
    let fingerprint = schema_fingerprint(conn, &settings.schemas).await?;
    if version != expected.version || fingerprint != expected.fingerprint {
        anyhow::bail!(
            "after the restore the schema is at version {} with fingerprint {fingerprint}, \
             expected version {} with fingerprint {}",
            version_words(version),
            version_words(expected.version),
            expected.fingerprint
        );
    }
    Ok(())
}

/// A schema version as a message says it: the number, or `none` before the
/// first migration.
fn version_words(version: Option<i64>) -> String {
    version.map_or("none".to_string(), |v| v.to_string())
}

async fn current_version(conn: &mut PgConnection) -> Result<Option<i64>> {
    Ok(migrator::applied_rows(conn)
        .await?
        .iter()
        .filter(|r| r.success)
        .map(|r| r.version)
        .max())
}

async fn take_backup(
    db: &DatabaseUrl,
    store: &BackupStore,
    settings: &MigrateSettings,
    reason: BackupReason,
    schema_version: Option<i64>,
) -> Result<BackupRecord> {
    let record = backup::take(BackupRequest {
        db,
        store,
        tools: &settings.tools(),
        deployment_id: &settings.deployment_id,
        reason,
        schema_version,
        schemas: &settings.schemas,
        lock_timeout: settings.lock_timeout,
    })
    .await?;
    if let Some(told) = &settings.on_backup {
        told(record.clone()).await.with_context(|| {
            format!(
                "recording the backup {} before the database changes; nothing was changed",
                record.location
            )
        })?;
    }
    Ok(record)
}

/// The record of a `migrate_down_to` run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownOutcome {
    pub deployment_id: String,
    pub version_before: Option<i64>,
    pub version_after: Option<i64>,
    /// The down migrations run, newest first.
    pub reverted: Vec<StepReport>,
    /// Taken before the first down migration; `None` when nothing was to revert.
    pub backup: Option<BackupRecord>,
    pub source: MigrationSource,
    pub duration_ms: u64,
    /// Stopped at a safe point, as [`MigrateOutcome::stopped`].
    pub stopped: bool,
}

/// Whether a backup recorded as taken of `recorded` is of the database
/// `target` reaches: the same host, port and database, whoever logged in
/// (both as [`MigrateSettings::target`] words them).
pub fn same_database(recorded: &str, target: &str) -> bool {
    let place = |t: &str| t.split(" as ").next().unwrap_or(t).trim().to_string();
    place(recorded) == place(target)
}

impl MigrateOutcome {
    /// What a run has done to the database once `backup` is taken and
    /// before anything else: the record of an operation begun, whose end
    /// is not known (no version after, nothing applied yet).
    pub fn backup_taken(backup: BackupRecord) -> MigrateOutcome {
        MigrateOutcome {
            deployment_id: backup.deployment_id.clone(),
            action: match backup.reason {
                BackupReason::PreMigrate => MigrateAction::Applied,
                BackupReason::PreDown => MigrateAction::Reverted,
                BackupReason::PreRestore => MigrateAction::Restored,
                // Never: the tool takes no daily backup, the CronJob does.
                BackupReason::Daily => MigrateAction::NothingPending,
            },
            version_before: backup.schema_version,
            version_after: None,
            applied: Vec::new(),
            backup: Some(backup),
            source: None,
            duration_ms: 0,
            stopped: false,
        }
    }
}

/// What the snapshot of the run that migrated down records, so a later
/// `rollback --database` knows the schema it left and the backup of the
/// database before it.
impl From<DownOutcome> for MigrateOutcome {
    fn from(d: DownOutcome) -> Self {
        MigrateOutcome {
            deployment_id: d.deployment_id,
            action: if d.reverted.is_empty() {
                MigrateAction::NothingPending
            } else {
                MigrateAction::Reverted
            },
            version_before: d.version_before,
            version_after: d.version_after,
            applied: d.reverted,
            backup: d.backup,
            source: Some(d.source),
            duration_ms: d.duration_ms,
            stopped: d.stopped,
        }
    }
}

/// Runs down migrations until `target` is the newest applied version (0:
/// all of them), after a verified backup. Refuses with
/// [`DbError::CannotMigrateDown`] when the target is not an applied version
/// or a migration to revert has no `.down.sql`.
pub async fn migrate_down_to(settings: &MigrateSettings, target: i64) -> Result<DownOutcome> {
    let started = Instant::now();
    let set = MigrationSet::load(settings.migrations_dir.as_deref()).await?;
    let db = DatabaseUrl::parse(&settings.database_url)?;
    let mut conn = db.connect().await?;
    if !migrator::lock_unless_stopped(&mut conn, &db, settings.migration_lock_wait, &settings.stop)
        .await?
    {
        // Stopped while another run held the lock: nothing begun.
        let version = current_version(&mut conn).await.ok().flatten();
        let _ = conn.close().await;
        return Ok(DownOutcome {
            deployment_id: settings.deployment_id.clone(),
            version_before: version,
            version_after: version,
            reverted: Vec::new(),
            backup: None,
            source: set.source.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
            stopped: true,
        });
    }
    let result = down_locked(&mut conn, &db, &set, settings, target).await;
    migrator::unlock(&mut conn).await;
    let _ = conn.close().await;
    result.map(|mut outcome| {
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        outcome
    })
}

/// Whether [`migrate_down_to`] `target` can run, asked before anything
/// changes (a rollback asks it before it moves users): the backup
/// location, the database reachable, the target an applied version, and
/// a `.down.sql` for every migration to revert. Changes nothing.
pub async fn check_down_to(settings: &MigrateSettings, target: i64) -> Result<()> {
    settings.store_to_read("migrating down")?;
    let (set, status) = read_status(settings).await?;
    down_steps(&status, &set, target).map(|_| ())
}

/// The down migrations that take the database from `status` to `target`,
/// newest first, or why they cannot.
fn down_steps<'a>(
    status: &MigrationStatus,
    set: &'a MigrationSet,
    target: i64,
) -> Result<Vec<&'a sqlx::migrate::Migration>> {
    if let Some(err) = status.blocking_error() {
        return Err(err.into());
    }
    let refuse =
        |reason: String| -> anyhow::Error { DbError::CannotMigrateDown { target, reason }.into() };
    if target != 0 && !status.applied.iter().any(|m| m.version == target) {
        return Err(refuse(format!(
            "it is not an applied version (the database is at {})",
            status
                .current_version
                .map_or("no version".into(), |v| v.to_string())
        )));
    }
    let to_revert: Vec<&MigrationInfo> = status
        .applied
        .iter()
        .rev()
        .filter(|m| m.version > target)
        .collect();
    to_revert
        .iter()
        .map(|m| {
            set.down(m.version).ok_or_else(|| {
                refuse(format!(
                    "migration {} ({}) has no .down.sql; restore a backup instead",
                    m.version, m.name
                ))
            })
        })
        .collect()
}

async fn down_locked(
    conn: &mut PgConnection,
    db: &DatabaseUrl,
    set: &MigrationSet,
    settings: &MigrateSettings,
    target: i64,
) -> Result<DownOutcome> {
    let status = plan(&migrator::applied_rows(conn).await?, set);
    let steps = down_steps(&status, set, target)?;
    let mut outcome = DownOutcome {
        deployment_id: settings.deployment_id.clone(),
        version_before: status.current_version,
        version_after: status.current_version,
        reverted: Vec::new(),
        backup: None,
        source: set.source.clone(),
        duration_ms: 0,
        stopped: false,
    };
    if steps.is_empty() {
        return Ok(outcome);
    }

    let store = settings.store("migrating down")?;
    let fingerprint_before = schema_fingerprint(conn, &settings.schemas).await?;
    let backup = take_backup(
        db,
        &store,
        settings,
        BackupReason::PreDown,
        status.current_version,
    );
    let Some(record) = until_stopped(&settings.stop, backup).await.transpose()? else {
        outcome.stopped = true;
        return Ok(outcome);
    };
    let run = migrator::run_steps(
        conn,
        db,
        &steps,
        Direction::Down,
        settings.limits(),
        &settings.stop,
    );
    match run.await {
        Ok(steps) => {
            outcome.version_after = current_version(conn).await?;
            outcome.reverted = steps.done;
            outcome.stopped = steps.stopped;
            outcome.backup = Some(record);
            Ok(outcome)
        }
        Err(failure) => {
            let recovery = recovery_for(failure.done.len(), &failure.left);
            let expected = Expected {
                version: status.current_version,
                fingerprint: fingerprint_before,
            };
            let (restored, words) = recover(conn, db, settings, &record, recovery, &expected).await;
            Err(DbError::MigrationFailed {
                version: failure.failed.version,
                name: format!("{} (down)", failure.failed.name),
                cause: db.redact(&failure.cause),
                restored,
                recovery: words,
                backup_location: record.location.clone(),
            }
            .into())
        }
    }
}

/// Takes a verified backup now, named after the settings' deployment id
/// and `reason`, outside any migration (for `db backup`, or before a
/// restore done by hand).
pub async fn backup(settings: &MigrateSettings, reason: BackupReason) -> Result<BackupRecord> {
    let store = settings.store("a backup")?;
    let db = DatabaseUrl::parse(&settings.database_url)?;
    let mut conn = db.connect().await?;
    let version = current_version(&mut conn).await?;
    let _ = conn.close().await;
    take_backup(&db, &store, settings, reason, version).await
}

/// Every backup in a location, recorded or daily, newest first.
pub async fn list_backups(backup_url: &str, store_options: &[(String, String)]) -> Result<Listing> {
    BackupStore::open_to_read(backup_url, store_options)?
        .listing()
        .await
}

/// The backup named `wanted` (its name or location) or, failing that, the
/// newest one taken by deployment `wanted`, in `settings.backup_url`.
pub async fn find_backup(settings: &MigrateSettings, wanted: &str) -> Result<BackupRecord> {
    settings
        .store_to_read("finding a backup")?
        .find(wanted)
        .await
}

/// The record of a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOutcome {
    pub deployment_id: String,
    pub restored: BackupRecord,
    /// The database as it was just before the restore.
    pub safety_backup: BackupRecord,
    pub version_before: Option<i64>,
    pub version_after: Option<i64>,
    pub duration_ms: u64,
}

/// What the snapshot of the run that restored records: as for a migration,
/// the schema left and the backup of the database before.
impl From<RestoreOutcome> for MigrateOutcome {
    fn from(r: RestoreOutcome) -> Self {
        MigrateOutcome {
            deployment_id: r.deployment_id,
            action: MigrateAction::Restored,
            version_before: r.version_before,
            version_after: r.version_after,
            applied: Vec::new(),
            backup: Some(r.safety_backup),
            source: None,
            duration_ms: r.duration_ms,
            stopped: false,
        }
    }
}

/// Replaces the database's schemas with `backup`, after checking the backup
/// against its recorded checksum and reading it whole, and after taking a
/// fresh verified backup of the database as it is now. Asking for the
/// operator's confirmation is the caller's job.
pub async fn restore(settings: &MigrateSettings, backup: &BackupRecord) -> Result<RestoreOutcome> {
    let started = Instant::now();
    let store = settings.store("restoring")?;
    let tools = settings.tools();
    let dump = store.fetch(backup).await?;
    backup::check_against_record(dump.path(), backup).await?;
    backup::verify_file(&tools, dump.path())
        .await
        .map_err(|e| DbError::BackupCorrupt {
            location: backup.location.clone(),
            reason: format!("{e:#}"),
        })?;

    let db = DatabaseUrl::parse(&settings.database_url)?;
    let mut conn = db.connect().await?;
    migrator::lock(&mut conn, settings.migration_lock_wait).await?;
    let result = async {
        let version_before = current_version(&mut conn).await?;
        let safety = take_backup(
            &db,
            &store,
            settings,
            BackupReason::PreRestore,
            version_before,
        )
        .await?;
        restore_file(
            &mut conn,
            RestoreRequest {
                db: &db,
                tools: &tools,
                record: backup,
                dump: dump.path(),
                jobs: settings.restore_jobs,
            },
        )
        .await?;
        let version_after = current_version(&mut conn).await?;
        if version_after != backup.schema_version {
            return Err(anyhow::Error::new(DbError::RestoreFailed {
                location: backup.location.clone(),
                reason: format!(
                    "after the restore the schema is at version {}, but the backup recorded {}; \
                     the database as it was is in {}",
                    version_words(version_after),
                    version_words(backup.schema_version),
                    safety.location
                ),
            }));
        }
        Ok::<_, anyhow::Error>(RestoreOutcome {
            deployment_id: settings.deployment_id.clone(),
            restored: backup.clone(),
            safety_backup: safety,
            version_before,
            version_after,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
    .await
    .with_context(|| format!("restoring {} into {}", backup.location, db.target()));
    migrator::unlock(&mut conn).await;
    let _ = conn.close().await;
    result
}
