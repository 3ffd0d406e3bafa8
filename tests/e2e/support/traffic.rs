//! Simulated user traffic for the progressive traffic shift: requests split
//! between the blue and green slots as a route's live weights say, each
//! slot behaving as the test chooses (error rate, latency), counted in the
//! metrics the analysis queries and served for a real Prometheus to scrape.
//!
//! ```ignore
//! let sim = TrafficSim::start(world.weight_source("api"));
//! sim.set("green", SlotBehaviour::failing(0.2));
//! let prom = PrometheusServer::start(&sim.scrape_targets(&world.namespace, "api", |s| {
//!     format!("v-{s}")
//! }));
//! // ... run the deploy tool, then:
//! let back = sim.first_seen((100, 0)).expect("users went back to blue");
//! ```
//!
//! Three threads: one reads the weights every [`WEIGHT_POLL`] and records
//! each change with its time ([`TrafficSim::weight_history`]); one adds
//! `rps × elapsed × share` requests to the slots every [`TICK`] (fractions
//! carried, so the rates are exact over time); one serves `/metrics` of
//! both slots, a port each. All stop when the `TrafficSim` is dropped.
//!
//! The metrics carry no `namespace`, `slot`, `job` or `version` labels:
//! those come from the scrape targets, as they do from a ServiceMonitor.
//! Every request observes exactly the slot's latency (no jitter), so
//! `histogram_quantile` lands at a predictable point of that bucket: 50 ms
//! gives a p99 of 49.75 ms, 300 ms one of 497.5 ms.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::prometheus::ScrapeTarget;

/// The weights (blue, green) of a route's weighted rule, read afresh at
/// each call; `None` when there is no route (yet).
pub type WeightSource = Box<dyn Fn() -> Option<(u32, u32)> + Send>;

/// How often requests are added to the counters.
pub const TICK: Duration = Duration::from_millis(100);
/// How often the weight source is read (and changes recorded).
pub const WEIGHT_POLL: Duration = Duration::from_millis(50);

/// The slots, in the order of a route's weights.
pub const SLOTS: [&str; 2] = ["blue", "green"];

/// Upper bounds (seconds) of `http_request_duration_seconds`'s buckets,
/// `+Inf` aside.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Weights a test sets by hand, for a simulator without a cluster.
#[derive(Clone, Default)]
pub struct ManualWeights(Arc<Mutex<Option<(u32, u32)>>>);

impl ManualWeights {
    pub fn new(weights: Option<(u32, u32)>) -> ManualWeights {
        ManualWeights(Arc::new(Mutex::new(weights)))
    }

    pub fn set(&self, weights: Option<(u32, u32)>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = weights;
    }

    /// A source reading what `set` last said.
    pub fn source(&self) -> WeightSource {
        let cell = self.0.clone();
        Box::new(move || *cell.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What a slot does with the requests it gets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlotBehaviour {
    /// The share of requests answered 500 (the rest 200), 0.0..=1.0.
    pub error_rate: f64,
    /// How long every request takes.
    pub latency_ms: f64,
}

impl SlotBehaviour {
    pub fn new(error_rate: f64, latency_ms: f64) -> SlotBehaviour {
        assert!(
            (0.0..=1.0).contains(&error_rate),
            "an error rate is a share, 0.0..=1.0: {error_rate}"
        );
        assert!(latency_ms >= 0.0, "a latency is not negative: {latency_ms}");
        SlotBehaviour {
            error_rate,
            latency_ms,
        }
    }

    /// No errors, 50 ms (p99 49.75 ms as Prometheus estimates it).
    pub fn healthy() -> SlotBehaviour {
        SlotBehaviour::new(0.0, 50.0)
    }

    /// Healthy latency, `rate` of the requests failing.
    pub fn failing(rate: f64) -> SlotBehaviour {
        SlotBehaviour::new(rate, 50.0)
    }

    /// No errors, every request taking `ms`.
    pub fn slow(ms: f64) -> SlotBehaviour {
        SlotBehaviour::new(0.0, ms)
    }
}

impl Default for SlotBehaviour {
    fn default() -> SlotBehaviour {
        SlotBehaviour::healthy()
    }
}

/// One change of the weights as the simulator saw it: the first time a
/// value differing from the previous one was read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightChange {
    /// Monotonic time of the read.
    pub at: Instant,
    /// Wall-clock time of the read (the deploy tool's reports are UTC).
    pub wall: DateTime<Utc>,
    /// (blue, green).
    pub weights: (u32, u32),
}

/// A slot's counters so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotCounts {
    pub requests: u64,
    pub errors: u64,
}

#[derive(Default)]
struct Slot {
    behaviour: SlotBehaviour,
    starved: bool,
    /// Fractions of a request (and of an error) not yet counted.
    carry: f64,
    error_carry: f64,
    ok: u64,
    errors: u64,
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl Slot {
    /// Adds `expected` requests (fractions carried).
    fn serve(&mut self, expected: f64) {
        let want = expected + self.carry;
        let n = want.floor().max(0.0);
        self.carry = want - n;
        let n = n as u64;
        if n == 0 {
            return;
        }
        let failing = n as f64 * self.behaviour.error_rate + self.error_carry;
        let errors = failing.floor().max(0.0).min(n as f64);
        self.error_carry = failing - errors;
        let errors = errors as u64;
        self.errors += errors;
        self.ok += n - errors;
        let seconds = self.behaviour.latency_ms / 1000.0;
        let bucket = BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket] += n;
        self.sum += seconds * n as f64;
    }

