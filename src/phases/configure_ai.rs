//! configure-ai: the AI layer into the idle slot, its config with it.
//!
//! 1. The profile's `ai:` section, checked (`config::ai`).
//! 2. Each enabled provider's key and models, one request per provider, all
//!    at once (`providers::ai`); any problem stops the phase before anything
//!    is applied, every problem named.
//! 3. The slot's AI ConfigMap (`ai-config-<slot>`, from `manifests/slot-ai/`)
//!    and the AI services (`ai: true` in the profile) rendered for the slot
//!    deploy-backend filled, server-side applied, rollouts watched with the
//!    same fail-fast as the backend.
//!
//! The config goes into the run's snapshot (`ai_config`), and the slot's
//! ConfigMap is rendered from the kept templates, so a rollback that
//! redeploys restores the config with the code.

use std::time::Duration;

use async_trait::async_trait;
use kube::api::DynamicObject;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::Profile;
use crate::config::ai::{AiConfig, Provider};
use crate::config::profile::ServiceKind;
use crate::error::{Failure, Kind, fail};
use crate::k8s::live;
use crate::k8s::manifest::{self, Scope, Template};
use crate::k8s::slot::Slot;
use crate::k8s::values::{self, Release};
use crate::k8s::watch::wait_for_slot;
use crate::pipeline::layers::Layer;
use crate::pipeline::{Context, Phase, PhaseId, PhasePlan, PhaseReport};
use crate::providers::ai::{self as providers, Endpoint};

/// Where the AI services find their config.
pub const CONFIG_DIR: &str = "/etc/maily/ai";

#[derive(Default)]
pub struct ConfigureAi {
    /// A rollback's recorded config: applied as it was, without asking the
    /// providers again (the release it restores was checked when deployed).
    restore: Option<AiConfig>,
}

impl ConfigureAi {
    pub fn restore(config: AiConfig) -> Self {
        ConfigureAi {
            restore: Some(config),
        }
    }
}

/// The name of a slot's AI ConfigMap.
pub fn config_map_name(slot: Slot) -> String {
    format!("ai-config-{slot}")
}

/// What a snapshot records of the AI layer: the config a rollback or a
/// carry-over applies again without asking the providers, and the slot's
/// ConfigMap that held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiConfigRecord {
    pub config_map: String,
    pub config: AiConfig,
}

impl AiConfigRecord {
    pub fn new(slot: Slot, config: &AiConfig) -> Self {
        AiConfigRecord {
            config_map: config_map_name(slot),
            config: config.clone(),
        }
    }
}

fn config_of(phase: &ConfigureAi, cx: &Context) -> anyhow::Result<AiConfig> {
    if let Some(c) = &phase.restore {
        return Ok(c.clone());
    }
    if let Some(r) = cx.layers.get(&Layer::Ai) {
        return r
            .ai_config
            .as_ref()
            .map(|a| a.config.clone())
            .ok_or_else(|| fail(Kind::Config, "the recorded AI layer has no AI config"));
    }
    cx.config.profile.ai_config().cloned().ok_or_else(|| {
        fail(
            Kind::Config,
            format!(
                "the {} profile has no ai: section, so there is nothing to configure; add one (providers, tasks, fallback) or skip with --skip-ai",
                cx.environment()
            ),
        )
    })
}

/// The endpoint and wanted models of each enabled provider.
fn checks(cx: &Context, config: &AiConfig) -> anyhow::Result<Vec<(Endpoint, Vec<String>)>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for p in config.enabled() {
        let key = cx
            .config
            .vars
            .get(p.key_var())
            .filter(|k| !k.is_empty())
            .map(String::from);
        let Some(key) = key else {
            missing.push(p.key_var());
            continue;
        };
        let base_url = cx
            .config
            .vars
            .get(p.base_url_var())
            .filter(|u| !u.is_empty())
            .unwrap_or(default_base_url(p))
            .trim_end_matches('/')
            .to_string();
        out.push((
            Endpoint {
                provider: p,
                base_url,
                key,
                timeout: Duration::from_secs(config.providers[&p].timeout_secs),
            },
            config.models_of(p),
        ));
    }
    if !missing.is_empty() {
        return Err(fail(
            Kind::Config,
            format!(
                "{} not set, and the profile turns the provider on; set it or turn the provider off in ai.providers",
                missing.join(", ")
            ),
        ));
    }
    Ok(out)
}

