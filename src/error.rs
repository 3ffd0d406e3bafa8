//! Typed failure kinds: the part of an error that decides the exit code.
//!
//! Errors travel as `anyhow::Error` with context added on the way up; where
//! the exit code depends on what went wrong, a [`Failure`] sits somewhere in
//! the chain and [`exit_code_of`] finds it.

use serde::{Deserialize, Serialize};

use crate::exit_code;

/// What kind of failure, as far as a caller deciding what to do next cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The command line is wrong.
    Usage,
    /// The configuration (variables, env file, profile) is wrong.
    Config,
    /// A phase failed while doing its work.
    PhaseFailed,
    /// Undoing a failed run failed.
    RollbackFailed,
    /// Another run holds the lock.
    LockHeld,
    /// A phase failed and `--no-rollback` kept its changes.
    PhaseFailedKept,
    /// SIGINT or SIGTERM.
    Interrupted,
    /// A system the run needs (the Kubernetes API server) could not be
    /// reached, or refused the credentials, before anything changed.
    Unreachable,
    /// A check before the first change refused the run (the server rejects
    /// an object, the release does not fit the quota, a CRD is missing, a
    /// dry run cannot plan); nothing was changed.
    Refused,
}

impl Kind {
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Usage => exit_code::USAGE,
            Kind::Config => exit_code::CONFIG,
            Kind::PhaseFailed => exit_code::PHASE_FAILED_ROLLED_BACK,
            Kind::RollbackFailed => exit_code::ROLLBACK_FAILED,
            Kind::LockHeld => exit_code::LOCK_HELD,
            Kind::PhaseFailedKept => exit_code::PHASE_FAILED_NOT_ROLLED_BACK,
            Kind::Interrupted => exit_code::INTERRUPTED,
            Kind::Unreachable => exit_code::UNREACHABLE,
            Kind::Refused => exit_code::REFUSED,
        }
    }
}

/// One thing wrong with the input, with how to fix it. Validation collects
/// all of them before failing, so a user fixes everything in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The phase that needs the thing, or `None` when the whole run does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The variable, file or field the problem is about.
    pub subject: String,
    /// What is wrong. Never contains a secret's value.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

/// An error with a kind, and the problems behind it when there are several.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
    pub problems: Vec<Problem>,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            problems: Vec::new(),
        }
    }

    pub fn with_problems(kind: Kind, message: impl Into<String>, problems: Vec<Problem>) -> Self {
        Failure {
            kind,
            message: message.into(),
            problems,
        }
    }
}

/// Echoed input longer than this many bytes is clipped by [`clipped`].
pub const ECHO_MAX_BYTES: usize = 80;

/// A value the user gave, as a message may echo it: whole when short, else
/// its first characters and its size (`abc… (1048576 bytes)`). A message
/// that repeats a megabyte of input buries what it says, and can flood a
/// CI log or a Slack message.
///
/// The value is scrubbed before it is clipped: the start of a long
/// credential URL (`https://12345:glc_eyJrIjoi…`) no longer shows the `@`
/// that marks its password once clipped.
pub fn clipped(value: &str) -> std::borrow::Cow<'_, str> {
    let bytes = value.len();
    let value = crate::redact::scrub(value);
    if value.len() <= ECHO_MAX_BYTES {
        return value;
    }
    let prefix: String = value.chars().take(32).collect();
    std::borrow::Cow::Owned(format!("{prefix}… ({bytes} bytes)"))
}

