//! The backend deploy as a user runs it: the built binary against a
//! Kubernetes API (kubesim) that the real kube client talks to over HTTP.

use std::time::Duration;

use kubesim::ImageFault;
use maily_deploy::exit_code;
use maily_deploy::pipeline::snapshot::Outcome;

use crate::support::*;

const HTTP: [&str; 5] = [
    "analytics",
    "api",
    "blockchain-verifier",
    "campaigns",
    "email-sender",
];

#[test]
fn deploys_go_to_the_idle_slot_and_switch_users_to_it() {
    let world = World::new(Duration::from_millis(300));

    // 1. An empty cluster: everything to blue, users switched to blue.
    let out = world.deploy("v1", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    for svc in HTTP.iter().chain(["workers"].iter()) {
        assert_eq!(
            world.image(&format!("{svc}-blue")).as_deref(),
            Some(format!("registry.example.invalid/maily/maily-{svc}:v1").as_str())
        );
    }
    world.assert_all_on("blue");
    assert_eq!(
        world.replicas("workers-blue"),
        Some(2),
        "workers scaled up by the switch"
    );
    let first = deployment_id_of(&out);

    // 2. A new tag goes to green and users follow; blue stays up.
    let out = world.deploy("v2", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(
        world.image("api-green").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v2")
    );
    world.assert_all_on("green");
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v1")
    );
    assert_eq!(
        world.replicas("api-blue"),
        Some(1),
        "the old http slot stays up for rollback"
    );
    assert_eq!(
        world.replicas("workers-blue"),
        Some(0),
        "old workers stop consuming"
    );
    assert_eq!(world.replicas("workers-green"), Some(2));

    // 3. The next returns to blue.
    let out = world.deploy("v3", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    world.assert_all_on("blue");
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v3")
    );

    // Each run left a snapshot that says how it went.
    let snaps = world.snapshots();
    assert_eq!(snaps.len(), 3);
    assert!(snaps.iter().all(|s| s.outcome == Outcome::Succeeded));
    assert_eq!(snaps.last().unwrap().deployment_id, first);
}

fn failing_deploy_leaves_users_alone(
    fault_pattern: &str,
    fault: ImageFault,
    tag: &str,
    extra_env: &[(&str, &str)],
    reason: &str,
) {
    let world = World::new(Duration::from_millis(300));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    world.sim().control().set_image_fault(fault_pattern, fault);

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
    assert_eq!(
        out.status.code(),
        Some(exit_code::PHASE_FAILED_ROLLED_BACK),
        "{all}"
    );
    assert!(all.contains(reason), "the reason {reason} is named: {all}");
    assert!(all.contains("deploy-backend"), "the phase is named: {all}");
    assert!(
        took < Duration::from_secs(30),
        "failed fast, in {took:?}: {all}"
    );
    world.assert_all_on("blue");
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v1")
    );
    let snaps = world.snapshots();
    assert_eq!(snaps[0].outcome, Outcome::Failed, "{:?}", snaps[0]);
    assert!(
        snaps[0]
            .failure
            .as_deref()
            .unwrap_or_default()
            .contains(reason)
    );
}

#[test]
fn a_bad_image_fails_fast_naming_the_pod_and_leaves_users_alone() {
    failing_deploy_leaves_users_alone(
        "*:broken-*",
        ImageFault::ImagePullBackOff,
        "broken-2",
        &[],
        "ImagePull",
    );
}

#[test]
fn a_registry_that_times_out_for_a_while_is_pulled_through() {
    let world = World::new(Duration::from_millis(300));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    // The registry times out for the first second and a half of each new
    // pod: ErrImagePull, then ImagePullBackOff, both with `i/o timeout`.
    world
        .sim()
        .control()
        .set_image_fault("*:flaky-*", ImageFault::FlakyPull(1.5));
    let out = world.deploy("flaky-2", &["-v"]);
    let all = text(&out);
    assert_exit(&out, exit_code::SUCCESS);
    assert!(
        all.contains("i/o timeout") && all.contains("(IMAGE_PULL_GRACE)"),
        "the wait says why it goes on: {all}"
    );
    world.assert_all_on("green");
}

#[test]
fn a_registry_that_keeps_timing_out_fails_the_deploy_after_the_pull_grace() {
    failing_deploy_leaves_users_alone(
        "*:flaky-*",
        ImageFault::FlakyPull(1e6),
        "flaky-2",
        &[("IMAGE_PULL_GRACE", "2s")],
        "i/o timeout",
    );
}

/// The platform's shared objects (here the settings ConfigMap both slots
/// read) are not a slot's: a release that changes them and then fails puts
/// them back as the last good deployment left them, and a rollback renders
/// them from the snapshot it goes back to, not from today's manifests,
/// whether it only switches or deploys that release again.
#[test]
fn a_failed_release_and_a_rollback_put_the_platforms_shared_objects_back() {
    let world = World::new(Duration::from_millis(300));
    let manifests = manifests_with(world.dir.path(), "staging", "");
    let dir = ["--manifests-dir", path_str(&manifests)];
    let log_format = || -> Option<String> {
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(world.client.clone(), &world.namespace);
        world
            .rt
            .block_on(api.get("maily-settings"))
            .unwrap()
            .data?
            .get("LOG_FORMAT")
            .cloned()
    };
    let v1 = world.deploy("v1", &dir);
    assert_exit(&v1, 0);
    assert_eq!(log_format().as_deref(), Some("json"));

    let settings = manifests.join("platform/10-settings.yaml");
    let text_format = std::fs::read_to_string(&settings)
        .unwrap()
        .replace("LOG_FORMAT: json", "LOG_FORMAT: text");
    std::fs::write(&settings, text_format).unwrap();
    world
        .sim()
        .control()
        .set_image_fault("*:crash-*", ImageFault::CrashLoopBackOff);
    let failed = world.deploy("crash-2", &dir);
    assert_exit(&failed, exit_code::PHASE_FAILED_ROLLED_BACK);
    assert_eq!(
        log_format().as_deref(),
        Some("json"),
        "put back as v1 left it: {}",
        text(&failed)
    );

    let rollback_to_v1 = || {
        let back = world
            .maily()
            .args(["rollback", "staging", &deployment_id_of(&v1)])
            .args(dir)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert_exit(&back, 0);
        back
    };

    // v1 still runs in blue: the rollback is one switch, and the shared
    // objects go back as v1 ran with them.
    assert_exit(&world.deploy("v3", &dir), 0);
    assert_eq!(log_format().as_deref(), Some("text"));
    let back = rollback_to_v1();
    assert!(
        text(&back).contains("phases: shift-traffic"),
        "{}",
        text(&back)
    );
    assert_eq!(log_format().as_deref(), Some("json"), "{}", text(&back));

    // Two releases later v1 runs in neither slot: the rollback deploys it
    // again, the platform's objects with it.
    assert_exit(&world.deploy("v4", &dir), 0);
    assert_exit(&world.deploy("v5", &dir), 0);
    assert_eq!(log_format().as_deref(), Some("text"));
    let back = rollback_to_v1();
    assert!(text(&back).contains("deploy-backend"), "{}", text(&back));
    assert_eq!(log_format().as_deref(), Some("json"), "{}", text(&back));
}

