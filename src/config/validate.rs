//! Validation of a run's variables against the spec: a pure function.
//!
//! It reports every problem at once, each filed under the first phase that
//! needs the variable, with what is wrong and how to fix it. It contacts
//! nothing, and never quotes a secret's value.

use serde::Serialize;

use super::env_file::{Source, Vars};
use super::spec::{Need, SPEC, VarSpec};
use super::vault_ref;
use crate::error::Problem;
use crate::pipeline::PhaseId;
use crate::wording;

/// A variable that was checked, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checked {
    pub name: &'static str,
    /// Where the value came from, or `None` when unset.
    pub source: Option<Source>,
    /// The value as it may be shown: secrets as `[secret]`.
    pub shown: Option<String>,
}

/// The outcome of validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Validation {
    pub checked: Vec<Checked>,
    pub problems: Vec<Problem>,
    /// Whether any value checked is a Vault reference.
    pub uses_vault: bool,
}

/// The phases among `selected` that read `spec`; empty when none do.
fn readers(spec: &VarSpec, selected: &[PhaseId]) -> Vec<PhaseId> {
    spec.phases
        .iter()
        .copied()
        .filter(|p| selected.contains(p))
        .collect()
}

/// The phases that read a missing variable, as the subject of "… it":
/// `migrate needs`, `migrate and verify need`.
fn needed_by_words(phases: &[&str]) -> String {
    format!(
        "{} {}",
        wording::and_list(phases),
        wording::agree(phases.len(), "needs", "need")
    )
}

fn shown(spec: &VarSpec, value: &str) -> String {
    if spec.secret && !vault_ref::is_vault_ref(value) {
        "[secret]".into()
    } else {
        crate::error::clipped(value).into_owned()
    }
}

