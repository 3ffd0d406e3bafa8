//! The command line as a user meets it: the built binary, its messages and
//! its exit codes.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use maily_deploy::exit_code;
use predicates::prelude::*;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary, run from the repository root with a clean environment, so a
/// variable of the machine running the tests cannot change the outcome.
fn maily() -> Command {
    let mut cmd = Command::cargo_bin("maily-deploy").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .current_dir(repo());
    cmd
}

fn example_env() -> PathBuf {
    repo().join(".env.example")
}

/// An env file with `.env.example`'s values, some replaced or removed.
fn env_file(dir: &Path, changes: &[(&str, Option<&str>)]) -> PathBuf {
    let text = std::fs::read_to_string(example_env()).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| {
            !changes
                .iter()
                .any(|(name, _)| l.starts_with(&format!("{name}=")))
        })
        .map(String::from)
        .collect();
    for (name, value) in changes {
        if let Some(v) = value {
            lines.push(format!("{name}={v}"));
        }
    }
    let path = dir.join(".env.test");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn json_of(output: &[u8]) -> Value {
    serde_json::from_slice(output).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(output)
        )
    })
}

#[test]
fn help_for_every_command_has_a_purpose_and_an_example() {
    let cases: &[(&[&str], &str)] = &[
        (&["--help"], "Deploy the Maily platform"),
        (&["rollback", "--help"], "Bring the platform back"),
        (&["history", "--help"], "deployments, newest first"),
        (&["status", "--help"], "live state"),
        (&["validate", "--help"], "Check the configuration alone"),
        (&["env-template", "--help"], "env file template"),
        (&["completions", "--help"], "shell completion"),
        (&["unlock", "--help"], "stuck deploy lock"),
        (&["promote", "--help"], "Finish the rollout in progress now"),
        (&["abort", "--help"], "Stop the rollout in progress"),
    ];
    for (args, purpose) in cases {
        maily()
            .args(*args)
            .assert()
            .code(exit_code::SUCCESS)
            .stdout(predicate::str::contains(*purpose))
            .stdout(predicate::str::contains("Example"));
    }
}

#[test]
fn no_arguments_prints_help_and_is_a_usage_error() {
    maily()
        .assert()
        .code(exit_code::USAGE)
        .stderr(predicate::str::contains("Usage:"));
}

#[test]
fn a_lock_ttl_past_its_bound_is_refused_before_anything_runs() {
    // Written as leaseDurationSeconds, an int32: u64::MAX seconds once
    // wrapped to -1, and a second run took the "expired" lock.
    for ttl in ["18446744073709551615s", "2h", "1s"] {
        maily()
            .args(["production", "--dry-run", "--lock-ttl", ttl])
            .arg("--env-file")
            .arg(example_env())
            .assert()
            .code(exit_code::USAGE)
            .stderr(predicate::str::contains("the lock TTL"));
    }
    maily()
        .args(["production", "--dry-run", "--lock-ttl", "2h"])
        .assert()
        .stderr(predicate::str::contains("at most 1h"));
}

#[test]
fn bad_arguments_are_usage_errors() {
    maily()
        .args(["production", "--skip-everything"])
        .assert()
        .code(exit_code::USAGE)
        .stderr(predicate::str::contains("--skip-everything"));
    maily()
        .args(["production", "--only", "deploy"])
        .assert()
        .code(exit_code::USAGE)
        .stderr(predicate::str::contains("invalid value 'deploy'"))
        .stderr(predicate::str::contains("deploy-backend"));
    maily()
        .args(["production", "--only", "migrate", "--skip-migrate"])
        .arg("--env-file")
        .arg(example_env())
        .assert()
        .code(exit_code::USAGE)
        .stderr(predicate::str::contains(
            "migrate is both named by --only and skipped by --skip-migrate",
        ));
}

#[test]
fn bad_traffic_options_are_usage_errors_naming_each_problem_before_anything_runs() {
    maily()
        .args(["production", "--traffic-steps", "50,10", "--grace", "soon"])
        .arg("--env-file")
        .arg(example_env())
        .assert()
        .code(exit_code::USAGE)
        .stderr(predicate::str::contains("--traffic-steps"))
        .stderr(predicate::str::contains("must rise strictly"))
        .stderr(predicate::str::contains("--grace"))
        .stderr(predicate::str::contains("nor `keep`"));
    maily()
        .args(["production", "--traffic-steps", "25,50"])
        .arg("--env-file")
        .arg(example_env())
        .assert()
        .code(exit_code::USAGE)
        .stderr(predicate::str::contains("must end at 100"));
}

