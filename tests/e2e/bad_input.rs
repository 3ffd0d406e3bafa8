//! Bad input as a fuzzer (or a bad day) produces it: bytes that are not
//! UTF-8, snapshots broken in every way, megabyte-long values. Each is a
//! named refusal (exit 3, or 2 for the command line) that says where the
//! problem is without echoing it, never an unexpected failure (exit 1) and
//! never a blow-up.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use maily_deploy::exit_code;

use crate::support::*;

/// The binary with a clean environment and no cluster.
fn offline() -> Command {
    let mut cmd = Command::cargo_bin("maily-deploy").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .current_dir(repo());
    cmd
}

/// `validate staging` with `args`, refused as a configuration problem
/// (exit 3): what it printed.
#[track_caller]
fn refused_by_validate(args: &[&str]) -> String {
    let out = offline()
        .args(["validate", "staging"])
        .args(args)
        .output()
        .unwrap();
    assert_exit(&out, exit_code::CONFIG);
    text(&out)
}

/// `.env.example` with these lines replaced, as bytes, in `dir`.
fn env_file(dir: &Path, changes: &[(&str, &[u8])]) -> PathBuf {
    let text = std::fs::read_to_string(repo().join(".env.example")).unwrap();
    let mut bytes: Vec<u8> = Vec::new();
    for line in text.lines() {
        if !changes
            .iter()
            .any(|(k, _)| line.starts_with(&format!("{k}=")))
        {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
    }
    for (k, v) in changes {
        bytes.extend_from_slice(k.as_bytes());
        bytes.push(b'=');
        bytes.extend_from_slice(v);
        bytes.push(b'\n');
    }
    let path = dir.join(format!("env-{}", rand_suffix()));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn bytes_that_are_not_utf8_in_an_env_file_or_a_profile_exit_3_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(
        dir.path(),
        &[("VERCEL_TOKEN", b"tok-\xff\xfe-secret-value")],
    );
    let lines = std::fs::read(&env).unwrap();
    let line = lines.split(|b| *b == b'\n').count() - 1;
    let all = refused_by_validate(&["--env-file", path_str(&env)]);
    assert!(
        all.contains(&format!("{}:{line} is not UTF-8 text", env.display())),
        "{all}"
    );
    assert!(
        !all.contains("secret-value"),
        "the line is not shown: {all}"
    );

    let manifests = dir.path().join("manifests");
    copy_dir(&repo().join("manifests"), &manifests);
    let profile = manifests.join("environments/staging.yaml");
    let mut yaml = std::fs::read(&profile).unwrap();
    yaml.extend_from_slice(b"# caf\xe9 (latin-1)\n");
    let line = yaml.split(|b| *b == b'\n').count() - 1;
    std::fs::write(&profile, yaml).unwrap();
    let all = refused_by_validate(&[
        "--env-file",
        ".env.example",
        "--manifests-dir",
        path_str(&manifests),
    ]);
    assert!(
        all.contains(&format!("{}:{line} is not UTF-8 text", profile.display())),
        "{all}"
    );
    assert!(all.contains("byte 0xe9 at column 6"), "{all}");
}

/// A variable the tool reads, set in the environment to bytes that are not
/// UTF-8, is named (exit 3) with the other problems, never its bytes: the
/// environment wins over the env file, so the file's value must not quietly
/// stand in for it, and without a file it is not "not set".
#[test]
fn a_variable_in_the_environment_that_is_not_utf8_is_named_not_replaced() {
    use std::os::unix::ffi::OsStringExt;
    let tag = std::ffi::OsString::from_vec(b"v2-sekrit-\xff".to_vec());
    let out = offline()
        .env("IMAGE_TAG", &tag)
        .args(["staging", "--env-file", ".env.example", "--dry-run"])
        .output()
        .unwrap();
    assert_exit(&out, exit_code::CONFIG);
    let all = text(&out);
    assert!(
        all.contains("IMAGE_TAG in the environment is not UTF-8 text, so it cannot be read"),
        "{all}"
    );
    assert!(
        all.contains("fix: export IMAGE_TAG as UTF-8 text, or unset it"),
        "{all}"
    );
    assert!(!all.contains("sekrit"), "its bytes are not shown: {all}");
    assert!(!all.contains("v0.0.0-example"), "nothing is planned: {all}");

    // Without an env file: the same, with the variables that are missing.
    let dir = tempfile::tempdir().unwrap();
    let out = offline()
        .env("IMAGE_TAG", &tag)
        .current_dir(dir.path())
        .args(["validate", "staging", "--manifests-dir"])
        .arg(repo().join("manifests"))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::CONFIG);
    let all = text(&out);
    assert!(
        all.contains("IMAGE_TAG in the environment is not UTF-8 text"),
        "{all}"
    );
    assert!(all.contains("IMAGE_REGISTRY is not set"), "{all}");
    assert!(!all.contains("IMAGE_TAG is not set"), "{all}");
    assert!(!all.contains("sekrit"), "{all}");
}

