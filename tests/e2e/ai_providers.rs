//! The AI providers' key and model checks against stubs that answer as each
//! API reference documents, asserting the requests the tool sends: OpenAI
//! `GET /v1/models` with `Authorization: Bearer`, Anthropic `GET /v1/models`
//! with `x-api-key` and `anthropic-version`, Gemini `GET /v1beta/models`
//! with `x-goog-api-key`.

use std::time::Duration;

use maily_deploy::config::ai::Provider;
use maily_deploy::providers::ai::{self, Endpoint};
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const OPENAI_KEY: &str = "sk-test-openai-0123456789";
const ANTHROPIC_KEY: &str = "sk-ant-test-0123456789";
const GOOGLE_KEY: &str = "AIza-test-0123456789";

fn endpoint(provider: Provider, server: &MockServer, key: &str) -> Endpoint {
    Endpoint {
        provider,
        base_url: server.uri(),
        key: key.into(),
        timeout: Duration::from_secs(5),
    }
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// `GET /v1/models` as OpenAI documents it.
pub async fn openai_stub(server: &MockServer) {
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
        .mount(server)
        .await;
    // Any other key: the documented 401.
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": {
                "message": "Incorrect API key provided: sk-wron*****3456. You can find your API key at https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error", "param": null, "code": "invalid_api_key"
            }
        })))
        .with_priority(10)
        .mount(server)
        .await;
}

/// `GET /v1/models` as Anthropic documents it.
pub async fn anthropic_stub(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("x-api-key", ANTHROPIC_KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .and(query_param("limit", "1000"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [
                {"type": "model", "id": "claude-sonnet-4-20250514", "display_name": "Claude Sonnet 4", "created_at": "2025-05-22T00:00:00Z"},
                {"type": "model", "id": "claude-3-5-haiku-20241022", "display_name": "Claude Haiku 3.5", "created_at": "2024-10-22T00:00:00Z"}
            ],
            "has_more": false,
            "first_id": "claude-sonnet-4-20250514",
            "last_id": "claude-3-5-haiku-20241022"
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"}
        })))
        .with_priority(10)
        .mount(server)
        .await;
}

/// `GET /v1beta/models` as the Gemini API documents it.
pub async fn google_stub(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/v1beta/models"))
        .and(header("x-goog-api-key", GOOGLE_KEY))
        .and(query_param("pageSize", "1000"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "models": [
                {"name": "models/gemini-2.0-flash", "version": "2.0", "displayName": "Gemini 2.0 Flash",
                 "inputTokenLimit": 1048576, "outputTokenLimit": 8192, "supportedGenerationMethods": ["generateContent", "countTokens"]},
                {"name": "models/gemini-1.5-pro", "version": "001", "displayName": "Gemini 1.5 Pro",
                 "supportedGenerationMethods": ["generateContent"]},
                {"name": "models/text-embedding-004", "version": "004", "displayName": "Text Embedding 004",
                 "supportedGenerationMethods": ["embedContent"]}
            ]
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1beta/models"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": {
                "code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]
            }
        })))
        .with_priority(10)
        .mount(server)
        .await;
}

#[tokio::test]
async fn each_provider_is_asked_once_with_its_documented_auth_and_all_at_once() {
    let (o, a, g) = (
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
    );
    openai_stub(&o).await;
    anthropic_stub(&a).await;
    google_stub(&g).await;
    let http = ai::client().unwrap();
    let checks = vec![
        (
            endpoint(Provider::OpenAi, &o, OPENAI_KEY),
            strings(&["gpt-4o-mini", "text-embedding-3-small"]),
        ),
        (
            endpoint(Provider::Anthropic, &a, ANTHROPIC_KEY),
            strings(&["claude-sonnet-4-20250514"]),
        ),
        (
            endpoint(Provider::Google, &g, GOOGLE_KEY),
            strings(&["gemini-2.0-flash"]),
        ),
    ];
    let counts = ai::check_all(&http, &checks).await.unwrap();
    assert_eq!(
        counts,
        vec![
            (Provider::OpenAi, 3),
            (Provider::Anthropic, 2),
            (Provider::Google, 3)
        ]
    );
    for server in [&o, &a, &g] {
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            1,
            "one request each"
        );
    }
}

