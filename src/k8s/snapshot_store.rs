//! The snapshot store: one Secret per deployment in the environment's
//! namespace, labelled `app.kubernetes.io/managed-by=maily-deploy`, holding
//! the gzip JSON under `snapshot.json.gz` (Helm keeps releases the same way).

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

use super::apply::FIELD_MANAGER;
use super::client::retry;
use crate::error::{Kind, fail};
use crate::pipeline::snapshot::{self, Outcome, Snapshot};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by=maily-deploy";
const TYPE: &str = "maily.ai/deployment-snapshot";
const KEY: &str = "snapshot.json.gz";

/// The Secret's name for a deployment id.
pub fn secret_name(deployment_id: &str) -> String {
    format!("maily-deploy.snapshot.{deployment_id}")
}

pub struct SnapshotStore {
    api: Api<Secret>,
    namespace: String,
    environment: String,
}

impl SnapshotStore {
    pub fn new(client: Client, namespace: &str, environment: &str) -> Self {
        SnapshotStore {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            environment: environment.to_string(),
        }
    }

    fn selector(&self) -> String {
        format!("{MANAGED_BY},maily.ai/environment={}", self.environment)
    }

    /// Write (create or replace) a snapshot, scrubbed as everything printed
    /// is: a snapshot outlives the run and its env file, and `history`
    /// prints it on any machine with the kubeconfig, so a provider error
    /// that repeated the request (`Authorization: Bearer ...`) must not be
    /// kept as the run's `failure`.
    pub async fn put(&self, s: &Snapshot) -> anyhow::Result<()> {
        let s = &redacted(s)?;
        let bytes = snapshot::encode(s)?;
        let name = secret_name(s.deployment_id.as_str());
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "maily-deploy".to_string(),
                    ),
                    ("maily.ai/environment".to_string(), s.environment.clone()),
                    (
                        "maily.ai/deployment-id".to_string(),
                        s.deployment_id.to_string(),
                    ),
                    (
                        "maily.ai/outcome".to_string(),
                        s.outcome.as_str().to_string(),
                    ),
                ])),
                ..Default::default()
            },
            type_: Some(TYPE.to_string()),
            data: Some(BTreeMap::from([(KEY.to_string(), ByteString(bytes))])),
            ..Default::default()
        };
        let mut value = serde_json::to_value(&secret)?;
        value["apiVersion"] = "v1".into();
        value["kind"] = "Secret".into();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&value);
        retry("writing the snapshot", || {
            self.api.patch(&name, &params, &patch)
        })
        .await
        .with_context(|| format!("writing snapshot {}", s.deployment_id))?;
        Ok(())
    }

    /// Every snapshot of the environment, newest first, within
    /// [`ListBounds::DEFAULT`]. One that cannot be read is reported and
    /// skipped, never dropped from the cluster.
    pub async fn list(&self) -> anyhow::Result<Vec<Snapshot>> {
        self.list_within(&ListBounds::DEFAULT).await
    }

    /// [`list`](Self::list) within `bounds`: the Secrets read a page at a
    /// time (a Secret holds up to 1 MiB, so one unpaged answer of
    /// thousands is gigabytes), the newest [`ListBounds::most_kept`]
    /// decoded ones kept as the pages come.
    pub async fn list_within(&self, bounds: &ListBounds) -> anyhow::Result<Vec<Snapshot>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..bounds.most_pages {
            let mut lp = ListParams::default()
                .labels(&self.selector())
                .limit(bounds.page);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let secrets = retry("listing snapshots", || self.api.list(&lp))
                .await
                .context("listing snapshots")?;
            for secret in secrets.items {
                match decode_secret(&secret) {
                    Ok(s) => out.push(s),
                    Err(e) => tracing::warn!(
                        "skipping the snapshot of {}: {e:#} (Secret {}; kept for inspection, `kubectl delete secret` removes it)",
                        id_of(&secret),
                        secret.metadata.name.as_deref().unwrap_or_default()
                    ),
                }
            }
            keep_newest(&mut out, bounds.most_kept);
            token = secrets.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(out);
            }
        }
        Err(fail(
            Kind::Config,
            format!(
                "namespace {} holds more than {} snapshot Secrets of {}, more than maily-deploy reads; delete the oldest (kubectl get secret -n {} -l {} lists them), and keep fewer with --keep-snapshots",
                self.namespace,
                bounds.page as usize * bounds.most_pages,
                self.environment,
                self.namespace,
                self.selector()
            ),
        ))
    }

    /// One snapshot, if it exists. One that cannot be read is a refusal
    /// (exit 3) naming it and the deployments that can be used instead:
    /// nothing can be done from a broken record, and the user needs to know
    /// what to pick.
    pub async fn get(&self, deployment_id: &str) -> anyhow::Result<Option<Snapshot>> {
        let name = secret_name(deployment_id);
        let found = retry("reading a snapshot", || self.api.get_opt(&name))
            .await
            .with_context(|| format!("reading snapshot {deployment_id}"))?;
        let Some(secret) = found else {
            return Ok(None);
        };
        match decode_secret(&secret) {
            Ok(s) => Ok(Some(s)),
            Err(why) => {
                let mut usable = self.list().await.unwrap_or_default();
                usable.truncate(10);
                Err(fail(
                    Kind::Config,
                    format!(
                        "the snapshot of {deployment_id} cannot be used: {why:#} (Secret {name}, left in place for inspection); the usable deployments, newest first:{}",
                        if usable.is_empty() {
                            " none".to_string()
                        } else {
                            format!("\n{}", snapshot::id_lines(&usable).join("\n"))
                        }
                    ),
                ))
            }
        }
    }

    /// Delete what `prune_plan` says to, keeping `keep`.
    pub async fn prune(&self, keep: usize) -> anyhow::Result<Vec<String>> {
        let all = self.list().await?;
        let ids: Vec<(String, Outcome)> = all
            .iter()
            .map(|s| (s.deployment_id.to_string(), s.outcome))
            .collect();
        let doomed = snapshot::prune_plan(&ids, keep);
        let dp = DeleteParams::default();
        for id in &doomed {
            let name = secret_name(id);
            retry("pruning a snapshot", || self.api.delete(&name, &dp))
                .await
                .with_context(|| format!("deleting snapshot {id}"))?;
        }
        Ok(doomed)
    }
}

