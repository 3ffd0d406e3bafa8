//! The simulated users of `support::traffic`: their split follows a route's
//! live weights in kubesim, each slot's behaviour shows in what a real
//! Prometheus computes, weight changes are recorded with their time, and a
//! starved slot's counters stand still.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support;
use crate::support::World;
use crate::support::prometheus::PrometheusServer;
use crate::support::traffic::{ManualWeights, SlotBehaviour, TrafficSim};

const SERVICE: &str = "api";

fn create_namespace(world: &World) {
    let api: Api<Namespace> = Api::all(world.client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": world.namespace}})).unwrap();
    world
        .rt
        .block_on(api.create(&PostParams::default(), &ns))
        .unwrap();
}

fn apply_route(world: &World, blue: u32, green: u32) {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(world.client.clone(), &world.namespace, &ar);
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": SERVICE, "namespace": world.namespace},
        "spec": {
            "parentRefs": [{"name": "maily", "namespace": "gateway"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"},
                                 "headers": [{"name": "x-maily-slot", "value": "blue"}]}],
                    "backendRefs": [{"name": format!("{SERVICE}-blue"), "port": 80}]
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"},
                                 "headers": [{"name": "x-maily-slot", "value": "green"}]}],
                    "backendRefs": [{"name": format!("{SERVICE}-green"), "port": 80}]
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {"name": format!("{SERVICE}-blue"), "port": 80, "weight": blue},
                        {"name": format!("{SERVICE}-green"), "port": 80, "weight": green}
                    ]
                }
            ]
        }
    });
    world
        .rt
        .block_on(api.patch(
            SERVICE,
            &PatchParams::apply("traffic-sim-test").force(),
            &Patch::Apply(&route),
        ))
        .unwrap_or_else(|e| panic!("the route applies: {e}"));
    assert_eq!(world.weights(SERVICE), Some((blue, green)));
}

/// Instant queries against a real Prometheus.
struct Promql {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    url: String,
}

impl Promql {
    fn new(prometheus: &PrometheusServer) -> Promql {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Promql {
            rt,
            http,
            url: prometheus.url.clone(),
        }
    }

    /// The value of a query whose answer is one sample; `None` when the
    /// answer is empty (or not a number yet: NaN).
    fn scalar(&self, query: &str) -> Option<f64> {
        let body: serde_json::Value = self.rt.block_on(async {
            let url = url::Url::parse_with_params(
                &format!("{}/api/v1/query", self.url),
                &[("query", query)],
            )
            .unwrap();
            self.http
                .get(url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("Prometheus answers {query}: {e}"))
                .json()
                .await
                .unwrap()
        });
        assert_eq!(body["status"], "success", "{query}: {body}");
        let result = body["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{query} gave several series: {body}");
        let value: f64 = result.first()?["value"][1].as_str()?.parse().ok()?;
        (!value.is_nan()).then_some(value)
    }

