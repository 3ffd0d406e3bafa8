//! A dry run the cluster checks: every object goes through server-side
//! apply with `dryRun=All` under the tool's own field manager, so admission
//! and validation judge it as they would for real, and nothing is stored.
//!
//! A workload whose pods Pod Security would refuse is admitted itself: the
//! server only warns (`Warning: would violate PodSecurity ...`), and the
//! plan fails on that warning, since the rollout would fail on it.
//!
//! What the plan shows of a change is the fields this tool applies (its
//! manifest's leaves), as the cluster has them now and as it would have
//! them: fields other managers own, and the server's defaults, are not the
//! tool's to show.

use futures::{StreamExt, stream};
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::apply::{Applier, FIELD_MANAGER};

/// Annotations a run writes afresh every time, whose change says nothing.
const BOOKKEEPING: &[&str] = &["/metadata/annotations/maily.ai~1deployment-id"];

/// One field the apply would change: where, what it is, what it becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub path: String,
    pub from: Option<Value>,
    pub to: Option<Value>,
}

/// What the server says an apply would do to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Created,
    Changed(Vec<Change>),
    Unchanged,
}

/// The leaves of `applied` (the manifest), as JSON pointers and a readable
/// path (`spec.template.spec.containers[api].image`).
fn leaves(applied: &Value, pointer: String, shown: String, out: &mut Vec<(String, String)>) {
    match applied {
        Value::Object(map) => {
            for (k, v) in map {
                let escaped = k.replace('~', "~0").replace('/', "~1");
                let name = if shown.is_empty() {
                    k.clone()
                } else {
                    format!("{shown}.{k}")
                };
                leaves(v, format!("{pointer}/{escaped}"), name, out);
            }
        }
        Value::Array(items)
            if items.iter().all(|i| i.get("name").is_some()) && !items.is_empty() =>
        {
            for (i, item) in items.iter().enumerate() {
                let name = item["name"].as_str().unwrap_or_default();
                leaves(
                    item,
                    format!("{pointer}/{i}"),
                    format!("{shown}[{name}]"),
                    out,
                );
            }
        }
        // Items without names (a route's rules, their matches) by index;
        // a list of plain values (args, ports' protocols) is one field.
        Value::Array(items) if items.iter().any(|i| i.is_object()) => {
            for (i, item) in items.iter().enumerate() {
                leaves(item, format!("{pointer}/{i}"), format!("{shown}[{i}]"), out);
            }
        }
        _ => out.push((pointer, shown)),
    }
}

/// What would change of the fields `applied` sets, between `live` and the
/// server's dry-run answer `dry`.
pub fn changes(applied: &Value, live: &Value, dry: &Value) -> Vec<Change> {
    let mut fields = Vec::new();
    leaves(applied, String::new(), String::new(), &mut fields);
    fields
        .into_iter()
        .filter(|(pointer, _)| !BOOKKEEPING.contains(&pointer.as_str()))
        .filter_map(|(pointer, path)| {
            let (from, to) = (live.pointer(&pointer), dry.pointer(&pointer));
            (from != to).then(|| Change {
                path,
                from: from.cloned(),
                to: to.cloned(),
            })
        })
        .collect()
}

/// `Kind name`, for messages.
pub fn title(o: &DynamicObject) -> String {
    format!(
        "{} {}",
        o.types.as_ref().map_or("?", |t| t.kind.as_str()),
        o.metadata.name.as_deref().unwrap_or("?")
    )
}

/// Ask the server what applying each object would do. Every object the
/// server rejects is named with its message (`Err`, all of them).
pub async fn dry_run(
    applier: &Applier,
    objects: &[DynamicObject],
    run_namespace: Option<&str>,
) -> Result<Vec<(String, Verdict)>, Vec<String>> {
    // A namespace the run creates (the plan's Namespace object, or the
    // environment's, which a run's lifecycle creates before its first
    // phase) does not exist for a dry run: the objects in it are new, and
    // the server can judge them only once it is.
    let mut new_namespaces: Vec<String> = objects
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "Namespace"))
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    new_namespaces.extend(run_namespace.map(str::to_string));
    let new_namespaces = &new_namespaces;
    // Owned futures (each its own applier handle and object), as
    // `Applier::apply_all` has them: borrowed ones do not make a `Send`
    // future inside a phase.
    let answers: Vec<Result<(String, Verdict), String>> =
        stream::iter(objects.iter().cloned().map(|o| {
            let applier = applier.clone();
            async move {
                let o = &o;
                let title = title(o);
                let name = o.metadata.name.clone().unwrap_or_default();
                let api = applier
                    .api_for(o)
                    .await
                    .map_err(|e| format!("{title}: {e:#}"))?;
                let live = super::client::retry("reading an object to plan", || api.get_opt(&name))
                    .await
                    .map_err(|e| format!("{title}: {}", crate::error::kube_text(&e)))?;
                let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
                // One object at a time (below), so the warnings of this
                // answer are this object's.
                super::client::warnings::take();
                let patch = Patch::Apply(o);
                let answer =
                    super::client::retry("a dry-run apply", || api.patch(&name, &params, &patch))
                        .await;
                if let Some(psa) = super::client::warnings::take()
                    .into_iter()
                    .find(|w| w.contains("would violate PodSecurity"))
                {
                    // Admitted as a workload, its pods would be refused.
                    return Err(format!("{title}: the server rejects its pods: {psa}"));
                }
                let dry = match answer {
                    Ok(dry) => dry,
                    Err(kube::Error::Api(s))
                        if s.code == 404
                            && live.is_none()
                            && o.metadata.namespace.as_ref().is_some_and(|ns| {
                                new_namespaces.contains(ns)
                                    && s.message
                                        .contains(&format!("namespaces \"{ns}\" not found"))
                            }) =>
                    {
                        return Ok((title, Verdict::Created));
                    }
                    Err(kube::Error::Api(s)) => {
                        return Err(format!("{title}: the server rejects it: {}", s.message));
                    }
                    Err(other) => {
                        return Err(format!("{title}: {}", crate::error::kube_text(&other)));
                    }
                };
                let verdict = match live {
                    None => Verdict::Created,
                    Some(live) => {
                        let json =
                            |v: &DynamicObject| serde_json::to_value(v).unwrap_or(Value::Null);
                        let found = changes(&json(o), &json(&live), &json(&dry));
                        if found.is_empty() {
                            Verdict::Unchanged
                        } else {
                            Verdict::Changed(found)
                        }
                    }
                };
                Ok((title, verdict))
            }
        }))
        // One at a time: a dry run is a plan's, and the server's warnings
        // (Pod Security's verdict) come back without the request they
        // answer.
        .buffered(1)
        .collect()
        .await;
    let mut verdicts = Vec::new();
    let mut rejected = Vec::new();
    for a in answers {
        match a {
            Ok(v) => verdicts.push(v),
            Err(why) => rejected.push(why),
        }
    }
    if rejected.is_empty() {
        verdicts.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(verdicts)
    } else {
        rejected.sort();
        Err(rejected)
    }
}

