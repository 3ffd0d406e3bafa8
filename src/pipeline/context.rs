//! What phases see: settings, the run's identity, clients, and what earlier
//! phases produced.

use std::path::PathBuf;

use anyhow::Context as _;
use kube::Client;
use tokio::sync::OnceCell;

use super::deployment_id::DeploymentId;
use super::layers::{Layer, LayerRecord, Recorded};
use super::selection::Selection;
use crate::config::Config;
use crate::config::spec::duration_of;
use crate::k8s::apply::Applier;
use crate::k8s::live::PlatformState;
use crate::k8s::manifest::{self, Template};
use crate::k8s::slot::Slot;
use crate::k8s::values::Release;

/// Which cluster to talk to.
#[derive(Debug, Clone, Default)]
pub struct ClusterTarget {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

impl ClusterTarget {
    /// Whether the user named a cluster: `--kubeconfig`, `--context`, a
    /// `$KUBECONFIG` that is set, or a `~/.kube/config` that is there.
    /// Only a dry run with none of them plans offline.
    pub fn named(&self, kubeconfig_env: Option<&std::ffi::OsStr>, default_exists: bool) -> bool {
        self.kubeconfig.is_some()
            || self.context.is_some()
            || kubeconfig_env.is_some_and(|v| !v.is_empty())
            || default_exists
    }
}

/// Whether a dry run stops at a cluster it cannot use: when the user
/// named one and the kubeconfig or context is wrong (a missing file, an
/// unknown context: the configuration's fault, exit 3, as kubectl and a
/// real run say). A cluster that does not answer, or none named at all,
/// leaves the plan to say what it could not learn.
pub fn dry_run_stops_at(named: bool, connect_error: Option<crate::error::Kind>) -> bool {
    named && connect_error == Some(crate::error::Kind::Config)
}

/// Run-wide options a user sets on the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `--no-rollback`: leave a failed run's changes as they are.
    pub no_rollback: bool,
    /// `--keep-snapshots`: how many snapshots to keep.
    pub keep_snapshots: usize,
    /// How long the deploy lock lives without renewal.
    pub lock_ttl: std::time::Duration,
    /// `--allow-destroy`: let provision apply a plan that destroys resources.
    pub allow_destroy: bool,
    /// `--traffic-steps`: the steps instead of the profile's.
    pub traffic_steps: Option<Vec<u32>>,
    /// `--grace`: the old slot's grace period instead of the profile's.
    pub grace: Option<crate::config::traffic::Grace>,
    /// A rollback's target and its release's name (`v1`): the run goes back
    /// in one switch, so shift-traffic's plan says where to, not a
    /// deploy's steps nobody asked for.
    pub rollback_to: Option<(DeploymentId, String)>,
    /// The run's command line after `maily-deploy`, its own flags only
    /// (`cli::DeployArgs::command_line`): kept in the snapshot and the
    /// rollout record so `status` can suggest repeating the run as it was
    /// started. Empty for a run started some other way.
    pub command_line: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            no_rollback: false,
            keep_snapshots: 30,
            lock_ttl: crate::k8s::lease::DEFAULT_TTL,
            allow_destroy: false,
            traffic_steps: None,
            grace: None,
            rollback_to: None,
            command_line: Vec::new(),
        }
    }
}

/// What phases record for the run's snapshot, each under the part of the
/// platform it owns.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// provision: the Terraform plan's summary, whether it was applied, the
    /// variables its outputs filled (names only, never values).
    pub infrastructure: Option<crate::phases::provision::InfrastructureRecord>,
    /// migrate: schema versions, applied migrations, the backup taken.
    pub database: Option<crate::db::MigrateOutcome>,
    /// deploy-frontend: the Vercel deployment.
    pub frontend: Option<crate::phases::deploy_frontend::FrontendRecord>,
    /// configure-ai: the AI configuration.
    pub ai_config: Option<crate::phases::configure_ai::AiConfigRecord>,
    /// configure-ai: the slot it deployed the AI services to. A run that
    /// deploys AI alone and does not switch has no backend slot, yet it
    /// filled this one, and its snapshot names it.
    pub ai_slot: Option<Slot>,
    /// monitor: the Grafana folder, dashboards and the deployment's
    /// annotation, which the run's end closes.
    pub monitoring: Option<crate::phases::monitor::MonitoringRecord>,
    /// shift-traffic: the steps walked and every analysis measurement.
    pub rollout: Option<crate::traffic::report::RolloutReport>,
}

