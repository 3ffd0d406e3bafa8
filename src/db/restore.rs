//! Putting a backup back.
//!
//! The schemas the backup holds are replaced whole: each is renamed out of
//! the way, recreated empty with the same owner and initial privileges, and
//! filled by `pg_restore`. A plain `pg_restore --clean` would drop only the
//! objects the backup knows, leaving behind whatever a half-run migration
//! created; the rename leaves nothing behind, and it keeps the old schema
//! until the restore succeeded, so a failed restore is undone by renaming it
//! back. `pg_restore --jobs` then loads tables and builds indexes in
//! parallel, which `--single-transaction` would forbid.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use sqlx::{AssertSqlSafe, Executor, PgConnection, Row};

use super::backup::{BackupRecord, PgTools};
use super::connection::DatabaseUrl;
use super::error::DbError;

/// What a restore would take with the schemas it replaces: extensions
/// installed in them (a dump of one schema holds no `CREATE EXTENSION`, so
/// their types and functions would be gone, and the drop of the old schema
/// would drop them), and views and foreign keys elsewhere that point into
/// them (dropped with it by `CASCADE`). At most 50, named.
pub async fn obstacles(conn: &mut PgConnection, schemas: &[String]) -> Result<Vec<String>> {
    let rows = sqlx::query_scalar::<_, String>(
        r#"
        SELECT format('extension %s (in schema %s)', e.extname, n.nspname)
          FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE n.nspname = ANY($1)
        UNION ALL
        SELECT DISTINCT format('%s %I.%I (reads %I.%I)',
                 CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END,
                 vn.nspname, v.relname, tn.nspname, t.relname)
          FROM pg_depend d
          JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
          JOIN pg_class v ON v.oid = r.ev_class
          JOIN pg_namespace vn ON vn.oid = v.relnamespace
          JOIN pg_class t ON d.refclassid = 'pg_class'::regclass AND t.oid = d.refobjid
          JOIN pg_namespace tn ON tn.oid = t.relnamespace
         WHERE tn.nspname = ANY($1) AND NOT (vn.nspname = ANY($1)) AND v.oid <> t.oid
        UNION ALL
        SELECT format('foreign key %I on %I.%I (references %I.%I)',
                 c.conname, sn.nspname, s.relname, tn.nspname, t.relname)
          FROM pg_constraint c
          JOIN pg_class s ON s.oid = c.conrelid
          JOIN pg_namespace sn ON sn.oid = s.relnamespace
          JOIN pg_class t ON t.oid = c.confrelid
          JOIN pg_namespace tn ON tn.oid = t.relnamespace
         WHERE c.contype = 'f' AND tn.nspname = ANY($1) AND NOT (sn.nspname = ANY($1))
         LIMIT 50
        "#,
    )
    .bind(schemas)
    .fetch_all(&mut *conn)
    .await
    .context("looking for what a restore would take with the schemas it replaces")?;
    Ok(rows)
}

/// What [`restore_file`] needs to know.
pub struct RestoreRequest<'a> {
    pub db: &'a DatabaseUrl,
    pub tools: &'a PgTools,
    pub record: &'a BackupRecord,
    /// A local copy of the dump, already checked against the record.
    pub dump: &'a Path,
    /// Parallel `pg_restore` workers.
    pub jobs: usize,
}

