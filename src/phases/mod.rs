//! One module per phase. `all` is the pipeline, in order.

pub mod configure_ai;
pub mod deploy_backend;
pub mod deploy_frontend;
pub mod migrate;
pub mod monitor;
pub mod provision;
pub mod shift_traffic;
pub mod validate;
pub mod verify;

use crate::pipeline::{Phase, PhaseId};

/// Every phase of the pipeline, in order.
pub fn all() -> Vec<Box<dyn Phase>> {
    PhaseId::ALL
        .iter()
        .map(|&id| -> Box<dyn Phase> {
            match id {
                PhaseId::Validate => Box::new(validate::Validate),
                PhaseId::Provision => Box::new(provision::Provision),
                PhaseId::Migrate => Box::new(migrate::Migrate),
                PhaseId::DeployBackend => Box::new(deploy_backend::DeployBackend),
                PhaseId::DeployFrontend => Box::new(deploy_frontend::DeployFrontend),
                PhaseId::ConfigureAi => Box::new(configure_ai::ConfigureAi::default()),
                PhaseId::Monitor => Box::new(monitor::Monitor),
                PhaseId::Verify => Box::new(verify::Verify),
                PhaseId::ShiftTraffic => Box::new(shift_traffic::ShiftTraffic),
            }
        })
        .collect()
}
