//! The Deployment controller and the kubelet: rollouts, scaling, Jobs, and
//! what faulty images look like in pod and Deployment status.

use crate::common::{eventually, http, sim};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kubesim::ImageFault;
use serde_json::{Value, json};
use std::time::Duration;

fn deployment(name: &str, replicas: i64, image: &str, deadline: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "progressDeadlineSeconds": deadline,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}}}})
}

fn condition(d: &Deployment, kind: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

/// kubectl rollout status's notion of done.
fn rolled_out(d: &Deployment) -> bool {
    let (Some(s), Some(spec)) = (&d.status, &d.spec) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
}

async fn apply(api: &Api<Deployment>, name: &str, body: Value) {
    api.patch(
        name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(body),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_rolls_out_through_a_replicaset_to_ready_pods() {
    let sim = sim().await;
    let client = sim.client();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    apply(&api, "web", deployment("web", 3, "web:1", 600)).await;
    let d = eventually("web rolls out", Duration::from_secs(10), || {
        let api = api.clone();
        async move { api.get("web").await.ok().filter(rolled_out) }
    })
    .await;
    let s = d.status.clone().unwrap();
    assert_eq!(
        (s.ready_replicas, s.updated_replicas, s.unavailable_replicas),
        (Some(3), Some(3), None)
    );
    assert_eq!(
        condition(&d, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    assert_eq!(
        condition(&d, "Progressing"),
        Some(("True".into(), "NewReplicaSetAvailable".into()))
    );

    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs = rss
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(rs.len(), 1);
    let hash = rs[0].metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_eq!(
        rs[0].metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    assert_eq!(
        rs[0].metadata.owner_references.as_ref().unwrap()[0].kind,
        "Deployment"
    );
    assert_eq!(
        rs[0].metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "1"
    );

    let pods: Api<Pod> = Api::namespaced(client, "default");
    let ps = pods
        .list(&ListParams::default().labels(&format!("pod-template-hash={hash}")))
        .await
        .unwrap()
        .items;
    assert_eq!(ps.len(), 3);
    for p in &ps {
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert!(st.container_statuses.as_ref().unwrap()[0].ready);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_image_makes_a_new_replicaset_and_the_old_one_scales_to_zero() {
    let sim = sim().await;
    let client = sim.client();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    apply(&api, "api", deployment("api", 2, "api:1", 600)).await;
    eventually("v1 rolls out", Duration::from_secs(10), || {
        let api = api.clone();
        async move { api.get("api").await.ok().filter(rolled_out) }
    })
    .await;
    apply(&api, "api", deployment("api", 2, "api:2", 600)).await;
    let d = eventually("v2 rolls out", Duration::from_secs(15), || {
        let api = api.clone();
        async move {
            api.get("api")
                .await
                .ok()
                .filter(|d| d.metadata.generation == Some(2) && rolled_out(d))
        }
    })
    .await;
    assert_eq!(d.status.unwrap().observed_generation, Some(2));
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let mut rs = rss
        .list(&ListParams::default().labels("app=api"))
        .await
        .unwrap()
        .items;
    rs.sort_by_key(|r| {
        r.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"].clone()
    });
    assert_eq!(rs.len(), 2);
    assert_eq!(
        rs[0].spec.as_ref().unwrap().replicas,
        Some(0),
        "old ReplicaSet scaled down"
    );
    assert_eq!(rs[1].spec.as_ref().unwrap().replicas, Some(2));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let images: Vec<String> = eventually("old pods are gone", Duration::from_secs(5), || {
        let pods = pods.clone();
        async move {
            let ps = pods
                .list(&ListParams::default().labels("app=api"))
                .await
                .ok()?
                .items;
            let imgs: Vec<String> = ps
                .iter()
                .map(|p| {
                    p.spec.as_ref().unwrap().containers[0]
                        .image
                        .clone()
                        .unwrap()
                })
                .collect();
            (imgs.len() == 2).then_some(imgs)
        }
    })
    .await;
    assert_eq!(images, vec!["api:2", "api:2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_through_the_scale_subresource_changes_the_pod_count() {
    let sim = sim().await;
    let client = sim.client();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    apply(&api, "s", deployment("s", 1, "s:1", 600)).await;
    let scale = api.get_scale("s").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    api.patch_scale(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    let d = eventually("4 replicas available", Duration::from_secs(10), || {
        let api = api.clone();
        async move {
            api.get("s")
                .await
                .ok()
                .filter(|d| rolled_out(d) && d.spec.as_ref().unwrap().replicas == Some(4))
        }
    })
    .await;
    assert_eq!(d.status.unwrap().available_replicas, Some(4));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    api.patch_scale(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("scaled down to one pod", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move {
            (pods
                .list(&ListParams::default().labels("app=s"))
                .await
                .ok()?
                .items
                .len()
                == 1)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_image_pulls_back_off_and_the_rollout_exceeds_its_deadline() {
    let sim = sim().await;
    sim.control()
        .set_image_fault("*:broken-*", ImageFault::ImagePullBackOff);
    let client = sim.client();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    apply(&api, "bad", deployment("bad", 2, "bad:1", 2)).await;
    eventually("v1 rolls out", Duration::from_secs(10), || {
        let api = api.clone();
        async move { api.get("bad").await.ok().filter(rolled_out) }
    })
    .await;
    apply(&api, "bad", deployment("bad", 2, "bad:broken-2", 2)).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let reason = eventually("a pod in ImagePullBackOff", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move {
            let ps = pods
                .list(&ListParams::default().labels("app=bad"))
                .await
                .ok()?
                .items;
            ps.iter().find_map(|p| {
                let w = p.status.as_ref()?.container_statuses.as_ref()?[0]
                    .state
                    .as_ref()?
                    .waiting
                    .as_ref()?;
                (w.reason.as_deref() == Some("ImagePullBackOff")).then(|| w.reason.clone().unwrap())
            })
        }
    })
    .await;
    assert_eq!(reason, "ImagePullBackOff");
    let d = eventually("ProgressDeadlineExceeded", Duration::from_secs(10), || {
        let api = api.clone();
        async move {
            let d = api.get("bad").await.ok()?;
            (condition(&d, "Progressing")?
                == ("False".to_string(), "ProgressDeadlineExceeded".to_string()))
                .then_some(d)
        }
    })
    .await;
    let s = d.status.unwrap();
    assert_eq!(s.available_replicas, Some(2), "the old pods keep serving");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(sim.client(), "default");
    let evs = events.list(&ListParams::default()).await.unwrap().items;
    let has = |reason: &str, kind: &str| {
        evs.iter().any(|e| {
            e.reason.as_deref() == Some(reason) && e.involved_object.kind.as_deref() == Some(kind)
        })
    };
    assert!(
        has("ScalingReplicaSet", "Deployment"),
        "the controller records scaling"
    );
    assert!(
        has("BackOff", "Pod"),
        "the kubelet records the pull back-off"
    );
    assert_eq!(condition_of(&s, "Available"), Some("True".into()));
}

fn condition_of(s: &k8s_openapi::api::apps::v1::DeploymentStatus, kind: &str) -> Option<String> {
    s.conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_image_loops_with_a_rising_restart_count_and_an_unready_one_never_becomes_ready()
{
    let sim = sim().await;
    sim.control()
        .set_image_fault("*:crash-*", ImageFault::CrashLoopBackOff);
    sim.control()
        .set_image_fault("*:unready-*", ImageFault::NeverReady);
    let client = sim.client();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    apply(&api, "crash", deployment("crash", 1, "c:crash-1", 600)).await;
    apply(
        &api,
        "unready",
        deployment("unready", 1, "u:unready-1", 600),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let restarts = |pods: Api<Pod>| async move {
        let ps = pods
            .list(&ListParams::default().labels("app=crash"))
            .await
            .ok()?
            .items;
        let cs = ps
            .first()?
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .clone();
        let waiting = cs.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
        (waiting == "CrashLoopBackOff").then_some(cs.restart_count)
    };
    let first = eventually("CrashLoopBackOff", Duration::from_secs(10), || {
        restarts(pods.clone())
    })
    .await;
    let later = eventually("restartCount rises", Duration::from_secs(10), || {
        let p = pods.clone();
        async move { restarts(p).await.filter(|r| *r > first) }
    })
    .await;
    assert!(later > first);
    let crashing = pods
        .list(&ListParams::default().labels("app=crash"))
        .await
        .unwrap()
        .items;
    let log = pods
        .logs(
            crashing[0].metadata.name.as_deref().unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    assert!(log.contains("simulated crash"), "{log}");

    tokio::time::sleep(Duration::from_millis(800)).await;
    let ps = pods
        .list(&ListParams::default().labels("app=unready"))
        .await
        .unwrap()
        .items;
    let st = ps[0].status.as_ref().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert!(!st.container_statuses.as_ref().unwrap()[0].ready);
    let d = api.get("unready").await.unwrap();
    assert_eq!(d.status.unwrap().available_replicas.unwrap_or(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_and_deleting_a_deployment_takes_its_pods() {
    let sim = sim().await;
    let client = sim.client();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "migrate:1"}]}}}});
    jobs.patch("migrate", &PatchParams::apply("test"), &Patch::Apply(job))
        .await
        .unwrap();
    let j = eventually("the job completes", Duration::from_secs(10), || {
        let jobs = jobs.clone();
        async move {
            let j = jobs.get("migrate").await.ok()?;
            let done = j
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True");
            done.then_some(j)
        }
    })
    .await;
    assert_eq!(j.status.unwrap().succeeded, Some(1));

    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    apply(&api, "gone", deployment("gone", 2, "g:1", 600)).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    eventually("pods exist", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move {
            (pods
                .list(&ListParams::default().labels("app=gone"))
                .await
                .ok()?
                .items
                .len()
                == 2)
                .then_some(())
        }
    })
    .await;
    api.delete("gone", &DeleteParams::default()).await.unwrap();
    let left = pods
        .list(&ListParams::default().labels("app=gone"))
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(left, 0, "the garbage collector removed the pods");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_scale_shortens_the_rollout_time() {
    let sim = kubesim::Sim::start(kubesim::SimOptions {
        rollout_time: Duration::from_secs(3),
        time_scale: 0.1,
        ..Default::default()
    })
    .await
    .unwrap();
    let api: Api<Deployment> = Api::namespaced(sim.client(), "default");
    let start = std::time::Instant::now();
    apply(&api, "fast", deployment("fast", 1, "f:1", 600)).await;
    eventually(
        "a 3 s rollout at time scale 0.1",
        Duration::from_secs(2),
        || {
            let api = api.clone();
            async move { api.get("fast").await.ok().filter(rolled_out) }
        },
    )
    .await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "well under the unscaled 3 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deployment_holds_its_rollout_until_resumed() {
    let sim = sim().await;
    let client = sim.client();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    apply(&api, "held", deployment("held", 1, "h:1", 600)).await;
    eventually("v1 rolls out", Duration::from_secs(10), || {
        let api = api.clone();
        async move { api.get("held").await.ok().filter(rolled_out) }
    })
    .await;
    let pp = PatchParams::default();
    api.patch(
        "held",
        &pp,
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    api.patch("held", &pp, &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "h:2"}]}}}})))
        .await
        .unwrap();
    let d = eventually(
        "Progressing says DeploymentPaused",
        Duration::from_secs(5),
        || {
            let api = api.clone();
            async move {
                let d = api.get("held").await.ok()?;
                // Observed after the template change too: the pause alone
                // (synced before it) says DeploymentPaused as well.
                let observed = d.status.as_ref()?.observed_generation == d.metadata.generation;
                (condition(&d, "Progressing")?.1 == "DeploymentPaused" && observed).then_some(d)
            }
        },
    )
    .await;
    assert_eq!(
        d.status.unwrap().updated_replicas.unwrap_or(0),
        0,
        "no pod has the new template"
    );
    let rss: Api<ReplicaSet> = Api::namespaced(client, "default");
    assert_eq!(
        rss.list(&ListParams::default().labels("app=held"))
            .await
            .unwrap()
            .items
            .len(),
        1,
        "no new ReplicaSet"
    );

    api.patch(
        "held",
        &pp,
        &Patch::Merge(json!({"spec": {"paused": null}})),
    )
    .await
    .unwrap();
    eventually(
        "v2 rolls out after the resume",
        Duration::from_secs(10),
        || {
            let api = api.clone();
            async move {
                let d = api.get("held").await.ok()?;
                (rolled_out(&d) && condition(&d, "Progressing")?.1 == "NewReplicaSetAvailable")
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        rss.list(&ListParams::default().labels("app=held"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_image_delays_the_rollout_by_its_extra_time() {
    let sim = sim().await;
    sim.control()
        .set_image_fault("*:slow-*", ImageFault::Slow(1.5));
    let api: Api<Deployment> = Api::namespaced(sim.client(), "default");
    let start = std::time::Instant::now();
    apply(&api, "slow", deployment("slow", 1, "s:slow-1", 600)).await;
    eventually(
        "the slow rollout completes",
        Duration::from_secs(10),
        || {
            let api = api.clone();
            async move { api.get("slow").await.ok().filter(rolled_out) }
        },
    )
    .await;
    // 0.3 s rollout time + 1.5 s extra.
    assert!(
        start.elapsed() >= Duration::from_millis(1800),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreate_deployment_stops_every_old_pod_before_starting_new_ones() {
    let sim = sim().await;
    let client = sim.client();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let with_recreate = |image: &str| {
        let mut d = deployment("rc", 2, image, 600);
        d["spec"]["strategy"] = json!({"type": "Recreate"});
        d
    };
    apply(&api, "rc", with_recreate("rc:1")).await;
    eventually("v1 rolls out", Duration::from_secs(10), || {
        let api = api.clone();
        async move { api.get("rc").await.ok().filter(rolled_out) }
    })
    .await;
    apply(&api, "rc", with_recreate("rc:2")).await;
    // Sample the pods while the rollout runs: never old and new together.
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let start = std::time::Instant::now();
    loop {
        let ps = pods
            .list(&ListParams::default().labels("app=rc"))
            .await
            .unwrap()
            .items;
        let images: std::collections::BTreeSet<String> = ps
            .iter()
            .map(|p| {
                p.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap()
            })
            .collect();
        assert!(images.len() <= 1, "old and new pods at once: {images:?}");
        let d = api.get("rc").await.unwrap();
        if d.metadata.generation == Some(2) && rolled_out(&d) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "v2 did not roll out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_service_gets_an_address_that_kubes_wait_condition_sees() {
    use k8s_openapi::api::core::v1::Service;
    use kube::runtime::wait::{await_condition, conditions};
    let sim = sim().await;
    let svcs: Api<Service> = Api::namespaced(sim.client(), "default");
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "edge"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "edge"}, "ports": [{"port": 443}]}});
    svcs.patch("edge", &PatchParams::apply("test"), &Patch::Apply(svc))
        .await
        .unwrap();
    let provisioned = tokio::time::timeout(
        Duration::from_secs(5),
        await_condition(
            svcs.clone(),
            "edge",
            conditions::is_service_loadbalancer_provisioned(),
        ),
    )
    .await
    .expect("provisioned within 5 s")
    .unwrap()
    .unwrap();
    let ip = provisioned
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap()[0]
        .ip
        .clone()
        .unwrap();
    assert!(ip.starts_with("172.18.255."), "{ip}");
}

/// A sim nobody talks to must not burn CPU: once a rollout has settled the
/// controllers sleep until a write, a knob or a time-driven transition
/// wakes them. The count of passes says so without timing the process (a
/// fixed 50 ms tick made 40 passes in these 2 s; an idle debug binary with
/// 24 Deployments used a third of a core).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_sim_sleeps_until_something_changes() {
    let sim = sim().await;
    let client = sim.client();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    apply(&api, "idle", deployment("idle", 2, "idle:1", 600)).await;
    let settled = || {
        let api = api.clone();
        async move {
            let d = api.get("idle").await.ok()?;
            (rolled_out(&d) && condition(&d, "Progressing")?.1 == "NewReplicaSetAvailable")
                .then_some(d)
        }
    };
    eventually("idle rolls out", Duration::from_secs(10), settled).await;
    // The passes that follow the last writes (each write wakes one more).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = sim.control().controller_passes();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = sim.control().controller_passes();
    assert!(
        after - before <= 2,
        "the controllers kept looking at a settled store: {} passes in 2 s",
        after - before
    );
    let url = sim.url().to_string();
    let reported = http(&url, "GET", "/_sim/controller", &[], "").await.json();
    assert!(
        reported["passes"].as_u64() >= Some(after),
        "the control API reports the passes: {reported}"
    );

    // A write wakes them: a scale-up rolls out as before.
    apply(&api, "idle", deployment("idle", 3, "idle:1", 600)).await;
    eventually("idle scales to 3", Duration::from_secs(10), || {
        let api = api.clone();
        async move {
            let d = api.get("idle").await.ok()?;
            (rolled_out(&d) && d.status.as_ref()?.ready_replicas == Some(3)).then_some(())
        }
    })
    .await;

    // So does a knob with no write behind it: a fault for the running
    // image shows in the pods' status.
    sim.control()
        .set_image_fault("idle:*", ImageFault::CrashLoopBackOff);
    let pods: Api<Pod> = Api::namespaced(client, "default");
    eventually("the running pods crash", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move {
            let ps = pods
                .list(&ListParams::default().labels("app=idle"))
                .await
                .ok()?
                .items;
            ps.iter()
                .all(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .and_then(|cs| cs.first()?.state.as_ref()?.waiting.as_ref()?.reason.clone())
                        .as_deref()
                        == Some("CrashLoopBackOff")
                })
                .then_some(())
        }
    })
    .await;
}
