//! The run's lifecycle in the cluster: the lock, the snapshot, the undo.
//!
//! `begin` runs before the first phase that changes anything: it makes sure
//! the namespace exists (the lock and the snapshots live there), takes the
//! lock, finishes any run that died holding it, reads the live state and
//! writes the snapshot. `finish` runs after the last phase: on failure it
//! puts users back where `before` had them (unless `--no-rollback`), then
//! completes the snapshot with the outcome and the state left, prunes old
//! snapshots and releases the lock.

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::Utc;

use super::context::Context;
use super::report::ErrorReport;
use super::snapshot::{Actor, Outcome, SCHEMA, Snapshot};
use super::undo;
use crate::error::{Kind, fail};
use crate::k8s::apply::Applier;
use crate::k8s::client::health;
use crate::k8s::lease::{self, Fence, Holder, LeaseGuard};
use crate::k8s::live::{self, PlatformState};
use crate::k8s::manifest::{self, Scope, Template};
use crate::k8s::route;
use crate::k8s::snapshot_store::SnapshotStore;
use crate::k8s::values::{self, Release};
use crate::traffic::record::{self, Stage};

/// What the runner asks of the world around the phases.
#[async_trait]
pub trait Lifecycle: Send {
    /// Before the first phase that changes anything.
    async fn begin(&mut self, cx: &mut Context) -> anyhow::Result<()>;
    /// After the last phase. `Err` means putting things back failed.
    async fn finish(
        &mut self,
        cx: &mut Context,
        failure: Option<&ErrorReport>,
    ) -> anyhow::Result<()>;
    /// The run's lock, once taken: the runner stops the run the moment it
    /// is lost.
    fn fence(&self) -> Option<Fence>;
    /// Where users were when this run last changed or read it, for a
    /// failure that cannot read it now.
    fn users_last_seen(&self) -> Option<String> {
        None
    }
    /// After validate, before anything changes (and in a dry run): what the
    /// run does beyond its flags (a layer to carry over), or why its flags
    /// cannot work. Reads only.
    async fn prepare(&mut self, _cx: &mut Context) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Decide the layers to carry over (`pipeline::layers`) from the live
/// state and the last good snapshot, and take their phases: they deploy
/// from the record. A refusal names the flags and why, before any change.
pub async fn plan_layers(cx: &mut Context) -> anyhow::Result<()> {
    if !cx.selection.is_selected(super::PhaseId::ShiftTraffic) {
        return Ok(());
    }
    let read = async {
        let applier = cx.applier().await?;
        let live = live::read(applier, &cx.config.profile).await?;
        let store = SnapshotStore::new(
            applier.client().clone(),
            &cx.config.profile.namespace,
            cx.environment(),
        );
        let history = store.list().await?;
        Ok::<_, anyhow::Error>((live, history))
    };
    let (live, history) = match read.await {
        Ok(r) => r,
        // A dry run may have no cluster at hand; the phases' plans say what
        // they could not learn.
        Err(_) if cx.dry_run => return Ok(()),
        Err(e) => return Err(e),
    };
    let last_good = history.iter().find(|s| s.outcome == Outcome::Succeeded);
    let carry = super::layers::decide(
        &cx.selection,
        cx.environment(),
        &cx.config.profile,
        &live,
        last_good,
    )
    .map_err(|r| fail(r.kind, r.message))?;
    for (layer, recorded) in carry {
        tracing::info!("{}", recorded.describe(layer));
        cx.selection.carry(layer.phase());
        cx.layers.insert(layer, recorded);
    }
    Ok(())
}

/// The lifecycle of a deploy or rollback against the cluster.
pub struct ClusterLifecycle {
    command: &'static str,
    rollback_to: Option<super::DeploymentId>,
    guard: Option<LeaseGuard>,
    store: Option<SnapshotStore>,
    snapshot: Option<Snapshot>,
    applier: Option<Applier>,
    still_holds: Option<Precondition>,
}

/// What a command decided from the platform as it read it before the
/// lock, checked again on the platform as the lock finds it (after dead
/// runs were put back): `Err` says what changed, and the run stops there.
pub type Precondition = Box<dyn Fn(&PlatformState) -> Result<(), String> + Send + Sync>;

impl ClusterLifecycle {
    pub fn new(command: &'static str, rollback_to: Option<super::DeploymentId>) -> Self {
        ClusterLifecycle {
            command,
            rollback_to,
            guard: None,
            store: None,
            snapshot: None,
            applier: None,
            still_holds: None,
        }
    }

