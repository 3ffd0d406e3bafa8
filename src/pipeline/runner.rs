//! The runner: order, skipping, timing, dry-run, the lifecycle (lock,
//! snapshot, undo), interruption, and the report.
//!
//! Phases only do their own work; everything about the run as a whole lives
//! here, so each phase stays small and the run behaves the same whatever
//! phases it takes.

use std::time::Instant;

use chrono::Utc;

use super::context::Context;
use super::lifecycle::Lifecycle;
use super::phase::{Phase, PhaseId};
use super::report::{ErrorReport, Outcome, PhaseRow, PhaseStatus, RunReport, SCHEMA};
use crate::error::Kind;
use crate::exit_code;
use crate::k8s::lease::Fence;

/// What a run tells whoever displays it, as it happens.
pub trait Observer {
    fn run_started(&mut self, cx: &Context, phases: &[PhaseId]);
    fn phase_started(&mut self, id: PhaseId);
    /// Progress from the running phase (a traffic step, the live metrics).
    fn phase_progress(&mut self, _id: PhaseId, _update: &super::progress::Update) {}
    fn phase_finished(&mut self, row: &PhaseRow);
    fn run_finished(&mut self, report: &RunReport);
}

/// The phases of the pipeline, in order, and what surrounds them.
pub struct Runner {
    phases: Vec<Box<dyn Phase>>,
    /// A step after the phases, still under the lifecycle (lock, snapshot,
    /// undo): `rollback --database` takes the schema back once the older
    /// code serves, before the lock is released.
    closing: Option<Box<dyn Phase>>,
    lifecycle: Option<Box<dyn Lifecycle>>,
}

fn row(id: PhaseId, status: PhaseStatus) -> PhaseRow {
    PhaseRow {
        id,
        status,
        skip_reason: None,
        duration_ms: None,
        summary: String::new(),
        details: Vec::new(),
        error: None,
    }
}

