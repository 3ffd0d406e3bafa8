//! Walking a rollout: apply a step, hold it while analysis measures the new
//! slot, move on, hold back or abort as `analysis::decide` says, and answer
//! `promote`/`abort` from another terminal between polls.
//!
//! The decisions are pure (`plan`, `analysis`); this is the thin loop that
//! applies them, keeps the rollout record and the report current, and says
//! how it is going.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::analysis::{self, Decision, Measurement, MetricSource, QueryVars, Verdict};
use super::plan::{self, RolloutPlan};
use super::record::{Action, Answer, Request, Rollout, Stage};
use super::report::{self, GraceReport, RolloutReport, StepOutcome, StepReport};
use super::router::TrafficRouter;
use crate::config::Profile;
use crate::config::traffic::Analysis;
use crate::config::traffic::{Grace, Pause};
use crate::error::{Kind, fail};
use crate::k8s::live::PlatformState;
use crate::k8s::manifest::Template;
use crate::k8s::route;
use crate::k8s::slot::Slot;
use crate::k8s::values::Release;
use crate::pipeline::Progress;

/// How often the run looks for a request from another terminal: the
/// bound on how long `promote`/`abort` wait for the run to act.
const POLL: Duration = Duration::from_millis(250);

/// How often the live line is refreshed between measurements.
const TICK: Duration = Duration::from_secs(1);

/// Everything a walk needs, gathered by the phase before the first step.
pub struct Walk {
    /// Where the walk's changes land: the cluster in a run.
    pub router: std::sync::Arc<dyn TrafficRouter>,
    pub profile: Profile,
    pub templates: Vec<Template>,
    pub release: Release,
    pub before: PlatformState,
    pub target: Slot,
    pub plan: RolloutPlan,
    pub analysis: Option<Analysis>,
    /// Where analysis measures (Prometheus); `None` without analysis.
    pub metrics: Option<std::sync::Arc<dyn MetricSource>>,
    pub progress: Progress,
    pub rollout: Rollout,
    pub report: RolloutReport,
    /// Says the run is alive while the walk lives (`status` tells a live
    /// run from a dead one by it).
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Walk {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

/// How a held step ended, when it did not abort.
enum Held {
    /// Its pause is over and analysis passed.
    Passed,
    /// `promote --step` ended it early.
    Advanced,
    /// `promote` skipped everything left (by whom).
    Promoted(String),
}

/// How the steps ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Every step walked.
    Walked,
    /// `promote` skipped the rest (by whom).
    Promoted(String),
}

impl Walk {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        router: std::sync::Arc<dyn TrafficRouter>,
        profile: Profile,
        templates: Vec<Template>,
        release: Release,
        before: PlatformState,
        target: Slot,
        plan: RolloutPlan,
        metrics: Option<std::sync::Arc<dyn MetricSource>>,
        progress: Progress,
        // The frontend deploy-frontend built, kept in the record for a
        // `promote` that finishes a dead run's rollout.
        frontend: Option<crate::phases::deploy_frontend::FrontendRecord>,
        deployment_id: crate::pipeline::DeploymentId,
    ) -> Walk {
        let from = match before.active() {
            crate::k8s::live::Active::Slot(s) => Some(s),
            _ => None,
        };
        let now = Utc::now();
        let rollout = Rollout {
            deployment_id,
            from,
            to: target,
            version: release.image_tag.clone(),
            steps: plan.steps.clone(),
            step: 0,
            percent: 0,
            stage: Stage::Step,
            since: now,
            updated_at: now,
            grace_until: None,
            last_measurement: None,
            frontend,
            answered: None,
            failure: None,
            command_line: Vec::new(),
        };
        let report = RolloutReport::new(&plan, from, target);
        let analysis = if plan.is_analysed() {
            profile.traffic.analysis.clone()
        } else {
            None
        };
        Walk {
            router,
            profile,
            templates,
            release,
            before,
            target,
            plan,
            analysis,
            metrics,
            progress,
            rollout,
            report,
            heartbeat: None,
        }
    }

    fn namespace(&self) -> &str {
        &self.profile.namespace
    }

    /// How often analysis measures; `None` without analysis.
    fn interval(&self) -> Option<Duration> {
        self.analysis.as_ref().map(|a| a.interval)
    }