    /// Refuse to go on, under the lock and before this run's first change,
    /// when `check` fails on the platform as the lock finds it.
    pub fn with_precondition(mut self, check: Precondition) -> Self {
        self.still_holds = Some(check);
        self
    }
}

/// A deploy that writes the idle slot (the backend, the AI services) is
/// refused when users still reach it (a rollout stopped between its steps
/// and left so): asked under the lock, after dead runs were put back
/// (which may reunite users), and before this run's first change, so
/// provision and migrate never run for a release that cannot land.
fn idle_slot_unreached(cx: &Context, before: &PlatformState) -> anyhow::Result<()> {
    let writes_slot = [super::PhaseId::DeployBackend, super::PhaseId::ConfigureAi]
        .into_iter()
        .any(|p| cx.selection.is_selected(p));
    if !writes_slot {
        return Ok(());
    }
    let slot = match cx.backend.target_slot {
        Some(s) => s,
        None => before
            .target_slot()
            .map_err(|why| fail(Kind::Refused, format!("{why}; nothing was changed")))?,
    };
    crate::phases::deploy_backend::unreached(before, slot, cx.environment())
}

/// Whether the rollout record says `dead` walked its rollout to the end:
/// everyone on its slot, the run's last phase done.
fn completed_by_record(rec: &record::Record, dead: &Snapshot) -> bool {
    rec.rollout
        .as_ref()
        .is_some_and(|r| r.deployment_id == dead.deployment_id && r.stage == Stage::Completed)
}

/// The templates a snapshot keeps: what it takes to render this release's
/// slot, route and platform objects again (the platform's, so that a later
/// run that fails, or a rollback, can put them back as this one left them).
fn kept_templates(all: &[Template]) -> Vec<Template> {
    all.iter()
        .filter(|t| {
            matches!(
                t.scope,
                Scope::Platform | Scope::Slot | Scope::SlotHttp | Scope::SlotAi | Scope::Route
            )
        })
        .cloned()
        .collect()
}

/// Put the platform's shared objects (the settings ConfigMap, the network
/// policies, the backup CronJob) back as the last good deployment before
/// `s` left them, rendered from the templates and release its snapshot
/// kept. They are not a slot's: a release changes them for both slots, so
/// a failed one must not leave its own. Nothing to do when no deployment
/// before `s` kept them (the first deploy, or snapshots from before they
/// were kept: said in the log). Objects a release added are left.
pub(super) async fn platform_back(
    cx: &Context,
    applier: &Applier,
    s: &Snapshot,
) -> anyhow::Result<()> {
    let store = SnapshotStore::new(
        applier.client().clone(),
        &cx.config.profile.namespace,
        cx.environment(),
    );
    let history = store.list().await?;
    let Some((templates, release)) = platform_before(&history, &s.deployment_id) else {
        tracing::info!(
            "no deployment before {} kept the platform's templates: its shared objects stay as they are",
            s.deployment_id
        );
        return Ok(());
    };
    let objects = manifest::render(
        &templates,
        &[Scope::Platform],
        &values::common(&release, &cx.config.profile),
    )?
    .into_iter()
    .map(|(_, o)| o)
    .collect();
    let applied = applier
        .apply_all(objects)
        .await
        .context("putting the platform's shared objects back")?;
    tracing::info!(
        "the platform's shared objects as {} left them: {applied}",
        release.deployment_id
    );
    Ok(())
}

/// The platform templates and release of the newest successful deployment
/// before `id` that wrote the platform's objects (`writes_platform`: not a
/// `--only migrate` run, an AI-only one or a `db restore`, whose templates
/// and release never reached them) and kept them.
fn platform_before(
    history: &[Snapshot],
    id: &super::DeploymentId,
) -> Option<(Vec<Template>, Release)> {
    let mut wrote: Vec<&Snapshot> = history
        .iter()
        .filter(|h| h.outcome == Outcome::Succeeded && h.writes_platform && h.deployment_id < *id)
        .collect();
    wrote.sort_by(|a, b| b.deployment_id.cmp(&a.deployment_id));
    wrote.into_iter().find_map(|h| {
        let platform: Vec<Template> = h
            .templates
            .iter()
            .filter(|t| t.scope == Scope::Platform)
            .cloned()
            .collect();
        (!platform.is_empty()).then_some((platform, h.release.clone()?))
    })
}

/// Apply the environment's Namespace (from the platform templates).
pub async fn ensure_namespace(
    applier: &Applier,
    cx: &Context,
    release: &Release,
) -> anyhow::Result<()> {
    let objects = manifest::render(
        cx.templates()?,
        &[Scope::Platform],
        &values::common(release, &cx.config.profile),
    )?;
    let namespaces: Vec<_> = objects
        .into_iter()
        .map(|(_, o)| o)
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "Namespace"))
        .collect();
    if namespaces.is_empty() {
        anyhow::bail!("no Namespace among the platform templates (manifests/platform/)");
    }
    applier.apply_all(namespaces).await?;
    Ok(())
}

