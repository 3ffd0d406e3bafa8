//! What kube-apiserver's registry strategies do to an object before it is
//! stored: defaulting (the fields later logic reads) and the validation
//! clients rely on getting a 422 Invalid for.

use crate::resources::{self, ResourceType};
use crate::selector::LabelSelector;
use crate::status::ApiError;
use crate::store::now_rfc3339;
use serde_json::{Value, json};

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The one node every pod runs on, Ready.
pub fn node() -> Value {
    let now = now_rfc3339();
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "kubesim-node", "labels": {
            "kubernetes.io/hostname": "kubesim-node", "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "node-role.kubernetes.io/control-plane": ""}},
        "spec": {"podCIDR": "10.244.0.0/16", "podCIDRs": ["10.244.0.0/16"]},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                 "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
                 "message": "kubelet has no disk pressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
                 "message": "kubelet has sufficient PID available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now},
            ],
            "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}, {"type": "Hostname", "address": "kubesim-node"}],
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "nodeInfo": {"kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0", "containerRuntimeVersion": "containerd://2.0.0",
                "operatingSystem": "linux", "architecture": "amd64", "osImage": "kubesim", "kernelVersion": "6.1.0",
                "machineID": "kubesim", "systemUUID": "kubesim", "bootID": "kubesim"},
        },
    })
}

/// The pod spec defaults `kubectl get -o yaml` shows on a real cluster.
/// `restart_always` is false for Job templates, which must choose their own.
fn default_pod_spec(spec: &mut Value, restart_always: bool) {
    let defaults = [
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
    ];
    for (k, v) in defaults {
        if spec.get(k).is_none() {
            spec[k] = v;
        }
    }
    if restart_always && spec.get("restartPolicy").is_none() {
        spec["restartPolicy"] = json!("Always");
    }
    // `get_mut`, not indexing: indexing would add `"initContainers": null`
    // (and `"ports": null`) to objects that have none.
    for list in ["containers", "initContainers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for c in containers.into_iter().flatten() {
            if c.get("imagePullPolicy").is_none() {
                let image = c["image"].as_str().unwrap_or("");
                let latest = image.ends_with(":latest")
                    || !image.rsplit('/').next().unwrap_or("").contains(':');
                c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
            }
            if c.get("terminationMessagePath").is_none() {
                c["terminationMessagePath"] = json!("/dev/termination-log");
                c["terminationMessagePolicy"] = json!("File");
            }
            // ResourceRequirements is no pointer: the server always shows it.
            if c.get("resources").is_none() {
                c["resources"] = json!({});
            }
            let ports = c.get_mut("ports").and_then(Value::as_array_mut);
            for port in ports.into_iter().flatten() {
                if port.get("protocol").is_none() {
                    port["protocol"] = json!("TCP");
                }
            }
        }
    }
}

/// Kubernetes' defaulting for the fields later logic reads.
pub fn apply_defaults(rt: &ResourceType, obj: &mut Value) {
    let pod_spec = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => Some((&mut obj["spec"], true)),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") => {
            Some((&mut obj["spec"]["template"]["spec"], true))
        }
        ("batch", "Job") => Some((&mut obj["spec"]["template"]["spec"], false)),
        ("batch", "CronJob") => Some((
            &mut obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            false,
        )),
        _ => None,
    };
    if let Some((spec, restart_always)) = pod_spec
        && spec.is_object()
    {
        default_pod_spec(spec, restart_always);
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment") => {
            let spec = &mut obj["spec"];
            if spec.get("replicas").is_none() {
                spec["replicas"] = json!(1);
            }
            if spec.get("progressDeadlineSeconds").is_none() {
                spec["progressDeadlineSeconds"] = json!(600);
            }
            if spec.get("revisionHistoryLimit").is_none() {
                spec["revisionHistoryLimit"] = json!(10);
            }
            if spec.get("strategy").is_none() {
                spec["strategy"] = json!({"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
            }
        }
        ("apps", "StatefulSet") | ("apps", "ReplicaSet")
            if obj["spec"].get("replicas").is_none() =>
        {
            obj["spec"]["replicas"] = json!(1);
        }
        ("", "Service") => {
            let spec = &mut obj["spec"];
            if spec.get("type").is_none() {
                spec["type"] = json!("ClusterIP");
            }
            for port in spec["ports"].as_array_mut().into_iter().flatten() {
                if port.get("protocol").is_none() {
                    port["protocol"] = json!("TCP");
                }
                if port.get("targetPort").is_none() {
                    port["targetPort"] = port["port"].clone();
                }
            }
            if spec.get("clusterIP").is_none() && spec["type"] != "ExternalName" {
                // A stable address per Service, as the IP allocator would hand out.
                let h = std::hash::BuildHasher::hash_one(
                    &std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default(),
                    (meta_str(obj, "namespace"), meta_str(obj, "name")),
                );
                let spec = &mut obj["spec"];
                spec["clusterIP"] = json!(format!("10.96.{}.{}", (h >> 8) % 256, h % 253 + 2));
                spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
            }
        }
        ("", "Secret") => {
            // The apiserver folds the write-only stringData into data.
            if let Some(sd) = obj.get("stringData").and_then(Value::as_object).cloned() {
                use base64::Engine;
                if !obj["data"].is_object() {
                    obj["data"] = json!({});
                }
                for (k, v) in sd {
                    let raw = v.as_str().unwrap_or_default();
                    obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
                }
                obj.as_object_mut().expect("object").remove("stringData");
            }
            if obj.get("type").is_none() {
                obj["type"] = json!("Opaque");
            }
        }
        ("", "Namespace") => {
            if obj.get("spec").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            if obj["status"]["phase"].is_null() {
                obj["status"] = json!({"phase": "Active"});
            }
        }
        ("batch", "Job") => {
            let spec = &mut obj["spec"];
            if spec.get("backoffLimit").is_none() {
                spec["backoffLimit"] = json!(6);
            }
            if spec.get("completions").is_none() {
                spec["completions"] = json!(1);
            }
            if spec.get("parallelism").is_none() {
                spec["parallelism"] = json!(1);
            }
        }
        _ => {}
    }
}

