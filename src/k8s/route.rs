//! Routes: which slot users reach. For an http service, the HTTPRoute's
//! weights and the stable Service's selector; for a worker, which slot has
//! replicas. A switch is these changes and nothing else, so a rollback to a
//! slot that still runs is one switch.

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};

use super::apply::Applier;
use super::client::status_code;
use super::live::{PlatformState, httproute_gvk};
use super::manifest::{self, Scope, Template};
use super::slot::Slot;
use super::values::{self, Release};
use crate::config::Profile;
use crate::config::profile::ServiceKind;

/// Weights (blue, green) that send everyone to `slot`.
pub fn all_to(slot: Slot) -> (u32, u32) {
    match slot {
        Slot::Blue => (100, 0),
        Slot::Green => (0, 100),
    }
}

/// Weights (blue, green) with `percent` of users on `slot`.
pub fn weights_for(slot: Slot, percent: u32) -> (u32, u32) {
    let p = percent.min(100);
    match slot {
        Slot::Blue => (p, 100 - p),
        Slot::Green => (100 - p, p),
    }
}

fn http_services(profile: &Profile) -> Vec<&str> {
    profile
        .services
        .iter()
        .filter(|(_, s)| s.kind == ServiceKind::Http)
        .map(|(n, _)| n.as_str())
        .collect()
}

fn workers(profile: &Profile) -> Vec<&str> {
    profile
        .services
        .iter()
        .filter(|(_, s)| s.kind == ServiceKind::Worker)
        .map(|(n, _)| n.as_str())
        .collect()
}

/// Scale a Deployment through its scale subresource.
pub async fn scale(
    applier: &Applier,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> anyhow::Result<()> {
    applier.may_change().await?;
    let api: Api<Deployment> = Api::namespaced(applier.client().clone(), namespace);
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    let params = PatchParams::default();
    let p = Patch::Merge(&patch);
    applier
        .retry_change("scaling", || api.patch_scale(name, &params, &p))
        .await
        .with_context(|| format!("scaling {name} to {replicas}"))?;
    Ok(())
}

/// Point every http service's route and stable Service at `active`, with
/// `weights` on the route.
pub async fn set_http(
    applier: &Applier,
    profile: &Profile,
    templates: &[Template],
    release: &Release,
    active: Slot,
    weights: (u32, u32),
) -> anyhow::Result<()> {
    set_each(applier, profile, templates, release, |_| (active, weights)).await
}

/// Point each http service's route and stable Service where `at` says
/// (one traffic step). One apply of every route, so a step (and its undo)
/// lands at once rather than service by service.
pub async fn set_each(
    applier: &Applier,
    profile: &Profile,
    templates: &[Template],
    release: &Release,
    at: impl Fn(&str) -> (Slot, (u32, u32)),
) -> anyhow::Result<()> {
    applier
        .apply_all(routes_at(profile, templates, release, at)?)
        .await?;
    Ok(())
}

/// Each http service's route and stable Service, pointed where `at` says.
pub fn routes_at(
    profile: &Profile,
    templates: &[Template],
    release: &Release,
    at: impl Fn(&str) -> (Slot, (u32, u32)),
) -> anyhow::Result<Vec<DynamicObject>> {
    let mut objects: Vec<DynamicObject> = Vec::new();
    for name in http_services(profile) {
        let (active, weights) = at(name);
        let values = values::for_route(release, profile, name, active, weights);
        objects.extend(
            manifest::render(templates, &[Scope::Route], &values)?
                .into_iter()
                .map(|(_, o)| o),
        );
    }
    Ok(objects)
}

/// Scale Deployments (name, replicas) together, skipping absent ones.
pub async fn scale_all(
    applier: &Applier,
    namespace: &str,
    replicas: Vec<(String, i32)>,
) -> anyhow::Result<()> {
    stream::iter(replicas.into_iter().map(|(name, r)| {
        let applier = applier.clone();
        let ns = namespace.to_string();
        async move { scale_if_present(&applier, &ns, &name, r).await }
    }))
    .buffer_unordered(8)
    .try_collect::<Vec<_>>()
    .await?;
    Ok(())
}

/// The Deployments of `slot` that serve http, scaled to 0: the old slot
/// once its grace period is over.
pub async fn scale_down_http(
    applier: &Applier,
    profile: &Profile,
    slot: Slot,
) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = http_services(profile)
        .into_iter()
        .map(|s| format!("{s}-{slot}"))
        .collect();
    scale_all(
        applier,
        &profile.namespace,
        names.iter().map(|n| (n.clone(), 0)).collect(),
    )
    .await?;
    Ok(names)
}

