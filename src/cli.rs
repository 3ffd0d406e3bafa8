//! The command line, as clap derives it.
//!
//! `maily-deploy <ENVIRONMENT>` deploys; the other verbs are subcommands.
//! A first word that is a subcommand's name is the subcommand, anything else
//! is an environment; global options may come before either.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::pipeline::{PhaseId, SelectionFlags};

const DEPLOY_EXAMPLES: &str = "\
Examples:
  maily-deploy production                       run all nine phases
  maily-deploy production --skip-frontend       everything but the frontend
  maily-deploy production --dry-run             the plan; nothing is changed
  maily-deploy production --from verify         resume a failed run at verify
  maily-deploy rollback production production-20250101-120000";

/// `--version` and `maily-deploy version`: the version, the commit and
/// the build date (`build.rs`), as a bug report needs them.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MAILY_COMMIT"),
    ", built ",
    env!("MAILY_BUILD_DATE"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "maily-deploy",
    version = VERSION,
    about = "Deploy the Maily platform: prove the new version works before users see it, and take it back in seconds.",
    after_help = DEPLOY_EXAMPLES,
    subcommand_negates_reqs = true,
    arg_required_else_help = true,
    // clap would write `[ENVIRONMENT] <COMMAND>`, as if an environment
    // could come before a command: it cannot (`usage::environment_first`).
    override_usage = "maily-deploy [OPTIONS] <ENVIRONMENT>\n       maily-deploy [OPTIONS] <COMMAND>"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub deploy: DeployArgs,

    #[command(flatten)]
    pub global: GlobalArgs,
}

/// `maily-deploy <ENVIRONMENT>`: run the phases in order.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The environment to deploy (a profile in manifests/environments/: production, staging)
    #[arg(required = true, add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
    pub environment: Option<String>,

    #[command(flatten)]
    pub phases: PhaseFlags,

    /// Show what every phase would do; change nothing anywhere
    #[arg(long)]
    pub dry_run: bool,

    /// On failure, leave everything as it is instead of putting users back on the old version
    #[arg(long)]
    pub no_rollback: bool,

    /// How many deployment snapshots to keep in the cluster (the last good one is always kept)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP_SNAPSHOTS, value_parser = parse_keep_snapshots, allow_hyphen_values = true)]
    pub keep_snapshots: u16,

    /// How long each rollout may take (ROLLOUT_TIMEOUT, as Helm's --timeout): a duration such as 10m; wins over the env file and the environment
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Option<String>,

    /// Let provision apply a Terraform plan that destroys resources (without it, such a plan stops the run before anything is applied)
    #[arg(long)]
    pub allow_destroy: bool,

    /// Percent of users on the new slot at each traffic step, instead of the profile's (comma-separated, rising, ending at 100); `100` switches at once [env: MAILY_TRAFFIC_STEPS]
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PERCENT",
        help_heading = "Traffic",
        value_parser = parse_percent,
        allow_hyphen_values = true
    )]
    pub traffic_steps: Option<Vec<u32>>,

    /// How long the old slot stays scaled after 100%, instead of the profile's `traffic.grace` (a duration such as 10m or 0s), or `keep` to leave it up until the next deploy [env: MAILY_GRACE]
    #[arg(
        long,
        value_name = "DURATION|keep",
        help_heading = "Traffic",
        allow_hyphen_values = true
    )]
    pub grace: Option<String>,
}

/// The phase names `--only` and `--from` take, with their aliases (the
/// seed's words), which clap's derive would hide.
macro_rules! phase_names {
    () => {
        "[phases: validate, provision (alias: infrastructure), migrate (database), deploy-backend (backend), deploy-frontend (frontend), configure-ai (ai), monitor (monitoring), verify, shift-traffic (traffic)]"
    };
}
const PHASE_NAMES_HELP_ONLY: &str = concat!(
    "Run only these phases (comma-separated), after validate\n",
    phase_names!()
);
const PHASE_NAMES_HELP_FROM: &str = concat!(
    "Resume a failed run at this phase, after validate\n",
    phase_names!()
);

