//! The variable spec: every variable the tool reads, in one table.
//!
//! Validation, secret redaction and the `.env.production.template` drift
//! check all come from this table, so a variable added here is checked,
//! redacted and documented at once, and one missing here is none of those.

use std::time::Duration;

use super::duration::{self, DurationError};
use super::format::Format;
use crate::pipeline::PhaseId::{self, *};

/// Whether a variable must be set when a phase that needs it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Must be set.
    Required,
    /// May be left unset; the phase does without.
    Optional,
    /// Unset means this value.
    Default(&'static str),
}

/// One variable.
#[derive(Debug, Clone, Copy)]
pub struct VarSpec {
    pub name: &'static str,
    /// The phases that read it; empty means the run itself does.
    pub phases: &'static [PhaseId],
    pub format: Format,
    /// A secret's value is never printed, logged or reported, not even in part.
    pub secret: bool,
    pub need: Need,
    /// The section of the template it is listed in.
    pub group: &'static str,
    /// One line, as the template's comment and `validate`'s help show it.
    pub description: &'static str,
}

const fn var(
    name: &'static str,
    phases: &'static [PhaseId],
    format: Format,
    need: Need,
    group: &'static str,
    description: &'static str,
) -> VarSpec {
    VarSpec {
        name,
        phases,
        format,
        secret: false,
        need,
        group,
        description,
    }
}

const fn secret(
    name: &'static str,
    phases: &'static [PhaseId],
    format: Format,
    need: Need,
    group: &'static str,
    description: &'static str,
) -> VarSpec {
    VarSpec {
        secret: true,
        ..var(name, phases, format, need, group, description)
    }
}

use Need::{Default, Optional, Required};

/// Vault authentication methods the tool supports.
pub const VAULT_AUTH_METHODS: &[&str] = &["token", "kubernetes"];

