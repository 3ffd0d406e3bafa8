//! Progressive delivery: moving users to the new slot step by step, each
//! step gated by analysis of the new slot's metrics.
//!
//! `plan` decides the steps (weights, worker replicas); `analysis` measures
//! a slot through Prometheus and judges the measurements; `record` is the
//! rollout's state in the cluster, which `status`, `promote` and `abort`
//! read and write from another terminal; the shift-traffic phase drives it.

pub mod analysis;
pub mod plan;
pub mod record;
pub mod report;
pub mod router;
pub mod shift;
#[cfg(test)]
mod shift_tests;
