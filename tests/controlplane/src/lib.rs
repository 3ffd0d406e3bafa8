//! A real Kubernetes control plane for maily-deploy's tests: etcd,
//! kube-apiserver (RBAC, the default admission plugins with PodSecurity and
//! ResourceQuota, service-account token signing), kube-controller-manager,
//! kube-scheduler, and kwok's fake nodes whose pods become Running and
//! Ready without a kubelet. Built from Go source by
//! `scripts/setup.d/kubernetes.sh`; see this crate's README.
//!
//! It is the judge of how the tool behaves on Kubernetes; kubesim stays for
//! faults on demand and speed.

pub mod assets;
mod pki;
pub mod process;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use process::Supervised;

/// What a control plane starts with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Fake nodes, named `kwok-node-0`, `kwok-node-1`, ...
    pub nodes: usize,
    /// Each node's capacity (and allocatable): CPU cores, memory in GiB,
    /// pods.
    pub node_cpu: u32,
    pub node_memory_gib: u32,
    pub node_pods: u32,
    /// The controller-manager's Deployment and ReplicaSet workers
    /// (`--concurrent-deployment-syncs`, `--concurrent-replicaset-syncs`)
    /// and its API client's rate (`--kube-api-qps`, burst twice that);
    /// `None` keeps Kubernetes' defaults (5, 5, 20 qps).
    pub controller_syncs: Option<u32>,
    pub controller_qps: Option<u32>,
}

impl Default for Options {
    /// Three nodes of 32 CPUs, 128 GiB and 250 pods each: room for the
    /// benchmark's 100 services in two slots at the shipped requests
    /// (250m CPU, 256 MiB per pod).
    fn default() -> Self {
        Options {
            nodes: 3,
            node_cpu: 32,
            node_memory_gib: 128,
            node_pods: 250,
            controller_syncs: None,
            controller_qps: None,
        }
    }
}

/// A running control plane. Dropping it stops every process and removes
/// its directory.
pub struct ControlPlane {
    dir: PathBuf,
    url: String,
    kubeconfig: PathBuf,
    ca_pem: String,
    ca_der: Vec<u8>,
    admin_token: String,
    version: String,
    processes: Mutex<Vec<Supervised>>,
}

/// How long a component may take to come up on a busy 2-core machine.
const STARTUP: Duration = Duration::from_secs(180);

