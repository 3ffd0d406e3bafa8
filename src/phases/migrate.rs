//! migrate: back up the database, then apply the pending migrations.
//!
//! The work is the `db` library's (backup with pg_dump, verify, apply under
//! sqlx's advisory lock, restore on failure); this phase builds its settings
//! from the variables, records the outcome in the snapshot, and gives each
//! database failure the exit code its consequences call for.

use std::path::PathBuf;

use async_trait::async_trait;

use std::sync::{Arc, Mutex};

use crate::config::spec::duration_of;
use crate::db::{self, DbError, MigrateAction, MigrateSettings};
use crate::error::{Failure, Kind};
use crate::pipeline::{Context, Phase, PhaseId, PhasePlan, PhaseReport};

pub struct Migrate;

/// The library's settings from the run's variables.
pub fn settings(cx: &Context) -> anyhow::Result<MigrateSettings> {
    let var = |name: &str| {
        cx.config
            .vars
            .get(name)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let url = var("DATABASE_URL").ok_or_else(|| {
        crate::error::fail(
            Kind::Config,
            "DATABASE_URL is not set; the database step needs it: set it in the env file (a postgres:// URL or a vault: reference)",
        )
    })?;
    let id = cx
        .deployment_id
        .as_ref()
        .map(|d| d.to_string())
        .unwrap_or_else(|| format!("{}-manual", cx.environment()));
    let mut s = MigrateSettings::new(url, id);
    s.stop = cx.stop.clone();
    s.migrations_dir = var("MIGRATIONS_DIR").map(PathBuf::from);
    s.backup_url = var("DATABASE_BACKUP_URL");
    if let Some(t) = var("DATABASE_STATEMENT_TIMEOUT") {
        s.statement_timeout = duration_of("DATABASE_STATEMENT_TIMEOUT", Some(&t))
            .map_err(|e| anyhow::anyhow!("DATABASE_STATEMENT_TIMEOUT {e}"))?;
    }
    if let Some(t) = var("DATABASE_LOCK_TIMEOUT") {
        s.lock_timeout = duration_of("DATABASE_LOCK_TIMEOUT", Some(&t))
            .map_err(|e| anyhow::anyhow!("DATABASE_LOCK_TIMEOUT {e}"))?;
    }
    Ok(s)
}

/// [`settings`], with each backup written into the run's snapshot as soon
/// as it is taken and before the database changes: a run killed
/// mid-migration (or mid-restore) leaves a snapshot that names the backup
/// of the database as it found it, for `rollback --database restore`.
pub async fn settings_recording_backups(cx: &Context) -> anyhow::Result<RecordingBackups> {
    let mut settings = settings(cx)?;
    let taken: Arc<Mutex<Option<db::BackupRecord>>> = Arc::default();
    if let Some(writer) = crate::pipeline::lifecycle::SnapshotWriter::of(cx).await? {
        let kept = taken.clone();
        settings.on_backup = Some(Arc::new(move |record| {
            *kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(record.clone());
            let writer = writer.clone();
            Box::pin(async move {
                writer
                    .update(|snapshot| {
                        snapshot.database = Some(db::MigrateOutcome::backup_taken(record));
                    })
                    .await
            })
        }));
    }
    Ok(RecordingBackups { settings, taken })
}

/// Settings whose backups go into the run's snapshot as they are taken.
pub struct RecordingBackups {
    pub settings: MigrateSettings,
    taken: Arc<Mutex<Option<db::BackupRecord>>>,
}

impl RecordingBackups {
    /// After an operation that failed: the backup it took stays the run's
    /// database record (the run's end writes `cx.records` over what was
    /// written through).
    pub fn keep_backup(&self, cx: &mut Context) {
        if cx.records.database.is_none()
            && let Some(backup) = self.taken.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            cx.records.database = Some(db::MigrateOutcome::backup_taken(backup));
        }
    }
}