    fn vars(&self, slot: Slot, version: &str) -> QueryVars {
        QueryVars {
            namespace: self.profile.namespace.clone(),
            slot: slot.to_string(),
            version: version.to_string(),
            interval: self
                .analysis
                .as_ref()
                .map(|a| crate::config::traffic::promql_duration(a.interval))
                .unwrap_or_default(),
        }
    }

    /// The new slot's http Deployments scaled to carry `percent`% of what
    /// the old slot serves with, and waited for, before users move
    /// ([`plan::http_replicas`]).
    async fn http_capacity(&mut self, percent: u32) -> anyhow::Result<()> {
        let ns = self.profile.namespace.clone();
        let target = self.target;
        let now = self.router.replicas(&ns, target).await?;
        let up = plan::http_replicas(&self.before, &self.profile, target, percent, &now);
        if up.is_empty() {
            return Ok(());
        }
        self.progress.say(format!(
            "{} scaled up first, to carry {percent}% of what {} serves with",
            up.iter()
                .map(|(name, n)| format!("{name} to {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            target.other()
        ));
        let names: Vec<String> = up.iter().map(|(n, _)| n.clone()).collect();
        self.router.scale(&ns, up).await?;
        self.ready_unless_aborted(&ns, &names, percent).await
    }

    /// Wait for `names` in the new slot to be ready, unless an abort is
    /// asked for meanwhile: pods coming up for a step can take minutes,
    /// and an operator who has seen enough must not wait them out (nor
    /// see users moved on once they are up).
    async fn ready_unless_aborted(
        &mut self,
        ns: &str,
        names: &[String],
        percent: u32,
    ) -> anyhow::Result<()> {
        let router = self.router.clone();
        let wait = router.wait_ready(ns, self.target, names, self.release.rollout_timeout());
        tokio::pin!(wait);
        let asked = async {
            loop {
                tokio::time::sleep(POLL).await;
                if let Ok(rec) = router.read_record(ns).await
                    && rec.pending().is_some_and(|r| r.action == Action::Abort)
                {
                    return;
                }
            }
        };
        tokio::select! {
            r = &mut wait => r,
            () = asked => {
                if let Some(request) = self.request().await?
                    && request.action == Action::Abort
                {
                    self.end_step(StepOutcome::Aborted);
                    return Err(fail(
                        Kind::PhaseFailed,
                        format!("aborted by {} while the new slot came up for {percent}%", request.by),
                    ));
                }
                wait.await
            }
        }
    }

    /// The image tag the old slot runs (for `{{version}}` of the old slot).
    fn old_version(&self) -> String {
        let old = self.target.other();
        self.before
            .services
            .values()
            .filter(|s| s.active == Some(old))
            .find_map(|s| s.slots.get(&old)?.release())
            .unwrap_or_default()
    }

    async fn save(&mut self) -> anyhow::Result<()> {
        self.rollout.updated_at = Utc::now();
        self.report.bound_measurements();
        self.router
            .save(&self.profile.namespace, &self.rollout, &self.report)
            .await
    }

    /// Set everything for `percent`: the new slot's workers up (waited
    /// for), the routes, then the old slot's workers down.
    async fn apply_step(&mut self, index: usize, percent: u32) -> anyhow::Result<()> {
        let target = self.target;
        let ns = self.profile.namespace.clone();
        let workers = plan::worker_replicas(
            &self.before,
            &route::workers_of(&self.profile),
            self.plan.workers,
            target,
            percent,
        );
        let weights = route::weights_for(target, percent);
        let shown = if self.rollout.from.is_some() {
            weights
        } else {
            route::all_to(target)
        };
        self.report.steps.push(StepReport {
            percent,
            weights: shown,
            workers: workers.clone(),
            started_at: Utc::now(),
            ended_at: None,
            outcome: StepOutcome::Running,
            measurements: Vec::new(),
            measurements_left_out: 0,
        });
        let total = self.plan.steps.len();
        let worker_text = worker_replicas_words(&workers, target, self.rollout.from.is_some());
        self.progress.say(format!(
            "step {}/{total}: {percent}% on {target} (weights blue {} / green {}){worker_text}",
            index + 1,
            shown.0,
            shown.1
        ));

        self.http_capacity(percent).await?;
        let up: Vec<(String, i32)> = workers
            .iter()
            .map(|(w, n, _)| (format!("{w}-{target}"), *n as i32))
            .collect();
        self.router.scale(&ns, up.clone()).await?;
        let waiting: Vec<String> = up
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, _)| name.clone())
            .collect();
        if !waiting.is_empty() {
            self.ready_unless_aborted(&ns, &waiting, percent).await?;
        }
        if percent >= 100 {
            self.router
                .switch_to(&self.profile, &self.templates, &self.release, target)
                .await?;
        } else {
            let before = &self.before;
            let at = |service: &str| {
                let at = plan::route_at(before, service, target, percent);
                (at.active, at.weights)
            };
            self.router
                .set_routes(&self.profile, &self.templates, &self.release, &at)
                .await?;
            let down: Vec<(String, i32)> = workers
                .iter()
                .map(|(w, _, o)| (format!("{w}-{}", target.other()), *o as i32))
                .collect();
            self.router.scale(&ns, down).await?;
        }
        self.router
            .note_users(if percent >= 100 || self.rollout.from.is_none() {
                format!("all on {target} (step {}/{total})", index + 1)
            } else {
                format!(
                    "{percent}% on {target}, {}% on {} (step {}/{total})",
                    100 - percent,
                    target.other(),
                    index + 1
                )
            });
        // Recorded once users are there, not before: `promote` and `status`
        // read the record as where users are (a step whose scale-up fails
        // never reached them).
        self.rollout.step = index;
        self.rollout.percent = percent;
        self.rollout.stage = Stage::Step;
        self.rollout.since = Utc::now();
        self.rollout.last_measurement = None;
        self.save().await?;
        Ok(())
    }

