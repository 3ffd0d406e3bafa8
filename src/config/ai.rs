//! The AI configuration of an environment: the `ai:` section of its profile.
//!
//! Which providers are on, the model of each task, the fallback order,
//! timeouts, rate limits and monthly token budgets. The section is kept as
//! raw YAML in the profile and checked here field by field, so that each
//! mistake (an unknown task, a model of a provider that is off, a budget that
//! is not a number) is named on its own rather than as one parse error.
//! What passes becomes [`AiConfig`], which configure-ai renders into the
//! slot's ConfigMap and records in the run's snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Problem;

/// The providers the AI services can call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    OpenAi,
    Anthropic,
    Google,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::OpenAi, Provider::Anthropic, Provider::Google];

    /// The name in profiles and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Google => "google",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The variable holding the provider's API key.
    pub fn key_var(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_API_KEY",
            Provider::Anthropic => "ANTHROPIC_API_KEY",
            Provider::Google => "GOOGLE_API_KEY",
        }
    }

    /// The variable holding the provider's base URL (a proxy's, if any).
    pub fn base_url_var(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_BASE_URL",
            Provider::Anthropic => "ANTHROPIC_BASE_URL",
            Provider::Google => "GOOGLE_BASE_URL",
        }
    }

    /// Its variables: the key and the base URL, which a provider the
    /// profile turns off does not need.
    pub fn vars(self) -> [&'static str; 2] {
        [self.key_var(), self.base_url_var()]
    }

    /// How people call it.
    pub fn title(self) -> &'static str {
        match self {
            Provider::OpenAi => "OpenAI",
            Provider::Anthropic => "Anthropic",
            Provider::Google => "Google Gemini",
        }
    }
}

/// The tasks the AI services route to a model.
pub const TASKS: [&str; 4] = [
    "subject_lines",
    "body_copy",
    "personalisation",
    "embeddings",
];

/// One provider's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSettings {
    pub enabled: bool,
    /// Per request, in seconds.
    pub timeout_secs: u64,
    /// Requests per minute the services allow themselves.
    pub rate_limit_rpm: u64,
    /// Tokens per calendar month; the services stop using the provider past it.
    pub monthly_token_budget: u64,
}

/// Which model serves a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskModel {
    pub provider: Provider,
    pub model: String,
}

/// The checked AI configuration: what the ConfigMap holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiConfig {
    pub providers: BTreeMap<Provider, ProviderSettings>,
    pub tasks: BTreeMap<String, TaskModel>,
    /// Providers in the order the services fall back to them.
    pub fallback: Vec<Provider>,
}

impl AiConfig {
    /// The providers that are on, in a stable order.
    pub fn enabled(&self) -> Vec<Provider> {
        self.providers
            .iter()
            .filter(|(_, s)| s.enabled)
            .map(|(p, _)| *p)
            .collect()
    }

    /// The models the tasks use, by provider (each once).
    pub fn models_of(&self, provider: Provider) -> Vec<String> {
        let mut out: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.provider == provider)
            .map(|t| t.model.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The key variables of providers that are off: not needed by configure-ai.
    pub fn unneeded_vars(&self) -> Vec<&'static str> {
        Provider::ALL
            .into_iter()
            .filter(|p| !self.enabled().contains(p))
            .flat_map(Provider::vars)
            .collect()
    }

    /// The JSON the AI services read (`config.json` in the ConfigMap).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("the AI config serializes")
    }
}

const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The longest a provider's request may take: also how long configure-ai
/// waits on one model listing, so a proxy that never answers cannot hold
/// a deploy for as long as a typo says.
const MAX_TIMEOUT_SECS: u64 = 600;

