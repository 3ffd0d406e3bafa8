//! Deploy and validate: load the configuration, select phases, run them.

use crate::cli::{GlobalArgs, PhaseFlags};
use crate::config::{self, Sources};
use crate::output::{self, OutputOptions};
use crate::phases;
use crate::pipeline::context::{ClusterTarget, RunOptions};
use crate::pipeline::lifecycle::ClusterLifecycle;
use crate::pipeline::{Context, DeploymentId, PhaseId, Runner, select};

pub struct Request<'a> {
    pub command: &'static str,
    pub environment: &'a str,
    pub phases: &'a PhaseFlags,
    pub dry_run: bool,
    /// Whether this is a deployment (with an id) or a check.
    pub deployment: bool,
    pub global: &'a GlobalArgs,
    pub options: RunOptions,
    /// `--timeout`: ROLLOUT_TIMEOUT from the command line, over the env
    /// file and the environment.
    pub rollout_timeout: Option<&'a str>,
}

/// The configuration as the selected phases need it: the env file, the
/// process environment (`--timeout` over both) and the profile.
fn load(
    environment: &str,
    global: &GlobalArgs,
    selection: &crate::pipeline::Selection,
    rollout_timeout: Option<&str>,
) -> anyhow::Result<config::Config> {
    let mut process_env = config::process_env();
    let mut process_not_utf8 = config::process_env_not_utf8();
    if let Some(timeout) = rollout_timeout {
        process_env.insert("ROLLOUT_TIMEOUT".into(), timeout.into());
        // `--timeout` wins over the environment: its value there is not read.
        process_not_utf8.retain(|name| name != "ROLLOUT_TIMEOUT");
    }
    config::load(&Sources {
        environment,
        env_file: global.env_file.as_deref(),
        manifests_dir: &global.manifests_dir,
        process_env,
        process_not_utf8,
        check_for: (!selection.validate_skipped()).then(|| selection.selected()),
    })
}

/// The configuration's problems, for a command line refused for its own:
/// both are named in one refusal, so a user fixes them in one go. The
/// env file, the profile and the variables as written (the check before
/// any request; nothing is asked of Vault). None when the phase flags
/// contradict each other (which phases' variables to check is then
/// unknown) or skip validate.
pub fn config_problems(
    environment: &str,
    global: &GlobalArgs,
    phases: &PhaseFlags,
    rollout_timeout: Option<&str>,
) -> Vec<crate::error::Problem> {
    let Ok(selection) = select(&phases.selection_flags()) else {
        return Vec::new();
    };
    if selection.validate_skipped() {
        return Vec::new();
    }
    let checked = load(environment, global, &selection, rollout_timeout)
        .and_then(|config| phases::validate::before_any_request(&config, &selection.selected()));
    match checked {
        Ok(()) => Vec::new(),
        Err(e) => match crate::error::failure_of(&e) {
            Some(f) if !f.problems.is_empty() => f.problems.clone(),
            _ => vec![crate::error::Problem {
                phase: None,
                subject: "the configuration".into(),
                problem: crate::error::chain_text(&e),
                fix: String::new(),
            }],
        },
    }
}

pub async fn run(req: Request<'_>) -> anyhow::Result<i32> {
    // Before anything else, and long before the lock: a CI job cancelled
    // at any moment of a real run stops it (see `crate::interrupt`).
    // A dry run too: its plan may run `terraform plan`, which holds the
    // state lock and writes a plan file; a Ctrl-C must stop it gracefully
    // rather than leave it running on its own.
    if req.deployment {
        crate::interrupt::install()?;
    }
    // The id is made first, so that it names the run from its first moment.
    let deployment_id = req.deployment.then(|| DeploymentId::now(req.environment));
    let selection = select(&req.phases.selection_flags())?;
    let mut config = load(req.environment, req.global, &selection, req.rollout_timeout)?;
    // A deploy (a dry run too: it only reads) resolves Vault references
    // before any phase; `validate` alone stays offline and checks their form.
    let mut platform_secrets = Default::default();
    if req.deployment && !selection.validate_skipped() {
        phases::validate::before_any_request(&config, &selection.selected())?;
    }
    if req.deployment {
        // The slots' pods read them: whatever puts pods into a slot writes
        // that slot's copies.
        let wants_secrets = selection.is_selected(PhaseId::DeployBackend)
            || selection.is_selected(PhaseId::ConfigureAi);
        let secrets = config.profile.secrets.clone();
        platform_secrets = config::vault::resolve(
            &mut config.vars,
            &selection.selected(),
            wants_secrets.then_some(&secrets),
        )
        .await?;
    }
    if selection.validate_skipped() {
        config.warnings.push(format!(
            "{} given: the configuration is not checked, so a bad value fails a phase half-way instead of before anything changes",
            PhaseId::Validate.skip_flag()
        ));
    }
    let mut cx = Context::new(deployment_id, config, selection, req.dry_run);
    cx.cluster = ClusterTarget {
        kubeconfig: req.global.kubeconfig.clone(),
        context: req.global.context.clone(),
    };
    cx.manifests_dir = req.global.manifests_dir.clone();
    cx.options = req.options.clone();
    cx.platform_secrets = platform_secrets;
    // Every image to its digest and scanned, before the lock and the first
    // change: a missing tag, a refused login or a critical finding stops
    // the run while nothing changed.
    if req.deployment {
        let gate = crate::image::gate::before_first_change(&cx, &config::process_env()).await?;
        cx.image_pins = gate.pins;
        cx.image_scan = gate.scan;
    }
    let opts = OutputOptions::detect(req.global.output, req.global.quiet, req.global.verbose);
    let mut observer = output::observer(&opts);
    // `validate` runs the validate phase alone, for the selected phases'
    // variables; a deploy runs the pipeline.
    let pipeline = if req.deployment {
        phases::all()
    } else {
        vec![Box::new(phases::validate::Validate) as Box<dyn crate::pipeline::Phase>]
    };
    let mut runner = Runner::new(pipeline);
    if req.deployment {
        runner = runner.with_lifecycle(Box::new(ClusterLifecycle::new("deploy", None)));
    }
    // The id is final before the first line announces it.
    if req.deployment && !req.dry_run {
        crate::pipeline::lifecycle::settle_id(&mut cx).await;
    }
    let report = crate::notify::around(req.command, None, &mut cx, |cx| {
        runner.run(req.command, cx, observer.as_mut())
    })
    .await;
    observer.run_finished(&report);
    Ok(report.exit_code)
}
