//! What the templates are filled with: pure functions of the release, the
//! profile, the service and the slot.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::manifest::Values;
use super::slot::Slot;
use crate::config::Profile;
use crate::config::profile::ServiceKind;

/// The release being deployed: what a snapshot records so that the same
/// objects can be rendered again, for either slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub environment: String,
    pub deployment_id: String,
    pub image_registry: String,
    pub image_tag: String,
    pub backup_url: String,
    /// `ROLLOUT_TIMEOUT`, which becomes each Deployment's progress deadline.
    pub rollout_timeout_secs: u64,
    /// Each image as tagged (`registry/repo:tag`) and the digest reference
    /// it was pinned to (`registry/repo@sha256:...`) before the run's first
    /// change: what the Deployments run, and what a rollback re-applies,
    /// whatever the tag names by then. Empty when pinning was off, and in
    /// snapshots from before pinning: those images run by tag.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub digests: std::collections::BTreeMap<String, String>,
}

impl Release {
    pub fn rollout_timeout(&self) -> Duration {
        Duration::from_secs(self.rollout_timeout_secs)
    }
}

/// The image a service runs: its digest reference where the release
/// pinned it, else its tagged image.
pub fn image_of(release: &Release, profile: &Profile, service: &str) -> String {
    let tagged = tagged_image_of(release, profile, service);
    release.digests.get(&tagged).cloned().unwrap_or(tagged)
}

/// The image of a service as tagged, for people: the profile's override,
/// or the registry's.
pub fn tagged_image_of(release: &Release, profile: &Profile, service: &str) -> String {
    profile
        .services
        .get(service)
        .and_then(|s| s.image.clone())
        .unwrap_or_else(|| {
            format!(
                "{}/maily-{service}:{}",
                release.image_registry, release.image_tag
            )
        })
}

/// Values every template may use.
pub fn common(release: &Release, profile: &Profile) -> Values {
    let domain = |role: &str| profile.domains.get(role).cloned().unwrap_or_default();
    Values::from([
        ("ENVIRONMENT", release.environment.clone()),
        ("NAMESPACE", profile.namespace.clone()),
        ("DEPLOYMENT_ID", release.deployment_id.clone()),
        ("IMAGE_REGISTRY", release.image_registry.clone()),
        ("IMAGE_TAG", release.image_tag.clone()),
        // A directory, as the tool's own store reads it: the daily job
        // appends `daily/<time>.dump`, which after `s3://b/prod` would
        // name `s3://b/proddaily/...`.
        ("DATABASE_BACKUP_URL", as_directory(&release.backup_url)),
        ("DOMAIN_API", domain("api")),
        ("DOMAIN_APP", domain("app")),
        ("GATEWAY_NAME", profile.gateway.name.clone()),
        ("GATEWAY_NAMESPACE", profile.gateway.namespace.clone()),
    ])
}

/// A backup location with one trailing `/` (unset stays unset).
fn as_directory(location: &str) -> String {
    if location.is_empty() {
        String::new()
    } else {
        format!("{}/", location.trim_end_matches('/'))
    }
}

fn kind_word(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::Http => "http",
        ServiceKind::Worker => "worker",
    }
}

/// Values of a service's templates in a slot.
pub fn for_slot(release: &Release, profile: &Profile, service: &str, slot: Slot) -> Values {
    let mut v = common(release, profile);
    let replicas = profile.replicas_of(service);
    let kind = profile
        .services
        .get(service)
        .map_or(ServiceKind::Http, |s| s.kind);
    // A worker in the idle slot would consume the queue before the switch:
    // it is applied at 0 and scaled by the switch.
    let applied = match kind {
        ServiceKind::Http => replicas,
        ServiceKind::Worker => 0,
    };
    v.extend([
        ("SERVICE", service.to_string()),
        ("SLOT", slot.to_string()),
        ("KIND", kind_word(kind).to_string()),
        ("IMAGE", image_of(release, profile, service)),
        ("IMAGE_TAGGED", tagged_image_of(release, profile, service)),
        ("REPLICAS", applied.to_string()),
        ("MAX_REPLICAS", max_replicas(replicas).to_string()),
        (
            "PROGRESS_DEADLINE_SECONDS",
            release.rollout_timeout_secs.max(1).to_string(),
        ),
    ]);
    v
}

/// The HorizontalPodAutoscaler's `maxReplicas` (an int32): three times the
/// replicas. The profile's check and the carry-over's keep an http
/// service within a third of the int32 maximum; a worker (no autoscaler
/// reads this) may hold up to the maximum itself, so the product is taken
/// in u64, where it cannot overflow, and held to the maximum.
fn max_replicas(replicas: u32) -> u64 {
    (u64::from(replicas) * 3).min(crate::config::k8s_rules::MAX_INT32)
}

