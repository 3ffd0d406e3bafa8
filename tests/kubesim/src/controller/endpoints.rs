//! The endpoints controllers: Endpoints and EndpointSlices for Services
//! with a selector.

use super::{Controller, Types, ctx, deployment, md, owner_ref, pod, terminating};
use crate::store::{Propagation, Store};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

impl Controller {
    /// The endpoints controllers: for each Service with a selector, an
    /// Endpoints and an EndpointSlice listing its pods, ready or not.
    pub(super) fn endpoints(&mut self, store: &mut Store, t: &Types) {
        let pods = store.all_of(&t.pod.key());
        let services = store.all_of(&t.svc.key());
        let newest = pods
            .iter()
            .chain(services.iter())
            .filter_map(|o| md(o, "resourceVersion").parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let from = (pods.len() + services.len(), newest);
        if self.endpoints_from == Some(from) {
            return;
        }
        self.endpoints_from = Some(from);
        let live: HashSet<(String, String)> = services
            .iter()
            .map(|s| (md(s, "namespace").to_string(), md(s, "name").to_string()))
            .collect();
        self.managed_endpoints.retain(|(ns, name)| {
            if live.contains(&(ns.clone(), name.clone())) {
                return true;
            }
            let _ = store.delete(&t.ep, ns, name, Propagation::Background);
            false
        });
        // Pods by namespace and each label they carry: a Service's
        // candidates are the pods with its selector's first label, not
        // every pod (services × pods made a pass quadratic).
        let mut by_label: HashMap<(&str, &str, &str), Vec<&Arc<Value>>> = HashMap::new();
        for p in &pods {
            if terminating(p) || !p["status"]["podIP"].is_string() {
                continue;
            }
            let ns = md(p, "namespace");
            for (k, v) in p["metadata"]["labels"].as_object().into_iter().flatten() {
                if let Some(v) = v.as_str() {
                    by_label.entry((ns, k.as_str(), v)).or_default().push(p);
                }
            }
        }
        for svc in &services {
            let Some(selector) = svc["spec"]["selector"]
                .as_object()
                .filter(|s| !s.is_empty())
            else {
                continue;
            };
            let ns = md(svc, "namespace").to_string();
            let name = md(svc, "name").to_string();
            let (first_key, first_value) = selector.iter().next().expect("not empty");
            let mut members: Vec<&Arc<Value>> = by_label
                .get(&(
                    ns.as_str(),
                    first_key.as_str(),
                    first_value.as_str().unwrap_or(""),
                ))
                .into_iter()
                .flatten()
                .copied()
                .filter(|p| {
                    selector
                        .iter()
                        .all(|(k, v)| p["metadata"]["labels"][k] == *v)
                })
                .collect();
            members.sort_by_key(|p| md(p, "name").to_string());
            let address = |p: &Value| {
                json!({"ip": p["status"]["podIP"], "nodeName": "kubesim-node",
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": md(p, "name"), "uid": md(p, "uid")}})
            };
            let ready: Vec<Value> = members
                .iter()
                .filter(|p| pod::is_ready(p))
                .map(|p| address(p))
                .collect();
            let not_ready: Vec<Value> = members
                .iter()
                .filter(|p| !pod::is_ready(p))
                .map(|p| address(p))
                .collect();
            let ports: Vec<Value> = svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|sp| {
                    let port = sp["targetPort"]
                        .as_i64()
                        .or(sp["port"].as_i64())
                        .unwrap_or(0);
                    let mut p =
                        json!({"port": port, "protocol": sp["protocol"].as_str().unwrap_or("TCP")});
                    if let Some(n) = sp["name"].as_str() {
                        p["name"] = json!(n);
                    }
                    p
                })
                .collect();
            let mut subset = json!({"ports": ports});
            if !ready.is_empty() {
                subset["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = json!(not_ready);
            }
            let subsets = if members.is_empty() {
                json!([])
            } else {
                json!([subset])
            };
            let av = t.ep.api_version();
            match store.get(&t.ep, &ns, &name) {
                Ok(existing) if existing["subsets"] == subsets => {}
                Ok(existing) => {
                    let mut upd = (*existing).clone();
                    upd["subsets"] = subsets;
                    if let Some(m) = upd["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    let _ = store.update_shared(&t.ep, &ns, &name, upd, &ctx(&av, false), false);
                }
                Err(_) => {
                    let ep = json!({"metadata": {"name": name, "namespace": ns, "labels": svc["metadata"]["labels"]},
                        "subsets": subsets});
                    if store.create(&t.ep, &ns, ep, &ctx(&av, false)).is_ok() {
                        self.managed_endpoints.insert((ns.clone(), name.clone()));
                    }
                }
            }

            let suffix: String = deployment::template_hash(&json!(name))
                .chars()
                .take(5)
                .collect();
            let slice_name = format!("{name}-{suffix}");
            let endpoints: Vec<Value> = members
                .iter()
                .map(|p| {
                    let r = pod::is_ready(p);
                    json!({"addresses": [p["status"]["podIP"]],
                        "conditions": {"ready": r, "serving": r, "terminating": false},
                        "nodeName": "kubesim-node",
                        "targetRef": {"kind": "Pod", "namespace": ns, "name": md(p, "name"), "uid": md(p, "uid")}})
                })
                .collect();
            let sav = t.eps.api_version();
            match store.get(&t.eps, &ns, &slice_name) {
                Ok(existing)
                    if existing["endpoints"] == json!(endpoints)
                        && existing["ports"] == json!(ports) => {}
                Ok(existing) => {
                    let mut upd = (*existing).clone();
                    upd["endpoints"] = json!(endpoints);
                    upd["ports"] = json!(ports);
                    if let Some(m) = upd["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    let _ = store.update_shared(
                        &t.eps,
                        &ns,
                        &slice_name,
                        upd,
                        &ctx(&sav, false),
                        false,
                    );
                }
                Err(_) => {
                    let slice = json!({
                        "metadata": {"name": slice_name, "namespace": ns,
                            "labels": {"kubernetes.io/service-name": name,
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                            "ownerReferences": [owner_ref(svc, &t.svc)]},
                        "addressType": "IPv4",
                        "endpoints": endpoints,
                        "ports": ports,
                    });
                    let _ = store.create(&t.eps, &ns, slice, &ctx(&sav, false));
                }
            }
        }
    }
}
