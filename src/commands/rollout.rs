//! `maily-deploy promote ENV` and `maily-deploy abort ENV`: finish or stop
//! the rollout in progress, from any terminal.
//!
//! While the deploying run lives (it holds the lease), the request goes
//! into the rollout record and the run acts on it within a poll: nothing
//! else touches the cluster under it. If the run died, its lease expires;
//! then the command takes the lock and does the work itself, as the run
//! would have, and closes the dead run's snapshot.

use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;

use super::cluster;
use crate::cli::{GlobalArgs, OutputFormat};
use crate::error::{Kind, fail};
use crate::k8s::lease;
use crate::k8s::live;
use crate::k8s::route;
use crate::k8s::snapshot_store::SnapshotStore;
use crate::k8s::watch::wait_for_slot;
use crate::output;
use crate::phases::deploy_frontend;
use crate::pipeline::lifecycle::put_back_dead_run;
use crate::pipeline::snapshot::{Actor, Outcome};
use crate::pipeline::{Context, DeploymentId, PhaseId};
use crate::traffic::record::{self, Action, Request, Rollout, Stage};

/// How often the command looks at the record while the run acts.
const POLL: Duration = Duration::from_millis(200);

/// How long a live run may take to carry a request out (a promote waits
/// for the new slot's workers).
const EFFECT_TIMEOUT: Duration = Duration::from_secs(600);

pub async fn request(
    environment: &str,
    action: Action,
    global: &GlobalArgs,
) -> anyhow::Result<i32> {
    let mut cx = cluster::context(environment, global, false, &[], false)?;
    let client = cx.kube().await?;
    let ns = cx.config.profile.namespace.clone();
    let rollout = in_progress(&client, &ns, environment).await?;
    let actor = Actor::current();
    let by = format!("{}@{}", actor.user, actor.host);

    let answered = if run_holds_lock(&client, &ns, &rollout).await? {
        // A live rollback that has moved everyone and is taking the
        // database back reads no more requests: say so now rather than
        // wait for an answer that cannot come.
        if rollout.percent >= 100 && rollout.command_line.iter().any(|a| a == "--database") {
            return Err(fail(
                Kind::LockHeld,
                format!(
                    "the rollback {} has moved every user and is taking the database back; a {} cannot act on it now; nothing was changed: `maily-deploy status {environment}` shows when it is done",
                    rollout.deployment_id,
                    action.as_str()
                ),
            ));
        }
        through_the_run(&client, &ns, environment, &rollout, action, &by).await?
    } else {
        None
    };
    // No run holds the lock for it, or it stopped renewing its lease
    // without answering: it died.
    let done = match answered {
        Some(text) => text,
        None if action == Action::Step => return Err(no_walk(environment, &rollout)),
        None => itself(&mut cx, environment, &rollout, action, &by).await?,
    };
    match global.output {
        OutputFormat::Json => {
            output::stdout_line(&serde_json::to_string_pretty(&serde_json::json!({
                "schema": "maily-deploy/rollout-request/v1",
                "environment": environment,
                "action": action.as_str(),
                "deployment_id": rollout.deployment_id,
                "result": done,
            }))?)
        }
        OutputFormat::Human => output::stdout_line(&done),
    }
    Ok(crate::exit_code::SUCCESS)
}

/// `promote --step` needs the run: only it walks the next step.
fn no_walk(environment: &str, rollout: &Rollout) -> anyhow::Error {
    fail(
        Kind::Usage,
        format!(
            "the run {} is gone, so nothing walks the next step; `maily-deploy promote {environment}` finishes the rollout, `maily-deploy abort {environment}` undoes it, or rerun the deploy",
            rollout.deployment_id
        ),
    )
}

/// The rollout that is not over yet, or why there is nothing to act on.
async fn in_progress(
    client: &kube::Client,
    ns: &str,
    environment: &str,
) -> anyhow::Result<Rollout> {
    let rec = record::read(client, ns).await?;
    match rec.rollout {
        Some(r) if !r.stage.is_final() => Ok(r),
        Some(r) => Err(fail(
            Kind::Usage,
            format!(
                "no rollout in progress in {environment}: the last one, {}, ended {} at {}%; `maily-deploy status {environment}` shows where users are",
                r.deployment_id,
                r.stage.as_str(),
                r.percent
            ),
        )),
        None => Err(fail(
            Kind::Usage,
            format!(
                "no rollout in progress in {environment}: no deployment has shifted traffic here yet"
            ),
        )),
    }
}