/// Validation that clients rely on getting a 422 for.
pub fn validate(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let name = meta_str(obj, "name");
    if !is_dns1123_subdomain(name) {
        return Err(ApiError::invalid(
            rt,
            name,
            "metadata.name",
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ));
    }
    if rt.kind == "Deployment" || rt.kind == "ReplicaSet" || rt.kind == "StatefulSet" {
        let sel = &obj["spec"]["selector"];
        if !sel.is_object() {
            return Err(ApiError::invalid(
                rt,
                name,
                "spec.selector",
                "Required value",
            ));
        }
        let labels =
            crate::selector::labels_of(&json!({"metadata": obj["spec"]["template"]["metadata"]}));
        if !LabelSelector::from_object(sel).matches(&labels) {
            return Err(ApiError::invalid(
                rt,
                name,
                "spec.template.metadata.labels",
                "Invalid value: `selector` does not match template `labels`",
            ));
        }
        if let Some(r) = obj["spec"]["replicas"].as_i64()
            && r < 0
        {
            return Err(ApiError::invalid(
                rt,
                name,
                "spec.replicas",
                "must be greater than or equal to 0",
            ));
        }
    }
    if rt.kind == "CustomResourceDefinition" {
        resources::from_crd(obj).map_err(|why| ApiError::invalid(rt, name, "spec", &why))?;
    }
    Ok(())
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

    #[test]
    fn a_deployment_gets_kubernetes_defaults() {
        let mut d = json!({"metadata": {"name": "d"}, "spec": {}});
        apply_defaults(&t("Deployment"), &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    }

    #[test]
    fn pod_templates_and_service_ports_get_their_defaults() {
        let mut d = json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "api:1", "ports": [{"containerPort": 80}]}, {"name": "l", "image": "side"}]}}}});
        apply_defaults(&t("Deployment"), &mut d);
        let spec = &d["spec"]["template"]["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            spec["containers"][1]["imagePullPolicy"], "Always",
            "no tag means latest"
        );
        assert_eq!(spec["containers"][1]["resources"], json!({}));
        assert!(
            spec.get("initContainers").is_none(),
            "no null lists: {spec}"
        );
        assert!(spec["containers"][1].get("ports").is_none(), "{spec}");
        let mut job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "m:1"}]}}}});
        apply_defaults(&t("Job"), &mut job);
        assert!(
            job["spec"]["template"]["spec"]
                .get("restartPolicy")
                .is_none()
        );
        let mut svc =
            json!({"metadata": {"name": "s", "namespace": "n"}, "spec": {"ports": [{"port": 80}]}});
        apply_defaults(&t("Service"), &mut svc);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn a_selector_that_misses_the_template_is_invalid() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}}}});
        let e = validate(&t("Deployment"), &d).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
    }

    #[test]
    fn names_must_be_dns_subdomains() {
        assert!(is_dns1123_subdomain("api.v1-blue"));
        assert!(!is_dns1123_subdomain("Api"));
        assert!(!is_dns1123_subdomain("-api"));
        assert!(!is_dns1123_subdomain(""));
    }
}
