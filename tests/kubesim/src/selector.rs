//! Label selectors (equality- and set-based) and field selectors, as list and
//! watch accept them in `labelSelector` and `fieldSelector`.

use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

/// Splits at commas that are not inside parentheses (`a in (x,y),b`).
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, found {s:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once(" notin ") {
                Req::NotIn(k.trim().into(), parse_set(v)?)
            } else if let Some((k, v)) = p.split_once(" in ") {
                Req::In(k.trim().into(), parse_set(v)?)
            } else if p.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c)) {
                Req::Exists(p.into())
            } else {
                return Err(format!("unable to parse requirement: {p:?}"));
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// The selector a `metav1.LabelSelector` object (matchLabels/matchExpressions) means.
    pub fn from_object(sel: &Value) -> Self {
        let mut reqs = Vec::new();
        if let Some(m) = sel["matchLabels"].as_object() {
            for (k, v) in m {
                reqs.push(Req::Eq(k.clone(), v.as_str().unwrap_or_default().into()));
            }
        }
        if let Some(exprs) = sel["matchExpressions"].as_array() {
            for e in exprs {
                let key = e["key"].as_str().unwrap_or_default().to_string();
                let values: Vec<String> = e["values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                reqs.push(match e["operator"].as_str() {
                    Some("In") => Req::In(key, values),
                    Some("NotIn") => Req::NotIn(key, values),
                    Some("DoesNotExist") => Req::NotExists(key),
                    _ => Req::Exists(key),
                });
            }
        }
        LabelSelector(reqs)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => labels.get(k) == Some(v),
            Req::NotEq(k, v) => labels.get(k) != Some(v),
            Req::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Req::Exists(k) => labels.contains_key(k),
            Req::NotExists(k) => !labels.contains_key(k),
        })
    }

    /// Matches an object by its `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        self.matches(&labels_of(obj))
    }
}

/// An object's labels as a map (empty when it has none).
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A field selector: `metadata.name`, `metadata.namespace`, and for any other
/// dotted path a string comparison (enough for `status.phase`, `spec.nodeName`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = p.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = p.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = p.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector: {p:?}"));
            };
            reqs.push((k.trim().to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let mut cur = obj;
            for seg in path.split('.') {
                cur = &cur[seg];
            }
            let have = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (have == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_set_based_requirements_combine() {
        let sel = LabelSelector::parse("app=api,tier in (web, backend),!legacy,env!=dev").unwrap();
        assert!(sel.matches(&labels(&[("app", "api"), ("tier", "web")])));
        assert!(!sel.matches(&labels(&[("app", "api"), ("tier", "db")])));
        assert!(!sel.matches(&labels(&[("app", "api"), ("tier", "web"), ("legacy", "1")])));
        assert!(!sel.matches(&labels(&[("app", "api"), ("tier", "web"), ("env", "dev")])));
    }

    #[test]
    fn notin_and_exists() {
        let sel = LabelSelector::parse("slot notin (blue),app").unwrap();
        assert!(sel.matches(&labels(&[("app", "x"), ("slot", "green")])));
        assert!(sel.matches(&labels(&[("app", "x")])));
        assert!(!sel.matches(&labels(&[("app", "x"), ("slot", "blue")])));
        assert!(!sel.matches(&labels(&[("slot", "green")])));
    }

    #[test]
    fn match_labels_object() {
        let sel = LabelSelector::from_object(&json!({"matchLabels": {"app": "api"},
            "matchExpressions": [{"key": "slot", "operator": "In", "values": ["blue"]}]}));
        assert!(sel.matches(&labels(&[("app", "api"), ("slot", "blue")])));
        assert!(!sel.matches(&labels(&[("app", "api"), ("slot", "green")])));
    }

    #[test]
    fn field_selector_on_name() {
        let sel = FieldSelector::parse("metadata.name=web").unwrap();
        assert!(sel.matches(&json!({"metadata": {"name": "web"}})));
        assert!(!sel.matches(&json!({"metadata": {"name": "db"}})));
        let neg = FieldSelector::parse("metadata.name!=web").unwrap();
        assert!(neg.matches(&json!({"metadata": {"name": "db"}})));
    }
}
