//! Watch streams: newline-delimited `{"type":..,"object":..}` events after
//! a resourceVersion, bookmarks when asked, `timeoutSeconds`, a 410 ERROR
//! event when the version is too old, and an end when the control handle
//! drops all watches.

use crate::control::Control;
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Event, EventType, ListOptions};
use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How often a watch that allows bookmarks gets one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// What a watch request asked for.
pub struct WatchRequest {
    pub rt: ResourceType,
    pub namespace: String,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// None for "" or "0": start with the current state as ADDED events.
    pub resource_version: Option<u64>,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: the streaming-list protocol.
    pub send_initial_events: bool,
    /// `Accept: ...;as=PartialObjectMetadata`: objects reduced to their metadata.
    pub metadata_only: bool,
}

/// An object as `PartialObjectMetadata` (what metadata-only clients ask for).
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

fn object_line(req: &WatchRequest, kind: &str, obj: &Value) -> Bytes {
    if req.metadata_only {
        event_line(kind, &partial_metadata(obj))
    } else {
        event_line(kind, obj)
    }
}

/// The line for a stored event, reusing its serialised object.
fn stored_event_line(req: &WatchRequest, kind: &str, e: &Event) -> Bytes {
    if req.metadata_only {
        return event_line(kind, &partial_metadata(&e.object));
    }
    Bytes::from(format!(
        "{{\"type\":\"{kind}\",\"object\":{}}}\n",
        e.object_json()
    ))
}

/// One event line of the wire format.
pub fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut s = format!("{{\"type\":\"{kind}\",\"object\":");
    s.push_str(&serde_json::to_string(object).expect("JSON values serialize"));
    s.push_str("}\n");
    Bytes::from(s)
}

fn selected(req: &WatchRequest, obj: &Value) -> bool {
    req.labels.matches_object(obj) && req.fields.matches(obj)
}

/// The event type this watch sees for `e`, if any. As kube-apiserver's
/// watch cache does, a change that makes an object stop matching the
/// selectors is a DELETED, one that makes it start matching an ADDED.
fn event_type_for(req: &WatchRequest, e: &Event) -> Option<&'static str> {
    if e.key != req.rt.key() || !(req.namespace.is_empty() || e.namespace == req.namespace) {
        return None;
    }
    let now = selected(req, &e.object);
    match (e.kind, e.previous.as_deref().map(|p| selected(req, p))) {
        (EventType::Modified, Some(true)) if !now => Some("DELETED"),
        (EventType::Modified, Some(false)) if now => Some("ADDED"),
        (EventType::Modified, Some(false)) => None,
        (kind, _) => now.then_some(kind.as_str()),
    }
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut md = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": md}),
    )
}

type Tx = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

async fn send(tx: &Tx, b: Bytes) -> bool {
    tx.send(Ok(Frame::data(b))).await.is_ok()
}

/// Starts a watch; the receiver yields the response body's frames.
pub fn start(
    control: &Control,
    req: WatchRequest,
) -> mpsc::Receiver<Result<Frame<Bytes>, Infallible>> {
    let (tx, rx) = mpsc::channel(256);
    let mut drop_rx = control.drop_watches.subscribe();
    drop_rx.borrow_and_update();
    // Snapshot and subscription under one lock: nothing falls in between.
    let (first, live, mut last_rv) = {
        let store = control.store.lock().expect("store lock poisoned");
        let rv = store.resource_version();
        let live = store.subscribe();
        let first: Result<Vec<Bytes>, ApiError> = match req.resource_version {
            Some(from) if !req.send_initial_events => {
                store.events_since(&req.rt.key(), from).map(|evs| {
                    evs.iter()
                        .filter_map(|e| {
                            event_type_for(&req, e).map(|t| stored_event_line(&req, t, e))
                        })
                        .collect()
                })
            }
            _ => {
                let ns = (!req.namespace.is_empty()).then_some(req.namespace.as_str());
                let opts = ListOptions {
                    labels: req.labels.clone(),
                    fields: req.fields.clone(),
                    ..Default::default()
                };
                store.list(&req.rt, ns, &opts).map(|l| {
                    let mut lines: Vec<Bytes> = l
                        .items
                        .iter()
                        .map(|o| object_line(&req, "ADDED", o))
                        .collect();
                    if req.send_initial_events {
                        lines.push(bookmark(&req.rt, rv, true));
                    }
                    lines
                })
            }
        };
        (first, live, rv)
    };
    tokio::spawn(async move {
        let lines = match first {
            Ok(lines) => lines,
            Err(e) => {
                let _ = send(&tx, event_line("ERROR", &e.to_status())).await;
                return;
            }
        };
        for l in lines {
            if !send(&tx, l).await {
                return;
            }
        }
        stream_live(tx, req, live, &mut drop_rx, &mut last_rv).await;
    });
    rx
}

