//! CRUD, metadata, selectors, paging, patches and errors through the kube client.

use crate::common::{api_error, sim};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

/// Every built-in kind the issue lists, with a minimal valid object.
fn builtin_kinds() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    serde_json::Value,
)> {
    let pod_spec = json!({"containers": [{"name": "c", "image": "busybox:1"}]});
    let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": pod_spec});
    vec![
        ("", "v1", "Namespace", "namespaces", false, json!({})),
        (
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            true,
            json!({"data": {"k": "v"}}),
        ),
        (
            "",
            "v1",
            "Secret",
            "secrets",
            true,
            json!({"stringData": {"k": "v"}}),
        ),
        (
            "",
            "v1",
            "Service",
            "services",
            true,
            json!({"spec": {"ports": [{"port": 80}]}}),
        ),
        (
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            json!({}),
        ),
        ("", "v1", "Pod", "pods", true, json!({"spec": pod_spec})),
        (
            "",
            "v1",
            "Event",
            "events",
            true,
            json!({"reason": "Test", "message": "m", "involvedObject": {"kind": "Pod", "name": "p"}}),
        ),
        (
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            json!({"spec": {"replicas": 0, "selector": {"matchLabels": {"app": "x"}}, "template": template}}),
        ),
        (
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            true,
            json!({"spec": {"replicas": 0, "selector": {"matchLabels": {"app": "x"}}, "template": template}}),
        ),
        (
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            true,
            json!({"spec": {"replicas": 1, "serviceName": "s", "selector": {"matchLabels": {"app": "x"}}, "template": template}}),
        ),
        (
            "batch",
            "v1",
            "Job",
            "jobs",
            true,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1"}], "restartPolicy": "Never"}}}}),
        ),
        (
            "batch",
            "v1",
            "CronJob",
            "cronjobs",
            true,
            json!({"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}}),
        ),
        (
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
            json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}, "minReplicas": 1, "maxReplicas": 3}}),
        ),
        (
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            true,
            json!({"spec": {"rules": [{"host": "a.example"}]}}),
        ),
        (
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
            json!({"spec": {"podSelector": {}}}),
        ),
        (
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            json!({"spec": {"minAvailable": 1}}),
        ),
        (
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            json!({"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}),
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": []}),
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            json!({"rules": []}),
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"}}),
        ),
        (
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            json!({"spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "widgets", "kind": "Widget"}, "versions": [{"name": "v1", "served": true, "storage": true}]}}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_kind_supports_create_get_list_update_and_delete() {
    let sim = sim().await;
    let client = sim.client();
    for (group, version, kind, plural, namespaced, body) in builtin_kinds() {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), "default", &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let name = if kind == "CustomResourceDefinition" {
            "widgets.example.com".to_string()
        } else {
            format!("crud-{}", plural)
        };
        let mut obj: DynamicObject = serde_json::from_value(
            json!({"apiVersion": ar.api_version, "kind": kind, "metadata": {"name": name}}),
        )
        .unwrap();
        obj.data = body.clone();
        let created = api
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {kind}: {e}"));
        assert!(created.metadata.uid.is_some(), "{kind} has a uid");
        assert!(
            created.metadata.resource_version.is_some(),
            "{kind} has a resourceVersion"
        );
        assert!(
            created.metadata.creation_timestamp.is_some(),
            "{kind} has a creationTimestamp"
        );

        let got = api
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("get {kind}: {e}"));
        assert_eq!(got.metadata.uid, created.metadata.uid);
        let listed = api.list(&ListParams::default()).await.unwrap();
        assert!(
            listed
                .items
                .iter()
                .any(|o| o.metadata.name.as_deref() == Some(&name)),
            "{kind} is listed"
        );

        // Controllers write status concurrently, so update as a client does:
        // on a 409 Conflict, read again and retry.
        let mut attempt = 0;
        let updated = loop {
            let mut changed = api.get(&name).await.unwrap();
            changed.metadata.labels = Some([("touched".to_string(), "yes".to_string())].into());
            match api.replace(&name, &PostParams::default(), &changed).await {
                Ok(u) => break u,
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => attempt += 1,
                Err(e) => panic!("update {kind}: {e}"),
            }
        };
        assert_eq!(updated.metadata.labels.unwrap()["touched"], "yes");
        assert_ne!(
            updated.metadata.resource_version,
            got.metadata.resource_version
        );

        api.delete(&name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {kind}: {e}"));
        let (reason, code) = api_error(api.get(&name).await.unwrap_err());
        assert_eq!((reason.as_str(), code), ("NotFound", 404), "{kind} is gone");
    }
}

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"a": "1"}}),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_back_as_status_objects_with_the_right_reason() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    api.create(&PostParams::default(), &cm("one", json!({})))
        .await
        .unwrap();
    assert_eq!(
        api_error(
            api.create(&PostParams::default(), &cm("one", json!({})))
                .await
                .unwrap_err()
        ),
        ("AlreadyExists".into(), 409)
    );
    assert_eq!(
        api_error(api.get("none").await.unwrap_err()),
        ("NotFound".into(), 404)
    );
    assert_eq!(
        api_error(
            api.create(&PostParams::default(), &cm("Bad_Name", json!({})))
                .await
                .unwrap_err()
        ),
        ("Invalid".into(), 422)
    );

    let missing_ns: Api<ConfigMap> = Api::namespaced(sim.client(), "nowhere");
    let err = missing_ns
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 404);
            assert_eq!(s.message, "namespaces \"nowhere\" not found");
        }
        other => panic!("{other:?}"),
    }

    // Optimistic concurrency: an update carrying a stale resourceVersion.
    let first = api.get("one").await.unwrap();
    let mut a = first.clone();
    a.data = Some([("a".to_string(), "2".to_string())].into());
    api.replace("one", &PostParams::default(), &a)
        .await
        .unwrap();
    let mut b = first;
    b.data = Some([("a".to_string(), "3".to_string())].into());
    assert_eq!(
        api_error(
            api.replace("one", &PostParams::default(), &b)
                .await
                .unwrap_err()
        ),
        ("Conflict".into(), 409)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_paging_filter_and_split_lists() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    for (name, slot) in [
        ("a", "blue"),
        ("b", "green"),
        ("c", "blue"),
        ("d", "canary"),
    ] {
        api.create(
            &PostParams::default(),
            &cm(name, json!({"app": "api", "slot": slot})),
        )
        .await
        .unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("slot=blue"))
                .await
                .unwrap()
        ),
        vec!["a", "c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("slot in (green,canary)"))
                .await
                .unwrap()
        ),
        vec!["b", "d"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app=api,slot!=blue"))
                .await
                .unwrap()
        ),
        vec!["b", "d"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=c"))
                .await
                .unwrap()
        ),
        vec!["c"]
    );

    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(first.items.len(), 3);
    let rest = api
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(rest), vec!["d"]);

    // Metadata-only requests get PartialObjectMetadata, as kube-apiserver sends.
    let meta = api.get_metadata("a").await.unwrap();
    assert_eq!(
        meta.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    assert_eq!(meta.metadata.labels.unwrap()["slot"], "blue");
    let r = crate::common::http(
        sim.url(),
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[(
            "Accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )],
        "",
    )
    .await;
    let list = r.json();
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert!(list["items"][0].get("data").is_none());
    assert_eq!(list["items"][0]["metadata"]["name"], "a");

    // deletecollection honours the selector.
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("slot=blue"),
    )
    .await
    .unwrap();
    assert_eq!(
        names(api.list(&ListParams::default()).await.unwrap()),
        vec!["b", "d"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_moves_with_spec_changes_only_and_status_needs_its_subresource() {
    use k8s_openapi::api::apps::v1::Deployment;
    let sim = sim().await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "gen"}, "spec": {"replicas": 0,
        "selector": {"matchLabels": {"app": "gen"}},
        "template": {"metadata": {"labels": {"app": "gen"}}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}})).unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    let pp = PatchParams::default();
    let labelled = api
        .patch(
            "gen",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let scaled = api
        .patch("gen", &pp, &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));

    // A status written through the main resource is ignored; through /status it sticks.
    let ignored = api
        .patch(
            "gen",
            &pp,
            &Patch::Merge(json!({"status": {"collisionCount": 7}})),
        )
        .await
        .unwrap();
    assert_ne!(ignored.status.and_then(|s| s.collision_count), Some(7));
    let kept = api
        .patch_status(
            "gen",
            &pp,
            &Patch::Merge(json!({"status": {"collisionCount": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(kept.status.and_then(|s| s.collision_count), Some(7));
    assert_eq!(
        kept.metadata.generation,
        Some(2),
        "status writes do not bump generation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_strategic_and_json_patches_change_what_they_say() {
    use k8s_openapi::api::apps::v1::Deployment;
    let sim = sim().await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "default");
    let d: Deployment =
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"replicas": 0,
        "selector": {"matchLabels": {"app": "p"}},
        "template": {"metadata": {"labels": {"app": "p"}}, "spec": {"containers": [
            {"name": "web", "image": "web:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "side:1"}]}}}}))
        .unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    let pp = PatchParams::default();

    let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2", "env": [{"name": "B", "value": "2"}]}]}}}});
    let after = api.patch("p", &pp, &Patch::Strategic(smp)).await.unwrap();
    let cs = after.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(cs.len(), 2, "strategic merge keeps the sidecar");
    assert_eq!(cs[0].image.as_deref(), Some("web:2"));
    assert_eq!(cs[0].env.as_ref().unwrap().len(), 2, "env merged by name");

    let merge =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "o:1"}]}}}});
    let after = api.patch("p", &pp, &Patch::Merge(merge)).await.unwrap();
    assert_eq!(
        after.spec.unwrap().template.spec.unwrap().containers.len(),
        1,
        "merge patch replaces lists"
    );

    let ops: json_patch::Patch = serde_json::from_value(
        json!([{"op": "replace", "path": "/spec/replicas", "value": 0},
        {"op": "add", "path": "/metadata/labels", "value": {"j": "p"}}]),
    )
    .unwrap();
    let after = api.patch("p", &pp, &Patch::<()>::Json(ops)).await.unwrap();
    assert_eq!(after.metadata.labels.unwrap()["j"], "p");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_keeps_an_object_until_it_is_removed_and_namespaces_take_their_contents() {
    let sim = sim().await;
    let client = sim.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
    )
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = api.get("held").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(api.get("held").await.unwrap_err()).1, 404);

    api.create(&PostParams::default(), &cm("inside", json!({})))
        .await
        .unwrap();
    nss.delete("team", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(api.get("inside").await.unwrap_err()).1, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_answers_as_a_write_would_and_stores_nothing() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let answered = api
        .create(&pp, &cm("ghost", json!({"a": "b"})))
        .await
        .unwrap();
    assert_eq!(answered.metadata.name.as_deref(), Some("ghost"));
    assert!(answered.metadata.uid.is_some());
    assert_eq!(
        api_error(api.get("ghost").await.unwrap_err()).1,
        404,
        "nothing was stored"
    );
    let ap = PatchParams::apply("t").dry_run();
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ghost"}, "data": {"k": "v"}});
    api.patch("ghost", &ap, &Patch::Apply(body)).await.unwrap();
    assert_eq!(api_error(api.get("ghost").await.unwrap_err()).1, 404);
}
