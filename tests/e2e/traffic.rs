//! shift-traffic walks the profile's steps against kubesim, gated by
//! analysis that a real Prometheus evaluates over simulated users: their
//! split follows the live route weights, and each slot answers with the
//! error rate and latency a test chooses.
//!
//! Each test deploys v1 at once (users on blue), then v2 progressively to
//! green with a short staging profile: steps of a few seconds, analysis
//! every 2 s.

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use maily_deploy::exit_code;
use maily_deploy::pipeline::snapshot::Outcome;
use maily_deploy::traffic::report::StepOutcome;
use serde_json::Value;

use crate::frontend::WITH_FRONTEND;
use crate::support;
use crate::support::prometheus::PrometheusServer;
use crate::support::traffic::{SlotBehaviour, TrafficSim};
use crate::support::*;

/// Requests per second the simulated users send to the api.
const RPS: f64 = 200.0;

/// A staging profile whose steps take seconds: `steps` and `pause`, the
/// old slot's `grace`, and analysis every 2 s that needs 20 requests, with
/// the shipped error-rate and p99 metrics, no failure tolerated, and a step
/// without a verdict held `inconclusive` past its pause (generous but for
/// the test of that bound: a loaded machine's Prometheus may miss a
/// scrape).
fn traffic_yaml(steps: &str, pause: &str, grace: &str, inconclusive: &str) -> String {
    format!(
        r#"traffic:
  steps: {steps}
  pause: {pause}
  grace: {grace}
  workers: proportional
  analysis:
    interval: 2s
    failure_limit: 0
    inconclusive_timeout: {inconclusive}
    samples:
      query: sum(increase(http_requests_total{{namespace="{{{{namespace}}}}", slot="{{{{slot}}}}"}}[{{{{interval}}}}]))
      min: 20
    metrics:
      - name: error-rate
        unit: "%"
        query: >-
          100 * (sum(rate(http_requests_total{{namespace="{{{{namespace}}}}", slot="{{{{slot}}}}", status=~"5.."}}[{{{{interval}}}}])) or vector(0))
          / sum(rate(http_requests_total{{namespace="{{{{namespace}}}}", slot="{{{{slot}}}}"}}[{{{{interval}}}}]))
        max: 1
      - name: p99-latency
        unit: ms
        query: >-
          1000 * histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{namespace="{{{{namespace}}}}", slot="{{{{slot}}}}"}}[{{{{interval}}}}])))
        max: 1000
        max_ratio_to_old: 1.5
"#
    )
}

/// A copy of the shipped manifests whose staging profile has `traffic`
/// instead of its own traffic section.
fn manifests(dir: &std::path::Path, traffic: &str) -> std::path::PathBuf {
    let manifests = dir.join(format!("manifests-{}", rand_suffix()));
    copy_dir(&repo().join("manifests"), &manifests);
    let path = manifests.join("environments/staging.yaml");
    let shipped = std::fs::read_to_string(&path).unwrap();
    let start = shipped.find("\ntraffic:\n").expect("a traffic section") + 1;
    let end = shipped.find("\nservices:\n").expect("a services section") + 1;
    std::fs::write(
        &path,
        format!("{}{traffic}{}", &shipped[..start], &shipped[end..]),
    )
    .unwrap();
    manifests
}

/// A world with v1 on blue, users hitting the api, and Prometheus
/// scraping both slots.
struct Stage {
    world: World,
    sim: TrafficSim,
    prometheus: PrometheusServer,
    manifests: std::path::PathBuf,
    /// The phase flags of the progressive deploy (the backend's alone
    /// unless a test takes in the frontend).
    phases: &'static [&'static str],
    /// Variables added to the env file (a Vercel stub's).
    extra_vars: Vec<(&'static str, String)>,
}

impl Stage {
    fn new(traffic: &str) -> Stage {
        let world = World::new(Duration::from_millis(200));
        let first = world.deploy("v1", &[]);
        assert_exit(&first, 0);
        let sim = TrafficSim::start(world.weight_source("api"));
        sim.set_rps(RPS);
        sim.set_stable("blue");
        let prometheus =
            PrometheusServer::start(&sim.scrape_targets(&world.namespace, "api", |slot| {
                if slot == "blue" { "v1" } else { "v2" }.to_string()
            }));
        let manifests = manifests(world.dir.path(), traffic);
        Stage {
            world,
            sim,
            prometheus,
            manifests,
            phases: BACKEND_ONLY,
            extra_vars: Vec::new(),
        }
    }

    fn env(&self, tag: &str) -> std::path::PathBuf {
        let mut vars: Vec<(&str, &str)> = vec![
            ("IMAGE_TAG", tag),
            ("ROLLOUT_TIMEOUT", "60s"),
            ("PROMETHEUS_URL", &self.prometheus.url),
        ];
        vars.extend(self.extra_vars.iter().map(|(k, v)| (*k, v.as_str())));
        self.world.env_file(&vars)
    }

    /// The command line of a progressive deploy of `tag` (the profile's
    /// steps: the tests' default of switching at once is taken away).
    fn command(&self, tag: &str, extra: &[&str]) -> std::process::Command {
        let mut cmd = self.world.process();
        for (name, _) in SWITCH_AT_ONCE {
            cmd.env_remove(name);
        }
        cmd.arg("--manifests-dir")
            .arg(&self.manifests)
            .arg("staging")
            .args(self.phases)
            .arg("--env-file")
            .arg(self.env(tag))
            .args(extra);
        if !extra.contains(&"--output") {
            cmd.args(["--output", "json"]);
        }
        cmd
    }

