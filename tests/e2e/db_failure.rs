//! Migrations that fail half-way, and backups that are not whole: the
//! database must end exactly as it was, checked row by row.

use std::os::unix::fs::PermissionsExt;

use maily_deploy::db::{self, DbError};

use crate::db_support::{TestDb, migrations_dir, repo_migration_count, seed};

/// A migrated database with some data in every table, and its settings.
async fn live_database(label: &str) -> (TestDb, db::MigrateSettings) {
    let test = TestDb::create(label).await;
    let settings = test.settings("production-20250601-120000");
    db::migrate(&settings).await.unwrap();
    seed(&test, 2_000).await;
    (test, settings)
}

fn dumps_in(test: &TestDb) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(test.backups.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dump"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_migration_failing_after_an_earlier_one_committed_is_undone_by_restoring_the_backup() {
    let (test, mut settings) = live_database("failafter").await;
    let before = test.state().await;
    let dir = migrations_dir(
        repo_migration_count(),
        &[
            (
                "20990101000001_contacts_score.up.sql",
                "ALTER TABLE contacts ADD COLUMN score integer;\n\
                 UPDATE contacts SET score = (attributes->>'score')::int;",
            ),
            (
                "20990101000002_broken_backfill.up.sql",
                "CREATE TABLE contact_scores (contact_id bigint PRIMARY KEY);\n\
                 INSERT INTO contact_scores SELECT id FROM contacts;\n\
                 UPDATE contacts SET score = score / (score - score);",
            ),
        ],
    );
    settings.migrations_dir = Some(dir.path().to_path_buf());
    settings.deployment_id = "production-20250602-120000".into();

    let err = db::migrate(&settings).await.unwrap_err();
    match DbError::find(&err) {
        Some(DbError::MigrationFailed {
            version,
            name,
            cause,
            restored,
            recovery,
            backup_location,
        }) => {
            assert_eq!(
                backup_location,
                &format!(
                    "file://{}/production-20250602-120000.pre-migrate.dump",
                    test.backups.path().display()
                )
            );
            assert_eq!(*version, 20990101000002);
            assert_eq!(name, "broken backfill");
            assert!(cause.contains("division by zero"), "{cause}");
            assert!(*restored, "{recovery}");
            assert!(
                recovery.contains("production-20250602-120000.pre-migrate.dump"),
                "{recovery}"
            );
        }
        other => panic!("expected MigrationFailed, got {other:?}: {err:#}"),
    }
    assert_eq!(test.state().await, before, "the database is not as it was");
    assert!(dumps_in(&test).contains(&"production-20250602-120000.pre-migrate.dump".to_owned()));
    // No schema set aside by the restore is left behind.
    assert_eq!(
        test.scalar_i64("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'public_replaced%'")
            .await,
        0
    );
    // And the release after the fix migrates normally.
    let fixed = migrations_dir(
        repo_migration_count(),
        &[(
            "20990101000001_contacts_score.up.sql",
            "ALTER TABLE contacts ADD COLUMN score integer;",
        )],
    );
    settings.migrations_dir = Some(fixed.path().to_path_buf());
    settings.deployment_id = "production-20250602-130000".into();
    assert_eq!(db::migrate(&settings).await.unwrap().applied.len(), 1);
}

#[tokio::test]
async fn a_no_transaction_migration_whose_first_statements_committed_is_undone_by_restoring_the_backup()
 {
    let (test, mut settings) = live_database("notx").await;
    let before = test.state().await;
    let dir = migrations_dir(
        repo_migration_count(),
        &[(
            "20990101000001_contact_exports.up.sql",
            "-- no-transaction\n\
             CREATE TABLE contact_exports (id bigint PRIMARY KEY, email text NOT NULL);\n\
             INSERT INTO contact_exports SELECT id, email FROM contacts;\n\
             UPDATE contacts SET first_name = upper(first_name) WHERE id % 2 = 0;\n\
             COMMIT;\n\
             ALTER TABLE contacts ADD COLUMN export_id bigint REFERENCES no_such_table (id);",
        )],
    );
    settings.migrations_dir = Some(dir.path().to_path_buf());
    settings.deployment_id = "production-20250602-120000".into();

    let err = db::migrate(&settings).await.unwrap_err();
    match DbError::find(&err) {
        Some(DbError::MigrationFailed {
            version,
            restored,
            cause,
            recovery,
            ..
        }) => {
            assert_eq!(*version, 20990101000001);
            assert!(cause.contains("no_such_table"), "{cause}");
            assert!(*restored, "{recovery}");
            assert!(recovery.contains("restoring"), "{recovery}");
        }
        other => panic!("expected MigrationFailed, got {other:?}: {err:#}"),
    }
    let after = test.state().await;
    assert!(
        !after.rows.contains_key("contact_exports"),
        "the committed table is still there"
    );
    assert_eq!(after, before, "the database is not as it was");
    assert!(dumps_in(&test).contains(&"production-20250602-120000.pre-migrate.dump".to_owned()));
}

