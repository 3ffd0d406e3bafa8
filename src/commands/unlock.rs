//! `maily-deploy unlock ENV`: remove a stuck deploy lock, after confirmation.
//!
//! Only for a run that died without releasing it and whose lease has not
//! expired yet (a live run renews it every few seconds): removing a live
//! run's lock lets a second run change things under it.

use std::io::{BufRead, IsTerminal, Write};

use super::cluster;
use crate::cli::GlobalArgs;
use crate::error::{Kind, fail};
use crate::k8s::lease;
use crate::output;

pub async fn run(environment: &str, global: &GlobalArgs) -> anyhow::Result<i32> {
    let cx = cluster::context(environment, global, false, &[], false)?;
    let client = cx.kube().await?;
    let ns = &cx.config.profile.namespace;
    let Some((holder, expires)) = lease::current(client.clone(), ns).await? else {
        output::stdout_line(&format!(
            "the deploy lock of {environment} is free; nothing to do"
        ));
        return Ok(crate::exit_code::SUCCESS);
    };
    if !global.yes {
        if !std::io::stdin().is_terminal() {
            return Err(fail(
                Kind::Usage,
                format!(
                    "unlocking {environment} needs confirmation: the lock is held by {holder} until {}; pass --yes to remove it without a prompt",
                    expires.format("%H:%M:%S UTC")
                ),
            ));
        }
        eprint!(
            "The deploy lock of {environment} is held by {holder}.\nRemove it only if that run is dead. Type the environment name to confirm: "
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != environment {
            return Err(fail(
                Kind::Usage,
                "not confirmed; the lock is left in place",
            ));
        }
    }
    let removed = lease::force_unlock(client, ns).await?;
    output::stdout_line(&format!(
        "removed the deploy lock of {environment}{}",
        removed
            .map(|h| format!(", held by {h}"))
            .unwrap_or_default()
    ));
    Ok(crate::exit_code::SUCCESS)
}
