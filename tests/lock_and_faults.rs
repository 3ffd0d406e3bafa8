//! One run at a time, and runs that survive a flaky API server, a kill, or
//! a signal: the built binary against kubesim.

mod support;

use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use kubesim::{ApiFault, ImageFault};
use maily_deploy::exit_code;
use maily_deploy::pipeline::snapshot::Outcome;
use support::*;

/// The deploy command line as a `std::process::Command`, to spawn and kill.
fn spawn_deploy(world: &World, tag: &str, extra: &[&str]) -> std::process::Child {
    let env = world.env_file(&[("IMAGE_TAG", tag), ("ROLLOUT_TIMEOUT", "60s")]);
    world
        .process()
        .arg("staging")
        .args(BACKEND_ONLY)
        .arg("--env-file")
        .arg(&env)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every service on one slot running one tag: (slot, tag).
fn consistent(world: &World) -> (String, String) {
    let traffic = world.traffic();
    let slot = traffic[0].1.clone().expect("a stable Service");
    for (svc, selected, weights) in &traffic {
        assert_eq!(
            selected.as_deref(),
            Some(slot.as_str()),
            "{svc} is on another slot: {traffic:?}"
        );
        let want = if slot == "blue" { (100, 0) } else { (0, 100) };
        assert_eq!(
            *weights,
            Some(want),
            "{svc}'s route is half-switched: {traffic:?}"
        );
    }
    let tag = |svc: &str| {
        world
            .image(&format!("{svc}-{slot}"))
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    let t = tag("api");
    for svc in [
        "analytics",
        "blockchain-verifier",
        "campaigns",
        "email-sender",
        "workers",
    ] {
        assert_eq!(tag(svc), t, "{svc} runs another release on {slot}");
    }
    let other = if slot == "blue" { "green" } else { "blue" };
    assert_eq!(
        world.replicas(&format!("workers-{slot}")),
        Some(2),
        "live workers up"
    );
    assert_eq!(
        world.replicas(&format!("workers-{other}")).unwrap_or(0),
        0,
        "idle workers down"
    );
    (slot, t)
}

#[test]
fn two_runs_at_once_exactly_one_proceeds() {
    let world = World::new(Duration::from_millis(1500));
    let a = spawn_deploy(&world, "v1", &[]);
    let b = spawn_deploy(&world, "v1", &[]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = vec![a.status.code().unwrap(), b.status.code().unwrap()];
    codes.sort();
    assert_eq!(
        codes,
        vec![exit_code::SUCCESS, exit_code::LOCK_HELD],
        "a: {}\nb: {}",
        text(&a),
        text(&b)
    );
    let refused = if a.status.code() == Some(exit_code::LOCK_HELD) {
        &a
    } else {
        &b
    };
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("another run holds the deploy lock of staging: tester@"),
        "{stderr}"
    );
    assert!(stderr.contains("(deployment staging-"), "{stderr}");
    consistent(&world);
}

fn put_lease(world: &World, renewed_secs_ago: i64, ttl: i32) {
    let now = chrono::Utc::now() - chrono::Duration::seconds(renewed_secs_ago);
    let ts = k8s_openapi::jiff::Timestamp::from_microsecond(now.timestamp_micros()).unwrap();
    let holder = serde_json::json!({"user": "ghost", "host": "old-runner", "deployment_id": "staging-20250101-000000", "since": "2025-01-01T00:00:00Z"});
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "maily-deploy", "annotations": {"maily.ai/holder": holder.to_string()}},
        "spec": {"holderIdentity": "ghost@old-runner staging-20250101-000000", "leaseDurationSeconds": ttl,
                 "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(ts)}
    }))
    .unwrap();
    let api: Api<Lease> = Api::namespaced(world.client.clone(), NAMESPACE);
    let _ = world
        .rt
        .block_on(api.delete("maily-deploy", &Default::default()));
    world
        .rt
        .block_on(api.create(&PostParams::default(), &lease))
        .unwrap();
}

