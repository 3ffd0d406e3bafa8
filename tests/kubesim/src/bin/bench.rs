//! `kubesim-bench`: list, apply and watch throughput on loopback, to show
//! the emulator is never the bottleneck of a test.
//!
//! ```text
//! cargo run --release -p kubesim --bin kubesim-bench -- [OBJECTS] [WATCHES]
//! ```
//! Defaults: 5,000 ConfigMaps and 200 open watches. Every loop is bounded
//! in count and time and talks only to the sim on 127.0.0.1.

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kubesim::{Sim, SimOptions};
use serde_json::json;
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 16;

fn configmap(i: usize, rev: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("cm-{i:05}"), "labels": {"bench": "yes", "shard": (i % 10).to_string()}},
        "data": {"rev": rev.to_string(), "payload": "x".repeat(256)}})
}

async fn apply_all(api: &Api<ConfigMap>, n: usize, rev: usize) -> Result<Duration> {
    let start = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.patch(
                    &format!("cm-{i:05}"),
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(configmap(i, rev)),
                )
                .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(start.elapsed())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let objects: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5_000);
    let watches: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let sim = Sim::start(SimOptions::default()).await?;
    let client = sim.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    println!(
        "kubesim-bench: {objects} ConfigMaps, {watches} watches, {CONCURRENCY} concurrent writers"
    );

    let t = apply_all(&api, objects, 1).await?;
    println!(
        "apply (create)   {:>8.0} objects/s   ({objects} in {:.2}s)",
        objects as f64 / t.as_secs_f64(),
        t.as_secs_f64()
    );
    let t = apply_all(&api, objects, 2).await?;
    println!(
        "apply (update)   {:>8.0} objects/s   ({objects} in {:.2}s)",
        objects as f64 / t.as_secs_f64(),
        t.as_secs_f64()
    );

    let rounds = 10;
    let start = Instant::now();
    for _ in 0..rounds {
        let l = api.list(&ListParams::default()).await?;
        anyhow::ensure!(
            l.items.len() == objects,
            "list returned {} items",
            l.items.len()
        );
    }
    let t = start.elapsed();
    println!(
        "list (all)       {:>8.0} objects/s   ({rounds} lists of {objects} in {:.2}s, {:.0} ms each)",
        (rounds * objects) as f64 / t.as_secs_f64(),
        t.as_secs_f64(),
        t.as_secs_f64() * 1000.0 / rounds as f64
    );
    let start = Instant::now();
    let mut pages = 0;
    let mut lp = ListParams::default().limit(500);
    loop {
        let l = api.list(&lp).await?;
        pages += 1;
        match l.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = ListParams::default().limit(500).continue_token(&c),
            _ => break,
        }
    }
    println!(
        "list (paged 500) {:>8.0} objects/s   ({pages} pages)",
        objects as f64 / start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let l = api.list(&ListParams::default().labels("shard=3")).await?;
    println!(
        "list (selector)  {:>8.1} ms          ({} of {objects} match shard=3)",
        start.elapsed().as_secs_f64() * 1000.0,
        l.items.len()
    );

    // 200 watches from the current version; then updates; every watch must see every update.
    let rv = api
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .context("rv")?;
    let mut streams = Vec::new();
    for _ in 0..watches {
        streams.push(
            api.watch(&WatchParams::default().timeout(120), &rv)
                .await?
                .boxed(),
        );
    }
    let updates = 1_000.min(objects);
    let start = Instant::now();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut seen = 0;
                while seen < updates {
                    match tokio::time::timeout(Duration::from_secs(60), s.try_next()).await {
                        Ok(Ok(Some(WatchEvent::Modified(_)))) => seen += 1,
                        Ok(Ok(Some(_))) => {}
                        _ => break,
                    }
                }
                seen
            })
        })
        .collect();
    let writer = {
        let api = api.clone();
        tokio::spawn(async move { apply_all(&api, updates, 3).await })
    };
    let write_time = writer.await??;
    let mut delivered = 0usize;
    for r in readers {
        delivered += r.await?;
    }
    let t = start.elapsed();
    anyhow::ensure!(
        delivered == updates * watches,
        "watches saw {delivered} of {} events",
        updates * watches
    );
    println!(
        "watch fan-out    {:>8.0} events/s    ({updates} updates x {watches} watches = {delivered} events in {:.2}s; writes took {:.2}s)",
        delivered as f64 / t.as_secs_f64(),
        t.as_secs_f64(),
        write_time.as_secs_f64()
    );
    Ok(())
}
