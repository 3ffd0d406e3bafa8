//! The rollout record: a ConfigMap (`maily-deploy-rollout`) in the
//! environment's namespace holding where the rollout stands and any request
//! (promote, abort) another terminal has made.
//!
//! The run writes only `data["rollout.json"]`; `promote` and `abort` write
//! only `data["request.json"]`. Each writes its own key with a merge patch,
//! so neither ever overwrites the other, and a second terminal needs no
//! lock to be heard: the run holding the lock reads the request within a
//! poll and answers in the record. Kept after the run (its final state is
//! what `status` shows) and overwritten by the next rollout.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use super::analysis::Measurement;
use super::report::RolloutReport;
use crate::k8s::client::{retry, status_code};
use crate::k8s::slot::Slot;
use crate::pipeline::DeploymentId;

pub const NAME: &str = "maily-deploy-rollout";
const STATE_KEY: &str = "rollout.json";
const REQUEST_KEY: &str = "request.json";
const HEARTBEAT_KEY: &str = "heartbeat";
const REPORT_KEY: &str = "report.json";

/// How often a run driving a rollout says it is alive.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// A run not heard from this long is not driving its rollout (killed, or
/// cut off from the cluster), whatever its lease says: the lease outlives
/// a killed run by up to its TTL.
pub const SILENT_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// At a step below 100%, pausing and analysing.
    Step,
    /// A step's pause is over but analysis has no verdict yet.
    Holding,
    /// At 100%, the old slot still scaled.
    Grace,
    /// Done: everyone on the new slot.
    Completed,
    /// Users were put back on the old slot.
    RolledBack,
    /// Failed, and `--no-rollback` left users where the failure found them.
    Failed,
}

impl Stage {
    pub fn is_final(self) -> bool {
        matches!(self, Stage::Completed | Stage::RolledBack | Stage::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Step => "step",
            Stage::Holding => "holding",
            Stage::Grace => "grace",
            Stage::Completed => "completed",
            Stage::RolledBack => "rolled_back",
            Stage::Failed => "failed",
        }
    }
}

