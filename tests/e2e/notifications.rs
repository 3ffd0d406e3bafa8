//! Slack notifications as a channel would see them: the built binary
//! deploying against kubesim, a stub of Slack's incoming webhook taking the
//! messages.

use std::time::Duration;

use kubesim::ImageFault;
use serde_json::Value;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

fn slack(world: &World, status: u16) -> MockServer {
    world.rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/services/T000/B000/XXXX"))
            .and(header("content-type", "application/json"))
            .respond_with(
                ResponseTemplate::new(status).set_body_string(if status == 200 {
                    "ok"
                } else {
                    "internal_error"
                }),
            )
            .mount(&server)
            .await;
        server
    })
}

fn messages(world: &World, server: &MockServer) -> Vec<String> {
    world
        .rt
        .block_on(server.received_requests())
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert!(v["blocks"].is_array(), "Block Kit blocks: {v}");
            v["text"].as_str().unwrap().to_string()
        })
        .collect()
}

fn deploy_with_slack(world: &World, url: &str, tag: &str) -> std::process::Output {
    let env = world.env_file(&[("IMAGE_TAG", tag), ("SLACK_WEBHOOK_URL", url)]);
    world
        .maily()
        .arg("staging")
        .args(BACKEND_ONLY)
        .arg("--env-file")
        .arg(&env)
        .output()
        .unwrap()
}

#[test]
fn start_success_failure_and_rollback_are_announced() {
    let world = World::new(Duration::from_millis(300));
    let server = slack(&world, 200);
    let url = format!("{}/services/T000/B000/XXXX", server.uri());

    let first = deploy_with_slack(&world, &url, "v1");
    assert_exit(&first, 0);
    let id = deployment_id_of(&first);
    let got = messages(&world, &server);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with(&format!(":rocket: deployment of *staging* started: `{id}`")),
        "{got:?}"
    );
    assert!(got[0].contains("By: tester@"), "{got:?}");
    assert!(
        got[1].starts_with(&format!(
            ":white_check_mark: deployment of *staging* succeeded: `{id}`"
        )),
        "{got:?}"
    );
    assert!(got[1].contains("Duration: "), "{got:?}");

    world
        .sim()
        .control()
        .set_image_fault("*:broken-*", ImageFault::ImagePullBackOff);
    let failed = deploy_with_slack(&world, &url, "broken-2");
    assert_eq!(failed.status.code(), Some(4));
    let got = messages(&world, &server);
    let last = got.last().unwrap();
    assert!(
        last.starts_with(":x: deployment of *staging* failed"),
        "{last}"
    );
    assert!(last.contains("Failed phase: deploy-backend"), "{last}");
    assert!(
        last.contains("ErrImagePull") || last.contains("ImagePullBackOff"),
        "{last}"
    );

    world.sim().control().clear_image_faults();
    let second = deploy_with_slack(&world, &url, "v2");
    assert_exit(&second, 0);
    let env = world.env_file(&[("SLACK_WEBHOOK_URL", &url)]);
    let rb = world
        .maily()
        .args(["rollback", "staging", &id, "--env-file"])
        .arg(&env)
        .output()
        .unwrap();
    assert_exit(&rb, 0);
    let got = messages(&world, &server);
    assert!(
        got.last().unwrap().starts_with(&format!(
            ":white_check_mark: rollback to {id} of *staging* succeeded"
        )),
        "{got:?}"
    );
    for m in &got {
        assert!(
            !m.contains("XXXX"),
            "the webhook (a credential) is never in a message: {m}"
        );
    }
}

#[test]
fn slack_failing_never_fails_a_deploy() {
    let world = World::new(Duration::from_millis(300));
    let server = slack(&world, 500);
    let url = format!("{}/services/T000/B000/XXXX", server.uri());
    let out = deploy_with_slack(&world, &url, "v1");
    assert_exit(&out, 0);
    assert_eq!(messages(&world, &server).len(), 2, "both were tried");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Slack answered 500"), "{stderr}");
    assert!(
        !stderr.contains("XXXX"),
        "the webhook is a secret: {stderr}"
    );

    // Nothing listening at all: still green.
    let out = deploy_with_slack(&world, "http://127.0.0.1:9/services/T000/B000/XXXX", "v2");
    assert_exit(&out, 0);

    // With --output json, the report says it too: the start message and the
    // end message (sent after the phases, before the report is printed).
    let env = world.env_file(&[("IMAGE_TAG", "v3"), ("SLACK_WEBHOOK_URL", &url)]);
    let out = world
        .maily()
        .args([
            "staging",
            "--output",
            "json",
            "-q",
            "--env-file",
            path_str(&env),
        ])
        .args(BACKEND_ONLY)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.starts_with("Slack answered 500 Internal Server Error to a notification"))
            .count(),
        1,
        "once, though both messages failed alike: {warnings:?}"
    );
    assert_eq!(
        messages(&world, &server).len(),
        4,
        "the end message was sent"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("XXXX"));
}
