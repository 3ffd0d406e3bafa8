//! What a rollout reports: each step walked with every measurement taken
//! there, the grace period, how it ended; and the one-line forms the
//! progress display shows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::analysis::{Measurement, Verdict};
use super::plan::RolloutPlan;
use crate::config::traffic::Grace;
use crate::config::traffic::WorkerShift;
use crate::k8s::slot::Slot;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// Still running.
    Running,
    /// Analysis passed (or there is none) and the pause was over.
    Passed,
    /// Analysis failed beyond the failure limit.
    Failed,
    /// Analysis never had enough samples for a verdict within the bound.
    NoVerdict,
    /// Skipped ahead by `promote`.
    Promoted,
    /// Ended early by `promote --step`; the next step followed.
    Advanced,
    /// Stopped by `abort`.
    Aborted,
    /// Stopped by something else (an error, an interruption).
    Stopped,
    /// The 100% step: reached.
    Reached,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Running => "running",
            StepOutcome::Passed => "passed",
            StepOutcome::Failed => "failed",
            StepOutcome::NoVerdict => "no verdict",
            StepOutcome::Promoted => "promoted",
            StepOutcome::Advanced => "advanced",
            StepOutcome::Aborted => "aborted",
            StepOutcome::Stopped => "stopped",
            StepOutcome::Reached => "reached",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub percent: u32,
    /// Route weights (blue, green) of the services with an old slot.
    pub weights: (u32, u32),
    /// Workers: (name, new slot replicas, old slot replicas).
    pub workers: Vec<(String, u32, u32)>,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: StepOutcome,
    /// The newest [`MEASUREMENTS_KEPT`] measurements.
    pub measurements: Vec<Measurement>,
    /// Older measurements left out, so that a step held for hours does not
    /// outgrow the rollout record (a ConfigMap: 1 MiB at most).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub measurements_left_out: u32,
}

/// How many measurements a step (or the grace period) keeps in the record
/// and the snapshot: the newest ones, about 20 KB of JSON.
pub const MEASUREMENTS_KEPT: usize = 50;

/// How many measurements the whole rollout keeps, over all its steps and
/// its grace period: a rollout of many steps held long, each measurement
/// carrying several metrics, must still fit the rollout record (a
/// ConfigMap, 1 MiB at most).
pub const MEASUREMENTS_KEPT_IN_ALL: usize = 200;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Add `m` to `kept`, leaving out the oldest beyond [`MEASUREMENTS_KEPT`].
pub fn keep(kept: &mut Vec<Measurement>, left_out: &mut u32, m: Measurement) {
    kept.push(m);
    if kept.len() > MEASUREMENTS_KEPT {
        let over = kept.len() - MEASUREMENTS_KEPT;
        kept.drain(..over);
        *left_out = left_out.saturating_add(over as u32);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraceReport {
    pub started_at: DateTime<Utc>,
    pub until: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Whether the old slot was scaled to 0 at its end.
    pub scaled_down: bool,
    /// The newest [`MEASUREMENTS_KEPT`] measurements.
    pub measurements: Vec<Measurement>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub measurements_left_out: u32,
}

/// The rollout as the run report and the snapshot carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutReport {
    pub from: Option<Slot>,
    pub to: Slot,
    pub planned_steps: Vec<u32>,
    /// The pause each step below 100% holds for; `None`: a manual pause
    /// (each step held until `promote --step`). 0 when the only step is
    /// 100%: the profile's pause is never used then.
    pub pause_seconds: Option<u64>,
    /// `keep`, or the seconds the old slot stays scaled after 100%.
    pub grace: String,
    pub workers: WorkerShift,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub steps: Vec<StepReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<GraceReport>,
    /// `promote` or `abort` from another terminal, and by whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Failed measurements over the whole rollout.
    pub failures: u32,
}

impl RolloutReport {
    /// Leave out the oldest measurements of the earliest steps first until
    /// the whole report keeps at most [`MEASUREMENTS_KEPT_IN_ALL`]; each
    /// step says how many it left out.
    pub fn bound_measurements(&mut self) {
        let grace = self
            .grace_period
            .as_ref()
            .map_or(0, |g| g.measurements.len());
        let mut total: usize = self
            .steps
            .iter()
            .map(|s| s.measurements.len())
            .sum::<usize>()
            + grace;
        for step in &mut self.steps {
            if total <= MEASUREMENTS_KEPT_IN_ALL {
                return;
            }
            let drop = (total - MEASUREMENTS_KEPT_IN_ALL).min(step.measurements.len());
            step.measurements.drain(..drop);
            step.measurements_left_out = step.measurements_left_out.saturating_add(drop as u32);
            total -= drop;
        }
        if let Some(g) = self.grace_period.as_mut()
            && total > MEASUREMENTS_KEPT_IN_ALL
        {
            let drop = (total - MEASUREMENTS_KEPT_IN_ALL).min(g.measurements.len());
            g.measurements.drain(..drop);
            g.measurements_left_out = g.measurements_left_out.saturating_add(drop as u32);
        }
    }

    pub fn new(plan: &RolloutPlan, from: Option<Slot>, to: Slot) -> Self {
        RolloutReport {
            from,
            to,
            planned_steps: plan.steps.clone(),
            pause_seconds: if !plan.is_progressive() {
                Some(0)
            } else {
                plan.pause.length().map(|d| d.as_secs())
            },
            grace: match plan.grace {
                Grace::Keep => "keep".into(),
                Grace::For(d) => format!("{}s", d.as_secs()),
            },
            workers: plan.workers,
            note: plan.note.clone(),
            steps: Vec::new(),
            grace_period: None,
            request: None,
            failures: 0,
        }
    }

    /// The step being walked.
    pub fn current(&mut self) -> Option<&mut StepReport> {
        self.steps.last_mut()
    }

    /// One line per step, for the phase's details.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .steps
            .iter()
            .map(|s| {
                let last = s
                    .measurements
                    .last()
                    .map(|m| format!(": {}", m.reason))
                    .unwrap_or_default();
                format!(
                    "{:>3}% {} after {} measurement(s){last}",
                    s.percent,
                    s.outcome.as_str(),
                    s.measurements.len() as u64 + u64::from(s.measurements_left_out)
                )
            })
            .collect();
        if let Some(g) = &self.grace_period {
            out.push(format!(
                "grace until {}: {} measurement(s), old slot {}",
                g.until.format("%H:%M:%S UTC"),
                g.measurements.len() as u64 + u64::from(g.measurements_left_out),
                if g.scaled_down {
                    "scaled to 0"
                } else {
                    "still scaled"
                }
            ));
        }
        out
    }
}