/// [`dry_run`], with the server's refusals as one failure that lists each
/// object and the server's words, for `phase`.
pub async fn judge(
    applier: &Applier,
    objects: &[DynamicObject],
    run_namespace: &str,
    phase: &str,
) -> anyhow::Result<Vec<(String, Verdict)>> {
    dry_run(applier, objects, Some(run_namespace))
        .await
        .map_err(|rejected| {
            let n = rejected.len();
            crate::error::Failure::with_problems(
                crate::error::Kind::Refused,
                format!(
                    "the server rejects {n} object{} of the plan",
                    if n == 1 { "" } else { "s" }
                ),
                rejected
                    .into_iter()
                    .map(|problem| crate::error::Problem {
                        phase: Some(phase.to_string()),
                        subject: "server dry run".into(),
                        problem,
                        fix: "fix the manifest or the profile value the server names".into(),
                    })
                    .collect(),
            )
            .into()
        })
}

/// Whether any verdict is a change (created or changed).
pub fn any_change(verdicts: &[(String, Verdict)]) -> bool {
    verdicts
        .iter()
        .any(|(_, v)| !matches!(v, Verdict::Unchanged))
}

/// The plan's lines: a count, then each change as `~ Kind name: path: from
/// → to`, and each created object.
pub fn lines(verdicts: &[(String, Verdict)]) -> Vec<String> {
    let count = |f: fn(&Verdict) -> bool| verdicts.iter().filter(|(_, v)| f(v)).count();
    let mut out = vec![format!(
        "the server's dry run: {} created, {} changed, {} unchanged",
        count(|v| matches!(v, Verdict::Created)),
        count(|v| matches!(v, Verdict::Changed(_))),
        count(|v| matches!(v, Verdict::Unchanged)),
    )];
    let show = |v: &Option<Value>| match v {
        None => "(none)".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    for (title, verdict) in verdicts {
        match verdict {
            Verdict::Created => out.push(format!("+ {title}")),
            Verdict::Changed(changes) => {
                for c in changes {
                    out.push(format!(
                        "~ {title}: {}: {} → {}",
                        c.path,
                        show(&c.from),
                        show(&c.to)
                    ));
                }
            }
            Verdict::Unchanged => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_fields_the_tool_applies_are_compared() {
        let applied = json!({
            "metadata": {"name": "api-blue", "annotations": {"maily.ai/deployment-id": "p-2", "maily.ai/image": "r/api:v3"}},
            "spec": {"replicas": 4, "template": {"spec": {"containers": [{"name": "api", "image": "r/api:v3"}]}}}
        });
        let live = json!({
            "metadata": {"name": "api-blue", "resourceVersion": "7", "annotations": {"maily.ai/deployment-id": "p-1", "maily.ai/image": "r/api:v1"}},
            "spec": {"replicas": 4, "progressDeadlineSeconds": 600,
                     "template": {"spec": {"containers": [{"name": "api", "image": "r/api:v1", "terminationMessagePath": "/dev/termination-log"}]}}}
        });
        let dry = json!({
            "metadata": {"name": "api-blue", "resourceVersion": "7", "annotations": {"maily.ai/deployment-id": "p-2", "maily.ai/image": "r/api:v3"}},
            "spec": {"replicas": 4, "progressDeadlineSeconds": 600,
                     "template": {"spec": {"containers": [{"name": "api", "image": "r/api:v3", "terminationMessagePath": "/dev/termination-log"}]}}}
        });
        let found = changes(&applied, &live, &dry);
        let paths: Vec<&str> = found.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "metadata.annotations.maily.ai/image",
                "spec.template.spec.containers[api].image"
            ],
            "the run's id and the server's defaults are not changes"
        );
        let lines = lines(&[
            ("Deployment api-blue".into(), Verdict::Changed(found)),
            ("Service api".into(), Verdict::Unchanged),
            ("Deployment ai-blue".into(), Verdict::Created),
        ]);
        assert_eq!(
            lines[0],
            "the server's dry run: 1 created, 1 changed, 1 unchanged"
        );
        assert!(lines.contains(
            &"~ Deployment api-blue: spec.template.spec.containers[api].image: r/api:v1 → r/api:v3".to_string()
        ));
        assert!(lines.contains(&"+ Deployment ai-blue".to_string()));
    }
}
