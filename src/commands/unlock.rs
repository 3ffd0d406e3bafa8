//! `maily-deploy unlock ENV`: remove a stuck deploy lock, after confirmation.
//!
//! Only for a run that died without releasing it and whose lease has not
//! expired yet (a live run renews it every few seconds): removing a live
//! run's lock lets a second run change things under it.

use super::cluster;
use crate::cli::{GlobalArgs, OutputFormat};
use crate::k8s::lease;
use crate::output;

/// What `unlock` did, as `--output json` says it.
fn said(
    global: &GlobalArgs,
    environment: &str,
    removed: Option<&lease::Holder>,
    text: String,
) -> anyhow::Result<()> {
    match global.output {
        OutputFormat::Json => {
            output::stdout_line(&serde_json::to_string_pretty(&serde_json::json!({
                "schema": "maily-deploy/unlock/v1",
                "environment": environment,
                "removed": removed.is_some(),
                "holder": removed.map(|h| serde_json::json!({
                    "user": h.user,
                    "host": h.host,
                    "deployment_id": h.deployment_id,
                    "since": h.since,
                })),
                "result": text,
            }))?)
        }
        OutputFormat::Human => output::stdout_line(&text),
    }
    Ok(())
}

pub async fn run(environment: &str, global: &GlobalArgs) -> anyhow::Result<i32> {
    let cx = cluster::context(environment, global, false, &[], false)?;
    let client = cx.kube().await?;
    let ns = &cx.config.profile.namespace;
    let Some(held) = lease::held(client.clone(), ns).await? else {
        said(
            global,
            environment,
            None,
            format!("the deploy lock of {environment} is free; nothing to do"),
        )?;
        return Ok(crate::exit_code::SUCCESS);
    };
    cluster::confirm(
        global,
        environment,
        &format!(
            "Removing the deploy lock of {environment}, held by {} until {} (only if that run is dead)",
            held.holder,
            held.expires.format("%H:%M:%S UTC")
        ),
    )?;
    lease::force_unlock(client, ns, environment, &held).await?;
    said(
        global,
        environment,
        Some(&held.holder),
        format!(
            "removed the deploy lock of {environment}, held by {}",
            held.holder
        ),
    )?;
    Ok(crate::exit_code::SUCCESS)
}
