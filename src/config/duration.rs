//! Every duration the tool takes, and the unit each is used in.
//!
//! A duration is written with humantime's units (`500us`, `30s`, `1h 30m`)
//! but used in one unit: PostgreSQL takes `lock_timeout` in whole
//! milliseconds, a Deployment's `progressDeadlineSeconds` is whole seconds,
//! and the plan and the rollout record give a pause in seconds. Used
//! through `as_millis()` or `as_secs()`, a value under that unit becomes 0,
//! which PostgreSQL reads as "no limit", a progress deadline as "no time"
//! and a poll as "no pause", and any other value silently loses its
//! fraction. So each duration has a [`DurationRule`]: its unit, its least
//! value, and the reason for both in words. A value that is not a whole
//! number of the unit, or is under the least, is refused with that reason.
//! Nothing is rounded: rounding down is the bug above, and rounding up
//! would run with a value nobody wrote.
//!
//! The rules are all here, the variables' (the spec's rows point at them),
//! the profile's and the command line's, so a reader sees every unit side
//! by side and a new duration gets its rule where the others are.

use std::time::Duration;

/// The unit a duration is used in; a value must be a whole number of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Millisecond,
    Second,
}

impl Unit {
    fn nanos(self) -> u128 {
        match self {
            Unit::Millisecond => 1_000_000,
            Unit::Second => 1_000_000_000,
        }
    }

    /// `milliseconds`, `seconds`: as the messages say it.
    pub fn plural(self) -> &'static str {
        match self {
            Unit::Millisecond => "milliseconds",
            Unit::Second => "seconds",
        }
    }
}

/// The most a duration may be, by the field it ends up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceiling {
    /// [`MAX_DURATION_SECS`]: what a Kubernetes seconds field holds.
    Int32Seconds,
    /// An int32 of milliseconds: what PostgreSQL takes for a timeout.
    Int32Milliseconds,
}

/// How one duration is used, and so what it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRule {
    /// The unit it is used in.
    pub unit: Unit,
    /// The least it may be; zero only where 0 means something on purpose
    /// (a grace of `0s` scales the old slot down at once).
    pub min: Duration,
    pub ceiling: Ceiling,
    /// Why that unit, as a clause for the messages: "PostgreSQL takes
    /// lock_timeout in whole milliseconds".
    pub used: &'static str,
    /// What a value under `min` would do, as a clause: "0 would mean no
    /// limit".
    pub under: &'static str,
}

const fn seconds(min_secs: u64, used: &'static str, under: &'static str) -> DurationRule {
    DurationRule {
        unit: Unit::Second,
        min: Duration::from_secs(min_secs),
        ceiling: Ceiling::Int32Seconds,
        used,
        under,
    }
}

/// PostgreSQL's timeouts: whole milliseconds in an int32, and 0 is no limit
/// (<https://www.postgresql.org/docs/current/runtime-config-client.html>).
const fn postgres(used: &'static str) -> DurationRule {
    DurationRule {
        unit: Unit::Millisecond,
        min: Duration::from_millis(1),
        ceiling: Ceiling::Int32Milliseconds,
        used,
        under: "0 would mean no limit",
    }
}

// The variables' rules; `spec::SPEC` names each in its row.

pub const ROLLOUT_TIMEOUT: DurationRule = seconds(
    1,
    "each Deployment's progressDeadlineSeconds takes it in whole seconds",
    "0 would give every rollout no time at all",
);
pub const UNSCHEDULABLE_GRACE: DurationRule = seconds(
    1,
    "a pod's wait for a node is counted in whole seconds",
    "0 would fail a rollout the moment a pod waits for a node",
);
pub const IMAGE_PULL_GRACE: DurationRule = seconds(
    1,
    "a pod's pull retries are counted in whole seconds",
    "0 would fail a rollout at a pod's first passing pull error",
);
pub const REGISTRY_TIMEOUT: DurationRule = seconds(
    1,
    "a registry's wait is timed and reported in whole seconds",
    "0 would give the registry no time to answer",
);
pub const IMAGE_SCAN_TTL: DurationRule = seconds(
    1,
    "it is taken in whole seconds, as every duration but the database timeouts is",
    "0 would spare no scan",
);
pub const IMAGE_SCAN_TIMEOUT: DurationRule = seconds(
    1,
    "a scan is timed and reported in whole seconds",
    "0 would kill every scan at once",
);
pub const DATABASE_STATEMENT_TIMEOUT: DurationRule =
    postgres("PostgreSQL takes statement_timeout in whole milliseconds");
pub const DATABASE_LOCK_TIMEOUT: DurationRule =
    postgres("PostgreSQL takes lock_timeout in whole milliseconds");
