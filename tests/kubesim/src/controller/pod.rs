//! What the kubelet reports for a pod: its status as a pure function of how
//! long it has existed, the rollout time and the image faults.

use crate::faults::{ImageFault, ImageFaultRule, image_fault};
use serde_json::{Value, json};
use std::time::Duration;

/// Inputs for one pod's status.
pub struct PodClock<'a> {
    /// Time since the pod was created.
    pub elapsed: Duration,
    /// Time to pull and start a healthy container (rollout time × time scale).
    pub unit: Duration,
    pub time_scale: f64,
    /// Wall-clock creation time, for the timestamps in the status.
    pub created: chrono::DateTime<chrono::Utc>,
    pub faults: &'a [ImageFaultRule],
    /// Pods of a Job run to completion instead of forever.
    pub runs_to_completion: bool,
    pub pod_ip: &'a str,
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn cond(kind: &str, ok: bool, at: &str, reason: Option<&str>) -> Value {
    let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" },
        "lastProbeTime": null, "lastTransitionTime": at});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

/// The pod's `.status`, as the kubelet would report it now.
pub fn pod_status(pod: &Value, clock: &PodClock) -> Value {
    let created = ts(clock.created);
    let started_at = clock.created + chrono::Duration::from_std(clock.unit).unwrap_or_default();
    let started = ts(started_at);
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let running_for = clock.elapsed.saturating_sub(clock.unit);
    let up = clock.elapsed >= clock.unit;

    let mut phase = "Running";
    let mut statuses = Vec::new();
    let mut all_ready = true;
    let mut all_done = true;
    let mut any_failed = false;
    for c in &containers {
        let name = c["name"].as_str().unwrap_or("");
        let image = c["image"].as_str().unwrap_or("");
        let fault = match image_fault(clock.faults, image) {
            // Past its flaky spell the pull works.
            Some(ImageFault::FlakyPull(secs))
                if running_for.as_secs_f64() >= secs * clock.time_scale =>
            {
                None
            }
            f => f,
        };
        let base = json!({"name": name, "image": image, "imageID": "", "containerID": ""});
        let (state, last_state, ready, restarts, started_flag) = if !up {
            all_done = false;
            (
                json!({"waiting": {"reason": "ContainerCreating"}}),
                json!({}),
                false,
                0,
                false,
            )
        } else {
            match fault {
                Some(ImageFault::ImagePullBackOff) => {
                    all_done = false;
                    phase = "Pending";
                    let st = if running_for < clock.unit {
                        json!({"waiting": {"reason": "ErrImagePull",
                            "message": format!("rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found")}})
                    } else {
                        json!({"waiting": {"reason": "ImagePullBackOff",
                            "message": format!("Back-off pulling image \"{image}\"")}})
                    };
                    (st, json!({}), false, 0, false)
                }
                Some(ImageFault::FlakyPull(_)) => {
                    all_done = false;
                    phase = "Pending";
                    let cause = format!(
                        "rpc error: code = Unknown desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": failed to do request: Head \"https://registry.example/v2/maily/manifests/latest\": dial tcp 10.96.0.20:443: i/o timeout"
                    );
                    let st = if running_for < clock.unit {
                        json!({"waiting": {"reason": "ErrImagePull", "message": cause}})
                    } else {
                        json!({"waiting": {"reason": "ImagePullBackOff",
                            "message": format!("Back-off pulling image \"{image}\": ErrImagePull: {cause}")}})
                    };
                    (st, json!({}), false, 0, false)
                }
                Some(ImageFault::CrashLoopBackOff) => {
                    // One crash per rollout unit; the count keeps rising.
                    let period = clock.unit.max(Duration::from_millis(200));
                    let restarts = 1 + (running_for.as_millis() / period.as_millis()) as i64;
                    if clock.runs_to_completion {
                        any_failed = true;
                        (
                            json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": started, "finishedAt": started}}),
                            json!({}),
                            false,
                            0,
                            false,
                        )
                    } else {
                        all_done = false;
                        (
                            json!({"waiting": {"reason": "CrashLoopBackOff",
                                "message": format!("back-off 10s restarting failed container={name} pod={pod_name}_{ns}({uid})")}}),
                            json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": started, "finishedAt": started}}),
                            false,
                            restarts,
                            false,
                        )
                    }
                }
                Some(ImageFault::NeverReady) => {
                    all_done = false;
                    (
                        json!({"running": {"startedAt": started}}),
                        json!({}),
                        false,
                        0,
                        true,
                    )
                }
                Some(ImageFault::Slow(extra)) => {
                    all_done = false;
                    let ready = running_for.as_secs_f64() >= extra * clock.time_scale;
                    (
                        json!({"running": {"startedAt": started}}),
                        json!({}),
                        ready,
                        0,
                        true,
                    )
                }
                None if clock.runs_to_completion => (
                    json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": started}}),
                    json!({}),
                    false,
                    0,
                    false,
                ),
                None => {
                    all_done = false;
                    (
                        json!({"running": {"startedAt": started}}),
                        json!({}),
                        true,
                        0,
                        true,
                    )
                }
            }
        };
        all_ready &= ready;
        let mut s = base;
        s["state"] = state;
        s["lastState"] = last_state;
        s["ready"] = json!(ready);
        s["restartCount"] = json!(restarts);
        s["started"] = json!(started_flag);
        statuses.push(s);
    }
    if !up {
        phase = "Pending";
    } else if clock.runs_to_completion && any_failed {
        phase = "Failed";
    } else if clock.runs_to_completion && all_done {
        phase = "Succeeded";
    }
    let ready = up && all_ready && !containers.is_empty() && phase == "Running";
    let not_ready = (!ready).then_some("ContainersNotReady");
    let ready_at = if ready {
        started.as_str()
    } else {
        created.as_str()
    };
    json!({
        "phase": phase,
        "conditions": [
            cond("PodReadyToStartContainers", up, &started, None),
            cond("Initialized", true, &created, None),
            cond("Ready", ready, ready_at, not_ready),
            cond("ContainersReady", ready, ready_at, not_ready),
            cond("PodScheduled", true, &created, None),
        ],
        "hostIP": "172.18.0.2",
        "hostIPs": [{"ip": "172.18.0.2"}],
        "podIP": clock.pod_ip,
        "podIPs": [{"ip": clock.pod_ip}],
        "startTime": created,
        "qosClass": "BestEffort",
        "containerStatuses": statuses,
    })
}

