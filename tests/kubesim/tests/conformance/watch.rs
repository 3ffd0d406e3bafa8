//! Watches: kube's watcher and reflector see every change and recover after
//! dropped watches and 410 Gone; raw watches get bookmarks and time out.

use crate::common::{eventually, sim};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use std::time::Duration;

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": v}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_sees_every_change_and_recovers_after_dropped_watches_and_410() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move { stream.for_each(|_| async {}).await });
    let state = |r: &reflector::Store<ConfigMap>| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = r
            .state()
            .iter()
            .map(|c| {
                (
                    c.metadata.name.clone().unwrap(),
                    c.data.as_ref().unwrap()["v"].clone(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let pp = PostParams::default();
    api.create(&pp, &cm("a", "1")).await.unwrap();
    api.create(&pp, &cm("b", "1")).await.unwrap();
    let want = vec![
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "1".to_string()),
    ];
    eventually("the reflector has a and b", Duration::from_secs(5), || {
        let s = state(&reader);
        let w = want.clone();
        async move { (s == w).then_some(()) }
    })
    .await;

    // Every open watch dropped: the watcher resumes from its resourceVersion.
    sim.control().drop_watches();
    api.create(&pp, &cm("c", "1")).await.unwrap();
    eventually(
        "the reflector has c after the dropped watch",
        // kube's watcher backs off after errors (from 800 ms, doubling); on
        // a loaded machine a few back-offs add up.
        Duration::from_secs(30),
        || {
            let n = state(&reader).len();
            async move { (n == 3).then_some(()) }
        },
    )
    .await;

    // Versions expired and watches dropped: resuming gets 410, the watcher re-lists.
    let lists_before = sim
        .control()
        .counters()
        .get("list configmaps")
        .copied()
        .unwrap_or(0);
    sim.control().expire_resource_versions();
    sim.control().drop_watches();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let want = vec![
        ("a".to_string(), "2".to_string()),
        ("c".to_string(), "1".to_string()),
    ];
    eventually(
        "the reflector matches the server after a 410",
        Duration::from_secs(30),
        || {
            let s = state(&reader);
            let w = want.clone();
            async move { (s == w).then_some(()) }
        },
    )
    .await;
    let lists_after = sim
        .control()
        .counters()
        .get("list configmaps")
        .copied()
        .unwrap_or(0);
    assert!(
        lists_after > lists_before,
        "the watcher re-listed after 410 ({lists_before} -> {lists_after})"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_watch_streams_events_after_its_version_with_bookmarks_until_its_timeout() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    api.create(&PostParams::default(), &cm("before", "1"))
        .await
        .unwrap();
    let rv = api
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let started = std::time::Instant::now();
    let stream = api
        .watch(&WatchParams::default().timeout(2), &rv)
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("after", "1"))
        .await
        .unwrap();
    api.delete("after", &DeleteParams::default()).await.unwrap();
    let events: Vec<WatchEvent<ConfigMap>> = stream.try_collect().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the watch ended at its timeout"
    );
    let names: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(c) => Some(format!("ADDED {}", c.metadata.name.as_deref().unwrap())),
            WatchEvent::Deleted(c) => {
                Some(format!("DELETED {}", c.metadata.name.as_deref().unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        names,
        vec!["ADDED after", "DELETED after"],
        "only events after the version"
    );
    assert!(
        events.iter().any(|e| matches!(e, WatchEvent::Bookmark(_))),
        "a bookmark arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_an_expired_version_gets_410_gone() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let rv = api
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &cm("x", "1"))
        .await
        .unwrap();
    sim.control().expire_resource_versions();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_with_a_label_selector_sees_objects_leave_and_enter_it() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let labelled = |slot: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": "route", "labels": {"slot": slot}}}))
            .unwrap()
    };
    api.create(&PostParams::default(), &labelled("blue"))
        .await
        .unwrap();
    let rv = api
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let stream = api
        .watch(&WatchParams::default().labels("slot=blue").timeout(1), &rv)
        .await
        .unwrap();
    let relabel = |slot: &str| json!({"metadata": {"labels": {"slot": slot}}});
    api.patch(
        "route",
        &PatchParams::default(),
        &Patch::Merge(relabel("green")),
    )
    .await
    .unwrap();
    api.patch(
        "route",
        &PatchParams::default(),
        &Patch::Merge(relabel("red")),
    )
    .await
    .unwrap();
    api.patch(
        "route",
        &PatchParams::default(),
        &Patch::Merge(relabel("blue")),
    )
    .await
    .unwrap();
    let kinds: Vec<&str> = stream
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(_) => Some("ADDED"),
            WatchEvent::Modified(_) => Some("MODIFIED"),
            WatchEvent::Deleted(_) => Some("DELETED"),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec!["DELETED", "ADDED"],
        "green: left the selector; red: unseen; blue: back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_list_watcher_gets_the_initial_state_then_changes() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    api.create(&PostParams::default(), &cm("first", "1"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().streaming_lists()),
    )
    .default_backoff()
    .applied_objects();
    let task = tokio::spawn(async move { stream.for_each(|_| async {}).await });
    eventually("the initial state arrives", Duration::from_secs(5), || {
        let n = reader.state().len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    api.create(&PostParams::default(), &cm("second", "1"))
        .await
        .unwrap();
    eventually("the change arrives", Duration::from_secs(5), || {
        let n = reader.state().len();
        async move { (n == 2).then_some(()) }
    })
    .await;
    let counters = sim.control().counters();
    assert_eq!(
        counters.get("list configmaps"),
        None,
        "no list: the watch streamed the state: {counters:?}"
    );
    task.abort();
}
