//! One run at a time, and runs that survive a flaky API server, a kill, or
//! a signal: the built binary against kubesim.

use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use kubesim::{ApiFault, ImageFault};
use maily_deploy::exit_code;
use maily_deploy::pipeline::snapshot::Outcome;

use crate::support::*;

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
    let a = world.spawn_deploy("v1", &[]);
    let b = world.spawn_deploy("v1", &[]);
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

/// The environment's lock, taken through the library by dev@laptop for
/// `staging-20250101-120000`, with a lease of `ttl`.
fn dev_takes_the_lock(world: &World, ttl: Duration) -> maily_deploy::k8s::lease::LeaseGuard {
    use maily_deploy::k8s::lease::{self, Holder};
    world
        .rt
        .block_on(lease::acquire(
            world.client.clone(),
            &world.namespace,
            "staging",
            Holder {
                user: "dev".into(),
                host: "laptop".into(),
                deployment_id: "staging-20250101-120000".into(),
                since: chrono::Utc::now(),
            },
            ttl,
        ))
        .expect("the lock")
}

/// A lock removed and taken by another run moments after this run renewed
/// it: `check` (free while the lease is fresh) cannot know yet; `confirm`,
/// which a run's end asks after a long undo before it writes its snapshot
/// and the rollout record, asks the API server and names the new holder.
#[test]
fn confirm_finds_a_lock_taken_over_while_the_lease_looked_fresh() {
    let world = World::new(Duration::from_millis(200));
    assert_exit(&world.deploy("v1", &[]), 0);
    let guard = dev_takes_the_lock(&world, Duration::from_secs(300));
    let fence = guard.fence();
    put_lease(&world, 0, 300);
    assert!(
        world.rt.block_on(fence.check()).is_ok(),
        "a fresh lease is not asked about"
    );
    let lost = world
        .rt
        .block_on(fence.confirm())
        .expect_err("the lock is someone else's");
    assert!(
        format!("{lost:#}").contains("taken over by ghost@old-runner"),
        "{lost:#}"
    );
    assert_eq!(
        world.lease_holder().as_deref(),
        Some("staging-20250101-000000")
    );
}

