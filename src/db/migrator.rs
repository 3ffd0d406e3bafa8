//! Applying and reverting migrations under sqlx's migration lock.
//!
//! sqlx's `Migrate` implementation for PostgreSQL does the per-migration
//! work: the session advisory lock keyed on the database name (the same
//! lock `sqlx migrate run` takes, so the two exclude each other), the
//! `_sqlx_migrations` bookkeeping, and one transaction per migration unless
//! the file starts with `-- no-transaction`. This module drives it one
//! migration at a time so that on a failure it knows exactly what had
//! committed, which [`recovery_for`] turns into what to do.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migrate, MigrateError, Migration};
use sqlx::{Executor, PgConnection};
use tokio_util::sync::CancellationToken;

use super::connection::DatabaseUrl;
use super::error::DbError;
use super::migrations::{AppliedRow, MigrationInfo};
use super::timeouts;

/// The bookkeeping table, as sqlx names it.
pub const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// What to do after a migration failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing of this run committed: the failing migration's transaction
    /// was rolled back and the database is as it was.
    NothingCommitted,
    /// Something committed (an earlier migration of this run, the failing
    /// one before its error, or part of a `-- no-transaction` migration):
    /// restore the backup taken before.
    RestoreBackup,
    /// Nothing else committed and whether the failing migration did could
    /// not be read back (why): a restore would put back a backup over rows
    /// written since, perhaps for nothing, so it is left to a person.
    Unknown(String),
}

/// What a failed step left behind, read back from `_sqlx_migrations`: an
/// error does not say whether the transaction committed. The answer to
/// `COMMIT` can be lost with the session, and sqlx writes the step's
/// execution time in a statement of its own after the commit, which can
/// fail or be cancelled with the step's work already in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailedStep {
    /// Its transaction rolled back: as if it had not begun.
    RolledBack,
    /// Its transaction committed before the error.
    Committed,
    /// A `-- no-transaction` step: some of its statements may have
    /// committed, whatever the bookkeeping says.
    WithoutTransaction,
    /// It could not be read back (why).
    Unknown(String),
}

/// Decides the recovery from what had committed when a migration failed.
/// Earlier migrations of the same run count: the run is the unit the
/// backup was taken for, and a half-applied release is not a state any
/// release's code was tested against.
pub fn recovery_for(committed_before: usize, failed: &FailedStep) -> Recovery {
    match failed {
        _ if committed_before > 0 => Recovery::RestoreBackup,
        FailedStep::RolledBack => Recovery::NothingCommitted,
        FailedStep::Committed | FailedStep::WithoutTransaction => Recovery::RestoreBackup,
        FailedStep::Unknown(why) => Recovery::Unknown(why.clone()),
    }
}

/// A migration applied or reverted by a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    pub version: i64,
    pub name: String,
    pub duration_ms: u64,
}

/// What a run's steps did: every one, or those before it was told to stop.
#[derive(Debug, Default)]
pub struct StepsDone {
    pub done: Vec<StepReport>,
    /// Told to stop (a signal, the deploy lock lost): the steps after
    /// `done` were not begun, or were begun in a transaction and rolled
    /// back.
    pub stopped: bool,
}

/// A run's steps up to a failure.
#[derive(Debug)]
pub struct StepFailure {
    pub done: Vec<StepReport>,
    pub failed: MigrationInfo,
    /// What the failed step left behind.
    pub left: FailedStep,
    pub cause: String,
}

/// Takes the migration lock, waiting at most `wait` for another run, and
/// makes sure `_sqlx_migrations` exists.
pub async fn lock(conn: &mut PgConnection, wait: Duration) -> Result<()> {
    // The wait for another run is bounded by `wait`, not by the session's
    // statement or lock timeout.
    conn.execute(timeouts::NO_LIMITS_SQL).await?;
    match tokio::time::timeout(wait, conn.lock()).await {
        Ok(result) => result.context("could not take the migration lock")?,
        Err(_) => {
            return Err(DbError::LockWaitTimeout {
                waited_secs: wait.as_secs(),
            }
            .into());
        }
    }
    // Created under the lock, as sqlx does, so two first runs do not race.
    conn.ensure_migrations_table(MIGRATIONS_TABLE)
        .await
        .context("could not create _sqlx_migrations")
}

