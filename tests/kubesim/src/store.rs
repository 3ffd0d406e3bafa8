//! The object store: what etcd plus the apiserver's registry do.
//!
//! One resourceVersion counter for all objects; every write sets the server's
//! metadata (uid, resourceVersion, generation, creationTimestamp,
//! managedFields), applies defaults and validation, records one watch event
//! and keeps a bounded window of events for watches that resume from a
//! resourceVersion (older ones get 410 Gone).

use crate::admission::{apply_defaults, node, validate};
use crate::apply::{self, Scope, Writer};
use crate::patch::{self, PatchKind};
use crate::resources::{self, Registry, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use tokio::sync::{Notify, broadcast};

/// A watch event type, as the wire format spells it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, kept for watches.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub key: String,
    pub namespace: String,
    pub kind: EventType,
    pub object: Arc<Value>,
    /// The object before a MODIFIED change, so a watch with a selector can
    /// turn "stopped matching" into DELETED and "started matching" into ADDED.
    pub previous: Option<Arc<Value>>,
    /// The object serialised once, shared by every watch that sends it.
    pub(crate) json: std::sync::OnceLock<String>,
}

impl Event {
    /// The object as JSON text, computed on first use.
    pub fn object_json(&self) -> &str {
        self.json.get_or_init(|| {
            serde_json::to_string(self.object.as_ref()).expect("JSON values serialize")
        })
    }
}

/// The current time as Kubernetes prints timestamps.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A fresh UUID-shaped uid; std's random hasher keys are the entropy.
pub fn new_uid() -> String {
    let s = std::collections::hash_map::RandomState::new();
    let a = s.hash_one(1u8);
    let b = s.hash_one(2u8);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// A random suffix of `n` characters from the alphabet Kubernetes uses for
/// generated names (no vowels, no confusable digits).
pub fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = std::collections::hash_map::RandomState::new().hash_one(0u8);
    (0..n)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// Options for a list call.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// The result of a list call.
pub struct ListResult {
    pub items: Vec<Arc<Value>>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// How a delete treats dependents (ownerReferences).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Propagation {
    Background,
    Orphan,
}

/// Identity of a write for managedFields.
pub struct WriteCtx<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: Option<&'a str>,
}

type Objects = BTreeMap<(String, String), Arc<Value>>;
type ObjectIter<'a> = Box<dyn Iterator<Item = (&'a (String, String), &'a Arc<Value>)> + 'a>;

/// All objects, the resourceVersion counter and the event window.
pub struct Store {
    pub registry: Registry,
    objects: HashMap<String, Objects>,
    rv: u64,
    events: VecDeque<Arc<Event>>,
    /// The newest resourceVersion whose event is no longer retained.
    compacted_rv: u64,
    window: usize,
    tx: broadcast::Sender<Arc<Event>>,
    /// Owner uid -> the objects whose ownerReferences name it, so garbage
    /// collection does not scan every object on every delete.
    dependents: HashMap<String, BTreeSet<(String, String, String)>>,
    /// Woken on every write, so the controllers sleep while nothing changes
    /// instead of polling the whole store.
    changed: Arc<Notify>,
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

/// Whether two objects (maps) agree on every key `kept` keeps: compared
/// in place, since cloning both to strip a few keys was a tenth of a
/// controller pass at 500 services.
fn same_where(a: &Value, b: &Value, kept: impl Fn(&str) -> bool) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    a.keys().filter(|k| kept(k)).count() == b.keys().filter(|k| kept(k)).count()
        && a.iter()
            .filter(|(k, _)| kept(k))
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Whether a change from `old` to `new` bumps `metadata.generation`: a
/// change outside metadata and status.
fn generation_changes(old: &Value, new: &Value) -> bool {
    !same_where(old, new, |k| {
        !matches!(k, "metadata" | "status" | "apiVersion" | "kind")
    })
}

/// Whether two versions of an object differ only in their bookkeeping
/// (managedFields, resourceVersion).
fn same_but_bookkeeping(a: &Value, b: &Value) -> bool {
    same_where(a, b, |k| k != "metadata")
        && same_where(&a["metadata"], &b["metadata"], |k| {
            k != "managedFields" && k != "resourceVersion"
        })
}

impl Store {
    pub fn new(window: usize) -> Self {
        let (tx, _) = broadcast::channel(65_536);
        let mut s = Store {
            registry: Registry::with_builtins(),
            objects: HashMap::new(),
            rv: 1,
            events: VecDeque::new(),
            compacted_rv: 0,
            window: window.max(1),
            tx,
            dependents: HashMap::new(),
            changed: Arc::new(Notify::new()),
        };
        let ns_type = s
            .registry
            .find("", "v1", "namespaces")
            .expect("builtin")
            .clone();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            s.create(
                &ns_type,
                "",
                obj,
                &WriteCtx {
                    manager: "kube-apiserver",
                    api_version: "v1",
                    subresource: None,
                },
            )
            .expect("fresh store accepts the default namespaces");
        }
        let node_type = s.registry.find("", "v1", "nodes").expect("builtin").clone();
        s.create(
            &node_type,
            "",
            node(),
            &WriteCtx {
                manager: "kubelet",
                api_version: "v1",
                subresource: Some("status"),
            },
        )
        .expect("fresh store accepts the node");
        s
    }

