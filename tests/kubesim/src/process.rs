//! The `kubesim` binary as a separate process, for tests that must kill the
//! client (SIGKILL) while the cluster keeps running, or that want the
//! server outside their own runtime.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A `kubesim` process; killed when dropped.
pub struct SimProcess {
    child: Child,
    url: String,
    kubeconfig_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Where cargo put the `kubesim` binary next to the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/kubesim`).
pub fn default_binary() -> Result<PathBuf> {
    if let Some(p) = option_env!("CARGO_BIN_EXE_kubesim") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .context("the test executable has no parent directory")?;
    let bin = profile_dir.join("kubesim");
    if !bin.exists() {
        bail!(
            "{} does not exist: build it with `cargo build -p kubesim`",
            bin.display()
        );
    }
    Ok(bin)
}

impl SimProcess {
    /// Starts `binary` on a free port with `extra_args` (e.g. `--token`,
    /// `--rollout-seconds`, `--image-fault`), waits for `listening on <URL>`.
    pub fn spawn(binary: &Path, extra_args: &[&str]) -> Result<SimProcess> {
        let dir = tempfile::Builder::new().prefix("kubesim-proc-").tempdir()?;
        let kubeconfig_path = dir.path().join("kubeconfig");
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig_path)
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("kubesim's first line was {line:?}, not `listening on <URL>`");
        };
        Ok(SimProcess {
            url: url.to_string(),
            child,
            kubeconfig_path,
            _dir: dir,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> Result<std::process::ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
