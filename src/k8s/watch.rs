//! Waiting for rollouts: one watch per kind (Deployments, ReplicaSets,
//! Pods) for all services at once, each event re-judged by the pure
//! verdicts of `rollout`.
//!
//! A watch is cheaper than polling each object and hears a pod's
//! `ImagePullBackOff` the moment the kubelet reports it; the watcher resumes
//! after dropped connections and re-lists after a 410, so a flaky API
//! server costs time, not correctness.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

/// Objects of one kind, kept current from watch events, with the indexes
/// judging needs kept current with them: by owner and by name. Rebuilding
/// those from every object after each batch of events was linear in
/// services per batch.
struct Mirror<K> {
    items: HashMap<String, K>,
    /// A re-list in progress: items gathered until `InitDone` replaces `items`.
    relisting: Option<HashMap<String, K>>,
    /// The keys of the items each owner (by uid) owns.
    owned: HashMap<String, BTreeSet<String>>,
    /// Each name's item key.
    named: HashMap<String, String>,
}

impl<K: Resource + Clone> Mirror<K> {
    fn new() -> Self {
        Mirror {
            items: HashMap::new(),
            relisting: None,
            owned: HashMap::new(),
            named: HashMap::new(),
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
            Event::Apply(obj) => self.insert(obj),
            Event::Delete(obj) => self.remove(&Self::key(&obj)),
            Event::Init => self.relisting = Some(HashMap::new()),
            Event::InitApply(obj) => {
                self.relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(Self::key(&obj), obj);
            }
            Event::InitDone => {
                if let Some(fresh) = self.relisting.take() {
                    self.items.clear();
                    self.owned.clear();
                    self.named.clear();
                    fresh.into_values().for_each(|obj| self.insert(obj));
                }
            }
        }
    }

    fn insert(&mut self, obj: K) {
        let key = Self::key(&obj);
        self.remove(&key);
        for o in obj.meta().owner_references.iter().flatten() {
            self.owned
                .entry(o.uid.clone())
                .or_default()
                .insert(key.clone());
        }
        if let Some(name) = &obj.meta().name {
            self.named.insert(name.clone(), key.clone());
        }
        self.items.insert(key, obj);
    }

    fn remove(&mut self, key: &str) {
        let Some(old) = self.items.remove(key) else {
            return;
        };
        for o in old.meta().owner_references.iter().flatten() {
            if let Some(keys) = self.owned.get_mut(&o.uid) {
                keys.remove(key);
                if keys.is_empty() {
                    self.owned.remove(&o.uid);
                }
            }
        }
        if let Some(name) = &old.meta().name
            && self.named.get(name).is_some_and(|k| k == key)
        {
            self.named.remove(name);
        }
    }

    fn named(&self, name: &str) -> Option<&K> {
        self.items.get(self.named.get(name)?)
    }

