//! The terraform stand-in (`tests/fixtures/bin/terraform`: no terraform can
//! be installed here), a working directory for it, and the command lines it
//! received.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

use super::repo;

pub struct StandIn {
    /// `TERRAFORM_DIR`: where workspaces and the saved plan live.
    pub dir: PathBuf,
    /// Where the stand-in appends each command line.
    pub log: PathBuf,
}

impl StandIn {
    /// A stand-in working under `root`.
    pub fn new(root: &Path) -> StandIn {
        let dir = root.join("terraform");
        std::fs::create_dir_all(&dir).unwrap();
        StandIn {
            dir,
            log: root.join("terraform.log"),
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
        cmd.env("TF_STANDIN_LOG", &self.log)
            .env("TF_STANDIN_SCENARIO", scenario)
            .env("TF_STANDIN_OUTPUTS", outputs)
    }

    /// The command lines terraform received, and forget them.
    pub fn commands(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        text.lines().map(String::from).collect()
    }
}
