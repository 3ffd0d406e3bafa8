//! Tags to digests against a real OCI registry on loopback: what a re-push
//! does to a tag, what a login changes, and every failure named at once.

use std::time::Duration;

use maily_deploy::image::credentials::Credentials;
use maily_deploy::image::resolve::{ResolveError, resolve};

use crate::support::registry::Registry;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A Docker config file holding `login` for `registry`, as `docker login`
/// writes it.
fn login_file(dir: &std::path::Path, registry: &str, user: &str, password: &str) -> Credentials {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join("auth.json");
    std::fs::write(
        &path,
        format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    Credentials::read(Some(&path)).unwrap()
}

#[tokio::test]
async fn a_tag_resolves_to_the_digest_it_names_now_and_a_repush_moves_it() {
    let registry = Registry::open();
    let first = registry.push("maily/maily-api", "v1", "first build").await;
    let image = format!("{}/maily/maily-api:v1", registry.host);
    let pinned = resolve([image.clone()], &Credentials::default(), TIMEOUT).await;
    let pinned = pinned[&image].as_ref().unwrap();
    assert_eq!(pinned.digest, first);
    assert!(pinned.digest.starts_with("sha256:"), "{}", pinned.digest);
    assert_eq!(
        pinned.reference,
        format!("{}/maily/maily-api@{first}", registry.host)
    );

    // The same tag pushed again names other bytes; the old digest still
    // names the first build, which is what a rollback must run.
    let second = registry.push("maily/maily-api", "v1", "second build").await;
    assert_ne!(first, second);
    let again = resolve([image.clone()], &Credentials::default(), TIMEOUT).await;
    assert_eq!(again[&image].as_ref().unwrap().digest, second);
    let old = format!("{}/maily/maily-api@{first}", registry.host);
    let still = resolve([old.clone()], &Credentials::default(), TIMEOUT).await;
    assert_eq!(
        still[&old].as_ref().unwrap().digest,
        first,
        "a digest keeps naming the first build after the re-push"
    );
}

#[tokio::test]
async fn a_registry_with_logins_takes_only_the_right_one() {
    let registry = Registry::with_login("ci", "registry-pass-1234");
    registry.push("maily/maily-api", "v1", "build").await;
    let image = format!("{}/maily/maily-api:v1", registry.host);
    let dir = tempfile::tempdir().unwrap();

    let anonymous = resolve([image.clone()], &Credentials::default(), TIMEOUT).await;
    match &anonymous[&image] {
        Err(
            e @ ResolveError::Refused {
                had_login: false, ..
            },
        ) => {
            assert!(e.to_string().contains("without a login"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    let wrong = login_file(dir.path(), &registry.host, "ci", "not-the-password");
    let refused = resolve([image.clone()], &wrong, TIMEOUT).await;
    match &refused[&image] {
        Err(
            e @ ResolveError::Refused {
                had_login: true, ..
            },
        ) => {
            let fix = e.fix(&wrong);
            assert!(fix.contains("auth.json"), "names the file to fix: {fix}");
            assert!(!format!("{e} {fix}").contains("not-the-password"));
        }
        other => panic!("{other:?}"),
    }

    let right = login_file(dir.path(), &registry.host, "ci", "registry-pass-1234");
    let pinned = resolve([image.clone()], &right, TIMEOUT).await;
    assert!(pinned[&image].is_ok(), "{:?}", pinned[&image]);
}

#[tokio::test]
async fn every_image_that_cannot_be_pinned_is_named_at_once() {
    let registry = Registry::open();
    registry.push("maily/maily-api", "v2", "build").await;
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let good = format!("{}/maily/maily-api:v2", registry.host);
    let missing_tag = format!("{}/maily/maily-api:v3", registry.host);
    let missing_repo = format!("{}/maily/maily-nothing:v2", registry.host);
    let unreachable = format!("127.0.0.1:{down}/maily/maily-api:v2");
    let answers = resolve(
        [
            good.clone(),
            missing_tag.clone(),
            missing_repo.clone(),
            unreachable.clone(),
        ],
        &Credentials::default(),
        TIMEOUT,
    )
    .await;
    assert!(answers[&good].is_ok(), "{:?}", answers[&good]);
    assert!(
        matches!(answers[&missing_tag], Err(ResolveError::NotFound { .. })),
        "{:?}",
        answers[&missing_tag]
    );
    assert!(
        matches!(answers[&missing_repo], Err(ResolveError::NotFound { .. })),
        "{:?}",
        answers[&missing_repo]
    );
    assert!(
        matches!(answers[&unreachable], Err(ResolveError::Unreachable { .. })),
        "{:?}",
        answers[&unreachable]
    );
}

/// A registry on loopback that answers a manifest HEAD with 200 and no
/// `Docker-Content-Digest`, and its GET with `manifest_bytes` bytes sent
/// in chunks without a `Content-Length` (as a proxy streaming it would),
/// stopping when the reader hangs up. Its host and the bytes it sent.
fn streaming_registry(
    manifest_bytes: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            if request.starts_with("HEAD") {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            );
            let chunk = vec![b' '; 64 << 10];
            let mut left = manifest_bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                let head = format!("{n:x}\r\n");
                if stream.write_all(head.as_bytes()).is_err()
                    || stream.write_all(&chunk[..n]).is_err()
                    || stream.write_all(b"\r\n").is_err()
                {
                    break;
                }
                counted.fetch_add(n, Ordering::Relaxed);
                left -= n;
            }
            let _ = stream.write_all(b"0\r\n\r\n");
        }
    });
    (host, sent)
}

#[tokio::test]
async fn a_manifest_without_its_digest_header_is_hashed_within_a_bound() {
    use sha2::Digest as _;
    // A small one: its digest is the SHA-256 of the bytes served.
    let (host, _) = streaming_registry(1000);
    let image = format!("{host}/maily/maily-api:v1");
    let pinned = resolve([image.clone()], &Credentials::default(), TIMEOUT).await;
    let want = format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(vec![b' '; 1000]))
    );
    assert_eq!(pinned[&image].as_ref().unwrap().digest, want);

    // 64 MiB streamed without a length: refused once past 4 MiB, read no
    // further (read whole, it was hashed and pinned).
    let (host, sent) = streaming_registry(64 << 20);
    let image = format!("{host}/maily/maily-api:v1");
    let answers = resolve([image.clone()], &Credentials::default(), TIMEOUT).await;
    match &answers[&image] {
        Err(e @ ResolveError::NotARegistry { .. }) => {
            assert!(
                e.to_string()
                    .contains("its manifest is over 4194304 bytes (4 MiB)"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The server counts what it wrote before the reader hung up (socket
    // buffers hold a few MiB more than was read).
    std::thread::sleep(Duration::from_millis(200));
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent < 32 << 20, "{sent} bytes were sent");
}

#[tokio::test]
async fn a_token_realm_is_asked_with_the_login_and_its_answer_is_bounded() {
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let registry = MockServer::start().await;
    let realm = MockServer::start().await;
    let host = registry.address().to_string();
    let digest = format!("sha256:{}", "a".repeat(64));
    let manifest = "/v2/maily/maily-api/manifests/v1";
    // As distribution's token auth answers: a challenge, then the
    // manifest for the token.
    Mock::given(method("HEAD"))
        .and(path(manifest))
        .and(header("authorization", "Bearer pull-token-1234"))
        .respond_with(
            ResponseTemplate::new(200).insert_header("Docker-Content-Digest", digest.as_str()),
        )
        .mount(&registry)
        .await;
    Mock::given(method("HEAD"))
        .and(path(manifest))
        .respond_with(ResponseTemplate::new(401).insert_header(
            "WWW-Authenticate",
            format!(
                r#"Bearer realm="{}/token",service="maily-registry",scope="repository:maily/maily-api:pull""#,
                realm.uri()
            )
            .as_str(),
        ))
        .mount(&registry)
        .await;
    let basic = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ci:registry-pass-1234")
        )
    };
    Mock::given(method("GET"))
        .and(path("/token"))
        .and(query_param("scope", "repository:maily/maily-api:pull"))
        .and(query_param("service", "maily-registry"))
        .and(header("authorization", basic.as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"token": "pull-token-1234"})),
        )
        .expect(1)
        .mount(&realm)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let login = login_file(dir.path(), &host, "ci", "registry-pass-1234");
    let image = format!("{host}/maily/maily-api:v1");
    let pinned = resolve([image.clone()], &login, TIMEOUT).await;
    assert_eq!(pinned[&image].as_ref().unwrap().digest, digest);

    // A realm answering 2 MiB: refused, read no further.
    realm.reset().await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b' '; 2 << 20]))
        .mount(&realm)
        .await;
    let answers = resolve([image.clone()], &login, TIMEOUT).await;
    match &answers[&image] {
        Err(e @ ResolveError::NotARegistry { .. }) => assert!(
            e.to_string()
                .contains("its token realm answered more than 1048576 bytes"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

/// Every backend image of staging pushed as `tag`, its layer's bytes
/// saying `build`; the digests by service.
fn push_backend(
    world: &crate::support::World,
    registry: &Registry,
    tag: &str,
    build: &str,
) -> std::collections::BTreeMap<String, String> {
    push(world, registry, tag, build, false)
}

/// Every image of staging (`ai`: the AI services' too) pushed as `tag`.
fn push(
    world: &crate::support::World,
    registry: &Registry,
    tag: &str,
    build: &str,
    ai: bool,
) -> std::collections::BTreeMap<String, String> {
    let profile =
        maily_deploy::config::profile::load(&crate::support::repo().join("manifests"), "staging")
            .unwrap();
    profile
        .services
        .iter()
        .filter(|(_, s)| ai || !s.ai)
        .map(|(name, _)| {
            let digest = world.rt.block_on(registry.push(
                &format!("maily/maily-{name}"),
                tag,
                &format!("{name} {build}"),
            ));
            (name.clone(), digest)
        })
        .collect()
}

/// The Trivy stand-in (`tests/fixtures/bin/trivy`).
fn trivy() -> String {
    crate::support::repo()
        .join("tests/fixtures/bin/trivy")
        .display()
        .to_string()
}

/// A pinned and scanned deploy of `tag` from `registry`, the stand-in
/// Trivy answering with `findings` (its `TRIVY_STANDIN_FINDINGS`) and
/// logging to `scan_log`; `extra` variables on top.
fn deploy_scanned(
    world: &crate::support::World,
    registry: &Registry,
    tag: &str,
    findings: &str,
    scan_log: &std::path::Path,
    extra: &[(&str, &str)],
    args: &[&str],
) -> std::process::Output {
    let registry_prefix = format!("{}/maily", registry.host);
    let trivy = trivy();
    let mut vars = vec![
        ("IMAGE_TAG", tag),
        ("IMAGE_REGISTRY", registry_prefix.as_str()),
        ("IMAGE_PINNING", "on"),
        ("IMAGE_SCAN", "on"),
        ("TRIVY_BIN", trivy.as_str()),
        ("ROLLOUT_TIMEOUT", "60s"),
    ];
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k, v));
    }
    let env = world.env_file(&vars);
    world
        .maily()
        .arg("staging")
        .args(crate::support::BACKEND_ONLY)
        .arg("--env-file")
        .arg(&env)
        .args(args)
        .env("TRIVY_STANDIN_FINDINGS", findings)
        .env("TRIVY_STANDIN_LOG", scan_log)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap()
}

