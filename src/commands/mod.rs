//! The commands: what each verb of the command line does.

pub mod bootstrap;
pub mod cluster;
pub mod database;
pub mod db;
pub mod diff;
pub mod history;
pub mod pipeline;
pub mod rollback;
pub mod rollout;
pub mod status;
pub mod unlock;

use crate::cli::{Cli, Command, DbCommand};
use crate::error;
use crate::exit_code;
use crate::pipeline::RunReport;

/// Run the command the user asked for and say how it ended: its exit
/// code, the error printed when it failed.
///
/// With `--output json`, a command that stops before it has a report of its
/// own still prints one, so a CI job parsing stdout always gets JSON.
pub async fn dispatch(cli: Cli) -> i32 {
    let (command, environment) = name_and_environment(&cli);
    let dry_run = dry_run_of(&cli);
    let json = cli.global.output == crate::cli::OutputFormat::Json;
    match run(cli).await {
        Ok(code) => code,
        Err(err) => stopped(command, &environment, json, dry_run, &err),
    }
}

/// A command line refused before any command ran (`usage::check`): said
/// as a stopped command's report says it, JSON included when asked for.
pub fn refused(cli: &Cli, err: &anyhow::Error) -> i32 {
    let (command, environment) = name_and_environment(cli);
    // Not when `--output` itself is what the command cannot take.
    let output_refused =
        error::failure_of(err).is_some_and(|f| f.problems.iter().any(|p| p.subject == "--output"));
    let json = cli.global.output == crate::cli::OutputFormat::Json && !output_refused;
    stopped(command, &environment, json, dry_run_of(cli), err)
}

/// Whether the command line asked for a dry run: a report of a run
/// stopped before it started still says so.
pub fn dry_run_of(cli: &Cli) -> bool {
    match &cli.command {
        None => cli.deploy.dry_run,
        Some(Command::Rollback { dry_run, .. }) => *dry_run,
        Some(_) => false,
    }
}

/// Print how `command` stopped on `err` (a report on stdout first with
/// `--output json`); its exit code.
fn stopped(
    command: &'static str,
    environment: &str,
    json: bool,
    dry_run: bool,
    err: &anyhow::Error,
) -> i32 {
    let code = exit_code_of(command, err);
    if json {
        let mut report = RunReport::stopped(command, environment, err);
        report.exit_code = code;
        report.dry_run = dry_run;
        crate::output::json::print_report(&report);
    }
    crate::output::print_error(err);
    code
}

/// The exit code of a command that failed with `err`.
fn exit_code_of(command: &str, err: &anyhow::Error) -> i32 {
    if command == "diff" {
        diff::exit_code_of(err)
    } else {
        error::exit_code_of(err)
    }
}

