//! provision: Terraform init, the environment's workspace, plan, and apply
//! of the saved plan; the outputs fill the variables later phases read.
//!
//! A plan that destroys anything stops the run before the apply unless
//! `--allow-destroy` is given. A dry run plans and stops.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::Source;
use crate::config::spec;
use crate::error::{Failure, Kind, Problem, fail};
use crate::pipeline::{Context, Phase, PhaseId, PhasePlan, PhaseReport};
use crate::providers::terraform::{self, PlanExit, PlanSummary, Terraform, args};
use crate::redact;

pub struct Provision;

/// What the snapshot keeps of the infrastructure (`snapshot.infrastructure`):
/// what the plan would do, whether it was applied, and which variables the
/// outputs filled, by name only (their values may be secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfrastructureRecord {
    /// The Terraform workspace, the environment's name.
    pub workspace: String,
    /// The saved plan's counts (all zero when there were no changes).
    pub plan: PlanSummary,
    /// Whether the saved plan was applied (false: nothing to change).
    pub applied: bool,
    /// The variables terraform outputs filled.
    #[serde(default)]
    pub filled: Vec<String>,
}

/// The Terraform executable and directory from the run's variables.
pub fn terraform_of(cx: &Context) -> anyhow::Result<Terraform> {
    let var = |name: &str, default: &str| {
        cx.config
            .vars
            .get(name)
            .filter(|v| !v.is_empty())
            .unwrap_or(default)
            .to_string()
    };
    let dir = PathBuf::from(var("TERRAFORM_DIR", "infrastructure/terraform"));
    terraform::check_dir(&dir)?;
    Terraform::new(
        var("TERRAFORM_BIN", "terraform"),
        dir,
        cx.environment().to_string(),
    )
}

/// What the plan step found.
struct Planned {
    exit: PlanExit,
    summary: PlanSummary,
    destroyed: Vec<String>,
}

/// Run `plan -detailed-exitcode` and, when there are changes, read the saved
/// plan's JSON for the summary.
async fn plan(tf: &Terraform) -> anyhow::Result<Planned> {
    let plan_args = args::plan(&tf.plan_file());
    let ran = tf.run(&plan_args, false).await?;
    let exit = terraform::plan_exit(ran.code);
    match exit {
        PlanExit::Failed => Err(tf.failed(&plan_args, &ran)),
        PlanExit::NoChanges => Ok(Planned {
            exit,
            summary: PlanSummary::default(),
            destroyed: Vec::new(),
        }),
        PlanExit::Changes => {
            let shown = tf.run_ok(&args::show_plan(&tf.plan_file()), true).await?;
            let (summary, destroyed) = terraform::summarize_plan(&shown.stdout)?;
            Ok(Planned {
                exit,
                summary,
                destroyed,
            })
        }
    }
}

/// The guard: a plan that destroys is refused unless allowed.
fn destroy_guard(planned: &Planned, allow: bool) -> anyhow::Result<()> {
    if planned.summary.destroy > 0 && !allow {
        return Err(fail(
            Kind::Refused,
            format!(
                "the Terraform plan destroys {} resource{} ({}); nothing was applied. Check the plan, then run again with --allow-destroy if that is intended",
                planned.summary.destroy,
                if planned.summary.destroy == 1 {
                    ""
                } else {
                    "s"
                },
                planned.destroyed.join(", ")
            ),
        ));
    }
    Ok(())
}

#[async_trait]
impl Phase for Provision {
    fn id(&self) -> PhaseId {
        PhaseId::Provision
    }

    async fn plan(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        // A dry run may be made where terraform or its configuration is not
        // at hand (a laptop, the README's example): the plan says so, as
        // migrate's does for a database it cannot reach; a real run fails.
        let unknown = |e: anyhow::Error| PhasePlan {
            summary: "infrastructure changes unknown: terraform cannot run here".into(),
            steps: vec![format!("{e:#}")],
        };
        let tf = match terraform_of(cx) {
            Ok(tf) => tf,
            Err(e) => return Ok(unknown(e)),
        };
        let workspace = &tf.workspace;
        match tf.run(&args::init(), false).await {
            Ok(ran) if ran.code == Some(0) => {}
            Ok(ran) => return Err(tf.failed(&args::init(), &ran)),
            Err(e) if crate::error::kind_of(&e) == Some(Kind::Config) => return Ok(unknown(e)),
            Err(e) => return Err(e),
        }
        // A dry run creates nothing, not even a workspace: without it there
        // is nothing to plan against.
        if !tf.has_workspace().await? {
            return Ok(PhasePlan {
                summary: format!(
                    "workspace {workspace} does not exist yet: a run creates it, then plans and applies everything"
                ),
                steps: vec![
                    format!("{} {}", tf.bin, args::workspace_new(workspace).join(" ")),
                    format!("plan in workspace {workspace}, save the plan, apply it"),
                ],
            });
        }
        let planned = plan(&tf).await;
        tf.remove_plan();
        let planned = planned?;
        let mut steps = vec![format!("workspace {workspace}")];
        let summary = match planned.exit {
            PlanExit::NoChanges => {
                "no changes: the infrastructure matches the configuration".into()
            }
            _ => {
                steps.push(format!("apply the saved plan: {}", planned.summary));
                if planned.summary.destroy > 0 {
                    steps.push(if cx.options.allow_destroy {
                        format!("destroys (allowed): {}", planned.destroyed.join(", "))
                    } else {
                        format!(
                            "destroys {}: a run stops here unless --allow-destroy is given",
                            planned.destroyed.join(", ")
                        )
                    });
                }
                format!("Plan: {}", planned.summary)
            }
        };
        Ok(PhasePlan { summary, steps })
    }

