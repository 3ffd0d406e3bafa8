//! Faults on demand: what a container image does when it runs (pull errors,
//! crash loops, never ready, slow start) and what the API does to requests
//! (error rates, latency, an outage window).

use crate::status::ApiError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// What a pod's container does when its image matches a fault pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ImageFault {
    /// The pull fails: `ErrImagePull`, then `ImagePullBackOff`.
    ImagePullBackOff,
    /// The registry times out for this many (scaled) seconds after the
    /// pod starts: `ErrImagePull` with containerd's `i/o timeout`, then
    /// `ImagePullBackOff` keeping that error, as kubelet 1.34 words it;
    /// then the pull works and the pod runs.
    FlakyPull(f64),
    /// Starts, exits 1, restarts with back-off: `CrashLoopBackOff`, rising restartCount.
    CrashLoopBackOff,
    /// Runs but its readiness probe never passes.
    NeverReady,
    /// Becomes ready only after this many extra (scaled) seconds.
    Slow(f64),
}

impl FromStr for ImageFault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, arg) = match s.split_once([':', '=']) {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        match (name, arg) {
            ("ImagePullBackOff" | "ErrImagePull", None) => Ok(ImageFault::ImagePullBackOff),
            ("CrashLoopBackOff", None) => Ok(ImageFault::CrashLoopBackOff),
            ("NeverReady", None) => Ok(ImageFault::NeverReady),
            ("FlakyPull", Some(secs)) => secs
                .trim_end_matches('s')
                .parse::<f64>()
                .map(ImageFault::FlakyPull)
                .map_err(|e| format!("FlakyPull needs seconds, as in FlakyPull:5: {e}")),
            ("Slow" | "SlowRollout", Some(secs)) => secs
                .trim_end_matches('s')
                .parse::<f64>()
                .map(ImageFault::Slow)
                .map_err(|e| format!("Slow needs seconds, as in Slow:5: {e}")),
            _ => Err(format!(
                "unknown image fault {s:?}: expected ImagePullBackOff, CrashLoopBackOff, NeverReady, FlakyPull:<seconds> or Slow:<seconds>"
            )),
        }
    }
}

impl fmt::Display for ImageFault {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ImageFault::Slow(s) => write!(f, "Slow:{s}"),
            ImageFault::FlakyPull(s) => write!(f, "FlakyPull:{s}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// `PATTERN=FAULT`, PATTERN a glob over the full image reference
/// (`*:broken-*` matches `registry/api:broken-1`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageFaultRule {
    pub pattern: String,
    pub fault: ImageFault,
}

impl FromStr for ImageFaultRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (pattern, fault) = s
            .split_once('=')
            .ok_or_else(|| format!("image fault {s:?} is not PATTERN=FAULT"))?;
        Ok(ImageFaultRule {
            pattern: pattern.to_string(),
            fault: fault.parse()?,
        })
    }
}

/// Shell-style glob with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The fault for an image: the first rule whose pattern matches.
pub fn image_fault<'a>(rules: &'a [ImageFaultRule], image: &str) -> Option<&'a ImageFault> {
    rules
        .iter()
        .find(|r| glob_match(&r.pattern, image))
        .map(|r| &r.fault)
}

/// A rate of errors for requests matching a verb and resource (None = any).
///
/// The rate is applied deterministically: an accumulator adds `rate` per
/// matching request and fails the request each time it reaches 1, so a rate
/// of 0.5 fails exactly every second request and tests are repeatable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiFault {
    #[serde(default)]
    pub verb: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    pub rate: f64,
    /// 500, 503 or 429.
    pub code: u16,
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
}

impl ApiFault {
    /// Every matching request fails with `code`.
    pub fn always(verb: Option<&str>, resource: Option<&str>, code: u16) -> Self {
        ApiFault {
            verb: verb.map(String::from),
            resource: resource.map(String::from),
            rate: 1.0,
            code,
            retry_after_seconds: (code == 429).then_some(1),
        }
    }
}

/// The API fault state the server consults on every request.
#[derive(Debug, Default)]
pub struct ApiFaults {
    rules: Vec<(ApiFault, f64)>,
    pub latency: Duration,
    pub outage_until: Option<Instant>,
}

