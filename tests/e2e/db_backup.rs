//! Backups and restores: a round trip of 100,000 rows, damaged backups,
//! listing, and S3 locations against a real S3-compatible server.

use maily_deploy::db::{self, BackupReason, DbError};

use crate::db_support::{S3Server, TestDb, seed};

#[tokio::test]
async fn a_backup_restores_100_000_rows_exactly_after_the_database_was_changed() {
    let test = TestDb::create("roundtrip").await;
    let settings = test.settings("production-20250601-120000");
    db::migrate(&settings).await.unwrap();
    seed(&test, 44_000).await;
    // Grants on the schema itself must come back too.
    test.execute("GRANT USAGE ON SCHEMA public TO pg_monitor")
        .await;
    let before = test.state().await;
    assert!(
        before.total_rows() >= 100_000,
        "only {} rows",
        before.total_rows()
    );

    let record = db::backup(&settings, BackupReason::PreMigrate)
        .await
        .unwrap();
    assert!(record.verified);
    assert_eq!(
        record.schema_version,
        db::status(&settings).await.unwrap().current_version
    );

    // What an operator regrets: deleted rows, a dropped table, a new one.
    test.execute(
        "DELETE FROM delivery_events WHERE id % 3 = 0;
         UPDATE contacts SET status = 'unsubscribed', unsubscribed_at = now() WHERE id < 500;
         DROP TABLE blockchain_verifications;
         CREATE TABLE scratch (id int);",
    )
    .await;
    assert_ne!(test.state().await, before);

    let mut restore_settings = test.settings("production-20250601-130000");
    restore_settings.backup_url = Some(test.backup_url());
    let outcome = db::restore(&restore_settings, &record).await.unwrap();
    assert_eq!(
        test.state().await,
        before,
        "the restored database differs from the backup"
    );
    assert_eq!(outcome.version_after, record.schema_version);

    // The database as it was before the restore was kept.
    let safety = &outcome.safety_backup;
    assert_eq!(safety.reason, BackupReason::PreRestore);
    assert_eq!(safety.deployment_id, "production-20250601-130000");
    assert!(safety.verified);
    let listed = db::list_backups(&test.backup_url(), &[]).await.unwrap();
    let names: Vec<_> = listed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "production-20250601-130000.pre-restore",
            "production-20250601-120000.pre-migrate"
        ],
        "newest first"
    );
    assert!(listed.iter().all(|r| r.size_bytes > 0));
}

#[tokio::test]
async fn a_truncated_backup_file_is_refused_before_the_restore_touches_the_database() {
    let test = TestDb::create("damaged").await;
    let settings = test.settings("production-20250601-120000");
    db::migrate(&settings).await.unwrap();
    seed(&test, 1_000).await;
    let record = db::backup(&settings, BackupReason::PreMigrate)
        .await
        .unwrap();
    test.execute("DELETE FROM sends WHERE id % 2 = 0").await;
    let changed = test.state().await;

    let path = test.backups.path().join(record.file_name());
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(record.size_bytes - 100).unwrap();

    let err = db::restore(&test.settings("production-20250601-130000"), &record)
        .await
        .unwrap_err();
    match DbError::find(&err) {
        Some(DbError::BackupCorrupt { location, reason }) => {
            assert_eq!(location, &record.location);
            assert!(reason.contains("SHA-256"), "{reason}");
        }
        other => panic!("expected BackupCorrupt, got {other:?}: {err:#}"),
    }
    assert_eq!(test.state().await, changed, "the database was touched");
    // No safety backup was taken for a restore that never started.
    assert_eq!(
        db::list_backups(&test.backup_url(), &[])
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_backup_is_found_by_its_name_or_by_the_deployment_that_took_it() {
    let test = TestDb::create("find").await;
    let settings = test.settings("staging-20250601-120000");
    let migrated = db::migrate(&settings).await.unwrap();
    let record = migrated.backup.unwrap();
    assert_eq!(
        db::find_backup(&settings, "staging-20250601-120000")
            .await
            .unwrap(),
        record
    );
    assert_eq!(
        db::find_backup(&settings, "staging-20250601-120000.pre-migrate.dump")
            .await
            .unwrap(),
        record
    );
    let err = db::find_backup(&settings, "staging-20990101-000000")
        .await
        .unwrap_err();
    assert!(
        matches!(DbError::find(&err), Some(DbError::BackupNotFound { .. })),
        "{err:#}"
    );
}

#[tokio::test]
async fn s3_backups_are_stored_listed_and_restored_through_an_s3_server() {
    let s3 = S3Server::start();
    s3.create_bucket("maily-backups");
    let test = TestDb::create("s3").await;
    let mut settings = test.settings("production-20250601-120000");
    settings.backup_url = Some("s3://maily-backups/production/db/".into());
    settings.backup_store_options = s3.options();

    let migrated = db::migrate(&settings).await.unwrap();
    let record = migrated.backup.clone().unwrap();
    assert_eq!(
        record.location,
        "s3://maily-backups/production/db/production-20250601-120000.pre-migrate.dump"
    );
    seed(&test, 1_000).await;
    let seeded = test.state().await;
    let second = db::backup(&settings, BackupReason::PreDown).await.unwrap();

    let listed = db::list_backups("s3://maily-backups/production/db/", &s3.options())
        .await
        .unwrap();
    assert_eq!(listed, vec![second.clone(), record.clone()]);

    test.execute("TRUNCATE delivery_events, sends CASCADE")
        .await;
    let mut restore_settings = settings.clone();
    restore_settings.deployment_id = "production-20250601-130000".into();
    let outcome = db::restore(&restore_settings, &second).await.unwrap();
    assert_eq!(test.state().await, seeded);
    assert!(
        outcome
            .safety_backup
            .location
            .starts_with("s3://maily-backups/production/db/")
    );
}
