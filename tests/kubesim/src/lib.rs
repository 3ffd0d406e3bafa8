//! kubesim: a Kubernetes API emulator that the real `kube` client and the
//! real `kubectl` talk to over HTTP, for tests on machines where no
//! kube-apiserver can run.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kubesim::{Sim, SimOptions, ImageFault};
//! let sim = Sim::start(SimOptions::default()).await?;
//! sim.control().set_image_fault("*:broken-*", ImageFault::ImagePullBackOff);
//! let client = sim.client();
//! // ... run maily-deploy with `--kubeconfig sim.kubeconfig_path()` ...
//! let patches = sim.control().requests().iter().filter(|r| r.verb == "patch").count();
//! # let _ = (client, patches); Ok(()) }
//! ```

pub mod admission;
pub mod apply;
pub mod control;
pub mod control_api;
pub mod controller;
pub mod faults;
pub mod fields;
pub mod kubeconfig;
pub mod openapi;
pub mod patch;
pub mod process;
pub mod protobuf;
pub mod request;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;
pub mod watch;

pub use control::{Control, RequestRecord};
pub use faults::{ApiFault, ImageFault, ImageFaultRule};
pub use process::SimProcess;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use server::ServerState;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch as tokio_watch;

/// How a sim starts.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Time from pod creation to Running and Ready (default 1 s).
    pub rollout_time: Duration,
    /// Multiplies every simulated duration: rollout time, progress
    /// deadlines, back-offs. 0.1 makes a 1 s rollout take 100 ms.
    pub time_scale: f64,
    /// When set, API requests without `Authorization: Bearer <token>` get 401.
    pub token: Option<String>,
    /// Serve HTTPS with a fresh CA (written into the kubeconfig).
    pub tls: bool,
    pub image_faults: Vec<ImageFaultRule>,
    /// Watch events retained for resuming watches; older versions get 410.
    pub watch_window: usize,
    /// Where to write the kubeconfig; None writes it into a temp dir.
    pub kubeconfig_path: Option<PathBuf>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            rollout_time: Duration::from_secs(1),
            time_scale: 1.0,
            token: None,
            tls: false,
            image_faults: Vec::new(),
            watch_window: 100_000,
            kubeconfig_path: None,
        }
    }
}

/// A running sim: server, controllers and control handle. Dropping it stops it.
///
/// The sim runs on its own thread with its own tokio runtime, so a test may
/// block (run the maily-deploy binary with `std::process::Command`, use
/// `assert_cmd`) without starving the server.
pub struct Sim {
    url: String,
    kubeconfig_path: PathBuf,
    _dir: Option<tempfile::TempDir>,
    control: Control,
    token: Option<String>,
    ca_der: Option<Vec<u8>>,
    stop: tokio_watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the sim's thread hands back once it is listening.
struct Started {
    url: String,
    kubeconfig_path: PathBuf,
    dir: Option<tempfile::TempDir>,
    control: Control,
    ca_der: Option<Vec<u8>>,
}

async fn serve(opts: SimOptions, stop_rx: tokio_watch::Receiver<bool>) -> Result<Started> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let tls = if opts.tls {
        Some(tls::generate()?)
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");

    let (dir, kubeconfig_path) = match &opts.kubeconfig_path {
        Some(p) => (None, p.clone()),
        None => {
            let d = tempfile::Builder::new().prefix("kubesim-").tempdir()?;
            let p = d.path().join("kubeconfig");
            (Some(d), p)
        }
    };
    let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
    std::fs::write(
        &kubeconfig_path,
        kubeconfig::render(&url, opts.token.as_deref(), ca_pem.as_deref()),
    )
    .with_context(|| format!("writing the kubeconfig to {}", kubeconfig_path.display()))?;

    let store = Arc::new(Mutex::new(store::Store::new(opts.watch_window)));
    let control = Control::new(
        store,
        opts.rollout_time,
        opts.time_scale,
        opts.image_faults.clone(),
    );
    let state = Arc::new(ServerState {
        control: control.clone(),
        token: opts.token.clone(),
        address: addr.to_string(),
    });
    let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
    tokio::spawn(accept_loop(listener, state, acceptor, stop_rx.clone()));
    tokio::spawn(controller::Controller::new(control.clone()).run(stop_rx));
    Ok(Started {
        url,
        kubeconfig_path,
        dir,
        control,
        ca_der: tls.map(|t| t.ca_der),
    })
}

impl Sim {
    /// Starts the server and the controllers on a thread of their own.
    pub async fn start(opts: SimOptions) -> Result<Sim> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (stop, thread) = Self::launch(opts.clone(), move |r| {
            let _ = tx.send(r);
        })?;
        let started = rx.await.context("the sim thread died while starting")??;
        Ok(Self::assemble(started, opts, stop, thread))
    }

