//! Connecting to the cluster, and retrying what a busy API server refuses.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable};
use kube::Client;

/// A client for the kubeconfig and context the user chose, or the usual
/// defaults (`$KUBECONFIG`, `~/.kube/config`, in-cluster), that has been
/// answered once.
///
/// A kubeconfig that cannot be used (missing, unreadable, an unknown
/// context) is a configuration problem, named once with what exists. An
/// API server that does not answer is said once, after the retries, as
/// kubectl says it: the server, the context, and what the network said.
pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> anyhow::Result<Client> {
    let (config, target) = super::kubeconfig::load(kubeconfig, context).await?;
    // kube retries 429/503/504 on its own by default; `retry` below does
    // that and more (500s, dropped connections) under one budget, and two
    // layers would multiply each other's attempts.
    let mut config = config;
    config.default_retry = false;
    let builder =
        kube::client::ClientBuilder::try_from(config).context("building the Kubernetes client")?;
    let client = builder
        .with_layer(&tower::util::MapResponseLayer::new(warnings::keep))
        .build();
    // One request before any other, outside the outage count: a server
    // that never answered has no outage to report, only an address.
    let started = std::time::Instant::now();
    let mut attempts = 0u32;
    let probe = (|| {
        attempts += 1;
        let client = client.clone();
        async move { client.apiserver_version().await }
    })
    .retry(backoff())
    // A name that does not resolve or a certificate that does not verify
    // will not on the next try either.
    .when(|e| {
        is_transient(e)
            && !matches!(
                super::kubeconfig::cause_of(e),
                super::kubeconfig::Cause::NoSuchHost | super::kubeconfig::Cause::Tls(_)
            )
    })
    .await;
    match probe {
        Ok(_) => Ok(client),
        Err(e) => Err(crate::error::fail(
            crate::error::Kind::Unreachable,
            super::kubeconfig::unreachable(&target, &e, attempts, started.elapsed()),
        )),
    }
}

/// The `Warning` headers the API server sends (deprecated APIs, and Pod
/// Security's verdict on a workload whose pods it would refuse), which
/// kube's client drops. Kept for the code that asked, and logged as
/// kubectl prints them.
pub mod warnings {
    use std::sync::Mutex;

    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// The most kept at once: a client that nobody drains stays bounded.
    const MAX_KEPT: usize = 256;

    /// Keep every `Warning` header of a response (RFC 7234: `299 - "text"`).
    pub fn keep<B>(resp: http::Response<B>) -> http::Response<B> {
        let texts: Vec<String> = resp
            .headers()
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(text_of)
            .collect();
        if !texts.is_empty() {
            let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
            for t in texts {
                tracing::debug!(warning = %t, "the API server warns");
                if seen.len() < MAX_KEPT {
                    seen.push(t);
                }
            }
        }
        resp
    }

    /// The warnings kept since the last call, oldest first.
    pub fn take() -> Vec<String> {
        std::mem::take(&mut *SEEN.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `299 - "would violate ..."` → `would violate ...`.
    pub fn text_of(header: &str) -> String {
        let rest = header.trim();
        let rest = rest
            .split_once(' ')
            .map(|(code, r)| if code.len() == 3 { r } else { rest })
            .unwrap_or(rest);
        let rest = rest
            .split_once(' ')
            .map(|(agent, r)| if agent == "-" { r } else { rest })
            .unwrap_or(rest);
        rest.trim().trim_matches('"').replace("\\\"", "\"")
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn a_warning_header_reads_as_its_text() {
            assert_eq!(
                super::text_of(
                    r#"299 - "would violate PodSecurity \"restricted:latest\": runAsNonRoot != true""#
                ),
                r#"would violate PodSecurity "restricted:latest": runAsNonRoot != true"#
            );
        }
    }
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

/// Run an API call, retrying transient failures with backoff. Every
/// answer and every unanswered attempt is counted in [`outage`].
pub async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    (|| {
        let attempt = call();
        async move {
            let result = attempt.await;
            health::observe(&result);
            result
        }
    })
    .retry(backoff())
    .when(is_transient)
    .notify(|err, after| tracing::debug!("{what}: {err}; retrying in {after:?}"))
    .await
}

/// Whether the API server is answering, as this process last saw it.
///
/// A run whose API server disappears fails in many places at once (the
/// phase's call, the lock's renewal, the undo); the message should say the
/// one thing behind all of them: since when nothing answered.
pub mod health {
    use std::sync::Mutex;

    use chrono::{DateTime, Utc};

    /// Since when the API server stopped answering, and how many requests
    /// went unanswered since.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Outage {
        pub since: DateTime<Utc>,
        pub failed_requests: u64,
    }

    impl std::fmt::Display for Outage {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "the Kubernetes API server stopped answering at {} and {} request{} failed since",
                self.since.format("%H:%M:%S UTC"),
                self.failed_requests,
                if self.failed_requests == 1 { "" } else { "s" }
            )
        }
    }

    static STATE: Mutex<Option<Outage>> = Mutex::new(None);

    /// Whether an error means nothing answered (as opposed to an answer).
    pub fn unanswered(err: &kube::Error) -> bool {
        matches!(
            err,
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)
        )
    }

    /// The reason of the answer a change gets that was never sent, its
    /// lock lost (see `Applier::retry_change`).
    pub const NOT_SENT_REASON: &str = "LockLost";

    /// Count one attempt's result.
    pub fn observe<T>(result: &Result<T, kube::Error>) {
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Err(e) if unanswered(e) => {
                let o = state.get_or_insert(Outage {
                    since: Utc::now(),
                    failed_requests: 0,
                });
                o.failed_requests += 1;
            }
            // A change not sent (the lock was lost) says nothing of the
            // server either way.
            Err(kube::Error::Api(s)) if s.reason == NOT_SENT_REASON => {}
            // Any answer, even a refusal, means the server is there.
            _ => *state = None,
        }
    }

    /// The outage going on now, if the last attempt went unanswered.
    pub fn outage() -> Option<Outage> {
        *STATE.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The API error's Status code, if the error is one.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
