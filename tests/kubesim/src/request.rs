//! What an API request asks for, decoded from method, path and query the way
//! kube-apiserver's RequestInfo resolver does: verb, group, version,
//! resource, subresource, namespace, name.

use std::collections::HashMap;

/// The decoded request target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestInfo {
    /// RBAC verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

/// Non-resource paths and resource requests.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`
    Resources(String, String),
    /// `/openapi/v3`
    OpenApiRoot,
    /// `/openapi/v3/<api/v1 | apis/group/version>`
    OpenApiGroupVersion(String),
    Resource(RequestInfo),
    Unknown,
}

/// Decodes the query string into a map (last value wins).
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Maps method and path to a target. `is_namespaced_resource(group, version,
/// name)` tells `/api/v1/namespaces/x/pods` (pods in x) apart from
/// `/api/v1/namespaces/x/status` (the namespace's status).
pub fn resolve(
    method: &str,
    path: &str,
    query: &HashMap<String, String>,
    is_resource: impl Fn(&str, &str, &str) -> bool,
) -> Target {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Target::Version,
        ["healthz" | "livez" | "readyz", ..] => return Target::Health,
        ["api"] => return Target::CoreVersions,
        ["openapi", "v3"] => return Target::OpenApiRoot,
        ["openapi", "v3", rest @ ..] => return Target::OpenApiGroupVersion(rest.join("/")),
        ["apis"] => return Target::Groups,
        ["apis", g] => return Target::Group(g.to_string()),
        ["api", v] => return Target::Resources(String::new(), v.to_string()),
        ["apis", g, v] => return Target::Resources(g.to_string(), v.to_string()),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Target::Unknown,
    };
    let mut info = RequestInfo {
        group: group.into(),
        version: version.into(),
        ..Default::default()
    };
    let rest: &[&str] = match rest {
        ["namespaces", ns, res, tail @ ..] if is_resource(group, version, res) => {
            info.namespace = ns.to_string();
            info.resource = res.to_string();
            tail
        }
        [res, tail @ ..] => {
            info.resource = res.to_string();
            tail
        }
        [] => return Target::Unknown,
    };
    match rest {
        [] => {}
        [name] => info.name = name.to_string(),
        [name, sub] => {
            info.name = name.to_string();
            info.subresource = sub.to_string();
        }
        _ => return Target::Unknown,
    }
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    info.verb = match (method, info.name.is_empty()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "list",
        ("GET", false) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        _ => "unknown",
    }
    .into();
    // The namespace object's own name is its namespace, as RBAC sees it.
    if info.group.is_empty() && info.resource == "namespaces" && info.namespace.is_empty() {
        info.namespace = info.name.clone();
    }
    Target::Resource(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: &str, path: &str, q: &str) -> Target {
        resolve(method, path, &parse_query(Some(q)), |_, _, res| {
            res != "status" && res != "finalize"
        })
    }

    fn info(t: Target) -> RequestInfo {
        match t {
            Target::Resource(i) => i,
            other => panic!("not a resource request: {other:?}"),
        }
    }

    #[test]
    fn namespaced_collection_and_object() {
        let i = info(r("GET", "/apis/apps/v1/namespaces/prod/deployments", ""));
        assert_eq!(
            (i.verb.as_str(), i.group.as_str(), i.namespace.as_str()),
            ("list", "apps", "prod")
        );
        let i = info(r(
            "PATCH",
            "/apis/apps/v1/namespaces/prod/deployments/web/status",
            "",
        ));
        assert_eq!(
            (i.verb.as_str(), i.name.as_str(), i.subresource.as_str()),
            ("patch", "web", "status")
        );
    }

    #[test]
    fn watch_and_deletecollection_verbs() {
        assert_eq!(info(r("GET", "/api/v1/pods", "watch=true")).verb, "watch");
        assert_eq!(
            info(r("DELETE", "/api/v1/namespaces/a/configmaps", "")).verb,
            "deletecollection"
        );
    }

    #[test]
    fn a_namespace_status_is_not_a_resource_in_the_namespace() {
        let i = info(r("PUT", "/api/v1/namespaces/prod/status", ""));
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.subresource.as_str()),
            ("namespaces", "prod", "status")
        );
    }

    #[test]
    fn discovery_paths() {
        assert_eq!(
            r("GET", "/apis/apps/v1", ""),
            Target::Resources("apps".into(), "v1".into())
        );
        assert_eq!(r("GET", "/api", ""), Target::CoreVersions);
        assert_eq!(r("GET", "/openapi/v3", ""), Target::OpenApiRoot);
        assert_eq!(r("GET", "/openapi/v2", ""), Target::Unknown);
    }
}