/// A deploy resumed past deploy-backend (`--only shift-traffic`, as after
/// a failure put the shared objects back) writes the platform's objects as
/// its release has them before it moves anyone.
#[test]
fn a_deploy_resumed_at_the_switch_writes_the_platforms_objects_first() {
    let world = World::new(Duration::from_millis(300));
    let manifests = manifests_with(world.dir.path(), "staging", "");
    assert_exit(
        &world.deploy("v1", &["--manifests-dir", path_str(&manifests)]),
        0,
    );
    let settings = manifests.join("platform/10-settings.yaml");
    let text_format = std::fs::read_to_string(&settings)
        .unwrap()
        .replace("LOG_FORMAT: json", "LOG_FORMAT: text");
    std::fs::write(&settings, text_format).unwrap();
    let run = |only: &str| {
        world
            .maily()
            .args(["staging", "--only", only, "--manifests-dir"])
            .arg(&manifests)
            .arg("--env-file")
            .arg(world.env_file(&[("IMAGE_TAG", "v2"), ("ROLLOUT_TIMEOUT", "60s")]))
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap()
    };
    assert_exit(&run("deploy-backend"), 0);
    // As a failed run's undo leaves them: v1's.
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(world.client.clone(), &world.namespace);
    let log_format = || {
        world
            .rt
            .block_on(api.get("maily-settings"))
            .unwrap()
            .data
            .unwrap()["LOG_FORMAT"]
            .clone()
    };
    let patch = serde_json::json!({"data": {"LOG_FORMAT": "json"}});
    world
        .rt
        .block_on(api.patch(
            "maily-settings",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        ))
        .unwrap();
    assert_eq!(log_format(), "json");

    let out = run("shift-traffic");
    assert_exit(&out, 0);
    world.assert_all_on("green");
    assert_eq!(log_format(), "text", "{}", text(&out));
}

#[test]
fn a_release_is_never_applied_to_a_slot_users_still_reach() {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
    let world = World::new(Duration::from_millis(300));
    assert_exit(&world.deploy("v1", &[]), 0);
    let v2 = world.deploy("v2", &[]);
    assert_exit(&v2, 0);
    world.assert_all_on("green");

    // As a rollout stopped at its 25 % step with --no-rollback leaves api:
    // the stable Service on green, a quarter of the route to blue.
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ));
    let routes: Api<DynamicObject> =
        Api::namespaced_with(world.client.clone(), &world.namespace, &ar);
    let mut route = world.rt.block_on(routes.get("api")).unwrap();
    for rule in route.data["spec"]["rules"].as_array_mut().unwrap() {
        if let Some(refs) = rule["backendRefs"].as_array_mut()
            && refs.len() == 2
        {
            refs[0]["weight"] = 25.into();
            refs[1]["weight"] = 75.into();
        }
    }
    world
        .rt
        .block_on(routes.replace("api", &PostParams::default(), &route))
        .unwrap();
    let blue_before = world.image("api-blue");

    let out = world.deploy("v3", &["--output", "json"]);
    assert_exit(&out, exit_code::REFUSED);
    // Refused under the lock before the first phase that changes anything
    // (provision and migrate too, when selected), not by deploy-backend.
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ran: Vec<&serde_json::Value> = doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"] != "validate" && p["status"] != "skipped")
        .collect();
    assert!(
        !ran.is_empty() && ran.iter().all(|p| p["status"] == "not_run"),
        "{doc}"
    );
    let all = text(&out);
    assert!(
        all.contains("users still reach slot blue")
            && all.contains("api (route weights blue 25 / green 75)")
            && all.contains(&format!("rollback staging {}", deployment_id_of(&v2))),
        "{all}"
    );
    assert_eq!(world.image("api-blue"), blue_before, "blue untouched");
    assert_eq!(world.weights("api"), Some((25, 75)));

    // The way out it names puts everyone on green; then the deploy goes.
    let back = world
        .maily()
        .args(["rollback", "staging", &deployment_id_of(&v2)])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&back, 0);
    world.assert_all_on("green");
    assert_exit(&world.deploy("v3", &[]), 0);
    world.assert_all_on("blue");
}

#[test]
fn a_crash_loop_fails_fast_and_leaves_users_alone() {
    failing_deploy_leaves_users_alone(
        "*:crash-*",
        ImageFault::CrashLoopBackOff,
        "crash-2",
        &[],
        "CrashLoopBackOff",
    );
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

#[test]
fn rollback_while_the_old_release_still_runs_is_one_switch() {
    let world = World::new(Duration::from_millis(300));
    let first = world.deploy("v1", &[]);
    assert_exit(&first, 0);
    let first_id = deployment_id_of(&first);
    let second = world.deploy("v2", &[]);
    assert_exit(&second, 0);
    world.assert_all_on("green");

    world.sim().control().reset();
    let out = world
        .maily()
        .args(["rollback", "staging", &first_id])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    world.assert_all_on("blue");
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v1")
    );
    // One switch: no Deployment's template was written, only routes,
    // Services and worker scales.
    let writes: Vec<String> = world
        .sim()
        .control()
        .requests()
        .into_iter()
        .filter(|r| {
            r.resource == "deployments"
                && r.subresource.is_empty()
                && matches!(r.verb.as_str(), "patch" | "create" | "update")
        })
        .map(|r| r.name)
        .collect();
    assert!(
        writes.is_empty(),
        "a one-switch rollback rewrote deployments: {writes:?}"
    );
    assert_eq!(world.replicas("workers-blue"), Some(2));
    assert_eq!(world.replicas("workers-green"), Some(0));

    let snaps = world.snapshots();
    assert_eq!(snaps[0].command, "rollback");
    assert_eq!(
        snaps[0].rollback_to.as_ref().map(|id| id.as_str()),
        Some(first_id.as_str())
    );
    assert_eq!(snaps[0].outcome, Outcome::Succeeded);
}

