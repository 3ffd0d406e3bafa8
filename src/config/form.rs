//! The two forms a profile is held in, so that its values are parsed once.
//!
//! [`Written`] holds the traffic durations and the AI section as the YAML
//! gives them while the profile is checked, so every bad value is reported
//! together with the rest of the profile's problems. [`Parsed`] holds them
//! typed once the check passed: nothing after loading parses them again,
//! and no fallback can stand in for a value the check would have refused.

use std::fmt::Debug;
use std::time::Duration;

use super::ai::AiConfig;
use super::traffic::{Grace, Pause};

/// How a profile holds the values that need parsing.
pub trait Form: Debug + Clone + PartialEq {
    type Pause: Debug + Clone + PartialEq;
    type Grace: Debug + Clone + PartialEq;
    /// A duration with a default (the analysis interval and timeout):
    /// absent in the written form until the check fills the default.
    type Span: Debug + Clone + PartialEq + Default;
    type Ai: Debug + Clone + PartialEq;
}

/// The profile as its YAML gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written;

impl Form for Written {
    type Pause = String;
    type Grace = String;
    type Span = Option<String>;
    type Ai = serde_json::Value;
}

/// The profile once checked: every such value typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed;

impl Form for Parsed {
    type Pause = Pause;
    type Grace = Grace;
    type Span = Duration;
    type Ai = AiConfig;
}