/// [`lock`], unless `stop` comes first: then the session's wait is
/// cancelled on the server and `false` comes back, the session usable.
/// Merely dropping the wait would leave the session queued for the lock,
/// and its next statement (or its close) waiting behind it until the other
/// run lets go, minutes later.
pub async fn lock_unless_stopped(
    conn: &mut PgConnection,
    db: &DatabaseUrl,
    wait: Duration,
    stop: &CancellationToken,
) -> Result<bool> {
    if stop.is_cancelled() {
        return Ok(false);
    }
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await?;
    let taken = {
        let locking = lock(conn, wait);
        tokio::pin!(locking);
        tokio::select! {
            biased;
            r = &mut locking => return r.map(|()| true),
            () = stop.cancelled() => {}
        }
        cancel_backend(db, pid).await;
        // The wait ends cancelled; or the lock came just before the cancel.
        locking.await.is_ok()
    };
    if taken {
        unlock(conn).await;
    }
    Ok(false)
}

/// Releases the migration lock. Best effort: closing the session releases
/// it too.
pub async fn unlock(conn: &mut PgConnection) {
    if let Err(e) = conn.unlock().await {
        tracing::warn!("could not release the migration lock: {e}; it goes with the session");
    }
}

/// The rows of `_sqlx_migrations`, or none when the table does not exist
/// (a database never migrated). Reads only: `status` must not create it.
pub async fn applied_rows(conn: &mut PgConnection) -> Result<Vec<AppliedRow>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(MIGRATIONS_TABLE)
        .fetch_one(&mut *conn)
        .await
        .context("could not look for _sqlx_migrations")?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, String, Vec<u8>, bool)> = sqlx::query_as(
        "SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await
    .context("could not read _sqlx_migrations")?;
    Ok(rows
        .into_iter()
        .map(|(version, description, checksum, success)| AppliedRow {
            version,
            description,
            checksum,
            success,
        })
        .collect())
}

/// The session limits for migration statements.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
}

