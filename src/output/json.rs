//! `--output json`: one report on stdout when the run ends, nothing else
//! there; the run's event lines on stderr meanwhile.
//!
//! A CI job parses stdout, and its no-output timeout watches both: a
//! rollout pausing between traffic steps for fifteen minutes would look
//! hung if stderr stayed silent. So what people would see (a phase starts
//! and ends, a traffic step, a measurement, a warning) goes to stderr as
//! plain lines, with no table and no spinner; `-q` silences it.

use crate::pipeline::{Context, Observer, PhaseId, PhaseRow, RunReport};

use super::{human, stderr_line};

pub struct Json {
    quiet: bool,
}

impl Json {
    pub fn new(opts: &super::OutputOptions) -> Self {
        Json { quiet: opts.quiet }
    }

    fn log(&self, text: &str) {
        if !self.quiet {
            stderr_line(text);
        }
    }
}

impl Observer for Json {
    fn run_started(&mut self, cx: &Context, phases: &[PhaseId]) {
        for line in human::header(cx, phases, anstyle::Style::new()) {
            self.log(&line);
        }
        for w in &cx.config.warnings {
            self.log(&format!("warning: {w}"));
        }
    }

    fn phase_started(&mut self, id: PhaseId) {
        self.log(&format!("… {id}"));
    }

    fn phase_progress(&mut self, id: PhaseId, update: &crate::pipeline::progress::Update) {
        if let crate::pipeline::progress::Update::Event(line) = update {
            self.log(&format!("  {id}: {line}"));
        }
    }

    fn phase_finished(&mut self, row: &PhaseRow) {
        let (m, _) = human::mark(row.status);
        self.log(&format!(
            "{m} {:<16} {:>6}  {}",
            row.id.as_str(),
            human::seconds(row.duration_ms),
            row.summary
        ));
    }

    fn run_finished(&mut self, report: &RunReport) {
        print_report(report);
        // Errors show even with -q, as they do without --output json.
        if let Some(err) = &report.error {
            stderr_line(&format!("error: {}", err.message));
            for line in super::problem_lines(&err.problems) {
                stderr_line(&line);
            }
        }
    }
}

/// Print a report as pretty JSON on stdout, redacted.
pub fn print_report(report: &RunReport) {
    match serde_json::to_string_pretty(report) {
        Ok(text) => super::stdout_line(&text),
        Err(e) => super::stderr_line(&format!("error: cannot encode the report as JSON: {e}")),
    }
}