/// The variables `TERRAFORM_PROVIDES` names, as written.
pub fn terraform_provides(vars: &Vars) -> Vec<String> {
    vars.get("TERRAFORM_PROVIDES")
        .unwrap_or_default()
        .split(',')
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Validate the variables that `selected` phases need.
pub fn validate(vars: &Vars, selected: &[PhaseId]) -> Validation {
    validate_except(vars, selected, &[])
}

/// Validate the variables `selected` phases need under `profile`: the key
/// of an AI provider it turns off is not asked for.
pub fn validate_for(vars: &Vars, profile: &super::Profile, selected: &[PhaseId]) -> Validation {
    let unneeded = profile
        .ai_config()
        .map(|c| c.unneeded_vars())
        .unwrap_or_default();
    validate_except(vars, selected, &unneeded)
}

/// Validate as [`validate`] does, without asking for the variables in
/// `unneeded`: what the profile makes unnecessary (the key of an AI
/// provider it turns off). A value given for one is still checked.
pub fn validate_except(vars: &Vars, selected: &[PhaseId], unneeded: &[&str]) -> Validation {
    let mut out = Validation::default();
    // Variables provision's terraform outputs will fill are not asked for
    // when provision runs first; provision then requires them.
    let provided = if selected.contains(&PhaseId::Provision) {
        terraform_provides(vars)
    } else {
        Vec::new()
    };
    for name in &provided {
        if super::spec::lookup(name).is_none() {
            out.problems.push(Problem {
                phase: Some(PhaseId::Provision.as_str().into()),
                subject: "TERRAFORM_PROVIDES".into(),
                problem: format!(
                    "names {}, which is not a variable the tool reads",
                    crate::error::clipped(name)
                ),
                fix: match super::spec::closest(name) {
                    Some(c) => format!("did you mean {c}?"),
                    None => "list variables of the env template, comma-separated".into(),
                },
            });
        }
    }

    for spec in SPEC {
        let run_level = spec.phases.is_empty();
        let readers = readers(spec, selected);
        if !run_level && readers.is_empty() {
            continue;
        }
        let phase = readers.first().map(|p| p.as_str().to_string());
        let entry = vars.entry(spec.name).filter(|v| !v.value.is_empty());
        out.checked.push(Checked {
            name: spec.name,
            source: entry.map(|e| e.source.clone()),
            shown: entry.map(|e| shown(spec, &e.value)),
        });
        let Some(entry) = entry else {
            if spec.need == Need::Required
                && !provided.iter().any(|p| p == spec.name)
                && !unneeded.contains(&spec.name)
            {
                let needed_by: Vec<&str> = readers.iter().map(|p| p.as_str()).collect();
                let skips: Vec<&str> = readers.iter().map(|p| p.skip_flag()).collect();
                out.problems.push(Problem {
                    phase,
                    subject: spec.name.into(),
                    problem: format!(
                        "is not set; {} it ({})",
                        needed_by_words(&needed_by),
                        spec.description
                    ),
                    fix: format!(
                        "set {}={} in the env file or the environment, or skip {}",
                        spec.name,
                        spec.format.example(),
                        wording::and_list(&skips)
                    ),
                });
            }
            continue;
        };
        let value = entry.value.as_str();
        if vault_ref::is_vault_ref(value) {
            out.uses_vault = true;
            if let Err(why) = vault_ref::parse(value) {
                out.problems.push(Problem {
                    phase,
                    subject: spec.name.into(),
                    problem: why.to_string(),
                    fix: format!(
                        "write {}=vault:<path>#<key>, e.g. vault:secret/maily/production#{}",
                        spec.name,
                        spec.name.to_ascii_lowercase()
                    ),
                });
            } else if spec.name.starts_with("VAULT_") {
                out.problems.push(Problem {
                    phase,
                    subject: spec.name.into(),
                    problem:
                        "is a Vault reference, but Vault's own settings cannot come from Vault"
                            .into(),
                    fix: format!("set {} to its value directly", spec.name),
                });
            }
            continue;
        }
        if spec.secret && !crate::redact::long_enough(value) {
            // Too short to hide: redacting it would blot out every place
            // those characters appear (every space, for a blank), and no
            // real credential is that short.
            let what = if value.trim().is_empty() {
                "is blank (white space only)".to_string()
            } else {
                format!(
                    "is shorter than {} characters, too short to be a real credential or to be hidden from output (the value is a secret and is not shown)",
                    crate::redact::MIN_SECRET_CHARS
                )
            };
            out.problems.push(Problem {
                phase,
                subject: spec.name.into(),
                problem: what,
                fix: format!(
                    "set {} to the whole credential as issued (at least {} characters){}",
                    spec.name,
                    crate::redact::MIN_SECRET_CHARS,
                    if spec.need == Need::Required {
                        String::new()
                    } else {
                        ", or remove the line if it is not used".into()
                    }
                ),
            });
            continue;
        }
        if let Err(why) = spec.format.check(value) {
            let got = if spec.secret {
                " (the value is a secret and is not shown)".to_string()
            } else {
                format!(" (got {:?})", crate::error::clipped(value))
            };
            out.problems.push(Problem {
                phase,
                subject: spec.name.into(),
                problem: format!("{why}{got}"),
                fix: format!(
                    "set {} to {}, e.g. {}",
                    spec.name,
                    spec.format.wanted(),
                    spec.format.example()
                ),
            });
        }
    }

    if out.uses_vault {
        vault_settings(vars, &mut out.problems);
    }
    out
}

/// Vault references need a Vault to resolve them, and a way to log in.
pub(crate) fn vault_settings(vars: &Vars, problems: &mut Vec<Problem>) {
    let set = |name: &str| vars.get(name).is_some_and(|v| !v.is_empty());
    let mut need = |name: &str, why: &str| {
        if !set(name) {
            problems.push(Problem {
                phase: None,
                subject: name.into(),
                problem: format!("is not set, and {why}"),
                fix: format!("set {name}, or replace the vault: references with values"),
            });
        }
    };
    need(
        "VAULT_ADDR",
        "some values are vault: references that must be resolved",
    );
    match vars.get("VAULT_AUTH_METHOD") {
        Some("kubernetes") => need(
            "VAULT_ROLE",
            "VAULT_AUTH_METHOD=kubernetes logs in with a role",
        ),
        _ => need(
            "VAULT_TOKEN",
            "VAULT_AUTH_METHOD=token logs in with a token",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env_file::merge;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// A full set of good values: `.env.example`'s, so the fixture cannot
    /// drift from what the README tells users to run.
    fn example() -> Vec<(String, String)> {
        crate::config::env_file::read(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/.env.example"
        )))
        .unwrap()
    }

    fn vars_with(changes: &[(&str, &str)]) -> Vars {
        let mut file = example();
        for (name, value) in changes {
            file.retain(|(n, _)| n != name);
            file.push((name.to_string(), value.to_string()));
        }
        merge(&file, Some(Path::new(".env.test")), &BTreeMap::new())
    }

    #[test]
    fn the_example_env_file_passes_for_every_phase() {
        let v = validate(&vars_with(&[]), &PhaseId::ALL);
        assert_eq!(v.problems, vec![]);
        assert!(!v.uses_vault);
    }

    #[test]
    fn skipping_the_frontend_does_not_ask_for_vercel() {
        let vars = vars_with(&[("VERCEL_TOKEN", ""), ("VERCEL_PROJECT_ID", "")]);
        let selected: Vec<PhaseId> = PhaseId::ALL
            .into_iter()
            .filter(|p| *p != PhaseId::DeployFrontend)
            .collect();
        assert_eq!(validate(&vars, &selected).problems, vec![]);
        let all = validate(&vars, &PhaseId::ALL);
        let subjects: Vec<&str> = all.problems.iter().map(|p| p.subject.as_str()).collect();
        assert_eq!(subjects, vec!["VERCEL_TOKEN", "VERCEL_PROJECT_ID"]);
        assert!(
            all.problems
                .iter()
                .all(|p| p.phase.as_deref() == Some("deploy-frontend"))
        );
        assert!(all.problems[0].fix.contains("--skip-frontend"));
    }

    #[test]
    fn every_problem_is_reported_under_its_first_phase() {
        let vars = vars_with(&[
            ("DATABASE_URL", "mysql://maily:hunter2@db/maily"),
            ("IMAGE_TAG", "v 1"),
            ("ETHEREUM_CONTRACT_ADDRESS", "0x1234"),
            ("REDIS_URL", "http://cache"),
        ]);
        let v = validate(&vars, &PhaseId::ALL);
        let got: Vec<(Option<&str>, &str)> = v
            .problems
            .iter()
            .map(|p| (p.phase.as_deref(), p.subject.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("deploy-backend"), "IMAGE_TAG"),
                (Some("migrate"), "DATABASE_URL"),
                (Some("verify"), "REDIS_URL"),
                (Some("verify"), "ETHEREUM_CONTRACT_ADDRESS"),
            ]
        );
        let text = format!("{:?}", v);
        assert!(!text.contains("hunter2"), "a secret leaked: {text}");
        assert!(
            text.contains("\\\"v 1\\\""),
            "a non-secret value is shown to help: {text}"
        );
    }

    #[test]
    fn a_blank_or_short_secret_is_refused_by_name_never_by_value() {
        let vars = vars_with(&[
            ("VERCEL_TOKEN", "   "),
            ("GRAFANA_API_TOKEN", "gl1234"),
            ("OPENAI_API_KEY", "sk-12345"),
        ]);
        let v = validate(&vars, &PhaseId::ALL);
        let about = |name: &str| v.problems.iter().find(|p| p.subject == name);
        assert!(about("VERCEL_TOKEN").unwrap().problem.contains("blank"));
        let grafana = about("GRAFANA_API_TOKEN").unwrap();
        assert!(
            grafana.problem.contains("shorter than 8 characters"),
            "{grafana:?}"
        );
        assert!(grafana.fix.contains("GRAFANA_API_TOKEN"), "{grafana:?}");
        assert!(about("OPENAI_API_KEY").is_none(), "8 characters pass");
        assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
        assert!(!format!("{v:?}").contains("gl1234"));
    }

    #[test]
    fn secrets_are_shown_as_a_mark() {
        let v = validate(&vars_with(&[]), &[PhaseId::Migrate]);
        let db = v.checked.iter().find(|c| c.name == "DATABASE_URL").unwrap();
        assert_eq!(db.shown.as_deref(), Some("[secret]"));
        let backup = v
            .checked
            .iter()
            .find(|c| c.name == "DATABASE_BACKUP_URL")
            .unwrap();
        assert!(backup.shown.as_deref().unwrap().starts_with("file://"));
    }

    #[test]
    fn vault_references_are_checked_for_form_and_need_vault_settings() {
        let vars = vars_with(&[
            ("DATABASE_URL", "vault:secret/maily/production#database_url"),
            ("OPENAI_API_KEY", "vault:secret/maily#"),
        ]);
        let v = validate(&vars, &PhaseId::ALL);
        assert!(v.uses_vault);
        let subjects: Vec<&str> = v.problems.iter().map(|p| p.subject.as_str()).collect();
        assert_eq!(
            subjects,
            vec!["OPENAI_API_KEY", "VAULT_ADDR", "VAULT_TOKEN"]
        );

        let vars = vars_with(&[
            ("DATABASE_URL", "vault:secret/maily/production#database_url"),
            ("VAULT_ADDR", "https://vault.example.com"),
            ("VAULT_AUTH_METHOD", "kubernetes"),
        ]);
        let subjects: Vec<String> = validate(&vars, &PhaseId::ALL)
            .problems
            .into_iter()
            .map(|p| p.subject)
            .collect();
        assert_eq!(subjects, vec!["VAULT_ROLE"]);
    }

    #[test]
    fn what_terraform_provides_is_not_asked_for_when_provision_runs() {
        let vars = vars_with(&[
            ("DATABASE_URL", ""),
            ("TERRAFORM_PROVIDES", "DATABASE_URL, DATABSE_URL"),
        ]);
        let with = validate(&vars, &[PhaseId::Provision, PhaseId::Migrate]);
        assert_eq!(with.problems.len(), 1, "{:?}", with.problems);
        assert!(with.problems[0].fix.contains("DATABASE_URL"));
        let without = validate(&vars, &[PhaseId::Migrate]);
        assert!(
            without.problems.iter().any(|p| p.subject == "DATABASE_URL"),
            "without provision, nothing fills it"
        );
    }

    #[test]
    fn vault_settings_cannot_themselves_be_references() {
        let vars = vars_with(&[("VAULT_TOKEN", "vault:secret/x#token")]);
        let v = validate(&vars, &[PhaseId::Validate]);
        assert!(v.problems.iter().any(|p| p.subject == "VAULT_TOKEN" && p.problem.contains("cannot come from Vault")));
    }

    #[test]
    fn the_key_of_an_ai_provider_that_is_off_is_not_asked_for() {
        let vars = vars_with(&[("OPENAI_API_KEY", ""), ("GOOGLE_API_KEY", "")]);
        let subjects = |v: &Validation| -> Vec<String> {
            v.problems.iter().map(|p| p.subject.clone()).collect()
        };
        let all = validate(&vars, &[PhaseId::ConfigureAi]);
        assert!(subjects(&all).contains(&"GOOGLE_API_KEY".to_string()));
        let some = validate_except(&vars, &[PhaseId::ConfigureAi], &["GOOGLE_API_KEY"]);
        assert!(!subjects(&some).contains(&"GOOGLE_API_KEY".to_string()));
        assert!(subjects(&some).contains(&"OPENAI_API_KEY".to_string()));
    }

    /// The problem a variable gets, by name.
    fn problem_of(v: &Validation, name: &str) -> Problem {
        v.problems
            .iter()
            .find(|p| p.subject == name)
            .unwrap_or_else(|| panic!("no problem with {name}: {:?}", v.problems))
            .clone()
    }

    #[test]
    fn a_missing_variable_names_its_phases_as_a_sentence() {
        let vars = vars_with(&[("DATABASE_URL", "")]);
        let both = problem_of(&validate(&vars, &PhaseId::ALL), "DATABASE_URL");
        assert!(
            both.problem
                .starts_with("is not set; migrate and verify need it ("),
            "{}",
            both.problem
        );
        assert!(
            both.fix
                .ends_with("or skip --skip-migrate and --skip-verify"),
            "{}",
            both.fix
        );
        let one = problem_of(&validate(&vars, &[PhaseId::Verify]), "DATABASE_URL");
        assert!(
            one.problem.starts_with("is not set; verify needs it ("),
            "{}",
            one.problem
        );
    }

    #[test]
    fn the_fix_of_a_malformed_value_says_what_it_must_be_with_its_article() {
        let vars = vars_with(&[
            ("RABBITMQ_URL", "http://rabbit:5672"),
            ("DATABASE_URL", "mysql://maily@db/maily"),
            ("IMAGE_SCAN", "maybe"),
        ]);
        let v = validate(&vars, &PhaseId::ALL);
        let fix = |name| problem_of(&v, name).fix;
        assert!(fix("RABBITMQ_URL").starts_with("set RABBITMQ_URL to an amqp URL, e.g. amqp://"));
        assert!(fix("DATABASE_URL").starts_with("set DATABASE_URL to a postgres URL, e.g."));
        assert!(fix("IMAGE_SCAN").starts_with("set IMAGE_SCAN to one of on, off, e.g."));
    }
}