/// Whether the run driving this rollout holds the lock, its lease alive.
async fn run_holds_lock(
    client: &kube::Client,
    ns: &str,
    rollout: &Rollout,
) -> anyhow::Result<bool> {
    Ok(lease::current(client.clone(), ns)
        .await?
        .is_some_and(|(h, _)| rollout.deployment_id == h.deployment_id))
}

/// Hand the request to the live run and wait until it has acted. `None`
/// when the run's lease expired before it answered (it died).
async fn through_the_run(
    client: &kube::Client,
    ns: &str,
    environment: &str,
    rollout: &Rollout,
    action: Action,
    by: &str,
) -> anyhow::Result<Option<String>> {
    let request = Request {
        id: format!(
            "{}-{}",
            action.as_str(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ),
        deployment_id: rollout.deployment_id.clone(),
        action,
        by: by.to_string(),
        at: Utc::now(),
    };
    record::write_request(client, ns, &request).await?;
    output::stderr_line(&format!(
        "asked the run {} to {} (it is at {}% on {})",
        rollout.deployment_id,
        action.as_str(),
        rollout.percent,
        rollout.to
    ));
    let started = std::time::Instant::now();
    let mut heard = false;
    loop {
        tokio::time::sleep(POLL).await;
        let now = record::read(client, ns).await?.rollout;
        let Some(now) = now.filter(|r| r.deployment_id == rollout.deployment_id) else {
            anyhow::bail!(
                "the rollout record of {} was replaced while waiting",
                rollout.deployment_id
            );
        };
        let answered = now
            .answered
            .as_ref()
            .is_some_and(|a| a.request == request.id);
        if answered && !heard {
            heard = true;
            output::stderr_line("the run heard it; waiting for it to act");
        }
        let done = match action {
            Action::Promote => answered && (now.percent >= 100 || now.stage.is_final()),
            Action::Step => {
                answered
                    && (now.step > rollout.step
                        || now.stage == Stage::Grace
                        || now.stage.is_final())
            }
            Action::Abort => answered && now.stage.is_final(),
        };
        if done {
            // A run that ended without users on the new slot did not do
            // what a promote asked; one that kept users split did not do
            // what an abort asked.
            match (action, now.stage) {
                (Action::Promote | Action::Step, Stage::RolledBack | Stage::Failed) => {
                    return Err(fail(
                        Kind::PhaseFailed,
                        format!(
                            "the run {} ended {} at {}% before it could {}: {}",
                            now.deployment_id,
                            now.stage.as_str(),
                            now.percent,
                            action.as_str(),
                            now.failure.clone().unwrap_or_default()
                        ),
                    ));
                }
                (Action::Abort, Stage::Failed) => {
                    return Err(fail(
                        Kind::PhaseFailedKept,
                        format!(
                            "the run {} ended failed with --no-rollback and left users where the failure found them ({}% on {}); `maily-deploy rollback {} previous` puts them back",
                            now.deployment_id, now.percent, now.to, environment
                        ),
                    ));
                }
                _ => {}
            }
            return Ok(Some(match (action, now.stage) {
                (Action::Abort, Stage::RolledBack) => format!(
                    "aborted: users are back on {}; the run {} failed (exit 4)",
                    now.from.map_or("the old slot".into(), |s| s.to_string()),
                    now.deployment_id
                ),
                (Action::Abort, stage) => format!(
                    "the run {} ended {} ({})",
                    now.deployment_id,
                    stage.as_str(),
                    now.failure.unwrap_or_default()
                ),
                (Action::Step, Stage::Grace | Stage::Completed)
                    if rollout.stage == Stage::Grace =>
                {
                    format!(
                        "the grace period of {} ended; {} scales down",
                        now.deployment_id,
                        now.from.map_or("the old slot".into(), |s| s.to_string())
                    )
                }
                (Action::Step, stage) if stage.is_final() => format!(
                    "the rollout {} ended {} at {}%",
                    now.deployment_id,
                    stage.as_str(),
                    now.percent
                ),
                (Action::Step, _) => format!(
                    "moved on: step {}/{}, {}% on {}; analysis goes on from here",
                    now.step + 1,
                    now.steps.len(),
                    now.percent,
                    now.to
                ),
                // Asked during the grace period, a promote ends it.
                (Action::Promote, _) if rollout.stage == Stage::Grace => format!(
                    "promoted: the grace period of {} ended; {} scales down",
                    now.deployment_id,
                    now.from.map_or("the old slot".into(), |s| s.to_string())
                ),
                (Action::Promote, _) => format!(
                    "promoted: every user on {} ({}); the run {} goes on with {}",
                    now.to,
                    now.version,
                    now.deployment_id,
                    if now.stage == Stage::Grace {
                        "the grace period"
                    } else {
                        "its end"
                    }
                ),
            }));
        }
        if !answered && now.stage.is_final() {
            // The run finished (or failed) between two of its polls, before
            // it saw the request: nothing was done for it.
            return Err(fail(
                Kind::Usage,
                format!(
                    "the rollout {} ended {} at {}% before its run saw the {}; nothing was changed for it{}",
                    now.deployment_id,
                    now.stage.as_str(),
                    now.percent,
                    action.as_str(),
                    match (action, now.stage) {
                        (Action::Abort, Stage::Completed) => format!(
                            "; `maily-deploy rollback {environment} <ID>` takes users back to an earlier deployment"
                        ),
                        _ => String::new(),
                    }
                ),
            ));
        }
        if !heard && !run_holds_lock(client, ns, rollout).await? {
            let again = record::read(client, ns).await?;
            if again
                .rollout
                .as_ref()
                .is_some_and(|r| r.answered.as_ref().is_some_and(|a| a.request == request.id))
            {
                continue;
            }
            return Ok(None);
        }
        if started.elapsed() > EFFECT_TIMEOUT {
            // Nothing was changed by this command: the live run holds the
            // lock, and only it may act.
            return Err(fail(
                Kind::LockHeld,
                format!(
                    "the run {} holds the lock and did not carry out the {} within {} s; `maily-deploy status` shows where it stands (the request stays in the record for it)",
                    rollout.deployment_id,
                    action.as_str(),
                    EFFECT_TIMEOUT.as_secs()
                ),
            ));
        }
    }
}

/// Do what the dead run would have done, under the lock the lifecycle
/// takes for it (waiting out the dead run's lease), every change fenced by
/// it, the lock released at the end.
async fn itself(
    cx: &mut Context,
    environment: &str,
    rollout: &Rollout,
    action: Action,
    by: &str,
) -> anyhow::Result<String> {
    // From here this command changes the cluster under the lock: a Ctrl-C
    // must not kill it between two writes with the lock held. The latch
    // stops the waits (for the dead run's lock, for the new slot's
    // workers), where nothing has changed yet; the changes themselves (a
    // switch, a put-back) are short and finish first.
    crate::interrupt::install()?;
    let lock = crate::pipeline::lifecycle::DeadRunLock::take(
        cx,
        rollout.deployment_id.as_str(),
        &format!("{}-{}", action.as_str(), rollout.deployment_id),
    )
    .await?;
    let result = finish_dead(cx, environment, rollout, action, by).await;
    lock.release(cx).await;
    if let (Ok(_), Some(signal)) = (&result, crate::interrupt::received()) {
        output::stderr_line(&format!(
            "{signal} came while the {} was changing the cluster; it was finished first, so that users are not left split between slots",
            action.as_str()
        ));
    }
    result
}

async fn finish_dead(
    cx: &mut Context,
    environment: &str,
    rollout: &Rollout,
    action: Action,
    by: &str,
) -> anyhow::Result<String> {
    let applier = cx.applier().await?.clone();
    let ns = cx.config.profile.namespace.clone();
    let store = SnapshotStore::new(applier.client().clone(), &ns, environment);
    let snapshot = store
        .get(rollout.deployment_id.as_str())
        .await?
        .filter(|s| s.outcome == Outcome::InProgress)
        .ok_or_else(|| {
            fail(
                Kind::Usage,
                format!(
                    "the rollout of {} is no longer in progress (another command finished it); `maily-deploy status {environment}` shows where users are",
                    rollout.deployment_id
                ),
            )
        })?;
    let Some(release) = snapshot.release.clone() else {
        anyhow::bail!(
            "the snapshot of {} records no release",
            rollout.deployment_id
        );
    };
    // A frontend the run built is promoted with the switch, or put back by
    // an abort: Vercel's token is resolved as the run resolved it (a
    // `vault:` reference in the env file) before anything changes.
    let frontend = snapshot.frontend.clone().or(rollout.frontend.clone());
    if frontend.is_some() {
        crate::config::vault::resolve(
            &mut cx.config.vars,
            &[PhaseId::DeployFrontend, PhaseId::ShiftTraffic],
            None,
        )
        .await?;
    }
    // A rollback that died in its database step switched users to the
    // older code and left the database between two schemas: promoting it
    // would call that a success. Abort puts users back on the code that
    // matches the database as it was.
    if action == Action::Promote && !promote_can_finish(&snapshot) {
        return Err(fail(
            Kind::Refused,
            format!(
                "the rollback {} died during or before its database step, which promote cannot finish; nothing was changed: `maily-deploy abort {environment}` puts users back where it found them, then run the rollback again",
                rollout.deployment_id
            ),
        ));
    }
    match action {
        Action::Step => Err(no_walk(environment, rollout)),
        Action::Abort => {
            let from = rollout.from;
            put_back_dead_run(
                cx,
                &applier,
                &store,
                snapshot,
                &release,
                Outcome::Failed,
                format!("aborted by {by} at {}% after the run died", rollout.percent),
            )
            .await?;
            Ok(format!(
                "aborted: users are back on {} (the run {} had died at {}%)",
                from.map_or("the old slot".into(), |s| s.to_string()),
                rollout.deployment_id,
                rollout.percent
            ))
        }
        Action::Promote => {
            let slot = rollout.to;
            let templates = if snapshot.templates.is_empty() {
                cx.templates()?.to_vec()
            } else {
                snapshot.templates.clone()
            };
            let state = live::read(&applier, &cx.config.profile).await?;
            // The services this rollout moves: those that run its release
            // in the new slot, and none that users reach and it does not.
            let (profile, stale) = crate::traffic::plan::switchable(
                &cx.config.profile,
                &state,
                |n| snapshot.expected_image(&cx.config.profile, n),
                slot,
                |_| true,
            );
            if !stale.is_empty() {
                return Err(fail(
                    Kind::Refused,
                    format!(
                        "cannot promote: the slot {slot} does not run {} for {}; nothing was changed; `maily-deploy abort {environment}` puts users back instead",
                        release.image_tag,
                        stale.join(", ")
                    ),
                ));
            }
            // The workers of the new slot stay down while the run walks; a
            // promote that stops before the switch puts them back so.
            let workers_before: Vec<(String, i32)> = route::workers_of(&profile)
                .into_iter()
                .map(|(w, _)| {
                    let now = state
                        .services
                        .get(&w)
                        .and_then(|s| s.slots.get(&slot))
                        .map_or(0, |s| s.replicas);
                    (format!("{w}-{slot}"), now)
                })
                .collect();
            // The frontend follows the switch: whether it can is asked
            // before anything changes.
            cx.records.frontend = frontend;
            deploy_frontend::can_promote_recorded(cx).await?;
            let workers = route::workers_up(&applier, &profile, slot).await?;
            let waited = crate::interrupt::cancellable(
                &format!(
                    "the wait for {slot}'s workers, before the switch; they are back as they were and the rollout stays at {}% as the run left it: promote or abort again",
                    rollout.percent
                ),
                wait_for_slot(
                    applier.client(),
                    &ns,
                    slot,
                    &workers,
                    release.rollout_timeout(),
                    crate::k8s::rollout::graces(&cx.config.vars),
                ),
            )
            .await;
            if let Err(e) = waited {
                route::scale_all(&applier, &ns, workers_before)
                    .await
                    .with_context(|| {
                        format!("{e:#}; then putting the new slot's workers back as they were")
                    })?;
                return Err(e);
            }
            route::switch_to(&applier, &profile, &templates, &release, slot).await?;
            // The frontend follows at 100%, as the run would have.
            cx.deployment_id =
                DeploymentId::parse(environment, rollout.deployment_id.as_str()).ok();
            cx.release_override = Some(release.clone());
            let frontend = match deploy_frontend::promote_recorded(cx).await {
                Ok(f) => f,
                Err(e) => {
                    return Err(
                        frontend_failed(cx, &applier, &store, snapshot, &release, by, e).await,
                    );
                }
            };
            crate::pipeline::lifecycle::close_promoted_dead_run(
                cx, &applier, &store, snapshot, slot,
            )
            .await?;
            let mut closed = rollout.clone();
            closed.stage = Stage::Completed;
            closed.percent = 100;
            closed.step = closed.steps.len().saturating_sub(1);
            closed.updated_at = Utc::now();
            closed.failure = Some(format!("promoted by {by} after the run died"));
            record::write_rollout(applier.client(), &ns, &closed, None).await?;
            Ok(format!(
                "promoted: every user on {slot} ({}); the run {} had died at {}%; {} stays up, so `maily-deploy rollback` is one switch{}",
                release.image_tag,
                rollout.deployment_id,
                rollout.percent,
                slot.other(),
                frontend.map(|f| format!("; {f}")).unwrap_or_default()
            ))
        }
    }
}

/// The frontend could not follow a dead run's promote after the switch
/// (Vercel failed between the check and the promotion): everything the run
/// changed is put back, as the run itself would have on a failure, so users
/// are never left on the new backend with the old frontend.
async fn frontend_failed(
    cx: &Context,
    applier: &crate::k8s::apply::Applier,
    store: &SnapshotStore,
    snapshot: crate::pipeline::snapshot::Snapshot,
    release: &crate::k8s::values::Release,
    by: &str,
    e: anyhow::Error,
) -> anyhow::Error {
    let why = format!(
        "promote by {by} after the run died: the frontend did not follow the switch ({e:#})"
    );
    let from = snapshot.deployment_id.clone();
    // What the promotion recorded before Vercel heard of it (the deployment
    // it replaced), so a promotion Vercel took after all is put back too.
    let mut snapshot = snapshot;
    if cx.records.frontend.is_some() {
        snapshot.frontend = cx.records.frontend.clone();
    }
    match put_back_dead_run(
        cx,
        applier,
        store,
        snapshot,
        release,
        Outcome::Failed,
        why.clone(),
    )
    .await
    {
        Ok(()) => fail(
            Kind::PhaseFailed,
            format!(
                "{why}; every user is back where the run {from} found them, frontend and backend"
            ),
        ),
        Err(undo) => fail(
            Kind::RollbackFailed,
            format!(
                "{why}; putting users back failed too: {undo:#}; `maily-deploy status {}` shows where they are",
                cx.environment()
            ),
        ),
    }
}

/// Whether `promote` can finish a dead run: not a rollback with a database
/// step (`--database`), whose end is the database, not the switch.
fn promote_can_finish(dead: &crate::pipeline::snapshot::Snapshot) -> bool {
    !(dead.command == "rollback" && dead.command_line.iter().any(|a| a == "--database"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promote_never_finishes_a_rollback_that_had_a_database_step() {
        let mut dead = crate::pipeline::snapshot::tests_support::sample();
        dead.command = "deploy".into();
        assert!(promote_can_finish(&dead));
        dead.command = "rollback".into();
        dead.command_line = vec!["rollback".into(), "production".into(), "previous".into()];
        assert!(promote_can_finish(&dead));
        dead.command_line
            .extend(["--database".into(), "down".into()]);
        assert!(!promote_can_finish(&dead));
    }
}