/// Where users are in a state read from the cluster, in a few words.
pub fn users_on(state: &PlatformState) -> String {
    match state.active() {
        live::Active::Fresh => "no service switched yet (a first deploy)".into(),
        live::Active::Slot(slot) => format!("all on {slot}"),
        live::Active::Mixed(services) => {
            let on: Vec<String> = services
                .iter()
                .map(|(name, slot)| {
                    format!(
                        "{name} on {}",
                        slot.map_or_else(|| "none".to_string(), |s| s.to_string())
                    )
                })
                .collect();
            format!("split: {}", on.join(", "))
        }
    }
}

/// Put users back where a snapshot's `before` had them.
pub(super) async fn restore_before(
    cx: &Context,
    applier: &Applier,
    s: &Snapshot,
    release: &Release,
) -> anyhow::Result<()> {
    let templates: &[Template] = if s.templates.is_empty() {
        cx.templates()?
    } else {
        &s.templates
    };
    capacity_back(cx, applier, s, release).await?;
    route::restore(applier, &cx.config.profile, templates, release, &s.before).await?;
    applier.note_users(format!("put back: {}", users_on(&s.before)));
    Ok(())
}

/// Before users go back: the http Deployments they go back to scaled to
/// what `before` had where they hold fewer now (the old slot scaled to 0
/// after its grace period), and waited for. Should they not come up, the
/// undo fails (exit 5) with users left where they are, on pods that run,
/// rather than sent to none.
async fn capacity_back(
    cx: &Context,
    applier: &Applier,
    s: &Snapshot,
    release: &Release,
) -> anyhow::Result<()> {
    let profile = &cx.config.profile;
    let now = live::read(applier, profile).await?;
    let short = route::short_of_before(profile, &s.before, &now);
    if short.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        "users go back to Deployments scaled down since: {} back up first",
        short
            .iter()
            .map(|(name, _, r)| format!("{name} to {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    route::scale_all(
        applier,
        &profile.namespace,
        short.iter().map(|(n, _, r)| (n.clone(), *r)).collect(),
    )
    .await?;
    for slot in crate::k8s::slot::Slot::BOTH {
        let names: Vec<String> = short
            .iter()
            .filter(|(_, s, _)| *s == slot)
            .map(|(n, _, _)| n.clone())
            .collect();
        if !names.is_empty() {
            crate::k8s::watch::wait_for_slot(
                applier.client(),
                &profile.namespace,
                slot,
                &names,
                release.rollout_timeout(),
                crate::k8s::rollout::graces(&cx.config.vars),
            )
            .await
            .context("waiting for the Deployments users go back to")?;
        }
    }
    Ok(())
}

/// Finish a run that died mid-run: put its users back where its snapshot
/// found them (backend, then frontend), close its rollout record, and record
/// `outcome` and `why` in its snapshot. The caller holds the lock.
pub async fn put_back_dead_run(
    cx: &Context,
    applier: &Applier,
    store: &SnapshotStore,
    mut dead: Snapshot,
    release: &Release,
    outcome: Outcome,
    why: String,
) -> anyhow::Result<()> {
    let dead_release = dead.release.clone().unwrap_or_else(|| release.clone());
    // It said nothing of what it changed before it died: everything it may
    // have changed goes back (the platform's objects only if it was to
    // write them).
    let frontend = dead.frontend.clone();
    let steps = dead_run_steps(&dead);
    let (frontend, error) =
        undo::put_back(cx, applier, &steps, &dead, &dead_release, frontend).await;
    if let Some(e) = error {
        return Err(e.context(format!(
            "finishing the interrupted deployment {}",
            dead.deployment_id
        )));
    }
    if let Some(record) = frontend {
        dead.frontend = Some(record);
    }
    let ns = &cx.config.profile.namespace;
    let rec = record::read(applier.client(), ns).await?;
    // The steps it walked before it died, as its walk kept them.
    if dead.rollout.is_none() {
        dead.rollout = rec.report_of(&dead.deployment_id);
    }
    record::close(
        applier.client(),
        ns,
        &rec,
        &dead.deployment_id,
        Stage::RolledBack,
        Some(why.clone()),
    )
    .await?;
    dead.outcome = outcome;
    dead.finished_at = Some(Utc::now());
    dead.failure = Some(why);
    dead.after = Some(live::read(applier, &cx.config.profile).await?);
    store.put(&dead).await?;
    Ok(())
}

/// What a run that died may have changed, to be put back: everything, the
/// platform's shared objects only if it was to write them (a `--only
/// migrate` run, an AI-only one or a `db restore` never does).
fn dead_run_steps(dead: &Snapshot) -> Vec<undo::Undo> {
    undo::EVERYTHING
        .iter()
        .copied()
        .filter(|u| *u != undo::Undo::Platform || dead.writes_platform)
        .collect()
}

/// Write what a phase has just recorded (in `cx.records`) through to the
/// run's snapshot at once, before the outside world hears of the change:
/// if the process dies next, the run that finishes it finds what to put
/// back. The lifecycle writes every snapshot; phases say what changed.
pub async fn write_through(
    cx: &Context,
    change: impl FnOnce(&mut Snapshot, &super::context::Records),
) -> anyhow::Result<()> {
    let Some(writer) = SnapshotWriter::of(cx).await? else {
        return Ok(());
    };
    writer.update(|s| change(s, &cx.records)).await
}

/// The run's snapshot, to change from code that outlives a borrow of the
/// context (a callback the database API calls mid-operation).
#[derive(Clone)]
pub struct SnapshotWriter {
    applier: Applier,
    namespace: String,
    environment: String,
    id: super::DeploymentId,
}

impl SnapshotWriter {
    /// The writer of `cx`'s snapshot; `None` for a run without one (no
    /// deployment id).
    pub async fn of(cx: &Context) -> anyhow::Result<Option<SnapshotWriter>> {
        let Some(id) = cx.deployment_id.clone() else {
            return Ok(None);
        };
        Ok(Some(SnapshotWriter {
            applier: cx.applier().await?.clone(),
            namespace: cx.config.profile.namespace.clone(),
            environment: cx.environment().to_string(),
            id,
        }))
    }

    /// Change the snapshot as stored, under the run's lock.
    pub async fn update(&self, change: impl FnOnce(&mut Snapshot)) -> anyhow::Result<()> {
        self.applier.may_change().await?;
        let store = SnapshotStore::new(
            self.applier.client().clone(),
            &self.namespace,
            &self.environment,
        );
        if let Some(mut snapshot) = store.get(self.id.as_str()).await? {
            change(&mut snapshot);
            store.put(&snapshot).await?;
        }
        Ok(())
    }
}

/// The lock `promote` and `abort` take to finish a run that died
/// mid-rollout: the dead run's lease is waited out (or `unlock`ed), a live
/// holder refuses, and every change is fenced by it as a run's are.
pub struct DeadRunLock {
    guard: LeaseGuard,
}

impl DeadRunLock {
    /// Take the lock as `holder_id`, once the lease of `dead_id` expired.
    pub async fn take(cx: &Context, dead_id: &str, holder_id: &str) -> anyhow::Result<Self> {
        let applier = cx.applier().await?;
        let client = applier.client().clone();
        let ns = &cx.config.profile.namespace;
        let environment = cx.environment();
        let actor = Actor::current();
        let me = Holder {
            user: actor.user,
            host: actor.host,
            deployment_id: holder_id.to_string(),
            since: Utc::now(),
        };
        let mut said = false;
        let guard = loop {
            match lease::current(client.clone(), ns).await? {
                Some((holder, expires)) if holder.deployment_id == dead_id => {
                    if !said {
                        crate::output::stderr_line(&format!(
                            "the run {dead_id} stopped answering; waiting for its lock to expire at {} (or `maily-deploy unlock {environment}`)",
                            expires.format("%H:%M:%S UTC")
                        ));
                        said = true;
                    }
                    crate::interrupt::cancellable("the wait for the dead run's lock", async {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        Ok(())
                    })
                    .await?;
                }
                _ => {
                    break lease::acquire(client, ns, environment, me, cx.options.lock_ttl).await?;
                }
            }
        };
        applier.set_fence(Some(guard.fence()));
        Ok(DeadRunLock { guard })
    }

    /// Release the lock (unless another run holds it now).
    pub async fn release(self, cx: &Context) {
        if let Ok(applier) = cx.applier().await {
            applier.set_fence(None);
        }
        if let Err(e) = self.guard.release().await {
            tracing::warn!("releasing the deploy lock: {e:#}; it expires by itself");
        }
    }
}

/// Close the snapshot of a run that died mid-rollout and that `promote`
/// finished for it: succeeded, on `slot`, with the frontend it promoted.
/// The caller holds the lock.
pub async fn close_promoted_dead_run(
    cx: &Context,
    applier: &Applier,
    store: &SnapshotStore,
    dead: Snapshot,
    slot: crate::k8s::slot::Slot,
) -> anyhow::Result<()> {
    let ns = &cx.config.profile.namespace;
    let mut snapshot = store
        .get(dead.deployment_id.as_str())
        .await?
        .unwrap_or(dead);
    snapshot.outcome = Outcome::Succeeded;
    snapshot.finished_at = Some(Utc::now());
    snapshot.target_slot = Some(slot);
    snapshot.frontend = cx.records.frontend.clone();
    snapshot.after = Some(live::read(applier, &cx.config.profile).await?);
    snapshot.failure = None;
    if snapshot.rollout.is_none() {
        snapshot.rollout = record::read(applier.client(), ns)
            .await?
            .report_of(&snapshot.deployment_id);
    }
    store.put(&snapshot).await
}

/// Decide the run's id once, before anything announces it (the first
/// line, Slack): ids have one-second resolution, and a run that starts
/// within the second another one began would write over that run's
/// snapshot, so such a run waits for the next second and takes that id. A
/// cluster that cannot be read leaves the id as it is: the run then fails
/// at the lock, after validate has said what it found.
pub async fn settle_id(cx: &mut Context) {
    let Some(mut id) = cx.deployment_id.clone() else {
        return;
    };
    let Ok(applier) = cx.applier().await else {
        return;
    };
    let store = SnapshotStore::new(
        applier.client().clone(),
        &cx.config.profile.namespace,
        cx.environment(),
    );
    while let Ok(Some(_)) = store.get(id.as_str()).await {
        let now = Utc::now();
        let wait = 1000 - u64::from(now.timestamp_subsec_millis().min(999));
        tokio::time::sleep(std::time::Duration::from_millis(wait + 5)).await;
        let fresh = super::DeploymentId::now(cx.environment());
        tracing::warn!(
            "deployment id {id} is taken by a run that began in the same second; this run is {fresh}"
        );
        id = fresh;
    }
    cx.deployment_id = Some(id);
}

/// Under the lock, the id must still be free: a run that began in the same
/// second and finished before this one took the lock would otherwise lose
/// its snapshot. The id was announced, so it is not changed here: the run
/// stops with nothing changed.
async fn id_still_free(store: &SnapshotStore, id: &str) -> anyhow::Result<()> {
    if store.get(id).await?.is_some() {
        return Err(fail(
            Kind::LockHeld,
            format!(
                "deployment id {id} was taken by a run that began in the same second and finished before this one took the lock; nothing was changed; run again"
            ),
        ));
    }
    Ok(())
}

#[async_trait]
impl Lifecycle for ClusterLifecycle {
    async fn begin(&mut self, cx: &mut Context) -> anyhow::Result<()> {
        let release = cx.release_or_partial();
        let applier = cx.applier().await?.clone();
        let ns = cx.config.profile.namespace.clone();
        let env = cx.environment().to_string();
        self.applier = Some(applier.clone());
        let id = cx
            .deployment_id
            .clone()
            .context("a run without a deployment id")?;
        let actor = Actor::current();
        let holder = Holder {
            user: actor.user.clone(),
            host: actor.host.clone(),
            deployment_id: id.to_string(),
            since: Utc::now(),
        };
        // A signal while waiting for the lock (watching a lease that ran
        // out, up to its whole duration) stops the run at once: nothing is
        // held yet, nothing to put back.
        let acquire = || {
            crate::interrupt::cancellable(
                "the wait for the deploy lock",
                lease::acquire(
                    applier.client().clone(),
                    &ns,
                    &env,
                    holder.clone(),
                    cx.options.lock_ttl,
                ),
            )
        };
        // The lock first: a run that finds it held has changed nothing,
        // not even the namespace's labels. Only the environment's first
        // run, whose namespace is not there yet, writes before the lock;
        // the namespace is applied again under it with the platform.
        let guard = match acquire().await {
            Err(e) if e.downcast_ref::<lease::NoNamespace>().is_some() => {
                ensure_namespace(&applier, cx, &release).await?;
                acquire().await?
            }
            taken => taken?,
        };
        if let Some(previous) = &guard.taken_over {
            tracing::warn!("took over the expired deploy lock of {previous}");
        }
        // From here every change of every phase asks the lock first.
        applier.set_fence(Some(guard.fence()));
        self.guard = Some(guard);
        let store = SnapshotStore::new(applier.client().clone(), &ns, &env);

        let result: anyhow::Result<()> = async {
            // Three reads at once, one round trip: the id, the snapshots
            // (for runs that died), and the platform as it is.
            let (_, snapshots, mut before) = tokio::try_join!(
                id_still_free(&store, id.as_str()),
                store.list(),
                live::read(&applier, &cx.config.profile),
            )?;
            // A run that died holding the lock left its snapshot in
            // progress: put its users back and close it, so this run starts
            // from one consistent version.
            let dead_runs: Vec<Snapshot> = snapshots
                .into_iter()
                .filter(|s| s.outcome == Outcome::InProgress && s.deployment_id != id)
                .collect();
            // A run whose rollout record says it completed did all its
            // work and lost only its last write (the snapshot's outcome):
            // it is closed as the success it was, not undone.
            let rollouts = if dead_runs.is_empty() {
                record::Record::default()
            } else {
                record::read(applier.client(), &ns).await?
            };
            let (finished, dead_runs): (Vec<Snapshot>, Vec<Snapshot>) = dead_runs
                .into_iter()
                .partition(|d| completed_by_record(&rollouts, d));
            let put_back = !dead_runs.is_empty();
            for mut done in finished {
                tracing::warn!(
                    "deployment {} completed its rollout but its end was never recorded; closing it as succeeded",
                    done.deployment_id
                );
                if done.rollout.is_none() {
                    done.rollout = rollouts.report_of(&done.deployment_id);
                }
                done.target_slot = rollouts.rollout.as_ref().map(|r| r.to);
                done.outcome = Outcome::Succeeded;
                done.finished_at = Some(Utc::now());
                done.failure = None;
                done.after = Some(before.clone());
                store.put(&done).await?;
            }
            for dead in dead_runs {
                tracing::warn!(
                    "deployment {} died mid-run; putting users back where it found them",
                    dead.deployment_id
                );
                put_back_dead_run(
                    cx,
                    &applier,
                    &store,
                    dead,
                    &release,
                    Outcome::Abandoned,
                    format!("interrupted; users put back by {id}"),
                )
                .await?;
            }

            if put_back {
                before = live::read(&applier, &cx.config.profile).await?;
            }
            if let Some(check) = &self.still_holds {
                check(&before).map_err(|why| fail(Kind::Refused, why))?;
            }
            if self.command == "deploy" {
                idle_slot_unreached(cx, &before)?;
            }
            applier.note_users(format!("as this run found them: {}", users_on(&before)));
            let snapshot = Snapshot {
                schema: SCHEMA,
                deployment_id: id.clone(),
                environment: env.clone(),
                command: self.command.to_string(),
                rollback_to: self.rollback_to.clone(),
                actor,
                started_at: Utc::now(),
                finished_at: None,
                outcome: Outcome::InProgress,
                failure: None,
                phases: cx
                    .selection
                    .selected()
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                command_line: cx.options.command_line.clone(),
                release: cx.release().ok(),
                target_slot: None,
                templates: kept_templates(cx.templates()?),
                writes_platform: cx.writes_platform(),
                before: before.clone(),
                after: None,
                infrastructure: None,
                frontend: None,
                ai_config: None,
                database: None,
                monitoring: None,
                image_scan: cx.image_scan.clone(),
                rollout: None,
                layers: cx.layer_records(),
            };
            store.put(&snapshot).await?;
            cx.backend.before = Some(before);
            self.snapshot = Some(snapshot);
            Ok(())
        }
        .await;
        self.store = Some(store);
        if let Err(e) = result {
            applier.set_fence(None);
            if let Some(guard) = self.guard.take() {
                let _ = guard.release().await;
            }
            return Err(e);
        }
        Ok(())
    }

    async fn finish(
        &mut self,
        cx: &mut Context,
        failure: Option<&ErrorReport>,
    ) -> anyhow::Result<()> {
        let (Some(store), Some(mut snapshot)) = (self.store.take(), self.snapshot.take()) else {
            return Ok(());
        };
        let applier = cx.applier().await?.clone();
        // The lock as it is now, not as last seen: a run frozen (SIGSTOP,
        // a suspended laptop) past its lease after its last change asks
        // the server before it writes its outcome (free while the lease
        // is fresh).
        if let Some(guard) = self.guard.as_ref() {
            let _ = guard.fence().check().await;
        }
        // A lock another run holds now (or that ran out while the API
        // server was gone): that run owns the environment. Nothing is put
        // back, nothing written, the lease not touched; the next run
        // finishes this one's snapshot as it finishes any dead run's.
        if let Some(loss) = self.guard.as_ref().and_then(|g| g.fence().loss()) {
            let fence = self.guard.take().map(|g| g.fence());
            let users = format!(
                "users as this run last saw them: {}; `maily-deploy status {}` shows where they are now",
                applier
                    .users_last_seen()
                    .unwrap_or_else(|| "not read yet".into()),
                snapshot.environment
            );
            let told = loss.describe(&snapshot.environment);
            // The phase that met the loss usually said it already.
            if failure.is_some_and(|f| f.message.contains(&told)) {
                return Err(fail(Kind::RollbackFailed, users));
            }
            let why = fence.map_or(told, |f| format!("{:#}", f.loss_error(&loss)));
            return Err(fail(Kind::RollbackFailed, format!("{why}; {users}")));
        }
        // What the run recorded as changed goes back, in order (nothing
        // before shift-traffic: the idle slot is left for inspection).
        let steps = if failure.is_some() && !cx.options.no_rollback {
            cx.undo.clone()
        } else {
            Vec::new()
        };
        let release = cx.release_or_partial();
        let frontend = cx.records.frontend.clone();
        let (frontend, undo_error) =
            undo::put_back(cx, &applier, &steps, &snapshot, &release, frontend).await;
        if let Some(record) = frontend {
            cx.records.frontend = Some(record);
        }
        // An undo can be long (waiting for the old slot's capacity): the
        // lock may have gone meanwhile (`unlock`, then another run). Its
        // new holder owns the environment, this run's snapshot and the
        // rollout record included: nothing more is written.
        if !steps.is_empty()
            && let Some(fence) = self.guard.as_ref().map(|g| g.fence())
        {
            let _ = fence.confirm().await;
            if let Some(loss) = fence.loss() {
                self.guard = None;
                applier.set_fence(None);
                let undo = undo_error.map_or(String::new(), |e| format!("; {e:#}"));
                return Err(fail(
                    Kind::RollbackFailed,
                    format!(
                        "{} while this run was putting things back{undo}; it stopped there, and left its snapshot and the rollout record to the run that holds the lock; `maily-deploy status {}` shows where users are",
                        loss.describe(&snapshot.environment),
                        snapshot.environment
                    ),
                ));
            }
        }
        // Without an API server the state left is not there to read.
        let after: Option<PlatformState> = match health::outage() {
            Some(_) => None,
            None => live::read(&applier, &cx.config.profile).await.ok(),
        };
        snapshot.finished_at = Some(Utc::now());
        snapshot.target_slot = cx.backend.target_slot.or(cx.records.ai_slot);
        snapshot.after = after;
        snapshot.outcome = match (failure, &undo_error) {
            (None, _) => Outcome::Succeeded,
            (Some(_), None) => Outcome::Failed,
            (Some(_), Some(_)) => Outcome::RollbackFailed,
        };
        snapshot.failure = failure.map(|f| f.message.clone());
        snapshot.infrastructure = cx.records.infrastructure.clone();
        // The deployment's Grafana annotation ends here, with the outcome.
        crate::phases::monitor::close_annotation(cx, snapshot.outcome.as_str()).await;
        snapshot.database = match cx.records.database.clone() {
            Some(record) => Some(record),
            // A database step stopped mid-way (a signal, a lost lock) wrote
            // its backup through to the stored snapshot without handing it
            // over: that record is kept, not overwritten with nothing.
            None if cx.selection.is_selected(super::PhaseId::Migrate) || cx.closing_follows => {
                match store.get(snapshot.deployment_id.as_str()).await {
                    Ok(stored) => stored.and_then(|s| s.database),
                    Err(e) => {
                        tracing::warn!("reading back the snapshot's database record: {e:#}");
                        None
                    }
                }
            }
            None => None,
        };
        snapshot.monitoring = cx.records.monitoring.clone();
        snapshot.frontend = cx.records.frontend.clone();
        snapshot.ai_config = cx.records.ai_config.clone();
        snapshot.layers = cx.layer_records();
        // Once shift-traffic began, the rollout record has its part: the
        // report (for a run interrupted mid-step, which never handed it
        // over) and the stage to close.
        let rec = if cx.backend.switched {
            match record::read(applier.client(), &cx.config.profile.namespace).await {
                Ok(rec) => Some(rec),
                Err(e) => {
                    tracing::warn!("reading the rollout record: {e:#}");
                    None
                }
            }
        } else {
            None
        };
        if cx.records.rollout.is_none() {
            cx.records.rollout = rec
                .as_ref()
                .and_then(|r| r.report_of(&snapshot.deployment_id));
        }
        snapshot.rollout = cx.records.rollout.clone();
        let saved = store.put(&snapshot).await;
        // The rollout record says how the rollout ended, for `status` and
        // for a `promote`/`abort` waiting on its answer.
        if let Some(rec) = &rec {
            let stage = match (failure, &undo_error, cx.options.no_rollback) {
                (None, _, _) => Stage::Completed,
                (Some(_), None, false) => Stage::RolledBack,
                _ => Stage::Failed,
            };
            if let Err(e) = record::close(
                applier.client(),
                &cx.config.profile.namespace,
                rec,
                &snapshot.deployment_id,
                stage,
                failure.map(|f| f.message.clone()),
            )
            .await
            {
                tracing::warn!("closing the rollout record: {e:#}");
            }
        }
        if failure.is_none()
            && let Err(e) = store.prune(cx.options.keep_snapshots).await
        {
            tracing::warn!("pruning old snapshots: {e:#}");
        }
        if let Some(guard) = self.guard.take()
            && let Err(e) = guard.release().await
        {
            tracing::warn!("releasing the deploy lock: {e:#}; it expires by itself");
        }
        applier.set_fence(None);
        if let Some(e) = undo_error {
            return Err(fail(
                Kind::RollbackFailed,
                format!(
                    "putting users back failed: {e:#}. Users as this run last saw them: {}. The snapshot {} records where they were; `maily-deploy rollback {} <ID>` once the cluster answers",
                    applier
                        .users_last_seen()
                        .unwrap_or_else(|| "not read yet".into()),
                    snapshot.deployment_id,
                    snapshot.environment
                ),
            ));
        }
        saved.context("recording the outcome in the snapshot")?;
        Ok(())
    }

    fn fence(&self) -> Option<Fence> {
        self.guard.as_ref().map(|g| g.fence())
    }

    fn users_last_seen(&self) -> Option<String> {
        self.applier.as_ref()?.users_last_seen()
    }

    /// A deploy carries over the layers it does not deploy; a rollback
    /// decides its layers from the snapshot it goes back to.
    async fn prepare(&mut self, cx: &mut Context) -> anyhow::Result<()> {
        // A dry run plans without a cluster when none is named; one named
        // wrongly (`--kubeconfig /nonexistent`, `--context nope`) is the
        // configuration's problem, said at the top, not only in the plan.
        if cx.dry_run {
            let named = cx.cluster.named(
                std::env::var_os("KUBECONFIG").as_deref(),
                std::env::var_os("HOME")
                    .is_some_and(|h| std::path::Path::new(&h).join(".kube/config").exists()),
            );
            if let Err(e) = cx.applier().await
                && super::context::dry_run_stops_at(named, crate::error::kind_of(&e))
            {
                return Err(fail(
                    Kind::Config,
                    format!("{e:#}; the plan could not ask the cluster, and nothing was changed"),
                ));
            }
        }
        if self.command == "deploy" {
            // A cluster that cannot route between slots is refused before
            // provision or migrate change anything, and a dry run says so
            // too, when it has a cluster to ask.
            if cx.selection.is_selected(super::PhaseId::DeployBackend)
                || cx.selection.is_selected(super::PhaseId::ShiftTraffic)
            {
                match crate::phases::deploy_backend::preflight(cx).await {
                    Err(e) if crate::error::kind_of(&e) == Some(Kind::Refused) => {
                        return Err(fail(Kind::Refused, format!("{e:#}; nothing was changed")));
                    }
                    // A dry run may have no cluster at hand.
                    Err(_) if cx.dry_run => {}
                    other => other?,
                }
            }
            plan_layers(cx).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::DeploymentId;

    fn id(text: &str) -> DeploymentId {
        DeploymentId::parse("production", text).unwrap()
    }

    fn run(at: &str, outcome: Outcome, writes: bool, platform: Option<&str>) -> Snapshot {
        let mut s = crate::pipeline::snapshot::tests_support::sample();
        s.deployment_id = id(at);
        s.outcome = outcome;
        s.writes_platform = writes;
        s.release = Some(Release {
            environment: "production".into(),
            deployment_id: at.into(),
            image_registry: "ghcr.io/maily".into(),
            image_tag: "v1".into(),
            backup_url: String::new(),
            rollout_timeout_secs: 60,
            digests: Default::default(),
        });
        s.templates.retain(|t| t.scope != Scope::Platform);
        if let Some(text) = platform {
            s.templates.push(Template {
                scope: Scope::Platform,
                file: "platform/10-settings.yaml".into(),
                text: text.into(),
            });
        }
        s
    }

    #[test]
    fn the_platform_goes_back_to_the_newest_good_run_that_wrote_it() {
        let history = vec![
            // Newest first, as listed: a migrate-only run (wrote nothing),
            // a failed deploy, an old snapshot that kept no platform
            // templates, then the one to go back to.
            run(
                "production-20250104-000000",
                Outcome::Succeeded,
                false,
                Some("migrate"),
            ),
            run(
                "production-20250103-000000",
                Outcome::Failed,
                true,
                Some("failed"),
            ),
            run("production-20250102-000000", Outcome::Succeeded, true, None),
            run(
                "production-20250101-000000",
                Outcome::Succeeded,
                true,
                Some("good"),
            ),
        ];
        let (templates, _) = platform_before(&history, &id("production-20250105-000000"))
            .expect("a run to go back to");
        assert_eq!(templates.len(), 1);
        assert_eq!(templates[0].text, "good");
        // Nothing before the first deploy.
        assert!(platform_before(&history, &id("production-20250101-000000")).is_none());
    }

    #[test]
    fn a_dead_run_has_the_platform_put_back_only_if_it_was_to_write_it() {
        let writer = run(
            "production-20250101-000000",
            Outcome::InProgress,
            true,
            None,
        );
        assert_eq!(dead_run_steps(&writer), undo::EVERYTHING);
        let migrate_only = run(
            "production-20250101-000000",
            Outcome::InProgress,
            false,
            None,
        );
        assert_eq!(
            dead_run_steps(&migrate_only),
            [undo::Undo::Routes, undo::Undo::Frontend]
        );
    }
}
