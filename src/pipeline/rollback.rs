//! Rollback decisions: from the live state and the snapshot of the
//! deployment to go back to, what it takes. A pure function, tested on
//! fixtures of states.

use std::collections::BTreeMap;

use super::layers::Layer;
use super::snapshot::{Outcome, Snapshot};
use crate::k8s::live::{Active, PlatformState};
use crate::k8s::slot::Slot;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackPlan {
    /// Users are already on that release.
    AlreadyThere { slot: Slot },
    /// The release still runs in the idle slot: one switch.
    Switch { slot: Slot },
    /// The release must be applied to the idle slot, waited for, switched.
    Redeploy { slot: Slot },
}

/// The images a slot runs, by service.
fn images_in(state: &PlatformState, slot: Slot) -> BTreeMap<String, Option<String>> {
    state
        .services
        .iter()
        .map(|(name, s)| (name.clone(), s.image_in(slot).map(String::from)))
        .collect()
}

impl RollbackPlan {
    /// The slot users end on.
    pub fn slot(&self) -> Slot {
        match self {
            RollbackPlan::AlreadyThere { slot }
            | RollbackPlan::Switch { slot }
            | RollbackPlan::Redeploy { slot } => *slot,
        }
    }

    /// Whether it writes the release into a slot.
    pub fn deploys(&self) -> bool {
        matches!(self, RollbackPlan::Redeploy { .. })
    }

    /// What it takes, in words.
    pub fn words(&self) -> String {
        match self {
            RollbackPlan::AlreadyThere { slot } => format!("nothing: users are on it, on {slot}"),
            RollbackPlan::Switch { slot } => format!("one switch to {slot}"),
            RollbackPlan::Redeploy { slot } => {
                format!("a redeploy to {slot}, then a switch")
            }
        }
    }
}

/// Whether `slot` runs `wanted` and is up (http slots are kept scaled for
/// exactly this; workers are scaled by the switch).
fn runs(state: &PlatformState, slot: Slot, wanted: &BTreeMap<String, String>) -> bool {
    let have = images_in(state, slot);
    wanted.iter().all(|(svc, image)| {
        have.get(svc).cloned().flatten().as_deref() == Some(image.as_str())
            && state.services.get(svc).is_some_and(|s| {
                s.kind == crate::config::profile::ServiceKind::Worker
                    || s.slots
                        .get(&slot)
                        .is_some_and(|st| st.replicas > 0 && st.ready >= st.replicas.min(1))
            })
    })
}

/// Whether every user reaches `slot` alone: routes all on it, no worker
/// of the other slot running.
fn everyone_on(state: &PlatformState, slot: Slot) -> bool {
    state.services.values().all(|s| match s.kind {
        crate::config::profile::ServiceKind::Http => s
            .weights
            .is_none_or(|w| w == crate::k8s::route::all_to(slot)),
        crate::config::profile::ServiceKind::Worker => {
            s.slots.get(&slot.other()).is_none_or(|st| st.replicas == 0)
        }
    })
}

/// Why a deployment is no state to roll back to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoTarget {
    /// It did not succeed, so it left users where they were.
    #[error(
        "deployment {deployment_id} {}; it left users where they were, so there is no state of its own to go back to; pick a succeeded deployment from `maily-deploy history {environment}`",
        match outcome {
            Outcome::InProgress => "is still in progress (or died mid-run)",
            Outcome::Failed | Outcome::RollbackFailed => "failed",
            Outcome::Abandoned => "was interrupted",
            Outcome::Succeeded => "succeeded",
        }
    )]
    NotSucceeded {
        deployment_id: String,
        outcome: Outcome,
        environment: String,
    },
    /// It did not deploy the backend: the slots hold what an earlier run
    /// left.
    #[error(
        "deployment {deployment_id} did not deploy the backend (its phases: {}); nothing to roll back to",
        phases.join(", ")
    )]
    NoBackend {
        deployment_id: String,
        phases: Vec<String>,
    },
    /// Its snapshot names no image.
    #[error("the snapshot of {deployment_id} records no images")]
    NoImages { deployment_id: String },
}

/// The word `rollback` takes for the last good deployment before the live
/// one, as `kubectl rollout undo` and a revision-less `helm rollback` go
/// back one.
pub const PREVIOUS: &str = "previous";

/// Why `previous` names no deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no good deployment of {environment} before {} to roll back to",
    match (live_id, live_release) {
        (Some(id), Some(release)) => format!("the one users are on ({id}, release {release})"),
        _ => "the one users are on".to_string(),
    }
)]
pub struct NoPrevious {
    pub environment: String,
    /// The deployment users are on, when a snapshot says so.
    pub live_id: Option<String>,
    pub live_release: Option<String>,
}

