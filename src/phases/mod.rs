//! One module per phase. `all` is the pipeline, in order.

pub mod not_built;
pub mod validate;

use crate::pipeline::{Phase, PhaseId};

/// Every phase of the pipeline, in order.
pub fn all() -> Vec<Box<dyn Phase>> {
    PhaseId::ALL
        .iter()
        .map(|&id| -> Box<dyn Phase> {
            match id {
                PhaseId::Validate => Box::new(validate::Validate),
                other => Box::new(not_built::NotBuilt(other)),
            }
        })
        .collect()
}
