//! The runner: order, skipping, timing, dry-run and the report.
//!
//! Phases only do their own work; everything about the run as a whole lives
//! here, so each phase stays small and the run behaves the same whatever
//! phases it takes.

use std::time::Instant;

use chrono::Utc;

use super::context::Context;
use super::phase::{Phase, PhaseId};
use super::report::{ErrorReport, Outcome, PhaseRow, PhaseStatus, RunReport, SCHEMA};
use crate::error::{Kind, kind_of};
use crate::exit_code;

/// What a run tells whoever displays it, as it happens.
pub trait Observer {
    fn run_started(&mut self, cx: &Context, phases: &[PhaseId]);
    fn phase_started(&mut self, id: PhaseId);
    fn phase_finished(&mut self, row: &PhaseRow);
    fn run_finished(&mut self, report: &RunReport);
}

/// The phases of the pipeline, in order.
pub struct Runner {
    phases: Vec<Box<dyn Phase>>,
}

impl Runner {
    pub fn new(phases: Vec<Box<dyn Phase>>) -> Self {
        debug_assert!(phases.windows(2).all(|w| w[0].id() < w[1].id()));
        Runner { phases }
    }

    /// Run (or, with `cx.dry_run`, plan) the selected phases.
    pub async fn run(
        &self,
        command: &'static str,
        cx: &mut Context,
        observer: &mut dyn Observer,
    ) -> RunReport {
        let started_at = Utc::now();
        let clock = Instant::now();
        let selected: Vec<PhaseId> = self
            .phases
            .iter()
            .map(|p| p.id())
            .filter(|id| cx.selection.is_selected(*id))
            .collect();
        observer.run_started(cx, &selected);

        let mut rows = Vec::with_capacity(self.phases.len());
        let mut error: Option<ErrorReport> = None;

        // A real run refuses when it would reach a phase that is not built,
        // rather than change things and fail half-way. Validate changes
        // nothing, so it runs first and its problems are reported too.
        let unbuilt: Vec<PhaseId> = self
            .phases
            .iter()
            .filter(|p| selected.contains(&p.id()) && !p.is_built())
            .map(|p| p.id())
            .collect();

        for phase in &self.phases {
            let id = phase.id();
            let skip = cx
                .selection
                .phases
                .iter()
                .find(|(p, _)| *p == id)
                .and_then(|(_, reason)| *reason);
            let row = if let Some(reason) = skip {
                PhaseRow {
                    id,
                    status: PhaseStatus::Skipped,
                    skip_reason: Some(reason),
                    duration_ms: None,
                    summary: String::new(),
                    details: Vec::new(),
                    error: None,
                }
            } else if !cx.dry_run
                && (error.is_some() || (id != PhaseId::Validate && !unbuilt.is_empty()))
            {
                if error.is_none() {
                    error = Some(not_built_error(&unbuilt, false));
                }
                let status = if unbuilt.contains(&id) {
                    PhaseStatus::NotImplemented
                } else {
                    PhaseStatus::NotRun
                };
                PhaseRow {
                    id,
                    status,
                    skip_reason: None,
                    duration_ms: None,
                    summary: String::new(),
                    details: Vec::new(),
                    error: None,
                }
            } else {
                observer.phase_started(id);
                let t = Instant::now();
                let result = if cx.dry_run {
                    phase.plan(cx).await.map(|p| (p.summary, p.steps))
                } else {
                    phase.run(cx).await.map(|r| (r.summary, r.details))
                };
                let duration_ms = Some(t.elapsed().as_millis() as u64);
                match result {
                    Ok((summary, details)) => PhaseRow {
                        id,
                        status: if cx.dry_run {
                            PhaseStatus::Planned
                        } else {
                            PhaseStatus::Succeeded
                        },
                        skip_reason: None,
                        duration_ms,
                        summary,
                        details,
                        error: None,
                    },
                    Err(err) => {
                        let report = ErrorReport::from_error(&err, Kind::PhaseFailed);
                        let (status, summary) = if kind_of(&err) == Some(Kind::NotImplemented) {
                            (
                                PhaseStatus::NotImplemented,
                                format!("not implemented yet ({} to skip)", id.skip_flag()),
                            )
                        } else {
                            (PhaseStatus::Failed, first_line(&report.message))
                        };
                        if error.is_none() {
                            error = Some(ErrorReport {
                                message: format!("{id}: {}", report.message),
                                ..report.clone()
                            });
                        }
                        PhaseRow {
                            id,
                            status,
                            skip_reason: None,
                            duration_ms,
                            summary,
                            details: Vec::new(),
                            error: Some(report),
                        }
                    }
                }
            };
            if row.status != PhaseStatus::Skipped && row.status != PhaseStatus::NotRun {
                observer.phase_finished(&row);
            }
            rows.push(row);
        }

        // A plan that reaches unbuilt phases says so once, naming them all.
        if cx.dry_run
            && !unbuilt.is_empty()
            && error
                .as_ref()
                .is_some_and(|e| e.kind == Kind::NotImplemented)
        {
            error = Some(not_built_error(&unbuilt, true));
        }

        let outcome = match (cx.dry_run, error.is_some()) {
            (false, false) => Outcome::Succeeded,
            (false, true) => Outcome::Failed,
            (true, false) => Outcome::Planned,
            (true, true) => Outcome::PlanFailed,
        };
        let report = RunReport {
            schema: SCHEMA,
            command,
            environment: cx.environment().to_string(),
            deployment_id: cx.deployment_id.as_ref().map(|d| d.to_string()),
            dry_run: cx.dry_run,
            started_at,
            finished_at: Utc::now(),
            duration_ms: clock.elapsed().as_millis() as u64,
            outcome,
            exit_code: error
                .as_ref()
                .map_or(exit_code::SUCCESS, |e| e.kind.exit_code()),
            phases: rows,
            warnings: cx.config.warnings.clone(),
            error,
        };
        observer.run_finished(&report);
        report
    }
}

fn not_built_error(unbuilt: &[PhaseId], dry_run: bool) -> ErrorReport {
    let names: Vec<&str> = unbuilt.iter().map(|p| p.as_str()).collect();
    let flags: Vec<&str> = unbuilt.iter().map(|p| p.skip_flag()).collect();
    ErrorReport {
        kind: Kind::NotImplemented,
        message: format!(
            "{}: {} not implemented yet in this version of maily-deploy; nothing was changed. Skip {} with {}",
            if dry_run {
                "a real run would refuse to start"
            } else {
                "refusing to start"
            },
            if names.len() == 1 {
                format!("phase {} is", names[0])
            } else {
                format!("phases {} are", names.join(", "))
            },
            if names.len() == 1 { "it" } else { "them" },
            flags.join(" ")
        ),
        problems: Vec::new(),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}
