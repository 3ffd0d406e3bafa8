//! What phases see: settings, the run's identity, and what earlier phases
//! produced.

use super::deployment_id::DeploymentId;
use super::selection::Selection;
use crate::config::Config;

/// The context a run hands to each phase.
///
/// Later phases read what earlier ones leave here (Terraform outputs, the
/// idle slot, the Vercel deployment id); clients to external systems are
/// built lazily by the phases that need them, so a `--skip` never asks for
/// a connection it will not use.
#[derive(Debug, Clone)]
pub struct Context {
    /// The run's id; `None` for commands that are not deployments (`validate`).
    pub deployment_id: Option<DeploymentId>,
    pub config: Config,
    pub selection: Selection,
    pub dry_run: bool,
}

impl Context {
    pub fn environment(&self) -> &str {
        &self.config.environment
    }
}
