//! The drift check between `.env.production.template` and the spec.
//!
//! Operators copy the template to start an env file, so a variable missing
//! from it is a variable nobody sets, and a stale description misleads. The
//! check is a pure function over the file's text; a test runs it on the
//! shipped template.

use std::collections::BTreeSet;

use super::spec::{Need, SPEC};

/// Every way the template differs from the spec; empty when they agree.
pub fn drift(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut comments: Vec<&str> = Vec::new();
    let mut seen = BTreeSet::new();
    for line in template.lines() {
        let line = line.trim();
        if line.is_empty() {
            comments.clear();
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            comments.push(c.trim());
            continue;
        }
        let Some((name, _)) = line.split_once('=') else {
            out.push(format!("line `{line}` is neither a comment nor NAME=value"));
            continue;
        };
        let name = name.trim();
        if !seen.insert(name.to_string()) {
            out.push(format!("{name} is listed twice"));
        }
        match SPEC.iter().find(|v| v.name == name) {
            None => out.push(format!(
                "{name} is in the template but not in the spec (src/config/spec.rs)"
            )),
            Some(spec) => {
                if !comments.contains(&spec.description) {
                    out.push(format!(
                        "{name}'s comment does not carry the spec's description: `# {}`",
                        spec.description
                    ));
                }
            }
        }
        comments.clear();
    }
    for spec in SPEC {
        if !seen.contains(spec.name) {
            out.push(format!(
                "{} is in the spec but missing from the template",
                spec.name
            ));
        }
    }
    out
}

/// The template as the spec would write it (`maily-deploy env-template`).
pub fn render() -> String {
    let mut out = String::from(
        "# maily-deploy: the variables of a deployment, for `maily-deploy production`.\n\
         # Copy to .env.production and fill in. Values already in the process\n\
         # environment win over the file (as after `source .env.production`).\n\
         # Any value may be a Vault reference: vault:<path>#<key>.\n\
         # Secrets are never printed, logged or reported, not even in part.\n\
         # `maily-deploy validate production` checks this file without contacting anything.\n",
    );
    let mut group = "";
    for v in SPEC {
        if v.group != group {
            group = v.group;
            out.push_str(&format!("\n# ===== {group} =====\n"));
        }
        let phases: Vec<&str> = v.phases.iter().map(|p| p.as_str()).collect();
        let readers = if phases.is_empty() {
            "the whole run".to_string()
        } else {
            phases.join(", ")
        };
        let need = match v.need {
            Need::Required => "required".to_string(),
            Need::Optional => "optional".to_string(),
            Need::Default(d) => format!("default {d}"),
        };
        out.push_str(&format!("\n# {}\n", v.description));
        out.push_str(&format!(
            "# {}; {need}; read by {readers}{}\n",
            v.format.describe(),
            if v.secret { "; SECRET" } else { "" }
        ));
        out.push_str(&format!("{}=\n", v.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../.env.production.template");

    #[test]
    fn the_shipped_template_matches_the_spec() {
        let problems = drift(SHIPPED);
        assert!(
            problems.is_empty(),
            "the template drifted from the spec:\n{}\n\nregenerate with: cargo run -- env-template > .env.production.template",
            problems.join("\n")
        );
    }

    #[test]
    fn drift_names_missing_extra_and_stale_entries() {
        let mut text = render();
        text = text.replace("\nIMAGE_TAG=\n", "\n");
        text = text.replace("# Vercel access token", "# Vercel token");
        text.push_str("\n# Something new\nNEW_THING=1\n");
        let problems = drift(&text);
        assert_eq!(
            problems,
            vec![
                "VERCEL_TOKEN's comment does not carry the spec's description: `# Vercel access token`",
                "NEW_THING is in the template but not in the spec (src/config/spec.rs)",
                "IMAGE_TAG is in the spec but missing from the template",
            ]
        );
    }

    #[test]
    fn a_rendered_template_has_no_drift() {
        assert_eq!(drift(&render()), Vec::<String>::new());
    }
}
