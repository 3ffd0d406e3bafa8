//! Worlds on the real Kubernetes control plane (`tests/controlplane`):
//! the same readers and the same binary as on kubesim, judged by a real
//! kube-apiserver, its RBAC authorizer and its admission.

use std::path::PathBuf;
use std::time::Duration;

use controlplane::ControlPlane;

use super::*;

/// What a world on the real control plane keeps.
pub struct RealCluster {
    pub cp: &'static ControlPlane,
    /// A copy of the shipped manifests with this world's environment.
    pub manifests: PathBuf,
    /// The kubeconfig the tool runs with: a token of the deployer
    /// ServiceAccount that `maily-deploy bootstrap` creates.
    pub deployer_kubeconfig: PathBuf,
}

impl World {
    /// A world on the real control plane of this test binary, as a user's
    /// first deploy would find a cluster:
    ///
    /// - an environment of its own, `<base>-r<pid>-<n>`, whose profile is
    ///   `base`'s with the namespace `maily-<environment>`: tests share the
    ///   cluster and never each other's objects (the deployer's ClusterRole
    ///   is named after the environment too);
    /// - `maily-deploy bootstrap` applied by the cluster admin with kubectl
    ///   (the namespace, Pod Security `restricted` enforced, and the
    ///   deployer's ServiceAccount, Role and ClusterRole);
    /// - the tool's kubeconfig holding a token of that ServiceAccount
    ///   (`kubectl create token`), so the real RBAC authorizer judges every
    ///   call the tool makes against the shipped Role.
    pub fn real(base: &str) -> World {
        let cp = ControlPlane::shared();
        let dir = tempfile::tempdir().unwrap();
        let environment = ControlPlane::unique_name(&format!("{base}-r"));
        let namespace = format!("maily-{environment}");
        let manifests = dir.path().join("manifests");
        copy_dir(&repo().join("manifests"), &manifests);
        let base_profile =
            std::fs::read_to_string(manifests.join(format!("environments/{base}.yaml"))).unwrap();
        let profile = with_namespace(&base_profile, &namespace);
        std::fs::write(
            manifests.join(format!("environments/{environment}.yaml")),
            profile,
        )
        .unwrap();

        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt.block_on(async { cp.client() });
        let deployer_kubeconfig = dir.path().join("deployer.kubeconfig");
        let world = World {
            cluster: Cluster::Real(RealCluster {
                cp,
                manifests,
                deployer_kubeconfig: deployer_kubeconfig.clone(),
            }),
            dir,
            rt,
            client,
            environment,
            namespace,
        };

        // The admin applies what bootstrap prints.
        let env = world.env_file(&[]);
        let bootstrap = world
            .maily()
            .args(["bootstrap", &world.environment, "--env-file"])
            .arg(&env)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert_exit(&bootstrap, 0);
        world.kubectl_admin_stdin(&["apply", "-f", "-"], &bootstrap.stdout);

        // The deployer's token, as CI would get one.
        let token = world.kubectl_admin(&[
            "-n",
            &world.namespace,
            "create",
            "token",
            "maily-deployer",
            "--duration=2h",
        ]);
        cp.write_kubeconfig_for_token(token.trim(), &deployer_kubeconfig)
            .unwrap();
        world
    }

    /// Rewrite one of this world's manifests (`slot/deployment.yaml`)
    /// from the shipped one, each `(from, to)` replaced; a `from` the
    /// shipped file lacks fails the test, which would otherwise deploy the
    /// shipped manifest and prove nothing.
    pub fn rewrite_manifest(&self, file: &str, replacements: &[(&str, &str)]) {
        let Cluster::Real(real) = &self.cluster else {
            panic!("this world runs on kubesim, not the real control plane")
        };
        let mut text = std::fs::read_to_string(repo().join("manifests").join(file)).unwrap();
        for (from, to) in replacements {
            assert!(text.contains(from), "{file} has no `{from}`");
            text = text.replace(from, to);
        }
        std::fs::write(real.manifests.join(file), text).unwrap();
    }

    /// The real control plane of this world.
    pub fn control_plane(&self) -> &'static ControlPlane {
        match &self.cluster {
            Cluster::Real(real) => real.cp,
            Cluster::Sim(_) => panic!("this world runs on kubesim, not the real control plane"),
        }
    }

    /// kubectl as the cluster admin; its stdout. Fails the test with
    /// kubectl's own words when it fails.
    pub fn kubectl_admin(&self, args: &[&str]) -> String {
        self.kubectl_admin_stdin(args, b"")
    }

    pub fn kubectl_admin_stdin(&self, args: &[&str], stdin: &[u8]) -> String {
        use std::io::Write;
        let mut child = self
            .control_plane()
            .kubectl()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// A client of the cluster as its admin (inside this world's runtime).
    pub fn admin_client(&self) -> Client {
        match &self.cluster {
            Cluster::Sim(sim) => sim.client(),
            Cluster::Real(real) => real.cp.client(),
        }
    }
}

/// The profile with its top-level `namespace:` replaced.
fn with_namespace(profile: &str, namespace: &str) -> String {
    let mut replaced = false;
    let lines: Vec<String> = profile
        .lines()
        .map(|l| {
            if !replaced && l.starts_with("namespace:") {
                replaced = true;
                format!("namespace: {namespace}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(replaced, "the profile names its namespace");
    lines.join("\n") + "\n"
}
