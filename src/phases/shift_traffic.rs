//! shift-traffic: users to the new slot, step by step.
//!
//! The steps come from the profile (or `--traffic-steps`): at each one the
//! routes' weights move and the workers split as the profile says, and the
//! step holds while analysis measures the new slot through Prometheus. At
//! 100% the stable Services' selectors move and the frontend is promoted;
//! the old slot stays scaled for the grace period, then scales to 0. A
//! failed analysis, or `abort` from another terminal, fails the phase and
//! the runner's undo puts users back in one route change.

use async_trait::async_trait;

use super::deploy_frontend;
use crate::config::traffic::{Grace, Pause};
use crate::error::{Kind, fail};
use crate::k8s::live::{self, Active};
use crate::k8s::slot::Slot;
use crate::pipeline::{Context, Phase, PhaseId, PhasePlan, PhaseReport};
use crate::providers::prometheus::Prometheus;
use crate::traffic::plan::{RolloutPlan, percents};
use crate::traffic::report::human;
use crate::traffic::shift::{Ending, Walk};

pub struct ShiftTraffic;

/// The slot to switch to: the one deploy-backend filled in this run, or,
/// when resuming (`--from shift-traffic`), the idle slot, provided it runs
/// this release.
async fn target(cx: &Context) -> anyhow::Result<Slot> {
    if let Some(slot) = cx.backend.target_slot {
        return Ok(slot);
    }
    let applier = cx.applier().await?;
    let state = live::read(applier, &cx.config.profile).await?;
    let slot = state
        .target_slot()
        .map_err(|why| fail(Kind::PhaseFailed, why))?;
    let release = cx.release()?;
    let missing: Vec<String> = state
        .services
        .iter()
        // AI services users never reached join only when the slot runs them
        // (see `switched_profile`).
        .filter(|(name, s)| !(cx.config.profile.is_ai(name) && s.active.is_none()))
        .filter(|(name, s)| s.image_in(slot).map(String::from) != cx.expected_image(name).ok())
        .map(|(name, s)| format!("{name} ({})", s.image_in(slot).unwrap_or("nothing")))
        .collect();
    if !missing.is_empty() {
        return Err(fail(
            Kind::PhaseFailed,
            format!(
                "the idle slot {slot} does not run {} for: {}; run deploy-backend first (drop --from/--skip-backend)",
                release.image_tag,
                missing.join(", ")
            ),
        ));
    }
    Ok(slot)
}

/// The profile of the services this switch moves: every service, but the
/// AI services users have never reached and that the target slot does not
/// run at this release (configure-ai not run yet on this environment). An
/// AI service users reach whose target slot does not run this release is
/// refused before anything changes: the switch would strand it on the old
/// slot or move it to old code.
async fn switched_profile(cx: &Context, slot: Slot) -> anyhow::Result<crate::config::Profile> {
    let profile = &cx.config.profile;
    if profile.ai_services().next().is_none() {
        return Ok(profile.clone());
    }
    let state = live::read(cx.applier().await?, profile).await?;
    let release = cx.layer_release(crate::pipeline::layers::Layer::Ai)?;
    let (out, stale) = crate::traffic::plan::switchable(
        profile,
        &state,
        |n| cx.expected_image(n).ok(),
        slot,
        |n| profile.is_ai(n),
    );
    if !stale.is_empty() {
        return Err(fail(
            Kind::PhaseFailed,
            format!(
                "the AI services users reach would be left behind: the slot {slot} does not run {} for {}; run configure-ai in the same run (drop --skip-ai)",
                release.image_tag,
                stale.join(", ")
            ),
        ));
    }
    Ok(out)
}

/// The plan of this run: the profile's traffic, the command line's
/// overrides, and whether the environment has users on an old slot yet.
/// The platform's shared objects rendered from the run's templates (a
/// rollback's snapshot's, or today's manifests) and applied, recorded
/// first so that a failure puts them back.
async fn platform_before_switch(
    cx: &mut Context,
    release: &crate::k8s::values::Release,
) -> anyhow::Result<()> {
    use crate::k8s::manifest::{self, Scope};
    let objects: Vec<_> = manifest::render(
        cx.templates()?,
        &[Scope::Platform],
        &crate::k8s::values::common(release, &cx.config.profile),
    )?
    .into_iter()
    .map(|(_, o)| o)
    .collect();
    crate::pipeline::undo::record(cx, crate::pipeline::undo::Undo::Platform);
    let applied = cx.applier().await?.apply_all(objects).await.map_err(|e| {
        e.context("putting the platform's shared objects back as the release ran with them")
    })?;
    tracing::info!(
        "the platform's shared objects as {}: {applied}",
        release.image_tag
    );
    Ok(())
}

