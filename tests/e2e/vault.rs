//! Vault as a user meets it: `vault:<path>#<key>` values resolved at
//! start-up and the profile's platform secrets written as Secrets, by the
//! binary, against a stub that answers as Vault's KV v2 and Kubernetes auth
//! APIs document and checks the token on every request.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use maily_deploy::exit_code;
use serde_json::json;
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support;
use crate::support::*;

const TOKEN: &str = "hvs.test-Vault-token-9f3a";

struct VaultWorld {
    world: World,
    vault: MockServer,
}

impl VaultWorld {
    fn new() -> VaultWorld {
        let world = World::new(Duration::from_millis(200));
        let vault = world.rt.block_on(MockServer::start());
        VaultWorld { world, vault }
    }

    fn mount(&self, mock: Mock) {
        self.world.rt.block_on(mock.mount(&self.vault));
    }

    /// A KV v2 secret the stub serves to `token` only, read once.
    fn secret(&self, at: &str, token: &str, data: serde_json::Value) {
        self.mount(support::vault::secret(at, token, data));
    }

    /// The manifests with the staging profile listing platform secrets.
    fn manifests_with_secrets(&self, secrets_yaml: &str) -> PathBuf {
        manifests_with(self.world.dir.path(), "staging", secrets_yaml)
    }

    fn deploy(&self, env: &[(&str, &str)], extra: &[&str]) -> Output {
        let mut vars = vec![("ROLLOUT_TIMEOUT", "60s")];
        vars.extend_from_slice(env);
        let file = self.world.env_file(&vars);
        self.world
            .maily()
            .arg("staging")
            .args(BACKEND_ONLY)
            .arg("--env-file")
            .arg(&file)
            .args(extra)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap()
    }

    fn addr(&self) -> String {
        self.vault.uri()
    }
}

#[test]
fn references_resolve_one_request_per_path_and_the_token_never_shows() {
    let w = VaultWorld::new();
    w.secret(
        "secret/data/maily/staging",
        TOKEN,
        json!({"image_tag": "v7-from-vault", "registry": "registry.example.invalid/maily"}),
    );
    let addr = w.addr();
    let out = w.deploy(
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_TOKEN", TOKEN),
            ("IMAGE_TAG", "vault:secret/maily/staging#image_tag"),
            ("IMAGE_REGISTRY", "vault:secret/maily/staging#registry"),
        ],
        &["-vv"],
    );
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(
        w.world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v7-from-vault")
    );
    let all = text(&out);
    assert!(!all.contains(TOKEN), "the token leaked: {all}");
    assert!(
        all.contains("from Vault"),
        "validate says where values came from: {all}"
    );
    // One request for the path both references share (expect(1) checks it).
    w.world.rt.block_on(w.vault.verify());
}

#[test]
fn each_failure_is_one_clear_error_per_reference_before_anything_changes() {
    let w = VaultWorld::new();
    w.secret(
        "secret/data/maily/staging",
        TOKEN,
        json!({"image_tag": "v1"}),
    );
    w.mount(
        Mock::given(method("GET"))
            .and(path("/v1/secret/data/maily/forbidden"))
            .respond_with(
                ResponseTemplate::new(403).set_body_json(json!({"errors": ["permission denied"]})),
            ),
    );
    w.mount(
        Mock::given(method("GET"))
            .and(path("/v1/secret/data/maily/missing"))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({"errors": []}))),
    );
    let addr = w.addr();
    let out = w.deploy(
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_TOKEN", TOKEN),
            ("IMAGE_TAG", "vault:secret/maily/staging#no_such_key"),
            ("IMAGE_REGISTRY", "vault:secret/maily/missing#registry"),
            ("ROLLOUT_TIMEOUT", "vault:secret/maily/forbidden#timeout"),
        ],
        &["--output", "json"],
    );
    assert_exit(&out, exit_code::CONFIG);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = doc["error"]["problems"].as_array().unwrap();
    let about = |subject: &str| -> String {
        problems
            .iter()
            .find(|p| p["subject"] == subject)
            .unwrap_or_else(|| panic!("no problem about {subject}: {doc}"))
            .to_string()
    };
    assert!(about("IMAGE_TAG").contains("has no key no_such_key (it has: image_tag)"));
    assert!(about("IMAGE_REGISTRY").contains("does not exist in Vault (404)"));
    assert!(about("ROLLOUT_TIMEOUT").contains("denied"));
    assert!(about("ROLLOUT_TIMEOUT").contains("permission denied"));
    assert_eq!(problems.len(), 3, "{doc}");
    assert!(!text(&out).contains(TOKEN));
    assert!(
        w.world.deployment("api-blue").is_none(),
        "nothing was applied"
    );
    assert!(w.world.snapshots().is_empty(), "the run never started");
}

