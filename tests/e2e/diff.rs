//! `maily-deploy diff` as a CI review step runs it, against kubesim: what
//! a deploy would change for users, judged by the server's dry run, with
//! `diff(1)`'s exit codes, and nothing stored.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use maily_deploy::exit_code;
use serde_json::Value;

use crate::support::*;

fn diff(world: &World, tag: &str, extra: &[&str]) -> std::process::Output {
    world.diff(tag, extra)
}

/// Every stored object the tool writes, by kind and name, at its
/// resourceVersion: equal before and after means nothing was written.
fn stored(world: &World) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let ns = &world.namespace;
    let mut put = |kind: &str, items: Vec<kube::api::ObjectMeta>| {
        for m in items {
            out.insert(
                format!("{kind}/{}", m.name.unwrap_or_default()),
                m.resource_version.unwrap_or_default(),
            );
        }
    };
    let lp = ListParams::default();
    world.rt.block_on(async {
        let c = world.client.clone();
        let d = Api::<Deployment>::namespaced(c.clone(), ns).list(&lp).await;
        put(
            "Deployment",
            d.unwrap().items.into_iter().map(|o| o.metadata).collect(),
        );
        let s = Api::<Service>::namespaced(c.clone(), ns).list(&lp).await;
        put(
            "Service",
            s.unwrap().items.into_iter().map(|o| o.metadata).collect(),
        );
        let m = Api::<ConfigMap>::namespaced(c.clone(), ns).list(&lp).await;
        put(
            "ConfigMap",
            m.unwrap().items.into_iter().map(|o| o.metadata).collect(),
        );
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
        ));
        let r = Api::<DynamicObject>::namespaced_with(c, ns, &ar)
            .list(&lp)
            .await;
        put(
            "HTTPRoute",
            r.unwrap().items.into_iter().map(|o| o.metadata).collect(),
        );
    });
    out
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn a_first_deploy_shows_every_object_created_and_writes_nothing() {
    let world = World::new(Duration::from_millis(200));
    let out = diff(&world, "v1", &[]);
    assert_exit(&out, exit_code::DIFF_CHANGES);
    let plan = stdout(&out);
    for line in [
        "+ Deployment api-blue",
        "+ Deployment workers-blue",
        "+ HTTPRoute api",
        "+ Service api",
        "+ Namespace maily-staging",
    ] {
        assert!(plan.lines().any(|l| l == line), "{line:?} in:\n{plan}");
    }
    assert!(
        plan.lines().all(|l| l.starts_with("+ ")),
        "only creations on a first deploy:\n{plan}"
    );
    assert!(
        !plan.contains("Secret"),
        "Secrets are never diffed:\n{plan}"
    );
    assert!(stored(&world).is_empty(), "nothing stored");
    assert!(world.lease_holder().is_none(), "no lock taken");
    assert!(world.snapshots().is_empty(), "no snapshot");
}

#[test]
fn the_live_release_again_is_no_change_and_a_new_tag_is_its_image_fields() {
    let world = World::new(Duration::from_millis(200));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    world.assert_all_on("blue");
    let before = stored(&world);

    // The release users run, with the same manifests: nothing to change,
    // although a deploy of it would fill green and switch.
    let out = diff(&world, "v1", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(stdout(&out), "", "{}", text(&out));
    assert!(
        text(&out).contains("compared with slot blue"),
        "{}",
        text(&out)
    );

    // A new tag: each field that carries it, from v1 to v2, and no other.
    let out = diff(&world, "v2", &[]);
    assert_exit(&out, exit_code::DIFF_CHANGES);
    let plan = stdout(&out);
    assert!(
        plan.lines().any(|l| l
            == "~ Deployment api-blue: spec.template.spec.containers[api].image: registry.example.invalid/maily/maily-api:v1 → registry.example.invalid/maily/maily-api:v2"),
        "{plan}"
    );
    for line in plan.lines() {
        assert!(
            line.starts_with("~ ") && line.ends_with("v2") && line.contains("v1 → "),
            "only the tag's fields change: {line}\n{plan}"
        );
    }

    // The same as JSON, for a CI step that comments on a pull request.
    let out = diff(&world, "v2", &["--output", "json"]);
    assert_exit(&out, exit_code::DIFF_CHANGES);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["slot"], "blue");
    assert_eq!(doc["created"], serde_json::json!([]));
    let api = doc["changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["object"] == "Deployment api-blue")
        .expect("api-blue changes");
    assert!(
        api["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "spec.template.spec.containers[api].image"
                && f["to"] == "registry.example.invalid/maily/maily-api:v2"),
        "{doc}"
    );

    assert_eq!(stored(&world), before, "nothing stored");
    assert!(world.lease_holder().is_none(), "no lock taken");
    assert_eq!(world.snapshots().len(), 1, "no snapshot but the deploy's");
}

#[test]
fn a_diff_that_cannot_be_made_never_exits_0_or_1() {
    let world = World::new(Duration::from_millis(200));
    // A kubeconfig whose server refuses connections.
    let dead = world.dir.path().join("dead.kubeconfig");
    let text_of = std::fs::read_to_string(world.kubeconfig_path()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rewritten = regex_lite_replace_server(&text_of, &format!("https://127.0.0.1:{port}"));
    std::fs::write(&dead, rewritten).unwrap();
    let env = world.env_file(&[("IMAGE_TAG", "v1")]);
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("maily-deploy"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", world.dir.path())
        .current_dir(repo())
        .args(["diff", &world.environment])
        .args(BACKEND_ONLY)
        .arg("--env-file")
        .arg(&env)
        .arg("--kubeconfig")
        .arg(&dead)
        .output()
        .unwrap();
    let code = out.status.code();
    assert!(
        code != Some(0) && code != Some(1),
        "exit {code:?} would read as a diff:\n{}",
        text(&out)
    );
    assert_eq!(stdout(&out), "", "no diff printed");

    // A configuration problem keeps its own code.
    let env = world.env_file(&[("IMAGE_TAG", "")]);
    let out = world
        .maily()
        .args(["diff", &world.environment])
        .args(BACKEND_ONLY)
        .arg("--env-file")
        .arg(&env)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::CONFIG);
    assert!(text(&out).contains("IMAGE_TAG"), "{}", text(&out));
}

/// The kubeconfig with its `server:` line pointed at `server`.
fn regex_lite_replace_server(kubeconfig: &str, server: &str) -> String {
    kubeconfig
        .lines()
        .map(|l| match l.split_once("server:") {
            Some((indent, _)) => format!("{indent}server: {server}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
