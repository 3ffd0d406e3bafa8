//! Decoding of the protobuf bodies kubectl's `create <kind>` generators send
//! (`application/vnd.kubernetes.protobuf`), for the kinds a person staging a
//! scenario creates that way (and `kubectl run`): Namespace, ServiceAccount,
//! ConfigMap, Secret, Pod, Deployment, Service, Job. Responses stay JSON, which kubectl accepts.
//!
//! The wire format: the magic `k8s\0`, then a `runtime.Unknown` message
//! (typeMeta = 1, raw = 2) whose `raw` is the object's message. Field
//! numbers follow `k8s.io/api/*/generated.proto`; fields not listed here are
//! skipped, so an unlisted field is lost rather than misread.

use serde_json::{Map, Value, json};

/// How one field of a message maps to JSON.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    /// `bytes`, rendered base64 as JSON does.
    Bytes,
    Msg(&'static str),
    RepeatedMsg(&'static str),
    RepeatedStr,
    MapStr,
    MapBytes,
    IntOrString,
}

use Kind::*;

/// Field tables: (number, JSON name, kind), per message.
fn fields(message: &str) -> &'static [(u64, &'static str, Kind)] {
    match message {
        "TypeMeta" => &[(1, "apiVersion", Str), (2, "kind", Str)],
        "ObjectMeta" => &[
            (1, "name", Str),
            (2, "generateName", Str),
            (3, "namespace", Str),
            (11, "labels", MapStr),
            (12, "annotations", MapStr),
            (14, "finalizers", RepeatedStr),
        ],
        "Namespace" | "ServiceAccount" => &[(1, "metadata", Msg("ObjectMeta"))],
        "Pod" => &[
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("PodSpec")),
        ],
        "ConfigMap" => &[
            (1, "metadata", Msg("ObjectMeta")),
            (2, "data", MapStr),
            (3, "binaryData", MapBytes),
            (4, "immutable", Bool),
        ],
        "Secret" => &[
            (1, "metadata", Msg("ObjectMeta")),
            (2, "data", MapBytes),
            (3, "type", Str),
            (4, "stringData", MapStr),
            (5, "immutable", Bool),
        ],
        "Deployment" => &[
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("DeploymentSpec")),
        ],
        "DeploymentSpec" => &[
            (1, "replicas", Int),
            (2, "selector", Msg("LabelSelector")),
            (3, "template", Msg("PodTemplateSpec")),
            (4, "strategy", Msg("DeploymentStrategy")),
            (5, "minReadySeconds", Int),
            (6, "revisionHistoryLimit", Int),
            (7, "paused", Bool),
            (9, "progressDeadlineSeconds", Int),
        ],
        "DeploymentStrategy" => &[
            (1, "type", Str),
            (2, "rollingUpdate", Msg("RollingUpdateDeployment")),
        ],
        "RollingUpdateDeployment" => &[
            (1, "maxUnavailable", IntOrString),
            (2, "maxSurge", IntOrString),
        ],
        "LabelSelector" => &[
            (1, "matchLabels", MapStr),
            (
                2,
                "matchExpressions",
                RepeatedMsg("LabelSelectorRequirement"),
            ),
        ],
        "LabelSelectorRequirement" => &[
            (1, "key", Str),
            (2, "operator", Str),
            (3, "values", RepeatedStr),
        ],
        "PodTemplateSpec" => &[
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("PodSpec")),
        ],
        "PodSpec" => &[
            (2, "containers", RepeatedMsg("Container")),
            (3, "restartPolicy", Str),
            (4, "terminationGracePeriodSeconds", Int),
            (6, "dnsPolicy", Str),
            (7, "nodeSelector", MapStr),
            (8, "serviceAccountName", Str),
            (20, "initContainers", RepeatedMsg("Container")),
        ],
        "Container" => &[
            (1, "name", Str),
            (2, "image", Str),
            (3, "command", RepeatedStr),
            (4, "args", RepeatedStr),
            (5, "workingDir", Str),
            (6, "ports", RepeatedMsg("ContainerPort")),
            (7, "env", RepeatedMsg("EnvVar")),
            (8, "resources", Msg("ResourceRequirements")),
            (14, "imagePullPolicy", Str),
        ],
        "ResourceRequirements" => &[],
        "ContainerPort" => &[
            (1, "name", Str),
            (3, "containerPort", Int),
            (4, "protocol", Str),
        ],
        "EnvVar" => &[(1, "name", Str), (2, "value", Str)],
        "Service" => &[
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("ServiceSpec")),
        ],
        "ServiceSpec" => &[
            (1, "ports", RepeatedMsg("ServicePort")),
            (2, "selector", MapStr),
            (3, "clusterIP", Str),
            (4, "type", Str),
        ],
        "ServicePort" => &[
            (1, "name", Str),
            (2, "protocol", Str),
            (3, "port", Int),
            (4, "targetPort", IntOrString),
            (5, "nodePort", Int),
        ],
        "Job" => &[
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("JobSpec")),
        ],
        "JobSpec" => &[
            (1, "parallelism", Int),
            (2, "completions", Int),
            (3, "activeDeadlineSeconds", Int),
            (6, "template", Msg("PodTemplateSpec")),
            (7, "backoffLimit", Int),
        ],
        "IntOrString" => &[(1, "type", Int), (2, "intVal", Int), (3, "strVal", Str)],
        "MapEntry" => &[(1, "key", Str), (2, "value", Str)],
        "MapEntryBytes" => &[(1, "key", Str), (2, "value", Bytes)],
        _ => &[],
    }
}

