//! The Vault client: KV v2 reads and the logins the tool supports.
//!
//! Built on Vault's HTTP API as documented: a KV v2 secret at
//! `<mount>/<path>` is read with `GET /v1/<mount>/data/<path>` and answers
//! `{"data":{"data":{...},"metadata":{...}}}`; errors answer
//! `{"errors":[...]}` (403 for a token that may not read, 404 for a path
//! that does not exist). Requests carry the token in `X-Vault-Token`. The
//! Kubernetes login is `POST /v1/auth/kubernetes/login` with
//! `{"role","jwt"}`, answering `auth.client_token`. The token is never put
//! in a message; the caller registers it with the redactor anyway.

use std::collections::BTreeMap;

use super::http::read_body;
use serde::Deserialize;

/// Where a pod's service account token is mounted.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// What went wrong reading a secret, each named so the user knows what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("Vault at {addr} cannot be reached: {why}")]
    Unreachable { addr: String, why: String },
    #[error("Vault denied the token access to {path} (403: {errors})")]
    Denied { path: String, errors: String },
    #[error("{path} does not exist in Vault (404), or its latest version is deleted")]
    NotFound { path: String },
    #[error("{path} has no key {key} (it has: {present})")]
    KeyMissing {
        path: String,
        key: String,
        present: String,
    },
    #[error("{path}#{key} is not a string value")]
    NotAString { path: String, key: String },
    #[error("{path}: Vault answered {status}: {errors}")]
    Unexpected {
        path: String,
        status: u16,
        errors: String,
    },
    #[error("the Kubernetes login to Vault failed: {why}")]
    Login { why: String },
}

/// The API path of a KV v2 secret: the first segment of the reference's
/// path is the mount (`secret/maily/production` →
/// `secret/data/maily/production`); a path already naming `data` is kept.
pub fn data_path(path: &str) -> Option<String> {
    let (mount, rest) = path.split_once('/')?;
    if rest.is_empty() {
        return None;
    }
    if rest.starts_with("data/") {
        Some(path.to_string())
    } else {
        Some(format!("{mount}/data/{rest}"))
    }
}

#[derive(Deserialize)]
struct KvResponse {
    data: Option<KvData>,
}

#[derive(Deserialize)]
struct KvData {
    data: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct ErrorsBody {
    #[serde(default)]
    errors: Vec<String>,
}

/// The secret's key/value pairs from a KV v2 answer, or what the status
/// and body say went wrong.
pub fn parse_kv(
    path: &str,
    status: u16,
    body: &str,
) -> Result<BTreeMap<String, serde_json::Value>, VaultError> {
    let errors = || {
        serde_json::from_str::<ErrorsBody>(body)
            .map(|b| b.errors.join("; "))
            .unwrap_or_default()
    };
    match status {
        200 => {
            let parsed: KvResponse =
                serde_json::from_str(body).map_err(|e| VaultError::Unexpected {
                    path: path.into(),
                    status,
                    errors: format!("not a KV v2 answer: {e}"),
                })?;
            // A deleted latest version answers with data null.
            parsed
                .data
                .and_then(|d| d.data)
                .ok_or_else(|| VaultError::NotFound { path: path.into() })
        }
        403 => Err(VaultError::Denied {
            path: path.into(),
            errors: errors(),
        }),
        404 => Err(VaultError::NotFound { path: path.into() }),
        _ => Err(VaultError::Unexpected {
            path: path.into(),
            status,
            errors: errors(),
        }),
    }
}

/// One key of a secret, as a string.
pub fn key_of(
    path: &str,
    data: &BTreeMap<String, serde_json::Value>,
    key: &str,
) -> Result<String, VaultError> {
    match data.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
        Some(_) => Err(VaultError::NotAString {
            path: path.into(),
            key: key.into(),
        }),
        None => Err(VaultError::KeyMissing {
            path: path.into(),
            key: key.into(),
            present: if data.is_empty() {
                "no keys".into()
            } else {
                data.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        }),
    }
}

#[derive(Deserialize)]
struct LoginResponse {
    auth: Option<LoginAuth>,
}

#[derive(Deserialize)]
struct LoginAuth {
    client_token: String,
}

/// The client token from a login answer.
pub fn parse_login(status: u16, body: &str) -> Result<String, VaultError> {
    if status != 200 {
        let errors = serde_json::from_str::<ErrorsBody>(body)
            .map(|b| b.errors.join("; "))
            .unwrap_or_default();
        return Err(VaultError::Login {
            why: format!("Vault answered {status}: {errors}"),
        });
    }
    serde_json::from_str::<LoginResponse>(body)
        .ok()
        .and_then(|r| r.auth)
        .map(|a| a.client_token)
        .ok_or_else(|| VaultError::Login {
            why: "the answer has no auth.client_token".into(),
        })
}

/// A logged-in client.
#[derive(Clone)]
pub struct Vault {
    addr: String,
    token: String,
    http: reqwest::Client,
}

/// The client every request goes through: with `X-Vault-Namespace` on
/// each one when a namespace is given (HCP Vault and Vault Enterprise
/// serve a namespace's mounts only to requests that name it).
fn http_in(namespace: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(ns) = namespace.filter(|n| !n.is_empty())
        && let Ok(value) = reqwest::header::HeaderValue::from_str(ns)
    {
        headers.insert("X-Vault-Namespace", value);
    }
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .connect_timeout(std::time::Duration::from_secs(5))
        .default_headers(headers)
        .build()
        .unwrap_or_default()
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A transport error's text, without the URL (it holds nothing secret, but
/// the address is said once already).
fn transport(addr: &str, e: reqwest::Error) -> VaultError {
    let e = e.without_url();
    let mut why = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        why = format!("{why}: {s}");
        source = s.source();
    }
    VaultError::Unreachable {
        addr: addr.to_string(),
        why,
    }
}

impl Vault {
    /// A client with a token (`VAULT_AUTH_METHOD=token`), in `namespace`
    /// when given (`VAULT_NAMESPACE`).
    pub fn with_token(addr: &str, namespace: Option<&str>, token: &str) -> Vault {
        Vault {
            addr: addr.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: http_in(namespace),
        }
    }

