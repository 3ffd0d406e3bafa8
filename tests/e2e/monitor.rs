//! monitor as a user runs it: the binary deploying staging against kubesim
//! with the Prometheus operator's CRDs, a Grafana stub that answers as
//! Grafana's HTTP API documents and asserts the requests, and the real
//! Prometheus scraping loopback targets labelled like the new slot's pods.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::MockServer;

use crate::support::grafana::{TOKEN, grafana, metrics_endpoint};
use crate::support::prometheus::{PrometheusServer, ScrapeTarget, slot_target};
use crate::support::*;

const HTTP_SERVICES: [&str; 5] = [
    "analytics",
    "api",
    "blockchain-verifier",
    "campaigns",
    "email-sender",
];

/// The phases of these tests: the backend, then monitor.
const PHASES: &[&str] = &[
    "--skip-provision",
    "--skip-migrate",
    "--skip-frontend",
    "--skip-ai",
    "--skip-verify",
];

fn address(server: &MockServer) -> String {
    server.address().to_string()
}

/// Every http service of `slot` scraped at `endpoint`, at `version`.
fn slot_targets(endpoint: &str, slot: &str, version: &str) -> Vec<ScrapeTarget> {
    HTTP_SERVICES
        .iter()
        .map(|s| slot_target(endpoint, NAMESPACE, s, slot, version))
        .collect()
}

/// `maily-deploy staging` through monitor, with `env_file`, as JSON.
fn deploy(world: &World, env_file: &std::path::Path) -> std::process::Output {
    world
        .maily()
        .arg("staging")
        .args(PHASES)
        .args(["--output", "json", "--env-file"])
        .arg(env_file)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap()
}

fn env(world: &World, g: &MockServer, p: &PrometheusServer, tag: &str) -> std::path::PathBuf {
    world.env_file(&[
        ("IMAGE_TAG", tag),
        ("ROLLOUT_TIMEOUT", "60s"),
        ("GRAFANA_URL", &g.uri()),
        ("GRAFANA_API_TOKEN", TOKEN),
        ("PROMETHEUS_URL", &p.url),
        ("MONITOR_TARGETS_TIMEOUT", "20s"),
    ])
}

fn requests(world: &World, g: &MockServer, verb: &str, p: &str) -> Vec<Value> {
    world
        .rt
        .block_on(g.received_requests())
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == verb && r.url.path() == p)
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect()
}

fn monitor_row(report: &Value) -> Value {
    report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "monitor")
        .unwrap()
        .clone()
}

