//! A bad `DATABASE_URL` is a clear message that never prints the password.
//!
//! The machine's server trusts every local login, so the wrong-password
//! case runs against a second, private cluster of the same PostgreSQL
//! installation, initialised with SCRAM password authentication.

use std::path::PathBuf;
use std::process::Command;

use maily_deploy::db::{self, ConnectFailure, DbError};

use crate::db_support;

const PASSWORD: &str = "Sup3r-S3cret-Pw";

fn connect_error(err: &anyhow::Error) -> (ConnectFailure, String) {
    match DbError::find(err) {
        Some(DbError::Connect { failure, .. }) => (*failure, format!("{err:#}")),
        other => panic!("expected a Connect error, got {other:?}: {err:#}"),
    }
}

fn settings(url: &str) -> db::MigrateSettings {
    let mut s = db::MigrateSettings::new(url, "production-20250601-120000");
    s.backup_url = Some("file:///nonexistent-never-used/".into());
    s
}

/// A private PostgreSQL cluster with password authentication, stopped on drop.
struct PasswordCluster {
    dir: PathBuf,
    port: u16,
}

impl PasswordCluster {
    fn start() -> PasswordCluster {
        let bin = server_bin_dir();
        let dir = std::env::temp_dir().join(format!("maily-pw-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), PASSWORD).unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(chown.success());
        let data = dir.join("data");
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args([
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-U",
                "maily",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", dir.join("pw").display()))
            .arg("-D")
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("initdb of the machine's PostgreSQL 15 must run");
        assert!(status.success(), "initdb failed");
        let port = db_support::free_port();
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-w", "-l"])
            .arg(dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
                dir.display()
            ))
            .arg("start")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start failed");
        PasswordCluster { dir, port }
    }

    fn url(&self, password: &str) -> String {
        format!(
            "postgres://maily:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for PasswordCluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "/usr/lib/postgresql/15/bin/pg_ctl",
                "-m",
                "immediate",
                "-D",
            ])
            .arg(self.dir.join("data"))
            .arg("stop")
            .stdout(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client tool of the server's version.
fn cluster_bin(tool: &str) -> PathBuf {
    server_bin_dir().join(tool)
}

/// The server binaries of the version the machine's server runs.
fn server_bin_dir() -> PathBuf {
    let out = Command::new("psql")
        .args([
            "-X",
            "-d",
            &format!("{}/postgres", db_support::server()),
            "-Atc",
            "SHOW server_version_num",
        ])
        .output()
        .expect("psql must be installed");
    let num: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    PathBuf::from(format!("/usr/lib/postgresql/{}/bin", num / 10000))
}

#[tokio::test]
async fn a_wrong_password_says_so_and_never_prints_either_password() {
    let cluster = PasswordCluster::start();
    // The right password works, through the tools as well: a backup of
    // the cluster's database goes through PGPASSWORD.
    let backups = tempfile::tempdir().unwrap();
    let mut good = settings(&cluster.url(PASSWORD));
    good.backup_url = Some(format!("file://{}/", backups.path().display()));
    // pg_dump is watched: its command line (what `ps` shows every user)
    // must not hold the password; its environment carries it.
    let spy = tempfile::tempdir().unwrap();
    let real_dump = cluster_bin("pg_dump");
    let script = spy.path().join("pg_dump");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\necho \"$@\" >> {args}\necho \"$PGPASSWORD\" >> {env}\nexec {real_dump} \"$@\"\n",
            args = spy.path().join("args").display(),
            env = spy.path().join("env").display(),
            real_dump = real_dump.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(cluster_bin("pg_restore"), spy.path().join("pg_restore")).unwrap();
    good.pg_bin_dir = Some(spy.path().to_path_buf());

    assert_eq!(db::status(&good).await.unwrap().current_version, None);
    let record = db::backup(&good, db::BackupReason::PreMigrate)
        .await
        .unwrap();
    assert!(record.verified);
    assert!(!serde_json::to_string(&record).unwrap().contains(PASSWORD));
    let args = std::fs::read_to_string(spy.path().join("args")).unwrap();
    assert!(args.contains("--format=custom"), "{args}");
    assert!(
        !args.contains(PASSWORD),
        "the password is on pg_dump's command line: {args}"
    );
    let env = std::fs::read_to_string(spy.path().join("env")).unwrap();
    assert!(
        env.lines().any(|l| l == PASSWORD),
        "pg_dump did not get PGPASSWORD"
    );

    let wrong = "Wr0ng-Guess-Pw";
    for err in [
        db::status(&settings(&cluster.url(wrong)))
            .await
            .unwrap_err(),
        db::migrate(&settings(&cluster.url(wrong)))
            .await
            .unwrap_err(),
    ] {
        let (failure, text) = connect_error(&err);
        assert_eq!(failure, ConnectFailure::WrongPassword);
        assert!(
            text.contains(&format!(
                "could not connect to PostgreSQL at 127.0.0.1:{}/postgres as maily",
                cluster.port
            )),
            "{text}"
        );
        assert!(text.contains("password authentication failed"), "{text}");
        assert!(text.contains("check DATABASE_URL's password"), "{text}");
        assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
        assert!(
            !format!("{err:?}").contains(wrong),
            "the Debug form leaks the password"
        );
    }
}

#[tokio::test]
async fn an_unknown_host_is_named_without_the_password() {
    let err = db::status(&settings(&format!(
        "postgres://maily:{PASSWORD}@db.invalid:5432/maily"
    )))
    .await
    .unwrap_err();
    let (failure, text) = connect_error(&err);
    assert_eq!(failure, ConnectFailure::UnknownHost);
    assert!(text.contains("db.invalid:5432/maily as maily"), "{text}");
    assert!(
        text.contains("check the host name in DATABASE_URL"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
}

#[tokio::test]
async fn a_closed_port_says_nothing_listens_there_without_the_password() {
    // A port bound but never listened on: reserved for this test, so no
    // other test's server can take it, and every connection is refused.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = reserved.local_addr().unwrap().port();
    let err = db::migrate(&settings(&format!(
        "postgres://maily:{PASSWORD}@127.0.0.1:{port}/maily"
    )))
    .await
    .unwrap_err();
    let (failure, text) = connect_error(&err);
    assert_eq!(failure, ConnectFailure::Refused, "{text}");
    assert!(
        text.contains(&format!(
            "127.0.0.1:{port}/maily as maily: connection refused"
        )),
        "{text}"
    );
    assert!(text.contains("PostgreSQL is running"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[tokio::test]
async fn an_unknown_database_is_named() {
    let err = db::status(&settings(&format!(
        "{}/maily_no_such_database",
        db_support::server()
    )))
    .await
    .unwrap_err();
    let (failure, text) = connect_error(&err);
    assert_eq!(failure, ConnectFailure::UnknownDatabase);
    assert!(text.contains("maily_no_such_database"), "{text}");
}
