//! Layers: the backend (every service of the profile but the AI ones) and
//! the AI layer (the `ai: true` services and their config). A run that
//! switches slots moves users to a slot holding both; a layer the run does
//! not deploy (`--skip-backend`, `--skip-ai`) is carried over into that slot
//! exactly as users run it today, so that only the layer asked for changes.
//!
//! What to carry over, from where, or why the flags cannot work, is a pure
//! function of the selection, the profile, the live state and the last
//! good snapshot ([`decide`]), tested on fixtures of states.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::phase::PhaseId;
use super::selection::{Selection, SkipReason};
use super::snapshot::Snapshot;
use crate::config::Profile;
use crate::config::profile::{ServiceKind, over_replica_limit};
use crate::error::Kind;
use crate::k8s::live::{Active, PlatformState};
use crate::k8s::manifest::Template;
use crate::k8s::slot::Slot;
use crate::k8s::values::{self, Release};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Backend,
    Ai,
}

impl Layer {
    pub const ALL: [Layer; 2] = [Layer::Backend, Layer::Ai];

    /// The phase that deploys it.
    pub fn phase(self) -> PhaseId {
        match self {
            Layer::Backend => PhaseId::DeployBackend,
            Layer::Ai => PhaseId::ConfigureAi,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Layer::Backend => "backend",
            Layer::Ai => "AI",
        }
    }

    /// The layer a service of the profile belongs to.
    pub fn of(profile: &Profile, service: &str) -> Layer {
        if profile.is_ai(service) {
            Layer::Ai
        } else {
            Layer::Backend
        }
    }

    /// The profile's services of this layer.
    pub fn services(self, profile: &Profile) -> Vec<String> {
        profile
            .services
            .keys()
            .filter(|n| Layer::of(profile, n) == self)
            .cloned()
            .collect()
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.title())
    }
}

/// Where a carried-over layer comes from: the slot users were on, and the
/// deployment that left it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedFrom {
    pub slot: Slot,
    pub deployment_id: super::DeploymentId,
}

/// A layer rendered from a record instead of this run's release and
/// manifests: a carry-over (what users run on the active slot), or a
/// rollback's redeploy of what a snapshot recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub release: Release,
    /// The slot templates it was rendered with.
    pub templates: Vec<Template>,
    /// The services it holds, each with its replicas (a carry-over copies
    /// exactly the services users reach, at the replicas they run with);
    /// empty for all of the layer's services at the profile's replicas.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, u32>,
    /// The AI layer's config as its snapshot recorded it, for the AI layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_config: Option<crate::phases::configure_ai::AiConfigRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_from: Option<CarriedFrom>,
}

impl Recorded {
    /// `backend v1.4.2 carried over from green (production-20250101-120000)`.
    pub fn describe(&self, layer: Layer) -> String {
        match &self.carried_from {
            Some(c) => format!(
                "{layer} {} carried over from {} ({})",
                self.release.image_tag, c.slot, c.deployment_id
            ),
            None => format!("{layer} {} as recorded", self.release.image_tag),
        }
    }

    /// The profile to render this layer with: only its services (those
    /// listed, when any are), at their recorded replicas.
    pub fn profile(&self, layer: Layer, profile: &Profile) -> Profile {
        let mut p = profile.clone();
        p.services.retain(|name, s| {
            (s.ai == (layer == Layer::Ai))
                && (self.services.is_empty() || self.services.contains_key(name))
        });
        for (name, svc) in p.services.iter_mut() {
            if let Some(&r) = self.services.get(name) {
                svc.replicas = Some(r);
            }
        }
        p
    }
}

/// What a snapshot says of one layer of its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// `deployed` or `carried_over`.
    pub how: How,
    pub release: Release,
    /// The templates when they are not the snapshot's own (a carry-over).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<Template>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_from: Option<CarriedFrom>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    Deployed,
    CarriedOver,
}

impl LayerRecord {
    /// `backend v2 deployed`, `AI v1 carried over from blue`.
    pub fn describe(&self, layer: Layer) -> String {
        match (&self.how, &self.carried_from) {
            (How::CarriedOver, Some(c)) => {
                format!(
                    "{layer} {} carried over from {}",
                    self.release.image_tag, c.slot
                )
            }
            _ => format!("{layer} {} deployed", self.release.image_tag),
        }
    }
}

/// Why the flags cannot work, for the runner to refuse before any change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: Kind,
    pub message: String,
}

fn refuse(kind: Kind, message: String) -> Refusal {
    Refusal { kind, message }
}

