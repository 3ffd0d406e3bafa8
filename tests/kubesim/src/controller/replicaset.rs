//! The ReplicaSet controller: as many pods as `.spec.replicas`, and the
//! counts of ready and available ones in `.status`.

use super::{Controller, MANAGER, Types, by_owner, ctx, md, owned, owner_ref, pod, terminating};
use crate::store::{Propagation, Store, random_suffix};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

impl Controller {
    pub(super) fn replicasets(&mut self, store: &mut Store, t: &Types) {
        let av = t.pod.api_version();
        let pods = by_owner(&store.all_of(&t.pod.key()));
        for rs in store.all_of(&t.rs.key()) {
            let (ns, uid) = (md(&rs, "namespace").to_string(), md(&rs, "uid").to_string());
            let mut mine: Vec<&Arc<Value>> = owned(&pods, &ns, &uid)
                .filter(|p| !terminating(p))
                .collect();
            let want = rs["spec"]["replicas"].as_i64().unwrap_or(0).max(0) as usize;
            if terminating(&rs) {
                continue;
            }
            if mine.len() < want {
                for _ in mine.len()..want {
                    let mut spec = rs["spec"]["template"]["spec"].clone();
                    spec["nodeName"] = json!("kubesim-node");
                    let pod = json!({
                        "metadata": {
                            "name": format!("{}-{}", md(&rs, "name"), random_suffix(5)),
                            "namespace": ns,
                            "labels": rs["spec"]["template"]["metadata"]["labels"],
                            "annotations": rs["spec"]["template"]["metadata"]["annotations"],
                            "ownerReferences": [owner_ref(&rs, &t.rs)],
                        },
                        "spec": spec,
                    });
                    match store.create(&t.pod, &ns, pod, &ctx(&av, false)) {
                        Ok(p) => {
                            self.pod_born.insert(
                                md(&p, "uid").to_string(),
                                (Instant::now(), chrono::Utc::now()),
                            );
                        }
                        Err(e) => tracing::debug!("creating a pod failed: {}", e.message),
                    }
                }
            } else if mine.len() > want {
                // Not-ready pods go first, then the newest (as the ReplicaSet controller ranks them).
                mine.sort_by_key(|p| {
                    (
                        pod::is_ready(p),
                        std::cmp::Reverse(md(p, "creationTimestamp").to_string()),
                    )
                });
                for p in &mine[..mine.len() - want] {
                    let _ = store.delete(&t.pod, &ns, md(p, "name"), Propagation::Background);
                }
            }
        }
    }

    pub(super) fn replicaset_status(&mut self, store: &mut Store, t: &Types) {
        let pods = by_owner(&store.all_of(&t.pod.key()));
        for rs in store.all_of(&t.rs.key()) {
            let (ns, uid) = (md(&rs, "namespace"), md(&rs, "uid"));
            let mine: Vec<&Arc<Value>> =
                owned(&pods, ns, uid).filter(|p| !terminating(p)).collect();
            let ready = mine.iter().filter(|p| pod::is_ready(p)).count();
            let status = json!({
                "replicas": mine.len(),
                "fullyLabeledReplicas": mine.len(),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"]["generation"],
            });
            Self::write_status(store, &t.rs, &rs, status, MANAGER);
        }
    }
}
