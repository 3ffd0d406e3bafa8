//! Clients of the systems around the platform: command-line tools and HTTP APIs.

pub mod terraform;
pub mod vault;
