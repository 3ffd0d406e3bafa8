//! The images gate of a run, before its lock and its first change: every
//! image of the layers it deploys pinned to a digest (`pin`), and every
//! digest scanned (`scan`) against the allowlist. Either stops the run with
//! exit 3 and every problem named, while nothing has changed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::allowlist::Allowlist;
use super::scan::cache::{self, ScanRecord};
use super::scan::verdict::{self, Policy, ScanReport};
use super::scan::{self as trivy, Severity, Trivy};
use crate::config::Vars;
use crate::error::{Failure, Kind, Problem};
use crate::pipeline::Context;

/// What the scan gate did, as the report and the snapshot keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ScanOutcome {
    /// `IMAGE_SCAN=off`: nothing was scanned, on purpose.
    Off,
    /// Every pinned digest scanned (or spared by a recent clean scan).
    Scanned(ScanReport),
}

/// What the gate leaves the run.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// Each image as tagged and the digest reference it was pinned to.
    pub pins: BTreeMap<String, String>,
    /// `None` when the run deploys no image.
    pub scan: Option<ScanOutcome>,
}

/// The gate's settings, read from the run's variables (validated by then:
/// a value that does not read is refused here, not replaced).
struct Settings {
    registry_timeout: Duration,
    scan: bool,
    fail_on: Severity,
    ttl: Duration,
    timeout: Duration,
    bin: String,
    allowlist: PathBuf,
}

fn settings(vars: &Vars) -> anyhow::Result<Settings> {
    let mut problems = Vec::new();
    let mut duration = |name: &str, default: Duration| match vars.get(name) {
        None | Some("") => default,
        Some(text) => crate::config::spec::duration_of(name, Some(text)).unwrap_or_else(|why| {
            problems.push(Problem {
                phase: None,
                subject: name.into(),
                problem: why.to_string(),
                fix: format!(
                    "give {}, e.g. 24h or 10m",
                    crate::config::spec::lookup(name)
                        .map_or_else(|| "a duration".into(), |v| v.format.wanted())
                ),
            });
            default
        }),
    };
    let registry_timeout = duration("REGISTRY_TIMEOUT", Duration::from_secs(30));
    let ttl = duration("IMAGE_SCAN_TTL", cache::DEFAULT_TTL);
    let timeout = duration("IMAGE_SCAN_TIMEOUT", trivy::DEFAULT_TIMEOUT);
    let fail_on = match vars.get("IMAGE_SCAN_FAIL_ON").filter(|v| !v.is_empty()) {
        None => verdict::DEFAULT_FAIL_ON,
        Some(text) => text.parse().unwrap_or_else(|why: trivy::NotASeverity| {
            problems.push(Problem {
                phase: None,
                subject: "IMAGE_SCAN_FAIL_ON".into(),
                problem: why.to_string(),
                fix: "one of CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN".into(),
            });
            verdict::DEFAULT_FAIL_ON
        }),
    };
    let scan = vars.get("IMAGE_SCAN").unwrap_or("on") != "off";
    if scan && !super::pin::is_on(vars) {
        problems.push(Problem {
            phase: None,
            subject: "IMAGE_SCAN".into(),
            problem: "is on, but IMAGE_PINNING is off: a scan is of a digest, and a tag can name other code by the time the cluster pulls it".into(),
            fix: "turn IMAGE_PINNING on, or set IMAGE_SCAN=off as well (the report and the snapshot then say the images were not scanned)".into(),
        });
    }
    if !problems.is_empty() {
        return Err(Failure::with_problems(
            Kind::Config,
            "the image scan settings have problems",
            problems,
        )
        .into());
    }
    Ok(Settings {
        registry_timeout,
        scan,
        fail_on,
        ttl,
        timeout,
        bin: vars
            .get("TRIVY_BIN")
            .filter(|b| !b.is_empty())
            .unwrap_or(trivy::DEFAULT_BIN)
            .to_string(),
        allowlist: PathBuf::from(
            vars.get("IMAGE_SCAN_IGNORE_FILE")
                .filter(|f| !f.is_empty())
                .unwrap_or(super::allowlist::DEFAULT_FILE),
        ),
    })
}

