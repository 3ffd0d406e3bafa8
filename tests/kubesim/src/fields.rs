//! Field paths and field sets, the vocabulary of `managedFields` (FieldsV1).
//!
//! A path is a list of FieldsV1 segments: `f:spec`, `f:containers`,
//! `k:{"name":"web"}` (a keyed list's item), `v:"example.com/f"` (a set's
//! value). A field set holds leaf paths (scalars, atomic lists and maps,
//! empty maps) and the paths of keyed list items and set values, so that a
//! manager can own a list item as a whole (the `.` entry in FieldsV1).
//! Which lists are keyed, by what, and which maps are atomic is the kind's
//! schema's say ([`crate::schema`]); every walk here follows it.

use crate::schema::{self, ListType, Node};
use serde_json::{Value, json};
use std::collections::BTreeSet;

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// The FieldsV1 segments of a list's items as the schema at `node` tells
/// them apart (`k:{"port":80,"protocol":"TCP"}` for a map, `v:"x"` for a
/// set), or None when the list is atomic: by the schema, or because its
/// items do not fit it (a keyed list of non-objects).
pub fn item_segments(node: &Node, items: &[&Value]) -> Option<Vec<String>> {
    match &node.list {
        ListType::Atomic => None,
        ListType::Map(keys) => items
            .iter()
            .map(|item| {
                item.is_object()
                    .then(|| format!("k:{}", Value::Object(schema::item_key(keys, item))))
            })
            .collect(),
        ListType::Set => items
            .iter()
            .map(|item| (!item.is_object() && !item.is_array()).then(|| format!("v:{item}")))
            .collect(),
    }
}

fn segments_of(node: &Node, items: &[Value]) -> Option<Vec<String>> {
    item_segments(node, &items.iter().collect::<Vec<_>>())
}

fn walk(v: &Value, node: &Node, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() && !node.atomic_map => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                walk(child, node.field(k), path, out);
                path.pop();
            }
        }
        Value::Array(items) => match segments_of(node, items) {
            Some(segs) => items
                .iter()
                .zip(segs)
                .for_each(|(item, seg)| walk_item(seg, item, node.item(), path, out)),
            None => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The paths of a keyed list item: the item itself and what it sets.
fn walk_item(seg: String, item: &Value, node: &Node, path: &mut Path, out: &mut FieldSet) {
    path.push(seg);
    out.insert(path.clone());
    walk(item, node, path, out);
    path.pop();
}

/// The fields an object (already stripped of server-owned metadata) sets,
/// its lists and maps merged as the kind's schema `node` says.
pub fn field_set(obj: &Value, node: &Node) -> FieldSet {
    let mut out = FieldSet::new();
    walk(obj, node, &mut Vec::new(), &mut out);
    out.remove(&Vec::new());
    out
}

/// The fields `new` sets, and those of them whose value differs from
/// `old`'s (a keyed list item counts as changed when anything in it does),
/// walking all of `new`: the reference `changes` is checked against.
#[cfg(test)]
fn field_set_and_changes(old: &Value, new: &Value, node: &Node) -> (FieldSet, FieldSet) {
    let (mut set, mut changed) = (FieldSet::new(), FieldSet::new());
    set_and_changes(
        new,
        Some(old),
        node,
        &mut Vec::new(),
        &mut set,
        &mut changed,
    );
    set.remove(&Vec::new());
    changed.remove(&Vec::new());
    (set, changed)
}

/// The fields the subtree at `path` sets in `new`, and those of them whose
/// value differs from `old`'s, in one walk over both.
fn set_and_changes(
    new: &Value,
    old: Option<&Value>,
    node: &Node,
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
        Value::Object(m) if !m.is_empty() && !node.atomic_map => {
            let old = old.and_then(Value::as_object);
            for (k, child) in m {
                path.push(format!("f:{k}"));
                let o = old.and_then(|o| o.get(k));
                set_and_changes(child, o, node.field(k), path, set, changed);
                path.pop();
            }
        }
        Value::Array(items) => match segments_of(node, items) {
            Some(segs) => {
                let olds = old.and_then(Value::as_array);
                let old_segs = olds.and_then(|o| segments_of(node, o));
                for (item, seg) in items.iter().zip(segs) {
                    let before = old_segs
                        .as_ref()
                        .and_then(|o| o.iter().position(|s| *s == seg))
                        .and_then(|i| olds?.get(i));
                    path.push(seg);
                    set.insert(path.clone());
                    if before != Some(item) {
                        changed.insert(path.clone());
                    }
                    set_and_changes(item, before, node.item(), path, set, changed);
                    path.pop();
                }
            }
            None => leaf(path, set, changed),
        },
        _ => leaf(path, set, changed),
    }
}