    /// A request from another terminal meant for this rollout, answered in
    /// the record so the requester knows it was heard.
    async fn request(&mut self) -> anyhow::Result<Option<Request>> {
        let rec = self.router.read_record(self.namespace()).await?;
        // `pending` is only ever a request for the record's rollout: ours.
        let pending = rec.pending().cloned();
        let Some(request) = pending else {
            return Ok(None);
        };
        self.rollout.answered = Some(Answer {
            request: request.id.clone(),
            action: request.action,
            by: request.by.clone(),
            at: Utc::now(),
        });
        self.report.request = Some(format!("{} by {}", request.action.as_str(), request.by));
        self.save().await?;
        self.progress.say(format!(
            "{} requested by {}",
            request.action.as_str(),
            request.by
        ));
        Ok(Some(request))
    }

    async fn measure(&mut self, percent: u32) -> anyhow::Result<Option<Measurement>> {
        let (Some(analysis), Some(source)) = (self.analysis.clone(), self.metrics.clone()) else {
            return Ok(None);
        };
        let new = self.vars(self.target, &self.release.image_tag.clone());
        let old_version = self.old_version();
        let old = self.vars(self.target.other(), &old_version);
        let compare = self.rollout.from.is_some() && percent < 100;
        let m = analysis::measure(
            source.as_ref(),
            &analysis,
            &new,
            compare.then_some(&old),
            percent,
        )
        .await?;
        if m.verdict == Verdict::Fail {
            self.report.failures += 1;
        }
        // Into the grace period's measurements once it has begun, else the
        // current step's; saved with the record at once.
        match self.report.grace_period.as_mut() {
            Some(g) => report::keep(&mut g.measurements, &mut g.measurements_left_out, m.clone()),
            None => {
                if let Some(s) = self.report.current() {
                    report::keep(&mut s.measurements, &mut s.measurements_left_out, m.clone());
                }
            }
        }
        self.rollout.last_measurement = Some(m.clone());
        self.save().await?;
        Ok(Some(m))
    }

    /// Walk the steps below 100% and then 100%. A step an error ends (a
    /// route write refused, the lock lost) is `stopped`, not left
    /// `running` as if the walk still went on.
    pub async fn steps(&mut self) -> anyhow::Result<Ending> {
        let walked = self.walk_steps().await;
        if walked.is_err()
            && let Some(s) = self.report.current()
            && s.outcome == StepOutcome::Running
        {
            s.outcome = StepOutcome::Stopped;
            s.ended_at = Some(Utc::now());
        }
        walked
    }

