//! The Terraform CLI driver (OpenTofu's `tofu` takes the same commands).
//!
//! The decisions are pure functions (which command lines, what an exit code
//! of `plan -detailed-exitcode` means, what a saved plan would do, which
//! outputs fill which variables), unit-tested here; [`Terraform`] only runs
//! the commands, streams their output to the log with a prefix, and brings
//! the exit status and stderr back into the error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::child_output;
use crate::config::Vars;
use crate::config::spec;
use crate::error::{Kind, fail};

/// The saved plan's file name, in a directory of the run's own (see
/// [`Terraform::plan_file`]). `apply` takes only this file, so what is
/// applied is exactly what was planned.
pub const PLAN_FILE: &str = "maily-deploy.tfplan";

/// The variable terraform reads the workspace from, in place of the
/// directory's selection (`.terraform/environment`).
pub const WORKSPACE_VAR: &str = "TF_WORKSPACE";

/// The command lines of the steps, as argv after the executable.
pub mod args {
    use std::path::Path;

    pub fn init() -> Vec<String> {
        strings(&["init", "-input=false", "-no-color"])
    }
    pub fn workspace_list() -> Vec<String> {
        strings(&["workspace", "list"])
    }
    pub fn workspace_new(workspace: &str) -> Vec<String> {
        strings(&["workspace", "new", workspace])
    }
    pub fn plan(plan_file: &Path) -> Vec<String> {
        vec![
            "plan".into(),
            "-input=false".into(),
            "-no-color".into(),
            format!("-out={}", plan_file.display()),
            "-detailed-exitcode".into(),
        ]
    }
    pub fn show_plan(plan_file: &Path) -> Vec<String> {
        vec![
            "show".into(),
            "-json".into(),
            plan_file.display().to_string(),
        ]
    }
    pub fn apply(plan_file: &Path) -> Vec<String> {
        vec![
            "apply".into(),
            "-input=false".into(),
            "-no-color".into(),
            plan_file.display().to_string(),
        ]
    }
    pub fn output() -> Vec<String> {
        strings(&["output", "-json"])
    }

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }
}

/// The workspace a command runs in through [`WORKSPACE_VAR`], or `None`
/// for the commands run without it: `init` and `workspace`, which refuse
/// or misread an override naming a workspace not created yet.
///
/// Every other command names its workspace itself rather than going by
/// the directory's selection, which `workspace select` changes for every
/// command run there: a dry run for staging selecting its workspace while
/// a production run is between its plan and its apply would otherwise
/// have production's plan applied to staging's state (terraform applies a
/// saved plan to whatever workspace is selected; hashicorp/terraform#37954).
pub fn workspace_for<'a>(args: &[String], workspace: &'a str) -> Option<&'a str> {
    match args.first().map(String::as_str) {
        Some("init" | "workspace") | None => None,
        Some(_) => Some(workspace),
    }
}

/// What `plan -detailed-exitcode` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanExit {
    /// Exit 0: succeeded, the infrastructure matches the configuration.
    NoChanges,
    /// Exit 2: succeeded, and there are changes to apply.
    Changes,
    /// Exit 1 (or anything else, or a signal): the plan failed.
    Failed,
}

/// The meaning of `plan -detailed-exitcode`'s status: 0 no changes, 1 error,
/// 2 changes present (Terraform's documented contract).
pub fn plan_exit(code: Option<i32>) -> PlanExit {
    match code {
        Some(0) => PlanExit::NoChanges,
        Some(2) => PlanExit::Changes,
        _ => PlanExit::Failed,
    }
}

/// What a saved plan would do, counted as `Plan: N to add, M to change, K to
/// destroy.` counts it (a replacement is one add and one destroy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

impl PlanSummary {
    pub fn is_empty(&self) -> bool {
        self.add == 0 && self.change == 0 && self.destroy == 0
    }
}

impl std::fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to add, {} to change, {} to destroy",
            self.add, self.change, self.destroy
        )
    }
}

#[derive(Deserialize)]
struct ShowJson {
    #[serde(default)]
    resource_changes: Vec<ResourceChange>,
}

