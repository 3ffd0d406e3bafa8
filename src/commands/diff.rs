//! `maily-deploy diff ENV`: what a deploy would write to the cluster, as
//! the cluster itself judges it, and nothing else; exit 0 when nothing
//! would change, 1 when something would, like `diff(1)` and `kubectl diff`.
//!
//! Every object the selected phases would server-side apply goes through
//! `k8s::server_plan` (dryRun=All, the run's own field manager), so the
//! diff is the fields this tool owns as the server would store them.
//!
//! What users see after a deploy is the release in a slot with every route
//! on it. So the release is rendered for the slot users are on now and
//! compared with it: redeploying the live release with the same manifests
//! is no change (exit 0), although the run would write the idle slot and
//! switch; a new tag shows as each image field. (`--dry-run` shows the
//! idle slot's objects, which the run literally writes.) Nothing is locked
//! or written; Secrets are never shown.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::{GlobalArgs, OutputFormat, PhaseFlags};
use crate::config;
use crate::error;
use crate::exit_code;
use crate::k8s::server_plan::{self, Verdict};
use crate::k8s::slot::Slot;
use crate::phases;
use crate::pipeline::selection::SkipReason;
use crate::pipeline::{Phase, PhaseId, Selection, select};

/// The phases whose objects a diff shows: those that apply manifests. The
/// others (Terraform, migrations, Vercel, checks) change nothing a server
/// dry run can judge.
const APPLIES: [PhaseId; 4] = [
    PhaseId::DeployBackend,
    PhaseId::ConfigureAi,
    PhaseId::Monitor,
    PhaseId::ShiftTraffic,
];

/// The selection narrowed to the phases that apply manifests (validate
/// kept when selected, to check their variables).
fn narrowed(mut selection: Selection) -> Selection {
    for (id, reason) in selection.phases.iter_mut() {
        if *id != PhaseId::Validate && !APPLIES.contains(id) && reason.is_none() {
            *reason = Some(SkipReason::NotInOnly);
        }
    }
    selection
}

/// The exit code of a diff that could not be made: the table's, except that
/// an unexpected error (1 elsewhere) is [`exit_code::DIFF_ERROR`], since 1
/// means "there are changes" here.
pub fn exit_code_of(err: &anyhow::Error) -> i32 {
    match error::exit_code_of(err) {
        exit_code::FAILURE => exit_code::DIFF_ERROR,
        code => code,
    }
}

/// The exit code of a diff that was made.
pub fn exit_code_for(verdicts: &[(String, Verdict)]) -> i32 {
    if server_plan::any_change(verdicts) {
        exit_code::DIFF_CHANGES
    } else {
        exit_code::SUCCESS
    }
}

/// The slot the release is compared with: the one users are on, so that
/// what a deploy changes for them is what shows (the release goes to the
/// other slot, and users follow it); on a first deploy, the idle slot.
fn compared_slot(live: &crate::k8s::live::PlatformState) -> anyhow::Result<Slot> {
    match live.active() {
        crate::k8s::live::Active::Slot(s) => Ok(s),
        _ => live
            .target_slot()
            .map_err(|why| error::fail(error::Kind::PhaseFailed, why)),
    }
}

/// The objects as the run leaves them: a worker is applied at 0 replicas
/// and scaled up by the switch, so at the end it runs the profile's.
fn at_the_end(
    mut objects: Vec<kube::api::DynamicObject>,
    profile: &crate::config::Profile,
) -> Vec<kube::api::DynamicObject> {
    for o in &mut objects {
        let is_worker = o.types.as_ref().is_some_and(|t| t.kind == "Deployment")
            && o.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("maily.ai/kind"))
                .is_some_and(|k| k == "worker");
        let service = o
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/name"))
            .cloned();
        if let (true, Some(service)) = (is_worker, service)
            && let Some(spec) = o.data.get_mut("spec").and_then(|s| s.as_object_mut())
        {
            spec.insert("replicas".into(), profile.replicas_of(&service).into());
        }
    }
    objects
}

