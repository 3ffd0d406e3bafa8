//! Conformance tests: the real `kube` client and the real `kubectl` against
//! kubesim, asserting what a user of a real cluster would check.
//! One test binary (modules below) keeps link time down.

mod binary;
mod common;
mod crd;
mod crud;
mod faults;
mod kubectl;
mod rollout;
mod ssa;
mod watch;
