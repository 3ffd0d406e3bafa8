//! A real OCI registry (Debian's `docker-registry`, the CNCF distribution
//! registry, installed by `scripts/setup.d/registry.sh`) on a free loopback
//! port, with or without htpasswd logins, and small images the tests push
//! to it themselves. A test that cannot start it fails.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// A running registry, killed when dropped.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`: the registry part of an image reference.
    pub host: String,
    /// The login it takes, when it takes one.
    pub login: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// A registry anyone may push to and pull from.
    pub fn open() -> Registry {
        Registry::start(None)
    }

    /// A registry that takes only `user`/`password` (htpasswd, bcrypt).
    pub fn with_login(user: &str, password: &str) -> Registry {
        Registry::start(Some((user.to_string(), password.to_string())))
    }

    fn start(login: Option<(String, String)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &login {
            let hash = bcrypt::hash(password, 4).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: maily-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("registry.log")).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start docker-registry ({e}); install it with scripts/setup.d/registry.sh"
                )
            });
        let mut registry = Registry {
            child,
            host: format!("127.0.0.1:{port}"),
            login,
            dir,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited ({status}): {}", self.log());
            }
            if std::net::TcpStream::connect(&self.host).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry is not listening after 30 s: {}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn auth(&self) -> RegistryAuth {
        match &self.login {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Push a minimal OCI image (one small layer whose bytes are `content`,
    /// an empty config) as `repository:tag`; returns its manifest digest.
    pub async fn push(&self, repository: &str, tag: &str, content: &str) -> String {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let reference: Reference = format!("{}/{repository}:{tag}", self.host).parse().unwrap();
        let layer = ImageLayer::new(
            content.as_bytes().to_vec(),
            "application/vnd.oci.image.layer.v1.tar".to_string(),
            None,
        );
        let config = Config::new(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec(),
            "application/vnd.oci.image.config.v1+json".to_string(),
            None,
        );
        let manifest = OciImageManifest::build(
            std::slice::from_ref(&layer),
            &config,
            Some(BTreeMap::from([(
                "org.opencontainers.image.title".to_string(),
                content.to_string(),
            )])),
        );
        client
            .push(&reference, &[layer], config, &self.auth(), Some(manifest))
            .await
            .unwrap_or_else(|e| panic!("pushing {reference}: {e}; {}", self.log()));
        client
            .fetch_manifest_digest(&reference, &self.auth())
            .await
            .unwrap()
    }
}
