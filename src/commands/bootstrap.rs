//! `maily-deploy bootstrap ENV`: the YAML a cluster admin applies once per
//! environment, before the first deploy: the namespace and the deployer's
//! ServiceAccount, Role and ClusterRole. The deployer never grants itself
//! permissions; an admin reviews and applies them:
//!
//! ```text
//! maily-deploy bootstrap production | kubectl apply -f -
//! ```

use chrono::Utc;

use super::cluster;
use crate::cli::GlobalArgs;
use crate::k8s::manifest::{self, Scope};
use crate::k8s::values::{self, Release};

pub fn run(environment: &str, global: &GlobalArgs) -> anyhow::Result<i32> {
    let cx = cluster::context(environment, global, false, &[], false)?;
    let profile = &cx.config.profile;
    let release = Release {
        environment: environment.to_string(),
        deployment_id: format!("{environment}-bootstrap-{}", Utc::now().format("%Y%m%d")),
        image_registry: cx
            .config
            .vars
            .get("IMAGE_REGISTRY")
            .unwrap_or("unset")
            .to_string(),
        image_tag: cx
            .config
            .vars
            .get("IMAGE_TAG")
            .unwrap_or("unset")
            .to_string(),
        backup_url: cx
            .config
            .vars
            .get("DATABASE_BACKUP_URL")
            .unwrap_or_default()
            .to_string(),
        rollout_timeout_secs: 600,
    };
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
