//! The AI providers' model lists: is the key good, and do the models the
//! profile names exist?
//!
//! One request per enabled provider, all at once, before configure-ai
//! applies anything:
//!
//! - OpenAI: `GET /v1/models` with `Authorization: Bearer <key>`; the answer
//!   is `{"object": "list", "data": [{"id": "gpt-4o", ...}]}`.
//! - Anthropic: `GET /v1/models?limit=1000` with `x-api-key` and
//!   `anthropic-version: 2023-06-01`; `{"data": [{"id": ..., "type":
//!   "model"}], "has_more": false, ...}`.
//! - Google Gemini: `GET /v1beta/models?pageSize=1000` with
//!   `x-goog-api-key`; `{"models": [{"name": "models/gemini-2.0-flash",
//!   ...}], "nextPageToken": ...}`.
//!
//! What an answer means (the model ids, which failure it is, which names
//! are close to a missing model) is decided by pure functions tested on the
//! documented shapes. A key never appears in a message: the error texts of
//! the providers are not quoted for an authentication failure (OpenAI's
//! echoes part of the key), only their type or code.

use std::time::Duration;

use serde_json::Value;

use crate::config::ai::Provider;
use crate::error::Problem;

/// The Anthropic API version the request is written against.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// What to call for one provider.
#[derive(Clone)]
pub struct Endpoint {
    pub provider: Provider,
    /// Without a trailing slash, e.g. `https://api.openai.com`.
    pub base_url: String,
    pub key: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("key", &"[secret]")
            .finish()
    }
}

/// The URL of the provider's model list.
pub fn models_url(provider: Provider, base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    match provider {
        Provider::OpenAi => format!("{base}/v1/models"),
        Provider::Anthropic => format!("{base}/v1/models?limit=1000"),
        Provider::Google => format!("{base}/v1beta/models?pageSize=1000"),
    }
}

/// A model name as the provider lists it: Gemini's `models/` prefix dropped.
pub fn normalize(provider: Provider, name: &str) -> String {
    match provider {
        Provider::Google => name.strip_prefix("models/").unwrap_or(name).to_string(),
        _ => name.to_string(),
    }
}

/// The model ids of a successful answer.
pub fn parse_models(provider: Provider, body: &str) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("is not JSON ({e})"))?;
    let (list, field) = match provider {
        Provider::OpenAi | Provider::Anthropic => (v.get("data"), "id"),
        Provider::Google => (v.get("models"), "name"),
    };
    let list = list.and_then(Value::as_array).ok_or_else(|| {
        format!(
            "has no {} list",
            if provider == Provider::Google {
                "models"
            } else {
                "data"
            }
        )
    })?;
    Ok(list
        .iter()
        .filter_map(|m| m.get(field)?.as_str())
        .map(|id| normalize(provider, id))
        .collect())
}

/// The error's type or code from the provider's error body, never its message.
fn error_code(provider: Provider, body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let e = v.get("error")?;
    match provider {
        Provider::OpenAi => e
            .get("code")
            .and_then(Value::as_str)
            .or_else(|| e.get("type").and_then(Value::as_str))
            .map(String::from),
        Provider::Anthropic => e.get("type").and_then(Value::as_str).map(String::from),
        Provider::Google => {
            let reason = e
                .get("details")
                .and_then(Value::as_array)
                .and_then(|d| d.iter().find_map(|x| x.get("reason")?.as_str()));
            reason
                .or_else(|| e.get("status").and_then(Value::as_str))
                .map(String::from)
        }
    }
}

