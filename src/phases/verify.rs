//! verify: prove the new slot works before users see it.
//!
//! Every check runs at once, each with a timeout and a few tries; the
//! report is a table of all of them, and any failure fails the phase with
//! every failed check and what it got. The health checks go through the
//! route's preview rule (`x-maily-slot: <new slot>`) and require the version
//! the service reports to be `IMAGE_TAG`, so a check can never pass by
//! reaching the old slot.

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::join_all;
use serde_json::{Value, json};

use crate::config::profile::{HttpCheck, ServiceKind};
use crate::db;
use crate::error::{Failure, Kind, Problem};
use crate::k8s::slot::Slot;
use crate::pipeline::{Context, Phase, PhaseId, PhasePlan, PhaseReport};

pub struct Verify;

const TIMEOUT: Duration = Duration::from_secs(10);
const TRIES: u32 = 3;
const PAUSE: Duration = Duration::from_millis(500);

/// What a check that did not fail saw. A check that had nothing to check
/// is skipped: its row says "skipped", never "passed".
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Passed(String),
    Skipped(String),
}

impl From<String> for Seen {
    fn from(detail: String) -> Seen {
        Seen::Passed(detail)
    }
}

/// One check's outcome, a row of the report's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: String,
    pub passed: bool,
    pub skipped: bool,
    /// What it saw: the value on success, what failed otherwise.
    pub detail: String,
    pub millis: u128,
}

/// Why a check failed, in its own words (HTTP, Redis, AMQP, JSON-RPC), and
/// whether asking again could change the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CheckError {
    /// What is checked may still be starting or catching up (a refused
    /// connection, a 503, a version not yet served): asked again.
    Retry(String),
    /// Asking again cannot help: a setting the check cannot use, a node on
    /// another chain, no contract code, a schema behind the migrations. The
    /// row fails at once instead of after every try.
    Final(String),
}

impl From<String> for CheckError {
    fn from(why: String) -> CheckError {
        CheckError::Retry(why)
    }
}

/// Run a check with a timeout per try and a few tries; a final failure
/// ends it at the first.
async fn checked<F, Fut, T>(name: String, check: F) -> Outcome
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, CheckError>>,
    T: Into<Seen>,
{
    let started = Instant::now();
    let mut last = String::new();
    for attempt in 1..=TRIES {
        match tokio::time::timeout(TIMEOUT, check()).await {
            Ok(Ok(seen)) => {
                let (skipped, detail) = match seen.into() {
                    Seen::Passed(detail) => (false, detail),
                    Seen::Skipped(why) => (true, format!("skipped: {why}")),
                };
                return Outcome {
                    name,
                    passed: true,
                    skipped,
                    detail,
                    millis: started.elapsed().as_millis(),
                };
            }
            Ok(Err(CheckError::Retry(why))) => last = why,
            Ok(Err(CheckError::Final(why))) => {
                return Outcome {
                    name,
                    passed: false,
                    skipped: false,
                    detail: why,
                    millis: started.elapsed().as_millis(),
                };
            }
            Err(_) => last = format!("no answer within {}", humantime::format_duration(TIMEOUT)),
        }
        if attempt < TRIES {
            tokio::time::sleep(PAUSE).await;
        }
    }
    Outcome {
        name,
        passed: false,
        skipped: false,
        detail: format!("{last} (after {TRIES} tries)"),
        millis: started.elapsed().as_millis(),
    }
}

/// The client of the checks against the new slot and the chain nodes. It
/// follows no redirect: a check is of the answer the slot gives, and a
/// redirect to a login or error page that answers 200 is no health (a
/// check that expects a 301 or 302 can say so).
fn http() -> reqwest::Client {
    // The process's one crypto provider (main installs it too; a library
    // caller may not have).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// The value at a dot path of a JSON document.
pub fn field<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, key| v.get(key))
}

