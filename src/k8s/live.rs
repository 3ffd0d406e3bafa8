//! The live state of an environment's backend: per service, what runs in
//! each slot, which slot is active, and the route's weights.
//!
//! Reading is three list calls (Deployments, Services, HTTPRoutes); what the
//! lists mean is a pure function, tested on fixtures.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{DynamicObject, GroupVersionKind, ListParams};
use serde::{Deserialize, Serialize};

use super::apply::Applier;
use super::client::retry;
use super::slot::{SLOT_LABEL, Slot};
use crate::config::Profile;
use crate::config::profile::ServiceKind;

/// The selector of every object the tool manages.
pub const PART_OF: &str = "app.kubernetes.io/part-of=maily";

/// The selector of the tool's objects in one slot.
pub fn slot_selector(slot: crate::k8s::slot::Slot) -> String {
    format!("{PART_OF},{}={slot}", crate::k8s::slot::SLOT_LABEL)
}

/// One slot of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotState {
    pub image: Option<String>,
    pub replicas: i32,
    pub ready: i32,
    /// The deployment that last wrote this slot.
    pub deployment_id: Option<String>,
    /// The release tag it runs: the Deployment's `app.kubernetes.io/version`
    /// label. With images pinned to their digests (the default), the image
    /// reference carries no tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl SlotState {
    /// The release this slot runs, as people name it: its tag (the version
    /// label, else the image's tag), or a short digest for an image pinned
    /// without either.
    pub fn release(&self) -> Option<String> {
        if let Some(v) = self.version.as_deref().filter(|v| !v.is_empty()) {
            return Some(v.to_string());
        }
        let image = self.image.as_deref()?;
        match image.rsplit_once('@') {
            Some((_, digest)) => Some(digest.chars().take("sha256:".len() + 12).collect()),
            None => {
                let last = image.rsplit('/').next().unwrap_or(image);
                last.split_once(':').map(|(_, tag)| tag.to_string())
            }
        }
    }
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    pub kind: ServiceKind,
    /// The slot users reach: the stable Service's selector (http), or the
    /// slot with replicas (worker). `None` before the first switch.
    pub active: Option<Slot>,
    /// The route's weights (blue, green), for http services with a route.
    pub weights: Option<(u32, u32)>,
    pub slots: BTreeMap<Slot, SlotState>,
}

impl ServiceState {
    pub fn image_in(&self, slot: Slot) -> Option<&str> {
        self.slots.get(&slot).and_then(|s| s.image.as_deref())
    }
}

/// The backend of an environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformState {
    pub services: BTreeMap<String, ServiceState>,
}

/// Which slot the environment serves from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Active {
    /// Nothing switched yet: a first deploy.
    Fresh,
    /// Every service agrees.
    Slot(Slot),
    /// Services disagree: an interrupted switch.
    Mixed(BTreeMap<String, Option<Slot>>),
}

impl PlatformState {
    pub fn active(&self) -> Active {
        let switched: Vec<Slot> = self.services.values().filter_map(|s| s.active).collect();
        // A service users have never reached is new (an AI service
        // configure-ai has not deployed yet, or only to the idle slot, or
        // left there by a failed run): it joins at the next switch and says
        // nothing about an interrupted one. Only when the run that wrote the
        // serving slot of the switched services also wrote its Deployment
        // there is it a first switch caught half-way.
        let serving = switched.first().copied();
        let serving_runs: Vec<&str> = serving
            .map(|slot| {
                self.services
                    .values()
                    .filter(|s| s.active.is_some())
                    .filter_map(|s| s.slots.get(&slot)?.deployment_id.as_deref())
                    .collect()
            })
            .unwrap_or_default();
        let actives: BTreeMap<String, Option<Slot>> = self
            .services
            .iter()
            .filter(|(_, s)| {
                s.active.is_some()
                    || serving.is_none_or(|slot| {
                        s.slots
                            .get(&slot)
                            .and_then(|st| st.deployment_id.as_deref())
                            .is_some_and(|id| serving_runs.contains(&id))
                    })
            })
            .map(|(name, s)| (name.clone(), s.active))
            .collect();
        let mut distinct: Vec<Option<Slot>> = actives.values().copied().collect();
        distinct.sort();
        distinct.dedup();
        match distinct.as_slice() {
            [] | [None] => Active::Fresh,
            [Some(slot)] => Active::Slot(*slot),
            _ => Active::Mixed(actives),
        }
    }

