//! Issue 6 end to end: `maily-deploy production` as a release manager runs
//! it, with every built phase on (validate, provision, migrate,
//! deploy-backend, deploy-frontend, shift-traffic), against kubesim, the
//! terraform stand-in, a Vault stub, a Vercel stub and the real PostgreSQL
//! of this machine. Terraform's `database_url` output is the database
//! migrate migrates; Vault gives the Vercel token and the platform's
//! secrets; the frontend is built unpromoted and promoted only once users
//! are on the new backend. A second release follows, then a rollback to the
//! first puts the backend and the frontend back.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use maily_deploy::db::MigrateAction;
use maily_deploy::exit_code;
use maily_deploy::phases::deploy_frontend::FrontendRecord;
use maily_deploy::phases::provision::InfrastructureRecord;
use maily_deploy::pipeline::snapshot::{Outcome, Snapshot};
use maily_deploy::providers::terraform::PlanSummary;
use serde_json::{Value, json};
use wiremock::MockServer;

use crate::support;
use crate::support::postgres::Database;
use crate::support::terraform::StandIn;
use crate::support::vercel::{self as vercel_stub, Stub, assert_clean, stub};
use crate::support::*;

const VAULT_TOKEN: &str = "hvs.production-Vault-token-e2e-91";
const DB_PASSWORD: &str = "Db-pass-production-e2e-3307";
const OPENAI_KEY: &str = "sk-production-openai-e2e-55";
const SIGNER_KEY: &str = "0xsigner-production-e2e-key-c0ffee";

/// Every value a user must never see printed.
const SECRETS: [&str; 5] = [
    VAULT_TOKEN,
    vercel_stub::TOKEN,
    DB_PASSWORD,
    OPENAI_KEY,
    SIGNER_KEY,
];

struct Production {
    world: World,
    vercel: Stub,
    vault: MockServer,
    terraform: StandIn,
    db: Database,
    manifests: PathBuf,
    backups: PathBuf,
}

impl Production {
    fn new() -> Production {
        let world = World::for_environment("production", Duration::from_millis(300));
        assert_eq!(world.namespace, "maily-production");

        let vercel = stub(&world, Some("dpl_old"));
        let (kubeconfig, namespace) = (
            world.sim().kubeconfig_path().to_path_buf(),
            world.namespace.clone(),
        );
        vercel.vercel.state().witness =
            Some(Arc::new(move || stable_selectors(&kubeconfig, &namespace)));

        let vault = world.rt.block_on(MockServer::start());
        world.rt.block_on(async {
            support::vault::serve(
                "secret/data/maily/production",
                VAULT_TOKEN,
                json!({"vercel_token": vercel_stub::TOKEN, "openai_api_key": OPENAI_KEY}),
            )
            .mount(&vault)
            .await;
            support::vault::serve(
                "secret/data/maily/signer",
                VAULT_TOKEN,
                json!({"private_key": SIGNER_KEY}),
            )
            .mount(&vault)
            .await;
        });

        // The shipped production profile, its platform secrets enabled.
        let manifests = manifests_with(
            world.dir.path(),
            "production",
            "secrets:\n  maily-platform-secrets:\n    OPENAI_API_KEY: secret/maily/production#openai_api_key\n    BLOCKCHAIN_SIGNER_KEY: secret/maily/signer#private_key\n",
        );
        let terraform = StandIn::new(world.dir.path());
        let backups = world.dir.path().join("backups");
        Production {
            db: Database::new("production_e2e"),
            world,
            vercel,
            vault,
            terraform,
            manifests,
            backups,
        }
    }

    /// The env file of a release at `tag`: the database comes from
    /// terraform, the Vercel token from Vault.
    fn env(&self, tag: &str) -> PathBuf {
        let mut vars: Vec<(&str, String)> = vec![
            ("IMAGE_TAG", tag.into()),
            ("ROLLOUT_TIMEOUT", "60s".into()),
            ("DATABASE_URL", String::new()),
            ("TERRAFORM_PROVIDES", "DATABASE_URL".into()),
            (
                "DATABASE_BACKUP_URL",
                format!("file://{}/", self.backups.display()),
            ),
            ("VAULT_ADDR", self.vault.uri()),
            ("VAULT_TOKEN", VAULT_TOKEN.into()),
        ];
        vars.extend(self.terraform.vars());
        vars.extend(
            self.vercel
                .vars()
                .into_iter()
                .filter(|(k, _)| *k != "VERCEL_TOKEN"),
        );
        vars.push((
            "VERCEL_TOKEN",
            "vault:secret/maily/production#vercel_token".into(),
        ));
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.world.env_file(&vars)
    }

