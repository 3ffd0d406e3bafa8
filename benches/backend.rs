//! Backend deploy benchmark against kubesim and a real control plane, side
//! by side with the baseline a deploy script uses: `kubectl apply
//! --server-side` then `kubectl rollout status`, one service after another.
//!
//! `cargo bench --bench backend` (release build) prints tables:
//! - wall time of a deploy of 5, 20 and 100 services on kubesim with a 2 s
//!   rollout, the tool against the serial kubectl baseline, and the ratio;
//! - API requests per service, both ways, and for the next release over
//!   the same slot (what a routine deploy writes: the Deployments alone);
//! - the same wall times for 20 and 100 services on the real control plane
//!   of `tests/controlplane` (kube-apiserver, controller-manager, scheduler,
//!   kwok nodes whose pods are Ready as soon as they are scheduled), a fresh
//!   one for each measurement;
//! - time from a pod reporting ImagePullBackOff/ErrImagePull to the tool's
//!   non-zero exit;
//! - wall time of a one-switch rollback of 20 services.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use controlplane::ControlPlane;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use kubesim::{ImageFault, Sim, SimOptions};
use maily_deploy::config::profile;
use maily_deploy::k8s::manifest::{self, Scope};
use maily_deploy::k8s::slot::Slot;
use maily_deploy::k8s::values::{self, Release};

const ROLLOUT: Duration = Duration::from_secs(2);

/// The round trip of the latency part: a laptop in Europe to a cloud
/// region in the US east is 80-100 ms, within one continent 20-50 ms.
const LINK: Duration = Duration::from_millis(50);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A manifests directory whose `bench` environment has `n` http services.
fn manifests_with(dir: &Path, n: usize) -> PathBuf {
    let out = dir.join(format!("manifests-{n}"));
    let _ = std::fs::remove_dir_all(&out);
    for scope in [
        "platform",
        "slot",
        "slot-http",
        "route",
        "bootstrap",
        "environments",
    ] {
        std::fs::create_dir_all(out.join(scope)).unwrap();
        if scope == "environments" {
            continue;
        }
        for e in std::fs::read_dir(repo().join("manifests").join(scope)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), out.join(scope).join(e.file_name())).unwrap();
        }
    }
    let mut yaml = String::from(
        "namespace: maily-bench\ndomains: {app: app.bench.invalid, api: api.bench.invalid}\ngateway: {name: g, namespace: gw}\nreplicas: 1\ntraffic: {steps: [100], pause: 1s}\nservices:\n",
    );
    for i in 0..n {
        yaml.push_str(&format!("  svc-{i:03}: {{kind: http}}\n"));
    }
    std::fs::write(out.join("environments/bench.yaml"), yaml).unwrap();
    out
}

fn env_file(dir: &Path, tag: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo().join(".env.example")).unwrap();
    let mut text: String = text
        .lines()
        .filter(|l| !l.starts_with("IMAGE_TAG="))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!("IMAGE_TAG={tag}\nROLLOUT_TIMEOUT=120s\n"));
    let path = dir.join(format!("env-{tag}"));
    std::fs::write(&path, text).unwrap();
    path
}

/// What one run of the tool cost: wall time, its own CPU (user + system)
/// and peak resident memory, as `/usr/bin/time` measures a child.
struct Run {
    wall: Duration,
    cpu: Duration,
    peak_rss_mb: f64,
    ok: bool,
    stderr: String,
}

