//! Environment profiles: `manifests/environments/<env>.yaml`.
//!
//! A profile says what differs between environments: namespace, replicas,
//! domains, traffic steps, the services to deploy. Unknown fields are errors,
//! so a typo in a profile never silently falls back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::form::{Form, Parsed, Written};
use super::k8s_rules as rules;
use super::traffic::TrafficOf;
use crate::error::{Failure, Kind, Problem, fail};

/// A service's role in the slot model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// Serves HTTP behind the route; switching slots moves route weights.
    Http,
    /// Consumes RabbitMQ; no route, switching slots is a scale.
    Worker,
}

impl ServiceKind {
    /// The most replicas a service of this kind may run with: a profile's
    /// replicas are checked against it, and so are the replicas a
    /// carry-over copies from the cluster, which nobody validated.
    pub fn max_replicas(self) -> u64 {
        match self {
            ServiceKind::Http => MAX_HTTP_REPLICAS,
            ServiceKind::Worker => rules::MAX_INT32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub kind: ServiceKind,
    /// Replicas of this service; the profile's default when absent.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// An image to use instead of `${IMAGE_REGISTRY}/maily-<name>:${IMAGE_TAG}`.
    #[serde(default)]
    pub image: Option<String>,
    /// Path prefix of an http service on the API domain; `/<name>` when absent.
    #[serde(default)]
    pub path: Option<String>,
    /// An AI service: deployed by configure-ai (with the slot's AI config)
    /// instead of deploy-backend, into the same idle slot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ai: bool,
}

/// The Gateway API Gateway the routes attach to (cluster infrastructure,
/// provisioned outside this tool).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub name: String,
    pub namespace: String,
}

/// What verify checks beyond health: the queues the workers use and HTTP
/// checks of the new slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// RabbitMQ queues that must exist (declared passively).
    #[serde(default)]
    pub queues: Vec<String>,
    #[serde(default)]
    pub checks: Vec<HttpCheck>,
}

/// One HTTP check against the new slot, through the route's preview header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub name: String,
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    #[serde(default = "ok")]
    pub status: u16,
    /// JSON fields (dot paths) and the values they must have.
    #[serde(default)]
    pub json: BTreeMap<String, serde_json::Value>,
}

fn get() -> String {
    "GET".into()
}

fn ok() -> u16 {
    200
}

/// An environment's profile, in the form its traffic section's durations
/// and its AI section are held in ([`Written`] while it is checked,
/// [`Parsed`] once loaded).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(bound(
    deserialize = "F::Pause: Deserialize<'de>, F::Grace: Deserialize<'de>, F::Span: Deserialize<'de>, F::Ai: Deserialize<'de>"
))]
pub struct ProfileOf<F: Form = Parsed> {
    /// The Kubernetes namespace of the environment.
    pub namespace: String,
    /// Public host names, by role (`app`, `api`).
    pub domains: BTreeMap<String, String>,
    pub gateway: Gateway,
    /// Default replicas of a service.
    pub replicas: u32,
    pub traffic: TrafficOf<F>,
    /// The services to deploy, by name.
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub verify: Verify,
    /// The platform's own secrets: Kubernetes Secret name → key → Vault
    /// reference (`<path>#<key>`, `vault:` optional). deploy-backend reads
    /// them from Vault and applies them as Secrets in the namespace.
    #[serde(default)]
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// The AI configuration (providers, task models, fallback, limits),
    /// checked by `config::ai`; required when a service is `ai: true`.
    #[serde(default)]
    pub ai: Option<F::Ai>,
}

/// A loaded profile: checked, every value typed.
pub type Profile = ProfileOf<Parsed>;

impl Profile {
    /// The AI configuration; `None` without an `ai:` section.
    pub fn ai_config(&self) -> Option<&crate::config::ai::AiConfig> {
        self.ai.as_ref()
    }
}

impl<F: Form> ProfileOf<F> {
    /// Replicas of a service, falling back to the profile's default.
    pub fn replicas_of(&self, service: &str) -> u32 {
        self.services
            .get(service)
            .and_then(|s| s.replicas)
            .unwrap_or(self.replicas)
    }

    /// Whether a service is an AI service (configure-ai deploys it).
    pub fn is_ai(&self, service: &str) -> bool {
        self.services.get(service).is_some_and(|s| s.ai)
    }

