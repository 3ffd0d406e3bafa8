use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;

/// A report in Trivy's real shape (schema 2): a result whose
/// Vulnerabilities is null, a language result, a finding with no
/// FixedVersion, fields the gate does not read, and a package listed
/// twice (once per file Trivy found it in).
const REPORT: &str = r#"{
  "SchemaVersion": 2,
  "CreatedAt": "2026-11-30T12:00:00.123456789Z",
  "ArtifactName": "ghcr.io/maily/maily-api@sha256:0123",
  "ArtifactType": "container_image",
  "Metadata": {"OS": {"Family": "debian", "Name": "12.8"}, "ImageID": "sha256:abcd",
               "RepoDigests": ["ghcr.io/maily/maily-api@sha256:0123"]},
  "Results": [
    {"Target": "ghcr.io/maily/maily-api@sha256:0123 (debian 12.8)", "Class": "os-pkgs", "Type": "debian",
     "Vulnerabilities": [
       {"VulnerabilityID": "CVE-2024-45490", "PkgID": "libexpat1@2.5.0-1", "PkgName": "libexpat1",
        "InstalledVersion": "2.5.0-1", "Status": "affected", "Layer": {"DiffID": "sha256:aa"},
        "SeveritySource": "nvd", "PrimaryURL": "https://avd.aquasec.com/nvd/cve-2024-45490",
        "Title": "libexpat: Negative Length Parsing Vulnerability", "Severity": "CRITICAL",
        "CweIDs": ["CWE-611"], "CVSS": {"nvd": {"V3Score": 9.8}}, "References": ["https://example.com"]},
       {"VulnerabilityID": "CVE-2024-5535", "PkgName": "libssl3", "InstalledVersion": "3.0.13-1",
        "FixedVersion": "3.0.14-1~deb12u1", "Status": "fixed", "Severity": "MEDIUM"},
       {"VulnerabilityID": "CVE-2011-3374", "PkgName": "apt", "InstalledVersion": "2.6.1",
        "FixedVersion": "", "Severity": "LOW"}
     ]},
    {"Target": "app/requirements.txt", "Class": "lang-pkgs", "Type": "pip", "Vulnerabilities": null},
    {"Target": "usr/lib/python3/dist-packages/urllib3", "Class": "lang-pkgs", "Type": "python-pkg",
     "Vulnerabilities": [
       {"VulnerabilityID": "CVE-2024-37891", "PkgName": "urllib3", "InstalledVersion": "1.26.12",
        "FixedVersion": "1.26.19, 2.2.2", "Severity": "MEDIUM"}
     ]},
    {"Target": "opt/venv/lib/urllib3", "Class": "lang-pkgs", "Type": "python-pkg",
     "Vulnerabilities": [
       {"VulnerabilityID": "CVE-2024-37891", "PkgName": "urllib3", "InstalledVersion": "1.26.12",
        "FixedVersion": "1.26.19, 2.2.2", "Severity": "MEDIUM"}
     ]},
    {"Target": "Java", "Class": "lang-pkgs", "Type": "jar"}
  ]
}"#;

