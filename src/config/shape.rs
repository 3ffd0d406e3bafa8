//! Every problem with a document's shape, not only the first.
//!
//! serde stops at the first unknown field, wrong type or missing field, so
//! a profile with two typos would be fixed one run at a time. Here the
//! document, already read as YAML, is deserialized again and again: each
//! failure is noted at its path, the node it is about is taken out, and
//! the next try goes on past it. serde derives judge a map's keys one by
//! one and say what is missing only at the map's end, so every present field
//! is judged before a missing one stops a map; a map that lacks a required
//! field is then taken out whole, and its parent goes on.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

/// The most problems reported, and so the most tries.
pub const MAX_PROBLEMS: usize = 20;

/// One problem with a document's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeProblem {
    /// Where, as `services.api.replicas` or `verify.checks[1].path`; empty
    /// for the document itself.
    pub path: String,
    /// serde's words: "unknown field `replica`, expected one of ...".
    pub problem: String,
    /// The field names the problem offers, the closest to the one written
    /// first, when it is an unknown field with a near miss.
    pub did_you_mean: Option<String>,
}

/// Every problem deserializing `doc` as `T` finds, at most
/// [`MAX_PROBLEMS`], in the order of their paths (a map's keys are read
/// sorted); empty when it deserializes.
pub fn problems<T: DeserializeOwned>(mut doc: Value) -> Vec<ShapeProblem> {
    let mut out = Vec::new();
    // Per sequence (by its path in the document as written), the indices
    // taken out, so later problems are named by the index the author sees.
    let mut removed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    // Paths taken out, as written: a missing field there is already told.
    let mut gone: Vec<String> = Vec::new();
    // A document that is not a map at all is one problem, whatever serde
    // makes of its items.
    if !doc.is_object() {
        return serde_path_to_error::deserialize::<_, T>(&doc)
            .err()
            .map(|_| ShapeProblem {
                path: String::new(),
                problem: format!("is {}, not a map of fields (name: value)", kind_of(&doc)),
                did_you_mean: None,
            })
            .into_iter()
            .collect();
    }
    while out.len() < MAX_PROBLEMS {
        let err = match serde_path_to_error::deserialize::<_, T>(&doc) {
            Ok(_) => break,
            Err(e) => e,
        };
        let segments: Vec<Segment> = err.path().iter().cloned().collect();
        let message = err.into_inner().to_string();
        let (at, written) = as_written(&segments, &removed);
        match missing_field(&message) {
            Some(field) => {
                let full = join(&written, field);
                if !gone.iter().any(|g| within(&full, g)) {
                    out.push(ShapeProblem {
                        path: full,
                        problem: format!("missing field `{field}`"),
                        did_you_mean: None,
                    });
                }
            }
            None => out.push(ShapeProblem {
                did_you_mean: closest(&message),
                path: written.clone(),
                problem: in_plain_words(&message),
            }),
        }
        // The node the problem is about goes, so the next try passes it;
        // the document itself cannot.
        if segments.is_empty() || !take_out(&mut doc, &segments, &at, &mut removed) {
            break;
        }
        gone.push(written);
    }
    out
}

/// serde's words for a wrong type, with the Rust type it names said as
/// the profile's reader knows it: "invalid value: integer `-3`, expected
/// u32" becomes "..., expected a whole number from 0 to 4294967295".
pub fn in_plain_words(message: &str) -> String {
    const KINDS: &[(&str, &str)] = &[
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number from 0 to 18446744073709551615"),
        ("usize", "a whole number from 0 to 18446744073709551615"),
        ("i32", "a whole number from -2147483648 to 2147483647"),
        ("i64", "a whole number"),
        ("f32", "a number"),
        ("f64", "a number"),
        ("a boolean", "true or false"),
        ("a sequence", "a list"),
        ("a map", "a map of fields (name: value)"),
    ];
    match message.rsplit_once(", expected ") {
        Some((head, kind)) => match KINDS.iter().find(|(rust, _)| *rust == kind) {
            Some((_, plain)) => format!("{head}, expected {plain}"),
            None => message.to_string(),
        },
        None => message.to_string(),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// `path` is `root` or lies under it.
fn within(path: &str, root: &str) -> bool {
    root.is_empty()
        || path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// The field of serde's "missing field `x`".
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split('`')
        .next()
        .filter(|f| !f.is_empty())
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or
/// "expected `a` or `b`"), the expected name closest to `x`, when it is
/// close (two edits at most).
fn closest(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (written, expected) = rest.split_once('`')?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (strsim::levenshtein(written, name), name))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, name)| name.to_string())
}

/// The path as serde sees the document now, per segment, with each
/// sequence's own path as written (for [`take_out`]), and the whole path as
/// written: indices shifted back over the elements taken out before.
fn as_written(
    segments: &[Segment],
    removed: &BTreeMap<String, Vec<usize>>,
) -> (Vec<String>, String) {
    let mut written = String::new();
    let mut parents = Vec::new();
    for s in segments {
        parents.push(written.clone());
        match s {
            Segment::Seq { index } => {
                let mut index = *index;
                for r in removed.get(&written).into_iter().flatten() {
                    if *r <= index {
                        index += 1;
                    }
                }
                written.push_str(&format!("[{index}]"));
            }
            Segment::Map { key } => {
                if !written.is_empty() {
                    written.push('.');
                }
                written.push_str(key);
            }
            Segment::Enum { variant } => {
                if !written.is_empty() {
                    written.push('.');
                }
                written.push_str(variant);
            }
            Segment::Unknown => written.push_str(".?"),
        }
    }
    (parents, written)
}

