//! The daily backup CronJob: its connection to the database, and what
//! `status` says of its last success.
//!
//! The job (`manifests/platform/40-database-backup.yaml`) runs `pg_dump` in
//! a pod. Handed `--dbname=$DATABASE_URL`, pg_dump would carry the password
//! in its argv, which `ps` on the node shows to every user. So the job reads
//! libpq's variables (`PGHOST`, `PGPASSWORD`, ...) from a Secret of its own,
//! derived here at start-up from the platform Secret's `DATABASE_URL`, and
//! its command line names nothing secret.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::connection::DatabaseUrl;
use super::error::DbError;

/// The Secret the job reads libpq's variables from.
pub const SECRET: &str = "maily-database-backup";

/// The platform Secret whose `DATABASE_URL` the job backs up: the one the
/// services read, and the job's other `envFrom`.
pub const SOURCE: &str = "maily-platform-secrets";

/// The key of [`SOURCE`] the connection comes from.
pub const KEY: &str = "DATABASE_URL";

/// The job's Secret for the platform's secrets: `None` when [`SOURCE`] has
/// no `DATABASE_URL` (the job then fails on its missing Secret, which its
/// events name). The error says what is wrong with the URL, never the URL.
pub fn connection_secret(
    platform: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Option<BTreeMap<String, String>>, String> {
    let Some(url) = platform.get(SOURCE).and_then(|keys| keys.get(KEY)) else {
        return Ok(None);
    };
    let url = DatabaseUrl::parse(url).map_err(|e| match e.downcast_ref::<DbError>() {
        Some(DbError::Connect { detail, .. }) => detail.clone(),
        _ => e.to_string(),
    })?;
    Ok(Some(
        url.libpq_env()
            .into_iter()
            .map(|(var, value)| (var.to_string(), value))
            .collect(),
    ))
}

/// The CronJob's name (`manifests/platform/40-database-backup.yaml`).
pub const CRON_JOB: &str = "database-backup";

/// How long after its last success the daily backup is overdue: a day and
/// a schedule's slack (a job may take two hours, and start an hour late).
pub const OVERDUE_AFTER: chrono::Duration = chrono::Duration::hours(27);

/// What `status` says of the daily backup, from the CronJob's status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    /// No CronJob: the platform was never deployed here, or it was removed.
    Missing,
    /// It has never succeeded (a new environment, or every run failed).
    NeverSucceeded {
        last_scheduled: Option<DateTime<Utc>>,
    },
    /// Its last success is recent.
    Recent { last_success: DateTime<Utc> },
    /// Its last success is older than [`OVERDUE_AFTER`]: runs fail or do
    /// not start.
    Overdue {
        last_success: DateTime<Utc>,
        last_scheduled: Option<DateTime<Utc>>,
    },
}

/// What the CronJob controller records of the job's runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobTimes {
    pub last_success: Option<DateTime<Utc>>,
    pub last_scheduled: Option<DateTime<Utc>>,
}

/// The daily backup's health at `now`: `None` when the CronJob is not
/// there.
pub fn health(job: Option<JobTimes>, now: DateTime<Utc>) -> Health {
    let Some(JobTimes {
        last_success,
        last_scheduled,
    }) = job
    else {
        return Health::Missing;
    };
    match last_success {
        None => Health::NeverSucceeded { last_scheduled },
        Some(last_success) if now - last_success > OVERDUE_AFTER => Health::Overdue {
            last_success,
            last_scheduled,
        },
        Some(last_success) => Health::Recent { last_success },
    }
}

impl Health {
    /// Whether someone should look at it.
    pub fn is_warning(&self) -> bool {
        !matches!(self, Health::Recent { .. })
    }