/// A quote left open is named at the line where it opens; the lines after
/// it are still read and checked, in the same report; the value is not shown.
#[test]
fn a_quote_left_open_is_named_by_its_line_and_the_lines_after_it_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(
        dir.path(),
        &[
            (
                "RABBITMQ_URL",
                b"\"amqps://maily:hunter2-sekrit@mq.example.invalid:5671/maily",
            ),
            ("ROLLOUT_TIMEOUT", b"0s"),
            ("DATABASE_STATEMENT_TIMEOUT", b"25d"),
        ],
    );
    let bytes = std::fs::read(&env).unwrap();
    let line = bytes.split(|b| *b == b'\n').count() - 3;
    let all = refused_by_validate(&["--env-file", path_str(&env)]);
    assert!(
        all.contains(&format!(
            "{}:{line} opens a double quote (\") in the value of RABBITMQ_URL that is never closed on this line",
            env.display()
        )),
        "{all}"
    );
    assert!(
        all.contains("end the value with \" on the same line"),
        "{all}"
    );
    assert!(all.contains("ROLLOUT_TIMEOUT is zero"), "{all}");
    assert!(
        all.contains("DATABASE_STATEMENT_TIMEOUT is longer"),
        "{all}"
    );
    assert!(!all.contains("hunter2"), "{all}");
}

/// A configuration path that names no configuration file (a dump, a log)
/// fails at once, by its size, without being read into memory; so does a
/// manifest of the same size.
#[test]
fn a_configuration_file_far_larger_than_any_fails_at_once_by_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("production.dump");
    std::fs::write(&env, "A=1\n".repeat(2 << 20)).unwrap();
    let all = refused_by_validate(&["--env-file", path_str(&env)]);
    assert!(
        all.contains(&format!(
            "the env file {} is over 4194304 bytes",
            env.display()
        )),
        "{all}"
    );

    let manifests = dir.path().join("manifests");
    copy_dir(&repo().join("manifests"), &manifests);
    std::fs::write(
        manifests.join("platform/99-huge.yaml"),
        format!("# {}\n", "x".repeat(5 << 20)),
    )
    .unwrap();
    let out = offline()
        .args(["staging", "--dry-run", "--env-file", ".env.example"])
        .arg("--manifests-dir")
        .arg(&manifests)
        .output()
        .unwrap();
    assert_exit(&out, exit_code::CONFIG);
    let all = text(&out);
    assert!(all.contains("99-huge.yaml is over 4194304 bytes"), "{all}");
}