impl RolloutReport {
    /// How far the rollout got, in a few words for `history`: `5→25→50→100`,
    /// `10→25 failed`, `25 no verdict`, `25 promoted→100`, `25 aborted`.
    pub fn summary(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        for s in &self.steps {
            let mark = match s.outcome {
                StepOutcome::Passed | StepOutcome::Reached | StepOutcome::Running => "",
                StepOutcome::Failed => " failed",
                StepOutcome::NoVerdict => " no verdict",
                StepOutcome::Promoted => " promoted",
                StepOutcome::Advanced => " advanced",
                StepOutcome::Aborted => " aborted",
                StepOutcome::Stopped => " stopped",
            };
            words.push(format!("{}{mark}", s.percent));
        }
        let mut out = words.join("→");
        if let Some(g) = &self.grace_period
            && g.scaled_down
        {
            out.push_str(", old slot scaled down");
        }
        out
    }
}

/// A value with its unit (`0.42 %`, `120 ms`), as analysis writes its
/// reasons; `-` for no data.
fn value(v: Option<f64>, unit: Option<&str>) -> String {
    v.map_or_else(|| "-".into(), |v| super::analysis::amount(v, unit))
}

/// The live line of a measurement: each metric, the old slot's value where
/// compared, the samples and the verdict.
pub fn measurement_line(m: &Measurement) -> String {
    let mut parts: Vec<String> = m
        .metrics
        .iter()
        .map(|r| {
            let old = r
                .old_value
                .map(|o| format!(", old {}", value(Some(o), r.unit.as_deref())))
                .unwrap_or_default();
            format!(
                "{} {} ({}{old})",
                r.name,
                value(r.value, r.unit.as_deref()),
                r.threshold
            )
        })
        .collect();
    parts.push(format!(
        "{} samples (min {})",
        m.samples.map_or("-".into(), |s| format!("{s:.0}")),
        m.min_samples
    ));
    parts.push(
        match m.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Inconclusive => "no verdict",
        }
        .into(),
    );
    parts.join(" · ")
}