/// Phase flags that contradict each other, a bad traffic flag and a bad
/// env file: one refusal names all three (exit 2, the command line's);
/// with the phase flags sound, the configuration's problems come along
/// with the traffic flag's. One run to learn everything to fix.
#[test]
fn a_refused_command_line_names_its_flags_and_its_configurations_problems_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(dir.path(), &[("IMAGE_PINNING", Some("offf"))]);
    let out = maily()
        .args([
            "production",
            "--only",
            "migrate",
            "--skip-migrate",
            "--traffic-steps",
            "50,10",
            "--env-file",
        ])
        .arg(&env)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit_code::USAGE), "{said}");
    assert!(
        said.contains("migrate is both named by --only and skipped by --skip-migrate"),
        "{said}"
    );
    assert!(said.contains("must rise strictly"), "{said}");

    let out = maily()
        .args(["production", "--traffic-steps", "50,10", "--env-file"])
        .arg(&env)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit_code::USAGE), "{said}");
    assert!(said.contains("must rise strictly"), "{said}");
    assert!(said.contains("IMAGE_PINNING"), "{said}");
    assert!(
        said.contains("and the configuration 1 problem too"),
        "{said}"
    );
}

/// clap stops at the first value it cannot parse; every one is named.
#[test]
fn every_value_the_command_line_cannot_parse_is_named_at_once() {
    let out = maily()
        .args([
            "production",
            "--from",
            "foo",
            "--timeout",
            "0s",
            "--keep-snapshots",
            "0",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit_code::USAGE), "{said}");
    assert!(
        said.contains("invalid value 'foo' for '--from <PHASE>'"),
        "{said}"
    );
    assert!(
        said.contains("invalid value '0s' for '--timeout <DURATION>'"),
        "{said}"
    );
    assert!(
        said.contains("invalid value '0' for '--keep-snapshots <N>'"),
        "{said}"
    );
}

/// What a dry run of production's shift-traffic says, with `extra` flags.
fn traffic_plan(extra: &[&str]) -> String {
    let out = maily()
        .args(["production", "--dry-run", "--only", "shift-traffic", "-v"])
        .args(extra)
        .arg("--env-file")
        .arg(example_env())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(exit_code::SUCCESS),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn a_dry_run_shows_the_traffic_steps_and_what_overrides_them() {
    let stdout = traffic_plan(&[]);
    assert!(
        stdout.contains("move users to the new slot: 5% → 25% → 50% → 100%"),
        "{stdout}"
    );
    assert!(
        stdout.contains("analysis every 30s (error-rate, p99-latency"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the old slot stays scaled for 10m"),
        "{stdout}"
    );
    let stdout = traffic_plan(&["--traffic-steps", "100", "--grace", "keep"]);
    assert!(
        stdout.contains("move users to the new slot: 100%"),
        "{stdout}"
    );
    assert!(
        stdout.contains("steps from the command line: 100%"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the old slot stays up until the next deploy"),
        "{stdout}"
    );
}

#[test]
fn a_missing_env_file_is_a_configuration_error() {
    maily()
        .args([
            "validate",
            "production",
            "--env-file",
            "/nonexistent/.env.production",
        ])
        .assert()
        .code(exit_code::CONFIG)
        .stderr(predicate::str::contains(
            "env file /nonexistent/.env.production does not exist",
        ))
        .stderr(predicate::str::contains(".env.production.template"));
}

#[test]
fn json_output_reports_a_command_stopped_before_it_ran() {
    let out = maily()
        .args(["prod", "--output", "json"])
        .arg("--env-file")
        .arg(example_env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::CONFIG));
    let report = json_of(&out.stdout);
    assert_eq!(report["command"], "deploy");
    assert_eq!(report["outcome"], "failed");
    assert_eq!(report["exit_code"], exit_code::CONFIG);
    assert_eq!(report["error"]["kind"], "config");
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown environment")
    );

    let out = maily()
        .args([
            "--output",
            "json",
            "rollback",
            "production",
            "production-2025-01-01",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::USAGE));
    assert_eq!(json_of(&out.stdout)["error"]["kind"], "usage");
}

#[test]
fn an_unknown_environment_lists_the_known_ones() {
    maily()
        .args(["prod", "--dry-run"])
        .arg("--env-file")
        .arg(example_env())
        .assert()
        .code(exit_code::CONFIG)
        .stderr(predicate::str::contains("unknown environment `prod`"))
        .stderr(predicate::str::contains(
            "known environments: production, staging",
        ));
}

#[test]
fn a_malformed_rollback_id_says_what_an_id_looks_like() {
    maily()
        .args(["rollback", "production", "production-2025-01-01"])
        .assert()
        .code(exit_code::USAGE)
        .stderr(predicate::str::contains(
            "invalid deployment id `production-2025-01-01`",
        ))
        .stderr(predicate::str::contains("production-YYYYMMDD-HHMMSS"))
        .stderr(predicate::str::contains("maily-deploy history production"));
}

#[test]
fn cluster_commands_without_a_kubeconfig_say_how_to_give_one() {
    for args in [
        &["rollback", "production", "production-20250101-120000"][..],
        &["history", "production"][..],
        &["status", "production"][..],
        &["unlock", "production", "--yes"][..],
    ] {
        maily()
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .args(args)
            .assert()
            .code(exit_code::CONFIG)
            .stderr(predicate::str::contains(
                "the kubeconfig /nonexistent/kubeconfig ($KUBECONFIG) does not exist",
            ))
            .stderr(predicate::str::contains("pass --kubeconfig"));
        // No $KUBECONFIG, no ~/.kube/config, not in a pod.
        let home = tempfile::tempdir().unwrap();
        maily()
            .env("HOME", home.path())
            .args(args)
            .assert()
            .code(exit_code::CONFIG)
            .stderr(predicate::str::contains("no kubeconfig found"))
            .stderr(predicate::str::contains("pass --kubeconfig"));
    }
}

#[test]
fn the_dry_run_plan_shows_all_nine_phases_planned() {
    let out = maily()
        .args(["production", "--dry-run", "--output", "json"])
        .arg("--env-file")
        .arg(example_env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::SUCCESS));
    let report = json_of(&out.stdout);
    assert_eq!(report["schema"], "maily-deploy/run-report/v1");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["outcome"], "planned");
    let id = report["deployment_id"].as_str().unwrap();
    assert!(
        regex_like_deployment_id(id, "production"),
        "deployment id {id}"
    );
    let phases: Vec<(&str, &str)> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        phases,
        vec![
            ("validate", "planned"),
            ("provision", "planned"),
            ("migrate", "planned"),
            ("deploy-backend", "planned"),
            ("deploy-frontend", "planned"),
            ("configure-ai", "planned"),
            ("monitor", "planned"),
            ("verify", "planned"),
            ("shift-traffic", "planned"),
        ]
    );
    assert!(report["error"].is_null(), "{report}");

    // The human plan says the same, one line per phase.
    maily()
        .args(["production", "--dry-run"])
        .arg("--env-file")
        .arg(example_env())
        .assert()
        .code(exit_code::SUCCESS)
        .stdout(predicate::str::contains("dry run: nothing will be changed"))
        .stdout(predicate::str::contains("validate → provision → migrate → deploy-backend → deploy-frontend → configure-ai → monitor → verify → shift-traffic"))
        .stdout(predicate::str::contains(
            "check Google Gemini: GET https://generativelanguage.googleapis.com/v1beta/models?pageSize=1000",
        ))
        .stdout(predicate::str::contains("infrastructure changes unknown: terraform cannot run here"))
        .stdout(predicate::str::contains("pending migrations unknown: the database cannot be reached"))
        .stdout(predicate::str::contains("idle slot unknown (cannot read the cluster"))
        .stdout(predicate::str::contains(
            "build maily/maily-frontend@v0.0.0-example on Vercel project prj_example, target production, not promoted",
        ));
}