    /// What of `slot` users still reach, by service: an http service whose
    /// route sends it a share, a worker running there (consuming the
    /// queues). Empty for an idle slot; a rollout stopped between its steps
    /// and left so (`--no-rollback`) leaves it otherwise.
    pub fn reached_in(&self, slot: Slot) -> Vec<(String, String)> {
        self.services
            .iter()
            .filter_map(|(name, s)| {
                let how = match s.kind {
                    ServiceKind::Http => {
                        let (blue, green) = s.weights?;
                        let share = match slot {
                            Slot::Blue => blue,
                            Slot::Green => green,
                        };
                        (share > 0).then(|| format!("route weights blue {blue} / green {green}"))?
                    }
                    ServiceKind::Worker => {
                        let replicas = s.slots.get(&slot)?.replicas;
                        (replicas > 0 && s.active != Some(slot))
                            .then(|| format!("{replicas} worker replica(s) consuming in {slot}"))?
                    }
                };
                Some((name.clone(), how))
            })
            .collect()
    }

    /// The slot a new release goes to: the one users are not on.
    pub fn target_slot(&self) -> Result<Slot, HalfSwitched> {
        match self.active() {
            Active::Fresh => Ok(Slot::Blue),
            Active::Slot(s) => Ok(s.other()),
            Active::Mixed(by_service) => Err(HalfSwitched { by_service }),
        }
    }
}

/// Why no slot is the idle one: the services disagree on the active slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the services disagree on the active slot ({}): an earlier run was interrupted mid-switch; roll back to the last good deployment (`maily-deploy history`, then `maily-deploy rollback`)",
    self.list()
)]
pub struct HalfSwitched {
    /// Each service's active slot (`None`: never switched).
    pub by_service: BTreeMap<String, Option<Slot>>,
}

impl HalfSwitched {
    fn list(&self) -> String {
        let list: Vec<String> = self
            .by_service
            .iter()
            .map(|(n, s)| format!("{n}={}", s.map_or("none", |s| s.as_str())))
            .collect();
        list.join(", ")
    }
}

/// The most a route's backendRef may weigh: the Gateway API's
/// `BackendRef.weight` is an int32 with `Maximum=1000000`.
pub const MAX_ROUTE_WEIGHT: u32 = 1_000_000;

/// A backendRef's weight: 1 when absent (the Gateway API's default), none
/// when it is not a whole number from 0 to [`MAX_ROUTE_WEIGHT`], which no
/// API server that checks the CRD's schema keeps. Read as a u32 by
/// truncation, -1 became 1 and 2^32 + 1 became 1, and the undo wrote that
/// back as where users were.
fn backend_weight(backend: &serde_json::Value) -> Option<u32> {
    match backend.get("weight") {
        None | Some(serde_json::Value::Null) => Some(1),
        Some(w) => w
            .as_u64()
            .and_then(|w| u32::try_from(w).ok())
            .filter(|w| *w <= MAX_ROUTE_WEIGHT),
    }
}

/// The weights of a route's weighted rule (the one without header matches);
/// none when the route cannot be read (no such rule, a backend without a
/// name, a weight out of range), as with no route: the status shows `none`
/// and an undo sends every user to the active slot.
pub fn route_weights(route: &serde_json::Value) -> Option<(u32, u32)> {
    let rules = route.pointer("/spec/rules")?.as_array()?;
    let weighted = rules.iter().find(|r| {
        r.get("backendRefs")
            .and_then(|b| b.as_array())
            .is_some_and(|b| b.len() == 2)
    })?;
    let mut blue = None;
    let mut green = None;
    for b in weighted["backendRefs"].as_array()? {
        let name = b.get("name")?.as_str()?;
        let weight = backend_weight(b)?;
        if name.ends_with("-blue") {
            blue = Some(weight);
        } else if name.ends_with("-green") {
            green = Some(weight);
        }
    }
    Some((blue?, green?))
}