/// Check the `ai:` section; every problem, each naming its field.
pub fn parse(raw: &Value, file: &str) -> Result<AiConfig, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut bad = |field: &str, problem: String, fix: &str| {
        problems.push(Problem {
            phase: None,
            subject: format!("{file}: ai.{field}"),
            problem,
            fix: fix.into(),
        })
    };
    let Some(section) = raw.as_object() else {
        bad(
            "",
            "is not a mapping".into(),
            "give providers, tasks and fallback",
        );
        return Err(problems);
    };
    for key in section.keys() {
        if !matches!(key.as_str(), "providers" | "tasks" | "fallback") {
            bad(
                key,
                "is not a field of the AI configuration".into(),
                "use providers, tasks and fallback",
            );
        }
    }

    let mut providers = BTreeMap::new();
    let empty = serde_json::Map::new();
    let raw_providers = section
        .get("providers")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if section.get("providers").is_none() {
        bad(
            "providers",
            "is missing".into(),
            "list openai, anthropic and google with enabled: true or false",
        );
    }
    for (name, settings) in raw_providers {
        let Some(provider) = Provider::parse(name) else {
            bad(
                &format!("providers.{name}"),
                "is not a known provider".into(),
                "use openai, anthropic or google",
            );
            continue;
        };
        let field = |f: &str| format!("providers.{name}.{f}");
        let Some(settings) = settings.as_object() else {
            bad(
                &format!("providers.{name}"),
                "is not a mapping".into(),
                "give enabled, timeout, rate_limit_rpm, monthly_token_budget",
            );
            continue;
        };
        for key in settings.keys() {
            if !matches!(
                key.as_str(),
                "enabled" | "timeout" | "rate_limit_rpm" | "monthly_token_budget"
            ) {
                bad(
                    &field(key),
                    "is not a provider setting".into(),
                    "use enabled, timeout, rate_limit_rpm, monthly_token_budget",
                );
            }
        }
        let enabled = match settings.get("enabled") {
            Some(Value::Bool(b)) => *b,
            None => false,
            Some(_) => {
                bad(
                    &field("enabled"),
                    "is not true or false".into(),
                    "write enabled: true or enabled: false",
                );
                false
            }
        };
        let timeout_secs = match settings.get("timeout") {
            None => DEFAULT_TIMEOUT_SECS,
            Some(Value::String(s)) => match crate::config::duration::AI_PROVIDER_TIMEOUT.parse(s) {
                Ok(d) if d.as_secs() <= MAX_TIMEOUT_SECS => d.as_secs(),
                Err(why @ crate::config::duration::DurationError::NotWhole(_)) => {
                    bad(
                        &field("timeout"),
                        format!("{why} (got {})", crate::error::clipped(s)),
                        "e.g. 30s or 2m",
                    );
                    0
                }
                _ => {
                    bad(
                        &field("timeout"),
                        format!(
                            "is not a duration from 1s to {}m (got {})",
                            MAX_TIMEOUT_SECS / 60,
                            crate::error::clipped(s)
                        ),
                        "e.g. 30s or 2m",
                    );
                    0
                }
            },
            Some(other) => {
                bad(
                    &field("timeout"),
                    format!(
                        "is not a duration (got {})",
                        crate::error::clipped(&other.to_string())
                    ),
                    "e.g. 30s or 2m",
                );
                0
            }
        };
        let mut number = |key: &str, example: &str| -> u64 {
            match settings.get(key) {
                None => 0,
                Some(v) => match v.as_u64() {
                    Some(n) => n,
                    // A number YAML read as a float past u64 (2^64 and up).
                    None if v.as_f64().is_some_and(|f| f.fract() == 0.0 && f > 0.0) => {
                        bad(
                            &field(key),
                            format!("is over {}, the most it may be", u64::MAX),
                            &format!("write a smaller number, e.g. {example}"),
                        );
                        0
                    }
                    None => {
                        bad(
                            &field(key),
                            format!("is not a whole number (got {v})"),
                            &format!("write a number without units or quotes, e.g. {example}"),
                        );
                        0
                    }
                },
            }
        };
        let rate_limit_rpm = number("rate_limit_rpm", "3000");
        let monthly_token_budget = number("monthly_token_budget", "50000000");
        if enabled && settings.get("monthly_token_budget").is_none() {
            bad(
                &field("monthly_token_budget"),
                "is missing for a provider that is on".into(),
                "give the tokens a month may use, e.g. 50000000",
            );
        }
        providers.insert(
            provider,
            ProviderSettings {
                enabled,
                timeout_secs,
                rate_limit_rpm,
                monthly_token_budget,
            },
        );
    }
    let is_on = |p: Provider| providers.get(&p).is_some_and(|s| s.enabled);

    let mut tasks = BTreeMap::new();
    match section.get("tasks").and_then(Value::as_object) {
        None => bad(
            "tasks",
            "is missing".into(),
            &format!("give a provider and model for each of {}", TASKS.join(", ")),
        ),
        Some(raw_tasks) => {
            for (task, spec) in raw_tasks {
                if !TASKS.contains(&task.as_str()) {
                    let close = TASKS
                        .iter()
                        .find(|t| strsim::levenshtein(t, task) <= 3)
                        .map(|t| format!("did you mean {t}? "))
                        .unwrap_or_default();
                    bad(
                        &format!("tasks.{task}"),
                        "is not a task the AI services know".into(),
                        &format!("{close}the tasks are {}", TASKS.join(", ")),
                    );
                    continue;
                }
                let provider = spec.get("provider").and_then(Value::as_str);
                let model = spec.get("model").and_then(Value::as_str).unwrap_or("");
                if model.trim().is_empty() {
                    bad(
                        &format!("tasks.{task}.model"),
                        "is missing".into(),
                        "name the model, e.g. gpt-4o-mini",
                    );
                }
                match provider.map(|p| (p, Provider::parse(p))) {
                    None => bad(
                        &format!("tasks.{task}.provider"),
                        "is missing".into(),
                        "use openai, anthropic or google",
                    ),
                    Some((p, None)) => bad(
                        &format!("tasks.{task}.provider"),
                        format!("{p:?} is not a known provider"),
                        "use openai, anthropic or google",
                    ),
                    Some((_, Some(p))) if !is_on(p) => bad(
                        &format!("tasks.{task}"),
                        format!("uses the model {model} of {}, which is off", p.as_str()),
                        &format!(
                            "turn {} on (providers.{}.enabled: true) or pick a model of a provider that is on",
                            p.as_str(),
                            p.as_str()
                        ),
                    ),
                    Some((_, Some(p))) => {
                        tasks.insert(
                            task.clone(),
                            TaskModel {
                                provider: p,
                                model: model.to_string(),
                            },
                        );
                    }
                }
            }
            for task in TASKS {
                if !raw_tasks.contains_key(task) {
                    bad(
                        &format!("tasks.{task}"),
                        "is missing".into(),
                        "give its provider and model",
                    );
                }
            }
        }
    }

    let mut fallback = Vec::new();
    match section.get("fallback") {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item.as_str().and_then(Provider::parse) {
                    Some(p) if fallback.contains(&p) => bad(
                        "fallback",
                        format!("names {} twice", p.as_str()),
                        "name each provider once",
                    ),
                    Some(p) if !is_on(p) => bad(
                        "fallback",
                        format!("names {}, which is off", p.as_str()),
                        "list only providers that are on",
                    ),
                    Some(p) => fallback.push(p),
                    None => bad(
                        "fallback",
                        format!("names {item}, which is not a known provider"),
                        "use openai, anthropic or google",
                    ),
                }
            }
        }
        Some(other) => bad(
            "fallback",
            format!("is not a list (got {other})"),
            "e.g. [openai, anthropic]",
        ),
    }
    if !providers.values().any(|s| s.enabled) && section.get("providers").is_some() {
        bad(
            "providers",
            "has no provider on".into(),
            "turn at least one on, or skip configure-ai",
        );
    }
    if problems.is_empty() {
        Ok(AiConfig {
            providers,
            tasks,
            fallback,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_saphyr::from_str(text).unwrap()
    }

    const GOOD: &str = "
providers:
  openai: {enabled: true, timeout: 30s, rate_limit_rpm: 3000, monthly_token_budget: 50000000}
  anthropic: {enabled: true, timeout: 1m, rate_limit_rpm: 1000, monthly_token_budget: 20000000}
  google: {enabled: false}
tasks:
  subject_lines: {provider: openai, model: gpt-4o-mini}
  body_copy: {provider: anthropic, model: claude-sonnet-4-20250514}
  personalisation: {provider: openai, model: gpt-4o}
  embeddings: {provider: openai, model: text-embedding-3-small}
fallback: [openai, anthropic]
";

    #[test]
    fn a_good_section_parses_with_the_providers_on_and_their_models() {
        let c = parse(&yaml(GOOD), "p.yaml").unwrap();
        assert_eq!(c.enabled(), vec![Provider::OpenAi, Provider::Anthropic]);
        assert_eq!(
            c.models_of(Provider::OpenAi),
            vec!["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
        );
        assert_eq!(c.providers[&Provider::Anthropic].timeout_secs, 60);
        assert_eq!(c.unneeded_vars(), vec!["GOOGLE_API_KEY", "GOOGLE_BASE_URL"]);
        assert_eq!(c.to_json()["tasks"]["body_copy"]["provider"], "anthropic");
    }

    #[test]
    fn each_mistake_is_named_on_its_own() {
        let text = GOOD
            .replace("embeddings:", "embedings:")
            .replace(
                "personalisation: {provider: openai, model: gpt-4o}",
                "personalisation: {provider: google, model: gemini-2.0-flash}",
            )
            .replace(
                "monthly_token_budget: 20000000",
                "monthly_token_budget: 20M",
            );
        let problems = parse(&yaml(&text), "p.yaml").unwrap_err();
        let got: Vec<(String, String)> = problems
            .iter()
            .map(|p| (p.subject.clone(), p.problem.clone()))
            .collect();
        assert!(
            got.contains(&(
                "p.yaml: ai.providers.anthropic.monthly_token_budget".into(),
                "is not a whole number (got \"20M\")".into()
            )),
            "{got:?}"
        );
        // Past what a u64 holds, YAML reads a float: still a whole number,
        // and said as too large.
        let huge = GOOD.replace(
            "monthly_token_budget: 20000000",
            "monthly_token_budget: 18446744073709551616",
        );
        let too_large = parse(&yaml(&huge), "p.yaml").unwrap_err();
        assert!(
            too_large
                .iter()
                .any(|p| p.subject.ends_with("monthly_token_budget")
                    && p.problem == "is over 18446744073709551615, the most it may be"),
            "{too_large:?}"
        );
        assert!(
            got.contains(&(
                "p.yaml: ai.tasks.personalisation".into(),
                "uses the model gemini-2.0-flash of google, which is off".into()
            )),
            "{got:?}"
        );
        assert!(
            got.contains(&(
                "p.yaml: ai.tasks.embedings".into(),
                "is not a task the AI services know".into()
            )),
            "{got:?}"
        );
        let typo = problems
            .iter()
            .find(|p| p.subject.ends_with("tasks.embedings"))
            .unwrap();
        assert!(typo.fix.contains("did you mean embeddings?"), "{typo:?}");
        assert!(
            got.iter()
                .any(|(s, p)| s.ends_with("ai.tasks.embeddings") && p == "is missing"),
            "{got:?}"
        );
    }

    #[test]
    fn a_provider_timeout_is_from_a_second_to_ten_minutes() {
        let text = GOOD.replace("timeout: 1m", "timeout: 30d");
        let problems = parse(&yaml(&text), "p.yaml").unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.subject.ends_with("providers.anthropic.timeout")
                    && p.problem == "is not a duration from 1s to 10m (got 30d)"),
            "{problems:?}"
        );
        let ten = GOOD.replace("timeout: 1m", "timeout: 10m");
        assert!(parse(&yaml(&ten), "p.yaml").is_ok());
    }

    /// The services take whole seconds: 1500ms was read as 1s and 500ms
    /// as the 0 the range check then refused without saying why.
    #[test]
    fn a_provider_timeout_is_whole_seconds() {
        let text = GOOD.replace("timeout: 1m", "timeout: 1500ms");
        let problems = parse(&yaml(&text), "p.yaml").unwrap_err();
        let timeout = problems
            .iter()
            .find(|p| p.subject.ends_with("providers.anthropic.timeout"))
            .unwrap_or_else(|| panic!("{problems:?}"));
        assert!(
            timeout
                .problem
                .starts_with("is not a whole number of seconds")
                && timeout.problem.ends_with("(got 1500ms)"),
            "{timeout:?}"
        );
    }

    #[test]
    fn a_fallback_to_a_provider_that_is_off_is_refused() {
        let text = GOOD.replace("[openai, anthropic]", "[openai, google, mistral]");
        let problems = parse(&yaml(&text), "p.yaml").unwrap_err();
        let got: Vec<&str> = problems.iter().map(|p| p.problem.as_str()).collect();
        assert_eq!(
            got,
            vec![
                "names google, which is off",
                "names \"mistral\", which is not a known provider"
            ]
        );
    }
}
