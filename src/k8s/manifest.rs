//! Manifests: the templates under `manifests/`, rendered strictly.
//!
//! Templates use `${NAME}` and nothing else: shell scripts inside manifests
//! (the backup CronJob) keep their `$VAR` and `$(...)` untouched, which rules
//! out envsubst-style crates that also expand `$NAME`. An undefined name is
//! an error naming the file and line, and every one is reported, not the
//! first. A name defined for one scope only (`${SLOT}` in a slot template)
//! is undefined elsewhere, so a template in the wrong folder fails loudly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kube::api::DynamicObject;
use serde::{Deserialize, Serialize};

use crate::error::{Failure, Kind, Problem};

/// Where a template applies, by the folder it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// `platform/`: once per environment (namespace, settings, RBAC, policies, backup).
    Platform,
    /// `slot/`: once per service and slot.
    Slot,
    /// `slot-http/`: once per http service and slot.
    SlotHttp,
    /// `slot-ai/`: once per slot when the profile has AI services (the AI
    /// config's ConfigMap); applied by configure-ai.
    SlotAi,
    /// `route/`: once per http service (stable Service, HTTPRoute); owned by shift-traffic.
    Route,
    /// `bootstrap/`: the deployer's own RBAC, applied once by a cluster
    /// admin (`maily-deploy bootstrap`), never by a deploy.
    Bootstrap,
    /// `monitoring/`: once per environment (the alert rules); owned by monitor.
    Monitoring,
    /// `monitoring-service/`: once per service, both slots at once (metrics
    /// Service, ServiceMonitor); owned by monitor.
    MonitoringService,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::Platform,
        Scope::Slot,
        Scope::SlotHttp,
        Scope::SlotAi,
        Scope::Route,
        Scope::Bootstrap,
        Scope::Monitoring,
        Scope::MonitoringService,
    ];

    pub fn folder(self) -> &'static str {
        match self {
            Scope::Platform => "platform",
            Scope::Slot => "slot",
            Scope::SlotHttp => "slot-http",
            Scope::SlotAi => "slot-ai",
            Scope::Route => "route",
            Scope::Bootstrap => "bootstrap",
            Scope::Monitoring => "monitoring",
            Scope::MonitoringService => "monitoring-service",
        }
    }
}

/// One template file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub scope: Scope,
    /// Relative to the manifests directory, for messages (`slot/deployment.yaml`).
    pub file: String,
    pub text: String,
}

/// Read every template, in a stable order (folder, then file name).
pub fn load(manifests_dir: &Path) -> anyhow::Result<Vec<Template>> {
    let mut out = Vec::new();
    for scope in Scope::ALL {
        let dir = manifests_dir.join(scope.folder());
        if !dir.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        for path in files {
            let text = crate::config::read_text(&path, "manifest")?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            out.push(Template {
                scope,
                file: format!("{}/{name}", scope.folder()),
                text,
            });
        }
    }
    if out.iter().all(|t| t.scope != Scope::Slot) {
        return Err(Failure::new(
            Kind::Config,
            format!(
                "no slot templates in {}; run from the repository root or pass --manifests-dir",
                manifests_dir.join("slot").display()
            ),
        )
        .into());
    }
    Ok(out)
}

/// Values for `${NAME}`.
pub type Values = BTreeMap<&'static str, String>;

/// Replace every `${NAME}`; each undefined name is a problem at file:line.
pub fn substitute(template: &Template, values: &Values) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(template.text.len());
    let mut problems = Vec::new();
    for (n, line) in template.text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                problems.push(Problem {
                    phase: None,
                    subject: format!("{}:{}", template.file, n + 1),
                    problem: "has a ${ without its closing }".into(),
                    fix: "close it: ${NAME}".into(),
                });
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let name = &after[..end];
            match values.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    let known: Vec<&str> = values.keys().copied().collect();
                    problems.push(Problem {
                        phase: None,
                        subject: format!("{}:{}", template.file, n + 1),
                        problem: format!(
                            "uses ${{{name}}}, which is not defined for {} templates",
                            template.scope.folder()
                        ),
                        fix: format!("use one of {}", known.join(", ")),
                    });
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Parse a rendered template into objects.
pub fn parse(file: &str, text: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).map_err(|e| {
        Failure::new(
            Kind::Config,
            format!(
                "{file} does not parse as YAML after rendering: {}",
                crate::error::yaml_error(&e)
            ),
        )
    })?;
    docs.into_iter()
        .map(|doc| {
            serde_json::from_value::<DynamicObject>(doc).map_err(|e| {
                Failure::new(
                    Kind::Config,
                    format!("{file} holds something that is not a Kubernetes object: {e}"),
                )
                .into()
            })
        })
        .collect()
}