/// The table. Order is the template's order.
#[rustfmt::skip]
pub const SPEC: &[VarSpec] = &[
    // Images
    var("IMAGE_REGISTRY", &[DeployBackend, ConfigureAi], Format::ImageRegistry, Required, "Images",
        "Registry and repository prefix of the service images, e.g. ghcr.io/maily"),
    var("IMAGE_TAG", &[DeployBackend, ConfigureAi, Verify], Format::ImageTag, Required, "Images",
        "Tag of the release being deployed; verify checks the new slot reports it"),
    var("ROLLOUT_TIMEOUT", &[DeployBackend, ConfigureAi], Format::Duration(duration::ROLLOUT_TIMEOUT), Default("10m"), "Images",
        "Longest wait for a rollout that is still progressing"),
    var("UNSCHEDULABLE_GRACE", &[DeployBackend, ConfigureAi, ShiftTraffic], Format::Duration(duration::UNSCHEDULABLE_GRACE), Default("30s"), "Images",
        "How long a new pod may wait for a node (PodScheduled=False, Unschedulable) before its rollout fails; raise it where a cluster autoscaler adds nodes"),
    var("IMAGE_PULL_GRACE", &[DeployBackend, ConfigureAi, ShiftTraffic], Format::Duration(duration::IMAGE_PULL_GRACE), Default("2m"), "Images",
        "How long after its creation a new pod whose image pulls fail for a passing cause (a registry timeout, a reset connection, a 5xx or 429) may keep retrying before its rollout fails; a pull refused for good (not found, denied) fails at once"),
    var("IMAGE_PINNING", &[DeployBackend, ConfigureAi], Format::Enum(&["on", "off"]), Default("on"), "Images",
        "on: every image is resolved to its digest before the first change and deployed by digest; off: deployed by tag (a registry this machine cannot reach)"),
    var("REGISTRY_AUTH_FILE", &[DeployBackend, ConfigureAi], Format::NonEmpty, Optional, "Images",
        "Registry logins (docker or podman format); unset means $DOCKER_CONFIG/config.json or ~/.docker/config.json"),
    var("REGISTRY_TIMEOUT", &[DeployBackend, ConfigureAi], Format::Duration(duration::REGISTRY_TIMEOUT), Default("30s"), "Images",
        "Longest wait for a registry to answer one image's tag"),
    var("IMAGE_SCAN", &[DeployBackend, ConfigureAi], Format::Enum(&["on", "off"]), Default("on"), "Images",
        "on: every pinned image is scanned by Trivy before the first change; off: not scanned (the report and the snapshot say so)"),
    var("IMAGE_SCAN_FAIL_ON", &[DeployBackend, ConfigureAi], Format::Enum(&["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]), Default("CRITICAL"), "Images",
        "Findings at or above this severity stop the run, unless allowlisted"),
    var("IMAGE_SCAN_TTL", &[DeployBackend, ConfigureAi], Format::Duration(duration::IMAGE_SCAN_TTL), Default("24h"), "Images",
        "A digest scanned clean by an earlier run of the environment is not scanned again within this"),
    var("IMAGE_SCAN_TIMEOUT", &[DeployBackend, ConfigureAi], Format::Duration(duration::IMAGE_SCAN_TIMEOUT), Default("10m"), "Images",
        "Longest a Trivy scan of one image (or its database download) may take"),
    var("IMAGE_SCAN_IGNORE_FILE", &[DeployBackend, ConfigureAi], Format::NonEmpty, Default(".maily-scan-ignore.yaml"), "Images",
        "The allowlist: findings shipped on purpose (CVE id, image pattern, reason, expiry date)"),
    var("TRIVY_BIN", &[DeployBackend, ConfigureAi], Format::NonEmpty, Default("trivy"), "Images",
        "Trivy executable"),
    // Infrastructure
    var("TERRAFORM_DIR", &[Provision], Format::NonEmpty, Default("infrastructure/terraform"), "Infrastructure",
        "Directory of the Terraform configuration"),
    var("TERRAFORM_BIN", &[Provision], Format::NonEmpty, Default("terraform"), "Infrastructure",
        "Terraform (or OpenTofu) executable"),
    var("TERRAFORM_PROVIDES", &[Provision], Format::NonEmpty, Optional, "Infrastructure",
        "Variables a terraform output fills, comma-separated (e.g. DATABASE_URL,REDIS_URL): not asked for when provision runs, required from it"),
    // Database
    secret("DATABASE_URL", &[Migrate, Verify], Format::PostgresUrl, Required, "Database",
        "PostgreSQL connection URL (Supabase: add ?sslmode=require)"),
    var("DATABASE_BACKUP_URL", &[Migrate], Format::BackupUrl, Required, "Database",
        "Where pre-migration backups go: s3://bucket/prefix/ or file:///dir/"),
    var("MIGRATIONS_DIR", &[Migrate], Format::NonEmpty, Default("migrations"), "Database",
        "Folder of sqlx migrations; the embedded copy is used when it is absent"),
    var("DATABASE_STATEMENT_TIMEOUT", &[Migrate], Format::Duration(duration::DATABASE_STATEMENT_TIMEOUT), Default("60s"), "Database",
        "Longest a single migration statement may run"),
    var("DATABASE_LOCK_TIMEOUT", &[Migrate], Format::Duration(duration::DATABASE_LOCK_TIMEOUT), Default("5s"), "Database",
        "Longest a migration may wait for a table lock before giving up"),
    // Cache and queue
    secret("REDIS_URL", &[Verify], Format::RedisUrl, Required, "Cache and queue",
        "Redis connection URL (rediss:// for TLS)"),
    secret("RABBITMQ_URL", &[Verify], Format::AmqpUrl, Required, "Cache and queue",
        "RabbitMQ connection URL (amqps:// for TLS)"),
    // Frontend
    secret("VERCEL_TOKEN", &[DeployFrontend], Format::NonEmpty, Required, "Frontend",
        "Vercel access token"),
    var("VERCEL_PROJECT_ID", &[DeployFrontend], Format::NonEmpty, Required, "Frontend",
        "Vercel project id of the Next.js frontend (prj_...)"),
    var("VERCEL_TEAM_ID", &[DeployFrontend], Format::NonEmpty, Optional, "Frontend",
        "Vercel team id when the project belongs to a team (team_...)"),
    var("VERCEL_API_URL", &[DeployFrontend], Format::HttpUrl, Default("https://api.vercel.com"), "Frontend",
        "Vercel REST API base URL"),
    var("FRONTEND_GIT_REPO", &[DeployFrontend], Format::GithubRepo, Required, "Frontend",
        "GitHub repository Vercel builds the frontend from: owner/name, or its numeric repository id"),
    var("FRONTEND_GIT_REF", &[DeployFrontend], Format::NonEmpty, Optional, "Frontend",
        "Git branch, tag or commit Vercel builds; unset means the IMAGE_TAG (tag the frontend like the images)"),
    var("VERCEL_POLL_INTERVAL", &[DeployFrontend], Format::Duration(duration::VERCEL_POLL_INTERVAL), Default("5s"), "Frontend",
        "How often the Vercel build's state is read while it builds"),
    var("VERCEL_BUILD_TIMEOUT", &[DeployFrontend], Format::Duration(duration::VERCEL_BUILD_TIMEOUT), Default("30m"), "Frontend",
        "Longest wait for the Vercel build to become READY"),
    // AI
    secret("OPENAI_API_KEY", &[ConfigureAi], Format::NonEmpty, Required, "AI providers",
        "OpenAI API key; needed only when the profile turns openai on (ai.providers)"),
    secret("ANTHROPIC_API_KEY", &[ConfigureAi], Format::NonEmpty, Required, "AI providers",
        "Anthropic API key; needed only when the profile turns anthropic on (ai.providers)"),
    secret("GOOGLE_API_KEY", &[ConfigureAi], Format::NonEmpty, Required, "AI providers",
        "Google Gemini API key; needed only when the profile turns google on (ai.providers)"),
    var("OPENAI_BASE_URL", &[ConfigureAi], Format::HttpUrl, Default("https://api.openai.com"), "AI providers",
        "OpenAI API base URL (a proxy's, if any)"),
    var("ANTHROPIC_BASE_URL", &[ConfigureAi], Format::HttpUrl, Default("https://api.anthropic.com"), "AI providers",
        "Anthropic API base URL (a proxy's, if any)"),
    var("GOOGLE_BASE_URL", &[ConfigureAi], Format::HttpUrl, Default("https://generativelanguage.googleapis.com"), "AI providers",
        "Google Gemini API base URL (a proxy's, if any)"),
    // Blockchain
    secret("ETHEREUM_RPC_URL", &[Verify], Format::HttpUrl, Required, "Blockchain",
        "Ethereum JSON-RPC endpoint (often carries an API key)"),
    secret("POLYGON_RPC_URL", &[Verify], Format::HttpUrl, Required, "Blockchain",
        "Polygon JSON-RPC endpoint (often carries an API key)"),
    var("ETHEREUM_CONTRACT_ADDRESS", &[Verify], Format::EthAddress, Required, "Blockchain",
        "Address of the email verification contract on Ethereum"),
    var("POLYGON_CONTRACT_ADDRESS", &[Verify], Format::EthAddress, Required, "Blockchain",
        "Address of the email verification contract on Polygon"),
    var("ETHEREUM_CHAIN_ID", &[Verify], Format::Integer { min: 1, max: i64::MAX }, Default("1"), "Blockchain",
        "Chain id the Ethereum endpoint must report"),
    var("POLYGON_CHAIN_ID", &[Verify], Format::Integer { min: 1, max: i64::MAX }, Default("137"), "Blockchain",
        "Chain id the Polygon endpoint must report"),
    secret("VERCEL_AUTOMATION_BYPASS_SECRET", &[Verify], Format::NonEmpty, Optional, "Verification",
        "Vercel's Protection Bypass for Automation secret: verify opens a protected preview with it (x-vercel-protection-bypass)"),
    var("VERIFY_BASE_URL", &[Verify], Format::HttpUrl, Optional, "Verification",
        "Gateway URL verify reaches the new slot through (https://<api domain> when unset)"),
    // Observability
    var("PROMETHEUS_URL", &[Monitor, ShiftTraffic], Format::HttpUrl, Required, "Observability",
        "Prometheus HTTP API base URL"),
    var("GRAFANA_URL", &[Monitor], Format::HttpUrl, Required, "Observability",
        "Grafana base URL"),
    secret("GRAFANA_API_TOKEN", &[Monitor], Format::NonEmpty, Required, "Observability",
        "Grafana service account token"),
    var("MONITOR_TARGETS_TIMEOUT", &[Monitor], Format::Duration(duration::MONITOR_TARGETS_TIMEOUT), Default("3m"), "Observability",
        "Longest wait for Prometheus to scrape the new slot's targets and find them up"),
    // Secrets
    var("VAULT_ADDR", &[], Format::HttpUrl, Optional, "Vault",
        "Vault address; required when any value is a vault:<path>#<key> reference"),
    var("VAULT_AUTH_METHOD", &[], Format::Enum(VAULT_AUTH_METHODS), Default("token"), "Vault",
        "How to log in to Vault: token or kubernetes"),
    secret("VAULT_TOKEN", &[], Format::NonEmpty, Optional, "Vault",
        "Vault token, for VAULT_AUTH_METHOD=token"),
    var("VAULT_ROLE", &[], Format::NonEmpty, Optional, "Vault",
        "Vault role, for VAULT_AUTH_METHOD=kubernetes"),
    var("VAULT_SERVICE_ACCOUNT_TOKEN_FILE", &[], Format::NonEmpty, Default("/var/run/secrets/kubernetes.io/serviceaccount/token"), "Vault",
        "The pod's service account token, sent to Vault's Kubernetes login with VAULT_ROLE"),
    var("VAULT_NAMESPACE", &[], Format::NonEmpty, Optional, "Vault",
        "Vault namespace (HCP Vault, Vault Enterprise), sent as X-Vault-Namespace with every request, the login too"),
    // Notifications
    secret("SLACK_WEBHOOK_URL", &[], Format::HttpUrl, Optional, "Notifications",
        "Slack incoming webhook for start, success, failure and rollback messages"),
];

/// The spec of a variable by name.
pub fn lookup(name: &str) -> Option<&'static VarSpec> {
    SPEC.iter().find(|v| v.name == name)
}

/// A duration variable's value, or its default when `value` is `None`,
/// checked against the rule its row names: the one way every duration
/// variable is read, so none is used at a unit its check did not ask for.
/// A name that is not a duration variable of the spec is
/// [`DurationError::NotADuration`] (a test reads every row).
pub fn duration_of(name: &str, value: Option<&str>) -> Result<Duration, DurationError> {
    let spec = lookup(name).ok_or(DurationError::NotADuration)?;
    let Format::Duration(rule) = spec.format else {
        return Err(DurationError::NotADuration);
    };
    match (value.filter(|v| !v.is_empty()), spec.need) {
        (Some(v), _) | (None, Need::Default(v)) => rule.parse(v),
        (None, _) => Err(DurationError::NotADuration),
    }
}

/// The known name closest to a mistyped one, for "did you mean" hints.
pub fn closest(name: &str) -> Option<&'static str> {
    SPEC.iter()
        // Names whose lengths differ by more than the distance allowed are
        // not close; skipping them keeps a megabyte-long name from costing
        // minutes of edit-distance work.
        .filter(|v| v.name.len().abs_diff(name.len()) <= 3)
        .map(|v| (strsim::levenshtein(v.name, name), v.name))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_shouting_snake_case() {
        let mut names: Vec<&str> = SPEC.iter().map(|v| v.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a variable is listed twice");
        for n in names {
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{n}"
            );
        }
    }

    #[test]
    fn defaults_pass_their_own_format() {
        for v in SPEC {
            if let Need::Default(d) = v.need {
                assert!(
                    v.format.check(d).is_ok(),
                    "{}'s default fails its format",
                    v.name
                );
            }
        }
    }

    #[test]
    fn the_names_operators_rely_on_are_all_here() {
        for name in [
            "IMAGE_REGISTRY",
            "IMAGE_TAG",
            "TERRAFORM_DIR",
            "TERRAFORM_BIN",
            "DATABASE_URL",
            "DATABASE_BACKUP_URL",
            "MIGRATIONS_DIR",
            "REDIS_URL",
            "RABBITMQ_URL",
            "VERCEL_TOKEN",
            "VERCEL_PROJECT_ID",
            "VERCEL_TEAM_ID",
            "VERCEL_API_URL",
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "GOOGLE_API_KEY",
            "ETHEREUM_RPC_URL",
            "POLYGON_RPC_URL",
            "PROMETHEUS_URL",
            "GRAFANA_URL",
            "GRAFANA_API_TOKEN",
            "VAULT_ADDR",
            "VAULT_TOKEN",
            "SLACK_WEBHOOK_URL",
        ] {
            assert!(lookup(name).is_some(), "{name} is missing from the spec");
        }
    }

    #[test]
    fn credentials_are_secrets() {
        for name in [
            "DATABASE_URL",
            "REDIS_URL",
            "RABBITMQ_URL",
            "VERCEL_TOKEN",
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "GOOGLE_API_KEY",
            "GRAFANA_API_TOKEN",
            "VAULT_TOKEN",
            "SLACK_WEBHOOK_URL",
            "ETHEREUM_RPC_URL",
            "POLYGON_RPC_URL",
        ] {
            assert!(lookup(name).unwrap().secret, "{name} must be a secret");
        }
    }

    #[test]
    fn every_duration_variable_is_read_at_its_rule_with_its_default() {
        let durations: Vec<&VarSpec> = SPEC
            .iter()
            .filter(|v| matches!(v.format, Format::Duration(_)))
            .collect();
        assert_eq!(durations.len(), 11);
        for v in durations {
            assert!(duration_of(v.name, None).is_ok(), "{}'s default", v.name);
        }
        assert_eq!(
            duration_of("DATABASE_LOCK_TIMEOUT", Some("500us")),
            Err(DurationError::TooShort(duration::DATABASE_LOCK_TIMEOUT))
        );
        assert_eq!(
            duration_of("ROLLOUT_TIMEOUT", Some("")),
            Ok(Duration::from_secs(600)),
            "empty is unset"
        );
        assert_eq!(
            duration_of("IMAGE_TAG", Some("5s")),
            Err(DurationError::NotADuration)
        );
    }

    /// The env template's format line, and a fix's "set X to ...", say
    /// the unit a duration is taken in and its least.
    #[test]
    fn a_duration_variable_is_described_by_its_unit_and_least() {
        let described = |name| lookup(name).unwrap().format.describe();
        assert_eq!(
            described("DATABASE_LOCK_TIMEOUT"),
            "duration in whole milliseconds, at least 1ms and at most 24 days"
        );
        assert_eq!(
            described("VERCEL_POLL_INTERVAL"),
            "duration in whole seconds, at least 1s"
        );
    }

    #[test]
    fn closest_suggests_a_typo_fix() {
        assert_eq!(closest("DATABSE_URL"), Some("DATABASE_URL"));
        assert_eq!(closest("SOMETHING_ELSE_ENTIRELY"), None);
    }
}
