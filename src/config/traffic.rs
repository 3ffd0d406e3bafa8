//! A profile's `traffic:` section: the steps of a rollout, how long each
//! step holds, how long the old slot stays up after 100%, and the analysis
//! that gates the steps.
//!
//! Its durations are parsed once, when the profile loads (see
//! [`super::form`]); nothing after loading reads one from text again.

use std::time::Duration;

use serde::Deserialize;

use super::form::{Form, Parsed, Written};
use super::format::{DurationError, MAX_DURATION_SECS, duration, too_long};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(bound(
    deserialize = "F::Pause: Deserialize<'de>, F::Grace: Deserialize<'de>, F::Span: Deserialize<'de>, F::Ai: Deserialize<'de>"
))]
pub struct TrafficOf<F: Form = Parsed> {
    /// Percent of traffic on the new slot at each step, ending at 100.
    pub steps: Vec<u32>,
    /// How long each step holds before the next, e.g. `2m`; `manual` holds
    /// each until `maily-deploy promote --step` (analysis still aborts).
    pub pause: F::Pause,
    /// After 100%: how long the old slot stays scaled (an abort or a failed
    /// analysis is then one route change), before it scales to 0. Absent:
    /// the old slot stays up until the next deploy reuses it.
    #[serde(default)]
    pub grace: Option<F::Grace>,
    /// How workers (RabbitMQ consumers, no route) follow the steps.
    #[serde(default)]
    pub workers: WorkerShift,
    /// The metrics that gate each step; without them the steps only pause.
    #[serde(default)]
    pub analysis: Option<AnalysisOf<F>>,
}

/// The traffic section of a loaded profile.
pub type Traffic = TrafficOf<Parsed>;

/// How a slot's workers follow the traffic steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerShift {
    /// All of the new slot's workers start, and the old slot's stop, at 100%.
    #[default]
    Switch,
    /// At each step the new slot runs the step's share of its workers and
    /// the old slot the rest, so messages split as requests do.
    Proportional,
}

/// Analysis: PromQL queries run against `PROMETHEUS_URL` at each step.
///
/// Queries are templates: `{{namespace}}`, `{{slot}}` (the slot measured:
/// the new one, or the old one for a comparison), `{{version}}` (the image
/// tag it runs) and `{{interval}}` (the analysis interval, e.g. `30s`) are
/// replaced before the query is sent; any other `{{...}}` is a profile error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(bound(
    deserialize = "F::Pause: Deserialize<'de>, F::Grace: Deserialize<'de>, F::Span: Deserialize<'de>, F::Ai: Deserialize<'de>"
))]
pub struct AnalysisOf<F: Form = Parsed> {
    /// How often the queries run during a step; 30s when not given.
    #[serde(default)]
    pub interval: F::Span,
    /// Failed measurements tolerated over the whole rollout; one more aborts.
    #[serde(default)]
    pub failure_limit: u32,
    /// How long a step may hold past its pause without a verdict (too few
    /// samples, no data) before the rollout aborts; 5m when not given. No
    /// traffic is not success.
    #[serde(default)]
    pub inconclusive_timeout: F::Span,
    /// What counts as enough traffic on the new slot for a verdict.
    pub samples: Samples,
    /// The checks; each needs a threshold (`max`, `min` or `max_ratio_to_old`).
    pub metrics: Vec<Metric>,
}

/// The analysis of a loaded profile.
pub type Analysis = AnalysisOf<Parsed>;

/// The analysis interval when the profile gives none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// The inconclusive timeout when the profile gives none.
pub const DEFAULT_INCONCLUSIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// A query that counts the new slot's requests in the interval, and the
/// least count that allows a verdict.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Samples {
    pub query: String,
    pub min: u64,
}

/// One metric of the analysis and its thresholds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    /// PromQL giving one number for a slot (a scalar or a one-element vector).
    pub query: String,
    /// The new slot fails above this.
    #[serde(default)]
    pub max: Option<f64>,
    /// The new slot fails below this.
    #[serde(default)]
    pub min: Option<f64>,
    /// The new slot fails above this multiple of the old slot's value (the
    /// same query on the old slot, at the same time). Not compared once the
    /// old slot serves nobody (after 100%); while it serves users, a
    /// baseline without data means no verdict yet.
    #[serde(default)]
    pub max_ratio_to_old: Option<f64>,
    /// How values are shown (`%`, `ms`); display only.
    #[serde(default)]
    pub unit: Option<String>,
    /// Measured, judged and reported, but never holding or failing the
    /// rollout: for trying a new metric or threshold on real releases first.
    #[serde(default)]
    pub observe_only: bool,
}

