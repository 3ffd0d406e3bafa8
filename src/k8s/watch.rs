//! Waiting for rollouts: one watch per kind (Deployments, ReplicaSets,
//! Pods) for all services at once, each event re-judged by the pure
//! verdicts of `rollout`.
//!
//! A watch is cheaper than polling each object and hears a pod's
//! `ImagePullBackOff` the moment the kubelet reports it; the watcher resumes
//! after dropped connections and re-lists after a 410, so a flaky API
//! server costs time, not correctness.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::rollout::{Patience, RolloutState, rollout_state};
use crate::error::{Kind, fail};

/// Objects of one kind, kept current from watch events.
struct Mirror<K> {
    items: HashMap<String, K>,
    /// A re-list in progress: items gathered until `InitDone` replaces `items`.
    relisting: Option<HashMap<String, K>>,
}

impl<K: Resource + Clone> Mirror<K> {
    fn new() -> Self {
        Mirror {
            items: HashMap::new(),
            relisting: None,
        }
    }

    fn key(obj: &K) -> String {
        obj.meta()
            .uid
            .clone()
            .unwrap_or_else(|| obj.meta().name.clone().unwrap_or_default())
    }

    fn apply(&mut self, event: Event<K>) {
        match event {
            Event::Apply(obj) => {
                self.items.insert(Self::key(&obj), obj);
            }
            Event::Delete(obj) => {
                self.items.remove(&Self::key(&obj));
            }
            Event::Init => self.relisting = Some(HashMap::new()),
            Event::InitApply(obj) => {
                self.relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(Self::key(&obj), obj);
            }
            Event::InitDone => {
                if let Some(fresh) = self.relisting.take() {
                    self.items = fresh;
                }
            }
        }
    }
}

enum Change {
    Deployment(Event<Deployment>),
    ReplicaSet(Event<ReplicaSet>),
    Pod(Event<Pod>),
    Error(watcher::Error),
    /// A second passed: a verdict that depends on time (a pod unschedulable
    /// past its grace) is due even when nothing changed.
    Tick,
}

fn watch<K>(
    client: &Client,
    ns: &str,
    labels: &str,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    watcher::watcher(api, watcher::Config::default().labels(labels)).default_backoff()
}

/// The awaited Deployments an event touches: the one it is about, or (a
/// relist beginning or ending) all of them.
fn touched_by<K>(
    event: &Event<K>,
    deployment_of: impl Fn(&K) -> Option<String>,
    dirty: &mut HashSet<String>,
    names: &[String],
) {
    match event {
        Event::Apply(o) | Event::Delete(o) | Event::InitApply(o) => {
            if let Some(d) = deployment_of(o)
                && names.contains(&d)
            {
                dirty.insert(d);
            }
        }
        Event::Init | Event::InitDone => dirty.extend(names.iter().cloned()),
    }
}

fn owner_deployment_of_deployment(d: &Deployment) -> Option<String> {
    d.metadata.name.clone()
}

/// The Deployment that owns a ReplicaSet.
fn owner_deployment_of_set(rs: &ReplicaSet) -> Option<String> {
    rs.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Deployment")
        .map(|o| o.name.clone())
}

/// The Deployment that owns a pod, through its ReplicaSet.
fn owner_deployment_of_pod(pod: &Pod, sets: &Mirror<ReplicaSet>) -> Option<String> {
    let rs = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "ReplicaSet")?;
    match sets.items.get(&rs.uid) {
        Some(set) => owner_deployment_of_set(set),
        // Not seen yet: the ReplicaSet's own event marks its Deployment.
        None => None,
    }
}

/// The mirrors indexed by owner, built once per batch of events, so that
/// judging one Deployment reads its own ReplicaSets and pods only.
struct Index<'a> {
    deployments: HashMap<&'a str, &'a Deployment>,
    sets_of: HashMap<&'a str, Vec<&'a ReplicaSet>>,
    pods_of: HashMap<&'a str, Vec<&'a Pod>>,
}

impl<'a> Index<'a> {
    fn of(
        deployments: &'a Mirror<Deployment>,
        sets: &'a Mirror<ReplicaSet>,
        pods: &'a Mirror<Pod>,
    ) -> Self {
        let mut index = Index {
            deployments: HashMap::new(),
            sets_of: HashMap::new(),
            pods_of: HashMap::new(),
        };
        for d in deployments.items.values() {
            if let Some(name) = d.metadata.name.as_deref() {
                index.deployments.insert(name, d);
            }
        }
        for rs in sets.items.values() {
            for o in rs.metadata.owner_references.iter().flatten() {
                index.sets_of.entry(o.uid.as_str()).or_default().push(rs);
            }
        }
        for p in pods.items.values() {
            for o in p.metadata.owner_references.iter().flatten() {
                index.pods_of.entry(o.uid.as_str()).or_default().push(p);
            }
        }
        index
    }

    /// The verdict on one Deployment, from its own objects; `None` while
    /// it has not appeared.
    fn judge(&self, name: &str, patience: Patience) -> Option<RolloutState> {
        let d = self.deployments.get(name)?;
        let uid = d.metadata.uid.as_deref().unwrap_or_default();
        let sets: Vec<ReplicaSet> = self
            .sets_of
            .get(uid)
            .map(|v| v.iter().map(|rs| (*rs).clone()).collect())
            .unwrap_or_default();
        let pods: Vec<Pod> = sets
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .flat_map(|rs_uid| self.pods_of.get(rs_uid).into_iter().flatten())
            .map(|p| (*p).clone())
            .collect();
        Some(rollout_state(d, &sets, &pods, patience))
    }
}

