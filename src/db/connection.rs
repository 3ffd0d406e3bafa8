//! `DATABASE_URL`: parsing it, connecting with it, and handing it to
//! `pg_dump`/`pg_restore` without ever showing its password.
//!
//! The password is kept apart from the URL as soon as it is parsed. The
//! PostgreSQL tools get it through `PGPASSWORD` in their environment, never on
//! their command line, where `ps` would show it to every user of the machine.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Result;
use percent_encoding::percent_decode_str;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use url::Url;

use super::error::{ConnectFailure, DbError};

/// How long a connection attempt may take before we call the host unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed `DATABASE_URL` whose password is never displayed.
#[derive(Clone)]
pub struct DatabaseUrl {
    /// The URL with the password removed.
    url: Url,
    password: Option<String>,
    /// The password as it appeared in the URL (percent-encoded), for redaction.
    raw_password: Option<String>,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.target())
    }
}

impl DatabaseUrl {
    /// Parses a `postgres://` or `postgresql://` URL. The error names what is
    /// wrong but never repeats the URL, which may hold a password.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |detail: &str| DbError::Connect {
            failure: ConnectFailure::InvalidUrl,
            target: "DATABASE_URL".into(),
            detail: detail.into(),
            hint: "expected postgres://USER:PASSWORD@HOST:PORT/DATABASE".into(),
        };
        let mut url = Url::parse(input).map_err(|e| invalid(&format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(invalid(&format!("scheme {:?} is not postgres", url.scheme())).into());
        }
        let mut raw_password = url.password().map(str::to_owned);
        let mut password = raw_password
            .as_deref()
            .map(|p| percent_decode_str(p).decode_utf8_lossy().into_owned());
        url.set_password(None)
            .map_err(|()| invalid("the URL cannot carry a password"))?;
        // libpq also takes it as `?password=`: kept apart the same way, so
        // pg_dump gets it (libpq's variables carry no query string) and the
        // URL carried around holds none.
        let from_query = url
            .query_pairs()
            .find(|(k, _)| k == "password")
            .map(|(_, v)| v.into_owned());
        if let Some(p) = from_query {
            let raw = url
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|pair| pair.strip_prefix("password="))
                .map(str::to_owned);
            let rest: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "password")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if rest.is_empty() {
                url.set_query(None);
            } else {
                url.query_pairs_mut().clear().extend_pairs(rest);
            }
            if password.is_none() {
                raw_password = raw.or_else(|| Some(p.clone()));
                password = Some(p);
            }
        }
        Ok(Self {
            url,
            password,
            raw_password,
        })
    }

    fn host(&self) -> String {
        self.query("host")
            .or_else(|| self.url.host_str().map(str::to_owned))
            .unwrap_or_else(|| "localhost".into())
    }

    fn port(&self) -> u16 {
        self.query("port")
            .and_then(|p| p.parse().ok())
            .or(self.url.port())
            .unwrap_or(5432)
    }

    fn user(&self) -> String {
        let user = self.url.username();
        if user.is_empty() {
            self.query("user").unwrap_or_else(|| "postgres".into())
        } else {
            percent_decode_str(user).decode_utf8_lossy().into_owned()
        }
    }

    /// The database name (`postgres` when the URL names none, as libpq does
    /// for user postgres).
    pub fn database(&self) -> String {
        let path = self.url.path().trim_start_matches('/');
        if path.is_empty() {
            self.query("dbname").unwrap_or_else(|| self.user())
        } else {
            percent_decode_str(path).decode_utf8_lossy().into_owned()
        }
    }

    fn query(&self, key: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// `host:port/database as user`: what messages say instead of the URL.
    pub fn target(&self) -> String {
        format!(
            "{}:{}/{} as {}",
            self.host(),
            self.port(),
            self.database(),
            self.user()
        )
    }

    /// The same server with another database; tests and tools that create
    /// databases use it.
    pub fn with_database(&self, database: &str) -> Self {
        let mut other = self.clone();
        other.url.set_path(&format!("/{database}"));
        other
    }

    /// Replaces every occurrence of the password in `text` (from a tool's
    /// stderr, a driver error) with `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in [&self.password, &self.raw_password].into_iter().flatten() {
            if !secret.is_empty() {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }

    /// The libpq environment that points `pg_dump`/`pg_restore` at this
    /// database. Only parameters libpq knows are passed: sqlx accepts some
    /// of its own in the query string that libpq would reject.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host()),
            ("PGPORT", self.port().to_string()),
            ("PGUSER", self.user()),
            ("PGDATABASE", self.database()),
        ];
        if let Some(password) = &self.password {
            env.push(("PGPASSWORD", password.clone()));
        }
        for (param, var) in [
            ("sslmode", "PGSSLMODE"),
            ("sslrootcert", "PGSSLROOTCERT"),
            ("sslcert", "PGSSLCERT"),
            ("sslkey", "PGSSLKEY"),
            ("application_name", "PGAPPNAME"),
            ("options", "PGOPTIONS"),
            ("connect_timeout", "PGCONNECT_TIMEOUT"),
            ("target_session_attrs", "PGTARGETSESSIONATTRS"),
        ] {
            if let Some(value) = self.query(param) {
                env.push((var, value));
            }
        }
        env
    }

    fn connect_options(&self) -> Result<PgConnectOptions, DbError> {
        let mut options =
            PgConnectOptions::from_str(self.url.as_str()).map_err(|e| DbError::Connect {
                failure: ConnectFailure::InvalidUrl,
                target: self.target(),
                detail: self.redact(&e.to_string()),
                hint: "check DATABASE_URL".into(),
            })?;
        if let Some(password) = &self.password {
            options = options.password(password);
        }
        // sqlx logs every statement at INFO; a deploy log wants only ours.
        Ok(options
            .application_name("maily-deploy")
            .disable_statement_logging())
    }

    /// Opens one connection, with TLS as the URL's `sslmode` asks. Failures
    /// are a [`DbError::Connect`] that says what to check.
    pub async fn connect(&self) -> Result<PgConnection> {
        let options = self.connect_options()?;
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options));
        match attempt.await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(err)) => Err(self.connect_error(&err).into()),
            Err(_) => Err(DbError::Connect {
                failure: ConnectFailure::Timeout,
                target: self.target(),
                detail: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
                hint: "check the host and port in DATABASE_URL and that a firewall lets this machine through".into(),
            }
            .into()),
        }
    }

    fn connect_error(&self, err: &sqlx::Error) -> DbError {
        let (failure, detail) = classify(err);
        let hint = match failure {
            ConnectFailure::WrongPassword => "check DATABASE_URL's password",
            ConnectFailure::Rejected => {
                "check the user in DATABASE_URL, and whether the server requires TLS (add ?sslmode=require)"
            }
            ConnectFailure::UnknownDatabase => "check the database name in DATABASE_URL",
            ConnectFailure::UnknownHost => "check the host name in DATABASE_URL",
            ConnectFailure::Refused => {
                "check the host and port in DATABASE_URL and that PostgreSQL is running there"
            }
            ConnectFailure::Tls => "check sslmode and sslrootcert in DATABASE_URL",
            ConnectFailure::Timeout => "check the host and port in DATABASE_URL",
            ConnectFailure::InvalidUrl | ConnectFailure::Other => "check DATABASE_URL",
        };
        DbError::Connect {
            failure,
            target: self.target(),
            detail: self.redact(&detail),
            hint: hint.into(),
        }
    }
}

