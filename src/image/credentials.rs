//! Registry credentials where `docker login` and `podman login` leave them,
//! so a deploy needs no login of its own.
//!
//! The file is `REGISTRY_AUTH_FILE` (podman's), else
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; its
//! `auths.<registry>.auth` is base64 of `user:password`. Credential helpers
//! (`credsStore`, `credHelpers`) are not run: a registry only a helper
//! knows is reported as refusing the run's (anonymous) request, with the
//! file to put a login in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::config::ReadError;

/// The largest credentials file read: a real one is a few kilobytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The logins of one credentials file, by registry host (`host[:port]`).
#[derive(Clone, Default)]
pub struct Credentials {
    logins: BTreeMap<String, (String, String)>,
    /// The file they came from, to name in messages.
    pub file: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Registries only: the passwords never reach a log.
        f.debug_struct("Credentials")
            .field("registries", &self.logins.keys().collect::<Vec<_>>())
            .field("file", &self.file)
            .finish()
    }
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Why the credentials file cannot be used; never quotes its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("{path} cannot be read ({why})")]
    Unreadable { path: String, why: String },
    #[error("{path} is not a file (a directory, a pipe or a device)")]
    NotAFile { path: String },
    #[error("{path} is over the {MAX_FILE_BYTES} bytes a registry login file may be")]
    TooLarge { path: String },
    #[error("{path} is not a registry login file ({why})")]
    NotJson { path: String, why: String },
    #[error("{path}: the login of {registry} is not base64 of user:password")]
    BadAuth { path: String, registry: String },
}

/// The registry host a login key names: `https://ghcr.io/v1/` and `ghcr.io`
/// are the same login; Docker Hub has three spellings.
pub fn registry_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => host,
    }
}

