//! The test world for end-to-end tests of the binary: a kubesim cluster
//! with the Gateway API installed, an env file, and ways to read what a user
//! would look at (Deployments, the stable Services' selectors, the routes'
//! weights, the snapshots). The stubs of the providers live beside it:
//! `vercel` (a fake Vercel REST API), `vault` (KV v2 answers), `terraform`
//! (the stand-in CLI), `postgres` (a fresh database per test) and `ai` (the
//! AI providers' model lists).

pub mod ai;
pub mod grafana;
pub mod postgres;
pub mod real;
pub mod registry;
pub mod terraform;
pub mod traffic;
pub mod vault;
pub mod vercel;
pub mod verify;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use kubesim::{Sim, SimOptions};
use maily_deploy::pipeline::snapshot::{self, Snapshot};

pub mod prometheus;

/// The namespace of the environment most tests deploy (`World::new`).
pub const NAMESPACE: &str = "maily-staging";

/// The phases that are not the backend's, skipped in backend tests.
pub const BACKEND_ONLY: &[&str] = &[
    "--skip-provision",
    "--skip-migrate",
    "--skip-frontend",
    "--skip-ai",
    "--skip-monitor",
    "--skip-verify",
];

/// The environment that makes shift-traffic switch at once and keep the
/// old slot up (as `--traffic-steps 100 --grace keep`): the tests of other
/// phases do not walk the profile's steps; `tests/e2e/traffic.rs` does, giving
/// its own flags, which win over these.
pub const SWITCH_AT_ONCE: [(&str, &str); 2] =
    [("MAILY_TRAFFIC_STEPS", "100"), ("MAILY_GRACE", "keep")];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cluster a world deploys to.
pub enum Cluster {
    /// kubesim: faults on demand, request logs, speed.
    Sim(Sim),
    /// The real control plane of this test binary, in a namespace of this
    /// world's own; the tool runs as the deployer of `maily-deploy
    /// bootstrap` (see `support::real`).
    Real(real::RealCluster),
}

pub struct World {
    pub cluster: Cluster,
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    /// The environment the readers below look at.
    pub environment: String,
    /// Its namespace, from the shipped profile.
    pub namespace: String,
}

impl World {
    /// A cluster with the Gateway API, pods ready after `rollout`, looked at
    /// as staging.
    pub fn new(rollout: Duration) -> World {
        World::for_environment("staging", rollout)
    }

    /// A cluster with the Gateway API, pods ready after `rollout`, looked at
    /// as `environment` (its namespace read from the shipped profile).
    pub fn for_environment(environment: &str, rollout: Duration) -> World {
        let world = World::without_gateway_api(environment, rollout);
        world.install_gateway_api();
        world
    }

    /// A cluster as `for_environment` has it, but without the Gateway
    /// API's CRDs: the routes cannot be served.
    pub fn without_gateway_api(environment: &str, rollout: Duration) -> World {
        let namespace = maily_deploy::config::profile::load(&repo().join("manifests"), environment)
            .expect("a shipped environment profile")
            .namespace;
        let sim = Sim::start_blocking(SimOptions {
            rollout_time: rollout,
            ..SimOptions::default()
        })
        .expect("kubesim starts");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt.block_on(async { sim.client() });
        World {
            cluster: Cluster::Sim(sim),
            dir: tempfile::tempdir().unwrap(),
            rt,
            client,
            environment: environment.to_string(),
            namespace,
        }
    }

    fn install_gateway_api(&self) {
        self.install_crd("gateway-api/gateway.networking.k8s.io_httproutes.yaml");
    }