    /// The line `status` prints, with what to do when it is a warning.
    pub fn line(&self, namespace: &str, now: DateTime<Utc>) -> String {
        let when = |t: &DateTime<Utc>| {
            let ago = (now - *t).to_std().unwrap_or_default();
            let ago = std::time::Duration::from_secs(ago.as_secs() / 60 * 60);
            format!(
                "{} ({} ago)",
                t.format("%Y-%m-%d %H:%M UTC"),
                humantime::format_duration(ago)
            )
        };
        let look = format!(
            "look at its jobs: kubectl -n {namespace} get jobs -l app.kubernetes.io/name={CRON_JOB}"
        );
        match self {
            Health::Missing => format!(
                "daily backup: no CronJob {CRON_JOB} in namespace {namespace}; a deploy of the platform creates it"
            ),
            Health::NeverSucceeded { last_scheduled } => format!(
                "daily backup: WARNING never succeeded{}; {look}",
                last_scheduled
                    .map(|t| format!(", last scheduled {}", when(&t)))
                    .unwrap_or_default()
            ),
            Health::Recent { last_success } => {
                format!("daily backup: last succeeded {}", when(last_success))
            }
            Health::Overdue {
                last_success,
                last_scheduled,
            } => format!(
                "daily backup: WARNING last succeeded {}{}; {look}",
                when(last_success),
                last_scheduled
                    .map(|t| format!(", last scheduled {}", when(&t)))
                    .unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_daily_backup_is_overdue_a_day_and_its_slack_after_its_last_success() {
        let now = at("2026-12-02T12:00:00Z");
        assert_eq!(health(None, now), Health::Missing);
        assert_eq!(
            health(
                Some(JobTimes {
                    last_success: None,
                    last_scheduled: Some(at("2026-12-02T03:17:00Z"))
                }),
                now
            ),
            Health::NeverSucceeded {
                last_scheduled: Some(at("2026-12-02T03:17:00Z"))
            }
        );
        let last_night = at("2026-12-02T03:20:00Z");
        assert_eq!(
            health(
                Some(JobTimes {
                    last_success: Some(last_night),
                    last_scheduled: Some(last_night)
                }),
                now
            ),
            Health::Recent {
                last_success: last_night
            }
        );
        // A run that failed last night: the success before is 33 h old.
        let night_before = at("2026-12-01T03:20:00Z");
        let h = health(
            Some(JobTimes {
                last_success: Some(night_before),
                last_scheduled: Some(last_night),
            }),
            now,
        );
        assert_eq!(
            h,
            Health::Overdue {
                last_success: night_before,
                last_scheduled: Some(last_night)
            }
        );
        assert!(h.is_warning());
        let line = h.line("maily-prod", now);
        assert!(
            line.starts_with(
                "daily backup: WARNING last succeeded 2026-12-01 03:20 UTC (1day 8h 40m ago)"
            ),
            "{line}"
        );
        assert!(
            line.contains(
                "kubectl -n maily-prod get jobs -l app.kubernetes.io/name=database-backup"
            ),
            "{line}"
        );
    }

    fn platform(url: &str) -> BTreeMap<String, BTreeMap<String, String>> {
        [(
            SOURCE.to_string(),
            [
                (KEY.to_string(), url.to_string()),
                ("OPENAI_API_KEY".to_string(), "sk-x".to_string()),
            ]
            .into(),
        )]
        .into()
    }

    #[test]
    fn the_job_gets_libpq_variables_with_the_password_decoded() {
        let secret = connection_secret(&platform(
            "postgresql://maily:p%40ss%2Fw0rd@db.internal:6432/maily_prod?sslmode=verify-full",
        ))
        .unwrap()
        .unwrap();
        let want: BTreeMap<String, String> = [
            ("PGHOST", "db.internal"),
            ("PGPORT", "6432"),
            ("PGUSER", "maily"),
            ("PGPASSWORD", "p@ss/w0rd"),
            ("PGDATABASE", "maily_prod"),
            ("PGSSLMODE", "verify-full"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(secret, want);
    }

    #[test]
    fn no_database_url_in_the_platform_secret_means_no_job_secret() {
        let mut p = platform("postgres://x@h/d");
        p.get_mut(SOURCE).unwrap().remove(KEY);
        assert_eq!(connection_secret(&p), Ok(None));
        // Another Secret's DATABASE_URL is not the job's.
        let other: BTreeMap<_, _> = [(
            "maily-api-secrets".to_string(),
            [(KEY.to_string(), "postgres://x@h/d".to_string())].into(),
        )]
        .into();
        assert_eq!(connection_secret(&other), Ok(None));
    }

    #[test]
    fn a_url_that_is_not_postgres_is_named_without_its_password() {
        let err = connection_secret(&platform("mysql://root:hunter2@db/maily")).unwrap_err();
        assert!(err.contains("not postgres"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
