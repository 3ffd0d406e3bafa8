//! Server-side apply and `managedFields`: who owns which field, conflicts
//! between managers, and removal of fields a manager stopped applying.
//!
//! Follows the rules of <https://kubernetes.io/docs/reference/using-api/server-side-apply/>:
//! applying a field another manager owns with a different value is a conflict
//! unless forced (then ownership moves); the same value makes the ownership
//! shared; a field the applier owned before and no longer applies is removed
//! when nobody else owns it. Non-apply writes (create, update, patch) give
//! their manager an `Update` entry owning the fields they changed.

use crate::fields::{self, FieldSet, Path};
use crate::patch::apply_merge;
use crate::schema::Node;
use serde_json::{Value, json};

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scope {
    /// The main resource; `strip_status` when a status subresource exists,
    /// because then writes to the main resource ignore `.status`.
    Main { strip_status: bool },
    /// The `status` subresource: only `.status` counts.
    Status,
}

impl Scope {
    fn subresource(self) -> Option<&'static str> {
        match self {
            Scope::Main { .. } => None,
            Scope::Status => Some("status"),
        }
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

/// A field another manager owns with a different value.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    pub manager: String,
    /// The owning entry's operation (`Apply`, `Update`), apiVersion and
    /// subresource: how the conflict names it.
    pub operation: String,
    pub api_version: String,
    pub subresource: Option<String>,
    pub path: Path,
}

const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The part of an object that field ownership is about in `scope`.
pub fn view(obj: &Value, scope: Scope) -> Value {
    match scope {
        Scope::Status => match obj.get("status") {
            Some(s) => json!({"status": s}),
            None => json!({}),
        },
        Scope::Main { strip_status } => {
            // Built from the kept parts, not cloned whole and trimmed: the
            // managedFields it drops are often the object's biggest part.
            let Some(m) = obj.as_object() else {
                return obj.clone();
            };
            let mut v = serde_json::Map::new();
            for (k, x) in m {
                match k.as_str() {
                    "apiVersion" | "kind" => {}
                    "status" if strip_status => {}
                    "metadata" => match x.as_object() {
                        Some(md) => {
                            let kept: serde_json::Map<String, Value> = md
                                .iter()
                                .filter(|(k, _)| !SERVER_METADATA.contains(&k.as_str()))
                                .map(|(k, x)| (k.clone(), x.clone()))
                                .collect();
                            if !kept.is_empty() {
                                v.insert(k.clone(), Value::Object(kept));
                            }
                        }
                        None => {
                            v.insert(k.clone(), x.clone());
                        }
                    },
                    _ => {
                        v.insert(k.clone(), x.clone());
                    }
                }
            }
            Value::Object(v)
        }
    }
}

/// Reads `metadata.managedFields`.
pub fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|entries| entries.iter().filter_map(parse_entry).collect())
        .unwrap_or_default()
}

fn parse_entry(e: &Value) -> Option<ManagedEntry> {
    Some(ManagedEntry {
        manager: e["manager"].as_str()?.to_string(),
        operation: e["operation"].as_str().unwrap_or("Update").to_string(),
        api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
        time: e["time"].as_str().unwrap_or_default().to_string(),
        subresource: e["subresource"].as_str().map(String::from),
        fields: fields::from_fields_v1(&e["fieldsV1"]),
    })
}

fn entry_json(e: &ManagedEntry) -> Value {
    let mut v = json!({
        "manager": e.manager,
        "operation": e.operation,
        "apiVersion": e.api_version,
        "time": e.time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields::to_fields_v1(&e.fields),
    });
    if let Some(s) = &e.subresource {
        v["subresource"] = json!(s);
    }
    v
}

/// Writes `metadata.managedFields`, dropping entries that own nothing.
pub fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let arr: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(entry_json)
        .collect();
    set_managed(obj, arr);
}

