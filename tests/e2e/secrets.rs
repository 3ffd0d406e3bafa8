//! Secrets as a leak-hunter meets them: what the run writes to the cluster
//! (snapshots, printed again by `history` on machines without the env
//! file), what validate accepts as a secret, and what a Vault error says.

use std::path::PathBuf;
use std::time::Duration;

use assert_cmd::Command;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;
use maily_deploy::exit_code;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::vercel::{TOKEN, stub};
use crate::support::*;

/// The binary with a clean environment and no cluster.
fn offline() -> Command {
    let mut cmd = Command::cargo_bin("maily-deploy").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .current_dir(repo());
    cmd
}

/// `.env.example` with these lines replaced, in `dir`.
fn env_file(dir: &std::path::Path, changes: &[(&str, &str)]) -> PathBuf {
    let text = std::fs::read_to_string(repo().join(".env.example")).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !changes.iter().any(|(k, _)| l.starts_with(&format!("{k}="))))
        .map(String::from)
        .collect();
    for (k, v) in changes {
        lines.push(format!("{k}={v}"));
    }
    let file = dir.join(format!("env-{}", rand_suffix()));
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    file
}

/// Every snapshot Secret's data, decompressed, as stored.
fn stored_snapshots(world: &World) -> String {
    let api: Api<Secret> = Api::namespaced(world.client.clone(), &world.namespace);
    let list = world
        .rt
        .block_on(
            api.list(&ListParams::default().labels("app.kubernetes.io/managed-by=maily-deploy")),
        )
        .unwrap();
    let mut all = String::new();
    for s in list.items {
        for bytes in s.data.unwrap_or_default().values() {
            let mut json = String::new();
            let _ = std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(&bytes.0[..]),
                &mut json,
            );
            all.push_str(&json);
        }
    }
    all
}

#[test]
fn a_provider_error_repeating_the_token_is_kept_by_no_snapshot_and_printed_by_no_history() {
    let world = World::new(Duration::from_millis(300));
    let stub = stub(&world, Some("dpl_old"));
    stub.vercel.state().echo_request = true;
    let mut vars = vec![("IMAGE_TAG", "v1"), ("ROLLOUT_TIMEOUT", "60s")];
    let vercel = stub.vars();
    vars.extend(vercel.iter().map(|(k, v)| (*k, v.as_str())));
    let env = world.env_file(&vars);
    let out = world
        .maily()
        .arg("staging")
        .args([
            "--skip-provision",
            "--skip-migrate",
            "--skip-ai",
            "--skip-monitor",
            "--skip-verify",
            "--env-file",
        ])
        .arg(&env)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::PHASE_FAILED_ROLLED_BACK);
    let all = text(&out);
    assert!(all.contains("Invalid request"), "Vercel's message: {all}");
    assert!(!all.contains(TOKEN), "printed: {all}");

    let stored = stored_snapshots(&world);
    assert!(
        stored.contains("Invalid request"),
        "the failure is kept: {stored}"
    );
    assert!(
        !stored.contains(TOKEN),
        "the token is in a snapshot: {stored}"
    );
    assert!(stored.contains("[REDACTED"), "{stored}");

    // Another machine, without the env file that registered the token.
    let history = world
        .maily()
        .args(["history", "staging", "--output", "json"])
        .output()
        .unwrap();
    assert_exit(&history, exit_code::SUCCESS);
    let all = text(&history);
    assert!(all.contains("Invalid request"), "{all}");
    assert!(!all.contains(TOKEN), "history printed the token: {all}");
}

#[test]
fn a_blank_or_short_secret_is_refused_naming_the_variable_never_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = env_file(
        dir.path(),
        &[
            ("VERCEL_TOKEN", "\"   \""),
            ("GRAFANA_API_TOKEN", "gl_ab12"),
        ],
    );
    let out = offline()
        .args(["validate", "staging", "--env-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_exit(&out, exit_code::CONFIG);
    let all = text(&out);
    assert!(all.contains("VERCEL_TOKEN is blank"), "{all}");
    assert!(
        all.contains("GRAFANA_API_TOKEN is shorter than 8 characters"),
        "{all}"
    );
    assert!(!all.contains("gl_ab12"), "{all}");
    // Nothing else was blotted out: the env file's words are all there.
    assert!(all.contains("deploy-frontend"), "{all}");
}

/// A hosted Prometheus or Grafana is reached with credentials in its URL;
/// such a URL is a secret whatever the variable, in `validate`'s list, a
/// dry run's plan and every error that names the server.
#[test]
fn credentials_in_any_url_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let file = env_file(
        dir.path(),
        &[
            (
                "PROMETHEUS_URL",
                "https://123456:glc_S3cretKey0123456789@prom.example.invalid/api/prom",
            ),
            (
                "GRAFANA_URL",
                "https://ghp0Token0123456789abcd@grafana.example.invalid",
            ),
            (
                "VERIFY_BASE_URL",
                "https://verify.example.invalid/?access_token=Qtok3nInTheQuery42",
            ),
        ],
    );
    for args in [
        &["validate", "staging", "-v", "--env-file"][..],
        &[
            "staging",
            "--dry-run",
            "--only",
            "validate,monitor",
            "-v",
            "--env-file",
        ][..],
    ] {
        let out = offline().args(args).arg(&file).output().unwrap();
        let all = text(&out);
        assert!(all.contains("PROMETHEUS_URL"), "{args:?}: {all}");
        assert!(!all.contains("glc_S3cretKey0123456789"), "{args:?}: {all}");
        assert!(!all.contains("ghp0Token0123456789abcd"), "{args:?}: {all}");
        assert!(!all.contains("Qtok3nInTheQuery42"), "{args:?}: {all}");
    }
}

