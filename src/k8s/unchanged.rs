//! Which objects a server-side apply would leave as they are.
//!
//! A routine deploy re-renders every object of a slot, but between two
//! releases usually only the Deployments change: the slot's Services,
//! ServiceAccounts, disruption budgets and autoscalers are what they were.
//! Writing them again costs a request each (four of five requests per
//! service at 500 services) and changes nothing, so they are skipped, as
//! Argo CD and Helm skip objects whose manifests did not change.
//!
//! An object is skipped only when both hold:
//! - the live object carries the hash of exactly what is applied now
//!   (`maily.ai/applied`, stamped on every apply): a field dropped from the
//!   manifests changes the hash, so the apply that removes it still runs;
//! - every value the tool sets is the live value: a hand edit (`kubectl
//!   edit`, `kubectl scale`) is drift, and the apply that overwrites it
//!   still runs.
//!
//! Anything else, and any doubt (no hash, a value the server normalised, a
//! list that fails), applies as before. Secrets are never stamped or
//! skipped: a hash of a secret's data is no business of an annotation.

use kube::api::DynamicObject;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::apply::FIELD_MANAGER;

/// The annotation that carries the hash of what was last applied.
pub const APPLIED: &str = "maily.ai/applied";

/// Whether `obj` takes part: everything but Secrets.
pub fn skippable(obj: &DynamicObject) -> bool {
    obj.types.as_ref().is_none_or(|t| t.kind != "Secret")
}

/// Stamps `obj` with the hash of what it applies (before the stamp).
pub fn stamp(obj: &mut DynamicObject) {
    if !skippable(obj) {
        return;
    }
    if let Some(a) = obj.metadata.annotations.as_mut() {
        a.remove(APPLIED);
        if a.is_empty() {
            obj.metadata.annotations = None;
        }
    }
    let hash = hash_of(obj);
    obj.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED.into(), hash);
}

/// The hash of an object as JSON: serde_json's maps are ordered by key, so
/// equal objects hash alike whatever order the manifests wrote them in.
fn hash_of(obj: &DynamicObject) -> String {
    let bytes = serde_json::to_vec(obj).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    format!("sha256:{}", &hex::encode(digest)[..32])
}

/// Whether applying the stamped `desired` would change nothing on `live`.
pub fn unchanged(desired: &DynamicObject, live: &DynamicObject) -> bool {
    if !skippable(desired) {
        return false;
    }
    let stamp = |o: &DynamicObject| {
        o.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED))
            .cloned()
    };
    let ours = live.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")
    });
    let wanted = stamp(desired);
    if wanted.is_none() || wanted != stamp(live) || !ours {
        return false;
    }
    let (Ok(mut want), Ok(have)) = (serde_json::to_value(desired), serde_json::to_value(live))
    else {
        return false;
    };
    // The items of a list carry no apiVersion and kind on a real API
    // server: the list said them, and the caller listed the right kind.
    if let Some(w) = want.as_object_mut() {
        w.remove("apiVersion");
        w.remove("kind");
    }
    holds(&want, &have)
}

/// Whether every value in `want` is in `have` at the same place; lists
/// item by item (a list the server grew or reordered is a change).
fn holds(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w.iter().all(|(k, v)| {
            h.get(k).is_some_and(|x| holds(v, x)) || (v.is_null() && h.get(k).is_none())
        }),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| holds(a, b))
        }
        (w, h) => w == h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    fn service(port: i64) -> DynamicObject {
        object(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api-blue", "namespace": "maily",
                "labels": {"app.kubernetes.io/name": "api", "maily.ai/slot": "blue"}},
            "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": "api"},
                "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]}
        }))
    }

    /// What the API server answers after applying `desired`: the same
    /// values, defaults and server fields added, our Apply entry recorded.
    fn as_stored(desired: &DynamicObject) -> DynamicObject {
        let mut v = serde_json::to_value(desired).unwrap();
        v["metadata"]["uid"] = json!("6c1f0e2e-0000-4000-8000-000000000001");
        v["metadata"]["resourceVersion"] = json!("4711");
        v["metadata"]["creationTimestamp"] = json!("2026-11-30T12:00:00Z");
        v["metadata"]["managedFields"] = json!([{
            "manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "v1",
            "time": "2026-11-30T12:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:type": {}}}
        }]);
        v["spec"]["clusterIP"] = json!("10.96.0.17");
        v["spec"]["sessionAffinity"] = json!("None");
        v["status"] = json!({"loadBalancer": {}});
        object(v)
    }

    fn stamped(mut o: DynamicObject) -> DynamicObject {
        stamp(&mut o);
        o
    }

    #[test]
    fn the_same_manifest_on_the_stored_object_is_unchanged() {
        let desired = stamped(service(80));
        assert!(unchanged(&desired, &as_stored(&desired)));
        // Stamping twice gives the same hash: the stamp is not hashed.
        assert_eq!(
            stamped(desired.clone()).metadata.annotations,
            desired.metadata.annotations
        );
    }

    #[test]
    fn an_item_of_a_list_without_apiversion_and_kind_is_compared_too() {
        let desired = stamped(service(80));
        let mut listed = as_stored(&desired);
        listed.types = None;
        assert!(unchanged(&desired, &listed));
    }

    #[test]
    fn a_new_value_or_a_dropped_field_is_a_change() {
        let live = as_stored(&stamped(service(80)));
        assert!(!unchanged(&stamped(service(81)), &live));
        let mut fewer = service(80);
        fewer
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove("maily.ai/slot");
        // The live object has every value of `fewer`, but the apply would
        // remove the label: the hash tells.
        assert!(!unchanged(&stamped(fewer), &live));
    }

    #[test]
    fn a_hand_edit_is_drift_to_overwrite() {
        let desired = stamped(service(80));
        let mut live = serde_json::to_value(as_stored(&desired)).unwrap();
        live["spec"]["ports"][0]["port"] = json!(8080);
        assert!(!unchanged(&desired, &object(live.clone())));
        live["spec"]["ports"][0]["port"] = json!(80);
        live["spec"]["ports"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "debug", "port": 9000}));
        assert!(!unchanged(&desired, &object(live)));
    }

    #[test]
    fn an_object_without_our_stamp_or_our_apply_is_applied() {
        let desired = stamped(service(80));
        let mut unstamped = as_stored(&service(80));
        unstamped.metadata.annotations = None;
        assert!(!unchanged(&desired, &unstamped));
        let mut foreign = as_stored(&desired);
        foreign.metadata.managed_fields = None;
        assert!(!unchanged(&desired, &foreign));
    }

    #[test]
    fn secrets_are_never_stamped_nor_skipped() {
        let mut secret = object(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "maily-platform-secrets", "namespace": "maily"},
            "stringData": {"OPENAI_API_KEY": "sk-not-a-real-key"}
        }));
        stamp(&mut secret);
        assert!(secret.metadata.annotations.is_none());
        assert!(!unchanged(&secret, &as_stored(&secret)));
    }
}
