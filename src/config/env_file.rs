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
    match read.invalid {
        Some(failure) => Err(failure.into()),
        None => Ok(read.pairs),
    }
}

/// An env file as far as it can be read.
#[derive(Debug)]
pub struct PartialRead {
    /// The variables of the lines that parse, in order.
    pub pairs: Vec<(String, String)>,
    /// Every problem of the file (lines that are not UTF-8, quotes never
    /// closed, lines that are not `NAME=value`, a variable given twice) as
    /// one failure; the file is not usable while there is one.
    pub invalid: Option<crate::error::Failure>,
}

/// Read an env file as [`read`] does, keeping the lines that parse beside
/// the failure of those that do not, so a caller can report the variables'
/// problems in the same run.
pub fn read_partial(path: &Path) -> anyhow::Result<PartialRead> {
    let bytes = super::read_bytes(path, "env file")?;
    let parsed = parse(&bytes);
    let invalid = failure_of(path, &parsed);
    Ok(PartialRead {
        pairs: parsed
            .vars
            .into_iter()
            .map(|(_, name, value)| (name, value))
            .collect(),
        invalid,
    })
}

/// What is wrong with one line of an env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineFault {
    /// Bytes that are not UTF-8: the first stray byte and its column.
    NotUtf8 { byte: u8, column: usize },
    /// A quote (`"` or `'`) opened on the line and not closed on it; the
    /// variable's name when the line starts `NAME=`.
    QuoteNotClosed { quote: char, name: Option<String> },
    /// Anything else that is not `NAME=value`.
    NotNameValue,
}

/// An env file read line by line; line numbers count from 1.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The variables, with the line each is on, in order.
    pub vars: Vec<(usize, String, String)>,
    /// The lines that cannot be read, in order.
    pub faults: Vec<(usize, LineFault)>,
}

/// The UTF-8 byte-order mark some Windows editors write at the start of a
/// file; it is no part of the first line.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// Parse an env file's bytes. Each line stands alone: a value is one line,
/// since no variable of the spec holds a line break (inside double quotes,
/// `\n` writes one). So a line that cannot be read (stray bytes, a quote
/// left open, no `NAME=`) is reported by its number and the lines after it
/// are still read and checked; a quote left open never swallows the rest
/// of the file, as it would where values may span lines.
///
/// dotenvy parses the lines that pass, all in one pass, so `${NAME}`
/// refers to the lines above as when a shell sources the file. Its quote
/// rules are the ones [`open_quote`] follows, so it sees only lines whose
/// quotes close; a line it must not read is passed as an empty line, which
/// keeps the numbering.
pub fn parse(bytes: &[u8]) -> Parsed {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let mut faults = Vec::new();
    let mut text = String::with_capacity(bytes.len() + 1);
    // The lines dotenvy yields an item for, in order.
    let mut item_lines = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let number = i + 1;
        let line = match std::str::from_utf8(raw) {
            Err(e) => {
                let column = e.valid_up_to();
                faults.push((
                    number,
                    LineFault::NotUtf8 {
                        byte: raw[column],
                        column: column + 1,
                    },
                ));
                ""
            }
            Ok(line) => match open_quote(line) {
                Some(quote) => {
                    faults.push((
                        number,
                        LineFault::QuoteNotClosed {
                            quote,
                            name: leading_name(line),
                        },
                    ));
                    ""
                }
                None => line,
            },
        };
        if holds_a_variable(line) {
            item_lines.push(number);
        }
        text.push_str(line);
        text.push('\n');
    }
    let mut vars = Vec::new();
    let mut lines = item_lines.into_iter();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        // Every line passed on has its quotes closed and ends in a line
        // break, so each yields exactly one item.
        let number = lines.next().unwrap_or_default();
        match item {
            Ok((name, value)) => vars.push((number, name, value)),
            // A syntax error; reading from memory fails no other way.
            Err(_) => faults.push((number, LineFault::NotNameValue)),
        }
    }
    debug_assert!(lines.next().is_none(), "a line yielded no item");
    faults.sort_by_key(|(number, _)| *number);
    Parsed { vars, faults }
}

/// Whether dotenvy reads a variable (or fails to) from this line: it
/// skips blank lines and comments.
fn holds_a_variable(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty() && !line.starts_with('#')
}