    /// The services deploy-backend deploys: all but the AI ones.
    pub fn backend_services(&self) -> impl Iterator<Item = (&String, &Service)> {
        self.services.iter().filter(|(_, s)| !s.ai)
    }

    /// This profile without its AI services: what deploy-backend deploys.
    pub fn without_ai(&self) -> ProfileOf<F> {
        let mut p = self.clone();
        p.services.retain(|_, s| !s.ai);
        p
    }

    /// The AI services, which configure-ai deploys.
    pub fn ai_services(&self) -> impl Iterator<Item = (&String, &Service)> {
        self.services.iter().filter(|(_, s)| s.ai)
    }
}

impl ProfileOf<Written> {
    /// The profile typed, or every problem with its values (not just the
    /// first), in the order of its fields.
    pub fn check(self, file: &str) -> Result<Profile, Vec<Problem>> {
        let mut out = Vec::new();
        let ai = match &self.ai {
            Some(raw) => match crate::config::ai::parse(raw, file) {
                Ok(config) => Some(config),
                Err(problems) => {
                    out.extend(problems);
                    None
                }
            },
            None => {
                if let Some((name, _)) = self.ai_services().next() {
                    out.push(Problem {
                        phase: None,
                        subject: format!("{file}: services.{name}.ai"),
                        problem: "marks an AI service, but the profile has no ai: section".into(),
                        fix: "add the ai: section (providers, tasks, fallback)".into(),
                    });
                }
                None
            }
        };
        let mut bad = |field: &str, problem: String, fix: &str| {
            out.push(Problem {
                phase: None,
                subject: format!("{file}: {field}"),
                problem,
                fix: fix.into(),
            })
        };
        if let Err(why) = rules::dns1123_label(&self.namespace) {
            bad(
                "namespace",
                format!(
                    "{why}: a namespace name is a DNS-1123 label (lowercase letters, digits and -, at most 63)"
                ),
                "use a name such as maily-production",
            );
        } else if !rules::reads_as_text(&self.namespace) {
            bad(
                "namespace",
                format!(
                    "is {}, which Kubernetes accepts as a name but the manifests' YAML (namespace: ${{NAMESPACE}}) reads as a number, a bool or null",
                    self.namespace
                ),
                "use a name with letters in it, e.g. maily-production",
            );
        }
        if let Err(why) = rules::dns1123_subdomain(&self.gateway.name) {
            bad(
                "gateway.name",
                format!("{why}: a Gateway's name is a DNS-1123 subdomain"),
                "give the Gateway's name as kubectl get gateways -A shows it",
            );
        } else if !rules::reads_as_text(&self.gateway.name) {
            bad(
                "gateway.name",
                "is read by the manifests' YAML as a number, a bool or null, not a name".into(),
                "give the Gateway's name as kubectl get gateways -A shows it",
            );
        }
        if let Err(why) = rules::dns1123_label(&self.gateway.namespace) {
            bad(
                "gateway.namespace",
                format!("{why}: a namespace name is a DNS-1123 label"),
                "give the Gateway's namespace, e.g. gateway-system",
            );
        } else if !rules::reads_as_text(&self.gateway.namespace) {
            bad(
                "gateway.namespace",
                "is read by the manifests' YAML as a number, a bool or null, not a name".into(),
                "give the Gateway's namespace, e.g. gateway-system",
            );
        }
        if self.replicas == 0 {
            bad("replicas", "is 0".into(), "give at least 1");
        } else if u64::from(self.replicas) > MAX_HTTP_REPLICAS {
            bad(
                "replicas",
                replicas_past(self.replicas, MAX_HTTP_REPLICAS, true),
                "give the replicas a service really runs",
            );
        }
        let traffic = match self.traffic.clone().parse() {
            Ok(traffic) => Some(traffic),
            Err(problems) => {
                for p in problems {
                    bad(&p.field, p.problem, &p.fix);
                }
                None
            }
        };
        for (full_name, keys) in &self.secrets {
            let name = &*crate::error::clipped(full_name);
            if !is_dns_label(full_name) {
                bad(
                    &format!("secrets.{name}"),
                    "is not a valid Secret name (lowercase letters, digits and -, at most 63)"
                        .into(),
                    "rename it, e.g. maily-platform-secrets",
                );
            }
            if full_name == crate::db::daily_backup::SECRET {
                bad(
                    &format!("secrets.{name}"),
                    "is the Secret maily-deploy writes for the daily backup job (libpq's variables from maily-platform-secrets' DATABASE_URL)".into(),
                    "rename it; the backup job's Secret needs no entry here",
                );
            }
            for (key, reference) in keys {
                let shown = crate::error::clipped(key);
                if key.is_empty()
                    || key.len() > 253
                    || !key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                {
                    bad(
                        &format!("secrets.{name}.{shown}"),
                        "is not a valid Secret key (letters, digits, _ - ., at most 253)".into(),
                        "use the environment variable name the services read, e.g. DATABASE_URL",
                    );
                }
                if let Err(why) = crate::config::vault::parse_profile_ref(reference) {
                    let (problem, fix) = if looks_like_a_value(reference) {
                        (
                            "is not a Vault reference but what looks like a secret's value (not shown); the profile is committed with the code, so a value never belongs in it".to_string(),
                            "put the value in Vault, rotate it if this file was ever committed, and write where it is: <path>#<key>, e.g. secret/maily/production#database_url",
                        )
                    } else {
                        (
                            why.to_string(),
                            "write <path>#<key>, e.g. secret/maily/production#database_url",
                        )
                    };
                    bad(&format!("secrets.{name}.{shown}"), problem, fix);
                }
            }
        }
        if self.services.is_empty() {
            bad("services", "is empty".into(), "list the services to deploy");
        }
        for (name, svc) in &self.services {
            let full_name = name;
            let name = &*crate::error::clipped(name);
            let naming = rules::dns1035_label(full_name)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    if full_name.len() > MAX_SERVICE_NAME {
                        Err(format!(
                            "is {} characters long, over {MAX_SERVICE_NAME}",
                            full_name.len()
                        ))
                    } else if !rules::reads_as_text(full_name) {
                        Err("is read by the manifests' YAML as a bool or null, not a name".into())
                    } else {
                        Ok(())
                    }
                });
            if let Err(why) = naming {
                bad(
                    &format!("services.{name}"),
                    format!(
                        "{why}: a service's name becomes Kubernetes Service names (DNS-1035 labels: a lowercase letter first, then lowercase letters, digits and -), at most {MAX_SERVICE_NAME} characters so that -blue, -green and -metrics fit in 63"
                    ),
                    "rename the service, e.g. email-sender",
                );
            }
            if let Some(path) = &svc.path
                && let Err(why) = rules::route_path(path)
            {
                bad(
                    &format!("services.{name}.path"),
                    format!("{why}: it is the route's PathPrefix"),
                    "give a path prefix such as /webhooks",
                );
            }
            if let Some(image) = &svc.image
                && let Err(why) = image_reference(image)
            {
                bad(
                    &format!("services.{name}.image"),
                    format!("is not an image reference: {why}"),
                    "give registry/repository:tag, e.g. ghcr.io/maily/maily-api:v1.4.2",
                );
            }
            let limit = svc.kind.max_replicas();
            if let Some(n) = svc.replicas
                && u64::from(n) > limit
            {
                bad(
                    &format!("services.{name}.replicas"),
                    replicas_past(n, limit, svc.kind == ServiceKind::Http),
                    "give the replicas the service really runs",
                );
            }
            if svc.path.is_some() && svc.kind == ServiceKind::Worker {
                bad(
                    &format!("services.{name}.path"),
                    "is set on a worker, which has no route".into(),
                    "remove it, or make the service kind: http",
                );
            }
            if svc.replicas == Some(0) {
                bad(
                    &format!("services.{name}.replicas"),
                    "is 0".into(),
                    "give at least 1, or remove the service",
                );
            }
        }
        for role in ["api", "app"] {
            if !self.domains.contains_key(role) {
                bad(
                    &format!("domains.{role}"),
                    "is missing".into(),
                    "give the public host name, e.g. api.maily.ai",
                );
            }
        }
        for (role, host) in &self.domains {
            if let Err(why) = rules::hostname(host) {
                bad(
                    &format!("domains.{}", crate::error::clipped(role)),
                    format!(
                        "{why} (the route's hostnames take lowercase names, at most 253 characters)"
                    ),
                    "give the bare host, e.g. app.maily.app",
                );
            }
        }
        for (i, queue) in self.verify.queues.iter().enumerate() {
            if queue.is_empty() || queue.len() > 255 {
                bad(
                    &format!("verify.queues[{i}]"),
                    format!(
                        "is {} bytes long; a RabbitMQ queue name has 1 to 255",
                        queue.len()
                    ),
                    "give the queue's name as the workers declare it",
                );
            }
        }
        for (i, check) in self.verify.checks.iter().enumerate() {
            let field = format!(
                "verify.checks[{i}] ({})",
                crate::error::clipped(&check.name)
            );
            if !(100..=599).contains(&check.status) {
                bad(
                    &format!("{field}.status"),
                    format!("is {}, not an HTTP status (100 to 599)", check.status),
                    "give the status the check expects, e.g. 200",
                );
            }
            if check.method.is_empty() || !check.method.bytes().all(|b| b.is_ascii_uppercase()) {
                bad(
                    &format!("{field}.method"),
                    "is not an HTTP method".into(),
                    "give GET, HEAD or POST",
                );
            }
            if !check.path.starts_with('/') || check.path.contains(char::is_whitespace) {
                bad(
                    &format!("{field}.path"),
                    "is not a URL path".into(),
                    "start it with /, e.g. /api/v1/version",
                );
            }
        }
        match traffic {
            Some(traffic) if out.is_empty() => Ok(ProfileOf {
                namespace: self.namespace,
                domains: self.domains,
                gateway: self.gateway,
                replicas: self.replicas,
                traffic,
                services: self.services,
                verify: self.verify,
                secrets: self.secrets,
                ai,
            }),
            _ => Err(out),
        }
    }
}