/// The workers of a profile, with their full replicas.
pub fn workers_of(profile: &Profile) -> Vec<(String, u32)> {
    workers(profile)
        .into_iter()
        .map(|w| (w.to_string(), profile.replicas_of(w)))
        .collect()
}

/// Switch users to `target`: workers of `target` up (the caller waits for
/// them), every route and stable Service to `target`, then the other slot's
/// workers down. The other slot's http Deployments stay up for an instant
/// rollback.
pub async fn switch_to(
    applier: &Applier,
    profile: &Profile,
    templates: &[Template],
    release: &Release,
    target: Slot,
) -> anyhow::Result<()> {
    set_http(applier, profile, templates, release, target, all_to(target)).await?;
    let old: Vec<String> = workers(profile)
        .into_iter()
        .map(|w| format!("{w}-{}", target.other()))
        .collect();
    stream::iter(old.into_iter().map(|name| {
        let applier = applier.clone();
        let ns = profile.namespace.clone();
        async move { scale_if_present(&applier, &ns, &name, 0).await }
    }))
    .buffer_unordered(8)
    .try_collect::<Vec<_>>()
    .await?;
    Ok(())
}

/// Scale the workers of `slot` to their profile replicas (before a switch).
pub async fn workers_up(
    applier: &Applier,
    profile: &Profile,
    slot: Slot,
) -> anyhow::Result<Vec<String>> {
    let names: Vec<(String, i32)> = workers(profile)
        .into_iter()
        .map(|w| (format!("{w}-{slot}"), profile.replicas_of(w) as i32))
        .collect();
    stream::iter(names.clone().into_iter().map(|(name, r)| {
        let applier = applier.clone();
        let ns = profile.namespace.clone();
        async move { scale(&applier, &ns, &name, r).await }
    }))
    .buffer_unordered(8)
    .try_collect::<Vec<_>>()
    .await?;
    Ok(names.into_iter().map(|(n, _)| n).collect())
}

async fn scale_if_present(
    applier: &Applier,
    ns: &str,
    name: &str,
    replicas: i32,
) -> anyhow::Result<()> {
    match scale(applier, ns, name, replicas).await {
        Err(e) if e.downcast_ref::<kube::Error>().and_then(status_code) == Some(404) => Ok(()),
        other => other,
    }
}

/// The http Deployments users go back to that hold fewer replicas `now`
/// than `before` had: (Deployment, its slot, the replicas `before` had).
/// The slots users go back to are those `before`'s weights send anyone to
/// (its active slot, without a route). An old slot scaled to 0 after its
/// grace period is the case this is for: routing users to it is an outage,
/// and its HPA cannot help, since Kubernetes stops autoscaling a target
/// scaled to 0.
pub fn short_of_before(
    profile: &Profile,
    before: &PlatformState,
    now: &PlatformState,
) -> Vec<(String, Slot, i32)> {
    let mut out = Vec::new();
    for name in http_services(profile) {
        let Some(was) = before.services.get(name) else {
            continue;
        };
        let reached: Vec<Slot> = match (was.weights, was.active) {
            (Some((blue, green)), _) => Slot::BOTH
                .into_iter()
                .filter(|s| match s {
                    Slot::Blue => blue > 0,
                    Slot::Green => green > 0,
                })
                .collect(),
            (None, Some(active)) => vec![active],
            (None, None) => Vec::new(),
        };
        for slot in reached {
            let want = was.slots.get(&slot).map_or(0, |s| s.replicas);
            let have = now
                .services
                .get(name)
                .and_then(|s| s.slots.get(&slot))
                .map_or(0, |s| s.replicas);
            if want > have {
                out.push((format!("{name}-{slot}"), slot, want));
            }
        }
    }
    out
}

