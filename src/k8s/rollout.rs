//! Is a rollout done, still going, or failed, and why: pure functions over
//! the Deployment, its ReplicaSets and their Pods.
//!
//! The watcher that feeds these knows nothing about policy; these know
//! nothing about watching. "Done" follows `kubectl rollout status`
//! (kubectl's `DeploymentStatusViewer`): the controller has observed the
//! current generation, every replica is updated and available, and no old
//! replica is left. "Failed" is where we part from `helm --wait`: a new pod
//! that reports a waiting reason the kubelet will not recover from on its own
//! fails the rollout at once, instead of waiting out a timeout.

use std::borrow::Borrow;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

/// Waiting reasons of a container that mean the rollout will not finish by
/// itself (kubelet's `ErrImagePull`, `ImagePullBackOff`, `CrashLoopBackOff`,
/// `CreateContainerConfigError`, and their kin). A failed pull whose cause
/// reads as passing (a registry timing out or answering 503) is the
/// exception: see [`pull_cause`].
pub const FATAL_WAITING_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "RegistryUnavailable",
    "SignatureValidationFailed",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Why a rollout failed, naming what a person would look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutFailure {
    pub deployment: String,
    /// The pod that showed the failure, when one did.
    pub pod: Option<String>,
    /// The container in that pod.
    pub container: Option<String>,
    /// Kubernetes' reason: `ImagePullBackOff`, `ProgressDeadlineExceeded`, ...
    pub reason: String,
    pub message: String,
}

impl std::fmt::Display for RolloutFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "deployment {}", self.deployment)?;
        if let Some(pod) = &self.pod {
            write!(f, ", pod {pod}")?;
        }
        if let Some(c) = &self.container {
            write!(f, ", container {c}")?;
        }
        write!(f, ": {}", self.reason)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    /// Still going; the text says what it waits for.
    Progressing(String),
    Complete,
    Failed(RolloutFailure),
}

fn name_of(d: &Deployment) -> String {
    d.metadata.name.clone().unwrap_or_default()
}