/// Replaces the backup's schemas in the database with the backup's content.
/// `conn` is the caller's session (which holds the migration lock).
pub async fn restore_file(conn: &mut PgConnection, req: RestoreRequest<'_>) -> Result<()> {
    let started = std::time::Instant::now();
    let in_the_way = obstacles(conn, &req.record.schemas).await?;
    if !in_the_way.is_empty() {
        return Err(DbError::RestoreBlocked {
            location: req.record.location.clone(),
            schemas: req.record.schemas.join(", "),
            objects: in_the_way,
        }
        .into());
    }
    let list = toc_without_schema_entries(req.tools, req.dump, &req.record.schemas).await?;
    let suffix = format!("_replaced_{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));

    let mut aside = SetAside {
        db: req.db.clone(),
        moved: Vec::new(),
        suffix: suffix.clone(),
        app: restore_app_name(),
        ended: false,
    };
    for schema in &req.record.schemas {
        if let Err(e) = set_aside(conn, schema, &suffix).await {
            let stuck = aside.put_back(conn).await;
            return Err(restore_failed(req.record, e, &stuck));
        }
        aside.moved.push(schema.clone());
    }

    let mut cmd = req.tools.command("pg_restore", Some(req.db));
    // Its sessions are found by this name if the restore is stopped.
    cmd.env("PGAPPNAME", &aside.app);
    cmd.arg("--exit-on-error")
        .arg(format!("--use-list={}", list.path().display()))
        .arg(format!("--jobs={}", req.jobs.max(1)))
        .arg(format!("--dbname={}", req.db.database()))
        .arg(req.dump);
    tracing::debug!(elapsed = ?started.elapsed(), "schemas set aside");
    if let Err(e) = req.tools.run(cmd, "pg_restore", Some(req.db)).await {
        let stuck = aside.put_back(conn).await;
        return Err(restore_failed(req.record, e, &stuck));
    }
    tracing::debug!(elapsed = ?started.elapsed(), "pg_restore done");
    aside.ended = true;
    let moved = std::mem::take(&mut aside.moved);

    // The restore is done once pg_restore succeeded; dropping the old copy
    // only frees space, so a session still holding a lock on one of its
    // tables costs a warning, not a failed restore.
    for schema in &moved {
        let old = quote_ident(&format!("{schema}{suffix}"));
        if let Err(e) = conn
            .execute(AssertSqlSafe(format!("DROP SCHEMA {old} CASCADE")))
            .await
        {
            tracing::warn!(
                "the restore succeeded but the replaced schema {old} could not be dropped ({e}); \
                 drop it by hand once no session uses it"
            );
        }
    }
    tracing::info!(location = %req.record.location, elapsed = ?started.elapsed(), "backup restored");
    Ok(())
}

/// A restore that failed, saying where the database stands: as before it
/// when every set-aside schema went back, and otherwise which did not and
/// how to put them back by hand.
fn restore_failed(record: &BackupRecord, e: anyhow::Error, stuck: &[String]) -> anyhow::Error {
    let after = if stuck.is_empty() {
        "the database was left as it was before the restore".to_string()
    } else {
        format!(
            "putting the database back failed too, so it is NOT as before: {}",
            stuck.join("; ")
        )
    };
    DbError::RestoreFailed {
        location: record.location.clone(),
        reason: format!("{e:#}; {after}"),
    }
    .into()
}

/// Renames `schema` away and creates it again, empty, with the owner and
/// the initial privileges (`pg_init_privs`) it had. The dump's own ACL
/// entry is written as changes to those initial privileges, as for a
/// fresh database, so this is what makes the restored grants exact.
async fn set_aside(conn: &mut PgConnection, schema: &str, suffix: &str) -> Result<()> {
    let row = sqlx::query(
        "SELECT n.oid::bigint AS oid, pg_get_userbyid(n.nspowner) AS owner
           FROM pg_namespace n WHERE n.nspname = $1",
    )
    .bind(schema)
    .fetch_optional(&mut *conn)
    .await?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    if let Some(row) = row {
        let oid: i64 = row.get("oid");
        let owner: String = row.get("owner");
        let grants: Vec<(String, String)> = sqlx::query_as(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                    a.privilege_type
               FROM pg_init_privs p, aclexplode(p.initprivs) a
              WHERE p.objoid = $1::oid AND p.classoid = 'pg_namespace'::regclass
                AND a.grantee <> (SELECT nspowner FROM pg_namespace WHERE oid = $1::oid)",
        )
        .bind(oid)
        .fetch_all(&mut *tx)
        .await?;
        let quoted = quote_ident(schema);
        let aside = quote_ident(&format!("{schema}{suffix}"));
        tx.execute(AssertSqlSafe(format!(
            "ALTER SCHEMA {quoted} RENAME TO {aside}"
        )))
        .await
        .with_context(|| format!("could not rename schema {schema} out of the way"))?;
        tx.execute(AssertSqlSafe(format!(
            "CREATE SCHEMA {quoted} AUTHORIZATION {}",
            quote_ident(&owner)
        )))
        .await?;
        for (grantee, privilege) in grants {
            tx.execute(AssertSqlSafe(format!(
                "GRANT {privilege} ON SCHEMA {quoted} TO {grantee}"
            )))
            .await?;
        }
    } else {
        tx.execute(AssertSqlSafe(format!(
            "CREATE SCHEMA {}",
            quote_ident(schema)
        )))
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The schemas a restore has set aside, until it ends. A restore stopped
/// mid-way (Ctrl-C, the lock lost: its future is dropped, and `pg_restore`
/// is killed with it) would otherwise leave the application on a half
/// filled schema with its data renamed out of the way: when dropped before
/// the end, this puts them back on a session of its own, and the runner
/// waits for that before it releases the lock.
struct SetAside {
    db: DatabaseUrl,
    moved: Vec<String>,
    suffix: String,
    /// `pg_restore`'s `application_name`, to end its sessions.
    app: String,
    ended: bool,
}

impl SetAside {
    /// Undoes [`set_aside`] for every schema moved so far, on the
    /// restore's own session. Best effort: it runs while another error is
    /// being reported, and returns what could not be put back, each with
    /// how to do it by hand.
    async fn put_back(&mut self, conn: &mut PgConnection) -> Vec<String> {
        self.ended = true;
        let mut stuck = Vec::new();
        for schema in &self.moved {
            if let Err(e) = rename_back(conn, schema, &self.suffix).await {
                tracing::error!("{e:#}");
                stuck.push(format!("{e:#}"));
            }
        }
        stuck
    }
}

impl Drop for SetAside {
    fn drop(&mut self) {
        if self.ended || self.moved.is_empty() {
            return;
        }
        let (db, moved, suffix, app) = (
            self.db.clone(),
            std::mem::take(&mut self.moved),
            self.suffix.clone(),
            self.app.clone(),
        );
        tracing::warn!(
            "the restore was stopped mid-way; putting schema{} {} back as {} were",
            if moved.len() == 1 { "" } else { "s" },
            moved.join(", "),
            if moved.len() == 1 { "it" } else { "they" },
        );
        crate::interrupt::put_back_later("a restore", async move {
            match put_back_stopped(&db, &moved, &suffix, &app).await {
                Ok(()) => tracing::warn!(
                    "the stopped restore was undone: {} as before it",
                    moved.join(", ")
                ),
                Err(e) => tracing::error!(
                    "{}",
                    db.redact(&format!(
                        "could not put back what the stopped restore set aside: {e:#}; \
                         rename each {{schema}}{suffix} back to its name by hand"
                    ))
                ),
            }
        });
    }
}

/// A name no other restore has, on this machine or another (the process
/// id and a count in it, then the time), within PostgreSQL's 63 bytes.
fn restore_app_name() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "maily-deploy restore {}-{n}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    )
}

/// Ends the killed `pg_restore`'s sessions (a backend in the middle of
/// building an index would hold its locks until the statement ends), then
/// puts the schemas back.
async fn put_back_stopped(
    db: &DatabaseUrl,
    moved: &[String],
    suffix: &str,
    app: &str,
) -> Result<()> {
    let mut conn = db.connect().await?;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = $1 AND datname = current_database()
            AND pid <> pg_backend_pid()",
    )
    .bind(app)
    .execute(&mut conn)
    .await
    .context("ending the stopped pg_restore's sessions")?;
    for schema in moved {
        rename_back(&mut conn, schema, suffix).await?;
    }
    Ok(())
}

/// Drops what the restore wrote into `schema` and renames the set-aside
/// copy back, in one transaction.
async fn rename_back(conn: &mut PgConnection, schema: &str, suffix: &str) -> Result<()> {
    let quoted = quote_ident(schema);
    let aside = quote_ident(&format!("{schema}{suffix}"));
    // A transaction of the driver's: a failure rolls it back and leaves
    // the session usable for the next schema. The drop waits for the
    // application's locks, longer than a migration's lock timeout (which
    // the session may still carry) but not for ever.
    let put_back = async {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        tx.execute("SET LOCAL lock_timeout = '60s'").await?;
        tx.execute("SET LOCAL statement_timeout = 0").await?;
        tx.execute(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {quoted} CASCADE"
        )))
        .await?;
        tx.execute(AssertSqlSafe(format!(
            "ALTER SCHEMA {aside} RENAME TO {quoted}"
        )))
        .await?;
        tx.commit().await?;
        anyhow::Ok(())
    };
    put_back.await.with_context(|| {
        format!(
            "schema {schema} could not be put back: the database as it was is in schema {aside}; put it back by hand with BEGIN; DROP SCHEMA {quoted} CASCADE; ALTER SCHEMA {aside} RENAME TO {quoted}; COMMIT"
        )
    })
}