/// What the backend phases learn and leave for later ones.
#[derive(Debug, Clone, Default)]
pub struct BackendState {
    /// The live state before the run changed anything.
    pub before: Option<PlatformState>,
    /// The slot this run deploys to.
    pub target_slot: Option<Slot>,
    /// Set once deploy-backend has rolled the release out to `target_slot`.
    pub deployed: bool,
    /// Set once shift-traffic starts changing what users reach (workers up,
    /// routes, selectors): from then on a failure must put users back.
    pub switched: bool,
    /// A rollback that only switches: shift-traffic first writes the
    /// platform's shared objects as the release it goes back to ran with
    /// them (one that deploys again writes them in deploy-backend). See
    /// [`Context::platform_with_switch`].
    pub rollback_switch_only: bool,
}

/// The context a run hands to each phase.
///
/// Later phases read what earlier ones leave here; clients to external
/// systems are built lazily by the phases that need them, so a `--skip`
/// never asks for a connection it will not use.
pub struct Context {
    /// The run's id; `None` for commands that are not deployments (`validate`).
    pub deployment_id: Option<DeploymentId>,
    /// When the run started (the deployment's annotation begins here).
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub config: Config,
    pub selection: Selection,
    pub dry_run: bool,
    pub cluster: ClusterTarget,
    pub manifests_dir: PathBuf,
    pub options: RunOptions,
    pub backend: BackendState,
    pub records: Records,
    /// The changes users see this run has made, in order: what its undo
    /// puts back (`pipeline::undo`).
    pub undo: Vec<super::undo::Undo>,
    /// A rollback deploys the release a snapshot recorded, not the
    /// variables' one.
    pub release_override: Option<Release>,
    /// A closing step (a rollback's database) runs after the phases: the
    /// rollout is not complete when shift-traffic ends, and its record must
    /// not say so, or a run killed in that step would be closed as a
    /// success.
    pub closing_follows: bool,
    /// The layers rendered from a record instead of this run's release: a
    /// layer the run carries over into the new slot as users run it, or a
    /// rollback's layer as its snapshot recorded it.
    pub layers: std::collections::BTreeMap<Layer, Recorded>,
    /// The platform's secrets read from Vault at start-up, for deploy-backend
    /// to apply; never recorded.
    pub platform_secrets: crate::config::vault::PlatformSecrets,
    /// The images this run deploys, as tagged, and the digest reference
    /// each was pinned to before anything changed (see `crate::image`).
    pub image_pins: std::collections::BTreeMap<String, String>,
    /// What the scan gate found, for the report and the snapshot.
    pub image_scan: Option<crate::image::gate::ScanOutcome>,
    /// Where the running phase reports progress (set by the runner).
    pub progress: super::Progress,
    /// Cancelled by the runner when the run must stop while a phase that
    /// stops itself at a safe point runs ([`super::Phase::stops_at_a_safe_point`]).
    pub stop: tokio_util::sync::CancellationToken,
    applier: OnceCell<Result<Applier, (crate::error::Kind, String)>>,
    templates: OnceCell<Vec<Template>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("deployment_id", &self.deployment_id)
            .field("environment", &self.config.environment)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Whether the backend is carried over from the slot users were on
    /// (deployed by an earlier run, not this one).
    pub fn backend_carried(&self) -> bool {
        self.layers
            .get(&Layer::Backend)
            .is_some_and(|r| r.carried_from.is_some())
    }

    /// Whether shift-traffic writes the platform's shared objects before it
    /// moves anyone: a rollback that only switches, and a deploy resumed
    /// past deploy-backend (`--from verify`, `--only shift-traffic`, after
    /// a failure put the shared objects back), so users never reach a
    /// release under another's. Not a deploy that skips the backend
    /// (`--skip-backend`): its release is not the backend's.
    pub fn platform_with_switch(&self) -> bool {
        use super::{PhaseId, SkipReason};
        let resumed = matches!(
            self.selection.skip_reason(PhaseId::DeployBackend),
            Some(SkipReason::BeforeFrom | SkipReason::NotInOnly)
        );
        self.backend.rollback_switch_only
            || (self.options.rollback_to.is_none()
                && self.selection.is_selected(PhaseId::ShiftTraffic)
                && resumed
                && !self.backend_carried())
    }

    /// Whether this run writes the platform's shared objects at all.
    pub fn writes_platform(&self) -> bool {
        (self.selection.is_selected(super::PhaseId::DeployBackend) && !self.backend_carried())
            || self.platform_with_switch()
    }

