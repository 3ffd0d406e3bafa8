//! The everyday partial deploys, backend only and AI only, where a full deploy
//! (backend and AI at v1) ran before: a layer the run skips is carried over
//! into the new slot as users run it, so the switch changes only the layer
//! asked for, whatever an earlier run left in the idle slot.

use std::time::Duration;

use kubesim::ImageFault;
use maily_deploy::exit_code;
use maily_deploy::pipeline::layers::{How, Layer};
use maily_deploy::pipeline::snapshot::Outcome;

use crate::support;
use crate::support::ai::*;
use crate::support::*;

const IMAGES: &str = "registry.example.invalid/maily";

/// The backend-only command line (monitor and verify, which need their own
/// stubs, are tested elsewhere).
const BACKEND_ONLY_LINE: &[&str] = &[
    "--skip-infrastructure",
    "--skip-database",
    "--skip-frontend",
    "--skip-ai",
    "--skip-monitor",
    "--skip-verify",
];

/// The AI-only command line, the same way.
const AI_ONLY_LINE: &[&str] = &[
    "--skip-infrastructure",
    "--skip-database",
    "--skip-frontend",
    "--skip-backend",
    "--skip-monitor",
    "--skip-verify",
];

fn run(world: &World, p: &Providers, tag: &str, flags: &[&str]) -> std::process::Output {
    let env = world.env_file(&[
        ("IMAGE_TAG", tag),
        ("ROLLOUT_TIMEOUT", "60s"),
        ("OPENAI_BASE_URL", &p.openai.uri()),
        ("ANTHROPIC_BASE_URL", &p.anthropic.uri()),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("GOOGLE_API_KEY", ""),
    ]);
    world
        .maily()
        .arg("staging")
        .args(flags)
        .arg("--env-file")
        .arg(&env)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap()
}

