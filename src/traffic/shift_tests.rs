//! The walk against a recording router and numbers chosen by the test:
//! what it asks of the cluster at each step, and in what order, when
//! analysis passes and when it fails.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::analysis::MetricSource;
use super::plan::RolloutPlan;
use super::record::{Record, Rollout};
use super::report::{RolloutReport, StepOutcome};
use super::router::{RouteAt, TrafficRouter};
use super::shift::{Ending, Walk};
use crate::config::Profile;
use crate::config::profile::ServiceKind;
use crate::config::traffic::{Grace, Pause, WorkerShift};
use crate::k8s::live::{PlatformState, ServiceState, SlotState};
use crate::k8s::manifest::Template;
use crate::k8s::slot::Slot;
use crate::k8s::values::Release;
use crate::providers::prometheus::{QueryError, QueryValue};

/// Every change the walk asked for, as one line each.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    saved: Mutex<Vec<Rollout>>,
    /// The new slot's Deployments' replicas (2 each, as deploy-backend
    /// leaves them, unless set).
    replicas: Mutex<BTreeMap<String, i32>>,
    /// Waits for these Deployments fail (their pods never come up).
    never_ready: Mutex<Vec<String>>,
    /// Every wait takes this long (pods slow to come up).
    slow_waits: Mutex<Option<Duration>>,
    /// What `read_record` answers (requests from another terminal).
    record: Mutex<Record>,
    /// For each save, how many calls had been made before it.
    saved_after: Mutex<Vec<usize>>,
}

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn push(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait]
impl TrafficRouter for Recorder {
    async fn scale(&self, _ns: &str, replicas: Vec<(String, i32)>) -> anyhow::Result<()> {
        let mut replicas = replicas;
        replicas.sort();
        self.push(format!("scale {replicas:?}"));
        Ok(())
    }
    async fn replicas(&self, _ns: &str, slot: Slot) -> anyhow::Result<BTreeMap<String, i32>> {
        let set = self.replicas.lock().unwrap().clone();
        Ok(["api", "workers"]
            .iter()
            .map(|n| {
                let name = format!("{n}-{slot}");
                let r = set.get(&name).copied().unwrap_or(2);
                (name, r)
            })
            .collect())
    }
    async fn wait_ready(
        &self,
        _ns: &str,
        slot: Slot,
        names: &[String],
        _timeout: Duration,
    ) -> anyhow::Result<()> {
        self.push(format!("wait {slot} {names:?}"));
        let slow = *self.slow_waits.lock().unwrap();
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
        }
        let never = self.never_ready.lock().unwrap().clone();
        if let Some(name) = names.iter().find(|n| never.contains(n)) {
            anyhow::bail!("deployment {name}: FailedCreate: exceeded quota");
        }
        Ok(())
    }
    async fn switch_to(
        &self,
        _profile: &Profile,
        _templates: &[Template],
        _release: &Release,
        target: Slot,
    ) -> anyhow::Result<()> {
        self.push(format!("switch to {target}"));
        Ok(())
    }
    async fn set_routes(
        &self,
        profile: &Profile,
        _templates: &[Template],
        _release: &Release,
        at: RouteAt<'_>,
    ) -> anyhow::Result<()> {
        for (name, s) in &profile.services {
            if s.kind == ServiceKind::Http {
                let (active, weights) = at(name);
                self.push(format!(
                    "route {name}: stable {active}, weights {weights:?}"
                ));
            }
        }
        Ok(())
    }
    async fn scale_down_http(&self, profile: &Profile, slot: Slot) -> anyhow::Result<Vec<String>> {
        self.push(format!("scale down http of {slot}"));
        Ok(profile
            .services
            .keys()
            .map(|n| format!("{n}-{slot}"))
            .collect())
    }
    async fn read_record(&self, _ns: &str) -> anyhow::Result<Record> {
        Ok(self.record.lock().unwrap().clone())
    }
    async fn save(
        &self,
        _ns: &str,
        rollout: &Rollout,
        _report: &RolloutReport,
    ) -> anyhow::Result<()> {
        self.saved.lock().unwrap().push(rollout.clone());
        self.saved_after
            .lock()
            .unwrap()
            .push(self.calls.lock().unwrap().len());
        Ok(())
    }
    fn heartbeat(&self, _ns: &str) -> Option<tokio::task::JoinHandle<()>> {
        None
    }
    fn note_users(&self, _where: String) {}
}

