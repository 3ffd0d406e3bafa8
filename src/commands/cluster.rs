//! What the cluster commands (rollback, history, status, unlock) share:
//! the environment's configuration and a context to reach its cluster.

use crate::cli::GlobalArgs;
use crate::config::{self, Sources};
use crate::error::{Kind, fail};
use crate::pipeline::context::ClusterTarget;
use crate::pipeline::{Context, DeploymentId, PhaseId, Selection, SkipReason};

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
    context_selecting(environment, global, deployment, only(phases), dry_run)
}

/// [`context`] with a selection of the command's own (`diff` takes the
/// deploy's phase flags).
pub fn context_selecting(
    environment: &str,
    global: &GlobalArgs,
    deployment: bool,
    selection: Selection,
    dry_run: bool,
) -> anyhow::Result<Context> {
    let config = config::load(&Sources {
        environment,
        env_file: global.env_file.as_deref(),
        manifests_dir: &global.manifests_dir,
        process_env: config::process_env(),
        process_not_utf8: config::process_env_not_utf8(),
        // These commands check no variables.
        check_for: None,
    })?;
    let id = deployment.then(|| DeploymentId::now(environment));
    let mut cx = Context::new(id, config, selection, dry_run);
    cx.cluster = ClusterTarget {
        kubeconfig: global.kubeconfig.clone(),
        context: global.context.clone(),
    };
    cx.manifests_dir = global.manifests_dir.clone();
    cx.options.lock_ttl = global.lock_ttl;
    Ok(cx)
}

/// Ask before a destructive step: `--yes`, or the environment's name typed
/// at a terminal. Without a terminal and without `--yes`, refuse: a CI job
/// must say it means it.
pub fn confirm(global: &GlobalArgs, environment: &str, what: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if global.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(fail(
            Kind::Usage,
            format!("{what} needs confirmation; pass --yes to do it without a prompt"),
        ));
    }
    eprint!(
        "{}.\nType the environment name ({environment}) to confirm: ",
        crate::redact::scrub(what)
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != environment {
        return Err(fail(Kind::Usage, "not confirmed; nothing was changed"));
    }
    Ok(())
}