    /// `maily-deploy production` at `tag`, terraform answering `scenario`.
    fn deploy(&self, tag: &str, scenario: &str) -> Output {
        let outputs = json!({
            "database_url": {"sensitive": true, "type": "string",
                             "value": self.db.url_with_password(DB_PASSWORD)},
            "cluster_name": {"sensitive": false, "type": "string", "value": "maily-production-eks"}
        })
        .to_string();
        let mut cmd = self.world.maily();
        cmd.arg("production")
            // Not built (configure-ai, monitor) or not wanted here (verify).
            .args(["--skip-ai", "--skip-monitor", "--skip-verify"])
            .arg("--env-file")
            .arg(self.env(tag))
            .arg("--manifests-dir")
            .arg(&self.manifests)
            .args(["--output", "json"])
            .timeout(Duration::from_secs(240));
        self.terraform
            .answer(&mut cmd, scenario, &outputs)
            .output()
            .unwrap()
    }

    /// Vault's requests so far, as `METHOD path token`, in order.
    fn vault_requests(&self) -> Vec<String> {
        self.world
            .rt
            .block_on(self.vault.received_requests())
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let token = r
                    .headers
                    .get("x-vault-token")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                let token = if token == VAULT_TOKEN {
                    "<VAULT_TOKEN>"
                } else {
                    token
                };
                format!("{} {} {token}", r.method, r.url.path())
            })
            .collect()
    }

    fn snapshot(&self, id: &str) -> Snapshot {
        self.world
            .snapshots()
            .into_iter()
            .find(|s| s.deployment_id == id)
            .unwrap_or_else(|| panic!("no snapshot {id}"))
    }

    fn platform_secret(&self) -> std::collections::BTreeMap<String, String> {
        let api: Api<Secret> = Api::namespaced(self.world.client.clone(), &self.world.namespace);
        let secret = self
            .world
            .rt
            .block_on(api.get("maily-platform-secrets"))
            .expect("the platform Secret exists");
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect()
    }
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// (phase, status) of every phase of a run's JSON report.
fn statuses(doc: &Value) -> Vec<(String, String)> {
    doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn phase<'d>(doc: &'d Value, id: &str) -> &'d Value {
    doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {doc}"))
}

fn assert_nothing_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}: {text}");
    }
}

/// The newest migration version shipped in `migrations/`.
fn newest_migration() -> i64 {
    std::fs::read_dir(repo().join("migrations"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.split('_').next()?.parse::<i64>().ok()
        })
        .max()
        .expect("shipped migrations")
}

fn infrastructure_of(snap: &Snapshot) -> InfrastructureRecord {
    snap.infrastructure
        .clone()
        .expect("an infrastructure record")
}

fn frontend_of(snap: &Snapshot) -> FrontendRecord {
    snap.frontend.clone().expect("a frontend record")
}

