//! deploy-backend: the release into the idle slot, rolled out and proven
//! ready, with nothing users can see changed.
//!
//! Renders the manifests, server-side applies them in dependency order, and
//! waits for every rollout at once; a pod that reports ErrImagePull,
//! ImagePullBackOff, CrashLoopBackOff or CreateContainerConfigError, or a
//! Deployment past its progress deadline, fails the phase at once.
//!
//! The AI services of the profile (`ai: true`) are not this phase's:
//! configure-ai deploys them, with their config, into the same slot.

use anyhow::Context as _;
use async_trait::async_trait;
use kube::api::DynamicObject;

use crate::config::profile::ServiceKind;
use crate::error::{Kind, fail};
use crate::k8s::live;
use crate::k8s::manifest::{self, Scope};
use crate::k8s::slot::Slot;
use crate::k8s::values::{self, Release};
use crate::k8s::watch::wait_for_slot;
use crate::pipeline::layers::Layer;
use crate::pipeline::{Context, Phase, PhaseId, PhasePlan, PhaseReport};

pub struct DeployBackend;

/// The backend this run puts in the slot: the release, templates and
/// profile it renders with, and whether it is carried over (then only the
/// slot's objects are applied: the platform's are the deployed layer's).
struct Backend {
    release: Release,
    templates: Vec<manifest::Template>,
    profile: crate::config::Profile,
    carried: Option<String>,
}

fn backend(cx: &Context) -> anyhow::Result<Backend> {
    let recorded = cx.layers.get(&Layer::Backend);
    Ok(Backend {
        release: cx.layer_release(Layer::Backend)?,
        templates: cx.layer_templates(Layer::Backend)?,
        profile: match recorded {
            Some(r) => r.profile(Layer::Backend, &cx.config.profile),
            None => cx.config.profile.without_ai(),
        },
        carried: recorded
            .filter(|r| r.carried_from.is_some())
            .map(|r| r.describe(Layer::Backend)),
    })
}

/// Every object a deploy of the backend to `slot` applies: the platform's
/// (unless the backend is carried over), then each service's in the slot.
fn objects_for(cx: &Context, b: &Backend, slot: Slot) -> anyhow::Result<Vec<DynamicObject>> {
    let mut out: Vec<DynamicObject> = Vec::new();
    if b.carried.is_none() {
        out.extend(
            manifest::render(
                cx.templates()?,
                &[Scope::Platform],
                &values::common(&b.release, &cx.config.profile),
            )?
            .into_iter()
            .map(|(_, o)| o),
        );
    }
    out.extend(slot_objects(&b.templates, &b.profile, &b.release, slot)?);
    Ok(out)
}

