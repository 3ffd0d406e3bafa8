//! The controllers and the kubelet, in one loop: Deployments make
//! ReplicaSets, ReplicaSets make Pods, Pods report status over (scaled)
//! time and image faults, Jobs run a pod to completion, StatefulSets report
//! their replicas ready. Decisions live in `deployment` and `pod`; this
//! module reads the store, calls them, and writes what changed.

pub mod deployment;
pub mod pod;

use crate::control::Control;
use crate::faults::ImageFaultRule;
use crate::resources::ResourceType;
use crate::store::{Propagation, Store, WriteCtx, now_rfc3339, random_suffix};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the loop runs; well under any rollout time a test would use.
pub const TICK: Duration = Duration::from_millis(50);

const MANAGER: &str = "kube-controller-manager";

fn ctx(api_version: &str, status: bool) -> WriteCtx<'_> {
    WriteCtx {
        manager: MANAGER,
        api_version,
        subresource: status.then_some("status"),
    }
}

fn md<'a>(o: &'a Value, k: &str) -> &'a str {
    o["metadata"][k].as_str().unwrap_or("")
}

fn owned_by(o: &Value, uid: &str) -> bool {
    o["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

fn owner_ref(owner: &Value, rt: &ResourceType) -> Value {
    json!({"apiVersion": rt.api_version(), "kind": rt.kind, "name": md(owner, "name"),
        "uid": md(owner, "uid"), "controller": true, "blockOwnerDeletion": true})
}

fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn terminating(o: &Value) -> bool {
    !o["metadata"]["deletionTimestamp"].is_null()
}

/// Records a core/v1 Event about `about`, as the controllers and the kubelet do.
#[allow(clippy::too_many_arguments)]
fn record_event(
    store: &mut Store,
    t: &ResourceType,
    about: &Value,
    kind: &str,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = md(about, "namespace").to_string();
    let now = now_rfc3339();
    let ev = json!({
        "metadata": {"name": format!("{}.{}", md(about, "name"), random_suffix(8)), "namespace": ns},
        "involvedObject": {"kind": kind, "namespace": ns, "name": md(about, "name"), "uid": md(about, "uid"),
            "apiVersion": about["apiVersion"], "resourceVersion": md(about, "resourceVersion")},
        "reason": reason, "message": message, "type": type_,
        "source": {"component": component}, "reportingComponent": component,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    let av = t.api_version();
    let _ = store.create(t, &ns, ev, &ctx(&av, false));
}

/// The loop's memory: when each pod appeared, when each Deployment last progressed.
pub struct Controller {
    control: Control,
    pod_born: HashMap<String, (Instant, chrono::DateTime<chrono::Utc>)>,
    pod_ips: HashMap<String, String>,
    next_ip: u32,
    last_progress: HashMap<String, Instant>,
    new_rs_created: HashSet<String>,
    /// Endpoints objects this loop made, deleted when their Service goes.
    managed_endpoints: HashSet<(String, String)>,
}

struct Types {
    event: ResourceType,
    deploy: ResourceType,
    rs: ResourceType,
    pod: ResourceType,
    job: ResourceType,
    sts: ResourceType,
    svc: ResourceType,
    ep: ResourceType,
    eps: ResourceType,
}

impl Controller {
    pub fn new(control: Control) -> Self {
        Controller {
            control,
            pod_born: HashMap::new(),
            pod_ips: HashMap::new(),
            next_ip: 2,
            last_progress: HashMap::new(),
            new_rs_created: HashSet::new(),
            managed_endpoints: HashSet::new(),
        }
    }

    /// Runs until `stop` changes.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => self.reconcile(),
                _ = stop.changed() => return,
            }
        }
    }

    /// One pass over everything.
    pub fn reconcile(&mut self) {
        let (faults, unit, scale) = {
            let s = self.control.lock();
            (
                s.image_faults.clone(),
                s.rollout.mul_f64(s.time_scale),
                s.time_scale,
            )
        };
        let store_arc = self.control.store.clone();
        let mut store = store_arc.lock().expect("store lock poisoned");
        let find =
            |s: &Store, g: &str, p: &str| s.registry.find_any(g, p).expect("builtin").clone();
        let t = Types {
            event: find(&store, "", "events"),
            deploy: find(&store, "apps", "deployments"),
            rs: find(&store, "apps", "replicasets"),
            pod: find(&store, "", "pods"),
            job: find(&store, "batch", "jobs"),
            sts: find(&store, "apps", "statefulsets"),
            svc: find(&store, "", "services"),
            ep: find(&store, "", "endpoints"),
            eps: find(&store, "discovery.k8s.io", "endpointslices"),
        };
        self.deployments(&mut store, &t);
        self.replicasets(&mut store, &t);
        self.jobs(&mut store, &t);
        self.pods(&mut store, &t, &faults, unit, scale);
        self.replicaset_status(&mut store, &t);
        self.deployment_status(&mut store, &t, scale);
        self.statefulsets(&mut store, &t);
        self.endpoints(&mut store, &t);
    }

    fn write_status(
        store: &mut Store,
        rt: &ResourceType,
        obj: &Value,
        status: Value,
        manager: &str,
    ) {
        if obj["status"] == status {
            return;
        }
        let mut new = obj.clone();
        new["status"] = status;
        if let Some(m) = new["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let av = rt.api_version();
        let w = WriteCtx {
            manager,
            api_version: &av,
            subresource: Some("status"),
        };
        if let Err(e) = store.update(rt, md(obj, "namespace"), md(obj, "name"), new, &w, false) {
            tracing::debug!("status write of {} failed: {}", md(obj, "name"), e.message);
        }
    }

    fn deployments(&mut self, store: &mut Store, t: &Types) {
        let av = t.rs.api_version();
        for d in store.all_of(&t.deploy.key()) {
            if terminating(&d) {
                continue;
            }
            let (ns, uid) = (md(&d, "namespace").to_string(), md(&d, "uid").to_string());
            let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
            let hash = deployment::template_hash(&d["spec"]["template"]);
            let owned: Vec<Arc<Value>> = store
                .all_of(&t.rs.key())
                .into_iter()
                .filter(|r| md(r, "namespace") == ns && owned_by(r, &uid))
                .collect();
            let max_rev = owned.iter().map(|r| revision(r)).max().unwrap_or(0);
            let new = owned
                .iter()
                .find(|r| r["metadata"]["labels"]["pod-template-hash"] == hash.as_str())
                .cloned();
            let new = match new {
                Some(n) => {
                    if revision(&n) < max_rev {
                        // A rollback to an older template makes that ReplicaSet the newest revision.
                        let mut bumped = (*n).clone();
                        bumped["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                            json!((max_rev + 1).to_string());
                        bumped["metadata"]
                            .as_object_mut()
                            .map(|m| m.remove("resourceVersion"));
                        let _ = store.update(
                            &t.rs,
                            &ns,
                            md(&n, "name"),
                            bumped,
                            &ctx(&av, false),
                            false,
                        );
                    }
                    n
                }
                None => {
                    let name = format!("{}-{}", md(&d, "name"), hash);
                    let mut labels = d["spec"]["template"]["metadata"]["labels"].clone();
                    labels["pod-template-hash"] = json!(hash);
                    let rs = json!({
                        "metadata": {
                            "name": name, "namespace": ns, "labels": labels,
                            "annotations": {
                                "deployment.kubernetes.io/revision": (max_rev + 1).to_string(),
                                "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                            },
                            "ownerReferences": [owner_ref(&d, &t.deploy)],
                        },
                        "spec": {
                            "replicas": 0,
                            "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                            "selector": deployment::rs_selector(&d, &hash),
                            "template": deployment::rs_template(&d, &hash),
                        },
                    });
                    match store.create(&t.rs, &ns, rs, &ctx(&av, false)) {
                        Ok(created) => {
                            self.new_rs_created.insert(uid.clone());
                            Arc::new(created)
                        }
                        Err(e) => {
                            tracing::debug!("creating ReplicaSet {name} failed: {}", e.message);
                            continue;
                        }
                    }
                }
            };
            // The Deployment carries its current revision, as kubectl rollout undo expects.
            let rev = store
                .get(&t.rs, &ns, md(&new, "name"))
                .map(|r| revision(&r))
                .unwrap_or_else(|_| revision(&new))
                .to_string();
            if d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] != rev.as_str() {
                let mut annotated = (*d).clone();
                if !annotated["metadata"]["annotations"].is_object() {
                    annotated["metadata"]["annotations"] = json!({});
                }
                annotated["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                    json!(rev);
                if let Some(m) = annotated["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                let dav = t.deploy.api_version();
                let _ = store.update(
                    &t.deploy,
                    &ns,
                    md(&d, "name"),
                    annotated,
                    &ctx(&dav, false),
                    false,
                );
            }
            let mut old: Vec<Arc<Value>> = owned
                .into_iter()
                .filter(|r| md(r, "uid") != md(&new, "uid"))
                .collect();
            old.sort_by_key(|r| revision(r));
            let counts = |r: &Value| deployment::RsCounts {
                name: md(r, "name").to_string(),
                replicas: r["spec"]["replicas"].as_i64().unwrap_or(0),
                available: r["status"]["availableReplicas"].as_i64().unwrap_or(0),
            };
            let new_c = counts(&new);
            let old_c: Vec<_> = old.iter().map(|r| counts(r)).collect();
            let (new_target, old_targets) = if d["spec"]["strategy"]["type"] == "Recreate" {
                let old_pods: i64 = old
                    .iter()
                    .map(|r| r["status"]["replicas"].as_i64().unwrap_or(0))
                    .sum();
                let old_spec: i64 = old_c.iter().map(|r| r.replicas).sum();
                let new_target = if old_spec == 0 && old_pods == 0 {
                    desired
                } else {
                    new_c.replicas
                };
                (new_target, vec![0; old_c.len()])
            } else {
                let (surge, unav) = deployment::surge_and_unavailable(&d["spec"], desired);
                deployment::rolling_step(desired, surge, unav, &new_c, &old_c)
            };
            let mut scale = |rs: &Value, target: i64| {
                let from = rs["spec"]["replicas"].as_i64().unwrap_or(0);
                if from == target {
                    return;
                }
                let mut upd = rs.clone();
                upd["spec"]["replicas"] = json!(target);
                if let Some(m) = upd["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                if store
                    .update(&t.rs, &ns, md(rs, "name"), upd, &ctx(&av, false), false)
                    .is_ok()
                {
                    let dir = if target > from { "up" } else { "down" };
                    let msg = format!(
                        "Scaled {dir} replica set {} from {from} to {target}",
                        md(rs, "name")
                    );
                    record_event(
                        store,
                        &t.event,
                        &d,
                        "Deployment",
                        "Normal",
                        "ScalingReplicaSet",
                        &msg,
                        "deployment-controller",
                    );
                }
            };
            scale(&new, new_target);
            for (rs, target) in old.iter().zip(old_targets) {
                scale(rs, target);
            }
            // Keep revisionHistoryLimit old ReplicaSets that are scaled to zero.
            let limit = d["spec"]["revisionHistoryLimit"]
                .as_i64()
                .unwrap_or(10)
                .max(0) as usize;
            let idle: Vec<&Arc<Value>> = old
                .iter()
                .filter(|r| {
                    r["spec"]["replicas"] == 0 && r["status"]["replicas"].as_i64().unwrap_or(0) == 0
                })
                .collect();
            if idle.len() > limit {
                for r in &idle[..idle.len() - limit] {
                    let _ = store.delete(&t.rs, &ns, md(r, "name"), Propagation::Background);
                }
            }
        }
    }

    fn replicasets(&mut self, store: &mut Store, t: &Types) {
        let av = t.pod.api_version();
        let pods = store.all_of(&t.pod.key());
        for rs in store.all_of(&t.rs.key()) {
            let (ns, uid) = (md(&rs, "namespace").to_string(), md(&rs, "uid").to_string());
            let mut mine: Vec<&Arc<Value>> = pods
                .iter()
                .filter(|p| md(p, "namespace") == ns && owned_by(p, &uid) && !terminating(p))
                .collect();
            let want = rs["spec"]["replicas"].as_i64().unwrap_or(0).max(0) as usize;
            if terminating(&rs) {
                continue;
            }
            if mine.len() < want {
                for _ in mine.len()..want {
                    let mut spec = rs["spec"]["template"]["spec"].clone();
                    spec["nodeName"] = json!("kubesim-node");
                    let pod = json!({
                        "metadata": {
                            "name": format!("{}-{}", md(&rs, "name"), random_suffix(5)),
                            "namespace": ns,
                            "labels": rs["spec"]["template"]["metadata"]["labels"],
                            "annotations": rs["spec"]["template"]["metadata"]["annotations"],
                            "ownerReferences": [owner_ref(&rs, &t.rs)],
                        },
                        "spec": spec,
                    });
                    match store.create(&t.pod, &ns, pod, &ctx(&av, false)) {
                        Ok(p) => {
                            self.pod_born.insert(
                                md(&p, "uid").to_string(),
                                (Instant::now(), chrono::Utc::now()),
                            );
                        }
                        Err(e) => tracing::debug!("creating a pod failed: {}", e.message),
                    }
                }
            } else if mine.len() > want {
                // Not-ready pods go first, then the newest (as the ReplicaSet controller ranks them).
                mine.sort_by_key(|p| {
                    (
                        pod::is_ready(p),
                        std::cmp::Reverse(md(p, "creationTimestamp").to_string()),
                    )
                });
                for p in &mine[..mine.len() - want] {
                    let _ = store.delete(&t.pod, &ns, md(p, "name"), Propagation::Background);
                }
            }
        }
    }

    fn replicaset_status(&mut self, store: &mut Store, t: &Types) {
        let pods = store.all_of(&t.pod.key());
        for rs in store.all_of(&t.rs.key()) {
            let (ns, uid) = (md(&rs, "namespace"), md(&rs, "uid"));
            let mine: Vec<&Arc<Value>> = pods
                .iter()
                .filter(|p| md(p, "namespace") == ns && owned_by(p, uid) && !terminating(p))
                .collect();
            let ready = mine.iter().filter(|p| pod::is_ready(p)).count();
            let status = json!({
                "replicas": mine.len(),
                "fullyLabeledReplicas": mine.len(),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"]["generation"],
            });
            Self::write_status(store, &t.rs, &rs, status, MANAGER);
        }
    }

    fn pods(
        &mut self,
        store: &mut Store,
        t: &Types,
        faults: &[ImageFaultRule],
        unit: Duration,
        scale: f64,
    ) {
        let all = store.all_of(&t.pod.key());
        let live: HashSet<&str> = all.iter().map(|p| md(p, "uid")).collect();
        self.pod_born.retain(|uid, _| live.contains(uid.as_str()));
        self.pod_ips.retain(|uid, _| live.contains(uid.as_str()));
        for p in &all {
            let phase = p["status"]["phase"].as_str().unwrap_or("");
            if phase == "Succeeded" || phase == "Failed" || terminating(p) {
                continue;
            }
            let uid = md(p, "uid").to_string();
            let (born, wall) = *self
                .pod_born
                .entry(uid.clone())
                .or_insert_with(|| (Instant::now(), chrono::Utc::now()));
            let next = &mut self.next_ip;
            let ip = self
                .pod_ips
                .entry(uid)
                .or_insert_with(|| {
                    *next += 1;
                    format!("10.244.{}.{}", (*next / 250) % 250, *next % 250 + 2)
                })
                .clone();
            let runs_to_completion = p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|r| r.iter().any(|o| o["kind"] == "Job"));
            let clock = pod::PodClock {
                elapsed: born.elapsed(),
                unit,
                time_scale: scale,
                created: wall,
                faults,
                runs_to_completion,
                pod_ip: &ip,
            };
            let status = pod::pod_status(p, &clock);
            for (reason, type_, message) in pod::transitions(&p["status"], &status, md(p, "name")) {
                record_event(
                    store, &t.event, p, "Pod", type_, reason, &message, "kubelet",
                );
            }
            Self::write_status(store, &t.pod, p, status, "kubelet");
        }
    }

    fn deployment_status(&mut self, store: &mut Store, t: &Types, scale: f64) {
        let all_rs = store.all_of(&t.rs.key());
        let now = now_rfc3339();
        let live: HashSet<String> = store
            .all_of(&t.deploy.key())
            .iter()
            .map(|d| md(d, "uid").to_string())
            .collect();
        self.last_progress.retain(|uid, _| live.contains(uid));
        for d in store.all_of(&t.deploy.key()) {
            let (ns, uid) = (md(&d, "namespace"), md(&d, "uid").to_string());
            let hash = deployment::template_hash(&d["spec"]["template"]);
            let owned: Vec<&Arc<Value>> = all_rs
                .iter()
                .filter(|r| md(r, "namespace") == ns && owned_by(r, &uid))
                .collect();
            let Some(new) = owned
                .iter()
                .find(|r| r["metadata"]["labels"]["pod-template-hash"] == hash.as_str())
            else {
                continue;
            };
            let sum = |k: &str| -> i64 {
                owned
                    .iter()
                    .map(|r| r["status"][k].as_i64().unwrap_or(0))
                    .sum()
            };
            let spec_total: i64 = owned
                .iter()
                .map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0))
                .sum();
            let created = self.new_rs_created.remove(&uid);
            let counts = json!({"replicas": sum("replicas"),
                "updatedReplicas": new["status"]["replicas"].as_i64().unwrap_or(0),
                "readyReplicas": sum("readyReplicas"), "availableReplicas": sum("availableReplicas")});
            let progressed = created || deployment::has_progressed(&d["status"], &counts);
            let last = self
                .last_progress
                .entry(uid.clone())
                .or_insert_with(Instant::now);
            if progressed {
                *last = Instant::now();
            }
            let deadline = d["spec"]["progressDeadlineSeconds"]
                .as_f64()
                .unwrap_or(600.0)
                * scale;
            let deadline_passed =
                deployment::is_progressing(&d) && last.elapsed().as_secs_f64() > deadline;
            let status = deployment::deployment_status(&deployment::StatusInput {
                deployment: &d,
                new_rs_name: md(new, "name"),
                replicas: sum("replicas"),
                updated: new["status"]["replicas"].as_i64().unwrap_or(0),
                ready: sum("readyReplicas"),
                available: sum("availableReplicas"),
                spec_total,
                new_rs_created: created,
                deadline_passed,
                now: &now,
            });
            Self::write_status(store, &t.deploy, &d, status, MANAGER);
        }
    }

    fn jobs(&mut self, store: &mut Store, t: &Types) {
        let av = t.pod.api_version();
        let pods = store.all_of(&t.pod.key());
        let now = now_rfc3339();
        for job in store.all_of(&t.job.key()) {
            let finished = job["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
                })
            });
            if finished || terminating(&job) {
                continue;
            }
            let (ns, uid) = (
                md(&job, "namespace").to_string(),
                md(&job, "uid").to_string(),
            );
            let mine: Vec<&Arc<Value>> = pods
                .iter()
                .filter(|p| md(p, "namespace") == ns && owned_by(p, &uid))
                .collect();
            let phase = |p: &Value| {
                p["status"]["phase"]
                    .as_str()
                    .unwrap_or("Pending")
                    .to_string()
            };
            let succeeded = mine.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
            let failed = mine.iter().filter(|p| phase(p) == "Failed").count() as i64;
            let active = mine.len() as i64 - succeeded - failed;
            let completions = job["spec"]["completions"].as_i64().unwrap_or(1);
            let backoff_limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
            let mut status = job["status"].clone();
            if !status.is_object() {
                status = json!({});
            }
            if status["startTime"].is_null() {
                status["startTime"] = json!(now);
            }
            status["succeeded"] = json!(succeeded);
            status["failed"] = json!(failed);
            status["active"] = json!(active);
            status["ready"] = json!(mine.iter().filter(|p| pod::is_ready(p)).count());
            status["terminating"] = json!(0);
            let cond = |kind: &str, reason: &str, msg: &str| {
                json!({"type": kind, "status": "True", "reason": reason, "message": msg,
                    "lastProbeTime": now, "lastTransitionTime": now})
            };
            if succeeded >= completions {
                status["active"] = json!(0);
                status["completionTime"] = json!(now);
                status["conditions"] = json!([
                    cond(
                        "SuccessCriteriaMet",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods"
                    ),
                    cond(
                        "Complete",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods"
                    ),
                ]);
            } else if failed > backoff_limit {
                status["active"] = json!(0);
                status["conditions"] = json!([
                    cond(
                        "FailureTarget",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit"
                    ),
                    cond(
                        "Failed",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit"
                    ),
                ]);
            } else if active == 0 {
                let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
                if !labels.is_object() {
                    labels = json!({});
                }
                labels["job-name"] = json!(md(&job, "name"));
                labels["batch.kubernetes.io/job-name"] = json!(md(&job, "name"));
                labels["controller-uid"] = json!(uid);
                labels["batch.kubernetes.io/controller-uid"] = json!(uid);
                let mut spec = job["spec"]["template"]["spec"].clone();
                spec["nodeName"] = json!("kubesim-node");
                let pod = json!({"metadata": {
                        "name": format!("{}-{}", md(&job, "name"), random_suffix(5)),
                        "namespace": ns, "labels": labels,
                        "ownerReferences": [owner_ref(&job, &t.job)]},
                    "spec": spec});
                if let Ok(p) = store.create(&t.pod, &ns, pod, &ctx(&av, false)) {
                    self.pod_born.insert(
                        md(&p, "uid").to_string(),
                        (Instant::now(), chrono::Utc::now()),
                    );
                    status["active"] = json!(1);
                }
            }
            let old = job["status"].clone();
            let mut cmp_old = old.clone();
            let mut cmp_new = status.clone();
            for v in [&mut cmp_old, &mut cmp_new] {
                if let Some(m) = v.as_object_mut() {
                    m.remove("startTime");
                }
            }
            if cmp_old != cmp_new || old["startTime"].is_null() {
                Self::write_status(store, &t.job, &job, status, MANAGER);
            }
        }
    }

    /// The endpoints controllers: for each Service with a selector, an
    /// Endpoints and an EndpointSlice listing its pods, ready or not.
    fn endpoints(&mut self, store: &mut Store, t: &Types) {
        let pods = store.all_of(&t.pod.key());
        let services = store.all_of(&t.svc.key());
        let live: HashSet<(String, String)> = services
            .iter()
            .map(|s| (md(s, "namespace").to_string(), md(s, "name").to_string()))
            .collect();
        self.managed_endpoints.retain(|(ns, name)| {
            if live.contains(&(ns.clone(), name.clone())) {
                return true;
            }
            let _ = store.delete(&t.ep, ns, name, Propagation::Background);
            false
        });
        for svc in &services {
            let Some(selector) = svc["spec"]["selector"]
                .as_object()
                .filter(|s| !s.is_empty())
            else {
                continue;
            };
            let ns = md(svc, "namespace").to_string();
            let name = md(svc, "name").to_string();
            let mut members: Vec<&Arc<Value>> = pods
                .iter()
                .filter(|p| {
                    md(p, "namespace") == ns
                        && !terminating(p)
                        && p["status"]["podIP"].is_string()
                        && selector
                            .iter()
                            .all(|(k, v)| p["metadata"]["labels"][k] == *v)
                })
                .collect();
            members.sort_by_key(|p| md(p, "name").to_string());
            let address = |p: &Value| {
                json!({"ip": p["status"]["podIP"], "nodeName": "kubesim-node",
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": md(p, "name"), "uid": md(p, "uid")}})
            };
            let ready: Vec<Value> = members
                .iter()
                .filter(|p| pod::is_ready(p))
                .map(|p| address(p))
                .collect();
            let not_ready: Vec<Value> = members
                .iter()
                .filter(|p| !pod::is_ready(p))
                .map(|p| address(p))
                .collect();
            let ports: Vec<Value> = svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|sp| {
                    let port = sp["targetPort"]
                        .as_i64()
                        .or(sp["port"].as_i64())
                        .unwrap_or(0);
                    let mut p =
                        json!({"port": port, "protocol": sp["protocol"].as_str().unwrap_or("TCP")});
                    if let Some(n) = sp["name"].as_str() {
                        p["name"] = json!(n);
                    }
                    p
                })
                .collect();
            let mut subset = json!({"ports": ports});
            if !ready.is_empty() {
                subset["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = json!(not_ready);
            }
            let subsets = if members.is_empty() {
                json!([])
            } else {
                json!([subset])
            };
            let av = t.ep.api_version();
            match store.get(&t.ep, &ns, &name) {
                Ok(existing) if existing["subsets"] == subsets => {}
                Ok(existing) => {
                    let mut upd = (*existing).clone();
                    upd["subsets"] = subsets;
                    if let Some(m) = upd["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    let _ = store.update(&t.ep, &ns, &name, upd, &ctx(&av, false), false);
                }
                Err(_) => {
                    let ep = json!({"metadata": {"name": name, "namespace": ns, "labels": svc["metadata"]["labels"]},
                        "subsets": subsets});
                    if store.create(&t.ep, &ns, ep, &ctx(&av, false)).is_ok() {
                        self.managed_endpoints.insert((ns.clone(), name.clone()));
                    }
                }
            }

            let suffix: String = deployment::template_hash(&json!(name))
                .chars()
                .take(5)
                .collect();
            let slice_name = format!("{name}-{suffix}");
            let endpoints: Vec<Value> = members
                .iter()
                .map(|p| {
                    let r = pod::is_ready(p);
                    json!({"addresses": [p["status"]["podIP"]],
                        "conditions": {"ready": r, "serving": r, "terminating": false},
                        "nodeName": "kubesim-node",
                        "targetRef": {"kind": "Pod", "namespace": ns, "name": md(p, "name"), "uid": md(p, "uid")}})
                })
                .collect();
            let sav = t.eps.api_version();
            match store.get(&t.eps, &ns, &slice_name) {
                Ok(existing)
                    if existing["endpoints"] == json!(endpoints)
                        && existing["ports"] == json!(ports) => {}
                Ok(existing) => {
                    let mut upd = (*existing).clone();
                    upd["endpoints"] = json!(endpoints);
                    upd["ports"] = json!(ports);
                    if let Some(m) = upd["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    let _ = store.update(&t.eps, &ns, &slice_name, upd, &ctx(&sav, false), false);
                }
                Err(_) => {
                    let slice = json!({
                        "metadata": {"name": slice_name, "namespace": ns,
                            "labels": {"kubernetes.io/service-name": name,
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                            "ownerReferences": [owner_ref(svc, &t.svc)]},
                        "addressType": "IPv4",
                        "endpoints": endpoints,
                        "ports": ports,
                    });
                    let _ = store.create(&t.eps, &ns, slice, &ctx(&sav, false));
                }
            }
        }
    }

    fn statefulsets(&mut self, store: &mut Store, t: &Types) {
        for s in store.all_of(&t.sts.key()) {
            let n = s["spec"]["replicas"].as_i64().unwrap_or(1);
            let rev = format!(
                "{}-{}",
                md(&s, "name"),
                deployment::template_hash(&s["spec"]["template"])
            );
            let status = json!({"observedGeneration": s["metadata"]["generation"], "replicas": n,
                "readyReplicas": n, "currentReplicas": n, "updatedReplicas": n, "availableReplicas": n,
                "currentRevision": rev, "updateRevision": rev, "collisionCount": 0});
            Self::write_status(store, &t.sts, &s, status, MANAGER);
        }
    }
}
