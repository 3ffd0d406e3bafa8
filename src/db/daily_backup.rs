//! The daily backup CronJob's connection to the database.
//!
//! The job (`manifests/platform/40-database-backup.yaml`) runs `pg_dump` in
//! a pod. Handed `--dbname=$DATABASE_URL`, pg_dump would carry the password
//! in its argv, which `ps` on the node shows to every user. So the job reads
//! libpq's variables (`PGHOST`, `PGPASSWORD`, ...) from a Secret of its own,
//! derived here at start-up from the platform Secret's `DATABASE_URL`, and
//! its command line names nothing secret.

use std::collections::BTreeMap;

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

#[cfg(test)]
mod tests {
    use super::*;

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
