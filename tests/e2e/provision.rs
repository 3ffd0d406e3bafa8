//! provision as a user runs it: the binary driving a terraform stand-in
//! (`tests/fixtures/bin/terraform`, which records each command line and
//! answers as terraform documents) inside a deploy against kubesim.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use maily_deploy::exit_code;
use maily_deploy::phases::provision::InfrastructureRecord;

use crate::support::terraform::StandIn;
use crate::support::*;

struct Infra {
    world: World,
    terraform: StandIn,
    dir: PathBuf,
}

impl Infra {
    fn new() -> Infra {
        let world = World::new(Duration::from_millis(200));
        let terraform = StandIn::new(world.dir.path());
        let dir = terraform.dir.clone();
        Infra {
            world,
            terraform,
            dir,
        }
    }

    /// `maily-deploy staging <args>` with the stand-in answering `scenario`.
    fn run(&self, scenario: &str, outputs: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut vars = self.terraform.vars();
        vars.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let env_file = self.world.env_file(&vars);
        let mut cmd = self.world.maily();
        cmd.arg("staging")
            .arg("--env-file")
            .arg(&env_file)
            .args(args)
            .timeout(Duration::from_secs(60));
        self.terraform
            .answer(&mut cmd, scenario, outputs)
            .output()
            .unwrap()
    }

    /// The command lines terraform received, and forget them.
    fn commands(&self) -> Vec<String> {
        self.terraform.commands()
    }
}

const ONLY: &[&str] = &["--only", "provision", "--output", "json"];

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn provision(doc: &serde_json::Value) -> &serde_json::Value {
    doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "provision")
        .expect("a provision phase in the report")
}

#[test]
fn a_first_run_creates_the_workspace_and_applies_the_saved_plan_a_second_plans_in_it() {
    let infra = Infra::new();
    let mut verbose = ONLY.to_vec();
    verbose.push("-v");
    let out = infra.run("changes", "{}", &[], &verbose);
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(
        infra.commands(),
        [
            "init -input=false -no-color",
            "workspace list",
            "workspace new staging",
            "TF_WORKSPACE=staging plan -input=false -no-color -out=$PLAN -detailed-exitcode",
            "TF_WORKSPACE=staging show -json $PLAN",
            "TF_WORKSPACE=staging apply -input=false -no-color $PLAN",
            "TF_WORKSPACE=staging output -json",
        ]
    );
    let doc = report(&out);
    let p = provision(&doc);
    assert_eq!(p["status"], "succeeded");
    assert_eq!(
        p["summary"],
        "Plan: 2 to add, 1 to change, 0 to destroy; applied"
    );
    assert!(
        p["details"][0]
            .as_str()
            .unwrap()
            .contains("workspace staging created"),
        "{p}"
    );
    assert_eq!(
        infra.terraform.plans_left(),
        [] as [PathBuf; 0],
        "the saved plan is removed"
    );
    assert_eq!(
        infra.terraform.state("staging").unwrap()["planned_in"],
        "staging"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("terraform apply: Apply complete!"),
        "terraform's output streams to the log, prefixed: {stderr}"
    );

    let out = infra.run("changes", "{}", &[], ONLY);
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(
        infra.commands(),
        [
            "init -input=false -no-color",
            "workspace list",
            "TF_WORKSPACE=staging plan -input=false -no-color -out=$PLAN -detailed-exitcode",
            "TF_WORKSPACE=staging show -json $PLAN",
            "TF_WORKSPACE=staging apply -input=false -no-color $PLAN",
            "TF_WORKSPACE=staging output -json",
        ]
    );
}

