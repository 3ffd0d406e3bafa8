//! A profile's `traffic:` section: the steps of a rollout, how long each
//! step holds, how long the old slot stays up after 100%, and the analysis
//! that gates the steps.
//!
//! Its durations are parsed once, when the profile loads (see
//! [`super::form`]); nothing after loading reads one from text again.

use std::time::Duration;

use serde::Deserialize;

use super::duration::{
    ANALYSIS_INCONCLUSIVE_TIMEOUT, ANALYSIS_INTERVAL, DurationError, DurationRule, TRAFFIC_GRACE,
    TRAFFIC_PAUSE,
};
use super::form::{Form, Parsed, Written};

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
    /// Failed measurements tolerated over the whole rollout; one more
    /// aborts. Below what one step can take ([`measurements_per_step`]).
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
    /// From 1 to [`MAX_SAMPLES_MIN`].
    pub min: u64,
}

/// The most `samples.min` may be: 2^53. Prometheus returns the count
/// (`increase()`, `count_over_time()`) as a float64, which holds every
/// whole number exactly only up to 2^53; past it the comparison with the
/// count is not exact, and no step ever sees that many requests anyway.
pub const MAX_SAMPLES_MIN: u64 = 1 << 53;

/// One metric of the analysis and its thresholds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    /// PromQL giving one number for a slot (a scalar or a one-element vector).
    pub query: String,
    /// The new slot fails above this. Finite: a comparison with NaN is
    /// never true, and no value is above +inf, so either would make the
    /// metric one that cannot fail.
    #[serde(default)]
    pub max: Option<f64>,
    /// The new slot fails below this; finite, and at most `max`.
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
    /// `manual`, or a positive duration in whole seconds such as `2m`
    /// ([`TRAFFIC_PAUSE`]).
    pub fn parse(value: &str) -> Result<Pause, PauseError> {
        if value == "manual" {
            return Ok(Pause::Manual);
        }
        TRAFFIC_PAUSE
            .parse(value)
            .map(Pause::For)
            .map_err(PauseError)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseError(pub DurationError);

impl std::fmt::Display for PauseError {
    /// Text that is no duration may have meant `manual`; a duration the
    /// tool refuses was meant as one, and is told only why.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            DurationError::NotADuration => write!(
                f,
                "{}; or `manual` to hold each step until `maily-deploy promote --step`",
                self.0
            ),
            why => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for PauseError {}

/// How long the old slot stays scaled after 100%.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grace {
    /// Until the next deploy reuses it: no wait, no scale-down.
    Keep,
    /// This long, then it scales to 0.
    For(Duration),
}

impl Grace {
    /// `keep`, or a duration in whole seconds such as `10m` (`0s` scales
    /// down at once), at most what an int32 seconds field holds
    /// ([`TRAFFIC_GRACE`]).
    pub fn parse(value: &str) -> Result<Grace, GraceError> {
        if value == "keep" {
            return Ok(Grace::Keep);
        }
        let shown = || crate::error::clipped(value).into_owned();
        match TRAFFIC_GRACE.parse(value) {
            Ok(d) => Ok(Grace::For(d)),
            Err(DurationError::NotADuration) => Err(GraceError::Neither(shown())),
            Err(why) => Err(GraceError::Duration(shown(), why)),
        }
    }
}

