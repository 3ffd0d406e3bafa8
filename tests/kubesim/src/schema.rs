//! How the fields of a kind merge, as the OpenAPI schemas say: which lists
//! are maps keyed by which fields (`x-kubernetes-list-type: map`,
//! `x-kubernetes-list-map-keys`), which are sets, which maps are atomic
//! (`x-kubernetes-map-type: atomic`): what server-side apply and
//! `managedFields` follow; and which lists strategic merge patch merges by
//! which key (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`),
//! which differ (Service ports: apply keys them by port and protocol, the
//! patch by port alone).
//!
//! Everything not described is what a schema without those extensions
//! means: lists atomic (replaced whole), maps and structs merged field by
//! field. A custom resource's shapes come from its CRD's
//! `openAPIV3Schema`. kubesim has no schemas for the built-in kinds, so
//! [`builtin`] holds what kube-apiserver v1.34.4's `/openapi/v3` says about
//! the kinds kubesim serves, as rows of [`describe`]'s form;
//! `tests/controlplane/tests/differential.rs`
//! (`kubesim_schema_matches_the_openapi`) walks the real server's documents
//! and checks that the rows are exactly what they say.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// How a list merges under server-side apply.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ListType {
    /// Replaced whole; one field in `managedFields`.
    #[default]
    Atomic,
    /// Scalars, each its own field (`v:"value"`).
    Set,
    /// Objects identified by these fields (`k:{"port":80,"protocol":"TCP"}`),
    /// each with the default the schema gives it, used when an item omits it.
    Map(Vec<(String, Option<Value>)>),
}

/// How a list merges under strategic merge patch.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PatchStrategy {
    /// The patch's list replaces the live one.
    #[default]
    Replace,
    /// Items merge: objects by the merge key, scalars by value.
    /// `retain_keys` (volumes) is recorded, not emulated.
    Merge {
        key: Option<String>,
        retain_keys: bool,
    },
}

/// One place in a kind's schema: its own shape and the places below it
/// that have one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    /// A map or struct replaced whole (`x-kubernetes-map-type: atomic`).
    pub atomic_map: bool,
    pub list: ListType,
    pub patch: PatchStrategy,
    fields: BTreeMap<String, Node>,
    /// Any field of a map (`additionalProperties`).
    values: Option<Box<Node>>,
    /// A list's items.
    items: Option<Box<Node>>,
}

/// The shape of everything no schema describes.
static DEFAULT: Node = Node {
    atomic_map: false,
    list: ListType::Atomic,
    patch: PatchStrategy::Replace,
    fields: BTreeMap::new(),
    values: None,
    items: None,
};

impl Node {
    /// The field `name` of this map or struct.
    pub fn field(&self, name: &str) -> &Node {
        self.fields
            .get(name)
            .or(self.values.as_deref())
            .unwrap_or(&DEFAULT)
    }

    /// This list's items.
    pub fn item(&self) -> &Node {
        self.items.as_deref().unwrap_or(&DEFAULT)
    }

    fn is_default(&self) -> bool {
        *self == DEFAULT
    }

    /// The node at a path of field names, `[]` for list items, made on the way.
    fn at_mut(&mut self, path: &str) -> &mut Node {
        let mut cur = self;
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            let (name, items) = match seg.find("[]") {
                Some(i) => (&seg[..i], seg[i..].matches("[]").count()),
                None => (seg, 0),
            };
            cur = cur.fields.entry(name.to_string()).or_default();
            for _ in 0..items {
                cur = cur.items.get_or_insert_with(Default::default);
            }
        }
        cur
    }

    /// Sets the shape a [`describe`] row names (`list=map keys=port=0,protocol="TCP"
    /// patch=merge key=port`, `list=set patch=merge`, `map=atomic`).
    fn set_shape(&mut self, shape: &str) {
        let mut list = "atomic";
        let mut keys: Vec<(String, Option<Value>)> = Vec::new();
        let mut strategy: Option<&str> = None;
        let mut merge_key: Option<String> = None;
        for word in shape.split_whitespace() {
            let (k, v) = word.split_once('=').expect("key=value");
            match k {
                "map" => self.atomic_map = v == "atomic",
                "list" => list = v,
                "keys" => {
                    keys = v
                        .split(',')
                        .map(|k| match k.split_once('=') {
                            Some((name, d)) => (
                                name.to_string(),
                                Some(serde_json::from_str(d).expect("a JSON default")),
                            ),
                            None => (k.to_string(), None),
                        })
                        .collect()
                }
                "patch" => strategy = Some(v),
                "key" => merge_key = Some(v.to_string()),
                _ => panic!("unknown shape word {word}"),
            }
        }
        self.list = match list {
            "map" => ListType::Map(keys),
            "set" => ListType::Set,
            _ => ListType::Atomic,
        };
        self.patch = match strategy {
            Some(s) if s.split(',').any(|s| s == "merge") => PatchStrategy::Merge {
                key: merge_key,
                retain_keys: s.split(',').any(|s| s == "retainKeys"),
            },
            _ => PatchStrategy::Replace,
        };
    }

    /// The shape as a [`describe`] row writes it; empty for the default.
    fn shape(&self) -> String {
        let mut words = Vec::new();
        if self.atomic_map {
            words.push("map=atomic".to_string());
        }
        match &self.list {
            ListType::Atomic if self.patch != PatchStrategy::Replace => {
                words.push("list=atomic".into())
            }
            ListType::Atomic => {}
            ListType::Set => words.push("list=set".into()),
            ListType::Map(keys) => {
                words.push("list=map".into());
                let keys: Vec<String> = keys
                    .iter()
                    .map(|(k, d)| match d {
                        Some(d) => format!("{k}={d}"),
                        None => k.clone(),
                    })
                    .collect();
                words.push(format!("keys={}", keys.join(",")));
            }
        }
        if let PatchStrategy::Merge { key, retain_keys } = &self.patch {
            words.push(match retain_keys {
                true => "patch=merge,retainKeys".into(),
                false => "patch=merge".into(),
            });
            if let Some(k) = key {
                words.push(format!("key={k}"));
            }
        }
        words.join(" ")
    }

    fn from_rows(rows: &[(String, &str)]) -> Node {
        let mut root = Node::default();
        for (path, shape) in rows {
            root.at_mut(path).set_shape(shape);
        }
        root
    }
}

