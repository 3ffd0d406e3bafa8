//! `maily-deploy status ENV`: the live state, the lock, the last deployment,
//! and whether the live state drifted from what that deployment left.

use comfy_table::{Table, presets};

use super::cluster;
use crate::cli::{GlobalArgs, OutputFormat};
use crate::k8s::snapshot_store::SnapshotStore;
use crate::k8s::{lease, live};
use crate::output;
use crate::pipeline::snapshot::Outcome;

pub async fn run(environment: &str, global: &GlobalArgs) -> anyhow::Result<i32> {
    let cx = cluster::context(environment, global, false, &[], false)?;
    let applier = cx.applier().await?;
    let profile = &cx.config.profile;
    let state = live::read(applier, profile).await?;
    let store = SnapshotStore::new(applier.client().clone(), &profile.namespace, environment);
    let history = store.list().await?;
    let last = history.first();
    let last_good = history.iter().find(|s| s.outcome == Outcome::Succeeded);
    let drift: Vec<String> = last_good
        .and_then(|s| s.after.as_ref())
        .map(|after| live::differences(after, &state))
        .unwrap_or_default();
    let lock = lease::current(applier.client().clone(), &profile.namespace).await?;
    let active = match state.active() {
        live::Active::Fresh => "none (nothing switched yet)".to_string(),
        live::Active::Slot(s) => s.to_string(),
        live::Active::Mixed(by) => format!(
            "MIXED ({}): an interrupted switch; rerun, or roll back",
            by.iter()
                .map(|(n, s)| format!("{n}={}", s.map_or("none", |s| s.as_str())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };

    match global.output {
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "schema": "maily-deploy/status/v1",
                "environment": environment,
                "namespace": profile.namespace,
                "active_slot": match state.active() { live::Active::Slot(s) => Some(s.to_string()), _ => None },
                "services": state.services,
                "lock": lock.as_ref().map(|(h, exp)| serde_json::json!({"holder": h, "expires_at": exp})),
                "last_deployment": last.map(|s| serde_json::json!({
                    "deployment_id": s.deployment_id, "outcome": s.outcome.as_str(), "command": s.command,
                    "started_at": s.started_at, "failure": s.failure,
                })),
                "last_good_deployment": last_good.map(|s| s.deployment_id.clone()),
                "drift": drift,
            });
            output::stdout_line(&serde_json::to_string_pretty(&doc)?);
        }
        OutputFormat::Human => {
            output::stdout_line(&format!(
                "{environment} (namespace {}): users on {active}",
                profile.namespace
            ));
            let mut table = Table::new();
            table.load_preset(presets::UTF8_BORDERS_ONLY);
            table.set_header(vec!["service", "active", "weights b/g", "blue", "green"]);
            for (name, s) in &state.services {
                let slot = |slot| {
                    s.slots.get(&slot).map_or("-".to_string(), |st| {
                        format!(
                            "{} {}/{}",
                            st.image
                                .as_deref()
                                .and_then(|i| i.rsplit(':').next())
                                .unwrap_or("?"),
                            st.ready,
                            st.replicas
                        )
                    })
                };
                table.add_row(vec![
                    name.clone(),
                    s.active.map_or("-".into(), |a| a.to_string()),
                    s.weights.map_or("-".into(), |(b, g)| format!("{b}/{g}")),
                    slot(crate::k8s::slot::Slot::Blue),
                    slot(crate::k8s::slot::Slot::Green),
                ]);
            }
            output::stdout_line(&table.to_string());
            match last {
                Some(s) => output::stdout_line(&format!(
                    "last deployment: {} ({}, {} by {})",
                    s.deployment_id,
                    s.outcome.as_str(),
                    s.command,
                    s.actor
                )),
                None => output::stdout_line("last deployment: none recorded"),
            }
            if let Some((holder, expires)) = &lock {
                output::stdout_line(&format!(
                    "lock: held by {holder}, expires {}",
                    expires.format("%H:%M:%S UTC")
                ));
            }
            if drift.is_empty() {
                if let Some(g) = last_good {
                    output::stdout_line(&format!("drift: none since {}", g.deployment_id));
                }
            } else {
                output::stdout_line(&format!(
                    "drift from {}:",
                    last_good.map(|g| g.deployment_id.as_str()).unwrap_or("?")
                ));
                for d in &drift {
                    output::stdout_line(&format!("  {d}"));
                }
            }
        }
    }
    Ok(crate::exit_code::SUCCESS)
}
