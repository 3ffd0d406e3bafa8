//! Migrating the Maily schema on the machine's PostgreSQL: fresh, rerun,
//! down migrations, drift, concurrent runs, lock timeouts.

use std::time::{Duration, Instant};

use maily_deploy::db::{self, DbError, MigrateAction};

use crate::db_support::{TestDb, migrations_dir, repo_migration_count};

#[tokio::test]
async fn a_fresh_database_gets_every_migration_and_a_rerun_does_nothing_and_takes_no_backup() {
    let test = TestDb::create("fresh").await;
    let settings = test.settings("production-20250601-120000");

    let before = db::status(&settings).await.unwrap();
    assert_eq!(before.current_version, None);
    assert_eq!(before.pending.len(), repo_migration_count());

    let first = db::migrate(&settings).await.unwrap();
    assert_eq!(first.action, MigrateAction::Applied);
    assert_eq!(first.version_before, None);
    assert_eq!(first.applied.len(), repo_migration_count());
    assert_eq!(first.version_after, before.latest_version);
    let backup = first.backup.as_ref().expect("a backup before applying");
    assert!(backup.verified);
    assert!(backup.size_bytes > 0);
    assert_eq!(backup.sha256.len(), 64);
    assert_eq!(backup.deployment_id, "production-20250601-120000");
    let on_disk = test
        .backups
        .path()
        .join("production-20250601-120000.pre-migrate.dump");
    assert_eq!(backup.location, format!("file://{}", on_disk.display()));
    assert_eq!(
        std::fs::metadata(&on_disk).unwrap().len(),
        backup.size_bytes
    );
    assert_eq!(test.applied_versions().await.len(), repo_migration_count());
    assert!(test.state().await.rows.contains_key("delivery_events"));

    // The outcome goes into the deployment snapshot as JSON.
    let json = serde_json::to_value(&first).unwrap();
    assert_eq!(json["backup"]["sha256"], backup.sha256.as_str());

    let mut rerun_settings = test.settings("production-20250601-130000");
    rerun_settings.backup_url = Some(test.backup_url());
    let started = Instant::now();
    let second = db::migrate(&rerun_settings).await.unwrap();
    assert_eq!(second.action, MigrateAction::NothingPending);
    assert!(second.backup.is_none());
    assert!(second.applied.is_empty());
    assert_eq!(second.version_before, first.version_after);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "nothing pending took {:?}",
        started.elapsed()
    );
    let dumps: Vec<_> = std::fs::read_dir(test.backups.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dump"))
        .collect();
    assert_eq!(dumps, ["production-20250601-120000.pre-migrate.dump"]);
}

#[tokio::test]
async fn every_migrations_down_reverses_its_up() {
    let test = TestDb::create("down").await;
    let count = repo_migration_count();
    // Step up one migration at a time, remembering the schema at each step.
    let mut states = vec![test.state().await];
    let mut versions = vec![0];
    for k in 1..=count {
        let dir = migrations_dir(k, &[]);
        let mut settings = test.settings(&format!("up-{k}"));
        settings.migrations_dir = Some(dir.path().to_path_buf());
        let outcome = db::migrate(&settings).await.unwrap();
        assert_eq!(outcome.applied.len(), 1);
        versions.push(outcome.version_after.unwrap());
        states.push(test.state().await);
        assert_ne!(
            states[k].app_schema(),
            states[k - 1].app_schema(),
            "migration {} changed nothing",
            versions[k]
        );
    }
    // Then down one at a time: each step must give back the schema before it.
    let all = migrations_dir(count, &[]);
    for k in (1..=count).rev() {
        let mut settings = test.settings(&format!("down-{k}"));
        settings.migrations_dir = Some(all.path().to_path_buf());
        let outcome = db::migrate_down_to(&settings, versions[k - 1])
            .await
            .unwrap();
        assert_eq!(outcome.reverted.len(), 1);
        assert_eq!(outcome.reverted[0].version, versions[k]);
        assert!(outcome.backup.is_some(), "a backup before going down");
        assert_eq!(
            test.state().await.app_schema(),
            states[k - 1].app_schema(),
            "the down migration of {} did not reverse its up",
            versions[k]
        );
    }
    // Only the bookkeeping table is left.
    assert_eq!(
        test.state().await.rows.keys().collect::<Vec<_>>(),
        ["_sqlx_migrations"]
    );
}

