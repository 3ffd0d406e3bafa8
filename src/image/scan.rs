//! Every pinned image scanned with Trivy before anything changes.
//!
//! Trivy runs as its own process per image, by digest (`registry/repo@
//! sha256:...`), so what is scanned is what the slots will run. This module
//! runs it and reads its JSON report ([`Trivy`], [`Finding`]); [`verdict`]
//! decides what blocks the run and [`cache`] which digests a recent clean
//! scan spares.
//!
//! Several Trivy processes on one machine share its cache directory, and
//! Trivy is not built for that: processes downloading the vulnerability
//! database at the same time can leave one reading an empty database (a
//! scan that finds nothing, aquasecurity/trivy#8454), and the default
//! file-system scan cache is a BoltDB file one process holds at a time
//! (the others fail after 5 s, trivy#10688). So [`Trivy::scan`] downloads
//! the database once, alone (`--download-db-only`), and then runs the scans
//! with `--skip-db-update` and `--cache-backend memory`.

pub mod cache;
pub mod verdict;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::child_output;

/// Trivy, unless `TRIVY_BIN` names another executable.
pub const DEFAULT_BIN: &str = "trivy";

/// How many Trivy processes run at once: each unpacks image layers and is
/// CPU- and disk-bound, so more than a few only queue on a small runner.
pub const CONCURRENCY: usize = 4;

/// The longest one scan (or the database download) may take unless the
/// caller says otherwise; then the process is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The largest report read. A real one is kilobytes to a few megabytes; a
/// larger one is refused rather than held in memory.
pub const MAX_REPORT_BYTES: usize = 64 * 1024 * 1024;

/// How much of Trivy's stderr is kept: its last bytes, where its fatal
/// error is.
const STDERR_KEEP_BYTES: usize = 64 * 1024;

/// How many of stderr's last lines an error message quotes, and how long
/// each may be.
const STDERR_LINES: usize = 8;
const STDERR_LINE_CHARS: usize = 400;

/// Each scanned reference's findings, or why it has none.
pub type Scans = BTreeMap<String, Result<Vec<Finding>, ScanError>>;

/// How bad a finding is, as Trivy rates it. Ordered: `Unknown` is the
/// least, so a threshold of `Unknown` blocks everything.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Unknown,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "UNKNOWN",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that is not a severity (e.g. `IMAGE_SCAN_FAIL_ON=SEVERE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` is not a severity: give one of UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL", crate::error::clipped(.0))]
pub struct NotASeverity(pub String);

impl FromStr for Severity {
    type Err = NotASeverity;

    /// Any case: `critical` is `CRITICAL`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| NotASeverity(s.to_string()))
    }
}

/// One vulnerability Trivy found in an image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Finding {
    /// `CVE-...`, `GHSA-...`, as Trivy names it.
    pub id: String,
    pub package: String,
    pub installed: String,
    /// The first version without it; `None` when there is none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    pub severity: Severity,
}

/// The part of Trivy's JSON report the gate reads (`--format json`,
/// schema 2). Trivy leaves out empty lists (`omitempty`), and older
/// versions wrote `null`: both are "nothing found". Other fields are
/// ignored.
#[derive(Deserialize)]
struct Report {
    #[serde(rename = "Results", default)]
    results: Option<Vec<TrivyResult>>,
}

#[derive(Deserialize)]
struct TrivyResult {
    #[serde(rename = "Vulnerabilities", default)]
    vulnerabilities: Option<Vec<Vulnerability>>,
}

#[derive(Deserialize)]
struct Vulnerability {
    #[serde(rename = "VulnerabilityID")]
    id: String,
    #[serde(rename = "PkgName", default)]
    package: String,
    #[serde(rename = "InstalledVersion", default)]
    installed: String,
    #[serde(rename = "FixedVersion", default)]
    fixed: Option<String>,
    /// A severity Trivy does not write fails the parse: a gate does not
    /// guess how bad a finding is.
    #[serde(rename = "Severity", default)]
    severity: Severity,
}