#[test]
fn rollback_to_a_release_no_longer_running_reapplies_waits_and_switches() {
    let world = World::new(Duration::from_millis(300));
    let mut ids = Vec::new();
    for tag in ["v1", "v2", "v3"] {
        let out = world.deploy(tag, &[]);
        assert_exit(&out, 0);
        ids.push(deployment_id_of(&out));
    }
    // v3 on blue, v2 on green: v1 runs nowhere.
    world.assert_all_on("blue");
    let dry = world
        .maily()
        .args(["rollback", "staging", &ids[0], "--dry-run"])
        .output()
        .unwrap();
    assert_exit(&dry, 0);
    assert_eq!(
        world.image("api-green").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v2"),
        "a dry run changes nothing"
    );

    let out = world
        .maily()
        .args(["rollback", "staging", &ids[0]])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(
        world.image("api-green").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v1")
    );
    world.assert_all_on("green");
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v3"),
        "the release rolled back from stays up"
    );
}

#[test]
fn rollback_to_an_unknown_id_lists_the_kept_ones_one_a_line() {
    let world = World::new(Duration::from_millis(300));
    let first = world.deploy("v1", &[]);
    assert_exit(&first, 0);
    let second = world.deploy("v2", &[]);
    assert_exit(&second, 0);
    let out = world
        .maily()
        .args(["rollback", "staging", "staging-20200101-000000"])
        .output()
        .unwrap();
    assert_exit(&out, exit_code::USAGE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "no deployment staging-20200101-000000 in staging; the deployments kept, newest first:"
        ),
        "{stderr}"
    );
    // One a line, newest first, each with its release, when and how.
    let listed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("staging-"))
        .collect();
    assert_eq!(listed.len(), 2, "{stderr}");
    for (line, (out, tag)) in listed.iter().zip([(&second, "v2"), (&first, "v1")]) {
        let id = deployment_id_of(out);
        let started = world
            .snapshots()
            .into_iter()
            .find(|s| s.deployment_id.as_str() == id)
            .unwrap()
            .started_at
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], id, "{line}");
        assert_eq!(&words[1..3], ["release", tag], "{line}");
        assert!(line.contains(&started), "{started} in {line}");
        assert!(line.ends_with("succeeded"), "{line}");
    }
}

#[test]
fn rollback_previous_goes_back_to_the_last_good_release_before_the_live_one() {
    let world = World::new(Duration::from_millis(300));
    // Alone, a first deployment has nothing before it: refused, naming
    // what there is.
    let v1 = world.deploy("v1", &[]);
    assert_exit(&v1, 0);
    let v1_id = deployment_id_of(&v1);
    let out = world
        .maily()
        .args(["rollback", "staging", "previous"])
        .output()
        .unwrap();
    assert_exit(&out, exit_code::USAGE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "no good deployment of staging before the one users are on ({v1_id}, release v1) to roll back to"
        )),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.trim_start().starts_with(&v1_id) && l.contains("release v1")),
        "{stderr}"
    );

    let v2 = world.deploy("v2", &[]);
    assert_exit(&v2, 0);
    let v2_id = deployment_id_of(&v2);
    world
        .sim()
        .control()
        .set_image_fault("*:broken-*", ImageFault::ImagePullBackOff);
    let failed = world.deploy("broken-3", &[]);
    assert_exit(&failed, exit_code::PHASE_FAILED_ROLLED_BACK);
    world.assert_all_on("green");

    // The dry run: which deployment, which release, one switch; none of
    // a deploy's steps.
    let dry = world
        .maily()
        .args(["rollback", "staging", "previous", "--dry-run"])
        .output()
        .unwrap();
    assert_exit(&dry, 0);
    let plan = String::from_utf8_lossy(&dry.stdout);
    assert!(
        plan.lines().next() == Some(&format!("rollback to {v1_id} (release v1)")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("users back to release v1 ({v1_id}) on blue")),
        "{plan}"
    );
    assert!(plan.contains("one switch"), "{plan}");
    for step in ["steps from the command line", "% of users", "100%:"] {
        assert!(!plan.contains(step), "{step:?} in:\n{plan}");
    }
    world.assert_all_on("green");

    // The failed run left users on v2: previous is v1.
    let out = world
        .maily()
        .args(["rollback", "staging", "previous"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().next(),
        Some(format!("rollback to {v1_id} (release v1)").as_str()),
        "{stdout}"
    );
    world.assert_all_on("blue");
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v1")
    );
    let snaps = world.snapshots();
    assert_eq!(snaps[0].command, "rollback");
    assert_eq!(
        snaps[0].rollback_to.as_ref().map(|id| id.as_str()),
        Some(v1_id.as_str())
    );

    // Again: back to the release the rollback left, as a second
    // `kubectl rollout undo` does.
    let out = world
        .maily()
        .args(["rollback", "staging", "previous"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(&format!("rollback to {v2_id} (release v2)\n")),
        "{}",
        text(&out)
    );
    world.assert_all_on("green");
}

