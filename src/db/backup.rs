//! Backups: `pg_dump` in custom format, verified, checksummed, stored.
//!
//! A backup that was not verified is no backup: before a migration may run,
//! the dump must be shown whole. `pg_restore --list` alone reads only the
//! table of contents at the start of the file, so a file cut short at the
//! end passes it; [`verify_file`] also reads the last data block back.
//! Both run on the staged file before it is stored, and the SHA-256 taken
//! then is checked again before any restore.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::child_output;

use super::connection::DatabaseUrl;
use super::error::DbError;
use super::store::BackupStore;

/// Why a backup was taken; part of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupReason {
    /// Before a deployment's pending migrations.
    PreMigrate,
    /// Before down migrations (`rollback --database down`).
    PreDown,
    /// Before a restore replaced the database (`--database restore`, `db restore`).
    PreRestore,
    /// By the daily backup CronJob, which writes the same record under
    /// `daily/` (its deployment id is `daily`).
    Daily,
}

impl BackupReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::PreMigrate => "pre-migrate",
            Self::PreDown => "pre-down",
            Self::PreRestore => "pre-restore",
            Self::Daily => "daily",
        }
    }
}

/// What a deployment snapshot records about a backup, and what is stored
/// next to it as `<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// `<deployment id>.<reason>`; the dump is `<name>.dump`.
    pub name: String,
    /// Where the dump is: `file:///…/<name>.dump` or `s3://…/<name>.dump`.
    pub location: String,
    pub deployment_id: String,
    pub reason: BackupReason,
    pub size_bytes: u64,
    /// Hex SHA-256 of the dump file; checked again before any restore.
    pub sha256: String,
    /// The dump was read back whole by `pg_restore` before it was stored.
    pub verified: bool,
    /// The schema version of the database when it was taken.
    pub schema_version: Option<i64>,
    /// `host:port/database as user`: which database it is of.
    pub database: String,
    /// The schemas dumped (the ones the migrations own).
    pub schemas: Vec<String>,
    pub pg_dump_version: String,
    pub created_at: DateTime<Utc>,
    /// Wall time of pg_dump plus verification, in milliseconds.
    pub duration_ms: u64,
}

impl BackupRecord {
    /// The dump's file name in its location.
    pub fn file_name(&self) -> String {
        format!("{}.dump", self.name)
    }
}

/// The most of a tool's stdout read (`pg_restore --list` of a database of
/// a million objects is about 100 MiB).
const MAX_TOOL_STDOUT_BYTES: usize = 256 << 20;

/// The end of a tool's stderr kept for the error message.
const KEPT_STDERR_BYTES: usize = 16 << 10;

/// Finds and runs the PostgreSQL client tools.
#[derive(Debug, Clone, Default)]
pub struct PgTools {
    /// Directory of `pg_dump` and `pg_restore`; `None` uses `PATH`.
    pub bin_dir: Option<PathBuf>,
}

impl PgTools {
    fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// A command for `tool` connected to `db` through libpq's environment.
    /// Inherited `PG*` variables are cleared so only `DATABASE_URL` decides
    /// where it connects.
    pub fn command(&self, tool: &str, db: Option<&DatabaseUrl>) -> Command {
        let mut cmd = Command::new(self.program(tool));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(&key);
            }
        }
        if let Some(db) = db {
            cmd.envs(db.libpq_env());
        }
        cmd.arg("--no-password")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs a command to completion; on failure, the error carries its
    /// stderr with the password redacted.
    pub async fn run(&self, cmd: Command, what: &str, db: Option<&DatabaseUrl>) -> Result<String> {
        self.run_at_most(cmd, what, db, MAX_TOOL_STDOUT_BYTES).await
    }

    /// [`run`](Self::run), its stdout refused past `limit` bytes.
    async fn run_at_most(
        &self,
        mut cmd: Command,
        what: &str,
        db: Option<&DatabaseUrl>,
        limit: usize,
    ) -> Result<String> {
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "could not start {what}; install the PostgreSQL client tools (postgresql-client) matching the server"
            )
        })?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        let (stdout, stderr, status) = tokio::try_join!(
            async {
                child_output::whole(stdout, limit).await?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "{what} printed more than {limit} bytes, more than the tool reads"
                    )
                })
            },
            async { Ok(child_output::tail(stderr, KEPT_STDERR_BYTES).await?) },
            async { Ok(child.wait().await?) },
        )
        .with_context(|| format!("running {what}"))?;
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr = match db {
            Some(db) => db.redact(stderr.trim()),
            None => stderr.trim().to_owned(),
        };
        if !status.success() {
            anyhow::bail!("{what} failed ({status}): {stderr}");
        }
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }

    /// `pg_dump --version`, e.g. `pg_dump (PostgreSQL) 15.20`: read as
    /// every tool's output is, with a bound, and waited for
    /// [`VERSION_WAIT`] at most, so that a `pg_dump` on `PATH` that is not
    /// PostgreSQL's (a wrapper that waits, one that prints without end)
    /// cannot hold the backup before it starts.
    pub async fn pg_dump_version(&self) -> Result<String> {
        self.pg_dump_version_within(VERSION_WAIT).await
    }

    async fn pg_dump_version_within(&self, wait: std::time::Duration) -> Result<String> {
        let mut cmd = Command::new(self.program("pg_dump"));
        cmd.arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let what = "pg_dump --version";
        // On the deadline the run is dropped, and the child killed with it.
        let out = tokio::time::timeout(wait, self.run_at_most(cmd, what, None, MAX_VERSION_BYTES))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{what} did not end within {}; check that the pg_dump first on PATH is PostgreSQL's (postgresql-client)",
                    humantime::format_duration(wait)
                )
            })??;
        Ok(out.trim().to_owned())
    }
}