/// The pod's age at which [`pod_status`] will next answer differently, or
/// None when it never will by time alone (it is Running and Ready, never
/// ready, or finished). The kubelet sleeps until then instead of asking
/// again every tick.
pub fn next_change(pod: &Value, clock: &PodClock) -> Option<Duration> {
    if clock.elapsed < clock.unit {
        return Some(clock.unit);
    }
    let running_for = clock.elapsed - clock.unit;
    let containers = pod["spec"]["containers"].as_array()?;
    containers
        .iter()
        .filter_map(|c| {
            let image = c["image"].as_str().unwrap_or("");
            let after_start = match image_fault(clock.faults, image)? {
                ImageFault::ImagePullBackOff => (running_for < clock.unit).then_some(clock.unit)?,
                ImageFault::CrashLoopBackOff if !clock.runs_to_completion => {
                    // restartCount = 1 + running_for / period, in whole milliseconds.
                    let period = clock.unit.max(Duration::from_millis(200)).as_millis();
                    let next = (running_for.as_millis() / period + 1) * period;
                    Duration::from_millis(u64::try_from(next).ok()?)
                }
                ImageFault::Slow(extra) => {
                    let ready_after = Duration::try_from_secs_f64(extra * clock.time_scale).ok()?;
                    (running_for < ready_after).then_some(ready_after)?
                }
                // Back-off after the first unit, the pull working after
                // the spell.
                ImageFault::FlakyPull(secs) => {
                    let works_after = Duration::try_from_secs_f64(secs * clock.time_scale).ok()?;
                    if running_for < clock.unit.min(works_after) {
                        clock.unit.min(works_after)
                    } else {
                        (running_for < works_after).then_some(works_after)?
                    }
                }
                ImageFault::CrashLoopBackOff | ImageFault::NeverReady => return None,
            };
            clock.unit.checked_add(after_start)
        })
        .min()
}

/// The Events the kubelet records when a container's waiting reason changes
/// (reason, type, message): `Failed` on a pull error, `BackOff` on pull
/// back-off and crash loops.
pub fn transitions(
    old: &Value,
    new: &Value,
    pod_name: &str,
) -> Vec<(&'static str, &'static str, String)> {
    let waiting = |s: &Value, name: &str| -> Option<String> {
        s["containerStatuses"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)?["state"]["waiting"]["reason"]
            .as_str()
            .map(String::from)
    };
    let mut out = Vec::new();
    for c in new["containerStatuses"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("");
        let image = c["image"].as_str().unwrap_or("");
        let now = waiting(new, name);
        if now == waiting(old, name) {
            continue;
        }
        match now.as_deref() {
            // As the kubelet: the runtime's error after the image.
            Some("ErrImagePull") => out.push((
                "Failed",
                "Warning",
                format!(
                    "Failed to pull image \"{image}\": {}",
                    c["state"]["waiting"]["message"]
                        .as_str()
                        .unwrap_or("not found")
                ),
            )),
            Some("ImagePullBackOff") => out.push((
                "BackOff",
                "Warning",
                format!("Back-off pulling image \"{image}\""),
            )),
            Some("CrashLoopBackOff") => out.push((
                "BackOff",
                "Warning",
                format!("Back-off restarting failed container {name} in pod {pod_name}"),
            )),
            _ => {}
        }
    }
    out
}