fn set_managed(obj: &mut Value, arr: Vec<Value>) {
    if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if arr.is_empty() {
            md.remove("managedFields");
        } else {
            md.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

fn owns_path_or_below(set: &FieldSet, p: &Path) -> bool {
    set.range(p.clone()..)
        .next()
        .is_some_and(|q| q.starts_with(p))
}

/// A write's identity in `managedFields`.
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub now: &'a str,
    pub scope: Scope,
    /// The kind's schema: how its lists and maps merge.
    pub schema: &'a Node,
}

/// Server-side apply of `applied` onto `live` (None when creating).
///
/// Returns the new object (identity metadata left as in `live`, managedFields
/// updated) or the conflicts when not forced.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    w: &Writer,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let applied_view = view(applied, w.scope);
    let new_set = fields::field_set(&applied_view, w.schema);
    let mut result = live.cloned().unwrap_or_else(|| json!({}));
    let mut entries = live.map(read_managed).unwrap_or_default();
    let sub = w.scope.subresource().map(String::from);
    let is_mine =
        |e: &ManagedEntry| e.manager == w.manager && e.operation == "Apply" && e.subresource == sub;

    let mut conflicts = Vec::new();
    if let Some(live) = live {
        for e in entries.iter().filter(|e| e.manager != w.manager) {
            for p in new_set.intersection(&e.fields) {
                if fields::is_item(p) {
                    continue;
                }
                let have = fields::get(live, w.schema, p);
                if have.is_some() && have != fields::get(&applied_view, w.schema, p) {
                    conflicts.push(Conflict {
                        manager: e.manager.clone(),
                        operation: e.operation.clone(),
                        api_version: e.api_version.clone(),
                        subresource: e.subresource.clone(),
                        path: p.clone(),
                    });
                }
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflicts);
        }
        for c in &conflicts {
            for e in entries.iter_mut().filter(|e| e.manager == c.manager) {
                e.fields.remove(&c.path);
            }
        }
    }

    apply_merge(&mut result, &applied_view, w.schema);

    let prev_set = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for p in prev_set.difference(&new_set) {
        let owned_elsewhere = entries
            .iter()
            .filter(|e| !is_mine(e))
            .any(|e| owns_path_or_below(&e.fields, p));
        if !owned_elsewhere {
            fields::remove(&mut result, w.schema, p);
        }
    }

    match entries.iter_mut().find(|e| is_mine(e)) {
        Some(e) => {
            e.fields = new_set;
            e.time = w.now.to_string();
            e.api_version = w.api_version.to_string();
        }
        None => entries.push(ManagedEntry {
            manager: w.manager.to_string(),
            operation: "Apply".into(),
            api_version: w.api_version.to_string(),
            time: w.now.to_string(),
            subresource: sub,
            fields: new_set,
        }),
    }
    if result.get("metadata").is_none() {
        result["metadata"] = json!({});
    }
    write_managed(&mut result, &entries);
    Ok(result)
}

