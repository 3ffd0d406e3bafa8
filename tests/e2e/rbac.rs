//! Every API call the tool makes is allowed by the deployer's Role (and
//! ClusterRole) shipped in `manifests/`: kubesim's request log against the
//! rules, after deploys, a failed deploy, a rollback, history, status,
//! unlock, and a deploy with monitor (rules and ServiceMonitors).

use std::time::Duration;

use kubesim::ImageFault;
use maily_deploy::k8s::manifest::{self, Scope};
use maily_deploy::k8s::values::{self, Release};
use serde_json::Value;

use crate::support;
use crate::support::ai::*;
use crate::support::*;

struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

fn list(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The rules of the shipped Role and ClusterRole for staging.
fn shipped_rules() -> (Vec<Rule>, Vec<Rule>) {
    let profile =
        maily_deploy::config::profile::load(&repo().join("manifests"), "staging").unwrap();
    let templates = manifest::load(&repo().join("manifests")).unwrap();
    let release = Release {
        environment: "staging".into(),
        deployment_id: "staging-20250101-000000".into(),
        image_registry: "r".into(),
        image_tag: "t".into(),
        backup_url: String::new(),
        rollout_timeout_secs: 60,
        digests: Default::default(),
    };
    let objects = manifest::render(
        &templates,
        &[Scope::Bootstrap],
        &values::common(&release, &profile),
    )
    .unwrap();
    let mut role = Vec::new();
    let mut cluster = Vec::new();
    for (_, o) in objects {
        let kind = o.types.as_ref().unwrap().kind.clone();
        let target = match kind.as_str() {
            "Role" => &mut role,
            "ClusterRole" => &mut cluster,
            _ => continue,
        };
        for r in o.data["rules"].as_array().unwrap() {
            target.push(Rule {
                groups: list(&r["apiGroups"]),
                resources: list(&r["resources"]),
                verbs: list(&r["verbs"]),
            });
        }
    }
    (role, cluster)
}

fn allowed(rules: &[Rule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.groups.iter().any(|g| g == group || g == "*")
            && r.resources.iter().any(|x| x == resource || x == "*")
            && r.verbs.iter().any(|v| v == verb || v == "*")
    })
}

#[test]
fn every_call_the_tool_makes_is_allowed_by_the_shipped_role() {
    let world = World::new(Duration::from_millis(300));
    // What a cluster admin installs; not the deployer's calls.
    world.install_prometheus_operator_crds();
    world.sim().control().reset();

    let first = world.deploy("v1", &[]);
    assert_exit(&first, 0);
    let second = world.deploy("v2", &[]);
    assert_exit(&second, 0);
    world
        .sim()
        .control()
        .set_image_fault("*:broken-*", ImageFault::ImagePullBackOff);
    let failed = world.deploy("broken-3", &[]);
    assert_exit(&failed, 4);
    let rollback = world
        .maily()
        .args(["rollback", "staging", &deployment_id_of(&first)])
        .output()
        .unwrap();
    assert_exit(&rollback, 0);
    for args in [
        &["history", "staging"][..],
        &["status", "staging"][..],
        &["unlock", "staging", "--yes"][..],
    ] {
        let out = world.maily().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }

    // monitor: the rules and monitors it applies, with a Grafana that says
    // yes to everything and a Prometheus that scrapes both slots.
    let (grafana, metrics) = world.rt.block_on(async {
        use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};
        let grafana = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"id": 1, "uid": "maily-staging", "title": "Maily staging"}),
            ))
            .mount(&grafana)
            .await;
        let metrics = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(200).set_body_string("up_test 1\n"))
            .mount(&metrics)
            .await;
        (grafana, metrics)
    });
    let targets: Vec<_> = ["blue", "green"]
        .iter()
        .flat_map(|slot| {
            [
                "analytics",
                "api",
                "blockchain-verifier",
                "campaigns",
                "email-sender",
            ]
            .map(|s| {
                support::prometheus::slot_target(
                    &metrics.address().to_string(),
                    NAMESPACE,
                    s,
                    slot,
                    "v4",
                )
            })
        })
        .collect();
    let prometheus = support::prometheus::PrometheusServer::start(&targets);
    let env = world.env_file(&[
        ("IMAGE_TAG", "v4"),
        ("ROLLOUT_TIMEOUT", "60s"),
        ("GRAFANA_URL", &grafana.uri()),
        ("PROMETHEUS_URL", &prometheus.url),
        ("MONITOR_TARGETS_TIMEOUT", "30s"),
    ]);
    let monitored = world
        .maily()
        .arg("staging")
        .args(BACKEND_ONLY.iter().filter(|f| **f != "--skip-monitor"))
        .arg("--env-file")
        .arg(&env)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_exit(&monitored, 0);

    let denied = denied_calls(&world);
    assert!(
        denied.is_empty(),
        "calls the deployer Role does not allow:\n{}",
        denied.join("\n")
    );
}

