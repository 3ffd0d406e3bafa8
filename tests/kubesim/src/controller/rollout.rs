//! The Deployment controller's effects: ReplicaSets per template, scaling
//! them for the rollout, and the Deployment's status. Decisions are in
//! `deployment`.

use super::{
    Controller, MANAGER, Types, by_owner, ctx, deployment, md, owned, owner_ref, record_event,
    revision, terminating,
};
use crate::store::{Propagation, Store, now_rfc3339};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Controller {
    pub(super) fn deployments(&mut self, store: &mut Store, t: &Types) {
        let av = t.rs.api_version();
        let sets = by_owner(&store.all_of(&t.rs.key()));
        for d in store.all_of(&t.deploy.key()) {
            // A paused Deployment does not roll (kubectl rollout pause).
            if terminating(&d) || deployment::is_paused(&d) {
                continue;
            }
            let (ns, uid) = (md(&d, "namespace").to_string(), md(&d, "uid").to_string());
            let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
            // What the controller writes into ReplicaSets it creates or
            // scales: desired-replicas and max-replicas (desired + maxSurge).
            let max_replicas = desired
                + if d["spec"]["strategy"]["type"] == "Recreate" {
                    0
                } else {
                    deployment::surge_and_unavailable(&d["spec"], desired).0
                };
            let hash = self.template_hash_of(&d);
            let owned: Vec<Arc<Value>> = owned(&sets, &ns, &uid).cloned().collect();
            let max_rev = owned.iter().map(|r| revision(r)).max().unwrap_or(0);
            let new = owned
                .iter()
                .find(|r| r["metadata"]["labels"]["pod-template-hash"] == hash.as_str())
                .cloned();
            let new = match new {
                Some(n) => {
                    if revision(&n) < max_rev {
                        // A rollback to an older template makes that ReplicaSet the newest revision.
                        let mut bumped = (*n).clone();
                        bumped["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                            json!((max_rev + 1).to_string());
                        bumped["metadata"]
                            .as_object_mut()
                            .map(|m| m.remove("resourceVersion"));
                        let _ = store.update_shared(
                            &t.rs,
                            &ns,
                            md(&n, "name"),
                            bumped,
                            &ctx(&av, false),
                            false,
                        );
                    }
                    n
                }
                None => {
                    let name = format!("{}-{}", md(&d, "name"), hash);
                    // Created at its first size, as the real controller
                    // does (NewRSNewReplicas): the room maxSurge leaves
                    // next to the old ReplicaSets, or everything for
                    // Recreate once the old pods are gone.
                    let old_spec: i64 = owned
                        .iter()
                        .map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0))
                        .sum();
                    let initial = if d["spec"]["strategy"]["type"] == "Recreate" {
                        let old_pods: i64 = owned
                            .iter()
                            .map(|r| r["status"]["replicas"].as_i64().unwrap_or(0))
                            .sum();
                        if old_spec == 0 && old_pods == 0 {
                            desired
                        } else {
                            0
                        }
                    } else {
                        (max_replicas - old_spec).clamp(0, desired.max(0))
                    };
                    let mut labels = d["spec"]["template"]["metadata"]["labels"].clone();
                    labels["pod-template-hash"] = json!(hash);
                    let rs = json!({
                        "metadata": {
                            "name": name, "namespace": ns, "labels": labels,
                            "annotations": {
                                "deployment.kubernetes.io/revision": (max_rev + 1).to_string(),
                                "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                                "deployment.kubernetes.io/max-replicas": max_replicas.to_string(),
                            },
                            "ownerReferences": [owner_ref(&d, &t.deploy)],
                        },
                        "spec": {
                            "replicas": initial,
                            "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                            "selector": deployment::rs_selector(&d, &hash),
                            "template": deployment::rs_template(&d, &hash),
                        },
                    });
                    match store.create(&t.rs, &ns, rs, &ctx(&av, false)) {
                        Ok(created) => {
                            self.new_rs_created.insert(uid.clone());
                            if initial > 0 {
                                record_event(
                                    store,
                                    &t.event,
                                    &d,
                                    "Deployment",
                                    "Normal",
                                    "ScalingReplicaSet",
                                    &format!("Scaled up replica set {name} from 0 to {initial}"),
                                    "deployment-controller",
                                );
                            }
                            Arc::new(created)
                        }
                        Err(e) => {
                            tracing::debug!("creating ReplicaSet {name} failed: {}", e.message);
                            continue;
                        }
                    }
                }
            };
            // The Deployment carries its current revision, as kubectl rollout undo expects.
            let rev = store
                .get(&t.rs, &ns, md(&new, "name"))
                .map(|r| revision(&r))
                .unwrap_or_else(|_| revision(&new))
                .to_string();
            if d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] != rev.as_str() {
                let mut annotated = (*d).clone();
                if !annotated["metadata"]["annotations"].is_object() {
                    annotated["metadata"]["annotations"] = json!({});
                }
                annotated["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                    json!(rev);
                if let Some(m) = annotated["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                let dav = t.deploy.api_version();
                let _ = store.update_shared(
                    &t.deploy,
                    &ns,
                    md(&d, "name"),
                    annotated,
                    &ctx(&dav, false),
                    false,
                );
            }
            let mut old: Vec<Arc<Value>> = owned
                .into_iter()
                .filter(|r| md(r, "uid") != md(&new, "uid"))
                .collect();
            old.sort_by_key(|r| revision(r));
            let counts = |r: &Value| deployment::RsCounts {
                name: md(r, "name").to_string(),
                replicas: r["spec"]["replicas"].as_i64().unwrap_or(0),
                available: r["status"]["availableReplicas"].as_i64().unwrap_or(0),
            };
            let new_c = counts(&new);
            let old_c: Vec<_> = old.iter().map(|r| counts(r)).collect();
            let (new_target, old_targets) = if d["spec"]["strategy"]["type"] == "Recreate" {
                let old_pods: i64 = old
                    .iter()
                    .map(|r| r["status"]["replicas"].as_i64().unwrap_or(0))
                    .sum();
                let old_spec: i64 = old_c.iter().map(|r| r.replicas).sum();
                let new_target = if old_spec == 0 && old_pods == 0 {
                    desired
                } else {
                    new_c.replicas
                };
                (new_target, vec![0; old_c.len()])
            } else {
                let (surge, unav) = deployment::surge_and_unavailable(&d["spec"], desired);
                deployment::rolling_step(desired, surge, unav, &new_c, &old_c)
            };
            let mut scale = |rs: &Value, target: i64| {
                let from = rs["spec"]["replicas"].as_i64().unwrap_or(0);
                if from == target {
                    return;
                }
                let mut upd = rs.clone();
                upd["spec"]["replicas"] = json!(target);
                let annotations = &mut upd["metadata"]["annotations"];
                annotations["deployment.kubernetes.io/desired-replicas"] =
                    json!(desired.to_string());
                annotations["deployment.kubernetes.io/max-replicas"] =
                    json!(max_replicas.to_string());
                if let Some(m) = upd["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                if store
                    .update(&t.rs, &ns, md(rs, "name"), upd, &ctx(&av, false), false)
                    .is_ok()
                {
                    let dir = if target > from { "up" } else { "down" };
                    let msg = format!(
                        "Scaled {dir} replica set {} from {from} to {target}",
                        md(rs, "name")
                    );
                    record_event(
                        store,
                        &t.event,
                        &d,
                        "Deployment",
                        "Normal",
                        "ScalingReplicaSet",
                        &msg,
                        "deployment-controller",
                    );
                }
            };
            scale(&new, new_target);
            for (rs, target) in old.iter().zip(old_targets) {
                scale(rs, target);
            }
            // Keep revisionHistoryLimit old ReplicaSets that are scaled to zero.
            let limit = d["spec"]["revisionHistoryLimit"]
                .as_i64()
                .unwrap_or(10)
                .max(0) as usize;
            let idle: Vec<&Arc<Value>> = old
                .iter()
                .filter(|r| {
                    r["spec"]["replicas"] == 0 && r["status"]["replicas"].as_i64().unwrap_or(0) == 0
                })
                .collect();
            if idle.len() > limit {
                for r in &idle[..idle.len() - limit] {
                    let _ = store.delete(&t.rs, &ns, md(r, "name"), Propagation::Background);
                }
            }
        }
    }

    pub(super) fn deployment_status(&mut self, store: &mut Store, t: &Types, scale: f64) {
        let all_rs = by_owner(&store.all_of(&t.rs.key()));
        let now = now_rfc3339();
        let live: HashSet<String> = store
            .all_of(&t.deploy.key())
            .iter()
            .map(|d| md(d, "uid").to_string())
            .collect();
        self.last_progress.retain(|uid, _| live.contains(uid));
        self.template_hashes.retain(|uid, _| live.contains(uid));
        for d in store.all_of(&t.deploy.key()) {
            let (ns, uid) = (md(&d, "namespace"), md(&d, "uid").to_string());
            let hash = self.template_hash_of(&d);
            let owned: Vec<&Arc<Value>> = owned(&all_rs, ns, &uid).collect();
            let paused = deployment::is_paused(&d);
            let current = owned
                .iter()
                .find(|r| r["metadata"]["labels"]["pod-template-hash"] == hash.as_str());
            // Paused with a new template, no ReplicaSet has it yet: report against the newest.
            let newest = || owned.iter().max_by_key(|r| revision(r));
            let Some(new) = current.or_else(|| if paused { newest() } else { None }) else {
                continue;
            };
            let updated = if current.is_some() {
                new["status"]["replicas"].as_i64().unwrap_or(0)
            } else {
                0
            };
            let sum = |k: &str| -> i64 {
                owned
                    .iter()
                    .map(|r| r["status"][k].as_i64().unwrap_or(0))
                    .sum()
            };
            let spec_total: i64 = owned
                .iter()
                .map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0))
                .sum();
            let created = self.new_rs_created.remove(&uid);
            let counts = json!({"replicas": sum("replicas"),
                "updatedReplicas": updated,
                "readyReplicas": sum("readyReplicas"), "availableReplicas": sum("availableReplicas")});
            let resumed = !paused && deployment::was_paused(&d);
            let progressed =
                created || resumed || deployment::has_progressed(&d["status"], &counts);
            let last = self
                .last_progress
                .entry(uid.clone())
                .or_insert_with(Instant::now);
            if progressed {
                *last = Instant::now();
            }
            let deadline = d["spec"]["progressDeadlineSeconds"]
                .as_f64()
                .unwrap_or(600.0)
                * scale;
            let last = *last;
            let watched = !paused && deployment::is_progressing(&d);
            let deadline_passed = watched && last.elapsed().as_secs_f64() > deadline;
            if watched
                && !deadline_passed
                && let Some(at) = Duration::try_from_secs_f64(deadline)
                    .ok()
                    .and_then(|d| last.checked_add(d))
            {
                self.due(at);
            }
            let status = deployment::deployment_status(&deployment::StatusInput {
                deployment: &d,
                new_rs_name: md(new, "name"),
                replicas: sum("replicas"),
                updated,
                ready: sum("readyReplicas"),
                available: sum("availableReplicas"),
                spec_total,
                new_rs_created: created,
                paused,
                deadline_passed,
                now: &now,
            });
            Self::write_status(store, &t.deploy, &d, status, MANAGER);
        }
    }
}
