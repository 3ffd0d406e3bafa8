//! `maily-deploy rollback ENV ID`: back to the state deployment ID left.
//!
//! ID is a deployment id, or `previous`: the last good deployment before
//! the one users are on (`pipeline::rollback::previous`), as `kubectl
//! rollout undo` and a revision-less `helm rollback` go back one. Where
//! ID's release still runs in the idle slot, one switch; otherwise it
//! is rendered from the templates its snapshot kept, applied to the idle
//! slot (the AI services with the AI config the snapshot recorded), waited
//! for, and switched. The rollback is itself a deployment,
//! with its own id, lock and snapshot. The database is left alone.

use super::cluster;
use super::database as db_rollback;
use crate::cli::{DatabaseRollback, GlobalArgs};
use crate::error::{Kind, fail};
use crate::k8s::live;
use crate::k8s::manifest::Scope;
use crate::k8s::snapshot_store::SnapshotStore;
use crate::output::{self, OutputOptions};
use crate::phases::configure_ai::ConfigureAi;
use crate::phases::deploy_frontend::{self, FrontendRecord};
use crate::phases::{deploy_backend::DeployBackend, shift_traffic::ShiftTraffic};
use crate::pipeline::layers;
use crate::pipeline::lifecycle::ClusterLifecycle;
use crate::pipeline::rollback::{PREVIOUS, RollbackPlan, plan, previous};
use crate::pipeline::snapshot::{Snapshot, id_lines};
use crate::pipeline::{DeploymentId, Phase, PhaseId, Runner};