/// A run on a machine whose clock is behind stamps renewals that look
/// stale here: its lease seems to have run out moments ago. It is watched
/// for one lease duration by this machine's clock first; renewed, it is
/// alive and the run is refused; left alone for that long, it is dead and
/// taken over.
#[test]
fn a_live_run_on_a_clock_behind_keeps_its_lock_and_a_dead_one_loses_it() {
    let world = World::new(Duration::from_millis(200));
    assert_exit(&world.deploy("v1", &[]), 0);

    // Renewed "20 s ago" by its clock, lease of 4 s: ran out 16 s ago here.
    put_lease(&world, 20, 4);
    let api: Api<Lease> = Api::namespaced(world.client.clone(), NAMESPACE);
    let renewing = world.rt.spawn(async move {
        loop {
            let renewed = chrono::Utc::now() - chrono::Duration::seconds(20);
            let patch = serde_json::json!({"spec": {"renewTime": renewed.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}});
            let _ = api
                .patch(
                    "maily-deploy",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(patch),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let out = world.deploy("v2", &[]);
    assert_exit(&out, exit_code::LOCK_HELD);
    let all = text(&out);
    assert!(all.contains("watching it for 4s"), "{all}");
    assert!(all.contains("ghost@old-runner"), "{all}");
    assert_eq!(consistent(&world).1, "v1", "nothing changed");

    // Its run dies: no renewal for a whole lease, taken over.
    renewing.abort();
    let out = world.deploy("v2", &[]);
    assert_exit(&out, 0);
    assert!(
        text(&out).contains("took over the expired deploy lock of ghost@old-runner"),
        "{}",
        text(&out)
    );
    assert_eq!(consistent(&world).1, "v2");
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
    world.sim().control().reset();
    let out = world.deploy("v3", &[]);
    assert_exit(&out, exit_code::LOCK_HELD);
    // Refused before its first change: the one write it tried is the
    // lease's create, not even the namespace the live run works in.
    let writes: Vec<String> = world
        .sim()
        .control()
        .requests()
        .iter()
        .filter(|r| r.is_resource() && !matches!(r.verb.as_str(), "get" | "list" | "watch"))
        .map(|r| format!("{} {}", r.verb, r.resource))
        .collect();
    assert_eq!(writes, ["create leases"], "a refused run wrote");
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
    // A script asks in JSON: the lock is free now, and it says so as JSON.
    let out = world
        .maily()
        .args(["unlock", "staging", "--yes", "-o", "json"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let said: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("unlock -o json: {e}: {}", text(&out)));
    assert_eq!(said["schema"], "maily-deploy/unlock/v1");
    assert_eq!(said["removed"], false);
    let out = world.deploy("v3", &[]);
    assert_exit(&out, 0);
    assert_eq!(consistent(&world).1, "v3");
}

/// An API server that answers but refuses every renewal of the lease (the
/// run's RBAC changed mid-run, say) lets the lease run out: the run must
/// count its lock lost then, not go on because it still reads its own name
/// in the lease, which any other run may now take.
#[test]
fn a_lease_whose_renewals_are_all_refused_is_lost_when_it_runs_out() {
    let world = World::new(Duration::from_secs(4));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, 0);

    world
        .sim()
        .control()
        .add_api_fault(ApiFault::always(Some("update"), Some("leases"), 403));
    let out = world.deploy("v2", &["--lock-ttl", "2s"]);
    world.sim().control().clear_api_faults();
    assert_exit(&out, exit_code::ROLLBACK_FAILED);
    assert!(
        text(&out).contains("refused every renewal of the deploy lock"),
        "{}",
        text(&out)
    );
    assert_eq!(
        consistent(&world),
        ("blue".to_string(), "v1".to_string()),
        "users never moved"
    );
}

/// A run that dies after its grace period scaled the old slot to 0, before
/// it closed its rollout, is put back by the next command that finds it
/// (here `abort`) on the old slot only once that slot runs again: every
/// http service's old Deployment back to its replicas and ready before the
/// routes move. (Users used to be sent to Deployments with no pods: an
/// outage the HPA never ends, since Kubernetes stops autoscaling a target
/// scaled to 0.)
#[test]
fn a_run_dead_after_its_grace_period_is_put_back_on_an_old_slot_that_runs() {
    use maily_deploy::traffic::record::Stage;

    let world = World::new(Duration::from_millis(500));
    assert_exit(&world.deploy("v1", &[]), 0);
    let out = world.deploy("v2", &["--grace", "1s"]);
    assert_exit(&out, 0);
    assert!(text(&out).contains("scaled to 0"), "{}", text(&out));
    assert_eq!(world.replicas("api-blue"), Some(0));

    // As the run stood had it died between the scale-down and its last
    // writes: its snapshot in progress, its rollout in the grace period.
    as_if_it_died(&world, &deployment_id_of(&out), Some(Stage::Grace));

    let abort = world.maily().args(["abort", "staging"]).output().unwrap();
    assert_exit(&abort, 0);
    world.assert_all_on("blue");
    for (svc, _, _) in world.traffic() {
        let blue = world.deployment(&format!("{svc}-blue")).unwrap();
        let ready = blue.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        assert!(
            ready > 0,
            "users are back on {svc}-blue, which has no pod ready: {}",
            text(&abort)
        );
    }
}

#[test]
fn a_rollback_planned_before_a_dead_run_is_put_back_never_redeploys_the_slot_users_land_on() {
    use maily_deploy::traffic::record::Stage;

    let world = World::new(Duration::from_millis(300));
    let v1 = world.deploy("v1", &[]);
    assert_exit(&v1, 0);
    let v1_id = deployment_id_of(&v1);
    assert_exit(&world.deploy("v2", &[]), 0);
    let v3 = world.deploy("v3", &[]);
    assert_exit(&v3, 0);
    world.assert_all_on("blue");
    assert!(
        world.image("api-green").unwrap().ends_with(":v2"),
        "{:?}",
        world.image("api-green")
    );

    // v3's run as it stood had it died after its switch, in its grace
    // period: its snapshot in progress, its rollout not completed, so the
    // next run to take the lock puts users back on green.
    as_if_it_died(&world, &deployment_id_of(&v3), Some(Stage::Grace));

    // Read before the lock, v1 runs nowhere and green is idle: redeploy
    // there. Under the lock, users are back on green: that plan would roll
    // v1 over them. It is refused there, before any change of its own.
    let out = world
        .maily()
        .args(["rollback", "staging", &v1_id])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::REFUSED);
    assert!(
        text(&out).contains("users moved since this rollback looked"),
        "{}",
        text(&out)
    );
    world.assert_all_on("green");
    assert!(world.image("api-green").unwrap().ends_with(":v2"));
    assert!(world.lease_holder().is_none(), "the lock is released");

    // Asked again, it plans from where users are now.
    let again = world
        .maily()
        .args(["rollback", "staging", &v1_id])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&again, 0);
    world.assert_all_on("blue");
    assert!(world.image("api-blue").unwrap().ends_with(":v1"));
}

#[test]
fn a_run_whose_rollout_completed_but_whose_end_was_not_written_is_closed_as_succeeded() {
    use maily_deploy::k8s::snapshot_store::SnapshotStore;

    let world = World::new(Duration::from_millis(300));
    assert_exit(&world.deploy("v1", &[]), 0);
    let v2 = world.deploy("v2", &[]);
    assert_exit(&v2, 0);
    world.assert_all_on("green");

    // As v2 stood had its last write (the snapshot's outcome) failed: the
    // snapshot still in progress, its rollout record closed as completed.
    let v2_id = deployment_id_of(&v2);
    as_if_it_died(&world, &v2_id, None);
    let store = SnapshotStore::new(world.client.clone(), &world.namespace, "staging");

    let v3 = world.deploy("v3", &[]);
    assert_exit(&v3, 0);
    assert!(
        text(&v3).contains(&format!(
            "deployment {v2_id} completed its rollout but its end was never recorded"
        )),
        "{}",
        text(&v3)
    );
    // v2 was not undone: v3 went to blue, the slot users were not on.
    world.assert_all_on("blue");
    assert!(world.image("api-blue").unwrap().ends_with(":v3"));
    let closed = world.rt.block_on(store.get(&v2_id)).unwrap().unwrap();
    assert_eq!(closed.outcome, Outcome::Succeeded, "{closed:?}");
    // And it is a state to roll back to.
    let back = world
        .maily()
        .args(["rollback", "staging", &v2_id])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&back, 0);
    world.assert_all_on("green");
}

#[test]
fn ctrl_c_while_watching_a_run_out_lease_stops_at_once() {
    use serde_json::json;
    let world = World::new(Duration::from_millis(300));
    assert_exit(&world.deploy("v1", &[]), 0);
    // A lock whose holder's clock says it ran out a second ago: the next
    // run watches it for its whole duration (300 s) in case that run is
    // alive on a clock behind.
    let api: Api<Lease> = Api::namespaced(world.client.clone(), &world.namespace);
    let renewed = chrono::Utc::now() - chrono::Duration::seconds(301);
    let holder = json!({
        "user": "ghost", "host": "elsewhere",
        "deployment_id": "staging-20250101-120000",
        "since": renewed.to_rfc3339(),
    });
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {
            "name": "maily-deploy",
            "labels": {"app.kubernetes.io/managed-by": "maily-deploy"},
            "annotations": {"maily.ai/holder": holder.to_string()},
        },
        "spec": {
            "holderIdentity": "ghost@elsewhere/staging-20250101-120000",
            "leaseDurationSeconds": 300,
            "acquireTime": renewed.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "renewTime": renewed.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        },
    }))
    .unwrap();
    world
        .rt
        .block_on(api.create(&PostParams::default(), &lease))
        .unwrap();

    let child = world.spawn_deploy("v2", &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        world.lease_holder().as_deref(),
        Some("staging-20250101-120000"),
        "still watching"
    );
    // It used to sit out the watch (five minutes here) first.
    let out = interrupt(child, Duration::from_secs(60)).expect("the run stopped");
    assert_exit(&out, exit_code::INTERRUPTED);
    assert!(
        text(&out).contains("watching it for 300s"),
        "{}",
        text(&out)
    );
    assert_eq!(
        world.lease_holder().as_deref(),
        Some("staging-20250101-120000"),
        "the lease is left as it was"
    );
    world.assert_all_on("blue");
}