impl DeployArgs {
    /// This run's command line after `maily-deploy`: the environment and
    /// the run's own flags (phases, traffic, rollback behaviour), in their
    /// canonical spelling, so a run can be repeated as it was started
    /// (`status` suggests it). The options every command takes
    /// (`--env-file`, `--kubeconfig`, `--output`, ...) are left out: they
    /// say where the person repeating it keeps their files, not what the
    /// run did. No flag of a deploy holds a secret.
    pub fn command_line(&self) -> Vec<String> {
        let mut out = vec![self.environment.clone().unwrap_or_default()];
        out.extend(self.phases.words());
        if let Some(steps) = &self.traffic_steps {
            let steps: Vec<String> = steps.iter().map(u32::to_string).collect();
            out.extend(["--traffic-steps".to_string(), steps.join(",")]);
        }
        if let Some(grace) = &self.grace {
            out.extend(["--grace".to_string(), grace.clone()]);
        }
        if let Some(timeout) = &self.timeout {
            out.extend(["--timeout".to_string(), timeout.clone()]);
        }
        if self.no_rollback {
            out.push("--no-rollback".into());
        }
        if self.allow_destroy {
            out.push("--allow-destroy".into());
        }
        if self.keep_snapshots != DEFAULT_KEEP_SNAPSHOTS {
            out.extend([
                "--keep-snapshots".to_string(),
                self.keep_snapshots.to_string(),
            ]);
        }
        out
    }
}

impl DeployArgs {
    /// `--traffic-steps` and `--grace` from `MAILY_TRAFFIC_STEPS` and
    /// `MAILY_GRACE` (a CI job's inputs) where the flags are not given. Read
    /// for a deploy only, so a variable set for deploys never breaks another
    /// command (`version`, an emergency `rollback`); an empty one is unset.
    /// A bad value is named by its variable, every one at once; so is one
    /// that is not UTF-8, rather than taken for unset.
    pub fn with_environment(
        mut self,
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, Vec<crate::error::Problem>> {
        let mut problems = Vec::new();
        let mut set = |name: &str, otherwise: &str| match var(name)?.into_string() {
            Ok(text) => Some(text).filter(|v| !v.trim().is_empty()),
            Err(_) => {
                problems.push(crate::config::not_utf8_variable(name, otherwise));
                None
            }
        };
        let steps = self
            .traffic_steps
            .is_none()
            .then(|| set("MAILY_TRAFFIC_STEPS", "for the profile's steps"))
            .flatten();
        let grace = self
            .grace
            .is_none()
            .then(|| set("MAILY_GRACE", "for the profile's grace"))
            .flatten();
        if let Some(text) = steps {
            let parsed: Result<Vec<u32>, String> = text
                .split(',')
                .map(|p| {
                    parse_percent(p.trim()).map_err(|why| {
                        format!(
                            "is not a comma-separated list of percents: `{}` {why}",
                            crate::error::clipped(p.trim())
                        )
                    })
                })
                .collect();
            let why = match &parsed {
                Err(e) => vec![e.clone()],
                Ok(steps) => crate::config::traffic::step_problems(steps),
            };
            if why.is_empty() {
                self.traffic_steps = parsed.ok();
            }
            problems.extend(why.into_iter().map(|why| crate::error::Problem {
                phase: None,
                subject: "MAILY_TRAFFIC_STEPS".into(),
                problem: why,
                fix: "e.g. MAILY_TRAFFIC_STEPS=10,50,100 (or 100 to switch at once), or unset it for the profile's steps".into(),
            }));
        }
        if let Some(text) = grace {
            match parse_grace(&text) {
                Ok(_) => self.grace = Some(text),
                Err(why) => problems.push(crate::error::Problem {
                    phase: None,
                    subject: "MAILY_GRACE".into(),
                    problem: why,
                    fix: "e.g. MAILY_GRACE=10m, 0s or keep, or unset it for the profile's grace"
                        .into(),
                }),
            }
        }
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(problems)
        }
    }
}

/// `--keep-snapshots`'s default.
const DEFAULT_KEEP_SNAPSHOTS: u16 = 30;

