//! Analysis: whether the new slot is healthy enough to take more users.
//!
//! A step of the traffic shift is gated by measurements. A measurement runs
//! the profile's queries (`traffic.analysis`) against Prometheus for the new
//! slot, and for the old one where a metric is compared with it; [`judge`]
//! turns the numbers into a verdict and [`decide`] turns a step's verdicts
//! into what the rollout does next. Both are pure, so every rule is tested
//! without a Prometheus; [`measure`] is the only part that talks to one.
//!
//! The rules lean towards holding: too little traffic, no data or an
//! unreachable Prometheus make a measurement inconclusive, never a pass,
//! because a slot nobody has used has proved nothing. A step that stays
//! without a verdict for too long aborts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::traffic::{Analysis, Metric, Pause};
use crate::error::{Kind, fail};
use crate::providers::prometheus::{Prometheus, QueryError, QueryValue};

/// Where analysis reads its numbers: Prometheus in a run. The walk holds
/// this seam, not the client, so what it does with each kind of answer (a
/// number, no data, a Prometheus that is away, a query it refuses) is
/// tested on answers the test chooses.
#[async_trait::async_trait]
pub trait MetricSource: Send + Sync {
    /// One instant query's value.
    async fn instant(&self, promql: &str) -> Result<QueryValue, QueryError>;
}

#[async_trait::async_trait]
impl MetricSource for Prometheus {
    async fn instant(&self, promql: &str) -> Result<QueryValue, QueryError> {
        self.query(promql).await.map_err(|e| {
            QueryError::of(&e)
                .cloned()
                .unwrap_or_else(|| QueryError::Unreachable(format!("{e:#}")))
        })
    }
}

/// The values of a query's placeholders for one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryVars {
    pub namespace: String,
    /// The slot measured: the new one, or the old one for a comparison.
    pub slot: String,
    /// The image tag the slot runs.
    pub version: String,
    /// The analysis interval, e.g. `30s`, for range selectors.
    pub interval: String,
}

/// A query template with its placeholders (`{{slot}}`, `{{ slot }}`)
/// replaced.
///
/// The values are inserted as they are: namespaces and slots are DNS labels
/// and versions image tags, none of which can hold a quote that would need
/// escaping inside a PromQL string. A placeholder this function does not
/// know is left in place; profiles are checked by
/// [`crate::config::traffic::query_problems`] before any query is rendered,
/// so it only shows up in a query Prometheus then rejects, which names it.
pub fn render(query: &str, vars: &QueryVars) -> String {
    let mut out = String::with_capacity(query.len() + 32);
    let mut at = 0;
    for p in crate::config::traffic::placeholders(query).0 {
        let value = match p.name {
            "namespace" => &vars.namespace,
            "slot" => &vars.slot,
            "version" => &vars.version,
            "interval" => &vars.interval,
            _ => continue,
        };
        out.push_str(&query[at..p.start]);
        out.push_str(value);
        at = p.end;
    }
    out.push_str(&query[at..]);
    out
}

/// What a measurement, or one metric of it, says about the new slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not enough to say either: too little traffic, no data, or a
    /// Prometheus that did not answer.
    Inconclusive,
}

/// One metric of a measurement, as the run report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    pub name: String,
    /// The new slot's value; `None` without data. Infinite values (a
    /// quantile above the highest histogram bucket) are written as
    /// `"+Inf"`/`"-Inf"`, as Prometheus writes them, because JSON has no
    /// infinity and `null` would read as "no data".
    #[serde(default, with = "number_or_inf")]
    pub value: Option<f64>,
    /// The old slot's value, where the metric is compared with it.
    #[serde(default, with = "number_or_inf")]
    pub old_value: Option<f64>,
    pub verdict: Verdict,
    /// The thresholds in human form, e.g. `≤ 1000 ms, ≤ 1.5× old`.
    pub threshold: String,
    pub unit: Option<String>,
    /// What a reader needs to trust the verdict, e.g. that the old slot
    /// had no data so the ratio was not compared.
    pub note: Option<String>,
}

/// One run of the analysis queries during a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub at: DateTime<Utc>,
    /// The new slot's share of traffic when measured, in percent.
    pub percent: u32,
    /// The samples query's answer: the new slot's requests in the interval.
    pub samples: Option<f64>,
    pub min_samples: u64,
    pub verdict: Verdict,
    pub metrics: Vec<MetricResult>,
    /// One line saying why, e.g. `error-rate 7.2 % > 1 %`.
    pub reason: String,
}

/// What a query gave, for judging: a number, nothing, or a failure to ask
/// (Prometheus unreachable), which must not be mistaken for "no data" (an
/// old slot without data is not compared; one that could not be asked may
/// well be worse).
#[derive(Debug, Clone, PartialEq)]
enum Reading {
    Value(f64),
    NoData,
    Failed(String),
    /// Not queried: the old slot when no comparison is wanted (it serves
    /// nobody: after 100 %, or on a first switch).
    NotAsked,
}

impl Reading {
    fn from_option(v: Option<f64>) -> Reading {
        v.map_or(Reading::NoData, Reading::Value)
    }

    fn value(&self) -> Option<f64> {
        match self {
            Reading::Value(v) => Some(*v),
            _ => None,
        }
    }
}

/// Judge a measurement from its numbers.
///
/// `values` holds, per metric of `analysis` in order, the new slot's value
/// and the old slot's (`None` when not queried or without data).
///
/// Too few samples make the whole measurement inconclusive even when a
/// metric is out of bounds: a 50 % error rate over four requests is noise,
/// and the step holds until traffic says more (or aborts when it never
/// does). The metrics are still judged and reported, so a reader sees where
/// they are heading.
pub fn judge(
    analysis: &Analysis,
    percent: u32,
    samples: Option<f64>,
    values: &[(Option<f64>, Option<f64>)],
    at: DateTime<Utc>,
) -> Measurement {
    let readings: Vec<(Reading, Reading)> = (0..analysis.metrics.len())
        .map(|i| {
            let (new, old) = values.get(i).copied().unwrap_or((None, None));
            (
                Reading::from_option(new),
                old.map_or(Reading::NotAsked, Reading::Value),
            )
        })
        .collect();
    judge_readings(
        analysis,
        percent,
        &Reading::from_option(samples),
        &readings,
        at,
    )
}

