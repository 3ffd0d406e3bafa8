//! Where the control plane's binaries and CRDs are: what
//! `scripts/setup.d/kubernetes.sh` built and fetched, or binaries the user
//! already has (`MAILY_K8S_BIN`, as envtest's `KUBEBUILDER_ASSETS`).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The programs a control plane runs.
pub const BINARIES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

pub struct Assets {
    pub bin: PathBuf,
    /// The real CRDs (Gateway API standard channel, the Prometheus
    /// operator's ServiceMonitor and PrometheusRule), one file each.
    pub crds: PathBuf,
    /// kwok's default pod and node stages, as its module ships them
    /// (`all.yaml` holds them all).
    pub kwok_stages: PathBuf,
}

/// `$MAILY_CACHE` or `~/.cache/maily-deploy`, where the setup script keeps
/// one directory per pinned version set and `kubernetes/current` names the
/// one in use.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("MAILY_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/maily-deploy")
}

/// The real CRDs `scripts/setup.d/kubernetes.sh` took from their modules
/// (`gateway-api/gateway.networking.k8s.io_httproutes.yaml`,
/// `prometheus-operator/monitoring.coreos.com_servicemonitors.yaml`, ...):
/// kubesim worlds install them too, so both clusters serve the same kinds.
pub fn crds() -> Result<PathBuf> {
    let dir = cache_root().join("kubernetes/current/crds");
    if !dir.is_dir() {
        bail!(
            "{} is missing; run scripts/setup.d/kubernetes.sh (scripts/test does)",
            dir.display()
        );
    }
    Ok(dir)
}

pub fn locate() -> Result<Assets> {
    let current = cache_root().join("kubernetes/current");
    let bin = match std::env::var_os("MAILY_K8S_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => current.join("bin"),
    };
    let missing: Vec<&str> = BINARIES
        .iter()
        .copied()
        .filter(|b| !bin.join(b).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the real control plane's binaries are missing from {}: {}; \
             run scripts/setup.d/kubernetes.sh (scripts/test does), or point MAILY_K8S_BIN at a directory holding {}",
            bin.display(),
            missing.join(", "),
            BINARIES.join(", ")
        );
    }
    let crds = crds()?;
    let kwok_stages = current.join("kwok-stages");
    if !kwok_stages.join("all.yaml").is_file() {
        bail!(
            "{} is missing; run scripts/setup.d/kubernetes.sh (scripts/test does)",
            kwok_stages.join("all.yaml").display()
        );
    }
    Ok(Assets {
        bin,
        crds,
        kwok_stages,
    })
}

/// The YAML files under a directory (and its subdirectories), sorted by
/// path.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(yaml_files(&path)?);
        } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