/// What users reach: (slot, backend tag, AI tag), every service agreeing.
fn serving(world: &World) -> (String, String, String) {
    let slot = world.selected_slot("api").expect("users on a slot");
    for svc in [
        "api",
        "campaigns",
        "email-sender",
        "analytics",
        "ai-orchestrator",
    ] {
        assert_eq!(
            world.selected_slot(svc).as_deref(),
            Some(slot.as_str()),
            "{svc} on another slot"
        );
        let want = if slot == "blue" { (100, 0) } else { (0, 100) };
        assert_eq!(world.weights(svc), Some(want), "{svc}'s route");
    }
    let tag = |svc: &str| {
        world
            .image(&format!("{svc}-{slot}"))
            .unwrap_or_default()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    let backend = tag("api");
    for svc in ["campaigns", "email-sender", "analytics", "workers"] {
        assert_eq!(tag(svc), backend, "{svc} runs another backend release");
    }
    let ai = tag("ai-orchestrator");
    assert_eq!(tag("ai-workers"), ai, "ai-workers runs another AI release");
    let other = if slot == "blue" { "green" } else { "blue" };
    assert_eq!(world.replicas(&format!("workers-{other}")).unwrap_or(0), 0);
    assert_eq!(
        world.replicas(&format!("ai-workers-{other}")).unwrap_or(0),
        0
    );
    (slot, backend, ai)
}

fn full_deploy_v1(world: &World, p: &Providers) -> String {
    let out = deploy_with_ai(world, p, "v1", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(serving(world), ("blue".into(), "v1".into(), "v1".into()));
    world.deployment_id(&out)
}

#[test]
fn backend_only_then_ai_only_change_only_their_layer_and_rollback_restores_both() {
    let world = World::new(Duration::from_millis(300));
    let p = providers(&world);
    let first = full_deploy_v1(&world, &p);

    // The backend-only line at v2: the AI layer comes along as it is.
    let out = run(&world, &p, "v2", BACKEND_ONLY_LINE);
    assert_exit(&out, exit_code::SUCCESS);
    let all = text(&out);
    assert!(
        all.contains("AI v1 carried over from blue"),
        "the report says what was carried: {all}"
    );
    assert!(all.contains("backend v2 deployed"), "{all}");
    assert_eq!(serving(&world), ("green".into(), "v2".into(), "v1".into()));
    assert!(
        world
            .snapshots()
            .first()
            .is_some_and(|s| s.layers[&Layer::Ai].how == How::CarriedOver),
        "the snapshot records the carry-over"
    );
    assert_eq!(
        config_map(&world, "ai-config-green"),
        config_map(&world, "ai-config-blue"),
        "the AI config came with the AI services"
    );

    // The AI-only line at v3: the backend users run (v2) comes along.
    let out = run(&world, &p, "v3", AI_ONLY_LINE);
    assert_exit(&out, exit_code::SUCCESS);
    let all = text(&out);
    assert!(all.contains("backend v2 carried over from green"), "{all}");
    assert!(all.contains("AI v3 deployed"), "{all}");
    assert_eq!(serving(&world), ("blue".into(), "v2".into(), "v3".into()));

    // history says it per layer.
    let out = world
        .maily()
        .args(["history", "staging", "--output", "json"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["deployments"][0]["layers"],
        serde_json::json!({"backend": "backend v2 carried over from green", "ai": "AI v3 deployed"})
    );
    let out = world.maily().args(["history", "staging"]).output().unwrap();
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("backend v2 carried over from green"),
        "{human}"
    );

    // Back to the first deployment: both layers at v1.
    let out = world
        .maily()
        .args(["rollback", "staging", &first])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::SUCCESS);
    let (_, backend, ai) = serving(&world);
    assert_eq!((backend.as_str(), ai.as_str()), ("v1", "v1"));
}

#[test]
fn a_failed_runs_leftovers_in_the_idle_slot_are_never_promoted() {
    let world = World::new(Duration::from_millis(300));
    let p = providers(&world);
    full_deploy_v1(&world, &p);

    // A backend release that cannot be pulled fails in the idle slot
    // (green) and stays there.
    world
        .sim()
        .control()
        .set_image_fault("*:broken-*", ImageFault::ImagePullBackOff);
    let out = run(&world, &p, "broken-2", BACKEND_ONLY_LINE);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    assert_eq!(
        world.image("api-green").as_deref(),
        Some(format!("{IMAGES}/maily-api:broken-2").as_str())
    );
    world.sim().control().clear_image_faults();

    // AI-only at v3: green gets the backend users run (v1), not the
    // leftover.
    let out = run(&world, &p, "v3", AI_ONLY_LINE);
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(serving(&world), ("green".into(), "v1".into(), "v3".into()));

    // And the other way: an AI release that crash-loops is left in blue...
    world
        .sim()
        .control()
        .set_image_fault("*:crash-*", ImageFault::CrashLoopBackOff);
    let out = run(
        &world,
        &p,
        "crash-4",
        &[
            "--skip-infrastructure",
            "--skip-database",
            "--skip-frontend",
            "--skip-monitor",
            "--skip-verify",
        ],
    );
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    world.sim().control().clear_image_faults();
    // ...and the backend-only line at v5 carries AI v3 over, not crash-4.
    let out = run(&world, &p, "v5", BACKEND_ONLY_LINE);
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(serving(&world), ("blue".into(), "v5".into(), "v3".into()));
}

/// Every write the tool made (create, update, patch, delete).
fn writes(world: &World) -> Vec<String> {
    world
        .sim()
        .control()
        .requests()
        .into_iter()
        .filter(|r| matches!(r.verb.as_str(), "create" | "update" | "patch" | "delete"))
        .map(|r| format!("{} {} {}", r.verb, r.resource, r.name))
        .collect()
}

#[test]
fn flags_that_cannot_work_are_refused_before_any_change() {
    let world = World::new(Duration::from_millis(300));
    let p = providers(&world);

    // A first deploy without its backend: nothing to switch users to.
    world.sim().control().reset();
    let out = run(&world, &p, "v1", AI_ONLY_LINE);
    assert_exit(&out, exit_code::USAGE);
    let all = text(&out);
    assert!(all.contains("first deploy"), "{all}");
    assert!(all.contains("Drop --skip-backend"), "{all}");
    assert_eq!(writes(&world), Vec::<String>::new(), "{all}");

    full_deploy_v1(&world, &p);
    // Both layers skipped, traffic still switched: nothing new to move to.
    world.sim().control().reset();
    let mut both = AI_ONLY_LINE.to_vec();
    both.push("--skip-ai");
    let out = run(&world, &p, "v2", &both);
    assert_exit(&out, exit_code::USAGE);
    let all = text(&out);
    assert!(all.contains("--skip-backend and --skip-ai"), "{all}");
    assert!(all.contains("--skip-traffic"), "{all}");
    assert_eq!(writes(&world), Vec::<String>::new(), "{all}");

    // A backend users run that is not what the last good deployment left
    // (a hand edit) is not carried over as if it were.
    world
        .sim()
        .kubectl()
        .args([
            "-n",
            NAMESPACE,
            "set",
            "image",
            "deployment/api-blue",
            "api=registry.example.invalid/maily/maily-api:hotfix",
        ])
        .output()
        .unwrap();
    world.sim().control().reset();
    let out = run(&world, &p, "v2", AI_ONLY_LINE);
    assert_exit(&out, exit_code::CONFIG);
    let all = text(&out);
    assert!(
        all.contains("api-blue runs registry.example.invalid/maily/maily-api:hotfix"),
        "{all}"
    );
    assert_eq!(writes(&world), Vec::<String>::new(), "{all}");
    assert_eq!(world.selected_slot("api").as_deref(), Some("blue"));
    assert_eq!(world.snapshots()[0].outcome, Outcome::Succeeded);
}

/// The gateway's preview rule answering, on `slot`, each service's health
/// at the version its layer runs there (the AI orchestrator at `ai`, every
/// backend service at `backend`): what verify asks.
fn gateway_answers(
    world: &World,
    gateway: &wiremock::MockServer,
    slot: &str,
    backend: &str,
    ai: &str,
) {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, ResponseTemplate};
    world.rt.block_on(async {
        gateway.reset().await;
        for (p, version) in [
            ("/health", backend),
            ("/webhooks/health", backend),
            ("/t/health", backend),
            ("/campaigns/health", backend),
            ("/blockchain-verifier/health", backend),
            ("/ai/health", ai),
        ] {
            Mock::given(method("GET"))
                .and(path(p))
                .and(header("x-maily-slot", slot))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(serde_json::json!({"status": "ok", "version": version})),
                )
                .mount(gateway)
                .await;
        }
        Mock::given(method("GET"))
            .and(path("/api/v1/version"))
            .and(header("x-maily-slot", slot))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"service": "api", "version": backend})),
            )
            .mount(gateway)
            .await;
    });
}