/// Sorts a driver error into the failure a user can act on.
fn classify(err: &sqlx::Error) -> (ConnectFailure, String) {
    match err {
        sqlx::Error::Database(db) => {
            let failure = match db.code().as_deref() {
                Some("28P01") => ConnectFailure::WrongPassword,
                Some("28000") => ConnectFailure::Rejected,
                Some("3D000") => ConnectFailure::UnknownDatabase,
                _ => ConnectFailure::Other,
            };
            (failure, db.message().to_owned())
        }
        sqlx::Error::Io(io) => {
            let text = io.to_string();
            let failure = if io.kind() == std::io::ErrorKind::ConnectionRefused {
                ConnectFailure::Refused
            } else if text.contains("lookup")
                || text.contains("resolve")
                || text.contains("not known")
            {
                ConnectFailure::UnknownHost
            } else {
                ConnectFailure::Other
            };
            let detail = match failure {
                ConnectFailure::Refused => "connection refused".to_owned(),
                ConnectFailure::UnknownHost => format!("the host name does not resolve ({text})"),
                _ => text,
            };
            (failure, detail)
        }
        sqlx::Error::Tls(e) => (ConnectFailure::Tls, format!("TLS failed: {e}")),
        sqlx::Error::Configuration(e) => (ConnectFailure::InvalidUrl, e.to_string()),
        other => (ConnectFailure::Other, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://maily:s3cr%40t-pw@db.example.com:6543/maily_prod?sslmode=require";

    #[test]
    fn the_target_names_host_port_database_and_user_but_not_the_password() {
        let url = DatabaseUrl::parse(URL).unwrap();
        assert_eq!(url.target(), "db.example.com:6543/maily_prod as maily");
        assert!(!format!("{url:?}").contains("s3cr"));
    }

    #[test]
    fn the_password_goes_to_pgpassword_decoded_and_sslmode_to_pgsslmode() {
        let env = DatabaseUrl::parse(URL).unwrap().libpq_env();
        assert!(env.contains(&("PGPASSWORD", "s3cr@t-pw".into())));
        assert!(env.contains(&("PGSSLMODE", "require".into())));
        assert!(env.contains(&("PGHOST", "db.example.com".into())));
        assert!(env.contains(&("PGPORT", "6543".into())));
    }

    #[test]
    fn a_password_given_in_the_query_reaches_pg_dump_and_leaves_the_url() {
        let url = DatabaseUrl::parse(
            "postgres://maily@db.example.com/maily_prod?sslmode=require&password=s3cr%40t-pw",
        )
        .unwrap();
        let env = url.libpq_env();
        assert!(env.contains(&("PGPASSWORD", "s3cr@t-pw".into())), "{env:?}");
        assert!(env.contains(&("PGSSLMODE", "require".into())));
        assert!(!format!("{url:?}").contains("s3cr"));
        assert_eq!(
            url.redact("FATAL: s3cr@t-pw / s3cr%40t-pw"),
            "FATAL: *** / ***"
        );
        let alone = DatabaseUrl::parse("postgres://maily@h/db?password=pw-only-here").unwrap();
        assert!(
            alone
                .libpq_env()
                .contains(&("PGPASSWORD", "pw-only-here".into()))
        );
        assert!(!format!("{alone:?}").contains("pw-only"));
    }

    #[test]
    fn redaction_hides_the_password_in_both_spellings() {
        let url = DatabaseUrl::parse(URL).unwrap();
        assert_eq!(
            url.redact("FATAL: s3cr@t-pw and s3cr%40t-pw"),
            "FATAL: *** and ***"
        );
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let err = DatabaseUrl::parse("mysql://root:hunter2@h/db").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        assert!(matches!(
            DbError::find(&err),
            Some(DbError::Connect {
                failure: ConnectFailure::InvalidUrl,
                ..
            })
        ));
    }
}