/// Why a non-success answer failed, and what to do.
pub fn classify_failure(provider: Provider, status: u16, body: &str) -> (String, String) {
    let code = error_code(provider, body);
    let with_code = |s: &str| match &code {
        Some(c) => format!("{s} ({status}, {c})"),
        None => format!("{s} ({status})"),
    };
    let key = provider.key_var();
    // Gemini answers a bad key with 400 API_KEY_INVALID, not 401.
    let bad_key = status == 401
        || (provider == Provider::Google
            && status == 400
            && code.as_deref() == Some("API_KEY_INVALID"));
    if bad_key {
        return (
            with_code(&format!("refused the key in {key}")),
            format!("check {key}: it may be mistyped, revoked or of another account"),
        );
    }
    match status {
        403 => (
            with_code("the key may not list models"),
            format!(
                "give the key in {key} access to the models API (project, workspace or API restrictions)"
            ),
        ),
        404 => (
            with_code("has no model list at this address"),
            format!(
                "check {}: it should be the API's root, without /v1",
                provider.base_url_var()
            ),
        ),
        429 => (
            with_code("is rate-limiting or out of quota"),
            "wait and run again, or check the account's quota and billing".into(),
        ),
        500..=599 => (
            with_code("is down or failing"),
            format!(
                "check the provider's status page and run again, or skip configure-ai ({})",
                "--skip-ai"
            ),
        ),
        _ => (
            with_code("answered with an error"),
            format!("check {key} and {}", provider.base_url_var()),
        ),
    }
}

