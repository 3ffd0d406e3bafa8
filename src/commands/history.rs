//! `maily-deploy history ENV`: the environment's deployments, newest first.
//!
//! On a terminal, a table fitted to its width: the deployment id whole (the
//! word a user copies into `rollback`; it is also when the run started),
//! how it ended, the release, the slot, and the rest (traffic, who, notes)
//! in one column that wraps. In a pipe, plain columns (`output::table`),
//! the columns free of spaces first, so `awk '{print $1}'` gives the ids;
//! the last two (traffic, note) are free text. `--max N` keeps the newest
//! N, as `helm history --max` does; by default every snapshot kept, which
//! `--keep-snapshots` already bounds.

use serde::Serialize;

use super::cluster;
use crate::cli::{GlobalArgs, OutputFormat};
use crate::k8s::snapshot_store::SnapshotStore;
use crate::output::{self, table};
use crate::pipeline::layers::Layer;
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
    layers: std::collections::BTreeMap<Layer, String>,
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
        layers: s.layers.iter().map(|(l, r)| (*l, r.describe(*l))).collect(),
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

/// The newest `max` of `all` (newest first), or all of them.
fn newest(all: &[Snapshot], max: Option<u32>) -> &[Snapshot] {
    let n = max.map_or(all.len(), |m| all.len().min(m as usize));
    &all[..n]
}

