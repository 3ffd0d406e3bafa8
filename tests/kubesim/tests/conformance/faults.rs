//! API faults, the request log, counters, reset, tokens, TLS and the
//! `/_sim/` control API.

use crate::common::{api_error, http, sim};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubesim::{ApiFault, Sim, SimOptions};
use serde_json::json;
use std::time::{Duration, Instant};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rates_hit_only_their_verb_and_resource_with_the_right_status() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    sim.control()
        .add_api_fault(ApiFault::always(Some("get"), Some("configmaps"), 500));
    assert_eq!(
        api_error(api.get("a").await.unwrap_err()),
        ("InternalError".into(), 500)
    );
    assert!(
        api.list(&ListParams::default()).await.is_ok(),
        "list is not affected"
    );
    sim.control().clear_api_faults();

    // kube's client retries 503 and 429 by itself: every list succeeds in
    // the end, and the log shows one extra request per injected failure.
    sim.control().reset();
    sim.control().add_api_fault(ApiFault {
        verb: Some("list".into()),
        resource: None,
        rate: 0.5,
        code: 503,
        retry_after_seconds: None,
    });
    for _ in 0..4 {
        api.list(&ListParams::default())
            .await
            .expect("the client rides out a 503");
    }
    let lists: Vec<u16> = sim
        .control()
        .requests()
        .iter()
        .filter(|r| r.verb == "list")
        .map(|r| r.code)
        .collect();
    let failed = lists.iter().filter(|c| **c == 503).count();
    assert!(failed >= 2, "half of the list requests failed: {lists:?}");
    assert_eq!(
        lists.len(),
        4 + failed,
        "each failure was retried: {lists:?}"
    );
    sim.control().clear_api_faults();

    sim.control().add_api_fault(ApiFault {
        verb: Some("get".into()),
        resource: Some("configmaps".into()),
        rate: 1.0,
        code: 429,
        retry_after_seconds: Some(3),
    });
    let r = http(
        sim.url(),
        "GET",
        "/api/v1/namespaces/default/configmaps/a",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("Retry-After"), Some("3"));
    assert_eq!(r.json()["reason"], "TooManyRequests");
    assert_eq!(r.json()["details"]["retryAfterSeconds"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_an_outage_window_slow_and_stop_the_api() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    sim.control().set_latency(Duration::from_millis(300));
    let t = Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    sim.control().clear_api_faults();

    sim.control().outage(Duration::from_millis(500));
    let r = http(
        sim.url(),
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.header("Retry-After").is_some());
    // The kube client retries through the window and gets its answer after it.
    let t = Instant::now();
    api.list(&ListParams::default())
        .await
        .expect("the list succeeds once the outage ends");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "it had to wait out the outage"
    );
    assert!(
        sim.control()
            .requests()
            .iter()
            .any(|r| r.code == 503 && r.verb == "list")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_names_each_request_as_rbac_would() {
    let sim = sim().await;
    let client = sim.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    sim.control().reset();
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    api.get("a").await.unwrap();
    api.list(&ListParams::default()).await.unwrap();
    let got = api.get("a").await.unwrap();
    api.replace("a", &PostParams::default(), &got)
        .await
        .unwrap();
    api.patch("a", &PatchParams::apply("t"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}}))).await.unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client, "prod");
    let _ = deploys.get_status("web").await;

    let log = sim.control().requests();
    let verbs: Vec<&str> = log.iter().map(|r| r.verb.as_str()).collect();
    assert_eq!(
        verbs,
        vec![
            "create",
            "get",
            "list",
            "get",
            "update",
            "patch",
            "delete",
            "deletecollection",
            "get"
        ]
    );
    assert!(
        log[..8].iter().all(|r| r.api_group.is_empty()
            && r.resource == "configmaps"
            && r.namespace == "default")
    );
    assert_eq!(log[1].name, "a");
    let last = log.last().unwrap();
    assert_eq!(
        (
            last.api_group.as_str(),
            last.resource.as_str(),
            last.subresource.as_str(),
            last.namespace.as_str(),
            last.name.as_str()
        ),
        ("apps", "deployments", "status", "prod", "web")
    );
    assert_eq!(last.code, 404);

    let counters = sim.control().counters();
    assert_eq!(counters.get("get configmaps"), Some(&2));
    assert_eq!(counters.get("get deployments/status"), Some(&1));
    sim.control().reset();
    assert!(sim.control().requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_requests_without_it_are_unauthorized() {
    let sim = Sim::start(SimOptions {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = http(sim.url(), "GET", "/api/v1/namespaces", &[], "").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "Unauthorized");
    let r = http(
        sim.url(),
        "GET",
        "/api/v1/namespaces",
        &[("Authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    assert!(
        api.list(&ListParams::default()).await.is_ok(),
        "the client carries the token"
    );
    let kc = std::fs::read_to_string(sim.kubeconfig_path()).unwrap();
    assert!(kc.contains("token: s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_that_a_client_from_the_kubeconfig_trusts() {
    let sim = Sim::start(SimOptions {
        tls: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(sim.url().starts_with("https://127.0.0.1:"));
    let kc = kube::config::Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    api.create(&PostParams::default(), &cm("over-tls"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_sets_faults_and_reads_counters_over_http() {
    let sim = sim().await;
    let url = sim.url().to_string();
    let r = http(
        &url,
        "POST",
        "/_sim/api-faults",
        &[],
        r#"{"verb":"list","resource":"pods","rate":1,"code":503}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http(&url, "GET", "/api/v1/namespaces/default/pods", &[], "").await;
    assert_eq!(r.status, 503);
    http(&url, "DELETE", "/_sim/api-faults", &[], "").await;
    assert_eq!(
        http(&url, "GET", "/api/v1/namespaces/default/pods", &[], "")
            .await
            .status,
        200
    );

    let r = http(
        &url,
        "POST",
        "/_sim/image-faults",
        &[],
        r#"{"pattern":"*:bad-*","fault":"ImagePullBackOff"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.control().image_faults()[0].pattern, "*:bad-*");
    let r = http(
        &url,
        "POST",
        "/_sim/image-faults",
        &[],
        r#"{"pattern":"x","fault":"Explode"}"#,
    )
    .await;
    assert_eq!(r.status, 400, "an unknown fault is refused");

    let counters = http(&url, "GET", "/_sim/counters", &[], "").await.json();
    assert_eq!(counters["list pods"], 2);
    let log = http(&url, "GET", "/_sim/requests", &[], "").await.json();
    assert_eq!(log[0]["verb"], "list");
    assert_eq!(log[0]["resource"], "pods");
    http(&url, "POST", "/_sim/reset", &[], "").await;
    assert!(sim.control().requests().is_empty());
    assert!(sim.control().image_faults().is_empty());
}