    /// Apply one of the real CRDs (`controlplane::assets::crds`, from the
    /// modules `scripts/setup.d/kubernetes.sh` pins), as a cluster admin
    /// would.
    pub fn install_crd(&self, file: &str) {
        let dir = controlplane::assets::crds().unwrap_or_else(|e| panic!("{e:#}"));
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()));
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
        let name = crd.metadata.name.clone().expect("a CRD has a name");
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        self.rt
            .block_on(api.patch(
                &name,
                &PatchParams::apply("cluster-admin").force(),
                &Patch::Apply(&crd),
            ))
            .unwrap_or_else(|e| panic!("the CRD {name} applies: {e}"));
        // The CRD is served once established; discovery picks it up.
        std::thread::sleep(Duration::from_millis(200));
    }

    /// The Prometheus operator's PrometheusRule and ServiceMonitor CRDs.
    pub fn install_prometheus_operator_crds(&self) {
        self.install_crd("prometheus-operator/monitoring.coreos.com_prometheusrules.yaml");
        self.install_crd("prometheus-operator/monitoring.coreos.com_servicemonitors.yaml");
    }

    /// The objects of a kind of the monitoring.coreos.com/v1 group, by name.
    pub fn monitoring_objects(&self, kind: &str) -> Vec<DynamicObject> {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind));
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &ar);
        let mut items = self
            .rt
            .block_on(api.list(&ListParams::default()))
            .unwrap()
            .items;
        items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        items
    }

    /// `.env.example` with these values replaced; a name given twice in
    /// `changes` takes its last value (a helper's default, then the
    /// test's), since the tool refuses a file that sets a variable twice.
    pub fn env_file(&self, changes: &[(&str, &str)]) -> PathBuf {
        let text = std::fs::read_to_string(repo().join(".env.example")).unwrap();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !changes.iter().any(|(k, _)| l.starts_with(&format!("{k}="))))
            .map(String::from)
            .collect();
        for (i, (k, v)) in changes.iter().enumerate() {
            if !changes[i + 1..].iter().any(|(later, _)| later == k) {
                lines.push(format!("{k}={v}"));
            }
        }
        let path = self.dir.path().join(format!("env-{}", rand_suffix()));
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    /// The binary with a clean environment, pointed at this cluster.
    pub fn maily(&self) -> Command {
        Command::from_std(self.process())
    }

    /// The same, as a `std::process::Command`: to spawn a run and kill it
    /// or talk to it from a second process while it lives.
    pub fn process(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("maily-deploy"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("USER", "tester")
            .env("MAILY_DEPLOY_CLOCK_FILE", self.clock_file())
            .envs(SWITCH_AT_ONCE)
            .current_dir(repo())
            .arg("--kubeconfig")
            .arg(self.kubeconfig_path());
        if let Cluster::Real(real) = &self.cluster {
            cmd.env("MAILY_MANIFESTS_DIR", &real.manifests);
        }
        cmd
    }

    /// The test clock of this world's runs (`MAILY_DEPLOY_CLOCK_FILE`, see
    /// docs/testing.md): each run's deployment id is a second after the
    /// last run's, so runs one after another never wait for a new second.
    pub fn clock_file(&self) -> PathBuf {
        self.dir.path().join("clock")
    }

    /// The kubesim of this world; a test of kubesim's knobs (faults,
    /// request logs) on a real-cluster world is a mistake in the test.
    pub fn sim(&self) -> &Sim {
        match &self.cluster {
            Cluster::Sim(sim) => sim,
            Cluster::Real(_) => panic!("this world runs on the real control plane, not kubesim"),
        }
    }

    /// The kubeconfig the tool runs with: the sim's, or the deployer's on
    /// the real control plane.
    pub fn kubeconfig_path(&self) -> &Path {
        match &self.cluster {
            Cluster::Sim(sim) => sim.kubeconfig_path(),
            Cluster::Real(real) => &real.deployer_kubeconfig,
        }
    }

    /// Deploy the backend of this world's environment at `tag`.
    pub fn deploy(&self, tag: &str, extra: &[&str]) -> Output {
        self.deploy_with(&[("IMAGE_TAG", tag), ("ROLLOUT_TIMEOUT", "60s")], extra)
    }

    /// The same, with these variables in its env file.
    pub fn deploy_with(&self, vars: &[(&str, &str)], extra: &[&str]) -> Output {
        self.backend(&[], vars, extra)
    }

    /// `maily-deploy [verb] <environment>` with the backend's phases and
    /// `vars` in its env file.
    fn backend(&self, verb: &[&str], vars: &[(&str, &str)], extra: &[&str]) -> Output {
        let env = self.env_file(vars);
        self.maily()
            .args(verb)
            .arg(&self.environment)
            .args(BACKEND_ONLY)
            .arg("--env-file")
            .arg(&env)
            .args(extra)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap()
    }

    /// `maily-deploy diff` of this world's environment with the backend's
    /// phases and `tag`.
    pub fn diff(&self, tag: &str, extra: &[&str]) -> Output {
        self.backend(
            &["diff"],
            &[("IMAGE_TAG", tag), ("ROLLOUT_TIMEOUT", "60s")],
            extra,
        )
    }

    /// The same deploy, spawned with its output piped: to signal, kill or
    /// race it while it runs.
    pub fn spawn_deploy(&self, tag: &str, extra: &[&str]) -> std::process::Child {
        let env = self.env_file(&[("IMAGE_TAG", tag), ("ROLLOUT_TIMEOUT", "60s")]);
        self.process()
            .arg(&self.environment)
            .args(BACKEND_ONLY)
            .arg("--env-file")
            .arg(&env)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The deployment id holding this world's deploy lock, if a Lease is
    /// there.
    pub fn lease_holder(&self) -> Option<String> {
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let lease = self.rt.block_on(api.get_opt("maily-deploy")).unwrap()?;
        let text = lease.metadata.annotations?.get("maily.ai/holder")?.clone();
        let holder: serde_json::Value = serde_json::from_str(&text).ok()?;
        holder["deployment_id"].as_str().map(String::from)
    }

    pub fn deployment(&self, name: &str) -> Option<Deployment> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        self.rt.block_on(api.get_opt(name)).unwrap()
    }

    pub fn image(&self, deployment: &str) -> Option<String> {
        self.deployment(deployment)?
            .spec?
            .template
            .spec?
            .containers
            .first()?
            .image
            .clone()
    }

    pub fn replicas(&self, deployment: &str) -> Option<i32> {
        self.deployment(deployment)?.spec?.replicas
    }

    /// The slot a stable Service selects.
    pub fn selected_slot(&self, service: &str) -> Option<String> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let svc = self.rt.block_on(api.get_opt(service)).unwrap()?;
        svc.spec?.selector?.get("maily.ai/slot").cloned()
    }

    /// The weights (blue, green) of a route's weighted rule.
    pub fn weights(&self, service: &str) -> Option<(u32, u32)> {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
        ));
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &ar);
        let route = self.rt.block_on(api.get_opt(service)).unwrap()?;
        maily_deploy::k8s::live::route_weights(&route.data)
    }

    /// A weight source for `traffic::TrafficSim`: the weights (blue, green)
    /// of the route `route` in this world's namespace, read with a client
    /// and runtime of its own (the simulator calls it from its thread). A
    /// read that fails (a fault, an outage, 2 s without an answer) gives
    /// the last weights read, not "no route". Each call is one GET, which
    /// the sim's request log records as `get httproutes`.
    pub fn weight_source(&self, route: &str) -> traffic::WeightSource {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async { self.admin_client() });
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
        ));
        let api: Api<DynamicObject> = Api::namespaced_with(client, &self.namespace, &ar);
        let route = route.to_string();
        let last = std::sync::Mutex::new(None);
        Box::new(move || {
            let read = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), api.get_opt(&route)).await
            });
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(Ok(route)) = read {
                *last = route.and_then(|r| maily_deploy::k8s::live::route_weights(&r.data));
            }
            *last
        })
    }

    /// Every snapshot, newest first.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let list =
            self.rt
                .block_on(api.list(
                    &ListParams::default().labels("app.kubernetes.io/managed-by=maily-deploy"),
                ))
                .unwrap();
        let mut out: Vec<Snapshot> = list
            .items
            .iter()
            .filter_map(|s| snapshot::decode(&s.data.as_ref()?.get("snapshot.json.gz")?.0).ok())
            .collect();
        out.sort_by(|a, b| b.deployment_id.cmp(&a.deployment_id));
        out
    }

    /// The deployment id a run of this world's environment printed first.
    pub fn deployment_id(&self, out: &Output) -> String {
        deployment_id_in(out, &self.environment)
    }

    /// Where users are, service by service: (stable selector, weights).
    pub fn traffic(&self) -> Vec<Traffic> {
        [
            "analytics",
            "api",
            "blockchain-verifier",
            "campaigns",
            "email-sender",
        ]
        .iter()
        .map(|s| (s.to_string(), self.selected_slot(s), self.weights(s)))
        .collect()
    }
}

