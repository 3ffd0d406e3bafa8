//! What the scans mean for the run: which findings block it, which the
//! allowlist accepts, and the report a run and its snapshot keep.
//!
//! A finding blocks when it is at or above the threshold
//! (`IMAGE_SCAN_FAIL_ON`, default [`DEFAULT_FAIL_ON`]) and no allowlist
//! entry accepts it today; an entry that ran out blocks too, and says so.
//! An image that could not be scanned blocks as well: a gate that cannot
//! look does not let through. Everything blocking becomes one
//! configuration failure (exit 3, nothing changed), one problem per
//! finding naming the image, id, package and versions.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::cache::{CachePlan, ScanRecord};
use super::{Finding, ScanError, Scans, Severity};
use crate::error::{Failure, Kind, Problem, clipped};
use crate::image::allowlist::{self, Allowlist};
use crate::image::resolve::Pinned;

/// The threshold unless `IMAGE_SCAN_FAIL_ON` says otherwise.
pub const DEFAULT_FAIL_ON: Severity = Severity::Critical;

/// At most this many blocking findings are listed per image; the rest are
/// counted in one more problem. An image with hundreds needs a rebuild,
/// not a list that buries every other message.
pub const MAX_LISTED_PER_IMAGE: usize = 25;

/// What decides a finding.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub fail_on: Severity,
    pub allowlist: &'a Allowlist,
    /// Judging time: the report's scan time, and (its UTC day) what
    /// allowlist entries have run out.
    pub now: DateTime<Utc>,
}

impl Policy<'_> {
    fn today(&self) -> NaiveDate {
        self.now.date_naive()
    }
}

/// Where an image's result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Scanned by this run.
    Scanned,
    /// Spared: a clean scan of the same digest within `IMAGE_SCAN_TTL`.
    Cached,
}

/// A finding the allowlist accepts, with the entry's word for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowed {
    #[serde(flatten)]
    pub finding: Finding,
    pub reason: String,
    pub expires: NaiveDate,
}

/// A finding that blocks the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocking {
    #[serde(flatten)]
    pub finding: Finding,
    /// The entry that accepted it until it ran out, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<allowlist::Entry>,
}

/// One image's part of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageScan {
    /// As the release tags it.
    pub image: String,
    /// `registry/repo@sha256:...`, what was scanned.
    pub reference: String,
    pub digest: String,
    pub source: Source,
    /// When the scan this result stands on ran.
    pub scanned_at: DateTime<Utc>,
    /// Every finding by severity (allowlisted ones too); absent when the
    /// result came from the cache or the scan failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<BTreeMap<Severity, u32>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<Allowed>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocking: Vec<Blocking>,
    /// Why the image could not be scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Scanned (or cached) and nothing at or above the threshold at all,
    /// allowlisted or not: what [`ScanRecord::clean`] keeps.
    pub clean: bool,
}

/// What the gate saw, for the run report and the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    pub fail_on: Severity,
    pub images: Vec<ImageScan>,
}

impl ScanReport {
    /// The records a later run's [`super::cache::plan`] reads: one per
    /// image that was scanned (a cached one keeps its first record).
    pub fn records(&self) -> Vec<ScanRecord> {
        self.images
            .iter()
            .filter(|i| i.source == Source::Scanned && i.error.is_none())
            .map(|i| ScanRecord {
                digest: i.digest.clone(),
                scanned_at: i.scanned_at,
                clean: i.clean,
                fail_on: self.fail_on,
            })
            .collect()
    }

    /// Per image, how many findings below the threshold there are, by
    /// severity: what does not block but is worth a look.
    pub fn below_threshold(&self) -> BTreeMap<String, BTreeMap<Severity, u32>> {
        self.images
            .iter()
            .filter_map(|i| {
                let below: BTreeMap<Severity, u32> = i
                    .counts
                    .as_ref()?
                    .iter()
                    .filter(|(s, n)| **s < self.fail_on && **n > 0)
                    .map(|(s, n)| (*s, *n))
                    .collect();
                (!below.is_empty()).then(|| (i.image.clone(), below))
            })
            .collect()
    }
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub report: ScanReport,
    /// The allowlist file, as fixes name it.
    pub allowlist_file: String,
    /// Images that could not be scanned, with why.
    pub failed: Vec<(String, ScanError)>,
}