/// `history` signs each deployment by who a user would say ran it: under
/// GitHub Actions the person who triggered the workflow (not the runner's
/// `USER`), with the run's link; from a shell without `USER`, the OS
/// account, never `unknown`.
#[test]
fn history_names_the_ci_actor_and_without_user_the_os_account() {
    let world = World::new(Duration::from_millis(300));
    let deploy = |tag: &str| {
        let env = world.env_file(&[("IMAGE_TAG", tag), ("ROLLOUT_TIMEOUT", "60s")]);
        let mut cmd = world.maily();
        cmd.arg("staging")
            .args(BACKEND_ONLY)
            .arg("--env-file")
            .arg(env)
            .timeout(Duration::from_secs(120));
        cmd
    };
    let from_ci = deploy("v1")
        .envs([
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_ACTOR", "octocat"),
            ("GITHUB_REPOSITORY", "maily/maily"),
            ("GITHUB_RUN_ID", "4242"),
            ("CI", "true"),
            ("USER", "runner"),
        ])
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert_exit(&from_ci, exit_code::SUCCESS);
    let report: serde_json::Value = serde_json::from_slice(&from_ci.stdout).unwrap();
    let from_shell = deploy("v2").env_remove("USER").output().unwrap();
    assert_exit(&from_shell, exit_code::SUCCESS);

    let id = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    assert!(id.status.success(), "id -un: {id:?}");
    let account = String::from_utf8(id.stdout).unwrap().trim().to_string();

    let out = world.maily().args(["history", "staging"]).output().unwrap();
    assert_exit(&out, exit_code::SUCCESS);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("octocat@") && human.contains("github:maily/maily/actions/runs/4242"),
        "{human}"
    );
    assert!(human.contains(&format!("{account}@")), "{human}");
    assert!(
        !human.contains("unknown@") && !human.contains("runner@"),
        "{human}"
    );

    let out = world
        .maily()
        .args(["history", "staging", "--output", "json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let newest = &doc["deployments"][0];
    assert_eq!(newest["deployment_id"], deployment_id_of(&from_shell));
    assert_eq!(newest["user"], account.as_str());
    let ci = &doc["deployments"][1];
    assert_eq!(ci["deployment_id"], report["deployment_id"]);
    assert_eq!(ci["user"], "octocat");
    assert_eq!(ci["ci_job"], "github:maily/maily/actions/runs/4242");
}

#[test]
fn history_and_status_tell_what_ran_and_what_runs() {
    let world = World::new(Duration::from_millis(300));
    let first = world.deploy("v1", &[]);
    world
        .sim()
        .control()
        .set_image_fault("*:broken-*", ImageFault::ImagePullBackOff);
    let failed = world.deploy("broken-2", &[]);
    assert_eq!(failed.status.code(), Some(4));

    let out = world.maily().args(["history", "staging"]).output().unwrap();
    assert_exit(&out, 0);
    let human = String::from_utf8_lossy(&out.stdout);
    let (first_id, failed_id) = (deployment_id_of(&first), deployment_id_of(&failed));
    let (a, b) = (
        human.find(&failed_id).unwrap(),
        human.find(&first_id).unwrap(),
    );
    assert!(a < b, "newest first:\n{human}");
    assert!(
        human.contains("succeeded") && human.contains("failed") && human.contains("tester@"),
        "{human}"
    );

    let out = world
        .maily()
        .args(["history", "staging", "--output", "json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], "maily-deploy/history/v1");
    assert_eq!(doc["deployments"][0]["deployment_id"], failed_id);
    assert_eq!(doc["deployments"][0]["outcome"], "failed");
    assert_eq!(
        doc["deployments"][1]["images"]["api"],
        "registry.example.invalid/maily/maily-api:v1"
    );
    assert_eq!(doc["deployments"][1]["user"], "tester");

    let out = world
        .maily()
        .args(["status", "staging", "--output", "json"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["active_slot"], "blue");
    assert_eq!(
        doc["services"]["api"]["weights"],
        serde_json::json!([100, 0])
    );
    assert_eq!(
        doc["services"]["api"]["slots"]["green"]["image"],
        "registry.example.invalid/maily/maily-api:broken-2"
    );
    assert_eq!(doc["last_deployment"]["outcome"], "failed");
    assert_eq!(doc["last_good_deployment"], first_id);
    assert_eq!(doc["drift"], serde_json::json!([]));
    // The daily backup CronJob the deploy created has not run yet.
    assert_eq!(doc["daily_backup"]["state"], "never_succeeded", "{doc}");
    // Once its last success is recorded (what the CronJob controller
    // writes), status shows it.
    let two_hours_ago = (chrono::Utc::now() - chrono::Duration::hours(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let cron_jobs: kube::Api<k8s_openapi::api::batch::v1::CronJob> =
        kube::Api::namespaced(world.client.clone(), NAMESPACE);
    world
        .rt
        .block_on(cron_jobs.patch_status(
            "database-backup",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&serde_json::json!({"status": {
                "lastSuccessfulTime": two_hours_ago, "lastScheduleTime": two_hours_ago}})),
        ))
        .unwrap();
    let out = world.maily().args(["status", "staging"]).output().unwrap();
    assert_exit(&out, 0);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("daily backup: last succeeded ") && human.contains("(2h ago)"),
        "{human}"
    );

    // A hand edit of the live route is drift.
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ));
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(world.client.clone(), NAMESPACE, &ar);
    let patch = serde_json::json!({"spec": {"rules": [{"backendRefs": [{"name": "api-blue", "port": 80, "weight": 90}, {"name": "api-green", "port": 80, "weight": 10}]}]}});
    world
        .rt
        .block_on(api.patch(
            "api",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        ))
        .unwrap();
    let out = world.maily().args(["status", "staging"]).output().unwrap();
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains("users on blue"), "{human}");
    assert!(human.contains(&format!("drift from {first_id}")), "{human}");
    assert!(
        human.contains("api: route weights blue/green 90/10 (recorded: 100/0)"),
        "{human}"
    );
    assert!(!human.contains("Some("), "{human}");
    // The failed run, as it was started (MAILY_TRAFFIC_STEPS and
    // MAILY_GRACE set its traffic flags), to run again.
    assert!(
        human.contains(&format!(
            "to run it again as it was started: maily-deploy staging {} --traffic-steps 100 --grace keep\n",
            BACKEND_ONLY.join(" ")
        )),
        "{human}"
    );
}

/// The widest line of what a terminal showed, in display columns (every
/// character the tool prints in a table is one column wide: ASCII, box
/// drawing, arrows).
fn widest(screen: &str) -> usize {
    without_escapes(screen)
        .lines()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
}

#[test]
fn history_and_the_run_table_fit_the_terminal_and_a_pipe_gets_plain_columns() {
    let world = World::new(Duration::from_millis(300));
    let first = world.deploy("v1", &[]);
    assert_exit(&first, 0);
    let second = world.deploy("v2", &[]);
    assert_exit(&second, 0);
    world
        .sim()
        .control()
        .set_image_fault("*:broken-*", ImageFault::ImagePullBackOff);
    let failed = world.deploy("broken-3", &[]);
    assert_exit(&failed, exit_code::PHASE_FAILED_ROLLED_BACK);
    let ids = [
        world.deployment_id(&failed),
        world.deployment_id(&second),
        world.deployment_id(&first),
    ];

    // On a terminal: the table is as wide as the terminal (the failure's
    // words fill the details column), never wider; COLUMNS overrides it.
    for (columns_env, stty, want) in [(None, 80, 80), (None, 100, 100), (Some("72"), 200, 72)] {
        let mut cmd = world.process();
        cmd.args(["history", "staging"]);
        if let Some(c) = columns_env {
            cmd.env("COLUMNS", c);
        }
        let (code, screen) = on_a_terminal(&cmd, Some(stty));
        assert_eq!(code, Some(0), "{screen}");
        assert_eq!(
            widest(&screen),
            want,
            "stty cols {stty}, COLUMNS {columns_env:?}:\n{screen}"
        );
        assert!(screen.contains('┌'), "a table on a terminal:\n{screen}");
        for id in &ids {
            assert!(screen.contains(id.as_str()), "{id} whole:\n{screen}");
        }
        assert!(screen.contains("ErrImagePull"), "{screen}");
    }

    // In a pipe: plain columns, a line per deployment, whatever COLUMNS.
    let out = world
        .maily()
        .env("COLUMNS", "80")
        .args(["history", "staging"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let plain = String::from_utf8_lossy(&out.stdout);
    assert!(
        !plain.contains(['│', '─', '┌', '╞', '└']),
        "no box drawing in a pipe:\n{plain}"
    );
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "a header and a line per deployment:\n{plain}"
    );
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "DEPLOYMENT",
            "STARTED",
            "OUTCOME",
            "RELEASE",
            "SLOT",
            "BY",
            "TRAFFIC",
            "NOTE"
        ]
    );
    // As awk splits them: id, started, outcome, release, slot, by.
    let awk: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(awk[0][0], ids[0]);
    assert_eq!(&awk[0][2..5], ["failed", "broken-3", "blue"], "{plain}");
    assert_eq!(&awk[1][2..5], ["succeeded", "v2", "green"], "{plain}");
    assert_eq!(&awk[2][2..5], ["succeeded", "v1", "blue"], "{plain}");
    assert!(awk[2][5].starts_with("tester@"), "{plain}");
    assert!(
        lines[1].contains("deploy-backend: rollout failed"),
        "{plain}"
    );

    // --max 2: the newest two, and on stderr how many there are.
    let out = world
        .maily()
        .args(["history", "staging", "--max", "2"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let plain = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = plain.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{plain}");
    assert!(
        rows[0].starts_with(&ids[0]) && rows[1].starts_with(&ids[1]),
        "{plain}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the newest 2 of 3 deployments"),
        "{}",
        text(&out)
    );
    let out = world
        .maily()
        .args(["history", "staging", "--max", "0"])
        .output()
        .unwrap();
    assert_exit(&out, exit_code::USAGE);

    // The run's table: on an 80-column terminal no line of it is wider;
    // in a pipe the phases the flags left out are one line, not rows.
    let env = world.env_file(&[("IMAGE_TAG", "v4"), ("ROLLOUT_TIMEOUT", "60s")]);
    let mut deploy = world.process();
    deploy
        .arg("staging")
        .args(BACKEND_ONLY)
        .arg("--env-file")
        .arg(&env);
    let (code, screen) = on_a_terminal(&deploy, Some(80));
    assert_eq!(code, Some(0), "{screen}");
    let screen = without_escapes(&screen);
    let table: Vec<&str> = screen
        .lines()
        .filter(|l| l.starts_with(['┌', '│', '╞', '└']))
        .collect();
    assert!(table.len() >= 5, "{screen}");
    for line in &table {
        assert!(line.chars().count() <= 80, "{line:?} in:\n{screen}");
    }
    let out = world.deploy("v5", &[]);
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l
            == "skipped: provision, migrate, deploy-frontend, configure-ai, monitor, verify (--skip-*)"),
        "{stdout}"
    );
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("PHASE"))
        .skip(1)
        .take_while(|l| !l.starts_with("skipped:"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        rows,
        ["validate", "deploy-backend", "shift-traffic"],
        "{stdout}"
    );
}

