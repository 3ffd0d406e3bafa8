//! The frontend on Vercel, as a user runs it: the built binary against
//! kubesim and a Vercel stub that answers as Vercel's REST API reference
//! documents and checks what the tool sends (the bearer token, the team id,
//! the production target, no promotion before shift-traffic).

use std::time::{Duration, UNIX_EPOCH};

use maily_deploy::exit_code;
use maily_deploy::phases::deploy_frontend::FrontendRecord;
use maily_deploy::pipeline::snapshot::Outcome;
use maily_deploy::providers::vercel::{self, Progress, ReadyState, Vercel};
use serde_json::Value;

use crate::support::vercel::{PROJECT, Script, Stub, TEAM, TOKEN, assert_clean, stub};
use crate::support::*;

/// The phases of a deploy that builds the frontend and walks the steps.
pub(crate) const WITH_FRONTEND: &[&str] = &[
    "--skip-provision",
    "--skip-migrate",
    "--skip-ai",
    "--skip-monitor",
    "--skip-verify",
];

fn env(world: &World, stub: &Stub, tag: &str) -> std::path::PathBuf {
    env_with(world, stub, tag, &[])
}

fn env_with(world: &World, stub: &Stub, tag: &str, extra: &[(&str, &str)]) -> std::path::PathBuf {
    let vercel = stub.vars();
    let mut vars = vec![("IMAGE_TAG", tag), ("ROLLOUT_TIMEOUT", "60s")];
    vars.extend(vercel.iter().map(|(k, v)| (*k, v.as_str())));
    vars.extend_from_slice(extra);
    world.env_file(&vars)
}

fn deploy(world: &World, stub: &Stub, tag: &str, extra: &[&str]) -> std::process::Output {
    let env = env(world, stub, tag);
    world
        .maily()
        .arg("staging")
        .args(WITH_FRONTEND)
        .arg("--env-file")
        .arg(&env)
        .args(extra)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap()
}

fn frontend_of(world: &World, id: &str) -> FrontendRecord {
    let snap = world
        .snapshots()
        .into_iter()
        .find(|s| s.deployment_id == id)
        .expect("the run's snapshot");
    snap.frontend.clone().expect("a frontend record")
}

#[test]
fn a_staging_deploy_builds_the_frontend_then_promotes_it_after_the_backend_switch() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, Some("dpl_old"));
    // Vercel rate-limits one read of the build, and takes two reads of the
    // project to finish the promotion it accepted.
    stub.vercel.state().rate_limited = 1;
    stub.vercel.state().promotion_lag = 2;

    let out = deploy(&world, &stub, "v1.4.2", &[]);
    assert_exit(&out, exit_code::SUCCESS);
    assert_clean(&stub);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Vercel rate limit") && stderr.contains("until X-RateLimit-Reset"),
        "{stderr}"
    );

    let id = deployment_id_of(&out);
    let record = frontend_of(&world, &id);
    assert_eq!(record.deployment_id, "dpl_1v142");
    assert_eq!(
        record.git_ref.as_deref(),
        Some("v1.4.2"),
        "IMAGE_TAG is the default ref"
    );
    assert_eq!(record.url.as_deref(), Some("maily-dpl_1v142.vercel.app"));
    assert_eq!(record.state.as_deref(), Some("READY"));
    assert_eq!(
        record.previous.as_ref().map(|p| p.id.as_str()),
        Some("dpl_old")
    );
    assert!(record.promoted && !record.undone);

    // Followed through QUEUED, BUILDING, READY; promoted once, last, after
    // the build was READY.
    let log = stub.vercel.state().log.clone();
    let reads = log
        .iter()
        .filter(|l| *l == "GET /v13/deployments/dpl_1v142")
        .count();
    assert_eq!(reads, 4, "three states and one 429: {log:#?}");
    assert_eq!(stub.vercel.promotions(), vec!["dpl_1v142"]);
    let promote_at = log.iter().position(|l| l.contains("/promote/")).unwrap();
    let last_read = log
        .iter()
        .rposition(|l| l.starts_with("GET /v13/deployments/"))
        .unwrap();
    assert!(promote_at > last_read, "{log:#?}");
    let project_reads_after = log[promote_at..]
        .iter()
        .filter(|l| *l == "GET /v9/projects/prj_maily")
        .count();
    assert_eq!(
        project_reads_after, 3,
        "waited for the promotion to take: {log:#?}"
    );
    assert_eq!(stub.vercel.state().production.as_deref(), Some("dpl_1v142"));
    for (svc, selected, _) in world.traffic() {
        assert_eq!(selected.as_deref(), Some("blue"), "{svc}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(TOKEN) && !String::from_utf8_lossy(&out.stdout).contains(TOKEN));
}

#[test]
fn without_shift_traffic_the_frontend_is_built_and_never_promoted() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, Some("dpl_old"));
    let out = deploy(&world, &stub, "v2", &["--skip-traffic"]);
    assert_exit(&out, exit_code::SUCCESS);
    assert_clean(&stub);
    assert!(stub.vercel.promotions().is_empty());
    assert_eq!(stub.vercel.state().production.as_deref(), Some("dpl_old"));
    let record = frontend_of(&world, &deployment_id_of(&out));
    assert_eq!(record.state.as_deref(), Some("READY"));
    assert!(!record.promoted);
}

