//! The Grafana HTTP API, as far as monitor needs it: a folder per
//! environment, dashboards upserted into it, and a region annotation that
//! spans a deployment.
//!
//! Endpoints, from Grafana's HTTP API reference (grafana.com/docs, "Folder",
//! "Dashboard" and "Annotations" HTTP API):
//!
//! | call | endpoint |
//! |---|---|
//! | read a folder | `GET /api/folders/:uid` (404 when absent) |
//! | create a folder | `POST /api/folders` `{uid, title}` |
//! | create or update a dashboard | `POST /api/dashboards/db` `{dashboard, folderUid, overwrite, message}` |
//! | create an annotation | `POST /api/annotations` `{time, timeEnd, tags, text}` → `{id}` |
//! | change an annotation | `PATCH /api/annotations/:id` `{timeEnd, tags, text}` |
//!
//! Every call carries `Authorization: Bearer <GRAFANA_API_TOKEN>` (a
//! service account token). A 5xx or a connection failure is retried with
//! exponential backoff, a 429 waited out as its `Retry-After` says (both in
//! [`super::http`], shared with the Vercel client); anything else that is
//! not 2xx is an error naming the call and Grafana's `message`.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::{self, ApiError};

/// The tag every annotation of maily-deploy carries; the dashboards'
/// "Deployments" annotation query selects it.
pub const TAG: &str = "maily-deploy";

/// Grafana's limit on a dashboard's or folder's uid.
pub const MAX_UID: usize = 40;

/// A client of the Grafana HTTP API.
#[derive(Clone)]
pub struct Grafana {
    api: http::Api,
    /// The same API, asked once per call: for a create that must not be
    /// sent again blindly (a retried `POST /api/annotations` whose first
    /// answer was lost makes a second annotation).
    once: http::Api,
}

impl std::fmt::Debug for Grafana {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Grafana")
            .field("base", &self.api.base())
            .finish_non_exhaustive()
    }
}

/// A folder, as `GET /api/folders/:uid` and `POST /api/folders` return it
/// (the fields used).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Folder {
    pub uid: String,
    pub title: String,
    #[serde(default)]
    pub url: Option<String>,
}

/// What `POST /api/dashboards/db` answers (the fields used).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SavedDashboard {
    pub uid: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// The body of `POST /api/annotations`: an organization annotation (no
/// dashboard), a region from `time` to `time_end`, in epoch milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NewAnnotation {
    pub time: i64,
    pub time_end: i64,
    pub tags: Vec<String>,
    pub text: String,
}

/// The body of `PATCH /api/annotations/:id`: only the fields given change.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AnnotationPatch {
    pub time_end: i64,
    pub tags: Vec<String>,
    pub text: String,
}

#[derive(Deserialize)]
struct Created {
    id: i64,
}

/// The folder of an environment's dashboards: its uid and title.
pub fn folder_for(environment: &str) -> (String, String) {
    (
        clip_uid(&format!("maily-{environment}")),
        format!("Maily {environment}"),
    )
}

fn clip_uid(uid: &str) -> String {
    uid.chars().take(MAX_UID).collect()
}

/// A dashboard of `manifests/dashboards/` as it is saved for an
/// environment: the uid and title name the environment (one Grafana may
/// serve several), the numeric `id` is dropped (Grafana matches by uid, and
/// an id from another Grafana would be wrong), and the hidden `environment`
/// and `namespace` variables hold the environment's values, so every query
/// and the deployments' annotation query select it.
pub fn for_environment(mut dashboard: Value, environment: &str, namespace: &str) -> Value {
    let uid = dashboard
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or("maily")
        .to_string();
    let title = dashboard
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("Maily")
        .to_string();
    if let Some(obj) = dashboard.as_object_mut() {
        obj.insert("id".into(), Value::Null);
        obj.insert(
            "uid".into(),
            Value::String(clip_uid(&format!("{uid}-{environment}"))),
        );
        obj.insert(
            "title".into(),
            Value::String(format!("{title} ({environment})")),
        );
        let tags = obj
            .entry("tags")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(tags) = tags.as_array_mut() {
            let tag = Value::String(format!("environment:{environment}"));
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
    }
    if let Some(vars) = dashboard
        .pointer_mut("/templating/list")
        .and_then(Value::as_array_mut)
    {
        for var in vars {
            let value = match var.get("name").and_then(Value::as_str) {
                Some("environment") => environment,
                Some("namespace") => namespace,
                _ => continue,
            };
            var["query"] = Value::String(value.to_string());
            var["current"] = serde_json::json!({"text": value, "value": value});
            var["options"] = serde_json::json!([{"text": value, "value": value, "selected": true}]);
        }
    }
    dashboard
}

/// The tags of a deployment's annotation.
pub fn annotation_tags(environment: &str, deployment_id: &str, outcome: &str) -> Vec<String> {
    vec![
        TAG.to_string(),
        format!("environment:{environment}"),
        format!("deployment:{deployment_id}"),
        format!("outcome:{outcome}"),
    ]
}

/// What to check after a 4xx.
fn hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "; check GRAFANA_API_TOKEN (a service account token of this Grafana)",
        403 => {
            "; the token's service account needs the Editor role (folders, dashboards, annotations)"
        }
        404 => "; check GRAFANA_URL (the Grafana base URL, without /api)",
        412 => "; a dashboard with the same name exists in the folder under another uid",
        _ => "",
    }
}

