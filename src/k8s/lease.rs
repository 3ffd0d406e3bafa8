//! The deploy lock: one Kubernetes Lease per environment.
//!
//! Taken at the start of a run, renewed while it lives, released at its
//! end. A live holder makes a second run fail at once, naming who holds it;
//! an expired one (a run killed without releasing) is taken over. Whether
//! to take, wait or refuse is a pure function of the Lease and the clock.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::{retry, status_code};
use crate::error::{Kind, fail};

pub const LEASE_NAME: &str = "maily-deploy";
const HOLDER_ANNOTATION: &str = "maily.ai/holder";

/// How long a lease lives without renewal; renewed every third of it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// Who holds the lock, as the refusal tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub user: String,
    pub host: String,
    pub deployment_id: String,
    pub since: DateTime<Utc>,
}

impl Holder {
    pub fn identity(&self) -> String {
        format!("{}@{} {}", self.user, self.host, self.deployment_id)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{} (deployment {}, since {})",
            self.user,
            self.host,
            self.deployment_id,
            self.since.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// What to do about an existing Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No lease: create it.
    Create,
    /// A lease nobody holds or whose holder stopped renewing: take it.
    TakeOver { previous: Option<Holder> },
    /// Held and alive: refuse.
    Held {
        holder: Holder,
        expires: DateTime<Utc>,
    },
}

/// k8s-openapi keeps times as `jiff` timestamps; the tool speaks chrono.
fn micro(t: DateTime<Utc>) -> MicroTime {
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros()).unwrap_or_default(),
    )
}

fn from_micro(t: &MicroTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(t.0.as_microsecond())
}

fn holder_of(lease: &Lease) -> Option<Holder> {
    let text = lease
        .metadata
        .annotations
        .as_ref()?
        .get(HOLDER_ANNOTATION)?;
    serde_json::from_str(text).ok()
}

/// When a lease stops counting: its last renewal plus its duration.
pub fn expiry(lease: &Lease) -> Option<DateTime<Utc>> {
    let spec = lease.spec.as_ref()?;
    let renewed = from_micro(spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?)?;
    let secs = i64::from(spec.lease_duration_seconds?);
    Some(renewed + chrono::Duration::seconds(secs))
}

/// Decide about the lease as found at `now`.
pub fn decide(found: Option<&Lease>, now: DateTime<Utc>) -> Decision {
    let Some(lease) = found else {
        return Decision::Create;
    };
    let holder_set = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .is_some_and(|h| !h.is_empty());
    match (holder_set, expiry(lease)) {
        (true, Some(expires)) if expires > now => Decision::Held {
            holder: holder_named(lease, now),
            expires,
        },
        _ => Decision::TakeOver {
            previous: holder_of(lease),
        },
    }
}

/// Who holds `lease`, as the refusal tells it: its holder annotation, or
/// its bare `holderIdentity` when another tool wrote it.
fn holder_named(lease: &Lease, now: DateTime<Utc>) -> Holder {
    holder_of(lease).unwrap_or_else(|| Holder {
        user: "unknown".into(),
        host: "unknown".into(),
        deployment_id: lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default(),
        since: now,
    })
}

