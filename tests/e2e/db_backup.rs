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
    let listed = db::list_backups(&test.backup_url(), &[])
        .await
        .unwrap()
        .backups;
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
async fn a_restore_that_would_take_an_extension_or_a_view_elsewhere_with_it_is_refused() {
    let test = TestDb::create("in_the_way").await;
    let settings = test.settings("production-20250601-120000");
    db::migrate(&settings).await.unwrap();
    let record = db::backup(&settings, BackupReason::PreMigrate)
        .await
        .unwrap();
    // Objects outside what a restore puts back: an extension installed in
    // public (its types and functions are in no dump of public), and a
    // reporting view in a schema of its own that reads public's table.
    test.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA public")
        .await;
    test.execute("CREATE SCHEMA reporting").await;
    test.execute(
        "CREATE VIEW reporting.contact_count AS SELECT count(*) AS n FROM public.contacts",
    )
    .await;
    let before = test.state().await;

    let err = db::restore(&test.settings("production-20250601-130000"), &record)
        .await
        .unwrap_err();
    match DbError::find(&err) {
        Some(DbError::RestoreBlocked { objects, .. }) => {
            assert!(
                objects.contains(&"extension pgcrypto (in schema public)".to_string()),
                "{objects:?}"
            );
            assert!(
                objects
                    .contains(&"view reporting.contact_count (reads public.contacts)".to_string()),
                "{objects:?}"
            );
        }
        other => panic!("expected RestoreBlocked, got {other:?}: {err:#}"),
    }
    assert!(
        format!("{err:#}").contains("nothing was changed"),
        "{err:#}"
    );
    assert_eq!(test.state().await, before, "the database was touched");
    let mut conn = test.conn().await;
    let view: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('reporting.contact_count')::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(view.is_some(), "the view is still there");
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
            .backups
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

    // What the daily CronJob uploads beside them (and, under another
    // prefix, what is not this location's).
    use object_store::ObjectStoreExt;
    let bucket = {
        let mut bucket =
            object_store::aws::AmazonS3Builder::new().with_bucket_name("maily-backups");
        for (key, value) in s3.options() {
            bucket = bucket.with_config(key.parse().unwrap(), value);
        }
        bucket.build().unwrap()
    };
    {
        for key in [
            "production/db/daily/20261201-031700.dump",
            "staging/db/daily/20261202-031700.dump",
        ] {
            bucket
                .put(&key.into(), b"PGDMP-daily".to_vec().into())
                .await
                .unwrap();
        }
    }
    let listed = db::list_backups("s3://maily-backups/production/db/", &s3.options())
        .await
        .unwrap();
    assert_eq!(listed.backups, vec![second.clone(), record.clone()]);
    assert_eq!(
        listed.daily,
        [db::DailyDump {
            name: "daily/20261201-031700".into(),
            location: "s3://maily-backups/production/db/daily/20261201-031700.dump".into(),
            size_bytes: 11,
            created_at: "2026-12-01T03:17:00Z".parse().unwrap(),
        }]
    );

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

    // An object grown past its recorded size (replaced by something else)
    // is refused as soon as the download passes the size, and nothing is
    // restored.
    let key = format!("production/db/{}", second.file_name());
    bucket
        .put(
            &key.as_str().into(),
            vec![b'x'; second.size_bytes as usize + (1 << 20)].into(),
        )
        .await
        .unwrap();
    let before = test.state().await;
    let err = db::restore(&restore_settings, &second).await.unwrap_err();
    assert!(
        matches!(DbError::find(&err), Some(DbError::BackupCorrupt { reason, .. })
            if reason.contains("holds more than")),
        "{err:#}"
    );
    assert_eq!(test.state().await, before);
}

/// A restore stopped mid-way (Ctrl-C, the lock lost) drops its future with
/// the schema renamed aside and `pg_restore` at work. What was set aside
/// is put back on a session of its own, `pg_restore`'s sessions are ended
/// (one here holds a lock on a restored table, as a backend building an
/// index would), and the database is as it was before the restore.
#[tokio::test]
async fn a_restore_stopped_mid_way_puts_the_database_back_as_it_was() {
    use std::os::unix::fs::PermissionsExt;
    let test = TestDb::create("stopped_restore").await;
    let settings = test.settings("production-20250601-120000");
    db::migrate(&settings).await.unwrap();
    seed(&test, 2_000).await;
    let record = db::backup(&settings, BackupReason::PreMigrate)
        .await
        .unwrap();
    test.execute("DELETE FROM contacts WHERE id % 2 = 0").await;
    let before = test.state().await;

    // pg_restore restores, then its session keeps a restored table locked
    // and never ends, until it is killed.
    let which = |tool: &str| {
        let out = std::process::Command::new("which")
            .arg(tool)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let bin = tempfile::tempdir().unwrap();
    let script = bin.path().join("pg_restore");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\ncase \" $* \" in *' --dbname='*) ;; *) exec \"{real}\" \"$@\";; esac\n\
             \"{real}\" \"$@\" || exit $?\n\
             exec \"{psql}\" -X --no-password -c 'BEGIN; LOCK TABLE public.contacts; SELECT pg_sleep(600);'\n",
            real = which("pg_restore"),
            psql = which("psql"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(which("pg_dump"), bin.path().join("pg_dump")).unwrap();
    let mut restore_settings = test.settings("production-20250601-130000");
    restore_settings.backup_url = Some(test.backup_url());
    restore_settings.pg_bin_dir = Some(bin.path().to_path_buf());

    let locked = async {
        loop {
            let mut c = test.conn().await;
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE application_name LIKE 'maily-deploy restore%' AND datname = current_database()
                    AND query LIKE '%pg_sleep%'",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            if n > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        r = db::restore(&restore_settings, &record) => panic!("the restore ended: {:?}", r.err()),
        () = locked => {}
    }
    // The restore's future is dropped: stopped as the runner stops a step.
    // A generous bound only so that a put-back stuck on the lock fails the
    // test instead of hanging it.
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        maily_deploy::interrupt::put_backs_done(),
    )
    .await
    .expect("the put-back ended pg_restore's sessions rather than wait for them");

    assert_eq!(
        test.state().await,
        before,
        "the database as before the restore"
    );
    let mut c = test.conn().await;
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE '%_replaced_%'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert!(left.is_empty(), "schemas left aside: {left:?}");
}
