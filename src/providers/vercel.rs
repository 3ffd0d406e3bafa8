//! The Vercel REST API, as far as deploy-frontend, shift-traffic and
//! rollback need it: read the project, create a production deployment from
//! a git ref, follow it to READY, read its build log, promote a deployment.
//!
//! Endpoints, from Vercel's REST API reference (vercel.com/docs/rest-api):
//!
//! | call | endpoint |
//! |---|---|
//! | read the project | `GET /v9/projects/{idOrName}` |
//! | create a deployment | `POST /v13/deployments` |
//! | read a deployment | `GET /v13/deployments/{idOrUrl}` |
//! | build log | `GET /v3/deployments/{idOrUrl}/events` |
//! | promote | `POST /v10/projects/{projectId}/promote/{deploymentId}` |
//!
//! Every call carries `Authorization: Bearer <token>` and, for a team's
//! project, the `teamId` query parameter. A 429 is waited out until its
//! `X-RateLimit-Reset` (UTC epoch seconds), capped; a 5xx or a connection
//! failure is retried with exponential backoff.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::error::{Kind, fail};

/// Vercel's API, when `VERCEL_API_URL` does not say otherwise.
pub const DEFAULT_API_URL: &str = "https://api.vercel.com";

/// The longest a 429 is waited out, whatever its reset header says: a
/// deploy should fail with a message rather than sit silent for an hour.
pub const RATE_LIMIT_CAP: Duration = Duration::from_secs(60);

/// How many 429s in a row one call waits out before giving up.
const RATE_LIMIT_WAITS: usize = 5;

/// The longest wait for a promotion Vercel accepted to take effect (the
/// `vercel promote` default).
pub const PROMOTION_TIMEOUT: Duration = Duration::from_secs(180);

/// How many log lines a failed build's error quotes.
pub const LOG_TAIL: usize = 20;

/// Where and as whom to call the API.
#[derive(Clone)]
pub struct Settings {
    pub api_url: String,
    pub token: String,
    pub team_id: Option<String>,
}

/// A client of the Vercel REST API.
#[derive(Clone)]
pub struct Vercel {
    http: reqwest::Client,
    base: String,
    token: String,
    team_id: Option<String>,
    backoff: ExponentialBuilder,
    rate_limit_cap: Duration,
}

impl std::fmt::Debug for Vercel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Vercel")
            .field("base", &self.base)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

/// A project, as `GET /v9/projects/{idOrName}` returns it (the fields used).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: String,
    pub name: String,
    /// The project setting "Auto-assign Custom Production Domains": when it
    /// is on (Vercel's default), every new production deployment takes the
    /// production domains as soon as it is ready.
    #[serde(default)]
    pub auto_assign_custom_domains: Option<bool>,
    /// The deployment each target serves; `production` is what users see.
    #[serde(default)]
    pub targets: BTreeMap<String, Option<TargetDeployment>>,
}

impl Project {
    /// The deployment the production domains point at, if any.
    pub fn production(&self) -> Option<&TargetDeployment> {
        self.targets.get("production").and_then(Option::as_ref)
    }

    /// Whether a new production deployment would take the domains by
    /// itself. Unset means Vercel's default, which is on.
    pub fn assigns_domains_on_deploy(&self) -> bool {
        self.auto_assign_custom_domains != Some(false)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetDeployment {
    pub id: String,
    #[serde(default)]
    pub url: Option<String>,
}

/// The GitHub repository Vercel builds from: `gitSource` takes either the
/// numeric repository id or the owner and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRepo {
    Id(String),
    OrgRepo { org: String, repo: String },
}

impl GitRepo {
    /// `owner/name` or a numeric GitHub repository id.
    pub fn parse(text: &str) -> Result<GitRepo, String> {
        let text = text.trim();
        if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
            return Ok(GitRepo::Id(text.to_string()));
        }
        match text.split_once('/') {
            Some((org, repo)) if !org.is_empty() && !repo.is_empty() && !repo.contains('/') => {
                Ok(GitRepo::OrgRepo {
                    org: org.to_string(),
                    repo: repo.to_string(),
                })
            }
            _ => Err(format!(
                "`{text}` is neither owner/name (maily/maily-frontend) nor a numeric GitHub repository id"
            )),
        }
    }
}

impl std::fmt::Display for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitRepo::Id(id) => write!(f, "GitHub repository {id}"),
            GitRepo::OrgRepo { org, repo } => write!(f, "{org}/{repo}"),
        }
    }
}