/// The platform's Secrets, from the values read from Vault at start-up:
/// the environment's (`shared`: what platform jobs such as the daily
/// backup read), and each profile Secret's copy for `slot`
/// (`<name>-<slot>`), which that slot's pods read. A slot's copy is written
/// only when a release goes into that slot, so a deploy never changes what
/// the slot users are on reads (its pods restarting meanwhile included),
/// and a rollback to it finds the values it ran with.
///
/// They are applied with the other objects but never come from
/// `objects_for`, whose objects a snapshot keeps: no secret value is ever
/// rendered into a manifest or a snapshot.
pub fn platform_secret_objects(
    cx: &Context,
    slot: Option<Slot>,
    shared: bool,
) -> Vec<DynamicObject> {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::ObjectMeta;
    let secret = |name: String, keys: &std::collections::BTreeMap<String, String>| {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(cx.config.profile.namespace.clone()),
                labels: Some(
                    [
                        ("app.kubernetes.io/part-of".to_string(), "maily".to_string()),
                        ("maily.ai/source".to_string(), "vault".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(
                keys.iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        serde_json::to_value(&secret)
            .and_then(serde_json::from_value)
            .expect("a Secret is a DynamicObject")
    };
    let mut out = Vec::new();
    for (name, keys) in &cx.platform_secrets.0 {
        if shared {
            out.push(secret(name.clone(), keys));
        }
        // The backup job's Secret is the environment's alone.
        if let Some(slot) = slot
            && name != crate::db::daily_backup::SECRET
        {
            out.push(secret(format!("{name}-{slot}"), keys));
        }
    }
    out
}

/// The objects of every service in a slot (what a rollback re-applies).
pub fn slot_objects(
    templates: &[manifest::Template],
    profile: &crate::config::Profile,
    release: &Release,
    slot: Slot,
) -> anyhow::Result<Vec<DynamicObject>> {
    let services: Vec<_> = profile.services.iter().collect();
    let rendered = manifest::side_by_side(&services, |(name, svc)| {
        let mut scopes = vec![Scope::Slot];
        if svc.kind == ServiceKind::Http {
            scopes.push(Scope::SlotHttp);
        }
        manifest::render(
            templates,
            &scopes,
            &values::for_slot(release, profile, name, slot),
        )
    });
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for result in rendered {
        match result {
            Ok(objects) => out.extend(objects.into_iter().map(|(_, o)| o)),
            Err(e) => match crate::error::failure_of(&e) {
                Some(f) if !f.problems.is_empty() => problems.extend(f.problems.clone()),
                _ => return Err(e),
            },
        }
    }
    if !problems.is_empty() {
        problems.dedup();
        return Err(crate::error::Failure::with_problems(
            Kind::Config,
            "the manifests do not render",
            problems,
        )
        .into());
    }
    Ok(out)
}

/// The Deployments of a slot, by name.
pub fn deployment_names(profile: &crate::config::Profile, slot: Slot) -> Vec<String> {
    profile
        .services
        .keys()
        .map(|s| format!("{s}-{slot}"))
        .collect()
}

/// Fail before any change when the cluster cannot take the routes later.
pub(crate) async fn preflight(cx: &Context) -> anyhow::Result<()> {
    let has_http = cx
        .config
        .profile
        .services
        .values()
        .any(|s| s.kind == ServiceKind::Http);
    if has_http
        && cx
            .applier()
            .await?
            .resource(&live::httproute_gvk())
            .await
            .is_err()
    {
        return Err(fail(
            Kind::Refused,
            "the cluster does not serve Gateway API HTTPRoutes (gateway.networking.k8s.io/v1), which route users between the slots; install the Gateway API CRDs and a Gateway, then run again",
        ));
    }
    Ok(())
}

/// Refuse, before the first apply, a release the namespace's
/// ResourceQuotas cannot hold once both slots run (`k8s::capacity`). A
/// note instead when the quotas cannot be read (a deployer Role from
/// before this check): the rollout then finds out, as before.
pub async fn fits_the_quota(
    cx: &Context,
    profile: &crate::config::Profile,
    slot: Slot,
    objects: &[DynamicObject],
) -> anyhow::Result<Option<String>> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ResourceQuota;
    use kube::api::{Api, ListParams};
    let client = cx.applier().await?.client().clone();
    let ns = &profile.namespace;
    let quota_api = Api::<ResourceQuota>::namespaced(client.clone(), ns);
    let all = ListParams::default();
    let quotas = match crate::k8s::client::retry("reading the namespace's ResourceQuotas", || {
        quota_api.list(&all)
    })
    .await
    {
        Ok(list) => list.items,
        Err(kube::Error::Api(e)) if e.code == 403 => {
            return Ok(Some(format!(
                "the namespace's ResourceQuotas cannot be read ({}); the release's size was not checked against them: re-apply `maily-deploy bootstrap` for the Role that may",
                e.message
            )));
        }
        Err(e) => return Err(e).context("reading the namespace's ResourceQuotas"),
    };
    if quotas.is_empty() {
        return Ok(None);
    }
    let new: Vec<(Deployment, i32)> = objects
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "Deployment"))
        .filter_map(|o| {
            let d: Deployment = serde_json::to_value(o)
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())?;
            let service = d
                .metadata
                .labels
                .as_ref()?
                .get("app.kubernetes.io/name")?
                .clone();
            // Full replicas, workers too: after the switch they all run.
            let replicas = i32::try_from(profile.replicas_of(&service)).unwrap_or(i32::MAX);
            Some((d, replicas))
        })
        .collect();
    let labels = crate::k8s::live::slot_selector(slot);
    let idle_api = Api::<Deployment>::namespaced(client, ns);
    let in_slot = ListParams::default().labels(&labels);
    let idle: Vec<Deployment> =
        crate::k8s::client::retry("reading the idle slot", || idle_api.list(&in_slot))
            .await
            .context("reading the idle slot's Deployments")?
            .items;
    // Pods the idle slot runs are replaced surge first: those counted too.
    let running = |name: Option<&String>| {
        idle.iter().any(|d| {
            d.metadata.name.as_ref() == name
                && d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) > 0
        })
    };
    let need = crate::k8s::capacity::demand(new.iter().map(|(d, r)| {
        let peak = if running(d.metadata.name.as_ref()) {
            r.saturating_add(crate::k8s::capacity::surge(d, *r))
        } else {
            *r
        };
        (d, peak)
    }));
    let freed = crate::k8s::capacity::demand(
        idle.iter()
            .map(|d| (d, d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))),
    );
    let short = crate::k8s::capacity::shortfalls(&quotas, &need, &freed);
    if short.is_empty() {
        return Ok(None);
    }
    Err(crate::error::Failure::with_problems(
        Kind::Refused,
        format!(
            "the release does not fit the namespace's ResourceQuota{} once both slots run; nothing was applied",
            if short.len() == 1 { "" } else { "s" }
        ),
        short
            .into_iter()
            .map(|problem| crate::error::Problem {
                phase: Some(PhaseId::DeployBackend.as_str().to_string()),
                subject: "capacity".into(),
                problem,
                fix: "raise the quota, or lower the profile's replicas or the manifests' requests".into(),
            })
            .collect(),
    )
    .into())
}

