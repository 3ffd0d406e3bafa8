//! Output for people: a line per phase, a table at the end.
//!
//! On a terminal a spinner shows the running phase and its elapsed time; in
//! CI or a pipe there are no spinners and no control codes, only plain lines.

use std::time::Duration;

use anstyle::{AnsiColor, Style};
use indicatif::{ProgressBar, ProgressStyle};

use super::{OutputOptions, problem_lines, stderr_line, stdout_line, table};
use crate::pipeline::{
    Context, Observer, Outcome, PhaseId, PhaseRow, PhaseStatus, RunReport, SkipReason,
};

pub struct Human {
    quiet: bool,
    verbose: u8,
    interactive: bool,
    dry_run: bool,
    spinner: Option<ProgressBar>,
}

impl Human {
    pub fn new(opts: &OutputOptions) -> Self {
        Human {
            quiet: opts.quiet,
            verbose: opts.verbose,
            interactive: opts.interactive,
            dry_run: false,
            spinner: None,
        }
    }

    fn say(&self, text: &str) {
        if !self.quiet {
            stdout_line(text);
        }
    }
}

fn color(c: AnsiColor) -> Style {
    Style::new().fg_color(Some(c.into()))
}

/// The mark and colour of a status.
pub fn mark(status: PhaseStatus) -> (&'static str, Style) {
    match status {
        PhaseStatus::Succeeded => ("✓", color(AnsiColor::Green)),
        PhaseStatus::Planned => ("○", color(AnsiColor::Cyan)),
        PhaseStatus::Failed => ("✗", color(AnsiColor::Red).bold()),
        PhaseStatus::Skipped => ("-", Style::new().dimmed()),
        PhaseStatus::NotRun => ("·", Style::new().dimmed()),
    }
}

pub fn status_word(status: PhaseStatus) -> &'static str {
    match status {
        PhaseStatus::Succeeded => "succeeded",
        PhaseStatus::Failed => "failed",
        PhaseStatus::Skipped => "skipped",
        PhaseStatus::Planned => "planned",
        PhaseStatus::NotRun => "not run",
    }
}

/// A summary cut to fit a table cell; the full text is printed elsewhere.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

/// The run's table: a row for each phase the run took. The phases its
/// flags left out are not rows: [`skipped_line`] names them under it.
pub fn run_table(rows: &[PhaseRow], layout: table::Layout) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .filter(|r| r.skip_reason.is_none())
        .map(|row| {
            vec![
                row.id.as_str().to_string(),
                status_word(row.status).to_string(),
                seconds(row.duration_ms),
                clip(&row.summary, 90),
            ]
        })
        .collect();
    table::render(layout, &["phase", "status", "time", "summary"], &cells)
}

/// The phases the run's flags left out, in one line, pipeline order kept
/// within each reason: `skipped: provision, migrate (--skip-*)`, or
/// `skipped: provision, migrate (before --from); monitor (--skip-*)`.
pub fn skipped_line(rows: &[PhaseRow]) -> Option<String> {
    let mut groups: Vec<(SkipReason, Vec<&str>)> = Vec::new();
    for row in rows {
        let Some(reason) = row.skip_reason else {
            continue;
        };
        match groups.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, ids)) => ids.push(row.id.as_str()),
            None => groups.push((reason, vec![row.id.as_str()])),
        }
    }
    if groups.is_empty() {
        return None;
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(reason, ids)| format!("{} ({})", ids.join(", "), reason.words()))
        .collect();
    Some(format!("skipped: {}", parts.join("; ")))
}

pub fn seconds(ms: Option<u64>) -> String {
    ms.map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
        .unwrap_or_default()
}

/// The run's first two lines: what runs (the deployment id in `id_style`)
/// and its phases.
pub fn header(cx: &Context, phases: &[PhaseId], id_style: Style) -> [String; 2] {
    let what = match &cx.deployment_id {
        Some(id) => format!("deployment {id_style}{id}{id_style:#}"),
        None => "configuration check".to_string(),
    };
    let dry = if cx.dry_run {
        " (dry run: nothing will be changed)"
    } else {
        ""
    };
    let names: Vec<&str> = phases.iter().map(|p| p.as_str()).collect();
    [
        format!("maily-deploy {}: {what}{dry}", cx.environment()),
        format!("phases: {}", names.join(" → ")),
    ]
}

impl Observer for Human {
    fn run_started(&mut self, cx: &Context, phases: &[PhaseId]) {
        self.dry_run = cx.dry_run;
        for line in header(cx, phases, Style::new().bold()) {
            self.say(&line);
        }
        for w in &cx.config.warnings {
            let y = color(AnsiColor::Yellow);
            stderr_line(&format!("{y}warning:{y:#} {w}"));
        }
    }

    fn phase_started(&mut self, id: PhaseId) {
        if self.quiet {
            return;
        }
        if self.interactive {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(id.as_str());
            bar.enable_steady_tick(Duration::from_millis(100));
            self.spinner = Some(bar);
        } else if self.verbose > 0 {
            stdout_line(&format!("… {id}"));
        }
    }

