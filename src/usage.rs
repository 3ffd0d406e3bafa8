//! What the command line means beyond what clap parses: a verb misspelled
//! (clap takes it for an environment, or stops at the word after it), an
//! environment before its command (`staging validate`), a global option
//! given to a command it does nothing for, and clap refusals whose words
//! would mislead (a variable set empty named as its flag, `--version
//! extra` taken for `--version`).
//!
//! All are refused with exit 2 before anything is read: a user who typed
//! `histroy` meant a command, and one who gave `--lock-ttl` to
//! `env-template` expected it to matter.

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

use crate::cli::Cli;
use crate::error::{Kind, Problem, fail};

/// The command names and aliases users type.
fn command_names() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .flat_map(|c| {
            std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(str::to_string))
        })
        .collect()
}

/// The command `word` is closest to, when it is one typo away.
pub fn nearest_command(word: &str) -> Option<String> {
    if word.chars().count() < 3 || word.starts_with('-') {
        return None;
    }
    command_names()
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&c, word), c))
        .filter(|(d, c)| *d <= 2 && *d < c.len() / 2 + 1)
        .min()
        .map(|(_, c)| c)
}

/// Options of the whole program that take a value: the word after them is
/// theirs, not a command.
const VALUED: &[&str] = &[
    "--env-file",
    "--manifests-dir",
    "--kubeconfig",
    "--context",
    "--output",
    "-o",
    "--lock-ttl",
];

/// The first word of a command line that is not an option or an option's
/// value: the command, or the environment of a deploy.
pub fn first_word(args: &[String]) -> Option<&str> {
    let mut skip = false;
    for a in args.iter().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        if a.starts_with('-') {
            skip = VALUED.contains(&a.as_str());
            continue;
        }
        return Some(a);
    }
    None
}

/// A clap error on a line whose first word is a misspelled command: the
/// message that says so, instead of clap's "unexpected argument".
pub fn misspelled_command(args: &[String]) -> Option<String> {
    let word = first_word(args)?;
    if command_names().iter().any(|c| c == word) {
        return None;
    }
    let near = nearest_command(word)?;
    let rest: Vec<&str> = args
        .iter()
        .skip(1)
        .map(String::as_str)
        .skip_while(|a| *a != word)
        .skip(1)
        .collect();
    Some(format!(
        "`{}` is not a command; did you mean `maily-deploy {near}{}{}`? (`maily-deploy --help` lists the commands)",
        crate::error::clipped(word),
        if rest.is_empty() { "" } else { " " },
        rest.join(" ")
    ))
}

/// A line whose environment comes before its command (`staging validate`,
/// `staging validate production`), which clap's own usage line
/// (`[ENVIRONMENT] <COMMAND>`) seemed to allow: clap reads the first word
/// as a deploy's environment and the command after it without one. Said
/// as the rule, with the line that works when there is one (the
/// environment moved after the command, or dropped when the command has
/// its own).
pub fn environment_first(args: &[String]) -> Option<String> {
    let matches = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(args)
        .ok()?;
    if matches.value_source("environment") != Some(ValueSource::CommandLine) {
        return None;
    }
    let environment = matches.get_one::<String>("environment")?;
    let (command, _) = command_of(&matches);
    if command == "deploy" {
        return None;
    }
    let words: Vec<String> = args.iter().skip(1).cloned().collect();
    let at = words.iter().position(|w| w == environment)?;
    let mut dropped = words.clone();
    dropped.remove(at);
    let mut moved = dropped.clone();
    let after = command.split(' ').count();
    let command_at = moved
        .iter()
        .position(|w| Some(w.as_str()) == command.split(' ').next())
        .unwrap_or(0);
    moved.insert((command_at + after).min(moved.len()), environment.clone());
    let parses = |line: &[String]| {
        Cli::command()
            .try_get_matches_from(
                std::iter::once("maily-deploy".to_string()).chain(line.iter().cloned()),
            )
            .is_ok()
    };
    let example = [moved, dropped]
        .into_iter()
        .find(|line| parses(line))
        .map(|line| crate::cli::command_text(&line))
        .unwrap_or_else(|| format!("maily-deploy {command} <ENVIRONMENT>"));
    Some(format!(
        "`{}` comes before the command `{command}`: a command comes first, and takes its environment after it, as in `{}`",
        crate::error::clipped(environment),
        example
    ))
}

