//! `measure` against a real Prometheus: slots that serve requests at rates,
//! error shares and latencies this test chooses are scraped every second,
//! and the shipped production analysis (with a 5 s interval) must read back
//! what they serve and judge it as a reviewer would.

use std::time::{Duration, Instant};

use maily_deploy::config::traffic::Analysis;
use maily_deploy::providers::prometheus::Prometheus;
use maily_deploy::traffic::analysis::{Measurement, QueryVars, Verdict, measure};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support;
use crate::support::prometheus::{PrometheusServer, slot_target};

const NAMESPACE: &str = "maily-production";

/// The histogram's bucket bounds, in seconds. Every request of a slot takes
/// exactly its latency, a bound, so the 0.99 quantile interpolates to just
/// under it: 0.3 s gives 0.2 + 0.1 × 0.99 = 0.299 s.
const BUCKETS: &[f64] = &[0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0];

/// A slot's pods, as its /metrics endpoint tells it: counters that grow
/// with the time since the test started.
struct Traffic {
    started: Instant,
    requests_per_second: f64,
    error_share: f64,
    latency_seconds: f64,
}

impl Respond for Traffic {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let total = self.requests_per_second * self.started.elapsed().as_secs_f64();
        let errors = total * self.error_share;
        let mut body = String::from("# TYPE http_requests_total counter\n");
        body.push_str(&format!(
            "http_requests_total{{status=\"200\"}} {}\n",
            total - errors
        ));
        body.push_str(&format!("http_requests_total{{status=\"500\"}} {errors}\n"));
        body.push_str("# TYPE http_request_duration_seconds histogram\n");
        for le in BUCKETS {
            let count = if self.latency_seconds <= *le {
                total
            } else {
                0.0
            };
            body.push_str(&format!(
                "http_request_duration_seconds_bucket{{le=\"{le}\"}} {count}\n"
            ));
        }
        body.push_str(&format!(
            "http_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n"
        ));
        body.push_str(&format!(
            "http_request_duration_seconds_sum {}\n",
            total * self.latency_seconds
        ));
        body.push_str(&format!("http_request_duration_seconds_count {total}\n"));
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/plain; version=0.0.4")
            .set_body_string(body)
    }
}

/// A slot serving `rps` requests a second, `error_share` of them 500s,
/// each taking `latency` seconds.
async fn serve(started: Instant, rps: f64, error_share: f64, latency: f64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/metrics/api"))
        .respond_with(Traffic {
            started,
            requests_per_second: rps,
            error_share,
            latency_seconds: latency,
        })
        .mount(&server)
        .await;
    server
}

/// The shipped production analysis, measured over 5 s instead of 30 s so
/// that a few seconds of scrapes fill the window.
fn production_analysis() -> Analysis {
    let profile =
        maily_deploy::config::profile::load(&support::repo().join("manifests"), "production")
            .unwrap();
    let mut analysis = profile.traffic.analysis.expect("production has analysis");
    analysis.interval = std::time::Duration::from_secs(5);
    analysis
}

fn vars(slot: &str, version: &str) -> QueryVars {
    QueryVars {
        namespace: NAMESPACE.into(),
        slot: slot.into(),
        version: version.into(),
        interval: "5s".into(),
    }
}

fn near(value: Option<f64>, expected: f64, tolerance: f64) -> bool {
    value.is_some_and(|v| (v - expected).abs() <= tolerance)
}