#[test]
fn a_build_that_ends_in_error_fails_with_vercels_message_and_the_build_log() {
    let world = World::new(Duration::from_millis(300));
    let first = world.deploy("v1", &[]);
    assert_exit(&first, 0);
    let stub = stub(&world, Some("dpl_old"));
    stub.vercel.state().scripts = vec![Script(vec!["QUEUED", "BUILDING", "ERROR"])];

    let out = deploy(&world, &stub, "v2", &[]);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    assert_clean(&stub);
    let all = text(&out);
    assert!(all.contains("ended ERROR"), "{all}");
    assert!(
        all.contains("Command \"npm run build\" exited with 1 (BUILD_FAILED)"),
        "{all}"
    );
    assert!(
        all.contains("Type error: Property 'campaign'"),
        "the build log's tail: {all}"
    );
    assert!(all.contains("Production still serves dpl_old"), "{all}");
    // Nothing users see changed: no promotion, the backend still on blue.
    assert!(stub.vercel.promotions().is_empty());
    assert_eq!(stub.vercel.state().production.as_deref(), Some("dpl_old"));
    for (svc, selected, _) in world.traffic() {
        assert_eq!(selected.as_deref(), Some("blue"), "{svc}");
    }
    let snap = &world.snapshots()[0];
    assert_eq!(snap.outcome, Outcome::Failed);
    let record = snap.frontend.clone().unwrap();
    assert_eq!(record.state.as_deref(), Some("ERROR"));
    assert!(!record.promoted);
}

#[test]
fn a_failure_after_the_promotion_puts_the_old_frontend_and_backend_back() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, Some("dpl_old"));
    let first = deploy(&world, &stub, "v1", &[]);
    assert_exit(&first, 0);
    assert_eq!(stub.vercel.state().production.as_deref(), Some("dpl_1v1"));

    // Vercel refuses the second promotion (409): shift-traffic fails after
    // the backend switched and after the promotion was asked for. The
    // put-back asks for dpl_1v1 again, which production never left: Vercel
    // answers 409 to that too, and the project says it is done.
    stub.vercel.state().refuse_promotion = vec!["dpl_2v2".into()];
    let out = deploy(&world, &stub, "v2", &[]);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    assert_clean(&stub);
    assert!(
        text(&out).contains("A promotion is already in progress"),
        "{}",
        text(&out)
    );
    assert_eq!(
        stub.vercel.promotions(),
        vec!["dpl_1v1", "dpl_2v2", "dpl_1v1"]
    );
    assert_eq!(stub.vercel.state().production.as_deref(), Some("dpl_1v1"));
    for (svc, selected, _) in world.traffic() {
        assert_eq!(selected.as_deref(), Some("blue"), "{svc} back on blue");
    }
    let record = frontend_of(&world, &deployment_id_of(&out));
    assert!(record.promoted && record.undone, "{record:?}");
    assert_eq!(record.previous.map(|p| p.id), Some("dpl_1v1".into()));
}

