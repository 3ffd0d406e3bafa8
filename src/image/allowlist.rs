//! `.maily-scan-ignore.yaml`: the scan findings a team has accepted, each
//! with a reason and a date it stops being accepted.
//!
//! ```yaml
//! - id: CVE-2024-45490
//!   image: "*/maily-api:*"
//!   reason: libexpat is not reachable from the API (no XML input)
//!   expires: 2026-10-01
//! ```
//!
//! An entry applies to a finding when its `id` is the finding's (case does
//! not matter) and its `image` pattern matches the image as the release
//! tags it (`ghcr.io/maily/maily-api:v1.4.2`). It counts up to and
//! including its `expires` day (UTC); after that the finding blocks again
//! and says which entry ran out, so an acceptance is revisited rather than
//! forgotten. A missing file is an empty allowlist: nothing is accepted.

use std::path::Path;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::config::ReadError;
use crate::error::{Failure, Kind, Problem, clipped};

/// Where the allowlist is unless the caller says otherwise: the working
/// directory, beside the env file.
pub const DEFAULT_FILE: &str = ".maily-scan-ignore.yaml";

/// The largest allowlist read: a real one is a few kilobytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The date form `expires` takes.
const DATE: &str = "%Y-%m-%d";

/// One accepted finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The finding's id as Trivy reports it: `CVE-...`, `GHSA-...`.
    pub id: String,
    /// A pattern over the image as tagged; see [`image_matches`].
    pub image: String,
    /// Why the finding is accepted. Never empty.
    pub reason: String,
    /// The last day (UTC) the entry counts.
    pub expires: NaiveDate,
}

/// What the allowlist says about one finding in one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// An entry accepts it today.
    Allowed(&'a Entry),
    /// Only entries that have run out name it: it blocks, and says so.
    Expired(&'a Entry),
    /// No entry names it.
    NotListed,
}

/// The entries of one allowlist file, every one checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    /// The file, as messages name it.
    pub file: String,
    pub entries: Vec<Entry>,
}

/// An entry as the YAML gives it: every field optional here so that each
/// missing one is reported with the rest, not as the first parse error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    id: Option<String>,
    image: Option<String>,
    reason: Option<String>,
    expires: Option<String>,
}

/// Whether `pattern` matches the image `image` (`registry/repo:tag`).
///
/// `*` stands for any run of characters, `/` and `:` included, so
/// `*/maily-api:*` is every tag of `maily-api` in every registry, and `?`
/// for one character; everything else matches itself. This is the
/// `wildmatch` crate: it does exactly that and no more (no character
/// classes, no path-segment rules that would make `*` stop at `/`), has no
/// dependencies, and is kept up; `globset` would bring a regex engine for
/// file-path semantics an image name does not have.
pub fn image_matches(pattern: &str, image: &str) -> bool {
    wildmatch::WildMatch::new(pattern).matches(image)
}

impl Allowlist {
    /// An allowlist that accepts nothing, named `file` in messages.
    pub fn empty(file: impl Into<String>) -> Self {
        Allowlist {
            file: file.into(),
            entries: Vec::new(),
        }
    }

    /// Read and check `path`. A missing file accepts nothing; any other
    /// problem (unreadable, too large, not YAML, a bad entry) is a
    /// configuration failure listing every problem of the file.
    pub fn load(path: &Path) -> anyhow::Result<Allowlist> {
        let file = path.display().to_string();
        let fail = |problem: String, fix: &str| -> anyhow::Error {
            Failure::with_problems(
                Kind::Config,
                format!("the scan allowlist {file} cannot be used"),
                vec![Problem {
                    phase: None,
                    subject: file.clone(),
                    problem,
                    fix: fix.into(),
                }],
            )
            .into()
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(fail(
                    "is not a file".into(),
                    "point IMAGE_SCAN_IGNORE_FILE at a YAML file, or remove what is at that path",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Allowlist::empty(file));
            }
            Err(e) => {
                return Err(fail(
                    format!("cannot be read ({})", e.kind()),
                    "check its permissions",
                ));
            }
        }
        let bytes = crate::config::read_at_most(path, MAX_FILE_BYTES).map_err(|e| match e {
            ReadError::Io(e) => fail(
                format!("cannot be read ({})", e.kind()),
                "check its permissions",
            ),
            ReadError::Over => fail(
                format!("is over the {MAX_FILE_BYTES} bytes a scan allowlist may be"),
                "keep only the entries still needed",
            ),
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| fail("is not UTF-8 text".into(), "save it as UTF-8 text"))?;
        Allowlist::parse(&text, &file).map_err(|problems| {
            Failure::with_problems(
                Kind::Config,
                format!("the scan allowlist {file} has problems"),
                problems,
            )
            .into()
        })
    }

    /// Check an allowlist's text; `file` names it in messages. Every
    /// problem of the file is returned at once.
    pub fn parse(text: &str, file: &str) -> Result<Allowlist, Vec<Problem>> {
        let written: Option<Vec<Written>> = serde_saphyr::from_str(text).map_err(|e| {
            vec![Problem {
                phase: None,
                subject: file.to_string(),
                problem: format!(
                    "does not parse: {}",
                    crate::error::clipped_lines(&crate::error::yaml_error(&e))
                ),
                fix: "write a YAML list of entries, each with id, image, reason and expires (YYYY-MM-DD), and nothing else".into(),
            }]
        })?;
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (n, w) in written.unwrap_or_default().into_iter().enumerate() {
            match check(w) {
                Ok(entry) => entries.push(entry),
                Err((id, wrong)) => {
                    let subject = match id {
                        Some(id) => format!("{file} entry {} ({})", n + 1, clipped(&id)),
                        None => format!("{file} entry {}", n + 1),
                    };
                    problems.extend(wrong.into_iter().map(|(problem, fix)| Problem {
                        phase: None,
                        subject: subject.clone(),
                        problem,
                        fix: fix.into(),
                    }));
                }
            }
        }
        if problems.is_empty() {
            Ok(Allowlist {
                file: file.to_string(),
                entries,
            })
        } else {
            Err(problems)
        }
    }

    /// What the allowlist says about finding `id` in `image` (as tagged)
    /// on `today`. An entry that still counts wins over one that ran out.
    pub fn verdict(&self, id: &str, image: &str, today: NaiveDate) -> Verdict<'_> {
        let mut expired = None;
        for entry in &self.entries {
            if !entry.id.eq_ignore_ascii_case(id) || !image_matches(&entry.image, image) {
                continue;
            }
            if entry.expires >= today {
                return Verdict::Allowed(entry);
            }
            expired.get_or_insert(entry);
        }
        expired.map_or(Verdict::NotListed, Verdict::Expired)
    }
}