/// Resolves when the run must stop, with the error that says why: a signal
/// (SIGINT, SIGTERM, latched for the whole process by `crate::interrupt`,
/// so one that came between two phases counts too), or the deploy lock lost.
async fn interruption(fence: Option<Fence>, during: PhaseId) -> anyhow::Error {
    let lock_lost = async move {
        match fence {
            Some(fence) => {
                let mut rx = fence.subscribe();
                match rx.wait_for(Option::is_some).await {
                    Ok(loss) => {
                        let loss = loss.clone().unwrap_or(crate::k8s::lease::Loss::Removed);
                        fence.loss_error(&loss)
                    }
                    Err(_) => std::future::pending().await,
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        s = crate::interrupt::requested() => crate::error::fail(Kind::Interrupted, format!("interrupted by {s} during {during}")),
        e = lock_lost => e,
    }
}

impl Runner {
    pub fn new(phases: Vec<Box<dyn Phase>>) -> Self {
        debug_assert!(phases.windows(2).all(|w| w[0].id() < w[1].id()));
        Runner {
            phases,
            closing: None,
            lifecycle: None,
        }
    }

    /// Run `phase` after the phases, when they all succeeded, under the
    /// same lock and snapshot; its failure undoes the run like any phase's.
    pub fn with_closing(mut self, phase: Box<dyn Phase>) -> Self {
        self.closing = Some(phase);
        self
    }

    /// Surround the phases of a real run with a lifecycle.
    pub fn with_lifecycle(mut self, lifecycle: Box<dyn Lifecycle>) -> Self {
        self.lifecycle = Some(lifecycle);
        self
    }

    /// Run (or, with `cx.dry_run`, plan) the selected phases. The caller
    /// shows the report (`Observer::run_finished`) once the run's last
    /// notification is sent, so that its warnings are in it.
    pub async fn run(
        &mut self,
        command: &'static str,
        cx: &mut Context,
        observer: &mut dyn Observer,
    ) -> RunReport {
        let started_at = Utc::now();
        let clock = Instant::now();
        let mut selected: Vec<PhaseId> = self
            .phases
            .iter()
            .map(|p| p.id())
            .filter(|id| cx.selection.is_selected(*id))
            .collect();
        selected.extend(self.closing.as_ref().map(|p| p.id()));
        cx.closing_follows = self.closing.is_some();
        observer.run_started(cx, &selected);

        let mut rows = Vec::with_capacity(self.phases.len());
        let mut error: Option<ErrorReport> = None;
        let mut begun = false;

        let mut prepared = false;
        // Whether a phase of this run has changed something yet (one that
        // succeeded for real): a failure before that is no phase failure
        // users need to hear was put back.
        let mut changed = false;
        let pipeline = self.phases.len();
        for (index, phase) in self.phases.iter().chain(self.closing.iter()).enumerate() {
            let id = phase.id();
            let closing = index >= pipeline;
            // After validate, before anything changes: what the run does
            // beyond its flags (a layer carried over), or why they cannot
            // work, refused with nothing changed.
            if id != PhaseId::Validate && !prepared && error.is_none() {
                prepared = true;
                if let Some(lc) = self.lifecycle.as_mut()
                    && let Err(e) = crate::interrupt::cancellable(id.as_str(), lc.prepare(cx)).await
                {
                    error = Some(ErrorReport::from_error(&e, unchanged_kind()));
                }
            }
            let skip = cx
                .selection
                .phases
                .iter()
                .find(|(p, _)| *p == id && !closing)
                .and_then(|(_, reason)| *reason);
            if let Some(reason) = skip {
                rows.push(PhaseRow {
                    skip_reason: Some(reason),
                    ..row(id, PhaseStatus::Skipped)
                });
                continue;
            }
            if !cx.dry_run
                && error.is_none()
                && id != PhaseId::Validate
                && !begun
                && let Some(lc) = self.lifecycle.as_mut()
            {
                // The lock, the snapshot: before the first change.
                match lc.begin(cx).await {
                    Ok(()) => begun = true,
                    Err(e) => error = Some(ErrorReport::from_error(&e, unchanged_kind())),
                }
            }
            if error.is_some() && !cx.dry_run {
                rows.push(row(id, PhaseStatus::NotRun));
                continue;
            }

            observer.phase_started(id);
            let t = Instant::now();
            let fence = self.lifecycle.as_ref().and_then(|l| l.fence());
            let result = if cx.dry_run {
                // A signal stops a plan at once; dropping it stops what it
                // started (a `terraform plan`) gracefully.
                crate::interrupt::cancellable(id.as_str(), phase.plan(cx))
                    .await
                    .map(|p| (p.summary, p.steps))
            } else {
                let (progress, mut lines) = super::Progress::channel();
                cx.progress = progress;
                let told = tokio_util::sync::CancellationToken::new();
                cx.stop = told.clone();
                let safe_point = phase.stops_at_a_safe_point();
                let result = {
                    let work = phase.run(cx);
                    tokio::pin!(work);
                    let stop = interruption(fence, id);
                    tokio::pin!(stop);
                    let mut stopping: Option<anyhow::Error> = None;
                    loop {
                        tokio::select! {
                            // A stop that came before the phase began wins
                            // over the phase's first step.
                            biased;
                            why = &mut stop, if stopping.is_none() => {
                                if !safe_point {
                                    break Err(why);
                                }
                                tracing::warn!("{why:#}: {id} stops at its next safe point first");
                                told.cancel();
                                stopping = Some(why);
                            }
                            r = &mut work => break match stopping.take() {
                                Some(why) => Err(why),
                                None => r.map(|r| (r.summary, r.details)),
                            },
                            Some(update) = lines.recv() => observer.phase_progress(id, &update),
                        }
                    }
                };
                while let Ok(update) = lines.try_recv() {
                    observer.phase_progress(id, &update);
                }
                cx.progress = Default::default();
                result
            };
            let duration_ms = Some(t.elapsed().as_millis() as u64);
            if result.is_ok() && !cx.dry_run && id != PhaseId::Validate {
                changed = true;
            }
            let done = match result {
                Ok((summary, details)) => PhaseRow {
                    duration_ms,
                    summary,
                    details,
                    ..row(
                        id,
                        if cx.dry_run {
                            PhaseStatus::Planned
                        } else {
                            PhaseStatus::Succeeded
                        },
                    )
                },
                Err(err) => {
                    let mut report = ErrorReport::from_error(&err, Kind::PhaseFailed);
                    report.kind = settled(report.kind, cx.dry_run, changed);
                    let summary = first_line(&report.message);
                    if error.is_none() {
                        error = Some(ErrorReport {
                            message: format!("{id}: {}", report.message),
                            ..report.clone()
                        });
                    }
                    PhaseRow {
                        duration_ms,
                        summary,
                        error: Some(report),
                        ..row(id, PhaseStatus::Failed)
                    }
                }
            };
            observer.phase_finished(&done);
            rows.push(done);
        }

        // A step stopped mid-way may have left work to put back (a
        // restore's schemas): done before the lock is released.
        crate::interrupt::put_backs_done().await;
        if begun && let Some(lc) = self.lifecycle.as_mut() {
            let finished = lc.finish(cx, error.as_ref()).await;
            error = match (error, finished) {
                (None, Ok(())) => None,
                (None, Err(e)) => Some(ErrorReport::from_error(&e, Kind::PhaseFailed)),
                (Some(mut failed), Ok(())) => {
                    if cx.options.no_rollback && cx.backend.switched {
                        failed.kind = Kind::PhaseFailedKept;
                        failed.message.push_str(
                            "; --no-rollback: everything was left as the failure found it",
                        );
                    } else if cx.backend.switched {
                        failed
                            .message
                            .push_str("; users were put back where they were");
                    } else if failed.kind == Kind::PhaseFailed {
                        failed.message.push_str("; users were not moved");
                    } else if matches!(failed.kind, Kind::Refused | Kind::Unreachable)
                        && !failed.message.contains("nothing was")
                    {
                        failed.message.push_str("; nothing was changed");
                    }
                    Some(failed)
                }
                // A failure that already left things to a person (a lost
                // lock) gets the rest of the story, not a second failure.
                (Some(failed), Err(e)) if failed.kind == Kind::RollbackFailed => {
                    Some(ErrorReport {
                        message: format!("{}; {e:#}", failed.message),
                        ..failed
                    })
                }
                (Some(failed), Err(e)) => Some(ErrorReport {
                    kind: Kind::RollbackFailed,
                    message: format!("{}; then {e:#}", failed.message),
                    problems: failed.problems,
                }),
            };
        }

        // An API server that stopped answering is behind every failure
        // that followed it: say so first.
        if let (Some(e), Some(outage)) = (error.as_mut(), crate::k8s::client::health::outage())
            && !e.message.contains("stopped answering")
        {
            e.message = format!("{outage}: {}", e.message);
            if let Some(users) = self.lifecycle.as_ref().and_then(|l| l.users_last_seen())
                && !e.message.contains("last saw them")
            {
                e.message
                    .push_str(&format!("; users as this run last saw them: {users}"));
            }
        }

        let outcome = match (cx.dry_run, error.is_some()) {
            (false, false) => Outcome::Succeeded,
            (false, true) => Outcome::Failed,
            (true, false) => Outcome::Planned,
            (true, true) => Outcome::PlanFailed,
        };
        RunReport {
            schema: SCHEMA.to_string(),
            command: command.to_string(),
            environment: cx.environment().to_string(),
            deployment_id: cx.deployment_id.clone(),
            dry_run: cx.dry_run,
            started_at,
            finished_at: Utc::now(),
            duration_ms: clock.elapsed().as_millis() as u64,
            outcome,
            exit_code: error
                .as_ref()
                .map_or(exit_code::SUCCESS, |e| e.kind.exit_code()),
            phases: rows,
            warnings: {
                let mut w = cx.config.warnings.clone();
                crate::warnings::merge_into(&mut w);
                w
            },
            image_scan: cx.image_scan.clone(),
            rollout: cx.records.rollout.clone(),
            error,
        }
    }
}

/// The kind of a failure before any phase (the lifecycle's preparation,
/// the lock, the snapshot): nothing changed; if the API server stopped
/// answering, that is why.
fn unchanged_kind() -> Kind {
    if crate::k8s::client::health::outage().is_some() {
        Kind::Unreachable
    } else {
        Kind::Refused
    }
}

/// The kind a phase's failure ends the run with. Before the run's first
/// change a refusal, an unreachable system or a configuration's problem
/// says so (exit 10, 9, 3 or 2, each of which promises nothing changed);
/// once something changed, it is a phase failure whose changes were put
/// back (exit 4). A dry run changes nothing, so a plan that fails is
/// refused, unless the configuration or the command line is why.
pub fn settled(kind: Kind, dry_run: bool, changed: bool) -> Kind {
    match kind {
        Kind::Refused | Kind::Unreachable | Kind::Config | Kind::Usage if changed && !dry_run => {
            Kind::PhaseFailed
        }
        Kind::PhaseFailed if dry_run => Kind::Refused,
        other => other,
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