fn judge_readings(
    analysis: &Analysis,
    percent: u32,
    samples: &Reading,
    readings: &[(Reading, Reading)],
    at: DateTime<Utc>,
) -> Measurement {
    let min = analysis.samples.min;
    let judged: Vec<(MetricResult, Option<String>)> = analysis
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (new, old) = readings
                .get(i)
                .cloned()
                .unwrap_or((Reading::NoData, Reading::NotAsked));
            let (mut result, why) = judge_metric(m, &new, &old);
            if m.observe_only {
                // Reported with its own verdict, kept out of the step's.
                result.note = Some(match result.note {
                    Some(n) => format!("observe only; {n}"),
                    None => "observe only".into(),
                });
                return (result, None);
            }
            (result, why)
        })
        .collect();
    let too_few = match samples {
        Reading::Value(s) if *s >= min as f64 => None,
        Reading::Value(s) => Some(format!("{} samples < {min} needed", num(*s))),
        Reading::NoData => Some(format!(
            "no samples (the samples query has no data); {min} needed"
        )),
        Reading::Failed(e) => Some(format!("samples not measured: {e}")),
        Reading::NotAsked => Some("samples not measured".to_string()),
    };
    let of = |v: Verdict| -> Vec<&str> {
        judged
            .iter()
            .filter(|(r, _)| r.verdict == v)
            .filter_map(|(_, why)| why.as_deref())
            .collect()
    };
    let (verdict, reason) = if let Some(why) = too_few {
        (Verdict::Inconclusive, why)
    } else if !of(Verdict::Fail).is_empty() {
        (Verdict::Fail, of(Verdict::Fail).join("; "))
    } else if !of(Verdict::Inconclusive).is_empty() {
        (Verdict::Inconclusive, of(Verdict::Inconclusive).join("; "))
    } else {
        let n = judged.len();
        (
            Verdict::Pass,
            if n == 1 {
                "the 1 metric is within its thresholds".to_string()
            } else {
                format!("all {n} metrics within thresholds")
            },
        )
    };
    Measurement {
        at,
        percent,
        samples: samples.value(),
        min_samples: min,
        verdict,
        metrics: judged.into_iter().map(|(r, _)| r).collect(),
        reason,
    }
}

/// One metric's result, and for a fail or an inconclusive one the words
/// the measurement's reason uses.
fn judge_metric(m: &Metric, new: &Reading, old: &Reading) -> (MetricResult, Option<String>) {
    let unit = m.unit.as_deref();
    let mut result = MetricResult {
        name: m.name.clone(),
        value: new.value(),
        old_value: m.max_ratio_to_old.and(old.value()),
        verdict: Verdict::Pass,
        threshold: threshold(m),
        unit: m.unit.clone(),
        note: None,
    };
    let v = match new {
        Reading::Value(v) => *v,
        Reading::NoData => {
            result.verdict = Verdict::Inconclusive;
            result.note = Some("no data on the new slot".into());
            return (result, Some(format!("{} has no data", m.name)));
        }
        Reading::Failed(e) => {
            result.verdict = Verdict::Inconclusive;
            result.note = Some(format!("not measured: {e}"));
            return (result, Some(format!("{} not measured: {e}", m.name)));
        }
        Reading::NotAsked => {
            result.verdict = Verdict::Inconclusive;
            result.note = Some("not measured".into());
            return (result, Some(format!("{} not measured", m.name)));
        }
    };
    let mut fails = Vec::new();
    if let Some(max) = m.max
        && v > max
    {
        fails.push(format!(
            "{} {} > {}",
            m.name,
            amount(v, unit),
            amount(max, unit)
        ));
    }
    if let Some(min) = m.min
        && v < min
    {
        fails.push(format!(
            "{} {} < {}",
            m.name,
            amount(v, unit),
            amount(min, unit)
        ));
    }
    let mut unknown = None;
    if let Some(ratio) = m.max_ratio_to_old {
        // The old slot is the baseline only while it serves traffic. After
        // 100 % (or on a first deploy) it has none and is not asked: a
        // ratio to nothing says nothing, so the ratio is skipped rather
        // than failed; a metric with only this threshold then passes, as
        // nothing else can be held against it. While it serves most users,
        // though, a baseline without data is Prometheus not there yet (a
        // missed scrape), and passing then would wave a regression through:
        // no verdict until it has one. A 0 baseline (an old slot with no
        // errors) allows 0: any more is above every multiple of it, and
        // skipping it waved through a new slot failing 40 % of requests.
        match old {
            Reading::Value(o) => {
                if v > ratio * o {
                    fails.push(format!(
                        "{} {} > {}× old ({})",
                        m.name,
                        amount(v, unit),
                        num(ratio),
                        amount(*o, unit)
                    ));
                }
            }
            Reading::NotAsked => {
                result.note = Some("old slot serves no users; not compared".into())
            }
            Reading::NoData => {
                result.note = Some("old slot has no data yet".into());
                unknown = Some(format!("{} old slot has no data yet", m.name));
            }
            // Unlike no data, a failed query hides a baseline that exists.
            Reading::Failed(e) => {
                result.note = Some(format!("old slot not measured: {e}"));
                unknown = Some(format!("{} old slot not measured: {e}", m.name));
            }
        }
    }
    if !fails.is_empty() {
        result.verdict = Verdict::Fail;
        (result, Some(fails.join("; ")))
    } else if let Some(why) = unknown {
        result.verdict = Verdict::Inconclusive;
        (result, Some(why))
    } else {
        (result, None)
    }
}

