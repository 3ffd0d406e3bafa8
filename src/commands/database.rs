//! The database half of `rollback --database`: what to do, decided from
//! the snapshots before anything changes, then done.

use std::fmt;

use crate::cli::{DatabaseRollback, GlobalArgs};
use crate::db;
use crate::error::{Kind, fail};
use crate::phases::migrate::{settings, typed};
use crate::pipeline::Context;
use crate::pipeline::snapshot::Snapshot;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseStep {
    /// Down migrations to this schema version.
    Down { version: i64 },
    /// Restore the backup taken by a later deployment.
    Restore { backup: String, taken_by: String },
}

impl fmt::Display for DatabaseStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseStep::Down { version } => write!(f, "down migrations to schema {version}"),
            DatabaseStep::Restore { backup, taken_by } => {
                write!(f, "restore backup {backup} (taken by {taken_by})")
            }
        }
    }
}

fn schema_after(s: &Snapshot) -> Option<i64> {
    s.database.as_ref()?.version_after
}

fn backup_of(s: &Snapshot) -> Option<String> {
    Some(s.database.as_ref()?.backup.as_ref()?.name.clone())
}

/// Decide the database step for going back to `target`, given every
/// snapshot (newest first). Pure; refuses with the reason.
pub fn decide(
    how: DatabaseRollback,
    target: &Snapshot,
    all: &[Snapshot],
) -> anyhow::Result<DatabaseStep> {
    match how {
        DatabaseRollback::Down => {
            // The schema ID left: its own record, or the newest before it.
            let version = all
                .iter()
                .filter(|s| s.deployment_id <= target.deployment_id)
                .find_map(schema_after)
                .ok_or_else(|| {
                    fail(
                        Kind::Usage,
                        format!(
                            "no schema version is recorded for {} or any deployment before it (migrate never ran); --database down has no target",
                            target.deployment_id
                        ),
                    )
                })?;
            Ok(DatabaseStep::Down { version })
        }
        DatabaseRollback::Restore => {
            // The backup the first run after ID took before it changed the
            // database (a migration, a migration down, a restore) is the
            // database as ID left it.
            let mut later: Vec<&Snapshot> = all
                .iter()
                .filter(|s| s.deployment_id > target.deployment_id)
                .collect();
            later.sort_by(|a, b| a.deployment_id.cmp(&b.deployment_id));
            let (backup, taken_by) = later
                .iter()
                .find_map(|s| backup_of(s).map(|b| (b, s.deployment_id.to_string())))
                .ok_or_else(|| {
                    fail(
                        Kind::Usage,
                        format!(
                            "no run after {} took a database backup (none migrated, went down or restored), so the database is still as {} left it; nothing to restore",
                            target.deployment_id, target.deployment_id
                        ),
                    )
                })?;
            Ok(DatabaseStep::Restore { backup, taken_by })
        }
    }
}

/// The step, asked for and its backup found: everything that can refuse
/// has refused before the run begins, so a "no" at the prompt (or a backup
/// that is not there) leaves nothing half rolled back.
pub enum Confirmed {
    Down { version: i64 },
    Restore(Box<db::BackupRecord>),
}

/// Find what the step needs and ask the operator, before anything changes.
pub async fn confirm(
    cx: &Context,
    global: &GlobalArgs,
    step: &DatabaseStep,
) -> anyhow::Result<Confirmed> {
    match step {
        DatabaseStep::Down { version } => {
            // Everything the down migrations need, checked before users
            // are moved: after the switch a refusal would only move them
            // back.
            let s = settings(cx)?;
            db::check_down_to(&s, *version).await.map_err(typed)?;
            super::cluster::confirm(
                global,
                cx.environment(),
                &format!(
                    "This runs down migrations on the {} database to schema {version}, after a backup",
                    cx.environment()
                ),
            )?;
            Ok(Confirmed::Down { version: *version })
        }
        DatabaseStep::Restore { backup, .. } => Ok(Confirmed::Restore(Box::new(
            super::db::find_and_confirm(cx, global, backup, false).await?,
        ))),
    }
}

/// The database going back, as the closing step of a rollback: after the
/// backend switch (the older code runs against the newer schema, never the
/// other way round), under the rollback's lock and in its snapshot.
pub struct DatabaseBack {
    pub step: DatabaseStep,
    /// `None` in a dry run, which only plans.
    pub confirmed: Option<Confirmed>,
}

#[async_trait::async_trait]
impl crate::pipeline::Phase for DatabaseBack {
    fn id(&self) -> crate::pipeline::PhaseId {
        crate::pipeline::PhaseId::Migrate
    }

    /// Down migrations stop between two (a restore stopped mid-way puts the
    /// database back as it was instead, see `db::restore`).
    fn stops_at_a_safe_point(&self) -> bool {
        matches!(self.confirmed, Some(Confirmed::Down { .. }))
    }

    async fn plan(&self, _cx: &Context) -> anyhow::Result<crate::pipeline::PhasePlan> {
        Ok(crate::pipeline::PhasePlan {
            summary: format!("would take the database back: {}", self.step),
            steps: vec![],
        })
    }

