//! Analysis of a slot's metrics. TEMPORARY stand-in with the agreed API;
//! replaced by the real module from the `analysis` branch.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::profile::Analysis;
use crate::providers::prometheus::Prometheus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    pub name: String,
    pub value: Option<f64>,
    pub old_value: Option<f64>,
    pub verdict: Verdict,
    pub threshold: String,
    pub unit: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub at: DateTime<Utc>,
    pub percent: u32,
    pub samples: Option<f64>,
    pub min_samples: u64,
    pub verdict: Verdict,
    pub metrics: Vec<MetricResult>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryVars {
    pub namespace: String,
    pub slot: String,
    pub version: String,
    pub interval: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Wait,
    Advance,
    Abort(String),
}

pub fn decide(
    _analysis: Option<&Analysis>,
    _pause: Duration,
    _elapsed: Duration,
    _this_step: &[Measurement],
    _failures_so_far: u32,
) -> Decision {
    unimplemented!()
}

pub async fn measure(
    _prom: &Prometheus,
    _analysis: &Analysis,
    _new: &QueryVars,
    _old: Option<&QueryVars>,
    _percent: u32,
) -> anyhow::Result<Measurement> {
    unimplemented!()
}