#[test]
fn the_partial_deploy_lines_as_written_monitor_and_verify_the_carried_layer_at_its_version() {
    use support::grafana::{TOKEN, grafana, metrics_endpoint};
    use support::postgres::Database;
    use support::prometheus::{PrometheusServer, slot_target};
    use support::verify::{declare_queues, stubs};

    let world = World::new(Duration::from_millis(300));
    world.install_prometheus_operator_crds();
    let p = providers(&world);
    let db = Database::new("partial_lines");
    declare_queues(&world, "amqp://guest:guest@127.0.0.1:5672");
    let g = grafana(&world, "staging", 200);
    let checks = stubs(&world, "v1", "v0", "0x6080604052");
    // Prometheus scrapes every slot, layer and version these runs put up.
    let metrics = metrics_endpoint(&world);
    let scraped = |slot: &str, backend: &str, ai: &str| -> Vec<_> {
        [
            "analytics",
            "api",
            "blockchain-verifier",
            "campaigns",
            "email-sender",
            "ai-orchestrator",
        ]
        .iter()
        .map(|s| {
            let v = if *s == "ai-orchestrator" { ai } else { backend };
            slot_target(&metrics.address().to_string(), NAMESPACE, s, slot, v)
        })
        .collect()
    };
    let mut targets = scraped("blue", "v1", "v1");
    targets.extend(scraped("green", "v2", "v1"));
    targets.extend(scraped("blue", "v2", "v3"));
    let prom = PrometheusServer::start(&targets);
    let backups = format!("file://{}/backups/", world.dir.path().display());
    let env = |tag: &str| {
        world.env_file(&[
            ("IMAGE_TAG", tag),
            ("ROLLOUT_TIMEOUT", "60s"),
            ("DATABASE_URL", &db.url()),
            ("DATABASE_BACKUP_URL", &backups),
            ("OPENAI_BASE_URL", &p.openai.uri()),
            ("ANTHROPIC_BASE_URL", &p.anthropic.uri()),
            ("OPENAI_API_KEY", OPENAI_KEY),
            ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
            ("GOOGLE_API_KEY", ""),
            ("GRAFANA_URL", &g.uri()),
            ("GRAFANA_API_TOKEN", TOKEN),
            ("PROMETHEUS_URL", &prom.url),
            ("MONITOR_TARGETS_TIMEOUT", "20s"),
            ("REDIS_URL", "redis://127.0.0.1:6379/0"),
            ("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            ("ETHEREUM_RPC_URL", &checks.ethereum.uri()),
            ("POLYGON_RPC_URL", &checks.polygon.uri()),
            ("VERIFY_BASE_URL", &checks.gateway.uri()),
        ])
    };
    let partial = |tag: &str, skip: &str| {
        world
            .maily()
            .arg("staging")
            .args([
                "--skip-infrastructure",
                "--skip-database",
                "--skip-frontend",
                skip,
            ])
            .arg("--env-file")
            .arg(env(tag))
            .timeout(Duration::from_secs(180))
            .output()
            .unwrap()
    };

    // The full deploy before: the schema, backend and AI at v1 on blue.
    gateway_answers(&world, &checks.gateway, "blue", "v1", "v1");
    let out = world
        .maily()
        .arg("staging")
        .args(["--skip-provision", "--skip-frontend", "--env-file"])
        .arg(env("v1"))
        .timeout(Duration::from_secs(180))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(serving(&world), ("blue".into(), "v1".into(), "v1".into()));

    // The backend-only line, exactly: monitor finds backend v2 and
    // AI v1 scraped in green, verify finds each at its version.
    gateway_answers(&world, &checks.gateway, "green", "v2", "v1");
    let out = partial("v2", "--skip-ai");
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(serving(&world), ("green".into(), "v2".into(), "v1".into()));

    // The AI-only line, exactly.
    gateway_answers(&world, &checks.gateway, "blue", "v2", "v3");
    let out = partial("v3", "--skip-backend");
    assert_exit(&out, exit_code::SUCCESS);
    let all = text(&out);
    assert!(all.contains("backend v2 carried over from green"), "{all}");
    assert_eq!(serving(&world), ("blue".into(), "v2".into(), "v3".into()));
}
