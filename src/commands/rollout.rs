//! promote and abort (being written)
use crate::cli::GlobalArgs;
use crate::traffic::record::Action;
pub async fn request(_environment: &str, _action: Action, _global: &GlobalArgs) -> anyhow::Result<i32> {
    Err(crate::error::fail(crate::error::Kind::NotImplemented, "not yet"))
}
