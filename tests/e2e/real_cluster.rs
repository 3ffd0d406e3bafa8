//! The product's main flows on a real Kubernetes control plane
//! (`tests/controlplane`: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, kwok's fake nodes), built from Go source by
//! `scripts/setup.d/kubernetes.sh`.
//!
//! Every run of the tool here is the deployer of `maily-deploy bootstrap`:
//! a ServiceAccount token, judged by the real RBAC authorizer against the
//! shipped Role. The namespace enforces Pod Security `restricted`. Failures
//! come from kwok stages matching the image tag (`broken-*` never pulls,
//! `crash-*` crash-loops), so the reasons are the ones Kubernetes' own
//! status carries.

use std::process::Stdio;
use std::time::Duration;

use maily_deploy::exit_code;
use maily_deploy::pipeline::snapshot::Outcome;

use crate::support;
use crate::support::*;

const REGISTRY: &str = "registry.example.invalid/maily";

/// A slot template whose pods ask to run as root, which the namespace's
/// Pod Security `restricted` refuses.
const AS_ROOT: &[(&str, &str)] = &[
    ("runAsNonRoot: true", "runAsNonRoot: false"),
    ("runAsUser: 10001", "runAsUser: 0"),
];

/// No call the tool made was forbidden: the real authorizer answers 403
/// with `User "system:serviceaccount:<ns>:maily-deployer" cannot <verb>
/// resource "<resource>"`, which the tool prints.
#[track_caller]
fn nothing_forbidden(out: &std::process::Output) {
    let all = text(out);
    assert!(
        !all.contains("forbidden") && !all.contains("Forbidden") && !all.contains("cannot "),
        "the shipped Role refused a call the tool made:\n{all}"
    );
}

#[track_caller]
/// The namespace's pods once none is terminating: what its quota's `used`
/// counts (pods being deleted, the old slot's workers after a switch, are
/// listed but no longer counted).
fn settled_pod_count(world: &World) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let terminating = world.kubectl_admin(&[
            "-n",
            &world.namespace,
            "get",
            "pods",
            "-o",
            "jsonpath={.items[*].metadata.deletionTimestamp}",
        ]);
        if terminating.trim().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pods still terminating: {terminating}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    world
        .kubectl_admin(&[
            "-n",
            &world.namespace,
            "get",
            "pods",
            "--no-headers",
            "-o",
            "name",
        ])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

fn deployed(world: &World, tag: &str) -> String {
    let out = world.deploy(tag, &[]);
    nothing_forbidden(&out);
    assert_exit(&out, exit_code::SUCCESS);
    world.deployment_id(&out)
}

/// A release that fails its rollout: fast, with Kubernetes' own reason, and
/// users stay on the release before.
fn fails_fast_leaving_users_on(world: &World, tag: &str, reasons: &[&str], users_on: &str) {
    let out = world.deploy(tag, &[]);
    let all = text(&out);
    nothing_forbidden(&out);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    let reason = reasons
        .iter()
        .find(|r| all.contains(**r))
        .unwrap_or_else(|| panic!("one of Kubernetes' reasons {reasons:?}: {all}"));
    assert!(all.contains("deploy-backend"), "the phase is named: {all}");
    // Failed on the pod's own reason, not by waiting out ROLLOUT_TIMEOUT
    // (how fast is the benchmark's to measure).
    assert!(
        !all.contains("ProgressDeadlineExceeded") && !all.contains("still not done"),
        "waited out the deadline instead of failing fast: {all}"
    );
    world.assert_all_on(users_on);
    the_last_run_failed_with(world, reason);
}

/// The newest snapshot is a failed run's, its failure naming `reason`.
#[track_caller]
fn the_last_run_failed_with(world: &World, reason: &str) {
    let snaps = world.snapshots();
    assert_eq!(snaps[0].outcome, Outcome::Failed, "{:?}", snaps[0]);
    assert!(
        snaps[0]
            .failure
            .as_deref()
            .unwrap_or_default()
            .contains(reason),
        "{:?}",
        snaps[0].failure
    );
}