/// The thresholds in human form: `≤ 1 %`, `≥ 99 %`, `≤ 1.5× old`.
fn threshold(m: &Metric) -> String {
    let unit = m.unit.as_deref();
    let mut parts = Vec::new();
    if let Some(max) = m.max {
        parts.push(format!("≤ {}", amount(max, unit)));
    }
    if let Some(min) = m.min {
        parts.push(format!("≥ {}", amount(min, unit)));
    }
    if let Some(r) = m.max_ratio_to_old {
        parts.push(format!("≤ {}× old", num(r)));
    }
    parts.join(", ")
}

/// A number with its unit, as reasons and the live line show it.
pub fn amount(v: f64, unit: Option<&str>) -> String {
    match unit {
        Some(u) if !u.is_empty() => format!("{} {u}", num(v)),
        _ => num(v),
    }
}

/// A number as a person reads it: at most three decimals (three
/// significant digits below 1), no trailing zeros.
fn num(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let a = v.abs();
    let decimals = if a == 0.0 || a >= 1.0 {
        3
    } else {
        (2 - a.log10().floor() as i32).clamp(3, 12) as usize
    };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" { "0".into() } else { s }
}

/// What the rollout does after a measurement (or a tick without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Hold the step and measure again.
    Wait,
    /// Go to the next step.
    Advance,
    /// Send users back to the old slot, saying why.
    Abort(String),
}

/// What a step does next.
///
/// `this_step` are the step's measurements, oldest first; `failures_so_far`
/// counts failed measurements over the whole rollout, this step's included,
/// because a slot that fails now and then is failing, whichever step it is
/// on. A step advances on its pause and a passing last measurement: a pass
/// earlier in the step does not count once a later one says otherwise.
pub fn decide(
    analysis: Option<&Analysis>,
    pause: Pause,
    elapsed: Duration,
    this_step: &[Measurement],
    failures_so_far: u32,
) -> Decision {
    let Some(analysis) = analysis else {
        return if pause.is_over(elapsed) {
            Decision::Advance
        } else {
            Decision::Wait
        };
    };
    if failures_so_far > analysis.failure_limit {
        let why = this_step
            .iter()
            .rev()
            .find(|m| m.verdict == Verdict::Fail)
            .map_or("the failed measurements were in earlier steps", |m| {
                m.reason.as_str()
            });
        return Decision::Abort(format!(
            "analysis failed {failures_so_far} times (limit {}): {why}",
            analysis.failure_limit
        ));
    }
    if !pause.is_over(elapsed) {
        return Decision::Wait;
    }
    let last = this_step.last();
    if last.is_some_and(|m| m.verdict == Verdict::Pass) {
        return Decision::Advance;
    }
    // A manual pause never ends by itself, so it never runs out of time
    // for a verdict either.
    let Some(length) = pause.length() else {
        return Decision::Wait;
    };
    let limit = length.saturating_add(analysis.inconclusive_timeout);
    if elapsed >= limit {
        let why = last.map_or("no measurement", |m| m.reason.as_str());
        return Decision::Abort(format!(
            "no verdict after {}: {why}; no traffic is not success",
            humantime::format_duration(limit)
        ));
    }
    Decision::Wait
}

/// Measure the new slot (and the old one where a metric compares with it)
/// now, and judge the numbers.
///
/// A Prometheus that does not answer makes the measurement inconclusive
/// (the step holds and measures again); a query Prometheus rejects is an
/// error, because it stays wrong until the profile changes and waiting out
/// the inconclusive timeout would only hide that.
pub async fn measure(
    prom: &dyn MetricSource,
    analysis: &Analysis,
    new: &QueryVars,
    old: Option<&QueryVars>,
    percent: u32,
) -> anyhow::Result<Measurement> {
    // The queries in order: samples, each metric on the new slot, then each
    // compared metric on the old slot.
    let mut queries: Vec<(String, String)> =
        vec![("samples".to_string(), render(&analysis.samples.query, new))];
    for m in &analysis.metrics {
        queries.push((m.name.clone(), render(&m.query, new)));
    }
    let mut old_index = vec![None; analysis.metrics.len()];
    if let Some(old) = old {
        for (i, m) in analysis.metrics.iter().enumerate() {
            if m.max_ratio_to_old.is_some() {
                old_index[i] = Some(queries.len());
                queries.push((format!("{} (old slot)", m.name), render(&m.query, old)));
            }
        }
    }
    let at = Utc::now();
    let readings =
        futures::future::try_join_all(queries.iter().map(|(name, query)| read(prom, name, query)))
            .await?;
    let metric_readings: Vec<(Reading, Reading)> = (0..analysis.metrics.len())
        .map(|i| {
            (
                readings[1 + i].clone(),
                old_index[i].map_or(Reading::NotAsked, |j| readings[j].clone()),
            )
        })
        .collect();
    let measurement = judge_readings(analysis, percent, &readings[0], &metric_readings, at);
    tracing::debug!(
        slot = %new.slot,
        percent,
        verdict = ?measurement.verdict,
        reason = %measurement.reason,
        "analysis measurement"
    );
    Ok(measurement)
}

/// One query's reading; an error only for a query that will never work.
async fn read(prom: &dyn MetricSource, name: &str, query: &str) -> anyhow::Result<Reading> {
    match prom.instant(query).await {
        Ok(QueryValue::Number(v)) => Ok(Reading::Value(v)),
        Ok(QueryValue::NoData) => Ok(Reading::NoData),
        Err(QueryError::Rejected(why)) => Err(fail(
            Kind::PhaseFailed,
            format!(
                "analysis query {name} is rejected by Prometheus: {why}; fix traffic.analysis in the profile"
            ),
        )),
        Err(QueryError::NotPrometheus(why)) => Err(fail(Kind::PhaseFailed, why)),
        Err(QueryError::Unreachable(why)) => Ok(Reading::Failed(why)),
    }
}