/// A service's health on the new slot: 200, and the release it reports.
async fn health(base: &str, path: &str, slot: Slot, tag: &str) -> Result<String, CheckError> {
    let url = format!(
        "{}{}/health",
        base.trim_end_matches('/'),
        path.trim_end_matches('/')
    );
    let resp = http()
        .get(&url)
        .header("x-maily-slot", slot.as_str())
        .send()
        .await
        .map_err(|e| format!("{}", e.without_url()))?;
    let status = resp.status();
    let body = crate::providers::http::read_body(resp)
        .await
        .unwrap_or_else(|why| why);
    if !status.is_success() {
        return Err(format!("{url} answered {status}: {}", clip(&body)).into());
    }
    let doc: Value = serde_json::from_str(&body)
        .map_err(|_| format!("{url} answered {status} but not JSON: {}", clip(&body)))?;
    match doc.get("version").and_then(Value::as_str) {
        Some(v) if v == tag => Ok(format!("{status}, version {v}")),
        Some(v) => Err(format!(
            "{url} reports version {v}, not {tag}: the request reached another release (the old slot?)"
        ).into()),
        None => Err(format!("{url} reports no version: {}", clip(&body)).into()),
    }
}

async fn http_check(base: &str, check: &HttpCheck, slot: Slot) -> Result<String, CheckError> {
    let url = format!("{}{}", base.trim_end_matches('/'), check.path);
    let method = reqwest::Method::from_bytes(check.method.as_bytes())
        .map_err(|_| CheckError::Final(format!("unknown method {}", check.method)))?;
    let resp = http()
        .request(method, &url)
        .header("x-maily-slot", slot.as_str())
        .send()
        .await
        .map_err(|e| format!("{}", e.without_url()))?;
    let status = resp.status();
    let body = crate::providers::http::read_body(resp)
        .await
        .unwrap_or_else(|why| why);
    if status.as_u16() != check.status {
        return Err(format!(
            "{url} answered {status}, expected {}: {}",
            check.status,
            clip(&body)
        )
        .into());
    }
    if !check.json.is_empty() {
        let doc: Value = serde_json::from_str(&body)
            .map_err(|_| format!("{url} is not JSON: {}", clip(&body)))?;
        for (path, want) in &check.json {
            let got = field(&doc, path);
            if got != Some(want) {
                return Err(format!(
                    "{url}: {path} is {}, expected {want}",
                    got.map_or("absent".into(), |g| g.to_string())
                )
                .into());
            }
        }
    }
    Ok(format!("{status}"))
}

async fn postgres(cx: &Context) -> Result<String, CheckError> {
    let settings =
        crate::phases::migrate::settings(cx).map_err(|e| CheckError::Final(e.to_string()))?;
    let status = db::status(&settings)
        .await
        .map_err(|e| crate::phases::migrate::typed(e).to_string())?;
    match (status.current_version, status.latest_version) {
        (c, l) if c == l && status.pending.is_empty() => {
            Ok(format!("schema at {}", c.unwrap_or(0)))
        }
        (c, l) => Err(CheckError::Final(format!(
            "schema at {}, the release's newest migration is {} ({} pending): run migrate",
            c.map_or("nothing".into(), |v| v.to_string()),
            l.map_or("none".into(), |v| v.to_string()),
            status.pending.len()
        ))),
    }
}

async fn redis(url: &str) -> Result<String, CheckError> {
    let client = redis::Client::open(url)
        .map_err(|e| CheckError::Final(format!("REDIS_URL is not usable: {:?}", e.kind())))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("cannot connect to Redis: {e}"))?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("PING failed: {e}"))?;
    Ok(pong)
}

async fn rabbitmq(url: &str, queues: &[String]) -> Result<String, CheckError> {
    use amqprs::channel::QueueDeclareArguments;
    use amqprs::connection::{Connection, OpenConnectionArguments};
    let mut args = OpenConnectionArguments::try_from(amqp_uri(url).as_str())
        .map_err(|_| CheckError::Final("RABBITMQ_URL is not an AMQP URI".to_string()))?;
    // amqprs sends the user and password as the URI spells them; the AMQP
    // URI spec has them percent-encoded (`p%40ss` for `p@ss`).
    if let Some((user, password)) = amqp_credentials(url) {
        args.credentials(amqprs::security::SecurityCredentials::new_plain(
            &user, &password,
        ));
    }
    let conn = Connection::open(&args)
        .await
        .map_err(|e| format!("cannot connect to RabbitMQ: {e}"))?;
    let channel = conn
        .open_channel(None)
        .await
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    let mut missing = Vec::new();
    for q in queues {
        // A passive declare fails (and closes the channel) when the queue
        // is absent; each queue gets a fresh channel so all are reported.
        let ch = conn
            .open_channel(None)
            .await
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        match ch
            .queue_declare(QueueDeclareArguments::new(q).passive(true).finish())
            .await
        {
            Ok(_) => {
                let _ = ch.close().await;
            }
            Err(_) => missing.push(q.clone()),
        }
    }
    let _ = channel.close().await;
    let _ = conn.close().await;
    if missing.is_empty() {
        Ok(format!("connected; queues present: {}", queues.join(", ")))
    } else {
        Err(format!("queues missing: {}", missing.join(", ")).into())
    }
}

