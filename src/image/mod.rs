//! Container images: pinned by digest before anything changes.
//!
//! A deploy asks each image's registry for the digest its tag names now
//! (`pin`), before the lock and the first change, and the Deployments run
//! `image@sha256:...`; the snapshot's release keeps the pins, so a rollback
//! re-applies exactly what ran, whatever the tag names by then. Every
//! digest is scanned by Trivy (`scan`) against the allowlist (`allowlist`)
//! before the first change too.

pub mod allowlist;
pub mod credentials;
pub mod gate;
pub mod pin;
pub mod resolve;
pub mod scan;