/// The dump's table of contents without the `CREATE SCHEMA` entries of the
/// schemas being replaced (they were just recreated), as a `--use-list` file.
async fn toc_without_schema_entries(
    tools: &PgTools,
    dump: &Path,
    schemas: &[String],
) -> Result<tempfile::NamedTempFile> {
    let mut cmd = tools.command("pg_restore", None);
    cmd.arg("--list").arg(dump);
    let toc = tools
        .run(cmd, "pg_restore --list", None)
        .await
        .with_context(|| {
            format!(
                "the dump {} has no readable table of contents",
                dump.display()
            )
        })?;
    let mut file = tempfile::NamedTempFile::new()?;
    for line in toc.lines() {
        if !is_schema_entry(line, schemas) {
            writeln!(file, "{line}")?;
        }
    }
    file.flush()?;
    Ok(file)
}

/// Whether a `pg_restore --list` line creates one of `schemas`, e.g.
/// `5; 2615 2200 SCHEMA - public pg_database_owner`.
fn is_schema_entry(line: &str, schemas: &[String]) -> bool {
    let Some((_, rest)) = line.split_once("; ") else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    matches!(fields.as_slice(), [_, _, "SCHEMA", "-", name, ..] if schemas.iter().any(|s| s == name))
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_restore_says_whether_the_database_is_as_before() {
        let record = super::super::backup::sample_record(
            "production-20250101-120000.pre-migrate",
            "file:///backups/production-20250101-120000.pre-migrate.dump",
        );
        let put_back = restore_failed(&record, anyhow::anyhow!("pg_restore exited 1"), &[]);
        assert!(
            put_back
                .to_string()
                .ends_with("the database was left as it was before the restore"),
            "{put_back}"
        );
        let stuck = vec!["schema public could not be put back: the database as it was is in schema public_replaced_20250101120000; put it back by hand with ...".to_string()];
        let not = restore_failed(&record, anyhow::anyhow!("pg_restore exited 1"), &stuck);
        let text = not.to_string();
        assert!(text.contains("it is NOT as before"), "{text}");
        assert!(text.contains("public_replaced_20250101120000"), "{text}");
        assert!(!text.contains("left as it was"), "{text}");
    }

    #[test]
    fn only_the_create_schema_entries_of_replaced_schemas_are_left_out() {
        let schemas = vec!["public".to_owned()];
        assert!(is_schema_entry(
            "5; 2615 2200 SCHEMA - public pg_database_owner",
            &schemas
        ));
        assert!(!is_schema_entry(
            "3347; 0 0 COMMENT - SCHEMA public pg_database_owner",
            &schemas
        ));
        assert!(!is_schema_entry(
            "3348; 0 0 ACL - SCHEMA public pg_database_owner",
            &schemas
        ));
        assert!(!is_schema_entry(
            "214; 1259 16388 TABLE public a postgres",
            &schemas
        ));
        assert!(!is_schema_entry(
            "6; 2615 2201 SCHEMA - audit postgres",
            &schemas
        ));
        assert!(!is_schema_entry(
            ";     Dumped from database version 15.20",
            &schemas
        ));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("public"), "\"public\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