/// The quote a line opens and leaves open, by dotenvy's rules (its
/// `QuotedLines`, which would read the next lines into the value): `\`
/// escapes the next character, in quotes or not; `#` right after a white
/// space starts a comment; a line that starts with `#` is all comment.
/// Followed to the letter, quirks too: [`parse`] counts on dotenvy seeing
/// each line it is given as one line.
fn open_quote(line: &str) -> Option<char> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    #[derive(Clone, Copy)]
    enum State {
        Plain,
        AfterSpace,
        Escape,
        Quoted(char),
        QuotedEscape(char),
    }
    let mut state = State::Plain;
    for c in line.chars() {
        state = match state {
            State::AfterSpace if c == '#' => return None,
            State::Plain | State::AfterSpace if c == '\\' => State::Escape,
            State::Plain | State::AfterSpace if c == '"' || c == '\'' => State::Quoted(c),
            // dotenvy's quirk: a white space right after one goes back to
            // plain, so `#` after two spaces is no comment (after three it is).
            State::Plain if c.is_whitespace() && c != '\r' => State::AfterSpace,
            State::Plain | State::AfterSpace => State::Plain,
            State::Escape => State::Plain,
            State::Quoted(q) if c == q => State::Plain,
            State::Quoted(q) if c == '\\' => State::QuotedEscape(q),
            State::Quoted(q) | State::QuotedEscape(q) => State::Quoted(q),
        };
    }
    match state {
        State::Quoted(q) | State::QuotedEscape(q) => Some(q),
        _ => None,
    }
}

/// The name a line sets, when it starts `NAME=` (or `export NAME=`): a
/// name is no secret, and says which variable a broken line was for.
fn leading_name(line: &str) -> Option<String> {
    let line = line.trim_start();
    let line = line
        .strip_prefix("export")
        .filter(|rest| rest.starts_with(char::is_whitespace))
        .map_or(line, str::trim_start);
    let end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))?;
    let name = &line[..end];
    let named = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && line[end..].trim_start().starts_with('=');
    named.then(|| crate::error::clipped(name).into_owned())
}

/// The variables the tool reads that the file gives on more than one line,
/// each with those lines. Only the last would count, as when a shell
/// sources the file, and nothing would show which one that is; so it is a
/// problem, not a choice. A name the tool does not read is left to the
/// unknown-name warning: neither value reaches the run.
pub fn repeated(vars: &[(usize, String, String)]) -> Vec<(String, Vec<usize>)> {
    let mut lines: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (number, name, _) in vars {
        if spec::lookup(name).is_some() {
            lines.entry(name).or_default().push(*number);
        }
    }
    let mut repeated: Vec<(String, Vec<usize>)> = lines
        .into_iter()
        .filter(|(_, lines)| lines.len() > 1)
        .map(|(name, lines)| (name.to_string(), lines))
        .collect();
    repeated.sort_by_key(|(_, lines)| lines[0]);
    repeated
}

/// The file's problems as one failure, or none: each faulty line by number
/// (never its text: it may hold a secret), at most [`MAX_LINE_PROBLEMS`] of
/// them, and each variable given twice.
fn failure_of(path: &Path, parsed: &Parsed) -> Option<crate::error::Failure> {
    let repeated = repeated(&parsed.vars);
    if parsed.faults.is_empty() && repeated.is_empty() {
        return None;
    }
    let shown = path.display();
    let mut problems: Vec<Problem> = parsed
        .faults
        .iter()
        .take(MAX_LINE_PROBLEMS)
        .map(|(number, fault)| line_problem(path, *number, fault))
        .collect();
    let listed = problems.len();
    problems.extend(repeated.iter().map(|(name, lines)| Problem {
        phase: None,
        subject: name.clone(),
        problem: format!(
            "is set on lines {} of {shown}; only the last would count",
            and_list(lines)
        ),
        fix: format!(
            "keep the line with the value you mean, and delete the other{}",
            if lines.len() > 2 { "s" } else { "" }
        ),
    }));
    let count = |f: fn(&LineFault) -> bool| parsed.faults.iter().filter(|(_, x)| f(x)).count();
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut parts = Vec::new();
    let not_utf8 = count(|f| matches!(f, LineFault::NotUtf8 { .. }));
    if not_utf8 > 0 {
        parts.push(plural(
            not_utf8,
            "line that is not UTF-8 text",
            "lines that are not UTF-8 text",
        ));
    }
    let open = count(|f| matches!(f, LineFault::QuoteNotClosed { .. }));
    if open > 0 {
        parts.push(plural(
            open,
            "quote that is never closed",
            "quotes that are never closed",
        ));
    }
    let unparsed = count(|f| matches!(f, LineFault::NotNameValue));
    if unparsed > 0 {
        parts.push(plural(
            unparsed,
            "line that does not parse",
            "lines that do not parse",
        ));
    }
    if !repeated.is_empty() {
        parts.push(plural(
            repeated.len(),
            "variable set more than once",
            "variables set more than once",
        ));
    }
    let more = parsed.faults.len() - listed;
    let message = format!(
        "env file {shown} has {}{}",
        and_list(&parts),
        if more > 0 {
            format!(" (the first {listed} lines are listed, {more} more are not)")
        } else {
            String::new()
        }
    );
    Some(crate::error::Failure::with_problems(
        Kind::Config,
        message,
        problems,
    ))
}