    async fn walk_steps(&mut self) -> anyhow::Result<Ending> {
        self.heartbeat = self.router.heartbeat(&self.profile.namespace);
        // The record names this run before the first user moves (at 0%,
        // where users still are). Each step is recorded once users are
        // there; a run killed between the first route write and that
        // record would otherwise leave the record naming the run before,
        // and `promote` and `abort` would say no rollout is in progress
        // while users are split. A later step's window only lags a step.
        self.save().await?;
        let steps = self.plan.steps.clone();
        for (index, percent) in steps.iter().copied().enumerate() {
            self.apply_step(index, percent).await?;
            if percent >= 100 {
                self.end_step(StepOutcome::Reached);
                self.save().await?;
                return Ok(Ending::Walked);
            }
            match self.hold(percent).await? {
                Held::Passed => self.end_step(StepOutcome::Passed),
                Held::Advanced => self.end_step(StepOutcome::Advanced),
                Held::Promoted(by) => {
                    self.end_step(StepOutcome::Promoted);
                    self.apply_step(steps.len() - 1, 100).await?;
                    self.end_step(StepOutcome::Reached);
                    self.save().await?;
                    return Ok(Ending::Promoted(by));
                }
            }
        }
        Ok(Ending::Walked)
    }

    fn end_step(&mut self, outcome: StepOutcome) {
        if let Some(s) = self.report.current() {
            s.outcome = outcome;
            s.ended_at = Some(Utc::now());
        }
    }