/// At least a second: a build takes minutes, a read more often than that
/// learns nothing sooner, and every read spends the token's share of
/// Vercel's API rate limit (at 1ns the loop would not pause at all).
pub const VERCEL_POLL_INTERVAL: DurationRule = seconds(
    1,
    "the build's state is read at an interval of whole seconds",
    "a shorter wait would read Vercel's API almost without pause and spend the token's rate limit",
);
pub const VERCEL_BUILD_TIMEOUT: DurationRule = seconds(
    1,
    "it is taken in whole seconds, as every duration but the database timeouts is",
    "0 would give up before the build starts",
);
pub const MONITOR_TARGETS_TIMEOUT: DurationRule = seconds(
    1,
    "the wait for the targets is timed and reported in whole seconds",
    "0 would give up before Prometheus scrapes once",
);

// The profile's rules (`traffic:` and `ai.providers.*.timeout`).

pub const TRAFFIC_PAUSE: DurationRule = seconds(
    1,
    "the plan and the rollout record give the pause in whole seconds",
    "0 would walk every step at once",
);
/// `0s` is a grace on purpose: the old slot scales down at once.
pub const TRAFFIC_GRACE: DurationRule = seconds(
    0,
    "the plan and the rollout record give the grace in whole seconds",
    "",
);
/// At least a second: Prometheus itself scrapes no faster than every
/// second or so, so a shorter interval measures the same samples again.
pub const ANALYSIS_INTERVAL: DurationRule = seconds(
    1,
    "the plan gives the interval in whole seconds",
    "that is faster than any scrape",
);
pub const ANALYSIS_INCONCLUSIVE_TIMEOUT: DurationRule = seconds(
    1,
    "the plan gives the timeout in whole seconds",
    "0 would abort a step the moment its pause ends without a verdict",
);
pub const AI_PROVIDER_TIMEOUT: DurationRule = seconds(
    1,
    "the AI services take the timeout in whole seconds",
    "0 would fail every call",
);

// The command line's.

/// At least 2s: the lock is renewed every third of its TTL.
pub const LOCK_TTL: DurationRule = seconds(
    2,
    "the Lease's leaseDurationSeconds is whole seconds",
    "the lock is renewed every third of it",
);

/// The longest duration the tool takes: what an int32 seconds field
/// (`progressDeadlineSeconds`, `leaseDurationSeconds`) holds, about 68
/// years. Longer is a typo, and would wrap when written to one (or
/// overflow a deadline computed from it).
pub const MAX_DURATION_SECS: u64 = i32::MAX as u64;

/// The problem with a duration past [`MAX_DURATION_SECS`].
pub fn too_long() -> String {
    format!(
        "is longer than {MAX_DURATION_SECS} seconds (about 68 years), the most a Kubernetes seconds field (an int32) holds"
    )
}