    /// Log in with a Kubernetes service account token and a role
    /// (`VAULT_AUTH_METHOD=kubernetes`), in `namespace` when given.
    pub async fn kubernetes_login(
        addr: &str,
        namespace: Option<&str>,
        role: &str,
        jwt: &str,
    ) -> Result<Vault, VaultError> {
        let addr = addr.trim_end_matches('/').to_string();
        let http = http_in(namespace);
        let resp = http
            .post(format!("{addr}/v1/auth/kubernetes/login"))
            .json(&serde_json::json!({"role": role, "jwt": jwt}))
            .send()
            .await
            .map_err(|e| transport(&addr, e))?;
        let status = resp.status().as_u16();
        let body = read_body(resp)
            .await
            .map_err(|why| VaultError::Unreachable {
                addr: addr.clone(),
                why,
            })?;
        let token = parse_login(status, &body)?;
        Ok(Vault { addr, token, http })
    }

    /// The token the client uses (for the redactor).
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Read a KV v2 secret: all its keys.
    pub async fn read(
        &self,
        path: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>, VaultError> {
        let api = data_path(path).ok_or_else(|| VaultError::NotFound { path: path.into() })?;
        let resp = self
            .http
            .get(format!("{}/v1/{api}", self.addr))
            .header("X-Vault-Token", &self.token)
            .send()
            .await
            .map_err(|e| transport(&self.addr, e))?;
        let status = resp.status().as_u16();
        let body = read_body(resp)
            .await
            .map_err(|why| VaultError::Unreachable {
                addr: self.addr.clone(),
                why,
            })?;
        parse_kv(path, status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_is_the_first_segment() {
        assert_eq!(
            data_path("secret/maily/production").as_deref(),
            Some("secret/data/maily/production")
        );
        assert_eq!(data_path("kv/app").as_deref(), Some("kv/data/app"));
        assert_eq!(
            data_path("secret/data/maily").as_deref(),
            Some("secret/data/maily")
        );
        assert_eq!(data_path("secret"), None);
    }

    #[test]
    fn a_kv_v2_answer_gives_its_inner_data() {
        let body = r#"{"request_id":"x","lease_id":"","renewable":false,"lease_duration":0,
            "data":{"data":{"database_url":"postgres://u:p@db/m","port":5432},
            "metadata":{"created_time":"2018-03-22T02:24:06.945319214Z","deletion_time":"","destroyed":false,"version":2}}}"#;
        let data = parse_kv("secret/maily", 200, body).unwrap();
        assert_eq!(
            key_of("secret/maily", &data, "database_url").unwrap(),
            "postgres://u:p@db/m"
        );
        assert_eq!(key_of("secret/maily", &data, "port").unwrap(), "5432");
        let err = key_of("secret/maily", &data, "redis_url").unwrap_err();
        assert!(matches!(err, VaultError::KeyMissing { .. }));
        assert!(err.to_string().contains("database_url, port"), "{err}");
    }

    #[test]
    fn each_failure_is_named() {
        assert!(matches!(
            parse_kv("p/x", 404, r#"{"errors":[]}"#),
            Err(VaultError::NotFound { .. })
        ));
        let denied = parse_kv("p/x", 403, r#"{"errors":["permission denied"]}"#).unwrap_err();
        assert!(denied.to_string().contains("permission denied"), "{denied}");
        assert!(matches!(
            parse_kv(
                "p/x",
                200,
                r#"{"data":{"data":null,"metadata":{"deletion_time":"2024-01-01T00:00:00Z"}}}"#
            ),
            Err(VaultError::NotFound { .. })
        ));
        assert!(matches!(
            parse_kv("p/x", 500, r#"{"errors":["internal error"]}"#),
            Err(VaultError::Unexpected { status: 500, .. })
        ));
    }

    #[test]
    fn a_login_answer_gives_the_client_token() {
        let body = r#"{"auth":{"client_token":"hvs.abc","accessor":"x","policies":["default"],"lease_duration":3600,"renewable":true}}"#;
        assert_eq!(parse_login(200, body).unwrap(), "hvs.abc");
        let err = parse_login(400, r#"{"errors":["invalid role name \"nope\""]}"#).unwrap_err();
        assert!(err.to_string().contains("invalid role name"), "{err}");
    }
}