type EntryProblems = (Option<String>, Vec<(String, &'static str)>);

/// One written entry, checked: the entry, or its id (when it has one) and
/// each thing wrong with it.
fn check(w: Written) -> Result<Entry, EntryProblems> {
    let present = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let id = present(w.id);
    let image = present(w.image);
    let reason = present(w.reason);
    let mut wrong = Vec::new();
    if id.is_none() {
        wrong.push((
            "has no id".to_string(),
            "give the finding's id as Trivy reports it, e.g. id: CVE-2024-45490",
        ));
    }
    if image.is_none() {
        wrong.push((
            "has no image".to_string(),
            "give the images it applies to, e.g. image: \"*/maily-api:*\", or \"*\" for every image",
        ));
    }
    if reason.is_none() {
        wrong.push((
            "has no reason".to_string(),
            "say why the finding is accepted, e.g. reason: the vulnerable function is never called",
        ));
    }
    let expires = match w.expires.as_deref().map(str::trim) {
        None | Some("") => {
            wrong.push((
                "has no expiry date".to_string(),
                "give expires: YYYY-MM-DD, the last day the finding is accepted",
            ));
            None
        }
        Some(text) => match NaiveDate::parse_from_str(text, DATE) {
            // chrono accepts 2026-1-5 too; the file says dates one way.
            Ok(d) if d.format(DATE).to_string() == text => Some(d),
            _ => {
                wrong.push((
                    format!(
                        "expires `{}` is not a date in the form YYYY-MM-DD",
                        clipped(text)
                    ),
                    "give expires: YYYY-MM-DD, e.g. expires: 2026-10-01",
                ));
                None
            }
        },
    };
    match (id, image, reason, expires) {
        (Some(id), Some(image), Some(reason), Some(expires)) if wrong.is_empty() => Ok(Entry {
            id: id.trim().to_string(),
            image: image.trim().to_string(),
            reason: reason.trim().to_string(),
            expires,
        }),
        (id, ..) => Err((id, wrong)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, DATE).unwrap()
    }

    const FILE: &str = ".maily-scan-ignore.yaml";

    #[test]
    fn entries_parse_with_unquoted_dates_and_an_empty_file_accepts_nothing() {
        let list = Allowlist::parse(
            "# accepted findings\n\
             - id: CVE-2024-45490\n  image: \"*/maily-api:*\"\n  reason: no XML input reaches libexpat\n  expires: 2026-10-01\n\
             - id: GHSA-xxxx-yyyy-zzzz\n  image: '*'\n  reason: dev-only dependency\n  expires: '2027-01-31'\n",
            FILE,
        )
        .unwrap();
        assert_eq!(list.entries.len(), 2);
        assert_eq!(list.entries[0].expires, day("2026-10-01"));
        assert_eq!(list.entries[1].image, "*");
        for text in ["", "# nothing accepted yet\n", "[]\n"] {
            assert_eq!(Allowlist::parse(text, FILE).unwrap().entries, vec![]);
        }
    }

    #[test]
    fn every_problem_of_the_file_is_reported_at_once_with_its_entry() {
        let problems = Allowlist::parse(
            "- id: CVE-2024-1\n  image: '*'\n  reason: ''\n  expires: 2026-13-01\n\
             - image: '*/maily-ai:*'\n  reason: ok\n\
             - id: CVE-2024-3\n  image: '*'\n  reason: ok\n  expires: 2026-1-5\n\
             - id: CVE-2024-4\n  image: '*'\n  reason: fine\n  expires: 2026-10-01\n",
            FILE,
        )
        .unwrap_err();
        let got: Vec<(String, String)> = problems
            .iter()
            .map(|p| (p.subject.clone(), p.problem.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    format!("{FILE} entry 1 (CVE-2024-1)"),
                    "has no reason".into()
                ),
                (
                    format!("{FILE} entry 1 (CVE-2024-1)"),
                    "expires `2026-13-01` is not a date in the form YYYY-MM-DD".into()
                ),
                (format!("{FILE} entry 2"), "has no id".into()),
                (format!("{FILE} entry 2"), "has no expiry date".into()),
                (
                    format!("{FILE} entry 3 (CVE-2024-3)"),
                    "expires `2026-1-5` is not a date in the form YYYY-MM-DD".into()
                ),
            ]
        );
        assert!(problems.iter().all(|p| !p.fix.is_empty()));
    }

    #[test]
    fn an_unknown_field_or_a_non_list_is_a_parse_problem_naming_the_file() {
        for text in [
            "- id: CVE-1\n  image: '*'\n  reason: r\n  expires: 2026-10-01\n  severity: LOW\n",
            "id: CVE-1\n",
            "- [unclosed\n",
        ] {
            let problems = Allowlist::parse(text, FILE).unwrap_err();
            assert_eq!(problems.len(), 1, "{text}");
            assert_eq!(problems[0].subject, FILE);
            assert!(
                problems[0].problem.starts_with("does not parse"),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn an_entry_counts_through_its_expiry_day_and_a_live_entry_wins() {
        let list = Allowlist::parse(
            "- id: cve-2024-45490\n  image: '*/maily-api:*'\n  reason: no XML input\n  expires: 2026-10-01\n\
             - id: CVE-2024-9\n  image: 'ghcr.io/maily/maily-ai:v?'\n  reason: old\n  expires: 2026-01-01\n\
             - id: CVE-2024-9\n  image: '*'\n  reason: new\n  expires: 2027-01-01\n",
            FILE,
        )
        .unwrap();
        let api = "ghcr.io/maily/maily-api:v1.4.2";
        let on = |d| list.verdict("CVE-2024-45490", api, day(d));
        assert!(matches!(on("2026-10-01"), Verdict::Allowed(e) if e.reason == "no XML input"));
        assert!(matches!(on("2026-10-02"), Verdict::Expired(e) if e.expires == day("2026-10-01")));
        assert_eq!(
            list.verdict(
                "CVE-2024-45490",
                "ghcr.io/maily/maily-workers:v1",
                day("2026-01-01")
            ),
            Verdict::NotListed
        );
        assert_eq!(
            list.verdict("CVE-2024-1", api, day("2026-01-01")),
            Verdict::NotListed
        );
        assert!(matches!(
            list.verdict("CVE-2024-9", "ghcr.io/maily/maily-ai:v2", day("2026-06-01")),
            Verdict::Allowed(e) if e.reason == "new"
        ));
    }

    #[test]
    fn star_crosses_slashes_and_colons_and_nothing_else_is_special() {
        assert!(image_matches("*/maily-api:*", "ghcr.io/maily/maily-api:v1"));
        assert!(image_matches("*", "127.0.0.1:5000/maily/maily-api:v1"));
        assert!(!image_matches(
            "*/maily-api:*",
            "ghcr.io/maily/maily-api-gateway"
        ));
        assert!(!image_matches(
            "ghcr.io/maily/maily-api:v1",
            "ghcr.io/maily/maily-api:v10"
        ));
        assert!(!image_matches("[gh]cr.io/*", "gcr.io/x:1"));
    }

    #[test]
    fn a_missing_file_accepts_nothing_and_a_huge_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.yaml");
        assert_eq!(Allowlist::load(&missing).unwrap().entries, vec![]);
        let huge = dir.path().join("huge.yaml");
        std::fs::write(&huge, "#".repeat(MAX_FILE_BYTES as usize + 1)).unwrap();
        let err = Allowlist::load(&huge).unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Some(Kind::Config));
        let f = crate::error::failure_of(&err).unwrap();
        assert!(f.problems[0].problem.contains("over the 1048576"), "{f:?}");
        let err = Allowlist::load(Path::new("/dev/zero")).unwrap_err();
        let f = crate::error::failure_of(&err).unwrap();
        assert_eq!(f.problems[0].problem, "is not a file", "{f:?}");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "- id: CVE-1\n").unwrap();
        let err = Allowlist::load(&bad).unwrap_err();
        let f = crate::error::failure_of(&err).unwrap();
        assert_eq!(f.problems.len(), 3, "{f:?}");
        assert!(f.message.contains("bad.yaml has problems"), "{}", f.message);
    }
}
