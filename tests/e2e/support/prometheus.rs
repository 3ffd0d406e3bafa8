//! A real Prometheus (Debian's `prometheus`, installed by
//! `scripts/setup.d/prometheus.sh`) on a free loopback port, scraping
//! static targets labelled as the ServiceMonitors label a slot's pods. A
//! test that cannot start it fails.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One scrape target: where, and the labels Prometheus gives it.
pub struct ScrapeTarget {
    /// `host:port`.
    pub address: String,
    pub metrics_path: String,
    pub labels: BTreeMap<String, String>,
}

/// Targets labelled like the ServiceMonitors label a service's pods in a
/// slot: job=<service>, namespace, slot, version.
pub fn slot_target(
    address: &str,
    namespace: &str,
    service: &str,
    slot: &str,
    version: &str,
) -> ScrapeTarget {
    ScrapeTarget {
        address: address.to_string(),
        metrics_path: format!("/metrics/{service}"),
        labels: [
            ("job", service),
            ("namespace", namespace),
            ("slot", slot),
            ("version", version),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    }
}

/// A running Prometheus, killed when dropped.
pub struct PrometheusServer {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrometheusServer {
    /// Start Prometheus scraping `targets` every second, each service's in
    /// the scrape pool the Prometheus operator makes of its ServiceMonitor
    /// (`serviceMonitor/<namespace>/<service>/0`); returns once it is ready
    /// (`/-/ready`).
    pub fn start(targets: &[ScrapeTarget]) -> PrometheusServer {
        // One job per namespace, service and path, as the operator makes
        // one per ServiceMonitor endpoint.
        let mut jobs: BTreeMap<(String, String, String), Vec<&ScrapeTarget>> = BTreeMap::new();
        for t in targets {
            let label = |k: &str| t.labels.get(k).cloned().unwrap_or_default();
            jobs.entry((label("namespace"), label("job"), t.metrics_path.clone()))
                .or_default()
                .push(t);
        }
        let mut endpoint: BTreeMap<(String, String), usize> = BTreeMap::new();
        let jobs: Vec<(String, Vec<&ScrapeTarget>)> = jobs
            .into_iter()
            .map(|((ns, job, _), ts)| {
                let i = endpoint.entry((ns.clone(), job.clone())).or_default();
                let name = format!("serviceMonitor/{ns}/{job}/{i}");
                *i += 1;
                (name, ts)
            })
            .collect();
        Self::start_jobs(&jobs)
    }

    /// Start Prometheus with one scrape job of its own per target
    /// (`target-<i>`), as a Prometheus configured by hand rather than by
    /// ServiceMonitors: the targets carry the same labels, in other pools.
    pub fn start_hand_configured(targets: &[ScrapeTarget]) -> PrometheusServer {
        let jobs: Vec<(String, Vec<&ScrapeTarget>)> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("target-{i}"), vec![t]))
            .collect();
        Self::start_jobs(&jobs)
    }

    fn start_jobs(jobs: &[(String, Vec<&ScrapeTarget>)]) -> PrometheusServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n",
        );
        for (name, targets) in jobs {
            config.push_str(&format!(
                "  - job_name: \"{name}\"\n    metrics_path: {}\n    static_configs:\n",
                targets[0].metrics_path
            ));
            for t in targets {
                config.push_str(&format!(
                    "      - targets: [\"{}\"]\n        labels:\n",
                    t.address
                ));
                for (k, v) in &t.labels {
                    config.push_str(&format!("          {k}: \"{v}\"\n"));
                }
            }
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start prometheus ({e}); install it with scripts/setup.d/prometheus.sh"
                )
            });
        let mut server = PrometheusServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        let ready = format!("{}/-/ready", self.url);
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}): {}", self.log());
            }
            if plain_http::answers_200(&ready).unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("prometheus is not ready after 30 s: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking GET that says whether the answer was 200, without a client
/// crate's blocking feature: a plain HTTP/1.0 request over a TcpStream.
mod plain_http {
    use std::io::{Read, Write};

    pub fn answers_200(url: &str) -> std::io::Result<bool> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut s = std::net::TcpStream::connect(host)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.0 200") || head.starts_with(b"HTTP/1.1 200"))
    }
}