#[test]
fn only_the_newest_snapshots_are_kept_and_always_the_last_good_one() {
    let world = World::new(Duration::from_millis(300));
    let mut ids = Vec::new();
    for tag in ["v1", "v2"] {
        let out = world.deploy(tag, &["--keep-snapshots", "1"]);
        assert_exit(&out, 0);
        ids.push(deployment_id_of(&out));
    }
    let kept: Vec<String> = world
        .snapshots()
        .into_iter()
        .map(|s| s.deployment_id.to_string())
        .collect();
    assert_eq!(kept, vec![ids[1].clone()], "keep 1: the newest");

    world
        .sim()
        .control()
        .set_image_fault("*:broken-*", ImageFault::ImagePullBackOff);
    let out = world.deploy("broken-3", &["--keep-snapshots", "1"]);
    assert_eq!(out.status.code(), Some(exit_code::PHASE_FAILED_ROLLED_BACK));
    world.sim().control().clear_image_faults();
    let out = world.deploy("v4", &["--keep-snapshots", "1"]);
    assert_exit(&out, 0);
    let kept: Vec<(String, Outcome)> = world
        .snapshots()
        .into_iter()
        .map(|s| (s.deployment_id.to_string(), s.outcome))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].1, Outcome::Succeeded);
}

#[test]
fn a_run_in_the_same_second_as_another_never_overwrites_its_snapshot() {
    use maily_deploy::k8s::snapshot_store::SnapshotStore;
    let world = World::new(Duration::from_millis(300));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, 0);
    let v1 = deployment_id_of(&out);
    let v1_at = chrono::NaiveDateTime::parse_from_str(&v1["staging-".len()..], "%Y%m%d-%H%M%S")
        .unwrap()
        .and_utc();
    // Snapshots for this second and the next two, as if runs had just
    // taken those ids; after v1's second, which a quick v1 shares with
    // now (its snapshot is not to be written over here).
    let template = world.snapshots().remove(0);
    let store = SnapshotStore::new(world.client.clone(), NAMESPACE, "staging");
    let from = chrono::Utc::now().max(v1_at + chrono::Duration::seconds(1));
    let taken: Vec<String> = (0..3)
        .map(|s| {
            maily_deploy::pipeline::DeploymentId::new(
                "staging",
                from + chrono::Duration::seconds(s),
            )
            .to_string()
        })
        .collect();
    for id in &taken {
        let mut s = template.clone();
        s.deployment_id = id.parse().unwrap();
        world.rt.block_on(store.put(&s)).unwrap();
    }
    // On the clock a user's run reads (not the test clock of `World`'s
    // runs): the run waits for a second no snapshot has taken.
    let env = world.env_file(&[("IMAGE_TAG", "v2"), ("ROLLOUT_TIMEOUT", "60s")]);
    let out = world
        .maily()
        .env_remove("MAILY_DEPLOY_CLOCK_FILE")
        .arg("staging")
        .args(BACKEND_ONLY)
        .arg("--env-file")
        .arg(&env)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let ids: Vec<String> = world
        .snapshots()
        .into_iter()
        .map(|s| s.deployment_id.to_string())
        .collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(ids.contains(&v1), "{v1} kept: {ids:?}");
    for id in &taken {
        assert!(ids.contains(id), "{id} kept: {ids:?}");
    }
    let newest = &world.snapshots()[0];
    assert!(
        !taken.contains(&newest.deployment_id.to_string()),
        "a fresh id: {}",
        newest.deployment_id
    );
    assert_eq!(newest.release.as_ref().unwrap().image_tag, "v2");
    // Decided once: the id the run announced first is the id it recorded.
    assert_eq!(deployment_id_of(&out), newest.deployment_id.as_str());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is taken by a run that began in the same second"),
        "{}",
        text(&out)
    );
}

