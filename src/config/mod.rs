//! Configuration: env files, the variable spec, profiles and validation.

pub mod ai;
pub mod duration;
pub mod env_file;
pub mod form;
pub mod format;
pub mod k8s_rules;
pub mod profile;
pub mod shape;
pub mod spec;
pub mod template;
pub mod traffic;
pub mod validate;
pub mod vault;
pub mod vault_ref;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use env_file::{Source, Vars};
pub use profile::Profile;

use crate::error::{Failure, Kind, Problem, failure_of};
use crate::redact;

/// Everything a run reads before it starts: the environment's profile and
/// its variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub environment: String,
    pub profile: Profile,
    pub vars: Vars,
    /// The env file read, if any.
    pub env_file: Option<PathBuf>,
    /// Things worth saying that do not stop the run (unknown names in the env file).
    pub warnings: Vec<String>,
}

/// Where to load the configuration from.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    pub environment: &'a str,
    pub env_file: Option<&'a Path>,
    pub manifests_dir: &'a Path,
    pub process_env: BTreeMap<String, String>,
    /// The variables of the spec whose value in the process environment is
    /// not UTF-8 ([`process_env_not_utf8`]): set there, so they would win
    /// over the env file, yet unreadable.
    pub process_not_utf8: Vec<String>,
    /// The phases whose variables to check when the env file has lines
    /// that do not parse, so their problems come in the same report
    /// instead of after the lines are fixed (a deploy or `validate`; other
    /// commands check no variables).
    pub check_for: Option<Vec<crate::pipeline::PhaseId>>,
}

/// The process environment, as far as it is text. What it leaves out that
/// the tool reads, [`process_env_not_utf8`] names.
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The variables of the spec that the process environment sets to bytes
/// that are not UTF-8. Left out of [`process_env`] and said nothing of, the
/// env file's value would quietly stand in for the one the user set.
pub fn process_env_not_utf8() -> Vec<String> {
    not_utf8_in(std::env::vars_os())
}

/// [`process_env_not_utf8`] of given variables: the names of the spec's
/// variables whose value is not UTF-8, sorted.
pub fn not_utf8_in(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<String> {
    let mut names: Vec<String> = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.into_string().ok()?;
            (spec::lookup(&name).is_some() && v.into_string().is_err()).then_some(name)
        })
        .collect();
    names.sort();
    names
}

/// A variable of the process environment the tool reads that is not
/// UTF-8, by name only (its bytes may be a secret). `otherwise` says what
/// unsetting it gives.
pub fn not_utf8_variable(name: &str, otherwise: &str) -> Problem {
    Problem {
        phase: None,
        subject: name.to_string(),
        problem: "in the environment is not UTF-8 text, so it cannot be read (its bytes are not shown, they may be a secret)".into(),
        fix: format!("export {name} as UTF-8 text, or unset it {otherwise}"),
    }
}