#[test]
fn an_unreachable_vault_stops_a_run_and_a_dry_run_alike() {
    let w = VaultWorld::new();
    for extra in [&[][..], &["--dry-run"][..]] {
        let out = w.deploy(
            &[
                ("VAULT_ADDR", "http://127.0.0.1:9"),
                ("VAULT_TOKEN", TOKEN),
                ("IMAGE_TAG", "vault:secret/maily/staging#image_tag"),
            ],
            extra,
        );
        assert_exit(&out, exit_code::CONFIG);
        let all = text(&out);
        assert!(all.contains("IMAGE_TAG"), "{all}");
        assert!(
            all.contains("Vault at http://127.0.0.1:9 cannot be reached"),
            "{all}"
        );
        assert!(!all.contains(TOKEN));
    }
    assert!(w.world.deployment("api-blue").is_none());
}

/// Variables as written are checked before Vault is asked anything: a typo
/// is named with every other problem at once, and Vault never sees a run
/// that could not go ahead anyway.
#[test]
fn bad_variables_are_all_named_before_vault_is_asked() {
    let w = VaultWorld::new();
    let addr = w.addr();
    let out = w.deploy(
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_TOKEN", TOKEN),
            ("IMAGE_TAG", "vault:secret/maily/staging#image_tag"),
            ("UNSCHEDULABLE_GRACE", "soon"),
            ("IMAGE_PINNING", "maybe"),
        ],
        &[],
    );
    assert_exit(&out, exit_code::CONFIG);
    let all = text(&out);
    assert!(all.contains("UNSCHEDULABLE_GRACE"), "{all}");
    assert!(all.contains("IMAGE_PINNING"), "{all}");
    let requests = w.world.rt.block_on(w.vault.received_requests()).unwrap();
    assert!(requests.is_empty(), "Vault was asked: {requests:?}");
}

/// HCP Vault and Vault Enterprise serve a namespace's mounts only to
/// requests that name it in `X-Vault-Namespace`.
#[test]
fn a_vault_namespace_is_named_on_every_request() {
    use wiremock::matchers::header;
    let w = VaultWorld::new();
    w.mount(
        Mock::given(method("GET"))
            .and(path("/v1/secret/data/maily/staging"))
            .and(header("X-Vault-Token", TOKEN))
            .and(header("X-Vault-Namespace", "admin/maily"))
            .respond_with(support::vault::kv(json!({"image_tag": "v9-ns"})))
            .expect(1),
    );
    let addr = w.addr();
    let out = w.deploy(
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_TOKEN", TOKEN),
            ("VAULT_NAMESPACE", "admin/maily"),
            ("IMAGE_TAG", "vault:secret/maily/staging#image_tag"),
        ],
        &[],
    );
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(
        w.world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v9-ns")
    );
    w.world.rt.block_on(w.vault.verify());
}

#[test]
fn kubernetes_auth_logs_in_with_the_service_account_token_and_role() {
    let w = VaultWorld::new();
    let jwt = "eyJhbGciOiJSUzI1NiJ9.service-account-jwt.sig";
    let jwt_file = w.world.dir.path().join("sa-token");
    std::fs::write(&jwt_file, format!("{jwt}\n")).unwrap();
    let client_token = "hvs.from-kubernetes-login-77";
    w.mount(
        Mock::given(method("POST"))
            .and(path("/v1/auth/kubernetes/login"))
            .and(body_json(json!({"role": "maily-deploy", "jwt": jwt})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "auth": {"client_token": client_token, "accessor": "acc", "policies": ["maily"],
                         "lease_duration": 3600, "renewable": true}
            })))
            .expect(1),
    );
    w.secret(
        "secret/data/maily/staging",
        client_token,
        json!({"image_tag": "v8-k8s"}),
    );
    let addr = w.addr();
    let out = w.deploy(
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_AUTH_METHOD", "kubernetes"),
            ("VAULT_ROLE", "maily-deploy"),
            ("VAULT_SERVICE_ACCOUNT_TOKEN_FILE", path_str(&jwt_file)),
            ("IMAGE_TAG", "vault:secret/maily/staging#image_tag"),
        ],
        &["-vv"],
    );
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(
        w.world.image("api-blue").as_deref(),
        Some("registry.example.invalid/maily/maily-api:v8-k8s")
    );
    let all = text(&out);
    assert!(!all.contains(client_token), "{all}");
    assert!(!all.contains("service-account-jwt"), "{all}");
    w.world.rt.block_on(w.vault.verify());
}

