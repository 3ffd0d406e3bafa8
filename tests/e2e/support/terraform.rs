//! The terraform stand-in (`tests/fixtures/bin/terraform`: no terraform can
//! be installed here), a working directory for it, and the command lines it
//! received.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use assert_cmd::Command;

use super::repo;

pub struct StandIn {
    /// `TERRAFORM_DIR`: where the configuration and the workspaces live.
    pub dir: PathBuf,
    /// Where the stand-in appends each command line.
    pub log: PathBuf,
    /// Every saved plan a command line named, to check none is left.
    plans: Mutex<Vec<PathBuf>>,
    /// When set, every plan waits, its plan saved, until this file exists.
    gate: Mutex<Option<PathBuf>>,
}

/// What a command line shows for the saved plan, whose directory is the
/// run's own and random.
pub const PLAN: &str = "$PLAN";

impl StandIn {
    /// A stand-in working under `root`.
    pub fn new(root: &Path) -> StandIn {
        let dir = root.join("terraform");
        std::fs::create_dir_all(&dir).unwrap();
        StandIn {
            dir,
            log: root.join("terraform.log"),
            plans: Mutex::new(Vec::new()),
            gate: Mutex::new(None),
        }
    }

    /// `TERRAFORM_BIN`.
    pub fn bin() -> PathBuf {
        repo().join("tests/fixtures/bin/terraform")
    }

    /// The variables that point provision at the stand-in.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TERRAFORM_DIR", self.dir.to_str().unwrap().to_string()),
            ("TERRAFORM_BIN", Self::bin().to_str().unwrap().to_string()),
        ]
    }

    /// Let `cmd` run the stand-in answering `scenario` (see the script) with
    /// `outputs` as `terraform output -json`.
    pub fn answer<'c>(
        &self,
        cmd: &'c mut Command,
        scenario: &str,
        outputs: &str,
    ) -> &'c mut Command {
        if let Some(gate) = self.gate.lock().unwrap().as_ref() {
            cmd.env("TF_STANDIN_PLAN_GATE", gate);
        }
        cmd.env("TF_STANDIN_LOG", &self.log)
            .env("TF_STANDIN_SCENARIO", scenario)
            .env("TF_STANDIN_OUTPUTS", outputs)
    }

    /// From now on every plan waits, its plan saved, until `gate` exists.
    pub fn hold_plans_until(&self, gate: &Path) {
        *self.gate.lock().unwrap() = Some(gate.to_path_buf());
    }

    /// The command lines terraform received so far, as received.
    pub fn peek(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().map(String::from).collect()
    }

    /// Whether a plan a command line named is saved.
    pub fn has_saved_plan(&self) -> bool {
        self.peek()
            .iter()
            .filter_map(|l| plan_in(l))
            .any(|p| self.dir.join(p).exists())
    }

    /// Wait (at most a minute) until a plan a command line named is saved.
    pub fn wait_for_saved_plan(&self) {
        let started = std::time::Instant::now();
        while !self.has_saved_plan() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "terraform plan never saved its plan"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The command lines terraform received, the saved plan's path shown
    /// as [`PLAN`], and forget them.
    pub fn commands(&self) -> Vec<String> {
        let lines = self.peek();
        let _ = std::fs::remove_file(&self.log);
        lines
            .iter()
            .map(|line| {
                if let Some(plan) = plan_in(line) {
                    self.plans.lock().unwrap().push(plan.clone());
                    line.replace(plan.to_str().unwrap(), PLAN)
                } else {
                    line.clone()
                }
            })
            .collect()
    }

    /// The saved plans named so far that are still on disk, and any plan
    /// file in the configuration directory (none should be: each run saves
    /// its plan in a private directory of its own).
    pub fn plans_left(&self) -> Vec<PathBuf> {
        let named = self
            .peek()
            .iter()
            .filter_map(|l| plan_in(l))
            .collect::<Vec<_>>();
        self.plans.lock().unwrap().extend(named);
        let mut left: Vec<PathBuf> = self
            .plans
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect();
        left.extend(
            std::fs::read_dir(&self.dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "tfplan")),
        );
        left
    }

    /// The state terraform keeps for `workspace` (what the stand-in's
    /// applies wrote there), if any.
    pub fn state(&self, workspace: &str) -> Option<serde_json::Value> {
        let path = if workspace == "default" {
            self.dir.join("terraform.tfstate")
        } else {
            self.dir
                .join("terraform.tfstate.d")
                .join(workspace)
                .join("terraform.tfstate")
        };
        let text = std::fs::read_to_string(path).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }
}

/// The saved plan a command line names (`-out=<path>`, or the last word of
/// `show` and `apply`).
pub fn plan_in(line: &str) -> Option<PathBuf> {
    line.split_whitespace()
        .map(|w| w.trim_start_matches("-out="))
        .find(|w| w.ends_with(".tfplan"))
        .map(PathBuf::from)
}