/// What is wrong with a duration; the text follows the subject
/// ("ROLLOUT_TIMEOUT is zero; ..."). No variant holds the text given: the
/// caller decides whether it may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("is zero; give a positive duration")]
    Zero,
    /// `-1m`: said as the rule it breaks, not as a typo.
    #[error("is negative; give a positive duration (a number with a unit: s, m, h), e.g. 5m")]
    Negative,
    #[error("{}", too_long())]
    TooLong,
    #[error("is not a duration (a number with a unit: s, m, h)")]
    NotADuration,
    #[error(
        "is longer than PostgreSQL takes for a timeout: 2147483647 ms (about 24 days 20 hours); a longer setting fails, and the migration with it"
    )]
    TooLongForPostgres,
    #[error("is under {}: {}, and {}", human(.0.min), .0.used, .0.under)]
    TooShort(DurationRule),
    #[error(
        "is not a whole number of {}: {}, and the tool rounds nothing",
        .0.unit.plural(),
        .0.used
    )]
    NotWhole(DurationRule),
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl DurationRule {
    /// The value, or why it is refused: not a duration, past the ceiling,
    /// under the least, or not a whole number of the unit (in that order,
    /// so `1ns` for a poll interval is "under 1s", the more useful news).
    pub fn parse(self, value: &str) -> Result<Duration, DurationError> {
        if value.trim_start().starts_with('-') {
            return Err(DurationError::Negative);
        }
        let d = humantime::parse_duration(value).map_err(|_| DurationError::NotADuration)?;
        match self.ceiling {
            Ceiling::Int32Seconds if d.as_secs() > MAX_DURATION_SECS => {
                return Err(DurationError::TooLong);
            }
            Ceiling::Int32Milliseconds if d.as_millis() > i32::MAX as u128 => {
                return Err(DurationError::TooLongForPostgres);
            }
            _ => {}
        }
        if d < self.min {
            return Err(if d.is_zero() {
                DurationError::Zero
            } else {
                DurationError::TooShort(self)
            });
        }
        if !d.as_nanos().is_multiple_of(self.unit.nanos()) {
            return Err(DurationError::NotWhole(self));
        }
        Ok(d)
    }

    /// What a value must be, for a template line and a fix: `duration in
    /// whole seconds, at least 1s`.
    pub fn describe(self) -> String {
        let most = match self.ceiling {
            Ceiling::Int32Seconds => String::new(),
            Ceiling::Int32Milliseconds => " and at most 24 days".into(),
        };
        if self.min.is_zero() {
            format!("duration in whole {}{most}", self.unit.plural())
        } else {
            format!(
                "duration in whole {}, at least {}{most}",
                self.unit.plural(),
                human(self.min)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_timeout_under_a_millisecond_is_refused_not_made_no_limit() {
        for value in ["500us", "999999ns", "1ns"] {
            let err = DATABASE_LOCK_TIMEOUT.parse(value).unwrap_err();
            assert_eq!(
                err,
                DurationError::TooShort(DATABASE_LOCK_TIMEOUT),
                "{value}"
            );
            assert_eq!(
                err.to_string(),
                "is under 1ms: PostgreSQL takes lock_timeout in whole milliseconds, and 0 would mean no limit"
            );
        }
        assert_eq!(
            DATABASE_STATEMENT_TIMEOUT.parse("1500us"),
            Err(DurationError::NotWhole(DATABASE_STATEMENT_TIMEOUT))
        );
        assert_eq!(
            DATABASE_STATEMENT_TIMEOUT
                .parse("1500us")
                .unwrap_err()
                .to_string(),
            "is not a whole number of milliseconds: PostgreSQL takes statement_timeout in whole milliseconds, and the tool rounds nothing"
        );
        assert_eq!(
            DATABASE_LOCK_TIMEOUT.parse("1ms"),
            Ok(Duration::from_millis(1))
        );
        assert_eq!(
            DATABASE_LOCK_TIMEOUT.parse("1s 500ms"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(
            DATABASE_LOCK_TIMEOUT.parse("2147483648ms"),
            Err(DurationError::TooLongForPostgres)
        );
        assert_eq!(DATABASE_LOCK_TIMEOUT.parse("0s"), Err(DurationError::Zero));
    }

    #[test]
    fn a_seconds_duration_takes_whole_seconds_only() {
        assert_eq!(
            ROLLOUT_TIMEOUT.parse("900ms"),
            Err(DurationError::TooShort(ROLLOUT_TIMEOUT))
        );
        assert_eq!(
            ROLLOUT_TIMEOUT.parse("1500ms"),
            Err(DurationError::NotWhole(ROLLOUT_TIMEOUT))
        );
        assert_eq!(ROLLOUT_TIMEOUT.parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(ROLLOUT_TIMEOUT.parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(ROLLOUT_TIMEOUT.parse("69y"), Err(DurationError::TooLong));
        assert_eq!(
            ROLLOUT_TIMEOUT.parse("30"),
            Err(DurationError::NotADuration)
        );
    }

    #[test]
    fn a_poll_interval_under_a_second_is_refused_as_too_short_first() {
        let err = VERCEL_POLL_INTERVAL.parse("1ns").unwrap_err();
        assert_eq!(err, DurationError::TooShort(VERCEL_POLL_INTERVAL));
        assert!(err.to_string().starts_with("is under 1s: "), "{err}");
        assert!(err.to_string().contains("rate limit"), "{err}");
        assert!(VERCEL_POLL_INTERVAL.parse("1s").is_ok());
    }

    #[test]
    fn a_grace_may_be_zero_but_not_a_fraction_of_a_second() {
        assert_eq!(TRAFFIC_GRACE.parse("0s"), Ok(Duration::ZERO));
        assert_eq!(
            TRAFFIC_GRACE.parse("1ms"),
            Err(DurationError::NotWhole(TRAFFIC_GRACE))
        );
        assert_eq!(TRAFFIC_GRACE.parse("10m"), Ok(Duration::from_secs(600)));
    }

    #[test]
    fn the_lock_ttl_is_whole_seconds_from_two() {
        assert_eq!(LOCK_TTL.parse("1s"), Err(DurationError::TooShort(LOCK_TTL)));
        assert_eq!(
            LOCK_TTL.parse("2500ms"),
            Err(DurationError::NotWhole(LOCK_TTL))
        );
        assert_eq!(LOCK_TTL.parse("2s"), Ok(Duration::from_secs(2)));
    }
}