#[derive(Deserialize)]
struct ResourceChange {
    #[serde(default)]
    address: String,
    change: Change,
}

#[derive(Deserialize)]
struct Change {
    actions: Vec<String>,
}

/// The summary and the addresses to be destroyed, from `terraform show -json
/// <planfile>`'s `resource_changes[].change.actions` (`no-op`, `create`,
/// `read`, `update`, `delete`, and `["delete","create"]` or
/// `["create","delete"]` for a replacement).
pub fn summarize_plan(show_json: &str) -> anyhow::Result<(PlanSummary, Vec<String>)> {
    let plan: ShowJson = serde_json::from_str(show_json)
        .map_err(|e| anyhow::anyhow!("terraform show -json gave no plan JSON: {e}"))?;
    let mut s = PlanSummary::default();
    let mut destroyed = Vec::new();
    for rc in plan.resource_changes {
        let has = |a: &str| rc.change.actions.iter().any(|x| x == a);
        if has("create") {
            s.add += 1;
        }
        if has("update") {
            s.change += 1;
        }
        if has("delete") {
            s.destroy += 1;
            destroyed.push(rc.address.clone());
        }
    }
    Ok((s, destroyed))
}

/// One output of `terraform output -json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TfOutput {
    #[serde(default)]
    pub sensitive: bool,
    pub value: serde_json::Value,
}

/// `terraform output -json`: an object of `{"<name>": {"sensitive": bool,
/// "type": ..., "value": ...}}`.
pub fn parse_outputs(json: &str) -> anyhow::Result<BTreeMap<String, TfOutput>> {
    serde_json::from_str(json)
        .map_err(|e| anyhow::anyhow!("terraform output -json gave no outputs JSON: {e}"))
}

/// A variable an output fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub variable: &'static str,
    pub value: String,
    /// Sensitive in Terraform, or a secret in the spec.
    pub secret: bool,
}

/// The variables of the spec that outputs fill: an output named like a
/// variable (`database_url` → `DATABASE_URL`) whose value is a string,
/// number or boolean, for a variable that is unset or empty. A value already
/// set wins: the operator's word beats the infrastructure's.
pub fn fills(outputs: &BTreeMap<String, TfOutput>, vars: &Vars) -> Vec<Fill> {
    let mut out = Vec::new();
    for (name, o) in outputs {
        let Some(spec) = spec::lookup(&name.to_ascii_uppercase()) else {
            continue;
        };
        if vars.get(spec.name).is_some_and(|v| !v.is_empty()) {
            continue;
        }
        let value = match &o.value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        out.push(Fill {
            variable: spec.name,
            value,
            secret: o.sensitive || spec.secret,
        });
    }
    out
}

/// The last lines of a command's stderr, for an error message.
pub fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(20);
    lines[start..].join("\n")
}

/// How a command ended.
#[derive(Debug, Clone)]
pub struct Ran {
    pub code: Option<i32>,
    /// stdout, when captured rather than streamed.
    pub stdout: String,
    pub stderr: String,
}

/// The Terraform executable in its directory, for one workspace.
#[derive(Debug)]
pub struct Terraform {
    pub bin: String,
    pub dir: PathBuf,
    pub workspace: String,
    /// The run's own directory for the saved plan: outside the shared
    /// configuration directory, so two runs there (a dry run beside a
    /// deploy) never apply or show each other's plan, and private (0700),
    /// since a plan may hold sensitive values. Removed with the value.
    plan_dir: tempfile::TempDir,
}

/// A terraform process until it exits. A run stopped meanwhile (a
/// signal, the lock lost) drops it: then terraform gets SIGINT, its own
/// graceful stop (it finishes the resource calls in flight, writes its
/// state and releases the state lock; SIGKILL would leave the lock held
/// and created resources out of the state), a bounded time to finish, and
/// the saved plan, which may hold sensitive values, is removed. The runner
/// waits for this before it releases the deploy lock.
struct Running {
    child: Option<tokio::process::Child>,
    what: String,
    plan: PathBuf,
}

/// How long a stopped terraform may take to finish its graceful stop.
const GRACEFUL_STOP: std::time::Duration = std::time::Duration::from_secs(120);