fn regex_like_deployment_id(id: &str, env: &str) -> bool {
    let Some(rest) = id.strip_prefix(&format!("{env}-")) else {
        return false;
    };
    rest.len() == 15
        && rest
            .char_indices()
            .all(|(i, c)| if i == 8 { c == '-' } else { c.is_ascii_digit() })
}

#[test]
fn a_dry_run_of_built_phases_only_plans_and_succeeds() {
    let out = maily()
        .args([
            "staging",
            "--dry-run",
            "--only",
            "validate",
            "--output",
            "json",
        ])
        .arg("--env-file")
        .arg(example_env())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(exit_code::SUCCESS),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out.stdout);
    assert_eq!(report["outcome"], "planned");
    assert_eq!(report["phases"][0]["status"], "planned");
    assert_eq!(report["phases"][1]["status"], "skipped");
    assert_eq!(report["phases"][1]["skip_reason"], "not_in_only");
}

#[test]
fn validation_reports_every_problem_grouped_by_phase() {
    let dir = tempfile::tempdir().unwrap();
    let file = env_file(
        dir.path(),
        &[
            (
                "DATABASE_URL",
                Some("mysql://maily:pw-XYZ@db.example.invalid/maily"),
            ),
            ("IMAGE_TAG", Some("\"v1 beta\"")),
            ("POLYGON_CONTRACT_ADDRESS", Some("0x1234")),
            ("GRAFANA_URL", Some("grafana.example.invalid")),
            ("REDIS_URL", None),
        ],
    );
    let assert = maily()
        .args(["validate", "production", "--env-file"])
        .arg(&file)
        .assert()
        .code(exit_code::CONFIG);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    for expected in [
        "5 configuration problems",
        "  deploy-backend\n    IMAGE_TAG is not a valid image tag",
        "(got \"v1 beta\")",
        "  migrate\n    DATABASE_URL is not a PostgreSQL URL: it has the wrong scheme",
        "  monitor\n    GRAFANA_URL is not a URL",
        "  verify\n    REDIS_URL is not set",
        "POLYGON_CONTRACT_ADDRESS is not 40 hex digits after 0x",
        "fix: set DATABASE_URL to a postgres URL",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("pw-XYZ"), "a secret leaked:\n{stderr}");

    let out = maily()
        .args(["validate", "production", "--output", "json", "--env-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::CONFIG));
    let report = json_of(&out.stdout);
    let problems: Vec<(&str, &str)> = report["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["phase"].as_str().unwrap(), p["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(
        problems,
        vec![
            ("deploy-backend", "IMAGE_TAG"),
            ("migrate", "DATABASE_URL"),
            ("verify", "REDIS_URL"),
            ("verify", "POLYGON_CONTRACT_ADDRESS"),
            ("monitor", "GRAFANA_URL"),
        ]
    );
}

#[test]
fn skipping_the_frontend_does_not_ask_for_vercel() {
    let dir = tempfile::tempdir().unwrap();
    let file = env_file(
        dir.path(),
        &[("VERCEL_TOKEN", None), ("VERCEL_PROJECT_ID", None)],
    );
    maily()
        .args(["validate", "production", "--skip-frontend", "--env-file"])
        .arg(&file)
        .assert()
        .code(exit_code::SUCCESS);
    maily()
        .args(["validate", "production", "--env-file"])
        .arg(&file)
        .assert()
        .code(exit_code::CONFIG)
        .stderr(predicate::str::contains("VERCEL_TOKEN is not set"))
        .stderr(predicate::str::contains("--skip-frontend"));
}

#[test]
fn the_process_environment_wins_over_the_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = env_file(dir.path(), &[("IMAGE_TAG", Some("v1-from-file"))]);
    let out = maily()
        .env("IMAGE_TAG", "v2-from-env")
        .args(["validate", "production", "--output", "json", "--env-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::SUCCESS));
    let report = json_of(&out.stdout);
    let details: Vec<&str> = report["phases"][0]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("from the environment:") && d.contains("IMAGE_TAG=v2-from-env")),
        "{details:?}"
    );
    assert!(
        !details.iter().any(|d| d.contains("v1-from-file")),
        "{details:?}"
    );
}

#[test]
fn the_default_env_file_is_optional_and_the_environment_is_enough() {
    let text = std::fs::read_to_string(example_env()).unwrap();
    let mut cmd = maily();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let (k, v) = line.split_once('=').unwrap();
        cmd.env(k, v);
    }
    cmd.args(["validate", "staging"])
        .assert()
        .code(exit_code::SUCCESS)
        .stderr(predicate::str::contains(
            "no .env.staging here; using the process environment only",
        ));
}

#[test]
fn secrets_never_appear_in_any_output_even_malformed() {
    let dir = tempfile::tempdir().unwrap();
    // Malformed secrets (wrong scheme, no host) and a well-formed one.
    let file = env_file(
        dir.path(),
        &[
            (
                "DATABASE_URL",
                Some("mysql://maily:Tr0ub4dor-db@db.example.invalid/maily"),
            ),
            ("REDIS_URL", Some("redis://:Tr0ub4dor-redis@")),
            (
                "ETHEREUM_RPC_URL",
                Some("wss://mainnet.example.invalid/v3/Tr0ub4dor-rpc"),
            ),
            ("VERCEL_TOKEN", Some("Tr0ub4dor-vercel")),
        ],
    );
    let runs: Vec<Vec<&str>> = vec![
        vec!["validate", "production"],
        vec!["validate", "production", "--output", "json"],
        vec!["production", "--dry-run", "-vvv"],
        vec!["production", "--dry-run", "--output", "json", "-vvv"],
        vec!["production"],
    ];
    for args in runs {
        let out = maily()
            .env("OPENAI_API_KEY", "Tr0ub4dor-openai")
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_STEP_SUMMARY", dir.path().join("summary.md"))
            .args(&args)
            .arg("--env-file")
            .arg(&file)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !all.contains("Tr0ub4dor"),
            "{args:?} leaked a secret:\n{all}"
        );
        assert!(
            all.contains("DATABASE_URL"),
            "{args:?} did not report the problem:\n{all}"
        );
        assert_eq!(
            out.status.code(),
            Some(exit_code::CONFIG),
            "{args:?} refused as a configuration error:\n{all}"
        );
    }
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(!summary.contains("Tr0ub4dor"), "{summary}");
}

