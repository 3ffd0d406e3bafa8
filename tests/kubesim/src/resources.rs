//! The kinds the server knows: built-in ones and those CustomResourceDefinitions add.
//!
//! One `ResourceType` per served resource; the HTTP layer resolves a URL to one,
//! discovery renders them, and the store keys objects by `ResourceType::key`.

use crate::schema::{self, Node};
use serde_json::{Value, json};
use std::sync::Arc;

/// One served resource, as an `APIResource` in discovery describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// Plural lower-case name, as in URLs.
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Whether writes to the main resource ignore `.status` (a `status` subresource exists).
    pub has_status: bool,
    /// Whether a `scale` subresource exists (Deployments, ReplicaSets, StatefulSets).
    pub has_scale: bool,
    pub categories: Vec<String>,
    /// A CRD version's `selectableFields` (`spec.color`): field selectors
    /// its custom resources take besides metadata.name and .namespace.
    pub selectable_fields: Vec<String>,
    /// How the kind's lists and maps merge (apply, managedFields, strategic
    /// merge patch): the built-in table or the CRD version's schema.
    pub schema: Arc<Node>,
}

impl ResourceType {
    /// The store key: `group/plural`, version-independent like etcd's keys.
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// `apiVersion` as objects of this type carry it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name kube-apiserver uses in messages: `deployments.apps`, `pods`.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The `APIResource` entries (main resource and subresources) for `/api/v1` or `/apis/g/v`.
    pub fn discovery_entries(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": self.short_names,
            "categories": self.categories,
        })];
        if self.has_status {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if self.has_scale {
            out.push(json!({
                "name": format!("{}/scale", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn rt(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    has_status: bool,
    has_scale: bool,
) -> ResourceType {
    let all_category = matches!(
        kind,
        "Pod" | "Service" | "Deployment" | "ReplicaSet" | "StatefulSet" | "Job" | "CronJob"
    );
    ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: if kind == "Endpoints" {
            "endpoints".into()
        } else {
            kind.to_lowercase()
        },
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        has_status,
        has_scale,
        categories: if all_category {
            vec!["all".into()]
        } else {
            vec![]
        },
        selectable_fields: Vec::new(),
        schema: Arc::new(schema::builtin(group, kind)),
    }
}

/// The API groups of the built-in kinds; every other group is a CRD's.
pub const BUILTIN_GROUPS: &[&str] = &[
    "",
    "apiextensions.k8s.io",
    "apps",
    "autoscaling",
    "batch",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
];

/// Whether kube-apiserver keeps `metadata.generation` for the kind (its
/// strategies set it on create and bump it on spec changes): workloads,
/// Pods, policy and networking objects, CRDs and custom resources; not
/// ConfigMaps, Secrets, Services, Namespaces, RBAC objects, ...
pub fn has_generation(rt: &ResourceType) -> bool {
    !BUILTIN_GROUPS.contains(&rt.group.as_str())
        || matches!(
            rt.kind.as_str(),
            "Pod"
                | "Deployment"
                | "ReplicaSet"
                | "StatefulSet"
                | "DaemonSet"
                | "Job"
                | "CronJob"
                | "EndpointSlice"
                | "Ingress"
                | "IngressClass"
                | "NetworkPolicy"
                | "PodDisruptionBudget"
                | "CustomResourceDefinition"
        )
}

/// The built-in kinds issue 3 lists, at the versions Kubernetes 1.33 serves.
pub fn builtin() -> Vec<ResourceType> {
    vec![
        rt(
            "",
            "v1",
            "Namespace",
            "namespaces",
            false,
            &["ns"],
            true,
            false,
        ),
        rt(
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            true,
            &["cm"],
            false,
            false,
        ),
        rt("", "v1", "Secret", "secrets", true, &[], false, false),
        // Stored as given: kubesim counts nothing against a quota (the real
        // control plane's tests do), but the tool lists them before it applies.
        rt(
            "",
            "v1",
            "ResourceQuota",
            "resourcequotas",
            true,
            &["quota"],
            true,
            false,
        ),
        rt("", "v1", "Node", "nodes", false, &["no"], true, false),
        rt(
            "",
            "v1",
            "Endpoints",
            "endpoints",
            true,
            &["ep"],
            false,
            false,
        ),
        rt(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
            &[],
            false,
            false,
        ),
        rt("", "v1", "Service", "services", true, &["svc"], true, false),
        rt(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            &["sa"],
            false,
            false,
        ),
        rt("", "v1", "Pod", "pods", true, &["po"], true, false),
        rt("", "v1", "Event", "events", true, &["ev"], false, false),
        rt(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            &["deploy"],
            true,
            true,
        ),
        rt(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            true,
            &["rs"],
            true,
            true,
        ),
        rt(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            true,
            &["sts"],
            true,
            true,
        ),
        rt("batch", "v1", "Job", "jobs", true, &[], true, false),
        rt(
            "batch",
            "v1",
            "CronJob",
            "cronjobs",
            true,
            &["cj"],
            true,
            false,
        ),
        rt(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
            &["hpa"],
            true,
            false,
        ),
        rt(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            true,
            &["ing"],
            true,
            false,
        ),
        rt(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
            &["netpol"],
            false,
            false,
        ),
        rt(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            &["pdb"],
            true,
            false,
        ),
        rt(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            &[],
            false,
            false,
        ),
        rt(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            &[],
            false,
            false,
        ),
        rt(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            &[],
            false,
            false,
        ),
        rt(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            &[],
            false,
            false,
        ),
        rt(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
            false,
            false,
        ),
        rt(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            true,
            false,
        ),
    ]
}

/// The resource types a CustomResourceDefinition serves, one per served version.
///
/// Returns an error message (for a 422 Invalid) when the CRD lacks what the
/// apiserver requires: group, names.plural, names.kind, scope, a version.
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let group = spec["group"].as_str().ok_or("spec.group: Required value")?;
    let names = &spec["names"];
    let plural = names["plural"]
        .as_str()
        .ok_or("spec.names.plural: Required value")?;
    let kind = names["kind"]
        .as_str()
        .ok_or("spec.names.kind: Required value")?;
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope: Unsupported value: must be Namespaced or Cluster".into()),
    };
    let short_names: Vec<String> = names["shortNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let categories: Vec<String> = names["categories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let versions = spec["versions"]
        .as_array()
        .ok_or("spec.versions: Required value")?;
    let mut out = Vec::new();
    for v in versions {
        if v["served"].as_bool() == Some(false) {
            continue;
        }
        let name = v["name"]
            .as_str()
            .ok_or("spec.versions[].name: Required value")?;
        out.push(ResourceType {
            group: group.into(),
            version: name.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: singular.clone(),
            namespaced,
            short_names: short_names.clone(),
            has_status: v["subresources"]["status"].is_object(),
            has_scale: v["subresources"]["scale"].is_object(),
            categories: categories.clone(),
            selectable_fields: v["selectableFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["jsonPath"].as_str())
                .map(|p| p.trim_start_matches('.').to_string())
                .collect(),
            schema: Arc::new(schema::from_openapi_v3(&v["schema"]["openAPIV3Schema"])),
        });
    }
    if out.is_empty() {
        return Err("spec.versions: Invalid value: must have at least one served version".into());
    }
    Ok(out)
}

/// The set of served types; CRDs add and remove entries at run time.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    types: Vec<ResourceType>,
    /// CRD name -> the types it added, so deleting the CRD removes exactly those.
    crd_types: std::collections::BTreeMap<String, Vec<ResourceType>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        Registry {
            types: builtin(),
            crd_types: Default::default(),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.types
            .iter()
            .chain(self.crd_types.values().flat_map(|v| v.iter()))
    }

    /// The type served at `group/version` under `plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.all()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// Any served version of `group`/`plural`; the controller and GC do not care which.
    pub fn find_any(&self, group: &str, plural: &str) -> Option<&ResourceType> {
        self.all().find(|t| t.group == group && t.plural == plural)
    }

    pub fn set_crd(&mut self, crd_name: &str, types: Vec<ResourceType>) {
        self.crd_types.insert(crd_name.to_string(), types);
    }

    pub fn remove_crd(&mut self, crd_name: &str) -> Option<Vec<ResourceType>> {
        self.crd_types.remove(crd_name)
    }

    /// `(group, [versions])` in a stable order with the core group excluded.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.all().filter(|t| !t.group.is_empty()) {
            match groups.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, vs)) => {
                    if !vs.contains(&t.version) {
                        vs.push(t.version.clone())
                    }
                }
                None => groups.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        groups
    }

    /// `/api`: the legacy core group's versions.
    pub fn api_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        })
    }

    fn group_doc(name: &str, versions: &[String]) -> Value {
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
            .collect();
        json!({
            "name": name,
            "versions": vs,
            "preferredVersion": vs[0],
        })
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`):
    /// every group, version and resource in one document; `core` selects
    /// `/api` (the legacy group) instead of `/apis`. kubectl and kube's
    /// `Discovery::run_aggregated` ask for this first.
    pub fn aggregated(&self, core: bool) -> Value {
        let groups: Vec<(String, Vec<String>)> = if core {
            vec![(String::new(), vec!["v1".to_string()])]
        } else {
            self.groups()
        };
        let items: Vec<Value> = groups
            .iter()
            .map(|(g, versions)| {
                let vs: Vec<Value> = versions
                    .iter()
                    .map(|v| {
                        let resources: Vec<Value> = self
                            .all()
                            .filter(|t| t.group == *g && t.version == *v)
                            .map(|t| {
                                let kind = json!({"group": t.group, "version": t.version, "kind": t.kind});
                                let mut subs = Vec::new();
                                if t.has_status {
                                    subs.push(json!({"subresource": "status", "responseKind": kind,
                                        "verbs": ["get", "patch", "update"]}));
                                }
                                if t.has_scale {
                                    subs.push(json!({"subresource": "scale",
                                        "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                                        "verbs": ["get", "patch", "update"]}));
                                }
                                json!({
                                    "resource": t.plural,
                                    "responseKind": kind,
                                    "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                                    "singularResource": t.singular,
                                    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                                    "shortNames": t.short_names,
                                    "categories": t.categories,
                                    "subresources": subs,
                                })
                            })
                            .collect();
                        json!({"version": v, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                let md = if g.is_empty() { json!({}) } else { json!({"name": g}) };
                json!({"metadata": md, "versions": vs})
            })
            .collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    }

    /// `/apis`: an `APIGroupList`.
    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(g, vs)| Self::group_doc(g, vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/<group>`: an `APIGroup`, or None when the group is not served.
    pub fn api_group(&self, group: &str) -> Option<Value> {
        let (g, vs) = self.groups().into_iter().find(|(g, _)| g == group)?;
        let mut doc = Self::group_doc(&g, &vs);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Some(doc)
    }

    /// `/api/v1` or `/apis/<group>/<version>`: an `APIResourceList`, or None.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let resources: Vec<Value> = self
            .all()
            .filter(|t| t.group == group && t.version == version)
            .flat_map(|t| t.discovery_entries())
            .collect();
        if resources.is_empty() {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crd_serves_its_kind_at_each_served_version() {
        let crd = json!({"spec": {
            "group": "monitoring.coreos.com",
            "names": {"plural": "servicemonitors", "kind": "ServiceMonitor", "singular": "servicemonitor"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true}]
        }});
        let types = from_crd(&crd).unwrap();
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].key(), "monitoring.coreos.com/servicemonitors");
        let mut reg = Registry::with_builtins();
        reg.set_crd("servicemonitors.monitoring.coreos.com", types);
        assert!(
            reg.find("monitoring.coreos.com", "v1", "servicemonitors")
                .is_some()
        );
        let list = reg.resource_list("monitoring.coreos.com", "v1").unwrap();
        assert_eq!(list["resources"][0]["kind"], "ServiceMonitor");
        assert!(reg.api_group("monitoring.coreos.com").is_some());
    }

    #[test]
    fn aggregated_discovery_lists_groups_with_resources_and_subresources() {
        let reg = Registry::with_builtins();
        let apis = reg.aggregated(false);
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["responseKind"]["kind"], "Deployment");
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(deploy["subresources"][1]["subresource"], "scale");
        let core = reg.aggregated(true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert!(
            core["items"][0]["versions"][0]["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["resource"] == "pods")
        );
    }

    #[test]
    fn a_crd_without_scope_is_invalid() {
        let crd = json!({"spec": {"group": "g", "names": {"plural": "xs", "kind": "X"},
            "versions": [{"name": "v1", "served": true}]}});
        assert!(from_crd(&crd).unwrap_err().contains("scope"));
    }

    #[test]
    fn deployments_list_status_and_scale_subresources() {
        let reg = Registry::with_builtins();
        let list = reg.resource_list("apps", "v1").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"deployments/status"));
        assert!(names.contains(&"deployments/scale"));
    }
}
