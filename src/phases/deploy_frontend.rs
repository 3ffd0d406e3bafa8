//! deploy-frontend: the Next.js frontend built on Vercel, not promoted.
//!
//! Creates a production deployment of the release's git ref through the
//! Vercel REST API (see `providers::vercel`), follows it until READY, and
//! records it in the snapshot with the deployment production served before.
//! Users keep the old frontend until shift-traffic promotes the new one
//! ([`promote_recorded`]); a run that fails after that promotes the old one
//! back ([`undo_promotion`]), and `rollback` promotes the one its target
//! recorded.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::Vars;
use crate::config::spec::duration_of;
use crate::error::{Kind, fail};
use crate::k8s::snapshot_store::SnapshotStore;
use crate::pipeline::{Context, Phase, PhaseId, PhasePlan, PhaseReport, SkipReason};
use crate::providers::vercel::{
    self, CreateDeployment, GitRepo, GitSource, LOG_TAIL, PROMOTION_TIMEOUT, Progress,
    TargetDeployment, Vercel,
};

pub struct DeployFrontend;

/// What the snapshot keeps of the frontend (`snapshot.frontend`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendRecord {
    pub project_id: String,
    #[serde(default)]
    pub team_id: Option<String>,
    /// The Vercel deployment this run built (or, in a rollback, promotes).
    pub deployment_id: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub git_ref: Option<String>,
    /// Its last known `readyState`.
    #[serde(default)]
    pub state: Option<String>,
    /// What the production domains served before this run promoted anything.
    #[serde(default)]
    pub previous: Option<TargetDeployment>,
    /// Set just before the promotion is asked for: from then on a failed
    /// run must promote `previous` back.
    #[serde(default)]
    pub promoted: bool,
    /// Set once a failed run promoted `previous` back.
    #[serde(default)]
    pub undone: bool,
}

fn https(url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        format!("https://{url}")
    }
}

fn describe(d: &TargetDeployment) -> String {
    match &d.url {
        Some(u) => format!("{} ({})", d.id, https(u)),
        None => d.id.clone(),
    }
}

/// What the phase needs from the variables.
struct Settings {
    project_id: String,
    team_id: Option<String>,
    repo: GitRepo,
    git_ref: String,
    poll: Duration,
    timeout: Duration,
}

fn var<'a>(vars: &'a Vars, name: &str) -> Option<&'a str> {
    vars.get(name).filter(|v| !v.is_empty())
}

fn required<'a>(vars: &'a Vars, name: &str) -> anyhow::Result<&'a str> {
    var(vars, name).ok_or_else(|| {
        fail(
            Kind::Config,
            format!(
                "{name} is not set; deploy-frontend needs it (or skip it with --skip-frontend)"
            ),
        )
    })
}

fn duration_var(vars: &Vars, name: &str, default: &str) -> anyhow::Result<Duration> {
    let text = var(vars, name).unwrap_or(default);
    duration_of(name, Some(text)).map_err(|e| fail(Kind::Config, format!("{name} {e}")))
}

fn poll_interval(vars: &Vars) -> anyhow::Result<Duration> {
    duration_var(vars, "VERCEL_POLL_INTERVAL", "5s")
}

impl Settings {
    fn read(vars: &Vars) -> anyhow::Result<Settings> {
        let repo = GitRepo::parse(required(vars, "FRONTEND_GIT_REPO")?)
            .map_err(|e| fail(Kind::Config, format!("FRONTEND_GIT_REPO: {e}")))?;
        let git_ref = var(vars, "FRONTEND_GIT_REF")
            .or_else(|| var(vars, "IMAGE_TAG"))
            .ok_or_else(|| {
                fail(
                    Kind::Config,
                    "neither FRONTEND_GIT_REF nor IMAGE_TAG is set: deploy-frontend does not know what to build",
                )
            })?
            .to_string();
        Ok(Settings {
            project_id: required(vars, "VERCEL_PROJECT_ID")?.to_string(),
            team_id: var(vars, "VERCEL_TEAM_ID").map(String::from),
            repo,
            git_ref,
            poll: poll_interval(vars)?,
            timeout: duration_var(vars, "VERCEL_BUILD_TIMEOUT", "30m")?,
        })
    }
}