/// `gitSource` of `POST /v13/deployments`, GitHub flavour: `{type:
/// "github", ref, repoId}` or `{type: "github", ref, org, repo}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "ref")]
    pub git_ref: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
}

impl GitSource {
    pub fn github(repo: &GitRepo, git_ref: &str) -> GitSource {
        let (repo_id, org, name) = match repo {
            GitRepo::Id(id) => (Some(id.clone()), None, None),
            GitRepo::OrgRepo { org, repo } => (None, Some(org.clone()), Some(repo.clone())),
        };
        GitSource {
            kind: "github",
            git_ref: git_ref.to_string(),
            repo_id,
            org,
            repo: name,
        }
    }
}

/// The body of `POST /v13/deployments` for a production build of a git ref.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateDeployment {
    /// Required by the API; the project's name.
    pub name: String,
    /// The project id; "overrides name" in Vercel's words.
    pub project: String,
    /// Always `production`: built with the production environment
    /// variables, so the promotion later serves exactly what was built.
    pub target: &'static str,
    pub git_source: GitSource,
    /// `false`: do not give this deployment the custom production domains.
    /// The deployment object documents the field ("applies to custom domains
    /// only, defaults to true"); the create reference does not list it, so
    /// deploy-frontend also requires the project setting to be off.
    pub auto_assign_custom_domains: bool,
    /// Where the deployment came from, shown in Vercel's dashboard.
    pub meta: BTreeMap<String, String>,
}

/// A deployment, as `POST /v13/deployments` and `GET /v13/deployments/{id}`
/// return it (the fields used). Its id comes as `id`, `uid`, or both (the
/// v13 answers carry both, equal).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", try_from = "RawDeployment")]
pub struct Deployment {
    pub id: String,
    #[serde(default)]
    pub url: Option<String>,
    /// QUEUED, INITIALIZING, BUILDING, READY, ERROR or CANCELED.
    #[serde(default)]
    pub ready_state: Option<String>,
    /// The same states, in newer responses.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDeployment {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    ready_state: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
}

impl TryFrom<RawDeployment> for Deployment {
    type Error = &'static str;

    fn try_from(r: RawDeployment) -> Result<Self, Self::Error> {
        Ok(Deployment {
            id: r
                .id
                .or(r.uid)
                .ok_or("a deployment without an id (neither `id` nor `uid`)")?,
            url: r.url,
            ready_state: r.ready_state,
            status: r.status,
            error_code: r.error_code,
            error_message: r.error_message,
        })
    }
}

/// Where a deployment's build is (`readyState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyState {
    Queued,
    Initializing,
    Building,
    Ready,
    Error,
    Canceled,
    /// A state this version does not know; treated as still in progress.
    Other(String),
}

impl ReadyState {
    pub fn parse(text: &str) -> ReadyState {
        match text.to_ascii_uppercase().as_str() {
            "QUEUED" => ReadyState::Queued,
            "INITIALIZING" => ReadyState::Initializing,
            "BUILDING" => ReadyState::Building,
            "READY" => ReadyState::Ready,
            "ERROR" => ReadyState::Error,
            "CANCELED" | "CANCELLED" => ReadyState::Canceled,
            _ => ReadyState::Other(text.to_string()),
        }
    }
}

impl std::fmt::Display for ReadyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ReadyState::Queued => "QUEUED",
            ReadyState::Initializing => "INITIALIZING",
            ReadyState::Building => "BUILDING",
            ReadyState::Ready => "READY",
            ReadyState::Error => "ERROR",
            ReadyState::Canceled => "CANCELED",
            ReadyState::Other(s) => s,
        };
        f.write_str(s)
    }
}

/// What a deployment's state means for whoever waits on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still queued or building.
    Pending(ReadyState),
    Ready,
    /// ERROR or CANCELED, with Vercel's reason.
    Failed {
        state: ReadyState,
        reason: String,
    },
}

/// Decide from a deployment object whether its build is done, and how.
pub fn progress(d: &Deployment) -> Progress {
    let state = d
        .ready_state
        .as_deref()
        .or(d.status.as_deref())
        .map(ReadyState::parse)
        .unwrap_or(ReadyState::Queued);
    match state {
        ReadyState::Ready => Progress::Ready,
        ReadyState::Error | ReadyState::Canceled => {
            let reason = match (&d.error_code, &d.error_message) {
                (Some(code), Some(msg)) => format!("{msg} ({code})"),
                (None, Some(msg)) => msg.clone(),
                (Some(code), None) => code.clone(),
                (None, None) if state == ReadyState::Canceled => "the build was canceled".into(),
                (None, None) => "Vercel gave no error message".into(),
            };
            Progress::Failed { state, reason }
        }
        other => Progress::Pending(other),
    }
}

