//! The GitHub Actions workflow docs/ci.md ships (`docs/ci/deploy.yml`), as
//! a team that copies it would find it: the page shows the file as it is;
//! actionlint (with shellcheck on its shell steps) finds nothing wrong;
//! every `maily-deploy` command line in it is one the tool's own parser
//! takes; the exit codes it names are the tool's; and it has what the page
//! promises (each job in its environment, one run per environment, the
//! JSON report kept, a manual rollback with inputs).
//!
//! actionlint is a Go program `scripts/setup.d/actionlint.sh` builds into
//! `~/.cache/maily-deploy/actionlint/current/`. `scripts/test` sets
//! `MAILY_ACTIONLINT` to it, and then a missing binary fails the lint; a
//! bare `cargo test` on a machine without it skips the lint alone, saying
//! so on stderr past the test harness's capture.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;
use maily_deploy::cli::{Cli, Command as Verb};
use maily_deploy::exit_code;
use serde_json::Value;

use crate::support::repo;

/// The workflow file, and the heading of docs/ci.md whose `yaml` block shows it.
const WORKFLOW: &str = "docs/ci/deploy.yml";
const HEADING: &str = "## A complete workflow";

fn workflow_text() -> String {
    std::fs::read_to_string(repo().join(WORKFLOW)).unwrap()
}

fn workflow() -> Value {
    serde_saphyr::from_str(&workflow_text()).unwrap()
}

/// The first ```yaml block after `HEADING` in docs/ci.md.
fn block_on_the_page() -> String {
    let page = std::fs::read_to_string(repo().join("docs/ci.md")).unwrap();
    let (_, after) = page
        .split_once(&format!("\n{HEADING}\n"))
        .unwrap_or_else(|| panic!("docs/ci.md has no heading {HEADING:?}"));
    let (_, fenced) = after
        .split_once("```yaml\n")
        .unwrap_or_else(|| panic!("no ```yaml block under {HEADING:?} in docs/ci.md"));
    let (block, _) = fenced
        .split_once("\n```\n")
        .expect("the ```yaml block is closed");
    format!("{block}\n")
}

#[test]
fn the_page_shows_the_workflow_file_as_it_is() {
    let (page, file) = (block_on_the_page(), workflow_text());
    if page != file {
        let first = page
            .lines()
            .zip(file.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(page.lines().count().min(file.lines().count()));
        panic!(
            "the ```yaml block under {HEADING:?} in docs/ci.md and {WORKFLOW} differ from line {}:\n  page: {:?}\n  file: {:?}\ncopy {WORKFLOW} into the page",
            first + 1,
            page.lines().nth(first),
            file.lines().nth(first)
        );
    }
}

/// Where actionlint is: `MAILY_ACTIONLINT` (which must exist), else the
/// setup script's build, else `PATH`.
fn actionlint() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MAILY_ACTIONLINT") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "MAILY_ACTIONLINT={} is not a file; run scripts/setup.d/actionlint.sh",
            path.display()
        );
        return Some(path);
    }
    let cache = match std::env::var_os("MAILY_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/maily-deploy")
        }
    };
    let built = cache.join("actionlint/current/actionlint");
    if built.is_file() {
        return Some(built);
    }
    on_path("actionlint")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Says loudly, past the harness's capture (so a passing run still shows
/// it), that `test` was skipped because `missing` is not installed.
fn skipped(test: &str, missing: &str, what: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED ci_workflow::{test}: {missing} is missing; {what} was NOT linted. \
         Run scripts/setup.d/actionlint.sh (scripts/test does).\n"
    );
}

/// shellcheck, or `None` once `test` is said skipped: only where
/// `scripts/setup.d/actionlint.sh` did not run (it sets `MAILY_ACTIONLINT`,
/// and then a missing shellcheck fails the test).
fn shellcheck_or_skip(test: &str, what: &str) -> Option<PathBuf> {
    let found = on_path("shellcheck");
    if found.is_none() {
        assert!(
            std::env::var_os("MAILY_ACTIONLINT").is_none(),
            "MAILY_ACTIONLINT is set but shellcheck is not on PATH; run scripts/setup.d/actionlint.sh"
        );
        skipped(test, "shellcheck", what);
    }
    found
}