/// Load the profile and the variables, reporting the problems of both at
/// once, and register every secret value with the redactor before anything
/// could print it.
pub fn load(src: &Sources<'_>) -> anyhow::Result<Config> {
    // Secrets in the process environment are registered first, so that even
    // an error reading the file cannot show one.
    register_secrets(
        src.process_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );

    let profile = match refuse_profile(src.manifests_dir, src.environment) {
        Some(why) => Err(crate::error::fail(Kind::Config, why)),
        None => profile::load(src.manifests_dir, src.environment),
    };
    let file = env_file::resolve_path(src.env_file, src.environment).and_then(|path| {
        let read = match &path {
            Some(p) => env_file::read_partial(p)?,
            None => env_file::PartialRead {
                pairs: Vec::new(),
                invalid: None,
            },
        };
        Ok((path, read))
    });
    if let Ok((_, read)) = &file {
        register_secrets(read.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }

    match (profile, file) {
        (Ok(profile), Ok((path, read))) => {
            let pairs = read.pairs;
            let vars = env_file::merge(&pairs, path.as_deref(), &src.process_env);
            if let Some(invalid) = unreadable(read.invalid, &src.process_not_utf8) {
                return Err(with_variable_problems(invalid, &profile, &vars, src));
            }
            let mut warnings = env_file::unknown_names(&pairs);
            if path.is_none() && src.env_file.is_none() {
                warnings.push(format!(
                    "no .env.{} here; using the process environment only",
                    src.environment
                ));
            }
            Ok(Config {
                environment: src.environment.to_string(),
                profile,
                vars,
                env_file: path,
                warnings,
            })
        }
        (Err(e), Ok((path, read))) => match unreadable(read.invalid, &src.process_not_utf8) {
            Some(invalid) => Err(combine(e, invalid.into())),
            None => {
                let vars = env_file::merge(&read.pairs, path.as_deref(), &src.process_env);
                Err(with_variables_without_profile(e, &vars, src))
            }
        },
        (Ok(_), Err(e)) => Err(with_environment_problems(e, &src.process_not_utf8)),
        (Err(a), Err(b)) => Err(with_environment_problems(
            combine(a, b),
            &src.process_not_utf8,
        )),
    }
}

/// The env file's problems and the process environment's unreadable
/// variables, as one failure: both are what the run was given to read.
fn unreadable(file: Option<Failure>, not_utf8: &[String]) -> Option<Failure> {
    if not_utf8.is_empty() {
        return file;
    }
    let problems = not_utf8
        .iter()
        .map(|name| not_utf8_variable(name, "to use the env file's value or the default"));
    let said = format!(
        "{} {} in the environment {} not UTF-8 text",
        not_utf8.len(),
        if not_utf8.len() == 1 {
            "variable"
        } else {
            "variables"
        },
        if not_utf8.len() == 1 { "is" } else { "are" }
    );
    Some(match file {
        Some(mut failure) => {
            failure.message.push_str(&format!("; and {said}"));
            failure.problems.extend(problems);
            failure
        }
        None => Failure::with_problems(Kind::Config, said, problems.collect()),
    })
}

/// A failure to read the configuration, with the process environment's
/// unreadable variables beside it.
fn with_environment_problems(e: anyhow::Error, not_utf8: &[String]) -> anyhow::Error {
    match unreadable(None, not_utf8) {
        Some(env) => combine(e, env.into()),
        None => e,
    }
}

/// What is at a profile's path, as far as loading it cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing (or nothing this process may see).
    Nothing,
    /// A regular file (or a link to one): a profile to read.
    File,
    /// Something else, in words: "a directory", "a FIFO".
    Other(&'static str),
}

impl Found {
    /// What is at `path`, links followed.
    pub fn at(path: &Path) -> Found {
        let Ok(meta) = std::fs::metadata(path) else {
            return Found::Nothing;
        };
        let kind = meta.file_type();
        if kind.is_file() {
            return Found::File;
        }
        if kind.is_dir() {
            return Found::Other("a directory");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if kind.is_fifo() {
                return Found::Other("a FIFO");
            }
            if kind.is_socket() {
                return Found::Other("a socket");
            }
            if kind.is_block_device() || kind.is_char_device() {
                return Found::Other("a device");
            }
        }
        Found::Other("not a regular file")
    }
}

/// Why an environment's profile cannot be what the command asks for,
/// when the name or the path alone says so: a name no profile can have
/// (``, `../etc/passwd`, `Staging`), whose fix is never "add
/// manifests/environments/<it>.yaml", but the names allowed; or a path
/// that holds something other than a file (a directory, a FIFO), which is
/// no unknown environment. `None`: loading it says the rest (an unknown
/// name, a profile that does not parse).
pub fn profile_refusal(
    environment: &str,
    path: &str,
    found: Found,
    known: &[String],
) -> Option<String> {
    let known_list = || {
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    };
    if let Some(p) = profile::environment_problems(environment, "")
        .into_iter()
        .next()
    {
        let close = known
            .iter()
            .find(|k| strsim::levenshtein(&k.to_lowercase(), &environment.to_lowercase()) <= 2)
            .map(|k| format!("; did you mean {k}?"))
            .unwrap_or_default();
        return Some(format!(
            "`{}` cannot be an environment: it {}{close} (known environments: {})",
            crate::error::clipped(environment),
            p.problem,
            known_list()
        ));
    }
    match found {
        Found::Other(what) => Some(format!(
            "the profile of environment `{environment}`, {}, is {what}, not a regular file; replace it with the environment's YAML profile",
            crate::error::clipped(path)
        )),
        Found::Nothing | Found::File => None,
    }
}

fn refuse_profile(manifests_dir: &Path, environment: &str) -> Option<String> {
    let path = profile::path_of(manifests_dir, environment);
    let found = if profile::environment_problems(environment, "").is_empty() {
        Found::at(&path)
    } else {
        Found::Nothing
    };
    profile_refusal(
        environment,
        &path.display().to_string(),
        found,
        &profile::known_environments(manifests_dir),
    )
}

/// The most a configuration file (an env file, a profile, a manifest, a
/// dashboard) may be: 4 MiB, hundreds of times any real one. A path that
/// names something else (`/dev/zero`, a dump) fails at once instead of
/// filling memory.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// A configuration file's text. A file that cannot be read, is over
/// [`MAX_FILE_BYTES`], or is not UTF-8, is the configuration's fault
/// (exit 3), named by path and, for stray bytes, by line and column: never
/// an unexpected failure, and never the line's text (an env file's line may
/// hold a secret).
pub fn read_text(path: &Path, what: &str) -> anyhow::Result<String> {
    read_text_at_most(path, what, MAX_FILE_BYTES)
}

/// Why a bounded read gave no content.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// It holds more than the bound, or never ends (`/dev/zero`, a pipe
    /// fed forever); it was read no further than one byte past the bound.
    Over,
}

