//! Snapshots: what a run found before it changed anything, what it did, and
//! what it left. `rollback` and `history` read them; a run killed half-way
//! is finished by the next one from its snapshot.
//!
//! Stored as gzip-compressed JSON (as Helm stores releases) in Secrets, so
//! any CI runner with the kubeconfig can roll back.

use std::io::{Read, Write};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::k8s::live::PlatformState;
use crate::k8s::manifest::Template;
use crate::k8s::slot::Slot;
use crate::k8s::values::Release;

/// Version of the snapshot format.
pub const SCHEMA: u32 = 1;

/// A Secret holds at most 1 MiB; keep clear of it.
pub const MAX_BYTES: usize = 1_000_000;

/// The most JSON a snapshot may decompress to: 16 MiB. Reading stops
/// there, so a gzip bomb in a snapshot Secret (1 MB of gzip inflating to
/// gigabytes) costs `history` 16 MiB, not the machine; `encode` refuses to
/// write what could not be read back.
pub const MAX_DECOMPRESSED_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The run is live (or died without saying so; its lease tells which).
    InProgress,
    Succeeded,
    /// A phase failed; what users could see was put back.
    Failed,
    /// A phase failed and putting things back failed too.
    RollbackFailed,
    /// The run died (killed) and a later run put its changes back.
    Abandoned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in-progress",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RollbackFailed => "rollback-failed",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// Who ran a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user: String,
    pub host: String,
    /// The CI job, when run from CI.
    pub ci_job: Option<String>,
}

impl Actor {
    /// The person or job running this process: its environment, its OS
    /// account and the machine's name.
    pub fn current() -> Self {
        Self::from_env(
            |k| std::env::var(k).ok(),
            os_user,
            gethostname::gethostname().to_string_lossy().into_owned(),
        )
    }

    /// Who runs, from the variables `var` reads (empty counts as unset).
    ///
    /// The user is the first of:
    /// 1. under GitHub Actions (`GITHUB_ACTIONS=true`), `GITHUB_ACTOR`: the
    ///    person who triggered the workflow, not the runner's account;
    /// 2. under GitLab CI (`GITLAB_CI=true`), `GITLAB_USER_LOGIN`, likewise;
    /// 3. `USER`, then `USERNAME` (Windows): the login the shell names;
    /// 4. the process's OS account (`os_user`), for a shell or a container
    ///    that sets neither;
    /// 5. `unknown`.
    ///
    /// A CI actor needs its CI's own marker beside it, so a variable left
    /// exported in a developer's shell does not sign their runs.
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
        os_user: impl FnOnce() -> Option<String>,
        host: String,
    ) -> Self {
        let var = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let under = |marker: &str| var(marker).is_some_and(|v| v == "true");
        let ci_actor = if under("GITHUB_ACTIONS") {
            var("GITHUB_ACTOR")
        } else {
            None
        }
        .or_else(|| {
            if under("GITLAB_CI") {
                var("GITLAB_USER_LOGIN")
            } else {
                None
            }
        });
        let user = ci_actor
            .or_else(|| var("USER"))
            .or_else(|| var("USERNAME"))
            .or_else(|| os_user().filter(|u| !u.trim().is_empty()))
            .unwrap_or_else(|| "unknown".into());
        let ci_job =
            if let (Some(repo), Some(run)) = (var("GITHUB_REPOSITORY"), var("GITHUB_RUN_ID")) {
                Some(format!("github:{repo}/actions/runs/{run}"))
            } else if let Some(url) = var("CI_JOB_URL") {
                Some(url)
            } else if let Some(url) = var("BUILD_URL") {
                Some(url)
            } else {
                var("CI").filter(|v| v != "false").map(|_| "ci".to_string())
            };
        Actor { user, host, ci_job }
    }
}

/// The name of the account this process runs as (its effective uid's
/// passwd entry, as `id -un` prints it), or `uid N` when the account has no
/// entry (a container run with an arbitrary uid).
#[cfg(unix)]
fn os_user() -> Option<String> {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => Some(user.name),
        Ok(None) | Err(_) => Some(format!("uid {uid}")),
    }
}

