//! `maily-deploy db status|backups|restore ENV`: the database side for the
//! operator, and the database half of `rollback --database`.

use super::cluster;
use crate::cli::{GlobalArgs, OutputFormat};
use crate::config::validate::validate;
use crate::db::{self, BackupRecord};
use crate::error::{Failure, Kind, fail};
use crate::output;
use crate::phases::migrate::{settings, typed};
use crate::pipeline::{Context, PhaseId};

/// A context whose database variables are present and well-formed.
fn context(environment: &str, global: &GlobalArgs, deployment: bool) -> anyhow::Result<Context> {
    let cx = cluster::context(environment, global, deployment, &[PhaseId::Migrate], false)?;
    let v = validate(&cx.config.vars, &[PhaseId::Migrate]);
    if !v.problems.is_empty() {
        return Err(Failure::with_problems(
            Kind::Config,
            "the database settings have problems",
            v.problems,
        )
        .into());
    }
    Ok(cx)
}

pub async fn status(environment: &str, global: &GlobalArgs) -> anyhow::Result<i32> {
    let cx = context(environment, global, false)?;
    let s = db::status(&settings(&cx)?).await.map_err(typed)?;
    match global.output {
        OutputFormat::Json => {
            // The status's own fields, with the schema and environment as
            // the other commands' JSON carries them.
            let mut doc = serde_json::to_value(&s)?;
            if let Some(map) = doc.as_object_mut() {
                map.insert("schema".into(), "maily-deploy/db-status/v1".into());
                map.insert("environment".into(), environment.into());
            }
            output::stdout_line(&serde_json::to_string_pretty(&doc)?)
        }
        OutputFormat::Human => {
            output::stdout_line(&format!(
                "{environment}: schema at {} of {}",
                s.current_version
                    .map_or("nothing".into(), |v| v.to_string()),
                s.latest_version.map_or("nothing".into(), |v| v.to_string())
            ));
            for m in &s.applied {
                output::stdout_line(&format!("  applied  {} {}", m.version, m.name));
            }
            for m in &s.pending {
                output::stdout_line(&format!("  pending  {} {}", m.version, m.name));
            }
            for m in &s.drifted {
                output::stdout_line(&format!(
                    "  DRIFTED  {} {}: the file changed after it was applied",
                    m.version, m.name
                ));
            }
            for v in &s.unknown_applied {
                output::stdout_line(&format!(
                    "  UNKNOWN  {v}: applied, but this release has no file for it"
                ));
            }
            if let Some(v) = s.dirty {
                output::stdout_line(&format!(
                    "  FAILED   {v}: an earlier run left it marked failed"
                ));
            }
        }
    }
    Ok(if s.blocking_error().is_some() {
        crate::exit_code::CONFIG
    } else {
        crate::exit_code::SUCCESS
    })
}

fn reason_word(r: db::BackupReason) -> &'static str {
    match r {
        db::BackupReason::PreMigrate => "before migrate",
        db::BackupReason::PreDown => "before down",
        db::BackupReason::PreRestore => "before restore",
        db::BackupReason::Daily => "daily",
    }
}

fn backup_line(b: &BackupRecord) -> String {
    format!(
        "{}  {}  {} bytes  schema {}  {}  {}",
        b.created_at.format("%Y-%m-%d %H:%M:%S"),
        b.deployment_id,
        b.size_bytes,
        b.schema_version.map_or("-".into(), |v| v.to_string()),
        reason_word(b.reason),
        b.location
    )
}

/// The lines of `db backups`: recorded backups and daily dumps together,
/// newest first.
fn listing_lines(listing: &db::Listing) -> Vec<String> {
    let mut timed: Vec<_> = listing
        .backups
        .iter()
        .map(|b| (b.created_at, backup_line(b)))
        .chain(listing.daily.iter().map(|d| {
            (
                d.created_at,
                format!(
                    "{}  {}  {} bytes  schema -  daily, no record: restore by hand  {}",
                    d.created_at.format("%Y-%m-%d %H:%M:%S"),
                    d.name,
                    d.size_bytes,
                    d.location
                ),
            )
        }))
        .collect();
    timed.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    timed.into_iter().map(|(_, line)| line).collect()
}

