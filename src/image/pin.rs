//! A run's images pinned before its first change: which images the
//! selected layers deploy, asked of their registries, every failure
//! reported at once as a configuration problem (exit 3, nothing changed).

use std::collections::BTreeMap;
use std::time::Duration;

use super::credentials::Credentials;
use super::resolve::{Pinned, resolve};
use crate::config::Profile;
use crate::error::{Failure, Kind, Problem};
use crate::k8s::values::{Release, tagged_image_of};
use crate::pipeline::Context;
use crate::pipeline::layers::Layer;

/// Whether a run pins its images (`IMAGE_PINNING`, on unless turned off).
pub fn is_on(vars: &crate::config::Vars) -> bool {
    vars.get("IMAGE_PINNING").unwrap_or("on") != "off"
}

/// The images `services` run in `release`, each with the services that run
/// it (several services may share one image).
pub fn wanted<'a>(
    profile: &Profile,
    release: &Release,
    services: impl IntoIterator<Item = &'a String>,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for service in services {
        out.entry(tagged_image_of(release, profile, service))
            .or_default()
            .push(service.clone());
    }
    out
}

/// The pins of every image, or one failure listing each that has none.
pub fn settle(
    wanted: &BTreeMap<String, Vec<String>>,
    answers: BTreeMap<String, Result<Pinned, super::resolve::ResolveError>>,
    credentials: &Credentials,
) -> anyhow::Result<BTreeMap<String, Pinned>> {
    let mut pins = BTreeMap::new();
    let mut problems = Vec::new();
    for (image, answer) in answers {
        match answer {
            Ok(p) => {
                pins.insert(image, p);
            }
            Err(e) => {
                let services = wanted.get(&image).map(|s| s.join(", ")).unwrap_or_default();
                problems.push(Problem {
                    phase: None,
                    subject: format!("image {} ({services})", crate::error::clipped(&image)),
                    problem: e.to_string(),
                    fix: e.fix(credentials),
                });
            }
        }
    }
    if problems.is_empty() {
        return Ok(pins);
    }
    let n = problems.len();
    Err(Failure::with_problems(
        Kind::Config,
        format!(
            "{n} image{} cannot be pinned to a digest; nothing was changed",
            if n == 1 { "" } else { "s" }
        ),
        problems,
    )
    .into())
}

/// Where this run finds registry logins: `REGISTRY_AUTH_FILE` from its
/// variables, else `DOCKER_CONFIG` or the home directory's Docker config.
pub fn credentials(
    vars: &crate::config::Vars,
    process_env: &BTreeMap<String, String>,
) -> anyhow::Result<Credentials> {
    let home = process_env.get("HOME").map(std::path::PathBuf::from);
    let file = Credentials::locate(
        vars.get("REGISTRY_AUTH_FILE"),
        process_env.get("DOCKER_CONFIG").map(String::as_str),
        home.as_deref(),
    );
    Credentials::read(file.as_deref()).map_err(|e| {
        Failure::with_problems(
            Kind::Config,
            "the registry login file cannot be used",
            vec![Problem {
                phase: None,
                subject: "REGISTRY_AUTH_FILE".into(),
                problem: e.to_string(),
                fix: "point REGISTRY_AUTH_FILE at a docker or podman login file (docker login writes ~/.docker/config.json)".into(),
            }],
        )
        .into()
    })
}

/// The pins of a run: each image of the layers it deploys, as tagged, and
/// what it names now, with the logins used to ask. `None` when the run
/// deploys no image, or its release is not known (validation has said why,
/// or the phase that needs it will, before it changes anything); no pins
/// when pinning is off.
pub async fn for_run(
    cx: &Context,
    process_env: &BTreeMap<String, String>,
    timeout: Duration,
) -> anyhow::Result<Option<(BTreeMap<String, Pinned>, Credentials)>> {
    let profile = &cx.config.profile;
    let services: Vec<String> = Layer::ALL
        .into_iter()
        .filter(|l| cx.selection.is_selected(l.phase()))
        .flat_map(|l| l.services(profile))
        .collect();
    if services.is_empty() {
        return Ok(None);
    }
    let Ok(release) = cx.release() else {
        return Ok(None);
    };
    if !is_on(&cx.config.vars) {
        return Ok(Some((BTreeMap::new(), Credentials::default())));
    }
    let wanted = wanted(profile, &release, &services);
    let credentials = credentials(&cx.config.vars, process_env)?;
    let pins = pin(&wanted, &credentials, timeout).await?;
    for p in pins.values() {
        tracing::info!(image = %p.image, digest = %p.digest, "pinned");
    }
    Ok(Some((pins, credentials)))
}

/// Ask every registry, within `timeout` each.
pub async fn pin(
    wanted: &BTreeMap<String, Vec<String>>,
    credentials: &Credentials,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, Pinned>> {
    let answers = resolve(wanted.keys().cloned(), credentials, timeout).await;
    settle(wanted, answers, credentials)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::resolve::ResolveError;

    #[test]
    fn each_image_is_asked_once_and_every_failure_named_with_its_services() {
        let wanted = BTreeMap::from([
            (
                "r.io/maily/maily-api:v2".to_string(),
                vec!["api".to_string(), "campaigns".to_string()],
            ),
            (
                "r.io/maily/maily-workers:v2".to_string(),
                vec!["workers".to_string()],
            ),
            ("r.io/maily/maily-ai:v2".to_string(), vec!["ai".to_string()]),
        ]);
        let answers = BTreeMap::from([
            (
                "r.io/maily/maily-api:v2".to_string(),
                Err(ResolveError::NotFound {
                    registry: "r.io".into(),
                }),
            ),
            (
                "r.io/maily/maily-workers:v2".to_string(),
                Err(ResolveError::Refused {
                    registry: "r.io".into(),
                    had_login: false,
                }),
            ),
            (
                "r.io/maily/maily-ai:v2".to_string(),
                Ok(Pinned {
                    image: "r.io/maily/maily-ai:v2".into(),
                    digest: "sha256:ab".into(),
                    reference: "r.io/maily/maily-ai@sha256:ab".into(),
                }),
            ),
        ]);
        let err = settle(&wanted, answers, &Credentials::default()).unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Some(Kind::Config));
        let failure = crate::error::failure_of(&err).unwrap();
        let subjects: Vec<&str> = failure
            .problems
            .iter()
            .map(|p| p.subject.as_str())
            .collect();
        assert_eq!(
            subjects,
            vec![
                "image r.io/maily/maily-api:v2 (api, campaigns)",
                "image r.io/maily/maily-workers:v2 (workers)"
            ]
        );
        assert!(failure.problems[1].fix.contains("docker login r.io"));
    }

    #[test]
    fn pinning_is_on_unless_turned_off() {
        let vars = |v: Option<&str>| {
            let mut vars = crate::config::Vars::default();
            if let Some(v) = v {
                vars.set(
                    "IMAGE_PINNING",
                    v.to_string(),
                    crate::config::Source::Environment,
                );
            }
            vars
        };
        assert!(is_on(&vars(None)));
        assert!(is_on(&vars(Some("on"))));
        assert!(!is_on(&vars(Some("off"))));
    }
}
