//! Container images: pinned by digest before anything changes.
//!
//! Not yet part of a run: `deploy` still applies tags. This module is the
//! registry side (logins, tag to digest) the deploy-by-digest work builds
//! on, tested against a real OCI registry on loopback, and the scan gate
//! (Trivy by digest, an allowlist, a verdict) a run will consult before
//! its first change.

pub mod allowlist;
pub mod credentials;
pub mod pin;
pub mod resolve;
pub mod scan;