#[test]
fn a_promotion_vercel_reports_failed_ends_the_wait_naming_the_domains_and_puts_both_back() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, Some("dpl_old"));
    let first = deploy(&world, &stub, "v1", &[]);
    assert_exit(&first, 0);

    // Vercel accepts the next promotion, then its job fails to move the
    // domains: production stays on dpl_1v1, and the project says so.
    stub.vercel.state().fail_promotion = vec!["dpl_2v2".into()];
    stub.vercel.state().promotion_lag = 1;
    let out = deploy(&world, &stub, "v2", &[]);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    assert_clean(&stub);
    let msg = text(&out);
    assert!(
        msg.contains("could not move the production domains to dpl_2v2")
            && msg.contains("not moved: app.maily.test, www.maily.test"),
        "{msg}"
    );
    // The project was read a few times, not polled for three minutes.
    let reads = stub
        .vercel
        .state()
        .log
        .iter()
        .filter(|l| l.ends_with(&format!("/v9/projects/{PROJECT}")))
        .count();
    assert!(reads < 20, "{reads} reads of the project");
    assert_eq!(stub.vercel.state().production.as_deref(), Some("dpl_1v1"));
    for (svc, selected, _) in world.traffic() {
        assert_eq!(selected.as_deref(), Some("blue"), "{svc} back on blue");
    }
    let record = frontend_of(&world, &deployment_id_of(&out));
    assert!(record.promoted && record.undone, "{record:?}");
}

#[test]
fn rollback_promotes_the_frontend_the_target_deployment_recorded() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, None);
    let first = deploy(&world, &stub, "v1", &[]);
    assert_exit(&first, 0);
    let first_id = deployment_id_of(&first);
    let second = deploy(&world, &stub, "v2", &[]);
    assert_exit(&second, 0);
    assert_eq!(stub.vercel.state().production.as_deref(), Some("dpl_2v2"));

    let env = env(&world, &stub, "v2");
    let out = world
        .maily()
        .args(["rollback", "staging", &first_id, "--env-file"])
        .arg(&env)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_clean(&stub);
    assert_eq!(
        stub.vercel.promotions(),
        vec!["dpl_1v1", "dpl_2v2", "dpl_1v1"]
    );
    assert_eq!(stub.vercel.state().production.as_deref(), Some("dpl_1v1"));
    for (svc, selected, _) in world.traffic() {
        assert_eq!(selected.as_deref(), Some("blue"), "{svc}");
    }
    // The rollback's own snapshot says what it promoted and what it replaced.
    let snap = &world.snapshots()[0];
    assert_eq!(snap.command, "rollback");
    let record = snap.frontend.clone().unwrap();
    assert_eq!(record.deployment_id, "dpl_1v1");
    assert_eq!(record.previous.map(|p| p.id), Some("dpl_2v2".into()));

    // `history` names each run's frontend, to choose a rollback target by.
    let out = world
        .maily()
        .args(["history", "staging", "--output", "json"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let frontends: Vec<&str> = doc["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["frontend"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(frontends, vec!["dpl_1v1", "dpl_2v2", "dpl_1v1"]);
}

#[test]
fn a_project_that_would_promote_every_build_by_itself_is_refused_before_building() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, Some("dpl_old"));
    stub.vercel.state().auto_assign = true;
    let out = deploy(&world, &stub, "v2", &[]);
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    assert_clean(&stub);
    assert!(
        text(&out).contains("Auto-assign Custom Production Domains"),
        "{}",
        text(&out)
    );
    assert_eq!(stub.vercel.state().log, vec!["GET /v9/projects/prj_maily"]);
    assert_eq!(stub.vercel.state().production.as_deref(), Some("dpl_old"));
}

#[test]
fn a_dry_run_names_project_team_ref_and_target_and_calls_nothing() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, Some("dpl_old"));
    let out = deploy(&world, &stub, "v3", &["--dry-run"]);
    let all = text(&out);
    assert!(all.contains("maily/maily-frontend@v3"), "{all}");
    assert!(all.contains("prj_maily (team team_maily)"), "{all}");
    assert!(all.contains("target production"), "{all}");
    assert!(
        stub.vercel.state().log.is_empty(),
        "{:?}",
        stub.vercel.state().log
    );
}

// The client alone, against the same stub.

