//! `kubesim`: the Kubernetes API emulator as a process.

use anyhow::Result;
use clap::Parser;
use kubesim::{ImageFaultRule, Sim, SimOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A Kubernetes API emulator that kubectl and the kube crate talk to.
#[derive(Parser)]
#[command(name = "kubesim", version)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the kubeconfig for this server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Require this bearer token (401 without it).
    #[arg(long)]
    token: Option<String>,
    /// Serve HTTPS with a fresh CA, written into the kubeconfig.
    #[arg(long)]
    tls: bool,
    /// Multiplies every simulated duration (0.1 = ten times faster).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Seconds from pod creation to Running and Ready.
    #[arg(long, default_value_t = 1.0)]
    rollout_seconds: f64,
    /// PATTERN=FAULT, e.g. '*:broken-*=ImagePullBackOff'; FAULT is
    /// ImagePullBackOff, CrashLoopBackOff, NeverReady or Slow:<seconds>. Repeatable.
    #[arg(long = "image-fault")]
    image_faults: Vec<ImageFaultRule>,
    /// Watch events kept for resuming watches; older versions get 410 Gone.
    #[arg(long, default_value_t = 100_000)]
    watch_window: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut sim = Sim::start(SimOptions {
        listen: args.listen,
        rollout_time: Duration::from_secs_f64(args.rollout_seconds),
        time_scale: args.time_scale,
        token: args.token,
        tls: args.tls,
        image_faults: args.image_faults,
        watch_window: args.watch_window,
        kubeconfig_path: Some(args.kubeconfig),
    })
    .await?;
    // Scripts read this first line to learn the port.
    println!("listening on {}", sim.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sim.stop();
    Ok(())
}
