//! The database side as a user runs it: the binary migrating the real
//! PostgreSQL of this machine inside a deploy, `db` commands, and
//! `rollback --database`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use maily_deploy::exit_code;

use crate::support;
use crate::support::postgres::{Database, psql};
use crate::support::*;

/// The shipped migrations, optionally without the newest ones.
fn migrations(dir: &Path, drop_newest: usize) -> PathBuf {
    let out = dir.join(format!("migrations-{drop_newest}"));
    std::fs::create_dir_all(&out).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let mut versions: Vec<String> = files
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .split('_')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    versions.dedup();
    let keep = &versions[..versions.len() - drop_newest];
    for f in files {
        let v = f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .split('_')
            .next()
            .unwrap()
            .to_string();
        if keep.contains(&v) {
            std::fs::copy(&f, out.join(f.file_name().unwrap())).unwrap();
        }
    }
    out
}

const WITH_DATABASE: &[&str] = &[
    "--skip-provision",
    "--skip-frontend",
    "--skip-ai",
    "--skip-monitor",
    "--skip-verify",
];

/// The env file of a deploy of `tag` that migrates `db` with `migrations_dir`.
fn env_of(
    world: &World,
    db: &Database,
    backups: &Path,
    migrations_dir: &Path,
    tag: &str,
) -> PathBuf {
    world.env_file(&[
        ("IMAGE_TAG", tag),
        ("DATABASE_URL", &db.url()),
        (
            "DATABASE_BACKUP_URL",
            &format!("file://{}/", backups.display()),
        ),
        ("MIGRATIONS_DIR", migrations_dir.to_str().unwrap()),
    ])
}

/// The variables `--only migrate` needs: no image at all.
fn migrate_only_env(world: &World, db: &Database) -> PathBuf {
    world.env_file(&[
        ("IMAGE_REGISTRY", ""),
        ("IMAGE_TAG", ""),
        ("DATABASE_URL", &db.url()),
        (
            "DATABASE_BACKUP_URL",
            &format!("file://{}/backups/", world.dir.path().display()),
        ),
    ])
}

fn deploy(
    world: &World,
    db: &Database,
    backups: &Path,
    migrations_dir: &Path,
    tag: &str,
    extra: &[&str],
) -> std::process::Output {
    let env = env_of(world, db, backups, migrations_dir, tag);
    world
        .maily()
        .arg("staging")
        .args(WITH_DATABASE)
        .arg("--env-file")
        .arg(&env)
        .args(extra)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap()
}

fn dumps(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir)
        .into_iter()
        .filter(|n| n.ends_with(".dump"))
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.file_name().to_string_lossy().to_string());
            }
        }
    }
    out
}

#[test]
fn a_deploy_backs_up_migrates_and_records_then_a_rerun_has_nothing_to_do() {
    let world = World::new(Duration::from_millis(300));
    let db = Database::new("e2e");
    let backups = world.dir.path().join("backups");
    let all = repo().join("migrations");

    let out = deploy(&world, &db, &backups, &all, "v1", &[]);
    assert_exit(&out, 0);
    let latest = db.version();
    assert!(latest > 0);
    // A fresh database has nothing to lose, yet the backup is taken: the
    // rule is "never migrate without one".
    assert_eq!(
        dumps(&backups).len(),
        1,
        "one backup: {:?}",
        dumps(&backups)
    );
    let snap = &world.snapshots()[0];
    let record = snap
        .database
        .as_ref()
        .expect("the snapshot records the migration");
    assert_eq!(record.version_after, Some(latest));
    assert!(
        record.backup.as_ref().unwrap().sha256.len() == 64,
        "{record:?}"
    );

    let out = deploy(&world, &db, &backups, &all, "v2", &[]);
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing pending"),
        "{}",
        text(&out)
    );
    assert_eq!(
        dumps(&backups).len(),
        1,
        "no backup when nothing is pending"
    );

    let out = world
        .maily()
        .args(["db", "status", "staging", "--env-file"])
        .arg(world.env_file(&[
            ("DATABASE_URL", &db.url()),
            ("MIGRATIONS_DIR", all.to_str().unwrap()),
        ]))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("schema at {latest} of {latest}")),
        "{}",
        text(&out)
    );
    let out = world
        .maily()
        .args(["db", "status", "staging", "-o", "json", "--env-file"])
        .arg(world.env_file(&[
            ("DATABASE_URL", &db.url()),
            ("MIGRATIONS_DIR", all.to_str().unwrap()),
        ]))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], "maily-deploy/db-status/v1");
    assert_eq!(doc["environment"], "staging");
    assert_eq!(doc["current_version"], latest);

    let out = world
        .maily()
        .args(["db", "backups", "staging", "--env-file"])
        .arg(world.env_file(&[(
            "DATABASE_BACKUP_URL",
            &format!("file://{}/", backups.display()),
        )]))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let first_id = &world.snapshots()[1].deployment_id;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(first_id.as_str()),
        "{}",
        text(&out)
    );
}