impl World {
    /// Every http service's users on `slot`: the stable Service's selector
    /// and all of the route's weight.
    #[track_caller]
    pub fn assert_all_on(&self, slot: &str) {
        for (svc, selected, weights) in self.traffic() {
            assert_eq!(selected.as_deref(), Some(slot), "{svc}'s stable Service");
            let want = if slot == "blue" { (100, 0) } else { (0, 100) };
            assert_eq!(weights, Some(want), "{svc}'s route");
        }
    }
}

/// A service, the slot its stable Service selects, its route's weights.
pub type Traffic = (String, Option<String>, Option<(u32, u32)>);

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The command ended with `code`; if not, the test fails showing all it
/// printed.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
}

/// Send `child` SIGINT, as Ctrl-C or a CI job's cancel does, and wait for
/// it to end: its output, or `None` if it still runs after `within` (the
/// run did not stop; the test says what it waited for).
pub fn interrupt(child: std::process::Child, within: Duration) -> Option<Output> {
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "SIGINT not sent");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(within).ok().map(|out| out.unwrap())
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The deployment id a staging run printed.
pub fn deployment_id_of(out: &Output) -> String {
    deployment_id_in(out, "staging")
}

/// The deployment id (`<environment>-YYYYMMDD-HHMMSS`) a run printed.
pub fn deployment_id_in(out: &Output, environment: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{environment}-");
    let start = stdout.find(&prefix).expect("a deployment id in the output");
    stdout[start..start + prefix.len() + "20250101-120000".len()].to_string()
}

