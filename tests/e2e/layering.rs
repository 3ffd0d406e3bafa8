//! The source tree's layers, as docs/architecture.md draws them: checked
//! here because a stray `use` compiles fine and only shows up later as a
//! module that cannot be tested, or a snapshot written behind the
//! lifecycle's back.

use std::path::{Path, PathBuf};

use crate::support;

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    out.sort();
    out
}

/// The lines of the files under `dir` that contain any of `needles`,
/// as `file:line: text`.
fn uses(dir: &Path, needles: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, text) in sources(dir) {
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle)) {
                out.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    out
}

#[test]
fn configuration_depends_on_neither_the_cluster_nor_the_traffic_code() {
    let src = support::repo().join("src");
    let found = uses(&src.join("config"), &["crate::k8s", "crate::traffic"]);
    assert!(
        found.is_empty(),
        "config must not import k8s or traffic (they import it):\n{}",
        found.join("\n")
    );
    let found = uses(&src.join("k8s"), &["crate::traffic"]);
    assert!(
        found.is_empty(),
        "k8s must not import traffic (traffic imports it):\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_lifecycle_writes_snapshots() {
    let src = support::repo().join("src");
    let writers: Vec<String> = uses(&src, &["store.put(&", ".put(&snapshot", ".put(&dead"])
        .into_iter()
        .filter(|l| !l.contains("src/pipeline/lifecycle.rs:"))
        .collect();
    assert!(
        writers.is_empty(),
        "a snapshot written outside src/pipeline/lifecycle.rs:\n{}",
        writers.join("\n")
    );
}
