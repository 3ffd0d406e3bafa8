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

/// Decodes the query string into a map. A repeated parameter keeps its
/// first value, as kube-apiserver's option decoding reads `values[0]`.
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(q.unwrap_or("").as_bytes()).into_owned() {
        out.entry(k).or_insert(v);
    }
    out
}

/// A boolean query parameter as kube-apiserver decodes it into its options
/// (`watch`, `allowWatchBookmarks`, `sendInitialEvents`, `force`):
/// absent, `0` and `false` in any case are false; every other value is
/// true, the empty one and `f` included. That is apimachinery's
/// `Convert_Slice_string_To_bool`, not Go's `strconv.ParseBool`: the
/// official Python client sends `watch=True`, and `watch=f` is a watch.
pub fn query_bool(query: &HashMap<String, String>, key: &str) -> bool {
    query
        .get(key)
        .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
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
    let watch = query_bool(query, "watch");
    // As kube-apiserver's resolver: only a collection GET can be a watch;
    // `watch` on an object's own path is a get.
    info.verb = match (method, info.name.is_empty()) {
        ("GET", true) if watch => "watch",
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
    fn watch_is_decoded_as_kube_apiserver_decodes_it() {
        let verb = |q: &str| info(r("GET", "/api/v1/namespaces/a/configmaps", q)).verb;
        // Go's strconv.ParseBool true spellings (the Python client sends True) ...
        for q in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(verb(&format!("watch={q}")), "watch", "watch={q}");
        }
        // ... and anything else that is not 0 or false in some case.
        for q in ["f", "F", "yes", ""] {
            assert_eq!(verb(&format!("watch={q}")), "watch", "watch={q}");
        }
        for q in ["0", "false", "False", "FALSE", "fAlSe"] {
            assert_eq!(verb(&format!("watch={q}")), "list", "watch={q}");
        }
        assert_eq!(verb(""), "list");
        assert_eq!(verb("watching=true"), "list");
        let named = info(r("GET", "/api/v1/namespaces/a/configmaps/c", "watch=true"));
        assert_eq!(named.verb, "get", "an object's path is not watched");
    }

    #[test]
    fn boolean_parameters() {
        let q = parse_query(Some(
            "force=True&allowWatchBookmarks=1&sendInitialEvents=false",
        ));
        assert!(query_bool(&q, "force"));
        assert!(query_bool(&q, "allowWatchBookmarks"));
        assert!(!query_bool(&q, "sendInitialEvents"));
        assert!(!query_bool(&q, "watch"));
        let q = parse_query(Some("watch=false&watch=true"));
        assert!(!query_bool(&q, "watch"), "the first value counts");
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
