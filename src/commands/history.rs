//! `maily-deploy history ENV`: the environment's deployments, newest first.

use comfy_table::{Table, presets};
use serde::Serialize;

use super::cluster;
use crate::cli::{GlobalArgs, OutputFormat};
use crate::k8s::snapshot_store::SnapshotStore;
use crate::output;
use crate::pipeline::snapshot::Snapshot;
use crate::traffic::report::RolloutReport;

#[derive(Serialize)]
struct Entry<'a> {
    deployment_id: &'a str,
    command: &'a str,
    rollback_to: Option<&'a str>,
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    outcome: &'static str,
    failure: Option<&'a str>,
    slot: Option<String>,
    images: std::collections::BTreeMap<String, String>,
    /// The Vercel deployment the run built or promoted.
    frontend: Option<String>,
    /// How far its traffic shift got: `5→25→50→100`, `10→25 failed`.
    traffic: Option<String>,
    /// Per layer: `backend v2 deployed`, `AI v1 carried over from blue`.
    layers: std::collections::BTreeMap<String, String>,
    user: &'a str,
    host: &'a str,
    ci_job: Option<&'a str>,
}

fn entry(s: &Snapshot) -> Entry<'_> {
    Entry {
        deployment_id: s.deployment_id.as_str(),
        command: &s.command,
        rollback_to: s.rollback_to.as_ref().map(|id| id.as_str()),
        started_at: s.started_at,
        finished_at: s.finished_at,
        outcome: s.outcome.as_str(),
        failure: s.failure.as_deref(),
        slot: s.target_slot.map(|s| s.to_string()),
        images: s.images().into_iter().collect(),
        frontend: frontend_of(s),
        traffic: traffic_of(s),
        layers: s
            .layers
            .iter()
            .map(|(l, r)| (format!("{l:?}").to_lowercase(), r.describe(*l)))
            .collect(),
        user: &s.actor.user,
        host: &s.actor.host,
        ci_job: s.actor.ci_job.as_deref(),
    }
}

fn frontend_of(s: &Snapshot) -> Option<String> {
    s.frontend.as_ref().map(|r| r.deployment_id.clone())
}

fn traffic_of(s: &Snapshot) -> Option<String> {
    s.rollout.as_ref().map(RolloutReport::summary)
}

/// The release of a snapshot in a few words: its tag (each layer's, when
/// the run carried one over), or the rollback.
fn release_words(s: &Snapshot) -> String {
    let carried = s
        .layers
        .values()
        .any(|r| r.how == crate::pipeline::layers::How::CarriedOver);
    let tag = if carried {
        s.layers
            .iter()
            .map(|(l, r)| r.describe(*l))
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        s.release
            .as_ref()
            .map(|r| r.image_tag.clone())
            .unwrap_or_else(|| "-".into())
    };
    match &s.rollback_to {
        Some(to) => format!("{tag} (rollback to {to})"),
        None => tag,
    }
}

pub async fn run(environment: &str, global: &GlobalArgs) -> anyhow::Result<i32> {
    let cx = cluster::context(environment, global, false, &[], false)?;
    let client = cx.kube().await?;
    let store = SnapshotStore::new(client, &cx.config.profile.namespace, environment);
    let all = store.list().await?;
    match global.output {
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "schema": "maily-deploy/history/v1",
                "environment": environment,
                "deployments": all.iter().map(entry).collect::<Vec<_>>(),
            });
            output::stdout_line(&serde_json::to_string_pretty(&doc)?);
        }
        OutputFormat::Human => {
            if all.is_empty() {
                output::stdout_line(&format!("no deployments of {environment} recorded yet"));
                return Ok(crate::exit_code::SUCCESS);
            }
            let mut table = Table::new();
            table.load_preset(presets::UTF8_BORDERS_ONLY);
            table.set_header(vec![
                "deployment",
                "started (UTC)",
                "outcome",
                "release",
                "slot",
                "traffic (%)",
                "frontend",
                "by",
            ]);
            for s in &all {
                table.add_row(vec![
                    s.deployment_id.to_string(),
                    s.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    s.outcome.as_str().to_string(),
                    release_words(s),
                    s.target_slot
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into()),
                    traffic_of(s).unwrap_or_else(|| "-".into()),
                    frontend_of(s).unwrap_or_else(|| "-".into()),
                    s.actor.to_string(),
                ]);
            }
            output::stdout_line(&table.to_string());
        }
    }
    Ok(crate::exit_code::SUCCESS)
}
