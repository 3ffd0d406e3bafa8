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
    /// Kept open so the process never writes into a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
    url: String,
    kubeconfig_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Where cargo put the `kubesim` binary next to the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/kubesim`).
pub fn default_binary() -> Result<PathBuf> {
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
        let mut stdout = BufReader::new(stdout);
        stdout.read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("kubesim's first line was {line:?}, not `listening on <URL>`");
        };
        Ok(SimProcess {
            url: url.to_string(),
            child,
            _stdout: stdout,
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

    /// One request to the `/_sim/` control API (plain HTTP only, not with
    /// `--tls`); returns the JSON answer, or an error for a non-2xx status.
    pub fn control(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        use std::io::{Read, Write};
        let addr = self
            .url
            .strip_prefix("http://")
            .context("the control API helper speaks plain HTTP; this sim runs with --tls")?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = std::net::TcpStream::connect(addr)?;
        write!(
            s,
            "{method} /_sim/{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, rest) = raw.split_once("\r\n\r\n").context("no HTTP response")?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status")?;
        let value: serde_json::Value =
            serde_json::from_str(rest.trim()).unwrap_or(serde_json::Value::Null);
        if !(200..300).contains(&status) {
            bail!("/_sim/{path} answered {status}: {value}");
        }
        Ok(value)
    }

    /// The request log of the process (see `Control::requests`).
    pub fn requests(&self) -> Result<Vec<crate::RequestRecord>> {
        Ok(serde_json::from_value(
            self.control("GET", "requests", None)?,
        )?)
    }

    /// `Control::set_image_fault`, over the control API.
    pub fn set_image_fault(&self, pattern: &str, fault: &crate::ImageFault) -> Result<()> {
        let body = serde_json::json!({"pattern": pattern, "fault": fault.to_string()});
        self.control("POST", "image-faults", Some(&body))
            .map(|_| ())
    }

    /// `Control::add_api_fault`, over the control API.
    pub fn add_api_fault(&self, fault: &crate::ApiFault) -> Result<()> {
        self.control("POST", "api-faults", Some(&serde_json::to_value(fault)?))
            .map(|_| ())
    }

    /// `Control::reset`, over the control API.
    pub fn reset(&self) -> Result<()> {
        self.control("POST", "reset", None).map(|_| ())
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
