//! Field paths and field sets, the vocabulary of `managedFields` (FieldsV1).
//!
//! A path is a list of FieldsV1 segments: `f:spec`, `f:containers`,
//! `k:{"name":"web"}`. A field set holds leaf paths (scalars, atomic lists,
//! empty maps) and the paths of keyed list items, so that a manager can own a
//! list item as a whole (the `.` entry in FieldsV1).

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// Which fields identify the items of a list, as the Kubernetes schemas'
/// `x-kubernetes-list-map-keys` / `patchMergeKey` say for the lists that
/// matter here; `None` means the list is atomic (replaced whole).
///
/// Lists of objects that all carry a `name` are keyed by it: that covers
/// containers, initContainers, env, volumes, imagePullSecrets and CRD lists.
pub fn list_key(field: &str, items: &[&Value]) -> Option<&'static str> {
    let all_have = |k: &str| !items.is_empty() && items.iter().all(|i| i.get(k).is_some());
    match field {
        "ports" if all_have("containerPort") => Some("containerPort"),
        "ports" if all_have("port") => Some("port"),
        "volumeMounts" if all_have("mountPath") => Some("mountPath"),
        "volumeDevices" if all_have("devicePath") => Some("devicePath"),
        "conditions" if all_have("type") => Some("type"),
        "hostAliases" if all_have("ip") => Some("ip"),
        _ if all_have("name") && items.iter().all(|i| i["name"].is_string()) => Some("name"),
        _ => None,
    }
}

/// The FieldsV1 segment for a keyed list item.
pub fn item_segment(key: &str, item: &Value) -> String {
    let mut m = Map::new();
    m.insert(key.to_string(), item[key].clone());
    format!("k:{}", Value::Object(m))
}