#[test]
fn trivys_report_is_read_with_null_lists_absent_fixes_and_duplicates() {
    let findings = parse_report(REPORT.as_bytes()).unwrap();
    let got: Vec<(&str, &str, Option<&str>, Severity)> = findings
        .iter()
        .map(|f| {
            (
                f.id.as_str(),
                f.package.as_str(),
                f.fixed.as_deref(),
                f.severity,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("CVE-2024-45490", "libexpat1", None, Severity::Critical),
            (
                "CVE-2024-37891",
                "urllib3",
                Some("1.26.19, 2.2.2"),
                Severity::Medium
            ),
            (
                "CVE-2024-5535",
                "libssl3",
                Some("3.0.14-1~deb12u1"),
                Severity::Medium
            ),
            ("CVE-2011-3374", "apt", None, Severity::Low),
        ]
    );
    assert_eq!(findings[0].installed, "2.5.0-1");
}

#[test]
fn a_report_of_nothing_found_has_no_findings() {
    for clean in [
        r#"{"SchemaVersion": 2, "ArtifactName": "r@sha256:1"}"#,
        r#"{"SchemaVersion": 2, "Results": null}"#,
        r#"{"SchemaVersion": 2, "Results": [{"Target": "r (alpine 3.20.3)", "Class": "os-pkgs", "Type": "alpine"}]}"#,
    ] {
        assert_eq!(parse_report(clean.as_bytes()).unwrap(), vec![], "{clean}");
    }
}

#[test]
fn output_that_is_not_a_report_is_refused_without_quoting_it() {
    for (bad, why) in [
        ("", "cut short"),
        ("Need to update DB", "not JSON"),
        (
            r#"{"Results": [{"Vulnerabilities": [{"PkgName": "x"}]}]}"#,
            "not Trivy's report shape",
        ),
        (
            r#"{"Results": [{"Vulnerabilities": [{"VulnerabilityID": "CVE-1", "Severity": "SEVERE"}]}]}"#,
            "not Trivy's report shape",
        ),
    ] {
        match parse_report(bad.as_bytes()) {
            Err(ScanError::NotAReport { why: w }) => {
                assert!(w.starts_with(why), "{bad}: {w}");
                assert!(!w.contains("SEVERE") && !w.contains("Need"), "{w}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn severities_are_ordered_and_read_in_any_case() {
    assert!(Severity::Unknown < Severity::Low);
    assert!(Severity::Low < Severity::Medium);
    assert!(Severity::Medium < Severity::High);
    assert!(Severity::High < Severity::Critical);
    assert_eq!("critical".parse::<Severity>(), Ok(Severity::Critical));
    assert_eq!(" HIGH ".parse::<Severity>(), Ok(Severity::High));
    assert_eq!(
        "SEVERE".parse::<Severity>().unwrap_err().to_string(),
        "`SEVERE` is not a severity: give one of UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL"
    );
    assert_eq!(Severity::default(), Severity::Unknown);
    assert_eq!(serde_json::to_string(&Severity::High).unwrap(), "\"HIGH\"");
}

const DIGEST: &str = "sha256:3c5e8f0b1a2d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a";

fn reference(registry_repo: &str) -> String {
    format!("{registry_repo}@{DIGEST}")
}

#[test]
fn the_command_line_scans_by_digest_and_goes_plain_http_only_on_loopback() {
    let api = reference("ghcr.io/maily/maily-api");
    assert_eq!(
        scan_args(&api).unwrap().join(" "),
        format!(
            "image --format json --quiet --scanners vuln --skip-db-update --cache-backend memory {api}"
        )
    );
    let local = reference("127.0.0.1:5000/maily/maily-api");
    let args = scan_args(&local).unwrap();
    assert_eq!(&args[args.len() - 2..], &["--insecure".to_string(), local]);
    assert!(
        scan_args(&reference("localhost:5000/maily/x"))
            .unwrap()
            .contains(&"--insecure".into())
    );
    for not_pinned in [
        "ghcr.io/maily/maily-api:v1",
        "ghcr.io/maily/maily-api:v1@sha256:3c5e8f0b1a2d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a",
        "--insecure",
        "",
    ] {
        assert!(
            matches!(scan_args(not_pinned), Err(ScanError::NotPinned(_))),
            "{not_pinned}"
        );
    }
}

#[test]
fn stderr_is_quoted_by_its_error_lines_without_colours_and_clipped_in_the_middle() {
    let mut stderr = String::new();
    for n in 0..50 {
        stderr.push_str(&format!("INFO line {n}\n"));
    }
    stderr.push_str(&format!(
        "\x1b[31mFATAL\x1b[0m\t{}connection refused\n",
        "x".repeat(5000)
    ));
    let m = stderr_message(stderr.as_bytes());
    assert!(
        m.starts_with("(last 1 error lines of 51 lines)\nFATAL\txxx"),
        "{m}"
    );
    assert!(m.ends_with("xconnection refused"), "{m}");
    assert!(!m.contains("INFO") && !m.contains('\u{1b}'), "{m}");
    assert!(m.len() < 600, "{}", m.len());
    // No error lines: the last ones.
    let m = stderr_message(b"one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n");
    assert!(m.starts_with("(last 8 lines of 9 lines)\ntwo\n"), "{m}");
    assert_eq!(stderr_message(b"just this\n"), "just this");
    assert_eq!(stderr_message(b""), "nothing on stderr");
}

// The process path, through tests/fixtures/bin/trivy.

fn standin() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bin/trivy")
        .display()
        .to_string()
}

struct Stand {
    dir: tempfile::TempDir,
}

impl Stand {
    fn new() -> Self {
        Stand {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("argv.log")
    }

    fn trivy(&self, timeout: Duration) -> Trivy {
        Trivy::new(standin(), timeout).env("TRIVY_STANDIN_LOG", self.log().display().to_string())
    }

    fn logged(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

const FINDINGS: &str = r#"{
  "maily-api": [
    {"VulnerabilityID": "CVE-2024-45490", "PkgName": "libexpat1", "InstalledVersion": "2.5.0-1",
     "Severity": "CRITICAL", "Title": "libexpat: negative length"},
    {"VulnerabilityID": "CVE-2024-5535", "PkgName": "libssl3", "InstalledVersion": "3.0.13-1",
     "FixedVersion": "3.0.14-1~deb12u1", "Severity": "MEDIUM"}
  ],
  "maily-ai": null
}"#;

#[tokio::test]
async fn findings_and_clean_images_come_back_by_reference_after_one_database_download() {
    let stand = Stand::new();
    let trivy = stand
        .trivy(Duration::from_secs(30))
        .env("TRIVY_STANDIN_FINDINGS", FINDINGS);
    let api = reference("ghcr.io/maily/maily-api");
    let ai = reference("ghcr.io/maily/maily-ai");
    let workers = reference("127.0.0.1:5000/maily/maily-workers");
    let scans = trivy
        .scan([api.clone(), ai.clone(), workers.clone(), api.clone()])
        .await
        .unwrap();
    assert_eq!(scans.len(), 3);
    let found = scans[&api].as_ref().unwrap();
    assert_eq!(
        found.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        vec!["CVE-2024-45490", "CVE-2024-5535"]
    );
    assert_eq!(found[0].fixed, None);
    assert_eq!(scans[&ai], Ok(vec![]));
    assert_eq!(scans[&workers], Ok(vec![]));
    let logged = stand.logged();
    assert_eq!(logged.len(), 4, "{logged:?}");
    assert_eq!(logged[0], "image --download-db-only --quiet");
    let mut scanned = logged[1..].to_vec();
    scanned.sort();
    let flags =
        "image --format json --quiet --scanners vuln --skip-db-update --cache-backend memory";
    let mut expected = vec![
        format!("{flags} {api}"),
        format!("{flags} {ai}"),
        format!("{flags} --insecure {workers}"),
    ];
    expected.sort();
    assert_eq!(scanned, expected);
}

#[tokio::test]
async fn nothing_to_scan_runs_nothing() {
    let stand = Stand::new();
    let scans = stand
        .trivy(Duration::from_secs(30))
        .scan(Vec::new())
        .await
        .unwrap();
    assert!(scans.is_empty());
    assert!(stand.logged().is_empty());
}

#[tokio::test]
async fn logins_reach_trivy_through_its_environment_never_its_command_line() {
    let stand = Stand::new();
    let password = "s3cret-registry-pass-4242";
    // A podman login file: not named config.json.
    let auth = stand.dir.path().join("auth.json");
    let json =
        format!(r#"{{"auths": {{"ghcr.io": {{"username": "ci", "password": "{password}"}}}}}}"#);
    std::fs::write(&auth, &json).unwrap();
    let trivy = stand
        .trivy(Duration::from_secs(30))
        .env("TRIVY_PASSWORD", password)
        .logins(Some(&auth))
        .unwrap();
    assert!(!format!("{trivy:?}").contains(password), "{trivy:?}");
    let docker_config = trivy
        .child_env()
        .iter()
        .find(|(k, _)| k == "DOCKER_CONFIG")
        .map(|(_, v)| PathBuf::from(v))
        .unwrap();
    // Trivy reads $DOCKER_CONFIG/config.json: the same file, not a copy.
    assert_eq!(
        std::fs::read_to_string(docker_config.join("config.json")).unwrap(),
        json
    );
    assert!(
        std::fs::symlink_metadata(docker_config.join("config.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let api = reference("ghcr.io/maily/maily-api");
    trivy.scan([api]).await.unwrap();
    let logged = stand.logged().join("\n");
    assert!(
        !logged.contains(password) && !logged.contains("ci:"),
        "{logged}"
    );
    assert!(
        !logged.contains("--password") && !logged.contains("--username"),
        "{logged}"
    );
    // A docker login file is used where it is.
    let docker_dir = stand.dir.path().join("docker");
    std::fs::create_dir(&docker_dir).unwrap();
    std::fs::write(docker_dir.join("config.json"), "{}").unwrap();
    let trivy = Trivy::new(standin(), Duration::from_secs(5))
        .logins(Some(&docker_dir.join("config.json")))
        .unwrap();
    assert!(trivy.child_env().contains(&(
        "DOCKER_CONFIG".to_string(),
        docker_dir.display().to_string()
    )));
    // The temporary directory goes with the Trivy that needed it.
    drop(trivy);
    let first = Trivy::new(standin(), Duration::from_secs(5))
        .logins(Some(&auth))
        .unwrap();
    let dir = first
        .child_env()
        .iter()
        .find(|(k, _)| k == "DOCKER_CONFIG")
        .map(|(_, v)| PathBuf::from(v))
        .unwrap();
    drop(first);
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_failing_scan_names_trivys_last_words_and_the_others_still_come_back() {
    let stand = Stand::new();
    let trivy = stand
        .trivy(Duration::from_secs(30))
        .env("TRIVY_STANDIN_FAIL", "maily-ai");
    let api = reference("ghcr.io/maily/maily-api");
    let ai = reference("ghcr.io/maily/maily-ai");
    let scans = trivy.scan([api.clone(), ai.clone()]).await.unwrap();
    assert_eq!(scans[&api], Ok(vec![]));
    let err = scans[&ai].clone().unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "{} image failed (exit 1): (last 1 error lines of 101 lines)\n2026-11-30T12:00:00Z\tFATAL\tFatal error\trun error: image scan error",
            standin()
        )),
        "{message}"
    );
    assert!(
        message.ends_with("connect: connection refused"),
        "{message}"
    );
    assert!(
        !message.contains("progress line") && !message.contains('\u{1b}'),
        "{message}"
    );
    assert!(message.len() < 600, "{}", message.len());
    assert!(err.fix().contains("reaches the registry"));
}

#[tokio::test]
async fn a_database_that_cannot_be_downloaded_stops_before_any_scan() {
    let stand = Stand::new();
    let err = stand
        .trivy(Duration::from_secs(30))
        .env("TRIVY_STANDIN_DB_FAIL", "1")
        .scan([reference("ghcr.io/maily/maily-api")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ScanError::Failed { step, .. } if *step == "image --download-db-only"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("failed to download vulnerability DB"),
        "{err}"
    );
    assert!(err.fix().contains("Trivy's database"), "{}", err.fix());
    assert_eq!(stand.logged(), vec!["image --download-db-only --quiet"]);
}

#[tokio::test]
async fn a_scan_that_hangs_is_killed_at_the_timeout_and_named() {
    let stand = Stand::new();
    let trivy = stand
        .trivy(Duration::from_millis(1500))
        .env("TRIVY_STANDIN_SLEEP", "30");
    let started = Instant::now();
    let err = trivy
        .scan_one(&reference("ghcr.io/maily/maily-api"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{} image did not finish within 1s and was killed",
            standin()
        )
    );
    assert!(matches!(err, ScanError::TimedOut { .. }));
}

#[tokio::test]
async fn a_report_over_the_limit_is_an_error_not_a_hang() {
    let stand = Stand::new();
    let err = stand
        .trivy(Duration::from_secs(30))
        .env("TRIVY_STANDIN_FINDINGS", FINDINGS)
        .max_report_bytes(200)
        .scan_one(&reference("ghcr.io/maily/maily-api"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ScanError::TooLarge { limit: 200, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_wrong_command_line_is_refused_by_the_stand_in() {
    let stand = Stand::new();
    let trivy = stand.trivy(Duration::from_secs(30));
    let err = trivy
        .run(
            &[
                "image".to_string(),
                "ghcr.io/maily/maily-api:v1".to_string(),
            ],
            STEP_SCAN,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ScanError::Failed { status, stderr, .. } if status == "exit 2" && stderr.contains("not a command line")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_missing_trivy_is_named_with_how_to_install_it() {
    let err = Trivy::new("/nonexistent/trivy", Duration::from_secs(5))
        .scan([reference("ghcr.io/maily/maily-api")])
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "/nonexistent/trivy is not found on PATH");
    assert!(err.fix().contains("TRIVY_BIN"));
}
