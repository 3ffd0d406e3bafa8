//! Just enough OpenAPI v3 for kubectl's field-validation check.
//!
//! kubectl (1.27+) validates manifests on the server when the OpenAPI v3
//! document of the object's group version lists a `fieldValidation`
//! parameter on its PATCH operation (`QueryParamVerifierV3`); without any
//! OpenAPI it refuses to apply unless told `--validate=false`. kubesim
//! serves the root (`/openapi/v3`) and per group-version documents holding
//! those PATCH operations, and no schemas: validation is not emulated.

use crate::resources::Registry;
use serde_json::{Map, Value, json};

/// The path of a group version under `/openapi/v3/`: `api/v1`, `apis/apps/v1`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn group_versions(reg: &Registry) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for t in reg.all() {
        let gv = (t.group.clone(), t.version.clone());
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

/// `/openapi/v3`: where each group version's document is.
pub fn root(reg: &Registry) -> Value {
    let paths: Map<String, Value> = group_versions(reg)
        .into_iter()
        .map(|(g, v)| {
            let p = gv_path(&g, &v);
            let url = format!("/openapi/v3/{p}?hash=kubesim{}", reg.all().count());
            (p, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// `/openapi/v3/<gv path>`: the PATCH operation of each kind in the group
/// version, with its `x-kubernetes-group-version-kind` and `fieldValidation`.
pub fn group_version(reg: &Registry, path: &str) -> Option<Value> {
    let (g, v) = group_versions(reg)
        .into_iter()
        .find(|(g, v)| gv_path(g, v) == path)?;
    let mut paths = Map::new();
    for t in reg.all().filter(|t| t.group == g && t.version == v) {
        let prefix = if g.is_empty() {
            format!("/api/{v}")
        } else {
            format!("/apis/{g}/{v}")
        };
        let url = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{prefix}/{}/{{name}}", t.plural)
        };
        let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
        paths.insert(
            url,
            json!({"patch": {
                "operationId": format!("patch{}", t.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": t.group, "version": t.version, "kind": t.kind},
                "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation"), query("force")],
                "responses": {"200": {"description": "OK"}},
            }}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kubesim)", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_points_at_each_group_version() {
        let reg = Registry::with_builtins();
        let r = root(&reg);
        assert!(
            r["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/api/v1?")
        );
        assert!(r["paths"]["apis/apps/v1"].is_object());
    }

    #[test]
    fn deployments_patch_lists_field_validation() {
        let reg = Registry::with_builtins();
        let doc = group_version(&reg, "apis/apps/v1").unwrap();
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(group_version(&reg, "apis/nope/v1").is_none());
    }
}