fn walk(v: &Value, field: &str, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                walk(child, k, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            let refs: Vec<&Value> = items.iter().collect();
            match list_key(field, &refs) {
                Some(key) => items
                    .iter()
                    .for_each(|item| walk_item(key, item, path, out)),
                None => {
                    out.insert(path.clone());
                }
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The paths of a keyed list item: the item itself and what it sets.
fn walk_item(key: &str, item: &Value, path: &mut Path, out: &mut FieldSet) {
    path.push(item_segment(key, item));
    out.insert(path.clone());
    walk(item, "", path, out);
    path.pop();
}

/// The fields an object (already stripped of server-owned metadata) sets.
pub fn field_set(obj: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    walk(obj, "", &mut Vec::new(), &mut out);
    out.remove(&Vec::new());
    out
}

/// The fields `new` sets, and those of them whose value differs from
/// `old`'s (a keyed list item counts as changed when anything in it does),
/// walking all of `new`: the reference `changes` is checked against.
#[cfg(test)]
fn field_set_and_changes(old: &Value, new: &Value) -> (FieldSet, FieldSet) {
    let (mut set, mut changed) = (FieldSet::new(), FieldSet::new());
    set_and_changes(new, Some(old), "", &mut Vec::new(), &mut set, &mut changed);
    set.remove(&Vec::new());
    changed.remove(&Vec::new());
    (set, changed)
}

/// The fields the subtree at `path` sets in `new`, and those of them whose
/// value differs from `old`'s, in one walk over both.
fn set_and_changes(
    new: &Value,
    old: Option<&Value>,
    field: &str,
    path: &mut Path,
    set: &mut FieldSet,
    changed: &mut FieldSet,
) {
    let leaf = |path: &Path, set: &mut FieldSet, changed: &mut FieldSet| {
        set.insert(path.clone());
        if old != Some(new) {
            changed.insert(path.clone());
        }
    };
    match new {
        Value::Object(m) if !m.is_empty() => {
            let old = old.and_then(Value::as_object);
            for (k, child) in m {
                path.push(format!("f:{k}"));
                set_and_changes(child, old.and_then(|o| o.get(k)), k, path, set, changed);
                path.pop();
            }
        }
        Value::Array(items) => {
            let refs: Vec<&Value> = items.iter().collect();
            match list_key(field, &refs) {
                Some(key) => {
                    let old_items = old.and_then(Value::as_array);
                    for item in items {
                        let before =
                            old_items.and_then(|o| o.iter().find(|i| i.get(key) == item.get(key)));
                        path.push(item_segment(key, item));
                        set.insert(path.clone());
                        if before != Some(item) {
                            changed.insert(path.clone());
                        }
                        set_and_changes(item, before, "", path, set, changed);
                        path.pop();
                    }
                }
                None => leaf(path, set, changed),
            }
        }
        _ => leaf(path, set, changed),
    }
}

/// What a write changed: the fields `new` sets whose value differs from
/// `old`'s (as `field_set_and_changes` finds them), and the fields `old`
/// set that `new` no longer does. Subtrees equal on both sides are not
/// walked: a controller's write changes a few fields of a big object, and
/// walking all of it twice was most of recording that write.
pub fn changes(old: &Value, new: &Value) -> (FieldSet, FieldSet) {
    fn keyed(field: &str, items: &[Value]) -> Option<&'static str> {
        list_key(field, &items.iter().collect::<Vec<_>>())
    }
    /// Shapes differ, or a leaf changed: this subtree in full.
    fn whole(
        new: &Value,
        old: Option<&Value>,
        field: &str,
        path: &mut Path,
        changed: &mut FieldSet,
        removed: &mut FieldSet,
    ) {
        let mut set = FieldSet::new();
        set_and_changes(new, old, field, path, &mut set, changed);
        if let Some(o) = old {
            let mut before = FieldSet::new();
            walk(o, field, path, &mut before);
            removed.extend(before.difference(&set).cloned());
        }
    }
    fn rec(
        new: &Value,
        old: Option<&Value>,
        field: &str,
        path: &mut Path,
        changed: &mut FieldSet,
        removed: &mut FieldSet,
    ) {
        if old == Some(new) {
            return;
        }
        match (new, old) {
            (Value::Object(m), Some(Value::Object(o))) if !m.is_empty() && !o.is_empty() => {
                for (k, child) in m {
                    path.push(format!("f:{k}"));
                    rec(child, o.get(k), k, path, changed, removed);
                    path.pop();
                }
                for (k, gone) in o.iter().filter(|(k, _)| !m.contains_key(*k)) {
                    path.push(format!("f:{k}"));
                    walk(gone, k, path, removed);
                    path.pop();
                }
            }
            (Value::Array(items), Some(Value::Array(olds))) => {
                match (keyed(field, items), keyed(field, olds)) {
                    (Some(key), Some(was)) if key == was => {
                        for item in items {
                            let before = olds.iter().find(|i| i.get(key) == item.get(key));
                            path.push(item_segment(key, item));
                            if before != Some(item) {
                                changed.insert(path.clone());
                            }
                            rec(item, before, "", path, changed, removed);
                            path.pop();
                        }
                        let gone = olds
                            .iter()
                            .filter(|o| !items.iter().any(|i| i.get(key) == o.get(key)));
                        gone.for_each(|item| walk_item(key, item, path, removed));
                    }
                    _ => whole(new, old, field, path, changed, removed),
                }
            }
            _ => whole(new, old, field, path, changed, removed),
        }
    }
    let (mut changed, mut removed) = (FieldSet::new(), FieldSet::new());
    rec(
        new,
        Some(old),
        "",
        &mut Vec::new(),
        &mut changed,
        &mut removed,
    );
    changed.remove(&Vec::new());
    removed.remove(&Vec::new());
    (changed, removed)
}

/// Whether `path` names a keyed list item rather than a value.
pub fn is_item(path: &Path) -> bool {
    path.last().is_some_and(|s| s.starts_with("k:"))
}

fn find_item(items: &[Value], seg: &str) -> Option<usize> {
    let key: Map<String, Value> = serde_json::from_str(seg.strip_prefix("k:")?).ok()?;
    items
        .iter()
        .position(|i| key.iter().all(|(k, v)| i.get(k) == Some(v)))
}

/// The value at `path`, if the object has one.
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = if let Some(f) = seg.strip_prefix("f:") {
            cur.as_object()?.get(f)?
        } else {
            let items = cur.as_array()?;
            &items[find_item(items, seg)?]
        };
    }
    Some(cur)
}