/// A Vercel client from the variables; `team_id` overrides
/// `VERCEL_TEAM_ID` (a snapshot's deployment lives in the team it was
/// created in).
pub fn client(vars: &Vars, team_id: Option<&str>) -> anyhow::Result<Vercel> {
    Vercel::new(&vercel::Settings {
        api_url: var(vars, "VERCEL_API_URL")
            .unwrap_or(vercel::DEFAULT_API_URL)
            .to_string(),
        token: required(vars, "VERCEL_TOKEN")?.to_string(),
        team_id: team_id
            .map(String::from)
            .or_else(|| var(vars, "VERCEL_TEAM_ID").map(String::from)),
    })
}

#[async_trait]
impl Phase for DeployFrontend {
    fn id(&self) -> PhaseId {
        PhaseId::DeployFrontend
    }

    async fn plan(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        // Nothing is called: a dry run works without reaching Vercel.
        let s = Settings::read(&cx.config.vars)?;
        let team = s
            .team_id
            .as_deref()
            .map(|t| format!(" (team {t})"))
            .unwrap_or_default();
        Ok(PhasePlan {
            summary: format!(
                "build {}@{} on Vercel project {}{team}, target production, not promoted",
                s.repo, s.git_ref, s.project_id
            ),
            steps: vec![
                format!(
                    "read project {} and the deployment its production domains serve (kept for undo and rollback); refuse if it auto-assigns its domains to new production deployments",
                    s.project_id
                ),
                format!(
                    "POST /v13/deployments: target production, gitSource github {} ref {}, autoAssignCustomDomains false",
                    s.repo, s.git_ref
                ),
                format!(
                    "follow it every {} until READY (at most {}); ERROR or CANCELED fails with Vercel's message and the build log's last {LOG_TAIL} lines",
                    humantime::format_duration(s.poll),
                    humantime::format_duration(s.timeout)
                ),
                "record its id and URL in the snapshot; shift-traffic promotes it".into(),
            ],
        })
    }

    async fn run(&self, cx: &mut Context) -> anyhow::Result<PhaseReport> {
        let s = Settings::read(&cx.config.vars)?;
        let api = client(&cx.config.vars, s.team_id.as_deref())?;
        let project = api.project(&s.project_id).await?;
        if project.assigns_domains_on_deploy() {
            return Err(fail(
                Kind::PhaseFailed,
                format!(
                    "Vercel project {} ({}) gives its production domains to every new production deployment, so building the frontend would show it to users before shift-traffic; turn off \"Auto-assign Custom Production Domains\" in the project's settings (Vercel's staged production deployments, as `vercel --prod --skip-domain`), or skip the frontend with --skip-frontend",
                    project.name, project.id
                ),
            ));
        }
        let previous = project.production().cloned();
        let mut meta = BTreeMap::new();
        meta.insert("mailyEnvironment".to_string(), cx.environment().to_string());
        if let Some(id) = &cx.deployment_id {
            meta.insert("mailyDeploymentId".to_string(), id.to_string());
        }
        let created = api
            .create_deployment(&CreateDeployment {
                name: project.name.clone(),
                project: project.id.clone(),
                target: "production",
                git_source: GitSource::github(&s.repo, &s.git_ref),
                auto_assign_custom_domains: false,
                meta,
            })
            .await?;
        let mut record = FrontendRecord {
            project_id: project.id.clone(),
            team_id: api.team_id().map(String::from),
            deployment_id: created.id.clone(),
            url: created.url.clone(),
            git_ref: Some(s.git_ref.clone()),
            state: created.ready_state.clone(),
            previous: previous.clone(),
            promoted: false,
            undone: false,
        };
        // Recorded before the wait: a failed or interrupted run still says
        // which deployment it started.
        cx.records.frontend = Some(record.clone());
        tracing::info!(
            "Vercel deployment {} created from {}@{}; following its build",
            created.id,
            s.repo,
            s.git_ref
        );
        let id = created.id.clone();
        let (done, outcome) = api
            .wait_until_done(&id, s.poll, s.timeout, |state| {
                tracing::info!("Vercel deployment {id}: {state}");
            })
            .await?;
        record.url = done.url.clone().or(record.url);
        record.state = done.ready_state.clone().or(done.status.clone());
        cx.records.frontend = Some(record.clone());
        let production_now = previous
            .as_ref()
            .map(describe)
            .unwrap_or_else(|| "nothing yet".into());
        match outcome {
            Progress::Ready => Ok(PhaseReport {
                summary: format!(
                    "{} READY at {}; production still serves {production_now} until shift-traffic",
                    id,
                    record.url.as_deref().map(https).unwrap_or_default()
                ),
                details: vec![
                    format!("project: {} ({})", project.name, project.id),
                    format!("built: {}@{}, target production", s.repo, s.git_ref),
                    format!("deployment: {id}"),
                    format!("production before: {production_now}"),
                ],
            }),
            Progress::Failed { state, reason } => {
                let tail = match api.build_log_tail(&id, LOG_TAIL).await {
                    Ok(lines) if lines.is_empty() => vec!["(the build log is empty)".to_string()],
                    Ok(lines) => lines,
                    Err(e) => vec![format!("(the build log could not be read: {e:#})")],
                };
                Err(fail(
                    Kind::PhaseFailed,
                    format!(
                        "Vercel deployment {id} of {}@{} ended {state}: {reason}. Production still serves {production_now}. The build log's last lines:\n    {}",
                        s.repo,
                        s.git_ref,
                        tail.join("\n    ")
                    ),
                ))
            }
            Progress::Pending(_) => unreachable!("wait_until_done returns only when done"),
        }
    }
}