/// The rollout's state, as the run last wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub deployment_id: DeploymentId,
    /// The slot users were on; `None` on an environment's first switch.
    pub from: Option<Slot>,
    pub to: Slot,
    /// The image tag the new slot runs.
    pub version: String,
    pub steps: Vec<u32>,
    /// Index into `steps` of the current step.
    pub step: usize,
    pub percent: u32,
    pub stage: Stage,
    pub since: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the grace period ends (stage `Grace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_measurement: Option<Measurement>,
    /// The frontend deployment to promote at 100% (deploy-frontend's
    /// record), so `promote` can finish a rollout whose run died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<crate::phases::deploy_frontend::FrontendRecord>,
    /// The last request the run acted on, and what it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<Answer>,
    /// Why the rollout ended, when it did not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The command line of the run walking it, after `maily-deploy` (its
    /// own flags only): what `status` suggests to rerun it with when the
    /// run is gone. Absent in records of older versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command_line: Vec<String>,
}

/// What another terminal asks of the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Everyone to the new slot now.
    Promote,
    /// End the current step now and go on to the next (`promote --step`).
    Step,
    /// Everyone back to the old slot now.
    Abort,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Step => "promote --step",
            Action::Abort => "abort",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Unique per request, so an answer names the request it answers.
    pub id: String,
    /// The rollout it is meant for: a request left over from an earlier
    /// rollout is never acted on.
    pub deployment_id: DeploymentId,
    pub action: Action,
    /// `user@host`.
    pub by: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub request: String,
    pub action: Action,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// The record's halves, and the run's heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub rollout: Option<Rollout>,
    pub request: Option<Request>,
    /// When the run driving the rollout last said it was alive.
    pub heartbeat: Option<DateTime<Utc>>,
    /// The rollout's report so far.
    pub report: Option<RolloutReport>,
}

impl Record {
    /// The request the rollout has not answered yet, if it is meant for it.
    pub fn pending(&self) -> Option<&Request> {
        let rollout = self.rollout.as_ref()?;
        let request = self.request.as_ref()?;
        let answered = rollout
            .answered
            .as_ref()
            .is_some_and(|a| a.request == request.id);
        (request.deployment_id == rollout.deployment_id && !answered && !rollout.stage.is_final())
            .then_some(request)
    }
}

/// The record from a ConfigMap's data; unreadable halves are left out
/// (a record written by a newer version never stops an older one).
pub fn decode(data: Option<&BTreeMap<String, String>>) -> Record {
    let get = |key| data.and_then(|d| d.get(key));
    Record {
        rollout: get(STATE_KEY).and_then(|t| serde_json::from_str(t).ok()),
        request: get(REQUEST_KEY).and_then(|t| serde_json::from_str(t).ok()),
        heartbeat: get(HEARTBEAT_KEY)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        report: get(REPORT_KEY).and_then(|t| serde_json::from_str(t).ok()),
    }
}

impl Record {
    /// The report of `deployment_id`'s rollout, if the record is still its.
    pub fn report_of(&self, deployment_id: &DeploymentId) -> Option<RolloutReport> {
        self.rollout
            .as_ref()
            .filter(|r| &r.deployment_id == deployment_id)
            .and(self.report.clone())
    }

    /// Whether the run driving the rollout was heard from lately.
    pub fn heard_since(&self, now: DateTime<Utc>) -> Option<std::time::Duration> {
        self.heartbeat
            .map(|t| (now - t).to_std().unwrap_or_default())
    }

    pub fn run_is_silent(&self, now: DateTime<Utc>) -> bool {
        self.heard_since(now).is_none_or(|d| d > SILENT_AFTER)
    }
}

/// Say the run is alive every [`HEARTBEAT`] until the task is aborted (or
/// the process dies, which is the point).
pub fn beat(client: Client, namespace: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = Utc::now().to_rfc3339();
            if let Err(e) = write_key(&client, &namespace, HEARTBEAT_KEY, now).await {
                tracing::debug!("rollout heartbeat: {e:#}");
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    })
}

fn api(client: &Client, namespace: &str) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), namespace)
}

/// Read the record; an absent one is empty.
pub async fn read(client: &Client, namespace: &str) -> anyhow::Result<Record> {
    let api = api(client, namespace);
    let cm = retry("reading the rollout record", || api.get_opt(NAME))
        .await
        .with_context(|| format!("reading ConfigMap {NAME}"))?;
    Ok(cm.map_or_else(Record::default, |cm| decode(cm.data.as_ref())))
}

/// Write one key, creating the ConfigMap if it is not there yet.
async fn write_key(
    client: &Client,
    namespace: &str,
    key: &str,
    json: String,
) -> anyhow::Result<()> {
    write_keys(client, namespace, [(key, json)].into_iter().collect()).await
}

/// Write keys together (one merge patch), creating the ConfigMap if it is
/// not there yet.
async fn write_keys(
    client: &Client,
    namespace: &str,
    data: BTreeMap<&str, String>,
) -> anyhow::Result<()> {
    let api = api(client, namespace);
    let patch = serde_json::json!({ "data": data });
    let params = PatchParams::default();
    let p = Patch::Merge(&patch);
    match retry("writing the rollout record", || {
        api.patch(NAME, &params, &p)
    })
    .await
    {
        Ok(_) => return Ok(()),
        Err(e) if status_code(&e) == Some(404) => {}
        Err(e) => return Err(e).with_context(|| format!("writing ConfigMap {NAME}")),
    }
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": NAME,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "maily",
                "app.kubernetes.io/managed-by": "maily-deploy",
            }
        },
        "data": data,
    }))?;
    let post = PostParams::default();
    match retry("creating the rollout record", || api.create(&post, &cm)).await {
        Ok(_) => Ok(()),
        // Created by the other writer in between: patch it.
        Err(e) if status_code(&e) == Some(409) => {
            retry("writing the rollout record", || {
                api.patch(NAME, &params, &p)
            })
            .await
            .with_context(|| format!("writing ConfigMap {NAME}"))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("creating ConfigMap {NAME}")),
    }
}

/// The run's half: where the rollout stands and, when given, its report
/// so far (what the snapshot keeps even if the run is interrupted before
/// it can hand the report over).
pub async fn write_rollout(
    client: &Client,
    namespace: &str,
    r: &Rollout,
    report: Option<&RolloutReport>,
) -> anyhow::Result<()> {
    let mut data = BTreeMap::new();
    data.insert(STATE_KEY, redacted_json(r)?);
    if let Some(report) = report {
        data.insert(REPORT_KEY, redacted_json(report)?);
    }
    write_keys(client, namespace, data).await
}

/// Another terminal's half.
pub async fn write_request(client: &Client, namespace: &str, r: &Request) -> anyhow::Result<()> {
    write_key(client, namespace, REQUEST_KEY, redacted_json(r)?).await
}

/// JSON for the record, every string scrubbed as printed text is: the
/// record's `failure` and report carry error text (a provider repeating
/// the request's token), and `status` prints them on any machine.
fn redacted_json<T: Serialize>(v: &T) -> anyhow::Result<String> {
    let mut value = serde_json::to_value(v)?;
    crate::redact::scrub_json(&mut value);
    Ok(serde_json::to_string(&value)?)
}

/// Close the rollout of `deployment_id` with its final stage, if `record`
/// (as the caller just read it) is still that rollout's and not closed yet.
pub async fn close(
    client: &Client,
    namespace: &str,
    record: &Record,
    deployment_id: &DeploymentId,
    stage: Stage,
    failure: Option<String>,
) -> anyhow::Result<()> {
    let Some(mut rollout) = record.rollout.clone() else {
        return Ok(());
    };
    if &rollout.deployment_id != deployment_id || rollout.stage.is_final() {
        return Ok(());
    }
    rollout.stage = stage;
    rollout.updated_at = Utc::now();
    rollout.failure = failure;
    write_rollout(client, namespace, &rollout, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> DeploymentId {
        DeploymentId::parse("staging", text).unwrap()
    }

    fn rollout(stage: Stage) -> Rollout {
        Rollout {
            deployment_id: id("staging-20260101-120000"),
            from: Some(Slot::Blue),
            to: Slot::Green,
            version: "v2".into(),
            steps: vec![50, 100],
            step: 0,
            percent: 50,
            stage,
            since: Utc::now(),
            updated_at: Utc::now(),
            grace_until: None,
            last_measurement: None,
            frontend: None,
            answered: None,
            failure: None,
            command_line: Vec::new(),
        }
    }

    fn request(deployment_id: &str) -> Request {
        Request {
            id: "r1".into(),
            deployment_id: id(deployment_id),
            action: Action::Abort,
            by: "ops@laptop".into(),
            at: Utc::now(),
        }
    }

    #[test]
    fn a_request_is_pending_until_answered_and_only_for_its_rollout() {
        let mut record = Record {
            rollout: Some(rollout(Stage::Step)),
            request: Some(request("staging-20260101-120000")),
            heartbeat: None,
            report: None,
        };
        assert_eq!(record.pending().map(|r| r.action), Some(Action::Abort));
        record.rollout.as_mut().unwrap().answered = Some(Answer {
            request: "r1".into(),
            action: Action::Abort,
            by: "ops@laptop".into(),
            at: Utc::now(),
        });
        assert!(record.pending().is_none());
        let stale = Record {
            rollout: Some(rollout(Stage::Step)),
            request: Some(request("staging-20251231-090000")),
            heartbeat: None,
            report: None,
        };
        assert!(stale.pending().is_none(), "a leftover request is ignored");
        let done = Record {
            rollout: Some(rollout(Stage::Completed)),
            request: Some(request("staging-20260101-120000")),
            heartbeat: None,
            report: None,
        };
        assert!(done.pending().is_none());
    }

    #[test]
    fn what_the_record_keeps_is_scrubbed() {
        let mut r = rollout(Stage::RolledBack);
        r.failure = Some("promote: 401 Authorization: Bearer rollout-Unregistered-5c1d".into());
        let report = serde_json::json!({"analysis": ["x-api-key: sk-rollout-unregistered-1"]});
        for text in [redacted_json(&r).unwrap(), redacted_json(&report).unwrap()] {
            assert!(!text.contains("Unregistered"), "{text}");
            assert!(!text.contains("unregistered"), "{text}");
        }
        let back: Rollout = serde_json::from_str(&redacted_json(&r).unwrap()).unwrap();
        assert_eq!(back.stage, Stage::RolledBack);
    }

    /// The record's halves as a run before the records were typed wrote
    /// them: the report and the frontend are the ones of the snapshot
    /// fixture of that time, the rest is the unchanged `Rollout`.
    #[test]
    fn a_record_written_before_the_records_were_typed_reads_back_whole() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/snapshots/all-records-v1.json");
        let snapshot: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let measurement = snapshot["rollout"]["steps"][0]["measurements"][0].clone();
        let rollout = serde_json::json!({
            "deployment_id": "production-20250301-090000",
            "from": "blue",
            "to": "green",
            "version": "v1.5.0",
            "steps": [25, 100],
            "step": 1,
            "percent": 100,
            "stage": "grace",
            "since": "2025-03-01T09:06:00Z",
            "updated_at": "2025-03-01T09:07:00Z",
            "grace_until": "2025-03-01T09:11:00Z",
            "last_measurement": measurement,
            "frontend": snapshot["frontend"],
            "answered": {
                "request": "promote-1",
                "action": "promote",
                "by": "ops@laptop",
                "at": "2025-03-01T09:05:45Z"
            },
            "failure": "a failure kept as text"
        });
        let report = snapshot["rollout"].clone();
        let data = BTreeMap::from([
            (STATE_KEY.to_string(), rollout.to_string()),
            (REPORT_KEY.to_string(), report.to_string()),
        ]);
        let record = decode(Some(&data));
        let (Some(r), Some(kept)) = (&record.rollout, &record.report) else {
            panic!("a half was dropped: {record:?}");
        };
        assert_eq!(serde_json::to_value(r).unwrap(), rollout);
        assert_eq!(serde_json::to_value(kept).unwrap(), report);
        let id: DeploymentId = "production-20250301-090000".parse().unwrap();
        assert!(record.report_of(&id).is_some());
    }

    #[test]
    fn halves_decode_independently() {
        let mut data = BTreeMap::new();
        data.insert(
            STATE_KEY.to_string(),
            serde_json::to_string(&rollout(Stage::Grace)).unwrap(),
        );
        data.insert(REQUEST_KEY.to_string(), "{not json".to_string());
        let record = decode(Some(&data));
        assert_eq!(record.rollout.unwrap().stage, Stage::Grace);
        assert!(record.request.is_none());
        assert_eq!(decode(None), Record::default());
    }
}