/// The new slot's error rate is `errors` percent, its traffic plenty.
struct ErrorRate(f64);

#[async_trait]
impl MetricSource for ErrorRate {
    async fn instant(&self, promql: &str) -> Result<QueryValue, QueryError> {
        Ok(QueryValue::Number(if promql.starts_with("sum(increase") {
            1000.0
        } else if promql.starts_with("100 *") {
            self.0
        } else {
            100.0
        }))
    }
}

/// Production's profile, its analysis measuring every 20 ms, with an api
/// and workers on blue.
fn fixture() -> (Profile, PlatformState) {
    let mut profile = crate::config::profile::load(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests"),
        "production",
    )
    .unwrap();
    profile
        .services
        .retain(|name, _| name == "api" || name == "workers");
    let analysis = profile.traffic.analysis.as_mut().unwrap();
    analysis.interval = Duration::from_millis(20);
    analysis.failure_limit = 0;
    let slot = |replicas| SlotState {
        image: Some("ghcr.io/maily/x:v1".into()),
        replicas,
        ready: replicas,
        deployment_id: None,
        version: None,
    };
    let state = |kind, weights, blue| ServiceState {
        kind,
        active: Some(Slot::Blue),
        weights,
        slots: [(Slot::Blue, slot(blue)), (Slot::Green, slot(0))].into(),
    };
    let before = PlatformState {
        services: BTreeMap::from([
            (
                "api".to_string(),
                state(ServiceKind::Http, Some((100, 0)), 4),
            ),
            ("workers".to_string(), state(ServiceKind::Worker, None, 6)),
        ]),
    };
    (profile, before)
}

fn walk(errors: f64, router: Arc<Recorder>) -> Walk {
    let (profile, before) = fixture();
    let plan = RolloutPlan {
        steps: vec![25, 100],
        pause: Pause::For(Duration::from_millis(60)),
        grace: Grace::Keep,
        workers: WorkerShift::Proportional,
        note: None,
    };
    let release = Release {
        environment: "production".into(),
        deployment_id: "production-20261130-120000".into(),
        image_registry: "ghcr.io/maily".into(),
        image_tag: "v2".into(),
        backup_url: String::new(),
        rollout_timeout_secs: 60,
        digests: Default::default(),
    };
    Walk::new(
        router,
        profile,
        Vec::new(),
        release,
        before,
        Slot::Green,
        plan,
        Some(Arc::new(ErrorRate(errors))),
        crate::pipeline::Progress::default(),
        None,
        crate::pipeline::DeploymentId::parse("production", "production-20261130-120000").unwrap(),
    )
}

#[tokio::test]
async fn a_passing_rollout_shares_users_then_switches_with_workers_in_proportion() {
    let router = Arc::new(Recorder::default());
    let mut w = walk(0.1, router.clone());
    assert_eq!(w.steps().await.unwrap(), Ending::Walked);
    assert_eq!(
        router.calls(),
        vec![
            // 25%: a quarter of the workers up on green (waited for), the
            // route shared, blue's workers down to their share.
            "scale [(\"workers-green\", 2)]",
            "wait green [\"workers-green\"]",
            "route api: stable blue, weights (75, 25)",
            "scale [(\"workers-blue\", 5)]",
            // 100%: green's api up to what blue serves with (4, from the
            // 2 it starts with), waited for; green's workers up; then
            // everything to green at once.
            "scale [(\"api-green\", 4)]",
            "wait green [\"api-green\"]",
            "scale [(\"workers-green\", 6)]",
            "wait green [\"workers-green\"]",
            "switch to green",
        ]
    );
    let saved = router.saved.lock().unwrap();
    assert!(saved.iter().any(|r| r.percent == 25));
    assert_eq!(saved.last().unwrap().percent, 100);
}

/// A run killed right after its first route write must still be the
/// run the record names, or `promote` and `abort` find no rollout while
/// users are split.
#[tokio::test]
async fn the_record_names_the_run_before_the_first_user_moves() {
    let router = Arc::new(Recorder::default());
    let mut w = walk(0.1, router.clone());
    assert_eq!(w.steps().await.unwrap(), Ending::Walked);
    let saved = router.saved.lock().unwrap();
    let first = &saved[0];
    assert_eq!(
        router.saved_after.lock().unwrap()[0],
        0,
        "{:?}",
        router.calls()
    );
    assert_eq!(first.deployment_id.as_str(), "production-20261130-120000");
    assert_eq!(
        (first.percent, first.stage),
        (0, super::record::Stage::Step)
    );
}