fn show(m: &Measurement) -> String {
    serde_json::to_string_pretty(m).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_reads_and_judges_what_a_real_prometheus_scrapes() {
    let started = Instant::now();
    // (slot, version, requests/s, error share, latency s)
    let slots = [
        ("blue", "v1", 100.0, 0.005, 0.3),    // the old slot: the baseline
        ("green", "v2", 100.0, 0.005, 0.3),   // a healthy new slot
        ("erroring", "v2", 100.0, 0.05, 0.3), // 5 % errors, above max 1 %
        ("slow", "v2", 100.0, 0.005, 0.5),    // p99 ≈ 1.67× the old slot's
        ("idle", "v2", 0.0, 0.0, 0.3),        // nobody is sent here
    ];
    let mut servers = Vec::new();
    let mut targets = Vec::new();
    for (slot, version, rps, errors, latency) in slots {
        let server = serve(started, rps, errors, latency).await;
        targets.push(slot_target(
            &server.address().to_string(),
            NAMESPACE,
            "api",
            slot,
            version,
        ));
        servers.push(server);
    }
    let prometheus = tokio::task::spawn_blocking(move || PrometheusServer::start(&targets))
        .await
        .unwrap();
    let prom = Prometheus::new(&prometheus.url).unwrap();
    let analysis = production_analysis();
    let old = vars("blue", "v1");

    // Enough scrapes to fill the 5 s window (100 requests/s over 5 s is 500
    // samples, against 200 needed); bounded, not a fixed sleep.
    let deadline = Instant::now() + Duration::from_secs(20);
    let green = loop {
        let m = measure(&prom, &analysis, &vars("green", "v2"), Some(&old), 25)
            .await
            .unwrap();
        // Full windows: the first scrapes give rates over a second or two,
        // and the old slot's first scrape may come a moment later.
        if m.samples.is_some_and(|s| s >= 400.0) && m.metrics[1].old_value.is_some() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the 5 s window never filled (400 samples, old slot scraped) in 20 s; last measurement: {}\nprometheus log:\n{}",
            show(&m),
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // The healthy slot: what it serves is read back, and it passes.
    assert!(near(green.samples, 500.0, 100.0), "{}", show(&green));
    assert!(near(green.metrics[0].value, 0.5, 0.05), "{}", show(&green));
    assert!(near(green.metrics[1].value, 299.0, 2.0), "{}", show(&green));
    assert!(
        near(green.metrics[1].old_value, 299.0, 2.0),
        "{}",
        show(&green)
    );
    assert_eq!(green.verdict, Verdict::Pass, "{}", show(&green));
    assert_eq!(green.percent, 25);

    // An error rate above max fails, and the reason says by how much.
    let erroring = measure(&prom, &analysis, &vars("erroring", "v2"), Some(&old), 25)
        .await
        .unwrap();
    assert!(
        near(erroring.metrics[0].value, 5.0, 0.25),
        "{}",
        show(&erroring)
    );
    assert_eq!(erroring.verdict, Verdict::Fail, "{}", show(&erroring));
    assert!(
        erroring.reason.starts_with("error-rate 5") && erroring.reason.ends_with("% > 1 %"),
        "{}",
        show(&erroring)
    );

    // Slower than 1.5× the old slot fails, though under the 1000 ms max.
    let slow = measure(&prom, &analysis, &vars("slow", "v2"), Some(&old), 25)
        .await
        .unwrap();
    assert!(near(slow.metrics[1].value, 499.0, 2.0), "{}", show(&slow));
    assert_eq!(slow.metrics[1].verdict, Verdict::Fail, "{}", show(&slow));
    assert_eq!(slow.verdict, Verdict::Fail, "{}", show(&slow));
    assert!(slow.reason.contains("> 1.5× old (299"), "{}", show(&slow));

    // After 100 % the old slot is not compared, so the same slow slot
    // passes on its own thresholds: nothing holds it against a baseline.
    let alone = measure(&prom, &analysis, &vars("slow", "v2"), None, 100)
        .await
        .unwrap();
    assert_eq!(alone.verdict, Verdict::Pass, "{}", show(&alone));
    assert_eq!(
        alone.metrics[1].note.as_deref(),
        Some("old slot serves no users; not compared")
    );

    // A slot nobody reaches proves nothing: inconclusive, not a pass.
    let idle = measure(&prom, &analysis, &vars("idle", "v2"), Some(&old), 5)
        .await
        .unwrap();
    assert_eq!(idle.verdict, Verdict::Inconclusive, "{}", show(&idle));
    assert_eq!(idle.samples, Some(0.0), "{}", show(&idle));
    assert_eq!(idle.reason, "0 samples < 200 needed");
    assert_eq!(
        idle.metrics[0].value,
        None,
        "0/0 is no data: {}",
        show(&idle)
    );
    assert_eq!(idle.metrics[1].value, None, "{}", show(&idle));
    drop(servers);
}
