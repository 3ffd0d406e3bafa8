//! Phases that are in the pipeline but not built yet.
//!
//! They fail loudly, in a run and in a plan: a deploy that silently skipped
//! its migrations or its traffic shift would report a success that never
//! happened.

use async_trait::async_trait;

use crate::error::{Kind, fail};
use crate::pipeline::{Context, Phase, PhaseId, PhasePlan, PhaseReport};

pub struct NotBuilt(pub PhaseId);

impl NotBuilt {
    fn error(&self) -> anyhow::Error {
        fail(
            Kind::NotImplemented,
            format!(
                "{} is not implemented yet in this version of maily-deploy; skip it with {}",
                self.0,
                self.0.skip_flag()
            ),
        )
    }
}

#[async_trait]
impl Phase for NotBuilt {
    fn id(&self) -> PhaseId {
        self.0
    }

    fn is_built(&self) -> bool {
        false
    }

    async fn plan(&self, _cx: &Context) -> anyhow::Result<PhasePlan> {
        Err(self.error())
    }

    async fn run(&self, _cx: &mut Context) -> anyhow::Result<PhaseReport> {
        Err(self.error())
    }
}