/// `maily-deploy` and `words`, as a person types them into a shell: a word
/// with anything but letters, digits and `-_.,:/=@%+` single-quoted.
pub fn command_text(words: &[String]) -> String {
    let plain = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.,:/=@%+".contains(c))
    };
    let quoted: Vec<String> = words
        .iter()
        .map(|w| {
            if plain(w) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect();
    std::iter::once("maily-deploy".to_string())
        .chain(quoted)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Flags that choose the phases of a run.
#[derive(Debug, Args, Default, Clone)]
pub struct PhaseFlags {
    /// Skip validate (not recommended: nothing checks the configuration)
    #[arg(long, help_heading = "Phases")]
    pub skip_validate: bool,
    /// Skip provision (Terraform)
    #[arg(long, visible_alias = "skip-infrastructure", help_heading = "Phases")]
    pub skip_provision: bool,
    /// Skip migrate (database backup and migrations)
    #[arg(long, visible_alias = "skip-database", help_heading = "Phases")]
    pub skip_migrate: bool,
    /// Skip deploy-backend (the Kubernetes services)
    #[arg(long, help_heading = "Phases")]
    pub skip_backend: bool,
    /// Skip deploy-frontend (Vercel)
    #[arg(long, help_heading = "Phases")]
    pub skip_frontend: bool,
    /// Skip configure-ai (AI config, provider checks, AI services)
    #[arg(long, help_heading = "Phases")]
    pub skip_ai: bool,
    /// Skip monitor (alert rules, dashboards)
    #[arg(long, visible_alias = "skip-monitoring", help_heading = "Phases")]
    pub skip_monitor: bool,
    /// Skip verify (checks of the new slot before traffic moves)
    #[arg(long, help_heading = "Phases")]
    pub skip_verify: bool,
    /// Skip shift-traffic (users stay on the current slot)
    #[arg(long, help_heading = "Phases")]
    pub skip_traffic: bool,
    /// Run only these phases (comma-separated), after validate
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PHASE",
        help_heading = "Phases",
        hide_possible_values = true,
        long_help = PHASE_NAMES_HELP_ONLY,
        add = clap_complete::engine::ArgValueCompleter::new(crate::completion::phases)
    )]
    pub only: Vec<PhaseId>,
    /// Resume a failed run at this phase, after validate
    #[arg(
        long,
        value_name = "PHASE",
        help_heading = "Phases",
        hide_possible_values = true,
        long_help = PHASE_NAMES_HELP_FROM,
        add = clap_complete::engine::ArgValueCompleter::new(crate::completion::phases)
    )]
    pub from: Option<PhaseId>,
}

impl PhaseFlags {
    /// The flags as typed: each `--skip-*` by its own name, then `--only`
    /// and `--from`.
    pub fn words(&self) -> Vec<String> {
        let flags = self.selection_flags();
        let mut out: Vec<String> = PhaseId::ALL
            .iter()
            .filter(|id| flags.skip.contains(id))
            .map(|id| id.skip_flag().to_string())
            .collect();
        if !flags.only.is_empty() {
            let only: Vec<&str> = flags.only.iter().map(|p| p.as_str()).collect();
            out.extend(["--only".to_string(), only.join(",")]);
        }
        if let Some(from) = flags.from {
            out.extend(["--from".to_string(), from.as_str().to_string()]);
        }
        out
    }

    pub fn selection_flags(&self) -> SelectionFlags {
        let pairs = [
            (self.skip_validate, PhaseId::Validate),
            (self.skip_provision, PhaseId::Provision),
            (self.skip_migrate, PhaseId::Migrate),
            (self.skip_backend, PhaseId::DeployBackend),
            (self.skip_frontend, PhaseId::DeployFrontend),
            (self.skip_ai, PhaseId::ConfigureAi),
            (self.skip_monitor, PhaseId::Monitor),
            (self.skip_verify, PhaseId::Verify),
            (self.skip_traffic, PhaseId::ShiftTraffic),
        ];
        SelectionFlags {
            skip: pairs
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, id)| *id)
                .collect(),
            only: self.only.clone(),
            from: self.from,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Lines and a table for people
    #[default]
    Human,
    /// One JSON report on stdout (schema in docs/ci.md)
    Json,
}

/// How `rollback --database` takes the database back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatabaseRollback {
    /// Down migrations to the schema version the deployment recorded
    Down,
    /// Restore the backup the next run that changed the database took first
    Restore,
}

/// The database commands.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Applied and pending migrations, and any checksum drift.
    #[command(after_help = "Example:\n  maily-deploy db status production")]
    Status {
        /// The environment
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
        environment: String,
    },
    /// The backups at DATABASE_BACKUP_URL, newest first, with sizes and deployment ids, and the daily CronJob's dumps.
    #[command(after_help = "Example:\n  maily-deploy db backups production")]
    Backups {
        /// The environment
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
        environment: String,
    },
    /// Restore a backup (by name or deployment id), after a fresh backup; asks first.
    #[command(
        after_help = "Examples:\n  maily-deploy db restore production production-20250101-120000 --yes\n  maily-deploy db restore production daily   # the newest daily backup"
    )]
    Restore {
        /// The environment
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
        environment: String,
        /// The backup: its name, its location, or the deployment that took
        /// it (`daily`: the newest of the daily backup job)
        backup: String,
        /// Restore a backup taken of another database (another host, port
        /// or database name than DATABASE_URL's), as when moving to a new
        /// server; refused without it, so a staging backup never lands in
        /// production by a slip of the id
        #[arg(long)]
        from_another_database: bool,
    },
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Env file to read [default: .env.<ENVIRONMENT> when present]; the process environment wins over it
    #[arg(long, global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// Directory of the manifests and environment profiles
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "manifests",
        env = "MAILY_MANIFESTS_DIR"
    )]
    pub manifests_dir: PathBuf,
    /// Kubeconfig to use [default: $KUBECONFIG or ~/.kube/config]
    #[arg(long, global = true, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use [default: the current context]
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        add = clap_complete::engine::ArgValueCompleter::new(crate::completion::contexts)
    )]
    pub context: Option<String>,
    /// Output format
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// More log detail (-v, -vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// No colours (also when NO_COLOR is set)
    #[arg(long, global = true)]
    pub no_color: bool,
    /// Answer yes to confirmations (required for them without a terminal)
    #[arg(long, global = true)]
    pub yes: bool,
    /// How long the deploy lock outlives a run that stops renewing it (killed, runner gone)
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_ttl, allow_hyphen_values = true)]
    pub lock_ttl: std::time::Duration,
}