/// Under GitHub Actions each phase's log folds into its group: the group
/// opens when the phase starts, the phase's lines follow (its log, its
/// progress, its result), it closes when the phase ends. The runner reads
/// stdout and stderr apart and writes them out in batches (a batch's stderr
/// lines first), so only lines on the markers' own stream can be inside a
/// group.
#[test]
fn under_github_actions_each_phase_log_is_inside_its_group() {
    let world = World::new(Duration::from_millis(300));
    let run = |tag: &str, verbosity: &[&str]| {
        let env = world.env_file(&[("IMAGE_TAG", tag), ("ROLLOUT_TIMEOUT", "60s")]);
        let out = world
            .maily()
            .env("GITHUB_ACTIONS", "true")
            .env("CI", "true")
            .arg("staging")
            .args(BACKEND_ONLY)
            .arg("--env-file")
            .arg(&env)
            .args(verbosity)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        assert_exit(&out, exit_code::SUCCESS);
        out
    };
    /// The lines between `::group::<phase>` and the next `::endgroup::`
    /// of the stream the groups are on, and the other stream.
    fn group(out: &std::process::Output, phase: &str) -> (Vec<String>, String) {
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        let marker = format!("::group::{phase}");
        let (stream, other) = if stdout.contains(&marker) {
            (stdout, stderr)
        } else {
            (stderr, stdout)
        };
        let lines: Vec<&str> = stream.lines().collect();
        let open = lines
            .iter()
            .position(|l| *l == marker)
            .unwrap_or_else(|| panic!("no group for {phase}:\n{stream}"));
        let close = lines[open..]
            .iter()
            .position(|l| *l == "::endgroup::")
            .unwrap_or_else(|| panic!("the {phase} group never closes:\n{stream}"));
        let inside: Vec<String> = lines[open + 1..open + close]
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert!(
            !inside.iter().any(|l| l.starts_with("::group::")),
            "the {phase} group holds another group:\n{stream}"
        );
        (inside, other)
    }

    // With -v: deploy-backend's log lines are in its group, on its stream.
    let out = run("v1", &["-v"]);
    let (backend, other) = group(&out, "deploy-backend");
    assert!(
        backend.iter().any(|l| l.contains("INFO")
            && l.contains("applying")
            && l.contains("objects to slot blue")),
        "deploy-backend's log is not in its group: {backend:#?}\n{}",
        text(&out)
    );
    assert!(
        !other.contains("objects to slot blue"),
        "deploy-backend's log is on the other stream:\n{other}"
    );
    for phase in ["validate", "shift-traffic"] {
        let (lines, _) = group(&out, phase);
        assert!(
            !lines.iter().any(|l| l.contains("objects to slot")),
            "the {phase} group holds deploy-backend's lines: {lines:#?}"
        );
    }

    // At the default verbosity no group is empty: each holds its phase's result.
    let out = run("v2", &[]);
    for (phase, result) in [
        ("validate", "✓ validate"),
        ("deploy-backend", "✓ deploy-backend"),
        ("shift-traffic", "✓ shift-traffic"),
    ] {
        let (lines, _) = group(&out, phase);
        assert!(
            lines.iter().any(|l| l.starts_with(result)),
            "the {phase} group does not hold its result: {lines:#?}\n{}",
            text(&out)
        );
    }
}