/// Another run in the same directory (a dry run for another environment,
/// or a person) selecting its workspace while a run is between its plan
/// and its apply: the run still applies its own plan to its own
/// workspace. (It selected its workspace once, at the start, and terraform
/// applies a saved plan to whatever workspace is selected at the time.)
#[test]
fn a_workspace_selected_meanwhile_in_the_same_directory_does_not_move_the_apply() {
    let infra = Infra::new();
    let stand_in = |args: &[&str]| {
        let out = std::process::Command::new(StandIn::bin())
            .args(args)
            .current_dir(&infra.dir)
            .env_remove("TF_WORKSPACE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    stand_in(&["workspace", "new", "production"]);
    let gate = infra.world.dir.path().join("plan-gate");
    infra.terraform.hold_plans_until(&gate);
    let run = std::thread::scope(|s| {
        let running = s.spawn(|| {
            infra.run(
                "changes",
                "{}",
                &[],
                &["--only", "provision", "--output", "json"],
            )
        });
        infra.terraform.wait_for_saved_plan();
        stand_in(&["workspace", "select", "production"]);
        std::fs::write(&gate, "").unwrap();
        running.join().unwrap()
    });
    assert_exit(&run, exit_code::SUCCESS);
    assert_eq!(
        infra
            .terraform
            .state("staging")
            .map(|s| s["planned_in"].clone()),
        Some("staging".into()),
        "staging's plan is in staging's state"
    );
    assert_eq!(
        infra.terraform.state("production"),
        None,
        "production's state was written by staging's run"
    );
}

#[test]
fn no_changes_skips_the_apply() {
    let infra = Infra::new();
    let out = infra.run("no-changes", "{}", &[], ONLY);
    assert_exit(&out, exit_code::SUCCESS);
    let cmds = infra.commands();
    assert!(!cmds.iter().any(|c| c.contains(" apply ")), "{cmds:?}");
    assert!(!cmds.iter().any(|c| c.contains(" show ")), "{cmds:?}");
    assert_eq!(
        cmds.last().map(String::as_str),
        Some("TF_WORKSPACE=staging output -json")
    );
    assert_eq!(
        provision(&report(&out))["summary"],
        "no changes: the infrastructure matches the configuration"
    );
}

#[test]
fn a_plan_error_fails_the_phase_with_terraforms_stderr_and_applies_nothing() {
    let infra = Infra::new();
    let out = infra.run("plan-error", "{}", &[], ONLY);
    // Nothing changed: a refusal.
    assert_exit(&out, exit_code::REFUSED);
    let cmds = infra.commands();
    assert!(!cmds.iter().any(|c| c.contains(" apply ")), "{cmds:?}");
    let doc = report(&out);
    let msg = doc["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
        + &doc.to_string();
    assert!(msg.contains("exit 1"), "{msg}");
    assert!(
        msg.contains("No valid credential sources found for AWS Provider"),
        "{msg}"
    );
}

#[test]
fn a_plan_that_destroys_stops_the_run_unless_allowed() {
    let infra = Infra::new();
    let out = infra.run("destroy", "{}", &[], ONLY);
    assert_exit(&out, exit_code::REFUSED);
    let cmds = infra.commands();
    assert!(!cmds.iter().any(|c| c.contains(" apply ")), "{cmds:?}");
    let all = report(&out).to_string();
    assert!(all.contains("--allow-destroy"), "{all}");
    assert!(all.contains("aws_db_instance.legacy"), "{all}");
    assert_eq!(infra.terraform.plans_left(), [] as [PathBuf; 0]);

    let mut args = ONLY.to_vec();
    args.push("--allow-destroy");
    let out = infra.run("destroy", "{}", &[], &args);
    assert_exit(&out, exit_code::SUCCESS);
    assert!(
        infra
            .commands()
            .contains(&"TF_WORKSPACE=staging apply -input=false -no-color $PLAN".to_string())
    );
    assert_eq!(
        provision(&report(&out))["summary"],
        "Plan: 1 to add, 0 to change, 2 to destroy; applied"
    );
}

#[test]
fn outputs_fill_unset_variables_and_sensitive_values_stay_hidden() {
    let infra = Infra::new();
    let outputs = r#"{
      "redis_url": {"sensitive": true, "type": "string", "value": "rediss://:tf-redis-Secret77@cache.internal:6380/0"},
      "image_tag": {"sensitive": false, "type": "string", "value": "from-terraform"},
      "vpc_id": {"sensitive": false, "type": "string", "value": "vpc-0abc"}
    }"#;
    let out = infra.run("no-changes", outputs, &[("REDIS_URL", "")], ONLY);
    assert_exit(&out, exit_code::SUCCESS);
    let all = text(&out);
    assert!(!all.contains("tf-redis-Secret77"), "{all}");
    let p = provision(&report(&out)).clone();
    let details = p["details"].to_string();
    assert!(
        details.contains("filled from terraform outputs: REDIS_URL"),
        "IMAGE_TAG is set, so only REDIS_URL is filled: {details}"
    );
    assert!(!details.contains("IMAGE_TAG"), "{details}");
    // The snapshot names the variables filled, never their values.
    let snap = &infra.world.snapshots()[0];
    let record: &InfrastructureRecord = snap.infrastructure.as_ref().unwrap();
    assert_eq!(record.filled, ["REDIS_URL"]);
    assert!(!record.applied, "no changes, nothing applied");
    let snapshots = serde_json::to_string(&infra.world.snapshots()).unwrap();
    assert!(!snapshots.contains("tf-redis-Secret77"), "{snapshots}");
}

/// terraform prints output values in its plan and at the end of its apply,
/// in the clear for an output the module did not mark sensitive, before
/// the tool reads the outputs and knows `database_url` is a secret: those
/// lines are never shown, even with `-v`, which shows the rest.
#[test]
fn an_output_not_marked_sensitive_is_shown_by_neither_plan_nor_apply() {
    let infra = Infra::new();
    let outputs = r#"{
      "database_url": {"sensitive": false, "type": "string", "value": "postgres://maily:tf-Db-pass-42@db.internal:5432/maily"}
    }"#;
    let mut args = ONLY.to_vec();
    args.push("-v");
    let out = infra.run("changes", outputs, &[("DATABASE_URL", "")], &args);
    assert_exit(&out, exit_code::SUCCESS);
    let all = text(&out);
    assert!(!all.contains("tf-Db-pass-42"), "{all}");
    assert!(
        all.contains("Apply complete!"),
        "apply's own lines are shown: {all}"
    );
    assert!(all.contains("output values not shown"), "{all}");
    let details = provision(&report(&out))["details"].to_string();
    assert!(
        details.contains("filled from terraform outputs: DATABASE_URL"),
        "{details}"
    );
}

#[test]
fn a_dry_run_plans_and_never_applies() {
    let infra = Infra::new();
    // First dry run: no workspace yet, and none is created.
    let mut args = ONLY.to_vec();
    args.push("--dry-run");
    let out = infra.run("changes", "{}", &[], &args);
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(
        infra.commands(),
        ["init -input=false -no-color", "workspace list"]
    );
    assert!(!infra.dir.join("terraform.tfstate.d/staging").exists());

    // Once the workspace exists, a dry run plans in it.
    infra.run("no-changes", "{}", &[], ONLY);
    infra.commands();
    let out = infra.run("destroy", "{}", &[], &args);
    assert_exit(&out, exit_code::SUCCESS);
    let cmds = infra.commands();
    assert_eq!(
        cmds,
        [
            "init -input=false -no-color",
            "workspace list",
            "TF_WORKSPACE=staging plan -input=false -no-color -out=$PLAN -detailed-exitcode",
            "TF_WORKSPACE=staging show -json $PLAN",
        ]
    );
    let all = report(&out).to_string();
    assert!(
        all.contains("Plan: 1 to add, 0 to change, 2 to destroy"),
        "{all}"
    );
    assert!(all.contains("--allow-destroy"), "{all}");
}

/// provision and migrate, `TERRAFORM_PROVIDES=DATABASE_URL` with no such
/// output (only `vpc_id`), after a plan of `scenario`.
fn provides_an_output_it_has_not(infra: &Infra, scenario: &str) -> std::process::Output {
    infra.run(
        scenario,
        r#"{"vpc_id": {"sensitive": false, "type": "string", "value": "vpc-1"}}"#,
        &[("TERRAFORM_PROVIDES", "DATABASE_URL"), ("DATABASE_URL", "")],
        &["--only", "provision,migrate", "--output", "json"],
    )
}

#[test]
fn a_variable_terraform_should_provide_but_does_not_is_a_configuration_error() {
    let infra = Infra::new();
    let out = provides_an_output_it_has_not(&infra, "no-changes");
    assert_exit(&out, exit_code::CONFIG);
    let all = report(&out).to_string();
    assert!(
        all.contains("TERRAFORM_PROVIDES names it, but no terraform output database_url fills it"),
        "{all}"
    );
    // The failed run's snapshot still says what terraform did.
    let snap = &infra.world.snapshots()[0];
    let record: &InfrastructureRecord = snap.infrastructure.as_ref().unwrap();
    assert_eq!(record.workspace, "staging");
    assert!(!record.applied && record.filled.is_empty(), "{record:?}");
}

/// The same missing output after a real apply: the infrastructure has
/// changed, so the run fails (exit 4), never "configuration" (exit 3),
/// whose promise is that nothing changed.
#[test]
fn outputs_that_do_not_fit_after_an_apply_fail_the_run_not_the_configuration() {
    let infra = Infra::new();
    let out = provides_an_output_it_has_not(&infra, "changes");
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    let doc = report(&out);
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("terraform applied the plan, then its outputs could not be used"),
        "{doc}"
    );
    assert!(!message.contains("nothing was changed"), "{doc}");
    // Each problem is still named, with its fix.
    assert!(
        doc.to_string()
            .contains("TERRAFORM_PROVIDES names it, but no terraform output database_url fills it"),
        "{doc}"
    );
    let snap = &infra.world.snapshots()[0];
    let record: &InfrastructureRecord = snap.infrastructure.as_ref().unwrap();
    assert!(record.applied, "{record:?}");
}