#[test]
fn production_with_infrastructure_vault_and_frontend_deploys_twice_and_rolls_back() {
    let p = Production::new();
    let world = &p.world;
    let image = |svc: &str, tag: &str| format!("registry.example.invalid/maily/maily-{svc}:{tag}");

    // --- The first release: a new workspace, a plan with changes, a fresh
    // database.
    let out = p.deploy("v2.4.0", "changes");
    assert_exit(&out, exit_code::SUCCESS);
    let first = world.deployment_id(&out);
    assert!(first.starts_with("production-"), "{first}");
    let doc = report(&out);
    let ran = statuses(&doc);
    for id in [
        "validate",
        "provision",
        "migrate",
        "deploy-backend",
        "deploy-frontend",
        "shift-traffic",
    ] {
        assert!(
            ran.contains(&(id.to_string(), "succeeded".to_string())),
            "{id}: {ran:?}"
        );
    }
    for id in ["configure-ai", "monitor", "verify"] {
        assert!(
            ran.contains(&(id.to_string(), "skipped".to_string())),
            "{id}: {ran:?}"
        );
    }

    // Terraform: init, the production workspace created, the saved plan
    // (and only it) applied, then the outputs read.
    assert_eq!(
        p.terraform.commands(),
        [
            "init -input=false -no-color",
            "workspace list",
            "workspace new production",
            "TF_WORKSPACE=production plan -input=false -no-color -out=$PLAN -detailed-exitcode",
            "TF_WORKSPACE=production show -json $PLAN",
            "TF_WORKSPACE=production apply -input=false -no-color $PLAN",
            "TF_WORKSPACE=production output -json",
        ]
    );
    let provision = phase(&doc, "provision");
    assert_eq!(
        provision["summary"],
        "Plan: 2 to add, 1 to change, 0 to destroy; applied"
    );
    assert!(
        provision["details"]
            .to_string()
            .contains("filled from terraform outputs: DATABASE_URL"),
        "{provision}"
    );

    // Vault: one request per path, with the token, before anything else.
    assert_eq!(
        p.vault_requests(),
        [
            "GET /v1/secret/data/maily/production <VAULT_TOKEN>",
            "GET /v1/secret/data/maily/signer <VAULT_TOKEN>",
        ]
    );
    assert_eq!(
        p.platform_secret(),
        [
            ("BLOCKCHAIN_SIGNER_KEY".to_string(), SIGNER_KEY.to_string()),
            ("OPENAI_API_KEY".to_string(), OPENAI_KEY.to_string()),
        ]
        .into_iter()
        .collect()
    );

    // The database terraform named is at the newest migration.
    assert_eq!(p.db.version(), newest_migration());

    // The production profile's backend, all of it on blue, users there.
    for (svc, replicas) in [
        ("api", 4),
        ("campaigns", 3),
        ("email-sender", 4),
        ("analytics", 2),
        ("blockchain-verifier", 2),
        ("workers", 6),
    ] {
        let blue = format!("{svc}-blue");
        assert_eq!(world.image(&blue), Some(image(svc, "v2.4.0")), "{blue}");
        assert_eq!(world.replicas(&blue), Some(replicas), "{blue}");
    }
    for (svc, selected, weights) in world.traffic() {
        assert_eq!(selected.as_deref(), Some("blue"), "{svc}");
        assert_eq!(weights, Some((100, 0)), "{svc}");
    }

    // Vercel: built without promotion while users had no new backend (no
    // stable Service exists before the first switch: the witness saw none),
    // then promoted once every stable Service pointed at blue.
    assert_clean(&p.vercel);
    assert_eq!(
        p.vercel.vercel.state().witnessed,
        [
            "POST /v13/deployments: ".to_string(),
            format!("promote dpl_1v240: {}", all_on("blue")),
        ]
    );
    assert_eq!(p.vercel.vercel.promotions(), ["dpl_1v240"]);
    assert_eq!(
        p.vercel.vercel.state().production.as_deref(),
        Some("dpl_1v240")
    );

    // The snapshot: the infrastructure, the database and the frontend.
    let snap = p.snapshot(&first);
    assert_eq!(snap.outcome, Outcome::Succeeded);
    assert_eq!(
        infrastructure_of(&snap),
        InfrastructureRecord {
            workspace: "production".into(),
            plan: PlanSummary {
                add: 2,
                change: 1,
                destroy: 0
            },
            applied: true,
            filled: vec!["DATABASE_URL".into()],
        }
    );
    let database = snap.database.as_ref().expect("a database record");
    assert_eq!(database.action, MigrateAction::Applied);
    assert_eq!(database.version_after, Some(newest_migration()));
    assert!(
        database
            .backup
            .as_ref()
            .unwrap()
            .location
            .starts_with(&format!("file://{}/", p.backups.display())),
        "{database:?}"
    );
    let frontend = frontend_of(&snap);
    assert_eq!(frontend.deployment_id, "dpl_1v240");
    assert_eq!(frontend.git_ref.as_deref(), Some("v2.4.0"));
    assert_eq!(frontend.previous.map(|d| d.id), Some("dpl_old".into()));
    assert!(frontend.promoted && !frontend.undone);

    assert_nothing_secret("the first run", &text(&out));
    assert_nothing_secret(
        "the snapshot",
        &serde_json::to_string(&world.snapshots()).unwrap(),
    );

    // --- The second release: the workspace exists, nothing to change, the
    // schema already current.
    let out = p.deploy("v2.5.0", "no-changes");
    assert_exit(&out, exit_code::SUCCESS);
    let second = world.deployment_id(&out);
    assert_ne!(second, first);
    assert_eq!(
        p.terraform.commands(),
        [
            "init -input=false -no-color",
            "workspace list",
            "TF_WORKSPACE=production plan -input=false -no-color -out=$PLAN -detailed-exitcode",
            "TF_WORKSPACE=production output -json",
        ]
    );
    assert_eq!(p.vault_requests().len(), 4, "{:?}", p.vault_requests());
    for (svc, selected, weights) in world.traffic() {
        assert_eq!(selected.as_deref(), Some("green"), "{svc}");
        assert_eq!(weights, Some((0, 100)), "{svc}");
    }
    assert_eq!(world.image("api-green"), Some(image("api", "v2.5.0")));
    assert_eq!(
        world.image("api-blue"),
        Some(image("api", "v2.4.0")),
        "the old slot stays up for rollback"
    );
    assert_eq!(world.replicas("workers-green"), Some(6));
    assert_eq!(world.replicas("workers-blue"), Some(0));
    assert_clean(&p.vercel);
    assert_eq!(
        p.vercel.vercel.state().witnessed[2..],
        [
            format!("POST /v13/deployments: {}", all_on("blue")),
            format!("promote dpl_2v250: {}", all_on("green")),
        ]
    );
    let snap = p.snapshot(&second);
    assert_eq!(snap.outcome, Outcome::Succeeded);
    assert_eq!(
        infrastructure_of(&snap),
        InfrastructureRecord {
            workspace: "production".into(),
            plan: PlanSummary::default(),
            applied: false,
            filled: vec!["DATABASE_URL".into()],
        }
    );
    let database = snap.database.as_ref().expect("a database record");
    assert_eq!(database.action, MigrateAction::NothingPending);
    assert_eq!(database.version_after, Some(newest_migration()));
    let frontend = frontend_of(&snap);
    assert_eq!(frontend.deployment_id, "dpl_2v250");
    assert_eq!(frontend.previous.map(|d| d.id), Some("dpl_1v240".into()));
    assert_nothing_secret("the second run", &text(&out));

    // --- Rollback to the first release: the backend switches back to blue
    // (still running it), then the frontend it recorded is promoted.
    let out = world
        .maily()
        .args(["rollback", "production", &first, "--env-file"])
        .arg(p.env("v2.5.0"))
        .arg("--manifests-dir")
        .arg(&p.manifests)
        .args(["--output", "json"])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_exit(&out, exit_code::SUCCESS);
    for (svc, selected, weights) in world.traffic() {
        assert_eq!(selected.as_deref(), Some("blue"), "{svc}");
        assert_eq!(weights, Some((100, 0)), "{svc}");
    }
    assert_eq!(world.image("api-blue"), Some(image("api", "v2.4.0")));
    assert_eq!(world.replicas("workers-blue"), Some(6));
    assert_eq!(world.replicas("workers-green"), Some(0));
    assert_clean(&p.vercel);
    assert_eq!(
        p.vercel.vercel.promotions(),
        ["dpl_1v240", "dpl_2v250", "dpl_1v240"]
    );
    assert_eq!(
        p.vercel.vercel.state().witnessed.last().cloned(),
        Some(format!("promote dpl_1v240: {}", all_on("blue")))
    );
    assert_eq!(
        p.vercel.vercel.state().production.as_deref(),
        Some("dpl_1v240")
    );
    // The rollback read the Vercel token from Vault as the deploys did.
    assert_eq!(p.vault_requests().len(), 6, "{:?}", p.vault_requests());
    let back = world.deployment_id(&out);
    let snap = p.snapshot(&back);
    assert_eq!(snap.command, "rollback");
    assert_eq!(
        snap.rollback_to.as_ref().map(|id| id.as_str()),
        Some(first.as_str())
    );
    assert_eq!(snap.outcome, Outcome::Succeeded);
    let frontend = frontend_of(&snap);
    assert_eq!(frontend.deployment_id, "dpl_1v240");
    assert_eq!(frontend.previous.map(|d| d.id), Some("dpl_2v250".into()));
    assert_nothing_secret("the rollback", &text(&out));
    assert_nothing_secret(
        "the snapshots",
        &serde_json::to_string(&world.snapshots()).unwrap(),
    );
}