/// The options of every command that `env-template`, `version` and
/// `completions` refuse (`usage::ignored_by`), hidden from their help: a
/// command's own copy of an option keeps clap from adding the global one,
/// so the help lists only what the command takes, and the copy still
/// parses, so the refusal names it.
pub fn refused_globals() -> Vec<clap::Arg> {
    GlobalArgs::augment_args(clap::Command::new("globals"))
        .get_arguments()
        .filter(|a| crate::usage::READING_OPTIONS.contains(&a.get_id().as_str()))
        .map(|a| a.clone().hide(true))
        .collect()
}

/// A whole number from `min` to `max`, or the rule it breaks, said as
/// the rule: `-5`, `NaN`, `1e3` and a number past any integer type get
/// the same answer, which is the one that helps.
pub fn whole_number(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u64>() {
        Ok(n) if digits && (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from {min} to {max}")),
    }
}

/// A traffic step (`--traffic-steps`, `MAILY_TRAFFIC_STEPS`): a percent
/// of users, 1 to 100.
pub fn parse_percent(text: &str) -> Result<u32, String> {
    whole_number(text, 1, 100)
        .map(|n| n as u32)
        .map_err(|why| format!("{why} (a percent of users on the new slot)"))
}

fn parse_keep_snapshots(text: &str) -> Result<u16, String> {
    whole_number(text, 1, u64::from(u16::MAX)).map(|n| n as u16)
}

fn parse_max(text: &str) -> Result<u32, String> {
    whole_number(text, 1, u64::from(u32::MAX)).map(|n| n as u32)
}

/// What a duration flag (or variable standing for one) with white space
/// around it is told: refused, as a variable's padded value is, rather
/// than read as something else than typed.
const PADDED: &str = "has leading or trailing white space; give the duration alone, e.g. 10m";

/// `--grace` and `MAILY_GRACE`: `keep`, or a duration (`0s` included),
/// refused when padded or negative like every duration flag.
pub fn parse_grace(text: &str) -> Result<crate::config::traffic::Grace, String> {
    if text.trim() != text {
        return Err(
            "has leading or trailing white space; give `keep` or the duration alone, e.g. 10m"
                .into(),
        );
    }
    if text.starts_with('-') {
        return Err(
            "is negative; give a duration (e.g. 10m, or 0s to scale down at once) or `keep`".into(),
        );
    }
    crate::config::traffic::Grace::parse(text).map_err(|e| e.to_string())
}

/// `--timeout`: a duration, kept as typed for ROLLOUT_TIMEOUT (whose
/// bounds validate checks with the variable's own).
fn parse_timeout(s: &str) -> Result<String, String> {
    if s.trim() != s {
        return Err(PADDED.into());
    }
    crate::config::duration::ROLLOUT_TIMEOUT
        .parse(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// Why `--lock-ttl` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("the lock TTL has leading or trailing white space; give the duration alone, e.g. 30s")]
    Padded,
    /// Not a duration, under 2s (see [`crate::config::duration::LOCK_TTL`])
    /// or not whole seconds.
    #[error("the lock TTL {0}")]
    Duration(crate::config::duration::DurationError),
    #[error(
        "the lock TTL must be at most {} (it is how long a killed run keeps every other run out; `maily-deploy unlock` frees the lock sooner)",
        humantime::format_duration(MAX_LOCK_TTL)
    )]
    TooLong,
}

fn parse_ttl(s: &str) -> Result<std::time::Duration, TtlError> {
    if s.trim() != s {
        return Err(TtlError::Padded);
    }
    let d = crate::config::duration::LOCK_TTL
        .parse(s)
        .map_err(TtlError::Duration)?;
    if d > MAX_LOCK_TTL {
        return Err(TtlError::TooLong);
    }
    Ok(d)
}