#[test]
fn oversized_input_is_named_by_its_size_never_echoed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "A".repeat(1 << 20);
    let huge_tag = "v".repeat(1 << 20);

    // A 1 MB variable name: a warning about an unknown name, clipped.
    let env = env_file(dir.path(), &[(&huge, b"x")]);
    let out = offline()
        .args(["validate", "staging", "--env-file"])
        .arg(&env)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::SUCCESS);
    let all = text(&out);
    assert!(all.len() < 20_000, "{} bytes of output", all.len());
    assert!(all.contains("(1048576 bytes) is not a variable"), "{all}");

    // A 1 MB image tag: refused by name, shown by size.
    let env = env_file(dir.path(), &[("IMAGE_TAG", huge_tag.as_bytes())]);
    for format in ["human", "json"] {
        let out = offline()
            .args(["validate", "staging", "--output", format, "--env-file"])
            .arg(&env)
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap();
        assert_exit(&out, exit_code::CONFIG);
        let all = text(&out);
        assert!(
            all.len() < 20_000,
            "{format}: {} bytes of output",
            all.len()
        );
        assert!(all.contains("IMAGE_TAG"), "{all}");
        assert!(all.contains("(1048576 bytes)"), "{all}");
    }

    // A rollback id of 100 KB (an argument may not exceed 128 KiB).
    let id = format!("staging-{}", "9".repeat(100_000));
    let out = offline()
        .args(["rollback", "staging", &id])
        .output()
        .unwrap();
    assert_exit(&out, exit_code::USAGE);
    let all = text(&out);
    assert!(all.len() < 2_000, "{} bytes of output", all.len());
    assert!(all.contains("(100008 bytes)"), "{all}");
}

/// A 100 KB value on the command line, wherever it goes (a path, a flag's
/// value clap refuses, an unknown flag), is echoed as its start and size:
/// the README's 80-byte rule, for messages built anywhere.
#[test]
fn an_oversized_command_line_value_is_never_echoed_whole() {
    let long = "a".repeat(100_000);
    let path = format!("/{long}");
    let run = |args: &[&str]| {
        let out = offline()
            .args(args)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        (out.status.code(), text(&out))
    };
    let head = |all: &str| all.chars().take(2000).collect::<String>();
    // Paths the tool reads: named by their start and size.
    for (args, code) in [
        (
            vec![
                "staging",
                "--dry-run",
                "--env-file",
                ".env.example",
                "--kubeconfig",
                &path,
            ],
            exit_code::CONFIG,
        ),
        (
            vec!["validate", "staging", "--env-file", &path],
            exit_code::CONFIG,
        ),
        (
            vec![
                "validate",
                "staging",
                "--env-file",
                ".env.example",
                "--manifests-dir",
                &path,
            ],
            exit_code::CONFIG,
        ),
    ] {
        let (got, all) = run(&args);
        assert_eq!(got, Some(code), "{}", head(&all));
        assert!(
            all.len() < 20_000,
            "{:?}: {} bytes of output",
            &args[..3],
            all.len()
        );
        assert!(all.contains("… (100001 bytes)"), "{}", head(&all));
    }
    // Values clap refuses, and an unknown flag.
    let unknown = format!("--{long}");
    let joined = format!("--timeout={long}");
    for args in [
        vec!["staging", "--timeout", &long],
        vec!["staging", &joined],
        vec!["staging", "--lock-ttl", &long],
        vec!["staging", "--output", &long],
        vec!["staging", "--only", &long],
        vec!["staging", "--from", &long],
        vec!["staging", "--keep-snapshots", &long],
        vec!["staging", "--traffic-steps", &long],
        vec!["history", "staging", "--max", &long],
        vec!["staging", &unknown],
    ] {
        let (got, all) = run(&args);
        assert_eq!(got, Some(exit_code::USAGE), "{}", head(&all));
        assert!(
            all.len() < 2_000,
            "{:?}: {} bytes of output",
            &args[..2],
            all.len()
        );
        assert!(all.contains(" bytes)"), "{all}");
    }
}