    /// On a terminal, events print above the spinner and the spinner's
    /// line shows how things stand (the step, the clock, the last
    /// metrics); elsewhere only events, each a plain line.
    fn phase_progress(&mut self, id: PhaseId, update: &crate::pipeline::progress::Update) {
        use crate::pipeline::progress::Update;
        if self.quiet {
            return;
        }
        // The spinner writes to the terminal itself, past `stdout_line`'s
        // scrub: its lines are scrubbed here.
        let scrub = crate::redact::scrub;
        match (update, &self.spinner) {
            (Update::Event(line), Some(bar)) => {
                bar.println(format!("  {id}: {}", scrub(line)));
                bar.set_message(format!("{id}: {}", scrub(line)));
            }
            (Update::Status(line), Some(bar)) => bar.set_message(format!("{id}: {}", scrub(line))),
            (Update::Event(line), None) => stdout_line(&format!("  {id}: {line}")),
            (Update::Status(_), None) => {}
        }
    }

    fn phase_finished(&mut self, row: &PhaseRow) {
        if let Some(bar) = self.spinner.take() {
            bar.finish_and_clear();
        }
        let (m, style) = mark(row.status);
        self.say(&format!(
            "{style}{m}{style:#} {:<16} {:>6}  {}",
            row.id.as_str(),
            seconds(row.duration_ms),
            row.summary
        ));
        if self.dry_run || self.verbose > 0 {
            for d in &row.details {
                self.say(&format!("      {d}"));
            }
        }
    }

    fn run_finished(&mut self, report: &RunReport) {
        if let Some(bar) = self.spinner.take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            stdout_line("");
            stdout_line(&run_table(&report.phases, table::detect()));
            if let Some(line) = skipped_line(&report.phases) {
                stdout_line(&line);
            }
        }
        if let Some(err) = &report.error {
            let red = color(AnsiColor::Red).bold();
            stderr_line(&format!("{red}error:{red:#} {}", err.message));
            for line in problem_lines(&err.problems) {
                stderr_line(&line);
            }
        }
        let (word, style) = match report.outcome {
            Outcome::Succeeded => ("succeeded", color(AnsiColor::Green).bold()),
            Outcome::Planned => ("planned", color(AnsiColor::Cyan).bold()),
            Outcome::Failed => ("failed", color(AnsiColor::Red).bold()),
            Outcome::PlanFailed => ("plan incomplete", color(AnsiColor::Red).bold()),
        };
        let id = report
            .deployment_id
            .as_ref()
            .map_or("check", |d| d.as_str());
        self.say(&format!(
            "{style}{word}{style:#}: {} {id} in {} (exit {})",
            report.environment,
            seconds(Some(report.duration_ms)),
            report.exit_code
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: PhaseId, status: PhaseStatus, skip: Option<SkipReason>) -> PhaseRow {
        PhaseRow {
            id,
            status,
            skip_reason: skip,
            duration_ms: Some(1200),
            summary: match status {
                PhaseStatus::Succeeded => format!(
                    "{id}: 7 objects applied to the green slot, every rollout ready within its deadline, users untouched"
                ),
                _ => String::new(),
            },
            details: Vec::new(),
            error: None,
        }
    }

    /// A backend-only run resumed at deploy-backend: validate, then the
    /// rest before --from, or skipped by flag.
    fn backend_only() -> Vec<PhaseRow> {
        use PhaseId::*;
        use PhaseStatus::*;
        vec![
            row(Validate, Succeeded, None),
            row(Provision, Skipped, Some(SkipReason::BeforeFrom)),
            row(Migrate, Skipped, Some(SkipReason::BeforeFrom)),
            row(DeployBackend, Succeeded, None),
            row(DeployFrontend, Skipped, Some(SkipReason::Flag)),
            row(ConfigureAi, Skipped, Some(SkipReason::Flag)),
            row(Monitor, Skipped, Some(SkipReason::Flag)),
            row(Verify, Skipped, Some(SkipReason::Flag)),
            row(ShiftTraffic, Succeeded, None),
        ]
    }

    #[test]
    fn phases_left_out_are_one_line_not_rows() {
        assert_eq!(
            skipped_line(&backend_only()).as_deref(),
            Some(
                "skipped: provision, migrate (before --from); deploy-frontend, configure-ai, monitor, verify (--skip-*)"
            )
        );
        let text = run_table(&backend_only(), table::Layout::Plain);
        let phases: Vec<&str> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(phases, ["validate", "deploy-backend", "shift-traffic"]);
        let all_run: Vec<PhaseRow> = backend_only()
            .into_iter()
            .filter(|r| r.skip_reason.is_none())
            .collect();
        assert_eq!(skipped_line(&all_run), None);
    }

    #[test]
    fn the_run_table_fits_80_columns() {
        let text = run_table(&backend_only(), table::Layout::Fit(80));
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line:?}\n{text}");
        }
        assert!(text.contains("deploy-backend"), "{text}");
    }
}