#[tokio::test]
async fn a_changed_already_applied_migration_is_refused_and_named() {
    let test = TestDb::create("drift").await;
    let released = migrations_dir(2, &[]);
    let mut settings = test.settings("production-1");
    settings.migrations_dir = Some(released.path().to_path_buf());
    db::migrate(&settings).await.unwrap();

    let edited = migrations_dir(3, &[]);
    let path = edited
        .path()
        .join("20250601000002_contacts_and_lists.up.sql");
    let mut sql = std::fs::read_to_string(&path).unwrap();
    sql.push_str("\nCREATE INDEX contacts_created_idx ON contacts (created_at);\n");
    std::fs::write(&path, sql).unwrap();
    settings.migrations_dir = Some(edited.path().to_path_buf());
    settings.deployment_id = "production-2".into();

    let status = db::status(&settings).await.unwrap();
    assert_eq!(status.drifted.len(), 1);
    assert_eq!(status.drifted[0].version, 20250601000002);
    assert_eq!(status.pending.len(), 1);

    let err = db::migrate(&settings).await.unwrap_err();
    assert_eq!(
        DbError::find(&err),
        Some(&DbError::ChecksumDrift {
            version: 20250601000002,
            name: "contacts and lists".into()
        })
    );
    assert!(
        err.to_string()
            .contains("20250601000002 (contacts and lists)"),
        "{err}"
    );
    // Nothing ran and no backup was taken for a run that was refused.
    assert_eq!(test.applied_versions().await.len(), 2);
    assert!(
        !test
            .backups
            .path()
            .join("production-2.pre-migrate.dump")
            .exists()
    );
}