/// What a deployment's row says beside its columns: the layers when one
/// was carried over, the rollback's target, why it failed, the frontend it
/// promoted, the CI job that ran it.
fn notes(s: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(to) = &s.rollback_to {
        out.push(format!("rollback to {to}"));
    }
    let carried = s
        .layers
        .values()
        .any(|r| r.how == crate::pipeline::layers::How::CarriedOver);
    if carried {
        out.push(
            s.layers
                .iter()
                .map(|(l, r)| r.describe(*l))
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    if let Some(f) = &s.failure {
        out.push(f.clone());
    }
    if let Some(f) = frontend_of(s) {
        out.push(format!("frontend {f}"));
    }
    if let Some(job) = &s.actor.ci_job {
        out.push(format!("CI {job}"));
    }
    out
}

fn release_of(s: &Snapshot) -> String {
    s.release
        .as_ref()
        .map(|r| r.image_tag.clone())
        .unwrap_or_else(|| "-".into())
}

fn slot_of(s: &Snapshot) -> String {
    s.target_slot
        .map(|s| s.to_string())
        .unwrap_or_else(|| "-".into())
}

fn by(s: &Snapshot) -> String {
    format!("{}@{}", s.actor.user, s.actor.host)
}

/// The least the details column gets before release and slot give up
/// their own columns to it.
const DETAILS_ROOM: usize = 30;

/// Whether the terminal's table has columns of its own for the release and
/// the slot: when they fit beside the id, the outcome and [`DETAILS_ROOM`]
/// for the details. Otherwise they lead the details (`v1 on green`), and
/// an 80-column terminal keeps a readable details column.
fn release_column_fits(shown: &[Snapshot], width: u16) -> bool {
    let widest = |header: &str, cell: &dyn Fn(&Snapshot) -> String| {
        shown
            .iter()
            .map(|s| cell(s).chars().count())
            .chain([header.len()])
            .max()
            .unwrap_or(0)
    };
    let id = widest("deployment", &|s| s.deployment_id.to_string());
    let outcome = widest("outcome", &|s| s.outcome.as_str().to_string());
    let release = widest("release", &release_of);
    let slot = widest("slot", &slot_of);
    // `│ ` and ` │` at the ends, three spaces between cells.
    let frame = 4 + 3 * 4;
    frame + id + outcome + release + slot + DETAILS_ROOM <= usize::from(width)
}

fn table_rows(all: &[Snapshot], release_column: bool) -> Vec<Vec<String>> {
    all.iter()
        .map(|s| {
            let mut details = Vec::new();
            if !release_column {
                details.push(format!("{} on {}", release_of(s), slot_of(s)));
            }
            if let Some(t) = traffic_of(s) {
                details.push(format!("traffic {t}"));
            }
            details.push(format!("by {}", by(s)));
            details.extend(notes(s));
            let mut row = vec![s.deployment_id.to_string(), s.outcome.as_str().to_string()];
            if release_column {
                row.extend([release_of(s), slot_of(s)]);
            }
            row.push(details.join("\n"));
            row
        })
        .collect()
}

/// The pipe's columns: those without spaces first, free text last.
const PLAIN_HEADER: [&str; 8] = [
    "deployment",
    "started",
    "outcome",
    "release",
    "slot",
    "by",
    "traffic",
    "note",
];

fn plain_rows(all: &[Snapshot]) -> Vec<Vec<String>> {
    all.iter()
        .map(|s| {
            vec![
                s.deployment_id.to_string(),
                s.started_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                s.outcome.as_str().to_string(),
                release_of(s),
                slot_of(s),
                by(s),
                traffic_of(s).unwrap_or_default(),
                notes(s).join("; "),
            ]
        })
        .collect()
}

/// The human form of `shown` in `layout`.
fn human(shown: &[Snapshot], layout: table::Layout) -> String {
    match layout {
        // The id never breaks: users copy it into `rollback`.
        table::Layout::Fit(width) => {
            let release_column = release_column_fits(shown, width);
            let header: &[&str] = if release_column {
                &["deployment", "outcome", "release", "slot", "details"]
            } else {
                &["deployment", "outcome", "details"]
            };
            table::fit(header, &table_rows(shown, release_column), width, &[0, 1])
        }
        table::Layout::Plain => table::plain(&PLAIN_HEADER, &plain_rows(shown)),
    }
}

pub async fn run(environment: &str, max: Option<u32>, global: &GlobalArgs) -> anyhow::Result<i32> {
    let cx = cluster::context(environment, global, false, &[], false)?;
    let client = cx.kube().await?;
    let store = SnapshotStore::new(client, &cx.config.profile.namespace, environment);
    let all = store.list().await?;
    let shown = newest(&all, max);
    match global.output {
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "schema": "maily-deploy/history/v1",
                "environment": environment,
                "total": all.len(),
                "deployments": shown.iter().map(entry).collect::<Vec<_>>(),
            });
            output::stdout_line(&serde_json::to_string_pretty(&doc)?);
        }
        OutputFormat::Human => {
            if all.is_empty() {
                output::stdout_line(&format!("no deployments of {environment} recorded yet"));
                return Ok(crate::exit_code::SUCCESS);
            }
            output::stdout_line(&human(shown, table::detect()));
            // On stderr: a pipe's lines stay rows.
            if shown.len() < all.len() {
                output::stderr_line(&format!(
                    "the newest {} of {} deployments; `--max {}` shows them all",
                    shown.len(),
                    all.len(),
                    all.len()
                ));
            }
        }
    }
    Ok(crate::exit_code::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::snapshot::Outcome;
    use crate::pipeline::snapshot::tests_support::sample;

    fn deployment(id: &str, tag: &str, outcome: Outcome, failure: Option<&str>) -> Snapshot {
        let mut s = sample();
        s.deployment_id = crate::pipeline::DeploymentId::parse("production", id).unwrap();
        s.outcome = outcome;
        s.failure = failure.map(String::from);
        s.actor.host = "build-runner-0042.ci.internal".into();
        s.release = Some(crate::k8s::values::Release {
            environment: "production".into(),
            deployment_id: id.into(),
            image_registry: "ghcr.io/maily".into(),
            image_tag: tag.into(),
            backup_url: String::new(),
            rollout_timeout_secs: 60,
            digests: Default::default(),
        });
        s
    }

    fn three() -> Vec<Snapshot> {
        let mut rollback = deployment("production-20250103-120000", "v1", Outcome::Succeeded, None);
        rollback.rollback_to = Some(
            crate::pipeline::DeploymentId::parse("production", "production-20250101-120000")
                .unwrap(),
        );
        vec![
            rollback,
            deployment(
                "production-20250102-120000",
                "v2-with-a-long-tag-name",
                Outcome::Failed,
                Some(
                    "deploy-backend: api-green: ImagePullBackOff: Back-off pulling image ghcr.io/maily/maily-api:v2-with-a-long-tag-name",
                ),
            ),
            deployment("production-20250101-120000", "v1", Outcome::Succeeded, None),
        ]
    }

    #[test]
    fn max_keeps_the_newest() {
        let all = three();
        assert_eq!(newest(&all, Some(2)).len(), 2);
        assert_eq!(newest(&all, Some(2))[0].deployment_id, all[0].deployment_id);
        assert_eq!(newest(&all, Some(10)).len(), 3);
        assert_eq!(newest(&all, None).len(), 3);
    }

    #[test]
    fn on_an_80_column_terminal_every_line_fits_and_every_id_is_whole() {
        let text = human(&three(), table::Layout::Fit(80));
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line:?}\n{text}");
        }
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("│ production-2025010"))
            .collect();
        for s in three() {
            assert!(
                rows.iter().any(|l| l.contains(s.deployment_id.as_str())),
                "{text}"
            );
        }
        // Release and slot lead the details; the details keep room to read.
        assert!(
            rows[1].contains("v2-with-a-long-tag-name on green"),
            "{text}"
        );
        assert!(text.contains("ImagePullBackOff"), "{text}");
        // Wide enough, release and slot have columns of their own.
        let wide = human(&three(), table::Layout::Fit(140));
        assert!(wide.lines().nth(1).unwrap().contains("release"), "{wide}");
    }

    #[test]
    fn in_a_pipe_each_deployment_is_one_line_of_plain_columns() {
        let text = human(&three(), table::Layout::Plain);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            PLAIN_HEADER.map(str::to_uppercase).to_vec()
        );
        let failed: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(failed[0], "production-20250102-120000");
        assert_eq!(failed[2], "failed");
        assert_eq!(failed[3], "v2-with-a-long-tag-name");
        assert_eq!(failed[4], "green");
        assert_eq!(failed[5], "ada@build-runner-0042.ci.internal");
        assert!(lines[2].ends_with("maily-api:v2-with-a-long-tag-name"));
        assert!(lines[1].ends_with("rollback to production-20250101-120000"));
    }
}