/// A variable standing for a flag (`MAILY_MANIFESTS_DIR` for
/// `--manifests-dir`) set but empty, which clap reports as the flag's
/// missing value although the user never typed the flag: the message
/// that names the variable. `var` reads the process environment.
pub fn empty_variable(
    args: &[String],
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<String> {
    let cmd = Cli::command();
    cmd.get_arguments().find_map(|arg| {
        let name = arg.get_env()?.to_str()?;
        let long = arg.get_long()?;
        let typed = args
            .iter()
            .skip(1)
            .any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")));
        if typed || !var(name).is_some_and(|v| v.is_empty()) {
            return None;
        }
        let default = arg
            .get_default_values()
            .first()
            .map(|d| format!(" to use the default, {}", d.to_string_lossy()))
            .unwrap_or_default();
        Some(format!(
            "{name} is set but empty; it stands for --{long}: give it a value, or unset it{default}"
        ))
    })
}

/// `--version` (or `-V`) with anything else on the line: clap prints the
/// version and exits 0, so `--version extra` would pass for fine.
pub fn version_with_more(args: &[String]) -> Option<String> {
    let others: Vec<&str> = args
        .iter()
        .skip(1)
        .map(String::as_str)
        .filter(|a| *a != "--version" && *a != "-V")
        .collect();
    if others.is_empty() {
        return None;
    }
    let shown: Vec<String> = others
        .iter()
        .map(|a| format!("`{}`", crate::error::clipped(a)))
        .collect();
    Some(format!(
        "--version takes nothing else; drop {}",
        crate::wording::and_list(&shown)
    ))
}

/// A clap error's message as a user should read it, where clap's own
/// misleads: the line's environment before its command, a misspelled
/// command, a variable set empty, `--version` with more. `None`: clap's
/// message stands (its echoes clipped by the caller).
pub fn clap_error_message(err: &clap::Error, args: &[String]) -> Option<String> {
    use clap::error::ErrorKind;
    if err.kind() == ErrorKind::DisplayVersion {
        return version_with_more(args);
    }
    if !err.use_stderr() {
        return None;
    }
    environment_first(args)
        .or_else(|| misspelled_command(args))
        .or_else(|| {
            matches!(
                err.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            )
            .then(|| empty_variable(args, |name| std::env::var_os(name)))
            .flatten()
        })
}

/// Every value on the command line its option's parser refuses, each as
/// clap words it (`invalid value 'x' for '--from <PHASE>': ...`), in the
/// order written. clap stops at the first; a user with three mistyped
/// values should learn all three at once. The options of `cmd` and of the
/// subcommand the line names; values given as `--opt v`, `--opt=v` or
/// `-o v`.
pub fn every_invalid_value(cmd: &clap::Command, args: &[String]) -> Vec<String> {
    let sub = first_word(args).and_then(|w| cmd.find_subcommand(w));
    let options: Vec<(&clap::Command, &clap::Arg)> = cmd
        .get_arguments()
        .map(|a| (cmd, a))
        .chain(
            sub.into_iter()
                .flat_map(|s| s.get_arguments().map(move |a| (s, a))),
        )
        .filter(|(_, a)| a.get_action().takes_values() && !a.is_positional())
        .collect();
    let mut out = Vec::new();
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        let (option, inline) = match word.strip_prefix("--") {
            Some(long) => match long.split_once('=') {
                Some((name, v)) => (
                    options.iter().find(|(_, a)| a.get_long() == Some(name)),
                    Some(v.to_string()),
                ),
                None => (
                    options.iter().find(|(_, a)| a.get_long() == Some(long)),
                    None,
                ),
            },
            None => match word.strip_prefix('-').filter(|s| s.chars().count() == 1) {
                Some(short) => (
                    options
                        .iter()
                        .find(|(_, a)| a.get_short().map(String::from).as_deref() == Some(short)),
                    None,
                ),
                None => (None, None),
            },
        };
        let Some((_, arg)) = option else {
            continue;
        };
        let Some(value) = inline.or_else(|| words.next().cloned()) else {
            continue;
        };
        // The option alone in a command of its own: its value parser (and
        // possible values, delimiter) judge the value as in the real line.
        let Some(long) = arg.get_long() else {
            continue;
        };
        let alone = clap::Command::new("maily-deploy")
            .no_binary_name(true)
            .arg(clap::Arg::clone(arg).required(false).global(false));
        if let Err(e) = alone.try_get_matches_from([format!("--{long}={value}")]) {
            let text = e.render().to_string();
            let said: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).collect();
            out.push(said.join("\n"));
        }
    }
    out
}

