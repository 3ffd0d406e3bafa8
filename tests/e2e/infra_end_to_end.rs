//! A staging deploy with the infrastructure phases on, as a user runs it:
//! the binary against kubesim, the terraform stand-in, a Vault stub and the
//! real PostgreSQL of this machine. Terraform's `database_url` output is the
//! database migrate migrates; Vault gives the image tag and the platform's
//! Secret; the backend rolls out and users switch.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use maily_deploy::exit_code;
use serde_json::json;
use wiremock::MockServer;

use crate::support;
use crate::support::postgres::Database;
use crate::support::terraform::StandIn;
use crate::support::*;

const TOKEN: &str = "hvs.e2e-Vault-token-51c";

#[test]
fn terraform_outputs_and_vault_secrets_flow_into_a_full_staging_deploy() {
    let world = World::new(Duration::from_millis(300));
    let db = Database::new("infra");
    let db_url = db.url();

    let vault = world.rt.block_on(MockServer::start());
    world.rt.block_on(
        support::vault::secret(
            "secret/data/maily/staging",
            TOKEN,
            json!({"image_tag": "v3", "openai": "sk-e2e-openai-key-42"}),
        )
        .mount(&vault),
    );

    let manifests = manifests_with(
        world.dir.path(),
        "staging",
        "secrets:\n  maily-platform-secrets:\n    OPENAI_API_KEY: secret/maily/staging#openai\n",
    );

    let terraform = StandIn::new(world.dir.path());
    let backups = world.dir.path().join("backups");
    let outputs = json!({
        "database_url": {"sensitive": true, "type": "string", "value": db_url},
        "cluster_name": {"sensitive": false, "type": "string", "value": "maily-staging-eks"}
    })
    .to_string();
    let env = world.env_file(&[
        ("DATABASE_URL", ""),
        ("TERRAFORM_PROVIDES", "DATABASE_URL"),
        ("TERRAFORM_DIR", path_str(&terraform.dir)),
        ("TERRAFORM_BIN", path_str(&StandIn::bin())),
        (
            "DATABASE_BACKUP_URL",
            &format!("file://{}/", backups.display()),
        ),
        ("IMAGE_TAG", "vault:secret/maily/staging#image_tag"),
        ("VAULT_ADDR", &vault.uri()),
        ("VAULT_TOKEN", TOKEN),
        ("ROLLOUT_TIMEOUT", "60s"),
    ]);
    let mut cmd = world.maily();
    cmd.arg("staging")
        .args([
            "--skip-frontend",
            "--skip-ai",
            "--skip-monitor",
            "--skip-verify",
        ])
        .arg("--env-file")
        .arg(&env)
        .arg("--manifests-dir")
        .arg(&manifests)
        .args(["--output", "json"])
        .timeout(Duration::from_secs(180));
    let out = terraform
        .answer(&mut cmd, "changes", &outputs)
        .output()
        .unwrap();
    assert_exit(&out, exit_code::SUCCESS);

    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<(String, String)> = doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().into(),
                p["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    for phase in [
        "validate",
        "provision",
        "migrate",
        "deploy-backend",
        "shift-traffic",
    ] {
        assert!(
            statuses.contains(&(phase.to_string(), "succeeded".to_string())),
            "{phase}: {statuses:?}"
        );
    }
    let log = terraform.commands();
    assert!(
        log.iter()
            .any(|l| l.ends_with(" apply -input=false -no-color $PLAN")),
        "{log:?}"
    );

    // migrate ran against the database terraform named.
    assert!(db.version() > 0, "the schema was migrated");
    // The backend runs the tag Vault gave, with the platform Secret.
    assert_eq!(
        world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v3")
    );
    assert_eq!(world.selected_slot("api").as_deref(), Some("blue"));
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), NAMESPACE);
    let platform = world
        .rt
        .block_on(secrets.get("maily-platform-secrets"))
        .unwrap();
    assert_eq!(
        platform.data.unwrap()["OPENAI_API_KEY"].0,
        b"sk-e2e-openai-key-42".to_vec()
    );

    let all = text(&out);
    for hidden in [TOKEN, "sk-e2e-openai-key-42", db_url.as_str()] {
        assert!(!all.contains(hidden), "{hidden} shown: {all}");
    }
    assert!(
        all.contains("filled from terraform outputs: DATABASE_URL"),
        "{all}"
    );
    let snapshots = serde_json::to_string(&world.snapshots()).unwrap();
    assert!(!snapshots.contains("sk-e2e-openai-key-42"));
    world.rt.block_on(vault.verify());
}
