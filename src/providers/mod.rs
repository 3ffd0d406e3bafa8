//! Clients of the systems around the platform: command-line tools and HTTP
//! APIs. Each one types the requests and responses its provider documents,
//! and keeps the decisions (is this deployment done, how long does this rate
//! limit last) in pure functions tested against what the documentation shows.

pub mod ai;
pub mod grafana;
pub mod http;
pub mod prometheus;
pub mod terraform;
pub mod vault;
pub mod vercel;