/// The longest `pg_dump --version` is waited for: it answers at once.
const VERSION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The most of `pg_dump --version`'s output read: one short line.
const MAX_VERSION_BYTES: usize = 4 << 10;

/// What [`take`] needs to know.
pub struct BackupRequest<'a> {
    pub db: &'a DatabaseUrl,
    pub store: &'a BackupStore,
    pub tools: &'a PgTools,
    pub deployment_id: &'a str,
    pub reason: BackupReason,
    pub schema_version: Option<i64>,
    pub schemas: &'a [String],
    /// Passed to `pg_dump --lock-wait-timeout`: a dump that cannot get its
    /// share lock on a table quickly fails instead of queueing traffic.
    pub lock_timeout: std::time::Duration,
}

/// Dumps the database, verifies the dump, stores it and its record.
/// Any failure is a [`DbError::BackupFailed`]: the caller must not go on.
pub async fn take(req: BackupRequest<'_>) -> Result<BackupRecord> {
    take_inner(&req).await.map_err(|e| {
        let reason = format!("{e:#}");
        anyhow::Error::new(DbError::BackupFailed {
            reason: req.db.redact(&reason),
        })
    })
}

async fn take_inner(req: &BackupRequest<'_>) -> Result<BackupRecord> {
    let started = std::time::Instant::now();
    let name = format!("{}.{}", req.deployment_id, req.reason.as_str());
    let file_name = format!("{name}.dump");
    let staged = req.store.stage(&file_name)?;

    let mut dump = req.tools.command("pg_dump", Some(req.db));
    dump.arg("--format=custom")
        .arg(format!("--file={}", staged.path().display()));
    if !req.lock_timeout.is_zero() {
        dump.arg(format!(
            "--lock-wait-timeout={}",
            req.lock_timeout.as_millis()
        ));
    }
    for schema in req.schemas {
        dump.arg(format!("--schema={schema}"));
    }
    req.tools
        .run(dump, "pg_dump", Some(req.db))
        .await
        .with_context(|| format!("could not dump {}", req.db.target()))?;

    tracing::debug!(elapsed = ?started.elapsed(), "pg_dump done");
    verify_file(req.tools, staged.path()).await?;
    tracing::debug!(elapsed = ?started.elapsed(), "dump verified");
    let (size, sha256) = file_digest(staged.path()).await?;
    tracing::debug!(elapsed = ?started.elapsed(), "dump hashed");
    let stored_size = req.store.commit(staged, &file_name).await?;
    tracing::debug!(elapsed = ?started.elapsed(), "dump stored");
    if stored_size != size {
        anyhow::bail!(
            "{} holds {stored_size} bytes but pg_dump wrote {size}",
            req.store.location_of(&file_name)
        );
    }
    let record = BackupRecord {
        name,
        location: req.store.location_of(&file_name),
        deployment_id: req.deployment_id.to_owned(),
        reason: req.reason,
        size_bytes: size,
        sha256,
        verified: true,
        schema_version: req.schema_version,
        database: req.db.target(),
        schemas: req.schemas.to_vec(),
        pg_dump_version: req.tools.pg_dump_version().await.unwrap_or_else(|e| {
            tracing::warn!("the backup's record names no pg_dump version: {e:#}");
            String::new()
        }),
        created_at: Utc::now(),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    req.store.put_record(&record).await?;
    tracing::info!(
        location = %record.location,
        size_bytes = record.size_bytes,
        sha256 = %record.sha256,
        "backup taken and verified"
    );
    Ok(record)
}

/// Checks that a dump is whole: its table of contents reads, and its last
/// data block, which `pg_dump` writes last, reads to its end.
///
/// `pg_dump -Fc` to a file writes the table of contents, then each table's
/// data in table-of-contents order, then seeks back to fill in the data
/// offsets. A dump cut short therefore always loses its last data block,
/// and `pg_restore` finds that block through its recorded offset without
/// decompressing the others: the check costs milliseconds, not a second
/// pass over the data. Damage after the fact is caught by the SHA-256.
pub async fn verify_file(tools: &PgTools, path: &Path) -> Result<()> {
    let mut list = tools.command("pg_restore", None);
    list.arg("--list").arg(path);
    let toc = tools
        .run(list, "pg_restore --list", None)
        .await
        .with_context(|| {
            format!(
                "the dump {} has no readable table of contents",
                path.display()
            )
        })?;
    let Some(last) = last_data_entry(&toc) else {
        return Ok(());
    };
    let mut entry = tempfile::NamedTempFile::new()?;
    std::io::Write::write_all(&mut entry, format!("{last}\n").as_bytes())?;
    let mut read = tools.command("pg_restore", None);
    read.arg("--file=/dev/null")
        .arg(format!("--use-list={}", entry.path().display()))
        .arg(path);
    tools
        .run(read, "pg_restore", None)
        .await
        .with_context(|| format!("the dump {} cannot be read to its end", path.display()))?;
    Ok(())
}

/// The last entry of a `pg_restore --list` whose data is stored in the
/// archive (table data or large objects), e.g.
/// `3350; 0 24760 TABLE DATA public c postgres`.
fn last_data_entry(toc: &str) -> Option<&str> {
    toc.lines().rev().find(|line| {
        !line.starts_with(';')
            && [" TABLE DATA ", " BLOBS ", " BLOB "]
                .iter()
                .any(|kind| line.contains(kind))
    })
}

/// Size and hex SHA-256 of a file.
pub async fn file_digest(path: &Path) -> Result<(u64, String)> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("could not open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Checks a fetched dump against its record before anything uses it.
pub async fn check_against_record(path: &Path, record: &BackupRecord) -> Result<()> {
    let (size, sha256) = file_digest(path).await?;
    if size != record.size_bytes || sha256 != record.sha256 {
        return Err(DbError::BackupCorrupt {
            location: record.location.clone(),
            reason: format!(
                "it holds {size} bytes with SHA-256 {sha256}, but {} bytes with SHA-256 {} were recorded when it was taken",
                record.size_bytes, record.sha256
            ),
        }
        .into());
    }
    Ok(())
}

/// A record as a test needs one: `name`, stored at `location`.
#[cfg(test)]
pub(crate) fn sample_record(name: &str, location: &str) -> BackupRecord {
    BackupRecord {
        name: name.into(),
        location: location.into(),
        deployment_id: "production-20250101-120000".into(),
        reason: BackupReason::PreMigrate,
        size_bytes: 1,
        sha256: String::new(),
        verified: true,
        schema_version: Some(1),
        database: "db:5432/maily as deployer".into(),
        schemas: vec!["public".into()],
        pg_dump_version: "15".into(),
        created_at: chrono::Utc::now(),
        duration_ms: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_digest_is_the_sha256_of_the_file() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), b"abc").unwrap();
        let (size, sha) = file_digest(file.path()).await.unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_last_data_entry_is_the_last_table_data_line() {
        let toc = ";\n; Archive created at 2025-06-01\n;\n\
                   5; 2615 2200 SCHEMA - public pg_database_owner\n\
                   3348; 0 24750 TABLE DATA public a postgres\n\
                   3350; 0 24760 TABLE DATA public c postgres\n\
                   3352; 0 0 SEQUENCE SET public a_id_seq postgres\n\
                   3197; 2606 16394 CONSTRAINT public a a_pkey postgres\n";
        assert_eq!(
            last_data_entry(toc),
            Some("3350; 0 24760 TABLE DATA public c postgres")
        );
        assert_eq!(last_data_entry("5; 2615 2200 SCHEMA - public x\n"), None);
    }

    /// Tools whose `pg_dump` is the shell script `body`.
    fn tools_with_pg_dump(body: &str) -> (tempfile::TempDir, PgTools) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg_dump");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = PgTools {
            bin_dir: Some(dir.path().to_path_buf()),
        };
        (dir, tools)
    }

    #[tokio::test]
    async fn a_pg_dump_that_prints_without_end_or_never_ends_is_stopped() {
        let (_d, tools) = tools_with_pg_dump("echo 'pg_dump (PostgreSQL) 15.20'");
        assert_eq!(
            tools.pg_dump_version().await.unwrap(),
            "pg_dump (PostgreSQL) 15.20"
        );
        let (_d, tools) = tools_with_pg_dump("exec yes");
        let err = tools.pg_dump_version().await.unwrap_err();
        assert!(
            format!("{err:#}").contains("pg_dump --version printed more than 4096 bytes"),
            "{err:#}"
        );
        let (_d, tools) = tools_with_pg_dump("exec sleep 600");
        let began = std::time::Instant::now();
        let err = tools
            .pg_dump_version_within(std::time::Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(began.elapsed() < std::time::Duration::from_secs(10));
        assert!(
            err.to_string()
                .starts_with("pg_dump --version did not end within 500ms"),
            "{err}"
        );
    }

    #[test]
    fn backup_names_say_which_deployment_took_them_and_why() {
        assert_eq!(BackupReason::PreMigrate.as_str(), "pre-migrate");
        let json = serde_json::to_string(&BackupReason::PreRestore).unwrap();
        assert_eq!(json, "\"pre-restore\"");
    }
}
