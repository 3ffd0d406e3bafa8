//! A staging deploy with the infrastructure phases on, as a user runs it:
//! the binary against kubesim, the terraform stand-in, a Vault stub and the
//! real PostgreSQL of this machine. Terraform's `database_url` output is the
//! database migrate migrates; Vault gives the image tag and the platform's
//! Secret; the backend rolls out and users switch.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use maily_deploy::exit_code;
use serde_json::json;
use support::*;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "hvs.e2e-Vault-token-51c";

fn psql(sql: &str, db: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-tAc", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Database(String);

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0))
            .output();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn terraform_outputs_and_vault_secrets_flow_into_a_full_staging_deploy() {
    let world = World::new(Duration::from_millis(300));
    let db = Database(format!("maily_infra_{}", rand_suffix().replace('-', "_")));
    psql(&format!("CREATE DATABASE {}", db.0), "postgres");
    let db_url = format!(
        "postgres://postgres@127.0.0.1:5432/{}?sslmode=disable",
        db.0
    );

    let vault = world.rt.block_on(MockServer::start());
    let kv = |data: serde_json::Value| {
        ResponseTemplate::new(200).set_body_json(json!({
            "data": {"data": data, "metadata": {"version": 1, "deletion_time": "", "destroyed": false}}
        }))
    };
    world.rt.block_on(
        Mock::given(method("GET"))
            .and(path("/v1/secret/data/maily/staging"))
            .and(header("X-Vault-Token", TOKEN))
            .respond_with(kv(
                json!({"image_tag": "v3", "openai": "sk-e2e-openai-key-42"}),
            ))
            .expect(1)
            .mount(&vault),
    );

    let manifests = world.dir.path().join("manifests");
    copy_dir(&repo().join("manifests"), &manifests);
    let profile = manifests.join("environments/staging.yaml");
    let shipped = std::fs::read_to_string(&profile).unwrap();
    std::fs::write(
        &profile,
        format!("{shipped}\nsecrets:\n  maily-platform-secrets:\n    OPENAI_API_KEY: secret/maily/staging#openai\n"),
    )
    .unwrap();

    let tf_dir = world.dir.path().join("terraform");
    std::fs::create_dir_all(&tf_dir).unwrap();
    let tf_log = world.dir.path().join("terraform.log");
    let backups = world.dir.path().join("backups");
    let outputs = json!({
        "database_url": {"sensitive": true, "type": "string", "value": db_url},
        "cluster_name": {"sensitive": false, "type": "string", "value": "maily-staging-eks"}
    })
    .to_string();
    let env = world.env_file(&[
        ("DATABASE_URL", ""),
        ("TERRAFORM_PROVIDES", "DATABASE_URL"),
        ("TERRAFORM_DIR", path_str(&tf_dir)),
        (
            "TERRAFORM_BIN",
            path_str(&repo().join("tests/fixtures/bin/terraform")),
        ),
        (
            "DATABASE_BACKUP_URL",
            &format!("file://{}/", backups.display()),
        ),
        ("IMAGE_TAG", "vault:secret/maily/staging#image_tag"),
        ("VAULT_ADDR", &vault.uri()),
        ("VAULT_TOKEN", TOKEN),
        ("ROLLOUT_TIMEOUT", "60s"),
    ]);
    let out = world
        .maily()
        .arg("staging")
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
        .env("TF_STANDIN_LOG", &tf_log)
        .env("TF_STANDIN_SCENARIO", "changes")
        .env("TF_STANDIN_OUTPUTS", &outputs)
        .timeout(Duration::from_secs(180))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(exit_code::SUCCESS),
        "{}",
        text(&out)
    );

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
    let log = std::fs::read_to_string(&tf_log).unwrap();
    assert!(
        log.contains("apply -input=false -no-color maily-deploy.tfplan"),
        "{log}"
    );

    // migrate ran against the database terraform named.
    let version: i64 = psql(
        "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success",
        &db.0,
    )
    .parse()
    .unwrap();
    assert!(version > 0, "the schema was migrated");
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