/// Whether a deployment moved users to its release: it succeeded, took
/// shift-traffic, and left a state of its own to go back to. A run with
/// `--skip-traffic` filled the idle slot but users never ran it.
fn users_ran(live: &PlatformState, s: &Snapshot) -> bool {
    s.outcome == Outcome::Succeeded
        && s.phases
            .iter()
            .any(|p| p == crate::pipeline::PhaseId::ShiftTraffic.as_str())
        && plan(live, s).is_ok()
}

/// `previous`: the newest deployment users ran before the one they are on
/// now, from the live state and the snapshots (newest first).
///
/// The one users are on is the newest that users ran whose release the
/// live state serves to everyone; when none is, the newest users ran
/// (a rollout stopped between steps, a hand edit), unless everyone is on
/// one slot whose release no good deployment ran (a run that died after
/// its switch): then none is current, and `previous` is the newest good
/// one. Before it, the first that
/// users ran and whose release is not the live one: a second
/// `rollback previous` goes back to the release the first left, as a
/// second `kubectl rollout undo` does. A rollback found there stands for
/// the deployment it went back to (the same release), when that one's
/// snapshot is still kept.
pub fn previous<'a>(
    live: &PlatformState,
    history: &'a [Snapshot],
) -> Result<&'a Snapshot, NoPrevious> {
    let ran: Vec<(usize, &Snapshot)> = history
        .iter()
        .enumerate()
        .filter(|(_, s)| users_ran(live, s))
        .collect();
    let serving = |s: &Snapshot| matches!(plan(live, s), Ok(RollbackPlan::AlreadyThere { .. }));
    // Everyone on one slot whose release no good deployment ran (a run
    // that died after its switch): the newest good one is what they go
    // back to, not the one before it.
    let on_a_release_of_no_good_run = matches!(live.active(), Active::Slot(a) if everyone_on(live, a))
        && !ran.iter().any(|(_, s)| serving(s));
    let current = if on_a_release_of_no_good_run {
        None
    } else {
        ran.iter()
            .find(|(_, s)| serving(s))
            .or_else(|| ran.first())
            .copied()
    };
    let after = current.map_or(0, |(i, _)| i + 1);
    let found = ran
        .iter()
        .find(|(i, s)| *i >= after && !serving(s))
        .map(|(_, s)| *s);
    match found {
        Some(s) => Ok(s
            .rollback_to
            .as_ref()
            .and_then(|to| history.iter().find(|t| &t.deployment_id == to))
            .filter(|t| users_ran(live, t))
            .unwrap_or(s)),
        None => Err(NoPrevious {
            environment: history
                .first()
                .map(|s| s.environment.clone())
                .unwrap_or_default(),
            live_id: current.map(|(_, s)| s.deployment_id.to_string()),
            live_release: current.map(|(_, s)| s.release_name()),
        }),
    }
}