/// Every place below `node` with a shape of its own, as `(path, shape)`
/// rows: `.spec.ports` `list=map keys=port=0,protocol="TCP" patch=merge key=port`;
/// `[]` stands for a list's items, `*` for any field of a map.
pub fn describe(node: &Node) -> Vec<(String, String)> {
    fn rec(n: &Node, path: &str, out: &mut Vec<(String, String)>) {
        let shape = n.shape();
        if !shape.is_empty() {
            out.push((path.to_string(), shape));
        }
        for (k, child) in &n.fields {
            rec(child, &format!("{path}.{k}"), out);
        }
        if let Some(v) = &n.values {
            rec(v, &format!("{path}.*"), out);
        }
        if let Some(i) = &n.items {
            rec(i, &format!("{path}[]"), out);
        }
    }
    let mut out = Vec::new();
    rec(node, "", &mut out);
    out
}

/// The shapes of a custom resource, from its CRD version's
/// `openAPIV3Schema` (absent or `x-kubernetes-preserve-unknown-fields`:
/// every list atomic, every map merged). Custom resources take no
/// strategic merge patch; their lists' patch strategy stays `Replace`.
pub fn from_openapi_v3(schema: &Value) -> Node {
    fn rec(s: &Value) -> Node {
        let mut n = Node::default();
        let Some(s) = s.as_object() else { return n };
        let ext = |k: &str| s.get(k).and_then(Value::as_str);
        if ext("x-kubernetes-map-type") == Some("atomic") {
            n.atomic_map = true;
        }
        match ext("x-kubernetes-list-type") {
            Some("set") => n.list = ListType::Set,
            Some("map") => {
                let item_props = &s.get("items").unwrap_or(&Value::Null)["properties"];
                let keys = s
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|k| (k.to_string(), item_props[k].get("default").cloned()))
                    .collect();
                n.list = ListType::Map(keys)
            }
            _ => {}
        }
        for (k, child) in s
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let c = rec(child);
            if !c.is_default() {
                n.fields.insert(k.clone(), c);
            }
        }
        if let Some(ap) = s.get("additionalProperties").filter(|v| v.is_object()) {
            let c = rec(ap);
            if !c.is_default() {
                n.values = Some(Box::new(c));
            }
        }
        if let Some(items) = s.get("items") {
            let c = rec(items);
            if !c.is_default() {
                n.items = Some(Box::new(c));
            }
        }
        n
    }
    rec(schema)
}

/// The shapes of a built-in kind (`group`, `kind`), from kube-apiserver
/// v1.34.4's `/openapi/v3`; a kind without any is all defaults.
pub fn builtin(group: &str, kind: &str) -> Node {
    Node::from_rows(&builtin_rows(group, kind))
}