    async fn run(&self, cx: &mut Context) -> anyhow::Result<crate::pipeline::PhaseReport> {
        let recording = crate::phases::migrate::settings_recording_backups(cx).await?;
        let s = &recording.settings;
        let Some(confirmed) = &self.confirmed else {
            anyhow::bail!("the database step was not confirmed before the run (a bug)");
        };
        let summary = match confirmed {
            Confirmed::Down { version } => {
                let out = match db::migrate_down_to(s, *version).await {
                    Ok(out) => out,
                    Err(e) => {
                        recording.keep_backup(cx);
                        return Err(typed(e));
                    }
                };
                cx.records.database = Some(out.clone().into());
                format!(
                    "database: {} down migrations, schema {} → {}{}",
                    out.reverted.len(),
                    out.version_before.map_or("-".into(), |v| v.to_string()),
                    out.version_after.map_or("-".into(), |v| v.to_string()),
                    out.backup
                        .map(|b| format!("; backup first at {}", b.location))
                        .unwrap_or_default()
                )
            }
            Confirmed::Restore(backup) => {
                let out = match db::restore(s, backup).await {
                    Ok(out) => out,
                    Err(e) => {
                        recording.keep_backup(cx);
                        return Err(typed(e));
                    }
                };
                cx.records.database = Some(out.clone().into());
                format!(
                    "database: restored {}; the database as it was is in {}",
                    out.restored.name, out.safety_backup.location
                )
            }
        };
        // The rollback is complete only now: its rollout record says so
        // here, so a run that dies before its end is closed as the success
        // it was, not undone (users sent to newer code on the older schema).
        complete_rollout(cx).await;
        Ok(crate::pipeline::PhaseReport {
            summary,
            details: vec![],
        })
    }
}

/// Mark this run's rollout complete in the rollout record (a warning if it
/// cannot be: the run's end tries again).
async fn complete_rollout(cx: &Context) {
    use crate::traffic::record::{self, Stage};
    let Some(id) = cx.deployment_id.clone() else {
        return;
    };
    let written = async {
        let applier = cx.applier().await?;
        applier.may_change().await?;
        let ns = &cx.config.profile.namespace;
        let rec = record::read(applier.client(), ns).await?;
        record::close(applier.client(), ns, &rec, &id, Stage::Completed, None).await
    }
    .await;
    if let Err(e) = written {
        tracing::warn!("recording the rollback complete: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::snapshot::tests_support::sample;

    fn snap(id: &str, version: Option<i64>, backup: Option<&str>) -> Snapshot {
        let mut s = sample();
        s.deployment_id = id.parse().unwrap();
        let backup = backup.map(|name| db::BackupRecord {
            name: name.into(),
            location: format!("file:///backups/{name}.dump"),
            deployment_id: id.into(),
            reason: db::BackupReason::PreMigrate,
            size_bytes: 1,
            sha256: String::new(),
            verified: true,
            schema_version: version.map(|v| v - 1),
            database: "db:5432/maily as deployer".into(),
            schemas: vec!["public".into()],
            pg_dump_version: "17".into(),
            created_at: s.started_at,
            duration_ms: 1,
        });
        s.database = Some(db::MigrateOutcome {
            deployment_id: id.into(),
            action: db::MigrateAction::Applied,
            version_before: version.map(|v| v - 1),
            version_after: version,
            applied: Vec::new(),
            backup,
            source: Some(db::MigrationSource::Embedded),
            duration_ms: 1,
            stopped: false,
        });
        s
    }

    #[test]
    fn down_targets_the_schema_the_deployment_left() {
        let all = vec![
            snap("p-20250103-000000", Some(7), Some("b3")),
            snap("p-20250102-000000", Some(6), None),
            snap("p-20250101-000000", Some(5), Some("b1")),
        ];
        assert_eq!(
            decide(DatabaseRollback::Down, &all[1], &all).unwrap(),
            DatabaseStep::Down { version: 6 }
        );
    }

    #[test]
    fn restore_takes_the_backup_the_next_migrating_deployment_took() {
        let all = vec![
            snap("p-20250104-000000", Some(8), Some("b4")),
            snap("p-20250103-000000", Some(7), Some("b3")),
            snap("p-20250102-000000", Some(6), None),
        ];
        assert_eq!(
            decide(DatabaseRollback::Restore, &all[2], &all).unwrap(),
            DatabaseStep::Restore {
                backup: "b3".into(),
                taken_by: "p-20250103-000000".into()
            }
        );
    }

    #[test]
    fn refusals_say_why() {
        let mut none = sample();
        none.database = None;
        let all = vec![none.clone()];
        let err = decide(DatabaseRollback::Down, &none, &all).unwrap_err();
        assert!(err.to_string().contains("migrate never ran"));
        let err = decide(DatabaseRollback::Restore, &none, &all).unwrap_err();
        assert!(err.to_string().contains("nothing to restore"));
    }
}