/// A grace that is not `keep` or a duration the tool takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraceError {
    /// The text given, which is neither.
    #[error("`{0}` is neither a duration (e.g. 10m, 0s) nor `keep`")]
    Neither(String),
    /// The text given, a duration the tool does not take, and why.
    #[error("`{0}` {1}")]
    Duration(String, DurationError),
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
                    format!("`{}` {why}", crate::error::clipped(&self.pause)),
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
        let analysis = match self.analysis.map(|a| a.check(pause)) {
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
    /// The analysis typed, or every problem it has. `pause` is the
    /// section's, which bounds `failure_limit`; `None` when it is itself
    /// wrong (and reported), and the bound is then not checked.
    pub fn check(self, pause: Option<Pause>) -> Result<Analysis, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, problem: String, fix: &str| {
            problems.push(FieldProblem {
                field: format!("traffic.{field}"),
                problem,
                fix: fix.into(),
            })
        };
        let mut span = |field: &str, value: Option<String>, rule: DurationRule, default| match value
        {
            None => Some(default),
            Some(text) => rule
                .parse(&text)
                .map_err(|why| {
                    bad(
                        &format!("analysis.{field}"),
                        format!("`{}` {why}", crate::error::clipped(&text)),
                        "e.g. 30s or 5m",
                    )
                })
                .ok(),
        };
        let interval = span(
            "interval",
            self.interval,
            ANALYSIS_INTERVAL,
            DEFAULT_INTERVAL,
        );
        let inconclusive_timeout = span(
            "inconclusive_timeout",
            self.inconclusive_timeout,
            ANALYSIS_INCONCLUSIVE_TIMEOUT,
            DEFAULT_INCONCLUSIVE_TIMEOUT,
        );
        if let (Some(pause), Some(interval), Some(timeout)) =
            (pause, interval, inconclusive_timeout)
        {
            let most = measurements_per_step(pause, interval, timeout);
            let over = window(pause, timeout);
            if most == 0 {
                bad(
                    "analysis.interval",
                    format!(
                        "is {}, longer than a step may go ({over}): the step would end before its first measurement",
                        humantime::format_duration(interval)
                    ),
                    "give an interval shorter than the pause plus inconclusive_timeout, e.g. 30s",
                );
            } else if u64::from(self.failure_limit) >= most {
                bad(
                    "analysis.failure_limit",
                    format!(
                        "is {}, but a step takes at most {most} measurement(s) (one every {} over {over}): a slot failing every one of them would never reach the limit",
                        self.failure_limit,
                        humantime::format_duration(interval)
                    ),
                    &format!(
                        "give a limit below {most}: the few failed measurements the whole rollout may tolerate, e.g. 1"
                    ),
                );
            }
        }
        if self.samples.min == 0 {
            bad(
                "analysis.samples.min",
                "is 0, so a slot nobody reaches would pass".into(),
                "give the least number of requests a verdict needs, e.g. 100",
            );
        } else if self.samples.min > MAX_SAMPLES_MIN {
            bad(
                "analysis.samples.min",
                format!(
                    "is {}, over {MAX_SAMPLES_MIN} (2^53): Prometheus returns the count as a float64, which is not exact past that, and no step sees that many requests",
                    self.samples.min
                ),
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
            for (name, value, upper) in [("max", m.max, true), ("min", m.min, false)] {
                if let Some(why) = value.and_then(|v| threshold_problem(v, upper)) {
                    bad(
                        &format!("{field}.{name}"),
                        why,
                        "give a finite number in the metric's unit, e.g. max: 1 for an error rate in %",
                    );
                }
            }
            if let (Some(min), Some(max)) = (m.min, m.max)
                && min > max
            {
                bad(
                    &field,
                    format!(
                        "has min {} above max {}: every value would fail",
                        yaml_float(min),
                        yaml_float(max)
                    ),
                    "give min at most max",
                );
            }
            if let Some(r) = m.max_ratio_to_old.filter(|r| !r.is_finite() || *r <= 0.0) {
                bad(
                    &format!("{field}.max_ratio_to_old"),
                    format!("is {}, not a finite number above 0", yaml_float(r)),
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

/// The most measurements one step can take: one every `interval` from
/// the step's start, until its pause and then its inconclusive timeout have
/// passed (then it advances or aborts). A manual pause never ends, so its
/// step is bounded by the inconclusive timeout alone: the time the profile
/// lets a step go without a verdict. `failure_limit` must stay below this,
/// or a slot failing every measurement of a step never reaches it, and a
/// step whose last measurement happens to pass moves on.
pub fn measurements_per_step(
    pause: Pause,
    interval: Duration,
    inconclusive_timeout: Duration,
) -> u64 {
    let span = pause
        .length()
        .unwrap_or(Duration::ZERO)
        .saturating_add(inconclusive_timeout);
    u64::try_from(span.as_nanos() / interval.as_nanos().max(1)).unwrap_or(u64::MAX)
}

/// The time [`measurements_per_step`] counts in, in words.
fn window(pause: Pause, inconclusive_timeout: Duration) -> String {
    let timeout = humantime::format_duration(inconclusive_timeout);
    match pause {
        Pause::For(d) => format!(
            "the {} pause and the {timeout} inconclusive_timeout",
            humantime::format_duration(d)
        ),
        Pause::Manual => format!("the {timeout} inconclusive_timeout of a manual pause"),
    }
}

/// What is wrong with a metric's threshold (`upper`: a `max`, else a
/// `min`), or `None` for a finite one. NaN and the infinities are refused:
/// a comparison with NaN is never true and no value is beyond +inf, so the
/// metric could never fail, and the other infinity fails every value.
pub fn threshold_problem(v: f64, upper: bool) -> Option<String> {
    if v.is_finite() {
        return None;
    }
    let shown = yaml_float(v);
    Some(if v.is_nan() {
        format!("is {shown}: no comparison with NaN is true, so the metric could never fail")
    } else if (v > 0.0) == upper {
        format!("is {shown}: no value is beyond it, so the metric could never fail")
    } else {
        format!("is {shown}: every value is beyond it, so the metric could never pass")
    })
}

/// A float as YAML writes it: `.nan`, `.inf`, `-.inf`, else as Rust does.
fn yaml_float(v: f64) -> String {
    if v.is_nan() {
        ".nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { ".inf" } else { "-.inf" }.into()
    } else {
        v.to_string()
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
        assert_eq!(
            Grace::parse("100years"),
            Err(GraceError::Duration(
                "100years".into(),
                DurationError::TooLong
            ))
        );
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

    /// The problems of a section, as `field problem`, as users read them.
    fn problems(yaml: &str) -> Vec<String> {
        written(yaml)
            .parse()
            .unwrap_err()
            .into_iter()
            .map(|p| format!("{} {}", p.field, p.problem))
            .collect()
    }

    const SAMPLES: &str = "  samples: {query: 'x{slot=\"{{slot}}\"}', min: 10}\n";

    /// Used at whole seconds, a duration under a second became 0: a pause
    /// of `1ms` was planned "for 0s" while `0s` was refused.
    #[test]
    fn a_duration_under_its_unit_is_refused_naming_field_and_value() {
        let got = problems(&format!(
            "steps: [10, 100]\npause: 1ms\ngrace: 1500ms\nanalysis:\n  interval: 500ms\n  inconclusive_timeout: 2s 1ms\n{SAMPLES}  metrics: [{{name: e, query: 'e{{slot=\"{{{{slot}}}}\"}}', max: 1}}]\n"
        ));
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(
            got[0].starts_with("traffic.pause `1ms` is under 1s: "),
            "{}",
            got[0]
        );
        assert!(
            got[1].starts_with("traffic.grace `1500ms` is not a whole number of seconds"),
            "{}",
            got[1]
        );
        assert!(
            got[2].starts_with("traffic.analysis.interval `500ms` is under 1s"),
            "{}",
            got[2]
        );
        assert!(
            got[3].starts_with(
                "traffic.analysis.inconclusive_timeout `2s 1ms` is not a whole number of seconds"
            ),
            "{}",
            got[3]
        );
        assert_eq!(Pause::parse("1s"), Ok(Pause::For(Duration::from_secs(1))));
        assert_eq!(Grace::parse("0s"), Ok(Grace::For(Duration::ZERO)));
    }

    #[test]
    fn a_threshold_must_be_a_finite_number() {
        assert_eq!(threshold_problem(1.0, true), None);
        assert_eq!(threshold_problem(-3.5, false), None);
        let nan = threshold_problem(f64::NAN, true).unwrap();
        assert!(
            nan.starts_with("is .nan: ") && nan.ends_with("never fail"),
            "{nan}"
        );
        let inf = threshold_problem(f64::INFINITY, true).unwrap();
        assert!(
            inf.starts_with("is .inf: ") && inf.ends_with("never fail"),
            "{inf}"
        );
        let low = threshold_problem(f64::NEG_INFINITY, false).unwrap();
        assert!(
            low.starts_with("is -.inf: ") && low.ends_with("never fail"),
            "{low}"
        );
        let all = threshold_problem(f64::NEG_INFINITY, true).unwrap();
        assert!(all.ends_with("never pass"), "{all}");
    }

    /// A NaN `max` passed: `v > NaN` is never true, so the metric could
    /// never fail the rollout.
    #[test]
    fn every_threshold_that_cannot_gate_is_reported_with_the_others() {
        let got = problems(&format!(
            "steps: [10, 100]\npause: 2m\nanalysis:\n{SAMPLES}  metrics:\n    - {{name: a, query: 'a{{slot=\"{{{{slot}}}}\"}}', max: .nan}}\n    - {{name: b, query: 'b{{slot=\"{{{{slot}}}}\"}}', min: 5000, max: .inf}}\n    - {{name: c, query: 'c{{slot=\"{{{{slot}}}}\"}}', min: -.inf}}\n    - {{name: d, query: 'd{{slot=\"{{{{slot}}}}\"}}', min: 5000, max: 1000}}\n    - {{name: e, query: 'e{{slot=\"{{{{slot}}}}\"}}', max_ratio_to_old: .inf}}\n"
        ));
        let fields: Vec<&str> = got
            .iter()
            .map(|p| p.split(" is ").next().unwrap())
            .collect();
        assert_eq!(
            fields,
            vec![
                "traffic.analysis.metrics[0] (a).max",
                "traffic.analysis.metrics[1] (b).max",
                "traffic.analysis.metrics[2] (c).min",
                "traffic.analysis.metrics[3] (d) has min 5000 above max 1000: every value would fail",
                "traffic.analysis.metrics[4] (e).max_ratio_to_old",
            ],
            "{got:#?}"
        );
    }

    /// `failure_limit: 4294967295` passed: no rollout takes that many
    /// measurements, so failures could never abort it.
    #[test]
    fn a_failure_limit_one_step_cannot_reach_is_refused() {
        // One measurement an interval, over the pause and then the
        // inconclusive timeout (a manual pause: the timeout alone).
        let s = Duration::from_secs;
        assert_eq!(measurements_per_step(Pause::For(s(120)), s(30), s(300)), 14);
        assert_eq!(measurements_per_step(Pause::For(s(30)), s(15), s(120)), 10);
        assert_eq!(measurements_per_step(Pause::Manual, s(30), s(300)), 10);
        assert_eq!(measurements_per_step(Pause::For(s(1)), s(60), s(1)), 0);
        let section = |limit: &str, extra: &str| {
            format!(
                "steps: [10, 100]\npause: 30s\nanalysis:\n  interval: 15s\n  inconclusive_timeout: 2m\n  failure_limit: {limit}\n{SAMPLES}{extra}  metrics: [{{name: e, query: 'e{{slot=\"{{{{slot}}}}\"}}', max: 1}}]\n"
            )
        };
        assert!(written(&section("9", "")).parse().is_ok());
        let got = problems(&section("10", ""));
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with(
                "traffic.analysis.failure_limit is 10, but a step takes at most 10 measurement(s)"
            ),
            "{}",
            got[0]
        );
        let got = problems(&section("4294967295", ""));
        assert!(got[0].contains("is 4294967295"), "{got:#?}");
        // An interval past the whole step: not one measurement.
        let got = problems(&section("0", "").replace("interval: 15s", "interval: 1h"));
        assert!(
            got[0].starts_with("traffic.analysis.interval is 1h, longer than a step may go"),
            "{got:#?}"
        );
    }

    #[test]
    fn samples_min_is_a_count_a_float64_holds_exactly() {
        let section = |min: u64| {
            format!(
                "steps: [10, 100]\npause: 2m\nanalysis:\n  samples: {{query: 'x{{slot=\"{{{{slot}}}}\"}}', min: {min}}}\n  metrics: [{{name: e, query: 'e{{slot=\"{{{{slot}}}}\"}}', max: 1}}]\n"
            )
        };
        assert!(written(&section(1 << 53)).parse().is_ok());
        let got = problems(&section((1 << 53) + 1));
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].contains("2^53"), "{}", got[0]);
        let got = problems(&section(1 << 63));
        assert!(got[0].contains("is 9223372036854775808"), "{}", got[0]);
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
