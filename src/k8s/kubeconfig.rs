//! Which cluster, as the user named it: the kubeconfig and its context, and
//! the words for when it cannot be used or does not answer.
//!
//! kubectl's messages are the ones a Kubernetes user knows ("the
//! connection to the server … was refused", "no such host", the context
//! that does not exist and those that do); kube's carry the same facts
//! three layers deep and twice over. So the checks kubectl makes before
//! its first request are made here, and a failed first request is read
//! down to its cause.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::Config;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Kind, fail};

/// The largest kubeconfig read: real ones are kilobytes (a few certificates
/// inline); a bigger file is not one.
pub const MAX_KUBECONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// The cluster a run talks to, for messages: the server, the context, and
/// where they came from. Never a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub server: String,
    pub context: Option<String>,
    /// `/path/kubeconfig`, `$KUBECONFIG (…)`, `~/.kube/config` or the
    /// in-cluster service account.
    pub source: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.context {
            Some(c) => write!(f, "{} (context {c} of {})", self.server, self.source),
            None => write!(f, "{} ({})", self.server, self.source),
        }
    }
}

fn config_error(message: String) -> anyhow::Error {
    fail(Kind::Config, message)
}

/// Read one kubeconfig file, with one message per way it can fail.
fn read_file(path: &Path, named_by: &str) -> anyhow::Result<Kubeconfig> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        config_error(match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "the kubeconfig {shown} ({named_by}) does not exist; {}",
                match named_by {
                    "--kubeconfig" => "give the path of a kubeconfig file, or leave --kubeconfig out to use $KUBECONFIG or ~/.kube/config",
                    _ => "point $KUBECONFIG at a kubeconfig file, unset it to use ~/.kube/config, or pass --kubeconfig PATH",
                }
            ),
            _ => format!("the kubeconfig {shown} ({named_by}) cannot be read: {e}"),
        })
    })?;
    if !meta.is_file() {
        return Err(config_error(format!(
            "the kubeconfig {shown} ({named_by}) is not a file"
        )));
    }
    if meta.len() > MAX_KUBECONFIG_BYTES {
        return Err(config_error(format!(
            "the kubeconfig {shown} ({named_by}) is {} bytes, more than a kubeconfig's {} at most",
            meta.len(),
            MAX_KUBECONFIG_BYTES
        )));
    }
    Kubeconfig::read_from(path).map_err(|e| {
        config_error(format!(
            "the kubeconfig {shown} ({named_by}) cannot be used: {}",
            innermost(&e)
        ))
    })
}

/// The deepest cause's words: kube's errors repeat their sources in their
/// own text. A YAML error is told by its place alone: its parser quotes
/// the lines around the fault, and a kubeconfig's lines are tokens and
/// keys.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(kube::config::KubeconfigError::Parse(yaml)) =
        e.downcast_ref::<kube::config::KubeconfigError>()
    {
        return format!("not a kubeconfig: {}", yaml.without_snippet());
    }
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

fn default_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube").join("config"))
}

/// The context to use, or why none can be: `wanted` (from `--context`) or
/// the current one, and it must be among those the file has.
pub fn choose_context(
    kubeconfig: &Kubeconfig,
    wanted: Option<&str>,
    source: &str,
) -> Result<String, String> {
    let names: Vec<&str> = kubeconfig
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let listed = if names.is_empty() {
        "it has none".to_string()
    } else {
        let mut shown: Vec<&str> = names.iter().copied().take(20).collect();
        shown.sort_unstable();
        let more = names.len().saturating_sub(shown.len());
        format!(
            "its contexts: {}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more (kubectl config get-contexts)")
            } else {
                String::new()
            }
        )
    };
    match wanted {
        Some(w) if names.contains(&w) => Ok(w.to_string()),
        Some(w) => Err(format!(
            "the context {} (--context) is not in {source}; {listed}",
            crate::error::clipped(w)
        )),
        None => match kubeconfig
            .current_context
            .as_deref()
            .filter(|c| !c.is_empty())
        {
            Some(c) if names.contains(&c) => Ok(c.to_string()),
            Some(c) => Err(format!(
                "the current context of {source}, {}, is not one of its contexts; pass --context NAME ({listed})",
                crate::error::clipped(c)
            )),
            None => Err(format!(
                "{source} sets no current context; pass --context NAME ({listed})"
            )),
        },
    }
}