/// A pinned deploy of `tag` from `registry`, its scan finding nothing.
fn deploy_pinned(
    world: &crate::support::World,
    registry: &Registry,
    tag: &str,
) -> std::process::Output {
    let log = world
        .dir
        .path()
        .join(format!("trivy-{}.log", crate::support::rand_suffix()));
    deploy_scanned(world, registry, tag, "{}", &log, &[], &[])
}

#[test]
fn a_deploy_runs_digests_and_a_rollback_after_a_repush_runs_what_ran() {
    use crate::support::{World, assert_exit, deployment_id_of};
    let world = World::new(Duration::from_millis(300));
    let registry = Registry::open();
    let v1 = push_backend(&world, &registry, "v1", "first build");
    push_backend(&world, &registry, "v2", "build");
    push_backend(&world, &registry, "v3", "build");

    let out = deploy_pinned(&world, &registry, "v1");
    assert_exit(&out, 0);
    let first_id = deployment_id_of(&out);
    let api = format!("{}/maily/maily-api", registry.host);
    assert_eq!(
        world.image("api-blue"),
        Some(format!("{api}@{}", v1["api"])),
        "the Deployment runs the digest, not the tag"
    );
    let annotations = world
        .deployment("api-blue")
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    assert_eq!(
        annotations.get("maily.ai/image"),
        Some(&format!("{api}:v1")),
        "the tag stays readable for people"
    );
    // status names the release by its tag, not by the digest it runs.
    let status = world
        .maily()
        .args(["status", "staging"])
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert_exit(&status, 0);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(shown.contains("v1 "), "{shown}");
    assert!(!shown.contains("sha256"), "{shown}");
    let snapshot = world
        .snapshots()
        .into_iter()
        .find(|s| s.deployment_id == first_id)
        .unwrap();
    let recorded = &snapshot.release.as_ref().unwrap().digests;
    assert_eq!(
        recorded.get(&format!("{api}:v1")),
        Some(&format!("{api}@{}", v1["api"])),
        "the snapshot keeps tag and digest"
    );

    // v2 to green, v3 to blue: v1 runs nowhere any more.
    for tag in ["v2", "v3"] {
        assert_exit(&deploy_pinned(&world, &registry, tag), 0);
    }
    // Someone pushes v1 again: the tag now names code that never ran.
    let rebuilt = push_backend(&world, &registry, "v1", "rebuilt");
    assert_ne!(rebuilt["api"], v1["api"]);

    let out = world
        .maily()
        .args(["rollback", "staging", &first_id])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    world.assert_all_on("green");
    for (service, digest) in &v1 {
        assert_eq!(
            world.image(&format!("{service}-green")),
            Some(format!("{}/maily/maily-{service}@{digest}", registry.host)),
            "{service}: the rollback runs the recorded digest, not the re-pushed tag"
        );
    }
}

