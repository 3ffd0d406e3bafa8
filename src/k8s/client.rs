//! Connecting to the cluster, and retrying what a busy API server refuses.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A client for the kubeconfig and context the user chose, or the usual
/// defaults (`$KUBECONFIG`, `~/.kube/config`, in-cluster).
pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: context.map(String::from),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None if context.is_some() => Config::from_kubeconfig(&options)
            .await
            .context("reading the kubeconfig for --context")?,
        // kube's own message repeats its causes three times; one line says it.
        None => Config::infer().await.map_err(|_| {
            crate::error::fail(
                crate::error::Kind::Config,
                "no kubeconfig found ($KUBECONFIG, ~/.kube/config, or in-cluster service account); pass --kubeconfig",
            )
        })?,
    };
    // kube retries 429/503/504 on its own by default; `retry` below does
    // that and more (500s, dropped connections) under one budget, and two
    // layers would multiply each other's attempts.
    let mut config = config;
    config.default_retry = false;
    Client::try_from(config).context("building the Kubernetes client")
}

/// Whether an API error is worth another try: throttling, a server error,
/// or a connection that dropped. Everything else (not found, conflict,
/// forbidden, invalid) is an answer, not a hiccup.
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// The backoff for API calls: quick first retries, capped, bounded, with
/// jitter so that concurrent callers do not retry in lockstep.
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(6)
        .with_jitter()
}

/// Run an API call, retrying transient failures with backoff.
pub async fn retry<T, F, Fut>(what: &str, call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    call.retry(backoff())
        .when(is_transient)
        .notify(|err, after| tracing::debug!("{what}: {err}; retrying in {after:?}"))
        .await
}

/// The API error's Status code, if the error is one.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