/// `1m30s`.
pub fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::analysis::MetricResult;

    fn walked(steps: &[(u32, StepOutcome)]) -> RolloutReport {
        let plan = RolloutPlan {
            steps: vec![10, 25, 100],
            pause: crate::config::traffic::Pause::For(std::time::Duration::from_secs(60)),
            grace: Grace::Keep,
            workers: WorkerShift::Switch,
            note: None,
        };
        let mut r = RolloutReport::new(&plan, Some(Slot::Blue), Slot::Green);
        for (percent, outcome) in steps {
            r.steps.push(StepReport {
                percent: *percent,
                weights: crate::k8s::route::weights_for(Slot::Green, *percent),
                workers: Vec::new(),
                started_at: Utc::now(),
                ended_at: None,
                outcome: *outcome,
                measurements: Vec::new(),
                measurements_left_out: 0,
            });
        }
        r
    }

    #[test]
    fn a_rollout_is_summed_up_in_a_few_words() {
        use StepOutcome::*;
        assert_eq!(
            walked(&[(10, Passed), (25, Passed), (100, Reached)]).summary(),
            "10→25→100"
        );
        assert_eq!(
            walked(&[(10, Passed), (25, Failed)]).summary(),
            "10→25 failed"
        );
        assert_eq!(walked(&[(25, NoVerdict)]).summary(), "25 no verdict");
        let promoted = walked(&[(25, Promoted), (100, Reached)]);
        assert_eq!(promoted.summary(), "25 promoted→100");
        let kept: RolloutReport =
            serde_json::from_value(serde_json::to_value(&promoted).unwrap()).unwrap();
        assert_eq!(kept.summary(), "25 promoted→100");
    }

    #[test]
    fn a_measurement_reads_as_one_line() {
        let m = Measurement {
            at: Utc::now(),
            percent: 25,
            samples: Some(412.0),
            min_samples: 100,
            verdict: Verdict::Fail,
            metrics: vec![
                MetricResult {
                    name: "error-rate".into(),
                    value: Some(7.25),
                    old_value: None,
                    verdict: Verdict::Fail,
                    threshold: "≤ 1 %".into(),
                    unit: Some("%".into()),
                    note: None,
                },
                MetricResult {
                    name: "p99-latency".into(),
                    value: Some(120.0),
                    old_value: Some(110.0),
                    verdict: Verdict::Pass,
                    threshold: "≤ 1000 ms, ≤ 1.5× old".into(),
                    unit: Some("ms".into()),
                    note: None,
                },
            ],
            reason: "error-rate 7.25 % > 1 %".into(),
        };
        assert_eq!(
            measurement_line(&m),
            "error-rate 7.25 % (≤ 1 %) · p99-latency 120 ms (≤ 1000 ms, ≤ 1.5× old, old 110 ms) · 412 samples (min 100) · FAIL"
        );
        assert_eq!(human(std::time::Duration::from_secs(90)), "1m30s");
        assert_eq!(human(std::time::Duration::from_secs(120)), "2m");
        assert_eq!(value(None, Some("ms")), "-");
    }

    #[test]
    fn a_step_held_for_hours_keeps_its_newest_measurements_and_counts_the_rest() {
        let m = |i: usize| Measurement {
            at: Utc::now(),
            percent: 25,
            samples: Some(100.0),
            min_samples: 10,
            verdict: Verdict::Pass,
            metrics: Vec::new(),
            reason: format!("m{i}"),
        };
        let (mut kept, mut left_out) = (Vec::new(), 0u32);
        for i in 0..3000 {
            keep(&mut kept, &mut left_out, m(i));
        }
        assert_eq!(kept.len(), MEASUREMENTS_KEPT);
        assert_eq!(left_out as usize, 3000 - MEASUREMENTS_KEPT);
        assert_eq!(kept.last().unwrap().reason, "m2999");
        assert_eq!(kept[0].reason, format!("m{}", 3000 - MEASUREMENTS_KEPT));
    }

    #[test]
    fn a_rollout_of_many_steps_keeps_its_newest_measurements_and_fits_the_record() {
        use StepOutcome::*;
        let metric = |name: &str| MetricResult {
            name: name.into(),
            value: Some(7.25),
            old_value: Some(1.5),
            verdict: Verdict::Pass,
            threshold: "≤ 10 %, ≤ 1.5× old".into(),
            unit: Some("%".into()),
            note: Some("x".repeat(100)),
        };
        let steps: Vec<(u32, StepOutcome)> = (1..=99).map(|p| (p, Passed)).collect();
        let mut r = walked(&steps);
        for (i, step) in r.steps.iter_mut().enumerate() {
            for j in 0..MEASUREMENTS_KEPT {
                step.measurements.push(Measurement {
                    at: Utc::now(),
                    percent: step.percent,
                    samples: Some(100.0),
                    min_samples: 10,
                    verdict: Verdict::Pass,
                    metrics: (0..6).map(|k| metric(&format!("metric-{k}"))).collect(),
                    reason: format!("s{i}m{j}"),
                });
            }
        }
        r.bound_measurements();
        let kept: usize = r.steps.iter().map(|s| s.measurements.len()).sum();
        assert_eq!(kept, MEASUREMENTS_KEPT_IN_ALL);
        // The newest stay: the last steps whole, the first ones counted.
        assert_eq!(r.steps[98].measurements.len(), MEASUREMENTS_KEPT);
        assert!(r.steps[0].measurements.is_empty());
        assert_eq!(r.steps[0].measurements_left_out as usize, MEASUREMENTS_KEPT);
        let bytes = serde_json::to_vec(&r).unwrap().len();
        assert!(bytes < 1 << 20, "{bytes} bytes");
    }
}