/// The entries of a `$KUBECONFIG` list to read, as kubectl chooses them
/// (client-go's `clientcmd` loading rules): an entry that does not exist is
/// skipped (a list shared between machines names files some of them
/// lack); an empty entry (`a::b`) names nothing; a file named twice is read once.
/// Only when none exists is there nothing to read: then `Err` holds every
/// entry, so the message can name them all. An entry that exists but
/// cannot be used (a directory, unreadable, not YAML) is not skipped:
/// kubectl refuses it too, and [`read_file`] says why.
fn present_entries(
    listed: &[PathBuf],
    exists: impl Fn(&Path) -> bool,
) -> Result<Vec<PathBuf>, Vec<PathBuf>> {
    let mut named: Vec<PathBuf> = Vec::new();
    for p in listed.iter().filter(|p| !p.as_os_str().is_empty()) {
        if !named.contains(p) {
            named.push(p.clone());
        }
    }
    let present: Vec<PathBuf> = named.iter().filter(|p| exists(p)).cloned().collect();
    if present.is_empty() {
        Err(named)
    } else {
        Ok(present)
    }
}

/// Why a `$KUBECONFIG` that names no existing file gives no kubeconfig,
/// naming every entry it lists.
fn none_present(missing: &[PathBuf], source: &str) -> anyhow::Error {
    const FIX: &str = "point $KUBECONFIG at a kubeconfig file, unset it to use ~/.kube/config, or pass --kubeconfig PATH";
    config_error(match missing {
        [] => format!("{source} names no file; {FIX}"),
        [one] => format!(
            "the kubeconfig {} ($KUBECONFIG) does not exist; {FIX}",
            one.display()
        ),
        many => format!(
            "none of the kubeconfigs $KUBECONFIG lists exists: {}; {FIX}",
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The kubeconfig kubectl would read (`--kubeconfig`, else every file of
/// `$KUBECONFIG` that exists, merged, else `~/.kube/config`) and the words
/// naming it; none when there is none. Each file is checked by
/// [`read_file`] (a file, within the size bound) before it is read, here
/// and for Tab completion.
pub fn read(kubeconfig: Option<&Path>) -> anyhow::Result<Option<(Kubeconfig, String)>> {
    let found = match kubeconfig {
        Some(path) => (read_file(path, "--kubeconfig")?, path.display().to_string()),
        None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(value) => {
                let source = format!("$KUBECONFIG ({})", value.to_string_lossy());
                let listed: Vec<PathBuf> = std::env::split_paths(&value).collect();
                let present = present_entries(&listed, |p| {
                    !matches!(std::fs::metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
                })
                .map_err(|missing| none_present(&missing, &source))?;
                // Each file checked and read once, merged as kubectl
                // merges them (the first to set a value wins).
                let mut merged = Kubeconfig::default();
                for p in present {
                    merged = merged.merge(read_file(&p, "$KUBECONFIG")?).map_err(|e| {
                        config_error(format!("{source} cannot be used: {}", innermost(&e)))
                    })?;
                }
                (merged, source)
            }
            None => match default_path().filter(|p| p.exists()) {
                Some(path) => (read_file(&path, "~/.kube/config")?, "~/.kube/config".into()),
                None => return Ok(None),
            },
        },
    };
    Ok(Some(found))
}

/// The client configuration and what it points at, as kubectl would
/// choose them.
pub async fn load(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> anyhow::Result<(Config, Target)> {
    let Some((file, source)) = read(kubeconfig)? else {
        if context.is_some() {
            return Err(config_error(
                "--context needs a kubeconfig, and there is none: $KUBECONFIG is unset and ~/.kube/config does not exist; pass --kubeconfig PATH".into(),
            ));
        }
        let config = Config::incluster().map_err(|_| {
            config_error(
                "no kubeconfig found ($KUBECONFIG unset, no ~/.kube/config, not in a pod with a service account); pass --kubeconfig PATH".into(),
            )
        })?;
        let target = Target {
            server: config.cluster_url.to_string(),
            context: None,
            source: "the in-cluster service account".into(),
        };
        return Ok((config, target));
    };
    let chosen = choose_context(&file, context, &source).map_err(config_error)?;
    let options = KubeConfigOptions {
        context: Some(chosen.clone()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(file, &options)
        .await
        .map_err(|e| {
            config_error(format!(
                "the context {chosen} of {source} cannot be used: {}",
                innermost(&e)
            ))
        })?;
    let target = Target {
        server: config.cluster_url.to_string(),
        context: Some(chosen),
        source,
    };
    Ok((config, target))
}

/// What went wrong with a request that got no usable answer, in kubectl's
/// words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    ConnectionRefused,
    NoSuchHost,
    TimedOut,
    Tls(String),
    Unauthorized,
    Other(String),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::ConnectionRefused => {
                f.write_str("connection refused: is the server running, and are the host and port right?")
            }
            Cause::NoSuchHost => f.write_str("no such host: the server's name does not resolve"),
            Cause::TimedOut => f.write_str("timed out: nothing answered at that address (a firewall, a VPN that is down, a wrong port?)"),
            Cause::Tls(why) => write!(f, "the TLS handshake failed: {why}"),
            Cause::Unauthorized => f.write_str(
                "the server refuses the credentials (401 Unauthorized): the token or certificate is expired or wrong; get a fresh one",
            ),
            Cause::Other(why) => f.write_str(why),
        }
    }
}

/// Read an error down to its cause.
pub fn cause_of(err: &kube::Error) -> Cause {
    if let kube::Error::Api(s) = err {
        return match s.code {
            401 => Cause::Unauthorized,
            code => Cause::Other(format!("the server answered {code}: {}", s.message)),
        };
    }
    let mut texts = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Cause::ConnectionRefused,
                std::io::ErrorKind::TimedOut => return Cause::TimedOut,
                _ => {}
            }
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Cause::Tls(tls.to_string());
        }
        texts.push(e.to_string());
        next = e.source();
    }
    let all = texts.join(": ").to_lowercase();
    if all.contains("dns error")
        || all.contains("failed to lookup address")
        || all.contains("name or service not known")
        || all.contains("no such host")
    {
        Cause::NoSuchHost
    } else if all.contains("timed out") || all.contains("timeout") {
        Cause::TimedOut
    } else if all.contains("certificate") || all.contains("tls") || all.contains("handshake") {
        Cause::Tls(texts.last().cloned().unwrap_or_default())
    } else {
        Cause::Other(texts.last().cloned().unwrap_or_default())
    }
}

/// The one message for an API server that never answered.
pub fn unreachable(target: &Target, err: &kube::Error, attempts: u32, took: Duration) -> String {
    let cause = cause_of(err);
    let verb = if cause == Cause::Unauthorized {
        "cannot use"
    } else {
        "cannot reach"
    };
    let check = match &target.context {
        Some(c) => format!("`kubectl --context {c} cluster-info` asks the same"),
        None => "`kubectl cluster-info` asks the same".to_string(),
    };
    format!(
        "{verb} the Kubernetes API server {target}: {cause} ({attempts} attempt{} over {}s; {check})",
        if attempts == 1 { "" } else { "s" },
        took.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CONTEXTS: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
contexts:
- name: prod
  context: {cluster: c, user: u}
- name: staging
  context: {cluster: c, user: u}
current-context: staging
users:
- name: u
  user: {token: abcdefgh12345678}
"#;

    fn file(text: &str) -> Kubeconfig {
        Kubeconfig::from_yaml(text).unwrap()
    }

    #[test]
    fn a_kubeconfig_that_is_not_valid_yaml_is_told_by_place_without_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            TWO_CONTEXTS.replace(
                "user: {token: abcdefgh12345678}",
                "user:\n    token: kubeTOKEN-s3cr3t-0123456789abcdef\n    client-certificate-data: [not, a, string]",
            ),
        )
        .unwrap();
        let err = read_file(&path, "--kubeconfig").unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("line 17, column 30"),
            "where the fault is: {message}"
        );
        assert!(!message.contains("s3cr3t"), "{message}");
        // What any other path prints is scrubbed as well.
        let quoted =
            "16 |     token: kubeTOKEN-s3cr3t-0123456789abcdef\n17 |     password: hunter2hunter2";
        let scrubbed = crate::redact::scrub(quoted);
        assert!(
            !scrubbed.contains("s3cr3t") && !scrubbed.contains("hunter2"),
            "{scrubbed}"
        );
    }

    #[test]
    fn a_context_is_the_one_asked_for_or_the_current_one() {
        let kc = file(TWO_CONTEXTS);
        assert_eq!(choose_context(&kc, Some("prod"), "f").unwrap(), "prod");
        assert_eq!(choose_context(&kc, None, "f").unwrap(), "staging");
    }

    #[test]
    fn an_unknown_context_is_named_with_the_ones_that_exist() {
        let kc = file(TWO_CONTEXTS);
        let why = choose_context(&kc, Some("bogus"), "/tmp/k").unwrap_err();
        assert_eq!(
            why,
            "the context bogus (--context) is not in /tmp/k; its contexts: prod, staging"
        );
        let none = file(&TWO_CONTEXTS.replace("current-context: staging", ""));
        assert!(choose_context(&none, None, "/tmp/k").unwrap_err().contains(
            "sets no current context; pass --context NAME (its contexts: prod, staging)"
        ));
    }

    #[test]
    fn a_kubeconfig_list_skips_missing_entries_as_kubectl_does() {
        let paths = |ps: &[&str]| ps.iter().map(PathBuf::from).collect::<Vec<_>>();
        let exists = |p: &Path| p.starts_with("/here");
        assert_eq!(
            present_entries(&paths(&["/here/a", "/gone/b", "/here/c"]), exists),
            Ok(paths(&["/here/a", "/here/c"]))
        );
        // Empty entries name nothing; a file listed twice is read once.
        assert_eq!(
            present_entries(&paths(&["", "/here/a", "/here/a", "/gone/b"]), exists),
            Ok(paths(&["/here/a"]))
        );
        // None exists: every entry, to be named.
        assert_eq!(
            present_entries(&paths(&["/gone/a", "", "/gone/b"]), exists),
            Err(paths(&["/gone/a", "/gone/b"]))
        );
        let many = format!(
            "{:#}",
            none_present(
                &paths(&["/gone/a", "/gone/b"]),
                "$KUBECONFIG (/gone/a:/gone/b)"
            )
        );
        assert!(
            many.starts_with("none of the kubeconfigs $KUBECONFIG lists exists: /gone/a, /gone/b; point $KUBECONFIG at a kubeconfig file"),
            "{many}"
        );
        let one = format!(
            "{:#}",
            none_present(&paths(&["/gone/a"]), "$KUBECONFIG (/gone/a)")
        );
        assert!(
            one.starts_with("the kubeconfig /gone/a ($KUBECONFIG) does not exist;"),
            "{one}"
        );
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_is_said_once() {
        let err = load(Some(Path::new("/nonexistent/kubeconfig")), None)
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert_eq!(
            text.matches("does not exist").count() + text.matches("No such file").count(),
            1,
            "{text}"
        );
        assert_eq!(crate::error::kind_of(&err), Some(Kind::Config));
    }

    #[test]
    fn causes_read_as_kubectl_says_them() {
        let refused = kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        )));
        assert_eq!(cause_of(&refused), Cause::ConnectionRefused);
        #[derive(Debug)]
        struct Dns;
        impl std::fmt::Display for Dns {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "dns error: failed to lookup address information: Name or service not known",
                )
            }
        }
        impl std::error::Error for Dns {}
        assert_eq!(
            cause_of(&kube::Error::Service(Box::new(Dns))),
            Cause::NoSuchHost
        );
        let tls = kube::Error::Service(Box::new(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )));
        assert!(matches!(cause_of(&tls), Cause::Tls(why) if why.contains("UnknownIssuer")));
        let unauthorized = kube::Error::Api(Box::new(
            kube::core::Status::failure("Unauthorized", "Unauthorized").with_code(401),
        ));
        assert_eq!(cause_of(&unauthorized), Cause::Unauthorized);
        let target = Target {
            server: "https://127.0.0.1:1/".into(),
            context: Some("dead".into()),
            source: "/tmp/k".into(),
        };
        assert_eq!(
            unreachable(&target, &refused, 7, Duration::from_secs(8)),
            "cannot reach the Kubernetes API server https://127.0.0.1:1/ (context dead of /tmp/k): connection refused: is the server running, and are the host and port right? (7 attempts over 8s; `kubectl --context dead cluster-info` asks the same)"
        );
    }
}