/// The kind of a database failure: what it means for the run's exit code.
pub fn kind_of(err: &anyhow::Error) -> Kind {
    match DbError::find(err) {
        Some(
            DbError::Connect { .. }
            | DbError::ChecksumDrift { .. }
            | DbError::UnknownAppliedMigration { .. }
            | DbError::Dirty { .. }
            | DbError::NoBackupLocation { .. }
            | DbError::BadBackupLocation { .. }
            | DbError::BadMigrations { .. },
        ) => Kind::Config,
        Some(DbError::LockWaitTimeout { .. }) => Kind::LockHeld,
        // Nothing was changed: the database is as it was (a backup that
        // failed, or one found damaged before the restore began).
        Some(
            DbError::RestoreBlocked { .. }
            | DbError::BackupFailed { .. }
            | DbError::BackupCorrupt { .. },
        ) => Kind::Refused,
        Some(
            DbError::MigrationFailed {
                restored: false, ..
            }
            | DbError::RestoreFailed { .. },
        ) => Kind::RollbackFailed,
        Some(
            DbError::CannotMigrateDown { .. }
            | DbError::BackupNotFound { .. }
            | DbError::DailyDumpNotRestorable { .. },
        ) => Kind::Usage,
        _ => Kind::PhaseFailed,
    }
}

/// A database error with its kind, the message carrying the library's
/// context (which never holds the password).
pub fn typed(err: anyhow::Error) -> anyhow::Error {
    // The library's chain often repeats a cause its context already says.
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain().map(|c| c.to_string()) {
        if !parts.iter().any(|p| p.contains(&cause)) {
            parts.push(cause);
        }
    }
    Failure::new(kind_of(&err), parts.join(": ")).into()
}

#[async_trait]
impl Phase for Migrate {
    fn id(&self) -> PhaseId {
        PhaseId::Migrate
    }

    fn stops_at_a_safe_point(&self) -> bool {
        true
    }

    async fn plan(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        let s = settings(cx)?;
        match db::status(&s).await {
            Ok(status) => {
                if let Some(e) = status.blocking_error() {
                    return Err(typed(anyhow::Error::new(e)));
                }
                let mut steps: Vec<String> = status
                    .pending
                    .iter()
                    .map(|m| format!("apply {} {}", m.version, m.name))
                    .collect();
                let summary = if steps.is_empty() {
                    format!(
                        "schema at {}: nothing pending, no backup",
                        status.current_version.unwrap_or(0)
                    )
                } else {
                    steps.insert(
                        0,
                        format!(
                            "back up with pg_dump to {} and verify it",
                            s.backup_url
                                .as_deref()
                                .unwrap_or("(no DATABASE_BACKUP_URL: the run would refuse)")
                        ),
                    );
                    format!("{} pending migrations, backup first", status.pending.len())
                };
                Ok(PhasePlan { summary, steps })
            }
            // A dry run may have no database at hand; the plan says so.
            Err(e) => Ok(PhasePlan {
                summary: "pending migrations unknown: the database cannot be reached".into(),
                steps: vec![format!("{e:#}")],
            }),
        }
    }

    async fn run(&self, cx: &mut Context) -> anyhow::Result<PhaseReport> {
        let recording = settings_recording_backups(cx).await?;
        let outcome = match db::migrate(&recording.settings).await {
            Ok(outcome) => outcome,
            Err(e) => {
                recording.keep_backup(cx);
                return Err(typed(e));
            }
        };
        cx.records.database = Some(outcome.clone());
        if outcome.stopped {
            // The runner ends the run as stopped; this is what the
            // database was left as, for the log (the snapshot has it all).
            tracing::warn!(
                "migrate stopped at a safe point: {} of the pending migrations applied, the rest not begun; schema at {}{}",
                outcome.applied.len(),
                outcome
                    .version_after
                    .map_or("no version".into(), |v| v.to_string()),
                outcome
                    .backup
                    .as_ref()
                    .map(|b| format!("; the database before is in {}", b.location))
                    .unwrap_or_default()
            );
        }
        let report = match outcome.action {
            MigrateAction::NothingPending => PhaseReport {
                summary: format!(
                    "schema at {}: nothing pending",
                    outcome.version_after.unwrap_or(0)
                ),
                details: Vec::new(),
            },
            // migrate applies; only rollback and restore revert or restore.
            MigrateAction::Applied | MigrateAction::Reverted | MigrateAction::Restored => {
                let mut details: Vec<String> = outcome
                    .applied
                    .iter()
                    .map(|m| format!("applied {} {} in {} ms", m.version, m.name, m.duration_ms))
                    .collect();
                if let Some(b) = &outcome.backup {
                    details.insert(
                        0,
                        format!(
                            "backup {} ({} bytes, sha256 {})",
                            b.location, b.size_bytes, b.sha256
                        ),
                    );
                }
                PhaseReport {
                    summary: format!(
                        "{} migrations applied ({} → {}), backup verified",
                        outcome.applied.len(),
                        outcome.version_before.unwrap_or(0),
                        outcome.version_after.unwrap_or(0)
                    ),
                    details,
                }
            }
        };
        Ok(report)
    }
}