fn lease_for(holder: &Holder, ttl: Duration, base: Option<&Lease>, now: DateTime<Utc>) -> Lease {
    let transitions = base
        .and_then(|l| l.spec.as_ref()?.lease_transitions)
        .map_or(0, |t| t + 1);
    Lease {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.into()),
            resource_version: base.and_then(|l| l.metadata.resource_version.clone()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "maily-deploy".to_string(),
                )]
                .into(),
            ),
            annotations: Some(
                [(
                    HOLDER_ANNOTATION.to_string(),
                    serde_json::to_string(holder).unwrap_or_default(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.identity()),
            // The command line bounds the TTL (`cli::MAX_LOCK_TTL`); never
            // wrap into a negative int32 whatever the caller passes.
            lease_duration_seconds: Some(i32::try_from(ttl.as_secs().max(1)).unwrap_or(i32::MAX)),
            acquire_time: Some(micro(now)),
            renew_time: Some(micro(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
    }
}

/// The refusal when someone else holds the lock.
fn held_error(environment: &str, holder: &Holder, expires: DateTime<Utc>) -> anyhow::Error {
    fail(
        Kind::LockHeld,
        format!(
            "another run holds the deploy lock of {environment}: {holder}; it expires at {} unless renewed. Wait for it, or if that run is dead, `maily-deploy unlock {environment}`",
            expires.format("%H:%M:%S UTC")
        ),
    )
}

/// Why a run no longer holds its lock. From then on it must not change
/// anything: another run may own the environment, and whatever this run
/// would put back could be that run's release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// Another run took the lease (after it expired).
    TakenOver(Holder),
    /// The lease was deleted (`maily-deploy unlock`).
    Removed,
    /// The API server stopped answering and the lease ran out unrenewed.
    Expired(super::client::health::Outage),
    /// The API server answered but refused every renewal (RBAC changed
    /// mid-run, an admission webhook) until the lease ran out.
    Refused(String),
}

impl Loss {
    /// What happened, for the run's error.
    pub fn describe(&self, environment: &str) -> String {
        match self {
            Loss::TakenOver(holder) => {
                format!("the deploy lock of {environment} was taken over by {holder}")
            }
            Loss::Removed => {
                format!("the deploy lock of {environment} was removed (`maily-deploy unlock`)")
            }
            Loss::Expired(outage) => {
                format!("{outage}, and the deploy lock of {environment} expired unrenewed")
            }
            Loss::Refused(why) => format!(
                "the API server refused every renewal of the deploy lock of {environment} until it ran out ({why}), so another run may hold it now"
            ),
        }
    }
}

/// The lock as the run's changes see it: every change asks [`Fence::check`]
/// first. The background renewal keeps the answer cheap; a run that was
/// stopped (SIGSTOP, a frozen VM, a starved runtime) past its lease renews
/// before its next change, and learns there that another run took over,
/// instead of overwriting that run.
#[derive(Clone)]
pub struct Fence(std::sync::Arc<FenceInner>);

struct FenceInner {
    api: Api<Lease>,
    environment: String,
    me: Holder,
    ttl: Duration,
    /// The lease as last written by this run (its resourceVersion is the
    /// precondition of the next renewal).
    lease: tokio::sync::Mutex<Lease>,
    /// When the last renewal that succeeded was sent.
    renewed: std::sync::Mutex<Stamp>,
    lost: watch::Sender<Option<Loss>>,
}

impl Fence {
    fn new(api: Api<Lease>, environment: &str, me: Holder, ttl: Duration, lease: Lease) -> Fence {
        Fence(std::sync::Arc::new(FenceInner {
            api,
            environment: environment.to_string(),
            me,
            ttl,
            lease: tokio::sync::Mutex::new(lease),
            renewed: std::sync::Mutex::new(Stamp::now()),
            lost: watch::channel(None).0,
        }))
    }

    /// Why the lock is lost, once it is.
    pub fn loss(&self) -> Option<Loss> {
        self.0.lost.borrow().clone()
    }

    /// Follows the loss as it happens.
    pub fn subscribe(&self) -> watch::Receiver<Option<Loss>> {
        self.0.lost.subscribe()
    }

    fn since_renewal(&self) -> Duration {
        self.0
            .renewed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// `Ok` when this run may change things now: the lock is still its own.
    pub async fn check(&self) -> anyhow::Result<()> {
        if self.loss().is_none() && self.since_renewal() >= self.0.ttl / 2 {
            self.renew().await;
        }
        match self.loss() {
            None => Ok(()),
            Some(loss) => Err(self.loss_error(&loss)),
        }
    }

    /// The error a change refused for a lost lock carries.
    pub fn loss_error(&self, loss: &Loss) -> anyhow::Error {
        fail(
            Kind::RollbackFailed,
            format!(
                "{}; this run stopped changing things at once and put nothing back",
                loss.describe(&self.0.environment)
            ),
        )
    }

    /// `Ok` when the lock is still this run's, asked of the API server now
    /// whatever the last renewal: after a long step (an undo that waited
    /// for pods) where someone may have removed or taken the lock in less
    /// than a lease duration (`unlock`, then another run).
    pub async fn confirm(&self) -> anyhow::Result<()> {
        self.renew_now(true).await;
        match self.loss() {
            None => Ok(()),
            Some(loss) => Err(self.loss_error(&loss)),
        }
    }

    /// Renew the lease, or find out why it cannot be.
    async fn renew(&self) {
        self.renew_now(false).await
    }

    /// [`Fence::renew`]; `always` renews even a lease renewed a moment ago.
    async fn renew_now(&self, always: bool) {
        let mut lease = self.0.lease.lock().await;
        // Renewed by someone else (the renewer, another change) while this
        // one waited for the lease's mutex.
        if self.loss().is_some() || (!always && self.since_renewal() < self.0.ttl / 3) {
            return;
        }
        let sent = Stamp::now();
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(micro(Utc::now()));
        }
        let pp = PostParams::default();
        let api = &self.0.api;
        let result = retry("renewing the lease", || {
            api.replace(LEASE_NAME, &pp, &lease)
        })
        .await;
        let loss = match result {
            Ok(renewed) => {
                *lease = renewed;
                *self.0.renewed.lock().unwrap_or_else(|e| e.into_inner()) = sent;
                None
            }
            Err(e) if super::client::health::unanswered(&e) => {
                expired(self.since_renewal(), self.0.ttl)
            }
            // Replaced after our expiry (409) or deleted (404): read who
            // holds it now.
            Err(e) => match retry("reading the lease", || api.get_opt(LEASE_NAME)).await {
                Ok(None) => Some(Loss::Removed),
                Ok(Some(now)) => match holder_of(&now) {
                    Some(h) if h == self.0.me => {
                        // Still ours. A renewal that landed but whose answer
                        // was lost shows our renewTime: renewed. Otherwise
                        // the update was refused, and the lease runs out
                        // unrenewed however often it is read back.
                        let sent_time = lease.spec.as_ref().and_then(|s| s.renew_time.clone());
                        let landed = sent_time.is_some()
                            && now.spec.as_ref().and_then(|s| s.renew_time.clone()) == sent_time;
                        *lease = now;
                        if landed {
                            *self.0.renewed.lock().unwrap_or_else(|e| e.into_inner()) = sent;
                            None
                        } else if self.since_renewal() >= self.0.ttl {
                            Some(Loss::Refused(e.to_string()))
                        } else {
                            tracing::warn!("renewing the deploy lock: {e}; trying again");
                            None
                        }
                    }
                    Some(h) => Some(Loss::TakenOver(h)),
                    None => {
                        tracing::debug!("renewing the lease: {e}");
                        Some(Loss::Removed)
                    }
                },
                Err(_) => expired(self.since_renewal(), self.0.ttl),
            },
        };
        if let Some(loss) = loss {
            tracing::error!("{}", loss.describe(&self.0.environment));
            // `send_replace`: kept whether or not anyone is subscribed
            // (`send` drops the value when no receiver is alive, and the
            // loss would be forgotten between phases).
            self.0.lost.send_replace(Some(loss));
        }
    }
}

/// A moment on two clocks. The monotonic one stands still while a laptop
/// sleeps (Linux's `CLOCK_MONOTONIC`, macOS's uptime clock, both behind
/// `Instant`), so a run woken hours later would think its lease fresh and
/// write without renewing; the wall clock goes on through sleep. Time since
/// a stamp is the longer of the two: a wall clock stepped back leaves the
/// monotonic one, a step forward only renews early.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    mono: std::time::Instant,
    wall: std::time::SystemTime,
}

impl Stamp {
    fn now() -> Stamp {
        Stamp {
            mono: std::time::Instant::now(),
            wall: std::time::SystemTime::now(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.elapsed_at(std::time::Instant::now(), std::time::SystemTime::now())
    }

    fn elapsed_at(&self, mono: std::time::Instant, wall: std::time::SystemTime) -> Duration {
        let on_wall = wall.duration_since(self.wall).unwrap_or_default();
        mono.saturating_duration_since(self.mono).max(on_wall)
    }
}

/// A lease unrenewed for its whole duration while the API server did not
/// answer: another run may hold it by now, so it counts as lost.
fn expired(since_renewal: Duration, ttl: Duration) -> Option<Loss> {
    (since_renewal >= ttl).then(|| {
        Loss::Expired(
            super::client::health::outage().unwrap_or(super::client::health::Outage {
                since: Utc::now() - chrono::Duration::from_std(since_renewal).unwrap_or_default(),
                failed_requests: 0,
            }),
        )
    })
}

/// A held lock: renewed in the background until released or dropped.
pub struct LeaseGuard {
    fence: Fence,
    renewer: JoinHandle<()>,
    pub taken_over: Option<Holder>,
}

impl LeaseGuard {
    /// The lock as every change checks it.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Release the lock, if it is still ours. A lock another run holds now
    /// is that run's: never deleted from here.
    pub async fn release(self) -> anyhow::Result<()> {
        self.renewer.abort();
        if self.fence.loss().is_some() {
            return Ok(());
        }
        let api = &self.fence.0.api;
        // First as this run last wrote it: the delete's preconditions make
        // sure it is still exactly that, so one round trip in the usual
        // case. Anything else (409) is read and judged.
        let last = self.fence.0.lease.lock().await.clone();
        if delete_exactly(api, &last).await? != Deleted::Changed {
            return Ok(());
        }
        let current = retry("reading the lease", || api.get_opt(LEASE_NAME)).await?;
        if let Some(lease) = current
            && holder_of(&lease).as_ref() == Some(&self.fence.0.me)
        {
            // Changed again meanwhile: whoever did it owns it now.
            delete_exactly(api, &lease).await?;
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Deleted {
    /// Deleted, or already gone.
    Gone,
    /// Not that version any more (409): left as it is.
    Changed,
}

/// Delete the lease only if it is still exactly `lease` (uid and
/// resourceVersion as preconditions).
async fn delete_exactly(api: &Api<Lease>, lease: &Lease) -> anyhow::Result<Deleted> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: lease.metadata.resource_version.clone(),
            uid: lease.metadata.uid.clone(),
        }),
        ..Default::default()
    };
    match retry("releasing the lease", || api.delete(LEASE_NAME, &dp)).await {
        Ok(_) => Ok(Deleted::Gone),
        Err(e) if matches!(status_code(&e), Some(404)) => Ok(Deleted::Gone),
        Err(e) if matches!(status_code(&e), Some(409)) => Ok(Deleted::Changed),
        Err(e) => Err(e).context("releasing the deploy lock"),
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// The lease's namespace does not exist: the environment's first run,
/// which makes it (nobody can hold a lock there) and asks again.
#[derive(Debug, thiserror::Error)]
#[error("namespace {0} does not exist yet")]
pub struct NoNamespace(pub String);

/// How far apart two machines' clocks may be. A lease judged expired by
/// its holder's renewal time is taken over at once only when it ran out
/// longer ago than this; one that ran out lately may belong to a live run
/// whose clock is behind, and is watched for a renewal first.
pub const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Whether `lease` ran out within [`CLOCK_SKEW`] of `now`.
fn ran_out_lately(lease: &Lease, now: DateTime<Utc>) -> bool {
    expiry(lease).is_some_and(|e| e > now - CLOCK_SKEW)
}

/// The lease's own duration, bounded as an outside input.
fn ttl_of(lease: &Lease) -> Duration {
    let secs = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(0)
        .clamp(1, 600);
    Duration::from_secs(secs as u64)
}

/// What watching a lease that ran out lately found.
enum Watched {
    /// Renewed, or taken by another run: alive, as it is now.
    Renewed(Box<Lease>),
    /// Released meanwhile.
    Gone,
    /// Unchanged for its whole duration: its run is dead.
    Unchanged,
}

/// Watches `seen` for one lease duration, timed by this machine's clock
/// alone (as client-go's leader election judges a lease): a run that is
/// alive renews within a third of it, whatever its clock says.
async fn watch_for_renewal(
    api: &Api<Lease>,
    environment: &str,
    seen: &Lease,
) -> anyhow::Result<Watched> {
    let ttl = ttl_of(seen);
    tracing::warn!(
        "the deploy lock of {environment} ran out by the clock of the run that holds it ({}); watching it for {}s in case that run is alive on a clock behind this one",
        holder_of(seen).map_or_else(|| "unknown".into(), |h| h.to_string()),
        ttl.as_secs()
    );
    let every = (ttl / 10).clamp(Duration::from_millis(200), Duration::from_secs(2));
    let until = tokio::time::Instant::now() + ttl;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(every).await;
        let now = retry("reading the lease", || api.get_opt(LEASE_NAME)).await?;
        match now {
            None => return Ok(Watched::Gone),
            Some(l) if l.metadata.resource_version != seen.metadata.resource_version => {
                return Ok(Watched::Renewed(Box::new(l)));
            }
            Some(_) => {}
        }
    }
    Ok(Watched::Unchanged)
}

/// Take the environment's lock, or fail at once with the holder named.
pub async fn acquire(
    client: Client,
    namespace: &str,
    environment: &str,
    me: Holder,
    ttl: Duration,
) -> anyhow::Result<LeaseGuard> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    // The last run deleted the lease as it ended, so the first try creates
    // it without reading: one round trip. A lease that is there answers
    // 409 and is read. Then two tries: a race lost to another run on
    // create or takeover is re-judged against what that run wrote.
    for attempt in 0..3 {
        let found = if attempt == 0 {
            None
        } else {
            retry("reading the lease", || api.get_opt(LEASE_NAME)).await?
        };
        let now = Utc::now();
        let (result, previous) = match decide(found.as_ref(), now) {
            Decision::Held { holder, expires } => {
                return Err(held_error(environment, &holder, expires));
            }
            Decision::Create => {
                let lease = lease_for(&me, ttl, None, now);
                let pp = PostParams::default();
                (
                    retry("taking the lease", || api.create(&pp, &lease)).await,
                    None,
                )
            }
            Decision::TakeOver { previous } => {
                if let Some(seen) = found.as_ref().filter(|l| ran_out_lately(l, now)) {
                    match watch_for_renewal(&api, environment, seen).await? {
                        Watched::Gone => continue,
                        // Expired by this machine's clock, renewed all the
                        // same: its run lives on a clock behind this one.
                        Watched::Renewed(lease) => {
                            let holder = holder_named(&lease, Utc::now());
                            let expires = Utc::now() + ttl_of(&lease);
                            return Err(held_error(environment, &holder, expires));
                        }
                        Watched::Unchanged => {}
                    }
                }
                let lease = lease_for(&me, ttl, found.as_ref(), now);
                let pp = PostParams::default();
                (
                    retry("taking over the lease", || {
                        api.replace(LEASE_NAME, &pp, &lease)
                    })
                    .await,
                    previous,
                )
            }
        };
        match result {
            Ok(lease) => {
                let fence = Fence::new(api.clone(), environment, me.clone(), ttl, lease);
                let renewer = tokio::spawn(renew(fence.clone()));
                return Ok(LeaseGuard {
                    fence,
                    renewer,
                    taken_over: previous,
                });
            }
            Err(e) if matches!(status_code(&e), Some(409)) => continue,
            // A create answered 404: the namespace is not there yet.
            Err(e) if matches!(status_code(&e), Some(404)) && found.is_none() => {
                return Err(anyhow::Error::new(NoNamespace(namespace.to_owned())));
            }
            Err(e) => return Err(e).context("taking the deploy lock"),
        }
    }
    let found = retry("reading the lease", || api.get_opt(LEASE_NAME)).await?;
    match decide(found.as_ref(), Utc::now()) {
        Decision::Held { holder, expires } => Err(held_error(environment, &holder, expires)),
        _ => Err(fail(
            Kind::LockHeld,
            format!("the deploy lock of {environment} is contended; try again"),
        )),
    }
}

/// Renew every third of the TTL (every second while the API server does not
/// answer, so the lease is kept the moment it is back) until the lock is
/// lost.
async fn renew(fence: Fence) {
    loop {
        let every = if super::client::health::outage().is_some() {
            Duration::from_secs(1).min(fence.0.ttl / 3)
        } else {
            fence.0.ttl / 3
        };
        tokio::time::sleep(every).await;
        fence.renew().await;
        if fence.loss().is_some() {
            return;
        }
    }
}

/// A lock held and alive, as read: what `unlock` shows and then removes.
pub struct HeldLock {
    pub holder: Holder,
    pub expires: DateTime<Utc>,
    lease: Lease,
}

/// Delete the lease `unlock` showed, and only that one: if it changed
/// while the operator confirmed (the holder renewed it, or it expired and
/// a new run took it), nothing is removed and the error names who holds
/// it now.
pub async fn force_unlock(
    client: Client,
    namespace: &str,
    environment: &str,
    shown: &HeldLock,
) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    if delete_exactly(&api, &shown.lease).await? == Deleted::Gone {
        return Ok(());
    }
    let now = retry("reading the lease", || api.get_opt(LEASE_NAME)).await?;
    let who = match decide(now.as_ref(), Utc::now()) {
        Decision::Held { holder, expires } => format!(
            "it is held by {holder} until {}",
            expires.format("%H:%M:%S UTC")
        ),
        _ => "it has expired since".to_owned(),
    };
    Err(fail(
        Kind::LockHeld,
        format!(
            "the deploy lock of {environment} changed while you confirmed ({who}); nothing was removed: that run renewed it, so it is alive; run unlock again only if it is dead"
        ),
    ))
}

/// The current holder, if the lease is held and alive.
pub async fn current(
    client: Client,
    namespace: &str,
) -> anyhow::Result<Option<(Holder, DateTime<Utc>)>> {
    Ok(held(client, namespace)
        .await?
        .map(|h| (h.holder, h.expires)))
}

/// The lock, if the lease is held and alive, with the lease as read.
pub async fn held(client: Client, namespace: &str) -> anyhow::Result<Option<HeldLock>> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let found = retry("reading the lease", || api.get_opt(LEASE_NAME)).await?;
    Ok(match (decide(found.as_ref(), Utc::now()), found) {
        (Decision::Held { holder, expires }, Some(lease)) => Some(HeldLock {
            holder,
            expires,
            lease,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Holder {
        Holder {
            user: "ada".into(),
            host: "ci-runner-7".into(),
            deployment_id: "production-20250101-120000".into(),
            since: "2025-01-01T12:00:00Z".parse().unwrap(),
        }
    }

    fn lease(renewed: &str, ttl: i32) -> Lease {
        let now: DateTime<Utc> = renewed.parse().unwrap();
        let mut l = lease_for(&me(), Duration::from_secs(ttl as u64), None, now);
        l.metadata.resource_version = Some("7".into());
        l
    }

    #[test]
    fn time_asleep_counts_since_a_renewal() {
        let t = Stamp::now();
        let hour = Duration::from_secs(3600);
        // A laptop lid closed for an hour: the monotonic clock moved a
        // second, the wall clock an hour.
        let woke = t.elapsed_at(t.mono + Duration::from_secs(1), t.wall + hour);
        assert_eq!(woke, hour);
        // A wall clock stepped back: the monotonic clock still counts.
        let stepped = t.elapsed_at(
            t.mono + Duration::from_secs(20),
            t.wall - Duration::from_secs(300),
        );
        assert_eq!(stepped, Duration::from_secs(20));
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, Utc::now()), Decision::Create);
    }

    #[test]
    fn a_live_lease_is_refused_with_its_holder() {
        let l = lease("2025-01-01T12:00:00Z", 30);
        let now = "2025-01-01T12:00:20Z".parse().unwrap();
        match decide(Some(&l), now) {
            Decision::Held { holder, expires } => {
                assert_eq!(holder, me());
                assert_eq!(
                    expires,
                    "2025-01-01T12:00:30Z".parse::<DateTime<Utc>>().unwrap()
                );
                let msg = held_error("production", &holder, expires).to_string();
                assert!(msg.contains("ada@ci-runner-7 (deployment production-20250101-120000, since 2025-01-01 12:00:00 UTC)"), "{msg}");
                assert!(msg.contains("maily-deploy unlock production"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_expired_lease_is_taken_over_naming_the_old_holder() {
        let l = lease("2025-01-01T12:00:00Z", 30);
        let now = "2025-01-01T12:00:31Z".parse().unwrap();
        assert_eq!(
            decide(Some(&l), now),
            Decision::TakeOver {
                previous: Some(me())
            }
        );
    }

    #[test]
    fn a_released_lease_without_holder_is_taken() {
        let mut l = lease("2025-01-01T12:00:00Z", 30);
        l.spec.as_mut().unwrap().holder_identity = None;
        let now = "2025-01-01T12:00:01Z".parse().unwrap();
        assert!(matches!(decide(Some(&l), now), Decision::TakeOver { .. }));
    }

    #[test]
    fn a_takeover_counts_a_transition_and_keeps_the_version_for_the_race() {
        let old = lease("2025-01-01T12:00:00Z", 30);
        let new = lease_for(&me(), DEFAULT_TTL, Some(&old), Utc::now());
        assert_eq!(new.spec.unwrap().lease_transitions, Some(1));
        assert_eq!(new.metadata.resource_version.as_deref(), Some("7"));
    }
}