#[tokio::test]
async fn two_migrate_runs_at_once_one_applies_and_the_other_waits_then_finds_nothing_to_do() {
    let test = TestDb::create("concurrent").await;
    let a = test.settings("production-a");
    let b = test.settings("production-b");
    let (ra, rb) = tokio::join!(db::migrate(&a), db::migrate(&b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let mut actions = [ra.action, rb.action];
    actions.sort_by_key(|a| *a == MigrateAction::Applied);
    assert_eq!(
        actions,
        [MigrateAction::NothingPending, MigrateAction::Applied]
    );
    let (applied, idle) = if ra.action == MigrateAction::Applied {
        (&ra, &rb)
    } else {
        (&rb, &ra)
    };
    assert_eq!(applied.applied.len(), repo_migration_count());
    assert!(idle.backup.is_none());
    assert_eq!(idle.version_before, applied.version_after);
    assert_eq!(test.applied_versions().await.len(), repo_migration_count());
}

#[tokio::test]
async fn a_migration_that_cannot_get_its_lock_gives_up_after_the_lock_timeout() {
    let test = TestDb::create("locktimeout").await;
    let base = migrations_dir(repo_migration_count(), &[]);
    let mut settings = test.settings("production-1");
    settings.migrations_dir = Some(base.path().to_path_buf());
    db::migrate(&settings).await.unwrap();

    // A long transaction holds a lock on contacts, as live traffic would.
    let mut traffic = test.conn().await;
    let mut tx = sqlx::Connection::begin(&mut traffic).await.unwrap();
    sqlx::query("LOCK TABLE contacts IN ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();

    let next = migrations_dir(
        repo_migration_count(),
        &[(
            "20990101000001_contacts_timezone.up.sql",
            "ALTER TABLE contacts ADD COLUMN timezone text;",
        )],
    );
    settings.migrations_dir = Some(next.path().to_path_buf());
    settings.deployment_id = "production-2".into();
    settings.lock_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = db::migrate(&settings).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    match DbError::find(&err) {
        Some(DbError::MigrationFailed {
            version,
            restored,
            cause,
            ..
        }) => {
            assert_eq!(*version, 20990101000001);
            assert!(*restored);
            assert!(cause.contains("lock timeout (300ms)"), "{cause}");
        }
        other => panic!("expected MigrationFailed, got {other:?}: {err:#}"),
    }
    tx.rollback().await.unwrap();
    assert_eq!(test.applied_versions().await.len(), repo_migration_count());
}

#[tokio::test]
async fn migrating_with_pending_work_but_no_backup_location_is_refused() {
    let test = TestDb::create("nobackup").await;
    let mut settings = test.settings("production-1");
    settings.backup_url = None;
    let err = db::migrate(&settings).await.unwrap_err();
    assert!(
        matches!(DbError::find(&err), Some(DbError::NoBackupLocation { .. })),
        "{err:#}"
    );
    assert!(err.to_string().contains("DATABASE_BACKUP_URL"), "{err}");
    assert!(test.applied_versions().await.is_empty());
}

#[tokio::test]
async fn the_embedded_migrations_are_used_when_the_directory_is_missing() {
    let test = TestDb::create("embedded").await;
    let mut settings = test.settings("production-1");
    settings.migrations_dir = Some("/nonexistent/migrations".into());
    let outcome = db::migrate(&settings).await.unwrap();
    assert_eq!(outcome.source, Some(db::MigrationSource::Embedded));
    assert_eq!(outcome.applied.len(), repo_migration_count());
}

#[tokio::test]
async fn migrating_down_refuses_a_target_never_applied_and_a_migration_without_a_down_file() {
    let test = TestDb::create("downrefuse").await;
    let dir = migrations_dir(
        repo_migration_count(),
        &[(
            "20990101000001_one_way.up.sql",
            "ALTER TABLE contacts ADD COLUMN one_way text;",
        )],
    );
    let mut settings = test.settings("production-1");
    settings.migrations_dir = Some(dir.path().to_path_buf());
    db::migrate(&settings).await.unwrap();
    let before = test.state().await;

    settings.deployment_id = "production-2".into();
    let err = db::migrate_down_to(&settings, 20250601000010)
        .await
        .unwrap_err();
    match DbError::find(&err) {
        Some(DbError::CannotMigrateDown { target, reason }) => {
            assert_eq!(*target, 20250601000010);
            assert!(reason.contains("not an applied version"), "{reason}");
        }
        other => panic!("expected CannotMigrateDown, got {other:?}: {err:#}"),
    }
    let err = db::migrate_down_to(&settings, 20250601000006)
        .await
        .unwrap_err();
    match DbError::find(&err) {
        Some(DbError::CannotMigrateDown { reason, .. }) => {
            assert!(
                reason.contains("20990101000001 (one way) has no .down.sql"),
                "{reason}"
            );
        }
        other => panic!("expected CannotMigrateDown, got {other:?}: {err:#}"),
    }
    // Refused before anything: no backup, nothing reverted.
    assert_eq!(test.state().await, before);
    assert!(
        !test
            .backups
            .path()
            .join("production-2.pre-down.dump")
            .exists()
    );
}

#[tokio::test]
async fn a_migration_running_past_the_statement_timeout_is_stopped_and_rolled_back() {
    let test = TestDb::create("stmttimeout").await;
    let dir = migrations_dir(
        1,
        &[(
            "20990101000001_slow_backfill.up.sql",
            "CREATE TABLE slow (id int);\nSELECT pg_sleep(5);",
        )],
    );
    let mut settings = test.settings("production-1");
    settings.migrations_dir = Some(dir.path().to_path_buf());
    settings.statement_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = db::migrate(&settings).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    match DbError::find(&err) {
        Some(DbError::MigrationFailed {
            version,
            cause,
            restored,
            ..
        }) => {
            assert_eq!(*version, 20990101000001);
            assert!(cause.contains("statement timeout (300ms)"), "{cause}");
            // The first migration of the run had committed: restored.
            assert!(*restored);
        }
        other => panic!("expected MigrationFailed, got {other:?}: {err:#}"),
    }
    assert!(test.applied_versions().await.is_empty());
    assert!(!test.state().await.rows.contains_key("organizations"));
}
