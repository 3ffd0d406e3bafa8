//! maily-deploy: takes the Maily platform to production, proves the new
//! version works before users see it, and takes it back when it does not.
//!
//! The binary is a thin shell over this library (see `main.rs`), so tests
//! drive the same code the command line does.

pub mod child_output;
pub mod cli;
pub mod commands;
pub mod completion;
pub mod config;
pub mod db;
pub mod error;
pub mod exit_code;
pub mod image;
pub mod interrupt;
pub mod k8s;
pub mod logging;
pub mod notify;
pub mod output;
pub mod phases;
pub mod pipeline;
pub mod providers;
pub mod redact;
pub mod traffic;
pub mod usage;
pub mod warnings;
pub mod wording;
