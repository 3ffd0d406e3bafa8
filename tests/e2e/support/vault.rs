//! Vault's answers for the tests: KV v2 reads as Vault's HTTP API documents
//! them, served to one token only, on a `wiremock` server.

use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

/// A KV v2 read's answer holding `data`.
pub fn kv(data: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "request_id": "5e3c2a1b", "lease_id": "", "renewable": false, "lease_duration": 0,
        "data": {
            "data": data,
            "metadata": {"created_time": "2025-01-01T00:00:00Z", "custom_metadata": null,
                         "deletion_time": "", "destroyed": false, "version": 3}
        },
        "wrap_info": null, "warnings": null, "auth": null
    }))
}

/// The KV v2 secret at `at` (`secret/data/maily/staging`), served to
/// `token` only, as often as it is read.
pub fn serve(at: &str, token: &str, data: serde_json::Value) -> Mock {
    Mock::given(method("GET"))
        .and(path(format!("/v1/{at}")))
        .and(header("X-Vault-Token", token))
        .respond_with(kv(data))
}

/// As [`serve`], read exactly once (one request per path, whatever the
/// number of keys).
pub fn secret(at: &str, token: &str, data: serde_json::Value) -> Mock {
    serve(at, token, data).expect(1)
}