/// Take the node at `segments` out of `doc`; false when it is not there
/// (a path serde names that the document does not hold).
fn take_out(
    doc: &mut Value,
    segments: &[Segment],
    parents: &[String],
    removed: &mut BTreeMap<String, Vec<usize>>,
) -> bool {
    let Some((last, path)) = segments.split_last() else {
        return false;
    };
    let mut node = doc;
    for s in path {
        node = match (s, node) {
            (Segment::Seq { index }, Value::Array(a)) => match a.get_mut(*index) {
                Some(n) => n,
                None => return false,
            },
            (Segment::Map { key }, Value::Object(m)) => match m.get_mut(key) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Seq { index }, Value::Array(a)) if *index < a.len() => {
            let seq = parents.last().cloned().unwrap_or_default();
            let list = removed.entry(seq).or_default();
            // The index as written: shifted over the ones taken out before.
            let mut original = *index;
            list.sort_unstable();
            for r in list.iter() {
                if *r <= original {
                    original += 1;
                }
            }
            list.push(original);
            list.sort_unstable();
            a.remove(*index);
            true
        }
        (Segment::Map { key }, Value::Object(m)) => m.remove(key).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        replicas: u32,
        services: BTreeMap<String, Service>,
        #[serde(default)]
        checks: Vec<Check>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Service {
        kind: String,
        #[serde(default)]
        replicas: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Check {
        path: String,
        #[serde(default)]
        status: Option<u16>,
    }

    #[test]
    fn a_wrong_type_is_named_as_a_reader_knows_it() {
        let said = paths(json!({
            "name": "x",
            "replicas": -3,
            "services": {"api": {"kind": "http", "replicas": "many"}},
            "checks": {"path": "/"},
        }));
        assert_eq!(
            said,
            vec![
                (
                    "checks".to_string(),
                    "invalid type: map, expected a list".to_string()
                ),
                (
                    "replicas".to_string(),
                    "invalid value: integer `-3`, expected a whole number from 0 to 4294967295"
                        .to_string()
                ),
                (
                    "services.api.replicas".to_string(),
                    "invalid type: string \"many\", expected a whole number from 0 to 4294967295"
                        .to_string()
                ),
            ]
        );
    }

    fn paths(doc: Value) -> Vec<(String, String)> {
        problems::<Doc>(doc)
            .into_iter()
            .map(|p| (p.path, p.problem))
            .collect()
    }

    #[test]
    fn a_sound_document_has_no_problems() {
        assert!(
            paths(json!({"name": "x", "replicas": 2, "services": {"api": {"kind": "http"}}}))
                .is_empty()
        );
    }

    #[test]
    fn every_problem_is_named_at_its_path_not_only_the_first() {
        let found = paths(json!({
            "name": "x",
            "replica": 3,
            "services": {
                "api": {"kind": "http", "replica": 2},
                "campaigns": {"replicas": "two", "kind": "http"},
                "workers": {"replicas": 1},
            },
            "checks": [
                {"path": "/a", "status": 99999},
                {"path": "/b"},
                {"pth": "/c"},
            ],
        }));
        let at: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            at,
            vec![
                "checks[0].status",
                "checks[2].pth",
                "checks[2].path",
                "replica",
                "services.api.replica",
                "services.campaigns.replicas",
                "services.workers.kind",
                "replicas",
            ],
            "{found:#?}"
        );
        assert!(found[0].1.contains("99999"), "{found:?}");
        assert!(found[1].1.starts_with("unknown field `pth`"), "{found:?}");
        assert_eq!(found[2].1, "missing field `path`");
        assert_eq!(found[7].1, "missing field `replicas`");
    }

    #[test]
    fn an_unknown_field_close_to_a_known_one_is_offered() {
        let found = problems::<Doc>(json!({
            "name": "x", "replicas": 1, "services": {"api": {"kindd": "http"}}
        }));
        assert_eq!(found[0].path, "services.api.kindd");
        assert_eq!(found[0].did_you_mean.as_deref(), Some("kind"));
        assert_eq!(found[1].path, "services.api.kind");
        let far = problems::<Doc>(json!({
            "name": "x", "replicas": 1, "services": {}, "zzzzzzzz": 1
        }));
        assert_eq!(far[0].did_you_mean, None);
    }

    #[test]
    fn a_document_of_the_wrong_kind_is_one_problem() {
        let found = paths(json!(["not", "a", "map"]));
        assert_eq!(
            found,
            vec![(
                String::new(),
                "is a list, not a map of fields (name: value)".to_string()
            )]
        );
        assert_eq!(
            paths(Value::Null)[0].1,
            "is empty, not a map of fields (name: value)"
        );
    }

    #[test]
    fn the_problems_are_bounded() {
        let many: serde_json::Map<String, Value> = (0..100)
            .map(|i| (format!("svc{i}"), json!({"kind": 5})))
            .collect();
        let found = paths(json!({"name": "x", "replicas": 1, "services": many}));
        assert_eq!(found.len(), MAX_PROBLEMS);
    }
}