/// The whole content of `path` if it holds at most `max` bytes. The bound
/// is on what is read, not on what `metadata` says: a pipe or a device
/// has no length, and a file can grow between the two.
pub fn read_at_most(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    take_at_most(file, max)
}

/// [`read_at_most`] of a reader already open (a file the caller holds
/// locked, say).
pub fn take_at_most(reader: impl std::io::Read, max: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::Over);
    }
    Ok(bytes)
}

/// [`read_text`] with a bound of its own.
pub fn read_text_at_most(path: &Path, what: &str, max: u64) -> anyhow::Result<String> {
    let bytes = read_bytes_at_most(path, what, max)?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            let bytes = e.into_bytes();
            let problems: Vec<Problem> = bytes
                .split(|b| *b == b'\n')
                .enumerate()
                .filter_map(|(i, line)| {
                    let bad = std::str::from_utf8(line).err()?;
                    let at = bad.valid_up_to();
                    Some(not_utf8_line(path, i + 1, line[at], at + 1))
                })
                .collect();
            Err(Failure::with_problems(
                Kind::Config,
                format!("the {what} {} is not UTF-8 text", path.display()),
                problems,
            )
            .into())
        }
    }
}

/// A line of a file that is not UTF-8, by its number and the first stray
/// byte, never its text (an env file's line may hold a secret).
pub fn not_utf8_line(path: &Path, number: usize, byte: u8, column: usize) -> Problem {
    Problem {
        phase: None,
        subject: format!("{}:{number}", path.display()),
        problem: format!(
            "is not UTF-8 text: byte 0x{byte:02x} at column {column} (the line is not shown, it may hold a secret)"
        ),
        fix: "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or remove the stray bytes"
            .into(),
    }
}

/// A configuration file's bytes, within [`MAX_FILE_BYTES`], for a reader
/// that decodes them itself: the env file, whose lines that are not UTF-8
/// are reported beside the problems of the others.
pub fn read_bytes(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    read_bytes_at_most(path, what, MAX_FILE_BYTES)
}

/// The bytes of `path`, or why they cannot be had, in words naming it.
fn read_bytes_at_most(path: &Path, what: &str, max: u64) -> anyhow::Result<Vec<u8>> {
    match read_at_most(path, max) {
        Ok(bytes) => Ok(bytes),
        Err(ReadError::Io(e)) => Err(Failure::new(
            Kind::Config,
            format!(
                "cannot read the {what} {}: {e}; check the path and its permissions",
                path.display()
            ),
        )
        .into()),
        Err(ReadError::Over) => Err(Failure::new(
            Kind::Config,
            format!(
                "the {what} {} is over {max} bytes, more than any {what} is; check the path",
                path.display()
            ),
        )
        .into()),
    }
}

/// The env file's (and the environment's) unreadable input, with the
/// problems of the variables that can be read when `src` asks for them:
/// one run names both. A variable on a line that does not parse is
/// reported unset: the lines come first, and say why.
/// A profile that does not load, with the variables' problems beside it:
/// a broken profile must not hide a mistyped URL in the env file. Without
/// the profile, which AI providers it turns off is unknown, so no
/// provider's key is asked for (a value given for one is still checked).
fn with_variables_without_profile(
    profile_error: anyhow::Error,
    vars: &Vars,
    src: &Sources<'_>,
) -> anyhow::Error {
    let Some(phases) = &src.check_for else {
        return profile_error;
    };
    let every_provider: Vec<&str> = ai::Provider::ALL
        .into_iter()
        .flat_map(ai::Provider::vars)
        .collect();
    let v = validate::validate_except(vars, phases, &every_provider);
    if v.problems.is_empty() {
        return profile_error;
    }
    let variables = Failure::with_problems(Kind::Config, "the variables have problems", v.problems);
    combine(profile_error, variables.into())
}