/// Removes the value at `path`; a no-op when it is not there.
pub fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parent_path {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.as_object_mut().and_then(|m| m.get_mut(f))
        } else {
            match cur.as_array_mut() {
                Some(items) => match find_item(items, seg) {
                    Some(i) => items.get_mut(i),
                    None => None,
                },
                None => None,
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(items) = cur.as_array_mut()
        && let Some(i) = find_item(items, last)
    {
        items.remove(i);
    }
}

/// A path as kube-apiserver prints it in conflict messages:
/// `.spec.template.spec.containers[name="web"].image`.
pub fn display(path: &Path) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&seg[2..]) {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        }
    }
    s
}

/// Renders a field set as a FieldsV1 object (`{"f:spec":{"f:replicas":{}}}`).
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = json!({});
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            cur = cur
                .as_object_mut()
                .expect("FieldsV1 nodes are objects")
                .entry(seg.clone())
                .or_insert_with(|| json!({}));
        }
        if is_item(path) {
            cur.as_object_mut()
                .expect("FieldsV1 nodes are objects")
                .insert(".".into(), json!({}));
        }
    }
    root
}

/// Whether a FieldsV1 object holds `path` (as `from_fields_v1` would
/// read it), looked up without reading the rest.
pub fn fields_v1_holds(v: &Value, path: &Path) -> bool {
    let node = path.iter().try_fold(v, |node, seg| node.get(seg.as_str()));
    node.and_then(Value::as_object)
        .is_some_and(|m| !path.is_empty() && (m.is_empty() || m.contains_key(".")))
}