/// Anthropic's list gives model ids only; an alias the Messages API takes
/// (`claude-sonnet-4-5`) is resolved with `GET /v1/models/{alias}`, as its
/// reference documents, and a name that is neither stays refused.
#[tokio::test]
async fn an_anthropic_alias_is_resolved_and_an_unknown_name_still_refused() {
    let a = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models/claude-sonnet-4-5"))
        .and(header("x-api-key", ANTHROPIC_KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "type": "model", "id": "claude-sonnet-4-5-20250929",
            "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"
        })))
        .mount(&a)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/models/claude-sonnet-9"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "type": "error", "error": {"type": "not_found_error", "message": "model: claude-sonnet-9"}
        })))
        .mount(&a)
        .await;
    anthropic_stub(&a).await;
    let http = ai::client().unwrap();
    let ok = vec![(
        endpoint(Provider::Anthropic, &a, ANTHROPIC_KEY),
        strings(&["claude-sonnet-4-5", "claude-sonnet-4-20250514"]),
    )];
    assert_eq!(
        ai::check_all(&http, &ok).await.unwrap(),
        vec![(Provider::Anthropic, 2)]
    );
    let bad = vec![(
        endpoint(Provider::Anthropic, &a, ANTHROPIC_KEY),
        strings(&["claude-sonnet-9"]),
    )];
    let problems = ai::check_all(&http, &bad).await.unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].subject.contains("claude-sonnet-9"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn bad_keys_are_named_by_their_variable_and_never_printed() {
    let (o, a, g) = (
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
    );
    openai_stub(&o).await;
    anthropic_stub(&a).await;
    google_stub(&g).await;
    let wrong = "sk-wrong-key-99887766554433";
    let http = ai::client().unwrap();
    let mut problems = Vec::new();
    for (p, server) in [
        (Provider::OpenAi, &o),
        (Provider::Anthropic, &a),
        (Provider::Google, &g),
    ] {
        problems.push(
            ai::list_models(&http, &endpoint(p, server, wrong))
                .await
                .unwrap_err(),
        );
    }
    let got: Vec<&str> = problems.iter().map(|p| p.problem.as_str()).collect();
    assert_eq!(
        got,
        vec![
            "refused the key in OPENAI_API_KEY (401, invalid_api_key)",
            "refused the key in ANTHROPIC_API_KEY (401, authentication_error)",
            "refused the key in GOOGLE_API_KEY (400, API_KEY_INVALID)",
        ]
    );
    // OpenAI's message echoes part of the key: it is never quoted.
    let all = format!("{problems:?}");
    assert!(!all.contains(wrong) && !all.contains("sk-wron"), "{all}");
}

#[tokio::test]
async fn a_model_that_does_not_exist_names_the_close_ones() {
    let (o, g) = (MockServer::start().await, MockServer::start().await);
    openai_stub(&o).await;
    google_stub(&g).await;
    let http = ai::client().unwrap();
    let problems = ai::check_all(
        &http,
        &[
            (
                endpoint(Provider::OpenAi, &o, OPENAI_KEY),
                strings(&["gpt-4o-mnii", "gpt-4o"]),
            ),
            (
                endpoint(Provider::Google, &g, GOOGLE_KEY),
                strings(&["gemini-2.0-flsh"]),
            ),
        ],
    )
    .await
    .unwrap_err();
    let got: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.subject.as_str(), p.fix.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "OpenAI: model gpt-4o-mnii",
                "close names: gpt-4o-mini, gpt-4o; fix the profile's ai.tasks"
            ),
            (
                "Google Gemini: model gemini-2.0-flsh",
                "close names: gemini-2.0-flash, gemini-1.5-pro; fix the profile's ai.tasks"
            ),
        ]
    );
}

#[tokio::test]
async fn a_provider_down_or_unreachable_or_slow_is_told_apart() {
    let a = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(529).set_body_json(json!({
            "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}
        })))
        .mount(&a)
        .await;
    let slow = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&slow)
        .await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);

    let http = ai::client().unwrap();
    let down = ai::list_models(&http, &endpoint(Provider::Anthropic, &a, ANTHROPIC_KEY))
        .await
        .unwrap_err();
    assert_eq!(down.problem, "is down or failing (529, overloaded_error)");
    let mut e = endpoint(Provider::OpenAi, &slow, OPENAI_KEY);
    e.timeout = Duration::from_millis(300);
    let late = ai::list_models(&http, &e).await.unwrap_err();
    assert_eq!(late.problem, "did not answer within 300ms");
    let mut e = endpoint(Provider::Google, &slow, GOOGLE_KEY);
    e.base_url = dead.clone();
    let gone = ai::list_models(&http, &e).await.unwrap_err();
    assert!(gone.problem.starts_with("is unreachable"), "{gone:?}");
    assert!(gone.subject.contains(&dead), "{gone:?}");
    assert!(gone.fix.contains("GOOGLE_BASE_URL"), "{gone:?}");
}
