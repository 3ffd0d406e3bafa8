//! Tags to digests, asked of each image's registry before anything changes.
//!
//! A tag can be pushed again at any time; a digest names one manifest for
//! ever. Resolving every image of a release first means the slots run what
//! the run saw, a rollback can re-apply exactly that, and a missing tag, a
//! refused login or a registry that is down is found while nothing has
//! changed, all of them at once.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference};

use super::credentials::Credentials;

/// How many registries are asked at once.
const CONCURRENCY: usize = 16;

/// One image of the release, pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// As the release names it (`registry/repo:tag`), for people.
    pub image: String,
    /// `sha256:...`, as the registry's `Docker-Content-Digest` said.
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

fn classify(e: OciDistributionError, registry: &str, had_login: bool) -> ResolveError {
    let registry = registry.to_string();
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => ResolveError::NotFound { registry },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => ResolveError::Refused {
            registry,
            had_login,
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}", e.code))
                .collect();
            let text = codes.join(",").to_ascii_uppercase();
            if text.contains("UNAUTHORIZED") || text.contains("DENIED") {
                ResolveError::Refused {
                    registry,
                    had_login,
                }
            } else if text.contains("MANIFEST") || text.contains("NAME") {
                ResolveError::NotFound { registry }
            } else {
                ResolveError::NotARegistry {
                    registry,
                    why: crate::error::clipped(&envelope.to_string()).into_owned(),
                }
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => ResolveError::NotFound { registry },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => ResolveError::Refused {
            registry,
            had_login,
        },
        OciDistributionError::RequestError(e) => {
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
            ResolveError::Unreachable { registry, why }
        }
        other => ResolveError::NotARegistry {
            registry,
            why: crate::error::clipped(&other.to_string()).into_owned(),
        },
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
    let plain_http: Vec<String> = parsed
        .values()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.resolve_registry().to_string())
        .filter(|r| is_loopback(r))
        .collect();
    // The process's one crypto provider (main installs it too; a library
    // caller, such as a test, may not have).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::HttpsExcept(plain_http),
        connect_timeout: Some(timeout),
        read_timeout: Some(timeout),
        ..Default::default()
    });
    let client = &client;
    futures::stream::iter(parsed)
        .map(|(image, reference)| async move {
            let reference = match reference {
                Ok(r) => r,
                Err(e) => return (image, Err(e)),
            };
            let registry = reference.resolve_registry().to_string();
            let auth = credentials.auth_for(&registry);
            let had_login = credentials.has_login(&registry);
            let asked =
                tokio::time::timeout(timeout, client.fetch_manifest_digest(&reference, &auth))
                    .await;
            let answer = match asked {
                Err(_) => Err(ResolveError::TimedOut {
                    registry,
                    after: timeout,
                }),
                Ok(Err(e)) => Err(classify(e, &registry, had_login)),
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
