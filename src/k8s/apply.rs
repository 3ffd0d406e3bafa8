//! Server-side apply of rendered objects, in dependency order.
//!
//! Objects of one rank (all ServiceAccounts, then all Deployments, ...) are
//! applied concurrently; ranks follow each other, so a Deployment never
//! lands before its ServiceAccount. Field manager `maily-deploy`, forced:
//! the tool owns what it applies, and a hand edit is drift to overwrite.
//! Objects the cluster already holds as they would be applied are not
//! written (`unchanged`).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::core::GroupVersion;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Api, Client};
use tokio::sync::OnceCell;

use super::client::retry;
use super::lease::Fence;
use super::manifest::apply_rank;
use super::unchanged;
use crate::error::{Kind, fail};

pub const FIELD_MANAGER: &str = "maily-deploy";

/// How many applies are in flight at once. Over a distant API server each
/// round of them costs a round trip: 16 made 2,500 writes 160 round trips;
/// 64 stays well inside what an API server's priority-and-fairness queues
/// take from one client (kube's client is HTTP/1.1: one connection each).
const CONCURRENCY: usize = 64;

/// A kind with fewer objects in a batch is applied without looking: a
/// list would cost as many requests as it could save.
const LIST_FROM: usize = 4;

/// Objects per page of a list, and the most pages read: past 20,000
/// objects of one kind in one namespace, everything is applied.
const PAGE: u32 = 500;
const MOST_PAGES: usize = 40;

/// What `apply_all` did: objects written, and objects the cluster already
/// held as they would be applied, not written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub written: usize,
    pub unchanged: usize,
}

impl Applied {
    pub fn total(&self) -> usize {
        self.written + self.unchanged
    }
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.unchanged {
            0 => write!(f, "applied {} objects", self.written),
            n => write!(
                f,
                "applied {} objects ({n} already as applied, not written)",
                self.total()
            ),
        }
    }
}

/// The live objects of a kind whose names are in `wanted`, page by page;
/// the rest of each page is dropped as it comes.
async fn live_named(
    api: &Api<DynamicObject>,
    wanted: &HashMap<&str, usize>,
) -> anyhow::Result<Vec<(String, DynamicObject)>> {
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MOST_PAGES {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = retry("list", || api.list(&params)).await?;
        found.extend(page.items.into_iter().filter_map(|o| {
            let name = o.metadata.name.clone()?;
            wanted.contains_key(name.as_str()).then_some((name, o))
        }));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(found);
        }
    }
    anyhow::bail!("more than {} objects", PAGE as usize * MOST_PAGES)
}

/// What discovery said about one group/version: its resources.
pub type GroupResources = Vec<(ApiResource, ApiCapabilities)>;

/// One group/version's answer, filled by its first asker and shared (not
/// copied) with every object of its kinds.
type DiscoveryCell = Arc<OnceCell<Arc<GroupResources>>>;

/// Applies objects, remembering what discovery said about each group.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    /// By `apiVersion` (`v1`, `apps/v1`): one discovery request per group
    /// and version for the whole run, whatever the number of its kinds (the
    /// core group alone has six of ours). A cell per group, so different
    /// groups are asked at once and callers of one wait for one answer.
    groups: Arc<std::sync::Mutex<HashMap<String, DiscoveryCell>>>,
    /// The run's lock, once taken: every change asks it first. Shared by
    /// every clone, so the phases' appliers see the lock the lifecycle took.
    fence: Arc<std::sync::RwLock<Option<Fence>>>,
    /// What users were last set to reach, as this run last changed or read
    /// it: what a run that loses the API server can still say.
    users: Arc<std::sync::Mutex<Option<String>>>,
}

fn gvk_of(obj: &DynamicObject) -> anyhow::Result<GroupVersionKind> {
    let types = obj
        .types
        .as_ref()
        .context("an object without apiVersion and kind")?;
    let (group, version) = match types.api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), types.api_version.clone()),
    };
    Ok(GroupVersionKind {
        group,
        version,
        kind: types.kind.clone(),
    })
}

impl Applier {
    pub fn new(client: Client) -> Self {
        Applier {
            client,
            groups: Arc::default(),
            fence: Arc::default(),
            users: Arc::default(),
        }
    }