/// One raw field from the wire.
enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint too long".into())
}

fn read_fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (num, wt) = (key >> 3, key & 7);
        let w = match wt {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            2 => {
                let n = varint(buf, &mut pos)? as usize;
                let end = pos
                    .checked_add(n)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                let w = Wire::Len(&buf[pos..end]);
                pos = end;
                w
            }
            1 => {
                pos += 8;
                Wire::Fixed
            }
            5 => {
                pos += 4;
                Wire::Fixed
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        out.push((num, w));
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|e| e.to_string())
}

fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Decodes `buf` as `message` into a JSON object.
fn decode(message: &str, buf: &[u8]) -> Result<Value, String> {
    let table = fields(message);
    let mut obj = Map::new();
    for (num, w) in read_fields(buf)? {
        let Some((_, name, kind)) = table.iter().find(|(n, _, _)| *n == num) else {
            continue;
        };
        let name = name.to_string();
        match (kind, w) {
            // Go encodes every non-pointer field, JSON omits the empty
            // `omitempty` ones: "" strings, and these zero/false values.
            (Str, Wire::Len([])) => {}
            (Int, Wire::Varint(0)) if matches!(name.as_str(), "nodePort" | "minReadySeconds") => {}
            (Bool, Wire::Varint(0)) if name == "paused" => {}
            (Str, Wire::Len(b)) => {
                obj.insert(name, json!(text(b)?));
            }
            (Int, Wire::Varint(v)) => {
                obj.insert(name, json!(v as i64));
            }
            (Bool, Wire::Varint(v)) => {
                obj.insert(name, json!(v != 0));
            }
            (Bytes, Wire::Len(b)) => {
                obj.insert(name, json!(base64(b)));
            }
            (Msg(m), Wire::Len(b)) => {
                obj.insert(name, decode(m, b)?);
            }
            (RepeatedMsg(m), Wire::Len(b)) => {
                let item = decode(m, b)?;
                obj.entry(name)
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .expect("array")
                    .push(item);
            }
            (RepeatedStr, Wire::Len(b)) => {
                let item = json!(text(b)?);
                obj.entry(name)
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .expect("array")
                    .push(item);
            }
            (MapStr | MapBytes, Wire::Len(b)) => {
                let entry_kind = if matches!(kind, MapBytes) {
                    "MapEntryBytes"
                } else {
                    "MapEntry"
                };
                let e = decode(entry_kind, b)?;
                let key = e["key"].as_str().unwrap_or_default().to_string();
                let value = e.get("value").cloned().unwrap_or(json!(""));
                obj.entry(name).or_insert_with(|| json!({}))[key] = value;
            }
            (IntOrString, Wire::Len(b)) => {
                let v = decode("IntOrString", b)?;
                let value = if v["type"].as_i64() == Some(1) {
                    v["strVal"].clone()
                } else {
                    json!(v["intVal"].as_i64().unwrap_or(0))
                };
                obj.insert(name, value);
            }
            _ => return Err(format!("{message}.{name}: unexpected wire type")),
        }
    }
    Ok(Value::Object(obj))
}

/// Whether a body is a Kubernetes protobuf envelope.
pub fn is_protobuf(body: &[u8]) -> bool {
    body.starts_with(b"k8s\0")
}