fn client(world: &World, stub: &Stub) -> Vercel {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = world;
    Vercel::new(&vercel::Settings {
        api_url: stub.server.uri(),
        token: TOKEN.into(),
        team_id: Some(TEAM.into()),
    })
    .unwrap()
}

#[test]
fn a_429_is_waited_out_until_its_reset_header() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, None);
    stub.vercel
        .state()
        .deployments
        .insert("dpl_x".into(), (Script(vec!["READY"]), 0, "main".into()));
    stub.vercel.state().rate_limited = 1;
    let api = client(&world, &stub);
    let d = world.rt.block_on(api.deployment("dpl_x")).unwrap();
    assert_eq!(vercel::progress(&d), Progress::Ready);
    let s = stub.vercel.state();
    let reset = UNIX_EPOCH + Duration::from_secs(s.reset_sent.unwrap());
    let retried = s.read_after_limit.unwrap();
    assert!(retried >= reset, "retried before X-RateLimit-Reset");
    assert!(
        retried.duration_since(reset).unwrap() < Duration::from_secs(2),
        "and not long after it"
    );
    assert_eq!(s.log, vec!["GET /v13/deployments/dpl_x"; 2]);
}

#[test]
fn a_429_without_a_reset_header_is_retried_with_backoff() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, None);
    stub.vercel
        .state()
        .deployments
        .insert("dpl_w".into(), (Script(vec!["READY"]), 0, "main".into()));
    stub.vercel.state().rate_limited = 2;
    stub.vercel.state().omit_reset = true;
    let api = client(&world, &stub);
    let d = world.rt.block_on(api.deployment("dpl_w")).unwrap();
    assert_eq!(vercel::progress(&d), Progress::Ready);
    assert_eq!(stub.vercel.state().log.len(), 3);
}

#[test]
fn a_rate_limit_reset_past_the_cap_is_waited_out_in_capped_steps() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, None);
    stub.vercel
        .state()
        .deployments
        .insert("dpl_v".into(), (Script(vec!["READY"]), 0, "main".into()));
    stub.vercel.state().rate_limited = 1;
    // Over a second away: past a 1 s cap, within five waits of it.
    stub.vercel.state().reset_in = 2;
    let api = client(&world, &stub).with_rate_limit_cap(Duration::from_secs(1));
    let d = world.rt.block_on(api.deployment("dpl_v")).unwrap();
    assert_eq!(vercel::progress(&d), Progress::Ready);
    assert_eq!(stub.vercel.state().log.len(), 2);
}

#[test]
fn a_rate_limit_reset_hours_away_fails_at_once_saying_when() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, None);
    stub.vercel
        .state()
        .deployments
        .insert("dpl_v".into(), (Script(vec!["READY"]), 0, "main".into()));
    stub.vercel.state().rate_limited = 1;
    stub.vercel.state().reset_in = 3600;
    let api = client(&world, &stub).with_rate_limit_cap(Duration::from_millis(300));
    let err = world.rt.block_on(api.deployment("dpl_v")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("HTTP 429"), "{msg}");
    assert!(msg.contains("the limit resets at "), "{msg}");
    assert!(msg.contains("(in 59m") || msg.contains("(in 1h"), "{msg}");
    assert!(msg.contains("run again after it"), "{msg}");
    // Asked once: no wait that could not reach the reset.
    assert_eq!(stub.vercel.state().log.len(), 1);
}

#[test]
fn a_5xx_is_retried_with_backoff() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, None);
    stub.vercel
        .state()
        .deployments
        .insert("dpl_z".into(), (Script(vec!["BUILDING"]), 0, "main".into()));
    stub.vercel.state().server_errors = 2;
    let api = client(&world, &stub);
    let d = world.rt.block_on(api.deployment("dpl_z")).unwrap();
    assert_eq!(
        vercel::progress(&d),
        Progress::Pending(ReadyState::Building)
    );
    assert_eq!(stub.vercel.state().log.len(), 3);

    // A 5xx that does not stop is reported, with Vercel's message.
    stub.vercel.state().server_errors = 100;
    let err = world.rt.block_on(api.deployment("dpl_z")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("HTTP 502 Bad gateway (bad_gateway)"), "{msg}");
    assert!(msg.contains("gave up after retrying"), "{msg}");
}

