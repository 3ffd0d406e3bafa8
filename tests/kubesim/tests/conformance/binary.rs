//! The `kubesim` binary: flags, the first stdout line, the kubeconfig it
//! writes, and a clean exit on SIGTERM.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kubesim::SimProcess;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_its_kubeconfig_with_flags_and_exits_on_sigterm() {
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_kubesim"));
    let sim = SimProcess::spawn(
        &bin,
        &[
            "--token",
            "t0ken",
            "--rollout-seconds",
            "0.2",
            "--image-fault",
            "*:broken-*=ImagePullBackOff",
        ],
    )
    .unwrap();
    assert!(sim.url().starts_with("http://127.0.0.1:"));
    let kc = kube::config::Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "b"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "b"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "b", "image": "b:broken-1"}]}}}});
    deploys
        .patch("b", &PatchParams::apply("test"), &Patch::Apply(d))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut reason = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ps = pods
            .list(&ListParams::default().labels("app=b"))
            .await
            .unwrap()
            .items;
        reason = ps.first().and_then(|p| {
            p.status.as_ref()?.container_statuses.as_ref()?[0]
                .state
                .as_ref()?
                .waiting
                .as_ref()?
                .reason
                .clone()
        });
        if reason.as_deref() == Some("ImagePullBackOff") {
            break;
        }
    }
    assert_eq!(
        reason.as_deref(),
        Some("ImagePullBackOff"),
        "the --image-fault flag took effect"
    );
    let log = sim.requests().unwrap();
    assert!(
        log.iter()
            .any(|r| r.verb == "patch" && r.resource == "deployments" && r.name == "b")
    );
    sim.set_image_fault("*:late-*", &kubesim::ImageFault::NeverReady)
        .unwrap();
    sim.add_api_fault(&kubesim::ApiFault::always(
        Some("delete"),
        Some("pods"),
        500,
    ))
    .unwrap();
    let err = pods
        .delete(
            &pods.list(&ListParams::default()).await.unwrap().items[0]
                .metadata
                .name
                .clone()
                .unwrap(),
            &Default::default(),
        )
        .await;
    assert!(
        matches!(err, Err(kube::Error::Api(ref s)) if s.code == 500),
        "{err:?}"
    );
    sim.reset().unwrap();
    assert!(sim.requests().unwrap().is_empty());
    let status = sim.terminate().unwrap();
    assert!(status.success(), "exits cleanly on SIGTERM: {status:?}");
}