/// The user and password of an AMQP URI, percent-decoded as the AMQP URI
/// spec has them; `None` when it names no user (amqprs's default).
pub fn amqp_credentials(url: &str) -> Option<(String, String)> {
    let parsed = url::Url::parse(url).ok()?;
    if parsed.username().is_empty() {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((
        decode(parsed.username()),
        decode(parsed.password().unwrap_or_default()),
    ))
}

/// The URI as amqprs reads it: it takes the path verbatim as the vhost, so
/// the spec's `%2f` for the default vhost `/` becomes no path at all, and
/// other escapes are decoded.
pub fn amqp_uri(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    let vhost = percent_encoding::percent_decode_str(parsed.path().trim_start_matches('/'))
        .decode_utf8_lossy()
        .into_owned();
    if vhost == "/" || vhost.is_empty() {
        parsed.set_path("");
        return parsed.as_str().trim_end_matches('/').to_string();
    }
    let rest = url
        .split_once(parsed.path())
        .map_or("", |(_, r)| r)
        .to_string();
    let head = url
        .strip_suffix(&format!("{}{rest}", parsed.path()))
        .unwrap_or(url);
    format!("{head}/{vhost}{rest}")
}

async fn rpc(url: &str, method: &str, params: Value) -> Result<Value, CheckError> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let resp = http()
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{method}: {}", e.without_url()))?;
    let status = resp.status();
    // Read to the same bound as every answer the tool reads.
    let body = crate::providers::http::read_body(resp)
        .await
        .map_err(|why| format!("{method}: {why}"))?;
    let doc: Value = serde_json::from_str(&body)
        .map_err(|_| format!("{method}: answered {status} without JSON"))?;
    if let Some(err) = doc.get("error") {
        return Err(format!("{method}: {err}").into());
    }
    doc.get("result")
        .cloned()
        .ok_or_else(|| format!("{method}: no result in {}", clip(&doc.to_string())).into())
}

async fn chain(url: &str, chain_id: u64, contract: &str) -> Result<String, CheckError> {
    let id = rpc(url, "eth_chainId", json!([])).await?;
    let got = id
        .as_str()
        .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| format!("eth_chainId: not a hex quantity: {id}"))?;
    if got != chain_id {
        return Err(CheckError::Final(format!(
            "the node is on chain {got}, expected {chain_id}"
        )));
    }
    let code = rpc(url, "eth_getCode", json!([contract, "latest"])).await?;
    match code_bytes(&code) {
        Ok(0) => Err(CheckError::Final(format!(
            "no contract code at {contract} on chain {got}"
        ))),
        Ok(n) => Ok(format!(
            "chain {got}, contract {contract} has {n} bytes of code"
        )),
        Err(why) => Err(CheckError::Final(format!(
            "eth_getCode for {contract} answered {why}"
        ))),
    }
}

/// The size of the code `eth_getCode` answered (`0x` and hex bytes; no
/// code is `0x`, and a node that pads it answers zeros), or why it is not
/// an answer of that shape.
pub fn code_bytes(answer: &Value) -> Result<usize, String> {
    let text = answer
        .as_str()
        .ok_or_else(|| format!("{}, not a hex string", clip(&answer.to_string())))?;
    let hex = text
        .strip_prefix("0x")
        .ok_or_else(|| format!("{}, not 0x-prefixed hex", clip(text)))?;
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{}, not hex", clip(text)));
    }
    if hex.chars().all(|c| c == '0') {
        return Ok(0);
    }
    Ok(hex.len().div_ceil(2))
}