fn name_and_environment(cli: &Cli) -> (&'static str, String) {
    match &cli.command {
        None => ("deploy", cli.deploy.environment.clone().unwrap_or_default()),
        Some(Command::Rollback { environment, .. }) => ("rollback", environment.clone()),
        Some(Command::History { environment, .. }) => ("history", environment.clone()),
        Some(Command::Status { environment }) => ("status", environment.clone()),
        Some(Command::Unlock { environment }) => ("unlock", environment.clone()),
        Some(Command::Promote { environment, .. }) => ("promote", environment.clone()),
        Some(Command::Abort { environment }) => ("abort", environment.clone()),
        Some(Command::Bootstrap { environment }) => ("bootstrap", environment.clone()),
        Some(Command::Db(DbCommand::Status { environment })) => ("db status", environment.clone()),
        Some(Command::Db(DbCommand::Backups { environment })) => {
            ("db backups", environment.clone())
        }
        Some(Command::Db(DbCommand::Restore { environment, .. })) => {
            ("db restore", environment.clone())
        }
        Some(Command::Validate { environment, .. }) => ("validate", environment.clone()),
        Some(Command::Diff { environment, .. }) => ("diff", environment.clone()),
        Some(Command::EnvTemplate) => ("env-template", String::new()),
        Some(Command::Version) => ("version", String::new()),
        Some(Command::Completions { .. }) => ("completions", String::new()),
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let global = &cli.global;
    match cli.command {
        None => {
            // clap guarantees the environment when there is no subcommand.
            let environment = cli.deploy.environment.clone().unwrap_or_default();
            let known = crate::config::profile::known_environments(&global.manifests_dir);
            if let Some(typo) = crate::usage::environment_or_command(&environment, &known) {
                return Err(typo);
            }
            // The phase flags, the traffic flags and their variables are
            // checked together, so every problem is named at once; with any
            // of them wrong, the configuration's problems come in the same
            // refusal.
            let mut problems =
                crate::pipeline::selection::flag_problems(&cli.deploy.phases.selection_flags());
            let flags = traffic_overrides(&cli.deploy);
            let phases = cli.deploy.phases.clone();
            let timeout = cli.deploy.timeout.clone();
            let mut settled = None;
            match (
                cli.deploy.with_environment(|name| std::env::var_os(name)),
                flags,
            ) {
                (Ok(deploy), Ok(_)) => match traffic_overrides(&deploy) {
                    Ok(overrides) => settled = Some((deploy, overrides)),
                    Err(p) => problems.extend(p),
                },
                (merged, flags) => {
                    problems.extend(flags.err().unwrap_or_default());
                    problems.extend(merged.err().unwrap_or_default());
                }
            }
            let (deploy, (traffic_steps, grace)) = match settled {
                Some(settled) if problems.is_empty() => settled,
                _ => {
                    let config = pipeline::config_problems(
                        &environment,
                        global,
                        &phases,
                        timeout.as_deref(),
                    );
                    return Err(command_line_problems(problems, config));
                }
            };
            pipeline::run(pipeline::Request {
                command: "deploy",
                environment: &environment,
                phases: &deploy.phases,
                dry_run: deploy.dry_run,
                deployment: true,
                global,
                options: crate::pipeline::context::RunOptions {
                    no_rollback: deploy.no_rollback,
                    keep_snapshots: usize::from(deploy.keep_snapshots),
                    lock_ttl: cli.global.lock_ttl,
                    allow_destroy: deploy.allow_destroy,
                    traffic_steps,
                    grace,
                    rollback_to: None,
                    command_line: deploy.command_line(),
                },
                rollout_timeout: deploy.timeout.as_deref(),
            })
            .await
        }
        Some(Command::Validate {
            ref environment,
            ref phases,
        }) => {
            pipeline::run(pipeline::Request {
                command: "validate",
                environment,
                phases: &crate::cli::PhaseFlags {
                    skip_validate: false,
                    ..phases.clone()
                },
                // Validate changes nothing, so a check is a real run of it.
                dry_run: false,
                deployment: false,
                global,
                options: Default::default(),
                rollout_timeout: None,
            })
            .await
        }
        Some(Command::Rollback {
            ref environment,
            ref deployment_id,
            dry_run,
            database,
        }) => rollback::run(environment, deployment_id, dry_run, database, global).await,
        Some(Command::Db(DbCommand::Status { ref environment })) => {
            db::status(environment, global).await
        }
        Some(Command::Db(DbCommand::Backups { ref environment })) => {
            db::backups(environment, global).await
        }
        Some(Command::Db(DbCommand::Restore {
            ref environment,
            ref backup,
            from_another_database,
        })) => db::restore(environment, backup, from_another_database, global).await,
        Some(Command::Diff {
            ref environment,
            ref phases,
        }) => diff::run(environment, phases, global).await,
        Some(Command::History {
            ref environment,
            max,
        }) => history::run(environment, max, global).await,
        Some(Command::Status { ref environment }) => status::run(environment, global).await,
        Some(Command::Unlock { ref environment }) => unlock::run(environment, global).await,
        Some(Command::Promote {
            ref environment,
            step,
        }) => {
            let action = if step {
                crate::traffic::record::Action::Step
            } else {
                crate::traffic::record::Action::Promote
            };
            rollout::request(environment, action, global).await
        }
        Some(Command::Abort { ref environment }) => {
            rollout::request(environment, crate::traffic::record::Action::Abort, global).await
        }
        Some(Command::Bootstrap { ref environment }) => bootstrap::run(environment, global),
        Some(Command::EnvTemplate) => {
            print!("{}", crate::config::template::render());
            Ok(exit_code::SUCCESS)
        }
        Some(Command::Version) => {
            println!("maily-deploy {}", crate::cli::VERSION);
            Ok(exit_code::SUCCESS)
        }
        Some(Command::Completions { shell }) => {
            // The script calls this very binary for each Tab.
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "maily-deploy".into());
            print!("{}", crate::completion::registration(shell, &exe)?);
            Ok(exit_code::SUCCESS)
        }
    }
}

/// `--traffic-steps` and `--grace`, checked together so both problems are
/// reported at once.
/// A deploy's own traffic steps and grace, when given.
type TrafficOverrides = (Option<Vec<u32>>, Option<crate::config::traffic::Grace>);

/// The steps and grace the flags (or the variables, once merged) give,
/// or every problem with them.
fn traffic_overrides(
    args: &crate::cli::DeployArgs,
) -> Result<TrafficOverrides, Vec<error::Problem>> {
    let mut problems = Vec::new();
    for why in args
        .traffic_steps
        .as_deref()
        .map(crate::config::traffic::step_problems)
        .unwrap_or_default()
    {
        problems.push(error::Problem {
            phase: None,
            subject: "--traffic-steps".into(),
            problem: why,
            fix: "e.g. --traffic-steps 10,50,100, or --traffic-steps 100 to switch at once".into(),
        });
    }
    let grace = match args.grace.as_deref().map(crate::cli::parse_grace) {
        Some(Err(why)) => {
            problems.push(error::Problem {
                phase: None,
                subject: "--grace".into(),
                problem: why,
                fix: "e.g. --grace 10m, --grace 0s (scale down at once) or --grace keep".into(),
            });
            None
        }
        Some(Ok(g)) => Some(g),
        None => None,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok((args.traffic_steps.clone(), grace))
}

/// A deploy's command line refused (exit 2), with the configuration's
/// problems found meanwhile named in the same refusal.
fn command_line_problems(
    mut problems: Vec<error::Problem>,
    config: Vec<error::Problem>,
) -> anyhow::Error {
    let message = if config.is_empty() {
        "the command line has problems; nothing was changed".to_string()
    } else {
        format!(
            "the command line has problems, and the configuration {} too; nothing was changed",
            crate::wording::count(config.len(), "problem", "problems")
        )
    };
    problems.extend(config);
    error::Failure::with_problems(error::Kind::Usage, message, problems).into()
}