fn with_variable_problems(
    mut invalid: Failure,
    profile: &Profile,
    vars: &Vars,
    src: &Sources<'_>,
) -> anyhow::Error {
    let Some(phases) = &src.check_for else {
        return invalid.into();
    };
    let mut v = validate::validate_for(vars, profile, phases);
    // A variable the environment sets to bytes that are not UTF-8 has its
    // problem already; what stands in for it (the file's value, or none)
    // is not what the user set.
    v.problems
        .retain(|p| !src.process_not_utf8.contains(&p.subject));
    if !v.problems.is_empty() {
        let n = v.problems.len();
        invalid.message.push_str(&format!(
            "; and {n} problem{} with the variables that can be read",
            if n == 1 { "" } else { "s" }
        ));
        invalid.problems.extend(v.problems);
    }
    invalid.into()
}

/// Two configuration failures as one, so both are reported.
fn combine(a: anyhow::Error, b: anyhow::Error) -> anyhow::Error {
    let as_problems = |e: &anyhow::Error| -> Vec<Problem> {
        match failure_of(e) {
            Some(f) if !f.problems.is_empty() => f.problems.clone(),
            _ => vec![Problem {
                phase: None,
                subject: "configuration:".into(),
                // The message says what to do; it has no separate fix.
                problem: format!("{e:#}"),
                fix: String::new(),
            }],
        }
    };
    let mut problems = as_problems(&a);
    problems.extend(as_problems(&b));
    Failure::with_problems(Kind::Config, "the configuration has problems", problems).into()
}

/// A `vault:<path>#<key>` value is where a secret is, not the secret: it is
/// left readable, so a Vault error can say which reference failed; the
/// value Vault answers is registered when it is read.
fn register_secrets<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    for (name, value) in pairs {
        if !vault_ref::is_vault_ref(value) {
            register_if_secret(name, value, false);
        }
    }
}

/// Registers `value` with the redactor when it is a secret: the spec says
/// the variable is one, the source says so (`known_secret`: a value kept
/// in Vault, a sensitive Terraform output), or it is a URL that carries
/// credentials (`https://user:key@prometheus...`, the way a hosted
/// Prometheus or Grafana is reached), whatever the variable. Every source
/// of a value (the environment, the env file, Vault, Terraform) asks here,
/// so a credential URL is hidden wherever it came from.
pub fn register_if_secret(name: &str, value: &str, known_secret: bool) {
    if known_secret || spec::lookup(name).is_some_and(|s| s.secret) || carries_credentials(value) {
        // Registering a URL registers its password and a token-like user
        // name as forms of their own.
        redact::register(name, value);
    }
}