/// The JSON form of a protobuf-encoded object, or why it cannot be read.
pub fn to_json(body: &[u8]) -> Result<Value, String> {
    let envelope = body.strip_prefix(b"k8s\0").ok_or("no k8s protobuf magic")?;
    let mut type_meta = json!({});
    let mut raw: &[u8] = &[];
    for (num, w) in read_fields(envelope)? {
        match (num, w) {
            (1, Wire::Len(b)) => type_meta = decode("TypeMeta", b)?,
            (2, Wire::Len(b)) => raw = b,
            _ => {}
        }
    }
    let kind = type_meta["kind"].as_str().unwrap_or_default().to_string();
    if fields(&kind).is_empty()
        || !matches!(
            kind.as_str(),
            "Namespace" | "ConfigMap" | "Secret" | "Deployment" | "Service" | "Job"
        )
    {
        return Err(format!(
            "protobuf bodies of kind {kind:?} are not supported; send JSON (kubectl apply)"
        ));
    }
    let mut obj = decode(&kind, raw)?;
    obj["apiVersion"] = type_meta["apiVersion"].clone();
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a length-delimited field, for building fixtures by hand.
    fn ld(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8];
        let mut n = payload.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(payload);
        out
    }

    fn vi(num: u64, v: u8) -> Vec<u8> {
        vec![(num << 3) as u8, v]
    }

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let tm = [ld(1, api_version.as_bytes()), ld(2, kind.as_bytes())].concat();
        [b"k8s\0".to_vec(), ld(1, &tm), ld(2, &raw)].concat()
    }

    #[test]
    fn a_configmap_decodes_with_its_data() {
        let meta = [
            ld(1, b"settings"),
            ld(11, &[ld(1, b"app"), ld(2, b"api")].concat()),
        ]
        .concat();
        let raw = [ld(1, &meta), ld(2, &[ld(1, b"a"), ld(2, b"b")].concat())].concat();
        let obj = to_json(&envelope("v1", "ConfigMap", raw)).unwrap();
        assert_eq!(obj["kind"], "ConfigMap");
        assert_eq!(obj["metadata"]["name"], "settings");
        assert_eq!(obj["metadata"]["labels"]["app"], "api");
        assert_eq!(obj["data"]["a"], "b");
    }

    #[test]
    fn a_deployment_decodes_down_to_its_container_image() {
        let container = [ld(1, b"web"), ld(2, b"nginx:broken-1")].concat();
        let pod_spec = ld(2, &container);
        let labels = ld(11, &[ld(1, b"app"), ld(2, b"web")].concat());
        let template = [ld(1, &labels), ld(2, &pod_spec)].concat();
        let selector = ld(1, &[ld(1, b"app"), ld(2, b"web")].concat());
        let spec = [vi(1, 3), ld(2, &selector), ld(3, &template)].concat();
        let raw = [ld(1, &ld(1, b"web")), ld(2, &spec)].concat();
        let obj = to_json(&envelope("apps/v1", "Deployment", raw)).unwrap();
        assert_eq!(obj["spec"]["replicas"], 3);
        assert_eq!(obj["spec"]["selector"]["matchLabels"]["app"], "web");
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:broken-1"
        );
    }

    #[test]
    fn empty_strings_and_omitempty_zeros_are_left_out() {
        let port = [ld(1, b""), vi(3, 80), ld(4, b""), vi(5, 0)].concat();
        let container = [ld(1, b"c"), ld(2, b"i:1"), ld(6, &port), ld(14, b"")].concat();
        let spec = [ld(2, &container)].concat();
        let template = ld(2, &spec);
        let raw = [
            ld(1, &ld(1, b"d")),
            ld(2, &[ld(3, &template), vi(7, 0)].concat()),
        ]
        .concat();
        let obj = to_json(&envelope("apps/v1", "Deployment", raw)).unwrap();
        let c = &obj["spec"]["template"]["spec"]["containers"][0];
        assert!(c.get("imagePullPolicy").is_none());
        assert_eq!(c["ports"][0], json!({"containerPort": 80}));
        assert!(obj["spec"].get("paused").is_none());
    }

    #[test]
    fn an_unsupported_kind_says_so() {
        let err = to_json(&envelope("v1", "Endpoints", vec![])).unwrap_err();
        assert!(err.contains("Endpoints"));
    }
}
