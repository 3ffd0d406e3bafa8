//! Shell completion as kubectl has it: the binary itself answers each Tab
//! (clap_complete's dynamic completion, `COMPLETE=bash maily-deploy`), so
//! it completes what only it knows: the environments of the profiles,
//! the deployment ids of an environment (read from the cluster, within a
//! second or two, silent when it cannot), the kubeconfig's contexts, the
//! phase names with their aliases.
//!
//! A completer sees only the word being typed; the words before it (which
//! environment, which kubeconfig) are read from the completion request's
//! own command line, as the shell passed it.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use clap_complete::engine::CompletionCandidate;

use crate::pipeline::PhaseId;

/// How long a completion may wait for the cluster: a Tab that hangs is
/// worse than one that offers nothing.
const CLUSTER_WAIT: Duration = Duration::from_secs(2);

/// The words of the command line being completed (after `--`, as the
/// shell's script passes them).
fn words() -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--") {
        Some(i) => args[i + 1..].to_vec(),
        None => args,
    }
}

/// The value of an option on the line being completed.
fn option(words: &[String], name: &str) -> Option<String> {
    let eq = format!("{name}=");
    words.iter().enumerate().find_map(|(i, w)| {
        if w == name {
            words.get(i + 1).cloned()
        } else {
            w.strip_prefix(&eq).map(str::to_string)
        }
    })
}

fn manifests_dir(words: &[String]) -> PathBuf {
    option(words, "--manifests-dir")
        .or_else(|| std::env::var("MAILY_MANIFESTS_DIR").ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("manifests"))
}

fn starting_with(
    current: &OsStr,
    items: impl IntoIterator<Item = (String, Option<String>)>,
) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    items
        .into_iter()
        .filter(|(v, _)| v.starts_with(current.as_ref()))
        .map(|(v, help)| CompletionCandidate::new(v).help(help.map(Into::into)))
        .collect()
}

/// The environments the profiles define.
pub fn environments(current: &OsStr) -> Vec<CompletionCandidate> {
    let known = crate::config::profile::known_environments(&manifests_dir(&words()));
    starting_with(current, known.into_iter().map(|e| (e, None)))
}

/// The phase names `--only` and `--from` take, and their aliases.
pub fn phases(current: &OsStr) -> Vec<CompletionCandidate> {
    use clap::ValueEnum;
    let mut items = Vec::new();
    for p in PhaseId::value_variants() {
        if let Some(v) = p.to_possible_value() {
            let help = v.get_help().map(|h| h.to_string());
            for name in v.get_name_and_aliases() {
                items.push((name.to_string(), help.clone()));
            }
        }
    }
    starting_with(current, items)
}

/// The contexts of the kubeconfig the line names (or the default one).
pub fn contexts(current: &OsStr) -> Vec<CompletionCandidate> {
    let words = words();
    // Read as a run reads it: a path naming a pipe or a device (where
    // kube's own reader would wait or fill memory) completes nothing.
    let path = option(&words, "--kubeconfig").map(PathBuf::from);
    let file = crate::k8s::kubeconfig::read(path.as_deref());
    let names = match file {
        Ok(Some((kc, _))) => kc.contexts.into_iter().map(|c| c.name).collect(),
        _ => Vec::new(),
    };
    starting_with(current, names.into_iter().map(|n| (n, None)))
}

/// `previous`, and the deployment ids of the environment on the line
/// (`rollback <ENV> <Tab>`), newest first, each with its release and
/// outcome; the ids alone are left out when the cluster does not answer
/// in time.
pub fn deployment_ids(current: &OsStr) -> Vec<CompletionCandidate> {
    let words = words();
    let mut items = vec![(
        "previous".to_string(),
        Some("the last good deployment before the live one".to_string()),
    )];
    if let Some(environment) = words
        .iter()
        .position(|w| w == "rollback")
        .and_then(|i| words[i + 1..].iter().find(|w| !w.starts_with('-')))
        && let Some(found) = snapshots_of(&words, environment)
    {
        items.extend(found);
    }
    starting_with(current, items)
}

fn snapshots_of(words: &[String], environment: &str) -> Option<Vec<(String, Option<String>)>> {
    let profile = crate::config::profile::load(&manifests_dir(words), environment).ok()?;
    let kubeconfig = option(words, "--kubeconfig").map(PathBuf::from);
    let context = option(words, "--context");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let read = async {
            let (config, _) =
                crate::k8s::kubeconfig::load(kubeconfig.as_deref(), context.as_deref())
                    .await
                    .ok()?;
            let client = kube::Client::try_from(config).ok()?;
            let store = crate::k8s::snapshot_store::SnapshotStore::new(
                client,
                &profile.namespace,
                environment,
            );
            store.list().await.ok()
        };
        let snapshots = tokio::time::timeout(CLUSTER_WAIT, read).await.ok()??;
        Some(
            snapshots
                .into_iter()
                .map(|s| {
                    let release = s
                        .release
                        .as_ref()
                        .map(|r| r.image_tag.clone())
                        .unwrap_or_else(|| "?".into());
                    (
                        s.deployment_id.to_string(),
                        Some(format!(
                            "release {release}, {}",
                            serde_json::to_value(s.outcome)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default()
                        )),
                    )
                })
                .collect(),
        )
    })
}

/// The script a shell sources to complete `maily-deploy` (what
/// `COMPLETE=<shell> maily-deploy` prints), calling `exe` for each Tab.
pub fn registration(shell: clap_complete::Shell, exe: &str) -> anyhow::Result<String> {
    use clap_complete::env::{EnvCompleter, Shells};
    let name = match shell {
        clap_complete::Shell::Bash => "bash",
        clap_complete::Shell::Zsh => "zsh",
        clap_complete::Shell::Fish => "fish",
        clap_complete::Shell::Elvish => "elvish",
        clap_complete::Shell::PowerShell => "powershell",
        other => anyhow::bail!("completion for {other} is not supported"),
    };
    let shells = Shells::builtins();
    let completer: &dyn EnvCompleter = shells
        .completer(name)
        .ok_or_else(|| anyhow::anyhow!("completion for {name} is not supported"))?;
    let mut buf = Vec::new();
    completer.write_registration("COMPLETE", "maily-deploy", "maily-deploy", exe, &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
