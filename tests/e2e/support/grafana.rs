//! Grafana as a stub answering as its HTTP API documents (folders,
//! dashboards, annotations), and a loopback endpoint serving the metrics
//! a service's Prometheus instrumentation would.

use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::World;

/// The service account token the stub accepts.
pub const TOKEN: &str = "glsa_monitor-test-token-5f1c";

/// Grafana as its HTTP API documents it: no folder yet, then every call
/// answered, each only with the service account token.
pub fn grafana(world: &World, environment: &str, patch_status: u16) -> MockServer {
    let folder = format!("maily-{environment}");
    let title = format!("Maily {environment}");
    let dashboard = format!("maily-platform-{environment}");
    let dashboard_title = format!("Maily platform ({environment})");
    world.rt.block_on(async {
        let g = MockServer::start().await;
        let auth = format!("Bearer {TOKEN}");
        let folder_path = format!("/api/folders/{folder}");
        Mock::given(method("GET"))
            .and(path(folder_path.as_str()))
            .and(header("authorization", auth.as_str()))
            .respond_with(
                ResponseTemplate::new(404).set_body_json(json!({"message": "folder not found"})),
            )
            .mount(&g)
            .await;
        Mock::given(method("POST"))
            .and(path("/api/folders"))
            .and(header("authorization", auth.as_str()))
            .and(body_partial_json(json!({"uid": folder, "title": title})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": 1, "uid": folder, "title": title,
                "url": format!("/dashboards/f/{folder}/{folder}"), "version": 1})))
            .mount(&g)
            .await;
        Mock::given(method("POST"))
            .and(path("/api/dashboards/db"))
            .and(header("authorization", auth.as_str()))
            .and(body_partial_json(json!({
                "folderUid": folder,
                "overwrite": true,
                "dashboard": {"uid": dashboard, "title": dashboard_title, "id": null}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": 7, "uid": dashboard, "status": "success", "version": 1,
                "url": format!("/d/{dashboard}/{dashboard}"), "slug": dashboard})))
            .mount(&g)
            .await;
        Mock::given(method("POST"))
            .and(path("/api/annotations"))
            .and(header("authorization", auth.as_str()))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"message": "Annotation added", "id": 42})),
            )
            .mount(&g)
            .await;
        Mock::given(method("PATCH"))
            .and(path("/api/annotations/42"))
            .and(header("authorization", auth.as_str()))
            .respond_with(
                ResponseTemplate::new(patch_status)
                    .set_body_json(json!({"message": "Annotation patched"})),
            )
            .mount(&g)
            .await;
        g
    })
}

/// A loopback endpoint answering `/metrics/<service>` as a FastAPI service's
/// Prometheus instrumentation would.
pub fn metrics_endpoint(world: &World) -> MockServer {
    world.rt.block_on(async {
        let m = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("content-type", "text/plain; version=0.0.4")
                    .set_body_string(
                        "# TYPE http_requests_total counter\nhttp_requests_total{handler=\"/health\",method=\"GET\",status=\"2xx\"} 3\n",
                    ),
            )
            .mount(&m)
            .await;
        m
    })
}