#[cfg(not(unix))]
fn os_user() -> Option<String> {
    None
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.user, self.host)?;
        if let Some(job) = &self.ci_job {
            write!(f, " ({job})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema: u32,
    pub deployment_id: crate::pipeline::DeploymentId,
    pub environment: String,
    /// `deploy` or `rollback`.
    pub command: String,
    /// For a rollback: the deployment it went back to.
    pub rollback_to: Option<crate::pipeline::DeploymentId>,
    pub actor: Actor,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Outcome,
    /// `phase: reason` when the run failed.
    pub failure: Option<String>,
    /// The phases the run selected.
    pub phases: Vec<String>,
    /// The run's command line after `maily-deploy`, its own flags only (no
    /// secret is ever one): how to run it again. Absent in snapshots from
    /// before it was kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command_line: Vec<String>,
    /// What was deployed, so the same objects can be rendered again.
    pub release: Option<Release>,
    /// The slot the run deployed to.
    pub target_slot: Option<Slot>,
    /// The platform, slot, slot-http and route templates of this release.
    pub templates: Vec<Template>,
    /// Whether the run writes the platform's shared objects (deploy-backend
    /// of its own release, or a switch that writes them first): only such a
    /// run's templates are what a later failure puts them back to, and only
    /// such a run, dead, has them put back. False in snapshots from before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writes_platform: bool,
    /// The backend before the run changed anything.
    pub before: PlatformState,
    /// The backend when the run ended.
    pub after: Option<PlatformState>,
    /// Filled by the phases that own them (infrastructure, frontend, AI,
    /// database), each record typed where its phase defines it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<crate::phases::provision::InfrastructureRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<crate::phases::deploy_frontend::FrontendRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_config: Option<crate::phases::configure_ai::AiConfigRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<crate::db::MigrateOutcome>,
    /// monitor: the Grafana folder, dashboards and annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<crate::phases::monitor::MonitoringRecord>,
    /// The scan gate's findings (or that scanning was off); absent when
    /// the run deployed no image, and in snapshots from before the gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_scan: Option<crate::image::gate::ScanOutcome>,
    /// shift-traffic: the steps walked and the analysis at each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::traffic::report::RolloutReport>,
    /// Per layer (backend, AI), whether the run deployed it or carried it
    /// over from the slot users were on, and at which release. Absent in
    /// snapshots from before layers were recorded: there `release` is
    /// both layers'.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub layers: std::collections::BTreeMap<
        crate::pipeline::layers::Layer,
        crate::pipeline::layers::LayerRecord,
    >,
}

impl Snapshot {
    /// The image `service` runs in the slot this deployment filled: its
    /// layer's recorded release.
    pub fn expected_image(
        &self,
        profile: &crate::config::Profile,
        service: &str,
    ) -> Option<String> {
        let layer = crate::pipeline::layers::Layer::of(profile, service);
        let (release, _) = crate::pipeline::layers::source_of(self, layer)?;
        Some(crate::k8s::values::image_of(&release, profile, service))
    }

    /// The release as people name it: its tag (`v12`), or each layer's
    /// where the layers run different ones (`backend v2, AI v3`: a run
    /// that carried one over); `-` for a run that deployed none.
    pub fn release_name(&self) -> String {
        let tags: Vec<(String, &str)> = self
            .layers
            .iter()
            .map(|(l, r)| (l.title().to_string(), r.release.image_tag.as_str()))
            .collect();
        let differ = tags.windows(2).any(|w| w[0].1 != w[1].1);
        if differ {
            return tags
                .iter()
                .map(|(l, t)| format!("{l} {t}"))
                .collect::<Vec<_>>()
                .join(", ");
        }
        self.release
            .as_ref()
            .map(|r| r.image_tag.clone())
            .or_else(|| tags.first().map(|(_, t)| t.to_string()))
            .unwrap_or_else(|| "-".into())
    }

    /// The images the run left, by service: its `after` state's target slot.
    pub fn images(&self) -> Vec<(String, String)> {
        let Some(slot) = self.target_slot else {
            return Vec::new();
        };
        let state = self.after.as_ref().unwrap_or(&self.before);
        state
            .services
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), s.image_in(slot)?.to_string())))
            .collect()
    }
}