    /// Polls `queries` (at most `timeout`) until `ok` holds of their values;
    /// panics with the last values otherwise.
    fn until(
        &self,
        what: &str,
        queries: &[&str],
        timeout: Duration,
        ok: impl Fn(&[f64]) -> bool,
    ) -> Vec<f64> {
        let started = Instant::now();
        loop {
            let last = queries.iter().map(|q| self.scalar(q)).collect::<Vec<_>>();
            if last.iter().all(Option::is_some) {
                let values: Vec<f64> = last.iter().map(|v| v.unwrap()).collect();
                if ok(&values) {
                    return values;
                }
            }
            if started.elapsed() > timeout {
                panic!("{what}: after {timeout:?}, {queries:?} = {last:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn users_follow_the_route_weights_and_each_slot_behaves_as_told() {
    let world = World::new(Duration::from_millis(200));
    create_namespace(&world);
    apply_route(&world, 80, 20);

    let sim = TrafficSim::start(world.weight_source(SERVICE));
    sim.set_rps(200.0);
    sim.set("blue", SlotBehaviour::healthy());
    sim.set("green", SlotBehaviour::new(0.1, 300.0));
    let targets = sim.scrape_targets(&world.namespace, SERVICE, |slot| format!("v-{slot}"));
    let prometheus = PrometheusServer::start(&targets);
    let promql = Promql::new(&prometheus);
    let ns = &world.namespace;

    // 1. 80/20: a fifth of the users on green, 10% of them failing, p99
    //    in the bucket of 300 ms, (0.25 s, 0.5 s].
    let green_share = format!(
        r#"sum(rate(http_requests_total{{namespace="{ns}", job="{SERVICE}", slot="green"}}[5s])) / sum(rate(http_requests_total{{namespace="{ns}"}}[5s]))"#
    );
    let green_errors = r#"sum(rate(http_requests_total{slot="green", status=~"5.."}[5s])) / sum(rate(http_requests_total{slot="green"}[5s]))"#;
    let green_p99 = r#"1000 * histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{slot="green"}[5s])))"#;
    let blue_p99 = r#"1000 * histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{slot="blue"}[5s])))"#;
    // Rates are steady once the window holds five scrapes of every series.
    promql.until(
        "five scrapes in the window",
        &["min(count_over_time(http_requests_total[5s]))"],
        Duration::from_secs(20),
        |v| v[0] >= 5.0,
    );
    let values = promql.until(
        "80/20 with green failing and slow",
        &[&green_share, green_errors, green_p99, blue_p99],
        Duration::from_secs(20),
        |v| {
            (v[0] - 0.2).abs() < 0.02
                && (v[1] - 0.1).abs() < 0.02
                && v[2] > 250.0
                && v[2] <= 500.0
                && v[3] > 25.0
                && v[3] <= 50.0
        },
    );
    eprintln!("80/20: green share, green errors, green p99, blue p99 = {values:?}");
    // The queries the deploy tool runs (staging's profile) see the same.
    let analysis =
        maily_deploy::config::profile::load(&support::repo().join("manifests"), "staging")
            .unwrap()
            .traffic
            .analysis
            .expect("staging analyses its steps");
    let of = |query: &str, slot: &str| {
        query
            .replace("{{namespace}}", ns)
            .replace("{{slot}}", slot)
            .replace("{{interval}}", "5s")
    };
    let metric = |name: &str| {
        &analysis
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("staging has no metric {name}"))
            .query
    };
    let (error_rate, p99) = (metric("error-rate"), metric("p99-latency"));
    let queries = [
        of(&analysis.samples.query, "green"),
        of(error_rate, "green"),
        of(p99, "green"),
        of(error_rate, "blue"),
        of(p99, "blue"),
    ];
    let values = promql.until(
        "staging's analysis",
        &queries.iter().map(String::as_str).collect::<Vec<_>>(),
        Duration::from_secs(10),
        |v| {
            v[0] >= analysis.samples.min as f64
                && (v[1] - 10.0).abs() < 2.0
                && v[2] > 250.0
                && v[2] <= 500.0
                && v[3] == 0.0
                && v[4] > 25.0
                && v[4] <= 50.0
        },
    );
    eprintln!("staging's analysis: green samples, errors %, p99; blue errors %, p99 = {values:?}");
    let (blue, green) = (sim.counts("blue"), sim.counts("green"));
    let share = green.requests as f64 / (blue.requests + green.requests) as f64;
    assert!((share - 0.2).abs() < 0.03, "{blue:?} {green:?}");
    assert_eq!(blue.errors, 0);
    assert!(
        (green.errors as f64 / green.requests as f64 - 0.1).abs() < 0.01,
        "{green:?}"
    );
    let version = format!(
        r#"count(http_requests_total{{slot="green", version="v-green", job="{SERVICE}"}})"#
    );
    assert_eq!(promql.scalar(&version), Some(2.0), "the targets' labels");

    // 2. 0/100: the change is recorded when it happens, blue goes quiet.
    assert_eq!(
        sim.weight_history()
            .iter()
            .map(|c| c.weights)
            .collect::<Vec<_>>(),
        vec![(80, 20)]
    );
    let before = chrono::Utc::now();
    let patched_at = Instant::now();
    apply_route(&world, 0, 100);
    let after = chrono::Utc::now();
    let change = sim
        .wait_for_weights((0, 100), Duration::from_secs(2))
        .expect("the simulator reads the new weights");
    assert!(
        change.wall >= before && change.wall <= after + chrono::Duration::milliseconds(500),
        "seen at {}, applied between {before} and {after}",
        change.wall
    );
    assert!(change.at >= patched_at && change.at - patched_at < Duration::from_millis(500));
    assert_eq!(sim.seen_since((0, 100), before), Some(change));
    assert_eq!(
        sim.weight_history()
            .iter()
            .map(|c| c.weights)
            .collect::<Vec<_>>(),
        vec![(80, 20), (0, 100)]
    );
    let blue_rate = r#"sum(rate(http_requests_total{slot="blue"}[3s]))"#;
    let green_rate = r#"sum(rate(http_requests_total{slot="green"}[3s]))"#;
    let values = promql.until(
        "0/100: everybody on green",
        &[blue_rate, green_rate],
        Duration::from_secs(15),
        |v| v[0] == 0.0 && (v[1] - 200.0).abs() < 20.0,
    );
    eprintln!("0/100: blue rps, green rps = {values:?}");
    let blue_then = sim.counts("blue");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sim.counts("blue"), blue_then, "nobody reaches blue at 0%");

    // 3. Green starved: its counters stand still whatever the weights.
    sim.starve("green", true);
    std::thread::sleep(Duration::from_millis(300));
    let green_then = sim.counts("green");
    promql.until(
        "green starved",
        &[green_rate, blue_rate],
        Duration::from_secs(15),
        |v| v[0] == 0.0 && v[1] == 0.0,
    );
    assert_eq!(sim.counts("green"), green_then);
    assert!(green_then.requests > 0);
    sim.starve("green", false);
    promql.until(
        "green fed again",
        &[green_rate],
        Duration::from_secs(15),
        |v| v[0] > 100.0,
    );
}

#[test]
fn without_a_route_users_are_on_the_stable_slot_and_rates_are_exact() {
    let weights = ManualWeights::new(None);
    let sim = TrafficSim::start(weights.source());
    sim.set_stable("green");
    sim.set_rps(1000.0);
    sim.set("green", SlotBehaviour::failing(0.25));
    std::thread::sleep(Duration::from_millis(1000));
    let (blue, green) = (sim.counts("blue"), sim.counts("green"));
    assert_eq!(blue.requests, 0);
    assert!(
        (800..=1200).contains(&green.requests),
        "about 1000 in a second: {green:?}"
    );
    // Errors are carried to the request: a quarter, within one.
    assert!(green.errors.abs_diff(green.requests / 4) <= 1, "{green:?}");
    assert!(sim.weight_history().is_empty());

    weights.set(Some((1, 3)));
    let change = sim
        .wait_for_weights((1, 3), Duration::from_secs(1))
        .expect("the change is read");
    assert_eq!(sim.weight_history(), vec![change]);
    let (blue0, green0) = (sim.counts("blue"), sim.counts("green"));
    std::thread::sleep(Duration::from_millis(1000));
    let blue = sim.counts("blue").requests - blue0.requests;
    let green = sim.counts("green").requests - green0.requests;
    let share = blue as f64 / (blue + green) as f64;
    assert!(
        (share - 0.25).abs() < 0.02,
        "weights 1:3 → {blue} blue, {green} green"
    );

    // What Prometheus would scrape, straight from the port.
    let text = scrape(sim.address("green"));
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let count = sim.counts("green");
    for line in [
        "# TYPE http_requests_total counter".to_string(),
        "# TYPE http_request_duration_seconds histogram".to_string(),
        "http_request_duration_seconds_bucket{le=\"0.025\"} 0".to_string(),
        "http_request_duration_seconds_bucket{le=\"0.05\"} ".to_string(),
        "http_request_duration_seconds_bucket{le=\"+Inf\"} ".to_string(),
        "http_request_duration_seconds_sum ".to_string(),
        "http_request_duration_seconds_count ".to_string(),
        "http_requests_total{status=\"500\"} ".to_string(),
    ] {
        assert!(text.contains(&line), "{line:?} in {text}");
    }
    assert!(count.requests > 0);
    drop(sim);
}

fn scrape(address: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