/// The available names closest to a missing model, best first (at most 3).
pub fn close_names(wanted: &str, available: &[String]) -> Vec<String> {
    let mut scored: Vec<(f64, &String)> = available
        .iter()
        .map(|a| (strsim::normalized_levenshtein(wanted, a), a))
        .filter(|(score, a)| {
            *score >= 0.6 || a.starts_with(wanted) || wanted.starts_with(a.as_str())
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(3).map(|(_, a)| a.clone()).collect()
}

/// The problems of one provider's answer: each model it lacks, with the
/// close names it has.
pub fn missing_models(provider: Provider, wanted: &[String], available: &[String]) -> Vec<Problem> {
    wanted
        .iter()
        .map(|w| normalize(provider, w))
        .filter(|w| !available.contains(w))
        .map(|w| {
            let close = close_names(&w, available);
            Problem {
                phase: Some("configure-ai".into()),
                subject: format!("{}: model {w}", provider.title()),
                problem: format!(
                    "does not exist for this key ({} models listed)",
                    available.len()
                ),
                fix: if close.is_empty() {
                    "pick a model the provider lists, in the profile's ai.tasks".into()
                } else {
                    format!(
                        "close names: {}; fix the profile's ai.tasks",
                        close.join(", ")
                    )
                },
            }
        })
        .collect()
}

/// The HTTP client for the checks.
pub fn client() -> anyhow::Result<reqwest::Client> {
    // The process's one crypto provider (main installs it too; a library
    // caller may not have).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No redirect is followed: Anthropic's and Google's keys travel in
    // headers of their own (`x-api-key`, `x-goog-api-key`), which a
    // redirect to another host would carry along (only `Authorization`
    // is dropped there); the APIs answer in place.
    Ok(reqwest::Client::builder()
        .user_agent(concat!("maily-deploy/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// List one provider's models: the ids, or the problem.
pub async fn list_models(http: &reqwest::Client, e: &Endpoint) -> Result<Vec<String>, Problem> {
    let url = models_url(e.provider, &e.base_url);
    let req = http.get(&url).timeout(e.timeout);
    let req = match e.provider {
        Provider::OpenAi => req.bearer_auth(&e.key),
        Provider::Anthropic => req
            .header("x-api-key", &e.key)
            .header("anthropic-version", ANTHROPIC_VERSION),
        Provider::Google => req.header("x-goog-api-key", &e.key),
    };
    let problem = |problem: String, fix: String| Problem {
        phase: Some("configure-ai".into()),
        subject: format!("{} ({})", e.provider.title(), e.base_url),
        problem,
        fix,
    };
    let resp = match req.send().await {
        Ok(r) => r,
        Err(err) => {
            let why = if err.is_timeout() {
                format!(
                    "did not answer within {}",
                    humantime::format_duration(e.timeout)
                )
            } else {
                // The request's error without its URL: the address is in the subject.
                format!("is unreachable ({})", err.without_url())
            };
            return Err(problem(
                why,
                format!(
                    "check {} and the network, or the provider's status page",
                    e.provider.base_url_var()
                ),
            ));
        }
    };
    let status = resp.status().as_u16();
    let body = super::http::read_body(resp).await.unwrap_or_else(|why| why);
    if !(200..300).contains(&status) {
        let (why, fix) = classify_failure(e.provider, status, &body);
        return Err(problem(why, fix));
    }
    parse_models(e.provider, &body).map_err(|why| {
        problem(
            format!("answered 200, but the body {why}"),
            format!(
                "check {}: a proxy may be answering in its own format",
                e.provider.base_url_var()
            ),
        )
    })
}

/// Whether Anthropic knows `name` as an alias of a model: its model list
/// gives ids only, while the Messages API also takes aliases
/// (`claude-sonnet-4-5` for the newest snapshot), which `GET
/// /v1/models/{model_id}` resolves ("Model identifier or alias").
async fn anthropic_alias(http: &reqwest::Client, e: &Endpoint, name: &str) -> bool {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'/')
        .add(b'?')
        .add(b'#')
        .add(b'%');
    let url = format!(
        "{}/v1/models/{}",
        e.base_url.trim_end_matches('/'),
        percent_encoding::utf8_percent_encode(name, SEGMENT)
    );
    let answer = http
        .get(&url)
        .timeout(e.timeout)
        .header("x-api-key", &e.key)
        .header("anthropic-version", ANTHROPIC_VERSION)
        .send()
        .await;
    match answer {
        Ok(resp) if resp.status().is_success() => super::http::read_body(resp)
            .await
            .ok()
            .and_then(|body| serde_json::from_str::<Value>(&body).ok())
            .is_some_and(|v| v.get("id").and_then(Value::as_str).is_some()),
        _ => false,
    }
}

/// Check every endpoint at once; `wanted` gives each provider's models.
/// Returns each provider's model count, or every problem found.
pub async fn check_all(
    http: &reqwest::Client,
    checks: &[(Endpoint, Vec<String>)],
) -> Result<Vec<(Provider, usize)>, Vec<Problem>> {
    let results = futures::future::join_all(checks.iter().map(|(e, wanted)| async move {
        let available = list_models(http, e).await.map_err(|p| vec![p])?;
        let mut wanted = wanted.clone();
        if e.provider == Provider::Anthropic {
            let mut kept = Vec::new();
            for name in wanted {
                if available.contains(&name) || !anthropic_alias(http, e, &name).await {
                    kept.push(name);
                }
            }
            wanted = kept;
        }
        let missing = missing_models(e.provider, &wanted, &available);
        if missing.is_empty() {
            Ok((e.provider, available.len()))
        } else {
            Err(missing)
        }
    }))
    .await;
    let mut ok = Vec::new();
    let mut problems = Vec::new();
    for r in results {
        match r {
            Ok(x) => ok.push(x),
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok(ok)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy in ANTHROPIC_BASE_URL that redirects elsewhere gets an
    /// error, and the key never reaches the other host.
    #[tokio::test]
    async fn a_key_in_its_own_header_is_never_carried_to_a_redirects_host() {
        use wiremock::matchers::any;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let elsewhere = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#))
            .expect(0)
            .mount(&elsewhere)
            .await;
        let proxy = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(307).insert_header(
                "location",
                format!("{}/v1/models", elsewhere.uri()).as_str(),
            ))
            .mount(&proxy)
            .await;
        for provider in [Provider::Anthropic, Provider::Google] {
            let e = Endpoint {
                provider,
                base_url: proxy.uri(),
                key: "sk-ant-test-key-123456".into(),
                timeout: Duration::from_secs(5),
            };
            let problem = list_models(&client().unwrap(), &e).await.unwrap_err();
            assert!(problem.problem.contains("307"), "{problem:?}");
        }
    }

    #[test]
    fn each_provider_lists_its_models_in_its_documented_shape() {
        let openai = r#"{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}]}"#;
        assert_eq!(
            parse_models(Provider::OpenAi, openai).unwrap(),
            vec!["gpt-4o", "text-embedding-3-small"]
        );
        let anthropic = r#"{"data":[{"type":"model","id":"claude-sonnet-4-20250514","display_name":"Claude Sonnet 4","created_at":"2025-05-22T00:00:00Z"}],"has_more":false,"first_id":"claude-sonnet-4-20250514","last_id":"claude-sonnet-4-20250514"}"#;
        assert_eq!(
            parse_models(Provider::Anthropic, anthropic).unwrap(),
            vec!["claude-sonnet-4-20250514"]
        );
        let google = r#"{"models":[{"name":"models/gemini-2.0-flash","version":"2.0","displayName":"Gemini 2.0 Flash","supportedGenerationMethods":["generateContent"]}],"nextPageToken":""}"#;
        assert_eq!(
            parse_models(Provider::Google, google).unwrap(),
            vec!["gemini-2.0-flash"]
        );
        assert!(parse_models(Provider::Google, openai).is_err());
    }

    #[test]
    fn a_bad_key_is_named_by_its_variable_and_never_quoted() {
        let openai = r#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let (why, fix) = classify_failure(Provider::OpenAi, 401, openai);
        assert_eq!(
            why,
            "refused the key in OPENAI_API_KEY (401, invalid_api_key)"
        );
        assert!(!why.contains("sk-") && !fix.contains("sk-"));
        let anthropic = r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        assert_eq!(
            classify_failure(Provider::Anthropic, 401, anthropic).0,
            "refused the key in ANTHROPIC_API_KEY (401, authentication_error)"
        );
        let google = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
        assert_eq!(
            classify_failure(Provider::Google, 400, google).0,
            "refused the key in GOOGLE_API_KEY (400, API_KEY_INVALID)"
        );
    }

    #[test]
    fn a_provider_down_is_told_apart_from_a_bad_key() {
        let overloaded =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let (why, _) = classify_failure(Provider::Anthropic, 529, overloaded);
        assert_eq!(why, "is down or failing (529, overloaded_error)");
        let (why, _) = classify_failure(Provider::OpenAi, 503, "<html>bad gateway</html>");
        assert_eq!(why, "is down or failing (503)");
        let (why, _) = classify_failure(Provider::OpenAi, 429, "{}");
        assert_eq!(why, "is rate-limiting or out of quota (429)");
    }

    #[test]
    fn a_missing_model_says_which_close_names_exist() {
        let available: Vec<String> = [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "text-embedding-3-small",
            "dall-e-3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            close_names("gpt-4o-mni", &available),
            vec!["gpt-4o-mini", "gpt-4o"]
        );
        let problems = missing_models(
            Provider::OpenAi,
            &["gpt-4o".into(), "gpt-4o-mni".into()],
            &available,
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].subject, "OpenAI: model gpt-4o-mni");
        assert!(
            problems[0].fix.contains("close names: gpt-4o-mini, gpt-4o"),
            "{:?}",
            problems[0]
        );
        assert!(
            missing_models(
                Provider::Google,
                &["models/gemini-2.0-flash".into()],
                &["gemini-2.0-flash".into()]
            )
            .is_empty()
        );
    }

    #[test]
    fn base_urls_may_point_at_a_proxy() {
        assert_eq!(
            models_url(Provider::Google, "http://proxy.local/"),
            "http://proxy.local/v1beta/models?pageSize=1000"
        );
        assert_eq!(
            models_url(Provider::OpenAi, "https://api.openai.com"),
            "https://api.openai.com/v1/models"
        );
    }
}