/// The clean scans earlier runs of this environment recorded; none when
/// the cluster cannot be read (a dry run without one): then every digest
/// is scanned.
async fn earlier_scans(cx: &Context) -> Vec<ScanRecord> {
    let Ok(applier) = cx.applier().await else {
        return Vec::new();
    };
    let store = crate::k8s::snapshot_store::SnapshotStore::new(
        applier.client().clone(),
        &cx.config.profile.namespace,
        cx.environment(),
    );
    match store.list().await {
        Ok(history) => history
            .iter()
            .filter_map(|s| match &s.image_scan {
                Some(ScanOutcome::Scanned(report)) => Some(report.records()),
                _ => None,
            })
            .flatten()
            .collect(),
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "no earlier scans: every digest is scanned");
            Vec::new()
        }
    }
}

/// The pins alone, for what a deploy would write (`diff`): each image as
/// tagged and its digest reference; none when pinning is off.
pub async fn pins_only(
    cx: &Context,
    process_env: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let settings = settings(&cx.config.vars)?;
    let pinned = super::pin::for_run(cx, process_env, settings.registry_timeout).await?;
    Ok(pinned
        .map(|(pinned, _)| {
            pinned
                .iter()
                .map(|(image, p)| (image.clone(), p.reference.clone()))
                .collect()
        })
        .unwrap_or_default())
}

/// Pin, then scan: the gate of a deploy.
pub async fn before_first_change(
    cx: &Context,
    process_env: &BTreeMap<String, String>,
) -> anyhow::Result<Gate> {
    let settings = settings(&cx.config.vars)?;
    let Some((pinned, credentials)) =
        super::pin::for_run(cx, process_env, settings.registry_timeout).await?
    else {
        return Ok(Gate::default());
    };
    let pins: BTreeMap<String, String> = pinned
        .iter()
        .map(|(image, p)| (image.clone(), p.reference.clone()))
        .collect();
    if !settings.scan {
        tracing::warn!("IMAGE_SCAN=off: the images were not scanned for vulnerabilities");
        return Ok(Gate {
            pins,
            scan: Some(ScanOutcome::Off),
        });
    }
    if pinned.is_empty() {
        return Ok(Gate { pins, scan: None });
    }
    let allowlist = Allowlist::load(&settings.allowlist)?;
    let now = chrono::Utc::now();
    let records = earlier_scans(cx).await;
    let plan = cache::plan(
        pinned.values().map(|p| p.digest.as_str()),
        &records,
        settings.ttl,
        settings.fail_on,
        now,
    );
    let trivy = Trivy::new(&settings.bin, settings.timeout)
        .logins(credentials.file.as_deref())
        .map_err(|e| scan_failure(&e))?;
    let to_scan = pinned
        .values()
        .filter(|p| plan.needs_scan(&p.digest))
        .map(|p| p.reference.clone());
    let scans = trivy.scan(to_scan).await.map_err(|e| scan_failure(&e))?;
    let report = verdict::judge(
        &pinned,
        &scans,
        &plan,
        &Policy {
            fail_on: settings.fail_on,
            allowlist: &allowlist,
            now,
        },
    )
    .into_result()?;
    for (image, counts) in report.below_threshold() {
        let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        tracing::info!(image = %image, findings = %counts.join(", "), "below the scan threshold");
    }
    Ok(Gate {
        pins,
        scan: Some(ScanOutcome::Scanned(report)),
    })
}

fn scan_failure(e: &trivy::ScanError) -> anyhow::Error {
    Failure::with_problems(
        Kind::Config,
        "the images cannot be scanned; nothing was changed",
        vec![Problem {
            phase: None,
            subject: "trivy".into(),
            problem: e.to_string(),
            fix: e.fix(),
        }],
    )
    .into()
}
