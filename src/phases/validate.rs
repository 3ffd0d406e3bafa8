//! validate: check every variable the selected phases need, offline.
//!
//! It changes nothing, so `--dry-run` runs it for real: a plan built on a
//! configuration that would fail is no plan.

use async_trait::async_trait;

use crate::config::validate::{Validation, validate_for};
use crate::config::{Config, Source};
use crate::error::{Failure, Kind};
use crate::pipeline::{Context, Phase, PhaseId, PhasePlan, PhaseReport};

pub struct Validate;

fn check(cx: &Context) -> anyhow::Result<Validation> {
    check_config(&cx.config, &cx.selection.selected())
}

/// The check a deploy makes before it asks anyone anything (Vault, the
/// registry, the cluster): the variables as written, a Vault reference by
/// its form. A typo then is reported with every other one at once, not
/// after a Vault login, or hidden behind Vault being down. The validate
/// phase checks again once the references are resolved.
pub fn before_any_request(config: &Config, selected: &[PhaseId]) -> anyhow::Result<()> {
    check_config(config, selected).map(|_| ())
}

fn check_config(config: &Config, selected: &[PhaseId]) -> anyhow::Result<Validation> {
    // An AI provider the profile turns off needs no key.
    let v = validate_for(&config.vars, &config.profile, selected);
    if v.problems.is_empty() {
        Ok(v)
    } else {
        let n = v.problems.len();
        Err(Failure::with_problems(
            Kind::Config,
            format!(
                "{n} configuration problem{} for the selected phases",
                if n == 1 { "" } else { "s" }
            ),
            v.problems,
        )
        .into())
    }
}

/// One line per source (file, environment, defaults, unset), so a reader
/// sees at a glance which value won; secrets by name only.
fn lines(v: &Validation) -> Vec<String> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for c in &v.checked {
        let source = match &c.source {
            Some(Source::EnvFile(p)) => format!("from {}", p.display()),
            Some(Source::Environment) => "from the environment".to_string(),
            Some(Source::Default) => "defaults".to_string(),
            Some(Source::Terraform) => "from terraform outputs".to_string(),
            Some(Source::Vault(_)) => "from Vault".to_string(),
            None => "unset".to_string(),
        };
        let item = match &c.shown {
            Some(shown) => format!("{}={shown}", c.name),
            None => c.name.to_string(),
        };
        match groups.iter_mut().find(|(s, _)| *s == source) {
            Some((_, items)) => items.push(item),
            None => groups.push((source, vec![item])),
        }
    }
    groups
        .into_iter()
        .map(|(source, items)| format!("{source}: {}", items.join(", ")))
        .collect()
}

fn summary(v: &Validation, cx: &Context) -> String {
    let set = v.checked.iter().filter(|c| c.source.is_some()).count();
    format!(
        "{set} variables valid for {} phases{}",
        cx.selection.selected().len(),
        if v.uses_vault {
            ", some from Vault"
        } else {
            ""
        }
    )
}

#[async_trait]
impl Phase for Validate {
    fn id(&self) -> PhaseId {
        PhaseId::Validate
    }

    async fn plan(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        let v = check(cx)?;
        Ok(PhasePlan {
            summary: summary(&v, cx),
            steps: lines(&v),
        })
    }

    async fn run(&self, cx: &mut Context) -> anyhow::Result<PhaseReport> {
        let v = check(cx)?;
        Ok(PhaseReport {
            summary: summary(&v, cx),
            details: lines(&v),
        })
    }
}