#[tokio::test]
async fn a_failing_transactional_migration_alone_is_rolled_back_without_a_restore() {
    let (test, mut settings) = live_database("rollbackonly").await;
    let before = test.state().await;
    let dir = migrations_dir(
        repo_migration_count(),
        &[(
            "20990101000001_broken.up.sql",
            "CREATE TABLE partial (id int);\nINSERT INTO partial VALUES (1);\nSELECT * FROM no_such_table;",
        )],
    );
    settings.migrations_dir = Some(dir.path().to_path_buf());
    settings.deployment_id = "production-20250602-120000".into();
    let err = db::migrate(&settings).await.unwrap_err();
    match DbError::find(&err) {
        Some(DbError::MigrationFailed {
            restored, recovery, ..
        }) => {
            assert!(*restored);
            assert!(recovery.contains("rolled back"), "{recovery}");
        }
        other => panic!("expected MigrationFailed, got {other:?}: {err:#}"),
    }
    assert_eq!(test.state().await, before);
    // The backup was still taken first: the run could not know it would fail.
    assert!(dumps_in(&test).contains(&"production-20250602-120000.pre-migrate.dump".to_owned()));
}

/// A migration whose work commits, and then sqlx's bookkeeping update of
/// `_sqlx_migrations` (a statement of its own, after the commit) meets
/// `then` from a trigger the migration itself installs.
fn committing_then(then: &str) -> tempfile::TempDir {
    migrations_dir(
        repo_migration_count(),
        &[(
            "20990101000001_contacts_score.up.sql",
            &format!(
                "ALTER TABLE contacts ADD COLUMN score integer;\n\
                 UPDATE contacts SET score = 7;\n\
                 CREATE FUNCTION after_commit() RETURNS trigger LANGUAGE plpgsql AS $$\n\
                 BEGIN {then} RETURN NEW; END $$;\n\
                 CREATE TRIGGER after_commit BEFORE UPDATE ON _sqlx_migrations\n\
                 FOR EACH ROW EXECUTE FUNCTION after_commit();"
            ),
        )],
    )
}

/// Runs the migration of [`committing_then`], which must fail having
/// committed, and be undone by restoring the backup; returns its cause.
async fn undone_by_the_backup(settings: &db::MigrateSettings) -> String {
    let err = db::migrate(settings).await.unwrap_err();
    let Some(DbError::MigrationFailed {
        version,
        cause,
        restored,
        recovery,
        ..
    }) = DbError::find(&err)
    else {
        panic!("expected MigrationFailed: {err:#}");
    };
    assert_eq!(*version, 20990101000001);
    assert!(cause.contains("it committed, then"), "{cause}");
    assert!(*restored, "{recovery}");
    assert!(recovery.contains("restoring"), "{recovery}");
    assert!(!recovery.contains("rolled back"), "{recovery}");
    cause.clone()
}

#[tokio::test]
async fn a_migration_that_committed_before_its_error_is_undone_by_restoring_the_backup() {
    let (test, mut settings) = live_database("commitfail").await;
    let before = test.state().await;
    let dir = committing_then("RAISE EXCEPTION 'bookkeeping refused';");
    settings.migrations_dir = Some(dir.path().to_path_buf());
    settings.deployment_id = "production-20250602-120000".into();

    let cause = undone_by_the_backup(&settings).await;
    assert!(cause.contains("bookkeeping refused"), "{cause}");
    assert_eq!(
        test.state().await,
        before,
        "the committed column is still there"
    );
}

