//! Kubernetes: rollouts, slots and routes, the snapshot store, the lease.

pub mod manifest;
pub mod rollout;
pub mod slot;
pub mod values;
