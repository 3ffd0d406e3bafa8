//! Will the release fit the namespace's ResourceQuotas? Asked before the
//! first apply, so a release that cannot run is refused with the numbers
//! instead of failing pod by pod halfway through its rollout.
//!
//! After a deploy both slots run: the slot users are on (already counted in
//! each quota's `used`) and the new one at its full replicas. Whatever the
//! idle slot runs now is replaced, so its share of `used` is freed. Where
//! the idle slot still runs a Deployment's pods (a grace period kept), the
//! rollout replaces them with `maxUnavailable: 0`: the surge pods must come
//! first, so they are counted ([`surge`]); a quota with no room for them
//! would stop the rollout, not slow it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodSpec, ResourceQuota};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rust_decimal::Decimal;

/// The quota resources a Deployment's pods count against, as quotas name
/// them (`cpu` and `memory` are requests; `count/pods` is `pods`).
pub const TRACKED: &[&str] = &[
    "pods",
    "count/pods",
    "requests.cpu",
    "cpu",
    "requests.memory",
    "memory",
    "limits.cpu",
    "limits.memory",
];

/// An amount of a resource, exact: cores, bytes or pods.
///
/// Kubernetes quantities (`250m`, `1.5`, `512Mi`, `1e3`) are parsed into a
/// decimal here rather than with a quantity crate: `kube_quantity` 0.9
/// added `250m` to a zero of another format as 1024.0001, and a quota
/// check cannot be off by a factor of 1024.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(pub Decimal);

impl std::ops::Add for Amount {
    type Output = Amount;
    fn add(self, o: Amount) -> Amount {
        Amount(self.0.saturating_add(o.0))
    }
}

impl std::ops::Sub for Amount {
    type Output = Amount;
    fn sub(self, o: Amount) -> Amount {
        Amount(self.0.saturating_sub(o.0))
    }
}

impl std::ops::AddAssign for Amount {
    fn add_assign(&mut self, o: Amount) {
        *self = *self + o;
    }
}

impl std::ops::Mul<i32> for Amount {
    type Output = Amount;
    fn mul(self, n: i32) -> Amount {
        Amount(self.0.saturating_mul(Decimal::from(n)))
    }
}

impl std::fmt::Display for Amount {
    /// As Kubernetes writes it where exact: `2`, `1Gi`, `512Mi`, `500m`;
    /// else the plain decimal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0.normalize();
        for (suffix, factor) in [("Gi", 1u64 << 30), ("Mi", 1 << 20)] {
            let factor = Decimal::from(factor);
            if d >= factor && (d % factor).is_zero() {
                return write!(f, "{}{suffix}", d / factor);
            }
        }
        let milli = d * Decimal::from(1000);
        if !d.fract().is_zero() && milli.fract().is_zero() {
            return write!(f, "{}m", milli.normalize());
        }
        write!(f, "{d}")
    }
}

/// A quantity's amount: `<number><suffix>`, the suffix one of the binary
/// (`Ki` … `Ei`) or decimal (`n`, `u`, `m`, `k`, `M` … `E`) ones, or an
/// exponent (`1e3`).
pub fn amount(text: &str) -> Option<Amount> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: Decimal = number.parse().ok()?;
    let pow = |base: u64, n: u32| Decimal::from(base.checked_pow(n)?).into();
    let factor: Option<Decimal> = match suffix {
        "" => Some(Decimal::ONE),
        "Ki" => pow(1024, 1),
        "Mi" => pow(1024, 2),
        "Gi" => pow(1024, 3),
        "Ti" => pow(1024, 4),
        "Pi" => pow(1024, 5),
        "Ei" => pow(1024, 6),
        "n" => Some(Decimal::new(1, 9)),
        "u" => Some(Decimal::new(1, 6)),
        "m" => Some(Decimal::new(1, 3)),
        "k" => pow(1000, 1),
        "M" => pow(1000, 2),
        "G" => pow(1000, 3),
        "T" => pow(1000, 4),
        "P" => pow(1000, 5),
        "E" => pow(1000, 6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            if exp.unsigned_abs() > 18 {
                return None;
            }
            let ten = Decimal::from(10u64.pow(exp.unsigned_abs()));
            Some(if exp >= 0 { ten } else { Decimal::ONE / ten })
        }
        _ => None,
    };
    number.checked_mul(factor?).map(Amount)
}

