//! Prometheus's HTTP API, as far as monitor needs it: the scrape targets.
//!
//! `GET /api/v1/targets?state=active` answers
//! `{status, data: {activeTargets: [{labels, health, lastError, scrapeUrl, ...}]}}`
//! (prometheus.io/docs, "HTTP API", Targets): `labels` are the target's
//! labels after relabelling, `health` is `up`, `down` or `unknown` (not
//! scraped yet), `lastError` the last scrape's error.
//!
//! Whether a slot's targets are scraped and up is decided by [`verdict`],
//! a pure function of the targets; [`Prometheus::targets`] only fetches.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Kind, fail};

/// One active target (the fields used).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub health: String,
    #[serde(default)]
    pub last_error: String,
    #[serde(default)]
    pub scrape_url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetsData {
    #[serde(default)]
    active_targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<TargetsData>,
    #[serde(default)]
    error: Option<String>,
}

/// A client of Prometheus's HTTP API.
#[derive(Debug, Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    base: String,
}

impl Prometheus {
    pub fn new(url: &str) -> anyhow::Result<Prometheus> {
        Ok(Prometheus {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            base: url.trim_end_matches('/').to_string(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /api/v1/targets?state=active`.
    pub async fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let url = format!("{}/api/v1/targets?state=active", self.base);
        let resp = self.http.get(&url).send().await.map_err(|e| {
            fail(
                Kind::PhaseFailed,
                format!(
                    "Prometheus at {}: {}; check PROMETHEUS_URL",
                    self.base,
                    e.without_url()
                ),
            )
        })?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let parsed: Result<Envelope, _> = serde_json::from_str(&body);
        match parsed {
            Ok(Envelope {
                status: s,
                data: Some(d),
                ..
            }) if s == "success" => Ok(d.active_targets),
            Ok(Envelope { error, .. }) => Err(fail(
                Kind::PhaseFailed,
                format!(
                    "Prometheus {url} answered {status}: {}",
                    error.unwrap_or_else(|| "no targets in the answer".into())
                ),
            )),
            Err(_) => Err(fail(
                Kind::PhaseFailed,
                format!(
                    "Prometheus {url} answered {status} with something that is not its HTTP API's JSON; check PROMETHEUS_URL"
                ),
            )),
        }
    }
}

/// What Prometheus says of one service's targets in a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceTargets {
    /// Every target is up.
    Up { count: usize },
    /// Some are not up (yet): each one's address and why.
    NotUp {
        up: usize,
        not_up: Vec<(String, String)>,
    },
    /// Prometheus has no target of the service in the slot.
    Missing,
}

/// Which targets belong to a service in a slot: `namespace`, `job` (the
/// service) and `slot` labels, and, when given and the target carries a
/// `version` label, that version (a target of the slot's previous release,
/// not yet dropped by service discovery, is not this release's).
pub fn verdict(
    targets: &[Target],
    namespace: &str,
    service: &str,
    slot: &str,
    version: Option<&str>,
) -> ServiceTargets {
    let mine: Vec<&Target> = targets
        .iter()
        .filter(|t| {
            let l = |k: &str| t.labels.get(k).map(String::as_str);
            l("namespace") == Some(namespace)
                && l("job") == Some(service)
                && l("slot") == Some(slot)
                && match (version, l("version")) {
                    (Some(want), Some(got)) => want == got,
                    _ => true,
                }
        })
        .collect();
    if mine.is_empty() {
        return ServiceTargets::Missing;
    }
    let not_up: Vec<(String, String)> = mine
        .iter()
        .filter(|t| t.health != "up")
        .map(|t| {
            let at = t
                .labels
                .get("instance")
                .cloned()
                .unwrap_or_else(|| t.scrape_url.clone());
            let why = if t.last_error.is_empty() {
                format!(
                    "health {}",
                    if t.health.is_empty() {
                        "unknown"
                    } else {
                        &t.health
                    }
                )
            } else {
                t.last_error.clone()
            };
            (at, why)
        })
        .collect();
    if not_up.is_empty() {
        ServiceTargets::Up { count: mine.len() }
    } else {
        ServiceTargets::NotUp {
            up: mine.len() - not_up.len(),
            not_up,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn targets() -> Vec<Target> {
        // The documented shape of GET /api/v1/targets.
        let doc = json!({"status": "success", "data": {"activeTargets": [
            {"discoveredLabels": {"__address__": "10.0.0.1:8080"},
             "labels": {"instance": "10.0.0.1:8080", "job": "api", "namespace": "maily-staging", "slot": "green", "version": "v2"},
             "scrapePool": "serviceMonitor/maily-staging/api/0", "scrapeUrl": "http://10.0.0.1:8080/metrics",
             "globalUrl": "http://10.0.0.1:8080/metrics", "lastError": "", "lastScrape": "2025-01-01T12:00:00Z",
             "lastScrapeDuration": 0.01, "health": "up", "scrapeInterval": "15s", "scrapeTimeout": "10s"},
            {"labels": {"instance": "10.0.0.2:8080", "job": "api", "namespace": "maily-staging", "slot": "blue", "version": "v1"},
             "scrapeUrl": "http://10.0.0.2:8080/metrics", "lastError": "", "health": "up"},
            {"labels": {"instance": "10.0.0.3:8080", "job": "campaigns", "namespace": "maily-staging", "slot": "green", "version": "v2"},
             "scrapeUrl": "http://10.0.0.3:8080/metrics", "lastError": "Get \"http://10.0.0.3:8080/metrics\": connection refused", "health": "down"},
            {"labels": {"instance": "10.0.0.4:8080", "job": "campaigns", "namespace": "maily-staging", "slot": "green", "version": "v1"},
             "scrapeUrl": "http://10.0.0.4:8080/metrics", "lastError": "context deadline exceeded", "health": "down"}
        ], "droppedTargets": []}});
        let env: Envelope = serde_json::from_value(doc).unwrap();
        env.data.unwrap().active_targets
    }

    #[test]
    fn a_slot_whose_targets_are_up_passes() {
        assert_eq!(
            verdict(&targets(), "maily-staging", "api", "green", Some("v2")),
            ServiceTargets::Up { count: 1 }
        );
    }

    #[test]
    fn a_down_target_is_named_with_its_last_error() {
        assert_eq!(
            verdict(
                &targets(),
                "maily-staging",
                "campaigns",
                "green",
                Some("v2")
            ),
            ServiceTargets::NotUp {
                up: 0,
                not_up: vec![(
                    "10.0.0.3:8080".into(),
                    "Get \"http://10.0.0.3:8080/metrics\": connection refused".into()
                )]
            }
        );
    }

    #[test]
    fn other_slots_namespaces_and_releases_do_not_count() {
        assert_eq!(
            verdict(&targets(), "maily-staging", "api", "green", Some("v3")),
            ServiceTargets::Missing
        );
        assert_eq!(
            verdict(&targets(), "maily-production", "api", "green", None),
            ServiceTargets::Missing
        );
        assert_eq!(
            verdict(&targets(), "maily-staging", "analytics", "green", None),
            ServiceTargets::Missing
        );
    }
}