#[test]
fn profile_values_past_kubernetes_limits_are_refused_by_validate_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    copy_dir(&repo().join("manifests"), &manifests);
    let profile = manifests.join("environments/staging.yaml");
    let yaml = std::fs::read_to_string(&profile)
        .unwrap()
        .replace("namespace: maily-staging", "namespace: 12345")
        .replace("replicas: 1\n", "replicas: 2147483648\n")
        .replace("    path: /webhooks", "    path: /webhooks//bounces");
    std::fs::write(&profile, yaml).unwrap();
    for command in [&["validate", "staging"][..], &["staging", "--dry-run"][..]] {
        let out = offline()
            .args(command)
            .args(["--env-file", ".env.example", "--kubeconfig", "/nonexistent"])
            .arg("--manifests-dir")
            .arg(&manifests)
            .output()
            .unwrap();
        assert_exit(&out, exit_code::CONFIG);
        let all = text(&out);
        for expected in [
            "staging.yaml: namespace is 12345, which Kubernetes accepts as a name but the manifests' YAML",
            "staging.yaml: replicas is 2147483648, over 715827882",
            "staging.yaml: services.email-sender.path is not a plain path prefix",
        ] {
            assert!(
                all.contains(expected),
                "{command:?}: {expected:?} in:\n{all}"
            );
        }
    }
}

/// Durations under the unit they are used in once passed `validate` and
/// became 0 (`SET lock_timeout = 0` is no limit at all); NaN and infinite
/// thresholds and limits nothing reaches switched the analysis gate off.
/// Each is refused, every one in the same report, exit 3.
#[test]
fn durations_under_their_unit_and_thresholds_that_cannot_gate_are_refused_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(
        dir.path(),
        &[
            ("DATABASE_LOCK_TIMEOUT", b"500us"),
            ("DATABASE_STATEMENT_TIMEOUT", b"999999ns"),
            ("ROLLOUT_TIMEOUT", b"900ms"),
            ("VERCEL_POLL_INTERVAL", b"1ns"),
            ("IMAGE_PULL_GRACE", b"1500ms"),
        ],
    );
    let all = refused_by_validate(&["--env-file", path_str(&env)]);
    for expected in [
        "DATABASE_LOCK_TIMEOUT is under 1ms: PostgreSQL takes lock_timeout in whole milliseconds, and 0 would mean no limit (got \"500us\")",
        "DATABASE_STATEMENT_TIMEOUT is under 1ms: PostgreSQL takes statement_timeout in whole milliseconds, and 0 would mean no limit (got \"999999ns\")",
        "ROLLOUT_TIMEOUT is under 1s: each Deployment's progressDeadlineSeconds takes it in whole seconds",
        "VERCEL_POLL_INTERVAL is under 1s: ",
        "IMAGE_PULL_GRACE is not a whole number of seconds: ",
        "fix: set DATABASE_LOCK_TIMEOUT to a duration in whole milliseconds, at least 1ms",
    ] {
        assert!(all.contains(expected), "{expected:?} in:\n{all}");
    }

    let manifests = dir.path().join("manifests");
    copy_dir(&repo().join("manifests"), &manifests);
    let profile = manifests.join("environments/staging.yaml");
    let yaml = std::fs::read_to_string(&profile)
        .unwrap()
        .replace("  pause: 30s\n", "  pause: 1ms\n")
        .replace("  grace: 2m\n", "  grace: 1500ms\n")
        .replace("failure_limit: 1\n", "failure_limit: 4294967295\n")
        .replace("      min: 20\n", "      min: 9223372036854775808\n")
        .replace("        max: 1\n", "        max: .nan\n")
        .replace(
            "        max: 1000\n",
            "        min: 5000\n        max: .inf\n",
        );
    std::fs::write(&profile, yaml).unwrap();
    let all = refused_by_validate(&[
        "--env-file",
        ".env.example",
        "--manifests-dir",
        path_str(&manifests),
    ]);
    for expected in [
        "staging.yaml: traffic.pause `1ms` is under 1s: ",
        "staging.yaml: traffic.grace `1500ms` is not a whole number of seconds: ",
        "staging.yaml: traffic.analysis.samples.min is 9223372036854775808, over 9007199254740992 (2^53)",
        "staging.yaml: traffic.analysis.metrics[0] (error-rate).max is .nan: no comparison with NaN is true, so the metric could never fail",
        "staging.yaml: traffic.analysis.metrics[1] (p99-latency).max is .inf: ",
    ] {
        assert!(all.contains(expected), "{expected:?} in:\n{all}");
    }

    // With a good pause, the failure limit is weighed against it.
    let yaml = std::fs::read_to_string(&profile)
        .unwrap()
        .replace("  pause: 1ms\n", "  pause: 30s\n");
    std::fs::write(&profile, yaml).unwrap();
    let all = refused_by_validate(&[
        "--env-file",
        ".env.example",
        "--manifests-dir",
        path_str(&manifests),
    ]);
    assert!(
        all.contains("staging.yaml: traffic.analysis.failure_limit is 4294967295, but a step takes at most 10 measurement(s)"),
        "{all}"
    );
    assert!(all.contains("(error-rate).max is .nan"), "{all}");
}

