//! The steps of a rollout and what each one sets: the share of users on the
//! new slot, every route's weights, every worker's replicas in both slots.
//! Pure functions of the profile and the state the run found, so the
//! decisions are tested on fixtures and the phase only applies them.

use crate::config::Profile;
use crate::config::profile::ServiceKind;
use crate::config::traffic::{Grace, Pause, Traffic, WorkerShift};
use crate::k8s::live::PlatformState;
use crate::k8s::route::{all_to, weights_for};
use crate::k8s::slot::Slot;

/// The rollout this run walks: the profile's traffic section, with what the
/// command line overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPlan {
    /// Percent of users on the new slot at each step, ending at 100.
    pub steps: Vec<u32>,
    pub pause: Pause,
    pub grace: Grace,
    pub workers: WorkerShift,
    /// Why the steps are not the profile's (an override, a first switch).
    pub note: Option<String>,
}

impl RolloutPlan {
    /// The plan for a run. An environment's first switch has no old slot
    /// to share users with (its routes would send them nowhere), so it
    /// switches at once.
    pub fn new(
        traffic: &Traffic,
        steps_override: Option<&[u32]>,
        grace_override: Option<Grace>,
        first_switch: bool,
    ) -> RolloutPlan {
        let pause = traffic.pause;
        let grace = grace_override.or(traffic.grace).unwrap_or(Grace::Keep);
        let (steps, note) = if first_switch {
            (
                vec![100],
                Some("first switch of this environment: no old slot to share users with, so all at once".to_string()),
            )
        } else if let Some(s) = steps_override {
            (
                s.to_vec(),
                Some(format!("steps from the command line: {}", percents(s))),
            )
        } else {
            (traffic.steps.clone(), None)
        };
        RolloutPlan {
            steps,
            pause,
            grace,
            workers: traffic.workers,
            note,
        }
    }

    /// Whether any step shares users between the slots.
    pub fn is_progressive(&self) -> bool {
        self.steps.len() > 1 || self.steps.first() != Some(&100)
    }

    /// Whether the profile's analysis runs at all: at a shared step, or
    /// through a grace period.
    pub fn is_analysed(&self) -> bool {
        self.is_progressive() || matches!(self.grace, Grace::For(_))
    }
}

/// `5% → 25% → 100%`.
pub fn percents(steps: &[u32]) -> String {
    steps
        .iter()
        .map(|s| format!("{s}%"))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Where one http service's users go at a step: the slot its stable
/// Service selects (internal callers move only at 100%) and the route's
/// weights (blue, green).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteAt {
    pub active: Slot,
    pub weights: (u32, u32),
}

/// A service users have never reached (new in this release) has nothing in
/// the old slot to share with: it is all on the new slot from the first step.
fn is_new(before: &PlatformState, service: &str) -> bool {
    before
        .services
        .get(service)
        .is_none_or(|s| s.active.is_none())
}

/// The route of an http service at `percent` on `target`.
pub fn route_at(before: &PlatformState, service: &str, target: Slot, percent: u32) -> RouteAt {
    if percent >= 100 || is_new(before, service) {
        return RouteAt {
            active: target,
            weights: all_to(target),
        };
    }
    RouteAt {
        active: target.other(),
        weights: weights_for(target, percent),
    }
}

/// Replicas of a worker in (new slot, old slot) at `percent`. Proportional
/// rounds the new slot's share up, so a step above 0 runs at least one new
/// worker, and the old slot's share up too, so the step never runs fewer
/// consumers than the old slot had in total.
pub fn workers_at(
    shift: WorkerShift,
    percent: u32,
    new_full: u32,
    old_full: u32,
    new_service: bool,
) -> (u32, u32) {
    if percent >= 100 || new_service {
        return (new_full, 0);
    }
    match shift {
        WorkerShift::Switch => (0, old_full),
        WorkerShift::Proportional => {
            let share = |full: u32, p: u32| (u64::from(full) * u64::from(p)).div_ceil(100) as u32;
            (share(new_full, percent), share(old_full, 100 - percent))
        }
    }
}