/// The daily backup CronJob's dumps (`daily/<UTC time>.dump`, no record)
/// are listed with the recorded backups, and `db restore` refuses one,
/// saying how to restore it, with nothing changed.
#[test]
fn the_daily_dumps_are_listed_with_the_backups_and_refused_by_db_restore() {
    let world = World::new(Duration::from_millis(300));
    let db = Database::new("daily");
    let backups = world.dir.path().join("backups");
    let all = repo().join("migrations");
    let out = deploy(&world, &db, &backups, &all, "v1", &[]);
    assert_exit(&out, 0);
    let deployed = deployment_id_of(&out);
    // What the CronJob leaves: a custom-format dump of the whole database,
    // named by the UTC time; one before the deploy's backup, one after.
    std::fs::create_dir_all(backups.join("daily")).unwrap();
    for name in ["20000101-031700", "20991231-031700"] {
        let dumped = std::process::Command::new("pg_dump")
            .args(["--format=custom", "--no-owner", "--dbname"])
            .arg(db.url())
            .arg(format!(
                "--file={}",
                backups.join(format!("daily/{name}.dump")).display()
            ))
            .output()
            .unwrap();
        assert!(dumped.status.success(), "{}", text(&dumped));
    }
    let env = world.env_file(&[
        ("DATABASE_URL", &db.url()),
        (
            "DATABASE_BACKUP_URL",
            &format!("file://{}/", backups.display()),
        ),
    ]);

    let out = world
        .maily()
        .args(["db", "backups", "staging", "--env-file"])
        .arg(&env)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("2099-12-31 03:17:00  daily/20991231-031700  ")
            && lines[0].contains("daily, no record: restore by hand"),
        "{lines:#?}"
    );
    assert!(lines[1].contains(&deployed), "newest first: {lines:#?}");
    assert!(
        lines[2].starts_with("2000-01-01 03:17:00  daily/20000101-031700"),
        "{lines:#?}"
    );

    let out = world
        .maily()
        .args(["db", "backups", "staging", "-o", "json", "--env-file"])
        .arg(&env)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], "maily-deploy/db-backups/v1");
    assert_eq!(doc["backups"][0]["deployment_id"], deployed.as_str());
    assert_eq!(doc["daily"][0]["name"], "daily/20991231-031700");
    assert_eq!(
        doc["daily"][0]["size_bytes"],
        std::fs::metadata(backups.join("daily/20991231-031700.dump"))
            .unwrap()
            .len()
    );

    let before = db.version();
    let out = world
        .maily()
        .args([
            "db",
            "restore",
            "staging",
            "daily/20991231-031700",
            "--yes",
            "--env-file",
        ])
        .arg(&env)
        .output()
        .unwrap();
    assert_exit(&out, maily_deploy::exit_code::USAGE);
    let all_text = text(&out);
    assert!(
        all_text.contains("daily/20991231-031700 is a dump of the daily backup CronJob")
            && all_text.contains("docs/db.md"),
        "{all_text}"
    );
    assert_eq!(db.version(), before);
    assert_eq!(
        dumps(&backups)
            .iter()
            .filter(|d| d.contains("pre-restore"))
            .count(),
        0,
        "no safety backup: nothing began"
    );
}

