//! The phases of a deployment and the trait each one implements.
//!
//! The runner owns order, skipping, timing and the report; a phase owns only
//! its own work. Keeping that split is what lets a phase be tested alone and
//! lets the runner undo a failed run without knowing what each phase did.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::context::Context;

/// A phase of the pipeline, in pipeline order.
///
/// The order of the variants is the order of a run: `PhaseId::ALL` and `Ord`
/// both follow it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum PhaseId {
    /// Check every variable the selected phases need, without contacting anything.
    Validate,
    /// Terraform: init, workspace, plan, apply; outputs feed later phases.
    #[value(alias = "infrastructure")]
    Provision,
    /// Back up the database, then apply pending migrations.
    #[value(alias = "database")]
    Migrate,
    /// Apply the backend services to the idle slot and wait for the rollout.
    #[value(alias = "backend")]
    DeployBackend,
    /// Build the Next.js frontend on Vercel, without promoting it.
    #[value(alias = "frontend")]
    DeployFrontend,
    /// AI model routing, provider key checks, AI services in the idle slot.
    #[value(alias = "ai")]
    ConfigureAi,
    /// Alert rules, ServiceMonitors, Grafana dashboards and annotations.
    #[value(alias = "monitoring")]
    Monitor,
    /// Prove the idle slot works before users see it.
    Verify,
    /// Move users to the new slot and promote the frontend.
    #[value(alias = "traffic")]
    ShiftTraffic,
}

impl PhaseId {
    /// Every phase, in the order a run takes them.
    pub const ALL: [PhaseId; 9] = [
        PhaseId::Validate,
        PhaseId::Provision,
        PhaseId::Migrate,
        PhaseId::DeployBackend,
        PhaseId::DeployFrontend,
        PhaseId::ConfigureAi,
        PhaseId::Monitor,
        PhaseId::Verify,
        PhaseId::ShiftTraffic,
    ];

    /// The id as users type it (`deploy-backend`).
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseId::Validate => "validate",
            PhaseId::Provision => "provision",
            PhaseId::Migrate => "migrate",
            PhaseId::DeployBackend => "deploy-backend",
            PhaseId::DeployFrontend => "deploy-frontend",
            PhaseId::ConfigureAi => "configure-ai",
            PhaseId::Monitor => "monitor",
            PhaseId::Verify => "verify",
            PhaseId::ShiftTraffic => "shift-traffic",
        }
    }

    /// The flag that skips this phase, as the help text and messages name it.
    pub fn skip_flag(self) -> &'static str {
        match self {
            PhaseId::Validate => "--skip-validate",
            PhaseId::Provision => "--skip-provision",
            PhaseId::Migrate => "--skip-migrate",
            PhaseId::DeployBackend => "--skip-backend",
            PhaseId::DeployFrontend => "--skip-frontend",
            PhaseId::ConfigureAi => "--skip-ai",
            PhaseId::Monitor => "--skip-monitor",
            PhaseId::Verify => "--skip-verify",
            PhaseId::ShiftTraffic => "--skip-traffic",
        }
    }
}

impl fmt::Display for PhaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a phase would do, for `--dry-run`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PhasePlan {
    /// One line: what would happen.
    pub summary: String,
    /// The steps, one line each, in order.
    pub steps: Vec<String>,
}

/// What a phase did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PhaseReport {
    /// One line for the phase's row in the run's table.
    pub summary: String,
    /// Details, one line each, for the log and the JSON report.
    pub details: Vec<String>,
}

/// One phase of the pipeline.
#[async_trait]
pub trait Phase: Send + Sync {
    fn id(&self) -> PhaseId;

    /// What the phase would do; must change nothing anywhere.
    async fn plan(&self, cx: &Context) -> anyhow::Result<PhasePlan>;

    /// Do the phase's work.
    async fn run(&self, cx: &mut Context) -> anyhow::Result<PhaseReport>;

    /// Whether a stop (a signal, the deploy lock lost) must let the phase
    /// reach a safe point rather than drop it mid-way: a migration cut
    /// between two statements of a `-- no-transaction` file leaves a schema
    /// no release knows. Such a phase watches `cx.stop`, which the runner
    /// cancels, and returns soon after; the run still ends as stopped.
    fn stops_at_a_safe_point(&self) -> bool {
        false
    }

    /// The objects a run of this phase would server-side apply, as they
    /// stand when the run ends (routes all on the new slot): what
    /// `maily-deploy diff` asks the server about. Phases that write nothing
    /// to the cluster through manifests keep the default. Reads, never
    /// changes; Secrets are never among them (their values would show).
    async fn applies(&self, _cx: &Context) -> anyhow::Result<Vec<kube::api::DynamicObject>> {
        Ok(Vec::new())
    }
}