fn rollout_plan(cx: &Context, before: Option<&live::PlatformState>) -> RolloutPlan {
    let first = before.is_some_and(|b| matches!(b.active(), Active::Fresh));
    RolloutPlan::new(
        &cx.config.profile.traffic,
        cx.options.traffic_steps.as_deref(),
        cx.options.grace,
        first,
    )
}

/// A rollback's plan: users back to a release they ran, in one switch
/// (the rollback sets its steps to 100 and keeps the slot it leaves), in
/// those words.
fn switch_back_plan(cx: &Context, id: &crate::pipeline::DeploymentId, release: &str) -> PhasePlan {
    let slot = cx
        .backend
        .target_slot
        .map_or("its slot".to_string(), |s| s.to_string());
    let other = cx
        .backend
        .target_slot
        .map_or("the slot users leave".to_string(), |s| {
            s.other().to_string()
        });
    let mut steps = vec![format!(
        "one switch: every route and stable Service to {slot}, its workers up and {other}'s to 0"
    )];
    if let Some(r) = &cx.records.frontend {
        steps.push(format!(
            "promote the Vercel deployment {} to production (POST /v10/projects/{}/promote/{})",
            r.deployment_id, r.project_id, r.deployment_id
        ));
    }
    steps.push(format!(
        "{other} stays up: going forward again is one switch too"
    ));
    PhasePlan {
        summary: format!("users back to release {release} ({id}) on {slot}"),
        steps,
    }
}

#[async_trait]
impl Phase for ShiftTraffic {
    fn id(&self) -> PhaseId {
        PhaseId::ShiftTraffic
    }