/// Before shift-traffic changes anything: find the frontend it is to
/// promote, and make sure it can be promoted, so that a missing token fails
/// the run before users move rather than half-way.
///
/// A run resumed at shift-traffic (`--from`) did not build the frontend
/// itself: it promotes the newest READY build an earlier run of this
/// environment recorded for the same project and git ref.
pub async fn prepare_promotion(cx: &mut Context) -> anyhow::Result<()> {
    if cx.records.frontend.is_none() {
        let resumed = cx
            .selection
            .phases
            .iter()
            .any(|(p, r)| *p == PhaseId::DeployFrontend && *r == Some(SkipReason::BeforeFrom));
        let vars = &cx.config.vars;
        let wanted = (
            var(vars, "VERCEL_PROJECT_ID"),
            var(vars, "FRONTEND_GIT_REF").or_else(|| var(vars, "IMAGE_TAG")),
        );
        if let (true, (Some(project), Some(git_ref))) = (resumed, wanted) {
            let (project, git_ref) = (project.to_string(), git_ref.to_string());
            let applier = cx.applier().await?;
            let store = SnapshotStore::new(
                applier.client().clone(),
                &cx.config.profile.namespace,
                cx.environment(),
            );
            let found = store
                .list()
                .await?
                .into_iter()
                .filter_map(|s| s.frontend)
                .find(|r| {
                    r.project_id == project
                        && r.git_ref.as_deref() == Some(git_ref.as_str())
                        && r.state.as_deref() == Some("READY")
                });
            match found {
                Some(r) => {
                    tracing::info!(
                        "resuming: the frontend {} built earlier from {git_ref} will be promoted",
                        r.deployment_id
                    );
                    cx.records.frontend = Some(FrontendRecord {
                        previous: None,
                        promoted: false,
                        undone: false,
                        ..r
                    });
                }
                None => tracing::warn!(
                    "resuming at shift-traffic: no earlier run built the frontend from {git_ref}; it stays as it is (run deploy-frontend to build it)"
                ),
            }
        }
    }
    if let Some(r) = &cx.records.frontend
        && var(&cx.config.vars, "VERCEL_TOKEN").is_none()
    {
        return Err(fail(
            Kind::Config,
            format!(
                "shift-traffic is to promote the Vercel deployment {}, and VERCEL_TOKEN is not set",
                r.deployment_id
            ),
        ));
    }
    Ok(())
}

/// Whether the promotion of `cx.records.frontend` can be made, asked
/// before the backend switch it follows: the token is set and Vercel
/// answers for the project. A dead run's `promote` switches every user at
/// once; a frontend that then cannot follow would leave them on the new
/// backend with the old frontend.
pub async fn can_promote_recorded(cx: &Context) -> anyhow::Result<()> {
    let Some(record) = &cx.records.frontend else {
        return Ok(());
    };
    if var(&cx.config.vars, "VERCEL_TOKEN").is_none() {
        return Err(fail(
            Kind::Config,
            format!(
                "the frontend {} is to be promoted with the backend, and VERCEL_TOKEN is not set; set it (or its vault: reference) in the env file; nothing was changed",
                record.deployment_id
            ),
        ));
    }
    let api = client(&cx.config.vars, record.team_id.as_deref())?;
    api.project(&record.project_id).await.map_err(|e| {
        fail(
            Kind::Refused,
            format!(
                "Vercel does not let this token read the project {} whose deployment {} is to be promoted with the backend ({e:#}); nothing was changed",
                record.project_id, record.deployment_id
            ),
        )
    })?;
    Ok(())
}

