//! Issue 7 end to end: `maily-deploy production` with all nine phases on
//! and nothing skipped, as a release manager runs it, against kubesim (the
//! Gateway API and the Prometheus operator's CRDs installed), the real
//! PostgreSQL, Redis, RabbitMQ and Prometheus of this machine, and the
//! stubs of everything else: the terraform stand-in, Vault, Vercel, the AI
//! providers, Grafana, the gateway's slot preview and the chain nodes.
//! Production, not staging: its profile switches at once like staging's
//! (the traffic steps are not walked), and it turns on all three AI
//! providers.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use maily_deploy::exit_code;
use maily_deploy::pipeline::snapshot::Outcome;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support;
use crate::support::postgres::Database;
use crate::support::prometheus::{PrometheusServer, slot_target};
use crate::support::terraform::StandIn;
use crate::support::vercel::{self as vercel_stub, assert_clean, stub};
use crate::support::verify::{declare_queues, stubs};
use crate::support::*;

const TAG: &str = "v3.0.0";
const VAULT_TOKEN: &str = "hvs.all-phases-Vault-token-7d21";
const DB_PASSWORD: &str = "Db-pass-all-phases-e2e-8812";

/// Every value a user must never see printed.
const SECRETS: [&str; 7] = [
    VAULT_TOKEN,
    DB_PASSWORD,
    vercel_stub::TOKEN,
    support::ai::OPENAI_KEY,
    support::ai::ANTHROPIC_KEY,
    support::ai::GOOGLE_KEY,
    support::grafana::TOKEN,
];

/// The production profile's http services, the AI orchestrator with them:
/// what monitor finds scraped and verify finds healthy in the new slot.
const SCRAPED: [&str; 6] = [
    "ai-orchestrator",
    "analytics",
    "api",
    "blockchain-verifier",
    "campaigns",
    "email-sender",
];

const PHASES: [&str; 9] = [
    "validate",
    "provision",
    "migrate",
    "deploy-backend",
    "deploy-frontend",
    "configure-ai",
    "monitor",
    "verify",
    "shift-traffic",
];

/// A loopback server answering 200 to every GET: where the stubbed Vercel
/// serves its deployments, for verify's frontend check.
fn frontend_host(world: &World) -> MockServer {
    world.rt.block_on(async {
        let s = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string("<html>Maily</html>"))
            .mount(&s)
            .await;
        s
    })
}