impl Running {
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let status = match self.child.as_mut() {
            Some(child) => child.wait().await,
            None => Err(std::io::Error::other("no process")),
        };
        self.child = None;
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let (what, plan) = (self.what.clone(), self.plan.clone());
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        tracing::warn!(
            "stopping {what}: SIGINT, up to {}s to finish",
            GRACEFUL_STOP.as_secs()
        );
        crate::interrupt::put_back_later(&what.clone(), async move {
            match tokio::time::timeout(GRACEFUL_STOP, child.wait()).await {
                Ok(_) => tracing::warn!("{what} stopped"),
                Err(_) => {
                    let _ = child.kill().await;
                    tracing::error!(
                        "{what} did not stop within {}s of SIGINT and was killed; its state lock may still be held (terraform force-unlock)",
                        GRACEFUL_STOP.as_secs()
                    );
                }
            }
            let _ = std::fs::remove_file(&plan);
        });
    }
}

impl Terraform {
    pub fn new(
        bin: impl Into<String>,
        dir: impl Into<PathBuf>,
        workspace: impl Into<String>,
    ) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let plan_dir = tempfile::Builder::new()
            .prefix("maily-deploy-tfplan-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| {
                fail(
                    Kind::Config,
                    format!(
                        "cannot make a private directory for the Terraform plan in {}: {e}; set TMPDIR to a writable directory",
                        std::env::temp_dir().display()
                    ),
                )
            })?;
        Ok(Terraform {
            bin: bin.into(),
            dir: dir.into(),
            workspace: workspace.into(),
            plan_dir,
        })
    }

    pub fn plan_file(&self) -> PathBuf {
        self.plan_dir.path().join(PLAN_FILE)
    }

    /// Run `terraform <args>` in the directory, streaming stdout (unless
    /// `capture`) and stderr to the log, each line prefixed `terraform
    /// <subcommand>:`. Captured stdout (JSON that may hold sensitive values)
    /// is never logged. The process environment is passed on as it is, so
    /// credentials reach terraform without the tool ever reading them;
    /// but [`WORKSPACE_VAR`] is the run's own ([`workspace_for`]).
    pub async fn run(&self, args: &[String], capture: bool) -> anyhow::Result<Ran> {
        let sub = args.first().map(String::as_str).unwrap_or("");
        let mut command = tokio::process::Command::new(&self.bin);
        match workspace_for(args, &self.workspace) {
            Some(workspace) => command.env(WORKSPACE_VAR, workspace),
            None => command.env_remove(WORKSPACE_VAR),
        };
        let mut child = command
            .args(args)
            .current_dir(&self.dir)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C at the terminal reaches the
            // tool alone, which then sends terraform exactly one SIGINT (a
            // second one makes terraform exit at once).
            .process_group(0)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    fail(
                        Kind::Config,
                        format!(
                            "TERRAFORM_BIN {} is not found on PATH; install terraform (or OpenTofu), or set TERRAFORM_BIN to its path",
                            self.bin
                        ),
                    )
                } else {
                    fail(
                        Kind::PhaseFailed,
                        format!("cannot start {} {sub}: {e}", self.bin),
                    )
                }
            })?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let mut running = Running {
            child: Some(child),
            what: format!("{} {sub}", self.bin),
            plan: self.plan_file(),
        };
        let prefix = format!("terraform {sub}");
        let stdout_read = async {
            if !capture {
                log_lines(stdout, &prefix, false, 0).await;
                return Ok(String::new());
            }
            match child_output::whole(stdout, MAX_CAPTURED_BYTES).await {
                Ok(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Ok(None) => Err(fail(
                    failure_kind(args),
                    format!(
                        "{} {} in {} printed more than {MAX_CAPTURED_BYTES} bytes, more than the tool reads",
                        self.bin,
                        args.join(" "),
                        self.dir.display()
                    ),
                )),
                Err(e) => Err(anyhow::anyhow!("reading {} {sub}: {e}", self.bin)),
            }
        };
        let (stdout, stderr, status) = tokio::try_join!(
            stdout_read,
            async { Ok(log_lines(stderr, &prefix, true, KEPT_STDERR_LINES).await) },
            async {
                running
                    .wait()
                    .await
                    .map_err(|e| anyhow::anyhow!("waiting for {} {sub}: {e}", self.bin))
            },
        )?;
        Ok(Ran {
            code: status.code(),
            stdout,
            stderr,
        })
    }

    /// Run and require exit 0; otherwise a phase failure with the status and
    /// stderr.
    pub async fn run_ok(&self, args: &[String], capture: bool) -> anyhow::Result<Ran> {
        let ran = self.run(args, capture).await?;
        if ran.code == Some(0) {
            Ok(ran)
        } else {
            Err(self.failed(args, &ran))
        }
    }

    /// The error for a command that failed.
    pub fn failed(&self, args: &[String], ran: &Ran) -> anyhow::Error {
        let status = match ran.code {
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".into(),
        };
        fail(
            failure_kind(args),
            format!(
                "{} {} failed ({status}) in {}: {}",
                self.bin,
                args.join(" "),
                self.dir.display(),
                stderr_tail(&ran.stderr)
            ),
        )
    }

    /// Create the run's workspace when it does not exist; returns whether
    /// it was created. Nothing is selected: the commands after name it
    /// themselves ([`workspace_for`]).
    pub async fn ensure_workspace(&self) -> anyhow::Result<bool> {
        if self.has_workspace().await? {
            return Ok(false);
        }
        self.run_ok(&args::workspace_new(&self.workspace), false)
            .await?;
        Ok(true)
    }

    /// Whether the run's workspace exists, without creating it.
    pub async fn has_workspace(&self) -> anyhow::Result<bool> {
        let ran = self.run_ok(&args::workspace_list(), true).await?;
        Ok(workspace_listed(&ran.stdout, &self.workspace))
    }

    /// Remove the saved plan (it may hold sensitive values).
    pub fn remove_plan(&self) {
        let _ = std::fs::remove_file(self.plan_file());
    }
}