#[test]
fn an_expired_lease_is_taken_over_and_a_live_one_needs_unlock() {
    let world = World::new(Duration::from_millis(300));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, 0);

    // Renewed an hour ago with a 30 s lease: its holder is gone.
    put_lease(&world, 3600, 30);
    let out = world.deploy("v2", &[]);
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("took over the expired deploy lock of ghost@old-runner"),
        "{}",
        text(&out)
    );

    // Renewed just now: a live run elsewhere.
    put_lease(&world, 0, 300);
    let out = world.deploy("v3", &[]);
    assert_exit(&out, exit_code::LOCK_HELD);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("ghost@old-runner (deployment staging-20250101-000000")
    );
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v1"),
        "nothing changed"
    );

    let out = world.maily().args(["unlock", "staging"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(exit_code::USAGE),
        "no terminal, no --yes: {}",
        text(&out)
    );
    let out = world
        .maily()
        .args(["unlock", "staging", "--yes"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("held by ghost@old-runner"));
    let out = world.deploy("v3", &[]);
    assert_exit(&out, 0);
    assert_eq!(consistent(&world).1, "v3");
}

#[test]
fn a_flaky_api_server_and_dropped_watches_do_not_fail_a_deploy() {
    let world = World::new(Duration::from_millis(800));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, 0);

    let control = world.sim().control();
    control.add_api_fault(ApiFault {
        verb: None,
        resource: None,
        rate: 0.1,
        code: 500,
        retry_after_seconds: None,
    });
    control.add_api_fault(ApiFault {
        verb: None,
        resource: None,
        rate: 0.1,
        code: 429,
        retry_after_seconds: Some(1),
    });
    let child = spawn_deploy(&world, "v2", &[]);
    // Drop every open watch a few times while the rollout runs.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        control.drop_watches();
    }
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0);
    let failed: usize = control.requests().iter().filter(|r| r.code >= 429).count();
    assert!(failed > 5, "the faults fired ({failed} failed requests)");
    control.clear_api_faults();
    assert_eq!(consistent(&world), ("green".to_string(), "v2".to_string()));
}

#[test]
fn an_api_server_that_refuses_everything_fails_cleanly() {
    let world = World::new(Duration::from_millis(300));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, 0);

    world
        .sim()
        .control()
        .add_api_fault(ApiFault::always(None, None, 503));
    let started = Instant::now();
    let out = world.deploy("v2", &[]);
    let took = started.elapsed();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "the cause is named: {}",
        text(&out)
    );
    assert!(
        took < Duration::from_secs(30),
        "gave up in bounded time ({took:?})"
    );
    world.sim().control().clear_api_faults();
    assert_eq!(
        consistent(&world),
        ("blue".to_string(), "v1".to_string()),
        "nothing half switched"
    );
}

#[test]
fn a_killed_run_is_finished_by_the_next_one_or_by_a_rollback() {
    let world = World::new(Duration::from_millis(600));
    let first = world.deploy("v1", &["--lock-ttl", "2s"]);
    assert_exit(&first, 0);
    let first_id = deployment_id_of(&first);
    let mut tag = 1;
    // Kill points spread over validate, apply, rollout and the switch.
    for (i, kill_after) in [150u64, 500, 900, 1300].into_iter().enumerate() {
        tag += 1;
        let mut child = spawn_deploy(&world, &format!("v{tag}"), &["--lock-ttl", "2s"]);
        std::thread::sleep(Duration::from_millis(kill_after));
        child.kill().unwrap();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(2200)); // the lease expires
        if i % 2 == 0 {
            // A rerun finishes cleanly.
            let out = world.deploy(&format!("v{tag}"), &["--lock-ttl", "2s"]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "rerun after a kill at {kill_after} ms: {}",
                text(&out)
            );
            assert_eq!(consistent(&world).1, format!("v{tag}"));
        } else {
            // A rollback finishes cleanly too.
            let out = world
                .maily()
                .args(["rollback", "staging", &first_id, "--lock-ttl", "2s"])
                .timeout(Duration::from_secs(60))
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "rollback after a kill at {kill_after} ms: {}",
                text(&out)
            );
            assert_eq!(consistent(&world).1, "v1");
        }
        assert!(
            world
                .snapshots()
                .iter()
                .all(|s| s.outcome != Outcome::InProgress),
            "no run is left in progress: {:?}",
            world
                .snapshots()
                .iter()
                .map(|s| (&s.deployment_id, s.outcome))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(1100)); // distinct ids
    }
}

#[test]
fn sigterm_puts_users_back_and_releases_the_lock() {
    let world = World::new(Duration::from_millis(300));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, 0);
    world
        .sim()
        .control()
        .set_image_fault("*:slow-*", ImageFault::Slow(30.0));
    let child = spawn_deploy(&world, "slow-2", &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id().to_string();
    StdCommand::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, exit_code::INTERRUPTED);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("interrupted by SIGTERM during deploy-backend"),
        "{}",
        text(&out)
    );
    assert_eq!(consistent(&world), ("blue".to_string(), "v1".to_string()));
    // The lock was released: the next run starts at once.
    world.sim().control().clear_image_faults();
    let out = world.deploy("v3", &[]);
    assert_exit(&out, 0);
    assert_eq!(world.snapshots()[1].outcome, Outcome::Failed);
}