#[test]
fn a_tag_that_is_not_there_stops_the_deploy_before_anything_changes() {
    use crate::support::{World, assert_exit, text};
    let world = World::new(Duration::from_millis(300));
    let registry = Registry::open();
    push_backend(&world, &registry, "v1", "build");
    let out = deploy_pinned(&world, &registry, "v9");
    assert_exit(&out, 3);
    let all = text(&out);
    assert!(all.contains("cannot be pinned to a digest"), "{all}");
    assert!(
        all.contains(&format!("image {}/maily/maily-api:v9 (api)", registry.host)),
        "{all}"
    );
    assert!(all.contains("does not exist"), "{all}");
    assert!(
        world.deployment("api-blue").is_none(),
        "nothing was applied"
    );
    assert!(world.snapshots().is_empty(), "no run was recorded");
    assert!(world.lease_holder().is_none(), "the lock was never taken");
}

#[test]
fn status_shows_a_slot_running_a_digest_the_deployment_did_not_record() {
    use crate::support::{World, assert_exit, deployment_id_of};
    let world = World::new(Duration::from_millis(300));
    let registry = Registry::open();
    let v1 = push_backend(&world, &registry, "v1", "build");

    // A dry run asks the registry too, and shows what it would run.
    let log = world.dir.path().join("trivy.log");
    let dry = deploy_scanned(&world, &registry, "v1", "{}", &log, &[], &["--dry-run"]);
    assert_exit(&dry, 0);
    let plan = String::from_utf8_lossy(&dry.stdout);
    let api = format!("{}/maily/maily-api", registry.host);
    assert!(
        plan.contains(&format!("api-blue: {api}:v1, pinned to {}", v1["api"])),
        "{plan}"
    );
    assert!(
        world.deployment("api-blue").is_none(),
        "a dry run changes nothing"
    );

    let out = deploy_pinned(&world, &registry, "v1");
    assert_exit(&out, 0);
    let id = deployment_id_of(&out);
    let status = world.maily().args(["status", "staging"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains(&format!("drift: none since {id}")),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );

    // The tag pushed again and set by hand: same tag, other code.
    let rebuilt = push_backend(&world, &registry, "v1", "rebuilt");
    world
        .sim()
        .kubectl()
        .args([
            "-n",
            &world.namespace,
            "set",
            "image",
            "deployment/api-blue",
            &format!("api={api}@{}", rebuilt["api"]),
        ])
        .output()
        .unwrap();
    let status = world.maily().args(["status", "staging"]).output().unwrap();
    let human = String::from_utf8_lossy(&status.stdout);
    assert!(human.contains(&format!("drift from {id}")), "{human}");
    assert!(
        human.contains(&format!(
            "api-blue: runs {api}@{} (recorded: {api}@{})",
            rebuilt["api"], v1["api"]
        )),
        "{human}"
    );
}

/// A finding in Trivy's JSON shape.
fn vulnerability(id: &str, package: &str, installed: &str, fixed: &str, severity: &str) -> String {
    format!(
        r#"{{"VulnerabilityID": "{id}", "PkgName": "{package}", "InstalledVersion": "{installed}", "FixedVersion": "{fixed}", "Severity": "{severity}", "Title": "a test finding"}}"#
    )
}

#[test]
fn a_critical_finding_stops_the_run_before_the_first_write_unless_allowlisted() {
    use crate::support::{World, assert_exit, text};
    let world = World::new(Duration::from_millis(300));
    let registry = Registry::open();
    push_backend(&world, &registry, "v1", "build");
    let findings = format!(
        r#"{{"maily-api@": [{}, {}], "maily-workers@": [{}]}}"#,
        vulnerability("CVE-2026-0001", "openssl", "3.0.1", "3.0.9", "CRITICAL"),
        vulnerability("CVE-2026-0002", "zlib", "1.2.11", "1.2.13", "HIGH"),
        vulnerability("CVE-2026-0003", "curl", "7.88.1", "8.0.0", "MEDIUM"),
    );
    let log = world.dir.path().join("trivy.log");
    world.sim().control().reset();
    let out = deploy_scanned(&world, &registry, "v1", &findings, &log, &[], &[]);
    assert_exit(&out, 3);
    let all = text(&out);
    let api = format!("{}/maily/maily-api:v1", registry.host);
    assert!(all.contains(&format!("image {api}")), "{all}");
    assert!(
        all.contains("CVE-2026-0001 in openssl 3.0.1 (fixed in 3.0.9), CRITICAL"),
        "{all}"
    );
    assert!(
        !all.contains("CVE-2026-0002"),
        "HIGH is under the default threshold: {all}"
    );
    let writes: Vec<String> = world
        .sim()
        .control()
        .requests()
        .into_iter()
        .filter(|r| matches!(r.verb.as_str(), "create" | "update" | "patch" | "delete"))
        .map(|r| format!("{} {} {}", r.verb, r.resource, r.name))
        .collect();
    assert_eq!(writes, Vec::<String>::new(), "nothing written: {all}");
    assert!(world.lease_holder().is_none());

    // Shipped on purpose: allowlisted with a reason, until a date.
    let ignore = world.dir.path().join("scan-ignore.yaml");
    std::fs::write(
        &ignore,
        "- id: CVE-2026-0001\n  image: \"*/maily-api:*\"\n  reason: the vulnerable function is never called; patched build due next sprint\n  expires: 2099-01-01\n",
    )
    .unwrap();
    let ignore_var = ignore.display().to_string();
    let out = deploy_scanned(
        &world,
        &registry,
        "v1",
        &findings,
        &log,
        &[("IMAGE_SCAN_IGNORE_FILE", &ignore_var)],
        &["--output", "json"],
    );
    assert_exit(&out, 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scan = &report["image_scan"];
    assert_eq!(scan["status"], "scanned", "{scan}");
    let api_scan = scan["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image"] == api.as_str())
        .unwrap();
    assert_eq!(api_scan["allowed"][0]["id"], "CVE-2026-0001", "{api_scan}");
    assert!(
        api_scan["allowed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("never called"),
        "{api_scan}"
    );
    assert_eq!(
        api_scan["counts"]["HIGH"], 1,
        "below the threshold, counted: {api_scan}"
    );
    let snapshot = &world.snapshots()[0];
    assert!(
        matches!(
            snapshot.image_scan,
            Some(maily_deploy::image::gate::ScanOutcome::Scanned(_))
        ),
        "the snapshot keeps the findings"
    );

    // The entry ran out: the finding stops the run again, and says so.
    std::fs::write(
        &ignore,
        "- id: CVE-2026-0001\n  image: \"*/maily-api:*\"\n  reason: the vulnerable function is never called\n  expires: 2026-01-01\n",
    )
    .unwrap();
    let out = deploy_scanned(
        &world,
        &registry,
        "v1",
        &findings,
        &log,
        &[("IMAGE_SCAN_IGNORE_FILE", &ignore_var)],
        &[],
    );
    assert_exit(&out, 3);
    let all = text(&out);
    assert!(all.contains("CVE-2026-0001"), "{all}");
    assert!(all.contains("expired on 2026-01-01"), "{all}");
}

#[test]
fn a_digest_scanned_clean_is_not_scanned_again_within_the_ttl() {
    use crate::support::{World, assert_exit};
    let world = World::new(Duration::from_millis(300));
    let registry = Registry::open();
    push_backend(&world, &registry, "v1", "build");
    push_backend(&world, &registry, "v2", "build 2");
    let log = world.dir.path().join("trivy.log");
    let scans = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("--scanners vuln"))
            .count()
    };
    assert_exit(
        &deploy_scanned(&world, &registry, "v1", "{}", &log, &[], &[]),
        0,
    );
    let first = scans();
    assert!(first > 0, "the first deploy scans");
    // v2 to the other slot: new digests, scanned.
    assert_exit(
        &deploy_scanned(&world, &registry, "v2", "{}", &log, &[], &[]),
        0,
    );
    let second = scans();
    assert!(second > first);
    // v1 again: its digests were scanned clean minutes ago.
    assert_exit(
        &deploy_scanned(&world, &registry, "v1", "{}", &log, &[], &[]),
        0,
    );
    assert_eq!(scans(), second, "no digest of v1 scanned again");
    // A TTL shorter than the time since: scanned again.
    assert_exit(
        &deploy_scanned(
            &world,
            &registry,
            "v2",
            "{}",
            &log,
            &[("IMAGE_SCAN_TTL", "1s")],
            &[],
        ),
        0,
    );
    assert!(scans() > second);
}