/// A deploy of an environment that does not exist, whose name is one typo
/// from a command: both readings, since either may be meant.
pub fn environment_or_command(environment: &str, known: &[String]) -> Option<anyhow::Error> {
    if known.iter().any(|k| k == environment) {
        return None;
    }
    let near = nearest_command(environment)?;
    Some(fail(
        Kind::Usage,
        format!(
            "`{}` is neither a command nor an environment; did you mean the command `maily-deploy {near}`? (environments: {})",
            crate::error::clipped(environment),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ),
    ))
}

/// The global options that matter only to a command that reads the
/// configuration or the cluster: `env-template`, `completions` and
/// `version` take none of them (and their help does not list them,
/// `cli::refused_globals`).
pub const READING_OPTIONS: &[&str] = &[
    "env_file",
    "manifests_dir",
    "kubeconfig",
    "context",
    "output",
    "yes",
    "lock_ttl",
];

/// The global options each command does nothing with. `--kubeconfig`,
/// `--context` and `--yes` are let through everywhere but where nothing at
/// all is read: wrappers, aliases and CI scripts pass them to every
/// command, and they change nothing where unused.
fn ignored_by(command: &str) -> &'static [&'static str] {
    match command {
        "env-template" | "completions" | "version" => READING_OPTIONS,
        "bootstrap" => &["output", "lock_ttl"],
        "validate" | "history" | "status" | "diff" | "db status" | "db backups" | "unlock" => {
            &["lock_ttl"]
        }
        _ => &[],
    }
}

/// The flag as users type it, for an argument id.
fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// The command a parsed line runs (`db status`), and its matches.
fn command_of(matches: &ArgMatches) -> (String, &ArgMatches) {
    match matches.subcommand() {
        None => ("deploy".to_string(), matches),
        Some((name, sub)) => match sub.subcommand() {
            Some((inner, m)) => (format!("{name} {inner}"), m),
            None => (name.to_string(), sub),
        },
    }
}

/// Every global option given on the command line that the command ignores.
pub fn pointless_globals(matches: &ArgMatches) -> Vec<Problem> {
    let (command, m) = command_of(matches);
    let mut problems: Vec<Problem> = ignored_by(&command)
        .iter()
        .filter(|id| {
            m.try_contains_id(id).unwrap_or(false)
                && m.value_source(id) == Some(ValueSource::CommandLine)
        })
        .map(|id| Problem {
            phase: None,
            subject: flag(id),
            problem: format!("does nothing for `{command}`"),
            fix: format!("drop {}", flag(id)),
        })
        .collect();
    // A deploy's own flags given before a subcommand are the deploy's, not
    // the subcommand's: `--dry-run rollback ...` would roll back for real.
    if matches.subcommand().is_some() {
        use clap::Args as _;
        let deploy = crate::cli::DeployArgs::augment_args(clap::Command::new("deploy"));
        // The environment before a command is `environment_first`'s.
        for arg in deploy.get_arguments().filter(|a| !a.is_positional()) {
            let id = arg.get_id().as_str();
            if matches.try_contains_id(id).unwrap_or(false)
                && matches.value_source(id) == Some(ValueSource::CommandLine)
            {
                problems.push(Problem {
                    phase: None,
                    subject: flag(id),
                    problem: format!(
                        "is a deploy's flag, given before `{command}`: it does nothing there"
                    ),
                    fix: format!(
                        "drop it, or give it after the command if `{command}` takes it (`maily-deploy {command} --help`)"
                    ),
                });
            }
        }
    }
    // validate checks the configuration: skipping that is no check.
    if command == "validate"
        && m.try_get_one::<bool>("skip_validate")
            .ok()
            .flatten()
            .copied()
            .unwrap_or(false)
    {
        problems.push(Problem {
            phase: None,
            subject: "--skip-validate".into(),
            problem: "asks `validate` to skip the one thing it does".into(),
            fix: "drop --skip-validate".into(),
        });
    }
    problems
}