/// `cmd` run on a pseudo-terminal (util-linux `script`) whose window is
/// `columns` wide (`stty cols`; `None` leaves it unset, which reads as 0),
/// with `cmd`'s environment and working directory: what a person at a
/// terminal sees, its `\r\n` line ends made `\n`. The exit code is the
/// command's (`script -e`).
pub fn on_a_terminal(cmd: &std::process::Command, columns: Option<u16>) -> (Option<i32>, String) {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let mut line: Vec<String> = vec![quote(cmd.get_program())];
    line.extend(cmd.get_args().map(quote));
    let stty = columns.map_or(String::new(), |c| format!("stty cols {c} rows 40; "));
    let mut script = std::process::Command::new("script");
    script.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        script.current_dir(dir);
    }
    let out = script
        .args([
            "-qefc",
            &format!("{stty}exec {}", line.join(" ")),
            "/dev/null",
        ])
        .output()
        .expect("script (util-linux) runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"),
    )
}

/// `text` without its terminal control sequences (colours, cursor moves).
pub fn without_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// A copy of a directory tree (the manifests, to change a profile in).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of the shipped manifests under `dir`, with `yaml` appended to the
/// profile of `environment` (platform `secrets:`, say).
pub fn manifests_with(dir: &Path, environment: &str, yaml: &str) -> PathBuf {
    let manifests = dir.join(format!("manifests-{}", rand_suffix()));
    copy_dir(&repo().join("manifests"), &manifests);
    let profile = manifests.join(format!("environments/{environment}.yaml"));
    let shipped = std::fs::read_to_string(&profile).unwrap();
    std::fs::write(&profile, format!("{shipped}\n{yaml}")).unwrap();
    manifests
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The http services behind the routes, as `World::traffic` lists them.
pub const HTTP: [&str; 5] = [
    "analytics",
    "api",
    "blockchain-verifier",
    "campaigns",
    "email-sender",
];

/// `name=slot` for each stable Service that exists, read with kubectl as
/// an operator would: where users of the backend are at this moment.
pub fn stable_selectors(kubeconfig: &std::path::Path, namespace: &str) -> String {
    let out = kubesim::kubectl_for(kubeconfig)
        .args(["-n", namespace, "get", "services", "-o"])
        .arg(r#"jsonpath={range .items[*]}{.metadata.name}={.spec.selector.maily\.ai/slot}{"\n"}{end}"#)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut stable: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| HTTP.iter().any(|s| l.starts_with(&format!("{s}="))))
        .map(String::from)
        .collect();
    stable.sort();
    stable.join(" ")
}

pub fn all_on(slot: &str) -> String {
    HTTP.iter()
        .map(|s| format!("{s}={slot}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Busy loops spinning until dropped: the load under which signals were
/// once lost.
pub struct CpuHog {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHog {
    pub fn start(threads: usize) -> CpuHog {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 1;
                    while !stop.load(Ordering::Relaxed) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        CpuHog { stop, threads }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