#[test]
fn a_bad_line_in_the_env_file_is_named_without_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env.bad");
    std::fs::write(&path, "IMAGE_TAG=v1\nVERCEL_TOKEN Tr0ub4dor-line\n").unwrap();
    maily()
        .args(["validate", "production", "--env-file"])
        .arg(&path)
        .assert()
        .code(exit_code::CONFIG)
        .stderr(predicate::str::contains(".env.bad:2"))
        .stderr(predicate::str::contains("Tr0ub4dor").not());
}

#[test]
fn a_bad_line_and_bad_variables_are_reported_in_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let good = env_file(dir.path(), &[("ROLLOUT_TIMEOUT", Some("forever"))]);
    let mut text = std::fs::read_to_string(&good).unwrap();
    text.push_str("VERCEL_TOKEN Tr0ub4dor-line\n");
    let path = dir.path().join(".env.both");
    std::fs::write(&path, text).unwrap();
    let out = maily()
        .args(["validate", "production", "-o", "json", "--env-file"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::CONFIG));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("Tr0ub4dor"), "{all}");
    let report = json_of(&out.stdout);
    let subjects: Vec<String> = report["error"]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("problems in {report:#}"))
        .iter()
        .map(|p| p["subject"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        subjects.iter().any(|s| s.contains(".env.both:")),
        "the line is named: {subjects:?}"
    );
    assert!(
        subjects.iter().any(|s| s.contains("ROLLOUT_TIMEOUT")),
        "the variable is named in the same run: {subjects:?}"
    );

    // Other commands check no variables: the line alone.
    let out = maily()
        .args(["history", "production", "--env-file"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::CONFIG));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(".env.both:"), "{stderr}");
    assert!(!stderr.contains("ROLLOUT_TIMEOUT"), "{stderr}");
}