#[test]
fn rollback_with_database_down_returns_the_schema_after_the_code() {
    let world = World::new(Duration::from_millis(300));
    let db = Database::new("e2e");
    let backups = world.dir.path().join("backups");
    let older = migrations(world.dir.path(), 1);
    let all = repo().join("migrations");

    let out = deploy(&world, &db, &backups, &older, "v1", &[]);
    assert_exit(&out, 0);
    let v1_schema = db.version();
    let v1_id = deployment_id_of(&out);
    let out = deploy(&world, &db, &backups, &all, "v2", &[]);
    assert_exit(&out, 0);
    let v2_schema = db.version();
    assert!(v2_schema > v1_schema);
    let v2_id = deployment_id_of(&out);

    let env = world.env_file(&[
        ("DATABASE_URL", &db.url()),
        (
            "DATABASE_BACKUP_URL",
            &format!("file://{}/", backups.display()),
        ),
        ("MIGRATIONS_DIR", all.to_str().unwrap()),
    ]);
    let out = world
        .maily()
        .args([
            "rollback",
            "staging",
            &v1_id,
            "--database",
            "down",
            "--env-file",
        ])
        .arg(&env)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(exit_code::USAGE),
        "asks for confirmation without a terminal: {}",
        text(&out)
    );
    assert!(
        db.version() > v1_schema,
        "nothing changed without confirmation"
    );

    // What the down migrations need is checked before users are moved:
    // each refusal leaves them where they were, with the database's own
    // exit code, not a switch there and back.
    let rollback_down = |env: &Path| {
        world
            .maily()
            .args([
                "rollback",
                "staging",
                &v1_id,
                "--database",
                "down",
                "--yes",
                "--env-file",
            ])
            .arg(env)
            .output()
            .unwrap()
    };
    let users = world.selected_slot("api");
    let no_down = world.dir.path().join("no-down");
    std::fs::create_dir_all(&no_down).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&all)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let newest_down = names
        .iter()
        .rev()
        .find(|n| n.ends_with(".down.sql"))
        .unwrap();
    for name in &names {
        if name != newest_down {
            std::fs::copy(all.join(name), no_down.join(name)).unwrap();
        }
    }
    let backup_url = format!("file://{}/", backups.display());
    for (vars, code, says) in [
        (
            [
                ("DATABASE_URL", ""),
                ("DATABASE_BACKUP_URL", backup_url.as_str()),
                ("MIGRATIONS_DIR", all.to_str().unwrap()),
            ],
            exit_code::CONFIG,
            "DATABASE_URL is not set",
        ),
        (
            [
                ("DATABASE_URL", db.url().as_str()),
                ("DATABASE_BACKUP_URL", ""),
                ("MIGRATIONS_DIR", all.to_str().unwrap()),
            ],
            exit_code::CONFIG,
            "DATABASE_BACKUP_URL",
        ),
        (
            [
                ("DATABASE_URL", db.url().as_str()),
                ("DATABASE_BACKUP_URL", backup_url.as_str()),
                ("MIGRATIONS_DIR", no_down.to_str().unwrap()),
            ],
            exit_code::USAGE,
            "has no .down.sql",
        ),
    ] {
        let out = rollback_down(&world.env_file(&vars));
        assert_eq!(out.status.code(), Some(code), "{says}: {}", text(&out));
        assert!(text(&out).contains(says), "{}", text(&out));
        assert_eq!(
            world.selected_slot("api"),
            users,
            "users moved: {}",
            text(&out)
        );
        assert!(db.version() > v1_schema);
    }

    let out = rollback_down(&env);
    assert_exit(&out, 0);
    assert_eq!(db.version(), v1_schema);
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v1")
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("down migrations"),
        "{}",
        text(&out)
    );
    // The rollback's snapshot records what it did to the database: the
    // schema it left and the backup of the database as v2 had left it.
    let newest = world.snapshots()[0].clone();
    assert!(
        ![v1_id.as_str(), v2_id.as_str()].contains(&newest.deployment_id.as_str()),
        "the newest snapshot is the rollback's"
    );
    let recorded = newest
        .database
        .expect("the rollback's snapshot records the database change");
    assert_eq!(recorded.version_after, Some(v1_schema));
    assert_eq!(recorded.action, maily_deploy::db::MigrateAction::Reverted);
    assert!(recorded.backup.is_some());

    // So going forward to v2 again, database and all, restores that
    // backup (it used to say v2's database was untouched since).
    let out = world
        .maily()
        .args([
            "rollback",
            "staging",
            &v2_id,
            "--database",
            "restore",
            "--yes",
            "--env-file",
        ])
        .arg(&env)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(db.version(), v2_schema, "{}", text(&out));
    let restored = world.snapshots()[0].database.clone().unwrap();
    assert_eq!(restored.action, maily_deploy::db::MigrateAction::Restored);
    assert_eq!(restored.version_after, Some(v2_schema));
    assert_eq!(
        world.image("api-green").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v2")
    );
}