async fn certificates(cx: &Context) -> Result<Seen, CheckError> {
    use kube::api::{DynamicObject, GroupVersionKind, ListParams};
    let applier = cx.applier().await.map_err(|e| e.to_string())?;
    let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
    // Only a cluster that does not serve the kind is one without
    // cert-manager; discovery that fails (a 503, a timeout) is no skip.
    let gv = kube::core::GroupVersion::gv(&gvk.group, &gvk.version);
    let served = match applier.served_or_none(&gv).await {
        Ok(served) => served,
        Err(e) => {
            return Err(
                format!("reading the cluster's API discovery for cert-manager.io/v1: {e}").into(),
            );
        }
    };
    let Some(ar) = served
        .iter()
        .find(|(ar, _)| ar.kind == gvk.kind)
        .map(|(ar, _)| ar.clone())
    else {
        return Ok(Seen::Skipped(
            "cert-manager is not installed; no Certificates to check".into(),
        ));
    };
    let api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(applier.client().clone(), &cx.config.profile.namespace, &ar);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut not_ready = Vec::new();
    for c in &list.items {
        let ready = c
            .data
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
        if ready.is_none_or(|r| r["status"] != "True") {
            let why = ready
                .and_then(|r| r["message"].as_str())
                .unwrap_or("no Ready condition");
            not_ready.push(format!(
                "{}: {why}",
                c.metadata.name.as_deref().unwrap_or("?")
            ));
        }
    }
    if not_ready.is_empty() {
        Ok(Seen::Passed(format!("{} Ready", list.items.len())))
    } else {
        Err(format!("not Ready: {}", not_ready.join("; ")).into())
    }
}

/// The new frontend's preview URL answers 200, itself. Redirects are
/// followed on its own host only: a preview behind Vercel's Deployment
/// Protection redirects to Vercel's login, whose page answers 200 too and
/// must not pass for the frontend. `bypass` is the project's Protection
/// Bypass for Automation secret, sent as Vercel documents it.
async fn frontend(url: &str, bypass: Option<&str>) -> Result<String, CheckError> {
    let url = if url.starts_with("http") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    // The process's one crypto provider (main installs it too; a library
    // caller may not have).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let own = reqwest::Url::parse(&url)
        .ok()
        .map(|u| (u.host_str().map(str::to_owned), u.port_or_known_default()));
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            let here = (
                attempt.url().host_str().map(str::to_owned),
                attempt.url().port_or_known_default(),
            );
            if Some(here) != own || attempt.previous().len() >= 10 {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .build()
        .unwrap_or_default();
    let mut req = client.get(&url);
    if let Some(secret) = bypass {
        req = req.header("x-vercel-protection-bypass", secret);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("{}", e.without_url()))?;
    let status = resp.status();
    let protected = "the preview is behind Vercel's Deployment Protection: set VERCEL_AUTOMATION_BYPASS_SECRET to the project's Protection Bypass for Automation secret";
    match status.as_u16() {
        200 => Ok("200".into()),
        300..=399 => {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| reqwest::Url::parse(l).ok())
                .map_or("another host".to_string(), |l| {
                    format!("{}{}", l.host_str().unwrap_or("?"), l.path())
                });
            Err(CheckError::Final(format!(
                "{url} redirects to {to}, not a page of its own; {protected}"
            )))
        }
        401 | 403 if bypass.is_none() => Err(CheckError::Final(format!(
            "{url} answered {status}; {protected}"
        ))),
        401 | 403 => Err(CheckError::Final(format!(
            "{url} answered {status} to the bypass secret in VERCEL_AUTOMATION_BYPASS_SECRET; check it is the project's current one"
        ))),
        _ => Err(format!("{url} answered {status}").into()),
    }
}

fn clip(s: &str) -> String {
    let t: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        format!("{t}…")
    } else {
        t
    }
}

fn base_url(cx: &Context) -> String {
    cx.config
        .vars
        .get("VERIFY_BASE_URL")
        .filter(|v| !v.is_empty())
        .map(String::from)
        .unwrap_or_else(|| {
            format!(
                "https://{}",
                cx.config
                    .profile
                    .domains
                    .get("api")
                    .cloned()
                    .unwrap_or_default()
            )
        })
}