    pub fn new(
        deployment_id: Option<DeploymentId>,
        config: Config,
        selection: Selection,
        dry_run: bool,
    ) -> Self {
        Context {
            deployment_id,
            started_at: chrono::Utc::now(),
            config,
            selection,
            dry_run,
            cluster: ClusterTarget::default(),
            manifests_dir: PathBuf::from("manifests"),
            options: RunOptions::default(),
            backend: BackendState::default(),
            records: Records::default(),
            undo: Vec::new(),
            release_override: None,
            closing_follows: false,
            layers: Default::default(),
            platform_secrets: Default::default(),
            image_pins: Default::default(),
            image_scan: None,
            progress: Default::default(),
            stop: Default::default(),
            applier: OnceCell::new(),
            templates: OnceCell::new(),
        }
    }

    pub fn environment(&self) -> &str {
        &self.config.environment
    }

    /// Whether this run deploys the AI services (configure-ai selected, or
    /// its config already recorded, as in a rollback): the phases after it
    /// watch, monitor and verify them only then.
    pub fn runs_ai(&self) -> bool {
        self.selection
            .is_selected(super::phase::PhaseId::ConfigureAi)
            || self.records.ai_config.is_some()
    }

    /// The profile's services this run's later phases look at: all, or all
    /// but the AI services when the run does not deploy them.
    pub fn watched_services(&self) -> Vec<(&String, &crate::config::profile::Service)> {
        let ai = self.runs_ai();
        self.config
            .profile
            .services
            .iter()
            .filter(|(_, s)| ai || !s.ai)
            .collect()
    }

    /// The Kubernetes client, connected on first use.
    pub async fn kube(&self) -> anyhow::Result<Client> {
        Ok(self.applier().await?.client().clone())
    }

    /// The applier (client plus discovery cache), connected on first use.
    /// A cluster that could not be reached is not asked again by the same
    /// run: the first attempt's retries were its chance, and its message
    /// is the one to repeat.
    pub async fn applier(&self) -> anyhow::Result<&Applier> {
        let connected = self
            .applier
            .get_or_init(|| async {
                crate::k8s::client::connect(
                    self.cluster.kubeconfig.as_deref(),
                    self.cluster.context.as_deref(),
                )
                .await
                .map(Applier::new)
                .map_err(|e| {
                    (
                        crate::error::kind_of(&e).unwrap_or(crate::error::Kind::Unreachable),
                        format!("{e:#}"),
                    )
                })
            })
            .await;
        match connected {
            Ok(applier) => Ok(applier),
            Err((kind, message)) => Err(crate::error::fail(*kind, message)),
        }
    }

    /// The manifest templates, read on first use.
    pub fn templates(&self) -> anyhow::Result<&[Template]> {
        if self.templates.get().is_none() {
            let loaded = manifest::load(&self.manifests_dir)?;
            let _ = self.templates.set(loaded);
        }
        Ok(self.templates.get().map(Vec::as_slice).unwrap_or_default())
    }

    /// The slot this run works on: the one deploy-backend chose, or, when
    /// resuming at a later phase, the idle slot of the live state.
    pub async fn target_slot(&self) -> anyhow::Result<Slot> {
        if let Some(s) = self.backend.target_slot {
            return Ok(s);
        }
        let state = crate::k8s::live::read(self.applier().await?, &self.config.profile).await?;
        state
            .target_slot()
            .map_err(|why| crate::error::fail(crate::error::Kind::PhaseFailed, why))
    }

    /// Use these templates instead of reading the manifests directory (a
    /// rollback renders the templates its snapshot kept).
    pub fn use_templates(&mut self, templates: Vec<Template>) {
        self.templates = OnceCell::new_with(Some(templates));
    }

    fn id_text(&self) -> String {
        self.deployment_id
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default()
    }

    /// The release, as far as the variables of the selected phases tell:
    /// a run of `--only migrate` has no image to name, yet its namespace,
    /// lock and snapshot are the same. Missing names read `unset`, so the
    /// platform templates still render (only their namespace is used then).
    pub fn release_or_partial(&self) -> Release {
        self.release().unwrap_or_else(|_| {
            let var = |name: &str| {
                self.config
                    .vars
                    .get(name)
                    .filter(|v| !v.is_empty())
                    .unwrap_or("unset")
                    .to_string()
            };
            Release {
                environment: self.environment().to_string(),
                deployment_id: self.id_text(),
                image_registry: var("IMAGE_REGISTRY"),
                image_tag: var("IMAGE_TAG"),
                backup_url: var("DATABASE_BACKUP_URL"),
                rollout_timeout_secs: 600,
                digests: self.image_pins.clone(),
            }
        })
    }