/// `Option<f64>` in JSON with infinities as Prometheus writes them.
mod number_or_inf {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) if x.is_infinite() => s.serialize_str(if *x > 0.0 { "+Inf" } else { "-Inf" }),
            Some(x) if x.is_nan() => s.serialize_none(),
            Some(x) => s.serialize_some(x),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Number(x)) => Ok(Some(x)),
            Some(Raw::Text(t)) => match t.as_str() {
                "+Inf" => Ok(Some(f64::INFINITY)),
                "-Inf" => Ok(Some(f64::NEG_INFINITY)),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, +Inf or -Inf, not {other:?}"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::profile::Profile;

    /// The shipped production profile's analysis: error-rate ≤ 1 %,
    /// p99-latency ≤ 1000 ms and ≤ 1.5× old, 200 samples, failure_limit 1,
    /// inconclusive_timeout 5m.
    fn production() -> Analysis {
        let profile: Profile = crate::config::profile::parse(
            include_str!("../../manifests/environments/production.yaml"),
            "production",
            "production.yaml",
        )
        .unwrap();
        profile.traffic.analysis.expect("production has analysis")
    }

    /// An analysis section as a profile would write it.
    fn analysis(yaml: &str) -> Analysis {
        serde_saphyr::from_str::<crate::config::traffic::AnalysisOf<crate::config::form::Written>>(
            yaml,
        )
        .unwrap()
        .check(None)
        .unwrap()
    }

    fn ratio_only() -> Analysis {
        analysis(
            r#"
samples: {query: 'sum(increase(http_requests_total{slot="{{slot}}"}[{{interval}}]))', min: 100}
metrics:
  - name: p99-latency
    unit: ms
    query: '1000 * histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{slot="{{slot}}"}[{{interval}}])))'
    max_ratio_to_old: 1.5
"#,
        )
    }

    fn success_rate() -> Analysis {
        analysis(
            r#"
interval: 1m
failure_limit: 0
samples: {query: 'sum(increase(http_requests_total{slot="{{slot}}"}[{{interval}}]))', min: 100}
metrics:
  - name: success-rate
    unit: "%"
    query: '100 * sum(rate(http_requests_total{slot="{{slot}}", status!~"5.."}[{{interval}}])) / sum(rate(http_requests_total{slot="{{slot}}"}[{{interval}}]))'
    min: 99
"#,
        )
    }

    fn at() -> DateTime<Utc> {
        "2025-01-01T12:00:00Z".parse().unwrap()
    }

    fn vars(slot: &str) -> QueryVars {
        QueryVars {
            namespace: "maily-production".into(),
            slot: slot.into(),
            version: "v2.3.1".into(),
            interval: "30s".into(),
        }
    }

    // render

    #[test]
    fn render_replaces_every_placeholder_with_or_without_spaces() {
        let q = r#"x{namespace="{{namespace}}", slot="{{ slot }}", version="{{version }}"}[{{  interval}}] or y{slot="{{slot}}"}"#;
        assert_eq!(
            render(q, &vars("green")),
            r#"x{namespace="maily-production", slot="green", version="v2.3.1"}[30s] or y{slot="green"}"#
        );
    }

    #[test]
    fn render_leaves_text_without_placeholders_alone() {
        assert_eq!(render("sum(up)", &vars("blue")), "sum(up)");
        assert_eq!(render("", &vars("blue")), "");
        assert_eq!(render("a { b } c", &vars("blue")), "a { b } c");
    }

    #[test]
    fn render_leaves_what_it_does_not_know_for_prometheus_to_name() {
        assert_eq!(
            render("up{a=\"{{cluster}}\", s=\"{{slot}}\"}", &vars("blue")),
            "up{a=\"{{cluster}}\", s=\"blue\"}"
        );
        assert_eq!(
            render("up{s=\"{{slot\"}", &vars("blue")),
            "up{s=\"{{slot\"}"
        );
    }

    #[test]
    fn the_shipped_queries_render_completely() {
        let a = production();
        for q in std::iter::once(&a.samples.query).chain(a.metrics.iter().map(|m| &m.query)) {
            let r = render(q, &vars("green"));
            assert!(!r.contains("{{") && !r.contains("}}"), "{r}");
            assert!(r.contains(r#"slot="green""#), "{r}");
            assert!(r.contains(r#"namespace="maily-production""#), "{r}");
            // Four scrapes of the ServiceMonitors (15s each), whatever the
            // measurement interval.
            assert!(r.contains("[1m]"), "{r}");
        }
    }

    // judge: samples

    #[test]
    fn no_samples_is_inconclusive_and_still_reports_the_metrics() {
        let m = judge(
            &production(),
            5,
            None,
            &[(Some(0.2), None), (Some(300.0), Some(280.0))],
            at(),
        );
        assert_eq!(m.verdict, Verdict::Inconclusive);
        assert!(m.reason.contains("no samples"), "{}", m.reason);
        assert!(m.reason.contains("200 needed"), "{}", m.reason);
        assert_eq!(m.samples, None);
        assert_eq!(m.min_samples, 200);
        assert_eq!(m.metrics.len(), 2);
        assert_eq!(m.metrics[0].value, Some(0.2));
        assert_eq!(m.metrics[1].old_value, Some(280.0));
    }

    #[test]
    fn too_few_samples_hold_even_a_failing_metric() {
        let m = judge(
            &production(),
            5,
            Some(12.0),
            &[(Some(50.0), None), (Some(300.0), None)],
            at(),
        );
        assert_eq!(m.verdict, Verdict::Inconclusive);
        assert_eq!(m.reason, "12 samples < 200 needed");
        assert_eq!(
            m.metrics[0].verdict,
            Verdict::Fail,
            "still judged, for the report"
        );
    }

    #[test]
    fn the_sample_minimum_is_inclusive() {
        let values = [(Some(0.5), None), (Some(300.0), None)];
        let below = judge(&production(), 5, Some(199.5), &values, at());
        assert_eq!(below.verdict, Verdict::Inconclusive);
        assert_eq!(below.reason, "199.5 samples < 200 needed");
        let at_min = judge(&production(), 5, Some(200.0), &values, at());
        assert_eq!(at_min.verdict, Verdict::Pass, "{}", at_min.reason);
    }

    // judge: thresholds

    #[test]
    fn within_every_threshold_passes() {
        let m = judge(
            &production(),
            25,
            Some(1000.0),
            &[(Some(0.4), None), (Some(300.0), Some(250.0))],
            at(),
        );
        assert_eq!(m.verdict, Verdict::Pass);
        assert_eq!(m.reason, "all 2 metrics within thresholds");
        assert_eq!(m.percent, 25);
        assert_eq!(m.at, at());
        assert_eq!(m.metrics[0].threshold, "≤ 1 %");
        assert_eq!(m.metrics[1].threshold, "≤ 1000 ms, ≤ 1.5× old");
        assert_eq!(m.metrics[0].unit.as_deref(), Some("%"));
        assert!(
            m.metrics
                .iter()
                .all(|r| r.verdict == Verdict::Pass && r.note.is_none())
        );
    }

    #[test]
    fn above_max_fails_and_max_itself_passes() {
        let fail = judge(
            &production(),
            5,
            Some(500.0),
            &[(Some(7.2), None), (Some(300.0), Some(300.0))],
            at(),
        );
        assert_eq!(fail.verdict, Verdict::Fail);
        assert_eq!(fail.reason, "error-rate 7.2 % > 1 %");
        assert_eq!(fail.metrics[0].verdict, Verdict::Fail);
        assert_eq!(fail.metrics[1].verdict, Verdict::Pass);
        let edge = judge(
            &production(),
            5,
            Some(500.0),
            &[(Some(1.0), None), (Some(1000.0), Some(700.0))],
            at(),
        );
        assert_eq!(edge.verdict, Verdict::Pass, "{}", edge.reason);
    }

    #[test]
    fn below_min_fails_and_min_itself_passes() {
        let a = success_rate();
        let fail = judge(&a, 50, Some(100.0), &[(Some(98.25), None)], at());
        assert_eq!(fail.verdict, Verdict::Fail);
        assert_eq!(fail.reason, "success-rate 98.25 % < 99 %");
        assert_eq!(fail.metrics[0].threshold, "≥ 99 %");
        let edge = judge(&a, 50, Some(100.0), &[(Some(99.0), None)], at());
        assert_eq!(edge.verdict, Verdict::Pass);
        assert_eq!(edge.reason, "the 1 metric is within its thresholds");
    }

    #[test]
    fn above_the_ratio_to_old_fails_and_the_ratio_itself_passes() {
        let fail = judge(
            &production(),
            5,
            Some(500.0),
            &[(Some(0.1), None), (Some(450.0), Some(200.0))],
            at(),
        );
        assert_eq!(fail.verdict, Verdict::Fail);
        assert_eq!(fail.reason, "p99-latency 450 ms > 1.5× old (200 ms)");
        assert_eq!(fail.metrics[1].old_value, Some(200.0));
        let edge = judge(
            &production(),
            5,
            Some(500.0),
            &[(Some(0.1), None), (Some(300.0), Some(200.0))],
            at(),
        );
        assert_eq!(edge.verdict, Verdict::Pass, "{}", edge.reason);
    }

    #[test]
    fn an_old_slot_without_data_is_not_compared_but_max_still_applies() {
        let pass = judge(
            &production(),
            100,
            Some(500.0),
            &[(Some(0.1), None), (Some(900.0), None)],
            at(),
        );
        assert_eq!(pass.verdict, Verdict::Pass);
        assert_eq!(
            pass.metrics[1].note.as_deref(),
            Some("old slot serves no users; not compared")
        );
        let fail = judge(
            &production(),
            100,
            Some(500.0),
            &[(Some(0.1), None), (Some(1200.0), None)],
            at(),
        );
        assert_eq!(fail.verdict, Verdict::Fail);
        assert_eq!(fail.reason, "p99-latency 1200 ms > 1000 ms");
        assert_eq!(
            fail.metrics[1].note.as_deref(),
            Some("old slot serves no users; not compared")
        );
    }

    #[test]
    fn an_observe_only_metric_is_judged_and_shown_but_never_decides() {
        let mut analysis = production();
        analysis.metrics[1].observe_only = true;
        let m = judge(
            &analysis,
            25,
            Some(500.0),
            &[(Some(0.1), None), (Some(5000.0), Some(100.0))],
            at(),
        );
        assert_eq!(m.verdict, Verdict::Pass, "{}", m.reason);
        assert_eq!(m.metrics[1].verdict, Verdict::Fail);
        assert!(
            m.metrics[1]
                .note
                .as_deref()
                .unwrap()
                .starts_with("observe only"),
            "{:?}",
            m.metrics[1].note
        );
        let no_data = judge(
            &analysis,
            25,
            Some(500.0),
            &[(Some(0.1), None), (None, None)],
            at(),
        );
        assert_eq!(no_data.verdict, Verdict::Pass, "{}", no_data.reason);
    }

    #[test]
    fn a_baseline_asked_for_but_not_there_yet_holds_the_verdict() {
        // At 25 % the old slot serves most users: no data for it is a
        // missed scrape, not an absent baseline, and must not wave a slow
        // new slot through on its ceiling alone.
        let m = judge_readings(
            &production(),
            25,
            &Reading::Value(500.0),
            &[
                (Reading::Value(0.1), Reading::NotAsked),
                (Reading::Value(900.0), Reading::NoData),
            ],
            at(),
        );
        assert_eq!(m.verdict, Verdict::Inconclusive);
        assert_eq!(m.reason, "p99-latency old slot has no data yet");
        assert_eq!(
            m.metrics[1].note.as_deref(),
            Some("old slot has no data yet")
        );
    }

    #[test]
    fn a_ratio_only_metric_passes_when_the_old_slot_has_nothing_to_compare() {
        // After 100 % the old slot serves nobody: no baseline, no other threshold.
        let none = judge(
            &ratio_only(),
            100,
            Some(150.0),
            &[(Some(5000.0), None)],
            at(),
        );
        assert_eq!(none.verdict, Verdict::Pass);
        assert_eq!(
            none.metrics[0].note.as_deref(),
            Some("old slot serves no users; not compared")
        );
        assert_eq!(none.metrics[0].threshold, "≤ 1.5× old");
        // An old slot at 0 allows 0, and nothing above it.
        let zero = judge(
            &ratio_only(),
            25,
            Some(150.0),
            &[(Some(40.0), Some(0.0))],
            at(),
        );
        assert_eq!(zero.verdict, Verdict::Fail);
        let still = judge(
            &ratio_only(),
            25,
            Some(150.0),
            &[(Some(0.0), Some(0.0))],
            at(),
        );
        assert_eq!(still.verdict, Verdict::Pass);
    }

    #[test]
    fn a_metric_without_data_is_inconclusive() {
        let m = judge(
            &production(),
            5,
            Some(500.0),
            &[(Some(0.1), None), (None, Some(200.0))],
            at(),
        );
        assert_eq!(m.verdict, Verdict::Inconclusive);
        assert_eq!(m.reason, "p99-latency has no data");
        assert_eq!(m.metrics[1].verdict, Verdict::Inconclusive);
        assert_eq!(
            m.metrics[1].note.as_deref(),
            Some("no data on the new slot")
        );
        assert_eq!(m.metrics[0].verdict, Verdict::Pass);
    }

    #[test]
    fn a_fail_outweighs_an_inconclusive_metric() {
        let m = judge(
            &production(),
            5,
            Some(500.0),
            &[(Some(3.0), None), (None, None)],
            at(),
        );
        assert_eq!(m.verdict, Verdict::Fail);
        assert_eq!(m.reason, "error-rate 3 % > 1 %");
    }

    #[test]
    fn the_reason_names_every_failing_metric_and_threshold() {
        let m = judge(
            &production(),
            5,
            Some(500.0),
            &[(Some(2.5), None), (Some(1800.0), Some(400.0))],
            at(),
        );
        assert_eq!(m.verdict, Verdict::Fail);
        assert_eq!(
            m.reason,
            "error-rate 2.5 % > 1 %; p99-latency 1800 ms > 1000 ms; p99-latency 1800 ms > 1.5× old (400 ms)"
        );
    }

    #[test]
    fn missing_values_count_as_no_data() {
        let m = judge(&production(), 5, Some(500.0), &[(Some(0.1), None)], at());
        assert_eq!(m.metrics.len(), 2);
        assert_eq!(m.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn an_infinite_quantile_fails_and_survives_the_report() {
        let m = judge(
            &production(),
            5,
            Some(500.0),
            &[(Some(0.1), None), (Some(f64::INFINITY), Some(200.0))],
            at(),
        );
        assert_eq!(m.verdict, Verdict::Fail);
        assert!(
            m.reason.starts_with("p99-latency +Inf ms > 1000 ms"),
            "{}",
            m.reason
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["metrics"][1]["value"], "+Inf");
        let back: Measurement = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn a_measurement_round_trips_through_json_in_snake_case() {
        let m = judge(
            &production(),
            50,
            Some(812.0),
            &[(Some(0.25), None), (None, Some(210.0))],
            at(),
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["verdict"], "inconclusive");
        assert_eq!(json["metrics"][0]["verdict"], "pass");
        assert_eq!(json["metrics"][1]["value"], serde_json::Value::Null);
        assert_eq!(json["metrics"][1]["old_value"], 210.0);
        assert_eq!(json["min_samples"], 200);
        assert_eq!(json["at"], "2025-01-01T12:00:00Z");
        let back: Measurement = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(num(7.2), "7.2");
        assert_eq!(num(1000.0), "1000");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(199.5), "199.5");
        assert_eq!(num(2.0 / 3.0), "0.667");
        assert_eq!(num(0.000_123_4), "0.000123");
        assert_eq!(num(-0.0), "0");
        assert_eq!(num(1234.56789), "1234.568");
    }

    // decide

    const PAUSE: Pause = Pause::For(Duration::from_secs(120));

    fn measured(verdict: Verdict, reason: &str) -> Measurement {
        Measurement {
            at: at(),
            percent: 25,
            samples: Some(300.0),
            min_samples: 200,
            verdict,
            metrics: vec![],
            reason: reason.into(),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn without_analysis_a_step_is_its_pause() {
        assert_eq!(decide(None, PAUSE, secs(119), &[], 0), Decision::Wait);
        assert_eq!(decide(None, PAUSE, secs(120), &[], 0), Decision::Advance);
        assert_eq!(decide(None, PAUSE, secs(900), &[], 0), Decision::Advance);
    }

    #[test]
    fn a_passing_step_advances_at_its_pause_not_before() {
        let a = production();
        let pass = [measured(Verdict::Pass, "all 2 metrics within thresholds")];
        assert_eq!(decide(Some(&a), PAUSE, secs(119), &pass, 0), Decision::Wait);
        assert_eq!(
            decide(Some(&a), PAUSE, secs(120), &pass, 0),
            Decision::Advance
        );
    }

    #[test]
    fn only_the_last_measurement_lets_a_step_advance() {
        let a = production();
        let steps = [
            measured(Verdict::Pass, "all 2 metrics within thresholds"),
            measured(Verdict::Inconclusive, "3 samples < 200 needed"),
        ];
        assert_eq!(
            decide(Some(&a), PAUSE, secs(150), &steps, 0),
            Decision::Wait
        );
        assert_eq!(decide(Some(&a), PAUSE, secs(150), &[], 0), Decision::Wait);
    }

    #[test]
    fn failures_beyond_the_limit_abort_at_once() {
        let a = production(); // failure_limit: 1
        let steps = [
            measured(Verdict::Fail, "error-rate 3 % > 1 %"),
            measured(Verdict::Pass, "all 2 metrics within thresholds"),
            measured(Verdict::Fail, "error-rate 7.2 % > 1 %"),
        ];
        assert_eq!(
            decide(Some(&a), PAUSE, secs(10), &steps, 2),
            Decision::Abort("analysis failed 2 times (limit 1): error-rate 7.2 % > 1 %".into())
        );
    }

    #[test]
    fn failures_up_to_the_limit_hold_the_step() {
        let a = production();
        let failed = [measured(Verdict::Fail, "error-rate 3 % > 1 %")];
        assert_eq!(
            decide(Some(&a), PAUSE, secs(10), &failed, 1),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&a), PAUSE, secs(200), &failed, 1),
            Decision::Wait
        );
        let strict = success_rate(); // failure_limit: 0
        assert!(matches!(
            decide(Some(&strict), PAUSE, secs(10), &failed, 1),
            Decision::Abort(why) if why == "analysis failed 1 times (limit 0): error-rate 3 % > 1 %"
        ));
    }

    #[test]
    fn failures_of_earlier_steps_count() {
        let a = production();
        let steps = [measured(Verdict::Pass, "all 2 metrics within thresholds")];
        let Decision::Abort(why) = decide(Some(&a), PAUSE, secs(200), &steps, 2) else {
            panic!("2 failures exceed the limit of 1")
        };
        assert!(
            why.starts_with("analysis failed 2 times (limit 1): "),
            "{why}"
        );
    }

    #[test]
    fn a_step_without_a_verdict_aborts_after_pause_and_inconclusive_timeout() {
        let a = production(); // inconclusive_timeout: 5m
        let held = [measured(Verdict::Inconclusive, "3 samples < 200 needed")];
        assert_eq!(decide(Some(&a), PAUSE, secs(419), &held, 0), Decision::Wait);
        assert_eq!(
            decide(Some(&a), PAUSE, secs(420), &held, 0),
            Decision::Abort(
                "no verdict after 7m: 3 samples < 200 needed; no traffic is not success".into()
            )
        );
        assert!(matches!(
            decide(Some(&a), PAUSE, secs(420), &[], 0),
            Decision::Abort(why) if why.contains("no measurement")
        ));
    }

    #[test]
    fn a_pass_at_the_last_moment_still_advances() {
        let a = production();
        let late = [
            measured(Verdict::Inconclusive, "3 samples < 200 needed"),
            measured(Verdict::Pass, "all 2 metrics within thresholds"),
        ];
        assert_eq!(
            decide(Some(&a), PAUSE, secs(600), &late, 0),
            Decision::Advance
        );
    }

    // measure, through the metric source seam: answers chosen per slot

    /// Answers by slot: the new slot's (samples, error rate, p99) and the
    /// old slot's p99, or the old slot's Prometheus error. Keeps what was
    /// asked.
    struct BySlot {
        new: (f64, f64, f64),
        old: Result<f64, QueryError>,
        asked: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl MetricSource for BySlot {
        async fn instant(&self, promql: &str) -> Result<QueryValue, QueryError> {
            self.asked.lock().unwrap().push(promql.to_string());
            let (samples, errors, p99) = self.new;
            if promql.contains("slot=\"blue\"") {
                return self.old.clone().map(QueryValue::Number);
            }
            Ok(QueryValue::Number(if promql.starts_with("sum(increase") {
                samples
            } else if promql.starts_with("100 *") {
                errors
            } else {
                p99
            }))
        }
    }

    fn by_slot(new: (f64, f64, f64), old: Result<f64, QueryError>) -> BySlot {
        BySlot {
            new,
            old,
            asked: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_old_slot_is_asked_only_for_the_metrics_compared_with_it() {
        let source = by_slot((500.0, 0.2, 400.0), Ok(200.0));
        let m = measure(
            &source,
            &production(),
            &vars("green"),
            Some(&vars("blue")),
            25,
        )
        .await
        .unwrap();
        // p99 400 ms is twice the old slot's 200: over max_ratio_to_old 1.5.
        assert_eq!(m.verdict, Verdict::Fail, "{}", m.reason);
        assert!(m.reason.contains("p99-latency"), "{}", m.reason);
        let asked = source.asked.lock().unwrap();
        let old: Vec<&String> = asked
            .iter()
            .filter(|q| q.contains("slot=\"blue\""))
            .collect();
        assert_eq!(
            asked.len(),
            4,
            "samples, two metrics, p99 on blue: {asked:?}"
        );
        assert_eq!(old.len(), 1, "{asked:?}");
        assert!(old[0].starts_with("1000 * histogram_quantile"), "{old:?}");
    }

    #[tokio::test]
    async fn a_baseline_prometheus_cannot_give_leaves_the_step_without_a_verdict() {
        let away = QueryError::Unreachable("Prometheus at http://prom: timed out".into());
        let m = measure(
            &by_slot((500.0, 0.2, 400.0), Err(away)),
            &production(),
            &vars("green"),
            Some(&vars("blue")),
            25,
        )
        .await
        .unwrap();
        assert_eq!(m.verdict, Verdict::Inconclusive, "{}", m.reason);
        assert!(m.reason.contains("timed out"), "{}", m.reason);
        // The same numbers at 100%: nothing is compared, and 400 ms is
        // under the 1000 ms ceiling.
        let m = measure(
            &by_slot(
                (500.0, 0.2, 400.0),
                Err(QueryError::Rejected("never asked".into())),
            ),
            &production(),
            &vars("green"),
            None,
            100,
        )
        .await
        .unwrap();
        assert_eq!(m.verdict, Verdict::Pass, "{}", m.reason);
    }

    // measure, against Prometheus's documented answers

    mod against_a_stub {
        use super::*;
        use serde_json::json;
        use wiremock::matchers::{method, path, query_param};
        use wiremock::{Mock, MockServer, ResponseTemplate};

        fn number(v: &str) -> ResponseTemplate {
            ResponseTemplate::new(200).set_body_json(json!({"status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, v]}]}}))
        }

        async fn answer(server: &MockServer, query: String, with: ResponseTemplate) {
            Mock::given(method("GET"))
                .and(path("/api/v1/query"))
                .and(query_param("query", query.as_str()))
                .respond_with(with)
                .mount(server)
                .await;
        }

        #[tokio::test]
        async fn measure_asks_the_new_slot_and_the_old_one_where_compared() {
            let a = production();
            let server = MockServer::start().await;
            let (new, old) = (vars("green"), vars("blue"));
            answer(&server, render(&a.samples.query, &new), number("420")).await;
            answer(&server, render(&a.metrics[0].query, &new), number("0.5")).await;
            answer(&server, render(&a.metrics[1].query, &new), number("450")).await;
            answer(&server, render(&a.metrics[1].query, &old), number("200")).await;
            let prom = Prometheus::new(&server.uri()).unwrap();
            let m = measure(&prom, &a, &new, Some(&old), 25).await.unwrap();
            assert_eq!(m.samples, Some(420.0));
            assert_eq!(m.metrics[0].value, Some(0.5));
            assert_eq!(m.metrics[0].old_value, None, "error-rate is not compared");
            assert_eq!(m.metrics[1].old_value, Some(200.0));
            assert_eq!(m.verdict, Verdict::Fail);
            assert_eq!(m.reason, "p99-latency 450 ms > 1.5× old (200 ms)");
            assert_eq!(m.percent, 25);
            let asked = server.received_requests().await.unwrap().len();
            assert_eq!(asked, 4, "samples, two metrics, one comparison");
        }

        #[tokio::test]
        async fn an_unavailable_prometheus_makes_the_measurement_inconclusive() {
            let a = production();
            let server = MockServer::start().await;
            let (new, old) = (vars("green"), vars("blue"));
            answer(&server, render(&a.samples.query, &new), number("420")).await;
            answer(&server, render(&a.metrics[0].query, &new), number("0.5")).await;
            answer(
                &server,
                render(&a.metrics[1].query, &new),
                ResponseTemplate::new(503).set_body_json(json!({"status": "error",
                    "errorType": "timeout", "error": "query timed out in expression evaluation"})),
            )
            .await;
            answer(&server, render(&a.metrics[1].query, &old), number("200")).await;
            let prom = Prometheus::new(&server.uri()).unwrap();
            let m = measure(&prom, &a, &new, Some(&old), 25).await.unwrap();
            assert_eq!(m.verdict, Verdict::Inconclusive);
            assert!(
                m.reason.starts_with("p99-latency not measured: "),
                "{}",
                m.reason
            );
            assert!(m.reason.contains("query timed out"), "{}", m.reason);
            assert_eq!(m.metrics[1].value, None);
        }

        #[tokio::test]
        async fn an_old_slot_that_cannot_be_asked_is_not_taken_for_one_without_data() {
            let a = ratio_only();
            let server = MockServer::start().await;
            let (new, old) = (vars("green"), vars("blue"));
            answer(&server, render(&a.samples.query, &new), number("420")).await;
            answer(&server, render(&a.metrics[0].query, &new), number("300")).await;
            answer(
                &server,
                render(&a.metrics[0].query, &old),
                ResponseTemplate::new(500).set_body_string("internal error"),
            )
            .await;
            let prom = Prometheus::new(&server.uri()).unwrap();
            let m = measure(&prom, &a, &new, Some(&old), 50).await.unwrap();
            assert_eq!(m.verdict, Verdict::Inconclusive, "{}", m.reason);
            assert!(
                m.reason.starts_with("p99-latency old slot not measured: "),
                "{}",
                m.reason
            );
        }

        #[tokio::test]
        async fn without_an_old_slot_nothing_is_compared() {
            let a = ratio_only();
            let server = MockServer::start().await;
            let new = vars("green");
            answer(&server, render(&a.samples.query, &new), number("420")).await;
            answer(&server, render(&a.metrics[0].query, &new), number("300")).await;
            let prom = Prometheus::new(&server.uri()).unwrap();
            let m = measure(&prom, &a, &new, None, 100).await.unwrap();
            assert_eq!(m.verdict, Verdict::Pass, "{}", m.reason);
            assert_eq!(server.received_requests().await.unwrap().len(), 2);
        }

        #[tokio::test]
        async fn a_rejected_query_is_an_error_pointing_at_the_profile() {
            let a = production();
            let server = MockServer::start().await;
            answer(
                &server,
                render(&a.metrics[0].query, &vars("green")),
                ResponseTemplate::new(400).set_body_json(json!({"status": "error",
                    "errorType": "bad_data", "error": "invalid parameter \"query\": 1:7: parse error: unexpected identifier"})),
            )
            .await;
            // Every other query answers; the first mounted mock that matches wins.
            Mock::given(path("/api/v1/query"))
                .respond_with(number("420"))
                .mount(&server)
                .await;
            let prom = Prometheus::new(&server.uri()).unwrap();
            let err = measure(&prom, &a, &vars("green"), Some(&vars("blue")), 5)
                .await
                .unwrap_err();
            assert_eq!(crate::error::kind_of(&err), Some(Kind::PhaseFailed));
            let msg = err.to_string();
            assert!(
                msg.starts_with("analysis query error-rate is rejected by Prometheus: "),
                "{msg}"
            );
            assert!(msg.contains("parse error: unexpected identifier"), "{msg}");
            assert!(
                msg.ends_with("; fix traffic.analysis in the profile"),
                "{msg}"
            );
        }

        #[tokio::test]
        async fn an_unreachable_prometheus_is_inconclusive_and_named() {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let prom = Prometheus::new(&format!("http://127.0.0.1:{port}")).unwrap();
            let m = measure(&prom, &production(), &vars("green"), Some(&vars("blue")), 5)
                .await
                .unwrap();
            assert_eq!(m.verdict, Verdict::Inconclusive);
            assert!(
                m.reason
                    .starts_with("samples not measured: Prometheus at http://127.0.0.1:"),
                "{}",
                m.reason
            );
            assert!(m.reason.contains("check PROMETHEUS_URL"), "{}", m.reason);
        }
    }
}
