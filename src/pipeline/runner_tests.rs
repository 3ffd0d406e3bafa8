//! The runner against fakes at its seams: phases that say what they did, a
//! lifecycle that records when it was asked to begin and finish. What is
//! decided here (order, when the lock is taken, what a failure stops, what
//! finish is told, the exit code) needs no cluster.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::*;
use crate::pipeline::{PhasePlan, PhaseReport};

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::default()
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A phase that logs its run (or plan) and succeeds, or fails as told.
struct FakePhase {
    id: PhaseId,
    log: Log,
    fails: Option<Kind>,
}

fn phase(id: PhaseId, log: &Log) -> Box<dyn Phase> {
    Box::new(FakePhase {
        id,
        log: log.clone(),
        fails: None,
    })
}

fn failing(id: PhaseId, log: &Log, kind: Kind) -> Box<dyn Phase> {
    Box::new(FakePhase {
        id,
        log: log.clone(),
        fails: Some(kind),
    })
}

#[async_trait]
impl Phase for FakePhase {
    fn id(&self) -> PhaseId {
        self.id
    }
    async fn plan(&self, _cx: &Context) -> anyhow::Result<PhasePlan> {
        self.log.lock().unwrap().push(format!("plan {}", self.id));
        Ok(PhasePlan {
            summary: format!("would {}", self.id),
            steps: vec![],
        })
    }
    async fn run(&self, _cx: &mut Context) -> anyhow::Result<PhaseReport> {
        self.log.lock().unwrap().push(format!("run {}", self.id));
        match self.fails {
            Some(kind) => Err(crate::error::fail(kind, format!("{} broke", self.id))),
            None => Ok(PhaseReport {
                summary: format!("{} done", self.id),
                details: vec![],
            }),
        }
    }
}

/// A lifecycle that logs begin and finish (with the failure it was told).
struct FakeLifecycle {
    log: Log,
    begin_fails: bool,
}

#[async_trait]
impl Lifecycle for FakeLifecycle {
    async fn begin(&mut self, _cx: &mut Context) -> anyhow::Result<()> {
        self.log.lock().unwrap().push("begin".into());
        if self.begin_fails {
            return Err(crate::error::fail(Kind::LockHeld, "held by ci@runner"));
        }
        Ok(())
    }
    async fn finish(
        &mut self,
        _cx: &mut Context,
        failure: Option<&ErrorReport>,
    ) -> anyhow::Result<()> {
        self.log.lock().unwrap().push(match failure {
            Some(f) => format!("finish after: {}", f.message),
            None => "finish".into(),
        });
        Ok(())
    }
    fn fence(&self) -> Option<Fence> {
        None
    }
}

struct Quiet;

impl Observer for Quiet {
    fn run_started(&mut self, _cx: &Context, _phases: &[PhaseId]) {}
    fn phase_started(&mut self, _id: PhaseId) {}
    fn phase_finished(&mut self, _row: &PhaseRow) {}
    fn run_finished(&mut self, _report: &RunReport) {}
}

fn context(selected: &[PhaseId], dry_run: bool) -> Context {
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let config = crate::config::load(&crate::config::Sources {
        environment: "staging",
        env_file: None,
        manifests_dir: &manifests,
        process_env: Default::default(),
        process_not_utf8: Vec::new(),
        check_for: None,
    })
    .expect("the shipped staging profile loads");
    Context::new(
        Some(crate::pipeline::DeploymentId::new(
            "staging",
            chrono::Utc::now(),
        )),
        config,
        crate::commands::cluster::only(selected),
        dry_run,
    )
}

fn runner(phases: Vec<Box<dyn Phase>>, log: &Log, begin_fails: bool) -> Runner {
    Runner::new(phases).with_lifecycle(Box::new(FakeLifecycle {
        log: log.clone(),
        begin_fails,
    }))
}

fn run(runner: &mut Runner, cx: &mut Context) -> RunReport {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(runner.run("deploy", cx, &mut Quiet))
}

use PhaseId::{DeployBackend, Migrate, ShiftTraffic, Validate, Verify};

#[test]
fn the_lock_is_taken_after_validate_and_before_the_first_change_and_released_at_the_end() {
    let log = log();
    let mut r = runner(
        vec![
            phase(Validate, &log),
            phase(DeployBackend, &log),
            phase(ShiftTraffic, &log),
        ],
        &log,
        false,
    );
    let mut cx = context(&[Validate, DeployBackend, ShiftTraffic], false);
    let report = run(&mut r, &mut cx);
    assert_eq!(
        entries(&log),
        [
            "run validate",
            "begin",
            "run deploy-backend",
            "run shift-traffic",
            "finish"
        ]
    );
    assert_eq!(report.exit_code, crate::exit_code::SUCCESS);
    assert_eq!(report.outcome, Outcome::Succeeded);
}

#[test]
fn a_failed_phase_stops_the_rest_and_finish_is_told_why() {
    let log = log();
    let mut r = runner(
        vec![
            phase(Validate, &log),
            failing(DeployBackend, &log, Kind::PhaseFailed),
            phase(ShiftTraffic, &log),
        ],
        &log,
        false,
    );
    let mut cx = context(&[Validate, DeployBackend, ShiftTraffic], false);
    let report = run(&mut r, &mut cx);
    assert_eq!(
        entries(&log),
        [
            "run validate",
            "begin",
            "run deploy-backend",
            "finish after: deploy-backend: deploy-backend broke"
        ]
    );
    assert_eq!(report.exit_code, crate::exit_code::PHASE_FAILED_ROLLED_BACK);
    let rows: Vec<_> = report.phases.iter().map(|r| (r.id, r.status)).collect();
    assert!(
        rows.contains(&(ShiftTraffic, PhaseStatus::NotRun)),
        "{rows:?}"
    );
    let message = report.error.unwrap().message;
    assert!(message.ends_with("; users were not moved"), "{message}");
}

