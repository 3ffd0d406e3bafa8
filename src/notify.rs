//! Slack notifications: a message when a run starts, succeeds, fails, or
//! is a rollback, to `SLACK_WEBHOOK_URL` (an incoming webhook: `POST` of
//! JSON with `text` and Block Kit `blocks`; Slack answers `200 ok`).
//!
//! A notification is a courtesy: Slack being down, slow or refusing never
//! changes a deploy's outcome. Sends are bounded in time and logged on
//! failure, never raised. The webhook URL is a secret (it is the
//! credential), so it is never printed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::pipeline::Context;
use crate::pipeline::report::{Outcome, RunReport};
use crate::pipeline::snapshot::Actor;

/// What the message is about.
pub enum Event<'a> {
    Started {
        command: &'a str,
        environment: &'a str,
        deployment_id: &'a str,
        target: Option<&'a str>,
    },
    Finished {
        command: &'a str,
        report: &'a RunReport,
        target: Option<&'a str>,
    },
}

fn what(command: &str, target: Option<&str>) -> String {
    match (command, target) {
        ("rollback", Some(t)) => format!("rollback to {t}"),
        ("rollback", None) => "rollback".into(),
        _ => "deployment".into(),
    }
}

/// The message for an event, as Slack's incoming webhooks take it. Pure,
/// so its shape is tested without Slack.
pub fn message(event: &Event<'_>, actor: &Actor) -> Value {
    let (headline, fields) = match event {
        Event::Started {
            command,
            environment,
            deployment_id,
            target,
        } => (
            format!(
                ":rocket: {} of *{environment}* started: `{deployment_id}`",
                what(command, *target)
            ),
            vec![
                ("Environment", environment.to_string()),
                ("Deployment", deployment_id.to_string()),
                ("By", actor.to_string()),
            ],
        ),
        Event::Finished {
            command,
            report,
            target,
        } => {
            let id = report
                .deployment_id
                .as_ref()
                .map(|d| d.to_string())
                .unwrap_or_default();
            let secs = format!("{:.1} s", report.duration_ms as f64 / 1000.0);
            let mut fields = vec![
                ("Environment", report.environment.clone()),
                ("Deployment", id.clone()),
                ("By", actor.to_string()),
                ("Duration", secs),
            ];
            let headline = match report.outcome {
                Outcome::Succeeded | Outcome::Planned => {
                    format!(
                        ":white_check_mark: {} of *{}* succeeded: `{id}`",
                        what(command, *target),
                        report.environment
                    )
                }
                Outcome::Failed | Outcome::PlanFailed => {
                    let phase = report
                        .phases
                        .iter()
                        .find(|p| p.error.is_some())
                        .map(|p| p.id.to_string())
                        .unwrap_or_else(|| "start".into());
                    let reason = report
                        .error
                        .as_ref()
                        .map(|e| e.message.clone())
                        .unwrap_or_default();
                    fields.push(("Failed phase", phase));
                    fields.push(("Reason", reason));
                    fields.push(("Exit code", report.exit_code.to_string()));
                    format!(
                        ":x: {} of *{}* failed: `{id}`",
                        what(command, *target),
                        report.environment
                    )
                }
            };
            (headline, fields)
        }
    };
    let text = std::iter::once(headline.clone())
        .chain(fields.iter().map(|(k, v)| format!("{k}: {v}")))
        .collect::<Vec<_>>()
        .join("\n");
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
            {"type": "section", "fields": fields.iter().map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{v}")})).collect::<Vec<_>>()},
        ]
    })
}

