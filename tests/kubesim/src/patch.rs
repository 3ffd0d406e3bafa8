//! The three non-apply PATCH flavours: JSON merge patch (RFC 7386), strategic
//! merge patch (lists merged by their key, `$patch: delete`), and JSON patch
//! (RFC 6902). Pure functions over JSON values.

use crate::fields::list_key;
use serde_json::Value;

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
/// with a merge key (see `fields::list_key`) merge item by item, an item with
/// `$patch: delete` is removed, `$patch: replace` replaces, other lists replace.
pub fn strategic_merge(target: &mut Value, patch: &Value, field: &str) {
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
                    strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v, k);
                }
            }
        }
        Value::Array(items) => {
            let existing: Vec<Value> = target.as_array().cloned().unwrap_or_default();
            let all: Vec<&Value> = items.iter().chain(existing.iter()).collect();
            match list_key(field, &all) {
                Some(key) if target.is_array() => {
                    let t = target.as_array_mut().expect("checked");
                    for item in items {
                        let pos = t.iter().position(|x| x.get(key) == item.get(key));
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(i), true) => {
                                t.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => strategic_merge(&mut t[i], item, ""),
                            (None, false) => t.push(strip_directives(item)),
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

/// The merge that server-side apply does before pruning: maps merge, keyed
/// lists merge item by item (items the applier omits stay; pruning decides
/// about them), everything else takes the applied value.
pub fn apply_merge(live: &mut Value, applied: &Value, field: &str) {
    match (live.is_object(), applied) {
        (true, Value::Object(a)) => {
            let l = live.as_object_mut().expect("checked");
            for (k, v) in a {
                match l.get_mut(k) {
                    Some(existing) => apply_merge(existing, v, k),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => {
            if let (Some(l), Some(a)) = (live.as_array(), applied.as_array()) {
                let all: Vec<&Value> = a.iter().chain(l.iter()).collect();
                if let Some(key) = list_key(field, &all) {
                    let l = live.as_array_mut().expect("checked");
                    for item in a {
                        match l.iter().position(|x| x.get(key) == item.get(key)) {
                            Some(i) => apply_merge(&mut l[i], item, ""),
                            None => l.push(item.clone()),
                        }
                    }
                    return;
                }
            }
            *live = applied.clone();
        }
    }
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
            "",
        );
        let cs = t["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "a:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["image"], "s:1");
    }

    #[test]
    fn strategic_merge_deletes_an_item_by_directive() {
        let mut t = json!({"ports": [{"port": 80}, {"port": 443}]});
        strategic_merge(
            &mut t,
            &json!({"ports": [{"port": 80, "$patch": "delete"}]}),
            "",
        );
        assert_eq!(t, json!({"ports": [{"port": 443}]}));
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
