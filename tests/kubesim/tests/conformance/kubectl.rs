//! The real kubectl against kubesim: apply --server-side, get -o json,
//! rollout status (good and bad), get pods, delete.

use crate::common::{eventually, sim};
use kubesim::ImageFault;
use std::path::Path;
use std::time::Duration;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::from(kubesim::kubectl_for(kubeconfig));
    cmd.args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("kubectl is installed (scripts/setup.d/kubesim.sh)");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).await.unwrap();
    }
    drop(pipe);
    let out = child.wait_with_output().await.unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// The minor version of the kubectl on PATH.
async fn kubectl_minor() -> u32 {
    let out = tokio::process::Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .output()
        .await
        .expect("kubectl runs");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("kubectl version prints JSON");
    v["clientVersion"]["minor"]
        .as_str()
        .and_then(|m| m.trim_end_matches('+').parse().ok())
        .expect("a minor version")
}

fn manifest(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  progressDeadlineSeconds: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 8080
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_rolls_out_fails_on_a_bad_image_and_deletes() {
    let sim = sim().await;
    sim.control()
        .set_image_fault("*:broken-*", ImageFault::ImagePullBackOff);
    let kc = sim.kubeconfig_path().to_path_buf();

    // kubectl 1.27+ checks the OpenAPI v3 documents for server-side field
    // validation and applies without --validate=false; older ones need it.
    let validate: &[&str] = if kubectl_minor().await >= 27 {
        &[]
    } else {
        &["--validate=false"]
    };
    let args: Vec<&str> = ["apply", "--server-side", "-f", "-"]
        .iter()
        .chain(validate)
        .copied()
        .collect();
    let out = kubectl(&kc, &args, Some(&manifest("web:1"))).await;
    assert!(out.ok, "apply: {}", out.stderr);
    assert!(
        out.stdout
            .contains("deployment.apps/web serverside-applied"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("service/web serverside-applied"),
        "{}",
        out.stdout
    );

    let out = kubectl(
        &kc,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
        None,
    )
    .await;
    assert!(out.ok, "rollout status: {} {}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("successfully rolled out"),
        "{}",
        out.stdout
    );

    let out = kubectl(&kc, &["get", "deployment", "web", "-o", "json"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let d: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(d["status"]["availableReplicas"], 2);
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(sim.client(), "default");
    let managed = api
        .get("web")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap();
    assert_eq!(managed[0].manager.as_deref(), Some("kubectl"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));

    // Discovery: kubectl 1.26+ takes the aggregated documents from /api and
    // /apis; older ones (Debian's kubernetes-client) read one per group version.
    let counters = sim.control().counters();
    assert!(counters.contains_key("get /apis"), "{counters:?}");
    if kubectl_minor().await >= 26 {
        assert!(!counters.contains_key("get /apis/apps/v1"), "{counters:?}");
    } else {
        assert!(counters.contains_key("get /apis/apps/v1"), "{counters:?}");
    }

    let out = kubectl(
        &kc,
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        Some(&manifest("web:broken-2")),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let out = kubectl(
        &kc,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
        None,
    )
    .await;
    assert!(!out.ok, "a bad image fails the rollout");
    assert!(
        out.stderr.contains("exceeded its progress deadline"),
        "{}",
        out.stderr
    );

    let table = eventually(
        "get pods shows ImagePullBackOff",
        Duration::from_secs(10),
        || {
            let kc = kc.clone();
            async move {
                let out = kubectl(&kc, &["get", "pods"], None).await;
                out.stdout
                    .contains("ImagePullBackOff")
                    .then_some(out.stdout)
            }
        },
    )
    .await;
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("Running") && l.contains("1/1")),
        "old pods still run: {table}"
    );

    // Back to the good revision.
    let out = kubectl(&kc, &["rollout", "undo", "deployment/web"], None).await;
    assert!(out.ok, "rollout undo: {}", out.stderr);
    let out = kubectl(
        &kc,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
        None,
    )
    .await;
    assert!(
        out.ok,
        "rollout status after undo: {} {}",
        out.stdout, out.stderr
    );
    let out = kubectl(&kc, &["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}"], None).await;
    assert_eq!(out.stdout, "web:1 3", "{}", out.stderr);

    let out = kubectl(&kc, &["delete", "deployment", "web"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("deployment.apps \"web\" deleted"),
        "{}",
        out.stdout
    );
    let out = kubectl(&kc, &["get", "deployment", "web"], None).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("NotFound") || out.stderr.contains("not found"),
        "{}",
        out.stderr
    );
    let out = kubectl(&kc, &["get", "pods", "-o", "json"], None).await;
    let pods: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        pods["items"].as_array().unwrap().len(),
        0,
        "the pods went with the deployment"
    );
}

/// A test without an async runtime, blocking on a child process the way an
/// `assert_cmd` test of maily-deploy does: the sim runs on its own thread.
#[test]
fn a_blocking_test_can_run_kubectl_against_a_sim() {
    let sim = kubesim::Sim::start_blocking(kubesim::SimOptions::default()).unwrap();
    use std::io::Write;
    let mut child = sim
        .kubectl()
        .args(["apply", "--validate=false", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: blocking\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sim
        .kubectl()
        .args([
            "get",
            "namespace",
            "blocking",
            "-o",
            "jsonpath={.status.phase}",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Active");
    let verbs: Vec<String> = sim
        .control()
        .requests()
        .iter()
        .filter(|r| r.resource == "namespaces")
        .map(|r| r.verb.clone())
        .collect();
    // Client-side apply: look, create; then the get.
    assert_eq!(verbs, vec!["get", "create", "get"]);
}

/// `kubectl create <kind>` sends protobuf; a person staging a failure by hand
/// gets what a cluster would do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_generators_stage_objects_and_a_failing_deployment() {
    let sim = sim().await;
    sim.control()
        .set_image_fault("*:broken-*", ImageFault::ImagePullBackOff);
    let kc = sim.kubeconfig_path().to_path_buf();
    for args in [
        &["create", "namespace", "staging"][..],
        &[
            "-n",
            "staging",
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=blue",
        ][..],
        &[
            "-n",
            "staging",
            "create",
            "secret",
            "generic",
            "keys",
            "--from-literal=token=abc",
        ][..],
        &[
            "-n",
            "staging",
            "create",
            "deployment",
            "api",
            "--image=api:broken-1",
            "--replicas=2",
        ][..],
        &[
            "-n",
            "staging",
            "create",
            "service",
            "clusterip",
            "api",
            "--tcp=80:8080",
        ][..],
        &[
            "-n",
            "staging",
            "run",
            "debug",
            "--image=busybox:1",
            "--restart=Never",
        ][..],
    ] {
        let out = kubectl(&kc, args, None).await;
        assert!(out.ok, "kubectl {args:?}: {}", out.stderr);
    }
    let client = sim.client();
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), "staging");
    assert_eq!(
        cms.get("settings").await.unwrap().data.unwrap()["mode"],
        "blue"
    );
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), "staging");
    assert_eq!(
        secrets.get("keys").await.unwrap().data.unwrap()["token"].0,
        b"abc"
    );
    let svcs: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), "staging");
    let port = svcs.get("api").await.unwrap().spec.unwrap().ports.unwrap()[0].clone();
    assert_eq!((port.port, port.protocol.as_deref()), (80, Some("TCP")));
    // The whole condition is waited for: both api pods backing off and the
    // debug pod Running (under load the latter can come last).
    let table = eventually(
        "the staged pods pull back off and the debug pod runs",
        Duration::from_secs(30),
        || {
            let kc = kc.clone();
            async move {
                let out = kubectl(&kc, &["-n", "staging", "get", "pods"], None).await;
                let t = out.stdout;
                (t.matches("ImagePullBackOff").count() == 2
                    && t.contains("0/1")
                    && t.lines()
                        .any(|l| l.starts_with("debug") && l.contains("Running")))
                .then_some(t)
            }
        },
    )
    .await;
    assert!(table.contains("0/1"), "{table}");
}
