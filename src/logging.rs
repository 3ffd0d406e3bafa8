//! Logs: `tracing` to stderr (stdout under GitHub Actions with human
//! output, see [`send_logs_to_stdout`]), every line redacted before it is
//! written.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::redact::scrub;

/// A writer that collects one event and writes it, redacted, on drop.
/// `tracing-subscriber` makes one writer per event, so an event's line is
/// scrubbed whole and a secret split across two writes is still caught.
pub struct RedactingWriter {
    buf: Vec<u8>,
}

impl Write for RedactingWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingWriter {
    fn drop(&mut self) {
        let raw = String::from_utf8_lossy(&self.buf);
        let text = scrub(&raw);
        if LOGS_ON_STDOUT.load(Ordering::Relaxed) {
            // anstream drops colour codes when stdout is no terminal.
            let _ = anstream::stdout().lock().write_all(text.as_bytes());
        } else {
            let _ = io::stderr().lock().write_all(text.as_bytes());
        }
    }
}

/// Set while the logs share stdout with GitHub Actions' `::group::`
/// markers. The runner reads stdout and stderr apart and writes each batch
/// of lines out stderr first, so a log line on stderr lands before or after
/// the group of the phase that wrote it, not inside.
static LOGS_ON_STDOUT: AtomicBool = AtomicBool::new(false);

/// From now on, log lines go to stdout, in order with everything else
/// printed there.
pub fn send_logs_to_stdout() {
    LOGS_ON_STDOUT.store(true, Ordering::Relaxed);
}

pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = RedactingWriter;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter { buf: Vec::new() }
    }
}

/// Set up logging: `-q` errors only, default warnings, `-v` info, `-vv`
/// debug, `-vvv` trace; `RUST_LOG` overrides.
pub fn init(verbose: u8, quiet: bool, color: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // kube's client logs every failed request at ERROR, once per retry: an
    // unreachable API server printed seven lines before the tool's one
    // message. The tool says what failed, once, after its retries; kube's
    // own lines show from -vv.
    let kube = if verbose >= 2 && !quiet { level } else { "off" };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},kube_client={kube}")));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(Stderr)
        .with_ansi(color && io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    // The report's warnings do not depend on what -q or RUST_LOG show.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(
            crate::warnings::Collect.with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_default(LevelFilter::WARN)
                    .with_target("kube_client", LevelFilter::OFF),
            ),
        )
        .try_init();

    // A panic message can carry anything, secrets included.
    std::panic::set_hook(Box::new(|info| {
        let _ = writeln!(io::stderr(), "{}", scrub(&info.to_string()));
    }));
}
