//! `meta.k8s.io/v1` Table responses, which `kubectl get` asks for to print
//! its columns (a pod's STATUS shows `ImagePullBackOff` only through them).
//! Columns follow kube-apiserver's printers for the kinds tests look at.

use serde_json::{Value, json};

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn age(obj: &Value) -> String {
    let Some(ts) = obj["metadata"]["creationTimestamp"].as_str() else {
        return "<unknown>".into();
    };
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn num(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// The STATUS column of `kubectl get pods`, as kubectl's printPod computes it.
pub fn pod_status(pod: &Value) -> String {
    let mut reason = pod["status"]["reason"]
        .as_str()
        .or(pod["status"]["phase"].as_str())
        .unwrap_or("Pending")
        .to_string();
    if let Some(cs) = pod["status"]["containerStatuses"].as_array() {
        for c in cs.iter().rev() {
            if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
                reason = r.into();
            } else if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
                reason = r.into();
            }
        }
    }
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        reason = "Terminating".into();
    }
    reason
}

fn columns(kind: &str) -> Vec<(&'static str, &'static str)> {
    match kind {
        "Pod" => vec![
            ("Name", "string"),
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
            ("Age", "string"),
        ],
        "Deployment" => vec![
            ("Name", "string"),
            ("Ready", "string"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
            ("Age", "string"),
        ],
        "ReplicaSet" => vec![
            ("Name", "string"),
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
            ("Age", "string"),
        ],
        "Namespace" => vec![("Name", "string"), ("Status", "string"), ("Age", "string")],
        "Job" => vec![
            ("Name", "string"),
            ("Status", "string"),
            ("Completions", "string"),
            ("Age", "string"),
        ],
        _ => vec![("Name", "string"), ("Age", "string")],
    }
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = json!(o["metadata"]["name"]);
    let s = &o["status"];
    match kind {
        "Pod" => {
            let cs = s["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = o["spec"]["containers"].as_array().map_or(0, |c| c.len());
            let ready = cs
                .iter()
                .filter(|c| c["ready"].as_bool() == Some(true))
                .count();
            let restarts: i64 = cs.iter().map(|c| num(&c["restartCount"])).sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                json!(age(o)),
            ]
        }
        "Deployment" => vec![
            name,
            json!(format!(
                "{}/{}",
                num(&s["readyReplicas"]),
                num(&o["spec"]["replicas"])
            )),
            json!(num(&s["updatedReplicas"])),
            json!(num(&s["availableReplicas"])),
            json!(age(o)),
        ],
        "ReplicaSet" => vec![
            name,
            json!(num(&o["spec"]["replicas"])),
            json!(num(&s["replicas"])),
            json!(num(&s["readyReplicas"])),
            json!(age(o)),
        ],
        "Namespace" => vec![
            name,
            json!(s["phase"].as_str().unwrap_or("Active")),
            json!(age(o)),
        ],
        "Job" => {
            let done = s["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Complete" && c["status"] == "True")
            });
            let failed = s["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Failed" && c["status"] == "True")
            });
            let status = if done {
                "Complete"
            } else if failed {
                "Failed"
            } else {
                "Running"
            };
            vec![
                name,
                json!(status),
                json!(format!(
                    "{}/{}",
                    num(&s["succeeded"]),
                    num(&o["spec"]["completions"]).max(1)
                )),
                json!(age(o)),
            ]
        }
        _ => vec![name, json!(age(o))],
    }
}

/// A Table of `objects`; `include_object` is the `includeObject` parameter.
pub fn table(
    kind: &str,
    objects: &[&Value],
    resource_version: &str,
    include_object: &str,
) -> Value {
    let defs: Vec<Value> = columns(kind)
        .into_iter()
        .map(|(n, t)| {
            json!({"name": n, "type": t, "format": if n == "Name" { "name" } else { "" },
                "description": n, "priority": 0})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = match include_object {
                "Object" => (*o).clone(),
                "None" => Value::Null,
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}),
            };
            json!({"cells": cells(kind, o), "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_reason_is_the_pod_status() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "c", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}});
        assert_eq!(pod_status(&pod), "ImagePullBackOff");
        let t = table("Pod", &[&pod], "5", "");
        assert_eq!(t["rows"][0]["cells"][2], "ImagePullBackOff");
        assert_eq!(t["rows"][0]["cells"][1], "0/1");
    }

    #[test]
    fn kubectl_accept_header_asks_for_a_table() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