fn port_of(db: &Database) -> u16 {
    url::Url::parse(&db.url()).unwrap().port().unwrap_or(5432)
}

#[test]
fn db_restore_takes_back_this_databases_backup_and_another_ones_only_when_told() {
    let world = World::new(Duration::from_millis(300));
    let V1 {
        db,
        backups,
        all,
        taken,
    } = v1_deployed(&world);
    let restore = |env: &Path, extra: &[&str]| {
        world
            .maily()
            .args([
                "db",
                "restore",
                "staging",
                &taken.name,
                "--yes",
                "--env-file",
            ])
            .arg(env)
            .args(extra)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap()
    };

    // Its own database: restored (the fresh database it was taken of).
    let env = env_of(&world, &db, &backups, &all, "v1");
    let out = restore(&env, &[]);
    assert_exit(&out, 0);
    assert_eq!(db.version(), 0, "{}", text(&out));

    // Another database (staging's backup, say, sharing the bucket with
    // production): refused before anything changes, naming both.
    let other = Database::new("e2e_other");
    psql(
        "CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (1)",
        &other.0,
    );
    let env = env_of(&world, &other, &backups, &all, "v1");
    let out = restore(&env, &[]);
    assert_eq!(out.status.code(), Some(exit_code::USAGE), "{}", text(&out));
    let all_text = text(&out);
    assert!(
        all_text.contains(&format!(
            "was taken of 127.0.0.1:{}/{} as ",
            port_of(&db),
            db.0
        )) && all_text.contains(&format!(
            "not of the staging database (127.0.0.1:{}/{} as ",
            port_of(&other),
            other.0
        )) && all_text.contains("--from-another-database"),
        "{all_text}"
    );
    assert_eq!(psql("SELECT count(*) FROM keep_me", &other.0), "1");

    // Told so, it restores.
    let out = restore(&env, &["--from-another-database"]);
    assert_exit(&out, 0);
    assert_eq!(
        psql("SELECT to_regclass('public.keep_me') IS NULL", &other.0),
        "t",
        "{}",
        text(&out)
    );
}