    fn exposition(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP http_requests_total Requests answered, by status.\n");
        out.push_str("# TYPE http_requests_total counter\n");
        out.push_str(&format!(
            "http_requests_total{{status=\"200\"}} {}\n",
            self.ok
        ));
        out.push_str(&format!(
            "http_requests_total{{status=\"500\"}} {}\n",
            self.errors
        ));
        out.push_str("# HELP http_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i];
            out.push_str(&format!(
                "http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}\n"
            ));
        }
        cumulative += self.buckets[BUCKETS.len()];
        out.push_str(&format!(
            "http_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}\n"
        ));
        out.push_str(&format!("http_request_duration_seconds_sum {}\n", self.sum));
        out.push_str(&format!(
            "http_request_duration_seconds_count {cumulative}\n"
        ));
        out
    }
}

struct State {
    rps: f64,
    /// Where all users are while there is no route.
    stable: String,
    slots: BTreeMap<String, Slot>,
    /// The weights last read; `None` before the first read or without a route.
    weights: Option<(u32, u32)>,
    /// Whether the weight source has answered once.
    polled: bool,
    history: Vec<WeightChange>,
}

/// Simulated users of one route; see the module's documentation.
pub struct TrafficSim {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// `127.0.0.1:<port>` serving each slot's metrics.
    addresses: BTreeMap<String, String>,
}

/// Requests per second, all slots together, unless `set_rps` says otherwise.
pub const DEFAULT_RPS: f64 = 100.0;

impl TrafficSim {
    /// Starts the users: [`DEFAULT_RPS`] requests a second split by the
    /// weights `weights` reads, both slots healthy, blue stable.
    pub fn start(weights: WeightSource) -> TrafficSim {
        let state = Arc::new(Mutex::new(State {
            rps: DEFAULT_RPS,
            stable: "blue".to_string(),
            slots: SLOTS
                .iter()
                .map(|s| (s.to_string(), Slot::default()))
                .collect(),
            weights: None,
            polled: false,
            history: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut addresses = BTreeMap::new();
        let mut listeners = Vec::new();
        for slot in SLOTS {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
            listener.set_nonblocking(true).unwrap();
            addresses.insert(slot.to_string(), listener.local_addr().unwrap().to_string());
            listeners.push((slot.to_string(), listener));
        }
        {
            let (state, stop) = (state.clone(), stop.clone());
            threads.push(spawn("traffic-weights", move || {
                poll_weights(weights, &state, &stop)
            }));
        }
        {
            let (state, stop) = (state.clone(), stop.clone());
            threads.push(spawn("traffic-users", move || send_requests(&state, &stop)));
        }
        {
            let (state, stop) = (state.clone(), stop.clone());
            threads.push(spawn("traffic-metrics", move || {
                serve_metrics(listeners, &state, &stop)
            }));
        }
        TrafficSim {
            state,
            stop,
            threads,
            addresses,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// From now on, `slot` (blue or green) behaves as `b`.
    pub fn set(&self, slot: &str, b: SlotBehaviour) {
        slot_mut(&mut self.lock(), slot).behaviour = b;
    }

    /// Requests per second, both slots together (before starving).
    pub fn set_rps(&self, rps: f64) {
        assert!(rps >= 0.0, "requests per second are not negative: {rps}");
        self.lock().rps = rps;
    }

    /// The slot every user is on while the route does not exist.
    pub fn set_stable(&self, slot: &str) {
        let mut s = self.lock();
        slot_mut(&mut s, slot);
        s.stable = slot.to_string();
    }

    /// While `yes`, `slot` gets no requests whatever the weights (its
    /// share is lost, not given to the other slot); its counters stand still.
    pub fn starve(&self, slot: &str, yes: bool) {
        slot_mut(&mut self.lock(), slot).starved = yes;
    }

    /// A slot's counters so far.
    pub fn counts(&self, slot: &str) -> SlotCounts {
        let mut s = self.lock();
        let slot = slot_mut(&mut s, slot);
        SlotCounts {
            requests: slot.ok + slot.errors,
            errors: slot.errors,
        }
    }

    /// `host:port` serving a slot's metrics (at any path).
    pub fn address(&self, slot: &str) -> &str {
        self.addresses
            .get(slot)
            .unwrap_or_else(|| panic!("no slot {slot:?}: blue or green"))
    }

    /// A target per slot, labelled as a ServiceMonitor labels a service's
    /// pods in a slot: job=`service`, namespace, slot, version=`version_of(slot)`.
    pub fn scrape_targets(
        &self,
        namespace: &str,
        service: &str,
        version_of: impl Fn(&str) -> String,
    ) -> Vec<ScrapeTarget> {
        SLOTS
            .iter()
            .map(|slot| ScrapeTarget {
                address: self.address(slot).to_string(),
                metrics_path: "/metrics".to_string(),
                labels: [
                    ("job", service.to_string()),
                    ("namespace", namespace.to_string()),
                    ("slot", slot.to_string()),
                    ("version", version_of(slot)),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            })
            .collect()
    }

    /// Every change of the weights, oldest first; the first entry is the
    /// first value read. Reads without a route are not entries.
    pub fn weight_history(&self) -> Vec<WeightChange> {
        self.lock().history.clone()
    }

    /// The first change to `weights` read at or after `since`, if any.
    pub fn seen_since(&self, weights: (u32, u32), since: DateTime<Utc>) -> Option<WeightChange> {
        self.lock()
            .history
            .iter()
            .find(|c| c.weights == weights && c.wall >= since)
            .copied()
    }

    /// Waits (at most `timeout`) until the weights read are `weights`;
    /// the change that made them so.
    pub fn wait_for_weights(&self, weights: (u32, u32), timeout: Duration) -> Option<WeightChange> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let s = self.lock();
                if s.weights == Some(weights) {
                    return s
                        .history
                        .iter()
                        .rev()
                        .find(|c| c.weights == weights)
                        .copied();
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(WEIGHT_POLL / 2);
        }
    }
}

impl Drop for TrafficSim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .expect("a thread starts")
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not take the simulator down with it.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn slot_mut<'a>(s: &'a mut State, slot: &str) -> &'a mut Slot {
    s.slots
        .get_mut(slot)
        .unwrap_or_else(|| panic!("no slot {slot:?}: blue or green"))
}

/// Sleeps `d` in short naps; false when told to stop.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
    }
    false
}

fn poll_weights(source: WeightSource, state: &Mutex<State>, stop: &AtomicBool) {
    loop {
        let started = Instant::now();
        let read = source();
        let (at, wall) = (Instant::now(), Utc::now());
        {
            let mut s = lock(state);
            s.weights = read;
            s.polled = true;
            if let Some(weights) = read
                && s.history.last().map(|c| c.weights) != Some(weights)
            {
                s.history.push(WeightChange { at, wall, weights });
            }
        }
        if !nap(WEIGHT_POLL.saturating_sub(started.elapsed()), stop) {
            return;
        }
    }
}

fn send_requests(state: &Mutex<State>, stop: &AtomicBool) {
    let mut last = Instant::now();
    while nap(TICK.saturating_sub(last.elapsed()), stop) {
        let now = Instant::now();
        let elapsed = (now - last).as_secs_f64();
        last = now;
        let mut s = lock(state);
        if !s.polled {
            continue;
        }
        let shares: Vec<(String, f64)> = match s.weights {
            Some((blue, green)) if blue + green > 0 => {
                let total = f64::from(blue + green);
                vec![
                    ("blue".to_string(), f64::from(blue) / total),
                    ("green".to_string(), f64::from(green) / total),
                ]
            }
            // All weights 0: the gateway sends nobody anywhere.
            Some(_) => Vec::new(),
            None => vec![(s.stable.clone(), 1.0)],
        };
        let rps = s.rps;
        for (slot, share) in shares {
            let slot = slot_mut(&mut s, &slot);
            if !slot.starved {
                slot.serve(rps * elapsed * share);
            }
        }
    }
}

fn serve_metrics(listeners: Vec<(String, TcpListener)>, state: &Mutex<State>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut idle = true;
        for (slot, listener) in &listeners {
            match listener.accept() {
                Ok((stream, _)) => {
                    idle = false;
                    let body = slot_mut(&mut lock(state), slot).exposition();
                    let _ = answer(stream, &body);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {}
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reads the request's head, answers 200 with `body`, closes.
fn answer(mut stream: TcpStream, body: &str) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