/// Run a deployment between a start and an end message, for real runs of
/// a deployment (not dry runs, not checks).
pub async fn around<'c, F, Fut>(
    command: &str,
    target: Option<&str>,
    cx: &'c mut Context,
    run: F,
) -> RunReport
where
    F: FnOnce(&'c mut Context) -> Fut,
    Fut: std::future::Future<Output = RunReport>,
{
    let webhook = cx
        .config
        .vars
        .get("SLACK_WEBHOOK_URL")
        .filter(|_| !cx.dry_run && cx.deployment_id.is_some())
        .map(String::from);
    let actor = Actor::current();
    if let Some(id) = cx.deployment_id.as_ref().map(|d| d.to_string()) {
        let started = Event::Started {
            command,
            environment: cx.environment(),
            deployment_id: &id,
            target,
        };
        send(webhook.as_deref(), &message(&started, &actor)).await;
    }
    let report = run(cx).await;
    let finished = Event::Finished {
        command,
        report: &report,
        target,
    };
    send(webhook.as_deref(), &message(&finished, &actor)).await;
    // A refused notification is a warning like any other: in the report too.
    let mut report = report;
    crate::warnings::merge_into(&mut report.warnings);
    report
}

/// Send a message; a failure is a warning, never an error.
pub async fn send(webhook: Option<&str>, message: &Value) {
    let Some(url) = webhook.filter(|u| !u.is_empty()) else {
        return;
    };
    // Everything a message says passes the redactor first.
    let body = crate::redact::scrub(&message.to_string()).into_owned();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("Slack notification not sent: {e}");
            return;
        }
    };
    match client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(
            "Slack answered {} to a notification; the deploy goes on",
            r.status()
        ),
        // reqwest's error can include the URL, which is the credential.
        Err(e) => tracing::warn!(
            "Slack notification not sent ({}); the deploy goes on",
            if e.is_timeout() {
                "timed out"
            } else {
                "connection failed"
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use crate::pipeline::PhaseId;
    use crate::pipeline::report::{ErrorReport, PhaseRow, PhaseStatus, SCHEMA};

    fn actor() -> Actor {
        Actor {
            user: "ada".into(),
            host: "ci-7".into(),
            ci_job: Some("github:maily/app/actions/runs/42".into()),
        }
    }

    fn report(outcome: Outcome) -> RunReport {
        let failed = outcome == Outcome::Failed;
        RunReport {
            schema: SCHEMA.to_string(),
            command: "deploy".to_string(),
            environment: "production".into(),
            deployment_id: Some("production-20250101-120000".parse().unwrap()),
            dry_run: false,
            started_at: chrono::Utc::now(),
            finished_at: chrono::Utc::now(),
            duration_ms: 83_400,
            outcome,
            exit_code: if failed { 4 } else { 0 },
            phases: vec![PhaseRow {
                id: PhaseId::DeployBackend,
                status: if failed {
                    PhaseStatus::Failed
                } else {
                    PhaseStatus::Succeeded
                },
                skip_reason: None,
                duration_ms: Some(1000),
                summary: String::new(),
                details: vec![],
                error: failed.then(|| ErrorReport {
                    kind: Kind::PhaseFailed,
                    message: "ImagePullBackOff".into(),
                    problems: vec![],
                }),
            }],
            warnings: vec![],
            image_scan: None,
            rollout: None,
            error: failed.then(|| ErrorReport {
                kind: Kind::PhaseFailed,
                message: "deploy-backend: rollout failed: ImagePullBackOff".into(),
                problems: vec![],
            }),
        }
    }

    #[test]
    fn a_failure_names_the_phase_the_reason_who_and_how_long() {
        let r = report(Outcome::Failed);
        let m = message(
            &Event::Finished {
                command: "deploy",
                report: &r,
                target: None,
            },
            &actor(),
        );
        let text = m["text"].as_str().unwrap();
        assert!(
            text.starts_with(":x: deployment of *production* failed: `production-20250101-120000`"),
            "{text}"
        );
        assert!(text.contains("Failed phase: deploy-backend"));
        assert!(text.contains("Reason: deploy-backend: rollout failed: ImagePullBackOff"));
        assert!(text.contains("By: ada@ci-7 (github:maily/app/actions/runs/42)"));
        assert!(text.contains("Duration: 83.4 s"));
        assert_eq!(m["blocks"][0]["type"], "section");
        assert_eq!(m["blocks"][1]["fields"][0]["type"], "mrkdwn");
    }

    #[test]
    fn start_success_and_rollback_say_so() {
        let m = message(
            &Event::Started {
                command: "deploy",
                environment: "staging",
                deployment_id: "staging-20250101-120000",
                target: None,
            },
            &actor(),
        );
        assert!(
            m["text"]
                .as_str()
                .unwrap()
                .starts_with(":rocket: deployment of *staging* started")
        );
        let r = report(Outcome::Succeeded);
        let m = message(
            &Event::Finished {
                command: "rollback",
                report: &r,
                target: Some("production-20241231-000000"),
            },
            &actor(),
        );
        assert!(m["text"].as_str().unwrap().starts_with(
            ":white_check_mark: rollback to production-20241231-000000 of *production* succeeded"
        ));
    }
}
