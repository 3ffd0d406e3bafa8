//! A fake Vercel REST API for the frontend tests: it answers as Vercel's
//! API reference documents (projects, deployments, build events,
//! promotions), keeps production's deployment, and records every request
//! and what the tool sent that Vercel would refuse or that breaks a rule
//! (the bearer token, the team id, the production target, no domains
//! assigned by itself).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::World;

pub const TOKEN: &str = "vercel-test-token-4f9a";
pub const TEAM: &str = "team_maily";
pub const PROJECT: &str = "prj_maily";

/// How a stubbed build goes: the states successive reads return; the last
/// one repeats.
#[derive(Clone)]
pub struct Script(pub Vec<&'static str>);

#[derive(Default)]
pub struct State {
    /// The deployment the production domains serve.
    pub production: Option<String>,
    /// Deployments created: id → (script, reads so far, git ref).
    pub deployments: BTreeMap<String, (Script, usize, String)>,
    /// The scripts the next creations follow, in order.
    pub scripts: Vec<Script>,
    /// Every request, as `METHOD path`.
    pub log: Vec<String>,
    /// What the tool sent that Vercel would refuse or that breaks a rule.
    pub violations: Vec<String>,
    /// Promotions of these ids answer 409.
    pub refuse_promotion: Vec<String>,
    /// Promotions of these ids are accepted (202), and their job fails
    /// after `promotion_lag` reads of the project, leaving the domains
    /// where they were (`lastAliasRequest.jobStatus: failed`).
    pub fail_promotion: Vec<String>,
    /// The project's `lastAliasRequest`, as the last promotion set it.
    pub last_alias_request: Option<Value>,
    /// The next reads of a deployment answer 429 this many times.
    pub rate_limited: usize,
    /// The `X-RateLimit-Reset` of the last 429, and when the next read came.
    pub reset_sent: Option<u64>,
    pub read_after_limit: Option<SystemTime>,
    /// Seconds from now a 429's `X-RateLimit-Reset` names (1 when unset).
    pub reset_in: u64,
    /// 429s come without their rate-limit headers.
    pub omit_reset: bool,
    /// The next reads of a deployment answer 502 this many times.
    pub server_errors: usize,
    /// The project assigns its domains to new production deployments.
    pub auto_assign: bool,
    /// A promotion takes effect after this many reads of the project.
    pub promotion_lag: usize,
    pub pending_production: Option<(String, usize)>,
    /// Asked what users see (of the backend, say) when a deployment is
    /// created and when one is promoted; its answers go to `witnessed`.
    pub witness: Option<Witness>,
    /// `POST /v13/deployments: <answer>` and `promote <id>: <answer>`.
    pub witnessed: Vec<String>,
    /// Creating a deployment answers 400 with a message that repeats the
    /// request's `Authorization` header, as some proxies and APIs do.
    pub echo_request: bool,
    /// Deployments are served at `<url_base>/<id>` (a loopback stub a
    /// test serves) instead of `maily-<id>.vercel.app`.
    pub url_base: Option<String>,
}

impl State {
    /// The URL a deployment is served at.
    pub fn url_of(&self, id: &str) -> String {
        match &self.url_base {
            Some(base) => format!("{base}/{id}"),
            None => format!("maily-{id}.vercel.app"),
        }
    }
}

/// What a test looks at when the tool creates or promotes a deployment.
pub type Witness = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone, Default)]
pub struct FakeVercel(Arc<Mutex<State>>);

impl FakeVercel {
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    pub fn promotions(&self) -> Vec<String> {
        self.state()
            .log
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("POST /v10/projects/{PROJECT}/promote/")))
            .map(String::from)
            .collect()
    }
}

pub fn vercel_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": {"code": code, "message": message}}))
}

