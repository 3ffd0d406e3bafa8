//! The Deployment controller's decisions, after kube-controller-manager's
//! `pkg/controller/deployment`: the pod-template-hash, how far a rolling
//! update may scale the new and old ReplicaSets, and the Deployment status
//! with its Progressing and Available conditions.

use serde_json::{Map, Value, json};

/// Serialises with object keys sorted, so the hash does not depend on the
/// order in which a patch or apply happened to insert fields.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&m[*k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `pod-template-hash`: FNV-32a of the template, its decimal digits mapped
/// through the alphabet Kubernetes' `rand.SafeEncodeString` uses.
pub fn template_hash(template: &Value) -> String {
    let mut s = String::new();
    canonical(template, &mut s);
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[(b as usize) % ALPHANUMS.len()] as char)
        .collect()
}

/// Resolves an int-or-percent (`maxSurge: 25%`) against `total`.
pub fn int_or_percent(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => {
                let x = p * total;
                if round_up { (x + 99) / 100 } else { x / 100 }
            }
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// maxSurge and maxUnavailable of a RollingUpdate Deployment; never both 0.
pub fn surge_and_unavailable(spec: &Value, desired: i64) -> (i64, i64) {
    let ru = &spec["strategy"]["rollingUpdate"];
    let surge_v = if ru["maxSurge"].is_null() {
        json!("25%")
    } else {
        ru["maxSurge"].clone()
    };
    let unav_v = if ru["maxUnavailable"].is_null() {
        json!("25%")
    } else {
        ru["maxUnavailable"].clone()
    };
    let surge = int_or_percent(&surge_v, desired, true);
    let mut unavailable = int_or_percent(&unav_v, desired, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// One ReplicaSet as the rollout math sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct RsCounts {
    pub name: String,
    /// `.spec.replicas`
    pub replicas: i64,
    /// `.status.availableReplicas`
    pub available: i64,
}

/// The next `.spec.replicas` for the new ReplicaSet and each old one during
/// a rolling update: surge the new one up to `desired + maxSurge` pods in
/// all, scale old ones down while at least `desired - maxUnavailable` pods
/// stay available (unhealthy old pods go first).
pub fn rolling_step(
    desired: i64,
    surge: i64,
    unavailable: i64,
    new: &RsCounts,
    old: &[RsCounts],
) -> (i64, Vec<i64>) {
    let old_total: i64 = old.iter().map(|r| r.replicas).sum();
    let all = new.replicas + old_total;
    let new_target = if new.replicas > desired {
        desired
    } else if new.replicas < desired {
        let room = desired + surge - all;
        if room > 0 {
            (new.replicas + room).min(desired)
        } else {
            new.replicas
        }
    } else {
        new.replicas
    };

    let min_available = desired - unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let mut budget = all - min_available - new_unavailable;
    let mut targets: Vec<i64> = old.iter().map(|r| r.replicas).collect();
    if budget > 0 {
        for (i, r) in old.iter().enumerate() {
            let unhealthy = (r.replicas - r.available).max(0).min(budget);
            targets[i] -= unhealthy;
            budget -= unhealthy;
        }
    }
    let available: i64 = new.available + old.iter().map(|r| r.available).sum::<i64>();
    let mut can_remove = (available - min_available).max(0);
    for (i, r) in old.iter().enumerate() {
        let healthy_left = targets[i].min(r.available);
        let take = healthy_left.min(can_remove);
        targets[i] -= take;
        can_remove -= take;
    }
    (new_target, targets)
}

/// What the status computation needs to know about the rollout.
pub struct StatusInput<'a> {
    pub deployment: &'a Value,
    pub new_rs_name: &'a str,
    /// Sum of `.status.replicas` of all owned ReplicaSets.
    pub replicas: i64,
    pub updated: i64,
    pub ready: i64,
    pub available: i64,
    /// Sum of `.spec.replicas` of all owned ReplicaSets.
    pub spec_total: i64,
    pub new_rs_created: bool,
    /// `spec.paused`: Progressing is Unknown/DeploymentPaused and no deadline runs.
    pub paused: bool,
    /// Whether the progress deadline has passed since the last progress.
    pub deadline_passed: bool,
    pub now: &'a str,
}

fn set_condition(
    conds: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    touch: bool,
) {
    match conds.iter_mut().find(|c| c["type"] == kind) {
        Some(c) => {
            if c["status"] != status {
                c["lastTransitionTime"] = json!(now);
            }
            if c["reason"] != reason || c["message"] != message || touch {
                c["lastUpdateTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conds.push(
            json!({"type": kind, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now}),
        ),
    }
}

/// Whether the new status shows progress over the old one
/// (`deploymentutil.DeploymentProgressing`).
pub fn has_progressed(old: &Value, new: &Value) -> bool {
    let n = |v: &Value, k: &str| v[k].as_i64().unwrap_or(0);
    let old_old = n(old, "replicas") - n(old, "updatedReplicas");
    let new_old = n(new, "replicas") - n(new, "updatedReplicas");
    n(new, "updatedReplicas") > n(old, "updatedReplicas")
        || new_old < old_old
        || n(new, "readyReplicas") > n(old, "readyReplicas")
        || n(new, "availableReplicas") > n(old, "availableReplicas")
}

/// The Deployment's next `.status`.
pub fn deployment_status(i: &StatusInput) -> Value {
    let d = i.deployment;
    let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let (_, max_unavailable) = surge_and_unavailable(&d["spec"], desired);
    let old = &d["status"];
    let mut status = json!({
        "observedGeneration": d["metadata"]["generation"].as_i64().unwrap_or(1),
        "replicas": i.replicas,
        "updatedReplicas": i.updated,
        "readyReplicas": i.ready,
        "availableReplicas": i.available,
    });
    let unavailable = (i.spec_total - i.available).max(0);
    if unavailable > 0 {
        status["unavailableReplicas"] = json!(unavailable);
    }
    let mut conds: Vec<Value> = old["conditions"].as_array().cloned().unwrap_or_default();
    if i.available >= desired - max_unavailable {
        set_condition(
            &mut conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            i.now,
            false,
        );
    } else {
        set_condition(
            &mut conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            i.now,
            false,
        );
    }
    let rs = i.new_rs_name;
    let complete = i.updated == desired && i.replicas == desired && i.available == desired;
    let was_paused = conds
        .iter()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused");
    if i.paused {
        set_condition(
            &mut conds,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            i.now,
            false,
        );
    } else if was_paused {
        set_condition(
            &mut conds,
            "Progressing",
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed",
            i.now,
            true,
        );
    } else if complete {
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs}\" has successfully progressed."),
            i.now,
            false,
        );
    } else if i.new_rs_created {
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            &format!("Created new replica set \"{rs}\""),
            i.now,
            true,
        );
    } else if has_progressed(old, &status) {
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs}\" is progressing."),
            i.now,
            true,
        );
    } else if i.deadline_passed {
        set_condition(
            &mut conds,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{rs}\" has timed out progressing."),
            i.now,
            false,
        );
    } else if !conds.iter().any(|c| c["type"] == "Progressing") {
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs}\" is progressing."),
            i.now,
            true,
        );
    }
    // kube-controller-manager lists Available before Progressing.
    conds.sort_by_key(|c| if c["type"] == "Available" { 0 } else { 1 });
    status["conditions"] = Value::Array(conds);
    status
}