#[test]
fn a_cluster_without_the_gateway_api_is_refused_before_anything_changes() {
    let world = World::without_gateway_api("staging", Duration::from_millis(200));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, maily_deploy::exit_code::REFUSED);
    let all = text(&out);
    assert!(
        all.contains("the cluster does not serve Gateway API HTTPRoutes")
            && all.contains("install the Gateway API CRDs"),
        "{all}"
    );
    assert!(all.contains("nothing was changed"), "{all}");
    assert!(world.deployment("api-blue").is_none(), "nothing applied");
    assert!(world.lease_holder().is_none(), "the lock was released");
    // A dry run asks the same cluster and says the same (it said
    // `planned`, exit 0, and the real run then failed).
    let dry = world.deploy("v1", &["--dry-run"]);
    assert_exit(&dry, maily_deploy::exit_code::REFUSED);
    assert!(
        text(&dry).contains("the cluster does not serve Gateway API HTTPRoutes"),
        "{}",
        text(&dry)
    );
}

#[test]
fn timeout_is_rollout_timeout_from_the_command_line() {
    let world = World::new(Duration::from_millis(200));
    let out = world.deploy("v1", &["--dry-run", "--timeout", "7m"]);
    assert_exit(&out, exit_code::SUCCESS);
    assert!(
        text(&out).contains("deadline 7m"),
        "--timeout wins over the env file's 60s: {}",
        text(&out)
    );
}

#[test]
fn bash_completes_a_rollbacks_deployment_ids_from_the_cluster() {
    let world = World::new(Duration::from_millis(200));
    let first = world.deployment_id(&world.deploy("v1", &[]));
    let second = world.deployment_id(&world.deploy("v2", &[]));
    let script = crate::cli::bash_script(world.dir.path());
    let kubeconfig = world.kubeconfig_path().to_str().unwrap().to_string();
    let got = crate::cli::bash_complete(
        &script,
        &[
            "maily-deploy",
            "rollback",
            "staging",
            "--kubeconfig",
            &kubeconfig,
            "",
        ],
        &[],
    )
    .into_iter()
    .filter(|c| !c.starts_with('-'))
    .collect::<Vec<_>>();
    let mut want = vec![first, second, "previous".to_string()];
    want.sort();
    assert_eq!(got, want);
}

/// The object writes (create, patch, update; not status) the sim received,
/// as `resource/name`.
fn object_writes(world: &World) -> Vec<String> {
    world
        .sim()
        .control()
        .requests()
        .into_iter()
        .filter(|r| {
            r.subresource.is_empty() && matches!(r.verb.as_str(), "patch" | "create" | "update")
        })
        .map(|r| format!("{}/{}", r.resource, r.name))
        .collect()
}

