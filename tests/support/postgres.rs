//! The PostgreSQL of this machine (127.0.0.1:5432, local logins trusted):
//! a fresh database per test, dropped when the test ends, read with `psql`.

use std::process::Command;

use super::rand_suffix;

/// `sql` through `psql` on database `db`; its output, trimmed.
pub fn psql(sql: &str, db: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-tAc", sql])
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
        format!(
            "postgres://postgres@127.0.0.1:5432/{}?sslmode=disable",
            self.0
        )
    }

    /// The URL with a password in it. The server trusts local logins and
    /// never asks for it, so a test can check the password is never shown.
    pub fn url_with_password(&self, password: &str) -> String {
        format!(
            "postgres://postgres:{password}@127.0.0.1:5432/{}?sslmode=disable",
            self.0
        )
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
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0))
            .output();
    }
}