/// The http Deployments of `target` to scale up before `percent`% of users
/// reach it: enough for that share of what the old slot serves them with
/// (its replicas in `before`, where its HPA may have taken them under
/// load), rounded up; never fewer than they hold `now` (Deployment name →
/// replicas). Without it, 100% at once sends a busy service's users from
/// many pods to the few a new slot starts with, and a rollback to a slot
/// its HPA had shrunk does the same.
pub fn http_replicas(
    before: &PlatformState,
    profile: &Profile,
    target: Slot,
    percent: u32,
    now: &std::collections::BTreeMap<String, i32>,
) -> Vec<(String, i32)> {
    let old = target.other();
    profile
        .services
        .iter()
        .filter(|(_, s)| s.kind == ServiceKind::Http)
        .filter_map(|(name, _)| {
            let was = before.services.get(name)?;
            // Only users the old slot serves move.
            if was.active != Some(old) {
                return None;
            }
            let serving = i64::from(was.slots.get(&old)?.replicas.max(0));
            let need = (serving * i64::from(percent.min(100)) + 99) / 100;
            let deployment = format!("{name}-{target}");
            let have = i64::from(now.get(&deployment).copied().unwrap_or(0));
            (need > have).then(|| (deployment, i32::try_from(need).unwrap_or(i32::MAX)))
        })
        .collect()
}

/// Every worker of `services` (name, full replicas in the new slot) and its
/// replicas in (new, old) at `percent`, the old slot's full count being what
/// `before` found running there.
pub fn worker_replicas(
    before: &PlatformState,
    workers: &[(String, u32)],
    shift: WorkerShift,
    target: Slot,
    percent: u32,
) -> Vec<(String, u32, u32)> {
    workers
        .iter()
        .map(|(name, full)| {
            let old_full = before
                .services
                .get(name)
                .filter(|s| s.kind == ServiceKind::Worker)
                .and_then(|s| s.slots.get(&target.other()))
                .map_or(0, |s| s.replicas.max(0) as u32);
            let (new, old) = workers_at(shift, percent, *full, old_full, old_full == 0);
            (name.clone(), new, old)
        })
        .collect()
}

/// The live state a rollout at `percent` on `to` is meant to leave, from
/// the state the last good deployment recorded (`recorded`): each http
/// route at the step's weights and stable slot ([`route_at`]), each worker
/// at the step's replicas in both slots ([`worker_replicas`]), and the new
/// slot as `live` has it (it holds the rollout's release, which nothing
/// recorded yet). `status` compares the live state with this while a
/// rollout is in progress, so the split the rollout made on purpose is
/// not called drift, and a hand edit beside it still is.
pub fn state_at(
    recorded: &PlatformState,
    profile: &crate::config::Profile,
    to: Slot,
    percent: u32,
    live: &PlatformState,
) -> PlatformState {
    let workers = worker_replicas(
        recorded,
        &crate::k8s::route::workers_of(profile),
        profile.traffic.workers,
        to,
        percent,
    );
    let mut out = recorded.clone();
    for (name, svc) in out.services.iter_mut() {
        if let Some(new) = live.services.get(name).and_then(|s| s.slots.get(&to)) {
            svc.slots.insert(to, new.clone());
        }
        // A service users never reached joins the rollout if this run
        // deploys it, or waits for one that does: either way nobody's
        // traffic moved off a record, so it is taken as it is.
        if svc.active.is_none() {
            if let Some(now) = live.services.get(name) {
                *svc = now.clone();
            }
            continue;
        }
        match svc.kind {
            ServiceKind::Http => {
                let at = route_at(recorded, name, to, percent);
                svc.active = Some(at.active);
                // Only a route the deployment recorded has weights to move.
                if svc.weights.is_some() {
                    svc.weights = Some(at.weights);
                }
            }
            ServiceKind::Worker => {
                let Some((_, new, old)) = workers.iter().find(|(w, _, _)| w == name) else {
                    continue;
                };
                for (slot, n) in [(to, *new), (to.other(), *old)] {
                    if let Some(st) = svc.slots.get_mut(&slot) {
                        st.replicas = n as i32;
                    }
                }
                // As `live::state_from` reads it: both up, the older slot.
                svc.active = match (*new > 0, *old > 0) {
                    (_, true) => Some(to.other()),
                    (true, false) => Some(to),
                    (false, false) => svc.active,
                };
            }
        }
    }
    out
}

