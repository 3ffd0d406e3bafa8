//! The controllers and the kubelet, in one loop: Deployments make
//! ReplicaSets (`rollout`), ReplicaSets make Pods (`replicaset`), Pods
//! report status over (scaled) time and image faults (`kubelet`), Jobs run
//! a pod to completion (`job`), StatefulSets report their replicas ready
//! (`statefulset`), Services get Endpoints (`endpoints`) and, with type
//! LoadBalancer, an address, as Ingresses do (`loadbalancer`). Decisions live in
//! the pure modules `deployment` and `pod`; the others read the store, call
//! them, and write what changed.
//!
//! The loop sleeps until something can have changed: a write to the store,
//! a knob (faults, rollout time), or the next moment a decision depends on
//! time (a pod's rollout time, an ErrImagePull turning into back-off, a
//! crash loop's next restart, a slow image getting ready, a progress
//! deadline). Polling the whole store every tick instead cost an idle sim
//! with a deployed world a third of a core.

pub mod deployment;
mod endpoints;
mod job;
mod kubelet;
mod loadbalancer;
pub mod pod;
mod replicaset;
mod rollout;
mod statefulset;

use crate::control::Control;
use crate::resources::ResourceType;
use crate::store::{Store, WriteCtx, now_rfc3339, random_suffix};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shortest time between two passes, well under any rollout time a
/// test would use: a burst of writes (a `kubectl apply` of many objects,
/// a pass's own writes) costs a pass per tick, not a pass per write.
pub const TICK: Duration = Duration::from_millis(50);

/// Added to a time-driven wake-up so the pass it triggers sees the
/// moment passed (the decisions compare with `>=` and `>`).
const DUE_MARGIN: Duration = Duration::from_millis(1);

/// How often a controller giving way to API requests looks whether they
/// are done.
const GIVE_WAY_STEP: Duration = Duration::from_millis(5);

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

/// Objects grouped by the uid of each owner they name: built once per
/// step of a pass, so finding a ReplicaSet's pods (a Deployment's
/// ReplicaSets) reads its own, not every pod of the store. Scanning all of
/// them for each owner made a pass quadratic in services.
fn by_owner(objects: &[Arc<Value>]) -> HashMap<String, Vec<Arc<Value>>> {
    let mut out: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    for o in objects {
        for r in o["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(uid) = r["uid"].as_str() {
                out.entry(uid.to_string()).or_default().push(o.clone());
            }
        }
    }
    out
}