/// Whether a pod counts as ready (its Ready condition is True).
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(image: &str) -> Value {
        json!({"metadata": {"name": "web-1", "namespace": "prod", "uid": "u"},
            "spec": {"containers": [{"name": "web", "image": image}]}})
    }

    fn clock(elapsed_ms: u64, faults: &[ImageFaultRule]) -> PodClock<'_> {
        PodClock {
            elapsed: Duration::from_millis(elapsed_ms),
            unit: Duration::from_millis(1000),
            time_scale: 1.0,
            created: chrono::Utc::now(),
            faults,
            runs_to_completion: false,
            pod_ip: "10.244.0.5",
        }
    }

    #[test]
    fn a_healthy_pod_is_creating_then_running_and_ready() {
        let s = pod_status(&pod("api:1"), &clock(500, &[]));
        assert_eq!(s["phase"], "Pending");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ContainerCreating"
        );
        let s = pod_status(&pod("api:1"), &clock(1500, &[]));
        assert_eq!(s["phase"], "Running");
        assert!(is_ready(&json!({"status": s})));
    }

    #[test]
    fn a_bad_image_goes_from_err_image_pull_to_image_pull_back_off() {
        let faults = vec!["*:broken-*=ImagePullBackOff".parse().unwrap()];
        let s = pod_status(&pod("api:broken-1"), &clock(1500, &faults));
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ErrImagePull"
        );
        let s = pod_status(&pod("api:broken-1"), &clock(2500, &faults));
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ImagePullBackOff"
        );
        assert_eq!(s["phase"], "Pending");
    }

    #[test]
    fn a_crash_loop_keeps_raising_restart_count() {
        let faults = vec!["*:crash-*=CrashLoopBackOff".parse().unwrap()];
        let early = pod_status(&pod("api:crash-1"), &clock(1500, &faults));
        let later = pod_status(&pod("api:crash-1"), &clock(4500, &faults));
        assert_eq!(
            later["containerStatuses"][0]["state"]["waiting"]["reason"],
            "CrashLoopBackOff"
        );
        assert!(
            later["containerStatuses"][0]["restartCount"].as_i64()
                > early["containerStatuses"][0]["restartCount"].as_i64()
        );
        assert_eq!(
            later["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
            1
        );
    }

    #[test]
    fn a_slow_image_becomes_ready_only_after_its_extra_time() {
        let faults = vec!["*:slow-*=Slow:2".parse().unwrap()];
        let s = pod_status(&pod("api:slow-1"), &clock(2500, &faults));
        assert_eq!(s["phase"], "Running");
        assert!(
            !is_ready(&json!({"status": s})),
            "1.5 s after start: not yet"
        );
        let s = pod_status(&pod("api:slow-1"), &clock(3100, &faults));
        assert!(is_ready(&json!({"status": s})), "2.1 s after start: ready");
    }

    /// Ages at which the status is looked at, around every moment a
    /// status could change for a rollout time of one second.
    fn ages() -> impl Iterator<Item = u64> {
        (0..12_000).step_by(37)
    }

    #[test]
    fn the_status_changes_exactly_when_next_change_says() {
        let faults: Vec<ImageFaultRule> = [
            "*:broken-*=ImagePullBackOff",
            "*:crash-*=CrashLoopBackOff",
            "*:unready-*=NeverReady",
            "*:slow-*=Slow:2.5",
        ]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
        let created = chrono::Utc::now();
        for image in [
            "api:1",
            "api:broken-1",
            "api:crash-1",
            "api:unready-1",
            "api:slow-1",
        ] {
            for runs_to_completion in [false, true] {
                let p = pod(image);
                let at = |ms: u64| PodClock {
                    created,
                    runs_to_completion,
                    ..clock(ms, &faults)
                };
                for age in ages() {
                    let now = pod_status(&p, &at(age));
                    match next_change(&p, &at(age)) {
                        Some(next) => {
                            let next = next.as_millis() as u64;
                            assert!(next > age, "{image}: {next} ms is not after {age} ms");
                            assert_eq!(
                                now,
                                pod_status(&p, &at(next - 1)),
                                "{image}: changed before {next} ms (looked at {age} ms)"
                            );
                            assert_ne!(
                                now,
                                pod_status(&p, &at(next)),
                                "{image}: no change at {next} ms (looked at {age} ms)"
                            );
                        }
                        None => assert_eq!(
                            now,
                            pod_status(&p, &at(age + 3_600_000)),
                            "{image}: still changes after {age} ms"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn never_ready_runs_but_is_not_ready() {
        let faults = vec!["*:unready-*=NeverReady".parse().unwrap()];
        let s = pod_status(&pod("api:unready-1"), &clock(60_000, &faults));
        assert_eq!(s["phase"], "Running");
        assert!(!is_ready(&json!({"status": s})));
    }
}