pub async fn run(
    environment: &str,
    id_text: &str,
    dry_run: bool,
    database: Option<DatabaseRollback>,
    global: &GlobalArgs,
) -> anyhow::Result<i32> {
    if !dry_run {
        crate::interrupt::install()?;
    }
    // A malformed id is a usage error before anything is read.
    let wanted = if id_text == PREVIOUS {
        None
    } else {
        Some(DeploymentId::parse(environment, id_text)?)
    };
    let mut cx = cluster::context(
        environment,
        global,
        true,
        &[PhaseId::DeployBackend, PhaseId::ShiftTraffic],
        dry_run,
    )?;
    // A rollback goes back to a release users already ran: one route
    // change, no steps, and the slot it leaves stays up (rolling back the
    // rollback is one switch too).
    cx.options.traffic_steps = Some(vec![100]);
    cx.options.grace = Some(crate::config::traffic::Grace::Keep);
    // A rollback reads the env file its deploys read, Vault references and
    // all: it resolves them as a deploy does, for what it may use (the
    // backend and its platform secrets, the frontend's token, the database
    // when asked), before anything changes.
    let mut uses = vec![
        PhaseId::DeployBackend,
        PhaseId::DeployFrontend,
        PhaseId::ShiftTraffic,
    ];
    if database.is_some() {
        uses.push(PhaseId::Migrate);
    }
    let secrets = cx.config.profile.secrets.clone();
    cx.platform_secrets =
        crate::config::vault::resolve(&mut cx.config.vars, &uses, Some(&secrets)).await?;
    let applier = cx.applier().await?.clone();
    let profile = cx.config.profile.clone();
    let store = SnapshotStore::new(applier.client().clone(), &profile.namespace, environment);
    let live = live::read(&applier, &profile).await?;
    let target = match &wanted {
        Some(id) => match store.get(id.as_str()).await? {
            Some(target) => target,
            None => {
                return Err(fail(
                    Kind::Usage,
                    format!(
                        "no deployment {id} in {environment}; {}",
                        kept(&store.list().await?)
                    ),
                ));
            }
        },
        None => {
            let all = store.list().await?;
            previous(&live, &all)
                .map_err(|mut why| {
                    // No history at all names no environment of its own.
                    why.environment = environment.to_string();
                    fail(Kind::Usage, format!("{why}; {}", kept(&all)))
                })?
                .clone()
        }
    };
    let target_id = target.deployment_id.clone();
    let release_name = target.release_name();
    let decision = plan(&live, &target).map_err(|why| fail(Kind::Usage, why))?;
    // Decide the database half before changing anything, so a request that
    // cannot be met is refused with nothing done.
    let database_step = match database {
        None => None,
        Some(how) => Some(db_rollback::decide(how, &target, &store.list().await?)?),
    };

    // The frontend goes back to the Vercel deployment ID recorded, promoted
    // by shift-traffic after the backend switch (an undo like a deploy's
    // if the rollback fails after it).
    let missing = missing_variables(
        |name| cx.config.vars.get(name).is_some_and(|v| !v.is_empty()),
        &target_id,
        target.frontend.as_ref().map(|f| f.deployment_id.as_str()),
        database.is_some(),
    );
    if !missing.is_empty() {
        return Err(crate::error::Failure::with_problems(
            Kind::Config,
            "the rollback needs variables that are not set; nothing was changed",
            missing,
        )
        .into());
    }
    if let Some(record) = target.frontend.clone() {
        cx.records.frontend = Some(FrontendRecord {
            previous: None,
            promoted: false,
            undone: false,
            ..record
        });
    }

    // Render with the release and templates the snapshot kept, the
    // platform's shared objects too; a snapshot from before they were kept
    // takes them from the current manifests.
    cx.release_override = target.release.clone();
    let kept_platform = target.templates.iter().any(|t| t.scope == Scope::Platform);
    let mut templates: Vec<_> = if kept_platform {
        Vec::new()
    } else {
        cx.templates()?
            .iter()
            .filter(|t| t.scope == Scope::Platform)
            .cloned()
            .collect()
    };
    templates.extend(target.templates.iter().cloned());
    cx.use_templates(templates);
    // A deployment that carried a layer over recorded that layer's own
    // release and templates: each layer comes back as it ran.
    for layer in target.layers.keys() {
        if let Some((release, templates)) = layers::source_of(&target, *layer) {
            cx.layers.insert(
                *layer,
                layers::Recorded {
                    release,
                    templates,
                    services: Default::default(),
                    ai_config: target.ai_config.clone(),
                    carried_from: None,
                },
            );
        }
    }

    let (phases, slot): (Vec<Box<dyn Phase>>, _) = match decision {
        // Still a run with the lock and a snapshot: a run that died
        // mid-deploy is finished first (its users put back, its snapshot
        // closed), as any deploy would, and the frontend promotion is
        // recorded and undone like a deploy's.
        RollbackPlan::AlreadyThere { slot } => {
            cx.selection = cluster::only(&[PhaseId::ShiftTraffic]);
            cx.backend.deployed = true;
            let phase = AlreadyServing {
                target: Box::new(target.clone()),
                slot,
            };
            (vec![Box::new(phase)], slot)
        }
        RollbackPlan::Switch { slot } => {
            cx.selection = cluster::only(&[PhaseId::ShiftTraffic]);
            cx.backend.deployed = true;
            cx.backend.rollback_switch_only = true;
            (vec![Box::new(ShiftTraffic)], slot)
        }
        RollbackPlan::Redeploy { slot } => {
            // The AI services come back with the config they ran with, from
            // the snapshot, without asking the providers again.
            match target.ai_config.as_ref().map(|r| r.config.clone()) {
                Some(config) if profile.ai_services().next().is_some() => {
                    cx.selection = cluster::only(&[
                        PhaseId::DeployBackend,
                        PhaseId::ConfigureAi,
                        PhaseId::ShiftTraffic,
                    ]);
                    cx.records.ai_config = target.ai_config.clone();
                    (
                        vec![
                            Box::new(DeployBackend),
                            Box::new(ConfigureAi::restore(config)),
                            Box::new(ShiftTraffic),
                        ],
                        slot,
                    )
                }
                _ => (vec![Box::new(DeployBackend), Box::new(ShiftTraffic)], slot),
            }
        }
    };
    cx.backend.target_slot = Some(slot);
    cx.options.rollback_to = Some((target_id.clone(), release_name.clone()));
    // Repeated, it goes to the same deployment (`previous` resolved: a
    // rerun after this one must not pick another).
    cx.options.command_line = vec![
        "rollback".to_string(),
        environment.to_string(),
        target_id.to_string(),
    ];
    if let Some(how) = database {
        use clap::ValueEnum as _;
        if let Some(v) = how.to_possible_value() {
            cx.options
                .command_line
                .extend(["--database".to_string(), v.get_name().to_string()]);
        }
    }
    tracing::info!("rolling back to {target_id}: {}", decision.words());

    // Asked before anything changes: a "no" must not leave the backend
    // rolled back and the database not.
    let closing = match database_step {
        Some(step) => {
            let confirmed = if dry_run {
                None
            } else {
                Some(db_rollback::confirm(&cx, global, &step).await?)
            };
            Some(db_rollback::DatabaseBack { step, confirmed })
        }
        None => None,
    };

    let opts = OutputOptions::detect(global.output, global.quiet, global.verbose);
    // Which deployment and which release, before anything else is said:
    // `previous` names it here.
    if global.output == crate::cli::OutputFormat::Human && !global.quiet {
        output::stdout_line(&format!("rollback to {target_id} (release {release_name})"));
    }
    let mut observer = output::observer(&opts);
    // The plan was made from the platform as read before the lock. Taking
    // the lock may finish a run that died mid-run, moving users; a plan
    // made before that could redeploy the slot they are on now. So it is
    // made again there, and must come out the same.
    let still_holds = {
        let target = target.clone();
        let decision = decision.clone();
        let environment = environment.to_string();
        move |now: &crate::k8s::live::PlatformState| match plan(now, &target) {
            // A switch that became nothing to do (or the reverse) still
            // ends on the same slot without writing a release: the phase
            // chosen handles both.
            Ok(again)
                if again == decision
                    || (!again.deploys()
                        && !decision.deploys()
                        && again.slot() == decision.slot()) =>
            {
                Ok(())
            }
            Ok(again) => Err(format!(
                "users moved since this rollback looked (a run that died mid-run was finished first): it would now {} instead of {}; nothing was changed for the rollback; run `maily-deploy rollback {environment} {}` again",
                again.words(),
                decision.words(),
                target.deployment_id
            )),
            Err(why) => Err(why.to_string()),
        }
    };
    let mut runner = Runner::new(phases).with_lifecycle(Box::new(
        ClusterLifecycle::new("rollback", Some(target_id.clone()))
            .with_precondition(Box::new(still_holds)),
    ));
    // The backend goes back first, the database after it, both under the
    // rollback's lock: the older code runs against the newer schema
    // (expand, then contract), never the other way round.
    if let Some(step) = closing {
        runner = runner.with_closing(Box::new(step));
    }
    // The id is final before the first line announces it.
    if !dry_run {
        crate::pipeline::lifecycle::settle_id(&mut cx).await;
    }
    let target_text = target_id.to_string();
    let report = crate::notify::around("rollback", Some(&target_text), &mut cx, |cx| {
        runner.run("rollback", cx, observer.as_mut())
    })
    .await;
    observer.run_finished(&report);
    Ok(report.exit_code)
}