/// The objects owned by `uid` in `ns`, from a [`by_owner`] index.
fn owned<'a>(
    index: &'a HashMap<String, Vec<Arc<Value>>>,
    ns: &'a str,
    uid: &str,
) -> impl Iterator<Item = &'a Arc<Value>> + 'a {
    index
        .get(uid)
        .into_iter()
        .flatten()
        .filter(move |o| md(o, "namespace") == ns)
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

/// This thread's CPU time so far (user + system), from /proc.
fn thread_cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) * 10.0
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
    /// The earliest moment a pass would decide differently with no write
    /// in between; None when only a write or a knob can change anything.
    next_due: Option<Instant>,
    /// Each Deployment's pod-template hash, by uid, at the generation it
    /// was computed for: hashing every template on every pass was a
    /// quarter of a pass at 500 services, for templates that rarely change.
    template_hashes: HashMap<String, (i64, String)>,
    /// The pods and Services the endpoints were last made from (how many,
    /// and the newest resourceVersion): unchanged, the step has nothing
    /// to do, and rebuilding it every pass was a sixth of the pass.
    endpoints_from: Option<(usize, u64)>,
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
    ing: ResourceType,
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
            next_due: None,
            template_hashes: HashMap::new(),
            endpoints_from: None,
        }
    }

    /// A Deployment's pod-template hash, computed once per generation.
    fn template_hash_of(&mut self, d: &Value) -> String {
        let uid = md(d, "uid");
        let generation = d["metadata"]["generation"].as_i64().unwrap_or(0);
        if let Some((g, h)) = self.template_hashes.get(uid)
            && *g == generation
            && generation != 0
        {
            return h.clone();
        }
        let h = deployment::template_hash(&d["spec"]["template"]);
        self.template_hashes
            .insert(uid.to_string(), (generation, h.clone()));
        h
    }

    /// Runs until `stop` changes.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let changed = self.control.changed.clone();
        loop {
            let pass_started = tokio::time::Instant::now();
            // RUST_LOG=kubesim=debug: each pass's wall and CPU time, and its
            // steps', to see where a big world's time goes.
            let debug = tracing::enabled!(tracing::Level::DEBUG);
            let cpu0 = if debug { thread_cpu_ms() } else { 0.0 };
            self.reconcile();
            let took = pass_started.elapsed();
            if debug {
                tracing::debug!(
                    took_ms = took.as_secs_f64() * 1000.0,
                    cpu_ms = thread_cpu_ms() - cpu0,
                    "controller pass"
                );
            }
            let due = self
                .next_due
                .map(|at| tokio::time::Instant::from_std(at + DUE_MARGIN));
            tokio::select! {
                _ = changed.notified() => {}
                _ = async {
                    match due {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = stop.changed() => return,
            }
            // A pass holds the store: while API requests (the tool's,
            // kubectl's) are being served, the next waits as long as this
            // one took, so they get half of the time however big the world
            // grows. A client that only watches waits for no lock: then the
            // next pass comes at the tick, and a pod is not seen Ready a
            // long pass later than it became so.
            let ended = pass_started + took;
            tokio::select! {
                _ = tokio::time::sleep_until(ended + TICK) => {}
                _ = stop.changed() => return,
            }
            let give_way_until = ended + TICK.max(took);
            while tokio::time::Instant::now() < give_way_until
                && self
                    .control
                    .requests_in_flight
                    .load(std::sync::atomic::Ordering::SeqCst)
                    > 0
            {
                tokio::select! {
                    _ = tokio::time::sleep(GIVE_WAY_STEP.min(
                        give_way_until.saturating_duration_since(tokio::time::Instant::now()),
                    )) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }

    /// Notes that a pass at `at` would decide differently than this one.
    fn due(&mut self, at: Instant) {
        self.next_due = Some(self.next_due.map_or(at, |d| d.min(at)));
    }

    /// One pass over everything.
    pub fn reconcile(&mut self) {
        self.control
            .passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.next_due = None;
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
            ing: find(&store, "networking.k8s.io", "ingresses"),
        };
        let mut steps = [std::time::Duration::ZERO; 9];
        let mut at = Instant::now();
        let mut step = |i: usize| {
            let now = Instant::now();
            steps[i] = now - at;
            at = now;
        };
        self.deployments(&mut store, &t);
        step(0);
        self.replicasets(&mut store, &t);
        step(1);
        self.jobs(&mut store, &t);
        step(2);
        self.pods(&mut store, &t, &faults, unit, scale);
        step(3);
        self.replicaset_status(&mut store, &t);
        step(4);
        self.deployment_status(&mut store, &t, scale);
        step(5);
        self.statefulsets(&mut store, &t);
        step(6);
        self.endpoints(&mut store, &t);
        step(7);
        self.load_balancers(&mut store, &t);
        step(8);
        tracing::debug!(
            "pass steps (ms): deployments {:.0}, replicasets {:.0}, jobs {:.0}, pods {:.0}, replicaset status {:.0}, deployment status {:.0}, statefulsets {:.0}, endpoints {:.0}, load balancers {:.0}",
            steps[0].as_secs_f64() * 1e3,
            steps[1].as_secs_f64() * 1e3,
            steps[2].as_secs_f64() * 1e3,
            steps[3].as_secs_f64() * 1e3,
            steps[4].as_secs_f64() * 1e3,
            steps[5].as_secs_f64() * 1e3,
            steps[6].as_secs_f64() * 1e3,
            steps[7].as_secs_f64() * 1e3,
            steps[8].as_secs_f64() * 1e3
        );
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
        if let Err(e) =
            store.update_status(rt, md(obj, "namespace"), md(obj, "name"), status, manager)
        {
            tracing::debug!("status write of {} failed: {}", md(obj, "name"), e.message);
        }
    }
}
