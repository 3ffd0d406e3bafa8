//! The backend deploy as a user runs it: the built binary against a
//! Kubernetes API (kubesim) that the real kube client talks to over HTTP.

mod support;

use std::time::Duration;

use kubesim::ImageFault;
use maily_deploy::exit_code;
use maily_deploy::pipeline::snapshot::Outcome;
use support::*;

const HTTP: [&str; 5] = ["analytics", "api", "blockchain-verifier", "campaigns", "email-sender"];

fn all_on(world: &World, slot: &str) {
    for (svc, selected, weights) in world.traffic() {
        assert_eq!(selected.as_deref(), Some(slot), "{svc}'s stable Service");
        let want = if slot == "blue" { (100, 0) } else { (0, 100) };
        assert_eq!(weights, Some(want), "{svc}'s route");
    }
}

#[test]
fn deploys_go_to_the_idle_slot_and_switch_users_to_it() {
    let world = World::new(Duration::from_millis(300));

    // 1. An empty cluster: everything to blue, users switched to blue.
    let out = world.deploy("v1", &[]);
    assert_eq!(out.status.code(), Some(exit_code::SUCCESS), "{}", text(&out));
    for svc in HTTP.iter().chain(["workers"].iter()) {
        assert_eq!(world.image(&format!("{svc}-blue")).as_deref(), Some(format!("registry.example.invalid/maily/maily-{svc}:v1").as_str()));
    }
    all_on(&world, "blue");
    assert_eq!(world.replicas("workers-blue"), Some(2), "workers scaled up by the switch");
    let first = deployment_id_of(&out);

    // 2. A new tag goes to green and users follow; blue stays up.
    let out = world.deploy("v2", &[]);
    assert_eq!(out.status.code(), Some(exit_code::SUCCESS), "{}", text(&out));
    assert_eq!(world.image("api-green").as_deref(), Some("registry.example.invalid/maily/maily-api:v2"));
    all_on(&world, "green");
    assert_eq!(world.image("api-blue").as_deref(), Some("registry.example.invalid/maily/maily-api:v1"));
    assert_eq!(world.replicas("api-blue"), Some(1), "the old http slot stays up for rollback");
    assert_eq!(world.replicas("workers-blue"), Some(0), "old workers stop consuming");
    assert_eq!(world.replicas("workers-green"), Some(2));

    // 3. The next returns to blue.
    let out = world.deploy("v3", &[]);
    assert_eq!(out.status.code(), Some(exit_code::SUCCESS), "{}", text(&out));
    all_on(&world, "blue");
    assert_eq!(world.image("api-blue").as_deref(), Some("registry.example.invalid/maily/maily-api:v3"));

    // Each run left a snapshot that says how it went.
    let snaps = world.snapshots();
    assert_eq!(snaps.len(), 3);
    assert!(snaps.iter().all(|s| s.outcome == Outcome::Succeeded));
    assert_eq!(snaps.last().unwrap().deployment_id, first);
}

fn failing_deploy_leaves_users_alone(fault_pattern: &str, fault: ImageFault, tag: &str, extra_env: &[(&str, &str)], reason: &str) {
    let world = World::new(Duration::from_millis(300));
    let out = world.deploy("v1", &[]);
    assert_eq!(out.status.code(), Some(exit_code::SUCCESS), "{}", text(&out));
    world.sim.control().set_image_fault(fault_pattern, fault);

    let mut env = vec![("IMAGE_TAG", tag), ("ROLLOUT_TIMEOUT", "60s")];
    env.extend_from_slice(extra_env);
    let file = world.env_file(&env);
    let started = std::time::Instant::now();
    let out = world
        .maily()
        .arg("staging")
        .args(BACKEND_ONLY)
        .arg("--env-file")
        .arg(&file)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let took = started.elapsed();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(exit_code::PHASE_FAILED_ROLLED_BACK), "{all}");
    assert!(all.contains(reason), "the reason {reason} is named: {all}");
    assert!(all.contains("deploy-backend"), "the phase is named: {all}");
    assert!(took < Duration::from_secs(30), "failed fast, in {took:?}: {all}");
    all_on(&world, "blue");
    assert_eq!(world.image("api-blue").as_deref(), Some("registry.example.invalid/maily/maily-api:v1"));
    let snaps = world.snapshots();
    assert_eq!(snaps[0].outcome, Outcome::Failed, "{:?}", snaps[0]);
    assert!(snaps[0].failure.as_deref().unwrap_or_default().contains(reason));
}

#[test]
fn a_bad_image_fails_fast_naming_the_pod_and_leaves_users_alone() {
    failing_deploy_leaves_users_alone("*:broken-*", ImageFault::ImagePullBackOff, "broken-2", &[], "ImagePull");
}

#[test]
fn a_crash_loop_fails_fast_and_leaves_users_alone() {
    failing_deploy_leaves_users_alone("*:crash-*", ImageFault::CrashLoopBackOff, "crash-2", &[], "CrashLoopBackOff");
}

#[test]
fn a_rollout_past_its_deadline_fails_and_leaves_users_alone() {
    failing_deploy_leaves_users_alone(
        "*:unready-*",
        ImageFault::NeverReady,
        "unready-2",
        &[("ROLLOUT_TIMEOUT", "3s")],
        "ProgressDeadlineExceeded",
    );
}