#[tokio::test]
async fn a_migration_whose_session_dies_after_the_commit_is_undone_on_a_new_session() {
    let (test, mut settings) = live_database("commitlost").await;
    let before = test.state().await;
    // The session ends with the commit in and its answer on the way: what
    // a client sees when the network drops at that moment.
    let dir = committing_then("PERFORM pg_terminate_backend(pg_backend_pid());");
    settings.migrations_dir = Some(dir.path().to_path_buf());
    settings.deployment_id = "production-20250602-120000".into();

    undone_by_the_backup(&settings).await;
    assert_eq!(
        test.state().await,
        before,
        "the committed column is still there"
    );
    // The restore ran under the migration lock, taken again on the new
    // session, and let it go: the next run takes it at once.
    settings.migrations_dir = None;
    settings.deployment_id = "production-20250602-130000".into();
    settings.migration_lock_wait = std::time::Duration::from_secs(5);
    db::migrate(&settings).await.unwrap();
}

#[tokio::test]
async fn a_stop_that_lands_after_the_commit_reports_the_migration_applied() {
    let (test, mut settings) = live_database("commitstop").await;
    let dir = committing_then("PERFORM pg_sleep(60);");
    settings.migrations_dir = Some(dir.path().to_path_buf());
    settings.deployment_id = "production-20250602-120000".into();
    let stop = settings.stop.clone();
    let run = tokio::spawn(async move { db::migrate(&settings).await });
    // The commit is in once the bookkeeping update is waiting in the trigger.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while test
        .scalar_i64(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE query LIKE '%UPDATE _sqlx_migrations%' AND state = 'active' \
             AND datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the bookkeeping update never began"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.cancel();
    let outcome = run.await.unwrap().unwrap();
    assert!(outcome.stopped);
    assert_eq!(
        outcome
            .applied
            .iter()
            .map(|s| s.version)
            .collect::<Vec<_>>(),
        [20990101000001],
        "the committed migration is reported applied"
    );
    assert_eq!(outcome.version_after, Some(20990101000001));
    assert_eq!(
        test.scalar_i64("SELECT count(*) FROM contacts WHERE score = 7")
            .await,
        2_000
    );
}

#[tokio::test]
async fn a_truncated_backup_is_detected_before_any_migration_runs() {
    let (test, mut settings) = live_database("truncated").await;
    let before = test.state().await;
    // A pg_dump that exits 0 but leaves its file cut short, as a full disk
    // or a killed writer would.
    let real = which("pg_dump");
    let bin = tempfile::tempdir().unwrap();
    let script = bin.path().join("pg_dump");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\n\"{real}\" \"$@\" || exit $?\n\
             for a in \"$@\"; do case \"$a\" in --file=*) f=\"${{a#--file=}}\";; esac; done\n\
             if [ -n \"$f\" ]; then truncate -s $(( $(stat -c%s \"$f\") - 100 )) \"$f\"; fi\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(which("pg_restore"), bin.path().join("pg_restore")).unwrap();
    settings.pg_bin_dir = Some(bin.path().to_path_buf());

    let dir = migrations_dir(
        repo_migration_count(),
        &[(
            "20990101000001_contacts_score.up.sql",
            "ALTER TABLE contacts ADD COLUMN score integer;",
        )],
    );
    settings.migrations_dir = Some(dir.path().to_path_buf());
    settings.deployment_id = "production-20250602-120000".into();
    let err = db::migrate(&settings).await.unwrap_err();
    match DbError::find(&err) {
        Some(DbError::BackupFailed { reason }) => {
            assert!(reason.contains("cannot be read to its end"), "{reason}");
        }
        other => panic!("expected BackupFailed, got {other:?}: {err:#}"),
    }
    assert!(
        err.to_string().contains("the database was not changed"),
        "{err}"
    );
    assert_eq!(test.state().await, before);
    assert!(!test.applied_versions().await.contains(&20990101000001));
    // Nothing unverified was stored under the backup's name.
    assert!(!dumps_in(&test).contains(&"production-20250602-120000.pre-migrate.dump".to_owned()));
}

fn which(tool: &str) -> String {
    let out = std::process::Command::new("which")
        .arg(tool)
        .output()
        .unwrap();
    assert!(out.status.success(), "{tool} must be installed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