/// How much of the snapshot store a listing reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListBounds {
    /// Secrets per page of the list.
    pub page: u32,
    /// The most pages read; past them the listing fails, naming the fix.
    pub most_pages: usize,
    /// The most snapshots kept, the newest: each decodes to up to 16 MiB.
    pub most_kept: usize,
}

impl ListBounds {
    /// 50 Secrets a page (at most 50 MiB an answer), 10,000 Secrets in
    /// all, the newest 1,000 snapshots kept: `--keep-snapshots` is 30 by
    /// default, so a store past these is one nobody prunes.
    pub const DEFAULT: ListBounds = ListBounds {
        page: 50,
        most_pages: 200,
        most_kept: 1_000,
    };
}

/// The newest `most` snapshots of `all`, newest first.
fn keep_newest(all: &mut Vec<Snapshot>, most: usize) {
    all.sort_by(|a, b| b.deployment_id.cmp(&a.deployment_id));
    all.truncate(most);
}

/// The snapshot with every string in it scrubbed by [`crate::redact`].
pub fn redacted(s: &Snapshot) -> anyhow::Result<Snapshot> {
    let mut value = serde_json::to_value(s).context("encoding the snapshot")?;
    crate::redact::scrub_json(&mut value);
    serde_json::from_value(value).context("encoding the snapshot")
}

/// The deployment a snapshot Secret is of, for messages about it.
fn id_of(secret: &Secret) -> String {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("maily.ai/deployment-id"))
        .or(secret.metadata.name.as_ref())
        .map(|id| crate::error::clipped(id).into_owned())
        .unwrap_or_default()
}

fn decode_secret(secret: &Secret) -> anyhow::Result<Snapshot> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .with_context(|| format!("no {KEY} in the Secret"))?;
    snapshot::decode(&bytes.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::snapshot::tests_support::sample;

    #[test]
    fn a_failure_that_repeats_the_request_is_kept_without_its_token() {
        let mut s = sample();
        s.failure = Some(
            "deploy-frontend: Vercel answered 400: {\"headers\":{\"authorization\":\"Bearer vrcl-Unregistered-9f3a7c\"}}"
                .into(),
        );
        s.frontend = Some(crate::phases::deploy_frontend::FrontendRecord {
            project_id: "prj_1".into(),
            team_id: None,
            deployment_id: "dpl_1".into(),
            url: None,
            git_ref: None,
            state: Some("ERROR: Bearer vrcl-Unregistered-9f3a7c".into()),
            previous: None,
            promoted: false,
            undone: false,
        });
        let clean = redacted(&s).unwrap();
        let stored = String::from_utf8_lossy(
            &std::io::Read::bytes(flate2::read::GzDecoder::new(
                &snapshot::encode(&clean).unwrap()[..],
            ))
            .collect::<Result<Vec<u8>, _>>()
            .unwrap(),
        )
        .into_owned();
        assert!(!stored.contains("vrcl-Unregistered-9f3a7c"), "{stored}");
        assert!(clean.failure.unwrap().contains("[REDACTED]"));
        assert_eq!(clean.deployment_id, s.deployment_id);
    }
}
