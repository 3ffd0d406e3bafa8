//! CustomResourceDefinitions make their kinds served and discoverable.

use crate::common::{api_error, sim};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::Discovery;
use serde_json::json;

fn crd(group: &str, kind: &str, plural: &str) -> serde_json::Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List")},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_crds_serve_gateway_prometheus_and_cert_manager_kinds() {
    let sim = sim().await;
    let client = sim.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let kinds = [
        ("gateway.networking.k8s.io", "HTTPRoute", "httproutes"),
        ("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
        ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
        ("cert-manager.io", "Certificate", "certificates"),
    ];
    for (g, k, p) in kinds {
        let applied = crds
            .patch(
                &format!("{p}.{g}"),
                &PatchParams::apply("test"),
                &Patch::Apply(crd(g, k, p)),
            )
            .await
            .unwrap();
        let established = applied
            .status
            .unwrap()
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{k} CRD is Established");
    }
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    for (g, k, _) in kinds {
        let gvk = kube::core::GroupVersionKind::gvk(g, "v1", k);
        let (ar, caps) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("{k} is discoverable"));
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
        let obj = json!({"apiVersion": format!("{g}/v1"), "kind": k, "metadata": {"name": "maily"},
            "spec": {"anything": ["goes"]}});
        let created = api
            .patch(
                "maily",
                &PatchParams::apply("maily-deploy"),
                &Patch::Apply(obj),
            )
            .await
            .unwrap();
        assert_eq!(created.data["spec"]["anything"][0], "goes");
        assert_eq!(api.list(&Default::default()).await.unwrap().items.len(), 1);
    }

    // The same through aggregated discovery (one request for /apis).
    let aggregated = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .unwrap();
    for (g, k, _) in kinds {
        let gvk = kube::core::GroupVersionKind::gvk(g, "v1", k);
        assert!(
            aggregated.resolve_gvk(&gvk).is_some(),
            "{k} is in aggregated discovery"
        );
    }
    let deploy = kube::core::GroupVersionKind::gvk("apps", "v1", "Deployment");
    assert!(aggregated.resolve_gvk(&deploy).is_some());
    let pod = kube::core::GroupVersionKind::gvk("", "v1", "Pod");
    assert!(
        aggregated.resolve_gvk(&pod).is_some(),
        "the core group is there too"
    );

    // Deleting the CRD stops serving the kind and removes its objects.
    crds.delete(
        "httproutes.gateway.networking.k8s.io",
        &DeleteParams::default(),
    )
    .await
    .unwrap();
    let ar = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    assert_eq!(api_error(api.get("maily").await.unwrap_err()).1, 404);
}