type Rows = Vec<(String, &'static str)>;

/// Containers, env, volumes, ...
const BY_NAME: &str = "list=map keys=name=\"\" patch=merge key=name";

fn object_meta(p: &str, rows: &mut Rows) {
    rows.push((format!("{p}.finalizers"), "list=set patch=merge"));
    rows.push((
        format!("{p}.ownerReferences"),
        "list=map keys=uid=\"\" patch=merge key=uid",
    ));
    rows.push((format!("{p}.ownerReferences[]"), "map=atomic"));
}

fn container(p: &str, rows: &mut Rows) {
    rows.push((format!("{p}.env"), BY_NAME));
    for r in [
        "configMapKeyRef",
        "fieldRef",
        "fileKeyRef",
        "resourceFieldRef",
        "secretKeyRef",
    ] {
        rows.push((format!("{p}.env[].valueFrom.{r}"), "map=atomic"));
    }
    rows.push((
        format!("{p}.ports"),
        "list=map keys=containerPort=0,protocol=\"TCP\" patch=merge key=containerPort",
    ));
    rows.push((format!("{p}.resources.claims"), "list=map keys=name=\"\""));
    rows.push((
        format!("{p}.volumeDevices"),
        "list=map keys=devicePath=\"\" patch=merge key=devicePath",
    ));
    rows.push((
        format!("{p}.volumeMounts"),
        "list=map keys=mountPath=\"\" patch=merge key=mountPath",
    ));
}

fn pod_spec(p: &str, rows: &mut Rows) {
    for c in ["containers", "initContainers", "ephemeralContainers"] {
        rows.push((format!("{p}.{c}"), BY_NAME));
        container(&format!("{p}.{c}[]"), rows);
    }
    let by_name_retaining = "list=map keys=name=\"\" patch=merge,retainKeys key=name";
    rows.extend([
        (
            format!("{p}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"),
            "map=atomic",
        ),
        (
            format!("{p}.hostAliases"),
            "list=map keys=ip=\"\" patch=merge key=ip",
        ),
        (format!("{p}.imagePullSecrets"), BY_NAME),
        (format!("{p}.imagePullSecrets[]"), "map=atomic"),
        (format!("{p}.nodeSelector"), "map=atomic"),
        (format!("{p}.resourceClaims"), by_name_retaining),
        (format!("{p}.resources.claims"), "list=map keys=name=\"\""),
        (format!("{p}.schedulingGates"), BY_NAME),
        (
            format!("{p}.topologySpreadConstraints"),
            "list=map keys=topologyKey=\"\",whenUnsatisfiable=\"\" patch=merge key=topologyKey",
        ),
        (
            format!("{p}.topologySpreadConstraints[].labelSelector"),
            "map=atomic",
        ),
        (format!("{p}.volumes"), by_name_retaining),
    ]);
    for source in [
        "cephfs",
        "cinder",
        "flexVolume",
        "iscsi",
        "rbd",
        "scaleIO",
        "storageos",
    ] {
        rows.push((format!("{p}.volumes[].{source}.secretRef"), "map=atomic"));
    }
    rows.push((
        format!("{p}.volumes[].csi.nodePublishSecretRef"),
        "map=atomic",
    ));
    let claim = format!("{p}.volumes[].ephemeral.volumeClaimTemplate");
    object_meta(&format!("{claim}.metadata"), rows);
    rows.push((format!("{claim}.spec.dataSource"), "map=atomic"));
    rows.push((format!("{claim}.spec.selector"), "map=atomic"));
}

fn pod_template(p: &str, rows: &mut Rows) {
    object_meta(&format!("{p}.metadata"), rows);
    pod_spec(&format!("{p}.spec"), rows);
}

/// Conditions and Node addresses.
const BY_TYPE: &str = "list=map keys=type=\"\" patch=merge key=type";

fn builtin_rows(group: &str, kind: &str) -> Rows {
    let mut rows = Rows::new();
    object_meta(".metadata", &mut rows);
    let conditions = |rows: &mut Rows| rows.push((".status.conditions".into(), BY_TYPE));
    match (group, kind) {
        ("", "Namespace" | "Service")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet")
        | ("autoscaling", "HorizontalPodAutoscaler")
        | ("policy", "PodDisruptionBudget") => conditions(&mut rows),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            rows.push((".status.conditions".into(), "list=map keys=type=\"\""))
        }
        _ => {}
    }
    match (group, kind) {
        ("", "Pod") => {
            pod_spec(".spec", &mut rows);
            rows.extend([
                (".status.conditions".into(), BY_TYPE),
                (".status.hostIPs".into(), "list=atomic patch=merge key=ip"),
                (
                    ".status.podIPs".into(),
                    "list=map keys=ip=\"\" patch=merge key=ip",
                ),
                (
                    ".status.resourceClaimStatuses".into(),
                    "list=map keys=name=\"\" patch=merge,retainKeys key=name",
                ),
            ]);
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") => {
            rows.push((".spec.selector".into(), "map=atomic"));
            pod_template(".spec.template", &mut rows);
        }
        ("batch", "Job") => {
            rows.push((".spec.selector".into(), "map=atomic"));
            pod_template(".spec.template", &mut rows);
            rows.extend([
                (
                    ".status.conditions".into(),
                    "list=atomic patch=merge key=type",
                ),
                (".status.uncountedTerminatedPods.failed".into(), "list=set"),
                (
                    ".status.uncountedTerminatedPods.succeeded".into(),
                    "list=set",
                ),
            ]);
        }
        ("batch", "CronJob") => {
            object_meta(".spec.jobTemplate.metadata", &mut rows);
            rows.push((".spec.jobTemplate.spec.selector".into(), "map=atomic"));
            pod_template(".spec.jobTemplate.spec.template", &mut rows);
        }
        ("", "Service") => rows.extend([
            (
                ".spec.ports".into(),
                "list=map keys=port=0,protocol=\"TCP\" patch=merge key=port",
            ),
            (".spec.selector".into(), "map=atomic"),
        ]),
        ("", "ServiceAccount") => rows.extend([
            (".secrets".into(), "list=map keys=name patch=merge key=name"),
            (".secrets[]".into(), "map=atomic"),
        ]),
        ("", "Node") => rows.extend([
            (".spec.podCIDRs".into(), "list=set patch=merge"),
            (".status.addresses".into(), BY_TYPE),
            (".status.conditions".into(), BY_TYPE),
        ]),
        ("", "ResourceQuota") => rows.push((".spec.scopeSelector".into(), "map=atomic")),
        ("", "Event") => rows.extend([
            (".involvedObject".into(), "map=atomic"),
            (".related".into(), "map=atomic"),
        ]),
        ("networking.k8s.io", "Ingress") => rows.extend([
            (".spec.defaultBackend.resource".into(), "map=atomic"),
            (".spec.defaultBackend.service.port".into(), "map=atomic"),
        ]),
        ("networking.k8s.io", "NetworkPolicy") => {
            rows.push((".spec.podSelector".into(), "map=atomic"))
        }
        ("policy", "PodDisruptionBudget") => rows.push((".spec.selector".into(), "map=atomic")),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            rows.push((".roleRef".into(), "map=atomic"))
        }
        _ => {}
    }
    rows
}