impl Verdict {
    /// Whether the run may go on.
    pub fn passed(&self) -> bool {
        self.failed.is_empty() && self.report.images.iter().all(|i| i.blocking.is_empty())
    }

    /// One problem per blocking finding (at most [`MAX_LISTED_PER_IMAGE`]
    /// an image) and per image that could not be scanned.
    pub fn problems(&self) -> Vec<Problem> {
        let file = &self.allowlist_file;
        let mut out = Vec::new();
        for image in &self.report.images {
            let subject = format!("image {}", clipped(&image.image));
            if let Some((_, e)) = self.failed.iter().find(|(i, _)| *i == image.image) {
                out.push(Problem {
                    phase: None,
                    subject: subject.clone(),
                    problem: format!("cannot be scanned: {e}"),
                    fix: e.fix(),
                });
            }
            for b in image.blocking.iter().take(MAX_LISTED_PER_IMAGE) {
                out.push(problem_of(&subject, b, file));
            }
            let more = image.blocking.len().saturating_sub(MAX_LISTED_PER_IMAGE);
            if more > 0 {
                out.push(Problem {
                    phase: None,
                    subject,
                    problem: format!(
                        "and {more} more findings at or above {}",
                        self.report.fail_on
                    ),
                    fix: format!(
                        "rebuild on a current base image; trivy image {} lists them all",
                        clipped(&image.reference)
                    ),
                });
            }
        }
        out
    }