/// Ctrl-C while `db restore` restores: the run stops at once, the
/// database is as it was, and the run's snapshot still names the backup it
/// took of the database before the restore began (its end used to write
/// the record over with nothing).
#[test]
fn ctrl_c_during_db_restore_keeps_the_safety_backup_in_the_snapshot() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new(Duration::from_millis(300));
    let V1 {
        db,
        backups,
        all,
        taken,
    } = v1_deployed(&world);
    let version = db.version();

    // pg_restore that, restoring, says so and then takes its time.
    let bin = world.dir.path().join("slow-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let started = world.dir.path().join("restoring");
    let script = bin.join("pg_restore");
    let real = String::from_utf8(
        std::process::Command::new("which")
            .arg("pg_restore")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh
case \" $* \" in *' --dbname='*|*' -d '*) touch '{}'; exec sleep 600;; esac\nexec '{}' \"$@\"\n",
            started.display(),
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = world
        .process()
        .env("PATH", path)
        .args([
            "db",
            "restore",
            "staging",
            &taken.name,
            "--yes",
            "--env-file",
        ])
        .arg(env_of(&world, &db, &backups, &all, "v1"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = std::time::Instant::now();
    while !started.exists() {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "the restore never began"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(exit_code::INTERRUPTED),
        "{}",
        text(&out)
    );
    assert_eq!(db.version(), version, "the database is as it was");
    let snapshots = world.snapshots();
    let run = snapshots
        .iter()
        .find(|s| s.command == "db restore")
        .expect("the restore's snapshot");
    let safety = run
        .database
        .as_ref()
        .and_then(|d| d.backup.clone())
        .unwrap_or_else(|| {
            panic!(
                "the safety backup is named: {:?} ({:?})",
                run.database, run.failure
            )
        });
    assert_ne!(safety.name, taken.name);
    assert!(
        dumps(&backups).contains(&format!("{}.dump", safety.name)),
        "{:?} in {:?}",
        safety.name,
        dumps(&backups)
    );
}

#[test]
fn db_restore_of_a_damaged_backup_is_refused_with_nothing_changed() {
    let world = World::new(Duration::from_millis(300));
    let V1 {
        db,
        backups,
        all,
        taken,
    } = v1_deployed(&world);
    let version = db.version();
    let dump = backups.join(taken.file_name());
    let file = std::fs::OpenOptions::new().write(true).open(&dump).unwrap();
    file.set_len(taken.size_bytes / 2).unwrap();

    let env = env_of(&world, &db, &backups, &all, "v1");
    let out = world
        .maily()
        .args([
            "db",
            "restore",
            "staging",
            &taken.name,
            "--yes",
            "--env-file",
        ])
        .arg(&env)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::REFUSED);
    assert!(text(&out).contains("SHA-256"), "{}", text(&out));
    assert_eq!(db.version(), version, "the database is as it was");
}

#[test]
fn an_unreachable_database_fails_before_any_change_without_the_password() {
    let world = World::new(Duration::from_millis(300));
    let env = world.env_file(&[
        ("IMAGE_TAG", "v1"),
        (
            "DATABASE_URL",
            "postgres://maily:Hunter2-pg-secret@127.0.0.1:1/maily",
        ),
        (
            "DATABASE_BACKUP_URL",
            &format!("file://{}/backups/", world.dir.path().display()),
        ),
    ]);
    let out = world
        .maily()
        .arg("staging")
        .args(WITH_DATABASE)
        .arg("--env-file")
        .arg(&env)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(exit_code::CONFIG), "{all}");
    assert!(!all.contains("Hunter2"), "the password leaked: {all}");
    assert!(all.contains("127.0.0.1:1"), "the target is named: {all}");
    assert!(
        world.deployment("api-blue").is_none(),
        "nothing was deployed"
    );
}

#[test]
fn only_migrate_needs_no_image_and_still_takes_the_lock_and_records() {
    let world = World::new(Duration::from_millis(300));
    let db = Database::new("e2e");
    let env = migrate_only_env(&world, &db);
    let out = world
        .maily()
        .args(["staging", "--only", "migrate", "--env-file"])
        .arg(&env)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(db.version() > 0);
    let snap = &world.snapshots()[0];
    assert_eq!(snap.phases, vec!["validate", "migrate"]);
    assert!(snap.database.is_some());
    assert!(
        world.deployment("api-blue").is_none(),
        "no backend deployed"
    );
}

#[test]
fn rollback_database_down_holds_the_lock_until_the_schema_is_back() {
    let world = World::new(Duration::from_millis(300));
    let db = Database::new("lockdown");
    let backups = world.dir.path().join("backups");
    let older = migrations(world.dir.path(), 0);
    // A newer release with one more migration whose down step takes a while.
    let newer = world.dir.path().join("migrations-slow");
    support::copy_dir(&older, &newer);
    std::fs::write(newer.join("20991231000000_slow_down.up.sql"), "SELECT 1;\n").unwrap();
    std::fs::write(
        newer.join("20991231000000_slow_down.down.sql"),
        "SELECT pg_sleep(8);\n",
    )
    .unwrap();

    let out = deploy(&world, &db, &backups, &older, "v1", &[]);
    assert_exit(&out, 0);
    let v1_schema = db.version();
    let v1_id = deployment_id_of(&out);
    let out = deploy(&world, &db, &backups, &newer, "v2", &[]);
    assert_exit(&out, 0);
    assert_eq!(db.version(), 20991231000000);

    let env = world.env_file(&[
        ("DATABASE_URL", &db.url()),
        (
            "DATABASE_BACKUP_URL",
            &format!("file://{}/", backups.display()),
        ),
        ("MIGRATIONS_DIR", newer.to_str().unwrap()),
    ]);
    let rollback = world
        .process()
        .args([
            "rollback",
            "staging",
            &v1_id,
            "--database",
            "down",
            "--yes",
            "--env-file",
        ])
        .arg(&env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the down migration runs: the backend has gone back, the
    // database is on its way.
    let started = std::time::Instant::now();
    while psql(
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE '%pg_sleep(8)%' AND pid <> pg_backend_pid()",
            db.0
        ),
        "postgres",
    ) != "1"
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the down migration never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The switch is done, the rollback is not: its rollout record must
    // not say complete, or a kill now would close it as a success.
    let state = rollout_state(&world);
    assert_ne!(state["stage"], "completed", "{state}");
    // Nor can promote or abort act on it now: said at once, not after
    // waiting for an answer that cannot come.
    let abort = world
        .maily()
        .args(["abort", "staging", "--env-file"])
        .arg(&env)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(
        abort.status.code(),
        Some(exit_code::LOCK_HELD),
        "{}",
        text(&abort)
    );
    assert!(
        text(&abort).contains("is taking the database back"),
        "{}",
        text(&abort)
    );
    let second = deploy(&world, &db, &backups, &newer, "v3", &[]);
    assert_eq!(
        second.status.code(),
        Some(exit_code::LOCK_HELD),
        "a deploy during the database step is refused: {}",
        text(&second)
    );
    assert!(
        String::from_utf8_lossy(&second.stderr)
            .contains("another run holds the deploy lock of staging"),
        "{}",
        text(&second)
    );

    let out = rollback.wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(db.version(), v1_schema, "the schema went back");
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v1")
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 down migrations"),
        "{}",
        text(&out)
    );
    let snapshots = world.snapshots();
    let rb = snapshots.iter().find(|s| s.command == "rollback").unwrap();
    assert_eq!(
        rb.outcome,
        maily_deploy::pipeline::snapshot::Outcome::Succeeded
    );
    // Once the database is back too, the rollout is complete.
    let state = rollout_state(&world);
    assert_eq!(state["stage"], "completed", "{state}");
}