    async fn plan(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        if let Some((id, release)) = &cx.options.rollback_to {
            return Ok(switch_back_plan(cx, id, release));
        }
        let profile = &cx.config.profile;
        let before = match cx.applier().await {
            Ok(applier) => live::read(applier, profile).await.ok(),
            Err(_) => None,
        };
        let plan = rollout_plan(cx, before.as_ref());
        let mut steps = Vec::new();
        if let Some(note) = &plan.note {
            steps.push(note.clone());
        }
        for percent in &plan.steps {
            if *percent < 100 {
                let analysis = match &profile.traffic.analysis {
                    Some(a) => format!(
                        "; analysis every {} ({}; at least {} samples; {} failure(s) tolerated; no verdict {} past the pause aborts)",
                        human(a.interval),
                        a.metrics
                            .iter()
                            .map(|m| m.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        a.samples.min,
                        a.failure_limit,
                        human(a.inconclusive_timeout)
                    ),
                    None => "; no analysis in the profile".into(),
                };
                let hold = match plan.pause {
                    Pause::Manual => "until `maily-deploy promote --step`".to_string(),
                    Pause::For(d) => format!("for {}", human(d)),
                };
                steps.push(format!(
                    "{percent}% of users on the new slot {hold}{analysis}"
                ));
            } else {
                steps.push(
                    "100%: every route and stable Service to the new slot, all its workers up and the old slot's workers to 0".into(),
                );
            }
        }
        if let Some(r) = &cx.records.frontend {
            steps.push(format!(
                "promote the Vercel deployment {} to production (POST /v10/projects/{}/promote/{})",
                r.deployment_id, r.project_id, r.deployment_id
            ));
        } else if cx.selection.is_selected(PhaseId::DeployFrontend) {
            steps.push(
                "promote the Vercel deployment deploy-frontend built; a failure after it promotes the previous one back".into(),
            );
        }
        steps.push(match plan.grace {
            Grace::Keep => "the old slot stays up until the next deploy: a rollback is one switch".into(),
            Grace::For(d) => format!(
                "the old slot stays scaled for {} (analysis goes on; an abort is one route change), then scales to 0",
                human(d)
            ),
        });
        Ok(PhasePlan {
            summary: format!("move users to the new slot: {}", percents(&plan.steps)),
            steps,
        })
    }

    async fn applies(&self, cx: &Context) -> anyhow::Result<Vec<kube::api::DynamicObject>> {
        let slot = cx.target_slot().await?;
        // With configure-ai in the run, its services are in the slot by the
        // time users move; without it, only those the slot runs move.
        let profile = if cx.runs_ai() {
            cx.config.profile.clone()
        } else {
            switched_profile(cx, slot).await?
        };
        crate::k8s::route::routes_at(&profile, cx.templates()?, &cx.release()?, |_| {
            (slot, crate::k8s::route::all_to(slot))
        })
    }

    async fn run(&self, cx: &mut Context) -> anyhow::Result<PhaseReport> {
        let slot = target(cx).await?;
        deploy_frontend::prepare_promotion(cx).await?;
        let release = cx.release()?;
        let applier = cx.applier().await?.clone();
        let profile = switched_profile(cx, slot).await?;
        cx.backend.target_slot = Some(slot);
        let before = match cx.backend.before.clone() {
            Some(b) => b,
            None => live::read(&applier, &cx.config.profile).await?,
        };
        let plan = rollout_plan(cx, Some(&before));
        let prometheus = match (&profile.traffic.analysis, plan.is_analysed()) {
            (Some(_), true) => {
                let url = cx
                    .config
                    .vars
                    .get("PROMETHEUS_URL")
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        fail(
                            Kind::Config,
                            "the profile's traffic analysis needs PROMETHEUS_URL",
                        )
                    })?;
                Some(std::sync::Arc::new(Prometheus::new(url)?)
                    as std::sync::Arc<dyn crate::traffic::analysis::MetricSource>)
            }
            _ => None,
        };
        let mut walk = Walk::new(
            std::sync::Arc::new(crate::traffic::router::ClusterRouter {
                applier,
                graces: crate::k8s::rollout::graces(&cx.config.vars),
            }),
            profile,
            cx.templates()?.to_vec(),
            release.clone(),
            before,
            slot,
            plan,
            prometheus,
            cx.progress.clone(),
            cx.records.frontend.clone(),
            cx.deployment_id
                .clone()
                .ok_or_else(|| anyhow::anyhow!("shift-traffic run without a deployment id"))?,
        );
        walk.rollout.command_line = cx.options.command_line.clone();

        // A rollback that is only a switch writes the platform's shared
        // objects as the release it goes back to ran with them (from the
        // templates its snapshot kept), and a deploy resumed past
        // deploy-backend as this release has them: a switch never moves
        // users to a release under another's.
        if cx.platform_with_switch() {
            platform_before_switch(cx, &release).await?;
        }

        // From the first step, users reach the new version: the runner's
        // undo must put them back.
        cx.backend.switched = true;
        crate::pipeline::undo::record(cx, crate::pipeline::undo::Undo::Routes);
        let walked = walk.steps().await;
        cx.records.rollout = Some(walk.report.clone());
        let ending = walked?;
        // The frontend follows the backend, never leads it: promoted only
        // once every route points at the new slot.
        let frontend = deploy_frontend::promote_recorded(cx).await?;
        let graced = walk.grace(matches!(ending, Ending::Walked)).await;
        cx.records.rollout = Some(walk.report.clone());
        graced?;
        // With a closing step to come (a rollback's database), the run's
        // end records the rollout complete, once that step is done too.
        if !cx.closing_follows {
            walk.complete().await?;
        }
        let mut details = walk.report.lines();
        details.extend(frontend);
        let how = match &ending {
            Ending::Walked => percents(&walk.plan.steps),
            Ending::Promoted(by) => format!("promoted by {by}"),
        };
        let old = match (walk.plan.grace, walk.rollout.from) {
            (_, None) => "first switch".to_string(),
            (Grace::Keep, Some(old)) => format!("{old} kept up for rollback"),
            (Grace::For(_), Some(old)) => format!("{old} scaled down after its grace period"),
        };
        Ok(PhaseReport {
            summary: format!("users on {slot} ({}) via {how}; {old}", release.image_tag),
            details,
        })
    }
}