/// The findings of one report: one per id, package and installed version
/// (Trivy lists a package once per file it was found in), most severe
/// first.
pub fn parse_report(json: &[u8]) -> Result<Vec<Finding>, ScanError> {
    let report: Report = serde_json::from_slice(json).map_err(|e| ScanError::NotAReport {
        why: format!(
            "{} at line {}, column {}",
            kind_of(&e),
            e.line(),
            e.column()
        ),
    })?;
    let mut findings: Vec<Finding> = report
        .results
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r.vulnerabilities.unwrap_or_default())
        .map(|v| Finding {
            id: v.id,
            package: v.package,
            installed: v.installed,
            fixed: v.fixed.filter(|f| !f.trim().is_empty()),
            severity: v.severity,
        })
        .collect();
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| (&a.id, &a.package, &a.installed).cmp(&(&b.id, &b.package, &b.installed)))
    });
    findings.dedup_by(|a, b| a.id == b.id && a.package == b.package && a.installed == b.installed);
    Ok(findings)
}

/// What kind of JSON error, without quoting the input.
fn kind_of(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => "unreadable",
        Category::Syntax => "not JSON",
        Category::Data => "not Trivy's report shape",
        Category::Eof => "cut short",
    }
}

/// Why an image could not be scanned. None carries a credential; Trivy's
/// own words are its last stderr lines, clipped and scrubbed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("{bin} is not found on PATH")]
    NotInstalled { bin: String },
    #[error("{bin} cannot be started ({why})")]
    CannotStart { bin: String, why: String },
    #[error("{} is not pinned to a digest: only registry/repository@sha256:... is scanned", crate::error::clipped(.0))]
    NotPinned(String),
    #[error("{bin} {step} failed ({status}): {stderr}")]
    Failed {
        bin: String,
        step: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{bin} {step} did not finish within {}s and was killed", .after.as_secs())]
    TimedOut {
        bin: String,
        step: &'static str,
        after: Duration,
    },
    #[error("{bin}'s report is larger than {limit} bytes, the most read")]
    TooLarge { bin: String, limit: usize },
    #[error("Trivy's output is not its JSON report ({why})")]
    NotAReport { why: String },
    #[error("reading {bin}'s output failed ({why})")]
    Io { bin: String, why: String },
    #[error("the registry login file cannot be handed to Trivy ({why})")]
    Logins { why: String },
    #[error("was not scanned and has no recent clean scan")]
    NotScanned,
}

impl ScanError {
    /// What a user does about it.
    pub fn fix(&self) -> String {
        match self {
            ScanError::NotInstalled { .. } => {
                "install Trivy (https://trivy.dev), or set TRIVY_BIN to its path".into()
            }
            ScanError::CannotStart { .. } => "check that TRIVY_BIN names an executable".into(),
            ScanError::NotPinned(_) => "scan images pinned by digest (IMAGE_PINNING=on)".into(),
            ScanError::Failed { step: STEP_DB, .. } | ScanError::TimedOut { step: STEP_DB, .. } => {
                "check that this machine reaches Trivy's database (mirror.gcr.io/aquasec/trivy-db, or the mirror TRIVY_DB_REPOSITORY names)".into()
            }
            ScanError::Failed { .. } => {
                "see Trivy's message; check that this machine reaches the registry and has a login for it (docker login)".into()
            }
            ScanError::TimedOut { .. } => {
                "check that the registry answers quickly, or allow the scan more time".into()
            }
            ScanError::TooLarge { .. } => {
                "run the same trivy image command by hand to see why its report is so large".into()
            }
            ScanError::NotAReport { .. } | ScanError::Io { .. } => {
                "check that TRIVY_BIN is Trivy 0.50 or later".into()
            }
            ScanError::Logins { .. } => {
                "check REGISTRY_AUTH_FILE and that the temporary directory is writable".into()
            }
            ScanError::NotScanned => "scan every image the run deploys".into(),
        }
    }
}

const STEP_DB: &str = "image --download-db-only";
const STEP_SCAN: &str = "image";

/// Whether a registry (`host[:port]`) is one Docker talks plain HTTP to.
fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// The arguments that download Trivy's vulnerability database, alone,
/// before the scans.
pub fn db_args() -> Vec<String> {
    ["image", "--download-db-only", "--quiet"]
        .map(String::from)
        .to_vec()
}