/// Whether `value` is a URL with user info (a password, or a token as
/// the user name), or with a query parameter named like a credential
/// (`?access_token=...`, `?api_key=...`, as some hosted services take it).
fn carries_credentials(value: &str) -> bool {
    url::Url::parse(value).is_ok_and(|u| {
        !u.username().is_empty()
            || u.password().is_some()
            || u.query_pairs()
                .any(|(k, v)| redact::secret_key_name(&k) && !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    use super::*;
    use crate::pipeline::PhaseId;

    fn known() -> Vec<String> {
        vec!["production".into(), "staging".into()]
    }

    #[test]
    fn a_name_no_profile_can_have_is_refused_with_the_names_allowed() {
        for name in ["", "../etc/passwd", "Staging"] {
            let why = profile_refusal(
                name,
                "manifests/environments/x.yaml",
                Found::Nothing,
                &known(),
            )
            .unwrap_or_else(|| panic!("{name:?} let through"));
            assert!(
                why.starts_with(&format!("`{name}` cannot be an environment: it ")),
                "{why}"
            );
            assert!(
                why.contains("is a DNS-1123 label of at most 47 characters"),
                "{why}"
            );
            assert!(
                why.contains("(known environments: production, staging)"),
                "{why}"
            );
            assert!(!why.contains(".yaml"), "no file to add: {why}");
        }
        let why = profile_refusal("Staging", "p", Found::Nothing, &known()).unwrap();
        assert!(why.contains("did you mean staging?"), "{why}");
    }

    #[test]
    fn a_profile_path_that_is_no_file_is_named_as_such() {
        let why = profile_refusal(
            "staging",
            "manifests/environments/staging.yaml",
            Found::Other("a directory"),
            &known(),
        )
        .unwrap();
        assert_eq!(
            why,
            "the profile of environment `staging`, manifests/environments/staging.yaml, is a directory, not a regular file; replace it with the environment's YAML profile"
        );
        assert!(!why.contains("unknown environment"));
        // A file, or nothing (an unknown environment), is loading's to say.
        assert_eq!(profile_refusal("staging", "p", Found::File, &known()), None);
        assert_eq!(profile_refusal("qa", "p", Found::Nothing, &known()), None);
    }

    #[test]
    fn what_is_at_a_path_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Found::at(dir.path()), Found::Other("a directory"));
        assert_eq!(Found::at(&dir.path().join("none")), Found::Nothing);
        let file = dir.path().join("f.yaml");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(Found::at(&file), Found::File);
        let fifo = dir.path().join("fifo.yaml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo (coreutils)");
        assert_eq!(Found::at(&fifo), Found::Other("a FIFO"));
    }

    fn bytes(name: &str, value: &[u8]) -> (OsString, OsString) {
        (name.into(), OsString::from_vec(value.to_vec()))
    }

    /// A profile with a wrong type and an env file with a mistyped value:
    /// both in one refusal, and no AI key asked for (which providers the
    /// profile turns off is unknown without it).
    #[test]
    fn a_profile_that_does_not_load_hides_no_variable_problem() {
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(manifests.join("environments")).unwrap();
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/manifests/environments/staging.yaml"
        ))
        .unwrap()
        .replacen("\nreplicas: ", "\nreplicas: many # ", 1);
        std::fs::write(manifests.join("environments/staging.yaml"), shipped).unwrap();
        let env = dir.path().join(".env.staging");
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"))
            .unwrap()
            .replace("IMAGE_PINNING=off", "IMAGE_PINNING=offf")
            .lines()
            .filter(|l| !l.starts_with("OPENAI_API_KEY="))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&env, example).unwrap();
        let err = load(&Sources {
            environment: "staging",
            env_file: Some(&env),
            manifests_dir: &manifests,
            process_env: BTreeMap::new(),
            process_not_utf8: Vec::new(),
            check_for: Some(vec![PhaseId::DeployBackend, PhaseId::ConfigureAi]),
        })
        .unwrap_err();
        let failure = failure_of(&err).unwrap();
        assert_eq!(failure.kind, Kind::Config);
        let subjects: Vec<&str> = failure
            .problems
            .iter()
            .map(|p| p.subject.as_str())
            .collect();
        assert!(
            subjects.iter().any(|s| s.ends_with(": replicas")),
            "{subjects:?}"
        );
        assert!(subjects.contains(&"IMAGE_PINNING"), "{subjects:?}");
        assert!(!subjects.contains(&"OPENAI_API_KEY"), "{subjects:?}");
    }

    #[test]
    fn only_variables_the_tool_reads_are_named_when_not_utf8() {
        let names = not_utf8_in([
            bytes("REDIS_URL", b"redis://h"),
            bytes("IMAGE_TAG", b"v2\xff"),
            bytes("HOME", b"/home/\xff"),
            bytes("DATABASE_URL", b"postgres://u:\xfe@h/d"),
        ]);
        assert_eq!(names, vec!["DATABASE_URL", "IMAGE_TAG"]);
    }

    #[test]
    fn a_variable_the_environment_sets_to_bytes_is_a_problem_with_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env.staging");
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"))
            .unwrap()
            .replace("IMAGE_PINNING=off", "IMAGE_PINNING=offf");
        std::fs::write(&env, example).unwrap();
        let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
        let err = load(&Sources {
            environment: "staging",
            env_file: Some(&env),
            manifests_dir: &manifests,
            process_env: BTreeMap::new(),
            process_not_utf8: vec!["IMAGE_TAG".into(), "VERCEL_TOKEN".into()],
            check_for: Some(vec![PhaseId::DeployBackend, PhaseId::DeployFrontend]),
        })
        .unwrap_err();
        let failure = failure_of(&err).unwrap();
        assert_eq!(failure.kind, Kind::Config);
        assert!(
            failure
                .message
                .starts_with("2 variables in the environment are not UTF-8 text; and 1 problem"),
            "{}",
            failure.message
        );
        let said: Vec<(&str, &str)> = failure
            .problems
            .iter()
            .map(|p| (p.subject.as_str(), p.problem.as_str()))
            .collect();
        let not_utf8 = "in the environment is not UTF-8 text, so it cannot be read (its bytes are not shown, they may be a secret)";
        assert_eq!(said[0], ("IMAGE_TAG", not_utf8));
        assert_eq!(said[1], ("VERCEL_TOKEN", not_utf8));
        // The file's other problem comes in the same report; the file's
        // IMAGE_TAG does not quietly stand in for the environment's.
        assert_eq!(said.len(), 3, "{said:?}");
        assert_eq!(said[2].0, "IMAGE_PINNING");
        assert_eq!(
            failure.problems[0].fix,
            "export IMAGE_TAG as UTF-8 text, or unset it to use the env file's value or the default"
        );
    }
}