impl ControlPlane {
    /// The control plane of this test binary: started by the first caller,
    /// shared by every test after it (each test in namespaces of its own,
    /// see [`ControlPlane::unique_name`]), stopped when the binary ends.
    ///
    /// Panics, naming what is missing and how to get it, when it cannot
    /// start: a test that needs the real cluster fails, it never skips.
    pub fn shared() -> &'static ControlPlane {
        let started = SHARED.get_or_init(|| {
            // The test harness runs no destructor of statics, but libc's
            // exit runs atexit handlers: stop and reap the processes there,
            // so none is left behind, not even as a zombie of an init that
            // does not reap.
            // SAFETY: registering a plain extern "C" fn.
            unsafe {
                libc::atexit(stop_shared);
            }
            let (tx, rx) = std::sync::mpsc::channel();
            // The processes are forked from this thread, which never ends:
            // their parent-death signal then fires only when the whole
            // test binary is gone (see `process::Supervised::spawn`).
            std::thread::Builder::new()
                .name("controlplane".into())
                .spawn(move || {
                    let started = ControlPlane::start(Options::default());
                    let _ = tx.send(started.map_err(|e| format!("{e:#}")));
                    loop {
                        std::thread::park();
                    }
                })
                .expect("a thread for the control plane");
            rx.recv()
                .unwrap_or_else(|_| Err("the control plane's thread ended".into()))
        });
        match started {
            Ok(cp) => cp,
            Err(e) => panic!("the real Kubernetes control plane did not start: {e}"),
        }
    }

    /// Starts etcd, the API server, the controller manager, the scheduler
    /// and kwok on free loopback ports, with the real CRDs installed and
    /// `options.nodes` fake nodes Ready. Blocks until all of that holds.
    pub fn start(options: Options) -> Result<ControlPlane> {
        let assets = assets::locate()?;
        let dir = fresh_dir()?;
        let mut cp = ControlPlane {
            dir: dir.clone(),
            url: String::new(),
            kubeconfig: dir.join("admin.kubeconfig"),
            ca_pem: String::new(),
            ca_der: Vec::new(),
            admin_token: String::new(),
            version: String::new(),
            processes: Mutex::new(Vec::new()),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(cp.boot(&assets, &options))?;
        Ok(cp)
    }

    async fn boot(&mut self, assets: &assets::Assets, options: &Options) -> Result<()> {
        let dir = self.dir.clone();
        let pki = pki::generate()?;
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
        let ca = write("ca.crt", &pki.ca_pem)?;
        let serving_cert = write("apiserver.crt", &pki.serving_cert_pem)?;
        let serving_key = write("apiserver.key", &pki.serving_key_pem)?;
        let sa_key = write("service-account.key", &pki.service_account_key_pem)?;
        let sa_public = write("service-account.pub", &pki.service_account_public_pem)?;
        let admin_token = random_token()?;
        let tokens = write(
            "tokens.csv",
            &format!("{admin_token},admin,admin-uid,\"system:masters\"\n"),
        )?;
        self.ca_pem = pki.ca_pem.clone();
        self.ca_der = pki.ca_der.clone();
        self.admin_token = admin_token.clone();

        // etcd
        let etcd_client = process::free_port()?;
        let etcd_peer = process::free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        self.spawn(
            "etcd",
            &assets.bin.join("etcd"),
            &[
                "--name=etcd".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=etcd={peer_url}"),
                // A test cluster: a crash loses nothing anybody keeps.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        self.wait_for("etcd to listen", || {
            let up = std::net::TcpStream::connect(("127.0.0.1", etcd_client)).is_ok();
            async move { Ok(up) }
        })
        .await?;

        // kube-apiserver
        let port = process::free_port()?;
        self.url = format!("https://127.0.0.1:{port}");
        self.spawn(
            "kube-apiserver",
            &assets.bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", serving_cert.display()),
                format!("--tls-private-key-file={}", serving_key.display()),
                format!("--token-auth-file={}", tokens.display()),
                "--authorization-mode=RBAC".into(),
                // On top of the defaults (which already hold PodSecurity and
                // ResourceQuota): named so a change of defaults shows here.
                "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,ResourceQuota".into(),
                "--allow-privileged=false".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", sa_public.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                // The `kubernetes` Service's endpoints would be 127.0.0.1,
                // which Endpoints validation refuses (a loop of errors).
                "--endpoint-reconciler-type=none".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        )?;
        std::fs::write(
            &self.kubeconfig,
            kubesim::kubeconfig::render(&self.url, Some(&admin_token), Some(&self.ca_pem)),
        )?;
        let client = self.client();
        self.wait_for("the API server to be ready (/readyz)", || {
            let client = client.clone();
            async move {
                let req = http_get("/readyz")?;
                Ok(client
                    .request_text(req)
                    .await
                    .is_ok_and(|t| t.trim() == "ok"))
            }
        })
        .await?;
        self.version = client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .unwrap_or_default();

        // The controllers and the scheduler, as the admin.
        let mut controller_args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            "--leader-elect=false".into(),
            "--controllers=*".into(),
            format!("--service-account-private-key-file={}", sa_key.display()),
            format!("--root-ca-file={}", ca.display()),
            "--use-service-account-credentials=false".into(),
            "--v=1".into(),
        ];
        if let Some(n) = options.controller_syncs {
            controller_args.push(format!("--concurrent-deployment-syncs={n}"));
            controller_args.push(format!("--concurrent-replicaset-syncs={n}"));
        }
        if let Some(q) = options.controller_qps {
            controller_args.push(format!("--kube-api-qps={q}"));
            controller_args.push(format!("--kube-api-burst={}", q * 2));
        }
        self.spawn(
            "kube-controller-manager",
            &assets.bin.join("kube-controller-manager"),
            &controller_args,
        )?;
        self.spawn(
            "kube-scheduler",
            &assets.bin.join("kube-scheduler"),
            &[
                format!("--kubeconfig={}", self.kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
                "--v=1".into(),
            ],
        )?;

        // The fake nodes, then kwok to keep them (and their pods) alive.
        let nodes: Api<Node> = Api::all(client.clone());
        for i in 0..options.nodes {
            let node: Node = serde_json::from_value(node_json(i, options))?;
            nodes
                .create(&PostParams::default(), &node)
                .await
                .with_context(|| format!("creating node kwok-node-{i}"))?;
        }
        let mut kwok_args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "--manage-all-nodes=false".into(),
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
            "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom".into(),
            "--node-lease-duration-seconds=40".into(),
            // Addresses kwok writes into pod and node status; nothing
            // connects to them (Endpoints refuse loopback ones).
            "--cidr=10.244.0.0/16".into(),
            "--node-ip=10.0.0.1".into(),
            format!("--server-address=127.0.0.1:{}", process::free_port()?),
        ];
        // kwok 0.8 has no stage built in: its defaults (node initialise
        // and heartbeat, pod ready, complete, delete), then ours.
        let mut stages = vec![assets.kwok_stages.join("all.yaml")];
        stages.extend(assets::yaml_files(&stages_dir())?);
        for file in stages {
            kwok_args.push(format!("--config={}", file.display()));
        }
        self.spawn("kwok", &assets.bin.join("kwok"), &kwok_args)?;

        // The real CRDs.
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut names = Vec::new();
        for file in assets::yaml_files(&assets.crds)? {
            let text = std::fs::read_to_string(&file)?;
            for doc in split_documents(&text) {
                let crd: CustomResourceDefinition = serde_saphyr::from_str(doc)
                    .with_context(|| format!("a CRD in {}", file.display()))?;
                let name = crd.metadata.name.clone().unwrap_or_default();
                crds.patch(
                    &name,
                    &PatchParams::apply("test-admin").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .with_context(|| format!("installing the CRD {name} from {}", file.display()))?;
                names.push(name);
            }
        }
        self.wait_for("the CRDs to be established", || {
            let crds = crds.clone();
            let names = names.clone();
            async move {
                for name in &names {
                    let crd = crds.get(name).await?;
                    let established = crd.status.and_then(|s| s.conditions).is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                    if !established {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        })
        .await?;

        // Ready nodes, and the controllers at work (the service-account
        // controller makes `default` in each namespace).
        let want = options.nodes;
        self.wait_for("the fake nodes to be Ready", || {
            let nodes = nodes.clone();
            async move {
                let list = nodes.list(&Default::default()).await?;
                let ready = list
                    .items
                    .iter()
                    .filter(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .count();
                Ok(ready >= want)
            }
        })
        .await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        self.wait_for(
            "the controller manager (the default ServiceAccount)",
            || {
                let accounts = accounts.clone();
                async move { Ok(accounts.get_opt("default").await?.is_some()) }
            },
        )
        .await?;
        Ok(())
    }

    fn spawn(&self, name: &'static str, program: &Path, args: &[String]) -> Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let p = Supervised::spawn(name, program, args, &log)?;
        self.processes.lock().unwrap().push(p);
        Ok(())
    }

    /// Polls `ready` until it answers true, failing at once (with the end
    /// of its log) when a process of the control plane has exited, and
    /// after [`STARTUP`].
    async fn wait_for<F, Fut>(&self, what: &str, mut ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let start = Instant::now();
        let mut last_error = String::new();
        loop {
            if let Some(dead) = self.dead_process() {
                bail!("waiting for {what}: {dead}");
            }
            match ready().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_error = format!("{e:#}"),
            }
            if start.elapsed() > STARTUP {
                bail!(
                    "waiting for {what}: not after {} s{}; logs in {}",
                    STARTUP.as_secs(),
                    if last_error.is_empty() {
                        String::new()
                    } else {
                        format!(" (last error: {last_error})")
                    },
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// "kube-apiserver exited with ...; the end of its log: ..." for the
    /// first process that is no longer running.
    pub fn dead_process(&self) -> Option<String> {
        let mut processes = self.processes.lock().unwrap();
        processes.iter_mut().find_map(|p| {
            let status = p.exited()?;
            Some(format!(
                "{} exited ({status}); the end of {}:\n{}",
                p.name,
                p.log.display(),
                p.log_tail(25)
            ))
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster admin's kubeconfig (group `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA that signed the API server's certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The API server's `gitVersion` (`v1.34.4`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Where the logs and etcd's data are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kube client as the cluster admin (call it inside the runtime that
    /// uses it).
    pub fn client(&self) -> Client {
        self.client_with_token(&self.admin_token)
    }

    /// A kube client that authenticates with `token` (a service account's).
    pub fn client_with_token(&self, token: &str) -> Client {
        let mut config = kube::Config::new(self.url.parse().expect("the API server's URL parses"));
        config.default_namespace = "default".into();
        config.auth_info.token = Some(token.to_string().into());
        config.root_cert = Some(vec![self.ca_der.clone()]);
        Client::try_from(config).expect("a kube client for the control plane builds")
    }

    /// Writes a kubeconfig at `path` that authenticates with `token` (a
    /// service account's, say), trusting this cluster's CA.
    pub fn write_kubeconfig_for_token(&self, token: &str, path: &Path) -> Result<()> {
        std::fs::write(
            path,
            kubesim::kubeconfig::render(&self.url, Some(token), Some(&self.ca_pem)),
        )?;
        Ok(())
    }

    /// kubectl as the admin.
    pub fn kubectl(&self) -> std::process::Command {
        kubesim::kubectl_for(&self.kubeconfig)
    }

    /// `<prefix>-<pid>-<n>`: a name no other test of any binary sharing
    /// this cluster uses (namespaces, cluster-wide objects).
    pub fn unique_name(prefix: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl ControlPlane {
    /// Stops every process, in reverse order (kwok and the controllers
    /// first, etcd last), and removes the directory.
    fn stop(&self) {
        let mut processes =
            std::mem::take(&mut *self.processes.lock().unwrap_or_else(|e| e.into_inner()));
        while let Some(p) = processes.pop() {
            drop(p);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

static SHARED: OnceLock<std::result::Result<ControlPlane, String>> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(Ok(cp)) = SHARED.get() {
        cp.stop();
    }
}

/// kwok stages of this crate: the failures the tests ask for by image.
pub fn stages_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("stages")
}

/// `.../maily-controlplane-<pid>-<n>` under the temp directory, after
/// removing those of test binaries that are gone.
fn fresh_dir() -> Result<PathBuf> {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix("maily-controlplane-") else {
                continue;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !process::alive(pid)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = tmp.join(format!(
        "maily-controlplane-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn random_token() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn http_get(path: &str) -> Result<http::Request<Vec<u8>>> {
    http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| anyhow!("{e}"))
}

fn split_documents(text: &str) -> Vec<&str> {
    text.split("\n---")
        .map(|d| d.trim_start_matches("---"))
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// A fake node as kwok manages it: the annotation kwok selects on, the
/// labels the scheduler and topology spread read, and its capacity.
fn node_json(i: usize, o: &Options) -> serde_json::Value {
    let name = format!("kwok-node-{i}");
    let resources = serde_json::json!({"cpu": o.node_cpu.to_string(), "memory": format!("{}Gi", o.node_memory_gib), "pods": o.node_pods.to_string()});
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "type": "kwok"
            }
        },
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake"
            }
        }
    })
}