/// Amounts by quota resource name.
pub type Amounts = BTreeMap<&'static str, Amount>;

fn parse(q: &Quantity) -> Option<Amount> {
    amount(&q.0)
}

/// What one pod of `spec` counts against a quota. A container's request
/// defaults to its limit, as the API server defaults it.
fn per_pod(spec: &PodSpec) -> Amounts {
    let mut out = Amounts::new();
    out.insert("pods", Amount(Decimal::ONE));
    out.insert("count/pods", Amount(Decimal::ONE));
    for c in &spec.containers {
        let Some(r) = &c.resources else { continue };
        for (resource, requested) in [("cpu", "requests.cpu"), ("memory", "requests.memory")] {
            let request = r
                .requests
                .as_ref()
                .and_then(|m| m.get(resource))
                .or_else(|| r.limits.as_ref().and_then(|m| m.get(resource)))
                .and_then(parse);
            if let Some(q) = request {
                *out.entry(requested).or_default() += q;
                *out.entry(resource).or_default() += q;
            }
            let limit = r
                .limits
                .as_ref()
                .and_then(|m| m.get(resource))
                .and_then(parse);
            if let Some(q) = limit {
                *out.entry(if resource == "cpu" {
                    "limits.cpu"
                } else {
                    "limits.memory"
                })
                .or_default() += q;
            }
        }
    }
    out
}

/// What `deployments` count at the replicas given for each.
pub fn demand<'a>(deployments: impl IntoIterator<Item = (&'a Deployment, i32)>) -> Amounts {
    let mut out = Amounts::new();
    for (d, replicas) in deployments {
        let Some(spec) = d.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
            continue;
        };
        if replicas <= 0 {
            continue;
        }
        for (resource, q) in per_pod(spec) {
            *out.entry(resource).or_default() += q * replicas;
        }
    }
    out
}

/// The pods a rolling update of `d` to `replicas` adds above them at its
/// peak: its `maxSurge` (a count, or a percentage of `replicas` rounded
/// up, as the Deployment controller rounds it; 25% when unset).
pub fn surge(d: &Deployment, replicas: i32) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let max_surge = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_surge.clone())
        .unwrap_or(IntOrString::String("25%".into()));
    let replicas = i64::from(replicas.max(0));
    let pods = match max_surge {
        IntOrString::Int(n) => i64::from(n.max(0)),
        IntOrString::String(text) => text
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
            .map_or(0, |pct| (replicas * pct.clamp(0, 100) + 99) / 100),
    };
    i32::try_from(pods).unwrap_or(i32::MAX)
}