/// v1 deployed with the repository's migrations into a fresh database,
/// and the backup that deploy took.
struct V1 {
    db: Database,
    backups: PathBuf,
    all: PathBuf,
    taken: maily_deploy::db::BackupRecord,
}

fn v1_deployed(world: &World) -> V1 {
    let db = Database::new("e2e");
    let backups = world.dir.path().join("backups");
    let all = repo().join("migrations");
    assert_exit(&deploy(world, &db, &backups, &all, "v1", &[]), 0);
    let taken = world.snapshots()[0]
        .database
        .clone()
        .and_then(|d| d.backup)
        .expect("v1's backup");
    V1 {
        db,
        backups,
        all,
        taken,
    }
}

/// The rollout record's state (`rollout.json` of the ConfigMap
/// `maily-deploy-rollout`), as `status` reads it.
fn rollout_state(world: &World) -> serde_json::Value {
    let record: k8s_openapi::api::core::v1::ConfigMap = world
        .rt
        .block_on(
            kube::Api::namespaced(world.client.clone(), &world.namespace)
                .get("maily-deploy-rollout"),
        )
        .unwrap();
    serde_json::from_str(&record.data.unwrap()["rollout.json"]).unwrap()
}

/// `-- no-transaction` on its first line, as sqlx reads it.
const NO_TX: &str = "-- no-transaction\n";

/// How many sessions of database `db` run a statement containing `text`.
fn running(db: &Database, text: &str) -> i64 {
    psql(
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE '%{text}%' AND pid <> pg_backend_pid()",
            db.0
        ),
        "postgres",
    )
    .parse()
    .unwrap()
}

