//! The three non-apply PATCH flavours: JSON merge patch (RFC 7386), strategic
//! merge patch (lists merged by their key, `$patch: delete`), and JSON patch
//! (RFC 6902). Pure functions over JSON values.

use crate::fields::item_segments;
use crate::schema::{Node, PatchStrategy};
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};

/// The patch content types PATCH accepts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or("").trim();
        match ct {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchKind::Apply)
            }
            _ => None,
        }
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let t = target.as_object_mut().expect("just made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Strategic merge patch, the part of it that clients use: maps merge, lists
/// whose schema (`node`) has a patch merge key merge item by item, an item
/// with `$patch: delete` is removed, `$patch: replace` replaces, lists of
/// scalars with the merge strategy (finalizers) take the patch's new
/// values, other lists replace.
pub fn strategic_merge(target: &mut Value, patch: &Value, node: &Node) {
    match patch {
        Value::Object(p) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                *target = strip_directives(patch);
                return;
            }
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("just made an object");
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                } else {
                    let child = t.entry(k.clone()).or_insert(Value::Null);
                    strategic_merge(child, v, node.field(k));
                }
            }
        }
        Value::Array(items) => {
            let existing: Vec<Value> = target.as_array().cloned().unwrap_or_default();
            let all_objects = items.iter().chain(existing.iter()).all(Value::is_object);
            let merge_key = match &node.patch {
                PatchStrategy::Merge { key, .. } if target.is_array() => Some(key.as_deref()),
                _ => None,
            };
            match merge_key {
                Some(Some(key)) if all_objects => {
                    let t = target.as_array_mut().expect("checked");
                    for item in items {
                        let pos = t.iter().position(|x| x.get(key) == item.get(key));
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(i), true) => {
                                t.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => strategic_merge(&mut t[i], item, node.item()),
                            (None, false) => t.push(strip_directives(item)),
                        }
                    }
                }
                Some(None) if !items.iter().any(Value::is_object) => {
                    let t = target.as_array_mut().expect("checked");
                    for item in items {
                        if !t.contains(item) {
                            t.push(item.clone());
                        }
                    }
                }
                _ => {
                    *target = Value::Array(
                        items
                            .iter()
                            .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
                            .map(strip_directives)
                            .collect(),
                    )
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// RFC 6902 JSON patch; the error text goes into a 422 Invalid.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &ops).map_err(|e| e.to_string())
}

/// The merge that server-side apply does before pruning: maps merge
/// (atomic ones are replaced), keyed lists and sets merge item by item
/// (items the applier omits stay; pruning decides about them), everything
/// else takes the applied value. `node` is the schema at this place.
pub fn apply_merge(live: &mut Value, applied: &Value, node: &Node) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if !node.atomic_map => {
            for (k, v) in a {
                match l.get_mut(k) {
                    Some(existing) => apply_merge(existing, v, node.field(k)),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => {
            let (lr, ar): (Vec<&Value>, Vec<&Value>) = (l.iter().collect(), a.iter().collect());
            match (item_segments(node, &lr), item_segments(node, &ar)) {
                (Some(lsegs), Some(asegs)) => *l = merge_items(l, &lsegs, a, &asegs, node),
                _ => *l = a.clone(),
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// A keyed list merged as structured-merge-diff merges it (`visitListItems`),
/// which decides the order: live items the applier does not name keep their
/// place, the applied ones come in the applied order, an applied item that
/// is new goes after the live item it follows in the applied list.
fn merge_items(
    lhs: &[Value],
    lsegs: &[String],
    rhs: &[Value],
    rsegs: &[String],
    node: &Node,
) -> Vec<Value> {
    let observed_lhs: HashMap<&str, &Value> =
        lsegs.iter().map(String::as_str).zip(lhs).rev().collect();
    let observed_rhs: HashSet<&str> = rsegs.iter().map(String::as_str).collect();
    let mut shared: VecDeque<&str> = rsegs
        .iter()
        .map(String::as_str)
        .filter(|s| observed_lhs.contains_key(s))
        .collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs: HashSet<&str> = HashSet::new();
    let merge_item = |l: Option<&Value>, r: &Value| match l {
        Some(l) => {
            let mut out = l.clone();
            apply_merge(&mut out, r, node.item());
            out
        }
        None => r.clone(),
    };
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            let pe = lsegs[li].as_str();
            if pe == rsegs[ri] {
                merged_rhs.insert(pe);
                out.push(merge_item(Some(&lhs[li]), &rhs[ri]));
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if observed_rhs.contains(pe) && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() {
            let pe = lsegs[li].as_str();
            if !observed_rhs.contains(pe) {
                out.push(lhs[li].clone());
                li += 1;
                continue;
            } else if merged_rhs.contains(pe) {
                li += 1;
                continue;
            }
        }
        if ri < rhs.len() {
            let pe = rsegs[ri].as_str();
            merged_rhs.insert(pe);
            out.push(merge_item(observed_lhs.get(pe).copied(), &rhs[ri]));
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_null_deletes_and_lists_replace() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 9}, "l": [3]}));
        assert_eq!(t, json!({"b": {"c": 9, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_merges_containers_and_env_by_name() {
        let mut t = json!({"spec": {"containers": [
            {"name": "web", "image": "a:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "s:1"}]}});
        strategic_merge(
            &mut t,
            &json!({"spec": {"containers": [{"name": "web", "image": "a:2",
                "env": [{"name": "B", "value": "2"}]}]}}),
            &crate::schema::builtin("", "Pod"),
        );
        let cs = t["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "a:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["image"], "s:1");
    }

    #[test]
    fn strategic_merge_deletes_an_item_by_directive() {
        let mut t = json!({"spec": {"ports": [{"port": 80}, {"port": 443}]}});
        strategic_merge(
            &mut t,
            &json!({"spec": {"ports": [{"port": 80, "$patch": "delete"}]}}),
            &crate::schema::builtin("", "Service"),
        );
        assert_eq!(t, json!({"spec": {"ports": [{"port": 443}]}}));
    }

    #[test]
    fn strategic_merge_follows_the_patch_merge_key_and_replaces_other_lists() {
        let svc = crate::schema::builtin("", "Service");
        // The patch merge key of Service ports is the port alone.
        let mut t = json!({"spec": {"ports": [{"port": 53, "protocol": "UDP", "name": "dns"}],
            "externalIPs": ["10.0.0.1"]}, "metadata": {"finalizers": ["a"]}});
        strategic_merge(
            &mut t,
            &json!({"spec": {"ports": [{"port": 53, "protocol": "TCP"}], "externalIPs": ["10.0.0.2"]},
                "metadata": {"finalizers": ["b", "a"]}}),
            &svc,
        );
        assert_eq!(
            t,
            json!({"spec": {"ports": [{"port": 53, "protocol": "TCP", "name": "dns"}],
                "externalIPs": ["10.0.0.2"]}, "metadata": {"finalizers": ["a", "b"]}})
        );
        // A CRD's lists have no merge key: replaced.
        let mut t = json!({"spec": {"parentRefs": [{"name": "a"}]}});
        strategic_merge(
            &mut t,
            &json!({"spec": {"parentRefs": [{"name": "b"}]}}),
            &crate::schema::Node::default(),
        );
        assert_eq!(t, json!({"spec": {"parentRefs": [{"name": "b"}]}}));
    }

    #[test]
    fn apply_merges_keyed_lists_in_structured_merge_diffs_order() {
        let svc = crate::schema::builtin("", "Service");
        let ports = |names: &[(&str, u16)]| {
            json!({"spec": {"ports": names.iter()
                .map(|(n, p)| json!({"name": n, "port": p})).collect::<Vec<_>>()}})
        };
        let names = |v: &Value| -> Vec<String> {
            v["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect()
        };
        // As kube-apiserver v1.34 answered: live a, c, b; applied c, a, d.
        let mut live = ports(&[("a", 80), ("c", 82), ("b", 81)]);
        apply_merge(&mut live, &ports(&[("c", 82), ("a", 80), ("d", 83)]), &svc);
        assert_eq!(names(&live), ["c", "b", "a", "d"]);
        let mut live = ports(&[("a", 80), ("c", 82)]);
        apply_merge(&mut live, &ports(&[("b", 81)]), &svc);
        assert_eq!(names(&live), ["a", "c", "b"]);
        // The same port with another protocol is another item.
        let mut live = json!({"spec": {"ports": [{"port": 53, "name": "tcp"}], "selector": {"a": "1", "b": "2"}}});
        apply_merge(
            &mut live,
            &json!({"spec": {"ports": [{"port": 53, "protocol": "UDP", "name": "udp"}], "selector": {"a": "1"}}}),
            &svc,
        );
        assert_eq!(
            live,
            json!({"spec": {"ports": [{"port": 53, "name": "tcp"}, {"port": 53, "protocol": "UDP", "name": "udp"}],
                "selector": {"a": "1"}}}),
            "ports merged, the atomic selector replaced"
        );
    }

    #[test]
    fn json_patch_applies_and_reports_a_failed_test() {
        let mut t = json!({"spec": {"replicas": 1}});
        json_patch(
            &mut t,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
        )
        .unwrap();
        assert_eq!(t["spec"]["replicas"], 3);
        assert!(
            json_patch(
                &mut t,
                &json!([{"op": "test", "path": "/spec/replicas", "value": 1}])
            )
            .is_err()
        );
    }

    #[test]
    fn content_types_map_to_kinds() {
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml; charset=utf-8"),
            Some(PatchKind::Apply)
        );
        assert_eq!(PatchKind::from_content_type("text/plain"), None);
    }
}
