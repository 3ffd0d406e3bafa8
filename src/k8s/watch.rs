//! Waiting for rollouts: one watch per kind (Deployments, ReplicaSets,
//! Pods) for all services at once, each event re-judged by the pure
//! verdicts of `rollout`.
//!
//! A watch is cheaper than polling each object and hears a pod's
//! `ImagePullBackOff` the moment the kubelet reports it; the watcher resumes
//! after dropped connections and re-lists after a 410, so a flaky API
//! server costs time, not correctness.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
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

    fn values(&self) -> Vec<K> {
        self.items.values().cloned().collect()
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

    let judge = async {
        while let Some(change) = changes.next().await {
            match change {
                Change::Deployment(e) => deployments.apply(e),
                Change::ReplicaSet(e) => sets.apply(e),
                Change::Pod(e) => pods.apply(e),
                // The watcher backs off and resumes by itself; an error is
                // news, not the end.
                Change::Error(e) => {
                    tracing::debug!("watch interrupted, resuming: {e}");
                    continue;
                }
                Change::Tick => {}
            }
            let patience = Patience::now(unschedulable_grace);
            let all_deployments = deployments.values();
            let all_sets = sets.values();
            let all_pods = pods.values();
            let mut progress = Progress::new();
            for name in names {
                let Some(d) = all_deployments.iter().find(|d| d.name_any() == *name) else {
                    progress.insert(name.clone(), "waiting for the Deployment to appear".into());
                    continue;
                };
                match rollout_state(d, &all_sets, &all_pods, patience) {
                    RolloutState::Complete => {}
                    RolloutState::Progressing(why) => {
                        progress.insert(name.clone(), why);
                    }
                    RolloutState::Failed(f) => {
                        return Err(fail(Kind::PhaseFailed, format!("rollout failed: {f}")));
                    }
                }
            }
            if progress.is_empty() {
                return Ok(());
            }
            if progress != last {
                on_progress(&progress);
                last = progress;
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
