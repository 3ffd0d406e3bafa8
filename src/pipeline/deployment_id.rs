//! Deployment ids: `<environment>-YYYYMMDD-HHMMSS`, in UTC.
//!
//! The id is made once at the start of a run and names everything the run
//! leaves behind (snapshot, backup, annotations), so it must sort by time and
//! be typed back by hand for a rollback.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::error::{Kind, fail};

const STAMP: &str = "%Y%m%d-%H%M%S";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DeploymentId(String);

impl DeploymentId {
    /// The id of a run of `environment` starting at `at`.
    pub fn new(environment: &str, at: DateTime<Utc>) -> Self {
        DeploymentId(format!("{environment}-{}", at.format(STAMP)))
    }

    /// Parse an id a user typed for `environment`, naming what is wrong.
    pub fn parse(environment: &str, text: &str) -> anyhow::Result<Self> {
        let shown = crate::error::clipped(text);
        let env = crate::error::clipped(environment);
        let hint = format!(
            "expected {env}-YYYYMMDD-HHMMSS (UTC), e.g. {env}-20250101-120000; `maily-deploy history {env}` lists the ids"
        );
        let Some(stamp) = text
            .strip_prefix(environment)
            .and_then(|rest| rest.strip_prefix('-'))
        else {
            return Err(fail(
                Kind::Usage,
                format!(
                    "invalid deployment id `{shown}`: it does not start with `{env}-`, the environment being rolled back; {hint}"
                ),
            ));
        };
        let shape_ok = stamp.len() == 15
            && stamp.as_bytes()[8] == b'-'
            && stamp
                .bytes()
                .enumerate()
                .all(|(i, b)| i == 8 || b.is_ascii_digit());
        if !shape_ok {
            return Err(fail(
                Kind::Usage,
                format!("invalid deployment id `{shown}`: {hint}"),
            ));
        }
        if NaiveDateTime::parse_from_str(stamp, STAMP).is_err() {
            return Err(fail(
                Kind::Usage,
                format!(
                    "invalid deployment id `{shown}`: `{stamp}` is not a real date and time; {hint}"
                ),
            ));
        }
        Ok(DeploymentId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn made_from_the_environment_and_utc_time() {
        let at = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        assert_eq!(
            DeploymentId::new("production", at).as_str(),
            "production-20250101-120000"
        );
    }

    #[test]
    fn parses_the_documented_example() {
        let id = DeploymentId::parse("production", "production-20250101-120000").unwrap();
        assert_eq!(id.to_string(), "production-20250101-120000");
    }

    #[test]
    fn rejects_malformed_ids_with_the_expected_shape() {
        for bad in [
            "production-2025-01-01",
            "production-20250101",
            "production-20250101-1200",
            "production-2025010a-120000",
            "production20250101-120000",
            "",
        ] {
            let err = DeploymentId::parse("production", bad).unwrap_err();
            assert!(
                err.to_string().contains("production-YYYYMMDD-HHMMSS"),
                "{bad}: {err}"
            );
            assert_eq!(crate::error::kind_of(&err), Some(Kind::Usage));
        }
    }

    #[test]
    fn rejects_another_environments_id() {
        let err = DeploymentId::parse("production", "staging-20250101-120000").unwrap_err();
        assert!(
            err.to_string()
                .contains("does not start with `production-`")
        );
    }

    #[test]
    fn an_oversized_id_is_named_by_its_size_not_echoed() {
        let huge = format!("production-{}", "9".repeat(100_000));
        let err = DeploymentId::parse("production", &huge).unwrap_err();
        let msg = err.to_string();
        assert!(msg.len() < 400, "{} bytes: {}", msg.len(), &msg[..400]);
        assert!(msg.contains("(100011 bytes)"), "{msg}");
    }

    #[test]
    fn rejects_impossible_dates() {
        let err = DeploymentId::parse("production", "production-20251301-120000").unwrap_err();
        assert!(err.to_string().contains("not a real date"));
        assert!(DeploymentId::parse("production", "production-20250101-246000").is_err());
    }
}