/// One object per kind, namespace and name: the last phase to apply it
/// decides how it ends.
fn deduplicated(objects: Vec<kube::api::DynamicObject>) -> Vec<kube::api::DynamicObject> {
    let mut by_key: BTreeMap<(String, String, String), kube::api::DynamicObject> = BTreeMap::new();
    for o in objects {
        let key = (
            o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default(),
            o.metadata.namespace.clone().unwrap_or_default(),
            o.metadata.name.clone().unwrap_or_default(),
        );
        by_key.insert(key, o);
    }
    by_key.into_values().collect()
}

pub async fn run(
    environment: &str,
    phases_flags: &PhaseFlags,
    global: &GlobalArgs,
) -> anyhow::Result<i32> {
    let full = select(&phases_flags.selection_flags())?;
    let mut cx =
        super::cluster::context_selecting(environment, global, true, narrowed(full.clone()), true)?;
    // Vault references read as a deploy reads them (values land in
    // manifests); the platform's Secrets are not asked for: never shown.
    let selected = cx.selection.selected();
    config::vault::resolve(&mut cx.config.vars, &selected, None).await?;
    if cx.selection.is_selected(PhaseId::Validate) {
        phases::validate::Validate.plan(&cx).await?;
    }
    // The layers a deploy with these flags would carry over, decided on
    // its whole selection (the same refusals), then narrowed again.
    cx.selection = full;
    crate::pipeline::lifecycle::plan_layers(&mut cx).await?;
    cx.selection = narrowed(cx.selection.clone());
    // Images as the deploy would write them: pinned, not scanned (a scan
    // gates a deploy and changes no object).
    cx.image_pins = crate::image::gate::pins_only(&cx, &config::process_env()).await?;
    let live = crate::k8s::live::read(cx.applier().await?, &cx.config.profile).await?;
    let slot = compared_slot(&live)?;
    cx.backend.target_slot = Some(slot);
    let mut objects = Vec::new();
    for phase in phases::all() {
        if APPLIES.contains(&phase.id()) && cx.selection.is_selected(phase.id()) {
            objects.extend(phase.applies(&cx).await?);
        }
    }
    let objects = at_the_end(deduplicated(objects), &cx.config.profile);
    let applier = cx.applier().await?;
    let verdicts =
        server_plan::judge(applier, &objects, &cx.config.profile.namespace, "diff").await?;
    let mut lines = server_plan::lines(&verdicts).into_iter();
    let counts = lines.next().unwrap_or_default();
    if !global.quiet {
        crate::output::stderr_line(&format!(
            "{environment}: the release compared with slot {slot}, {}; {counts}",
            if matches!(live.active(), crate::k8s::live::Active::Slot(_)) {
                "where users are (a deploy puts it in the other slot and moves them to it)"
            } else {
                "which no user reaches yet (a first deploy)"
            }
        ));
    }
    match global.output {
        OutputFormat::Json => {
            let doc = Document::new(environment, slot, &verdicts);
            crate::output::stdout_line(&serde_json::to_string_pretty(&doc)?);
        }
        OutputFormat::Human => {
            for line in lines {
                crate::output::stdout_line(&line);
            }
        }
    }
    Ok(exit_code_for(&verdicts))
}

/// `diff --output json`: what would change, per object.
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    pub environment: &'a str,
    /// The slot the release is compared with: the one users are on (on a
    /// first deploy, the idle one).
    pub slot: Slot,
    pub created: Vec<&'a str>,
    pub changed: Vec<Changed<'a>>,
    pub unchanged: usize,
}

#[derive(Debug, Serialize)]
pub struct Changed<'a> {
    pub object: &'a str,
    pub fields: Vec<Field<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Field<'a> {
    pub path: &'a str,
    pub from: Option<&'a serde_json::Value>,
    pub to: Option<&'a serde_json::Value>,
}