/// Whether `terraform workspace list` output names the workspace (the
/// current one is marked `* `).
pub fn workspace_listed(list: &str, workspace: &str) -> bool {
    list.lines()
        .map(|l| l.trim().trim_start_matches('*').trim())
        .any(|l| l == workspace)
}

/// The blocks where terraform prints output values: apply's `Outputs:`
/// (its last lines) and plan's `Changes to Outputs:` (indented lines). An
/// output not marked sensitive shows its value in the clear there, before
/// the tool has read the outputs (`terraform output -json`) and registered
/// those named like a secret (`database_url`), so their lines are not logged.
#[derive(Debug, Default)]
pub struct OutputValues {
    hiding: Option<OutputsBlock>,
}

#[derive(Debug, Clone, Copy)]
enum OutputsBlock {
    Apply,
    Plan,
}

impl OutputValues {
    /// Whether `line`, the next of terraform's stdout, may be logged.
    pub fn shows(&mut self, line: &str) -> bool {
        match self.hiding {
            Some(OutputsBlock::Apply) => false,
            Some(OutputsBlock::Plan) if line.is_empty() || line.starts_with(' ') => false,
            _ => {
                self.hiding = match line.trim_end() {
                    "Outputs:" => Some(OutputsBlock::Apply),
                    "Changes to Outputs:" => Some(OutputsBlock::Plan),
                    _ => None,
                };
                true
            }
        }
    }
}

/// The most of a captured stdout kept (the JSON of `show` and `output`):
/// a plan of many thousand resources is tens of MiB.
const MAX_CAPTURED_BYTES: usize = 256 << 20;

/// The stderr lines kept for an error message (it shows the last 20).
const KEPT_STDERR_LINES: usize = 200;

/// The kind of a command's failure: only an apply changes the
/// infrastructure; a failed init, workspace step, plan or show leaves it
/// as it was: a refusal (exit 10, or 4 once an earlier phase of the run
/// changed something).
fn failure_kind(args: &[String]) -> Kind {
    if args.first().map(String::as_str) == Some("apply") {
        Kind::PhaseFailed
    } else {
        Kind::Refused
    }
}