impl Respond for FakeVercel {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let path = req.url.path().to_string();
        // The witness looks before the request takes effect, and outside
        // the lock: it may take a while.
        let witness = self.state().witness.clone();
        let witnessed = witness.and_then(|w| {
            if req.method.as_str() != "POST" {
                return None;
            }
            if path == "/v13/deployments" {
                Some(format!("POST /v13/deployments: {}", w()))
            } else {
                let (_, id) = path.split_once("/promote/")?;
                Some(format!("promote {id}: {}", w()))
            }
        });
        let mut s = self.state();
        s.witnessed.extend(witnessed);
        s.log.push(format!("{} {path}", req.method));
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != format!("Bearer {TOKEN}") {
            s.violations
                .push(format!("{} {path}: Authorization `{auth}`", req.method));
            return vercel_error(403, "forbidden", "Not authorized");
        }
        let team = req
            .url
            .query_pairs()
            .find(|(k, _)| k == "teamId")
            .map(|(_, v)| v.to_string());
        if team.as_deref() != Some(TEAM) {
            s.violations
                .push(format!("{} {path}: teamId {team:?}", req.method));
            return vercel_error(404, "not_found", "Project not found");
        }
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), parts.as_slice()) {
            ("GET", ["v9", "projects", id]) if *id == PROJECT => {
                if let Some((id, reads)) = s.pending_production.take() {
                    if reads > 0 {
                        s.pending_production = Some((id, reads - 1));
                    } else if s.fail_promotion.contains(&id) {
                        set_job_status(&mut s, "failed");
                    } else {
                        s.production = Some(id);
                        set_job_status(&mut s, "succeeded");
                    }
                }
                let production = s
                    .production
                    .clone()
                    .map(|id| json!({"id": id, "url": s.url_of(&id), "readyState": "READY"}));
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": PROJECT,
                    "name": "maily-frontend",
                    "accountId": TEAM,
                    "autoAssignCustomDomains": s.auto_assign,
                    "framework": "nextjs",
                    "targets": {"production": production},
                    "lastAliasRequest": s.last_alias_request,
                }))
            }
            ("GET", ["v9", "projects", project, "promote", "aliases"]) if *project == PROJECT => {
                let failed_only = req
                    .url
                    .query_pairs()
                    .any(|(k, v)| k == "failedOnly" && v == "true");
                let failed = s
                    .last_alias_request
                    .as_ref()
                    .filter(|r| r["jobStatus"] == "failed");
                let aliases: Vec<Value> = match failed {
                    Some(r) if failed_only => ["app.maily.test", "www.maily.test"]
                        .iter()
                        .map(|a| {
                            json!({
                                "id": format!("alias_{a}"),
                                "alias": {"alias": a, "deploymentId": r["fromDeploymentId"]},
                                "status": "failed",
                            })
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                ResponseTemplate::new(200)
                    .set_body_json(json!({"aliases": aliases, "pagination": null}))
            }
            ("POST", ["v13", "deployments"]) if s.echo_request => vercel_error(
                400,
                "bad_request",
                &format!("Invalid request: POST {path} (authorization: {auth}) has no gitSource"),
            ),
            ("POST", ["v13", "deployments"]) => {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                for (field, want) in [
                    ("/target", json!("production")),
                    ("/project", json!(PROJECT)),
                    ("/name", json!("maily-frontend")),
                    ("/gitSource/type", json!("github")),
                    ("/gitSource/org", json!("maily")),
                    ("/gitSource/repo", json!("maily-frontend")),
                    ("/autoAssignCustomDomains", json!(false)),
                ] {
                    if body.pointer(field) != Some(&want) {
                        s.violations.push(format!(
                            "POST /v13/deployments: {field} is {:?}, not {want}",
                            body.pointer(field)
                        ));
                    }
                }
                let git_ref = body
                    .pointer("/gitSource/ref")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let n = s.deployments.len() + 1;
                let id = format!("dpl_{n}{}", git_ref.replace('.', ""));
                let script = if s.scripts.is_empty() {
                    Script(vec!["QUEUED", "BUILDING", "READY"])
                } else {
                    s.scripts.remove(0)
                };
                s.deployments
                    .insert(id.clone(), (script, 0, git_ref.clone()));
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": id,
                    "url": s.url_of(&id),
                    "name": "maily-frontend",
                    "readyState": "QUEUED",
                    "target": "production",
                    "meta": body.get("meta").cloned().unwrap_or(Value::Null),
                }))
            }
            ("GET", ["v13", "deployments", id]) => {
                if s.reset_sent.is_some() && s.read_after_limit.is_none() {
                    s.read_after_limit = Some(SystemTime::now());
                }
                if s.server_errors > 0 {
                    s.server_errors -= 1;
                    return vercel_error(502, "bad_gateway", "Bad gateway");
                }
                if s.rate_limited > 0 && s.omit_reset {
                    s.rate_limited -= 1;
                    return vercel_error(429, "rate_limited", "Rate limit exceeded");
                }
                if s.rate_limited > 0 {
                    s.rate_limited -= 1;
                    let reset = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_secs()
                        + s.reset_in.max(1);
                    s.reset_sent = Some(reset);
                    s.read_after_limit = None;
                    return vercel_error(429, "rate_limited", "Rate limit exceeded")
                        .insert_header("X-RateLimit-Limit", "100")
                        .insert_header("X-RateLimit-Remaining", "0")
                        .insert_header("X-RateLimit-Reset", reset.to_string().as_str());
                }
                let id = id.to_string();
                let Some((script, reads, _)) = s.deployments.get_mut(&id) else {
                    return vercel_error(404, "not_found", "Deployment not found");
                };
                let state = script.0[(*reads).min(script.0.len() - 1)];
                *reads += 1;
                let mut body = json!({
                    "id": id,
                    "url": s.url_of(&id),
                    "readyState": state,
                    "status": state,
                    "target": "production",
                });
                if state == "ERROR" {
                    body["errorCode"] = json!("BUILD_FAILED");
                    body["errorMessage"] = json!("Command \"npm run build\" exited with 1");
                }
                ResponseTemplate::new(200).set_body_json(body)
            }
            ("GET", ["v3", "deployments", _id, "events"]) => {
                // direction=backward: newest first.
                ResponseTemplate::new(200).set_body_json(json!([
                    {"type": "stderr", "created": 1700000004000i64, "payload": {"text": "Error: Command \"npm run build\" exited with 1"}},
                    {"type": "stderr", "created": 1700000003000i64, "payload": {"text": "Type error: Property 'campaign' does not exist on type 'Props'."}},
                    {"type": "stdout", "created": 1700000002000i64, "payload": {"text": "Creating an optimized production build ..."}},
                    {"type": "command", "created": 1700000001000i64, "payload": {"text": "Running \"npm run build\""}}
                ]))
            }
            ("POST", ["v10", "projects", project, "promote", id]) if *project == PROJECT => {
                let id = id.to_string();
                if s.refuse_promotion.contains(&id) {
                    return vercel_error(409, "conflict", "A promotion is already in progress");
                }
                if !s.deployments.contains_key(&id) && s.production.as_deref() != Some(&id) {
                    return vercel_error(404, "not_found", "Deployment not found");
                }
                // As Vercel: production already on it is a conflict.
                if s.production.as_deref() == Some(&id) && s.pending_production.is_none() {
                    return vercel_error(
                        409,
                        "conflict",
                        "This deployment is already the current production deployment",
                    );
                }
                // A later promotion supersedes one still in progress.
                s.pending_production = None;
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                s.last_alias_request = Some(json!({
                    "fromDeploymentId": s.production,
                    "toDeploymentId": id,
                    "jobStatus": "in-progress",
                    "requestedAt": now_ms,
                    "type": "promote",
                }));
                if s.promotion_lag > 0 || s.fail_promotion.contains(&id) {
                    // Accepted; done a little later, as Vercel may.
                    s.pending_production = Some((id, s.promotion_lag));
                    return ResponseTemplate::new(202);
                }
                s.production = Some(id);
                set_job_status(&mut s, "succeeded");
                ResponseTemplate::new(201)
            }
            _ => {
                s.violations
                    .push(format!("unexpected {} {path}", req.method));
                vercel_error(404, "not_found", "Not found")
            }
        }
    }
}

