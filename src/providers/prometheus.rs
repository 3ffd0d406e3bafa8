//! Prometheus's HTTP API, as far as the tool needs it: the scrape targets
//! (monitor) and instant queries (the analysis of traffic steps).
//!
//! `GET /api/v1/targets?state=active` answers
//! `{status, data: {activeTargets: [{labels, health, lastError, scrapeUrl, ...}]}}`
//! (prometheus.io/docs, "HTTP API", Targets): `labels` are the target's
//! labels after relabelling, `health` is `up`, `down` or `unknown` (not
//! scraped yet), `lastError` the last scrape's error.
//!
//! Whether a slot's targets are scraped and up is decided by [`verdict`],
//! a pure function of the targets; [`Prometheus::targets`] only fetches.
//!
//! `GET /api/v1/query?query=<PromQL>` answers `{status: "success", data:
//! {resultType, result}, warnings?}` or `{status: "error", errorType, error}`
//! with 400 (bad_data: the PromQL does not parse), 422 (execution: it
//! cannot be evaluated) or 503 (timeout, canceled). A `vector` result is
//! `[{metric: {labels}, value: [unixtime, "number"]}]`, a `scalar`
//! `[unixtime, "number"]`; numbers are strings because they may be `NaN`,
//! `+Inf` or `-Inf`. What an answer means for a caller that wants one
//! number is decided by [`read_answer`], a pure function of the status and
//! body.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::http::read_body;
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
    /// The scrape pool (the job's configuration) the target belongs to;
    /// for a ServiceMonitor's, [`service_monitor_pool`].
    #[serde(default)]
    pub scrape_pool: String,
}

/// The scrape pool the Prometheus operator makes of a ServiceMonitor's
/// first endpoint: `serviceMonitor/<namespace>/<name>/0`.
pub fn service_monitor_pool(namespace: &str, name: &str) -> String {
    format!("serviceMonitor/{namespace}/{name}/0")
}

/// How many pools are asked for at once.
const POOLS_AT_ONCE: usize = 8;

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
        // The process's one crypto provider (main installs it too; a library
        // caller, such as a test, may not have).
        let _ = rustls::crypto::ring::default_provider().install_default();
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

    /// `GET /api/v1/query?query=<promql>`: one number, or no data.
    ///
    /// Errors are [`QueryError`]s (find them with [`QueryError::of`]): the
    /// caller tells a Prometheus it could not reach (worth trying again)
    /// from a query Prometheus refuses (wrong until the profile changes).
    pub async fn query(&self, promql: &str) -> anyhow::Result<QueryValue> {
        let mut url = url::Url::parse(&format!("{}/api/v1/query", self.base)).map_err(|e| {
            QueryError::NotPrometheus(format!(
                "PROMETHEUS_URL {} is not a URL ({e}); check PROMETHEUS_URL",
                self.base
            ))
        })?;
        url.query_pairs_mut().append_pair("query", promql);
        let resp = self.http.get(url).send().await.map_err(|e| {
            QueryError::Unreachable(format!(
                "Prometheus at {}: {}; check PROMETHEUS_URL",
                self.base,
                e.without_url()
            ))
        })?;
        let status = resp.status().as_u16();
        let body = read_body(resp).await.map_err(|why| {
            QueryError::Unreachable(format!(
                "Prometheus at {}: reading the answer to `{promql}`: {why}; check PROMETHEUS_URL",
                self.base,
            ))
        })?;
        Ok(read_answer(&self.base, promql, status, &body)?)
    }

    /// `GET /api/v1/targets?state=active`: every active target, which on a
    /// Prometheus shared by many teams may be too many to read (see
    /// [`Prometheus::targets_in_pools`]).
    pub async fn targets(&self) -> anyhow::Result<Vec<Target>> {
        self.targets_at(format!("{}/api/v1/targets?state=active", self.base))
            .await
    }

    /// The active targets of these scrape pools only, one request per pool
    /// (`scrapePool=`, Prometheus 2.42 and later), a few at once: the
    /// answers stay small however many targets the Prometheus has. A
    /// Prometheus that ignores the parameter answers every target; only
    /// the pool's are kept.
    pub async fn targets_in_pools(&self, pools: &[String]) -> anyhow::Result<Vec<Target>> {
        use futures::{StreamExt, TryStreamExt};
        let lists: Vec<Vec<Target>> = futures::stream::iter(pools.iter().cloned())
            .map(|pool| self.pool_targets(pool))
            .buffered(POOLS_AT_ONCE)
            .try_collect()
            .await?;
        Ok(lists.into_iter().flatten().collect())
    }

    async fn pool_targets(&self, pool: String) -> anyhow::Result<Vec<Target>> {
        let url = format!(
            "{}/api/v1/targets?state=active&scrapePool={}",
            self.base,
            percent_encoding::utf8_percent_encode(&pool, percent_encoding::NON_ALPHANUMERIC)
        );
        let all = self.targets_at(url).await?;
        Ok(all.into_iter().filter(|t| t.scrape_pool == pool).collect())
    }

    async fn targets_at(&self, url: String) -> anyhow::Result<Vec<Target>> {
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
        // An answer too large to read is said as such, not as one in
        // another format: a Prometheus with thousands of targets (each
        // with its discovered labels) can outgrow the bound.
        let body = read_body(resp).await.map_err(|why| {
            fail(
                Kind::PhaseFailed,
                format!("Prometheus {url}: reading its targets: {why}"),
            )
        })?;
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

/// What an instant query gave, for a caller that wants one number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QueryValue {
    /// Never NaN. May be infinite: `histogram_quantile` answers `+Inf` when
    /// the quantile lies above the highest finite bucket, which is a real
    /// (and bad) measurement, not an absence of one.
    Number(f64),
    /// Nothing to judge: an empty vector (no series matched, e.g. a slot
    /// nobody has requested yet) or NaN (e.g. a rate divided by a zero rate).
    NoData,
}