/// The http services whose health the new slot must show: the AI ones
/// only when configure-ai deploys them in this run (or did, as recorded).
fn http_services(
    cx: &Context,
) -> impl Iterator<Item = (&String, &crate::config::profile::Service)> {
    cx.watched_services()
        .into_iter()
        .filter(|(_, s)| s.kind == ServiceKind::Http)
}

/// The names of the checks, in report order.
fn check_names(cx: &Context) -> Vec<String> {
    let p = &cx.config.profile;
    let mut names: Vec<String> = http_services(cx)
        .map(|(n, _)| format!("health {n}"))
        .collect();
    names.extend(p.verify.checks.iter().map(|c| format!("http {}", c.name)));
    names.extend(
        [
            "postgres",
            "redis",
            "rabbitmq",
            "ethereum",
            "polygon",
            "certificates",
        ]
        .map(String::from),
    );
    names.push("frontend".into());
    names
}

#[async_trait]
impl Phase for Verify {
    fn id(&self) -> PhaseId {
        PhaseId::Verify
    }

    async fn plan(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        Ok(PhasePlan {
            summary: format!(
                "{} checks of the new slot, all at once, through {}",
                check_names(cx).len(),
                base_url(cx)
            ),
            steps: check_names(cx),
        })
    }

    async fn run(&self, cx: &mut Context) -> anyhow::Result<PhaseReport> {
        let slot = cx.target_slot().await?;
        let cx: &Context = cx;
        let vars = &cx.config.vars;
        let var = |n: &str| vars.get(n).unwrap_or_default().to_string();
        let base = base_url(cx);
        let profile = &cx.config.profile;

        let mut checks: Vec<std::pin::Pin<Box<dyn Future<Output = Outcome> + Send + '_>>> =
            Vec::new();
        for (name, svc) in http_services(cx) {
            let path = match svc.path.as_deref() {
                Some("/") => String::new(),
                Some(p) => p.to_string(),
                None => format!("/{name}"),
            };
            // The version this run put in the slot for the service's layer:
            // deployed, or carried over.
            let tag = cx
                .expected_version(name)
                .unwrap_or_else(|| var("IMAGE_TAG"));
            let base = base.clone();
            checks.push(Box::pin(checked(format!("health {name}"), move || {
                let (base, path, tag) = (base.clone(), path.clone(), tag.clone());
                async move { health(&base, &path, slot, &tag).await }
            })));
        }
        for check in &profile.verify.checks {
            let base = base.clone();
            checks.push(Box::pin(checked(
                format!("http {}", check.name),
                move || {
                    let base = base.clone();
                    async move { http_check(&base, check, slot).await }
                },
            )));
        }
        checks.push(Box::pin(checked("postgres".into(), move || postgres(cx))));
        let redis_url = var("REDIS_URL");
        checks.push(Box::pin(checked("redis".into(), move || {
            let u = redis_url.clone();
            async move { redis(&u).await }
        })));
        let (amqp_url, queues) = (var("RABBITMQ_URL"), profile.verify.queues.clone());
        checks.push(Box::pin(checked("rabbitmq".into(), move || {
            let (u, q) = (amqp_url.clone(), queues.clone());
            async move { rabbitmq(&u, &q).await }
        })));
        for (name, url, id, contract) in [
            (
                "ethereum",
                "ETHEREUM_RPC_URL",
                "ETHEREUM_CHAIN_ID",
                "ETHEREUM_CONTRACT_ADDRESS",
            ),
            (
                "polygon",
                "POLYGON_RPC_URL",
                "POLYGON_CHAIN_ID",
                "POLYGON_CONTRACT_ADDRESS",
            ),
        ] {
            let (url, contract) = (var(url), var(contract));
            let id: u64 = var(id).parse().unwrap_or(0);
            checks.push(Box::pin(checked(name.into(), move || {
                let (u, c) = (url.clone(), contract.clone());
                async move { chain(&u, id, &c).await }
            })));
        }
        checks.push(Box::pin(checked("certificates".into(), move || {
            certificates(cx)
        })));
        let front = cx.records.frontend.as_ref().and_then(|f| f.url.clone());
        let bypass = cx
            .config
            .vars
            .get("VERCEL_AUTOMATION_BYPASS_SECRET")
            .filter(|v| !v.is_empty())
            .map(String::from);
        checks.push(Box::pin(checked("frontend".into(), move || {
            let f = front.clone();
            let bypass = bypass.clone();
            async move {
                match f {
                    Some(url) => frontend(&url, bypass.as_deref()).await.map(Seen::Passed),
                    None => Ok(Seen::Skipped(
                        "no new frontend deployment in this run".into(),
                    )),
                }
            }
        })));

        let outcomes = join_all(checks).await;
        let rows: Vec<String> = outcomes
            .iter()
            .map(|o| {
                let mark = match (o.passed, o.skipped) {
                    (true, false) => "✓",
                    (true, true) => "-",
                    (false, _) => "✗",
                };
                format!("{mark} {:<24} {:>6} ms  {}", o.name, o.millis, o.detail)
            })
            .collect();
        let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed).collect();
        if !failed.is_empty() {
            let problems = failed
                .iter()
                .map(|o| Problem {
                    phase: Some("verify".into()),
                    subject: o.name.clone(),
                    problem: o.detail.clone(),
                    fix: String::new(),
                })
                .collect();
            return Err(Failure::with_problems(
                Kind::PhaseFailed,
                format!(
                    "{} of {} checks of slot {slot} failed: {}",
                    failed.len(),
                    outcomes.len(),
                    failed
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                problems,
            )
            .into());
        }
        let skipped = outcomes.iter().filter(|o| o.skipped).count();
        Ok(PhaseReport {
            summary: format!(
                "{} checks of slot {slot} passed, {skipped} skipped",
                outcomes.len() - skipped
            ),
            details: rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn final_text(r: Result<String, CheckError>) -> String {
        match r {
            Err(CheckError::Final(why)) => why,
            other => panic!("a final failure, not {other:?}"),
        }
    }

    /// A preview behind Vercel's Deployment Protection redirects to Vercel's
    /// login (another host, whose page answers 200) or answers 401: neither
    /// passes for the frontend; the bypass secret opens it; a redirect on
    /// the frontend's own host is followed.
    #[tokio::test]
    async fn a_protected_preview_never_passes_for_the_frontend() {
        use wiremock::matchers::{header, method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let vercel_login = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/login"))
            .respond_with(
                ResponseTemplate::new(200).set_body_string("<html>Log in to Vercel</html>"),
            )
            .mount(&vercel_login)
            .await;
        let preview = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/sso"))
            .respond_with(
                ResponseTemplate::new(302)
                    .insert_header("location", format!("{}/login", vercel_login.uri()).as_str()),
            )
            .mount(&preview)
            .await;
        Mock::given(method("GET"))
            .and(path("/"))
            .and(header("x-vercel-protection-bypass", "bypass-Secret-42"))
            .respond_with(ResponseTemplate::new(302).insert_header("location", "/en"))
            .mount(&preview)
            .await;
        Mock::given(method("GET"))
            .and(path("/en"))
            .respond_with(ResponseTemplate::new(200).set_body_string("Maily"))
            .mount(&preview)
            .await;
        Mock::given(method("GET"))
            .and(path("/"))
            .respond_with(ResponseTemplate::new(401))
            .with_priority(10)
            .mount(&preview)
            .await;

        let why = final_text(frontend(&format!("{}/sso", preview.uri()), None).await);
        assert!(why.contains("redirects to 127.0.0.1/login"), "{why}");
        assert!(why.contains("VERCEL_AUTOMATION_BYPASS_SECRET"), "{why}");
        let why = final_text(frontend(&format!("{}/", preview.uri()), None).await);
        assert!(why.contains("401"), "{why}");
        assert!(why.contains("Deployment Protection"), "{why}");
        let why = final_text(frontend(&format!("{}/", preview.uri()), Some("wrong")).await);
        assert!(why.contains("to the bypass secret"), "{why}");
        assert_eq!(
            frontend(&format!("{}/", preview.uri()), Some("bypass-Secret-42"))
                .await
                .unwrap(),
            "200"
        );
    }

    /// A profile check whose answer is a redirect to a login page (on
    /// another host, answering 200) fails; one that expects the redirect
    /// passes.
    #[tokio::test]
    async fn a_profile_check_judges_the_answer_not_where_a_redirect_leads() {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let login = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string("<html>Sign in</html>"))
            .mount(&login)
            .await;
        let slot = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v1/status"))
            .respond_with(
                ResponseTemplate::new(302)
                    .insert_header("location", format!("{}/sso", login.uri()).as_str()),
            )
            .mount(&slot)
            .await;
        let check = |status: u16| HttpCheck {
            name: "status".into(),
            method: "GET".into(),
            path: "/api/v1/status".into(),
            status,
            json: Default::default(),
        };
        let err = http_check(&slot.uri(), &check(200), Slot::Green)
            .await
            .unwrap_err();
        let why = match err {
            CheckError::Retry(w) | CheckError::Final(w) => w,
        };
        assert!(why.contains("answered 302"), "{why}");
        assert!(
            http_check(&slot.uri(), &check(302), Slot::Green)
                .await
                .is_ok(),
            "a check that expects the redirect"
        );
    }

    #[test]
    fn amqp_credentials_are_percent_decoded() {
        assert_eq!(
            amqp_credentials("amqps://maily:p%40ss%3Aw0rd@mq.example.com:5671/%2f"),
            Some(("maily".into(), "p@ss:w0rd".into()))
        );
        assert_eq!(amqp_credentials("amqp://mq.example.com"), None);
    }

    #[test]
    fn contract_code_is_read_as_hex_bytes() {
        assert_eq!(code_bytes(&json!("0x")), Ok(0));
        assert_eq!(code_bytes(&json!("0x0")), Ok(0));
        assert_eq!(code_bytes(&json!("0x0000")), Ok(0));
        assert_eq!(code_bytes(&json!("0x6080604052")), Ok(5));
        assert!(code_bytes(&json!("")).is_err());
        assert!(code_bytes(&json!("0")).is_err());
        assert!(code_bytes(&json!("0xzz")).is_err());
        assert!(code_bytes(&json!(null)).is_err());
    }

    #[tokio::test]
    async fn a_check_that_may_recover_is_asked_again_and_a_final_failure_is_not() {
        let asked = AtomicU32::new(0);
        let out = checked("starting".into(), || async {
            match asked.fetch_add(1, Ordering::SeqCst) {
                0 => Err(CheckError::Retry("connection refused".into())),
                _ => Ok("200".to_string()),
            }
        })
        .await;
        assert!(out.passed, "{out:?}");
        assert_eq!(asked.load(Ordering::SeqCst), 2);

        let asked = AtomicU32::new(0);
        let out = checked("rpc".into(), || async {
            asked.fetch_add(1, Ordering::SeqCst);
            Err::<String, _>(CheckError::Final(
                "the node is on chain 1, expected 137".into(),
            ))
        })
        .await;
        assert!(!out.passed);
        assert_eq!(asked.load(Ordering::SeqCst), 1, "asked once");
        assert_eq!(out.detail, "the node is on chain 1, expected 137");

        let asked = AtomicU32::new(0);
        let out = checked("redis".into(), || async {
            asked.fetch_add(1, Ordering::SeqCst);
            Err::<String, _>(CheckError::Retry("connection refused".into()))
        })
        .await;
        assert_eq!(asked.load(Ordering::SeqCst), TRIES);
        assert_eq!(
            out.detail,
            format!("connection refused (after {TRIES} tries)")
        );
    }

    #[test]
    fn the_default_vhost_escape_becomes_no_vhost() {
        assert_eq!(
            amqp_uri("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:guest@127.0.0.1:5672"
        );
        assert_eq!(amqp_uri("amqp://u:p@mq:5672/"), "amqp://u:p@mq:5672");
        assert_eq!(amqp_uri("amqps://u:p@mq/maily"), "amqps://u:p@mq/maily");
        assert_eq!(
            amqp_uri("amqp://u:p@mq/maily%2Dprod"),
            "amqp://u:p@mq/maily-prod"
        );
    }

    #[test]
    fn dot_paths_reach_nested_fields() {
        let doc = json!({"service": "api", "build": {"version": "v1", "git": {"sha": "abc"}}});
        assert_eq!(field(&doc, "service"), Some(&json!("api")));
        assert_eq!(field(&doc, "build.git.sha"), Some(&json!("abc")));
        assert_eq!(field(&doc, "build.nope"), None);
    }
}