    /// From now on every change is fenced by the run's lock.
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.write().unwrap_or_else(|e| e.into_inner()) = fence;
    }

    /// `Ok` when this run may change the cluster: no lock taken yet (the
    /// lifecycle takes it before the first change), or the lock still ours.
    pub async fn may_change(&self) -> anyhow::Result<()> {
        let fence = self.fence.read().unwrap_or_else(|e| e.into_inner()).clone();
        match fence {
            Some(f) => f.check().await,
            None => Ok(()),
        }
    }

    /// [`Applier::may_change`], asked of the API server whatever the age of
    /// the last renewal (`Fence::confirm`): before a change that follows a
    /// long wait.
    pub async fn confirm_lock(&self) -> anyhow::Result<()> {
        let fence = self.fence.read().unwrap_or_else(|e| e.into_inner()).clone();
        match fence {
            Some(f) => f.confirm().await,
            None => Ok(()),
        }
    }

    /// [`retry`] for a change: every attempt first asks whether the lock is
    /// still this run's, as the background renewal last found it, so a
    /// retry never lands after another run took the environment over (an
    /// attempt can hang for its connect timeout, longer than the lease).
    pub async fn retry_change<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let fence = self.fence.read().unwrap_or_else(|e| e.into_inner()).clone();
        retry(what, || {
            let lost = fence
                .as_ref()
                .and_then(|f| f.loss().map(|loss| f.loss_error(&loss).to_string()));
            let attempt = call();
            async move {
                match lost {
                    // An answer of no HTTP code: neither retried nor
                    // counted as the API server not answering.
                    Some(why) => Err(kube::Error::Api(Box::new(lock_lost_status(&why)))),
                    None => attempt.await,
                }
            }
        })
        .await
    }

    /// Remember what users reach now (after a route change or a read).
    pub fn note_users(&self, what: impl Into<String>) {
        *self.users.lock().unwrap_or_else(|e| e.into_inner()) = Some(what.into());
    }

    /// What users reached when this run last changed or read it.
    pub fn users_last_seen(&self) -> Option<String> {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What the API says about a kind; a kind the cluster does not serve is
    /// a clear error (a missing CRD, usually).
    pub async fn resource(
        &self,
        gvk: &GroupVersionKind,
    ) -> anyhow::Result<(ApiResource, ApiCapabilities)> {
        let gv = GroupVersion::gv(&gvk.group, &gvk.version);
        let not_served = |why: String| {
            let group = if gvk.group.is_empty() {
                "core"
            } else {
                gvk.group.as_str()
            };
            fail(
                Kind::PhaseFailed,
                format!(
                    "the cluster does not serve {} ({group}/{}): {why}; install its CustomResourceDefinition first",
                    gvk.kind, gvk.version
                ),
            )
        };
        let resources = self
            .served(&gv)
            .await
            .map_err(|e| not_served(crate::error::kube_text(&e)))?;
        resources
            .iter()
            .find(|(ar, _)| ar.kind == gvk.kind)
            .cloned()
            .ok_or_else(|| not_served(format!("{} has no kind {}", gv.api_version(), gvk.kind)))
    }

    /// What the cluster serves in one group and version, asked once per
    /// run (an answer that failed is asked again next time). The error is
    /// kube's, so a caller can tell a group that is not there (404) from a
    /// server that did not answer.
    pub async fn served(&self, gv: &GroupVersion) -> Result<Arc<GroupResources>, kube::Error> {
        let cell = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(gv.api_version())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            retry("discovery", || {
                kube::discovery::pinned_group(&self.client, gv)
            })
            .await
            .map(|group| Arc::new(group.versioned_resources(&gv.version)))
        })
        .await
        .cloned()
    }

    /// [`Applier::served`], with a group version the cluster does not serve
    /// at all (404: its CRDs are not installed) as serving nothing: an error
    /// is only a discovery that failed (a 503, a timeout).
    pub async fn served_or_none(
        &self,
        gv: &GroupVersion,
    ) -> Result<Arc<GroupResources>, kube::Error> {
        match self.served(gv).await {
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Default::default()),
            Err(kube::Error::Discovery(_)) => Ok(Default::default()),
            other => other,
        }
    }

    /// The dynamic API for an object's kind and namespace.
    pub async fn api_for(&self, obj: &DynamicObject) -> anyhow::Result<Api<DynamicObject>> {
        let gvk = gvk_of(obj)?;
        let (ar, caps) = self.resource(&gvk).await?;
        Ok(match (caps.scope, obj.metadata.namespace.as_deref()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (Scope::Namespaced, None) => {
                anyhow::bail!(
                    "{} {} has no namespace",
                    gvk.kind,
                    obj.metadata.name.as_deref().unwrap_or("?")
                )
            }
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), &ar),
        })
    }

    /// Apply one object.
    pub async fn apply(&self, obj: &DynamicObject) -> anyhow::Result<DynamicObject> {
        let api = self.api_for(obj).await?;
        let name = obj
            .metadata
            .name
            .clone()
            .context("an object without a name")?;
        let kind = obj
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        self.may_change().await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(obj);
        self.retry_change("apply", || api.patch(&name, &params, &patch))
            .await
            .with_context(|| format!("applying {kind} {name}"))
    }

    /// Apply every object, rank by rank; fails on the first error with the
    /// object named. Objects an apply would leave as they are are not
    /// written (`unchanged`); the answer counts both.
    ///
    /// Round trips in series are what a deploy from a laptop to a distant
    /// cluster pays for: every group is discovered and every kind listed at
    /// once before the first write, so a kind the cluster does not serve
    /// fails the call before anything changed, and each rank costs only
    /// its writes.
    pub async fn apply_all(&self, mut objects: Vec<DynamicObject>) -> anyhow::Result<Applied> {
        let rank = |o: &DynamicObject| o.types.as_ref().map_or(u8::MAX, |t| apply_rank(&t.kind));
        objects.sort_by_key(rank);
        objects.iter_mut().for_each(unchanged::stamp);
        self.discover(&objects).await?;
        let (mut objects, unchanged) = self.without_unchanged(objects).await;
        let applied = Applied {
            written: objects.len(),
            unchanged,
        };
        while !objects.is_empty() {
            let first = rank(&objects[0]);
            let split = objects
                .iter()
                .position(|o| rank(o) != first)
                .unwrap_or(objects.len());
            let rest = objects.split_off(split);
            let batch = std::mem::replace(&mut objects, rest);
            // Owned futures: each carries its own applier handle and object.
            stream::iter(batch.into_iter().map(|o| {
                let applier = self.clone();
                async move { applier.apply(&o).await }
            }))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        }
        Ok(applied)
    }

    /// Discovers every kind among `objects` at once; every kind the cluster
    /// does not serve is named, not only the first.
    async fn discover(&self, objects: &[DynamicObject]) -> anyhow::Result<()> {
        let mut kinds: Vec<GroupVersionKind> = Vec::new();
        for o in objects {
            let gvk = gvk_of(o)?;
            if !kinds.contains(&gvk) {
                kinds.push(gvk);
            }
        }
        let answers = futures::future::join_all(kinds.iter().map(|k| self.resource(k))).await;
        let mut problems: Vec<anyhow::Error> =
            answers.into_iter().filter_map(Result::err).collect();
        if problems.len() > 1 {
            let all: Vec<String> = problems.iter().map(|e| format!("{e:#}")).collect();
            return Err(fail(Kind::PhaseFailed, all.join("; ")));
        }
        problems.pop().map_or(Ok(()), Err)
    }

    /// `batch` (every rank of a call) without the objects the cluster
    /// already holds as they would be applied, and how many those were. One list per kind and
    /// namespace, for kinds with enough objects to be worth it; a list
    /// that fails (RBAC without `list`, a flaky server) skips nothing.
    async fn without_unchanged(&self, batch: Vec<DynamicObject>) -> (Vec<DynamicObject>, usize) {
        let mut groups: HashMap<(GroupVersionKind, Option<String>), Vec<usize>> = HashMap::new();
        for (i, o) in batch.iter().enumerate() {
            if let (true, Ok(gvk)) = (unchanged::skippable(o), gvk_of(o)) {
                groups
                    .entry((gvk, o.metadata.namespace.clone()))
                    .or_default()
                    .push(i);
            }
        }
        let batch_ref = &batch;
        // Every kind at once: one round trip for all of them.
        let verdicts = futures::future::join_all(
            groups
                .into_iter()
                .filter(|(_, m)| m.len() >= LIST_FROM)
                .map(|((gvk, _), members)| async move {
                    let api = self.api_for(&batch_ref[members[0]]).await.ok()?;
                    let wanted: HashMap<&str, usize> = members
                        .iter()
                        .filter_map(|&i| batch_ref[i].metadata.name.as_deref().map(|n| (n, i)))
                        .collect();
                    match live_named(&api, &wanted).await {
                        Ok(live) => Some(
                            live.into_iter()
                                .filter_map(|(name, obj)| {
                                    let i = *wanted.get(name.as_str())?;
                                    unchanged::unchanged(&batch_ref[i], &obj).then_some(i)
                                })
                                .collect::<Vec<usize>>(),
                        ),
                        Err(e) => {
                            tracing::debug!("listing {}: {e}; applying them all", gvk.kind);
                            None
                        }
                    }
                }),
        )
        .await;
        let mut skip = vec![false; batch.len()];
        for i in verdicts.into_iter().flatten().flatten() {
            skip[i] = true;
        }
        let skipped = skip.iter().filter(|s| **s).count();
        let kept = batch
            .into_iter()
            .zip(skip)
            .filter_map(|(o, s)| (!s).then_some(o))
            .collect();
        (kept, skipped)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}
/// The answer a change not sent for a lost lock gets, in the client's
/// error type.
fn lock_lost_status(why: &str) -> kube::core::Status {
    serde_json::from_value(serde_json::json!({
        "status": "Failure",
        "reason": super::client::health::NOT_SENT_REASON,
        "message": format!("not sent: {why}"),
    }))
    .unwrap_or_default()
}