/// The Deployment's own verdict, from its status alone, for a wait that
/// began at `began` (seconds since the epoch; 0: unknown). A
/// `ProgressDeadlineExceeded` last updated before
/// then is an earlier run's verdict: Kubernetes keeps it on a Deployment
/// whose template did not change (a rerun after the cause was fixed
/// outside) until progress resumes, so it is not this wait's failure. This
/// wait's own deadline still bounds it.
pub fn deployment_state(d: &Deployment, began: i64) -> RolloutState {
    let name = name_of(d);
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = &d.status else {
        return RolloutState::Progressing("waiting for the controller to report a status".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return RolloutState::Progressing("waiting for the new spec to be observed".into());
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    if let Some(c) = conditions.iter().find(|c| {
        c.type_ == "Progressing"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            && c.last_update_time
                .as_ref()
                .is_none_or(|t| t.0.as_second() >= began)
    }) {
        return RolloutState::Failed(RolloutFailure {
            deployment: name,
            pod: None,
            container: None,
            reason: "ProgressDeadlineExceeded".into(),
            message: c.message.clone().unwrap_or_default(),
        });
    }
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
    {
        return RolloutState::Failed(RolloutFailure {
            deployment: name,
            pod: None,
            container: None,
            reason: c.reason.clone().unwrap_or_else(|| "ReplicaFailure".into()),
            message: c.message.clone().unwrap_or_default(),
        });
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        return RolloutState::Progressing(format!("{updated} of {want} new replicas updated"));
    }
    if replicas > updated {
        return RolloutState::Progressing(format!(
            "{} old replicas pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return RolloutState::Progressing(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    RolloutState::Complete
}

/// The template of a ReplicaSet without its `pod-template-hash` label, to
/// compare with the Deployment's (the controller's `EqualIgnoreHash`).
fn template_without_hash(rs: &ReplicaSet) -> Option<serde_json::Value> {
    let mut t = serde_json::to_value(rs.spec.as_ref()?.template.as_ref()?).ok()?;
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(|l| l.as_object_mut())
    {
        labels.remove("pod-template-hash");
        if labels.is_empty() {
            t["metadata"].as_object_mut()?.remove("labels");
        }
    }
    Some(t)
}

/// The ReplicaSet of the Deployment's current template, among `sets`.
pub fn new_replica_set<'a, S: Borrow<ReplicaSet>>(
    d: &Deployment,
    sets: &'a [S],
) -> Option<&'a ReplicaSet> {
    let uid = d.metadata.uid.as_deref()?;
    let want = serde_json::to_value(&d.spec.as_ref()?.template).ok()?;
    let owned = |rs: &&ReplicaSet| {
        rs.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.controller == Some(true))
    };
    let revision = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned()
    };
    // The controller writes the revision annotation when it syncs: until it
    // has observed the current generation, the annotation names the
    // previous ReplicaSet, whose failing pods are not this rollout's.
    let observed = d
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .is_some_and(|o| Some(o) >= d.metadata.generation);
    let sets = || sets.iter().map(Borrow::borrow);
    sets()
        .filter(owned)
        .find(|rs| template_without_hash(rs).as_ref() == Some(&want))
        // A server that defaults template fields on the ReplicaSet alone
        // would defeat the comparison; the revision annotation still tells.
        .or_else(|| {
            if !observed {
                return None;
            }
            let want = revision(&d.metadata)?;
            sets()
                .filter(owned)
                .find(|rs| revision(&rs.metadata).as_deref() == Some(want.as_str()))
        })
}

/// The annotation the Deployment controller keeps on a Deployment and its
/// ReplicaSets, equal on the current pair.
const REVISION: &str = "deployment.kubernetes.io/revision";

/// The first fatal waiting reason among a pod's containers, if any.
pub fn pod_failure(pod: &Pod) -> Option<(String, String, String)> {
    let status = pod.status.as_ref()?;
    let all = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for cs in all {
        let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
        if let Some(w) = waiting
            && let Some(reason) = w.reason.as_deref()
            && FATAL_WAITING_REASONS.contains(&reason)
        {
            let mut message = w.message.clone().unwrap_or_default();
            if reason == "CrashLoopBackOff" {
                let exit = cs
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| {
                        format!(
                            " (last exit code {}, {} restarts)",
                            t.exit_code, cs.restart_count
                        )
                    })
                    .unwrap_or_else(|| format!(" ({} restarts)", cs.restart_count));
                message.push_str(&exit);
            }
            return Some((cs.name.clone(), reason.to_string(), message));
        }
    }
    None
}

/// What a failed image pull's message says of its cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullCause {
    /// The image or the node's access to it is wrong: not found, denied,
    /// no build for the node's platform, a bad signature. Pulling again
    /// gets the same answer.
    Lasting,
    /// The registry or the way to it failed this time: a timeout, a reset
    /// connection, a 5xx or 429. The kubelet pulls again by itself.
    Passing,
    /// The message does not say: treated as lasting, so a rollout that
    /// will not finish still fails at once.
    Unknown,
}

/// Substrings of a pull error that mean the image, or the node's right to
/// it, is wrong (containerd, CRI-O and registry wording). Checked before
/// the passing ones: "401 Unauthorized ... timeout" is still a 401. Words,
/// not status numbers: a digest in the message is full of digits.
const LASTING_PULL_CAUSES: &[&str] = &[
    "not found",
    "manifest unknown",
    "name unknown",
    "unauthorized",
    "forbidden",
    "denied",
    "no match for platform",
    "invalid reference",
    "signature",
];

/// Substrings of a pull error that mean the registry or the network failed
/// this time.
const PASSING_PULL_CAUSES: &[&str] = &[
    "registry is unavailable",
    "i/o timeout",
    "timed out",
    "timeout",
    "deadline exceeded",
    "connection refused",
    "connection reset",
    "broken pipe",
    "tls handshake",
    "temporary failure in name resolution",
    "network is unreachable",
    "no route to host",
    "too many requests",
    "toomanyrequests",
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway",
    "unexpected eof",
    ": eof",
];