/// What a write changed: the fields `new` sets whose value differs from
/// `old`'s (as `field_set_and_changes` finds them), and the fields `old`
/// set that `new` no longer does. Subtrees equal on both sides are not
/// walked: a controller's write changes a few fields of a big object, and
/// walking all of it twice was most of recording that write.
pub fn changes(old: &Value, new: &Value, node: &Node) -> (FieldSet, FieldSet) {
    /// Shapes differ, or a leaf changed: this subtree in full.
    fn whole(
        new: &Value,
        old: Option<&Value>,
        node: &Node,
        path: &mut Path,
        changed: &mut FieldSet,
        removed: &mut FieldSet,
    ) {
        let mut set = FieldSet::new();
        set_and_changes(new, old, node, path, &mut set, changed);
        if let Some(o) = old {
            let mut before = FieldSet::new();
            walk(o, node, path, &mut before);
            removed.extend(before.difference(&set).cloned());
        }
    }
    fn rec(
        new: &Value,
        old: Option<&Value>,
        node: &Node,
        path: &mut Path,
        changed: &mut FieldSet,
        removed: &mut FieldSet,
    ) {
        if old == Some(new) {
            return;
        }
        match (new, old) {
            (Value::Object(m), Some(Value::Object(o)))
                if !m.is_empty() && !o.is_empty() && !node.atomic_map =>
            {
                for (k, child) in m {
                    path.push(format!("f:{k}"));
                    rec(child, o.get(k), node.field(k), path, changed, removed);
                    path.pop();
                }
                for (k, gone) in o.iter().filter(|(k, _)| !m.contains_key(*k)) {
                    path.push(format!("f:{k}"));
                    walk(gone, node.field(k), path, removed);
                    path.pop();
                }
            }
            (Value::Array(items), Some(Value::Array(olds))) => {
                match (segments_of(node, items), segments_of(node, olds)) {
                    (Some(segs), Some(old_segs)) => {
                        for (item, seg) in items.iter().zip(&segs) {
                            let before = old_segs.iter().position(|s| s == seg).map(|i| &olds[i]);
                            path.push(seg.clone());
                            if before != Some(item) {
                                changed.insert(path.clone());
                            }
                            rec(item, before, node.item(), path, changed, removed);
                            path.pop();
                        }
                        for (gone, seg) in olds.iter().zip(old_segs) {
                            if !segs.contains(&seg) {
                                walk_item(seg, gone, node.item(), path, removed);
                            }
                        }
                    }
                    _ => whole(new, old, node, path, changed, removed),
                }
            }
            _ => whole(new, old, node, path, changed, removed),
        }
    }
    let (mut changed, mut removed) = (FieldSet::new(), FieldSet::new());
    rec(
        new,
        Some(old),
        node,
        &mut Vec::new(),
        &mut changed,
        &mut removed,
    );
    changed.remove(&Vec::new());
    removed.remove(&Vec::new());
    (changed, removed)
}

/// Whether `path` names a keyed list item or a set's value rather than a
/// field.
pub fn is_item(path: &Path) -> bool {
    path.last()
        .is_some_and(|s| s.starts_with("k:") || s.starts_with("v:"))
}

/// Where the item `seg` names is in a list the schema `node` describes.
fn find_item(items: &[Value], node: &Node, seg: &str) -> Option<usize> {
    segments_of(node, items)?.iter().position(|s| s == seg)
}

/// The value at `path`, if the object has one.
pub fn get<'a>(obj: &'a Value, node: &Node, path: &[String]) -> Option<&'a Value> {
    let (mut cur, mut node) = (obj, node);
    for seg in path {
        (cur, node) = if let Some(f) = seg.strip_prefix("f:") {
            (cur.as_object()?.get(f)?, node.field(f))
        } else {
            let items = cur.as_array()?;
            (&items[find_item(items, node, seg)?], node.item())
        };
    }
    Some(cur)
}

/// Removes the value at `path`; a no-op when it is not there.
pub fn remove(obj: &mut Value, node: &Node, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let (mut cur, mut node) = (obj, node);
    for seg in parent_path {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.as_object_mut()
                .and_then(|m| m.get_mut(f))
                .map(|c| (c, node.field(f)))
        } else {
            match cur.as_array_mut() {
                Some(items) => match find_item(items, node, seg) {
                    Some(i) => items.get_mut(i).map(|c| (c, node.item())),
                    None => None,
                },
                None => None,
            }
        };
        match next {
            Some(n) => (cur, node) = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(items) = cur.as_array_mut()
        && let Some(i) = find_item(items, node, last)
    {
        items.remove(i);
    }
}

/// A path as kube-apiserver prints it in conflict messages:
/// `.spec.template.spec.containers[name="web"].image`,
/// `.spec.ports[port=53,protocol="UDP"]`, `.metadata.finalizers[="f"]`.
pub fn display(path: &Path) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(v) = seg.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&seg[2..]) {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        }
    }
    s
}