#[test]
fn a_deploy_applies_rules_and_monitors_saves_dashboards_annotates_and_finds_the_new_slot_scraped() {
    let world = World::new(Duration::from_millis(300));
    world.install_prometheus_operator_crds();
    let g = grafana(&world, "staging", 200);
    let metrics = metrics_endpoint(&world);
    // The first deploy goes to blue.
    let prom = PrometheusServer::start(&slot_targets(&address(&metrics), "blue", "v1"));
    let out = deploy(&world, &env(&world, &g, &prom, "v1"));
    assert_exit(&out, 0);
    let all = text(&out);
    assert!(!all.contains(TOKEN), "the token leaked: {all}");

    // Rules and monitors, in the cluster.
    let rules = world.monitoring_objects("PrometheusRule");
    assert_eq!(rules.len(), 1);
    let rule_text = serde_json::to_string(&rules[0].data["spec"]).unwrap();
    for alert in [
        "MailyHighErrorRate",
        "MailyHighLatencyP99",
        "MailyPodRestarting",
        "MailyRabbitMQQueueBacklog",
        "MailyDatabaseConnectionsHigh",
    ] {
        assert!(rule_text.contains(alert), "{alert} in {rule_text}");
    }
    assert!(
        rule_text.contains("namespace=\\\"maily-staging\\\""),
        "{rule_text}"
    );
    let monitors: Vec<String> = world
        .monitoring_objects("ServiceMonitor")
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        monitors,
        vec![
            "analytics",
            "api",
            "blockchain-verifier",
            "campaigns",
            "email-sender",
            "workers"
        ]
    );
    let api = &world.monitoring_objects("ServiceMonitor")[1];
    assert_eq!(api.data["spec"]["jobLabel"], "app.kubernetes.io/name");
    assert_eq!(
        api.data["spec"]["endpoints"][0]["relabelings"][0]["targetLabel"],
        "slot"
    );

    // Grafana: the folder, the dashboard, the annotation opened then closed.
    let id = deployment_id_of_json(&out);
    let opened = requests(&world, &g, "POST", "/api/annotations");
    assert_eq!(opened.len(), 1, "{opened:#?}");
    let a = &opened[0];
    assert!(a["time"].as_i64().unwrap() <= a["timeEnd"].as_i64().unwrap());
    assert_eq!(
        a["tags"],
        json!([
            "maily-deploy",
            "environment:staging",
            format!("deployment:{id}"),
            "outcome:in-progress"
        ])
    );
    assert!(
        a["text"].as_str().unwrap().contains("v1 to slot blue"),
        "{a}"
    );
    let closed = requests(&world, &g, "PATCH", "/api/annotations/42");
    assert_eq!(closed.len(), 1, "{closed:#?}");
    assert_eq!(
        closed[0]["tags"],
        json!([
            "maily-deploy",
            "environment:staging",
            format!("deployment:{id}"),
            "outcome:succeeded"
        ])
    );
    assert!(closed[0]["timeEnd"].as_i64().unwrap() >= a["time"].as_i64().unwrap());
    let saved = requests(&world, &g, "POST", "/api/dashboards/db");
    assert_eq!(saved.len(), 1, "{saved:#?}");
    assert_eq!(saved[0]["message"], format!("maily-deploy {id}"));
    assert_eq!(
        saved[0]["dashboard"]["templating"]["list"][2]["query"],
        "maily-staging"
    );
    assert_eq!(requests(&world, &g, "POST", "/api/folders").len(), 1);
    // Every call the stubs matched carried the token: none fell through.
    let unmatched: Vec<_> = world
        .rt
        .block_on(g.received_requests())
        .unwrap()
        .into_iter()
        .filter(|r| {
            r.headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string())
                != Some(format!("Bearer {TOKEN}"))
        })
        .collect();
    assert!(unmatched.is_empty(), "{unmatched:#?}");

    // The report and the snapshot say so.
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = monitor_row(&report);
    assert_eq!(row["status"], "succeeded", "{row}");
    let details = row["details"].to_string();
    for s in HTTP_SERVICES {
        assert!(
            details.contains(&format!("{s}-blue: 1 target(s) scraped and up")),
            "{details}"
        );
    }
    let snapshot = &world.snapshots()[0];
    let m = snapshot.monitoring.as_ref().expect("a monitoring record");
    assert_eq!(m.annotation_id, Some(42));
    assert!(m.closed);
    assert_eq!(m.dashboards, ["maily-platform-staging"]);
}

#[test]
fn a_prometheus_configured_by_hand_is_read_whole() {
    // Its jobs are its own (`target-<i>`), not the ServiceMonitors' pools:
    // the targets carry the labels monitor judges by, so monitor reads the
    // whole list once the pools turn out empty.
    let world = World::new(Duration::from_millis(300));
    world.install_prometheus_operator_crds();
    let g = grafana(&world, "staging", 200);
    let metrics = metrics_endpoint(&world);
    let prom =
        PrometheusServer::start_hand_configured(&slot_targets(&address(&metrics), "blue", "v1"));
    let out = deploy(&world, &env(&world, &g, &prom, "v1"));
    assert_exit(&out, 0);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let details = monitor_row(&report)["details"].to_string();
    for s in HTTP_SERVICES {
        assert!(
            details.contains(&format!("{s}-blue: 1 target(s) scraped and up")),
            "{details}"
        );
    }
}

fn deployment_id_of_json(out: &std::process::Output) -> String {
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["deployment_id"].as_str().unwrap().to_string()
}

#[test]
fn a_cluster_without_the_prometheus_operator_is_told_how_to_install_it() {
    let world = World::new(Duration::from_millis(300));
    let g = grafana(&world, "staging", 200);
    let prom = PrometheusServer::start(&[]);
    let out = world
        .maily()
        .args([
            "staging",
            "--only",
            "monitor",
            "--output",
            "json",
            "--env-file",
        ])
        .arg(env(&world, &g, &prom, "v1"))
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    // Refused before its first change: nothing to put back.
    assert_exit(&out, maily_deploy::exit_code::REFUSED);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = report["error"]["message"].as_str().unwrap();
    for said in [
        "monitor: the cluster does not serve PrometheusRule and ServiceMonitor (monitoring.coreos.com/v1)",
        "the Prometheus operator's CustomResourceDefinitions are not installed",
        "kubectl apply --server-side -f https://github.com/prometheus-operator/prometheus-operator/releases/latest/download/stripped-down-crds.yaml",
        "--skip-monitor",
    ] {
        assert!(message.contains(said), "{said}: {message}");
    }
    // Nothing was changed anywhere: Grafana was never called.
    let calls = world.rt.block_on(g.received_requests()).unwrap();
    assert!(calls.is_empty(), "{calls:#?}");
}

