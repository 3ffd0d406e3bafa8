//! The end-to-end tests: the built binary as a user runs it, and the
//! library's outer parts against the real services of this machine
//! (PostgreSQL, Prometheus, an S3-compatible server), kubesim and a real
//! Kubernetes control plane.
//!
//! One test binary, as ripgrep has, not one per file: the files below are
//! its modules, linked once (each binary of its own linked the whole
//! dependency tree again), and the helpers in `support` and `db_support`
//! are compiled once for all of them. Run one file's tests by its module
//! path: `cargo test --locked --test e2e backend::`.
//!
//! What the tests share in this one process: the real control plane
//! (`controlplane::ControlPlane::shared`, started by the first test that
//! asks for it, each test in namespaces of its own), and nothing else; no
//! test changes the process's environment or working directory.

mod db_support;
mod support;

mod ai;
mod ai_providers;
mod all_phases_end_to_end;
mod analysis_prometheus;
mod backend;
mod bad_input;
mod ci_workflow;
mod cli;
mod cluster_errors;
mod database;
mod db_backup;
mod db_connect;
mod db_failure;
mod db_migrate;
mod diff;
mod frontend;
mod images;
mod infra_end_to_end;
mod layering;
mod lock_and_faults;
mod monitor;
mod notifications;
mod partial_deploys;
mod production_end_to_end;
mod provision;
mod rbac;
mod real_cluster;
mod reliability;
mod secrets;
mod signals;
mod traffic;
mod traffic_sim;
mod vault;
mod verify;