    /// Hold a step until analysis lets it go, a request ends it, or it
    /// aborts (`Err`).
    async fn hold(&mut self, percent: u32) -> anyhow::Result<Held> {
        let started = Instant::now();
        let interval = self.interval();
        let mut next_measure = interval.map(|i| started + i);
        let mut next_tick = started + TICK;
        let mut this_step: Vec<Measurement> = Vec::new();
        loop {
            if let Some(request) = self.request().await? {
                match request.action {
                    Action::Promote => return Ok(Held::Promoted(request.by)),
                    Action::Step => return Ok(Held::Advanced),
                    Action::Abort => {
                        self.end_step(StepOutcome::Aborted);
                        return Err(fail(
                            Kind::PhaseFailed,
                            format!("aborted by {} at {percent}%", request.by),
                        ));
                    }
                }
            }
            let now = Instant::now();
            if next_measure.is_some_and(|t| now >= t) {
                if let Some(m) = self.measure(percent).await? {
                    self.progress
                        .say(format!("{percent}%: {}", report::measurement_line(&m)));
                    this_step.push(m);
                }
                next_measure = interval.map(|i| Instant::now() + i);
            }
            let elapsed = started.elapsed();
            match analysis::decide(
                self.analysis.as_ref(),
                self.plan.pause,
                elapsed,
                &this_step,
                self.report.failures,
            ) {
                Decision::Advance => return Ok(Held::Passed),
                Decision::Abort(why) => {
                    let no_verdict = this_step
                        .last()
                        .is_some_and(|m| m.verdict == Verdict::Inconclusive)
                        || this_step.is_empty();
                    self.end_step(if no_verdict && self.report.failures == 0 {
                        StepOutcome::NoVerdict
                    } else {
                        StepOutcome::Failed
                    });
                    return Err(fail(
                        Kind::PhaseFailed,
                        format!("analysis at {percent}%: {why}"),
                    ));
                }
                Decision::Wait => {}
            }
            if self.plan.pause.is_over(elapsed) && self.rollout.stage != Stage::Holding {
                self.rollout.stage = Stage::Holding;
                self.save().await?;
            }
            if Instant::now() >= next_tick {
                next_tick += TICK;
                let clock = match self.plan.pause {
                    Pause::Manual => {
                        format!("held {} until `promote --step`", report::human(elapsed))
                    }
                    Pause::For(d) if elapsed >= d => {
                        format!("holding for a verdict, {}", report::human(elapsed))
                    }
                    Pause::For(d) => {
                        format!("pausing {} of {}", report::human(elapsed), report::human(d))
                    }
                };
                let last = this_step
                    .last()
                    .map(|m| format!(" · {}", report::measurement_line(m)))
                    .unwrap_or_default();
                self.progress.status(format!(
                    "step {}/{}: {percent}% on {} · {clock}{last}",
                    self.rollout.step + 1,
                    self.plan.steps.len(),
                    self.target,
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// After 100%: keep the old slot scaled for the grace period while
    /// analysis goes on (only a failure counts now: the old slot has no
    /// traffic to compare with, and no traffic at 100% means no users, not
    /// a bad release). Then scale the old slot down. `promote` ends the
    /// grace at once; `abort` fails the run (users go back).
    pub async fn grace(&mut self, analyse: bool) -> anyhow::Result<()> {
        let Grace::For(length) = self.plan.grace else {
            return Ok(());
        };
        let Some(old) = self.rollout.from else {
            return Ok(());
        };
        let started = Instant::now();
        let until = Utc::now() + chrono::Duration::from_std(length).unwrap_or_default();
        self.report.grace_period = Some(GraceReport {
            started_at: Utc::now(),
            until,
            ended_at: None,
            scaled_down: false,
            measurements: Vec::new(),
            measurements_left_out: 0,
        });
        self.rollout.stage = Stage::Grace;
        self.rollout.grace_until = Some(until);
        self.save().await?;
        self.progress.say(format!(
            "100% on {}; {old} stays scaled for {} for an instant abort",
            self.target,
            report::human(length)
        ));
        let interval = self.interval().filter(|_| analyse);
        let mut next_measure = interval.map(|i| started + i);
        let limit = self.analysis.as_ref().map_or(0, |a| a.failure_limit);
        let mut next_tick = started;
        while started.elapsed() < length {
            if Instant::now() >= next_tick {
                next_tick += TICK;
                let last = self
                    .report
                    .grace_period
                    .as_ref()
                    .and_then(|g| g.measurements.last())
                    .map(|m| format!(" · {}", report::measurement_line(m)))
                    .unwrap_or_default();
                self.progress.status(format!(
                    "100% on {} · {old} kept for {} of {}{last}",
                    self.target,
                    report::human(started.elapsed()),
                    report::human(length)
                ));
            }
            if let Some(request) = self.request().await? {
                match request.action {
                    // At 100% there is no next step: both end the grace.
                    Action::Promote | Action::Step => break,
                    Action::Abort => {
                        return Err(fail(
                            Kind::PhaseFailed,
                            format!("aborted by {} during the grace period", request.by),
                        ));
                    }
                }
            }
            if next_measure.is_some_and(|t| Instant::now() >= t) {
                if let Some(m) = self.measure(100).await? {
                    self.progress
                        .say(format!("100% (grace): {}", report::measurement_line(&m)));
                    if m.verdict == Verdict::Fail && self.report.failures > limit {
                        return Err(fail(
                            Kind::PhaseFailed,
                            format!(
                                "analysis during the grace period failed {} times (limit {limit}): {}",
                                self.report.failures, m.reason
                            ),
                        ));
                    }
                }
                next_measure = interval.map(|i| Instant::now() + i);
            }
            tokio::time::sleep(POLL).await;
        }
        let names = self.router.scale_down_http(&self.profile, old).await?;
        if let Some(g) = self.report.grace_period.as_mut() {
            g.ended_at = Some(Utc::now());
            g.scaled_down = true;
        }
        self.progress
            .say(format!("grace over: {} scaled to 0", names.join(", ")));
        Ok(())
    }

    /// The rollout is done: close the record.
    pub async fn complete(&mut self) -> anyhow::Result<()> {
        self.rollout.stage = Stage::Completed;
        self.save().await
    }
}

/// The step line's part about workers, each named once with its replicas
/// per slot in the order the weights give them
/// (`; worker replicas: workers blue 4 / green 2`). A first deploy has no
/// old slot to speak of: only the new one is named
/// (`; worker replicas on blue: workers 6`).
pub(crate) fn worker_replicas_words(
    workers: &[(String, u32, u32)],
    target: Slot,
    had_users: bool,
) -> String {
    if workers.is_empty() {
        return String::new();
    }
    if !had_users {
        let each: Vec<String> = workers
            .iter()
            .map(|(name, new, _)| format!("{name} {new}"))
            .collect();
        return format!(
            "; worker replicas on {target}: {}",
            crate::wording::and_list(&each)
        );
    }
    let each: Vec<String> = workers
        .iter()
        .map(|(name, new, old)| {
            let (blue, green) = match target {
                Slot::Blue => (new, old),
                Slot::Green => (old, new),
            };
            format!("{name} blue {blue} / green {green}")
        })
        .collect();
    format!("; worker replicas: {}", crate::wording::and_list(&each))
}