#[test]
fn a_build_is_followed_from_queued_through_building_to_ready() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, None);
    stub.vercel.state().deployments.insert(
        "dpl_y".into(),
        (
            Script(vec!["QUEUED", "INITIALIZING", "BUILDING", "READY"]),
            0,
            "main".into(),
        ),
    );
    let api = client(&world, &stub);
    let mut seen = Vec::new();
    let (d, p) = world
        .rt
        .block_on(api.wait_until_done(
            "dpl_y",
            Duration::from_millis(10),
            Duration::from_secs(10),
            |s| seen.push(s.clone()),
        ))
        .unwrap();
    assert_eq!(p, Progress::Ready);
    assert_eq!(d.url.as_deref(), Some("maily-dpl_y.vercel.app"));
    assert_eq!(
        seen,
        vec![
            ReadyState::Queued,
            ReadyState::Initializing,
            ReadyState::Building,
            ReadyState::Ready
        ]
    );
    assert_clean(&stub);
}

#[test]
fn a_run_resumed_at_shift_traffic_promotes_the_frontend_an_earlier_run_built() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, Some("dpl_old"));
    let built = deploy(&world, &stub, "v2", &["--skip-traffic"]);
    assert_exit(&built, 0);
    assert!(stub.vercel.promotions().is_empty());

    let out = deploy(&world, &stub, "v2", &["--from", "shift-traffic"]);
    assert_exit(&out, 0);
    assert_clean(&stub);
    assert_eq!(stub.vercel.promotions(), vec!["dpl_1v2"]);
    assert_eq!(stub.vercel.state().production.as_deref(), Some("dpl_1v2"));
    let record = frontend_of(&world, &deployment_id_of(&out));
    assert_eq!(record.deployment_id, "dpl_1v2");
    assert_eq!(record.previous.map(|p| p.id), Some("dpl_old".into()));

    // A resume that builds another ref promotes nothing it did not build.
    let world = World::new(Duration::from_millis(300));
    let stub = self::stub(&world, Some("dpl_old"));
    let built = deploy(&world, &stub, "v2", &["--skip-traffic"]);
    assert_exit(&built, 0);
    let env = env_with(&world, &stub, "v2", &[("FRONTEND_GIT_REF", "release-2")]);
    let out = world
        .maily()
        .args(["staging", "--from", "shift-traffic", "--env-file"])
        .arg(&env)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no earlier run built the frontend from release-2"),
        "{}",
        text(&out)
    );
    assert!(stub.vercel.promotions().is_empty());
}

#[test]
fn a_run_killed_after_promoting_is_put_back_by_the_next_one() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, Some("dpl_old"));
    let first = deploy(&world, &stub, "v1", &["--lock-ttl", "2s"]);
    assert_exit(&first, 0);

    // Vercel accepts the next promotion and never finishes it: the run
    // waits for it, and is killed while it waits.
    stub.vercel.state().promotion_lag = usize::MAX;
    let env = env(&world, &stub, "v2");
    let mut child = world
        .process()
        .arg("staging")
        .args(WITH_FRONTEND)
        .args(["--lock-ttl", "2s", "--env-file"])
        .arg(&env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stub.vercel.promotions().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never promoted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let killed = world.snapshots()[0].clone();
    assert_eq!(killed.outcome, Outcome::InProgress);
    let record = killed.frontend.clone().unwrap();
    assert!(
        record.promoted,
        "the promotion is in the snapshot before Vercel hears of it"
    );

    stub.vercel.state().promotion_lag = 0;
    std::thread::sleep(Duration::from_millis(2200)); // the lease expires
    let out = deploy(&world, &stub, "v2", &["--lock-ttl", "2s"]);
    assert_exit(&out, 0);
    assert_clean(&stub);
    // The next run put the old frontend back, then promoted its own build.
    assert_eq!(
        stub.vercel.promotions(),
        vec!["dpl_1v1", "dpl_2v2", "dpl_1v1", "dpl_3v2"]
    );
    let killed = world
        .snapshots()
        .into_iter()
        .find(|s| s.deployment_id == killed.deployment_id)
        .unwrap();
    assert_eq!(killed.outcome, Outcome::Abandoned);
    let record = killed.frontend.clone().unwrap();
    assert!(record.undone, "{record:?}");
}
