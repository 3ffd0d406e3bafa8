//! The control handle: faults, rollout time, the request log and counters.
//! Tests hold a `Control`; the `/_sim/` HTTP API drives the same one.

use crate::faults::{ApiFault, ApiFaults, ImageFault, ImageFaultRule};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// One API request as RBAC sees it: the verb (get, list, watch, create,
/// update, patch, delete, deletecollection), API group, resource,
/// subresource, namespace and name. Non-resource requests (discovery,
/// `/version`) have no resource and carry their `path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The URL path (always set; the only identity of non-resource requests).
    pub path: String,
    /// The HTTP status the request got (0 for a watch still streaming).
    pub code: u16,
}

impl RequestRecord {
    /// Whether this was a request for a resource (not discovery or /version).
    pub fn is_resource(&self) -> bool {
        !self.resource.is_empty()
    }
}

pub(crate) struct ControlState {
    pub image_faults: Vec<ImageFaultRule>,
    pub api: ApiFaults,
    /// Time from pod creation to Running and Ready, before `time_scale`.
    pub rollout: Duration,
    pub time_scale: f64,
    pub log: Vec<RequestRecord>,
}

/// A cheap, cloneable handle on a running sim's knobs and records.
#[derive(Clone)]
pub struct Control {
    pub(crate) state: Arc<Mutex<ControlState>>,
    pub(crate) store: Arc<Mutex<Store>>,
    pub(crate) drop_watches: Arc<watch::Sender<u64>>,
    /// The store's change signal, also woken by the knobs the controllers
    /// read (faults, rollout time), which are no store writes.
    pub(crate) changed: Arc<Notify>,
    /// Controller passes so far: a test can see the loop sleep while
    /// nothing changes, without timing the process's CPU.
    pub(crate) passes: Arc<AtomicU64>,
    /// API requests being served now, watches aside: the controllers give
    /// way to them after a long pass, and only to them.
    pub(crate) requests_in_flight: Arc<AtomicUsize>,
}

/// One API request being served, counted in `requests_in_flight` until
/// dropped (whatever way the handler returns).
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn enter(control: &Control) -> Self {
        control.requests_in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(control.requests_in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Control {
    pub(crate) fn new(
        store: Arc<Mutex<Store>>,
        rollout: Duration,
        time_scale: f64,
        faults: Vec<ImageFaultRule>,
    ) -> Self {
        let (tx, _) = watch::channel(0);
        let changed = store.lock().expect("store lock poisoned").changes();
        Control {
            state: Arc::new(Mutex::new(ControlState {
                image_faults: faults,
                api: ApiFaults::default(),
                rollout,
                time_scale,
                log: Vec::new(),
            })),
            store,
            drop_watches: Arc::new(tx),
            changed,
            passes: Arc::new(AtomicU64::new(0)),
            requests_in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Wakes the controllers: what they decide from changed.
    fn wake_controllers(&self) {
        self.changed.notify_one();
    }

    /// How many times the controllers have looked at the store. They look
    /// after a write or a knob change, and when something time-driven is
    /// due (a pod's rollout time, a crash loop's next restart, a progress
    /// deadline); an idle sim's count stays put.
    pub fn controller_passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().expect("control state lock poisoned")
    }

    /// Makes containers whose image matches `pattern` (a glob over the whole
    /// image reference, e.g. `*:broken-*`) behave as `fault`. Pods already
    /// running pick it up too, as a node would on the next restart.
    pub fn set_image_fault(&self, pattern: &str, fault: ImageFault) {
        let mut s = self.lock();
        s.image_faults.retain(|r| r.pattern != pattern);
        s.image_faults.push(ImageFaultRule {
            pattern: pattern.into(),
            fault,
        });
        drop(s);
        self.wake_controllers();
    }

    pub fn clear_image_faults(&self) {
        self.lock().image_faults.clear();
        self.wake_controllers();
    }

    pub fn image_faults(&self) -> Vec<ImageFaultRule> {
        self.lock().image_faults.clone()
    }

    /// Time from pod creation to Running and Ready (multiplied by the time scale).
    pub fn set_rollout_time(&self, d: Duration) {
        self.lock().rollout = d;
        self.wake_controllers();
    }

    /// Adds an API error rate for a verb and resource (None matches any).
    pub fn add_api_fault(&self, f: ApiFault) {
        self.lock().api.add(f);
    }

    /// Removes API fault rules, latency and any outage.
    pub fn clear_api_faults(&self) {
        self.lock().api.clear();
    }

    /// Delays every API request by `d`.
    pub fn set_latency(&self, d: Duration) {
        self.lock().api.latency = d;
    }

    /// Answers every API request with 503 for the next `d`, and ends every
    /// open watch, as an apiserver that goes away does.
    pub fn outage(&self, d: Duration) {
        self.lock().api.outage_until = Some(Instant::now() + d);
        self.drop_watches();
    }

    /// Ends every open watch now, as an apiserver restart does.
    pub fn drop_watches(&self) {
        self.drop_watches.send_modify(|g| *g += 1);
    }

    /// Forgets retained watch events: a watch resuming from any older
    /// resourceVersion gets 410 Gone and has to re-list.
    pub fn expire_resource_versions(&self) {
        self.store.lock().expect("store lock poisoned").compact();
    }

    /// Every API request since the start or the last reset, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.clone()
    }

    /// Request counts keyed `"<verb> <resource>"` (`"<verb> <path>"` for
    /// non-resource requests), e.g. `"list pods"`, `"get /version"`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in self.lock().log.iter() {
            let what = if r.is_resource() {
                if r.subresource.is_empty() {
                    r.resource.clone()
                } else {
                    format!("{}/{}", r.resource, r.subresource)
                }
            } else {
                r.path.clone()
            };
            *out.entry(format!("{} {}", r.verb, what)).or_insert(0) += 1;
        }
        out
    }

    /// Clears the request log and every fault (image and API); objects stay.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.log.clear();
        s.api.clear();
        s.image_faults.clear();
        drop(s);
        self.wake_controllers();
    }

    /// Current API fault rules (for the control API's GET).
    pub fn api_faults(&self) -> Vec<ApiFault> {
        self.lock().api.rules()
    }

    /// The number of objects stored, all kinds together.
    pub fn object_count(&self) -> usize {
        self.store
            .lock()
            .expect("store lock poisoned")
            .object_count()
    }
}
