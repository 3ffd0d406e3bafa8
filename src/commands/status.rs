//! `maily-deploy status ENV`: the live state, the lock, the last deployment,
//! and whether the live state drifted from what that deployment left.

use comfy_table::{Table, presets};

use super::cluster;
use crate::cli::{GlobalArgs, OutputFormat};
use crate::k8s::snapshot_store::SnapshotStore;
use crate::k8s::{lease, live};
use crate::output;
use crate::pipeline::snapshot::Outcome;
use crate::traffic::record::{self, Rollout};
use crate::traffic::report::measurement_line;

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
    let rec = record::read(applier.client(), &profile.namespace).await?;
    let rollout = rec.rollout.clone();
    // A run drives its rollout while it holds the lock and its heartbeat is
    // fresh (a killed run's lease outlives it by up to its TTL).
    let driven = rollout.as_ref().is_some_and(|r| {
        !r.stage.is_final()
            && !rec.run_is_silent(chrono::Utc::now())
            && lock
                .as_ref()
                .is_some_and(|(h, _)| r.deployment_id == h.deployment_id)
    });
    let rollout_lines = rollout
        .as_ref()
        .map(|r| {
            rollout_lines(
                environment,
                r,
                lock.as_ref().map(|(h, e)| (h, *e)),
                driven,
                last_good.map(|s| s.deployment_id.as_str()),
            )
        })
        .unwrap_or_default();
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
                "rollout": rollout,
                "rollout_driven": driven,
                "rollout_heartbeat": rec.heartbeat,
                "rollout_summary": rollout_lines,
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
            for line in &rollout_lines {
                output::stdout_line(line);
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

/// Where the last rollout stands and, when its run is gone mid-rollout,
/// every way out with the command for it.
fn rollout_lines(
    environment: &str,
    r: &Rollout,
    lock: Option<(&lease::Holder, chrono::DateTime<chrono::Utc>)>,
    driven: bool,
    last_good: Option<&str>,
) -> Vec<String> {
    let from = r.from.map_or("the old slot".to_string(), |s| s.to_string());
    if r.stage.is_final() {
        return vec![format!(
            "last rollout: {} {} at {}% on {}{}",
            r.deployment_id,
            r.stage.as_str(),
            r.percent,
            r.to,
            r.failure
                .as_ref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default()
        )];
    }
    let mut out = vec![format!(
        "rollout: {} at step {}/{}, {}% on {} ({}), {} since {}",
        r.deployment_id,
        r.step + 1,
        r.steps.len(),
        r.percent,
        r.to,
        r.version,
        r.stage.as_str(),
        r.since.format("%H:%M:%S UTC")
    )];
    if let Some(m) = &r.last_measurement {
        out.push(format!("  last analysis: {}", measurement_line(m)));
    }
    match lock.filter(|_| driven) {
        Some((holder, expires)) => {
            out.push(format!(
                "  driven by the run {} ({holder}; its lock expires at {} unless renewed): `maily-deploy promote {environment}` finishes it now, `maily-deploy abort {environment}` sends users back to {from}",
                r.deployment_id,
                expires.format("%H:%M:%S UTC")
            ));
        }
        _ => {
            let wait = match lock {
                Some((holder, expires)) => format!(
                    " (the lock is held by {holder} until {}: promote and abort wait for it, a rerun or rollback needs it gone, or `maily-deploy unlock {environment}`)",
                    expires.format("%H:%M:%S UTC")
                ),
                None => String::new(),
            };
            out.push(format!(
                "  the run {} is gone mid-rollout (not heard from for {}s); users stay split as above until one of these{wait}:",
                r.deployment_id,
                record::SILENT_AFTER.as_secs()
            ));
            out.push(format!(
                "    rerun     maily-deploy {environment}          users back on {from}, then the release again from its first step"
            ));
            out.push(format!(
                "    promote   maily-deploy promote {environment}  every user to {} now",
                r.to
            ));
            out.push(format!(
                "    abort     maily-deploy abort {environment}    every user back on {from} now"
            ));
            out.push(format!(
                "    rollback  maily-deploy rollback {environment} {}",
                last_good.unwrap_or("<ID from `maily-deploy history`>")
            ));
        }
    }
    out
}