    /// The report when the run may go on; else one configuration failure
    /// listing every problem.
    pub fn into_result(self) -> anyhow::Result<ScanReport> {
        if self.passed() {
            return Ok(self.report);
        }
        let findings: usize = self.report.images.iter().map(|i| i.blocking.len()).sum();
        let images = self
            .report
            .images
            .iter()
            .filter(|i| !i.blocking.is_empty())
            .count();
        let mut parts = Vec::new();
        if findings > 0 {
            parts.push(format!(
                "{findings} finding{} at or above {} in {images} image{}",
                plural(findings),
                self.report.fail_on,
                plural(images)
            ));
        }
        if !self.failed.is_empty() {
            let n = self.failed.len();
            parts.push(format!("{n} image{} could not be scanned", plural(n)));
        }
        let problems = self.problems();
        Err(Failure::with_problems(
            Kind::Config,
            format!(
                "the image scan blocks the run: {}; nothing was changed",
                parts.join(", ")
            ),
            problems,
        )
        .into())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `CVE-x in pkg 1.0 (fixed in 1.1), CRITICAL`, with how to clear it.
fn problem_of(subject: &str, b: &Blocking, file: &str) -> Problem {
    let f = &b.finding;
    let package = clipped(&f.package);
    let fixed = f.fixed.as_deref().map(clipped);
    let mut problem = format!(
        "{} in {package} {} ({}), {}",
        clipped(&f.id),
        clipped(&f.installed),
        fixed
            .as_ref()
            .map_or_else(|| "no fix yet".to_string(), |v| format!("fixed in {v}")),
        f.severity
    );
    let upgrade = fixed
        .as_ref()
        .map(|v| format!("upgrade {package} to {v} and rebuild"));
    let fix = match (&b.expired, upgrade) {
        (Some(e), upgrade) => {
            problem.push_str(&format!(
                "; its allowlist entry expired on {}: {}",
                e.expires,
                clipped(&e.reason)
            ));
            let renew = format!("renew the entry's expiry in {file} if the reason still holds");
            match upgrade {
                Some(u) => format!("{u}, or {renew}"),
                None => renew,
            }
        }
        (None, Some(u)) => {
            format!("{u}, or allowlist it in {file} with a reason and an expiry date")
        }
        (None, None) => format!(
            "no fixed version exists yet: allowlist it in {file} with a reason and an expiry date, or remove {package} from the image"
        ),
    };
    Problem {
        phase: None,
        subject: subject.to_string(),
        problem,
        fix,
    }
}

/// Judge every pinned image (by image as tagged): its scan from `scans`
/// (by reference, as [`super::Trivy::scan`] answers), or the cache's clean
/// result when `plan` spared its digest.
pub fn judge(
    pins: &BTreeMap<String, Pinned>,
    scans: &Scans,
    plan: &CachePlan,
    policy: &Policy<'_>,
) -> Verdict {
    let mut images = Vec::new();
    let mut failed = Vec::new();
    for (image, pin) in pins {
        let mut scan = ImageScan {
            image: image.clone(),
            reference: pin.reference.clone(),
            digest: pin.digest.clone(),
            source: Source::Scanned,
            scanned_at: policy.now,
            counts: None,
            allowed: Vec::new(),
            blocking: Vec::new(),
            error: None,
            clean: false,
        };
        if let Some(at) = plan.skip.get(&pin.digest) {
            scan.source = Source::Cached;
            scan.scanned_at = *at;
            scan.clean = true;
            images.push(scan);
            continue;
        }
        let findings = match scans.get(&pin.reference) {
            Some(Ok(findings)) => findings,
            Some(Err(e)) => {
                scan.error = Some(e.to_string());
                failed.push((image.clone(), e.clone()));
                images.push(scan);
                continue;
            }
            None => {
                scan.error = Some(ScanError::NotScanned.to_string());
                failed.push((image.clone(), ScanError::NotScanned));
                images.push(scan);
                continue;
            }
        };
        let mut counts = BTreeMap::new();
        for f in findings {
            *counts.entry(f.severity).or_insert(0u32) += 1;
            if f.severity < policy.fail_on {
                continue;
            }
            match policy.allowlist.verdict(&f.id, image, policy.today()) {
                allowlist::Verdict::Allowed(e) => scan.allowed.push(Allowed {
                    finding: f.clone(),
                    reason: e.reason.clone(),
                    expires: e.expires,
                }),
                allowlist::Verdict::Expired(e) => scan.blocking.push(Blocking {
                    finding: f.clone(),
                    expired: Some(e.clone()),
                }),
                allowlist::Verdict::NotListed => scan.blocking.push(Blocking {
                    finding: f.clone(),
                    expired: None,
                }),
            }
        }
        scan.clean = scan.allowed.is_empty() && scan.blocking.is_empty();
        scan.counts = Some(counts);
        images.push(scan);
    }
    Verdict {
        report: ScanReport {
            fail_on: policy.fail_on,
            images,
        },
        allowlist_file: policy.allowlist.file.clone(),
        failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::scan::cache::{self, DEFAULT_TTL};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn pin(image: &str, digest: &str) -> (String, Pinned) {
        let (name, _) = image.rsplit_once(':').unwrap();
        (
            image.to_string(),
            Pinned {
                image: image.into(),
                digest: digest.into(),
                reference: format!("{name}@{digest}"),
            },
        )
    }

    fn finding(id: &str, pkg: &str, fixed: Option<&str>, severity: Severity) -> Finding {
        Finding {
            id: id.into(),
            package: pkg.into(),
            installed: "1.0.0".into(),
            fixed: fixed.map(String::from),
            severity,
        }
    }

    const API: &str = "ghcr.io/maily/maily-api:v2";
    const AI: &str = "ghcr.io/maily/maily-ai:v2";
    const WORKERS: &str = "ghcr.io/maily/maily-workers:v2";

    fn setup() -> (BTreeMap<String, Pinned>, Scans, Allowlist) {
        let pins = BTreeMap::from([
            pin(API, "sha256:aa"),
            pin(AI, "sha256:bb"),
            pin(WORKERS, "sha256:cc"),
        ]);
        let scans = BTreeMap::from([
            (
                pins[API].reference.clone(),
                Ok(vec![
                    finding("CVE-2024-1", "openssl", Some("3.0.15"), Severity::Critical),
                    finding("CVE-2024-2", "libexpat1", None, Severity::Critical),
                    finding("CVE-2024-3", "zlib", Some("1.3.1"), Severity::Critical),
                    finding("CVE-2024-4", "curl", Some("8.9"), Severity::High),
                    finding("CVE-2024-5", "bash", None, Severity::Low),
                    finding("CVE-2024-6", "tar", None, Severity::Low),
                ]),
            ),
            (
                pins[AI].reference.clone(),
                Err(ScanError::Failed {
                    bin: "trivy".into(),
                    step: "image",
                    status: "exit 1".into(),
                    stderr: "FATAL unable to reach the registry".into(),
                }),
            ),
            (pins[WORKERS].reference.clone(), Ok(vec![])),
        ]);
        let allowlist = Allowlist::parse(
            "- id: CVE-2024-2\n  image: '*/maily-api:*'\n  reason: no XML input reaches libexpat\n  expires: 2026-12-31\n\
             - id: CVE-2024-3\n  image: '*'\n  reason: zlib inflate is unused\n  expires: 2026-10-01\n",
            ".maily-scan-ignore.yaml",
        )
        .unwrap();
        (pins, scans, allowlist)
    }

    #[test]
    fn blocking_allowed_expired_and_below_threshold_are_told_apart() {
        let (pins, scans, allowlist) = setup();
        let policy = Policy {
            fail_on: Severity::Critical,
            allowlist: &allowlist,
            now: at("2026-11-30T12:00:00Z"),
        };
        let plan = cache::plan(
            pins.values().map(|p| p.digest.as_str()),
            &[],
            DEFAULT_TTL,
            policy.fail_on,
            policy.now,
        );
        let v = judge(&pins, &scans, &plan, &policy);
        assert!(!v.passed());
        let api = v.report.images.iter().find(|i| i.image == API).unwrap();
        let ids = |b: &[Blocking]| b.iter().map(|b| b.finding.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&api.blocking), vec!["CVE-2024-1", "CVE-2024-3"]);
        assert!(api.blocking[1].expired.is_some());
        assert_eq!(api.allowed.len(), 1);
        assert_eq!(api.allowed[0].reason, "no XML input reaches libexpat");
        assert_eq!(
            api.counts.as_ref().unwrap(),
            &BTreeMap::from([
                (Severity::Low, 2),
                (Severity::High, 1),
                (Severity::Critical, 3)
            ])
        );
        assert!(!api.clean);
        let workers = v.report.images.iter().find(|i| i.image == WORKERS).unwrap();
        assert!(workers.clean && workers.source == Source::Scanned);
        assert_eq!(
            v.report.below_threshold()[API],
            BTreeMap::from([(Severity::Low, 2), (Severity::High, 1)])
        );
        // Only the clean-or-dirty scans are records; the failed one is not.
        let records = v.report.records();
        assert_eq!(
            records
                .iter()
                .map(|r| (r.digest.as_str(), r.clean))
                .collect::<Vec<_>>(),
            vec![("sha256:aa", false), ("sha256:cc", true)]
        );
    }

    #[test]
    fn the_failure_lists_each_blocking_finding_and_each_unscanned_image() {
        let (pins, scans, allowlist) = setup();
        let policy = Policy {
            fail_on: Severity::High,
            allowlist: &allowlist,
            now: at("2026-11-30T12:00:00Z"),
        };
        let v = judge(&pins, &scans, &CachePlan::default(), &policy);
        let err = v.into_result().unwrap_err();
        assert_eq!(crate::error::exit_code_of(&err), crate::exit_code::CONFIG);
        let failure = crate::error::failure_of(&err).unwrap();
        assert_eq!(
            failure.message,
            "the image scan blocks the run: 3 findings at or above HIGH in 1 image, 1 image could not be scanned; nothing was changed"
        );
        let got: Vec<(&str, &str, &str)> = failure
            .problems
            .iter()
            .map(|p| (p.subject.as_str(), p.problem.as_str(), p.fix.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "image ghcr.io/maily/maily-ai:v2",
                    "cannot be scanned: trivy image failed (exit 1): FATAL unable to reach the registry",
                    "see Trivy's message; check that this machine reaches the registry and has a login for it (docker login)",
                ),
                (
                    "image ghcr.io/maily/maily-api:v2",
                    "CVE-2024-1 in openssl 1.0.0 (fixed in 3.0.15), CRITICAL",
                    "upgrade openssl to 3.0.15 and rebuild, or allowlist it in .maily-scan-ignore.yaml with a reason and an expiry date",
                ),
                (
                    "image ghcr.io/maily/maily-api:v2",
                    "CVE-2024-3 in zlib 1.0.0 (fixed in 1.3.1), CRITICAL; its allowlist entry expired on 2026-10-01: zlib inflate is unused",
                    "upgrade zlib to 1.3.1 and rebuild, or renew the entry's expiry in .maily-scan-ignore.yaml if the reason still holds",
                ),
                (
                    "image ghcr.io/maily/maily-api:v2",
                    "CVE-2024-4 in curl 1.0.0 (fixed in 8.9), HIGH",
                    "upgrade curl to 8.9 and rebuild, or allowlist it in .maily-scan-ignore.yaml with a reason and an expiry date",
                ),
            ]
        );
    }

    #[test]
    fn a_finding_with_no_fix_says_so_and_the_threshold_is_inclusive() {
        let (pins, mut scans, _) = setup();
        let allowlist = Allowlist::empty("ops/scan-ignore.yaml");
        scans.insert(
            pins[AI].reference.clone(),
            Ok(vec![finding(
                "CVE-2024-9",
                "libexpat1",
                None,
                Severity::Medium,
            )]),
        );
        let policy = Policy {
            fail_on: Severity::Medium,
            allowlist: &allowlist,
            now: at("2026-11-30T12:00:00Z"),
        };
        let v = judge(&pins, &scans, &CachePlan::default(), &policy);
        let p = v
            .problems()
            .into_iter()
            .find(|p| p.problem.starts_with("CVE-2024-9"))
            .unwrap();
        assert_eq!(
            p.problem,
            "CVE-2024-9 in libexpat1 1.0.0 (no fix yet), MEDIUM"
        );
        assert_eq!(
            p.fix,
            "no fixed version exists yet: allowlist it in ops/scan-ignore.yaml with a reason and an expiry date, or remove libexpat1 from the image"
        );
    }

    #[test]
    fn a_clean_run_passes_and_cached_images_are_marked_so() {
        let (pins, _, allowlist) = setup();
        let now = at("2026-11-30T12:00:00Z");
        let records: Vec<ScanRecord> = pins
            .values()
            .filter(|p| p.image != WORKERS)
            .map(|p| ScanRecord {
                digest: p.digest.clone(),
                scanned_at: at("2026-11-30T06:00:00Z"),
                clean: true,
                fail_on: Severity::Critical,
            })
            .collect();
        let plan = cache::plan(
            pins.values().map(|p| p.digest.as_str()),
            &records,
            DEFAULT_TTL,
            Severity::Critical,
            now,
        );
        assert_eq!(plan.scan.iter().collect::<Vec<_>>(), vec!["sha256:cc"]);
        let scans = BTreeMap::from([(pins[WORKERS].reference.clone(), Ok(vec![]))]);
        let policy = Policy {
            fail_on: Severity::Critical,
            allowlist: &allowlist,
            now,
        };
        let report = judge(&pins, &scans, &plan, &policy).into_result().unwrap();
        let api = report.images.iter().find(|i| i.image == API).unwrap();
        assert_eq!(api.source, Source::Cached);
        assert_eq!(api.scanned_at, at("2026-11-30T06:00:00Z"));
        assert!(api.clean && api.counts.is_none());
        // Cached results make no new records: the first one keeps its age.
        assert_eq!(report.records().len(), 1);
        // The report round-trips through JSON, as the snapshot keeps it.
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"source\":\"cached\""), "{json}");
        assert_eq!(serde_json::from_str::<ScanReport>(&json).unwrap(), report);
    }

    #[test]
    fn an_image_without_a_scan_or_a_cache_entry_blocks() {
        let (pins, _, allowlist) = setup();
        let policy = Policy {
            fail_on: Severity::Critical,
            allowlist: &allowlist,
            now: Utc::now(),
        };
        let v = judge(&pins, &BTreeMap::new(), &CachePlan::default(), &policy);
        assert_eq!(v.failed.len(), 3);
        assert!(
            v.problems()
                .iter()
                .all(|p| p.problem.contains("was not scanned"))
        );
    }

    #[test]
    fn hundreds_of_findings_are_listed_up_to_a_bound_and_counted() {
        let (pins, mut scans, allowlist) = setup();
        let many: Vec<Finding> = (0..300)
            .map(|n| {
                finding(
                    &format!("CVE-2024-{n:04}"),
                    "pkg",
                    Some("2"),
                    Severity::Critical,
                )
            })
            .collect();
        scans.insert(pins[WORKERS].reference.clone(), Ok(many));
        let policy = Policy {
            fail_on: Severity::Critical,
            allowlist: &allowlist,
            now: at("2026-11-30T12:00:00Z"),
        };
        let problems = judge(&pins, &scans, &CachePlan::default(), &policy).problems();
        let workers: Vec<&Problem> = problems
            .iter()
            .filter(|p| p.subject == format!("image {WORKERS}"))
            .collect();
        assert_eq!(workers.len(), MAX_LISTED_PER_IMAGE + 1);
        assert_eq!(
            workers.last().unwrap().problem,
            "and 275 more findings at or above CRITICAL"
        );
    }
}