#[test]
fn under_github_actions_phases_are_grouped_failures_annotated_and_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    let file = env_file(dir.path(), &[("IMAGE_TAG", None)]);
    let out = maily()
        .env("GITHUB_ACTIONS", "true")
        .env("CI", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .args(["validate", "production", "--env-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::CONFIG));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let group = stdout.find("::group::validate").expect("a group");
    let end = stdout.find("::endgroup::").expect("its end");
    assert!(group < end, "{stdout}");
    assert!(
        stdout.contains("::error title=validate failed::"),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\u{1b}'),
        "no colour codes in CI: {stdout:?}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("| phase | status | time | summary |"), "{md}");
    assert!(md.contains("| validate | failed |"), "{md}");
    assert!(md.contains("`IMAGE_TAG` is not set"), "{md}");

    // With JSON output, stdout stays pure JSON; the summary is still written.
    let out = maily()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .args(["validate", "production", "--output", "json", "--env-file"])
        .arg(&file)
        .output()
        .unwrap();
    json_of(&out.stdout);
    assert_eq!(
        std::fs::read_to_string(&summary)
            .unwrap()
            .matches("### maily-deploy")
            .count(),
        2
    );
}

#[test]
fn skipping_validate_warns() {
    maily()
        .args([
            "production",
            "--dry-run",
            "--skip-validate",
            "--only",
            "migrate",
        ])
        .arg("--env-file")
        .arg(example_env())
        .assert()
        .code(exit_code::SUCCESS)
        .stderr(predicate::str::contains("warning: --skip-validate given"));
}

/// The bash script `completions bash` prints, sourced in a bash as a
/// user's shell does, and the candidates its function offers for `words`
/// (the last one being typed), with `env` for the binary it calls.
pub fn bash_complete(script: &Path, words: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let cword = words.len() - 1;
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = format!(
        "source '{script}'; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{joined}'; \
         COMP_POINT=${{#COMP_LINE}}; COMP_TYPE=9; \
         _clap_complete_maily_deploy maily-deploy '{cur}' '{prev}'; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display(),
        words = quoted.join(" "),
        joined = words.join(" "),
        cur = words[cword],
        prev = words[cword - 1],
    );
    let mut cmd = std::process::Command::new("bash");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .current_dir(repo())
        .args(["--norc", "--noprofile", "-c", &line]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    got.sort();
    got
}

/// `completions bash`, written where a user keeps it.
pub fn bash_script(dir: &Path) -> PathBuf {
    let out = maily().args(["completions", "bash"]).output().unwrap();
    assert_eq!(out.status.code(), Some(exit_code::SUCCESS));
    let script = dir.join("maily-deploy.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    script
}

#[test]
fn bash_completes_commands_environments_phases_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let script = bash_script(dir.path());
    // Values only: on an empty word clap's engine offers the flags too.
    let complete = |words: &[&str]| -> Vec<String> {
        let all = bash_complete(&script, words, &[]);
        if words.last().is_some_and(|w| w.starts_with('-')) {
            all
        } else {
            all.into_iter().filter(|c| !c.starts_with('-')).collect()
        }
    };
    assert_eq!(complete(&["maily-deploy", "rollb"]), ["rollback"]);
    // After a subcommand: its own subcommands, not files.
    assert!(
        ["backups", "restore", "status"]
            .iter()
            .all(|c| complete(&["maily-deploy", "db", ""]).contains(&c.to_string())),
        "{:?}",
        complete(&["maily-deploy", "db", ""])
    );
    // Environments from the profiles, for a deploy and for a command.
    assert_eq!(complete(&["maily-deploy", "produ"]), ["production"]);
    assert_eq!(
        complete(&["maily-deploy", "history", ""]),
        ["production", "staging"]
    );
    // Phase names and their aliases.
    assert_eq!(
        complete(&["maily-deploy", "production", "--only", "infra"]),
        ["infrastructure"]
    );
    assert_eq!(
        complete(&["maily-deploy", "production", "--from", "deploy-"]),
        ["deploy-backend", "deploy-frontend"]
    );
    // Flags, and the values of --database.
    assert_eq!(
        complete(&["maily-deploy", "production", "--skip-back"]),
        ["--skip-backend"]
    );
    assert_eq!(
        complete(&[
            "maily-deploy",
            "rollback",
            "staging",
            "previous",
            "--database",
            ""
        ]),
        ["down", "restore"]
    );
    // The kubeconfig's contexts.
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: prod-eu, context: {cluster: c, user: u}}, {name: prod-us, context: {cluster: c, user: u}}, {name: dev, context: {cluster: c, user: u}}]\ncurrent-context: dev\n",
    )
    .unwrap();
    assert_eq!(
        complete(&[
            "maily-deploy",
            "status",
            "staging",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--context",
            "prod"
        ]),
        ["prod-eu", "prod-us"]
    );
    // A kubeconfig path that names no file: nothing, at once. Read whole,
    // a FIFO nobody writes to held the Tab for ever (and /dev/zero filled
    // memory).
    let fifo = dir.path().join("kubeconfig.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (tx, rx) = std::sync::mpsc::channel();
    let (owned_script, owned_fifo) = (script.clone(), fifo.clone());
    std::thread::spawn(move || {
        let words = [
            "maily-deploy",
            "status",
            "staging",
            "--kubeconfig",
            owned_fifo.to_str().unwrap(),
            "--context",
            "",
        ];
        let _ = tx.send(bash_complete(&owned_script, &words, &[]));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(got) => assert!(
            got.iter().all(|c| c.starts_with('-')),
            "no context from a FIFO: {got:?}"
        ),
        Err(_) => {
            // Let the stuck reader go before failing.
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
            panic!("completing --context waited on a FIFO named as the kubeconfig");
        }
    }
    // A rollback's id with no cluster at hand: `previous`, and nothing
    // printed besides.
    assert_eq!(
        complete(&[
            "maily-deploy",
            "rollback",
            "staging",
            "--kubeconfig",
            kc.to_str().unwrap(),
            ""
        ]),
        ["previous"]
    );
}

#[test]
fn the_readme_documents_every_exit_code() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for (code, name) in exit_code::ALL {
        let row = format!("| {code} | `{name}` |");
        assert!(readme.contains(&row), "README lacks the row {row:?}");
    }
}

#[test]
fn the_env_template_command_prints_the_shipped_template() {
    let shipped = std::fs::read_to_string(repo().join(".env.production.template")).unwrap();
    maily()
        .arg("env-template")
        .assert()
        .code(exit_code::SUCCESS)
        .stdout(shipped);
}

#[test]
fn colours_follow_the_terminal_settings_and_no_color() {
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = maily();
        cmd.env("CLICOLOR_FORCE", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd
            .args(["validate", "production"])
            .args(extra)
            .arg("--env-file")
            .arg(example_env())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(exit_code::SUCCESS),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).contains('\u{1b}')
    };
    assert!(run(&[], &[]), "CLICOLOR_FORCE should colour the output");
    assert!(!run(&["--no-color"], &[]), "--no-color");
    assert!(!run(&[], &[("NO_COLOR", "1")]), "NO_COLOR");
}

#[test]
fn an_unknown_environment_and_a_missing_env_file_are_reported_together() {
    maily()
        .args(["validate", "prod", "--env-file", "/nonexistent/.env"])
        .assert()
        .code(exit_code::CONFIG)
        .stderr(predicate::str::contains("unknown environment `prod`"))
        .stderr(predicate::str::contains("/nonexistent/.env does not exist"));
}

#[test]
fn json_output_keeps_the_event_lines_on_stderr_and_q_silences_them() {
    let run = |extra: &[&str]| {
        let out = maily()
            .args(["validate", "production", "--output", "json", "--env-file"])
            .arg(example_env())
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(exit_code::SUCCESS));
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("stdout is the JSON report alone");
        assert_eq!(report["outcome"], "succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let log = run(&[]);
    assert!(
        log.lines().any(|l| l.starts_with("✓ validate")),
        "the phase's line on stderr: {log}"
    );
    assert_eq!(run(&["-q"]), "", "-q: errors only");
}

#[test]
fn a_misspelled_verb_is_named_with_the_command_meant() {
    maily()
        .arg("histroy")
        .assert()
        .code(exit_code::USAGE)
        .stderr(predicate::str::contains(
            "`histroy` is neither a command nor an environment; did you mean the command `maily-deploy history`? (environments: production, staging)",
        ));
    // Followed by an environment, clap alone would say "unexpected argument".
    maily()
        .args(["histroy", "production"])
        .assert()
        .code(exit_code::USAGE)
        .stderr(predicate::str::contains(
            "did you mean `maily-deploy history production`?",
        ))
        .stderr(predicate::str::contains("unexpected argument").not());
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    for args in [&["version"][..], &["--version"][..]] {
        let out = maily().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(exit_code::SUCCESS));
        let text = String::from_utf8_lossy(&out.stdout);
        let form = predicate::str::is_match(
            r"^maily-deploy \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}|unknown), built \d{4}-\d{2}-\d{2}\)\n$",
        )
        .unwrap();
        assert!(form.eval(&text), "{args:?}: {text:?}");
    }
}

#[test]
fn options_a_command_ignores_are_refused_each_by_name() {
    for (args, flag) in [
        (&["env-template", "--lock-ttl", "1m"][..], "--lock-ttl"),
        (
            &["bootstrap", "staging", "--output", "json"][..],
            "--output",
        ),
        (
            &["validate", "staging", "--skip-validate"][..],
            "--skip-validate",
        ),
        (
            &["history", "staging", "--lock-ttl", "1m"][..],
            "--lock-ttl",
        ),
        (&["version", "--kubeconfig", "k"][..], "--kubeconfig"),
    ] {
        maily()
            .args(args)
            .assert()
            .code(exit_code::USAGE)
            .stdout("")
            .stderr(predicate::str::contains(format!("{flag} cannot apply to")))
            .stderr(predicate::str::contains(format!("fix: drop {flag}")));
    }
    // Asked for JSON, a refusal is a JSON report too, as docs/ci.md says.
    let out = maily()
        .args(["validate", "staging", "--lock-ttl", "1m", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::USAGE));
    let report = json_of(&out.stdout);
    assert_eq!(report["error"]["kind"], "usage");
    assert_eq!(report["exit_code"], exit_code::USAGE);
}

#[test]
fn the_help_shows_the_seeds_aliases_and_o_is_output() {
    let out = maily().args(["production", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for alias in [
        "--skip-infrastructure",
        "--skip-database",
        "--skip-monitoring",
        "provision (alias: infrastructure)",
        "migrate (database)",
        "-o, --output",
        "--timeout <DURATION>",
    ] {
        assert!(help.contains(alias), "{alias} in:\n{help}");
    }
    let out = maily()
        .args(["validate", "production", "-o", "json", "--env-file"])
        .arg(example_env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::SUCCESS));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("-o json is --output json");
    maily()
        .args(["production", "--timeout", "soon"])
        .assert()
        .code(exit_code::USAGE)
        .stderr(predicate::str::contains("--timeout"));
}

/// `MAILY_TRAFFIC_STEPS` and `MAILY_GRACE` are a deploy's: set (even empty
/// or wrong) for a CI job's deploys, they never stop another command, an
/// emergency rollback least of all, and a deploy names the variable.
#[test]
fn traffic_variables_never_break_other_commands_and_a_deploy_names_them() {
    let out = maily()
        .env("MAILY_TRAFFIC_STEPS", "")
        .env("MAILY_GRACE", "forever")
        .arg("version")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::SUCCESS), "{out:?}");

    // A dry run with MAILY_TRAFFIC_STEPS=abc and `flags`: refused (exit 2).
    let refused = |flags: &[&str]| {
        let out = maily()
            .env("MAILY_TRAFFIC_STEPS", "abc")
            .args(["staging", "--dry-run"])
            .args(flags)
            .arg("--env-file")
            .arg(example_env())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(exit_code::USAGE), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused(&[]);
    assert!(
        stderr.contains("MAILY_TRAFFIC_STEPS is not a comma-separated list"),
        "{stderr}"
    );

    // A wrong variable and a wrong flag: both named in one go.
    let stderr = refused(&["--grace", "bogus"]);
    assert!(
        stderr.contains("MAILY_TRAFFIC_STEPS is not a comma-separated list")
            && stderr.contains("--grace `bogus` is neither a duration"),
        "{stderr}"
    );
}

/// A deploy's flag given before a subcommand would be dropped silently:
/// `--dry-run rollback` would roll back for real. It is refused instead.
#[test]
fn a_deploy_flag_before_a_subcommand_is_refused() {
    let out = maily()
        .args(["--dry-run", "rollback", "staging", "previous"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::USAGE), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--dry-run is a deploy's flag, given before `rollback`"),
        "{stderr}"
    );
}

/// A dry run plans without a cluster when none is named; a kubeconfig or
/// context named wrongly is the configuration's problem, as
/// docs/configuration.md says: exit 3 and a top-level error, the plan
/// still printed.
#[test]
fn a_dry_run_against_a_cluster_named_wrongly_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: ctx, context: {cluster: c, user: u}}]\ncurrent-context: ctx\n",
    )
    .unwrap();
    let wrong: [(Vec<std::ffi::OsString>, &str); 3] = [
        (
            vec!["--kubeconfig".into(), "/nonexistent/kubeconfig".into()],
            "error: the kubeconfig /nonexistent/kubeconfig (--kubeconfig) does not exist",
        ),
        (
            vec![
                "--kubeconfig".into(),
                kubeconfig.clone().into(),
                "--context".into(),
                "nope".into(),
            ],
            "error: the context nope (--context) is not in",
        ),
        (
            vec!["--context".into(), "nope".into()],
            "error: --context needs a kubeconfig, and there is none",
        ),
    ];
    for (flags, said) in wrong {
        let out = maily()
            .args(["staging", "--dry-run", "--env-file"])
            .arg(example_env())
            .args(&flags)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(exit_code::CONFIG),
            "{flags:?}: {out:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(said), "{flags:?}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("shift-traffic     planned"), "{stdout}");
    }
    let out = maily()
        .args([
            "staging",
            "--dry-run",
            "-o",
            "json",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
            "--env-file",
        ])
        .arg(example_env())
        .output()
        .unwrap();
    let report = json_of(&out.stdout);
    assert_eq!(report["outcome"], "plan_failed");
    assert_eq!(report["exit_code"], exit_code::CONFIG);
    assert_eq!(report["error"]["kind"], "config");
}

