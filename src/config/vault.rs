//! Resolving `vault:<path>#<key>` references at start-up, and reading the
//! platform's secrets the environment profile lists.
//!
//! It runs after the configuration loads and before any phase, so every
//! phase sees values, `validate` checks the resolved values' formats, and a
//! reference that cannot be resolved stops the run before anything changes:
//! one problem per reference, all at once. One request per Vault path.

use std::collections::BTreeMap;

use super::env_file::{Source, Vars};
use super::spec::{self, SPEC};
use super::vault_ref::{self, VaultRef};
use crate::db::daily_backup;
use crate::error::{Failure, Kind, Problem};
use crate::pipeline::PhaseId;
use crate::providers::vault::{SERVICE_ACCOUNT_TOKEN, Vault, VaultError, key_of};
use crate::redact;

/// The platform's secrets, read from Vault: Secret name → key → value.
/// Never serialized: the values live in memory until they are applied.
#[derive(Default, Clone)]
pub struct PlatformSecrets(pub BTreeMap<String, BTreeMap<String, String>>);

impl std::fmt::Debug for PlatformSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: BTreeMap<&String, Vec<&String>> = self
            .0
            .iter()
            .map(|(n, kv)| (n, kv.keys().collect()))
            .collect();
        f.debug_tuple("PlatformSecrets").field(&names).finish()
    }
}

/// A reference to resolve, and what it is for.
#[derive(Debug, Clone)]
struct Wanted {
    /// The variable, or `secrets.<Secret>.<KEY>` of the profile.
    subject: String,
    target: Target,
    reference: VaultRef,
}

#[derive(Debug, Clone)]
enum Target {
    Var(&'static str),
    Secret { name: String, key: String },
}

/// A profile's secret reference: `vault:<path>#<key>` or `<path>#<key>`.
pub fn parse_profile_ref(value: &str) -> Result<VaultRef, vault_ref::RefError> {
    if vault_ref::is_vault_ref(value) {
        vault_ref::parse(value)
    } else {
        vault_ref::parse(&format!("vault:{value}"))
    }
}

/// Phases that use a variable when it is set without requiring it:
/// shift-traffic promotes (and its undo puts back) a frontend that an
/// earlier run built, so a resumed `--from shift-traffic` needs Vercel's
/// token resolved though deploy-frontend does not run.
fn also_read_by(name: &str) -> &'static [PhaseId] {
    if name.starts_with("VERCEL_") {
        &[PhaseId::ShiftTraffic]
    } else {
        &[]
    }
}

/// The well-formed references among the variables the selected phases (or
/// the run itself) read. Malformed ones are left for `validate` to report.
fn wanted_vars(vars: &Vars, selected: &[PhaseId]) -> Vec<Wanted> {
    SPEC.iter()
        .filter(|s| {
            s.phases.is_empty()
                || s.phases
                    .iter()
                    .chain(also_read_by(s.name))
                    .any(|p| selected.contains(p))
        })
        .filter(|s| !s.name.starts_with("VAULT_"))
        .filter_map(|s| {
            let value = vars.get(s.name)?;
            let reference = vault_ref::parse(value).ok()?;
            Some(Wanted {
                subject: s.name.to_string(),
                target: Target::Var(s.name),
                reference,
            })
        })
        .collect()
}

