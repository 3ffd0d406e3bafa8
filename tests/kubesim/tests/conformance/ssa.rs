//! Server-side apply through the kube client: create, update, field removal,
//! conflicts between managers, force, and managedFields.

use crate::common::sim;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

fn deployment(replicas: i64, image: &str, labels: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "api", "image": image}]}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_updates_and_removes_fields_it_no_longer_applies() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "default");
    let pp = PatchParams::apply("maily-deploy");
    let created = api
        .patch(
            "api",
            &pp,
            &Patch::Apply(deployment(
                1,
                "api:1",
                json!({"app": "api", "slot": "blue"}),
            )),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let mf = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("maily-deploy"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    assert_eq!(mf[0].fields_type.as_deref(), Some("FieldsV1"));

    let updated = api
        .patch(
            "api",
            &pp,
            &Patch::Apply(deployment(1, "api:2", json!({"app": "api"}))),
        )
        .await
        .unwrap();
    let labels = updated.metadata.labels.unwrap();
    assert!(
        !labels.contains_key("slot"),
        "a label no longer applied is removed"
    );
    assert_eq!(
        updated.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("api:2")
    );
    assert_eq!(updated.metadata.generation, Some(2));

    // Applying the same thing again changes nothing, not even the resourceVersion.
    let again = api
        .patch(
            "api",
            &pp,
            &Patch::Apply(deployment(1, "api:2", json!({"app": "api"}))),
        )
        .await
        .unwrap();
    assert_eq!(again.metadata.generation, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_managers_field_conflicts_unless_forced() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "default");
    api.patch(
        "api",
        &PatchParams::apply("maily-deploy"),
        &Patch::Apply(deployment(2, "api:1", json!({}))),
    )
    .await
    .unwrap();

    let err = api
        .patch(
            "api",
            &PatchParams::apply("hpa-like"),
            &Patch::Apply(deployment(5, "api:1", json!({}))),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
            assert!(
                s.message.contains("conflict with \"maily-deploy\""),
                "{}",
                s.message
            );
            assert!(s.message.contains(".spec.replicas"), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        api.get("api").await.unwrap().spec.unwrap().replicas,
        Some(2),
        "nothing changed"
    );

    // The same value is no conflict: ownership is shared.
    api.patch(
        "api",
        &PatchParams::apply("hpa-like"),
        &Patch::Apply(deployment(2, "api:1", json!({}))),
    )
    .await
    .unwrap();

    let forced = api
        .patch(
            "api",
            &PatchParams::apply("hpa-like").force(),
            &Patch::Apply(deployment(5, "api:1", json!({}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.unwrap().replicas, Some(5));
    let mf = forced.metadata.managed_fields.unwrap();
    let owner_of_replicas: Vec<&str> = mf
        .iter()
        .filter(|e| {
            e.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:spec"].get("f:replicas").is_some())
        })
        .filter_map(|e| e.manager.as_deref())
        .collect();
    assert_eq!(owner_of_replicas, vec!["hpa-like"], "force moved ownership");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_by_another_writer_is_recorded_and_then_conflicts_with_apply() {
    let sim = sim().await;
    let api: Api<Deployment> = Api::namespaced(sim.client(), "default");
    api.patch(
        "api",
        &PatchParams::apply("maily-deploy"),
        &Patch::Apply(deployment(2, "api:1", json!({}))),
    )
    .await
    .unwrap();
    let pp = PatchParams {
        field_manager: Some("kubectl-scale".into()),
        ..Default::default()
    };
    let scaled = api
        .patch("api", &pp, &Patch::Merge(json!({"spec": {"replicas": 4}})))
        .await
        .unwrap();
    let mf = scaled.metadata.managed_fields.unwrap();
    assert!(
        mf.iter()
            .any(|e| e.manager.as_deref() == Some("kubectl-scale")
                && e.operation.as_deref() == Some("Update"))
    );
    let err = api
        .patch(
            "api",
            &PatchParams::apply("maily-deploy"),
            &Patch::Apply(deployment(2, "api:1", json!({}))),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
}