/// Gzip-compressed JSON, refused when it would not fit a Secret.
pub fn encode(s: &Snapshot) -> anyhow::Result<Vec<u8>> {
    let json = serde_json::to_vec(s).context("encoding the snapshot")?;
    if json.len() > MAX_DECOMPRESSED_BYTES {
        anyhow::bail!(
            "the snapshot of {} is {} bytes of JSON, over the {MAX_DECOMPRESSED_BYTES} (16 MiB) a snapshot may hold",
            s.deployment_id,
            json.len()
        );
    }
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&json)?;
    let bytes = gz.finish()?;
    if bytes.len() > MAX_BYTES {
        anyhow::bail!(
            "the snapshot of {} is {} bytes compressed, over the {} a Secret can hold",
            s.deployment_id,
            bytes.len(),
            MAX_BYTES
        );
    }
    Ok(bytes)
}

/// A snapshot from its stored bytes. Each way stored bytes can be broken
/// (not gzip, cut short, inflating past [`MAX_DECOMPRESSED_BYTES`], not
/// JSON, JSON of another shape) is said in its own words; none quotes the
/// content, which is the cluster's and may be large.
pub fn decode(bytes: &[u8]) -> anyhow::Result<Snapshot> {
    let mut json = Vec::new();
    let read = GzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED_BYTES as u64 + 1)
        .read_to_end(&mut json);
    match read {
        Ok(_) if json.len() > MAX_DECOMPRESSED_BYTES => anyhow::bail!(
            "the snapshot decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes (16 MiB), more than maily-deploy ever writes; it was not read further"
        ),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            anyhow::bail!("the snapshot is truncated: its gzip stream ends early")
        }
        Err(e) => anyhow::bail!("the snapshot is not gzip ({e})"),
    }
    let value: serde_json::Value = serde_json::from_slice(&json).map_err(|e| {
        anyhow::anyhow!(
            "the snapshot is not JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let s: Snapshot = serde_json::from_value(value).map_err(|e| {
        anyhow::anyhow!(
            "the snapshot is JSON but not a snapshot of this format: {}",
            crate::error::clipped(&e.to_string())
        )
    })?;
    if s.schema > SCHEMA {
        anyhow::bail!(
            "snapshot {} has format {}, newer than this maily-deploy understands ({SCHEMA}); upgrade maily-deploy",
            s.deployment_id,
            s.schema
        );
    }
    if let Some(why) = release_problem(&s) {
        anyhow::bail!("{why}");
    }
    Ok(s)
}

/// What makes a snapshot's releases unusable, if anything: a rollback and
/// a carry-over render with them, and their rollout timeout becomes each
/// Deployment's `progressDeadlineSeconds` (an int32) and the deadline of
/// the wait. The tool never records one past
/// [`MAX_DURATION_SECS`](crate::config::duration::MAX_DURATION_SECS) (its
/// `ROLLOUT_TIMEOUT` is refused past it), so such a value means the
/// Secret was written by something else.
fn release_problem(s: &Snapshot) -> Option<String> {
    use crate::config::duration::MAX_DURATION_SECS;
    let releases = s.release.iter().map(|r| ("release", r)).chain(
        s.layers
            .iter()
            .map(|(layer, r)| (layer.title(), &r.release)),
    );
    for (what, release) in releases {
        if release.rollout_timeout_secs > MAX_DURATION_SECS {
            let what = if what == "release" {
                "its release".to_string()
            } else {
                format!("its {what} layer's release")
            };
            return Some(format!(
                "snapshot {} records a rollout timeout of {} seconds for {what}, over {MAX_DURATION_SECS} (the most a Deployment's progressDeadlineSeconds, an int32, holds); maily-deploy never writes that, so the snapshot was edited or written by something else. Roll back to another deployment (`maily-deploy history` lists them)",
                s.deployment_id, release.rollout_timeout_secs
            ));
        }
    }
    None
}

/// Deployments as a message lists them for a person to pick from: one a
/// line, newest first, with its release, when it started and how it ended,
/// in aligned columns.
pub fn id_lines(snapshots: &[Snapshot]) -> Vec<String> {
    let rows: Vec<[String; 4]> = snapshots
        .iter()
        .map(|s| {
            [
                s.deployment_id.to_string(),
                s.release_name(),
                s.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                s.outcome.as_str().to_string(),
            ]
        })
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (id, release) = (width(0), width(1));
    rows.iter()
        .map(|[a, b, c, d]| format!("  {a:<id$}  release {b:<release$}  {c}  {d}"))
        .collect()
}