#[test]
fn a_failed_apply_fails_the_phase_with_terraforms_stderr_and_removes_the_plan() {
    let infra = Infra::new();
    let out = infra.run("apply-error", "{}", &[], ONLY);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    let cmds = infra.commands();
    assert_eq!(
        cmds.last().map(String::as_str),
        Some("TF_WORKSPACE=staging apply -input=false -no-color $PLAN"),
        "no outputs are read after a failed apply: {cmds:?}"
    );
    let all = report(&out).to_string();
    assert!(
        all.contains("apply -input=false -no-color ")
            && all.contains("maily-deploy.tfplan failed (exit 1)"),
        "{all}"
    );
    assert!(
        all.contains("Cannot upgrade postgres from 15 to 14"),
        "{all}"
    );
    assert_eq!(infra.terraform.plans_left(), [] as [PathBuf; 0]);
}

/// `maily-deploy staging --only provision <extra>` with the stand-in
/// answering `scenario`, stopped by SIGINT once `started` says terraform is
/// inside its work: terraform must get one SIGINT (it logs `interrupted`),
/// the run exit 130, and no saved plan be left.
fn stopped_inside(infra: &Infra, scenario: &str, extra: &[&str], started: impl Fn() -> bool) {
    use std::process::Stdio;
    let mut vars = infra.terraform.vars();
    vars.push(("IMAGE_TAG", "v1".into()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env_file = infra.world.env_file(&vars);
    let child = infra
        .world
        .process()
        .args(["staging", "--only", "provision"])
        .args(extra)
        .arg("--env-file")
        .arg(&env_file)
        .env("TF_STANDIN_LOG", &infra.terraform.log)
        .env("TF_STANDIN_SCENARIO", scenario)
        .env("TF_STANDIN_OUTPUTS", "{}")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let since = std::time::Instant::now();
    while !started() {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "terraform never began its {scenario} work"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Give the stand-in a moment to be inside its work.
    std::thread::sleep(Duration::from_millis(500));
    let out = interrupt(child, Duration::from_secs(300)).expect("the run stopped");
    assert_exit(&out, exit_code::INTERRUPTED);
    let cmds = infra.commands();
    assert_eq!(
        cmds.last().map(String::as_str),
        Some("interrupted"),
        "terraform was stopped by SIGINT, not killed: {cmds:?}"
    );
    assert_eq!(
        infra.terraform.plans_left(),
        [] as [PathBuf; 0],
        "the saved plan was left behind"
    );
}

/// A dry run stopped during `terraform plan` stops it as a run does: one
/// SIGINT, and the plan file (which holds values in the clear) removed.
/// (A dry run kept Ctrl-C's default: the tool died, terraform ran on in
/// its own process group, state lock and plan file left behind.)
#[test]
fn a_dry_run_stopped_during_plan_stops_terraform_gracefully_and_removes_the_plan() {
    let infra = Infra::new();
    // A dry run plans in a workspace that exists: a first run makes it.
    infra.run("no-changes", "{}", &[], ONLY);
    infra.commands();
    stopped_inside(&infra, "plan-slow", &["--dry-run"], || {
        infra.terraform.has_saved_plan()
    });
}

/// A run stopped during `terraform apply` stops terraform the way
/// terraform wants to be stopped: one SIGINT, time to finish the calls in
/// flight and write its state (SIGKILL would leave its state lock held
/// and resources out of the state), and the saved plan removed.
#[test]
fn a_run_stopped_during_apply_stops_terraform_gracefully_and_removes_the_plan() {
    let infra = Infra::new();
    stopped_inside(&infra, "apply-slow", &[], || {
        infra.terraform.peek().iter().any(|l| l.contains(" apply "))
    });
}