impl Grafana {
    pub fn new(url: &str, token: &str) -> anyhow::Result<Grafana> {
        let with = |retries| {
            http::Api::new(
                "Grafana",
                url,
                token,
                Duration::from_secs(10),
                http::Backoff {
                    max_delay: Duration::from_secs(3),
                    retries,
                },
                hint,
            )
        };
        Ok(Grafana {
            api: with(4)?,
            once: with(0)?,
        })
    }

    pub fn base(&self) -> &str {
        self.api.base()
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.api
            .request(method, &format!("{}{path}", self.api.base()))
    }

    /// Send as [`http::Api::send`] does.
    async fn send(
        &self,
        what: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ApiError> {
        self.api.send(what, make).await
    }

    /// Send, and read the answer as `T`.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> anyhow::Result<T> {
        let resp = self
            .send(what, make)
            .await
            .map_err(ApiError::into_failure)?;
        self.api
            .json(what, resp)
            .await
            .map_err(ApiError::into_failure)
    }

    /// `GET /api/folders/:uid`; `None` when there is no such folder.
    pub async fn folder(&self, uid: &str) -> anyhow::Result<Option<Folder>> {
        let what = format!("reading folder {uid}");
        let path = format!("/api/folders/{uid}");
        match self.send(&what, || self.request(Method::GET, &path)).await {
            Ok(resp) => Ok(Some(
                self.api
                    .json(&what, resp)
                    .await
                    .map_err(ApiError::into_failure)?,
            )),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e.into_failure()),
        }
    }

    /// The folder with this uid, created (`POST /api/folders`) when absent;
    /// the bool says whether it was created.
    pub async fn ensure_folder(&self, uid: &str, title: &str) -> anyhow::Result<(Folder, bool)> {
        if let Some(found) = self.folder(uid).await? {
            return Ok((found, false));
        }
        let what = format!("creating folder {uid}");
        let body = serde_json::json!({"uid": uid, "title": title});
        let folder = self
            .json(&what, || {
                self.request(Method::POST, "/api/folders").json(&body)
            })
            .await?;
        Ok((folder, true))
    }

    /// `POST /api/dashboards/db`: create or replace the dashboard with the
    /// same uid, in the folder.
    pub async fn upsert_dashboard(
        &self,
        dashboard: &Value,
        folder_uid: &str,
        message: &str,
    ) -> anyhow::Result<SavedDashboard> {
        let uid = dashboard.get("uid").and_then(Value::as_str).unwrap_or("?");
        let what = format!("saving dashboard {uid}");
        let body = serde_json::json!({
            "dashboard": dashboard,
            "folderUid": folder_uid,
            "overwrite": true,
            "message": message,
        });
        self.json(&what, || {
            self.request(Method::POST, "/api/dashboards/db").json(&body)
        })
        .await
    }

    /// `POST /api/annotations`; the new annotation's id. Each call makes
    /// one, so it is not simply sent again: after a failure that may have
    /// landed (a timeout, a 5xx from a proxy), the deployment's annotation
    /// is looked up by its `deployment:` tag first, and only when Grafana
    /// has none is the create asked again.
    pub async fn create_annotation(&self, a: &NewAnnotation) -> anyhow::Result<i64> {
        let what = "creating the deployment's annotation";
        let tag = a.tags.iter().find(|t| t.starts_with("deployment:"));
        let mut last = None;
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
                if let Some(tag) = tag
                    && let Some(id) = self.annotation_tagged(tag).await?
                {
                    return Ok(id);
                }
            }
            let sent = self
                .once
                .send(what, || {
                    self.request(Method::POST, "/api/annotations").json(a)
                })
                .await;
            match sent {
                Ok(resp) => {
                    let created: Created = self
                        .api
                        .json(what, resp)
                        .await
                        .map_err(ApiError::into_failure)?;
                    return Ok(created.id);
                }
                // Refused (4xx): asking again gets the same answer.
                Err(e @ ApiError::Rejected { .. }) => return Err(e.into_failure()),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .map(ApiError::into_failure)
            .unwrap_or_else(|| anyhow::anyhow!("{what}: no answer")))
    }

    /// `GET /api/annotations?tags=<tag>&type=annotation`: the newest
    /// annotation with `tag`, if any.
    async fn annotation_tagged(&self, tag: &str) -> anyhow::Result<Option<i64>> {
        let what = format!("looking for the annotation tagged {tag}");
        let found: Vec<Created> = self
            .json(&what, || {
                self.request(Method::GET, "/api/annotations").query(&[
                    ("tags", tag),
                    ("type", "annotation"),
                    ("limit", "1"),
                ])
            })
            .await?;
        Ok(found.first().map(|c| c.id))
    }

    /// `PATCH /api/annotations/:id`.
    pub async fn patch_annotation(&self, id: i64, p: &AnnotationPatch) -> anyhow::Result<()> {
        let what = format!("closing annotation {id}");
        let path = format!("/api/annotations/{id}");
        self.send(&what, || self.request(Method::PATCH, &path).json(p))
            .await
            .map_err(ApiError::into_failure)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shipped() -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("manifests/dashboards/maily-platform.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn a_dashboard_is_saved_per_environment_by_uid() {
        let d = for_environment(shipped(), "staging", "maily-staging");
        assert_eq!(d["id"], Value::Null);
        assert_eq!(d["uid"], "maily-platform-staging");
        assert_eq!(d["title"], "Maily platform (staging)");
        assert!(
            d["tags"]
                .as_array()
                .unwrap()
                .contains(&json!("environment:staging"))
        );
        let vars = d["templating"]["list"].as_array().unwrap();
        let var = |n: &str| vars.iter().find(|v| v["name"] == n).unwrap().clone();
        assert_eq!(var("namespace")["query"], "maily-staging");
        assert_eq!(var("namespace")["current"]["value"], "maily-staging");
        assert_eq!(var("environment")["query"], "staging");
    }

    #[test]
    fn the_shipped_dashboard_shows_rate_errors_and_p99_by_service_and_slot() {
        let d = shipped();
        let exprs: Vec<String> = d["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().unwrap().clone())
            .map(|t| t["expr"].as_str().unwrap().to_string())
            .collect();
        for wanted in [
            "http_requests_total",
            "status=~\"5..\"",
            "histogram_quantile(0.99",
        ] {
            assert!(
                exprs.iter().any(|e| e.contains(wanted)),
                "{wanted}: {exprs:#?}"
            );
        }
        assert!(exprs.iter().all(|e| e.contains("namespace=\"$namespace\"")));
        assert!(
            exprs[..3].iter().all(|e| e.contains("by (job, slot")),
            "{exprs:#?}"
        );
        let deployments = &d["annotations"]["list"][1]["target"]["tags"];
        assert_eq!(deployments[0], TAG);
        assert_eq!(deployments[1], "environment:$environment");
    }

    #[test]
    fn uids_stay_within_grafanas_limit() {
        let d = for_environment(
            json!({"uid": "a-very-long-dashboard-uid-indeed", "title": "x"}),
            "production-eu-west",
            "ns",
        );
        assert_eq!(d["uid"].as_str().unwrap().len(), MAX_UID);
        assert_eq!(folder_for("staging").0, "maily-staging");
    }

    #[test]
    fn annotation_bodies_have_the_documented_field_names() {
        let a = NewAnnotation {
            time: 1,
            time_end: 2,
            tags: annotation_tags("staging", "staging-20250101-120000", "in-progress"),
            text: "t".into(),
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"time": 1, "timeEnd": 2, "text": "t", "tags": [
                "maily-deploy", "environment:staging",
                "deployment:staging-20250101-120000", "outcome:in-progress"]})
        );
    }

    /// A create whose answer was lost (a 502 from a proxy after Grafana
    /// made it) is not sent again: the deployment's annotation is found by
    /// its tag, and there is one annotation, not two.
    #[tokio::test]
    async fn an_annotation_whose_create_answer_was_lost_is_found_not_made_twice() {
        use wiremock::matchers::{method, path, query_param};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/annotations"))
            .respond_with(ResponseTemplate::new(502))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/annotations"))
            .and(query_param("tags", "deployment:staging-20261201-110000"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([
                {"id": 77, "dashboardUID": "", "time": 1, "timeEnd": 1,
                 "tags": ["maily-deploy", "deployment:staging-20261201-110000"], "text": "x"}
            ])))
            .mount(&server)
            .await;
        let grafana = Grafana::new(&server.uri(), "glsa_token_0123456789").unwrap();
        let id = grafana
            .create_annotation(&NewAnnotation {
                time: 1,
                time_end: 1,
                tags: annotation_tags("staging", "staging-20261201-110000", "in-progress"),
                text: "deploying".into(),
            })
            .await
            .unwrap();
        assert_eq!(id, 77);
        server.verify().await;
    }
}
