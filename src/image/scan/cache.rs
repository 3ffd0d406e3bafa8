//! Which digests a recent clean scan spares.
//!
//! A digest names its content for ever, so a digest scanned clean an hour
//! ago is the same image now; only the vulnerability database moved on.
//! `IMAGE_SCAN_TTL` (default [`DEFAULT_TTL`]) bounds how far it may have
//! moved: a digest whose newest scan was clean within it is not scanned
//! again. The records come from the environment's earlier runs (their
//! snapshots hold [`super::verdict::ScanReport::records`]); the caller
//! reads them, this decides.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Severity;

/// How long a clean scan stands unless `IMAGE_SCAN_TTL` says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// One earlier scan of one digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    /// `sha256:...`
    pub digest: String,
    pub scanned_at: DateTime<Utc>,
    /// Scanned, and nothing at or above `fail_on` found, allowlisted or
    /// not (so an allowlist entry running out is never hidden by the
    /// cache).
    pub clean: bool,
    /// The threshold `clean` was judged at: clean at HIGH is clean at
    /// CRITICAL, not the other way round.
    pub fail_on: Severity,
}

/// The decision: which digests to scan, and which are spared (with when
/// their clean scan was).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachePlan {
    pub scan: BTreeSet<String>,
    pub skip: BTreeMap<String, DateTime<Utc>>,
}

impl CachePlan {
    pub fn needs_scan(&self, digest: &str) -> bool {
        !self.skip.contains_key(digest)
    }
}

/// Decide, for each of `digests`, whether it is scanned now. A digest is
/// spared when its newest record is clean, was judged at `fail_on` or a
/// stricter threshold, and is younger than `ttl` at `now`. A record from
/// the future (another machine's clock) spares nothing.
pub fn plan<'a>(
    digests: impl IntoIterator<Item = &'a str>,
    records: &[ScanRecord],
    ttl: Duration,
    fail_on: Severity,
    now: DateTime<Utc>,
) -> CachePlan {
    let mut newest: BTreeMap<&str, &ScanRecord> = BTreeMap::new();
    for r in records {
        let slot = newest.entry(r.digest.as_str()).or_insert(r);
        if r.scanned_at > slot.scanned_at {
            *slot = r;
        }
    }
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let mut out = CachePlan::default();
    for digest in digests {
        let spared = newest.get(digest).filter(|r| {
            r.clean
                && r.fail_on <= fail_on
                && r.scanned_at <= now
                && now.signed_duration_since(r.scanned_at) < ttl
        });
        match spared {
            Some(r) => {
                out.skip.insert(digest.to_string(), r.scanned_at);
            }
            None => {
                out.scan.insert(digest.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rec(digest: &str, when: &str, clean: bool, fail_on: Severity) -> ScanRecord {
        ScanRecord {
            digest: digest.into(),
            scanned_at: at(when),
            clean,
            fail_on,
        }
    }

    #[test]
    fn only_a_recent_clean_newest_scan_at_a_threshold_as_strict_spares_a_digest() {
        let now = at("2026-11-30T12:00:00Z");
        let records = vec![
            rec(
                "sha256:fresh",
                "2026-11-30T01:00:00Z",
                true,
                Severity::Critical,
            ),
            rec(
                "sha256:stale",
                "2026-11-29T11:59:59Z",
                true,
                Severity::Critical,
            ),
            rec(
                "sha256:dirty",
                "2026-11-30T11:00:00Z",
                false,
                Severity::Critical,
            ),
            // Clean once, then found dirty: the newest record decides.
            rec(
                "sha256:regressed",
                "2026-11-30T02:00:00Z",
                true,
                Severity::Critical,
            ),
            rec(
                "sha256:regressed",
                "2026-11-30T03:00:00Z",
                false,
                Severity::Critical,
            ),
            // Judged at CRITICAL only: says nothing about HIGH findings.
            rec(
                "sha256:lenient",
                "2026-11-30T10:00:00Z",
                true,
                Severity::Critical,
            ),
            rec(
                "sha256:strict",
                "2026-11-30T10:00:00Z",
                true,
                Severity::Medium,
            ),
            rec(
                "sha256:future",
                "2026-12-01T00:00:00Z",
                true,
                Severity::High,
            ),
        ];
        let digests = [
            "sha256:fresh",
            "sha256:stale",
            "sha256:dirty",
            "sha256:regressed",
            "sha256:lenient",
            "sha256:strict",
            "sha256:future",
            "sha256:never",
        ];
        let p = plan(digests, &records, DEFAULT_TTL, Severity::High, now);
        assert_eq!(
            p.skip.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["sha256:strict"]
        );
        let p = plan(digests, &records, DEFAULT_TTL, Severity::Critical, now);
        assert_eq!(
            p.skip.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["sha256:fresh", "sha256:lenient", "sha256:strict"]
        );
        assert_eq!(p.skip["sha256:fresh"], at("2026-11-30T01:00:00Z"));
        assert!(p.needs_scan("sha256:never") && p.scan.contains("sha256:stale"));
        assert_eq!(p.scan.len() + p.skip.len(), digests.len());
    }

    #[test]
    fn no_records_scans_everything() {
        let p = plan(
            ["sha256:a", "sha256:b"],
            &[],
            DEFAULT_TTL,
            Severity::Critical,
            Utc::now(),
        );
        assert!(p.skip.is_empty());
        assert_eq!(p.scan.len(), 2);
    }
}