/// Decide, or say why it cannot be done.
pub fn plan(live: &PlatformState, target: &Snapshot) -> Result<RollbackPlan, NoTarget> {
    if target.outcome != Outcome::Succeeded {
        return Err(NoTarget::NotSucceeded {
            deployment_id: target.deployment_id.to_string(),
            outcome: target.outcome,
            environment: target.environment.clone(),
        });
    }
    // A run that deployed AI alone names its slot too, but the backend
    // there is whatever an earlier run left: no state of its own.
    let no_backend = !target.layers.is_empty() && !target.layers.contains_key(&Layer::Backend);
    if target.release.is_none() || target.target_slot.is_none() || no_backend {
        return Err(NoTarget::NoBackend {
            deployment_id: target.deployment_id.to_string(),
            phases: target.phases.clone(),
        });
    }
    let wanted: BTreeMap<String, String> = target.images().into_iter().collect();
    if wanted.is_empty() {
        return Err(NoTarget::NoImages {
            deployment_id: target.deployment_id.to_string(),
        });
    }
    let (active, idle) = match live.active() {
        Active::Slot(s) => (Some(s), s.other()),
        Active::Fresh => (None, Slot::Blue),
        // Half-switched: go to wherever the wanted release runs, or blue.
        Active::Mixed(_) => {
            let slot = Slot::BOTH
                .into_iter()
                .find(|s| runs(live, *s, &wanted))
                .unwrap_or(Slot::Blue);
            return Ok(if runs(live, slot, &wanted) {
                RollbackPlan::Switch { slot }
            } else {
                RollbackPlan::Redeploy { slot }
            });
        }
    };
    if let Some(a) = active
        && runs(live, a, &wanted)
    {
        // A rollout stopped between its steps leaves some users on the
        // other slot: bringing them back is a switch, not nothing.
        return Ok(if everyone_on(live, a) {
            RollbackPlan::AlreadyThere { slot: a }
        } else {
            RollbackPlan::Switch { slot: a }
        });
    }
    Ok(if runs(live, idle, &wanted) {
        RollbackPlan::Switch { slot: idle }
    } else {
        RollbackPlan::Redeploy { slot: idle }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::profile::ServiceKind;
    use crate::k8s::live::{ServiceState, SlotState};
    use crate::k8s::values::Release;

    fn state(active: Option<Slot>, blue: &str, green: &str) -> PlatformState {
        let slot = |tag: &str| SlotState {
            image: (!tag.is_empty()).then(|| format!("ghcr.io/maily/maily-api:{tag}")),
            replicas: 2,
            ready: 2,
            deployment_id: None,
            version: None,
        };
        let mut services = BTreeMap::new();
        services.insert(
            "api".to_string(),
            ServiceState {
                kind: ServiceKind::Http,
                active,
                weights: active.map(crate::k8s::route::all_to),
                slots: [(Slot::Blue, slot(blue)), (Slot::Green, slot(green))].into(),
            },
        );
        PlatformState { services }
    }

    fn snapshot_of(tag: &str, slot: Slot, outcome: Outcome) -> Snapshot {
        let mut s = crate::pipeline::snapshot::tests_support::sample();
        s.outcome = outcome;
        s.target_slot = Some(slot);
        s.release = Some(Release {
            environment: "production".into(),
            deployment_id: s.deployment_id.to_string(),
            image_registry: "ghcr.io/maily".into(),
            image_tag: tag.into(),
            backup_url: String::new(),
            rollout_timeout_secs: 60,
            digests: Default::default(),
        });
        s.after = Some(match slot {
            Slot::Blue => state(Some(Slot::Blue), tag, ""),
            Slot::Green => state(Some(Slot::Green), "", tag),
        });
        s
    }

    #[test]
    fn the_old_release_still_in_the_idle_slot_is_one_switch() {
        let live = state(Some(Slot::Green), "v1", "v2");
        let target = snapshot_of("v1", Slot::Blue, Outcome::Succeeded);
        assert_eq!(
            plan(&live, &target),
            Ok(RollbackPlan::Switch { slot: Slot::Blue })
        );
    }

    #[test]
    fn a_release_gone_from_both_slots_is_redeployed_to_the_idle_one() {
        let live = state(Some(Slot::Blue), "v3", "v2");
        let target = snapshot_of("v1", Slot::Blue, Outcome::Succeeded);
        assert_eq!(
            plan(&live, &target),
            Ok(RollbackPlan::Redeploy { slot: Slot::Green })
        );
    }

    #[test]
    fn the_live_release_needs_nothing() {
        let live = state(Some(Slot::Blue), "v1", "v2");
        let target = snapshot_of("v1", Slot::Blue, Outcome::Succeeded);
        assert_eq!(
            plan(&live, &target),
            Ok(RollbackPlan::AlreadyThere { slot: Slot::Blue })
        );
    }

    #[test]
    fn users_split_by_a_stopped_rollout_are_switched_back_not_left() {
        // A rollout of v3 to green stopped at 25%: the selector is still on
        // blue (v1), a quarter of users on green.
        let mut live = state(Some(Slot::Blue), "v1", "v3");
        live.services.get_mut("api").unwrap().weights = Some((75, 25));
        let target = snapshot_of("v1", Slot::Blue, Outcome::Succeeded);
        assert_eq!(
            plan(&live, &target),
            Ok(RollbackPlan::Switch { slot: Slot::Blue })
        );
    }

    #[test]
    fn a_scaled_down_idle_slot_is_not_a_switch() {
        let mut live = state(Some(Slot::Green), "v1", "v2");
        live.services
            .get_mut("api")
            .unwrap()
            .slots
            .get_mut(&Slot::Blue)
            .unwrap()
            .replicas = 0;
        let target = snapshot_of("v1", Slot::Blue, Outcome::Succeeded);
        assert_eq!(
            plan(&live, &target),
            Ok(RollbackPlan::Redeploy { slot: Slot::Blue })
        );
    }

    #[test]
    fn a_run_that_deployed_ai_alone_is_no_target() {
        use crate::pipeline::layers::{How, LayerRecord};
        let live = state(Some(Slot::Blue), "v1", "v2");
        let mut target = snapshot_of("v2", Slot::Green, Outcome::Succeeded);
        target.layers.insert(
            Layer::Ai,
            LayerRecord {
                how: How::Deployed,
                release: target.release.clone().unwrap(),
                templates: Vec::new(),
                carried_from: None,
            },
        );
        let err = plan(&live, &target).unwrap_err().to_string();
        assert!(err.contains("did not deploy the backend"), "{err}");
    }

    /// Deployment `n` of production (ids a day apart), of `tag` to `slot`,
    /// users moved to it.
    fn deployed(n: u32, tag: &str, slot: Slot) -> Snapshot {
        let mut s = snapshot_of(tag, slot, Outcome::Succeeded);
        s.deployment_id = crate::pipeline::DeploymentId::parse(
            "production",
            &format!("production-202501{n:02}-120000"),
        )
        .unwrap();
        s.phases = vec![
            "validate".into(),
            "deploy-backend".into(),
            "shift-traffic".into(),
        ];
        s
    }

    fn rollback(n: u32, to: &Snapshot) -> Snapshot {
        let mut s = deployed(
            n,
            &to.release.as_ref().unwrap().image_tag,
            to.target_slot.unwrap(),
        );
        s.command = "rollback".into();
        s.rollback_to = Some(to.deployment_id.clone());
        s.phases = vec!["shift-traffic".into()];
        s
    }

    fn id(s: Result<&Snapshot, NoPrevious>) -> String {
        s.map(|s| s.deployment_id.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn previous_is_the_release_users_ran_before_the_live_one() {
        let (v1, v3) = (
            deployed(1, "v1", Slot::Blue),
            deployed(3, "v3", Slot::Green),
        );
        let live = state(Some(Slot::Green), "v1", "v3");
        assert_eq!(
            id(previous(&live, &[v3.clone(), v1.clone()])),
            v1.deployment_id.as_str()
        );
        // A failed run left users where they were, and a run with
        // --skip-traffic filled the idle slot users never reached: neither
        // is what they ran.
        let mut failed = deployed(4, "v4", Slot::Blue);
        failed.outcome = Outcome::Failed;
        let mut idle_only = deployed(2, "v2", Slot::Green);
        idle_only.phases.retain(|p| p != "shift-traffic");
        assert_eq!(
            id(previous(&live, &[failed, v3, idle_only, v1.clone()])),
            v1.deployment_id.as_str()
        );
    }

    #[test]
    fn previous_after_a_run_that_died_after_its_switch_is_the_newest_good_one() {
        let (v1, v2) = (
            deployed(1, "v1", Slot::Blue),
            deployed(2, "v2", Slot::Green),
        );
        // v3's run switched everyone to blue, then died: no good
        // deployment ran v3, so going back from it is going to v2.
        let live = state(Some(Slot::Blue), "v3", "v2");
        assert_eq!(
            id(previous(&live, &[v2.clone(), v1.clone()])),
            v2.deployment_id.as_str()
        );
    }

    #[test]
    fn previous_twice_goes_back_and_forth_as_rollout_undo_does() {
        let (v1, v2) = (
            deployed(1, "v1", Slot::Blue),
            deployed(2, "v2", Slot::Green),
        );
        // Rolled back to v1: users on blue again; previous is v2.
        let back = rollback(3, &v1);
        let on_v1 = state(Some(Slot::Blue), "v1", "v2");
        let history = [back.clone(), v2.clone(), v1.clone()];
        assert_eq!(id(previous(&on_v1, &history)), v2.deployment_id.as_str());
        // Then v4 on green: previous is the rollback's release, named by
        // the deployment it went back to.
        let v4 = deployed(4, "v4", Slot::Green);
        let on_v4 = state(Some(Slot::Green), "v1", "v4");
        let history = [v4, back.clone(), v2.clone(), v1.clone()];
        assert_eq!(id(previous(&on_v4, &history)), v1.deployment_id.as_str());
        // With that deployment's snapshot pruned, the rollback itself.
        let history = [history[0].clone(), back.clone(), v2];
        assert_eq!(id(previous(&on_v4, &history)), back.deployment_id.as_str());
    }

    #[test]
    fn a_first_deployment_has_no_previous() {
        let v1 = deployed(1, "v1", Slot::Blue);
        let live = state(Some(Slot::Blue), "v1", "");
        assert_eq!(
            previous(&live, std::slice::from_ref(&v1)),
            Err(NoPrevious {
                environment: "production".into(),
                live_id: Some(v1.deployment_id.to_string()),
                live_release: Some("v1".into()),
            })
        );
        assert!(previous(&live, &[]).is_err());
    }

    #[test]
    fn a_failed_deployment_is_no_target() {
        let live = state(Some(Slot::Blue), "v1", "v2");
        let target = snapshot_of("v2", Slot::Green, Outcome::Failed);
        let err = plan(&live, &target).unwrap_err().to_string();
        assert!(err.contains("failed"), "{err}");
        assert!(err.contains("maily-deploy history production"), "{err}");
    }
}
