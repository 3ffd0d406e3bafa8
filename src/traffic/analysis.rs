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

use crate::config::profile::{Analysis, Metric};
use crate::error::{Kind, fail};
use crate::providers::prometheus::{Prometheus, QueryError, QueryValue};

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
/// [`crate::config::profile::query_problems`] before any query is rendered,
/// so it only shows up in a query Prometheus then rejects, which names it.
pub fn render(query: &str, vars: &QueryVars) -> String {
    let mut out = String::with_capacity(query.len() + 32);
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let value = match after[..end].trim() {
            "namespace" => Some(&vars.namespace),
            "slot" => Some(&vars.slot),
            "version" => Some(&vars.version),
            "interval" => Some(&vars.interval),
            _ => None,
        };
        out.push_str(&rest[..start]);
        match value {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
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
            (Reading::from_option(new), Reading::from_option(old))
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
                .unwrap_or((Reading::NoData, Reading::NoData));
            judge_metric(m, &new, &old)
        })
        .collect();
    let too_few = match samples {
        Reading::Value(s) if *s >= min as f64 => None,
        Reading::Value(s) => Some(format!("{} samples < {min} needed", num(*s))),
        Reading::NoData => Some(format!(
            "no samples (the samples query has no data); {min} needed"
        )),
        Reading::Failed(e) => Some(format!("samples not measured: {e}")),
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
        // 100 % (or on a first deploy) it has none, and a ratio to nothing
        // says nothing, so the ratio is skipped rather than failed; a
        // metric with only this threshold then passes, as nothing else can
        // be held against it. A 0 baseline is skipped too: any value would
        // be "infinitely" worse.
        match old {
            Reading::Value(o) if *o > 0.0 => {
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
            Reading::Value(_) => result.note = Some("old slot is 0; not compared".into()),
            Reading::NoData => result.note = Some("old slot has no data; not compared".into()),
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

fn amount(v: f64, unit: Option<&str>) -> String {
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
    pause: Duration,
    elapsed: Duration,
    this_step: &[Measurement],
    failures_so_far: u32,
) -> Decision {
    let Some(analysis) = analysis else {
        return if elapsed >= pause {
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
    if elapsed < pause {
        return Decision::Wait;
    }
    let last = this_step.last();
    if last.is_some_and(|m| m.verdict == Verdict::Pass) {
        return Decision::Advance;
    }
    // A profile is checked before a rollout starts; the default only
    // keeps this function total.
    let timeout = crate::config::format::duration(&analysis.inconclusive_timeout)
        .unwrap_or(Duration::from_secs(300));
    let limit = pause + timeout;
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
    prom: &Prometheus,
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
                old_index[i].map_or(Reading::NoData, |j| readings[j].clone()),
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
async fn read(prom: &Prometheus, name: &str, query: &str) -> anyhow::Result<Reading> {
    match prom.query(query).await {
        Ok(QueryValue::Number(v)) => Ok(Reading::Value(v)),
        Ok(QueryValue::NoData) => Ok(Reading::NoData),
        Err(e) => match QueryError::of(&e) {
            Some(QueryError::Rejected(why)) => Err(fail(
                Kind::PhaseFailed,
                format!(
                    "analysis query {name} is rejected by Prometheus: {why}; fix traffic.analysis in the profile"
                ),
            )),
            Some(QueryError::NotPrometheus(why)) => Err(fail(Kind::PhaseFailed, why.clone())),
            Some(QueryError::Unreachable(why)) => Ok(Reading::Failed(why.clone())),
            None => Ok(Reading::Failed(format!("{e:#}"))),
        },
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