/// Which snapshots to delete to keep `keep`: the oldest beyond the newest
/// `keep`, but never one in progress and never the newest success (the last
/// known good state must survive any pruning). `ids` are (id, outcome).
pub fn prune_plan(ids: &[(String, Outcome)], keep: usize) -> Vec<String> {
    let mut sorted: Vec<&(String, Outcome)> = ids.iter().collect();
    sorted.sort_by(|a, b| b.0.cmp(&a.0));
    let newest_success = sorted
        .iter()
        .find(|(_, o)| *o == Outcome::Succeeded)
        .map(|(id, _)| id.clone());
    sorted
        .iter()
        .skip(keep.max(1))
        .filter(|(id, o)| *o != Outcome::InProgress && Some(id) != newest_success.as_ref())
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A snapshot for tests to vary.
    pub fn sample() -> Snapshot {
        Snapshot {
            schema: SCHEMA,
            deployment_id: crate::pipeline::DeploymentId::parse(
                "production",
                "production-20250101-120000",
            )
            .unwrap(),
            environment: "production".into(),
            command: "deploy".into(),
            rollback_to: None,
            actor: Actor {
                user: "ada".into(),
                host: "laptop".into(),
                ci_job: None,
            },
            started_at: Utc::now(),
            finished_at: None,
            outcome: Outcome::InProgress,
            failure: None,
            phases: vec!["deploy-backend".into()],
            command_line: Vec::new(),
            release: None,
            target_slot: Some(Slot::Green),
            templates: Vec::new(),
            writes_platform: false,
            before: PlatformState::default(),
            after: None,
            infrastructure: None,
            frontend: None,
            ai_config: None,
            database: None,
            monitoring: None,
            image_scan: None,
            rollout: None,
            layers: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample;
    use super::*;

    #[test]
    fn a_release_is_named_by_its_tag_or_each_layers_where_they_differ() {
        use crate::pipeline::layers::{How, Layer, LayerRecord};
        let release = |tag: &str| crate::k8s::values::Release {
            environment: "production".into(),
            deployment_id: "production-20250101-120000".into(),
            image_registry: "ghcr.io/maily".into(),
            image_tag: tag.into(),
            backup_url: String::new(),
            rollout_timeout_secs: 60,
            digests: Default::default(),
        };
        let mut s = sample();
        assert_eq!(s.release_name(), "-");
        s.release = Some(release("v12"));
        assert_eq!(s.release_name(), "v12");
        for (layer, tag, how) in [
            (Layer::Backend, "v11", How::CarriedOver),
            (Layer::Ai, "v12", How::Deployed),
        ] {
            s.layers.insert(
                layer,
                LayerRecord {
                    how,
                    release: release(tag),
                    templates: Vec::new(),
                    carried_from: None,
                },
            );
        }
        assert_eq!(s.release_name(), "backend v11, AI v12");
        let lines = id_lines(&[s.clone(), sample()]);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("  production-20250101-120000  release backend v11, AI v12  "),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("release -                   "),
            "aligned: {lines:?}"
        );
        assert!(lines[0].ends_with("in-progress"), "{lines:?}");
    }

    #[test]
    fn round_trips_through_gzip_json() {
        let s = sample();
        assert_eq!(decode(&encode(&s).unwrap()).unwrap(), s);
    }

    #[test]
    fn refuses_what_a_secret_cannot_hold() {
        let mut s = sample();
        // Incompressible text, well over a megabyte.
        let mut x: u64 = 1;
        let noise: String = (0..3_000_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'a' + (x >> 59) as u8 % 26)
            })
            .collect();
        s.failure = Some(noise);
        match encode(&s) {
            Ok(bytes) => panic!("encoded {} bytes without complaint", bytes.len()),
            Err(err) => assert!(err.to_string().contains("over the 1000000"), "{err}"),
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn each_way_a_stored_snapshot_breaks_is_named() {
        let good = encode(&sample()).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{\"schema\":1}".to_vec(), "not gzip"),
            (good[..good.len() / 2].to_vec(), "truncated"),
            (gzip(b"not json at all"), "not JSON"),
            (
                gzip(br#"{"schema": 1, "deployment_id": "x"}"#),
                "not a snapshot",
            ),
        ];
        for (bytes, says) in cases {
            let err = decode(&bytes).unwrap_err();
            assert!(err.to_string().contains(says), "{says}: {err:#}");
        }
    }

    #[test]
    fn a_gzip_bomb_is_read_no_further_than_the_cap() {
        // 17 MiB of zeros: a few KB of gzip, one MiB past the cap.
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..17 {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        let err = decode(&bomb).unwrap_err();
        assert!(
            err.to_string()
                .contains("more than 16777216 bytes (16 MiB)"),
            "{err}"
        );
    }

    #[test]
    fn a_newer_format_is_refused_with_advice() {
        let mut s = sample();
        s.schema = SCHEMA + 1;
        let err = decode(&encode(&s).unwrap()).unwrap_err();
        assert!(err.to_string().contains("upgrade maily-deploy"));
    }

    #[test]
    fn a_rollout_timeout_past_an_int32_is_refused_naming_the_snapshot() {
        let mut s = sample();
        let mut release = Release {
            environment: "staging".into(),
            deployment_id: s.deployment_id.to_string(),
            image_registry: "r".into(),
            image_tag: "v1".into(),
            backup_url: String::new(),
            rollout_timeout_secs: u64::MAX,
            digests: Default::default(),
        };
        s.release = Some(release.clone());
        let err = decode(&encode(&s).unwrap()).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "snapshot {} records a rollout timeout of {} seconds for its release, over 2147483647",
                s.deployment_id,
                u64::MAX
            )),
            "{err}"
        );
        assert!(err.contains("maily-deploy history"), "{err}");
        // A layer's own release is checked as well.
        let mut s = sample();
        release.rollout_timeout_secs = 2_147_483_648;
        s.layers.insert(
            crate::pipeline::layers::Layer::Ai,
            crate::pipeline::layers::LayerRecord {
                how: crate::pipeline::layers::How::CarriedOver,
                release: release.clone(),
                templates: Vec::new(),
                carried_from: None,
            },
        );
        let err = decode(&encode(&s).unwrap()).unwrap_err().to_string();
        assert!(err.contains("for its AI layer's release"), "{err}");
        // The maximum itself is what ROLLOUT_TIMEOUT accepts: still read.
        release.rollout_timeout_secs = 2_147_483_647;
        s.layers
            .get_mut(&crate::pipeline::layers::Layer::Ai)
            .unwrap()
            .release = release;
        decode(&encode(&s).unwrap()).unwrap();
    }

    /// Fixtures every later snapshot format must still read, as the code
    /// of their time wrote them: a snapshot with every record filled, and
    /// one as `begin` writes it (no record yet, every optional part left
    /// out). Both were written while the records were still untyped JSON
    /// (the ignored test `write_all_records_fixture` of commit dde0951), so
    /// they are what clusters already hold.
    const FIXTURES: [&str; 2] = ["all-records-v1.json", "in-progress-v1.json"];

    fn fixture_path(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/snapshots")
            .join(name)
    }

    #[test]
    fn snapshots_written_earlier_read_and_write_back_the_same() {
        for name in FIXTURES {
            let text = std::fs::read_to_string(fixture_path(name)).unwrap();
            let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
            let s: Snapshot =
                serde_json::from_value(stored.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(serde_json::to_value(&s).unwrap(), stored, "{name}");
            // Through the store's own path too: gzip and back.
            assert_eq!(decode(&encode(&s).unwrap()).unwrap(), s, "{name}");
        }
    }

    #[test]
    fn pruning_keeps_the_newest_the_live_and_the_last_good() {
        let ids: Vec<(String, Outcome)> = vec![
            ("p-20250101-000001".into(), Outcome::Succeeded),
            ("p-20250101-000002".into(), Outcome::InProgress),
            ("p-20250101-000003".into(), Outcome::Failed),
            ("p-20250101-000004".into(), Outcome::Failed),
            ("p-20250101-000005".into(), Outcome::Failed),
        ];
        assert_eq!(prune_plan(&ids, 2), vec!["p-20250101-000003".to_string()]);
        assert_eq!(prune_plan(&ids, 30), Vec::<String>::new());
    }

    /// Who a run is signed by, for an environment given as `KEY=value`
    /// pairs and an OS account.
    fn actor_in(env: &[(&str, &str)], os_user: Option<&str>) -> Actor {
        let env: std::collections::BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Actor::from_env(
            |k| env.get(k).cloned(),
            || os_user.map(String::from),
            "runner-7".into(),
        )
    }

    #[test]
    fn a_shell_run_is_signed_by_its_user_variable() {
        let a = actor_in(&[("USER", "ada"), ("USERNAME", "ada-win")], Some("root"));
        assert_eq!(a.to_string(), "ada@runner-7");
        assert_eq!(
            actor_in(&[("USERNAME", "grace")], Some("root")).user,
            "grace"
        );
    }

    #[test]
    fn without_user_variables_the_os_account_signs_not_unknown() {
        assert_eq!(actor_in(&[], Some("deployer")).user, "deployer");
        assert_eq!(
            actor_in(&[("USER", ""), ("USERNAME", " ")], Some("deployer")).user,
            "deployer"
        );
        // An account without a passwd entry is named by its uid.
        assert_eq!(
            actor_in(&[], Some("uid 1001")).to_string(),
            "uid 1001@runner-7"
        );
        assert_eq!(actor_in(&[], None).user, "unknown");
        assert_eq!(actor_in(&[], Some("")).user, "unknown");
    }

    #[test]
    fn under_github_actions_the_actor_signs_not_the_runner_account() {
        let github = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_ACTOR", "octocat"),
            ("GITHUB_REPOSITORY", "maily/maily"),
            ("GITHUB_RUN_ID", "42"),
            ("USER", "runner"),
            ("CI", "true"),
        ];
        let a = actor_in(&github, Some("runner"));
        assert_eq!(a.user, "octocat");
        assert_eq!(
            a.to_string(),
            "octocat@runner-7 (github:maily/maily/actions/runs/42)"
        );
        // An empty actor falls through to the shell's user.
        let mut no_actor = github;
        no_actor[1] = ("GITHUB_ACTOR", "");
        assert_eq!(actor_in(&no_actor, None).user, "runner");
    }

    #[test]
    fn under_gitlab_ci_the_login_of_the_pipeline_user_signs() {
        let gitlab = [
            ("GITLAB_CI", "true"),
            ("GITLAB_USER_LOGIN", "ada.l"),
            (
                "CI_JOB_URL",
                "https://gitlab.example.com/maily/maily/-/jobs/9",
            ),
            ("USER", "gitlab-runner"),
        ];
        let a = actor_in(&gitlab, Some("gitlab-runner"));
        assert_eq!(
            a.to_string(),
            "ada.l@runner-7 (https://gitlab.example.com/maily/maily/-/jobs/9)"
        );
    }

    #[test]
    fn a_ci_actor_counts_only_beside_its_ci_marker() {
        // Left exported in a developer's shell, or with the marker off.
        let stray = [
            ("GITHUB_ACTOR", "octocat"),
            ("GITLAB_USER_LOGIN", "ada.l"),
            ("USER", "grace"),
        ];
        assert_eq!(actor_in(&stray, Some("root")).user, "grace");
        let off = [
            ("GITHUB_ACTIONS", "false"),
            ("GITHUB_ACTOR", "octocat"),
            ("GITLAB_CI", "false"),
            ("GITLAB_USER_LOGIN", "ada.l"),
        ];
        assert_eq!(actor_in(&off, Some("root")).user, "root");
        // GitHub's actor first, should both markers be set.
        let both = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_ACTOR", "octocat"),
            ("GITLAB_CI", "true"),
            ("GITLAB_USER_LOGIN", "ada.l"),
        ];
        assert_eq!(actor_in(&both, None).user, "octocat");
    }

    #[cfg(unix)]
    #[test]
    fn the_os_account_is_the_one_id_names() {
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        assert!(id.status.success());
        let name = String::from_utf8(id.stdout).unwrap().trim().to_string();
        assert_eq!(os_user().as_deref(), Some(name.as_str()));
    }
}
