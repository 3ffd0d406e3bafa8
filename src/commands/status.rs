//! `maily-deploy status ENV`: the live state, the lock, the last deployment,
//! the rollout, and whether the live state drifted from what the last good
//! deployment left.
//!
//! While a rollout walks its steps, users split between the slots on
//! purpose: status says where the rollout stands and compares the live
//! state with what its step is meant to leave (`traffic::plan::state_at`),
//! so the split is never called drift and a hand edit beside it still is.
//! Where it suggests running a deployment again, it repeats the command
//! line that run recorded.

use super::cluster;
use crate::cli::{GlobalArgs, OutputFormat, command_text};
use crate::db::daily_backup;
use crate::k8s::snapshot_store::SnapshotStore;
use crate::k8s::{lease, live};
use crate::output::{self, table};
use crate::pipeline::snapshot::{Outcome, Snapshot};
use crate::traffic::record::{self, Rollout};
use crate::traffic::report::measurement_line;

/// The rollout still walking its steps: the record's, unless it ended, or
/// the run that walked it was finished since (its snapshot is no longer in
/// progress).
fn in_progress<'a>(rollout: Option<&'a Rollout>, history: &[Snapshot]) -> Option<&'a Rollout> {
    rollout.filter(|r| {
        !r.stage.is_final()
            && history
                .iter()
                .find(|s| s.deployment_id == r.deployment_id)
                .is_none_or(|s| s.outcome == Outcome::InProgress)
    })
}

/// How the live state differs from what the last good deployment left, or,
/// with a rollout in progress, from what its current step is meant to leave.
fn drift(
    state: &live::PlatformState,
    last_good: Option<&Snapshot>,
    rollout: Option<&Rollout>,
    profile: &crate::config::Profile,
) -> Vec<String> {
    let Some(recorded) = last_good.and_then(|s| s.after.as_ref()) else {
        return Vec::new();
    };
    match rollout {
        Some(r) => live::differences(
            &crate::traffic::plan::state_at(recorded, profile, r.to, r.percent, state),
            state,
        ),
        None => live::differences(recorded, state),
    }
}