/// The deployments kept, for a message whose target was not there: one a
/// line, newest first, with release and time (the ten newest).
fn kept(all: &[Snapshot]) -> String {
    if all.is_empty() {
        return "none is recorded yet".to_string();
    }
    let shown = &all[..all.len().min(10)];
    format!(
        "the deployments kept, newest first:\n{}",
        id_lines(shown).join("\n")
    )
}

/// The rollback whose release already serves users: nothing to switch, the
/// frontend (if recorded) to promote. It runs in shift-traffic's place, so
/// under the lock, after dead runs are finished, and re-checks the live
/// state it finds there: finishing a dead run may have moved users.
struct AlreadyServing {
    target: Box<crate::pipeline::snapshot::Snapshot>,
    slot: crate::k8s::slot::Slot,
}

impl AlreadyServing {
    fn headline(&self) -> String {
        format!(
            "{} already runs {}'s release on {}",
            self.target.environment, self.target.deployment_id, self.slot
        )
    }
}

#[async_trait::async_trait]
impl Phase for AlreadyServing {
    fn id(&self) -> PhaseId {
        PhaseId::ShiftTraffic
    }

    async fn plan(
        &self,
        cx: &crate::pipeline::Context,
    ) -> anyhow::Result<crate::pipeline::PhasePlan> {
        let mut steps = vec!["no switch: users are on that release".to_string()];
        if cx.records.frontend.is_some() {
            steps.push("promote the frontend deployment it recorded".into());
        }
        Ok(crate::pipeline::PhasePlan {
            summary: self.headline(),
            steps,
        })
    }