/// The longest lock TTL: well inside the Lease's int32
/// `leaseDurationSeconds`, and as long as a killed run may block the
/// environment.
pub const MAX_LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring the platform back to the state a deployment left.
    #[command(
        after_help = "`previous` is the newest deployment that succeeded and moved users, before the one users are on now; run twice, it goes back where it started, as `kubectl rollout undo` does.\n\nExamples:\n  maily-deploy rollback production previous\n  maily-deploy rollback production production-20250101-120000\n  maily-deploy rollback production previous --dry-run"
    )]
    Rollback {
        /// The environment to roll back
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
        environment: String,
        /// The deployment to go back to, as `history` lists it (<ENV>-YYYYMMDD-HHMMSS), or `previous`: the last good deployment before the one users are on
        #[arg(
            value_name = "DEPLOYMENT_ID|previous",
            add = clap_complete::engine::ArgValueCompleter::new(crate::completion::deployment_ids)
        )]
        deployment_id: String,
        /// Show what would change; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Also take the database back: `down` runs down migrations to the schema ID recorded;
        /// `restore` restores the backup taken by the deployment after ID (after a fresh backup).
        /// Without it the database is left alone.
        #[arg(long, value_enum, value_name = "HOW")]
        database: Option<DatabaseRollback>,
    },
    /// Finish the rollout in progress now: every user to the new slot, the remaining steps and analysis skipped.
    #[command(
        after_help = "Safe from a second terminal while the deploying run is live: the run does it within a second.\nIf the run died, this takes the deploy lock (once the dead run's lease expires) and finishes the rollout itself.\n\nExamples:\n  maily-deploy promote production\n  maily-deploy promote production --step    end this step, go on to the next"
    )]
    Promote {
        /// The environment
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
        environment: String,
        /// Only end the current step (its pause and analysis) and go on to the next
        #[arg(long)]
        step: bool,
    },
    /// Stop the rollout in progress: every user back to the old slot at once; the run fails (exit 4).
    #[command(
        after_help = "Safe from a second terminal while the deploying run is live: the run does it within a second.\nIf the run died, this takes the deploy lock (once the dead run's lease expires) and puts users back itself.\n\nExample:\n  maily-deploy abort production"
    )]
    Abort {
        /// The environment
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
        environment: String,
    },
    /// List the environment's deployments, newest first.
    #[command(
        after_help = "On a terminal the table fits its width (COLUMNS, when set, overrides it); in a pipe, plain columns, one line per deployment, for grep and awk.\n\nExamples:\n  maily-deploy history production\n  maily-deploy history production --max 5\n  maily-deploy history production | awk '$3 == \"succeeded\" {print $1}'"
    )]
    History {
        /// The environment
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
        environment: String,
        /// Show only the newest N deployments [default: every one kept, at most --keep-snapshots]
        #[arg(long, value_name = "N", value_parser = parse_max, allow_hyphen_values = true)]
        max: Option<u32>,
    },
    /// Show the live state: active slot, images, route weights, the rollout in progress, drift.
    #[command(after_help = "Example:\n  maily-deploy status production")]
    Status {
        /// The environment
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
        environment: String,
    },
    /// The database: migration status, backups, restore.
    #[command(subcommand)]
    Db(DbCommand),
    /// Print what a cluster admin applies once per environment: the namespace and the deployer's RBAC.
    #[command(after_help = "Example:\n  maily-deploy bootstrap production | kubectl apply -f -")]
    Bootstrap {
        /// The environment
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
        environment: String,
    },
    /// Remove a stuck deploy lock (a run that died holding it), after confirmation.
    #[command(after_help = "Example:\n  maily-deploy unlock production --yes")]
    Unlock {
        /// The environment
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
        environment: String,
    },
    /// Check the configuration alone, for the phases selected (was validate-env-vars.sh).
    #[command(
        after_help = "Examples:\n  maily-deploy validate production\n  maily-deploy validate production --skip-frontend --env-file .env.example"
    )]
    Validate {
        /// The environment whose configuration to check
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
        environment: String,
        #[command(flatten)]
        phases: PhaseFlags,
    },
    /// What a deploy would change in the cluster, as the cluster judges it; exit 0 none, 1 some.
    #[command(
        after_help = "Every object the deploy would apply goes through a server-side dry run; the diff is the fields maily-deploy owns, at the run's end (the release in the idle slot, users on it). Nothing is locked or written; Secrets are never shown.\nExit codes: 0 no changes, 1 changes, any other the README's table (an unexpected error is 11, not 1).\n\nExamples:\n  maily-deploy diff production\n  maily-deploy diff production --skip-monitor --output json"
    )]
    Diff {
        /// The environment to compare with
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::completion::environments))]
        environment: String,
        #[command(flatten)]
        phases: PhaseFlags,
    },
    /// Print the env file template, every variable with its description.
    #[command(
        name = "env-template",
        after_help = "Example:\n  maily-deploy env-template > .env.staging",
        args = refused_globals()
    )]
    EnvTemplate,
    /// Print the version, the commit and the build date.
    #[command(after_help = "Example:\n  maily-deploy version", args = refused_globals())]
    Version,
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  maily-deploy completions bash > /etc/bash_completion.d/maily-deploy",
        args = refused_globals()
    )]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_an_example_in_its_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.has_subcommands() {
                    walk(sub, &name, missing);
                    continue;
                }
                let after = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if !after.contains("Example") {
                    missing.push(name);
                }
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "maily-deploy", &mut missing);
        assert!(missing.is_empty(), "no example: {missing:?}");
    }
    use crate::pipeline::select;
    use PhaseId::*;

    fn phases_of(line: &str) -> Vec<PhaseId> {
        let cli = Cli::try_parse_from(line.split_whitespace()).unwrap();
        assert!(cli.command.is_none(), "{line} parsed as a subcommand");
        select(&cli.deploy.phases.selection_flags())
            .unwrap()
            .selected()
    }

    #[test]
    fn clap_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn documented_command_lines_take_the_phases_their_flags_name() {
        assert_eq!(phases_of("maily-deploy production"), PhaseId::ALL.to_vec());
        assert_eq!(
            phases_of("maily-deploy production --skip-frontend"),
            vec![
                Validate,
                Provision,
                Migrate,
                DeployBackend,
                ConfigureAi,
                Monitor,
                Verify,
                ShiftTraffic
            ]
        );
        assert_eq!(
            phases_of(
                "maily-deploy production --skip-infrastructure --skip-database --skip-frontend --skip-ai"
            ),
            vec![Validate, DeployBackend, Monitor, Verify, ShiftTraffic]
        );
        assert_eq!(
            phases_of("maily-deploy staging --skip-monitoring --skip-backend"),
            vec![
                Validate,
                Provision,
                Migrate,
                DeployFrontend,
                ConfigureAi,
                Verify,
                ShiftTraffic
            ]
        );
        let cli = Cli::try_parse_from(["maily-deploy", "production", "--dry-run"]).unwrap();
        assert!(cli.deploy.dry_run);
        assert_eq!(cli.deploy.environment.as_deref(), Some("production"));
    }

    #[test]
    fn every_skip_flag_and_alias_skips_its_phase() {
        for (flag, id) in [
            ("--skip-validate", Validate),
            ("--skip-provision", Provision),
            ("--skip-infrastructure", Provision),
            ("--skip-migrate", Migrate),
            ("--skip-database", Migrate),
            ("--skip-backend", DeployBackend),
            ("--skip-frontend", DeployFrontend),
            ("--skip-ai", ConfigureAi),
            ("--skip-monitor", Monitor),
            ("--skip-monitoring", Monitor),
            ("--skip-verify", Verify),
            ("--skip-traffic", ShiftTraffic),
        ] {
            let got = phases_of(&format!("maily-deploy production {flag}"));
            let want: Vec<PhaseId> = PhaseId::ALL.into_iter().filter(|p| *p != id).collect();
            assert_eq!(got, want, "{flag}");
        }
    }

    #[test]
    fn only_and_from_take_phase_ids_and_aliases() {
        assert_eq!(
            phases_of("maily-deploy production --only migrate,deploy-backend"),
            vec![Validate, Migrate, DeployBackend]
        );
        assert_eq!(
            phases_of("maily-deploy production --only database --only traffic"),
            vec![Validate, Migrate, ShiftTraffic]
        );
        assert_eq!(
            phases_of("maily-deploy production --from deploy-frontend --skip-ai"),
            vec![Validate, DeployFrontend, Monitor, Verify, ShiftTraffic]
        );
        assert_eq!(
            phases_of("maily-deploy production --from shift-traffic"),
            vec![Validate, ShiftTraffic]
        );
        assert_eq!(
            phases_of("maily-deploy production --skip-validate --only verify"),
            vec![Verify]
        );
    }

    #[test]
    fn subcommands_are_not_environments() {
        let cli = Cli::try_parse_from([
            "maily-deploy",
            "rollback",
            "production",
            "production-20250101-120000",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Rollback { .. })));
        let cli = Cli::try_parse_from(["maily-deploy", "validate", "staging", "--skip-frontend"])
            .unwrap();
        match cli.command {
            Some(Command::Validate {
                environment,
                phases,
            }) => {
                assert_eq!(environment, "staging");
                assert!(phases.skip_frontend);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from([
            "maily-deploy",
            "--output",
            "json",
            "history",
            "production",
            "--env-file",
            "x",
        ])
        .unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(
            cli.global.env_file.as_deref(),
            Some(std::path::Path::new("x"))
        );
    }

    #[test]
    fn a_runs_command_line_parses_back_to_the_same_run() {
        for line in [
            "maily-deploy production",
            "maily-deploy --env-file .env.ci staging --skip-infrastructure --skip-database --skip-frontend --skip-ai --traffic-steps 25,50,100 --grace 0s",
            "maily-deploy production --only database,traffic --no-rollback --keep-snapshots 5",
            "maily-deploy production --from verify --skip-monitoring --allow-destroy --grace keep",
        ] {
            let cli = Cli::try_parse_from(line.split_whitespace()).unwrap();
            let words = cli.deploy.command_line();
            let again = Cli::try_parse_from(
                std::iter::once("maily-deploy".to_string()).chain(words.clone()),
            )
            .unwrap();
            let (a, b) = (&cli.deploy, &again.deploy);
            assert_eq!(a.environment, b.environment, "{words:?}");
            assert_eq!(
                a.phases.selection_flags(),
                b.phases.selection_flags(),
                "{words:?}"
            );
            assert_eq!(a.traffic_steps, b.traffic_steps, "{words:?}");
            assert_eq!(a.grace, b.grace, "{words:?}");
            assert_eq!(
                (a.no_rollback, a.allow_destroy, a.keep_snapshots),
                (b.no_rollback, b.allow_destroy, b.keep_snapshots),
                "{words:?}"
            );
            assert!(!words.iter().any(|w| w.contains("env")), "{words:?}");
        }
        let cli = Cli::try_parse_from(
            "maily-deploy staging --skip-database --skip-frontend --traffic-steps 25,100"
                .split_whitespace(),
        )
        .unwrap();
        assert_eq!(
            command_text(&cli.deploy.command_line()),
            "maily-deploy staging --skip-migrate --skip-frontend --traffic-steps 25,100"
        );
        assert_eq!(
            command_text(&["staging".into(), "it's here".into()]),
            r"maily-deploy staging 'it'\''s here'"
        );
    }

    #[test]
    fn an_unknown_phase_is_a_usage_error() {
        let err =
            Cli::try_parse_from(["maily-deploy", "production", "--only", "deploy"]).unwrap_err();
        assert_eq!(err.exit_code(), crate::exit_code::USAGE);
    }

    /// The words of clap's refusal of `line`, and its exit code.
    fn refusal(line: &str) -> (String, i32) {
        let err = Cli::try_parse_from(line.split(' ')).unwrap_err();
        (err.to_string(), err.exit_code())
    }

    #[test]
    fn number_flags_state_their_rule_whatever_the_mistake() {
        for (line, rule) in [
            (
                "maily-deploy staging --traffic-steps=-5,100",
                "must be a whole number from 1 to 100",
            ),
            (
                "maily-deploy staging --traffic-steps NaN",
                "must be a whole number from 1 to 100",
            ),
            (
                "maily-deploy staging --traffic-steps 0,100",
                "must be a whole number from 1 to 100",
            ),
            (
                "maily-deploy staging --traffic-steps 99999999999999999999999",
                "must be a whole number from 1 to 100",
            ),
            (
                "maily-deploy staging --keep-snapshots 99999999999999999999",
                "must be a whole number from 1 to 65535",
            ),
            (
                "maily-deploy staging --keep-snapshots -1",
                "must be a whole number from 1 to 65535",
            ),
            (
                "maily-deploy staging --keep-snapshots 1e3",
                "must be a whole number from 1 to 65535",
            ),
            (
                "maily-deploy history staging --max 0",
                "must be a whole number from 1 to 4294967295",
            ),
            (
                "maily-deploy history staging --max 99999999999999999999",
                "must be a whole number from 1 to 4294967295",
            ),
        ] {
            let (text, code) = refusal(line);
            assert_eq!(code, crate::exit_code::USAGE, "{line}");
            assert!(text.contains(rule), "{line}: {text}");
            for wrong in ["0..=", "invalid digit", "too large", "use '-- "] {
                assert!(!text.contains(wrong), "{line}: {text}");
            }
        }
        assert_eq!(whole_number("65535", 1, 65535), Ok(65535));
        assert!(whole_number("+5", 1, 100).is_err());
    }

    #[test]
    fn duration_flags_refuse_white_space_and_negatives_each_by_its_flag() {
        for (flag, value, why) in [
            ("--timeout", " 5m", "white space"),
            ("--timeout", "5m ", "white space"),
            ("--lock-ttl", " 5m", "white space"),
            ("--timeout", "-1m", "is negative; give a positive duration"),
            ("--lock-ttl", "-1m", "is negative; give a positive duration"),
        ] {
            let err = Cli::try_parse_from(["maily-deploy", "staging", flag, value]).unwrap_err();
            let text = err.to_string();
            assert_eq!(err.exit_code(), crate::exit_code::USAGE, "{flag} {value:?}");
            assert!(text.contains(flag) && text.contains(why), "{text}");
            // Not the variable the flag sets, and not clap's `-- -1` tip.
            assert!(
                !text.contains("ROLLOUT_TIMEOUT") && !text.contains("use '-- "),
                "{text}"
            );
        }
        // --grace is checked with --traffic-steps, so both are said at once.
        for bad in [" 5m", "5m ", "-1m"] {
            assert!(parse_grace(bad).is_err(), "{bad:?}");
        }
        assert!(parse_grace("keep").is_ok() && parse_grace("0s").is_ok());
        let problems = Cli::try_parse_from(["maily-deploy", "staging"])
            .unwrap()
            .deploy
            .with_environment(|name| (name == "MAILY_GRACE").then(|| " 5m".into()))
            .unwrap_err();
        assert!(problems[0].problem.contains("white space"), "{problems:?}");
    }

    #[test]
    fn traffic_variables_fill_absent_flags_for_a_deploy_and_are_named_when_bad() {
        let parse = |line: &str| Cli::try_parse_from(line.split_whitespace()).unwrap().deploy;
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let d = parse("maily-deploy staging")
            .with_environment(env(&[
                ("MAILY_TRAFFIC_STEPS", "10,100"),
                ("MAILY_GRACE", "keep"),
            ]))
            .unwrap();
        assert_eq!(d.traffic_steps, Some(vec![10, 100]));
        assert_eq!(d.grace.as_deref(), Some("keep"));
        assert!(d.command_line().contains(&"--traffic-steps".to_string()));
        // A flag wins; an empty variable is unset.
        let d = parse("maily-deploy staging --traffic-steps 100")
            .with_environment(env(&[("MAILY_TRAFFIC_STEPS", "abc"), ("MAILY_GRACE", "")]))
            .unwrap();
        assert_eq!(d.traffic_steps, Some(vec![100]));
        assert_eq!(d.grace, None);
        // Bad values, each named by its variable.
        let problems = parse("maily-deploy staging")
            .with_environment(env(&[
                ("MAILY_TRAFFIC_STEPS", "50,10"),
                ("MAILY_GRACE", "forever"),
            ]))
            .unwrap_err();
        let subjects: Vec<&str> = problems.iter().map(|p| p.subject.as_str()).collect();
        assert!(subjects.contains(&"MAILY_TRAFFIC_STEPS"), "{problems:?}");
        // Not a number at all: the rule, not the parser's words.
        let problems = parse("maily-deploy staging")
            .with_environment(env(&[("MAILY_TRAFFIC_STEPS", "10,NaN")]))
            .unwrap_err();
        assert_eq!(
            problems[0].problem,
            "is not a comma-separated list of percents: `NaN` must be a whole number from 1 to 100 (a percent of users on the new slot)"
        );
        assert!(subjects.contains(&"MAILY_GRACE"), "{problems:?}");
    }

    #[test]
    fn a_traffic_variable_that_is_not_utf8_is_named_not_taken_for_unset() {
        use std::os::unix::ffi::OsStringExt;
        let parse = |line: &str| Cli::try_parse_from(line.split_whitespace()).unwrap().deploy;
        let env = |name: &str| {
            (name == "MAILY_GRACE").then(|| std::ffi::OsString::from_vec(b"10m\xff".to_vec()))
        };
        let problems = parse("maily-deploy staging")
            .with_environment(env)
            .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].subject, "MAILY_GRACE");
        assert!(
            problems[0]
                .problem
                .starts_with("in the environment is not UTF-8 text"),
            "{problems:?}"
        );
        // The flag wins: the variable is not read.
        let d = parse("maily-deploy staging --grace keep")
            .with_environment(env)
            .unwrap();
        assert_eq!(d.grace.as_deref(), Some("keep"));
    }
}
