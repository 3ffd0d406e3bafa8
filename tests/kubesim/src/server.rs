//! The HTTP front: authentication, the request log, API faults, then
//! dispatch to discovery, the store, watches, or the `/_sim/` control API.

use crate::control::{Control, RequestRecord};
use crate::patch::PatchKind;
use crate::request::{self, RequestInfo, Target};
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{ListOptions, Propagation, Store, WriteCtx};
use crate::{table, watch};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, header};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

pub type Body = BoxBody<Bytes, Infallible>;

/// What every request handler needs.
pub struct ServerState {
    pub control: Control,
    pub token: Option<String>,
    /// `host:port`, for `/api`'s serverAddressByClientCIDRs.
    pub address: String,
}

impl ServerState {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.control.store.lock().expect("store lock poisoned")
    }
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(v).expect("JSON serializes"))).boxed())
        .expect("valid response")
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            s.to_string().parse().expect("digits are a header value"),
        );
    }
    r
}

/// Entry point for one HTTP request.
pub async fn handle(
    state: Arc<ServerState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/_sim/") {
        let method = req.method().as_str().to_string();
        let body = read_body(req).await;
        return Ok(crate::control_api::handle(
            &state.control,
            &method,
            rest,
            &body,
        ));
    }
    if let Some(token) = &state.token {
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        if got != Some(token.as_str()) {
            return Ok(error_response(&ApiError::unauthorized()));
        }
    }
    let query = request::parse_query(req.uri().query());
    let target = {
        let store = state.store();
        request::resolve(req.method().as_str(), &path, &query, |g, v, r| {
            store.registry.find(g, v, r).is_some()
        })
    };
    let info = match &target {
        Target::Resource(i) => Some(i.clone()),
        _ => None,
    };
    let verb = info.as_ref().map_or("get".to_string(), |i| i.verb.clone());
    // A watch holds no store lock while it streams: it is no one waiting.
    let _in_flight = (verb != "watch").then(|| crate::control::InFlight::enter(&state.control));
    // Fault rules name a resource (`deployments`) or a subresource (`deployments/status`).
    let resource = info.as_ref().map_or(String::new(), |i| {
        if i.subresource.is_empty() {
            i.resource.clone()
        } else {
            format!("{}/{}", i.resource, i.subresource)
        }
    });

    let (fault, latency) = {
        let mut c = state.control.lock();
        (
            c.api.decide(&verb, &resource, Instant::now()),
            c.api.latency,
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = match fault {
        Some(e) => error_response(&e),
        None => dispatch(&state, target, &query, req).await,
    };
    let i = info.unwrap_or_default();
    state.control.lock().log.push(RequestRecord {
        verb,
        api_group: i.group,
        resource: i.resource,
        subresource: i.subresource,
        namespace: i.namespace,
        name: i.name,
        path,
        code: response.status().as_u16(),
    });
    Ok(response)
}

async fn read_body(req: Request<Incoming>) -> Bytes {
    req.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

fn parse_body(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    if crate::protobuf::is_protobuf(bytes) {
        // kubectl's `create <kind>` generators send protobuf.
        return crate::protobuf::to_json(bytes).map_err(|why| {
            let mut e = ApiError::unsupported_media_type("application/vnd.kubernetes.protobuf");
            e.message = why;
            e
        });
    }
    serde_json::from_slice(bytes).or_else(|_| {
        let s = std::str::from_utf8(bytes).map_err(|e| ApiError::bad_request(e.to_string()))?;
        serde_saphyr::from_str::<Value>(s)
            .map_err(|e| ApiError::bad_request(format!("unable to decode the body: {e}")))
    })
}

async fn dispatch(
    state: &Arc<ServerState>,
    target: Target,
    query: &HashMap<String, String>,
    req: Request<Incoming>,
) -> Response<Body> {
    match target {
        Target::Version => json_response(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-kubesim",
                "gitCommit": "kubesim", "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z",
                "goVersion": "go1.24.2", "compiler": "gc", "platform": "linux/amd64"}),
        ),
        Target::Health => Response::new(Full::new(Bytes::from_static(b"ok")).boxed()),
        Target::CoreVersions if wants_aggregated(&req) => {
            aggregated_response(&state.store().registry.aggregated(true))
        }
        Target::Groups if wants_aggregated(&req) => {
            aggregated_response(&state.store().registry.aggregated(false))
        }
        Target::CoreVersions => {
            json_response(200, &state.store().registry.api_versions(&state.address))
        }
        Target::Groups => json_response(200, &state.store().registry.api_group_list()),
        Target::Group(g) => match state.store().registry.api_group(&g) {
            Some(doc) => json_response(200, &doc),
            None => error_response(&ApiError::no_route(req.uri().path())),
        },
        Target::Resources(g, v) => match state.store().registry.resource_list(&g, &v) {
            Some(doc) => json_response(200, &doc),
            None => error_response(&ApiError::no_route(req.uri().path())),
        },
        Target::OpenApiRoot => json_response(200, &crate::openapi::root(&state.store().registry)),
        Target::OpenApiGroupVersion(p) => {
            match crate::openapi::group_version(&state.store().registry, &p) {
                Some(doc) => json_response(200, &doc),
                None => error_response(&ApiError::no_route(req.uri().path())),
            }
        }
        Target::Unknown => error_response(&ApiError::no_route(req.uri().path())),
        Target::Resource(info) => match resource(state, info, query, req).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        },
    }
}

