//! Tags to digests, asked of each image's registry before anything changes.
//!
//! A tag can be pushed again at any time; a digest names one manifest for
//! ever. Resolving every image of a release first means the slots run what
//! the run saw, a rollback can re-apply exactly that, and a missing tag, a
//! refused login or a registry that is down is found while nothing has
//! changed, all of them at once.
//!
//! The requests are the tool's own (the distribution spec's manifest HEAD,
//! and its GET where the answer names no `Docker-Content-Digest`; the
//! token flow of `WWW-Authenticate: Bearer`), so that every answer is read
//! with a bound: `oci_client`'s `fetch_manifest_digest` reads the manifest
//! GET and the token endpoint whole, and a registry, a proxy or a token
//! service answering with gigabytes would fill memory. `oci_client` still
//! parses the references.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap, WWW_AUTHENTICATE};
use sha2::{Digest as _, Sha256};

use super::credentials::Credentials;
use crate::providers::http::read_bytes_at_most;

/// How many registries are asked at once.
const CONCURRENCY: usize = 16;

/// The manifests asked for, single- and multi-platform, OCI's and
/// Docker's, as `docker pull` asks: the digest a registry gives is that of
/// the manifest it would serve for these.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// The most of a manifest read, where its digest must be computed from
/// its bytes: 4 MiB, the most a registry takes (distribution's and
/// containerd's own limit); a real one is a few kilobytes.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The most of a token endpoint's answer read: a token is a few
/// kilobytes of JSON.
pub const MAX_TOKEN_BYTES: usize = 1 << 20;

/// The most of an error answer read, for the codes it gives.
const MAX_ERROR_BYTES: usize = 64 << 10;

/// One image of the release, pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// As the release names it (`registry/repo:tag`), for people.
    pub image: String,
    /// `sha256:...`, as the registry's `Docker-Content-Digest` said (or
    /// the SHA-256 of the manifest it served, where it said none).
    pub digest: String,
    /// `registry/repo@sha256:...`: what a Deployment runs.
    pub reference: String,
}

/// Why one image could not be pinned. Each names the image and what to do;
/// none carries a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("is not an image reference ({0})")]
    NotAReference(String),
    #[error("does not exist in {registry}: no manifest for this tag")]
    NotFound { registry: String },
    #[error("{registry} refused the request{}", if *.had_login { " with the login from the credentials file" } else { " without a login" })]
    Refused { registry: String, had_login: bool },
    #[error("{registry} did not answer ({why})")]
    Unreachable { registry: String, why: String },
    #[error("{registry} did not answer within {}s", .after.as_secs())]
    TimedOut { registry: String, after: Duration },
    #[error("{registry} answered, but not as an OCI registry does ({why})")]
    NotARegistry { registry: String, why: String },
}

impl ResolveError {
    /// What a user does about it.
    pub fn fix(&self, credentials: &Credentials) -> String {
        let file = credentials.file.as_ref().map_or_else(
            || "~/.docker/config.json, or REGISTRY_AUTH_FILE".to_string(),
            |f| f.display().to_string(),
        );
        match self {
            ResolveError::NotAReference(_) => {
                "give registry/repository:tag, e.g. ghcr.io/maily/maily-api:v1.4.2".into()
            }
            ResolveError::NotFound { .. } => {
                "push the image first, or check IMAGE_TAG and IMAGE_REGISTRY".into()
            }
            ResolveError::Refused { registry, .. } => {
                format!("log in (docker login {registry}) or fix the login in {file}")
            }
            ResolveError::Unreachable { .. } | ResolveError::TimedOut { .. } => {
                "check IMAGE_REGISTRY and that this machine reaches the registry".into()
            }
            ResolveError::NotARegistry { .. } => "check IMAGE_REGISTRY".into(),
        }
    }
}

/// Registries Docker itself talks plain HTTP to: loopback ones.
fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// What a registry's `WWW-Authenticate` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    /// HTTP basic auth with the login.
    Basic,
    /// A token from `realm` (for `service`), then `Authorization: Bearer`.
    Bearer {
        realm: String,
        service: Option<String>,
    },
    /// A scheme the tool does not speak.
    Other,
}

/// The challenge a `WWW-Authenticate` value makes (RFC 9110 §11.6.1:
/// a scheme, then `name=value` pairs, values as tokens or quoted strings).
fn challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Challenge::Basic;
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Challenge::Other;
    }
    let params = auth_params(rest);
    match params.get("realm") {
        Some(realm) => Challenge::Bearer {
            realm: realm.clone(),
            service: params.get("service").cloned(),
        },
        None => Challenge::Other,
    }
}

