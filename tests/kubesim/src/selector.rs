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
    /// Whether it selects everything (no requirement).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

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

/// A field selector: dotted paths compared as strings (`metadata.name`,
/// `status.phase`, `spec.nodeName`); [`FieldSelector::check_supported`]
/// refuses the fields kube-apiserver does not select the kind by.
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

    /// Whether it selects everything (no requirement).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields kube-apiserver v1.34 lets `kind` of `group` be selected
    /// by (its field label conversion functions; for custom resources
    /// metadata.name, metadata.namespace and the CRD's `selectable`
    /// fields), with its message for any other.
    pub fn check_supported(
        &self,
        group: &str,
        kind: &str,
        selectable: &[String],
    ) -> Result<(), String> {
        if !crate::resources::BUILTIN_GROUPS.contains(&group) {
            for (label, _, _) in &self.0 {
                let ok = matches!(label.as_str(), "metadata.name" | "metadata.namespace")
                    || selectable.contains(label);
                if !ok {
                    return Err(format!("field label not supported: {label}"));
                }
            }
            return Ok(());
        }
        let own: Option<&[&str]> = match (group, kind) {
            ("", "Pod") => Some(&[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
            ]),
            ("", "Node") => Some(&["metadata.name", "spec.unschedulable"]),
            ("", "Namespace") => Some(&["metadata.name", "status.phase"]),
            ("", "Secret") => Some(&["metadata.name", "metadata.namespace", "type"]),
            ("", "Service") => Some(&[
                "metadata.name",
                "metadata.namespace",
                "spec.clusterIP",
                "spec.type",
            ]),
            ("", "Event") => Some(&[
                "metadata.name",
                "metadata.namespace",
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ]),
            ("batch", "Job") => Some(&["metadata.name", "metadata.namespace", "status.successful"]),
            _ => None,
        };
        for (label, _, _) in &self.0 {
            let ok = own.unwrap_or(&["metadata.name", "metadata.namespace"]);
            if ok.contains(&label.as_str()) {
                continue;
            }
            return Err(match (group, kind, own) {
                ("batch", "Job", _) => format!("field label {label:?} not supported for Job"),
                (_, _, Some(_)) => format!("field label not supported: {label}"),
                (_, _, None) => format!(
                    "{label:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                ),
            });
        }
        Ok(())
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

    #[test]
    fn only_the_fields_kube_apiserver_selects_a_kind_by() {
        let check = |sel: &str, group: &str, kind: &str| {
            FieldSelector::parse(sel).unwrap().check_supported(
                group,
                kind,
                &["spec.color".to_string()],
            )
        };
        assert_eq!(
            check("metadata.name=a,metadata.namespace=b", "", "ConfigMap"),
            Ok(())
        );
        assert_eq!(
            check("data.k=1", "", "ConfigMap"),
            Err("\"data.k\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"".into())
        );
        assert_eq!(
            check("status.phase=Running,spec.nodeName=n", "", "Pod"),
            Ok(())
        );
        assert_eq!(
            check("spec.image=x", "", "Pod"),
            Err("field label not supported: spec.image".into())
        );
        assert_eq!(check("involvedObject.name=web", "", "Event"), Ok(()));
        assert_eq!(
            check("status.active=1", "batch", "Job"),
            Err("field label \"status.active\" not supported for Job".into())
        );
        assert!(check("status.replicas=1", "apps", "ReplicaSet").is_err());
        assert_eq!(
            check("metadata.name=w,spec.color=red", "example.com", "Widget"),
            Ok(())
        );
        assert_eq!(
            check("spec.size=1", "example.com", "Widget"),
            Err("field label not supported: spec.size".into())
        );
    }
}