/// Why a query gave no value. The variants differ in what the caller does
/// next, so each carries the whole message a user needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Prometheus could not be reached, timed out or failed (5xx, or its
    /// errorType says timeout/canceled/unavailable/internal): the next
    /// attempt may succeed, so a measurement is inconclusive, not failed.
    #[error("{0}")]
    Unreachable(String),
    /// Prometheus refused the query (bad PromQL, not evaluable, several
    /// series, a range vector): it stays wrong until the query changes.
    #[error("{0}")]
    Rejected(String),
    /// The answer is not Prometheus's HTTP API: PROMETHEUS_URL points
    /// somewhere else, which retrying does not fix either.
    #[error("{0}")]
    NotPrometheus(String),
}

impl QueryError {
    /// The query error in an error's chain, if any.
    pub fn of(err: &anyhow::Error) -> Option<&QueryError> {
        err.chain().find_map(|e| e.downcast_ref::<QueryError>())
    }

    /// Whether trying again later may give a value.
    pub fn is_transient(&self) -> bool {
        matches!(self, QueryError::Unreachable(_))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryEnvelope {
    status: String,
    #[serde(default)]
    data: Option<QueryData>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    #[serde(default)]
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (serde_json::Value, String),
}

/// What Prometheus's answer (`status`, `body`) to the instant query
/// `promql` means. `base` is only for messages.
pub fn read_answer(
    base: &str,
    promql: &str,
    status: u16,
    body: &str,
) -> Result<QueryValue, QueryError> {
    let Ok(envelope) = serde_json::from_str::<QueryEnvelope>(body) else {
        let what = format!(
            "Prometheus at {base} answered {status} with something that is not its HTTP API's JSON"
        );
        // A proxy's 502/503 page while Prometheus restarts is transient; a
        // 2xx or 4xx page means the URL is not Prometheus.
        return Err(if status >= 500 || status == 429 {
            QueryError::Unreachable(format!("{what}; check PROMETHEUS_URL"))
        } else {
            QueryError::NotPrometheus(format!("{what}; check PROMETHEUS_URL"))
        });
    };
    if envelope.status != "success" {
        let error_type = envelope.error_type.unwrap_or_default();
        let error = envelope
            .error
            .unwrap_or_else(|| "no error message".to_string());
        let transient = status >= 500
            || status == 429
            || matches!(
                error_type.as_str(),
                "timeout" | "canceled" | "unavailable" | "internal"
            );
        return Err(if transient {
            QueryError::Unreachable(format!(
                "Prometheus at {base} could not answer `{promql}` ({status} {error_type}): {error}"
            ))
        } else {
            QueryError::Rejected(format!(
                "Prometheus rejects `{promql}` ({status} {error_type}): {error}"
            ))
        });
    }
    let Some(data) = envelope.data else {
        return Err(QueryError::NotPrometheus(format!(
            "Prometheus at {base} answered `{promql}` with success but no data; check PROMETHEUS_URL"
        )));
    };
    let malformed = |why: &str| {
        QueryError::NotPrometheus(format!(
            "Prometheus at {base} answered `{promql}` with a {} result that {why}; check PROMETHEUS_URL",
            data.result_type
        ))
    };
    let text = match data.result_type.as_str() {
        "scalar" => {
            let (_, text): (serde_json::Value, String) =
                serde_json::from_value(data.result.clone())
                    .map_err(|_| malformed("is not [time, \"value\"]"))?;
            text
        }
        "vector" => {
            let series: Vec<Series> = serde_json::from_value(data.result.clone())
                .map_err(|_| malformed("is not a list of {metric, value}"))?;
            match series.as_slice() {
                [] => return Ok(QueryValue::NoData),
                [one] => one.value.1.clone(),
                many => {
                    // The first few, each clipped: the message goes into
                    // the rollout record and the snapshot.
                    let labels: Vec<String> = many
                        .iter()
                        .take(3)
                        .map(|s| {
                            let pairs: Vec<String> = s
                                .metric
                                .iter()
                                .map(|(k, v)| format!("{k}=\"{v}\""))
                                .collect();
                            crate::error::clipped(&format!("{{{}}}", pairs.join(", "))).into_owned()
                        })
                        .collect();
                    let more = if many.len() > labels.len() {
                        format!(" and {} more", many.len() - labels.len())
                    } else {
                        String::new()
                    };
                    return Err(QueryError::Rejected(format!(
                        "`{promql}` gives {} series ({}{more}), not one number; aggregate it, e.g. with sum(...)",
                        many.len(),
                        labels.join(" ")
                    )));
                }
            }
        }
        "matrix" => {
            return Err(QueryError::Rejected(format!(
                "`{promql}` gives a range vector, not one number; apply rate(), increase() or an *_over_time() function to its [range] selector"
            )));
        }
        other => {
            return Err(QueryError::Rejected(format!(
                "`{promql}` gives a {other}, not a number"
            )));
        }
    };
    match parse_number(&text) {
        Some(v) if v.is_nan() => Ok(QueryValue::NoData),
        Some(v) => Ok(QueryValue::Number(v)),
        None => Err(malformed(&format!("holds {text:?}, not a number"))),
    }
}

/// A sample value as Prometheus writes it (Go's strconv.FormatFloat):
/// digits, `NaN`, `+Inf`, `-Inf`.
fn parse_number(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
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

/// Whether any of `targets` is one of these services' in `namespace`, in
/// any slot (the labels monitor judges by).
pub fn scrapes_any<'a>(
    targets: &[Target],
    namespace: &str,
    mut services: impl Iterator<Item = &'a str>,
) -> bool {
    services.any(|s| {
        targets.iter().any(|t| {
            t.labels.get("namespace").map(String::as_str) == Some(namespace)
                && t.labels.get("job").map(String::as_str) == Some(s)
        })
    })
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

    // Instant queries: the answers as prometheus.io/docs "HTTP API"
    // documents them (envelope, vector, scalar, matrix, errors).

    const BASE: &str = "http://prometheus:9090";
    const Q: &str = "sum(rate(http_requests_total[30s]))";

    fn read(status: u16, body: serde_json::Value) -> Result<QueryValue, QueryError> {
        read_answer(BASE, Q, status, &body.to_string())
    }

    #[test]
    fn a_one_element_vector_is_its_number() {
        let answer = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"slot": "green"}, "value": [1435781451.781, "7.25"]}
        ]}});
        assert_eq!(read(200, answer), Ok(QueryValue::Number(7.25)));
    }

    #[test]
    fn a_scalar_is_its_number() {
        let answer = json!({"status": "success", "data": {"resultType": "scalar", "result": [1435781451.781, "1"]}});
        assert_eq!(read(200, answer), Ok(QueryValue::Number(1.0)));
    }

    #[test]
    fn an_empty_vector_and_nan_are_no_data() {
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(read(200, empty), Ok(QueryValue::NoData));
        let nan = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [1435781451.781, "NaN"]}
        ]}});
        assert_eq!(read(200, nan), Ok(QueryValue::NoData));
        let nan_scalar = json!({"status": "success", "data": {"resultType": "scalar", "result": [1435781451.781, "NaN"]}});
        assert_eq!(read(200, nan_scalar), Ok(QueryValue::NoData));
    }

    #[test]
    fn infinity_is_a_number_not_an_absence() {
        let inf = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [1435781451.781, "+Inf"]}
        ]}});
        assert_eq!(read(200, inf), Ok(QueryValue::Number(f64::INFINITY)));
        let neg =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1, "-Inf"]}});
        assert_eq!(read(200, neg), Ok(QueryValue::Number(f64::NEG_INFINITY)));
    }

    #[test]
    fn warnings_do_not_hide_the_value() {
        let answer = json!({"status": "success", "warnings": ["PromQL info: metric might not be a counter"],
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.5"]}]}});
        assert_eq!(read(200, answer), Ok(QueryValue::Number(0.5)));
    }

    #[test]
    fn several_series_are_rejected_with_their_labels_and_a_hint_to_aggregate() {
        let answer = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"instance": "10.0.0.1:8080", "slot": "green"}, "value": [1, "1"]},
            {"metric": {"instance": "10.0.0.2:8080", "slot": "green"}, "value": [1, "2"]}
        ]}});
        let Err(QueryError::Rejected(msg)) = read(200, answer) else {
            panic!("several series must be rejected")
        };
        assert!(msg.contains("2 series"), "{msg}");
        assert!(msg.contains("sum("), "{msg}");
        assert!(
            msg.contains(r#"{instance="10.0.0.1:8080", slot="green"}"#),
            "{msg}"
        );
        assert!(
            msg.contains(r#"{instance="10.0.0.2:8080", slot="green"}"#),
            "{msg}"
        );
    }

    #[test]
    fn thousands_of_series_are_named_by_the_first_few() {
        let result: Vec<serde_json::Value> = (0..5000)
            .map(|i| json!({"metric": {"instance": format!("10.0.{}.{}:8080", i / 256, i % 256)}, "value": [1, "1"]}))
            .collect();
        let answer =
            json!({"status": "success", "data": {"resultType": "vector", "result": result}});
        let Err(QueryError::Rejected(msg)) = read(200, answer) else {
            panic!("several series must be rejected")
        };
        assert!(msg.contains("5000 series"), "{msg}");
        assert!(msg.contains("and 4997 more"), "{msg}");
        assert!(msg.len() < 1000, "{} bytes", msg.len());
    }

    #[test]
    fn bad_promql_is_rejected_with_prometheus_error_and_the_query() {
        let answer = json!({"status": "error", "errorType": "bad_data",
            "error": "invalid parameter \"query\": 1:14: parse error: unexpected \"}\""});
        let err = read(400, answer).unwrap_err();
        assert!(!err.is_transient());
        let QueryError::Rejected(msg) = err else {
            panic!("bad_data is a rejection")
        };
        assert!(msg.contains("parse error: unexpected"), "{msg}");
        assert!(msg.contains(Q), "{msg}");
        let execution = json!({"status": "error", "errorType": "execution",
            "error": "found duplicate series for the match group"});
        assert!(matches!(
            read(422, execution),
            Err(QueryError::Rejected(m)) if m.contains("duplicate series")
        ));
    }

    #[test]
    fn a_timeout_or_5xx_is_transient() {
        let timeout = json!({"status": "error", "errorType": "timeout",
            "error": "query timed out in expression evaluation"});
        let err = read(503, timeout).unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains(BASE), "{err}");
        let proxy = read_answer(BASE, Q, 502, "<html>Bad Gateway</html>").unwrap_err();
        assert!(proxy.is_transient(), "{proxy}");
    }

    #[test]
    fn a_range_vector_or_string_is_rejected() {
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1, "1"], [2, "2"]]}
        ]}});
        assert!(
            matches!(read(200, matrix), Err(QueryError::Rejected(m)) if m.contains("range vector"))
        );
        let string =
            json!({"status": "success", "data": {"resultType": "string", "result": [1, "hello"]}});
        assert!(matches!(read(200, string), Err(QueryError::Rejected(_))));
    }

    #[test]
    fn an_answer_that_is_not_the_api_points_at_prometheus_url() {
        let err = read_answer(BASE, Q, 404, "<html>Not Found</html>").unwrap_err();
        assert!(matches!(err, QueryError::NotPrometheus(_)), "{err}");
        assert!(err.to_string().contains("check PROMETHEUS_URL"), "{err}");
        let err = read_answer(BASE, Q, 200, "<html>Grafana</html>").unwrap_err();
        assert!(matches!(err, QueryError::NotPrometheus(_)), "{err}");
    }

    #[tokio::test]
    async fn query_sends_the_promql_encoded_and_reads_the_answer() {
        use wiremock::matchers::{method, path, query_param};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        let promql = r#"sum(rate(http_requests_total{slot="green", status=~"5.."}[30s])) / 2 + 1"#;
        Mock::given(method("GET"))
            .and(path("/api/v1/query"))
            .and(query_param("query", promql))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.25"]}]}
            })))
            .expect(1)
            .mount(&server)
            .await;
        let prom = Prometheus::new(&format!("{}/", server.uri())).unwrap();
        assert_eq!(prom.query(promql).await.unwrap(), QueryValue::Number(0.25));
    }

    #[tokio::test]
    async fn an_answer_larger_than_any_prometheus_gives_is_not_read_whole() {
        use wiremock::matchers::path;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        let huge = format!(
            r#"{{"status":"success","data":{{"resultType":"string","result":[1,"{}"]}}}}"#,
            "x".repeat(super::super::http::MAX_ANSWER_BYTES)
        );
        Mock::given(path("/api/v1/query"))
            .respond_with(ResponseTemplate::new(200).set_body_string(huge))
            .mount(&server)
            .await;
        let prom = Prometheus::new(&server.uri()).unwrap();
        let err = prom.query("up").await.unwrap_err();
        let qe = QueryError::of(&err).expect("a QueryError");
        assert!(
            matches!(qe, QueryError::Unreachable(m) if m.contains("larger than 16777216 bytes")),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn a_target_list_too_large_to_read_says_so() {
        use wiremock::matchers::path;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        let huge = format!(
            r#"{{"status":"success","data":{{"activeTargets":[],"pad":"{}"}}}}"#,
            "x".repeat(super::super::http::MAX_ANSWER_BYTES)
        );
        Mock::given(path("/api/v1/targets"))
            .respond_with(ResponseTemplate::new(200).set_body_string(huge))
            .mount(&server)
            .await;
        let prom = Prometheus::new(&server.uri()).unwrap();
        let err = prom.targets().await.unwrap_err().to_string();
        assert!(err.contains("larger than 16777216 bytes"), "{err}");
        assert!(!err.contains("not its HTTP API's JSON"), "{err}");
    }

    #[tokio::test]
    async fn a_bad_request_answer_is_a_rejected_query_error() {
        use wiremock::matchers::path;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(path("/api/v1/query"))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "status": "error", "errorType": "bad_data",
                "error": "invalid parameter \"query\": 1:5: parse error: unclosed left parenthesis"
            })))
            .mount(&server)
            .await;
        let prom = Prometheus::new(&server.uri()).unwrap();
        let err = prom.query("sum(up").await.unwrap_err();
        let qe = QueryError::of(&err).expect("a QueryError");
        assert!(matches!(qe, QueryError::Rejected(m) if m.contains("unclosed left parenthesis")));
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_transient_and_names_prometheus_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let prom = Prometheus::new(&base).unwrap();
        let err = prom.query("up").await.unwrap_err();
        let qe = QueryError::of(&err).expect("a QueryError");
        assert!(qe.is_transient(), "{qe}");
        let msg = qe.to_string();
        assert!(msg.starts_with(&format!("Prometheus at {base}: ")), "{msg}");
        assert!(msg.ends_with("; check PROMETHEUS_URL"), "{msg}");
    }
}