/// Reads a FieldsV1 object back into a field set.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn rec(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, child) in m {
            if k == "." {
                continue;
            }
            path.push(k.clone());
            rec(child, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    rec(v, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Path {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn containers_are_keyed_by_name_and_args_are_atomic() {
        let obj = json!({"spec": {"replicas": 2, "containers": [
            {"name": "web", "image": "a:1", "args": ["x", "y"]}]}});
        let set = field_set(&obj);
        assert!(set.contains(&p(&["f:spec", "f:replicas"])));
        assert!(set.contains(&p(&["f:spec", "f:containers", "k:{\"name\":\"web\"}"])));
        assert!(set.contains(&p(&[
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
            "f:image"
        ])));
        assert!(set.contains(&p(&[
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
            "f:args"
        ])));
        assert!(!set.contains(&p(&["f:spec"])));
    }

    #[test]
    fn fields_v1_round_trips() {
        let obj = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"ports": [{"port": 80, "name": "http"}]}});
        let set = field_set(&obj);
        let v1 = to_fields_v1(&set);
        assert_eq!(v1["f:spec"]["f:ports"]["k:{\"port\":80}"]["."], json!({}));
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn get_and_remove_follow_item_keys() {
        let mut obj = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}});
        let path = p(&["f:spec", "f:containers", "k:{\"name\":\"b\"}", "f:image"]);
        assert_eq!(get(&obj, &path), Some(&json!("2")));
        remove(&mut obj, &path[..3]);
        assert_eq!(obj["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(display(&path), ".spec.containers[name=\"b\"].image");
    }

    #[test]
    fn one_walk_finds_what_looking_up_each_field_finds() {
        let pod = |image: &str, env: Value, ports: Value| {
            json!({"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "web", "image": image, "env": env, "ports": ports},
                    {"name": "side", "image": "s:1"}],
                  "volumes": [], "nodeSelector": {}}})
        };
        let base = pod(
            "a:1",
            json!([{"name": "A", "value": "1"}]),
            json!([{"containerPort": 80}]),
        );
        let cases = [
            (json!({}), base.clone()),
            (base.clone(), base.clone()),
            (
                base.clone(),
                pod(
                    "a:2",
                    json!([{"name": "A", "value": "1"}]),
                    json!([{"containerPort": 80}]),
                ),
            ),
            (
                base.clone(),
                pod(
                    "a:1",
                    json!([{"name": "B", "value": "1"}, {"name": "A", "value": "2"}]),
                    json!([{"containerPort": 80}]),
                ),
            ),
            (
                base.clone(),
                pod(
                    "a:1",
                    json!([]),
                    json!([{"containerPort": 81}, {"containerPort": 80}]),
                ),
            ),
            (json!({"spec": {"containers": "not a list"}}), base.clone()),
        ];
        for (old, new) in cases {
            let looked_up: FieldSet = field_set(&new)
                .into_iter()
                .filter(|p| get(&old, p) != get(&new, p))
                .collect();
            assert_eq!(
                field_set_and_changes(&old, &new),
                (field_set(&new), looked_up),
                "{old} -> {new}"
            );
        }
    }

    #[test]
    fn a_fields_v1_lookup_agrees_with_reading_it_all() {
        let obj = json!({"metadata": {"labels": {"a": "1"}, "annotations": {}},
            "spec": {"containers": [{"name": "web", "image": "x", "ports": [{"containerPort": 80}]}]}});
        let v1 = to_fields_v1(&field_set(&obj));
        let all = from_fields_v1(&v1);
        let mut probes: Vec<Path> = all.iter().cloned().collect();
        probes.extend([
            p(&["f:metadata"]),
            p(&["f:spec", "f:containers"]),
            p(&["f:spec", "f:replicas"]),
            p(&["f:metadata", "f:labels", "f:a", "f:deeper"]),
            Vec::new(),
        ]);
        for path in probes {
            assert_eq!(fields_v1_holds(&v1, &path), all.contains(&path), "{path:?}");
        }
    }

    /// `changes` skips what is equal on both sides; it must find what the
    /// full walks of both objects find, both ways, whatever the shapes.
    #[test]
    fn the_pruned_diff_finds_what_the_full_walks_find() {
        let pod = |image: &str, env: Value, ports: Value| {
            json!({"metadata": {"labels": {"app": "web"}, "annotations": {"a": "1"}},
                "spec": {"containers": [
                    {"name": "web", "image": image, "env": env, "ports": ports},
                    {"name": "side", "image": "s:1"}],
                  "volumes": [], "nodeSelector": {}}})
        };
        let env = json!([{"name": "A", "value": "1"}]);
        let ports = json!([{"containerPort": 80}]);
        let base = pod("a:1", env.clone(), ports.clone());
        let mut annotated = base.clone();
        annotated["metadata"]["annotations"]["b"] = json!("2");
        let mut side_gone = base.clone();
        side_gone["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .pop();
        let mut selector = base.clone();
        selector["spec"]["nodeSelector"] = json!({"zone": "a"});
        let mut leaf_to_map = base.clone();
        leaf_to_map["metadata"]["labels"]["app"] = json!({"x": 1});
        let variants = [
            json!({}),
            base.clone(),
            pod("a:2", env.clone(), ports.clone()),
            pod(
                "a:1",
                json!([{"name": "B", "value": "1"}, {"name": "A", "value": "2"}]),
                ports.clone(),
            ),
            pod(
                "a:1",
                json!([]),
                json!([{"containerPort": 81}, {"containerPort": 80}]),
            ),
            pod("a:1", json!(["atomic", "now"]), ports.clone()),
            pod("a:1", env.clone(), json!([{"port": 80}])),
            annotated,
            side_gone,
            selector,
            leaf_to_map,
            json!({"spec": {"containers": "not a list"}}),
            json!({"metadata": {}, "spec": null}),
        ];
        for old in &variants {
            for new in &variants {
                let (new_set, changed) = field_set_and_changes(old, new);
                let removed: FieldSet = field_set(old).difference(&new_set).cloned().collect();
                assert_eq!(changes(old, new), (changed, removed), "{old} -> {new}");
            }
        }
    }
}