#[test]
fn actionlint_and_shellcheck_find_nothing_wrong_in_the_workflow() {
    let test = "actionlint_and_shellcheck_find_nothing_wrong_in_the_workflow";
    let Some(shellcheck) = shellcheck_or_skip(test, WORKFLOW) else {
        return;
    };
    // MAILY_ACTIONLINT set: actionlint() finds it or fails.
    let Some(actionlint) = actionlint() else {
        skipped(test, "actionlint", WORKFLOW);
        return;
    };
    let out = Command::new(&actionlint)
        .arg("-no-color")
        .arg(format!("-shellcheck={}", shellcheck.display()))
        .arg(WORKFLOW)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", actionlint.display()));
    assert!(
        out.status.success(),
        "actionlint ({}) on {WORKFLOW}, exit {:?}:\n{}{}",
        actionlint.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daily backup CronJob's script (`manifests/platform/`), which runs
/// in a pod no test can start: shellcheck reads it as the pod's `/bin/sh`
/// would.
#[test]
fn shellcheck_finds_nothing_wrong_in_the_daily_backup_job() {
    const JOB: &str = "manifests/platform/40-database-backup.yaml";
    let Some(shellcheck) = shellcheck_or_skip(
        "shellcheck_finds_nothing_wrong_in_the_daily_backup_job",
        JOB,
    ) else {
        return;
    };
    let manifest = repo().join(JOB);
    let job: Value = serde_saphyr::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let container = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"], serde_json::json!(["/bin/sh", "-ec"]));
    let script = container["args"][0].as_str().expect("the job's script");
    // The one template name it holds, as rendering fills it.
    let rendered = script.replace("${DATABASE_BACKUP_URL}", "s3://maily-backups/production/");
    assert!(!rendered.contains("${"), "another template name: {script}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("#!/bin/sh\nset -e\n{rendered}")).unwrap();
    let out = Command::new(&shellcheck)
        .args(["--shell=sh", "--severity=style"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck on the script of {}:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Each job's shell steps, by job id.
fn run_scripts(workflow: &Value) -> Vec<(String, String)> {
    let jobs = workflow["jobs"].as_object().expect("jobs");
    jobs.iter()
        .flat_map(|(id, job)| {
            job["steps"]
                .as_array()
                .expect("steps")
                .iter()
                .filter_map(|step| step["run"].as_str())
                .map(move |script| (id.clone(), script.to_string()))
        })
        .collect()
}

/// The words of a shell command line up to a redirection, with
/// double-quoted words unquoted and `$VAR`s replaced by `values`: enough
/// for the workflow's simple lines, which this test alone reads.
fn words(line: &str, values: &[(&str, &str)]) -> Vec<String> {
    let mut expanded = line.to_string();
    for (name, value) in values {
        expanded = expanded.replace(&format!("${name}"), value);
    }
    assert!(
        !expanded.contains('$'),
        "a variable this test does not know in: {line}"
    );
    let mut out = Vec::new();
    for word in expanded.split_whitespace() {
        if word.starts_with('>') || word == "|" || word == "&&" || word == ";" {
            break;
        }
        out.push(word.trim_matches('"').to_string());
    }
    out
}

#[test]
fn every_maily_deploy_command_in_the_workflow_is_one_the_tool_parses() {
    let values = [
        ("ENVIRONMENT", "production"),
        ("DEPLOYMENT_ID", "production-20250101-120000"),
        ("DATABASE", "down"),
        ("RUNNER_TEMP", "/home/runner/work/_temp"),
    ];
    let mut seen = Vec::new();
    for (job, script) in run_scripts(&workflow()) {
        for line in script.lines().map(str::trim) {
            if !line.starts_with("maily-deploy ") {
                continue;
            }
            let argv = words(line, &values);
            let cli = Cli::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("job {job}: `{line}` does not parse:\n{e}"));
            let verb = match &cli.command {
                None => {
                    assert_eq!(cli.deploy.environment.as_deref(), Some("production"));
                    "deploy"
                }
                Some(Verb::History { .. }) => "history",
                Some(Verb::Rollback {
                    deployment_id,
                    database,
                    ..
                }) => {
                    assert_eq!(deployment_id, "production-20250101-120000", "{line}");
                    if database.is_some() {
                        assert!(
                            cli.global.yes,
                            "job {job}: `{line}` asks for confirmation and no one can answer"
                        );
                        "rollback --database"
                    } else {
                        "rollback"
                    }
                }
                Some(other) => panic!("job {job}: unexpected command {other:?}"),
            };
            assert!(
                cli.global.env_file.is_some() && cli.global.kubeconfig.is_some(),
                "job {job}: `{line}` reads the env file and kubeconfig the job wrote"
            );
            if verb != "history" {
                assert_eq!(
                    cli.global.output,
                    maily_deploy::cli::OutputFormat::Json,
                    "job {job}: `{line}` writes the report the job keeps"
                );
                assert!(line.ends_with("> maily-deploy-report.json"), "{line}");
            }
            seen.push((job.clone(), verb));
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("deploy".to_string(), "deploy"),
            ("rollback".to_string(), "history"),
            ("rollback".to_string(), "rollback"),
            ("rollback".to_string(), "rollback --database"),
        ]
    );
}

#[test]
fn the_exit_codes_the_workflow_names_are_the_tools() {
    let mut arms = 0;
    for (job, script) in run_scripts(&workflow()) {
        for line in script.lines().map(str::trim) {
            let Some((code, rest)) = line.split_once(')') else {
                continue;
            };
            let Ok(code) = code.parse::<i32>() else {
                continue;
            };
            arms += 1;
            let named: Vec<(i32, &str)> = exit_code::ALL
                .iter()
                .copied()
                .filter(|(_, name)| {
                    rest.contains(&format!("title={name} ")) || rest.contains(&format!("# {name}"))
                })
                .collect();
            assert_eq!(
                named,
                vec![(
                    code,
                    exit_code::ALL
                        .iter()
                        .find(|(c, _)| *c == code)
                        .unwrap_or_else(|| panic!(
                            "job {job}: exit {code} is not one of the tool's"
                        ))
                        .1
                )],
                "job {job}: the arm `{line}` names another code's constant"
            );
            if code != exit_code::SUCCESS {
                assert!(rest.contains(&format!("(exit {code})")), "{line}");
            }
        }
    }
    assert!(
        arms >= 2 * 7,
        "each job's case names the codes a run can end with; found {arms} arms"
    );
}

#[test]
fn each_run_waits_for_its_environment_runs_alone_and_keeps_its_report() {
    let wf = workflow();
    let environment = "${{ inputs.environment || 'production' }}";
    for id in ["deploy", "rollback"] {
        let job = &wf["jobs"][id];
        assert_eq!(
            job["environment"], environment,
            "job {id}: its environment's protection rules and secrets"
        );
        assert_eq!(
            job["concurrency"]["group"],
            format!("maily-deploy-{environment}").as_str(),
            "job {id}: deploys and rollbacks of one environment queue behind each other"
        );
        assert_eq!(
            job["concurrency"]["cancel-in-progress"], false,
            "job {id}: a run is never cancelled for a newer one"
        );
        let steps = job["steps"].as_array().unwrap();
        let upload = steps
            .iter()
            .find(|s| {
                s["uses"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
            })
            .unwrap_or_else(|| panic!("job {id} keeps no artifact"));
        assert_eq!(
            upload["with"]["path"], "maily-deploy-report.json",
            "job {id}"
        );
        assert_eq!(
            upload["if"], "always()",
            "job {id}: the report of a failed run is the one needed"
        );
        let secrets = steps
            .iter()
            .find(|s| s["env"]["MAILY_ENV_FILE"] == "${{ secrets.MAILY_ENV_FILE }}")
            .unwrap_or_else(|| panic!("job {id} does not write the env file from its secret"));
        assert!(
            secrets["run"].as_str().unwrap().contains("umask 077"),
            "job {id}: the env file is the runner's alone"
        );
    }
    // The rollback is manual, with its target and the database as inputs.
    let inputs = &wf["on"]["workflow_dispatch"]["inputs"];
    for input in ["environment", "rollback_to", "database"] {
        assert!(
            inputs[input].is_object(),
            "workflow_dispatch has no input {input}"
        );
    }
    assert_eq!(
        inputs["database"]["options"],
        serde_json::json!(["leave", "down", "restore"])
    );
    assert!(
        wf["jobs"]["rollback"]["if"]
            .as_str()
            .unwrap()
            .contains("github.event_name == 'workflow_dispatch'"),
        "only a person starts a rollback"
    );
}
