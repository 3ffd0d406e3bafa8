//! What the cluster commands (rollback, history, status, unlock) share:
//! the environment's configuration and a context to reach its cluster.

use std::collections::BTreeMap;

use chrono::Utc;

use crate::cli::GlobalArgs;
use crate::config::{self, Sources};
use crate::pipeline::context::ClusterTarget;
use crate::pipeline::{Context, DeploymentId, PhaseId, Selection, SkipReason};

fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// A selection of exactly these phases (no validate: these commands check
/// what they need themselves).
pub fn only(phases: &[PhaseId]) -> Selection {
    Selection {
        phases: PhaseId::ALL
            .iter()
            .map(|&id| (id, (!phases.contains(&id)).then_some(SkipReason::NotInOnly)))
            .collect(),
    }
}

/// A context for a cluster command on `environment`; `deployment` gives
/// the command a deployment id of its own (a rollback is a deployment).
pub fn context(
    environment: &str,
    global: &GlobalArgs,
    deployment: bool,
    phases: &[PhaseId],
    dry_run: bool,
) -> anyhow::Result<Context> {
    let config = config::load(&Sources {
        environment,
        env_file: global.env_file.as_deref(),
        manifests_dir: &global.manifests_dir,
        process_env: process_env(),
    })?;
    let id = deployment.then(|| DeploymentId::new(environment, Utc::now()));
    let mut cx = Context::new(id, config, only(phases), dry_run);
    cx.cluster = ClusterTarget {
        kubeconfig: global.kubeconfig.clone(),
        context: global.context.clone(),
    };
    cx.manifests_dir = global.manifests_dir.clone();
    cx.options.lock_ttl = global.lock_ttl;
    Ok(cx)
}