/// What each awaited Deployment is waiting for, for progress lines.
pub type Progress = BTreeMap<String, String>;

/// Wait until every named Deployment has rolled out; fail at the first
/// fatal sign, naming the deployment, the pod and Kubernetes' reason.
pub async fn wait_for_rollouts(
    client: &Client,
    namespace: &str,
    labels: &str,
    names: &[String],
    timeout: Duration,
    unschedulable_grace: Duration,
    mut on_progress: impl FnMut(&Progress),
) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let mut changes = futures::stream::select_all(vec![
        watch::<Deployment>(client, namespace, labels)
            .map(|r| r.map_or_else(Change::Error, Change::Deployment))
            .boxed(),
        watch::<ReplicaSet>(client, namespace, labels)
            .map(|r| r.map_or_else(Change::Error, Change::ReplicaSet))
            .boxed(),
        watch::<Pod>(client, namespace, labels)
            .map(|r| r.map_or_else(Change::Error, Change::Pod))
            .boxed(),
        futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Change::Tick, ()))
        })
        .boxed(),
    ]);
    let mut deployments = Mirror::<Deployment>::new();
    let mut sets = Mirror::<ReplicaSet>::new();
    let mut pods = Mirror::<Pod>::new();
    let mut last = Progress::new();
    // What each awaited Deployment waits for (absent: rolled out), and
    // which to judge again: only those an event touched. Judging every
    // Deployment on every event was quadratic in services (each event of
    // each pod of 100 services re-judged all 100, over copies of all).
    let mut waiting: Progress = names
        .iter()
        .map(|n| {
            (
                n.clone(),
                "waiting for the Deployment to appear".to_string(),
            )
        })
        .collect();
    let mut dirty: HashSet<String> = names.iter().cloned().collect();

    let judge = async {
        while let Some(first) = changes.next().await {
            // Everything already arrived is one batch: a burst of events
            // (a relist, a hundred pods going Ready) is judged once.
            let mut batch = vec![first];
            while let Some(Some(more)) = changes.next().now_or_never() {
                batch.push(more);
            }
            for change in batch {
                match change {
                    Change::Deployment(e) => {
                        touched_by(&e, owner_deployment_of_deployment, &mut dirty, names);
                        deployments.apply(e);
                    }
                    Change::ReplicaSet(e) => {
                        touched_by(&e, owner_deployment_of_set, &mut dirty, names);
                        sets.apply(e);
                    }
                    Change::Pod(e) => {
                        touched_by(&e, |p| owner_deployment_of_pod(p, &sets), &mut dirty, names);
                        pods.apply(e);
                    }
                    // The watcher backs off and resumes by itself; an error
                    // is news, not the end.
                    Change::Error(e) => {
                        tracing::debug!("watch interrupted, resuming: {e}");
                    }
                    // A verdict that depends on time: a pod unschedulable
                    // past its grace.
                    Change::Tick => dirty.extend(
                        waiting
                            .iter()
                            .filter(|(_, why)| why.contains("unschedulable since"))
                            .map(|(n, _)| n.clone()),
                    ),
                }
            }
            if dirty.is_empty() {
                continue;
            }
            let patience = Patience::now(unschedulable_grace);
            let index = Index::of(&deployments, &sets, &pods);
            for name in dirty.drain() {
                match index.judge(&name, patience) {
                    None => {
                        waiting.insert(name, "waiting for the Deployment to appear".into());
                    }
                    Some(RolloutState::Complete) => {
                        waiting.remove(&name);
                    }
                    Some(RolloutState::Progressing(why)) => {
                        waiting.insert(name, why);
                    }
                    Some(RolloutState::Failed(f)) => {
                        return Err(fail(Kind::PhaseFailed, format!("rollout failed: {f}")));
                    }
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if waiting != last {
                on_progress(&waiting);
                last = waiting.clone();
            }
        }
        Err(anyhow::anyhow!("the watches ended before the rollouts did"))
    };
    match tokio::time::timeout(timeout, judge).await {
        Ok(result) => result,
        Err(_) => Err(fail(
            Kind::PhaseFailed,
            format!(
                "rollouts still not done after {}: {}",
                humantime::format_duration(timeout),
                last.iter()
                    .map(|(n, why)| format!("{n}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )),
    }
}

/// Wait for a slot's Deployments, logging what each still waits for (seen
/// with `-v`). The margin over the rollout timeout only guards against a
/// controller that never answers: the controller itself reports a missed
/// progress deadline, which fails the rollout at once.
pub async fn wait_for_slot(
    client: &Client,
    namespace: &str,
    slot: crate::k8s::slot::Slot,
    names: &[String],
    rollout_timeout: Duration,
    unschedulable_grace: Duration,
) -> anyhow::Result<()> {
    let labels = crate::k8s::live::slot_selector(slot);
    wait_for_rollouts(
        client,
        namespace,
        &labels,
        names,
        rollout_timeout + Duration::from_secs(30),
        unschedulable_grace,
        |progress| {
            for (name, why) in progress {
                tracing::info!("{name}: {why}");
            }
        },
    )
    .await
}