async fn stream_live(
    tx: Tx,
    req: WatchRequest,
    mut live: broadcast::Receiver<Arc<Event>>,
    drop_rx: &mut tokio::sync::watch::Receiver<u64>,
    last_rv: &mut u64,
) {
    let deadline = req.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut ticks = tokio::time::interval(BOOKMARK_INTERVAL);
    ticks.tick().await;
    loop {
        tokio::select! {
            ev = live.recv() => match ev {
                Ok(e) => {
                    if e.rv <= *last_rv {
                        continue;
                    }
                    *last_rv = e.rv;
                    if let Some(t) = event_type_for(&req, &e)
                        && !send(&tx, stored_event_line(&req, t, &e)).await
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let gone = ApiError::gone("the watch fell too far behind; re-list");
                    let _ = send(&tx, event_line("ERROR", &gone.to_status())).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticks.tick(), if req.bookmarks => {
                if !send(&tx, bookmark(&req.rt, *last_rv, false)).await {
                    return;
                }
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => return,
            _ = drop_rx.changed() => return,
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(selector: &str) -> WatchRequest {
        WatchRequest {
            rt: crate::resources::builtin()
                .into_iter()
                .find(|t| t.kind == "Pod")
                .unwrap(),
            namespace: "prod".into(),
            labels: LabelSelector::parse(selector).unwrap(),
            fields: FieldSelector::default(),
            resource_version: None,
            timeout: None,
            bookmarks: false,
            send_initial_events: false,
            metadata_only: false,
        }
    }

    fn modified(before: &str, after: &str) -> Event {
        let pod = |slot: &str| {
            Arc::new(
                json!({"metadata": {"name": "p", "namespace": "prod", "labels": {"slot": slot}}}),
            )
        };
        Event {
            rv: 2,
            key: "/pods".into(),
            namespace: "prod".into(),
            kind: EventType::Modified,
            object: pod(after),
            previous: Some(pod(before)),
            json: Default::default(),
        }
    }

    #[test]
    fn leaving_the_selector_is_a_delete_and_entering_it_an_add() {
        let r = req("slot=blue");
        assert_eq!(
            event_type_for(&r, &modified("blue", "green")),
            Some("DELETED")
        );
        assert_eq!(
            event_type_for(&r, &modified("green", "blue")),
            Some("ADDED")
        );
        assert_eq!(
            event_type_for(&r, &modified("blue", "blue")),
            Some("MODIFIED")
        );
        assert_eq!(event_type_for(&r, &modified("green", "red")), None);
    }

    #[test]
    fn other_namespaces_and_kinds_are_not_seen() {
        let r = req("");
        let mut e = modified("a", "b");
        assert_eq!(event_type_for(&r, &e), Some("MODIFIED"));
        e.namespace = "dev".into();
        assert_eq!(event_type_for(&r, &e), None);
        e.namespace = "prod".into();
        e.key = "/configmaps".into();
        assert_eq!(event_type_for(&r, &e), None);
    }
}