/// How long a step holds before the rollout moves on by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// This long (analysis may still hold it for a verdict).
    For(Duration),
    /// Until `promote --step` (or `promote`, or `abort`): `pause: manual`.
    /// Analysis still runs and a failure still aborts; only the clock never
    /// moves the rollout on.
    Manual,
}

impl Pause {
    /// `manual`, or a positive duration such as `2m`.
    pub fn parse(value: &str) -> Result<Pause, PauseError> {
        if value == "manual" {
            return Ok(Pause::Manual);
        }
        duration(value).map(Pause::For).map_err(PauseError)
    }

    /// Whether a step held `elapsed` has paused long enough.
    pub fn is_over(self, elapsed: Duration) -> bool {
        match self {
            Pause::For(d) => elapsed >= d,
            Pause::Manual => false,
        }
    }

    /// The pause's length; `None` for a manual one, which has none.
    pub fn length(self) -> Option<Duration> {
        match self {
            Pause::For(d) => Some(d),
            Pause::Manual => None,
        }
    }
}

/// A pause that is neither a good duration nor `manual`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}; or `manual` to hold each step until `maily-deploy promote --step`")]
pub struct PauseError(pub DurationError);

/// How long the old slot stays scaled after 100%.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grace {
    /// Until the next deploy reuses it: no wait, no scale-down.
    Keep,
    /// This long, then it scales to 0.
    For(Duration),
}

impl Grace {
    /// `keep`, or a duration such as `10m` (`0s` scales down at once), at
    /// most what an int32 seconds field holds.
    pub fn parse(value: &str) -> Result<Grace, GraceError> {
        if value == "keep" {
            return Ok(Grace::Keep);
        }
        match humantime::parse_duration(value) {
            Ok(d) if d.as_secs() > MAX_DURATION_SECS => Err(GraceError::TooLong),
            Ok(d) => Ok(Grace::For(d)),
            Err(_) => Err(GraceError::Neither(
                crate::error::clipped(value).into_owned(),
            )),
        }
    }
}

/// A grace that is not `keep` or a duration the tool takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraceError {
    /// The text given, which is neither.
    #[error("`{0}` is neither a duration (e.g. 10m, 0s) nor `keep`")]
    Neither(String),
    #[error("{}", too_long())]
    TooLong,
}

/// What is wrong with traffic steps (a profile's or the command line's),
/// every problem: they must rise, each in 1..=100, and end at 100.
pub fn step_problems(steps: &[u32]) -> Vec<String> {
    let mut out = Vec::new();
    if steps.last() != Some(&100) {
        out.push("must end at 100 (a single 100 switches at once)".into());
    }
    if steps.iter().any(|s| *s == 0 || *s > 100) || steps.windows(2).any(|w| w[0] >= w[1]) {
        out.push("must rise strictly, each between 1 and 100, e.g. 10,50,100".into());
    }
    out
}

/// One problem of the section: the field under `traffic.`, what is wrong,
/// and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl TrafficOf<Written> {
    /// The section typed, or every problem it has.
    pub fn parse(self) -> Result<Traffic, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, problem: String, fix: &str| {
            problems.push(FieldProblem {
                field: if field.starts_with("traffic.") {
                    field.to_string()
                } else {
                    format!("traffic.{field}")
                },
                problem,
                fix: fix.into(),
            })
        };
        for why in step_problems(&self.steps) {
            bad(
                "steps",
                why,
                "e.g. [5, 25, 50, 100]; [100] switches at once",
            );
        }
        let pause = Pause::parse(&self.pause)
            .map_err(|why| {
                bad(
                    "pause",
                    why.to_string(),
                    "e.g. 2m or 30s, or manual to hold each step until `maily-deploy promote --step`",
                )
            })
            .ok();
        let grace = match self.grace.as_deref().map(Grace::parse) {
            None => Some(None),
            Some(Ok(g)) => Some(Some(g)),
            Some(Err(why)) => {
                bad(
                    "grace",
                    why.to_string(),
                    "e.g. 10m, or keep (the old slot stays up until the next deploy)",
                );
                None
            }
        };
        let analysis = match self.analysis.map(AnalysisOf::check) {
            None => Some(None),
            Some(Ok(a)) => Some(Some(a)),
            Some(Err(theirs)) => {
                for p in theirs {
                    bad(&p.field, p.problem, &p.fix);
                }
                None
            }
        };
        match (pause, grace, analysis) {
            (Some(pause), Some(grace), Some(analysis)) if problems.is_empty() => Ok(TrafficOf {
                steps: self.steps,
                pause,
                grace,
                workers: self.workers,
                analysis,
            }),
            _ => Err(problems),
        }
    }
}

