//! The reliability run: lock races, SIGKILLs, signals under load, API
//! faults and leak hunts, many times each, against kubesim, with a table of
//! what held. `scripts/reliability` runs it; it takes minutes, so the
//! normal suite skips it (the suite's own tests cover each case a few
//! times). `MAILY_RELIABILITY_SCALE` multiplies the trial counts.

use std::io::{BufRead, BufReader};
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use kubesim::ApiFault;
use maily_deploy::exit_code;
use maily_deploy::pipeline::snapshot::Outcome;

use crate::support::vercel::{TOKEN, stub};
use crate::support::*;

/// One row of the table: what was tried, how often, how often it held.
struct Row {
    what: &'static str,
    trials: usize,
    held: usize,
    note: String,
}

fn scale() -> usize {
    std::env::var("MAILY_RELIABILITY_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .clamp(1, 20)
}

/// Users on one slot, every service at one tag, no route half-switched:
/// `Some((slot, tag))`, or `None` with the split printed.
fn consistent(world: &World) -> Option<(String, String)> {
    let traffic = world.traffic();
    let slot = traffic[0].1.clone()?;
    let want = if slot == "blue" { (100, 0) } else { (0, 100) };
    for (svc, selected, weights) in &traffic {
        if selected.as_deref() != Some(slot.as_str()) || *weights != Some(want) {
            eprintln!("split users: {svc} {traffic:?}");
            return None;
        }
    }
    let tags: std::collections::BTreeSet<String> =
        ["api", "analytics", "campaigns", "email-sender"]
            .iter()
            .filter_map(|s| world.image(&format!("{s}-{slot}")))
            .map(|i| i.rsplit(':').next().unwrap_or_default().to_string())
            .collect();
    (tags.len() == 1).then(|| (slot, tags.into_iter().next().unwrap()))
}

fn none_in_progress(world: &World) -> bool {
    world
        .snapshots()
        .iter()
        .all(|s| s.outcome != Outcome::InProgress)
}

/// A spread of offsets in `0..max_ms` (deterministic, so a failing trial can
/// be rerun at the same offset).
fn offsets(n: usize, max_ms: u64) -> Vec<u64> {
    (0..n).map(|i| (i as u64 * 7919) % max_ms.max(1)).collect()
}

fn lock_races(n: usize) -> Row {
    let world = World::new(Duration::from_millis(800));
    let mut held = 0;
    for i in 0..n {
        let a = world.spawn_deploy(&format!("r{i}"), &[]);
        let b = world.spawn_deploy(&format!("r{i}"), &[]);
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let mut codes = vec![a.status.code(), b.status.code()];
        codes.sort();
        let ok = codes == vec![Some(exit_code::SUCCESS), Some(exit_code::LOCK_HELD)]
            && consistent(&world).map(|c| c.1) == Some(format!("r{i}"));
        if ok {
            held += 1;
        } else {
            eprintln!("lock race {i}: {codes:?}\n{}\n{}", text(&a), text(&b));
        }
    }
    Row {
        what: "two runs at once: exactly one deploys, the other exits 6",
        trials: n,
        held,
        note: String::new(),
    }
}

fn sigkills(n: usize) -> Row {
    let world = World::new(Duration::from_millis(800));
    assert_exit(&world.deploy("k0", &["--lock-ttl", "2s"]), 0);
    let mut held = 0;
    for (i, at) in offsets(n, 2500).into_iter().enumerate() {
        let mut child = world.spawn_deploy(&format!("k{}", i + 1), &["--lock-ttl", "2s"]);
        std::thread::sleep(Duration::from_millis(at));
        let _ = child.kill();
        let _ = child.wait();
        let split_after_kill = consistent(&world).is_none();
        std::thread::sleep(Duration::from_millis(2200)); // the lease runs out
        let out = world.deploy(&format!("k{}", i + 1), &["--lock-ttl", "2s"]);
        let ok = out.status.code() == Some(0)
            && consistent(&world).map(|c| c.1) == Some(format!("k{}", i + 1))
            && none_in_progress(&world);
        if ok {
            held += 1;
        } else {
            eprintln!(
                "SIGKILL at {at} ms (split after kill: {split_after_kill}): {}",
                text(&out)
            );
        }
    }
    Row {
        what: "SIGKILL at 0-2.5 s, then a rerun: finished, consistent, nothing in progress",
        trials: n,
        held,
        note: String::new(),
    }
}

fn signals(n: usize) -> Row {
    let world = World::new(Duration::from_secs(3));
    assert_exit(&world.deploy("s0", &[]), 0);
    let before = consistent(&world);
    let hog = CpuHog::start(2);
    let mut held = 0;
    let mut latencies = Vec::new();
    for (i, at) in offsets(n, 2800).into_iter().enumerate() {
        let signal = if i % 2 == 0 { "INT" } else { "TERM" };
        let mut child = world.spawn_deploy(&format!("s{}", i + 1), &[]);
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        let _ = stdout.read_line(&mut first);
        let drain = std::thread::spawn(move || {
            let _ = std::io::Read::read_to_string(&mut stdout, &mut String::new());
        });
        std::thread::sleep(Duration::from_millis(at));
        let sent = Instant::now();
        let _ = StdCommand::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status();
        let out = child.wait_with_output().unwrap();
        latencies.push(sent.elapsed());
        let _ = drain.join();
        let ok = out.status.code() == Some(exit_code::INTERRUPTED)
            && consistent(&world) == before
            && world.lease_holder().is_none()
            && none_in_progress(&world);
        if ok {
            held += 1;
        } else {
            eprintln!(
                "SIG{signal} at {at} ms: exit {:?}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    drop(hog);
    latencies.sort();
    let median = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    let max = latencies.last().copied().unwrap_or_default();
    Row {
        what: "SIGINT/SIGTERM at 0-2.8 s beside two busy loops: exit 130, users back, lock released",
        trials: n,
        held,
        note: format!("signal to exit: median {median:.2?}, max {max:.2?}"),
    }
}

fn api_faults(n: usize) -> Row {
    let world = World::new(Duration::from_millis(800));
    assert_exit(&world.deploy("f0", &[]), 0);
    let control = world.sim().control();
    let mut held = 0;
    for i in 0..n {
        control.add_api_fault(ApiFault {
            verb: None,
            resource: None,
            rate: 0.1,
            code: 500,
            retry_after_seconds: None,
        });
        control.add_api_fault(ApiFault {
            verb: None,
            resource: None,
            rate: 0.1,
            code: 429,
            retry_after_seconds: Some(1),
        });
        let child = world.spawn_deploy(&format!("f{}", i + 1), &[]);
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(400));
            control.drop_watches();
        }
        let out = child.wait_with_output().unwrap();
        control.clear_api_faults();
        let ok = out.status.code() == Some(0)
            && consistent(&world).map(|c| c.1) == Some(format!("f{}", i + 1));
        if ok {
            held += 1;
        } else {
            eprintln!("API faults, run {i}: {}", text(&out));
        }
    }
    let failed_requests = control.requests().iter().filter(|r| r.code >= 429).count();
    Row {
        what: "10 % 500s + 10 % 429s + dropped watches: the deploy succeeds",
        trials: n,
        held,
        note: format!("{failed_requests} requests refused in all"),
    }
}

fn leaks(n: usize) -> Row {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, Some("dpl_old"));
    stub.vercel.state().echo_request = true;
    let rpc_key = "0123456789abcdef0123456789abcdef";
    let rpc = format!("https://mainnet.infura.io/v3/{rpc_key}");
    let mut held = 0;
    for i in 0..n {
        let mut vars = vec![
            ("IMAGE_TAG", format!("l{i}")),
            ("ROLLOUT_TIMEOUT", "60s".to_string()),
            ("ETHEREUM_RPC_URL", rpc.clone()),
        ];
        vars.extend(stub.vars());
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let env = world.env_file(&vars);
        let summary = world.dir.path().join(format!("summary-{i}.md"));
        let output = if i % 2 == 0 { "json" } else { "human" };
        let run = world
            .maily()
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_STEP_SUMMARY", &summary)
            .args(["staging", "--output", output, "-v"])
            .args([
                "--skip-provision",
                "--skip-migrate",
                "--skip-ai",
                "--skip-monitor",
                "--skip-verify",
            ])
            .arg("--env-file")
            .arg(&env)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        let history = world
            .maily()
            .args(["history", "staging", "--output", "json"])
            .output()
            .unwrap();
        let status = world.maily().args(["status", "staging"]).output().unwrap();
        let everything = [
            text(&run),
            text(&history),
            text(&status),
            std::fs::read_to_string(&summary).unwrap_or_default(),
            format!("{:?}", world.snapshots()),
        ]
        .join("\n");
        let leaked: Vec<&str> = [TOKEN, rpc_key]
            .into_iter()
            .filter(|s| everything.contains(s))
            .collect();
        if leaked.is_empty() {
            held += 1;
        } else {
            eprintln!("leak run {i} printed or stored {leaked:?}");
        }
    }
    Row {
        what: "leak hunt: a provider echoing the token, a key in an RPC URL's path; stdout, stderr, JSON, step summary, history, status, snapshots",
        trials: n,
        held,
        note: String::new(),
    }
}

#[test]
#[ignore = "minutes long: scripts/reliability runs it"]
fn reliability() {
    let k = scale();
    let started = Instant::now();
    let rows = vec![
        // At least as many as the outside run that found issue 15's defects.
        lock_races(30 * k),
        sigkills(40 * k),
        signals(20 * k),
        api_faults(15 * k),
        leaks(26 * k),
    ];
    println!("\n| case | trials | held |");
    println!("|---|---:|---:|");
    for r in &rows {
        let note = if r.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.note)
        };
        println!("| {}{note} | {} | {} |", r.what, r.trials, r.held);
    }
    println!(
        "\n{} trials in {:.0?}",
        rows.iter().map(|r| r.trials).sum::<usize>(),
        started.elapsed()
    );
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.held < r.trials)
        .map(|r| r.what)
        .collect();
    assert!(failed.is_empty(), "did not hold every time: {failed:?}");
}
