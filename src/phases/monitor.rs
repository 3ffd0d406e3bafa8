//! monitor: the platform watched before users reach the new slot.
//!
//! Applies the alert rules (a PrometheusRule) and, per service, a metrics
//! Service and a ServiceMonitor; saves the dashboards of
//! `manifests/dashboards/` into the environment's Grafana folder; opens a
//! region annotation for the deployment (from the run's start; the run's end
//! closes it with the outcome); then waits until Prometheus scrapes the new
//! slot's targets and finds them up.
//!
//! Nothing here changes what users reach. The cluster must serve the
//! Prometheus operator's `monitoring.coreos.com/v1` kinds; the phase checks
//! that before it changes anything.

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kube::api::{DynamicObject, GroupVersionKind};
use kube::core::GroupVersion;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::profile::ServiceKind;
use crate::config::spec::duration_of;
use crate::error::{Failure, Kind, Problem, fail};
use crate::k8s::apply::Applier;
use crate::k8s::manifest::{self, Scope};
use crate::k8s::slot::Slot;
use crate::k8s::values::{self, Release};
use crate::pipeline::{Context, Phase, PhaseId, PhasePlan, PhaseReport};
use crate::providers::grafana::{self, AnnotationPatch, Grafana, NewAnnotation};
use crate::providers::prometheus::{self, Prometheus, ServiceTargets};
use crate::wording;

pub struct Monitor;

/// How often the targets are read while waiting for them.
const TARGETS_POLL: Duration = Duration::from_secs(1);

/// The kinds the Prometheus operator's CRDs add, which the phase applies.
pub fn operator_kinds() -> [GroupVersionKind; 2] {
    [
        GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
        GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
    ]
}

/// What monitor leaves in the snapshot, and what the run's end needs to
/// close the annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitoringRecord {
    pub grafana_url: String,
    pub folder_uid: String,
    pub dashboards: Vec<String>,
    /// The deployment's region annotation, once created.
    #[serde(default)]
    pub annotation_id: Option<i64>,
    /// Epoch milliseconds: the run's start.
    pub annotation_start_ms: i64,
    #[serde(default)]
    pub slot: Option<Slot>,
    /// Set once the run's end has closed the annotation.
    #[serde(default)]
    pub closed: bool,
}

/// The rules and monitors a deploy applies: the environment's PrometheusRule
/// and each service's metrics Service and ServiceMonitor.
pub fn objects_for(cx: &Context, release: &Release) -> anyhow::Result<Vec<DynamicObject>> {
    let profile = &cx.config.profile;
    let templates = cx.templates()?;
    let mut out: Vec<DynamicObject> = manifest::render(
        templates,
        &[Scope::Monitoring],
        &values::common(release, profile),
    )?
    .into_iter()
    .map(|(_, o)| o)
    .collect();
    // The AI services only when this run deploys them (configure-ai).
    for (name, _) in cx.watched_services() {
        out.extend(
            manifest::render(
                templates,
                &[Scope::MonitoringService],
                &values::for_service(release, profile, name),
            )?
            .into_iter()
            .map(|(_, o)| o),
        );
    }
    Ok(out)
}

/// The plan's line: what monitor would set up, each count with its noun
/// in the number it takes.
fn plan_summary(service_monitors: usize, dashboards: usize) -> String {
    format!(
        "alert rules, {}, {}, the deployment's annotation",
        wording::count(service_monitors, "ServiceMonitor", "ServiceMonitors"),
        wording::count(dashboards, "dashboard", "dashboards")
    )
}

/// The run's line: what monitor set up and which of the new slot's
/// services Prometheus scrapes.
fn run_summary(service_monitors: usize, dashboards: usize, scraped: usize, slot: Slot) -> String {
    format!(
        "rules and {} applied, {} saved, {} of {slot} scraped and up",
        wording::count(service_monitors, "ServiceMonitor", "ServiceMonitors"),
        wording::count(dashboards, "dashboard", "dashboards"),
        wording::count(scraped, "service", "services")
    )
}

