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

    fn details(rt: &ResourceType, name: &str) -> Value {
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

    /// Server-side apply conflicts, one cause per field.
    pub fn apply_conflict(rt: &ResourceType, name: &str, conflicts: &[(String, String)]) -> Self {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, f)| {
                json!({"type": "FieldManagerConflict",
                    "message": format!("conflict with \"{m}\" using {}", rt.api_version()),
                    "field": f})
            })
            .collect();
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, f)| format!("- conflict with \"{m}\" using {}: {f}", rt.api_version()))
            .collect();
        let mut details = Self::details(rt, name);
        details["causes"] = Value::Array(causes);
        Self::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                lines.join("\n")
            ),
            details,
        )
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

    /// The `Status` object for the response body (and for watch ERROR events).
    pub fn to_status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        })
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

    #[test]
    fn too_many_requests_carries_retry_after() {
        let e = ApiError::fault(429, Some(2));
        assert_eq!(e.to_status()["details"]["retryAfterSeconds"], 2);
        assert_eq!(e.reason, "TooManyRequests");
    }
}