/// The command line's own values (and the variables that stand for its
/// flags) longer than [`ECHO_MAX_BYTES`], longest first: what
/// [`clip_echoed`] shortens wherever a message repeats one.
static LONG_INPUTS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// The pieces of `words` (the command line, then the values of the
/// variables standing for flags) a message may echo and that are too long
/// to echo whole: each word, a `--flag=value`'s value, a short flag's
/// attached value (`-ojson`), each item of a comma-separated list and
/// each path of a `:`-separated list (as `$KUBECONFIG` holds), longest
/// first.
pub fn long_inputs(words: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in words {
        let mut pieces = vec![word.as_str()];
        if word.starts_with('-')
            && let Some((_, value)) = word.split_once('=')
        {
            pieces.push(value);
        }
        // `-ojson`: a short flag with its value attached.
        if !word.starts_with("--")
            && word.starts_with('-')
            && let Some(value) = word.get(2..)
        {
            pieces.push(value);
        }
        let whole = pieces.clone();
        for piece in whole {
            pieces.extend(piece.split(','));
            pieces.extend(piece.split(':'));
        }
        out.extend(
            pieces
                .into_iter()
                .filter(|p| p.len() > ECHO_MAX_BYTES)
                .map(str::to_string),
        );
    }
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

/// `text` with every one of `inputs` in it shown as [`clipped`] shows it:
/// a message that repeats a 100 KB path three times prints three short
/// lines, however the message was built. `inputs` longest first (as
/// [`long_inputs`] gives them), so a long input inside a longer one is
/// clipped as part of it.
pub fn clip_echoes<'a>(text: &'a str, inputs: &[String]) -> std::borrow::Cow<'a, str> {
    if !inputs.iter().any(|i| text.contains(i.as_str())) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for input in inputs {
        if out.contains(input.as_str()) {
            out = out.replace(input.as_str(), &clipped(input));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Remember the command line's oversized values (see [`long_inputs`]) for
/// [`clip_echoed`], once, before anything is printed.
pub fn register_inputs(words: &[String]) {
    let mut inputs = LONG_INPUTS.write().unwrap_or_else(|e| e.into_inner());
    *inputs = long_inputs(words);
}

/// `text` with every registered oversized input clipped: what everything
/// printed goes through (`output::stdout_line`, `output::stderr_line`),
/// so no message echoes one whole, whichever module wrote it.
pub fn clip_echoed(text: &str) -> std::borrow::Cow<'_, str> {
    let inputs = LONG_INPUTS.read().unwrap_or_else(|e| e.into_inner());
    match clip_echoes(text, &inputs) {
        std::borrow::Cow::Borrowed(_) => std::borrow::Cow::Borrowed(text),
        std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(s),
    }
}

/// A YAML parser's error in the words its user-facing formatter gives
/// ("duplicate mapping key `namespace` is not allowed here", "YAML
/// document too large or too complex"), not the developer's ("set
/// DuplicateKeyPolicy in Options", "budget breached: Nodes { .. }").
pub fn yaml_error(e: &serde_saphyr::Error) -> String {
    e.render_with_formatter(&serde_saphyr::UserMessageFormatter)
}

/// A parser's message with any line it quotes clipped: a megabyte-long
/// line of input is shown by its start and size.
/// Scrubbed first, as [`clipped`] is.
pub fn clipped_lines(message: &str) -> String {
    crate::redact::scrub(message)
        .lines()
        .map(|l| {
            if l.len() > 200 {
                let head: String = l.chars().take(120).collect();
                format!("{head}… ({} bytes)", l.len())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Shorthand for the common case: an `anyhow::Error` of a kind, whose
/// message is `message`'s text (a `String`, or a typed error's Display).
pub fn fail(kind: Kind, message: impl std::fmt::Display) -> anyhow::Error {
    Failure::new(kind, message.to_string()).into()
}

/// A Kubernetes client error as people read it: the server's message,
/// code and reason for an answer (kube's own text repeats the whole
/// status in Rust's debug form), the text otherwise.
pub fn kube_text(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => {
            if s.reason.is_empty() {
                format!("{} ({})", s.message, s.code)
            } else {
                format!("{} ({} {})", s.message, s.code, s.reason)
            }
        }
        other => other.to_string(),
    }
}

/// An error's chain as one line (`a: b: c`, as `{:#}` prints it), with a
/// Kubernetes answer in [`kube_text`]'s words and its repeated sources
/// left out.
pub fn chain_text(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in err.chain() {
        if let Some(k) = e.downcast_ref::<kube::Error>() {
            parts.push(kube_text(k));
            break;
        }
        let text = e.to_string();
        // A cause whose text its wrapper already quoted says nothing new.
        if parts.last().is_some_and(|p| p.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// `err` as a failure of `kind`, its words and problems kept: a refusal
/// or a configuration's problem met after a change can no longer say, by
/// its exit code, that nothing changed.
pub fn as_kind(err: anyhow::Error, kind: Kind) -> anyhow::Error {
    let problems = failure_of(&err)
        .map(|f| f.problems.clone())
        .unwrap_or_default();
    Failure::with_problems(kind, chain_text(&err), problems).into()
}

/// The [`Failure`] in an error's chain, if any.
pub fn failure_of(err: &anyhow::Error) -> Option<&Failure> {
    err.chain().find_map(|e| e.downcast_ref::<Failure>())
}

/// The kind of an error: the first [`Failure`] in its chain decides.
pub fn kind_of(err: &anyhow::Error) -> Option<Kind> {
    failure_of(err).map(|f| f.kind)
}

/// The exit code for an error; untyped errors are [`exit_code::FAILURE`].
pub fn exit_code_of(err: &anyhow::Error) -> i32 {
    kind_of(err).map_or(exit_code::FAILURE, Kind::exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_kind_survives_added_context() {
        let err = Err::<(), _>(fail(Kind::LockHeld, "held by ci@runner"))
            .context("taking the deploy lock")
            .unwrap_err();
        assert_eq!(exit_code_of(&err), exit_code::LOCK_HELD);
    }

    #[test]
    fn long_input_is_echoed_as_a_prefix_and_its_size() {
        assert_eq!(
            clipped("production-20250101-120000"),
            "production-20250101-120000"
        );
        let long = "x".repeat(1 << 20);
        let shown = clipped(&long);
        assert!(shown.len() < 64, "{shown}");
        assert!(shown.ends_with("… (1048576 bytes)"), "{shown}");
        // Never cut inside a character.
        assert!(clipped(&"é".repeat(100)).starts_with(&"é".repeat(32)));
    }

    #[test]
    fn every_oversized_piece_of_the_command_line_is_clipped_wherever_echoed() {
        let path = format!("/{}", "a".repeat(100_000));
        let flag = format!("--{}", "b".repeat(200));
        let steps = format!("{},100", "9".repeat(100));
        let words: Vec<String> = vec![
            "maily-deploy".into(),
            "staging".into(),
            "--kubeconfig".into(),
            path.clone(),
            flag.clone(),
            format!("--traffic-steps={steps}"),
            format!("-o{}", "c".repeat(90)),
        ];
        let inputs = long_inputs(&words);
        let message = format!(
            "the kubeconfig {path} (--kubeconfig) does not exist; {path}/x; unexpected argument '{flag}'; invalid value '{}'",
            "9".repeat(100)
        );
        let message = format!("{message}; invalid value '{}'", "c".repeat(90));
        let shown = clip_echoes(&message, &inputs);
        assert!(shown.len() < 400, "{shown}");
        assert!(shown.contains("(100001 bytes) (--kubeconfig)"), "{shown}");
        assert!(shown.contains("(100001 bytes)/x"), "{shown}");
        assert!(shown.contains("(202 bytes)'"), "{shown}");
        assert!(shown.contains("(100 bytes)'"), "{shown}");
        assert!(shown.contains("(90 bytes)'"), "{shown}");
        // Short words, and text that echoes nothing, are left alone.
        assert_eq!(
            clip_echoes("staging --kubeconfig", &inputs),
            "staging --kubeconfig"
        );
    }

    #[test]
    fn an_untyped_error_is_a_plain_failure() {
        let err = anyhow::anyhow!("disk on fire");
        assert_eq!(exit_code_of(&err), exit_code::FAILURE);
    }

    #[test]
    fn each_kind_has_its_own_code() {
        let kinds = [
            Kind::Usage,
            Kind::Config,
            Kind::PhaseFailed,
            Kind::RollbackFailed,
            Kind::LockHeld,
            Kind::PhaseFailedKept,
            Kind::Interrupted,
        ];
        let mut codes: Vec<i32> = kinds.iter().map(|k| k.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&exit_code::SUCCESS));
    }
}