/// Values of a slot's AI ConfigMap (`slot-ai/`): the config as one JSON
/// text, quoted so that YAML reads it as a string.
pub fn for_ai_config(
    release: &Release,
    profile: &Profile,
    slot: Slot,
    config: &serde_json::Value,
) -> Values {
    let mut v = common(release, profile);
    let json = serde_json::to_string(config).expect("JSON serializes");
    // A JSON string literal is a valid YAML double-quoted scalar.
    let quoted = serde_json::to_string(&json).expect("a string serializes");
    v.extend([("SLOT", slot.to_string()), ("AI_CONFIG_JSON", quoted)]);
    v
}

/// Values of a service's templates that span both slots (its metrics
/// Service and ServiceMonitor).
pub fn for_service(release: &Release, profile: &Profile, service: &str) -> Values {
    let mut v = common(release, profile);
    let kind = profile
        .services
        .get(service)
        .map_or(ServiceKind::Http, |s| s.kind);
    v.extend([
        ("SERVICE", service.to_string()),
        ("KIND", kind_word(kind).to_string()),
    ]);
    v
}

/// Values of an http service's route templates.
pub fn for_route(
    release: &Release,
    profile: &Profile,
    service: &str,
    active: Slot,
    weights: (u32, u32),
) -> Values {
    let mut v = common(release, profile);
    let path = profile
        .services
        .get(service)
        .and_then(|s| s.path.clone())
        .unwrap_or_else(|| format!("/{service}"));
    v.extend([
        ("SERVICE", service.to_string()),
        ("ROUTE_PATH", path),
        ("ACTIVE_SLOT", active.to_string()),
        ("WEIGHT_BLUE", weights.0.to_string()),
        ("WEIGHT_GREEN", weights.1.to_string()),
    ]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::manifest::{self, Scope};
    use serde_json::Value;
    use std::path::PathBuf;

    fn shipped() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests")
    }

    fn release() -> Release {
        Release {
            environment: "production".into(),
            deployment_id: "production-20250101-120000".into(),
            image_registry: "ghcr.io/maily".into(),
            image_tag: "v1.4.2".into(),
            backup_url: "s3://maily-backups/production/".into(),
            rollout_timeout_secs: 600,
            digests: Default::default(),
        }
    }

    fn render_all(env: &str, slot: Slot) -> Vec<(String, Value)> {
        let profile = crate::config::profile::load(&shipped(), env).unwrap();
        let templates = manifest::load(&shipped()).unwrap();
        let mut rel = release();
        rel.environment = env.into();
        let mut out = Vec::new();
        for (file, obj) in
            manifest::render(&templates, &[Scope::Platform], &common(&rel, &profile)).unwrap()
        {
            out.push((file, serde_json::to_value(obj).unwrap()));
        }
        for (name, svc) in &profile.services {
            let mut scopes = vec![Scope::Slot];
            if svc.kind == ServiceKind::Http {
                scopes.push(Scope::SlotHttp);
            }
            for (file, obj) in
                manifest::render(&templates, &scopes, &for_slot(&rel, &profile, name, slot))
                    .unwrap()
            {
                out.push((file, serde_json::to_value(obj).unwrap()));
            }
            if svc.kind == ServiceKind::Http {
                let values = for_route(&rel, &profile, name, slot, (0, 100));
                for (file, obj) in manifest::render(&templates, &[Scope::Route], &values).unwrap() {
                    out.push((file, serde_json::to_value(obj).unwrap()));
                }
            }
        }
        out
    }

    #[test]
    fn the_daily_backup_uploads_under_the_backup_location_however_it_is_written() {
        let profile = crate::config::profile::load(&shipped(), "production").unwrap();
        let templates = manifest::load(&shipped()).unwrap();
        for (written, under) in [
            ("s3://maily-backups", "s3://maily-backups/daily/"),
            ("s3://maily-backups/prod", "s3://maily-backups/prod/daily/"),
            ("s3://maily-backups/prod/", "s3://maily-backups/prod/daily/"),
            (
                "file:///var/backups/maily",
                "file:///var/backups/maily/daily/",
            ),
        ] {
            let mut rel = release();
            rel.backup_url = written.into();
            let rendered =
                manifest::render(&templates, &[Scope::Platform], &common(&rel, &profile)).unwrap();
            let job = rendered
                .iter()
                .map(|(_, o)| serde_json::to_value(o).unwrap())
                .find(|o| o["kind"] == "CronJob")
                .expect("the daily backup CronJob");
            let command = job
                .pointer("/spec/jobTemplate/spec/template/spec/containers/0/args/0")
                .and_then(Value::as_str)
                .unwrap();
            assert!(
                command.contains(&format!("url=\"{under}$stamp\"")),
                "{written}: {command}"
            );
        }
    }

    #[test]
    fn every_shipped_template_renders_for_every_environment_and_slot() {
        for env in ["production", "staging"] {
            for slot in Slot::BOTH {
                let objects = render_all(env, slot);
                let deployments: Vec<&str> = objects
                    .iter()
                    .filter(|(_, o)| o["kind"] == "Deployment")
                    .map(|(_, o)| o["metadata"]["name"].as_str().unwrap())
                    .collect();
                assert_eq!(deployments.len(), 8, "{env} {slot}: {deployments:?}");
                assert!(deployments.iter().all(|d| d.ends_with(&format!("-{slot}"))));
                let routes = objects
                    .iter()
                    .filter(|(_, o)| o["kind"] == "HTTPRoute")
                    .count();
                assert_eq!(routes, 6, "one route per http service");
            }
        }
    }

    #[test]
    fn workloads_are_locked_down_as_a_restricted_namespace_demands() {
        for (file, o) in render_all("production", Slot::Green) {
            if o["kind"] != "Deployment" {
                continue;
            }
            let name = o["metadata"]["name"].as_str().unwrap();
            let pod = &o["spec"]["template"]["spec"];
            assert_eq!(pod["automountServiceAccountToken"], false, "{file} {name}");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            assert_eq!(pod["serviceAccountName"], name, "its own ServiceAccount");
            for c in pod["containers"].as_array().unwrap() {
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{name}");
                assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health", "{name}");
                assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health", "{name}");
                assert!(c["resources"]["requests"]["memory"].is_string(), "{name}");
                assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
            }
            assert_eq!(o["spec"]["progressDeadlineSeconds"], 600);
            let worker = o["metadata"]["labels"]["maily.ai/kind"] == "worker";
            let expected = if worker { 0 } else { 1 };
            assert!(
                o["spec"]["replicas"].as_i64().unwrap() >= expected,
                "{name}"
            );
            if worker {
                assert_eq!(o["spec"]["replicas"], 0, "an idle worker must not consume");
            }
        }
    }

    #[test]
    fn a_worker_at_the_int32_maximum_renders_its_slot() {
        let mut profile = crate::config::profile::load(&shipped(), "production").unwrap();
        let (worker, _) = profile
            .services
            .iter()
            .find(|(_, s)| s.kind == ServiceKind::Worker)
            .map(|(n, s)| (n.clone(), s.clone()))
            .unwrap();
        profile.services.get_mut(&worker).unwrap().replicas = Some(i32::MAX as u32);
        let values = for_slot(&release(), &profile, &worker, Slot::Blue);
        assert_eq!(values["MAX_REPLICAS"], i32::MAX.to_string());
        // The largest http replicas the profile allows: three times fit.
        let most = crate::config::profile::MAX_HTTP_REPLICAS as u32;
        profile.services.get_mut("api").unwrap().replicas = Some(most);
        let values = for_slot(&release(), &profile, "api", Slot::Blue);
        assert_eq!(values["MAX_REPLICAS"], (u64::from(most) * 3).to_string());
    }

    #[test]
    fn images_come_from_the_registry_and_tag_or_the_profile() {
        let objects = render_all("production", Slot::Blue);
        let api = objects
            .iter()
            .find(|(_, o)| o["kind"] == "Deployment" && o["metadata"]["name"] == "api-blue")
            .unwrap();
        assert_eq!(
            api.1["spec"]["template"]["spec"]["containers"][0]["image"],
            "ghcr.io/maily/maily-api:v1.4.2"
        );
        let mut profile = crate::config::profile::load(&shipped(), "production").unwrap();
        profile.services.get_mut("api").unwrap().image = Some("ghcr.io/other/api:pinned".into());
        assert_eq!(
            image_of(&release(), &profile, "api"),
            "ghcr.io/other/api:pinned"
        );
    }

    #[test]
    fn the_route_weights_and_the_stable_selector_follow_the_values() {
        let profile = crate::config::profile::load(&shipped(), "production").unwrap();
        let templates = manifest::load(&shipped()).unwrap();
        let values = for_route(&release(), &profile, "email-sender", Slot::Blue, (100, 0));
        let objects = manifest::render(&templates, &[Scope::Route], &values).unwrap();
        let route = serde_json::to_value(
            &objects
                .iter()
                .find(|(_, o)| o.types.as_ref().unwrap().kind == "HTTPRoute")
                .unwrap()
                .1,
        )
        .unwrap();
        let weighted = &route["spec"]["rules"][2]["backendRefs"];
        assert_eq!(weighted[0]["weight"], 100);
        assert_eq!(weighted[1]["weight"], 0);
        assert_eq!(
            route["spec"]["rules"][2]["matches"][0]["path"]["value"],
            "/webhooks"
        );
        assert_eq!(
            route["spec"]["rules"][0]["matches"][0]["headers"][0]["value"],
            "blue"
        );
        let svc = serde_json::to_value(
            &objects
                .iter()
                .find(|(_, o)| o.types.as_ref().unwrap().kind == "Service")
                .unwrap()
                .1,
        )
        .unwrap();
        assert_eq!(svc["spec"]["selector"]["maily.ai/slot"], "blue");
    }
}