#[test]
fn releases_switch_users_bad_ones_fail_fast_and_rollback_brings_the_first_back() {
    let world = World::real("staging");
    let v1 = deployed(&world, "v1");
    world.assert_all_on("blue");
    deployed(&world, "v2");
    world.assert_all_on("green");
    assert_eq!(
        world.image("api-green").as_deref(),
        Some(format!("{REGISTRY}/maily-api:v2").as_str())
    );

    // v3's image cannot be pulled; v4 crash-loops. Both go to the idle
    // slot (blue) and fail there; users stay on v2.
    // The kubelet reports ErrImagePull first, ImagePullBackOff after.
    fails_fast_leaving_users_on(
        &world,
        "broken-3",
        &["ErrImagePull", "ImagePullBackOff"],
        "green",
    );
    fails_fast_leaving_users_on(&world, "crash-4", &["CrashLoopBackOff"], "green");
    assert_eq!(
        world.image("api-green").as_deref(),
        Some(format!("{REGISTRY}/maily-api:v2").as_str()),
        "the release users are on is untouched"
    );

    // v1 runs nowhere now (blue holds crash-4): rollback re-applies it to
    // the idle slot, waits, and switches.
    let out = world
        .maily()
        .args(["rollback", &world.environment, &v1])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    nothing_forbidden(&out);
    assert_exit(&out, exit_code::SUCCESS);
    world.assert_all_on("blue");
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some(format!("{REGISTRY}/maily-api:v1").as_str())
    );
    // The real controllers finished the rollout: every pod of the slot is
    // Running and Ready on a fake node.
    let ready = world.kubectl_admin(&[
        "-n",
        &world.namespace,
        "get",
        "deployment",
        "api-blue",
        "-o",
        "jsonpath={.status.readyReplicas}/{.status.replicas}/{.status.updatedReplicas}",
    ]);
    let parts: Vec<&str> = ready.split('/').collect();
    assert!(
        parts.len() == 3 && parts[0] == parts[1] && parts[1] == parts[2] && parts[0] != "0",
        "api-blue ready/replicas/updated: {ready}"
    );

    // history: newest first, each outcome.
    let out = world
        .maily()
        .args(["history", &world.environment, "--output", "json"])
        .output()
        .unwrap();
    nothing_forbidden(&out);
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes: Vec<&str> = doc["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["succeeded", "failed", "failed", "succeeded", "succeeded"],
        "{doc}"
    );
    assert_eq!(doc["deployments"][4]["deployment_id"], v1.as_str());
}

/// Pods that run but never become Ready are the common real failure, and
/// no pod reason says so: the Deployment controller's
/// ProgressDeadlineExceeded (after `ROLLOUT_TIMEOUT`, the template's
/// progressDeadlineSeconds) is the only word. The real controller's, not
/// kubesim's.
#[test]
fn pods_that_never_become_ready_fail_at_the_deadline_the_controller_reports() {
    let world = World::real("staging");
    deployed(&world, "v1");
    world.assert_all_on("blue");
    let out = world.deploy_with(
        &[("IMAGE_TAG", "unready-2"), ("ROLLOUT_TIMEOUT", "5s")],
        &[],
    );
    let all = text(&out);
    nothing_forbidden(&out);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    assert!(all.contains("ProgressDeadlineExceeded"), "{all}");
    assert!(all.contains("deploy-backend"), "the phase is named: {all}");
    world.assert_all_on("blue");
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some(format!("{REGISTRY}/maily-api:v1").as_str())
    );
    the_last_run_failed_with(&world, "ProgressDeadlineExceeded");
}

/// A Prometheus whose every answer passes the staging profile's analysis:
/// plenty of samples, errors and latency well under their limits.
struct PassingPrometheus;

impl wiremock::Respond for PassingPrometheus {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let query = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let value = if query.starts_with("sum(increase") {
            "1000"
        } else if query.starts_with("100 *") {
            "0.1"
        } else {
            "100"
        };
        wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, value]}]}
        }))
    }
}