/// The most replicas an http service may have: its HorizontalPodAutoscaler
/// scales to three times them (`maxReplicas`), an int32.
pub const MAX_HTTP_REPLICAS: u64 = rules::MAX_INT32 / 3;

/// The longest service name: the objects named after it (`<name>-green`,
/// `<name>-metrics`) must fit a DNS-1035 label's 63 characters.
pub const MAX_SERVICE_NAME: usize = 40;

fn replicas_past(n: u32, limit: u64, http: bool) -> String {
    format!("is {n}, {}", over_replica_limit(limit, http))
}

/// Why replicas past `limit` cannot run, as the end of a sentence that
/// names them.
pub fn over_replica_limit(limit: u64, http: bool) -> String {
    if http {
        format!(
            "over {limit}: the HorizontalPodAutoscaler scales an http service to three times its replicas, and its maxReplicas is an int32 (at most {})",
            rules::MAX_INT32
        )
    } else {
        format!("over {limit}, the most a Deployment's replicas (an int32) can hold")
    }
}

/// What is wrong with an environment's name where it ends up: the
/// `maily.ai/environment` label, the deployment ids
/// (`<environment>-YYYYMMDD-HHMMSS`, also a label value, at most 63), the
/// deployer's ClusterRole name.
pub fn environment_problems(environment: &str, file: &str) -> Vec<Problem> {
    let longest = 63 - "-YYYYMMDD-HHMMSS".len();
    let why = if let Err(why) = rules::dns1123_label(environment) {
        Some(why.to_string())
    } else if environment.len() > longest {
        Some(format!(
            "is {} characters long, over {longest}: a deployment id (<environment>-YYYYMMDD-HHMMSS) is a label value of at most 63",
            environment.len()
        ))
    } else if !rules::reads_as_text(environment) {
        Some("is read by the manifests' YAML as a number, a bool or null, not a name".into())
    } else {
        None
    };
    why.map(|why| Problem {
        phase: None,
        subject: format!("{file}: the environment name"),
        problem: format!(
            "{why}: the environment's name (the profile's file name) is a DNS-1123 label of at most {longest} characters"
        ),
        fix: "rename the profile, e.g. environments/staging.yaml".into(),
    })
    .into_iter()
    .collect()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The environments with a profile in `manifests_dir`, sorted.
pub fn known_environments(manifests_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(manifests_dir.join("environments"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            // A directory or a FIFO named `<env>.yaml` is no profile.
            (path.extension()? == "yaml" && path.is_file())
                .then(|| path.file_stem()?.to_str().map(String::from))
                .flatten()
        })
        .collect();
    names.sort();
    names
}

/// The path of an environment's profile.
pub fn path_of(manifests_dir: &Path, environment: &str) -> PathBuf {
    manifests_dir
        .join("environments")
        .join(format!("{environment}.yaml"))
}

/// Load and check an environment's profile.
pub fn load(manifests_dir: &Path, environment: &str) -> anyhow::Result<Profile> {
    if !manifests_dir.join("environments").is_dir() {
        return Err(fail(
            Kind::Config,
            format!(
                "no environment profiles at {}; run maily-deploy from the repository root, or pass --manifests-dir",
                manifests_dir.join("environments").display()
            ),
        ));
    }
    let path = path_of(manifests_dir, environment);
    if !path.is_file() {
        let known = known_environments(manifests_dir);
        let close = known
            .iter()
            .find(|k| strsim::levenshtein(k, environment) <= 2)
            .map(|k| format!(" (did you mean {k}?)"))
            .unwrap_or_default();
        return Err(fail(
            Kind::Config,
            format!(
                "unknown environment `{}`{close}; known environments: {}; add {} to define a new one",
                crate::error::clipped(environment),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
                crate::error::clipped(&path.display().to_string())
            ),
        ));
    }
    let text = super::read_text(&path, "profile")?;
    parse(&text, environment, &path.display().to_string())
}

/// Check a profile's text for `environment`; `file` names it in messages.
/// A profile whose fields are wrong gets every such problem at once, by
/// path; one that is not YAML gets the parser's words and place.
pub fn parse(text: &str, environment: &str, file: &str) -> anyhow::Result<Profile> {
    // Where the parser stopped first, for a profile whose fields are wrong.
    let mut first_at = String::new();
    let checked = match serde_saphyr::from_str::<ProfileOf<Written>>(text) {
        Ok(written) => written.check(file),
        Err(e) => {
            let shape = shape_problems(text, file);
            if shape.is_empty() {
                return Err(does_not_parse(&e, file));
            }
            first_at = crate::error::yaml_error(&e)
                .lines()
                .find_map(|l| l.trim().strip_prefix("--> "))
                .map(|at| format!(" (the first at {})", at.replace("<input>", file)))
                .unwrap_or_default();
            Err(shape)
        }
    };
    let mut problems = environment_problems(environment, file);
    match checked {
        Ok(profile) if problems.is_empty() => Ok(profile),
        checked => {
            problems.extend(checked.err().unwrap_or_default());
            Err(Failure::with_problems(
                Kind::Config,
                format!("the profile {file} has problems{first_at}"),
                problems,
            )
            .into())
        }
    }
}

/// Whether what stands where a Vault reference belongs is rather a value:
/// a URL (`postgres://...`), or a word with neither a path's `/` nor a
/// key's `#` (`sk-live-...`). A reference's path always has a `/`.
fn looks_like_a_value(reference: &str) -> bool {
    let bare = reference.strip_prefix("vault:").unwrap_or(reference);
    bare.contains("://") || !(bare.contains('/') || bare.contains('#'))
}

/// Whether an image reference is one a registry and the kubelet take,
/// by the distribution grammar (`[host[:port]/]path[:tag][@digest]`, the
/// same parser the pinning step resolves it with): a typo such as
/// `ghcr.io/maily/api:v1:v2` or a URL with credentials is refused here,
/// not met as ErrImagePull halfway through a rollout.
fn image_reference(image: &str) -> Result<(), String> {
    if image.contains(char::is_whitespace) || !rules::reads_as_text(image) {
        return Err(
            "it has white space or control characters (the manifests write it unquoted)".into(),
        );
    }
    if image.contains("://") {
        return Err("it is a URL; an image reference has no scheme".into());
    }
    image
        .parse::<oci_client::Reference>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The parser's error for a profile that is not YAML, or whose fields
/// [`shape_problems`] could not place: its words and the lines around the
/// place, each clipped.
fn does_not_parse(e: &serde_saphyr::Error, file: &str) -> anyhow::Error {
    // The parser knows no file name: it says `<input>`.
    let why = crate::error::clipped_lines(&crate::error::yaml_error(e).replace("<input>", file));
    fail(
        Kind::Config,
        format!("the profile {file} does not parse: {why}"),
    )
}

/// Every unknown field, wrong type and missing field of a profile that is
/// YAML, as problems naming their paths; empty when the text is not YAML.
fn shape_problems(text: &str, file: &str) -> Vec<Problem> {
    let Ok(doc) = serde_saphyr::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    super::shape::problems::<ProfileOf<Written>>(doc)
        .into_iter()
        .map(|p| {
            let fix = match &p.did_you_mean {
                Some(name) => format!("did you mean `{name}`?"),
                None if p.problem.starts_with("unknown field") => {
                    "remove it, or use one of the fields listed".to_string()
                }
                None if p.problem.starts_with("unknown variant") => {
                    "use one of the values listed".to_string()
                }
                None if p.problem.starts_with("missing field") => {
                    "add it; manifests/environments/production.yaml shows every field".to_string()
                }
                None => match p.problem.rsplit_once(", expected ") {
                    Some((_, kind)) => format!("write {kind} there"),
                    None => "give it a value of the kind named".to_string(),
                },
            };
            let problem = if p.problem.len() > 300 {
                let head: String = p.problem.chars().take(200).collect();
                format!("{head}… ({} bytes)", p.problem.len())
            } else {
                p.problem
            };
            Problem {
                phase: None,
                subject: if p.path.is_empty() {
                    file.to_string()
                } else {
                    format!("{file}: {}", p.path)
                },
                problem,
                fix,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests")
    }

    #[test]
    fn only_regular_files_are_known_environments() {
        let dir = tempfile::tempdir().unwrap();
        let envs = dir.path().join("environments");
        std::fs::create_dir_all(envs.join("staging.yaml")).unwrap();
        std::fs::write(envs.join("production.yaml"), "namespace: x\n").unwrap();
        std::fs::write(envs.join("notes.txt"), "").unwrap();
        assert_eq!(known_environments(dir.path()), vec!["production"]);
    }

    #[test]
    fn a_parser_error_is_said_in_a_users_words() {
        let shipped = std::fs::read_to_string(shipped().join("environments/staging.yaml")).unwrap();
        let twice = format!("{shipped}\nnamespace: again\n");
        let err = parse(&twice, "staging", "staging.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("duplicate mapping key `namespace` is not allowed here"),
            "{err}"
        );
        assert!(!err.contains("DuplicateKeyPolicy"), "{err}");
    }

    #[test]
    fn an_image_is_checked_by_the_registry_grammar() {
        for good in [
            "ghcr.io/maily/maily-api:v1.4.2",
            "localhost:5000/maily-api",
            "maily-api",
            "ghcr.io/maily/maily-api@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(image_reference(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "ghcr.io/maily/maily-api:v1:v2",
            "HTTPS://Reg/Foo:Bar:Baz@@",
            "https://bob:hunter2secret@reg.example/x:y",
            "ghcr.io/maily/maily api:v1",
            "ghcr.io/Maily/API:v1",
        ] {
            let why = image_reference(bad).expect_err(bad);
            assert!(!why.contains("hunter2secret"), "{why}");
        }
    }

    #[test]
    fn production_and_staging_ship_and_load() {
        assert_eq!(
            known_environments(&shipped()),
            vec!["production", "staging"]
        );
        for env in ["production", "staging"] {
            let p = load(&shipped(), env).unwrap();
            assert_eq!(p.namespace, format!("maily-{env}"));
            for svc in [
                "api",
                "campaigns",
                "email-sender",
                "analytics",
                "blockchain-verifier",
                "workers",
            ] {
                assert!(p.services.contains_key(svc), "{env} lacks {svc}");
            }
            assert_eq!(p.services["workers"].kind, ServiceKind::Worker);
            assert_eq!(p.traffic.steps.last(), Some(&100));
        }
    }

    #[test]
    fn an_unknown_environment_lists_the_known_ones() {
        let err = load(&shipped(), "prod").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown environment `prod`"), "{msg}");
        assert!(msg.contains("production, staging"), "{msg}");
        assert_eq!(crate::error::kind_of(&err), Some(Kind::Config));
        let err = load(&shipped(), "stagin").unwrap_err();
        assert!(err.to_string().contains("did you mean staging?"));
    }

    #[test]
    fn every_problem_in_a_profile_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("environments")).unwrap();
        std::fs::write(
            dir.path().join("environments/broken.yaml"),
            "namespace: Maily_Prod\ndomains: {app: 'https://app.example.com'}\ngateway: {name: g, namespace: gw}\nreplicas: 0\ntraffic: {steps: [50, 25], pause: soon}\nservices:\n  api: {kind: http, replicas: 0}\n  workers: {kind: worker, path: /w}\n",
        )
        .unwrap();
        let err = load(dir.path(), "broken").unwrap_err();
        let failure = crate::error::failure_of(&err).unwrap();
        let fields: Vec<String> = failure
            .problems
            .iter()
            .map(|p| p.subject.rsplit(": ").next().unwrap().to_string())
            .collect();
        assert_eq!(
            fields,
            vec![
                "namespace",
                "replicas",
                "traffic.steps",
                "traffic.steps",
                "traffic.pause",
                "services.api.replicas",
                "services.workers.path",
                "domains.api",
                "domains.app"
            ]
        );
    }

    #[test]
    fn every_value_past_its_kubernetes_field_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("environments")).unwrap();
        std::fs::write(
            dir.path().join("environments/limits.yaml"),
            format!(
                "namespace: 12345\n\
                 domains: {{api: API.example.com, app: app.example.com}}\n\
                 gateway: {{name: Public_GW, namespace: {long}}}\n\
                 replicas: 2147483648\n\
                 traffic: {{steps: [100], pause: 100000000000s, grace: 3000y}}\n\
                 services:\n\
                 \x20 9api: {{kind: http}}\n\
                 \x20 api: {{kind: http, replicas: 715827883, path: /a//b}}\n\
                 \x20 workers: {{kind: worker, replicas: 2147483647}}\n\
                 \x20 {huge}: {{kind: worker}}\n\
                 verify: {{checks: [{{name: v, path: /v, status: 42}}]}}\n",
                long = "g".repeat(64),
                huge = "s".repeat(1000),
            ),
        )
        .unwrap();
        let err = load(dir.path(), "limits").unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Some(Kind::Config));
        let failure = crate::error::failure_of(&err).unwrap();
        let fields: Vec<String> = failure
            .problems
            .iter()
            .map(|p| p.subject.rsplit(": ").next().unwrap().to_string())
            .collect();
        assert_eq!(
            fields,
            vec![
                "namespace",
                "gateway.name",
                "gateway.namespace",
                "replicas",
                "traffic.pause",
                "traffic.grace",
                "services.9api",
                "services.api.path",
                "services.api.replicas",
                &format!("services.{}… (1000 bytes)", "s".repeat(32)),
                "domains.api",
                "verify.checks[0] (v).status",
            ],
            "{:#?}",
            failure.problems
        );
        let about = |field: &str| {
            failure
                .problems
                .iter()
                .find(|p| p.subject.ends_with(field))
                .unwrap()
                .problem
                .clone()
        };
        assert!(about(": namespace").contains("reads as a number"));
        assert!(about(": replicas").contains("int32"));
        assert!(about("services.api.replicas").contains("maxReplicas"));
        assert!(about("services.9api").contains("DNS-1035"));
        assert!(about("traffic.pause").contains("int32"));
        let text = format!("{:?}", failure.problems);
        assert!(
            !text.contains(&"s".repeat(100)),
            "a long name is not echoed whole"
        );
    }

    #[test]
    fn an_environment_name_must_fit_the_labels_it_ends_up_in() {
        assert!(environment_problems("production", "f").is_empty());
        let long = "e".repeat(48);
        assert!(
            environment_problems(&long, "f")[0]
                .problem
                .contains("over 47")
        );
        assert!(!environment_problems("Prod", "f").is_empty());
        assert!(!environment_problems("2024", "f").is_empty());
    }

    #[test]
    fn a_typo_in_a_field_name_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("environments")).unwrap();
        std::fs::write(
            dir.path().join("environments/x.yaml"),
            "namespace: x\nreplica: 3\ndomains: {}\ngateway: {name: g, namespace: gw}\nreplicas: 1\ntraffic: {steps: [100], pause: 1m}\nservices: {api: {kind: http}}\n",
        )
        .unwrap();
        let err = load(dir.path(), "x").unwrap_err();
        let failure = err.downcast_ref::<Failure>().expect("a typed failure");
        assert!(
            failure.problems[0].subject.ends_with("x.yaml: replica"),
            "{:?}",
            failure.problems
        );
        assert_eq!(failure.problems[0].fix, "did you mean `replicas`?");
    }

    #[test]
    fn every_wrong_field_of_a_profile_is_named_at_once() {
        let text = "namespace: x\nreplica: 3\ndomains: {}\ngateway: {name: g, namespace: gw}\nreplicas: 1\ntraffic: {steps: [100], pause: 1m}\nservices:\n  api: {kind: http, path: /api}\n  campaigns: {kind: htp}\n  workers: {knd: worker}\nverify:\n  checks:\n    - {name: a, path: /a, status: 99999}\n";
        let err = parse(text, "staging", "staging.yaml").unwrap_err();
        let failure = err.downcast_ref::<Failure>().expect("a typed failure");
        let got: Vec<(&str, &str, &str)> = failure
            .problems
            .iter()
            .map(|p| (p.subject.as_str(), p.problem.as_str(), p.fix.as_str()))
            .collect();
        let subjects: Vec<&str> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            subjects,
            vec![
                "staging.yaml: replica",
                "staging.yaml: services.campaigns.kind",
                "staging.yaml: services.workers.knd",
                "staging.yaml: services.workers.kind",
                "staging.yaml: verify.checks[0].status",
            ],
            "{got:#?}"
        );
        assert_eq!(got[0].2, "did you mean `replicas`?");
        assert!(got[1].1.contains("unknown variant `htp`"), "{got:?}");
        assert_eq!(got[1].2, "use one of the values listed");
        assert_eq!(got[2].2, "did you mean `kind`?");
        assert_eq!(got[3].1, "missing field `kind`");
        assert!(got[4].1.contains("99999"), "{got:?}");

        // Not YAML at all: the parser's words and place.
        let err = parse("namespace: [x\n", "staging", "staging.yaml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the profile staging.yaml does not parse"),
            "{err}"
        );
    }

    #[test]
    fn a_secrets_value_written_in_the_profile_is_called_one_never_shown() {
        let base = std::fs::read_to_string(shipped().join("environments/staging.yaml")).unwrap();
        for value in [
            "sk-live-0123456789abcdefABCDEF",
            "postgres://maily:hunter2secret@db/maily",
        ] {
            let text = format!(
                "{base}secrets:\n  maily-platform-secrets:\n    OPENAI_API_KEY: \"{value}\"\n"
            );
            let err = parse(&text, "staging", "staging.yaml").unwrap_err();
            let problems = &crate::error::failure_of(&err).unwrap().problems;
            let said = format!("{problems:?}");
            assert!(said.contains("looks like a secret's value"), "{said}");
            assert!(said.contains("rotate it"), "{said}");
            assert!(
                !said.contains("0123456789abcdef") && !said.contains("hunter2"),
                "{said}"
            );
        }
    }

    #[test]
    fn platform_secrets_are_references_checked_for_form() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("environments")).unwrap();
        let base = "namespace: x\ndomains: {api: api.example.com, app: app.example.com}\ngateway: {name: g, namespace: gw}\nreplicas: 1\ntraffic: {steps: [100], pause: 1m}\nservices: {api: {kind: http}}\n";
        std::fs::write(
            dir.path().join("environments/good.yaml"),
            format!("{base}secrets:\n  maily-platform-secrets:\n    DATABASE_URL: secret/maily/x#database_url\n    OPENAI_API_KEY: vault:secret/maily/x#openai\n"),
        )
        .unwrap();
        let good = load(dir.path(), "good").unwrap();
        assert_eq!(good.secrets["maily-platform-secrets"].len(), 2);
        std::fs::write(
            dir.path().join("environments/bad.yaml"),
            format!("{base}secrets:\n  Platform_Secrets:\n    DATABASE_URL: secret/maily/x\n"),
        )
        .unwrap();
        let err = load(dir.path(), "bad").unwrap_err();
        let failure = crate::error::failure_of(&err).unwrap();
        let subjects: Vec<&str> = failure
            .problems
            .iter()
            .map(|p| p.subject.as_str())
            .collect();
        assert!(
            subjects
                .iter()
                .any(|s| s.ends_with("secrets.Platform_Secrets")),
            "{subjects:?}"
        );
        assert!(
            failure
                .problems
                .iter()
                .any(|p| p.problem.contains("without #<key>")),
            "{:?}",
            failure.problems
        );
        std::fs::write(
            dir.path().join("environments/taken.yaml"),
            format!(
                "{base}secrets:\n  maily-database-backup:\n    PGPASSWORD: secret/maily/x#pw\n"
            ),
        )
        .unwrap();
        let err = load(dir.path(), "taken").unwrap_err();
        let failure = crate::error::failure_of(&err).unwrap();
        assert!(
            failure
                .problems
                .iter()
                .any(|p| p.subject.ends_with("secrets.maily-database-backup")
                    && p.problem.contains("daily backup job")),
            "{:?}",
            failure.problems
        );
    }

    #[test]
    fn a_profile_that_does_not_parse_is_pointed_at_by_its_file_name() {
        let err = parse("namespce: x\n", "x", "manifests/environments/x.yaml").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("manifests/environments/x.yaml:1:1"), "{text}");
        assert!(!text.contains("<input>"), "{text}");
    }
}
