//! SIGINT and SIGTERM stop a run whenever they come, even on a machine so
//! busy that the run's phases take seconds: the built binary against
//! kubesim, beside two busy loops.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use maily_deploy::exit_code;
use maily_deploy::pipeline::snapshot::Outcome;

use crate::support::*;

#[test]
fn a_signal_at_any_moment_of_a_busy_run_stops_it_and_puts_users_back() {
    // Pods take 3 s to be ready: deploy-backend waits that long, the
    // window where the outside run lost signals.
    let world = World::new(Duration::from_secs(3));
    let out = world.deploy("v1", &[]);
    assert_exit(&out, 0);
    let before = (
        world.selected_slot("api").unwrap(),
        world.image("api-blue").unwrap(),
    );
    let _hog = CpuHog::start(2);

    // Offsets from the run's first line (the listener is installed before
    // it is printed), spread over validate, the lock, the applies and the
    // rollout wait.
    let offsets_ms = [0u64, 150, 400, 900, 1600, 2400];
    let mut latencies = Vec::new();
    for (i, offset) in offsets_ms.into_iter().enumerate() {
        let signal = if i % 2 == 0 { "INT" } else { "TERM" };
        let env = world.env_file(&[
            ("IMAGE_TAG", &format!("v{}", i + 2)),
            ("ROLLOUT_TIMEOUT", "60s"),
        ]);
        let mut child = world
            .process()
            .arg("staging")
            .args(BACKEND_ONLY)
            .arg("--env-file")
            .arg(&env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(
            first.contains("maily-deploy staging: deployment"),
            "{first}"
        );
        // Keep reading so the child never blocks on a full pipe.
        let rest = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
            text
        });
        std::thread::sleep(Duration::from_millis(offset));
        let sent = Instant::now();
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        latencies.push((offset, sent.elapsed()));
        let stdout = first + &rest.join().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(exit_code::INTERRUPTED),
            "SIG{signal} {offset} ms in was not honoured:\n{stdout}\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("interrupted by SIG{signal} during")),
            "the signal is named:\n{stderr}"
        );
        assert_eq!(
            (
                world.selected_slot("api").unwrap(),
                world.image("api-blue").unwrap()
            ),
            before,
            "users stay on what they ran (SIG{signal} at {offset} ms)"
        );
        world.assert_all_on(&before.0);
        assert!(
            world.lease_holder().is_none(),
            "the lock is released (SIG{signal} at {offset} ms)"
        );
    }
    // Every interrupted run is closed, none left in progress.
    let snapshots = world.snapshots();
    assert!(
        snapshots.iter().all(|s| s.outcome != Outcome::InProgress),
        "{:?}",
        snapshots
            .iter()
            .map(|s| (&s.deployment_id, s.outcome))
            .collect::<Vec<_>>()
    );
    eprintln!("signal → exit, with two busy loops beside: {latencies:?}");
}