#[test]
fn a_new_slot_whose_targets_are_down_fails_monitor_naming_them_and_closes_the_annotation_failed() {
    let world = World::new(Duration::from_millis(300));
    world.install_prometheus_operator_crds();
    // Closing the annotation fails too: a warning, never another failure.
    let g = grafana(&world, "staging", 500);
    let metrics = metrics_endpoint(&world);
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut targets = slot_targets(&address(&metrics), "blue", "v1");
    // campaigns' pod does not answer; analytics is scraped only in green.
    targets[3].address = closed_port.clone();
    targets[0].labels.insert("slot".into(), "green".into());
    let prom = PrometheusServer::start(&targets);
    let env = world.env_file(&[
        ("IMAGE_TAG", "v1"),
        ("ROLLOUT_TIMEOUT", "60s"),
        ("GRAFANA_URL", &g.uri()),
        ("GRAFANA_API_TOKEN", TOKEN),
        ("PROMETHEUS_URL", &prom.url),
        // Prometheus syncs discovered targets every 5 s: past that, the
        // missing and down targets are what it says.
        ("MONITOR_TARGETS_TIMEOUT", "12s"),
    ]);
    let out = deploy(&world, &env);
    assert_exit(&out, maily_deploy::exit_code::PHASE_FAILED_ROLLED_BACK);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(monitor_row(&report)["status"], "failed");
    let problems: Vec<(String, String)> = report["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["subject"].as_str().unwrap().to_string(),
                p["problem"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let find = |s: &str| {
        problems
            .iter()
            .find(|(subject, _)| subject == s)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("{s} not reported: {problems:#?}"))
    };
    let campaigns = find("campaigns-blue");
    assert!(
        campaigns.contains(&closed_port) && campaigns.contains("connection refused"),
        "{campaigns}"
    );
    // Every label it filtered on is named, the version included.
    assert!(
        find("analytics-blue").contains(
            "no target of analytics in slot blue (labels namespace=maily-staging, job=analytics, slot=blue, version=v1)"
        ),
        "{problems:#?}"
    );
    assert_eq!(problems.len(), 2, "{problems:#?}");

    // The annotation was closed with the outcome; Grafana refusing that is
    // a warning on stderr.
    let closed = requests(&world, &g, "PATCH", "/api/annotations/42");
    assert!(!closed.is_empty());
    assert!(
        closed[0]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("outcome:failed")),
        "{closed:#?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("closing the deployment's Grafana annotation 42"),
        "{stderr}"
    );
    assert!(!text(&out).contains(TOKEN));
    // Users were never moved: the stable Services do not exist yet.
    assert_eq!(world.selected_slot("api"), None);
}

#[test]
fn a_dry_run_says_what_monitor_would_do_and_calls_nothing() {
    let world = World::new(Duration::from_millis(300));
    let g = grafana(&world, "staging", 200);
    let prom = PrometheusServer::start(&[]);
    let env = env(&world, &g, &prom, "v1");
    let plan = |world: &World| {
        let out = world
            .maily()
            .args([
                "staging",
                "--only",
                "monitor",
                "--dry-run",
                "--output",
                "json",
                "--env-file",
            ])
            .arg(&env)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out, report)
    };

    // Without the operator's CRDs the plan fails as the run would.
    let (out, report) = plan(&world);
    assert_eq!(report["outcome"], "plan_failed", "{}", text(&out));
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Prometheus operator's CustomResourceDefinitions are not installed"),
        "{report}"
    );

    world.install_prometheus_operator_crds();
    let (out, report) = plan(&world);
    assert_exit(&out, 0);
    let row = monitor_row(&report);
    assert_eq!(row["status"], "planned");
    let steps = row["details"].to_string();
    for said in [
        "the cluster serves PrometheusRule and ServiceMonitor",
        "server-side apply 13 objects: 1 PrometheusRule, 6 Services, 6 ServiceMonitors",
        "folder \\\"Maily staging\\\" (maily-staging), dashboard dashboards/maily-platform.json",
        "analytics, api, blockchain-verifier, campaigns, email-sender are scraped and up",
    ] {
        assert!(steps.contains(said), "{said}: {steps}");
    }
    // Nothing was changed: no Grafana call, no object.
    assert!(world.rt.block_on(g.received_requests()).unwrap().is_empty());
    assert!(world.monitoring_objects("ServiceMonitor").is_empty());
}