/// The state, from the objects the three lists returned.
pub fn state_from(
    profile: &Profile,
    deployments: &[Deployment],
    services: &[Service],
    routes: &[DynamicObject],
) -> PlatformState {
    let mut out = PlatformState::default();
    for (name, svc) in &profile.services {
        let mut slots = BTreeMap::new();
        for slot in Slot::BOTH {
            let wanted = format!("{name}-{slot}");
            if let Some(d) = deployments
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some(wanted.as_str()))
            {
                let image = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .and_then(|p| p.containers.first())
                    .and_then(|c| c.image.clone());
                let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let ready = d
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                let deployment_id = d
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("maily.ai/deployment-id"))
                    .cloned();
                let version = d
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app.kubernetes.io/version"))
                    .cloned();
                slots.insert(
                    slot,
                    SlotState {
                        image,
                        replicas,
                        ready,
                        deployment_id,
                        version,
                    },
                );
            }
        }
        let (active, weights) = match svc.kind {
            ServiceKind::Http => {
                let active = services
                    .iter()
                    .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
                    .and_then(|s| s.spec.as_ref()?.selector.as_ref()?.get(SLOT_LABEL))
                    .and_then(|s| Slot::parse(s));
                let weights = routes
                    .iter()
                    .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
                    .and_then(|r| route_weights(&r.data));
                (active, weights)
            }
            ServiceKind::Worker => {
                let up: Vec<Slot> = slots
                    .iter()
                    .filter(|(_, s)| s.replicas > 0)
                    .map(|(slot, _)| *slot)
                    .collect();
                // Both up is a rollout between its steps (workers split in
                // proportion) or a switch caught half-way: the active slot
                // is still the one users were on, the older deployment, as
                // the stable selectors of http services say until 100%.
                let active = match up.as_slice() {
                    [one] => Some(*one),
                    [_, _] => slots
                        .iter()
                        .min_by(|a, b| a.1.deployment_id.cmp(&b.1.deployment_id))
                        .map(|(slot, _)| *slot),
                    _ => None,
                };
                (active, None)
            }
        };
        out.services.insert(
            name.clone(),
            ServiceState {
                kind: svc.kind,
                active,
                weights,
                slots,
            },
        );
    }
    out
}

/// Read the live state of the environment.
pub async fn read(applier: &Applier, profile: &Profile) -> anyhow::Result<PlatformState> {
    let client = applier.client().clone();
    let ns = &profile.namespace;
    let lp = ListParams::default().labels(PART_OF);
    let deploy_api = Api::<Deployment>::namespaced(client.clone(), ns);
    let service_api = Api::<Service>::namespaced(client.clone(), ns);
    let deployments = retry("listing deployments", || deploy_api.list(&lp));
    let services = retry("listing services", || service_api.list(&lp));
    let routes = async {
        match applier.resource(&httproute_gvk()).await {
            Ok((ar, _)) => {
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
                Ok(retry("listing httproutes", || api.list(&lp)).await?.items)
            }
            // No Gateway API in the cluster: no routes yet; deploy-backend
            // checks for it before anything changes.
            Err(_) => Ok(Vec::new()),
        }
    };
    // All three at once: a read is one round trip (two the first time,
    // when the routes' group is discovered), not three.
    let (deployments, services, routes) = tokio::try_join!(deployments, services, routes)?;
    Ok(state_from(
        profile,
        &deployments.items,
        &services.items,
        &routes,
    ))
}

pub fn httproute_gvk() -> GroupVersionKind {
    GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute")
}

/// Whether `live` replicas of a serving slot are what a deployment that
/// left `recorded` would show now: exactly that for a worker; for an http
/// service anything its HorizontalPodAutoscaler may choose, from the
/// profile's replicas to three times that (`MAX_REPLICAS`). Outside that, a
/// person or another controller scaled it (`kubectl scale`).
fn replicas_as_left(kind: ServiceKind, recorded: i32, live: i32) -> bool {
    match kind {
        ServiceKind::Worker => live == recorded,
        ServiceKind::Http => (recorded..=recorded.saturating_mul(3)).contains(&live),
    }
}

/// Route weights as the status table shows them: `75/25` (blue/green), or
/// `none` without a route.
pub fn weights_words(weights: Option<(u32, u32)>) -> String {
    weights.map_or("none".to_string(), |(b, g)| format!("{b}/{g}"))
}

