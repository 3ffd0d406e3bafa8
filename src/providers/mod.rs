//! HTTP clients of the services the platform runs on. Each one types the
//! requests and responses its provider documents, and keeps the decisions
//! (is this deployment done, how long does this rate limit last) in pure
//! functions tested against JSON shaped as the documentation shows.

pub mod vercel;