/// A layer's release and templates as a snapshot left them: its own record
/// of the layer, or (a snapshot from before layers were recorded, or a
/// layer it deployed) the run's release and templates.
pub fn source_of(s: &Snapshot, layer: Layer) -> Option<(Release, Vec<Template>)> {
    if let Some(r) = s.layers.get(&layer) {
        let templates = if r.templates.is_empty() {
            s.templates.clone()
        } else {
            r.templates.clone()
        };
        return Some((r.release.clone(), templates));
    }
    Some((s.release.clone()?, s.templates.clone()))
}

/// Why a carried-over service's replicas cannot be rendered, if they
/// cannot: they come from a snapshot or the live Deployment, which no
/// profile check saw, and an http service's autoscaler scales to three
/// times them (an int32), so the profile's limits apply to them too.
fn replicas_past_limit(profile: &Profile, service: &str, replicas: u32) -> Option<String> {
    let kind = profile
        .services
        .get(service)
        .map_or(ServiceKind::Http, |s| s.kind);
    let limit = kind.max_replicas();
    (u64::from(replicas) > limit).then(|| {
        format!(
            "runs {replicas} replicas, {}",
            over_replica_limit(limit, kind == ServiceKind::Http)
        )
    })
}

/// The layers this run carries over, each from its record, or why it
/// cannot.
///
/// - A run that does not switch slots carries nothing.
/// - A layer whose phase the user skipped (`--skip-backend`, `--skip-ai`) is
///   carried over when users reach it: its services that users reach, at
///   the release, templates and replicas the last good deployment left on
///   the active slot, provided the live slot still runs those images.
///   Services of it users never reached stay out (they join when their
///   layer is deployed). A layer left out by `--only` or `--from` is not
///   carried: that is a resumed or hand-picked run, whose switch checks that
///   the slot already runs the release.
/// - A switch that would move users to a slot where nothing new was
///   deployed is refused.
pub fn decide(
    selection: &Selection,
    environment: &str,
    profile: &Profile,
    live: &PlatformState,
    last_good: Option<&Snapshot>,
) -> Result<BTreeMap<Layer, Recorded>, Refusal> {
    let mut carry = BTreeMap::new();
    if !selection.is_selected(PhaseId::ShiftTraffic) {
        return Ok(carry);
    }
    let skipped_by_flag = |layer: Layer| {
        selection
            .phases
            .iter()
            .any(|(p, r)| *p == layer.phase() && *r == Some(SkipReason::Flag))
    };
    let has = |layer: Layer| !layer.services(profile).is_empty();
    // Deployed by this run, or (left out by --from or --only) by the run it
    // resumes: anything but a layer skipped by its flag.
    let deployed: Vec<Layer> = Layer::ALL
        .into_iter()
        .filter(|l| has(*l) && !skipped_by_flag(*l))
        .collect();
    let flagged: Vec<Layer> = Layer::ALL
        .into_iter()
        .filter(|l| has(*l) && skipped_by_flag(*l))
        .collect();
    if flagged.is_empty() {
        return Ok(carry);
    }
    if deployed.is_empty() && !selection.is_selected(PhaseId::DeployFrontend) {
        let flags: Vec<&str> = flagged.iter().map(|l| l.phase().skip_flag()).collect();
        return Err(refuse(
            Kind::Usage,
            format!(
                "{} skip every layer that shift-traffic would move users to, and nothing else is deployed: there is nothing to switch to. Drop one of them, or add {} to run the other phases alone",
                flags.join(" and "),
                PhaseId::ShiftTraffic.skip_flag()
            ),
        ));
    }
    let reached = |layer: Layer| -> Vec<(String, Slot)> {
        layer
            .services(profile)
            .into_iter()
            .filter_map(|name| Some((name.clone(), live.services.get(&name)?.active?)))
            .collect()
    };
    for layer in flagged {
        let users = reached(layer);
        let flag = layer.phase().skip_flag();
        if users.is_empty() {
            if layer == Layer::Backend {
                return Err(refuse(
                    Kind::Usage,
                    format!(
                        "{environment} has no backend users reach yet (this is its first deploy): {flag} would switch users to a slot without one. Drop {flag}"
                    ),
                ));
            }
            // AI services users never reached are new: they join when
            // configure-ai deploys them.
            continue;
        }
        let slot = match live.active() {
            Active::Slot(s) => s,
            Active::Fresh => users[0].1,
            Active::Mixed(by) => {
                let split: Vec<String> = by
                    .iter()
                    .map(|(n, s)| format!("{n} on {}", s.map_or("none", |s| s.as_str())))
                    .collect();
                return Err(refuse(
                    Kind::Config,
                    format!(
                        "users are split between the slots ({}), as an interrupted switch leaves them: the {layer} to carry over with {flag} is not one release. Finish with a full deploy, or `maily-deploy rollback {environment} <ID>`",
                        split.join(", ")
                    ),
                ));
            }
        };
        let Some(good) = last_good else {
            return Err(refuse(
                Kind::Config,
                format!(
                    "no succeeded deployment of {environment} is recorded, so the {layer} users run cannot be carried over into the new slot; deploy it too (drop {flag})"
                ),
            ));
        };
        let Some((release, templates)) = source_of(good, layer) else {
            return Err(refuse(
                Kind::Config,
                format!(
                    "the last good deployment {} recorded no {layer} release to carry over; deploy it too (drop {flag})",
                    good.deployment_id
                ),
            ));
        };
        // What users run must be what that deployment left: otherwise a
        // copy from the record is not a copy of what they run.
        let recorded_after = good.after.as_ref();
        let mut drift = Vec::new();
        let mut services = BTreeMap::new();
        let mut too_many = Vec::new();
        for (name, _) in &users {
            let want = values::image_of(&release, profile, name);
            let live_slot = live.services.get(name).and_then(|s| s.slots.get(&slot));
            let have = live_slot.and_then(|s| s.image.as_deref());
            if have != Some(want.as_str()) {
                drift.push(format!(
                    "{name}-{slot} runs {} (recorded: {want})",
                    have.unwrap_or("nothing")
                ));
            }
            let replicas = recorded_after
                .and_then(|a| a.services.get(name))
                .and_then(|s| s.slots.get(&slot))
                .map(|s| s.replicas)
                .filter(|r| *r > 0)
                .or_else(|| live_slot.map(|s| s.replicas).filter(|r| *r > 0))
                .unwrap_or(1);
            // Positive by the filters above, so it fits.
            let replicas = u32::try_from(replicas.max(1)).unwrap_or(1);
            if let Some(why) = replicas_past_limit(profile, name, replicas) {
                too_many.push(format!("{name}-{slot} {why}"));
            }
            services.insert(name.clone(), replicas);
        }
        if !drift.is_empty() {
            return Err(refuse(
                Kind::Config,
                format!(
                    "the {layer} users run on {slot} is not what the last good deployment {} left ({}), so {flag} cannot carry it over as it is; deploy the {layer} too (drop {flag}), or `maily-deploy rollback {environment} {}` first",
                    good.deployment_id,
                    drift.join("; "),
                    good.deployment_id
                ),
            ));
        }
        if !too_many.is_empty() {
            return Err(refuse(
                Kind::Config,
                format!(
                    "the {layer} users run on {slot} cannot be carried over at the replicas it runs with: {}. Scale it back within the limit (kubectl scale deployment/<service>-{slot} --replicas=<n> -n {}), or deploy the {layer} too (drop {flag})",
                    too_many.join("; "),
                    profile.namespace
                ),
            ));
        }
        let ai_config = match layer {
            Layer::Ai => match &good.ai_config {
                Some(c) => Some(c.clone()),
                None => {
                    return Err(refuse(
                        Kind::Config,
                        format!(
                            "the last good deployment {} recorded no AI config to carry over with the AI services; deploy the AI layer too (drop {flag})",
                            good.deployment_id
                        ),
                    ));
                }
            },
            Layer::Backend => None,
        };
        carry.insert(
            layer,
            Recorded {
                release,
                templates,
                services,
                ai_config,
                carried_from: Some(CarriedFrom {
                    slot,
                    deployment_id: good.deployment_id.clone(),
                }),
            },
        );
    }
    Ok(carry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::live::{ServiceState, SlotState};
    use crate::pipeline::snapshot::{Outcome, tests_support::sample};
    use crate::pipeline::{SelectionFlags, select};
    use std::path::PathBuf;

    fn profile() -> Profile {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests");
        crate::config::profile::load(&dir, "staging").unwrap()
    }

    fn release(tag: &str) -> Release {
        Release {
            environment: "staging".into(),
            deployment_id: format!("staging-2025010{}-000000", tag.trim_start_matches('v')),
            image_registry: "r".into(),
            image_tag: tag.into(),
            backup_url: String::new(),
            rollout_timeout_secs: 60,
            digests: Default::default(),
        }
    }

    /// Every service on `slot` at `backend` / `ai` (None: the AI services
    /// never reached), the other slot at `idle`.
    fn state(slot: Slot, backend: &str, ai: Option<&str>, idle: &str) -> PlatformState {
        let p = profile();
        let mut services = BTreeMap::new();
        for (name, svc) in &p.services {
            let tag = if svc.ai { ai } else { Some(backend) };
            let image = |t: &str| Some(values::image_of(&release(t), &p, name));
            let mut slots = BTreeMap::new();
            slots.insert(
                slot.other(),
                SlotState {
                    image: image(idle),
                    replicas: 2,
                    ready: 2,
                    deployment_id: None,
                    version: None,
                },
            );
            if let Some(t) = tag {
                slots.insert(
                    slot,
                    SlotState {
                        image: image(t),
                        replicas: 3,
                        ready: 3,
                        deployment_id: None,
                        version: None,
                    },
                );
            }
            services.insert(
                name.clone(),
                ServiceState {
                    kind: svc.kind,
                    active: tag.map(|_| slot),
                    weights: None,
                    slots,
                },
            );
        }
        PlatformState { services }
    }

    fn good(tag: &str, after: PlatformState) -> Snapshot {
        let mut s = sample();
        s.deployment_id = "staging-20250101-000000".parse().unwrap();
        s.outcome = Outcome::Succeeded;
        s.release = Some(release(tag));
        s.after = Some(after);
        s.ai_config = Some(crate::phases::configure_ai::AiConfigRecord::new(
            Slot::Blue,
            profile().ai_config().unwrap(),
        ));
        s
    }

    fn skipping(flags: &[PhaseId]) -> Selection {
        select(&SelectionFlags {
            skip: flags.iter().copied().collect(),
            ..Default::default()
        })
        .unwrap()
    }

    const BACKEND_ONLY: &[PhaseId] = &[
        PhaseId::Provision,
        PhaseId::Migrate,
        PhaseId::DeployFrontend,
        PhaseId::ConfigureAi,
    ];
    const AI_ONLY: &[PhaseId] = &[
        PhaseId::Provision,
        PhaseId::Migrate,
        PhaseId::DeployFrontend,
        PhaseId::DeployBackend,
    ];

    #[test]
    fn the_backend_only_line_carries_the_live_ai_layer_over() {
        let live = state(Slot::Blue, "v1", Some("v1"), "v0");
        let carry = decide(
            &skipping(BACKEND_ONLY),
            "staging",
            &profile(),
            &live,
            Some(&good("v1", live.clone())),
        )
        .unwrap();
        assert_eq!(carry.keys().collect::<Vec<_>>(), [&Layer::Ai]);
        let ai = &carry[&Layer::Ai];
        assert_eq!(ai.release.image_tag, "v1");
        assert_eq!(
            ai.carried_from,
            Some(CarriedFrom {
                slot: Slot::Blue,
                deployment_id: "staging-20250101-000000".parse().unwrap()
            })
        );
        // Exactly the AI services users reach, at the replicas they run with.
        assert_eq!(
            ai.services.keys().cloned().collect::<Vec<_>>(),
            Layer::Ai.services(&profile())
        );
        assert!(ai.services.values().all(|r| *r == 3));
        assert!(ai.ai_config.is_some());
        assert_eq!(
            ai.describe(Layer::Ai),
            "AI v1 carried over from blue (staging-20250101-000000)"
        );
    }

    #[test]
    fn the_ai_only_line_carries_the_backend_over_whatever_the_idle_slot_holds() {
        // A failed run left v9 in the idle slot: irrelevant, the copy comes
        // from the record of what users run.
        let live = state(Slot::Green, "v2", Some("v1"), "v9");
        let carry = decide(
            &skipping(AI_ONLY),
            "staging",
            &profile(),
            &live,
            Some(&good("v2", live.clone())),
        )
        .unwrap();
        assert_eq!(carry.keys().collect::<Vec<_>>(), [&Layer::Backend]);
        assert_eq!(carry[&Layer::Backend].release.image_tag, "v2");
        assert_eq!(
            carry[&Layer::Backend]
                .services
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
            Layer::Backend.services(&profile())
        );
    }

    #[test]
    fn a_layer_recorded_by_a_carry_over_is_carried_at_its_own_release() {
        // The last good run deployed AI v3 and carried backend v2.
        let live = state(Slot::Blue, "v2", Some("v3"), "v1");
        let mut last = good("v3", live.clone());
        last.layers.insert(
            Layer::Backend,
            LayerRecord {
                how: How::CarriedOver,
                release: release("v2"),
                templates: Vec::new(),
                carried_from: Some(CarriedFrom {
                    slot: Slot::Green,
                    deployment_id: "staging-20250102-000000".parse().unwrap(),
                }),
            },
        );
        let carry = decide(
            &skipping(AI_ONLY),
            "staging",
            &profile(),
            &live,
            Some(&last),
        )
        .unwrap();
        assert_eq!(carry[&Layer::Backend].release.image_tag, "v2");
    }

    #[test]
    fn an_http_service_scaled_past_the_profiles_limit_is_not_carried() {
        // Someone ran `kubectl scale --replicas=2147483647` on api-green;
        // nothing recorded its replicas, so the live ones would be copied.
        let mut live = state(Slot::Green, "v2", Some("v1"), "v9");
        for svc in live.services.values_mut() {
            svc.slots.get_mut(&Slot::Green).unwrap().replicas = i32::MAX;
        }
        let mut recorded = live.clone();
        for svc in recorded.services.values_mut() {
            svc.slots.get_mut(&Slot::Green).unwrap().replicas = 0;
        }
        let r = decide(
            &skipping(AI_ONLY),
            "staging",
            &profile(),
            &live,
            Some(&good("v2", recorded)),
        )
        .unwrap_err();
        assert_eq!(r.kind, Kind::Config);
        assert!(
            r.message.contains(&format!(
                "api-green runs 2147483647 replicas, over {}",
                crate::config::profile::MAX_HTTP_REPLICAS
            )),
            "{}",
            r.message
        );
        assert!(r.message.contains("kubectl scale"), "{}", r.message);
        assert!(r.message.contains("drop --skip-backend"), "{}", r.message);
        // A worker at the int32 maximum is within its limit.
        assert!(!r.message.contains("worker"), "{}", r.message);
    }

    #[test]
    fn skipping_both_layers_leaves_nothing_to_switch_to() {
        let live = state(Slot::Blue, "v1", Some("v1"), "v0");
        let mut flags = BACKEND_ONLY.to_vec();
        flags.push(PhaseId::DeployBackend);
        let r = decide(
            &skipping(&flags),
            "staging",
            &profile(),
            &live,
            Some(&good("v1", live.clone())),
        )
        .unwrap_err();
        assert_eq!(r.kind, Kind::Usage);
        assert!(
            r.message.contains("--skip-backend and --skip-ai"),
            "{}",
            r.message
        );
        assert!(r.message.contains("--skip-traffic"), "{}", r.message);
    }

    #[test]
    fn a_first_deploy_cannot_skip_the_backend() {
        let r = decide(
            &skipping(AI_ONLY),
            "staging",
            &profile(),
            &PlatformState::default(),
            None,
        )
        .unwrap_err();
        assert_eq!(r.kind, Kind::Usage);
        assert!(r.message.contains("first deploy"), "{}", r.message);
    }

    #[test]
    fn a_live_layer_that_drifted_from_its_record_is_not_carried() {
        let live = state(Slot::Blue, "hotfix", Some("v1"), "v0");
        let recorded = state(Slot::Blue, "v1", Some("v1"), "v0");
        let r = decide(
            &skipping(AI_ONLY),
            "staging",
            &profile(),
            &live,
            Some(&good("v1", recorded)),
        )
        .unwrap_err();
        assert_eq!(r.kind, Kind::Config);
        assert!(
            r.message
                .contains("api-blue runs r/maily-api:hotfix (recorded: r/maily-api:v1)"),
            "{}",
            r.message
        );
    }

    #[test]
    fn ai_services_users_never_reached_are_not_carried() {
        let live = state(Slot::Blue, "v1", None, "v0");
        let carry = decide(
            &skipping(BACKEND_ONLY),
            "staging",
            &profile(),
            &live,
            Some(&good("v1", live.clone())),
        )
        .unwrap();
        assert!(carry.is_empty());
    }

    #[test]
    fn a_resumed_switch_is_not_refused_for_the_layer_it_resumes() {
        // --from shift-traffic --skip-ai: the backend is the resumed run's.
        let live = state(Slot::Blue, "v1", None, "v2");
        let selection = select(&SelectionFlags {
            skip: [PhaseId::ConfigureAi].into_iter().collect(),
            from: Some(PhaseId::ShiftTraffic),
            ..Default::default()
        })
        .unwrap();
        assert!(
            decide(&selection, "staging", &profile(), &live, None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_run_that_does_not_switch_carries_nothing() {
        let live = state(Slot::Blue, "v1", Some("v1"), "v0");
        let mut flags = AI_ONLY.to_vec();
        flags.push(PhaseId::ShiftTraffic);
        let carry = decide(&skipping(&flags), "staging", &profile(), &live, None).unwrap();
        assert!(carry.is_empty());
    }
}