#[test]
fn platform_secrets_from_the_profile_become_secrets_never_snapshots() {
    let w = VaultWorld::new();
    let db = "postgres://maily:Db-pass-from-vault-1@db.internal:5432/maily";
    w.secret(
        "secret/data/maily/staging",
        TOKEN,
        json!({"database_url": db, "openai": "sk-vault-openai-123"}),
    );
    w.secret(
        "secret/data/maily/signer",
        TOKEN,
        json!({"private_key": "0xdeadbeef-signer-key"}),
    );
    let manifests = w.manifests_with_secrets(
        "secrets:\n  maily-platform-secrets:\n    DATABASE_URL: secret/maily/staging#database_url\n    OPENAI_API_KEY: vault:secret/maily/staging#openai\n    SIGNER_PRIVATE_KEY: secret/maily/signer#private_key\n",
    );
    let addr = w.addr();
    let out = w.deploy(
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_TOKEN", TOKEN),
            ("IMAGE_TAG", "v1"),
        ],
        &["--manifests-dir", path_str(&manifests), "-v"],
    );
    assert_exit(&out, exit_code::SUCCESS);

    let api: Api<Secret> = Api::namespaced(w.world.client.clone(), NAMESPACE);
    let secret = w
        .world
        .rt
        .block_on(api.get("maily-platform-secrets"))
        .expect("the platform Secret exists");
    let data = secret.data.unwrap();
    let get = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    assert_eq!(get("DATABASE_URL"), db);
    assert_eq!(get("OPENAI_API_KEY"), "sk-vault-openai-123");
    assert_eq!(get("SIGNER_PRIVATE_KEY"), "0xdeadbeef-signer-key");

    let all = text(&out);
    for value in [
        "Db-pass-from-vault-1",
        "sk-vault-openai-123",
        "0xdeadbeef-signer-key",
        TOKEN,
    ] {
        assert!(!all.contains(value), "{value} shown: {all}");
    }
    let snapshots = serde_json::to_string(&w.world.snapshots()).unwrap();
    for value in [
        "Db-pass-from-vault-1",
        "sk-vault-openai-123",
        "0xdeadbeef-signer-key",
    ] {
        assert!(!snapshots.contains(value), "{value} is in a snapshot");
    }
    w.world.rt.block_on(w.vault.verify());
}