/// Ctrl-C while migrations run stops them at a safe point: a
/// `-- no-transaction` migration is finished first (half of one is a schema
/// no release knows), one in a transaction is cancelled on the server and
/// rolled back, and the migrations after are not begun. The snapshot
/// records what was applied, and that the run stopped.
#[test]
fn a_run_killed_mid_migration_leaves_its_backup_in_its_snapshot() {
    use std::process::Stdio;

    let world = World::new(Duration::from_millis(300));
    let db = Database::new("e2e");
    let backups = world.dir.path().join("backups");
    let all = repo().join("migrations");
    let v1 = deploy(&world, &db, &backups, &all, "v1", &[]);
    assert_exit(&v1, 0);
    let v1_id = deployment_id_of(&v1);

    let slow = world.dir.path().join("slow-migrations");
    std::fs::create_dir_all(&slow).unwrap();
    for e in std::fs::read_dir(&all).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, slow.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        slow.join("29990101000001_slow.up.sql"),
        "SELECT pg_sleep(600);\nCREATE TABLE e2e_slow_done (id int);\n",
    )
    .unwrap();
    let env = env_of(&world, &db, &backups, &slow, "v2");
    let mut child = world
        .process()
        .arg("staging")
        .args(WITH_DATABASE)
        .arg("--env-file")
        .arg(&env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let since = std::time::Instant::now();
    while running(&db, "pg_sleep(600)") == 0 {
        assert!(since.elapsed() < Duration::from_secs(120), "never migrated");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGKILL: no handler runs, nothing is written at the end.
    child.kill().unwrap();
    let _ = child.wait();
    psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()",
        &db.0,
    );

    let dead = world
        .snapshots()
        .into_iter()
        .find(|s| s.deployment_id.as_str() != v1_id)
        .expect("the killed run's snapshot");
    let recorded = dead
        .database
        .clone()
        .expect("the database record, written before the change");
    let backup = recorded.backup.clone().expect("its backup");
    assert!(
        dumps(&backups).contains(&format!("{}.dump", backup.name)),
        "{:?} in {:?}",
        backup.name,
        dumps(&backups)
    );
    assert_eq!(recorded.version_after, None, "{recorded:?}");

    // So a restore to the deployment before it takes that backup.
    let plan = world
        .maily()
        .args([
            "rollback",
            "staging",
            &v1_id,
            "--database",
            "restore",
            "--dry-run",
        ])
        .env("DATABASE_URL", db.url())
        .env(
            "DATABASE_BACKUP_URL",
            format!("file://{}/", backups.display()),
        )
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(
        text(&plan).contains(&backup.name),
        "the restore names {}: {}",
        backup.name,
        text(&plan)
    );
}

/// sqlx's migration lock key for a database: 0x3d32ad9e times the
/// CRC-32 (IEEE) of its name.
fn migration_lock_key(database: &str) -> i64 {
    let mut crc = 0xffff_ffffu32;
    for b in database.bytes() {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    0x3d32_ad9e * i64::from(!crc)
}

fn advisory_locks(db: &Database, granted: bool) -> i64 {
    psql(
        &format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND d.datname = '{}' AND l.granted = {granted}",
            db.0
        ),
        "postgres",
    )
    .parse()
    .unwrap()
}

