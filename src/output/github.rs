//! GitHub Actions: each phase's log in a `::group::`, failures as `::error::`
//! annotations, and a Markdown summary appended to `$GITHUB_STEP_SUMMARY`.
//!
//! Workflow commands go to stdout (GitHub's "Workflow commands"
//! reference), and so do the logs while they do: the runner reads stdout
//! and stderr apart and interleaves them by the batch, so a group holds only
//! lines of its own stream. With `--output json`, where stdout is the report
//! alone, only the step summary is written.

use std::io::Write;
use std::path::PathBuf;

use super::human::{seconds, status_word};
use super::stdout_line;
use crate::cli::OutputFormat;
use crate::pipeline::{Context, Observer, PhaseId, PhaseRow, PhaseStatus, RunReport};
use crate::redact::scrub;

#[derive(Debug, Clone)]
pub struct GithubEnv {
    pub step_summary: Option<PathBuf>,
}

impl GithubEnv {
    /// Present when `GITHUB_ACTIONS=true`, as the runner sets it.
    pub fn detect() -> Option<Self> {
        (std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true")).then(|| GithubEnv {
            step_summary: std::env::var_os("GITHUB_STEP_SUMMARY").map(PathBuf::from),
        })
    }
}

pub struct Github {
    inner: Box<dyn Observer>,
    env: GithubEnv,
    commands: bool,
}

impl Github {
    pub fn new(inner: Box<dyn Observer>, env: GithubEnv, format: OutputFormat) -> Self {
        let commands = format == OutputFormat::Human;
        if commands {
            crate::logging::send_logs_to_stdout();
        }
        Github {
            inner,
            env,
            commands,
        }
    }
}

/// Escape a workflow command's message, as the toolkit does.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escape a workflow command's property value.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// An `::error` annotation. Its message is scrubbed before it is escaped:
/// the runner decodes the escapes, so a secret escaped first (a `%` in a
/// key) would no longer match what the redactor knows, and would be shown.
fn error_command(title: &str, message: &str) -> String {
    format!(
        "::error title={}::{}",
        escape_property(title),
        escape_data(&scrub(message))
    )
}

/// The run as a Markdown summary.
pub fn summary_markdown(report: &RunReport) -> String {
    let mut md = String::new();
    let title = report
        .deployment_id
        .as_ref()
        .map(|d| d.to_string())
        .unwrap_or_else(|| format!("{} configuration check", report.environment));
    md.push_str(&format!(
        "### maily-deploy {}: {}{}\n\n",
        title,
        report.outcome.words(),
        if report.dry_run { " (dry run)" } else { "" }
    ));
    md.push_str("| phase | status | time | summary |\n|---|---|---|---|\n");
    for row in &report.phases {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            row.id,
            status_word(row.status),
            seconds(row.duration_ms),
            scrub(&row.summary).replace('|', "\\|")
        ));
    }
    if let Some(err) = &report.error {
        md.push_str(&format!("\n**Error:** {}\n", err.message));
        for p in &err.problems {
            md.push_str(&format!(
                "- `{}` {} — fix: {}\n",
                p.subject, p.problem, p.fix
            ));
        }
    }
    md.push_str(&format!("\nExit code {}.\n", report.exit_code));
    md
}

impl Observer for Github {
    fn run_started(&mut self, cx: &Context, phases: &[PhaseId]) {
        self.inner.run_started(cx, phases);
    }

    fn phase_started(&mut self, id: PhaseId) {
        if self.commands {
            stdout_line(&format!("::group::{id}"));
        }
        self.inner.phase_started(id);
    }

    fn phase_progress(&mut self, id: PhaseId, update: &crate::pipeline::progress::Update) {
        self.inner.phase_progress(id, update);
    }

    /// The phase's own result line and details close its group, so even
    /// at the default verbosity, where a phase may log nothing, a group
    /// holds what the phase did; the table at the end shows every phase.
    fn phase_finished(&mut self, row: &PhaseRow) {
        self.inner.phase_finished(row);
        if self.commands {
            if row.duration_ms.is_some() {
                stdout_line("::endgroup::");
            }
            if row.status == PhaseStatus::Failed
                && let Some(err) = &row.error
            {
                stdout_line(&error_command(&format!("{} failed", row.id), &err.message));
            }
        }
    }

    fn run_finished(&mut self, report: &RunReport) {
        if self.commands
            && let Some(err) = &report.error
            && !report.phases.iter().any(|r| r.error.is_some())
        {
            stdout_line(&error_command("maily-deploy", &err.message));
        }
        self.inner.run_finished(report);
        if let Some(path) = &self.env.step_summary {
            let md = summary_markdown(report);
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(scrub(&md).as_bytes()));
            if let Err(e) = written {
                super::stderr_line(&format!(
                    "warning: could not append to GITHUB_STEP_SUMMARY {}: {e}",
                    path.display()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_the_toolkit_does() {
        assert_eq!(escape_data("50% done\nnext"), "50%25 done%0Anext");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
    }

    #[test]
    fn a_secret_with_a_percent_or_a_bar_is_hidden_before_it_is_escaped() {
        let key = "ab%2Fcd%2BefGH12|xyz9";
        crate::redact::register("GITHUB_TEST_KEY", key);
        let message = format!("Prometheus https://412345:{key}@prom.example.net answered 502");
        let line = error_command("monitor failed", &message);
        assert!(line.starts_with("::error title=monitor failed::"), "{line}");
        // What the runner shows is the line with its escapes decoded.
        let shown = line.replace("%0A", "\n").replace("%25", "%");
        assert!(!shown.contains(key), "{shown}");
        assert!(!shown.contains("ab/cd+efGH12"), "{shown}");
        assert!(shown.contains("prom.example.net answered 502"), "{shown}");

        let mut report = RunReport::stopped("deploy", "production", &anyhow::anyhow!("stopped"));
        report.phases.push(PhaseRow {
            id: crate::pipeline::PhaseId::Monitor,
            status: PhaseStatus::Failed,
            skip_reason: None,
            duration_ms: Some(1),
            summary: message.clone(),
            details: vec![],
            error: None,
        });
        let md = summary_markdown(&report);
        assert!(!scrub(&md).contains("GH12"), "{md}");
        assert!(md.contains("prom.example.net answered 502"), "{md}");
    }
}