/// The order objects are applied in: what others depend on first
/// (namespace, CRDs, config, identities and RBAC, network policies), then
/// workloads, then Services and what refers to workloads. Workloads go
/// before Services because their rollout is the longest wait of a deploy
/// and nothing in a pod needs its Service to exist first: at 500 services
/// the rollouts start a tenth of a second sooner. Kinds not listed go
/// last.
pub fn apply_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ConfigMap" | "Secret" => 2,
        "ServiceAccount" => 3,
        "ClusterRole" | "Role" => 4,
        "ClusterRoleBinding" | "RoleBinding" => 5,
        "NetworkPolicy" => 6,
        "Deployment" | "StatefulSet" | "CronJob" | "Job" => 7,
        "Service" => 8,
        "PodDisruptionBudget" | "HorizontalPodAutoscaler" => 9,
        "HTTPRoute" | "ServiceMonitor" | "PrometheusRule" => 10,
        _ => 11,
    }
}

/// `f` of every item, in order, on every core. Rendering is parsing YAML,
/// about a tenth of a millisecond per object: at 500 services a fifth of a
/// second on one core, before the first apply, while the cluster has
/// nothing to do. Few items stay on the calling thread.
pub fn side_by_side<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    /// Items per thread, at the least: below, a thread costs more (start-up,
    /// its own allocator arena) than it saves.
    const PER_THREAD: usize = 128;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len() / PER_THREAD)
        .max(1);
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        items
            .chunks(items.len().div_ceil(threads))
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
            .collect()
    })
}

/// Render templates of the given scopes with `values`, collecting every
/// problem of every template before failing.
pub fn render(
    templates: &[Template],
    scopes: &[Scope],
    values: &Values,
) -> anyhow::Result<Vec<(String, DynamicObject)>> {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for t in templates.iter().filter(|t| scopes.contains(&t.scope)) {
        match substitute(t, values) {
            Ok(text) => {
                for obj in parse(&t.file, &text)? {
                    objects.push((t.file.clone(), obj));
                }
            }
            Err(p) => problems.extend(p),
        }
    }
    if !problems.is_empty() {
        return Err(
            Failure::with_problems(Kind::Config, "the manifests do not render", problems).into(),
        );
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(scope: Scope, text: &str) -> Template {
        Template {
            scope,
            file: format!("{}/x.yaml", scope.folder()),
            text: text.into(),
        }
    }

    fn values(pairs: &[(&'static str, &str)]) -> Values {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn substitutes_names_and_leaves_shell_alone() {
        let got = substitute(
            &t(Scope::Platform, "a: ${A}\nb: \"$HOME $(date) ${A}x\"\n"),
            &values(&[("A", "1")]),
        )
        .unwrap();
        assert_eq!(got, "a: 1\nb: \"$HOME $(date) 1x\"\n");
    }

    #[test]
    fn every_undefined_name_is_reported_at_its_line() {
        let problems = substitute(
            &t(Scope::Platform, "a: ${A}\nb: ${SLOT}\nc: ${NOPE} ${ALSO}\n"),
            &values(&[("A", "1")]),
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
                    "platform/x.yaml:2".into(),
                    "uses ${SLOT}, which is not defined for platform templates".into()
                ),
                (
                    "platform/x.yaml:3".into(),
                    "uses ${NOPE}, which is not defined for platform templates".into()
                ),
                (
                    "platform/x.yaml:3".into(),
                    "uses ${ALSO}, which is not defined for platform templates".into()
                ),
            ]
        );
    }

    #[test]
    fn an_unclosed_reference_is_an_error() {
        let problems = substitute(&t(Scope::Slot, "a: ${A\n"), &values(&[("A", "1")])).unwrap_err();
        assert!(problems[0].problem.contains("without its closing"));
    }

    #[test]
    fn side_by_side_keeps_the_order_of_its_items() {
        for n in [0, 1, 127, 128, 257, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = side_by_side(&items, |i| i * 2);
            assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn apply_order_puts_dependencies_first() {
        let mut kinds = vec![
            "HTTPRoute",
            "Deployment",
            "RoleBinding",
            "Namespace",
            "ConfigMap",
            "CustomResourceDefinition",
            "Role",
            "Service",
        ];
        kinds.sort_by_key(|k| apply_rank(k));
        assert_eq!(
            kinds,
            vec![
                "Namespace",
                "CustomResourceDefinition",
                "ConfigMap",
                "Role",
                "RoleBinding",
                "Deployment",
                "Service",
                "HTTPRoute"
            ]
        );
    }

    /// A template parses into plain values: the parser's budget stops an
    /// alias bomb, said in a user's words.
    #[test]
    fn an_alias_bomb_is_refused_in_a_users_words() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse("bomb.yaml", &bomb).unwrap_err().to_string();
        assert!(err.contains("too large or too complex"), "{err}");
        assert!(!err.contains("budget breached"), "{err}");
    }
}