pub async fn backups(environment: &str, global: &GlobalArgs) -> anyhow::Result<i32> {
    let cx = cluster::context(environment, global, false, &[PhaseId::Migrate], false)?;
    let url = cx
        .config
        .vars
        .get("DATABASE_BACKUP_URL")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            fail(
                Kind::Config,
                "DATABASE_BACKUP_URL is not set; it says where the backups are",
            )
        })?
        .to_string();
    let listing = db::list_backups(&url, &[]).await.map_err(typed)?;
    match global.output {
        OutputFormat::Json => {
            let mut doc = serde_json::to_value(&listing)?;
            if let Some(map) = doc.as_object_mut() {
                map.insert("schema".into(), "maily-deploy/db-backups/v1".into());
                map.insert("environment".into(), environment.into());
                map.insert("location".into(), url.clone().into());
            }
            output::stdout_line(&serde_json::to_string_pretty(&doc)?)
        }
        OutputFormat::Human => {
            let lines = listing_lines(&listing);
            if lines.is_empty() {
                output::stdout_line(&format!("no backups at {url}"));
            }
            for line in lines {
                output::stdout_line(&line);
            }
        }
    }
    Ok(crate::exit_code::SUCCESS)
}

/// Find a backup and ask before replacing the database with it.
pub async fn find_and_confirm(
    cx: &Context,
    global: &GlobalArgs,
    wanted: &str,
    from_another_database: bool,
) -> anyhow::Result<BackupRecord> {
    let s = settings(cx)?;
    let backup = db::find_backup(&s, wanted).await.map_err(typed)?;
    let target = s.target();
    if !from_another_database && !db::same_database(&backup.database, &target) {
        return Err(crate::error::fail(
            crate::error::Kind::Usage,
            format!(
                "backup {} was taken of {}, not of the {} database ({}): restoring it would put another database's rows here. If that is what you mean (a move to a new server), run `maily-deploy db restore {} {} --from-another-database`",
                backup.name,
                backup.database,
                cx.environment(),
                target,
                cx.environment(),
                backup.name
            ),
        ));
    }
    cluster::confirm(
        global,
        cx.environment(),
        &format!(
            "This replaces the {} database ({target}) with backup {} of {} (taken {} by {}); a fresh backup of the current database is taken first",
            cx.environment(),
            backup.name,
            backup.database,
            backup.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            backup.deployment_id
        ),
    )?;
    Ok(backup)
}

/// `db restore` is a run like a deploy: under the environment's lock (no
/// deploy migrates while the database is replaced), with its own snapshot
/// and `history` entry.
struct RestoreDatabase(Box<BackupRecord>);

#[async_trait::async_trait]
impl crate::pipeline::Phase for RestoreDatabase {
    fn id(&self) -> PhaseId {
        PhaseId::Migrate
    }

    async fn plan(&self, _cx: &Context) -> anyhow::Result<crate::pipeline::PhasePlan> {
        Ok(crate::pipeline::PhasePlan {
            summary: format!("would restore {}", self.0.name),
            steps: vec![],
        })
    }

    async fn run(&self, cx: &mut Context) -> anyhow::Result<crate::pipeline::PhaseReport> {
        let recording = crate::phases::migrate::settings_recording_backups(cx).await?;
        let outcome = match db::restore(&recording.settings, &self.0).await {
            Ok(outcome) => outcome,
            Err(e) => {
                recording.keep_backup(cx);
                return Err(typed(e));
            }
        };
        cx.records.database = Some(outcome.clone().into());
        Ok(crate::pipeline::PhaseReport {
            summary: format!(
                "restored {} (schema {} → {}); the database as it was is in {}",
                outcome.restored.name,
                outcome.version_before.map_or("-".into(), |v| v.to_string()),
                outcome.version_after.map_or("-".into(), |v| v.to_string()),
                outcome.safety_backup.location
            ),
            details: vec![],
        })
    }
}

pub async fn restore(
    environment: &str,
    wanted: &str,
    from_another_database: bool,
    global: &GlobalArgs,
) -> anyhow::Result<i32> {
    crate::interrupt::install()?;
    let mut cx = context(environment, global, true)?;
    let backup = find_and_confirm(&cx, global, wanted, from_another_database).await?;
    cx.selection = cluster::only(&[PhaseId::Migrate]);
    let opts = output::OutputOptions::detect(global.output, global.quiet, global.verbose);
    let mut observer = output::observer(&opts);
    let mut runner =
        crate::pipeline::Runner::new(vec![Box::new(RestoreDatabase(Box::new(backup)))])
            .with_lifecycle(Box::new(crate::pipeline::lifecycle::ClusterLifecycle::new(
                "db restore",
                None,
            )));
    crate::pipeline::lifecycle::settle_id(&mut cx).await;
    let report = crate::notify::around("db restore", None, &mut cx, |cx| {
        runner.run("db restore", cx, observer.as_mut())
    })
    .await;
    observer.run_finished(&report);
    Ok(report.exit_code)
}