/// `spec.paused`.
pub fn is_paused(d: &Value) -> bool {
    d["spec"]["paused"].as_bool() == Some(true)
}

/// Whether the status still says DeploymentPaused (the resume is news).
pub fn was_paused(d: &Value) -> bool {
    d["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused")
    })
}

/// Whether the Progressing condition says the rollout is still under way
/// (so the progress deadline applies).
pub fn is_progressing(d: &Value) -> bool {
    d["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == "Progressing"
                && c["status"] == "True"
                && c["reason"] != "NewReplicaSetAvailable"
        })
    })
}

/// The template of the ReplicaSet for `hash`: the Deployment's template with
/// the `pod-template-hash` label added.
pub fn rs_template(d: &Value, hash: &str) -> Value {
    let mut t = d["spec"]["template"].clone();
    if !t["metadata"].is_object() {
        t["metadata"] = json!({});
    }
    if !t["metadata"]["labels"].is_object() {
        t["metadata"]["labels"] = json!({});
    }
    t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    t
}

/// The selector of the ReplicaSet for `hash`.
pub fn rs_selector(d: &Value, hash: &str) -> Value {
    let mut sel = d["spec"]["selector"].clone();
    if !sel["matchLabels"].is_object() {
        sel["matchLabels"] = Value::Object(Map::new());
    }
    sel["matchLabels"]["pod-template-hash"] = json!(hash);
    sel
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(name: &str, replicas: i64, available: i64) -> RsCounts {
        RsCounts {
            name: name.into(),
            replicas,
            available,
        }
    }

    #[test]
    fn the_hash_ignores_key_order_and_uses_the_safe_alphabet() {
        let a = template_hash(&json!({"a": 1, "b": {"c": 2, "d": 3}}));
        let b = template_hash(&json!({"b": {"d": 3, "c": 2}, "a": 1}));
        assert_eq!(a, b);
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(a, template_hash(&json!({"a": 2})));
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let spec =
            json!({"strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}});
        assert_eq!(surge_and_unavailable(&spec, 3), (1, 0));
        assert_eq!(surge_and_unavailable(&spec, 4), (1, 1));
        let zero = json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}});
        assert_eq!(surge_and_unavailable(&zero, 3), (0, 1));
    }

    #[test]
    fn a_rollout_surges_first_and_scales_old_down_as_new_pods_become_available() {
        // 4 desired, surge 1, unavailable 1: at most 5 pods, at least 3 available.
        let (new, old) = rolling_step(4, 1, 1, &rs("new", 0, 0), &[rs("old", 4, 4)]);
        assert_eq!(new, 1);
        assert_eq!(old, vec![3], "one old pod may go: 4 available, 3 needed");
        let (new, old) = rolling_step(4, 1, 1, &rs("new", 2, 2), &[rs("old", 3, 3)]);
        assert_eq!(new, 2, "5 pods already: no room to surge");
        assert_eq!(old, vec![1], "5 available, 3 needed: two old pods may go");
        let (new, old) = rolling_step(4, 1, 1, &rs("new", 4, 4), &[rs("old", 0, 0)]);
        assert_eq!((new, old), (4, vec![0]));
    }

    #[test]
    fn a_broken_new_replica_set_never_takes_available_pods_away() {
        // New pods never become available: old ones stay at min availability.
        let (new, old) = rolling_step(4, 1, 1, &rs("new", 2, 0), &[rs("old", 3, 3)]);
        assert_eq!(new, 2);
        assert_eq!(old, vec![3]);
    }

    #[test]
    fn a_paused_deployment_reports_paused_and_then_resumed() {
        let d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 1, "paused": true}, "status": {}});
        let mut input = StatusInput {
            deployment: &d,
            new_rs_name: "web-abc",
            replicas: 1,
            updated: 0,
            ready: 1,
            available: 1,
            spec_total: 1,
            new_rs_created: false,
            paused: true,
            deadline_passed: true,
            now: "2026-01-01T00:00:00Z",
        };
        let s = deployment_status(&input);
        let p = s["conditions"][1].clone();
        assert_eq!(
            (p["status"].as_str(), p["reason"].as_str()),
            (Some("Unknown"), Some("DeploymentPaused"))
        );
        let resumed_from =
            json!({"metadata": {"generation": 3}, "spec": {"replicas": 1}, "status": s});
        input.deployment = &resumed_from;
        input.paused = false;
        let s = deployment_status(&input);
        assert_eq!(s["conditions"][1]["reason"], "DeploymentResumed");
    }

    #[test]
    fn status_reports_progress_then_completion_then_deadline() {
        let d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": {}});
        let mut input = StatusInput {
            deployment: &d,
            new_rs_name: "web-abc",
            replicas: 2,
            updated: 2,
            ready: 2,
            available: 2,
            spec_total: 2,
            new_rs_created: false,
            paused: false,
            deadline_passed: false,
            now: "2026-01-01T00:00:00Z",
        };
        let s = deployment_status(&input);
        assert_eq!(s["conditions"][1]["reason"], "NewReplicaSetAvailable");
        assert_eq!(s["conditions"][0]["reason"], "MinimumReplicasAvailable");
        assert_eq!(s["observedGeneration"], 2);
        let stuck = json!({"metadata": {"generation": 3}, "spec": {"replicas": 2},
            "status": {"replicas": 3, "updatedReplicas": 1, "availableReplicas": 2, "readyReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}});
        input.deployment = &stuck;
        input.replicas = 3;
        input.updated = 1;
        input.deadline_passed = true;
        let s = deployment_status(&input);
        let p = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Progressing")
            .unwrap()
            .clone();
        assert_eq!(
            (p["status"].as_str(), p["reason"].as_str()),
            (Some("False"), Some("ProgressDeadlineExceeded"))
        );
        assert!(
            s.get("unavailableReplicas").is_none(),
            "2 of 2 spec replicas are available"
        );
    }
}