impl AnalysisOf<Written> {
    /// The analysis typed, or every problem it has.
    pub fn check(self) -> Result<Analysis, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, problem: String, fix: &str| {
            problems.push(FieldProblem {
                field: format!("traffic.{field}"),
                problem,
                fix: fix.into(),
            })
        };
        let mut span = |field: &str, value: Option<String>, default: Duration| match value {
            None => Some(default),
            Some(text) => duration(&text)
                .map_err(|why| {
                    bad(
                        &format!("analysis.{field}"),
                        why.to_string(),
                        "e.g. 30s or 5m",
                    )
                })
                .ok(),
        };
        let interval = span("interval", self.interval, DEFAULT_INTERVAL);
        let inconclusive_timeout = span(
            "inconclusive_timeout",
            self.inconclusive_timeout,
            DEFAULT_INCONCLUSIVE_TIMEOUT,
        );
        // Prometheus itself scrapes no faster than every second or so.
        if interval.is_some_and(|i| i < Duration::from_secs(1)) {
            bad(
                "analysis.interval",
                "is under a second, faster than any scrape".into(),
                "e.g. 15s or 30s",
            );
        }
        if self.samples.min == 0 {
            bad(
                "analysis.samples.min",
                "is 0, so a slot nobody reaches would pass".into(),
                "give the least number of requests a verdict needs, e.g. 100",
            );
        }
        let mut queries = vec![("analysis.samples.query".to_string(), &self.samples.query)];
        if self.metrics.is_empty() {
            bad(
                "analysis.metrics",
                "is empty".into(),
                "list at least one metric with a threshold, or remove analysis:",
            );
        }
        for (i, m) in self.metrics.iter().enumerate() {
            let field = format!("analysis.metrics[{i}] ({})", m.name);
            if m.max.is_none() && m.min.is_none() && m.max_ratio_to_old.is_none() {
                bad(
                    &field,
                    "has no threshold".into(),
                    "give max, min or max_ratio_to_old",
                );
            }
            if m.max_ratio_to_old.is_some_and(|r| r.is_nan() || r <= 0.0) {
                bad(
                    &format!("{field}.max_ratio_to_old"),
                    "is not above 0".into(),
                    "e.g. 1.5: the new slot may be at most 1.5 times the old one",
                );
            }
            if self.metrics[..i].iter().any(|o| o.name == m.name) {
                bad(
                    &field,
                    "repeats a metric name".into(),
                    "give each metric its own name",
                );
            }
            queries.push((format!("{field}.query"), &m.query));
        }
        for (field, query) in queries {
            for problem in query_problems(query) {
                bad(
                    &field,
                    problem,
                    "use {{namespace}}, {{slot}}, {{version}} and {{interval}}; {{slot}} is required so the query tells the slots apart",
                );
            }
        }
        match (interval, inconclusive_timeout) {
            (Some(interval), Some(inconclusive_timeout)) if problems.is_empty() => Ok(AnalysisOf {
                interval,
                failure_limit: self.failure_limit,
                inconclusive_timeout,
                samples: self.samples,
                metrics: self.metrics,
            }),
            _ => Err(problems),
        }
    }
}

/// A duration as PromQL writes a range (`30s`, `5m`, `1h`), for the
/// `{{interval}}` placeholder: whole hours or minutes where exact, else
/// seconds, else milliseconds. `humantime`'s `1m 30s` is not PromQL.
pub fn promql_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The placeholders an analysis query may use.
pub const QUERY_PLACEHOLDERS: &[&str] = &["namespace", "slot", "version", "interval"];

/// What is wrong with an analysis query's placeholders: unknown or
/// unclosed ones, and a missing `{{slot}}` (without it the new and old
/// slots would measure the same thing).
pub fn query_problems(query: &str) -> Vec<String> {
    let (found, unclosed) = placeholders(query);
    let mut out: Vec<String> = found
        .iter()
        .map(|p| p.name)
        .filter(|name| !QUERY_PLACEHOLDERS.contains(name))
        .map(|name| format!("uses the unknown placeholder {{{{{name}}}}}"))
        .collect();
    if unclosed {
        out.push("has a {{ without its }}".to_string());
    }
    if !found.iter().any(|p| p.name == "slot") {
        out.push("does not use {{slot}}".to_string());
    }
    out
}