#[test]
fn ctrl_c_while_another_run_holds_the_migration_lock_stops_at_once() {
    use std::process::Stdio;

    let world = World::new(Duration::from_millis(300));
    let db = Database::new("e2e");
    let env = migrate_only_env(&world, &db);
    // Another run's migration, somewhere else, holding the lock.
    let mut holder = std::process::Command::new("psql")
        .args(["-X", "-d", &db.url()])
        .arg("-c")
        .arg(format!(
            "SELECT pg_advisory_lock({})",
            migration_lock_key(&db.0)
        ))
        .args(["-c", "SELECT pg_sleep(600)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let since = std::time::Instant::now();
    while advisory_locks(&db, true) == 0 {
        assert!(since.elapsed() < Duration::from_secs(60), "no lock held");
        std::thread::sleep(Duration::from_millis(50));
    }

    let child = world
        .process()
        .args(["staging", "--only", "migrate", "--env-file"])
        .arg(&env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while advisory_locks(&db, false) == 0 {
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "the run never waited for the migration lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // It used to wait for the other run's lock (ten minutes here) first.
    let out = interrupt(child, Duration::from_secs(60));
    let _ = holder.kill();
    let _ = holder.wait();
    let out = out.expect("the run stopped while the lock was held");
    assert_exit(&out, exit_code::INTERRUPTED);
    assert_eq!(advisory_locks(&db, false), 0, "no session left queued");
    assert_eq!(
        psql("SELECT to_regclass('_sqlx_migrations') IS NULL", &db.0),
        "t",
        "nothing migrated"
    );
}

#[test]
fn ctrl_c_stops_migrations_between_two_never_inside_one_without_a_transaction() {
    use std::process::Stdio;

    let world = World::new(Duration::from_millis(300));
    let db = Database::new("e2e");
    let backups = world.dir.path().join("backups");
    let all = repo().join("migrations");
    let out = deploy(&world, &db, &backups, &all, "v1", &[]);
    assert_exit(&out, 0);
    let shipped = db.version();

    let slow = world.dir.path().join("slow-migrations");
    std::fs::create_dir_all(&slow).unwrap();
    for e in std::fs::read_dir(&all).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, slow.join(p.file_name().unwrap())).unwrap();
    }
    let (no_tx, in_tx, after) = (29990101000001i64, 29990101000002i64, 29990101000003i64);
    std::fs::write(
        slow.join(format!("{no_tx}_slow_no_tx.up.sql")),
        format!("{NO_TX}SELECT pg_sleep(3);\nCREATE TABLE e2e_no_tx_done (id int);\n"),
    )
    .unwrap();
    std::fs::write(
        slow.join(format!("{in_tx}_slow_in_tx.up.sql")),
        "SELECT pg_sleep(600);\nCREATE TABLE e2e_in_tx_done (id int);\n",
    )
    .unwrap();
    std::fs::write(
        slow.join(format!("{after}_after.up.sql")),
        "CREATE TABLE e2e_after (id int);\n",
    )
    .unwrap();

    let applied = || {
        psql(
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM _sqlx_migrations WHERE version > 29990000000000 AND success",
            &db.0,
        )
    };
    let stop_when_running = |tag: &str, statement: &str| {
        let env = env_of(&world, &db, &backups, &slow, tag);
        let child = world
            .process()
            .arg("staging")
            .args(WITH_DATABASE)
            .arg("--env-file")
            .arg(&env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let since = std::time::Instant::now();
        while running(&db, statement) == 0 {
            assert!(
                since.elapsed() < Duration::from_secs(120),
                "{statement} never ran"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Bounded by the test's own patience, far beyond the 600 s sleep
        // only if the statement is not cancelled.
        interrupt(child, Duration::from_secs(300)).expect("the run ended")
    };

    // In the middle of the migration without a transaction: it is
    // finished, the next two are not begun.
    let out = stop_when_running("v2", "pg_sleep(3)");
    assert_exit(&out, exit_code::INTERRUPTED);
    assert_eq!(applied(), no_tx.to_string(), "{}", text(&out));
    psql("SELECT 1 FROM e2e_no_tx_done", &db.0);
    let recorded = world.snapshots()[0].database.clone().expect("recorded");
    assert!(recorded.stopped, "{recorded:?}");
    assert_eq!(recorded.version_before, Some(shipped));
    assert_eq!(recorded.version_after, Some(no_tx));
    assert_eq!(
        recorded
            .applied
            .iter()
            .map(|s| s.version)
            .collect::<Vec<_>>(),
        [no_tx]
    );
    assert!(recorded.backup.is_some());

    // In the middle of the one in a transaction: cancelled on the server,
    // rolled back, nothing after it begun.
    let out = stop_when_running("v3", "pg_sleep(600)");
    assert_exit(&out, exit_code::INTERRUPTED);
    assert_eq!(applied(), no_tx.to_string());
    assert_eq!(running(&db, "pg_sleep(600)"), 0, "the statement runs on");
    assert_eq!(
        psql("SELECT to_regclass('e2e_in_tx_done') IS NULL", &db.0),
        "t"
    );
    let recorded = world.snapshots()[0].database.clone().expect("recorded");
    assert!(
        recorded.stopped && recorded.applied.is_empty(),
        "{recorded:?}"
    );
    assert_eq!(recorded.version_after, Some(no_tx));
}
