//! The AI providers as stubs: OpenAI's and Anthropic's model lists (the
//! providers staging turns on), answering as their API references show for
//! the right key and auth headers only, and a deploy of staging's backend
//! and AI against them.

use std::process::Output;
use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::World;

pub const OPENAI_KEY: &str = "sk-staging-openai-5f3c9a71";
pub const ANTHROPIC_KEY: &str = "sk-ant-staging-8e21b0c4";

/// Every phase but those with nothing to reach here: the backend's and
/// configure-ai.
pub const BACKEND_AND_AI: &[&str] = &[
    "--skip-provision",
    "--skip-migrate",
    "--skip-frontend",
    "--skip-monitor",
    "--skip-verify",
];

/// OpenAI and Anthropic (staging's providers) as stubs.
pub struct Providers {
    pub openai: MockServer,
    pub anthropic: MockServer,
}

/// Stubs answering each provider's model list as its API reference shows,
/// for the right key and auth headers only.
pub fn providers(world: &World) -> Providers {
    world.rt.block_on(async {
        let openai = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/models"))
            .and(header("authorization", format!("Bearer {OPENAI_KEY}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "object": "list",
                "data": [
                    {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
                    {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
                    {"id": "text-embedding-3-small", "object": "model", "created": 1705948997, "owned_by": "system"}
                ]
            })))
            .mount(&openai)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/models"))
            .respond_with(ResponseTemplate::new(401).set_body_json(json!({
                "error": {"message": "Incorrect API key provided: sk-wron*****c4.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}
            })))
            .with_priority(10)
            .mount(&openai)
            .await;
        let anthropic = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/models"))
            .and(header("x-api-key", ANTHROPIC_KEY))
            .and(header("anthropic-version", "2023-06-01"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "data": [{"type": "model", "id": "claude-sonnet-4-20250514", "display_name": "Claude Sonnet 4", "created_at": "2025-05-22T00:00:00Z"}],
                "has_more": false, "first_id": "claude-sonnet-4-20250514", "last_id": "claude-sonnet-4-20250514"
            })))
            .mount(&anthropic)
            .await;
        Providers { openai, anthropic }
    })
}

/// Deploy staging's backend and AI at `tag` against the provider stubs.
pub fn deploy_with_ai(world: &World, p: &Providers, tag: &str, changes: &[(&str, &str)]) -> Output {
    deploy_with_ai_args(world, p, tag, changes, &[])
}

/// The same, with more arguments (another `--manifests-dir`, say).
pub fn deploy_with_ai_args(
    world: &World,
    p: &Providers,
    tag: &str,
    changes: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let mut vars = vec![
        ("IMAGE_TAG", tag.to_string()),
        ("ROLLOUT_TIMEOUT", "60s".to_string()),
        ("OPENAI_BASE_URL", p.openai.uri()),
        ("ANTHROPIC_BASE_URL", p.anthropic.uri()),
        ("OPENAI_API_KEY", OPENAI_KEY.to_string()),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY.to_string()),
        // Google is off in staging: its key is not needed.
        ("GOOGLE_API_KEY", String::new()),
    ];
    for (k, v) in changes {
        vars.retain(|(n, _)| n != k);
        vars.push((k, v.to_string()));
    }
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = world.env_file(&refs);
    world
        .maily()
        .arg("staging")
        .args(BACKEND_AND_AI)
        .arg("--env-file")
        .arg(&env)
        .args(args)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap()
}

pub const GOOGLE_KEY: &str = "AIza-production-google-3d9f";

/// Gemini's model list (`GET /v1beta/models`, `x-goog-api-key`), for the
/// right key only; a wrong one gets the documented 400 API_KEY_INVALID.
pub fn google(world: &World) -> MockServer {
    world.rt.block_on(async {
        let google = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1beta/models"))
            .and(header("x-goog-api-key", GOOGLE_KEY))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "models": [
                    {"name": "models/gemini-2.0-flash", "version": "2.0", "displayName": "Gemini 2.0 Flash",
                     "supportedGenerationMethods": ["generateContent", "countTokens"]},
                    {"name": "models/text-embedding-004", "version": "004", "displayName": "Text Embedding 004",
                     "supportedGenerationMethods": ["embedContent"]}
                ]
            })))
            .mount(&google)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1beta/models"))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
                          "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}
            })))
            .with_priority(10)
            .mount(&google)
            .await;
        google
    })
}

/// The AI config a slot's ConfigMap (`ai-config-<slot>`) holds, as JSON.
pub fn config_map(world: &World, name: &str) -> Option<serde_json::Value> {
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(world.client.clone(), &world.namespace);
    let cm = world.rt.block_on(api.get_opt(name)).unwrap()?;
    let text = cm.data?.get("config.json")?.clone();
    Some(serde_json::from_str(&text).unwrap())
}