/// Store `data` as the snapshot Secret of `id`, as a broken writer (or a
/// hostile one) might have left it.
fn put_raw_snapshot(world: &World, id: &str, data: Vec<u8>) {
    let api: Api<Secret> = Api::namespaced(world.client.clone(), &world.namespace);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(format!("maily-deploy.snapshot.{id}")),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "maily-deploy".to_string(),
                ),
                ("maily.ai/environment".to_string(), "staging".to_string()),
                ("maily.ai/deployment-id".to_string(), id.to_string()),
                ("maily.ai/outcome".to_string(), "succeeded".to_string()),
            ])),
            ..Default::default()
        },
        type_: Some("maily.ai/deployment-snapshot".into()),
        data: Some(BTreeMap::from([(
            "snapshot.json.gz".to_string(),
            ByteString(data),
        )])),
        ..Default::default()
    };
    world
        .rt
        .block_on(api.create(&PostParams::default(), &secret))
        .unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// 512 MiB of zeros, gzipped by the system's gzip: about half a megabyte.
fn gzip_bomb() -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .args(["-c", "head -c 536870912 /dev/zero | gzip -9"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.len() < 900_000, "{} bytes", out.stdout.len());
    out.stdout
}

/// The peak resident memory of a command, in KiB, and its output.
fn peak_rss(mut cmd: std::process::Command) -> (u64, std::process::Output) {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string(&status) {
                    let hwm = text
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
                    peak = peak.max(hwm.unwrap_or(0));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let out = child.wait_with_output().unwrap();
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    (watcher.join().unwrap(), out)
}

#[test]
fn snapshots_are_listed_a_page_at_a_time_the_newest_kept_the_unreadable_left_in_place() {
    use maily_deploy::k8s::snapshot_store::{ListBounds, SnapshotStore};
    use maily_deploy::pipeline::snapshot::Snapshot;
    let world = World::new(Duration::from_millis(200));
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(world.client.clone());
    let namespace = k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta {
            name: Some(world.namespace.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    world
        .rt
        .block_on(namespaces.create(&PostParams::default(), &namespace))
        .unwrap();
    let store = SnapshotStore::new(world.client.clone(), &world.namespace, "staging");
    let fixture =
        std::fs::read_to_string(repo().join("tests/fixtures/snapshots/in-progress-v1.json"))
            .unwrap();
    let template: Snapshot = serde_json::from_str(&fixture).unwrap();
    let id = |i: usize| format!("staging-20250101-{:02}{:02}00", i / 60, i % 60);
    for i in 0..120 {
        let mut s = template.clone();
        s.environment = "staging".into();
        s.deployment_id = id(i).parse().unwrap();
        world.rt.block_on(store.put(&s)).unwrap();
    }
    put_raw_snapshot(&world, &id(120), b"not gzip".to_vec());
    let lists = || {
        world
            .sim()
            .control()
            .requests()
            .iter()
            .filter(|r| r.verb == "list" && r.resource == "secrets")
            .count()
    };

    let before = lists();
    let kept = world
        .rt
        .block_on(store.list_within(&ListBounds {
            page: 7,
            most_pages: 100,
            most_kept: 50,
        }))
        .unwrap();
    assert_eq!(lists() - before, 121_usize.div_ceil(7), "a request a page");
    let ids: Vec<String> = kept.iter().map(|s| s.deployment_id.to_string()).collect();
    let newest: Vec<String> = (70..120).rev().map(id).collect();
    assert_eq!(ids, newest, "the newest 50, newest first");

    // Past the pages a listing reads: refused with the way out.
    let err = world
        .rt
        .block_on(store.list_within(&ListBounds {
            page: 7,
            most_pages: 3,
            most_kept: 1000,
        }))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("holds more than 21 snapshot Secrets of staging"),
        "{err}"
    );
    // The unreadable one was skipped, never deleted.
    let api: Api<Secret> = Api::namespaced(world.client.clone(), &world.namespace);
    assert!(
        world
            .rt
            .block_on(api.get_opt(&format!("maily-deploy.snapshot.{}", id(120))))
            .unwrap()
            .is_some()
    );
}

#[test]
fn corrupt_snapshots_are_skipped_by_history_and_refused_by_rollback_naming_usable_ids() {
    let world = World::new(Duration::from_millis(200));
    let good = world.deploy("v1", &[]);
    assert_exit(&good, exit_code::SUCCESS);
    let good_id = world.deployment_id(&good);

    let valid = {
        let mut json = serde_json::to_value(&world.snapshots()[0]).unwrap();
        json["deployment_id"] = "staging-20200101-000002".into();
        serde_json::to_vec(&json).unwrap()
    };
    let broken: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "staging-20200101-000001",
            b"{\"schema\":1}".to_vec(),
            "not gzip",
        ),
        (
            "staging-20200101-000002",
            gzip(&valid)[..200].to_vec(),
            "truncated",
        ),
        ("staging-20200101-000003", gzip(b"<html>"), "not JSON"),
        (
            "staging-20200101-000004",
            gzip(br#"{"schema": 1, "releases": []}"#),
            "not a snapshot",
        ),
        (
            "staging-20200101-000005",
            gzip_bomb(),
            "more than 16777216 bytes (16 MiB)",
        ),
    ];
    for (id, data, _) in &broken {
        put_raw_snapshot(&world, id, data.clone());
    }

    // history: the good one listed, each broken one a warning by name, and
    // the bomb read no further than the cap.
    let mut history = world.process();
    history.args(["history", "staging"]);
    let (peak_kib, out) = peak_rss(history);
    assert_exit(&out, exit_code::SUCCESS);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains(&good_id), "{stdout}");
    for (id, _, why) in &broken {
        assert!(
            stderr.contains(&format!("skipping the snapshot of {id}")) && stderr.contains(why),
            "{id} ({why}) in:\n{stderr}"
        );
    }
    assert!(
        peak_kib > 1024,
        "the watcher saw the process: {peak_kib} KiB"
    );
    assert!(
        peak_kib < 200 * 1024,
        "history peaked at {} MiB",
        peak_kib / 1024
    );

    // rollback: a named refusal that lists what can be used.
    for (id, _, why) in &broken {
        let out = world
            .maily()
            .args(["rollback", "staging", id])
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert_exit(&out, exit_code::CONFIG);
        let all = text(&out);
        assert!(
            all.contains(&format!("the snapshot of {id} cannot be used")),
            "{all}"
        );
        assert!(all.contains(why), "{why}: {all}");
        assert!(
            all.lines().any(|l| l.trim_start().starts_with(&good_id)
                && l.contains("release v1")
                && l.ends_with("succeeded")),
            "lists the usable ids, one a line: {all}"
        );
    }
    assert_eq!(
        world
            .image("api-blue")
            .as_deref()
            .map(|i| i.ends_with(":v1")),
        Some(true)
    );
}
