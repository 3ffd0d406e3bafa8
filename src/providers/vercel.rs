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
//! | domains a failed promotion left | `GET /v9/projects/{projectId}/promote/aliases?failedOnly=true` |
//!
//! Every call carries `Authorization: Bearer <token>` and, for a team's
//! project, the `teamId` query parameter. A 429 is waited out until its
//! `X-RateLimit-Reset` (UTC epoch seconds), capped, unless it is further off
//! than the waits left reach (then it fails at once); a 5xx or a connection
//! failure is retried with exponential backoff (both in [`super::http`],
//! shared with the Grafana client).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::http::{self, ApiError};
use crate::error::{Kind, fail};

/// Vercel's API, when `VERCEL_API_URL` does not say otherwise.
pub const DEFAULT_API_URL: &str = "https://api.vercel.com";

/// The longest a 429 is waited out, whatever its headers say.
pub use super::http::RATE_LIMIT_CAP;

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
    api: http::Api,
    team_id: Option<String>,
}

impl std::fmt::Debug for Vercel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Vercel")
            .field("base", &self.api.base())
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
    /// The newest promotion or rollback asked of the project, and how its
    /// move of the domains went: what `vercel promote` waits on.
    #[serde(default)]
    pub last_alias_request: Option<AliasRequest>,
}

/// A project's `lastAliasRequest`: a promotion or rollback moves every
/// production domain to `toDeploymentId` as a job, which Vercel reports
/// as `pending`, `in-progress`, `succeeded`, `failed` or `skipped`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AliasRequest {
    #[serde(default)]
    pub to_deployment_id: Option<String>,
    #[serde(default)]
    pub from_deployment_id: Option<String>,
    #[serde(default)]
    pub job_status: Option<String>,
    /// `promote` or `rollback`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// When it was asked, in milliseconds since the epoch (Vercel's clock).
    #[serde(default)]
    pub requested_at: Option<f64>,
}

/// How far Vercel's clock and this machine's may disagree when telling an
/// earlier request from this run's.
const CLOCK_SKEW_MS: f64 = 60_000.0;

/// Where a promotion stands, read from the project after asking for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promotion {
    /// Production serves the deployment.
    Done,
    /// Not yet: Vercel is still moving the domains, or has not said.
    Moving,
    /// Vercel gave up moving the domains to it.
    Failed,
    /// A later promotion or rollback, to another deployment, took over.
    Superseded { by: String },
}

/// Where the promotion of `deployment_id`, asked at `asked_at_ms` (this
/// machine's clock), stands in `project`. Production serving it is the
/// only proof of success: a `succeeded` job whose target has not shown up
/// yet is still moving. Vercel writes the request before it answers the
/// promotion, so a request after the ask to another deployment is a later
/// one; one from well before the ask is an earlier run's, and says nothing
/// of this one.
pub fn promotion(project: &Project, deployment_id: &str, asked_at_ms: f64) -> Promotion {
    if project.production().map(|t| t.id.as_str()) == Some(deployment_id) {
        return Promotion::Done;
    }
    let Some(request) = &project.last_alias_request else {
        return Promotion::Moving;
    };
    if request
        .requested_at
        .is_some_and(|at| at < asked_at_ms - CLOCK_SKEW_MS)
    {
        return Promotion::Moving;
    }
    match request.to_deployment_id.as_deref() {
        Some(to) if to != deployment_id => Promotion::Superseded { by: to.to_string() },
        _ if request.job_status.as_deref() == Some("failed") => Promotion::Failed,
        _ => Promotion::Moving,
    }
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
    pub fn parse(text: &str) -> Result<GitRepo, NotARepo> {
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
            _ => Err(NotARepo(text.to_string())),
        }
    }
}

/// A text that names no GitHub repository.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is neither owner/name (maily/maily-frontend) nor a numeric GitHub repository id")]
pub struct NotARepo(pub String);

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