/// A deploy of `tag` walking the staging profile's steps (50%, then 100%),
/// analysed against `prometheus`.
fn progressive(world: &World, tag: &str, prometheus: &str) -> std::process::Child {
    let env = world.env_file(&[
        ("IMAGE_TAG", tag),
        ("ROLLOUT_TIMEOUT", "60s"),
        ("PROMETHEUS_URL", prometheus),
    ]);
    world
        .process()
        .env_remove("MAILY_TRAFFIC_STEPS")
        .args([world.environment.as_str(), "--lock-ttl", "3s"])
        .args(BACKEND_ONLY)
        .arg("--env-file")
        .arg(&env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Until `status` says the rollout is at its first step (the record
/// follows the route write).
fn at_first_step(world: &World) {
    let until = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let out = world
            .maily()
            .args(["status", &world.environment])
            .output()
            .unwrap();
        nothing_forbidden(&out);
        if String::from_utf8_lossy(&out.stdout).contains("step 1 of 2, 50% on") {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "never at 50%: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn second_terminal(world: &World, verb: &str) -> std::process::Output {
    let out = world
        .maily()
        .args([verb, &world.environment])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    nothing_forbidden(&out);
    out
}

/// The traffic walk with users split between the slots, and `abort` and
/// `promote` from a second terminal, live and after the run died: the
/// real RBAC authorizer judges the rollout record's ConfigMap, the routes
/// at weights between the slots, the worker scales of each step and the
/// dead run's lease taken over, as the deployer ServiceAccount.
#[test]
fn a_progressive_rollout_is_aborted_and_promoted_from_a_second_terminal() {
    let world = World::real("staging");
    deployed(&world, "v1");
    world.assert_all_on("blue");
    let prometheus = world.rt.block_on(wiremock::MockServer::start());
    world.rt.block_on(
        wiremock::Mock::given(wiremock::matchers::path("/api/v1/query"))
            .respond_with(PassingPrometheus)
            .mount(&prometheus),
    );

    // Live, aborted at 50%: everyone back on blue, the run fails (exit 4).
    let run = progressive(&world, "v2", &prometheus.uri());
    at_first_step(&world);
    assert_eq!(world.weights("api"), Some((50, 50)));
    let abort = second_terminal(&world, "abort");
    assert_exit(&abort, exit_code::SUCCESS);
    let run = run.wait_with_output().unwrap();
    nothing_forbidden(&run);
    assert_exit(&run, exit_code::PHASE_FAILED_ROLLED_BACK);
    world.assert_all_on("blue");
    assert_eq!(world.weights("api"), Some((100, 0)));

    // Live, promoted at 50%: everyone on green, the run succeeds.
    let run = progressive(&world, "v3", &prometheus.uri());
    at_first_step(&world);
    let promote = second_terminal(&world, "promote");
    assert_exit(&promote, exit_code::SUCCESS);
    let run = run.wait_with_output().unwrap();
    nothing_forbidden(&run);
    assert_exit(&run, exit_code::SUCCESS);
    world.assert_all_on("green");
    assert_eq!(world.weights("api"), Some((0, 100)));

    // Killed at 50%: abort waits out its lease, takes the lock over and
    // puts users back on green; the dead run's snapshot says failed.
    let mut run = progressive(&world, "v4", &prometheus.uri());
    at_first_step(&world);
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(world.weights("api"), Some((50, 50)));
    let abort = second_terminal(&world, "abort");
    assert_exit(&abort, exit_code::SUCCESS);
    world.assert_all_on("green");
    assert_eq!(world.weights("api"), Some((0, 100)));
    assert_eq!(world.snapshots()[0].outcome, Outcome::Failed);
    assert_eq!(world.lease_holder(), None);
}

#[test]
fn status_reports_drift_after_a_kubectl_scale_by_hand() {
    let world = World::real("staging");
    let id = deployed(&world, "v1");
    let status = |world: &World| {
        let out = world
            .maily()
            .args(["status", &world.environment, "--output", "json"])
            .output()
            .unwrap();
        nothing_forbidden(&out);
        assert_exit(&out, 0);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let doc = status(&world);
    assert_eq!(doc["active_slot"], "blue");
    assert_eq!(doc["last_good_deployment"], id.as_str());
    assert_eq!(doc["drift"], serde_json::json!([]), "{doc}");

    // An operator scales the live workers by hand.
    world.kubectl_admin(&[
        "-n",
        &world.namespace,
        "scale",
        "deployment",
        "workers-blue",
        "--replicas=5",
    ]);
    let doc = status(&world);
    assert_eq!(
        doc["drift"],
        serde_json::json!(["workers-blue: replicas 5 (recorded: 2)"]),
        "{doc}"
    );
}

#[test]
fn two_runs_at_once_one_holds_the_lease_and_the_other_is_refused() {
    let world = World::real("staging");
    let spawn = || {
        let env = world.env_file(&[("IMAGE_TAG", "v1"), ("ROLLOUT_TIMEOUT", "60s")]);
        world
            .process()
            .arg(&world.environment)
            .args(BACKEND_ONLY)
            .arg("--env-file")
            .arg(&env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
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
        stderr.contains(&format!(
            "another run holds the deploy lock of {}: tester@",
            world.environment
        )),
        "{stderr}"
    );
    world.assert_all_on("blue");
    // The lease is gone once the run ended.
    let leases = world.kubectl_admin(&["-n", &world.namespace, "get", "leases", "-o", "name"]);
    assert!(
        !leases.contains("maily-deploy"),
        "the lock outlived the run: {leases}"
    );
}

#[test]
fn replicas_a_person_took_over_with_kubectl_are_taken_back_by_the_next_deploy() {
    let world = World::real("staging");
    deployed(&world, "v1");
    deployed(&world, "v2");
    world.assert_all_on("green");
    let profile_replicas = world.replicas("api-green").unwrap();
    // Someone scales the idle slot's api by hand: kubectl's field manager
    // now owns spec.replicas there (and the slot's HPA may clamp it).
    world.kubectl_admin(&[
        "-n",
        &world.namespace,
        "scale",
        "deployment",
        "api-blue",
        "--replicas=4",
    ]);
    let owners_of_replicas = |world: &World| -> (i64, Vec<String>) {
        let json = world.kubectl_admin(&[
            "-n",
            &world.namespace,
            "get",
            "deployment",
            "api-blue",
            "--show-managed-fields",
            "-o",
            "json",
        ]);
        let d: serde_json::Value = serde_json::from_str(&json).unwrap();
        let owners = d["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["fieldsV1"]["f:spec"]["f:replicas"].is_object())
            .map(|m| m["manager"].as_str().unwrap().to_string())
            .collect();
        (d["spec"]["replicas"].as_i64().unwrap(), owners)
    };
    let (_, before) = owners_of_replicas(&world);
    assert!(
        before.iter().any(|m| m != "maily-deploy"),
        "another manager owns replicas after kubectl scale: {before:?}"
    );

    // The next deploy applies with force, as documented: the tool owns
    // what it applies, and a hand edit is drift to overwrite.
    deployed(&world, "v3");
    let (replicas, after) = owners_of_replicas(&world);
    assert_eq!(replicas, i64::from(profile_replicas));
    assert_eq!(after, ["maily-deploy"]);
    world.assert_all_on("blue");
}

#[test]
fn a_pod_the_namespace_pod_security_rejects_is_named_not_waited_for() {
    let world = World::real("staging");
    deployed(&world, "v1");
    // A template that asks to run as root: the apply is admitted (a
    // Deployment is not a pod), the ReplicaSet's pods are not.
    world.rewrite_manifest("slot/deployment.yaml", AS_ROOT);
    let out = world.deploy("v2", &[]);
    let all = text(&out);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    assert!(
        all.contains("FailedCreate"),
        "the ReplicaSet's reason: {all}"
    );
    assert!(
        all.contains("violates PodSecurity \"restricted:latest\""),
        "admission's own words: {all}"
    );
    assert!(
        !all.contains("ProgressDeadlineExceeded") && !all.contains("still not done"),
        "named, not waited out: {all}"
    );
    world.assert_all_on("blue");
}

#[test]
fn pods_no_node_can_take_fail_the_rollout_after_the_grace_not_the_deadline() {
    let world = World::real("staging");
    deployed(&world, "v1");
    // Each pod asks for more CPU than any of kwok's nodes has (32).
    world.rewrite_manifest(
        "slot/deployment.yaml",
        &[
            ("requests: {cpu: 250m,", "requests: {cpu: \"64\","),
            ("limits: {cpu: \"1\",", "limits: {cpu: \"64\","),
        ],
    );
    let out = world.deploy_with(
        &[
            ("IMAGE_TAG", "v2"),
            ("ROLLOUT_TIMEOUT", "10m"),
            ("UNSCHEDULABLE_GRACE", "2s"),
        ],
        &[],
    );
    let all = text(&out);
    nothing_forbidden(&out);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    assert!(
        all.contains("Unschedulable"),
        "the scheduler's reason: {all}"
    );
    assert!(
        all.contains("Insufficient cpu"),
        "the scheduler's own words: {all}"
    );
    assert!(
        !all.contains("ProgressDeadlineExceeded") && !all.contains("still not done"),
        "failed on the verdict, not after a 10m deadline: {all}"
    );
    world.assert_all_on("blue");
}

/// A ResourceQuota in this world's namespace, applied by the admin.
fn quota(world: &World, hard: &str) {
    let quota = format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: team, namespace: {}}}\nspec: {{hard: {{{hard}}}}}\n",
        world.namespace
    );
    world.kubectl_admin_stdin(&["apply", "-f", "-"], quota.as_bytes());
}

/// A quota on pods whose hard limit is `hard(used)`, `used` being what the
/// quota controller counts once the namespace's pods have settled (its
/// status is the controller's to fill in, and it lags behind the pods on a
/// busy machine); returns `used`.
fn pods_quota(world: &World, hard: impl Fn(usize) -> usize) -> usize {
    let read = |field: &str| {
        world
            .kubectl_admin(&[
                "-n",
                &world.namespace,
                "get",
                "resourcequota",
                "team",
                "-o",
                &format!("jsonpath={{.status.{field}.pods}}"),
            ])
            .trim()
            .to_string()
    };
    quota(world, "pods: \"100000\"");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    let used = loop {
        let now = read("used");
        let pods = settled_pod_count(world);
        if !now.is_empty() && now == last && now == pods.to_string() {
            break pods;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the quota controller never settled on the pods (it counts {now:?}, the namespace runs {pods})"
        );
        last = now;
        std::thread::sleep(Duration::from_millis(500));
    };
    let limit = hard(used);
    quota(world, &format!("pods: \"{limit}\""));
    while read("hard") != limit.to_string() {
        assert!(
            std::time::Instant::now() < deadline,
            "the quota's hard limit never became {limit}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    used
}

#[test]
fn a_release_the_quota_cannot_hold_is_refused_before_it_applies_with_the_numbers() {
    let world = World::real("staging");
    deployed(&world, "v1");
    // The namespace may run no more pods than it runs now.
    let count = pods_quota(&world, |used| used);
    let out = world.deploy("v2", &[]);
    let all = text(&out);
    nothing_forbidden(&out);
    assert_exit(&out, exit_code::REFUSED);
    assert!(
        all.contains("ResourceQuota team: pods: the new slot needs"),
        "the quota and the numbers: {all}"
    );
    assert!(
        all.contains(&format!("hard {count}, used {count}")),
        "{all}"
    );
    assert!(all.contains("nothing was applied"), "{all}");
    assert!(
        world.deployment("api-green").is_none(),
        "no Deployment of the new slot was created"
    );
    world.assert_all_on("blue");
}

/// Where the idle slot still runs pods (the grace period kept them), the
/// rollout replaces them surge first (`maxUnavailable: 0`): a quota with no
/// room for the surge pods would stop it at its first pod. The check
/// counts them, and refuses before anything is applied. (It credited the
/// old pods as freed and let the rollout fail on `exceeded quota`.)
#[test]
fn a_quota_with_no_room_for_the_surge_is_refused_before_it_applies() {
    let world = World::real("staging");
    deployed(&world, "v1");
    deployed(&world, "v2"); // blue keeps running v1: the tests keep the grace
    // Room for blue at green's full replicas, and not one pod more: the
    // release fits once the rollout is over, but not during it.
    let replicas = |slot: &str| -> usize {
        world
            .kubectl_admin(&[
                "-n",
                &world.namespace,
                "get",
                "deployments",
                "-l",
                &format!("maily.ai/slot={slot}"),
                "-o",
                "jsonpath={.items[*].spec.replicas}",
            ])
            .split_whitespace()
            .map(|n| n.parse::<usize>().unwrap())
            .sum()
    };
    let (green, blue) = (replicas("green"), replicas("blue"));
    pods_quota(&world, |used| used + green - blue);
    let image_before = world.image("api-blue");
    let out = world.deploy("v3", &[]);
    let all = text(&out);
    nothing_forbidden(&out);
    assert_exit(&out, exit_code::REFUSED);
    assert!(
        all.contains("ResourceQuota team: pods: the new slot needs"),
        "{all}"
    );
    assert!(all.contains("nothing was applied"), "{all}");
    assert_eq!(world.image("api-blue"), image_before, "blue untouched");
    world.assert_all_on("green");
}

/// What a write would move, object by object: the generation of the kinds
/// whose status a controller updates at any time (Deployments, CronJobs,
/// PodDisruptionBudgets: the disruption controller rewrites a budget's
/// status when its pods come and go), and the resourceVersion of the
/// other kinds the tool applies.
fn resource_versions(world: &World) -> String {
    let list = |kinds: &str, field: &str| {
        world.kubectl_admin(&[
            "-n",
            &world.namespace,
            "get",
            kinds,
            "-o",
            &format!(
                "jsonpath={{range .items[*]}}{{.kind}}/{{.metadata.name}}={{.metadata.{field}}}{{\"\\n\"}}{{end}}"
            ),
        ])
    };
    list("deployments,cronjobs,poddisruptionbudgets", "generation")
        + &list(
            "services,configmaps,serviceaccounts,httproutes,networkpolicies",
            "resourceVersion",
        )
}

fn dry_run(world: &World, tag: &str) -> std::process::Output {
    world.deploy(tag, &["--dry-run"])
}

#[test]
fn a_dry_run_asks_the_server_and_shows_only_what_would_change() {
    let world = World::real("staging");
    deployed(&world, "v1");
    deployed(&world, "v2");
    let before = resource_versions(&world);
    // v3 goes to blue, which runs v1.
    let out = dry_run(&world, "v3");
    nothing_forbidden(&out);
    assert_exit(&out, exit_code::SUCCESS);
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(plan.contains("the server's dry run: 0 created"), "{plan}");
    let changes: Vec<&str> = plan
        .lines()
        .map(str::trim_start)
        .filter_map(|l| l.find("~ ").map(|i| &l[i..]))
        .collect();
    assert!(
        changes.contains(&format!(
            "~ Deployment api-blue: spec.template.spec.containers[api].image: {REGISTRY}/maily-api:v1 → {REGISTRY}/maily-api:v3"
        ).as_str()),
        "{plan}"
    );
    // Only what carries the release's tag changes (images, the version
    // label and variable, the image annotation): v1 (blue's) or v2 (the
    // platform's) to v3, and nothing the server defaults.
    for c in &changes {
        let (from, to) = c.split_once(" → ").unwrap();
        assert!(
            to.ends_with("v3") && (from.ends_with("v1") || from.ends_with("v2")),
            "a change that is not the release's tag: {c}\n{plan}"
        );
    }
    assert_eq!(resource_versions(&world), before, "nothing was stored");

    // A value the API server's validation refuses fails the plan with
    // the server's words.
    world.rewrite_manifest(
        "slot/deployment.yaml",
        &[("revisionHistoryLimit: 3", "revisionHistoryLimit: -3")],
    );
    let out = dry_run(&world, "v3");
    let all = text(&out);
    assert_exit(&out, exit_code::REFUSED);
    assert!(all.contains("the server rejects"), "{all}");
    assert!(
        all.contains("revisionHistoryLimit") && all.contains("must be greater than or equal to 0"),
        "the server's own words: {all}"
    );
    assert_eq!(resource_versions(&world), before, "nothing was stored");

    // Pods the namespace's Pod Security `restricted` would refuse: the
    // Deployment itself is admitted with a warning, and the plan fails on
    // it, with Pod Security's words.
    world.rewrite_manifest("slot/deployment.yaml", AS_ROOT);
    let out = dry_run(&world, "v3");
    let all = text(&out);
    assert_exit(&out, exit_code::REFUSED);
    assert!(all.contains("the server rejects its pods"), "{all}");
    assert!(
        all.contains("would violate PodSecurity \"restricted:latest\""),
        "Pod Security's own words: {all}"
    );
    assert_eq!(resource_versions(&world), before, "nothing was stored");
}

fn diff(world: &World, tag: &str) -> std::process::Output {
    world.diff(tag, &[])
}

#[test]
fn diff_exits_0_for_the_release_users_run_and_1_for_a_new_one() {
    let world = World::real("staging");
    deployed(&world, "v1");
    deployed(&world, "v2");
    let before = resource_versions(&world);
    // Users run v2 on green: the same release again changes nothing the
    // server would store for them.
    let out = diff(&world, "v2");
    nothing_forbidden(&out);
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{}", text(&out));
    // v3: each field carrying the tag, v2 to v3, and nothing else.
    let out = diff(&world, "v3");
    nothing_forbidden(&out);
    assert_exit(&out, exit_code::DIFF_CHANGES);
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        plan.lines().any(|l| l
            == format!(
                "~ Deployment api-green: spec.template.spec.containers[api].image: {REGISTRY}/maily-api:v2 → {REGISTRY}/maily-api:v3"
            )),
        "{plan}"
    );
    for line in plan.lines() {
        assert!(
            line.starts_with("~ ") && line.ends_with("v3") && line.contains("v2 → "),
            "a change that is not the release's tag: {line}\n{plan}"
        );
    }
    assert_eq!(resource_versions(&world), before, "nothing was stored");
}

#[test]
fn monitor_applies_rules_and_service_monitors_that_the_real_crds_admit() {
    use support::grafana::{TOKEN, grafana, metrics_endpoint};
    use support::prometheus::{PrometheusServer, slot_target};

    let world = World::real("staging");
    let g = grafana(&world, &world.environment, 200);
    let metrics = metrics_endpoint(&world);
    let targets: Vec<_> = HTTP
        .iter()
        .map(|s| {
            slot_target(
                &metrics.address().to_string(),
                &world.namespace,
                s,
                "blue",
                "v1",
            )
        })
        .collect();
    let prom = PrometheusServer::start(&targets);
    let env = world.env_file(&[
        ("IMAGE_TAG", "v1"),
        ("ROLLOUT_TIMEOUT", "60s"),
        ("GRAFANA_URL", &g.uri()),
        ("GRAFANA_API_TOKEN", TOKEN),
        ("PROMETHEUS_URL", &prom.url),
        ("MONITOR_TARGETS_TIMEOUT", "20s"),
    ]);
    let out = world
        .maily()
        .arg(&world.environment)
        .args([
            "--skip-provision",
            "--skip-migrate",
            "--skip-frontend",
            "--skip-ai",
            "--skip-verify",
            "--env-file",
        ])
        .arg(&env)
        .timeout(Duration::from_secs(180))
        .output()
        .unwrap();
    nothing_forbidden(&out);
    assert_exit(&out, exit_code::SUCCESS);
    // The API server validated them against the operator's own schemas.
    let rules = world.monitoring_objects("PrometheusRule");
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule_text = serde_json::to_string(&rules[0].data["spec"]).unwrap();
    assert!(
        rule_text.contains(&format!("namespace=\\\"{}\\\"", world.namespace)),
        "{rule_text}"
    );
    let monitors: Vec<String> = world
        .monitoring_objects("ServiceMonitor")
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        monitors,
        [
            "analytics",
            "api",
            "blockchain-verifier",
            "campaigns",
            "email-sender",
            "workers"
        ]
    );
}

#[test]
fn a_routine_deploy_leaves_what_the_server_holds_as_applied_and_restores_a_hand_edit() {
    let world = World::real("staging");
    deployed(&world, "v1");
    deployed(&world, "v2");
    world.kubectl_admin(&[
        "-n",
        &world.namespace,
        "patch",
        "pdb",
        "api-blue",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"maxUnavailable":3}}"#,
    ]);

    let out = world.deploy("v3", &["-v"]);
    nothing_forbidden(&out);
    assert_exit(&out, exit_code::SUCCESS);
    // The real API server's defaults and normalisation do not hide that
    // the slot's objects are as applied: the six ServiceAccounts, the five
    // Services and autoscalers, and every budget but the edited one.
    let all = text(&out);
    let unchanged: usize = all
        .split_once(" already as applied, not written")
        .and_then(|(before, _)| before.rsplit_once('(')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no count of unchanged objects:\n{all}"));
    assert!(unchanged >= 6 + 5 + 5 + 5, "{unchanged} unchanged:\n{all}");
    let budget = world.kubectl_admin(&[
        "-n",
        &world.namespace,
        "get",
        "pdb",
        "api-blue",
        "-o",
        "jsonpath={.spec.maxUnavailable}",
    ]);
    assert_eq!(budget, "1", "the hand edit was not overwritten");
    world.assert_all_on("blue");
}