fn default_base_url(p: Provider) -> &'static str {
    match p {
        Provider::OpenAi => "https://api.openai.com",
        Provider::Anthropic => "https://api.anthropic.com",
        Provider::Google => "https://generativelanguage.googleapis.com",
    }
}

/// The AI services' Deployments mount the slot's config and roll when it
/// changes. Done on the rendered object rather than in the shared slot
/// template, which every backend service renders too.
fn mount_config(object: &mut DynamicObject, slot: Slot, digest: &str) {
    let pod = &mut object.data["spec"]["template"];
    pod["metadata"]["annotations"]["maily.ai/ai-config-sha256"] = json!(digest);
    let spec = &mut pod["spec"];
    let volume = json!({"name": "ai-config", "configMap": {"name": config_map_name(slot)}});
    match spec["volumes"].as_array_mut() {
        Some(v) => v.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
    if let Some(containers) = spec["containers"].as_array_mut() {
        for c in containers {
            let mount = json!({"name": "ai-config", "mountPath": CONFIG_DIR, "readOnly": true});
            match c["volumeMounts"].as_array_mut() {
                Some(m) => m.push(mount),
                None => c["volumeMounts"] = json!([mount]),
            }
            let env =
                json!({"name": "MAILY_AI_CONFIG", "value": format!("{CONFIG_DIR}/config.json")});
            match c["env"].as_array_mut() {
                Some(e) => e.push(env),
                None => c["env"] = json!([env]),
            }
        }
    }
}

/// Every object configure-ai applies to `slot`: the AI ConfigMap, then each
/// AI service's slot objects, mounting it.
pub fn ai_objects(
    templates: &[Template],
    profile: &Profile,
    release: &Release,
    slot: Slot,
    config: &AiConfig,
) -> anyhow::Result<Vec<DynamicObject>> {
    let json = config.to_json();
    let digest = hex::encode(Sha256::digest(json.to_string().as_bytes()));
    let mut out: Vec<DynamicObject> = manifest::render(
        templates,
        &[Scope::SlotAi],
        &values::for_ai_config(release, profile, slot, &json),
    )?
    .into_iter()
    .map(|(_, o)| o)
    .collect();
    if out.is_empty() {
        return Err(fail(
            Kind::Config,
            "no AI ConfigMap template in manifests/slot-ai/; restore manifests/slot-ai/configmap.yaml",
        ));
    }
    for (name, svc) in profile.ai_services() {
        let mut scopes = vec![Scope::Slot];
        if svc.kind == ServiceKind::Http {
            scopes.push(Scope::SlotHttp);
        }
        for (_, mut o) in manifest::render(
            templates,
            &scopes,
            &values::for_slot(release, profile, name, slot),
        )? {
            if o.types.as_ref().is_some_and(|t| t.kind == "Deployment") {
                mount_config(&mut o, slot, &digest);
            }
            out.push(o);
        }
    }
    Ok(out)
}

/// The AI layer this run puts in the slot: the release, templates and
/// profile it renders with; whether the providers are asked (not for a
/// config already checked when it was deployed); and, for a carry-over,
/// what it carries.
struct AiLayer {
    release: Release,
    templates: Vec<Template>,
    profile: Profile,
    check_providers: bool,
    carried: Option<String>,
}

fn ai_layer(phase: &ConfigureAi, cx: &Context) -> anyhow::Result<AiLayer> {
    let recorded = cx.layers.get(&Layer::Ai);
    Ok(AiLayer {
        release: cx.layer_release(Layer::Ai)?,
        templates: cx.layer_templates(Layer::Ai)?,
        profile: match recorded {
            Some(r) => r.profile(Layer::Ai, &cx.config.profile),
            None => cx.config.profile.clone(),
        },
        check_providers: phase.restore.is_none() && recorded.is_none(),
        carried: recorded
            .filter(|r| r.carried_from.is_some())
            .map(|r| r.describe(Layer::Ai)),
    })
}

/// The slot deploy-backend filled, or (deploy-backend skipped) the idle one.
async fn target(cx: &Context) -> anyhow::Result<Slot> {
    if let Some(slot) = cx.backend.target_slot {
        return Ok(slot);
    }
    let state = live::read(cx.applier().await?, &cx.config.profile).await?;
    let slot = state
        .target_slot()
        .map_err(|why| fail(Kind::PhaseFailed, why))?;
    // Users a stopped rollout left on the idle slot must not get this
    // release's AI services under them.
    crate::phases::deploy_backend::unreached(&state, slot, cx.environment())?;
    Ok(slot)
}

#[async_trait]
impl Phase for ConfigureAi {
    fn id(&self) -> PhaseId {
        PhaseId::ConfigureAi
    }

    async fn plan(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        let config = config_of(self, cx)?;
        let layer = ai_layer(self, cx)?;
        let release = layer.release.clone();
        // The slot, and whether a cluster answered (then it judges the
        // objects too).
        let (slot, note, cluster) = match cx.backend.target_slot {
            Some(s) => (s, format!("slot {s}"), true),
            None => match cx.applier().await {
                Ok(a) => match live::read(a, &cx.config.profile).await {
                    Ok(state) => match state.target_slot() {
                        Ok(s) => (s, format!("idle slot {s}"), true),
                        Err(why) => return Err(fail(Kind::PhaseFailed, why)),
                    },
                    Err(e) => (
                        Slot::Blue,
                        format!("idle slot unknown ({e}); shown for blue"),
                        false,
                    ),
                },
                Err(e) => (
                    Slot::Blue,
                    format!("idle slot unknown ({e}); shown for blue"),
                    false,
                ),
            },
        };
        let mut steps = vec![note];
        if let Some(what) = &layer.carried {
            steps.push(format!("{what}, with the config it runs with"));
        }
        if layer.check_providers {
            for (e, models) in checks(cx, &config)? {
                steps.push(format!(
                    "check {}: GET {} (models {})",
                    e.provider.title(),
                    providers::models_url(e.provider, &e.base_url),
                    models.join(", ")
                ));
            }
        }
        let objects = ai_objects(&layer.templates, &layer.profile, &release, slot, &config)?;
        steps.push(format!(
            "server-side apply ConfigMap {} and {} objects of the AI services",
            config_map_name(slot),
            objects.len() - 1
        ));
        if cluster {
            let verdicts = crate::k8s::server_plan::judge(
                cx.applier().await?,
                &objects,
                &cx.config.profile.namespace,
                PhaseId::ConfigureAi.as_str(),
            )
            .await?;
            steps.extend(crate::k8s::server_plan::lines(&verdicts));
        } else {
            steps.push("not checked by the server: no cluster at hand".into());
        }
        for (name, _) in layer.profile.ai_services() {
            steps.push(format!(
                "{name}-{slot}: {}",
                values::image_of(&release, &layer.profile, name)
            ));
        }
        steps.push("wait for the AI rollouts (fail fast like the backend)".into());
        Ok(PhasePlan {
            summary: format!(
                "AI config ({} providers on) and services to the idle slot",
                config.enabled().len()
            ),
            steps,
        })
    }

    async fn applies(&self, cx: &Context) -> anyhow::Result<Vec<DynamicObject>> {
        let config = config_of(self, cx)?;
        let layer = ai_layer(self, cx)?;
        ai_objects(
            &layer.templates,
            &layer.profile,
            &layer.release,
            target(cx).await?,
            &config,
        )
    }

    async fn run(&self, cx: &mut Context) -> anyhow::Result<PhaseReport> {
        let config = config_of(self, cx)?;
        let layer = ai_layer(self, cx)?;
        let release = layer.release.clone();
        let mut details = Vec::new();
        if let Some(what) = &layer.carried {
            details.push(format!("{what}, with the config it runs with"));
        }
        if layer.check_providers {
            let checks = checks(cx, &config)?;
            let http = providers::client()?;
            match providers::check_all(&http, &checks).await {
                Ok(counts) => {
                    for (p, n) in counts {
                        details.push(format!(
                            "{}: key accepted, {n} models listed, {} found",
                            p.title(),
                            config.models_of(p).join(", ")
                        ));
                    }
                }
                Err(problems) => {
                    let n = problems.len();
                    return Err(Failure::with_problems(
                        Kind::Refused,
                        format!(
                            "the AI providers' check found {n} problem{}; nothing was applied",
                            if n == 1 { "" } else { "s" }
                        ),
                        problems,
                    )
                    .into());
                }
            }
        }
        let slot = target(cx).await?;
        let profile = layer.profile.clone();
        let mut objects = ai_objects(&layer.templates, &profile, &release, slot, &config)?;
        // The AI services read the slot's copies of the platform's secrets:
        // written here unless deploy-backend wrote them to this slot in
        // this run.
        if cx.backend.target_slot != Some(slot) {
            objects.extend(crate::phases::deploy_backend::platform_secret_objects(
                cx,
                Some(slot),
                false,
            ));
        }
        let applier = cx.applier().await?.clone();
        let applied = applier.apply_all(objects).await?;
        // `cx.backend.target_slot` stays deploy-backend's: without it,
        // shift-traffic checks that the idle slot runs this release for
        // every service before it switches.
        // Recorded before the wait: a failed run's snapshot says which
        // config the idle slot was left with.
        cx.records.ai_config = Some(AiConfigRecord::new(slot, &config));
        cx.records.ai_slot = Some(slot);

        let names: Vec<String> = profile
            .ai_services()
            .map(|(n, _)| format!("{n}-{slot}"))
            .collect();
        wait_for_slot(
            applier.client(),
            &profile.namespace,
            slot,
            &names,
            release.rollout_timeout(),
            crate::k8s::rollout::graces(&cx.config.vars),
        )
        .await?;
        details.push(format!(
            "{applied}; ConfigMap {} holds the AI config",
            config_map_name(slot)
        ));
        details.extend(profile.ai_services().map(|(s, _)| {
            format!(
                "{s}-{slot}: {} ready",
                values::image_of(&release, &profile, s)
            )
        }));
        Ok(PhaseReport {
            summary: format!(
                "{}: {} AI services rolled out to {slot} with {}; providers: {}",
                layer
                    .carried
                    .clone()
                    .unwrap_or_else(|| format!("AI {} deployed", release.image_tag)),
                names.len(),
                config_map_name(slot),
                config
                    .enabled()
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::path::PathBuf;

    fn shipped() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests")
    }

    #[test]
    fn the_ai_config_map_is_per_slot_and_the_ai_deployments_mount_it() {
        let profile = crate::config::profile::load(&shipped(), "staging").unwrap();
        let config = profile.ai_config().unwrap();
        let templates = manifest::load(&shipped()).unwrap();
        let release = Release {
            environment: "staging".into(),
            deployment_id: "staging-20250101-120000".into(),
            image_registry: "r".into(),
            image_tag: "v1".into(),
            backup_url: String::new(),
            rollout_timeout_secs: 60,
            digests: Default::default(),
        };
        let objects = ai_objects(&templates, &profile, &release, Slot::Green, config).unwrap();
        let cm = serde_json::to_value(&objects[0]).unwrap();
        assert_eq!(cm["kind"], "ConfigMap");
        assert_eq!(cm["metadata"]["name"], "ai-config-green");
        let data: Value =
            serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap();
        assert_eq!(data, config.to_json());
        let deployments: Vec<Value> = objects
            .iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .filter(|o| o["kind"] == "Deployment")
            .collect();
        let names: Vec<&str> = deployments
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["ai-orchestrator-green", "ai-workers-green"]);
        for d in &deployments {
            let pod = &d["spec"]["template"]["spec"];
            assert!(
                pod["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v["configMap"]["name"] == "ai-config-green")
            );
            assert_eq!(
                pod["containers"][0]["volumeMounts"][1]["mountPath"],
                CONFIG_DIR
            );
        }
        let kept = serde_json::to_value(AiConfigRecord::new(Slot::Green, config)).unwrap();
        let back: AiConfigRecord = serde_json::from_value(kept).unwrap();
        assert_eq!(back.config_map, "ai-config-green");
        assert_eq!(&back.config, config);
    }
}