    fn owned_by<'a>(&'a self, uid: &str) -> impl Iterator<Item = &'a K> + 'a {
        self.owned
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|k| self.items.get(k))
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
    awaited: &HashSet<String>,
) {
    match event {
        Event::Apply(o) | Event::Delete(o) | Event::InitApply(o) => {
            if let Some(d) = deployment_of(o)
                && awaited.contains(&d)
            {
                dirty.insert(d);
            }
        }
        Event::Init | Event::InitDone => dirty.extend(awaited.iter().cloned()),
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

/// The verdict on one Deployment, from its own ReplicaSets and their
/// pods; `None` while it has not appeared.
fn judge(
    deployments: &Mirror<Deployment>,
    sets: &Mirror<ReplicaSet>,
    pods: &Mirror<Pod>,
    name: &str,
    patience: Patience,
) -> Option<RolloutState> {
    let d = deployments.named(name)?;
    let uid = d.metadata.uid.as_deref().unwrap_or_default();
    let own_sets: Vec<&ReplicaSet> = sets.owned_by(uid).collect();
    let own_pods: Vec<&Pod> = own_sets
        .iter()
        .filter_map(|rs| rs.metadata.uid.as_deref())
        .flat_map(|rs_uid| pods.owned_by(rs_uid))
        .collect();
    Some(rollout_state(d, &own_sets, &own_pods, patience))
}

/// What awaited Deployments are waiting for ("rolled out" once done), for
/// progress lines.
pub type Progress = BTreeMap<String, String>;

/// Wait until every named Deployment has rolled out; fail at the first
/// fatal sign, naming the deployment, the pod and Kubernetes' reason.
/// `on_progress` hears every Deployment's state first, then each change.
pub async fn wait_for_rollouts(
    client: &Client,
    namespace: &str,
    labels: &str,
    names: &[String],
    timeout: Duration,
    graces: super::rollout::Graces,
    mut on_progress: impl FnMut(&Progress),
) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let began = chrono::Utc::now().timestamp();
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
    let awaited: HashSet<String> = names.iter().cloned().collect();
    let mut reported = false;
    let mut dirty = awaited.clone();

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
                        touched_by(&e, owner_deployment_of_deployment, &mut dirty, &awaited);
                        deployments.apply(e);
                    }
                    Change::ReplicaSet(e) => {
                        touched_by(&e, owner_deployment_of_set, &mut dirty, &awaited);
                        sets.apply(e);
                    }
                    Change::Pod(e) => {
                        touched_by(
                            &e,
                            |p| owner_deployment_of_pod(p, &sets),
                            &mut dirty,
                            &awaited,
                        );
                        pods.apply(e);
                    }
                    // The watcher backs off and resumes by itself; an error
                    // is news, not the end.
                    Change::Error(e) => {
                        tracing::debug!("watch interrupted, resuming: {e}");
                    }
                    // A verdict that depends on time: a pod unschedulable,
                    // or failing its pulls for a passing cause, past its
                    // grace.
                    Change::Tick => dirty.extend(
                        waiting
                            .iter()
                            .filter(|(_, why)| super::rollout::waits_on_a_grace(why))
                            .map(|(n, _)| n.clone()),
                    ),
                }
            }
            if dirty.is_empty() {
                continue;
            }
            let patience = Patience {
                began,
                ..Patience::now(graces)
            };
            // The lines that moved: found per judged Deployment, not by
            // comparing every Deployment's line after each batch.
            let mut moved = Progress::new();
            for name in dirty.drain() {
                let why = match judge(&deployments, &sets, &pods, &name, patience) {
                    None => Some("waiting for the Deployment to appear".to_string()),
                    Some(RolloutState::Complete) => None,
                    Some(RolloutState::Progressing(why)) => Some(why),
                    Some(RolloutState::Failed(f)) => {
                        return Err(fail(Kind::PhaseFailed, format!("rollout failed: {f}")));
                    }
                };
                match why {
                    Some(why) => {
                        if waiting.get(&name) != Some(&why) {
                            moved.insert(name.clone(), why.clone());
                        }
                        waiting.insert(name, why);
                    }
                    None => {
                        if waiting.remove(&name).is_some() {
                            moved.insert(name, "rolled out".to_string());
                        }
                    }
                }
            }
            // The first report says where every rollout stands; then only
            // what changed, so 500 services do not repeat 500 lines.
            if !reported {
                let mut all = waiting.clone();
                all.extend(moved);
                on_progress(&all);
                reported = true;
            } else if !moved.is_empty() {
                on_progress(&moved);
            }
            if waiting.is_empty() {
                return Ok(());
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
                waiting
                    .iter()
                    .map(|(n, why)| format!("{n}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )),
    }
}

/// Wait for a slot's Deployments, logging each one's state as it changes
/// (seen with `-v`). The margin over the rollout timeout only guards against a
/// controller that never answers: the controller itself reports a missed
/// progress deadline, which fails the rollout at once.
pub async fn wait_for_slot(
    client: &Client,
    namespace: &str,
    slot: crate::k8s::slot::Slot,
    names: &[String],
    rollout_timeout: Duration,
    graces: super::rollout::Graces,
) -> anyhow::Result<()> {
    let labels = crate::k8s::live::slot_selector(slot);
    wait_for_rollouts(
        client,
        namespace,
        &labels,
        names,
        rollout_timeout.saturating_add(Duration::from_secs(30)),
        graces,
        |progress| {
            for (name, why) in progress {
                tracing::info!("{name}: {why}");
            }
        },
    )
    .await
}