impl<'a> Document<'a> {
    pub fn new(environment: &'a str, slot: Slot, verdicts: &'a [(String, Verdict)]) -> Self {
        let mut doc = Document {
            environment,
            slot,
            created: Vec::new(),
            changed: Vec::new(),
            unchanged: 0,
        };
        for (object, verdict) in verdicts {
            match verdict {
                Verdict::Created => doc.created.push(object),
                Verdict::Unchanged => doc.unchanged += 1,
                Verdict::Changed(changes) => doc.changed.push(Changed {
                    object,
                    fields: changes
                        .iter()
                        .map(|c| Field {
                            path: &c.path,
                            from: c.from.as_ref(),
                            to: c.to.as_ref(),
                        })
                        .collect(),
                }),
            }
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::server_plan::Change;
    use crate::pipeline::SelectionFlags;

    #[test]
    fn a_diff_exits_like_diff_1() {
        let unchanged = vec![("Service api".to_string(), Verdict::Unchanged)];
        assert_eq!(exit_code_for(&unchanged), 0);
        let created = vec![("Deployment ai-blue".to_string(), Verdict::Created)];
        assert_eq!(exit_code_for(&created), 1);
        let changed = vec![(
            "Deployment api-blue".to_string(),
            Verdict::Changed(vec![Change {
                path: "spec.replicas".into(),
                from: Some(2.into()),
                to: Some(3.into()),
            }]),
        )];
        assert_eq!(exit_code_for(&changed), 1);
    }

    #[test]
    fn an_error_never_reads_as_changes() {
        let unexpected = anyhow::anyhow!("the socket closed");
        assert_eq!(exit_code_of(&unexpected), exit_code::DIFF_ERROR);
        let config = error::fail(error::Kind::Config, "IMAGE_TAG is not set");
        assert_eq!(exit_code_of(&config), exit_code::CONFIG);
    }

    #[test]
    fn only_the_phases_that_apply_manifests_are_diffed() {
        let all = narrowed(select(&SelectionFlags::default()).unwrap());
        assert_eq!(
            all.selected(),
            vec![
                PhaseId::Validate,
                PhaseId::DeployBackend,
                PhaseId::ConfigureAi,
                PhaseId::Monitor,
                PhaseId::ShiftTraffic
            ]
        );
        let flags = SelectionFlags {
            skip: [PhaseId::Monitor].into(),
            ..Default::default()
        };
        assert!(!narrowed(select(&flags).unwrap()).is_selected(PhaseId::Monitor));
    }

    #[test]
    fn workers_are_compared_at_the_replicas_the_switch_gives_them() {
        let profile = crate::config::profile::parse(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("manifests/environments/staging.yaml"),
            )
            .unwrap(),
            "staging",
            "staging.yaml",
        )
        .unwrap();
        let (worker, _) = profile
            .services
            .iter()
            .find(|(_, s)| s.kind == crate::config::profile::ServiceKind::Worker)
            .expect("the staging profile has a worker");
        let deployment = |kind: &str, name: &str| -> kube::api::DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": format!("{name}-green"), "labels": {
                    "app.kubernetes.io/name": name, "maily.ai/kind": kind}},
                "spec": {"replicas": 0}
            }))
            .unwrap()
        };
        let end = at_the_end(
            vec![deployment("worker", worker), deployment("http", "api")],
            &profile,
        );
        assert_eq!(
            end[0].data["spec"]["replicas"],
            serde_json::json!(profile.replicas_of(worker))
        );
        assert!(profile.replicas_of(worker) > 0);
        assert_eq!(end[1].data["spec"]["replicas"], 0, "http as rendered");
    }

    #[test]
    fn the_json_document_lists_each_object_once() {
        let verdicts = vec![
            ("Deployment ai-blue".to_string(), Verdict::Created),
            ("Service api".to_string(), Verdict::Unchanged),
            (
                "Deployment api-blue".to_string(),
                Verdict::Changed(vec![Change {
                    path: "spec.template.spec.containers[api].image".into(),
                    from: Some("r/api:v1".into()),
                    to: Some("r/api:v3".into()),
                }]),
            ),
        ];
        let doc = serde_json::to_value(Document::new("staging", Slot::Blue, &verdicts)).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "environment": "staging",
                "slot": "blue",
                "created": ["Deployment ai-blue"],
                "changed": [{"object": "Deployment api-blue", "fields": [
                    {"path": "spec.template.spec.containers[api].image", "from": "r/api:v1", "to": "r/api:v3"}
                ]}],
                "unchanged": 1
            })
        );
    }
}