fn set_job_status(s: &mut State, status: &str) {
    if let Some(r) = s.last_alias_request.as_mut() {
        r["jobStatus"] = json!(status);
    }
}

pub struct Stub {
    pub server: MockServer,
    pub vercel: FakeVercel,
}

impl Stub {
    /// The variables that point deploy-frontend at this stub, with the
    /// token it accepts.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("VERCEL_TOKEN", TOKEN.to_string()),
            ("VERCEL_PROJECT_ID", PROJECT.to_string()),
            ("VERCEL_TEAM_ID", TEAM.to_string()),
            ("VERCEL_API_URL", self.server.uri()),
            ("VERCEL_POLL_INTERVAL", "1s".to_string()),
            ("FRONTEND_GIT_REPO", "maily/maily-frontend".to_string()),
        ]
    }
}

/// A fake Vercel whose production domains serve `production`.
pub fn stub(world: &World, production: Option<&str>) -> Stub {
    let vercel = FakeVercel::default();
    vercel.state().production = production.map(String::from);
    let server = world.rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(vercel.clone())
            .mount(&server)
            .await;
        server
    });
    Stub { server, vercel }
}

pub fn assert_clean(stub: &Stub) {
    let s = stub.vercel.state();
    assert!(
        s.violations.is_empty(),
        "the tool sent: {:#?}",
        s.violations
    );
}