/// The profile of the services a switch to `slot` moves: those of `which`
/// that run what they should there (`expected`, by service: the image of
/// its layer's release), and of the rest, those users have never reached
/// are left out (they join at a later switch). Users' services that do not
/// run it there are the second value: switching would strand them on the
/// old slot or move them to old code, so the caller refuses.
pub fn switchable(
    profile: &crate::config::Profile,
    state: &PlatformState,
    expected: impl Fn(&str) -> Option<String>,
    slot: Slot,
    which: impl Fn(&str) -> bool,
) -> (crate::config::Profile, Vec<String>) {
    let mut out = profile.clone();
    let mut stale = Vec::new();
    for name in profile.services.keys().filter(|n| which(n)) {
        let live = state.services.get(name);
        let have = live.and_then(|s| s.image_in(slot));
        if have.is_some() && have.map(String::from) == expected(name) {
            continue;
        }
        if live.is_some_and(|s| s.active.is_some()) {
            stale.push(format!("{name}-{slot} ({})", have.unwrap_or("nothing")));
        } else {
            out.services.remove(name);
        }
    }
    (out, stale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::live::{ServiceState, SlotState};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn traffic(steps: &[u32]) -> Traffic {
        Traffic {
            steps: steps.to_vec(),
            pause: Pause::For(Duration::from_secs(120)),
            grace: Some(Grace::For(Duration::from_secs(600))),
            workers: WorkerShift::Proportional,
            analysis: None,
        }
    }

    /// Users on blue: api (http) and workers (6 replicas) there.
    fn on_blue() -> PlatformState {
        let slot = |replicas| SlotState {
            image: Some("ghcr.io/maily/x:v1".into()),
            replicas,
            ready: replicas,
            deployment_id: None,
            version: None,
        };
        let mut services = BTreeMap::new();
        services.insert(
            "api".to_string(),
            ServiceState {
                kind: ServiceKind::Http,
                active: Some(Slot::Blue),
                weights: Some((100, 0)),
                slots: [(Slot::Blue, slot(4)), (Slot::Green, slot(4))].into(),
            },
        );
        services.insert(
            "workers".to_string(),
            ServiceState {
                kind: ServiceKind::Worker,
                active: Some(Slot::Blue),
                weights: None,
                slots: [(Slot::Blue, slot(6)), (Slot::Green, slot(0))].into(),
            },
        );
        PlatformState { services }
    }

    /// api (http) and workers on `active`, as `live::state_from` reads
    /// them: api weights (blue, green), each slot's tag and replicas.
    fn state(
        active: Slot,
        weights: (u32, u32),
        api: [(&str, i32); 2],
        workers: [(&str, i32); 2],
    ) -> PlatformState {
        let slots = |cells: [(&str, i32); 2]| -> BTreeMap<Slot, SlotState> {
            Slot::BOTH
                .into_iter()
                .zip(cells)
                .map(|(slot, (tag, replicas))| {
                    (
                        slot,
                        SlotState {
                            image: (!tag.is_empty()).then(|| format!("r/x:{tag}")),
                            replicas,
                            ready: replicas,
                            deployment_id: None,
                            version: None,
                        },
                    )
                })
                .collect()
        };
        let mut services = BTreeMap::new();
        services.insert(
            "api".to_string(),
            ServiceState {
                kind: ServiceKind::Http,
                active: Some(active),
                weights: Some(weights),
                slots: slots(api),
            },
        );
        services.insert(
            "workers".to_string(),
            ServiceState {
                kind: ServiceKind::Worker,
                active: Some(active),
                weights: None,
                slots: slots(workers),
            },
        );
        PlatformState { services }
    }

    #[test]
    fn a_rollouts_split_is_what_it_is_meant_to_leave_and_a_hand_edit_beside_it_is_not() {
        use crate::k8s::live::differences;
        // Staging: workers at 2 replicas, split in proportion.
        let profile = crate::config::profile::load(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("manifests")
                .as_path(),
            "staging",
        )
        .unwrap();
        let recorded = state(
            Slot::Blue,
            (100, 0),
            [("v1", 1), ("", 0)],
            [("v1", 2), ("", 0)],
        );
        // At 25% on green: a quarter of the route, one new worker beside
        // the old slot's two; the stable selector still on blue.
        let at_25 = state(
            Slot::Blue,
            (75, 25),
            [("v1", 1), ("v2", 1)],
            [("v1", 2), ("v2", 1)],
        );
        assert!(
            !differences(&recorded, &at_25).is_empty(),
            "against the record alone it differs"
        );
        let meant = state_at(&recorded, &profile, Slot::Green, 25, &at_25);
        assert_eq!(differences(&meant, &at_25), Vec::<String>::new());
        // A service users never reached (an AI service this run does not
        // deploy) is no drift whatever the rollout does.
        let (mut recorded_ai, mut at_25_ai) = (recorded.clone(), at_25.clone());
        for (name, kind) in [
            ("ai-orchestrator", ServiceKind::Http),
            ("ai-workers", ServiceKind::Worker),
        ] {
            let unreached = ServiceState {
                kind,
                active: None,
                weights: None,
                slots: BTreeMap::new(),
            };
            recorded_ai.services.insert(name.into(), unreached.clone());
            at_25_ai.services.insert(name.into(), unreached);
        }
        let meant = state_at(&recorded_ai, &profile, Slot::Green, 25, &at_25_ai);
        assert_eq!(differences(&meant, &at_25_ai), Vec::<String>::new());
        // At 100% in the grace period: everyone on green, old workers at 0.
        let at_100 = state(
            Slot::Green,
            (0, 100),
            [("v1", 1), ("v2", 1)],
            [("v1", 0), ("v2", 2)],
        );
        let meant = state_at(&recorded, &profile, Slot::Green, 100, &at_100);
        assert_eq!(differences(&meant, &at_100), Vec::<String>::new());
        // A route edited by hand mid-rollout is still drift, in the
        // rollout's terms.
        let edited = state(
            Slot::Blue,
            (90, 10),
            [("v1", 1), ("v2", 1)],
            [("v1", 2), ("v2", 1)],
        );
        let meant = state_at(&recorded, &profile, Slot::Green, 25, &edited);
        assert_eq!(
            differences(&meant, &edited),
            vec!["api: route weights blue/green 90/10 (recorded: 75/25)".to_string()]
        );
    }

    #[test]
    fn the_profile_steps_unless_overridden_or_first() {
        let t = traffic(&[5, 25, 50, 100]);
        let p = RolloutPlan::new(&t, None, None, false);
        assert_eq!(p.steps, vec![5, 25, 50, 100]);
        assert_eq!(p.pause, Pause::For(Duration::from_secs(120)));
        assert_eq!(p.grace, Grace::For(Duration::from_secs(600)));
        assert!(p.is_progressive());
        let p = RolloutPlan::new(&t, Some(&[100]), Some(Grace::Keep), false);
        assert_eq!(p.steps, vec![100]);
        assert_eq!(p.grace, Grace::Keep);
        assert!(!p.is_progressive());
        let p = RolloutPlan::new(&t, Some(&[50, 100]), None, true);
        assert_eq!(p.steps, vec![100]);
        assert!(p.note.unwrap().contains("first switch"));
    }

    #[test]
    fn routes_share_users_until_100_where_the_stable_selector_moves() {
        let before = on_blue();
        assert_eq!(
            route_at(&before, "api", Slot::Green, 25),
            RouteAt {
                active: Slot::Blue,
                weights: (75, 25)
            }
        );
        assert_eq!(
            route_at(&before, "api", Slot::Green, 100),
            RouteAt {
                active: Slot::Green,
                weights: (0, 100)
            }
        );
        // A service no user has reached yet has no old slot to share with.
        assert_eq!(
            route_at(&before, "ai-orchestrator", Slot::Green, 5),
            RouteAt {
                active: Slot::Green,
                weights: (0, 100)
            }
        );
    }

    #[test]
    fn workers_split_in_proportion_or_switch_at_100() {
        use WorkerShift::*;
        assert_eq!(workers_at(Proportional, 5, 6, 6, false), (1, 6));
        assert_eq!(workers_at(Proportional, 25, 6, 6, false), (2, 5));
        assert_eq!(workers_at(Proportional, 50, 6, 6, false), (3, 3));
        assert_eq!(workers_at(Proportional, 100, 6, 6, false), (6, 0));
        assert_eq!(workers_at(Switch, 50, 6, 6, false), (0, 6));
        assert_eq!(workers_at(Switch, 100, 6, 6, false), (6, 0));
        assert_eq!(workers_at(Proportional, 5, 3, 0, true), (3, 0));
        let before = on_blue();
        assert_eq!(
            worker_replicas(
                &before,
                &[("workers".into(), 6), ("ai-workers".into(), 3)],
                Proportional,
                Slot::Green,
                25
            ),
            vec![("workers".into(), 2, 5), ("ai-workers".into(), 3, 0)]
        );
    }

    #[test]
    fn the_new_slot_carries_its_share_of_what_the_old_slot_serves_with() {
        let profile = crate::k8s::live::tests::profile();
        let state =
            |active, blue, green| crate::k8s::live::tests::api_state(active, None, blue, green);
        // Blue's HPA took it to 7 under load; green starts with 2.
        let before = state(Slot::Blue, 7, 0);
        let now: std::collections::BTreeMap<String, i32> = [("api-green".to_string(), 2)].into();
        assert!(http_replicas(&before, &profile, Slot::Green, 25, &now).is_empty());
        assert_eq!(
            http_replicas(&before, &profile, Slot::Green, 50, &now),
            [("api-green".to_string(), 4)],
            "rounded up"
        );
        assert_eq!(
            http_replicas(&before, &profile, Slot::Green, 100, &now),
            [("api-green".to_string(), 7)]
        );
        // Never fewer than it holds.
        let big: std::collections::BTreeMap<String, i32> = [("api-green".to_string(), 9)].into();
        assert!(http_replicas(&before, &profile, Slot::Green, 100, &big).is_empty());
        // Users not on the other slot: nothing moves, nothing to carry.
        assert!(
            http_replicas(&state(Slot::Green, 7, 0), &profile, Slot::Green, 100, &now).is_empty()
        );
    }
}