/// The dashboards of `<manifests>/dashboards/*.json`, by file name.
pub fn dashboards(manifests_dir: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    let dir = manifests_dir.join("dashboards");
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let file = format!(
                "dashboards/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            let text = crate::config::read_text(&path, "dashboard")?;
            let doc: Value = serde_json::from_str(&text).map_err(|e| {
                fail(
                    Kind::Config,
                    format!("{file} is not a Grafana dashboard's JSON: {e}"),
                )
            })?;
            if doc.get("uid").and_then(Value::as_str).is_none() {
                return Err(fail(
                    Kind::Config,
                    format!("{file} has no \"uid\"; give the dashboard one, so each deploy updates it rather than adding a copy"),
                ));
            }
            Ok((file, doc))
        })
        .collect()
}

/// The kinds among the operator's that the cluster does not serve; an
/// unreachable API is an error, not a missing kind. One discovery request
/// for both (they share a group), which the applies reuse.
async fn missing_kinds(applier: &Applier) -> anyhow::Result<Vec<GroupVersionKind>> {
    let kinds = operator_kinds();
    let gv = GroupVersion::gv(&kinds[0].group, &kinds[0].version);
    let served = match applier.served_or_none(&gv).await {
        Ok(served) => served,
        Err(e) => {
            return Err(fail(
                Kind::PhaseFailed,
                format!(
                    "reading the cluster's API discovery for {}: {e}",
                    gv.api_version()
                ),
            ));
        }
    };
    Ok(kinds
        .into_iter()
        .filter(|k| !served.iter().any(|(ar, _)| ar.kind == k.kind))
        .collect())
}

/// The message for a cluster without the Prometheus operator's CRDs: what is
/// missing, and how to fix it.
pub fn missing_crds_message(missing: &[GroupVersionKind]) -> String {
    let kinds: Vec<&str> = missing.iter().map(|g| g.kind.as_str()).collect();
    format!(
        "the cluster does not serve {} (monitoring.coreos.com/v1): the Prometheus operator's CustomResourceDefinitions are not installed. Install the operator (the kube-prometheus-stack Helm chart), or only its CRDs: `kubectl apply --server-side -f https://github.com/prometheus-operator/prometheus-operator/releases/latest/download/stripped-down-crds.yaml`; then run again, or skip this phase with --skip-monitor",
        kinds.join(" and ")
    )
}

fn var<'a>(cx: &'a Context, name: &str) -> anyhow::Result<&'a str> {
    cx.config
        .vars
        .get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| fail(Kind::Config, format!("{name} is not set")))
}