/// What to check after a 4xx.
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
        let api = http::Api::new(
            "Vercel",
            &s.api_url,
            &s.token,
            Duration::from_secs(30),
            http::Backoff {
                max_delay: Duration::from_secs(5),
                retries: 5,
            },
            hint,
        )?;
        Ok(Vercel {
            api,
            team_id: s.team_id.clone().filter(|t| !t.is_empty()),
        })
    }

    /// Cap 429 waits at `cap` instead of [`RATE_LIMIT_CAP`].
    pub fn with_rate_limit_cap(mut self, cap: Duration) -> Self {
        self.api = self.api.with_rate_limit_cap(cap);
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
        let mut url = format!("{}{path}", self.api.base());
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
        self.api.request(method, &url)
    }

    /// Send a request as [`http::Api::send`] does; any other non-2xx is an
    /// error naming `what`.
    async fn send(
        &self,
        what: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> anyhow::Result<Response> {
        self.api
            .send(what, make)
            .await
            .map_err(ApiError::into_failure)
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> anyhow::Result<T> {
        let resp = self.send(what, make).await?;
        self.api
            .json(what, resp)
            .await
            .map_err(ApiError::into_failure)
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
    /// answers 201 or 202 (it may finish the promotion asynchronously), and
    /// 409 when production already serves the deployment: a promotion
    /// retried after its first answer was lost, or a put-back of one that
    /// never took. That is the state wanted, so it counts as done once the
    /// project confirms it.
    pub async fn promote(&self, project_id: &str, deployment_id: &str) -> anyhow::Result<()> {
        let path = format!("/v10/projects/{project_id}/promote/{deployment_id}");
        let sent = self
            .api
            .send(&format!("promoting {deployment_id}"), || {
                self.request(Method::POST, &path)
            })
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(StatusCode::CONFLICT) => {
                let project = self.project(project_id).await?;
                if project.production().map(|t| t.id.as_str()) == Some(deployment_id) {
                    Ok(())
                } else {
                    Err(e.into_failure())
                }
            }
            Err(e) => Err(e.into_failure()),
        }
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
        // Asked even when production seems on it already: a promotion of
        // another deployment may still be in progress, and this one
        // supersedes it.
        let asked_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as f64;
        self.promote(project_id, deployment_id).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let project = self.project(project_id).await?;
            let serving = project.production().map(|t| t.id.clone());
            let serving_text = serving.as_deref().unwrap_or("nothing");
            match promotion(&project, deployment_id, asked_at_ms) {
                Promotion::Done => return Ok(()),
                Promotion::Moving => {}
                Promotion::Failed => {
                    let domains = self.failed_domains(project_id).await;
                    return Err(fail(
                        Kind::PhaseFailed,
                        format!(
                            "Vercel could not move the production domains to {deployment_id} (its promotion job failed{domains}); production still serves {serving_text}; look at the project's domains in Vercel's dashboard"
                        ),
                    ));
                }
                Promotion::Superseded { by } => {
                    return Err(fail(
                        Kind::PhaseFailed,
                        format!(
                            "the promotion of {deployment_id} was superseded by a promotion or rollback to {by}, asked of Vercel by someone else meanwhile; production serves {serving_text}"
                        ),
                    ));
                }
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

    /// The domains a failed promotion left behind, as `; not moved: a, b`
    /// for a message (the first 20, as `vercel promote` lists them), or
    /// nothing when Vercel does not say: the failure is reported either way.
    async fn failed_domains(&self, project_id: &str) -> String {
        #[derive(Deserialize)]
        struct Aliases {
            #[serde(default)]
            aliases: Vec<FailedAlias>,
        }
        #[derive(Deserialize)]
        struct FailedAlias {
            alias: AliasName,
        }
        #[derive(Deserialize)]
        struct AliasName {
            alias: String,
        }
        let path = format!("/v9/projects/{project_id}/promote/aliases");
        let what = "listing the domains the promotion did not move";
        let listed: Result<Aliases, _> = async {
            let resp = self
                .api
                .send(what, || {
                    self.request_with(
                        Method::GET,
                        &path,
                        &[("failedOnly", "true"), ("limit", "20")],
                    )
                })
                .await?;
            self.api.json::<Aliases>(what, resp).await
        }
        .await;
        match listed {
            Ok(a) if !a.aliases.is_empty() => {
                let names: Vec<String> = a.aliases.into_iter().map(|a| a.alias.alias).collect();
                format!("; not moved: {}", names.join(", "))
            }
            Ok(_) => String::new(),
            Err(e) => {
                tracing::warn!("{e}");
                String::new()
            }
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

    /// A project as `GET /v9/projects/{id}` answers during a promotion.
    fn promoting(production: &str, request: serde_json::Value) -> Project {
        serde_json::from_value(json!({
            "id": "prj_1",
            "name": "maily-frontend",
            "targets": {"production": {"id": production, "readyState": "READY"}},
            "lastAliasRequest": request,
        }))
        .unwrap()
    }

    const ASKED: f64 = 1_764_590_000_000.0;

    fn request(to: &str, status: &str, at: f64) -> serde_json::Value {
        json!({
            "fromDeploymentId": "dpl_old",
            "toDeploymentId": to,
            "jobStatus": status,
            "requestedAt": at,
            "type": "promote",
        })
    }

    #[test]
    fn a_promotion_is_done_only_when_production_serves_it() {
        let done = promoting("dpl_new", request("dpl_new", "succeeded", ASKED + 100.0));
        assert_eq!(promotion(&done, "dpl_new", ASKED), Promotion::Done);
        for status in [
            "pending",
            "in-progress",
            "succeeded",
            "skipped",
            "queued-someday",
        ] {
            let p = promoting("dpl_old", request("dpl_new", status, ASKED + 100.0));
            assert_eq!(
                promotion(&p, "dpl_new", ASKED),
                Promotion::Moving,
                "{status}"
            );
        }
        let none: Project = serde_json::from_value(json!({
            "id": "prj_1", "name": "f", "lastAliasRequest": null
        }))
        .unwrap();
        assert_eq!(promotion(&none, "dpl_new", ASKED), Promotion::Moving);
    }

    #[test]
    fn a_failed_job_or_a_later_request_elsewhere_ends_the_wait() {
        let failed = promoting("dpl_old", request("dpl_new", "failed", ASKED + 100.0));
        assert_eq!(promotion(&failed, "dpl_new", ASKED), Promotion::Failed);
        let other = promoting(
            "dpl_old",
            request("dpl_other", "in-progress", ASKED + 5_000.0),
        );
        assert_eq!(
            promotion(&other, "dpl_new", ASKED),
            Promotion::Superseded {
                by: "dpl_other".into()
            }
        );
        // A little behind this machine's clock is still this run's.
        let skewed = promoting("dpl_old", request("dpl_new", "failed", ASKED - 20_000.0));
        assert_eq!(promotion(&skewed, "dpl_new", ASKED), Promotion::Failed);
    }

    #[test]
    fn an_earlier_runs_request_says_nothing_of_this_promotion() {
        for (to, status) in [("dpl_new", "failed"), ("dpl_other", "succeeded")] {
            let p = promoting("dpl_old", request(to, status, ASKED - 3_600_000.0));
            assert_eq!(promotion(&p, "dpl_new", ASKED), Promotion::Moving, "{to}");
        }
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
}