/// The daily backup CronJob as the node runs it: its command line, with the
/// environment its two Secrets give the pod, through the real `pg_dump` to
/// the tests' PostgreSQL. `ps` on a node shows every process's argv to
/// every user, so the password must reach pg_dump through its environment.
/// What it uploads (the dump and the record the tool writes for its own)
/// is listed by `db backups` and restored by `db restore <env> daily`.
#[test]
fn the_daily_backup_job_dumps_with_no_password_on_its_command_line_and_db_restore_takes_it() {
    use k8s_openapi::api::batch::v1::CronJob;
    use support::postgres::{Database, psql};

    let w = VaultWorld::new();
    let db = Database::new("cron");
    psql(
        "CREATE TABLE contacts_kept_by_cron (id int); INSERT INTO contacts_kept_by_cron VALUES (1)",
        &db.0,
    );
    // sqlx's bookkeeping, as migrations leave it: the schema version is the
    // newest that succeeded (a failed -- no-transaction one stays behind).
    psql(
        "CREATE TABLE _sqlx_migrations (version bigint PRIMARY KEY, description text NOT NULL, \
         installed_on timestamptz NOT NULL DEFAULT now(), success boolean NOT NULL, \
         checksum bytea NOT NULL, execution_time bigint NOT NULL); \
         INSERT INTO _sqlx_migrations VALUES \
         (20250101000001, 'contacts', now(), true, '\\x01', 5), \
         (20250601000002, 'kept by cron', now(), true, '\\x02', 7), \
         (20990101000003, 'failed half-way', now(), false, '\\x03', 1)",
        &db.0,
    );
    // Percent-encoded in the URL; libpq must get it decoded.
    let url = db.url_with_password("Cron%2Fpass%40vault-7");
    let password = "Cron/pass@vault-7";
    w.secret(
        "secret/data/maily/staging",
        TOKEN,
        json!({"database_url": url}),
    );
    let manifests = w.manifests_with_secrets(
        "secrets:\n  maily-platform-secrets:\n    DATABASE_URL: secret/maily/staging#database_url\n",
    );
    // The node: /tmp is the pod's emptyDir, upload-backup the image's
    // uploader (here: a copy to the file:// backup location's directory).
    let node = tempfile::tempdir().unwrap();
    let bin = node.path().join("bin");
    let bucket = node.path().join("bucket");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&bucket).unwrap();
    let backup_url = format!("file://{}/", bucket.display());
    let addr = w.addr();
    let out = w.deploy(
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_TOKEN", TOKEN),
            ("IMAGE_TAG", "v1"),
            ("DATABASE_BACKUP_URL", &backup_url),
        ],
        &["--manifests-dir", path_str(&manifests), "-v"],
    );
    assert_exit(&out, exit_code::SUCCESS);
    let all = text(&out);
    for shown in [password, "Cron%2Fpass%40vault-7"] {
        assert!(!all.contains(shown), "{shown} shown: {all}");
    }

    let rt = &w.world.rt;
    let jobs: Api<CronJob> = Api::namespaced(w.world.client.clone(), NAMESPACE);
    let job = rt.block_on(jobs.get("database-backup")).unwrap();
    let pod = job
        .spec
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let container = &pod.containers[0];
    let command_line = [
        container.command.clone().unwrap_or_default(),
        container.args.clone().unwrap_or_default(),
    ]
    .concat();
    let script = command_line.last().unwrap().clone();
    assert!(
        !script.contains("DATABASE_URL") && !script.contains("--dbname"),
        "pg_dump is handed the URL on its command line: {script}"
    );

    // The pod's environment: its envFrom Secrets, in order (a later one
    // wins), as the kubelet builds it.
    let secrets: Api<Secret> = Api::namespaced(w.world.client.clone(), NAMESPACE);
    let mut env = std::collections::BTreeMap::new();
    for from in container.env_from.clone().unwrap_or_default() {
        let name = from
            .secret_ref
            .expect("the job's env comes from Secrets")
            .name;
        let secret = rt
            .block_on(secrets.get(&name))
            .unwrap_or_else(|e| panic!("the job's Secret {name} is not there: {e}"));
        for (k, v) in secret.data.unwrap_or_default() {
            env.insert(k, String::from_utf8(v.0).unwrap());
        }
    }
    assert_eq!(env.get("PGPASSWORD").map(String::as_str), Some(password));
    assert_eq!(env.get("PGDATABASE"), Some(&db.0));
    assert_eq!(env.get("PGSSLMODE").map(String::as_str), Some("disable"));

    let uploader = bin.join("upload-backup");
    std::fs::write(
        &uploader,
        "#!/bin/sh\nset -eu\ndest=${2#file://}\nmkdir -p \"$(dirname \"$dest\")\"\ncp \"$1\" \"$dest\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&uploader, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The script's own files, in the pod's /tmp (not the backup location,
    // which is under this machine's /tmp too).
    let script = script.replace("/tmp/backup", &format!("{}/backup", node.path().display()));
    let ran = std::process::Command::new(&command_line[0])
        .args(&command_line[1..command_line.len() - 1])
        .arg(&script)
        .env_clear()
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .envs(&env)
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "the job failed: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let uploaded: Vec<String> = std::fs::read_dir(bucket.join("daily"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(uploaded.len(), 2, "a dump and its record: {uploaded:?}");
    let dump = uploaded.iter().find(|n| n.ends_with(".dump")).unwrap();
    let listed = std::process::Command::new("pg_restore")
        .arg("--list")
        .arg(bucket.join("daily").join(dump))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("contacts_kept_by_cron"),
        "the uploaded dump is not this database's: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    // Its record is the tool's own: listed, and restored with every check
    // a restore makes, as `db restore <env> daily` (the newest daily).
    let db_env = w
        .world
        .env_file(&[("DATABASE_URL", &url), ("DATABASE_BACKUP_URL", &backup_url)]);
    let out = w
        .world
        .maily()
        .args(["db", "backups", "staging", "-o", "json", "--env-file"])
        .arg(&db_env)
        .output()
        .unwrap();
    assert_exit(&out, exit_code::SUCCESS);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["daily"], json!([]), "listed as a record: {doc}");
    let record = &doc["backups"][0];
    assert_eq!(record["reason"], "daily", "{doc}");
    assert_eq!(record["deployment_id"], "daily");
    assert_eq!(
        record["name"],
        format!("daily/{}", dump.trim_end_matches(".dump"))
    );
    assert_eq!(record["verified"], true);
    assert_eq!(record["schema_version"], 20250601000002_i64, "{record}");
    assert!(
        maily_deploy::db::same_database(
            record["database"].as_str().unwrap(),
            &maily_deploy::db::MigrateSettings::new(&url, "x").target()
        ),
        "{record}"
    );
    psql("DELETE FROM contacts_kept_by_cron", &db.0);
    let out = w
        .world
        .maily()
        .args(["db", "restore", "staging", "daily", "--yes", "--env-file"])
        .arg(&db_env)
        .output()
        .unwrap();
    assert_exit(&out, exit_code::SUCCESS);
    assert_eq!(
        psql("SELECT count(*) FROM contacts_kept_by_cron", &db.0),
        "1",
        "the daily backup's row is back"
    );
    assert!(!text(&out).contains(password), "{}", text(&out));
    w.world.rt.block_on(w.vault.verify());
}