/// Put users back where `before` had them. Where `before` had no route
/// (an environment's first switch), the route and stable Service go.
pub async fn restore(
    applier: &Applier,
    profile: &Profile,
    templates: &[Template],
    release: &Release,
    before: &PlatformState,
) -> anyhow::Result<()> {
    let ns = &profile.namespace;
    let mut objects = Vec::new();
    for name in http_services(profile) {
        let Some(state) = before.services.get(name) else {
            continue;
        };
        match state.active {
            Some(active) => {
                let weights = state.weights.unwrap_or(all_to(active));
                let values = values::for_route(release, profile, name, active, weights);
                objects.extend(
                    manifest::render(templates, &[Scope::Route], &values)?
                        .into_iter()
                        .map(|(_, o)| o),
                );
            }
            None => remove_route(applier, ns, name).await?,
        }
    }
    applier.apply_all(objects).await?;
    for w in workers(profile) {
        let state = before.services.get(w);
        for slot in Slot::BOTH {
            let replicas = state
                .and_then(|s| s.slots.get(&slot))
                .map_or(0, |s| s.replicas);
            scale_if_present(applier, ns, &format!("{w}-{slot}"), replicas).await?;
        }
    }
    Ok(())
}

async fn remove_route(applier: &Applier, ns: &str, name: &str) -> anyhow::Result<()> {
    applier.may_change().await?;
    let dp = DeleteParams::default();
    let services: Api<Service> = Api::namespaced(applier.client().clone(), ns);
    match applier
        .retry_change("deleting a stable service", || services.delete(name, &dp))
        .await
    {
        Ok(_) => {}
        Err(e) if status_code(&e) == Some(404) => {}
        Err(e) => return Err(e).with_context(|| format!("deleting Service {name}")),
    }
    if let Ok((ar, _)) = applier.resource(&httproute_gvk()).await {
        let routes: Api<DynamicObject> = Api::namespaced_with(applier.client().clone(), ns, &ar);
        match applier
            .retry_change("deleting a route", || routes.delete(name, &dp))
            .await
        {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(e).with_context(|| format!("deleting HTTPRoute {name}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_put_the_percentage_on_the_slot() {
        assert_eq!(all_to(Slot::Green), (0, 100));
        assert_eq!(weights_for(Slot::Blue, 25), (25, 75));
        assert_eq!(weights_for(Slot::Green, 5), (95, 5));
        assert_eq!(weights_for(Slot::Green, 150), (0, 100));
    }

    use super::super::live::tests::api_state as api;

    #[test]
    fn users_go_back_only_to_deployments_holding_what_they_held() {
        let profile = super::super::live::tests::profile();
        // Users were on blue (2 pods); the grace period scaled it to 0.
        let before = api(Slot::Blue, Some((100, 0)), 2, 0);
        let now = api(Slot::Green, Some((0, 100)), 0, 2);
        assert_eq!(
            short_of_before(&profile, &before, &now),
            [("api-blue".to_string(), Slot::Blue, 2)]
        );
        // Still up (the grace period kept it): nothing to scale.
        let kept = api(Slot::Green, Some((0, 100)), 2, 2);
        assert!(short_of_before(&profile, &before, &kept).is_empty());
        // Mid-rollout before (75/25): both slots must hold their pods.
        let split = api(Slot::Blue, Some((75, 25)), 2, 2);
        let both_down = api(Slot::Green, Some((0, 100)), 0, 1);
        assert_eq!(
            short_of_before(&profile, &split, &both_down),
            [
                ("api-blue".to_string(), Slot::Blue, 2),
                ("api-green".to_string(), Slot::Green, 2)
            ]
        );
        // Before the first switch (no route, no active slot): nothing.
        let mut first = api(Slot::Blue, None, 0, 0);
        first.services.get_mut("api").unwrap().active = None;
        assert!(short_of_before(&profile, &first, &now).is_empty());
    }
}