/// How the live state differs from a recorded one, one line per difference:
/// the drift `status` reports against the last good deployment (or, while
/// a rollout is in progress, against what its step is meant to leave).
pub fn differences(recorded: &PlatformState, live: &PlatformState) -> Vec<String> {
    let mut out = Vec::new();
    for (name, want) in &recorded.services {
        let Some(have) = live.services.get(name) else {
            out.push(format!("{name}: recorded, but not in the cluster"));
            continue;
        };
        if want.active != have.active {
            out.push(format!(
                "{name}: users on {} (recorded: {})",
                have.active.map_or("no slot", |s| s.as_str()),
                want.active.map_or("no slot", |s| s.as_str())
            ));
        }
        if want.weights != have.weights {
            out.push(format!(
                "{name}: route weights blue/green {} (recorded: {})",
                weights_words(have.weights),
                weights_words(want.weights)
            ));
        }
        if let Some(active) = have.active {
            let (w, h) = (want.image_in(active), have.image_in(active));
            if w != h {
                out.push(format!(
                    "{name}-{active}: runs {} (recorded: {})",
                    h.unwrap_or("nothing"),
                    w.unwrap_or("nothing")
                ));
            }
            let replicas = |s: &ServiceState| s.slots.get(&active).map(|s| s.replicas);
            if let (Some(w), Some(h)) = (replicas(want), replicas(have))
                && !replicas_as_left(have.kind, w, h)
            {
                out.push(format!("{name}-{active}: replicas {h} (recorded: {w})"));
            }
        }
    }
    for name in live.services.keys() {
        if !recorded.services.contains_key(name) {
            out.push(format!(
                "{name}: in the cluster, not in the recorded deployment"
            ));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::profile::{Gateway, Service};
    use crate::config::traffic::{Pause, Traffic};

    #[test]
    fn a_slot_is_named_by_its_release_tag_even_when_pinned_to_a_digest() {
        let slot = |image: &str, version: Option<&str>| SlotState {
            image: Some(image.into()),
            version: version.map(String::from),
            ..Default::default()
        };
        let pinned =
            "registry.example:5000/maily/maily-api@sha256:e3b0c44298fc1c149afbf4c8996fb924";
        assert_eq!(slot(pinned, Some("v42")).release().as_deref(), Some("v42"));
        assert_eq!(
            slot(pinned, None).release().as_deref(),
            Some("sha256:e3b0c44298fc")
        );
        assert_eq!(
            slot("registry.example:5000/maily/maily-api:v7", None)
                .release()
                .as_deref(),
            Some("v7")
        );
        assert_eq!(
            slot("registry.example:5000/maily/maily-api", None).release(),
            None
        );
    }

    /// The state of one http service `api`: users on `active` (and
    /// `weights`, when it has a route), `blue` and `green` replicas, all ready.
    pub(crate) fn api_state(
        active: Slot,
        weights: Option<(u32, u32)>,
        blue: i32,
        green: i32,
    ) -> PlatformState {
        let slot = |replicas| SlotState {
            replicas,
            ready: replicas,
            ..Default::default()
        };
        PlatformState {
            services: [(
                "api".to_string(),
                ServiceState {
                    kind: ServiceKind::Http,
                    active: Some(active),
                    weights,
                    slots: [(Slot::Blue, slot(blue)), (Slot::Green, slot(green))].into(),
                },
            )]
            .into(),
        }
    }

    /// An http service `api` (2 replicas) and a worker `workers` (3).
    pub(crate) fn profile() -> Profile {
        Profile {
            namespace: "maily-production".into(),
            domains: [
                ("api".to_string(), "api.maily.ai".to_string()),
                ("app".to_string(), "app.maily.ai".to_string()),
            ]
            .into(),
            gateway: Gateway {
                name: "g".into(),
                namespace: "gw".into(),
            },
            replicas: 2,
            traffic: Traffic {
                steps: vec![100],
                pause: Pause::For(std::time::Duration::from_secs(60)),
                grace: None,
                workers: Default::default(),
                analysis: None,
            },
            verify: Default::default(),
            secrets: Default::default(),
            ai: None,
            services: [
                (
                    "api".to_string(),
                    Service {
                        kind: ServiceKind::Http,
                        replicas: None,
                        image: None,
                        path: Some("/".into()),
                        ai: false,
                    },
                ),
                (
                    "workers".to_string(),
                    Service {
                        kind: ServiceKind::Worker,
                        replicas: Some(3),
                        image: None,
                        path: None,
                        ai: false,
                    },
                ),
            ]
            .into(),
        }
    }

    fn deployment(name: &str, image: &str, replicas: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": {"maily.ai/deployment-id": format!("production-2025010{replicas}-000000")}},
            "spec": {"replicas": replicas, "selector": {}, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}},
            "status": {"readyReplicas": replicas}
        }))
        .unwrap()
    }

    fn service(name: &str, slot: &str) -> Service_ {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"selector": {"app.kubernetes.io/name": name, "maily.ai/slot": slot}}
        }))
        .unwrap()
    }
    type Service_ = k8s_openapi::api::core::v1::Service;

    fn route(name: &str, blue: u32, green: u32) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {"rules": [
                {"matches": [{"headers": [{"name": "x-maily-slot", "value": "blue"}]}], "backendRefs": [{"name": format!("{name}-blue"), "port": 80}]},
                {"backendRefs": [{"name": format!("{name}-blue"), "port": 80, "weight": blue}, {"name": format!("{name}-green"), "port": 80, "weight": green}]}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn a_route_weight_outside_the_gateway_apis_range_makes_the_route_unreadable() {
        let with = |weight: serde_json::Value| {
            let mut r = route("api", 0, 100);
            r.data["spec"]["rules"][1]["backendRefs"][0]["weight"] = weight;
            r
        };
        let weights = |r: DynamicObject| {
            state_from(
                &profile(),
                &[deployment("api-green", "r/maily-api:v2", 2)],
                &[service("api", "green")],
                &[r],
            )
            .services["api"]
                .weights
        };
        assert_eq!(weights(with(1_000_000.into())), Some((1_000_000, 100)));
        let mut absent = route("api", 0, 100);
        absent.data["spec"]["rules"][1]["backendRefs"][0]
            .as_object_mut()
            .unwrap()
            .remove("weight");
        assert_eq!(weights(absent), Some((1, 100)), "the API's default");
        // Once read as 1 by truncation, each of these: users on blue.
        for bad in [
            serde_json::json!(-1),
            serde_json::json!(4_294_967_297_u64),
            serde_json::json!(1_000_001),
            serde_json::json!(0.5),
            serde_json::json!("50"),
        ] {
            assert_eq!(weights(with(bad.clone())), None, "{bad}");
        }
    }

    #[test]
    fn a_slot_users_reach_is_named_by_service_and_how() {
        let idle = api_state(Slot::Green, Some((0, 100)), 2, 2);
        assert!(idle.reached_in(Slot::Blue).is_empty());
        assert_eq!(idle.reached_in(Slot::Green).len(), 1);
        let mut split = api_state(Slot::Green, Some((25, 75)), 2, 2);
        assert_eq!(
            split.reached_in(Slot::Blue),
            vec![(
                "api".to_string(),
                "route weights blue 25 / green 75".to_string()
            )]
        );
        // Workers left consuming in the slot users are not on.
        let slot = |replicas| SlotState {
            replicas,
            ..Default::default()
        };
        split.services.insert(
            "workers".into(),
            ServiceState {
                kind: ServiceKind::Worker,
                active: Some(Slot::Green),
                weights: None,
                slots: [(Slot::Blue, slot(1)), (Slot::Green, slot(3))].into(),
            },
        );
        let reached = split.reached_in(Slot::Blue);
        assert_eq!(reached.len(), 2, "{reached:?}");
        assert_eq!(reached[1].1, "1 worker replica(s) consuming in blue");
    }

    #[test]
    fn an_empty_namespace_is_fresh_and_deploys_to_blue() {
        let s = state_from(&profile(), &[], &[], &[]);
        assert_eq!(s.active(), Active::Fresh);
        assert_eq!(s.target_slot(), Ok(Slot::Blue));
    }

    #[test]
    fn the_stable_selector_and_the_scaled_worker_say_which_slot_is_live() {
        let s = state_from(
            &profile(),
            &[
                deployment("api-blue", "r/maily-api:v1", 2),
                deployment("api-green", "r/maily-api:v2", 2),
                deployment("workers-blue", "r/maily-workers:v1", 0),
                deployment("workers-green", "r/maily-workers:v2", 3),
            ],
            &[service("api", "green")],
            &[route("api", 0, 100)],
        );
        assert_eq!(s.active(), Active::Slot(Slot::Green));
        assert_eq!(s.target_slot(), Ok(Slot::Blue));
        assert_eq!(s.services["api"].weights, Some((0, 100)));
        assert_eq!(
            s.services["api"].image_in(Slot::Blue),
            Some("r/maily-api:v1")
        );
    }

    #[test]
    fn workers_split_mid_rollout_stay_on_the_slot_users_were_on() {
        let by = |name: &str, image: &str, replicas: i32, id: &str| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "annotations": {"maily.ai/deployment-id": id}},
                "spec": {"replicas": replicas, "selector": {}, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}},
                "status": {"readyReplicas": replicas}
            }))
            .unwrap()
        };
        // At 25%: a quarter of the new release's workers run beside three
        // quarters of the old one's; the stable selector is still blue.
        let s = state_from(
            &profile(),
            &[
                by(
                    "api-blue",
                    "r/maily-api:v1",
                    2,
                    "production-20250101-000000",
                ),
                by(
                    "api-green",
                    "r/maily-api:v2",
                    2,
                    "production-20250102-000000",
                ),
                by("workers-blue", "w:v1", 3, "production-20250101-000000"),
                by("workers-green", "w:v2", 1, "production-20250102-000000"),
            ],
            &[service("api", "blue")],
            &[route("api", 75, 25)],
        );
        assert_eq!(s.active(), Active::Slot(Slot::Blue));
        assert_eq!(s.target_slot(), Ok(Slot::Green));
    }

    #[test]
    fn a_half_done_switch_is_refused_with_the_way_out() {
        let s = state_from(
            &profile(),
            &[
                deployment("workers-blue", "w:v1", 3),
                deployment("workers-green", "w:v2", 0),
            ],
            &[service("api", "green")],
            &[],
        );
        let err = s.target_slot().unwrap_err().to_string();
        assert!(err.contains("api=green, workers=blue"), "{err}");
        assert!(err.contains("rollback"), "{err}");
    }

    #[test]
    fn a_service_not_yet_deployed_or_only_in_the_idle_slot_is_no_half_switch() {
        let mut p = profile();
        p.services.insert(
            "ai-orchestrator".into(),
            Service {
                kind: ServiceKind::Http,
                replicas: None,
                image: None,
                path: None,
                ai: true,
            },
        );
        let live = [
            deployment("api-blue", "r/maily-api:v1", 2),
            deployment("workers-blue", "r/maily-workers:v1", 3),
        ];
        let s = state_from(&p, &live, &[service("api", "blue")], &[]);
        assert_eq!(s.active(), Active::Slot(Slot::Blue), "never deployed");
        let mut idle_only = live.to_vec();
        idle_only.push(deployment("ai-orchestrator-green", "r/ai:v2", 1));
        let s = state_from(&p, &idle_only, &[service("api", "blue")], &[]);
        assert_eq!(
            s.target_slot(),
            Ok(Slot::Green),
            "deployed to the idle slot only"
        );
        let mut stale = live.to_vec();
        stale.push(deployment("ai-orchestrator-blue", "r/ai:v0", 1));
        let s = state_from(&p, &stale, &[service("api", "blue")], &[]);
        assert_eq!(
            s.active(),
            Active::Slot(Slot::Blue),
            "left in the serving slot by an earlier run, never switched to"
        );
        let mut serving = live.to_vec();
        serving.push(deployment("ai-orchestrator-blue", "r/ai:v1", 2));
        let s = state_from(&p, &serving, &[service("api", "blue")], &[]);
        assert!(
            matches!(s.active(), Active::Mixed(_)),
            "written by the run that switched the others, never switched to: a half switch"
        );
    }

    #[test]
    fn drift_names_each_difference() {
        let recorded = state_from(
            &profile(),
            &[deployment("api-green", "r/maily-api:v2", 2)],
            &[service("api", "green")],
            &[route("api", 0, 100)],
        );
        let live = state_from(
            &profile(),
            &[deployment("api-green", "r/maily-api:hotfix", 2)],
            &[service("api", "green")],
            &[route("api", 10, 90)],
        );
        assert_eq!(
            differences(&recorded, &live),
            vec![
                "api: route weights blue/green 10/90 (recorded: 0/100)".to_string(),
                "api-green: runs r/maily-api:hotfix (recorded: r/maily-api:v2)".to_string(),
            ]
        );
        assert!(differences(&recorded, &recorded).is_empty());
    }

    #[test]
    fn a_hand_scale_is_drift_and_the_autoscalers_range_is_not() {
        let at = |replicas| {
            state_from(
                &profile(),
                &[deployment("api-green", "r/maily-api:v2", replicas)],
                &[service("api", "green")],
                &[route("api", 0, 100)],
            )
        };
        let recorded = at(2);
        // The HPA scales an http slot between 2 and 6.
        assert!(differences(&recorded, &at(6)).is_empty());
        assert_eq!(
            differences(&recorded, &at(7)),
            vec!["api-green: replicas 7 (recorded: 2)".to_string()]
        );
        assert_eq!(
            differences(&recorded, &at(1)),
            vec!["api-green: replicas 1 (recorded: 2)".to_string()]
        );
        assert!(replicas_as_left(ServiceKind::Worker, 3, 3));
        assert!(!replicas_as_left(ServiceKind::Worker, 3, 4));
    }
}
