//! API errors as `Status` objects with kube-apiserver's codes, reasons and
//! messages, so clients that branch on `reason` (kube's `ErrorResponse`,
//! kubectl's `errors.IsNotFound`) behave as against a real cluster.

use crate::resources::ResourceType;
use serde_json::{Value, json};

/// An error response: HTTP code, `Status.reason`, message and details.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
    /// Seconds for the `Retry-After` header (429, 503 faults).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Value) -> Self {
        ApiError {
            code,
            reason,
            message,
            details,
            retry_after: None,
        }
    }

    pub(crate) fn details(rt: &ResourceType, name: &str) -> Value {
        let mut d = json!({"name": name, "kind": rt.plural});
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        d
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", rt.qualified_name(), name),
            Self::details(rt, name),
        )
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
            json!({"name": ns, "kind": "namespaces"}),
        )
    }

    /// A URL that names no served resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
            json!({}),
        )
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", rt.qualified_name(), name),
            Self::details(rt, name),
        )
    }

    /// An update whose resourceVersion is stale (optimistic concurrency).
    pub fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                rt.qualified_name(),
                name
            ),
            Self::details(rt, name),
        )
    }

    /// A DELETE whose preconditions (uid, then resourceVersion) are not the
    /// object's. kube-apiserver checks them before deleting
    /// (`rest.BeforeDelete`) and names the kind, not the resource: `on
    /// ConfigMap "x"`, `on Lease.coordination.k8s.io "x"`.
    pub fn precondition_failed(
        rt: &ResourceType,
        name: &str,
        what: &str,
        wanted: &str,
        found: &str,
    ) -> Self {
        let kind = if rt.group.is_empty() {
            rt.kind.clone()
        } else {
            format!("{}.{}", rt.kind, rt.group)
        };
        let why = if what == "UID" {
            "The object might have been deleted and then recreated"
        } else {
            "The object might have been modified"
        };
        let mut details = json!({"name": name, "kind": rt.kind});
        if !rt.group.is_empty() {
            details["group"] = json!(rt.group);
        }
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the {what} in the precondition ({wanted}) does not match the {what} in record ({found}). {why}"
            ),
            details,
        )
    }

    /// Server-side apply conflicts as kube-apiserver words them: one cause
    /// per field, `conflict with "<manager>"` (plus ` using <apiVersion>`
    /// for an Update manager, ` with subresource "<s>"` for a
    /// subresource's), the message grouped by manager when there are
    /// several; details carry only the causes.
    pub fn apply_conflict(conflicts: &[ApplyConflict]) -> Self {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| {
                json!({"reason": "FieldManagerConflict",
                    "message": format!("conflict with {}", c.who()),
                    "field": c.field})
            })
            .collect();
        let message = match conflicts {
            [c] => format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                c.who(),
                c.field
            ),
            _ => {
                let mut by_manager: Vec<(String, Vec<&str>)> = Vec::new();
                let mut sorted: Vec<&ApplyConflict> = conflicts.iter().collect();
                sorted.sort_by_key(|c| c.identifier());
                for c in sorted {
                    match by_manager.last_mut() {
                        Some((who, fields)) if *who == c.who() => fields.push(&c.field),
                        _ => by_manager.push((c.who(), vec![&c.field])),
                    }
                }
                let lines: Vec<String> = by_manager
                    .iter()
                    .flat_map(|(who, fields)| {
                        std::iter::once(format!("conflicts with {who}:"))
                            .chain(fields.iter().map(|f| format!("- {f}")))
                    })
                    .collect();
                format!(
                    "Apply failed with {} conflicts: {}",
                    conflicts.len(),
                    lines.join("\n")
                )
            }
        };
        Self::new(409, "Conflict", message, json!({"causes": causes}))
    }

    pub fn invalid(rt: &ResourceType, name: &str, field: &str, why: &str) -> Self {
        let mut details = Self::details(rt, name);
        details["kind"] = json!(rt.kind);
        details["causes"] =
            json!([{"reason": "FieldValueInvalid", "message": why, "field": field}]);
        Self::new(
            422,
            "Invalid",
            format!("{} \"{}\" is invalid: {}: {}", rt.kind, name, field, why),
            details,
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), json!({}))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            json!({}),
        )
    }

    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct})"
            ),
            json!({}),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into(), json!({}))
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into(), json!({}))
    }

    /// An injected fault with one of the codes a real apiserver returns under load.
    pub fn fault(code: u16, retry_after: Option<u64>) -> Self {
        let (reason, message) = match code {
            429 => (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            ),
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            _ => (
                "InternalError",
                "an error on the server (\"kubesim fault\") has prevented the request from succeeding",
            ),
        };
        let mut details = json!({});
        if let Some(s) = retry_after {
            details["retryAfterSeconds"] = json!(s);
        }
        let mut e = Self::new(code, reason, message.into(), details);
        e.retry_after = retry_after;
        e
    }

    /// The `Status` object for the response body (and for watch ERROR
    /// events); empty details are left out, as kube-apiserver leaves them.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        });
        if self.details.as_object().is_none_or(|d| d.is_empty()) {
            s.as_object_mut().expect("an object").remove("details");
        }
        s
    }
}