/// `name=value, name="quoted, \"value\""` as a map, names lowercased.
fn auth_params(mut rest: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((name, after)) = rest.split_once('=') else {
            return out;
        };
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(name, value);
        rest = next;
    }
}

/// How a request is authorized.
enum Authorization {
    None,
    Basic(String, String),
    Bearer(String),
}

impl Authorization {
    fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Authorization::None => request,
            Authorization::Basic(user, password) => request.basic_auth(user, Some(password)),
            Authorization::Bearer(token) => request.bearer_auth(token),
        }
    }
}

/// The digest a registry names in `Docker-Content-Digest`, when it names
/// one of a form a digest has (`sha256:` and 64 hex digits, or `sha512:`
/// and 128).
fn digest_header(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("docker-content-digest")?.to_str().ok()?.trim();
    let (algorithm, hex) = value.split_once(':')?;
    let length = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return None,
    };
    (hex.len() == length && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

/// What an answer's status means for the image, the error codes of its
/// body (distribution's envelope) where it had one read.
fn refusal(status: StatusCode, codes: &[String], registry: &str, had_login: bool) -> ResolveError {
    let registry = registry.to_string();
    let codes = codes.join(",").to_ascii_uppercase();
    match status.as_u16() {
        401 | 403 => ResolveError::Refused {
            registry,
            had_login,
        },
        404 => ResolveError::NotFound { registry },
        _ if codes.contains("UNAUTHORIZED") || codes.contains("DENIED") => ResolveError::Refused {
            registry,
            had_login,
        },
        400..=499 if codes.contains("MANIFEST") || codes.contains("NAME") => {
            ResolveError::NotFound { registry }
        }
        _ => ResolveError::NotARegistry {
            registry,
            why: format!("it answered {status}"),
        },
    }
}

/// The codes of a distribution error envelope (`{"errors": [{"code": ..}]}`).
fn error_codes(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            Some(
                v.get("errors")?
                    .as_array()?
                    .iter()
                    .filter_map(|e| e.get("code")?.as_str().map(str::to_string))
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// A request that got no answer, in the network's words.
fn unreachable(e: reqwest::Error, registry: &str) -> ResolveError {
    let why = if e.is_connect() {
        // The innermost cause is what kubectl and curl say:
        // "Connection refused", "failed to lookup address".
        let mut source: &dyn std::error::Error = &e;
        while let Some(next) = source.source() {
            source = next;
        }
        source.to_string()
    } else {
        e.without_url().to_string()
    };
    ResolveError::Unreachable {
        registry: registry.to_string(),
        why: crate::redact::scrub(&why).into_owned(),
    }
}

/// One registry's answers for one image.
struct Ask<'a> {
    http: &'a reqwest::Client,
    reference: &'a Reference,
    registry: String,
    /// `http` for loopback registries, as Docker does; else `https`.
    scheme: &'static str,
    auth: RegistryAuth,
    had_login: bool,
}

impl Ask<'_> {
    fn manifest_url(&self) -> String {
        let r = self.reference;
        let at = r.digest().or(r.tag()).unwrap_or("latest");
        format!(
            "{}://{}/v2/{}/manifests/{at}",
            self.scheme,
            self.registry,
            r.repository()
        )
    }

    /// An answer's body, read no further than `limit` bytes; past it, the
    /// registry is not one (`too_big` says what was too big).
    async fn body_at_most(
        &self,
        answer: reqwest::Response,
        limit: usize,
        too_big: impl FnOnce() -> String,
    ) -> Result<Vec<u8>, ResolveError> {
        read_bytes_at_most(answer, limit)
            .await
            .map_err(|why| ResolveError::Unreachable {
                registry: self.registry.clone(),
                why,
            })?
            .ok_or_else(|| self.not_a_registry(too_big()))
    }

    fn not_a_registry(&self, why: String) -> ResolveError {
        ResolveError::NotARegistry {
            registry: self.registry.clone(),
            why,
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ResolveError> {
        request
            .send()
            .await
            .map_err(|e| unreachable(e, &self.registry))
    }

    /// Why an answer that is not 200 refuses the image, its body's codes
    /// read within a bound.
    async fn refused(&self, response: reqwest::Response) -> ResolveError {
        let status = response.status();
        let body = read_bytes_at_most(response, MAX_ERROR_BYTES)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        refusal(status, &error_codes(&body), &self.registry, self.had_login)
    }

    /// The manifest's digest: the HEAD's `Docker-Content-Digest`, or the
    /// SHA-256 of the manifest a GET serves, read to
    /// [`MAX_MANIFEST_BYTES`] at most.
    async fn digest(&self) -> Result<String, ResolveError> {
        let url = self.manifest_url();
        let head =
            |auth: &Authorization| auth.apply(self.http.head(&url).header(ACCEPT, MANIFEST_TYPES));
        let mut auth = match &self.auth {
            RegistryAuth::Bearer(token) => Authorization::Bearer(token.clone()),
            _ => Authorization::None,
        };
        let mut answer = self.send(head(&auth)).await?;
        if answer.status() == StatusCode::UNAUTHORIZED && matches!(auth, Authorization::None) {
            let asked = answer
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .map_or(Challenge::Other, challenge);
            auth = self.authorization(asked).await?;
            answer = self.send(head(&auth)).await?;
        }
        if answer.status() != StatusCode::OK {
            return Err(self.refused(answer).await);
        }
        let digest = match digest_header(answer.headers()) {
            Some(digest) => digest,
            None => self.digest_of_body(&url, &auth).await?,
        };
        if let Some(asked) = self.reference.digest()
            && !asked.eq_ignore_ascii_case(&digest)
        {
            return Err(self.not_a_registry(format!(
                "asked for {asked}, it answered with the manifest {digest}"
            )));
        }
        Ok(digest)
    }

    /// The SHA-256 of the manifest a GET serves (the registry named no
    /// digest in its HEAD answer), checked against the one it names in the
    /// GET's, if it names one there.
    async fn digest_of_body(
        &self,
        url: &str,
        auth: &Authorization,
    ) -> Result<String, ResolveError> {
        let answer = self
            .send(auth.apply(self.http.get(url).header(ACCEPT, MANIFEST_TYPES)))
            .await?;
        if answer.status() != StatusCode::OK {
            return Err(self.refused(answer).await);
        }
        let named = digest_header(answer.headers());
        let body = self
            .body_at_most(answer, MAX_MANIFEST_BYTES, || {
                format!(
                    "its manifest is over {MAX_MANIFEST_BYTES} bytes (4 MiB), the most a registry takes; it was read no further"
                )
            })
            .await?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        match named {
            Some(named) if named.starts_with("sha256:") && named != digest => Err(self
                .not_a_registry(format!(
                    "the manifest it served is {digest}, not the {named} it named"
                ))),
            _ => Ok(digest),
        }
    }

    /// The authorization a registry's challenge asks for, with the login
    /// the credentials file holds for it (if any).
    async fn authorization(&self, asked: Challenge) -> Result<Authorization, ResolveError> {
        let refused = || ResolveError::Refused {
            registry: self.registry.clone(),
            had_login: self.had_login,
        };
        let login = match &self.auth {
            RegistryAuth::Basic(user, password) => Some((user.clone(), password.clone())),
            _ => None,
        };
        match asked {
            Challenge::Basic => login
                .map(|(u, p)| Authorization::Basic(u, p))
                .ok_or_else(refused),
            Challenge::Bearer { realm, service } => {
                self.token(&realm, service.as_deref(), login).await
            }
            Challenge::Other => Err(refused()),
        }
    }

    /// A pull token for the image's repository from the challenge's realm
    /// (the Docker token flow), its answer read to [`MAX_TOKEN_BYTES`] at
    /// most. The login goes to the realm only over HTTPS (or to a loopback
    /// registry's, as plain as the registry itself).
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        login: Option<(String, String)>,
    ) -> Result<Authorization, ResolveError> {
        let url = reqwest::Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or_else(|| self.not_a_registry("its token realm is not an http(s) URL".into()))?;
        if url.scheme() == "http" && self.scheme == "https" {
            return Err(
                self.not_a_registry("it sends logins to a token realm over plain http".into())
            );
        }
        let scope = format!("repository:{}:pull", self.reference.repository());
        let mut request = self.http.get(url).query(&[("scope", scope.as_str())]);
        if let Some(service) = service {
            request = request.query(&[("service", service)]);
        }
        if let Some((user, password)) = login {
            request = request.basic_auth(user, Some(password));
        }
        let answer = self.send(request).await?;
        let status = answer.status();
        if !status.is_success() {
            return Err(match status.as_u16() {
                401 | 403 => ResolveError::Refused {
                    registry: self.registry.clone(),
                    had_login: self.had_login,
                },
                _ => self.not_a_registry(format!("its token realm answered {status}")),
            });
        }
        let body = self
            .body_at_most(answer, MAX_TOKEN_BYTES, || {
                format!(
                    "its token realm answered more than {MAX_TOKEN_BYTES} bytes (1 MiB), far more than a token; it was read no further"
                )
            })
            .await?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token = serde_json::from_slice::<Token>(&body)
            .ok()
            .and_then(|t| t.token.or(t.access_token))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.not_a_registry("its token realm gave no token".into()))?;
        Ok(Authorization::Bearer(token))
    }
}

/// Pin every image, each asked once however many services run it, at most
/// [`CONCURRENCY`] at a time and each within `timeout`. The answer is by
/// image: its digest, or why it has none.
pub async fn resolve(
    images: impl IntoIterator<Item = String>,
    credentials: &Credentials,
    timeout: Duration,
) -> BTreeMap<String, Result<Pinned, ResolveError>> {
    let mut parsed: BTreeMap<String, Result<Reference, ResolveError>> = BTreeMap::new();
    for image in images {
        let reference = image
            .parse::<Reference>()
            .map_err(|e| ResolveError::NotAReference(e.to_string()));
        parsed.insert(image, reference);
    }
    // The process's one crypto provider (main installs it too; a library
    // caller, such as a test, may not have).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .user_agent(concat!("maily-deploy/", env!("CARGO_PKG_VERSION")))
        .build();
    let http = &http;
    futures::stream::iter(parsed)
        .map(|(image, reference)| async move {
            let reference = match reference {
                Ok(r) => r,
                Err(e) => return (image, Err(e)),
            };
            let registry = reference.resolve_registry().to_string();
            let http = match http {
                Ok(http) => http,
                Err(e) => return (image, Err(unreachable_builder(e, &registry))),
            };
            let ask = Ask {
                http,
                reference: &reference,
                scheme: if is_loopback(&registry) {
                    "http"
                } else {
                    "https"
                },
                auth: credentials.auth_for(&registry),
                had_login: credentials.has_login(&registry),
                registry: registry.clone(),
            };
            let answer = match tokio::time::timeout(timeout, ask.digest()).await {
                Err(_) => Err(ResolveError::TimedOut {
                    registry,
                    after: timeout,
                }),
                Ok(Err(e)) => Err(e),
                Ok(Ok(digest)) => {
                    let name = format!("{}/{}", reference.registry(), reference.repository());
                    Ok(Pinned {
                        reference: format!("{name}@{digest}"),
                        image: image.clone(),
                        digest,
                    })
                }
            };
            (image, answer)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// The HTTP client could not be built (no TLS roots): every image says so.
fn unreachable_builder(e: &reqwest::Error, registry: &str) -> ResolveError {
    ResolveError::Unreachable {
        registry: registry.to_string(),
        why: format!("no HTTP client could be set up ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_the_plain_http_ones() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("ghcr.io"));
        assert!(!is_loopback("registry.example.com:5000"));
    }

    #[test]
    fn a_challenge_is_read_as_registries_write_it() {
        assert_eq!(
            challenge(
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:maily/api:pull,push""#
            ),
            Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into())
            }
        );
        assert_eq!(
            challenge(r#"bearer service=registry.docker.io, realm="https://auth.docker.io/t\"x""#),
            Challenge::Bearer {
                realm: "https://auth.docker.io/t\"x".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(challenge(r#"Basic realm="maily-test""#), Challenge::Basic);
        assert_eq!(challenge("Bearer service=x"), Challenge::Other);
        assert_eq!(challenge("Negotiate"), Challenge::Other);
    }

    #[test]
    fn a_digest_header_counts_only_in_a_digests_form() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("docker-content-digest", v.parse().unwrap());
            digest_header(&h)
        };
        let good = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(with(&good), Some(good.clone()));
        assert_eq!(with("sha256:abc"), None);
        assert_eq!(with(&format!("md5:{}", "ab".repeat(32))), None);
        assert_eq!(digest_header(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn a_registry_that_is_not_there_is_named_with_what_the_network_said() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let image = format!("127.0.0.1:{port}/maily/maily-api:v1");
        let answers = resolve(
            [image.clone(), "Not A Reference".to_string()],
            &Credentials::default(),
            Duration::from_secs(5),
        )
        .await;
        match &answers[&image] {
            Err(ResolveError::Unreachable { registry, why }) => {
                assert_eq!(registry, &format!("127.0.0.1:{port}"));
                assert!(why.to_lowercase().contains("refused"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            answers["Not A Reference"],
            Err(ResolveError::NotAReference(_))
        ));
    }
}