    async fn run(
        &self,
        cx: &mut crate::pipeline::Context,
    ) -> anyhow::Result<crate::pipeline::PhaseReport> {
        let applier = cx.applier().await?.clone();
        let live = live::read(&applier, &cx.config.profile).await?;
        match plan(&live, &self.target) {
            Ok(RollbackPlan::AlreadyThere { slot }) if slot == self.slot => {}
            Ok(now) => {
                return Err(fail(
                    Kind::PhaseFailed,
                    format!(
                        "users moved since this rollback looked (a run that died mid-run was finished first): it would now {}; run `maily-deploy rollback {} {}` again",
                        now.words(),
                        self.target.environment,
                        self.target.deployment_id
                    ),
                ));
            }
            Err(why) => return Err(fail(Kind::PhaseFailed, why)),
        }
        let mut details = Vec::new();
        if let Some(line) = deploy_frontend::promote_recorded(cx).await? {
            details.push(line);
        }
        Ok(crate::pipeline::PhaseReport {
            summary: self.headline(),
            details,
        })
    }
}

/// Every variable the rollback will need and is not set, named at once:
/// the token that promotes the frontend `target` recorded back, and the
/// database's address and backup location when `--database` asks for it.
fn missing_variables(
    set: impl Fn(&str) -> bool,
    target: &DeploymentId,
    frontend: Option<&str>,
    database: bool,
) -> Vec<crate::error::Problem> {
    let mut wanted: Vec<(&str, String, &str)> = Vec::new();
    if let Some(deployment) = frontend {
        wanted.push((
            "VERCEL_TOKEN",
            format!("is not set; {target} recorded the Vercel deployment {deployment} for the frontend, and promoting it back needs the token"),
            "set VERCEL_TOKEN (or its vault: reference) in the env file",
        ));
    }
    if database {
        wanted.push((
            "DATABASE_URL",
            "is not set; --database goes back on the database, and needs its address".into(),
            "set DATABASE_URL (a postgres:// URL or a vault: reference)",
        ));
        wanted.push((
            "DATABASE_BACKUP_URL",
            "is not set; --database takes a backup first (and a restore reads one), and needs to know where backups go".into(),
            "set DATABASE_BACKUP_URL (s3://bucket/prefix or file:///path)",
        ));
    }
    wanted
        .into_iter()
        .filter(|(name, _, _)| !set(name))
        .map(|(name, problem, fix)| crate::error::Problem {
            phase: None,
            subject: name.into(),
            problem,
            fix: fix.into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_variable_is_named_at_once() {
        let id = DeploymentId::parse("production", "production-20250101-120000").unwrap();
        let none = |_: &str| false;
        let names = |p: Vec<crate::error::Problem>| -> Vec<String> {
            p.into_iter().map(|p| p.subject).collect()
        };
        assert_eq!(
            names(missing_variables(none, &id, Some("dpl_1"), true)),
            ["VERCEL_TOKEN", "DATABASE_URL", "DATABASE_BACKUP_URL"]
        );
        assert!(missing_variables(none, &id, None, false).is_empty());
        let only_token = |n: &str| n == "VERCEL_TOKEN";
        assert_eq!(
            names(missing_variables(only_token, &id, Some("dpl_1"), true)),
            ["DATABASE_URL", "DATABASE_BACKUP_URL"]
        );
        let first = &missing_variables(none, &id, Some("dpl_1"), false)[0];
        assert!(first.problem.contains("dpl_1"), "{first:?}");
    }
}