/// Each slot's pods read their own copy of the platform's secrets, written
/// when a release goes into that slot: a deploy whose Vault values changed
/// (a rotated key) never changes what the slot users are on reads, even as
/// its pods restart, and a rollback finds the values it ran with.
#[test]
fn a_deploy_never_changes_the_secrets_the_slot_users_are_on_reads() {
    let w = VaultWorld::new();
    w.mount(
        support::vault::serve(
            "secret/data/maily/staging",
            TOKEN,
            json!({"openai": "sk-before-rotation-1"}),
        )
        .up_to_n_times(1)
        .with_priority(1),
    );
    w.mount(support::vault::serve(
        "secret/data/maily/staging",
        TOKEN,
        json!({"openai": "sk-after-rotation-2"}),
    ));
    let manifests = w.manifests_with_secrets(
        "secrets:\n  maily-platform-secrets:\n    OPENAI_API_KEY: secret/maily/staging#openai\n",
    );
    let addr = w.addr();
    let vars = [("VAULT_ADDR", addr.as_str()), ("VAULT_TOKEN", TOKEN)];
    for tag in ["v1", "v2"] {
        let mut env = vars.to_vec();
        env.push(("IMAGE_TAG", tag));
        let out = w.deploy(&env, &["--manifests-dir", path_str(&manifests)]);
        assert_exit(&out, exit_code::SUCCESS);
    }
    let api: Api<Secret> = Api::namespaced(w.world.client.clone(), NAMESPACE);
    let key = |name: &str| {
        let s = w.world.rt.block_on(api.get(name)).unwrap();
        String::from_utf8(s.data.unwrap()["OPENAI_API_KEY"].0.clone()).unwrap()
    };
    assert_eq!(key("maily-platform-secrets-blue"), "sk-before-rotation-1");
    assert_eq!(key("maily-platform-secrets-green"), "sk-after-rotation-2");
    assert_eq!(key("maily-platform-secrets"), "sk-after-rotation-2");
    for slot in ["blue", "green"] {
        let d = w.world.deployment(&format!("api-{slot}")).unwrap();
        let from = d.spec.unwrap().template.spec.unwrap().containers[0]
            .env_from
            .clone()
            .unwrap();
        assert!(
            from.iter().any(|f| f
                .secret_ref
                .as_ref()
                .is_some_and(|r| r.name == format!("maily-platform-secrets-{slot}"))),
            "api-{slot} reads {from:?}"
        );
    }
}

#[test]
fn a_refused_kubernetes_login_is_named_for_each_reference() {
    let w = VaultWorld::new();
    let jwt_file = w.world.dir.path().join("sa-token");
    std::fs::write(&jwt_file, "eyJ.some-sa-jwt.sig").unwrap();
    w.mount(
        Mock::given(method("POST"))
            .and(path("/v1/auth/kubernetes/login"))
            .respond_with(
                ResponseTemplate::new(403)
                    .set_body_json(json!({"errors": ["service account name not authorized"]})),
            ),
    );
    let addr = w.addr();
    let out = w.deploy(
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_AUTH_METHOD", "kubernetes"),
            ("VAULT_ROLE", "maily-deploy"),
            ("VAULT_SERVICE_ACCOUNT_TOKEN_FILE", path_str(&jwt_file)),
            ("IMAGE_TAG", "vault:secret/maily/staging#image_tag"),
            ("IMAGE_REGISTRY", "vault:secret/maily/images#registry"),
        ],
        &[],
    );
    assert_exit(&out, exit_code::CONFIG);
    let all = text(&out);
    for subject in ["IMAGE_TAG", "IMAGE_REGISTRY"] {
        assert!(all.contains(subject), "{all}");
    }
    assert!(
        all.contains("the Kubernetes login to Vault failed: Vault answered 403: service account name not authorized"),
        "{all}"
    );
    assert!(!all.contains("some-sa-jwt"), "{all}");
    assert!(w.world.deployment("api-blue").is_none());
}
