//! Kubernetes: rollouts, slots and routes, the snapshot store, the lease.

pub mod apply;
pub mod capacity;
pub mod client;
pub mod kubeconfig;
pub mod lease;
pub mod live;
pub mod manifest;
pub mod rollout;
pub mod route;
pub mod server_plan;
pub mod slot;
pub mod snapshot_store;
pub mod unchanged;
pub mod values;
pub mod watch;
