//! The Job controller: one pod at a time until `completions` succeed
//! (Complete) or more than `backoffLimit` fail (Failed).

use super::{Controller, MANAGER, Types, ctx, md, owned_by, owner_ref, pod, terminating};
use crate::store::{Store, now_rfc3339, random_suffix};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

impl Controller {
    pub(super) fn jobs(&mut self, store: &mut Store, t: &Types) {
        let av = t.pod.api_version();
        let pods = store.all_of(&t.pod.key());
        let now = now_rfc3339();
        for job in store.all_of(&t.job.key()) {
            let finished = job["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
                })
            });
            if finished || terminating(&job) {
                continue;
            }
            let (ns, uid) = (
                md(&job, "namespace").to_string(),
                md(&job, "uid").to_string(),
            );
            let mine: Vec<&Arc<Value>> = pods
                .iter()
                .filter(|p| md(p, "namespace") == ns && owned_by(p, &uid))
                .collect();
            let phase = |p: &Value| {
                p["status"]["phase"]
                    .as_str()
                    .unwrap_or("Pending")
                    .to_string()
            };
            let succeeded = mine.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
            let failed = mine.iter().filter(|p| phase(p) == "Failed").count() as i64;
            let active = mine.len() as i64 - succeeded - failed;
            let completions = job["spec"]["completions"].as_i64().unwrap_or(1);
            let backoff_limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
            let mut status = job["status"].clone();
            if !status.is_object() {
                status = json!({});
            }
            if status["startTime"].is_null() {
                status["startTime"] = json!(now);
            }
            status["succeeded"] = json!(succeeded);
            status["failed"] = json!(failed);
            status["active"] = json!(active);
            status["ready"] = json!(mine.iter().filter(|p| pod::is_ready(p)).count());
            status["terminating"] = json!(0);
            let cond = |kind: &str, reason: &str, msg: &str| {
                json!({"type": kind, "status": "True", "reason": reason, "message": msg,
                    "lastProbeTime": now, "lastTransitionTime": now})
            };
            if succeeded >= completions {
                status["active"] = json!(0);
                status["completionTime"] = json!(now);
                status["conditions"] = json!([
                    cond(
                        "SuccessCriteriaMet",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods"
                    ),
                    cond(
                        "Complete",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods"
                    ),
                ]);
            } else if failed > backoff_limit {
                status["active"] = json!(0);
                status["conditions"] = json!([
                    cond(
                        "FailureTarget",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit"
                    ),
                    cond(
                        "Failed",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit"
                    ),
                ]);
            } else if active == 0 {
                let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
                if !labels.is_object() {
                    labels = json!({});
                }
                labels["job-name"] = json!(md(&job, "name"));
                labels["batch.kubernetes.io/job-name"] = json!(md(&job, "name"));
                labels["controller-uid"] = json!(uid);
                labels["batch.kubernetes.io/controller-uid"] = json!(uid);
                let mut spec = job["spec"]["template"]["spec"].clone();
                spec["nodeName"] = json!("kubesim-node");
                let pod = json!({"metadata": {
                        "name": format!("{}-{}", md(&job, "name"), random_suffix(5)),
                        "namespace": ns, "labels": labels,
                        "ownerReferences": [owner_ref(&job, &t.job)]},
                    "spec": spec});
                if let Ok(p) = store.create(&t.pod, &ns, pod, &ctx(&av, false)) {
                    self.pod_born.insert(
                        md(&p, "uid").to_string(),
                        (Instant::now(), chrono::Utc::now()),
                    );
                    status["active"] = json!(1);
                }
            }
            let old = job["status"].clone();
            let mut cmp_old = old.clone();
            let mut cmp_new = status.clone();
            for v in [&mut cmp_old, &mut cmp_new] {
                if let Some(m) = v.as_object_mut() {
                    m.remove("startTime");
                }
            }
            if cmp_old != cmp_new || old["startTime"].is_null() {
                Self::write_status(store, &t.job, &job, status, MANAGER);
            }
        }
    }
}