fn maily(kubeconfig: &Path, manifests: &Path, env: &Path, args: &[&str]) -> Run {
    let stats = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%U %S %M", "-o"])
        .arg(stats.path())
        .arg(env!("CARGO_BIN_EXE_maily-deploy"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--manifests-dir")
        .arg(manifests)
        .arg("--env-file")
        .arg(env)
        .args(args)
        .env("HOME", "/tmp")
        .output()
        .unwrap();
    let wall = started.elapsed();
    let text = std::fs::read_to_string(stats.path()).unwrap_or_default();
    // The last line: `time` writes a note above it when the child fails.
    let fields: Vec<f64> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let (cpu, rss_kb) = match fields.as_slice() {
        [user, sys, rss] => (user + sys, *rss),
        _ => (f64::NAN, f64::NAN),
    };
    Run {
        wall,
        cpu: Duration::from_secs_f64(if cpu.is_nan() { 0.0 } else { cpu }),
        peak_rss_mb: rss_kb / 1024.0,
        ok: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// `maily-deploy bench --only deploy-backend` of release `tag`.
fn deploy_backend(kubeconfig: &Path, manifests: &Path, dir: &Path, tag: &str) -> Run {
    maily(
        kubeconfig,
        manifests,
        &env_file(dir, tag),
        &["bench", "--only", "deploy-backend", "-q"],
    )
}

/// CPU this process has used so far (user + system): kubesim runs in it,
/// so the difference around a run is the emulator's share.
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12
    // after the name and state; the kernel counts them in 1/100 s.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A comma-separated list from the environment, or the default.
fn list(var: &str, default: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn crd(sim: &Sim, rt: &tokio::runtime::Runtime) {
    let status = sim
        .kubectl()
        .args(["apply", "--server-side", "--validate=false", "-f"])
        .arg(
            controlplane::assets::crds()
                .expect("the real CRDs (scripts/setup.d/kubernetes.sh)")
                .join("gateway-api/gateway.networking.k8s.io_httproutes.yaml"),
        )
        .output()
        .unwrap();
    assert!(status.status.success());
    let _ = rt;
}

fn requests(sim: &Sim) -> u64 {
    sim.control()
        .requests()
        .iter()
        .filter(|r| r.is_resource())
        .count() as u64
}

/// Where a deploy's API requests over `n` services went: the kinds of
/// request made once per service or more (per service), and the rest
/// (shared by all), as a table row.
fn breakdown(sim: &Sim, n: usize) -> String {
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for r in sim.control().requests().iter().filter(|r| r.is_resource()) {
        let what = if r.subresource.is_empty() {
            format!("{} {}", r.verb, r.resource)
        } else {
            format!("{} {}/{}", r.verb, r.resource, r.subresource)
        };
        *counts.entry(what).or_default() += 1;
    }
    let (per_service, shared): (Vec<_>, Vec<_>) =
        counts.iter().partition(|(_, count)| **count as usize >= n);
    let shared_total: u64 = shared.iter().map(|(_, count)| **count).sum();
    format!(
        "| {n} | {} | {shared_total} ({:.2}/service): {} |",
        per_service
            .iter()
            .map(|(what, count)| format!("{what} {:.2}", **count as f64 / n as f64))
            .collect::<Vec<_>>()
            .join(", "),
        shared_total as f64 / n as f64,
        shared
            .iter()
            .map(|(what, count)| format!("{what} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `MAILY_BENCH_BASELINE=skip`: the tool alone, without serial kubectl,
/// while working on the tool.
fn skip_baseline() -> bool {
    std::env::var("MAILY_BENCH_BASELINE").as_deref() == Ok("skip")
}

/// The baseline: each service's objects applied and waited for in turn,
/// with kubectl as the user of `kubeconfig`; for more than `sample`
/// services, the first `sample` are measured and the time scaled to `n`
/// (serial work is linear: each service costs the same round trips and
/// the same rollout), which the table marks.
fn baseline(
    kubeconfig: &Path,
    dir: &Path,
    manifests: &Path,
    n: usize,
    sample: usize,
) -> (Duration, bool) {
    let measured = n.min(sample);
    let profile = profile::load(manifests, "bench").unwrap();
    let templates = manifest::load(manifests).unwrap();
    let release = Release {
        environment: "bench".into(),
        deployment_id: "bench-20250101-000000".into(),
        image_registry: "registry.bench.invalid/maily".into(),
        image_tag: "v1".into(),
        backup_url: String::new(),
        rollout_timeout_secs: 120,
        digests: Default::default(),
    };
    // Setup the baseline would share with the tool: namespace and settings.
    let platform = manifest::render(
        &templates,
        &[Scope::Platform],
        &values::common(&release, &profile),
    )
    .unwrap();
    let mut files = vec![];
    let path = dir.join("platform.yaml");
    std::fs::write(
        &path,
        platform
            .iter()
            .map(|(_, o)| format!("---\n{}", serde_saphyr::to_string(o).unwrap()))
            .collect::<String>(),
    )
    .unwrap();
    files.push(path);
    let kubectl = |args: &[&str]| {
        let out = kubesim::kubectl_for(kubeconfig)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let started = Instant::now();
    kubectl(&[
        "apply",
        "--server-side",
        "--validate=false",
        "-f",
        files[0].to_str().unwrap(),
    ]);
    for i in 0..measured {
        let svc = format!("svc-{i:03}");
        let objects = manifest::render(
            &templates,
            &[Scope::Slot, Scope::SlotHttp],
            &values::for_slot(&release, &profile, &svc, Slot::Blue),
        )
        .unwrap();
        let path = dir.join(format!("{svc}.yaml"));
        std::fs::write(
            &path,
            objects
                .iter()
                .map(|(_, o)| format!("---\n{}", serde_saphyr::to_string(o).unwrap()))
                .collect::<String>(),
        )
        .unwrap();
        kubectl(&[
            "apply",
            "--server-side",
            "--validate=false",
            "-f",
            path.to_str().unwrap(),
        ]);
        kubectl(&[
            "rollout",
            "status",
            &format!("deployment/{svc}-blue"),
            "-n",
            &profile.namespace,
            "--timeout=120s",
        ]);
    }
    let took = started.elapsed();
    (took.mul_f64(n as f64 / measured as f64), measured < n)
}

fn fresh_sim() -> (Sim, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = Sim::start_blocking(SimOptions {
        rollout_time: ROLLOUT,
        ..SimOptions::default()
    })
    .unwrap();
    crd(&sim, &rt);
    (sim, rt)
}

/// A fresh real control plane and how long it took to start.
fn fresh_control_plane(options: controlplane::Options) -> (ControlPlane, Duration) {
    let started = Instant::now();
    let cp = ControlPlane::start(options).unwrap_or_else(|e| {
        panic!("the real control plane (scripts/setup.d/kubernetes.sh) did not start: {e:#}")
    });
    (cp, started.elapsed())
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary too, and minutes of benchmarking are no test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("backend benchmark: run it with `cargo bench --bench backend`");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    // MAILY_BENCH_PARTS (kubesim, latency, real, failfast, rollback) and
    // MAILY_BENCH_SERVICES pick what to measure; all by default.
    let parts = list(
        "MAILY_BENCH_PARTS",
        "kubesim,latency,real,failfast,rollback",
    );
    let part = |p: &str| parts.iter().any(|x| x == p);
    let sizes: Vec<usize> = list("MAILY_BENCH_SERVICES", "5,20,100,500")
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    // kubectl serial at 500 services takes over 15 minutes: measured on
    // the first 100, scaled.
    let sample = 100;
    if part("kubesim") {
        println!(
            "backend deploy vs serial kubectl (kubesim, {}s rollout, release build)\n",
            ROLLOUT.as_secs()
        );
        println!(
            "| services | maily-deploy | its CPU | its peak RSS | kubesim CPU meanwhile | kubectl serial | ratio | API requests/service (tool) | (kubectl) | next release, same slot | its requests/service |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    }
    let mut breakdowns = Vec::new();
    for &n in sizes.iter().filter(|_| part("kubesim")) {
        let manifests = manifests_with(dir.path(), n);
        let (sim, _rt) = fresh_sim();
        sim.control().reset();
        let before = own_cpu();
        let tool = deploy_backend(sim.kubeconfig_path(), &manifests, dir.path(), "v1");
        let sim_cpu = own_cpu().saturating_sub(before);
        assert!(tool.ok, "{}", tool.stderr);
        let tool_requests = requests(&sim);
        breakdowns.push(breakdown(&sim, n));
        // A routine deploy: the next release over the same slot, whose
        // Services, ServiceAccounts, budgets and autoscalers stay as they were.
        sim.control().reset();
        let routine = deploy_backend(sim.kubeconfig_path(), &manifests, dir.path(), "v2");
        assert!(routine.ok, "{}", routine.stderr);
        let routine_requests = requests(&sim);
        drop(sim);
        let (base, scaled, base_requests) = if skip_baseline() {
            (Duration::ZERO, false, 0)
        } else {
            let (sim, _rt) = fresh_sim();
            sim.control().reset();
            let (base, scaled) = baseline(sim.kubeconfig_path(), dir.path(), &manifests, n, sample);
            (base, scaled, requests(&sim))
        };
        println!(
            "| {n} | {:.1} s | {:.2} s | {:.0} MB | {:.1} s | {:.1} s{} | {:.1}× | {:.1} | {:.1} | {:.1} s | {:.1} |",
            tool.wall.as_secs_f64(),
            tool.cpu.as_secs_f64(),
            tool.peak_rss_mb,
            sim_cpu.as_secs_f64(),
            base.as_secs_f64(),
            if scaled {
                format!(" (first {sample} measured, scaled)")
            } else {
                String::new()
            },
            base.as_secs_f64() / tool.wall.as_secs_f64(),
            tool_requests as f64 / n as f64,
            base_requests as f64 / sample.min(n) as f64,
            routine.wall.as_secs_f64(),
            routine_requests as f64 / n as f64,
        );
    }

    if !breakdowns.is_empty() {
        println!("\nwhere the first deploy's API requests go (kubesim's request log)\n");
        println!("| services | per service | shared |");
        println!("|---:|---|---|");
        for row in &breakdowns {
            println!("{row}");
        }
    }

    // The same over a distant API server: a laptop deploying to a cloud
    // cluster pays a round trip for every request in series. kubesim
    // delays every request by LINK; the extra wall time over loopback,
    // divided by it, is the number of round trips in series. Serial
    // kubectl is measured on a few services and scaled (linear).
    if part("latency") {
        println!(
            "\nbackend deploy over a {} ms link (kubesim delays every request; {}s rollout)\n",
            LINK.as_millis(),
            ROLLOUT.as_secs()
        );
        println!(
            "| services | first deploy, loopback | over the link | round trips in series | routine deploy, loopback | over the link | round trips in series | kubectl serial over the link | ratio |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    }
    let link_sample = 5;
    let mut link_baseline: Option<(Duration, usize)> = None;
    for &n in sizes.iter().filter(|_| part("latency")) {
        let manifests = manifests_with(dir.path(), n);
        let mut walls = vec![];
        for latency in [Duration::ZERO, LINK] {
            let (sim, _rt) = fresh_sim();
            sim.control().set_latency(latency);
            let first = deploy_backend(sim.kubeconfig_path(), &manifests, dir.path(), "v1");
            assert!(first.ok, "{}", first.stderr);
            let routine = deploy_backend(sim.kubeconfig_path(), &manifests, dir.path(), "v2");
            assert!(routine.ok, "{}", routine.stderr);
            walls.push((first.wall, routine.wall));
        }
        let trips = |over: Duration, loopback: Duration| {
            over.saturating_sub(loopback).as_secs_f64() / LINK.as_secs_f64()
        };
        let (base, measured) = *link_baseline.get_or_insert_with(|| {
            if skip_baseline() {
                return (Duration::ZERO, 0);
            }
            let manifests = manifests_with(dir.path(), link_sample);
            let (sim, _rt) = fresh_sim();
            sim.control().set_latency(LINK);
            let (base, _) = baseline(
                sim.kubeconfig_path(),
                dir.path(),
                &manifests,
                link_sample,
                link_sample,
            );
            (base, link_sample)
        });
        let base = base.mul_f64(n as f64 / measured.max(1) as f64);
        println!(
            "| {n} | {:.1} s | {:.1} s | {:.0} | {:.1} s | {:.1} s | {:.0} | {:.1} s (first {measured} measured, scaled) | {:.1}× |",
            walls[0].0.as_secs_f64(),
            walls[1].0.as_secs_f64(),
            trips(walls[1].0, walls[0].0),
            walls[0].1.as_secs_f64(),
            walls[1].1.as_secs_f64(),
            trips(walls[1].1, walls[0].1),
            base.as_secs_f64(),
            base.as_secs_f64() / walls[1].0.as_secs_f64(),
        );
    }

    // The same on a real control plane, as its admin: a fresh one for each
    // measurement, as kubesim above, so neither side finds the other's
    // pods, autoscalers and events. Its start-up is not counted. Its
    // controller-manager runs with Kubernetes' defaults (5 Deployment and
    // 5 ReplicaSet workers, 20 requests/s), then with 50 workers and 200
    // requests/s, to show when it is the limit.
    if part("real") {
        println!(
            "\nbackend deploy vs serial kubectl (real control plane: kube-apiserver, controller-manager, scheduler, kwok nodes; pods Ready as soon as scheduled, no rollout delay, where kubesim's above is {}s)\n",
            ROLLOUT.as_secs()
        );
        println!(
            "| services | controller-manager | maily-deploy (real) | its CPU | its peak RSS | kubectl serial (real) | ratio |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|");
    }
    let mut startups = vec![];
    // 500 on the real control plane at its defaults takes minutes of
    // controller time per run; MAILY_BENCH_REAL_SERVICES adds it.
    let real_sizes: Vec<usize> = list("MAILY_BENCH_REAL_SERVICES", "20,100")
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    for &n in real_sizes.iter().filter(|_| part("real")) {
        let manifests = manifests_with(dir.path(), n);
        for (label, syncs, qps) in [
            ("defaults (5 workers, 20 qps)", None, None),
            ("50 workers, 200 qps", Some(50), Some(200)),
        ] {
            let options = || {
                let mut o = controlplane::Options {
                    controller_syncs: syncs,
                    controller_qps: qps,
                    ..Default::default()
                };
                // Two slots of n pods each (250m CPU, 256 MiB apiece, as
                // shipped): room on the fake nodes.
                let per_node = (2 * n as u32).div_ceil(o.nodes as u32) + 20;
                o.node_pods = o.node_pods.max(per_node);
                o.node_cpu = o.node_cpu.max(per_node.div_ceil(4));
                o.node_memory_gib = o.node_memory_gib.max(per_node.div_ceil(4));
                o
            };
            let (cp, startup) = fresh_control_plane(options());
            startups.push(startup);
            let tool = deploy_backend(cp.kubeconfig_path(), &manifests, dir.path(), "v1");
            assert!(tool.ok, "{}", tool.stderr);
            drop(cp);
            let (base, scaled) = if skip_baseline() {
                (Duration::ZERO, false)
            } else {
                let (cp, startup) = fresh_control_plane(options());
                startups.push(startup);
                let base = baseline(cp.kubeconfig_path(), dir.path(), &manifests, n, sample);
                drop(cp);
                base
            };
            println!(
                "| {n} | {label} | {:.1} s | {:.2} s | {:.0} MB | {:.1} s{} | {:.1}× |",
                tool.wall.as_secs_f64(),
                tool.cpu.as_secs_f64(),
                tool.peak_rss_mb,
                base.as_secs_f64(),
                if scaled {
                    format!(" (first {sample} measured, scaled)")
                } else {
                    String::new()
                },
                base.as_secs_f64() / tool.wall.as_secs_f64()
            );
        }
    }
    if part("real") {
        println!(
            "\n(control plane start-ups, not counted: {})",
            startups
                .iter()
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !part("failfast") && !part("rollback") {
        return;
    }

    // Fail fast: from the first pod reporting an image pull failure to exit.
    let manifests = manifests_with(dir.path(), 20);
    let (sim, rt) = fresh_sim();
    let run = maily(
        sim.kubeconfig_path(),
        &manifests,
        &env_file(dir.path(), "v1"),
        &[
            "bench",
            "--skip-provision",
            "--skip-migrate",
            "--skip-frontend",
            "--skip-ai",
            "--skip-monitor",
            "--skip-verify",
            "-q",
        ],
    );
    assert!(run.ok, "{}", run.stderr);
    sim.control()
        .set_image_fault("*:broken-*", ImageFault::ImagePullBackOff);
    let client = rt.block_on(async { sim.client() });
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let seen_w = seen.clone();
    rt.spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, "maily-bench");
        let mut stream = watcher::watcher(pods, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = stream.next().await {
            let pod = match event {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
                _ => continue,
            };
            let failing = pod
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .any(|c| {
                    c.state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref())
                        .is_some_and(|r| r.contains("ImagePull"))
                });
            if failing {
                seen_w.lock().unwrap().get_or_insert_with(Instant::now);
            }
        }
    });
    let run = maily(
        sim.kubeconfig_path(),
        &manifests,
        &env_file(dir.path(), "broken-2"),
        &[
            "bench",
            "--skip-provision",
            "--skip-migrate",
            "--skip-frontend",
            "--skip-ai",
            "--skip-monitor",
            "--skip-verify",
            "-q",
        ],
    );
    let exited = Instant::now();
    assert!(!run.ok);
    let first = seen
        .lock()
        .unwrap()
        .expect("a pod reported the pull failure");
    println!(
        "\n| failure | pod reports ErrImagePull/ImagePullBackOff → tool exits non-zero |\n|---|---:|"
    );
    println!(
        "| bad image, 20 services | {:.2} s |",
        exited.duration_since(first).as_secs_f64()
    );

    // One-switch rollback of 20 services whose old slot is still up.
    sim.control().clear_image_faults();
    let run = maily(
        sim.kubeconfig_path(),
        &manifests,
        &env_file(dir.path(), "v2"),
        &[
            "bench",
            "--skip-provision",
            "--skip-migrate",
            "--skip-frontend",
            "--skip-ai",
            "--skip-monitor",
            "--skip-verify",
            "-q",
            "--output",
            "json",
        ],
    );
    assert!(run.ok, "{}", run.stderr);
    let history = Command::new(env!("CARGO_BIN_EXE_maily-deploy"))
        .arg("--kubeconfig")
        .arg(sim.kubeconfig_path())
        .arg("--manifests-dir")
        .arg(&manifests)
        .args(["history", "bench", "--output", "json"])
        .env("HOME", "/tmp")
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let first_good = doc["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|d| d["outcome"] == "succeeded")
        .unwrap()["deployment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = maily(
        sim.kubeconfig_path(),
        &manifests,
        &env_file(dir.path(), "v2"),
        &["rollback", "bench", &first_good, "-q"],
    );
    assert!(run.ok, "{}", run.stderr);
    println!("\n| rollback | wall time |\n|---|---:|");
    println!(
        "| one switch, 20 services (old slot up) | {:.2} s |",
        run.wall.as_secs_f64()
    );
}