/// The identity of a keyed list's item: its key fields (defaults filled in
/// for those it omits) as the object of a FieldsV1 `k:` segment.
pub fn item_key(keys: &[(String, Option<Value>)], item: &Value) -> Map<String, Value> {
    keys.iter()
        .filter_map(|(k, default)| {
            let v = item.get(k).or(default.as_ref())?;
            Some((k.clone(), v.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_read_back_as_they_were_written() {
        for (group, kind) in [
            ("", "Pod"),
            ("apps", "Deployment"),
            ("batch", "CronJob"),
            ("batch", "Job"),
            ("", "Service"),
            ("", "ServiceAccount"),
        ] {
            let mut rows: Vec<(String, String)> = builtin_rows(group, kind)
                .into_iter()
                .map(|(p, s)| (p, s.to_string()))
                .collect();
            rows.sort();
            let mut described = describe(&builtin(group, kind));
            described.sort();
            assert_eq!(described, rows, "{group}/{kind}");
        }
    }

    #[test]
    fn service_ports_are_keyed_by_port_and_protocol_for_apply_and_by_port_for_patches() {
        let svc = builtin("", "Service");
        let ports = svc.field("spec").field("ports");
        assert_eq!(
            ports.list,
            ListType::Map(vec![
                ("port".into(), Some(json!(0))),
                ("protocol".into(), Some(json!("TCP")))
            ])
        );
        assert_eq!(
            ports.patch,
            PatchStrategy::Merge {
                key: Some("port".into()),
                retain_keys: false
            }
        );
        let ListType::Map(keys) = &ports.list else {
            unreachable!()
        };
        assert_eq!(
            Value::Object(item_key(keys, &json!({"port": 53, "name": "dns"}))),
            json!({"port": 53, "protocol": "TCP"})
        );
        assert!(svc.field("spec").field("selector").atomic_map);
        assert!(svc.field("data").is_default());
    }

    #[test]
    fn a_crd_schema_gives_list_types_and_defaults_the_rest() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "rules": {"type": "array", "x-kubernetes-list-type": "atomic",
                "items": {"type": "object", "properties": {"backendRefs": {"type": "array"}}}},
            "headers": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
            "ref": {"type": "object", "x-kubernetes-map-type": "atomic"},
            "tags": {"type": "array", "x-kubernetes-list-type": "set"},
            "plain": {"type": "array", "items": {"type": "object"}}}}}});
        let n = from_openapi_v3(&schema);
        assert_eq!(
            describe(&n),
            vec![
                (
                    ".spec.headers".to_string(),
                    "list=map keys=name".to_string()
                ),
                (".spec.ref".into(), "map=atomic".into()),
                (".spec.tags".into(), "list=set".into()),
            ]
        );
        assert_eq!(n.field("spec").field("rules").list, ListType::Atomic);
    }
}