#[test]
fn production_runs_all_nine_phases_and_users_end_on_the_new_slot() {
    let world = World::for_environment("production", Duration::from_millis(300));
    world.install_prometheus_operator_crds();
    let db = Database::new("all_phases_e2e");
    declare_queues(&world, "amqp://guest:guest@127.0.0.1:5672");

    // Vercel serves its deployments on a loopback host; it records where
    // users of the backend are when it builds and when it promotes.
    let vercel = stub(&world, Some("dpl_old"));
    let site = frontend_host(&world);
    vercel.vercel.state().url_base = Some(site.uri());
    let (kubeconfig, namespace) = (
        world.sim().kubeconfig_path().to_path_buf(),
        world.namespace.clone(),
    );
    vercel.vercel.state().witness =
        Some(Arc::new(move || stable_selectors(&kubeconfig, &namespace)));

    // Vault holds the Vercel token and the platform's OpenAI key.
    let vault = world.rt.block_on(MockServer::start());
    world.rt.block_on(
        support::vault::serve(
            "secret/data/maily/production",
            VAULT_TOKEN,
            json!({"vercel_token": vercel_stub::TOKEN, "openai_api_key": support::ai::OPENAI_KEY}),
        )
        .mount(&vault),
    );
    let manifests = manifests_with(
        world.dir.path(),
        "production",
        "secrets:\n  maily-platform-secrets:\n    OPENAI_API_KEY: secret/maily/production#openai_api_key\n",
    );

    let ai = support::ai::providers(&world);
    let google = support::ai::google(&world);
    let grafana = support::grafana::grafana(&world, "production", 200);
    let checks = stubs(&world, TAG, "v0", "0x6080604052");

    // Prometheus scrapes the new slot's (blue's) services at a loopback
    // endpoint, labelled as the ServiceMonitors label their pods.
    let metrics = support::grafana::metrics_endpoint(&world);
    let targets: Vec<_> = SCRAPED
        .iter()
        .map(|s| {
            slot_target(
                &metrics.address().to_string(),
                &world.namespace,
                s,
                "blue",
                TAG,
            )
        })
        .collect();
    let prometheus = PrometheusServer::start(&targets);

    let terraform = StandIn::new(world.dir.path());
    let backups = world.dir.path().join("backups");
    let mut vars: Vec<(&str, String)> = vec![
        ("IMAGE_TAG", TAG.into()),
        ("ROLLOUT_TIMEOUT", "60s".into()),
        ("DATABASE_URL", String::new()),
        ("TERRAFORM_PROVIDES", "DATABASE_URL".into()),
        (
            "DATABASE_BACKUP_URL",
            format!("file://{}/", backups.display()),
        ),
        ("VAULT_ADDR", vault.uri()),
        ("VAULT_TOKEN", VAULT_TOKEN.into()),
        (
            "VERCEL_TOKEN",
            "vault:secret/maily/production#vercel_token".into(),
        ),
        ("OPENAI_BASE_URL", ai.openai.uri()),
        ("ANTHROPIC_BASE_URL", ai.anthropic.uri()),
        ("GOOGLE_BASE_URL", google.uri()),
        ("OPENAI_API_KEY", support::ai::OPENAI_KEY.into()),
        ("ANTHROPIC_API_KEY", support::ai::ANTHROPIC_KEY.into()),
        ("GOOGLE_API_KEY", support::ai::GOOGLE_KEY.into()),
        ("GRAFANA_URL", grafana.uri()),
        ("GRAFANA_API_TOKEN", support::grafana::TOKEN.into()),
        ("PROMETHEUS_URL", prometheus.url.clone()),
        ("MONITOR_TARGETS_TIMEOUT", "20s".into()),
        ("REDIS_URL", "redis://127.0.0.1:6379/0".into()),
        (
            "RABBITMQ_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        ),
        ("ETHEREUM_RPC_URL", checks.ethereum.uri()),
        ("POLYGON_RPC_URL", checks.polygon.uri()),
        ("VERIFY_BASE_URL", checks.gateway.uri()),
    ];
    vars.extend(terraform.vars());
    vars.extend(
        vercel
            .vars()
            .into_iter()
            .filter(|(k, _)| *k != "VERCEL_TOKEN"),
    );
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = world.env_file(&vars);

    let outputs = json!({
        "database_url": {"sensitive": true, "type": "string",
                         "value": db.url_with_password(DB_PASSWORD)},
        "cluster_name": {"sensitive": false, "type": "string", "value": "maily-production-eks"}
    })
    .to_string();
    let mut cmd = world.maily();
    cmd.arg("production")
        .arg("--env-file")
        .arg(&env)
        .arg("--manifests-dir")
        .arg(&manifests)
        .args(["--output", "json"])
        .timeout(Duration::from_secs(120));
    let out = terraform
        .answer(&mut cmd, "changes", &outputs)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(exit_code::SUCCESS), "{all}");

    // The report: all nine phases, in order, each succeeded.
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {all}"));
    let ran: Vec<(&str, &str)> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ran,
        PHASES.iter().map(|p| (*p, "succeeded")).collect::<Vec<_>>(),
        "{all}"
    );
    let phase = |id: &str| {
        report["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap()
            .clone()
    };

    // Users on the new slot: every route and stable Service on blue.
    for (svc, selected, weights) in world.traffic() {
        assert_eq!(selected.as_deref(), Some("blue"), "{svc}");
        assert_eq!(weights, Some((100, 0)), "{svc}");
    }
    assert_eq!(
        world.selected_slot("ai-orchestrator").as_deref(),
        Some("blue")
    );
    assert_eq!(
        world.image("api-blue"),
        Some(format!("registry.example.invalid/maily/maily-api:{TAG}"))
    );
    assert_eq!(world.replicas("ai-workers-blue"), Some(3));

    // The frontend: built while users had no new backend, promoted once
    // every stable Service pointed at blue.
    assert_clean(&vercel);
    let built = vercel.vercel.state().deployments.keys().next().cloned();
    let built = built.expect("a Vercel deployment");
    assert_eq!(
        vercel.vercel.state().witnessed,
        [
            "POST /v13/deployments: ".to_string(),
            format!("promote {built}: {}", all_on("blue")),
        ]
    );
    assert_eq!(
        vercel.vercel.state().production.as_deref(),
        Some(built.as_str())
    );

    // The AI config in the slot, every provider checked once.
    let config_maps: Api<ConfigMap> = Api::namespaced(world.client.clone(), &world.namespace);
    let config = world
        .rt
        .block_on(config_maps.get_opt("ai-config-blue"))
        .unwrap()
        .expect("the slot's AI ConfigMap");
    let config_text = serde_json::to_string(&config.data).unwrap();
    for said in [
        "gpt-4o-mini",
        "claude-sonnet-4-20250514",
        "gemini-2.0-flash",
    ] {
        assert!(config_text.contains(said), "{said}: {config_text}");
    }
    for (name, server) in [
        ("openai", &ai.openai),
        ("anthropic", &ai.anthropic),
        ("google", &google),
    ] {
        let calls = world.rt.block_on(server.received_requests()).unwrap();
        assert_eq!(calls.len(), 1, "{name}: {calls:#?}");
    }

    // Monitoring: the rules and ServiceMonitors, the annotation closed
    // succeeded, every scraped service of blue up.
    assert_eq!(world.monitoring_objects("PrometheusRule").len(), 1);
    let monitors = world.monitoring_objects("ServiceMonitor");
    // One per service, the workers' too.
    assert_eq!(monitors.len(), 8, "{monitors:#?}");
    let closed: Vec<Value> = world
        .rt
        .block_on(grafana.received_requests())
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "PATCH" && r.url.path() == "/api/annotations/42")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(closed.len(), 1, "{closed:#?}");
    assert!(
        closed[0]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("outcome:succeeded")),
        "{closed:#?}"
    );
    let monitor = phase("monitor")["details"].to_string();
    for s in SCRAPED {
        assert!(
            monitor.contains(&format!("{s}-blue: 1 target(s) scraped and up")),
            "{monitor}"
        );
    }

    // verify: every row passed, or was skipped and says why.
    let verify = phase("verify");
    let rows: Vec<&str> = verify["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    for row in &rows {
        assert!(
            row.starts_with('✓') || (row.starts_with("- ") && row.contains("skipped: ")),
            "{row}: {rows:#?}"
        );
    }
    for name in [
        "health api",
        "health ai-orchestrator",
        "postgres",
        "redis",
        "rabbitmq",
        "ethereum",
        "polygon",
        "frontend",
    ] {
        assert!(
            rows.iter().any(|r| r.starts_with('✓') && r.contains(name)),
            "{name} passed: {rows:#?}"
        );
    }

    // The snapshot records every part the run changed.
    let id = report["deployment_id"].as_str().unwrap();
    let snap = world
        .snapshots()
        .into_iter()
        .find(|s| s.deployment_id == id)
        .expect("the run's snapshot");
    assert_eq!(snap.outcome, Outcome::Succeeded);
    assert!(snap.infrastructure.is_some(), "infrastructure");
    assert_eq!(
        snap.database.as_ref().unwrap().action,
        maily_deploy::db::MigrateAction::Applied
    );
    let frontend = snap.frontend.clone().unwrap();
    assert_eq!(frontend.deployment_id, built);
    assert!(frontend.promoted);
    assert!(snap.ai_config.is_some(), "AI config");
    let monitoring = snap.monitoring.as_ref().expect("a monitoring record");
    assert!(monitoring.closed);

    // No secret anywhere a user looks.
    let snapshots = serde_json::to_string(&world.snapshots()).unwrap();
    for secret in SECRETS {
        assert!(!all.contains(secret), "the output shows {secret}: {all}");
        assert!(!snapshots.contains(secret), "the snapshot holds {secret}");
    }
}