    /// The release a layer is rendered with: its record's (carried over,
    /// or a rollback's), or this run's. Either way the objects are this
    /// run's to write, so they carry its deployment id.
    pub fn layer_release(&self, layer: Layer) -> anyhow::Result<Release> {
        match self.layers.get(&layer) {
            Some(r) => Ok(Release {
                deployment_id: self.id_text(),
                ..r.release.clone()
            }),
            None => self.release(),
        }
    }

    /// The slot templates a layer is rendered with.
    pub fn layer_templates(&self, layer: Layer) -> anyhow::Result<Vec<Template>> {
        match self.layers.get(&layer) {
            Some(r) if !r.templates.is_empty() => Ok(r.templates.clone()),
            _ => Ok(self.templates()?.to_vec()),
        }
    }

    /// The image a service runs in the slot this run fills: its layer's
    /// release.
    pub fn expected_image(&self, service: &str) -> anyhow::Result<String> {
        let release = self.layer_release(Layer::of(&self.config.profile, service))?;
        Ok(crate::k8s::values::image_of(
            &release,
            &self.config.profile,
            service,
        ))
    }

    /// The version (image tag) a service runs in the slot this run fills.
    pub fn expected_version(&self, service: &str) -> Option<String> {
        self.layer_release(Layer::of(&self.config.profile, service))
            .ok()
            .map(|r| r.image_tag)
    }

    /// What the snapshot says of each layer of the slot this run fills:
    /// those it renders from a record (carried over, or a rollback's), and
    /// those its phases deploy.
    pub fn layer_records(&self) -> std::collections::BTreeMap<Layer, LayerRecord> {
        Layer::ALL
            .into_iter()
            .filter(|l| !l.services(&self.config.profile).is_empty())
            .filter(|l| self.layers.contains_key(l) || self.selection.is_selected(l.phase()))
            .filter_map(|l| {
                let release = self.layer_release(l).ok()?;
                let recorded = self.layers.get(&l);
                let carried_from = recorded.and_then(|r| r.carried_from.clone());
                Some((
                    l,
                    LayerRecord {
                        how: if carried_from.is_some() {
                            super::layers::How::CarriedOver
                        } else {
                            super::layers::How::Deployed
                        },
                        release,
                        templates: recorded.map(|r| r.templates.clone()).unwrap_or_default(),
                        carried_from,
                    },
                ))
            })
            .collect()
    }

    /// The release this run deploys: a rollback's recorded one, or the one
    /// the validated variables name.
    pub fn release(&self) -> anyhow::Result<Release> {
        if let Some(r) = &self.release_override {
            return Ok(Release {
                deployment_id: self.id_text(),
                ..r.clone()
            });
        }
        let get = |name: &str| -> anyhow::Result<String> {
            self.config
                .vars
                .get(name)
                .filter(|v| !v.is_empty())
                .map(String::from)
                .with_context(|| format!("{name} is not set"))
        };
        let timeout = duration_of("ROLLOUT_TIMEOUT", Some(&get("ROLLOUT_TIMEOUT")?))
            .map_err(|e| anyhow::anyhow!("ROLLOUT_TIMEOUT {e}"))?;
        Ok(Release {
            environment: self.environment().to_string(),
            deployment_id: self.id_text(),
            image_registry: get("IMAGE_REGISTRY")?,
            image_tag: get("IMAGE_TAG")?,
            backup_url: self
                .config
                .vars
                .get("DATABASE_BACKUP_URL")
                .unwrap_or_default()
                .to_string(),
            rollout_timeout_secs: timeout.as_secs(),
            digests: self.image_pins.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn a_dry_run_stops_only_at_a_cluster_named_wrongly() {
        let none = ClusterTarget::default();
        let flag = ClusterTarget {
            kubeconfig: Some("/nonexistent".into()),
            context: None,
        };
        let context = ClusterTarget {
            kubeconfig: None,
            context: Some("nope".into()),
        };
        let env = Some(std::ffi::OsStr::new("/k"));
        let empty = Some(std::ffi::OsStr::new(""));
        assert!(!none.named(None, false));
        assert!(!none.named(empty, false), "an empty $KUBECONFIG is unset");
        assert!(none.named(env, false));
        assert!(none.named(None, true));
        assert!(flag.named(None, false));
        assert!(context.named(None, false));

        assert!(dry_run_stops_at(true, Some(Kind::Config)));
        // Offline: nothing named, so the plan says what it could not learn.
        assert!(!dry_run_stops_at(false, Some(Kind::Config)));
        // A server that does not answer is the plan's to say, not exit 3.
        assert!(!dry_run_stops_at(true, Some(Kind::Unreachable)));
        assert!(!dry_run_stops_at(true, None));
    }
}