/// The lines of a build log, oldest first, from the events
/// `GET /v3/deployments/{id}/events` returns: each event's `text` (older
/// responses) or `payload.text`, ordered by `created` (or `payload.date`).
pub fn log_lines(events: &serde_json::Value) -> Vec<String> {
    let Some(items) = events.as_array() else {
        return Vec::new();
    };
    let mut lines: Vec<(i64, usize, String)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let text = e
                .get("text")
                .or_else(|| e.pointer("/payload/text"))
                .and_then(|t| t.as_str())?;
            let at = e
                .get("created")
                .or_else(|| e.pointer("/payload/date"))
                .and_then(|t| t.as_i64())
                .unwrap_or(0);
            Some((at, i, text.trim_end().to_string()))
        })
        .filter(|(_, _, t)| !t.is_empty())
        .collect();
    lines.sort_by_key(|(at, i, _)| (*at, *i));
    lines.into_iter().map(|(_, _, t)| t).collect()
}

/// How long to wait out a 429: until `X-RateLimit-Reset` (UTC epoch
/// seconds), never more than `cap`; `None` when the header is absent or
/// unreadable (then the call backs off like after a 5xx). The bool says
/// whether the cap cut the wait short.
pub fn rate_limit_wait(
    reset: Option<&str>,
    now: SystemTime,
    cap: Duration,
) -> Option<(Duration, bool)> {
    let reset: u64 = reset?.trim().parse().ok()?;
    let now = now.duration_since(UNIX_EPOCH).ok()?;
    let wait = Duration::from_secs(reset)
        .saturating_sub(now)
        // The reset is whole seconds: a little margin past it.
        .max(Duration::from_millis(100));
    Some(if wait > cap {
        (cap, true)
    } else {
        (wait, false)
    })
}

/// Vercel's error body: `{"error": {"code", "message"}}`.
fn error_text(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let code = err.and_then(|e| e.get("code")).and_then(|c| c.as_str());
    let message = err.and_then(|e| e.get("message")).and_then(|c| c.as_str());
    match (code, message) {
        (Some(c), Some(m)) => format!("{m} ({c})"),
        (None, Some(m)) => m.to_string(),
        (Some(c), None) => c.to_string(),
        (None, None) => {
            let t = body.trim();
            if t.chars().count() > 300 {
                format!("{}…", t.chars().take(300).collect::<String>())
            } else {
                t.to_string()
            }
        }
    }
}

fn hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "; check VERCEL_TOKEN",
        403 => {
            "; check that VERCEL_TOKEN may act on the project, and VERCEL_TEAM_ID for a team's project"
        }
        404 => "; check VERCEL_PROJECT_ID (and VERCEL_TEAM_ID for a team's project)",
        _ => "",
    }
}