/// The cause of a failed pull, from the waiting `reason` and `message`:
/// `ErrImagePull`'s message is the runtime's error; `ImagePullBackOff`'s is
/// `Back-off pulling image "…": <the last pull's error>` on kubelets that
/// keep it (1.34 does), else only the image, which says nothing.
pub fn pull_cause(reason: &str, message: &str) -> PullCause {
    match reason {
        "RegistryUnavailable" => return PullCause::Passing,
        "ErrImagePull" | "ImagePullBackOff" => {}
        _ => return PullCause::Lasting,
    }
    let cause = match reason {
        // The image between the quotes is no cause.
        "ImagePullBackOff" => match message.split_once("\": ") {
            Some((_, cause)) => cause,
            None => return PullCause::Unknown,
        },
        _ => message,
    };
    // Quoted image references are no cause either ("…/timeout-svc").
    let cause: String = cause
        .split('"')
        .step_by(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    if LASTING_PULL_CAUSES.iter().any(|c| cause.contains(c)) {
        PullCause::Lasting
    } else if PASSING_PULL_CAUSES.iter().any(|c| cause.contains(c)) {
        PullCause::Passing
    } else {
        PullCause::Unknown
    }
}

/// How long a new pod may wait for a node before its rollout fails, and
/// the time to judge at.
///
/// A pod the scheduler cannot place (`PodScheduled=False`, `Unschedulable`:
/// "0/3 nodes are available: 3 Insufficient cpu") will not be placed by
/// waiting, unless a cluster autoscaler is adding a node: the grace
/// (`UNSCHEDULABLE_GRACE`) is that wait, and past it the rollout fails
/// instead of sitting out its progress deadline.
///
/// A pull that failed for a passing cause ([`PullCause::Passing`]) is
/// pulled again by the kubelet: the pod is given `IMAGE_PULL_GRACE` from
/// its creation before its rollout fails.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub graces: Graces,
    /// Seconds since the Unix epoch.
    pub now: i64,
    /// When the wait began (seconds since the epoch; 0: unknown): verdicts
    /// the Deployment carries from before are not this wait's.
    pub began: i64,
}

impl Patience {
    /// These graces, judged now.
    pub fn now(graces: Graces) -> Patience {
        Patience {
            graces,
            now: chrono::Utc::now().timestamp(),
            began: 0,
        }
    }
}

/// How long a rollout bears what may pass by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Graces {
    /// `UNSCHEDULABLE_GRACE`: a new pod no node takes.
    pub unschedulable: std::time::Duration,
    /// `IMAGE_PULL_GRACE`: a new pod whose pulls fail for a passing cause.
    pub image_pull: std::time::Duration,
}

impl Default for Graces {
    fn default() -> Self {
        Graces {
            unschedulable: DEFAULT_UNSCHEDULABLE_GRACE,
            image_pull: DEFAULT_IMAGE_PULL_GRACE,
        }
    }
}

/// The default of `UNSCHEDULABLE_GRACE`: a scheduler's verdict is seconds
/// old by the time it is seen, and a cluster without an autoscaler never
/// changes it.
pub const DEFAULT_UNSCHEDULABLE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// The default of `IMAGE_PULL_GRACE`: the kubelet pulls again after 10 s,
/// 20 s, 40 s; two minutes is three more tries.
pub const DEFAULT_IMAGE_PULL_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// The graces of a run's variables (validated as durations by then; unset
/// means the defaults).
pub fn graces(vars: &crate::config::Vars) -> Graces {
    let get = |name: &str, default| {
        vars.get(name)
            .and_then(|v| crate::config::spec::duration_of(name, Some(v)).ok())
            .unwrap_or(default)
    };
    Graces {
        unschedulable: get("UNSCHEDULABLE_GRACE", DEFAULT_UNSCHEDULABLE_GRACE),
        image_pull: get("IMAGE_PULL_GRACE", DEFAULT_IMAGE_PULL_GRACE),
    }
}

