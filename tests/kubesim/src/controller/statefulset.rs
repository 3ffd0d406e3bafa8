//! StatefulSets, status only: every replica is reported ready at once.

use super::{Controller, MANAGER, Types, deployment, md};
use crate::store::Store;
use serde_json::json;

impl Controller {
    pub(super) fn statefulsets(&mut self, store: &mut Store, t: &Types) {
        for s in store.all_of(&t.sts.key()) {
            let n = s["spec"]["replicas"].as_i64().unwrap_or(1);
            let rev = format!(
                "{}-{}",
                md(&s, "name"),
                deployment::template_hash(&s["spec"]["template"])
            );
            let status = json!({"observedGeneration": s["metadata"]["generation"], "replicas": n,
                "readyReplicas": n, "currentReplicas": n, "updatedReplicas": n, "availableReplicas": n,
                "currentRevision": rev, "updateRevision": rev, "collisionCount": 0});
            Self::write_status(store, &t.sts, &s, status, MANAGER);
        }
    }
}