/// The arguments that scan `reference` (`registry/repo@sha256:...`). A
/// loopback registry is plain HTTP, which Trivy reaches with `--insecure`
/// (it took over the old `TRIVY_NON_SSL`). Logins never appear here: a
/// command line is visible to every user of the machine.
pub fn scan_args(reference: &str) -> Result<Vec<String>, ScanError> {
    let not_pinned = || ScanError::NotPinned(reference.to_string());
    let parsed: oci_client::Reference = reference.parse().map_err(|_| not_pinned())?;
    // The parse guarantees a name that cannot be read as a flag.
    if parsed.digest().is_none_or(|d| !d.starts_with("sha256:")) || parsed.tag().is_some() {
        return Err(not_pinned());
    }
    let mut args: Vec<String> = [
        "image",
        "--format",
        "json",
        "--quiet",
        "--scanners",
        "vuln",
        "--skip-db-update",
        "--cache-backend",
        "memory",
    ]
    .map(String::from)
    .to_vec();
    if is_loopback(parsed.registry()) {
        args.push("--insecure".into());
    }
    args.push(reference.to_string());
    Ok(args)
}

/// Trivy as this run invokes it.
pub struct Trivy {
    bin: String,
    timeout: Duration,
    max_report_bytes: usize,
    /// Set on each Trivy process on top of this process's environment.
    env: Vec<(String, String)>,
    /// Holds the directory `DOCKER_CONFIG` names while Trivy may read it.
    _logins: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Trivy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Variable names only: a value may be TRIVY_PASSWORD's.
        f.debug_struct("Trivy")
            .field("bin", &self.bin)
            .field("timeout", &self.timeout)
            .field("max_report_bytes", &self.max_report_bytes)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .finish()
    }
}

impl Trivy {
    /// `bin` (`TRIVY_BIN`), each run killed after `timeout`.
    pub fn new(bin: impl Into<String>, timeout: Duration) -> Self {
        Trivy {
            bin: bin.into(),
            timeout,
            max_report_bytes: MAX_REPORT_BYTES,
            env: Vec::new(),
            _logins: None,
        }
    }

    /// Set `key` in every Trivy process's environment (never on its
    /// command line).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Refuse reports over `bytes` (default [`MAX_REPORT_BYTES`]).
    pub fn max_report_bytes(mut self, bytes: usize) -> Self {
        self.max_report_bytes = bytes;
        self
    }

    /// Have Trivy log in with the same file the run pinned with
    /// ([`super::credentials::Credentials::file`]), through `DOCKER_CONFIG`.
    ///
    /// Trivy reads Docker's `$DOCKER_CONFIG/config.json` (else
    /// `~/.docker/config.json`); it does not reliably read podman's
    /// `REGISTRY_AUTH_FILE`, which has another name. A file named
    /// `config.json` is used where it is; another is linked (not copied) as
    /// `config.json` in a private temporary directory that lives as long as
    /// this `Trivy`. `REGISTRY_AUTH_FILE` is set as well, for tools that
    /// read it.
    pub fn logins(mut self, file: Option<&Path>) -> Result<Self, ScanError> {
        let Some(file) = file else {
            return Ok(self);
        };
        let why = |e: std::io::Error| ScanError::Logins {
            why: e.kind().to_string(),
        };
        let file = std::path::absolute(file).map_err(why)?;
        let dir = match (file.file_name(), file.parent()) {
            (Some(name), Some(parent)) if name == "config.json" => parent.to_path_buf(),
            _ => {
                let dir = tempfile::Builder::new()
                    .prefix("maily-trivy-logins-")
                    .tempdir()
                    .map_err(why)?;
                link(&file, &dir.path().join("config.json")).map_err(why)?;
                let path = dir.path().to_path_buf();
                self._logins = Some(dir);
                path
            }
        };
        self.env
            .push(("DOCKER_CONFIG".into(), dir.display().to_string()));
        self.env
            .push(("REGISTRY_AUTH_FILE".into(), file.display().to_string()));
        Ok(self)
    }

    /// The environment each Trivy process gets on top of this process's.
    pub fn child_env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Download the vulnerability database, alone, so that no two scans
    /// download it at once.
    pub async fn prepare(&self) -> Result<(), ScanError> {
        self.run(&db_args(), STEP_DB).await.map(drop)
    }

    /// Scan one pinned reference.
    pub async fn scan_one(&self, reference: &str) -> Result<Vec<Finding>, ScanError> {
        let args = scan_args(reference)?;
        let out = self.run(&args, STEP_SCAN).await?;
        parse_report(&out)
    }

