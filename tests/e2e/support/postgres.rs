//! The tests' PostgreSQL (`postgres` logs in without a password): a fresh
//! database per test, dropped when the test ends, read with `psql`.

use std::process::Command;

use super::rand_suffix;

/// The server's URL without a database: `MAILY_TEST_POSTGRES_URL` (which
/// `scripts/test` sets from `scripts/setup.d/services.sh`), else the
/// machine's 127.0.0.1:5432.
pub fn server() -> String {
    std::env::var("MAILY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// `postgres://...:<port>/<db>?sslmode=disable`, logging in as `user`
/// (with `password` when given) on the tests' server.
pub fn url_of(db: &str, password: Option<&str>) -> String {
    let server = server();
    let server = match password {
        Some(p) => server.replacen("postgres@", &format!("postgres:{p}@"), 1),
        None => server,
    };
    format!("{server}/{db}?sslmode=disable")
}

/// `sql` through `psql` on database `db`; its output, trimmed.
pub fn psql(sql: &str, db: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-d", &url_of(db, None), "-tAc", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh database, dropped when the guard goes.
pub struct Database(pub String);

impl Database {
    /// `maily_<label>_<unique>`.
    pub fn new(label: &str) -> Database {
        let name = format!("maily_{label}_{}", rand_suffix().replace('-', "_"));
        psql(&format!("CREATE DATABASE {name}"), "postgres");
        Database(name)
    }

    pub fn url(&self) -> String {
        url_of(&self.0, None)
    }

    /// The URL with a password in it. The server trusts local logins and
    /// never asks for it, so a test can check the password is never shown.
    pub fn url_with_password(&self, password: &str) -> String {
        url_of(&self.0, Some(password))
    }

    /// The newest migration applied successfully (0 for none).
    pub fn version(&self) -> i64 {
        psql(
            "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success",
            &self.0,
        )
        .parse()
        .unwrap()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-d", &url_of("postgres", None), "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0))
            .output();
    }
}
