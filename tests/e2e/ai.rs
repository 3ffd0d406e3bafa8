//! configure-ai as a user runs it: the built binary against kubesim, the
//! AI providers as stubs that answer as their API references document.
//! Staging turns OpenAI and Anthropic on and Google off.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kubesim::ImageFault;
use maily_deploy::exit_code;
use maily_deploy::pipeline::snapshot::Outcome;
use serde_json::{Value, json};
use wiremock::MockServer;

use crate::support::ai::*;
use crate::support::*;

fn requests(server: &MockServer, world: &World) -> usize {
    world
        .rt
        .block_on(server.received_requests())
        .unwrap_or_default()
        .len()
}

#[test]
fn the_ai_services_go_to_the_idle_slot_with_their_config_and_users_follow() {
    let world = World::new(Duration::from_millis(300));
    let p = providers(&world);

    // 1. A first deploy: backend and AI to blue, users switched to blue.
    let out = deploy_with_ai(&world, &p, "v1", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(requests(&p.openai, &world), 1, "one request to OpenAI");
    assert_eq!(
        requests(&p.anthropic, &world),
        1,
        "one request to Anthropic"
    );
    let config = config_map(&world, "ai-config-blue").expect("the slot's AI ConfigMap");
    assert_eq!(config["tasks"]["body_copy"]["provider"], "anthropic");
    assert_eq!(
        config["tasks"]["body_copy"]["model"],
        "claude-sonnet-4-20250514"
    );
    assert_eq!(config["fallback"], json!(["openai", "anthropic"]));
    assert_eq!(config["providers"]["google"]["enabled"], false);
    assert_eq!(
        world.image("ai-orchestrator-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-ai-orchestrator:v1")
    );
    let pod = world
        .deployment("ai-orchestrator-blue")
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert!(
        pod.volumes
            .unwrap()
            .iter()
            .any(|v| v.config_map.as_ref().map(|c| c.name.as_str()) == Some("ai-config-blue")),
        "the AI Deployment mounts its slot's config"
    );
    assert_eq!(
        world.selected_slot("ai-orchestrator").as_deref(),
        Some("blue")
    );
    assert_eq!(
        world.replicas("ai-workers-blue"),
        Some(1),
        "AI workers switched on"
    );
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v1")
    );
    let first = deployment_id_of(&out);
    let snap = &world.snapshots()[0];
    assert_eq!(snap.outcome, Outcome::Succeeded);
    assert_eq!(
        snap.ai_config.as_ref().unwrap().config_map,
        "ai-config-blue"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for key in [OPENAI_KEY, ANTHROPIC_KEY] {
        assert!(
            !stderr.contains(key) && !stdout.contains(key),
            "a key leaked"
        );
    }

    // 2. The next release: green, with its own config; blue keeps its own.
    let out = deploy_with_ai(&world, &p, "v2", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    assert!(config_map(&world, "ai-config-green").is_some());
    assert!(config_map(&world, "ai-config-blue").is_some());
    assert_eq!(
        world.selected_slot("ai-orchestrator").as_deref(),
        Some("green")
    );
    assert_eq!(world.selected_slot("api").as_deref(), Some("green"));
    assert_eq!(
        world.replicas("ai-workers-blue"),
        Some(0),
        "old AI workers stop"
    );

    // 3. Rolling back is one switch: the old AI services and their config
    //    are still in blue.
    let out = world
        .maily()
        .args(["rollback", "staging", &first])
        .env("OPENAI_API_KEY", OPENAI_KEY)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(
        world.selected_slot("ai-orchestrator").as_deref(),
        Some("blue")
    );
    assert_eq!(world.replicas("ai-workers-blue"), Some(1));
}

#[test]
fn a_bad_ai_image_fails_fast_and_leaves_users_where_they_were() {
    let world = World::new(Duration::from_millis(300));
    let p = providers(&world);
    let out = deploy_with_ai(&world, &p, "v1", &[]);
    assert_exit(&out, exit_code::SUCCESS);

    world
        .sim()
        .control()
        .set_image_fault("*/maily-ai-orchestrator:v2", ImageFault::ImagePullBackOff);
    let started = std::time::Instant::now();
    let out = deploy_with_ai(&world, &p, "v2", &[]);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "failed fast, not at the deadline"
    );
    let all = text(&out);
    assert!(all.contains("configure-ai"), "{all}");
    assert!(all.contains("ai-orchestrator-green"), "{all}");
    assert!(
        all.contains("ErrImagePull") || all.contains("ImagePullBackOff"),
        "{all}"
    );
    // Users never left blue, backend and AI alike.
    assert_eq!(
        world.selected_slot("ai-orchestrator").as_deref(),
        Some("blue")
    );
    assert_eq!(world.selected_slot("api").as_deref(), Some("blue"));
    assert_eq!(world.replicas("ai-workers-blue"), Some(1));

    // Fixed, the next run goes to green as usual.
    world.sim().control().clear_image_faults();
    let out = deploy_with_ai(&world, &p, "v3", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(
        world.selected_slot("ai-orchestrator").as_deref(),
        Some("green")
    );
}

#[test]
fn a_bad_key_stops_configure_ai_before_anything_is_applied() {
    let world = World::new(Duration::from_millis(300));
    let p = providers(&world);
    let wrong = "sk-wrong-openai-key-0000c4";
    let out = deploy_with_ai(&world, &p, "v1", &[("OPENAI_API_KEY", wrong)]);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    let all = text(&out);
    assert!(all.contains("refused the key in OPENAI_API_KEY"), "{all}");
    assert!(!all.contains(wrong) && !all.contains("sk-wron"), "{all}");
    assert!(
        config_map(&world, "ai-config-blue").is_none(),
        "nothing applied"
    );
    assert!(world.deployment("ai-orchestrator-blue").is_none());
    // The backend had been applied above (exit 4). The same refusal as a
    // run's first change leaves nothing changed at all: exit 10.
    let out = deploy_with_ai_args(
        &world,
        &p,
        "v1",
        &[("OPENAI_API_KEY", wrong)],
        &["--only", "configure-ai"],
    );
    assert_exit(&out, exit_code::REFUSED);
    assert!(text(&out).contains("nothing was"), "{}", text(&out));
}

#[test]
fn a_model_the_provider_lacks_is_named_with_the_close_ones() {
    let world = World::new(Duration::from_millis(300));
    let p = providers(&world);
    // A copy of the manifests whose staging profile asks for a mistyped model.
    let manifests = world.dir.path().join("manifests");
    copy_dir(&repo().join("manifests"), &manifests);
    let profile = manifests.join("environments/staging.yaml");
    let text_ = std::fs::read_to_string(&profile)
        .unwrap()
        .replace("model: gpt-4o-mini", "model: gpt-4o-mnii");
    std::fs::write(&profile, text_).unwrap();
    let out = deploy_with_ai(&world, &p, "v1", &[]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::SUCCESS),
        "the shipped profile: {}",
        text(&out)
    );
    let out = deploy_with_ai_args(
        &world,
        &p,
        "v2",
        &[],
        &["--manifests-dir", path_str(&manifests)],
    );
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    let all = text(&out);
    assert!(all.contains("OpenAI: model gpt-4o-mnii"), "{all}");
    assert!(all.contains("close names: gpt-4o-mini, gpt-4o"), "{all}");
    assert!(
        config_map(&world, "ai-config-green").is_none(),
        "nothing applied"
    );
}

#[test]
fn a_mistake_in_the_ai_section_is_named_before_anything_runs() {
    let world = World::new(Duration::from_millis(300));
    let manifests = world.dir.path().join("manifests");
    copy_dir(&repo().join("manifests"), &manifests);
    let profile = manifests.join("environments/staging.yaml");
    let text_ = std::fs::read_to_string(&profile)
        .unwrap()
        .replace(
            "monthly_token_budget: 5000000",
            "monthly_token_budget: lots",
        )
        .replace(
            "personalisation: {provider: openai",
            "personalisation: {provider: google",
        )
        .replace("embeddings:", "embedding:");
    std::fs::write(&profile, text_).unwrap();
    let out = world
        .maily()
        .args(["validate", "staging", "--manifests-dir"])
        .arg(&manifests)
        .arg("--env-file")
        .arg(repo().join(".env.example"))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::CONFIG);
    let all = text(&out);
    for needle in [
        "ai.providers.openai.monthly_token_budget",
        "is not a whole number",
        "ai.tasks.personalisation",
        "of google, which is off",
        "ai.tasks.embedding",
        "is not a task the AI services know",
    ] {
        assert!(all.contains(needle), "{needle}: {all}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_rollback_that_redeploys_restores_the_ai_config_with_the_code() {
    let world = World::new(Duration::from_millis(300));
    let p = providers(&world);
    // v1 ran with another model for subject lines.
    let manifests = world.dir.path().join("manifests-v1");
    copy_dir(&repo().join("manifests"), &manifests);
    let profile = manifests.join("environments/staging.yaml");
    let text_ = std::fs::read_to_string(&profile).unwrap().replace(
        "subject_lines: {provider: openai, model: gpt-4o-mini}",
        "subject_lines: {provider: openai, model: gpt-4o}",
    );
    std::fs::write(&profile, text_).unwrap();
    let out = deploy_with_ai_args(
        &world,
        &p,
        "v1",
        &[],
        &["--manifests-dir", path_str(&manifests)],
    );
    assert_exit(&out, exit_code::SUCCESS);
    let first = deployment_id_of(&out);
    assert_eq!(
        config_map(&world, "ai-config-blue").unwrap()["tasks"]["subject_lines"]["model"],
        "gpt-4o"
    );
    // v2 to green, v3 to blue: v1 is gone from both slots.
    for tag in ["v2", "v3"] {
        let out = deploy_with_ai(&world, &p, tag, &[]);
        assert_exit(&out, exit_code::SUCCESS);
    }
    assert_eq!(
        world.selected_slot("ai-orchestrator").as_deref(),
        Some("blue")
    );
    let requests_before = requests(&p.openai, &world);

    let out = world
        .maily()
        .args(["rollback", "staging", &first])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(
        world.selected_slot("ai-orchestrator").as_deref(),
        Some("green")
    );
    assert_eq!(
        world.image("ai-orchestrator-green").as_deref(),
        Some("registry.example.invalid/maily/maily-ai-orchestrator:v1")
    );
    assert_eq!(
        config_map(&world, "ai-config-green").unwrap()["tasks"]["subject_lines"]["model"],
        "gpt-4o",
        "the config v1 ran with, back with its code"
    );
    assert_eq!(
        requests(&p.openai, &world),
        requests_before,
        "a rollback does not ask the providers again"
    );
    let snap = &world.snapshots()[0];
    assert_eq!(snap.command, "rollback");
    assert!(
        snap.ai_config.is_some(),
        "the rollback records the config too"
    );
}

#[test]
fn the_backend_alone_carries_the_ai_layer_users_reach_into_the_new_slot() {
    let world = World::new(Duration::from_millis(300));
    let p = providers(&world);
    let out = deploy_with_ai(&world, &p, "v1", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    let asked = requests(&p.openai, &world);
    // The backend alone (--skip-ai among BACKEND_ONLY).
    let out = world.deploy("v2", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    let all = text(&out);
    assert!(all.contains("AI v1 carried over from blue"), "{all}");
    assert_eq!(world.selected_slot("api").as_deref(), Some("green"));
    assert_eq!(
        world.selected_slot("ai-orchestrator").as_deref(),
        Some("green")
    );
    assert_eq!(
        world.image("ai-orchestrator-green").as_deref(),
        Some("registry.example.invalid/maily/maily-ai-orchestrator:v1")
    );
    assert!(config_map(&world, "ai-config-green").is_some());
    assert_eq!(
        requests(&p.openai, &world),
        asked,
        "a carried-over config is not checked with the providers again"
    );
}

#[test]
fn production_checks_all_three_providers_and_deploys_its_ai_services() {
    let world = World::for_environment("production", Duration::from_millis(300));
    let p = providers(&world);
    let google = google(&world);
    let env = world.env_file(&[
        ("IMAGE_TAG", "v1"),
        ("ROLLOUT_TIMEOUT", "60s"),
        ("OPENAI_BASE_URL", &p.openai.uri()),
        ("ANTHROPIC_BASE_URL", &p.anthropic.uri()),
        ("GOOGLE_BASE_URL", &google.uri()),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("GOOGLE_API_KEY", GOOGLE_KEY),
    ]);
    let out = world
        .maily()
        .arg("production")
        .args(BACKEND_AND_AI)
        .arg("--env-file")
        .arg(&env)
        .arg("--yes")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::SUCCESS);
    for server in [&p.openai, &p.anthropic, &google] {
        assert_eq!(requests(server, &world), 1, "one request per provider");
    }
    let api: Api<ConfigMap> = Api::namespaced(world.client.clone(), &world.namespace);
    let cm = world.rt.block_on(api.get("ai-config-blue")).unwrap();
    let config: Value = serde_json::from_str(&cm.data.unwrap()["config.json"]).unwrap();
    assert_eq!(config["tasks"]["personalisation"]["provider"], "google");
    assert_eq!(config["fallback"], json!(["openai", "anthropic", "google"]));
    assert_eq!(
        world.selected_slot("ai-orchestrator").as_deref(),
        Some("blue")
    );
    assert_eq!(world.replicas("ai-workers-blue"), Some(3));
    let all = text(&out);
    assert!(
        all.contains("providers: openai, anthropic, google"),
        "{all}"
    );
    assert!(!all.contains(GOOGLE_KEY), "the key never printed");
}

/// A run that deploys the AI services alone into the idle slot, without
/// switching users, is listed by `history` with that slot, as a backend
/// run is; it is still no state to roll back to (the backend in that slot
/// is whatever an earlier run left).
#[test]
fn history_names_the_slot_an_ai_only_run_filled() {
    let world = World::new(Duration::from_millis(300));
    let p = providers(&world);
    let first = deploy_with_ai(&world, &p, "v1", &[]);
    assert_exit(&first, exit_code::SUCCESS);
    let out = deploy_with_ai_args(&world, &p, "v2", &[], &["--skip-backend", "--skip-traffic"]);
    assert_exit(&out, exit_code::SUCCESS);
    let id = world.deployment_id(&out);
    assert_eq!(
        world.image("ai-orchestrator-green").as_deref(),
        Some("registry.example.invalid/maily/maily-ai-orchestrator:v2")
    );
    assert_eq!(
        world.selected_slot("ai-orchestrator").as_deref(),
        Some("blue"),
        "users stay"
    );

    let out = world
        .maily()
        .args(["history", "staging", "--output", "json"])
        .output()
        .unwrap();
    assert_exit(&out, exit_code::SUCCESS);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let newest = &doc["deployments"][0];
    assert_eq!(newest["deployment_id"], json!(id), "{doc}");
    assert_eq!(newest["slot"], json!("green"), "{newest}");

    let out = world.maily().args(["history", "staging"]).output().unwrap();
    let human = String::from_utf8_lossy(&out.stdout);
    let row = human
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{id} listed: {human}"));
    // Columns: deployment, started, outcome, release, slot, ...; cells are
    // set apart by two spaces or more.
    let cells: Vec<&str> = row
        .trim_matches(|c: char| c == '│' || c.is_whitespace())
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells.get(4), Some(&"green"), "the slot column: {row}");

    let out = world
        .maily()
        .args(["rollback", "staging", &id])
        .output()
        .unwrap();
    let all = text(&out);
    assert_ne!(out.status.code(), Some(exit_code::SUCCESS), "{all}");
    assert!(all.contains("did not deploy the backend"), "{all}");
    assert_eq!(world.selected_slot("api").as_deref(), Some("blue"));
}
