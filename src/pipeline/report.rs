//! The run's report: one row per phase and the outcome, as printed at the
//! end and as `--output json` emits it (the schema is in docs/ci.md).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::phase::PhaseId;
use super::selection::SkipReason;
use crate::error::{Kind, Problem};

/// The schema id of the JSON report; bumped on incompatible changes.
pub const SCHEMA: &str = "maily-deploy/run-report/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    Succeeded,
    Failed,
    Skipped,
    /// `--dry-run`: the phase described what it would do.
    Planned,
    /// An earlier phase failed, so this one did not run.
    NotRun,
}

/// An error as reported: its kind, its message with context, the problems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub kind: Kind,
    pub message: String,
    /// Always present (`[]` when the error is its message alone), as the
    /// schema in docs/ci.md says: a CI job iterates it without a guard.
    #[serde(default)]
    pub problems: Vec<Problem>,
}

impl ErrorReport {
    /// From an error; untyped errors take `default_kind`.
    pub fn from_error(err: &anyhow::Error, default_kind: Kind) -> Self {
        let failure = crate::error::failure_of(err);
        ErrorReport {
            kind: failure.map_or(default_kind, |f| f.kind),
            message: crate::error::chain_text(err),
            problems: failure.map(|f| f.problems.clone()).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRow {
    pub id: PhaseId,
    pub status: PhaseStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub summary: String,
    pub details: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    /// `--dry-run` and every phase could plan.
    Planned,
    /// `--dry-run` and some phase could not plan.
    PlanFailed,
}

impl Outcome {
    /// The outcome in the words the end of a run says it.
    pub fn words(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Planned => "planned",
            Outcome::PlanFailed => "plan incomplete",
        }
    }
}

/// `PartialEq` only: the rollout's measurements are floating-point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub schema: String,
    /// `deploy`, `validate`, ...
    pub command: String,
    pub environment: String,
    pub deployment_id: Option<super::DeploymentId>,
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub outcome: Outcome,
    pub exit_code: i32,
    pub phases: Vec<PhaseRow>,
    pub warnings: Vec<String>,
    /// The scan gate's findings, or that scanning was off (absent when the
    /// run deployed no image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_scan: Option<crate::image::gate::ScanOutcome>,
    /// shift-traffic's steps and every analysis measurement (absent when it
    /// did not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::traffic::report::RolloutReport>,
    pub error: Option<ErrorReport>,
}

impl RunReport {
    /// The report of a command stopped before it could run anything (bad
    /// arguments, an unknown environment, a configuration that does not
    /// load), so `--output json` always has a report to print.
    pub fn stopped(command: &'static str, environment: &str, err: &anyhow::Error) -> Self {
        let now = Utc::now();
        let error = ErrorReport::from_error(err, Kind::PhaseFailed);
        let exit_code = crate::error::exit_code_of(err);
        RunReport {
            schema: SCHEMA.to_string(),
            command: command.to_string(),
            environment: environment.to_string(),
            deployment_id: None,
            dry_run: false,
            started_at: now,
            finished_at: now,
            duration_ms: 0,
            outcome: Outcome::Failed,
            exit_code,
            phases: Vec::new(),
            warnings: Vec::new(),
            image_scan: None,
            rollout: None,
            error: Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CI job (and a test) reads the report back typed, as printed.
    #[test]
    fn the_report_reads_back_as_it_was_printed() {
        let err = crate::error::fail(Kind::LockHeld, "held by ci@runner");
        let report = RunReport::stopped("deploy", "staging", &err);
        let text = serde_json::to_string_pretty(&report).unwrap();
        let back: RunReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
        assert_eq!(back.error.unwrap().kind, Kind::LockHeld);
        let row: PhaseRow = serde_json::from_value(serde_json::json!({
            "id": "deploy-backend", "status": "skipped", "skip_reason": "not_in_only",
            "summary": "", "details": []
        }))
        .unwrap();
        assert_eq!(row.id, crate::pipeline::PhaseId::DeployBackend);
    }

    /// `error.problems` is an array even when the error has none (an
    /// unknown environment is its message alone), as docs/ci.md promises.
    #[test]
    fn an_error_without_problems_still_has_the_array() {
        let err = crate::error::fail(Kind::Config, "unknown environment `stagin`");
        let report = serde_json::to_value(RunReport::stopped("deploy", "stagin", &err)).unwrap();
        assert_eq!(report["error"]["problems"], serde_json::json!([]));
    }
}