/// One `{{ name }}` in a query: where it stands (braces included) and the
/// name inside, trimmed.
pub struct Placeholder<'a> {
    pub start: usize,
    pub end: usize,
    pub name: &'a str,
}

/// The placeholders of a query, in order, and whether a `{{` is left
/// without its `}}` (the scan stops there). The one scanner behind both
/// checking a profile's queries and rendering them.
pub fn placeholders(query: &str) -> (Vec<Placeholder<'_>>, bool) {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = query[from..].find("{{") {
        let start = from + open;
        let Some(close) = query[start + 2..].find("}}") else {
            return (out, true);
        };
        let end = start + 2 + close + 2;
        out.push(Placeholder {
            start,
            end,
            name: query[start + 2..end - 2].trim(),
        });
        from = end;
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(yaml: &str) -> TrafficOf<Written> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn a_pause_is_a_duration_or_manual() {
        assert_eq!(Pause::parse("2m"), Ok(Pause::For(Duration::from_secs(120))));
        assert_eq!(Pause::parse("manual"), Ok(Pause::Manual));
        assert!(!Pause::Manual.is_over(Duration::MAX));
        assert!(Pause::For(Duration::from_secs(1)).is_over(Duration::from_secs(1)));
        assert!(
            Pause::parse("soon")
                .unwrap_err()
                .to_string()
                .contains("manual")
        );
        assert_eq!(
            Pause::parse("0s"),
            Err(PauseError(DurationError::Zero)),
            "a zero pause would walk every step at once"
        );
    }

    #[test]
    fn grace_is_a_duration_or_keep() {
        assert_eq!(Grace::parse("keep"), Ok(Grace::Keep));
        assert_eq!(Grace::parse("0s"), Ok(Grace::For(Duration::ZERO)));
        assert!(
            Grace::parse("soon")
                .unwrap_err()
                .to_string()
                .contains("keep")
        );
        assert_eq!(Grace::parse("100years"), Err(GraceError::TooLong));
    }

    #[test]
    fn the_written_section_parses_to_typed_durations_with_their_defaults() {
        let t = written(
            "steps: [10, 100]\npause: 2m\ngrace: 10m\nanalysis:\n  samples: {query: 'x{slot=\"{{slot}}\"}', min: 10}\n  metrics: [{name: e, query: 'e{slot=\"{{slot}}\"}', max: 1}]\n",
        )
        .parse()
        .unwrap();
        assert_eq!(t.pause, Pause::For(Duration::from_secs(120)));
        assert_eq!(t.grace, Some(Grace::For(Duration::from_secs(600))));
        let a = t.analysis.unwrap();
        assert_eq!(a.interval, DEFAULT_INTERVAL);
        assert_eq!(a.inconclusive_timeout, DEFAULT_INCONCLUSIVE_TIMEOUT);
    }

    #[test]
    fn every_bad_value_of_the_section_is_reported_at_once() {
        let problems = written(
            "steps: [50, 25]\npause: soon\ngrace: later\nanalysis:\n  interval: 0s\n  inconclusive_timeout: forever\n  samples: {query: 'x', min: 0}\n  metrics: []\n",
        )
        .parse()
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "traffic.steps",
                "traffic.steps",
                "traffic.pause",
                "traffic.grace",
                "traffic.analysis.interval",
                "traffic.analysis.inconclusive_timeout",
                "traffic.analysis.samples.min",
                "traffic.analysis.metrics",
                "traffic.analysis.samples.query",
            ]
        );
    }

    #[test]
    fn an_interval_renders_as_a_promql_range() {
        assert_eq!(promql_duration(Duration::from_secs(30)), "30s");
        assert_eq!(promql_duration(Duration::from_secs(90)), "90s");
        assert_eq!(promql_duration(Duration::from_secs(300)), "5m");
        assert_eq!(promql_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(promql_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn steps_on_the_command_line_are_checked() {
        assert!(step_problems(&[100]).is_empty());
        assert!(step_problems(&[10, 50, 100]).is_empty());
        assert_eq!(step_problems(&[10, 50]).len(), 1);
        assert_eq!(step_problems(&[50, 10, 100]).len(), 1);
        assert_eq!(step_problems(&[0, 100]).len(), 1);
        assert_eq!(step_problems(&[50, 10]).len(), 2, "both said");
        assert_eq!(step_problems(&[]).len(), 1);
    }
}