/// A credential URL validation refuses, one too long to echo whole, or
/// one typed where something else was expected (an environment's name, a
/// flag's value, a service's image) is never registered as a secret: the
/// password is hidden all the same.
#[test]
fn credentials_in_a_refused_or_misplaced_url_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let long_key = format!("glc_eyJrIjoiSECRETKEY{}", "0123456789".repeat(8));
    let file = env_file(
        dir.path(),
        &[
            ("PROMETHEUS_URL", "https://u:pwPROMxyz123@"),
            (
                "VAULT_ADDR",
                &format!("https://12345:{long_key}@vault.example.invalid:99999/v1"),
            ),
        ],
    );
    let out = offline()
        .args(["validate", "staging", "--env-file"])
        .arg(&file)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(exit_code::CONFIG), "{all}");
    assert!(
        all.contains("PROMETHEUS_URL") && all.contains("VAULT_ADDR"),
        "{all}"
    );
    assert!(!all.contains("pwPROMxyz123"), "{all}");
    assert!(!all.contains("glc_eyJrIjoi"), "{all}");

    let shipped =
        std::fs::read_to_string(repo().join("manifests/environments/staging.yaml")).unwrap();
    let manifests = dir.path().join("manifests");
    copy_dir(&repo().join("manifests"), &manifests);
    std::fs::write(
        manifests.join("environments/staging.yaml"),
        shipped.replacen(
            "  api:\n    kind: http\n",
            "  api:\n    kind: http\n    image: https://bob:hunter2secret@reg.example/x:y\n",
            1,
        ),
    )
    .unwrap();
    let misplaced = "https://bob:hunter2secret@reg.example";
    for args in [
        vec![
            "validate",
            "staging",
            "--manifests-dir",
            path_str(&manifests),
        ],
        vec!["validate", misplaced],
        vec!["staging", "--dry-run", "--grace", misplaced],
        vec!["rollback", "staging", misplaced],
    ] {
        let out = offline().args(&args).output().unwrap();
        let all = text(&out);
        assert_ne!(
            out.status.code(),
            Some(exit_code::SUCCESS),
            "{args:?}: {all}"
        );
        assert!(!all.contains("hunter2secret"), "{args:?}: {all}");
    }
}

/// The same URLs kept in Vault: a variable the spec calls an address is
/// not a secret by name, but a credential in its URL still is.
#[test]
fn credentials_in_a_url_kept_in_vault_are_never_printed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token = "hvs.secrets-test-token-78";
    let vault = rt.block_on(async {
        let vault = MockServer::start().await;
        crate::support::vault::secret(
            "secret/data/maily/staging",
            token,
            serde_json::json!({
                "prometheus": "https://123456:glc_V4ultKey0123456789@prom.example.invalid/api/prom",
                "grafana": "https://ghp0V4ult0123456789abcd@grafana.example.invalid",
            }),
        )
        .mount(&vault)
        .await;
        vault
    });
    let dir = tempfile::tempdir().unwrap();
    let file = env_file(
        dir.path(),
        &[
            ("VAULT_ADDR", &vault.uri()),
            ("VAULT_TOKEN", token),
            ("PROMETHEUS_URL", "vault:secret/maily/staging#prometheus"),
            ("GRAFANA_URL", "vault:secret/maily/staging#grafana"),
        ],
    );
    let out = offline()
        .args(["staging", "--dry-run", "--only", "validate,monitor", "-v"])
        .arg("--env-file")
        .arg(&file)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::SUCCESS);
    let all = text(&out);
    // The plan says which it would reach, not what gets in.
    assert!(
        all.contains("Prometheus [REDACTED:PROMETHEUS_URL]"),
        "{all}"
    );
    assert!(all.contains("Grafana [REDACTED:GRAFANA_URL]"), "{all}");
    assert!(!all.contains("glc_V4ultKey0123456789"), "{all}");
    assert!(!all.contains("ghp0V4ult0123456789abcd"), "{all}");
    assert!(!all.contains(token), "{all}");
    rt.block_on(vault.verify());
}

#[test]
fn a_vault_error_names_the_variable_and_its_reference() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let vault = rt.block_on(async {
        let vault = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/secret/data/maily/staging"))
            .respond_with(
                ResponseTemplate::new(404).set_body_json(serde_json::json!({"errors": []})),
            )
            .mount(&vault)
            .await;
        vault
    });
    let dir = tempfile::tempdir().unwrap();
    let file = env_file(
        dir.path(),
        &[
            ("VAULT_ADDR", &vault.uri()),
            ("VAULT_TOKEN", "hvs.secrets-test-token-77"),
            ("VERCEL_TOKEN", "vault:secret/maily/staging#vercel_token"),
        ],
    );
    let out = offline()
        .args(["staging", "--dry-run", "--env-file"])
        .arg(&file)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::CONFIG);
    let all = text(&out);
    assert!(
        all.contains("VERCEL_TOKEN (vault:secret/maily/staging#vercel_token) cannot be resolved: secret/maily/staging does not exist in Vault (404)"),
        "{all}"
    );
    assert!(!all.contains("[REDACTED:VERCEL_TOKEN]"), "{all}");
    assert!(!all.contains("hvs.secrets-test-token-77"), "{all}");
}
