//! shift-traffic: users to the new slot.
//!
//! Workers of the new slot scale up and are waited for; then every route's
//! weights and every stable Service's selector move at once; then the old
//! slot's workers scale down. The old slot's http Deployments stay up, so a
//! rollback is one switch back. (The gradual, metric-gated version grows
//! from here: `route::set_http` already takes any weights.)

use async_trait::async_trait;

use super::deploy_frontend::{self, FrontendRecord};
use crate::error::{Kind, fail};
use crate::k8s::live;
use crate::k8s::route;
use crate::k8s::slot::Slot;
use crate::k8s::values;
use crate::k8s::watch::wait_for_slot;
use crate::pipeline::{Context, Phase, PhaseId, PhasePlan, PhaseReport};

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
        .filter(|(name, s)| {
            s.image_in(slot) != Some(values::image_of(&release, &cx.config.profile, name).as_str())
        })
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
    let release = cx.release()?;
    let mut out = profile.clone();
    let mut stale = Vec::new();
    for (name, _) in profile.ai_services() {
        let live = state.services.get(name);
        let have = live.and_then(|s| s.image_in(slot));
        if have == Some(values::image_of(&release, profile, name).as_str()) {
            continue;
        }
        if live.is_some_and(|s| s.active.is_some()) {
            stale.push(format!("{name}-{slot} ({})", have.unwrap_or("nothing")));
        } else {
            out.services.remove(name);
        }
    }
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

#[async_trait]
impl Phase for ShiftTraffic {
    fn id(&self) -> PhaseId {
        PhaseId::ShiftTraffic
    }

    async fn plan(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        let services: Vec<&str> = cx
            .config
            .profile
            .services
            .keys()
            .map(String::as_str)
            .collect();
        let mut steps = vec![
            "scale the new slot's workers to their replicas and wait for them".into(),
            format!(
                "set every route to 100% on the new slot and every stable Service's selector to it: {}",
                services.join(", ")
            ),
            "scale the old slot's workers to 0; the old http slot keeps running".into(),
        ];
        if let Some(r) = cx
            .records
            .frontend
            .as_ref()
            .and_then(FrontendRecord::from_value)
        {
            steps.push(format!(
                "promote the Vercel deployment {} to production (POST /v10/projects/{}/promote/{})",
                r.deployment_id, r.project_id, r.deployment_id
            ));
        } else if cx.selection.is_selected(PhaseId::DeployFrontend) {
            steps.push(
                "promote the Vercel deployment deploy-frontend built; a failure after it promotes the previous one back".into(),
            );
        }
        Ok(PhasePlan {
            summary:
                "move users to the new slot at once; the old slot stays up for an instant rollback"
                    .into(),
            steps,
        })
    }

    async fn run(&self, cx: &mut Context) -> anyhow::Result<PhaseReport> {
        let slot = target(cx).await?;
        deploy_frontend::prepare_promotion(cx).await?;
        let release = cx.release()?;
        let applier = cx.applier().await?.clone();
        let profile = switched_profile(cx, slot).await?;
        cx.backend.target_slot = Some(slot);

        // From the first worker scaled up, users see the new version (it
        // consumes their messages): the runner's undo must put them back.
        cx.backend.switched = true;
        let workers = route::workers_up(&applier, &profile, slot).await?;
        wait_for_slot(
            applier.client(),
            &profile.namespace,
            slot,
            &workers,
            release.rollout_timeout(),
        )
        .await?;
        route::switch_to(&applier, &profile, cx.templates()?, &release, slot).await?;
        // The frontend follows the backend, never leads it: promoted only
        // once every route points at the new slot.
        let frontend = deploy_frontend::promote_recorded(cx).await?;
        let mut details: Vec<String> = profile
            .services
            .keys()
            .map(|s| format!("{s}: {slot}"))
            .collect();
        details.extend(frontend);
        Ok(PhaseReport {
            summary: format!(
                "users on {slot} ({}); {} kept up for rollback",
                release.image_tag,
                slot.other()
            ),
            details,
        })
    }
}
