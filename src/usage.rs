//! What the command line means beyond what clap parses: a verb misspelled
//! (clap takes it for an environment, or stops at the word after it), and
//! a global option given to a command it does nothing for.
//!
//! Both are refused with exit 2 before anything is read: a user who typed
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

/// The global options each command does nothing with. `--kubeconfig`,
/// `--context` and `--yes` are let through everywhere but where nothing at
/// all is read: wrappers, aliases and CI scripts pass them to every
/// command, and they change nothing where unused.
fn ignored_by(command: &str) -> &'static [&'static str] {
    const ALL: &[&str] = &[
        "env_file",
        "manifests_dir",
        "kubeconfig",
        "context",
        "output",
        "yes",
        "lock_ttl",
    ];
    match command {
        "env-template" | "completions" | "version" => ALL,
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
        for arg in deploy.get_arguments() {
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

/// [`pointless_globals`] as one usage error, when there are any.
pub fn check(matches: &ArgMatches) -> anyhow::Result<()> {
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
