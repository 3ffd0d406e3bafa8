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
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Api, Client};
use tokio::sync::Mutex;

use super::client::retry;
use super::lease::Fence;
use super::manifest::apply_rank;
use super::unchanged;
use crate::error::{Kind, fail};

pub const FIELD_MANAGER: &str = "maily-deploy";

/// How many applies are in flight at once.
const CONCURRENCY: usize = 16;

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

/// Applies objects, remembering what discovery said about each kind.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    kinds: Arc<Mutex<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>>,
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
            kinds: Arc::default(),
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
        if let Some(found) = self.kinds.lock().await.get(gvk) {
            return Ok(found.clone());
        }
        let found = retry("discovery", || kube::discovery::pinned_kind(&self.client, gvk))
            .await
            .map_err(|e| {
                let group = if gvk.group.is_empty() { "core".to_string() } else { gvk.group.clone() };
                fail(
                    Kind::PhaseFailed,
                    format!(
                        "the cluster does not serve {} ({group}/{}): {e}; install its CustomResourceDefinition first",
                        gvk.kind, gvk.version
                    ),
                )
            })?;
        self.kinds.lock().await.insert(gvk.clone(), found.clone());
        Ok(found)
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
        retry("apply", || api.patch(&name, &params, &patch))
            .await
            .with_context(|| format!("applying {kind} {name}"))
    }

    /// Apply every object, rank by rank; fails on the first error with the
    /// object named. Objects an apply would leave as they are are not
    /// written (`unchanged`); the answer counts both.
    pub async fn apply_all(&self, mut objects: Vec<DynamicObject>) -> anyhow::Result<Applied> {
        let rank = |o: &DynamicObject| o.types.as_ref().map_or(u8::MAX, |t| apply_rank(&t.kind));
        objects.sort_by_key(rank);
        objects.iter_mut().for_each(unchanged::stamp);
        let mut applied = Applied::default();
        while !objects.is_empty() {
            let first = rank(&objects[0]);
            let split = objects
                .iter()
                .position(|o| rank(o) != first)
                .unwrap_or(objects.len());
            let rest = objects.split_off(split);
            let batch = std::mem::replace(&mut objects, rest);
            let (batch, unchanged) = self.without_unchanged(batch).await;
            applied.unchanged += unchanged;
            applied.written += batch.len();
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

    /// `batch` without the objects the cluster already holds as they would
    /// be applied, and how many those were. One list per kind and
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
        let mut skip = vec![false; batch.len()];
        for ((gvk, _), members) in groups.into_iter().filter(|(_, m)| m.len() >= LIST_FROM) {
            let api = match self.api_for(&batch[members[0]]).await {
                Ok(api) => api,
                Err(_) => continue,
            };
            let wanted: HashMap<&str, usize> = members
                .iter()
                .filter_map(|&i| batch[i].metadata.name.as_deref().map(|n| (n, i)))
                .collect();
            match live_named(&api, &wanted).await {
                Ok(live) => {
                    for (name, obj) in live {
                        if let Some(&i) = wanted.get(name.as_str()) {
                            skip[i] = unchanged::unchanged(&batch[i], &obj);
                        }
                    }
                }
                Err(e) => tracing::debug!("listing {}: {e}; applying them all", gvk.kind),
            }
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
