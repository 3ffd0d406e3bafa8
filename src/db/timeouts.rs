//! The session limits that keep a migration from stalling production.
//!
//! `lock_timeout` is the one that matters most: an `ALTER TABLE` queued
//! behind a long-running query holds every later query on that table behind
//! it, so a migration that cannot get its lock quickly must give up rather
//! than wait. `statement_timeout` bounds any single statement. Both are set
//! on the migration session only, after the migration lock was taken (which
//! may wait for another run as long as it needs).

use std::time::Duration;

/// The `SET` statements for a session's limits. Zero means "no limit", as
/// it does in PostgreSQL.
pub fn session_limits_sql(statement_timeout: Duration, lock_timeout: Duration) -> String {
    format!(
        "SET statement_timeout = {}; SET lock_timeout = {}",
        statement_timeout.as_millis(),
        lock_timeout.as_millis()
    )
}

/// Limits off, for the session while it waits for the migration lock.
pub const NO_LIMITS_SQL: &str = "SET statement_timeout = 0; SET lock_timeout = 0";

/// The sentence added to a migration error when PostgreSQL cancelled it
/// for one of these limits (SQLSTATE 55P03 lock_not_available, 57014
/// query_canceled).
pub fn explain(
    code: Option<&str>,
    statement_timeout: Duration,
    lock_timeout: Duration,
) -> Option<String> {
    match code {
        Some("55P03") => Some(format!(
            "it waited longer than the lock timeout ({}) for a lock other sessions hold; \
             run it when traffic is lower, or raise the lock timeout",
            humantime::format_duration(lock_timeout)
        )),
        Some("57014") => Some(format!(
            "it ran longer than the statement timeout ({}); \
             make the migration cheaper (batches, CREATE INDEX CONCURRENTLY) or raise the statement timeout",
            humantime::format_duration(statement_timeout)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_set_in_milliseconds() {
        assert_eq!(
            session_limits_sql(Duration::from_secs(60), Duration::from_millis(1500)),
            "SET statement_timeout = 60000; SET lock_timeout = 1500"
        );
    }

    #[test]
    fn a_lock_timeout_is_explained_with_its_value() {
        let text = explain(
            Some("55P03"),
            Duration::from_secs(60),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(text.contains("lock timeout (5s)"), "{text}");
        assert!(explain(Some("42P01"), Duration::ZERO, Duration::ZERO).is_none());
    }
}
