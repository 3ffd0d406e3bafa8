//! Kubernetes: rollouts, slots and routes, the snapshot store, the lease.

pub mod rollout;