    /// `start` for tests without an async runtime.
    pub fn start_blocking(opts: SimOptions) -> Result<Sim> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, thread) = Self::launch(opts.clone(), move |r| {
            let _ = tx.send(r);
        })?;
        let started = rx.recv().context("the sim thread died while starting")??;
        Ok(Self::assemble(started, opts, stop, thread))
    }

    fn launch(
        opts: SimOptions,
        report: impl FnOnce(Result<Started>) + Send + 'static,
    ) -> Result<(tokio_watch::Sender<bool>, std::thread::JoinHandle<()>)> {
        let (stop, stop_rx) = tokio_watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("kubesim".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("kubesim-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return report(Err(e.into())),
                };
                rt.block_on(async move {
                    let mut wait = stop_rx.clone();
                    match serve(opts, stop_rx).await {
                        Ok(s) => report(Ok(s)),
                        Err(e) => return report(Err(e)),
                    }
                    let _ = wait.wait_for(|stopped| *stopped).await;
                });
                // Dropping the runtime ends every connection and watch task.
            })?;
        Ok((stop, thread))
    }

    fn assemble(
        s: Started,
        opts: SimOptions,
        stop: tokio_watch::Sender<bool>,
        thread: std::thread::JoinHandle<()>,
    ) -> Sim {
        Sim {
            url: s.url,
            kubeconfig_path: s.kubeconfig_path,
            _dir: s.dir,
            control: s.control,
            token: opts.token,
            ca_der: s.ca_der,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>` (https with `tls`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig for this sim, for `--kubeconfig` (kubectl, maily-deploy).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// `kubectl` pointed at this sim, with a discovery cache of its own.
    /// kubectl caches discovery per host and port under `~/.kube/cache`;
    /// a sim that gets the port of an earlier one would be answered from
    /// that one's cache (stale groups, no discovery requests at all).
    pub fn kubectl(&self) -> std::process::Command {
        kubectl_for(&self.kubeconfig_path)
    }

    /// A `kube::Client` for this sim (with the token and CA when set).
    /// Call it inside the tokio runtime that will use the client.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().expect("the sim's URL parses"));
        config.default_namespace = "default".into();
        if let Some(t) = &self.token {
            config.auth_info.token = Some(t.clone().into());
        }
        if let Some(ca) = &self.ca_der {
            config.root_cert = Some(vec![ca.clone()]);
        }
        kube::Client::try_from(config).expect("a kube client for the sim builds")
    }

    /// Faults, rollout time, request log and counters.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Stops serving: the port closes and every open watch ends.
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        self.control.drop_watches();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<ServerState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio_watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        let mut conn_stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| server::handle(state.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        let conn = builder.serve_connection(TokioIo::new(s), svc);
                        tokio::select! { r = conn => r, _ = conn_stop.changed() => Ok(()) }
                    }
                    Err(e) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                },
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! { r = conn => r, _ = conn_stop.changed() => Ok(()) }
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

/// `kubectl --kubeconfig <path> --cache-dir <beside it>`: see [`Sim::kubectl`].
pub fn kubectl_for(kubeconfig: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(kubeconfig.with_file_name("kubectl-cache"));
    cmd
}