#[test]
fn scanning_off_is_said_in_the_report_and_needs_pinning_to_be_on() {
    use crate::support::{World, assert_exit, text};
    let world = World::new(Duration::from_millis(300));
    let registry = Registry::open();
    push_backend(&world, &registry, "v1", "build");
    let log = world.dir.path().join("trivy.log");
    let out = deploy_scanned(
        &world,
        &registry,
        "v1",
        "{}",
        &log,
        &[("IMAGE_SCAN", "off")],
        &["--output", "json"],
    );
    assert_exit(&out, 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["image_scan"]["status"], "off", "{report}");
    assert!(
        report["warnings"].to_string().contains("IMAGE_SCAN=off"),
        "{}",
        report["warnings"]
    );
    assert!(!log.exists(), "trivy never ran");

    let out = deploy_scanned(
        &world,
        &registry,
        "v1",
        "{}",
        &log,
        &[("IMAGE_PINNING", "off")],
        &[],
    );
    assert_exit(&out, 3);
    assert!(text(&out).contains("IMAGE_SCAN"), "{}", text(&out));
}

#[test]
fn the_ai_services_are_pinned_and_scanned_with_the_backend() {
    use crate::support::ai::{deploy_with_ai, providers};
    use crate::support::{World, assert_exit};
    let world = World::new(Duration::from_millis(300));
    let registry = Registry::open();
    let digests = push(&world, &registry, "v1", "build", true);
    let p = providers(&world);
    let prefix = format!("{}/maily", registry.host);
    let trivy = trivy();
    let out = deploy_with_ai(
        &world,
        &p,
        "v1",
        &[
            ("IMAGE_REGISTRY", &prefix),
            ("IMAGE_PINNING", "on"),
            ("IMAGE_SCAN", "on"),
            ("TRIVY_BIN", &trivy),
        ],
    );
    assert_exit(&out, 0);
    for service in ["ai-orchestrator", "ai-workers", "api"] {
        assert_eq!(
            world.image(&format!("{service}-blue")),
            Some(format!("{prefix}/maily-{service}@{}", digests[service])),
            "{service}"
        );
    }
    let snapshot = &world.snapshots()[0];
    let Some(maily_deploy::image::gate::ScanOutcome::Scanned(report)) = &snapshot.image_scan else {
        panic!("{:?}", snapshot.image_scan)
    };
    assert!(
        report
            .images
            .iter()
            .any(|i| i.image == format!("{prefix}/maily-ai-orchestrator:v1")),
        "the AI images are scanned too: {report:?}"
    );
}