/// Where users are once the release is in the idle slot, for the run's
/// summary: the run has not moved them. On a first deploy no user was ever on any
/// slot, so the summary says that rather than naming the other slot.
fn where_users_are(active: &live::Active) -> String {
    match active {
        live::Active::Fresh => "first deploy: no users on any slot yet".into(),
        live::Active::Slot(on) => format!("users still on {on}"),
        live::Active::Mixed(_) => {
            "users still split between the slots as an interrupted switch left them".into()
        }
    }
}

fn summarize(objects: &[DynamicObject]) -> Vec<String> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for o in objects {
        let kind = o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
        *counts.entry(kind).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, n)| crate::wording::count(n, &k, &crate::wording::plural(&k)))
        .collect()
}

#[async_trait]
impl Phase for DeployBackend {
    fn id(&self) -> PhaseId {
        PhaseId::DeployBackend
    }

    async fn plan(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        let b = backend(cx)?;
        let release = b.release.clone();
        // A dry run may have no cluster at hand: the plan says what it
        // could not learn instead of failing.
        let live = match cx.applier().await {
            Ok(applier) => live::read(applier, &cx.config.profile)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (slot, slot_note) = match &live {
            Ok(state) => match state.target_slot() {
                Ok(s) => {
                    let s = cx.backend.target_slot.unwrap_or(s);
                    // Not refused here: the run puts back a run that died
                    // mid-rollout first, which may reunite users.
                    let note = match unreached(state, s, cx.environment()) {
                        Ok(()) => format!("idle slot {s}"),
                        Err(why) => format!(
                            "slot {s}; the run refuses unless putting back a run that died mid-rollout moves users off it: {why}"
                        ),
                    };
                    (s, note)
                }
                Err(why) => return Err(fail(Kind::PhaseFailed, why)),
            },
            Err(why) => (
                Slot::Blue,
                format!("idle slot unknown (cannot read the cluster: {why}); shown for blue"),
            ),
        };
        let objects = objects_for(cx, &b, slot)?;
        // With a cluster at hand, a release its quotas cannot hold fails
        // the plan as it would fail the run.
        let quota_note = match &live {
            Ok(_) => fits_the_quota(cx, &b.profile, slot, &objects).await?,
            Err(_) => None,
        };
        // With a cluster, the server judges every object (admission,
        // validation) and says what would change; nothing is stored.
        let server = match &live {
            Ok(_) => {
                let applier = cx.applier().await?;
                let verdicts = crate::k8s::server_plan::judge(
                    applier,
                    &objects,
&cx.config.profile.namespace,
                    PhaseId::DeployBackend.as_str(),
                )
                .await?;
                crate::k8s::server_plan::lines(&verdicts)
            }
            Err(_) => vec![
                "not checked by the server: no cluster at hand, so admission and validation have not seen the objects".into(),
            ],
        };
        let mut steps = vec![
            slot_note,
            format!(
                "server-side apply {} objects: {}",
                objects.len(),
                summarize(&objects).join(", ")
            ),
        ];
        steps.extend(server);
        for (name, keys) in &cx.config.profile.secrets {
            let which = if b.carried.is_none() {
                format!("Secrets {name} and {name}-{slot} (the slot's copy)")
            } else {
                format!("Secret {name}-{slot} (the slot's copy)")
            };
            steps.push(format!(
                "{which}: {} keys from Vault ({})",
                keys.len(),
                keys.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if b.carried.is_none() {
            use crate::db::daily_backup;
            if cx
                .config
                .profile
                .secrets
                .get(daily_backup::SOURCE)
                .is_some_and(|keys| keys.contains_key(daily_backup::KEY))
            {
                steps.push(format!(
                    "Secret {}: the daily backup job's libpq variables, from {}'s {}",
                    daily_backup::SECRET,
                    daily_backup::SOURCE,
                    daily_backup::KEY
                ));
            }
        }
        let backend = &b.profile;
        for name in backend.services.keys() {
            let tagged = values::tagged_image_of(&release, backend, name);
            steps.push(match release.digests.get(&tagged) {
                Some(pinned) => format!(
                    "{name}-{slot}: {tagged}, pinned to {}",
                    pinned.rsplit_once('@').map_or(pinned.as_str(), |(_, d)| d)
                ),
                None => format!("{name}-{slot}: {tagged}"),
            });
        }
        steps.extend(quota_note);
        steps.push(format!(
            "wait for {} rollouts (fail fast on image pull, crash loop, config errors; deadline {})",
            backend.services.len(),
            humantime::format_duration(release.rollout_timeout())
        ));
        Ok(PhasePlan {
            summary: match &b.carried {
                Some(what) => format!("{what} into the idle slot, users untouched"),
                None => format!(
                    "release {} to the idle slot, users untouched",
                    release.image_tag
                ),
            },
            steps,
        })
    }

    async fn applies(&self, cx: &Context) -> anyhow::Result<Vec<DynamicObject>> {
        let b = backend(cx)?;
        objects_for(cx, &b, cx.target_slot().await?)
    }

    async fn run(&self, cx: &mut Context) -> anyhow::Result<PhaseReport> {
        let b = backend(cx)?;
        let release = b.release.clone();
        let applier = cx.applier().await?.clone();
        let profile = cx.config.profile.clone();
        // The lifecycle read the live state just before the first change;
        // nothing since (provision, migrate) touches the slots.
        let state = match &cx.backend.before {
            Some(before) => before.clone(),
            None => live::read(&applier, &profile).await?,
        };
        let slot = match cx.backend.target_slot {
            Some(s) => s,
            None => state
                .target_slot()
                .map_err(|why| fail(Kind::PhaseFailed, why))?,
        };
        unreached(&state, slot, cx.environment())?;
        preflight(cx).await?;
        let rendering = std::time::Instant::now();
        let objects = objects_for(cx, &b, slot)?;
        tracing::debug!(
            "rendered {} objects in {} ms",
            objects.len(),
            rendering.elapsed().as_millis()
        );
        if let Some(note) = fits_the_quota(cx, &b.profile, slot, &objects).await? {
            tracing::warn!("{note}");
        }
        // A carried-over backend writes the slot's copies of the secrets
        // (its pods read them) but not the environment's: those are the
        // deployed layer's to write.
        let secrets = platform_secret_objects(cx, Some(slot), b.carried.is_none());
        let secret_names: Vec<String> = secrets
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        let mut objects = objects;
        objects.extend(secrets);
        let counts = summarize(&objects);
        tracing::info!("applying {} objects to slot {slot}", objects.len());
        // The platform's shared objects change for both slots: a failure
        // from here on puts them back as the last good deployment left them.
        if b.carried.is_none() {
            crate::pipeline::undo::record(cx, crate::pipeline::undo::Undo::Platform);
        }
        let applied = applier.apply_all(objects).await?;
        cx.backend.target_slot = Some(slot);

        // The AI services are configure-ai's.
        let profile = b.profile.clone();
        let names = deployment_names(&profile, slot);
        wait_for_slot(
            applier.client(),
            &profile.namespace,
            slot,
            &names,
            release.rollout_timeout(),
            crate::k8s::rollout::graces(&cx.config.vars),
        )
        .await?;
        cx.backend.deployed = true;
        let mut details = vec![format!("{applied}: {}", counts.join(", "))];
        for name in &secret_names {
            details.push(format!("Secret {name} written from Vault"));
        }
        details.extend(profile.services.keys().map(|s| {
            format!(
                "{s}-{slot}: {} ready",
                values::image_of(&release, &profile, s)
            )
        }));
        let users = where_users_are(&state.active());
        Ok(PhaseReport {
            summary: match &b.carried {
                Some(what) => format!(
                    "{what}: {} rolled out to {slot}; {users}",
                    crate::wording::count(profile.services.len(), "service", "services")
                ),
                None => format!(
                    "backend {} deployed: {} rolled out to {slot}; {users}",
                    release.image_tag,
                    crate::wording::count(profile.services.len(), "service", "services")
                ),
            },
            details,
        })
    }
}

/// A release is applied only to a slot users do not reach: its rollout
/// replaces every pod there, under them. A rollout stopped between its
/// steps and left so (`--no-rollback`) leaves users split; they go to one
/// slot first.
pub(crate) fn unreached(
    state: &live::PlatformState,
    slot: Slot,
    environment: &str,
) -> anyhow::Result<()> {
    let reached = state.reached_in(slot);
    if reached.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = reached
        .iter()
        .map(|(service, how)| format!("{service} ({how})"))
        .collect();
    // The run that wrote the slot most users are on: rolling back to it is
    // one switch that puts them all there.
    let serving = slot.other();
    let way_out = state
        .services
        .values()
        .find_map(|s| s.slots.get(&serving)?.deployment_id.clone())
        .map_or_else(
            || format!("`maily-deploy rollback {environment} previous` moves them all back in one switch"),
            |id| format!("`maily-deploy rollback {environment} {id}` puts them all on {serving} in one switch"),
        );
    Err(fail(
        Kind::Refused,
        format!(
            "users still reach slot {slot}, which this release would replace: {}; an earlier run left them split between the slots (--no-rollback, or a failure while moving them back). Put them on one slot first: {way_out}",
            list.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_where_users_are_and_that_a_first_deploy_has_none() {
        assert_eq!(
            where_users_are(&live::Active::Fresh),
            "first deploy: no users on any slot yet"
        );
        assert_eq!(
            where_users_are(&live::Active::Slot(Slot::Green)),
            "users still on green"
        );
    }
}