/// Records a non-apply write (create, update, patch) in `new`'s managedFields:
/// the writer takes the fields it changed, others lose them, removed fields
/// leave every entry.
pub fn record_update(old: Option<&Value>, new: &mut Value, w: &Writer) {
    let old_view = old.map(|o| view(o, w.scope)).unwrap_or_else(|| json!({}));
    let new_view = view(new, w.scope);
    let (changed, removed) = fields::changes(&old_view, &new_view, w.schema);
    let sub = w.scope.subresource().map(String::from);
    // Only the entries that gain or lose fields are read and written again:
    // those of the written subresource that own a removed field, or a
    // changed one (the writer's own Update entry takes them). The others
    // stay as stored, unparsed: re-reading and re-writing a Deployment's
    // whole spec entry for each controller write was most of a controller
    // pass at 500 services.
    let touched = |e: &Value| {
        let held = |set: &FieldSet| {
            set.iter()
                .any(|p| fields::fields_v1_holds(&e["fieldsV1"], p))
        };
        let own_update =
            e["manager"] == w.manager && e["operation"].as_str().unwrap_or("Update") == "Update";
        (own_update && !changed.is_empty()) || held(&removed) || (!own_update && held(&changed))
    };
    enum Entry {
        Kept(Value),
        Open(ManagedEntry),
    }
    // The stored entries, moved out of `new` when it carries them
    // unchanged (a controller's copy of the object), else copied from `old`.
    let stored = old.and_then(|o| o["metadata"]["managedFields"].as_array());
    let raw: Vec<Value> = match (stored, new["metadata"]["managedFields"].take()) {
        (Some(s), Value::Array(mine)) if *s == mine => mine,
        (Some(s), _) => s.clone(),
        (None, _) => Vec::new(),
    };
    let mut entries: Vec<Entry> = raw
        .into_iter()
        .filter(|e| e["manager"].is_string())
        .map(
            |e| match e["subresource"].as_str() == sub.as_deref() && touched(&e) {
                true => parse_entry(&e).map_or(Entry::Kept(e), Entry::Open),
                false => Entry::Kept(e),
            },
        )
        .collect();
    for e in entries.iter_mut() {
        let Entry::Open(e) = e else { continue };
        e.fields.retain(|p| !removed.contains(p));
        if !(e.manager == w.manager && e.operation == "Update") {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find_map(|e| match e {
            Entry::Open(e) if e.manager == w.manager && e.operation == "Update" => Some(e),
            _ => None,
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = w.now.to_string();
            }
            None => entries.push(Entry::Open(ManagedEntry {
                manager: w.manager.to_string(),
                operation: "Update".into(),
                api_version: w.api_version.to_string(),
                time: w.now.to_string(),
                subresource: sub,
                fields: changed,
            })),
        }
    }
    let arr = entries
        .into_iter()
        .filter_map(|e| match e {
            Entry::Kept(v) => Some(v),
            Entry::Open(e) => (!e.fields.is_empty()).then(|| entry_json(&e)),
        })
        .collect();
    set_managed(new, arr);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    static DEPLOYMENT: LazyLock<Node> =
        LazyLock::new(|| crate::schema::builtin("apps", "Deployment"));

    fn w(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "apps/v1",
            now: "2026-01-01T00:00:00Z",
            scope: Scope::Main { strip_status: true },
            schema: &DEPLOYMENT,
        }
    }

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn applying_another_managers_field_with_a_new_value_conflicts() {
        let live = apply(None, &deploy(1, "a:1"), &w("alice"), false).unwrap();
        let err = apply(Some(&live), &deploy(3, "a:1"), &w("bob"), false).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].manager, "alice");
        assert_eq!(fields::display(&err[0].path), ".spec.replicas");
    }

    #[test]
    fn forcing_takes_ownership_and_the_same_value_is_shared() {
        let live = apply(None, &deploy(1, "a:1"), &w("alice"), false).unwrap();
        let forced = apply(Some(&live), &deploy(3, "a:1"), &w("bob"), true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let entries = read_managed(&forced);
        let alice = entries.iter().find(|e| e.manager == "alice").unwrap();
        let replicas: Path = vec!["f:spec".into(), "f:replicas".into()];
        assert!(!alice.fields.contains(&replicas));
        let image = entries
            .iter()
            .filter(|e| e.fields.iter().any(|p| p.last().unwrap() == "f:image"));
        assert_eq!(image.count(), 2, "both apply the same image: shared");
    }

    #[test]
    fn a_field_no_longer_applied_is_removed() {
        let mut first = deploy(1, "a:1");
        first["metadata"]["labels"] = json!({"keep": "1", "drop": "1"});
        let live = apply(None, &first, &w("alice"), false).unwrap();
        let mut second = deploy(1, "a:1");
        second["metadata"]["labels"] = json!({"keep": "1"});
        let out = apply(Some(&live), &second, &w("alice"), false).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"keep": "1"}));
    }

    #[test]
    fn a_field_still_owned_by_another_manager_stays() {
        let live = apply(None, &deploy(1, "a:1"), &w("alice"), false).unwrap();
        let live = apply(Some(&live), &deploy(1, "a:1"), &w("bob"), false).unwrap();
        let mut less = deploy(1, "a:1");
        less["spec"].as_object_mut().unwrap().remove("replicas");
        let out = apply(Some(&live), &less, &w("alice"), false).unwrap();
        assert_eq!(out["spec"]["replicas"], 1);
    }

    #[test]
    fn another_managers_item_survives_on_a_keyed_list_and_not_on_an_atomic_one() {
        let with = |env: Value, args: Value| {
            let mut d = deploy(1, "a:1");
            d["spec"]["template"]["spec"]["containers"][0]["env"] = env;
            d["spec"]["template"]["spec"]["containers"][0]["args"] = args;
            d
        };
        let mine = with(json!([{"name": "A", "value": "1"}]), json!(["--serve"]));
        let live = apply(None, &mine, &w("alice"), false).unwrap();
        let theirs = with(
            json!([{"name": "B", "value": "2"}]),
            json!(["--serve", "--debug"]),
        );
        let live = apply(Some(&live), &theirs, &w("bob"), true).unwrap();
        let again = apply(Some(&live), &mine, &w("alice"), true).unwrap();
        let c = &again["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(c["args"], json!(["--serve"]));
    }

    #[test]
    fn an_update_takes_the_fields_it_changed() {
        let live = apply(None, &deploy(1, "a:1"), &w("alice"), false).unwrap();
        let mut new = live.clone();
        new["spec"]["replicas"] = json!(5);
        record_update(Some(&live), &mut new, &w("kubectl-scale"));
        let entries = read_managed(&new);
        let scaler = entries
            .iter()
            .find(|e| e.manager == "kubectl-scale")
            .unwrap();
        assert_eq!(scaler.operation, "Update");
        assert_eq!(scaler.fields.len(), 1);
        let again = apply(Some(&new), &deploy(1, "a:1"), &w("alice"), false).unwrap_err();
        assert_eq!(again[0].manager, "kubectl-scale");
    }

    #[test]
    fn a_status_write_leaves_the_main_entries_as_stored() {
        let live = apply(None, &deploy(1, "a:1"), &w("alice"), false).unwrap();
        let status_writer = |m| Writer {
            scope: Scope::Status,
            ..w(m)
        };
        let mut first = live.clone();
        first["status"] = json!({"replicas": 1});
        record_update(Some(&live), &mut first, &status_writer("controller"));
        let mut second = first.clone();
        second["status"] = json!({"replicas": 1, "readyReplicas": 1});
        record_update(Some(&first), &mut second, &status_writer("controller"));

        let entries = read_managed(&second);
        let alice = entries.iter().find(|e| e.manager == "alice").unwrap();
        assert_eq!(
            alice.fields,
            read_managed(&live)[0].fields,
            "the spec's owner keeps exactly its fields"
        );
        let controller = entries.iter().find(|e| e.manager == "controller").unwrap();
        assert_eq!(controller.subresource.as_deref(), Some("status"));
        let owned: Vec<String> = controller.fields.iter().map(fields::display).collect();
        assert_eq!(owned, [".status.readyReplicas", ".status.replicas"]);

        // The caller's copy carried other entries: the stored ones win.
        let mut forged = first.clone();
        forged["metadata"]["managedFields"] = json!([]);
        forged["status"] = json!({"replicas": 2});
        record_update(Some(&first), &mut forged, &status_writer("controller"));
        assert!(read_managed(&forged).iter().any(|e| e.manager == "alice"));
    }
}