/// The first line: where users are.
fn users_line(state: &live::PlatformState, rollout: Option<&Rollout>) -> String {
    if let Some(r) = rollout
        && let Some(from) = r.from
        && r.percent < 100
    {
        return format!(
            "users on {from}, {}% of them on {} by the rollout in progress",
            r.percent, r.to
        );
    }
    match state.active() {
        live::Active::Fresh => "users on none (nothing switched yet)".to_string(),
        live::Active::Slot(s) => format!("users on {s}"),
        live::Active::Mixed(by) => format!(
            "users on MIXED ({}): an interrupted switch; rerun, or roll back",
            by.iter()
                .map(|(n, s)| format!("{n}={}", s.map_or("none", |s| s.as_str())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The command that runs `s` again, as it was started; an older snapshot
/// that kept no command line is rerun by its environment alone.
fn rerun_of(environment: &str, command_line: &[String]) -> String {
    if command_line.is_empty() {
        command_text(&[environment.to_string()])
    } else {
        command_text(command_line)
    }
}

pub async fn run(environment: &str, global: &GlobalArgs) -> anyhow::Result<i32> {
    let cx = cluster::context(environment, global, false, &[], false)?;
    let applier = cx.applier().await?;
    let profile = &cx.config.profile;
    let state = live::read(applier, profile).await?;
    let store = SnapshotStore::new(applier.client().clone(), &profile.namespace, environment);
    let history = store.list().await?;
    let last = history.first();
    let last_good = history.iter().find(|s| s.outcome == Outcome::Succeeded);
    let lock = lease::current(applier.client().clone(), &profile.namespace).await?;
    let rec = record::read(applier.client(), &profile.namespace).await?;
    let now = chrono::Utc::now();
    let backup = daily_backup_health(applier.client(), &profile.namespace, now).await;
    let rollout = rec.rollout.clone();
    let walking = in_progress(rollout.as_ref(), &history);
    let drift = drift(&state, last_good, walking, profile);
    // A run drives its rollout while it holds the lock and its heartbeat is
    // fresh (a killed run's lease outlives it by up to its TTL).
    let driven = walking.is_some_and(|r| {
        !rec.run_is_silent(chrono::Utc::now())
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
                walking.is_some(),
                lock.as_ref().map(|(h, e)| (h, *e)),
                driven,
                last_good.map(|s| s.deployment_id.as_str()),
            )
        })
        .unwrap_or_default();
    // A failed deployment with no rollout left to finish: how to run it
    // again as it was started.
    let rerun = last
        .filter(|s| {
            walking.is_none()
                && s.command == "deploy"
                && matches!(s.outcome, Outcome::Failed | Outcome::RollbackFailed)
        })
        .map(|s| rerun_of(environment, &s.command_line));

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
                    "command_line": s.command_line, "started_at": s.started_at, "failure": s.failure,
                })),
                "last_good_deployment": last_good.map(|s| s.deployment_id.clone()),
                "drift": drift,
                "rollout": rollout,
                "rollout_in_progress": walking.is_some(),
                "rerun": rerun,
                "rollout_driven": driven,
                "rollout_heartbeat": rec.heartbeat,
                "rollout_summary": rollout_lines,
                "daily_backup": match &backup {
                    Ok(h) => serde_json::to_value(h)?,
                    Err(e) => serde_json::json!({"state": "unknown", "error": e}),
                },
            });
            output::stdout_line(&serde_json::to_string_pretty(&doc)?);
        }
        OutputFormat::Human => {
            output::stdout_line(&format!(
                "{environment} (namespace {}): {}",
                profile.namespace,
                users_line(&state, walking)
            ));
            let rows: Vec<Vec<String>> = state
                .services
                .iter()
                .map(|(name, s)| {
                    let slot = |slot| {
                        s.slots.get(&slot).map_or("-".to_string(), |st| {
                            format!(
                                "{} {}/{}",
                                st.release().unwrap_or_else(|| "?".into()),
                                st.ready,
                                st.replicas
                            )
                        })
                    };
                    vec![
                        name.clone(),
                        s.active.map_or("-".into(), |a| a.to_string()),
                        live::weights_words(s.weights).replace("none", "-"),
                        slot(crate::k8s::slot::Slot::Blue),
                        slot(crate::k8s::slot::Slot::Green),
                    ]
                })
                .collect();
            output::stdout_line(&table::render(
                table::detect(),
                &["service", "active", "weights b/g", "blue", "green"],
                &rows,
            ));
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
            if let Some(cmd) = &rerun {
                output::stdout_line(&format!("  to run it again as it was started: {cmd}"));
            }
            for line in &rollout_lines {
                output::stdout_line(line);
            }
            output::stdout_line(&match &backup {
                Ok(h) => h.line(&profile.namespace, now),
                Err(e) => format!("daily backup: unknown ({e})"),
            });
            if let Some((holder, expires)) = &lock {
                output::stdout_line(&format!(
                    "lock: held by {holder}, expires {}",
                    expires.format("%H:%M:%S UTC")
                ));
            }
            let beside = if walking.is_some() {
                " beside the rollout"
            } else {
                ""
            };
            if drift.is_empty() {
                if let Some(g) = last_good {
                    output::stdout_line(&format!("drift: none{beside} since {}", g.deployment_id));
                }
            } else {
                output::stdout_line(&format!(
                    "drift from {}{beside}:",
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

/// The daily backup's health from its CronJob's status; the error in
/// words when the CronJob cannot be read (status still shows the rest).
async fn daily_backup_health(
    client: &kube::Client,
    namespace: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<daily_backup::Health, String> {
    let api: kube::Api<k8s_openapi::api::batch::v1::CronJob> =
        kube::Api::namespaced(client.clone(), namespace);
    let job = crate::k8s::client::retry("reading the daily backup CronJob", || {
        api.get_opt(daily_backup::CRON_JOB)
    })
    .await
    .map_err(|e| format!("{e:#}"))?;
    let time = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
        chrono::DateTime::from_timestamp(t.0.as_second(), 0)
    };
    let times = job.map(|j| {
        let status = j.status.unwrap_or_default();
        daily_backup::JobTimes {
            last_success: status.last_successful_time.as_ref().and_then(time),
            last_scheduled: status.last_schedule_time.as_ref().and_then(time),
        }
    });
    Ok(daily_backup::health(times, now))
}

/// Where the last rollout stands and, when its run is gone mid-rollout,
/// every way out with the command for it (a rerun as the run was started).
fn rollout_lines(
    environment: &str,
    r: &Rollout,
    walking: bool,
    lock: Option<(&lease::Holder, chrono::DateTime<chrono::Utc>)>,
    driven: bool,
    last_good: Option<&str>,
) -> Vec<String> {
    let from = r.from.map_or("the old slot".to_string(), |s| s.to_string());
    if !walking {
        return vec![format!(
            "last rollout: {} {} at {}% on {}{}",
            r.deployment_id,
            r.stage.as_str().replace('_', " "),
            r.percent,
            r.to,
            r.failure
                .as_ref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default()
        )];
    }
    let since = r.since.format("%H:%M:%S UTC");
    let stage = match (r.stage, r.grace_until) {
        (record::Stage::Holding, _) => format!("waiting for analysis's verdict since {since}"),
        (record::Stage::Grace, Some(until)) => format!(
            "the old slot kept scaled until {} (grace)",
            until.format("%H:%M:%S UTC")
        ),
        _ => format!("at this step since {since}"),
    };
    let mut out = vec![format!(
        "rollout in progress: step {} of {}, {}% on {} ({} of {}), {stage}",
        r.step + 1,
        r.steps.len(),
        r.percent,
        r.to,
        r.version,
        r.deployment_id,
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
                "    rerun     {}  (users back on {from}, then the release again from its first step)",
                rerun_of(environment, &r.command_line)
            ));
            out.push(format!(
                "    promote   maily-deploy promote {environment}  (every user to {} now)",
                r.to
            ));
            out.push(format!(
                "    abort     maily-deploy abort {environment}  (every user back on {from} now)"
            ));
            out.push(format!(
                "    rollback  maily-deploy rollback {environment} {}",
                last_good.unwrap_or("previous")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::slot::Slot;
    use crate::pipeline::DeploymentId;
    use crate::traffic::record::Stage;

    fn rollout(stage: Stage, command_line: &[&str]) -> Rollout {
        let now = chrono::Utc::now();
        Rollout {
            deployment_id: DeploymentId::parse("staging", "staging-20260101-120000").unwrap(),
            from: Some(Slot::Blue),
            to: Slot::Green,
            version: "v2".into(),
            steps: vec![25, 50, 100],
            step: 1,
            percent: 50,
            stage,
            since: now,
            updated_at: now,
            grace_until: None,
            last_measurement: None,
            frontend: None,
            answered: None,
            failure: None,
            command_line: command_line.iter().map(|w| w.to_string()).collect(),
        }
    }

    #[test]
    fn a_rollout_in_progress_is_said_in_words_and_its_rerun_repeats_its_flags() {
        let r = rollout(
            Stage::Step,
            &["staging", "--skip-frontend", "--traffic-steps", "25,50,100"],
        );
        let lines = rollout_lines("staging", &r, true, None, false, None);
        assert!(
            lines[0].starts_with(
                "rollout in progress: step 2 of 3, 50% on green (v2 of staging-20260101-120000), at this step since "
            ),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with(
                "    rerun     maily-deploy staging --skip-frontend --traffic-steps 25,50,100  ("
            )),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l == "    rollback  maily-deploy rollback staging previous"),
            "{lines:?}"
        );
        for l in &lines {
            assert!(!l.contains("Some(") && !l.contains("None"), "{l}");
        }
        // A record from before command lines were kept: the environment.
        let old = rollout(Stage::Step, &[]);
        let lines = rollout_lines("staging", &old, true, None, false, None);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("    rerun     maily-deploy staging  (")),
            "{lines:?}"
        );
    }

    #[test]
    fn a_rollout_whose_run_was_finished_since_is_not_in_progress() {
        let r = rollout(Stage::Step, &[]);
        let mut dead = crate::pipeline::snapshot::tests_support::sample();
        dead.deployment_id = r.deployment_id.clone();
        assert!(in_progress(Some(&r), std::slice::from_ref(&dead)).is_some());
        dead.outcome = Outcome::Abandoned;
        assert!(in_progress(Some(&r), std::slice::from_ref(&dead)).is_none());
        assert!(in_progress(Some(&rollout(Stage::Completed, &[])), &[]).is_none());
        assert!(in_progress(Some(&r), &[]).is_some(), "its snapshot pruned");
    }

    #[test]
    fn mid_rollout_the_first_line_says_how_users_are_split() {
        let r = rollout(Stage::Step, &[]);
        assert_eq!(
            users_line(&live::PlatformState::default(), Some(&r)),
            "users on blue, 50% of them on green by the rollout in progress"
        );
        assert_eq!(
            users_line(&live::PlatformState::default(), None),
            "users on none (nothing switched yet)"
        );
    }
}
