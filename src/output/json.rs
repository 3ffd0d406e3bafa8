//! `--output json`: one report on stdout when the run ends, nothing else there.

use crate::pipeline::{Context, Observer, PhaseId, PhaseRow, RunReport};

pub struct Json;

impl Observer for Json {
    fn run_started(&mut self, _cx: &Context, _phases: &[PhaseId]) {}
    fn phase_started(&mut self, _id: PhaseId) {}
    fn phase_finished(&mut self, _row: &PhaseRow) {}
    fn run_finished(&mut self, report: &RunReport) {
        print_report(report);
    }
}

/// Print a report as pretty JSON on stdout, redacted.
pub fn print_report(report: &RunReport) {
    match serde_json::to_string_pretty(report) {
        Ok(text) => super::stdout_line(&text),
        Err(e) => super::stderr_line(&format!("error: cannot encode the report as JSON: {e}")),
    }
}
