//! A cluster that cannot be used, as a user meets it: said once, after the
//! retries, in kubectl's words (the server, the context, what the network
//! or the server said), with an exit code that says nothing changed.

use std::path::{Path, PathBuf};

use maily_deploy::exit_code;

use crate::support::*;

/// A kubeconfig with a context per server, the first current.
fn kubeconfig(dir: &Path, servers: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (name, server) in servers {
        text.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\n"
        ));
    }
    text.push_str("contexts:\n");
    for (name, _) in servers {
        text.push_str(&format!(
            "- name: {name}\n  context: {{cluster: {name}, user: u}}\n"
        ));
    }
    text.push_str(&format!(
        "current-context: {}\nusers:\n- name: u\n  user: {{token: abcdefgh12345678}}\n",
        servers[0].0
    ));
    let path = dir.join(format!("kubeconfig-{}", rand_suffix()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A backend deploy of staging with `args`, quiet, without a cluster of
/// its own.
fn deploy(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("maily-deploy"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .current_dir(repo())
        .arg("staging")
        .args(BACKEND_ONLY)
        .args(["--env-file", ".env.example", "-q"])
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_server_that_refuses_connections_is_said_once_with_its_address_and_context() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let server = format!("https://127.0.0.1:{port}");
    let kc = kubeconfig(dir.path(), &[("dead", &server)]);
    let out = deploy(dir.path(), &["--kubeconfig", path_str(&kc)]);
    assert_exit(&out, exit_code::UNREACHABLE);
    let err = stderr(&out);
    assert_eq!(
        err.lines().count(),
        1,
        "one line, even with kube's retries behind it:\n{err}"
    );
    assert!(
        err.starts_with(&format!(
            "error: cannot reach the Kubernetes API server {server}/ (context dead of {}): connection refused",
            kc.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("ERROR") && !err.contains("(Connect)"),
        "{err}"
    );
}

#[test]
fn a_name_that_does_not_resolve_is_no_such_host_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(
        dir.path(),
        &[
            ("dead", "https://127.0.0.1:1"),
            ("nohost", "https://no-such-host.invalid:6443"),
        ],
    );
    let out = deploy(
        dir.path(),
        &["--kubeconfig", path_str(&kc), "--context", "nohost"],
    );
    assert_exit(&out, exit_code::UNREACHABLE);
    let err = stderr(&out);
    assert!(
        err.contains("https://no-such-host.invalid:6443/ (context nohost of")
            && err.contains("no such host"),
        "{err}"
    );
    assert!(
        err.contains("(1 attempt over"),
        "a name is not retried: {err}"
    );
}

#[test]
fn an_unknown_context_lists_the_contexts_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(
        dir.path(),
        &[
            ("prod", "https://127.0.0.1:1"),
            ("staging", "https://127.0.0.1:2"),
        ],
    );
    let out = deploy(
        dir.path(),
        &["--kubeconfig", path_str(&kc), "--context", "prdo"],
    );
    assert_exit(&out, exit_code::CONFIG);
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: the context prdo (--context) is not in {}; its contexts: prod, staging",
            kc.display()
        )
    );
}

#[test]
fn a_missing_kubeconfig_file_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = deploy(dir.path(), &["--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_exit(&out, exit_code::CONFIG);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("does not exist").count(), 1, "{err}");
    assert!(!err.contains("os error"), "{err}");
}

/// `$KUBECONFIG` is a list, read as kubectl reads it: an entry that does
/// not exist is skipped while another does; only when none exists is it an
/// error, and then every entry is named.
#[test]
fn a_kubeconfig_list_skips_missing_entries_as_kubectl_does() {
    let world = World::new(std::time::Duration::ZERO);
    let history = |kubeconfig: &std::ffi::OsStr| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("maily-deploy"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", world.dir.path())
            .env("KUBECONFIG", kubeconfig)
            .current_dir(repo())
            .args(["history", "staging", "--env-file", ".env.example"])
            .output()
            .unwrap()
    };
    let listed = std::env::join_paths([
        Path::new("/nonexistent/first"),
        world.kubeconfig_path(),
        Path::new("/nonexistent/last"),
    ])
    .unwrap();
    let out = history(&listed);
    assert_exit(&out, exit_code::SUCCESS);

    let out = history("/nonexistent/first:/nonexistent/last".as_ref());
    assert_exit(&out, exit_code::CONFIG);
    assert_eq!(
        stderr(&out).trim(),
        "error: none of the kubeconfigs $KUBECONFIG lists exists: /nonexistent/first, /nonexistent/last; point $KUBECONFIG at a kubeconfig file, unset it to use ~/.kube/config, or pass --kubeconfig PATH"
    );
}

/// The deployer's kubeconfig of a real-cluster world, rewritten.
fn rewritten(world: &World, edit: impl Fn(&str) -> Option<String>) -> PathBuf {
    let text = std::fs::read_to_string(world.kubeconfig_path()).unwrap();
    let out: Vec<String> = text.lines().filter_map(&edit).collect();
    let path = world.dir.path().join(format!("kc-{}", rand_suffix()));
    std::fs::write(&path, out.join("\n") + "\n").unwrap();
    path
}

fn deploy_on(world: &World, kubeconfig: &Path) -> std::process::Output {
    let env = world.env_file(&[("IMAGE_TAG", "v1")]);
    std::process::Command::new(assert_cmd::cargo::cargo_bin("maily-deploy"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", world.dir.path())
        .env("MAILY_MANIFESTS_DIR", world.dir.path().join("manifests"))
        .env("MAILY_DEPLOY_CLOCK_FILE", world.clock_file())
        .current_dir(repo())
        .arg(&world.environment)
        .args(BACKEND_ONLY)
        .arg("--env-file")
        .arg(&env)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("-q")
        .output()
        .unwrap()
}

#[test]
fn the_real_api_server_refusing_the_token_or_the_certificate_is_said_as_such() {
    let world = World::real("staging");
    // A token the API server does not know: 401.
    let bad_token = rewritten(&world, |l| {
        Some(match l.split_once("token: ") {
            Some((indent, _)) => format!("{indent}token: not-a-token-the-server-issued"),
            None => l.to_string(),
        })
    });
    let out = deploy_on(&world, &bad_token);
    assert_exit(&out, exit_code::UNREACHABLE);
    let err = stderr(&out);
    assert!(
        err.contains("cannot use the Kubernetes API server https://")
            && err.contains("refuses the credentials (401 Unauthorized)"),
        "{err}"
    );
    assert!(
        !err.contains("not-a-token-the-server-issued"),
        "the token is not echoed: {err}"
    );
    // No CA: the server's certificate does not verify.
    let no_ca = rewritten(&world, |l| {
        (!l.contains("certificate-authority-data")).then(|| l.to_string())
    });
    let out = deploy_on(&world, &no_ca);
    assert_exit(&out, exit_code::UNREACHABLE);
    let err = stderr(&out);
    assert!(err.contains("the TLS handshake failed"), "{err}");
    assert_eq!(world.snapshots().len(), 0, "nothing written");
}