#[test]
fn a_routine_deploy_writes_only_what_changed_and_overwrites_hand_edits() {
    let world = World::new(Duration::from_millis(300));
    for tag in ["v1", "v2"] {
        assert_exit(&world.deploy(tag, &[]), exit_code::SUCCESS);
    }
    // v1 on blue, v2 on green with users. A hand edit on the idle slot:
    world
        .sim()
        .kubectl()
        .args([
            "-n", NAMESPACE, "patch", "pdb", "api-blue", "--type", "merge",
        ])
        .args(["-p", r#"{"spec":{"maxUnavailable":3}}"#])
        .output()
        .unwrap();

    world.sim().control().reset();
    let out = world.deploy("v3", &["-v"]);
    assert_exit(&out, exit_code::SUCCESS);
    world.assert_all_on("blue");
    let writes = object_writes(&world);
    for svc in HTTP {
        // The new release is written...
        assert!(
            writes.contains(&format!("deployments/{svc}-blue")),
            "{writes:?}"
        );
        // ...what did not change is not.
        for unchanged in ["services", "serviceaccounts", "horizontalpodautoscalers"] {
            assert!(
                !writes.contains(&format!("{unchanged}/{svc}-blue")),
                "{unchanged}/{svc}-blue rewritten: {writes:?}"
            );
        }
    }
    // The hand edit is drift: written back, and only that budget.
    let budgets: Vec<&String> = writes
        .iter()
        .filter(|w| w.starts_with("poddisruptionbudgets/"))
        .collect();
    assert_eq!(budgets, ["poddisruptionbudgets/api-blue"], "{writes:?}");
    let pdb = world
        .sim()
        .kubectl()
        .args([
            "-n",
            NAMESPACE,
            "get",
            "pdb",
            "api-blue",
            "-o",
            "jsonpath={.spec.maxUnavailable}",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&pdb.stdout), "1");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already as applied, not written"),
        "{}",
        text(&out)
    );

    // A change to the manifests reaches every object it touches: a label
    // added to the slot Services' template.
    let manifests = manifests_with(world.dir.path(), "staging", "");
    let service = manifests.join("slot-http/service.yaml");
    let yaml = std::fs::read_to_string(&service).unwrap();
    let labelled = yaml.replace(
        "    maily.ai/slot: ${SLOT}\nspec:",
        "    maily.ai/slot: ${SLOT}\n    team: mail\nspec:",
    );
    assert_ne!(yaml, labelled, "the slot Service template changed shape");
    std::fs::write(&service, labelled).unwrap();
    world.sim().control().reset();
    let out = world.deploy("v4", &["--manifests-dir", path_str(&manifests)]);
    assert_exit(&out, exit_code::SUCCESS);
    let writes = object_writes(&world);
    for svc in HTTP {
        assert!(
            writes.contains(&format!("services/{svc}-green")),
            "{writes:?}"
        );
    }
}

#[test]
fn a_first_deploy_starts_every_rollout_before_the_services_and_shows_each_ones_progress() {
    let world = World::new(Duration::from_millis(300));
    let out = world.deploy("v1", &["-v"]);
    assert_exit(&out, exit_code::SUCCESS);
    let writes = object_writes(&world);
    let at = |what: &str| writes.iter().position(|w| w == what);
    let last_deployment = HTTP
        .iter()
        .map(|svc| at(&format!("deployments/{svc}-blue")).expect("the Deployment was written"))
        .max()
        .expect("http services");
    for svc in HTTP {
        let service = at(&format!("services/{svc}-blue")).expect("the slot Service was written");
        assert!(
            service > last_deployment,
            "services/{svc}-blue written before the last Deployment: {writes:?}"
        );
    }
    // With -v, where each rollout stands, each state once, then that it
    // rolled out.
    let err = String::from_utf8_lossy(&out.stderr);
    for svc in HTTP {
        let prefix = format!(" {svc}-blue: ");
        let states: Vec<&str> = err
            .lines()
            .filter_map(|l| l.split_once(&prefix).map(|(_, why)| why))
            .collect();
        assert!(
            states
                .iter()
                .any(|s| s.contains("updated replicas available")),
            "{svc}-blue: {states:?}"
        );
        assert_eq!(states.last(), Some(&"rolled out"), "{svc}-blue: {states:?}");
        assert!(
            states.windows(2).all(|w| w[0] != w[1]),
            "{svc}-blue repeats a state: {states:?}"
        );
    }
}

/// A deploy from a laptop to a distant cluster pays a round trip for each
/// request in series. These are the ones it does not make: a group's
/// discovery asked again, a kind listed only when its rank comes, the lock
/// read before it is taken and again before it is released.
#[test]
fn a_deploy_discovers_each_group_once_lists_before_it_writes_and_locks_in_one_request_each_way() {
    let world = World::new(Duration::from_millis(200));
    world.sim().control().reset();
    assert_exit(&world.deploy("v1", &[]), exit_code::SUCCESS);
    let log = world.sim().control().requests();

    let mut discovery = std::collections::BTreeMap::<&str, usize>::new();
    for r in log
        .iter()
        .filter(|r| !r.is_resource() && r.path.starts_with("/api"))
    {
        *discovery.entry(r.path.as_str()).or_default() += 1;
    }
    assert!(
        discovery.contains_key("/api/v1") && discovery.contains_key("/apis/apps/v1"),
        "{discovery:?}"
    );
    let again: Vec<_> = discovery.iter().filter(|(_, n)| **n > 1).collect();
    assert!(again.is_empty(), "discovered more than once: {again:?}");

    let lease: Vec<&str> = log
        .iter()
        .filter(|r| r.resource == "leases")
        .map(|r| r.verb.as_str())
        .collect();
    assert_eq!(lease.first(), Some(&"create"), "{lease:?}");
    assert_eq!(lease.last(), Some(&"delete"), "{lease:?}");
    assert!(!lease.contains(&"get"), "the lease was read: {lease:?}");

    // The slot's objects: every kind listed (to skip what is as applied)
    // before the first of them is written.
    let first = |verb: &str, resource: &str| {
        log.iter()
            .position(|r| r.verb == verb && r.resource == resource)
            .unwrap_or_else(|| panic!("no {verb} of {resource}"))
    };
    let first_write = first("patch", "serviceaccounts");
    for kind in [
        "serviceaccounts",
        "deployments",
        "services",
        "poddisruptionbudgets",
        "horizontalpodautoscalers",
    ] {
        assert!(
            first("list", kind) < first_write,
            "{kind} listed after the slot's first write"
        );
    }
}

/// Every kind of a batch is discovered before anything is written: a kind
/// the cluster does not serve (a CRD not installed) fails the batch with
/// nothing changed, and every such kind is named, not only the first.
#[test]
fn kinds_the_cluster_does_not_serve_are_all_named_before_anything_is_written() {
    use kube::api::DynamicObject;
    use maily_deploy::k8s::apply::Applier;
    let world = World::new(Duration::from_millis(200));
    let object = |v: serde_json::Value| -> DynamicObject { serde_json::from_value(v).unwrap() };
    let batch = vec![
        object(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "kinds-test"}})),
        object(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "kinds-test"}})),
        object(
            serde_json::json!({"apiVersion": "widgets.example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "kinds-test"}}),
        ),
        object(serde_json::json!({"apiVersion": "v1", "kind": "Gadget",
            "metadata": {"name": "g", "namespace": "kinds-test"}})),
    ];
    world.sim().control().reset();
    let applier = Applier::new(world.client.clone());
    let err = world
        .rt
        .block_on(applier.apply_all(batch))
        .expect_err("unserved kinds");
    let message = format!("{err:#}");
    assert!(
        message.contains("does not serve Widget (widgets.example.com/v1)")
            && message.contains("does not serve Gadget (core/v1)"),
        "{message}"
    );
    assert!(
        !message.contains("Status {"),
        "the server's answer as a person reads it, not Rust's debug form: {message}"
    );
    let writes: Vec<String> = world
        .sim()
        .control()
        .requests()
        .into_iter()
        .filter(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch"))
        .map(|r| format!("{} {}", r.verb, r.path))
        .collect();
    assert!(writes.is_empty(), "written before the refusal: {writes:?}");
}

/// Users move to a new slot only once it can carry them: where the old
/// slot serves with more pods than the new one starts with (its HPA took
/// it up under load), the new slot's Deployment is scaled to match and
/// waited for before the switch. (A switch at once used to send them from
/// 5 pods to the 2 a slot starts with.)
#[test]
fn a_switch_waits_for_the_new_slot_to_match_what_the_old_one_serves_with() {
    let world = World::new(Duration::from_millis(300));
    assert_exit(&world.deploy("v1", &[]), 0);
    let scaled = world
        .sim()
        .kubectl()
        .args(["scale", "deployment/api-blue", "--replicas=5", "-n"])
        .arg(&world.namespace)
        .output()
        .unwrap();
    assert!(scaled.status.success(), "{scaled:?}");
    let starts_with = world.replicas("api-green");

    let out = world.deploy("v2", &[]);
    assert_exit(&out, 0);
    world.assert_all_on("green");
    assert!(starts_with.unwrap_or(0) < 5, "{starts_with:?}");
    let green = world.deployment("api-green").unwrap();
    assert_eq!(green.spec.unwrap().replicas, Some(5));
    assert_eq!(green.status.unwrap().ready_replicas, Some(5));
    assert!(
        text(&out).contains("api-green to 5 scaled up first"),
        "{}",
        text(&out)
    );
}

/// `rollback previous` on an environment with no deployment yet names the
/// environment (it said "no good deployment of  before ...").
#[test]
fn rollback_previous_with_no_history_names_the_environment() {
    let world = World::new(Duration::from_millis(200));
    let out = world
        .maily()
        .args(["rollback", "staging", "previous"])
        .output()
        .unwrap();
    assert_exit(&out, exit_code::USAGE);
    assert!(
        text(&out).contains("no good deployment of staging"),
        "{}",
        text(&out)
    );
}