    fn deploy(&self, tag: &str, extra: &[&str]) -> Output {
        self.command(tag, extra).output().unwrap()
    }

    fn spawn(&self, tag: &str, extra: &[&str]) -> Child {
        self.command(tag, extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Another command on this environment, as a second terminal runs it.
    fn other(&self, args: &[&str]) -> Output {
        self.world
            .maily()
            .arg("--manifests-dir")
            .arg(&self.manifests)
            .args(args)
            .arg("--env-file")
            .arg(self.env("v2"))
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap()
    }

    /// Until `status` says the rollout is at `step` (`step 1 of 2, 25%
    /// on`): the record follows the route write, on a busy machine not in
    /// the same millisecond.
    fn wait_for_recorded(&self, step: &str) {
        let until = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.other(&["status", "staging"]);
            if String::from_utf8_lossy(&status.stdout).contains(step) {
                return;
            }
            assert!(
                std::time::Instant::now() < until,
                "the record never said {step:?}: {}",
                text(&status)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for_weights(&self, weights: (u32, u32)) {
        assert!(
            self.sim
                .wait_for_weights(weights, Duration::from_secs(60))
                .is_some(),
            "the api route never reached {weights:?}: {:?}",
            self.sim
                .weight_history()
                .iter()
                .map(|c| c.weights)
                .collect::<Vec<_>>()
        );
    }
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("a JSON report ({e}): {}", text(out)))
}

fn steps(report: &Value) -> Vec<Value> {
    report["rollout"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn outcomes(report: &Value) -> Vec<(u64, String)> {
    steps(report)
        .iter()
        .map(|s| {
            (
                s["percent"].as_u64().unwrap(),
                s["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The report of a run that failed and put users back (exit 4).
#[track_caller]
fn rolled_back(out: &Output) -> Value {
    assert_exit(out, exit_code::PHASE_FAILED_ROLLED_BACK);
    report(out)
}

/// The first failed measurement of a step.
fn failed_measurement(report: &Value, step: usize) -> Value {
    steps(report)[step]["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["verdict"] == "fail")
        .cloned()
        .unwrap_or_else(|| panic!("a failed measurement at step {step}: {report}"))
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

#[test]
fn a_healthy_rollout_walks_every_step_then_scales_the_old_slot_down() {
    let stage = Stage::new(&traffic_yaml("[10, 25, 50, 100]", "3s", "2s", "20s"));
    let out = stage.deploy("v2", &[]);
    assert_exit(&out, 0);
    let report = report(&out);
    // With --output json the report is alone on stdout (it parsed) and the
    // run's events still reach stderr while the steps pause: a CI job's
    // no-output timeout sees the run alive.
    let log = String::from_utf8_lossy(&out.stderr);
    for said in [
        "… deploy-backend",
        "✓ deploy-backend",
        "  shift-traffic: step 1/4: 10% on green (weights blue 90 / green 10)",
        "  shift-traffic: step 4/4: 100% on green",
        "✓ shift-traffic",
    ] {
        assert!(
            log.lines().any(|l| l.starts_with(said)),
            "{said:?} on stderr:\n{log}"
        );
    }
    assert!(!log.contains('┌'), "no table on stderr: {log}");
    assert_eq!(
        outcomes(&report),
        vec![
            (10, "passed".into()),
            (25, "passed".into()),
            (50, "passed".into()),
            (100, "reached".into())
        ]
    );
    // Every step below 100 was measured, and passed on real numbers.
    for step in &steps(&report)[..3] {
        let last = step["measurements"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["verdict"], "pass", "{step}");
        assert!(last["samples"].as_f64().unwrap() >= 20.0, "{last}");
        let error = &last["metrics"][0];
        assert_eq!(error["name"], "error-rate");
        assert_eq!(error["value"].as_f64(), Some(0.0), "{error}");
        let p99 = &last["metrics"][1];
        assert!(p99["value"].as_f64().unwrap() < 100.0, "{p99}");
        assert!(
            p99["old_value"].as_f64().is_some(),
            "compared with blue: {p99}"
        );
    }
    // The route walked the steps, in order, to green.
    let walked: Vec<(u32, u32)> = stage
        .sim
        .weight_history()
        .iter()
        .map(|c| c.weights)
        .collect();
    assert_eq!(
        walked,
        vec![(100, 0), (90, 10), (75, 25), (50, 50), (0, 100)]
    );
    assert_eq!(stage_selectors(&stage), all_on("green"));
    // Workers took each step's share: staging runs 2.
    let workers: Vec<Value> = steps(&report)
        .iter()
        .map(|s| s["workers"].clone())
        .collect();
    assert_eq!(
        workers[1],
        serde_json::json!([["workers", 1, 2]]),
        "{workers:?}"
    );
    assert_eq!(
        workers[3],
        serde_json::json!([["workers", 2, 0]]),
        "{workers:?}"
    );
    // After its grace period the old slot is scaled to 0.
    assert_eq!(report["rollout"]["grace_period"]["scaled_down"], true);
    for svc in HTTP {
        assert_eq!(
            stage.world.replicas(&format!("{svc}-blue")),
            Some(0),
            "{svc}-blue"
        );
        assert_eq!(
            stage.world.replicas(&format!("{svc}-green")).map(|r| r > 0),
            Some(true)
        );
    }
    let snapshot = &stage.world.snapshots()[0];
    assert_eq!(snapshot.outcome, Outcome::Succeeded);
    let history = stage.other(&["history", "staging"]);
    assert!(
        String::from_utf8_lossy(&history.stdout).contains("10→25→50→100, old slot scaled down"),
        "{}",
        text(&history)
    );
    assert_eq!(snapshot.rollout.as_ref().unwrap().steps.len(), 4);
}

fn stage_selectors(stage: &Stage) -> String {
    stable_selectors(stage.world.sim().kubeconfig_path(), &stage.world.namespace)
}

#[test]
fn an_error_rate_above_the_threshold_at_25_percent_aborts_and_users_are_back_within_a_second() {
    let stage = Stage::new(&traffic_yaml("[10, 25, 100]", "3s", "keep", "20s"));
    let child = stage.spawn("v2", &[]);
    // Green answers well at 10%, then errors appear at 25%.
    stage.wait_for_weights((75, 25));
    stage.sim.set("green", SlotBehaviour::failing(0.2));
    let out = finish(child);
    let report = rolled_back(&out);
    assert_eq!(
        outcomes(&report),
        vec![(10, "passed".into()), (25, "failed".into())]
    );
    let failed = failed_measurement(&report, 1);
    assert!(
        failed["reason"].as_str().unwrap().contains("error-rate"),
        "{failed}"
    );
    assert!(
        failed["metrics"][0]["value"].as_f64().unwrap() > 1.0,
        "{failed}"
    );
    let message = report["error"]["message"].as_str().unwrap();
    assert!(message.contains("analysis at 25%"), "{message}");
    assert!(message.contains("users were put back"), "{message}");
    // Users were back on blue within a second of the failing verdict.
    let decided: DateTime<Utc> = failed["at"].as_str().unwrap().parse().unwrap();
    let back = stage
        .sim
        .wait_for_weights((100, 0), Duration::from_secs(10))
        .filter(|c| c.wall >= decided)
        .expect("the route went back to blue");
    let took = back.wall - decided;
    assert!(
        took < chrono::Duration::seconds(1),
        "weights went back {took} after the verdict"
    );
    assert_eq!(stage_selectors(&stage), all_on("blue"));
    assert_eq!(stage.world.snapshots()[0].outcome, Outcome::Failed);
    let history = stage.other(&["history", "staging"]);
    assert!(
        String::from_utf8_lossy(&history.stdout).contains("10→25 failed"),
        "{}",
        text(&history)
    );
}

#[test]
fn no_traffic_on_the_new_slot_holds_the_step_then_aborts() {
    let stage = Stage::new(&traffic_yaml("[25, 100]", "2s", "keep", "4s"));
    // Nobody reaches green: no samples, so no verdict.
    stage.sim.starve("green", true);
    let started = Instant::now();
    let out = stage.deploy("v2", &[]);
    let report = rolled_back(&out);
    assert_eq!(outcomes(&report), vec![(25, "no_verdict".into())]);
    let step = &steps(&report)[0];
    let measurements = step["measurements"].as_array().unwrap();
    assert!(
        measurements.len() >= 2,
        "held and measured more than once: {step}"
    );
    assert!(
        measurements.iter().all(|m| m["verdict"] == "inconclusive"),
        "{step}"
    );
    // It held past the pause (2 s) up to the bound (4 s more), then aborted.
    let held: DateTime<Utc> = step["ended_at"].as_str().unwrap().parse().unwrap();
    let began: DateTime<Utc> = step["started_at"].as_str().unwrap().parse().unwrap();
    assert!(held - began >= chrono::Duration::seconds(6), "{step}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let message = report["error"]["message"].as_str().unwrap();
    assert!(message.contains("no traffic is not success"), "{message}");
    assert_eq!(stage.world.weights("api"), Some((100, 0)));
}

#[test]
fn a_latency_regression_relative_to_the_old_slot_aborts() {
    let stage = Stage::new(&traffic_yaml("[25, 100]", "3s", "keep", "20s"));
    // 300 ms is well under the 1000 ms ceiling, but six times blue's 50 ms.
    stage.sim.set("green", SlotBehaviour::slow(300.0));
    let out = stage.deploy("v2", &[]);
    let report = rolled_back(&out);
    assert_eq!(outcomes(&report), vec![(25, "failed".into())]);
    let failed = failed_measurement(&report, 0);
    let p99 = &failed["metrics"][1];
    assert_eq!(p99["verdict"], "fail", "{failed}");
    assert!(p99["value"].as_f64().unwrap() < 1000.0, "{p99}");
    assert!(
        p99["value"].as_f64().unwrap() > 1.5 * p99["old_value"].as_f64().unwrap(),
        "{p99}"
    );
    assert!(
        failed["reason"].as_str().unwrap().contains("old"),
        "{failed}"
    );
    assert_eq!(stage.world.weights("api"), Some((100, 0)));
    assert_eq!(stage_selectors(&stage), all_on("blue"));
}

#[test]
fn promote_from_a_second_terminal_finishes_a_paused_step_at_once() {
    let stage = Stage::new(&traffic_yaml("[25, 50, 100]", "10m", "keep", "20s"));
    let child = stage.spawn("v2", &[]);
    stage.wait_for_weights((75, 25));
    // Paused at 25%: the workers split as the requests do (staging runs 2:
    // one new, and the old slot keeps its share, rounded up).
    assert_eq!(stage.world.replicas("workers-green"), Some(1));
    assert_eq!(stage.world.replicas("workers-blue"), Some(2));
    // status, as a script reads it: the live run drives the rollout.
    let status = stage.other(&["status", "staging", "--output", "json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["rollout_driven"], true, "{status}");
    assert_eq!(status["rollout"]["percent"], 25, "{status}");
    assert_eq!(status["rollout"]["stage"], "step", "{status}");
    let asked = Instant::now();
    let promote = stage.other(&["promote", "staging"]);
    assert_exit(&promote, 0);
    assert!(
        String::from_utf8_lossy(&promote.stdout).contains("promoted: every user on green"),
        "{}",
        text(&promote)
    );
    let out = finish(child);
    assert!(asked.elapsed() < Duration::from_secs(60), "not paused out");
    assert_exit(&out, 0);
    let report = report(&out);
    assert_eq!(
        outcomes(&report),
        vec![(25, "promoted".into()), (100, "reached".into())]
    );
    assert_eq!(
        report["rollout"]["request"],
        "promote by tester@".to_string() + &host()
    );
    assert_eq!(stage.world.weights("api"), Some((0, 100)));
    assert_eq!(stage_selectors(&stage), all_on("green"));
    assert_eq!(stage.world.replicas("workers-green"), Some(2));
    assert_eq!(stage.world.replicas("workers-blue"), Some(0));
}

#[test]
fn status_mid_rollout_reports_the_rollout_not_drift_and_its_rerun_repeats_the_runs_flags() {
    let stage = Stage::new(&traffic_yaml("[25, 50, 100]", "10m", "keep", "20s"));
    let flags = ["--traffic-steps", "25,50,100", "--grace", "keep"];
    let mut child = stage.spawn("v2", &[&["--lock-ttl", "2s"][..], &flags[..]].concat());
    stage.wait_for_weights((75, 25));
    stage.wait_for_recorded("step 1 of 3, 25% on");

    // The run is live at 25%: status tells the rollout, not drift.
    let out = stage.other(&["status", "staging"]);
    assert_exit(&out, 0);
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status.contains("users on blue, 25% of them on green by the rollout in progress"),
        "{status}"
    );
    assert!(
        status.contains("rollout in progress: step 1 of 3, 25% on green (v2 of staging-"),
        "{status}"
    );
    assert!(
        status.contains("drift: none beside the rollout since"),
        "{status}"
    );
    assert!(!status.contains("drift from"), "{status}");
    assert!(!status.contains("Some("), "{status}");
    let json = stage.other(&["status", "staging", "--output", "json"]);
    let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["drift"], serde_json::json!([]), "{doc}");
    assert_eq!(doc["rollout_in_progress"], true, "{doc}");
    assert!(!doc.to_string().contains("Some("), "{doc}");

    // The run dies there: the rerun status suggests is the run's own
    // command line, flags and all.
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let out = stage.other(&["status", "staging"]);
    assert_exit(&out, 0);
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    let rerun = format!(
        "rerun     maily-deploy staging {} {}  (",
        stage.phases.join(" "),
        flags.join(" ")
    );
    assert!(status.contains(&rerun), "{rerun:?} in:\n{status}");
    assert!(!status.contains("drift from"), "{status}");
    assert!(!status.contains("Some("), "{status}");
}

#[test]
fn a_manual_pause_holds_each_step_until_promote_step_and_the_walk_goes_on() {
    let stage = Stage::new(&traffic_yaml("[25, 50, 100]", "manual", "keep", "20s"));
    let mut child = stage.spawn("v2", &[]);
    stage.wait_for_weights((75, 25));
    let step = stage.other(&["promote", "staging", "--step"]);
    assert_exit(&step, 0);
    assert!(
        String::from_utf8_lossy(&step.stdout).contains("moved on: step 2/3, 50% on green"),
        "{}",
        text(&step)
    );
    // Now paused at 50%, and still running: the next step is the walk's.
    stage.wait_for_weights((50, 50));
    std::thread::sleep(Duration::from_secs(1));
    assert!(child.try_wait().unwrap().is_none(), "the run goes on");
    assert_eq!(stage.world.weights("api"), Some((50, 50)));
    let promote = stage.other(&["promote", "staging"]);
    assert_exit(&promote, 0);
    let out = finish(child);
    assert_exit(&out, 0);
    assert_eq!(
        outcomes(&report(&out)),
        vec![
            (25, "advanced".into()),
            (50, "promoted".into()),
            (100, "reached".into())
        ]
    );
}

#[test]
fn abort_from_a_second_terminal_sends_users_back_and_fails_the_run() {
    let stage = Stage::new(&traffic_yaml("[25, 50, 100]", "10m", "keep", "20s"));
    let child = stage.spawn("v2", &[]);
    stage.wait_for_weights((75, 25));
    let abort = stage.other(&["abort", "staging"]);
    assert_exit(&abort, 0);
    assert!(
        String::from_utf8_lossy(&abort.stdout).contains("aborted: users are back on blue"),
        "{}",
        text(&abort)
    );
    let out = finish(child);
    let report = rolled_back(&out);
    assert_eq!(outcomes(&report), vec![(25, "aborted".into())]);
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("aborted by tester@"),
        "{report}"
    );
    assert_eq!(stage.world.weights("api"), Some((100, 0)));
    assert_eq!(stage_selectors(&stage), all_on("blue"));
    // Nothing left to act on.
    let again = stage.other(&["abort", "staging"]);
    assert_exit(&again, exit_code::USAGE);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no rollout in progress"),
        "{}",
        text(&again)
    );
}

#[test]
fn abort_of_a_run_with_no_rollback_says_users_were_left_split() {
    let stage = Stage::new(&traffic_yaml("[25, 50, 100]", "10m", "keep", "20s"));
    let child = stage.spawn("v2", &["--no-rollback"]);
    stage.wait_for_weights((75, 25));
    let abort = stage.other(&["abort", "staging"]);
    // The run fails and keeps everything as the failure found it: the
    // abort did not send users back, and says so.
    assert_exit(&abort, exit_code::PHASE_FAILED_NOT_ROLLED_BACK);
    assert!(
        text(&abort).contains("left users where the failure found them (25% on green)")
            && text(&abort).contains("rollback staging previous"),
        "{}",
        text(&abort)
    );
    let _ = finish(child);
    assert_eq!(stage.world.weights("api"), Some((75, 25)));
}

fn host() -> String {
    maily_deploy::pipeline::snapshot::Actor::current().host
}

/// Start a progressive deploy of `tag` with a short lock, wait for its
/// first step, and kill it there.
fn killed_at_first_step(stage: &Stage, tag: &str, weights: (u32, u32)) -> String {
    let mut child = stage.spawn(tag, &["--lock-ttl", "2s"]);
    stage.wait_for_weights(weights);
    // Killed mid-step: once the record has the step too.
    stage.wait_for_recorded("step 1 of 2, 25% on");
    child.kill().unwrap();
    child.wait().unwrap();
    // Its lease (2 s) outlives it; once gone, status knows the run is.
    std::thread::sleep(Duration::from_millis(2500));
    let status = stage.other(&["status", "staging"]);
    assert_exit(&status, 0);
    String::from_utf8_lossy(&status.stdout).to_string()
}

#[test]
fn after_sigkill_mid_step_status_shows_the_weights_and_every_way_out_and_each_works() {
    let stage = Stage::new(&traffic_yaml("[25, 100]", "10m", "keep", "20s"));

    // Killed at 25% on green: status says so, and lists the ways out.
    let status = killed_at_first_step(&stage, "v2", (75, 25));
    assert!(status.contains("75/25"), "{status}");
    assert!(status.contains("25% on green"), "{status}");
    for way in [
        "rerun     maily-deploy staging",
        "promote   maily-deploy promote staging",
        "abort     maily-deploy abort staging",
        "rollback  maily-deploy rollback staging",
    ] {
        assert!(status.contains(way), "{way} missing from: {status}");
    }
    // abort: users back on blue, the dead run's snapshot says why.
    let abort = stage.other(&["abort", "staging"]);
    assert_exit(&abort, 0);
    assert_eq!(stage.world.weights("api"), Some((100, 0)));
    assert_eq!(stage_selectors(&stage), all_on("blue"));
    let dead = &stage.world.snapshots()[0];
    assert_eq!(dead.outcome, Outcome::Failed);
    assert!(
        dead.failure.as_deref().unwrap().contains("aborted by"),
        "{dead:?}"
    );
    // The steps it walked before it died are kept with it.
    let walked = dead
        .rollout
        .as_ref()
        .expect("the dead run's rollout report");
    assert_eq!(walked.steps[0].percent, 25, "{walked:?}");

    // promote: every user to green, the run's snapshot succeeds.
    killed_at_first_step(&stage, "v2", (75, 25));
    let promote = stage.other(&["promote", "staging"]);
    assert_exit(&promote, 0);
    assert_eq!(stage.world.weights("api"), Some((0, 100)));
    assert_eq!(stage_selectors(&stage), all_on("green"));
    let promoted = stage.world.snapshots()[0].clone();
    assert_eq!(promoted.outcome, Outcome::Succeeded);

    // rollback: to the v2 deployment just promoted, from a v3 rollout
    // killed at 25% on blue.
    let status = killed_at_first_step(&stage, "v3", (25, 75));
    assert!(status.contains("25% on blue"), "{status}");
    let rollback = stage.other(&["rollback", "staging", promoted.deployment_id.as_str()]);
    assert_exit(&rollback, 0);
    assert_eq!(stage.world.weights("api"), Some((0, 100)));
    assert_eq!(stage_selectors(&stage), all_on("green"));
    assert_eq!(
        stage.world.image("api-green").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v2")
    );

    // rerun: a v3 rollout killed at 25%, then the same deploy again walks
    // from the start and completes.
    killed_at_first_step(&stage, "v3", (25, 75));
    let rerun = stage.deploy("v3", &["--traffic-steps", "100"]);
    assert_exit(&rerun, 0);
    assert_eq!(stage.world.weights("api"), Some((100, 0)));
    assert_eq!(stage_selectors(&stage), all_on("blue"));
    assert_eq!(
        stage.world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v3")
    );
    let outcomes: Vec<Outcome> = stage.world.snapshots().iter().map(|s| s.outcome).collect();
    assert_eq!(outcomes[0], Outcome::Succeeded, "{outcomes:?}");
    assert_eq!(
        outcomes[1],
        Outcome::Abandoned,
        "the killed v3 run: {outcomes:?}"
    );
}

/// `promote` of a dead run: a new slot that no longer runs the release is
/// refused before any change (exit 10, not 4: nothing was put back). It
/// waits for the new slot's workers before the switch; Ctrl-C there stops
/// it: the workers go back as they were, the lock is released at once, and
/// the rollout stays where the run left it, ready for the next promote or
/// abort. (A Ctrl-C used to kill the command with the workers up and its
/// lock held for a lease duration.)
#[test]
fn promote_of_a_dead_run_refused_or_stopped_by_ctrl_c_changes_nothing_and_frees_the_lock() {
    let stage = Stage::new(&traffic_yaml("[25, 100]", "10m", "keep", "20s"));
    killed_at_first_step(&stage, "v2", (75, 25));
    let kubectl = |args: &[&str]| {
        let out = stage
            .world
            .sim()
            .kubectl()
            .args(args)
            .args(["-n", &stage.world.namespace])
            .output()
            .unwrap();
        assert!(out.status.success(), "kubectl {args:?}: {out:?}");
    };

    // The new slot no longer runs the release: promote refuses before any
    // change, and holds no lock after.
    kubectl(&[
        "set",
        "image",
        "deployment/api-green",
        "api=registry.example.invalid/maily/maily-api:hotfix",
    ]);
    let refused = stage.other(&["promote", "staging"]);
    assert_exit(&refused, exit_code::REFUSED);
    assert!(
        text(&refused).contains("does not run v2 for api"),
        "{}",
        text(&refused)
    );
    assert_eq!(stage.world.weights("api"), Some((75, 25)));
    assert_eq!(stage.world.lease_holder(), None);
    kubectl(&[
        "set",
        "image",
        "deployment/api-green",
        "api=registry.example.invalid/maily/maily-api:v2",
    ]);

    // An operator scaled the new slot's workers down while the run was
    // dead, and new ones now take a minute to be ready.
    stage
        .world
        .sim()
        .control()
        .set_image_fault("*/maily-workers:v2", kubesim::ImageFault::Slow(60.0));
    kubectl(&["scale", "deployment/workers-green", "--replicas=0"]);
    let workers_before = stage.world.replicas("workers-green");
    assert_eq!(workers_before, Some(0));

    let promote = stage
        .world
        .process()
        .arg("--manifests-dir")
        .arg(&stage.manifests)
        .args(["promote", "staging"])
        .arg("--env-file")
        .arg(stage.env("v2"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting_since = Instant::now();
    while stage.world.replicas("workers-green") == workers_before {
        assert!(
            waiting_since.elapsed() < Duration::from_secs(60),
            "promote never scaled the workers up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let sent = std::process::Command::new("kill")
        .args(["-INT", &promote.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = promote.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::INTERRUPTED),
        "Ctrl-C during promote: {stderr}"
    );
    assert!(
        stderr.contains("interrupted by SIGINT during the wait for green's workers"),
        "{stderr}"
    );
    assert!(stderr.contains("promote or abort again"), "{stderr}");
    // Nothing moved, and nothing is held.
    assert_eq!(stage.world.replicas("workers-green"), workers_before);
    assert_eq!(stage.world.weights("api"), Some((75, 25)));
    assert_eq!(stage.world.lease_holder(), None, "the lock was left held");
    assert_eq!(stage.world.snapshots()[0].outcome, Outcome::InProgress);

    // The way out works at once.
    let abort = stage.other(&["abort", "staging"]);
    assert_exit(&abort, 0);
    assert_eq!(stage.world.weights("api"), Some((100, 0)));
    assert_eq!(stage_selectors(&stage), all_on("blue"));
}

/// A step an error ends (here the rollout record can no longer be read,
/// so no promote or abort could reach the run) is `stopped` in the report,
/// with its end time: not `running`, as if the walk still went on.
#[test]
fn a_step_an_error_ends_is_reported_stopped() {
    let stage = Stage::new(&traffic_yaml("[25, 100]", "10m", "keep", "20s"));
    let child = stage.spawn("v2", &[]);
    stage.wait_for_weights((75, 25));
    stage
        .world
        .sim()
        .control()
        .add_api_fault(kubesim::ApiFault::always(
            Some("get"),
            Some("configmaps"),
            403,
        ));
    let out = finish(child);
    stage.world.sim().control().clear_api_faults();
    assert!(
        out.status.code() != Some(0),
        "the run went on without its record: {}",
        text(&out)
    );
    let walked = steps(&report(&out));
    assert_eq!(walked.len(), 1, "{walked:?}");
    assert_eq!(walked[0]["outcome"], "stopped", "{walked:?}");
    assert!(walked[0]["ended_at"].is_string(), "{walked:?}");
}

/// A run killed at 25% that built the frontend, with Vercel's token a
/// `vault:` reference in the env file the next commands read; `serve`
/// sets the token Vault answers.
struct DeadWithFrontend {
    stage: Stage,
    vercel: support::vercel::Stub,
    vault: wiremock::MockServer,
    /// The Vercel deployment the run built.
    built: String,
}

const VAULT_TOKEN: &str = "hvs.promote-test-token-31";

impl DeadWithFrontend {
    fn new() -> DeadWithFrontend {
        let mut stage = Stage::new(&traffic_yaml("[25, 100]", "10m", "keep", "20s"));
        let vercel = support::vercel::stub(&stage.world, Some("dpl_old"));
        stage.extra_vars = vercel.vars();
        stage.phases = WITH_FRONTEND;
        killed_at_first_step(&stage, "v2", (75, 25));
        let built: Vec<String> = vercel.vercel.state().deployments.keys().cloned().collect();
        let [built] = &built[..] else {
            panic!("the dead run built the frontend once: {built:?}")
        };
        let built = built.clone();
        let vault = stage.world.rt.block_on(wiremock::MockServer::start());
        stage.extra_vars.retain(|(name, _)| *name != "VERCEL_TOKEN");
        stage.extra_vars.extend([
            (
                "VERCEL_TOKEN",
                "vault:secret/maily/staging#vercel_token".to_string(),
            ),
            ("VAULT_ADDR", vault.uri()),
            ("VAULT_TOKEN", VAULT_TOKEN.to_string()),
        ]);
        DeadWithFrontend {
            stage,
            vercel,
            vault,
            built,
        }
    }

    fn serve(&self, vercel_token: &str) {
        self.stage.world.rt.block_on(async {
            self.vault.reset().await;
            support::vault::serve(
                "secret/data/maily/staging",
                VAULT_TOKEN,
                serde_json::json!({"vercel_token": vercel_token}),
            )
            .mount(&self.vault)
            .await;
        })
    }
}

/// `promote` of a dead run that built the frontend: Vercel's token is
/// resolved from Vault as the run resolved it, and whether Vercel takes it
/// is asked before the switch. A token it refuses stops the promote with
/// nothing moved (exit 10); the right one moves backend and frontend
/// together. (The promote used to send the reference itself to Vercel
/// after switching every user, and leave them on the new backend with the
/// old frontend.)
#[test]
fn promote_of_a_dead_run_checks_the_frontend_can_follow_before_the_switch() {
    let dead = DeadWithFrontend::new();
    let stage = &dead.stage;
    dead.serve("vercel-token-revoked-0042");
    let refused = stage.other(&["promote", "staging"]);
    assert_exit(&refused, exit_code::REFUSED);
    let said = text(&refused);
    assert!(
        said.contains("Vercel does not let this token read the project prj_maily"),
        "{said}"
    );
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(!said.contains("vercel-token-revoked-0042"), "{said}");
    assert_eq!(stage.world.weights("api"), Some((75, 25)));
    assert_eq!(stage_selectors(stage), all_on("blue"));
    assert!(dead.vercel.vercel.promotions().is_empty());
    assert_eq!(stage.world.lease_holder(), None);
    assert_eq!(stage.world.snapshots()[0].outcome, Outcome::InProgress);

    dead.serve(support::vercel::TOKEN);
    let promoted = stage.other(&["promote", "staging"]);
    assert_exit(&promoted, 0);
    assert_eq!(stage.world.weights("api"), Some((0, 100)));
    assert_eq!(dead.vercel.vercel.promotions(), vec![dead.built.clone()]);
    assert_eq!(
        dead.vercel.vercel.state().production.as_deref(),
        Some(dead.built.as_str())
    );
    assert_eq!(stage.world.snapshots()[0].outcome, Outcome::Succeeded);
}

/// Vercel refuses the promotion itself, after the switch: everything goes
/// back where the run found it, as a failing run would put it (exit 4),
/// never the new backend behind the old frontend.
#[test]
fn a_frontend_that_cannot_follow_a_dead_runs_promote_puts_every_user_back() {
    let dead = DeadWithFrontend::new();
    let stage = &dead.stage;
    dead.serve(support::vercel::TOKEN);
    dead.vercel.vercel.state().refuse_promotion = vec![dead.built.clone()];
    let out = stage.other(&["promote", "staging"]);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    let said = text(&out);
    assert!(
        said.contains("the frontend did not follow the switch"),
        "{said}"
    );
    assert!(said.contains("every user is back where the run"), "{said}");
    assert_eq!(stage.world.weights("api"), Some((100, 0)));
    assert_eq!(stage_selectors(stage), all_on("blue"));
    assert_eq!(
        dead.vercel.vercel.state().production.as_deref(),
        Some("dpl_old")
    );
    assert_eq!(stage.world.lease_holder(), None);
    let snapshot = &stage.world.snapshots()[0];
    assert_eq!(snapshot.outcome, Outcome::Failed);
    assert!(
        snapshot
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("the frontend did not follow")),
        "{snapshot:?}"
    );
}

#[test]
fn the_frontend_is_promoted_when_the_backend_reaches_100_percent_and_not_before() {
    let mut stage = Stage::new(&traffic_yaml("[25, 100]", "10m", "keep", "20s"));
    let vercel = support::vercel::stub(&stage.world, Some("dpl_old"));
    stage.extra_vars = vercel.vars();
    stage.phases = WITH_FRONTEND;
    let child = stage.spawn("v2", &[]);
    stage.wait_for_weights((75, 25));
    // A quarter of users on the new backend: the frontend is built, not
    // promoted; production still serves the old one.
    std::thread::sleep(Duration::from_millis(500));
    assert!(vercel.vercel.promotions().is_empty(), "promoted at 25%");
    assert_eq!(vercel.vercel.state().production.as_deref(), Some("dpl_old"));
    let promote = stage.other(&["promote", "staging"]);
    assert_exit(&promote, 0);
    let out = finish(child);
    assert_exit(&out, 0);
    let promotions = vercel.vercel.promotions();
    assert_eq!(promotions.len(), 1, "{promotions:?}");
    assert_ne!(promotions[0], "dpl_old");
    assert_eq!(
        vercel.vercel.state().production.as_deref(),
        Some(promotions[0].as_str())
    );
    support::vercel::assert_clean(&vercel);
    assert_eq!(stage.world.weights("api"), Some((0, 100)));
}

#[test]
fn in_ci_the_progress_is_plain_lines_with_the_step_weights_and_live_metrics() {
    let stage = Stage::new(&traffic_yaml("[25, 100]", "3s", "keep", "20s"));
    stage.sim.set("green", SlotBehaviour::failing(0.5));
    let out = stage
        .command("v2", &["--output", "human"])
        .env("CI", "true")
        .output()
        .unwrap();
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("shift-traffic: step 1/2: 25% on green (weights blue 75 / green 25)"),
        "{stdout}"
    );
    let live = stdout
        .lines()
        .find(|l| l.contains("shift-traffic: 25%: error-rate") && l.contains("FAIL"))
        .unwrap_or_else(|| panic!("a line with the live metrics: {stdout}"));
    assert!(live.contains("p99-latency"), "{live}");
    assert!(live.contains("samples (min 20)"), "{live}");
    assert!(live.contains("FAIL"), "{live}");
    assert!(
        !stdout.contains('\u{1b}'),
        "no control codes in CI: {stdout}"
    );
    // The snapshot keeps the steps for `history` and later reading.
    let rollout = stage.world.snapshots()[0].rollout.clone().unwrap();
    assert_eq!(rollout.steps[0].outcome, StepOutcome::Failed);
}

#[test]
fn on_a_terminal_the_spinner_shows_the_step_the_clock_and_the_live_metrics() {
    let stage = Stage::new(&traffic_yaml("[25, 100]", "5s", "keep", "20s"));
    // The deploy's command line, run by `script` on a pseudo-terminal.
    let cmd = stage.command("v2", &["--output", "human"]);
    let mut line = vec![cmd.get_program().to_string_lossy().to_string()];
    line.extend(cmd.get_args().map(|a| a.to_string_lossy().to_string()));
    let quoted: Vec<String> = line.iter().map(|a| format!("'{a}'")).collect();
    let out = std::process::Command::new("script")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", stage.world.dir.path())
        .env("USER", "tester")
        .env("TERM", "xterm")
        .current_dir(repo())
        .args(["-qefc", &quoted.join(" "), "/dev/null"])
        .output()
        .expect("script (util-linux) runs");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    // The spinner's line: the step, the clock through the pause, and once
    // measured, the metrics; redrawn in place with control codes.
    assert!(screen.contains('\u{1b}'), "a live display: {screen}");
    assert!(
        screen.contains("step 1/2: 25% on green · pausing"),
        "{screen}"
    );
    assert!(screen.contains("error-rate 0 % (≤ 1 %)"), "{screen}");
    // Events are printed above it.
    assert!(
        screen.contains("shift-traffic: step 2/2: 100% on green"),
        "{screen}"
    );
}

#[test]
fn during_the_grace_period_an_abort_is_one_route_change_back_to_the_warm_old_slot() {
    let stage = Stage::new(&traffic_yaml("[50, 100]", "2s", "10m", "20s"));
    let child = stage.spawn("v2", &[]);
    // Everyone on green; blue still scaled, waiting out its grace.
    stage.wait_for_weights((0, 100));
    std::thread::sleep(Duration::from_millis(500));
    for svc in HTTP {
        assert!(
            stage.world.replicas(&format!("{svc}-blue")).unwrap() > 0,
            "{svc}-blue is kept warm"
        );
    }
    let abort = stage.other(&["abort", "staging"]);
    assert_exit(&abort, 0);
    let report = rolled_back(&finish(child));
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("during the grace period"),
        "{report}"
    );
    assert_eq!(stage.world.weights("api"), Some((100, 0)));
    assert_eq!(stage_selectors(&stage), all_on("blue"));
    assert_eq!(report["rollout"]["grace_period"]["scaled_down"], false);
}

/// A switch at once (`--traffic-steps 100`) pauses nowhere: only a step
/// below 100% holds for the profile's pause, so the report says 0, not the
/// profile's 30 s.
#[test]
fn a_switch_at_once_reports_no_pause() {
    let world = World::new(Duration::from_millis(200));
    assert_exit(&world.deploy("v1", &[]), exit_code::SUCCESS);
    let out = world.deploy("v2", &["--traffic-steps", "100", "--output", "json"]);
    assert_exit(&out, exit_code::SUCCESS);
    let rollout = &report(&out)["rollout"];
    assert_eq!(
        rollout["planned_steps"],
        serde_json::json!([100]),
        "{rollout}"
    );
    assert_eq!(rollout["pause_seconds"], 0, "{rollout}");
    assert_eq!(world.selected_slot("api").as_deref(), Some("green"));
}