/// Which way a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// Runs `steps` in order (up: apply; down: revert), each in its own
/// transaction unless marked otherwise, stopping at the first failure.
///
/// `stop` stops them at a safe point: before the next step, or in the
/// middle of a step that runs in a transaction, which is cancelled on the
/// server (`pg_cancel_backend` from a second session, so the statement
/// does not run on unseen) and rolls back. A `-- no-transaction` step is
/// never cut: half of one is a state no release knows, so it runs to its
/// end first.
pub async fn run_steps(
    conn: &mut PgConnection,
    db: &DatabaseUrl,
    steps: &[&Migration],
    direction: Direction,
    limits: Limits,
    stop: &CancellationToken,
) -> std::result::Result<StepsDone, StepFailure> {
    let mut done = Vec::new();
    let first = || {
        steps
            .first()
            .map(|m| MigrationInfo::of(m))
            .unwrap_or(MigrationInfo {
                version: 0,
                name: String::new(),
                no_transaction: false,
            })
    };
    if let Err(e) = conn
        .execute(sqlx::AssertSqlSafe(timeouts::session_limits_sql(
            limits.statement_timeout,
            limits.lock_timeout,
        )))
        .await
    {
        return Err(StepFailure {
            done,
            failed: first(),
            left: FailedStep::RolledBack,
            cause: format!("could not set the session limits: {e}"),
        });
    }
    let pid: i32 = match sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
    {
        Ok(pid) => pid,
        Err(e) => {
            return Err(StepFailure {
                done,
                failed: first(),
                left: FailedStep::RolledBack,
                cause: format!("could not read the session's process id: {e}"),
            });
        }
    };
    let mut stopped = false;
    for migration in steps {
        if stop.is_cancelled() {
            stopped = true;
            break;
        }
        let started = Instant::now();
        tracing::info!(version = migration.version, name = %migration.description, ?direction, "running migration");
        let (result, cancelled) = {
            let step = async {
                match direction {
                    Direction::Up => conn.apply(MIGRATIONS_TABLE, migration).await,
                    Direction::Down => conn.revert(MIGRATIONS_TABLE, migration).await,
                }
            };
            tokio::pin!(step);
            if migration.no_tx {
                (step.await, false)
            } else {
                tokio::select! {
                    biased;
                    r = &mut step => (r, false),
                    () = stop.cancelled() => {
                        cancel_backend(db, pid).await;
                        ((&mut step).await, true)
                    }
                }
            }
        };
        let report = || StepReport {
            version: migration.version,
            name: migration.description.to_string(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        let e = match result {
            Ok(_) => {
                done.push(report());
                continue;
            }
            Err(e) => e,
        };
        let left = if migration.no_tx {
            FailedStep::WithoutTransaction
        } else {
            match landed(conn, db, pid, migration.version, direction).await {
                Ok(true) => FailedStep::Committed,
                Ok(false) => FailedStep::RolledBack,
                Err(why) => FailedStep::Unknown(why),
            }
        };
        if cancelled && is_query_cancelled(&e) {
            match left {
                FailedStep::RolledBack => tracing::warn!(
                    version = migration.version,
                    "migration cancelled mid-way and rolled back: the run was told to stop"
                ),
                FailedStep::Committed => {
                    // The stop came between the commit and sqlx's
                    // bookkeeping update: the step is done.
                    tracing::warn!(
                        version = migration.version,
                        "the stop came after the migration committed: it stays applied"
                    );
                    done.push(report());
                }
                FailedStep::Unknown(why) => tracing::warn!(
                    version = migration.version,
                    "the run was told to stop, and whether the migration committed could not be read back ({why}); `maily-deploy db status` shows it"
                ),
                FailedStep::WithoutTransaction => {}
            }
            stopped = true;
            break;
        }
        let mut cause = describe(&e, limits);
        if left == FailedStep::Committed {
            cause = format!("it committed, then {cause}");
        }
        return Err(StepFailure {
            done,
            failed: MigrationInfo::of(migration),
            left,
            cause,
        });
    }
    // Back to no limits: a restore or the caller may use the session next.
    let _ = conn.execute(timeouts::NO_LIMITS_SQL).await;
    Ok(StepsDone { done, stopped })
}

/// How long a session that failed may take to end on the server before
/// what it committed is read from another: until it has ended, a `COMMIT`
/// whose answer was lost may still be landing.
const ENDED_WAIT: Duration = Duration::from_secs(10);

/// Whether step `version` went in (`Up`: its row is in `_sqlx_migrations`;
/// `Down`: its row is gone), read on the step's own session when that
/// still answers (its transaction is over by then: sqlx rolls back a
/// dropped one before the next statement), else on a new one once the old
/// session `pid` has ended on the server. `Err`: why it cannot be told.
async fn landed(
    conn: &mut PgConnection,
    db: &DatabaseUrl,
    pid: i32,
    version: i64,
    direction: Direction,
) -> std::result::Result<bool, String> {
    const ROW: &str = "SELECT count(*) FROM _sqlx_migrations WHERE version = $1 AND success";
    let rows: i64 = match sqlx::query_scalar(ROW)
        .bind(version)
        .fetch_one(&mut *conn)
        .await
    {
        Ok(rows) => rows,
        Err(own) => {
            tracing::debug!("the step's session does not answer ({own}); reading from a new one");
            let read = async {
                let mut other = db.connect().await?;
                let deadline = Instant::now() + ENDED_WAIT;
                loop {
                    let open: bool = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                    )
                    .bind(pid)
                    .fetch_one(&mut other)
                    .await?;
                    if !open {
                        break;
                    }
                    if Instant::now() >= deadline {
                        anyhow::bail!(
                            "its session (process {pid}) was still open on the server after {}s",
                            ENDED_WAIT.as_secs()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let rows: i64 = sqlx::query_scalar(ROW)
                    .bind(version)
                    .fetch_one(&mut other)
                    .await?;
                let _ = sqlx::Connection::close(other).await;
                anyhow::Ok(rows)
            };
            read.await.map_err(|e| format!("{e:#}"))?
        }
    };
    Ok(match direction {
        Direction::Up => rows > 0,
        Direction::Down => rows == 0,
    })
}

/// Ask the server to cancel the statement session `pid` runs, from a
/// session of its own. Best effort: if it cannot, the step runs to its
/// end, which is safe too, only slower.
async fn cancel_backend(db: &DatabaseUrl, pid: i32) {
    let cancelled = async {
        let mut other = db.connect().await?;
        let ok: bool = sqlx::query_scalar("SELECT pg_cancel_backend($1)")
            .bind(pid)
            .fetch_one(&mut other)
            .await?;
        let _ = sqlx::Connection::close(other).await;
        anyhow::Ok(ok)
    }
    .await;
    match cancelled {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("the migration's statement could not be cancelled; it runs to its end")
        }
        Err(e) => tracing::warn!("cancelling the migration's statement: {e:#}; it runs to its end"),
    }
}

/// Whether a migration failed because its statement was cancelled
/// (`query_canceled`, SQLSTATE 57014).
fn is_query_cancelled(err: &MigrateError) -> bool {
    match err {
        MigrateError::ExecuteMigration(sqlx::Error::Database(db), _)
        | MigrateError::Execute(sqlx::Error::Database(db)) => db.code().as_deref() == Some("57014"),
        _ => false,
    }
}

/// The error PostgreSQL gave, with the timeout explained when it was one.
fn describe(err: &MigrateError, limits: Limits) -> String {
    let db_error = match err {
        MigrateError::ExecuteMigration(sqlx::Error::Database(db), _)
        | MigrateError::Execute(sqlx::Error::Database(db)) => Some(db),
        _ => None,
    };
    match db_error {
        Some(db) => {
            let code = db.code();
            let mut text = format!(
                "{} (SQLSTATE {})",
                db.message(),
                code.as_deref().unwrap_or("?")
            );
            if let Some(why) = timeouts::explain(
                code.as_deref(),
                limits.statement_timeout,
                limits.lock_timeout,
            ) {
                text = format!("{text}: {why}");
            }
            text
        }
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_first_transactional_migration_needs_no_restore() {
        assert_eq!(
            recovery_for(0, &FailedStep::RolledBack),
            Recovery::NothingCommitted
        );
    }

    #[test]
    fn a_failed_no_transaction_migration_is_restored_from_the_backup() {
        assert_eq!(
            recovery_for(0, &FailedStep::WithoutTransaction),
            Recovery::RestoreBackup
        );
    }

    #[test]
    fn a_first_migration_that_committed_before_its_error_is_restored_from_the_backup() {
        assert_eq!(
            recovery_for(0, &FailedStep::Committed),
            Recovery::RestoreBackup
        );
    }

    #[test]
    fn a_failure_after_earlier_migrations_committed_is_restored_from_the_backup() {
        for left in [
            FailedStep::RolledBack,
            FailedStep::Committed,
            FailedStep::Unknown("the server is gone".into()),
        ] {
            assert_eq!(recovery_for(2, &left), Recovery::RestoreBackup, "{left:?}");
        }
    }

    #[test]
    fn a_first_migration_not_known_to_have_committed_is_left_to_a_person() {
        assert_eq!(
            recovery_for(0, &FailedStep::Unknown("the server is gone".into())),
            Recovery::Unknown("the server is gone".into())
        );
    }
}
