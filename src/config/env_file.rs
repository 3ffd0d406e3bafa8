//! Where variable values come from: the env file and the process environment.
//!
//! Values already in the process environment win over the file, as they
//! would after `source .env.production` in a shell where some were exported
//! before: CI systems inject secrets that way and expect them to stick.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::spec::{self, SPEC};
use crate::error::{Kind, Problem, fail};

/// Where a value came from, shown by `validate` so precedence is visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum Source {
    /// The process environment.
    Environment,
    /// The env file.
    EnvFile(PathBuf),
    /// The spec's default.
    Default,
    /// A Terraform output of the provision phase (`database_url` fills `DATABASE_URL`).
    Terraform,
    /// A `vault:<path>#<key>` reference, resolved at start-up; the path names it.
    Vault(String),
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub value: String,
    pub source: Source,
}

/// The variables of a run, keyed by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    values: BTreeMap<String, Value>,
}

impl Vars {
    /// The value of a variable, if set (defaults included).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|v| v.value.as_str())
    }

    pub fn entry(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    pub fn set(&mut self, name: &str, value: String, source: Source) {
        self.values
            .insert(name.to_string(), Value { value, source });
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Merge the file's values and the process environment's, process winning,
/// then fill the spec's defaults. Only variables of the spec are taken from
/// the process environment: it holds much else that is none of our business.
pub fn merge(
    file: &[(String, String)],
    file_path: Option<&Path>,
    process: &BTreeMap<String, String>,
) -> Vars {
    let mut vars = Vars::default();
    if let Some(path) = file_path {
        for (name, value) in file {
            vars.set(name, value.clone(), Source::EnvFile(path.to_path_buf()));
        }
    }
    for v in SPEC {
        if let Some(value) = process.get(v.name) {
            vars.set(v.name, value.clone(), Source::Environment);
        }
    }
    for v in SPEC {
        if let spec::Need::Default(d) = v.need
            && vars.get(v.name).is_none_or(str::is_empty)
        {
            vars.set(v.name, d.to_string(), Source::Default);
        }
    }
    vars
}

/// The env file to read: the one given, or `.env.<environment>` if present.
///
/// A file named on the command line must exist; the default one may be
/// absent, since a CI job often passes everything in the environment.
pub fn resolve_path(given: Option<&Path>, environment: &str) -> anyhow::Result<Option<PathBuf>> {
    match given {
        Some(path) if path.is_file() => Ok(Some(path.to_path_buf())),
        Some(path) if path.exists() => Err(fail(
            Kind::Config,
            format!(
                "env file {} is not a regular file; pass the path of a file with --env-file",
                path.display()
            ),
        )),
        Some(path) => Err(fail(
            Kind::Config,
            format!(
                "env file {} does not exist; create it from .env.production.template, or pass another path with --env-file",
                path.display()
            ),
        )),
        None => {
            let default = PathBuf::from(format!(".env.{environment}"));
            Ok(default.is_file().then_some(default))
        }
    }
}

/// Read an env file in the format `source` accepts (`NAME=value`, comments,
/// quotes, `export`). A line that does not parse is reported by number only:
/// its text may hold a secret.
pub fn read(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let read = read_partial(path)?;
    match read.unparsed {
        Some(failure) => Err(failure.into()),
        None => Ok(read.pairs),
    }
}

/// An env file as far as it parses.
#[derive(Debug)]
pub struct PartialRead {
    /// The lines that parse, in order.
    pub pairs: Vec<(String, String)>,
    /// The lines that do not, as one failure naming each by number; the
    /// file is not usable while there is one.
    pub unparsed: Option<crate::error::Failure>,
}

/// Read an env file as [`read`] does, keeping the lines that parse beside
/// the failure of those that do not, so a caller can report the variables'
/// problems in the same run.
pub fn read_partial(path: &Path) -> anyhow::Result<PartialRead> {
    let text = super::read_text(path, "env file")?;
    let iter = dotenvy::from_read_iter(text.as_bytes());
    let mut pairs = Vec::new();
    let mut problems = Vec::new();
    // dotenvy reports the text it could not parse (the whole line, or the
    // value part of it); find that line's number, searching on from the
    // last one reported.
    let lines: Vec<&str> = text.lines().collect();
    let mut searched_to = 0;
    let mut unparsed = 0usize;
    for item in iter {
        match item {
            Ok(pair) => pairs.push(pair),
            Err(dotenvy::Error::LineParse(fragment, _)) => {
                unparsed += 1;
                let found = lines
                    .get(searched_to..)
                    .unwrap_or_default()
                    .iter()
                    .position(|l| l.contains(fragment.trim()))
                    .map(|i| i + searched_to);
                if let Some(i) = found {
                    searched_to = i + 1;
                }
                // A file that is not an env file at all (a dump passed by
                // mistake) fails on every line: its first few say enough.
                if problems.len() >= MAX_LINE_PROBLEMS {
                    continue;
                }
                let number = found.map_or("?".to_string(), |i| (i + 1).to_string());
                problems.push(Problem {
                    phase: None,
                    subject: format!("{}:{number}", path.display()),
                    problem:
                        "this line is not NAME=value (its text is not shown, it may hold a secret)"
                            .into(),
                    fix: "write NAME=value; quote values with spaces or # in them".into(),
                });
            }
            Err(e) => {
                return Err(crate::error::Failure::new(
                    Kind::Config,
                    format!("env file {} cannot be read: {e}", path.display()),
                )
                .into());
            }
        }
    }
    let unparsed = (!problems.is_empty()).then(|| {
        let more = unparsed - problems.len();
        crate::error::Failure::with_problems(
            Kind::Config,
            format!(
                "env file {} has {unparsed} {} not parse{}",
                path.display(),
                if unparsed == 1 {
                    "line that does"
                } else {
                    "lines that do"
                },
                if more > 0 {
                    format!(
                        " (the first {} are listed, {more} more are not)",
                        problems.len()
                    )
                } else {
                    String::new()
                }
            ),
            problems,
        )
    });
    Ok(PartialRead { pairs, unparsed })
}

/// The most unparseable lines an env file's error lists one by one.
const MAX_LINE_PROBLEMS: usize = 20;

/// Names in the env file that the spec does not know: almost always a typo,
/// so each comes with the closest known name.
pub fn unknown_names(file: &[(String, String)]) -> Vec<String> {
    file.iter()
        .filter(|(name, _)| spec::lookup(name).is_none())
        .map(|(name, _)| {
            let shown = crate::error::clipped(name);
            match spec::closest(name) {
                Some(close) => {
                    format!("{shown} is not a variable maily-deploy reads; did you mean {close}?")
                }
                None => format!("{shown} is not a variable maily-deploy reads; it is ignored"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn process_environment_wins_over_the_file() {
        let file = pairs(&[
            ("IMAGE_TAG", "from-file"),
            ("IMAGE_REGISTRY", "ghcr.io/file"),
        ]);
        let process: BTreeMap<String, String> =
            [("IMAGE_TAG".to_string(), "from-env".to_string())].into();
        let vars = merge(&file, Some(Path::new(".env.production")), &process);
        assert_eq!(vars.get("IMAGE_TAG"), Some("from-env"));
        assert_eq!(vars.entry("IMAGE_TAG").unwrap().source, Source::Environment);
        assert_eq!(vars.get("IMAGE_REGISTRY"), Some("ghcr.io/file"));
        assert_eq!(
            vars.entry("IMAGE_REGISTRY").unwrap().source,
            Source::EnvFile(".env.production".into())
        );
    }

    #[test]
    fn only_spec_variables_are_taken_from_the_process() {
        let process: BTreeMap<String, String> = [
            ("HOME".to_string(), "/root".to_string()),
            ("REDIS_URL".to_string(), "redis://localhost".to_string()),
        ]
        .into();
        let vars = merge(&[], None, &process);
        assert_eq!(vars.get("HOME"), None);
        assert_eq!(vars.get("REDIS_URL"), Some("redis://localhost"));
    }

    #[test]
    fn defaults_fill_what_neither_sets_even_when_empty() {
        let file = pairs(&[("TERRAFORM_BIN", "")]);
        let vars = merge(&file, Some(Path::new("f")), &BTreeMap::new());
        assert_eq!(vars.get("TERRAFORM_BIN"), Some("terraform"));
        assert_eq!(vars.entry("TERRAFORM_BIN").unwrap().source, Source::Default);
        assert_eq!(vars.get("VERCEL_API_URL"), Some("https://api.vercel.com"));
    }

    #[test]
    fn reads_what_a_shell_would_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env.production");
        std::fs::write(
            &path,
            "# comment\nexport IMAGE_TAG=v1.2.3\nDATABASE_URL=\"postgres://u:p w@h/d\"\n\nREDIS_URL='redis://h'\n",
        )
        .unwrap();
        let got = read(&path).unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("IMAGE_TAG", "v1.2.3"),
                ("DATABASE_URL", "postgres://u:p w@h/d"),
                ("REDIS_URL", "redis://h"),
            ])
        );
    }

    #[test]
    fn a_bad_line_is_named_by_number_not_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(
            &path,
            "IMAGE_TAG=v1\nVERCEL_TOKEN hunter2-secret\nOPENAI_API_KEY=hunter2 key\n",
        )
        .unwrap();
        let err = read(&path).unwrap_err();
        let failure = crate::error::failure_of(&err).unwrap();
        assert_eq!(failure.kind, Kind::Config);
        let lines: Vec<&str> = failure
            .problems
            .iter()
            .map(|p| p.subject.rsplit(':').next().unwrap())
            .collect();
        assert_eq!(lines, vec!["2", "3"]);
        let text = format!("{err:#} {:?}", failure.problems);
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_file_that_is_no_env_file_at_all_is_said_in_a_few_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.sql");
        let dump: String = (0..5000)
            .map(|i| format!("INSERT INTO t VALUES ({i}, 'a b');\n"))
            .collect();
        std::fs::write(&path, dump).unwrap();
        let err = read(&path).unwrap_err();
        let failure = crate::error::failure_of(&err).unwrap();
        assert_eq!(failure.problems.len(), MAX_LINE_PROBLEMS);
        assert!(
            failure.message.contains("5000 lines that do not parse")
                && failure.message.contains("4980 more are not"),
            "{}",
            failure.message
        );
        // Numbered in order, each line found once.
        assert!(failure.problems[19].subject.ends_with(":20"));
    }

    #[test]
    fn a_line_that_is_not_utf8_is_a_configuration_problem_named_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(
            &path,
            b"IMAGE_TAG=v1\nVERCEL_TOKEN=hunter2\xff-secret\nX=\xc3\n",
        )
        .unwrap();
        let err = read(&path).unwrap_err();
        let failure = crate::error::failure_of(&err).unwrap();
        assert_eq!(failure.kind, Kind::Config);
        assert!(
            failure.message.contains("is not UTF-8"),
            "{}",
            failure.message
        );
        let lines: Vec<&str> = failure
            .problems
            .iter()
            .map(|p| p.subject.rsplit(':').next().unwrap())
            .collect();
        assert_eq!(lines, vec!["2", "3"]);
        assert!(
            failure.problems[0]
                .problem
                .contains("byte 0xff at column 21")
        );
        let text = format!("{err:#} {:?}", failure.problems);
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_named_env_file_must_exist_the_default_may_not() {
        let err = resolve_path(Some(Path::new("/nonexistent/.env.x")), "production").unwrap_err();
        assert!(err.to_string().contains("does not exist"));
        assert_eq!(crate::error::kind_of(&err), Some(Kind::Config));
        assert_eq!(
            resolve_path(None, "no-such-environment-here").unwrap(),
            None
        );
    }

    #[test]
    fn unknown_names_get_a_suggestion() {
        let warnings = unknown_names(&pairs(&[("DATABSE_URL", "x"), ("IMAGE_TAG", "v1")]));
        assert_eq!(
            warnings,
            vec!["DATABSE_URL is not a variable maily-deploy reads; did you mean DATABASE_URL?"]
        );
    }
}