    /// Scan every reference once, [`CONCURRENCY`] at a time, after one
    /// database download. `Err` is that download failing (nothing was
    /// scanned); otherwise each reference has its findings or why it has
    /// none. No references, no Trivy run.
    pub async fn scan(
        &self,
        references: impl IntoIterator<Item = String>,
    ) -> Result<Scans, ScanError> {
        let references: std::collections::BTreeSet<String> = references.into_iter().collect();
        if references.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.prepare().await?;
        Ok(futures::stream::iter(references)
            .map(|r| async move {
                let answer = self.scan_one(&r).await;
                (r, answer)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await)
    }

    /// Run Trivy with `args`: its stdout, or why there is none. Killed on
    /// timeout, on a report over the limit, and if this future is dropped.
    async fn run(&self, args: &[String], step: &'static str) -> Result<Vec<u8>, ScanError> {
        let bin = &self.bin;
        let mut child = tokio::process::Command::new(bin)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    ScanError::NotInstalled { bin: bin.clone() }
                } else {
                    ScanError::CannotStart {
                        bin: bin.clone(),
                        why: e.kind().to_string(),
                    }
                }
            })?;
        let io = |e: std::io::Error| ScanError::Io {
            bin: bin.clone(),
            why: e.kind().to_string(),
        };
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(io(std::io::ErrorKind::BrokenPipe.into()));
        };
        let limit = self.max_report_bytes;
        let ran = tokio::time::timeout(self.timeout, async {
            let (out, err) = tokio::try_join!(
                async {
                    match child_output::whole(stdout, limit).await.map_err(io)? {
                        Some(out) => Ok(out),
                        None => Err(ScanError::TooLarge {
                            bin: bin.clone(),
                            limit,
                        }),
                    }
                },
                async {
                    child_output::tail(stderr, STDERR_KEEP_BYTES)
                        .await
                        .map_err(io)
                },
            )?;
            let status = child.wait().await.map_err(io)?;
            Ok::<_, ScanError>((status, out, err))
        })
        .await;
        let (status, out, err) = match ran {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                let _ = child.kill().await;
                return Err(e);
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(ScanError::TimedOut {
                    bin: bin.clone(),
                    step,
                    after: self.timeout,
                });
            }
        };
        if status.success() {
            return Ok(out);
        }
        Err(ScanError::Failed {
            bin: bin.clone(),
            step,
            status: match status.code() {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".into(),
            },
            stderr: stderr_message(&err),
        })
    }
}

#[cfg(unix)]
fn link(original: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(original, link)
}

#[cfg(not(unix))]
fn link(original: &Path, link: &Path) -> std::io::Result<()> {
    std::fs::copy(original, link).map(drop)
}

/// Trivy's last stderr lines, as an error message quotes them: its
/// `FATAL`/`ERROR` lines when it logged any (else its last lines), colours
/// removed, the count and each line clipped (in the middle: Trivy's nested
/// errors end with the cause), secrets scrubbed.
fn stderr_message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<String> = text
        .lines()
        .map(strip_ansi)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("FATAL") || l.contains("ERROR"))
        .collect();
    let (picked, of_what): (Vec<&String>, &str) = if errors.is_empty() {
        (lines.iter().collect(), "lines")
    } else {
        (errors, "error lines")
    };
    let start = picked.len().saturating_sub(STDERR_LINES);
    let shown: Vec<String> = picked[start..].iter().map(|l| clip_middle(l)).collect();
    if shown.is_empty() {
        return "nothing on stderr".into();
    }
    let mut message = shown.join("\n");
    if shown.len() < lines.len() {
        message = format!(
            "(last {} {of_what} of {} lines)\n{message}",
            shown.len(),
            lines.len()
        );
    }
    crate::redact::scrub(&message).into_owned()
}

/// `line` whole when short, else its start and end around `…`.
fn clip_middle(line: &str) -> String {
    let n = line.chars().count();
    if n <= STDERR_LINE_CHARS {
        return line.to_string();
    }
    let head: String = line.chars().take(STDERR_LINE_CHARS / 3).collect();
    let tail: String = line
        .chars()
        .skip(n - (STDERR_LINE_CHARS - STDERR_LINE_CHARS / 3))
        .collect();
    format!("{head} … {tail}")
}

/// A line without its terminal colour codes (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