/// Promote the deployment `cx.records.frontend` names, if any and not
/// already in production: what shift-traffic does after the backend switch
/// (and a rollback through it). The production deployment it replaces is
/// recorded first, so a failure from here on can be undone.
pub async fn promote_recorded(cx: &mut Context) -> anyhow::Result<Option<String>> {
    let Some(mut record) = cx.records.frontend.clone() else {
        return Ok(None);
    };
    let api = client(&cx.config.vars, record.team_id.as_deref())?;
    let project = api.project(&record.project_id).await?;
    let current = project.production().cloned();
    if current.as_ref().map(|c| c.id.as_str()) == Some(record.deployment_id.as_str()) {
        return Ok(Some(format!(
            "frontend: {} already serves production",
            record.deployment_id
        )));
    }
    // Users of another run's release must not get this run's frontend.
    cx.applier().await?.may_change().await?;
    record.previous = current;
    record.promoted = true;
    cx.records.frontend = Some(record.clone());
    crate::pipeline::undo::record(cx, crate::pipeline::undo::Undo::Frontend);
    // Written through to the run's snapshot before Vercel hears of it: if
    // this process dies now, the next run finds what to put back there.
    crate::pipeline::lifecycle::write_through(cx, |s, records| {
        s.frontend = records.frontend.clone()
    })
    .await
    .map_err(|e| e.context("recording the frontend promotion in the snapshot"))?;
    api.promote_and_wait(
        &record.project_id,
        &record.deployment_id,
        poll_interval(&cx.config.vars)?,
        PROMOTION_TIMEOUT,
    )
    .await
    .map_err(|e| e.context("promoting the frontend"))?;
    Ok(Some(format!(
        "frontend: {} promoted to production (was {})",
        record.deployment_id,
        record
            .previous
            .as_ref()
            .map(describe)
            .unwrap_or_else(|| "nothing".into())
    )))
}

/// Put production back on the deployment a failed run found there. Does
/// nothing unless the run asked for a promotion; returns the record as it
/// now stands.
pub async fn undo_promotion(
    vars: &Vars,
    record: &FrontendRecord,
) -> anyhow::Result<FrontendRecord> {
    let mut record = record.clone();
    if !record.promoted || record.undone {
        return Ok(record);
    }
    let Some(previous) = record.previous.clone() else {
        tracing::warn!(
            "the frontend {} was the project's first production deployment; there is none to put back",
            record.deployment_id
        );
        return Ok(record);
    };
    let api = client(vars, record.team_id.as_deref())?;
    api.promote_and_wait(
        &record.project_id,
        &previous.id,
        poll_interval(vars)?,
        PROMOTION_TIMEOUT,
    )
    .await
    .map_err(|e| {
        e.context(format!(
            "promoting the frontend back to {}",
            describe(&previous)
        ))
    })?;
    tracing::info!("frontend back on {}", describe(&previous));
    record.undone = true;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_reads_old_shapes() {
        let r = FrontendRecord {
            project_id: "prj_1".into(),
            team_id: Some("team_1".into()),
            deployment_id: "dpl_new".into(),
            url: Some("maily-new.vercel.app".into()),
            git_ref: Some("v2".into()),
            state: Some("READY".into()),
            previous: Some(TargetDeployment {
                id: "dpl_old".into(),
                url: None,
            }),
            promoted: true,
            undone: false,
        };
        let kept = serde_json::to_value(&r).unwrap();
        assert_eq!(serde_json::from_value::<FrontendRecord>(kept).ok(), Some(r));
        let minimal = serde_json::json!({"project_id": "prj_1", "deployment_id": "dpl_1"});
        let m: FrontendRecord = serde_json::from_value(minimal).unwrap();
        assert!(!m.promoted && m.previous.is_none());
    }

    #[test]
    fn urls_are_shown_with_their_scheme() {
        assert_eq!(https("x.vercel.app"), "https://x.vercel.app");
        assert_eq!(https("http://127.0.0.1:1"), "http://127.0.0.1:1");
    }
}
