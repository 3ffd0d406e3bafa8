//! verify as a user runs it: the binary deploying against kubesim, checking
//! the new slot through a gateway stub (the route's preview header), the
//! real PostgreSQL, Redis and RabbitMQ of this machine, and JSON-RPC stubs.

use std::time::Duration;

use serde_json::Value;

use crate::support;
use crate::support::verify::{Stubs, declare_queues, stubs};
use crate::support::*;

fn psql(sql: &str) {
    support::postgres::psql(sql, "postgres");
}

fn env(world: &World, s: &Stubs, db: &str, tag: &str, redis: &str) -> std::path::PathBuf {
    env_with(
        world,
        s,
        db,
        tag,
        redis,
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    )
}

fn env_with(
    world: &World,
    s: &Stubs,
    db: &str,
    tag: &str,
    redis: &str,
    amqp: &str,
) -> std::path::PathBuf {
    world.env_file(&[
        ("IMAGE_TAG", tag),
        ("DATABASE_URL", &support::postgres::url_of(db, None)),
        (
            "DATABASE_BACKUP_URL",
            &format!("file://{}/backups/", world.dir.path().display()),
        ),
        ("REDIS_URL", redis),
        ("RABBITMQ_URL", amqp),
        ("ETHEREUM_RPC_URL", &s.ethereum.uri()),
        ("POLYGON_RPC_URL", &s.polygon.uri()),
        ("VERIFY_BASE_URL", &s.gateway.uri()),
    ])
}

/// The verify phase of a run's JSON report.
fn verify_phase(out: &std::process::Output) -> Value {
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "verify")
        .cloned()
        .unwrap_or_else(|| panic!("no verify phase: {report}"))
}

