//! `maily-deploy unlock ENV`: remove a stuck deploy lock, after confirmation.
//!
//! Only for a run that died without releasing it and whose lease has not
//! expired yet (a live run renews it every few seconds): removing a live
//! run's lock lets a second run change things under it.

use super::cluster;
use crate::cli::GlobalArgs;
use crate::k8s::lease;
use crate::output;

pub async fn run(environment: &str, global: &GlobalArgs) -> anyhow::Result<i32> {
    let cx = cluster::context(environment, global, false, &[], false)?;
    let client = cx.kube().await?;
    let ns = &cx.config.profile.namespace;
    let Some(held) = lease::held(client.clone(), ns).await? else {
        output::stdout_line(&format!(
            "the deploy lock of {environment} is free; nothing to do"
        ));
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
    output::stdout_line(&format!(
        "removed the deploy lock of {environment}, held by {}",
        held.holder
    ));
    Ok(crate::exit_code::SUCCESS)
}