    async fn run(&self, cx: &mut Context) -> anyhow::Result<PhaseReport> {
        let tf = terraform_of(cx)?;
        let workspace = tf.workspace.clone();
        tf.run_ok(&args::init(), false).await?;
        let created = tf.ensure_workspace().await?;
        let mut details = vec![if created {
            format!("workspace {workspace} created")
        } else {
            format!("workspace {workspace}")
        }];

        let planned = plan(&tf).await;
        let applied = match planned {
            Err(e) => Err(e),
            Ok(p) => match destroy_guard(&p, cx.options.allow_destroy) {
                Err(e) => Err(e),
                Ok(()) if p.exit == PlanExit::Changes => tf
                    .run_ok(&args::apply(&tf.plan_file()), false)
                    .await
                    .map(|_| Some(p.summary)),
                Ok(()) => Ok(None),
            },
        };
        // The saved plan may hold sensitive values: it goes whatever happened.
        tf.remove_plan();
        let applied = applied?;
        // Recorded before the outputs are read: a run failing on them has
        // still changed the infrastructure, and its snapshot says so.
        let mut record = InfrastructureRecord {
            workspace: workspace.clone(),
            plan: applied.unwrap_or_default(),
            applied: applied.is_some(),
            filled: Vec::new(),
        };
        cx.records.infrastructure = Some(record.clone());
        let summary = match applied {
            Some(s) => {
                details.push(format!("applied: {s}"));
                format!("Plan: {s}; applied")
            }
            None => "no changes: the infrastructure matches the configuration".into(),
        };

        // Past a real apply the infrastructure has changed: a failure to
        // read or use its outputs is a failure of the run (exit 4), never a
        // refusal or a configuration's problem, whose exits say nothing
        // changed.
        let applied_now = record.applied;
        let read = async {
            let outputs = tf.run_ok(&args::output(), true).await?;
            let outputs = terraform::parse_outputs(&outputs.stdout)?;
            // Sensitive outputs are hidden from every output before anything else.
            for (name, o) in &outputs {
                if o.sensitive
                    && let Some(s) = o.value.as_str()
                {
                    redact::register(&format!("terraform output {name}"), s);
                }
            }
            let fills = terraform::fills(&outputs, &cx.config.vars);
            let mut problems = Vec::new();
            for f in &fills {
                crate::config::register_if_secret(f.variable, &f.value, f.secret);
                if let Some(spec) = spec::lookup(f.variable)
                    && let Err(why) = spec.format.check(&f.value)
                {
                    problems.push(Problem {
                        phase: Some(PhaseId::Provision.as_str().into()),
                        subject: f.variable.into(),
                        problem: format!(
                            "filled from the terraform output {}: {why}",
                            f.variable.to_ascii_lowercase()
                        ),
                        fix: format!(
                            "fix the output in {}, or set {} yourself",
                            tf.dir.display(),
                            f.variable
                        ),
                    });
                }
            }
            for name in crate::config::validate::terraform_provides(&cx.config.vars) {
                let filled = fills.iter().any(|f| f.variable == name);
                if !filled && cx.config.vars.get(&name).is_none_or(str::is_empty) {
                    problems.push(Problem {
                        phase: Some(PhaseId::Provision.as_str().into()),
                        subject: name.clone(),
                        problem: format!(
                            "TERRAFORM_PROVIDES names it, but no terraform output {} fills it",
                            name.to_ascii_lowercase()
                        ),
                        fix: format!(
                            "add an output \"{}\" to the configuration in {}, or set {name} yourself",
                            name.to_ascii_lowercase(),
                            tf.dir.display()
                        ),
                    });
                }
            }
            if !problems.is_empty() {
                return Err(Failure::with_problems(
                    Kind::Config,
                    "terraform outputs do not fit the variables they fill",
                    problems,
                )
                .into());
            }
            for f in &fills {
                cx.config
                    .vars
                    .set(f.variable, f.value.clone(), Source::Terraform);
            }
            record.filled = fills.iter().map(|f| f.variable.to_string()).collect();
            cx.records.infrastructure = Some(record);
            details.push(format!("{} outputs read", outputs.len()));
            if !fills.is_empty() {
                details.push(format!(
                    "filled from terraform outputs: {}",
                    fills
                        .iter()
                        .map(|f| f.variable)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Ok::<(), anyhow::Error>(())
        }
        .await;
        if let Err(e) = read {
            return Err(if applied_now {
                crate::error::as_kind(
                    e.context("terraform applied the plan, then its outputs could not be used"),
                    Kind::PhaseFailed,
                )
            } else {
                e
            });
        }
        Ok(PhaseReport { summary, details })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_names_the_filled_variables_and_holds_no_values() {
        let r = InfrastructureRecord {
            workspace: "production".into(),
            plan: PlanSummary {
                add: 2,
                change: 1,
                destroy: 0,
            },
            applied: true,
            filled: vec!["DATABASE_URL".into()],
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "workspace": "production",
                "plan": {"add": 2, "change": 1, "destroy": 0},
                "applied": true,
                "filled": ["DATABASE_URL"]
            })
        );
        assert_eq!(
            serde_json::from_value::<InfrastructureRecord>(v).ok(),
            Some(r)
        );
    }
}