#[test]
fn configure_ai_calls_are_allowed_by_the_shipped_role_too() {
    let world = World::new(Duration::from_millis(300));
    let p = providers(&world);
    world.sim().control().reset();
    let first = deploy_with_ai(&world, &p, "v1", &[]);
    assert_exit(&first, 0);
    let second = deploy_with_ai(&world, &p, "v2", &[]);
    assert_exit(&second, 0);
    let denied = denied_calls(&world);
    assert!(
        denied.is_empty(),
        "calls the deployer Role does not allow:\n{}",
        denied.join("\n")
    );
}

/// Every call in kubesim's log that the shipped Role and ClusterRole do not allow.
fn denied_calls(world: &World) -> Vec<String> {
    let (role, cluster) = shipped_rules();
    let requests = world.sim().control().requests();
    let resource_requests: Vec<_> = requests.iter().filter(|r| r.is_resource()).collect();
    assert!(
        resource_requests.len() > 50,
        "the log holds the runs' calls ({})",
        resource_requests.len()
    );
    let mut denied = Vec::new();
    for r in &resource_requests {
        let resource = if r.subresource.is_empty() {
            r.resource.clone()
        } else {
            format!("{}/{}", r.resource, r.subresource)
        };
        // A Namespace is cluster-scoped, whatever path segment names it.
        let ok = if r.namespace.is_empty() || r.resource == "namespaces" {
            allowed(&cluster, &r.api_group, &resource, &r.verb)
        } else {
            r.namespace == NAMESPACE && allowed(&role, &r.api_group, &resource, &r.verb)
        };
        if !ok {
            denied.push(format!(
                "{} {}/{} in {:?} ({})",
                r.verb, r.api_group, resource, r.namespace, r.path
            ));
        }
    }
    denied.sort();
    denied.dedup();
    denied
}

#[test]
fn an_admin_applies_the_bootstrap_with_kubectl() {
    let world = World::new(Duration::from_millis(300));
    let out = world
        .maily()
        .args(["bootstrap", "staging"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let yaml = String::from_utf8(out.stdout).unwrap();
    let file = world.dir.path().join("bootstrap.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let applied = world
        .sim()
        .kubectl()
        .args(["apply", "--server-side", "--validate=false", "-f"])
        .arg(&file)
        .output()
        .expect("kubectl runs");
    assert!(applied.status.success(), "{}", text(&applied));
    let said = String::from_utf8_lossy(&applied.stdout);
    for obj in [
        "namespace/maily-staging",
        "serviceaccount/maily-deployer",
        "role.rbac.authorization.k8s.io/maily-deployer",
        "rolebinding.rbac.authorization.k8s.io/maily-deployer",
        "clusterrole.rbac.authorization.k8s.io/maily-deployer-staging",
    ] {
        assert!(said.contains(obj), "kubectl did not apply {obj}: {said}");
    }
}
