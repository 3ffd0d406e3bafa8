//! Deployment ids: `<environment>-YYYYMMDD-HHMMSS`, in UTC.
//!
//! The id is made once at the start of a run and names everything the run
//! leaves behind (snapshot, backup, annotations), so it must sort by time and
//! be typed back by hand for a rollback.
//!
//! Test hook: with `MAILY_DEPLOY_CLOCK_FILE` set, a new id is made of the
//! second after the one that file holds (or of now, if later), and the file
//! then holds that second. Runs sharing the file (a test's world) each get
//! a second of their own, in the order they start, without waiting for the
//! clock to reach one (see `docs/testing.md`).

use std::fmt;
use std::io::{Seek, Write};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Kind, fail};

const STAMP: &str = "%Y%m%d-%H%M%S";

/// Its text is its only form, in JSON too: records written before ids were
/// typed hold the same string, and read back through [`DeploymentId::parse`]
/// so a record can never carry an id the command line would refuse.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeploymentId(String);

impl DeploymentId {
    /// The id of a run of `environment` starting at `at`.
    pub fn new(environment: &str, at: DateTime<Utc>) -> Self {
        DeploymentId(format!("{environment}-{}", at.format(STAMP)))
    }

    /// The id of a run of `environment` starting now: the clock's time, or
    /// under the test hook `MAILY_DEPLOY_CLOCK_FILE` the next second of the
    /// test's clock (see the module's docs).
    pub fn now(environment: &str) -> Self {
        let now = Utc::now();
        let at = match std::env::var_os(CLOCK_FILE) {
            Some(path) if !path.is_empty() => {
                next_second(Path::new(&path), now).unwrap_or_else(|e| {
                    tracing::warn!("{CLOCK_FILE}: {e}; the id is made of the clock's time");
                    now
                })
            }
            _ => now,
        };
        DeploymentId::new(environment, at)
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

/// An id read back from a record, which does not say its environment apart
/// from the id: the environment is what comes before the stamp, and the
/// rest is checked as [`DeploymentId::parse`] checks a typed one.
impl TryFrom<String> for DeploymentId {
    type Error = anyhow::Error;

    fn try_from(text: String) -> anyhow::Result<Self> {
        let environment = text
            .len()
            .checked_sub("-YYYYMMDD-HHMMSS".len())
            .and_then(|end| text.get(..end))
            .filter(|env| !env.is_empty());
        match environment {
            Some(environment) => DeploymentId::parse(environment, &text),
            None => Err(fail(
                Kind::Usage,
                format!(
                    "invalid deployment id `{}`: expected <environment>-YYYYMMDD-HHMMSS (UTC), e.g. production-20250101-120000",
                    crate::error::clipped(&text)
                ),
            )),
        }
    }
}

impl std::str::FromStr for DeploymentId {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        DeploymentId::try_from(text.to_string())
    }
}

impl Serialize for DeploymentId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeploymentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DeploymentId::try_from(text).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

// Compared with the ids kept as text where they may be something else (a
// lease holder's name, a typed argument not yet parsed).
impl PartialEq<str> for DeploymentId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for DeploymentId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for DeploymentId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

/// The test hook's variable: a file holding the last second (Unix time) an
/// id was made of.
const CLOCK_FILE: &str = "MAILY_DEPLOY_CLOCK_FILE";

/// The most the clock file is read of: a Unix time is 20 characters at
/// most.
const MAX_CLOCK_BYTES: u64 = 64;

/// The second after the one in `path` (none there: `now`'s), or `now`'s if
/// that is later; written back to `path`. The file is locked meanwhile, so
/// runs started together take different seconds.
fn next_second(path: &Path, now: DateTime<Utc>) -> std::io::Result<DateTime<Utc>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // A FIFO opened to read and write does not block on Linux, but a read
    // of it waits for ever; /dev/zero never ends.
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a file; point it at a file the test's runs share",
            path.display()
        )));
    }
    file.lock()?;
    let text = match crate::config::take_at_most(&mut file, MAX_CLOCK_BYTES) {
        Ok(bytes) => {
            String::from_utf8(bytes).map_err(|_| std::io::Error::other("it is not a Unix time"))?
        }
        Err(crate::config::ReadError::Io(e)) => return Err(e),
        Err(crate::config::ReadError::Over) => {
            return Err(std::io::Error::other(format!(
                "{} is over {MAX_CLOCK_BYTES} bytes, longer than any Unix time",
                path.display()
            )));
        }
    };
    let second = match text.trim() {
        "" => now.timestamp(),
        last => last
            .parse::<i64>()
            .map_err(|e| std::io::Error::other(format!("`{last}` is not a Unix time: {e}")))?
            .saturating_add(1)
            .max(now.timestamp()),
    };
    file.seek(std::io::SeekFrom::Start(0))?;
    file.set_len(0)?;
    write!(file, "{second}")?;
    DateTime::from_timestamp(second, 0)
        .ok_or_else(|| std::io::Error::other(format!("{second} is out of range")))
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
    fn the_test_clock_gives_each_id_the_next_second_never_one_before_now() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clock");
        let at = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        // No file yet: now.
        assert_eq!(next_second(&file, at).unwrap(), at);
        // The same second again: the next one, and the next.
        let one = chrono::Duration::seconds(1);
        assert_eq!(next_second(&file, at).unwrap(), at + one);
        assert_eq!(next_second(&file, at).unwrap(), at + one * 2);
        // The clock moved past the file: now.
        assert_eq!(next_second(&file, at + one * 60).unwrap(), at + one * 60);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            (at + one * 60).timestamp().to_string()
        );
        // A time set ahead (a test pinning its ids) is followed.
        std::fs::write(&file, (at + one * 3600).timestamp().to_string()).unwrap();
        assert_eq!(next_second(&file, at).unwrap(), at + one * 3601);
        std::fs::write(&file, "soon").unwrap();
        assert!(next_second(&file, at).is_err());
    }

    #[test]
    fn a_test_clock_that_is_no_clock_file_stops_at_once() {
        let at = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let err = next_second(Path::new("/dev/zero"), at).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/zero is not a file; point it at a file the test's runs share"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clock");
        std::fs::write(&file, "1".repeat(1 << 20)).unwrap();
        let err = next_second(&file, at).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("is over 64 bytes, longer than any Unix time"),
            "{err}"
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
    fn reads_back_from_json_as_the_same_string_and_checked_as_parse_checks() {
        let id = DeploymentId::parse("production", "production-20250101-120000").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"production-20250101-120000\"");
        assert_eq!(serde_json::from_str::<DeploymentId>(&json).unwrap(), id);
        // An environment with dashes of its own is what precedes the stamp.
        let dashed: DeploymentId = serde_json::from_str("\"eu-west-20250101-120000\"").unwrap();
        assert_eq!(dashed.as_str(), "eu-west-20250101-120000");
        for bad in [
            "production-20250101",
            "production-20251301-120000",
            "-20250101-120000",
            "20250101-120000",
            "production-2025010a-120000",
            "x",
            "",
        ] {
            let err = serde_json::from_value::<DeploymentId>(serde_json::json!(bad)).unwrap_err();
            assert!(
                err.to_string().contains("invalid deployment id"),
                "{bad}: {err}"
            );
        }
        assert!(serde_json::from_str::<DeploymentId>("7").is_err());
    }

    #[test]
    fn rejects_impossible_dates() {
        let err = DeploymentId::parse("production", "production-20251301-120000").unwrap_err();
        assert!(err.to_string().contains("not a real date"));
        assert!(DeploymentId::parse("production", "production-20250101-246000").is_err());
    }
}