/// Whether the client asks for `PartialObjectMetadata` (kube's
/// `get_metadata`, `list_metadata`, `metadata_watcher`).
fn wants_metadata(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=PartialObjectMetadata"))
}

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client prefers aggregated discovery v2 (kubectl and kube's
/// `run_aggregated` list it first in Accept; plain JSON gets the legacy documents).
fn wants_aggregated(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| {
            a.split(',').any(|m| {
                let m = m.replace(' ', "");
                m.contains("g=apidiscovery.k8s.io")
                    && m.contains("v=v2;")
                    && m.contains("as=APIGroupDiscoveryList")
                    || m.starts_with(AGGREGATED_V2)
            })
        })
}

fn aggregated_response(v: &Value) -> Response<Body> {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, AGGREGATED_V2)
        .body(Full::new(Bytes::from(serde_json::to_vec(v).expect("JSON serializes"))).boxed())
        .expect("valid response")
}

fn list_options(
    rt: &ResourceType,
    query: &HashMap<String, String>,
) -> Result<ListOptions, ApiError> {
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    fields
        .check_supported(&rt.group, &rt.kind, &rt.selectable_fields)
        .map_err(ApiError::bad_request)?;
    Ok(ListOptions {
        labels: LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?,
        fields,
        limit: query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0),
        continue_token: query.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

/// The field manager of a non-apply write: the `fieldManager` parameter, or
/// the User-Agent's program name as kube-apiserver derives it.
fn manager_of(query: &HashMap<String, String>, req_ua: &str) -> String {
    if let Some(m) = query.get("fieldManager") {
        return m.clone();
    }
    let prog = req_ua.split('/').next().unwrap_or("").trim();
    if prog.is_empty() {
        "unknown".into()
    } else {
        prog.into()
    }
}

async fn resource(
    state: &Arc<ServerState>,
    info: RequestInfo,
    query: &HashMap<String, String>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let rt = state
        .store()
        .registry
        .find(&info.group, &info.version, &info.resource)
        .cloned()
        .ok_or_else(|| ApiError::no_route(&path))?;
    let sub = match info.subresource.as_str() {
        "" => None,
        "status" if rt.has_status => Some("status"),
        "scale" if rt.has_scale => Some("scale"),
        "log" if rt.kind == "Pod" && info.verb == "get" => Some("log"),
        _ => return Err(ApiError::no_route(&path)),
    };
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let manager = manager_of(query, &ua);
    let api_version = rt.api_version();
    let ns = info.namespace.clone();
    if rt.namespaced && ns.is_empty() && !matches!(info.verb.as_str(), "list" | "watch") {
        return Err(ApiError::method_not_allowed());
    }
    let w = WriteCtx {
        manager: &manager,
        api_version: &api_version,
        subresource: sub.filter(|s| *s == "status"),
    };
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
    match info.verb.as_str() {
        "watch" => {
            let rv = query
                .get("resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v > 0);
            let opts = list_options(&rt, query)?;
            let rx = watch::start(
                &state.control,
                watch::WatchRequest {
                    rt: rt.clone(),
                    namespace: ns,
                    labels: opts.labels,
                    fields: opts.fields,
                    resource_version: rv,
                    timeout: query
                        .get("timeoutSeconds")
                        .and_then(|t| t.parse().ok())
                        .map(Duration::from_secs),
                    bookmarks: request::query_bool(query, "allowWatchBookmarks"),
                    metadata_only: wants_metadata(&accept),
                    send_initial_events: request::query_bool(query, "sendInitialEvents"),
                },
            );
            let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            Ok(Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "application/json")
                .body(BodyExt::boxed(body))
                .expect("valid response"))
        }
        "list" => {
            let opts = list_options(&rt, query)?;
            let store = state.store();
            let nsopt = (!ns.is_empty()).then_some(ns.as_str());
            let res = store.list(&rt, nsopt, &opts)?;
            // Serialise outside the lock: the items are shared, immutable Arcs.
            drop(store);
            let rv = res.resource_version.to_string();
            if table::wants_table(&accept) {
                let objs: Vec<&Value> = res.items.iter().map(|a| a.as_ref()).collect();
                let include = query.get("includeObject").map_or("", String::as_str);
                return Ok(json_response(
                    200,
                    &table::table(&rt.kind, &objs, &rv, include),
                ));
            }
            let mut md = json!({"resourceVersion": rv});
            if let Some(c) = res.continue_token {
                md["continue"] = json!(c);
            }
            if let Some(r) = res.remaining {
                md["remainingItemCount"] = json!(r);
            }
            // Serialise items without cloning each object into one big Value.
            let metadata_only = wants_metadata(&accept);
            let (list_kind, list_api_version) = if metadata_only {
                (
                    "PartialObjectMetadataList".to_string(),
                    "meta.k8s.io/v1".to_string(),
                )
            } else {
                (format!("{}List", rt.kind), api_version.clone())
            };
            let mut out = format!(
                "{{\"kind\":\"{list_kind}\",\"apiVersion\":\"{list_api_version}\",\"metadata\":{md},\"items\":["
            );
            for (i, item) in res.items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let text = if metadata_only {
                    serde_json::to_string(&watch::partial_metadata(item))
                } else {
                    serde_json::to_string(item.as_ref())
                };
                out.push_str(&text.expect("JSON serializes"));
            }
            out.push_str("]}");
            Ok(Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(out)).boxed())
                .expect("valid response"))
        }
        "get" => {
            let store = state.store();
            let obj = store.get(&rt, &ns, &info.name)?;
            if sub == Some("scale") {
                return Ok(json_response(200, &scale_of(&obj)));
            }
            if sub == Some("log") {
                return Ok(pod_log(&obj, query.get("container").map(String::as_str)));
            }
            if table::wants_table(&accept) && sub.is_none() {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let include = query.get("includeObject").map_or("", String::as_str);
                return Ok(json_response(
                    200,
                    &table::table(&rt.kind, &[obj.as_ref()], &rv, include),
                ));
            }
            if wants_metadata(&accept) {
                return Ok(json_response(200, &watch::partial_metadata(&obj)));
            }
            Ok(json_response(200, &obj))
        }
        "create" => {
            let body = parse_body(&read_body(req).await)?;
            let mut store = state.store();
            let out = with_dry_run(&mut store, dry_run, |s| s.create(&rt, &ns, body, &w))?;
            Ok(json_response(201, &out))
        }
        "update" => {
            let body = parse_body(&read_body(req).await)?;
            let mut store = state.store();
            if sub == Some("scale") {
                let replicas = body["spec"]["replicas"].clone();
                let out = with_dry_run(&mut store, dry_run, |s| {
                    set_replicas(s, &rt, &ns, &info.name, replicas, &w)
                })?;
                return Ok(json_response(200, &out));
            }
            let out = with_dry_run(&mut store, dry_run, |s| {
                s.update(&rt, &ns, &info.name, body, &w, false)
            })?;
            Ok(json_response(200, &out))
        }
        "patch" => {
            let kind = PatchKind::from_content_type(&content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(&content_type))?;
            let body = parse_body(&read_body(req).await)?;
            let force = request::query_bool(query, "force");
            if kind == PatchKind::Apply && !query.contains_key("fieldManager") {
                return Err(ApiError::invalid(
                    &rt,
                    &info.name,
                    "fieldManager",
                    "Required value: is required for apply patch",
                ));
            }
            let mut store = state.store();
            if sub == Some("scale") {
                let current = scale_of(&store.get(&rt, &ns, &info.name)?.clone());
                let mut patched = current.clone();
                match kind {
                    PatchKind::Json => crate::patch::json_patch(&mut patched, &body)
                        .map_err(|why| ApiError::invalid(&rt, &info.name, "patch", &why))?,
                    _ => crate::patch::merge_patch(&mut patched, &body),
                }
                let replicas = patched["spec"]["replicas"].clone();
                let out = with_dry_run(&mut store, dry_run, |s| {
                    set_replicas(s, &rt, &ns, &info.name, replicas, &w)
                })?;
                return Ok(json_response(200, &out));
            }
            let existed = store.get(&rt, &ns, &info.name).is_ok();
            let out = with_dry_run(&mut store, dry_run, |s| {
                s.patch(&rt, &ns, &info.name, kind, &body, &w, force)
            })?;
            Ok(json_response(if existed { 200 } else { 201 }, &out))
        }
        "delete" => {
            let body = parse_body(&read_body(req).await).unwrap_or(Value::Null);
            let prop = propagation(query, &body);
            let mut store = state.store();
            preconditions_hold(&store, &rt, &ns, &info.name, &body)?;
            let out = with_dry_run(&mut store, dry_run, |s| {
                s.delete(&rt, &ns, &info.name, prop)
            })?;
            // An object held by finalizers comes back with its
            // deletionTimestamp; a removed one as kube-apiserver answers
            // for its kind.
            if out["metadata"]["deletionTimestamp"].is_null() && !returns_deleted_object(&rt) {
                return Ok(json_response(200, &crate::status::deleted(&rt, &out)));
            }
            Ok(json_response(200, &out))
        }
        "deletecollection" => {
            let body = parse_body(&read_body(req).await).unwrap_or(Value::Null);
            let prop = propagation(query, &body);
            let opts = ListOptions {
                limit: None,
                continue_token: None,
                ..list_options(&rt, query)?
            };
            let mut store = state.store();
            let names: Vec<(String, String)> = store
                .list(&rt, Some(&ns), &opts)?
                .items
                .iter()
                .map(|o| {
                    (
                        o["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            let mut items = Vec::new();
            for (ons, n) in names {
                if let Ok(o) = store.delete(&rt, &ons, &n, prop) {
                    items.push(o);
                }
            }
            let rv = store.resource_version().to_string();
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", rt.kind), "apiVersion": api_version,
                    "metadata": {"resourceVersion": rv}, "items": items}),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Whether kube-apiserver answers a DELETE of this kind with the deleted
/// object (its stores with `ReturnDeletedObject`, among the kinds served
/// here) rather than a Success Status (every other kind, custom resources
/// included).
fn returns_deleted_object(rt: &ResourceType) -> bool {
    rt.group.is_empty()
        && matches!(
            rt.kind.as_str(),
            "Namespace" | "Pod" | "Service" | "ServiceAccount"
        )
}

/// `pods/log`: a few plain-text lines saying what the simulated container
/// does, so tools that fetch logs of a failing pod get an answer.
fn pod_log(pod: &Value, container: Option<&str>) -> Response<Body> {
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let status = statuses
        .iter()
        .find(|c| container.is_none_or(|n| c["name"] == n))
        .cloned()
        .unwrap_or(Value::Null);
    let name = status["name"].as_str().unwrap_or(container.unwrap_or(""));
    let image = status["image"].as_str().unwrap_or("");
    let (code, text) = match status["state"]["waiting"]["reason"].as_str() {
        Some(r @ ("ContainerCreating" | "ErrImagePull" | "ImagePullBackOff")) => (
            400,
            format!(
                "container \"{name}\" in pod \"{}\" is waiting to start: {r}",
                pod["metadata"]["name"].as_str().unwrap_or("")
            ),
        ),
        Some("CrashLoopBackOff") => (
            200,
            format!("kubesim: {image} starting\nkubesim: fatal: simulated crash\n"),
        ),
        _ => (
            200,
            format!("kubesim: {image} starting\nkubesim: listening\n"),
        ),
    };
    if code != 200 {
        return error_response(&ApiError::bad_request(text));
    }
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(text)).boxed())
        .expect("valid response")
}

/// Runs a write against a throw-away copy when `dryRun=All`.
fn with_dry_run<T>(
    store: &mut Store,
    dry_run: bool,
    f: impl FnOnce(&mut Store) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    if dry_run {
        let mut copy = store.dry_run_copy();
        f(&mut copy)
    } else {
        f(store)
    }
}

/// `DeleteOptions.preconditions`: the uid, then the resourceVersion, must
/// be the object's (a missing object is the delete's own 404).
fn preconditions_hold(
    store: &Store,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<(), ApiError> {
    let pre = &body["preconditions"];
    if !pre.is_object() {
        return Ok(());
    }
    let Ok(obj) = store.get(rt, ns, name) else {
        return Ok(());
    };
    for (what, field) in [("UID", "uid"), ("ResourceVersion", "resourceVersion")] {
        let found = obj["metadata"][field].as_str().unwrap_or_default();
        if let Some(wanted) = pre[field].as_str()
            && wanted != found
        {
            return Err(ApiError::precondition_failed(rt, name, what, wanted, found));
        }
    }
    Ok(())
}

fn propagation(query: &HashMap<String, String>, body: &Value) -> Propagation {
    let p = query
        .get("propagationPolicy")
        .map(String::as_str)
        .or(body["propagationPolicy"].as_str())
        .unwrap_or("Background");
    if p == "Orphan" || body["orphanDependents"].as_bool() == Some(true) {
        Propagation::Orphan
    } else {
        Propagation::Background
    }
}

/// The `autoscaling/v1` Scale of a workload.
fn scale_of(obj: &Value) -> Value {
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let md = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": md["name"], "namespace": md["namespace"], "uid": md["uid"],
            "resourceVersion": md["resourceVersion"], "creationTimestamp": md["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

fn set_replicas(
    store: &mut Store,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    replicas: Value,
    w: &WriteCtx,
) -> Result<Value, ApiError> {
    if !replicas.is_i64() {
        return Err(ApiError::invalid(
            rt,
            name,
            "spec.replicas",
            "Required value",
        ));
    }
    let mut obj = (*store.get(rt, ns, name)?).clone();
    obj["spec"]["replicas"] = replicas;
    if let Some(md) = obj["metadata"].as_object_mut() {
        md.remove("resourceVersion");
    }
    let main = WriteCtx {
        manager: w.manager,
        api_version: w.api_version,
        subresource: None,
    };
    let out = store.update(rt, ns, name, obj, &main, false)?;
    Ok(scale_of(&out))
}

pub(crate) fn json_reply(code: u16, v: &Value) -> Response<Body> {
    json_response(code, v)
}
