//! Where a walk's changes land: routes, worker scales, the rollout record.
//!
//! The walk decides (which step, which weights, hold or abort) and this
//! seam acts; the cluster's implementation is the real one, and the walk's
//! own tests put a recorder in its place, so what the walk asks for at
//! each step, and in what order, is tested without a cluster.

use std::time::Duration;

use async_trait::async_trait;

use super::record::{self, Record, Rollout};
use super::report::RolloutReport;
use crate::config::Profile;
use crate::k8s::apply::Applier;
use crate::k8s::manifest::Template;
use crate::k8s::route;
use crate::k8s::slot::Slot;
use crate::k8s::values::Release;

/// Where each http service's users go at a step: (the slot its stable
/// Service selects, the route's weights for blue and green).
pub type RouteAt<'a> = &'a (dyn Fn(&str) -> (Slot, (u32, u32)) + Send + Sync);

/// The changes a walk makes, and the record it talks through.
#[async_trait]
pub trait TrafficRouter: Send + Sync {
    /// Scale Deployments that exist to these replicas.
    async fn scale(&self, namespace: &str, replicas: Vec<(String, i32)>) -> anyhow::Result<()>;
    /// The replicas the Deployments of `slot` hold now, by name.
    async fn replicas(
        &self,
        namespace: &str,
        slot: Slot,
    ) -> anyhow::Result<std::collections::BTreeMap<String, i32>>;
    /// Wait until these Deployments of `slot` have rolled out.
    async fn wait_ready(
        &self,
        namespace: &str,
        slot: Slot,
        names: &[String],
        timeout: Duration,
    ) -> anyhow::Result<()>;
    /// Every route and stable Service to `target`, the old slot's workers
    /// to 0: the 100% step.
    async fn switch_to(
        &self,
        profile: &Profile,
        templates: &[Template],
        release: &Release,
        target: Slot,
    ) -> anyhow::Result<()>;
    /// Every http service's route and stable Service as `at` says.
    async fn set_routes(
        &self,
        profile: &Profile,
        templates: &[Template],
        release: &Release,
        at: RouteAt<'_>,
    ) -> anyhow::Result<()>;
    /// The old slot's http Deployments to 0; their names.
    async fn scale_down_http(&self, profile: &Profile, slot: Slot) -> anyhow::Result<Vec<String>>;
    /// The rollout record, with any request another terminal left in it.
    async fn read_record(&self, namespace: &str) -> anyhow::Result<Record>;
    /// Save the rollout and its report in the record, only while this run
    /// may still change the environment (its lease).
    async fn save(
        &self,
        namespace: &str,
        rollout: &Rollout,
        report: &RolloutReport,
    ) -> anyhow::Result<()>;
    /// Say the run is alive while the walk lives.
    fn heartbeat(&self, namespace: &str) -> Option<tokio::task::JoinHandle<()>>;
    /// Where users are now, for the message of a run that loses the
    /// cluster mid-walk.
    fn note_users(&self, where_: String);
}

/// The cluster, through the run's applier (and its lease fence).
pub struct ClusterRouter {
    pub applier: Applier,
    /// The graces for the workers a step scales up.
    pub graces: crate::k8s::rollout::Graces,
}

#[async_trait]
impl TrafficRouter for ClusterRouter {
    async fn scale(&self, namespace: &str, replicas: Vec<(String, i32)>) -> anyhow::Result<()> {
        route::scale_all(&self.applier, namespace, replicas).await
    }

    async fn replicas(
        &self,
        namespace: &str,
        slot: Slot,
    ) -> anyhow::Result<std::collections::BTreeMap<String, i32>> {
        use k8s_openapi::api::apps::v1::Deployment;
        let api: kube::Api<Deployment> =
            kube::Api::namespaced(self.applier.client().clone(), namespace);
        let lp = kube::api::ListParams::default().labels(&crate::k8s::live::slot_selector(slot));
        let list =
            crate::k8s::client::retry("listing the slot's Deployments", || api.list(&lp)).await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|d| Some((d.metadata.name?, d.spec?.replicas.unwrap_or(1))))
            .collect())
    }

    async fn wait_ready(
        &self,
        namespace: &str,
        slot: Slot,
        names: &[String],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        crate::k8s::watch::wait_for_slot(
            self.applier.client(),
            namespace,
            slot,
            names,
            timeout,
            self.graces,
        )
        .await
    }

    async fn switch_to(
        &self,
        profile: &Profile,
        templates: &[Template],
        release: &Release,
        target: Slot,
    ) -> anyhow::Result<()> {
        route::switch_to(&self.applier, profile, templates, release, target).await
    }

    async fn set_routes(
        &self,
        profile: &Profile,
        templates: &[Template],
        release: &Release,
        at: RouteAt<'_>,
    ) -> anyhow::Result<()> {
        route::set_each(&self.applier, profile, templates, release, at).await
    }

    async fn scale_down_http(&self, profile: &Profile, slot: Slot) -> anyhow::Result<Vec<String>> {
        route::scale_down_http(&self.applier, profile, slot).await
    }

    async fn read_record(&self, namespace: &str) -> anyhow::Result<Record> {
        record::read(self.applier.client(), namespace).await
    }

    async fn save(
        &self,
        namespace: &str,
        rollout: &Rollout,
        report: &RolloutReport,
    ) -> anyhow::Result<()> {
        // The record is the environment's, not the run's: once another run
        // holds the lock, it is that run's to write.
        self.applier.may_change().await?;
        record::write_rollout(self.applier.client(), namespace, rollout, Some(report)).await
    }

    fn heartbeat(&self, namespace: &str) -> Option<tokio::task::JoinHandle<()>> {
        Some(record::beat(
            self.applier.client().clone(),
            namespace.to_string(),
        ))
    }

    fn note_users(&self, where_: String) {
        self.applier.note_users(where_);
    }
}