impl Vercel {
    pub fn new(s: &Settings) -> anyhow::Result<Vercel> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("maily-deploy/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Vercel {
            http,
            base: s.api_url.trim_end_matches('/').to_string(),
            token: s.token.clone(),
            team_id: s.team_id.clone().filter(|t| !t.is_empty()),
            backoff: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(5)
                .with_jitter(),
            rate_limit_cap: RATE_LIMIT_CAP,
        })
    }

    /// Cap 429 waits at `cap` instead of [`RATE_LIMIT_CAP`].
    pub fn with_rate_limit_cap(mut self, cap: Duration) -> Self {
        self.rate_limit_cap = cap;
        self
    }

    pub fn team_id(&self) -> Option<&str> {
        self.team_id.as_deref()
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_with(method, path, &[])
    }

    /// A request with query parameters, `teamId` among them for a team.
    fn request_with(&self, method: Method, path: &str, query: &[(&str, &str)]) -> RequestBuilder {
        let mut url = format!("{}{path}", self.base);
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            pairs.append_pair(k, v);
        }
        if let Some(team) = &self.team_id {
            pairs.append_pair("teamId", team);
        }
        let pairs = pairs.finish();
        if !pairs.is_empty() {
            url.push('?');
            url.push_str(&pairs);
        }
        self.http.request(method, url).bearer_auth(&self.token)
    }

    /// Send a request, waiting out 429s and retrying 5xx and connection
    /// failures; any other non-2xx is an error naming `what`.
    async fn send(
        &self,
        what: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> anyhow::Result<Response> {
        let mut backoff = self.backoff.build();
        let mut rate_limited = 0;
        loop {
            let (retry_reason, resp) = match make().send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                    let header = |name: &str| {
                        resp.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(String::from)
                    };
                    let reset = header("x-ratelimit-reset");
                    let remaining = header("x-ratelimit-remaining");
                    if rate_limited < RATE_LIMIT_WAITS
                        && let Some((wait, capped)) = rate_limit_wait(
                            reset.as_deref(),
                            SystemTime::now(),
                            self.rate_limit_cap,
                        )
                    {
                        rate_limited += 1;
                        tracing::warn!(
                            "Vercel rate limit on {what} (X-RateLimit-Remaining {}); waiting {} until X-RateLimit-Reset {}{}",
                            remaining.as_deref().unwrap_or("?"),
                            humantime::format_duration(Duration::from_millis(
                                wait.as_millis() as u64
                            )),
                            reset.as_deref().unwrap_or("?"),
                            if capped {
                                format!(
                                    ", capped at {}",
                                    humantime::format_duration(self.rate_limit_cap)
                                )
                            } else {
                                String::new()
                            }
                        );
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if rate_limited >= RATE_LIMIT_WAITS {
                        // Given up on: the next match says so.
                        ("rate limited".to_string(), Some(resp))
                    } else {
                        rate_limited += 1;
                        (
                            "HTTP 429 without a readable X-RateLimit-Reset".to_string(),
                            Some(resp),
                        )
                    }
                }
                Ok(resp) if resp.status().is_server_error() => {
                    (format!("HTTP {}", resp.status().as_u16()), Some(resp))
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    return Err(fail(
                        Kind::PhaseFailed,
                        format!(
                            "Vercel {what}: HTTP {} {}{}",
                            status.as_u16(),
                            error_text(&body),
                            hint(status)
                        ),
                    ));
                }
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    (format!("{e}"), None)
                }
                Err(e) => {
                    return Err(fail(Kind::PhaseFailed, format!("Vercel {what}: {e}")));
                }
            };
            match backoff.next() {
                Some(delay) if retry_reason != "rate limited" => {
                    tracing::warn!(
                        "Vercel {what}: {retry_reason}; retrying in {}",
                        humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                    );
                    tokio::time::sleep(delay).await;
                }
                _ => {
                    let detail = match resp {
                        Some(r) => {
                            let status = r.status();
                            format!(
                                "HTTP {} {}",
                                status.as_u16(),
                                error_text(&r.text().await.unwrap_or_default())
                            )
                        }
                        None => retry_reason,
                    };
                    return Err(fail(
                        Kind::PhaseFailed,
                        format!("Vercel {what}: {detail}; gave up after retrying"),
                    ));
                }
            }
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> anyhow::Result<T> {
        let resp = self.send(what, make).await?;
        let body = resp.text().await?;
        serde_json::from_str(&body).map_err(|e| {
            fail(
                Kind::PhaseFailed,
                format!("Vercel {what}: the answer is not what the API reference describes ({e})"),
            )
        })
    }

    /// `GET /v9/projects/{idOrName}`.
    pub async fn project(&self, id: &str) -> anyhow::Result<Project> {
        let path = format!("/v9/projects/{id}");
        self.json(&format!("reading project {id}"), || {
            self.request(Method::GET, &path)
        })
        .await
    }

    /// `POST /v13/deployments`. Retried after a 5xx like every call: at
    /// worst Vercel builds twice, and the spare deployment is never promoted.
    pub async fn create_deployment(&self, body: &CreateDeployment) -> anyhow::Result<Deployment> {
        self.json("creating the deployment", || {
            self.request(Method::POST, "/v13/deployments").json(body)
        })
        .await
    }

    /// `GET /v13/deployments/{idOrUrl}`.
    pub async fn deployment(&self, id: &str) -> anyhow::Result<Deployment> {
        let path = format!("/v13/deployments/{id}");
        self.json(&format!("reading deployment {id}"), || {
            self.request(Method::GET, &path)
        })
        .await
    }

    /// The last `n` lines of a deployment's build log:
    /// `GET /v3/deployments/{idOrUrl}/events` (`direction=backward`, as a
    /// JSON list rather than a stream: `follow=0`).
    pub async fn build_log_tail(&self, id: &str, n: usize) -> anyhow::Result<Vec<String>> {
        let path = format!("/v3/deployments/{id}/events");
        let limit = (n * 5).to_string();
        let events: serde_json::Value = self
            .json(&format!("reading the build log of {id}"), || {
                self.request_with(
                    Method::GET,
                    &path,
                    &[
                        ("direction", "backward"),
                        ("follow", "0"),
                        ("limit", limit.as_str()),
                    ],
                )
            })
            .await?;
        let lines = log_lines(&events);
        let skip = lines.len().saturating_sub(n);
        Ok(lines.into_iter().skip(skip).collect())
    }

    /// `POST /v10/projects/{projectId}/promote/{deploymentId}`: point the
    /// production domains at a deployment, without rebuilding it. Vercel
    /// answers 201 or 202 (it may finish the promotion asynchronously).
    pub async fn promote(&self, project_id: &str, deployment_id: &str) -> anyhow::Result<()> {
        let path = format!("/v10/projects/{project_id}/promote/{deployment_id}");
        self.send(&format!("promoting {deployment_id}"), || {
            self.request(Method::POST, &path)
        })
        .await?;
        Ok(())
    }

    /// Promote, then read the project every `every` until its production
    /// target is the deployment, for at most `timeout`. Vercel may accept a
    /// promotion (202) and finish it later; `vercel promote` waits for it
    /// too (three minutes by default).
    pub async fn promote_and_wait(
        &self,
        project_id: &str,
        deployment_id: &str,
        every: Duration,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.promote(project_id, deployment_id).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let project = self.project(project_id).await?;
            let serving = project.production().map(|t| t.id.clone());
            if serving.as_deref() == Some(deployment_id) {
                return Ok(());
            }
            if tokio::time::Instant::now() + every > deadline {
                return Err(fail(
                    Kind::PhaseFailed,
                    format!(
                        "Vercel accepted the promotion of {deployment_id}, but production still serves {} after {}; look at the project's deployments in Vercel's dashboard",
                        serving.as_deref().unwrap_or("nothing"),
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Poll a deployment every `every` until READY, ERROR or CANCELED, or
    /// until `timeout`. `on_state` hears each new state.
    pub async fn wait_until_done(
        &self,
        id: &str,
        every: Duration,
        timeout: Duration,
        mut on_state: impl FnMut(&ReadyState),
    ) -> anyhow::Result<(Deployment, Progress)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last: Option<ReadyState> = None;
        loop {
            let d = self.deployment(id).await?;
            let p = progress(&d);
            match &p {
                Progress::Pending(state) => {
                    if last.as_ref() != Some(state) {
                        on_state(state);
                        last = Some(state.clone());
                    }
                }
                Progress::Ready => {
                    on_state(&ReadyState::Ready);
                    return Ok((d, p));
                }
                Progress::Failed { state, .. } => {
                    on_state(state);
                    return Ok((d, p));
                }
            }
            if tokio::time::Instant::now() + every > deadline {
                return Err(fail(
                    Kind::PhaseFailed,
                    format!(
                        "Vercel deployment {id} is still {} after {}; raise VERCEL_BUILD_TIMEOUT or look at the build in Vercel's dashboard",
                        last.map(|s| s.to_string())
                            .unwrap_or_else(|| "QUEUED".into()),
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            tokio::time::sleep(every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn queued_and_building_are_pending_ready_is_done() {
        for (state, want) in [
            ("QUEUED", Progress::Pending(ReadyState::Queued)),
            ("INITIALIZING", Progress::Pending(ReadyState::Initializing)),
            ("BUILDING", Progress::Pending(ReadyState::Building)),
            ("READY", Progress::Ready),
        ] {
            let d = deployment(json!({
                "id": "dpl_89qyp1cskzkLrVicDaZoDbjyHuDJ",
                "url": "maily-frontend-abc123.vercel.app",
                "readyState": state,
                "target": "production",
            }));
            assert_eq!(progress(&d), want, "{state}");
        }
    }

    #[test]
    fn an_error_carries_vercels_message_and_code() {
        let d = deployment(json!({
            "id": "dpl_1",
            "readyState": "ERROR",
            "errorCode": "BUILD_FAILED",
            "errorMessage": "Command \"npm run build\" exited with 1",
        }));
        assert_eq!(
            progress(&d),
            Progress::Failed {
                state: ReadyState::Error,
                reason: "Command \"npm run build\" exited with 1 (BUILD_FAILED)".into()
            }
        );
    }

    #[test]
    fn an_answer_with_both_id_and_uid_parses() {
        // As the v13 API answers: both fields, equal (once "duplicate
        // field `id`").
        let d = deployment(json!({"id": "dpl_3", "uid": "dpl_3", "readyState": "READY"}));
        assert_eq!(d.id, "dpl_3");
        let err = serde_json::from_value::<Deployment>(json!({"readyState": "READY"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither `id` nor `uid`"), "{err}");
    }

    #[test]
    fn a_canceled_build_fails_even_without_a_message() {
        let d = deployment(json!({"uid": "dpl_2", "status": "CANCELED"}));
        assert_eq!(d.id, "dpl_2");
        assert!(matches!(
            progress(&d),
            Progress::Failed { state: ReadyState::Canceled, reason } if reason.contains("canceled")
        ));
    }

    #[test]
    fn an_unknown_state_is_still_pending() {
        let d = deployment(json!({"id": "dpl_3", "readyState": "DEPLOYING"}));
        assert_eq!(
            progress(&d),
            Progress::Pending(ReadyState::Other("DEPLOYING".into()))
        );
    }

    #[test]
    fn build_log_lines_come_oldest_first_from_either_event_shape() {
        // `direction=backward`: newest first, as the events endpoint sends them.
        let events = json!([
            {"type": "stderr", "created": 1700000003000i64, "payload": {"text": "Error: build failed", "date": 1700000003000i64}},
            {"type": "stdout", "created": 1700000002000i64, "text": "Compiling...\n"},
            {"type": "delimiter", "created": 1700000001500i64, "payload": {"text": ""}},
            {"type": "command", "created": 1700000001000i64, "payload": {"text": "npm run build"}}
        ]);
        assert_eq!(
            log_lines(&events),
            vec!["npm run build", "Compiling...", "Error: build failed"]
        );
        assert!(log_lines(&json!({"error": {}})).is_empty());
    }

    #[test]
    fn a_rate_limit_is_waited_out_until_its_reset_and_no_longer_than_the_cap() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let cap = Duration::from_secs(60);
        assert_eq!(
            rate_limit_wait(Some("1700000010"), now, cap),
            Some((Duration::from_secs(10), false))
        );
        assert_eq!(
            rate_limit_wait(Some("1700003600"), now, cap),
            Some((cap, true))
        );
        // A reset already past still waits a moment rather than hammering.
        assert_eq!(
            rate_limit_wait(Some("1699999999"), now, cap),
            Some((Duration::from_millis(100), false))
        );
        assert_eq!(rate_limit_wait(None, now, cap), None);
        assert_eq!(rate_limit_wait(Some("soon"), now, cap), None);
    }

    #[test]
    fn the_project_says_what_production_serves_and_whether_it_auto_assigns() {
        let p: Project = serde_json::from_value(json!({
            "id": "prj_12HKQaOmR5t5Uy6vdcQsNIiZgHGB",
            "name": "maily-frontend",
            "accountId": "team_a",
            "autoAssignCustomDomains": false,
            "targets": {
                "production": {"id": "dpl_old", "url": "maily-frontend-old.vercel.app", "readyState": "READY"},
                "preview": null
            }
        }))
        .unwrap();
        assert_eq!(p.production().map(|t| t.id.as_str()), Some("dpl_old"));
        assert!(!p.assigns_domains_on_deploy());

        let fresh: Project = serde_json::from_value(json!({"id": "prj_2", "name": "new"})).unwrap();
        assert_eq!(fresh.production(), None);
        assert!(fresh.assigns_domains_on_deploy(), "Vercel's default is on");
    }

    #[test]
    fn git_sources_take_a_repo_id_or_owner_and_name() {
        let by_name = GitSource::github(&GitRepo::parse("maily/frontend").unwrap(), "v1.4.2");
        assert_eq!(
            serde_json::to_value(&by_name).unwrap(),
            json!({"type": "github", "ref": "v1.4.2", "org": "maily", "repo": "frontend"})
        );
        let by_id = GitSource::github(&GitRepo::parse("123456789").unwrap(), "main");
        assert_eq!(
            serde_json::to_value(&by_id).unwrap(),
            json!({"type": "github", "ref": "main", "repoId": "123456789"})
        );
        assert!(GitRepo::parse("frontend").is_err());
        assert!(GitRepo::parse("a/b/c").is_err());
    }

    #[test]
    fn vercel_error_bodies_read_as_message_and_code() {
        assert_eq!(
            error_text(r#"{"error":{"code":"forbidden","message":"Not authorized"}}"#),
            "Not authorized (forbidden)"
        );
        assert_eq!(error_text("upstream timeout"), "upstream timeout");
    }
}