#[test]
fn a_lock_held_elsewhere_runs_no_phase_after_validate_and_finishes_nothing() {
    let log = log();
    let mut r = runner(
        vec![phase(Validate, &log), phase(DeployBackend, &log)],
        &log,
        true,
    );
    let mut cx = context(&[Validate, DeployBackend], false);
    let report = run(&mut r, &mut cx);
    assert_eq!(entries(&log), ["run validate", "begin"]);
    assert_eq!(report.exit_code, crate::exit_code::LOCK_HELD);
}

#[test]
fn the_closing_step_runs_after_the_phases_under_the_lock_and_not_after_a_failure() {
    let log = log();
    let mut r =
        runner(vec![phase(ShiftTraffic, &log)], &log, false).with_closing(phase(Migrate, &log));
    let mut cx = context(&[ShiftTraffic], false);
    let report = run(&mut r, &mut cx);
    assert_eq!(
        entries(&log),
        ["begin", "run shift-traffic", "run migrate", "finish"]
    );
    assert_eq!(report.phases.last().map(|r| r.id), Some(Migrate));

    let log2 = self::log();
    let mut r = runner(
        vec![failing(ShiftTraffic, &log2, Kind::PhaseFailed)],
        &log2,
        false,
    )
    .with_closing(phase(Migrate, &log2));
    let report = run(&mut r, &mut context(&[ShiftTraffic], false));
    assert!(!entries(&log2).contains(&"run migrate".to_string()));
    assert_eq!(
        report.phases.last().map(|r| (r.id, r.status)),
        Some((Migrate, PhaseStatus::NotRun))
    );
}

#[test]
fn a_dry_run_plans_every_selected_phase_and_never_takes_the_lock() {
    let log = log();
    let mut r = runner(
        vec![
            phase(Validate, &log),
            phase(DeployBackend, &log),
            phase(Verify, &log),
        ],
        &log,
        false,
    );
    let mut cx = context(&[Validate, Verify], true);
    let report = run(&mut r, &mut cx);
    assert_eq!(entries(&log), ["plan validate", "plan verify"]);
    assert_eq!(report.outcome, Outcome::Planned);
    let skipped = report
        .phases
        .iter()
        .find(|r| r.id == DeployBackend)
        .map(|r| r.status);
    assert_eq!(skipped, Some(PhaseStatus::Skipped));
}

#[test]
fn a_refusal_before_the_first_change_exits_refused_and_after_it_a_phase_failure() {
    use crate::exit_code;
    // The first changing phase refuses: nothing changed, exit 10.
    let log1 = log();
    let mut r = runner(
        vec![
            phase(Validate, &log1),
            failing(DeployBackend, &log1, Kind::Refused),
            phase(ShiftTraffic, &log1),
        ],
        &log1,
        false,
    );
    let report = run(
        &mut r,
        &mut context(&[Validate, DeployBackend, ShiftTraffic], false),
    );
    assert_eq!(report.exit_code, exit_code::REFUSED);
    assert!(
        report
            .error
            .as_ref()
            .unwrap()
            .message
            .ends_with("; nothing was changed"),
        "{:?}",
        report.error
    );
    // The same refusal after migrate changed the database: exit 4.
    let log2 = log();
    let mut r = runner(
        vec![
            phase(Validate, &log2),
            phase(Migrate, &log2),
            failing(DeployBackend, &log2, Kind::Refused),
        ],
        &log2,
        false,
    );
    let report = run(
        &mut r,
        &mut context(&[Validate, Migrate, DeployBackend], false),
    );
    assert_eq!(report.exit_code, exit_code::PHASE_FAILED_ROLLED_BACK);
}

#[test]
fn settled_kinds_follow_whether_anything_changed() {
    use Kind::*;
    // A dry run changes nothing: a plan that fails is refused, unless the
    // configuration, the command line or the network is why.
    assert_eq!(settled(PhaseFailed, true, false), Refused);
    assert_eq!(settled(Config, true, false), Config);
    assert_eq!(settled(Unreachable, true, true), Unreachable);
    // A real run: refused or unreachable before the first change, a phase
    // failure after it.
    assert_eq!(settled(Refused, false, false), Refused);
    assert_eq!(settled(Unreachable, false, false), Unreachable);
    assert_eq!(settled(Refused, false, true), PhaseFailed);
    assert_eq!(settled(Unreachable, false, true), PhaseFailed);
    assert_eq!(settled(PhaseFailed, false, false), PhaseFailed);
    assert_eq!(settled(LockHeld, false, true), LockHeld);
    // Exits 2 and 3 promise nothing was changed: once something was (a
    // manifest that does not render after provision and migrate ran), the
    // configuration's problem is a phase failure.
    assert_eq!(settled(Config, false, false), Config);
    assert_eq!(settled(Usage, false, false), Usage);
    assert_eq!(settled(Config, false, true), PhaseFailed);
    assert_eq!(settled(Usage, false, true), PhaseFailed);
}