fn wanted_secrets(secrets: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Wanted> {
    let mut out = Vec::new();
    for (name, keys) in secrets {
        for (key, value) in keys {
            // The profile's own check reports malformed references.
            if let Ok(reference) = parse_profile_ref(value) {
                out.push(Wanted {
                    subject: format!("profile secrets.{name}.{key}"),
                    target: Target::Secret {
                        name: name.clone(),
                        key: key.clone(),
                    },
                    reference,
                });
            }
        }
    }
    out
}

/// What to do about a failure.
fn fix_for(err: &VaultError, r: &VaultRef) -> String {
    match err {
        VaultError::Unreachable { .. } => {
            "check VAULT_ADDR and that this machine can reach Vault, then run again".into()
        }
        VaultError::Denied { .. } => format!(
            "give the token (or VAULT_ROLE's policies) read on {}, or use another token",
            r.path
        ),
        VaultError::NotFound { .. } => format!(
            "write the secret (vault kv put {} {}=...) or correct the path",
            r.path, r.key
        ),
        VaultError::KeyMissing { .. } | VaultError::NotAString { .. } => format!(
            "add the key (vault kv patch {} {}=...) or correct the key after #",
            r.path, r.key
        ),
        VaultError::Login { .. } => {
            "check VAULT_ROLE, the role's bound service account and namespace, and VAULT_SERVICE_ACCOUNT_TOKEN_FILE".into()
        }
        VaultError::Unexpected { .. } => "check Vault's health and the path's mount (KV v2)".into(),
    }
}

/// Log in as the settings say.
async fn connect(vars: &Vars) -> Result<Vault, VaultError> {
    let addr = vars.get("VAULT_ADDR").unwrap_or_default();
    let namespace = vars.get("VAULT_NAMESPACE").filter(|n| !n.is_empty());
    match vars.get("VAULT_AUTH_METHOD") {
        Some("kubernetes") => {
            let role = vars.get("VAULT_ROLE").unwrap_or_default();
            let file = vars
                .get("VAULT_SERVICE_ACCOUNT_TOKEN_FILE")
                .filter(|f| !f.is_empty())
                .unwrap_or(SERVICE_ACCOUNT_TOKEN);
            // A token is a kilobyte or two; 64 KiB is not one.
            let jwt = super::read_text_at_most(
                std::path::Path::new(file),
                "service account token",
                64 << 10,
            )
            .map_err(|e| VaultError::Login {
                why: format!("{e:#} (is this running in a pod?)"),
            })?;
            let jwt = jwt.trim();
            redact::register("VAULT_SERVICE_ACCOUNT_TOKEN", jwt);
            let vault = Vault::kubernetes_login(addr, namespace, role, jwt).await?;
            redact::register("VAULT_TOKEN", vault.token());
            Ok(vault)
        }
        _ => Ok(Vault::with_token(
            addr,
            namespace,
            vars.get("VAULT_TOKEN").unwrap_or_default(),
        )),
    }
}

/// Resolve the references of the variables the selected phases read, in
/// place, and read the profile's platform secrets when `secrets` is given.
/// Every value read is registered with the redactor before it is stored.
/// Returns the platform secrets and one line per path read, for the log.
pub async fn resolve(
    vars: &mut Vars,
    selected: &[PhaseId],
    secrets: Option<&BTreeMap<String, BTreeMap<String, String>>>,
) -> anyhow::Result<PlatformSecrets> {
    let mut wanted = wanted_vars(vars, selected);
    if let Some(s) = secrets {
        wanted.extend(wanted_secrets(s));
    }
    if wanted.is_empty() {
        return Ok(PlatformSecrets::default());
    }

    let mut problems = Vec::new();
    super::validate::vault_settings(vars, &mut problems);
    if !problems.is_empty() {
        return Err(Failure::with_problems(
            Kind::Config,
            "values are Vault references, and Vault's settings are incomplete",
            problems,
        )
        .into());
    }

    let vault = connect(vars).await;
    let mut by_path: BTreeMap<&str, Vec<&Wanted>> = BTreeMap::new();
    for w in &wanted {
        by_path
            .entry(w.reference.path.as_str())
            .or_default()
            .push(w);
    }
    let mut platform = PlatformSecrets::default();
    let mut resolved: Vec<(&'static str, String, String)> = Vec::new();
    let problem = |w: &Wanted, e: &VaultError| Problem {
        phase: None,
        subject: w.subject.clone(),
        problem: format!(
            "(vault:{}#{}) cannot be resolved: {e}",
            w.reference.path, w.reference.key
        ),
        fix: fix_for(e, &w.reference),
    };
    for (path, refs) in by_path {
        let data = match &vault {
            Ok(v) => v.read(path).await,
            Err(e) => Err(e.clone()),
        };
        tracing::debug!("vault: read {path} for {} references", refs.len());
        for w in refs {
            let value = data
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|d| key_of(path, d, &w.reference.key));
            match value {
                Err(e) => problems.push(problem(w, &e)),
                Ok(value) => match &w.target {
                    Target::Var(name) => {
                        // Values kept in Vault are secrets unless the spec
                        // says the variable is not one (an address, a tag);
                        // an address that carries credentials still is.
                        let secret = spec::lookup(name).is_none_or(|s| s.secret);
                        super::register_if_secret(name, &value, secret);
                        resolved.push((name, value, path.to_string()));
                    }
                    Target::Secret { name, key } => {
                        redact::register(key, &value);
                        platform
                            .0
                            .entry(name.clone())
                            .or_default()
                            .insert(key.clone(), value);
                    }
                },
            }
        }
    }
    if problems.is_empty() {
        with_backup_connection(&mut platform, &wanted, &mut problems);
    }
    if !problems.is_empty() {
        let n = problems.len();
        return Err(Failure::with_problems(
            Kind::Config,
            format!(
                "{n} Vault reference{} cannot be resolved; nothing was changed",
                if n == 1 { "" } else { "s" }
            ),
            problems,
        )
        .into());
    }
    for (name, value, path) in resolved {
        vars.set(name, value, Source::Vault(path));
    }
    Ok(platform)
}

/// Adds the daily backup job's Secret, libpq's variables from the platform
/// Secret's `DATABASE_URL`, so the job's `pg_dump` never carries the password
/// on its command line ([`daily_backup`]).
fn with_backup_connection(
    platform: &mut PlatformSecrets,
    wanted: &[Wanted],
    problems: &mut Vec<Problem>,
) {
    match daily_backup::connection_secret(&platform.0) {
        Ok(None) => {}
        Ok(Some(keys)) => {
            if let Some(password) = keys.get("PGPASSWORD") {
                redact::register("PGPASSWORD", password);
            }
            platform.0.insert(daily_backup::SECRET.to_string(), keys);
        }
        Err(why) => {
            let from = wanted.iter().find(|w| {
                matches!(&w.target, Target::Secret { name, key }
                    if name == daily_backup::SOURCE && key == daily_backup::KEY)
            });
            problems.push(Problem {
                phase: None,
                subject: format!(
                    "profile secrets.{}.{}",
                    daily_backup::SOURCE,
                    daily_backup::KEY
                ),
                problem: match from {
                    Some(w) => format!(
                        "(vault:{}#{}) is not a PostgreSQL URL: {why}",
                        w.reference.path, w.reference.key
                    ),
                    None => format!("is not a PostgreSQL URL: {why}"),
                },
                fix: "store postgres://USER:PASSWORD@HOST:PORT/DATABASE there (the services and the daily backup job connect with it)".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_references_take_the_prefix_or_not() {
        let a = parse_profile_ref("secret/maily/staging#database_url").unwrap();
        let b = parse_profile_ref("vault:secret/maily/staging#database_url").unwrap();
        assert_eq!(a, b);
        assert!(parse_profile_ref("secret/maily/staging").is_err());
    }

    #[test]
    fn only_the_selected_phases_references_are_wanted() {
        let mut vars = Vars::default();
        vars.set(
            "VERCEL_TOKEN",
            "vault:secret/maily#vercel".into(),
            Source::Environment,
        );
        vars.set(
            "DATABASE_URL",
            "vault:secret/maily#database_url".into(),
            Source::Environment,
        );
        vars.set("REDIS_URL", "vault:bad".into(), Source::Environment);
        let w = wanted_vars(&vars, &[PhaseId::Migrate, PhaseId::Verify]);
        let names: Vec<&str> = w.iter().map(|w| w.subject.as_str()).collect();
        assert_eq!(names, ["DATABASE_URL"]);
    }

    #[test]
    fn a_resumed_shift_traffic_resolves_the_vercel_token_it_promotes_with() {
        let mut vars = Vars::default();
        vars.set(
            "VERCEL_TOKEN",
            "vault:secret/maily#vercel".into(),
            Source::Environment,
        );
        let w = wanted_vars(&vars, &[PhaseId::ShiftTraffic]);
        let names: Vec<&str> = w.iter().map(|w| w.subject.as_str()).collect();
        assert_eq!(names, ["VERCEL_TOKEN"]);
    }

    #[test]
    fn a_platform_database_url_that_is_not_postgres_is_one_problem_without_its_password() {
        let mut p = PlatformSecrets::default();
        p.0.entry(daily_backup::SOURCE.into())
            .or_default()
            .insert(daily_backup::KEY.into(), "mysql://root:hunter2@db/m".into());
        let wanted = wanted_secrets(
            &[(
                daily_backup::SOURCE.to_string(),
                [(
                    daily_backup::KEY.to_string(),
                    "secret/maily/x#db".to_string(),
                )]
                .into(),
            )]
            .into(),
        );
        let mut problems = Vec::new();
        with_backup_connection(&mut p, &wanted, &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let shown = format!("{problems:?}");
        assert!(shown.contains("vault:secret/maily/x#db"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!p.0.contains_key(daily_backup::SECRET));
    }

    #[test]
    fn platform_secrets_never_print_their_values() {
        let mut p = PlatformSecrets::default();
        p.0.entry("maily-platform-secrets".into())
            .or_default()
            .insert("DATABASE_URL".into(), "postgres://x:hunter2@db/m".into());
        let shown = format!("{p:?}");
        assert!(shown.contains("DATABASE_URL"));
        assert!(!shown.contains("hunter2"));
    }
}