/// [`environment_first`], then [`pointless_globals`] as one usage error,
/// when there are any.
pub fn check(matches: &ArgMatches, args: &[String]) -> anyhow::Result<()> {
    if let Some(message) = environment_first(args) {
        return Err(fail(Kind::Usage, message));
    }
    let problems = pointless_globals(matches);
    if problems.is_empty() {
        return Ok(());
    }
    let (command, _) = command_of(matches);
    let flags: Vec<&str> = problems.iter().map(|p| p.subject.as_str()).collect();
    Err(crate::error::Failure::with_problems(
        Kind::Usage,
        format!(
            "{} cannot apply to `{command}`; nothing was done",
            crate::wording::and_list(&flags)
        ),
        problems,
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_the_parsers_refuse_is_named_in_the_order_written() {
        let line = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        let said = every_invalid_value(
            &Cli::command(),
            &line(
                "maily-deploy staging --from foo --timeout=0s --only migrate --traffic-steps 5,x --keep-snapshots 0",
            ),
        );
        assert_eq!(said.len(), 4, "{said:#?}");
        assert!(
            said[0].starts_with("error: invalid value 'foo' for '--from <PHASE>'"),
            "{said:#?}"
        );
        assert!(
            said[1].contains("'0s' for '--timeout <DURATION>': is zero"),
            "{said:#?}"
        );
        assert!(
            said[2]
                .contains("for '--traffic-steps <PERCENT>': must be a whole number from 1 to 100"),
            "{said:#?}"
        );
        assert!(
            said[3].contains("'0' for '--keep-snapshots <N>'"),
            "{said:#?}"
        );
        // A subcommand's own options too.
        let said = every_invalid_value(
            &Cli::command(),
            &line("maily-deploy history staging --max 0"),
        );
        assert_eq!(said.len(), 1, "{said:#?}");
        assert!(said[0].contains("'--max <N>'"), "{said:#?}");
        // Nothing refused, nothing said.
        assert!(
            every_invalid_value(&Cli::command(), &line("maily-deploy staging --from verify"))
                .is_empty()
        );
    }

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn a_verb_one_typo_away_is_named() {
        assert_eq!(nearest_command("histroy").as_deref(), Some("history"));
        assert_eq!(nearest_command("rollbak").as_deref(), Some("rollback"));
        assert_eq!(nearest_command("stats").as_deref(), Some("status"));
        assert_eq!(nearest_command("production"), None);
        assert_eq!(nearest_command("staging"), None);
    }

    #[test]
    fn the_first_word_skips_options_and_their_values() {
        assert_eq!(
            first_word(&args("maily-deploy --env-file x -q histroy production")),
            Some("histroy")
        );
        assert_eq!(first_word(&args("maily-deploy -o json")), None);
    }

    #[test]
    fn a_misspelled_verb_before_an_environment_keeps_the_rest_of_the_line() {
        assert_eq!(
            misspelled_command(&args("maily-deploy histroy production")).unwrap(),
            "`histroy` is not a command; did you mean `maily-deploy history production`? (`maily-deploy --help` lists the commands)"
        );
        assert_eq!(
            misspelled_command(&args("maily-deploy history production")),
            None
        );
    }

    #[test]
    fn an_unknown_environment_near_a_command_gives_both_readings() {
        let known = vec!["production".to_string(), "staging".to_string()];
        let err = environment_or_command("histroy", &known).unwrap();
        assert_eq!(crate::error::kind_of(&err), Some(Kind::Usage));
        assert!(err.to_string().contains(
            "did you mean the command `maily-deploy history`? (environments: production, staging)"
        ));
        assert!(environment_or_command("staging", &known).is_none());
        assert!(environment_or_command("prodution", &known).is_none());
    }

    #[test]
    fn an_environment_before_its_command_is_said_as_the_rule_with_a_line_that_works() {
        let said = |line: &str| environment_first(&args(line));
        assert_eq!(
            said("maily-deploy staging validate").unwrap(),
            "`staging` comes before the command `validate`: a command comes first, and takes its environment after it, as in `maily-deploy validate staging`"
        );
        assert!(
            said("maily-deploy staging validate production")
                .unwrap()
                .ends_with("as in `maily-deploy validate production`")
        );
        assert!(
            said("maily-deploy staging rollback previous")
                .unwrap()
                .ends_with("as in `maily-deploy rollback staging previous`")
        );
        assert!(
            said("maily-deploy -o json staging db status")
                .unwrap()
                .ends_with("as in `maily-deploy -o json db status staging`")
        );
        for fine in [
            "maily-deploy validate staging",
            "maily-deploy staging --dry-run",
            "maily-deploy staging --only validate",
            "maily-deploy histroy production",
            "maily-deploy --dry-run rollback staging previous",
        ] {
            assert_eq!(said(fine), None, "{fine}");
        }
        // Never "--environment is a deploy's flag": there is no such flag.
        let m = Cli::command()
            .try_get_matches_from(args("maily-deploy staging validate production"))
            .unwrap();
        assert!(pointless_globals(&m).is_empty());
        let err = check(&m, &args("maily-deploy staging validate production")).unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Some(Kind::Usage));
    }

    #[test]
    fn the_usage_line_shows_no_environment_before_a_command() {
        let usage = Cli::command().render_usage().to_string();
        assert!(!usage.contains("[ENVIRONMENT] <COMMAND>"), "{usage}");
        assert!(
            usage.contains("maily-deploy [OPTIONS] <COMMAND>"),
            "{usage}"
        );
    }

    #[test]
    fn a_variable_set_empty_is_named_not_its_flag() {
        let env = |value: Option<&'static str>| {
            move |name: &str| {
                (name == "MAILY_MANIFESTS_DIR")
                    .then_some(value)
                    .flatten()
                    .map(Into::into)
            }
        };
        assert_eq!(
            empty_variable(&args("maily-deploy validate staging"), env(Some(""))).unwrap(),
            "MAILY_MANIFESTS_DIR is set but empty; it stands for --manifests-dir: give it a value, or unset it to use the default, manifests"
        );
        assert_eq!(
            empty_variable(&args("maily-deploy validate staging"), env(None)),
            None
        );
        assert_eq!(
            empty_variable(&args("maily-deploy validate staging"), env(Some("m"))),
            None
        );
        // The flag typed empty is clap's to say, by the flag.
        assert_eq!(
            empty_variable(
                &args("maily-deploy validate staging --manifests-dir="),
                env(Some(""))
            ),
            None
        );
    }

    #[test]
    fn version_with_anything_else_is_refused() {
        assert_eq!(
            version_with_more(&args("maily-deploy --version extra")).unwrap(),
            "--version takes nothing else; drop `extra`"
        );
        assert_eq!(version_with_more(&args("maily-deploy --version")), None);
        assert_eq!(version_with_more(&args("maily-deploy -V")), None);
        let err = Cli::command()
            .try_get_matches_from(args("maily-deploy --version extra"))
            .unwrap_err();
        assert!(clap_error_message(&err, &args("maily-deploy --version extra")).is_some());
    }

    #[test]
    fn commands_that_read_nothing_list_no_option_they_refuse_in_their_help() {
        for command in ["env-template", "version", "completions"] {
            let mut cmd = Cli::command();
            cmd.build();
            let sub = cmd.find_subcommand_mut(command).unwrap();
            let help = sub.render_help().to_string();
            for flag in [
                "--env-file",
                "--manifests-dir",
                "--kubeconfig",
                "--context",
                "--output",
                "--yes",
                "--lock-ttl",
            ] {
                assert!(!help.contains(flag), "{command} lists {flag}:\n{help}");
            }
            assert!(help.contains("--no-color"), "{help}");
        }
    }

    #[test]
    fn globals_a_command_ignores_are_refused_each_by_name() {
        let problems = |line: &str| -> Vec<String> {
            let m = Cli::command().try_get_matches_from(args(line)).unwrap();
            pointless_globals(&m)
                .into_iter()
                .map(|p| p.subject)
                .collect()
        };
        assert_eq!(
            problems("maily-deploy env-template --lock-ttl 1m"),
            ["--lock-ttl"]
        );
        assert_eq!(
            problems("maily-deploy --lock-ttl 1m env-template"),
            ["--lock-ttl"]
        );
        assert_eq!(
            problems("maily-deploy completions bash -o json --yes"),
            ["--output", "--yes"]
        );
        assert_eq!(
            problems("maily-deploy bootstrap staging --output json"),
            ["--output"]
        );
        assert_eq!(
            problems("maily-deploy validate staging --skip-validate"),
            ["--skip-validate"]
        );
        assert_eq!(
            problems("maily-deploy status staging --yes --lock-ttl 1m"),
            ["--lock-ttl"]
        );
        assert!(problems("maily-deploy validate staging --kubeconfig k --yes").is_empty());
        assert!(problems("maily-deploy staging --lock-ttl 1m -o json").is_empty());
        assert!(problems("maily-deploy unlock staging --yes").is_empty());
        assert!(problems("maily-deploy db restore staging b --yes --lock-ttl 1m").is_empty());
        // A deploy's flags before a subcommand would be dropped silently.
        assert_eq!(
            problems("maily-deploy --dry-run rollback staging previous"),
            ["--dry-run"]
        );
        assert_eq!(
            problems("maily-deploy --skip-frontend --grace keep validate staging"),
            ["--skip-frontend", "--grace"]
        );
        assert!(problems("maily-deploy rollback staging previous --dry-run").is_empty());
        assert!(problems("maily-deploy staging --dry-run --skip-frontend").is_empty());
    }
}