/// Every quota the release would not fit, with the numbers: what it
/// needs, and what is free (hard − used + what the idle slot frees).
pub fn shortfalls(quotas: &[ResourceQuota], need: &Amounts, freed: &Amounts) -> Vec<String> {
    let mut out = Vec::new();
    for quota in quotas {
        let name = quota.metadata.name.as_deref().unwrap_or("?");
        let status = quota.status.as_ref();
        let hard = status
            .and_then(|s| s.hard.as_ref())
            .or_else(|| quota.spec.as_ref().and_then(|s| s.hard.as_ref()));
        let Some(hard) = hard else { continue };
        let used = status.and_then(|s| s.used.as_ref());
        for resource in TRACKED {
            let (Some(limit), Some(wanted)) =
                (hard.get(*resource).and_then(parse), need.get(resource))
            else {
                continue;
            };
            let in_use = used
                .and_then(|u| u.get(*resource))
                .and_then(parse)
                .unwrap_or_default();
            let released = freed.get(resource).copied().unwrap_or_default();
            let free = limit - in_use + released;
            if *wanted > free {
                out.push(format!(
                    "ResourceQuota {name}: {resource}: the new slot needs {wanted}, {free} is free (hard {limit}, used {in_use}, of which the idle slot's pods free {released})"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(cpu: &str, memory: &str, limit_cpu: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-green"},
            "spec": {
                "selector": {},
                "template": {"spec": {"containers": [{
                    "name": "api",
                    "resources": {
                        "requests": {"cpu": cpu, "memory": memory},
                        "limits": {"cpu": limit_cpu, "memory": "512Mi"}
                    }
                }]}}
            }
        }))
        .unwrap()
    }

    fn quota(hard: &[(&str, &str)], used: &[(&str, &str)]) -> ResourceQuota {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>()
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "team"},
            "spec": {"hard": map(hard)},
            "status": {"hard": map(hard), "used": map(used)}
        }))
        .unwrap()
    }

    fn q(text: &str) -> Amount {
        amount(text).unwrap()
    }

    #[test]
    fn the_surge_is_the_deployments_max_surge_rounded_up() {
        let mut d = deployment("100m", "64Mi", "200m");
        assert_eq!(surge(&d, 4), 1, "25% when unset");
        assert_eq!(surge(&d, 5), 2, "rounded up");
        let mut set = |v: serde_json::Value| {
            let mut spec = serde_json::to_value(d.spec.clone().unwrap()).unwrap();
            spec["strategy"] =
                serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": v}});
            d.spec = Some(serde_json::from_value(spec).unwrap());
            d.clone()
        };
        assert_eq!(surge(&set(serde_json::json!("50%")), 3), 2);
        assert_eq!(surge(&set(serde_json::json!(3)), 10), 3);
        assert_eq!(surge(&set(serde_json::json!("0%")), 10), 0);
    }

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(q("250m") + q("750m"), q("1"));
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("2Gi").to_string(), "2Gi");
        assert_eq!(q("500m").to_string(), "500m");
        assert_eq!(q("1.5").to_string(), "1500m");
        assert_eq!(amount("12 cores"), None);
        assert_eq!(amount("1e99"), None, "bounded");
    }

    #[test]
    fn a_release_counts_replicas_times_its_containers() {
        let api = deployment("250m", "256Mi", "1");
        let need = demand([(&api, 4)]);
        assert_eq!(need["pods"], q("4"));
        assert_eq!(need["requests.cpu"], q("1"));
        assert_eq!(need["cpu"], q("1"));
        assert_eq!(need["requests.memory"], q("1Gi"));
        assert_eq!(need["limits.cpu"], q("4"));
        assert_eq!(need["limits.memory"], q("2Gi"));
        assert!(demand([(&api, 0)]).is_empty(), "idle workers count nothing");
    }

    #[test]
    fn a_quota_without_room_is_named_with_its_numbers_and_the_idle_slot_frees_its_share() {
        let api = deployment("250m", "256Mi", "1");
        let need = demand([(&api, 4)]);
        let tight = quota(
            &[("requests.cpu", "2"), ("pods", "20")],
            &[("requests.cpu", "1500m"), ("pods", "6")],
        );
        let problems = shortfalls(std::slice::from_ref(&tight), &need, &Amounts::new());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "ResourceQuota team: requests.cpu: the new slot needs 1, 500m is free"
            ),
            "{}",
            problems[0]
        );
        // The idle slot's old pods go: 2 of them at 250m free 500m more.
        let old = demand([(&api, 2)]);
        assert!(shortfalls(&[tight], &need, &old).is_empty());
        // A quota on what the release does not ask for is not ours to judge.
        let other = quota(&[("requests.storage", "1Gi")], &[]);
        assert!(shortfalls(&[other], &need, &Amounts::new()).is_empty());
    }
}