/// Read a stream to its end ([`child_output::lines`]), logging each line
/// (stdout at info, seen with `-v`; stderr, where terraform reports errors
/// and warnings, at warn) but no output value, and return its last `keep`
/// lines.
async fn log_lines<R: AsyncRead + Unpin>(
    reader: R,
    prefix: &str,
    is_stderr: bool,
    keep: usize,
) -> String {
    let mut values = OutputValues::default();
    let mut hidden = 0usize;
    let kept = child_output::lines(reader, keep, |line, clipped| {
        if !values.shows(line) {
            hidden += usize::from(!line.trim().is_empty());
        } else if !line.trim().is_empty() {
            if is_stderr {
                tracing::warn!("{prefix}: {line}{clipped}");
            } else {
                tracing::info!("{prefix}: {line}{clipped}");
            }
        }
    })
    .await;
    if hidden > 0 {
        tracing::info!(
            "{prefix}: ({hidden} lines of output values not shown: they may be secrets; maily-deploy reads them with terraform output -json)"
        );
    }
    kept
}

/// The directory, checked before anything runs.
pub fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(fail(
            Kind::Config,
            format!(
                "TERRAFORM_DIR {} is not a directory; set TERRAFORM_DIR to the folder of the Terraform configuration, or skip provision with --skip-provision",
                dir.display()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;

    #[test]
    fn detailed_exitcode_means_what_terraform_documents() {
        assert_eq!(plan_exit(Some(0)), PlanExit::NoChanges);
        assert_eq!(plan_exit(Some(2)), PlanExit::Changes);
        assert_eq!(plan_exit(Some(1)), PlanExit::Failed);
        assert_eq!(plan_exit(None), PlanExit::Failed);
    }

    #[test]
    fn the_plan_summary_counts_replacements_as_add_and_destroy() {
        let json = r#"{"format_version":"1.2","resource_changes":[
            {"address":"aws_db_instance.main","change":{"actions":["update"]}},
            {"address":"aws_s3_bucket.backups","change":{"actions":["create"]}},
            {"address":"aws_instance.old","change":{"actions":["delete"]}},
            {"address":"aws_instance.web","change":{"actions":["delete","create"]}},
            {"address":"data.aws_ami.x","change":{"actions":["read"]}},
            {"address":"aws_vpc.main","change":{"actions":["no-op"]}}
        ]}"#;
        let (s, destroyed) = summarize_plan(json).unwrap();
        assert_eq!(
            s,
            PlanSummary {
                add: 2,
                change: 1,
                destroy: 2
            }
        );
        assert_eq!(s.to_string(), "2 to add, 1 to change, 2 to destroy");
        assert_eq!(destroyed, ["aws_instance.old", "aws_instance.web"]);
    }

    #[test]
    fn a_plan_without_resource_changes_is_empty() {
        let (s, _) = summarize_plan(r#"{"format_version":"1.2"}"#).unwrap();
        assert!(s.is_empty());
        assert!(summarize_plan("not json").is_err());
    }

    #[test]
    fn outputs_fill_unset_variables_of_the_spec_only() {
        let outputs = parse_outputs(
            r#"{
              "database_url": {"sensitive": true, "type": "string", "value": "postgres://u:p@db/maily"},
              "redis_url": {"sensitive": false, "type": "string", "value": "rediss://cache:6380/0"},
              "image_tag": {"sensitive": false, "type": "string", "value": "v9"},
              "vpc_id": {"sensitive": false, "type": "string", "value": "vpc-1"},
              "grafana_url": {"sensitive": false, "type": ["list","string"], "value": ["a"]}
            }"#,
        )
        .unwrap();
        let mut vars = Vars::default();
        vars.set("IMAGE_TAG", "v1".into(), Source::Environment);
        vars.set("REDIS_URL", String::new(), Source::Environment);
        let f = fills(&outputs, &vars);
        assert_eq!(
            f,
            vec![
                Fill {
                    variable: "DATABASE_URL",
                    value: "postgres://u:p@db/maily".into(),
                    secret: true
                },
                Fill {
                    variable: "REDIS_URL",
                    value: "rediss://cache:6380/0".into(),
                    // not sensitive in terraform, but a secret in the spec
                    secret: true
                },
            ]
        );
    }

    #[test]
    fn command_lines_apply_only_the_saved_plan() {
        let plan = Path::new("/tmp/run/maily-deploy.tfplan");
        assert_eq!(args::init().join(" "), "init -input=false -no-color");
        assert_eq!(
            args::plan(plan).join(" "),
            "plan -input=false -no-color -out=/tmp/run/maily-deploy.tfplan -detailed-exitcode"
        );
        assert_eq!(
            args::show_plan(plan).join(" "),
            "show -json /tmp/run/maily-deploy.tfplan"
        );
        assert_eq!(
            args::apply(plan).join(" "),
            "apply -input=false -no-color /tmp/run/maily-deploy.tfplan"
        );
        assert_eq!(args::workspace_list().join(" "), "workspace list");
        assert_eq!(
            args::workspace_new("staging").join(" "),
            "workspace new staging"
        );
    }

    #[test]
    fn every_command_but_init_and_workspace_names_its_workspace() {
        let plan = Path::new("/tmp/run/maily-deploy.tfplan");
        for named in [
            args::plan(plan),
            args::show_plan(plan),
            args::apply(plan),
            args::output(),
        ] {
            assert_eq!(
                workspace_for(&named, "staging"),
                Some("staging"),
                "{named:?}"
            );
        }
        for unnamed in [
            args::init(),
            args::workspace_list(),
            args::workspace_new("staging"),
        ] {
            assert_eq!(workspace_for(&unnamed, "staging"), None, "{unnamed:?}");
        }
    }

    #[test]
    fn each_driver_saves_its_plan_in_a_private_directory_of_its_own() {
        use std::os::unix::fs::PermissionsExt;
        let one = Terraform::new("terraform", "infra", "staging").unwrap();
        let two = Terraform::new("terraform", "infra", "staging").unwrap();
        assert_ne!(one.plan_file(), two.plan_file());
        assert!(!one.plan_file().starts_with("infra"));
        let dir = one.plan_file().parent().unwrap().to_path_buf();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        drop(one);
        assert!(!dir.exists(), "the plan's directory goes with the driver");
    }

    #[test]
    fn workspace_list_marks_the_current_one() {
        let list = "  default\n* production\n  staging\n";
        assert!(workspace_listed(list, "staging"));
        assert!(workspace_listed(list, "production"));
        assert!(!workspace_listed(list, "prod"));
    }

    #[test]
    fn output_values_are_never_logged_from_plan_or_apply() {
        let plan = "Plan: 1 to add, 0 to change, 0 to destroy.\n\nChanges to Outputs:\n  + database_url = \"postgres://u:pw@db/m\"\n  + settings     = {\n      + key = \"v\"\n    }\n\n───────\n\nSaved the plan to: maily-deploy.tfplan";
        let mut f = OutputValues::default();
        let shown: Vec<&str> = plan.lines().filter(|l| f.shows(l)).collect();
        assert_eq!(
            shown,
            [
                "Plan: 1 to add, 0 to change, 0 to destroy.",
                "",
                "Changes to Outputs:",
                "───────",
                "",
                "Saved the plan to: maily-deploy.tfplan"
            ]
        );
        let apply = "aws_db_instance.main: Modifying...\nApply complete! Resources: 0 added, 1 changed, 0 destroyed.\n\nOutputs:\n\ndatabase_url = \"postgres://u:pw@db/m\"\nredis_url = <sensitive>\nmap = {\n  \"a\" = 1\n}";
        let mut f = OutputValues::default();
        let shown: Vec<&str> = apply.lines().filter(|l| f.shows(l)).collect();
        assert_eq!(
            shown,
            [
                "aws_db_instance.main: Modifying...",
                "Apply complete! Resources: 0 added, 1 changed, 0 destroyed.",
                "",
                "Outputs:"
            ]
        );
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let long: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let t = stderr_tail(&long);
        assert!(t.starts_with("line 10"));
        assert!(t.ends_with("line 29"));
    }
}