#[tokio::test]
async fn a_step_is_recorded_only_once_users_are_there() {
    let router = Arc::new(Recorder::default());
    // The 100% step's capacity never comes up: users stay at 25%.
    router
        .never_ready
        .lock()
        .unwrap()
        .push("api-green".to_string());
    let mut w = walk(0.1, router.clone());
    let err = w.steps().await.unwrap_err();
    assert!(err.to_string().contains("exceeded quota"), "{err:#}");
    assert!(
        !router.calls().iter().any(|c| c.starts_with("switch")),
        "{:?}",
        router.calls()
    );
    let saved = router.saved.lock().unwrap();
    assert!(saved.iter().any(|r| r.percent == 25), "{saved:?}");
    assert!(
        saved.iter().all(|r| r.percent < 100),
        "the record said 100% while users were at 25%: {:?}",
        saved.iter().map(|r| r.percent).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_abort_while_the_new_slot_comes_up_stops_before_users_move() {
    use super::record::{Action, Request, Stage};
    let router = Arc::new(Recorder::default());
    *router.slow_waits.lock().unwrap() = Some(Duration::from_secs(600));
    let id =
        crate::pipeline::DeploymentId::parse("production", "production-20261130-120000").unwrap();
    *router.record.lock().unwrap() = Record {
        rollout: Some(Rollout {
            deployment_id: id.clone(),
            from: Some(Slot::Blue),
            to: Slot::Green,
            version: "v2".into(),
            steps: vec![25, 100],
            step: 0,
            percent: 0,
            stage: Stage::Step,
            since: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            grace_until: None,
            last_measurement: None,
            frontend: None,
            answered: None,
            failure: None,
            command_line: Vec::new(),
        }),
        request: Some(Request {
            id: "abort-1".into(),
            deployment_id: id,
            action: Action::Abort,
            by: "ops@laptop".into(),
            at: chrono::Utc::now(),
        }),
        heartbeat: None,
        report: None,
    };
    let mut w = walk(0.1, router.clone());
    let err = tokio::time::timeout(Duration::from_secs(30), w.steps())
        .await
        .expect("the abort was read while the pods came up")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("aborted by ops@laptop while the new slot came up for 25%"),
        "{err:#}"
    );
    assert!(
        !router
            .calls()
            .iter()
            .any(|c| c.starts_with("route") || c.starts_with("switch")),
        "users never moved: {:?}",
        router.calls()
    );
    assert_eq!(
        w.report.steps.last().map(|s| s.outcome),
        Some(StepOutcome::Aborted)
    );
}

#[tokio::test]
async fn a_failing_measurement_aborts_at_its_step_and_never_switches() {
    let router = Arc::new(Recorder::default());
    let mut w = walk(5.0, router.clone());
    let err = w.steps().await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("analysis at 25%:"), "{msg}");
    assert!(msg.contains("error-rate"), "{msg}");
    let calls = router.calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("switch")),
        "users never all moved: {calls:?}"
    );
    assert_eq!(
        calls.last().map(String::as_str),
        Some("scale [(\"workers-blue\", 5)]"),
        "nothing after the step that failed: {calls:?}"
    );
    assert_eq!(
        w.report.steps.last().map(|s| s.outcome),
        Some(StepOutcome::Failed)
    );
}

#[test]
fn a_step_line_names_each_worker_once_with_its_replicas_per_slot() {
    use super::shift::worker_replicas_words;
    // (name, replicas in the new slot, replicas in the old one)
    let workers = vec![
        ("ai-workers".to_string(), 1, 2),
        ("workers".to_string(), 2, 4),
    ];
    assert_eq!(
        worker_replicas_words(&workers, Slot::Green, true),
        "; worker replicas: ai-workers blue 2 / green 1 and workers blue 4 / green 2"
    );
    assert_eq!(
        worker_replicas_words(&workers[1..], Slot::Blue, true),
        "; worker replicas: workers blue 2 / green 4"
    );
    // A first deploy: no old slot users were on.
    let first = vec![("workers".to_string(), 6, 0)];
    assert_eq!(
        worker_replicas_words(&first, Slot::Blue, false),
        "; worker replicas on blue: workers 6"
    );
    assert_eq!(worker_replicas_words(&[], Slot::Green, true), "");
}