/// The services whose pods run in the new slot before the switch: http
/// services. Workers wait at 0 replicas until shift-traffic, so they have
/// no targets yet.
fn scraped_services(cx: &Context) -> Vec<String> {
    cx.watched_services()
        .into_iter()
        .filter(|(_, s)| s.kind == ServiceKind::Http)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Wait until every service has targets in the slot and all are up, or the
/// timeout passes; then every service that is not is a problem.
async fn wait_for_targets(
    prom: &Prometheus,
    namespace: &str,
    services: &[(String, Option<String>)],
    slot: Slot,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    let pools: Vec<String> = services
        .iter()
        .map(|(s, _)| prometheus::service_monitor_pool(namespace, s))
        .collect();
    let mut whole_list = false;
    loop {
        let targets = if whole_list {
            prom.targets().await
        } else {
            match prom.targets_in_pools(&pools).await {
                // Nothing in the ServiceMonitors' pools: a first deploy
                // not discovered yet, or a Prometheus that scrapes the
                // services by configuration of its own. Its whole list
                // tells, when it can be read.
                Ok(none) if none.is_empty() => match prom.targets().await {
                    Ok(all)
                        if prometheus::scrapes_any(
                            &all,
                            namespace,
                            services.iter().map(|(s, _)| s.as_str()),
                        ) =>
                    {
                        tracing::info!(
                            "Prometheus scrapes the services outside the ServiceMonitors' scrape pools; reading its whole target list"
                        );
                        whole_list = true;
                        Ok(all)
                    }
                    _ => Ok(none),
                },
                other => other,
            }
        };
        let verdicts: Vec<(String, ServiceTargets)> = match &targets {
            Ok(t) => services
                .iter()
                .map(|(s, version)| {
                    (
                        s.clone(),
                        prometheus::verdict(t, namespace, s, slot.as_str(), version.as_deref()),
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let all_up = targets.is_ok()
            && verdicts
                .iter()
                .all(|(_, v)| matches!(v, ServiceTargets::Up { .. }));
        if all_up {
            return Ok(verdicts
                .iter()
                .filter_map(|(s, v)| match v {
                    ServiceTargets::Up { count } => {
                        Some(format!("{s}-{slot}: {count} target(s) scraped and up"))
                    }
                    _ => None,
                })
                .collect());
        }
        if started.elapsed() >= timeout {
            // Prometheus itself not answering is the error to report.
            targets?;
            let waited = humantime::format_duration(Duration::from_secs(timeout.as_secs()));
            let problems: Vec<Problem> = verdicts
                .into_iter()
                .filter_map(|(s, v)| {
                    let version = services
                        .iter()
                        .find(|(n, _)| *n == s)
                        .and_then(|(_, v)| v.as_deref())
                        .map(|v| format!(", version={v}"))
                        .unwrap_or_default();
                    let problem = match v {
                        ServiceTargets::Up { .. } => return None,
                        ServiceTargets::Missing => format!(
                            "Prometheus has no target of {s} in slot {slot} (labels namespace={namespace}, job={s}, slot={slot}{version}) after {waited}"
                        ),
                        ServiceTargets::NotUp { up, not_up } => format!(
                            "{} of {} targets are not up after {waited}: {}",
                            not_up.len(),
                            up + not_up.len(),
                            not_up
                                .iter()
                                .map(|(at, why)| format!("{at}: {why}"))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    };
                    Some(Problem {
                        phase: Some(PhaseId::Monitor.to_string()),
                        subject: format!("{s}-{slot}"),
                        problem,
                        fix: "check that the Prometheus selects ServiceMonitors labelled app.kubernetes.io/part-of=maily in this namespace, and that the pods answer GET /metrics on their http port".into(),
                    })
                })
                .collect();
            return Err(Failure::with_problems(
                Kind::PhaseFailed,
                format!(
                    "Prometheus ({}) does not scrape every service of the new slot {slot}, or some targets are down",
                    prom.base()
                ),
                problems,
            )
            .into());
        }
        tokio::time::sleep(TARGETS_POLL).await;
    }
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn annotation_text(cx: &Context, release: &Release, slot: Slot, outcome: Option<&str>) -> String {
    let id = cx
        .deployment_id
        .as_ref()
        .map(|d| d.to_string())
        .unwrap_or_default();
    let mut text = format!(
        "maily-deploy {id}: {} {} to slot {slot}",
        cx.environment(),
        release.image_tag
    );
    if let Some(o) = outcome {
        text.push_str(&format!(" ({o})"));
    }
    text
}

/// Close the deployment's annotation at the run's end: its end time is now,
/// and its tags carry the outcome. A Grafana that fails here is a warning,
/// never a failed run.
pub async fn close_annotation(cx: &mut Context, outcome: &str) {
    let Some(mut record) = cx.records.monitoring.clone() else {
        return;
    };
    let Some(id) = record.annotation_id.filter(|_| !record.closed) else {
        return;
    };
    let Some(token) = cx.config.vars.get("GRAFANA_API_TOKEN").map(String::from) else {
        return;
    };
    let deployment_id = cx
        .deployment_id
        .as_ref()
        .map(|d| d.to_string())
        .unwrap_or_default();
    let release = cx.release_or_partial();
    let slot = record.slot.unwrap_or(Slot::Blue);
    let patch = AnnotationPatch {
        time_end: millis(Utc::now()).max(record.annotation_start_ms),
        tags: grafana::annotation_tags(cx.environment(), &deployment_id, outcome),
        text: annotation_text(cx, &release, slot, Some(outcome)),
    };
    let result = async {
        Grafana::new(&record.grafana_url, &token)?
            .patch_annotation(id, &patch)
            .await
    }
    .await;
    match result {
        Ok(()) => {
            record.closed = true;
            cx.records.monitoring = Some(record);
        }
        Err(e) => tracing::warn!(
            "closing the deployment's Grafana annotation {id}: {e:#}; it stays open (outcome:in-progress)"
        ),
    }
}

#[async_trait]
impl Phase for Monitor {
    fn id(&self) -> PhaseId {
        PhaseId::Monitor
    }

    async fn plan(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        let release = cx.release_or_partial();
        let objects = objects_for(cx, &release)?;
        let boards = dashboards(&cx.manifests_dir)?;
        let mut steps = Vec::new();
        // A dry run may have no cluster at hand: the plan says what it
        // could not learn; a cluster that answers without the CRDs fails
        // the plan as it would fail the run.
        let mut server = Vec::new();
        match cx.applier().await {
            Ok(applier) => match missing_kinds(applier).await {
                Ok(missing) if !missing.is_empty() => {
                    return Err(fail(Kind::Refused, missing_crds_message(&missing)));
                }
                Ok(_) => {
                    steps.push(
                        "the cluster serves PrometheusRule and ServiceMonitor (monitoring.coreos.com/v1)"
                            .to_string(),
                    );
                    let verdicts = crate::k8s::server_plan::judge(
                        applier,
                        &objects,
                        &cx.config.profile.namespace,
                        PhaseId::Monitor.as_str(),
                    )
                    .await?;
                    server = crate::k8s::server_plan::lines(&verdicts);
                }
                Err(e) => steps.push(format!(
                    "cannot tell whether the cluster serves monitoring.coreos.com/v1 ({e})"
                )),
            },
            Err(e) => steps.push(format!(
                "cannot tell whether the cluster serves monitoring.coreos.com/v1 ({e})"
            )),
        }
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        for o in &objects {
            *kinds
                .entry(o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default())
                .or_default() += 1;
        }
        steps.push(format!(
            "server-side apply {} objects: {}",
            objects.len(),
            kinds
                .iter()
                .map(|(k, n)| crate::wording::count(*n, k, &crate::wording::plural(k)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        steps.extend(server);
        let (folder_uid, folder_title) = grafana::folder_for(cx.environment());
        let grafana_url = cx.config.vars.get("GRAFANA_URL").unwrap_or("GRAFANA_URL");
        steps.push(format!(
            "Grafana {grafana_url}: folder \"{folder_title}\" ({folder_uid}), {} {}",
            wording::agree(boards.len(), "dashboard", "dashboards"),
            boards
                .iter()
                .map(|(f, _)| f.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        steps.push(
            "Grafana: a region annotation from the run's start to its end, tagged with the environment, deployment id and outcome"
                .into(),
        );
        steps.push(format!(
            "Prometheus {}: wait until the new slot's targets of {} are scraped and up",
            cx.config
                .vars
                .get("PROMETHEUS_URL")
                .unwrap_or("PROMETHEUS_URL"),
            scraped_services(cx).join(", ")
        ));
        Ok(PhasePlan {
            summary: plan_summary(cx.watched_services().len(), boards.len()),
            steps,
        })
    }

    async fn applies(&self, cx: &Context) -> anyhow::Result<Vec<DynamicObject>> {
        let missing = missing_kinds(cx.applier().await?).await?;
        if !missing.is_empty() {
            return Err(fail(Kind::Refused, missing_crds_message(&missing)));
        }
        objects_for(cx, &cx.release_or_partial())
    }

    async fn run(&self, cx: &mut Context) -> anyhow::Result<PhaseReport> {
        let release = cx.release_or_partial();
        let applier = cx.applier().await?.clone();
        // Before any change: the operator's kinds, the dashboards' files.
        let missing = missing_kinds(&applier).await?;
        if !missing.is_empty() {
            return Err(fail(Kind::Refused, missing_crds_message(&missing)));
        }
        let objects = objects_for(cx, &release)?;
        let boards = dashboards(&cx.manifests_dir)?;
        let slot = cx.target_slot().await?;
        let grafana_url = var(cx, "GRAFANA_URL")?.to_string();
        let token = var(cx, "GRAFANA_API_TOKEN")?.to_string();
        let prometheus_url = var(cx, "PROMETHEUS_URL")?.to_string();
        let timeout = duration_of(
            "MONITOR_TARGETS_TIMEOUT",
            cx.config.vars.get("MONITOR_TARGETS_TIMEOUT"),
        )
        .map_err(|e| fail(Kind::Config, format!("MONITOR_TARGETS_TIMEOUT {e}")))?;
        let grafana = Grafana::new(&grafana_url, &token)?;
        let deployment_id = cx
            .deployment_id
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        let (folder_uid, folder_title) = grafana::folder_for(cx.environment());

        // The annotation first, so whatever fails after it still shows on
        // the graphs; recorded at once, so the run's end closes it.
        let mut record = MonitoringRecord {
            grafana_url: grafana_url.clone(),
            folder_uid: folder_uid.clone(),
            dashboards: Vec::new(),
            annotation_id: None,
            annotation_start_ms: millis(cx.started_at),
            slot: Some(slot),
            closed: false,
        };
        let annotation = NewAnnotation {
            time: record.annotation_start_ms,
            time_end: millis(Utc::now()).max(record.annotation_start_ms),
            tags: grafana::annotation_tags(cx.environment(), &deployment_id, "in-progress"),
            text: annotation_text(cx, &release, slot, None),
        };
        let id = grafana.create_annotation(&annotation).await?;
        record.annotation_id = Some(id);
        cx.records.monitoring = Some(record.clone());

        let mut details = Vec::new();
        let counts = objects.len();
        applier.apply_all(objects).await?;
        details.push(format!(
            "applied the PrometheusRule and {} ServiceMonitors with their metrics Services ({counts} objects)",
            cx.watched_services().len()
        ));

        let (folder, created) = grafana.ensure_folder(&folder_uid, &folder_title).await?;
        details.push(format!(
            "Grafana folder \"{}\" ({}){}",
            folder.title,
            folder.uid,
            if created { ", created" } else { "" }
        ));
        let message = format!("maily-deploy {deployment_id}");
        for (file, doc) in boards {
            let doc = grafana::for_environment(doc, cx.environment(), &cx.config.profile.namespace);
            let saved = grafana
                .upsert_dashboard(&doc, &folder.uid, &message)
                .await?;
            details.push(format!(
                "dashboard {} from {file}{}",
                saved.uid,
                saved
                    .version
                    .map(|v| format!(", version {v}"))
                    .unwrap_or_default()
            ));
            record.dashboards.push(saved.uid);
        }
        cx.records.monitoring = Some(record.clone());
        details.push(format!("annotation {id} opened for {deployment_id}"));

        let prom = Prometheus::new(&prometheus_url)?;
        // Each service at the version this run put in the slot: its layer's
        // release, deployed or carried over.
        let services: Vec<(String, Option<String>)> = scraped_services(cx)
            .into_iter()
            .map(|s| {
                let v = cx.expected_version(&s);
                (s, v)
            })
            .collect();
        let lines = wait_for_targets(
            &prom,
            &cx.config.profile.namespace,
            &services,
            slot,
            timeout,
        )
        .await?;
        details.extend(lines);
        Ok(PhaseReport {
            summary: run_summary(
                cx.watched_services().len(),
                record.dashboards.len(),
                services.len(),
                slot,
            ),
            details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_crd_message_says_what_and_how_to_fix_it() {
        let m = missing_crds_message(&operator_kinds());
        assert!(m.contains("PrometheusRule and ServiceMonitor (monitoring.coreos.com/v1)"));
        assert!(m.contains("Prometheus operator"));
        assert!(m.contains("kubectl apply --server-side"));
        assert!(m.contains("--skip-monitor"));
    }

    #[test]
    fn the_shipped_dashboards_load_and_have_uids() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
        let boards = dashboards(&dir).unwrap();
        assert!(!boards.is_empty());
        assert!(boards.iter().all(|(_, d)| d["uid"].is_string()));
    }

    #[test]
    fn the_summaries_count_in_the_singular_for_one() {
        assert_eq!(
            plan_summary(1, 1),
            "alert rules, 1 ServiceMonitor, 1 dashboard, the deployment's annotation"
        );
        assert_eq!(
            plan_summary(6, 0),
            "alert rules, 6 ServiceMonitors, 0 dashboards, the deployment's annotation"
        );
        assert_eq!(
            run_summary(1, 1, 1, Slot::Blue),
            "rules and 1 ServiceMonitor applied, 1 dashboard saved, 1 service of blue scraped and up"
        );
        assert_eq!(
            run_summary(6, 2, 5, Slot::Green),
            "rules and 6 ServiceMonitors applied, 2 dashboards saved, 5 services of green scraped and up"
        );
    }

    #[test]
    fn a_record_round_trips_through_the_snapshot() {
        let r = MonitoringRecord {
            grafana_url: "https://grafana.example".into(),
            folder_uid: "maily-staging".into(),
            dashboards: vec!["maily-platform-staging".into()],
            annotation_id: Some(7),
            annotation_start_ms: 1,
            slot: Some(Slot::Green),
            closed: false,
        };
        let kept = serde_json::to_value(&r).unwrap();
        assert_eq!(
            serde_json::from_value::<MonitoringRecord>(kept).ok(),
            Some(r)
        );
    }

    /// A target as `GET /api/v1/targets` lists it.
    fn target(pool: &str, service: &str, slot: &str) -> serde_json::Value {
        serde_json::json!({
            "discoveredLabels": {},
            "labels": {"namespace": "maily-staging", "job": service, "slot": slot, "instance": "10.0.0.1:8080"},
            "scrapePool": pool,
            "scrapeUrl": "http://10.0.0.1:8080/metrics",
            "health": "up",
            "lastError": "",
        })
    }

    fn answer(targets: Vec<serde_json::Value>) -> wiremock::ResponseTemplate {
        wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "status": "success",
            "data": {"activeTargets": targets, "droppedTargets": []},
        }))
    }

    /// A shared Prometheus whose whole target list is more than the tool
    /// reads: the ServiceMonitors' pools, asked one by one, still tell.
    #[tokio::test]
    async fn a_prometheus_too_large_to_list_is_asked_pool_by_pool() {
        use wiremock::matchers::{path, query_param};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        for s in ["api", "campaigns"] {
            let pool = prometheus::service_monitor_pool("maily-staging", s);
            Mock::given(path("/api/v1/targets"))
                .and(query_param("scrapePool", pool.as_str()))
                .respond_with(answer(vec![
                    target(&pool, s, "blue"),
                    target(&pool, s, "green"),
                ]))
                .with_priority(1)
                .mount(&server)
                .await;
        }
        let huge = format!(
            r#"{{"status":"success","data":{{"activeTargets":[],"pad":"{}"}}}}"#,
            "x".repeat(crate::providers::http::MAX_ANSWER_BYTES)
        );
        Mock::given(path("/api/v1/targets"))
            .respond_with(ResponseTemplate::new(200).set_body_string(huge))
            .with_priority(2)
            .expect(0)
            .mount(&server)
            .await;
        let prom = Prometheus::new(&server.uri()).unwrap();
        let services = vec![("api".to_string(), None), ("campaigns".to_string(), None)];
        let up = wait_for_targets(
            &prom,
            "maily-staging",
            &services,
            Slot::Green,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(
            up,
            vec![
                "api-green: 1 target(s) scraped and up",
                "campaigns-green: 1 target(s) scraped and up"
            ]
        );
    }

    /// A Prometheus that ignores `scrapePool` (before 2.42) answers every
    /// target to each pool's request: each keeps only its pool's.
    #[tokio::test]
    async fn a_prometheus_that_ignores_the_pool_parameter_is_counted_once() {
        use wiremock::matchers::path;
        use wiremock::{Mock, MockServer};
        let server = MockServer::start().await;
        let api = prometheus::service_monitor_pool("maily-staging", "api");
        let campaigns = prometheus::service_monitor_pool("maily-staging", "campaigns");
        Mock::given(path("/api/v1/targets"))
            .respond_with(answer(vec![
                target(&api, "api", "green"),
                target(&campaigns, "campaigns", "green"),
                target("kubernetes-nodes", "node", "green"),
            ]))
            .mount(&server)
            .await;
        let prom = Prometheus::new(&server.uri()).unwrap();
        let got = prom.targets_in_pools(&[api, campaigns]).await.unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
    }
}
