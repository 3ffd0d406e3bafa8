//! Presenting a run: human lines and a table, one JSON report, and GitHub
//! Actions' groups, annotations and step summary.
//!
//! Everything printed passes through [`crate::redact::scrub`]; the observers
//! never see a secret they could print, and would not print it if they did.
//! It passes through [`crate::error::clip_echoed`] too: a value of the
//! command line over 80 bytes is never repeated whole, whoever quotes it.

pub mod github;
pub mod human;
pub mod json;
pub mod table;

use std::io::{IsTerminal, Write};

use crate::cli::OutputFormat;
use crate::error::{Problem, failure_of};
use crate::pipeline::Observer;
use crate::redact::scrub;

/// How the user wants to be told.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    pub format: OutputFormat,
    pub quiet: bool,
    pub verbose: u8,
    /// Spinners only where a person watches: stderr is a terminal and this
    /// is not CI.
    pub interactive: bool,
    /// `$GITHUB_STEP_SUMMARY` when running under GitHub Actions.
    pub github: Option<github::GithubEnv>,
}

impl OutputOptions {
    pub fn detect(format: OutputFormat, quiet: bool, verbose: u8) -> Self {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        OutputOptions {
            format,
            quiet,
            verbose,
            interactive: std::io::stderr().is_terminal() && !ci,
            github: github::GithubEnv::detect(),
        }
    }
}

/// The observer for these options.
pub fn observer(opts: &OutputOptions) -> Box<dyn Observer> {
    let inner: Box<dyn Observer> = match opts.format {
        OutputFormat::Human => Box::new(human::Human::new(opts)),
        OutputFormat::Json => Box::new(json::Json::new(opts)),
    };
    match &opts.github {
        Some(env) => Box::new(github::Github::new(inner, env.clone(), opts.format)),
        None => inner,
    }
}

/// Print to stdout, redacted, with an oversized input of the command line
/// clipped (`error::clip_echoed`). Output goes through `anstream`, which
/// drops colour codes when stdout is not a terminal or `NO_COLOR` is set.
pub fn stdout_line(text: &str) {
    let mut out = anstream::stdout().lock();
    let _ = writeln!(out, "{}", crate::error::clip_echoed(&scrub(text)));
}

/// Print to stderr, redacted, oversized inputs clipped.
pub fn stderr_line(text: &str) {
    let mut out = anstream::stderr().lock();
    let _ = writeln!(out, "{}", crate::error::clip_echoed(&scrub(text)));
}

/// Problems grouped by phase (pipeline order, run-level ones first), each
/// with its fix, as lines.
pub fn problem_lines(problems: &[Problem]) -> Vec<String> {
    let mut groups: Vec<(Option<&str>, Vec<&Problem>)> = Vec::new();
    let order = |phase: Option<&str>| {
        phase
            .and_then(|p| {
                crate::pipeline::PhaseId::ALL
                    .iter()
                    .position(|id| id.as_str() == p)
            })
            .map_or(0, |i| i + 1)
    };
    for p in problems {
        match groups.iter_mut().find(|(ph, _)| *ph == p.phase.as_deref()) {
            Some((_, list)) => list.push(p),
            None => groups.push((p.phase.as_deref(), vec![p])),
        }
    }
    groups.sort_by_key(|(phase, _)| order(*phase));
    let mut lines = Vec::new();
    for (phase, list) in groups {
        lines.push(format!("  {}", phase.unwrap_or("whole run")));
        for p in list {
            lines.push(format!("    {} {}", p.subject, p.problem));
            if !p.fix.is_empty() {
                lines.push(format!("      fix: {}", p.fix));
            }
        }
    }
    lines
}

/// Print an error that stopped a command before it had a report.
pub fn print_error(err: &anyhow::Error) {
    let style = anstyle::Style::new()
        .bold()
        .fg_color(Some(anstyle::AnsiColor::Red.into()));
    stderr_line(&format!(
        "{style}error:{style:#} {}",
        crate::error::chain_text(err)
    ));
    if let Some(f) = failure_of(err) {
        for line in problem_lines(&f.problems) {
            stderr_line(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_grouped_in_pipeline_order() {
        let p = |phase: Option<&str>, subject: &str| Problem {
            phase: phase.map(String::from),
            subject: subject.into(),
            problem: "is wrong".into(),
            fix: "fix it".into(),
        };
        let lines = problem_lines(&[
            p(Some("verify"), "REDIS_URL"),
            p(Some("migrate"), "DATABASE_URL"),
            p(None, "VAULT_ADDR"),
            p(Some("verify"), "RABBITMQ_URL"),
        ]);
        let heads: Vec<&str> = lines
            .iter()
            .filter(|l| !l.starts_with("    "))
            .map(|l| l.trim())
            .collect();
        assert_eq!(heads, vec!["whole run", "migrate", "verify"]);
        assert_eq!(lines.len(), 3 + 4 * 2);
    }
}
