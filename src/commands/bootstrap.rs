//! `maily-deploy bootstrap ENV`: the YAML a cluster admin applies once per
//! environment, before the first deploy: the namespace and the deployer's
//! ServiceAccount, Role and ClusterRole. The deployer never grants itself
//! permissions; an admin reviews and applies them:
//!
//! ```text
//! maily-deploy bootstrap production | kubectl apply -f -
//! ```

use super::cluster;
use crate::cli::GlobalArgs;
use crate::k8s::manifest::{self, Scope};
use crate::k8s::values;

pub fn run(environment: &str, global: &GlobalArgs) -> anyhow::Result<i32> {
    let cx = cluster::context(environment, global, false, &[], false)?;
    let profile = &cx.config.profile;
    // The bootstrap objects name no image; whatever the variables say will do.
    let release = cx.release_or_partial();
    let values = values::common(&release, profile);
    let templates = cx.templates()?;
    let mut objects: Vec<_> = manifest::render(templates, &[Scope::Platform], &values)?
        .into_iter()
        .filter(|(_, o)| o.types.as_ref().is_some_and(|t| t.kind == "Namespace"))
        .collect();
    objects.extend(manifest::render(templates, &[Scope::Bootstrap], &values)?);
    let mut out = String::new();
    for (file, object) in objects {
        out.push_str(&format!("---\n# from {file}\n"));
        out.push_str(&serde_saphyr::to_string(&object)?);
    }
    print!("{out}");
    Ok(crate::exit_code::SUCCESS)
}
