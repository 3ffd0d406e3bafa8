//! The pipeline: phase ids, selection, the runner and its report.

pub mod context;
pub mod deployment_id;
pub mod layers;
pub mod lifecycle;
pub mod phase;
pub mod progress;
pub mod report;
pub mod rollback;
pub mod runner;
pub mod selection;
pub mod snapshot;
pub mod undo;

pub use context::Context;
pub use deployment_id::DeploymentId;
pub use phase::{Phase, PhaseId, PhasePlan, PhaseReport};
pub use progress::Progress;
pub use report::{Outcome, PhaseRow, PhaseStatus, RunReport};
pub use runner::{Observer, Runner};
pub use selection::{Selection, SelectionFlags, SkipReason, select};