/// Renders a field set as a FieldsV1 object (`{"f:spec":{"f:replicas":{}}}`).
/// A keyed item that sets fields of its own also owns itself (`.`); one
/// owned whole (an atomic item, a set's value) is a leaf, as on a real
/// server (`"k:{\"name\":\"registry\"}": {}` in `imagePullSecrets`).
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
    }
    for path in set.iter().filter(|p| is_item(p)) {
        let node = path
            .iter()
            .try_fold(&mut root, |node, seg| node.get_mut(seg.as_str()));
        if let Some(Value::Object(m)) = node
            && !m.is_empty()
        {
            m.insert(".".into(), json!({}));
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

    fn pod_schema() -> Node {
        schema::builtin("", "Pod")
    }

    #[test]
    fn containers_are_keyed_by_name_and_args_are_atomic() {
        let obj = json!({"spec": {"replicas": 2, "containers": [
            {"name": "web", "image": "a:1", "args": ["x", "y"]}]}});
        let set = field_set(&obj, &pod_schema());
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
        let obj = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["example.com/f"]},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "name": "http"}]}});
        let set = field_set(&obj, &schema::builtin("", "Service"));
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:a": {}}, "f:finalizers": {"v:\"example.com/f\"": {}}},
                "f:spec": {"f:selector": {}, "f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {
                    ".": {}, "f:name": {}, "f:port": {}}}}})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn items_are_found_by_their_key_with_defaults_filled_in() {
        let svc = schema::builtin("", "Service");
        let mut obj = json!({"spec": {"ports": [
            {"port": 53, "name": "dns"}, {"port": 53, "protocol": "UDP", "name": "dns-udp"}]}});
        let udp = p(&[
            "f:spec",
            "f:ports",
            "k:{\"port\":53,\"protocol\":\"UDP\"}",
            "f:name",
        ]);
        let tcp = p(&[
            "f:spec",
            "f:ports",
            "k:{\"port\":53,\"protocol\":\"TCP\"}",
            "f:name",
        ]);
        assert_eq!(get(&obj, &svc, &udp), Some(&json!("dns-udp")));
        assert_eq!(get(&obj, &svc, &tcp), Some(&json!("dns")));
        assert_eq!(display(&udp), ".spec.ports[port=53,protocol=\"UDP\"].name");
        remove(&mut obj, &svc, &tcp[..3]);
        assert_eq!(
            obj["spec"]["ports"],
            json!([{"port": 53, "protocol": "UDP", "name": "dns-udp"}])
        );
        let f = p(&["f:metadata", "f:finalizers", "v:\"a\""]);
        let mut obj = json!({"metadata": {"finalizers": ["a", "b"]}});
        assert_eq!(display(&f), ".metadata.finalizers[=\"a\"]");
        remove(&mut obj, &svc, &f);
        assert_eq!(obj["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn get_and_remove_follow_item_keys() {
        let mut obj = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}});
        let path = p(&["f:spec", "f:containers", "k:{\"name\":\"b\"}", "f:image"]);
        assert_eq!(get(&obj, &pod_schema(), &path), Some(&json!("2")));
        remove(&mut obj, &pod_schema(), &path[..3]);
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
        let node = pod_schema();
        for (old, new) in cases {
            let looked_up: FieldSet = field_set(&new, &node)
                .into_iter()
                .filter(|p| get(&old, &node, p) != get(&new, &node, p))
                .collect();
            assert_eq!(
                field_set_and_changes(&old, &new, &node),
                (field_set(&new, &node), looked_up),
                "{old} -> {new}"
            );
        }
    }

    #[test]
    fn a_fields_v1_lookup_agrees_with_reading_it_all() {
        let obj = json!({"metadata": {"labels": {"a": "1"}, "annotations": {}},
            "spec": {"containers": [{"name": "web", "image": "x", "ports": [{"containerPort": 80}]}]}});
        let v1 = to_fields_v1(&field_set(&obj, &pod_schema()));
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
        let mut finalized = base.clone();
        finalized["metadata"]["finalizers"] = json!(["a", "b"]);
        let mut one_finalizer = base.clone();
        one_finalizer["metadata"]["finalizers"] = json!(["b"]);
        let mut spread = base.clone();
        spread["spec"]["topologySpreadConstraints"] = json!([
            {"topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "maxSkew": 1},
            {"topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "maxSkew": 2}]);
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
            finalized,
            one_finalizer,
            spread,
            pod(
                "a:1",
                env.clone(),
                json!([{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}]),
            ),
            json!({"spec": {"containers": "not a list"}}),
            json!({"metadata": {}, "spec": null}),
        ];
        let node = pod_schema();
        for old in &variants {
            for new in &variants {
                let (new_set, changed) = field_set_and_changes(old, new, &node);
                let removed: FieldSet = field_set(old, &node)
                    .difference(&new_set)
                    .cloned()
                    .collect();
                assert_eq!(
                    changes(old, new, &node),
                    (changed, removed),
                    "{old} -> {new}"
                );
            }
        }
    }
}