/// What a DELETE that removed the object answers for most kinds: a Success
/// Status naming it (kube-apiserver's stores without `ReturnDeletedObject`).
pub fn deleted(rt: &ResourceType, obj: &Value) -> Value {
    let mut details = ApiError::details(rt, obj["metadata"]["name"].as_str().unwrap_or(""));
    details["uid"] = obj["metadata"]["uid"].clone();
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": details})
}

/// One field of a server-side apply conflict and the manager that owns it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplyConflict {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub subresource: Option<String>,
    /// `.data.x`, `.spec.replicas`
    pub field: String,
}

impl ApplyConflict {
    /// `"mgr"`, `"mgr" using v1`, `"mgr" with subresource "status" using v1`.
    fn who(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = self.subresource.as_deref().filter(|s| !s.is_empty()) {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    /// The order kube-apiserver groups conflicts in: its manager identifiers
    /// (the JSON of manager, operation, apiVersion for updates) sorted.
    fn identifier(&self) -> (String, String, String, Option<String>) {
        (
            self.manager.clone(),
            self.operation.clone(),
            self.api_version.clone(),
            self.subresource.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtin;

    #[test]
    fn not_found_reads_like_kube_apiserver() {
        let deploy = builtin()
            .into_iter()
            .find(|t| t.kind == "Deployment")
            .unwrap();
        let s = ApiError::not_found(&deploy, "web").to_status();
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["group"], "apps");
    }

    fn conflict(manager: &str, operation: &str, field: &str) -> ApplyConflict {
        ApplyConflict {
            manager: manager.into(),
            operation: operation.into(),
            api_version: "v1".into(),
            subresource: None,
            field: field.into(),
        }
    }

    #[test]
    fn apply_conflicts_read_like_kube_apiserver() {
        let one = ApiError::apply_conflict(&[conflict("mgr-a", "Apply", ".data.x")]).to_status();
        assert_eq!(
            one["message"],
            "Apply failed with 1 conflict: conflict with \"mgr-a\": .data.x"
        );
        assert_eq!(
            one["details"],
            json!({"causes": [{"reason": "FieldManagerConflict",
                "message": "conflict with \"mgr-a\"", "field": ".data.x"}]})
        );
        let many = ApiError::apply_conflict(&[
            conflict("mgr-b", "Apply", ".data.x"),
            conflict("editor", "Update", ".data.z"),
            conflict("mgr-b", "Apply", ".data.y"),
        ])
        .to_status();
        assert_eq!(
            many["message"],
            "Apply failed with 3 conflicts: conflicts with \"editor\" using v1:\n- .data.z\nconflicts with \"mgr-b\":\n- .data.x\n- .data.y"
        );
        assert_eq!(
            many["details"]["causes"][1]["message"],
            "conflict with \"editor\" using v1"
        );
    }

    #[test]
    fn empty_details_are_left_out() {
        let s = ApiError::bad_request("no").to_status();
        assert!(s.get("details").is_none(), "{s}");
    }

    #[test]
    fn too_many_requests_carries_retry_after() {
        let e = ApiError::fault(429, Some(2));
        assert_eq!(e.to_status()["details"]["retryAfterSeconds"], 2);
        assert_eq!(e.reason, "TooManyRequests");
    }
}