/// One faulty line, by number.
fn line_problem(path: &Path, number: usize, fault: &LineFault) -> Problem {
    let (problem, fix) = match fault {
        LineFault::NotUtf8 { byte, column } => {
            return super::not_utf8_line(path, number, *byte, *column);
        }
        LineFault::QuoteNotClosed { quote, name } => {
            let which = if *quote == '"' { "double" } else { "single" };
            let of = name
                .as_deref()
                .map_or(String::new(), |n| format!(" in the value of {n}"));
            (
                format!(
                    "opens a {which} quote ({quote}){of} that is never closed on this line; a value is one line, so the line is not read (its text is not shown, it may hold a secret)"
                ),
                format!(
                    "end the value with {quote} on the same line{}",
                    if *quote == '"' {
                        r"; write a line break inside double quotes as \n"
                    } else {
                        ""
                    }
                ),
            )
        }
        LineFault::NotNameValue => (
            "this line is not NAME=value (its text is not shown, it may hold a secret)".to_string(),
            "write NAME=value; quote values with spaces or # in them".to_string(),
        ),
    };
    Problem {
        phase: None,
        subject: format!("{}:{number}", path.display()),
        problem,
        fix,
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[impl ToString]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// The most faulty lines an env file's error lists one by one: a file that
/// is not an env file at all (a dump passed by mistake) fails on every
/// line, and its first few say enough.
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
            failure.message.contains("2 lines that are not UTF-8 text"),
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

    fn var_at(line: usize, name: &str, value: &str) -> (usize, String, String) {
        (line, name.to_string(), value.to_string())
    }

    #[test]
    fn a_line_that_is_not_utf8_hides_no_other_line() {
        let Parsed { vars, faults } =
            parse(b"IMAGE_TAG=v1\nVERCEL_TOKEN=tok\xff\nnot a pair\nROLLOUT_TIMEOUT=0s\n");
        assert_eq!(
            vars,
            vec![
                var_at(1, "IMAGE_TAG", "v1"),
                var_at(4, "ROLLOUT_TIMEOUT", "0s")
            ]
        );
        assert_eq!(
            faults,
            vec![
                (
                    2,
                    LineFault::NotUtf8 {
                        byte: 0xff,
                        column: 17
                    }
                ),
                (3, LineFault::NotNameValue),
            ]
        );
    }

    #[test]
    fn a_quote_left_open_is_named_where_it_opens_and_the_lines_after_it_are_read() {
        let Parsed { vars, faults } = parse(
            b"IMAGE_TAG=v1\nRABBITMQ_URL=\"amqp://u:hunter2secret@h\nROLLOUT_TIMEOUT=0s\nexport B='x\nC=\"closed\"\n",
        );
        assert_eq!(
            vars,
            vec![
                var_at(1, "IMAGE_TAG", "v1"),
                var_at(3, "ROLLOUT_TIMEOUT", "0s"),
                var_at(5, "C", "closed"),
            ]
        );
        assert_eq!(
            faults,
            vec![
                (
                    2,
                    LineFault::QuoteNotClosed {
                        quote: '"',
                        name: Some("RABBITMQ_URL".into())
                    }
                ),
                (
                    4,
                    LineFault::QuoteNotClosed {
                        quote: '\'',
                        name: Some("B".into())
                    }
                ),
            ]
        );
    }

    #[test]
    fn the_report_of_a_quote_left_open_says_so_and_not_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.env");
        std::fs::write(
            &path,
            "IMAGE_TAG=v1\nRABBITMQ_URL=\"amqp://u:hunter2secret@h\nROLLOUT_TIMEOUT=0s\n",
        )
        .unwrap();
        let read = read_partial(&path).unwrap();
        assert_eq!(
            read.pairs,
            pairs(&[("IMAGE_TAG", "v1"), ("ROLLOUT_TIMEOUT", "0s")])
        );
        let failure = read.invalid.unwrap();
        assert!(
            failure
                .message
                .ends_with("has 1 quote that is never closed"),
            "{}",
            failure.message
        );
        let p = &failure.problems[0];
        assert_eq!(p.subject, format!("{}:2", path.display()));
        assert!(
            p.problem.starts_with(
                "opens a double quote (\") in the value of RABBITMQ_URL that is never closed on this line"
            ),
            "{}",
            p.problem
        );
        assert!(
            p.fix.contains("end the value with \" on the same line"),
            "{}",
            p.fix
        );
        let text = format!("{failure:#} {:?}", failure.problems);
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_quote_is_open_exactly_when_dotenvy_would_read_the_next_line_into_it() {
        let cases: &[(&str, Option<char>)] = &[
            ("A=\"x\"", None),
            ("A=\"x", Some('"')),
            ("A='x", Some('\'')),
            ("A=\"x\\\"", Some('"')),
            ("A='x\\'", Some('\'')),
            ("A=\\\"x", None),
            ("A=\"it's\"", None),
            ("# it's a comment", None),
            ("  # \"", None),
            ("A=b # it's a comment", None),
            // dotenvy's quirk: after two spaces `#` is no comment.
            ("A=b  # it's", Some('\'')),
            ("A=b   # it's", None),
            ("A=b#\"", Some('"')),
            ("export A=\"a b\" # c", None),
            ("A=\"x\"\r", None),
        ];
        for (line, open) in cases {
            assert_eq!(open_quote(line), *open, "{line}");
            // dotenvy itself: the line after is read apart only when no
            // quote is left open.
            let text = format!("{line}\nZZ=1\n");
            let last = dotenvy::from_read_iter(text.as_bytes()).last();
            let apart = matches!(last, Some(Ok((ref k, ref v))) if k == "ZZ" && v == "1");
            assert_eq!(apart, open.is_none(), "{line}: {last:?}");
        }
    }

    #[test]
    fn lines_are_numbered_past_comments_blank_lines_crlf_and_export() {
        let Parsed { vars, faults } =
            parse(b"\n# c\r\n  \nexport A=1\r\n   # x\nB=2 # c\nC=${A}${B}\n\nD=x");
        assert_eq!(
            vars,
            vec![
                var_at(4, "A", "1"),
                var_at(6, "B", "2"),
                var_at(7, "C", "12"),
                var_at(9, "D", "x"),
            ]
        );
        assert_eq!(faults, vec![]);
    }

    #[test]
    fn a_leading_byte_order_mark_is_no_part_of_the_first_line() {
        let Parsed { vars, faults } = parse(b"\xef\xbb\xbfIMAGE_TAG=v1\nREDIS_URL=redis://h\n");
        assert_eq!(
            vars,
            vec![
                var_at(1, "IMAGE_TAG", "v1"),
                var_at(2, "REDIS_URL", "redis://h")
            ]
        );
        assert_eq!(faults, vec![]);
        // Only at the start: elsewhere it is a character like any other.
        let Parsed { faults, .. } = parse(b"A=1\n\xef\xbb\xbfIMAGE_TAG=v1\n");
        assert_eq!(faults, vec![(2, LineFault::NotNameValue)]);
    }

    #[test]
    fn a_variable_the_tool_reads_set_twice_is_named_with_its_lines() {
        let vars = vec![
            var_at(2, "IMAGE_TAG", "v1"),
            var_at(3, "FOO", "a"),
            var_at(4, "FOO", "b"),
            var_at(7, "VERCEL_TOKEN", "a"),
            var_at(9, "IMAGE_TAG", "v2"),
            var_at(12, "VERCEL_TOKEN", "b"),
            var_at(20, "IMAGE_TAG", "v3"),
        ];
        assert_eq!(
            repeated(&vars),
            vec![
                ("IMAGE_TAG".to_string(), vec![2, 9, 20]),
                ("VERCEL_TOKEN".to_string(), vec![7, 12]),
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.env");
        std::fs::write(
            &path,
            "VERCEL_TOKEN=hunter2-first\nIMAGE_TAG=v1\nVERCEL_TOKEN=hunter2-second\n",
        )
        .unwrap();
        let err = read(&path).unwrap_err();
        let failure = crate::error::failure_of(&err).unwrap();
        assert_eq!(failure.kind, Kind::Config);
        assert!(
            failure
                .message
                .ends_with("has 1 variable set more than once"),
            "{}",
            failure.message
        );
        assert_eq!(failure.problems.len(), 1);
        let p = &failure.problems[0];
        assert_eq!(p.subject, "VERCEL_TOKEN");
        assert_eq!(
            p.problem,
            format!(
                "is set on lines 1 and 3 of {}; only the last would count",
                path.display()
            )
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