/// Whether a rollout's waiting line is a grace running out, to be judged
/// again as time passes even when nothing changes.
pub fn waits_on_a_grace(why: &str) -> bool {
    why.ends_with("_GRACE)")
}

/// A pod the scheduler could not place: since when (seconds since the
/// epoch) and the scheduler's message.
pub fn pod_unschedulable(pod: &Pod) -> Option<(i64, String)> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    if c.reason.as_deref() != Some("Unschedulable") {
        return None;
    }
    let since = c
        .last_transition_time
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    Some((since, c.message.clone().unwrap_or_default()))
}

/// The rollout's state: the Deployment's own verdict, failed early by any
/// pod of its new ReplicaSet that reports a fatal reason, or that the
/// scheduler has not placed for longer than the grace.
pub fn rollout_state<S: Borrow<ReplicaSet>, P: Borrow<Pod>>(
    d: &Deployment,
    sets: &[S],
    pods: &[P],
    patience: Patience,
) -> RolloutState {
    let own = deployment_state(d, patience.began);
    if matches!(own, RolloutState::Failed(_) | RolloutState::Complete) {
        return own;
    }
    if let Some(rs) = new_replica_set(d, sets)
        && let Some(rs_uid) = rs.metadata.uid.as_deref()
    {
        let mut new_pods: Vec<&Pod> = pods
            .iter()
            .map(Borrow::borrow)
            .filter(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == rs_uid)
            })
            .collect();
        new_pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        // The first pod waiting out a grace, said instead of the
        // Deployment's own line.
        let mut waiting_out_a_grace = None;
        for pod in new_pods {
            if let Some((container, reason, message)) = pod_failure(pod) {
                let since = pod
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| t.0.as_second());
                let waited = patience.now.saturating_sub(since).max(0) as u64;
                let grace = patience.graces.image_pull.as_secs();
                if pull_cause(&reason, &message) == PullCause::Passing && waited < grace {
                    waiting_out_a_grace.get_or_insert(format!(
                        "pod {} {reason} ({message}); the kubelet pulls again, fails {grace}s after the pod's creation (IMAGE_PULL_GRACE)",
                        pod.metadata.name.as_deref().unwrap_or_default(),
                    ));
                    continue;
                }
                return RolloutState::Failed(RolloutFailure {
                    deployment: name_of(d),
                    pod: pod.metadata.name.clone(),
                    container: Some(container),
                    reason,
                    message,
                });
            }
            if let Some((since, message)) = pod_unschedulable(pod) {
                let waited = patience.now.saturating_sub(since).max(0) as u64;
                if waited >= patience.graces.unschedulable.as_secs() {
                    return RolloutState::Failed(RolloutFailure {
                        deployment: name_of(d),
                        pod: pod.metadata.name.clone(),
                        container: None,
                        reason: "Unschedulable".into(),
                        message,
                    });
                }
                let since = chrono::DateTime::from_timestamp(since, 0)
                    .map_or_else(String::new, |t| t.format("%H:%M:%SZ").to_string());
                waiting_out_a_grace.get_or_insert(format!(
                    "pod {} unschedulable since {since} ({message}); fails {}s after (UNSCHEDULABLE_GRACE)",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    patience.graces.unschedulable.as_secs()
                ));
            }
        }
        if let (RolloutState::Progressing(_), Some(why)) = (&own, waiting_out_a_grace) {
            return RolloutState::Progressing(why);
        }
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    fn fixture<T: DeserializeOwned>(name: &str) -> T {
        let path = format!(
            "{}/tests/fixtures/rollout/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn patience() -> Patience {
        Patience::now(Graces::default())
    }

    fn sets() -> Vec<ReplicaSet> {
        vec![fixture("replicaset-old"), fixture("replicaset-new")]
    }

    #[test]
    fn a_pod_no_node_can_take_fails_the_rollout_after_the_grace() {
        let d: Deployment = fixture("deployment-progressing");
        let pods = vec![fixture::<Pod>("pod-unschedulable")];
        // 2026-11-30T12:00:00Z, when the scheduler gave its verdict.
        let verdict = 1_796_040_000;
        let at = |secs: i64| Patience {
            began: 0,
            graces: Graces::default(),
            now: verdict + secs,
        };
        match rollout_state(&d, &sets(), &pods, at(10)) {
            RolloutState::Progressing(why) => {
                assert!(why.contains("unschedulable since 12:00:00Z"), "{why}");
                assert!(why.contains("3 Insufficient cpu"), "{why}");
            }
            other => panic!("within the grace it waits: {other:?}"),
        }
        match rollout_state(&d, &sets(), &pods, at(30)) {
            RolloutState::Failed(f) => {
                assert_eq!(f.reason, "Unschedulable");
                assert_eq!(f.pod.as_deref(), Some("api-green-6d8f9c7b5d-q8w2e"));
                assert_eq!(
                    f.to_string(),
                    "deployment api-green, pod api-green-6d8f9c7b5d-q8w2e: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
                );
            }
            other => panic!("past the grace it fails: {other:?}"),
        }
    }

    #[test]
    fn a_complete_rollout_is_complete() {
        let d: Deployment = fixture("deployment-complete");
        assert_eq!(
            rollout_state(&d, &sets(), &[fixture::<Pod>("pod-ready")], patience()),
            RolloutState::Complete
        );
    }

    #[test]
    fn an_unobserved_spec_is_not_believed_complete() {
        let d: Deployment = fixture("deployment-not-observed");
        assert_eq!(
            deployment_state(&d, 0),
            RolloutState::Progressing("waiting for the new spec to be observed".into())
        );
    }

    #[test]
    fn a_rollout_in_progress_says_what_it_waits_for() {
        let d: Deployment = fixture("deployment-progressing");
        let pods: Vec<Pod> = vec![fixture("pod-ready"), fixture("pod-container-creating")];
        assert_eq!(
            rollout_state(&d, &sets(), &pods, patience()),
            RolloutState::Progressing("1 of 3 new replicas updated".into())
        );
    }

    #[test]
    fn the_new_replica_set_is_the_one_with_the_deployments_template() {
        let d: Deployment = fixture("deployment-progressing");
        let sets = sets();
        let rs = new_replica_set(&d, &sets).unwrap();
        assert_eq!(rs.metadata.name.as_deref(), Some("api-green-6d8f9c7b5d"));
    }

    fn failed_with(pod: &str) -> RolloutFailure {
        let d: Deployment = fixture("deployment-progressing");
        let pods: Vec<Pod> = vec![fixture("pod-ready"), fixture(pod)];
        match rollout_state(&d, &sets(), &pods, patience()) {
            RolloutState::Failed(f) => f,
            other => panic!("{pod}: expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn image_pull_back_off_fails_at_once_naming_the_pod() {
        let f = failed_with("pod-image-pull-backoff");
        assert_eq!(f.reason, "ImagePullBackOff");
        assert_eq!(f.pod.as_deref(), Some("api-green-6d8f9c7b5d-x2x7k"));
        assert_eq!(
            f.to_string(),
            "deployment api-green, pod api-green-6d8f9c7b5d-x2x7k, container api: ImagePullBackOff: Back-off pulling image \"ghcr.io/maily/maily-api:v1.4.2\""
        );
    }

    #[test]
    fn err_image_pull_fails_at_once() {
        assert_eq!(failed_with("pod-err-image-pull").reason, "ErrImagePull");
    }

    #[test]
    fn a_pull_that_timed_out_is_borne_for_the_grace_then_fails() {
        let d: Deployment = fixture("deployment-progressing");
        let pods: Vec<Pod> = vec![fixture("pod-ready"), fixture("pod-err-image-pull-timeout")];
        // The pod was created at 2026-11-30T12:00:00Z.
        let created = 1_796_040_000;
        let at = |secs: i64| Patience {
            began: 0,
            graces: Graces::default(),
            now: created + secs,
        };
        match rollout_state(&d, &sets(), &pods, at(15)) {
            RolloutState::Progressing(why) => {
                assert!(
                    why.contains("api-green-6d8f9c7b5d-t1m30 ErrImagePull"),
                    "{why}"
                );
                assert!(why.contains("i/o timeout"), "{why}");
                assert!(waits_on_a_grace(&why), "{why}");
            }
            other => panic!("within the grace the kubelet pulls again: {other:?}"),
        }
        match rollout_state(&d, &sets(), &pods, at(120)) {
            RolloutState::Failed(f) => {
                assert_eq!(f.reason, "ErrImagePull");
                assert!(f.message.ends_with("i/o timeout"), "{}", f.message);
            }
            other => panic!("past the grace it fails: {other:?}"),
        }
    }

    /// Pull errors as containerd, CRI-O and the kubelet word them.
    #[test]
    fn a_pull_errors_cause_is_read_from_its_message() {
        let image = "ghcr.io/maily/maily-api@sha256:4013c2e1b5a7d9f08e6c3b2a1d4f5e6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e";
        let lasting = [
            format!(
                "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found"
            ),
            format!(
                "rpc error: code = Unknown desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": failed to authorize: failed to fetch anonymous token: unexpected status from GET request to https://ghcr.io/token?scope=repository%3Amaily%2Fmaily-api%3Apull&service=ghcr.io: 401 Unauthorized"
            ),
            format!(
                "rpc error: code = Unknown desc = failed to pull and unpack image \"{image}\": no match for platform in manifest: not found"
            ),
            "rpc error: code = Unknown desc = reading manifest v1.4.2 in registry.example/maily/maily-api: manifest unknown".to_string(),
            "rpc error: code = Unknown desc = Error response from daemon: pull access denied for maily-api, repository does not exist or may require 'docker login'".to_string(),
        ];
        for m in &lasting {
            assert_eq!(pull_cause("ErrImagePull", m), PullCause::Lasting, "{m}");
        }
        let passing = [
            format!(
                "rpc error: code = Unknown desc = failed to pull and unpack image \"{image}\": failed to copy: httpReadSeeker: failed open: unexpected status code https://ghcr.io/v2/maily/maily-api/blobs/sha256:4013: 503 Service Unavailable"
            ),
            format!(
                "rpc error: code = Unknown desc = failed to pull and unpack image \"{image}\": failed to copy: read tcp 10.0.0.4:51234->140.82.112.34:443: read: connection reset by peer"
            ),
            "rpc error: code = Unknown desc = toomanyrequests: You have reached your pull rate limit.".to_string(),
            "rpc error: code = Unknown desc = pinging container registry registry.example: Get \"https://registry.example/v2/\": net/http: TLS handshake timeout".to_string(),
        ];
        for m in &passing {
            assert_eq!(pull_cause("ErrImagePull", m), PullCause::Passing, "{m}");
        }
        // The kubelet's back-off keeps the last pull's error after the image.
        assert_eq!(
            pull_cause(
                "ImagePullBackOff",
                &format!(
                    "Back-off pulling image \"{image}\": ErrImagePull: {}",
                    passing[1]
                )
            ),
            PullCause::Passing
        );
        assert_eq!(
            pull_cause(
                "ImagePullBackOff",
                &format!(
                    "Back-off pulling image \"{image}\": ErrImagePull: {}",
                    lasting[0]
                )
            ),
            PullCause::Lasting
        );
        // Without it (older kubelets, kubesim), nothing says the pull will
        // ever work: the rollout fails at once, as before.
        assert_eq!(
            pull_cause(
                "ImagePullBackOff",
                &format!("Back-off pulling image \"{image}\"")
            ),
            PullCause::Unknown
        );
        // An image named for a passing cause is not one.
        assert_eq!(
            pull_cause(
                "ErrImagePull",
                "failed to pull and unpack image \"registry.example/timeout-svc:v1\": something odd"
            ),
            PullCause::Unknown
        );
        assert_eq!(
            pull_cause(
                "RegistryUnavailable",
                "image pull failed for x because the registry is unavailable"
            ),
            PullCause::Passing
        );
        assert_eq!(
            pull_cause(
                "SignatureValidationFailed",
                "image pull failed for x because the signature validation failed"
            ),
            PullCause::Lasting
        );
        assert_eq!(
            pull_cause("CrashLoopBackOff", "timeout"),
            PullCause::Lasting
        );
    }

    #[test]
    fn crash_loop_back_off_fails_with_the_exit_code() {
        let f = failed_with("pod-crash-loop-back-off");
        assert_eq!(f.reason, "CrashLoopBackOff");
        assert!(
            f.message.ends_with("(last exit code 1, 4 restarts)"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_missing_secret_fails_at_once() {
        let f = failed_with("pod-create-container-config-error");
        assert_eq!(f.reason, "CreateContainerConfigError");
        assert_eq!(f.message, "secret \"maily-api-secrets\" not found");
    }

    #[test]
    fn an_old_pods_crash_is_not_this_rollouts_failure() {
        let d: Deployment = fixture("deployment-progressing");
        let pods: Vec<Pod> = vec![
            fixture("pod-old-crash-loop"),
            fixture("pod-container-creating"),
        ];
        assert!(matches!(
            rollout_state(&d, &sets(), &pods, patience()),
            RolloutState::Progressing(_)
        ));
    }

    #[test]
    fn before_the_controller_syncs_the_previous_replica_sets_pods_are_not_judged() {
        // Its revision annotation still names the old ReplicaSet, whose
        // pod crash-loops: not this rollout's failure.
        let d: Deployment = fixture("deployment-not-observed-old-revision");
        let pods: Vec<Pod> = vec![fixture("pod-old-crash-loop")];
        assert_eq!(new_replica_set(&d, &sets()), None);
        assert!(matches!(
            rollout_state(&d, &sets(), &pods, patience()),
            RolloutState::Progressing(_)
        ));
    }

    #[test]
    fn progress_deadline_exceeded_fails() {
        let d: Deployment = fixture("deployment-deadline-exceeded");
        match rollout_state(&d, &sets(), &[] as &[Pod], patience()) {
            RolloutState::Failed(f) => {
                assert_eq!(f.reason, "ProgressDeadlineExceeded");
                assert_eq!(
                    f.message,
                    "ReplicaSet \"api-green-6d8f9c7b5d\" has timed out progressing."
                );
                assert_eq!(f.pod, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_deadline_exceeded_before_this_wait_began_is_an_earlier_runs_verdict() {
        let d: Deployment = fixture("deployment-deadline-exceeded");
        // Its condition: 2026-11-30T12:00:00Z. A rerun waits from a minute
        // after: the stale verdict is not its failure; its own is.
        let verdict = 1_796_040_000;
        let waiting_since = |began: i64| Patience {
            began,
            ..patience()
        };
        assert!(matches!(
            rollout_state(&d, &sets(), &[] as &[Pod], waiting_since(verdict + 60)),
            RolloutState::Progressing(_)
        ));
        assert!(matches!(
            rollout_state(&d, &sets(), &[] as &[Pod], waiting_since(verdict - 60)),
            RolloutState::Failed(_)
        ));
    }

    #[test]
    fn replica_failure_fails_with_the_quota_message() {
        let d: Deployment = fixture("deployment-replica-failure");
        match deployment_state(&d, 0) {
            RolloutState::Failed(f) => {
                assert_eq!(f.reason, "FailedCreate");
                assert!(f.message.contains("exceeded quota"));
            }
            other => panic!("{other:?}"),
        }
    }
}