/// Every duration flag is refused the same way when padded or negative:
/// exit 2, naming the flag (never the variable it sets), with the rule.
#[test]
fn a_bad_duration_flag_is_a_usage_error_naming_the_flag() {
    for (flag, value, why) in [
        ("--timeout", " 5m", "has leading or trailing white space"),
        ("--lock-ttl", " 5m", "has leading or trailing white space"),
        ("--grace", " 5m", "has leading or trailing white space"),
        ("--timeout", "-1m", "is negative; give a positive duration"),
        ("--lock-ttl", "-1m", "is negative; give a positive duration"),
        ("--grace", "-1m", "is negative"),
    ] {
        let out = maily()
            .args(["staging", "--dry-run", flag, value, "--env-file"])
            .arg(example_env())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(exit_code::USAGE),
            "{flag} {value:?}: {out:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains(why),
            "{flag} {value:?}: {stderr}"
        );
        assert!(!stderr.contains("ROLLOUT_TIMEOUT"), "{stderr}");
        assert!(!stderr.contains("use '-- "), "clap's tip: {stderr}");
    }
}

/// A number flag's refusal states its rule, whatever the mistake: not a
/// type's range, not the integer parser's words.
#[test]
fn a_bad_number_flag_states_the_rule() {
    for (args, rule) in [
        (
            &["staging", "--traffic-steps=-5,100"][..],
            "must be a whole number from 1 to 100",
        ),
        (
            &["staging", "--traffic-steps", "NaN"][..],
            "must be a whole number from 1 to 100",
        ),
        (
            &["staging", "--keep-snapshots", "99999999999999999999"][..],
            "must be a whole number from 1 to 65535",
        ),
        (
            &["history", "staging", "--max", "-1"][..],
            "must be a whole number from 1 to 4294967295",
        ),
    ] {
        let out = maily().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(exit_code::USAGE), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(rule), "{args:?}: {stderr}");
        for wrong in ["0..=", "invalid digit", "too large"] {
            assert!(!stderr.contains(wrong), "{args:?}: {stderr}");
        }
    }
}

/// A dry run stopped before it started still says it was a dry run, and
/// an error's `problems` is an array even when it has none.
#[test]
fn the_json_report_of_a_run_stopped_before_it_started_says_what_was_asked() {
    let out = maily()
        .args([
            "staging",
            "--dry-run",
            "-o",
            "json",
            "--env-file",
            "/nonexistent/.env",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::CONFIG));
    let report = json_of(&out.stdout);
    assert_eq!(report["dry_run"], true);
    assert!(report["error"]["problems"].is_array(), "{report}");

    let out = maily()
        .args(["prod", "--dry-run", "-o", "json", "--env-file"])
        .arg(example_env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::CONFIG));
    let report = json_of(&out.stdout);
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["error"]["problems"], serde_json::json!([]));

    let out = maily()
        .args([
            "rollback",
            "staging",
            "staging-2025",
            "--dry-run",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit_code::USAGE));
    assert_eq!(json_of(&out.stdout)["dry_run"], true);
}