/// A phase's detail rows, one per check.
fn rows_of(phase: &Value) -> Vec<&str> {
    phase["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect()
}

const PHASES: &[&str] = &[
    "--skip-provision",
    "--skip-frontend",
    "--skip-ai",
    "--skip-monitor",
];

#[test]
fn a_healthy_new_slot_passes_every_check_and_users_move() {
    let world = World::new(Duration::from_millis(300));
    let db = format!("maily_verify_{}", rand_suffix().replace('-', "_"));
    psql(&format!("CREATE DATABASE {db}"));
    declare_queues(&world, "amqp://guest:guest@127.0.0.1:5672");
    let s = stubs(&world, "v1", "v0", "0x6080604052");
    let out = world
        .maily()
        .arg("staging")
        .args(PHASES)
        .args(["--output", "json", "--env-file"])
        .arg(env(&world, &s, &db, "v1", "redis://127.0.0.1:6379/0"))
        .output()
        .unwrap();
    psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    assert_exit(&out, 0);
    let verify = verify_phase(&out);
    let rows = rows_of(&verify);
    for name in [
        "health api",
        "health email-sender",
        "http api version",
        "postgres",
        "redis",
        "rabbitmq",
        "ethereum",
        "polygon",
    ] {
        assert!(
            rows.iter().any(|r| r.starts_with("✓") && r.contains(name)),
            "{name} passed: {rows:#?}"
        );
    }
    assert!(rows.iter().any(|r| r.contains("PONG")), "{rows:#?}");
    assert!(
        rows.iter().any(|r| r.starts_with("- certificates")
            && r.contains("skipped: cert-manager is not installed")),
        "{rows:#?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("- frontend") && r.contains("skipped")),
        "{rows:#?}"
    );
    assert!(
        verify["summary"].as_str().unwrap().contains("2 skipped"),
        "{verify}"
    );
    assert!(rows.iter().any(|r| r.contains("chain 137")), "{rows:#?}");
    assert_eq!(
        world.selected_slot("api").as_deref(),
        Some("blue"),
        "users moved after verify"
    );
}

/// The user `scripts/setup.d/services.sh` gives RabbitMQ, whose password
/// holds every character a URL must percent-encode in its userinfo.
const ENCODED_USER: &str = "maily-encoded";
const ENCODED_PASSWORD: &str = "p@ss/w:rd#1";

#[test]
fn a_rabbitmq_password_that_needs_percent_encoding_logs_in_and_is_never_shown() {
    let world = World::new(Duration::from_millis(300));
    let db = format!("maily_verify_{}", rand_suffix().replace('-', "_"));
    psql(&format!("CREATE DATABASE {db}"));
    declare_queues(&world, "amqp://guest:guest@127.0.0.1:5672");
    let s = stubs(&world, "v1", "v0", "0x6080604052");
    let encoded: String = ENCODED_PASSWORD
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let amqp = format!("amqp://{ENCODED_USER}:{encoded}@127.0.0.1:5672/%2f");
    let out = world
        .maily()
        .arg("staging")
        .args(PHASES)
        .args(["--output", "json", "-v", "--env-file"])
        .arg(env_with(
            &world,
            &s,
            &db,
            "v1",
            "redis://127.0.0.1:6379/0",
            &amqp,
        ))
        .output()
        .unwrap();
    psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    assert_exit(&out, 0);
    let verify = verify_phase(&out);
    assert!(
        rows_of(&verify).iter().any(|r| r.starts_with("✓ rabbitmq")),
        "{verify}"
    );
    for secret in [ENCODED_PASSWORD, encoded.as_str()] {
        assert!(
            !text(&out).contains(secret),
            "{secret} shown: {}",
            text(&out)
        );
    }
}

#[test]
fn every_failed_check_is_reported_together_and_users_stay() {
    let world = World::new(Duration::from_millis(300));
    let db = format!("maily_verify_{}", rand_suffix().replace('-', "_"));
    psql(&format!("CREATE DATABASE {db}"));
    // Deploy v1 first, without verify, so users are on blue.
    let s = stubs(&world, "v1", "v1", "0x");
    let first = world
        .maily()
        .arg("staging")
        .args(BACKEND_ONLY)
        .arg("--env-file")
        .arg(env(&world, &s, &db, "v1", "redis://127.0.0.1:6379/0"))
        .output()
        .unwrap();
    assert_exit(&first, 0);

    // Green answers with the old version (wrong routing), Polygon's
    // contract is empty, Redis and RabbitMQ are not there, and the schema
    // was never migrated.
    let out = world
        .maily()
        .arg("staging")
        .args([
            "--skip-provision",
            "--skip-migrate",
            "--skip-frontend",
            "--skip-ai",
            "--skip-monitor",
        ])
        .args(["--output", "json", "--env-file"])
        .arg(env_with(
            &world,
            &s,
            &db,
            "v2",
            "redis://127.0.0.1:1/0",
            "amqp://guest:guest@127.0.0.1:1/%2f",
        ))
        .output()
        .unwrap();
    psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    assert_exit(&out, maily_deploy::exit_code::PHASE_FAILED_ROLLED_BACK);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems: Vec<(String, String)> = report["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["subject"].as_str().unwrap().to_string(),
                p["problem"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let find = |name: &str| {
        problems
            .iter()
            .find(|(s, _)| s == name)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("{name} not reported: {problems:#?}"))
    };
    assert!(
        find("health api").contains("reports version v1, not v2"),
        "{problems:#?}"
    );
    assert!(
        find("polygon").contains("no contract code"),
        "{problems:#?}"
    );
    assert!(
        find("redis").contains("cannot connect to Redis"),
        "{problems:#?}"
    );
    assert!(find("postgres").contains("run migrate"), "{problems:#?}");
    assert!(
        find("rabbitmq").contains("cannot connect to RabbitMQ"),
        "{problems:#?}"
    );
    assert!(
        !problems.iter().any(|(s, _)| s == "ethereum"),
        "ethereum passed: {problems:#?}"
    );
    assert_eq!(
        world.selected_slot("api").as_deref(),
        Some("blue"),
        "users stay on blue"
    );
}