    /// A copy that a `dryRun=All` write can change and throw away.
    pub fn dry_run_copy(&self) -> Store {
        let (tx, _) = broadcast::channel(16);
        Store {
            registry: self.registry.clone(),
            objects: self.objects.clone(),
            rv: self.rv,
            events: VecDeque::new(),
            compacted_rv: self.rv,
            window: self.window,
            tx,
            dependents: self.dependents.clone(),
            changed: Arc::new(Notify::new()),
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Notified after every write (one permit is kept while nobody waits,
    /// so a write between two waits is not lost).
    pub fn changes(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Forgets every retained event, so any watch resuming from an older
    /// resourceVersion gets 410 Gone (what etcd compaction does).
    ///
    /// The counter moves on by one so that a list made afterwards returns a
    /// version a watch can start from, while every version handed out
    /// before (including the last bookmark) is now too old.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.compacted_rv = self.rv;
        self.events.clear();
    }

    /// The retained events after `rv` for resource `key`, or Err when some are gone.
    pub fn events_since(&self, key: &str, rv: u64) -> Result<Vec<Arc<Event>>, ApiError> {
        if rv < self.compacted_rv {
            // Events after `rv` are (partly) gone.
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                self.compacted_rv + 1
            )));
        }
        Ok(self
            .events
            .iter()
            .filter(|e| e.rv > rv && e.key == key)
            .cloned()
            .collect())
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(
        &mut self,
        rt: &ResourceType,
        kind: EventType,
        object: Arc<Value>,
        rv: u64,
        previous: Option<Arc<Value>>,
    ) {
        let ev = Arc::new(Event {
            rv,
            key: rt.key(),
            namespace: meta_str(&object, "namespace").to_string(),
            kind,
            object,
            previous,
            json: std::sync::OnceLock::new(),
        });
        self.events.push_back(ev.clone());
        while self.events.len() > self.window {
            if let Some(old) = self.events.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
        let _ = self.tx.send(ev);
        self.changed.notify_one();
    }

    /// Keeps `dependents` in step with a write: `old` is what was stored, `new` what is.
    fn reindex(
        &mut self,
        key: &str,
        ns: &str,
        name: &str,
        old: Option<&Value>,
        new: Option<&Value>,
    ) {
        let entry = (key.to_string(), ns.to_string(), name.to_string());
        for uid in old.map(owner_uids).unwrap_or_default() {
            if let Some(set) = self.dependents.get_mut(&uid) {
                set.remove(&entry);
                if set.is_empty() {
                    self.dependents.remove(&uid);
                }
            }
        }
        for uid in new.map(owner_uids).unwrap_or_default() {
            self.dependents
                .entry(uid)
                .or_default()
                .insert(entry.clone());
        }
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .get("/namespaces")
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())))
    }

    fn check_namespace(&self, rt: &ResourceType, ns: &str) -> Result<(), ApiError> {
        if rt.namespaced && !self.namespace_exists(ns) {
            return Err(ApiError::namespace_not_found(ns));
        }
        Ok(())
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        self.objects
            .get(&rt.key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Objects of a type, optionally in one namespace, in (namespace, name) order.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListResult, ApiError> {
        let empty = Objects::new();
        let all = self.objects.get(&rt.key()).unwrap_or(&empty);
        let start: Option<(String, String)> = match &opts.continue_token {
            Some(tok) => Some(
                decode_continue(tok)
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?,
            ),
            None => None,
        };
        let range: ObjectIter = match (&start, ns) {
            (Some(s), _) => Box::new(all.range(s.clone()..).filter(move |(k, _)| k != &s)),
            (None, Some(ns)) if rt.namespaced => Box::new(
                all.range((ns.to_string(), String::new())..)
                    .take_while(move |(k, _)| k.0 == ns),
            ),
            (None, _) => Box::new(all.iter()),
        };
        let mut items = Vec::new();
        let mut last_key = None;
        let mut remaining = 0usize;
        for (k, obj) in range {
            if let Some(ns) = ns
                && rt.namespaced
                && k.0 != ns
            {
                continue;
            }
            if !opts.labels.matches_object(obj) || !opts.fields.matches(obj) {
                continue;
            }
            if opts.limit.is_some_and(|l| items.len() >= l) {
                remaining += 1;
                continue;
            }
            last_key = Some(k.clone());
            items.push(obj.clone());
        }
        let continue_token = if remaining > 0 {
            last_key.map(|k| encode_continue(&k))
        } else {
            None
        };
        Ok(ListResult {
            items,
            resource_version: self.rv,
            continue_token,
            // Unknown with a selector: kube-apiserver then leaves it out.
            remaining: (remaining > 0 && opts.labels.is_empty() && opts.fields.is_empty())
                .then_some(remaining),
        })
    }

    /// Creates an object; `generateName` is honoured.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        w: &WriteCtx,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if obj["metadata"].is_null() {
            obj["metadata"] = json!({});
        }
        let mut name = meta_str(&obj, "name").to_string();
        if name.is_empty()
            && let Some(prefix) = obj["metadata"]["generateName"].as_str()
        {
            name = format!("{prefix}{}", random_suffix(5));
            obj["metadata"]["name"] = json!(name);
        }
        if name.is_empty() {
            return Err(ApiError::invalid(
                rt,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
        let body_ns = meta_str(&obj, "namespace");
        if rt.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        self.check_namespace(rt, ns)?;
        let ns = if rt.namespaced { ns } else { "" };
        if self.get(rt, ns, &name).is_ok() {
            return Err(ApiError::already_exists(rt, &name));
        }
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        if rt.namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        } else if let Some(md) = obj["metadata"].as_object_mut() {
            md.remove("namespace");
        }
        if rt.has_status
            && w.subresource.is_none()
            && rt.kind != "Namespace"
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        let md = obj["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        md.insert("uid".into(), json!(new_uid()));
        md.insert("creationTimestamp".into(), json!(now_rfc3339()));
        if crate::resources::has_generation(rt) {
            md.insert("generation".into(), json!(1));
        } else {
            md.remove("generation");
        }
        for k in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "selfLink",
        ] {
            md.remove(k);
        }
        apply_defaults(rt, &mut obj);
        validate(rt, &obj)?;
        if !obj["metadata"]["managedFields"].is_array() {
            apply::record_update(None, &mut obj, &writer(rt, w));
        }
        if rt.kind == "CustomResourceDefinition" {
            self.register_crd(&mut obj);
        }
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let arc = Arc::new(obj);
        self.objects
            .entry(rt.key())
            .or_default()
            .insert((ns.to_string(), name.clone()), arc.clone());
        self.reindex(&rt.key(), ns, &name, None, Some(&arc));
        self.emit(rt, EventType::Added, arc.clone(), rv, None);
        Ok((*arc).clone())
    }

    fn register_crd(&mut self, crd: &mut Value) {
        if let Ok(types) = resources::from_crd(crd) {
            let name = meta_str(crd, "name").to_string();
            self.registry.set_crd(&name, types);
            let now = now_rfc3339();
            crd["status"] = json!({
                "acceptedNames": crd["spec"]["names"],
                "storedVersions": crd["spec"]["versions"].as_array().map(|vs| vs.iter()
                    .filter(|v| v["storage"].as_bool() == Some(true)).map(|v| v["name"].clone()).collect::<Vec<_>>()),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "message": "the initial names have been accepted", "lastTransitionTime": now},
                ],
            });
        }
    }

    /// Replaces an existing object (PUT, and every patch after computing its result).
    ///
    /// `new` carries a resourceVersion precondition when non-empty. With
    /// `already_managed`, managedFields in `new` were computed by apply.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        new: Value,
        w: &WriteCtx,
        already_managed: bool,
    ) -> Result<Value, ApiError> {
        self.update_shared(rt, ns, name, new, w, already_managed)
            .map(|o| (*o).clone())
    }

    /// `update`, answering with the stored object itself: the controller
    /// loop ignores the answer, and copying it was a tenth of a pass.
    pub fn update_shared(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut new: Value,
        w: &WriteCtx,
        already_managed: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let old = self.get(rt, ns, name)?;
        let want_rv = meta_str(&new, "resourceVersion");
        if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(rt, name));
        }
        let body_name = meta_str(&new, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let scope = scope_for(rt, w.subresource);
        if scope == Scope::Status {
            // The status subresource changes status only.
            let status = new.as_object_mut().and_then(|m| m.remove("status"));
            let managed = new["metadata"]["managedFields"].take();
            new = (*old).clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
            if already_managed {
                new["metadata"]["managedFields"] = managed;
            }
        } else {
            if !new["metadata"].is_object() {
                new["metadata"] = json!({});
            }
            if let Scope::Main { strip_status: true } = scope {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            let md = new["metadata"].as_object_mut().expect("object");
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old["metadata"].get(k) {
                    Some(v) => md.insert(k.into(), v.clone()),
                    None => md.remove(k),
                };
            }
            if crate::resources::has_generation(rt) && generation_changes(&old, &new) {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                new["metadata"]["generation"] = json!(g);
            }
        }
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        apply_defaults(rt, &mut new);
        validate(rt, &new)?;
        self.commit(rt, ns, name, old, new, w, already_managed)
    }

    /// Writes `status` through the status subresource, as a controller
    /// does: the object is copied once, with its new status, where a
    /// caller's copy would be copied again.
    pub fn update_status(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        status: Value,
        manager: &str,
    ) -> Result<Arc<Value>, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let old = self.get(rt, ns, name)?;
        if old["status"] == status {
            return Ok(old);
        }
        let mut new = (*old).clone();
        new["status"] = status;
        let av = rt.api_version();
        let w = WriteCtx {
            manager,
            api_version: &av,
            subresource: Some("status"),
        };
        self.commit(rt, ns, name, old, new, &w, false)
    }

    /// What every update ends with: ownership, the no-op check, deletion
    /// once finalizers are gone, the new resourceVersion, indexes, the event.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        old: Arc<Value>,
        mut new: Value,
        w: &WriteCtx,
        already_managed: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if !already_managed {
            apply::record_update(Some(&old), &mut new, &writer(rt, w));
        }
        if same_but_bookkeeping(&new, &old) {
            // A no-op write changes nothing, not even the resourceVersion.
            return Ok(old);
        }
        if rt.kind == "CustomResourceDefinition" {
            self.register_crd(&mut new);
        }
        let finalizers_empty = new["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        if !new["metadata"]["deletionTimestamp"].is_null() && finalizers_empty {
            return self
                .remove(rt, ns, name, Propagation::Background)
                .map(Arc::new);
        }
        let rv = self.bump();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let arc = Arc::new(new);
        self.objects
            .entry(rt.key())
            .or_default()
            .insert((ns.to_string(), name.to_string()), arc.clone());
        self.reindex(&rt.key(), ns, name, Some(&old), Some(&arc));
        self.emit(rt, EventType::Modified, arc.clone(), rv, Some(old));
        Ok(arc)
    }

    /// PATCH of any kind; apply creates the object when it does not exist.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &Value,
        w: &WriteCtx,
        force: bool,
    ) -> Result<Value, ApiError> {
        let existing = self.get(rt, ns, name);
        if kind == PatchKind::Apply {
            if w.manager.is_empty() {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "fieldManager",
                    "Required value: is required for apply patch",
                ));
            }
            let body_name = meta_str(body, "name");
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "metadata.name ({body_name}) in the applied object does not match the name on the URL ({name})"
                )));
            }
            let wr = writer(rt, w);
            return match existing {
                Err(_) if w.subresource.is_some() => Err(ApiError::not_found(rt, name)),
                Err(_) => {
                    let mut obj =
                        apply::apply(None, body, &wr, force).map_err(|c| conflict_error(&c))?;
                    obj["metadata"]["name"] = json!(name);
                    if let Some(ns) = body["metadata"].get("namespace") {
                        obj["metadata"]["namespace"] = ns.clone();
                    }
                    self.create(rt, ns, obj, w)
                }
                Ok(live) => {
                    let mut obj = apply::apply(Some(&live), body, &wr, force)
                        .map_err(|c| conflict_error(&c))?;
                    if let Some(md) = obj["metadata"].as_object_mut() {
                        md.remove("resourceVersion");
                    }
                    self.update(rt, ns, name, obj, w, true)
                }
            };
        }
        let live = existing?;
        let mut obj = (*live).clone();
        match kind {
            PatchKind::Merge => patch::merge_patch(&mut obj, body),
            PatchKind::Strategic => patch::strategic_merge(&mut obj, body, &rt.schema),
            PatchKind::Json => patch::json_patch(&mut obj, body)
                .map_err(|why| ApiError::invalid(rt, name, "patch", &why))?,
            PatchKind::Apply => unreachable!("handled above"),
        }
        // A patch that does not mention resourceVersion carries no precondition.
        if body["metadata"]["resourceVersion"].is_null() && kind != PatchKind::Json {
            if let Some(md) = obj["metadata"].as_object_mut() {
                md.remove("resourceVersion");
            }
        } else if kind == PatchKind::Json
            && obj["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
            && let Some(md) = obj["metadata"].as_object_mut()
        {
            md.remove("resourceVersion");
        }
        self.update(rt, ns, name, obj, w, false)
    }

    /// Deletes an object: with finalizers it only gets a deletionTimestamp;
    /// without, it goes, and (background propagation) so do its dependents.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        prop: Propagation,
    ) -> Result<Value, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let obj = self.get(rt, ns, name)?;
        let has_finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if !obj["metadata"]["deletionTimestamp"].is_null() {
                return Ok((*obj).clone());
            }
            let mut new = (*obj).clone();
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let rv = self.bump();
            new["metadata"]["resourceVersion"] = json!(rv.to_string());
            let arc = Arc::new(new);
            self.objects
                .entry(rt.key())
                .or_default()
                .insert((ns.to_string(), name.to_string()), arc.clone());
            self.emit(rt, EventType::Modified, arc.clone(), rv, Some(obj));
            return Ok((*arc).clone());
        }
        self.remove(rt, ns, name, prop)
    }

    fn remove(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        prop: Propagation,
    ) -> Result<Value, ApiError> {
        let obj = self
            .objects
            .get_mut(&rt.key())
            .and_then(|m| m.remove(&(ns.to_string(), name.to_string())))
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        self.reindex(&rt.key(), ns, name, Some(&obj), None);
        let rv = self.bump();
        let mut gone = (*obj).clone();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        let gone = Arc::new(gone);
        self.emit(rt, EventType::Deleted, gone.clone(), rv, None);
        if rt.kind == "Namespace" {
            self.delete_namespace_contents(name);
        }
        if rt.kind == "CustomResourceDefinition"
            && let Some(types) = self.registry.remove_crd(name)
            && let Some(t) = types.first()
        {
            let t = t.clone();
            for (ns, n) in self.keys_of(&t.key()) {
                let _ = self.remove(&t, &ns, &n, Propagation::Orphan);
            }
        }
        if prop == Propagation::Background {
            let uid = meta_str(&gone, "uid").to_string();
            self.delete_dependents(&uid, ns);
        }
        Ok((*gone).clone())
    }

    fn keys_of(&self, key: &str) -> Vec<(String, String)> {
        self.objects
            .get(key)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn delete_namespace_contents(&mut self, ns: &str) {
        let types: Vec<ResourceType> = self
            .registry
            .all()
            .filter(|t| t.namespaced)
            .cloned()
            .collect();
        for t in types {
            for (ons, n) in self.keys_of(&t.key()) {
                if ons == ns {
                    let _ = self.remove(&t, &ons, &n, Propagation::Orphan);
                }
            }
        }
    }

    /// The garbage collector's job: objects owned by `uid` go too.
    fn delete_dependents(&mut self, uid: &str, ns: &str) {
        let doomed: Vec<(String, String, String)> = self
            .dependents
            .get(uid)
            .map(|set| {
                set.iter()
                    .filter(|(_, ons, _)| ns.is_empty() || ons == ns)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for (key, ons, n) in doomed {
            let Some(t) = self.registry.all().find(|t| t.key() == key).cloned() else {
                continue;
            };
            let _ = self.delete(&t, &ons, &n, Propagation::Background);
        }
    }

    /// All objects of a type, for the controllers.
    pub fn all_of(&self, key: &str) -> Vec<Arc<Value>> {
        self.objects
            .get(key)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of stored objects of every type, for the control API.
    pub fn object_count(&self) -> usize {
        self.objects.values().map(|m| m.len()).sum()
    }
}

fn conflict_error(conflicts: &[apply::Conflict]) -> ApiError {
    let conflicts: Vec<crate::status::ApplyConflict> = conflicts
        .iter()
        .map(|c| crate::status::ApplyConflict {
            manager: c.manager.clone(),
            operation: c.operation.clone(),
            api_version: c.api_version.clone(),
            subresource: c.subresource.clone(),
            field: crate::fields::display(&c.path),
        })
        .collect();
    ApiError::apply_conflict(&conflicts)
}

/// The managedFields scope of a write to `subresource` of `rt`.
pub fn scope_for(rt: &ResourceType, subresource: Option<&str>) -> Scope {
    match subresource {
        Some("status") => Scope::Status,
        _ => Scope::Main {
            strip_status: rt.has_status,
        },
    }
}

fn writer<'a>(rt: &'a ResourceType, w: &'a WriteCtx) -> Writer<'a> {
    // `now` must outlive the Writer; a leaked short string per write would
    // grow without bound, so the timestamp is interned per second instead.
    Writer {
        manager: w.manager,
        api_version: w.api_version,
        now: intern_now(),
        scope: scope_for(rt, w.subresource),
        schema: &rt.schema,
    }
}

fn intern_now() -> &'static str {
    use std::sync::Mutex;
    static LAST: Mutex<Option<&'static str>> = Mutex::new(None);
    let now = now_rfc3339();
    let mut last = LAST.lock().expect("not poisoned");
    match *last {
        Some(s) if s == now => s,
        _ => {
            let s: &'static str = Box::leak(now.into_boxed_str());
            *last = Some(s);
            s
        }
    }
}

fn encode_continue(k: &(String, String)) -> String {
    let raw = format!("{}/{}", k.0, k.1);
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(tok: &str) -> Option<(String, String)> {
    if !tok.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..tok.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&tok[i..i + 2], 16).ok())
        .collect();
    let s = String::from_utf8(bytes?).ok()?;
    let (ns, name) = s.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(kind: &str) -> ResourceType {
        resources::builtin()
            .into_iter()
            .find(|t| t.kind == kind)
            .unwrap()
    }

    fn ctx() -> WriteCtx<'static> {
        WriteCtx {
            manager: "test",
            api_version: "v1",
            subresource: None,
        }
    }

    #[test]
    fn metadata_is_set_by_the_server_and_generation_follows_spec_only() {
        let mut s = Store::new(100);
        let d = t("Deployment");
        let obj = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let created = s.create(&d, "default", obj, &ctx()).unwrap();
        assert_eq!(created["metadata"]["generation"], 1);
        assert!(created["metadata"]["uid"].as_str().unwrap().len() == 36);
        let mut labelled = created.clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        let after = s
            .update(&d, "default", "web", labelled, &ctx(), false)
            .unwrap();
        assert_eq!(after["metadata"]["generation"], 1);
        let mut scaled = after.clone();
        scaled["spec"]["replicas"] = json!(4);
        let after = s
            .update(&d, "default", "web", scaled, &ctx(), false)
            .unwrap();
        assert_eq!(after["metadata"]["generation"], 2);

        // ConfigMaps have none, as on a real cluster.
        let cm = t("ConfigMap");
        let created = s
            .create(
                &cm,
                "default",
                json!({"metadata": {"name": "c"}, "data": {"k": "1"}}),
                &ctx(),
            )
            .unwrap();
        assert!(created["metadata"].get("generation").is_none());
        let mut changed = created.clone();
        changed["data"]["k"] = json!("2");
        let after = s
            .update(&cm, "default", "c", changed, &ctx(), false)
            .unwrap();
        assert!(after["metadata"].get("generation").is_none());
    }

    #[test]
    fn a_stale_resource_version_is_a_conflict() {
        let mut s = Store::new(100);
        let cm = t("ConfigMap");
        let created = s
            .create(&cm, "default", json!({"metadata": {"name": "a"}}), &ctx())
            .unwrap();
        let mut first = created.clone();
        first["data"] = json!({"k": "1"});
        s.update(&cm, "default", "a", first, &ctx(), false).unwrap();
        let mut second = created;
        second["data"] = json!({"k": "2"});
        let err = s
            .update(&cm, "default", "a", second, &ctx(), false)
            .unwrap_err();
        assert_eq!(err.code, 409);
    }

    #[test]
    fn limit_and_continue_page_through_a_list() {
        let mut s = Store::new(100);
        let cm = t("ConfigMap");
        for i in 0..5 {
            s.create(
                &cm,
                "default",
                json!({"metadata": {"name": format!("c{i}")}}),
                &ctx(),
            )
            .unwrap();
        }
        let mut opts = ListOptions {
            limit: Some(2),
            ..Default::default()
        };
        // Each page: its names, the items left after it, and whether it came
        // with a continue token.
        let mut pages: Vec<(Vec<String>, Option<usize>, bool)> = Vec::new();
        loop {
            let page = s.list(&cm, Some("default"), &opts).unwrap();
            let names = page
                .items
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .collect();
            pages.push((names, page.remaining, page.continue_token.is_some()));
            match page.continue_token {
                Some(tok) if pages.len() < 10 => opts.continue_token = Some(tok),
                _ => break,
            }
        }
        // Two to a page, a token on every page but the last: a store that
        // ignored `limit` would give one page of five and no token.
        let page = |names: &[&str], remaining, more| {
            (
                names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                remaining,
                more,
            )
        };
        assert_eq!(
            pages,
            vec![
                page(&["c0", "c1"], Some(3), true),
                page(&["c2", "c3"], Some(1), true),
                page(&["c4"], None, false),
            ]
        );
    }

    #[test]
    fn a_finalizer_holds_deletion_until_removed() {
        let mut s = Store::new(100);
        let cm = t("ConfigMap");
        s.create(
            &cm,
            "default",
            json!({"metadata": {"name": "a", "finalizers": ["x/y"]}}),
            &ctx(),
        )
        .unwrap();
        let marked = s
            .delete(&cm, "default", "a", Propagation::Background)
            .unwrap();
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        let mut released = marked.clone();
        released["metadata"]["finalizers"] = json!([]);
        s.update(&cm, "default", "a", released, &ctx(), false)
            .unwrap();
        assert_eq!(s.get(&cm, "default", "a").unwrap_err().code, 404);
    }

    #[test]
    fn events_older_than_the_window_are_gone() {
        let mut s = Store::new(3);
        let cm = t("ConfigMap");
        let start = s.resource_version();
        for i in 0..5 {
            s.create(
                &cm,
                "default",
                json!({"metadata": {"name": format!("c{i}")}}),
                &ctx(),
            )
            .unwrap();
        }
        assert_eq!(s.events_since(&cm.key(), start).unwrap_err().code, 410);
        assert_eq!(
            s.events_since(&cm.key(), s.resource_version() - 2)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn deleting_an_owner_deletes_its_dependents_unless_orphaned() {
        let mut s = Store::new(100);
        let cm = t("ConfigMap");
        for (owner, orphan) in [("o1", false), ("o2", true)] {
            let o = s
                .create(&cm, "default", json!({"metadata": {"name": owner}}), &ctx())
                .unwrap();
            let dep = json!({"metadata": {"name": format!("{owner}-dep"),
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": o["metadata"]["uid"]}]}});
            s.create(&cm, "default", dep, &ctx()).unwrap();
            let prop = if orphan {
                Propagation::Orphan
            } else {
                Propagation::Background
            };
            s.delete(&cm, "default", owner, prop).unwrap();
            assert_eq!(
                s.get(&cm, "default", &format!("{owner}-dep")).is_ok(),
                orphan
            );
        }
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let mut s = Store::new(100);
        let out = s
            .create(
                &t("Secret"),
                "default",
                json!({"metadata": {"name": "s"}, "stringData": {"k": "hi"}}),
                &ctx(),
            )
            .unwrap();
        assert_eq!(out["data"]["k"], "aGk=");
        assert!(out.get("stringData").is_none());
        assert_eq!(out["type"], "Opaque");
    }

    #[test]
    fn creating_in_a_missing_namespace_is_not_found() {
        let mut s = Store::new(100);
        let err = s
            .create(
                &t("ConfigMap"),
                "nope",
                json!({"metadata": {"name": "a"}}),
                &ctx(),
            )
            .unwrap_err();
        assert_eq!(err.message, "namespaces \"nope\" not found");
    }
}