#[test]
fn a_change_retried_after_the_lock_was_lost_is_never_sent() {
    use kube::api::DynamicObject;
    use maily_deploy::k8s::apply::Applier;

    let world = World::new(Duration::from_millis(200));
    assert_exit(&world.deploy("v1", &[]), 0);
    let guard = dev_takes_the_lock(&world, Duration::from_secs(2));
    let applier = Applier::new(world.client.clone());
    applier.set_fence(Some(guard.fence()));

    // Every write of the object fails (500), so it is retried; meanwhile
    // the lock goes (`unlock` from another terminal).
    world
        .sim()
        .control()
        .add_api_fault(ApiFault::always(Some("patch"), Some("configmaps"), 500));
    let leases: Api<Lease> = Api::namespaced(world.client.clone(), &world.namespace);
    world
        .rt
        .block_on(leases.delete("maily-deploy", &Default::default()))
        .unwrap();
    let probe: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "probe", "namespace": world.namespace},
        "data": {"a": "b"},
    }))
    .unwrap();
    let err = world.rt.block_on(applier.apply(&probe)).unwrap_err();
    world.sim().control().clear_api_faults();
    let sent = world
        .sim()
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.verb == "patch" && r.resource == "configmaps" && r.name == "probe")
        .count();
    assert!(
        format!("{err:#}").contains("not sent") && format!("{err:#}").contains("removed"),
        "{err:#}"
    );
    assert!(
        sent < 7,
        "{sent} attempts: the retries went on after the lock was lost"
    );
    drop(guard);
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
    let child = world.spawn_deploy("v2", &[]);
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
        let mut child = world.spawn_deploy(&format!("v{tag}"), &["--lock-ttl", "2s"]);
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
    let child = world.spawn_deploy("slow-2", &[]);
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

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_run_whose_lock_is_taken_over_stops_and_never_undoes_the_new_holder() {
    let world = World::new(Duration::from_secs(3));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, 0);

    // A takes the lock with a short TTL, then stops (SIGSTOP: a frozen VM,
    // a suspended laptop) while it waits for its rollout.
    let mut a = world.spawn_deploy("v2", &["--lock-ttl", "2s"]);
    wait_until("A holds the lock", Duration::from_secs(30), || {
        world.lease_holder().is_some()
    });
    let a_id = world.lease_holder().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = a.id().to_string();
    assert!(
        StdCommand::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(2500)); // A's lease runs out

    // B takes the expired lock over, finishes A as a dead run, deploys v3.
    let b = world.deploy("v3", &[]);
    assert_exit(&b, 0);
    let b_id = deployment_id_of(&b);
    assert!(
        String::from_utf8_lossy(&b.stderr).contains("took over the expired deploy lock of tester@"),
        "{}",
        text(&b)
    );
    let after_b = consistent(&world);
    assert_eq!(after_b.1, "v3");
    // B holds nothing now; a C stands in for "another run holds it" while A
    // wakes up, so A has someone to name and something it must not delete.
    put_lease(&world, 0, 300);

    assert!(
        StdCommand::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let a_out = loop {
        if let Some(_status) = a.try_wait().unwrap() {
            break a.wait_with_output().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "A never stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = String::from_utf8_lossy(&a_out.stderr);
    assert_eq!(
        a_out.status.code(),
        Some(exit_code::ROLLBACK_FAILED),
        "{stderr}"
    );
    assert!(
        stderr.contains("the deploy lock of staging was taken over by ghost@old-runner (deployment staging-20250101-000000"),
        "A names the new holder: {stderr}"
    );
    assert!(
        stderr.contains("stopped changing things at once and put nothing back"),
        "{stderr}"
    );
    assert!(
        stderr.contains("users as this run last saw them: as this run found them: all on blue"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("was taken over by").count(),
        2,
        "said once (and logged once when it happened): {stderr}"
    );
    // Nothing of B's undone, the new holder's lease left alone.
    assert_eq!(
        consistent(&world),
        after_b,
        "A changed nothing after it woke"
    );
    assert_eq!(
        world.lease_holder().as_deref(),
        Some("staging-20250101-000000")
    );
    // A's snapshot stays as B closed it.
    let snapshots = world.snapshots();
    let a_snap = snapshots.iter().find(|s| s.deployment_id == a_id).unwrap();
    assert_eq!(
        a_snap.outcome,
        Outcome::Abandoned,
        "B's record of A is kept"
    );
    assert!(
        a_snap
            .failure
            .as_deref()
            .unwrap_or_default()
            .contains(&b_id),
        "{:?}",
        a_snap.failure
    );
}

/// A TCP proxy in front of the API server that can disappear: the listener
/// closes and every open connection is cut, as when the API server's
/// machine goes away.
struct Vanishing {
    port: u16,
    gone: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Vanishing {
    fn to(upstream: &str) -> Vanishing {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = gone.clone();
        std::thread::spawn(move || {
            let mut open: Vec<TcpStream> = Vec::new();
            loop {
                if flag.load(Ordering::SeqCst) {
                    for s in &open {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    return; // the listener drops: connections are refused
                }
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server.try_clone().unwrap(), client.try_clone().unwrap()),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Write);
                            });
                        }
                        open.push(client);
                        open.push(server);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Vanishing { port, gone }
    }

    fn vanish(&self) {
        self.gone.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn an_api_server_that_disappears_mid_run_is_named_with_where_users_were() {
    let world = World::new(Duration::from_secs(3));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, 0);

    let proxy = Vanishing::to(world.sim().url());
    let kubeconfig = world.dir.path().join("through-proxy.kubeconfig");
    std::fs::write(
        &kubeconfig,
        kubesim::kubeconfig::render(&format!("http://127.0.0.1:{}", proxy.port), None, None),
    )
    .unwrap();
    let env = world.env_file(&[("IMAGE_TAG", "v2"), ("ROLLOUT_TIMEOUT", "60s")]);
    let child = StdCommand::new(assert_cmd::cargo::cargo_bin("maily-deploy"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", world.dir.path())
        .env("USER", "tester")
        .env("MAILY_DEPLOY_CLOCK_FILE", world.clock_file())
        .envs(SWITCH_AT_ONCE)
        .current_dir(repo())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("staging")
        .args(BACKEND_ONLY)
        .args(["--env-file", path_str(&env), "--lock-ttl", "3s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the run holds the lock", Duration::from_secs(30), || {
        world.lease_holder().is_some()
    });
    std::thread::sleep(Duration::from_millis(500)); // into the rollout wait
    proxy.vanish();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::ROLLBACK_FAILED),
        "{stderr}"
    );
    assert!(
        stderr.contains("the Kubernetes API server stopped answering at "),
        "what happened, and when: {stderr}"
    );
    assert!(
        stderr.contains(" failed since"),
        "how many requests failed: {stderr}"
    );
    assert!(
        stderr.contains("users as this run last saw them: as this run found them: all on blue"),
        "where users were: {stderr}"
    );
    assert!(
        !stderr.contains("was lost (taken over or unlocked)"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("stopped answering").count(),
        2,
        "said once (and logged once when it happened): {stderr}"
    );

    // The API server back (straight to kubesim), the next run finishes the
    // dead one and deploys.
    assert_eq!(consistent(&world), ("blue".to_string(), "v1".to_string()));
    std::thread::sleep(Duration::from_millis(3100)); // the lease runs out
    let out = world.deploy("v3", &[]);
    assert_exit(&out, 0);
    assert_eq!(consistent(&world).1, "v3");
}

#[test]
fn a_rollback_to_the_live_release_finishes_a_killed_run_first() {
    let world = World::new(Duration::from_secs(3));
    let first = world.deploy("v1", &[]);
    assert_exit(&first, 0);
    let first_id = deployment_id_of(&first);

    // Killed while it waits for its rollout: users never moved.
    let mut child = world.spawn_deploy("v2", &["--lock-ttl", "2s"]);
    wait_until("the run holds the lock", Duration::from_secs(30), || {
        world.lease_holder().is_some()
    });
    let dead_id = world.lease_holder().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(2200)); // its lease runs out

    let out = world
        .maily()
        .args(["rollback", "staging", &first_id])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "staging already runs {first_id}'s release on blue"
        )),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("deployment {dead_id} died mid-run")),
        "{}",
        text(&out)
    );
    let snapshots = world.snapshots();
    let outcomes: Vec<_> = snapshots
        .iter()
        .map(|s| (s.deployment_id.clone(), s.command.clone(), s.outcome))
        .collect();
    assert!(
        snapshots.iter().all(|s| s.outcome != Outcome::InProgress),
        "the dead run is closed: {outcomes:?}"
    );
    assert!(
        snapshots
            .iter()
            .any(|s| s.command == "rollback" && s.outcome == Outcome::Succeeded),
        "the rollback has its own record: {outcomes:?}"
    );
    assert!(world.lease_holder().is_none(), "the lock is released");
    assert_eq!(consistent(&world), ("blue".to_string(), "v1".to_string()));
}

/// The lock is taken with one request and given back with one, as this run
/// last wrote it; a lease changed since (a label, a renewal that landed
/// late) is read and still released when it is this run's, and one that
/// another run took over is left to that run.
#[test]
fn the_lock_is_released_as_last_written_as_changed_since_and_never_when_taken_over() {
    use maily_deploy::k8s::lease::{self, Holder};
    use serde_json::json;
    let world = World::new(Duration::from_millis(200));
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(world.client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    world
        .rt
        .block_on(namespaces.create(&PostParams::default(), &namespace))
        .unwrap();
    let api: Api<Lease> = Api::namespaced(world.client.clone(), NAMESPACE);
    let holder = |id: &str| Holder {
        user: "dev".into(),
        host: "laptop".into(),
        deployment_id: id.into(),
        since: chrono::Utc::now(),
    };
    let take = |id: &str| {
        world
            .rt
            .block_on(lease::acquire(
                world.client.clone(),
                NAMESPACE,
                "staging",
                holder(id),
                Duration::from_secs(30),
            ))
            .expect("the lock")
    };
    let lease_verbs = || -> Vec<String> {
        world
            .sim()
            .control()
            .requests()
            .into_iter()
            .filter(|r| r.resource == "leases")
            .map(|r| r.verb)
            .collect()
    };

    // As last written: one request each way.
    world.sim().control().reset();
    let guard = take("staging-20250101-000001");
    world.rt.block_on(guard.release()).unwrap();
    assert_eq!(lease_verbs(), ["create", "delete"]);
    assert!(world.lease_holder().is_none());

    // Changed since: read, still ours, released.
    let guard = take("staging-20250101-000002");
    world
        .rt
        .block_on(api.patch(
            "maily-deploy",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        ))
        .unwrap();
    world.sim().control().reset();
    world.rt.block_on(guard.release()).unwrap();
    assert_eq!(lease_verbs(), ["delete", "get", "delete"]);
    assert!(world.lease_holder().is_none(), "released");

    // Taken over by another run (replaced as `take over` does): kept.
    let guard = take("staging-20250101-000003");
    let mut theirs = world.rt.block_on(api.get("maily-deploy")).unwrap();
    theirs.metadata.annotations = Some(
        [(
            "maily.ai/holder".to_string(),
            serde_json::to_string(&holder("staging-20250101-000004")).unwrap(),
        )]
        .into(),
    );
    world
        .rt
        .block_on(api.replace("maily-deploy", &PostParams::default(), &theirs))
        .unwrap();
    world.rt.block_on(guard.release()).unwrap();
    assert_eq!(
        world.lease_holder().as_deref(),
        Some("staging-20250101-000004"),
        "the other run's lock stays"
    );
}

/// `unlock` removes the lock it showed the operator and no other: if the
/// holder renewed it while the operator read the prompt, it is alive, and
/// nothing is removed.
#[test]
fn unlock_removes_only_the_lock_it_showed() {
    use maily_deploy::k8s::lease;
    let world = World::new(Duration::from_millis(200));
    assert_exit(&world.deploy("v1", &[]), 0);

    let shown = || {
        world
            .rt
            .block_on(lease::held(world.client.clone(), NAMESPACE))
            .unwrap()
            .expect("held")
    };
    let unlock = |held: &lease::HeldLock| {
        world.rt.block_on(lease::force_unlock(
            world.client.clone(),
            NAMESPACE,
            "staging",
            held,
        ))
    };
    put_lease(&world, 0, 300);
    let seen = shown();
    // The holder renews while the prompt waits.
    put_lease(&world, 0, 300);
    let err = unlock(&seen).expect_err("a renewed lock is alive");
    let message = format!("{err:#}");
    assert!(
        message.contains("changed while you confirmed")
            && message.contains("held by ghost@old-runner")
            && message.contains("nothing was removed"),
        "{message}"
    );
    assert_eq!(
        maily_deploy::error::kind_of(&err),
        Some(maily_deploy::error::Kind::LockHeld),
        "{message}"
    );
    assert!(world.lease_holder().is_some(), "the live lock is kept");

    // Unchanged since it was shown: removed.
    unlock(&shown()).unwrap();
    assert!(world.lease_holder().is_none());
}

/// Leave deployment `id` as it stood had its run died before its last
/// write: its snapshot in progress (with no target slot, as before the
/// end writes it), and its rollout record at `stage` when given.
fn as_if_it_died(world: &World, id: &str, stage: Option<maily_deploy::traffic::record::Stage>) {
    use maily_deploy::k8s::snapshot_store::SnapshotStore;
    use maily_deploy::traffic::record;
    let store = SnapshotStore::new(world.client.clone(), &world.namespace, "staging");
    let mut snapshot = world.rt.block_on(store.get(id)).unwrap().unwrap();
    snapshot.outcome = Outcome::InProgress;
    snapshot.finished_at = None;
    snapshot.target_slot = None;
    world.rt.block_on(store.put(&snapshot)).unwrap();
    if let Some(stage) = stage {
        let mut rollout = world
            .rt
            .block_on(record::read(&world.client, &world.namespace))
            .unwrap()
            .rollout
            .unwrap();
        rollout.stage = stage;
        world
            .rt
            .block_on(record::write_rollout(
                &world.client,
                &world.namespace,
                &rollout,
                None,
            ))
            .unwrap();
    }
}