impl Credentials {
    /// The file this run reads logins from: `REGISTRY_AUTH_FILE`, then
    /// `DOCKER_CONFIG`'s, then the home directory's; `None` when none of
    /// them exists (every registry is then asked anonymously).
    pub fn locate(
        registry_auth_file: Option<&str>,
        docker_config: Option<&str>,
        home: Option<&Path>,
    ) -> Option<PathBuf> {
        if let Some(f) = registry_auth_file.filter(|f| !f.is_empty()) {
            // Named on purpose: a missing one is an error, not a fallback.
            return Some(PathBuf::from(f));
        }
        let candidate = match docker_config.filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir).join("config.json"),
            None => home?.join(".docker").join("config.json"),
        };
        candidate.is_file().then_some(candidate)
    }

    /// Read the logins of `path`; `None` reads none.
    pub fn read(path: Option<&Path>) -> Result<Credentials, CredentialsError> {
        let Some(path) = path else {
            return Ok(Credentials::default());
        };
        let shown = path.display().to_string();
        let unreadable = |e: std::io::Error| CredentialsError::Unreadable {
            path: shown.clone(),
            why: e.kind().to_string(),
        };
        // A FIFO would block the open until something writes to it.
        if !std::fs::metadata(path).map_err(unreadable)?.is_file() {
            return Err(CredentialsError::NotAFile { path: shown });
        }
        let text = crate::config::read_at_most(path, MAX_FILE_BYTES).map_err(|e| match e {
            ReadError::Io(e) => unreadable(e),
            ReadError::Over => CredentialsError::TooLarge {
                path: shown.clone(),
            },
        })?;
        let file: File = serde_json::from_slice(&text).map_err(|e| CredentialsError::NotJson {
            path: shown.clone(),
            why: format!("line {}, column {}", e.line(), e.column()),
        })?;
        let mut logins = BTreeMap::new();
        for (key, entry) in file.auths {
            let registry = registry_host(&key);
            let login = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) => decode(&auth).ok_or_else(|| CredentialsError::BadAuth {
                    path: shown.clone(),
                    registry: registry.clone(),
                })?,
                (None, Some(user), Some(password)) => (user, password),
                // An entry a credential helper fills: nothing here to use.
                _ => continue,
            };
            crate::redact::register(&format!("the {registry} login"), &login.1);
            logins.insert(registry, login);
        }
        Ok(Credentials {
            logins,
            file: Some(path.to_path_buf()),
        })
    }

    /// How to authenticate to `registry` (`host[:port]`).
    pub fn auth_for(&self, registry: &str) -> RegistryAuth {
        match self.logins.get(&registry_host(registry)) {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Whether the file holds a login for `registry`.
    pub fn has_login(&self, registry: &str) -> bool {
        self.logins.contains_key(&registry_host(registry))
    }
}

fn decode(auth: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        (dir, path)
    }

    #[test]
    fn a_docker_login_is_found_under_any_spelling_of_its_registry() {
        // base64("ci:s3cret-registry-pass")
        let (_d, path) = file(
            r#"{"auths": {"https://ghcr.io/v1/": {"auth": "Y2k6czNjcmV0LXJlZ2lzdHJ5LXBhc3M="},
                          "registry.example.com:5000": {"username": "u", "password": "p4ssword-long"},
                          "helper.example.com": {}},
                "credsStore": "desktop"}"#,
        );
        let c = Credentials::read(Some(&path)).unwrap();
        assert_eq!(
            c.auth_for("ghcr.io"),
            RegistryAuth::Basic("ci".into(), "s3cret-registry-pass".into())
        );
        assert!(c.has_login("registry.example.com:5000"));
        assert!(
            !c.has_login("helper.example.com"),
            "a helper's entry has no login"
        );
        assert_eq!(c.auth_for("quay.io"), RegistryAuth::Anonymous);
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        assert_eq!(registry_host("https://index.docker.io/v1/"), "docker.io");
    }

    #[test]
    fn a_broken_file_is_named_without_its_content() {
        let (_d, path) = file(r#"{"auths": {"ghcr.io": {"auth": "not base64 at all!"}}}"#);
        let err = Credentials::read(Some(&path)).unwrap_err();
        assert!(matches!(err, CredentialsError::BadAuth { .. }), "{err}");
        assert!(!err.to_string().contains("not base64 at all"), "{err}");
        let (_d, path) = file("{\"auths\": ");
        assert!(matches!(
            Credentials::read(Some(&path)).unwrap_err(),
            CredentialsError::NotJson { .. }
        ));
        let missing = Path::new("/nonexistent/auth.json");
        assert!(matches!(
            Credentials::read(Some(missing)).unwrap_err(),
            CredentialsError::Unreadable { .. }
        ));
    }

    #[test]
    fn a_login_file_past_the_bound_or_not_a_file_stops_at_once() {
        let (_d, path) = file(&format!(
            r#"{{"auths": {{}}, "padding": "{}"}}"#,
            "x".repeat(MAX_FILE_BYTES as usize)
        ));
        let err = Credentials::read(Some(&path)).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("is over the 1048576 bytes a registry login file may be"),
            "{err}"
        );
        // Read whole, /dev/zero would fill memory; a FIFO nobody writes
        // to would block the open for ever.
        let err = Credentials::read(Some(Path::new("/dev/zero"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/zero is not a file (a directory, a pipe or a device)"
        );
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("auth.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = Credentials::read(Some(&fifo)).unwrap_err();
        assert!(matches!(err, CredentialsError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn the_file_named_on_purpose_wins_and_a_missing_default_is_no_file() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(
            Credentials::locate(Some("/run/auth.json"), None, Some(home.path())),
            Some(PathBuf::from("/run/auth.json"))
        );
        assert_eq!(Credentials::locate(None, None, Some(home.path())), None);
        std::fs::create_dir(home.path().join(".docker")).unwrap();
        std::fs::write(home.path().join(".docker/config.json"), "{}").unwrap();
        assert_eq!(
            Credentials::locate(None, None, Some(home.path())),
            Some(home.path().join(".docker/config.json"))
        );
    }
}