impl ApiFaults {
    pub fn add(&mut self, f: ApiFault) {
        self.rules.push((f, 0.0));
    }

    pub fn rules(&self) -> Vec<ApiFault> {
        self.rules.iter().map(|(f, _)| f.clone()).collect()
    }

    pub fn clear(&mut self) {
        *self = ApiFaults::default();
    }

    /// The error this request gets, if any. `resource` is `pods` or, for a
    /// subresource, `deployments/status`.
    pub fn decide(&mut self, verb: &str, resource: &str, now: Instant) -> Option<ApiError> {
        if self.outage_until.is_some_and(|until| now < until) {
            return Some(ApiError::fault(503, Some(1)));
        }
        for (rule, acc) in self.rules.iter_mut() {
            let verb_ok = rule.verb.as_deref().is_none_or(|v| v == verb);
            // `deployments` matches the resource and its subresources;
            // `deployments/status` only that subresource.
            let res_ok = rule
                .resource
                .as_deref()
                .is_none_or(|r| r == resource || resource.split('/').next() == Some(r));
            if verb_ok && res_ok {
                *acc += rule.rate;
                if *acc >= 1.0 - 1e-9 {
                    *acc -= 1.0;
                    let retry = rule.retry_after_seconds.or((rule.code == 429).then_some(1));
                    return Some(ApiError::fault(rule.code, retry));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_patterns_match_the_full_reference() {
        let rules: Vec<ImageFaultRule> = [
            "*:broken-*=ImagePullBackOff",
            "*:crash-*=CrashLoopBackOff",
            "*:slow-*=Slow:3",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(
            image_fault(&rules, "registry.io/api:broken-1"),
            Some(&ImageFault::ImagePullBackOff)
        );
        assert_eq!(
            image_fault(&rules, "api:crash-2"),
            Some(&ImageFault::CrashLoopBackOff)
        );
        assert_eq!(
            image_fault(&rules, "api:slow-2"),
            Some(&ImageFault::Slow(3.0))
        );
        assert_eq!(image_fault(&rules, "api:1.2.3"), None);
    }

    #[test]
    fn an_unknown_fault_is_rejected() {
        assert!("x=Explode".parse::<ImageFaultRule>().is_err());
        assert!("no-equals".parse::<ImageFaultRule>().is_err());
    }

    #[test]
    fn a_half_rate_fails_every_second_matching_request() {
        let mut f = ApiFaults::default();
        f.add(ApiFault {
            verb: Some("get".into()),
            resource: Some("pods".into()),
            rate: 0.5,
            code: 500,
            retry_after_seconds: None,
        });
        let now = Instant::now();
        let outcomes: Vec<bool> = (0..4)
            .map(|_| f.decide("get", "pods", now).is_some())
            .collect();
        assert_eq!(outcomes, vec![false, true, false, true]);
        assert!(f.decide("list", "pods", now).is_none());
    }

    #[test]
    fn a_rule_for_a_subresource_spares_the_main_resource() {
        let mut f = ApiFaults::default();
        f.add(ApiFault::always(
            Some("patch"),
            Some("deployments/status"),
            500,
        ));
        let now = Instant::now();
        assert!(f.decide("patch", "deployments", now).is_none());
        assert!(f.decide("patch", "deployments/status", now).is_some());
        let mut g = ApiFaults::default();
        g.add(ApiFault::always(None, Some("deployments"), 500));
        assert!(
            g.decide("get", "deployments/scale", now).is_some(),
            "a resource rule covers its subresources"
        );
    }

    #[test]
    fn an_outage_answers_503_until_it_ends() {
        let mut f = ApiFaults::default();
        let now = Instant::now();
        f.outage_until = Some(now + Duration::from_secs(1));
        assert_eq!(f.decide("get", "pods", now).unwrap().code, 503);
        assert!(
            f.decide("get", "pods", now + Duration::from_secs(2))
                .is_none()
        );
    }

    #[test]
    fn throttling_carries_retry_after() {
        let mut f = ApiFaults::default();
        f.add(ApiFault::always(None, Some("deployments"), 429));
        let e = f.decide("patch", "deployments", Instant::now()).unwrap();
        assert_eq!((e.code, e.retry_after), (429, Some(1)));
    }
}
